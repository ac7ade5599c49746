//! Downloads the agent serves: a fetch's checks, the transfer it starts or
//! resumes (re-keyed when the file changed), and a delta against what the
//! client holds, when its fetch says (issue 31).

use super::*;
use crate::protocol::FetchBase;

impl AgentHooks {
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
                let chunk_size = crate::engine::shape::chunk_size_for(node.links_to(&peer));
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

/// The largest file a download's delta is made of (while the router
/// waits: about a second here); a larger one goes whole.
const INLINE_DELTA_MAX: u64 = 512 * 1024 * 1024;
