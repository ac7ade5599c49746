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
//! ```
//!
//! The delta is written and synced before the transfer's record, so it is
//! fixed before its first seal, and the nonce rule holds: a resumed run
//! seals chunks of the same bytes. A base is only ever what this client
//! sent to that peer at that path and the agent verified.

use std::io::{BufWriter, Read, Write};

use sha2::{Digest, Sha256};

use super::*;
use crate::delta::{Signature, SignatureParams, Travels};
use crate::protocol::DeltaOf;
use crate::store::SentVersion;

/// A delta is worth sending only if it is at most this share of the file
/// (its literal bytes compress like the file's own).
const WORTH_IT: f64 = 0.9;

/// Reads an open file from `at` by `read_at`, leaving its position to
/// whoever else reads it (a sender reads its chunks at offsets).
pub(crate) struct ReadFrom<'a> {
    pub file: &'a std::fs::File,
    pub at: u64,
}

impl Read for ReadFrom<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Hashes what passes through it.
pub(crate) struct Hashing<R> {
    pub inner: R,
    pub hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The first `size` bytes of `file`: their SHA-256 and the signature a
/// later delta against them needs, in one read.
pub(crate) fn hash_and_sign(file: &std::fs::File, size: u64) -> Result<([u8; 32], Vec<u8>)> {
    let mut reader = Hashing {
        inner: std::io::BufReader::with_capacity(1 << 20, ReadFrom { file, at: 0 }.take(size)),
        hasher: Sha256::new(),
    };
    let sig = Signature::of(&mut reader, SignatureParams::for_file(size, Travels::No))
        .map_err(|e| CoreError::io("reading the file for its signature".to_string(), e))?;
    if sig.base_len() != size {
        return Err(CoreError::Transfer(
            "the file is shorter than when the transfer started; run the command again".into(),
        ));
    }
    Ok((reader.hasher.finalize().into(), sig.encode()))
}

/// Run `f`, which reads a file whole, without holding up the other tasks
/// of a runtime with several threads (on a single-threaded one, the
/// simulator's, there are none to hold up).
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// What a delta upload sends: the manifest's [`DeltaOf`] and the delta's
/// length.
pub(crate) struct UploadDelta {
    pub of: DeltaOf,
    pub len: u64,
}

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
) -> Result<Option<UploadDelta>> {
    let Ok(sig) = Signature::decode(&base.signature) else {
        return Ok(None);
    };
    let file = std::fs::File::open(path)
        .map_err(|e| CoreError::io(format!("reading {}", path.display()), e))?;
    let out = store.create_delta_file(id)?;
    let mut reader = Hashing {
        inner: std::io::BufReader::with_capacity(
            1 << 20,
            ReadFrom { file: &file, at: 0 }.take(len),
        ),
        hasher: Sha256::new(),
    };
    let mut writer = BufWriter::with_capacity(1 << 20, &out);
    let made = crate::delta::diff(&sig, &mut reader, len, &mut writer)
        .and_then(|stats| writer.flush().map(|()| stats));
    drop(writer);
    let stats = match made {
        Ok(stats) => stats,
        Err(e) => {
            store.forget_transfer_files(id);
            return Err(CoreError::io(
                format!("making the delta of {} (is the disk full?)", path.display()),
                e,
            ));
        }
    };
    let sha256: [u8; 32] = reader.hasher.finalize().into();
    if stats.delta_len as f64 > len as f64 * WORTH_IT {
        store.forget_transfer_files(id);
        return Ok(None);
    }
    out.sync_all()
        .map_err(|e| CoreError::io("syncing the delta (is the disk full?)".to_string(), e))?;
    // The version this sends, for the delta after it (a second read: the
    // file may have changed since the first, and then it is not kept).
    if let Ok((again, signature)) = hash_and_sign(&file, len) {
        if again == sha256 {
            store.put_pending_version(
                id,
                &SentVersion {
                    peer: base.peer.clone(),
                    remote_path: base.remote_path.clone(),
                    sha256,
                    size: len,
                    signature,
                },
            )?;
        }
    }
    Ok(Some(UploadDelta {
        of: DeltaOf {
            base_sha256: base.sha256,
            size: len,
            sha256,
        },
        len: stats.delta_len,
    }))
}

impl Core {
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
        store.forget_sent_version(&rec.peer, &rec.remote_path);
        store.forget_transfer_files(&id);
        store.clear_chunks(&id)?;
        // The new key is durable before anything is sealed under it.
        store.put_secret(&id, &secret)?;
        let stamp = SourceStamp::of(&meta);
        let fresh = manifest.clone();
        store.update_transfer(&id, |r| {
            r.manifest = fresh.clone();
            r.chunks_total = total;
            r.chunks_done = 0;
            r.source = Some(stamp);
            r.status = TransferStatus::Pending;
            r.error = None;
        })?;
        store.flush()?;
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
            r.manifest = manifest.clone();
            r.chunks_total = total;
            r.chunks_done = 0;
            r.source = Some(stamp);
            r.status = TransferStatus::Pending;
            r.error = None;
            r.secret = Some(secret.clone());
        });
        self.eligible.insert(id);
        self.node.touch();
        Ok(())
    }
}
