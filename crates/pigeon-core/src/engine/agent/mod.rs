//! The agent: serves uploads, downloads and listings to trusted peers.
//!
//! It answers handshakes only from keys in the trust list (re-read on
//! every handshake, so `pigeon keys trust` works while it runs), checks
//! each request against the peer's permissions and the storage root's
//! rules ([`crate::policy`]), records every request and outcome in the
//! hash-chained audit log, and runs one transfer task per file. After a
//! restart it picks transfers up from the store as their frames arrive.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::early::EarlyGate;
use super::receiver::{Receiver, ReceiverConfig};
use super::router::{route, Hooks};
use super::sender::{store_outcome, Outcome, Sender, SenderConfig};
use super::{
    lock, open_links, sha_hex, token, Node, Peer, Progress, ProgressSink, SessionSlot, TaskInput,
};
use crate::crypto::{respond, PublicKey, TransferSecret};
use crate::engine::handle::RemoteEntry;
use crate::error::Result;
use crate::home::Home;
use crate::policy::namespace::{Child, Layout, Namespace, SHARED_DIR};
use crate::policy::{
    authorize, authorize_file, EntryKind, Found, RemotePath, Request, Share, StorageRoot, Target,
};
use crate::protocol::{Control, Early, Frame, Manifest, RefuseCode};
use crate::store::{
    now_unix, AuditRecord, NewTransfer, Role, SessionRecord, SessionStatus, SourceStamp, Store,
    TransferRecord,
};
use crate::transport::TransportUri;
use crate::view::{Direction, LogLevel, TransferId, TransferStatus};

pub struct AgentConfig {
    pub home: Home,
    /// `[agent]` of the home's config: quotas, quarantine, cleanup.
    pub settings: crate::home::AgentSettings,
    pub root: PathBuf,
    pub transports: Vec<TransportUri>,
    /// What this party sends, over all its links (`--bwlimit`).
    pub bwlimit: Option<crate::bwlimit::BwLimit>,
}

/// The least time between two answers to one repeated Hello (a client that
/// lost the first asks again after its own timeout, which is longer).
const WELCOME_AGAIN: Duration = Duration::from_millis(250);

/// Most uploads one peer may have open at once.
pub const MAX_OPEN_UPLOADS: usize = 16;
/// Most chunks one peer's open uploads may hold in all. Each chunk costs
/// the agent a bit of bitmap and a byte of progress map while its upload is
/// open, so a peer's open uploads cost at most about 80 MiB of memory
/// (however many chunks each declares: a manifest may declare 2^26).
pub const MAX_OPEN_CHUNKS: u64 = 1 << 26;

/// Whether one more upload of `manifest` fits beside a peer's `open` ones:
/// their chunks, and the bytes still to land against the storage root's
/// free space (`free`), all checked before anything is allocated for it.
/// (Their number is a limit like the others: [`crate::policy::limits`].)
fn within_open_limits(
    open: &[TransferRecord],
    manifest: &Manifest,
    free: Option<u64>,
) -> std::result::Result<(), String> {
    let chunks: u64 = open.iter().map(|t| u64::from(t.chunks_total)).sum();
    if chunks + u64::from(manifest.chunk_count()) > MAX_OPEN_CHUNKS {
        return Err(format!(
            "this peer's open uploads would hold {} chunks, more than {MAX_OPEN_CHUNKS}",
            chunks + u64::from(manifest.chunk_count())
        ));
    }
    let pending: u64 = open
        .iter()
        .map(|t| {
            let landed = u64::from(t.chunks_done) * u64::from(t.manifest.chunk_size);
            t.manifest
                .size
                .saturating_sub(landed)
                .saturating_add(t.manifest.delta.map_or(0, |d| d.size))
        })
        .sum();
    if let Some(free) = free {
        // A delta lands whole, then the file it rebuilds beside it.
        let needed = pending
            .saturating_add(manifest.size)
            .saturating_add(manifest.delta.map_or(0, |d| d.size));
        if needed > free {
            return Err(format!(
                "not enough space on the agent ({} needed with this peer's open uploads, {} free)",
                crate::view::human_bytes(needed),
                crate::view::human_bytes(free)
            ));
        }
    }
    Ok(())
}

/// A file as last seen: inode, size, modification time.
type FileStamp = (u64, u64, std::time::SystemTime);

/// How long a transfer task waits for a silent client before it stops
/// (its state stays in the store for when the client comes back).
const IDLE_LIMIT: Duration = Duration::from_secs(600);

/// Run the agent until `shutdown` resolves.
pub async fn run(cfg: AgentConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let me = cfg.home.identity()?;
    let store = Store::open(&cfg.home.store_dir())?;
    let root = StorageRoot::open(&cfg.root)?;
    // A revoked peer's folder is a peer's folder still, not files from before.
    let peers: Vec<String> = cfg
        .home
        .trusted()
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.name.to_string())
        .chain(
            cfg.home
                .revoked()
                .unwrap_or_default()
                .into_iter()
                .map(|r| r.name.to_string()),
        )
        .collect();
    let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
    let (layout, why) = crate::policy::namespace::layout_of(&root, cfg.settings.shared, &peers)?;
    // Few frames in flight between link and router: memory stays bounded.
    let (tx, rx) = mpsc::channel(8);
    let links = open_links(
        &cfg.transports,
        me.public().id(),
        tx,
        false,
        cfg.bwlimit.as_ref(),
    )?;
    let node = Arc::new(Node::new(me, store, links));
    let hooks = Arc::new_cyclic(|this| AgentHooks {
        this: this.clone(),
        home: cfg.home.clone(),
        root,
        layout,
        settings: cfg.settings,
        limits: Mutex::new(HashMap::new()),
        welcomes: Mutex::new(HashMap::new()),
        early: Mutex::new(EarlyGate::default()),
        refused: Mutex::new(RefusalTally::default()),
        trust_stamp: Mutex::new(None),
        hashes: Arc::new(Mutex::new(
            node.store
                .file_hashes()
                .into_iter()
                .map(|(path, stamp, sha)| (path, (stamp, sha)))
                .collect(),
        )),
        hashing: Arc::new(Mutex::new(HashSet::new())),
        hasher: Arc::new(tokio::sync::Semaphore::new(1)),
        rates: super::rate::Gates::default(),
    });
    hooks.reload_trust(&node);
    // Deltas of transfers that ended, were removed, or were never
    // recorded (a crash between a delta and its record) go.
    let live: HashSet<TransferId> = node
        .store
        .transfers()
        .unwrap_or_default()
        .into_iter()
        .filter(|t| !t.status.is_finished())
        .map(|t| t.id)
        .collect();
    let swept = node.store.sweep_delta_files(&live);
    if swept > 0 {
        tracing::info!("removed {swept} delta files of transfers that ended");
    }
    if let Some(why) = why {
        node.log(LogLevel::Warn, why);
    }
    let admin = Arc::new(admin::Admin {
        home: cfg.home.clone(),
        store: node.store.clone(),
        root: hooks.root.clone(),
        settings: hooks.settings.clone(),
    });
    let busy: Arc<dyn Fn(&TransferId) -> bool + Send + Sync> = {
        let node = node.clone();
        Arc::new(move |id: &TransferId| node.has_task(id))
    };
    // The owner's questions (audit, quota, quarantine, clean) while we
    // hold the store. Without it (a home path too long for a socket, say)
    // those commands wait for the agent to stop; the agent runs anyway.
    let _served = crate::socket::admin::serve(cfg.home.dir(), admin.clone(), busy.clone())
        .map_err(|e| {
            tracing::warn!("not answering `pigeon audit`, `quota`, `quarantine` while running: {e}")
        })
        .ok();
    // Before the first frame is routed: nothing can be using what goes.
    for line in admin::cleanup(&admin.store, &admin.root, &admin.settings, false, &*busy) {
        node.log(LogLevel::Info, format!("cleanup removed {line}"));
    }
    let cleaner = crate::task::spawn(clean_hourly(node.clone(), admin, busy));
    tracing::info!(
        key = %node.me.public(),
        inbox = %node.my_id,
        root = %hooks.root.path().display(),
        layout = %hooks.layout,
        transports = %node.transports_label(),
        "agent ready"
    );
    if lock(&node.peers).is_empty() {
        // Every client would be refused: say so before one tries.
        node.log(
            LogLevel::Warn,
            format!(
                "no peer is trusted yet, so every client is refused until one is: pair with a client (`pigeon pair --name <NAME> --transport <URI>` here, then `pigeon pair <CODE> --transport <URI>` on the client) or trust its key (`pigeon keys trust <CLIENT_KEY> --name <NAME>`, the key from `pigeon keys show` there); this agent's key is {}",
                node.me.public()
            ),
        );
    }
    let hooks_ref = hooks.clone();
    let links = crate::task::spawn(super::watch_links(Arc::downgrade(&node), true));
    let rights = crate::task::spawn(watch_rights(node.clone(), hooks.clone()));
    let router = crate::task::spawn(route(node.clone(), hooks, rx));
    let mirror = crate::task::spawn(super::mirror_status(
        node.clone(),
        cfg.home.dir().join("status.json"),
    ));
    shutdown.await;
    node.drain(Duration::from_secs(2)).await;
    router.abort();
    let summary = lock(&hooks_ref.refused).close();
    if let Some((peer, outcome)) = summary {
        audit(&node, &peer, "handshake", "", &outcome, None);
    }
    mirror.abort();
    cleaner.abort();
    rights.abort();
    links.abort();
    // Tasks keep their state in the store; make it durable before leaving.
    node.store.flush()?;
    tracing::info!("agent stopped; unfinished transfers resume when their clients return");
    Ok(())
}

/// Apply the cleanup policies every [`admin::CLEANUP_EVERY`], saying
/// what went.
async fn clean_hourly(
    node: Arc<Node>,
    admin: Arc<admin::Admin>,
    busy: Arc<dyn Fn(&TransferId) -> bool + Send + Sync>,
) {
    loop {
        tokio::time::sleep(admin::CLEANUP_EVERY).await;
        let (a, b) = (admin.clone(), busy.clone());
        let removed = tokio::task::spawn_blocking(move || {
            admin::cleanup(&a.store, &a.root, &a.settings, false, &*b)
        })
        .await
        .unwrap_or_default();
        for line in removed {
            node.log(LogLevel::Info, format!("cleanup removed {line}"));
        }
    }
}

/// Which request a refusal answers.
#[derive(Clone, Copy)]
struct Req<'a> {
    transfer: TransferId,
    action: &'static str,
    path: &'a str,
    size: Option<u64>,
}

/// A Welcome as sent, and when it last went.
type SentWelcome = (Vec<u8>, tokio::time::Instant);

/// SHA-256 of files by path, valid while their stamp is unchanged.
type HashCache = HashMap<PathBuf, (SourceStamp, [u8; 32])>;

struct AgentHooks {
    /// Itself, for the checks a transfer task makes later
    /// ([`AgentHooks::authority`]).
    this: std::sync::Weak<AgentHooks>,
    home: Home,
    root: StorageRoot,
    /// A folder per peer, or one namespace.
    layout: Layout,
    settings: crate::home::AgentSettings,
    /// Each trusted peer's own limits, from the trust list.
    limits: Mutex<HashMap<String, crate::policy::Limits>>,
    /// The answer to each handshake, sent again if the client repeats it.
    /// (When it was last sent: a Hello replayed in a loop gets at most
    /// one every [`WELCOME_AGAIN`].)
    welcomes: Mutex<HashMap<[u8; 16], SentWelcome>>,
    /// Sessions whose early data was taken, so a replay of it is not.
    early: Mutex<EarlyGate>,
    /// Refusals of untrusted keys, summed per minute.
    refused: Mutex<RefusalTally>,
    /// The trust file and the revoked names as last read (inode, size,
    /// mtime of each): re-read only on change.
    trust_stamp: Mutex<Option<[Option<FileStamp>; 2]>>,
    /// SHA-256 of files listed before, while they stay unchanged (kept
    /// in the store across restarts).
    hashes: Arc<Mutex<HashCache>>,
    /// Big files being hashed in the background, so each is hashed once.
    hashing: Arc<Mutex<HashSet<PathBuf>>>,
    /// One background hash at a time: the agent's CPU and disk stay
    /// available to transfers.
    hasher: Arc<tokio::sync::Semaphore>,
    /// The download rates each peer asked ([`Control::Rate`]).
    rates: super::rate::Gates,
}

/// Refusals of untrusted keys in the current minute. Bounds: one audit
/// record at the first refusal of a minute and one summing up the rest
/// when the minute is over, whatever the number of keys; at most
/// [`RefusalTally::MAX_KEYS`] key ids held to count them.
#[derive(Default)]
struct RefusalTally {
    window: Option<tokio::time::Instant>,
    more: u64,
    keys: std::collections::HashSet<crate::crypto::KeyId>,
    /// Keys answered with a refusal in the last minute, and when.
    answered: HashMap<crate::crypto::KeyId, tokio::time::Instant>,
}

impl RefusalTally {
    const WINDOW: Duration = Duration::from_secs(60);
    const MAX_KEYS: usize = 4096;
    const ANSWERS: usize = 30;
    const ANSWER_AGAIN: Duration = Duration::from_secs(5);

    /// Whether to answer this untrusted key's Hello with a refusal: at most
    /// [`Self::ANSWERS`] a minute in all, and one per key every
    /// [`Self::ANSWER_AGAIN`], so Hellos from many keys cost little.
    fn may_answer(&mut self, key: PublicKey, now: tokio::time::Instant) -> bool {
        let minute = std::time::Duration::from_secs(60);
        self.answered
            .retain(|_, at| now.duration_since(*at) < minute);
        let id = key.id();
        if self.answered.len() >= Self::ANSWERS
            || self
                .answered
                .get(&id)
                .is_some_and(|at| now.duration_since(*at) < Self::ANSWER_AGAIN)
        {
            return false;
        }
        self.answered.insert(id, now);
        true
    }

    /// Count one refused handshake from `key`; returns the audit records
    /// now due, as (peer, outcome).
    fn refuse(&mut self, key: PublicKey, now: tokio::time::Instant) -> Vec<(String, String)> {
        let mut due = vec![];
        if self
            .window
            .is_some_and(|start| now.duration_since(start) < Self::WINDOW)
        {
            self.more += 1;
            if self.keys.len() < Self::MAX_KEYS {
                self.keys.insert(key.id());
            }
            return due;
        }
        due.extend(self.close());
        self.window = Some(now);
        due.push((
            format!("untrusted:{}", key.id()),
            "refused: untrusted key".to_string(),
        ));
        due
    }

    /// The summary of the minute that ended, if more than its first refusal came.
    fn close(&mut self) -> Option<(String, String)> {
        let more = std::mem::take(&mut self.more);
        let keys = std::mem::take(&mut self.keys).len();
        self.window = None;
        (more > 0).then(|| {
            let many = if keys >= Self::MAX_KEYS {
                "or more "
            } else {
                ""
            };
            (
                "untrusted:*".to_string(),
                format!(
                    "refused: {more} more handshakes from {keys} {many}untrusted keys in a minute"
                ),
            )
        })
    }
}

impl AgentHooks {
    /// The offers in a Hello's early data, if the gate lets them in.
    fn take_early(&self, peer: &Peer, session: [u8; 16], early: &[u8]) -> Option<Vec<Control>> {
        if early.is_empty() {
            return None;
        }
        let early = match Early::decode(early) {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(peer = %peer.name, "early data unreadable ({e}); ignored");
                return None;
            }
        };
        if let Err(why) = lock(&self.early).admit(session, &early, now_unix()) {
            tracing::info!(
                peer = %peer.name,
                "early data not taken: {why}; the offers come again in the session"
            );
            return None;
        }
        let offers: Vec<Control> = early
            .offers
            .into_iter()
            .filter(|c| matches!(c, Control::Offer { .. }))
            .collect();
        Some(offers)
    }

    /// Bring the node's peers in line with the trust file, when it changed
    /// since it was last read (a flood of handshakes must not mean a flood
    /// of file reads).
    fn reload_trust(&self, node: &Node) {
        let stamp_of = |file: &str| {
            let meta = std::fs::metadata(self.home.dir().join(file)).ok()?;
            use std::os::unix::fs::MetadataExt;
            // Rewritten by rename: a new inode every time.
            Some((meta.ino(), meta.len(), meta.modified().ok()?))
        };
        let stamp = Some([stamp_of("peers.toml"), stamp_of("revoked.toml")])
            .filter(|[peers, _]| peers.is_some());
        // Held until the list read is applied: the router, the rights
        // watch and receivers reload at once, and one that read an older
        // list must not apply it after one that read the newer.
        let mut last = lock(&self.trust_stamp);
        if stamp.is_some() && *last == stamp {
            return;
        }
        // Never a revoked key, nor another key under a revoked one's name.
        let trusted = match self.home.trusted_and_refused() {
            Ok((t, refused)) => {
                for why in refused {
                    node.log(LogLevel::Warn, why);
                }
                t
            }
            Err(e) => {
                node.log(LogLevel::Error, format!("cannot read the trust list: {e}"));
                return;
            }
        };
        *last = stamp;
        *lock(&self.limits) = trusted
            .iter()
            .map(|t| (t.name.to_string(), t.limits))
            .collect();
        let mut peers = lock(&node.peers);
        peers.retain(|name, p| trusted.iter().any(|t| &t.name == name && t.key == p.key));
        for t in trusted {
            let peer = match peers.get(&t.name) {
                Some(p) => {
                    *lock(&p.permissions) = t.permissions;
                    p.clone()
                }
                None => {
                    let p = Peer::new(t.name.clone(), t.key, t.permissions);
                    peers.insert(t.name, p.clone());
                    p
                }
            };
            node.pin(&peer, &t.addresses);
        }
    }

    /// The live shares made with `peer` (what its view's `shared/` holds).
    fn shares_with(&self, node: &Node, peer: &Peer) -> Vec<Share> {
        if self.layout == Layout::Shared {
            return vec![];
        }
        let now = now_unix();
        node.store
            .shares()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.with == peer.name.as_str() && s.is_live(now))
            .collect()
    }

    /// Where `peer` may upload or download: by its permissions, in its view
    /// (its own folder, and what is shared with it).
    fn authorize_file(
        &self,
        node: &Node,
        peer: &Peer,
        request: Request<'_>,
    ) -> std::result::Result<Target, crate::policy::Refusal> {
        let perms = *lock(&peer.permissions);
        let shares = self.shares_with(node, peer);
        authorize_file(
            peer.name.as_str(),
            &perms,
            &self.root,
            &self.namespace(peer, &shares),
            request,
        )
    }

    /// May the peer of `rec` still do what `rec` does, with its rights as
    /// they are now: its key still trusted (the trust list re-read if it
    /// changed), its permissions, and the share it reached the path
    /// through still there and still allowing it. Every step that writes,
    /// places or reads a peer's bytes after the first asks this again.
    fn recheck(
        &self,
        node: &Node,
        rec: &TransferRecord,
    ) -> std::result::Result<Arc<Peer>, crate::policy::Refusal> {
        self.reload_trust(node);
        let Some(peer) = node.peer(&rec.peer) else {
            return Err(crate::policy::Refusal {
                code: RefuseCode::Permission,
                reason: format!(
                    "peer {} is no longer trusted by the agent (its key was revoked); ask the agent's owner",
                    rec.peer
                ),
            });
        };
        // A running task belongs to the key that began it: a new key the
        // owner trusted under the same name takes the name's folder, not
        // the old key's transfers under way.
        let began_by = lock(&node.tasks)
            .get(&rec.id)
            .filter(|t| t.is_live())
            .map(|t| t.key);
        if began_by.is_some_and(|k| k != peer.key) {
            return Err(crate::policy::Refusal {
                code: RefuseCode::Permission,
                reason: format!(
                    "the key that began this transfer is no longer {}'s: the agent's owner trusted another key under that name; start it again from the new key",
                    rec.peer
                ),
            });
        }
        let perms = *lock(&peer.permissions);
        let shares = self.shares_with(node, &peer);
        let ns = self.namespace(&peer, &shares);
        // The view it was reached by: the peer's own folder, or a share
        // of the folder's owner (the path's first component).
        let owner = rec.remote_path.split('/').next().unwrap_or_default();
        let own = self.layout == Layout::Shared || owner == peer.name.as_str();
        let views = own
            .then(|| ns.view_of(&rec.remote_path, None))
            .into_iter()
            .chain(
                shares
                    .iter()
                    .filter(|s| !own && s.owner == owner)
                    .map(|s| ns.view_of(&rec.remote_path, Some(s))),
            );
        let mut refusal = None;
        for view in views {
            let request = match rec.role {
                Role::Receiver => Request::Upload { path: &view },
                Role::Sender => Request::Download { path: &view },
            };
            match authorize_file(peer.name.as_str(), &perms, &self.root, &ns, request) {
                Ok(t) if t.remote.to_string() == rec.remote_path => return Ok(peer),
                Ok(_) => {}
                Err(r) => {
                    refusal.get_or_insert(r);
                }
            }
        }
        let action = match rec.role {
            Role::Receiver => "upload to",
            Role::Sender => "download",
        };
        Err(refusal
            .filter(|r| r.code == RefuseCode::Permission)
            .unwrap_or_else(|| crate::policy::Refusal {
                code: RefuseCode::Permission,
                reason: format!(
                    "peer {} may no longer {action} {}: what was shared with it there was withdrawn",
                    rec.peer,
                    crate::policy::escape_control(&rec.remote_path)
                ),
            }))
    }

    /// The check a receiver makes just before it puts a file in place.
    fn authority(&self, node: &Arc<Node>) -> super::Authority {
        let (this, node) = (self.this.clone(), node.clone());
        Arc::new(move |rec: &TransferRecord| match this.upgrade() {
            Some(hooks) => hooks.recheck(&node, rec).map(|_| ()).map_err(|r| r.reason),
            None => Err("the agent is stopping".into()),
        })
    }

    /// A stopped transfer the peer may no longer go on with: it fails here
    /// (nothing of it is kept), the refusal is audited and said to the peer.
    fn refuse_stopped(&self, node: &Node, rec: &TransferRecord, refusal: crate::policy::Refusal) {
        drop_held(node, rec, Some(&refusal.reason));
        if let Some(peer) = node.peer(&rec.peer) {
            node.refuse(&peer, rec.id, refusal.code, refusal.reason);
        }
    }

    /// The peer cancels a transfer no task runs here (a running one is
    /// handed the cancel by the router and answers it itself): drop what
    /// is held of it, mark it cancelled, and confirm, also when nothing
    /// was held (the offer never came), so the client can stop asking.
    fn on_cancel(&self, node: &Node, peer: &Peer, transfer: TransferId) {
        let rec = node.store.transfer(&transfer).ok().flatten();
        if let Some(rec) = &rec {
            if rec.peer != peer.name.as_str() {
                return;
            }
            if !rec.status.is_finished() {
                drop_held(node, rec, None);
            }
        }
        node.send_control(peer, &Control::Cancelled { transfer });
    }

    fn namespace<'a>(&self, peer: &'a Peer, shares: &'a [Share]) -> Namespace<'a> {
        Namespace {
            layout: self.layout,
            peer: peer.name.as_str(),
            shares,
        }
    }

    fn refuse(&self, node: &Node, peer: &Peer, req: Req<'_>, code: RefuseCode, reason: String) {
        let Req {
            transfer,
            action,
            path,
            size,
        } = req;
        node.log(
            LogLevel::Warn,
            format!("refused {action} of {path:?} by {}: {reason}", peer.name),
        );
        audit(
            node,
            peer.name.as_str(),
            action,
            path,
            &format!("refused: {reason}"),
            size,
        );
        node.send_control(
            peer,
            &Control::Refuse {
                transfer,
                code,
                reason,
            },
        );
    }
}

/// How often running transfers are checked against the peers' rights as
/// they are now (a share withdrawn, a right lowered, a key revoked).
const RIGHTS_EVERY: Duration = Duration::from_secs(1);

/// Stop every running transfer whose peer lost the right to it, within
/// [`RIGHTS_EVERY`] of the change, whoever made it (a peer's unshare, the
/// owner's `keys revoke` or `keys trust --allow`).
async fn watch_rights(node: Arc<Node>, hooks: Arc<AgentHooks>) {
    let mut every = tokio::time::interval(RIGHTS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut told = HashSet::new();
    loop {
        every.tick().await;
        hooks.stop_revoked(&node, &mut told);
    }
}

impl AgentHooks {
    /// Check each running transfer's rights now; a task that lost them is
    /// told to stop (it tells its peer and keeps nothing).
    /// `told`: the tasks told already (each is told once, and a task busy
    /// hashing never holds up the check of the others).
    fn stop_revoked(&self, node: &Arc<Node>, told: &mut HashSet<TransferId>) {
        let running: HashMap<TransferId, mpsc::Sender<TaskInput>> = lock(&node.tasks)
            .iter()
            .map(|(id, t)| (*id, t.tx.clone()))
            .collect();
        told.retain(|id| running.contains_key(id));
        for (id, tx) in running {
            if told.contains(&id) {
                continue;
            }
            let Ok(Some(rec)) = node.store.transfer_record(&id) else {
                continue;
            };
            // The task's end is audited and said to the peer as it stops.
            if let Err(refusal) = self.recheck(node, &rec) {
                if tx.try_send(TaskInput::Revoked(refusal.reason)).is_ok() {
                    told.insert(id);
                }
            }
        }
    }
}

/// Drop what this agent holds of a transfer no task runs (an upload's
/// partial, its chunk hashes), end its record, durably, and log and audit
/// it: failed with the reason it was `refused`, or else cancelled (its key
/// forgotten).
fn drop_held(node: &Node, rec: &TransferRecord, refused: Option<&str>) {
    if let (Role::Receiver, Some(p)) = (rec.role, &rec.partial_path) {
        let _ = std::fs::remove_file(p);
    }
    let _ = node.store.clear_chunks(&rec.id);
    node.store.forget_transfer_files(&rec.id);
    let _ = node.store.update_transfer(&rec.id, |r| match refused {
        Some(reason) => {
            r.status = TransferStatus::Failed;
            r.error = Some(reason.to_string());
        }
        None => r.status = TransferStatus::Cancelled,
    });
    if refused.is_none() {
        // Cancelled for good: its key is of no more use.
        let _ = node.store.forget_secret(&rec.id);
    }
    let _ = node.store.flush();
    let action = match rec.role {
        Role::Receiver => "upload",
        Role::Sender => "download",
    };
    let path = crate::policy::escape_control(&rec.remote_path);
    let (level, said, outcome) = match refused {
        Some(reason) => (
            LogLevel::Warn,
            format!("stopped {action} of {path} by {}: {reason}", rec.peer),
            format!("refused: {reason}"),
        ),
        None => (
            LogLevel::Info,
            format!("{action} of {path} by {}: cancelled", rec.peer),
            "cancelled".to_string(),
        ),
    };
    node.log(level, said);
    audit(
        node,
        &rec.peer,
        action,
        &rec.remote_path,
        &outcome,
        Some(rec.manifest.size),
    );
}

pub mod admin;
mod downloads;
mod hooks;
pub mod policy;
mod requests;
mod shares;
mod uploads;

use hooks::*;
use requests::*;

#[cfg(test)]
mod tests;
