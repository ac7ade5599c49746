//! Issue 10, part 5: the command line as a new user meets it. Folders come
//! down whole, `--overwrite` works both ways, and every refusal says what
//! to do once, without repeating itself.

use std::time::{Duration, Instant};

use crate::common::*;

/// Everything a command said: its `--json` reports and its stderr.
fn said(run: &Run) -> String {
    format!("{}{}", run.stdout, run.stderr)
}

#[test]
fn downloading_a_folder_fetches_everything_in_it_and_nothing_beside_it() {
    let mut w = World::new("");
    w.start_agent();
    let files = [
        ("runs/42/model.bin", random_bytes(200_000, 1)),
        ("runs/42/logs/a.txt", b"first log\n".to_vec()),
        ("runs/42/logs/deep/b.txt", b"deeper\n".to_vec()),
    ];
    for (path, data) in &files {
        w.put_remote(path, data);
    }
    w.put_remote("runs/other.txt", b"not asked for\n");
    let out = w.work.join("out");

    // Without the slash: a clear word on how to ask for a folder.
    let refused = w.download("runs/42", &out, &[]);
    refused.assert_failed();
    assert!(
        said(&refused).contains(
            "is a folder; to download everything in it, end the name with a slash (runs/42/)"
        ),
        "{}",
        refused.describe()
    );

    let run = w.download("runs/42/", &out, &[]);
    run.assert_ok();
    let reports = run.reports();
    assert_eq!(reports.len(), 3, "{}", run.describe());
    assert!(reports.iter().all(|r| r["status"] == "completed"));
    // A download's --json counts the chunks it received.
    assert!(
        reports.iter().all(|r| r["chunks_sent"].as_u64() >= Some(1)),
        "{}",
        run.describe()
    );
    // Not a terminal: no colour codes in what the agent logged.
    assert!(!w.agent_log().contains('\x1b'), "{}", w.agent_log());
    for (path, data) in &files {
        let local = out.join(path.strip_prefix("runs/42/").unwrap());
        assert_eq!(&std::fs::read(&local).unwrap(), data, "{}", local.display());
    }
    assert!(!out.join("other.txt").exists());
    // No hidden partial file is left anywhere under it.
    let mut left = vec![];
    walk_files(&out, &mut left);
    assert_eq!(left.len(), 3, "{left:?}");
}

fn walk_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk_files(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn download_overwrite_replaces_a_local_file_and_without_it_nothing_is_touched() {
    let mut w = World::new("");
    w.start_agent();
    w.put_remote("notes.txt", b"the agent's notes\n");
    let local = w.file("notes.txt", b"mine, older\n");

    let refused = w.download("notes.txt", &local, &[]);
    refused.assert_failed();
    assert!(
        said(&refused).contains("already exists; pass --overwrite to replace it"),
        "{}",
        refused.describe()
    );
    assert_eq!(std::fs::read(&local).unwrap(), b"mine, older\n");

    let run = w.download("notes.txt", &local, &["--overwrite"]);
    run.assert_ok();
    assert_eq!(run.report()["status"], "completed");
    assert_eq!(std::fs::read(&local).unwrap(), b"the agent's notes\n");
}

#[test]
fn refusals_say_what_to_do_once() {
    let mut w = World::with_permissions("", "list");
    w.start_agent();
    w.put_remote("docs/readme.txt", b"x");

    // A missing local file: one "cannot upload", not two.
    let missing = w.work.join("missing.bin");
    let run = w.upload(&[&missing], &[]);
    run.assert_failed();
    assert_eq!(
        said(&run).matches("cannot upload").count(),
        1,
        "{}",
        run.describe()
    );

    // Not allowed to upload: how to allow it, on the agent.
    let file = w.file("a.txt", b"a");
    let run = w.upload(&[&file], &[]);
    run.assert_failed();
    assert!(
        said(&run).contains("may not upload; to allow it, on the agent run `pigeon keys trust <KEY> --name laptop --allow upload,list`"),
        "{}",
        run.describe()
    );
    assert_eq!(
        said(&run).matches("may not upload").count(),
        1,
        "{}",
        run.describe()
    );
}

#[test]
fn uploading_onto_a_remote_folder_hints_at_the_trailing_slash() {
    let mut w = World::new("");
    w.start_agent();
    w.put_remote("docs/readme.txt", b"x");
    let file = w.file("a.txt", b"a");
    let run = w.upload(&[&file], &["--to", "docs"]);
    run.assert_failed();
    assert!(
        said(&run).contains("docs is a folder on the agent; to upload into it, end the name with a slash (--to docs/)"),
        "{}",
        run.describe()
    );
    let run = w.upload(&[&file], &["--to", "docs/"]);
    run.assert_ok();
    wait_until(
        "the file lands in the folder",
        Duration::from_secs(5),
        || w.storage().join("docs/a.txt").exists(),
    );
}

#[test]
fn resume_all_skips_what_cannot_succeed_and_uses_the_recorded_transports() {
    let mut w = World::new("profile=telegram-text&msgs_per_min=600");
    w.start_agent();
    // Ten 64 KiB chunks each: killed well before the end.
    let keep = w.random_file("keep.bin", 600_000, 3);
    let gone = w.random_file("gone.bin", 600_000, 4);
    for file in [&keep, &gone] {
        let mut p = w.spawn_upload(&[file], &[]);
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        wait_until("the upload makes progress", Duration::from_secs(30), || {
            let run = w.client(&["status", "--json"]);
            run.reports()
                .iter()
                .any(|r| r["remote_path"] == name.as_str() && r["chunks_sent"].as_u64() > Some(2))
        });
        p.kill9();
    }
    std::fs::remove_file(&gone).unwrap();

    // No --transport, and none configured: the records say which.
    let run = pigeon(
        &w.client_home,
        &["resume", "--all", "--json"],
        &w.logs,
        Duration::from_secs(120),
    );
    run.assert_ok();
    let said = said(&run);
    assert!(said.contains("as recorded"), "{}", run.describe());
    assert_eq!(
        said.matches("not resuming").count(),
        1,
        "{}",
        run.describe()
    );
    assert!(
        said.contains("is gone; forget it with `pigeon forget"),
        "{}",
        run.describe()
    );
    let reports = run.reports();
    assert_eq!(reports.len(), 1, "{}", run.describe());
    assert_eq!(reports[0]["remote_path"], "keep.bin");
    assert_eq!(reports[0]["status"], "completed");
    assert_eq!(
        std::fs::read(w.storage().join("keep.bin")).unwrap(),
        std::fs::read(&keep).unwrap()
    );
}

#[test]
fn ls_shows_the_hash_of_a_big_file_once_hashed_and_after_a_restart() {
    let mut w = World::new("");
    w.start_agent();
    // Above what a listing hashes on its own time; sparse, so quick to make.
    let big = w.storage().join("big.img");
    std::fs::create_dir_all(w.storage()).unwrap();
    let len = 65 * 1024 * 1024;
    std::fs::File::create(&big).unwrap().set_len(len).unwrap();
    let zeros = sha256_hex(&vec![0u8; len as usize]);

    let first = w.client(&["ls"]);
    first.assert_ok();
    assert!(
        first.stdout.contains("(not hashed yet"),
        "{}",
        first.describe()
    );
    wait_until(
        "the agent hashes it in the background",
        Duration::from_secs(60),
        || w.client(&["ls"]).stdout.contains(&zeros),
    );
    // Kept across a restart: no second hashing needed.
    w.stop_agent();
    w.start_agent();
    let again = w.client(&["ls"]);
    assert!(again.stdout.contains(&zeros), "{}", again.describe());
}

/// Issue 32: the agent's `status` said `in_progress 100.0%` two minutes
/// after it logged the upload completed. What it shows follows the store
/// within a couple of seconds.
#[test]
fn the_agents_status_shows_an_upload_completed_soon_after_it_is() {
    let mut w = World::new("profile=telegram-text&msgs_per_min=600");
    w.start_agent();
    let f = w.random_file("status.bin", 200_000, 3);
    w.upload(&[&f], &[]).assert_ok();
    let agent_status = || {
        let run = pigeon(
            &w.agent_home,
            &["status", "--json"],
            &w.logs,
            Duration::from_secs(30),
        );
        run.assert_ok();
        json_lines(&run.stdout)
            .into_iter()
            .find(|r| {
                r["remote_path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("status.bin"))
            })
            .map(|r| r["status"].as_str().unwrap_or_default().to_string())
    };
    wait_until(
        "the agent's status shows it completed",
        Duration::from_secs(3),
        || agent_status().as_deref() == Some("completed"),
    );
}

/// Issue 30 item 4: `pigeon ls` on a fresh session asks the moment the
/// session is up, not a round-trip guess later (five message intervals,
/// doubled: 10 s on telegram-text at a message a second, a minute on
/// whatsapp-text). Measured: 10.1 s before, about 1 s after; the bound
/// leaves room for a busy machine and still fails the old way.
#[test]
fn ls_on_a_fresh_session_asks_as_soon_as_the_session_is_up() {
    let mut w = World::new("profile=telegram-text");
    w.start_agent();
    w.put_remote("a.txt", b"hello");
    let t = Instant::now();
    let run = w.client(&["ls"]);
    let took = t.elapsed();
    run.assert_ok();
    assert!(run.stdout.contains("a.txt"), "{}", run.describe());
    assert!(took < Duration::from_secs(6), "ls took {took:?}");
}

/// Issue 30 item 2: a small upload behind a bulk one, in the same home
/// (the second command hands it to the first), goes ahead of the bulk
/// data: its chunk does not wait for room behind the bulk's, nor its
/// control frames for the last piece of a bulk chunk. On telegram-text at
/// a message a second: 84 s before, about 2.5 s after (the target: two
/// message intervals and a round trip); the bound leaves room for a busy
/// machine.
#[test]
fn a_small_upload_behind_a_bulk_one_goes_ahead_of_it() {
    let mut w = World::new("profile=telegram-text&msgs_per_min=60");
    w.start_agent();
    let big = w.random_file("big.bin", 3_000_000, 1);
    let small = w.file("small.txt", b"hello");
    let mut bulk = w.spawn_upload(&[&big], &[]);
    wait_until("the bulk upload runs", Duration::from_secs(30), || {
        w.client(&["status", "--json"])
            .reports()
            .iter()
            .any(|r| r["remote_path"] == "big.bin")
    });
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    let run = w.upload(&[&small], &[]);
    let took = t.elapsed();
    run.assert_ok();
    assert_eq!(
        std::fs::read(w.storage().join("small.txt")).unwrap(),
        b"hello"
    );
    assert!(
        took < Duration::from_secs(12),
        "the small upload took {took:?}"
    );
    assert!(!bulk.exited(), "the bulk upload still runs");
    bulk.kill9();
}

/// Issue 30 item 6: `reserve=1/3` on a transport keeps one message slot in
/// three free of bulk data, with the real binary: in the client's
/// transcript no three full messages come within three message intervals,
/// the upload still arrives whole, and the option is kept with the
/// transfer's record (`status` shows the transport as given).
#[test]
fn reserve_keeps_one_slot_in_three_free_of_bulk_data() {
    let mut w = World::new("profile=telegram-text&msgs_per_min=600&reserve=1/3&transcript=1");
    w.start_agent();
    let f = w.random_file("reserved.bin", 150_000, 30);
    let run = w.upload(&[&f], &[]);
    run.assert_ok();
    assert_same_file(&f, &w.storage().join("reserved.bin"));
    assert!(
        run.report()["transport"]
            .as_str()
            .is_some_and(|t| t.contains("reserve=1/3")),
        "{}",
        run.describe()
    );
    let full: Vec<u64> = w
        .client_transcript()
        .iter()
        .filter(|m| m.len() * 100 >= 4096 * 95)
        .map(|m| m.micros)
        .collect();
    assert!(full.len() > 30, "{} full messages", full.len());
    // A message every 0.1 s: three bulk ones span at least 0.3 s (less a
    // little for the file system's clock).
    for w3 in full.windows(3) {
        assert!(
            w3[2] - w3[0] >= 280_000,
            "three bulk messages in {} µs",
            w3[2] - w3[0]
        );
    }
}
