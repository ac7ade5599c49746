//! Benchmark entry point for the per-chunk pipeline (hash + compress-if-useful
//! + encrypt), through the public API only. Used by `bench/run`.
//!
//! ```text
//! cargo run --release -p pigeon-core --example pipeline -- FILE [--reps N] [--chunk BYTES] [--json]
//! ```
//!
//! Reads FILE sequentially in 1 MiB chunks and seals each with
//! `ChunkBody::frame` (the sender's own path), deciding whether to try gzip the way the sender does
//! (give up after 8 chunks in a row that did not shrink, try again every
//! 32nd chunk). Two passes, each the best of `--reps`:
//!
//! - `seal`: read + per-chunk SHA-256 + gzip-if-useful + XChaCha20-Poly1305;
//! - `seal+file_sha`: the same plus the whole-file SHA-256 on the same thread
//!   (the sender computes it on another thread, so this is the total work
//!   per byte, not the wall time of an upload).

use std::fs::File;
use std::io::Read;
use std::time::Instant;

use sha2::Digest;

use pigeon_core::crypto::{ChunkCipher, ChunkNonce, TransferSecret};
use pigeon_core::protocol::{ChunkBody, Gzip};

struct Pass {
    secs: f64,
    input: u64,
    output: u64,
    compressed_chunks: u32,
    chunks: u32,
}

fn pass(path: &str, chunk: usize, file_hash: bool) -> Pass {
    let secret = TransferSecret::random();
    let transfer_id: [u8; 16] = rand::random();
    let manifest_hash: [u8; 32] = rand::random();
    let cipher = ChunkCipher::new(&secret, &transfer_id, &manifest_hash);
    let mut f = File::open(path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let total_chunks = size.div_ceil(chunk as u64).max(1) as u32;
    let mut hasher = sha2::Sha256::new();
    let mut out = Pass {
        secs: 0.0,
        input: 0,
        output: 0,
        compressed_chunks: 0,
        chunks: 0,
    };
    let mut raw_streak = 0u32;
    let start = Instant::now();
    for index in 0..total_chunks {
        let offset = u64::from(index) * chunk as u64;
        let n = (size - offset).min(chunk as u64) as usize;
        let last = index + 1 == total_chunks;
        let try_compress = raw_streak < 8 || index.is_multiple_of(32);
        let gzip = if try_compress {
            Gzip::IfUseful
        } else {
            Gzip::Never
        };
        // The sender's own path: one buffer, read in place, sealed in place.
        let (frame, _hash, compressed) = ChunkBody::frame(
            &cipher,
            &[0; 16],
            ChunkNonce {
                run: 1,
                index,
                last,
            },
            n,
            gzip,
            |buf| f.read_exact(buf),
            |data| {
                if file_hash {
                    hasher.update(data);
                }
            },
        )
        .expect("seal");
        if try_compress {
            raw_streak = if compressed { 0 } else { raw_streak + 1 };
        }
        out.input += n as u64;
        out.output += frame.len() as u64;
        out.chunks += 1;
        out.compressed_chunks += u32::from(compressed);
        std::hint::black_box(&frame);
    }
    if file_hash {
        std::hint::black_box(hasher.finalize());
    }
    out.secs = start.elapsed().as_secs_f64();
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut path = None;
    let mut reps = 3usize;
    let mut chunk = 1024 * 1024usize;
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--reps" => reps = it.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            "--chunk" => {
                chunk = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--chunk BYTES")
            }
            "--json" => json = true,
            "-h" | "--help" => {
                eprintln!("usage: pipeline FILE [--reps N] [--chunk BYTES] [--json]");
                return;
            }
            p => path = Some(p.to_string()),
        }
    }
    let Some(path) = path else {
        eprintln!("usage: pipeline FILE [--reps N] [--chunk BYTES] [--json]");
        std::process::exit(2);
    };
    let best = |file_hash: bool| {
        (0..reps.max(1))
            .map(|_| pass(&path, chunk, file_hash))
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .expect("at least one pass")
    };
    let seal = best(false);
    let full = best(true);
    let mbps = |p: &Pass| p.input as f64 / 1e6 / p.secs;
    if json {
        println!(
            "{{\"file\":{:?},\"bytes\":{},\"chunk\":{},\"chunks\":{},\"compressed_chunks\":{},\"sealed_bytes\":{},\"seal_secs\":{:.4},\"seal_mb_s\":{:.1},\"full_secs\":{:.4},\"full_mb_s\":{:.1}}}",
            path,
            seal.input,
            chunk,
            seal.chunks,
            seal.compressed_chunks,
            seal.output,
            seal.secs,
            mbps(&seal),
            full.secs,
            mbps(&full)
        );
    } else {
        println!(
            "{path}: {} bytes, {} chunks ({} compressed), sealed {} bytes ({:.1}%)",
            seal.input,
            seal.chunks,
            seal.compressed_chunks,
            seal.output,
            100.0 * seal.output as f64 / seal.input.max(1) as f64
        );
        println!(
            "seal (sha256 + gzip-if-useful + xchacha20poly1305): {:.1} MB/s",
            mbps(&seal)
        );
        println!(
            "seal + whole-file sha256:                           {:.1} MB/s",
            mbps(&full)
        );
    }
}
