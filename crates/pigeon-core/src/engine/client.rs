//! The client engine: the queue, the tasks it runs, and the snapshots
//! front ends draw from.
//!
//! [`start`] opens the links, handshakes with the agent (again whenever the
//! agent says it lost the session), and returns a [`ClientHandle`]. One
//! task owns the queue: it takes [`ClientCommand`]s, starts transfers up to
//! `parallel` at once in priority order, and records each outcome. Running
//! an upload again after an interruption finds the stored transfer and
//! resumes it, unless the source changed, in which case it starts afresh
//! under a new key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use tokio::sync::{mpsc, watch, Notify};

use super::early::EARLY_WAIT;
use super::handle::{ClientCommand, ClientHandle, RemoteEntry, UploadOptions};
use super::receiver::{Receiver, ReceiverConfig};
use super::router::{route, Hooks};
use super::sender::{finish_record, Outcome, Sender, SenderConfig};
use super::{
    lock, open_links, random_session_id, token, Node, Peer, Progress, Rto, SessionSlot, TaskInput,
};
use crate::crypto::{Initiator, PublicKey, TransferSecret};
use crate::error::{CoreError, Result};
use crate::home::Home;
use crate::link::{message_payload, LinkHandle, WHOLE_RECORD_OVERHEAD};
use crate::policy::RemotePath;
use crate::protocol::{Control, Early, Frame, Manifest, RefuseCode, CHUNK_FRAME_OVERHEAD};
use crate::store::{
    now_unix, Role, SessionRecord, SessionStatus, SourceStamp, Store, TransferRecord,
};
use crate::transport::TransportUri;
use crate::view::{
    Direction, EngineSnapshot, Event, FaultCounters, LogLevel, TransferId, TransferReport,
    TransferStatus,
};

pub struct ClientConfig {
    pub home: Home,
    /// The trusted peer to drive; may be omitted when only one is trusted.
    pub peer: Option<String>,
    pub transports: Vec<TransportUri>,
    pub parallel: usize,
    /// Run every queued transfer in the store (the TUI), not only the ones
    /// asked for in this run (the CLI).
    pub run_queue: bool,
    /// Fail a transfer after this long without a word from the agent.
    pub silence_limit: Duration,
    /// Shown in snapshots: the agent runs inside this process.
    pub embedded_agent: bool,
}

/// Start the client engine.
pub async fn start(cfg: ClientConfig) -> Result<ClientHandle> {
    let me = cfg.home.identity()?;
    let trusted = cfg.home.trusted()?;
    let chosen = match &cfg.peer {
        Some(name) => trusted
            .iter()
            .find(|t| t.name.as_str() == name)
            .ok_or_else(|| CoreError::UnknownPeer(name.clone()))?,
        None => match trusted.as_slice() {
            [only] => only,
            [] => {
                return Err(CoreError::PeerChoice(
                    "no trusted agent yet: run `pigeon keys trust <AGENT_KEY> --name agent` (the agent prints its key with `pigeon keys show`)".into(),
                ))
            }
            many => {
                let names: Vec<_> = many.iter().map(|t| t.name.to_string()).collect();
                return Err(CoreError::PeerChoice(format!(
                    "several trusted peers ({}); choose one with --peer",
                    names.join(", ")
                )));
            }
        },
    }
    .clone();
    let store = Store::open(&cfg.home.store_dir())?;
    // Few frames in flight between link and router: memory stays bounded.
    let (tx, rx) = mpsc::channel(8);
    let links = open_links(&cfg.transports, me.public().id(), tx, true)?;
    let node = Arc::new(Node::new(me, store, links));
    if cfg.home.config()?.early_data == Some(false) {
        node.early_data
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
    let peer = Peer::new(chosen.name.clone(), chosen.key, chosen.permissions);
    node.pin(&peer, &chosen.addresses);
    lock(&node.peers).insert(chosen.name.clone(), peer.clone());
    let hooks = Arc::new(ClientHooks {
        agent: chosen.key,
        peer: peer.clone(),
        pending: Mutex::new(HashMap::new()),
        need_session: Notify::new(),
        restart_handshake: Notify::new(),
        lists: Mutex::new(HashMap::new()),
    });
    crate::task::spawn(route(node.clone(), hooks.clone(), rx));
    crate::task::spawn(connect(node.clone(), peer.clone(), hooks.clone()));
    crate::task::spawn(super::mirror_status(
        node.clone(),
        cfg.home.dir().join("status.json"),
    ));

    let (cmd_tx, cmd_rx) = mpsc::channel(256);
    let (snap_tx, snap_rx) = watch::channel(Arc::new(EngineSnapshot::default()));
    let records = Arc::new(Mutex::new(BTreeMap::new()));
    let mut core = Core {
        node: node.clone(),
        peer,
        hooks,
        parallel: cfg.parallel.max(1),
        silence_limit: cfg.silence_limit,
        records: records.clone(),
        running: HashSet::new(),
        eligible: HashSet::new(),
    };
    core.load(cfg.run_queue)?;
    let events = node.events.clone();
    crate::task::spawn(publish(
        node.clone(),
        records,
        snap_tx,
        chosen.name.to_string(),
        cfg.embedded_agent,
    ));
    crate::task::spawn(core.run(cmd_rx));
    Ok(ClientHandle {
        commands: cmd_tx,
        snapshot: snap_rx,
        events,
    })
}

/// Send `control` to `peer` as soon as a session is up, within `wait`.
async fn tell_when_up(node: &Node, peer: &Peer, control: &Control, wait: Duration) -> bool {
    let mut sessions = peer.session.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if node.send_control(peer, control) {
            return true;
        }
        tokio::select! {
            changed = sessions.changed() => if changed.is_err() { return false },
            () = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

/// How long a silent agent goes unmentioned while transfers wait on it.
const SILENCE_NOTICE: Duration = Duration::from_secs(10);

/// Largest chunk that, incompressible, still fits one message of every link.
pub(crate) fn chunk_size_for(links: &[LinkHandle]) -> u32 {
    let payload = links
        .iter()
        .map(|l| message_payload(l.capabilities()))
        .min()
        .unwrap_or(1024 * 1024);
    let fit = payload.saturating_sub(WHOLE_RECORD_OVERHEAD + CHUNK_FRAME_OVERHEAD);
    fit.clamp(256, 1024 * 1024) as u32
}

/// MIME type from the first bytes (magic numbers), else text or binary.
pub fn detect_mime(path: &Path) -> String {
    let mut head = Vec::with_capacity(8192);
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(8192).read_to_end(&mut head);
    }
    mime_of(&head)
}

/// MIME type of a file whose first bytes are `head`.
pub fn mime_of(head: &[u8]) -> String {
    if let Some(kind) = infer::get(head) {
        return kind.mime_type().to_string();
    }
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // A multi-byte character cut at the end of the sample is still text.
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    if text {
        "text/plain".into()
    } else {
        "application/octet-stream".into()
    }
}

struct ClientHooks {
    agent: PublicKey,
    peer: Arc<Peer>,
    pending: Mutex<HashMap<[u8; 16], Initiator>>,
    need_session: Notify,
    /// The pending handshake failed: the connector starts another.
    restart_handshake: Notify,
    lists: Mutex<HashMap<u64, mpsc::Sender<Control>>>,
}

impl Hooks for ClientHooks {
    fn on_hello(
        &self,
        _: &Arc<Node>,
        _: usize,
        _: [u8; 16],
        _: PublicKey,
        _: Vec<u8>,
        _: Option<crate::transport::Address>,
    ) -> Option<(Arc<Peer>, Vec<Control>)> {
        None
    }

    fn on_welcome(&self, node: &Arc<Node>, link: usize, session: [u8; 16], noise: Vec<u8>) {
        let Some(init) = lock(&self.pending).remove(&session) else {
            // An answer to a handshake we finished long ago. The same answer
            // again is a duplicate; another one means the agent answered a
            // redelivered Hello with new keys (it restarted and lost ours):
            // our session is dead there, so make a new one at once.
            let current = self.peer.session.borrow().clone();
            if current.is_some_and(|c| c.id == session && c.answer != crate::crypto::sha256(&noise))
            {
                tracing::info!(
                    "the agent answered our handshake anew (it restarted?); handshaking again"
                );
                self.need_session.notify_one();
            }
            return;
        };
        let sess = match init.finish(&noise) {
            Ok(s) => s,
            Err(e) => {
                // Altered in transit, most likely. This handshake's state is
                // spent: start a fresh one rather than wait for a copy.
                tracing::debug!("handshake answer did not authenticate ({e}); handshaking again");
                node.record_fault(link, |s| {
                    s.corrupt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                });
                self.restart_handshake.notify_one();
                return;
            }
        };
        let slot = Arc::new(SessionSlot::new(
            session,
            self.peer.clone(),
            link,
            sess,
            &noise,
        ));
        node.add_session(slot.clone());
        let _ = node.store.replace_sessions(&SessionRecord {
            id: session,
            peer: self.peer.name.to_string(),
            transport: node.links[link].describe().to_string(),
            token: token(&session),
            status: SessionStatus::Active,
            created_unix: now_unix(),
            expires_unix: now_unix() + 24 * 3600,
        });
        tracing::debug!(session = %token(&session), "session established");
        self.peer.session.send_replace(Some(slot));
        node.touch();
    }

    fn on_unknown_session(&self, _: &Arc<Node>, session: [u8; 16], from: PublicKey) {
        let current = self.peer.session.borrow().as_ref().map(|s| s.id);
        if from == self.agent && current == Some(session) {
            self.need_session.notify_one();
        }
    }

    async fn on_control(&self, node: &Arc<Node>, peer: Arc<Peer>, control: Control) {
        let request = match &control {
            Control::NotTrusted => return self.not_trusted(node, &peer),
            Control::Listing { request, .. } | Control::ListRefused { request, .. } => *request,
            // Our Done for a finished download was lost: say it again, or
            // the agent never learns the file arrived.
            Control::Finish { transfer, .. } => {
                if let Ok(Some(rec)) = node.store.transfer(transfer) {
                    if let (TransferStatus::Completed, Some(sha256)) = (rec.status, rec.sha256) {
                        node.send_control(
                            &peer,
                            &Control::Done {
                                transfer: *transfer,
                                sha256,
                                faults: rec.faults,
                            },
                        );
                    }
                }
                return;
            }
            _ => return,
        };
        let tx = lock(&self.lists).get(&request).cloned();
        if let Some(tx) = tx {
            let _ = tx.try_send(control);
        }
    }

    async fn on_orphan_chunk(&self, _: &Arc<Node>, _: TransferId, _: TaskInput) {}
}

impl ClientHooks {
    /// The agent said, in a session only it could have opened, that it does
    /// not trust our key: every transfer and listing waiting on it fails
    /// now, with what to run on the agent.
    fn not_trusted(&self, node: &Node, peer: &Peer) {
        let me = node.me.public();
        let reason = format!(
            "it does not trust this key (id {}): on the agent run `pigeon keys trust {me} --name <NAME>`",
            me.id()
        );
        node.log(LogLevel::Error, format!("the agent refused: {reason}"));
        let tasks: Vec<_> = lock(&node.tasks)
            .iter()
            .filter(|(_, (owner, _))| *owner == peer.name)
            .map(|(id, (_, tx))| (*id, tx.clone()))
            .collect();
        for (transfer, tx) in tasks {
            let _ = tx.try_send(TaskInput::Control(Control::Refuse {
                transfer,
                code: RefuseCode::Permission,
                reason: reason.clone(),
            }));
        }
        for (request, tx) in lock(&self.lists).iter() {
            let _ = tx.try_send(Control::ListRefused {
                request: *request,
                reason: reason.clone(),
            });
        }
    }
}

/// Keep a session with the agent: handshake, and again when told it is gone.
async fn connect(node: Arc<Node>, peer: Arc<Peer>, hooks: Arc<ClientHooks>) {
    let floor = Rto::for_link(&node.links[0]).get();
    loop {
        let sid = random_session_id();
        // On a slow link the first uploads' offers ride in the Hello, and
        // their first chunks right behind it in the same message.
        let mut early = match node.early_room() {
            Some(_) => peer.early.take(EARLY_WAIT).await,
            None => vec![],
        };
        let payload = match early.as_slice() {
            [] => vec![],
            entries => Early {
                made_unix: now_unix(),
                offers: entries.iter().map(|e| e.offer.clone()).collect(),
            }
            .encode()
            .unwrap_or_default(),
        };
        let mut behind: Vec<Vec<u8>> = early
            .iter_mut()
            .flat_map(|e| std::mem::take(&mut e.chunks))
            .collect();
        if !early.is_empty() {
            tracing::debug!(
                offers = early.len(),
                chunks = behind.len(),
                "early data rides in the Hello"
            );
        }
        for entry in early {
            let _ = entry.taken.send(());
        }
        let (init, first) = match Initiator::start(&node.me, &peer.key, &sid, &payload) {
            Ok(x) => x,
            Err(e) => {
                node.log(LogLevel::Error, format!("cannot start a handshake: {e}"));
                return;
            }
        };
        lock(&hooks.pending).insert(sid, init);
        let Ok(hello) = (Frame::Hello {
            session: sid,
            from: node.me.public().0,
            noise: first,
        })
        .encode() else {
            return;
        };
        let mut sessions = peer.session.subscribe();
        let mut wait = floor;
        let started = tokio::time::Instant::now();
        let mut attempts = 0;
        let established = 'handshake: loop {
            let (index, link) = node.control_link(0);
            let to = peer.address_on(index);
            link.send_control(&to, hello.clone(), None);
            // Once: later copies of the chunks are their senders' to time.
            for chunk in behind.drain(..) {
                link.send_control(&to, chunk, None);
            }
            attempts += 1;
            let deadline = tokio::time::sleep(wait);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    changed = sessions.changed() => {
                        if changed.is_err() { return; }
                        if sessions.borrow().as_ref().is_some_and(|s| s.id == sid) {
                            break 'handshake true;
                        }
                    }
                    () = hooks.restart_handshake.notified() => break 'handshake false,
                    () = &mut deadline => {
                        wait = (wait * 2).min(Duration::from_secs(20));
                        continue 'handshake;
                    }
                }
            }
        };
        lock(&hooks.pending).clear();
        if !established {
            continue;
        }
        if attempts == 1 {
            // A first measure of the round trip, so the first transfer's
            // timers need not start from a guess.
            if let Some(slot) = peer.session.borrow().as_ref() {
                node.links[slot.link].record_rtt(started.elapsed());
            }
        }
        hooks.need_session.notified().await;
        tracing::info!("the agent lost our session (it restarted?); handshaking again");
        // Hints are unauthenticated: at most one new handshake a second,
        // but no wait at all when the last one is older than that.
        let since = started.elapsed();
        if since < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_secs(1) - since).await;
        }
    }
}

struct Core {
    node: Arc<Node>,
    peer: Arc<Peer>,
    hooks: Arc<ClientHooks>,
    parallel: usize,
    silence_limit: Duration,
    records: Arc<Mutex<BTreeMap<TransferId, TransferRecord>>>,
    running: HashSet<TransferId>,
    eligible: HashSet<TransferId>,
}

type Done = (TransferRecord, Outcome);

impl Core {
    fn load(&mut self, run_queue: bool) -> Result<()> {
        let all = self.node.store.transfers()?;
        let mut records = lock(&self.records);
        for mut rec in all {
            if rec.peer != self.peer.name.as_str() {
                continue;
            }
            if rec.status == TransferStatus::InProgress {
                rec.status = TransferStatus::Pending;
            }
            if run_queue && rec.status == TransferStatus::Pending {
                self.eligible.insert(rec.id);
            }
            let held = self.node.store.bitmap(&rec.id).ok().flatten();
            let progress = Progress::new(&rec, held.as_ref(), self.node.transports_label());
            lock(&self.node.progress).insert(rec.id, Arc::new(Mutex::new(progress)));
            records.insert(rec.id, rec);
        }
        drop(records);
        self.node.touch();
        Ok(())
    }

    async fn run(mut self, mut commands: mpsc::Receiver<ClientCommand>) {
        let (done_tx, mut done_rx) = mpsc::channel::<Done>(64);
        self.schedule(&done_tx);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let mut silence_told = false;
        loop {
            tokio::select! {
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    if let ClientCommand::Shutdown(reply) = cmd {
                        self.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    self.command(cmd);
                    self.schedule(&done_tx);
                }
                Some((rec, outcome)) = done_rx.recv() => {
                    self.finished(rec, outcome);
                    self.schedule(&done_tx);
                }
                _ = ticker.tick() => {
                    // Transport health moves on its own while transfers run.
                    if !self.running.is_empty() {
                        self.node.touch();
                        self.say_if_silent(&mut silence_told);
                    }
                }
            }
        }
        self.shutdown().await;
    }

    /// Say once per silence, after [`SILENCE_NOTICE`], that the agent is
    /// not answering and what happens next.
    fn say_if_silent(&self, told: &mut bool) {
        let silent = self.node.silent_for();
        // A channel of a message per 6 s answers in up to two of them.
        let interval = self.node.links[0]
            .capabilities()
            .messages_per_minute
            .map_or(Duration::ZERO, |m| Duration::from_secs(60) / m.max(1));
        if silent < SILENCE_NOTICE.max(interval * 2 + Duration::from_secs(2)) {
            *told = false;
            return;
        }
        if *told || silent >= self.silence_limit {
            return;
        }
        *told = true;
        self.node.log(
            LogLevel::Warn,
            format!(
                "no answer from the agent over {} for {} s; still trying until the --timeout of {} s (progress is kept)",
                self.node.transports_label(),
                silent.as_secs(),
                self.silence_limit.as_secs()
            ),
        );
    }

    async fn shutdown(&mut self) {
        let ids: Vec<_> = self.running.iter().copied().collect();
        for id in &ids {
            self.node.deliver(id, TaskInput::Pause).await;
        }
        // Give tasks a moment to persist, then leave them Pending for next time.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && ids.iter().any(|id| self.node.has_task(id)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for id in ids {
            // The task stored its progress as it stopped: start from that.
            let Ok(Some(mut rec)) = self.node.store.transfer(&id) else {
                continue;
            };
            if matches!(
                rec.status,
                TransferStatus::Paused | TransferStatus::InProgress
            ) {
                rec.status = TransferStatus::Pending;
                let _ = self.node.store.put_transfer(&rec);
            }
        }
        let _ = self.node.store.flush();
        self.node.drain(Duration::from_secs(3)).await;
    }

    fn command(&mut self, cmd: ClientCommand) {
        match cmd {
            ClientCommand::Upload {
                local,
                remote,
                options,
                reply,
            } => {
                let _ = reply.send(self.new_upload(&local, &remote, &options));
            }
            ClientCommand::Download {
                remote,
                local,
                reply,
            } => {
                let _ = reply.send(self.new_download(&remote, &local));
            }
            ClientCommand::List { dir, reply } => {
                let node = self.node.clone();
                let peer = self.peer.clone();
                let hooks = self.hooks.clone();
                let limit = self.silence_limit;
                crate::task::spawn(async move {
                    let _ = reply.send(list(node, peer, hooks, dir, limit).await);
                });
            }
            ClientCommand::Pause(id) => {
                if self.running.contains(&id) {
                    let node = self.node.clone();
                    crate::task::spawn(async move { node.deliver(&id, TaskInput::Pause).await });
                } else {
                    self.eligible.remove(&id);
                    self.set_status(&id, TransferStatus::Paused, |s| !s.is_finished());
                }
            }
            ClientCommand::Resume(id) | ClientCommand::Retry(id) => {
                if self.set_status(&id, TransferStatus::Pending, |s| {
                    matches!(
                        s,
                        TransferStatus::Paused | TransferStatus::Failed | TransferStatus::Pending
                    )
                }) {
                    self.eligible.insert(id);
                }
            }
            ClientCommand::Cancel(id) => {
                if self.running.contains(&id) {
                    let node = self.node.clone();
                    crate::task::spawn(async move { node.deliver(&id, TaskInput::Cancel).await });
                } else if self.set_status(&id, TransferStatus::Cancelled, |s| !s.is_finished()) {
                    self.eligible.remove(&id);
                    self.node
                        .send_control(&self.peer, &Control::Cancel { transfer: id });
                    let _ = self.node.events.send(Event::Cancelled { id });
                }
            }
            ClientCommand::CancelTelling { id, wait, reply } => {
                // A running task tells the agent itself as it stops.
                let running = self.running.contains(&id);
                self.command(ClientCommand::Cancel(id));
                let (node, peer) = (self.node.clone(), self.peer.clone());
                crate::task::spawn(async move {
                    let told = running
                        || tell_when_up(&node, &peer, &Control::Cancel { transfer: id }, wait)
                            .await;
                    let _ = reply.send(told);
                });
            }
            ClientCommand::Reprioritize(id, delta) => {
                self.update(&id, |r| r.priority += delta);
            }
            ClientCommand::ResumeMatching { prefix, reply } => {
                let _ = reply.send(self.resume_matching(prefix.as_deref()));
            }
            ClientCommand::Shutdown(_) => {}
        }
    }

    fn resume_matching(&mut self, prefix: Option<&str>) -> Result<Vec<TransferId>> {
        let candidates: Vec<TransferId> = lock(&self.records)
            .values()
            .filter(|r| {
                !matches!(
                    r.status,
                    TransferStatus::Completed | TransferStatus::Cancelled
                )
            })
            .filter(|r| {
                prefix.is_none_or(|p| r.id.to_string().starts_with(&p.to_ascii_lowercase()))
            })
            .map(|r| r.id)
            .collect();
        if let Some(p) = prefix {
            match candidates.len() {
                0 => return Err(CoreError::UnknownTransfer(p.to_string())),
                1 => {}
                n => {
                    return Err(CoreError::Transfer(format!(
                        "{n} unfinished transfers start with {p:?}; give more of the id"
                    )))
                }
            }
        }
        for id in &candidates {
            self.update(id, |r| r.status = TransferStatus::Pending);
            self.eligible.insert(*id);
        }
        Ok(candidates)
    }

    /// Apply `f` to a record, store it, and show it.
    fn update(&self, id: &TransferId, f: impl FnOnce(&mut TransferRecord)) -> bool {
        let mut records = lock(&self.records);
        let Some(rec) = records.get_mut(id) else {
            return false;
        };
        f(rec);
        let _ = self.node.store.put_transfer(rec);
        if let Some(p) = lock(&self.node.progress).get(id) {
            lock(p).status = rec.status;
        }
        drop(records);
        self.node.touch();
        true
    }

    fn set_status(
        &self,
        id: &TransferId,
        to: TransferStatus,
        when: impl Fn(TransferStatus) -> bool,
    ) -> bool {
        let ok = lock(&self.records).get(id).is_some_and(|r| when(r.status));
        ok && self.update(id, |r| r.status = to)
    }

    fn new_upload(
        &mut self,
        local: &Path,
        remote: &str,
        options: &UploadOptions,
    ) -> Result<TransferId> {
        let path = local
            .canonicalize()
            .map_err(|e| CoreError::io(format!("cannot upload {}", local.display()), e))?;
        let meta = std::fs::metadata(&path)
            .map_err(|e| CoreError::io(format!("cannot upload {}", path.display()), e))?;
        if !meta.is_file() {
            return Err(CoreError::Transfer(format!(
                "{} is not a regular file; pigeon uploads files (name each one)",
                path.display()
            )));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let remote = if remote.is_empty() {
            name.clone()
        } else {
            remote.to_string()
        };
        let remote = RemotePath::parse_file(&remote)?.to_string();
        let stamp = SourceStamp::of(&meta);
        let previous = lock(&self.records)
            .values()
            .find(|t| {
                t.direction == Direction::Upload
                    && t.local_path == path
                    && t.remote_path == remote
                    && !matches!(
                        t.status,
                        TransferStatus::Completed | TransferStatus::Cancelled
                    )
            })
            .cloned();
        if let Some(old) = previous {
            if self.running.contains(&old.id) {
                return Ok(old.id);
            }
            if old.source == Some(stamp) && old.no_compress == options.no_compress {
                self.update(&old.id, |r| {
                    r.status = TransferStatus::Pending;
                    r.overwrite = options.overwrite;
                });
                self.eligible.insert(old.id);
                return Ok(old.id);
            }
            self.update(&old.id, |r| {
                r.status = TransferStatus::Cancelled;
                r.error = Some("the source changed; restarted under a new key".into());
            });
            self.node.log(
                LogLevel::Warn,
                format!(
                    "{} changed since the interrupted upload; restarting it under a new key",
                    path.display()
                ),
            );
        }
        let chunk_size = chunk_size_for(&self.node.links);
        let manifest = Manifest {
            name,
            size: meta.len(),
            chunk_size,
            mime: detect_mime(&path),
            modified_unix: (stamp.modified_nanos / 1_000_000_000) as u64,
            mode: {
                use std::os::unix::fs::PermissionsExt;
                meta.permissions().mode() & 0o777
            },
        };
        let rec = TransferRecord {
            id: TransferId::random(),
            direction: Direction::Upload,
            role: Role::Sender,
            peer: self.peer.name.to_string(),
            local_path: path,
            remote_path: remote,
            partial_path: None,
            chunks_total: manifest.chunk_count(),
            manifest,
            secret: Some(TransferSecret::random()),
            seal_run: 0,
            sha256: None,
            status: TransferStatus::Pending,
            transport: self.node.transports_label(),
            chunks_done: 0,
            created_unix: now_unix(),
            completed_unix: None,
            source: Some(stamp),
            error: None,
            priority: self.next_priority(),
            no_compress: options.no_compress,
            overwrite: options.overwrite,
            faults: FaultCounters::default(),
        };
        self.add(rec)
    }

    fn new_download(&mut self, remote: &str, local: &Path) -> Result<TransferId> {
        let remote_path = RemotePath::parse_file(remote)?;
        let name = remote_path.file_name().unwrap_or("download").to_string();
        let local = if local.as_os_str().is_empty() {
            PathBuf::from(&name)
        } else if local.is_dir() {
            local.join(&name)
        } else {
            local.to_path_buf()
        };
        let local = std::path::absolute(&local)
            .map_err(|e| CoreError::io(format!("resolving {}", local.display()), e))?;
        let parent = local.parent().map(Path::to_path_buf).unwrap_or_default();
        if !parent.is_dir() {
            return Err(CoreError::Transfer(format!(
                "cannot download into {}: the folder does not exist",
                parent.display()
            )));
        }
        let remote = remote_path.to_string();
        let previous = lock(&self.records)
            .values()
            .find(|t| {
                t.direction == Direction::Download
                    && t.local_path == local
                    && t.remote_path == remote
                    && !matches!(
                        t.status,
                        TransferStatus::Completed | TransferStatus::Cancelled
                    )
            })
            .cloned();
        if let Some(old) = previous {
            if !self.running.contains(&old.id) {
                self.update(&old.id, |r| r.status = TransferStatus::Pending);
                self.eligible.insert(old.id);
            }
            return Ok(old.id);
        }
        if local.exists() {
            return Err(CoreError::Transfer(format!(
                "{} already exists; remove it or choose another name with -o",
                local.display()
            )));
        }
        let id = TransferId::random();
        let rec = TransferRecord {
            id,
            direction: Direction::Download,
            role: Role::Receiver,
            peer: self.peer.name.to_string(),
            // Short whatever the file's name (a name of 250 bytes must
            // still leave room), and hidden beside it until verified.
            partial_path: Some(parent.join(format!(".pigeon-{}.partial", id.short()))),
            local_path: local,
            remote_path: remote,
            manifest: Manifest {
                name,
                size: 0,
                chunk_size: 0,
                mime: String::new(),
                modified_unix: 0,
                mode: 0o644,
            },
            secret: Some(TransferSecret::random()),
            seal_run: 0,
            sha256: None,
            status: TransferStatus::Pending,
            transport: self.node.transports_label(),
            chunks_total: 0,
            chunks_done: 0,
            created_unix: now_unix(),
            completed_unix: None,
            source: None,
            error: None,
            priority: self.next_priority(),
            no_compress: false,
            overwrite: true,
            faults: FaultCounters::default(),
        };
        self.add(rec)
    }

    fn next_priority(&self) -> i64 {
        lock(&self.records)
            .values()
            .map(|r| r.priority)
            .max()
            .map_or(0, |p| p + 1)
    }

    fn add(&mut self, rec: TransferRecord) -> Result<TransferId> {
        if let Some(secret) = &rec.secret {
            self.node.store.put_secret(&rec.id, secret)?;
        }
        self.node.store.put_transfer(&rec)?;
        // Durable before its first chunk leaves: a kill in the next instant
        // must find it to resume, not start over.
        self.node.store.flush()?;
        let id = rec.id;
        let progress = Progress::new(&rec, None, self.node.transports_label());
        lock(&self.node.progress).insert(id, Arc::new(Mutex::new(progress)));
        lock(&self.records).insert(id, rec);
        self.eligible.insert(id);
        let _ = self.node.events.send(Event::Queued { id });
        self.node.touch();
        Ok(id)
    }

    fn schedule(&mut self, done: &mpsc::Sender<Done>) {
        while self.running.len() < self.parallel {
            let next = {
                let records = lock(&self.records);
                records
                    .values()
                    .filter(|r| self.eligible.contains(&r.id) && !self.running.contains(&r.id))
                    .filter(|r| {
                        matches!(
                            r.status,
                            TransferStatus::Pending | TransferStatus::InProgress
                        )
                    })
                    .min_by_key(|r| (r.priority, r.created_unix))
                    .cloned()
            };
            let Some(rec) = next else { return };
            self.spawn(rec, done.clone());
        }
    }

    fn spawn(&mut self, mut rec: TransferRecord, done: mpsc::Sender<Done>) {
        rec.status = TransferStatus::InProgress;
        let id = rec.id;
        self.update(&id, |r| r.status = TransferStatus::InProgress);
        let progress = lock(&self.node.progress)
            .get(&id)
            .cloned()
            .unwrap_or_else(|| {
                Arc::new(Mutex::new(Progress::new(
                    &rec,
                    None,
                    self.node.transports_label(),
                )))
            });
        {
            let mut p = lock(&progress);
            p.status = TransferStatus::InProgress;
            p.started = Instant::now();
            p.error = None;
            p.faults = FaultCounters::default();
            p.this_run = crate::bitmap::Bitmap::new(rec.chunks_total.max(1));
            p.resumed = false;
        }
        let node = self.node.clone();
        let peer = self.peer.clone();
        let limit = self.silence_limit;
        let resumed = rec.chunks_done > 0;
        let inbox = node.register_task(id, &peer.name);
        self.running.insert(id);
        let _ = node.events.send(Event::Started { id, resumed });
        crate::task::spawn(async move {
            let fallback = rec.clone();
            let result = match rec.role {
                Role::Sender => {
                    let cfg = SenderConfig {
                        silence_limit: limit,
                        fail_on_silence: true,
                        restarted: false,
                        root: None,
                    };
                    match Sender::new(node.clone(), peer, rec, cfg, progress) {
                        Ok(s) => s.run(inbox).await,
                        Err(e) => (fallback, Outcome::Failed(e.to_string())),
                    }
                }
                Role::Receiver => {
                    let cfg = ReceiverConfig {
                        initiator: true,
                        silence_limit: limit,
                        fail_on_silence: true,
                        root: None,
                        audit: false,
                    };
                    match Receiver::new(node.clone(), peer, rec, cfg, progress) {
                        Ok(r) => r.run(inbox).await,
                        Err(e) => (fallback, Outcome::Failed(e.to_string())),
                    }
                }
            };
            node.unregister_task(&id);
            let _ = done.send(result).await;
        });
    }

    fn finished(&mut self, mut rec: TransferRecord, outcome: Outcome) {
        let id = rec.id;
        self.running.remove(&id);
        finish_record(&mut rec, &outcome);
        if outcome == Outcome::Stopped || outcome == Outcome::Paused {
            self.eligible.remove(&id);
        }
        if outcome == Outcome::Stopped {
            rec.status = TransferStatus::Pending;
        }
        let _ = self.node.store.put_transfer(&rec);
        let _ = self.node.store.flush();
        super::forget_key_if_ended(&self.node, &mut rec);
        let progress = lock(&self.node.progress).get(&id).cloned();
        let report = progress.as_ref().map(|p| {
            let mut p = lock(p);
            p.status = rec.status;
            p.error = rec.error.clone();
            if rec.status == TransferStatus::Completed {
                for i in 0..rec.chunks_total {
                    p.set(i, crate::view::ChunkState::Acked);
                }
            }
            report_of(&rec, &p)
        });
        lock(&self.records).insert(id, rec.clone());
        let name = rec.remote_path.clone();
        let event = match &outcome {
            Outcome::Completed(_) => Some(Event::Completed { id, name }),
            Outcome::Failed(e) => Some(Event::Failed {
                id,
                name,
                error: e.clone(),
            }),
            Outcome::Cancelled => Some(Event::Cancelled { id }),
            Outcome::Paused | Outcome::Stopped => None,
        };
        if let Some(e) = event {
            let _ = self.node.events.send(e);
        }
        if let Some(r) = report {
            if outcome != Outcome::Stopped {
                let _ = self.node.events.send(Event::Finished(Box::new(r)));
            }
        }
        self.node.touch();
    }
}

fn report_of(rec: &TransferRecord, p: &Progress) -> TransferReport {
    let elapsed_ms = p.started.elapsed().as_millis() as u64;
    report(rec, p.this_run.count(), p.faults, p.resumed, elapsed_ms)
}

/// A transfer as `--json` and `status` print it; the run's own figures
/// (chunks sent, faults, resumed, elapsed) come from the caller.
fn report(
    rec: &TransferRecord,
    chunks_sent: u32,
    faults: FaultCounters,
    resumed: bool,
    elapsed_ms: u64,
) -> TransferReport {
    TransferReport {
        id: rec.id.to_string(),
        direction: rec.direction,
        local_path: rec.local_path.display().to_string(),
        remote_path: rec.remote_path.clone(),
        size: rec.manifest.size,
        sha256: rec.sha256.as_ref().map(hex::encode),
        mime: rec.manifest.mime.clone(),
        status: rec.status,
        chunks_total: u64::from(rec.chunks_total),
        chunks_sent: u64::from(chunks_sent),
        chunks_retransmitted: faults.retransmitted,
        resumed,
        transport: rec.transport.clone(),
        elapsed_ms,
        faults,
        error: rec.error.clone(),
    }
}

/// List a remote folder, page by page, asking again when an answer is lost.
async fn list(
    node: Arc<Node>,
    peer: Arc<Peer>,
    hooks: Arc<ClientHooks>,
    dir: String,
    limit: Duration,
) -> Result<Vec<RemoteEntry>> {
    RemotePath::parse(&dir)?;
    let started = Instant::now();
    let rto = Rto::for_link(&node.links[0]).get();
    let mut all = vec![];
    loop {
        let request: u64 = rand::random();
        let (tx, mut rx) = mpsc::channel(4);
        lock(&hooks.lists).insert(request, tx);
        let ask = Control::List {
            request,
            dir: dir.clone(),
            offset: all.len() as u32,
        };
        let mut wait = rto;
        let reply = loop {
            if started.elapsed() > limit {
                lock(&hooks.lists).remove(&request);
                return Err(CoreError::Timeout {
                    secs: limit.as_secs(),
                    transport: node.transports_report(),
                });
            }
            node.send_control(&peer, &ask);
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(reply)) => break reply,
                _ => wait = (wait * 2).min(Duration::from_secs(20)),
            }
        };
        lock(&hooks.lists).remove(&request);
        match reply {
            Control::Listing { entries, more, .. } => {
                all.extend(entries);
                if !more {
                    return Ok(all);
                }
            }
            Control::ListRefused { reason, .. } => return Err(CoreError::Refused(reason)),
            _ => {}
        }
    }
}

/// Publish snapshots when something changed, at most 20 times a second.
async fn publish(
    node: Arc<Node>,
    records: Arc<Mutex<BTreeMap<TransferId, TransferRecord>>>,
    tx: watch::Sender<Arc<EngineSnapshot>>,
    peer: String,
    embedded: bool,
) {
    let mut changes = node.changes.subscribe();
    let mut version = 0;
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        version += 1;
        let transfers = {
            let records = lock(&records);
            let progress = lock(&node.progress);
            records
                .values()
                .filter_map(|rec| {
                    let p = progress.get(&rec.id)?;
                    let p = lock(p);
                    let map: Arc<[u8]> = Arc::from(p.chunks.as_slice());
                    Some(p.view(rec, map))
                })
                .collect()
        };
        let snapshot = EngineSnapshot {
            peer: peer.clone(),
            embedded_agent: embedded,
            transfers,
            transports: node.links.iter().map(|l| l.health()).collect(),
            version,
        };
        if tx.send(Arc::new(snapshot)).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// For `pigeon status` and `history`: reports from the store alone.
pub fn stored_reports(store: &Store) -> Result<Vec<(TransferRecord, TransferReport)>> {
    Ok(store
        .transfers()?
        .into_iter()
        .map(|rec| {
            let elapsed_ms = rec
                .completed_unix
                .map_or(0, |c| c.saturating_sub(rec.created_unix) * 1000);
            let report = report(&rec, rec.chunks_done, rec.faults, false, elapsed_ms);
            (rec, report)
        })
        .collect())
}
