//! Every end-to-end test has a deadline. A test that passes it is named,
//! with the last lines of every process it started; those processes are
//! killed, and the test binary exits (libtest cannot stop one test from
//! outside it, and a hung test would otherwise hold the whole run). So no
//! developer loses an hour to a test that waits for ever.
//!
//! A test is known from its thread (libtest runs each test on a thread of
//! its own, named after it) from the first process it starts or the first
//! [`World`](super::World) it makes, until that thread ends. The deadline is
//! [`DEFAULT`], `PIGEON_TEST_DEADLINE_SECS` for every test, or what a test
//! asks for itself with [`extend`] (a long soak). With `PIGEON_TEST_TIMES`
//! set to a file, each test's time is appended to it (`.ci/run` lists the
//! slowest).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Long enough for the slowest test on a busy two-core machine (a paced
/// channel, several restarts); short enough that a hang is seen in minutes.
pub const DEFAULT: Duration = Duration::from_secs(420);

/// One running test.
struct Test {
    name: String,
    started: Instant,
    limit: Duration,
    /// Processes it started and has not reaped: pid, command, log files.
    procs: HashMap<u32, (String, PathBuf, PathBuf)>,
}

fn tests() -> std::sync::MutexGuard<'static, HashMap<std::thread::ThreadId, Test>> {
    static TESTS: OnceLock<Mutex<HashMap<std::thread::ThreadId, Test>>> = OnceLock::new();
    TESTS
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("deadline watchdog".into())
                .spawn(watch)
                .expect("a watchdog thread");
            Mutex::default()
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Forgets the test when its thread ends.
struct Guard(std::thread::ThreadId);

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(test) = tests().remove(&self.0) else {
            return;
        };
        // Where the time went: `.ci/run` lists the slowest.
        if let Some(path) = std::env::var_os("PIGEON_TEST_TIMES") {
            use std::io::Write;
            let line = format!(
                "{:.1}\t{}\n",
                test.started.elapsed().as_secs_f64(),
                test.name
            );
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }
}

thread_local! {
    static GUARD: Guard = {
        let thread = std::thread::current();
        let limit = std::env::var("PIGEON_TEST_DEADLINE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(DEFAULT, Duration::from_secs);
        tests().insert(
            thread.id(),
            Test {
                name: thread.name().unwrap_or("an unnamed test").to_string(),
                started: Instant::now(),
                limit,
                procs: HashMap::new(),
            },
        );
        Guard(thread.id())
    };
}

/// Start this test's clock (once; later calls do nothing).
pub fn start() {
    GUARD.with(|_| {});
}

/// This test may take `limit` from its start (a soak, a measurement).
pub fn extend(limit: Duration) {
    start();
    if let Some(t) = tests().get_mut(&std::thread::current().id()) {
        t.limit = t.limit.max(limit);
    }
}

/// A process this test started.
pub fn started(pid: u32, what: &str, stdout: PathBuf, stderr: PathBuf) {
    start();
    if let Some(t) = tests().get_mut(&std::thread::current().id()) {
        t.procs.insert(pid, (what.to_string(), stdout, stderr));
    }
}

/// A process this test reaped.
pub fn reaped(pid: u32) {
    if let Some(t) = tests().get_mut(&std::thread::current().id()) {
        t.procs.remove(&pid);
    }
}

/// A late test's process: pid, command, stdout and stderr files.
type LateProc = (u32, String, PathBuf, PathBuf);

fn watch() {
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let late: Option<(String, Duration, Vec<LateProc>)> = tests()
            .values()
            .find(|t| t.started.elapsed() > t.limit)
            .map(|t| {
                let procs = t
                    .procs
                    .iter()
                    .map(|(pid, (what, out, err))| (*pid, what.clone(), out.clone(), err.clone()))
                    .collect();
                (t.name.clone(), t.limit, procs)
            });
        let Some((name, limit, procs)) = late else {
            continue;
        };
        let mut report = format!(
            "\n\ntest {name} passed its deadline of {} s (PIGEON_TEST_DEADLINE_SECS to change it); its processes:\n",
            limit.as_secs()
        );
        for (pid, what, out, err) in &procs {
            let read = |p: &PathBuf| {
                String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
            };
            report.push_str(&format!(
                "--- {what} (pid {pid})\n--- stdout, last lines:\n{}\n--- stderr, last lines:\n{}\n",
                last_lines(&read(out), 10),
                last_lines(&read(err), 30)
            ));
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        if procs.is_empty() {
            report.push_str("(none running)\n");
        }
        eprintln!("{report}");
        std::process::exit(101);
    }
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A test that hangs on purpose, run only by
/// [`a_hung_test_is_named_and_stopped_at_its_deadline`] in a child test
/// process with a short deadline.
#[test]
#[ignore = "hangs on purpose: run by a_hung_test_is_named_and_stopped_at_its_deadline"]
fn hangs_on_purpose() {
    let w = super::World::new("");
    let _sleeper = super::Proc::spawn(&w.client_home, &["keys", "show"], &w.logs, "done");
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_hung_test_is_named_and_stopped_at_its_deadline() {
    let started = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--ignored",
            "--exact",
            "common::deadline::hangs_on_purpose",
            "--nocapture",
        ])
        .env("PIGEON_TEST_DEADLINE_SECS", "3")
        .output()
        .expect("the test binary runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("test common::deadline::hangs_on_purpose passed its deadline of 3 s"),
        "{said}"
    );
    assert!(
        said.contains("pigeon --home"),
        "its processes are named: {said}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped soon after its deadline: {:?}",
        started.elapsed()
    );
}
