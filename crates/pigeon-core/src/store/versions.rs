//! What a client keeps to send only the differences next time (issue 31).
//!
//! - `versions/`: for each (peer, remote path), the last version of a file
//!   the agent verified on arrival, as a [`SentVersion`]: its SHA-256, its
//!   size and its delta signature ([`crate::delta::Signature`]). The file
//!   itself is not kept (the user edits it in place); the signature is all
//!   a delta against it needs. Written as `<transfer id>.pending` while an
//!   upload runs and renamed to the path's name once the agent said Done
//!   with that hash, so a version the agent never verified is never used.
//! - `deltas/`: for each delta upload, the delta its chunks are cut from,
//!   written and synced before the transfer's record (and so before its
//!   first seal), removed when the transfer ends.
//!
//!   For a program (`crate::delta::binary::is_program`, at most
//!   [`crate::delta::binary::MAX_LEN`]), a copy of what was sent besides
//!   (`.copy`): its next delta is made against its bytes.
//!
//! Files, not sled values: a signature is up to a few megabytes, and sled
//! keeps old values in its log for as long as it likes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Store;
use crate::codec;
use crate::error::{CoreError, IoContext, Result};
use crate::view::TransferId;

/// One version of a file as the agent holds it at a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentVersion {
    pub peer: String,
    pub remote_path: String,
    pub sha256: [u8; 32],
    pub size: u64,
    /// [`crate::delta::Signature::encode`] of the file.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

const VERSION: u8 = 1;

/// The most the kept versions (signatures and programs' copies) take: the
/// least recently kept go first beyond it (a delta is only an optimisation).
const KEPT_MAX: u64 = 512 * 1024 * 1024;

impl Store {
    fn versions_dir(&self) -> PathBuf {
        self.dir.join("versions")
    }

    fn deltas_dir(&self) -> PathBuf {
        self.dir.join("deltas")
    }

    /// The delta file of transfer `id` (it exists only for a delta upload).
    pub fn delta_path(&self, id: &TransferId) -> PathBuf {
        self.deltas_dir().join(format!("{id}.delta"))
    }

    /// A new, empty delta file for transfer `id`, private, to be written,
    /// synced and named in the transfer's manifest before anything is
    /// sealed from it.
    pub fn create_delta_file(&self, id: &TransferId) -> Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        crate::files::create_private_dir(&self.deltas_dir())?;
        let path = self.delta_path(id);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .ctx(|| format!("creating {}", path.display()))?;
        // Its name survives a crash as its bytes will.
        crate::files::sync_dir(&self.deltas_dir())
            .ctx(|| format!("syncing {}", self.deltas_dir().display()))?;
        Ok(file)
    }

    /// Delta files of transfers that are not in `live` (ended, deleted,
    /// or never recorded: a crash between a delta and its record): removed.
    pub fn sweep_delta_files(&self, live: &std::collections::HashSet<TransferId>) -> usize {
        let Ok(dir) = std::fs::read_dir(self.deltas_dir()) else {
            return 0;
        };
        let mut removed = 0;
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_suffix(".delta")
                .and_then(|hex| hex.parse::<TransferId>().ok());
            if id.is_none_or(|id| !live.contains(&id)) && std::fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    fn pending_path(&self, id: &TransferId) -> PathBuf {
        self.versions_dir().join(format!("{id}.pending"))
    }

    /// Where the version of `remote_path` at `peer` is kept: named by a
    /// hash of both, so no path (however hostile) names a file here.
    fn version_path(&self, peer: &str, remote_path: &str) -> PathBuf {
        let mut key = peer.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(remote_path.as_bytes());
        let name = hex::encode(&crate::crypto::sha256(&key)[..16]);
        self.versions_dir().join(format!("{name}.sig"))
    }

    /// Keep `version` as what transfer `id` sends, until the agent
    /// verifies it ([`keep_sent_version`](Self::keep_sent_version)).
    pub fn put_pending_version(&self, id: &TransferId, version: &SentVersion) -> Result<()> {
        crate::files::create_private_dir(&self.versions_dir())?;
        let bytes = codec::encode("sent version", VERSION, version)?;
        crate::files::write_private(&self.pending_path(id), &bytes)
    }

    /// Transfer `id` arrived whole and verified with SHA-256 `sha256`: what
    /// it sent becomes the version the agent holds at its path. Nothing
    /// happens when no version is pending for it, or when the pending one
    /// is of other content (the file changed between its signature and
    /// its sending). Returns whether a version was kept.
    pub fn keep_sent_version(&self, id: &TransferId, sha256: &[u8; 32]) -> Result<bool> {
        let pending = self.pending_path(id);
        let Some(version) = read_version(&pending)? else {
            return Ok(false);
        };
        if &version.sha256 != sha256 {
            let _ = std::fs::remove_file(&pending);
            return Ok(false);
        }
        let kept = self.version_path(&version.peer, &version.remote_path);
        std::fs::rename(&pending, &kept).ctx(|| format!("keeping {}", kept.display()))?;
        crate::files::sync_dir(&self.versions_dir())
            .ctx(|| format!("syncing {}", self.versions_dir().display()))?;
        self.trim_versions(KEPT_MAX);
        Ok(true)
    }

    /// The version of `remote_path` the agent `peer` verified last, if any
    /// is kept (one that does not read is as none: a delta is only ever an
    /// optimisation).
    pub fn sent_version(&self, peer: &str, remote_path: &str) -> Option<SentVersion> {
        let path = self.version_path(peer, remote_path);
        match read_version(&path) {
            Ok(Some(v)) if v.peer == peer && v.remote_path == remote_path => Some(v),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", path.display());
                None
            }
        }
    }

    /// Forget the version of `remote_path` at `peer` (the agent's copy is
    /// not it any more), and any copy of it kept.
    pub fn forget_sent_version(&self, peer: &str, remote_path: &str) {
        let _ = std::fs::remove_file(self.version_path(peer, remote_path));
        let _ = std::fs::remove_file(self.version_path(peer, remote_path).with_extension("copy"));
    }

    /// Keep a copy of the program at `src`, which the agent `peer` verified
    /// at `remote_path` with SHA-256 `sha256`: a program's next delta is
    /// made against its bytes, not a signature ([`crate::delta::binary`]).
    /// Nothing is kept when the file is not that content any more.
    pub fn keep_sent_copy(
        &self,
        peer: &str,
        remote_path: &str,
        src: &std::path::Path,
        sha256: &[u8; 32],
    ) -> Result<bool> {
        use sha2::Digest;
        use std::os::unix::fs::OpenOptionsExt;
        let kept = self.version_path(peer, remote_path).with_extension("copy");
        let tmp = kept.with_extension("copy.tmp");
        let _ = std::fs::remove_file(&tmp);
        let copied = (|| -> std::io::Result<[u8; 32]> {
            let mut from = std::fs::File::open(src)?;
            let mut to = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = std::io::Read::read(&mut from, &mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                std::io::Write::write_all(&mut to, &buf[..n])?;
            }
            to.sync_all()?;
            Ok(hasher.finalize().into())
        })();
        match copied {
            Ok(sha) if &sha == sha256 => {
                std::fs::rename(&tmp, &kept).ctx(|| format!("keeping {}", kept.display()))?;
                self.trim_versions(KEPT_MAX);
                Ok(true)
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&tmp);
                Ok(false)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(CoreError::io(format!("copying {}", src.display()), e))
            }
        }
    }

    /// Remove the least recently kept versions (by modification time)
    /// until what is kept takes at most `max` bytes; pending ones stay.
    fn trim_versions(&self, max: u64) {
        let Ok(dir) = std::fs::read_dir(self.versions_dir()) else {
            return;
        };
        let mut kept: Vec<(std::time::SystemTime, u64, PathBuf)> = dir
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".sig") || name.ends_with(".copy")
            })
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = kept.iter().map(|(_, len, _)| len).sum();
        kept.sort();
        for (_, len, path) in kept {
            if total <= max {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }

    /// The copy of the program the agent `peer` holds at `remote_path`, if
    /// one is kept.
    pub fn sent_copy(&self, peer: &str, remote_path: &str) -> Option<PathBuf> {
        let path = self.version_path(peer, remote_path).with_extension("copy");
        path.is_file().then_some(path)
    }

    fn base_path(&self, id: &TransferId) -> PathBuf {
        self.versions_dir().join(format!("{id}.base"))
    }

    /// The version of the file download `id` replaces, as it asks for the
    /// differences from it (each fetch says it again, across restarts).
    pub fn put_fetch_base(&self, id: &TransferId, base: &SentVersion) -> Result<()> {
        crate::files::create_private_dir(&self.versions_dir())?;
        let bytes = codec::encode("sent version", VERSION, base)?;
        crate::files::write_private(&self.base_path(id), &bytes)
    }

    /// The version download `id` asks the differences from, if any.
    pub fn fetch_base(&self, id: &TransferId) -> Option<SentVersion> {
        read_version(&self.base_path(id)).ok().flatten()
    }

    /// Download `id` asks for the whole file from now on.
    pub fn forget_fetch_base(&self, id: &TransferId) {
        let _ = std::fs::remove_file(self.base_path(id));
    }

    /// Transfer `id` ended: its delta file, any version pending for it and
    /// the base it asked from go.
    pub fn forget_transfer_files(&self, id: &TransferId) {
        let _ = std::fs::remove_file(self.delta_path(id));
        let _ = std::fs::remove_file(self.pending_path(id));
        let _ = std::fs::remove_file(self.base_path(id));
    }
}

fn read_version(path: &std::path::Path) -> Result<Option<SentVersion>> {
    match std::fs::read(path) {
        Ok(bytes) => codec::decode("sent version", VERSION, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CoreError::io(format!("reading {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(peer: &str, path: &str, sha: u8) -> SentVersion {
        SentVersion {
            peer: peer.into(),
            remote_path: path.into(),
            sha256: [sha; 32],
            size: 10,
            signature: vec![sha; 40],
        }
    }

    /// A version becomes the base of later deltas only once the agent
    /// verified that very content; per peer and path.
    #[test]
    fn a_sent_version_is_kept_only_once_verified_and_only_for_its_peer_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (TransferId([1; 16]), TransferId([2; 16]));
        store
            .put_pending_version(&a, &version("agent", "app", 7))
            .unwrap();
        assert_eq!(store.sent_version("agent", "app"), None, "not yet verified");
        assert!(
            !store.keep_sent_version(&a, &[8; 32]).unwrap(),
            "other content"
        );
        assert_eq!(store.sent_version("agent", "app"), None);
        store
            .put_pending_version(&b, &version("agent", "app", 7))
            .unwrap();
        assert!(store.keep_sent_version(&b, &[7; 32]).unwrap());
        assert_eq!(
            store.sent_version("agent", "app"),
            Some(version("agent", "app", 7))
        );
        assert_eq!(store.sent_version("phone", "app"), None, "another peer");
        assert_eq!(store.sent_version("agent", "app2"), None, "another path");
        store.forget_sent_version("agent", "app");
        assert_eq!(store.sent_version("agent", "app"), None);
    }

    /// Beyond the cap, the least recently kept versions go first.
    #[test]
    fn kept_versions_beyond_the_cap_go_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (i, path) in ["a", "b", "c"].iter().enumerate() {
            let id = TransferId([10 + i as u8; 16]);
            store
                .put_pending_version(
                    &id,
                    &SentVersion {
                        signature: vec![0; 1000],
                        ..version("agent", path, 1)
                    },
                )
                .unwrap();
            assert!(store.keep_sent_version(&id, &[1; 32]).unwrap());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let each = std::fs::metadata(store.version_path("agent", "a"))
            .unwrap()
            .len();
        store.trim_versions(each * 2);
        assert_eq!(store.sent_version("agent", "a"), None, "the oldest went");
        assert!(store.sent_version("agent", "b").is_some());
        assert!(store.sent_version("agent", "c").is_some());
    }

    /// Delta files of transfers no longer live go; a live one stays.
    #[test]
    fn a_sweep_keeps_only_the_deltas_of_live_transfers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (live, ended) = (TransferId([3; 16]), TransferId([4; 16]));
        store.create_delta_file(&live).unwrap();
        store.create_delta_file(&ended).unwrap();
        std::fs::write(store.deltas_dir().join("stray"), b"x").unwrap();
        let keep = std::collections::HashSet::from([live]);
        assert_eq!(store.sweep_delta_files(&keep), 2);
        assert!(store.delta_path(&live).exists());
        assert!(!store.delta_path(&ended).exists());
    }
}
