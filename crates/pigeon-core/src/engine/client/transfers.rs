//! New uploads and downloads, and the tasks that run them.

use super::*;

impl Core {
    /// An upload of `path` to `remote` that has not completed and was not
    /// cancelled: running it again resumes it.
    fn unfinished_upload(&self, path: &Path, remote: &str) -> Option<TransferRecord> {
        lock(&self.records)
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
            .cloned()
    }

    /// Where an upload of `local` to `remote` goes, if it should first ask
    /// the agent what it holds there (one exchange): a replacement
    /// (`--overwrite`, deltas on) of a file of some size, new (not one to
    /// resume), to a path this client kept no version of.
    pub(super) fn asks_base(
        &self,
        local: &Path,
        remote: &str,
        options: &UploadOptions,
    ) -> Option<String> {
        if !options.overwrite || options.no_delta {
            return None;
        }
        let path = local.canonicalize().ok()?;
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() || meta.len() < ASK_BASE_FROM {
            return None;
        }
        let remote = upload_remote(&path, remote).ok()?;
        let resumes = self.unfinished_upload(&path, &remote).is_some();
        let kept = self
            .node
            .store
            .sent_version(self.peer.name.as_str(), &remote)
            .is_some();
        (!resumes && !kept).then_some(remote)
    }

    pub(super) fn new_upload(
        &mut self,
        local: &Path,
        remote: &str,
        options: &UploadOptions,
    ) -> Result<TransferId> {
        self.new_upload_from(local, remote, options, None)
    }

    /// [`new_upload`](Self::new_upload), with what the agent said it holds
    /// at the path (`asked`), for a delta when this client kept no version
    /// of its own there.
    pub(super) fn new_upload_from(
        &mut self,
        local: &Path,
        remote: &str,
        options: &UploadOptions,
        asked: Option<crate::store::SentVersion>,
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
        let remote = upload_remote(&path, remote)?;
        let stamp = SourceStamp::of(&meta);
        if let Some(old) = self.unfinished_upload(&path, &remote) {
            if self.running.contains(&old.id) {
                return Ok(old.id);
            }
            if old.source == Some(stamp) && old.no_compress == options.no_compress {
                if let Some(t) = options.expires_after_secs {
                    self.node.store.put_expiry_term(&old.id, t)?;
                }
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
            self.node.store.forget_transfer_files(&old.id);
            self.node.log(
                LogLevel::Warn,
                format!(
                    "{} changed since the interrupted upload; restarting it under a new key",
                    path.display()
                ),
            );
        }
        let chunk_size = crate::engine::shape::chunk_size_for(self.node.links_to(&self.peer));
        let id = TransferId::random();
        let mut manifest = Manifest {
            name,
            size: meta.len(),
            chunk_size,
            mime: detect_mime(&path),
            modified_unix: (stamp.modified_nanos / 1_000_000_000) as u64,
            mode: {
                use std::os::unix::fs::PermissionsExt;
                meta.permissions().mode() & 0o777
            },
            delta: None,
        };
        if options.overwrite && !options.no_delta {
            if let Some(sent) = self.delta_of(&id, &path, &remote, meta.len(), asked) {
                manifest.size = sent.len;
                manifest.delta = Some(sent.of);
            }
        }
        let rec = TransferRecord {
            source: Some(stamp),
            priority: self.next_priority(),
            no_compress: options.no_compress,
            overwrite: options.overwrite,
            ..TransferRecord::begin(NewTransfer {
                id,
                direction: Direction::Upload,
                role: Role::Sender,
                peer: self.peer.name.as_str(),
                local_path: path,
                remote_path: remote,
                manifest,
                secret: Some(TransferSecret::random()),
                transport: self.node.transports_label(),
            })
        };
        if let Some(t) = options.expires_after_secs {
            self.node.store.put_expiry_term(&rec.id, t)?;
        }
        self.add(rec)
    }

    /// The delta of the file at `path` against the version of `remote`
    /// the agent holds, if this client sent it one and a delta pays; it is
    /// written, synced and kept for transfer `id`.
    fn delta_of(
        &self,
        id: &TransferId,
        path: &Path,
        remote: &str,
        len: u64,
        asked: Option<crate::store::SentVersion>,
    ) -> Option<crate::engine::deltas::Made> {
        let peer = self.peer.name.as_str();
        let base = self.node.store.sent_version(peer, remote).or(asked)?;
        let store = &self.node.store;
        match crate::engine::deltas::blocking(|| delta::prepare_upload(store, id, path, len, &base))
        {
            Ok(Some(sent)) => {
                self.node.log(
                    LogLevel::Info,
                    format!(
                        "{}: the agent holds a version sent before; sending the differences ({} of {})",
                        path.display(),
                        crate::view::human_bytes(sent.len),
                        crate::view::human_bytes(len)
                    ),
                );
                Some(sent)
            }
            Ok(None) => None,
            Err(e) => {
                self.node.log(
                    LogLevel::Warn,
                    format!("{}: no delta ({e}); sending the whole file", path.display()),
                );
                None
            }
        }
    }

    pub(super) fn new_download(
        &mut self,
        remote: &str,
        local: &Path,
        options: &DownloadOptions,
    ) -> Result<TransferId> {
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
        if local.is_dir() {
            return Err(CoreError::Transfer(format!(
                "cannot download into {}: a folder of that name is in the way",
                local.display()
            )));
        }
        if local.exists() && !options.overwrite {
            return Err(CoreError::Transfer(format!(
                "{} already exists; pass --overwrite to replace it, or choose another name with -o",
                local.display()
            )));
        }
        let id = TransferId::random();
        if options.overwrite && !options.no_delta && local.is_file() {
            if let Some(base) = self.download_base(&local, &remote) {
                self.node.store.put_fetch_base(&id, &base)?;
            }
        }
        let rec = TransferRecord {
            // Short whatever the file's name (a name of 250 bytes must
            // still leave room), and hidden beside it until verified.
            partial_path: Some(parent.join(format!(".pigeon-{}.partial", id.short()))),
            priority: self.next_priority(),
            overwrite: true,
            // Nothing is known of the file until the agent offers it.
            chunks_total: 0,
            ..TransferRecord::begin(NewTransfer {
                id,
                direction: Direction::Download,
                role: Role::Receiver,
                peer: self.peer.name.as_str(),
                local_path: local,
                remote_path: remote,
                // Known once the agent offers the file.
                manifest: Manifest {
                    name,
                    size: 0,
                    chunk_size: 0,
                    mime: String::new(),
                    modified_unix: 0,
                    mode: 0o644,
                    delta: None,
                },
                secret: Some(TransferSecret::random()),
                transport: self.node.transports_label(),
            })
        };
        self.add(rec)
    }

    pub(super) fn next_priority(&self) -> i64 {
        lock(&self.records)
            .values()
            .map(|r| r.priority)
            .max()
            .map_or(0, |p| p + 1)
    }

    pub(super) fn add(&mut self, rec: TransferRecord) -> Result<TransferId> {
        if let Some(secret) = &rec.secret {
            self.node.store.put_secret(&rec.id, secret)?;
        }
        self.node.store.put_transfer(&rec)?;
        // Durable before its first chunk leaves: a kill in the next instant
        // must find it to resume, not start over.
        self.node.store.flush()?;
        let id = rec.id;
        let name = rec.remote_path.clone();
        let progress = Progress::new(&rec, None, self.node.transports_label());
        lock(&self.node.progress).insert(id, ProgressSink::new(progress));
        lock(&self.records).insert(id, rec);
        self.eligible.insert(id);
        let _ = self.node.events.send(Event::Queued { id, name });
        self.node.touch();
        Ok(id)
    }

    pub(super) fn schedule(&mut self, done: &mpsc::Sender<Done>) {
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

    pub(super) fn spawn(&mut self, mut rec: TransferRecord, done: mpsc::Sender<Done>) {
        rec.status = TransferStatus::InProgress;
        let id = rec.id;
        self.update(&id, |r| r.status = TransferStatus::InProgress);
        let progress = lock(&self.node.progress)
            .get(&id)
            .cloned()
            .unwrap_or_else(|| {
                ProgressSink::new(Progress::new(&rec, None, self.node.transports_label()))
            });
        progress.emit(ProgressEvent::RunStarted);
        let node = self.node.clone();
        let peer = self.peer.clone();
        let limit = self.silence_limit;
        let resumed = rec.chunks_done > 0;
        let inbox = node.register_task(id, &peer);
        if let Some(reason) = self.hooks.refusal() {
            if let Some(tx) = node.task_input(&id) {
                let _ = tx.try_send(TaskInput::Control(Box::new(Control::Refuse {
                    transfer: id,
                    code: RefuseCode::Permission,
                    reason,
                })));
            }
        }
        self.running.insert(id);
        let _ = node.events.send(Event::Started {
            id,
            name: rec.remote_path.clone(),
            resumed,
        });
        let asked = self.asked.clone();
        crate::task::spawn(async move {
            let fallback = rec.clone();
            let result = match rec.role {
                Role::Sender => {
                    let cfg = SenderConfig {
                        silence_limit: limit,
                        fail_on_silence: true,
                        restarted: false,
                        root: None,
                        rate: None,
                    };
                    let delta_gone =
                        rec.manifest.delta.is_some() && !node.store.delta_path(&rec.id).exists();
                    match Sender::new(node.clone(), peer, rec, cfg, progress) {
                        Ok(s) => s.run(inbox).await,
                        // Its delta was lost (a crash as it was made, a
                        // tidy-up): the whole file goes instead.
                        Err(_) if delta_gone => (
                            fallback,
                            Outcome::WholeFile("its delta was lost on this side".into()),
                        ),
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
                        quarantine: None,
                        authority: None,
                        asked: Some(asked),
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

    pub(super) fn finished(&mut self, mut rec: TransferRecord, outcome: Outcome) {
        let id = rec.id;
        self.running.remove(&id);
        let outcome = match outcome {
            Outcome::WholeFile(why) => match self.send_whole(&rec, &why) {
                Ok(()) => return,
                Err(e) => Outcome::Failed(format!("{why}; and the whole file cannot go: {e}")),
            },
            Outcome::Completed(sha) if rec.direction == Direction::Upload => {
                // The agent verified this content at this path: the base of
                // the next delta there.
                let file_sha = rec.manifest.delta.map_or(sha, |d| d.sha256);
                let store = &self.node.store;
                match store.keep_sent_version(&id, &file_sha) {
                    Ok(true) => {}
                    // The agent holds a version no signature here describes:
                    // a delta against the one kept before would be refused.
                    Ok(false) => store.forget_sent_version(&rec.peer, &rec.remote_path),
                    Err(e) => {
                        tracing::warn!("not keeping the version sent of {}: {e}", rec.remote_path);
                        store.forget_sent_version(&rec.peer, &rec.remote_path);
                    }
                }
                if crate::engine::deltas::is_program(&rec.local_path)
                    && rec.manifest.file_size() <= crate::delta::binary::MAX_LEN
                {
                    let kept = crate::engine::deltas::blocking(|| {
                        store.keep_sent_copy(
                            &rec.peer,
                            &rec.remote_path,
                            &rec.local_path,
                            &file_sha,
                        )
                    });
                    if let Err(e) = kept {
                        tracing::warn!("not keeping a copy of {}: {e}", rec.remote_path);
                    }
                }
                outcome
            }
            other => other,
        };
        if outcome == Outcome::Stopped || outcome == Outcome::Paused {
            self.eligible.remove(&id);
        }
        rec = store_outcome(&self.node.store, &rec, &outcome, |r| {
            if outcome == Outcome::Stopped {
                r.status = TransferStatus::Pending;
            }
        });
        let _ = self.node.store.flush();
        crate::engine::forget_key_if_ended(&self.node, &mut rec);
        let progress = lock(&self.node.progress).get(&id).cloned();
        let report = progress.as_ref().map(|p| {
            p.emit(ProgressEvent::Ended {
                status: rec.status,
                error: rec.error.clone(),
            });
            report_of(&rec, &p.read())
        });
        lock(&self.records).insert(id, rec.clone());
        if outcome == Outcome::Cancelled {
            self.remove_partial_download(&id);
        }
        let name = rec.remote_path.clone();
        let event = match &outcome {
            Outcome::Completed(_) => Some(Event::Completed { id, name }),
            Outcome::Failed(e) | Outcome::WholeFile(e) => Some(Event::Failed {
                id,
                name,
                error: e.clone(),
            }),
            Outcome::Cancelled => Some(Event::Cancelled { id, name }),
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

/// Uploads of files smaller than this do not first ask the agent for a
/// base: a round trip costs more than they could save.
const ASK_BASE_FROM: u64 = 64 * 1024;

/// The remote path an upload of `path` (canonical) to `remote` goes to: its
/// file name when `remote` is empty.
fn upload_remote(path: &Path, remote: &str) -> Result<String> {
    let remote = match remote {
        "" => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        r => r.to_string(),
    };
    Ok(RemotePath::parse_file(&remote)?.to_string())
}
