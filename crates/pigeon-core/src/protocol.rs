//! What travels between the parties: [`Frame`]s, and inside sealed frames,
//! [`Control`] messages. Pure data and pure functions.
//!
//! A transfer is a [`Manifest`] plus `chunk_count` chunks of `chunk_size`
//! bytes (the last one shorter). A chunk travels as [`Frame::Chunk`], its
//! body sealed with the transfer's [`ChunkCipher`]; inside the seal is a
//! [`ChunkBody`]: a flag byte (gzip or raw), the SHA-256 of the plaintext,
//! and the data. Everything else (offers, acknowledgements, the final hash,
//! listings) is a [`Control`] sealed in the Noise session.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::bitmap::Bitmap;
use crate::codec;
use crate::crypto::{self, ChunkCipher, ChunkNonce, TransferSecret, PROTOCOL_VERSION};
use crate::engine::handle::RemoteEntry;
use crate::error::{CoreError, Result};
use crate::view::{FaultCounters, TransferId};

/// Bytes a [`Frame::Chunk`] adds around its data, at most: frame version and
/// tag (2), transfer id (16), run and index varints (5 + 5), last flag (1),
/// body length varint (5), chunk body flags (1) and hash (32), AEAD tag (16).
pub const CHUNK_FRAME_OVERHEAD: usize = 2 + 16 + 5 + 5 + 1 + 5 + 1 + 32 + crypto::TAG_LEN;

/// A frame: the unit the link carries (packed into and split across messages).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// First handshake message, from the client.
    Hello {
        session: [u8; 16],
        from: [u8; 32],
        #[serde(with = "serde_bytes")]
        noise: Vec<u8>,
    },
    /// Second handshake message, from the agent.
    Welcome {
        session: [u8; 16],
        #[serde(with = "serde_bytes")]
        noise: Vec<u8>,
    },
    /// A [`Control`] sealed in the session.
    Sealed {
        session: [u8; 16],
        /// Sender's key id, so an unknown session can be answered.
        from: [u8; 8],
        nonce: u64,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// One chunk of a transfer, sealed with the transfer's key under the
    /// nonce ([`ChunkNonce`]) its `run`, `index` and `last` name.
    Chunk {
        transfer: [u8; 16],
        run: u32,
        index: u32,
        last: bool,
        // Bytes, not a sequence of u8: one copy instead of a loop.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// "I have no session by that id; handshake again." Unauthenticated: at
    /// worst it makes the client handshake once more (rate limited).
    UnknownSession { session: [u8; 16], from: [u8; 32] },
}

impl Frame {
    pub fn encode(&self) -> Result<Vec<u8>> {
        codec::encode("frame", PROTOCOL_VERSION, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Frame> {
        codec::decode("frame", PROTOCOL_VERSION, bytes)
    }

    /// [`decode`](Self::decode), but a chunk frame keeps `bytes` as its
    /// body (the header is cut off in place): no copy of a megabyte.
    pub fn decode_owned(mut bytes: Vec<u8>) -> Result<Frame> {
        if let Some((transfer, at, head)) = parse_chunk_head(&bytes) {
            bytes.drain(..head);
            return Ok(Frame::Chunk {
                transfer,
                run: at.run,
                index: at.index,
                last: at.last,
                body: bytes,
            });
        }
        Frame::decode(&bytes)
    }
}

/// Everything the receiver must know before the first chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub size: u64,
    pub chunk_size: u32,
    pub mime: String,
    pub modified_unix: u64,
    pub mode: u32,
}

impl Manifest {
    pub fn chunk_count(&self) -> u32 {
        chunk_count(self.size, self.chunk_size)
    }

    /// Plaintext length of chunk `index`.
    pub fn chunk_len(&self, index: u32) -> usize {
        let start = u64::from(index) * u64::from(self.chunk_size);
        (self.size.saturating_sub(start)).min(u64::from(self.chunk_size)) as usize
    }

    pub fn offset(&self, index: u32) -> u64 {
        u64::from(index) * u64::from(self.chunk_size)
    }

    /// Refuse shapes no sender of ours makes, before anything is allocated
    /// for them (a chunk map costs a byte per chunk).
    pub fn check(&self) -> std::result::Result<(), String> {
        const MIN_CHUNK: u32 = 64;
        const MAX_CHUNK: u32 = 16 * 1024 * 1024;
        const MAX_CHUNKS: u64 = 1 << 26;
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&self.chunk_size) {
            return Err(format!("chunk size {} is out of range", self.chunk_size));
        }
        let chunks = self.size.div_ceil(u64::from(self.chunk_size)).max(1);
        if chunks > MAX_CHUNKS {
            return Err(format!(
                "{} bytes in chunks of {} is more than {MAX_CHUNKS} chunks",
                self.size, self.chunk_size
            ));
        }
        Ok(())
    }

    /// Names one keying of a transfer: its secret and this manifest.
    pub fn epoch(&self, secret: &TransferSecret) -> Result<[u8; 8]> {
        let mut material = secret.key.to_vec();
        material.extend_from_slice(&secret.nonce_prefix);
        material.extend_from_slice(&self.hash()?);
        let digest = crypto::sha256(&material);
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&digest[..8]);
        Ok(epoch)
    }

    /// Bound into every chunk's associated data.
    pub fn hash(&self) -> Result<[u8; 32]> {
        Ok(crypto::sha256(&codec::encode("manifest", 1, self)?))
    }
}

/// Chunks in a file of `size` bytes. An empty file still has one (empty)
/// chunk, so every transfer has a last chunk to authenticate its end.
pub fn chunk_count(size: u64, chunk_size: u32) -> u32 {
    let cs = u64::from(chunk_size.max(1));
    (size.div_ceil(cs)).max(1) as u32
}

/// Which chunks a receiver holds: all below `base`, plus `ranges`
/// (start inclusive, end exclusive) above it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckState {
    pub base: u32,
    pub ranges: Vec<(u32, u32)>,
}

impl AckState {
    /// Most ranges one acknowledgement carries, lowest first; the rest wait
    /// for the next one.
    pub const MAX_RANGES: usize = 256;

    pub fn from_bitmap(bits: &Bitmap) -> AckState {
        let base = bits.first_clear().unwrap_or(bits.len());
        let ranges = bits
            .set_ranges_from(base)
            .take(Self::MAX_RANGES)
            .collect::<Vec<_>>();
        AckState { base, ranges }
    }

    /// The same claim in a shape that is cheap to use, whatever a peer
    /// sent: ranges within `base..len`, sorted, merged and non-empty.
    /// O(r log r) for r ranges (a control frame holds a few thousand at most).
    pub fn normalized(&self, len: u32) -> AckState {
        let base = self.base.min(len);
        let mut ranges: Vec<(u32, u32)> = self
            .ranges
            .iter()
            .map(|&(s, e)| (s.max(base), e.min(len)))
            .filter(|&(s, e)| s < e)
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        AckState {
            base,
            ranges: merged,
        }
    }

    /// Whether `index` is named. O(log r) on a [`normalized`](Self::normalized) state.
    pub fn contains(&self, index: u32) -> bool {
        if index < self.base {
            return true;
        }
        let after = self.ranges.partition_point(|&(s, _)| s <= index);
        after > 0 && index < self.ranges[after - 1].1
    }

    /// Every index this state names, in order.
    pub fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.base).chain(self.ranges.iter().flat_map(|&(s, e)| s..e))
    }
}

/// Why a request was refused, for the requester to act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseCode {
    Permission,
    BadPath,
    Exists,
    NotFound,
    TooLarge,
    Internal,
}

/// Early data: offers of new uploads that ride in the client's first
/// handshake message (the Noise payload of [`Frame::Hello`]), so a transfer
/// starts in the message that opens its session, and its first chunks
/// (sealed with the transfer's own key) in the same message behind it. On a
/// channel of one message per 6 s that is two messages, 12 s, saved.
///
/// What it costs, and why it is bounded (DESIGN.md section 3): early data
/// is confidential and authenticated to the client's key, but not forward
/// secret against a later theft of the agent's static key, and a recording
/// of it can be replayed. So a client sends it only on links where a round
/// trip costs seconds, and an agent takes it only while `made_unix` is
/// within [`Early::WINDOW_SECS`] of its own clock and only once per session
/// id; anything else is ignored and the offer comes again, sealed, once
/// the session is up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Early {
    /// When the client made it, by its clock (Unix seconds).
    pub made_unix: u64,
    /// [`Control::Offer`]s only; anything else is dropped.
    pub offers: Vec<Control>,
}

impl Early {
    /// How far early data's clock may be from the agent's.
    pub const WINDOW_SECS: u64 = 600;

    pub fn encode(&self) -> Result<Vec<u8>> {
        codec::encode("early data", PROTOCOL_VERSION, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Early> {
        codec::decode("early data", PROTOCOL_VERSION, bytes)
    }
}

/// Control messages, always sealed in a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// The sender proposes a transfer. Repeated on every new session, so
    /// the receiver can answer what it already has.
    Offer {
        transfer: TransferId,
        manifest: Manifest,
        secret: TransferSecret,
        path: String,
        overwrite: bool,
        /// True when this transfer replaces an earlier one of the same file
        /// whose source changed (downloads).
        restarted: bool,
    },
    /// The receiver takes it, and already has these chunks. `epoch` names
    /// the key and manifest the answer is about ([`Manifest::epoch`]): a
    /// download re-keyed under the same id must not count old answers.
    Accept {
        transfer: TransferId,
        epoch: [u8; 8],
        have: AckState,
    },
    /// The receiver (or the agent, for a fetch) will not.
    Refuse {
        transfer: TransferId,
        code: RefuseCode,
        reason: String,
    },
    Ack {
        transfer: TransferId,
        epoch: [u8; 8],
        have: AckState,
    },
    /// All chunks are acknowledged; this is the whole file's SHA-256.
    Finish {
        transfer: TransferId,
        sha256: [u8; 32],
    },
    /// The receiver verified the whole file and put it in place; these
    /// are the faults it saw (the sender shows them with its own).
    Done {
        transfer: TransferId,
        sha256: [u8; 32],
        faults: FaultCounters,
    },
    /// The receiver's whole-file hash did not match: nothing was kept.
    Mismatch {
        transfer: TransferId,
        reason: String,
    },
    /// Client asks the agent to send a file (a download).
    Fetch {
        transfer: TransferId,
        path: String,
    },
    Cancel {
        transfer: TransferId,
    },
    /// The sender cannot go on (its source changed or cannot be read):
    /// the receiver stops at once and shows why.
    Abort {
        transfer: TransferId,
        reason: String,
    },
    List {
        request: u64,
        dir: String,
        offset: u32,
    },
    Listing {
        request: u64,
        entries: Vec<RemoteEntry>,
        more: bool,
    },
    ListRefused {
        request: u64,
        reason: String,
    },
    /// The offer's target already exists on the agent with the offer's size
    /// and this SHA-256 (a re-run after an interruption, say): the sender
    /// compares it with its own file's and decides, instead of a refusal.
    Present {
        transfer: TransferId,
        sha256: [u8; 32],
    },
    /// The agent does not trust the key that handshook: sealed in the
    /// session that handshake opened, so only the agent can have said it
    /// (a provider cannot make a client give up), and then forgotten.
    NotTrusted,
}

impl Control {
    pub fn encode(&self) -> Result<Vec<u8>> {
        codec::encode("control", PROTOCOL_VERSION, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Control> {
        codec::decode("control", PROTOCOL_VERSION, bytes)
    }

    /// The transfer this message is about, if any.
    pub fn transfer(&self) -> Option<TransferId> {
        match self {
            Control::Offer { transfer, .. }
            | Control::Accept { transfer, .. }
            | Control::Refuse { transfer, .. }
            | Control::Ack { transfer, .. }
            | Control::Finish { transfer, .. }
            | Control::Done { transfer, .. }
            | Control::Mismatch { transfer, .. }
            | Control::Fetch { transfer, .. }
            | Control::Cancel { transfer }
            | Control::Abort { transfer, .. }
            | Control::Present { transfer, .. } => Some(*transfer),
            Control::List { .. }
            | Control::Listing { .. }
            | Control::ListRefused { .. }
            | Control::NotTrusted => None,
        }
    }
}

const FLAG_GZIP: u8 = 1;

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

/// Decompress at most `expected_len + 1` bytes: enough to tell a bomb.
fn inflate(payload: &[u8], expected_len: usize, index: u32) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(expected_len);
    let mut dec = flate2::read::GzDecoder::new(payload).take(expected_len as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| CoreError::Integrity(format!("chunk {index} does not decompress: {e}")))?;
    Ok(out)
}

fn check_chunk(
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
const CHUNK_VARIANT: u8 = 3;

/// Read the head [`chunk_frame_head`] writes: (transfer, nonce, head
/// length), when `bytes` is a well-formed chunk frame whose body runs to the
/// end. Anything else is left to the generic decoder.
fn parse_chunk_head(bytes: &[u8]) -> Option<([u8; 16], ChunkNonce, usize)> {
    fn varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
        let first = *bytes.get(*pos)?;
        *pos += 1;
        let width = match first {
            0..=250 => return Some(u64::from(first)),
            251 => 2,
            252 => 4,
            253 => 8,
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
    let run = u32::try_from(varint(bytes, &mut pos)?).ok()?;
    let index = u32::try_from(varint(bytes, &mut pos)?).ok()?;
    let last = match *bytes.get(pos)? {
        0 => false,
        1 => true,
        _ => return None,
    };
    pos += 1;
    let len = varint(bytes, &mut pos)?;
    (pos as u64)
        .checked_add(len)
        .filter(|&end| end == bytes.len() as u64)?;
    Some((transfer, ChunkNonce { run, index, last }, pos))
}

/// The encoding of `Frame::Chunk { transfer, run, index, last, body }` up
/// to the body's bytes, for a body of `body_len`: the same bytes bincode
/// writes (checked by a test), so a frame can be built in one buffer.
fn chunk_frame_head(transfer: &[u8; 16], at: ChunkNonce, body_len: usize) -> Result<Vec<u8>> {
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

fn gzip_bytes(data: &[u8]) -> Result<Vec<u8>> {
    gzip(data).ok_or_else(|| CoreError::Encode {
        what: "chunk",
        reason: "gzip failed".into(),
    })
}

fn gzip(data: &[u8]) -> Option<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 2),
        flate2::Compression::fast(),
    );
    enc.write_all(data).and_then(|_| enc.finish()).ok()
}

/// Bytes of a big chunk tried first: if they do not shrink by a tenth,
/// the chunk goes raw without spending a whole compression on it.
const SAMPLE: usize = 16 * 1024;

fn looks_compressible(data: &[u8]) -> bool {
    if data.len() < 4 * SAMPLE {
        return true;
    }
    // From the middle: headers at the start of a file are often not
    // representative of the rest.
    let start = (data.len() / 2).saturating_sub(SAMPLE / 2);
    gzip(&data[start..start + SAMPLE]).is_some_and(|c| c.len() < SAMPLE * 9 / 10)
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
        gzip: Gzip,
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
        let compressed = match gzip {
            Gzip::Never => None,
            Gzip::Always => Some(gzip_bytes(data)?),
            Gzip::IfUseful if data.len() >= 64 && looks_compressible(data) => {
                Some(gzip_bytes(data)?).filter(|c| c.len() < data.len())
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cipher() -> ChunkCipher {
        ChunkCipher::new(&TransferSecret::random(), &[1; 16], &[2; 32])
    }

    /// Seal `data` as chunk `index` the way the sender does; returns the
    /// sealed body (as the receiver gets it), the hash and whether it was
    /// gzipped.
    fn at(index: u32, last: bool) -> ChunkNonce {
        ChunkNonce {
            run: 1,
            index,
            last,
        }
    }

    fn seal(c: &ChunkCipher, index: u32, last: bool, data: &[u8]) -> (Vec<u8>, [u8; 32], bool) {
        let (frame, hash, gz) = ChunkBody::frame(
            c,
            &[1; 16],
            at(index, last),
            data.len(),
            Gzip::IfUseful,
            |b| {
                b.copy_from_slice(data);
                Ok(())
            },
            |_| {},
        )
        .unwrap();
        let Frame::Chunk { body, .. } = Frame::decode_owned(frame).unwrap() else {
            panic!("not a chunk frame")
        };
        (body, hash, gz)
    }

    #[test]
    fn chunk_counts_cover_edge_sizes() {
        assert_eq!(chunk_count(0, 10), 1);
        assert_eq!(chunk_count(1, 10), 1);
        assert_eq!(chunk_count(10, 10), 1);
        assert_eq!(chunk_count(11, 10), 2);
        assert_eq!(chunk_count(30, 10), 3);
    }

    #[test]
    fn compressible_chunks_are_compressed_and_come_back() {
        let c = cipher();
        let data = b"log line 42: all is well\n".repeat(200);
        let (body, hash, gz) = seal(&c, 0, true, &data);
        assert!(gz);
        assert!(body.len() < data.len() / 4);
        let (back, h2) = ChunkBody::open_owned(&c, at(0, true), body, data.len()).unwrap();
        assert_eq!(back, data);
        assert_eq!(hash, h2);
    }

    #[test]
    fn incompressible_chunks_go_raw() {
        let c = cipher();
        let data: Vec<u8> = (0..4096).map(|_| rand::random()).collect();
        let (body, _, gz) = seal(&c, 0, false, &data);
        assert!(!gz);
        assert_eq!(body.len(), data.len() + 33 + crypto::TAG_LEN);
    }

    /// 50 MiB of zeros, gzipped (about 50 KB).
    fn bomb() -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let block = vec![0u8; 1024 * 1024];
        for _ in 0..50 {
            enc.write_all(&block).unwrap();
        }
        enc.finish().unwrap()
    }

    #[test]
    fn inflation_stops_one_byte_past_the_declared_size_in_bounded_memory() {
        let gz = bomb();
        let out = inflate(&gz, 4096, 0).unwrap();
        // One byte past the cap is how a bomb is told from a chunk: never
        // more is inflated, and never more is allocated than the cap asks.
        assert_eq!(out.len(), 4097);
        assert!(
            out.capacity() <= 2 * 4097,
            "{} bytes allocated",
            out.capacity()
        );
    }

    #[test]
    fn a_decompression_bomb_is_refused_without_inflating_it() {
        // A sender with the key crafts a chunk whose gzip expands far past
        // the declared size: it is refused after the cap, not after 50 MiB.
        let secret = TransferSecret::random();
        let c = ChunkCipher::new(&secret, &[1; 16], &[2; 32]);
        let mut plain = vec![FLAG_GZIP];
        plain.extend_from_slice(&[0u8; 32]);
        plain.extend_from_slice(&bomb());
        let body = c.seal(at(0, true), &plain).unwrap();
        let err = ChunkBody::open_owned(&c, at(0, true), body, 4096).unwrap_err();
        assert!(
            err.to_string()
                .contains("holds 4097 bytes, the manifest says 4096"),
            "{err}"
        );
    }

    #[test]
    fn frames_round_trip_and_refuse_garbage() {
        let f = Frame::Chunk {
            transfer: [3; 16],
            index: 77,
            run: 9,
            last: false,
            body: vec![1, 2, 3],
        };
        assert_eq!(Frame::decode(&f.encode().unwrap()).unwrap(), f);
        assert!(Frame::decode(&[PROTOCOL_VERSION, 200, 1, 2]).is_err());
    }

    #[test]
    fn frames_built_in_one_buffer_match_the_codec_and_open() {
        let c = cipher();
        for len in [0usize, 1, 200, 251, 70_000, 300_000] {
            for text in [false, true] {
                let data: Vec<u8> = if text {
                    b"line of a log file\n"
                        .iter()
                        .cycle()
                        .take(len)
                        .copied()
                        .collect()
                } else {
                    (0..len).map(|_| rand::random()).collect()
                };
                let mut seen = vec![];
                let (bytes, hash, _) = ChunkBody::frame(
                    &c,
                    &[7; 16],
                    ChunkNonce {
                        run: 700,
                        index: 300,
                        last: true,
                    },
                    len,
                    Gzip::IfUseful,
                    |buf| {
                        buf.copy_from_slice(&data);
                        Ok(())
                    },
                    |d| seen = d.to_vec(),
                )
                .unwrap();
                assert_eq!(seen, data);
                let Frame::Chunk {
                    transfer,
                    run,
                    index,
                    last,
                    body,
                } = Frame::decode(&bytes).unwrap()
                else {
                    panic!("not a chunk frame")
                };
                assert_eq!((transfer, run, index, last), ([7; 16], 700, 300, true));
                assert_eq!(
                    Frame::decode_owned(bytes.clone()).unwrap(),
                    Frame::decode(&bytes).unwrap()
                );
                let again = Frame::Chunk {
                    transfer,
                    run,
                    index,
                    last,
                    body: body.clone(),
                }
                .encode()
                .unwrap();
                assert_eq!(
                    again, bytes,
                    "hand-built head differs from bincode's at len {len}"
                );
                let (back, h) = ChunkBody::open_owned(
                    &c,
                    ChunkNonce {
                        run: 700,
                        index: 300,
                        last: true,
                    },
                    body,
                    len,
                )
                .unwrap();
                assert_eq!((back, h), (data, hash));
            }
        }
    }

    #[test]
    fn a_chunk_sealed_again_with_the_same_choice_is_the_same_bytes() {
        // Resends reuse the recorded gzip choice, so a nonce never seals two
        // different plaintexts: check that the same choice gives the same bytes.
        let c = cipher();
        let data = b"compressible compressible compressible\n".repeat(3000);
        let build = |gzip| {
            ChunkBody::frame(
                &c,
                &[1; 16],
                at(5, false),
                data.len(),
                gzip,
                |b| {
                    b.copy_from_slice(&data);
                    Ok(())
                },
                |_| {},
            )
            .unwrap()
        };
        for gzip in [Gzip::Never, Gzip::Always, Gzip::IfUseful] {
            assert_eq!(build(gzip).0, build(gzip).0, "{gzip:?}");
        }
        assert!(build(Gzip::Always).2 && !build(Gzip::Never).2);
    }

    #[test]
    fn chunk_frame_overhead_bound_holds() {
        let c = cipher();
        let data: Vec<u8> = (0..3000).map(|_| rand::random()).collect();
        let (frame, _, _) = ChunkBody::frame(
            &c,
            &[3; 16],
            ChunkNonce {
                run: u32::MAX,
                index: u32::MAX,
                last: true,
            },
            data.len(),
            Gzip::IfUseful,
            |b| {
                b.copy_from_slice(&data);
                Ok(())
            },
            |_| {},
        )
        .unwrap();
        let Frame::Chunk { body, .. } = Frame::decode_owned(frame).unwrap() else {
            panic!("not a chunk frame")
        };
        let f = Frame::Chunk {
            transfer: [3; 16],
            run: u32::MAX,
            index: u32::MAX,
            last: true,
            body,
        };
        assert!(f.encode().unwrap().len() <= data.len() + CHUNK_FRAME_OVERHEAD);
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Frame::decode(&bytes);
            let mut chunkish = vec![PROTOCOL_VERSION, CHUNK_VARIANT];
            chunkish.extend_from_slice(&bytes);
            if let (Ok(a), Ok(b)) = (Frame::decode_owned(chunkish.clone()), Frame::decode(&chunkish)) {
                prop_assert_eq!(a, b);
            }
            let _ = Control::decode(&bytes);
            let mut versioned = vec![PROTOCOL_VERSION];
            versioned.extend_from_slice(&bytes);
            let _ = Frame::decode(&versioned);
            let _ = Control::decode(&versioned);
        }

        #[test]
        fn ack_state_names_exactly_the_set_bits(bits in proptest::collection::vec(any::<bool>(), 0..600)) {
            let mut map = Bitmap::new(bits.len() as u32);
            for (i, &b) in bits.iter().enumerate() {
                if b { map.set(i as u32); }
            }
            let ack = AckState::from_bitmap(&map);
            let named: Vec<u32> = ack.indices().collect();
            let expected: Vec<u32> = (0..bits.len() as u32).filter(|&i| bits[i as usize]).collect();
            if ack.ranges.len() < AckState::MAX_RANGES {
                prop_assert_eq!(named, expected);
            }
            for i in 0..bits.len() as u32 {
                if ack.contains(i) { prop_assert!(bits[i as usize]); }
            }
        }

        #[test]
        fn a_normalized_claim_names_what_the_raw_one_names(
            base in 0u32..300,
            ranges in proptest::collection::vec((0u32..400, 0u32..400), 0..40),
            len in 0u32..350,
        ) {
            let raw = AckState { base, ranges };
            let norm = raw.normalized(len);
            for w in norm.ranges.windows(2) {
                prop_assert!(w[0].1 < w[1].0, "sorted and merged: {:?}", norm.ranges);
            }
            for i in 0..len {
                let named = i < base || raw.ranges.iter().any(|&(s, e)| i >= s && i < e);
                prop_assert_eq!(norm.contains(i), named, "index {}", i);
            }
        }

        #[test]
        fn chunking_then_reassembly_gives_the_file_back(
            data in proptest::collection::vec(any::<u8>(), 0..5000),
            chunk_size in 1u32..700,
        ) {
            let m = Manifest { name: "f".into(), size: data.len() as u64, chunk_size, mime: String::new(), modified_unix: 0, mode: 0 };
            let c = cipher();
            let mut out = vec![0u8; data.len()];
            // Seal every chunk, then open them in reverse order.
            let sealed: Vec<_> = (0..m.chunk_count()).map(|i| {
                let off = m.offset(i) as usize;
                let len = m.chunk_len(i);
                let last = i + 1 == m.chunk_count();
                seal(&c, i, last, &data[off..off + len]).0
            }).collect();
            for i in (0..m.chunk_count()).rev() {
                let last = i + 1 == m.chunk_count();
                let (d, _) = ChunkBody::open_owned(&c, at(i, last), sealed[i as usize].clone(), m.chunk_len(i)).unwrap();
                let off = m.offset(i) as usize;
                out[off..off + d.len()].copy_from_slice(&d);
            }
            prop_assert_eq!(out, data);
        }
    }
}
