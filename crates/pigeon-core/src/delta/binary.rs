//! Deltas of programs: where both versions are at hand (a client keeps a
//! copy of a program it sent), bsdiff's matching finds the regions of the
//! new file that are *nearly* the old one's bytes (code that moved, its
//! addresses shifted by a few bytes), which a signature's exact blocks
//! cannot: a one-line change to a C program of 2.9 MB leaves 72% of it
//! literal to a rolling checksum, and 3% to this (`delta/mod.rs`).
//!
//! The matching is qbsdiff's (a suffix array of the old file); its patch is
//! read back here, on the side that made it, and written as pigeon's own
//! delta: additions ([`OP_ADD`](super::OP_ADD): the base's bytes plus
//! differences, mostly zeros, which the transport's gzip shrinks), copies
//! where the differences are all zero, and literals. So the side that
//! applies it reads only pigeon's format, bounded as any delta is
//! ([`apply`](super::apply)); bzip2 never crosses the wire.
//!
//! Both files are held in memory while the delta is made: the caller keeps
//! this to files of at most [`MAX_LEN`].

use std::io::{self, Read, Write};

use super::{
    write_varint, zigzag, DeltaStats, DELTA_MAGIC, DELTA_VERSION, OP_ADD, OP_COPY, OP_END,
    OP_LITERAL,
};

/// The largest file (each version) a binary delta is made of: its suffix
/// array takes about 8 bytes a byte of the old file.
pub const MAX_LEN: u64 = 64 * 1024 * 1024;

/// Whether `head` (a file's first bytes) begins a program: ELF, Mach-O,
/// a fat Mach-O or Java class, PE (`MZ`), WebAssembly.
pub fn is_program(head: &[u8]) -> bool {
    const MAGICS: [&[u8]; 8] = [
        b"\x7fELF",
        b"\xfe\xed\xfa\xce",
        b"\xfe\xed\xfa\xcf",
        b"\xce\xfa\xed\xfe",
        b"\xcf\xfa\xed\xfe",
        b"\xca\xfe\xba\xbe",
        b"MZ",
        b"\0asm",
    ];
    MAGICS.iter().any(|m| head.starts_with(m))
}

/// Writes to `out` the delta that turns `old` into `new`. Deterministic
/// (the matching runs on one thread).
pub fn diff(old: &[u8], new: &[u8], mut out: impl Write) -> io::Result<DeltaStats> {
    let mut patch = Vec::new();
    qbsdiff::Bsdiff::new(old, new)
        .parallel_scheme(qbsdiff::ParallelScheme::Never)
        .compression_level(1)
        .compare(io::Cursor::new(&mut patch))?;
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("bsdiff patch: {what}"));
    if patch.len() < 32 || &patch[..8] != b"BSDIFF40" {
        return Err(bad("no header"));
    }
    let int = |b: &[u8]| {
        let mut x = [0u8; 8];
        x.copy_from_slice(b);
        let v = u64::from_le_bytes(x);
        // bsdiff's sign and magnitude.
        if v & (1 << 63) != 0 {
            -((v & !(1 << 63)) as i64)
        } else {
            v as i64
        }
    };
    let (csize, dsize) = (int(&patch[8..16]) as usize, int(&patch[16..24]) as usize);
    if 32 + csize + dsize > patch.len() {
        return Err(bad("streams past its end"));
    }
    let mut ctrls = Vec::new();
    bzip2::read::BzDecoder::new(&patch[32..32 + csize]).read_to_end(&mut ctrls)?;
    let mut diffs = bzip2::read::BzDecoder::new(&patch[32 + csize..32 + csize + dsize]);
    let mut extra = bzip2::read::BzDecoder::new(&patch[32 + csize + dsize..]);

    let mut head = DELTA_MAGIC.to_vec();
    head.push(DELTA_VERSION);
    write_varint(&mut head, old.len() as u64);
    write_varint(&mut head, new.len() as u64);
    out.write_all(&head)?;
    let mut stats = DeltaStats {
        copied: 0,
        literal: 0,
        delta_len: head.len() as u64,
        ops: 0,
    };
    let mut w = Ops {
        out: &mut out,
        stats: &mut stats,
        prev_end: 0,
    };
    let mut at = 0i64; // where in the old file the next addition reads
    let mut buf = Vec::new();
    for ctl in ctrls.chunks_exact(24) {
        let (add, copy, seek) = (int(&ctl[0..8]), int(&ctl[8..16]), int(&ctl[16..24]));
        if add < 0 || copy < 0 || at < 0 || at + add > old.len() as i64 {
            return Err(bad("a control out of range"));
        }
        if add > 0 {
            buf.resize(add as usize, 0);
            diffs.read_exact(&mut buf)?;
            w.add(at as u64, &buf)?;
        }
        at += add;
        if copy > 0 {
            buf.resize(copy as usize, 0);
            extra.read_exact(&mut buf)?;
            w.literal(&buf)?;
        }
        at += seek;
    }
    out.write_all(&[OP_END])?;
    stats.delta_len += 1;
    if stats.copied + stats.literal != new.len() as u64 {
        return Err(bad("it does not make the whole new file"));
    }
    Ok(stats)
}

/// Instructions as they are written.
struct Ops<'a, W: Write> {
    out: &'a mut W,
    stats: &'a mut DeltaStats,
    /// Where the last copy or addition ended in the old file.
    prev_end: u64,
}

impl<W: Write> Ops<'_, W> {
    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.stats.delta_len += bytes.len() as u64;
        self.stats.ops += 1;
        Ok(())
    }

    /// The old file's `diffs.len()` bytes at `at`, each plus its
    /// difference: runs of no difference go as copies, the rest as
    /// additions.
    fn add(&mut self, at: u64, diffs: &[u8]) -> io::Result<()> {
        let mut i = 0;
        while i < diffs.len() {
            let same = diffs[i..].iter().take_while(|&&d| d == 0).count();
            // A short run of equal bytes is cheaper inside an addition.
            if same >= 32 || i + same == diffs.len() {
                self.range(OP_COPY, at + i as u64, same as u64, &[])?;
                i += same;
                continue;
            }
            // Up to the next run of 32 equal bytes.
            let mut end = i + same;
            while end < diffs.len() {
                let run = diffs[end..].iter().take_while(|&&d| d == 0).count();
                if run >= 32 || end + run == diffs.len() {
                    break;
                }
                end += run.max(1);
            }
            self.range(OP_ADD, at + i as u64, (end - i) as u64, &diffs[i..end])?;
            i = end;
        }
        Ok(())
    }

    fn range(&mut self, op: u8, offset: u64, len: u64, diffs: &[u8]) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let rel = offset as i64 - self.prev_end as i64;
        let mut ins = vec![op];
        write_varint(&mut ins, zigzag(rel));
        write_varint(&mut ins, len);
        ins.extend_from_slice(diffs);
        self.emit(&ins)?;
        self.prev_end = offset + len;
        self.stats.copied += len;
        Ok(())
    }

    fn literal(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut ins = vec![OP_LITERAL];
        write_varint(&mut ins, bytes.len() as u64);
        ins.extend_from_slice(bytes);
        self.emit(&ins)?;
        self.stats.literal += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use proptest::prelude::*;

    use super::*;

    fn rebuild(old: &[u8], delta: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        super::super::apply(Cursor::new(old), old.len() as u64, delta, &mut out, 1 << 30)
            .expect("a delta of ours applies");
        out
    }

    /// Code that moved by a few bytes: every address after an inserted line
    /// shifts, so blocks never match exactly; bsdiff's additions carry it
    /// in differences that are nearly all zero.
    #[test]
    fn shifted_addresses_cost_differences_that_compress_not_literals() {
        let mut x = 7u64;
        let mut old = Vec::new();
        for i in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // An "instruction": an opcode and a 4-byte address that grows.
            old.push((x % 7) as u8 + 0x40);
            old.extend_from_slice(&(i * 16 + 0x1000).to_le_bytes());
        }
        let new: Vec<u8> = {
            let mut n = old[..50_000].to_vec();
            n.extend_from_slice(b"one new line of code");
            // Everything after it: the addresses moved by 32.
            for c in old[50_000..].chunks(5) {
                n.push(c[0]);
                if c.len() == 5 {
                    let a = u32::from_le_bytes([c[1], c[2], c[3], c[4]]) + 32;
                    n.extend_from_slice(&a.to_le_bytes());
                } else {
                    n.extend_from_slice(&c[1..]);
                }
            }
            n
        };
        let mut delta = Vec::new();
        let stats = diff(&old, &new, &mut delta).unwrap();
        assert_eq!(rebuild(&old, &delta), new);
        assert!(stats.literal < 1000, "{stats:?}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        gz.write_all(&delta).unwrap();
        let packed = gz.finish().unwrap().len();
        assert!(
            packed < new.len() / 10,
            "{packed} bytes gzip'd of {}",
            new.len()
        );
    }

    #[test]
    fn programs_are_known_by_their_first_bytes() {
        assert!(is_program(b"\x7fELF\x02\x01"));
        assert!(is_program(b"MZ\x90\0"));
        assert!(is_program(b"\0asm\x01\0\0\0"));
        assert!(!is_program(b"#!/bin/sh"));
        assert!(!is_program(b"id,name\n"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the two files, the delta rebuilds the new one exactly.
        #[test]
        fn any_pair_rebuilds_exactly(
            old in proptest::collection::vec(any::<u8>(), 0..4000),
            edits in proptest::collection::vec((0usize..4000, 0usize..40, proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
        ) {
            let mut new = old.clone();
            for (at, cut, insert) in edits {
                let at = at.min(new.len());
                let cut = cut.min(new.len() - at);
                new.splice(at..at + cut, insert);
            }
            let mut delta = Vec::new();
            let stats = diff(&old, &new, &mut delta).unwrap();
            prop_assert_eq!(stats.delta_len, delta.len() as u64);
            prop_assert_eq!(rebuild(&old, &delta), new);
        }
    }
}
