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
use crate::engine::sender::{finish_record, Outcome, Sender, SenderConfig};
use crate::error::{CoreError, Result};
use crate::home::Home;
use crate::link::{message_payload, LinkHandle, WHOLE_RECORD_OVERHEAD};
use crate::policy::RemotePath;
use crate::protocol::{Control, Early, Frame, Manifest, RefuseCode, CHUNK_FRAME_OVERHEAD};
use crate::store::{
    now_unix, NewTransfer, Role, SessionRecord, SessionStatus, SourceStamp, Store, TransferRecord,
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
    });
    crate::task::spawn(route(node.clone(), hooks.clone(), rx));
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

/// Links carrying at most this much a second together are slower than
/// gzip at level 6 on one core (zlib-rs: some 60 MB/s on log text): the
/// channel, not the CPU, is the bottleneck.
const SLOW_LINKS: u64 = 4_000_000;

/// The gzip level a sender over `links` compresses at: 6 when every link
/// is paced and together they carry at most [`SLOW_LINKS`] a second (on
/// log text in 1 MiB chunks 19.9% of the bytes instead of 24.6%, in 3 KB
/// chunks 33.3% instead of 35.5%), else 1 (a fast link would wait for the
/// CPU).
pub(crate) fn gzip_level_for(links: &[LinkHandle]) -> u32 {
    gzip_level_over(links.iter().map(LinkHandle::capabilities))
}

fn gzip_level_over<'a>(mut links: impl Iterator<Item = &'a crate::transport::Capabilities>) -> u32 {
    let pace = links.try_fold(0u64, |sum, caps| {
        let per_minute = caps.messages_per_minute? as u64 * caps.payload_bytes() as u64;
        let per_minute = caps
            .bytes_per_minute
            .map_or(per_minute, |b| b.min(per_minute));
        Some(sum + per_minute / 60)
    });
    match pace {
        Some(bytes_per_sec) if bytes_per_sec <= SLOW_LINKS => 6,
        _ => 1,
    }
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
pub use snapshots::{stored_report, stored_reports};

#[cfg(test)]
mod level_tests {
    use super::gzip_level_over;
    use crate::transport::Profile;

    #[test]
    fn gzip_works_harder_only_where_the_channel_is_the_bottleneck() {
        let level = |profiles: &[Profile]| {
            let caps: Vec<_> = profiles.iter().map(|p| p.capabilities()).collect();
            gzip_level_over(caps.iter())
        };
        assert_eq!(level(&[Profile::TelegramText]), 6);
        assert_eq!(level(&[Profile::WhatsappDoc, Profile::TelegramText]), 6);
        assert_eq!(level(&[Profile::Shipper]), 1);
        assert_eq!(level(&[Profile::Unlimited]), 1);
        assert_eq!(level(&[Profile::TelegramText, Profile::Unlimited]), 1);
    }
}
