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

pub(super) use crate::codec::put_varint;

pub(super) fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, Malformed> {
    crate::codec::get_varint(buf, pos).ok_or(Malformed)
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
    let mut frames = vec![];
    for record in records(buf)? {
        match record? {
            // Read by the receive loop, first in the message.
            Record::Mangled => {}
            Record::Whole(frame) => frames.push(frame.to_vec()),
            Record::Part {
                key: Key::Id(id),
                total,
                offset,
                bytes,
            } => {
                if let Some(frame) = reassembler.add(id, total, offset, bytes)? {
                    frames.push(frame);
                }
            }
            Record::Part {
                key: Key::Piece(key),
                total,
                offset,
                bytes,
            } => {
                if let Some(frame) = reassembler.add_piece(key, total, offset, bytes)? {
                    frames.push(frame);
                }
            }
        }
    }
    Ok(frames)
}

/// The records of a message the provider took no longer (its limit went
/// down after the message was packed), cut again into messages of at most
/// `capacity` record bytes each, in order: a fragment or a piece into
/// smaller ones at their offsets (the receiver puts parts together by
/// offset, however they were cut), a whole frame that no longer fits one
/// message into fragments under a new id from `next_id`.
pub(super) fn recut(
    msg: &[u8],
    capacity: usize,
    next_id: &mut u64,
) -> Result<Vec<Vec<u8>>, Malformed> {
    if capacity < MIN_FRAGMENT_ROOM {
        return Err(Malformed);
    }
    let limit = capacity + HEADER_LEN;
    let fresh = || {
        let mut m = Vec::with_capacity(limit.min(4 * 1024 * 1024));
        m.extend_from_slice(MAGIC);
        m.push(LINK_VERSION);
        m
    };
    let mut out = vec![];
    let mut cur = fresh();
    for record in records(msg)? {
        let (key, total, mut offset, mut bytes) = match record? {
            // Said again in the next message packed: not worth a place here.
            Record::Mangled => continue,
            Record::Whole(frame) => {
                let need = 1 + varint_len(frame.len() as u64) + frame.len();
                if need <= capacity {
                    if cur.len() + need > limit {
                        out.push(std::mem::replace(&mut cur, fresh()));
                    }
                    cur.push(TAG_WHOLE);
                    put_varint(&mut cur, frame.len() as u64);
                    cur.extend_from_slice(frame);
                    continue;
                }
                *next_id = next_id.wrapping_add(1);
                (Key::Id(*next_id), frame.len(), 0, frame)
            }
            Record::Part {
                key,
                total,
                offset,
                bytes,
            } => (key, total, offset, bytes),
        };
        while !bytes.is_empty() {
            let free = limit - cur.len();
            let overhead = record_header(key, total, offset, bytes.len().min(free));
            let room = free.saturating_sub(overhead);
            // A part too small to be worth its header starts a new message,
            // unless it finishes the record.
            if room == 0 || (room < bytes.len() && free < MIN_FRAGMENT_ROOM) {
                out.push(std::mem::replace(&mut cur, fresh()));
                continue;
            }
            let (part, rest) = bytes.split_at(bytes.len().min(room));
            match key {
                Key::Id(id) => put_fragment(&mut cur, id, total, offset, part),
                Key::Piece(k) => put_piece(&mut cur, k, total, offset, part),
            }
            offset += part.len();
            bytes = rest;
        }
    }
    if cur.len() > HEADER_LEN {
        out.push(cur);
    }
    Ok(out)
}

/// One record of a message, as it was read.
enum Record<'a> {
    /// Dense text arrives mangled where the message comes from
    /// ([`TAG_MANGLED`]).
    Mangled,
    Whole(&'a [u8]),
    /// A fragment (`Key::Id`) or a chunk's piece (`Key::Piece`): `bytes`
    /// of a frame of `total` bytes, from `offset`.
    Part {
        key: Key,
        total: usize,
        offset: usize,
        bytes: &'a [u8],
    },
}

/// The records of a link message, read one at a time (a malformed one
/// ends the reading with an error after those before it).
fn records(buf: &[u8]) -> Result<impl Iterator<Item = Result<Record<'_>, Malformed>>, Malformed> {
    if buf.len() < HEADER_LEN || &buf[..2] != MAGIC || buf[2] != LINK_VERSION {
        return Err(Malformed);
    }
    let mut pos = HEADER_LEN;
    let mut failed = false;
    Ok(std::iter::from_fn(move || {
        if failed || pos >= buf.len() {
            return None;
        }
        let record = read_record(buf, &mut pos);
        failed = record.is_err();
        Some(record)
    }))
}

/// The record at `pos`, moving past it.
fn read_record<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Record<'a>, Malformed> {
    let tag = buf[*pos];
    *pos += 1;
    let key = match tag {
        TAG_MANGLED => return Ok(Record::Mangled),
        TAG_WHOLE => {
            let len = get_varint(buf, pos)? as usize;
            return Ok(Record::Whole(take(buf, pos, len)?));
        }
        TAG_FRAGMENT => Key::Id(u64::from_be_bytes(get_8(buf, pos)?)),
        TAG_PIECE => {
            let transfer = u64::from_be_bytes(get_8(buf, pos)?);
            let run = u32::try_from(get_varint(buf, pos)?).map_err(|_| Malformed)?;
            let index = u32::try_from(get_varint(buf, pos)?).map_err(|_| Malformed)?;
            Key::Piece(PieceKey {
                transfer,
                index,
                run,
            })
        }
        _ => return Err(Malformed),
    };
    let total = get_varint(buf, pos)? as usize;
    let offset = get_varint(buf, pos)? as usize;
    let len = get_varint(buf, pos)? as usize;
    Ok(Record::Part {
        key,
        total,
        offset,
        bytes: take(buf, pos, len)?,
    })
}

/// The `len` bytes at `pos`, moving past them.
fn take<'a>(buf: &'a [u8], pos: &mut usize, len: usize) -> Result<&'a [u8], Malformed> {
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or(Malformed)?;
    let bytes = &buf[*pos..end];
    *pos = end;
    Ok(bytes)
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
