//! Issue 10, part 1: one home, many commands at once. The process that
//! holds a home's store serves `<home>/pigeon.sock`, and every other
//! command on the home runs through it: uploads queue into it and follow
//! their own transfers, `ls`, `status`, `pause`, `resume`, `cancel`,
//! `forget` act on the live engine. A killed owner leaves nothing stale:
//! the next command (or a command that was following) takes over.
//!
//! The channel is paced (telegram-text at 600 messages a minute, about
//! 30 KB/s of random data) so the owner's upload runs for many seconds.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use crate::common::pty;
use crate::common::*;

const SLOW: &str = "profile=telegram-text&msgs_per_min=600";
/// The same channel ten times faster: for what runs once no process holds
/// the home (a resume, a re-run), where a slow pace proves nothing more.
const FAST: &str = "profile=telegram-text&msgs_per_min=6000";

/// Start a long upload that owns the client home; returns once it serves
/// the socket.
fn start_owner(w: &World, name: &str, len: usize) -> Proc {
    let file = w.random_file(name, len, 7);
    let mut owner = w.spawn_upload(&[&file], &[]);
    let sock = w.client_home.join("pigeon.sock");
    wait_until(
        "the upload serves the home",
        Duration::from_secs(30),
        || sock.exists() || owner.exited(),
    );
    assert!(
        !owner.exited(),
        "the upload ended early:\n{}",
        owner.stderr()
    );
    owner
}

/// Wait until the transfer to `remote` has more than `chunks` chunks on record.
fn wait_for_progress(w: &World, remote: &str, chunks: u64) {
    wait_until(
        &format!("{remote} makes progress"),
        Duration::from_secs(30),
        || {
            status(w)
                .iter()
                .any(|r| r["remote_path"] == remote && r["chunks_sent"].as_u64() > Some(chunks))
        },
    );
}

fn status(w: &World) -> Vec<serde_json::Value> {
    let run = w.client(&["status", "--json"]);
    run.assert_ok();
    run.reports()
}

fn status_of(w: &World, remote: &str) -> serde_json::Value {
    status(w)
        .into_iter()
        .find(|r| r["remote_path"] == remote)
        .unwrap_or_else(|| panic!("no transfer to {remote} in status"))
}

#[test]
fn commands_on_a_busy_home_run_through_the_process_that_holds_it() {
    let mut w = World::new(SLOW);
    w.start_agent();
    w.put_remote("docs/readme.txt", b"already there\n");
    let mut owner = start_owner(&w, "big.bin", 900_000);

    // The socket is the user's alone.
    let sock = w.client_home.join("pigeon.sock");
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // Listing, status and a second upload, while the first one runs.
    let ls = w.client(&["ls", "docs"]);
    ls.assert_ok();
    assert!(ls.stdout.contains("docs/readme.txt"), "{}", ls.describe());
    assert_eq!(status_of(&w, "big.bin")["status"], "in_progress");
    let small = w.file("small.txt", b"a small file\n");
    let second = w.upload(&[&small], &[]);
    second.assert_ok();
    assert_eq!(second.report()["status"], "completed");
    assert_eq!(
        std::fs::read(w.storage().join("small.txt")).unwrap(),
        b"a small file\n"
    );
    assert!(!owner.exited(), "the owner stopped:\n{}", owner.stderr());

    // Pause the owner's own transfer from another shell, once a chunk is
    // through (a loaded machine may take a while): it stops with its
    // progress kept, and the owner says so.
    wait_for_progress(&w, "big.bin", 0);
    let id = status_of(&w, "big.bin")["id"].as_str().unwrap().to_string();
    let paused = w.client(&["pause", &id[..8]]);
    paused.assert_ok();
    assert!(paused.stderr.contains("paused"), "{}", paused.describe());
    let owner_run = owner.wait(Duration::from_secs(30));
    owner_run.assert_failed();
    assert_eq!(owner_run.report()["status"], "paused");
    let done_before = status_of(&w, "big.bin")["chunks_sent"].as_u64().unwrap();
    assert!(done_before > 0, "nothing was sent before the pause");

    // Nothing holds the home now: a stale socket is not left behind, and
    // `resume` runs in-process and finishes what was paused.
    assert!(!sock.exists(), "the owner left its socket behind");
    w.query = FAST.into();
    let resumed = w.client(&["resume", &id[..8], "--json"]);
    resumed.assert_ok();
    let report = resumed.report();
    assert_eq!(report["status"], "completed");
    assert_eq!(report["resumed"], true);
    assert_eq!(
        std::fs::read(w.storage().join("big.bin")).unwrap(),
        std::fs::read(w.work.join("big.bin")).unwrap()
    );

    // Cancel a running upload from another shell: the owner reports it
    // cancelled, and the agent was told (its staged partial file goes).
    w.query = SLOW.into();
    let owner = start_owner(&w, "doomed.bin", 900_000);
    wait_for_progress(&w, "doomed.bin", 3);
    let id = status_of(&w, "doomed.bin")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cancel = w.client(&["cancel", &id[..8]]);
    cancel.assert_ok();
    assert!(
        cancel.stderr.contains("the agent confirmed"),
        "{}",
        cancel.describe()
    );
    let owner_run = owner.wait(Duration::from_secs(30));
    owner_run.assert_failed();
    assert_eq!(owner_run.report()["status"], "cancelled");
    wait_until(
        "the agent drops the partial upload",
        Duration::from_secs(30),
        || w.staged_files().is_empty(),
    );

    // `forget` works on the home whoever holds it.
    let forget = w.client(&["forget", &id[..8]]);
    forget.assert_ok();
    assert!(status(&w).iter().all(|r| r["id"] != id.as_str()));
}

#[test]
fn a_command_naming_another_transport_is_told_who_holds_the_home() {
    let mut w = World::new(SLOW);
    w.start_agent();
    let mut owner = start_owner(&w, "big.bin", 600_000);
    let other_spool = w.dir.path().join("other-spool");
    std::fs::create_dir_all(&other_spool).unwrap();
    let other = uri_for(&other_spool, "");
    let small = w.file("small.txt", b"x");
    let refused = w.client(&["upload", small.to_str().unwrap(), "--transport", &other]);
    refused.assert_failed();
    assert!(
        refused
            .stderr
            .contains("this home is held by a pigeon process")
            && refused.stderr.contains("pigeon upload")
            && refused.stderr.contains("another --home"),
        "{}",
        refused.describe()
    );
    owner.kill9();
}

/// A link limited with `bwlimit=` is the same link to a second command
/// naming the same URI: the owner once showed its links without their
/// limit, and refused every command from a second shell.
#[test]
fn the_same_transport_with_its_bandwidth_limit_is_the_owners_own() {
    let mut w = World::new(&format!("{SLOW}&bwlimit=200k"));
    w.start_agent();
    let mut owner = start_owner(&w, "big.bin", 600_000);
    let listed = w.client(&["ls"]);
    listed.assert_ok();
    assert!(
        !listed.stderr.contains("is held by a pigeon process"),
        "{}",
        listed.describe()
    );
    owner.kill9();
}

#[test]
fn a_killed_owner_is_taken_over_by_the_command_that_followed_it() {
    let mut w = World::new(SLOW);
    w.start_agent();
    let mut owner = start_owner(&w, "big.bin", 900_000);
    // Seven 64 KiB chunks: still under way when the owner is killed.
    let mid = w.random_file("mid.bin", 450_000, 9);
    let follower = w.spawn_upload(&[&mid], &[]);
    wait_for_progress(&w, "mid.bin", 1);
    // The owner's own file has acknowledged chunks on record.
    wait_for_progress(&w, "big.bin", 0);
    owner.kill9();

    // The follower notices, holds the home itself and finishes its file.
    let run = follower.wait(Duration::from_secs(120));
    run.assert_ok();
    assert!(
        run.stderr.contains("stopped; carrying on from here"),
        "{}",
        run.describe()
    );
    assert_eq!(run.report()["status"], "completed");
    assert_eq!(
        std::fs::read(w.storage().join("mid.bin")).unwrap(),
        std::fs::read(&mid).unwrap()
    );

    // The killed owner's socket is stale: the next command takes over and
    // the owner's own command, run again, resumes its file.
    assert_eq!(status_of(&w, "big.bin")["status"], "in_progress");
    w.query = FAST.into();
    let big = w.work.join("big.bin");
    let again = w.upload(&[&big], &[]);
    again.assert_ok();
    assert_eq!(again.report()["resumed"], true);
    assert_eq!(
        std::fs::read(w.storage().join("big.bin")).unwrap(),
        std::fs::read(&big).unwrap()
    );
}

#[test]
fn a_follower_stopped_with_ctrl_c_leaves_its_transfer_paused_and_resumable() {
    let mut w = World::new(SLOW);
    w.start_agent();
    let mut owner = start_owner(&w, "big.bin", 600_000);
    let mid = w.random_file("mid.bin", 300_000, 9);
    let mut follower = w.spawn_upload(&[&mid], &[]);
    wait_for_progress(&w, "mid.bin", 2);
    follower.terminate(Duration::from_secs(10));
    assert!(
        follower
            .stderr()
            .contains("stopped with their progress kept"),
        "{}",
        follower.stderr()
    );
    wait_until(
        "the follower's transfer is paused",
        Duration::from_secs(30),
        || status_of(&w, "mid.bin")["status"] == "paused",
    );
    // The owner is not disturbed, and the same command again resumes the
    // file (through the owner, if it still runs).
    assert!(!owner.exited(), "the owner stopped:\n{}", owner.stderr());
    let again = w.upload(&[&mid], &[]);
    again.assert_ok();
    let report = again.report();
    assert_eq!(report["status"], "completed");
    assert_eq!(report["resumed"], true);
    owner.kill9();
}

#[test]
fn the_tui_and_the_command_line_share_one_home() {
    let mut w = World::new(SLOW);
    w.start_agent();
    let uri = w.uri();
    let mut tui = pty::Session::start_with(&w.client_home, &w.work, &["--transport", &uri]);
    tui.wait_for("peer agent", Duration::from_secs(30));

    // An upload from the command line runs in the TUI's engine and shows
    // in its queue.
    let data = random_bytes(240_000, 5);
    let file = w.file("shared.bin", &data);
    let follower = w.spawn_upload(&[&file], &[]);
    tui.wait_for("shared.bin", Duration::from_secs(30));

    // Cancelled from the command line, it is started again with r.
    wait_for_progress(&w, "shared.bin", 2);
    let id = status_of(&w, "shared.bin")["id"]
        .as_str()
        .unwrap()
        .to_string();
    w.client(&["cancel", &id[..8]]).assert_ok();
    let run = follower.wait(Duration::from_secs(30));
    assert_eq!(run.report()["status"], "cancelled");
    tui.press("2");
    tui.press("\t");
    tui.press("\t");
    tui.wait_for("cancelled", Duration::from_secs(10));
    tui.press("r");
    tui.wait_for("starting shared.bin again", Duration::from_secs(10));
    let stored = w.storage().join("shared.bin");
    wait_until(
        "the restarted upload arrives",
        Duration::from_secs(90),
        || std::fs::read(&stored).is_ok_and(|got| got == data),
    );

    // Its details: the whole file's hash, on screen.
    tui.press("3");
    tui.wait_for("uploaded shared.bin", Duration::from_secs(10));
    tui.press("\r");
    let sha = sha256_hex(&data);
    tui.wait_for(&sha[..32], Duration::from_secs(10));
    tui.press("\x1b");
    std::thread::sleep(Duration::from_millis(300));
    // X removes the finished transfer from the list, for every command.
    tui.press("X");
    tui.wait_for("removed shared.bin from the list", Duration::from_secs(10));
    wait_until("the transfer is forgotten", Duration::from_secs(10), || {
        status(&w)
            .iter()
            .all(|r| r["remote_path"] != "shared.bin" || r["status"] != "completed")
    });

    // A second TUI on the same home attaches to the first one's engine.
    let mut second = pty::Session::start_with(&w.client_home, &w.work, &[]);
    second.wait_for("peer agent", Duration::from_secs(30));
    second.press("L");
    second.wait_for("attached to the pigeon process", Duration::from_secs(10));
    second.press("\x1b");
    // Esc alone: a key in the same read would make it Alt-q.
    std::thread::sleep(Duration::from_millis(300));
    second.press("q");
    assert!(second.wait_exit(Duration::from_secs(20)).success());
    // The first one was not disturbed by the second's quitting.
    assert!(tui.child.try_wait().unwrap().is_none());
    tui.press("q");
    assert!(tui.wait_exit(Duration::from_secs(30)).success());
}

#[test]
fn a_follower_never_pauses_what_it_did_not_start_and_a_queued_pause_ends_the_wait() {
    let mut w = World::new(SLOW);
    w.start_agent();
    let a = w.random_file("a.bin", 300_000, 1);
    let b = w.random_file("b.bin", 300_000, 2);
    // One at a time: b waits its turn behind a.
    let owner = w.spawn_upload(&[&a, &b], &["--parallel", "1"]);
    let sock = w.client_home.join("pigeon.sock");
    wait_until(
        "the upload serves the home",
        Duration::from_secs(30),
        || sock.exists(),
    );
    wait_until("both are queued", Duration::from_secs(30), || {
        status(&w).len() == 2
    });

    // Another shell asks for b too, then gives up: b is the owner's.
    let mut follower = w.spawn_upload(&[&b], &[]);
    std::thread::sleep(Duration::from_secs(2));
    follower.terminate(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_ne!(status_of(&w, "b.bin")["status"], "paused");

    // Paused while it waits its turn: the owner hears it is over and
    // finishes with a.
    let id = status_of(&w, "b.bin")["id"].as_str().unwrap().to_string();
    w.client(&["pause", &id[..8]]).assert_ok();
    let run = owner.wait(Duration::from_secs(90));
    run.assert_failed();
    let reports = run.reports();
    let of = |name: &str| {
        reports
            .iter()
            .find(|r| r["remote_path"] == name)
            .unwrap_or_else(|| panic!("no report of {name}: {}", run.describe()))
            .clone()
    };
    assert_eq!(of("a.bin")["status"], "completed");
    assert_eq!(of("b.bin")["status"], "paused");
}

/// Issue 25, item 4: a cancel is "told" only when the agent confirmed it;
/// one it could not confirm is kept and said at the next contact; after a
/// cancel in any state nothing of the upload is left on the agent. And a
/// paused upload can be resumed at once, while its command is still on
/// its way out.
#[test]
fn a_cancel_in_any_state_leaves_nothing_on_the_agent() {
    let mut w = World::new(SLOW);
    w.start_agent();
    let staged_empty = |w: &World, what: &str| {
        wait_until(
            &format!("the agent drops the partial ({what})"),
            Duration::from_secs(30),
            || w.staged_files().is_empty(),
        );
    };
    let cancel = |w: &World, id: &str| {
        let run = w.client(&["cancel", &id[..8]]);
        run.assert_ok();
        run
    };

    // Paused, its command gone; then resumed at once and paused again.
    let owner = start_owner(&w, "paused.bin", 900_000);
    wait_for_progress(&w, "paused.bin", 2);
    let id = status_of(&w, "paused.bin")["id"]
        .as_str()
        .unwrap()
        .to_string();
    w.client(&["pause", &id[..8]]).assert_ok();
    let mut resumed = w.spawn_client(&["resume", &id[..8]]);
    owner.wait(Duration::from_secs(30)).assert_failed();
    wait_until("the resumed upload runs", Duration::from_secs(30), || {
        status_of(&w, "paused.bin")["status"] == "in_progress" || resumed.exited()
    });
    assert!(!resumed.exited(), "resume failed:\n{}", resumed.stderr());
    w.client(&["pause", &id[..8]]).assert_ok();
    resumed.wait(Duration::from_secs(30)).assert_failed();
    let run = cancel(&w, &id);
    assert!(
        run.stderr.contains("the agent confirmed"),
        "{}",
        run.describe()
    );
    staged_empty(&w, "paused");

    // Paused, then the agent restarted: no task holds the upload there,
    // and the agent itself drops what it holds and confirms.
    let owner = start_owner(&w, "restarted.bin", 900_000);
    wait_for_progress(&w, "restarted.bin", 2);
    let id = status_of(&w, "restarted.bin")["id"]
        .as_str()
        .unwrap()
        .to_string();
    w.client(&["pause", &id[..8]]).assert_ok();
    owner.wait(Duration::from_secs(30)).assert_failed();
    wait_until(
        "the agent reads what was sent",
        Duration::from_secs(30),
        || pending_messages(&w.agent_inbox()) == 0,
    );
    w.stop_agent();
    w.start_agent();
    assert!(!w.staged_files().is_empty(), "the agent holds the partial");
    let run = cancel(&w, &id);
    assert!(
        run.stderr.contains("the agent confirmed"),
        "{}",
        run.describe()
    );
    staged_empty(&w, "cancelled after the agent restarted");

    // Queued behind another upload, never started: the agent never held
    // it, says so, and it never starts later.
    let front = w.random_file("front.bin", 900_000, 8);
    let queued = w.random_file("queued.bin", 300_000, 9);
    let owner = w.spawn_upload(&[&front, &queued], &["--parallel", "1"]);
    wait_for_progress(&w, "front.bin", 2);
    let queued_id = status_of(&w, "queued.bin")["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(status_of(&w, "queued.bin")["status"], "pending");
    let run = cancel(&w, &queued_id);
    assert!(
        run.stderr.contains("the agent confirmed"),
        "{}",
        run.describe()
    );
    let front_id = status_of(&w, "front.bin")["id"]
        .as_str()
        .unwrap()
        .to_string();
    cancel(&w, &front_id);
    owner.wait(Duration::from_secs(30)).assert_failed();
    staged_empty(&w, "queued, never started");
    let agent_status = pigeon(
        &w.agent_home,
        &["status", "--json"],
        &w.logs,
        Duration::from_secs(30),
    );
    assert!(
        !agent_status.stdout.contains(&queued_id[..16]),
        "the agent holds no record of it: {}",
        agent_status.stdout
    );
    assert_eq!(status_of(&w, "queued.bin")["status"], "cancelled");

    // Cancelled while the agent is away: kept, and said when it is back.
    let owner = start_owner(&w, "away.bin", 900_000);
    wait_for_progress(&w, "away.bin", 2);
    let id = status_of(&w, "away.bin")["id"]
        .as_str()
        .unwrap()
        .to_string();
    w.stop_agent();
    let run = w.client(&["cancel", &id[..8], "--timeout", "2"]);
    run.assert_ok();
    assert!(
        run.stderr.contains("did not confirm") && !run.stderr.contains("confirmed it holds"),
        "{}",
        run.describe()
    );
    owner.wait(Duration::from_secs(30)).assert_failed();
    assert!(!w.staged_files().is_empty(), "the agent still holds it");
    w.start_agent();
    // Any command that reaches the agent delivers it.
    w.client(&["ls"]).assert_ok();
    staged_empty(&w, "cancelled while away");
    let again = w.client(&["cancel", &id[..8]]);
    assert!(
        !again.success() && again.stderr.contains("the agent confirmed"),
        "{}",
        again.describe()
    );
}
