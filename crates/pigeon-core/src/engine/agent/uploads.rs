//! Uploads the agent takes: an offer's checks (rights, the target, quotas,
//! free space), a delta's base (issue 31: only the file at the path in the
//! peer's own view), and the answer to a client asking what it holds there.

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
                let _ = std::fs::remove_file(crate::engine::receiver::rebuilt_path(p));
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
                // Offered again after it was done here: our Done did not
                // arrive (or the peer restarted before it did).
                TransferStatus::Completed => say_done_again(node, &peer, &rec),
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
                    Known::Unhashed => {
                        // Hashed on a worker, never on the router's time
                        // (as a listing's big files are); the sender
                        // offers again and finds it known.
                        hash_in_background(
                            node,
                            &self.root,
                            &self.hashes,
                            (self.hashing.clone(), self.hasher.clone()),
                            vec![(remote.clone(), target.clone())],
                        );
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
                            crate::files::hash_open_file(&file, len).ok()
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
                        crate::files::hash_open_file(&file, size)
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
    /// its SHA-256 while its stamp holds.
    fn known_sha(&self, node: &Node, remote: &RemotePath, on_disk: &std::path::Path) -> Known {
        let Some(meta) = self
            .root
            .open_file(remote)
            .ok()
            .and_then(|f| f.metadata().ok())
            .filter(|m| m.is_file())
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
            None => Known::Unhashed,
        }
    }
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
    Unhashed,
    Missing,
}
