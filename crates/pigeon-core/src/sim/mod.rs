//! The simulator: whole client and agent nodes in one process, on tokio's
//! paused clock, over an in-memory channel that misbehaves from one seed.
//!
//! A [`Scenario`] is drawn from a seed: a file (size and kind), a profile,
//! the provider's faults (loss, duplication, reordering, corruption,
//! delay), a partition, crashes of either side at random moments, and
//! sometimes a stranger (a key the agent does not trust) trying its luck.
//! [`run`] plays it with the real engine: the real client, the real agent,
//! real stores and files in a temporary folder; only the channel
//! ([`crate::transport::memory`]) and the clock are simulated. A crash ends
//! the node's task [`Scope`](crate::task::Scope) wherever its tasks are
//! (between a write and its flush as readily as anywhere), drops it,
//! reopens its store and files and starts it again.
//!
//! The invariants are checked after every step and at the end:
//!
//! - a file at its final name is byte-exact, whatever state the transfer
//!   is in, and a transfer reported complete has its file there;
//! - nothing acknowledged is lost across a crash: every chunk the client
//!   saw acknowledged is in the agent's persisted chunk map after the
//!   agent was killed;
//! - no (key, nonce) sealed two plaintexts, and no sealing run begun
//!   twice, across every run and restart ([`crate::crypto::seal_watch`]),
//!   while a second shell's `resume --all` rewrites the queue beside the
//!   running task;
//! - nothing a stranger sends reaches the agent's storage root;
//! - once the faults stop, the transfer ends within a bound of its ideal
//!   time on the channel.
//!
//! A failure names its seed and the command that replays it. The clock is
//! virtual but the stores' disks are real, and tokio's scheduling of a
//! single thread is repeatable, so a seed replays the same faults at the
//! same moments; what the disk does in between is the one thing it cannot
//! pin down.

mod scenario;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::engine::agent::{self, AgentConfig};
use crate::engine::client::{self, ClientConfig};
use crate::engine::{ClientHandle, UploadOptions};
use crate::home::{Home, PeerName, TrustedPeer};
use crate::policy::Permissions;
use crate::store::Store;
use crate::task::Scope;
use crate::transport::memory::{self, Net};
use crate::transport::TransportUri;
use crate::view::{ChunkState, TransferId, TransferStatus};

pub use scenario::{
    Channel, Crash, Limits, Nudge, Outage, OutageKind, Party, Scenario, MULTI_LINK_SEEDS,
};

/// What a scenario did, for the soak's table.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub transfers: u64,
    pub bytes: u64,
    pub crashes: u64,
    /// Failed transfers the simulated user ran again (a silent peer).
    pub retries: u64,
    /// Acknowledged chunks checked against the agent's store after a crash.
    pub acked_checked: u64,
    pub sent: u64,
    /// Chunks the client sent again (an upload's; a download's are the
    /// agent's, not seen here).
    pub resent: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
    pub cut: u64,
    /// Simulated time from start to the file's completion.
    pub simulated: Duration,
    /// The same after the faults stopped, and the bound it had to meet.
    pub after_calm: Duration,
    pub calm_bound: Duration,
}

/// A broken invariant, with what replays it.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {}: {}\n  replay: scripts/soak --seed {}",
            self.seed, self.what, self.seed
        )
    }
}

/// Real time the simulated clock may stand still before a scenario counts
/// as hung (a loop that never waits stops a paused clock, and the scenario
/// with it). A big file on a slow channel takes long in real time too
/// (found by the soak, seed 20108: 17 MB over WhatsApp's text mode is ten
/// simulated hours, more than a minute of real time), so it is the clock
/// standing still that counts, not the time taken.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// Play `scenario` on a fresh single-threaded runtime with a paused clock.
pub fn run(scenario: &Scenario) -> Result<Outcome, Failure> {
    let fail = |what: String| Failure {
        seed: scenario.seed,
        what,
    };
    crate::crypto::seal_watch::watch();
    let clock = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let owned = scenario.clone();
    let seen = clock.clone();
    std::thread::Builder::new()
        .name(format!("sim-{}", scenario.seed))
        .spawn(move || {
            let _ = done_tx.send(play(&owned, &seen));
        })
        .map_err(|e| fail(format!("cannot start a thread: {e}")))?;
    let mut last = (clock.load(Ordering::Relaxed), std::time::Instant::now());
    let out = loop {
        match done_rx.recv_timeout(Duration::from_secs(1)) {
            Ok(out) => break out.map_err(fail)?,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let now = clock.load(Ordering::Relaxed);
                if now != last.0 {
                    last = (now, std::time::Instant::now());
                } else if last.1.elapsed() >= STALL_LIMIT {
                    // The thread is left to spin: a test process reports and exits.
                    return Err(fail(format!(
                        "hung: the simulated clock stood still at {now} ms for {} s of real time (a loop that never waits?)",
                        STALL_LIMIT.as_secs()
                    )));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(fail("the scenario's thread died".into()))
            }
        }
    };
    let thread = format!("sim-{}", scenario.seed);
    if let Some(v) = crate::crypto::seal_watch::violations_on(&thread).first() {
        return Err(fail(v.clone()));
    }
    Ok(out)
}

fn play(scenario: &Scenario, clock: &std::sync::atomic::AtomicU64) -> Result<Outcome, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Its blocking pool too: the seal watch records only these threads.
        .thread_name(format!("sim-{}", scenario.seed))
        .start_paused(true)
        .build()
        .map_err(|e| format!("cannot build a runtime: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
    let out = runtime.block_on(async {
        let world = World::new(scenario, dir.path(), clock)?;
        world.play().await
    });
    // Tasks of the last nodes end with the runtime, before the folder goes.
    drop(runtime);
    out
}

/// One scenario's parties and their folders.
struct World<'a> {
    s: &'a Scenario,
    /// One per link, the scenario's first first.
    nets: Vec<Arc<Net>>,
    /// The client's, the agent's and the stranger's, one per link (the
    /// stranger's on the first alone).
    uris: [Vec<TransportUri>; 3],
    /// The client's and the agent's addresses (key ids), for a blackhole.
    addresses: [crate::transport::Address; 2],
    client_home: Home,
    agent_home: Home,
    root: PathBuf,
    /// The file as it must arrive.
    source: Vec<u8>,
    /// Where it is read from (upload) or written to (download).
    local: PathBuf,
    stranger: Option<Home>,
    /// Simulated milliseconds so far, for the watchdog's report.
    clock: &'a std::sync::atomic::AtomicU64,
}

const REMOTE: &str = "data/f.bin";
const STRANGER_REMOTE: &str = "stranger.bin";
/// The client's name on the agent, and so its folder under the root.
const CLIENT: &str = "laptop";

impl<'a> World<'a> {
    fn new(
        s: &'a Scenario,
        dir: &Path,
        clock: &'a std::sync::atomic::AtomicU64,
    ) -> Result<World<'a>, String> {
        let e = |what: &str| {
            let what = what.to_string();
            move |err: crate::error::CoreError| format!("{what}: {err}")
        };
        let io = |what: &'static str| move |err: std::io::Error| format!("{what}: {err}");
        // Unique per run: nets are process-wide and tests run side by side.
        let name = format!("sim-{}-{}", s.seed, hex::encode(rand::random::<[u8; 6]>()));
        // The first link's net keeps the name it always had.
        let net_name = |link: usize| match link {
            0 => name.clone(),
            n => format!("{name}-{n}"),
        };
        let uris_of = |party: u64, links: usize| {
            (0..links)
                .map(|link| {
                    let net = net_name(link);
                    TransportUri::parse(&format!("mem:{net}?{}", s.query(link, party)))
                        .map_err(e("the scenario's uri"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let links = s.links.len();
        let uris = [uris_of(0, links)?, uris_of(1, links)?, uris_of(2, 1)?];
        let client_home = Home::resolve(Some(dir.join("client"))).map_err(e("client home"))?;
        let agent_home = Home::resolve(Some(dir.join("agent"))).map_err(e("agent home"))?;
        let root = dir.join("root");
        std::fs::create_dir_all(&root).map_err(io("root"))?;
        let client_key = client_home.identity().map_err(e("client key"))?.public();
        let agent_key = agent_home.identity().map_err(e("agent key"))?.public();
        let peer = |name: &str, key| TrustedPeer {
            name: PeerName::parse(name).expect("a valid peer name"),
            key,
            permissions: Permissions::default(),
            addresses: Default::default(),
            limits: Default::default(),
        };
        client_home
            .save_trusted(&[peer("agent", agent_key)])
            .map_err(e("client trust"))?;
        agent_home
            .save_trusted(&[peer(CLIENT, client_key)])
            .map_err(e("agent trust"))?;
        let source = s.content();
        let local = dir.join("local.bin");
        if s.download {
            let at = root.join(CLIENT).join(REMOTE);
            std::fs::create_dir_all(at.parent().expect("a nested path")).map_err(io("data"))?;
            std::fs::write(&at, &source).map_err(io("remote file"))?;
        } else {
            std::fs::write(&local, &source).map_err(io("local file"))?;
        }
        let stranger = if s.stranger {
            let home = Home::resolve(Some(dir.join("stranger"))).map_err(e("stranger"))?;
            home.save_trusted(&[peer("agent", agent_key)])
                .map_err(e("stranger trust"))?;
            std::fs::write(dir.join("stranger.bin"), b"not for you").map_err(io("stranger"))?;
            Some(home)
        } else {
            None
        };
        Ok(World {
            s,
            nets: (0..links).map(|l| memory::net(&net_name(l))).collect(),
            uris,
            addresses: [client_key.id().to_string(), agent_key.id().to_string()],
            client_home,
            agent_home,
            root,
            source,
            local,
            stranger,
            clock,
        })
    }

    async fn play(&self) -> Result<Outcome, String> {
        let t0 = Instant::now();
        let real = std::time::Instant::now();
        let mut out = Outcome {
            transfers: 1,
            bytes: self.source.len() as u64,
            ..Outcome::default()
        };
        let mut agent = Some(self.start_agent().await?);
        let (mut client_scope, mut client) =
            self.start_client(&self.client_home, &self.uris[0]).await?;
        let id = if self.s.download {
            client
                .download(REMOTE.into(), self.local.clone())
                .await
                .map_err(|e| format!("download refused: {e}"))?
        } else {
            client
                .upload(self.local.clone(), REMOTE.into(), UploadOptions::default())
                .await
                .map_err(|e| format!("upload refused: {e}"))?
        };
        let stranger = match &self.stranger {
            Some(home) => {
                let (scope, handle) = self.start_client(home, &self.uris[2]).await?;
                let path = home.dir().parent().expect("in the scenario's folder");
                let _ = handle
                    .upload(
                        path.join("stranger.bin"),
                        STRANGER_REMOTE.into(),
                        UploadOptions::default(),
                    )
                    .await;
                Some((scope, handle))
            }
            None => None,
        };

        let mut crashes = self.s.crashes.iter().peekable();
        let mut nudges = self.s.nudges.iter().peekable();
        let partition = self.s.partition;
        let calm_at = t0 + self.s.calm_after();
        let mut calm = false;
        let deadline = calm_at + self.s.calm_bound() + Duration::from_secs(600);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = Instant::now() - t0;
            self.clock.store(now.as_millis() as u64, Ordering::Relaxed);
            self.check_final_file()?;
            if let Some((from, until)) = partition {
                self.nets[0].partition(now >= from && now < until);
            }
            self.apply_outages(now);
            if !calm && Instant::now() >= calm_at {
                for net in &self.nets {
                    net.calm(true);
                }
                self.nets[0].partition(false);
                calm = true;
            }
            if let Some(nudge) = nudges.next_if(|n| n.at <= now) {
                let _ = client.resume_matching(None, true).await;
                let _ = client.reprioritize(id, -1).await;
                if let Some(after) = nudge.crash_after {
                    tokio::time::sleep(after).await;
                    out.crashes += 1;
                    drop(client);
                    end(client_scope).await;
                    (client_scope, client) =
                        self.start_client(&self.client_home, &self.uris[0]).await?;
                }
                continue;
            }
            if let Some(crash) = crashes.next_if(|c| c.at <= now) {
                out.crashes += 1;
                match crash.party {
                    Party::Agent => {
                        let acked = acked_chunks(&client, &id);
                        if let Some(scope) = agent.take() {
                            end(scope).await;
                        }
                        out.acked_checked += self.check_acked_kept(&id, &acked)?;
                        tokio::time::sleep(crash.down_for).await;
                        agent = Some(self.start_agent().await?);
                    }
                    Party::Client => {
                        drop(client);
                        end(client_scope).await;
                        tokio::time::sleep(crash.down_for).await;
                        (client_scope, client) =
                            self.start_client(&self.client_home, &self.uris[0]).await?;
                    }
                }
                continue;
            }
            let view = client
                .snapshot()
                .borrow()
                .transfers
                .iter()
                .find(|t| t.id == id)
                .map(|t| (t.status, t.error.clone(), t.faults.retransmitted));
            if trace() && (now.as_millis() % 5000) < 200 {
                eprintln!("sim t={:?} real={:?} {view:?}", now, real.elapsed());
            }
            if let Some((_, _, resent)) = view {
                out.resent = out.resent.max(resent);
            }
            match view {
                Some((TransferStatus::Completed, ..)) => break,
                Some((TransferStatus::Failed, error, _)) => {
                    out.retries += 1;
                    if out.retries > 5 {
                        return Err(format!(
                            "the transfer failed {} times; last: {}",
                            out.retries,
                            error.unwrap_or_default()
                        ));
                    }
                    client
                        .retry(id)
                        .await
                        .map_err(|e| format!("retry refused: {e}"))?;
                }
                Some((TransferStatus::Cancelled, ..)) => {
                    return Err("the transfer was cancelled though nobody asked".into())
                }
                Some(_) => {}
                None if Instant::now() - t0 > Duration::from_secs(5) => {
                    return Err("the client lost the transfer's record".into())
                }
                None => {}
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not complete {} s after the faults stopped (bound {} s)",
                    (Instant::now() - calm_at).as_secs(),
                    self.s.calm_bound().as_secs()
                ));
            }
        }
        let done = Instant::now();
        out.simulated = done - t0;
        out.after_calm = done.saturating_duration_since(calm_at);
        out.calm_bound = self.s.calm_bound();
        if out.after_calm > out.calm_bound {
            return Err(format!(
                "finished {} s after the faults stopped, beyond the bound of {} s",
                out.after_calm.as_secs(),
                out.calm_bound.as_secs()
            ));
        }
        self.check_complete()?;
        if let Some((scope, handle)) = stranger {
            drop(handle);
            end(scope).await;
            if [
                self.root.join(STRANGER_REMOTE),
                self.root.join(CLIENT).join(STRANGER_REMOTE),
            ]
            .iter()
            .any(|p| p.exists())
            {
                return Err("a stranger's upload reached the storage root".into());
            }
        }
        drop(client);
        end(client_scope).await;
        if let Some(scope) = agent {
            end(scope).await;
        }
        for net in &self.nets {
            let c = &net.counts;
            out.sent += c.sent.load(Ordering::Relaxed);
            out.lost += c.lost.load(Ordering::Relaxed);
            out.duplicated += c.duplicated.load(Ordering::Relaxed);
            out.reordered += c.reordered.load(Ordering::Relaxed);
            out.corrupted += c.corrupted.load(Ordering::Relaxed);
            out.cut += c.cut.load(Ordering::Relaxed);
        }
        let allowed = self.s.resend_allowance(&out);
        if out.resent > allowed {
            return Err(format!(
                "{} chunks sent again, more than the {allowed} that what the channels lost, cut or disordered can explain",
                out.resent
            ));
        }
        Ok(out)
    }

    /// Each link's outage, on or off at `now` (one that never ends stays
    /// on past the calm: that link is gone).
    fn apply_outages(&self, now: Duration) {
        for (link, net) in self.s.links.iter().zip(&self.nets) {
            let Some(outage) = link.outage else { continue };
            let on = outage.active(now);
            match outage.kind {
                OutageKind::FailingSends => net.fail_sends(on),
                OutageKind::Blackhole(party) => {
                    let to = match party {
                        Party::Client => &self.addresses[0],
                        Party::Agent => &self.addresses[1],
                    };
                    net.blackhole(on.then(|| to.clone()));
                }
            }
        }
    }

    async fn start_agent(&self) -> Result<Scope, String> {
        for _ in 0..100 {
            let scope = Scope::new();
            let (tx, mut rx) = tokio::sync::oneshot::channel();
            let cfg = AgentConfig {
                home: self.agent_home.clone(),
                root: self.root.clone(),
                transports: self.uris[1].clone(),
                bwlimit: None,
                settings: Default::default(),
            };
            scope
                .enter(async {
                    crate::task::spawn(async move {
                        let ended = agent::run(cfg, std::future::pending()).await;
                        let _ = tx.send(ended);
                    });
                })
                .await;
            tokio::time::sleep(Duration::from_millis(1)).await;
            match rx.try_recv() {
                // The last one's store is still closing: try again.
                Ok(Err(crate::error::CoreError::StoreLocked { .. })) => {
                    end(scope).await;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(Err(e)) => return Err(format!("the agent did not start: {e}")),
                Ok(Ok(())) => return Err("the agent stopped by itself".into()),
                Err(_) => return Ok(scope),
            }
        }
        Err("the agent's store stayed locked after its crash".into())
    }

    async fn start_client(
        &self,
        home: &Home,
        uris: &[TransportUri],
    ) -> Result<(Scope, ClientHandle), String> {
        for _ in 0..100 {
            let scope = Scope::new();
            let cfg = ClientConfig {
                home: home.clone(),
                peer: None,
                transports: uris.to_vec(),
                parallel: 2,
                run_queue: true,
                silence_limit: Duration::from_secs(120),
                embedded_agent: false,
                bwlimit: None,
            };
            match scope.enter(client::start(cfg)).await {
                Ok(handle) => return Ok((scope, handle)),
                Err(crate::error::CoreError::StoreLocked { .. }) => {
                    end(scope).await;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("the client did not start: {e}")),
            }
        }
        Err("the client's store stayed locked after its crash".into())
    }

    /// The file at its final name is the source, byte for byte, if it is
    /// there at all (an upload never shows a partial file there).
    fn check_final_file(&self) -> Result<(), String> {
        let at = self.destination();
        match std::fs::read(&at) {
            Ok(bytes) if bytes == self.source => Ok(()),
            Ok(bytes) => Err(format!(
                "{} holds {} bytes that are not the file ({} bytes)",
                at.display(),
                bytes.len(),
                self.source.len()
            )),
            Err(_) => Ok(()),
        }
    }

    fn check_complete(&self) -> Result<(), String> {
        if !self.destination().exists() {
            return Err(format!(
                "reported complete, but {} is not there",
                self.destination().display()
            ));
        }
        self.check_final_file()
    }

    fn destination(&self) -> PathBuf {
        if self.s.download {
            self.local.clone()
        } else {
            self.root.join(CLIENT).join(REMOTE)
        }
    }

    /// After the agent was killed: every chunk the client had seen
    /// acknowledged is in the agent's persisted map. Returns how many
    /// were checked.
    fn check_acked_kept(&self, id: &TransferId, acked: &[u32]) -> Result<u64, String> {
        if self.s.download || acked.is_empty() {
            return Ok(0);
        }
        let store = open_store(&self.agent_home.store_dir())?;
        let finished = store
            .transfer(id)
            .map_err(|e| e.to_string())?
            .is_none_or(|r| r.status == TransferStatus::Completed);
        if finished {
            // Completed (its map is dropped with its record's end), or not
            // yet offered in a session the agent kept.
            return Ok(0);
        }
        let map = store
            .bitmap(id)
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| crate::bitmap::Bitmap::new(0));
        if let Some(lost) = acked.iter().find(|&&i| i >= map.len() || !map.get(i)) {
            return Err(format!(
                "chunk {lost} was acknowledged to the client, but the agent's store lost it in a crash"
            ));
        }
        Ok(acked.len() as u64)
    }
}

/// `PIGEON_SIM_TRACE=1`: say how the transfer goes every 5 simulated seconds.
fn trace() -> bool {
    std::env::var_os("PIGEON_SIM_TRACE").is_some()
}

/// End a node's scope and let the runtime drop what it was running.
async fn end(scope: Scope) {
    scope.end();
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
}

/// The store of a node just killed, once its last handle has closed.
fn open_store(dir: &Path) -> Result<Store, String> {
    for _ in 0..200 {
        match Store::open(dir) {
            Ok(s) => return Ok(s),
            Err(crate::error::CoreError::StoreLocked { .. }) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(format!("cannot reopen the agent's store: {e}")),
        }
    }
    Err("the agent's store stayed locked after its crash".into())
}

fn acked_chunks(client: &ClientHandle, id: &TransferId) -> Vec<u32> {
    let snapshot = client.snapshot().borrow().clone();
    snapshot
        .transfers
        .iter()
        .find(|t| t.id == *id)
        .map(|t| {
            t.chunk_map
                .iter()
                .enumerate()
                .filter(|(_, &s)| ChunkState::from_u8(s) == ChunkState::Acked)
                .map(|(i, _)| i as u32)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
