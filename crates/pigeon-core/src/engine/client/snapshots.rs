//! What front ends read: reports, snapshots, and the stored transfers.

use super::*;
pub(crate) use crate::ledger::{report_with as report, stored_report, stored_reports};

pub(super) fn report_of(rec: &TransferRecord, p: &Progress) -> TransferReport {
    let elapsed_ms = p.started.elapsed().as_millis() as u64;
    report(rec, p.this_run.count(), p.faults, p.resumed, elapsed_ms)
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
