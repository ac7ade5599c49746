//! Issue 2, "What must hold" 3 (resume): kill -9 the client or the agent at
//! any moment; after a restart (re-running the command, or `pigeon
//! resume`) the transfer continues and re-sends at most the chunks that
//! were not yet acknowledged; `--json` says `resumed: true` and
//! `chunks_sent` counts only this run's chunks. If the source changed in
//! between, the transfer restarts under a new key and says so.
//!
//! The channel is paced (telegram-text at 600 or 1200 messages a minute,
//! a 64 KiB chunk in some 22 messages) so a transfer lasts long enough to be
//! killed in the middle; the transcript tells how far it got. What a run
//! had sent of a chunk not yet whole is sent again: the next run seals
//! under its own nonces, so its pieces are other bytes.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use rand::{Rng, SeedableRng};

const SLOW: &str = "profile=telegram-text&msgs_per_min=600&transcript=1";
const TEXT_LIMIT: usize = 4096;
/// Chunks on a text channel (sized for compression, carried in pieces).
const CHUNK: usize = 64 * 1024;
/// What a full telegram-text message carries of them, at the least.
const PER_MESSAGE: usize = 2900;
/// Full messages that carry a chunk, with room to spare.
const MESSAGES_PER_CHUNK: usize = CHUNK.div_ceil(PER_MESSAGE) + 1;

/// Whole chunks that `messages` full messages carried, at the least.
fn whole_chunks(messages: usize) -> u64 {
    ((messages.saturating_sub(1)) * PER_MESSAGE / CHUNK) as u64
}

/// Messages filled to at least 95% of the limit: on telegram-text with
/// incompressible data, each carries some 3 KB of a chunk.
fn full_messages(msgs: &[Msg]) -> usize {
    msgs.iter()
        .filter(|m| m.len() * 100 >= TEXT_LIMIT * 95)
        .count()
}

/// Wait until the client has delivered `n` full messages; the client must
/// still be running then (else the file was too small to be interrupted).
fn wait_for_full_messages(w: &World, p: &mut Proc, n: usize) {
    wait_until(
        &format!("{n} data messages from the client"),
        Duration::from_secs(90),
        || full_messages(&w.client_transcript()) >= n || p.exited(),
    );
    assert!(
        !p.exited(),
        "the transfer finished before it could be interrupted:\n{}",
        p.stderr()
    );
}

/// Wait until `path` has not changed size for `quiet`.
fn wait_quiet(path: &Path, quiet: Duration) {
    let size = || std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut last = size();
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while since.elapsed() < quiet {
        assert!(
            Instant::now() < deadline,
            "{} never went quiet",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
        let now = size();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

fn agent_transcript_path(w: &World) -> std::path::PathBuf {
    w.spool
        .join("transcript")
        .join(format!("{}.log", key_id(&w.agent_key)))
}

/// Let the (running) agent take in every message already delivered to it
/// and acknowledge what it holds.
fn let_agent_drain(w: &World) {
    wait_until("the agent reads its inbox", Duration::from_secs(60), || {
        pending_messages(&w.agent_inbox()) == 0
    });
    wait_quiet(&agent_transcript_path(w), Duration::from_secs(1));
}

#[test]
fn client_killed_mid_upload_resumes_sending_only_what_the_agent_lacks() {
    let mut w = World::new(SLOW);
    w.start_agent();
    // Five chunks; the kill comes after two have gone whole.
    let f = w.random_file("resume.bin", 300_000, 1);
    let mut p = w.spawn_upload(&[&f], &[]);
    wait_for_full_messages(&w, &mut p, 2 * MESSAGES_PER_CHUNK);
    p.kill9();
    let delivered = full_messages(&w.client_transcript());

    // The agent holds a partial in staging; nothing is in place yet.
    let staged = w.staged_files();
    assert_eq!(staged.len(), 1, "one partial upload in staging: {staged:?}");
    assert!(
        !w.storage().join("resume.bin").exists(),
        "not renamed into place before it is complete"
    );
    let_agent_drain(&w);

    let run = w.upload(&[&f], &[]);
    run.assert_ok();
    let r = run.report();
    let total = num(&r, "chunks_total");
    let sent = num(&r, "chunks_sent");
    eprintln!("{delivered} data messages before the kill; re-run sent {sent} of {total} chunks");
    assert!(flag(&r, "resumed"), "{r}");
    assert!(sent < total, "only the missing chunks are sent again: {r}");
    // The agent acknowledged every chunk the messages delivered before the
    // kill completed, while the client was gone. Allow one for the chunk
    // that was in pieces.
    let held = whole_chunks(delivered);
    assert!(
        sent + held <= total + 1,
        "re-sent {sent} chunks although the agent held at least {held} of {total}: {r}"
    );
    assert_eq!(text(&r, "sha256"), sha256_file(&f));
    assert_same_file(&f, &w.storage().join("resume.bin"));
    assert!(
        w.staged_files().is_empty(),
        "staging is clean: {:?}",
        w.staged_files()
    );
}

#[test]
fn client_killed_in_its_first_second_still_resumes() {
    // Everything needed to resume must be durable before the first chunk
    // leaves, not only after the store's periodic flush. At 1800 messages
    // a minute the first chunk is whole within the first second.
    let mut w = World::new("profile=telegram-text&msgs_per_min=1800&transcript=1");
    w.start_agent();
    let f = w.random_file("early.bin", 400_000, 7);
    let mut p = w.spawn_upload(&[&f], &[]);
    wait_for_full_messages(&w, &mut p, MESSAGES_PER_CHUNK);
    p.kill9();
    assert_eq!(w.staged_files().len(), 1, "the agent holds a partial");
    let_agent_drain(&w);

    let run = w.upload(&[&f], &[]);
    run.assert_ok();
    let r = run.report();
    assert!(
        flag(&r, "resumed"),
        "the interrupted upload is resumed, not restarted: {r}"
    );
    assert!(num(&r, "chunks_sent") < num(&r, "chunks_total"), "{r}");
    assert_same_file(&f, &w.storage().join("early.bin"));
}

#[test]
fn pigeon_resume_all_finishes_an_upload_whose_client_was_killed() {
    let mut w = World::new(SLOW);
    w.start_agent();
    let f = w.random_file("via-resume.bin", 300_000, 2);
    let mut p = w.spawn_upload(&[&f], &[]);
    wait_for_full_messages(&w, &mut p, MESSAGES_PER_CHUNK + 2);
    p.kill9();

    let st = w.client(&["status", "--json"]);
    st.assert_ok();
    let rows = st.reports();
    assert_eq!(rows.len(), 1, "{}", st.stdout);
    assert_ne!(text(&rows[0], "status"), "completed", "{}", st.stdout);

    let run = w.client(&["resume", "--all", "--json"]);
    run.assert_ok();
    let r = run.report();
    assert_eq!(text(&r, "status"), "completed", "{r}");
    assert!(flag(&r, "resumed"), "{r}");
    assert!(num(&r, "chunks_sent") < num(&r, "chunks_total"), "{r}");
    assert_same_file(&f, &w.storage().join("via-resume.bin"));
}

#[test]
fn agent_killed_mid_upload_and_restarted_lets_the_running_client_complete() {
    let mut w = World::new(SLOW);
    w.start_agent();
    let f = w.random_file("agent-dies.bin", 200_000, 3);
    let mut p = w.spawn_upload(&[&f], &[]);
    wait_for_full_messages(&w, &mut p, 20);
    w.kill_agent();
    assert_eq!(w.staged_files().len(), 1, "the agent had a partial");

    // The client carries on alone for a moment, then the agent comes back
    // with the same home and spool.
    let before = w.client_transcript().len();
    wait_until("the client keeps sending", Duration::from_secs(30), || {
        w.client_transcript().len() >= before + 3 || p.exited()
    });
    w.start_agent();

    let run = p.wait(CLIENT_TIMEOUT);
    run.assert_ok();
    let r = run.report();
    assert_eq!(text(&r, "status"), "completed");
    assert_eq!(text(&r, "sha256"), sha256_file(&f));
    assert_same_file(&f, &w.storage().join("agent-dies.bin"));
    assert!(
        w.staged_files().is_empty(),
        "staging is clean: {:?}",
        w.staged_files()
    );
}

#[test]
fn repeated_kill_nine_of_client_and_agent_at_random_moments_loses_nothing() {
    let mut w = World::new("profile=telegram-text&msgs_per_min=1200&transcript=1");
    w.start_agent();
    let f = w.random_file("battered.bin", 360_000, 4);
    let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
    let mut client = Some(w.spawn_upload(&[&f], &[]));
    // Do not start killing before the transfer is under way.
    wait_until("the upload starts", Duration::from_secs(60), || {
        full_messages(&w.client_transcript()) >= 5
    });
    let mut kills = vec![];
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..1200)));
        if client.as_mut().is_some_and(|c| c.exited()) {
            break;
        }
        if rng.gen_bool(0.5) {
            kills.push("client");
            client.as_mut().unwrap().kill9();
            client = Some(w.spawn_upload(&[&f], &[]));
        } else {
            kills.push("agent");
            w.kill_agent();
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..500)));
            w.start_agent();
        }
    }
    eprintln!("killed: {kills:?}");
    assert!(
        kills.len() >= 3,
        "the file was too small to be interrupted often: {kills:?}"
    );
    let run = client.take().unwrap().wait(CLIENT_TIMEOUT);
    // The last client may have been started after the agent confirmed (then
    // it finds nothing to do) or be the one that completes the upload.
    if !run.success() {
        panic!(
            "the last run failed\n{}\n--- agent ---\n{}",
            run.describe(),
            w.agent_log()
        );
    }
    assert_same_file(&f, &w.storage().join("battered.bin"));
    assert!(
        w.staged_files().is_empty(),
        "staging is clean: {:?}",
        w.staged_files()
    );
    // And it comes back intact.
    let out = w.work.join("battered.back");
    w.download("battered.bin", &out, &[]).assert_ok();
    assert_same_file(&f, &out);
}

#[test]
fn source_changed_between_kill_and_rerun_uploads_the_new_content_under_a_new_key() {
    let mut w = World::new(SLOW);
    w.start_agent();
    let f = w.random_file("changing.bin", 200_000, 5);
    let mut p = w.spawn_upload(&[&f], &[]);
    wait_for_full_messages(&w, &mut p, 20);
    p.kill9();
    let first = w.client(&["status", "--json"]).reports();
    assert_eq!(
        first.len(),
        1,
        "the interrupted transfer is in the client's store"
    );

    // New content, another size.
    write_random(&f, 150_001, 55);
    let run = w.upload(&[&f], &[]);
    run.assert_ok();
    let r = run.report();
    assert_eq!(text(&r, "status"), "completed");
    assert_eq!(num(&r, "size"), 150_001);
    assert_eq!(
        text(&r, "sha256"),
        sha256_file(&f),
        "the NEW content's hash"
    );
    assert_eq!(
        num(&r, "chunks_sent"),
        num(&r, "chunks_total"),
        "all sent afresh: {r}"
    );
    assert!(!flag(&r, "resumed"), "a changed source is not resumed: {r}");
    assert!(
        run.stderr.contains("changed") && run.stderr.contains("new key"),
        "a warning says the source changed and the transfer restarted\n{}",
        run.describe()
    );
    assert_ne!(
        text(&r, "id"),
        text(&first[0], "id"),
        "a new transfer (new id, new key)"
    );
    assert_same_file(&f, &w.storage().join("changing.bin"));
    assert!(
        w.staged_files().is_empty(),
        "the old partial is gone: {:?}",
        w.staged_files()
    );
}

#[test]
fn client_killed_mid_download_resumes_with_what_it_already_had() {
    let mut w = World::new(SLOW);
    w.start_agent();
    let data = random_bytes(300_000, 6);
    w.put_remote("served/down.bin", &data);
    let out_dir = w.work.join("dl");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("down.bin");

    let mut p = w.spawn_download("served/down.bin", &out, &[]);
    wait_until(
        "the agent sends two chunks' messages",
        Duration::from_secs(90),
        || full_messages(&w.agent_transcript()) >= 2 * MESSAGES_PER_CHUNK || p.exited(),
    );
    assert!(
        !p.exited(),
        "the download finished too soon:\n{}",
        p.stderr()
    );
    p.kill9();
    assert!(
        !out.exists(),
        "nothing in place before the whole file is verified"
    );
    let partials: Vec<_> = list_files(&out_dir);
    assert!(
        partials
            .iter()
            .any(|p| p.to_string_lossy().ends_with(".partial")),
        "a partial download is kept: {partials:?}"
    );

    let run = w.download("served/down.bin", &out, &[]);
    run.assert_ok();
    let r = run.report();
    eprintln!("download re-run: {r}");
    assert_eq!(text(&r, "status"), "completed");
    assert!(flag(&r, "resumed"), "{r}");
    assert!(
        num(&r, "chunks_sent") < num(&r, "chunks_total"),
        "only the missing chunks this run: {r}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let left: Vec<_> = list_files(&out_dir)
        .into_iter()
        .filter(|p| *p != out)
        .collect();
    assert!(left.is_empty(), "no partial left: {left:?}");
}

/// Issue 10: failed and cancelled transfers can be removed, one by one or
/// in bulk, completed ones only when asked; an unfinished one is not
/// forgotten by accident.
#[test]
fn failed_and_cancelled_transfers_can_be_forgotten_and_cleaned() {
    let mut w = World::new("");
    // With no agent: the upload fails after its timeout.
    let lost = w.random_file("lost.bin", 5_000, 41);
    w.upload(&[&lost], &["--timeout", "2"]).assert_failed();
    w.start_agent();
    let kept = w.random_file("kept.bin", 5_000, 42);
    let done = w.upload(&[&kept], &[]);
    done.assert_ok();
    let done_id = text(&done.report(), "id").to_string();
    let ids = |w: &World| -> Vec<(String, String)> {
        w.client(&["status", "--json"])
            .reports()
            .iter()
            .map(|r| (text(r, "id").to_string(), text(r, "status").to_string()))
            .collect()
    };
    assert_eq!(ids(&w).len(), 2, "{:?}", ids(&w));

    let dry = w.client(&["clean", "--dry-run"]);
    dry.assert_ok();
    assert!(
        dry.stdout.contains("would remove") && dry.stdout.contains("lost.bin"),
        "{}",
        dry.describe()
    );
    assert!(!dry.stdout.contains("kept.bin"), "{}", dry.describe());
    assert_eq!(ids(&w).len(), 2, "a dry run removes nothing");

    let clean = w.client(&["clean"]);
    clean.assert_ok();
    assert_eq!(ids(&w), vec![(done_id.clone(), "completed".to_string())]);

    // Completed ones go only when asked, and only those old enough.
    w.client(&["clean", "--completed", "--older-than", "1d"])
        .assert_ok();
    assert_eq!(ids(&w).len(), 1);
    w.client(&["forget", &done_id[..8]]).assert_ok();
    assert!(ids(&w).is_empty());
    assert_same_file(&kept, &w.storage().join("kept.bin"));
}

/// Issue 10: cancelling an interrupted upload tells the agent, which drops
/// its staged partial file (on a full disk that is what frees the room).
#[test]
fn cancelling_an_interrupted_upload_makes_the_agent_drop_its_partial_file() {
    let mut w = World::new("profile=telegram-text&msgs_per_min=600");
    w.start_agent();
    let f = w.random_file("big.bin", 400_000, 43);
    let mut up = w.spawn_upload(&[&f], &[]);
    wait_until(
        "the agent stages the upload",
        Duration::from_secs(60),
        || !w.staged_files().is_empty(),
    );
    up.kill9();
    let status = w.client(&["status", "--json"]);
    let id = text(&status.reports()[0], "id").to_string();
    let run = w.client(&["cancel", &id[..8]]);
    run.assert_ok();
    assert!(
        run.stderr.contains("the agent confirmed"),
        "{}",
        run.describe()
    );
    wait_until(
        "the agent drops the partial file",
        Duration::from_secs(20),
        || w.staged_files().is_empty(),
    );
    let status = w.client(&["status", "--json"]);
    assert_eq!(text(&status.reports()[0], "status"), "cancelled");
    assert!(w.stored_files().is_empty(), "{:?}", w.stored_files());
}

/// Early data is replayable, and an agent that restarted has forgotten
/// which early data it took: a recording of an upload's first message
/// (its Hello, offer and first chunk) replayed after that upload failed
/// on the agent (which keeps a failed upload's key, to resume it) and the
/// agent restarted must not start that upload over.
#[test]
fn a_replayed_early_hello_does_not_restart_a_failed_upload() {
    let mut w = World::new("profile=whatsapp-text&msgs_per_min=30&transcript=1");
    w.start_agent();
    let f = w.random_file("shrinks.bin", 40_000, 44);
    let up = w.spawn_upload(&[&f], &[]);
    wait_until(
        "the agent stages the upload",
        Duration::from_secs(60),
        || !w.staged_files().is_empty(),
    );
    // The source shrinks: the client tells the agent, which fails the upload.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(5_000)
        .unwrap();
    up.wait(Duration::from_secs(60)).assert_failed();
    wait_until(
        "the agent drops the partial file",
        Duration::from_secs(30),
        || w.staged_files().is_empty(),
    );
    w.kill_agent();
    w.start_agent();
    // The provider delivers the upload's first message again.
    let first = w.client_transcript()[0].bytes.clone();
    let inbox = w.agent_inbox();
    let name = "99999999999999999999-replay.msg";
    std::fs::write(inbox.join(format!(".tmp-{name}")), &first).unwrap();
    std::fs::rename(inbox.join(format!(".tmp-{name}")), inbox.join(name)).unwrap();
    wait_until(
        "the agent reads the replay",
        Duration::from_secs(20),
        || !inbox.join(name).exists(),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        w.staged_files().is_empty(),
        "started over: {:?}\n{}",
        w.staged_files(),
        w.agent_log()
    );
    assert!(w.stored_files().is_empty(), "{:?}", w.stored_files());
}

/// Issue 30 item 5: on a slow link (a message every two seconds) a
/// resumed upload's offer and first chunks ride in its Hello. Those first
/// chunks are the first the agent lacks, not the first of the file: the
/// chunks acknowledged before the kill are not sent again at all.
#[test]
fn a_resumed_upload_sends_with_its_offer_the_first_chunks_the_agent_lacks() {
    let mut w = World::new("profile=telegram-doc&msgs_per_min=30&bytes_per_min=6000000");
    w.start_agent();
    let f = w.random_file("early.bin", 2_400_000, 6);
    let mut p = w.spawn_upload(&[&f], &[]);
    let acked = |w: &World| {
        w.client(&["status", "--json"])
            .reports()
            .iter()
            .find(|r| r["remote_path"] == "early.bin")
            .and_then(|r| r["chunks_sent"].as_u64())
            .unwrap_or(0)
    };
    wait_until("chunks acknowledged", Duration::from_secs(60), || {
        p.exited() || acked(&w) >= 2
    });
    assert!(!p.exited(), "finished before the kill:\n{}", p.stderr());
    // The acknowledgements the client had reached its store.
    std::thread::sleep(Duration::from_millis(700));
    p.kill9();
    let done = acked(&w);
    let run = w.upload(&[&f], &[]);
    run.assert_ok();
    let r = run.report();
    let (total, sent) = (num(&r, "chunks_total"), num(&r, "chunks_sent"));
    eprintln!("{done} of {total} chunks acknowledged before the kill; the rerun sent {sent}");
    assert!(
        sent + done <= total,
        "the rerun sent {sent} chunks of {total} though {done} were acknowledged: {r}"
    );
    assert_same_file(&f, &w.storage().join("early.bin"));
}
