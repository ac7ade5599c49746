//! Issue 6, item 1 (regression): no (key, nonce) ever seals two different
//! plaintexts, whatever the crash point and whatever the source file does.
//!
//! The provider's own record of the channel is the judge: every chunk frame
//! in the transcript is decoded, and every nonce (transfer, sealing run,
//! index, last flag) must have carried exactly one ciphertext. A nonce that
//! carried two would let the provider XOR them (with gzip's fixed header as
//! a crib) and read the file.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
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
        let mut reassembler = transcript_reassembler();
        let mut by_nonce: HashMap<SealNonce, Vec<Vec<u8>>> = HashMap::new();
        let mut copies = 0;
        for m in msgs {
            for ChunkFrame {
                transfer,
                run,
                index,
                last,
                body,
            } in chunk_frames(&m.bytes, &mut reassembler)
            {
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

/// Where each process's messages end in the transcript, and the sealing
/// runs each transfer used in each such stretch.
fn runs_by_stretch(msgs: &[Msg], ends: &[usize]) -> Vec<HashMap<[u8; 16], (u32, u32)>> {
    let mut reassembler = transcript_reassembler();
    let mut stretches = vec![HashMap::new(); ends.len() + 1];
    for (n, m) in msgs.iter().enumerate() {
        let stretch = ends.iter().take_while(|&&end| end <= n).count();
        for ChunkFrame { transfer, run, .. } in chunk_frames(&m.bytes, &mut reassembler) {
            let e: &mut (u32, u32) = stretches[stretch].entry(transfer).or_insert((run, run));
            *e = (e.0.min(run), e.1.max(run));
        }
    }
    stretches
}

/// Issue 25, item 1 (regression): `pigeon resume --all` from a second
/// shell made the queue write back its copy of the transfer's record, read
/// before the running sender began a new sealing run; a kill -9 then, and
/// the next process began that run again, at another gzip level (a faster
/// transport), under the same nonces. Every process's runs must be above
/// every run sent before it, and every nonce must carry one ciphertext.
#[test]
fn a_second_shells_resume_and_a_kill_never_begin_a_sealing_run_twice() {
    let _heavy = heavy_lock();
    // Paced by a bandwidth limit (gzip level 6), the quick one not (level 1).
    let mut w = World::new("profile=shipper&bwlimit=100k&transcript=1");
    let fast = uri_for(&w.spool, "profile=shipper&msgs_per_min=250&transcript=1");
    // The agent answers quickly: only the client's own pace differs.
    w.start_agent_on(std::slice::from_ref(&fast));
    let data = mixed_content(24_000_000, 63);
    let f = w.file("big.log", &data);
    let transcript_len = || w.client_transcript().len();
    let mut rng = rand::rngs::StdRng::seed_from_u64(25);
    let mut first = w.spawn_upload(&[&f], &[]);
    std::thread::sleep(Duration::from_millis(1500));
    first.kill9();
    let mut ends = vec![transcript_len()];
    for _ in 0..4 {
        let mut owner = w.spawn_client(&["resume", "--all"]);
        std::thread::sleep(Duration::from_millis(3500));
        let mut second = w.spawn_client(&["resume", "--all"]);
        std::thread::sleep(Duration::from_millis(rng.gen_range(400..1200)));
        owner.kill9();
        second.kill9();
        // The second shell must have reached the owner's queue: a refusal
        // (the same `--transport` judged another one, as when the owner
        // showed its links without their `bwlimit=`) would leave this test
        // unable to fail.
        assert!(
            !second.stderr().contains("is held by a pigeon process"),
            "the second shell's resume was refused: {}",
            second.stderr()
        );
        ends.push(transcript_len());
        // Killed soon after its first chunks leave (its session's
        // handshake waits on the agent's slower pace first).
        let before = transcript_len();
        let mut quick = w.spawn_client(&["resume", "--all", "--transport", &fast]);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while transcript_len() < before + 2 {
            assert!(
                std::time::Instant::now() < deadline && !quick.exited(),
                "the quick process sent nothing: {}\n{}",
                quick.stderr(),
                w.client(&["status"]).describe()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        quick.kill9();
        ends.push(transcript_len());
    }
    let msgs = w.client_transcript();
    let stretches = runs_by_stretch(&msgs, &ends);
    eprintln!("runs (lowest, highest) by process: {stretches:?}");
    let mut highest: HashMap<[u8; 16], u32> = HashMap::new();
    for (n, stretch) in stretches.iter().enumerate() {
        for (transfer, (low, high)) in stretch {
            if let Some(before) = highest.get(transfer) {
                assert!(
                    low > before,
                    "process {n} sealed under run {low}, but run {before} was already used before it"
                );
            }
            highest.insert(*transfer, *high);
        }
    }
    assert!(
        stretches.iter().filter(|s| !s.is_empty()).count() >= 4,
        "most processes sent chunks: {stretches:?}"
    );
    Seals::of(&msgs).assert_one_ciphertext_per_nonce();
}
