//! The message layout: records, fragments, varints, and unpacking.

use super::*;

pub(super) fn put_fragment(msg: &mut Vec<u8>, id: u64, total: usize, offset: usize, part: &[u8]) {
    msg.push(TAG_FRAGMENT);
    msg.extend_from_slice(&id.to_be_bytes());
    put_varint(msg, total as u64);
    put_varint(msg, offset as u64);
    put_varint(msg, part.len() as u64);
    msg.extend_from_slice(part);
}

pub(super) fn put_piece(
    msg: &mut Vec<u8>,
    key: PieceKey,
    total: usize,
    offset: usize,
    part: &[u8],
) {
    msg.push(TAG_PIECE);
    msg.extend_from_slice(&key.transfer.to_be_bytes());
    put_varint(msg, u64::from(key.run));
    put_varint(msg, u64::from(key.index));
    put_varint(msg, total as u64);
    put_varint(msg, offset as u64);
    put_varint(msg, part.len() as u64);
    msg.extend_from_slice(part);
}

/// The length of a fragment's or piece's header, for a part of `len`.
pub(super) fn record_header(key: Key, total: usize, offset: usize, len: usize) -> usize {
    let varints = varint_len(total as u64) + varint_len(offset as u64) + varint_len(len as u64);
    match key {
        Key::Id(_) => 1 + 8 + varints,
        Key::Piece(k) => {
            1 + 8 + varint_len(u64::from(k.run)) + varint_len(u64::from(k.index)) + varints
        }
    }
}

fn varint_len(v: u64) -> usize {
    (64 - v.max(1).leading_zeros() as usize).div_ceil(7)
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, Malformed> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(Malformed)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Malformed)
}

/// A message that is not a well-formed link message (corrupted in
/// transit, or not pigeon's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// [`unpack`], reusing the message's buffer when it holds exactly one whole
/// frame (a chunk on an unpaced link): no copy of a megabyte.
pub fn unpack_owned(
    mut buf: Vec<u8>,
    reassembler: &mut Reassembler,
) -> Result<Vec<Vec<u8>>, Malformed> {
    if buf.len() > HEADER_LEN + 1
        && buf[HEADER_LEN] == TAG_WHOLE
        && &buf[..2] == MAGIC
        && buf[2] == LINK_VERSION
    {
        let mut pos = HEADER_LEN + 1;
        if let Ok(len) = get_varint(&buf, &mut pos) {
            if pos.checked_add(len as usize) == Some(buf.len()) {
                buf.drain(..pos);
                return Ok(vec![buf]);
            }
        }
    }
    unpack(&buf, reassembler)
}

/// Split a message into the frames it completes.
pub fn unpack(buf: &[u8], reassembler: &mut Reassembler) -> Result<Vec<Vec<u8>>, Malformed> {
    if buf.len() < HEADER_LEN || &buf[..2] != MAGIC || buf[2] != LINK_VERSION {
        return Err(Malformed);
    }
    let mut pos = HEADER_LEN;
    let mut frames = vec![];
    while pos < buf.len() {
        let tag = buf[pos];
        pos += 1;
        match tag {
            TAG_WHOLE => {
                let len = get_varint(buf, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= buf.len())
                    .ok_or(Malformed)?;
                frames.push(buf[pos..end].to_vec());
                pos = end;
            }
            TAG_FRAGMENT => {
                let id_bytes = get_8(buf, &mut pos)?;
                let total = get_varint(buf, &mut pos)? as usize;
                let offset = get_varint(buf, &mut pos)? as usize;
                let len = get_varint(buf, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= buf.len())
                    .ok_or(Malformed)?;
                if let Some(frame) =
                    reassembler.add(u64::from_be_bytes(id_bytes), total, offset, &buf[pos..end])?
                {
                    frames.push(frame);
                }
                pos = end;
            }
            TAG_PIECE => {
                let tag = get_8(buf, &mut pos)?;
                let run = u32::try_from(get_varint(buf, &mut pos)?).map_err(|_| Malformed)?;
                let index = u32::try_from(get_varint(buf, &mut pos)?).map_err(|_| Malformed)?;
                let total = get_varint(buf, &mut pos)? as usize;
                let offset = get_varint(buf, &mut pos)? as usize;
                let len = get_varint(buf, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= buf.len())
                    .ok_or(Malformed)?;
                let key = PieceKey {
                    transfer: u64::from_be_bytes(tag),
                    index,
                    run,
                };
                if let Some(frame) = reassembler.add_piece(key, total, offset, &buf[pos..end])? {
                    frames.push(frame);
                }
                pos = end;
            }
            _ => return Err(Malformed),
        }
    }
    Ok(frames)
}

/// The 8 bytes at `pos`, moving past them.
fn get_8(buf: &[u8], pos: &mut usize) -> Result<[u8; 8], Malformed> {
    let bytes: [u8; 8] = buf
        .get(*pos..*pos + 8)
        .ok_or(Malformed)?
        .try_into()
        .map_err(|_| Malformed)?;
    *pos += 8;
    Ok(bytes)
}
