//! Per-destination queues, packing into messages, and the pace they leave at.

use super::*;

/// Per-destination queue and pace.
pub(super) struct Dest {
    pub(super) control: VecDeque<Outgoing>,
    pub(super) data: VecDeque<Outgoing>,
    /// The frame being split across messages: (id, bytes, next offset).
    pub(super) partial: Option<Partial>,
    pub(super) data_bytes: usize,
    pub(super) oldest: Option<Instant>,
    /// Earliest time the next message may go (message and byte pace).
    pub(super) free_at: Instant,
    /// Messages the provider refused for now (rate limit), to send first,
    /// with the chunks they carry.
    pub(super) retry: VecDeque<(Message, Vec<ChunkRef>)>,
    /// Messages sent and not yet answered.
    pub(super) in_flight: usize,
    /// Messages packed so far: each one's number, so that the failure of
    /// the one that began the partial frame can be told ([`Dest::failed`]).
    pub(super) packed: u64,
    /// When messages that carried bulk data left, within the last
    /// reserve window ([`Reserve`]).
    pub(super) bulk_sent: VecDeque<Instant>,
    /// Whether the last message packed carried bulk data.
    pub(super) last_bulk: bool,
    /// A message must go to say that dense text from there arrives
    /// mangled, though nothing else waits ([`Op::Tell`]).
    pub(super) tell_due: bool,
    /// When a message last said so.
    pub(super) told_at: Option<Instant>,
}

/// The frame being split across messages.
pub(super) struct Partial {
    pub(super) key: Key,
    pub(super) frame: Vec<u8>,
    /// The ranges still to send, in order (all of the frame, or what the
    /// peer said it lacks).
    pub(super) todo: VecDeque<(usize, usize)>,
    pub(super) chunk: Option<ChunkRef>,
    pub(super) _permit: Option<OwnedSemaphorePermit>,
    /// The number of the message its first fragment went in.
    pub(super) begun_in: u64,
    /// It came from the data queue: bulk.
    pub(super) bulk: bool,
}

impl Partial {
    fn left(&self) -> usize {
        self.todo.iter().map(|(s, e)| e - s).sum()
    }
}

/// The ranges of `0..len` not in `held` (merged, in order), or all of it
/// when that would be nothing (a peer that holds every byte would have had
/// the frame).
pub(super) fn missing(held: &[(usize, usize)], len: usize) -> VecDeque<(usize, usize)> {
    let mut todo = VecDeque::new();
    let mut at = 0;
    let mut held: Vec<(usize, usize)> = held
        .iter()
        .map(|&(s, e)| (s.min(len), e.min(len)))
        .filter(|(s, e)| s < e)
        .collect();
    held.sort_unstable();
    for (s, e) in held {
        if s > at {
            todo.push_back((at, s));
        }
        at = at.max(e);
    }
    if at < len {
        todo.push_back((at, len));
    }
    if todo.is_empty() {
        todo.push_back((0, len));
    }
    todo
}

impl Dest {
    pub(super) fn new() -> Dest {
        Dest {
            control: VecDeque::new(),
            data: VecDeque::new(),
            partial: None,
            data_bytes: 0,
            oldest: None,
            free_at: Instant::now(),
            retry: VecDeque::new(),
            in_flight: 0,
            packed: 0,
            bulk_sent: VecDeque::new(),
            last_bulk: false,
            tell_due: false,
            told_at: None,
        }
    }

    /// Whether a message leaving at `now` may carry bulk data under
    /// `reserve` (slots of `interval`); if not, when it may.
    pub(super) fn bulk_allowed(
        &mut self,
        reserve: Option<Reserve>,
        interval: Option<Duration>,
        now: Instant,
    ) -> Result<(), Instant> {
        let (Some(reserve), Some(interval)) = (reserve, interval) else {
            return Ok(());
        };
        let window = interval * reserve.of;
        while self
            .bulk_sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.bulk_sent.pop_front();
        }
        if self.bulk_sent.len() < reserve.bulk() {
            return Ok(());
        }
        Err(self.bulk_sent[self.bulk_sent.len() - reserve.bulk()] + window)
    }

    /// Message `number` failed. If it began the frame still being split,
    /// the rest of that frame is not sent: without its first fragment the
    /// peer can never put it together (a control frame), or its sender
    /// sends it again whole at once (a chunk, told back as dropped), and
    /// the rest would only take messages from what can still arrive.
    pub(super) fn failed(&mut self, number: u64) {
        if number != 0 && self.partial.as_ref().is_some_and(|p| p.begun_in == number) {
            self.partial = None;
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.control.is_empty()
            && self.data.is_empty()
            && self.partial.is_none()
            && self.retry.is_empty()
            && !self.tell_due
    }

    /// Whether a message without bulk data would carry the first control
    /// frame: it fits whole, or no bulk frame is being split (a second
    /// frame cannot start in pieces beside it). Else a slot kept free of
    /// bulk would go out empty.
    pub(super) fn control_goes_beside_bulk(&self, capacity: usize) -> bool {
        let bulk_split = self.partial.as_ref().is_some_and(|p| p.bulk);
        let fits = self.control.front().is_some_and(|o| {
            o.piece.as_ref().is_none_or(|(_, held)| held.is_empty())
                && o.frame.len() + WHOLE_RECORD_OVERHEAD <= capacity
        });
        !bulk_split || fits
    }

    /// When only riding control frames wait (no data, nothing split, no
    /// message to send again, no other control frame): the earliest time
    /// one of them must leave.
    pub(super) fn riders_only(&self) -> Option<Instant> {
        if !self.data.is_empty()
            || self.partial.is_some()
            || !self.retry.is_empty()
            || self.tell_due
        {
            return None;
        }
        let mut earliest: Option<Instant> = None;
        for o in &self.control {
            let until = o.ride_until?;
            earliest = Some(earliest.map_or(until, |e| e.min(until)));
        }
        earliest
    }

    pub(super) fn pending_bytes(&self) -> usize {
        let partial = self.partial.as_ref().map_or(0, Partial::left);
        self.data_bytes + partial + self.control.iter().map(|o| o.frame.len()).sum::<usize>()
    }
}

pub(super) struct Pacer {
    pub(super) interval: Option<Duration>,
    pub(super) bytes_per_sec: Option<f64>,
    pub(super) linger: Duration,
}

impl Pacer {
    pub(super) fn new(caps: &Capabilities) -> Pacer {
        let interval = caps.interval();
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
    pub(super) fn charge(&self, dest: &mut Dest, now: Instant, size: usize) {
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
pub(super) const MAX_IN_FLIGHT: usize = 4;

pub(super) async fn send_loop<T: Transport>(
    transport: T,
    mut rx: mpsc::UnboundedReceiver<Op>,
    stats: Arc<LinkStats>,
    health: Arc<crate::transport::Health>,
    started: Instant,
    limits: Vec<Arc<Limiter>>,
) {
    let mut limits_now = transport.limits();
    let mut falls_back = stats.falls_back();
    let mut caps = stats.sending(limits_now.borrow_and_update().clone());
    let mut pacer = Pacer::new(&caps);
    let mut capacity = message_payload(&caps);
    let mut dests: HashMap<Address, Dest> = HashMap::new();
    let mut next_frame_id: u64 = rand::random();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut reserve: Option<Reserve> = None;
    loop {
        // The provider's limits, as the transport knows them now, in the
        // alphabet the link sends (base64 once dense text was found
        // mangled: [`fallback`]): the next message is cut and paced by
        // them. Messages already cut for dense go as base64 recut smaller.
        if limits_now.has_changed().unwrap_or(false) || stats.falls_back() != falls_back {
            falls_back = stats.falls_back();
            caps = stats.sending(limits_now.borrow_and_update().clone());
            pacer = Pacer::new(&caps);
            capacity = message_payload(&caps);
        }
        stats.busy.store(
            !in_flight.is_empty() || dests.values().any(|d| !d.is_empty()),
            Ordering::Relaxed,
        );
        // When could each destination send, and is it worth sending?
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        let mut ready: Option<(Address, bool)> = None;
        // The bandwidth limits: the party's over all its links, the link's own.
        let limited = limits.iter().map(|l| l.free_at()).max();
        for (addr, d) in dests.iter_mut() {
            if d.is_empty() || in_flight.len() >= MAX_IN_FLIGHT || (!caps.burst && d.in_flight > 0)
            {
                continue;
            }
            // A slot kept free for the user (`reserve=`): no bulk data in
            // it; what else waits may go.
            let held_for_user = d.bulk_allowed(reserve, pacer.interval, now).err();
            let full = d.pending_bytes() >= capacity
                || d.control.iter().any(|o| o.ride_until.is_none())
                || !d.retry.is_empty()
                || d.tell_due;
            let linger_done = d.oldest.is_none_or(|t| t + pacer.linger <= now);
            let at = if let Some(free) = held_for_user.filter(|_| d.retry.is_empty()) {
                let due = d.control.iter().filter_map(|o| o.ride_until).min();
                if d.tell_due
                    || (d.control.iter().any(|o| o.ride_until.is_none())
                        && d.control_goes_beside_bulk(capacity))
                {
                    d.free_at
                } else {
                    // Only bulk, or frames that ride: at the earlier of the
                    // next slot bulk may take and their time.
                    d.free_at.max(due.map_or(free, |due| due.min(free)))
                }
            } else if let Some(until) = d.riders_only() {
                // Only frames that ride: they leave alone at their time.
                d.free_at.max(until)
            } else if full || linger_done {
                d.free_at
            } else {
                d.free_at.max(d.oldest.map_or(now, |t| t + pacer.linger))
            };
            // A circuit open for errors to this destination sends it
            // nothing until it is probed.
            let gate = stats.holds_sends_until(addr).max(limited);
            let at = gate.map_or(at, |g| at.max(g));
            if at <= now {
                ready = Some((addr.clone(), held_for_user.is_none()));
                break;
            }
            wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
        }
        if let Some((addr, bulk)) = ready {
            let d = dests.get_mut(&addr).expect("address came from the map");
            // Its number: a message sent again after a provider's refusal
            // has none (0), its records may have been cut anew.
            let (message, chunks, number) = match d.retry.pop_front() {
                // Refused for now when the provider took larger messages.
                Some((m, chunks)) if link_size(&m) > capacity + HEADER_LEN => {
                    if let Err(chunks) =
                        requeue_smaller(d, m, chunks, capacity, &caps, &mut next_frame_id)
                    {
                        stats.send_failed(&addr, false);
                        stats.dropped(chunks);
                    }
                    continue;
                }
                // Spelled dense before the link fell back: the same bytes in
                // base64 (too large for a message now, they were cut above).
                Some((Message::Text(text), chunks))
                    if caps.alphabet == Alphabet::Base64
                        && Alphabet::of(&text) == Alphabet::Dense =>
                {
                    match Alphabet::decode(&text) {
                        Ok(bytes) => (to_message(bytes, &caps), chunks, 0),
                        Err(_) => (Message::Text(text), chunks, 0),
                    }
                }
                Some((m, chunks)) => (m, chunks, 0),
                None => {
                    // Telling the peer its dense text arrives mangled takes
                    // one byte, first in the message.
                    let tell = crate::task::lock(&stats.dense).tells();
                    let room = capacity.saturating_sub(usize::from(tell));
                    let (mut bytes, chunks) = pack_as(d, room, &mut next_frame_id, bulk);
                    if d.last_bulk && reserve.is_some() {
                        d.bulk_sent.push_back(now);
                    }
                    d.tell_due = false;
                    if tell {
                        bytes.insert(HEADER_LEN, TAG_MANGLED);
                        d.told_at = Some(now);
                    }
                    let spelled = spelling(&caps, !chunks.is_empty(), bytes.len());
                    (to_message(bytes, &spelled), chunks, d.packed)
                }
            };
            let raw = link_size(&message);
            // With bursts allowed the pace counts from when a message
            // leaves, so a send's own duration does not stretch it; without,
            // from its answer ([`Capabilities::burst`]).
            if caps.burst {
                pacer.charge(d, now, raw);
            }
            d.in_flight += 1;
            for l in &limits {
                l.charge(raw, now);
            }
            let transport = &transport;
            in_flight.push(async move {
                let outcome = transport.send(&addr, message).await;
                (
                    addr,
                    Carried {
                        raw,
                        chunks,
                        number,
                    },
                    outcome,
                )
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
                        Op::Send(mut out) => {
                            if out.ride {
                                let wait = pacer.interval.map_or(Duration::ZERO, |i| i * 2);
                                out.ride_until = Some(Instant::now() + wait);
                            }
                            enqueue(dests.entry(out.to.clone()).or_insert_with(Dest::new), out);
                            n += 1;
                        }
                        Op::Introduce(to) => transport.introduce(&to),
                        Op::Reserve(r) => reserve = Some(r),
                        // Only where it has sent before: a mangled message's
                        // sender is not authenticated, and is no reason to
                        // write to a stranger.
                        Op::Tell(to) => {
                            if let Some(d) = dests.get_mut(&to) {
                                let now = Instant::now();
                                d.tell_due |= d.told_at.is_none_or(|t| now.duration_since(t) >= TELL_GAP);
                            }
                        }
                    }
                }
                stats.busy.store(true, Ordering::Relaxed);
                stats.taken.fetch_add(n, Ordering::Relaxed);
            }
            Some((addr, carried, outcome)) = futures::StreamExt::next(&mut in_flight) => {
                let d = dests.entry(addr.clone()).or_insert_with(Dest::new);
                d.in_flight -= 1;
                if !caps.burst && outcome.is_ok() {
                    pacer.charge(d, Instant::now(), carried.raw);
                }
                let cut = Cut { capacity, caps: &caps };
                sent(&addr, d, carried, outcome, &stats, &health, started, cut, &mut next_frame_id);
            }
            () = sleep => {}
        }
    }
    // The engine is gone: let what is on the wire finish.
    while futures::StreamExt::next(&mut in_flight).await.is_some() {}
}

/// How messages are cut now: the room for records in one, on a channel
/// of these capabilities.
pub(super) struct Cut<'a> {
    pub(super) capacity: usize,
    pub(super) caps: &'a Capabilities,
}

/// What one message on the wire carried.
pub(super) struct Carried {
    /// Its size in link bytes.
    pub(super) raw: usize,
    pub(super) chunks: Vec<ChunkRef>,
    /// Its number ([`Dest::packed`]), 0 when sent again.
    pub(super) number: u64,
}

/// Take in the provider's answer to one message sent to `to`, whose
/// queue is `d`.
#[allow(clippy::too_many_arguments)]
pub(super) fn sent(
    to: &Address,
    d: &mut Dest,
    carried: Carried,
    outcome: Result<(), SendError>,
    stats: &LinkStats,
    health: &crate::transport::Health,
    started: Instant,
    cut: Cut<'_>,
    next_id: &mut u64,
) {
    let Carried {
        raw,
        chunks,
        number,
    } = carried;
    match outcome {
        Ok(()) => {
            stats.record_send(to, raw, started);
            health.clear("send");
        }
        Err(SendError::Shrunk { limit, message, .. }) => {
            // Not a failure either: the provider takes smaller messages
            // now. The records are cut again to its limit (as the
            // transport says it now; the limit it named, if smaller) and
            // go first, so nothing waits for a retransmission timer.
            stats.errors.fetch_add(1, Ordering::Relaxed);
            let named = Capabilities {
                max_message: limit,
                ..cut.caps.clone()
            };
            let capacity = cut.capacity.min(message_payload(&named));
            if let Err(chunks) = requeue_smaller(d, message, chunks, capacity, cut.caps, next_id) {
                stats.send_failed(to, false);
                stats.dropped(chunks);
                d.failed(number);
            }
        }
        Err(SendError::RateLimited {
            retry_after,
            message,
        }) => {
            // Not a failure: the provider is there, and said when.
            stats.errors.fetch_add(1, Ordering::Relaxed);
            let retry_after = retry_after.min(crate::transport::http::MAX_WAIT);
            let until = Instant::now().duration_since(started) + retry_after;
            stats
                .retry_after_until_ms
                .fetch_max(until.as_millis() as u64, Ordering::Relaxed);
            d.free_at = d.free_at.max(Instant::now() + retry_after);
            // Sent again first, in the order they were refused.
            d.retry.push_back((message, chunks));
        }
        Err(SendError::Permanent(m)) => {
            stats.send_failed(to, true);
            stats.dropped(chunks);
            d.failed(number);
            health.problem("send", m);
            // Tried again now and then: the user may fix it.
            d.free_at = d.free_at.max(Instant::now() + Duration::from_secs(5));
        }
        Err(e) => {
            stats.send_failed(to, false);
            stats.dropped(chunks);
            d.failed(number);
            tracing::warn!(error = %e, size = raw, "transport send failed; the engine will retransmit");
            // Never sooner than the pace or a provider's wait allows.
            d.free_at = d.free_at.max(Instant::now() + Duration::from_millis(500));
        }
    }
}

/// At most one message a destination this often only to say that its
/// dense text arrives mangled (other messages say it too).
pub(super) const TELL_GAP: Duration = Duration::from_secs(30);

/// How a message of `bytes` packed for a channel of `caps` is spelled: in
/// its alphabet, except that a dense link spells a message with no chunk
/// in it (handshakes, offers, acknowledgements: small) in base64 when it
/// fits. They cost little more so, and get through a platform that
/// mangles dense text: the handshake is made, and the peer can say that
/// our dense messages arrive mangled ([`fallback`]).
pub(super) fn spelling(caps: &Capabilities, carries_data: bool, bytes: usize) -> Capabilities {
    let base64 = Capabilities {
        alphabet: Alphabet::Base64,
        ..caps.clone()
    };
    if caps.alphabet == Alphabet::Dense && !carries_data && bytes <= base64.payload_bytes() {
        base64
    } else {
        caps.clone()
    }
}

/// `bytes` as a message of the channel's kind: text in its alphabet, or
/// as they are.
pub(super) fn to_message(bytes: Vec<u8>, caps: &Capabilities) -> Message {
    if caps.text_only {
        Message::Text(caps.alphabet.encode(&bytes))
    } else {
        Message::Binary(bytes)
    }
}

/// A message's size in link bytes, whichever alphabet spelled a text (a
/// message refused for now keeps the alphabet it was written in).
pub(super) fn link_size(message: &Message) -> usize {
    match message {
        Message::Text(text) => Alphabet::spelled_len(text),
        Message::Binary(bytes) => bytes.len(),
    }
}

/// Put `message`'s records back at the front of `d`'s queue, cut again into
/// messages of `capacity` record bytes. A message that cannot be cut (not
/// the link's, or a room too small for a piece) gives its chunks back: it
/// failed as any send would.
pub(super) fn requeue_smaller(
    d: &mut Dest,
    message: Message,
    chunks: Vec<ChunkRef>,
    capacity: usize,
    caps: &Capabilities,
    next_id: &mut u64,
) -> Result<(), Vec<ChunkRef>> {
    let smaller = link_bytes(message).and_then(|bytes| recut(&bytes, capacity, next_id).ok());
    let Some(smaller) = smaller else {
        tracing::warn!(
            capacity,
            "a message could not be cut smaller; the engine will retransmit"
        );
        return Err(chunks);
    };
    tracing::debug!(
        capacity,
        messages = smaller.len(),
        "a message cut again smaller"
    );
    // Each carries the chunks of the whole: any of them failing has those
    // chunks sent again at once.
    for bytes in smaller.into_iter().rev() {
        d.retry
            .push_front((to_message(bytes, caps), chunks.clone()));
    }
    Ok(())
}

pub(super) fn enqueue(d: &mut Dest, out: Outgoing) {
    if d.oldest.is_none() {
        d.oldest = Some(Instant::now());
    }
    match out.class {
        Class::Control => {
            if let Some(key) = out.coalesce {
                if let Some(old) = d.control.iter_mut().find(|o| o.coalesce == Some(key)) {
                    // The newer replaces it, and leaves no later than it
                    // would have (an urgent one at once).
                    let until = match (old.ride_until, out.ride_until) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        _ => None,
                    };
                    *old = out;
                    old.ride_until = until;
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
/// frame, then data; the last frame that does not fit is split (a chunk in
/// pieces, anything else in fragments), and a chunk the peer holds part of
/// goes as pieces of the rest. Returns the message and the chunks it
/// carries (whole or in part).
#[cfg(test)]
pub(super) fn pack(d: &mut Dest, capacity: usize, next_id: &mut u64) -> (Vec<u8>, Vec<ChunkRef>) {
    pack_as(d, capacity, next_id, true)
}

/// [`pack`], with bulk data (the data queue, a chunk being split from it)
/// left out unless `bulk`: a slot kept free for the user carries control
/// frames and small transfers only. [`Dest::last_bulk`] says whether the
/// message carries bulk data.
pub(super) fn pack_as(
    d: &mut Dest,
    capacity: usize,
    next_id: &mut u64,
    bulk: bool,
) -> (Vec<u8>, Vec<ChunkRef>) {
    let mut carried_bulk = false;
    let mut chunks = vec![];
    let mut msg = Vec::with_capacity(capacity.min(4 * 1024 * 1024) + HEADER_LEN);
    msg.extend_from_slice(MAGIC);
    msg.push(LINK_VERSION);
    let limit = capacity + HEADER_LEN;
    d.packed += 1;
    // Whole control frames first, as many as fit: an acknowledgement or an
    // offer must not wait behind the pieces of a large chunk (22 messages
    // for 64 KiB on a text channel). Then the frame being split, so it
    // finishes as soon as possible.
    while let Some(next) = d.control.front() {
        let whole = next.piece.as_ref().is_none_or(|(_, held)| held.is_empty());
        if !whole || next.frame.len() + WHOLE_RECORD_OVERHEAD > limit - msg.len() {
            break;
        }
        let out = pop(d, true);
        chunks.extend(out.chunk);
        msg.push(TAG_WHOLE);
        put_varint(&mut msg, out.frame.len() as u64);
        msg.extend_from_slice(&out.frame);
    }
    if let Some(p) = d.partial.take() {
        if p.bulk && !bulk {
            d.partial = Some(p);
        } else {
            carried_bulk |= p.bulk;
            d.partial = put_partial(&mut msg, limit, p, &mut chunks);
        }
    }
    while d.partial.is_none() {
        let from_control = !d.control.is_empty();
        if !from_control && !bulk {
            break;
        }
        let next = if from_control {
            d.control.front()
        } else {
            d.data.front()
        };
        let Some(next) = next else { break };
        let room = limit - msg.len();
        let need = next.frame.len() + WHOLE_RECORD_OVERHEAD;
        let whole = next.piece.as_ref().is_none_or(|(_, held)| held.is_empty());
        if whole && need <= room {
            carried_bulk |= !from_control;
            let out = pop(d, from_control);
            chunks.extend(out.chunk);
            msg.push(TAG_WHOLE);
            put_varint(&mut msg, out.frame.len() as u64);
            msg.extend_from_slice(&out.frame);
            continue;
        }
        if room < MIN_FRAGMENT_ROOM {
            break;
        }
        carried_bulk |= !from_control;
        let out = pop(d, from_control);
        let (key, todo) = match &out.piece {
            Some((key, held)) => (Key::Piece(*key), missing(held, out.frame.len())),
            None => {
                *next_id = next_id.wrapping_add(1);
                (Key::Id(*next_id), VecDeque::from([(0, out.frame.len())]))
            }
        };
        let p = Partial {
            key,
            frame: out.frame,
            todo,
            chunk: out.chunk,
            _permit: out._permit,
            begun_in: d.packed,
            bulk: !from_control,
        };
        d.partial = put_partial(&mut msg, limit, p, &mut chunks);
    }
    d.oldest = if d.is_empty() {
        None
    } else {
        Some(Instant::now())
    };
    d.last_bulk = carried_bulk;
    (msg, chunks)
}

/// Put as much of `p` as fits in `msg` (up to `limit`); returns it if some
/// is left for the next message.
fn put_partial(
    msg: &mut Vec<u8>,
    limit: usize,
    mut p: Partial,
    chunks: &mut Vec<ChunkRef>,
) -> Option<Partial> {
    let mut carried = false;
    while let Some(&(start, end)) = p.todo.front() {
        // The header as it will be written (its varints are short), so the
        // message is filled to the byte.
        let free = limit - msg.len();
        let overhead = record_header(p.key, p.frame.len(), start, (end - start).min(free));
        let room = free.saturating_sub(overhead);
        // A piece too small to be worth its header waits for the next
        // message, unless it finishes its range.
        if room == 0 || (room < end - start && room + overhead < MIN_FRAGMENT_ROOM && carried) {
            break;
        }
        let take = (end - start).min(room);
        let part = &p.frame[start..start + take];
        match p.key {
            Key::Id(id) => put_fragment(msg, id, p.frame.len(), start, part),
            Key::Piece(key) => put_piece(msg, key, p.frame.len(), start, part),
        }
        if !carried {
            chunks.extend(p.chunk);
            carried = true;
        }
        if start + take < end {
            p.todo[0].0 = start + take;
            return Some(p);
        }
        p.todo.pop_front();
    }
    (!p.todo.is_empty()).then_some(p)
}

pub(super) fn pop(d: &mut Dest, control: bool) -> Outgoing {
    if control {
        d.control.pop_front().expect("checked non-empty")
    } else {
        let out = d.data.pop_front().expect("checked non-empty");
        d.data_bytes -= out.frame.len();
        out
    }
}
