//! A client's deltas (issue 31): an upload to a path where the agent holds
//! a version this client sent sends only the differences.
//!
//! ```text
//! upload (whole file) ──hash job: SHA-256 + signature──> versions/<id>.pending
//!        Done(sha) ──> versions/<peer, path>.sig   (only that content)
//! upload again --overwrite ──diff against the .sig──> deltas/<id>.delta, synced,
//!        manifest.delta = {base sha, new size, new sha}   (before any seal)
//! agent: base not what it holds ──> BaseChanged ──> the same transfer, re-keyed,
//!        as the whole file (Outcome::WholeFile)
//! no .sig for the path ──BaseAsk──> the agent's coarse signature (BaseIs) ──> diff
//! ```
//!
//! A program (by its first bytes) also has a copy of what was sent kept
//! (`.copy`), and its delta is made against those bytes
//! ([`crate::delta::binary`]). Signatures are kept only where every link
//! is paced ([`crate::engine::shape::paced`]): on a local pipe the whole
//! file is faster than any delta.
//!
//! The delta is written and synced before the transfer's record, so it is
//! fixed before its first seal, and the nonce rule holds: a resumed run
//! seals chunks of the same bytes. A base is only ever what this client
//! sent to that peer at that path and the agent verified.

use super::*;
use crate::delta::Signature;
use crate::engine::deltas::{hash_and_sign, is_program, write_binary_delta, write_delta, Made};
use crate::store::SentVersion;

/// The delta of the file at `path` (`len` bytes) against `base`, the
/// version the agent holds, written to transfer `id`'s delta file and
/// synced; and the new version kept pending for the next delta. None
/// when a delta would not pay: nothing is left behind then.
pub(crate) fn prepare_upload(
    store: &Store,
    id: &TransferId,
    path: &Path,
    len: u64,
    base: &SentVersion,
) -> Result<Option<Made>> {
    let Ok(sig) = Signature::decode(&base.signature) else {
        return Ok(None);
    };
    let file = std::fs::File::open(path)
        .map_err(|e| CoreError::io(format!("reading {}", path.display()), e))?;
    // A program whose copy is kept: nearly-equal bytes found too.
    let binary = match store.sent_copy(&base.peer, &base.remote_path) {
        Some(old) if is_program(path) => {
            write_binary_delta(store, id, &old, &file, len, base.sha256)?
        }
        _ => None,
    };
    let made = match binary {
        Some(made) => made,
        None => match write_delta(store, id, &file, len, &sig, base.sha256)? {
            Some(made) => made,
            None => return Ok(None),
        },
    };
    // The version this sends, for the delta after it (a second read: the
    // file may have changed since the first, and then it is not kept).
    if let Ok((again, signature)) = hash_and_sign(&file, len) {
        if again == made.of.sha256 {
            store.put_pending_version(
                id,
                &SentVersion {
                    peer: base.peer.clone(),
                    remote_path: base.remote_path.clone(),
                    sha256: again,
                    size: len,
                    signature,
                },
            )?;
        }
    }
    Ok(Some(made))
}

impl Core {
    /// The version of the file at `local` a download may ask the
    /// differences from: its SHA-256 and a signature small enough to go in
    /// every fetch (at most half a message of the smallest link to the
    /// agent: each fetch repeats it). None when it cannot be read.
    pub(super) fn download_base(&self, local: &Path, remote: &str) -> Option<SentVersion> {
        let file = std::fs::File::open(local).ok()?;
        let len = file.metadata().ok()?.len();
        let params = crate::engine::deltas::travelling_params(&self.node, &self.peer, len);
        let (sha256, signature) = crate::engine::deltas::blocking(|| {
            crate::engine::deltas::hash_and_sign_with(&file, len, params)
        })
        .ok()?;
        Some(SentVersion {
            peer: self.peer.name.as_str().to_string(),
            remote_path: remote.to_string(),
            sha256,
            size: len,
            signature,
        })
    }

    /// A delta upload the agent could not rebuild from (`why`): the same
    /// transfer goes again as the whole file, under a new key (a fresh key
    /// for a new manifest: no nonce is ever used twice), and the version it
    /// was a delta against is forgotten. The user is told why.
    pub(super) fn send_whole(&mut self, rec: &TransferRecord, why: &str) -> Result<()> {
        let id = rec.id;
        let path = rec.local_path.clone();
        let meta = std::fs::metadata(&path)
            .map_err(|e| CoreError::io(format!("cannot upload {}", path.display()), e))?;
        let manifest = Manifest {
            size: meta.len(),
            modified_unix: meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs()),
            delta: None,
            ..rec.manifest.clone()
        };
        let total = manifest.chunk_count();
        let secret = TransferSecret::random();
        let store = &self.node.store;
        store.clear_chunks(&id)?;
        // The new key is durable before anything is sealed under it.
        store.put_secret(&id, &secret)?;
        let stamp = SourceStamp::of(&meta);
        // The whole file, from its first chunk.
        let whole = |r: &mut TransferRecord| {
            r.manifest = manifest.clone();
            r.chunks_total = total;
            r.chunks_done = 0;
            r.source = Some(stamp);
            r.status = TransferStatus::Pending;
            r.error = None;
        };
        store.update_transfer(&id, whole)?;
        store.flush()?;
        // Only now that the record names the whole file: a crash before
        // left a delta transfer that resumes as one.
        store.forget_sent_version(&rec.peer, &rec.remote_path);
        store.forget_transfer_files(&id);
        self.node.log(
            LogLevel::Warn,
            format!("{}: {why}; sending the whole file", path.display()),
        );
        if let Some(p) = lock(&self.node.progress).get(&id) {
            p.emit(ProgressEvent::Reshaped {
                size: manifest.size,
                chunk_size: manifest.chunk_size,
                total,
            });
        }
        self.update(&id, |r| {
            whole(r);
            r.secret = Some(secret.clone());
        });
        self.eligible.insert(id);
        self.node.touch();
        Ok(())
    }
}
