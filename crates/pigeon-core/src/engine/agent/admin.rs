//! What the agent's owner asks of it: the audit log, quota use, the
//! quarantine, cleanup. Answered by the running agent over its socket
//! ([`crate::socket::admin`]), or straight from the home's store when no
//! agent runs: one [`Admin::answer`] either way.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::policy::{self, Held};
use crate::error::Result;
use crate::home::{AgentSettings, Home};
use crate::policy::{QuotaLine, StorageRoot};
pub use crate::store::{now_unix, AuditRecord};
use crate::store::{Role, Store};
use crate::view::{human_bytes, TransferId, TransferStatus};

/// A question for the agent.
#[derive(Debug, Serialize, Deserialize)]
pub enum AdminAsk {
    /// The whole audit log, as far as its chain verifies.
    Audit,
    /// Each peer's use against its limits.
    Quota,
    /// What the quarantine holds.
    Held,
    /// Put a held file where it was to go.
    Release { id: String, overwrite: bool },
    /// Remove a held file.
    Delete { id: String },
    /// Apply the cleanup policies (or only say what they would remove).
    Clean { dry_run: bool },
    /// Every share between peers.
    Shares,
}

/// The agent's answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum AdminAnswer {
    Audit {
        records: Vec<AuditRecord>,
        /// What is wrong with the first record that does not verify.
        broken: Option<String>,
        /// SHA-256 (hex) of the last record.
        head: Option<String>,
    },
    Quota(Vec<QuotaLine>),
    Held(Vec<Held>),
    /// Where the released file is now.
    Released(String),
    Deleted(Held),
    /// What was (or would be) removed, one line each.
    Cleaned(Vec<String>),
    Shares(Vec<crate::policy::Share>),
}

/// What answers: the agent's home, store, root and settings.
pub struct Admin {
    pub home: Home,
    pub store: Store,
    pub root: StorageRoot,
    pub settings: AgentSettings,
}

impl Admin {
    /// Answer `ask`; `busy` says whether a transfer is running right now
    /// (cleanup leaves those alone).
    pub fn answer(&self, ask: AdminAsk, busy: &dyn Fn(&TransferId) -> bool) -> Result<AdminAnswer> {
        let root = self.root.path();
        Ok(match ask {
            AdminAsk::Audit => {
                let (records, broken) = self.store.audit_chain();
                AdminAnswer::Audit {
                    records,
                    broken,
                    head: self.store.audit_head().map(hex::encode),
                }
            }
            AdminAsk::Quota => {
                let own = self
                    .home
                    .trusted()?
                    .into_iter()
                    .map(|t| (t.name.to_string(), t.limits))
                    .collect();
                AdminAnswer::Quota(policy::quota_lines(
                    &self.store.transfers()?,
                    &policy::held(root),
                    &self.settings,
                    &own,
                ))
            }
            AdminAsk::Held => AdminAnswer::Held(policy::held(root)),
            AdminAsk::Release { id, overwrite } => {
                let h = policy::find_held(root, &id)?;
                let placed = policy::release(&self.root, &h, overwrite)?;
                // Its upload is complete now, and counts against its quota.
                let upload = self
                    .store
                    .transfers()?
                    .into_iter()
                    .find(|r| r.id.to_string() == h.id);
                if let Some(rec) = upload.filter(|r| policy::held_refusal(r).is_some()) {
                    let now = now_unix();
                    self.store.update_transfer(&rec.id, |r| {
                        r.status = TransferStatus::Completed;
                        r.error = None;
                        r.completed_unix = Some(now);
                    })?;
                }
                self.audit(&h, "released from quarantine");
                AdminAnswer::Released(placed.display().to_string())
            }
            AdminAsk::Delete { id } => {
                let h = policy::find_held(root, &id)?;
                policy::delete(root, &h)?;
                self.audit(&h, "deleted from quarantine");
                AdminAnswer::Deleted(h)
            }
            AdminAsk::Clean { dry_run } => AdminAnswer::Cleaned(cleanup(
                &self.store,
                &self.root,
                &self.settings,
                dry_run,
                busy,
            )),
            AdminAsk::Shares => AdminAnswer::Shares(self.store.shares()?),
        })
    }

    fn audit(&self, h: &Held, outcome: &str) {
        let _ = self.store.audit(AuditRecord {
            sha256: Some(h.sha256.clone()),
            size: Some(h.size),
            transport: "agent's owner".into(),
            ..AuditRecord::new(&h.peer, "quarantine", &h.path, outcome)
        });
        let _ = self.store.flush();
    }
}

const DAY: u64 = 86_400;

/// Apply the cleanup policies of `settings`: partial uploads with no
/// progress for `partials_days`, quarantined files held longer than
/// `quarantine_days`, and (when `records_days` is set) records of
/// transfers that ended longer ago, except completed uploads whose file is
/// still there (quotas count those). Nothing a running transfer uses is
/// touched. Returns one line per thing removed (or, `dry_run`, that would be).
pub fn cleanup(
    store: &Store,
    root: &StorageRoot,
    settings: &AgentSettings,
    dry_run: bool,
    busy: &dyn Fn(&TransferId) -> bool,
) -> Vec<String> {
    let rules = &settings.cleanup;
    let now = now_unix();
    let mut said = vec![];
    let age_days = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map(|d| d.as_secs() / DAY)
    };
    let Ok(all) = store.transfers() else {
        return said;
    };
    let mut owned = std::collections::HashSet::new();
    for rec in all {
        if busy(&rec.id) {
            if let Some(p) = &rec.partial_path {
                owned.insert(p.clone());
            }
            continue;
        }
        let ended_days = rec
            .completed_unix
            .map(|t| now.saturating_sub(t) / DAY)
            .unwrap_or_else(|| now.saturating_sub(rec.created_unix) / DAY);
        if rec.role == Role::Receiver && !rec.status.is_finished() {
            let Some(partial) = rec.partial_path.clone() else {
                continue;
            };
            match age_days(&partial) {
                Some(days) if days >= rules.partials_days => {
                    said.push(format!(
                        "partial upload {} by {} ({}, no progress for {days} days)",
                        rec.remote_path,
                        rec.peer,
                        human_bytes(rec.manifest.size)
                    ));
                    if !dry_run {
                        let _ = std::fs::remove_file(&partial);
                        let _ = store.clear_chunks(&rec.id);
                        let error = format!("expired: no progress for {days} days");
                        let _ = store.update_transfer(&rec.id, |r| {
                            r.status = TransferStatus::Failed;
                            r.error = Some(error.clone());
                        });
                    }
                }
                _ => {
                    owned.insert(partial);
                }
            }
            continue;
        }
        let keeps_quota = rec.role == Role::Receiver
            && rec.status == TransferStatus::Completed
            && rec.local_path.is_file();
        if rules.records_days > 0
            && rec.status.is_finished()
            && ended_days >= rules.records_days
            && !keeps_quota
        {
            said.push(format!(
                "record of {} {} by {} ({}, ended {ended_days} days ago)",
                match rec.role {
                    Role::Receiver => "upload",
                    Role::Sender => "download",
                },
                rec.remote_path,
                rec.peer,
                rec.status.as_str()
            ));
            if !dry_run {
                let _ = store.delete_transfer(&rec.id);
            }
        }
    }
    // Staging files no transfer owns (a crash between making one and
    // recording it), once they are as old as a partial may be.
    if let Ok(entries) = std::fs::read_dir(root.staging_dir()) {
        for entry in entries.flatten() {
            let path = entry.path();
            if owned.contains(&path) {
                continue;
            }
            if age_days(&path).is_some_and(|d| d >= rules.partials_days) {
                said.push(format!(
                    "staging file {} that no transfer owns",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ));
                if !dry_run {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
    for h in policy::held(root.path()) {
        let days = now.saturating_sub(h.held_unix) / DAY;
        if days >= rules.quarantine_days {
            said.push(format!(
                "quarantined {} by {} (held {days} days: {})",
                h.path, h.peer, h.reason
            ));
            if !dry_run {
                let _ = policy::delete(root.path(), &h);
                let _ = store.audit(AuditRecord {
                    sha256: Some(h.sha256.clone()),
                    size: Some(h.size),
                    ..AuditRecord::new(&h.peer, "quarantine", &h.path, "expired from quarantine")
                });
            }
        }
    }
    expire_uploads(store, root, dry_run, busy, &mut said);
    for share in store.shares().unwrap_or_default() {
        if share.is_live(now) {
            continue;
        }
        said.push(format!(
            "share of {} by {} with {} (expired)",
            share.path, share.owner, share.with
        ));
        if !dry_run {
            let _ = store.delete_share(&share);
            let _ = store.audit(AuditRecord::new(
                &share.owner,
                "unshare",
                &format!("{}/{}", share.owner, share.path),
                &format!("expired: no longer shared with {}", share.with),
            ));
        }
    }
    if !dry_run && !said.is_empty() {
        let _ = store.flush();
    }
    said
}

/// Remove the files uploaded with `--expires` whose time has come, while
/// they are the file that upload placed (one replaced since is not its
/// to remove) and no download of them is running.
fn expire_uploads(
    store: &Store,
    root: &StorageRoot,
    dry_run: bool,
    busy: &dyn Fn(&TransferId) -> bool,
    said: &mut Vec<String>,
) {
    let now = now_unix();
    let Ok(expiries) = store.expiries() else {
        return;
    };
    let records = store.transfers().unwrap_or_default();
    for (path, when, stamp) in expiries {
        if when > now {
            continue;
        }
        let Ok(remote) = crate::policy::RemotePath::parse_file(&path) else {
            let _ = store.delete_expiry(&path);
            continue;
        };
        let on_disk = root.path().join(&path);
        let reading = records
            .iter()
            .any(|r| r.role == Role::Sender && r.local_path == on_disk && busy(&r.id));
        if reading {
            continue;
        }
        let same = root
            .open_file(&remote)
            .and_then(|f| f.metadata())
            .is_ok_and(|m| m.is_file() && crate::store::SourceStamp::of(&m) == stamp);
        if !same {
            // Gone or replaced: nothing of this upload's is left to remove.
            if !dry_run {
                let _ = store.delete_expiry(&path);
            }
            continue;
        }
        let owner = records
            .iter()
            .filter(|r| r.role == Role::Receiver && r.local_path == on_disk)
            .max_by_key(|r| r.completed_unix)
            .map_or_else(|| "?".to_string(), |r| r.peer.clone());
        said.push(format!(
            "{path} by {owner} (uploaded with an expiry that has come)"
        ));
        if !dry_run {
            let _ = root.remove_file(&remote);
            let _ = store.delete_expiry(&path);
            let _ = store.audit(AuditRecord::new(&owner, "expire", &path, "removed"));
        }
    }
}

/// How often a running agent applies its cleanup policies.
pub const CLEANUP_EVERY: Duration = Duration::from_secs(3600);
