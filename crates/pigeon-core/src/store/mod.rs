//! Durable state: the only module that knows it is sled.
//!
//! Trees and what they hold (every value is a versioned [`codec`] record):
//! - `transfers`: [`TransferRecord`] by transfer id (FileTransfer);
//! - `bitmaps`: the per-transfer [`Bitmap`] of held or acknowledged chunks;
//! - `chunk_hashes`: SHA-256 of each chunk's plaintext, keyed
//!   `transfer id ++ index` (FileChunk state; the bytes stay in files);
//!   a sender compares a chunk it reads again with it, so a source that
//!   changed under an unchanged stamp is caught;
//! - `sessions`: [`SessionRecord`] by session id (TransferSession);
//! - `audit`: the agent's hash-chained [`AuditRecord`]s;
//! - `file_hashes`: an agent's SHA-256 of stored files by path, with the
//!   [`SourceStamp`] it holds for (what `ls` shows, hashed once).
//!
//! Beside the database, in files ([`versions`]): a client's signatures of
//! what it sent, and the delta files its delta uploads are cut from.
//!
//! sled 0.34 is beta by its own README, so: small records, a flush before
//! anything is acknowledged ([`Store::flush`]), a small cache so memory
//! stays bounded, and kill -9 tests on top.
//!
//! Transfer secrets never enter sled: sled is log-structured and keeps old
//! values in its segments for as long as it likes, so a key "deleted" there
//! could be read back by anyone who later reads the home. Each live
//! transfer's secret is a file of its own in `keys/` beside the database
//! (mode 0600, written atomically), overwritten and removed when the
//! transfer completes or is cancelled ([`Store::forget_secret`]).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::bitmap::Bitmap;
use crate::codec;
use crate::crypto::TransferSecret;
use crate::error::{CoreError, Result};
use crate::protocol::Manifest;
use crate::view::{Direction, FaultCounters, TransferId, TransferStatus};

const RECORD_VERSION: u8 = 1;
/// The transfer record's shape (1: before a manifest could name a delta;
/// read by [`migrate`], never written).
const TRANSFER_RECORD_VERSION: u8 = 2;

/// What identifies a source file's content without reading it; if any of
/// it changes, a resumed transfer is re-keyed and restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStamp {
    pub size: u64,
    pub modified_nanos: u128,
    pub inode: u64,
}

impl SourceStamp {
    pub fn of(meta: &std::fs::Metadata) -> SourceStamp {
        use std::os::unix::fs::MetadataExt;
        let modified_nanos = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        SourceStamp {
            size: meta.len(),
            modified_nanos,
            inode: meta.ino(),
        }
    }
}

/// Which end of the transfer this party is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Sender,
    Receiver,
}

/// One file transfer, as this party knows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransferRecord {
    pub id: TransferId,
    pub direction: Direction,
    pub role: Role,
    pub peer: String,
    /// The file on this machine: the source (sender) or the destination
    /// (receiver), absolute.
    pub local_path: PathBuf,
    /// The path under the agent's root.
    pub remote_path: String,
    /// Where a receiver writes until the whole-file hash matched.
    pub partial_path: Option<PathBuf>,
    pub manifest: Manifest,
    /// Held in its own file while the transfer lives (see the module
    /// docs), never in the record: `None` once the transfer has ended.
    #[serde(skip)]
    pub secret: Option<TransferSecret>,
    /// The last sealing run a sender of this transfer started
    /// ([`crate::crypto::ChunkNonce`]): made durable before the run's first
    /// chunk leaves, so no two runs share a nonce.
    pub seal_run: u32,
    pub sha256: Option<[u8; 32]>,
    pub status: TransferStatus,
    pub transport: String,
    pub chunks_total: u32,
    pub chunks_done: u32,
    pub created_unix: u64,
    pub completed_unix: Option<u64>,
    pub source: Option<SourceStamp>,
    pub error: Option<String>,
    pub priority: i64,
    pub no_compress: bool,
    pub overwrite: bool,
    pub faults: FaultCounters,
}

/// What a new transfer is about; the rest of its record starts empty.
pub struct NewTransfer<'a> {
    pub id: TransferId,
    pub direction: Direction,
    pub role: Role,
    pub peer: &'a str,
    pub local_path: PathBuf,
    pub remote_path: String,
    pub manifest: Manifest,
    /// None for a record whose secret lives elsewhere (tests).
    pub secret: Option<TransferSecret>,
    pub transport: String,
}

impl TransferRecord {
    /// A transfer that starts now: pending, nothing sent or held, no
    /// sealing run yet, no fault seen. Set what differs with `..`.
    pub fn begin(n: NewTransfer<'_>) -> TransferRecord {
        TransferRecord {
            id: n.id,
            direction: n.direction,
            role: n.role,
            peer: n.peer.to_string(),
            local_path: n.local_path,
            remote_path: n.remote_path,
            partial_path: None,
            chunks_total: n.manifest.chunk_count(),
            manifest: n.manifest,
            secret: n.secret,
            seal_run: 0,
            sha256: None,
            status: TransferStatus::Pending,
            transport: n.transport,
            chunks_done: 0,
            created_unix: now_unix(),
            completed_unix: None,
            source: None,
            error: None,
            priority: 0,
            no_compress: false,
            overwrite: false,
            faults: FaultCounters::default(),
        }
    }

    pub fn mime(&self) -> &str {
        &self.manifest.mime
    }

    /// The transfer's secret, or an error saying it is gone with the transfer.
    pub fn live_secret(&self) -> Result<&TransferSecret> {
        self.secret.as_ref().ok_or_else(|| {
            CoreError::Transfer(format!(
                "transfer {} has ended and its key was deleted; start it again",
                self.id.short()
            ))
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionStatus {
    Active,
    Completed,
    Expired,
}

/// A Noise session with a peer. The keys live in memory only: after a
/// restart the parties handshake again, and transfers resume on the new
/// session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: [u8; 16],
    pub peer: String,
    pub transport: String,
    /// Hex of the session id, as shown in logs.
    pub token: String,
    pub status: SessionStatus,
    pub created_unix: u64,
    pub expires_unix: u64,
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The store of one party's home.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    transfers: sled::Tree,
    bitmaps: sled::Tree,
    chunk_hashes: sled::Tree,
    sessions: sled::Tree,
    audit: sled::Tree,
    file_hashes: sled::Tree,
    /// The agent's shares between peers ([`crate::policy::Share`]).
    shares: sled::Tree,
    /// The agent's files uploaded with an expiry: path under the root to
    /// when, and the stamp of the file that was placed.
    expiries: sled::Tree,
    /// A client's terms of its offers beside the manifest (an expiry).
    terms: sled::Tree,
    /// A client's cancels the agent has not confirmed yet
    /// ([`crate::protocol::Control::Cancelled`]).
    cancels: sled::Tree,
    /// One file per live transfer secret.
    keys: PathBuf,
    /// The store's folder (for what it keeps in files: [`versions`]).
    dir: PathBuf,
    /// Appends to the audit chain one at a time (read last, then insert).
    audit_lock: std::sync::Arc<std::sync::Mutex<()>>,
}

impl Store {
    /// Open (or create) the store in `dir`. Fails with
    /// [`CoreError::StoreLocked`] when another process holds it.
    pub fn open(dir: &Path) -> Result<Store> {
        let keys = dir.join("keys");
        crate::home::create_private_dir(&keys)?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(4 * 1024 * 1024)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| match &e {
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("lock") =>
                {
                    CoreError::StoreLocked {
                        path: dir.to_path_buf(),
                        holder: read_holder(dir),
                    }
                }
                _ => CoreError::Store(format!("opening {}: {e}", dir.display())),
            })?;
        // Only the holder of sled's lock writes this, so whoever finds the
        // lock taken reads who took it last (best effort: it only names).
        let _ = std::fs::write(dir.join(HOLDER_FILE), holder_line());
        Ok(Store {
            transfers: db.open_tree("transfers")?,
            bitmaps: db.open_tree("bitmaps")?,
            chunk_hashes: db.open_tree("chunk_hashes")?,
            sessions: db.open_tree("sessions")?,
            audit: db.open_tree("audit")?,
            file_hashes: db.open_tree("file_hashes")?,
            shares: db.open_tree("shares")?,
            expiries: db.open_tree("expiries")?,
            terms: db.open_tree("terms")?,
            cancels: db.open_tree("cancels")?,
            audit_lock: Default::default(),
            keys,
            dir: dir.to_path_buf(),
            db,
        })
    }

    /// Store a new transfer's record (its secret is not part of it: see
    /// [`put_secret`](Self::put_secret)). A record already stored under
    /// its id keeps its sealing run if that is higher: the run only goes up,
    /// whoever writes. To change a stored record, use
    /// [`update_transfer`](Self::update_transfer): a copy held since it was
    /// read would put back what others changed meanwhile.
    pub fn put_transfer(&self, t: &TransferRecord) -> Result<()> {
        let fresh = codec::encode("transfer record", TRANSFER_RECORD_VERSION, t)?;
        let mut failed = None;
        self.transfers.update_and_fetch(t.id.0, |old| {
            failed = None;
            let stored = old.and_then(|o| decode_record(o).ok());
            match stored {
                Some(s) if s.seal_run > t.seal_run => {
                    let kept = TransferRecord {
                        seal_run: s.seal_run,
                        ..t.clone()
                    };
                    match codec::encode("transfer record", TRANSFER_RECORD_VERSION, &kept) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            failed = Some(e);
                            old.map(<[u8]>::to_vec)
                        }
                    }
                }
                _ => Some(fresh.clone()),
            }
        })?;
        failed.map_or(Ok(()), Err)
    }

    /// Change a stored transfer's record with `change`, atomically: the
    /// record `change` sees is the stored one at that instant (it may be
    /// called more than once if another writer gets in between), so only
    /// the fields it sets change. The sealing run never goes down. Returns
    /// the record as stored after the change (without its secret), or
    /// `None` when there is no such transfer (nothing is written).
    pub fn update_transfer(
        &self,
        id: &TransferId,
        mut change: impl FnMut(&mut TransferRecord),
    ) -> Result<Option<TransferRecord>> {
        let mut failed = None;
        let mut after = None;
        self.transfers.update_and_fetch(id.0, |old| {
            // Called again when another writer got in between: only the
            // last attempt counts.
            failed = None;
            after = None;
            let old = old?;
            let mut rec = match decode_record(old) {
                Ok(r) => r,
                Err(e) => {
                    failed = Some(e);
                    return Some(old.to_vec());
                }
            };
            let run = rec.seal_run;
            change(&mut rec);
            rec.seal_run = rec.seal_run.max(run);
            match codec::encode("transfer record", TRANSFER_RECORD_VERSION, &rec) {
                Ok(v) => {
                    after = Some(rec);
                    Some(v)
                }
                Err(e) => {
                    failed = Some(e);
                    Some(old.to_vec())
                }
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(after),
        }
    }

    /// Take the next sealing run of a transfer: one above any run ever
    /// recorded for it (and above `floor`, the run a caller knows of),
    /// recorded before it is returned. The caller flushes before the run's
    /// first seal leaves. Two callers never get the same run, whatever
    /// else writes the record meanwhile.
    pub fn begin_seal_run(&self, id: &TransferId, floor: u32) -> Result<u32> {
        let mut run = None;
        let stored = self
            .update_transfer(id, |r| {
                run = r.seal_run.max(floor).checked_add(1);
                r.seal_run = run.unwrap_or(r.seal_run);
            })?
            .ok_or_else(|| CoreError::UnknownTransfer(id.short()))?;
        // The run as stored by the attempt that counted.
        run.filter(|r| *r == stored.seal_run).ok_or_else(|| {
            CoreError::Transfer(format!(
                "transfer {} was restarted four billion times; start it again",
                id.short()
            ))
        })
    }

    /// A transfer's record, with its secret when the transfer still has one.
    pub fn transfer(&self, id: &TransferId) -> Result<Option<TransferRecord>> {
        self.transfers
            .get(id.0)?
            .map(|v| self.with_secret(decode_record(&v)?))
            .transpose()
    }

    /// A transfer's record without its secret (no key file read): for
    /// what looks at many records often, as the agent's rights watch.
    pub fn transfer_record(&self, id: &TransferId) -> Result<Option<TransferRecord>> {
        self.transfers
            .get(id.0)?
            .map(|v| decode_record(&v))
            .transpose()
    }

    fn with_secret(&self, mut rec: TransferRecord) -> Result<TransferRecord> {
        rec.secret = self.secret(&rec.id)?;
        Ok(rec)
    }

    /// Make `secret` the transfer's key, durably (temp file, fsync,
    /// rename, fsync of the folder), before anything is sealed with it.
    pub fn put_secret(&self, id: &TransferId, secret: &TransferSecret) -> Result<()> {
        let bytes =
            zeroize::Zeroizing::new(codec::encode("transfer secret", RECORD_VERSION, secret)?);
        crate::home::write_private(&self.key_path(id), &bytes)
    }

    pub fn secret(&self, id: &TransferId) -> Result<Option<TransferSecret>> {
        let path = self.key_path(id);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = zeroize::Zeroizing::new(bytes);
                codec::decode("transfer secret", RECORD_VERSION, &bytes).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CoreError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Delete a transfer's key: overwrite the file, sync, remove it. On a
    /// file system that writes in place (ext4, xfs, f2fs on a phone) the
    /// bytes are gone; on a copy-on-write one the overwrite may land
    /// elsewhere, and only the removal is certain.
    pub fn forget_secret(&self, id: &TransferId) -> Result<()> {
        let path = self.key_path(id);
        let scrub = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&path)?;
            let len = f.metadata()?.len() as usize;
            f.write_all(&vec![0u8; len])?;
            f.sync_all()?;
            std::fs::remove_file(&path)?;
            crate::home::sync_dir(&self.keys)
        };
        match scrub() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CoreError::io(format!("deleting {}", path.display()), e)),
        }
    }

    fn key_path(&self, id: &TransferId) -> PathBuf {
        self.keys.join(format!("{id}.key"))
    }

    /// Every transfer, oldest first, without their secrets (a listing must
    /// not read a key file per record; [`transfer`](Self::transfer) and the
    /// tasks that seal or open load the one they need). Records that do not
    /// decode (from a newer pigeon, say) are skipped with a warning.
    pub fn transfers(&self) -> Result<Vec<TransferRecord>> {
        let mut all = vec![];
        for item in self.transfers.iter() {
            let (_, v) = item?;
            match decode_record(&v) {
                Ok(t) => all.push(t),
                Err(e) => tracing::warn!("skipping a stored transfer: {e}"),
            }
        }
        all.sort_by_key(|t| (t.created_unix, t.id));
        Ok(all)
    }

    /// Find a transfer by full id or by a unique prefix of its hex.
    pub fn find_transfer(&self, prefix: &str) -> Result<TransferRecord> {
        let matches: Vec<_> = self
            .transfers()?
            .into_iter()
            .filter(|t| t.id.to_string().starts_with(&prefix.to_ascii_lowercase()))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().expect("one match")),
            0 => Err(CoreError::UnknownTransfer(prefix.to_string())),
            n => Err(CoreError::Transfer(format!(
                "{n} transfers start with {prefix:?}; give more of the id"
            ))),
        }
    }

    pub fn delete_transfer(&self, id: &TransferId) -> Result<()> {
        self.forget_transfer_files(id);
        self.forget_secret(id)?;
        self.transfers.remove(id.0)?;
        self.terms.remove(id.0)?;
        self.clear_chunks(id)
    }

    pub fn put_bitmap(&self, id: &TransferId, bits: &Bitmap) -> Result<()> {
        self.bitmaps
            .insert(id.0, codec::encode("chunk bitmap", RECORD_VERSION, bits)?)?;
        Ok(())
    }

    pub fn bitmap(&self, id: &TransferId) -> Result<Option<Bitmap>> {
        self.bitmaps
            .get(id.0)?
            .map(|v| codec::decode("chunk bitmap", RECORD_VERSION, &v))
            .transpose()
    }

    /// Remember a stored file's SHA-256 while its stamp holds.
    pub fn put_file_hash(&self, path: &Path, stamp: SourceStamp, sha256: [u8; 32]) -> Result<()> {
        let value = codec::encode("file hash", RECORD_VERSION, &(stamp, sha256))?;
        self.file_hashes
            .insert(path.as_os_str().as_encoded_bytes(), value)?;
        Ok(())
    }

    /// The remembered hash of the file at `path`, with the stamp it holds
    /// for.
    pub fn file_hash(&self, path: &Path) -> Option<(SourceStamp, [u8; 32])> {
        let v = self
            .file_hashes
            .get(path.as_os_str().as_encoded_bytes())
            .ok()??;
        codec::decode("file hash", RECORD_VERSION, &v).ok()
    }

    /// Every remembered file hash (unreadable records are skipped: a hash
    /// is only ever a cache, computed again when missing).
    pub fn file_hashes(&self) -> Vec<(PathBuf, SourceStamp, [u8; 32])> {
        self.file_hashes
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                use std::os::unix::ffi::OsStringExt;
                let path = PathBuf::from(std::ffi::OsString::from_vec(k.to_vec()));
                let (stamp, sha): (SourceStamp, [u8; 32]) =
                    codec::decode("file hash", RECORD_VERSION, &v).ok()?;
                Some((path, stamp, sha))
            })
            .collect()
    }

    /// Make or replace a share (one per owner, path and peer).
    pub fn put_share(&self, share: &crate::policy::Share) -> Result<()> {
        self.shares
            .insert(share.key(), codec::encode("share", RECORD_VERSION, share)?)?;
        Ok(())
    }

    pub fn delete_share(&self, share: &crate::policy::Share) -> Result<()> {
        self.shares.remove(share.key())?;
        Ok(())
    }

    /// Every share, live or expired.
    pub fn shares(&self) -> Result<Vec<crate::policy::Share>> {
        self.shares
            .iter()
            .map(|kv| codec::decode("share", RECORD_VERSION, &kv?.1))
            .collect()
    }

    /// The file placed at `path` (under the root) goes at `expires_unix`
    /// while it is the one with `stamp`.
    pub fn put_expiry(&self, path: &str, expires_unix: u64, stamp: SourceStamp) -> Result<()> {
        let value = codec::encode("expiry", RECORD_VERSION, &(expires_unix, stamp))?;
        self.expiries.insert(path.as_bytes(), value)?;
        Ok(())
    }

    pub fn delete_expiry(&self, path: &str) -> Result<()> {
        self.expiries.remove(path.as_bytes())?;
        Ok(())
    }

    /// Every expiry: (path under the root, when, the placed file's stamp).
    pub fn expiries(&self) -> Result<Vec<(String, u64, SourceStamp)>> {
        self.expiries
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let (when, stamp) = codec::decode("expiry", RECORD_VERSION, &v)?;
                Ok((String::from_utf8_lossy(&k).into_owned(), when, stamp))
            })
            .collect()
    }

    /// An upload's expiry: on a client, the seconds after which it asks the
    /// agent to remove the file; on the agent, when that is by its clock.
    pub fn put_expiry_term(&self, id: &TransferId, value: u64) -> Result<()> {
        self.terms.insert(id.0, &value.to_be_bytes())?;
        Ok(())
    }

    pub fn expiry_term(&self, id: &TransferId) -> Option<u64> {
        let v = self.terms.get(id.0).ok()??;
        Some(u64::from_be_bytes(v.as_ref().try_into().ok()?))
    }

    /// Keep a cancel of a transfer with the agent `peer` until that agent
    /// confirms it.
    pub fn put_cancel(&self, id: &TransferId, peer: &str) -> Result<()> {
        self.cancels.insert(id.0, peer.as_bytes())?;
        Ok(())
    }

    /// `peer` confirmed the cancel: forget it, if it was that agent's.
    /// True if it was kept.
    pub fn forget_cancel(&self, id: &TransferId, peer: &str) -> Result<bool> {
        let removed = self
            .cancels
            .compare_and_swap(id.0, Some(peer.as_bytes()), None::<&[u8]>)?;
        Ok(removed.is_ok())
    }

    /// The cancels `peer` has not confirmed yet.
    pub fn cancels(&self, peer: &str) -> Vec<TransferId> {
        self.cancels
            .iter()
            .flatten()
            .filter(|(_, v)| v.as_ref() == peer.as_bytes())
            .filter_map(|(k, _)| Some(TransferId(k.as_ref().try_into().ok()?)))
            .collect()
    }

    /// Record chunk `index`'s plaintext hash.
    pub fn put_chunk_hash(&self, id: &TransferId, index: u32, hash: &[u8; 32]) -> Result<()> {
        self.chunk_hashes
            .insert(chunk_key(id, index), hash.as_slice())?;
        Ok(())
    }

    pub fn chunk_hash(&self, id: &TransferId, index: u32) -> Result<Option<[u8; 32]>> {
        Ok(self
            .chunk_hashes
            .get(chunk_key(id, index))?
            .and_then(|v| v.get(..32)?.try_into().ok()))
    }

    pub fn clear_chunks(&self, id: &TransferId) -> Result<()> {
        self.bitmaps.remove(id.0)?;
        for k in self.chunk_hashes.scan_prefix(id.0).keys() {
            self.chunk_hashes.remove(k?)?;
        }
        Ok(())
    }

    pub fn put_session(&self, s: &SessionRecord) -> Result<()> {
        self.sessions
            .insert(s.id, codec::encode("session record", RECORD_VERSION, s)?)?;
        Ok(())
    }

    /// A new session replaces the peer's older ones: mark them expired.
    pub fn replace_sessions(&self, new: &SessionRecord) -> Result<()> {
        for mut old in self.sessions()? {
            if old.peer == new.peer && old.id != new.id && old.status == SessionStatus::Active {
                old.status = SessionStatus::Expired;
                self.put_session(&old)?;
            }
        }
        self.put_session(new)
    }

    pub fn sessions(&self) -> Result<Vec<SessionRecord>> {
        self.sessions
            .iter()
            .values()
            .map(|v| codec::decode("session record", RECORD_VERSION, &v?))
            .collect()
    }

    /// Make everything written so far durable. Blocking: call from
    /// `spawn_blocking` in async code, or use [`flush_async`](Self::flush_async).
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// [`flush`](Self::flush) on tokio's blocking pool. Not sled's own
    /// `flush_async`, which waits on a thread tokio does not know: on a
    /// paused clock (the simulator) the runtime would look idle and time
    /// would leap ahead while the disk works.
    pub async fn flush_async(&self) -> Result<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| CoreError::Transfer(format!("flushing the store: {e}")))??;
        Ok(())
    }
}

/// A stored transfer record, of either shape.
fn decode_record(bytes: &[u8]) -> Result<TransferRecord> {
    if bytes.first() == Some(&1) {
        let v1: migrate::TransferRecordV1 = codec::decode("transfer record", 1, bytes)?;
        return Ok(v1.into());
    }
    codec::decode("transfer record", TRANSFER_RECORD_VERSION, bytes)
}

fn chunk_key(id: &TransferId, index: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..16].copy_from_slice(&id.0);
    k[16..].copy_from_slice(&index.to_be_bytes());
    k
}

mod audit;
mod holder;
mod migrate;
#[cfg(test)]
mod tests;
mod versions;

pub use audit::AuditRecord;
#[cfg(test)]
use audit::AUDIT_VERSION;
#[cfg(test)]
use holder::process_lives;
use holder::{holder_line, read_holder, HOLDER_FILE};

pub use versions::SentVersion;
