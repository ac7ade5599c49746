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
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::sender::{hash_file, Outcome};
use super::{lock, Node, Peer, Progress, Rto, TaskInput};
use crate::bitmap::Bitmap;
use crate::crypto::{ChunkCipher, ChunkNonce};
use crate::error::{CoreError, IoContext, Result};
use crate::protocol::{AckState, ChunkBody, Control, RefuseCode};
use crate::store::TransferRecord;
use crate::view::{ChunkState, LogLevel, TransferStatus};

/// The longest a downloading receiver stays quiet before asking the
/// sender again (one small message a minute at worst).
const REFETCH_MAX: Duration = Duration::from_secs(60);

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
}

pub(crate) struct Receiver {
    node: Arc<Node>,
    peer: Arc<Peer>,
    rec: TransferRecord,
    cfg: ReceiverConfig,
    cipher: Option<Arc<ChunkCipher>>,
    file: Option<Arc<std::fs::File>>,
    have: Bitmap,
    highest: Option<u32>,
    ack_due: Option<Instant>,
    ack_delay: Duration,
    unsynced: bool,
    progress: Arc<Mutex<Progress>>,
    rto: Rto,
    fetch_at: Option<Instant>,
    last_heard: Instant,
    /// The verified file was already renamed into place by a run that
    /// died before recording it.
    renamed: bool,
    /// SHA-256 of the chunks received in order from the first, and the
    /// next index it needs; dropped at the first gap.
    running: Option<(Sha256, u32)>,
    /// The acknowledgement being made durable and sent.
    ack_job: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Receiver {
    pub fn new(
        node: Arc<Node>,
        peer: Arc<Peer>,
        mut rec: TransferRecord,
        cfg: ReceiverConfig,
        progress: Arc<Mutex<Progress>>,
    ) -> Result<Receiver> {
        if rec.secret.is_none() {
            rec.secret = node.store.secret(&rec.id)?;
        }
        let have = node
            .store
            .bitmap(&rec.id)?
            .filter(|b| b.len() == rec.chunks_total)
            .unwrap_or_else(|| Bitmap::new(rec.chunks_total));
        let rto = Rto::for_link(&node.links[0]);
        let ack_delay = match node.links[0].capabilities().messages_per_minute {
            Some(m) => {
                Duration::from_secs_f64(30.0 / f64::from(m.max(1))).min(Duration::from_millis(500))
            }
            None => Duration::from_millis(20),
        };
        let mut r = Receiver {
            node,
            peer,
            cfg,
            cipher: None,
            file: None,
            have,
            highest: None,
            ack_due: None,
            ack_delay,
            unsynced: false,
            progress,
            rto,
            fetch_at: None,
            last_heard: Instant::now(),
            renamed: false,
            running: None,
            ack_job: None,
            rec,
        };
        if !r.cfg.initiator {
            r.open_partial(false)?;
        }
        if r.have.count() == 0 {
            r.running = Some((Sha256::new(), 0));
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
        if !reset && !path.exists() && self.have.is_complete() && self.target_exists() {
            self.renamed = true;
            return Ok(());
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
        if self.cfg.initiator {
            self.send_fetch();
        }
        loop {
            let now = Instant::now();
            if now.duration_since(self.last_heard) > self.cfg.silence_limit {
                return super::silent_peer(
                    &self.node,
                    self.cfg.silence_limit,
                    self.cfg.fail_on_silence,
                );
            }
            if self.fetch_at.is_some_and(|t| t <= now) {
                self.send_fetch();
            }
            if self.ack_due.is_some_and(|t| t <= now) {
                if let Err(e) = self.acknowledge().await {
                    return Outcome::Failed(e.to_string());
                }
            }
            let wake = [self.fetch_at, self.ack_due]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + Duration::from_secs(1));
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
            }
        }
    }

    /// How long a downloading receiver waits, while chunks flow, before it
    /// asks again. Four round trips, but never more than [`REFETCH_MAX`]:
    /// after the last chunk it waits for the sender's Finish, and a sender
    /// that restarted in between says nothing until asked (the simulator,
    /// seed 745: four timeouts of a lossy 10-a-minute channel were 226 s
    /// of silence after the agent came back).
    fn refetch_after(&self) -> Duration {
        (self.rto.get() * 4).min(REFETCH_MAX)
    }

    fn send_fetch(&mut self) {
        let sent = self.node.send_control(
            &self.peer,
            &Control::Fetch {
                transfer: self.rec.id,
                path: self.rec.remote_path.clone(),
            },
        );
        let wait = if sent {
            (self.rto.get() * 2).min(REFETCH_MAX)
        } else {
            Duration::from_millis(200)
        };
        self.fetch_at = Some(Instant::now() + wait);
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
            TaskInput::Chunk { at, body } => {
                match self.on_chunk(at, body).await {
                    Ok(authentic) => {
                        // Only a chunk that opened under the key proves the
                        // sender is there: forged ones keep nothing alive.
                        if authentic {
                            self.last_heard = Instant::now();
                            if self.cfg.initiator {
                                // Chunks are flowing: no need to ask again soon.
                                self.fetch_at = Some(Instant::now() + self.refetch_after());
                            }
                        }
                        Ok(None)
                    }
                    Err(e) => Ok(Some(self.cannot_write(e))),
                }
            }
            TaskInput::Control(c) => {
                self.last_heard = Instant::now();
                self.on_control(c).await
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
                    let had = self.have.count();
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
                if self.have.count() > 0 {
                    lock(&self.progress).resumed = true;
                }
                self.fetch_at = self
                    .cfg
                    .initiator
                    .then(|| Instant::now() + self.refetch_after());
                self.sync_and_persist().await?;
                self.node.send_control(
                    &self.peer,
                    &Control::Accept {
                        transfer: self.rec.id,
                        epoch: self.rec.manifest.epoch(self.rec.live_secret()?)?,
                        have: AckState::from_bitmap(&self.have),
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
        }
        self.rec.chunks_total = manifest.chunk_count();
        self.rec.manifest = manifest;
        // The new key is durable before a chunk under it is taken.
        self.node.store.put_secret(&self.rec.id, &secret)?;
        self.rec.secret = Some(secret);
        self.rec.chunks_done = 0;
        self.have = Bitmap::new(self.rec.chunks_total);
        self.highest = None;
        self.running = Some((Sha256::new(), 0));
        self.node.store.clear_chunks(&self.rec.id)?;
        self.open_partial(true)?;
        lock(&self.progress).reshape(
            self.rec.manifest.size,
            self.rec.manifest.chunk_size,
            self.rec.chunks_total,
        );
        self.node.store.put_transfer(&self.rec)?;
        self.node.touch();
        Ok(())
    }

    /// Take one chunk. Only a local write failure (a full disk, say) is an
    /// error; anything wrong with the chunk itself is counted and dropped.
    async fn on_chunk(&mut self, at: ChunkNonce, body: Vec<u8>) -> Result<bool> {
        let index = at.index;
        let (Some(cipher), Some(file)) = (self.cipher.clone(), self.file.clone()) else {
            return Ok(false);
        };
        if index >= self.rec.chunks_total {
            self.count(|f| f.corrupt += 1, |s| &s.corrupt);
            return Ok(false);
        }
        if self.have.get(index) {
            self.count(|f| f.duplicate += 1, |s| &s.duplicate);
            self.schedule_ack();
            return Ok(false);
        }
        let len = self.rec.manifest.chunk_len(index);
        let offset = self.rec.manifest.offset(index);
        // While chunks come in order, hash the whole file as they land, so
        // the final check need not read it all again.
        let mut running = self.running.take().filter(|(_, next)| *next == index);
        let opened = tokio::task::spawn_blocking(move || -> Result<_> {
            let (data, hash) = ChunkBody::open_owned(&cipher, at, body, len)?;
            file.write_all_at(&data, offset).map_err(|e| {
                CoreError::io(format!("writing chunk {index} (is the disk full?)"), e)
            })?;
            if let Some((hasher, next)) = running.as_mut() {
                hasher.update(&data);
                *next += 1;
            }
            Ok((hash, running))
        })
        .await;
        let hash = match opened {
            Ok(Ok((h, running))) => {
                self.running = running;
                h
            }
            Ok(Err(e @ CoreError::Io { .. })) => return Err(e),
            Ok(Err(e)) => {
                tracing::debug!("dropping chunk {index}: {e}");
                self.count(|f| f.corrupt += 1, |s| &s.corrupt);
                return Ok(false);
            }
            Err(_) => return Ok(false),
        };
        if self.highest.is_some_and(|h| index < h) {
            self.count(|f| f.reordered += 1, |s| &s.reordered);
        }
        self.highest = Some(self.highest.map_or(index, |h| h.max(index)));
        self.have.set(index);
        self.unsynced = true;
        let _ = self.node.store.put_chunk_hash(&self.rec.id, index, &hash);
        {
            let mut p = lock(&self.progress);
            p.set(index, ChunkState::Acked);
            p.this_run.set(index);
        }
        self.node.touch();
        self.schedule_ack();
        Ok(true)
    }

    /// This side cannot store what it received: stop, keeping every chunk
    /// already acknowledged, and tell the sender why.
    fn cannot_write(&mut self, e: CoreError) -> Outcome {
        let reason = format!("{e}; free space and run the same command again to resume");
        self.node.log(
            LogLevel::Error,
            format!("{}: {reason}", self.rec.remote_path),
        );
        if self.cfg.initiator {
            self.node.send_control(
                &self.peer,
                &Control::Cancel {
                    transfer: self.rec.id,
                },
            );
            Outcome::Failed(reason)
        } else {
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
        f: impl Fn(&mut crate::view::FaultCounters),
        stat: impl Fn(&crate::link::LinkStats) -> &std::sync::atomic::AtomicU64,
    ) {
        f(&mut self.rec.faults);
        f(&mut lock(&self.progress).faults);
        self.node.record_fault(0, |s| {
            stat(s).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
    }

    fn schedule_ack(&mut self) {
        if self.ack_due.is_none() {
            self.ack_due = Some(Instant::now() + self.ack_delay);
        }
    }

    /// Make every held chunk durable, then say so.
    /// Make every held chunk durable, then say so. Runs beside the
    /// receiving: the acknowledgement names only chunks written before the
    /// sync began, and one sync at a time is in flight.
    async fn acknowledge(&mut self) -> Result<()> {
        if self.ack_job.as_ref().is_some_and(|j| !j.is_finished()) {
            self.ack_due = Some(Instant::now() + self.ack_delay);
            return Ok(());
        }
        if let Some(job) = self.ack_job.take() {
            job.await
                .map_err(|e| CoreError::Transfer(e.to_string()))??;
        }
        self.ack_due = None;
        self.rec.chunks_done = self.have.count();
        if self.rec.status == TransferStatus::Pending {
            self.rec.status = TransferStatus::InProgress;
        }
        let have = self.have.clone();
        let rec = self.rec.clone();
        let epoch = rec.manifest.epoch(rec.live_secret()?)?;
        let file = self.file.clone().filter(|_| self.unsynced);
        self.unsynced = false;
        let node = self.node.clone();
        let peer = self.peer.clone();
        self.ack_job = Some(crate::task::spawn(async move {
            if let Some(file) = file {
                tokio::task::spawn_blocking(move || file.sync_data())
                    .await
                    .map_err(|e| CoreError::Transfer(e.to_string()))?
                    .ctx(|| "syncing the partial file (is the disk full?)".to_string())?;
            }
            node.store.put_bitmap(&rec.id, &have)?;
            node.store.put_transfer(&rec)?;
            node.store.flush_async().await?;
            node.send_control(
                &peer,
                &Control::Ack {
                    transfer: rec.id,
                    epoch,
                    have: AckState::from_bitmap(&have),
                },
            );
            Ok(())
        }));
        Ok(())
    }

    async fn sync_and_persist(&mut self) -> Result<()> {
        if let Some(job) = self.ack_job.take() {
            job.await
                .map_err(|e| CoreError::Transfer(e.to_string()))??;
        }
        if self.unsynced {
            if let Some(file) = self.file.clone() {
                tokio::task::spawn_blocking(move || file.sync_data())
                    .await
                    .map_err(|e| CoreError::Transfer(e.to_string()))?
                    .ctx(|| "syncing the partial file (is the disk full?)".to_string())?;
            }
            self.unsynced = false;
        }
        self.rec.chunks_done = self.have.count();
        if self.rec.status == TransferStatus::Pending {
            self.rec.status = TransferStatus::InProgress;
        }
        self.node.store.put_bitmap(&self.rec.id, &self.have)?;
        self.node.store.put_transfer(&self.rec)?;
        self.node.store.flush_async().await?;
        Ok(())
    }

    async fn on_finish(&mut self, sha256: [u8; 32]) -> Result<Option<Outcome>> {
        if self.renamed {
            return self.check_renamed(sha256).await;
        }
        if self.file.is_none() {
            return Ok(None);
        }
        if !self.have.is_complete() {
            self.acknowledge().await?;
            return Ok(None);
        }
        self.sync_and_persist().await?;
        let actual = match self.running.take() {
            Some((hasher, next)) if next == self.rec.chunks_total => hasher.finalize().into(),
            _ => {
                let partial = self.partial_path();
                let size = self.rec.manifest.size;
                tokio::task::spawn_blocking(move || hash_file(&partial, size))
                    .await
                    .map_err(|e| CoreError::Transfer(e.to_string()))??
            }
        };
        if actual != sha256 {
            let reason = format!(
                "received {} but the sender says {}",
                &hex::encode(actual)[..16],
                &hex::encode(sha256)[..16]
            );
            self.node.send_control(
                &self.peer,
                &Control::Mismatch {
                    transfer: self.rec.id,
                    reason: reason.clone(),
                },
            );
            self.discard();
            return Ok(Some(Outcome::Failed(format!(
                "whole-file SHA-256 mismatch ({reason}); nothing was kept"
            ))));
        }
        if self.target_exists() && !self.rec.overwrite {
            return Ok(Some(self.refuse_exists()));
        }
        let partial = self.partial_path();
        let target = self.rec.local_path.clone();
        let file = self.file.clone();
        let root = self.cfg.root.clone();
        let remote = self.rec.remote_path.clone();
        let overwrite = self.rec.overwrite;
        let placed = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt;
            // Never executable, whatever it is; readable as the user's
            // umask says (pigeon's own is private).
            let mode = std::fs::Permissions::from_mode(crate::home::public_file_mode());
            match &file {
                Some(f) => f.set_permissions(mode)?,
                None => std::fs::set_permissions(&partial, mode)?,
            }
            match root {
                Some(root) => {
                    let remote = crate::policy::RemotePath::parse_file(&remote)
                        .map_err(std::io::Error::other)?;
                    root.place(&partial, &remote, overwrite)
                }
                None => {
                    std::fs::rename(&partial, &target)?;
                    match target.parent() {
                        Some(dir) => crate::home::sync_dir(dir),
                        None => Ok(()),
                    }
                }
            }
        })
        .await
        .map_err(|e| CoreError::Transfer(e.to_string()))?;
        match placed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Ok(Some(self.refuse_exists()))
            }
            Err(e) => {
                return Err(CoreError::io(
                    format!("putting {} in place", self.rec.local_path.display()),
                    e,
                ))
            }
        }
        self.done(sha256).await.map(Some)
    }

    /// The target exists and may not be replaced: say so and stop.
    fn refuse_exists(&mut self) -> Outcome {
        let reason = format!("{} already exists", self.rec.remote_path);
        self.node.send_control(
            &self.peer,
            &Control::Refuse {
                transfer: self.rec.id,
                code: RefuseCode::Exists,
                reason: reason.clone(),
            },
        );
        Outcome::Failed(reason)
    }

    /// Whether the destination exists (through the root, on an agent).
    fn target_exists(&self) -> bool {
        match &self.cfg.root {
            Some(root) => crate::policy::RemotePath::parse_file(&self.rec.remote_path)
                .ok()
                .and_then(|p| root.kind(&p))
                .is_some(),
            None => self.rec.local_path.exists(),
        }
    }

    /// Record the verified file as completed, durably, and only then
    /// confirm it to the sender: a sender told "done" always finds the
    /// completion recorded here, even if this process dies the next moment.
    async fn done(&mut self, sha256: [u8; 32]) -> Result<Outcome> {
        let outcome = Outcome::Completed(sha256);
        super::sender::finish_record(&mut self.rec, &outcome);
        self.node.store.put_transfer(&self.rec)?;
        if self.cfg.audit {
            self.node.store.audit(crate::store::AuditRecord {
                seq: 0,
                prev: [0; 32],
                time_unix: 0,
                peer: self.rec.peer.clone(),
                action: "upload".into(),
                path: self.rec.remote_path.clone(),
                outcome: "completed".into(),
                sha256: Some(super::sha_hex(&sha256)),
                transport: self.rec.transport.clone(),
            })?;
        }
        self.node.store.flush_async().await?;
        self.node.send_control(
            &self.peer,
            &Control::Done {
                transfer: self.rec.id,
                sha256,
                faults: self.rec.faults,
            },
        );
        Ok(outcome)
    }

    /// Finish a transfer whose file is already in place: complete only if
    /// it is the file the sender means.
    async fn check_renamed(&mut self, sha256: [u8; 32]) -> Result<Option<Outcome>> {
        let target = self.rec.local_path.clone();
        let size = self.rec.manifest.size;
        let root = self.cfg.root.clone();
        let remote = self.rec.remote_path.clone();
        let actual = tokio::task::spawn_blocking(move || match root {
            Some(root) => {
                let p = crate::policy::RemotePath::parse_file(&remote)?;
                let f = root
                    .open_file(&p)
                    .map_err(|e| CoreError::io(format!("checking {remote}"), e))?;
                super::sender::hash_open_file(&f, size)
            }
            None => hash_file(&target, size),
        })
        .await
        .map_err(|e| CoreError::Transfer(e.to_string()))??;
        if actual != sha256 {
            let reason = format!("{} changed after it was received", self.rec.remote_path);
            self.node.send_control(
                &self.peer,
                &Control::Mismatch {
                    transfer: self.rec.id,
                    reason: reason.clone(),
                },
            );
            return Ok(Some(Outcome::Failed(reason)));
        }
        self.done(sha256).await.map(Some)
    }

    fn discard(&mut self) {
        if let Some(p) = &self.rec.partial_path {
            let _ = std::fs::remove_file(p);
        }
        let _ = self.node.store.clear_chunks(&self.rec.id);
        self.have = Bitmap::new(self.rec.chunks_total);
    }
}
