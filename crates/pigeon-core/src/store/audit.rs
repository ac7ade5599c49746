//! The agent's audit log: one record per request, each chained to the one
//! before by its hash, so a record removed or rewritten is caught.

use serde::{Deserialize, Serialize};

use super::{migrate, now_unix, Store};
use crate::codec;
use crate::crypto;
use crate::error::{CoreError, Result};

/// One line of the agent's audit log, chained to the one before by hash.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: u64,
    pub prev: [u8; 32],
    pub time_unix: u64,
    pub peer: String,
    pub action: String,
    pub path: String,
    pub outcome: String,
    pub sha256: Option<String>,
    pub transport: String,
    /// The key the peer spoke with (its id, as `pigeon keys list` shows).
    pub key_id: Option<String>,
    /// The file's size, where the request has one.
    pub size: Option<u64>,
}

impl AuditRecord {
    /// A record of `peer` doing `action` on `path` with `outcome`; the
    /// store sets its place in the chain and its time.
    pub fn new(peer: &str, action: &str, path: &str, outcome: &str) -> AuditRecord {
        AuditRecord {
            seq: 0,
            prev: [0; 32],
            time_unix: 0,
            peer: peer.to_string(),
            action: action.to_string(),
            path: path.to_string(),
            outcome: outcome.to_string(),
            sha256: None,
            transport: String::new(),
            key_id: None,
            size: None,
        }
    }

    /// Decode one stored record, of either version.
    fn decode(bytes: &[u8]) -> Result<AuditRecord> {
        if bytes.first() == Some(&1) {
            let v1: migrate::AuditRecordV1 = codec::decode("audit record", 1, bytes)?;
            return Ok(AuditRecord {
                seq: v1.seq,
                prev: v1.prev,
                time_unix: v1.time_unix,
                sha256: v1.sha256,
                transport: v1.transport,
                ..AuditRecord::new(&v1.peer, &v1.action, &v1.path, &v1.outcome)
            });
        }
        codec::decode("audit record", AUDIT_VERSION, bytes)
    }
}

/// The audit record's shape (1: before key ids and sizes).
pub(super) const AUDIT_VERSION: u8 = 2;

impl Store {
    /// Append to the audit log, chaining this record to the previous one.
    pub fn audit(&self, mut rec: AuditRecord) -> Result<()> {
        let _one_at_a_time = self.audit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let last = self.audit.last()?;
        let (seq, prev) = match last {
            Some((k, v)) => {
                let seq = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])) + 1;
                (seq, crypto::sha256(&v))
            }
            None => (0, [0; 32]),
        };
        rec.seq = seq;
        rec.prev = prev;
        rec.time_unix = now_unix();
        self.audit.insert(
            seq.to_be_bytes(),
            codec::encode("audit record", AUDIT_VERSION, &rec)?,
        )?;
        Ok(())
    }

    /// The audit log, checking the chain: an error names the first broken link.
    pub fn audit_log(&self) -> Result<Vec<AuditRecord>> {
        let (records, broken) = self.audit_chain();
        match broken {
            Some(why) => Err(CoreError::Integrity(why)),
            None => Ok(records),
        }
    }

    /// The audit log as far as it verifies, and what is wrong with the
    /// first record that does not: one that does not decode, is out of
    /// sequence, or does not hold the hash of the one before (so a record
    /// changed, removed or inserted in the middle is named).
    pub fn audit_chain(&self) -> (Vec<AuditRecord>, Option<String>) {
        let mut out = vec![];
        let mut prev = [0u8; 32];
        for (n, item) in self.audit.iter().enumerate() {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => return (out, Some(format!("the audit log cannot be read: {e}"))),
            };
            let key = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0xff; 8]));
            let rec = match AuditRecord::decode(&v) {
                Ok(r) => r,
                Err(e) => {
                    return (
                        out,
                        Some(format!("audit record {key} does not decode ({e})")),
                    )
                }
            };
            if rec.seq != key || key != n as u64 {
                return (
                    out,
                    Some(format!(
                        "audit record {key} is out of place (sequence {}, expected {n}): records were removed or moved",
                        rec.seq
                    )),
                );
            }
            if rec.prev != prev {
                return (
                    out,
                    Some(format!(
                        "audit log altered at record {}: it does not hold the hash of record {} (one of the two was changed)",
                        rec.seq,
                        rec.seq.saturating_sub(1)
                    )),
                );
            }
            prev = crypto::sha256(&v);
            out.push(rec);
        }
        (out, None)
    }

    /// SHA-256 of the last audit record: note it elsewhere, and a log
    /// rewritten whole from there on is caught too.
    pub fn audit_head(&self) -> Option<[u8; 32]> {
        let (_, v) = self.audit.last().ok()??;
        Some(crypto::sha256(&v))
    }
}
