//! Issue 6, item 1 (regression): no (key, nonce) ever seals two different
//! plaintexts, whatever the crash point and whatever the source file does.
//!
//! The provider's own record of the channel is the judge: every chunk frame
//! in the transcript is decoded, and every nonce (transfer, sealing run,
//! index, last flag) must have carried exactly one ciphertext. A nonce that
//! carried two would let the provider XOR them (with gzip's fixed header as
//! a crib) and read the file.

mod e2e_common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use e2e_common::*;
use pigeon_core::protocol::Frame;
use pigeon_core::wire::{unpack, Reassembler};
use rand::{Rng, SeedableRng};

const QUERY: &str = "profile=telegram-text&msgs_per_min=1200&transcript=1";

/// A file whose content alternates between random blocks and log text, so
/// a sender's gzip choice flips back and forth along it (the choice the bug
/// re-made differently after a restart).
fn mixed_content(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len);
    let mut line = 0u64;
    while out.len() < len {
        let random = rng.gen_range(20_000..50_000);
        out.extend((0..random).map(|_| rng.gen::<u8>()));
        let text_end = out.len() + rng.gen_range(40_000..90_000);
        while out.len() < text_end {
            line += 1;
            out.extend_from_slice(
                format!(
                    "{line:08} INFO worker-{} request served in 12 ms\n",
                    line % 7
                )
                .as_bytes(),
            );
        }
    }
    out.truncate(len);
    out
}

/// One nonce of a chunk seal, as the provider sees it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct SealNonce {
    transfer: [u8; 16],
    run: u32,
    index: u32,
    last: bool,
}

/// Every chunk frame the provider carried, by nonce: the distinct
/// ciphertexts under each, and how many copies went out in all.
struct Seals {
    by_nonce: HashMap<SealNonce, Vec<Vec<u8>>>,
    copies: usize,
}

impl Seals {
    fn of(msgs: &[Msg]) -> Seals {
        let mut reassembler = Reassembler::new(256 * 1024 * 1024);
        let mut by_nonce: HashMap<SealNonce, Vec<Vec<u8>>> = HashMap::new();
        let mut copies = 0;
        for m in msgs {
            let raw = unbase64(&m.bytes).unwrap_or_else(|| m.bytes.clone());
            let Ok(frames) = unpack(&raw, &mut reassembler) else {
                continue;
            };
            for f in frames {
                let Ok(Frame::Chunk {
                    transfer,
                    run,
                    index,
                    last,
                    body,
                }) = Frame::decode(&f)
                else {
                    continue;
                };
                copies += 1;
                let seen = by_nonce
                    .entry(SealNonce {
                        transfer,
                        run,
                        index,
                        last,
                    })
                    .or_default();
                if !seen.contains(&body) {
                    seen.push(body);
                }
            }
        }
        Seals { by_nonce, copies }
    }

    #[track_caller]
    fn assert_one_ciphertext_per_nonce(&self) {
        let reused: Vec<_> = self
            .by_nonce
            .iter()
            .filter(|(_, bodies)| bodies.len() > 1)
            .map(|(n, bodies)| (n.index, n.run, bodies.len()))
            .collect();
        assert!(
            reused.is_empty(),
            "{} nonces sealed more than one plaintext (index, run, ciphertexts): {:?}",
            reused.len(),
            &reused[..reused.len().min(20)]
        );
    }
}

fn signal(p: &Proc, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(p.pid().to_string())
        .status();
}

#[test]
fn kill_nine_loop_on_mixed_content_never_seals_two_plaintexts_under_one_nonce() {
    let _heavy = heavy_lock();
    let mut w = World::new(QUERY);
    w.start_agent();
    let data = mixed_content(1_500_000, 61);
    let f = w.file("mixed.log", &data);
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut kills = 0;
    for round in 0..10 {
        let mut client = w.spawn_upload(&[&f], &[]);
        std::thread::sleep(Duration::from_millis(rng.gen_range(400..1400)));
        if client.exited() {
            break;
        }
        if round % 2 == 0 {
            // The agent stops reading; a few more messages leave into the
            // void before the client dies.
            let agent = w.agent.as_ref().expect("the agent runs");
            signal(agent, "STOP");
            std::thread::sleep(Duration::from_millis(rng.gen_range(100..700)));
            client.kill9();
            let agent = w.agent.as_ref().expect("the agent runs");
            signal(agent, "CONT");
        } else {
            client.kill9();
        }
        kills += 1;
        if round % 3 == 2 {
            w.kill_agent();
            w.start_agent();
        }
    }
    assert!(
        kills >= 5,
        "the upload was too quick to interrupt ({kills} kills)"
    );
    // A killed client may have sent the last chunks already: then the file
    // is on the agent, and this run verifies that and succeeds.
    let run = w.upload(&[&f], &[]);
    run.assert_ok();
    assert_same_file(&f, &w.storage().join("mixed.log"));

    let seals = Seals::of(&w.client_transcript());
    let resent = seals.copies - seals.by_nonce.len();
    eprintln!(
        "{} chunk frames on the wire under {} nonces ({resent} copies of a nonce sent again)",
        seals.copies,
        seals.by_nonce.len()
    );
    assert!(
        seals.copies > seals.by_nonce.len() / 2,
        "the transcript holds the upload's chunks"
    );
    seals.assert_one_ciphertext_per_nonce();
}

#[test]
fn content_changed_under_an_unchanged_stamp_never_reuses_a_nonce_nor_completes_wrongly() {
    let _heavy = heavy_lock();
    let mut w = World::new(QUERY);
    w.start_agent();
    let data = mixed_content(600_000, 62);
    let f = w.file("edited.log", &data);
    let stamp = std::fs::metadata(&f).unwrap().modified().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..4u8 {
        let mut client = w.spawn_upload(&[&f], &[]);
        std::thread::sleep(Duration::from_millis(rng.gen_range(600..1500)));
        if client.exited() {
            break;
        }
        client.kill9();
        // Rewrite the whole file in place with other bytes of the same
        // size, and put its modification time back: size, mtime and inode
        // all say "unchanged".
        let other = mixed_content(data.len(), 100 + u64::from(round));
        {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
            file.write_all(&other).unwrap();
            file.set_modified(stamp).unwrap();
        }
    }
    // Whatever the outcome, it is never a completed file that is not
    // byte-exact with the source as it now is.
    let run = w.upload(&[&f], &[]);
    if run.success() {
        assert_same_file(&f, &w.storage().join("edited.log"));
    } else {
        assert!(
            !w.storage().join("edited.log").exists(),
            "a failed upload left a file in place"
        );
    }
    Seals::of(&w.client_transcript()).assert_one_ciphertext_per_nonce();
}
