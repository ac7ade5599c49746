//! [`Signature`]: what one side keeps or sends of a file so that the other
//! side can describe a newer version as copies from it plus literal bytes.

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use super::{read_varint_slice, write_varint, DeltaError, Travels};

/// Magic and version of an encoded signature.
const MAGIC: &[u8; 4] = b"PGSG";
const VERSION: u8 = 1;

/// Smallest and largest block a signature may use. Below 64 bytes the
/// per-block hashes outweigh the data; above 64 MiB a block no longer fits
/// comfortably in the diff's window.
pub const MIN_BLOCK: u32 = 64;
pub const MAX_BLOCK: u32 = 64 << 20;

/// Strong hash lengths: 16 bytes for the signatures a client keeps (no size
/// pressure, and a crafted pair of colliding blocks costs 2^64 work), 8 for
/// the ones that travel in a fetch request (a budget of about 32 KiB). A
/// false match cannot corrupt a file either way: the rebuilt file's SHA-256
/// is checked, and a mismatch falls back to the whole file.
pub const STRONG_STORED: u8 = 16;
pub const STRONG_TRAVELS: u8 = 8;

/// Blocks a travelling signature aims at: 2,048 blocks of 4 + 8 bytes is
/// 24 KiB, under the fetch request's 32 KiB target for any file size up to
/// 2,048 × [`MAX_BLOCK`].
pub const TRAVEL_BLOCKS: u64 = 2048;
/// Smallest block of a travelling signature: small files still get a delta,
/// and a 1 MB file's signature is 12 KiB.
pub const TRAVEL_MIN_BLOCK: u32 = 1024;
/// Block of a stored (upload) signature for files up to
/// `STORED_BLOCK × STORED_MAX_BLOCKS`; larger files get larger blocks so the
/// signature stays under 20 × 2^19 bytes = 10 MiB on disk. The measurement
/// in the module header chose it.
pub const STORED_BLOCK: u32 = 96;
pub const STORED_MAX_BLOCKS: u64 = 1 << 19;

/// The block size for a file of `len` bytes, whether its signature travels.
pub fn block_size_for(len: u64, travels: Travels) -> u32 {
    let (floor, blocks) = match travels {
        Travels::Yes => (TRAVEL_MIN_BLOCK, TRAVEL_BLOCKS),
        Travels::No => (STORED_BLOCK, STORED_MAX_BLOCKS),
    };
    let wanted = len.div_ceil(blocks).div_ceil(64) * 64;
    u32::try_from(wanted)
        .unwrap_or(MAX_BLOCK)
        .clamp(floor, MAX_BLOCK)
}

/// The block size and strong hash length of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureParams {
    pub block_size: u32,
    pub strong_len: u8,
}

impl SignatureParams {
    /// The parameters for a file of `len` bytes (see [`block_size_for`]).
    pub fn for_file(len: u64, travels: Travels) -> Self {
        Self {
            block_size: block_size_for(len, travels),
            strong_len: match travels {
                Travels::Yes => STRONG_TRAVELS,
                Travels::No => STRONG_STORED,
            },
        }
    }
}

/// The signature of a base file: its length, and for each block of
/// `block_size` bytes (the last one may be shorter) a weak rolling checksum
/// and a truncated SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    block_size: u32,
    strong_len: u8,
    base_len: u64,
    weak: Vec<u32>,
    /// `strong_len` bytes per block, back to back.
    strong: Vec<u8>,
}

impl Signature {
    /// Reads `base` to its end, one block at a time (memory grows with the
    /// number of blocks, not the file).
    pub fn of(mut base: impl Read, params: SignatureParams) -> io::Result<Signature> {
        check_params(params.block_size, params.strong_len)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let bs = params.block_size as usize;
        let mut sig = Signature {
            block_size: params.block_size,
            strong_len: params.strong_len,
            base_len: 0,
            weak: Vec::new(),
            strong: Vec::new(),
        };
        let mut block = vec![0u8; bs];
        loop {
            let n = read_full(&mut base, &mut block)?;
            if n == 0 {
                break;
            }
            sig.weak.push(super::diff::weak_of(&block[..n]));
            sig.strong
                .extend_from_slice(&strong_of(&block[..n], params.strong_len));
            sig.base_len += n as u64;
            if n < bs {
                break;
            }
        }
        Ok(sig)
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    pub fn strong_len(&self) -> u8 {
        self.strong_len
    }

    /// The length of the file this signature describes.
    pub fn base_len(&self) -> u64 {
        self.base_len
    }

    pub fn blocks(&self) -> usize {
        self.weak.len()
    }

    pub(super) fn weak(&self, block: usize) -> u32 {
        self.weak[block]
    }

    pub(super) fn strong(&self, block: usize) -> &[u8] {
        let n = self.strong_len as usize;
        &self.strong[block * n..(block + 1) * n]
    }

    /// The length of the last block (equal to the block size when the base
    /// is a multiple of it).
    pub(super) fn block_len(&self, block: usize) -> usize {
        let start = block as u64 * u64::from(self.block_size);
        (self.base_len - start).min(u64::from(self.block_size)) as usize
    }

    /// The length of [`Signature::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        let mut head = Vec::with_capacity(32);
        self.encode_header(&mut head);
        head.len() + self.weak.len() * 4 + self.strong.len()
    }

    /// `PGSG`, version, block size, strong length, base length (varints),
    /// then per block the weak checksum (4 bytes, little endian) and the
    /// strong hash.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_header(&mut out);
        for (i, weak) in self.weak.iter().enumerate() {
            out.extend_from_slice(&weak.to_le_bytes());
            out.extend_from_slice(self.strong(i));
        }
        out
    }

    fn encode_header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        write_varint(out, u64::from(self.block_size));
        out.push(self.strong_len);
        write_varint(out, self.base_len);
    }

    /// Decodes a signature from bytes that may be hostile: every field is
    /// checked, and the number of blocks must match the base length and the
    /// bytes present, so nothing is allocated beyond the input's own size.
    pub fn decode(bytes: &[u8]) -> Result<Signature, DeltaError> {
        let bad = |reason: &'static str| DeltaError::BadSignature(reason);
        if bytes.len() < 5 || &bytes[..4] != MAGIC {
            return Err(bad("it does not start with PGSG"));
        }
        if bytes[4] != VERSION {
            return Err(DeltaError::UnsupportedVersion {
                what: "signature",
                version: bytes[4],
            });
        }
        let mut pos = 5;
        let block_size = read_varint_slice(bytes, &mut pos).ok_or(bad("bad block size"))?;
        let block_size = u32::try_from(block_size).map_err(|_| bad("block size too large"))?;
        let strong_len = *bytes.get(pos).ok_or(bad("truncated header"))?;
        pos += 1;
        check_params(block_size, strong_len)?;
        let base_len = read_varint_slice(bytes, &mut pos).ok_or(bad("bad base length"))?;
        let blocks = base_len.div_ceil(u64::from(block_size));
        let per_block = 4 + u64::from(strong_len);
        let body = (bytes.len() - pos) as u64;
        if blocks.checked_mul(per_block) != Some(body) {
            return Err(bad("its length does not match its block count"));
        }
        let blocks = blocks as usize; // ≤ bytes.len(), checked just above
        let mut weak = Vec::with_capacity(blocks);
        let mut strong = Vec::with_capacity(blocks * strong_len as usize);
        for entry in bytes[pos..].chunks_exact(per_block as usize) {
            let (w, s) = entry.split_at(4);
            weak.push(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
            strong.extend_from_slice(s);
        }
        Ok(Signature {
            block_size,
            strong_len,
            base_len,
            weak,
            strong,
        })
    }
}

fn check_params(block_size: u32, strong_len: u8) -> Result<(), DeltaError> {
    if !(MIN_BLOCK..=MAX_BLOCK).contains(&block_size) {
        return Err(DeltaError::BadSignature(
            "block size outside 64 bytes to 64 MiB",
        ));
    }
    if !(8..=32).contains(&strong_len) {
        return Err(DeltaError::BadSignature(
            "strong hash length outside 8 to 32 bytes",
        ));
    }
    Ok(())
}

/// SHA-256 of `data`, truncated to `len` bytes.
pub(super) fn strong_of(data: &[u8], len: u8) -> Vec<u8> {
    let digest = Sha256::digest(data);
    digest[..len as usize].to_vec()
}

/// Fills `buf` unless the reader ends first; returns how much it read.
pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
