//! Frames to messages and back: packing, fragmentation, base64, pacing.
//!
//! A [`Link`] wraps one [`Transport`]. Outgoing frames wait in a queue per
//! destination; when the destination's pace allows a message, the link
//! packs control frames first, then data frames, into one message filled to
//! the channel's limit, splitting the frame that does not fit into a
//! fragment that continues in the next message. On text channels the
//! message is spelled in the link's [`Alphabet`]: base64, or the dense
//! alphabet's 15 bits a character (`alphabet=dense`); the receiver reads
//! either, whichever it would send. A link set to dense that sees dense
//! text mangled on its channel sends base64 instead, and says so to its
//! peer ([`fallback`]).
//!
//! Pacing is a GCRA per destination on messages and on bytes, with no burst:
//! the provider's limits are never hit, and a provider's `retry_after` is
//! obeyed. Arriving messages are unpacked and fragments reassembled with
//! bounded memory ([`Reassembler`]).
//!
//! Message layout: `b"PG" ++ [version]` then records, each
//! `0x01 varint(len) frame`, `0x02 u64(frame id) varint(total)
//! varint(offset) varint(len) bytes` (a fragment of a control frame), or
//! `0x03 u64(transfer) varint(run) varint(index) varint(total)
//! varint(offset) varint(len) bytes` (a piece of a chunk's frame, named so
//! that pieces of two copies fit together: [`PieceKey`]).
//!
//! A chunk larger than one message (a transfer's chunks are sized for its
//! largest link) goes in pieces on a smaller link. The receiver keeps the
//! pieces of every copy in one [`Reassembler`] shared by the party's links
//! and says what it holds of a chunk not yet complete; a copy sent again
//! then carries only the rest ([`ChunkFrame::held`]): one lost message costs
//! one message, not the chunk.
//!
//! A transport's limits may change while the link runs
//! ([`Transport::limits`]: a Shipper server announces its own, and may
//! lower them): the link sizes, paces and reports by the latest. A message
//! the provider hands back as too large now ([`SendError::Shrunk`]) has its
//! records cut again into messages that fit ([`recut`]), nothing else
//! re-sent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::alphabet::Alphabet;
use crate::transport::{Address, Capabilities, Message, SendError, Transport};
use crate::view::{FaultCounters, LinkState, TransportHealth};

const MAGIC: &[u8; 2] = b"PG";
const LINK_VERSION: u8 = 1;
const HEADER_LEN: usize = 3;
const TAG_WHOLE: u8 = 1;
const TAG_FRAGMENT: u8 = 2;
const TAG_PIECE: u8 = 3;
/// A record with no body, first in a message: dense text arrives mangled
/// where this message comes from, send base64 ([`fallback`]).
const TAG_MANGLED: u8 = 4;
/// Worst-case record header of a whole frame: tag + varint length.
pub const WHOLE_RECORD_OVERHEAD: usize = 1 + 5;
/// Worst-case piece header: tag, transfer, five varints.
pub const PIECE_OVERHEAD: usize = 1 + 8 + 5 * 5;
/// Do not start a fragment or piece in less room than this.
pub(crate) const MIN_FRAGMENT_ROOM: usize = PIECE_OVERHEAD + 16;
/// Message size on channels with no pace: a 1 MiB chunk and its overheads.
const UNPACED_MESSAGE: usize = 1024 * 1024 + 256;
/// Most control frames waiting for one destination.
const MAX_CONTROL_QUEUE: usize = 1024;
/// Largest frame the link accepts from a peer.
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

/// Raw bytes one message carries for records: the channel's limit, or a
/// tenth of a minute's byte budget when that is smaller, so a channel with
/// a byte ceiling gets an even flow instead of one huge message a minute.
pub fn message_payload(caps: &Capabilities) -> usize {
    // Without a pace there is nothing to gain from packing big messages,
    // and much memory to lose: one chunk's worth is enough.
    let limit = match caps.messages_per_minute {
        None => caps.payload_bytes().min(UNPACED_MESSAGE),
        Some(_) => caps.payload_bytes(),
    };
    let paced = caps
        .bytes_per_minute
        .map_or(usize::MAX, |b| (b / 10).max(64 * 1024) as usize);
    limit.min(paced).saturating_sub(HEADER_LEN)
}

/// Which queue a frame waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Handshakes, offers, acknowledgements: small, go first.
    Control,
    /// Chunks.
    Data,
}

/// What the engine asks of a link's send loop.
enum Op {
    Send(Outgoing),
    /// A trusted peer is configured at this address ([`Transport::introduce`]).
    Introduce(Address),
    /// Leave message slots for the user ([`LinkHandle::reserve_slots`]).
    Reserve(Reserve),
    /// Dense text from this address arrives mangled: say so to it, in a
    /// message of its own if nothing else goes there soon, and only if the
    /// link has sent there before ([`fallback`]).
    Tell(Address),
}

/// `reserve=N/M`: of every M message slots to a destination, N carry no
/// bulk data (control frames and small transfers may use them): room for
/// the commands a user types in the same chat, under the platform's limit
/// per chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserve {
    pub free: u32,
    pub of: u32,
}

impl Reserve {
    /// `N/M`, with 0 < N < M.
    pub fn parse(spec: &str) -> std::result::Result<Reserve, String> {
        let (n, m) = spec
            .split_once('/')
            .ok_or_else(|| format!("reserve={spec:?}: expected N/M, e.g. reserve=1/3 (one message slot in three left free)"))?;
        let free: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("reserve={spec:?}: {n:?} is not a number"))?;
        let of: u32 = m
            .trim()
            .parse()
            .map_err(|_| format!("reserve={spec:?}: {m:?} is not a number"))?;
        if free == 0 || free >= of {
            return Err(format!(
                "reserve={spec:?}: N must be at least 1 and less than M (bulk data needs a slot)"
            ));
        }
        Ok(Reserve { free, of })
    }

    /// Bulk messages allowed in a window of M slots.
    pub(super) fn bulk(&self) -> usize {
        (self.of - self.free) as usize
    }
}

impl std::fmt::Display for Reserve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.free, self.of)
    }
}

struct Outgoing {
    to: Address,
    frame: Vec<u8>,
    class: Class,
    /// A newer control frame with the same key replaces a queued older one
    /// (acknowledgements carry the full state, so only the latest matters).
    coalesce: Option<[u8; 17]>,
    /// The chunk a data frame carries, told back if its message fails.
    chunk: Option<ChunkRef>,
    /// A chunk's name in pieces, and what of it the peer holds already.
    piece: Option<(PieceKey, Vec<(usize, usize)>)>,
    _permit: Option<OwnedSemaphorePermit>,
    /// A control frame that rides: it does not make a message leave by
    /// itself before this (two message intervals after it was queued), but
    /// goes in any message that leaves sooner ([`LinkHandle::send_riding`]).
    /// Set by the send loop from `ride`.
    ride_until: Option<Instant>,
    ride: bool,
}

/// A chunk's frame, for [`LinkHandle::send_reserved`].
pub struct ChunkFrame {
    pub frame: Vec<u8>,
    pub transfer: [u8; 16],
    /// The sealing run it was sealed in: with the index, what makes two
    /// copies the same bytes.
    pub run: u32,
    pub index: u32,
    /// Ranges of the frame the peer said it holds of an earlier copy: only
    /// the rest is sent.
    pub held: Vec<(usize, usize)>,
}

/// A chunk as the link knows it: its transfer's id and its index.
pub type ChunkRef = ([u8; 16], u32);

/// Most chunk references a link keeps for senders to collect.
const MAX_DROPPED: usize = 16 * 1024;

/// Counters the link and the engine both write, read for health.
#[derive(Default)]
pub struct LinkStats {
    pub errors: AtomicU64,
    pub corrupt: AtomicU64,
    pub duplicate: AtomicU64,
    pub reordered: AtomicU64,
    pub retransmitted: AtomicU64,
    /// Chunks sent on it that timed out or were found missing.
    pub lost: AtomicU64,
    pub retry_after_until_ms: AtomicU64,
    /// Per destination: whether data may go there ([`breaker::Breaker`]), whether
    /// answers sent there arrive ([`answers::Answers`]), the round trip.
    judges: Mutex<Judges>,
    /// Chunks whose message the provider did not take, for their senders
    /// to send again at once (not after their timers).
    dropped: Mutex<Vec<ChunkRef>>,
    /// Frames handed to the link, and taken into its queues.
    submitted: AtomicU64,
    taken: AtomicU64,
    /// Something is still queued for a destination.
    busy: std::sync::atomic::AtomicBool,
    recent: Mutex<Recent>,
    /// Whether dense text survives the channel ([`DenseWatch`]).
    dense: Mutex<DenseWatch>,
    /// Addresses an authenticated frame came from, newest last: only
    /// their messages judge the alphabet (anyone can write mangled-looking
    /// text into a chat, or a record saying ours arrives mangled).
    vouched: Mutex<VecDeque<Address>>,
    /// The protocol version of the last frame that came in another
    /// version than ours (0: none): a peer runs another pigeon release.
    other_version: std::sync::atomic::AtomicU8,
}

/// Most addresses a link remembers as vouched for (a peer or two each).
const MAX_VOUCHED: usize = 64;

#[derive(Default)]
struct Recent {
    /// Send times of the last minute's messages.
    sends: VecDeque<Instant>,
    /// Bytes sent per second, last 60 s: (second number, bytes).
    per_second: VecDeque<(u64, u64)>,
}

impl LinkStats {
    /// Whether a message from `from` may judge the alphabet: it came from
    /// an address a peer's authenticated frames came from, or from no
    /// address in particular (a spool's inbox, which only this machine's
    /// users can write).
    fn may_judge(&self, from: Option<&Address>) -> bool {
        from.is_none_or(|from| crate::task::lock(&self.vouched).contains(from))
    }

    fn record_send(&self, to: &Address, bytes: usize, started: Instant) {
        let now = Instant::now();
        self.judge(to, |j| j.breaker.sent(now));
        if let Ok(mut r) = self.recent.lock() {
            r.sends.push_back(now);
            while r
                .sends
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
            {
                r.sends.pop_front();
            }
            let sec = now.duration_since(started).as_secs();
            match r.per_second.back_mut() {
                Some((s, b)) if *s == sec => *b += bytes as u64,
                _ => r.per_second.push_back((sec, bytes as u64)),
            }
            while r.per_second.len() > 60 {
                r.per_second.pop_front();
            }
        }
    }

    /// The messages that carried `chunks` failed.
    fn dropped(&self, chunks: Vec<ChunkRef>) {
        if chunks.is_empty() {
            return;
        }
        let mut d = crate::task::lock(&self.dropped);
        // Bounded: the oldest go first (a transfer no longer running never
        // collects its own; a running one's timers still cover them).
        let over = (d.len() + chunks.len()).saturating_sub(MAX_DROPPED);
        let over = over.min(d.len());
        d.drain(..over);
        d.extend(chunks.into_iter().take(MAX_DROPPED));
    }

    /// A send to `to` failed (`permanent`: the provider will not take it
    /// as things are).
    pub(crate) fn send_failed(&self, to: &Address, permanent: bool) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let jitter = rand::random();
        self.judge(to, |j| {
            j.breaker.send_failed(Instant::now(), permanent, jitter)
        });
    }

    /// Until when nothing may be sent to `to`: its circuit is open for
    /// errors ([`breaker::Breaker::holds_sends_until`]).
    pub(crate) fn holds_sends_until(&self, to: &Address) -> Option<Instant> {
        crate::task::lock(&self.judges)
            .get(to)
            .and_then(|j| j.breaker.holds_sends_until())
    }

    fn judge<R>(&self, to: &Address, f: impl FnOnce(&mut Judge) -> R) -> R {
        f(crate::task::lock(&self.judges).of(to))
    }

    /// It sends base64 though set to dense ([`DenseWatch`]).
    pub fn falls_back(&self) -> bool {
        crate::task::lock(&self.dense).falls_back()
    }

    /// `caps` as this link sends by them: base64 once it fell back.
    fn sending(&self, mut caps: Capabilities) -> Capabilities {
        if caps.text_only && caps.alphabet == Alphabet::Dense && self.falls_back() {
            caps.alphabet = Alphabet::Base64;
        }
        caps
    }

    pub fn faults(&self) -> FaultCounters {
        FaultCounters {
            corrupt: self.corrupt.load(Ordering::Relaxed),
            duplicate: self.duplicate.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
            retransmitted: self.retransmitted.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }
}

/// The sending side of a link, cheap to clone.
#[derive(Clone)]
pub struct LinkHandle {
    tx: mpsc::UnboundedSender<Op>,
    data_budget: Arc<Semaphore>,
    /// The data budget's size, set at start.
    budget: usize,
    /// What the transport can carry now.
    caps: watch::Receiver<Capabilities>,
    describe: String,
    profile: String,
    pub stats: Arc<LinkStats>,
    health: Arc<crate::transport::Health>,
    started: Instant,
    /// Where arriving fragments and pieces are put together, shared by the
    /// party's links.
    pieces: Arc<Mutex<Reassembler>>,
    /// The bandwidth limits what it sends counts against.
    limits: Vec<Arc<Limiter>>,
    /// Its transport answers whoever writes
    /// ([`Transport::answers_whoever_writes`]).
    whoever: bool,
}

/// Bytes of data frames a link lets wait in its queues. Enough to fill two
/// messages, so a paced channel never waits for the engine when its turn
/// comes, and no more, so retransmission timers start close to the real
/// send. Counted in bytes: small compressed frames take only their size.
fn data_budget(caps: &Capabilities) -> usize {
    (2 * (message_payload(caps) + HEADER_LEN) + 1024).min(8 * 1024 * 1024)
}

/// What a data frame of `bytes` takes of the budget: its size, but at most
/// half of it, so that a frame larger than a message (a chunk sized for a
/// larger link) leaves room for the next one behind it, and the message
/// that carries its last piece is filled with the next chunk's first.
///
/// `budget` is the semaphore's size, set at start; `now` the budget the
/// channel's limits give now (smaller, when its provider lowered them):
/// each byte then costs `budget / now`, so the queue holds no more than
/// two of the smaller messages and timers still start near the real send.
fn frame_cost(budget: usize, now: usize, bytes: usize) -> u32 {
    let now = now.clamp(1, budget.max(1));
    (bytes.clamp(1, (now / 2).max(1)) as u64 * budget as u64 / now as u64) as u32
}

impl LinkHandle {
    /// What the transport can carry now (it may learn smaller limits
    /// while it runs).
    pub fn capabilities(&self) -> Capabilities {
        self.stats.sending(self.caps.borrow().clone())
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Shown as `uri` (the URI it was opened with, with what the link
    /// itself adds, as its `bwlimit=`), not only as its transport knows
    /// itself: a second command comparing its `--transport` with this one
    /// must see the same words for the same link.
    pub fn described_as(mut self, uri: String) -> LinkHandle {
        self.describe = uri;
        self
    }

    /// Problems the transport met that only the user can fix.
    pub fn problems(&self) -> Vec<String> {
        self.health.problems()
    }

    /// Queue a control frame. Never waits.
    pub fn send_control(&self, to: &Address, frame: Vec<u8>, coalesce: Option<[u8; 17]>) {
        self.queue_control(to, frame, coalesce, false);
    }

    /// Queue a control frame that rides: it goes in the next message that
    /// leaves for `to` anyway (data going the same way), or alone at most
    /// two message intervals from now. An acknowledgement of progress need
    /// not cost a message of its own on a channel where messages are
    /// scarce. Without a pace it goes at once.
    pub fn send_riding(&self, to: &Address, frame: Vec<u8>, coalesce: Option<[u8; 17]>) {
        self.queue_control(to, frame, coalesce, true);
    }

    fn queue_control(&self, to: &Address, frame: Vec<u8>, coalesce: Option<[u8; 17]>, ride: bool) {
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Op::Send(Outgoing {
            to: to.clone(),
            frame,
            class: Class::Control,
            coalesce,
            chunk: None,
            piece: None,
            _permit: None,
            ride_until: None,
            ride,
        }));
    }

    /// Wait for room for one data frame of `bytes` (cancel-safe: dropping
    /// the future reserves nothing).
    pub async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        let n = frame_cost(self.budget, self.budget_now(), bytes);
        self.data_budget
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the data budget semaphore is never closed")
    }

    /// Queue a chunk's frame in the room [`reserve`](Self::reserve) made;
    /// the room is given back when the frame has been packed into messages.
    /// Without a reservation, the frame is a small transfer's, no larger
    /// than a message: it goes ahead of bulk data, with the control frames
    /// (a small upload behind a large one must not wait for it).
    pub fn send_reserved(
        &self,
        to: &Address,
        chunk: ChunkFrame,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        let key = PieceKey::new(&chunk.transfer, chunk.run, chunk.index);
        let class = if permit.is_some() {
            Class::Data
        } else {
            Class::Control
        };
        let _ = self.tx.send(Op::Send(Outgoing {
            to: to.clone(),
            frame: chunk.frame,
            class,
            coalesce: None,
            chunk: Some((chunk.transfer, chunk.index)),
            piece: Some((key, chunk.held)),
            _permit: permit,
            ride_until: None,
            ride: false,
        }));
    }

    /// What this party holds of transfer `transfer`'s chunks that are not
    /// yet complete (the pieces every link of the party brought).
    pub fn held(&self, transfer: &[u8; 16]) -> Vec<Held> {
        crate::task::lock(&self.pieces).held(transfer)
    }

    /// Take the chunks of transfer `transfer` whose messages failed on
    /// this link since the last call.
    pub fn take_dropped(&self, transfer: &[u8; 16]) -> Vec<u32> {
        let mut d = crate::task::lock(&self.stats.dropped);
        if d.is_empty() {
            return vec![];
        }
        let mut mine = vec![];
        d.retain(|(t, i)| {
            let keep = t != transfer;
            if !keep {
                mine.push(*i);
            }
            keep
        });
        mine
    }

    /// An authenticated frame came from `from` on this link: what arrives
    /// from there may judge the channel's alphabet ([`fallback`]).
    pub fn vouch(&self, from: &Address) {
        let mut vouched = crate::task::lock(&self.stats.vouched);
        if let Some(at) = vouched.iter().position(|a| a == from) {
            if at + 1 == vouched.len() {
                return;
            }
            vouched.remove(at);
        }
        vouched.push_back(from.clone());
        if vouched.len() > MAX_VOUCHED {
            vouched.pop_front();
        }
    }

    /// A frame came on this link in protocol `version`, not ours: say
    /// once in the log, and in the link's health, what to do about it.
    pub fn saw_version(&self, version: u8) {
        let was = self.stats.other_version.swap(version, Ordering::Relaxed);
        if was != version {
            tracing::warn!(
                uri = %self.describe,
                "a message in pigeon protocol {version} arrived; this pigeon speaks {}: run one pigeon release on both sides (`pigeon --version`)",
                crate::crypto::PROTOCOL_VERSION
            );
        }
    }

    /// A trusted peer is configured at `to` on this link (peers.toml):
    /// messages to it may go before it has written.
    pub fn introduce(&self, to: &Address) {
        let _ = self.tx.send(Op::Introduce(to.clone()));
    }

    /// It reaches a peer only at an address the peer wrote from or the
    /// trust list gives ([`Transport::answers_whoever_writes`]).
    pub fn answers_whoever_writes(&self) -> bool {
        self.whoever
    }

    /// Of every `reserve.of` message slots to a destination, leave
    /// `reserve.free` to control frames and small transfers ([`Reserve`]).
    /// Nothing on a link without a message pace.
    pub fn reserve_slots(&self, reserve: Reserve) {
        let _ = self.tx.send(Op::Reserve(reserve));
    }

    /// The kind of transport: the URI's scheme (`telegram`, `local`, …).
    pub fn scheme(&self) -> &str {
        self.describe.split(':').next().unwrap_or_default()
    }

    /// Everything handed to this link has left in a message (or been
    /// superseded): nothing would be lost by stopping now.
    pub fn is_drained(&self) -> bool {
        self.stats.submitted.load(Ordering::Relaxed) == self.stats.taken.load(Ordering::Relaxed)
            && !self.stats.busy.load(Ordering::Relaxed)
    }

    /// The most bytes a second this link carries: its channel's pace and
    /// its bandwidth limits (None: neither, as fast as the transport goes).
    pub fn pace(&self) -> Option<f64> {
        let caps = &self.capabilities();
        let by_messages = caps
            .messages_per_minute
            .map(|m| f64::from(m) * message_payload(caps) as f64 / 60.0);
        let by_bytes = caps.bytes_per_minute.map(|b| b as f64 / 60.0);
        let limits = self
            .limits
            .iter()
            .filter_map(|l| l.rate_now())
            .map(|r| r as f64);
        by_messages
            .into_iter()
            .chain(by_bytes)
            .chain(limits)
            .min_by(f64::total_cmp)
    }

    /// How long this link takes to send a frame of `bytes` at its pace: a
    /// chunk in pieces on a text channel is many messages (zero unpaced).
    pub fn time_to_send(&self, bytes: usize) -> Duration {
        let caps = &self.capabilities();
        let messages = bytes.div_ceil(message_payload(caps).max(1)).max(1);
        let by_count = caps.messages_per_minute.map_or(Duration::ZERO, |m| {
            Duration::from_secs_f64(60.0 * messages as f64 / f64::from(m.max(1)))
        });
        let by_bytes = self.pace().map_or(Duration::ZERO, |r| {
            Duration::from_secs_f64(bytes as f64 / r.max(1.0))
        });
        by_count.max(by_bytes)
    }

    /// How long until this link has sent a frame of `bytes` given to it
    /// now, behind what its queue already holds.
    pub fn time_to_finish(&self, bytes: usize) -> Duration {
        let taken = self
            .budget
            .saturating_sub(self.data_budget.available_permits());
        let queued = self.in_bytes(taken);
        self.time_to_send(queued + bytes)
    }

    /// Free room in the data queue, in bytes.
    pub fn room(&self) -> usize {
        self.in_bytes(self.data_budget.available_permits())
    }

    /// The data budget the channel's limits give now (at most the one it
    /// started with).
    fn budget_now(&self) -> usize {
        data_budget(&self.capabilities()).min(self.budget)
    }

    /// `permits` of the data budget, in bytes as the limits are now.
    fn in_bytes(&self, permits: usize) -> usize {
        (permits as u64 * self.budget_now() as u64 / self.budget.max(1) as u64) as usize
    }

    /// Whether data may be handed to the link for `to` now: its circuit
    /// there is not open ([`breaker::Breaker`]).
    pub fn usable(&self, to: &Address) -> bool {
        self.stats
            .judge(to, |j| j.breaker.allows_data(Instant::now()))
    }

    /// Its circuits stay open at most `d` (a party's only link).
    pub fn cap_backoff(&self, d: Duration) {
        crate::task::lock(&self.stats.judges).cap_backoff(d);
    }

    /// How many times its circuit to `to` has opened.
    pub fn openings(&self, to: &Address) -> u64 {
        self.stats.judge(to, |j| j.breaker.openings())
    }

    /// Its circuit to `to` is closed and its last send there succeeded.
    pub fn clean(&self, to: &Address) -> bool {
        self.stats.judge(to, |j| j.breaker.clean())
    }

    /// When a send to `to` last failed, if one did.
    pub fn last_failed(&self, to: &Address) -> Option<Instant> {
        crate::task::lock(&self.stats.judges)
            .get(to)
            .and_then(|j| j.breaker.last_failed())
    }

    /// Room for a data frame of `bytes` now, if there is.
    pub fn try_reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let n = frame_cost(self.budget, self.budget_now(), bytes);
        self.data_budget.clone().try_acquire_many_owned(n).ok()
    }

    /// The peer at `to` asked again for what was answered on this link.
    pub fn answer_lost(&self, to: &Address) {
        self.stats.judge(to, |j| j.answers.lost(Instant::now()));
    }

    /// The peer at `to` moved on after answers on this link.
    pub fn answers_arrive(&self, to: &Address) {
        self.stats.judge(to, |j| j.answers.arrived());
    }

    /// Answers to `to` on it seem not to arrive: others go first for a
    /// while.
    pub fn doubted(&self, to: &Address) -> bool {
        self.stats.judge(to, |j| j.answers.doubted(Instant::now()))
    }

    /// A chunk that went (only) on this link to `to`, at `sent_at`, was
    /// acknowledged.
    pub fn delivered(&self, to: &Address, sent_at: Instant) {
        self.stats.judge(to, |j| j.breaker.delivered(sent_at));
    }

    /// A data frame for `to` was handed to the link: while its circuit
    /// there is half-open, that is the probe ([`breaker::Breaker::took_data`]).
    ///
    /// A probe of `bytes` is waited for as long as the link takes to send
    /// it behind what it holds, and a round trip twice over.
    pub fn took_data(&self, to: &Address, bytes: usize) {
        let rtt = self
            .rtt(to)
            .unwrap_or_else(|| self.capabilities().interval().unwrap_or_default() * 2);
        let wait = self.time_to_finish(bytes) + rtt * 2;
        self.stats
            .judge(to, |j| j.breaker.took_data(Instant::now(), wait));
    }

    /// A chunk sent on this link to `to` at `sent_at` timed out or was
    /// found missing. One sent before the circuit to `to` last opened is
    /// old news: it does not open it again while it is probed.
    pub fn lost(&self, to: &Address, sent_at: Instant) {
        self.stats.lost.fetch_add(1, Ordering::Relaxed);
        let jitter = rand::random();
        self.stats.judge(to, |j| {
            if !j.breaker.before_opening(sent_at) {
                j.breaker.lost(Instant::now(), jitter);
            }
        });
    }

    /// The round trip measured to `to`, if any.
    pub fn rtt(&self, to: &Address) -> Option<Duration> {
        crate::task::lock(&self.stats.judges)
            .get(to)
            .and_then(|j| j.rtt)
    }

    pub fn record_rtt(&self, to: &Address, rtt: Duration) {
        self.stats.judge(to, |j| j.rtt = Some(rtt));
    }

    pub fn health(&self) -> TransportHealth {
        let s = &self.stats;
        let now = Instant::now();
        let (messages_last_minute, throughput) = match s.recent.lock() {
            Ok(r) => {
                let n = r
                    .sends
                    .iter()
                    .filter(|t| now.duration_since(**t) <= Duration::from_secs(60))
                    .count() as u32;
                let current = now.duration_since(self.started).as_secs();
                let first = current.saturating_sub(59);
                let mut series = vec![0u64; (current - first + 1) as usize];
                for &(sec, b) in &r.per_second {
                    if sec >= first {
                        series[(sec - first) as usize] = b;
                    }
                }
                (n, series)
            }
            Err(_) => (0, vec![]),
        };
        let until = s.retry_after_until_ms.load(Ordering::Relaxed);
        let now_ms = now.duration_since(self.started).as_millis() as u64;
        let retry_after = (until > now_ms).then(|| Duration::from_millis(until - now_ms));
        let (breaker, rtt) = crate::task::lock(&s.judges).summary(now);
        let state = match breaker {
            breaker::State::Open { why, until } => LinkState::Open {
                silent: why == breaker::Why::Silent,
                retry_in: until.saturating_duration_since(now),
            },
            breaker::State::HalfOpen { .. } => LinkState::Probing,
            breaker::State::Closed => match retry_after {
                Some(wait) => LinkState::RateLimited { wait },
                None => LinkState::Up,
            },
        };
        let problems = self.problems();
        let set = self.caps.borrow().alphabet;
        let notes = match crate::task::lock(&s.dense).why() {
            Some(why) if set == Alphabet::Dense => vec![match why {
                fallback::Why::Mangled => "base64: dense text arrived mangled".to_string(),
                fallback::Why::Told => "base64: the peer got dense text mangled".to_string(),
            }],
            _ => vec![],
        };
        let mut notes = notes;
        match s.other_version.load(Ordering::Relaxed) {
            0 => {}
            v => notes.push(format!(
                "a peer speaks protocol {v}, this pigeon {}: run one release on both sides",
                crate::crypto::PROTOCOL_VERSION
            )),
        }
        TransportHealth {
            uri: self.describe.clone(),
            profile: self.profile.clone(),
            up: !matches!(state, LinkState::Open { .. }) && problems.is_empty(),
            state,
            share: None,
            rtt,
            throughput,
            messages_last_minute,
            messages_per_minute_limit: self.capabilities().messages_per_minute,
            errors: s.errors.load(Ordering::Relaxed),
            retry_after,
            faults: s.faults(),
            problems,
            notes,
        }
    }
}

/// A frame that arrived, with the index of the link it came by.
pub struct Inbound {
    pub frame: Vec<u8>,
    pub link: usize,
    /// Who sent the message that completed the frame, as the channel
    /// names them (learned as a reply address once the frame is
    /// authenticated).
    pub from: Option<Address>,
}

/// How much the party's links hold of frames not yet complete.
pub const REASSEMBLY_BUDGET: usize = 64 * 1024 * 1024;

/// A reassembler for a party's links to share ([`start`]).
pub fn shared_reassembler() -> Arc<Mutex<Reassembler>> {
    Arc::new(Mutex::new(Reassembler::new(REASSEMBLY_BUDGET)))
}

/// Start a link over `transport`: returns its handle; arriving frames go to
/// `inbound`, put together in `pieces` (shared by the party's links, so the
/// pieces of a chunk's copies fit together whichever link each took). What
/// it sends counts against every one of `limits` (the party's, shared by
/// its links, and the link's own).
pub fn start<T: Transport>(
    mut transport: T,
    profile: &str,
    index: usize,
    inbound: mpsc::Sender<Inbound>,
    limits: Vec<Arc<Limiter>>,
    pieces: Arc<Mutex<Reassembler>>,
) -> LinkHandle {
    let caps = transport.limits();
    let budget = data_budget(&caps.borrow());
    let stats = Arc::new(LinkStats::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let handle = LinkHandle {
        tx,
        data_budget: Arc::new(Semaphore::new(budget)),
        budget,
        caps,
        describe: transport.describe(),
        profile: profile.to_string(),
        stats: stats.clone(),
        health: transport.health(),
        started,
        pieces: pieces.clone(),
        limits: limits.clone(),
        whoever: transport.answers_whoever_writes(),
    };
    let incoming = transport.incoming();
    let about = Described {
        uri: handle.describe.clone(),
        alphabet: handle.caps.borrow().alphabet,
        // Weak: the send loop ends when the handles are gone, and the
        // transport it owns with it, which ends this loop.
        tell: handle.tx.downgrade(),
    };
    crate::task::spawn(receive_loop(
        incoming,
        index,
        inbound,
        stats.clone(),
        pieces,
        about,
    ));
    let health = transport.health();
    crate::task::spawn(send_loop(transport, rx, stats, health, started, limits));
    handle
}

/// What the receive loop says of its link in the log.
struct Described {
    uri: String,
    /// The alphabet it was set to send in.
    alphabet: Alphabet,
    /// Its send loop, to tell a peer its dense text arrives mangled.
    tell: mpsc::WeakUnboundedSender<Op>,
}

async fn receive_loop(
    mut incoming: mpsc::Receiver<crate::transport::Received>,
    index: usize,
    inbound: mpsc::Sender<Inbound>,
    stats: Arc<LinkStats>,
    pieces: Arc<Mutex<Reassembler>>,
    about: Described,
) {
    while let Some(crate::transport::Received { from, message }) = incoming.recv().await {
        let spelled = fallback::spelled_in(match &message {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        });
        let unpacked = link_bytes(message).map(|bytes| {
            let told = bytes.get(HEADER_LEN) == Some(&TAG_MANGLED);
            (told, unpack_owned(bytes, &mut crate::task::lock(&pieces)))
        });
        let whole = matches!(unpacked, Some((_, Ok(_))));
        let judges = stats.may_judge(from.as_ref());
        if let Some(alphabet) = spelled.filter(|_| judges) {
            let mut watch = crate::task::lock(&stats.dense);
            if watch.arrived(alphabet, whole, Instant::now()) {
                judged_mangled(&about, fallback::Why::Mangled);
            }
            let tell = watch.tells() && alphabet == Alphabet::Dense && !whole;
            drop(watch);
            if let (true, Some(from), Some(tx)) = (tell, &from, about.tell.upgrade()) {
                let _ = tx.send(Op::Tell(from.clone()));
            }
        }
        let frames = match unpacked {
            Some((told, Ok(frames))) => {
                if told && judges && crate::task::lock(&stats.dense).told() {
                    judged_mangled(&about, fallback::Why::Told);
                }
                frames
            }
            None | Some((_, Err(Malformed))) => {
                stats.corrupt.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        for frame in frames {
            let from = from.clone();
            if inbound
                .send(Inbound {
                    frame,
                    link: index,
                    from,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Say once in the log that the link at `about` judged dense text
/// mangled on its channel.
fn judged_mangled(about: &Described, why: fallback::Why) {
    let uri = &about.uri;
    match (why, about.alphabet) {
        (fallback::Why::Mangled, Alphabet::Dense) => tracing::warn!(
            %uri,
            "dense text arrives mangled on this channel: this link sends base64 from now on (alphabet=base64 would skip the trial)"
        ),
        (fallback::Why::Told, Alphabet::Dense) => tracing::warn!(
            %uri,
            "the peer says our dense text arrives mangled: this link sends base64 from now on (alphabet=base64 would skip the trial)"
        ),
        (fallback::Why::Mangled, Alphabet::Base64) => tracing::info!(
            %uri,
            "the peer's dense text arrives mangled on this channel: telling it to send base64"
        ),
        // It sends base64 already.
        (fallback::Why::Told, Alphabet::Base64) => {}
    }
}

/// A message's link bytes: as they came when they begin with the link's
/// header, else what their text spells in either alphabet (base64 is
/// ASCII, the dense alphabet never is: [`Alphabet::of`]), whatever kind of
/// message carried them (a text channel's sender spells them, a binary one
/// does not, on a shared spool each side may do either, and a peer may
/// send dense text to one that sends base64).
fn link_bytes(message: Message) -> Option<Vec<u8>> {
    let raw = message.into_bytes();
    if raw.starts_with(MAGIC) {
        return Some(raw);
    }
    let text = std::str::from_utf8(&raw).ok()?.trim();
    Alphabet::decode(text).ok().filter(|b| b.starts_with(MAGIC))
}

mod answers;
pub(crate) mod breaker;
pub(crate) mod fallback;
mod judge;
mod limit;
mod pace;
mod reassembly;
mod wire;

use fallback::DenseWatch;
use judge::{Judge, Judges};
pub use limit::Limiter;
use pace::*;
use reassembly::Key;
pub use reassembly::{Held, PieceKey, Reassembler};
#[cfg(test)]
pub use reassembly::{MAX_PIECES, PIECE_COST};
use wire::*;
pub use wire::{unpack, unpack_owned, Malformed};

#[cfg(test)]
mod tests;
