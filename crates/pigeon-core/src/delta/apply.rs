//! [`apply`]: rebuilds the new file from the base and a delta that may be
//! hostile.

use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};

use super::{
    unzigzag, DeltaError, DELTA_MAGIC, DELTA_VERSION, OP_ADD, OP_COPY, OP_END, OP_LITERAL,
};

/// Writes to `out` the file `delta` describes against `base` (`base_len`
/// bytes long), and returns its length. Refused before anything is written
/// when the header names another base length or a result over `limit`; and
/// while writing, any copy outside the base, any instruction past the
/// announced length, an unknown instruction, a truncated delta or bytes
/// after its end. Every instruction writes at least one byte and the total
/// is bounded by the header, so the work is bounded by `limit`.
///
/// `apply` cannot know whether `base` is the file the signature was made
/// from (only its length is checked): the caller checks the result's
/// SHA-256 against the one the sender announced.
pub fn apply(
    mut base: impl Read + Seek,
    base_len: u64,
    delta: impl Read,
    mut out: impl Write,
    limit: u64,
) -> Result<u64, DeltaError> {
    let mut delta = BufReader::with_capacity(1 << 16, delta);
    let mut magic = [0u8; 5];
    delta.read_exact(&mut magic).map_err(truncated)?;
    if &magic[..4] != DELTA_MAGIC {
        return Err(DeltaError::NotADelta);
    }
    if magic[4] != DELTA_VERSION {
        return Err(DeltaError::UnsupportedVersion {
            what: "delta",
            version: magic[4],
        });
    }
    let claimed_base = read_varint(&mut delta)?;
    if claimed_base != base_len {
        return Err(DeltaError::BaseMismatch {
            expected: claimed_base,
            actual: base_len,
        });
    }
    let result_len = read_varint(&mut delta)?;
    if result_len > limit {
        return Err(DeltaError::TooLarge { result_len, limit });
    }
    let mut written = 0u64;
    let mut prev_end = 0u64;
    let mut base_pos: Option<u64> = None;
    // For additions only: a block of the base and of the differences.
    let mut blocks: Option<(Vec<u8>, Vec<u8>)> = None;
    loop {
        let op = read_byte(&mut delta)?.ok_or(DeltaError::Truncated)?;
        match op {
            OP_END => break,
            OP_ADD => {
                let (offset, len) = read_range(&mut delta, prev_end, base_len)?;
                check_room(written, len, result_len)?;
                if base_pos != Some(offset) {
                    base.seek(SeekFrom::Start(offset))
                        .map_err(DeltaError::Base)?;
                }
                let (from, by) =
                    blocks.get_or_insert_with(|| (vec![0; ADD_BLOCK], vec![0; ADD_BLOCK]));
                let mut left = len;
                while left > 0 {
                    let k = left.min(ADD_BLOCK as u64) as usize;
                    read_full(&mut base, &mut from[..k]).map_err(|e| match e {
                        Some(e) => DeltaError::Base(e),
                        None => DeltaError::BaseShort {
                            offset,
                            len,
                            got: len - left,
                        },
                    })?;
                    read_full(&mut delta, &mut by[..k]).map_err(|e| match e {
                        Some(e) => DeltaError::Delta(e),
                        None => DeltaError::Truncated,
                    })?;
                    for (x, d) in from[..k].iter_mut().zip(&by[..k]) {
                        *x = x.wrapping_add(*d);
                    }
                    out.write_all(&from[..k]).map_err(DeltaError::Output)?;
                    left -= k as u64;
                }
                base_pos = Some(offset + len);
                prev_end = offset + len;
                written += len;
            }
            OP_COPY => {
                let (offset, len) = read_range(&mut delta, prev_end, base_len)?;
                check_room(written, len, result_len)?;
                if base_pos != Some(offset) {
                    base.seek(SeekFrom::Start(offset))
                        .map_err(DeltaError::Base)?;
                }
                let n = io::copy(&mut (&mut base).take(len), &mut out).map_err(DeltaError::Base)?;
                if n != len {
                    return Err(DeltaError::BaseShort {
                        offset,
                        len,
                        got: n,
                    });
                }
                base_pos = Some(offset + len);
                prev_end = offset + len;
                written += len;
            }
            OP_LITERAL => {
                let len = read_varint(&mut delta)?;
                if len == 0 {
                    return Err(DeltaError::EmptyInstruction);
                }
                check_room(written, len, result_len)?;
                let n =
                    io::copy(&mut (&mut delta).take(len), &mut out).map_err(DeltaError::Output)?;
                if n != len {
                    return Err(DeltaError::Truncated);
                }
                written += len;
            }
            other => return Err(DeltaError::UnknownInstruction(other)),
        }
    }
    if written != result_len {
        return Err(DeltaError::LengthMismatch {
            announced: result_len,
            written,
        });
    }
    if read_byte(&mut delta)?.is_some() {
        return Err(DeltaError::TrailingBytes);
    }
    out.flush().map_err(DeltaError::Output)?;
    Ok(written)
}

/// A copy's or an addition's range of the base: its offset (relative to
/// where the last one ended) and length, checked to lie inside the base.
fn read_range(
    delta: &mut impl Read,
    prev_end: u64,
    base_len: u64,
) -> Result<(u64, u64), DeltaError> {
    let rel = unzigzag(read_varint(delta)?);
    let len = read_varint(delta)?;
    let offset = i128::from(prev_end) + i128::from(rel);
    let end = offset + i128::from(len);
    if len == 0 || offset < 0 || end > i128::from(base_len) {
        return Err(DeltaError::CopyOutOfBounds {
            offset: offset.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            len,
            base_len,
        });
    }
    // 0 ≤ offset < base_len, checked above.
    Ok((offset as u64, len))
}

/// Bytes of an addition taken at a time (two buffers of it, made at the
/// first addition).
const ADD_BLOCK: usize = 64 * 1024;

/// Fill `buf` from `r`: Err(None) when it ends first, Err(Some) on an error.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<(), Option<io::Error>> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => return Err(None),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Some(e)),
        }
    }
    Ok(())
}

fn check_room(written: u64, len: u64, result_len: u64) -> Result<(), DeltaError> {
    match written.checked_add(len) {
        Some(end) if end <= result_len => Ok(()),
        _ => Err(DeltaError::Overrun {
            announced: result_len,
        }),
    }
}

fn truncated(e: io::Error) -> DeltaError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        DeltaError::Truncated
    } else {
        DeltaError::Delta(e)
    }
}

fn read_byte(r: &mut impl Read) -> Result<Option<u8>, DeltaError> {
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(b[0])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DeltaError::Delta(e)),
        }
    }
}

fn read_varint(r: &mut impl Read) -> Result<u64, DeltaError> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = read_byte(r)?.ok_or(DeltaError::Truncated)?;
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err(DeltaError::BadVarint);
        }
        v |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DeltaError::BadVarint)
}
