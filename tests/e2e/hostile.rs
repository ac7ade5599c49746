//! Issue 2, "What must hold" 2 (hostile channel): with
//! `loss=0.1&dup=0.05&reorder=0.2&corrupt=0.01` every transfer still
//! completes byte-exact, and corrupted, duplicated and reordered messages
//! are recognised and handled (counted in the reports and in `status`).
//!
//! Faults are seeded (`seed=`) and the parties have fixed keys (the spool
//! mixes the seed with each party's inbox name), so each party's sequence
//! of fault decisions is the same run after run; what varies is timing.

use std::path::Path;

use crate::common::*;
use serde_json::Value;

const HOSTILE: &str = "loss=0.1&dup=0.05&reorder=0.2&corrupt=0.01";

fn fault_sum(r: &Value) -> u64 {
    let f = &r["faults"];
    ["corrupt", "duplicate", "reordered", "retransmitted"]
        .iter()
        .map(|k| {
            f[k].as_u64()
                .unwrap_or_else(|| panic!("no faults.{k} in {r}"))
        })
        .sum()
}

/// Upload `files`, download each back, check everything byte-exact; return
/// the upload and download reports.
fn round_trip_all(w: &World, files: &[&Path]) -> (Vec<Value>, Vec<Value>) {
    let run = w.upload(files, &["--to", "hostile/"]);
    run.assert_ok();
    let ups = run.reports();
    eprintln!("upload: {:?}", run.elapsed);
    assert_eq!(ups.len(), files.len(), "{}", run.describe());
    for f in files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let remote = format!("hostile/{name}");
        let r = ups
            .iter()
            .find(|r| text(r, "remote_path") == remote)
            .unwrap();
        assert_eq!(text(r, "status"), "completed");
        assert_eq!(text(r, "sha256"), sha256_file(f), "{r}");
        assert_same_file(f, &w.storage().join(&remote));
    }
    let mut downs = vec![];
    for f in files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let out = w.work.join(format!("back-{name}"));
        let run = w.download(&format!("hostile/{name}"), &out, &[]);
        run.assert_ok();
        let r = run.report();
        eprintln!(
            "download {name}: {:?} (report {} ms)",
            run.elapsed,
            num(&r, "elapsed_ms")
        );
        assert_eq!(text(&r, "status"), "completed");
        assert_same_file(f, &out);
        downs.push(r);
    }
    assert!(
        w.staged_files().is_empty(),
        "nothing left in staging: {:?}",
        w.staged_files()
    );
    (ups, downs)
}

#[test]
fn hostile_unlimited_channel_delivers_byte_exact_and_counts_the_faults() {
    let mut w = World::with_fixed_keys(&format!("{HOSTILE}&seed=42"));
    w.start_agent();
    // Enough messages that every kind of fault happens: many small files
    // (each its own offer, chunk, acknowledgement and finish, so each has
    // about a one-in-five chance of needing a retransmission) and a few
    // multi-chunk ones.
    let mut small = vec![];
    for i in 0..28 {
        small.push(w.random_file(&format!("small-{i}.bin"), 1000 + i * 97, 500 + i as u64));
    }
    let multi = [
        w.random_file("multi-a.bin", 4 * 1024 * 1024 + 3, 600),
        w.random_file("multi-b.bin", 3 * 1024 * 1024, 601),
    ];
    let refs: Vec<&Path> = small.iter().map(|p| p.as_path()).collect();
    let run = w.upload(&refs, &["--to", "hostile/", "--parallel", "6"]);
    eprintln!("small uploads: {:?}", run.elapsed);
    run.assert_ok();
    let mut ups = run.reports();
    assert_eq!(ups.len(), small.len(), "{}", run.describe());
    for f in &small {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert_same_file(f, &w.storage().join("hostile").join(name));
    }
    // The big ones go both ways, and a few small ones come back too.
    let big: Vec<&Path> = multi.iter().map(|p| p.as_path()).collect();
    let (more_ups, mut downs) = round_trip_all(&w, &big);
    ups.extend(more_ups);
    for f in &refs[..1] {
        let name = f.file_name().unwrap().to_str().unwrap();
        let out = w.work.join(format!("back-{name}"));
        let run = w.download(&format!("hostile/{name}"), &out, &[]);
        run.assert_ok();
        assert_same_file(f, &out);
        downs.push(run.report());
    }
    for r in &ups {
        assert_eq!(text(r, "status"), "completed", "{r}");
    }

    let retransmitted: u64 = ups.iter().map(|r| num(r, "chunks_retransmitted")).sum();
    let seen: u64 = ups.iter().chain(&downs).map(fault_sum).sum();
    eprintln!("unlimited: {retransmitted} chunks retransmitted, {seen} faults counted");
    assert!(
        retransmitted > 0,
        "10% loss must cost retransmissions: {ups:?}"
    );
    assert!(
        seen > retransmitted,
        "the receivers also saw duplicates/corruption/reordering"
    );

    // `status` keeps the counters.
    let st = w.client(&["status", "--json"]);
    st.assert_ok();
    let rows = st.reports();
    let stored: u64 = rows.iter().map(fault_sum).sum();
    assert!(stored > 0, "status shows the fault counters: {}", st.stdout);
    for r in &rows {
        assert_eq!(text(r, "status"), "completed", "{r}");
    }
}

#[test]
fn hostile_telegram_text_channel_delivers_byte_exact_and_counts_the_faults() {
    let mut w = World::new(&format!(
        "profile=telegram-text&msgs_per_min=3000&{HOSTILE}&seed=7"
    ));
    w.start_agent();
    // About a hundred messages: that 10% loss costs at least one is then
    // certain but for 3 in 100,000 runs (at 90 KB it failed 3 in 100).
    let a = w.random_file("text-a.bin", 300_000, 700);
    let b = w.file(
        "text-b.txt",
        "a line of compressible text, again and again\n"
            .repeat(2000)
            .as_bytes(),
    );
    let (ups, downs) = round_trip_all(&w, &[&a, &b]);

    let retransmitted: u64 = ups.iter().map(|r| num(r, "chunks_retransmitted")).sum();
    let receiver_seen: u64 = downs.iter().map(fault_sum).sum();
    eprintln!("telegram-text: {retransmitted} retransmitted; downloads saw {receiver_seen} faults");
    assert!(
        retransmitted > 0,
        "10% loss must cost retransmissions: {ups:?}"
    );
    assert!(
        receiver_seen > 0,
        "the downloading client recognised duplicates/corruption/reordering: {downs:?}"
    );
    let st = w.client(&["status", "--json"]);
    st.assert_ok();
    assert!(
        st.reports().iter().map(fault_sum).sum::<u64>() > 0,
        "{}",
        st.stdout
    );
}

#[test]
fn every_message_duplicated_and_heavily_reordered_still_delivers_byte_exact() {
    let mut w = World::with_fixed_keys("dup=1&reorder=0.9&seed=3");
    w.start_agent();
    let f = w.random_file("shuffled.bin", 4 * 1024 * 1024 + 1, 800);
    let g = w.random_file("shuffled-small.bin", 10_000, 801);
    let (ups, downs) = round_trip_all(&w, &[&f, &g]);
    let dups: u64 = downs
        .iter()
        .map(|r| r["faults"]["duplicate"].as_u64().unwrap())
        .sum();
    assert!(dups > 0, "duplicates are recognised and counted: {downs:?}");
    for r in &ups {
        assert_eq!(num(r, "chunks_sent"), num(r, "chunks_total"), "{r}");
    }
}

#[test]
fn a_corrupted_handshake_answer_does_not_wedge_the_client() {
    // With these fixed keys, corrupt=0.2 and seed=3, the agent's first
    // message (the Welcome) arrives altered, deterministically.
    let mut w = World::with_fixed_keys("corrupt=0.2&seed=3");
    w.start_agent();
    w.put_remote("here.txt", b"x");
    let run = w
        .spawn_client_env(
            &w.client_home,
            &["ls", "--timeout", "30"],
            &[("RUST_LOG", "pigeon_core=debug")],
        )
        .wait(CLIENT_TIMEOUT);
    assert!(
        run.stderr.contains("did not authenticate"),
        "the scenario needs the first answer to be altered; it was not:\n{}",
        run.describe()
    );
    run.assert_ok();
    assert!(run.stdout.contains("here.txt"), "{}", run.describe());
}
