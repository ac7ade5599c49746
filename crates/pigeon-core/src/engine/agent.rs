//! The agent: serves uploads, downloads and listings to trusted peers.
//!
//! It answers handshakes only from keys in the trust list (re-read on
//! every handshake, so `pigeon keys trust` works while it runs), checks
//! each request against the peer's permissions and the storage root's
//! rules ([`crate::policy`]), records every request and outcome in the
//! hash-chained audit log, and runs one transfer task per file. After a
//! restart it picks transfers up from the store as their frames arrive.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::early::EarlyGate;
use super::receiver::{Receiver, ReceiverConfig};
use super::router::{route, Hooks};
use super::sender::{finish_record, Outcome, Sender, SenderConfig};
use super::{lock, open_links, sha_hex, token, Node, Peer, Progress, SessionSlot, TaskInput};
use crate::crypto::{respond, PublicKey, TransferSecret};
use crate::engine::handle::RemoteEntry;
use crate::error::Result;
use crate::home::Home;
use crate::policy::{EntryKind, RemotePath, StorageRoot};
use crate::protocol::{Control, Early, Frame, Manifest, RefuseCode};
use crate::store::{
    now_unix, AuditRecord, Role, SessionRecord, SessionStatus, SourceStamp, Store, TransferRecord,
};
use crate::transport::TransportUri;
use crate::view::{Direction, FaultCounters, LogLevel, TransferId, TransferStatus};

pub struct AgentConfig {
    pub home: Home,
    pub root: PathBuf,
    pub transports: Vec<TransportUri>,
}

/// The least time between two answers to one repeated Hello (a client that
/// lost the first asks again after its own timeout, which is longer).
const WELCOME_AGAIN: Duration = Duration::from_millis(250);

/// Partial uploads with no progress for this long are dropped at start.
const PARTIAL_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Drop partial uploads that have not moved for `max_age`, and staging
/// files no transfer owns.
fn expire_partials(node: &Node, root: &StorageRoot, max_age: Duration) {
    let stale = |p: &std::path::Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > max_age)
    };
    let Ok(all) = node.store.transfers() else {
        return;
    };
    let mut owned = std::collections::HashSet::new();
    for mut rec in all {
        let Some(partial) = rec.partial_path.clone() else {
            continue;
        };
        if rec.role != Role::Receiver || rec.status.is_finished() {
            continue;
        }
        if stale(&partial) {
            let _ = std::fs::remove_file(&partial);
            let _ = node.store.clear_chunks(&rec.id);
            rec.status = TransferStatus::Failed;
            rec.error = Some(format!(
                "expired: no progress for {} days",
                max_age.as_secs() / 86400
            ));
            let _ = node.store.put_transfer(&rec);
            tracing::info!(path = %rec.remote_path, "expired a partial upload");
        } else {
            owned.insert(partial);
        }
    }
    if let Ok(entries) = std::fs::read_dir(root.staging_dir()) {
        for entry in entries.flatten() {
            let path = entry.path();
            if !owned.contains(&path) && stale(&path) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Most uploads one peer may have open at once.
pub const MAX_OPEN_UPLOADS: usize = 16;
/// Most chunks one peer's open uploads may hold in all. Each chunk costs
/// the agent a bit of bitmap and a byte of progress map while its upload is
/// open, so a peer's open uploads cost at most about 80 MiB of memory
/// (however many chunks each declares: a manifest may declare 2^26).
pub const MAX_OPEN_CHUNKS: u64 = 1 << 26;

/// Whether one more upload of `manifest` fits beside a peer's `open` ones:
/// their number, their chunks, and the bytes still to land against the
/// storage root's free space (`free`), all checked before anything is
/// allocated for it.
fn within_open_limits(
    open: &[TransferRecord],
    manifest: &Manifest,
    free: Option<u64>,
) -> std::result::Result<(), String> {
    if open.len() >= MAX_OPEN_UPLOADS {
        return Err(format!(
            "{} uploads of this peer are already open (at most {MAX_OPEN_UPLOADS}); let them finish or cancel some",
            open.len()
        ));
    }
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
            t.manifest.size.saturating_sub(landed)
        })
        .sum();
    if let Some(free) = free {
        let needed = pending.saturating_add(manifest.size);
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

/// How long a transfer task waits for a silent client before it stops
/// (its state stays in the store for when the client comes back).
const IDLE_LIMIT: Duration = Duration::from_secs(600);

/// Run the agent until `shutdown` resolves.
pub async fn run(cfg: AgentConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let me = cfg.home.identity()?;
    let store = Store::open(&cfg.home.store_dir())?;
    let root = StorageRoot::open(&cfg.root)?;
    // Few frames in flight between link and router: memory stays bounded.
    let (tx, rx) = mpsc::channel(8);
    let links = open_links(&cfg.transports, me.public().id(), tx, false)?;
    let node = Arc::new(Node::new(me, store, links));
    let hooks = Arc::new(AgentHooks {
        home: cfg.home.clone(),
        root,
        welcomes: Mutex::new(HashMap::new()),
        early: Mutex::new(EarlyGate::default()),
        refused: Mutex::new(RefusalTally::default()),
        trust_stamp: Mutex::new(None),
        hashes: Arc::new(Mutex::new(HashMap::new())),
    });
    hooks.reload_trust(&node);
    expire_partials(&node, &hooks.root, PARTIAL_EXPIRY);
    tracing::info!(
        key = %node.me.public(),
        inbox = %node.my_id,
        root = %hooks.root.path().display(),
        transports = %node.transports_label(),
        "agent ready"
    );
    let hooks_ref = hooks.clone();
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
    // Tasks keep their state in the store; make it durable before leaving.
    node.store.flush()?;
    tracing::info!("agent stopped; unfinished transfers resume when their clients return");
    Ok(())
}

/// Which request a refusal answers.
#[derive(Clone, Copy)]
struct Req<'a> {
    transfer: TransferId,
    action: &'static str,
    path: &'a str,
}

/// A Welcome as sent, and when it last went.
type SentWelcome = (Vec<u8>, tokio::time::Instant);

/// SHA-256 of files by path, valid while their stamp is unchanged.
type HashCache = HashMap<PathBuf, (SourceStamp, [u8; 32])>;

struct AgentHooks {
    home: Home,
    root: StorageRoot,
    /// The answer to each handshake, sent again if the client repeats it.
    /// (When it was last sent: a Hello replayed in a loop gets at most
    /// one every [`WELCOME_AGAIN`].)
    welcomes: Mutex<HashMap<[u8; 16], SentWelcome>>,
    /// Sessions whose early data was taken, so a replay of it is not.
    early: Mutex<EarlyGate>,
    /// Refusals of untrusted keys, summed per minute.
    refused: Mutex<RefusalTally>,
    /// The trust file as last read (size, mtime): re-read only on change.
    trust_stamp: Mutex<Option<(u64, u64, std::time::SystemTime)>>,
    /// SHA-256 of files listed before, while they stay unchanged.
    hashes: Arc<Mutex<HashCache>>,
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
        let path = self.home.dir().join("peers.toml");
        let stamp = std::fs::metadata(&path).ok().and_then(|m| {
            use std::os::unix::fs::MetadataExt;
            // Rewritten by rename: a new inode every time.
            Some((m.ino(), m.len(), m.modified().ok()?))
        });
        {
            let mut last = lock(&self.trust_stamp);
            if stamp.is_some() && *last == stamp {
                return;
            }
            *last = stamp;
        }
        let trusted = match self.home.trusted() {
            Ok(t) => t,
            Err(e) => {
                node.log(LogLevel::Error, format!("cannot read the trust list: {e}"));
                return;
            }
        };
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

    fn refuse(&self, node: &Node, peer: &Peer, req: Req<'_>, code: RefuseCode, reason: String) {
        let Req {
            transfer,
            action,
            path,
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
            None,
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

    async fn on_offer(&self, node: &Arc<Node>, peer: Arc<Peer>, offer: Control) {
        let Control::Offer {
            transfer,
            manifest,
            secret,
            path,
            overwrite,
            ..
        } = offer.clone()
        else {
            return;
        };
        let req = Req {
            transfer,
            action: "upload",
            path: &path,
        };
        let refuse = |code, reason: String| self.refuse(node, &peer, req, code, reason);
        if let Ok(Some(rec)) = node.store.transfer(&transfer) {
            // A completed transfer's key is gone: the same peer offering the
            // same manifest in its authenticated session is enough to say Done.
            let same_key =
                rec.status == TransferStatus::Completed || rec.secret.as_ref() == Some(&secret);
            if rec.peer != peer.name.as_str() || rec.manifest != manifest || !same_key {
                return refuse(RefuseCode::Internal, "transfer id already in use".into());
            }
            match rec.status {
                TransferStatus::Completed => {
                    if let Some(sha256) = rec.sha256 {
                        node.send_control(
                            &peer,
                            &Control::Done {
                                transfer,
                                sha256,
                                faults: rec.faults,
                            },
                        );
                    }
                }
                TransferStatus::Cancelled | TransferStatus::Failed => {
                    // Offered again after it failed here: start it over.
                    if let Some(p) = &rec.partial_path {
                        let _ = std::fs::remove_file(p);
                    }
                    let _ = node.store.delete_transfer(&transfer);
                }
                _ => {
                    let input = TaskInput::Control(offer);
                    spawn_receiver(node.clone(), peer, rec, Some(input), &self.root);
                    return;
                }
            }
            if rec.status == TransferStatus::Completed {
                return;
            }
        }
        if let Err(reason) = manifest.check() {
            return refuse(RefuseCode::TooLarge, reason);
        }
        if !lock(&peer.permissions).upload {
            return refuse(
                RefuseCode::Permission,
                format!("peer {} may not upload", peer.name),
            );
        }
        let remote = match RemotePath::parse_file(&path) {
            Ok(p) => p,
            Err(e) => return refuse(RefuseCode::BadPath, e.to_string()),
        };
        let target = match self.root.prepare_parent(&remote) {
            Ok(t) => t,
            Err(e) => return refuse(RefuseCode::BadPath, e.to_string()),
        };
        let existing = self.root.kind(&remote);
        if existing == Some(EntryKind::Folder) {
            return refuse(RefuseCode::Exists, format!("{remote} is a folder"));
        }
        if existing.is_some() && !overwrite {
            // The same size: perhaps the same file, sent again after an
            // interruption. Its hash (on a worker, not the router's time)
            // lets the sender tell; anything else is a plain refusal.
            if let Some(file) = self
                .root
                .open_file(&remote)
                .ok()
                .filter(|f| f.metadata().is_ok_and(|m| m.len() == manifest.size))
            {
                let node = node.clone();
                crate::task::spawn(async move {
                    let size = manifest.size;
                    let hashed = tokio::task::spawn_blocking(move || {
                        super::sender::hash_open_file(&file, size)
                    })
                    .await;
                    if let Ok(Ok(sha256)) = hashed {
                        node.send_control(&peer, &Control::Present { transfer, sha256 });
                    }
                });
                return;
            }
            return refuse(
                RefuseCode::Exists,
                format!(
                    "{remote} already exists on the agent; upload with --overwrite to replace it"
                ),
            );
        }
        let open: Vec<TransferRecord> = match node.store.transfers() {
            Ok(all) => all
                .into_iter()
                .filter(|t| {
                    t.role == Role::Receiver
                        && t.peer == peer.name.as_str()
                        && !t.status.is_finished()
                })
                .collect(),
            Err(e) => return refuse(RefuseCode::Internal, e.to_string()),
        };
        let (same_path, others): (Vec<_>, Vec<_>) = open
            .into_iter()
            .partition(|t| t.remote_path == remote.to_string());
        if let Err(reason) = within_open_limits(&others, &manifest, self.root.free_bytes()) {
            return refuse(RefuseCode::TooLarge, reason);
        }
        // An interrupted upload of the same path by the same peer is
        // superseded by this one (its source changed): drop its partial.
        {
            for old in same_path {
                // A newer offer for the same path replaces it: a running
                // task discards its own partial (and tells its sender).
                if node.deliver(&old.id, TaskInput::Cancel).await {
                    continue;
                }
                if let Some(p) = &old.partial_path {
                    let _ = std::fs::remove_file(p);
                }
                let _ = node.store.delete_transfer(&old.id);
            }
        }
        let rec = TransferRecord {
            id: transfer,
            direction: Direction::Upload,
            role: Role::Receiver,
            peer: peer.name.to_string(),
            local_path: target,
            remote_path: remote.to_string(),
            partial_path: Some(self.root.staging_dir().join(format!("{transfer}.part"))),
            chunks_total: manifest.chunk_count(),
            manifest,
            secret: Some(secret),
            seal_run: 0,
            sha256: None,
            status: TransferStatus::InProgress,
            transport: node.transports_label(),
            chunks_done: 0,
            created_unix: now_unix(),
            completed_unix: None,
            source: None,
            error: None,
            priority: 0,
            no_compress: false,
            overwrite,
            faults: FaultCounters::default(),
        };
        let stored = rec
            .live_secret()
            .and_then(|secret| node.store.put_secret(&rec.id, secret))
            .and_then(|()| node.store.put_transfer(&rec));
        if let Err(e) = stored {
            return refuse(RefuseCode::Internal, e.to_string());
        }
        audit(
            node,
            peer.name.as_str(),
            "upload",
            &rec.remote_path,
            "accepted",
            None,
        );
        node.log(
            LogLevel::Info,
            format!(
                "{} uploads {} ({} bytes)",
                peer.name, rec.remote_path, rec.manifest.size
            ),
        );
        spawn_receiver(
            node.clone(),
            peer,
            rec,
            Some(TaskInput::Control(offer)),
            &self.root,
        );
    }

    async fn on_fetch(
        &self,
        node: &Arc<Node>,
        peer: Arc<Peer>,
        transfer: TransferId,
        path: String,
    ) {
        let req = Req {
            transfer,
            action: "download",
            path: &path,
        };
        let refuse = |code, reason: String| self.refuse(node, &peer, req, code, reason);
        if !lock(&peer.permissions).download {
            return refuse(
                RefuseCode::Permission,
                format!("peer {} may not download", peer.name),
            );
        }
        let remote = match RemotePath::parse_file(&path) {
            Ok(p) => p,
            Err(e) => return refuse(RefuseCode::BadPath, e.to_string()),
        };
        let file = match self.root.resolve(&remote) {
            Ok(f) => f,
            Err(e) => return refuse(RefuseCode::BadPath, e.to_string()),
        };
        // Opened through the root's handle: what is sent is what was checked.
        let opened = self.root.open_file(&remote).and_then(|f| {
            let meta = f.metadata()?;
            Ok((f, meta))
        });
        let (source, meta) = match opened {
            Ok((f, m)) if m.is_file() => (f, m),
            Ok(_) => return refuse(RefuseCode::NotFound, format!("{remote} is not a file")),
            Err(_) => return refuse(RefuseCode::NotFound, format!("{remote} does not exist")),
        };
        let stamp = SourceStamp::of(&meta);
        let existing = node.store.transfer(&transfer).ok().flatten();
        let (rec, restarted) = match existing {
            Some(rec) if rec.peer != peer.name.as_str() || rec.role != Role::Sender => {
                return refuse(RefuseCode::Internal, "transfer id already in use".into())
            }
            Some(rec) if rec.source == Some(stamp) && rec.local_path == file => (rec, false),
            Some(mut rec) => {
                // Changed since the interrupted download: new key, new manifest.
                let _ = node.store.clear_chunks(&transfer);
                rec.manifest = manifest_for(&remote, &source, &meta, rec.manifest.chunk_size);
                rec.chunks_total = rec.manifest.chunk_count();
                rec.secret = Some(TransferSecret::random());
                rec.source = Some(stamp);
                rec.local_path = file.clone();
                rec.status = TransferStatus::InProgress;
                (rec, true)
            }
            None => {
                let chunk_size = super::client::chunk_size_for(&node.links);
                let manifest = manifest_for(&remote, &source, &meta, chunk_size);
                let rec = TransferRecord {
                    id: transfer,
                    direction: Direction::Download,
                    role: Role::Sender,
                    peer: peer.name.to_string(),
                    local_path: file.clone(),
                    remote_path: remote.to_string(),
                    partial_path: None,
                    chunks_total: manifest.chunk_count(),
                    manifest,
                    secret: Some(TransferSecret::random()),
                    seal_run: 0,
                    sha256: None,
                    status: TransferStatus::InProgress,
                    transport: node.transports_label(),
                    chunks_done: 0,
                    created_unix: now_unix(),
                    completed_unix: None,
                    source: Some(stamp),
                    error: None,
                    priority: 0,
                    no_compress: false,
                    overwrite: false,
                    faults: FaultCounters::default(),
                };
                audit(
                    node,
                    peer.name.as_str(),
                    "download",
                    &rec.remote_path,
                    "accepted",
                    None,
                );
                (rec, false)
            }
        };
        let stored = rec
            .live_secret()
            .and_then(|secret| node.store.put_secret(&rec.id, secret))
            .and_then(|()| node.store.put_transfer(&rec));
        if let Err(e) = stored {
            return refuse(RefuseCode::Internal, e.to_string());
        }
        // Durable before the offer leaves: a restart must offer the same key.
        if let Err(e) = node.store.flush_async().await {
            return refuse(RefuseCode::Internal, e.to_string());
        }
        if let Err(reason) = spawn_sender(node.clone(), peer.clone(), rec, restarted, &self.root) {
            refuse(RefuseCode::Internal, reason);
        }
    }

    async fn on_list(
        &self,
        node: &Arc<Node>,
        peer: Arc<Peer>,
        request: u64,
        dir: String,
        offset: u32,
    ) {
        let refuse = |reason: String| refuse_list(node, &peer, request, &dir, reason);
        if !lock(&peer.permissions).list {
            return refuse(format!("peer {} may not list", peer.name));
        }
        let remote = match RemotePath::parse(&dir) {
            Ok(p) => p,
            Err(e) => return refuse(e.to_string()),
        };
        if let Err(e) = self.root.resolve(&remote) {
            return refuse(e.to_string());
        }
        // Listing (and hashing) runs beside the router: a big folder must
        // not hold up every other peer's frames.
        let root = self.root.clone();
        let hashes = self.hashes.clone();
        let node = node.clone();
        crate::task::spawn(async move {
            let cache: HashCache = lock(&hashes).clone();
            let listed = tokio::task::spawn_blocking(move || list_dir(&root, &remote, cache)).await;
            let (entries, fresh) = match listed {
                Ok(Ok(x)) => x,
                Ok(Err(reason)) => return refuse_list(&node, &peer, request, &dir, reason),
                Err(_) => return,
            };
            lock(&hashes).extend(fresh);
            if offset == 0 {
                audit(&node, peer.name.as_str(), "list", &dir, "ok", None);
            }
            // Pages small enough to seal in one control frame.
            let mut page = vec![];
            let mut bytes = 0;
            let mut i = offset as usize;
            while i < entries.len() && bytes < 40_000 {
                bytes += entries[i].path.len() + 120;
                page.push(entries[i].clone());
                i += 1;
            }
            node.send_control(
                &peer,
                &Control::Listing {
                    request,
                    entries: page,
                    more: i < entries.len(),
                },
            );
        });
    }
}

/// Refuse a listing: audited, and the reason goes back to the peer.
fn refuse_list(node: &Node, peer: &Peer, request: u64, dir: &str, reason: String) {
    audit(
        node,
        peer.name.as_str(),
        "list",
        dir,
        &format!("refused: {reason}"),
        None,
    );
    node.send_control(peer, &Control::ListRefused { request, reason });
}

/// Append one line to the audit log (a failure is logged, not fatal).
fn audit(node: &Node, peer: &str, action: &str, path: &str, outcome: &str, sha: Option<[u8; 32]>) {
    let rec = AuditRecord {
        seq: 0,
        prev: [0; 32],
        time_unix: 0,
        peer: peer.to_string(),
        action: action.to_string(),
        path: path.to_string(),
        outcome: outcome.to_string(),
        sha256: sha.as_ref().map(sha_hex),
        transport: node.transports_label(),
    };
    if let Err(e) = node.store.audit(rec) {
        node.log(LogLevel::Error, format!("audit log write failed: {e}"));
    }
}

fn manifest_for(
    remote: &RemotePath,
    file: &std::fs::File,
    meta: &std::fs::Metadata,
    chunk_size: u32,
) -> Manifest {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    let mut head = vec![0u8; 8192];
    let n = file.read_at(&mut head, 0).unwrap_or(0);
    head.truncate(n);
    Manifest {
        name: remote.file_name().unwrap_or_default().to_string(),
        size: meta.len(),
        chunk_size,
        mime: super::client::mime_of(&head),
        modified_unix: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
        mode: meta.permissions().mode() & 0o777,
    }
}

/// Largest file a listing hashes when it has no cached hash.
const LIST_HASH_LIMIT: u64 = 64 * 1024 * 1024;

/// List the entries of `remote` with sizes and (for files up to
/// [`LIST_HASH_LIMIT`], or cached) hashes, through the root's handle:
/// symlinks are not listed, and pigeon's own folder never is.
/// Returns the entries and the hashes computed on the way (for the cache).
fn list_dir(
    root: &StorageRoot,
    remote: &RemotePath,
    cache: HashCache,
) -> std::result::Result<(Vec<RemoteEntry>, HashCache), String> {
    let dir = match root.kind(remote) {
        Some(EntryKind::Folder) => root
            .open_dir(remote)
            .map_err(|e| format!("cannot read {remote}: {e}"))?,
        Some(EntryKind::File) => return Err(format!("{remote} is not a folder")),
        None => return Err(format!("{remote} does not exist")),
    };
    let mut entries = vec![];
    let mut fresh = HashCache::new();
    let read = dir
        .entries()
        .map_err(|e| format!("cannot read {remote}: {e}"))?;
    for entry in read.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if remote.is_root() && crate::policy::is_reserved(&name) {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            continue;
        }
        let rel = if remote.is_root() {
            name.clone()
        } else {
            format!("{remote}/{name}")
        };
        let on_disk = root.path().join(&rel);
        let (size, modified, sha256) = if kind.is_dir() {
            let modified = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .map(|t| t.into_std());
            (0, modified, None)
        } else {
            let Ok(file) = entry.open() else {
                continue;
            };
            let file = file.into_std();
            let Ok(meta) = file.metadata() else {
                continue;
            };
            let stamp = SourceStamp::of(&meta);
            let sha256 = match cache.get(&on_disk) {
                Some((s, h)) if *s == stamp => Some(sha_hex(h)),
                // Big files are not hashed on a listing's time: the router
                // waits for it.
                _ if meta.len() > LIST_HASH_LIMIT => None,
                _ => super::sender::hash_open_file(&file, meta.len())
                    .ok()
                    .map(|h| {
                        fresh.insert(on_disk.clone(), (stamp, h));
                        sha_hex(&h)
                    }),
            };
            (meta.len(), meta.modified().ok(), sha256)
        };
        let modified_unix = modified
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        entries.push(RemoteEntry {
            path: rel,
            size,
            is_dir: kind.is_dir(),
            sha256,
            modified_unix,
        });
    }
    entries.sort_by(|a, b| (!a.is_dir, &a.path).cmp(&(!b.is_dir, &b.path)));
    Ok((entries, fresh))
}

impl Hooks for AgentHooks {
    fn on_hello(
        &self,
        node: &Arc<Node>,
        link: usize,
        session: [u8; 16],
        from: PublicKey,
        noise: Vec<u8>,
        sender: Option<crate::transport::Address>,
    ) -> Option<(Arc<Peer>, Vec<Control>)> {
        self.reload_trust(node);
        let Some(peer) = lock(&node.peers).values().find(|p| p.key == from).cloned() else {
            // Anyone can send these, from as many keys as they like: the
            // first of a minute is logged and audited at once, the rest of
            // that minute in one record when it ends.
            let now = tokio::time::Instant::now();
            let due = lock(&self.refused).refuse(from, now);
            for (peer, outcome) in due {
                tracing::warn!(peer = %peer, "{outcome}");
                audit(node, &peer, "handshake", "", &outcome, None);
            }
            if lock(&self.refused).may_answer(from, now) {
                answer_untrusted(node, link, session, from, &noise, sender);
            }
            return None;
        };
        // The answer goes where the trust list pins the peer, else where the
        // Hello came from (not learned: a Hello can be replayed; only an
        // opened sealed frame moves replies).
        let reply_to = peer
            .pinned_on(link)
            .or_else(|| sender.clone())
            .unwrap_or_else(|| peer.address_on(link));
        let again = {
            let mut w = lock(&self.welcomes);
            match w.get_mut(&session) {
                Some((welcome, sent)) => {
                    let due = sent.elapsed() >= WELCOME_AGAIN;
                    if due {
                        *sent = tokio::time::Instant::now();
                    }
                    Some(due.then(|| welcome.clone()))
                }
                None => None,
            }
        };
        if let Some(welcome) = again {
            if let Some(welcome) = welcome {
                node.links[link].send_control(&reply_to, welcome, None);
            }
            return None;
        }
        // A session by this id exists but its answer was forgotten: never
        // replace it (the live client holds its keys).
        if lock(&node.sessions).contains_key(&session) {
            return None;
        }
        let (sess, reply, early) = match respond(&node.me, &peer.key, &session, &noise) {
            Ok(x) => x,
            Err(e) => {
                node.record_fault(link, |s| {
                    s.corrupt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                });
                tracing::debug!("bad handshake: {e}");
                return None;
            }
        };
        let Ok(welcome) = (Frame::Welcome {
            session,
            noise: reply.clone(),
        })
        .encode() else {
            return None;
        };
        let slot = Arc::new(SessionSlot::new(session, peer.clone(), link, sess, &reply));
        node.add_session(slot.clone());
        {
            let mut w = lock(&self.welcomes);
            // Bounded: the one answered longest ago goes first.
            if w.len() >= 1024 {
                if let Some(oldest) = w.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k) {
                    w.remove(&oldest);
                }
            }
            w.insert(session, (welcome.clone(), tokio::time::Instant::now()));
        }
        let _ = node.store.replace_sessions(&SessionRecord {
            id: session,
            peer: peer.name.to_string(),
            transport: node.links[link].describe().to_string(),
            token: token(&session),
            status: SessionStatus::Active,
            created_unix: now_unix(),
            expires_unix: now_unix() + 24 * 3600,
        });
        audit(node, peer.name.as_str(), "session", "", "opened", None);
        tracing::info!(peer = %peer.name, session = %token(&session), "session opened");
        node.links[link].send_control(&reply_to, welcome, None);
        // Not current yet: a recorded Hello replayed by the provider would
        // authenticate too. The session becomes the peer's current one when
        // a sealed frame arrives in it, which only the real client can make,
        // or when its early data is fresh and new ([`EarlyGate`]).
        let mut offers = self.take_early(&peer, session, &early)?;
        // Early data is for new uploads: an offer of a transfer this agent
        // already knows could be a recording replayed after a restart (the
        // gate's memory is gone), and would start a cancelled upload over.
        // The genuine client offers again, sealed, once the session is up.
        offers.retain(|o| {
            o.transfer()
                .is_some_and(|id| matches!(node.store.transfer(&id), Ok(None)))
        });
        peer.learn(link, sender.as_ref());
        peer.session.send_replace(Some(slot));
        Some((peer, offers))
    }

    fn on_welcome(&self, _: &Arc<Node>, _: usize, _: [u8; 16], _: Vec<u8>) {}

    fn on_unknown_session(&self, _: &Arc<Node>, _: [u8; 16], _: PublicKey) {}

    async fn on_control(&self, node: &Arc<Node>, peer: Arc<Peer>, control: Control) {
        match control {
            c @ Control::Offer { .. } => self.on_offer(node, peer, c).await,
            Control::Fetch { transfer, path } => self.on_fetch(node, peer, transfer, path).await,
            Control::List {
                request,
                dir,
                offset,
            } => self.on_list(node, peer, request, dir, offset).await,
            Control::Finish { transfer, .. } | Control::Cancel { transfer } => {
                let Ok(Some(rec)) = node.store.transfer(&transfer) else {
                    return;
                };
                if rec.peer != peer.name.as_str() {
                    return;
                }
                match (rec.status, rec.sha256) {
                    (TransferStatus::Completed, Some(sha256)) => {
                        node.send_control(
                            &peer,
                            &Control::Done {
                                transfer,
                                sha256,
                                faults: rec.faults,
                            },
                        );
                    }
                    (s, _) if !s.is_finished() && rec.role == Role::Receiver => {
                        spawn_receiver(
                            node.clone(),
                            peer,
                            rec,
                            Some(TaskInput::Control(control)),
                            &self.root,
                        );
                    }
                    _ => {}
                }
            }
            Control::Abort { transfer, reason } => {
                // The client gave up an upload whose task had stopped here.
                let Ok(Some(mut rec)) = node.store.transfer(&transfer) else {
                    return;
                };
                if rec.peer != peer.name.as_str()
                    || rec.role != Role::Receiver
                    || rec.status.is_finished()
                {
                    return;
                }
                if let Some(p) = &rec.partial_path {
                    let _ = std::fs::remove_file(p);
                }
                let _ = node.store.clear_chunks(&transfer);
                let outcome = Outcome::Failed(format!(
                    "the sender stopped: {}",
                    crate::policy::escape_control(&reason)
                ));
                conclude(node, &mut rec, &outcome, "upload");
            }
            Control::Accept { transfer, .. } | Control::Ack { transfer, .. } => {
                // A client answering a download whose task stopped: resume it.
                let Ok(Some(rec)) = node.store.transfer(&transfer) else {
                    return;
                };
                if rec.peer == peer.name.as_str()
                    && rec.role == Role::Sender
                    && !rec.status.is_finished()
                {
                    let _ = spawn_sender(node.clone(), peer, rec, false, &self.root);
                }
            }
            _ => {}
        }
    }

    async fn on_orphan_chunk(&self, node: &Arc<Node>, id: TransferId, input: TaskInput) {
        let Ok(Some(rec)) = node.store.transfer(&id) else {
            return;
        };
        if rec.role != Role::Receiver || rec.status.is_finished() {
            return;
        }
        let Some(peer) = node.peer(&rec.peer) else {
            return;
        };
        spawn_receiver(node.clone(), peer, rec, Some(input), &self.root);
    }
}

/// Tell the holder of an untrusted key that it is not trusted, so its
/// client can say so at once: finish the handshake its Hello began (which
/// fails unless the Hello was made with that key's private half), seal one
/// [`Control::NotTrusted`] in it, and forget the session. Nothing in the
/// Hello's early data is looked at.
fn answer_untrusted(
    node: &Node,
    link: usize,
    session: [u8; 16],
    from: PublicKey,
    noise: &[u8],
    sender: Option<crate::transport::Address>,
) {
    let Ok((mut sess, reply, _)) = respond(&node.me, &from, &session, noise) else {
        return;
    };
    let frames = Frame::Welcome {
        session,
        noise: reply,
    }
    .encode()
    .and_then(|welcome| {
        let (nonce, body) = sess.seal(&Control::NotTrusted.encode()?)?;
        let sealed = Frame::Sealed {
            session,
            from: node.my_id.0,
            nonce,
            body,
        }
        .encode()?;
        Ok([welcome, sealed])
    });
    if let Ok(frames) = frames {
        let to = sender.unwrap_or_else(|| from.id().to_string());
        for frame in frames {
            node.links[link].send_control(&to, frame, None);
        }
    }
}

fn spawn_receiver(
    node: Arc<Node>,
    peer: Arc<Peer>,
    rec: TransferRecord,
    first: Option<TaskInput>,
    root: &StorageRoot,
) {
    if node.has_task(&rec.id) {
        return;
    }
    let held = node.store.bitmap(&rec.id).ok().flatten();
    let progress = Arc::new(Mutex::new(Progress::new(
        &rec,
        held.as_ref(),
        rec.transport.clone(),
    )));
    let cfg = ReceiverConfig {
        initiator: false,
        silence_limit: IDLE_LIMIT,
        fail_on_silence: false,
        root: Some(root.clone()),
        audit: true,
    };
    let id = rec.id;
    let receiver = match Receiver::new(node.clone(), peer.clone(), rec, cfg, progress) {
        Ok(r) => r,
        Err(e) => {
            node.log(
                LogLevel::Error,
                format!("cannot resume transfer {}: {e}", id.short()),
            );
            return;
        }
    };
    let inbox = node.register_task(id, &peer.name);
    if let Some(first) = first {
        if let Some((_, tx)) = lock(&node.tasks).get(&id) {
            let _ = tx.try_send(first);
        }
    }
    crate::task::spawn(async move {
        let (mut rec, outcome) = receiver.run(inbox).await;
        node.unregister_task(&rec.id);
        conclude(&node, &mut rec, &outcome, "upload");
    });
}

/// Serve a download; an error says why it cannot start (for the client).
fn spawn_sender(
    node: Arc<Node>,
    peer: Arc<Peer>,
    rec: TransferRecord,
    restarted: bool,
    root: &StorageRoot,
) -> std::result::Result<(), String> {
    if node.has_task(&rec.id) {
        // Already sending: a repeated fetch means "offer again".
        let id = rec.id;
        let node2 = node.clone();
        crate::task::spawn(async move {
            node2
                .deliver(
                    &id,
                    TaskInput::Control(Control::Fetch {
                        transfer: id,
                        path: String::new(),
                    }),
                )
                .await;
        });
        return Ok(());
    }
    let progress = Arc::new(Mutex::new(Progress::new(&rec, None, rec.transport.clone())));
    let cfg = SenderConfig {
        silence_limit: IDLE_LIMIT,
        fail_on_silence: false,
        restarted,
        root: Some(root.clone()),
    };
    let id = rec.id;
    let sender = match Sender::new(node.clone(), peer.clone(), rec, cfg, progress) {
        Ok(s) => s,
        Err(e) => {
            node.log(
                LogLevel::Error,
                format!("cannot serve transfer {}: {e}", id.short()),
            );
            return Err(format!("the agent cannot read the file: {e}"));
        }
    };
    let inbox = node.register_task(id, &peer.name);
    crate::task::spawn(async move {
        let (mut rec, outcome) = sender.run(inbox).await;
        node.unregister_task(&rec.id);
        conclude(&node, &mut rec, &outcome, "download");
    });
    Ok(())
}

fn conclude(node: &Node, rec: &mut TransferRecord, outcome: &Outcome, action: &str) {
    finish_record(rec, outcome);
    let _ = node.store.put_transfer(rec);
    let _ = node.store.flush();
    super::forget_key_if_ended(node, rec);
    let (outcome_text, sha) = match outcome {
        Outcome::Completed(sha) => ("completed".to_string(), Some(*sha)),
        Outcome::Failed(e) => (format!("failed: {e}"), None),
        Outcome::Cancelled => ("cancelled".to_string(), None),
        Outcome::Paused | Outcome::Stopped => return,
    };
    // A completed upload was audited with its completion, before its Done.
    let audited = action == "upload" && sha.is_some();
    let rec_copy = rec.clone();
    let entry = AuditRecord {
        seq: 0,
        prev: [0; 32],
        time_unix: 0,
        peer: rec_copy.peer.clone(),
        action: action.to_string(),
        path: rec_copy.remote_path.clone(),
        outcome: outcome_text.clone(),
        sha256: sha.as_ref().map(sha_hex),
        transport: rec_copy.transport.clone(),
    };
    if !audited {
        let _ = node.store.audit(entry);
    }
    node.log(
        if sha.is_some() {
            LogLevel::Info
        } else {
            LogLevel::Warn
        },
        format!(
            "{action} of {} by {}: {outcome_text}",
            rec.remote_path, rec.peer
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;

    fn open_upload(size: u64, chunk_size: u32, done: u32) -> TransferRecord {
        let manifest = Manifest {
            name: "x".into(),
            size,
            chunk_size,
            mime: String::new(),
            modified_unix: 0,
            mode: 0o644,
        };
        TransferRecord {
            id: TransferId::random(),
            direction: Direction::Upload,
            role: Role::Receiver,
            peer: "laptop".into(),
            local_path: "/r/x".into(),
            remote_path: "x".into(),
            partial_path: None,
            chunks_total: manifest.chunk_count(),
            manifest,
            secret: None,
            seal_run: 0,
            sha256: None,
            status: TransferStatus::InProgress,
            transport: String::new(),
            chunks_done: done,
            created_unix: 0,
            completed_unix: None,
            source: None,
            error: None,
            priority: 0,
            no_compress: false,
            overwrite: false,
            faults: FaultCounters::default(),
        }
    }

    #[test]
    fn open_limits_refuse_too_many_too_big_and_too_many_chunks_before_allocating() {
        let small = open_upload(1000, 100, 0).manifest;
        // Number of open uploads.
        let many: Vec<_> = (0..MAX_OPEN_UPLOADS)
            .map(|_| open_upload(10, 10, 0))
            .collect();
        let err = within_open_limits(&many, &small, None).unwrap_err();
        assert!(err.contains("already open"), "{err}");
        assert!(within_open_limits(&many[1..], &small, None).is_ok());
        // Chunks: 2^26 chunks of 16 MiB pass the manifest check, not this.
        let huge = open_upload(u64::from(u32::MAX) * 1024, 64 * 1024, 0).manifest;
        let err = within_open_limits(&[open_upload(1 << 20, 64, 0)], &huge, None).unwrap_err();
        assert!(err.contains("chunks"), "{err}");
        // Free space, counting what open uploads still need.
        let half = open_upload(600, 100, 2);
        let err = within_open_limits(std::slice::from_ref(&half), &small, Some(1200)).unwrap_err();
        assert!(err.contains("not enough space"), "{err}");
        assert!(within_open_limits(&[half], &small, Some(1400)).is_ok());
    }

    #[test]
    fn ten_thousand_untrusted_handshakes_in_a_minute_cost_two_audit_records() {
        let mut tally = RefusalTally::default();
        let t0 = tokio::time::Instant::now();
        let mut records = vec![];
        for i in 0..10_000u64 {
            let key = Identity::generate().unwrap().public();
            records.extend(tally.refuse(key, t0 + Duration::from_millis(i)));
        }
        assert_eq!(records.len(), 1, "{records:?}");
        assert!(tally.keys.len() <= RefusalTally::MAX_KEYS);
        // The next minute's first refusal closes the last one.
        let key = Identity::generate().unwrap().public();
        records.extend(tally.refuse(key, t0 + Duration::from_secs(61)));
        assert_eq!(records.len(), 3, "{records:?}");
        assert!(records[1].1.contains("9999 more handshakes"), "{records:?}");
        assert!(
            records[1].1.contains("4096 or more untrusted keys"),
            "{records:?}"
        );
        assert!(tally.close().is_none());
    }
}
