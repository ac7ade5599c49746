//! The requests a peer makes: uploads (offers), downloads (fetches) and listings.

use super::*;
use crate::protocol::FetchBase;

impl AgentHooks {
    pub(super) async fn on_offer(&self, node: &Arc<Node>, peer: Arc<Peer>, offer: Control) {
        let Control::Offer {
            transfer,
            manifest,
            secret,
            path,
            overwrite,
            expires_after_secs,
            ..
        } = offer.clone()
        else {
            return;
        };
        let req = Req {
            transfer,
            action: "upload",
            path: &path,
            size: Some(manifest.file_size()),
        };
        let refuse = |code, reason: String| self.refuse(node, &peer, req, code, reason);
        let stored = node.store.transfer(&transfer).ok().flatten();
        let superseded = stored
            .as_ref()
            .filter(|r| superseded_delta(r, peer.name.as_str(), &manifest))
            .filter(|_| !node.has_task(&transfer))
            .cloned();
        if let Some(old) = &superseded {
            // What is left of it goes: its chunks are not the whole file's.
            if let Some(p) = &old.partial_path {
                let _ = std::fs::remove_file(p);
                let mut rebuilt = p.as_os_str().to_owned();
                rebuilt.push(".rebuilt");
                let _ = std::fs::remove_file(std::path::PathBuf::from(rebuilt));
            }
            let _ = node.store.clear_chunks(&transfer);
        }
        if let Some(rec) = stored.filter(|_| superseded.is_none()) {
            // A completed transfer's key is gone: the same peer offering the
            // same manifest in its authenticated session is enough to say Done.
            let same_key =
                rec.status == TransferStatus::Completed || rec.secret.as_ref() == Some(&secret);
            if rec.peer != peer.name.as_str() || rec.manifest != manifest || !same_key {
                return refuse(RefuseCode::Internal, "transfer id already in use".into());
            }
            // Held in quarantine: said again (its refusal was lost), not
            // received and held again.
            if let Some(reason) = policy::held_refusal(&rec) {
                let again = Control::Refuse {
                    transfer,
                    code: RefuseCode::Quarantined,
                    reason,
                };
                node.send_control(&peer, &again);
                return;
            }
            match rec.status {
                TransferStatus::Completed => {
                    // Offered again after it was done here: our Done did
                    // not arrive (or the peer restarted before it did).
                    node.answer_lost(&peer);
                    if let Some(sha256) = rec.sha256 {
                        node.send_control(
                            &peer,
                            &Control::Done {
                                transfer,
                                sha256,
                                faults: rec.faults,
                            },
                        );
                    }
                }
                TransferStatus::Cancelled | TransferStatus::Failed => {
                    // Offered again after it failed here: start it over.
                    if let Some(p) = &rec.partial_path {
                        let _ = std::fs::remove_file(p);
                    }
                    let _ = node.store.delete_transfer(&transfer);
                }
                _ => {
                    // Offered again (a new session, a resume): with the
                    // peer's rights as they are now, not as they were.
                    if let Err(refusal) = self.recheck(node, &rec) {
                        return self.refuse_stopped(node, &rec, refusal);
                    }
                    let input = TaskInput::Control(Box::new(offer));
                    spawn_receiver(node.clone(), peer, rec, Some(input), self);
                    return;
                }
            }
            if rec.status == TransferStatus::Completed {
                return;
            }
        }
        if let Err(reason) = manifest.check() {
            return refuse(RefuseCode::TooLarge, reason);
        }
        let Target {
            remote,
            shown,
            path: target,
            share,
        } = match self.authorize_file(node, &peer, Request::Upload { path: &path }) {
            Ok(t) => t,
            Err(r) => return refuse(r.code, r.reason),
        };
        let existing = self.root.kind(&remote);
        if existing == Some(EntryKind::Folder) {
            return refuse(
                RefuseCode::Exists,
                format!("{shown} is a folder on the agent; to upload into it, end the name with a slash (--to {shown}/)"),
            );
        }
        if manifest.delta.is_some() && !overwrite {
            return refuse(
                RefuseCode::BadPath,
                format!("a delta replaces {shown}: it needs --overwrite"),
            );
        }
        if let Some(delta) = manifest.delta {
            // The base is only ever the file at the path this peer may
            // write (its own folder, or a share it may write and so read):
            // another peer's file, or one held in quarantine, is never at
            // such a path, so a refusal says nothing of them.
            let held = match existing {
                Some(EntryKind::File) => match self.known_sha(node, &remote, &target) {
                    Known::Sha(sha) => Some(sha),
                    Known::Missing => None,
                    Known::Unhashed(file, len) => {
                        // Hashed on a worker, never on the router's time;
                        // the sender offers again and finds it known.
                        self.hash_later(node, &remote, &target, file, len);
                        return;
                    }
                },
                _ => None,
            };
            match held {
                Some(sha) if sha == delta.sha256 => {
                    // The agent holds the new version already (a run whose
                    // Done was lost). A remembered hash goes by a stamp a
                    // same-size rewrite may keep: read the file again
                    // (on a worker) before saying so.
                    let (node, root, remote) = (node.clone(), self.root.clone(), remote.clone());
                    crate::task::spawn(async move {
                        let fresh = tokio::task::spawn_blocking(move || {
                            let file = root.open_file(&remote).ok()?;
                            let len = file.metadata().ok()?.len();
                            crate::engine::sender::hash_open_file(&file, len).ok()
                        })
                        .await
                        .ok()
                        .flatten();
                        let answer = match fresh {
                            Some(sha) if sha == delta.sha256 => Control::Present {
                                transfer,
                                sha256: sha,
                            },
                            _ => Control::Refuse {
                                transfer,
                                code: RefuseCode::BaseChanged,
                                reason: "the file changed on the agent since it was sent".into(),
                            },
                        };
                        node.send_control(&peer, &answer);
                    });
                    return;
                }
                Some(sha) if sha == delta.base_sha256 => {}
                Some(_) => {
                    return refuse(
                        RefuseCode::BaseChanged,
                        format!("{shown} changed on the agent since it was sent"),
                    )
                }
                None => {
                    return refuse(
                        RefuseCode::BaseChanged,
                        format!("{shown} is not on the agent any more"),
                    )
                }
            }
        }
        if existing.is_some() && !overwrite {
            // The same size: perhaps the same file, sent again after an
            // interruption. Its hash (on a worker, not the router's time)
            // lets the sender tell; anything else is a plain refusal.
            if let Some(file) = self
                .root
                .open_file(&remote)
                .ok()
                .filter(|f| f.metadata().is_ok_and(|m| m.len() == manifest.size))
            {
                let node = node.clone();
                crate::task::spawn(async move {
                    let size = manifest.size;
                    let hashed = tokio::task::spawn_blocking(move || {
                        crate::engine::sender::hash_open_file(&file, size)
                    })
                    .await;
                    if let Ok(Ok(sha256)) = hashed {
                        node.send_control(&peer, &Control::Present { transfer, sha256 });
                    }
                });
                return;
            }
            return refuse(
                RefuseCode::Exists,
                format!(
                    "{shown} already exists on the agent; {}",
                    crate::engine::REPLACE_HINT
                ),
            );
        }
        let all = match node.store.transfers() {
            Ok(all) => all,
            Err(e) => return refuse(RefuseCode::Internal, e.to_string()),
        };
        // Quotas, counting this peer's open uploads whole, and again for
        // every peer together; but not what this upload replaces (an open
        // upload of the same path, and with overwrite the file there now).
        let replaced = |t: &&TransferRecord| {
            t.role == Role::Receiver
                && t.remote_path == remote.to_string()
                && ((t.peer == peer.name.as_str() && !t.status.is_finished())
                    || (overwrite && t.status == TransferStatus::Completed))
        };
        let counted: Vec<TransferRecord> = all.iter().filter(|t| !replaced(t)).cloned().collect();
        let held = policy::held(self.root.path());
        let used = policy::usage(&counted, &held, now_unix());
        let mine = used.get(peer.name.as_str()).copied().unwrap_or_default();
        let mut everyone = crate::policy::Usage::default();
        used.values().for_each(|u| everyone.add(u));
        let limits = policy::effective(lock(&self.limits).get(peer.name.as_str()), &self.settings);
        if let Err(reason) = crate::policy::limits::check(
            peer.name.as_str(),
            manifest.file_size(),
            (&mine, &limits),
            (&everyone, &self.settings.total),
        ) {
            return refuse(RefuseCode::Quota, reason);
        }
        let open: Vec<TransferRecord> = all
            .into_iter()
            .filter(|t| {
                t.role == Role::Receiver && t.peer == peer.name.as_str() && !t.status.is_finished()
            })
            .collect();
        let (same_path, others): (Vec<_>, Vec<_>) = open
            .into_iter()
            .partition(|t| t.remote_path == remote.to_string());
        if let Err(reason) = within_open_limits(&others, &manifest, self.root.free_bytes()) {
            return refuse(RefuseCode::TooLarge, reason);
        }
        // Every check has passed: only now are its folders made (a peer
        // refused above leaves nothing under the root, not even empty
        // folders), and before an older upload of the path is dropped for it.
        if let Err(e) = self.root.prepare_parent(&remote) {
            return refuse(RefuseCode::BadPath, e.to_string());
        }
        // An interrupted upload of the same path by the same peer is
        // superseded by this one (its source changed): drop its partial.
        {
            for old in same_path {
                // A newer offer for the same path replaces it: a running
                // task discards its own partial (and tells its sender).
                if node.deliver(&old.id, TaskInput::Cancel).await {
                    continue;
                }
                if let Some(p) = &old.partial_path {
                    let _ = std::fs::remove_file(p);
                }
                let _ = node.store.delete_transfer(&old.id);
            }
        }
        let expires_unix = expires_after_secs.map(|s| now_unix().saturating_add(s));
        let rec = TransferRecord {
            partial_path: Some(self.root.staging_dir().join(format!("{transfer}.part"))),
            status: TransferStatus::InProgress,
            overwrite,
            ..TransferRecord::begin(NewTransfer {
                id: transfer,
                direction: Direction::Upload,
                role: Role::Receiver,
                peer: peer.name.as_str(),
                local_path: target,
                remote_path: remote.to_string(),
                manifest,
                secret: Some(secret),
                transport: node.transports_label(),
            })
        };
        let stored = rec
            .live_secret()
            .and_then(|secret| node.store.put_secret(&rec.id, secret))
            .and_then(|()| match expires_unix {
                Some(t) => node.store.put_expiry_term(&rec.id, t),
                None => Ok(()),
            })
            .and_then(|()| node.store.put_transfer(&rec));
        if let Err(e) = stored {
            return refuse(RefuseCode::Internal, e.to_string());
        }
        audit(
            node,
            peer.name.as_str(),
            "upload",
            &rec.remote_path,
            &accepted(share.as_ref(), expires_unix),
            Some(rec.manifest.file_size()),
        );
        node.log(
            LogLevel::Info,
            match rec.manifest.delta {
                Some(d) => format!(
                    "{} uploads {} ({} bytes, as a delta of {} bytes)",
                    peer.name, rec.remote_path, d.size, rec.manifest.size
                ),
                None => format!(
                    "{} uploads {} ({} bytes)",
                    peer.name, rec.remote_path, rec.manifest.size
                ),
            },
        );
        spawn_receiver(
            node.clone(),
            peer,
            rec,
            Some(TaskInput::Control(Box::new(offer))),
            self,
        );
    }

    /// A download whose client holds `base`: make `manifest` (the whole
    /// file's, from `source`) a delta against it, written and synced as
    /// transfer `id`'s delta before anything is recorded or sealed. Left
    /// whole when the base does not read or a delta would not pay.
    async fn as_delta(
        &self,
        node: &Arc<Node>,
        id: &TransferId,
        source: &std::fs::File,
        manifest: &mut Manifest,
        base: Option<&FetchBase>,
    ) {
        let Some(base) = base.filter(|b| b.signature.len() <= FetchBase::MAX_SIGNATURE) else {
            return;
        };
        let Ok(sig) = crate::delta::Signature::decode(&base.signature) else {
            return;
        };
        // Made while the router waits: only files it takes a moment to
        // diff, and only a signature shaped as a client makes one (a
        // larger block makes every false match cost more).
        if manifest.size > INLINE_DELTA_MAX || !crate::engine::deltas::travels_as_made(&sig) {
            return;
        }
        let Ok(file) = source.try_clone() else {
            return;
        };
        let (store, id) = (node.clone(), *id);
        let (len, base_sha) = (manifest.size, base.sha256);
        let made = tokio::task::spawn_blocking(move || {
            crate::engine::deltas::write_delta(&store.store, &id, &file, len, &sig, base_sha)
        })
        .await;
        match made {
            Ok(Ok(Some(made))) => {
                manifest.size = made.len;
                manifest.delta = Some(made.of);
            }
            Ok(Ok(None)) | Err(_) => {}
            Ok(Err(e)) => tracing::warn!("no delta for {}: {e}", manifest.name),
        }
    }

    /// What this agent holds at `path` for `peer`, as the base of a delta
    /// upload: only a file the peer may replace there (the path it may
    /// upload to, in its own view: its folder, or a share it may write and
    /// so read); anything else, or a refusal, is answered "none" (the
    /// upload itself then says why, if it is refused).
    pub(super) async fn on_base_ask(
        &self,
        node: &Arc<Node>,
        peer: &Arc<Peer>,
        request: u64,
        path: String,
    ) {
        // A signature says much of a file: only for one the peer may both
        // replace and read.
        let may_read = self
            .authorize_file(node, peer, Request::Download { path: &path })
            .is_ok();
        let base = match self.authorize_file(node, peer, Request::Upload { path: &path }) {
            Ok(target) if may_read && self.root.kind(&target.remote) == Some(EntryKind::File) => {
                let opened = self.root.open_file(&target.remote).ok();
                let params = |len| crate::engine::deltas::travelling_params(node, peer, len);
                match opened.and_then(|f| f.metadata().ok().map(|m| (f, m.len()))) {
                    Some((file, len)) => {
                        let params = params(len);
                        tokio::task::spawn_blocking(move || {
                            crate::engine::deltas::hash_and_sign_with(&file, len, params).ok()
                        })
                        .await
                        .ok()
                        .flatten()
                        .map(|(sha256, signature)| FetchBase { sha256, signature })
                    }
                    None => None,
                }
            }
            _ => None,
        };
        node.send_control(peer, &Control::BaseIs { request, base });
    }

    /// What is remembered of the file at `remote` (on disk at `on_disk`):
    /// its SHA-256 while its stamp holds; else the file, to be hashed.
    fn known_sha(&self, node: &Node, remote: &RemotePath, on_disk: &std::path::Path) -> Known {
        let Some((file, meta)) = self
            .root
            .open_file(remote)
            .ok()
            .and_then(|f| f.metadata().ok().map(|m| (f, m)))
            .filter(|(_, m)| m.is_file())
        else {
            return Known::Missing;
        };
        let stamp = SourceStamp::of(&meta);
        let fresh = |known: Option<(SourceStamp, [u8; 32])>| {
            known.filter(|(at, _)| *at == stamp).map(|(_, sha)| sha)
        };
        match fresh(lock(&self.hashes).get(on_disk).copied())
            .or_else(|| fresh(node.store.file_hash(on_disk)))
        {
            Some(sha) => Known::Sha(sha),
            None => Known::Unhashed(file, meta.len()),
        }
    }

    /// Hash the file at `remote` on a worker, once at a time, and remember
    /// it by its stamp.
    fn hash_later(
        &self,
        node: &Arc<Node>,
        remote: &RemotePath,
        on_disk: &std::path::Path,
        file: std::fs::File,
        len: u64,
    ) {
        if !lock(&self.hashing).insert(on_disk.to_path_buf()) {
            return;
        }
        let (node, hashes, hashing) = (node.clone(), self.hashes.clone(), self.hashing.clone());
        let (on_disk, _remote) = (on_disk.to_path_buf(), remote.clone());
        crate::task::spawn(async move {
            let hashed = tokio::task::spawn_blocking(move || {
                let stamp = SourceStamp::of(&file.metadata().ok()?);
                let sha = crate::engine::sender::hash_open_file(&file, len).ok()?;
                Some((stamp, sha))
            })
            .await;
            if let Ok(Some((stamp, sha))) = hashed {
                let _ = node.store.put_file_hash(&on_disk, stamp, sha);
                lock(&hashes).insert(on_disk.clone(), (stamp, sha));
            }
            lock(&hashing).remove(&on_disk);
        });
    }

    pub(super) async fn on_fetch(
        &self,
        node: &Arc<Node>,
        peer: Arc<Peer>,
        transfer: TransferId,
        path: String,
        base: Option<FetchBase>,
    ) {
        let req = Req {
            transfer,
            action: "download",
            path: &path,
            size: None,
        };
        let refuse = |code, reason: String| self.refuse(node, &peer, req, code, reason);
        let Target {
            remote,
            shown,
            path: file,
            share,
        } = match self.authorize_file(node, &peer, Request::Download { path: &path }) {
            Ok(t) => t,
            Err(r) => return refuse(r.code, r.reason),
        };
        // Opened through the root's handle: what is sent is what was checked.
        let opened = self.root.open_file(&remote).and_then(|f| {
            let meta = f.metadata()?;
            Ok((f, meta))
        });
        let (source, meta) = match opened {
            Ok((f, m)) if m.is_file() => (f, m),
            Ok((_, m)) if m.is_dir() => {
                return refuse(
                    RefuseCode::BadPath,
                    format!("{shown} is a folder; to download everything in it, end the name with a slash ({shown}/)"),
                )
            }
            Ok(_) => return refuse(RefuseCode::NotFound, format!("{shown} is not a file")),
            Err(_) => return refuse(RefuseCode::NotFound, format!("{shown} does not exist")),
        };
        let stamp = SourceStamp::of(&meta);
        let existing = node.store.transfer(&transfer).ok().flatten();
        // The same file, asked from the same base (or none): a client that
        // drops its base (its copy changed under a delta) gets a new key
        // and the whole file.
        let same_base = |rec: &TransferRecord| {
            rec.manifest.delta.map(|d| d.base_sha256) == base.as_ref().map(|b| b.sha256)
                || (rec.manifest.delta.is_none() && base.is_some())
        };
        // (And its delta still here: one swept away is made again.)
        let existing_unchanged = existing.as_ref().is_some_and(|rec| {
            rec.source == Some(stamp)
                && rec.local_path == file
                && same_base(rec)
                && (rec.manifest.delta.is_none() || node.store.delta_path(&rec.id).exists())
        });
        let (rec, restarted) = match existing {
            Some(rec) if rec.peer != peer.name.as_str() || rec.role != Role::Sender => {
                return refuse(RefuseCode::Internal, "transfer id already in use".into())
            }
            Some(rec) if existing_unchanged => {
                // Asked again (its task had ended): our offer may have
                // vanished on the way, or the client restarted.
                node.answer_lost(&peer);
                (rec, false)
            }
            Some(mut rec) => {
                // Changed since the interrupted download: new key, new manifest.
                let _ = node.store.clear_chunks(&transfer);
                rec.manifest = manifest_for(&remote, &source, &meta, rec.manifest.chunk_size);
                self.as_delta(node, &transfer, &source, &mut rec.manifest, base.as_ref())
                    .await;
                rec.chunks_total = rec.manifest.chunk_count();
                rec.secret = Some(TransferSecret::random());
                rec.source = Some(stamp);
                rec.local_path = file.clone();
                rec.status = TransferStatus::InProgress;
                (rec, true)
            }
            None => {
                let chunk_size = crate::engine::client::chunk_size_for(node.links_to(&peer));
                let mut manifest = manifest_for(&remote, &source, &meta, chunk_size);
                self.as_delta(node, &transfer, &source, &mut manifest, base.as_ref())
                    .await;
                let rec = TransferRecord {
                    status: TransferStatus::InProgress,
                    source: Some(stamp),
                    ..TransferRecord::begin(NewTransfer {
                        id: transfer,
                        direction: Direction::Download,
                        role: Role::Sender,
                        peer: peer.name.as_str(),
                        local_path: file.clone(),
                        remote_path: remote.to_string(),
                        manifest,
                        secret: Some(TransferSecret::random()),
                        transport: node.transports_label(),
                    })
                };
                audit(
                    node,
                    peer.name.as_str(),
                    "download",
                    &rec.remote_path,
                    &accepted(share.as_ref(), None),
                    Some(rec.manifest.file_size()),
                );
                (rec, false)
            }
        };
        // An unchanged transfer asked for again is as stored: written back,
        // this copy could undo what its running task stored meanwhile.
        let stored = if existing_unchanged {
            Ok(())
        } else {
            rec.live_secret()
                .and_then(|secret| node.store.put_secret(&rec.id, secret))
                .and_then(|()| node.store.put_transfer(&rec))
        };
        if let Err(e) = stored {
            return refuse(RefuseCode::Internal, e.to_string());
        }
        // Durable before the offer leaves: a restart must offer the same key.
        if let Err(e) = node.store.flush_async().await {
            return refuse(RefuseCode::Internal, e.to_string());
        }
        if let Err(reason) = spawn_sender(node.clone(), peer.clone(), rec, restarted, self) {
            refuse(RefuseCode::Internal, reason);
        }
    }

    pub(super) async fn on_list(
        &self,
        node: &Arc<Node>,
        peer: Arc<Peer>,
        request: u64,
        dir: String,
        offset: u32,
    ) {
        let refuse = |reason: String| refuse_list(node, &peer, request, &dir, reason);
        let perms = *lock(&peer.permissions);
        let asked = Request::List { dir: &dir };
        let shares = self.shares_with(node, &peer);
        let found = match authorize(
            peer.name.as_str(),
            &perms,
            &self.root,
            &self.namespace(&peer, &shares),
            asked,
        ) {
            Ok(found) => found,
            Err(r) => return refuse(r.reason),
        };
        // Listing (and hashing) runs beside the router: a big folder must
        // not hold up every other peer's frames.
        let root = self.root.clone();
        let hashes = self.hashes.clone();
        let node = node.clone();
        let background = (self.hashing.clone(), self.hasher.clone());
        let layout = self.layout;
        crate::task::spawn(async move {
            let ns = Namespace {
                layout,
                peer: peer.name.as_str(),
                shares: &shares,
            };
            let entries = match found {
                Found::Virtual(children) => {
                    let shown = RemotePath::parse(&dir).unwrap_or_else(|_| RemotePath::root());
                    let lister = root.clone();
                    let listed = tokio::task::spawn_blocking(move || {
                        list_virtual(&lister, &shown, &children)
                    })
                    .await;
                    match listed {
                        Ok(entries) => entries,
                        Err(_) => return,
                    }
                }
                Found::At(target) => {
                    let cache: HashCache = lock(&hashes).clone();
                    let lister = root.clone();
                    let at = target.remote.clone();
                    // A peer's own folder is there before its first upload.
                    let own_root = layout == Layout::PerPeer
                        && target.share.is_none()
                        && target.shown.is_root();
                    let listed = tokio::task::spawn_blocking(move || {
                        if own_root && lister.kind(&at).is_none() {
                            return Ok(Listed::default());
                        }
                        list_dir(&lister, &at, cache)
                    })
                    .await;
                    let Listed {
                        mut entries,
                        fresh,
                        unhashed,
                    } = match listed {
                        Ok(Ok(x)) => x,
                        Ok(Err(reason)) => {
                            let reason = reason.replace(&target.remote.to_string(), &dir);
                            return refuse_list(&node, &peer, request, &dir, reason);
                        }
                        Err(_) => return,
                    };
                    for (path, (stamp, sha)) in &fresh {
                        let _ = node.store.put_file_hash(path, *stamp, *sha);
                    }
                    lock(&hashes).extend(fresh);
                    hash_in_background(&node, &root, &hashes, background, unhashed);
                    for e in &mut entries {
                        e.path = ns.view_of(&e.path, target.share.as_ref());
                    }
                    if own_root && shares.iter().any(|s| s.with == peer.name.as_str()) {
                        entries.insert(0, virtual_dir(SHARED_DIR.to_string()));
                    }
                    entries
                }
            };
            if offset == 0 {
                audit(&node, peer.name.as_str(), "list", &dir, "ok", None);
            }
            // Pages small enough to seal in one control frame.
            let mut page = vec![];
            let mut bytes = 0;
            let mut i = offset as usize;
            while i < entries.len() && bytes < 40_000 {
                bytes += entries[i].path.len() + 120;
                page.push(entries[i].clone());
                i += 1;
            }
            node.send_control(
                &peer,
                &Control::Listing {
                    request,
                    entries: page,
                    more: i < entries.len(),
                },
            );
        });
    }
}

impl AgentHooks {
    /// A peer asks its quota: its own line, and all peers' summed.
    pub(super) fn on_quota(&self, node: &Arc<Node>, peer: &Peer, request: u64) {
        let Ok(all) = node.store.transfers() else {
            return;
        };
        let own = lock(&self.limits).clone();
        let lines: Vec<crate::policy::QuotaLine> =
            policy::quota_lines(&all, &policy::held(self.root.path()), &self.settings, &own)
                .into_iter()
                .filter(|l| l.who == peer.name.as_str() || l.who == "all peers")
                .collect();
        node.send_control(peer, &Control::Quota { request, lines });
    }
}

/// Refuse a listing: audited, and the reason goes back to the peer.
pub(super) fn refuse_list(node: &Node, peer: &Peer, request: u64, dir: &str, reason: String) {
    audit(
        node,
        peer.name.as_str(),
        "list",
        dir,
        &format!("refused: {reason}"),
        None,
    );
    node.send_control(peer, &Control::ListRefused { request, reason });
}

/// Append one line to the audit log (a failure is logged, not fatal).
pub(super) fn audit(
    node: &Node,
    peer: &str,
    action: &str,
    path: &str,
    outcome: &str,
    size: Option<u64>,
) {
    // Who: the trusted peer's key, or the key an untrusted name carries.
    let key_id = match peer.strip_prefix("untrusted:") {
        Some(id) => Some(id.to_string()),
        None => node.peer(peer).map(|p| p.key.id().to_string()),
    };
    let rec = AuditRecord {
        transport: node.transports_label(),
        key_id,
        size,
        ..AuditRecord::new(peer, action, path, outcome)
    };
    if let Err(e) = node.store.audit(rec) {
        node.log(LogLevel::Error, format!("audit log write failed: {e}"));
    }
}

pub(super) fn manifest_for(
    remote: &RemotePath,
    file: &std::fs::File,
    meta: &std::fs::Metadata,
    chunk_size: u32,
) -> Manifest {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    let mut head = vec![0u8; 8192];
    let n = file.read_at(&mut head, 0).unwrap_or(0);
    head.truncate(n);
    Manifest {
        name: remote.file_name().unwrap_or_default().to_string(),
        size: meta.len(),
        chunk_size,
        mime: crate::engine::client::mime_of(&head),
        modified_unix: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
        mode: meta.permissions().mode() & 0o777,
        delta: None,
    }
}

/// Hash the big files a listing left unhashed, one at a time, each once,
/// so the next listing shows them.
fn hash_in_background(
    node: &Arc<Node>,
    root: &StorageRoot,
    hashes: &Arc<Mutex<HashCache>>,
    (hashing, hasher): (Arc<Mutex<HashSet<PathBuf>>>, Arc<tokio::sync::Semaphore>),
    unhashed: Vec<(RemotePath, PathBuf)>,
) {
    for (remote, on_disk) in unhashed {
        if !lock(&hashing).insert(on_disk.clone()) {
            continue;
        }
        let (node, root, hashes, hashing, hasher) = (
            node.clone(),
            root.clone(),
            hashes.clone(),
            hashing.clone(),
            hasher.clone(),
        );
        crate::task::spawn(async move {
            let Ok(_permit) = hasher.acquire_owned().await else {
                return;
            };
            let hashed = tokio::task::spawn_blocking(move || {
                let file = root.open_file(&remote).ok()?;
                let meta = file.metadata().ok()?;
                meta.is_file().then_some(())?;
                let sha = crate::engine::sender::hash_open_file(&file, meta.len()).ok()?;
                Some((SourceStamp::of(&meta), sha))
            })
            .await;
            if let Ok(Some((stamp, sha))) = hashed {
                let _ = node.store.put_file_hash(&on_disk, stamp, sha);
                lock(&hashes).insert(on_disk.clone(), (stamp, sha));
            }
            lock(&hashing).remove(&on_disk);
        });
    }
}

/// A folder of the view alone in a listing.
fn virtual_dir(path: String) -> RemoteEntry {
    RemoteEntry {
        path,
        size: 0,
        is_dir: true,
        sha256: None,
        modified_unix: 0,
    }
}

/// The entries of a folder of `shown`'s view alone: folders above what was
/// shared, and the shared files and folders themselves as they are.
fn list_virtual(root: &StorageRoot, shown: &RemotePath, children: &[Child]) -> Vec<RemoteEntry> {
    let mut entries = vec![];
    for child in children {
        let Ok(path) = shown.join(&child.name) else {
            continue;
        };
        let path = path.to_string();
        let Some(real) = &child.real else {
            entries.push(virtual_dir(path));
            continue;
        };
        // A shared file or folder that is gone since is not listed.
        let Ok(meta) = root.open_file(real).and_then(|f| f.metadata()) else {
            continue;
        };
        let modified_unix = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        entries.push(RemoteEntry {
            path,
            size: if meta.is_dir() { 0 } else { meta.len() },
            is_dir: meta.is_dir(),
            sha256: None,
            modified_unix,
        });
    }
    entries.sort_by(|a, b| (!a.is_dir, &a.path).cmp(&(!b.is_dir, &b.path)));
    entries
}

/// How an accepted request is audited: through whose share, until when.
fn accepted(share: Option<&Share>, expires_unix: Option<u64>) -> String {
    let mut out = "accepted".to_string();
    if let Some(s) = share {
        out.push_str(&format!(" (shared by {})", s.owner));
    }
    if let Some(t) = expires_unix {
        out.push_str(&format!(" (expires {})", crate::view::format_time(t)));
    }
    out
}

/// What [`list_dir`] found: the entries, the hashes it computed on the way
/// (for the cache), and the big files it left to hash in the background.
#[derive(Default)]
pub(super) struct Listed {
    entries: Vec<RemoteEntry>,
    fresh: HashCache,
    unhashed: Vec<(RemotePath, PathBuf)>,
}

/// Largest file a listing hashes when it has no cached hash.
pub(super) const LIST_HASH_LIMIT: u64 = 64 * 1024 * 1024;

/// List the entries of `remote` with sizes and (for files up to
/// [`LIST_HASH_LIMIT`], or cached) hashes, through the root's handle:
/// symlinks are not listed, and pigeon's own folder never is.
/// Returns the entries and the hashes computed on the way (for the cache).
pub(super) fn list_dir(
    root: &StorageRoot,
    remote: &RemotePath,
    cache: HashCache,
) -> std::result::Result<Listed, String> {
    let dir = match root.kind(remote) {
        Some(EntryKind::Folder) => root
            .open_dir(remote)
            .map_err(|e| format!("cannot read {remote}: {e}"))?,
        Some(EntryKind::File) => return Err(format!("{remote} is not a folder")),
        None => return Err(format!("{remote} does not exist")),
    };
    let mut entries = vec![];
    let mut fresh = HashCache::new();
    let mut unhashed = vec![];
    let read = dir
        .entries()
        .map_err(|e| format!("cannot read {remote}: {e}"))?;
    for entry in read.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if remote.is_root() && crate::policy::is_reserved(&name) {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            continue;
        }
        let rel = if remote.is_root() {
            name.clone()
        } else {
            format!("{remote}/{name}")
        };
        let on_disk = root.path().join(&rel);
        let (size, modified, sha256) = if kind.is_dir() {
            let modified = entry
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .map(|t| t.into_std());
            (0, modified, None)
        } else {
            let Ok(file) = entry.open() else {
                continue;
            };
            let file = file.into_std();
            let Ok(meta) = file.metadata() else {
                continue;
            };
            let stamp = SourceStamp::of(&meta);
            let sha256 = match cache.get(&on_disk) {
                Some((s, h)) if *s == stamp => Some(sha_hex(h)),
                // Big files are not hashed on a listing's time (its answer
                // waits for it) but in the background, for the next one.
                _ if meta.len() > LIST_HASH_LIMIT => {
                    if let Ok(path) = RemotePath::parse_file(&rel) {
                        unhashed.push((path, on_disk.clone()));
                    }
                    None
                }
                _ => crate::engine::sender::hash_open_file(&file, meta.len())
                    .ok()
                    .map(|h| {
                        fresh.insert(on_disk.clone(), (stamp, h));
                        sha_hex(&h)
                    }),
            };
            (meta.len(), meta.modified().ok(), sha256)
        };
        let modified_unix = modified
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        entries.push(RemoteEntry {
            path: rel,
            size,
            is_dir: kind.is_dir(),
            sha256,
            modified_unix,
        });
    }
    entries.sort_by(|a, b| (!a.is_dir, &a.path).cmp(&(!b.is_dir, &b.path)));
    Ok(Listed {
        entries,
        fresh,
        unhashed,
    })
}

/// A delta upload this agent could not rebuild from, offered again by the
/// same peer as the whole file under the same id (and a new key): the new
/// offer replaces what is left of it. Also one not recorded as failed (the
/// agent died between saying so and recording it): the sender moved on,
/// and only it can.
fn superseded_delta(rec: &TransferRecord, peer: &str, offered: &Manifest) -> bool {
    rec.peer == peer
        && rec.role == Role::Receiver
        && rec.manifest.delta.is_some()
        && offered.delta.is_none()
        && rec.status != TransferStatus::Completed
}

/// What the agent knows of a file's hash ([`AgentHooks::known_sha`]).
enum Known {
    Sha([u8; 32]),
    Unhashed(std::fs::File, u64),
    Missing,
}

/// The largest file a download's delta is made of (while the router
/// waits: about a second here); a larger one goes whole.
const INLINE_DELTA_MAX: u64 = 512 * 1024 * 1024;
