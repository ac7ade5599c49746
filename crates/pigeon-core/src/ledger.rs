//! A home's transfers at rest: what the command line reads and tidies
//! when no pigeon process runs on the home (`status`, `forget`, `clean`,
//! a `cancel` with no way to the agent), and the agent's audit log. The
//! store stays behind this; nothing outside the engine opens it.

use std::time::Duration;

use crate::error::{CoreError, Result};
use crate::home::Home;
use crate::store::{now_unix, Store};
use crate::view::{Direction, FaultCounters, TransferReport, TransferStatus};

pub use crate::store::{AuditRecord, TransferRecord};

/// Which finished transfers [`Ledger::clean`] removes.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CleanChoice {
    pub failed: bool,
    pub cancelled: bool,
    pub completed: bool,
    /// Only those that ended at least this long ago.
    pub older_than: Option<Duration>,
}

impl CleanChoice {
    /// No kind named: failed and cancelled ones (never completed ones
    /// unless asked).
    fn kinds(&self) -> (bool, bool, bool) {
        if self.failed || self.cancelled || self.completed {
            (self.failed, self.cancelled, self.completed)
        } else {
            (true, true, false)
        }
    }

    fn takes(&self, rec: &TransferRecord, now: u64) -> bool {
        let (failed, cancelled, completed) = self.kinds();
        let kind = match rec.status {
            TransferStatus::Failed => failed,
            TransferStatus::Cancelled => cancelled,
            TransferStatus::Completed => completed,
            _ => false,
        };
        kind && self.older_than.is_none_or(|age| {
            let ended = rec.completed_unix.unwrap_or(rec.created_unix);
            now.saturating_sub(ended) >= age.as_secs()
        })
    }
}

/// The records of one home, its store opened. Fails with
/// [`CoreError::StoreLocked`] while a pigeon process owns the home.
pub struct Ledger {
    store: Store,
}

impl Ledger {
    pub fn open(home: &Home) -> Result<Ledger> {
        Ok(Ledger {
            store: Store::open(&home.store_dir())?,
        })
    }

    /// The ledger of a store the engine already holds.
    pub(crate) fn over(store: Store) -> Ledger {
        Ledger { store }
    }

    /// Every transfer, oldest first, as `status --json` reports it.
    pub fn reports(&self) -> Result<Vec<TransferReport>> {
        Ok(stored_reports(&self.store)?
            .into_iter()
            .map(|(_, report)| report)
            .collect())
    }

    /// The transfer whose id is or starts with `prefix`.
    pub fn find(&self, prefix: &str) -> Result<TransferRecord> {
        self.store.find_transfer(prefix)
    }

    /// Remove one finished transfer (its record, key and chunk state, and a
    /// failed download's partial file here); an unfinished one is refused.
    pub fn forget(&self, prefix: &str) -> Result<TransferRecord> {
        let rec = self.find(prefix)?;
        if !rec.status.is_finished() {
            return Err(CoreError::Transfer(format!(
                "transfer {} is {}: cancel it first (`pigeon cancel {}`), then forget it",
                rec.id.short(),
                rec.status.as_str(),
                rec.id.short()
            )));
        }
        self.remove(&rec)?;
        self.store.flush()?;
        Ok(rec)
    }

    /// The finished transfers `choice` names; removed unless `dry_run`.
    pub fn clean(&self, choice: &CleanChoice, dry_run: bool) -> Result<Vec<TransferRecord>> {
        let now = now_unix();
        let chosen: Vec<_> = self
            .store
            .transfers()?
            .into_iter()
            .filter(|r| choice.takes(r, now))
            .collect();
        if !dry_run {
            for rec in &chosen {
                self.remove(rec)?;
            }
            self.store.flush()?;
        }
        Ok(chosen)
    }

    /// Pause a transfer no process is running: nothing runs it until it is
    /// resumed (`pigeon resume`, or the same upload or download again).
    pub fn pause(&self, prefix: &str) -> Result<TransferRecord> {
        let mut rec = self.find(prefix)?;
        if rec.status.is_finished() {
            return Err(CoreError::Transfer(format!(
                "transfer {} already {}",
                rec.id.short(),
                rec.status.as_str()
            )));
        }
        rec.status = TransferStatus::Paused;
        self.store
            .update_transfer(&rec.id, |r| r.status = TransferStatus::Paused)?;
        self.store.flush()?;
        Ok(rec)
    }

    /// Mark a transfer cancelled here alone (no way to tell the agent).
    pub fn cancel_here(&self, rec: &TransferRecord) -> Result<()> {
        let mut rec = rec.clone();
        rec.status = TransferStatus::Cancelled;
        self.store
            .update_transfer(&rec.id, |r| r.status = TransferStatus::Cancelled)?;
        // Said to the agent the next time pigeon reaches it.
        self.store.put_cancel(&rec.id, &rec.peer)?;
        self.store.flush()?;
        if rec.direction == Direction::Download {
            if let Some(p) = &rec.partial_path {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(())
    }

    /// The agent's audit log, its hash chain checked.
    pub fn audit_log(&self) -> Result<Vec<AuditRecord>> {
        self.store.audit_log()
    }

    /// A finished transfer's record, key and chunk state, and a download's
    /// partial file here (a completed file is never touched).
    fn remove(&self, rec: &TransferRecord) -> Result<()> {
        if rec.status != TransferStatus::Completed && rec.direction == Direction::Download {
            if let Some(p) = &rec.partial_path {
                let _ = std::fs::remove_file(p);
            }
        }
        self.store.delete_transfer(&rec.id)
    }
}

/// A transfer as `--json` and `status` print it; the run's own figures
/// (chunks sent, faults, resumed, elapsed) come from the caller.
pub fn report_with(
    rec: &TransferRecord,
    chunks_sent: u32,
    faults: FaultCounters,
    resumed: bool,
    elapsed_ms: u64,
) -> TransferReport {
    TransferReport {
        id: rec.id.to_string(),
        direction: rec.direction,
        local_path: rec.local_path.display().to_string(),
        remote_path: rec.remote_path.clone(),
        size: rec.manifest.file_size(),
        // The file's hash, for a delta too (the sender's Finish named the
        // delta's).
        sha256: match rec.manifest.delta {
            Some(d) if rec.sha256.is_some() => Some(hex::encode(d.sha256)),
            _ => rec.sha256.as_ref().map(hex::encode),
        },
        mime: rec.manifest.mime.clone(),
        status: rec.status,
        chunks_total: u64::from(rec.chunks_total),
        chunks_sent: u64::from(chunks_sent),
        chunks_retransmitted: faults.retransmitted,
        resumed,
        transport: rec.transport.clone(),
        elapsed_ms,
        faults,
        error: rec.error.clone(),
        delta: rec.manifest.delta.map(|_| rec.manifest.size),
    }
}

/// For `pigeon status` and `history`: reports from the store alone.
pub fn stored_reports(store: &Store) -> Result<Vec<(TransferRecord, TransferReport)>> {
    Ok(store
        .transfers()?
        .into_iter()
        .map(|rec| {
            let report = stored_report(&rec);
            (rec, report)
        })
        .collect())
}

/// One stored transfer's report: its figures are the whole transfer's.
pub fn stored_report(rec: &TransferRecord) -> TransferReport {
    let elapsed_ms = rec
        .completed_unix
        .map_or(0, |c| c.saturating_sub(rec.created_unix) * 1000);
    report_with(rec, rec.chunks_done, rec.faults, false, elapsed_ms)
}

/// One stored transfer as `status --json` reports it.
pub fn report(rec: &TransferRecord) -> TransferReport {
    stored_report(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Manifest;
    use crate::store::{NewTransfer, Role};
    use crate::view::TransferId;

    fn record(status: TransferStatus, ended_days_ago: u64) -> TransferRecord {
        let ended = now_unix() - ended_days_ago * 86_400;
        TransferRecord {
            status,
            created_unix: ended,
            completed_unix: Some(ended),
            ..TransferRecord::begin(NewTransfer {
                id: TransferId::random(),
                direction: Direction::Upload,
                role: Role::Sender,
                peer: "agent",
                local_path: "/tmp/x".into(),
                remote_path: "x".into(),
                manifest: Manifest::sample("x", 1, 1),
                secret: None,
                transport: String::new(),
            })
        }
    }

    #[test]
    fn clean_takes_failed_and_cancelled_unless_told_and_respects_age() {
        let home_dir = tempfile::tempdir().unwrap();
        let home = Home::resolve(Some(home_dir.path().join("home"))).unwrap();
        let ledger = Ledger::open(&home).unwrap();
        let failed = record(TransferStatus::Failed, 0);
        let cancelled = record(TransferStatus::Cancelled, 40);
        let done_old = record(TransferStatus::Completed, 40);
        let done_new = record(TransferStatus::Completed, 1);
        let running = record(TransferStatus::InProgress, 40);
        for r in [&failed, &cancelled, &done_old, &done_new, &running] {
            ledger.store.put_transfer(r).unwrap();
        }
        let ids = |v: Vec<TransferRecord>| {
            let mut ids: Vec<_> = v.into_iter().map(|r| r.id).collect();
            ids.sort();
            ids
        };
        let mut want = vec![failed.id, cancelled.id];
        want.sort();
        assert_eq!(
            ids(ledger.clean(&CleanChoice::default(), true).unwrap()),
            want
        );
        let old_completed = CleanChoice {
            completed: true,
            older_than: Some(Duration::from_secs(30 * 86_400)),
            ..CleanChoice::default()
        };
        assert_eq!(
            ids(ledger.clean(&old_completed, false).unwrap()),
            vec![done_old.id]
        );
        assert!(ledger.find(&done_old.id.to_string()).is_err(), "removed");
        assert!(ledger.find(&done_new.id.to_string()).is_ok(), "too young");
        // An unfinished transfer is never forgotten or cleaned.
        let refused = ledger.forget(&running.id.to_string()).unwrap_err();
        assert!(refused.to_string().contains("cancel it first"), "{refused}");
        assert_eq!(ledger.forget(&failed.id.to_string()).unwrap().id, failed.id);
        assert_eq!(ledger.reports().unwrap().len(), 3);
    }
}
