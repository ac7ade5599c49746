//! When dense text does not survive a channel: [`DenseWatch`] decides that
//! a link sends base64 instead.
//!
//! The dense alphabet's characters are chosen so that no platform should
//! alter them, but a platform may (one that decomposes Hangul syllables,
//! replaces characters it does not know, or cuts text by bytes). Then
//! every dense message fails and the link would carry nothing. Only the
//! receiving side can see that a message arrived mangled, and only the
//! sending side chooses the alphabet, so each side does two things with
//! what it sees arrive on a link:
//!
//! - **It stops sending dense there.** A platform that mangles dense text
//!   one way mangles it the other way too: a peer's dense messages arriving
//!   mangled are reason enough not to send ours.
//! - **It tells the peer.** Every message it sends on that link from then
//!   on begins with a one-byte record that says so (`TAG_MANGLED`), and a
//!   side that reads it stops sending dense there too. So a peer that sends
//!   dense to one that sends base64 learns it as well, from the next
//!   message that comes back (the record goes only in messages the link
//!   sends anyway: it never makes the link write to anyone).
//!
//! The judgement: [`MANGLED_IN_A_ROW`] dense messages that do not spell a
//! well-formed link message, with no whole dense message between them,
//! within [`STREAK_WINDOW`] of the first. A base64 message that arrives
//! mangled too ends the streak: the channel then damages everything, and
//! the alphabet is not to blame. Once it falls back, a link stays on
//! base64 until the party restarts: the cost is pace, never data, and a
//! platform that mangled dense text once is likely to do it again.
//!
//! In use (the link is private to the crate; its unit tests run this):
//!
//! ```text
//! let mut watch = DenseWatch::default();
//! watch.arrived(Alphabet::Dense, false, now);        // false
//! watch.arrived(Alphabet::Dense, false, now);        // false
//! watch.arrived(Alphabet::Dense, false, now);        // true: falls back, once
//! watch.falls_back() && watch.tells()                // true
//! ```

use std::time::Duration;

use tokio::time::Instant;

use crate::alphabet::Alphabet;

/// Mangled dense messages in a row that make a link fall back.
pub const MANGLED_IN_A_ROW: u32 = 3;

/// A streak of mangled dense messages counts only this long from its first:
/// three corrupted messages hours apart say nothing about the alphabet.
pub const STREAK_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Why a link sends base64 though it was set to dense.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// The peer's dense messages arrived mangled here.
    Mangled,
    /// The peer said ours arrive mangled there.
    Told,
}

/// One link's judgement of dense text ([module docs](self)).
#[derive(Debug, Default)]
pub struct DenseWatch {
    /// Mangled dense messages since the last whole one.
    streak: u32,
    /// When the streak's first came.
    began: Option<Instant>,
    fell_back: Option<Why>,
    /// Dense messages arrived mangled here: say so to the peer.
    tell: bool,
}

impl DenseWatch {
    /// A message spelled in `alphabet` arrived at `now`; `whole` if it
    /// spelled a well-formed link message. True when this makes the link
    /// fall back (once).
    pub fn arrived(&mut self, alphabet: Alphabet, whole: bool, now: Instant) -> bool {
        match (alphabet, whole) {
            (Alphabet::Dense, true) | (Alphabet::Base64, false) => {
                self.streak = 0;
                self.began = None;
                false
            }
            (Alphabet::Base64, true) => false,
            (Alphabet::Dense, false) => {
                if self
                    .began
                    .is_none_or(|t| now.saturating_duration_since(t) > STREAK_WINDOW)
                {
                    self.streak = 0;
                    self.began = Some(now);
                }
                self.streak += 1;
                if self.streak < MANGLED_IN_A_ROW {
                    return false;
                }
                self.tell = true;
                self.fall_back(Why::Mangled)
            }
        }
    }

    /// The peer says our dense messages arrive mangled. True when this
    /// makes the link fall back (once).
    pub fn told(&mut self) -> bool {
        self.fall_back(Why::Told)
    }

    /// Sends on the link go in base64, whatever it was set to.
    pub fn falls_back(&self) -> bool {
        self.fell_back.is_some()
    }

    /// Messages sent on the link say that dense text arrives mangled.
    pub fn tells(&self) -> bool {
        self.tell
    }

    /// Why it fell back, if it did.
    pub fn why(&self) -> Option<Why> {
        self.fell_back
    }

    fn fall_back(&mut self, why: Why) -> bool {
        if self.fell_back.is_some() {
            return false;
        }
        self.fell_back = Some(why);
        true
    }
}

/// The alphabet a message's raw bytes are spelled in, if they are text
/// meant as link bytes: None for a link message as it is (a binary
/// channel's), and for text beyond ASCII that is mostly not the dense
/// alphabet's kind of character, even mangled (someone writing in the
/// chat: no reason to doubt the alphabet). Nor is anything that is not
/// UTF-8: a platform hands over text, so that is a binary channel's
/// message damaged, or a spool's (`corrupt=`), not an alphabet's fault.
pub fn spelled_in(raw: &[u8]) -> Option<Alphabet> {
    if raw.starts_with(super::MAGIC) {
        return None;
    }
    match std::str::from_utf8(raw) {
        Ok(text) => match Alphabet::of(text.trim()) {
            Alphabet::Base64 => Some(Alphabet::Base64),
            Alphabet::Dense => looks_dense(text).then_some(Alphabet::Dense),
        },
        Err(_) => None,
    }
}

/// At least half of `text`'s characters are of the blocks the dense
/// alphabet draws from, or the conjoining jamo a decomposed Hangul
/// syllable becomes.
fn looks_dense(text: &str) -> bool {
    let (mut ours, mut all) = (0usize, 0usize);
    for c in text.chars() {
        all += 1;
        if matches!(c,
            '\u{3400}'..='\u{4DBF}'
            | '\u{4E00}'..='\u{9FFF}'
            | '\u{AC00}'..='\u{D7A3}'
            | '\u{1100}'..='\u{11FF}')
        {
            ours += 1;
        }
    }
    ours * 2 >= all
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn three_mangled_dense_messages_in_a_row_fall_back_once_and_tell() {
        let t0 = Instant::now();
        let mut w = DenseWatch::default();
        assert!(!w.arrived(Alphabet::Dense, false, t0));
        assert!(!w.arrived(Alphabet::Dense, false, t0 + MINUTE));
        assert!(!w.falls_back() && !w.tells());
        assert!(w.arrived(Alphabet::Dense, false, t0 + 2 * MINUTE));
        assert!(w.falls_back() && w.tells());
        assert_eq!(w.why(), Some(Why::Mangled));
        // Said once: later ones change nothing.
        assert!(!w.arrived(Alphabet::Dense, false, t0 + 3 * MINUTE));
        assert!(!w.told());
        // Until restart: a whole dense message later does not undo it.
        assert!(!w.arrived(Alphabet::Dense, true, t0 + 4 * MINUTE));
        assert!(w.falls_back());
    }

    #[test]
    fn a_whole_dense_message_between_failures_keeps_dense() {
        let t0 = Instant::now();
        let mut w = DenseWatch::default();
        for round in 0..10 {
            let at = t0 + MINUTE * round;
            assert!(!w.arrived(Alphabet::Dense, false, at));
            assert!(!w.arrived(Alphabet::Dense, false, at));
            assert!(!w.arrived(Alphabet::Dense, true, at));
        }
        assert!(!w.falls_back() && !w.tells());
    }

    #[test]
    fn base64_arriving_mangled_too_blames_the_channel_not_the_alphabet() {
        let t0 = Instant::now();
        let mut w = DenseWatch::default();
        assert!(!w.arrived(Alphabet::Dense, false, t0));
        assert!(!w.arrived(Alphabet::Dense, false, t0));
        assert!(!w.arrived(Alphabet::Base64, false, t0));
        assert!(!w.arrived(Alphabet::Dense, false, t0));
        assert!(!w.falls_back());
        // Whole base64 messages between mangled dense ones are no excuse.
        assert!(!w.arrived(Alphabet::Base64, true, t0));
        assert!(!w.arrived(Alphabet::Dense, false, t0));
        assert!(w.arrived(Alphabet::Dense, false, t0));
    }

    #[test]
    fn failures_further_apart_than_the_window_do_not_add_up() {
        let t0 = Instant::now();
        let mut w = DenseWatch::default();
        assert!(!w.arrived(Alphabet::Dense, false, t0));
        assert!(!w.arrived(Alphabet::Dense, false, t0 + 5 * MINUTE));
        assert!(!w.arrived(Alphabet::Dense, false, t0 + 11 * MINUTE));
        assert!(!w.falls_back());
        // The third streak began at 11 minutes: two more within its window.
        assert!(!w.arrived(Alphabet::Dense, false, t0 + 12 * MINUTE));
        assert!(w.arrived(Alphabet::Dense, false, t0 + 13 * MINUTE));
    }

    #[test]
    fn being_told_falls_back_at_once_without_telling_back() {
        let mut w = DenseWatch::default();
        assert!(w.told());
        assert_eq!(w.why(), Some(Why::Told));
        assert!(w.falls_back() && !w.tells());
    }

    #[test]
    fn a_message_is_judged_by_how_it_is_spelled() {
        let packed = b"PG\x01\x01\x02hi".to_vec();
        assert_eq!(spelled_in(&packed), None);
        let dense = Alphabet::Dense.encode(&packed);
        assert_eq!(spelled_in(dense.as_bytes()), Some(Alphabet::Dense));
        let b64 = Alphabet::Base64.encode(&packed);
        assert_eq!(spelled_in(b64.as_bytes()), Some(Alphabet::Base64));
        // Cut in the middle of a character, or a binary message with its
        // header damaged: not text, not judged.
        let cut = &dense.as_bytes()[..dense.len() - 1];
        assert_eq!(spelled_in(cut), None);
        assert_eq!(spelled_in(b"PH\x01\xff\x00"), None);
        // Decomposed to jamo by a platform: still dense, mangled.
        let nfd: String = unicode_normalization::UnicodeNormalization::nfd(
            Alphabet::Dense.encode(&[0xff; 300]).as_str(),
        )
        .collect();
        assert_ne!(nfd, Alphabet::Dense.encode(&[0xff; 300]));
        assert_eq!(spelled_in(nfd.as_bytes()), Some(Alphabet::Dense));
        // Someone writing in the chat is not a mangled dense message.
        assert_eq!(spelled_in("привет, как дела?".as_bytes()), None);
        assert_eq!(spelled_in("👍".as_bytes()), None);
    }
}
