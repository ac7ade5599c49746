//! The engine: sessions, routing, and one task per transfer.
//!
//! A [`Node`] is one party at run time: its identity, store, links and
//! peers. Its router task reads every frame the links deliver, handles
//! handshakes, opens sealed control frames, and hands each frame to the
//! task of the transfer it belongs to (spawning that task from the store
//! when a transfer resumes after a restart).
//!
//! Transfer tasks are explicit state machines: [`sender`] (offer, send in a
//! window, retransmit on timeout or on gaps in selective acknowledgements,
//! finish with the whole-file hash) and [`receiver`] (check, write at the
//! chunk's offset in a sparse partial file, persist, then acknowledge;
//! verify the whole file before it is renamed into place). Both are used by
//! both sides: a client uploads with a sender, an agent serves a download
//! with one.
//!
//! [`client`] adds the queue and the snapshots a front end reads; [`agent`]
//! adds the policy: who may do what, and where files go.

pub mod agent;
pub mod client;
pub(crate) mod deltas;
mod early;
pub mod handle;
mod links;
mod progress;
mod rate;
mod receiver;
mod router;
mod rto;
mod seal;
mod sender;
pub(crate) mod shape;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};

use crate::crypto::{ChunkNonce, Identity, KeyId, PublicKey, Session};
use crate::error::{CoreError, Result};
use crate::home::PeerName;
use crate::link::{self, LinkHandle};
use crate::policy::Permissions;
use crate::protocol::{Control, Frame};
use crate::store::Store;
use crate::transport::Address;
use crate::view::{Event, LogLevel, TransferId, TransportHealth};

pub use handle::{
    policy_remedy, ClientCommand, ClientHandle, DownloadOptions, RemoteEntry, TransferAction,
    UploadOptions, REPLACE_HINT,
};
pub(crate) use links::{open_links, open_links_named, watch_links};
pub(crate) use progress::{Event as ProgressEvent, Fault, Progress, ProgressSink};
pub(crate) use rto::Rto;

/// What a transfer task is told.
#[derive(Debug)]
pub(crate) enum TaskInput {
    /// Boxed: an offer is large, and a chunk's input is sent far more often.
    Control(Box<Control>),
    /// A chunk, and the link it came by.
    Chunk {
        at: ChunkNonce,
        body: Vec<u8>,
        link: usize,
    },
    Pause,
    Cancel,
    /// The peer may no longer do this (a share withdrawn, a right lowered,
    /// its key revoked): stop, tell it why, keep nothing of it.
    Revoked(String),
}

/// Asks whether the peer of a transfer may still do what it does, with
/// its rights as they are now; `Err` says why not. The agent's receivers
/// ask it before a file is put in place.
pub(crate) type Authority =
    Arc<dyn Fn(&crate::store::TransferRecord) -> std::result::Result<(), String> + Send + Sync>;

/// A running transfer task, as the router and the rights watch know it.
pub(crate) struct TaskEntry {
    /// The key of the peer whose transfer it is, as it was when the task
    /// began: only that key's control frames reach the task, and a key
    /// that replaced it under the same name does not inherit it.
    pub key: PublicKey,
    pub tx: mpsc::Sender<TaskInput>,
}

impl TaskEntry {
    /// Whether the task still takes input (it has not returned).
    pub fn is_live(&self) -> bool {
        !self.tx.is_closed()
    }
}

/// A trusted peer at run time.
pub(crate) struct Peer {
    pub name: PeerName,
    pub key: PublicKey,
    pub address: Address,
    /// Where the peer's authenticated frames came from, per link (a chat
    /// id, a number): where replies go on a transport that answers
    /// whoever writes.
    replies: Mutex<HashMap<usize, Address>>,
    /// Where the trust list says the peer is, per link: replies go there
    /// and nothing moves them ([`Node::pin`]).
    pinned: Mutex<HashMap<usize, Address>>,
    pub permissions: Mutex<Permissions>,
    /// The current session; transfer tasks watch it to resynchronise
    /// (re-offer) when a new one replaces it.
    pub session: watch::Sender<Option<Arc<SessionSlot>>>,
    /// New uploads' offers and first chunks for the next Hello (client).
    pub(crate) early: early::EarlyBox,
    /// When our answers to it last moved off a link in doubt.
    moved_answers: Mutex<Option<tokio::time::Instant>>,
}

impl Peer {
    pub fn new(name: PeerName, key: PublicKey, permissions: Permissions) -> Arc<Peer> {
        Arc::new(Peer {
            address: key.id().to_string(),
            replies: Mutex::new(HashMap::new()),
            pinned: Mutex::new(HashMap::new()),
            name,
            key,
            permissions: Mutex::new(permissions),
            session: watch::channel(None).0,
            early: early::EarlyBox::default(),
            moved_answers: Mutex::new(None),
        })
    }

    /// Where the trust list pins the peer on `link`, if it does.
    pub fn pinned_on(&self, link: usize) -> Option<Address> {
        lock(&self.pinned).get(&link).cloned()
    }

    /// Where to send to this peer on `link`: where the trust list pins
    /// it, else where its authenticated frames came from, else its inbox
    /// name, unless the link answers only whoever writes (`whoever`): the
    /// key id is no chat, and a peer that has neither written on such a
    /// link nor been given an address for it cannot be reached there.
    pub fn address_on(&self, link: usize, whoever: bool) -> Option<Address> {
        self.pinned_on(link)
            .or_else(|| lock(&self.replies).get(&link).cloned())
            .or_else(|| (!whoever).then(|| self.address.clone()))
    }

    /// An authenticated frame of this peer came from `from` on `link`.
    pub fn learn(&self, link: usize, from: Option<&Address>) {
        if lock(&self.pinned).contains_key(&link) {
            return;
        }
        if let Some(from) = from {
            let mut replies = lock(&self.replies);
            if replies.get(&link) != Some(from) {
                replies.insert(link, from.clone());
            }
        }
    }
}

pub(crate) struct SessionSlot {
    pub id: [u8; 16],
    /// When the handshake completed: a newer session supersedes an older one.
    pub created: tokio::time::Instant,
    pub peer: Arc<Peer>,
    pub link: usize,
    pub session: Mutex<Session>,
    /// SHA-256 of the handshake answer that made this session. A different
    /// answer under the same id means the agent lost the session (it
    /// restarted and answered a redelivered Hello with new keys).
    pub answer: [u8; 32],
    /// A sealed frame has opened in this session: the peer holds its keys.
    pub confirmed: std::sync::atomic::AtomicBool,
}

impl SessionSlot {
    pub fn new(
        id: [u8; 16],
        peer: Arc<Peer>,
        link: usize,
        session: Session,
        answer: &[u8],
    ) -> SessionSlot {
        SessionSlot {
            id,
            created: tokio::time::Instant::now(),
            peer,
            link,
            session: Mutex::new(session),
            answer: crate::crypto::sha256(answer),
            confirmed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// Sessions held per peer: the current one and the newest few handshakes
/// (one of which may be about to become current).
pub(crate) const SESSIONS_PER_PEER: usize = 4;

/// One party at run time.
pub(crate) struct Node {
    pub me: Identity,
    pub my_id: KeyId,
    pub store: Store,
    pub links: Vec<LinkHandle>,
    pub peers: Mutex<HashMap<PeerName, Arc<Peer>>>,
    pub sessions: Mutex<HashMap<[u8; 16], Arc<SessionSlot>>>,
    pub tasks: Mutex<HashMap<TransferId, TaskEntry>>,
    pub progress: Mutex<HashMap<TransferId, ProgressSink>>,
    pub events: broadcast::Sender<Event>,
    /// Bumped whenever something a snapshot shows has changed.
    pub changes: watch::Sender<u64>,
    /// New uploads may start in the handshake on slow links (config.toml
    /// `early_data`; [`Node::early_room`]).
    pub early_data: std::sync::atomic::AtomicBool,
    /// When the peer was last heard from (a handshake answer, a frame that
    /// opened, a chunk for a running transfer), or when this node started.
    heard: Mutex<tokio::time::Instant>,
    /// Since when something (a transfer, a listing) has been waiting on
    /// the peer without a break; None while nothing waits.
    waiting_since: Mutex<Option<tokio::time::Instant>>,
    /// Every link has failed in a way only the user can fix: what to tell
    /// them (kept by [`watch_links`]; a client's waits end on it).
    pub(crate) unreachable: watch::Sender<Option<String>>,
}

impl Node {
    pub fn new(me: Identity, store: Store, links: Vec<LinkHandle>) -> Node {
        Node {
            my_id: me.public().id(),
            me,
            store,
            links,
            peers: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            tasks: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
            events: broadcast::channel(1024).0,
            changes: watch::channel(0).0,
            early_data: std::sync::atomic::AtomicBool::new(true),
            heard: Mutex::new(tokio::time::Instant::now()),
            waiting_since: Mutex::new(None),
            unreachable: watch::channel(None).0,
        }
    }

    /// Each link that has failed for a reason only the user can fix, as
    /// `pigeon transports test` would say it: `<URI>: <what is wrong>`.
    pub fn failed_links(&self) -> Vec<(usize, String)> {
        self.links
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.health().failure().map(|why| (i, why)))
            .collect()
    }

    /// When no link works and none can until the user changes a setting:
    /// what is wrong with each, and what to do.
    fn no_working_link(&self) -> Option<String> {
        let failed = self.failed_links();
        if failed.is_empty() || failed.len() < self.links.len() {
            return None;
        }
        let each: Vec<String> = failed.into_iter().map(|(_, why)| why).collect();
        Some(format!(
            "{}; no transport can reach the peer until this is fixed (`pigeon transports test <URI>` checks one); then run the same command again (a transfer resumes where it stopped)",
            each.join("; ")
        ))
    }

    /// Whether something waits on the peer now; its silence counts from
    /// the moment something began to wait, not from an idle hour before.
    pub(crate) fn set_waiting(&self, waiting: bool) {
        let mut since = lock(&self.waiting_since);
        match (waiting, *since) {
            (true, None) => *since = Some(tokio::time::Instant::now()),
            (false, Some(_)) => *since = None,
            _ => {}
        }
    }

    /// How long the peer has not answered while something waited on it.
    pub fn silent_while_waiting(&self) -> Option<Duration> {
        let since = (*lock(&self.waiting_since))?;
        Some(self.silent_for().min(since.elapsed()))
    }

    /// The peer spoke.
    pub(crate) fn heard(&self) {
        *lock(&self.heard) = tokio::time::Instant::now();
    }

    /// How long the peer has been silent (since this node started, if it
    /// never spoke).
    pub fn silent_for(&self) -> Duration {
        lock(&self.heard).elapsed()
    }

    pub fn touch(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    pub fn log(&self, level: LogLevel, message: String) {
        match level {
            LogLevel::Info => tracing::info!("{message}"),
            LogLevel::Warn => tracing::warn!("{message}"),
            LogLevel::Error => tracing::error!("{message}"),
        }
        let _ = self.events.send(Event::Log { level, message });
    }

    /// Keep a new session, and forget the peer's old ones: at most
    /// [`SESSIONS_PER_PEER`] are held (the current one always among them),
    /// whatever a provider replays, and none of a peer no longer trusted.
    pub fn add_session(&self, slot: Arc<SessionSlot>) {
        let current = slot.peer.session.borrow().as_ref().map(|s| s.id);
        let trusted: Vec<PublicKey> = lock(&self.peers).values().map(|p| p.key).collect();
        let mut sessions = lock(&self.sessions);
        sessions.insert(slot.id, slot.clone());
        sessions.retain(|_, s| trusted.contains(&s.peer.key));
        let mut same: Vec<(tokio::time::Instant, [u8; 16])> = sessions
            .values()
            .filter(|s| s.peer.key == slot.peer.key && Some(s.id) != current)
            .map(|s| (s.created, s.id))
            .collect();
        if same.len() + usize::from(current.is_some()) > SESSIONS_PER_PEER {
            same.sort_unstable();
            let drop = same.len() + usize::from(current.is_some()) - SESSIONS_PER_PEER;
            for (_, id) in same.into_iter().take(drop) {
                sessions.remove(&id);
            }
        }
    }

    pub fn peer_by_key_id(&self, id: &[u8; 8]) -> Option<Arc<Peer>> {
        lock(&self.peers)
            .values()
            .find(|p| p.key.id().0 == *id)
            .cloned()
    }

    pub fn peer(&self, name: &str) -> Option<Arc<Peer>> {
        lock(&self.peers)
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, p)| p.clone())
    }

    /// Tell `peer` its transfer is refused, with the code and the reason
    /// (the peer says the reason to its user).
    pub fn refuse(
        &self,
        peer: &Peer,
        transfer: TransferId,
        code: crate::protocol::RefuseCode,
        reason: String,
    ) -> bool {
        self.send_control(
            peer,
            &Control::Refuse {
                transfer,
                code,
                reason,
            },
        )
    }

    /// Seal `control` in the peer's current session and queue it. Returns
    /// false when there is no session yet (the caller retries on the next).
    pub fn send_control(&self, peer: &Peer, control: &Control) -> bool {
        self.seal_and_queue(peer, control, false)
    }

    /// Like [`send_control`](Self::send_control), for a frame that may
    /// ride in the next message going to the peer anyway (an
    /// acknowledgement of progress: [`LinkHandle::send_riding`]).
    pub fn send_riding(&self, peer: &Peer, control: &Control) -> bool {
        self.seal_and_queue(peer, control, true)
    }

    /// `control` sealed in the session `slot`, as a frame.
    pub(crate) fn seal(&self, slot: &SessionSlot, control: &Control) -> Result<Vec<u8>> {
        let body = control.encode()?;
        let (nonce, body) = lock(&slot.session).seal(&body)?;
        Frame::Sealed {
            session: slot.id,
            from: self.my_id.0,
            nonce,
            body,
        }
        .encode()
    }

    fn seal_and_queue(&self, peer: &Peer, control: &Control, ride: bool) -> bool {
        let Some(slot) = peer.session.borrow().clone() else {
            return false;
        };
        let coalesce = match control {
            Control::Ack { transfer, .. } => {
                let mut k = [0u8; 17];
                k[..16].copy_from_slice(&transfer.0);
                Some(k)
            }
            Control::Pieces { transfer, .. } => {
                let mut k = [1u8; 17];
                k[..16].copy_from_slice(&transfer.0);
                Some(k)
            }
            _ => None,
        };
        match self.seal(&slot, control) {
            Ok(frame) => match self.control_link(peer, slot.link) {
                Some((_, link, to)) => {
                    if ride {
                        link.send_riding(&to, frame, coalesce);
                    } else {
                        link.send_control(&to, frame, coalesce);
                    }
                    true
                }
                None => {
                    // Asked again by its caller: said at debug level, or a
                    // retry every 200 ms would fill the log.
                    tracing::debug!(peer = %peer.name, "no link reaches the peer yet: a control frame waits");
                    false
                }
            },
            Err(e) => {
                self.log(LogLevel::Error, format!("cannot seal a control frame: {e}"));
                false
            }
        }
    }

    /// Wait (up to `limit`) until every link has sent what it was given:
    /// a process about to exit must not take its last answers with it (a
    /// download's Done, say, which is what lets the agent end its side).
    pub async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.links.iter().all(LinkHandle::is_drained)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn record_fault(&self, link: usize, f: impl Fn(&link::LinkStats)) {
        if let Some(l) = self.links.get(link) {
            f(&l.stats);
        }
    }

    /// The transports, and what is wrong with them if anything is: for
    /// the error of a peer that did not answer.
    pub fn transports_report(&self) -> String {
        let mut out = self.transports_label();
        for l in &self.links {
            for p in l.problems() {
                out.push_str(&format!("; {p}"));
            }
        }
        out
    }

    /// Each link's health, with its share of the bytes all of them sent
    /// in the last minute when there are several.
    pub fn transports_health(&self) -> Vec<TransportHealth> {
        let mut all: Vec<TransportHealth> = self.links.iter().map(LinkHandle::health).collect();
        let total: u64 = all.iter().map(|h| h.throughput.iter().sum::<u64>()).sum();
        if all.len() > 1 && total > 0 {
            for h in &mut all {
                h.share = Some(h.throughput.iter().sum::<u64>() as f64 / total as f64);
            }
        }
        all
    }

    pub fn transports_label(&self) -> String {
        self.links
            .iter()
            .map(|l| l.describe().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Deliver to a running transfer task; false if there is none.
    pub async fn deliver(&self, id: &TransferId, input: TaskInput) -> bool {
        let tx = lock(&self.tasks).get(id).map(|t| t.tx.clone());
        match tx {
            Some(tx) => tx.send(input).await.is_ok(),
            None => false,
        }
    }

    /// Register a task for `id`, owned by `peer` as it is now (its key):
    /// only that key's control frames reach it.
    pub fn register_task(&self, id: TransferId, peer: &Peer) -> mpsc::Receiver<TaskInput> {
        // Small: a chunk may be a MiB, and the router waiting is back-pressure.
        let (tx, rx) = mpsc::channel(8);
        let entry = TaskEntry { key: peer.key, tx };
        lock(&self.tasks).insert(id, entry);
        rx
    }

    /// The input of the live task for `id`, if one runs.
    pub fn task_input(&self, id: &TransferId) -> Option<mpsc::Sender<TaskInput>> {
        lock(&self.tasks)
            .get(id)
            .filter(|t| t.is_live())
            .map(|t| t.tx.clone())
    }

    /// Forget a finished task, unless a newer one already took its place
    /// (the old one's inbox is closed once it returned; a new one's is not).
    pub fn unregister_task(&self, id: &TransferId) {
        let mut tasks = lock(&self.tasks);
        if tasks.get(id).is_some_and(|t| !t.is_live()) {
            tasks.remove(id);
        }
    }

    pub fn has_task(&self, id: &TransferId) -> bool {
        lock(&self.tasks).get(id).is_some_and(TaskEntry::is_live)
    }
}

pub(crate) use crate::task::lock;

/// Why a client's transfer cannot go on, when no link works and none
/// will until the user changes a setting (`unreachable`: the node's
/// [`Node::unreachable`]). An agent (`fail` false) waits for its client
/// whatever its links say.
pub(crate) fn no_way_to_peer(
    unreachable: &watch::Receiver<Option<String>>,
    fail: bool,
) -> Option<String> {
    if !fail {
        return None;
    }
    unreachable.borrow().clone()
}

/// How a transfer task ends when the other side has been silent too long:
/// a client fails with advice, an agent stops and keeps the state.
pub(crate) fn silent_peer(node: &Node, limit: Duration, fail: bool) -> sender::Outcome {
    if !fail {
        return sender::Outcome::Stopped;
    }
    sender::Outcome::Failed(format!(
        "no answer from the peer for {} s over {}; is the agent running and does it trust this key? Run the same command again to resume",
        limit.as_secs(),
        node.transports_report()
    ))
}

/// A transfer that completed or was cancelled loses its key, once its
/// end is durable: a recorded transcript can then no longer be opened with
/// anything left in the home. (A failed one keeps it, to be resumed.)
pub(crate) fn forget_key_if_ended(node: &Node, rec: &mut crate::store::TransferRecord) {
    use crate::view::TransferStatus;
    if matches!(
        rec.status,
        TransferStatus::Completed | TransferStatus::Cancelled
    ) {
        rec.secret = None;
        node.store.forget_transfer_files(&rec.id);
        if let Err(e) = node.store.forget_secret(&rec.id) {
            node.log(
                LogLevel::Warn,
                format!("cannot delete a finished transfer's key: {e}"),
            );
        }
    }
}

pub(crate) fn random_session_id() -> [u8; 16] {
    rand::random()
}

/// Hex of a session id for logs.
pub(crate) fn token(id: &[u8; 16]) -> String {
    hex::encode(&id[..8])
}

pub(crate) fn sha_hex(h: &[u8; 32]) -> String {
    hex::encode(h)
}

pub(crate) fn decode_sealed(
    slot: &SessionSlot,
    nonce: u64,
    body: &[u8],
) -> Result<Option<Control>> {
    let plain = lock(&slot.session).open(nonce, body)?;
    plain.map(|p| Control::decode(&p)).transpose()
}

/// Keep `<home>/status.json` in step with the store, at most once a second,
/// so `pigeon status` can show a running process's transfers (the store
/// itself has one owner).
/// Beside `status.json` in a home whose process takes no commands (an
/// agent's): its links' health, for `pigeon status`.
pub const LINKS_FILE: &str = "links.json";

pub(crate) async fn mirror_status(node: Arc<Node>, path: std::path::PathBuf) {
    let mut changes = node.changes.subscribe();
    let links = path.with_file_name(LINKS_FILE);
    let mut written: [Vec<u8>; 2] = Default::default();
    loop {
        let health = node.transports_health();
        let reports = match crate::ledger::stored_reports(&node.store) {
            Ok(r) => r.into_iter().map(|(_, rep)| rep).collect::<Vec<_>>(),
            Err(_) => vec![],
        };
        // Looked at again each second while a task runs or a link's
        // traffic fades: a transfer's end is not always a change the node
        // announces. Not for a stored record that says in progress (an
        // upload whose client went away may wait days), so an idle agent
        // reads nothing. Written only when it differs (a phone's storage
        // is not rewritten every second for nothing).
        let moving = lock(&node.tasks).values().any(TaskEntry::is_live)
            || health
                .iter()
                .any(|l| l.messages_last_minute > 0 || l.throughput.iter().any(|&b| b > 0));
        let [links_written, status_written] = &mut written;
        for (json, to, last) in [
            (serde_json::to_vec_pretty(&health), &links, links_written),
            (serde_json::to_vec_pretty(&reports), &path, status_written),
        ] {
            let Ok(json) = json else { continue };
            if json == *last {
                continue;
            }
            let tmp = to.with_extension("json.tmp");
            if std::fs::write(&tmp, &json).is_ok() && std::fs::rename(&tmp, to).is_ok() {
                *last = json;
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() {
                return;
            },
            () = tokio::time::sleep(Duration::from_secs(1)), if moving => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
