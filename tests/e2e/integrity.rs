//! Issue 2, "What must hold" 5 (integrity): a file is reported completed
//! only after the receiver confirmed the whole-file SHA-256; uploads are
//! staged and renamed into place only then; an existing remote file is not
//! replaced without `--overwrite`; a source that changes while it is being
//! sent never ends up "completed" with mixed content.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::*;

#[test]
fn existing_remote_file_is_refused_without_overwrite_and_replaced_with_it() {
    let mut w = World::new("");
    w.start_agent();
    let first = w.random_file("v1.bin", 20_000, 1);
    let second = w.random_file("v2.bin", 30_000, 2);
    w.upload(&[&first], &["--to", "doc.bin"]).assert_ok();
    assert_same_file(&first, &w.storage().join("doc.bin"));

    let run = w.upload(&[&second], &["--to", "doc.bin", "--timeout", "30"]);
    run.assert_failed();
    let r = run.report();
    assert_eq!(text(&r, "status"), "failed", "{r}");
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.contains("already exists") && all.contains("--overwrite"),
        "{}",
        run.describe()
    );
    assert_same_file(&first, &w.storage().join("doc.bin"));
    assert!(
        w.staged_files().is_empty(),
        "a refused upload leaves nothing staged"
    );

    let run = w.upload(&[&second], &["--to", "doc.bin", "--overwrite"]);
    run.assert_ok();
    assert_eq!(text(&run.report(), "sha256"), sha256_file(&second));
    assert_same_file(&second, &w.storage().join("doc.bin"));
    assert_eq!(w.stored_files(), vec!["doc.bin".to_string()]);
}

#[test]
fn uploads_are_staged_and_appear_in_place_only_once_complete() {
    let mut w = World::new("profile=telegram-text&msgs_per_min=600");
    w.start_agent();
    let f = w.random_file("staged.bin", 60_000, 3);
    let target = w.storage().join("staged.bin");
    let mut p = w.spawn_upload(&[&f], &[]);
    let mut saw_staged_only = false;
    while !p.exited() {
        // Target first: once it exists the partial must already be gone
        // (rename), so seeing both means the partial was copied, not renamed.
        let in_place = target.exists();
        let staged = !w.staged_files().is_empty();
        assert!(
            !(in_place && staged),
            "the file is in place while its partial is still staged"
        );
        if in_place {
            assert_same_file(&f, &target);
        }
        saw_staged_only |= staged && !in_place;
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = p.wait(CLIENT_TIMEOUT);
    run.assert_ok();
    assert!(
        saw_staged_only,
        "the partial upload lived in <storage>/.pigeon/staging"
    );
    assert_same_file(&f, &target);
    assert!(w.staged_files().is_empty());
}

#[test]
fn stored_files_are_never_executable() {
    // Allowed to deploy programs (without `exec` a script goes to quarantine).
    let mut w = World::with_permissions("", "upload,download,list,exec");
    w.start_agent();
    let f = w.file("tool.sh", b"#!/bin/sh\necho hi\n");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    w.upload(&[&f], &[]).assert_ok();
    let mode = std::fs::metadata(w.storage().join("tool.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0, "stored with mode {mode:o}");
}

#[test]
fn source_modified_during_upload_is_never_reported_completed_with_mixed_content() {
    let mut w = World::new("profile=telegram-text&msgs_per_min=600&transcript=1");
    w.start_agent();
    let f = w.random_file("moving.bin", 120_000, 4);
    let mut p = w.spawn_upload(&[&f], &["--timeout", "60"]);
    wait_until("ten data messages", Duration::from_secs(60), || {
        w.client_transcript()
            .iter()
            .filter(|m| m.len() > 3900)
            .count()
            >= 10
            || p.exited()
    });
    assert!(!p.exited(), "finished before the change:\n{}", p.stderr());
    // Same size, different bytes (chunks already sent and still to come).
    let changed = random_bytes(120_000, 44);
    std::fs::write(&f, &changed).unwrap();
    let run = p.wait(CLIENT_TIMEOUT);
    let target = w.storage().join("moving.bin");
    eprintln!(
        "upload of a changing source: success={} {}",
        run.success(),
        run.stdout.trim()
    );
    if run.success() {
        // Acceptable only if what is stored is exactly the file as it is now.
        assert_eq!(
            std::fs::read(&target).unwrap(),
            changed,
            "completed with mixed content"
        );
        assert_eq!(text(&run.report(), "sha256"), sha256_hex(&changed));
    } else {
        let r = run.report();
        assert_eq!(text(&r, "status"), "failed");
        assert!(
            r["error"].as_str().unwrap_or_default().contains("changed"),
            "the error says the source changed: {r}"
        );
        assert!(!target.exists(), "nothing in place after a failed upload");
        // Running it again sends the new content in full.
        let again = w.upload(&[&f], &[]);
        again.assert_ok();
        assert_eq!(std::fs::read(&target).unwrap(), changed);
        assert!(
            w.staged_files().is_empty(),
            "the abandoned partial is gone: {:?}",
            w.staged_files()
        );
    }
}

/// Issue 6, item 7: a sender that fails on its own side (here: the agent's
/// file shrank under a download) says so, and the receiver stops at once
/// with the reason instead of waiting out its silence limit and blaming the
/// channel.
#[test]
fn a_download_whose_source_breaks_on_the_agent_fails_at_once_with_the_reason() {
    let mut w = World::new("profile=telegram-text&msgs_per_min=600&transcript=1");
    w.start_agent();
    // Sixteen 64 KiB chunks: the sender reads only a few ahead, so most are
    // still to be read when the file is cut.
    let served = w.put_remote("shrinking.bin", &random_bytes(1_000_000, 70));
    let out = w.work.join("shrinking.bin");
    let started = std::time::Instant::now();
    let mut p = w.spawn_download("shrinking.bin", &out, &["--timeout", "120"]);
    wait_until("the download is under way", Duration::from_secs(60), || {
        w.agent_transcript().len() >= 10 || p.exited()
    });
    assert!(!p.exited(), "finished before the change:\n{}", p.stderr());
    // Cut the file short: the agent can no longer read what it offered.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&served)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let run = p.wait(CLIENT_TIMEOUT);
    run.assert_failed();
    let error = text(&run.report(), "error").to_string();
    assert!(
        error.contains("the sender stopped") && error.contains("shorter"),
        "the reason reaches the client: {error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the client knew within a round trip, not after its timeout ({:?})",
        started.elapsed()
    );
    assert!(!out.exists(), "nothing in place");
}

/// Issue 10: re-running an upload whose file already reached the agent
/// succeeds once the agent's copy is shown to have this file's SHA-256; a
/// different file of the same size under that name is still refused.
#[test]
fn re_running_an_upload_that_already_arrived_verifies_it_and_succeeds() {
    let mut w = World::new("");
    w.start_agent();
    let f = w.random_file("again.bin", 200_000, 31);
    w.upload(&[&f], &[]).assert_ok();
    let run = w.upload(&[&f], &[]);
    run.assert_ok();
    assert_eq!(num(&run.report(), "chunks_sent"), 0, "{}", run.describe());
    // As a person reads it.
    let run = w.client(&["upload", f.to_str().unwrap()]);
    run.assert_ok();
    assert!(
        run.stdout.contains("already on the agent, verified"),
        "{}",
        run.describe()
    );
    let impostor = w.random_file("impostor.bin", 200_000, 32);
    let run = w.upload(&[&impostor], &["--to", "again.bin", "--timeout", "30"]);
    run.assert_failed();
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        all.contains("already exists on the agent with other content")
            && all.contains("--overwrite"),
        "{}",
        run.describe()
    );
    assert_same_file(&f, &w.storage().join("again.bin"));
}
