//! The measurements behind `src/delta` (issue 31): for each pair of
//! bench/delta_corpora.py, the signature, the delta and its gzip'd size for
//! pigeon's rolling-checksum diff at several block sizes, next to
//! `fast_rsync`, content-defined chunking (`fastcdc`) and, for the program,
//! a binary diff (`qbsdiff`); then the time to diff 100 MB.
//!
//! ```text
//! python3 bench/delta_corpora.py /tmp/dc
//! cargo run --release -p pigeon-core --features delta-candidates --example delta_measure -- /tmp/dc
//! ```
//!
//! "gz" is gzip level 6 over 64 KiB chunks, as the transport sends a file;
//! "%" is the delta's gz (plus the signature when it travels) against the
//! whole new file's gz.

use std::collections::HashSet;
use std::io::{Cursor, Write};
use std::time::Instant;

use pigeon_core::delta::{apply, diff, Signature, SignatureParams, Travels};

fn gz(data: &[u8]) -> usize {
    data.chunks(64 << 10)
        .map(|c| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(c).expect("gzip into a Vec");
            e.finish().expect("gzip into a Vec").len().min(c.len())
        })
        .sum()
}

fn row(
    corpus: &str,
    method: &str,
    block: &str,
    [sig, delta, delta_gz]: [usize; 3],
    full_gz: usize,
    travels: bool,
    ms: f64,
) {
    let wire = delta_gz + if travels { sig } else { 0 };
    println!(
        "| {corpus} | {method} | {block} | {sig} | {delta} | {delta_gz} | {:.2}% | {ms:.0} |",
        100.0 * wire as f64 / full_gz as f64
    );
}

fn ours(corpus: &str, old: &[u8], new: &[u8], full_gz: usize, p: SignatureParams, travels: bool) {
    let sig = Signature::of(old, p).expect("signature");
    let t = Instant::now();
    let mut delta = Vec::new();
    let stats = diff(&sig, new, new.len() as u64, &mut delta).expect("diff");
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let mut out = Vec::with_capacity(new.len());
    apply(
        Cursor::new(old),
        old.len() as u64,
        &delta[..],
        &mut out,
        u64::MAX,
    )
    .expect("apply");
    assert!(out == new, "rebuilt file differs");
    let ctx = ctx_deflate(new, &delta);
    let label = if travels {
        "pigeon (travels)"
    } else {
        "pigeon (stored)"
    };
    row(
        corpus,
        label,
        &p.block_size.to_string(),
        [sig.encoded_len(), stats.delta_len as usize, gz(&delta)],
        full_gz,
        travels,
        ms,
    );
    row(
        corpus,
        &format!("{label} + literals deflated against the preceding 32 KiB"),
        &p.block_size.to_string(),
        [sig.encoded_len(), ctx, ctx],
        full_gz,
        travels,
        ms,
    );
}

fn varint(d: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = d[*pos];
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return v;
        }
    }
}

/// What the delta would weigh if each literal run were deflated with the
/// 32 KiB of the new file before it as a preset dictionary (rsync -z's
/// trick: both sides hold those bytes), plus 4 bytes per instruction.
fn ctx_deflate(new: &[u8], delta: &[u8]) -> usize {
    let mut pos = 5;
    varint(delta, &mut pos);
    varint(delta, &mut pos);
    let mut at = 0usize;
    let mut total = pos;
    loop {
        let op = delta[pos];
        pos += 1;
        match op {
            0 => return total + 1,
            1 => {
                varint(delta, &mut pos);
                at += varint(delta, &mut pos) as usize;
                total += 4;
            }
            _ => {
                let len = varint(delta, &mut pos) as usize;
                pos += len;
                let mut c = flate2::Compress::new(flate2::Compression::new(6), false);
                c.set_dictionary(&new[at.saturating_sub(32 << 10)..at])
                    .expect("dictionary");
                let mut out = Vec::with_capacity(len + 1024);
                c.compress_vec(&new[at..at + len], &mut out, flate2::FlushCompress::Finish)
                    .expect("deflate");
                total += 4 + out.len().min(len);
                at += len;
            }
        }
    }
}

fn fast_rsync_row(corpus: &str, old: &[u8], new: &[u8], full_gz: usize, bs: u32) {
    let sig = fast_rsync::Signature::calculate(
        old,
        fast_rsync::SignatureOptions {
            block_size: bs,
            crypto_hash_size: 8,
        },
    );
    let t = Instant::now();
    let mut delta = Vec::new();
    fast_rsync::diff(&sig.index(), new, &mut delta).expect("fast_rsync diff");
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    row(
        corpus,
        "fast_rsync 0.2",
        &bs.to_string(),
        [sig.serialized().len(), delta.len(), gz(&delta)],
        full_gz,
        false,
        ms,
    );
}

/// Content-defined chunks: the signature is 16 bytes of hash and 4 of length
/// per chunk; the delta, the new chunks the old file lacks plus about 6
/// bytes of instruction per chunk.
fn cdc_row(corpus: &str, old: &[u8], new: &[u8], full_gz: usize, avg: u32) {
    let chunks = |d: &[u8]| -> Vec<(u64, usize, usize)> {
        fastcdc::v2020::FastCDC::new(d, avg as usize / 4, avg as usize, avg as usize * 4)
            .map(|c| (c.hash, c.offset, c.length))
            .collect()
    };
    let key = |d: &[u8], (_, o, l): (u64, usize, usize)| -> [u8; 16] {
        let h = <sha2::Sha256 as sha2::Digest>::digest(&d[o..o + l]);
        h[..16].try_into().expect("16 of 32 bytes")
    };
    let olds = chunks(old);
    let have: HashSet<[u8; 16]> = olds.iter().map(|&c| key(old, c)).collect();
    let t = Instant::now();
    let mut literal = Vec::new();
    let mut ops = 0usize;
    for c in chunks(new) {
        ops += 6;
        if !have.contains(&key(new, c)) {
            literal.extend_from_slice(&new[c.1..c.1 + c.2]);
        }
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    row(
        corpus,
        "fastcdc 5 (v2020)",
        &format!("avg {avg}"),
        [olds.len() * 20, literal.len() + ops, gz(&literal) + ops],
        full_gz,
        false,
        ms,
    );
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp/dc".into());
    let only = std::env::args().nth(2).unwrap_or_default();
    println!(
        "| corpus | method | block | signature B | delta B | delta gz B | % of full gz | diff ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for corpus in ["log", "csv", "prog"] {
        if !only.is_empty() && !only.contains(corpus) {
            continue;
        }
        let old =
            std::fs::read(format!("{dir}/{corpus}.old")).expect("run bench/delta_corpora.py first");
        let new =
            std::fs::read(format!("{dir}/{corpus}.new")).expect("run bench/delta_corpora.py first");
        let full_gz = gz(&new);
        println!(
            "| {corpus} | whole file | - | 0 | {} | {full_gz} | 100% | - |",
            new.len()
        );
        for bs in [64, 96, 128, 256, 512, 1024, 2048, 8192] {
            ours(
                corpus,
                &old,
                &new,
                full_gz,
                SignatureParams {
                    block_size: bs,
                    strong_len: 16,
                },
                false,
            );
        }
        ours(
            corpus,
            &old,
            &new,
            full_gz,
            SignatureParams::for_file(old.len() as u64, Travels::Yes),
            true,
        );
        if only.contains("quick") {
            continue;
        }
        for bs in [512, 2048] {
            fast_rsync_row(corpus, &old, &new, full_gz, bs);
        }
        for avg in [512, 2048, 8192] {
            cdc_row(corpus, &old, &new, full_gz, avg);
        }
        if corpus == "prog" {
            let mut patch = Vec::new();
            let t = Instant::now();
            qbsdiff::Bsdiff::new(&old, &new)
                .compare(Cursor::new(&mut patch))
                .expect("bsdiff");
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            row(
                corpus,
                "qbsdiff 1 (both files)",
                "-",
                [0, patch.len(), patch.len()],
                full_gz,
                false,
                ms,
            );
        }
    }
    if !only.contains("quick") {
        timing();
    }
    if only.contains("gib") {
        gib();
    }
}

/// Pseudo-random bytes, `left` of them, never all in memory.
struct Gen {
    x: u64,
    left: u64,
}

impl std::io::Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            *b = (self.x >> 32) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A 1 GiB file's signature and diff, streamed: the peak memory shows the
/// window and the signature, not the file.
fn gib() {
    let len = 1u64 << 30;
    let p = SignatureParams::for_file(len, Travels::No);
    let t = Instant::now();
    let sig = Signature::of(Gen { x: 7, left: len }, p).expect("signature");
    let sig_ms = t.elapsed().as_millis();
    let t = Instant::now();
    let stats = diff(&sig, Gen { x: 7, left: len }, len, std::io::sink()).expect("diff");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    println!(
        "1 GiB (block {}): signature {} bytes in {sig_ms} ms; identical diff {} ms, {} copied, {} delta bytes; {peak}",
        p.block_size,
        sig.encoded_len(),
        t.elapsed().as_millis(),
        stats.copied,
        stats.delta_len
    );
}

/// 100 MB of log-like text, and a version with 100 insertions and 1 MB
/// appended; then an unrelated 100 MB file (every offset tried: the worst
/// case).
fn timing() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words = [
        "GET",
        "POST",
        "/api/v1/users/",
        "status=200",
        "INFO",
        "WARN",
        "dur=",
        "ms",
        "req_id=",
        "worker",
        "cache miss",
    ];
    let mut text = |n: usize| {
        let mut v = Vec::with_capacity(n + 100);
        while v.len() < n {
            let r = next();
            v.extend_from_slice(words[(r % 11) as usize].as_bytes());
            v.extend_from_slice(format!(" {} ", r >> 40).as_bytes());
            if r % 7 == 0 {
                v.push(b'\n');
            }
        }
        v.truncate(n);
        v
    };
    let old = text(100_000_000);
    let mut new = old.clone();
    for k in 0..100 {
        let at = k * 990_000 + 12_345;
        new.splice(at..at, text(50));
    }
    new.extend_from_slice(&text(1_000_000));
    let other = text(100_000_000);
    for (what, travels) in [("stored", Travels::No), ("travels", Travels::Yes)] {
        let p = SignatureParams::for_file(old.len() as u64, travels);
        let t = Instant::now();
        let sig = Signature::of(&old[..], p).expect("signature");
        let sig_ms = t.elapsed().as_secs_f64() * 1000.0;
        for (case, target) in [("edited", &new), ("unrelated", &other)] {
            for rep in 0..2 {
                let t = Instant::now();
                let mut delta = Vec::new();
                let stats = diff(&sig, &target[..], target.len() as u64, &mut delta).expect("diff");
                println!(
                    "100 MB {what} (block {}): signature {sig_ms:.0} ms; diff {case} run {rep}: {:.0} ms, {} literal bytes, {} delta bytes",
                    p.block_size,
                    t.elapsed().as_secs_f64() * 1000.0,
                    stats.literal,
                    delta.len()
                );
            }
        }
    }
}
