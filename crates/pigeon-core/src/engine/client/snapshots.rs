//! What front ends read: reports, snapshots, and the stored transfers.

use super::*;

pub(super) fn report_of(rec: &TransferRecord, p: &Progress) -> TransferReport {
    let elapsed_ms = p.started.elapsed().as_millis() as u64;
    report(rec, p.this_run.count(), p.faults, p.resumed, elapsed_ms)
}

/// A transfer as `--json` and `status` print it; the run's own figures
/// (chunks sent, faults, resumed, elapsed) come from the caller.
pub(super) fn report(
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

/// Publish snapshots when something changed, at most 20 times a second,
/// and at least once a second while figures that move with time (a rate,
/// an ETA, messages in the last minute) are not yet at rest, so none is
/// shown long after it stopped being true.
pub(super) async fn publish(
    node: Arc<Node>,
    records: Arc<Mutex<BTreeMap<TransferId, TransferRecord>>>,
    tx: watch::Sender<Arc<EngineSnapshot>>,
    peer: String,
    embedded: bool,
) {
    let mut changes = node.changes.subscribe();
    // The first snapshot goes out at once: what was loaded from the store
    // changed the node before this task subscribed (found by the
    // simulator, seed 6271: a client restarted after its download had
    // completed showed no transfers at all until something else changed).
    changes.mark_changed();
    let mut version = 0;
    let mut moving = false;
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() {
                return;
            },
            () = tokio::time::sleep(FIGURES_EVERY), if moving => {}
        }
        version += 1;
        let transfers = {
            let records = lock(&records);
            let progress = lock(&node.progress);
            records
                .values()
                .filter_map(|rec| {
                    let p = progress.get(&rec.id)?;
                    let p = p.read();
                    let map: Arc<[u8]> = Arc::from(p.chunks.as_slice());
                    Some(p.view(rec, map))
                })
                .collect()
        };
        let snapshot = EngineSnapshot {
            peer: peer.clone(),
            embedded_agent: embedded,
            transfers,
            transports: node.transports_health(),
            agent_silent: node
                .silent_while_waiting()
                .filter(|silent| *silent >= silence_notice(&node)),
            version,
        };
        moving = snapshot.figures_moving();
        if tx.send(Arc::new(snapshot)).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How often figures that move with time are shown again.
const FIGURES_EVERY: Duration = Duration::from_secs(1);

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
    report(rec, rec.chunks_done, rec.faults, false, elapsed_ms)
}
