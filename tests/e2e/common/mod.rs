//! Shared harness for the end-to-end tests: two (or more) parties, each with
//! its own home in a temporary folder, talking through a spool folder with
//! the REAL `pigeon` binary run as separate processes.
//!
//! - [`World::new`] makes an agent home and a client home, exchanges keys
//!   (`pigeon keys show` / `pigeon keys trust`), and picks a spool;
//! - [`World::start_agent`] runs `pigeon agent` as a child process (killed
//!   with SIGKILL when the world is dropped) and waits until it is ready;
//! - [`World::client`] / [`World::spawn_client`] run client commands with a
//!   timeout (or in the background, to kill them with `kill -9`);
//! - helpers parse `--json` reports, transcripts, hash files, and make
//!   seeded random content.
//!
//! Set `PIGEON_E2E_KEEP=1` to keep every test's folder for inspection.

#![allow(dead_code)]

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub mod deadline;
pub mod platforms;
pub mod pty;
pub mod transcript;
pub use platforms::*;
pub use transcript::*;

use rand::{RngCore, SeedableRng};
use serde_json::Value;
use sha2::Digest;

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pigeon"))
}

/// Default time limit of a client command: generous, the machine may be busy.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(150);

/// Serialises the long tests of one module (one file of `tests/e2e/`) so
/// they do not compete with each other: the way they ran when each file
/// was its own test binary. Tests of different modules still run side by
/// side; only [`cpu_lock`] holds every module back.
#[track_caller]
pub fn heavy_lock() -> std::sync::MutexGuard<'static, ()> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static LOCKS: OnceLock<Mutex<HashMap<&'static str, &'static Mutex<()>>>> = OnceLock::new();
    let file = std::panic::Location::caller().file();
    let lock: &'static Mutex<()> = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(file)
        .or_insert_with(|| Box::leak(Box::new(Mutex::new(()))));
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serialises the tests that keep the CPU busy themselves (a 100 MB round
/// trip, hashing gigabytes, ten thousand handshakes, a flood of forged
/// frames) and measure what that costs: one at a time in the whole binary.
pub fn cpu_lock() -> std::sync::MutexGuard<'static, ()> {
    static CPU: std::sync::Mutex<()> = std::sync::Mutex::new(());
    CPU.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// processes

/// A running `pigeon` process, its output going to files. Killed (SIGKILL)
/// and reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub what: String,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
    pub started: Instant,
    pub started_at: SystemTime,
    done: Option<ExitStatus>,
}

/// A finished process.
#[derive(Debug)]
pub struct Run {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
    pub stderr_bytes: Vec<u8>,
    pub elapsed: Duration,
}

impl Run {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The transfers' JSON objects printed on stdout, one per line (not
    /// the links `status --json` puts first).
    pub fn reports(&self) -> Vec<Value> {
        json_lines(&self.stdout)
            .into_iter()
            .filter(|v| v.get("link").is_none())
            .collect()
    }

    /// The links `status --json` shows (a live pigeon's).
    pub fn links(&self) -> Vec<Value> {
        json_lines(&self.stdout)
            .into_iter()
            .filter(|v| v.get("link").is_some())
            .collect()
    }

    /// The single report of a one-file command.
    pub fn report(&self) -> Value {
        let r = self.reports();
        assert_eq!(
            r.len(),
            1,
            "expected one JSON report from {}\n{}",
            self.what,
            self.describe()
        );
        r.into_iter().next().unwrap()
    }

    /// Panic with everything useful unless the command succeeded.
    #[track_caller]
    pub fn assert_ok(&self) -> &Run {
        assert!(self.success(), "{} failed\n{}", self.what, self.describe());
        self
    }

    /// Panic unless the command failed.
    #[track_caller]
    pub fn assert_failed(&self) -> &Run {
        assert!(
            !self.success(),
            "{} should have failed\n{}",
            self.what,
            self.describe()
        );
        self
    }

    pub fn describe(&self) -> String {
        format!(
            "status: {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.elapsed,
            self.stdout,
            tail(&self.stderr, 6000)
        )
    }
}

pub fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

impl Proc {
    pub fn spawn(home: &Path, args: &[&str], log_dir: &Path, tag: &str) -> Proc {
        Proc::spawn_env(home, args, log_dir, tag, &[])
    }

    /// Like [`spawn`](Self::spawn), with extra environment variables.
    pub fn spawn_env(
        home: &Path,
        args: &[&str],
        log_dir: &Path,
        tag: &str,
        env: &[(&str, &str)],
    ) -> Proc {
        std::fs::create_dir_all(log_dir).unwrap();
        let n = unique();
        let stdout_path = log_dir.join(format!("{tag}-{n}.stdout"));
        let stderr_path = log_dir.join(format!("{tag}-{n}.stderr"));
        let what = format!("pigeon --home {} {}", home.display(), args.join(" "));
        let started_at = SystemTime::now();
        let child = Command::new(bin())
            .arg("--home")
            .arg(home)
            .args(args)
            .env_remove("PIGEON_HOME")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).unwrap())
            .stderr(File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        deadline::started(child.id(), &what, stdout_path.clone(), stderr_path.clone());
        Proc {
            child,
            what,
            stdout_path,
            stderr_path,
            started: Instant::now(),
            started_at,
            done: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Has it exited (without waiting)?
    pub fn exited(&mut self) -> bool {
        if self.done.is_none() {
            self.done = self.child.try_wait().unwrap();
            if self.done.is_some() {
                deadline::reaped(self.child.id());
            }
        }
        self.done.is_some()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr_path).unwrap_or_default()).into_owned()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stdout_path).unwrap_or_default()).into_owned()
    }

    /// kill -9, and reap it.
    pub fn kill9(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            self.done = Some(self.child.wait().unwrap());
            deadline::reaped(self.child.id());
        }
    }

    /// SIGTERM (a graceful stop), then wait for it up to `limit`.
    pub fn terminate(&mut self, limit: Duration) {
        if self.exited() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + limit;
        while !self.exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }

    /// Wait until it exits; kill it and panic after `limit`.
    #[track_caller]
    pub fn wait(mut self, limit: Duration) -> Run {
        let deadline = self.started + limit;
        while !self.exited() {
            if Instant::now() > deadline {
                self.kill9();
                panic!(
                    "{} did not finish within {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.what,
                    limit,
                    self.stdout(),
                    tail(&self.stderr(), 6000)
                );
            }
            std::thread::sleep(Duration::from_millis(15));
        }
        self.finish()
    }

    fn finish(&mut self) -> Run {
        let stdout_bytes = std::fs::read(&self.stdout_path).unwrap_or_default();
        let stderr_bytes = std::fs::read(&self.stderr_path).unwrap_or_default();
        Run {
            what: self.what.clone(),
            status: self.done.expect("finished"),
            stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
            stdout_bytes,
            stderr: String::from_utf8_lossy(&stderr_bytes).into_owned(),
            stderr_bytes,
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.done.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            deadline::reaped(self.child.id());
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Run a pigeon command to completion (with a time limit).
#[track_caller]
pub fn pigeon(home: &Path, args: &[&str], log_dir: &Path, limit: Duration) -> Run {
    Proc::spawn(home, args, log_dir, "cmd").wait(limit)
}

/// Poll `cond` every 10 ms until it holds; panic with `what` after `limit`.
#[track_caller]
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// the two parties

/// An agent and a client, each with its own home, and a spool between them.
pub struct World {
    pub dir: tempfile::TempDir,
    pub agent_home: PathBuf,
    pub client_home: PathBuf,
    pub spool: PathBuf,
    /// Where tests put their local files.
    pub work: PathBuf,
    /// Process output files.
    pub logs: PathBuf,
    /// The part of the transport URI after `?` (may be empty).
    pub query: String,
    pub agent_key: String,
    pub client_key: String,
    pub agent: Option<Proc>,
    agent_starts: usize,
}

impl World {
    /// Two parties that trust each other with all permissions.
    pub fn new(query: &str) -> World {
        World::with_permissions(query, "upload,download,list")
    }

    /// Two parties; the agent grants the client `allow` (e.g. "list").
    pub fn with_permissions(query: &str, allow: &str) -> World {
        World::build(query, allow, None)
    }

    /// Two parties with the fixed identities [`FIXED_AGENT_IDENTITY`] and
    /// [`FIXED_CLIENT_IDENTITY`]. The local spool mixes `seed=` with each
    /// party's inbox name (from its key), so only with fixed keys does a
    /// seed give the same fault sequence run after run.
    pub fn with_fixed_keys(query: &str) -> World {
        World::build(
            query,
            "upload,download,list",
            Some((FIXED_AGENT_IDENTITY, FIXED_CLIENT_IDENTITY)),
        )
    }

    fn build(query: &str, allow: &str, identities: Option<(&str, &str)>) -> World {
        deadline::start();
        let dir = tempfile::Builder::new()
            .prefix("pigeon-e2e-")
            .tempdir()
            .unwrap();
        let base = dir.path().to_path_buf();
        let agent_home = base.join("agent-home");
        let client_home = base.join("client-home");
        let spool = base.join("spool");
        let work = base.join("work");
        let logs = base.join("logs");
        for d in [&agent_home, &client_home, &spool, &work, &logs] {
            std::fs::create_dir_all(d).unwrap();
        }
        if let Some((agent_id, client_id)) = identities {
            use std::os::unix::fs::PermissionsExt;
            for (home, id) in [(&agent_home, agent_id), (&client_home, client_id)] {
                let path = home.join("identity.key");
                std::fs::write(&path, id).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
        }
        let agent_key = show_key(&agent_home, &logs);
        let client_key = show_key(&client_home, &logs);
        let limit = Duration::from_secs(30);
        pigeon(
            &agent_home,
            &[
                "keys",
                "trust",
                &client_key,
                "--name",
                "laptop",
                "--allow",
                allow,
            ],
            &logs,
            limit,
        )
        .assert_ok();
        pigeon(
            &client_home,
            &["keys", "trust", &agent_key, "--name", "agent"],
            &logs,
            limit,
        )
        .assert_ok();
        World {
            dir,
            agent_home,
            client_home,
            spool,
            work,
            logs,
            query: query.to_string(),
            agent_key,
            client_key,
            agent: None,
            agent_starts: 0,
        }
    }

    pub fn uri(&self) -> String {
        uri_for(&self.spool, &self.query)
    }

    /// The client's folder on the agent (each peer has its own, under
    /// the root; the client is trusted as `laptop`).
    pub fn storage(&self) -> PathBuf {
        self.storage_root().join("laptop")
    }

    /// The agent's storage root.
    pub fn storage_root(&self) -> PathBuf {
        self.agent_home.join("storage")
    }

    pub fn staging(&self) -> PathBuf {
        self.storage_root().join(".pigeon").join("staging")
    }

    /// The agent's inbox on the spool.
    pub fn agent_inbox(&self) -> PathBuf {
        self.spool.join(key_id(&self.agent_key))
    }

    pub fn client_inbox(&self) -> PathBuf {
        self.spool.join(key_id(&self.client_key))
    }

    /// What the client has sent (needs `transcript=1`).
    pub fn client_transcript(&self) -> Vec<Msg> {
        read_transcript(
            &self
                .spool
                .join("transcript")
                .join(format!("{}.log", key_id(&self.client_key))),
        )
    }

    /// What the agent has sent (needs `transcript=1`).
    pub fn agent_transcript(&self) -> Vec<Msg> {
        read_transcript(
            &self
                .spool
                .join("transcript")
                .join(format!("{}.log", key_id(&self.agent_key))),
        )
    }

    /// Start `pigeon agent` and wait until it says it is ready.
    #[track_caller]
    pub fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "the agent is already running");
        self.agent_starts += 1;
        let uri = self.uri();
        let p = Proc::spawn(
            &self.agent_home,
            &["agent", "--transport", &uri],
            &self.logs,
            &format!("agent{}", self.agent_starts),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut p = p;
        loop {
            if p.stderr().contains("agent ready") {
                break;
            }
            if p.exited() {
                panic!("the agent exited at start:\n{}", p.stderr());
            }
            if Instant::now() > deadline {
                panic!("the agent did not get ready in 60 s:\n{}", p.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.agent = Some(p);
    }

    /// Start `pigeon agent` on these transports (several: one link each).
    #[track_caller]
    pub fn start_agent_on(&mut self, uris: &[String]) {
        assert!(self.agent.is_none(), "the agent is already running");
        self.agent_starts += 1;
        let mut args = vec!["agent".to_string()];
        for u in uris {
            args.push("--transport".into());
            args.push(u.clone());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = Proc::spawn(
            &self.agent_home,
            &refs,
            &self.logs,
            &format!("agent{}", self.agent_starts),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while !p.stderr().contains("agent ready") {
            assert!(!p.exited(), "the agent exited at start:\n{}", p.stderr());
            assert!(
                Instant::now() < deadline,
                "the agent did not get ready in 60 s:\n{}",
                p.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.agent = Some(p);
    }

    /// kill -9 the agent.
    pub fn kill_agent(&mut self) {
        if let Some(mut p) = self.agent.take() {
            p.kill9();
        }
    }

    /// Stop the agent gracefully (SIGTERM), so its store is flushed.
    pub fn stop_agent(&mut self) {
        if let Some(mut p) = self.agent.take() {
            p.terminate(Duration::from_secs(20));
        }
    }

    pub fn agent_running(&mut self) -> bool {
        self.agent.as_mut().is_some_and(|p| !p.exited())
    }

    /// Everything every agent process of this world wrote to stderr.
    pub fn agent_log(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<_> = std::fs::read_dir(&self.logs)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                n.starts_with("agent") && n.ends_with(".stderr")
            })
            .collect();
        names.sort();
        for n in names {
            out.push_str(&String::from_utf8_lossy(
                &std::fs::read(n).unwrap_or_default(),
            ));
        }
        out
    }

    /// Client arguments with `--transport` appended when the command needs one.
    fn client_args(&self, args: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let needs = matches!(
            args.first(),
            Some(
                &("upload"
                    | "download"
                    | "ls"
                    | "resume"
                    | "cancel"
                    | "share"
                    | "unshare"
                    | "shares")
            )
        );
        if needs && !args.contains(&"--transport") {
            v.push("--transport".into());
            v.push(self.uri());
        }
        v
    }

    /// Run a client command to completion.
    #[track_caller]
    pub fn client(&self, args: &[&str]) -> Run {
        self.client_in(&self.client_home, args)
    }

    /// Run a command as the party whose home is `home`, on this world's spool.
    #[track_caller]
    pub fn client_in(&self, home: &Path, args: &[&str]) -> Run {
        self.spawn_client_in(home, args).wait(CLIENT_TIMEOUT)
    }

    /// Start a client command in the background.
    pub fn spawn_client(&self, args: &[&str]) -> Proc {
        self.spawn_client_in(&self.client_home, args)
    }

    pub fn spawn_client_in(&self, home: &Path, args: &[&str]) -> Proc {
        self.spawn_client_env(home, args, &[])
    }

    /// A client command with extra environment (e.g. `RUST_LOG=warn`).
    pub fn spawn_client_env(&self, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let v = self.client_args(args);
        let refs: Vec<&str> = v.iter().map(String::as_str).collect();
        Proc::spawn_env(home, &refs, &self.logs, "client", env)
    }

    /// `pigeon upload FILES... [extra] --json`.
    #[track_caller]
    pub fn upload(&self, files: &[&Path], extra: &[&str]) -> Run {
        self.client(
            &upload_args(files, extra)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
    }

    pub fn spawn_upload(&self, files: &[&Path], extra: &[&str]) -> Proc {
        self.spawn_client(
            &upload_args(files, extra)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
    }

    /// `pigeon download REMOTE -o OUT [extra] --json`.
    #[track_caller]
    pub fn download(&self, remote: &str, out: &Path, extra: &[&str]) -> Run {
        self.client(
            &download_args(remote, out, extra)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
    }

    pub fn spawn_download(&self, remote: &str, out: &Path, extra: &[&str]) -> Proc {
        self.spawn_client(
            &download_args(remote, out, extra)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
    }

    /// A new home (a third party) that trusts the agent; the agent does not
    /// know it.
    pub fn stranger(&self, name: &str) -> (PathBuf, String) {
        let home = self.dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        let key = show_key(&home, &self.logs);
        pigeon(
            &home,
            &["keys", "trust", &self.agent_key, "--name", "agent"],
            &self.logs,
            Duration::from_secs(30),
        )
        .assert_ok();
        (home, key)
    }

    /// Write `data` to `work/<name>` and return the path.
    pub fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.work.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, data).unwrap();
        p
    }

    /// A seeded random file of `len` bytes in `work/`.
    pub fn random_file(&self, name: &str, len: usize, seed: u64) -> PathBuf {
        let p = self.work.join(name);
        write_random(&p, len as u64, seed);
        p
    }

    /// A seeded random file of `len` bytes in `work/` with `canary` written
    /// into it every 2 KiB: what a provider must never see in clear.
    pub fn canary_file(&self, name: &str, len: usize, seed: u64, canary: &[u8]) -> PathBuf {
        let p = self.random_file(name, len, seed);
        let mut data = std::fs::read(&p).expect("reading the file just written");
        for at in (0..len.saturating_sub(canary.len())).step_by(2048) {
            data[at..at + canary.len()].copy_from_slice(canary);
        }
        std::fs::write(&p, data).expect("writing the canary into it");
        p
    }

    /// Put a file straight into the agent's storage (as if it was there before).
    pub fn put_remote(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.storage().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }

    /// Files under the storage root (relative paths), `.pigeon` excluded.
    pub fn stored_files(&self) -> Vec<String> {
        let root = self.storage();
        let mut out = vec![];
        walk(&root, &mut |p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if !rel.starts_with(".pigeon") {
                out.push(rel);
            }
        });
        out.sort();
        out
    }

    /// Files in the agent's staging folder.
    pub fn staged_files(&self) -> Vec<PathBuf> {
        list_files(&self.staging())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(mut p) = self.agent.take() {
            p.kill9();
        }
        if std::env::var_os("PIGEON_E2E_KEEP").is_some() {
            let path = self.dir.path().to_path_buf();
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            let _ = dir.keep();
            eprintln!("kept {}", path.display());
        }
    }
}

/// A fixed agent identity (`identity.key`: private key hex, public key hex).
pub const FIXED_AGENT_IDENTITY: &str = "d96bbaefda5eacbdb05de8efb7d9dfa3e20c853cacaeaa407a3921a9b467c6eb\n3032e93f707556d6748d93f2df9fd98d7133e62eaef0b11a01bea1983b25af60\n";
/// A fixed client identity.
pub const FIXED_CLIENT_IDENTITY: &str = "9ffd6fbd3d71d19d09eb01ed2611c5aad859261e6edfb1f31956b72c47d37358\n98f2ec842a3492874b28d1564af279c21c3267ca58204a3fba1c988c3119ac0d\n";

pub fn uri_for(spool: &Path, query: &str) -> String {
    if query.is_empty() {
        format!("local:{}", spool.display())
    } else {
        format!("local:{}?{}", spool.display(), query)
    }
}

fn upload_args(files: &[&Path], extra: &[&str]) -> Vec<String> {
    let mut v = vec!["upload".to_string()];
    v.extend(
        files
            .iter()
            .map(|f| f.to_str().expect("test paths are UTF-8").to_string()),
    );
    v.extend(extra.iter().map(|s| s.to_string()));
    v.push("--json".into());
    v
}

fn download_args(remote: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "download".to_string(),
        remote.to_string(),
        "-o".to_string(),
        out.to_str().unwrap().to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v.push("--json".into());
    v
}

fn show_key(home: &Path, logs: &Path) -> String {
    let r = pigeon(home, &["keys", "show"], logs, Duration::from_secs(30));
    r.assert_ok();
    let key = r.stdout.trim().to_string();
    assert_eq!(key.len(), 64, "a public key is 64 hex characters: {key:?}");
    key
}

/// The inbox name of a public key: hex of the first 8 bytes of its SHA-256.
pub fn key_id(public_hex: &str) -> String {
    let bytes = from_hex(public_hex);
    to_hex(&sha2::Sha256::digest(bytes)[..8])
}

/// The private key (32 bytes) in a home's identity file (first line, hex).
pub fn private_key(home: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(home.join("identity.key")).unwrap();
    let k = from_hex(text.lines().next().unwrap().trim());
    assert_eq!(k.len(), 32);
    k
}

// ---------------------------------------------------------------------------
// files, hashes, encodings

pub fn write_random(path: &Path, len: u64, seed: u64) {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

pub fn sha256_hex(data: &[u8]) -> String {
    to_hex(&sha2::Sha256::digest(data))
}

pub fn sha256_file(path: &Path) -> String {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    to_hex(&h.finalize())
}

/// Same size and same SHA-256.
#[track_caller]
pub fn assert_same_file(a: &Path, b: &Path) {
    let (ma, mb) = (std::fs::metadata(a), std::fs::metadata(b));
    let ma = ma.unwrap_or_else(|e| panic!("{}: {e}", a.display()));
    let mb = mb.unwrap_or_else(|e| panic!("{}: {e}", b.display()));
    assert_eq!(
        ma.len(),
        mb.len(),
        "sizes of {} and {} differ",
        a.display(),
        b.display()
    );
    assert_eq!(
        sha256_file(a),
        sha256_file(b),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

pub fn to_hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

pub fn from_hex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() & 1, 0, "odd hex length");
    let v = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not hex: {c}"),
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| v(p[0]) << 4 | v(p[1]))
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The link bytes a text message spells, in base64 or in the dense
/// alphabet (`alphabet=dense`, told apart by the first character); None if
/// it is neither.
pub fn untext(text: &[u8]) -> Option<Vec<u8>> {
    match std::str::from_utf8(text) {
        Ok(s) if s.chars().next().is_some_and(|c| !c.is_ascii()) => {
            pigeon_core::alphabet::Alphabet::decode(s.trim()).ok()
        }
        _ => unbase64(text),
    }
}

/// A LEB128 varint of a link message at `pos`, which moves past it (the
/// link's records: `crates/pigeon-core/src/link/wire.rs`).
pub fn read_varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let x = b[*pos];
        *pos += 1;
        v |= u64::from(x & 0x7f) << shift;
        if x & 0x80 == 0 {
            return v;
        }
    }
    panic!("bad varint");
}

/// Issue 29: a text link set to `alphabet=dense` spells every message
/// that carries a chunk (whole, or a piece of one) in the dense alphabet;
/// one that carries none (a handshake, an acknowledgement: small) may go
/// in base64. Panics naming the first message that does otherwise, or
/// that is not the link's; returns how many were dense.
pub fn assert_chunks_go_dense(who: &str, bodies: &[Vec<u8>]) -> usize {
    use pigeon_core::alphabet::Alphabet;
    use pigeon_core::protocol::Frame;
    let varint = |b: &[u8], pos: &mut usize| read_varint(b, pos) as usize;
    let mut dense = 0;
    for (i, body) in bodies.iter().enumerate() {
        let text = std::str::from_utf8(body)
            .unwrap_or_else(|_| panic!("{who}: message {i} is not text"))
            .trim();
        let bytes = Alphabet::decode(text)
            .unwrap_or_else(|e| panic!("{who}: message {i} is neither alphabet: {e}"));
        assert!(
            bytes.starts_with(b"PG"),
            "{who}: message {i} is not the link's"
        );
        let mut chunk = false;
        let mut pos = 3;
        while pos < bytes.len() {
            let tag = bytes[pos];
            pos += 1;
            match tag {
                1 => {
                    let len = varint(&bytes, &mut pos);
                    chunk |= matches!(
                        Frame::decode(&bytes[pos..pos + len]),
                        Ok(Frame::Chunk { .. })
                    );
                    pos += len;
                }
                2 | 3 => {
                    pos += 8;
                    if tag == 3 {
                        chunk = true;
                        varint(&bytes, &mut pos);
                        varint(&bytes, &mut pos);
                    }
                    varint(&bytes, &mut pos);
                    varint(&bytes, &mut pos);
                    pos += varint(&bytes, &mut pos);
                }
                4 => {}
                other => panic!("{who}: message {i} holds a record of unknown kind {other}"),
            }
        }
        match Alphabet::of(text) {
            Alphabet::Dense => dense += 1,
            Alphabet::Base64 => assert!(!chunk, "{who}: message {i} carries a chunk in base64"),
        }
    }
    dense
}

/// Decode standard base64; None if it is not valid base64.
pub fn unbase64(text: &[u8]) -> Option<Vec<u8>> {
    let text: Vec<u8> = text
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if text.len() & 3 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for q in text.chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for &c in q {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' => {
                    pad += 1;
                    0
                }
                _ => return None,
            };
            n = (n << 6) | u32::from(v);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad.min(2)]);
    }
    Some(out)
}

/// Does `hay` contain `needle`?
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every way `secret` could show on a channel: raw, hex (both cases), and
/// the inner part of its base64 at each of the three alignments.
pub fn encodings_of(secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        ("raw".to_string(), secret.to_vec()),
        ("hex".to_string(), to_hex(secret).into_bytes()),
        (
            "HEX".to_string(),
            to_hex(secret).to_uppercase().into_bytes(),
        ),
    ];
    for shift in 0..3 {
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(secret);
        let b = base64(&shifted);
        // Drop the characters that depend on the neighbours.
        let inner = &b[(shift * 4).div_ceil(3) + 1..b.len() - 4];
        v.push((format!("base64/{shift}"), inner.as_bytes().to_vec()));
    }
    v
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

/// Every file below `dir` (recursively; symlinks are not followed).
pub fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    walk(dir, &mut |p| out.push(p.to_path_buf()));
    out.sort();
    out
}

/// Message files waiting in an inbox folder.
pub fn pending_messages(inbox: &Path) -> usize {
    std::fs::read_dir(inbox)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.ends_with(".msg") && !n.starts_with('.')
                })
                .count()
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// transcripts

/// One delivered message: when (µs since the epoch) and its bytes as
/// written to the spool (base64 text on text profiles).
#[derive(Clone, Debug)]
pub struct Msg {
    pub micros: u64,
    pub bytes: Vec<u8>,
}

impl Msg {
    /// Size as the channel counts it: UTF-16 units of a text (one a byte
    /// in base64, one a three-byte character in the dense alphabet), bytes
    /// of anything else (a binary message starts with the link's `PG`).
    pub fn len(&self) -> usize {
        match std::str::from_utf8(&self.bytes) {
            Ok(text) if !self.bytes.starts_with(b"PG") => text.encode_utf16().count(),
            _ => self.bytes.len(),
        }
    }
}

pub fn read_transcript(path: &Path) -> Vec<Msg> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            // A line being written while we read may be cut short.
            let (t, h) = l.split_once(' ')?;
            if h.len() & 1 == 1 {
                return None;
            }
            Some(Msg {
                micros: t.parse().ok()?,
                bytes: from_hex(h),
            })
        })
        .collect()
}

pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Peak resident memory of a running process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A report's field as u64 / bool / str, with a clear panic.
#[track_caller]
pub fn num(r: &Value, field: &str) -> u64 {
    r[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {field} in {r}"))
}

#[track_caller]
pub fn flag(r: &Value, field: &str) -> bool {
    r[field]
        .as_bool()
        .unwrap_or_else(|| panic!("no bool {field} in {r}"))
}

#[track_caller]
pub fn text<'a>(r: &'a Value, field: &str) -> &'a str {
    r[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field} in {r}"))
}

/// No body a provider held contains `canary`, in clear or inside base64
/// (text channels carry base64: a leak would be encoded, and a canary
/// with a character outside the base64 alphabet could never match the
/// raw text).
#[track_caller]
pub fn assert_no_plaintext(bodies: &[Vec<u8>], canary: &[u8]) {
    use base64::Engine as _;
    let has = |b: &[u8]| b.windows(canary.len()).any(|w| w == canary);
    for (i, body) in bodies.iter().enumerate() {
        assert!(
            !has(body),
            "body {i} held by the provider has the plaintext"
        );
        let text = String::from_utf8_lossy(body);
        if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(text.trim()) {
            assert!(
                !has(&decoded),
                "body {i} held by the provider has the plaintext, base64-encoded"
            );
        }
    }
}

/// One request to a provider, as [`assert_no_send_inside_a_wait`] sees it.
#[derive(Debug)]
pub struct Call {
    pub who: String,
    /// A send (not a poll or a lookup).
    pub send: bool,
    pub at_ms: u64,
    /// Set when the provider refused this call and said how long to wait.
    pub wait_ms: Option<u64>,
}

/// After every refusal that named a wait, its sender sent nothing until
/// the wait was over (50 ms of slack for the two clocks' reading).
#[track_caller]
pub fn assert_no_send_inside_a_wait(calls: &[Call]) {
    // A send that reaches the provider within this long of the refusal was
    // already on the wire when it was answered (a link keeps several posts
    // in flight where the provider allows bursts): no client can take it
    // back. Anything later was sent inside the wait.
    const IN_FLIGHT_MS: u64 = 100;
    for limited in calls.iter().filter(|c| c.wait_ms.is_some()) {
        let until = limited.at_ms + limited.wait_ms.unwrap_or(0);
        let early: Vec<&Call> = calls
            .iter()
            .filter(|c| {
                c.who == limited.who
                    && c.send
                    && c.at_ms > limited.at_ms + IN_FLIGHT_MS
                    && c.at_ms + 50 < until
            })
            .collect();
        assert!(
            early.is_empty(),
            "sent inside a wait the provider asked for ({limited:?}): {early:?}"
        );
    }
}
