//! The sending end of a transfer, as an explicit state machine.
//!
//! ```text
//! Offering --Accept{have}--> Sending --all acknowledged--> Finishing --Done--> Completed
//!    |  \--Done (already there)------------------------------------------------^
//!    '--Refuse--> Failed              Finishing --Ack with gaps--> Sending
//! ```
//!
//! Chunks go out in a window. A chunk is sent again when its timer (from
//! measured round trips, doubled per retry) runs out, or at once when a
//! selective acknowledgement shows three chunks sent after it arrived and
//! it did not. A new session (the other side restarted, or this one did)
//! repeats the offer, and the receiver's answer says what it already holds,
//! so nothing acknowledged is ever sent twice across a restart.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::early::{EarlyEntry, EarlyTail, EARLY_WAIT};
use super::seal::{SealBook, SealError};
mod dialogue;
mod prepare;

use prepare::{already_compressed, at_path, Prep, Ready};
pub(crate) use prepare::{hash_file, hash_open_file};
mod window;

use super::{Node, Peer, ProgressEvent, ProgressSink, Rto, TaskInput};
use crate::crypto::{ChunkCipher, TransferSecret};
use crate::error::{CoreError, Result};
use crate::protocol::{AckState, ChunkBody, Control, Gzip};
use crate::store::{now_unix, SourceStamp, TransferRecord};
use crate::view::{FaultCounters, LogLevel, TransferStatus};
use dialogue::{Answer, Dialogue, Due, Phase};

/// The largest frame that goes as a small transfer's, ahead of bulk data
/// and without room reserved behind it: a file that fits one text message
/// or a few lines of a document one, not a 1 MiB chunk on a document
/// channel (that would take the slots `reserve=` keeps free, and the
/// link's data budget would not see it).
const SMALL_FRAME: usize = 16 * 1024;
use window::{AckScope, Window};

/// How a transfer task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed([u8; 32]),
    Failed(String),
    /// The receiver could not rebuild the file from this delta (its copy
    /// is not the base any more): the transfer goes again as the whole
    /// file, under a new key. The why, for the user.
    WholeFile(String),
    Cancelled,
    Paused,
    /// The other side went quiet; state is kept for a later resume.
    Stopped,
}

pub(crate) struct SenderConfig {
    /// Give up (Failed on a client, Stopped on an agent) after this long
    /// without a word from the receiver.
    pub silence_limit: Duration,
    /// A client fails when the peer is silent; an agent keeps the state.
    pub fail_on_silence: bool,
    pub restarted: bool,
    /// The agent's storage root: its files are opened through it, never by
    /// a path a symlink could redirect.
    pub root: Option<crate::policy::StorageRoot>,
    /// The download rates the peer asked (an agent's; a client's uploads
    /// keep to its own `--bwlimit`, on its links).
    pub rate: Option<Arc<super::rate::Gate>>,
}

pub(crate) struct Sender {
    node: Arc<Node>,
    peer: Arc<Peer>,
    rec: TransferRecord,
    cfg: SenderConfig,
    cipher: Arc<ChunkCipher>,
    secret: TransferSecret,
    /// How every chunk of this run is sealed ([`SealBook`]).
    book: SealBook,
    /// The gzip level of this sealing run ([`crate::protocol::Squeeze`]).
    gzip_level: u32,
    file: Arc<std::fs::File>,
    /// Acknowledged, in flight, to resend ([`Window`]: pure).
    win: Window,
    progress: ProgressSink,
    /// The whole file's SHA-256, computed beside the sending (so the first
    /// chunk leaves before the file is hashed).
    hash_job: Option<JoinHandle<Result<[u8; 32]>>>,
    /// Chunks being read, compressed and sealed, in the order they go out.
    preps: VecDeque<Prep>,
    file_hash: Option<[u8; 32]>,
    /// Offering, sending, finishing; when to speak again ([`Dialogue`]: pure).
    talk: Dialogue,
    ready: Option<Ready>,
    /// The agent holds a file of this size at the target, with this hash.
    present: Option<[u8; 32]>,
    last_persist: Instant,
    /// How many times each link's circuit had opened when last looked at.
    openings: Vec<u64>,
    /// When an acknowledgement last told us something new: an expired
    /// timer blames its link only while acknowledgements arrive at all (if
    /// none do, what swallows them is the way back, not the data link).
    last_ack: Option<Instant>,
    /// When a chunk last went again as a probe while no answer came.
    last_probe: Option<Instant>,
    /// What the receiver holds of chunks on the wire that reached it only
    /// in part, by index: (frame length, byte ranges) of this run's copies.
    held: std::collections::HashMap<u32, (usize, Vec<(usize, usize)>)>,
}

impl Sender {
    /// A sender for `rec`, starting a new sealing run. The run is recorded
    /// in `rec`; [`run`](Self::run) makes it durable before the first chunk.
    pub fn new(
        node: Arc<Node>,
        peer: Arc<Peer>,
        mut rec: TransferRecord,
        cfg: SenderConfig,
        progress: ProgressSink,
    ) -> Result<Sender> {
        let file = match &cfg.root {
            // A delta's chunks are cut from the delta, made before the
            // transfer was recorded.
            _ if rec.manifest.delta.is_some() => {
                std::fs::File::open(node.store.delta_path(&rec.id))
            }
            Some(root) => root.open_file(&crate::policy::RemotePath::parse_file(&rec.remote_path)?),
            None => std::fs::File::open(&rec.local_path),
        }
        .map_err(|e| CoreError::io(format!("opening {}", rec.local_path.display()), e))?;
        if rec.secret.is_none() {
            rec.secret = node.store.secret(&rec.id)?;
        }
        let secret = rec.live_secret()?.clone();
        let cipher = ChunkCipher::new(&secret, &rec.id.0, &rec.manifest.hash()?);
        let compress = !rec.no_compress && !already_compressed(&rec.manifest.mime);
        // The run comes from the store, never from this copy of the record:
        // a copy read before another run began would start that run again.
        rec.seal_run = node.store.begin_seal_run(&rec.id, rec.seal_run)?;
        let book = SealBook::for_run(rec.seal_run, rec.chunks_total, compress);
        let window = (32 * 1024 * 1024 / rec.manifest.chunk_size.max(1) as usize).clamp(16, 4096);
        let rtos = (0..node.links.len())
            .map(|i| {
                let measured = node.address(&peer, i).and_then(|to| node.links[i].rtt(&to));
                Rto::for_link(&node.links[i], measured)
            })
            .collect();
        Ok(Sender {
            cipher: Arc::new(cipher),
            talk: Dialogue::new(
                rec.manifest.epoch(&secret)?,
                cfg.silence_limit,
                Instant::now(),
            ),
            secret,
            book,
            gzip_level: crate::engine::shape::gzip_level_for(node.links_to(&peer)),
            file: Arc::new(file),
            win: {
                // What the receiver acknowledged in earlier runs: the chunks
                // that go before its first answer (early, with the offer)
                // are the first it lacks, not the first of the file. Its
                // answer corrects this either way (`forget_missing`).
                let mut win = Window::new(rec.chunks_total, rtos, window);
                if let Some(held) = node
                    .store
                    .bitmap(&rec.id)?
                    .filter(|b| b.len() == rec.chunks_total)
                {
                    win.acked = held;
                }
                win
            },
            progress,
            hash_job: None,
            preps: VecDeque::new(),
            file_hash: None,
            ready: None,
            present: None,
            last_persist: Instant::now(),
            held: std::collections::HashMap::new(),
            last_ack: None,
            last_probe: None,
            openings: (0..node.links.len())
                .map(|i| {
                    node.address(&peer, i)
                        .map_or(0, |to| node.links[i].openings(&to))
                })
                .collect(),
            node,
            peer,
            rec,
            cfg,
        })
    }

    pub async fn run(mut self, mut inbox: mpsc::Receiver<TaskInput>) -> (TransferRecord, Outcome) {
        // The receiver held chunks before this run: it resumes (their
        // acknowledgements, loaded from the store, are no news to show).
        if self.win.acked.count() > 0 {
            self.progress.emit(ProgressEvent::Resumed);
        }
        let file = self.file.clone();
        let size = self.rec.manifest.size;
        let path = self.rec.local_path.clone();
        // A client sending a whole file keeps its signature in the same
        // read, for a delta against it next time (kept once the agent
        // verified it): where every link is paced, so the channel, not the
        // CPU, is the bottleneck (on an unpaced one the file goes whole
        // faster than a delta is made, and the signature's read would slow
        // the send: 0.47 s to 0.55 s for 100 MB here).
        let keeps_version = self.cfg.root.is_none()
            && self.rec.manifest.delta.is_none()
            && crate::engine::shape::paced(self.node.links_to(&self.peer));
        let (node, id) = (self.node.clone(), self.rec.id);
        let version = (self.rec.peer.clone(), self.rec.remote_path.clone());
        self.hash_job = Some(tokio::task::spawn_blocking(move || {
            if !keeps_version {
                return hash_open_file(&file, size).map_err(|e| at_path(e, &path));
            }
            let (sha256, signature) =
                crate::engine::deltas::hash_and_sign(&file, size).map_err(|e| at_path(e, &path))?;
            let (peer, remote_path) = version;
            let kept = node.store.put_pending_version(
                &id,
                &crate::store::SentVersion {
                    peer,
                    remote_path,
                    sha256,
                    size,
                    signature,
                },
            );
            if let Err(e) = kept {
                tracing::warn!("not keeping the signature of {}: {e}", path.display());
            }
            Ok(sha256)
        }));
        // This run's number is durable before anything is sealed under it.
        let outcome = match self.record_run().await {
            Ok(()) => self.run_states(&mut inbox).await,
            Err(e) => Outcome::Failed(format!(
                "cannot record the transfer's state ({e}); free space and run the command again"
            )),
        };
        if let Some(job) = self.hash_job.take() {
            job.abort();
        }
        for prep in self.preps.drain(..) {
            prep.job.abort();
        }
        self.persist(true);
        (self.rec, outcome)
    }

    /// The agent already holds a file of this size at the target, with
    /// SHA-256 `theirs`: complete if it is this file, else say how to
    /// replace it.
    async fn already_there(&mut self, theirs: [u8; 32]) -> Outcome {
        let ours = match (self.rec.manifest.delta, self.file_hash) {
            (Some(delta), _) => delta.sha256,
            (None, Some(h)) => h,
            (None, None) => match self.whole_file_hash().await {
                Ok(h) => h,
                Err(e) => return Outcome::Failed(e.to_string()),
            },
        };
        if ours == theirs {
            self.node.log(
                LogLevel::Info,
                format!(
                    "{}: already on the agent, verified (sha256 {})",
                    crate::policy::escape_control(&self.rec.remote_path),
                    &hex::encode(ours)[..16]
                ),
            );
            Outcome::Completed(ours)
        } else {
            Outcome::Failed(format!(
                "{} already exists on the agent with other content (sha256 {}, this file's {}); {}",
                crate::policy::escape_control(&self.rec.remote_path),
                &hex::encode(theirs)[..16],
                &hex::encode(ours)[..16],
                crate::engine::REPLACE_HINT
            ))
        }
    }

    async fn run_states(&mut self, inbox: &mut mpsc::Receiver<TaskInput>) -> Outcome {
        let mut sessions = self.peer.session.subscribe();
        let mut unreachable = self.node.unreachable.subscribe();
        match self.go_early().await {
            Ok(true) => {}
            Ok(false) => self.send_offer(),
            Err(e) => return self.abort(e.to_string()),
        }
        loop {
            if let Some(theirs) = self.present.take() {
                return self.already_there(theirs).await;
            }
            if let Some(why) = super::no_way_to_peer(&unreachable, self.cfg.fail_on_silence) {
                return Outcome::Failed(why);
            }
            let now = Instant::now();
            let rto = self.control_rto();
            while let Some(due) = self.talk.due(now, rto, self.win.acked.is_complete()) {
                if matches!(due, Due::Finish | Due::Offer) && self.talk.awaiting_answer() {
                    // Asking again, unanswered: the way there or back on
                    // the link control frames take may swallow them.
                    self.node.answer_lost(&self.peer);
                }
                match due {
                    Due::Silent => {
                        return super::silent_peer(
                            &self.node,
                            self.cfg.silence_limit,
                            self.cfg.fail_on_silence,
                        )
                    }
                    Due::Hash => {
                        tracing::debug!(transfer = %self.rec.id.short(), "all chunks acknowledged");
                        match self.whole_file_hash().await {
                            Ok(h) => self.file_hash = Some(h),
                            Err(e) => return self.abort(e.to_string()),
                        }
                        self.talk.hashed();
                    }
                    Due::Finish => {
                        let sha256 = self.file_hash.expect("hashed before finishing");
                        self.node.send_control(
                            &self.peer,
                            &Control::Finish {
                                transfer: self.rec.id,
                                sha256,
                            },
                        );
                        self.talk.finish_sent(now, rto);
                    }
                    Due::Offer => self.send_offer(),
                }
            }
            self.expire_timers(now);
            self.abandon_dead_links();
            let quiet = self.talk.quiet(now, rto);
            // Prepare the next chunk first, then wait for room for exactly
            // its size: small compressed frames pack many to a message.
            if self.talk.phase() == Phase::Sending && !quiet {
                self.start_preps();
            }
            let next_prepared = self.ready.is_none() && !self.preps.is_empty();
            let rest = self.rest(self.ready.as_ref().map_or(0, |r| r.frame.len()));
            let ready_len = self.ready.as_ref().map(|r| r.frame.len());
            // A chunk lost more than once: the links its copies went on
            // may swallow it (a one-way blackhole says nothing, and its
            // breaker counts slowly when one chunk's timer backs off), so
            // it goes on one it has not tried, if there is one (a seed of
            // three links once sent one chunk for ten minutes between a
            // dead link and a blackhole, beside the one that worked), else
            // not on the one that lost it last (the links take turns).
            let avoid = self
                .ready
                .as_ref()
                .filter(|r| r.retry)
                .and_then(|r| self.win.inflight.get(&r.index))
                .filter(|f| f.retries >= 1)
                .map_or(0, |f| {
                    let usable = (0..self.node.links.len().min(64))
                        .filter(|&i| self.node.usable(&self.peer, i))
                        .fold(0u64, |mask, i| mask | 1 << i);
                    if usable & !f.links != 0 {
                        f.links
                    } else {
                        1 << f.link.min(63)
                    }
                });
            // The rate the peer asked: wait for it, and leave out the links
            // it paces out now.
            let (paced_until, avoid) = self.rate_admit(Instant::now(), avoid);
            // A small transfer's one chunk, that one message carries: in
            // the next message of the link that sends it soonest, ahead of
            // bulk data and without waiting for room behind it.
            if let Some(len) = ready_len.filter(|&len| {
                self.rec.chunks_total == 1 && len <= SMALL_FRAME && !quiet && paced_until.is_none()
            }) {
                if let Some(link) = self.node.small_link(&self.peer, len, avoid) {
                    self.send_ready(link, None);
                    self.charge_rate(link, len);
                    continue;
                }
            }
            let wake = self.next_wake();
            let wake = paced_until.map_or(wake, |t| wake.min(t));
            // select! evaluates every branch's future, enabled or not: this
            // one must exist even when there is nothing to wait for.
            let head_job = self.preps.front_mut().map(|p| &mut p.job);
            let head_done = async move {
                match head_job {
                    Some(job) => job.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                input = inbox.recv() => {
                    let Some(input) = input else { return Outcome::Stopped };
                    match self.on_input(input) {
                        // Completed only if the receiver's hash is this file's.
                        Some(Outcome::Completed(theirs)) => {
                            let ours = match self.file_hash {
                                Some(h) => h,
                                None => match self.whole_file_hash().await {
                                    Ok(h) => h,
                                    Err(e) => return Outcome::Failed(e.to_string()),
                                },
                            };
                            return if ours == theirs {
                                Outcome::Completed(ours)
                            } else {
                                Outcome::Failed(format!(
                                    "the receiver confirmed SHA-256 {} but this file's is {}; nothing is reported complete",
                                    &hex::encode(theirs)[..16],
                                    &hex::encode(ours)[..16]
                                ))
                            };
                        }
                        Some(outcome) => return outcome,
                        None => {}
                    }
                }
                changed = sessions.changed() => {
                    // Also after an early offer: the agent may not have
                    // taken it (its clock, say), and an offer costs little.
                    if changed.is_ok() && self.talk.reoffer_on_new_session() {
                        // A new session: ask again what the receiver holds.
                        self.send_offer();
                    }
                }
                () = sleep_until(wake) => {}
                // Looked at at the top of the loop.
                _ = unreachable.changed() => {}
                done = head_done, if next_prepared => {
                    let prep = self.preps.pop_front().expect("checked non-empty");
                    let built = done
                        .map_err(|e| CoreError::Transfer(format!("chunk worker failed: {e}")))
                        .and_then(|r| r.map_err(|e| self.explain_read_error(e)))
                        .and_then(|built| self.check_prepared(&prep, built));
                    match built {
                        Ok(frame) => {
                            self.ready = Some(Ready {
                                index: prep.index,
                                retry: prep.retry,
                                frame,
                            })
                        }
                        Err(e) => return self.abort(e.to_string()),
                    }
                }
                (link, permit) = self.node.reserve_data(&self.peer, ready_len.unwrap_or(0), rest, avoid), if ready_len.is_some() && !quiet && paced_until.is_none() => {
                    self.send_ready(link, Some(permit));
                    self.charge_rate(link, ready_len.unwrap_or(0));
                }
            }
            self.persist(false);
        }
    }

    /// What the rate the peer asked allows now ([`super::rate::Gate`]):
    /// when the next frame may go if not now, and the links to avoid (on
    /// top of `avoid`, which gives way if together they leave no link).
    fn rate_admit(&self, now: Instant, avoid: u64) -> (Option<Instant>, u64) {
        let Some(gate) = &self.cfg.rate else {
            return (None, avoid);
        };
        let usable: Vec<bool> = (0..self.node.links.len())
            .map(|i| self.node.usable(&self.peer, i))
            .collect();
        match gate.admit(self.session_id(), &usable, now) {
            super::rate::Admit::Until(t) => (Some(t), avoid),
            super::rate::Admit::Now { closed: 0 } => (None, avoid),
            super::rate::Admit::Now { closed } => {
                let any = usable.iter().any(|&u| u);
                let leaves = |mask: u64| {
                    (0..usable.len().min(64)).any(|i| (usable[i] || !any) && mask & (1 << i) == 0)
                };
                let both = avoid | closed;
                (None, if leaves(both) { both } else { closed })
            }
        }
    }

    /// A frame of `bytes` went on `link`: the peer's asked rate pays for it.
    fn charge_rate(&self, link: usize, bytes: usize) {
        if let Some(gate) = &self.cfg.rate {
            gate.charge(self.session_id(), link, bytes, Instant::now());
        }
    }

    fn session_id(&self) -> Option<[u8; 16]> {
        self.peer.session.borrow().as_ref().map(|s| s.id)
    }

    /// The bytes still to send, with a frame of `bytes` about to go: the
    /// chunks neither acknowledged nor on the wire, at the chunk size.
    fn rest(&self, bytes: usize) -> u64 {
        let waiting = u64::from(self.win.acked.len())
            .saturating_sub(u64::from(self.win.acked.count()))
            .saturating_sub(self.win.inflight.len() as u64 + 1);
        waiting * u64::from(self.rec.manifest.chunk_size) + bytes as u64
    }

    /// This side cannot go on (the source changed or cannot be read): tell
    /// the receiver why, so it stops now instead of waiting out its silence
    /// limit and blaming the channel.
    fn abort(&self, reason: String) -> Outcome {
        self.node.send_control(
            &self.peer,
            &Control::Abort {
                transfer: self.rec.id,
                reason: reason.clone(),
            },
        );
        Outcome::Failed(reason)
    }

    /// The source as the other side knows it: an agent's own paths stay
    /// its own.
    fn source_name(&self) -> String {
        match &self.cfg.root {
            Some(_) => crate::policy::escape_control(&self.rec.remote_path).into_owned(),
            None => self.rec.local_path.display().to_string(),
        }
    }

    /// This run's number was taken from the store as the sender was made
    /// ([`crate::store::Store::begin_seal_run`]): make it durable.
    async fn record_run(&mut self) -> Result<()> {
        self.node.store.flush_async().await?;
        self.cipher.begin_run(self.book.run());
        Ok(())
    }

    fn offer(&self) -> Control {
        Control::Offer {
            transfer: self.rec.id,
            manifest: self.rec.manifest.clone(),
            secret: self.secret.clone(),
            path: self.rec.remote_path.clone(),
            overwrite: self.rec.overwrite,
            restarted: self.cfg.restarted,
            expires_after_secs: self.node.store.expiry_term(&self.rec.id),
        }
    }

    fn send_offer(&mut self) {
        let offer = self.offer();
        let sent = self.node.send_control(&self.peer, &offer);
        self.talk
            .offer_sent(sent, Instant::now(), self.control_rto());
    }

    fn on_input(&mut self, input: TaskInput) -> Option<Outcome> {
        match input {
            TaskInput::Pause => return Some(Outcome::Paused),
            TaskInput::Cancel => {
                self.node.send_control(
                    &self.peer,
                    &Control::Cancel {
                        transfer: self.rec.id,
                    },
                );
                return Some(Outcome::Cancelled);
            }
            TaskInput::Revoked(reason) => {
                self.node.refuse(
                    &self.peer,
                    self.rec.id,
                    crate::protocol::RefuseCode::Permission,
                    reason.clone(),
                );
                return Some(Outcome::Failed(reason));
            }
            TaskInput::Chunk { .. } => {}
            TaskInput::Control(c) => {
                self.talk.heard(Instant::now());
                match *c {
                    Control::Accept { have, epoch, .. } => self.answer(Answer::Accept, epoch, &have),
                    Control::Ack { have, epoch, .. } => self.answer(Answer::Ack, epoch, &have),
                    Control::Pieces { held, .. } => self.on_pieces(held),
                    Control::Done { sha256, faults, .. } => {
                        // What the channel did on the way in, as the receiver saw it.
                        let seen = FaultCounters {
                            retransmitted: 0,
                            ..faults
                        };
                        self.rec.faults.add(&seen);
                        self.progress.emit(ProgressEvent::Seen(seen));
                        return Some(Outcome::Completed(sha256));
                    }
                    Control::Mismatch { reason, .. } if self.rec.manifest.delta.is_some() => {
                        return Some(Outcome::WholeFile(format!(
                            "the agent could not rebuild it from the differences ({reason})"
                        )))
                    }
                    Control::Mismatch { reason, .. } => {
                        return Some(Outcome::Failed(format!(
                            "the receiver's whole-file check failed ({reason}); the source probably changed while it was sent: run the command again"
                        )))
                    }
                    Control::Refuse {
                        code: crate::protocol::RefuseCode::BaseChanged,
                        reason,
                        ..
                    } if self.rec.manifest.delta.is_some() => {
                        return Some(Outcome::WholeFile(reason))
                    }
                    Control::Refuse { reason, .. } => {
                        return Some(Outcome::Failed(format!("the agent refused: {reason}")))
                    }
                    Control::Present { sha256, .. } => self.present = Some(sha256),
                    Control::Cancel { .. } if self.cfg.root.is_some() => {
                        // The client cancelled its download.
                        self.node.send_control(
                            &self.peer,
                            &Control::Cancelled {
                                transfer: self.rec.id,
                            },
                        );
                        return Some(Outcome::Cancelled);
                    }
                    Control::Cancel { .. } => {
                        return Some(Outcome::Failed(
                            "the receiver cancelled this transfer (a newer one to the same path replaced it)".into(),
                        ))
                    }
                    // The client asked again (it restarted): offer again,
                    // also when finishing. A receiver that restarted opens
                    // its partial file only on an offer and ignores a
                    // Finish before it; the Finish follows the offer at
                    // once (found by the simulator, seed 185: a download
                    // whose client was killed after the last chunk's
                    // acknowledgement fetched and was told Finish forever).
                    Control::Fetch { .. } => {
                        // Asked again: what we sent it may have vanished.
                        self.node.answer_lost(&self.peer);
                        self.send_offer();
                        self.talk.fetched();
                    }
                    _ => {}
                }
            }
        }
        None
    }

    /// Take in an answer saying what the receiver holds, as the dialogue
    /// says to believe it.
    fn answer(&mut self, kind: Answer, epoch: [u8; 8], have: &AckState) {
        let have = have.normalized(self.win.acked.len());
        let Some(take) = self.talk.answer(kind, epoch) else {
            tracing::debug!(transfer = %self.rec.id.short(), ?have, "answer about another keying dropped");
            return;
        };
        self.node.answers_arrive(&self.peer);
        if take.forget_missing {
            self.forget_missing(&have);
        }
        self.on_ack(&have, take.scope);
        self.talk.applied(kind, self.win.acked.is_complete());
    }

    /// Take in a (normalized) acknowledgement: of every chunk it names
    /// (`All`: answers to our offer or finish), or of the chunks in flight.
    fn on_ack(&mut self, have: &AckState, scope: AckScope) {
        let got = self.win.on_ack(have, scope, Instant::now());
        if got.newly.is_empty() {
            return;
        }
        self.last_ack = Some(Instant::now());
        for &index in &got.newly {
            self.held.remove(&index);
            self.progress.emit(ProgressEvent::Acked { index });
        }
        for i in 0..self.node.links.len() {
            if let Some(srtt) = self.win.rto(i).srtt() {
                self.node
                    .judge(&self.peer, i, |link, to| link.record_rtt(to, srtt));
            }
        }
        for &(link, sent_at) in &got.delivered {
            self.node
                .judge(&self.peer, link, |l, to| l.delivered(to, sent_at));
        }
        for &(link, sent_at) in &got.lost {
            self.charge_lost(link, sent_at);
        }
        for i in got.gaps {
            tracing::debug!(transfer = %self.rec.id.short(), chunk = i, "gap: resending");
        }
        self.node.touch();
    }

    /// The receiver holds these chunks only in part. Kept for the chunks on
    /// the wire in this run (a report is bounded, and names nothing else we
    /// would send); a copy that has had the time to arrive whole goes again
    /// now, as pieces of what is missing.
    fn on_pieces(&mut self, held: Vec<crate::protocol::PiecesHeld>) {
        let now = Instant::now();
        let run = self.book.run();
        for h in held
            .into_iter()
            .take(crate::protocol::PiecesHeld::MAX_CHUNKS)
        {
            if h.run != run || !self.win.inflight.contains_key(&h.index) {
                continue;
            }
            let Some(ranges) = h.checked_ranges() else {
                continue;
            };
            self.held.insert(h.index, (h.total as usize, ranges));
            if self.win.partly_held(h.index, now) {
                tracing::debug!(transfer = %self.rec.id.short(), chunk = h.index, "held in part: sending the rest");
            }
        }
    }

    /// Un-acknowledge what the receiver says it does not hold (as far as
    /// its answer reaches: beyond its last range nothing is said).
    fn forget_missing(&mut self, have: &AckState) {
        let lost = self.win.forget_missing(have);
        if lost.is_empty() {
            return;
        }
        tracing::debug!(
            transfer = %self.rec.id.short(),
            lost = lost.len(),
            "the receiver holds less than acknowledged; sending again"
        );
        for index in lost {
            self.progress.emit(ProgressEvent::Lost { index });
        }
    }

    /// The timeout of the link control frames go on now (not of the
    /// fastest link, which may be the one that is out).
    fn control_rto(&self) -> Duration {
        let session_link = self.node.session_link(&self.peer);
        let link = self
            .node
            .control_link(&self.peer, session_link)
            .map_or(session_link, |(i, _, _)| i);
        self.win.rto(link).get()
    }

    /// Chunks on a link whose circuit just opened go again on the others
    /// at once: a dead link costs only what was in flight on it.
    fn abandon_dead_links(&mut self) {
        for (i, link) in self.node.links.iter().enumerate() {
            let dropped = link.take_dropped(&self.rec.id.0);
            if !dropped.is_empty() {
                let again = self.win.dropped(i, &dropped);
                tracing::debug!(transfer = %self.rec.id.short(), link = i, chunks = again.len(), "messages failed: resending their chunks");
            }
            let Some(to) = self.node.address(&self.peer, i) else {
                continue;
            };
            let openings = link.openings(&to);
            // Sent again at once only where another link can take them
            // (on the same link, their copies are still queued).
            let elsewhere =
                (0..self.node.links.len()).any(|j| j != i && self.node.usable(&self.peer, j));
            if openings != self.openings[i] {
                self.openings[i] = openings;
                if !elsewhere {
                    continue;
                }
                let gone = self.win.abandon(i);
                if !gone.is_empty() {
                    tracing::debug!(transfer = %self.rec.id.short(), link = i, chunks = gone.len(), "link out: resending its chunks in flight");
                }
            }
        }
    }

    /// A chunk sent on `link` was lost there: the link is charged (per
    /// peer: its breaker and its loss count) and the transfer counts it.
    fn charge_lost(&mut self, link: usize, sent_at: Instant) {
        self.rec.faults.lost += 1;
        self.node
            .judge(&self.peer, link, |l, to| l.lost(to, sent_at));
    }

    fn expire_timers(&mut self, now: Instant) {
        // A chunk sent since the last acknowledgement that came says
        // nothing when its timer runs out: the way back may be what is
        // out. One such goes again as a probe, one a timeout, not every one
        // whose timer ran out (a 34 s outage once cost 1,982 chunks of
        // 2,815).
        let probing = self
            .last_probe
            .is_some_and(|at| now.saturating_duration_since(at) < self.control_rto());
        let (expired, probed) = self.win.expire(now, self.last_ack, probing);
        if probed {
            self.last_probe = Some(now);
        }
        for (i, link) in expired {
            let rto = self.win.rto(link).get();
            tracing::debug!(transfer = %self.rec.id.short(), chunk = i, link, ?rto, "timer: resending");
            // Acknowledged something since this chunk left (about one
            // timeout ago): the way back works, so this link lost it. With
            // nothing acknowledged at all, the way back may be what
            // swallows (the receiver finds that from our resends and
            // answers elsewhere): blame the link only for a chunk lost on
            // it again, a link that swallows our way too must still be
            // found.
            let flowing = self
                .last_ack
                .is_some_and(|at| now.saturating_duration_since(at) < rto * 2);
            let flight = self.win.inflight.get(&i);
            let again = flight.is_some_and(|f| f.retries > 0);
            let sent_at = flight.map_or(now, |f| f.sent_at);
            if flowing || again {
                self.charge_lost(link, sent_at);
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + Duration::from_secs(1);
        if let Some(d) = self.win.next_deadline() {
            wake = wake.min(d);
        }
        if let Some(t) = self.talk.next_wake(now) {
            wake = wake.min(t);
        }
        wake
    }

    fn persist(&mut self, force: bool) {
        if !force && self.last_persist.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last_persist = Instant::now();
        self.rec.chunks_done = self.win.acked.count();
        if self.rec.status == TransferStatus::Pending {
            self.rec.status = TransferStatus::InProgress;
        }
        let _ = self.node.store.put_bitmap(&self.rec.id, &self.win.acked);
        // Only what this task owns: the queue may have moved the transfer
        // (its priority) or another task taken a newer sealing run.
        let (done, faults) = (self.rec.chunks_done, self.rec.faults);
        let _ = self.node.store.update_transfer(&self.rec.id, |r| {
            r.chunks_done = done;
            r.faults = faults;
            if r.status == TransferStatus::Pending {
                r.status = TransferStatus::InProgress;
            }
        });
    }
}

fn sleep_until(t: Instant) -> tokio::time::Sleep {
    tokio::time::sleep_until(t)
}

/// Store how a task ended: what the task owned (its progress, its faults,
/// what it verified, where it wrote) and the outcome, written onto the
/// stored record, not over it with the copy the task held since it began
/// (the queue may have moved the transfer meanwhile, and the store holds
/// the latest sealing run). `then` adjusts the result (a client keeps a
/// stopped transfer pending). Returns the record as stored, with the
/// task's secret.
pub(crate) fn store_outcome(
    store: &crate::store::Store,
    task: &TransferRecord,
    outcome: &Outcome,
    then: impl Fn(&mut TransferRecord),
) -> TransferRecord {
    let apply = |r: &mut TransferRecord| {
        r.chunks_done = task.chunks_done;
        r.faults = task.faults;
        r.sha256 = task.sha256.or(r.sha256);
        r.partial_path.clone_from(&task.partial_path);
        finish_record(r, outcome);
        then(r);
    };
    match store.update_transfer(&task.id, apply) {
        Ok(Some(stored)) => TransferRecord {
            secret: task.secret.clone(),
            ..stored
        },
        // Gone from the store (forgotten, or started over meanwhile): it
        // stays gone; the caller still learns how the task ended.
        _ => {
            let mut rec = task.clone();
            apply(&mut rec);
            rec
        }
    }
}

/// Mark a finished transfer in its record.
pub(crate) fn finish_record(rec: &mut TransferRecord, outcome: &Outcome) {
    match outcome {
        Outcome::Completed(sha) => {
            rec.status = TransferStatus::Completed;
            rec.sha256 = Some(*sha);
            rec.chunks_done = rec.chunks_total;
            rec.completed_unix = Some(now_unix());
            rec.error = None;
        }
        Outcome::Failed(e) | Outcome::WholeFile(e) => {
            rec.status = TransferStatus::Failed;
            rec.error = Some(e.clone());
        }
        Outcome::Cancelled => rec.status = TransferStatus::Cancelled,
        Outcome::Paused => rec.status = TransferStatus::Paused,
        Outcome::Stopped => {}
    }
}
