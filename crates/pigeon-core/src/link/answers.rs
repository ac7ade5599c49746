//! Whether what a party answers on a link reaches its peer.
//!
//! A channel can swallow one direction: its sends succeed, so the breaker
//! ([`super::breaker`]) sees nothing wrong, yet nothing it carries arrives.
//! For a party that only answers (acknowledgements, a Welcome, an Accept)
//! the one sign is its peer asking again for what was answered: a chunk
//! already acknowledged sent again, a Hello already welcomed. A few such
//! signs in a row, with no sign of progress between them, and the link is
//! doubted: answers go on another link for a while (30 s, doubling to five
//! minutes while the doubt comes back), then it is tried again. One sign
//! alone is not enough: the provider may duplicate a message, or the
//! peer's timer fire early.
//!
//! Pure, like the breaker: the time is an argument.

use std::time::Duration;

use tokio::time::Instant;

/// Answers lost in a row (the peer asked again each time, and moved on in
/// between never) that make the link doubted.
pub const LOST_TO_DOUBT: u32 = 3;
const FIRST_DOUBT: Duration = Duration::from_secs(30);
const MAX_DOUBT: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, Default)]
pub struct Answers {
    lost: u32,
    /// Doubts since the link last carried answers that arrived: the
    /// exponent of the next one's length.
    doubts: u32,
    doubted_until: Option<Instant>,
}

impl Answers {
    /// The peer asked again for something answered on this link.
    pub fn lost(&mut self, now: Instant) {
        self.lost += 1;
        if self.lost >= LOST_TO_DOUBT {
            let length = (FIRST_DOUBT * 2u32.saturating_pow(self.doubts.min(4))).min(MAX_DOUBT);
            self.doubted_until = Some(now + length);
            self.doubts += 1;
            self.lost = 0;
        }
    }

    /// The peer moved on after answers on this link: they arrive.
    pub fn arrived(&mut self) {
        self.lost = 0;
        self.doubts = 0;
    }

    pub fn doubted(&self, now: Instant) -> bool {
        self.doubted_until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn answers_asked_again_three_times_in_a_row_doubt_the_link_for_a_while() {
        let t = Instant::now();
        let mut a = Answers::default();
        a.lost(t);
        a.lost(t);
        assert!(!a.doubted(t), "two may be the provider's duplicates");
        a.lost(t);
        assert!(a.doubted(t));
        assert!(a.doubted(t + 29 * S));
        assert!(!a.doubted(t + 30 * S), "tried again after 30 s");
        // Still swallowing: doubted longer.
        for _ in 0..3 {
            a.lost(t + 31 * S);
        }
        assert!(a.doubted(t + 31 * S + 59 * S));
        assert!(!a.doubted(t + 31 * S + 60 * S));
    }

    #[test]
    fn progress_between_the_signs_keeps_the_link_trusted_and_resets_the_doubt() {
        let t = Instant::now();
        let mut a = Answers::default();
        for _ in 0..10 {
            a.lost(t);
            a.lost(t);
            a.arrived();
        }
        assert!(!a.doubted(t));
        for _ in 0..6 {
            a.lost(t);
        }
        assert!(a.doubted(t + 59 * S), "two doubts in a row: a minute");
        a.arrived();
        for _ in 0..3 {
            a.lost(t + 100 * S);
        }
        assert!(
            !a.doubted(t + 130 * S),
            "answers arrived between: 30 s again"
        );
    }
}
