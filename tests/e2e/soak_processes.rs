//! The soak with real processes (issue 8): `scripts/soak --kill9 N` and
//! `scripts/soak --load N` run these; `cargo test` skips them (ignored).
//!
//! - **kill9**: N rounds, each a fresh agent and client on a paced spool,
//!   an upload of a random size, and a `kill -9` at a random moment of the
//!   client, the agent, or both. Then: every chunk the client had recorded
//!   as acknowledged is in the agent's store (read with `pigeon status`),
//!   and a re-run sends exactly the chunks the agent lacks: a chunk the
//!   agent held when the re-run began and that the re-run sent anyway is
//!   "re-sent beyond those in flight" (must be 0). The file ends byte-exact
//!   and staging clean.
//! - **load**: one agent, N clients (own homes, own keys, all trusted),
//!   each queuing 10 uploads at once over a spool with faults; all must
//!   complete byte-exact. Prints the agent's peak memory and CPU, and each
//!   client's batch time against its ideal (its bytes at its link's pace).
//!
//! Environment: `PIGEON_SOAK_ROUNDS` (kill9 rounds, or load clients),
//! `PIGEON_SOAK_JOBS` (kill9 rounds at once), `PIGEON_SOAK_SEED`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::*;
use rand::{Rng, SeedableRng};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `pigeon status --json` of `home`: the transfer's stored chunk count (the
/// store itself when no process owns the home, else its live mirror).
fn held_chunks(home: &Path, logs: &Path) -> u64 {
    let run = pigeon(home, &["status", "--json"], logs, Duration::from_secs(30));
    run.assert_ok();
    run.reports()
        .iter()
        .map(|r| num(r, "chunks_sent"))
        .max()
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// kill9

/// Who is killed in a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victim {
    Client,
    Agent,
    Both,
}

#[derive(Default)]
struct Tally {
    rounds: AtomicUsize,
    kills_client: AtomicUsize,
    kills_agent: AtomicUsize,
    kills_both: AtomicUsize,
    finished_first: AtomicUsize,
    chunks: AtomicU64,
    held_at_rerun: AtomicU64,
    resent_beyond: AtomicU64,
    acked_checked: AtomicU64,
    bytes: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// One round; Err says what broke.
fn kill9_round(seed: u64, tally: &Tally) -> Result<(), String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // One chunk of ~3 KB per message, 100 messages a second: a transfer
    // of a few seconds, long enough to be killed in the middle.
    let mut w = World::new("profile=telegram-text&msgs_per_min=6000");
    w.start_agent();
    let size = rng.gen_range(16_000..1_200_000);
    let name = format!("kill9-{seed}.bin");
    let f = w.random_file(&name, size, seed);
    tally.bytes.fetch_add(size as u64, Ordering::Relaxed);
    let victim = match rng.gen_range(0..3) {
        0 => Victim::Client,
        1 => Victim::Agent,
        _ => Victim::Both,
    };
    let mut client = w.spawn_upload(&[&f], &[]);
    // From the start (handshake included) to about the transfer's end.
    let expected = Duration::from_millis(300 + size as u64 / 300);
    std::thread::sleep(Duration::from_millis(
        rng.gen_range(50..expected.as_millis() as u64),
    ));
    if client.exited() {
        tally.finished_first.fetch_add(1, Ordering::Relaxed);
        return finish_round(&w, client, &f, &name);
    }
    let rerun = match victim {
        Victim::Client => {
            tally.kills_client.fetch_add(1, Ordering::Relaxed);
            client.kill9();
            // Let the agent take in what was delivered and make it durable
            // (its acknowledgement batch, then its mirror, once a second).
            wait_until("the agent reads its inbox", Duration::from_secs(60), || {
                pending_messages(&w.agent_inbox()) == 0
            });
            std::thread::sleep(Duration::from_millis(2500));
            check_acked_kept(&w, tally)?;
            true
        }
        Victim::Agent => {
            tally.kills_agent.fetch_add(1, Ordering::Relaxed);
            // The client's mirror may be a second old: what it shows
            // acknowledged is at most what it knows.
            let acked = held_chunks(&w.client_home, &w.logs);
            w.kill_agent();
            let held = held_chunks(&w.agent_home, &w.logs);
            tally.acked_checked.fetch_add(acked, Ordering::Relaxed);
            if held < acked {
                return Err(format!(
                    "the client had {acked} chunks acknowledged, the killed agent's store holds {held}"
                ));
            }
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..2000)));
            w.start_agent();
            false
        }
        Victim::Both => {
            tally.kills_both.fetch_add(1, Ordering::Relaxed);
            client.kill9();
            w.kill_agent();
            check_acked_kept(&w, tally)?;
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..1000)));
            w.start_agent();
            true
        }
    };
    if !rerun {
        return finish_round(&w, client, &f, &name);
    }
    let held = held_chunks(&w.agent_home, &w.logs);
    let run = w.upload(&[&f], &[]);
    if !run.success() {
        return Err(format!("the re-run failed\n{}", run.describe()));
    }
    let r = run.report();
    let total = num(&r, "chunks_total");
    let sent = num(&r, "chunks_sent");
    tally.chunks.fetch_add(total, Ordering::Relaxed);
    tally.held_at_rerun.fetch_add(held, Ordering::Relaxed);
    // Distinct chunks this run sent, against those the agent lacked.
    let beyond = (sent + held).saturating_sub(total);
    tally.resent_beyond.fetch_add(beyond, Ordering::Relaxed);
    if beyond > 0 {
        return Err(format!(
            "the re-run sent {sent} of {total} chunks though the agent held {held}: {beyond} re-sent beyond those in flight"
        ));
    }
    check_file(&w, &f, &name)
}

/// Both homes are free (or the agent's mirror is settled): everything the
/// client recorded as acknowledged must be held by the agent.
fn check_acked_kept(w: &World, tally: &Tally) -> Result<(), String> {
    let acked = held_chunks(&w.client_home, &w.logs);
    let held = held_chunks(&w.agent_home, &w.logs);
    tally.acked_checked.fetch_add(acked, Ordering::Relaxed);
    if held < acked {
        return Err(format!(
            "the client recorded {acked} chunks acknowledged, the agent holds {held}"
        ));
    }
    Ok(())
}

fn finish_round(w: &World, client: Proc, f: &Path, name: &str) -> Result<(), String> {
    let run = client.wait(CLIENT_TIMEOUT);
    if !run.success() {
        return Err(format!("the upload failed\n{}", run.describe()));
    }
    check_file(w, f, name)
}

fn check_file(w: &World, f: &Path, name: &str) -> Result<(), String> {
    let stored = w.storage().join(name);
    if sha256_file(f) != sha256_file(&stored) {
        return Err(format!("{name} is not byte-exact on the agent"));
    }
    if !w.staged_files().is_empty() {
        return Err(format!("staging is not clean: {:?}", w.staged_files()));
    }
    Ok(())
}

#[test]
#[ignore = "the process soak: scripts/soak --kill9 N"]
fn kill9() {
    let rounds = env_u64("PIGEON_SOAK_ROUNDS", 20);
    let jobs = env_u64("PIGEON_SOAK_JOBS", 3).max(1);
    let base = env_u64("PIGEON_SOAK_SEED", 0);
    let tally = Tally::default();
    let next = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= rounds {
                    return;
                }
                let seed = base + i;
                let outcome = std::panic::catch_unwind(|| kill9_round(seed, &tally))
                    .unwrap_or_else(|_| Err("the round panicked".into()));
                tally.rounds.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = outcome {
                    eprintln!("FAILED round {seed}: {e}");
                    tally.failures.lock().unwrap().push(format!("{seed}"));
                }
                let done = tally.rounds.load(Ordering::Relaxed);
                if done % 10 == 0 {
                    eprintln!("{done} rounds, {:.0} s", started.elapsed().as_secs_f64());
                }
            });
        }
    });
    let l = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let failures = tally.failures.lock().unwrap().clone();
    println!("rounds            {}", l(&tally.rounds));
    println!(
        "kill -9           client {} · agent {} · both {} · finished before the kill {}",
        l(&tally.kills_client),
        l(&tally.kills_agent),
        l(&tally.kills_both),
        l(&tally.finished_first)
    );
    println!("bytes             {}", g(&tally.bytes));
    println!(
        "acked checked     {} chunks recorded acknowledged before a kill, found in the agent's store",
        g(&tally.acked_checked)
    );
    println!(
        "re-runs           {} chunks, {} held by the agent when they began",
        g(&tally.chunks),
        g(&tally.held_at_rerun)
    );
    println!("re-sent beyond in flight  {}", g(&tally.resent_beyond));
    println!("real time         {:.0} s", started.elapsed().as_secs_f64());
    println!("failures          {}", failures.len());
    if !failures.is_empty() {
        println!("failed rounds     {}", failures.join(" "));
    }
    assert!(failures.is_empty());
}

// ---------------------------------------------------------------------------
// load

/// Each client's link: 100 KB/s, with faults.
const LOAD_QUERY: &str =
    "profile=unlimited&bytes_per_min=6000000&loss=0.02&dup=0.01&reorder=0.05&corrupt=0.005";
const LOAD_RATE: f64 = 100_000.0;
const FILES_PER_CLIENT: usize = 10;

/// CPU time (user + system) of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[test]
#[ignore = "the process soak: scripts/soak --load N"]
fn load() {
    let clients = env_u64("PIGEON_SOAK_ROUNDS", 10) as usize;
    let seed = env_u64("PIGEON_SOAK_SEED", 0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut w = World::new(LOAD_QUERY);
    // Every client gets a home and a key the agent trusts.
    let mut homes: Vec<PathBuf> = vec![w.client_home.clone()];
    for c in 1..clients {
        let (home, key) = w.stranger(&format!("client-{c:02}"));
        pigeon(
            &w.agent_home,
            &[
                "keys",
                "trust",
                &key,
                "--name",
                &format!("c{c:02}"),
                "--allow",
                "upload",
            ],
            &w.logs,
            Duration::from_secs(30),
        )
        .assert_ok();
        homes.push(home);
    }
    let mut batches = vec![];
    for (c, _) in homes.iter().enumerate() {
        let files: Vec<(PathBuf, u64)> = (0..FILES_PER_CLIENT)
            .map(|i| {
                let len = rng.gen_range(8_000..260_000);
                let name = format!("c{c:02}-f{i}.bin");
                (
                    w.random_file(&name, len, seed * 1000 + (c * 100 + i) as u64),
                    len as u64,
                )
            })
            .collect();
        batches.push(files);
    }
    w.start_agent();
    let agent_pid = w.agent.as_ref().unwrap().pid();
    let cpu0 = cpu_seconds(agent_pid).unwrap_or(0.0);
    let started = Instant::now();
    let procs: Vec<(Proc, Instant)> = homes
        .iter()
        .zip(&batches)
        .map(|(home, files)| {
            let mut args = vec!["upload".to_string()];
            args.extend(files.iter().map(|(p, _)| p.display().to_string()));
            args.push("--json".into());
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            (w.spawn_client_in(home, &refs), Instant::now())
        })
        .collect();
    // Sample the agent's CPU once a second while the clients run.
    let mut peak_cpu: f64 = 0.0;
    let mut last = (Instant::now(), cpu0);
    let mut running: Vec<Option<(Proc, Instant)>> = procs.into_iter().map(Some).collect();
    let mut times: Vec<Option<(Duration, Run)>> = (0..running.len()).map(|_| None).collect();
    let deadline = Instant::now() + Duration::from_secs(1800);
    while running.iter().any(Option::is_some) {
        assert!(
            Instant::now() < deadline,
            "the load did not finish in 30 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
        for (i, slot) in running.iter_mut().enumerate() {
            if slot.as_mut().is_some_and(|(p, _)| p.exited()) {
                let (p, t) = slot.take().unwrap();
                let elapsed = t.elapsed();
                let run = p.wait(CLIENT_TIMEOUT);
                times[i] = Some((elapsed, run));
            }
        }
        if last.0.elapsed() >= Duration::from_secs(1) {
            if let Some(cpu) = cpu_seconds(agent_pid) {
                peak_cpu = peak_cpu.max((cpu - last.1) / last.0.elapsed().as_secs_f64());
                last = (Instant::now(), cpu);
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(agent_pid).unwrap_or(cpu0) - cpu0;
    let rss = peak_rss_kib(agent_pid).unwrap_or(0);
    let mut failures = vec![];
    let mut ratios = vec![];
    let mut seconds = vec![];
    let mut transfers = 0;
    let mut bytes = 0;
    let mut retransmitted = 0;
    for (c, (slot, files)) in times.into_iter().zip(&batches).enumerate() {
        let (elapsed, run) = slot.expect("every client finished");
        if !run.success() {
            failures.push(format!("client {c}: {}", run.describe()));
            continue;
        }
        for r in run.reports() {
            retransmitted += num(&r, "chunks_retransmitted");
        }
        let batch: u64 = files.iter().map(|(_, l)| l).sum();
        for (p, len) in files {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            // Each client's files are in its own folder of the agent's root.
            let folder = match c {
                0 => "laptop".to_string(),
                c => format!("c{c:02}"),
            };
            if sha256_file(p) != sha256_file(&w.storage_root().join(folder).join(&name)) {
                failures.push(format!("{name} is not byte-exact on the agent"));
            }
            transfers += 1;
            bytes += len;
        }
        let ideal = batch as f64 / LOAD_RATE;
        seconds.push(elapsed.as_secs_f64());
        ratios.push(elapsed.as_secs_f64() / ideal);
    }
    seconds.sort_by(f64::total_cmp);
    ratios.sort_by(f64::total_cmp);
    println!("clients           {clients}, {FILES_PER_CLIENT} uploads queued at once each");
    println!("channel           {LOAD_QUERY}");
    println!(
        "transfers         {transfers} byte-exact of {}",
        clients * FILES_PER_CLIENT
    );
    println!("bytes             {bytes}");
    println!("retransmitted     {retransmitted} chunks");
    println!(
        "agent             peak RSS {:.1} MiB · CPU {:.1} s in {:.0} s ({:.0}% of a core on average, {:.0}% peak over a second)",
        rss as f64 / 1024.0,
        cpu,
        wall,
        100.0 * cpu / wall,
        100.0 * peak_cpu
    );
    println!(
        "client batches    p50 {:.1} s · p99 {:.1} s; against the ideal (bytes at 100 KB/s): p50 {:.2}× · p99 {:.2}×",
        percentile(&seconds, 0.5),
        percentile(&seconds, 0.99),
        percentile(&ratios, 0.5),
        percentile(&ratios, 0.99)
    );
    println!("failures          {}", failures.len());
    for f in &failures {
        println!("  {f}");
    }
    assert!(failures.is_empty());
}
