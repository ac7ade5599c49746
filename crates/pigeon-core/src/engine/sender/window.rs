//! The sender's window: which chunks the receiver holds, which are on the
//! wire (on which link) and when each times out, and which go out again.
//!
//! Each link has its own round-trip timer: a chunk's timeout is its link's,
//! and a gap is three later chunks of the same link getting through (on
//! links of different speeds, chunks on the slow one are always behind).
//! What was learned of each link (a chunk that went only on it was
//! acknowledged, or one timed out there) is returned for its circuit
//! breaker.
//!
//! Pure: no I/O, no clock (what needs the time takes `now`), no randomness
//! (a timer's jitter is given). The sender applies what it returns: the
//! progress it shows, the log, the link's round trip. That is what lets
//! the tests below walk it through acknowledgements, gaps, timeouts and a
//! receiver that lost chunks, with no task, link or file.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::bitmap::Bitmap;
use crate::engine::Rto;
use crate::protocol::AckState;

/// How much of an acknowledgement is read: all of it (the answer to an
/// offer or a finish, O(chunks)), or only the chunks in flight (any other,
/// O(window): a peer that floods acknowledgements gains nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AckScope {
    All,
    InFlight,
}

/// A chunk on the wire.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Flight {
    pub sent_at: Instant,
    /// The link its latest copy went on.
    pub link: usize,
    /// Every link a copy went on, one bit each (links 0..63).
    pub links: u64,
    /// Order of sending, across resends: gaps are counted in it.
    pub seq: u64,
    /// How long its link takes to send it at its pace (a chunk in pieces on
    /// a text channel: many messages): its timer and its round trip start
    /// after that.
    pub transmit: Duration,
    pub retries: u32,
    /// None once it is queued for resending.
    pub deadline: Option<Instant>,
}

/// What an acknowledgement changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Acked {
    /// Chunks acknowledged for the first time, in order.
    pub newly: Vec<u32>,
    /// Chunks found lost behind later ones, now queued for resending.
    pub gaps: Vec<u32>,
    /// For each chunk acknowledged whose copies all went on one link, that
    /// link (it carried it) and when its copy left; for each gap, the link
    /// its copy was lost on, and when it left.
    pub delivered: Vec<(usize, Instant)>,
    pub lost: Vec<(usize, Instant)>,
}

pub(crate) struct Window {
    pub acked: Bitmap,
    pub inflight: HashMap<u32, Flight>,
    pub resend: VecDeque<u32>,
    /// New chunks are taken from here on.
    pub cursor: u32,
    /// One per link.
    rtos: Vec<Rto>,
    /// Most chunks on the wire or being prepared at once.
    pub size: usize,
    seq: u64,
}

/// The longest a chunk's timer runs, whatever its retries.
const MAX_BACKOFF: Duration = Duration::from_secs(120);

impl Window {
    /// A window over `chunks` chunks and links timed by `rtos` (one each,
    /// at least one).
    pub fn new(chunks: u32, rtos: Vec<Rto>, size: usize) -> Window {
        assert!(!rtos.is_empty(), "a window needs a link");
        Window {
            acked: Bitmap::new(chunks),
            inflight: HashMap::new(),
            resend: VecDeque::new(),
            cursor: 0,
            rtos,
            size,
            seq: 0,
        }
    }

    /// Link `link`'s timer.
    pub fn rto(&self, link: usize) -> &Rto {
        &self.rtos[link.min(self.rtos.len() - 1)]
    }

    /// [`sent_over`](Self::sent_over) a link that sends it at once.
    #[cfg(test)]
    pub fn sent(&mut self, index: u32, link: usize, retry: bool, now: Instant, jitter: f64) -> u32 {
        self.sent_over(index, link, retry, now, jitter, Duration::ZERO)
    }

    /// Chunk `index` was handed to link `link` at `now` (`retry`: again),
    /// which takes `transmit` to send it. `jitter` in [0, 1) spreads timers
    /// by up to a quarter, so the timers of many chunks (and many senders)
    /// do not fire at once. Returns how many times it has been resent.
    pub fn sent_over(
        &mut self,
        index: u32,
        link: usize,
        retry: bool,
        now: Instant,
        jitter: f64,
        transmit: Duration,
    ) -> u32 {
        let link = link.min(self.rtos.len() - 1);
        self.seq += 1;
        let before = self.inflight.get(&index);
        let retries = before.map_or(0, |f| f.retries + u32::from(retry));
        let links = before.map_or(0, |f| f.links) | (1u64 << link.min(63));
        // Exponential backoff.
        let backoff = (self.rtos[link].get() * 2u32.saturating_pow(retries.min(5)))
            .min(MAX_BACKOFF)
            .mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.25);
        self.inflight.insert(
            index,
            Flight {
                sent_at: now,
                link,
                links,
                seq: self.seq,
                transmit,
                retries,
                deadline: Some(now + transmit + backoff),
            },
        );
        retries
    }

    /// Take in an acknowledgement that arrived at `now`.
    pub fn on_ack(&mut self, have: &AckState, scope: AckScope, now: Instant) -> Acked {
        let mut newly = vec![];
        match scope {
            AckScope::All => {
                let start = self.acked.first_clear().unwrap_or(self.acked.len());
                for i in start..have.base.min(self.acked.len()) {
                    if self.acked.set(i) {
                        newly.push(i);
                    }
                }
                for &(s, e) in &have.ranges {
                    for i in s..e.min(self.acked.len()) {
                        if self.acked.set(i) {
                            newly.push(i);
                        }
                    }
                }
                newly.sort_unstable();
            }
            AckScope::InFlight => {
                newly = self
                    .inflight
                    .keys()
                    .copied()
                    .filter(|&i| have.contains(i))
                    .collect();
                newly.sort_unstable();
                for &i in &newly {
                    self.acked.set(i);
                }
            }
        }
        if newly.is_empty() {
            return Acked::default();
        }
        // The newest first copy acknowledged, per link.
        let mut max_seq = vec![0u64; self.rtos.len()];
        let mut delivered = vec![];
        for &i in &newly {
            if let Some(f) = self.inflight.remove(&i) {
                if f.links.count_ones() == 1 {
                    delivered.push((f.link, f.sent_at));
                }
                // An acknowledgement of a resent chunk may answer either
                // copy (Karn): it says nothing of round trips or gaps.
                if f.retries == 0 {
                    max_seq[f.link] = max_seq[f.link].max(f.seq);
                    let rtt = now.duration_since(f.sent_at).saturating_sub(f.transmit);
                    self.rtos[f.link].sample(rtt);
                }
            }
        }
        // Gaps: three later chunks got through on the same link and this
        // one did not, and it is older than that link's round trip plus a
        // reordering allowance (a channel that delays some messages must
        // not cost a resend each).
        let patience: Vec<Duration> = (0..self.rtos.len()).map(|l| self.patience(l)).collect();
        let mut gaps: Vec<(u32, usize, Instant)> = self
            .inflight
            .iter()
            .filter(|(_, f)| {
                f.deadline.is_some()
                    && f.seq + 3 <= max_seq[f.link]
                    && now.duration_since(f.sent_at) > f.transmit + patience[f.link]
            })
            .map(|(&i, f)| (i, f.link, f.sent_at))
            .collect();
        gaps.sort_unstable();
        for &(i, ..) in &gaps {
            self.queue_resend(i);
        }
        Acked {
            newly,
            lost: gaps.iter().map(|&(_, l, at)| (l, at)).collect(),
            gaps: gaps.into_iter().map(|(i, ..)| i).collect(),
            delivered,
        }
    }

    /// Un-acknowledge what the receiver says it does not hold (as far as
    /// its answer reaches: beyond its last range nothing is said). Returns
    /// the chunks taken back; sending starts over from the first chunk.
    pub fn forget_missing(&mut self, have: &AckState) -> Vec<u32> {
        let told_up_to = have
            .ranges
            .last()
            .map_or(have.base, |&(_, e)| e.max(have.base));
        let truncated = have.ranges.len() >= AckState::MAX_RANGES;
        let limit = if truncated {
            told_up_to
        } else {
            self.acked.len()
        };
        let mut fresh = Bitmap::new(self.acked.len());
        let mut lost = vec![];
        for i in 0..self.acked.len() {
            // Only take away here; `on_ack` adds what is new.
            if !self.acked.get(i) {
                continue;
            }
            if i >= limit || have.contains(i) {
                fresh.set(i);
            } else {
                lost.push(i);
            }
        }
        if !lost.is_empty() {
            self.cursor = 0;
        }
        self.acked = fresh;
        lost
    }

    /// How long after its sending a chunk on `link` should have been
    /// answered: a round trip plus a reordering allowance.
    fn patience(&self, link: usize) -> Duration {
        let r = self.rto(link);
        let srtt = r.srtt().unwrap_or(r.get());
        srtt + (srtt / 4).max(Duration::from_millis(100))
    }

    /// The receiver says it holds chunk `index` only in part. If its copy
    /// has had the time to arrive whole (its sending, a round trip and the
    /// allowance), the rest was lost: queue it to go again now, without
    /// waiting for its timer (only the rest will go). Returns whether it
    /// was queued.
    pub fn partly_held(&mut self, index: u32, now: Instant) -> bool {
        let Some(f) = self.inflight.get(&index) else {
            return false;
        };
        if f.deadline.is_none()
            || now.duration_since(f.sent_at) <= f.transmit + self.patience(f.link)
        {
            return false;
        }
        self.queue_resend(index);
        true
    }

    /// Send chunk `i` again, if it is on the wire.
    pub fn queue_resend(&mut self, i: u32) {
        if let Some(f) = self.inflight.get_mut(&i) {
            f.deadline = None;
            self.resend.push_back(i);
        }
    }

    /// The messages carrying `chunks` failed on `link`: send again those
    /// whose latest copy went there. Returns them.
    pub fn dropped(&mut self, link: usize, chunks: &[u32]) -> Vec<u32> {
        let mut gone: Vec<u32> = chunks
            .iter()
            .copied()
            .filter(|i| {
                self.inflight
                    .get(i)
                    .is_some_and(|f| f.link == link && f.deadline.is_some())
            })
            .collect();
        gone.sort_unstable();
        gone.dedup();
        for &i in &gone {
            self.queue_resend(i);
        }
        gone
    }

    /// Link `link` is out (its circuit opened): queue for resending every
    /// chunk whose latest copy went on it, without waiting for their
    /// timers. Returns them.
    pub fn abandon(&mut self, link: usize) -> Vec<u32> {
        let mut gone: Vec<u32> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.link == link && f.deadline.is_some())
            .map(|(&i, _)| i)
            .collect();
        gone.sort_unstable();
        for &i in &gone {
            self.queue_resend(i);
        }
        gone
    }

    /// Queue for resending the chunks whose timer ran out by `now`; returns
    /// each with the link its copy was lost on, and whether one of them
    /// went as a probe.
    ///
    /// A chunk answerable before the last acknowledgement (`last_ack`)
    /// came (sent, a round trip and an allowance before it) was lost: the
    /// way back works. One not answerable by then says nothing:
    /// the way back may be what is out, and the receiver may hold it and
    /// all the others. Of those only the oldest goes again, a probe (none
    /// while `probing`: one is out already), and the others' timers start
    /// over. The probe's answer, when one comes, says what the receiver
    /// lacks; until then an outage costs one chunk a timeout, not the
    /// window.
    pub fn expire(
        &mut self,
        now: Instant,
        last_ack: Option<Instant>,
        probing: bool,
    ) -> (Vec<(u32, usize)>, bool) {
        // Answered since: an acknowledgement came after this chunk had the
        // time to arrive and be answered.
        let mut expired: Vec<(u64, u32, usize, bool)> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.deadline.is_some_and(|d| d <= now))
            .map(|(&i, f)| {
                let answerable = f.sent_at + f.transmit + self.patience(f.link);
                let answered_since = last_ack.is_some_and(|a| a > answerable);
                (f.seq, i, f.link, answered_since)
            })
            .collect();
        expired.sort_unstable();
        let mut probed = false;
        let mut again = vec![];
        for (_, i, link, answered_since) in expired {
            if answered_since || (!probing && !probed) {
                probed |= !answered_since;
                again.push((i, link));
            } else {
                let wait = self.rtos[link].get();
                if let Some(f) = self.inflight.get_mut(&i) {
                    f.deadline = Some(now + wait);
                }
            }
        }
        again.sort_unstable();
        for &(i, _) in &again {
            self.queue_resend(i);
        }
        (again, probed)
    }

    /// The next chunk never sent in this run and not `busy` elsewhere.
    pub fn next_new(&self, busy: impl Fn(u32) -> bool) -> Option<u32> {
        (self.cursor..self.acked.len())
            .find(|&i| !self.acked.get(i) && !self.inflight.contains_key(&i) && !busy(i))
    }

    /// Whether there is a chunk to prepare, with `preparing` chunks
    /// between preparation and the wire.
    pub fn has_work(&self, preparing: usize, busy: impl Fn(u32) -> bool) -> bool {
        !self.resend.is_empty()
            || (self.inflight.len() + preparing < self.size && self.next_new(busy).is_some())
    }

    /// The first chunk timer to run out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.inflight.values().filter_map(|f| f.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rto() -> Rto {
        Rto::fixed(Duration::from_secs(1))
    }

    fn have(base: u32, ranges: &[(u32, u32)]) -> AckState {
        AckState {
            base,
            ranges: ranges.to_vec(),
        }
    }

    #[test]
    fn chunks_acknowledged_leave_the_window_and_time_the_round_trip() {
        let t0 = Instant::now();
        let mut w = Window::new(4, vec![rto()], 16);
        for i in 0..3 {
            assert_eq!(w.next_new(|_| false), Some(i));
            w.cursor = i + 1;
            w.sent(i, 0, false, t0, 0.0);
        }
        let got = w.on_ack(
            &have(2, &[]),
            AckScope::InFlight,
            t0 + Duration::from_millis(300),
        );
        assert_eq!(got.newly, vec![0, 1]);
        assert!(got.gaps.is_empty());
        assert_eq!(w.inflight.len(), 1);
        assert_eq!(w.rto(0).srtt(), Some(Duration::from_millis(300)));
        // Told again: nothing new.
        assert_eq!(
            w.on_ack(
                &have(2, &[]),
                AckScope::InFlight,
                t0 + Duration::from_secs(1)
            ),
            Acked::default()
        );
    }

    #[test]
    fn a_chunk_three_behind_and_older_than_a_round_trip_is_a_gap() {
        let t0 = Instant::now();
        let mut w = Window::new(8, vec![rto()], 16);
        for i in 0..5 {
            w.sent(i, 0, false, t0 + Duration::from_millis(u64::from(i)), 0.0);
        }
        // 1..5 arrive, 0 did not; soon after, patience holds it back.
        let early = w.on_ack(
            &have(0, &[(1, 5)]),
            AckScope::InFlight,
            t0 + Duration::from_millis(50),
        );
        assert_eq!(early.newly, vec![1, 2, 3, 4]);
        assert!(early.gaps.is_empty(), "a reordering allowance first");
        // A later acknowledgement, past a round trip plus the allowance.
        w.sent(5, 0, false, t0 + Duration::from_millis(10), 0.0);
        w.sent(6, 0, false, t0 + Duration::from_millis(11), 0.0);
        w.sent(7, 0, false, t0 + Duration::from_millis(12), 0.0);
        let late = w.on_ack(
            &have(0, &[(1, 8)]),
            AckScope::InFlight,
            t0 + Duration::from_secs(3),
        );
        assert_eq!(late.gaps, vec![0]);
        assert_eq!(w.resend, VecDeque::from([0]));
        assert_eq!(w.inflight[&0].deadline, None, "its timer stops once queued");
    }

    #[test]
    fn timers_back_off_per_retry_and_resent_chunks_do_not_time_the_round_trip() {
        let t0 = Instant::now();
        let mut w = Window::new(2, vec![rto()], 16);
        w.sent(0, 0, false, t0, 0.0);
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert!(w
            .expire(t0 + Duration::from_millis(999), None, false)
            .0
            .is_empty());
        assert_eq!(
            w.expire(t0 + Duration::from_secs(1), None, false),
            (vec![(0, 0)], true)
        );
        assert_eq!(w.next_deadline(), None);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(w.sent(0, 0, true, t1, 0.0), 1);
        assert_eq!(w.next_deadline(), Some(t1 + Duration::from_secs(2)));
        assert_eq!(w.sent(0, 0, true, t1, 0.0), 2);
        assert_eq!(w.next_deadline(), Some(t1 + Duration::from_secs(4)));
        // Doubling stops at 32 times the timeout; jitter stretches a
        // timer by a quarter at most.
        for _ in 0..20 {
            w.sent(0, 0, true, t1, 0.999);
        }
        assert_eq!(
            w.next_deadline(),
            Some(t1 + Duration::from_secs(32).mul_f64(1.0 + 0.999 * 0.25))
        );
        let got = w.on_ack(
            &have(1, &[]),
            AckScope::InFlight,
            t1 + Duration::from_secs(9),
        );
        assert_eq!(got.newly, vec![0]);
        assert_eq!(
            w.rto(0).srtt(),
            None,
            "Karn: a resent chunk's answer times nothing"
        );
    }

    #[test]
    fn each_link_times_its_own_chunks_and_a_slow_link_is_not_a_gap() {
        let t0 = Instant::now();
        let fast = Rto::fixed(Duration::from_millis(200));
        let slow = Rto::fixed(Duration::from_secs(6));
        let mut w = Window::new(10, vec![fast, slow], 16);
        // Chunk 0 on the slow link, 1..=5 on the fast one.
        w.sent(0, 1, false, t0, 0.0);
        for i in 1..=5 {
            w.sent(i, 0, false, t0 + Duration::from_millis(u64::from(i)), 0.0);
        }
        assert_eq!(w.inflight[&0].deadline, Some(t0 + Duration::from_secs(6)));
        assert_eq!(
            w.inflight[&1].deadline,
            Some(t0 + Duration::from_millis(201))
        );
        // Long after, the fast chunks are acknowledged: chunk 0 is behind
        // them, but on another link, so it is no gap.
        let got = w.on_ack(
            &have(0, &[(1, 6)]),
            AckScope::InFlight,
            t0 + Duration::from_secs(2),
        );
        assert_eq!(got.newly, vec![1, 2, 3, 4, 5]);
        assert!(got.gaps.is_empty(), "{got:?}");
        let links: Vec<usize> = got.delivered.iter().map(|&(l, _)| l).collect();
        assert_eq!(links, vec![0; 5], "the fast link carried them");
        assert!(w.rto(0).srtt().is_some() && w.rto(1).srtt().is_none());
        // Its own timer runs out, on its link.
        assert_eq!(
            w.expire(
                t0 + Duration::from_secs(6),
                Some(t0 + Duration::from_secs(2)),
                false
            )
            .0,
            vec![(0, 1)]
        );
        // Resent on the fast link and acknowledged: either copy may have
        // arrived, so neither link is credited.
        w.sent(0, 0, true, t0 + Duration::from_secs(6), 0.0);
        let got = w.on_ack(
            &have(6, &[]),
            AckScope::InFlight,
            t0 + Duration::from_secs(7),
        );
        assert_eq!(got.newly, vec![0]);
        assert!(got.delivered.is_empty());
    }

    /// Issue 28 item 4: with no answer since they could have been
    /// answered, expired chunks go again one at a time (a probe), the
    /// rest wait; a chunk that an answer came after was lost, and goes.
    #[test]
    fn timers_run_out_in_silence_send_one_probe_not_the_window() {
        let t0 = Instant::now();
        let mut w = Window::new(20, vec![rto()], 32);
        for i in 0..10 {
            w.sent(i, 0, false, t0, 0.0);
        }
        let later = t0 + Duration::from_secs(5);
        let (again, probed) = w.expire(later, None, false);
        assert_eq!(again, vec![(0, 0)], "the oldest, alone");
        assert!(probed);
        assert!(w.expire(later, None, true).0.is_empty(), "the others wait");
        let (again, probed) = w.expire(later + Duration::from_secs(2), None, true);
        assert!(again.is_empty() && !probed, "while the probe is out: none");
        // An answer came well after chunk 1 could be answered: the way back
        // works, and what it did not name was lost.
        let acked = Some(t0 + Duration::from_secs(3));
        let (again, probed) = w.expire(later + Duration::from_secs(3), acked, true);
        assert_eq!(again.len(), 9, "{again:?}");
        assert!(!probed);
    }

    #[test]
    fn a_gap_on_one_link_is_charged_to_it() {
        let t0 = Instant::now();
        let mut w = Window::new(10, vec![rto(), rto()], 16);
        for i in 0..5 {
            w.sent(i, 1, false, t0 + Duration::from_millis(u64::from(i)), 0.0);
        }
        let got = w.on_ack(
            &have(0, &[(1, 5)]),
            AckScope::InFlight,
            t0 + Duration::from_millis(50),
        );
        assert!(got.gaps.is_empty());
        let expected: Vec<(usize, Instant)> =
            (1..5).map(|i| (1, t0 + Duration::from_millis(i))).collect();
        assert_eq!(got.delivered, expected, "the link, and when each left");
        for i in 5..8 {
            w.sent(i, 1, false, t0 + Duration::from_millis(10), 0.0);
        }
        let got = w.on_ack(
            &have(0, &[(1, 8)]),
            AckScope::InFlight,
            t0 + Duration::from_secs(3),
        );
        assert_eq!(got.gaps, vec![0]);
        assert_eq!(got.lost, vec![(1, t0)]);
    }

    #[test]
    fn a_receiver_that_lost_chunks_gets_them_again() {
        let mut w = Window::new(6, vec![rto()], 16);
        w.on_ack(&have(6, &[]), AckScope::All, Instant::now());
        assert!(w.acked.is_complete());
        w.cursor = 6;
        // It restarted and kept 0..2 and 4.
        let lost = w.forget_missing(&have(2, &[(4, 5)]));
        assert_eq!(lost, vec![2, 3, 5]);
        assert_eq!(w.cursor, 0);
        assert_eq!(w.next_new(|_| false), Some(2));
        assert_eq!(w.next_new(|i| i == 2), Some(3));
        // An answer cut short (too many ranges) says nothing past its end.
        let mut w = Window::new(8, vec![rto()], 16);
        w.on_ack(&have(8, &[]), AckScope::All, Instant::now());
        let ranges: Vec<(u32, u32)> = (0..AckState::MAX_RANGES as u32)
            .map(|r| (r * 2, r * 2 + 1))
            .collect();
        let cut = have(0, &ranges);
        let lost = w.forget_missing(&cut);
        assert!(lost.iter().all(|&i| i < 8 && i % 2 == 1), "{lost:?}");
    }

    #[test]
    fn an_acknowledgement_read_in_flight_only_ignores_the_rest() {
        let t0 = Instant::now();
        let mut w = Window::new(100, vec![rto()], 16);
        w.sent(7, 0, false, t0, 0.0);
        // Claims everything; only chunk 7 was on the wire.
        let got = w.on_ack(&have(100, &[]), AckScope::InFlight, t0);
        assert_eq!(got.newly, vec![7]);
        assert_eq!(w.acked.count(), 1);
        // The answer to an offer is read whole.
        let got = w.on_ack(&have(100, &[]), AckScope::All, t0);
        assert_eq!(got.newly.len(), 99);
        assert!(w.acked.is_complete());
    }

    #[test]
    fn the_window_bounds_what_is_prepared_and_on_the_wire() {
        let t0 = Instant::now();
        let mut w = Window::new(10, vec![rto()], 3);
        w.sent(0, 0, false, t0, 0.0);
        w.sent(1, 0, false, t0, 0.0);
        w.cursor = 2;
        assert!(w.has_work(0, |_| false));
        assert!(
            !w.has_work(1, |_| false),
            "two on the wire and one being prepared fill three"
        );
        w.queue_resend(0);
        assert!(
            w.has_work(1, |_| false),
            "a resend goes whatever the window"
        );
    }
}
