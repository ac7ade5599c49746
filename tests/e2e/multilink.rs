//! Several channels at once, with the real binary: one transfer striped
//! over two spools of different paces, and a spool that dies mid-transfer
//! and comes back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::*;

/// A second spool in the world's folder.
fn second_spool(w: &World) -> PathBuf {
    let dir = w.dir.path().join("spool2");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Data bytes a party sent over a spool (its transcript).
fn sent_over(spool: &Path, key: &str) -> usize {
    read_transcript(
        &spool
            .join("transcript")
            .join(format!("{}.log", key_id(key))),
    )
    .iter()
    .map(Msg::len)
    .sum()
}

/// `pigeon upload FILE --transport URI... --json`.
fn upload_args(uris: &[String], file: &Path) -> Vec<String> {
    let mut args = vec!["upload".to_string(), file.display().to_string()];
    for u in uris {
        args.push("--transport".into());
        args.push(u.clone());
    }
    args.push("--json".into());
    args
}

fn upload_over(w: &World, uris: &[String], file: &Path) -> Run {
    let args = upload_args(uris, file);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    w.client(&refs)
}

fn spawn_upload_over(w: &World, uris: &[String], file: &Path) -> Proc {
    let args = upload_args(uris, file);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    w.spawn_client(&refs)
}

/// Wait for an upload's end; it completed, and the agent holds `name`
/// byte for byte as `file`. Returns its report.
fn completed(w: &World, upload: Proc, name: &str, file: &Path) -> serde_json::Value {
    let run = upload.wait(Duration::from_secs(120));
    run.assert_ok();
    let report = run.report();
    assert_eq!(report["status"], "completed", "{}", run.describe());
    assert_eq!(
        std::fs::read(w.storage().join(name)).unwrap(),
        std::fs::read(file).unwrap()
    );
    report
}

#[test]
fn one_transfer_runs_at_the_sum_of_two_links_paces() {
    let _heavy = heavy_lock();
    let mut w = World::new("");
    let spool2 = second_spool(&w);
    // 10 KB/s and 20 KB/s: 30 KB/s together.
    let (slow, fast) = (600_000u64, 1_200_000u64);
    let uris = vec![
        uri_for(
            &w.spool,
            &format!("profile=shipper&bytes_per_min={slow}&transcript=1"),
        ),
        uri_for(
            &spool2,
            &format!("profile=shipper&bytes_per_min={fast}&transcript=1"),
        ),
    ];
    w.start_agent_on(&uris);
    let size = 600 * 1024;
    let file = w.random_file("striped.bin", size, 1);
    let run = upload_over(&w, &uris, &file);
    run.assert_ok();
    let report = run.report();
    assert_eq!(report["status"], "completed", "{}", run.describe());
    assert_eq!(
        std::fs::read(w.storage().join("striped.bin")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    let on_slow = sent_over(&w.spool, &w.client_key);
    let on_fast = sent_over(&spool2, &w.client_key);
    let secs = report["elapsed_ms"].as_f64().unwrap() / 1000.0;
    let sum = (slow + fast) as f64 / 60.0;
    let achieved = (on_slow + on_fast) as f64 / secs;
    eprintln!(
        "striped: {on_slow} B on the slow link, {on_fast} B on the fast one, {secs:.1} s, {:.0}% of the summed pace",
        achieved / sum * 100.0
    );
    // Each link carried about its part of the pace (a third, two thirds).
    let share = on_slow as f64 / (on_slow + on_fast) as f64;
    assert!((0.2..0.5).contains(&share), "slow link's share {share:.2}");
    // Faster than the fast link alone could have carried it.
    let alone = size as f64 / (fast as f64 / 60.0);
    assert!(
        secs < alone * 0.85,
        "{secs:.1} s striped; the fast link alone takes {alone:.1} s"
    );
}

/// An agent on two text spools, ten messages a second each: chunks of one
/// message (3 KiB), so what a dead link costs is counted in small units.
fn two_text_spools() -> (World, Vec<String>) {
    let mut w = World::new("");
    let spool2 = second_spool(&w);
    let query = "profile=telegram-text&msgs_per_min=600&transcript=1";
    let uris = vec![uri_for(&w.spool, query), uri_for(&spool2, query)];
    w.start_agent_on(&uris);
    (w, uris)
}

/// Take a spool out (each inbox becomes a plain file: every send fails,
/// as when a provider is unreachable) or put it back.
fn set_spool(spool: &Path, keys: &[&str], up: bool) {
    for k in keys {
        let live = spool.join(key_id(k));
        let dead = spool.join(format!("{}.dead", key_id(k)));
        if up {
            std::fs::remove_file(&live).unwrap();
            std::fs::rename(&dead, &live).unwrap();
        } else {
            std::fs::rename(&live, &dead).unwrap();
            std::fs::write(&live, b"not an inbox").unwrap();
        }
    }
}

#[test]
fn a_link_that_dies_mid_transfer_costs_only_its_chunks_in_flight_and_is_used_again_when_back() {
    let _heavy = heavy_lock();
    let (w, uris) = two_text_spools();
    let chunks = 200;
    let file = w.random_file("fallback.bin", chunks * 3000, 2);
    let upload = spawn_upload_over(&w, &uris, &file);
    // Once both links carry data, the first one dies.
    wait_until("both links carry data", Duration::from_secs(30), || {
        sent_over(&w.spool, &w.client_key) > 60_000
            && sent_over(&second_spool(&w), &w.client_key) > 60_000
    });
    let keys = [w.client_key.clone(), w.agent_key.clone()];
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    set_spool(&w.spool, &keys, false);
    let died = Instant::now();
    let report = completed(&w, upload, "fallback.bin", &file);
    // Re-sent: at most what was in flight on the dead link (its queue of
    // two messages, the one on the wire) and the probes that found it
    // still dead, one message each.
    let resent = report["chunks_retransmitted"].as_u64().unwrap();
    let total = report["chunks_total"].as_u64().unwrap();
    eprintln!(
        "fallback: finished {:.1} s after the link died, {resent} of {total} chunks re-sent",
        died.elapsed().as_secs_f64()
    );
    assert!(resent <= 12, "{resent} of {total} chunks re-sent");
    // It comes back: the next transfer uses it again.
    set_spool(&w.spool, &keys, true);
    let before = sent_over(&w.spool, &w.client_key);
    let again = w.random_file("again.bin", 100 * 3000, 3);
    let run = upload_over(&w, &uris, &again);
    run.assert_ok();
    let after = sent_over(&w.spool, &w.client_key);
    assert!(
        after - before > 60_000,
        "the link that came back carried {} B",
        after - before
    );
}

/// Of a transcript: the highest rate over any span of 1 s or more (less
/// the one message a span may start with), the raw bytes in all (base64
/// carries three per four characters), and the seconds from first to last.
fn rates(transcript: &[Msg]) -> (f64, f64, f64) {
    let msgs: Vec<(f64, f64)> = transcript
        .iter()
        .map(|m| (m.micros as f64 / 1e6, (m.len() / 4 * 3) as f64))
        .collect();
    let biggest = msgs.iter().map(|m| m.1).fold(0.0, f64::max);
    let mut worst: f64 = 0.0;
    for i in 0..msgs.len() {
        let mut bytes = 0.0;
        for j in i + 1..msgs.len() {
            bytes += msgs[j].1;
            let span = msgs[j].0 - msgs[i].0;
            if span >= 1.0 {
                worst = worst.max((bytes - biggest) / span);
            }
        }
    }
    let total: f64 = msgs.iter().map(|m| m.1).sum();
    let secs = match (msgs.first(), msgs.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0.0,
    };
    (worst, total, secs)
}

#[test]
fn each_transport_keeps_its_own_bandwidth_limit_and_the_transfer_uses_both() {
    let _heavy = heavy_lock();
    let mut w = World::new("profile=telegram-text&msgs_per_min=6000&transcript=1");
    let spool2 = second_spool(&w);
    let limited = |spool: &Path, rate: &str| {
        format!(
            "{}&bwlimit={rate}",
            uri_for(
                spool,
                "profile=telegram-text&msgs_per_min=6000&transcript=1"
            )
        )
    };
    let uris = [limited(&w.spool, "10k"), limited(&spool2, "30k")];
    w.start_agent_on(&uris);
    let file = w.random_file("striped.bin", 400 * 1024, 8);
    let upload = spawn_upload_over(&w, &uris, &file);
    // Meanwhile `status --json` shows each link as the running engines
    // see it: the client's (asked of the upload's process) and the agent's.
    wait_until(
        "both sides show both links carrying",
        Duration::from_secs(30),
        || {
            let client = w.client(&["status", "--json"]).links();
            let agent = pigeon(
                &w.agent_home,
                &["status", "--json"],
                &w.logs,
                Duration::from_secs(30),
            )
            .links();
            client.len() == 2
                && agent.len() == 2
                && client.iter().all(|l| {
                    l["state"] == "up"
                        && l["profile"] == "telegram-text"
                        && l["bytes_per_sec"].as_u64() > Some(0)
                })
        },
    );
    let report = completed(&w, upload, "striped.bin", &file);
    let mut sum = 0.0;
    for (spool, rate) in [(&w.spool, 10.0 * 1024.0), (&spool2, 30.0 * 1024.0)] {
        let transcript = read_transcript(
            &spool
                .join("transcript")
                .join(format!("{}.log", key_id(&w.client_key))),
        );
        let (worst, total, secs) = rates(&transcript);
        eprintln!(
            "bwlimit {rate} B/s: {total:.0} B in {secs:.1} s, at most {worst:.0} B/s over any span of 1 s or more"
        );
        assert!(
            worst <= rate * 1.01,
            "{worst:.0} B/s over a limit of {rate} B/s"
        );
        sum += total;
    }
    // Both carried it: the transfer took about as long as the two limits
    // summed allow, not the faster's alone.
    let secs = report["elapsed_ms"].as_f64().unwrap() / 1000.0;
    assert!(
        secs < sum / (30.0 * 1024.0) * 0.9,
        "{secs:.1} s for {sum:.0} B: no faster than the 30k link alone"
    );
}

#[test]
fn a_bandwidth_limit_holds_over_every_span_of_the_transcript() {
    let _heavy = heavy_lock();
    let mut w = World::new("profile=telegram-text&msgs_per_min=6000&transcript=1");
    w.start_agent();
    let file = w.random_file("limited.bin", 200 * 1024, 4);
    let run = w.upload(&[&file], &["--bwlimit", "20k"]);
    run.assert_ok();
    assert_eq!(run.report()["status"], "completed", "{}", run.describe());
    let rate = 20.0 * 1024.0;
    let (worst, total, secs) = rates(&w.client_transcript());
    eprintln!(
        "bwlimit 20k: {:.0} B/s on average, at most {worst:.0} B/s over any span of 1 s or more",
        total / secs
    );
    assert!(
        worst <= rate * 1.01,
        "{worst:.0} B/s over a limit of {rate} B/s"
    );
    assert!(
        total / secs > rate * 0.7,
        "the limit is used: {:.0} B/s",
        total / secs
    );
}

/// Issue 28, item 5: the DOWN part of a client's `--bwlimit UP:DOWN`, and
/// of a link's `bwlimit=UP:DOWN`, is asked of the agent and kept: the
/// download takes at least its size over the rate (less the first chunk,
/// which leaves at once), while the same download unasked is faster.
#[test]
fn a_download_rate_is_asked_of_the_agent_and_kept() {
    let _heavy = heavy_lock();
    // 64 KiB chunks (a text link), about 300 KB/s unlimited.
    let query = "profile=telegram-text&msgs_per_min=6000";
    let mut w = World::new(query);
    let size = 320 * 1024;
    let data = std::fs::read(w.random_file("src.bin", size, 28)).unwrap();
    w.put_remote("paced.bin", &data);
    w.start_agent();
    let rate = 32.0 * 1024.0;
    let least = (size as f64 - 64.0 * 1024.0) / rate;
    let timed = |name: &str, extra: &[&str]| {
        let out = w.work.join(name);
        let started = Instant::now();
        let run = w.download("paced.bin", &out, extra);
        run.assert_ok();
        assert_eq!(run.report()["status"], "completed", "{}", run.describe());
        assert_eq!(std::fs::read(&out).unwrap(), data, "{name} is the file");
        started.elapsed().as_secs_f64()
    };
    let free = timed("free.bin", &[]);
    let asked = timed("asked.bin", &["--bwlimit", "off:32k"]);
    let linked = format!("{}&bwlimit=off:32k", w.uri());
    let on_link = timed("on_link.bin", &["--transport", &linked]);
    eprintln!("{size} B: {free:.1} s unlimited, {asked:.1} s at --bwlimit off:32k, {on_link:.1} s at bwlimit=off:32k on the link (at least {least:.1} s)");
    assert!(
        asked >= least,
        "--bwlimit off:32k: {asked:.1} s, under {least:.1} s"
    );
    assert!(
        on_link >= least,
        "bwlimit=off:32k: {on_link:.1} s, under {least:.1} s"
    );
    assert!(
        free < least * 0.6,
        "unlimited: {free:.1} s, not faster than {least:.1} s"
    );
}

/// An agent asks nobody for a rate: a separate DOWN part there is refused
/// with what to do instead, never ignored.
#[test]
fn a_download_rate_given_to_the_agent_is_refused_with_what_to_do() {
    let w = World::new("");
    let uri = w.uri();
    let run = pigeon(
        &w.agent_home,
        &["agent", "--transport", &uri, "--bwlimit", "1M:512k"],
        &w.logs,
        Duration::from_secs(30),
    );
    run.assert_failed();
    let err = &run.stderr;
    assert!(
        err.contains("download rate") && err.contains("client"),
        "{err}"
    );
    let file = w.random_file("x.bin", 10, 5);
    let run = w.upload(&[&file], &["--bwlimit", "12M/s"]);
    run.assert_failed();
    assert!(run.stderr.contains("no \"/s\""), "{}", run.stderr);
}

#[test]
fn a_flapping_link_never_stops_the_transfer_and_is_used_between_its_outages() {
    let _heavy = heavy_lock();
    let (w, uris) = two_text_spools();
    let file = w.random_file("flap.bin", 300 * 3000, 6);
    let mut upload = spawn_upload_over(&w, &uris, &file);
    let keys = [w.client_key.clone(), w.agent_key.clone()];
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    // Up 4 s, down 3 s, until the upload ends.
    let mut carried_while_up = 0;
    let mut outages = 0;
    std::thread::sleep(Duration::from_secs(2));
    while !upload.exited() && outages < 8 {
        set_spool(&w.spool, &keys, false);
        outages += 1;
        std::thread::sleep(Duration::from_secs(3));
        set_spool(&w.spool, &keys, true);
        let before = sent_over(&w.spool, &w.client_key);
        std::thread::sleep(Duration::from_secs(4));
        carried_while_up += sent_over(&w.spool, &w.client_key) - before;
    }
    let report = completed(&w, upload, "flap.bin", &file);
    let resent = report["chunks_retransmitted"].as_u64().unwrap();
    eprintln!(
        "flapping: {outages} outages, {carried_while_up} B on the flapping link between them, {resent} of {} chunks re-sent",
        report["chunks_total"]
    );
    assert!(
        outages >= 2,
        "the upload outran the test: {outages} outages"
    );
    assert!(
        carried_while_up > 10_000,
        "the link that came back was used again: {carried_while_up} B"
    );
    assert!(resent <= 12 * outages, "{resent} chunks re-sent");
}
