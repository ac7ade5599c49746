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
mod early;
pub mod handle;
mod progress;
mod rate;
mod receiver;
mod router;
mod rto;
mod seal;
mod sender;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch, OwnedSemaphorePermit};

use crate::crypto::{ChunkNonce, Identity, KeyId, PublicKey, Session};
use crate::error::{CoreError, Result};
use crate::home::PeerName;
use crate::link::{self, message_payload, Inbound, LinkHandle};
use crate::policy::Permissions;
use crate::protocol::{Control, Frame};
use crate::store::Store;
use crate::transport::{self, Address, Side, TransportUri};
use crate::view::{Event, LogLevel, TransferId, TransportHealth};

pub use handle::{
    policy_remedy, ClientCommand, ClientHandle, DownloadOptions, RemoteEntry, TransferAction,
    UploadOptions, REPLACE_HINT,
};
pub(crate) use progress::{Event as ProgressEvent, Fault, Progress, ProgressSink};
pub(crate) use rto::Rto;

/// What a transfer task is told.
#[derive(Debug)]
pub(crate) enum TaskInput {
    Control(Control),
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

/// How often a sender waiting for room on the links looks again at which
/// of them are usable.
const RESERVE_RECHECK: Duration = Duration::from_millis(250);

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
        let sealed = control.encode().and_then(|body| {
            let (nonce, body) = lock(&slot.session).seal(&body)?;
            Frame::Sealed {
                session: slot.id,
                from: self.my_id.0,
                nonce,
                body,
            }
            .encode()
        });
        match sealed {
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
                    self.log(
                        LogLevel::Warn,
                        format!(
                            "no link reaches {} yet: an answer waits for its next message",
                            peer.name
                        ),
                    );
                    false
                }
            },
            Err(e) => {
                self.log(LogLevel::Error, format!("cannot seal a control frame: {e}"));
                false
            }
        }
    }

    /// Where `peer` is on `link`, if that link can reach it
    /// ([`Peer::address_on`]).
    pub(crate) fn address(&self, peer: &Peer, link: usize) -> Option<Address> {
        let handle = self.links.get(link)?;
        peer.address_on(link, handle.answers_whoever_writes())
    }

    /// Whether data for `peer` may go on `link` now: the link reaches the
    /// peer and its circuit to it is not open. Links are judged per peer:
    /// one peer's chat being gone says nothing of another's.
    pub(crate) fn usable(&self, peer: &Peer, link: usize) -> bool {
        self.address(peer, link)
            .is_some_and(|to| self.links[link].usable(&to))
    }

    /// The links that reach `peer` (all of them, if none does yet): what a
    /// transfer with it is sized and compressed for.
    pub(crate) fn links_to<'a>(&'a self, peer: &'a Peer) -> Vec<&'a LinkHandle> {
        let reach: Vec<&LinkHandle> = (0..self.links.len())
            .filter(|&i| self.address(peer, i).is_some())
            .map(|i| &self.links[i])
            .collect();
        if reach.is_empty() {
            self.links.iter().collect()
        } else {
            reach
        }
    }

    /// Tell `link` something of `peer` at its address there (nothing, if
    /// the link does not reach it).
    pub(crate) fn judge(&self, peer: &Peer, link: usize, f: impl FnOnce(&LinkHandle, &Address)) {
        if let Some(to) = self.address(peer, link) {
            f(&self.links[link], &to);
        }
    }

    /// The link control frames to `peer` go on, with the peer's address
    /// there: of the links that reach it and whose circuit to it is
    /// closed, the one with the shortest round trip (the session's when
    /// none is measured yet). A link whose answers seem not to arrive (the
    /// peer keeps asking again, [`LinkHandle::doubted`]) comes last, and a
    /// link whose last send failed after those whose did not (a lost
    /// acknowledgement costs a round trip, and one failure is enough to
    /// doubt it), then one being probed, the one whose last failure is
    /// oldest first (links that fail take turns, so one that came back is
    /// found: a seed once sent every answer for nine minutes to a link
    /// that was gone, beside one that had come back); if none is usable, the session's
    /// (its link retries it when it may), else any that reaches the peer.
    /// None: no link reaches it (a link that answers whoever writes, and
    /// the peer has not written on it).
    pub(crate) fn control_link(
        &self,
        peer: &Peer,
        preferred: usize,
    ) -> Option<(usize, &LinkHandle, Address)> {
        let preferred = preferred.min(self.links.len() - 1);
        let reach: Vec<(usize, Address)> = (0..self.links.len())
            .filter_map(|i| Some((i, self.address(peer, i)?)))
            .collect();
        let best = reach
            .iter()
            .filter(|(i, to)| self.links[*i].usable(to))
            .min_by_key(|(i, to)| {
                let link = &self.links[*i];
                (
                    link.doubted(to),
                    !link.clean(to),
                    link.last_failed(to),
                    link.rtt(to).unwrap_or(Duration::MAX),
                    usize::from(*i != preferred),
                )
            })
            .or_else(|| reach.iter().find(|(i, _)| *i == preferred))
            .or_else(|| reach.first())?;
        Some((best.0, &self.links[best.0], best.1.clone()))
    }

    /// `peer` asked again for what was answered (a chunk already
    /// acknowledged came again): charge the link answers to it go on, so
    /// that a link swallowing this direction is found and left.
    ///
    /// For a timeout after answers moved off a doubted link, nothing is
    /// charged: what the peer asks again then it asked before an answer on
    /// the new link could reach it, and must not doubt that one too.
    pub(crate) fn answer_lost(&self, peer: &Peer) {
        if let Some((index, link, to)) = self.control_link(peer, self.session_link(peer)) {
            let grace = Rto::for_link(link, link.rtt(&to)).get();
            let mut moved = lock(&peer.moved_answers);
            if moved.is_some_and(|at| at.elapsed() < grace) {
                return;
            }
            let was = link.doubted(&to);
            link.answer_lost(&to);
            if !was && link.doubted(&to) {
                *moved = Some(tokio::time::Instant::now());
                tracing::debug!(link = index, peer = %peer.name, "answers on this link seem lost: others first");
            }
        }
    }

    /// `peer` moved on after our answers: the link they go on carries them.
    pub(crate) fn answers_arrive(&self, peer: &Peer) {
        if let Some((_, link, to)) = self.control_link(peer, self.session_link(peer)) {
            link.answers_arrive(&to);
        }
    }

    /// The timeout for answers from `peer` on the link control frames to
    /// it go on now.
    pub(crate) fn control_rto(&self, peer: &Peer) -> Rto {
        match self.control_link(peer, self.session_link(peer)) {
            Some((_, link, to)) => Rto::for_link(link, link.rtt(&to)),
            None => Rto::for_link(&self.links[0], None),
        }
    }

    pub(crate) fn session_link(&self, peer: &Peer) -> usize {
        peer.session.borrow().as_ref().map_or(0, |slot| slot.link)
    }

    /// Pin `peer` at the addresses the trust list gives it, on every link
    /// of their kind, and tell those links it may be written to there.
    pub(crate) fn pin(&self, peer: &Peer, addresses: &std::collections::BTreeMap<String, String>) {
        let mut pinned = HashMap::new();
        for (i, link) in self.links.iter().enumerate() {
            if let Some(address) = addresses.get(link.scheme()) {
                link.introduce(address);
                pinned.insert(i, address.clone());
            }
        }
        *lock(&peer.pinned) = pinned;
    }

    /// The link a Hello to `peer` would go on now, and the room its
    /// message has for early data besides the Hello, if that link takes
    /// early data.
    pub(crate) fn early_room(&self, peer: &Peer) -> Option<(usize, usize)> {
        if !self.early_data.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let (index, link, _) = self.control_link(peer, 0)?;
        let caps = &link.capabilities();
        let interval = caps
            .messages_per_minute
            .map(|m| Duration::from_secs_f64(60.0 / f64::from(m.max(1))));
        interval
            .is_some_and(|i| i >= early::EARLY_MIN_INTERVAL)
            .then(|| {
                (
                    index,
                    message_payload(caps).saturating_sub(early::HELLO_OVERHEAD),
                )
            })
    }

    /// Wait for room for one data frame of up to `bytes` on any link whose
    /// circuit is not open, and take the first that has it: each link's
    /// queue drains at its own pace, so each takes chunks as fast as it
    /// carries them and a transfer runs at the sum of their paces. Returns
    /// the link index and the reservation. If every circuit is open, any
    /// link will do: its send loop holds the frame until it is probed.
    ///
    /// `rest`: the bytes of the transfer still to send, this frame
    /// included. A link takes the frame only if it would send it before
    /// the links together send all of that ([`worth_it`]).
    ///
    /// `avoid`: links (one bit each) not to use while another would do: a
    /// chunk lost there again and again goes elsewhere, whatever that link's
    /// breaker says yet.
    ///
    /// Only links that reach `peer` are used ([`Node::address`]); there is
    /// always one, the one its session came by.
    pub async fn reserve_data(
        &self,
        peer: &Peer,
        bytes: usize,
        rest: u64,
        avoid: u64,
    ) -> (usize, OwnedSemaphorePermit) {
        // One link: nothing to choose, and a waiter keeps its place in the
        // queue (looking again would put it at the back, behind smaller
        // frames of other transfers).
        if let [only] = self.links.as_slice() {
            return (0, only.reserve(bytes).await);
        }
        loop {
            let reach: Vec<usize> = (0..self.links.len())
                .filter(|&i| self.address(peer, i).is_some())
                .collect();
            let mut usable: Vec<usize> = reach
                .iter()
                .copied()
                .filter(|&i| self.usable(peer, i))
                .collect();
            if usable.is_empty() {
                usable = reach;
            }
            if usable.is_empty() {
                // Reached by none yet (it has not written on a link that
                // answers whoever writes): the session's link, where it did.
                usable = vec![self.session_link(peer).min(self.links.len() - 1)];
            }
            let avoided = |i: usize| i < 64 && avoid & (1 << i) != 0;
            if usable.iter().any(|&i| !avoided(i)) {
                usable.retain(|&i| !avoided(i));
            }
            let times: Vec<Duration> = usable
                .iter()
                .map(|&i| self.links[i].time_to_finish(bytes))
                .collect();
            let paces: Vec<Option<f64>> = usable.iter().map(|&i| self.links[i].pace()).collect();
            let worth = worth_it(&times, &paces, rest);
            // With room on several, the one that would have sent it
            // soonest, behind what it holds: each link takes chunks in
            // proportion to its pace (earliest finish first).
            let mut by_finish: Vec<(usize, Duration)> = usable
                .iter()
                .zip(times)
                .zip(worth)
                .filter_map(|((&i, t), w)| w.then_some((i, t)))
                .collect();
            // Unpaced links all finish at once: the one with the most room.
            by_finish.sort_by_key(|&(i, t)| (t, std::cmp::Reverse(self.links[i].room())));
            let usable: Vec<usize> = by_finish.into_iter().map(|(i, _)| i).collect();
            if let Some(got) = usable
                .iter()
                .find_map(|&i| self.links[i].try_reserve(bytes).map(|p| (i, p)))
            {
                return got;
            }
            let waits = usable.iter().map(|&i| {
                let link = self.links[i].clone();
                Box::pin(async move { (i, link.reserve(bytes).await) })
            });
            tokio::select! {
                (got, _, _) = futures::future::select_all(waits) => return got,
                // A circuit may have opened or closed meanwhile.
                () = tokio::time::sleep(RESERVE_RECHECK) => {}
            }
        }
    }

    /// Queue a chunk's frame for `peer` on `link`, in the room
    /// [`reserve_data`](Self::reserve_data) made there. A link that does
    /// not reach the peer drops it: its timer sends it again elsewhere.
    pub fn send_data(
        &self,
        link: usize,
        peer: &Peer,
        chunk: link::ChunkFrame,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        match self.address(peer, link) {
            Some(to) => {
                self.links[link].took_data(&to);
                self.links[link].send_reserved(&to, chunk, permit);
            }
            None => {
                tracing::warn!(link, peer = %peer.name, "a chunk for a link that does not reach its peer")
            }
        }
    }

    /// The link a small transfer's frame of `bytes` goes on, ahead of bulk
    /// data and without a reservation: of the usable links that reach
    /// `peer` and carry it in one message, the one that sends it soonest.
    /// None: no link carries it in one message (it goes the usual way).
    /// `avoid` as for [`reserve_data`](Self::reserve_data): links not to
    /// use while another would do.
    pub(crate) fn small_link(&self, peer: &Peer, bytes: usize, avoid: u64) -> Option<usize> {
        let usable: Vec<usize> = (0..self.links.len())
            .filter(|&i| self.usable(peer, i))
            .collect();
        let avoided = |i: usize| i < 64 && avoid & (1 << i) != 0;
        let fresh: Vec<usize> = usable.iter().copied().filter(|&i| !avoided(i)).collect();
        // Among the links it may go on (a link it was lost on twice is
        // left if another would do, even one that carries it in pieces:
        // then it goes the usual way).
        let pool = if fresh.is_empty() { usable } else { fresh };
        pool.into_iter()
            .filter(|&i| {
                message_payload(&self.links[i].capabilities())
                    >= bytes + link::WHOLE_RECORD_OVERHEAD
            })
            .min_by_key(|&i| self.links[i].time_to_send(bytes))
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

/// Open a link on each transport `uris` names, for the party with key id
/// `me`. `client`: a spool folder that does not exist is a typo to report,
/// not a folder to make (an agent makes it).
pub(crate) fn open_links(
    uris: &[TransportUri],
    me: KeyId,
    inbound: mpsc::Sender<Inbound>,
    client: bool,
    bwlimit: Option<&crate::bwlimit::BwLimit>,
) -> Result<Vec<LinkHandle>> {
    open_links_named(uris, &me.to_string(), inbound, client, bwlimit)
}

/// [`open_links`] for an inbox not named by a key (a pairing's slot).
pub(crate) fn open_links_named(
    uris: &[TransportUri],
    me: &str,
    inbound: mpsc::Sender<Inbound>,
    client: bool,
    bwlimit: Option<&crate::bwlimit::BwLimit>,
) -> Result<Vec<LinkHandle>> {
    let limit = bwlimit
        .filter(|b| !b.is_off())
        .map(|b| Arc::new(link::Limiter::new(b.clone())));
    if uris.is_empty() {
        return Err(CoreError::Config(
            "no transport given; pass --transport local:<SPOOL_DIR> (or set transports in config.toml)".into(),
        ));
    }
    let side = if client { Side::Client } else { Side::Agent };
    let pieces = link::shared_reassembler();
    let links: Vec<LinkHandle> = uris
        .iter()
        .enumerate()
        .map(|(i, uri)| {
            let transport = transport::open(uri, &me.to_string(), side)?;
            let own = uri
                .bwlimit()
                .map(|b| Arc::new(link::Limiter::new(b.clone())));
            let link = link::start(
                transport,
                transport::profile(uri),
                i,
                inbound.clone(),
                limit.iter().chain(own.iter()).cloned().collect(),
                pieces.clone(),
            )
            .described_as(uri.to_string());
            if let Some(reserve) = uri.reserve() {
                link.reserve_slots(reserve);
            }
            Ok(link)
        })
        .collect::<Result<_>>()?;
    if let [only] = links.as_slice() {
        // Nothing else can carry what waits for it: probe it often.
        only.cap_backoff(ONLY_LINK_BACKOFF);
    }
    Ok(links)
}

/// Which links may take a frame that each takes `times` to send (at
/// `paces`, bytes a second; None: unpaced), with `rest` bytes of its
/// transfer still to go: those that would have sent it before all of them
/// together send the rest, and always the one that sends it soonest. A
/// text channel beside a document channel would otherwise hold the
/// transfer's end for minutes on one chunk in hundreds of pieces.
fn worth_it(times: &[Duration], paces: &[Option<f64>], rest: u64) -> Vec<bool> {
    let together: Option<f64> = paces.iter().copied().sum();
    let all_of_it = together.map_or(Duration::ZERO, |p| {
        Duration::from_secs_f64(rest as f64 / p.max(1.0))
    });
    let soonest = times.iter().min().copied().unwrap_or_default();
    let bar = all_of_it.max(soonest);
    times.iter().map(|t| *t <= bar).collect()
}

/// The longest a party's only link stays out after failures.
const ONLY_LINK_BACKOFF: Duration = Duration::from_secs(5);

/// How often [`watch_links`] looks at the links' health.
const LINK_WATCH: Duration = Duration::from_millis(250);

/// Say once each link that fails for a reason only the user can fix (and
/// when it works again), and keep [`Node::unreachable`] current: a client
/// with no working link stops waiting at once instead of after its
/// `--timeout`. `agent`: the words for an agent's log, which keeps trying.
pub(crate) async fn watch_links(node: std::sync::Weak<Node>, agent: bool) {
    let mut told: HashMap<usize, String> = HashMap::new();
    loop {
        let Some(node) = node.upgrade() else { return };
        let failed: HashMap<usize, String> = node.failed_links().into_iter().collect();
        let several = node.links.len() > 1;
        for (i, why) in &failed {
            if told.get(i) == Some(why) {
                continue;
            }
            let next = match (agent, several) {
                (true, true) => "the agent carries on over its other transports and tries this one again now and then; fix the setting and restart the agent",
                (true, false) => "nothing reaches this agent until it is fixed; it tries again now and then, but fix the setting and restart the agent",
                (false, true) => "the other transports carry on without it",
                (false, false) => "nothing reaches the agent until it is fixed",
            };
            let message = format!("transport failed: {why}; {next}");
            if agent {
                node.log(LogLevel::Warn, message);
            } else {
                // A client's front end shows it from the links' health in
                // its snapshots (an event sent before it subscribed would
                // be lost); the command stops on `unreachable`.
                tracing::warn!("{message}");
            }
        }
        for i in told.keys().filter(|i| !failed.contains_key(i)) {
            node.log(
                LogLevel::Info,
                format!("transport {} works again", node.links[*i].describe()),
            );
        }
        if failed != told {
            node.touch();
        }
        told = failed;
        let now = node.no_working_link();
        node.unreachable.send_if_modified(|was| {
            let changed = *was != now;
            *was = now;
            changed
        });
        drop(node);
        tokio::time::sleep(LINK_WATCH).await;
    }
}

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
        let reports = match client::stored_reports(&node.store) {
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
