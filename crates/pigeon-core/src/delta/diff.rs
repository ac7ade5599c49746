//! [`diff`]: a newer file as copies from the base a [`Signature`] describes
//! plus literal bytes, in one streaming pass (rsync's algorithm: a rolling
//! weak checksum at every byte offset proposes blocks, a strong hash
//! confirms them).

use std::io::{self, BufWriter, Read, Write};

use super::signature::{read_full, strong_of};
use super::{
    write_varint, zigzag, Signature, DELTA_MAGIC, DELTA_VERSION, OP_COPY, OP_END, OP_LITERAL,
};

/// What a delta holds, for the report ("delta: 1.1 MB of 50 MB").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaStats {
    /// Bytes of the new file copied from the base.
    pub copied: u64,
    /// Bytes of the new file sent as they are.
    pub literal: u64,
    /// Length of the delta itself (header, instructions and literals).
    pub delta_len: u64,
    /// Copy and literal instructions.
    pub ops: u64,
}

/// Pending literal bytes are written out once they reach this much, so the
/// window stays bounded whatever the file: memory is about
/// `LITERAL_FLUSH + block size + READ_SIZE`, plus the signature's index.
const LITERAL_FLUSH: usize = 1 << 20;
const READ_SIZE: usize = 1 << 18;

/// Writes the delta that turns the base `sig` describes into `new`, which is
/// `new_len` bytes long (the header carries it so that `apply` can check the
/// result's length before writing anything). Deterministic: the same
/// signature and the same file give the same bytes. A file whose length is
/// not `new_len` when read (it changed under us) is an error.
pub fn diff(
    sig: &Signature,
    new: impl Read,
    new_len: u64,
    out: impl Write,
) -> io::Result<DeltaStats> {
    let mut emit = Emitter::new(out, sig.block_size());
    emit.header(sig.base_len(), new_len)?;
    let index = Index::build(sig);
    let bs = sig.block_size() as usize;
    let mut win = Window::new(new, bs);
    // The block after the last one copied: preferred among equal candidates,
    // so that a run of unchanged blocks becomes one copy.
    let mut next_block = 0usize;
    let mut weak: Option<u32> = None;
    // Bytes strong-hashed for nothing (a weak checksum that matched, a
    // strong hash that did not): a signature built to collide must not
    // make a delta cost more than reading the file a few times.
    let budget = new_len.saturating_mul(4).saturating_add(64 << 20);
    let mut wasted = 0u64;
    loop {
        win.ensure(bs + 1, &mut emit)?;
        if win.filled - win.pos < bs {
            break;
        }
        let mut w = weak.unwrap_or_else(|| weak_of(&win.buf[win.pos..win.pos + bs]));
        // Roll through what is in memory, stopping at a confirmed block.
        let data = &win.buf[..win.filled];
        let mut pos = win.pos;
        let found = loop {
            if index.maybe(w) {
                match index.find(sig, w, &data[pos..pos + bs], next_block) {
                    (Some(block), _) => break Some(block),
                    (None, true) => {
                        wasted += bs as u64;
                        if wasted > budget {
                            return Err(io::Error::other(
                                "the signature's checksums collide too often to make a delta at a bounded cost: send the whole file",
                            ));
                        }
                    }
                    (None, false) => {}
                }
            }
            if pos + bs >= data.len() {
                break None;
            }
            w = roll(w, data[pos], data[pos + bs], index.pow);
            pos += 1;
        };
        win.pos = pos;
        match found {
            Some(block) => {
                emit.literal(&win.buf[win.lit..win.pos])?;
                emit.copy(block as u64 * bs as u64, bs as u64)?;
                win.pos += bs;
                win.lit = win.pos;
                next_block = block + 1;
                weak = None;
            }
            // The end of the file, and no byte left to roll in.
            None if win.eof => break,
            None => weak = Some(w),
        }
    }
    // The base's last block, when shorter than the others, can only match
    // the new file's last bytes.
    let tail = &win.buf[win.lit..win.filled];
    let mut split = tail.len();
    if sig.blocks() > 0 {
        let last = sig.blocks() - 1;
        let t = sig.block_len(last);
        if t < bs && t <= tail.len() {
            let cand = &tail[tail.len() - t..];
            if weak_of(cand) == sig.weak(last)
                && strong_of(cand, sig.strong_len()) == sig.strong(last)
            {
                split = tail.len() - t;
            }
        }
    }
    let (lits, copied) = tail.split_at(split);
    emit.literal(lits)?;
    if !copied.is_empty() {
        let last = sig.blocks() - 1;
        emit.copy(last as u64 * bs as u64, copied.len() as u64)?;
    }
    if win.total != new_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the file changed while its delta was computed ({} bytes read, {new_len} expected): compute it again",
                win.total
            ),
        ));
    }
    emit.finish()
}

/// The weak checksum: a polynomial hash modulo 2^32 (Rabin-Karp), which
/// rolls in O(1) and spreads short-range byte patterns better than rsync's
/// Adler-style sums.
pub(super) fn weak_of(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |h, &b| {
        h.wrapping_mul(PRIME).wrapping_add(u32::from(b) + 1)
    })
}

const PRIME: u32 = 0x0100_0193;

/// The checksum of the window moved one byte: `out` leaves, `inn` enters;
/// `pow` is `PRIME^block_size`.
fn roll(h: u32, out: u8, inn: u8, pow: u32) -> u32 {
    h.wrapping_mul(PRIME)
        .wrapping_add(u32::from(inn) + 1)
        .wrapping_sub(pow.wrapping_mul(u32::from(out) + 1))
}

/// The signature's full blocks by weak checksum: an open hash table as a
/// counting sort (bucket starts and block numbers in ascending order, so the
/// first confirmed candidate is always the same one).
struct Index {
    bits: u32,
    /// A filter of `bits + FILTER_EXTRA_BITS` bits of the mixed checksum
    /// (about 16 bits per block, a 1 in 16 false positive rate): most
    /// offsets of a changed file match nothing, and this answers them from a
    /// table small enough for the cache.
    occupied: Vec<u64>,
    starts: Vec<u32>,
    blocks: Vec<u32>,
    pow: u32,
}

impl Index {
    fn build(sig: &Signature) -> Index {
        let bs = sig.block_size() as usize;
        let full: Vec<usize> = (0..sig.blocks())
            .filter(|&b| sig.block_len(b) == bs)
            .collect();
        let bits = (full.len().max(1) * 2)
            .next_power_of_two()
            .trailing_zeros()
            .max(4);
        let mut starts = vec![0u32; (1 << bits) + 1];
        for &b in &full {
            starts[bucket(sig.weak(b), bits) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut occupied = vec![0u64; (1usize << (bits + FILTER_EXTRA_BITS)).div_ceil(64)];
        for &b in &full {
            let k = bucket(sig.weak(b), bits + FILTER_EXTRA_BITS);
            occupied[k / 64] |= 1 << (k % 64);
        }
        let mut fill = starts.clone();
        let mut blocks = vec![0u32; full.len()];
        for &b in &full {
            let k = bucket(sig.weak(b), bits);
            blocks[fill[k] as usize] = b as u32;
            fill[k] += 1;
        }
        let pow = (0..bs).fold(1u32, |p, _| p.wrapping_mul(PRIME));
        Index {
            bits,
            occupied,
            starts,
            blocks,
            pow,
        }
    }

    /// Whether some block may have this weak checksum (a bit test).
    #[inline]
    fn maybe(&self, weak: u32) -> bool {
        let k = bucket(weak, self.bits + FILTER_EXTRA_BITS);
        self.occupied[k / 64] & (1 << (k % 64)) != 0
    }

    /// The block whose weak and strong hashes both match `window`: `prefer`
    /// if it does, else the lowest-numbered one.
    /// And whether the window was strong-hashed to find out.
    fn find(
        &self,
        sig: &Signature,
        weak: u32,
        window: &[u8],
        prefer: usize,
    ) -> (Option<usize>, bool) {
        let k = bucket(weak, self.bits);
        let (lo, hi) = (self.starts[k] as usize, self.starts[k + 1] as usize);
        let mut strong: Option<Vec<u8>> = None;
        let mut first = None;
        for &b in &self.blocks[lo..hi] {
            let b = b as usize;
            if sig.weak(b) != weak {
                continue;
            }
            let s = strong.get_or_insert_with(|| strong_of(window, sig.strong_len()));
            if s.as_slice() == sig.strong(b) {
                if b == prefer {
                    return (Some(b), true);
                }
                first.get_or_insert(b);
            }
        }
        (first, strong.is_some())
    }
}

const FILTER_EXTRA_BITS: u32 = 3;

/// The top `bits` bits of the checksum mixed (Fibonacci hashing): a
/// bucket's number is a prefix of the filter's, so a filter hit always
/// lands in a non-empty bucket.
fn bucket(weak: u32, bits: u32) -> usize {
    (u64::from(weak).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

/// The part of the new file in memory: pending literal bytes from `lit`,
/// the window at `pos`, data read up to `filled`.
struct Window<R> {
    src: R,
    buf: Vec<u8>,
    lit: usize,
    pos: usize,
    filled: usize,
    eof: bool,
    total: u64,
}

impl<R: Read> Window<R> {
    fn new(src: R, bs: usize) -> Self {
        Window {
            src,
            buf: vec![0; LITERAL_FLUSH + bs + READ_SIZE],
            lit: 0,
            pos: 0,
            filled: 0,
            eof: false,
            total: 0,
        }
    }

    /// Reads until `need` bytes follow `pos` or the file ends, writing out
    /// pending literals when they fill their share of the buffer.
    fn ensure<W: Write>(&mut self, need: usize, emit: &mut Emitter<W>) -> io::Result<()> {
        while self.filled - self.pos < need && !self.eof {
            if self.pos - self.lit >= LITERAL_FLUSH {
                emit.literal(&self.buf[self.lit..self.pos])?;
                self.lit = self.pos;
            }
            if self.lit > 0 {
                self.buf.copy_within(self.lit..self.filled, 0);
                self.pos -= self.lit;
                self.filled -= self.lit;
                self.lit = 0;
            }
            let n = read_full(&mut self.src, &mut self.buf[self.filled..])?;
            if n == 0 {
                self.eof = true;
            }
            self.filled += n;
            self.total += n as u64;
        }
        Ok(())
    }
}

/// Writes the delta's instructions, merging adjacent copies.
struct Emitter<W: Write> {
    out: BufWriter<W>,
    pending: Option<(u64, u64)>,
    prev_end: u64,
    stats: DeltaStats,
    scratch: Vec<u8>,
}

impl<W: Write> Emitter<W> {
    fn new(out: W, _bs: u32) -> Self {
        Emitter {
            out: BufWriter::with_capacity(1 << 16, out),
            pending: None,
            prev_end: 0,
            stats: DeltaStats::default(),
            scratch: Vec::with_capacity(32),
        }
    }

    fn header(&mut self, base_len: u64, new_len: u64) -> io::Result<()> {
        self.scratch.clear();
        self.scratch.extend_from_slice(DELTA_MAGIC);
        self.scratch.push(DELTA_VERSION);
        write_varint(&mut self.scratch, base_len);
        write_varint(&mut self.scratch, new_len);
        self.put_scratch()
    }

    fn copy(&mut self, offset: u64, len: u64) -> io::Result<()> {
        match &mut self.pending {
            Some((o, l)) if *o + *l == offset => *l += len,
            _ => {
                self.flush_copy()?;
                self.pending = Some((offset, len));
            }
        }
        self.stats.copied += len;
        Ok(())
    }

    fn literal(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.flush_copy()?;
        self.scratch.clear();
        self.scratch.push(OP_LITERAL);
        write_varint(&mut self.scratch, data.len() as u64);
        self.put_scratch()?;
        self.out.write_all(data)?;
        self.stats.delta_len += data.len() as u64;
        self.stats.literal += data.len() as u64;
        self.stats.ops += 1;
        Ok(())
    }

    fn flush_copy(&mut self) -> io::Result<()> {
        let Some((offset, len)) = self.pending.take() else {
            return Ok(());
        };
        self.scratch.clear();
        self.scratch.push(OP_COPY);
        // Offsets relative to the previous copy's end: a run of copies in
        // order costs one byte of offset each.
        write_varint(
            &mut self.scratch,
            zigzag(offset as i64 - self.prev_end as i64),
        );
        write_varint(&mut self.scratch, len);
        self.prev_end = offset + len;
        self.stats.ops += 1;
        self.put_scratch()
    }

    fn put_scratch(&mut self) -> io::Result<()> {
        self.out.write_all(&self.scratch)?;
        self.stats.delta_len += self.scratch.len() as u64;
        Ok(())
    }

    fn finish(mut self) -> io::Result<DeltaStats> {
        self.flush_copy()?;
        self.out.write_all(&[OP_END])?;
        self.stats.delta_len += 1;
        self.out.flush()?;
        Ok(self.stats)
    }
}
