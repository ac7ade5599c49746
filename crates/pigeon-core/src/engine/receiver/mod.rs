//! The receiving end of a transfer.
//!
//! ```text
//! (client only) Fetching --Offer--> Receiving --Finish(hash ok)--> Completed
//!                                       '------Finish(hash differs)--> Failed (partial deleted)
//! ```
//!
//! Each chunk is opened (authenticated, decompressed within its declared
//! size, SHA-256 checked) and written at its offset in a sparse partial
//! file. Acknowledgements are batched: before each one the partial file is
//! synced and the bitmap flushed to the store, so an acknowledged chunk
//! survives a kill -9 of this process. The partial file is renamed into
//! place only once the whole file's SHA-256 matches the sender's.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::sender::{hash_file, Outcome};
use super::{Fault, Node, Peer, ProgressEvent, ProgressSink, Rto, TaskInput};
use crate::bitmap::Bitmap;
use crate::crypto::{ChunkCipher, ChunkNonce};
use crate::error::{CoreError, IoContext, Result};
use crate::protocol::{AckState, ChunkBody, Control, FetchBase, RefuseCode};
use crate::store::TransferRecord;
use crate::view::{LogLevel, TransferStatus};
use intake::{AckPlan, Arrival, FinishStep, Intake};

mod finish;
mod intake;
mod rebuild;

pub(crate) use rebuild::rebuilt_path;

pub(crate) struct ReceiverConfig {
    /// The client drives a download: it sends the fetch and repeats it.
    pub initiator: bool,
    pub silence_limit: Duration,
    pub fail_on_silence: bool,
    /// The agent's storage root: the verified file is put in place through
    /// it, never by a path a symlink could redirect.
    pub root: Option<crate::policy::StorageRoot>,
    /// Record the completion in the audit log (the agent does), in the
    /// same flush as the completion itself.
    pub audit: bool,
    /// Look at the finished file before it is put in place, and hold it in
    /// the root's quarantine if the rules say (the agent does).
    pub quarantine: Option<crate::policy::quarantine::Rules>,
    /// Asked, just before the file is put in place, whether the peer may
    /// still (the agent's rights as they are now).
    pub authority: Option<super::Authority>,
    /// The download rates to ask the sender for, with each fetch (a
    /// client's `--bwlimit UP:DOWN`).
    pub asked: Option<Arc<super::rate::Asked>>,
}

pub(crate) struct Receiver {
    node: Arc<Node>,
    peer: Arc<Peer>,
    rec: TransferRecord,
    cfg: ReceiverConfig,
    cipher: Option<Arc<ChunkCipher>>,
    file: Option<Arc<std::fs::File>>,
    /// Held chunks, acknowledgements, fetches, silence ([`Intake`]: pure).
    intake: Intake,
    progress: ProgressSink,
    rto: Rto,
    /// The verified file was already renamed into place by a run that
    /// died before recording it.
    renamed: bool,
    /// A delta's file was rebuilt and checked by a run that died before
    /// putting it in place ([`rebuild`]).
    rebuilt: bool,
    /// What a download's fetches say this side holds of the file already.
    base: Option<FetchBase>,
    /// SHA-256 of the chunks received in order from the first (the
    /// intake says which chunk it needs next); dropped at the first gap.
    running: Option<Sha256>,
    /// The acknowledgement being made durable and sent.
    ack_job: Option<tokio::task::JoinHandle<Result<()>>>,
    /// The link the chunk being taken in came by: its faults are its link's.
    arrived_on: usize,
    /// Offers this task answered: another one means the answer was lost.
    offers_answered: u32,
    /// The last fetch went out (there was a session to seal it in).
    fetch_went: bool,
    /// Pieces of a chunk that stopped coming for this long were lost: say
    /// what is held, for the sender to send the rest.
    stall: Duration,
    /// The last such report and when.
    pieces_said: Option<(Vec<HeldSaid>, Instant)>,
}

/// What a pieces report said of one chunk: its index, run and bytes held.
type HeldSaid = (u32, u32, u64);

impl Receiver {
    pub fn new(
        node: Arc<Node>,
        peer: Arc<Peer>,
        mut rec: TransferRecord,
        cfg: ReceiverConfig,
        progress: ProgressSink,
    ) -> Result<Receiver> {
        if rec.secret.is_none() {
            rec.secret = node.store.secret(&rec.id)?;
        }
        let have = node
            .store
            .bitmap(&rec.id)?
            .filter(|b| b.len() == rec.chunks_total)
            .unwrap_or_else(|| Bitmap::new(rec.chunks_total));
        // Answers go on the control link: its timing is theirs.
        let rto = node.control_rto(&peer);
        let control = match node.control_link(&peer, node.session_link(&peer)) {
            Some((_, link, _)) => link,
            None => &node.links[0],
        };
        let ack_delay = match control.capabilities().messages_per_minute {
            Some(m) => {
                Duration::from_secs_f64(30.0 / f64::from(m.max(1))).min(Duration::from_millis(500))
            }
            None => Duration::from_millis(20),
        };
        let running = (have.count() == 0).then(Sha256::new);
        let intake = Intake::new(
            have,
            ack_delay,
            cfg.initiator,
            cfg.silence_limit,
            Instant::now(),
        );
        // A chunk's pieces come one message apart on their link: two of the
        // slowest link's intervals without one, and the rest was lost.
        let stall = node
            .links
            .iter()
            .filter_map(|l| l.capabilities().messages_per_minute)
            .map(|m| Duration::from_secs_f64(120.0 / f64::from(m.max(1))))
            .max()
            .unwrap_or_default()
            .clamp(Duration::from_secs(1), Duration::from_secs(20));
        // A download asks the differences from the version here, if it
        // asked so when it began (each fetch repeats it).
        let base = match cfg.initiator {
            true => node.store.fetch_base(&rec.id).map(|v| FetchBase {
                sha256: v.sha256,
                signature: v.signature,
            }),
            false => None,
        };
        let mut r = Receiver {
            base,
            arrived_on: 0,
            offers_answered: 0,
            fetch_went: false,
            stall,
            pieces_said: None,
            node,
            peer,
            cfg,
            cipher: None,
            file: None,
            intake,
            progress,
            rto,
            renamed: false,
            rebuilt: false,
            running,
            ack_job: None,
            rec,
        };
        if !r.cfg.initiator {
            r.open_partial(false)?;
        }
        Ok(r)
    }

    fn partial_path(&self) -> PathBuf {
        self.rec
            .partial_path
            .clone()
            .expect("a receiving transfer always has a partial path")
    }

    /// Open (or, when `reset`, recreate) the sparse partial file.
    fn open_partial(&mut self, reset: bool) -> Result<()> {
        let path = self.partial_path();
        self.cipher = Some(Arc::new(ChunkCipher::new(
            self.rec.live_secret()?,
            &self.rec.id.0,
            &self.rec.manifest.hash()?,
        )));
        // Killed between putting the file in place and recording it: the
        // whole file is already there, to be checked against the final hash.
        if !reset && !path.exists() && self.intake.have().is_complete() {
            // Killed after a delta's file was rebuilt (and the delta let
            // go) but before it was put in place.
            if self.rec.manifest.delta.is_some() && rebuild::rebuilt_path(&path).exists() {
                self.rebuilt = true;
                return Ok(());
            }
            if self.target_exists() {
                self.renamed = true;
                return Ok(());
            }
        }
        if let Some(parent) = path.parent() {
            crate::home::create_public_dirs(parent)
                .ctx(|| format!("creating {}", parent.display()))?;
        }
        let created = !path.exists();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(reset)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        file.set_len(self.rec.manifest.size)
            .ctx(|| format!("sizing {} (is the disk full?)", path.display()))?;
        if created {
            // The partial file's name must survive a crash as its chunks do.
            if let Some(parent) = path.parent() {
                crate::home::sync_dir(parent).ctx(|| format!("syncing {}", parent.display()))?;
            }
        }
        self.file = Some(Arc::new(file));
        self.renamed = false;
        self.rebuilt = false;
        Ok(())
    }

    pub async fn run(mut self, mut inbox: mpsc::Receiver<TaskInput>) -> (TransferRecord, Outcome) {
        let outcome = self.run_states(&mut inbox).await;
        if outcome == Outcome::Stopped || outcome == Outcome::Paused {
            let _ = self.sync_and_persist().await;
        }
        (self.rec, outcome)
    }

    async fn run_states(&mut self, inbox: &mut mpsc::Receiver<TaskInput>) -> Outcome {
        let mut sessions = self.peer.session.subscribe();
        let mut unreachable = self.node.unreachable.subscribe();
        if self.cfg.initiator {
            self.send_fetch();
        }
        loop {
            let now = Instant::now();
            if let Some(why) = super::no_way_to_peer(&unreachable, self.cfg.fail_on_silence) {
                return Outcome::Failed(why);
            }
            if self.intake.silent(now) {
                return super::silent_peer(
                    &self.node,
                    self.cfg.silence_limit,
                    self.cfg.fail_on_silence,
                );
            }
            if self.intake.fetch_due(now) {
                // Asked and not answered: the link our asks go on may
                // swallow them (or the answers' way back): after a few,
                // asks go on another. Not a fetch that never went (no
                // session yet).
                if self.fetch_went {
                    self.node.answer_lost(&self.peer);
                }
                self.send_fetch();
            }
            if let Err(e) = self.ack_timer(now).await {
                return Outcome::Failed(e.to_string());
            }
            self.report_pieces(now);
            let wake = self.intake.next_wake(now);
            tokio::select! {
                input = inbox.recv() => {
                    let Some(input) = input else { return Outcome::Stopped };
                    match self.on_input(input).await {
                        Ok(Some(outcome)) => return outcome,
                        Ok(None) => {}
                        Err(e) => return Outcome::Failed(e.to_string()),
                    }
                }
                changed = sessions.changed() => {
                    if changed.is_ok() && self.cfg.initiator {
                        self.send_fetch();
                    }
                }
                () = tokio::time::sleep_until(wake) => {}
                // Looked at at the top of the loop.
                _ = unreachable.changed() => {}
            }
        }
    }

    /// Say what is held of chunks whose pieces stopped coming (some were
    /// lost), when that changed or the last report may have been lost: the
    /// sender then sends only the rest of each.
    fn report_pieces(&mut self, now: Instant) {
        if self.file.is_none() {
            return;
        }
        let have = self.intake.have();
        let held: Vec<crate::protocol::PiecesHeld> = self.node.links[0]
            .held(&self.rec.id.0)
            .into_iter()
            .filter(|h| {
                h.key.index < have.len()
                    && !have.get(h.key.index)
                    && now.duration_since(h.touched) >= self.stall
            })
            .take(crate::protocol::PiecesHeld::MAX_CHUNKS)
            .map(|h| crate::protocol::PiecesHeld {
                index: h.key.index,
                run: h.key.run,
                total: h.total as u32,
                ranges: h
                    .ranges
                    .iter()
                    .take(crate::protocol::PiecesHeld::MAX_RANGES)
                    .map(|&(s, e)| (s as u32, e as u32))
                    .collect(),
            })
            .collect();
        if held.is_empty() {
            self.pieces_said = None;
            return;
        }
        let print: Vec<(u32, u32, u64)> = held
            .iter()
            .map(|h| {
                let bytes = h.ranges.iter().map(|(s, e)| u64::from(e - s)).sum();
                (h.index, h.run, bytes)
            })
            .collect();
        let said_lately = self.pieces_said.as_ref().is_some_and(|(p, at)| {
            *p == print && now.duration_since(*at) < (self.rto.get() * 2).max(self.stall)
        });
        if said_lately {
            return;
        }
        let report = Control::Pieces {
            transfer: self.rec.id,
            held,
        };
        if self.node.send_control(&self.peer, &report) {
            tracing::debug!(transfer = %self.rec.id.short(), chunks = print.len(), "told the sender which pieces arrived");
            self.pieces_said = Some((print, now));
        }
    }

    fn send_fetch(&mut self) {
        let sent = self.node.send_control(
            &self.peer,
            &Control::Fetch {
                transfer: self.rec.id,
                path: self.rec.remote_path.clone(),
                base: self.base.clone(),
            },
        );
        if sent {
            if let Some(asked) = &self.cfg.asked {
                asked.tell(&self.node, &self.peer);
            }
        }
        self.fetch_went = sent;
        self.intake.fetched(sent, Instant::now(), self.rto.get());
    }

    async fn on_input(&mut self, input: TaskInput) -> Result<Option<Outcome>> {
        match input {
            TaskInput::Pause => Ok(Some(Outcome::Paused)),
            TaskInput::Cancel => {
                self.node.send_control(
                    &self.peer,
                    &Control::Cancel {
                        transfer: self.rec.id,
                    },
                );
                self.discard();
                Ok(Some(Outcome::Cancelled))
            }
            TaskInput::Revoked(reason) => Ok(Some(self.revoked(reason))),
            TaskInput::Chunk { at, body, link } => {
                self.arrived_on = link;
                match self.on_chunk(at, body).await {
                    Ok(()) => Ok(None),
                    Err(e) => Ok(Some(self.cannot_write(e))),
                }
            }
            TaskInput::Control(c) => {
                self.intake.heard(Instant::now());
                self.on_control(*c).await
            }
        }
    }

    async fn on_control(&mut self, c: Control) -> Result<Option<Outcome>> {
        match c {
            Control::Offer {
                manifest,
                secret,
                restarted,
                ..
            } => {
                if let Err(reason) = manifest.check() {
                    return Ok(Some(Outcome::Failed(format!(
                        "the agent offered an impossible file: {reason}"
                    ))));
                }
                let rekeyed =
                    manifest != self.rec.manifest || Some(&secret) != self.rec.secret.as_ref();
                if self.cfg.initiator && (self.file.is_none() || rekeyed) {
                    let had = self.intake.have().count();
                    let changed = self.rec.chunks_total > 0 && rekeyed;
                    if changed || self.file.is_none() && had == 0 {
                        self.reset_to(manifest, secret).await?;
                    } else {
                        self.open_partial(false)?;
                    }
                    if restarted && had > 0 {
                        self.node.log(
                            LogLevel::Warn,
                            format!(
                                "{} changed on the agent since the interrupted download; restarting it under a new key",
                                self.rec.remote_path
                            ),
                        );
                    }
                }
                if self.intake.have().count() > 0 {
                    self.progress.emit(ProgressEvent::Resumed);
                }
                if self.offers_answered > 0 && !rekeyed {
                    // Offered again, unchanged: our Accept may have vanished.
                    self.node.answer_lost(&self.peer);
                }
                self.offers_answered += 1;
                self.intake.answered_offer(Instant::now(), self.rto.get());
                self.sync_and_persist().await?;
                self.node.send_control(
                    &self.peer,
                    &Control::Accept {
                        transfer: self.rec.id,
                        epoch: self.rec.manifest.epoch(self.rec.live_secret()?)?,
                        have: AckState::from_bitmap(self.intake.have()),
                    },
                );
                Ok(None)
            }
            Control::Finish { sha256, .. } => self.on_finish(sha256).await,
            Control::Refuse { reason, code, .. } => Ok(Some(Outcome::Failed(match code {
                RefuseCode::NotFound => format!("the agent has no such file: {reason}"),
                _ => format!("the agent refused: {reason}"),
            }))),
            Control::Cancel { .. } => {
                self.discard();
                if self.cfg.root.is_some() {
                    self.node.send_control(
                        &self.peer,
                        &Control::Cancelled {
                            transfer: self.rec.id,
                        },
                    );
                }
                Ok(Some(Outcome::Cancelled))
            }
            Control::Abort { reason, .. } => {
                // Whatever it held came from a source that is no more.
                self.discard();
                Ok(Some(Outcome::Failed(format!(
                    "the sender stopped: {}",
                    crate::policy::escape_control(&reason)
                ))))
            }
            _ => Ok(None),
        }
    }

    /// A new manifest (new transfer, or the source changed): start over.
    async fn reset_to(
        &mut self,
        manifest: crate::protocol::Manifest,
        secret: crate::crypto::TransferSecret,
    ) -> Result<()> {
        // An acknowledgement being made of the old keying must not land
        // after the reset and overwrite it.
        if let Some(job) = self.ack_job.take() {
            let _ = job.await;
            self.intake.ack_settled();
        }
        self.rec.chunks_total = manifest.chunk_count();
        self.rec.manifest = manifest;
        // A file rebuilt from the old keying's delta is no part of this one.
        if let Some(p) = &self.rec.partial_path {
            let _ = std::fs::remove_file(rebuild::rebuilt_path(p));
        }
        // The new key is durable before a chunk under it is taken.
        self.node.store.put_secret(&self.rec.id, &secret)?;
        self.rec.secret = Some(secret);
        self.rec.chunks_done = 0;
        self.intake.reset(self.rec.chunks_total);
        self.running = Some(Sha256::new());
        self.node.store.clear_chunks(&self.rec.id)?;
        self.open_partial(true)?;
        self.progress.emit(ProgressEvent::Reshaped {
            size: self.rec.manifest.size,
            chunk_size: self.rec.manifest.chunk_size,
            total: self.rec.chunks_total,
        });
        let (manifest, total) = (self.rec.manifest.clone(), self.rec.chunks_total);
        self.node.store.update_transfer(&self.rec.id, |r| {
            r.manifest = manifest.clone();
            r.chunks_total = total;
            r.chunks_done = 0;
        })?;
        self.node.touch();
        Ok(())
    }

    /// Take one chunk. Only a local write failure (a full disk, say) is an
    /// error; anything wrong with the chunk itself is counted and dropped.
    async fn on_chunk(&mut self, at: ChunkNonce, body: Vec<u8>) -> Result<()> {
        let index = at.index;
        let (Some(cipher), Some(file)) = (self.cipher.clone(), self.file.clone()) else {
            return Ok(());
        };
        let extends_hash = match self.intake.arrive(index) {
            Arrival::OutOfRange => {
                self.count(Fault::Corrupt, |s| &s.corrupt);
                return Ok(());
            }
            Arrival::Duplicate => {
                // A copy is a sign that our acknowledgement did not arrive,
                // but only one the peer sealed: anyone on the channel can
                // write a chunk frame under a known index, and a forged
                // one must not move our answers off a good link.
                let genuine = tokio::task::spawn_blocking(move || {
                    let mut body = body;
                    cipher.open_in_place(at, &mut body).is_ok()
                })
                .await
                .unwrap_or(false);
                if genuine {
                    self.intake.duplicate_opened(Instant::now());
                    self.count(Fault::Duplicate, |s| &s.duplicate);
                    self.node.answer_lost(&self.peer);
                } else {
                    self.count(Fault::Corrupt, |s| &s.corrupt);
                }
                return Ok(());
            }
            Arrival::New { extends_hash } => extends_hash,
        };
        let len = self.rec.manifest.chunk_len(index);
        let offset = self.rec.manifest.offset(index);
        // While chunks come in order, hash the whole file as they land, so
        // the final check need not read it all again. A chunk that does
        // not open (a forgery, say) leaves the running hash as it was.
        let mut running = if extends_hash {
            self.running.take()
        } else {
            None
        };
        let opened = tokio::task::spawn_blocking(move || {
            let taken = ChunkBody::open_owned(&cipher, at, body, len).and_then(|(data, hash)| {
                file.write_all_at(&data, offset).map_err(|e| {
                    CoreError::io(format!("writing chunk {index} (is the disk full?)"), e)
                })?;
                if let Some(hasher) = running.as_mut() {
                    hasher.update(&data);
                }
                Ok(hash)
            });
            (taken, running)
        })
        .await;
        let hash = match opened {
            Ok((taken, hasher)) => {
                if extends_hash || taken.is_ok() {
                    // Extended by a chunk that opened, untouched by one
                    // that did not; a gap that opened ends it.
                    self.running = hasher;
                }
                match taken {
                    Ok(h) => h,
                    Err(e @ CoreError::Io { .. }) => return Err(e),
                    Err(e) => {
                        tracing::debug!("dropping chunk {index}: {e}");
                        self.count(Fault::Corrupt, |s| &s.corrupt);
                        return Ok(());
                    }
                }
            }
            Err(_) => return Ok(()),
        };
        // Only a chunk that opened under the key proves the sender is
        // there: forged ones keep nothing alive.
        let hashed = extends_hash && self.running.is_some();
        self.node.heard();
        // A new chunk: the sender moved on after our acknowledgements.
        self.node.answers_arrive(&self.peer);
        if self
            .intake
            .stored(index, hashed, Instant::now(), self.rto.get())
        {
            self.count(Fault::Reordered, |s| &s.reordered);
        }
        let _ = self.node.store.put_chunk_hash(&self.rec.id, index, &hash);
        self.progress.emit(ProgressEvent::Received {
            index,
            link: self.arrived_on,
        });
        self.node.touch();
        Ok(())
    }

    /// This side cannot store what it received: stop, keeping every chunk
    /// already acknowledged, and tell the sender why.
    fn cannot_write(&mut self, e: CoreError) -> Outcome {
        let reason = format!("{e}; free space and run the same command again to resume");
        if self.cfg.initiator {
            // The transfer's failure says it, once.
            self.node.send_control(
                &self.peer,
                &Control::Cancel {
                    transfer: self.rec.id,
                },
            );
            Outcome::Failed(reason)
        } else {
            self.node.log(
                LogLevel::Error,
                format!("{}: {reason}", self.rec.remote_path),
            );
            self.node.send_control(
                &self.peer,
                &Control::Refuse {
                    transfer: self.rec.id,
                    code: RefuseCode::Internal,
                    reason: format!("the agent could not write: {reason}"),
                },
            );
            Outcome::Stopped
        }
    }

    fn count(
        &mut self,
        fault: Fault,
        stat: impl Fn(&crate::link::LinkStats) -> &std::sync::atomic::AtomicU64,
    ) {
        fault.count(&mut self.rec.faults);
        self.progress.emit(ProgressEvent::Fault(fault));
        self.node.record_fault(self.arrived_on, |s| {
            stat(s).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
    }

    /// Wait for the acknowledgement in flight, if any, and say it settled.
    async fn settle_ack(&mut self) -> Result<()> {
        if let Some(job) = self.ack_job.take() {
            let done = job.await;
            self.intake.ack_settled();
            done.map_err(|e| CoreError::Transfer(e.to_string()))??;
        }
        Ok(())
    }

    /// The acknowledgement timer: send one if it is due and the last has
    /// settled (one at a time, beside the receiving).
    async fn ack_timer(&mut self, now: Instant) -> Result<()> {
        if self.ack_job.as_ref().is_some_and(|j| j.is_finished()) {
            self.settle_ack().await?;
        }
        match self.intake.ack_timer(now) {
            // Progress, all of it in order: it may ride with what goes the
            // same way. A gap (chunks held beyond one missing: the sender
            // finds its losses from it) or the last chunk goes at once.
            Some(plan) => {
                let in_order = plan
                    .have
                    .first_clear()
                    .is_some_and(|f| plan.have.count() == f);
                self.acknowledge(plan, in_order)
            }
            None => Ok(()),
        }
    }

    /// Make the chunks of `plan` durable, then say so. Runs beside the
    /// receiving: the acknowledgement names only chunks written before the
    /// sync began.
    /// `ride`: an acknowledgement of progress, which may wait for the next
    /// message going to the peer (at most two message intervals); one that
    /// answers (a Finish, an offer, a gap) goes at once.
    fn acknowledge(&mut self, plan: AckPlan, ride: bool) -> Result<()> {
        self.rec.chunks_done = plan.have.count();
        if self.rec.status == TransferStatus::Pending {
            self.rec.status = TransferStatus::InProgress;
        }
        let rec = self.rec.clone();
        let epoch = rec.manifest.epoch(rec.live_secret()?)?;
        let file = self.file.clone().filter(|_| plan.sync);
        let node = self.node.clone();
        let peer = self.peer.clone();
        let have = plan.have;
        self.ack_job = Some(crate::task::spawn(async move {
            if let Some(file) = file {
                tokio::task::spawn_blocking(move || file.sync_data())
                    .await
                    .map_err(|e| CoreError::Transfer(e.to_string()))?
                    .ctx(|| "syncing the partial file (is the disk full?)".to_string())?;
            }
            node.store.put_bitmap(&rec.id, &have)?;
            store_progress(&node.store, &rec)?;
            node.store.flush_async().await?;
            let ack = Control::Ack {
                transfer: rec.id,
                epoch,
                have: AckState::from_bitmap(&have),
            };
            if ride {
                node.send_riding(&peer, &ack);
            } else {
                node.send_control(&peer, &ack);
            }
            Ok(())
        }));
        Ok(())
    }

    async fn sync_and_persist(&mut self) -> Result<()> {
        self.settle_ack().await?;
        if self.intake.synced() {
            if let Some(file) = self.file.clone() {
                tokio::task::spawn_blocking(move || file.sync_data())
                    .await
                    .map_err(|e| CoreError::Transfer(e.to_string()))?
                    .ctx(|| "syncing the partial file (is the disk full?)".to_string())?;
            }
        }
        self.rec.chunks_done = self.intake.have().count();
        if self.rec.status == TransferStatus::Pending {
            self.rec.status = TransferStatus::InProgress;
        }
        self.node
            .store
            .put_bitmap(&self.rec.id, self.intake.have())?;
        store_progress(&self.node.store, &self.rec)?;
        self.node.store.flush_async().await?;
        Ok(())
    }

    /// The peer lost the right to this upload: drop what it sent, tell it.
    fn revoked(&mut self, reason: String) -> Outcome {
        self.node.refuse(
            &self.peer,
            self.rec.id,
            crate::protocol::RefuseCode::Permission,
            reason.clone(),
        );
        self.discard();
        Outcome::Failed(reason)
    }

    fn discard(&mut self) {
        if let Some(p) = &self.rec.partial_path {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_file(rebuild::rebuilt_path(p));
        }
        let _ = self.node.store.clear_chunks(&self.rec.id);
        self.intake.forget();
    }
}

/// A receiver's progress onto the stored record: the chunks it holds and
/// that it runs, nothing else (the queue may have moved the transfer).
fn store_progress(store: &crate::store::Store, rec: &TransferRecord) -> Result<()> {
    let done = rec.chunks_done;
    store.update_transfer(&rec.id, |r| {
        r.chunks_done = done;
        if r.status == TransferStatus::Pending {
            r.status = TransferStatus::InProgress;
        }
    })?;
    Ok(())
}
