//! [`Progress`]: the live state of one transfer that snapshots are made of.
//!
//! A transfer task never writes it: it reports what happened as
//! [`Event`]s through its [`ProgressSink`], and [`Progress::apply`], a pure
//! fold of an event and the time, is the one place the state changes. The
//! fold runs as the event is reported (so a final report always counts
//! every event of the run), and the snapshot publisher reads the result.
//! Front ends never see it, only the [`TransferView`] it becomes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use crate::bitmap::Bitmap;
use crate::store::TransferRecord;
use crate::view::{ChunkState, FaultCounters, TransferStatus, TransferView};

/// In [`Progress::carried_by`]: no link has carried the chunk yet.
pub(crate) const NO_LINK: u8 = u8::MAX;

/// How far back a transfer's rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// What a transfer task reports about its chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// Chunk handed to link `link` (`retry`: again).
    Sent {
        index: u32,
        retry: bool,
        link: usize,
    },
    /// The receiver holds it (it may have held it before this run).
    Acked { index: u32 },
    /// Counted as acknowledged, but the receiver does not hold it.
    Lost { index: u32 },
    /// This side received and stored it; its last piece came on `link`.
    Received { index: u32, link: usize },
    /// What the channel did, as this side saw it.
    Fault(Fault),
    /// What the channel did on the way in, as the receiver saw it.
    Seen(FaultCounters),
    /// Part of the file was already there from an earlier run.
    Resumed,
    /// A new manifest: a new map.
    Reshaped {
        size: u64,
        chunk_size: u32,
        total: u32,
    },
    /// A run of the transfer starts: counters and this run's chunks afresh.
    RunStarted,
    /// The queue changed its status (paused, pending, cancelled...).
    Status(TransferStatus),
    /// The run ended so; a completed transfer holds every chunk.
    Ended {
        status: TransferStatus,
        error: Option<String>,
    },
}

/// One fault seen by this side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    Corrupt,
    Duplicate,
    Reordered,
}

impl Fault {
    /// Count it in `faults`.
    pub fn count(self, faults: &mut FaultCounters) {
        match self {
            Fault::Corrupt => faults.corrupt += 1,
            Fault::Duplicate => faults.duplicate += 1,
            Fault::Reordered => faults.reordered += 1,
        }
    }
}

/// Where a transfer task reports its events: folded at once into the
/// progress the node shows.
#[derive(Clone)]
pub(crate) struct ProgressSink(Arc<Mutex<Progress>>);

impl ProgressSink {
    pub fn new(progress: Progress) -> ProgressSink {
        ProgressSink(Arc::new(Mutex::new(progress)))
    }

    pub fn emit(&self, event: Event) {
        super::lock(&self.0).apply(event, Instant::now());
    }

    /// The progress, to read (snapshots, reports).
    pub fn read(&self) -> std::sync::MutexGuard<'_, Progress> {
        super::lock(&self.0)
    }
}

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
    /// The link that last carried each chunk ([`NO_LINK`]: none yet), for
    /// a chunk map coloured by link.
    pub carried_by: Vec<u8>,
    /// The links that carried any chunk of this run (one bit each).
    links_used: u64,
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
            carried_by: vec![NO_LINK; total as usize],
            links_used: 0,
            samples: VecDeque::new(),
            started: Instant::now(),
            transport,
        }
    }

    /// Fold one event, at `now`.
    pub fn apply(&mut self, event: Event, now: Instant) {
        match event {
            Event::Sent { index, retry, link } => {
                self.this_run.set(index);
                self.carried(index, link);
                if retry {
                    self.faults.retransmitted += 1;
                }
                let state = if retry {
                    ChunkState::Retried
                } else {
                    ChunkState::InFlight
                };
                self.set(index, state, now);
            }
            Event::Acked { index } => {
                // Held by the receiver before this run sent it: a resumption.
                if !self.this_run.get(index) {
                    self.resumed = true;
                }
                self.set(index, ChunkState::Acked, now);
            }
            Event::Lost { index } => self.chunks_reset(index),
            Event::Received { index, link } => {
                self.carried(index, link);
                self.set(index, ChunkState::Acked, now);
                self.this_run.set(index);
            }
            Event::Fault(f) => f.count(&mut self.faults),
            Event::Seen(seen) => self.faults.add(&seen),
            Event::Resumed => self.resumed = true,
            Event::Reshaped {
                size,
                chunk_size,
                total,
            } => self.reshape(size, chunk_size, total),
            Event::RunStarted => {
                self.status = TransferStatus::InProgress;
                self.started = now;
                self.error = None;
                self.faults = FaultCounters::default();
                self.this_run = Bitmap::new(self.this_run.len());
                self.links_used = 0;
                self.resumed = false;
                // Where the rate counts from: the first chunk of a run
                // already has a rate, not only the second.
                self.samples.clear();
                self.samples.push_back((now, self.bytes_done()));
            }
            Event::Status(status) => self.status = status,
            Event::Ended { status, error } => {
                self.status = status;
                self.error = error;
                if status == TransferStatus::Completed {
                    for i in 0..self.chunks.len() as u32 {
                        self.set(i, ChunkState::Acked, now);
                    }
                }
            }
        }
    }

    /// Reset the map when the transfer's shape changes (a new manifest).
    fn reshape(&mut self, size: u64, chunk_size: u32, total: u32) {
        self.size = size;
        self.chunk_size = chunk_size.max(1);
        self.chunks = vec![ChunkState::Pending as u8; total.max(1) as usize];
        self.done = 0;
        self.this_run = Bitmap::new(total.max(1));
        self.carried_by = vec![NO_LINK; total.max(1) as usize];
        self.links_used = 0;
    }

    fn carried(&mut self, index: u32, link: usize) {
        let Some(slot) = self.carried_by.get_mut(index as usize) else {
            return;
        };
        // Links past the 254th share the last mark: a map has few colours.
        *slot = link.min(usize::from(NO_LINK) - 1) as u8;
        self.links_used |= 1 << link.min(63);
    }

    /// Each chunk's link, when more than one link carried this run (empty
    /// otherwise: one link says nothing a map by state does not).
    pub fn chunk_links(&self) -> Arc<[u8]> {
        if self.links_used.count_ones() > 1 {
            Arc::from(self.carried_by.as_slice())
        } else {
            Arc::from(Vec::new())
        }
    }

    fn set(&mut self, index: u32, state: ChunkState, now: Instant) {
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
            self.sample(now);
        }
    }

    /// A chunk counted as acknowledged turned out not to be held.
    fn chunks_reset(&mut self, index: u32) {
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

    fn sample(&mut self, now: Instant) {
        let bytes = self.bytes_done();
        if self
            .samples
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_millis(200))
        {
            self.samples.push_back((now, bytes));
        }
        // Keep one sample from before the window: on a channel slower than
        // a chunk every few seconds the window would otherwise hold one
        // sample, and the rate read 0 while bytes moved.
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the last few seconds (from the last sample
    /// before them), falling as time passes with nothing acknowledged.
    fn rate_at(&self, now: Instant) -> f64 {
        if self.status != TransferStatus::InProgress {
            return 0.0;
        }
        let Some((t0, b0)) = self.samples.front() else {
            return 0.0;
        };
        let secs = now.duration_since(*t0).as_secs_f64();
        if secs < 0.2 {
            return 0.0;
        }
        (self.bytes_done().saturating_sub(*b0)) as f64 / secs
    }

    pub fn view(&self, rec: &TransferRecord, map: Arc<[u8]>) -> TransferView {
        self.view_at(rec, map, Instant::now())
    }

    fn view_at(&self, rec: &TransferRecord, map: Arc<[u8]>, now: Instant) -> TransferView {
        let rate = self.rate_at(now);
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
            chunk_links: self.chunk_links(),
            resumed: self.resumed,
            created_unix: rec.created_unix,
            // A delta's own hash is the protocol's business: the file's
            // is what a user compares.
            sha256: match rec.manifest.delta {
                Some(d) => Some(hex::encode(d.sha256)),
                None => rec.sha256.as_ref().map(hex::encode),
            },
            mime: rec.manifest.mime.clone(),
            delta_of: rec.manifest.delta.map(|d| d.size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Manifest;
    use crate::store::{NewTransfer, Role};
    use crate::view::{Direction, TransferId};

    /// A record of `chunks` chunks of 10 bytes.
    fn record(chunks: u32) -> TransferRecord {
        TransferRecord::begin(NewTransfer {
            id: TransferId::random(),
            direction: Direction::Upload,
            role: Role::Sender,
            peer: "agent",
            local_path: "/x".into(),
            remote_path: "x".into(),
            manifest: Manifest::sample("x", u64::from(chunks) * 10, 10),
            secret: None,
            transport: String::new(),
        })
    }

    fn progress(chunks: u32, held: &[u32]) -> Progress {
        let mut bits = Bitmap::new(chunks);
        for &i in held {
            bits.set(i);
        }
        Progress::new(&record(chunks), Some(&bits), "mem:t".into())
    }

    fn states(p: &Progress) -> Vec<ChunkState> {
        p.chunks.iter().map(|&c| ChunkState::from_u8(c)).collect()
    }

    /// On a channel slower than a chunk every five seconds the rate is
    /// still the bytes over the time, from the run's first chunk, and it
    /// falls while nothing more is acknowledged (it read 0 B/s before).
    #[test]
    fn a_slow_transfers_rate_is_current_and_falls_to_zero_when_nothing_moves() {
        let mut p = progress(100, &[]);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        p.apply(Event::RunStarted, t0);
        p.apply(
            Event::Sent {
                index: 0,
                retry: false,
                link: 0,
            },
            t0,
        );
        p.apply(Event::Acked { index: 0 }, at(6));
        assert!(
            (p.rate_at(at(6)) - 10.0 / 6.0).abs() < 1e-9,
            "{}",
            p.rate_at(at(6))
        );
        p.apply(Event::Acked { index: 1 }, at(12));
        p.apply(Event::Acked { index: 2 }, at(18));
        // From the last sample before the window (at 12 s) to now.
        assert!(
            (p.rate_at(at(18)) - 10.0 / 6.0).abs() < 1e-9,
            "{}",
            p.rate_at(at(18))
        );
        // Nothing more: the rate falls, toward zero.
        assert!(p.rate_at(at(600)) < 0.05, "{}", p.rate_at(at(600)));
        let view = p.view_at(&record(100), Arc::from(vec![].as_slice()), at(18));
        assert!(view.eta.is_some(), "a slow transfer has an ETA");
    }

    #[test]
    fn a_sending_run_folds_into_the_chunk_map_and_counters() {
        let t0 = Instant::now();
        let mut p = progress(3, &[]);
        p.apply(Event::RunStarted, t0);
        p.apply(
            Event::Sent {
                index: 0,
                retry: false,
                link: 0,
            },
            t0,
        );
        p.apply(
            Event::Sent {
                index: 1,
                retry: false,
                link: 0,
            },
            t0,
        );
        p.apply(
            Event::Sent {
                index: 1,
                retry: true,
                link: 0,
            },
            t0,
        );
        p.apply(Event::Acked { index: 0 }, t0);
        use ChunkState::*;
        assert_eq!(states(&p), [Acked, Retried, Pending]);
        assert_eq!((p.done, p.faults.retransmitted), (1, 1));
        assert!(!p.resumed, "every acknowledged chunk was sent by this run");
        // An acknowledgement never goes back to in flight.
        p.apply(
            Event::Sent {
                index: 0,
                retry: true,
                link: 0,
            },
            t0,
        );
        assert_eq!(states(&p)[0], Acked);
        // The receiver held less than it said: chunk 0 is to send again.
        p.apply(Event::Lost { index: 0 }, t0);
        assert_eq!((states(&p)[0], p.done), (Pending, 0));
        p.apply(
            Event::Ended {
                status: TransferStatus::Completed,
                error: None,
            },
            t0,
        );
        assert_eq!(states(&p), [Acked, Acked, Acked]);
        assert_eq!(p.bytes_done(), 30);
    }

    #[test]
    fn a_chunk_acknowledged_that_this_run_never_sent_is_a_resumption() {
        let t0 = Instant::now();
        let mut p = progress(4, &[0]);
        assert_eq!(p.done, 1, "what an earlier run left shows at once");
        p.apply(Event::RunStarted, t0);
        p.apply(Event::Acked { index: 2 }, t0);
        assert!(p.resumed);
        p.apply(Event::RunStarted, t0);
        assert!(!p.resumed && p.this_run.count() == 0 && p.faults == FaultCounters::default());
    }

    #[test]
    fn a_receiver_counts_what_it_stores_and_what_it_drops() {
        let t0 = Instant::now();
        let mut p = progress(2, &[]);
        p.apply(Event::Received { index: 1, link: 0 }, t0);
        p.apply(Event::Fault(Fault::Duplicate), t0);
        p.apply(Event::Fault(Fault::Corrupt), t0);
        p.apply(Event::Fault(Fault::Reordered), t0);
        assert_eq!((p.done, p.this_run.count()), (1, 1));
        assert_eq!(
            (p.faults.duplicate, p.faults.corrupt, p.faults.reordered),
            (1, 1, 1)
        );
        // A new manifest (the source changed): a new, empty map.
        p.apply(
            Event::Reshaped {
                size: 50,
                chunk_size: 10,
                total: 5,
            },
            t0,
        );
        assert_eq!((p.chunks.len(), p.done, p.this_run.count()), (5, 0, 0));
        p.apply(Event::Status(TransferStatus::Paused), t0);
        assert_eq!(p.status, TransferStatus::Paused);
    }

    /// Issue 28, item 6: each chunk's link is in the view once a second
    /// link carries one (a map by link says nothing with one).
    #[test]
    fn the_view_names_each_chunks_link_once_several_carry_them() {
        let t0 = Instant::now();
        let mut p = progress(3, &[]);
        p.apply(Event::RunStarted, t0);
        let sent = |index, link| Event::Sent {
            index,
            retry: false,
            link,
        };
        p.apply(sent(0, 1), t0);
        assert!(p.chunk_links().is_empty(), "one link so far");
        p.apply(sent(1, 0), t0);
        p.apply(sent(0, 2), t0);
        assert_eq!(&*p.chunk_links(), &[2, 0, NO_LINK]);
        let view = p.view_at(&record(3), Arc::from(vec![].as_slice()), t0);
        assert_eq!(&*view.chunk_links, &[2, 0, NO_LINK]);
        // A receiver marks the link a chunk came on.
        let mut r = progress(2, &[]);
        r.apply(Event::Received { index: 0, link: 3 }, t0);
        r.apply(Event::Received { index: 1, link: 0 }, t0);
        assert_eq!(&*r.chunk_links(), &[3, 0]);
    }
}
