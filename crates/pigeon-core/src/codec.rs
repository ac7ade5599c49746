//! The one place bytes become values: bincode 2.0.1 behind a version byte.
//!
//! Every stored record and every frame body is `[version: u8] ++ bincode`.
//! Decoding checks the version, caps how much bincode may allocate
//! ([`DECODE_LIMIT`]) so a hostile length prefix cannot exhaust memory, and
//! refuses trailing bytes, so one value has exactly one encoding.
//!
//! ```ignore
//! let bytes = codec::encode("point", 1, &(3u32, 4u32))?;
//! let back: (u32, u32) = codec::decode("point", 1, &bytes)?;
//! ```
//!
//! (Private to the crate; the test `round_trips_and_checks_version` below
//! runs the same.)

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{CoreError, Result};

/// Most bytes one decoded value may claim (frames are smaller still: the
/// link refuses anything above its own limits before it gets here).
pub const DECODE_LIMIT: usize = 64 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encode `value` as `[version] ++ bincode(value)`.
pub fn encode<T: Serialize + ?Sized>(
    what: &'static str,
    version: u8,
    value: &T,
) -> Result<Vec<u8>> {
    let mut out = vec![version];
    let body = bincode::serde::encode_to_vec(value, config()).map_err(|e| CoreError::Encode {
        what,
        reason: e.to_string(),
    })?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decode what [`encode`] made, refusing other versions and trailing bytes.
pub fn decode<T: DeserializeOwned>(what: &'static str, version: u8, bytes: &[u8]) -> Result<T> {
    let (&found, body) = bytes.split_first().ok_or(CoreError::Decode {
        what,
        reason: "empty".into(),
    })?;
    if found != version {
        return Err(CoreError::Decode {
            what,
            reason: format!("version {found}, this pigeon reads version {version}"),
        });
    }
    let (value, used) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| CoreError::Decode {
            what,
            reason: e.to_string(),
        })?;
    if used != body.len() {
        return Err(CoreError::Decode {
            what,
            reason: format!("{} trailing bytes", body.len() - used),
        });
    }
    Ok(value)
}

/// LEB128, seven bits a byte, low bits first: the varints of the link's
/// records and of deltas.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The varint at `pos` in `bytes`, moving `pos` past it; None when it is
/// cut short or longer than 64 bits.
pub(crate) fn get_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        if i == 9 && b > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_version() {
        let bytes = encode("t", 3, &vec![1u8, 2, 3]).unwrap();
        let back: Vec<u8> = decode("t", 3, &bytes).unwrap();
        assert_eq!(back, vec![1, 2, 3]);
        assert!(decode::<Vec<u8>>("t", 4, &bytes).is_err());
    }

    #[test]
    fn refuses_trailing_bytes_and_empty_input() {
        let mut bytes = encode("t", 1, &7u32).unwrap();
        bytes.push(0);
        assert!(decode::<u32>("t", 1, &bytes).is_err());
        assert!(decode::<u32>("t", 1, &[]).is_err());
    }

    #[test]
    fn a_huge_length_prefix_does_not_allocate() {
        // version, then a varint length of u64::MAX for a Vec<u8>.
        let bytes = [1u8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
        let err = decode::<Vec<u8>>("t", 1, &bytes).unwrap_err();
        assert!(err.to_string().contains("cannot decode"));
    }
}
