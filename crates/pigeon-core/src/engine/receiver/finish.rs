//! The end of a received transfer: the whole file's hash checked against
//! the sender's, the file put in place (through the agent's root, never
//! executable), the completion made durable before the sender is told.

use super::*;

impl Receiver {
    pub(super) async fn on_finish(&mut self, sha256: [u8; 32]) -> Result<Option<Outcome>> {
        if self.renamed {
            return self.check_renamed(sha256).await;
        }
        if let (true, Some(delta)) = (self.rebuilt, self.rec.manifest.delta) {
            return match self.check_rebuilt(delta).await? {
                Ok(staged) => self.put_in_place(sha256, staged).await,
                Err(why) => Ok(self.not_rebuilt(why)),
            };
        }
        if self.file.is_none() {
            return Ok(None);
        }
        let running = match self.intake.finish() {
            FinishStep::AckFirst => {
                self.settle_ack().await?;
                let plan = self.intake.ack_now();
                self.acknowledge(plan, false)?;
                return Ok(None);
            }
            FinishStep::Verify { running } => running,
        };
        self.sync_and_persist().await?;
        let actual = match self.running.take() {
            Some(hasher) if running => hasher.finalize().into(),
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
        let staged = match self.rec.manifest.delta {
            Some(delta) => match self.rebuild(delta).await? {
                Ok(staged) => staged,
                Err(why) => return Ok(self.not_rebuilt(why)),
            },
            None => self.partial_path(),
        };
        self.put_in_place(sha256, staged).await
    }

    /// A delta did not rebuild the file its sender announced: say so (the
    /// sender sends the whole file instead), keep nothing.
    fn not_rebuilt(&mut self, why: String) -> Option<Outcome> {
        self.node.send_control(
            &self.peer,
            &Control::Mismatch {
                transfer: self.rec.id,
                reason: why.clone(),
            },
        );
        self.discard();
        if self.cfg.initiator && self.base.is_some() {
            // A download: the local copy changed under it. Ask again for
            // the whole file (the agent answers a fetch without a base
            // with a new key and the whole file).
            self.node.log(
                LogLevel::Warn,
                format!(
                    "{}: {why}; downloading the whole file",
                    self.rec.local_path.display()
                ),
            );
            self.base = None;
            self.node.store.forget_fetch_base(&self.rec.id);
            self.send_fetch();
            return None;
        }
        Some(Outcome::Failed(format!(
            "{}: {why}; nothing was kept",
            self.rec.remote_path
        )))
    }

    /// The verified file, at `staged`, goes in place (through the agent's
    /// checks: its rights now, the target, the quarantine); then the
    /// completion is recorded and the sender told. `sha256`: what the
    /// sender's Finish named.
    async fn put_in_place(&mut self, sha256: [u8; 32], staged: PathBuf) -> Result<Option<Outcome>> {
        let file_sha = self.rec.manifest.delta.map_or(sha256, |d| d.sha256);
        if let Some(authority) = &self.cfg.authority {
            if let Err(reason) = authority(&self.rec) {
                return Ok(Some(self.revoked(reason)));
            }
        }
        if self.target_exists() && !self.rec.overwrite {
            return Ok(Some(self.refuse_exists()));
        }
        if let Some(held) = self.hold_if_suspicious(file_sha, &staged).await? {
            return Ok(Some(held));
        }
        let partial = staged;
        let target = self.rec.local_path.clone();
        let file = self.file.clone();
        let root = self.cfg.root.clone();
        let remote = self.rec.remote_path.clone();
        let overwrite = self.rec.overwrite;
        let placed = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            // Never executable, whatever it is; readable as the user's
            // umask says (pigeon's own is private).
            match &file {
                Some(f) => crate::files::set_public_mode(f, &partial)?,
                None => crate::files::set_public_mode_at(&partial)?,
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

    /// Judge the verified file by the quarantine's rules; a suspicious one
    /// is moved into the quarantine (never placed, never executable), the
    /// sender told why, the refusal audited.
    async fn hold_if_suspicious(
        &mut self,
        sha256: [u8; 32],
        staged: &std::path::Path,
    ) -> Result<Option<Outcome>> {
        let (Some(rules), Some(root)) = (self.cfg.quarantine.clone(), self.cfg.root.clone()) else {
            return Ok(None);
        };
        let partial = staged.to_path_buf();
        let name = crate::policy::RemotePath::parse_file(&self.rec.remote_path)
            .ok()
            .and_then(|p| p.file_name().map(String::from))
            .unwrap_or_default();
        let declared = self.rec.manifest.mime.clone();
        let may_exec = crate::engine::lock(&self.peer.permissions).exec;
        let judging = partial.clone();
        let verdict = tokio::task::spawn_blocking(move || {
            crate::policy::quarantine::inspect(
                &rules,
                &crate::policy::quarantine::Upload {
                    file: &judging,
                    name: &name,
                    declared_mime: &declared,
                    may_exec,
                },
            )
        })
        .await
        .map_err(|e| CoreError::Transfer(e.to_string()))?;
        let Some(why) = verdict else {
            return Ok(None);
        };
        let reason = format!("{}: {why}", crate::policy::quarantine::HELD);
        // Recorded as held before the file moves: a crash in between
        // leaves a failed upload and a staging file for cleanup, never a
        // running one whose partial vanished.
        self.rec.sha256 = Some(sha256);
        self.rec.status = crate::view::TransferStatus::Failed;
        self.rec.error = Some(reason.clone());
        self.node.store.update_transfer(&self.rec.id, |r| {
            r.sha256 = Some(sha256);
            r.status = crate::view::TransferStatus::Failed;
            r.error = Some(reason.clone());
        })?;
        self.node.store.flush_async().await?;
        let held = crate::engine::agent::policy::Held {
            id: self.rec.id.to_string(),
            peer: self.rec.peer.clone(),
            path: self.rec.remote_path.clone(),
            size: self.rec.manifest.file_size(),
            sha256: hex::encode(sha256),
            reason: why,
            held_unix: crate::store::now_unix(),
            missing: false,
        };
        tokio::task::spawn_blocking(move || held.hold(root.path(), &partial))
            .await
            .map_err(|e| CoreError::Transfer(e.to_string()))??;
        self.file = None;
        self.node.log(
            LogLevel::Warn,
            format!(
                "{} uploaded {}: {reason}",
                self.rec.peer, self.rec.remote_path
            ),
        );
        self.node.send_control(
            &self.peer,
            &Control::Refuse {
                transfer: self.rec.id,
                code: RefuseCode::Quarantined,
                reason: reason.clone(),
            },
        );
        Ok(Some(Outcome::Failed(reason)))
    }

    /// The target exists and may not be replaced: say so and stop.
    pub(super) fn refuse_exists(&mut self) -> Outcome {
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
    pub(super) fn target_exists(&self) -> bool {
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
    pub(super) async fn done(&mut self, sha256: [u8; 32]) -> Result<Outcome> {
        let outcome = Outcome::Completed(sha256);
        crate::engine::sender::finish_record(&mut self.rec, &outcome);
        self.keep_expiry()?;
        let done = self.rec.chunks_done;
        self.node.store.update_transfer(&self.rec.id, |r| {
            crate::engine::sender::finish_record(r, &outcome);
            r.chunks_done = done;
        })?;
        if self.cfg.audit {
            self.node.store.audit(crate::store::AuditRecord {
                sha256: Some(crate::engine::sha_hex(
                    &self.rec.manifest.delta.map_or(sha256, |d| d.sha256),
                )),
                size: Some(self.rec.manifest.file_size()),
                key_id: Some(self.peer.key.id().to_string()),
                transport: self.rec.transport.clone(),
                ..crate::store::AuditRecord::new(
                    &self.rec.peer,
                    "upload",
                    &self.rec.remote_path,
                    "completed",
                )
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

    /// On an agent: the placed file goes when its upload asked
    /// (`--expires`); a file placed without an expiry ends the expiry of
    /// the one it replaced.
    fn keep_expiry(&self) -> Result<()> {
        let Some(root) = &self.cfg.root else {
            return Ok(());
        };
        self.remember_hash(root);
        let path = &self.rec.remote_path;
        match self.node.store.expiry_term(&self.rec.id) {
            Some(when) => {
                let placed = crate::policy::RemotePath::parse_file(path)
                    .ok()
                    .and_then(|p| root.open_file(&p).ok())
                    .and_then(|f| f.metadata().ok());
                match placed {
                    Some(meta) => {
                        self.node
                            .store
                            .put_expiry(path, when, crate::store::SourceStamp::of(&meta))
                    }
                    None => Ok(()),
                }
            }
            None => self.node.store.delete_expiry(path),
        }
    }

    /// On an agent: remember the placed file's hash by its stamp, so that a
    /// listing, or the next delta against it, need not read it again.
    fn remember_hash(&self, root: &crate::policy::StorageRoot) {
        let Some(sha) = self
            .rec
            .manifest
            .delta
            .map(|d| d.sha256)
            .or(self.rec.sha256)
        else {
            return;
        };
        let placed = crate::policy::RemotePath::parse_file(&self.rec.remote_path)
            .ok()
            .and_then(|p| root.open_file(&p).ok())
            .and_then(|f| f.metadata().ok());
        if let Some(meta) = placed {
            let stamp = crate::store::SourceStamp::of(&meta);
            let _ = self
                .node
                .store
                .put_file_hash(&self.rec.local_path, stamp, sha);
        }
    }

    /// Finish a transfer whose file is already in place: complete only if
    /// it is the file the sender means.
    pub(super) async fn check_renamed(&mut self, sha256: [u8; 32]) -> Result<Option<Outcome>> {
        let target = self.rec.local_path.clone();
        let (size, expected) = match self.rec.manifest.delta {
            Some(d) => (d.size, d.sha256),
            None => (self.rec.manifest.size, sha256),
        };
        let root = self.cfg.root.clone();
        let remote = self.rec.remote_path.clone();
        let actual = tokio::task::spawn_blocking(move || match root {
            Some(root) => {
                let p = crate::policy::RemotePath::parse_file(&remote)?;
                let f = root
                    .open_file(&p)
                    .map_err(|e| CoreError::io(format!("checking {remote}"), e))?;
                crate::files::hash_open_file(&f, size)
            }
            None => hash_file(&target, size),
        })
        .await
        .map_err(|e| CoreError::Transfer(e.to_string()))??;
        if actual != expected {
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
}
