//! Frames to messages and back: packing, fragmentation, base64, pacing.
//!
//! A [`Link`] wraps one [`Transport`]. Outgoing frames wait in a queue per
//! destination; when the destination's pace allows a message, the link
//! packs control frames first, then data frames, into one message filled to
//! the channel's limit, splitting the frame that does not fit into a
//! fragment that continues in the next message. On text channels the
//! message is base64 (standard alphabet, no line breaks).
//!
//! Pacing is a GCRA per destination on messages and on bytes, with no burst:
//! the provider's limits are never hit, and a provider's `retry_after` is
//! obeyed. Arriving messages are unpacked and fragments reassembled with
//! bounded memory ([`Reassembler`]).
//!
//! Message layout: `b"PG" ++ [version]` then records, each
//! `0x01 varint(len) frame` or `0x02 u64(frame id) varint(total)
//! varint(offset) varint(len) bytes`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use base64::Engine as _;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::transport::{Address, Capabilities, Message, SendError, Transport};
use crate::view::{FaultCounters, TransportHealth};

const MAGIC: &[u8; 2] = b"PG";
const LINK_VERSION: u8 = 1;
const HEADER_LEN: usize = 3;
const TAG_WHOLE: u8 = 1;
const TAG_FRAGMENT: u8 = 2;
/// Worst-case record header of a whole frame: tag + varint length.
pub const WHOLE_RECORD_OVERHEAD: usize = 1 + 5;
/// Worst-case fragment header: tag, id, three varints.
const FRAGMENT_OVERHEAD: usize = 1 + 8 + 5 + 5 + 5;
/// Do not start a fragment in less room than this.
const MIN_FRAGMENT_ROOM: usize = FRAGMENT_OVERHEAD + 16;
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
}

struct Outgoing {
    to: Address,
    frame: Vec<u8>,
    class: Class,
    /// A newer control frame with the same key replaces a queued older one
    /// (acknowledgements carry the full state, so only the latest matters).
    coalesce: Option<[u8; 17]>,
    _permit: Option<OwnedSemaphorePermit>,
}

/// Counters the link and the engine both write, read for health.
#[derive(Default)]
pub struct LinkStats {
    pub errors: AtomicU64,
    pub corrupt: AtomicU64,
    pub duplicate: AtomicU64,
    pub reordered: AtomicU64,
    pub retransmitted: AtomicU64,
    pub rtt_micros: AtomicU64,
    pub retry_after_until_ms: AtomicU64,
    pub up: std::sync::atomic::AtomicBool,
    /// Frames handed to the link, and taken into its queues.
    submitted: AtomicU64,
    taken: AtomicU64,
    /// Something is still queued for a destination.
    busy: std::sync::atomic::AtomicBool,
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    /// Send times of the last minute's messages.
    sends: VecDeque<Instant>,
    /// Bytes sent per second, last 60 s: (second number, bytes).
    per_second: VecDeque<(u64, u64)>,
}

impl LinkStats {
    fn record_send(&self, bytes: usize, started: Instant) {
        self.up.store(true, Ordering::Relaxed);
        let now = Instant::now();
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

    pub fn faults(&self) -> FaultCounters {
        FaultCounters {
            corrupt: self.corrupt.load(Ordering::Relaxed),
            duplicate: self.duplicate.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
            retransmitted: self.retransmitted.load(Ordering::Relaxed),
        }
    }
}

/// The sending side of a link, cheap to clone.
#[derive(Clone)]
pub struct LinkHandle {
    tx: mpsc::UnboundedSender<Op>,
    data_budget: Arc<Semaphore>,
    caps: Capabilities,
    describe: String,
    profile: String,
    pub stats: Arc<LinkStats>,
    health: Arc<crate::transport::Health>,
    started: Instant,
}

/// Bytes of data frames a link lets wait in its queues. Enough to fill two
/// messages, so a paced channel never waits for the engine when its turn
/// comes, and no more, so retransmission timers start close to the real
/// send. Counted in bytes: small compressed frames take only their size.
fn data_budget(caps: &Capabilities) -> usize {
    (2 * (message_payload(caps) + HEADER_LEN) + 1024).min(8 * 1024 * 1024)
}

impl LinkHandle {
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Problems the transport met that only the user can fix.
    pub fn problems(&self) -> Vec<String> {
        self.health.problems()
    }

    /// Queue a control frame. Never waits.
    pub fn send_control(&self, to: &Address, frame: Vec<u8>, coalesce: Option<[u8; 17]>) {
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Op::Send(Outgoing {
            to: to.clone(),
            frame,
            class: Class::Control,
            coalesce,
            _permit: None,
        }));
    }

    /// Wait for room for one data frame of `bytes` (cancel-safe: dropping
    /// the future reserves nothing).
    pub async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        let n = bytes.clamp(1, data_budget(&self.caps)) as u32;
        self.data_budget
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the data budget semaphore is never closed")
    }

    /// Queue a data frame in the room [`reserve`](Self::reserve) made; the
    /// room is given back when the frame has been packed into a message.
    pub fn send_reserved(&self, to: &Address, frame: Vec<u8>, permit: OwnedSemaphorePermit) {
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Op::Send(Outgoing {
            to: to.clone(),
            frame,
            class: Class::Data,
            coalesce: None,
            _permit: Some(permit),
        }));
    }

    /// A trusted peer is configured at `to` on this link (peers.toml):
    /// messages to it may go before it has written.
    pub fn introduce(&self, to: &Address) {
        let _ = self.tx.send(Op::Introduce(to.clone()));
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

    /// Free room in the data queue, in bytes.
    pub fn room(&self) -> usize {
        self.data_budget.available_permits()
    }

    pub fn record_rtt(&self, rtt: Duration) {
        self.stats
            .rtt_micros
            .store(rtt.as_micros() as u64, Ordering::Relaxed);
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
        let rtt = s.rtt_micros.load(Ordering::Relaxed);
        let until = s.retry_after_until_ms.load(Ordering::Relaxed);
        let now_ms = now.duration_since(self.started).as_millis() as u64;
        TransportHealth {
            uri: self.describe.clone(),
            profile: self.profile.clone(),
            up: s.up.load(Ordering::Relaxed),
            rtt: (rtt > 0).then(|| Duration::from_micros(rtt)),
            throughput,
            messages_last_minute,
            messages_per_minute_limit: self.caps.messages_per_minute,
            errors: s.errors.load(Ordering::Relaxed),
            retry_after: (until > now_ms).then(|| Duration::from_millis(until - now_ms)),
            faults: s.faults(),
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

/// Start a link over `transport`: returns its handle; arriving frames go to
/// `inbound`.
pub fn start<T: Transport>(
    mut transport: T,
    profile: &str,
    index: usize,
    inbound: mpsc::Sender<Inbound>,
) -> LinkHandle {
    let caps = transport.capabilities().clone();
    let stats = Arc::new(LinkStats::default());
    stats.up.store(true, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let handle = LinkHandle {
        tx,
        data_budget: Arc::new(Semaphore::new(data_budget(&caps))),
        caps: caps.clone(),
        describe: transport.describe(),
        profile: profile.to_string(),
        stats: stats.clone(),
        health: transport.health(),
        started,
    };
    let incoming = transport.incoming();
    crate::task::spawn(receive_loop(incoming, index, inbound, stats.clone()));
    let health = transport.health();
    crate::task::spawn(send_loop(transport, rx, stats, health, started));
    handle
}

async fn receive_loop(
    mut incoming: mpsc::Receiver<crate::transport::Received>,
    index: usize,
    inbound: mpsc::Sender<Inbound>,
    stats: Arc<LinkStats>,
) {
    let mut reassembler = Reassembler::new(64 * 1024 * 1024);
    while let Some(crate::transport::Received { from, message }) = incoming.recv().await {
        let Some(bytes) = link_bytes(message) else {
            stats.corrupt.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let frames = match unpack_owned(bytes, &mut reassembler) {
            Ok(frames) => frames,
            Err(Malformed) => {
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

/// A message's link bytes: as they came when they begin with the link's
/// header, else their base64, whatever kind of message carried them (a
/// text channel's sender base64-encodes, a binary one does not, and on a
/// shared spool each side may use either).
fn link_bytes(message: Message) -> Option<Vec<u8>> {
    let raw = match message {
        Message::Text(s) => s.into_bytes(),
        Message::Binary(b) => b,
    };
    if raw.starts_with(MAGIC) {
        return Some(raw);
    }
    let text = std::str::from_utf8(&raw).ok()?.trim();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .filter(|b| b.starts_with(MAGIC))
}

/// Per-destination queue and pace.
struct Dest {
    control: VecDeque<Outgoing>,
    data: VecDeque<Outgoing>,
    /// The frame being split across messages: (id, bytes, next offset).
    partial: Option<(u64, Vec<u8>, usize, Option<OwnedSemaphorePermit>)>,
    data_bytes: usize,
    oldest: Option<Instant>,
    /// Earliest time the next message may go (message and byte pace).
    free_at: Instant,
    /// Messages the provider refused for now (rate limit), to send first.
    retry: VecDeque<Message>,
    /// Messages sent and not yet answered.
    in_flight: usize,
}

impl Dest {
    fn new() -> Dest {
        Dest {
            control: VecDeque::new(),
            data: VecDeque::new(),
            partial: None,
            data_bytes: 0,
            oldest: None,
            free_at: Instant::now(),
            retry: VecDeque::new(),
            in_flight: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.control.is_empty()
            && self.data.is_empty()
            && self.partial.is_none()
            && self.retry.is_empty()
    }

    fn pending_bytes(&self) -> usize {
        let partial = self
            .partial
            .as_ref()
            .map_or(0, |(_, f, off, _)| f.len() - off);
        self.data_bytes + partial + self.control.iter().map(|o| o.frame.len()).sum::<usize>()
    }
}

struct Pacer {
    interval: Option<Duration>,
    bytes_per_sec: Option<f64>,
    linger: Duration,
}

impl Pacer {
    fn new(caps: &Capabilities) -> Pacer {
        let interval = caps
            .messages_per_minute
            .map(|m| Duration::from_secs_f64(60.0 / f64::from(m.max(1))));
        let bytes_per_sec = caps.bytes_per_minute.map(|b| b as f64 / 60.0);
        // Wait a little for a message to fill only when messages are
        // scarce: a quarter of the interval, but long enough for a sender
        // that has just started (after an offer's answer) to prepare the
        // chunks that fill it, even on a busy machine.
        let linger = match interval {
            Some(i) => (i / 4).clamp(Duration::from_millis(25), Duration::from_millis(150)),
            None => Duration::ZERO,
        };
        Pacer {
            interval,
            bytes_per_sec,
            linger,
        }
    }

    /// Charge one message of `size` bytes sent at `now`.
    fn charge(&self, dest: &mut Dest, now: Instant, size: usize) {
        let start = dest.free_at.max(now);
        let by_count = self.interval.unwrap_or(Duration::ZERO);
        let by_bytes = self
            .bytes_per_sec
            .map_or(Duration::ZERO, |r| Duration::from_secs_f64(size as f64 / r));
        dest.free_at = start + by_count.max(by_bytes);
    }
}

/// Messages one link has on the wire at once. Sends run side by side, so
/// one hung HTTPS call (each transport bounds its own with a timeout) does
/// not stop the link, and a send's own duration never stretches the pace.
const MAX_IN_FLIGHT: usize = 4;

async fn send_loop<T: Transport>(
    transport: T,
    mut rx: mpsc::UnboundedReceiver<Op>,
    stats: Arc<LinkStats>,
    health: Arc<crate::transport::Health>,
    started: Instant,
) {
    let caps = transport.capabilities().clone();
    let pacer = Pacer::new(&caps);
    let capacity = message_payload(&caps);
    let mut dests: HashMap<Address, Dest> = HashMap::new();
    let mut next_frame_id: u64 = rand::random();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    loop {
        stats.busy.store(
            !in_flight.is_empty() || dests.values().any(|d| !d.is_empty()),
            Ordering::Relaxed,
        );
        // When could each destination send, and is it worth sending?
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        let mut ready: Option<Address> = None;
        for (addr, d) in &dests {
            if d.is_empty() || in_flight.len() >= MAX_IN_FLIGHT || (!caps.burst && d.in_flight > 0)
            {
                continue;
            }
            let full =
                d.pending_bytes() >= capacity || !d.control.is_empty() || !d.retry.is_empty();
            let linger_done = d.oldest.is_none_or(|t| t + pacer.linger <= now);
            let at = if full || linger_done {
                d.free_at
            } else {
                d.free_at.max(d.oldest.map_or(now, |t| t + pacer.linger))
            };
            if at <= now {
                ready = Some(addr.clone());
                break;
            }
            wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
        }
        if let Some(addr) = ready {
            let d = dests.get_mut(&addr).expect("address came from the map");
            let message = match d.retry.pop_front() {
                Some(m) => m,
                None => {
                    let bytes = pack(d, capacity, &mut next_frame_id);
                    if caps.text_only {
                        Message::Text(base64::engine::general_purpose::STANDARD.encode(&bytes))
                    } else {
                        Message::Binary(bytes)
                    }
                }
            };
            let size = message.len();
            let raw = if caps.text_only { size / 4 * 3 } else { size };
            // With bursts allowed the pace counts from when a message
            // leaves, so a send's own duration does not stretch it; without,
            // from its answer ([`Capabilities::burst`]).
            if caps.burst {
                pacer.charge(d, now, raw);
            }
            d.in_flight += 1;
            let transport = &transport;
            in_flight.push(async move {
                let outcome = transport.send(&addr, message).await;
                (addr, raw, outcome)
            });
            continue;
        }
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            op = rx.recv() => {
                let Some(op) = op else { break };
                let mut n = 0;
                // Take whatever else is already waiting before deciding.
                for op in std::iter::once(op).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                    match op {
                        Op::Send(out) => {
                            enqueue(dests.entry(out.to.clone()).or_insert_with(Dest::new), out);
                            n += 1;
                        }
                        Op::Introduce(to) => transport.introduce(&to),
                    }
                }
                stats.busy.store(true, Ordering::Relaxed);
                stats.taken.fetch_add(n, Ordering::Relaxed);
            }
            Some((addr, raw, outcome)) = futures::StreamExt::next(&mut in_flight) => {
                let d = dests.entry(addr).or_insert_with(Dest::new);
                d.in_flight -= 1;
                if !caps.burst && outcome.is_ok() {
                    pacer.charge(d, Instant::now(), raw);
                }
                sent(d, raw, outcome, &stats, &health, started);
            }
            () = sleep => {}
        }
    }
    // The engine is gone: let what is on the wire finish.
    while futures::StreamExt::next(&mut in_flight).await.is_some() {}
}

/// Take in the provider's answer to one message sent to `d`.
fn sent(
    d: &mut Dest,
    raw: usize,
    outcome: Result<(), SendError>,
    stats: &LinkStats,
    health: &crate::transport::Health,
    started: Instant,
) {
    match outcome {
        Ok(()) => {
            stats.record_send(raw, started);
            health.clear("send");
        }
        Err(SendError::RateLimited {
            retry_after,
            message,
        }) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            let retry_after = retry_after.min(crate::transport::http::MAX_WAIT);
            let until = Instant::now().duration_since(started) + retry_after;
            stats
                .retry_after_until_ms
                .fetch_max(until.as_millis() as u64, Ordering::Relaxed);
            d.free_at = d.free_at.max(Instant::now() + retry_after);
            // Sent again first, in the order they were refused.
            d.retry.push_back(message);
        }
        Err(SendError::Permanent(m)) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            stats.up.store(false, Ordering::Relaxed);
            health.problem("send", m);
            // Tried again now and then: the user may fix it.
            d.free_at = d.free_at.max(Instant::now() + Duration::from_secs(5));
        }
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            stats.up.store(false, Ordering::Relaxed);
            tracing::warn!(error = %e, size = raw, "transport send failed; the engine will retransmit");
            d.free_at = d.free_at.max(Instant::now() + Duration::from_millis(500));
        }
    }
}

fn enqueue(d: &mut Dest, out: Outgoing) {
    if d.oldest.is_none() {
        d.oldest = Some(Instant::now());
    }
    match out.class {
        Class::Control => {
            if let Some(key) = out.coalesce {
                if let Some(old) = d.control.iter_mut().find(|o| o.coalesce == Some(key)) {
                    *old = out;
                    return;
                }
            }
            // Bounded: a channel this far behind gets the newest frames
            // (every control frame is repeated or superseded by a later one).
            if d.control.len() >= MAX_CONTROL_QUEUE {
                d.control.pop_front();
            }
            d.control.push_back(out);
        }
        Class::Data => {
            d.data_bytes += out.frame.len();
            d.data.push_back(out);
        }
    }
}

/// Fill one message from `d`'s queues: control first, then the partial
/// frame, then data; the last frame that does not fit is split.
fn pack(d: &mut Dest, capacity: usize, next_id: &mut u64) -> Vec<u8> {
    let mut msg = Vec::with_capacity(capacity.min(4 * 1024 * 1024) + HEADER_LEN);
    msg.extend_from_slice(MAGIC);
    msg.push(LINK_VERSION);
    let limit = capacity + HEADER_LEN;
    // A partial frame goes first so it finishes as soon as possible.
    if let Some((id, frame, off, permit)) = d.partial.take() {
        let room = limit - msg.len();
        let rest = frame.len() - off;
        let take = rest.min(room.saturating_sub(FRAGMENT_OVERHEAD));
        put_fragment(&mut msg, id, frame.len(), off, &frame[off..off + take]);
        if off + take < frame.len() {
            d.partial = Some((id, frame, off + take, permit));
        }
    }
    loop {
        let from_control = !d.control.is_empty();
        let next = if from_control {
            d.control.front()
        } else {
            d.data.front()
        };
        let Some(next) = next else { break };
        if d.partial.is_some() {
            break;
        }
        let room = limit - msg.len();
        let need = next.frame.len() + WHOLE_RECORD_OVERHEAD;
        if need <= room {
            let out = pop(d, from_control);
            msg.push(TAG_WHOLE);
            put_varint(&mut msg, out.frame.len() as u64);
            msg.extend_from_slice(&out.frame);
            continue;
        }
        if room < MIN_FRAGMENT_ROOM {
            break;
        }
        let out = pop(d, from_control);
        *next_id = next_id.wrapping_add(1);
        let take = room - FRAGMENT_OVERHEAD;
        put_fragment(&mut msg, *next_id, out.frame.len(), 0, &out.frame[..take]);
        d.partial = Some((*next_id, out.frame, take, out._permit));
        break;
    }
    d.oldest = if d.is_empty() {
        None
    } else {
        Some(Instant::now())
    };
    msg
}

fn pop(d: &mut Dest, control: bool) -> Outgoing {
    if control {
        d.control.pop_front().expect("checked non-empty")
    } else {
        let out = d.data.pop_front().expect("checked non-empty");
        d.data_bytes -= out.frame.len();
        out
    }
}

fn put_fragment(msg: &mut Vec<u8>, id: u64, total: usize, offset: usize, part: &[u8]) {
    msg.push(TAG_FRAGMENT);
    msg.extend_from_slice(&id.to_be_bytes());
    put_varint(msg, total as u64);
    put_varint(msg, offset as u64);
    put_varint(msg, part.len() as u64);
    msg.extend_from_slice(part);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, Malformed> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(Malformed)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Malformed)
}

/// A message that is not a well-formed link message (corrupted in
/// transit, or not pigeon's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// [`unpack`], reusing the message's buffer when it holds exactly one whole
/// frame (a chunk on an unpaced link): no copy of a megabyte.
pub fn unpack_owned(
    mut buf: Vec<u8>,
    reassembler: &mut Reassembler,
) -> Result<Vec<Vec<u8>>, Malformed> {
    if buf.len() > HEADER_LEN + 1
        && buf[HEADER_LEN] == TAG_WHOLE
        && &buf[..2] == MAGIC
        && buf[2] == LINK_VERSION
    {
        let mut pos = HEADER_LEN + 1;
        if let Ok(len) = get_varint(&buf, &mut pos) {
            if pos.checked_add(len as usize) == Some(buf.len()) {
                buf.drain(..pos);
                return Ok(vec![buf]);
            }
        }
    }
    unpack(&buf, reassembler)
}

/// Split a message into the frames it completes.
pub fn unpack(buf: &[u8], reassembler: &mut Reassembler) -> Result<Vec<Vec<u8>>, Malformed> {
    if buf.len() < HEADER_LEN || &buf[..2] != MAGIC || buf[2] != LINK_VERSION {
        return Err(Malformed);
    }
    let mut pos = HEADER_LEN;
    let mut frames = vec![];
    while pos < buf.len() {
        let tag = buf[pos];
        pos += 1;
        match tag {
            TAG_WHOLE => {
                let len = get_varint(buf, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= buf.len())
                    .ok_or(Malformed)?;
                frames.push(buf[pos..end].to_vec());
                pos = end;
            }
            TAG_FRAGMENT => {
                let id_bytes: [u8; 8] = buf
                    .get(pos..pos + 8)
                    .ok_or(Malformed)?
                    .try_into()
                    .map_err(|_| Malformed)?;
                pos += 8;
                let total = get_varint(buf, &mut pos)? as usize;
                let offset = get_varint(buf, &mut pos)? as usize;
                let len = get_varint(buf, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= buf.len())
                    .ok_or(Malformed)?;
                if let Some(frame) =
                    reassembler.add(u64::from_be_bytes(id_bytes), total, offset, &buf[pos..end])?
                {
                    frames.push(frame);
                }
                pos = end;
            }
            _ => return Err(Malformed),
        }
    }
    Ok(frames)
}

/// Puts fragmented frames back together with bounded memory and time,
/// whatever arrives (fragments are not authenticated: anyone who can post
/// to the channel can send them).
///
/// Bounds, all charged before anything is kept:
/// - memory: the bytes actually received plus [`PIECE_COST`] per piece,
///   within `budget` in all (nothing is allocated for a frame's declared
///   size until it is complete); the oldest partial frame is dropped to
///   make room (its sender retransmits);
/// - pieces: at most [`MAX_PIECES`] per frame (a real sender's fragments
///   fill whole messages: a frame of 8 MiB over 4 KB messages is 2,000);
/// - time: O(log n) per fragment, amortised: the received ranges are kept
///   merged, and each range is merged away at most once.
pub struct Reassembler {
    budget: usize,
    used: usize,
    partials: HashMap<u64, Partial>,
    order: VecDeque<u64>,
    done: HashSet<u64>,
    done_order: VecDeque<u64>,
    /// Ranges visited, for the tests that prove the time bound.
    steps: u64,
}

/// What a piece costs besides its bytes (map node, vector header).
pub const PIECE_COST: usize = 64;
/// Most pieces one frame may arrive in.
pub const MAX_PIECES: usize = 4096;

struct Partial {
    total: usize,
    /// Received bytes by offset; pieces never overlap.
    pieces: BTreeMap<usize, Vec<u8>>,
    /// The received ranges, merged: start -> end.
    covered: BTreeMap<usize, usize>,
    have: usize,
    cost: usize,
    started: Instant,
}

impl Reassembler {
    const TIMEOUT: Duration = Duration::from_secs(600);
    const REMEMBER_DONE: usize = 4096;

    pub fn new(budget: usize) -> Reassembler {
        Reassembler {
            budget,
            used: 0,
            partials: HashMap::new(),
            order: VecDeque::new(),
            done: HashSet::new(),
            done_order: VecDeque::new(),
            steps: 0,
        }
    }

    /// Add a fragment; returns the whole frame when this completes it.
    pub fn add(
        &mut self,
        id: u64,
        total: usize,
        offset: usize,
        part: &[u8],
    ) -> Result<Option<Vec<u8>>, Malformed> {
        let end = offset.checked_add(part.len()).ok_or(Malformed)?;
        if total > MAX_FRAME || end > total {
            return Err(Malformed);
        }
        if self.done.contains(&id) {
            return Ok(None);
        }
        self.expire();
        let p = match self.partials.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.order.push_back(id);
                e.insert(Partial {
                    total,
                    pieces: BTreeMap::new(),
                    covered: BTreeMap::new(),
                    have: 0,
                    cost: 0,
                    started: Instant::now(),
                })
            }
        };
        if p.total != total {
            return Err(Malformed);
        }
        let gaps = cover(&mut p.covered, offset, end, &mut self.steps);
        let mut added = 0;
        for (s, e) in gaps {
            p.pieces.insert(s, part[s - offset..e - offset].to_vec());
            p.have += e - s;
            added += e - s + PIECE_COST;
        }
        p.cost += added;
        self.used += added;
        if p.pieces.len() > MAX_PIECES {
            self.drop_partial(id);
            return Err(Malformed);
        }
        if p.have == total {
            let p = self.take(id).expect("present");
            let mut frame = Vec::with_capacity(total);
            for piece in p.pieces.into_values() {
                frame.extend_from_slice(&piece);
            }
            self.done.insert(id);
            self.done_order.push_back(id);
            if self.done_order.len() > Self::REMEMBER_DONE {
                if let Some(old) = self.done_order.pop_front() {
                    self.done.remove(&old);
                }
            }
            return Ok(Some(frame));
        }
        // Over budget: the oldest partial frames go first (this one last).
        while self.used > self.budget {
            match self.order.pop_front() {
                Some(old) if old == id && !self.order.is_empty() => self.order.push_back(old),
                Some(old) => self.drop_partial(old),
                None => {
                    self.drop_partial(id);
                    break;
                }
            }
        }
        Ok(None)
    }

    /// Remove a partial frame. Its id stays in `order` until it reaches the
    /// front (no linear search); `order` is compacted when stale ids
    /// outnumber live ones.
    fn take(&mut self, id: u64) -> Option<Partial> {
        let p = self.partials.remove(&id)?;
        self.used -= p.cost;
        if self.order.len() > 2 * self.partials.len() + 64 {
            let live = &self.partials;
            self.order.retain(|o| live.contains_key(o));
        }
        Some(p)
    }

    fn drop_partial(&mut self, id: u64) {
        self.take(id);
    }

    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&id) = self.order.front() {
            let stale = self
                .partials
                .get(&id)
                .is_none_or(|p| now.duration_since(p.started) > Self::TIMEOUT);
            if !stale {
                break;
            }
            self.order.pop_front();
            if let Some(p) = self.partials.remove(&id) {
                self.used -= p.cost;
            }
        }
    }

    /// Bytes held for partial frames, overheads included.
    pub fn bytes_held(&self) -> usize {
        self.used
    }

    /// Received ranges visited so far (the work the time bound is about).
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// Add `[start, end)` to the merged ranges in `covered`; returns the parts
/// of it that were not covered before. Each range it visits is merged into
/// the new one and removed, so the work is amortised O(log n).
fn cover(
    covered: &mut BTreeMap<usize, usize>,
    start: usize,
    end: usize,
    steps: &mut u64,
) -> Vec<(usize, usize)> {
    if start == end {
        return vec![];
    }
    let mut lo = start;
    let mut hi = end;
    // A range that starts before `start` and reaches it.
    if let Some((&s, &e)) = covered.range(..start).next_back() {
        if e >= start {
            lo = s;
            hi = hi.max(e);
        }
    }
    let mut gaps = vec![];
    let mut cursor = start;
    if lo < start {
        cursor = covered[&lo].min(end).max(start);
    }
    let touching: Vec<(usize, usize)> = covered.range(lo..=end).map(|(&s, &e)| (s, e)).collect();
    for (s, e) in touching {
        *steps += 1;
        if s > cursor && cursor < end {
            gaps.push((cursor, s.min(end)));
        }
        cursor = cursor.max(e.min(end));
        hi = hi.max(e);
        covered.remove(&s);
    }
    if cursor < end {
        gaps.push((cursor, end));
    }
    covered.insert(lo, hi);
    gaps
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn out(frame: Vec<u8>, class: Class) -> Outgoing {
        Outgoing {
            to: "x".into(),
            frame,
            class,
            coalesce: None,
            _permit: None,
        }
    }

    /// Pack everything queued into messages of `capacity`.
    fn pack_all(frames: &[Vec<u8>], capacity: usize) -> Vec<Vec<u8>> {
        let mut d = Dest::new();
        for f in frames {
            enqueue(&mut d, out(f.clone(), Class::Data));
        }
        let mut id = 0;
        let mut msgs = vec![];
        while !d.is_empty() {
            msgs.push(pack(&mut d, capacity, &mut id));
        }
        msgs
    }

    #[test]
    fn messages_are_filled_to_the_limit() {
        let frames: Vec<Vec<u8>> = (0..50).map(|i| vec![i as u8; 700]).collect();
        let msgs = pack_all(&frames, 3069);
        for m in &msgs[..msgs.len() - 1] {
            assert!(m.len() <= 3072);
            assert!(m.len() as f64 >= 0.95 * 3072.0, "{}", m.len());
        }
    }

    #[test]
    fn control_frames_replace_older_ones_with_the_same_key() {
        let mut d = Dest::new();
        let mut a = out(vec![1], Class::Control);
        a.coalesce = Some([1; 17]);
        let mut b = out(vec![2], Class::Control);
        b.coalesce = Some([1; 17]);
        enqueue(&mut d, a);
        enqueue(&mut d, b);
        assert_eq!(d.control.len(), 1);
        assert_eq!(d.control[0].frame, vec![2]);
    }

    proptest! {
        #[test]
        fn any_frames_survive_packing_shuffling_and_duplication(
            sizes in proptest::collection::vec(0usize..9000, 1..30),
            capacity in 200usize..5000,
            seed in any::<u64>(),
        ) {
            use rand::{seq::SliceRandom, SeedableRng};
            let frames: Vec<Vec<u8>> = sizes.iter().enumerate()
                .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect()).collect();
            let mut msgs = pack_all(&frames, capacity);
            for m in &msgs { prop_assert!(m.len() <= capacity + HEADER_LEN); }
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let dups: Vec<_> = msgs.iter().step_by(3).cloned().collect();
            msgs.extend(dups);
            msgs.shuffle(&mut rng);
            let mut r = Reassembler::new(64 * 1024 * 1024);
            let mut got: Vec<Vec<u8>> = vec![];
            for m in &msgs { got.extend(unpack(m, &mut r).unwrap()); }
            got.sort();
            got.dedup();
            let mut want = frames.clone();
            want.sort();
            want.dedup();
            prop_assert_eq!(got, want);
            prop_assert_eq!(r.bytes_held(), 0);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut r = Reassembler::new(1024 * 1024);
            let mut with_header = b"PG\x01".to_vec();
            with_header.extend_from_slice(&bytes);
            let _ = unpack(&bytes, &mut r);
            let _ = unpack(&with_header, &mut r);
        }
    }

    #[test]
    fn overlapping_and_duplicate_fragments_rebuild_the_frame_exactly() {
        let frame: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut r = Reassembler::new(1 << 20);
        let parts = [
            (5000, 9000),
            (0, 10),
            (5, 3000),
            (2000, 6000),
            (0, 10),
            (8999, 10_000),
        ];
        let mut out = None;
        for (i, &(s, e)) in parts.iter().enumerate() {
            let got = r.add(1, frame.len(), s, &frame[s..e]).unwrap();
            if i + 1 < parts.len() {
                assert!(got.is_none(), "complete too early at {i}");
            }
            out = got;
        }
        assert_eq!(out.unwrap(), frame);
        assert_eq!(r.bytes_held(), 0);
        // A late copy of a finished frame is ignored.
        assert!(r.add(1, frame.len(), 0, &frame[..10]).unwrap().is_none());
    }

    proptest! {
        #[test]
        fn any_fragments_rebuild_the_frame_exactly_when_they_cover_it(
            total in 1usize..400,
            parts in proptest::collection::vec((0usize..400, 0usize..120), 1..60),
        ) {
            let frame: Vec<u8> = (0..total).map(|i| (i * 31 + 7) as u8).collect();
            let mut r = Reassembler::new(1 << 20);
            let mut covered = vec![false; total];
            let mut done = None;
            for (start, len) in parts {
                let start = start % total;
                let end = (start + len).min(total);
                let got = r.add(5, total, start, &frame[start..end]).unwrap();
                for c in &mut covered[start..end] {
                    *c = true;
                }
                if done.is_some() {
                    prop_assert!(got.is_none());
                    continue;
                }
                let all = covered.iter().all(|&c| c);
                prop_assert_eq!(got.is_some(), all, "complete exactly when covered");
                if let Some(f) = got {
                    prop_assert_eq!(&f, &frame);
                    done = Some(f);
                }
            }
        }
    }

    #[test]
    fn what_is_held_is_exactly_the_bytes_received_and_their_pieces() {
        // The bound below is only worth something if the accounting is
        // the real cost: pin it to what was actually kept.
        let mut r = Reassembler::new(1 << 20);
        r.add(1, 100_000, 0, &[1; 10]).unwrap();
        r.add(1, 100_000, 50, &[1; 20]).unwrap();
        assert_eq!(r.bytes_held(), 30 + 2 * PIECE_COST);
        // Overlaps and repeats add only what is new.
        r.add(1, 100_000, 5, &[1; 50]).unwrap();
        assert_eq!(r.bytes_held(), 30 + 40 + 3 * PIECE_COST);
        r.add(1, 100_000, 0, &[1; 70]).unwrap();
        assert_eq!(r.bytes_held(), 70 + 3 * PIECE_COST);
        r.add(2, 100, 0, &[2; 10]).unwrap();
        assert_eq!(r.bytes_held(), 80 + 4 * PIECE_COST);
        // A completed frame gives back all it held.
        assert!(r.add(2, 100, 10, &[2; 90]).unwrap().is_some());
        assert_eq!(r.bytes_held(), 70 + 3 * PIECE_COST);
    }

    #[test]
    fn forty_thousand_one_byte_fragments_cost_flat_time_and_memory() {
        // Unauthenticated input: a frame declared at the largest size sent
        // one byte at a time, every other byte, then covered whole, over and
        // over. The work per fragment stays constant, memory within budget,
        // and nothing of the declared 8 MiB is allocated.
        let budget = 1 << 20;
        let mut r = Reassembler::new(budget);
        let mut worst = 0u64;
        for k in 0..40_000usize {
            let before = r.steps();
            let id = (k / 3000) as u64;
            let offset = (k % 3000) * 2;
            let _ = r.add(id, MAX_FRAME, offset, &[1]);
            let _ = r.add(id, MAX_FRAME, 0, &[2; 512]);
            worst = worst.max(r.steps() - before);
            assert!(r.bytes_held() <= budget, "{} held", r.bytes_held());
        }
        assert!(worst <= 8, "one fragment visited {worst} ranges");
        // More pieces than a frame may have: that frame is dropped.
        let mut r = Reassembler::new(64 << 20);
        let mut refused = false;
        for k in 0..(MAX_PIECES + 10) {
            refused |= r.add(9, MAX_FRAME, k * 2, &[1]).is_err();
        }
        assert!(refused, "a frame in more than {MAX_PIECES} pieces was kept");
        assert!(r.bytes_held() < (MAX_PIECES + 10) * (PIECE_COST + 1));
    }

    #[test]
    fn reassembly_memory_is_bounded() {
        let mut r = Reassembler::new(10_000);
        for id in 0..100u64 {
            r.add(id, 4000, 0, &[0; 10]).unwrap();
            assert!(r.bytes_held() <= 10_000);
        }
        assert!(r.add(1, MAX_FRAME + 1, 0, &[0]).is_err());
    }

    #[test]
    fn pacing_holds_messages_and_bytes_per_minute() {
        let caps = Capabilities {
            max_message: 4096,
            text_only: true,
            messages_per_minute: Some(60),
            bytes_per_minute: Some(60_000),
            burst: false,
        };
        let pacer = Pacer::new(&caps);
        let mut d = Dest::new();
        let t0 = Instant::now();
        d.free_at = t0;
        pacer.charge(&mut d, t0, 100);
        assert_eq!(d.free_at - t0, Duration::from_secs(1));
        pacer.charge(&mut d, t0, 3000);
        // 3000 bytes at 1000 B/s take 3 s, more than the 1 s message pace.
        assert_eq!(d.free_at - t0, Duration::from_secs(4));
    }

    /// A channel whose sends take as long as the test says, and that tells
    /// the test when each one started.
    struct Slow {
        caps: Capabilities,
        started: mpsc::UnboundedSender<(Address, Instant)>,
        delay: fn(&Address) -> Option<Duration>,
    }

    impl Transport for Slow {
        fn capabilities(&self) -> &Capabilities {
            &self.caps
        }
        fn describe(&self) -> String {
            "slow:".into()
        }
        async fn send(&self, to: &Address, _: Message) -> Result<(), SendError> {
            let _ = self.started.send((to.clone(), Instant::now()));
            match (self.delay)(to) {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
            Ok(())
        }
        fn incoming(&mut self) -> mpsc::Receiver<crate::transport::Received> {
            mpsc::channel(1).1
        }
        fn health(&self) -> Arc<crate::transport::Health> {
            Arc::default()
        }
    }

    fn slow_link(
        per_minute: Option<u32>,
        burst: bool,
        delay: fn(&Address) -> Option<Duration>,
    ) -> (LinkHandle, mpsc::UnboundedReceiver<(Address, Instant)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let transport = Slow {
            caps: Capabilities {
                max_message: 4096,
                text_only: false,
                messages_per_minute: per_minute,
                bytes_per_minute: None,
                burst,
            },
            started: tx,
            delay,
        };
        let (inbound, _) = mpsc::channel(1);
        (start(transport, "slow", 0, inbound), rx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_send_does_not_stop_the_link() {
        // Every send to "stuck" hangs for ever; the others take 10 ms.
        // A channel without bursts: one message at a time per destination,
        // but a destination whose call hangs holds up only itself.
        let (link, mut started) = slow_link(Some(6000), false, |to| {
            (to != "stuck").then_some(Duration::from_millis(10))
        });
        link.send_control(&"stuck".to_string(), vec![1; 10], None);
        assert_eq!(started.recv().await.unwrap().0, "stuck");
        for _ in 0..3 {
            link.send_control(&"peer".to_string(), vec![2; 10], None);
            let (to, _) = tokio::time::timeout(Duration::from_secs(1), started.recv())
                .await
                .expect("the link sent on while one call hung")
                .unwrap();
            assert_eq!(to, "peer");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_slower_than_the_pace_does_not_stretch_it() {
        // 600 messages a minute (one per 100 ms), each send taking 80 ms:
        // twenty messages leave on the pace's 100 ms grid, not every 180 ms.
        let (link, mut started) = slow_link(Some(600), true, |_| Some(Duration::from_millis(80)));
        let t0 = Instant::now();
        let mut at = vec![];
        for _ in 0..20 {
            link.send_control(&"peer".to_string(), vec![3; 10], None);
            at.push(started.recv().await.unwrap().1 - t0);
        }
        let last = *at.last().unwrap();
        assert!(
            last >= Duration::from_millis(1900) && last < Duration::from_millis(2000),
            "20 messages at 600 a minute took {last:?}: {at:?}"
        );
        for pair in at.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(99),
                "too close: {at:?}"
            );
        }
    }
}
