//! Records as older pigeons wrote them: read and converted, never written.
//!
//! Each shape here is the record as it was, field for field (bincode
//! writes a struct as its fields in order, without names), so an older
//! home opens in a newer pigeon and keeps its history and its transfers.

use std::path::PathBuf;

use serde::Deserialize;

use super::{Role, SourceStamp, TransferRecord};
use crate::protocol::Manifest;
use crate::view::{Direction, FaultCounters, TransferId, TransferStatus};

/// Audit records before they had a key id and a size (version 1).
#[derive(Deserialize)]
pub(super) struct AuditRecordV1 {
    pub seq: u64,
    pub prev: [u8; 32],
    pub time_unix: u64,
    pub peer: String,
    pub action: String,
    pub path: String,
    pub outcome: String,
    pub sha256: Option<String>,
    pub transport: String,
}

/// A manifest before it could name a delta.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct ManifestV1 {
    name: String,
    size: u64,
    chunk_size: u32,
    mime: String,
    modified_unix: u64,
    mode: u32,
}

/// Transfer records before their manifest could name a delta (version 1).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(super) struct TransferRecordV1 {
    id: TransferId,
    direction: Direction,
    role: Role,
    peer: String,
    local_path: PathBuf,
    remote_path: String,
    partial_path: Option<PathBuf>,
    manifest: ManifestV1,
    seal_run: u32,
    sha256: Option<[u8; 32]>,
    status: TransferStatus,
    transport: String,
    chunks_total: u32,
    chunks_done: u32,
    created_unix: u64,
    completed_unix: Option<u64>,
    source: Option<SourceStamp>,
    error: Option<String>,
    priority: i64,
    no_compress: bool,
    overwrite: bool,
    faults: FaultCounters,
}

impl From<TransferRecordV1> for TransferRecord {
    fn from(v1: TransferRecordV1) -> TransferRecord {
        let m = v1.manifest;
        TransferRecord {
            id: v1.id,
            direction: v1.direction,
            role: v1.role,
            peer: v1.peer,
            local_path: v1.local_path,
            remote_path: v1.remote_path,
            partial_path: v1.partial_path,
            manifest: Manifest {
                name: m.name,
                size: m.size,
                chunk_size: m.chunk_size,
                mime: m.mime,
                modified_unix: m.modified_unix,
                mode: m.mode,
                delta: None,
            },
            secret: None,
            seal_run: v1.seal_run,
            sha256: v1.sha256,
            status: v1.status,
            transport: v1.transport,
            chunks_total: v1.chunks_total,
            chunks_done: v1.chunks_done,
            created_unix: v1.created_unix,
            completed_unix: v1.completed_unix,
            source: v1.source,
            error: v1.error,
            priority: v1.priority,
            no_compress: v1.no_compress,
            overwrite: v1.overwrite,
            faults: v1.faults,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    /// A home written before deltas opens with its transfers whole, and a
    /// transfer begun then keeps its manifest's hash (its chunks' binding),
    /// so it resumes.
    #[test]
    fn a_transfer_record_of_version_1_reads_whole_and_keeps_its_manifest_hash() {
        let v1 = TransferRecordV1 {
            id: TransferId([9; 16]),
            direction: Direction::Upload,
            role: Role::Sender,
            peer: "agent".into(),
            local_path: "/home/me/data.csv".into(),
            remote_path: "data.csv".into(),
            partial_path: None,
            manifest: ManifestV1 {
                name: "data.csv".into(),
                size: 1 << 20,
                chunk_size: 65536,
                mime: "text/csv".into(),
                modified_unix: 1_750_000_000,
                mode: 0o640,
            },
            seal_run: 3,
            sha256: Some([7; 32]),
            status: TransferStatus::InProgress,
            transport: "telegram:bot".into(),
            chunks_total: 16,
            chunks_done: 5,
            created_unix: 1_750_000_001,
            completed_unix: None,
            source: None,
            error: None,
            priority: 4,
            no_compress: false,
            overwrite: true,
            faults: FaultCounters::default(),
        };
        let old_hash = crate::crypto::sha256(&codec::encode("manifest", 1, &v1.manifest).unwrap());
        let bytes = codec::encode("transfer record", 1, &v1).unwrap();
        let rec = super::super::decode_record(&bytes).unwrap();
        assert_eq!(rec.id, TransferId([9; 16]));
        assert_eq!((rec.seal_run, rec.chunks_done, rec.priority), (3, 5, 4));
        assert_eq!(rec.manifest.delta, None);
        assert_eq!(rec.manifest.mode, 0o640);
        assert!(rec.overwrite);
        assert_eq!(rec.manifest.hash().unwrap(), old_hash);
        // Written back in the current shape, it reads the same.
        let again = codec::encode(
            "transfer record",
            super::super::TRANSFER_RECORD_VERSION,
            &rec,
        )
        .unwrap();
        assert_eq!(
            super::super::decode_record(&again).unwrap().manifest,
            rec.manifest
        );
    }
}
