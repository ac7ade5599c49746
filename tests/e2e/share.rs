//! Issue 11, parts 5 and 6: folders per peer, sharing between peers, and
//! uploads that expire, end to end with the real binary (two clients and
//! an agent, each its own process and home, on one spool).
//!
//! - each peer works in `<root>/<peer>/`: the same name from two peers is
//!   two files, and neither can list, download or overwrite the other's;
//! - `pigeon share PATH --with PEER [--read-only] [--expires]`: the other
//!   peer finds it under `shared/<owner>/` in `ls`, downloads it, uploads
//!   into it unless read-only, sees nothing beside it; `pigeon shares`
//!   on both sides and on the agent; `pigeon unshare` ends it; every share,
//!   unshare and access is audited;
//! - `pigeon upload --expires`: the agent's cleanup removes the file when
//!   its time comes, unless another upload replaced it since;
//! - a root that held files before folders per peer keeps one namespace.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

#[track_caller]
fn owner(w: &World, args: &[&str]) -> Run {
    pigeon(&w.agent_home, args, &w.logs, Duration::from_secs(60))
}

fn said(run: &Run) -> String {
    format!("{}{}", run.stdout, run.stderr)
}

/// A second client, trusted by the agent as `phone` (and trusting it).
fn phone(w: &World) -> PathBuf {
    let (home, key) = w.stranger("phone-home");
    owner(w, &["keys", "trust", &key, "--name", "phone"]).assert_ok();
    home
}

/// The paths a listing of `dir` shows, as `home` asks it.
#[track_caller]
fn ls(w: &World, home: &Path, dir: &str) -> Vec<String> {
    let run = w.client_in(home, &["ls", dir, "--json"]);
    run.assert_ok();
    json_lines(&run.stdout)
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn each_peer_has_its_own_folder_and_sees_only_what_is_shared_with_it() {
    let _heavy = heavy_lock();
    let mut w = World::new("");
    let phone = phone(&w);
    w.start_agent();
    let report = w.file("report.txt", b"laptop's report\n");
    let secret = w.file("secret.txt", b"laptop's secret\n");
    w.upload(&[&report], &["--to", "logs/report.txt"])
        .assert_ok();
    w.upload(&[&secret], &[]).assert_ok();
    // The same name from the other peer is another file.
    let theirs = w.file("phone/report.txt", b"phone's own report\n");
    let up = w.client_in(
        &phone,
        &[
            "upload",
            theirs.to_str().unwrap(),
            "--to",
            "logs/report.txt",
        ],
    );
    up.assert_ok();
    let root = w.storage_root();
    assert_eq!(
        std::fs::read(root.join("laptop/logs/report.txt")).unwrap(),
        b"laptop's report\n"
    );
    assert_eq!(
        std::fs::read(root.join("phone/logs/report.txt")).unwrap(),
        b"phone's own report\n"
    );
    // Nothing of the laptop's is in the phone's view.
    assert_eq!(ls(&w, &phone, ""), ["logs"]);
    let out = w.work.join("got");
    let fetch = w.client_in(
        &phone,
        &["download", "secret.txt", "-o", out.to_str().unwrap()],
    );
    assert!(
        !fetch.success() && said(&fetch).contains("does not exist"),
        "{}",
        fetch.describe()
    );

    // Shared read-only: the phone finds it under shared/laptop/.
    let share = w.client(&["share", "logs", "--with", "phone", "--read-only"]);
    share.assert_ok();
    assert!(
        said(&share)
            .contains("shared logs with phone, read-only; phone sees it at shared/laptop/logs"),
        "{}",
        share.describe()
    );
    assert_eq!(ls(&w, &phone, ""), ["shared", "logs"]);
    assert_eq!(ls(&w, &phone, "shared"), ["shared/laptop"]);
    assert_eq!(ls(&w, &phone, "shared/laptop"), ["shared/laptop/logs"]);
    assert_eq!(
        ls(&w, &phone, "shared/laptop/logs"),
        ["shared/laptop/logs/report.txt"]
    );
    let got = w.work.join("shared-report.txt");
    w.client_in(
        &phone,
        &[
            "download",
            "shared/laptop/logs/report.txt",
            "-o",
            got.to_str().unwrap(),
        ],
    )
    .assert_ok();
    assert_same_file(&got, &root.join("laptop/logs/report.txt"));
    // Beside what was shared: nothing.
    for hidden in ["shared/laptop/secret.txt", "shared/phone/x"] {
        let fetch = w.client_in(&phone, &["download", hidden, "-o", out.to_str().unwrap()]);
        assert!(
            !fetch.success() && said(&fetch).contains("nothing is shared with you"),
            "{hidden}: {}",
            fetch.describe()
        );
    }
    // Read-only: no upload into it, no replacing what is there.
    let note = w.file("phone/note.txt", b"from the phone\n");
    let into = w.client_in(
        &phone,
        &[
            "upload",
            note.to_str().unwrap(),
            "--to",
            "shared/laptop/logs/note.txt",
        ],
    );
    assert!(
        !into.success() && said(&into).contains("laptop shared logs with you read-only"),
        "{}",
        into.describe()
    );
    assert!(!root.join("laptop/logs/note.txt").exists());

    // Both sides and the agent's owner see the share.
    for run in [
        w.client(&["shares"]),
        w.client_in(&phone, &["shares"]),
        owner(&w, &["shares"]),
    ] {
        run.assert_ok();
        assert!(
            run.stdout.contains("laptop/logs  with phone  read-only"),
            "{}",
            run.describe()
        );
    }

    // Shared again without --read-only: the phone may add to it.
    w.client(&["share", "logs", "--with", "phone"]).assert_ok();
    w.client_in(
        &phone,
        &[
            "upload",
            note.to_str().unwrap(),
            "--to",
            "shared/laptop/logs/note.txt",
        ],
    )
    .assert_ok();
    assert_eq!(
        std::fs::read(root.join("laptop/logs/note.txt")).unwrap(),
        b"from the phone\n"
    );
    assert!(w.client(&["ls", "logs"]).stdout.contains("logs/note.txt"));

    // What cannot be shared says why.
    for (args, why) in [
        (
            vec!["share", "nope.txt", "--with", "phone"],
            "nope.txt does not exist",
        ),
        (
            vec!["share", "logs", "--with", "tablet"],
            "trusts no peer named \"tablet\"",
        ),
        (
            vec!["share", "logs", "--with", "laptop"],
            "cannot share with itself",
        ),
    ] {
        let run = w.client(&args);
        assert!(
            !run.success() && said(&run).contains(why),
            "{args:?}: {}",
            run.describe()
        );
    }

    // Unshared: gone from the phone's view.
    let un = w.client(&["unshare", "logs"]);
    un.assert_ok();
    assert!(
        said(&un).contains("logs is no longer shared with phone"),
        "{}",
        un.describe()
    );
    assert_eq!(ls(&w, &phone, ""), ["logs"]);
    let fetch = w.client_in(
        &phone,
        &[
            "download",
            "shared/laptop/logs/report.txt",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(!fetch.success(), "{}", fetch.describe());

    // Every share, unshare and access through a share is in the audit log.
    let audit = owner(&w, &["audit", "--json"]);
    audit.assert_ok();
    let lines = json_lines(&audit.stdout);
    let has = |action: &str, outcome: &str| {
        lines
            .iter()
            .any(|r| r["action"] == action && r["outcome"].as_str().unwrap_or("").contains(outcome))
    };
    assert!(
        has("share", "ok: with phone, read-only"),
        "{}",
        audit.stdout
    );
    assert!(
        has("share", "refused: nope.txt does not exist"),
        "{}",
        audit.stdout
    );
    assert!(
        has("download", "accepted (shared by laptop)"),
        "{}",
        audit.stdout
    );
    assert!(
        has("upload", "accepted (shared by laptop)"),
        "{}",
        audit.stdout
    );
    assert!(
        has("unshare", "ok: no longer shared with phone"),
        "{}",
        audit.stdout
    );
    assert!(
        lines
            .iter()
            .any(|r| r["action"] == "upload" && r["path"] == "phone/logs/report.txt"),
        "the audit names the file under the root: {}",
        audit.stdout
    );
    owner(&w, &["audit", "verify"]).assert_ok();
}

#[test]
fn uploads_and_shares_that_expire_go_when_their_time_comes() {
    let _heavy = heavy_lock();
    let mut w = World::new("");
    let phone = phone(&w);
    w.start_agent();
    let brief = w.file("brief.txt", b"gone soon\n");
    let kept = w.file("kept.txt", b"first version\n");
    let forever = w.file("forever.txt", b"stays\n");
    // Expiries count from when the agent takes the upload or the share,
    // by its own clock.
    w.upload(&[&brief], &["--expires", "3s"]).assert_ok();
    w.upload(&[&kept], &["--expires", "3s"]).assert_ok();
    w.upload(&[&forever], &[]).assert_ok();
    // Replaced since by an upload without an expiry: not the first's to remove.
    std::fs::write(&kept, b"second version, kept\n").unwrap();
    w.upload(&[&kept], &["--overwrite"]).assert_ok();
    w.client(&["share", "forever.txt", "--with", "phone", "--expires", "8s"])
        .assert_ok();
    let shared = std::time::Instant::now();
    assert_eq!(
        ls(&w, &phone, "shared/laptop"),
        ["shared/laptop/forever.txt"]
    );
    std::thread::sleep(Duration::from_secs(9).saturating_sub(shared.elapsed()));
    // Past its time a share is gone at once, before any cleanup.
    let run = w.client_in(&phone, &["ls", "shared/laptop"]);
    assert!(!run.success(), "{}", run.describe());

    let dry = owner(&w, &["clean", "--dry-run"]);
    dry.assert_ok();
    assert!(
        dry.stdout
            .contains("laptop/brief.txt by laptop (uploaded with an expiry"),
        "{}",
        dry.describe()
    );
    assert!(!dry.stdout.contains("kept.txt"), "{}", dry.describe());
    assert!(
        w.storage().join("brief.txt").exists(),
        "a dry run removes nothing"
    );
    let clean = owner(&w, &["clean"]);
    clean.assert_ok();
    assert!(
        clean
            .stdout
            .contains("share of forever.txt by laptop with phone (expired)"),
        "{}",
        clean.describe()
    );
    assert!(!w.storage().join("brief.txt").exists());
    assert_eq!(
        std::fs::read(w.storage().join("kept.txt")).unwrap(),
        b"second version, kept\n"
    );
    assert!(w.storage().join("forever.txt").exists());
    let audit = owner(&w, &["audit", "--json"]);
    let lines = json_lines(&audit.stdout);
    assert!(
        lines
            .iter()
            .any(|r| r["action"] == "expire" && r["path"] == "laptop/brief.txt"),
        "{}",
        audit.stdout
    );
    assert!(
        lines.iter().any(
            |r| r["action"] == "upload" && r["outcome"].as_str().unwrap().contains("(expires ")
        ),
        "{}",
        audit.stdout
    );
}

#[test]
fn a_root_that_held_files_before_keeps_one_namespace() {
    let _heavy = heavy_lock();
    let mut w = World::new("");
    let old = w.storage_root().join("old.txt");
    std::fs::create_dir_all(w.storage_root()).unwrap();
    std::fs::write(&old, b"from before\n").unwrap();
    w.start_agent();
    assert_eq!(ls(&w, &w.client_home.clone(), ""), ["old.txt"]);
    assert!(
        w.agent_log().contains("holds files from before"),
        "{}",
        w.agent_log()
    );
    let f = w.file("new.txt", b"new\n");
    w.upload(&[&f], &[]).assert_ok();
    assert!(w.storage_root().join("new.txt").exists());
    let share = w.client(&["share", "new.txt", "--with", "laptop"]);
    assert!(
        !share.success() && said(&share).contains("keeps one namespace"),
        "{}",
        share.describe()
    );
    // Kept across restarts, and a new root beside it is per peer.
    w.stop_agent();
    w.start_agent();
    assert_eq!(ls(&w, &w.client_home.clone(), ""), ["new.txt", "old.txt"]);
}

/// Issue 25, item 2: a share withdrawn while an upload through it is under
/// way stops that upload: the peer is told why, nothing of it is placed or
/// kept in staging, and the refusal is audited after the unshare.
#[test]
fn an_unshare_stops_an_upload_under_way_through_it_and_nothing_is_placed() {
    let mut w = World::new("");
    let phone = phone(&w);
    w.start_agent();
    let first = w.file("first.txt", b"first\n");
    w.upload(&[&first], &["--to", "inbox/first.txt"])
        .assert_ok();
    w.client(&["share", "inbox", "--with", "phone"]).assert_ok();
    let big = w.random_file("phone/big.bin", 1_500_000, 25);
    let up = w.spawn_client_in(
        &phone,
        &[
            "upload",
            big.to_str().unwrap(),
            "--to",
            "shared/laptop/inbox/big.bin",
            "--bwlimit",
            "60k",
            "--json",
        ],
    );
    wait_until("the upload is under way", Duration::from_secs(30), || {
        !w.staged_files().is_empty()
    });
    w.client(&["unshare", "inbox"]).assert_ok();
    let run = up.wait(Duration::from_secs(60));
    assert!(!run.success(), "{}", run.describe());
    assert!(
        said(&run).contains("no longer"),
        "the peer is told why: {}",
        run.describe()
    );
    assert!(
        !w.storage_root().join("laptop/inbox/big.bin").exists(),
        "nothing placed"
    );
    wait_until("staging emptied", Duration::from_secs(10), || {
        w.staged_files().is_empty()
    });
    let audit = owner(&w, &["audit", "--json"]);
    audit.assert_ok();
    let lines = json_lines(&audit.stdout);
    let unshared = lines
        .iter()
        .position(|r| r["action"] == "unshare")
        .expect("the unshare is audited");
    assert!(
        lines[unshared..].iter().any(|r| r["action"] == "upload"
            && r["path"] == "laptop/inbox/big.bin"
            && r["outcome"].as_str().unwrap_or("").contains("no longer")),
        "the stopped upload is audited after the unshare: {}",
        audit.stdout
    );
}

/// A new key the owner trusts under a name in use takes the name's folder,
/// not the old key's transfers under way: those stop, are said to the old
/// key's holder, and leave nothing placed.
#[test]
fn a_key_trusted_under_a_name_in_use_does_not_inherit_an_upload_under_way() {
    let mut w = World::new("");
    let phone = phone(&w);
    w.start_agent();
    let big = w.random_file("phone/big.bin", 1_500_000, 26);
    let up = w.spawn_client_in(
        &phone,
        &[
            "upload",
            big.to_str().unwrap(),
            "--to",
            "big.bin",
            "--bwlimit",
            "60k",
            "--json",
        ],
    );
    wait_until("the upload is under way", Duration::from_secs(30), || {
        !w.staged_files().is_empty()
    });
    let (_, new_key) = w.stranger("new-phone-home");
    owner(&w, &["keys", "trust", &new_key, "--name", "phone"]).assert_ok();
    let run = up.wait(Duration::from_secs(60));
    assert!(!run.success(), "{}", run.describe());
    assert!(
        said(&run).contains("no longer phone's"),
        "the old key's holder is told why: {}",
        run.describe()
    );
    assert!(
        !w.storage_root().join("phone/big.bin").exists(),
        "nothing placed"
    );
    wait_until("staging emptied", Duration::from_secs(10), || {
        w.staged_files().is_empty()
    });
}
