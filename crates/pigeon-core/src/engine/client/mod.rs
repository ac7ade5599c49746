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
use super::handle::{
    ClientCommand, ClientHandle, DownloadOptions, RemoteEntry, TransferAction, UploadOptions,
};
use super::receiver::{Receiver, ReceiverConfig};
use super::router::{route, Hooks};
use super::{
    lock, open_links, random_session_id, token, Node, Peer, Progress, ProgressEvent, ProgressSink,
    Rto, SessionSlot, TaskInput,
};
use crate::crypto::{Initiator, PublicKey, TransferSecret};
use crate::engine::sender::{store_outcome, Outcome, Sender, SenderConfig};
use crate::error::{CoreError, Result};
use crate::home::Home;
use crate::policy::RemotePath;
use crate::protocol::{Control, Early, Frame, Manifest, RefuseCode};
use crate::store::{
    now_unix, NewTransfer, Role, SessionRecord, SessionStatus, SourceStamp, Store, TransferRecord,
};
use crate::transport::TransportUri;
use crate::view::{
    Direction, EngineSnapshot, Event, LogLevel, TransferId, TransferReport, TransferStatus,
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
    /// What this party sends, over all its links (`--bwlimit`).
    pub bwlimit: Option<crate::bwlimit::BwLimit>,
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
    let links = open_links(
        &cfg.transports,
        me.public().id(),
        tx,
        true,
        cfg.bwlimit.as_ref(),
    )?;
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
        refused: Mutex::new(None),
        cancelled: tokio::sync::broadcast::channel(64).0,
    });
    crate::task::spawn(route(node.clone(), hooks.clone(), rx));
    crate::task::spawn(tell_cancels(node.clone(), peer.clone()));
    crate::task::spawn(super::watch_links(Arc::downgrade(&node), false));
    crate::task::spawn(connect(node.clone(), peer.clone(), hooks.clone()));
    crate::task::spawn(crate::engine::mirror_status(
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
        asked: Arc::new(super::rate::Asked::new(
            cfg.bwlimit.as_ref(),
            &cfg.transports,
        )),
        based: None,
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

/// Say every cancel the agent has not confirmed yet, at every new session
/// (a cancel made while the agent was away, or whose answer was lost, is
/// delivered at the next contact, by whatever command makes it).
async fn tell_cancels(node: Arc<Node>, peer: Arc<Peer>) {
    let mut sessions = peer.session.subscribe();
    loop {
        if sessions.borrow_and_update().is_some() {
            for transfer in node.store.cancels(peer.name.as_str()) {
                node.send_control(&peer, &Control::Cancel { transfer });
            }
        }
        if sessions.changed().await.is_err() {
            return;
        }
    }
}

/// How often an unconfirmed cancel is said again while a command waits
/// for its confirmation.
const CANCEL_AGAIN: Duration = Duration::from_secs(3);

/// Tell the agent `transfer` is cancelled and wait, within `wait`, for it
/// to confirm ([`Control::Cancelled`]); whether it did.
async fn cancel_confirmed(
    node: &Node,
    peer: &Peer,
    mut confirmations: tokio::sync::broadcast::Receiver<TransferId>,
    transfer: TransferId,
    wait: Duration,
) -> bool {
    if !node.store.cancels(peer.name.as_str()).contains(&transfer) {
        return true;
    }
    let mut sessions = peer.session.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        node.send_control(peer, &Control::Cancel { transfer });
        let again = tokio::time::sleep(CANCEL_AGAIN);
        tokio::pin!(again);
        loop {
            tokio::select! {
                got = confirmations.recv() => match got {
                    Ok(id) if id == transfer => return true,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if !node.store.cancels(peer.name.as_str()).contains(&transfer) {
                            return true;
                        }
                    }
                    Err(_) => return false,
                },
                changed = sessions.changed() => {
                    if changed.is_err() { return false }
                    break;
                }
                () = &mut again => break,
                () = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }
}

/// How long a silent agent goes unmentioned while transfers wait on it.
const SILENCE_NOTICE: Duration = Duration::from_secs(10);

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

pub(crate) mod delta;
mod handshake;
mod listings;
mod queue;
mod sessions;
mod snapshots;
mod transfers;

use listings::*;
use queue::*;
use sessions::*;
use snapshots::*;
