//! [`Progress`]: the live state of one transfer that snapshots are made of.
//!
//! The transfer task writes it (briefly locked); the snapshot publisher
//! reads it. Front ends never see it, only the [`TransferView`] it becomes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use crate::bitmap::Bitmap;
use crate::store::TransferRecord;
use crate::view::{ChunkState, FaultCounters, TransferStatus, TransferView};

pub(crate) struct Progress {
    pub status: TransferStatus,
    pub size: u64,
    pub chunk_size: u32,
    pub chunks: Vec<u8>,
    pub done: u32,
    pub faults: FaultCounters,
    pub error: Option<String>,
    pub resumed: bool,
    /// Distinct chunks sent (sender) or received (receiver) in this run.
    pub this_run: Bitmap,
    samples: VecDeque<(Instant, u64)>,
    pub started: Instant,
    pub transport: String,
}

impl Progress {
    pub fn new(rec: &TransferRecord, held: Option<&Bitmap>, transport: String) -> Progress {
        let total = rec.chunks_total.max(1);
        let mut chunks = vec![ChunkState::Pending as u8; total as usize];
        let mut done = 0;
        if let Some(bits) = held {
            for i in 0..bits.len().min(total) {
                if bits.get(i) {
                    chunks[i as usize] = ChunkState::Acked as u8;
                    done += 1;
                }
            }
        }
        Progress {
            status: rec.status,
            size: rec.manifest.size,
            chunk_size: rec.manifest.chunk_size.max(1),
            chunks,
            done,
            faults: rec.faults,
            error: rec.error.clone(),
            resumed: false,
            this_run: Bitmap::new(total),
            samples: VecDeque::new(),
            started: Instant::now(),
            transport,
        }
    }

    /// Reset the map when the transfer's shape changes (a new manifest).
    pub fn reshape(&mut self, size: u64, chunk_size: u32, total: u32) {
        self.size = size;
        self.chunk_size = chunk_size.max(1);
        self.chunks = vec![ChunkState::Pending as u8; total.max(1) as usize];
        self.done = 0;
        self.this_run = Bitmap::new(total.max(1));
    }

    pub fn set(&mut self, index: u32, state: ChunkState) {
        let Some(&old) = self.chunks.get(index as usize) else {
            return;
        };
        let was = ChunkState::from_u8(old);
        if was == ChunkState::Acked && state != ChunkState::Acked {
            return;
        }
        self.chunks[index as usize] = state as u8;
        if was != ChunkState::Acked && state == ChunkState::Acked {
            self.done += 1;
            self.sample();
        }
    }

    /// A chunk counted as acknowledged turned out not to be held.
    pub fn chunks_reset(&mut self, index: u32) {
        if let Some(slot) = self.chunks.get_mut(index as usize) {
            if *slot == ChunkState::Acked as u8 {
                *slot = ChunkState::Pending as u8;
                self.done = self.done.saturating_sub(1);
            }
        }
    }

    pub fn bytes_done(&self) -> u64 {
        (u64::from(self.done) * u64::from(self.chunk_size)).min(self.size)
    }

    fn sample(&mut self) {
        let now = Instant::now();
        let bytes = self.bytes_done();
        if self
            .samples
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_millis(200))
        {
            self.samples.push_back((now, bytes));
        }
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(5))
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the last few seconds.
    pub fn rate(&self) -> f64 {
        if self.status != TransferStatus::InProgress {
            return 0.0;
        }
        let (Some((t0, b0)), Some(_)) = (self.samples.front(), self.samples.back()) else {
            return 0.0;
        };
        let secs = Instant::now().duration_since(*t0).as_secs_f64();
        if secs < 0.2 {
            return 0.0;
        }
        (self.bytes_done().saturating_sub(*b0)) as f64 / secs
    }

    pub fn view(&self, rec: &TransferRecord, map: Arc<[u8]>) -> TransferView {
        let rate = self.rate();
        let remaining = self.size.saturating_sub(self.bytes_done());
        TransferView {
            id: rec.id,
            direction: rec.direction,
            local_path: rec.local_path.display().to_string(),
            remote_path: rec.remote_path.clone(),
            peer: rec.peer.clone(),
            size: self.size,
            status: self.status,
            chunks_total: self.chunks.len() as u64,
            chunks_done: u64::from(self.done),
            bytes_done: self.bytes_done(),
            rate,
            eta: (rate > 1.0).then(|| Duration::from_secs_f64(remaining as f64 / rate)),
            transport: self.transport.clone(),
            priority: rec.priority,
            error: self.error.clone(),
            faults: self.faults,
            chunk_map: map,
            resumed: self.resumed,
            created_unix: rec.created_unix,
        }
    }
}
