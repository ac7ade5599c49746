//! The agent's policy where it needs the store: quota use counted from
//! the transfer records, and the quarantine folder's files and records.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, IoContext, Result};
use crate::home::AgentSettings;
use crate::policy::{Limits, QuotaLine, RemotePath, StorageRoot, Usage, INTERNAL_DIR};
use crate::store::{now_unix, Role, TransferRecord};
use crate::view::TransferStatus;

pub use crate::policy::quarantine::HELD;

/// The refusal to repeat for an upload held in quarantine, if `rec` is one:
/// offered or finished again, it is told again, not received again.
pub fn held_refusal(rec: &TransferRecord) -> Option<String> {
    rec.error
        .clone()
        .filter(|e| rec.status == TransferStatus::Failed && e.starts_with(HELD))
}

/// Quota use per peer, from the agent's records: each peer's finished
/// uploads whose file is still where it was put (a path counted once, for
/// its latest upload), its open ones whole, and what it has in quarantine
/// (`held`: a held file takes the agent's disk like any other); `today`:
/// what it offered in the last 24 hours, open, finished well, or held.
pub fn usage(records: &[TransferRecord], held: &[Held], now: u64) -> HashMap<String, Usage> {
    let mut by_peer: HashMap<String, Usage> = HashMap::new();
    for h in held {
        let u = by_peer.entry(h.peer.clone()).or_default();
        u.bytes = u.bytes.saturating_add(h.size);
        u.files += 1;
        if h.held_unix + 86_400 > now {
            u.today = u.today.saturating_add(h.size);
        }
    }
    let mut latest: BTreeMap<&Path, &TransferRecord> = BTreeMap::new();
    for rec in records.iter().filter(|r| r.role == Role::Receiver) {
        let u = by_peer.entry(rec.peer.clone()).or_default();
        let counts_today = rec.created_unix + 86_400 > now
            && matches!(
                rec.status,
                TransferStatus::Completed | TransferStatus::InProgress | TransferStatus::Pending
            );
        if counts_today {
            u.today = u.today.saturating_add(rec.manifest.size);
        }
        if !rec.status.is_finished() {
            u.open += 1;
            u.bytes = u.bytes.saturating_add(rec.manifest.file_size());
            u.files += 1;
        } else if rec.status == TransferStatus::Completed {
            let newer = latest
                .get(rec.local_path.as_path())
                .is_some_and(|o| o.created_unix > rec.created_unix);
            if !newer {
                latest.insert(&rec.local_path, rec);
            }
        }
    }
    for (path, rec) in latest {
        if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            let u = by_peer.entry(rec.peer.clone()).or_default();
            u.bytes = u.bytes.saturating_add(rec.manifest.file_size());
            u.files += 1;
        }
    }
    by_peer
}

/// Every peer's use against its limits, and all peers' together.
pub fn quota_lines(
    records: &[TransferRecord],
    held: &[Held],
    settings: &AgentSettings,
    own: &HashMap<String, Limits>,
) -> Vec<QuotaLine> {
    let used = usage(records, held, now_unix());
    let mut names: Vec<&String> = own.keys().chain(used.keys()).collect();
    names.sort();
    names.dedup();
    let mut all = Usage::default();
    let mut lines = vec![];
    for name in names {
        let u = used.get(name).copied().unwrap_or_default();
        all.add(&u);
        lines.push(QuotaLine {
            who: name.clone(),
            usage: u,
            limits: effective(own.get(name), settings),
        });
    }
    lines.push(QuotaLine {
        who: "all peers".into(),
        usage: all,
        limits: settings.total,
    });
    lines
}

/// A peer's limits: its own, then the agent's defaults, then the open
/// uploads' built-in bound.
pub fn effective(own: Option<&Limits>, settings: &AgentSettings) -> Limits {
    let mut l = own.copied().unwrap_or_default().or(&settings.limits);
    l.max_open = l.max_open.or(Some(super::MAX_OPEN_UPLOADS as u64));
    l
}

/// One file held in quarantine, as its record (`<id>.json` beside it) says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The upload's transfer id (the file's name in the folder).
    pub id: String,
    pub peer: String,
    /// Where it was to go, under the root.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub reason: String,
    pub held_unix: u64,
    /// Its file is not there (a crash between its record and its move, or
    /// removed by hand): only `delete` applies.
    #[serde(default)]
    pub missing: bool,
}

/// `<root>/.pigeon/quarantine/`: the agent's alone (0700), files 0600.
pub fn quarantine_dir(root: &Path) -> PathBuf {
    root.join(INTERNAL_DIR).join("quarantine")
}

impl Held {
    fn file(&self, root: &Path) -> PathBuf {
        quarantine_dir(root).join(format!("{}.held", self.id))
    }

    fn record(&self, root: &Path) -> PathBuf {
        quarantine_dir(root).join(format!("{}.json", self.id))
    }

    /// Move the verified `partial` into quarantine under this record: the
    /// record first (a crash after it leaves a record whose file is
    /// missing, which `list` shows as such), then the file, never
    /// executable. A file already held under this id stays held.
    pub fn hold(&self, root: &Path, partial: &Path) -> Result<()> {
        let dir = quarantine_dir(root);
        crate::files::create_private_dir(&dir)?;
        if self.file(root).exists() {
            let _ = std::fs::remove_file(partial);
            return Ok(());
        }
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| CoreError::Transfer(format!("quarantine record: {e}")))?;
        crate::files::write_private(&self.record(root), &json)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(partial, std::fs::Permissions::from_mode(0o600))
            .ctx(|| format!("securing {}", partial.display()))?;
        let to = self.file(root);
        std::fs::rename(partial, &to).ctx(|| format!("moving into {}", to.display()))?;
        crate::files::sync_dir(&dir).ctx(|| format!("syncing {}", dir.display()))
    }
}

/// What the quarantine holds, oldest first.
pub fn held(root: &Path) -> Vec<Held> {
    let Ok(entries) = std::fs::read_dir(quarantine_dir(root)) else {
        return vec![];
    };
    let mut all: Vec<Held> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice::<Held>(&std::fs::read(e.path()).ok()?).ok())
        .map(|mut h| {
            h.missing = !h.file(root).is_file();
            h
        })
        .collect();
    all.sort_by_key(|h| (h.held_unix, h.id.clone()));
    all
}

/// The one held file `prefix` names.
pub fn find_held(root: &Path, prefix: &str) -> Result<Held> {
    let prefix = prefix.trim().to_ascii_lowercase();
    if prefix.is_empty() {
        return Err(CoreError::Config(
            "give a held file's id (or its start), as `pigeon quarantine list` shows it".into(),
        ));
    }
    let all = held(root);
    let matching: Vec<&Held> = all.iter().filter(|h| h.id.starts_with(&prefix)).collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(CoreError::Config(format!(
            "nothing in quarantine is {prefix:?}; see `pigeon quarantine list`"
        ))),
        _ => Err(CoreError::Config(format!(
            "{prefix:?} names {} held files; give more of the id",
            matching.len()
        ))),
    }
}

/// Put a held file where it was to go (never replacing a file there
/// unless `overwrite`), checking first that it is still the file that
/// arrived.
pub fn release(root: &StorageRoot, h: &Held, overwrite: bool) -> Result<PathBuf> {
    let file = h.file(root.path());
    let actual = crate::files::hash_file(&file, h.size)?;
    if hex::encode(actual) != h.sha256 {
        return Err(CoreError::Integrity(format!(
            "the held file {} changed since it arrived; delete it",
            h.id
        )));
    }
    let remote = RemotePath::parse_file(&h.path)?;
    root.prepare_parent(&remote)?;
    // Straight from the quarantine (inside the root), so a crash midway
    // leaves it held, never an unowned staging file for cleanup to take.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::Permissions::from_mode(crate::files::public_file_mode());
    std::fs::set_permissions(&file, mode).ctx(|| format!("releasing {}", h.id))?;
    if let Err(e) = root.place(&file, &remote, overwrite) {
        let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600));
        return Err(match e.kind() {
            std::io::ErrorKind::AlreadyExists => CoreError::Config(format!(
                "{} already exists; release with --overwrite to replace it",
                h.path
            )),
            _ => CoreError::io(format!("putting {} in place", h.path), e),
        });
    }
    let _ = std::fs::remove_file(h.record(root.path()));
    Ok(root.path().join(&h.path))
}

/// Remove a held file and its record.
pub fn delete(root: &Path, h: &Held) -> Result<()> {
    match std::fs::remove_file(h.file(root)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CoreError::io(format!("removing {}", h.id), e)),
    }
    std::fs::remove_file(h.record(root)).ctx(|| format!("removing the record of {}", h.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Manifest;
    use crate::store::NewTransfer;
    use crate::view::{Direction, TransferId};

    fn upload(
        peer: &str,
        path: &Path,
        size: u64,
        status: TransferStatus,
        age: u64,
    ) -> TransferRecord {
        TransferRecord {
            status,
            created_unix: 1_000_000 - age,
            ..TransferRecord::begin(NewTransfer {
                id: TransferId::random(),
                direction: Direction::Upload,
                role: Role::Receiver,
                peer,
                local_path: path.to_path_buf(),
                remote_path: "x".into(),
                manifest: Manifest::sample("x", size, 1024),
                secret: None,
                transport: String::new(),
            })
        }
    }

    #[test]
    fn use_counts_files_still_there_once_and_open_uploads_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, gone) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("gone"),
        );
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"b").unwrap();
        let recs = vec![
            // a uploaded twice: counted once, at its latest size.
            upload("laptop", &a, 100, TransferStatus::Completed, 200_000),
            upload("laptop", &a, 300, TransferStatus::Completed, 100),
            upload("laptop", &gone, 5000, TransferStatus::Completed, 100),
            upload(
                "laptop",
                &dir.path().join("open"),
                700,
                TransferStatus::InProgress,
                50,
            ),
            upload(
                "laptop",
                &dir.path().join("f"),
                900,
                TransferStatus::Failed,
                50,
            ),
            upload("phone", &b, 40, TransferStatus::Completed, 100),
        ];
        let held = [Held {
            id: "h".into(),
            peer: "phone".into(),
            path: "x.pdf".into(),
            size: 60,
            sha256: String::new(),
            reason: String::new(),
            held_unix: 1_000_000 - 10,
            missing: false,
        }];
        let u = usage(&recs, &held, 1_000_000);
        assert_eq!(
            u["laptop"],
            Usage {
                bytes: 1000,
                files: 2,
                open: 1,
                today: 300 + 5000 + 700
            }
        );
        // A held file counts against its peer like a stored one.
        assert_eq!(
            u["phone"],
            Usage {
                bytes: 100,
                files: 2,
                open: 0,
                today: 100
            }
        );
    }
}
