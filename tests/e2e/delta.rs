//! Issue 31: an upload to a path where the agent holds a version this
//! client sent sends only the differences, rebuilt byte-exact on the agent;
//! and when the agent's copy is not that version any more (changed there,
//! or never this peer's), the whole file goes instead.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

/// A paced local spool (1 MB/s) that keeps a transcript of what each side
/// sent.
const PACED: &str = "profile=shipper&bwlimit=1M&transcript=1";

/// Bytes the client has sent so far, as the channel counts them.
fn client_sent(w: &World) -> usize {
    w.client_transcript().iter().map(Msg::len).sum()
}

/// `base` with `insert` put at `at` and the 64 bytes at `edit` replaced.
fn edited(base: &[u8], at: usize, insert: &[u8], edit: usize) -> Vec<u8> {
    let mut new = base.to_vec();
    new.splice(at..at, insert.iter().copied());
    for b in &mut new[edit..edit + 64] {
        *b = b.wrapping_add(1);
    }
    new
}

fn delta_of(report: &Value) -> Option<u64> {
    report["delta"].as_u64()
}

#[test]
fn an_upload_again_sends_only_the_differences_and_the_agent_rebuilds_it_byte_exact() {
    let mut w = World::new(PACED);
    w.start_agent();
    let size = 4 * 1024 * 1024;
    let base = random_bytes(size, 31);
    let file = w.file("app.bin", &base);
    w.upload(&[&file], &[]).assert_ok();
    let before = client_sent(&w);

    // A small change: 300 bytes inserted, 64 edited further on.
    let new = edited(&base, 1_000_000, &random_bytes(300, 32), 3_000_000);
    std::fs::write(&file, &new).unwrap();
    let run = w.upload(&[&file], &["--overwrite"]);
    run.assert_ok();
    let report = run.report();
    let sent = client_sent(&w) - before;
    assert_same_file(&file, &w.storage().join("app.bin"));
    assert_eq!(report["size"].as_u64(), Some(new.len() as u64), "{report}");
    assert_eq!(
        report["sha256"].as_str(),
        Some(sha256_hex(&new).as_str()),
        "the report names the file's hash: {report}"
    );
    let delta = delta_of(&report).expect("it went as a delta");
    assert!(
        delta < 64 * 1024,
        "a delta of {delta} bytes for 364 changed"
    );
    assert!(
        sent < 256 * 1024,
        "{sent} bytes on the wire for a change of 364 in {size}"
    );

    // And again on top of the version just sent: its signature was kept.
    let third = edited(&new, 2_000_000, b"a third version", 100);
    std::fs::write(&file, &third).unwrap();
    let run = w.upload(&[&file], &["--overwrite"]);
    run.assert_ok();
    assert!(delta_of(&run.report()).is_some_and(|d| d < 64 * 1024));
    assert_same_file(&file, &w.storage().join("app.bin"));

    // `--no-delta`: the whole file, whatever the agent holds.
    let fourth = edited(&third, 10, b"!", 200);
    std::fs::write(&file, &fourth).unwrap();
    let run = w.upload(&[&file], &["--overwrite", "--no-delta"]);
    run.assert_ok();
    assert_eq!(delta_of(&run.report()), None);
    assert_same_file(&file, &w.storage().join("app.bin"));
}

#[test]
fn the_whole_file_goes_when_the_agents_copy_changed_since_it_was_sent() {
    let mut w = World::new(PACED);
    w.start_agent();
    let base = random_bytes(1024 * 1024, 41);
    let file = w.file("data.bin", &base);
    w.upload(&[&file], &[]).assert_ok();
    // Someone on the phone changed the agent's copy.
    w.put_remote("data.bin", &random_bytes(1024 * 1024, 42));
    let new = edited(&base, 5000, b"local change", 9000);
    std::fs::write(&file, &new).unwrap();
    let run = w.upload(&[&file], &["--overwrite"]);
    run.assert_ok();
    assert_eq!(delta_of(&run.report()), None, "{}", run.report());
    assert_same_file(&file, &w.storage().join("data.bin"));
    assert!(
        run.stderr
            .contains("changed on the agent since it was sent; sending the whole file"),
        "the user is told why: {}",
        run.stderr
    );
}

/// A base is only ever a file in the uploading peer's own view: a client
/// that believes the agent holds some content at a path (here: another
/// peer's, whose signature it was handed) cannot make the agent rebuild
/// from, or say anything of, another peer's file.
#[test]
fn another_peers_file_is_never_a_base() {
    let mut w = World::new(PACED);
    let (other_home, other_key) = w.stranger("other-home");
    pigeon(
        &w.agent_home,
        &[
            "keys",
            "trust",
            &other_key,
            "--name",
            "other",
            "--allow",
            "upload,download,list",
        ],
        &w.logs,
        Duration::from_secs(30),
    )
    .assert_ok();
    w.start_agent();
    let secret = random_bytes(1024 * 1024, 51);
    let file = w.file("x.bin", &secret);
    w.upload(&[&file], &[]).assert_ok();
    // The other client gets this one's signatures: it now believes the
    // agent holds `x.bin` with that content for it too.
    let versions = |home: &Path| home.join("db").join("versions");
    std::fs::create_dir_all(versions(&other_home)).unwrap();
    for f in list_files(&versions(&w.client_home)) {
        std::fs::copy(&f, versions(&other_home).join(f.file_name().unwrap())).unwrap();
    }
    let guess = edited(&secret, 100, b"nearly the same", 5000);
    let theirs = w.file("theirs/x.bin", &guess);
    let run = w.client_in(
        &other_home,
        &["upload", theirs.to_str().unwrap(), "--overwrite", "--json"],
    );
    run.assert_ok();
    assert_eq!(
        delta_of(&run.report()),
        None,
        "the agent took laptop's file as other's base: {}",
        run.report()
    );
    assert_same_file(&theirs, &w.storage_root().join("other").join("x.bin"));
    assert_eq!(std::fs::read(w.storage().join("x.bin")).unwrap(), secret);
}

/// Killed on both sides in the middle of a delta upload: the same command
/// again resumes it (the delta is the one made before its first seal) and
/// the agent rebuilds the file byte-exact.
#[test]
fn a_delta_upload_killed_on_both_sides_resumes_and_rebuilds_byte_exact() {
    let mut w = World::new(PACED);
    w.start_agent();
    let base = random_bytes(6 * 1024 * 1024, 61);
    let file = w.file("model.bin", &base);
    w.upload(&[&file], &[]).assert_ok();
    let new = edited(&base, 3_000_000, &random_bytes(3 * 1024 * 1024, 62), 100);
    std::fs::write(&file, &new).unwrap();
    let before = client_sent(&w);
    let mut first = w.spawn_upload(&[&file], &["--overwrite"]);
    wait_until(
        "a third of the delta on the wire",
        Duration::from_secs(60),
        || client_sent(&w) > before + 1024 * 1024,
    );
    first.kill9();
    w.kill_agent();
    w.start_agent();
    let run = w.upload(&[&file], &["--overwrite"]);
    run.assert_ok();
    let report = run.report();
    assert!(
        delta_of(&report).is_some_and(|d| d < 4 * 1024 * 1024),
        "{report}"
    );
    assert_eq!(
        report["resumed"], true,
        "it went on from where it was: {report}"
    );
    assert_same_file(&file, &w.storage().join("model.bin"));
    assert!(
        w.staged_files().is_empty(),
        "nothing left in staging: {:?}",
        w.staged_files()
    );
}

/// Bytes the agent has sent so far, as the channel counts them.
fn agent_sent(w: &World) -> usize {
    w.agent_transcript().iter().map(Msg::len).sum()
}

/// A log pulled again after it grew costs about what it grew by; the
/// local copy is replaced byte-exact. `--no-delta` pulls it whole.
#[test]
fn a_download_again_after_the_file_grew_costs_about_what_it_grew_by() {
    let mut w = World::new(PACED);
    w.start_agent();
    let mut log = random_bytes(4 * 1024 * 1024, 71);
    w.put_remote("app.log", &log);
    let local = w.work.join("app.log");
    w.download("app.log", &local, &[]).assert_ok();
    assert_eq!(std::fs::read(&local).unwrap(), log);

    log.extend_from_slice(&random_bytes(200 * 1024, 72));
    w.put_remote("app.log", &log);
    let before = agent_sent(&w);
    let run = w.download("app.log", &local, &["--overwrite"]);
    run.assert_ok();
    let sent = agent_sent(&w) - before;
    assert_eq!(std::fs::read(&local).unwrap(), log, "rebuilt byte-exact");
    let report = run.report();
    assert_eq!(report["size"].as_u64(), Some(log.len() as u64), "{report}");
    assert_eq!(report["sha256"].as_str(), Some(sha256_hex(&log).as_str()));
    let delta = delta_of(&report).expect("it came as a delta");
    assert!(
        delta < 260 * 1024,
        "a delta of {delta} for 200 KiB appended"
    );
    assert!(
        sent < 320 * 1024,
        "{sent} bytes on the wire for 200 KiB appended to 4 MiB"
    );

    log.extend_from_slice(b"one more line\n");
    w.put_remote("app.log", &log);
    let run = w.download("app.log", &local, &["--overwrite", "--no-delta"]);
    run.assert_ok();
    assert_eq!(delta_of(&run.report()), None);
    assert_eq!(std::fs::read(&local).unwrap(), log);
}

/// Killed on both sides in the middle of a delta download: the same
/// command again resumes it and the local copy is rebuilt byte-exact
/// (until then it stays as it was).
#[test]
fn a_delta_download_killed_on_both_sides_resumes_and_rebuilds_byte_exact() {
    let mut w = World::new(PACED);
    w.start_agent();
    let old = random_bytes(6 * 1024 * 1024, 81);
    w.put_remote("model.bin", &old);
    let local = w.work.join("model.bin");
    w.download("model.bin", &local, &[]).assert_ok();
    let new = edited(&old, 2_000_000, &random_bytes(3 * 1024 * 1024, 82), 100);
    w.put_remote("model.bin", &new);
    let before = agent_sent(&w);
    let mut first = w.spawn_download("model.bin", &local, &["--overwrite"]);
    wait_until(
        "a third of the delta on the wire",
        Duration::from_secs(60),
        || agent_sent(&w) > before + 1024 * 1024,
    );
    first.kill9();
    w.kill_agent();
    assert_eq!(
        std::fs::read(&local).unwrap(),
        old,
        "the old copy is intact"
    );
    w.start_agent();
    let run = w.download("model.bin", &local, &["--overwrite"]);
    run.assert_ok();
    let report = run.report();
    assert!(
        delta_of(&report).is_some_and(|d| d < 4 * 1024 * 1024),
        "{report}"
    );
    assert_eq!(report["resumed"], true, "{report}");
    assert_eq!(std::fs::read(&local).unwrap(), new);
}

/// The local copy changed while its delta came: what the delta rebuilds
/// from it is not the agent's file, so nothing is kept of it and the whole
/// file comes instead, by itself.
#[test]
fn a_local_copy_changed_under_a_delta_download_gets_the_whole_file() {
    let mut w = World::new(PACED);
    w.start_agent();
    let old = random_bytes(4 * 1024 * 1024, 91);
    w.put_remote("data.bin", &old);
    let local = w.work.join("data.bin");
    w.download("data.bin", &local, &[]).assert_ok();
    let new = edited(&old, 1_000_000, &random_bytes(2 * 1024 * 1024, 92), 50);
    w.put_remote("data.bin", &new);
    let before = agent_sent(&w);
    let download = w.spawn_download("data.bin", &local, &["--overwrite"]);
    wait_until(
        "part of the delta on the wire",
        Duration::from_secs(60),
        || agent_sent(&w) > before + 512 * 1024,
    );
    // Someone edits the local copy meanwhile, in a part the delta copies.
    let mut changed = old.clone();
    changed[3_000_000..3_000_010].copy_from_slice(b"edited!!!!");
    std::fs::write(&local, &changed).unwrap();
    let run = download.wait(Duration::from_secs(120));
    run.assert_ok();
    assert_eq!(
        std::fs::read(&local).unwrap(),
        new,
        "the agent's file, whole"
    );
    assert!(
        run.stderr.contains("downloading the whole file"),
        "the user is told why: {}",
        run.stderr
    );
}

/// A program rebuilt after a one-line change: the code after it moved, so
/// its addresses all shifted and no block is the same; the client kept a
/// copy of the program it sent, and the delta against it carries nearly
/// equal bytes as small differences (bsdiff's matching), not literals.
#[test]
fn a_rebuilt_program_goes_as_small_differences_from_the_copy_kept() {
    let mut w = World::with_permissions(PACED, "upload,download,list,exec");
    w.start_agent();
    // Code as a compiler lays it out: runs of instructions, one in four a
    // call whose 4-byte target is an address after the change (and moves).
    let program = |shift: u32, extra: &[u8]| {
        let mut p = b"\x7fELF\x02\x01\x01\0".to_vec();
        let mut x = 7u64;
        for i in 0..120_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i == 60_000 {
                p.extend_from_slice(extra);
            }
            p.extend_from_slice(&x.to_le_bytes()[..6]);
            if i % 4 == 0 {
                let target = i * 16 + 0x1000 + if i >= 60_000 { shift } else { 0 };
                p.push(0xe8);
                p.extend_from_slice(&target.to_le_bytes());
            }
        }
        p
    };
    let file = w.file("server", &program(0, b""));
    w.upload(&[&file], &[]).assert_ok();
    let new = program(48, b"one more line of code, compiled");
    std::fs::write(&file, &new).unwrap();
    let before = client_sent(&w);
    let run = w.upload(&[&file], &["--overwrite"]);
    run.assert_ok();
    let sent = client_sent(&w) - before;
    assert_same_file(&file, &w.storage().join("server"));
    assert!(delta_of(&run.report()).is_some(), "{}", run.report());
    assert!(
        sent < new.len() / 10,
        "{sent} bytes on the wire for a program of {} with its code moved",
        new.len()
    );
}

/// A file this client never sent (the phone made it, or another machine
/// uploaded it): one exchange asks the agent what it holds there, and only
/// the differences go; where it holds nothing, the whole file goes.
#[test]
fn an_upload_over_a_file_this_client_never_sent_asks_once_and_sends_the_differences() {
    let mut w = World::new(PACED);
    w.start_agent();
    let mut log = random_bytes(3 * 1024 * 1024, 101);
    w.put_remote("made-there.log", &log);
    log.extend_from_slice(&random_bytes(100 * 1024, 102));
    let file = w.file("made-there.log", &log);
    let before = client_sent(&w);
    let run = w.upload(&[&file], &["--overwrite"]);
    run.assert_ok();
    let sent = client_sent(&w) - before;
    assert_same_file(&file, &w.storage().join("made-there.log"));
    assert!(
        delta_of(&run.report()).is_some_and(|d| d < 200 * 1024),
        "{}",
        run.report()
    );
    assert!(
        sent < 300 * 1024,
        "{sent} bytes on the wire for 100 KiB appended"
    );

    // Nothing there: the answer says so and the whole file goes.
    let fresh = w.random_file("fresh.bin", 512 * 1024, 103);
    let run = w.upload(&[&fresh], &["--overwrite"]);
    run.assert_ok();
    assert_eq!(delta_of(&run.report()), None);
    assert_same_file(&fresh, &w.storage().join("fresh.bin"));
}

/// A signature says much of a file: a peer that may replace a file but not
/// read it is told nothing of it, and sends the whole file.
#[test]
fn a_peer_that_may_not_read_a_file_gets_no_signature_of_it() {
    let mut w = World::with_permissions(PACED, "upload,list");
    w.start_agent();
    let mut data = random_bytes(1024 * 1024, 111);
    w.put_remote("secret.bin", &data);
    data.extend_from_slice(b"appended");
    let file = w.file("secret.bin", &data);
    let run = w.upload(&[&file], &["--overwrite"]);
    run.assert_ok();
    assert_eq!(delta_of(&run.report()), None, "{}", run.report());
    assert_same_file(&file, &w.storage().join("secret.bin"));
}

/// Over an unpaced link (a local pipe) the whole file goes faster than a
/// delta is made: the client does not read its file a second time to keep
/// a signature of it.
#[test]
fn over_an_unpaced_link_no_signature_is_kept() {
    let mut w = World::new("profile=unlimited");
    w.start_agent();
    let file = w.random_file("fast.bin", 512 * 1024, 121);
    w.upload(&[&file], &[]).assert_ok();
    let kept = list_files(&w.client_home.join("db").join("versions"));
    assert!(kept.is_empty(), "{kept:?}");
}
