//! How a text channel's message spells the link's bytes: [`Alphabet::Base64`]
//! (6 bits a character) or [`Alphabet::Dense`] (15 bits a character, 2.5×
//! as much in a message of the same length).
//!
//! The messaging platforms limit a text message in characters (UTF-16 code
//! units: Telegram's 4096, WhatsApp's 4096, Messenger's 2000), not bytes,
//! so an alphabet of 2¹⁵ characters, each one UTF-16 unit, carries 15 bits
//! where base64 carries 6. No crate does this for Rust with characters
//! chosen for these platforms, so the codec is written here (from the
//! Unicode Character Database's ranges, nothing copied).
//!
//! # The dense alphabet
//!
//! 2¹⁵ main characters, each carrying 15 bits, in three runs:
//!
//! | values        | characters        | block                                 |
//! |---------------|-------------------|---------------------------------------|
//! | 0–6581        | U+3400–U+4DB5     | CJK Unified Ideographs Extension A    |
//! | 6582–27483    | U+4E00–U+9FA5     | CJK Unified Ideographs                |
//! | 27484–32767   | U+AC00–U+C0A3     | Hangul Syllables                      |
//!
//! and 2⁷ final characters U+C0A4–U+C123 (Hangul Syllables again), each
//! carrying 7 bits, for the end of a message whose bit count leaves 1 to 7
//! bits over a multiple of 15. Why these:
//!
//! - **Each stands alone under every normalisation a platform may apply.**
//!   Unified ideographs have no decomposition at all (unlike the CJK
//!   *Compatibility* Ideographs U+F900–U+FAFF, which NFC replaces, and are
//!   not used). Precomposed Hangul syllables are what NFC and NFKC produce;
//!   a syllable composes only with a following conjoining jamo, and no jamo
//!   is in the alphabet, so two neighbours never merge. All have canonical
//!   combining class 0, none is whitespace, a control, a surrogate or
//!   private use, and all are in the Basic Multilingual Plane: one UTF-16
//!   unit, so 4096 of them are 4096 characters on every platform.
//! - **Ideographs first, Hangul only for the rest.** Ideographs are stable
//!   even under NFD and NFKD, which split Hangul syllables into jamo; no
//!   platform is known to send NFD, but the fewer characters exposed to it
//!   the better. The ideograph ranges total 27 484; Hangul fills the
//!   remaining 5 284 and the 128 final characters.
//! - **Only characters assigned since Unicode 3.0.** The ideographs added
//!   later at the ends of both blocks (U+4DB6–U+4DBF, U+9FA6–U+9FFF) are
//!   left out: a platform on an older Unicode table could treat them as
//!   unassigned and drop or replace them.
//!
//! # Bits to characters
//!
//! Bytes are read as one bit string, most significant bit first, cut into
//! 15-bit values, one main character each. Of the `r` bits left over (`8n`
//! mod 15), 8 to 14 go in one more main character, padded with zero bits;
//! 1 to 7 in one final character, padded to 7 bits. The decoder so knows
//! the length exactly: a message ending in a main character holds
//! `⌊15k/8⌋` bytes, one ending in a final character `⌊(15(k−1)+7)/8⌋`.
//! The padding must be zero and a final character may only end the text,
//! so every byte string has exactly one spelling and anything else is
//! refused ([`DenseError`]).
//!
//! ```
//! use pigeon_core::alphabet::Alphabet;
//!
//! let text = Alphabet::Dense.encode(b"pigeon");
//! assert_eq!(text.chars().count(), 4); // 48 bits: three 15-bit characters and one final
//! assert_eq!(Alphabet::decode(&text).unwrap(), b"pigeon");
//! assert_eq!(Alphabet::Dense.bytes_in(4096), 7680);
//! assert_eq!(Alphabet::Base64.bytes_in(4096), 3072);
//! ```

use base64::Engine as _;

/// How a text message spells bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Alphabet {
    /// Standard base64, no line breaks: 3 bytes in 4 characters.
    #[default]
    Base64,
    /// 15 bits a character (this module's alphabet): 15 bytes in 8.
    Dense,
}

impl Alphabet {
    pub const ALL: [Alphabet; 2] = [Alphabet::Base64, Alphabet::Dense];

    /// Its name in a URI (`alphabet=dense`).
    pub fn name(self) -> &'static str {
        match self {
            Alphabet::Base64 => "base64",
            Alphabet::Dense => "dense",
        }
    }

    pub fn parse(s: &str) -> Option<Alphabet> {
        Alphabet::ALL.into_iter().find(|a| a.name() == s)
    }

    /// The most bytes a text of `chars` characters carries.
    pub fn bytes_in(self, chars: usize) -> usize {
        match self {
            Alphabet::Base64 => chars / 4 * 3,
            Alphabet::Dense => chars / 8 * 15 + (chars % 8) * 15 / 8,
        }
    }

    /// How many bytes `text` spells, in whichever alphabet it is, without
    /// decoding it (exact for a text [`encode`](Self::encode) wrote).
    pub fn spelled_len(text: &str) -> usize {
        match Alphabet::of(text) {
            Alphabet::Base64 => {
                let padding = text.bytes().rev().take_while(|&b| b == b'=').count();
                (text.len() / 4 * 3).saturating_sub(padding)
            }
            Alphabet::Dense => {
                let chars = text.chars().count();
                match text.chars().next_back().and_then(value_of) {
                    Some(Value::Final(_)) => {
                        (MAIN_BITS as usize * (chars - 1) + FINAL_BITS as usize) / 8
                    }
                    _ => Alphabet::Dense.bytes_in(chars),
                }
            }
        }
    }

    /// `bytes` spelled in this alphabet.
    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Alphabet::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
            Alphabet::Dense => encode_dense(bytes),
        }
    }

    /// Which alphabet spelled `text`: base64 is ASCII, every dense
    /// character is not, so the first character tells (an empty text is
    /// base64's). A receiver thus reads both whatever its own setting.
    pub fn of(text: &str) -> Alphabet {
        match text.chars().next() {
            Some(c) if !c.is_ascii() => Alphabet::Dense,
            _ => Alphabet::Base64,
        }
    }

    /// The bytes `text` spells, in whichever alphabet it is ([`Alphabet::of`]).
    pub fn decode(text: &str) -> Result<Vec<u8>, DenseError> {
        match Alphabet::of(text) {
            Alphabet::Base64 => base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| DenseError::Base64(e.to_string())),
            Alphabet::Dense => decode_dense(text),
        }
    }
}

impl std::fmt::Display for Alphabet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a text is not a message of either alphabet: it was altered on the
/// way (a platform that rewrites characters), or is not pigeon's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenseError {
    /// A character outside the dense alphabet.
    #[error("character {found:?} (U+{:04X}) at position {at} is not in pigeon's dense alphabet: the platform altered the message, or it is not pigeon's (alphabet=base64 avoids it)", u32::from(*.found))]
    Foreign { at: usize, found: char },
    /// A final (7-bit) character before the end.
    #[error("a closing character of pigeon's dense alphabet at position {at} is not the last: the message was cut or altered on the way")]
    EarlyEnd { at: usize },
    /// Padding bits that the encoder leaves zero are not, or a closing
    /// character carries no data.
    #[error("the last character of a dense message is not one an encoder writes there: the message was altered on the way")]
    Padding,
    /// Not base64 either.
    #[error("not base64: {0}")]
    Base64(String),
}

/// Main characters: (first code point, how many), in value order.
const MAIN_RUNS: [(u32, u32); 3] = [(0x3400, 6582), (0x4E00, 20902), (0xAC00, 5284)];
/// Final characters, carrying 7 bits: right after the last main run.
const FINAL_FIRST: u32 = 0xC0A4;
const FINAL_BITS: u32 = 7;
const MAIN_BITS: u32 = 15;

fn main_char(value: u32) -> char {
    let mut v = value;
    for (first, len) in MAIN_RUNS {
        if v < len {
            return char::from_u32(first + v).expect("the runs are assigned BMP characters");
        }
        v -= len;
    }
    unreachable!("a 15-bit value is below the runs' total of 32768")
}

fn final_char(value: u32) -> char {
    char::from_u32(FINAL_FIRST + value).expect("the final run is assigned BMP characters")
}

/// What a character is worth: a main value, or a final one.
enum Value {
    Main(u32),
    Final(u32),
}

fn value_of(c: char) -> Option<Value> {
    let cp = u32::from(c);
    let mut base = 0;
    for (first, len) in MAIN_RUNS {
        if (first..first + len).contains(&cp) {
            return Some(Value::Main(base + cp - first));
        }
        base += len;
    }
    (FINAL_FIRST..FINAL_FIRST + (1 << FINAL_BITS))
        .contains(&cp)
        .then(|| Value::Final(cp - FINAL_FIRST))
}

fn encode_dense(bytes: &[u8]) -> String {
    // Every character is three bytes of UTF-8.
    let mut out = String::with_capacity((bytes.len() * 8).div_ceil(15) * 3);
    // At most 14 bits wait between bytes, 22 after one is added.
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        if bits >= MAIN_BITS {
            bits -= MAIN_BITS;
            out.push(main_char(acc >> bits));
            acc &= (1 << bits) - 1;
        }
    }
    if bits > FINAL_BITS {
        out.push(main_char(acc << (MAIN_BITS - bits)));
    } else if bits > 0 {
        out.push(final_char(acc << (FINAL_BITS - bits)));
    }
    out
}

fn decode_dense(text: &str) -> Result<Vec<u8>, DenseError> {
    let mut out = Vec::with_capacity(text.len() / 3 * 15 / 8 + 1);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    let mut chars = text.chars().enumerate().peekable();
    while let Some((at, c)) = chars.next() {
        let (value, width) = match value_of(c) {
            Some(Value::Main(v)) => (v, MAIN_BITS),
            Some(Value::Final(v)) if chars.peek().is_none() => (v, FINAL_BITS),
            Some(Value::Final(_)) => return Err(DenseError::EarlyEnd { at }),
            None => return Err(DenseError::Foreign { at, found: c }),
        };
        acc = (acc << width) | value;
        bits += width;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // What is left is padding, under 8 bits: zero, or not this encoder's;
    // and a closing character is there only for 1 to 7 bits of data, so
    // all 7 of its bits left over is one no encoder writes.
    let closed = text
        .chars()
        .next_back()
        .is_some_and(|c| matches!(value_of(c), Some(Value::Final(_))));
    if acc != 0 || (closed && bits == FINAL_BITS) {
        return Err(DenseError::Padding);
    }
    Ok(out)
}

/// Every character the dense alphabet uses (main values first, then the
/// final ones), for tests that check each.
#[cfg(test)]
pub(crate) fn dense_characters() -> impl Iterator<Item = char> {
    (0..1u32 << MAIN_BITS)
        .map(main_char)
        .chain((0..1u32 << FINAL_BITS).map(final_char))
}

#[cfg(test)]
mod tests;
