//! Chunk bodies: gzip or raw, the plaintext's hash, and the chunk frame's head.

use super::*;

pub(super) const FLAG_GZIP: u8 = 1;

/// Whether a chunk goes gzipped. A chunk sent before under the same key is
/// sent exactly as it was ([`Gzip::Always`] or [`Gzip::Never`]): one nonce
/// must never seal two different plaintexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gzip {
    Never,
    Always,
    /// Compress when a sample shows it will shrink.
    IfUseful,
}

/// Whether a chunk is compressed ([`Gzip`]) and at which gzip level: both
/// fixed for a sealing run, so a chunk sealed again under its nonce is the
/// same plaintext, byte for byte (gzip's output is a function of the input
/// and the level).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Squeeze {
    pub plan: Gzip,
    /// 1 (fast) to 9 (smallest).
    pub level: u32,
}

impl From<Gzip> for Squeeze {
    fn from(plan: Gzip) -> Squeeze {
        Squeeze { plan, level: 1 }
    }
}

/// Decompress at most `expected_len + 1` bytes: enough to tell a bomb.
pub(super) fn inflate(payload: &[u8], expected_len: usize, index: u32) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(expected_len);
    let mut dec = flate2::read::GzDecoder::new(payload).take(expected_len as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| CoreError::Integrity(format!("chunk {index} does not decompress: {e}")))?;
    Ok(out)
}

pub(super) fn check_chunk(
    index: u32,
    data: Vec<u8>,
    expected_len: usize,
    claimed: &[u8; 32],
) -> Result<(Vec<u8>, [u8; 32])> {
    if data.len() != expected_len {
        return Err(CoreError::Integrity(format!(
            "chunk {index} holds {} bytes, the manifest says {expected_len}",
            data.len()
        )));
    }
    let hash = crypto::sha256(&data);
    if hash != *claimed {
        return Err(CoreError::Integrity(format!(
            "chunk {index} SHA-256 mismatch"
        )));
    }
    Ok((data, hash))
}

/// bincode's variant index of [`Frame::Chunk`].
pub(super) const CHUNK_VARIANT: u8 = 3;

/// Read the head [`chunk_frame_head`] writes: (transfer, nonce, head
/// length), when `bytes` is a well-formed chunk frame whose body runs to the
/// end. Anything else is left to the generic decoder.
pub(super) fn parse_chunk_head(bytes: &[u8]) -> Option<([u8; 16], ChunkNonce, usize)> {
    /// bincode's varint; `wide`: a u64 (an 8-byte form is allowed), else a
    /// u32, for which bincode refuses the 8-byte form, and so must this
    /// (found by fuzzing: the two decoders of one format disagreed).
    fn varint(bytes: &[u8], pos: &mut usize, wide: bool) -> Option<u64> {
        let first = *bytes.get(*pos)?;
        *pos += 1;
        let width = match first {
            0..=250 => return Some(u64::from(first)),
            251 => 2,
            252 => 4,
            253 if wide => 8,
            _ => return None,
        };
        let raw = bytes.get(*pos..*pos + width)?;
        *pos += width;
        let mut le = [0u8; 8];
        le[..width].copy_from_slice(raw);
        Some(u64::from_le_bytes(le))
    }
    if bytes.len() < 2 || bytes[0] != PROTOCOL_VERSION || bytes[1] != CHUNK_VARIANT {
        return None;
    }
    let transfer: [u8; 16] = bytes.get(2..18)?.try_into().ok()?;
    let mut pos = 18;
    let run = u32::try_from(varint(bytes, &mut pos, false)?).ok()?;
    let index = u32::try_from(varint(bytes, &mut pos, false)?).ok()?;
    let last = match *bytes.get(pos)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    pos += 1;
    let len = varint(bytes, &mut pos, true)?;
    (pos as u64)
        .checked_add(len)
        .filter(|&end| end == bytes.len() as u64)?;
    Some((transfer, ChunkNonce { run, index, last }, pos))
}

/// The encoding of `Frame::Chunk { transfer, run, index, last, body }` up
/// to the body's bytes, for a body of `body_len`: the same bytes bincode
/// writes (checked by a test), so a frame can be built in one buffer.
pub(super) fn chunk_frame_head(
    transfer: &[u8; 16],
    at: ChunkNonce,
    body_len: usize,
) -> Result<Vec<u8>> {
    let mut head = Frame::Chunk {
        transfer: *transfer,
        run: at.run,
        index: at.index,
        last: at.last,
        body: Vec::new(),
    }
    .encode()?;
    // An empty body ends in its length, a one-byte zero; put the real one.
    head.pop();
    let n = body_len as u64;
    if n < 251 {
        head.push(n as u8);
    } else if n <= u64::from(u16::MAX) {
        head.push(251);
        head.extend_from_slice(&(n as u16).to_le_bytes());
    } else if n <= u64::from(u32::MAX) {
        head.push(252);
        head.extend_from_slice(&(n as u32).to_le_bytes());
    } else {
        head.push(253);
        head.extend_from_slice(&n.to_le_bytes());
    }
    Ok(head)
}

pub(super) fn gzip_bytes(data: &[u8], level: u32) -> Result<Vec<u8>> {
    gzip(data, level).ok_or_else(|| CoreError::Encode {
        what: "chunk",
        reason: "gzip failed".into(),
    })
}

pub(super) fn gzip(data: &[u8], level: u32) -> Option<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 2),
        flate2::Compression::new(level.clamp(1, 9)),
    );
    enc.write_all(data).and_then(|_| enc.finish()).ok()
}

/// Bytes of a big chunk tried first: if they do not shrink by a tenth,
/// the chunk goes raw without spending a whole compression on it.
pub(super) const SAMPLE: usize = 16 * 1024;

pub(super) fn looks_compressible(data: &[u8]) -> bool {
    if data.len() < 4 * SAMPLE {
        return true;
    }
    // From the middle: headers at the start of a file are often not
    // representative of the rest.
    let start = (data.len() / 2).saturating_sub(SAMPLE / 2);
    gzip(&data[start..start + SAMPLE], 1).is_some_and(|c| c.len() < SAMPLE * 9 / 10)
}

/// A chunk's plaintext, ready to seal or just opened.
pub struct ChunkBody;

impl ChunkBody {
    /// Build the whole encoded [`Frame::Chunk`] for the chunk at `at` in
    /// one buffer: `read` fills the chunk's `len` bytes in place (no copies
    /// on the common path), `seen` is shown them before sealing (to hash the
    /// file in stream). Returns (frame bytes, plaintext SHA-256, compressed).
    pub fn frame(
        cipher: &ChunkCipher,
        transfer: &[u8; 16],
        at: ChunkNonce,
        len: usize,
        gzip: impl Into<Squeeze>,
        read: impl FnOnce(&mut [u8]) -> std::io::Result<()>,
        seen: impl FnOnce(&[u8]),
    ) -> Result<(Vec<u8>, [u8; 32], bool)> {
        let index = at.index;
        let head = chunk_frame_head(transfer, at, 1 + 32 + len + crypto::TAG_LEN)?;
        let start = head.len();
        let mut out = Vec::with_capacity(start + 1 + 32 + len + crypto::TAG_LEN);
        out.extend_from_slice(&head);
        out.resize(start + 1 + 32 + len, 0);
        read(&mut out[start + 33..])
            .map_err(|e| CoreError::io(format!("reading chunk {index}"), e))?;
        let data = &out[start + 33..];
        seen(data);
        let hash = crypto::sha256(data);
        let Squeeze { plan, level } = gzip.into();
        let compressed = match plan {
            Gzip::Never => None,
            Gzip::Always => Some(gzip_bytes(data, level)?),
            Gzip::IfUseful if data.len() >= 64 && looks_compressible(data) => {
                Some(gzip_bytes(data, level)?).filter(|c| c.len() < data.len())
            }
            Gzip::IfUseful => None,
        };
        {
            if let Some(gz) = compressed {
                let head = chunk_frame_head(transfer, at, 1 + 32 + gz.len() + crypto::TAG_LEN)?;
                let start = head.len();
                let mut out = Vec::with_capacity(start + 1 + 32 + gz.len() + crypto::TAG_LEN);
                out.extend_from_slice(&head);
                out.push(FLAG_GZIP);
                out.extend_from_slice(&hash);
                out.extend_from_slice(&gz);
                let tag = cipher.seal_in_place(at, &mut out[start..])?;
                out.extend_from_slice(&tag);
                return Ok((out, hash, true));
            }
        }
        out[start] = 0;
        out[start + 1..start + 33].copy_from_slice(&hash);
        let tag = cipher.seal_in_place(at, &mut out[start..])?;
        out.extend_from_slice(&tag);
        Ok((out, hash, false))
    }

    /// Open a sealed body in place, decompress (never past `expected_len`:
    /// no bombs) and check the plaintext hash. Returns the data and its hash.
    pub fn open_owned(
        cipher: &ChunkCipher,
        at: ChunkNonce,
        mut body: Vec<u8>,
        expected_len: usize,
    ) -> Result<(Vec<u8>, [u8; 32])> {
        let index = at.index;
        let n = cipher.open_in_place(at, &mut body)?;
        body.truncate(n);
        if body.len() < 33 {
            return Err(CoreError::Integrity(format!("chunk {index} is too short")));
        }
        let flags = body[0];
        let mut claimed = [0u8; 32];
        claimed.copy_from_slice(&body[1..33]);
        let data = if flags & FLAG_GZIP != 0 {
            inflate(&body[33..], expected_len, index)?
        } else {
            body.drain(..33);
            body
        };
        check_chunk(index, data, expected_len, &claimed)
    }
}
