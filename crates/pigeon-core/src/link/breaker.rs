//! A link's circuit breaker: whether data may go on it now.
//!
//! Two things take a link out: its sends failing (the provider answers
//! with errors, or not at all), and its messages vanishing (sends succeed
//! but the chunks they carried time out, none acknowledged: a provider
//! that swallows everything). Either opens the circuit: no data goes on
//! the link until a backoff (1 s, doubling to 60 s, with jitter) has
//! passed; then it is half-open, and what goes on it is a probe: one
//! chunk, not data at full pace (until the probe's wait, at least
//! [`PROBE_WAIT`] and as long as the link takes to carry it and be
//! answered, has passed without word of it; then another). The probe's fate closes it again or opens
//! it for longer; an acknowledgement of a chunk sent before the circuit
//! opened is no word of the probe, and changes nothing. Nothing takes a
//! link out for good: a user may fix what was wrong at any time.
//!
//! Pure: no clock (the time is an argument), no randomness (the jitter
//! is given), so the tests below walk it through its states.

use std::time::Duration;

use tokio::time::Instant;

/// Consecutive send failures that open the circuit.
pub const FAILURES_TO_OPEN: u32 = 3;
/// Consecutive chunks lost (none acknowledged in between) that open it.
pub const LOSSES_TO_OPEN: u32 = 6;
/// The least a half-open circuit waits for word of its probe before it
/// admits another (a probe whose acknowledgement is lost says nothing).
/// A slow channel waits longer: as long as the probe takes to send and
/// be answered ([`Breaker::took_data`]).
pub const PROBE_WAIT: Duration = Duration::from_secs(15);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Why a circuit opened: what a probe must show to close it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Sends failed: a send that succeeds closes it.
    Errors,
    /// Sends succeeded but nothing arrived: only a chunk acknowledged
    /// closes it.
    Silent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Data flows.
    Closed,
    /// No data until `until`.
    Open { why: Why, until: Instant },
    /// What goes on the link is a probe.
    HalfOpen { why: Why },
}

#[derive(Clone, Debug)]
pub struct Breaker {
    state: State,
    failures: u32,
    losses: u32,
    /// Times it opened without closing in between: the backoff's exponent.
    opened: u32,
    /// Times it opened, ever: one who looked before can tell it opened
    /// since, even if it is half-open again by now.
    openings: u64,
    /// The longest it stays open.
    max_backoff: Duration,
    /// When it last opened: a chunk sent before says nothing of now.
    opened_at: Option<Instant>,
    /// Until when the probe let through while half-open is waited for.
    probe: Option<Instant>,
    /// When a send last failed.
    last_failed: Option<Instant>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new()
    }
}

impl Breaker {
    pub fn new() -> Breaker {
        Breaker {
            state: State::Closed,
            failures: 0,
            losses: 0,
            opened: 0,
            openings: 0,
            max_backoff: MAX_BACKOFF,
            opened_at: None,
            probe: None,
            last_failed: None,
        }
    }

    /// When a send last failed, if one did.
    pub fn last_failed(&self) -> Option<Instant> {
        self.last_failed
    }

    /// Stay open at most `d`: a party's only link is probed often, since
    /// nothing else can carry what waits for it.
    pub fn cap_backoff(&mut self, d: Duration) {
        self.max_backoff = d.min(MAX_BACKOFF);
    }

    /// The state at `now` (an open circuit whose backoff has passed is
    /// half-open).
    pub fn state(&mut self, now: Instant) -> State {
        if let State::Open { why, until } = self.state {
            if now >= until {
                self.state = State::HalfOpen { why };
            }
        }
        self.state
    }

    /// Whether data may be handed to the link at `now`: closed, or
    /// half-open with no probe out (or none heard of in its wait).
    pub fn allows_data(&mut self, now: Instant) -> bool {
        match self.state(now) {
            State::Closed => true,
            State::Open { .. } => false,
            State::HalfOpen { .. } => self.probe.is_none_or(|until| now >= until),
        }
    }

    /// Data was handed to the link at `now`: while half-open, that is the
    /// probe, and no more goes until its fate is known or `wait` (at
    /// least [`PROBE_WAIT`]: the time the link takes to send it and hear
    /// back) has passed.
    pub fn took_data(&mut self, now: Instant, wait: Duration) {
        if matches!(self.state(now), State::HalfOpen { .. }) {
            self.probe = Some(now + wait.max(PROBE_WAIT));
        }
    }

    /// Until when the link itself must send nothing: a circuit open for
    /// errors (hammering a provider that fails is pointless). One open
    /// for silence only keeps the engine's data off it (the messages do
    /// leave; with no other link, the engine uses it anyway).
    pub fn holds_sends_until(&self) -> Option<Instant> {
        match self.state {
            State::Open {
                why: Why::Errors,
                until,
            } => Some(until),
            _ => None,
        }
    }

    /// How many times it has opened.
    pub fn openings(&self) -> u64 {
        self.openings
    }

    /// Closed, and its last send succeeded: where a control frame, whose
    /// loss costs a round trip, should go when there is a choice.
    pub fn clean(&self) -> bool {
        self.state == State::Closed && self.failures == 0
    }

    /// When an open circuit turns half-open.
    #[cfg(test)]
    pub fn reopens_at(&self) -> Option<Instant> {
        match self.state {
            State::Open { until, .. } => Some(until),
            _ => None,
        }
    }

    /// A message left: the provider took it.
    pub fn sent(&mut self, now: Instant) {
        self.failures = 0;
        match self.state(now) {
            State::HalfOpen { why: Why::Errors } => self.close(),
            // Sends that succeed are what a silent provider does.
            State::HalfOpen { why: Why::Silent } | State::Open { .. } | State::Closed => {}
        }
    }

    /// A send failed (`jitter` in [0, 1)). `permanent`: the provider said
    /// it will not take it as things are (a revoked token), which opens
    /// the circuit at once.
    pub fn send_failed(&mut self, now: Instant, permanent: bool, jitter: f64) {
        self.failures += 1;
        self.last_failed = Some(now);
        match self.state(now) {
            State::HalfOpen { .. } => self.open(Why::Errors, now, jitter),
            State::Closed if permanent || self.failures >= FAILURES_TO_OPEN => {
                self.open(Why::Errors, now, jitter)
            }
            _ => {}
        }
    }

    /// Whether a chunk sent at `sent_at` left before the circuit last
    /// opened: news of it (acknowledged, or timed out) is old news.
    pub fn before_opening(&self, sent_at: Instant) -> bool {
        self.opened_at.is_some_and(|opened| sent_at < opened)
    }

    /// A chunk sent on the link at `sent_at` was acknowledged. One sent
    /// before the circuit last opened says nothing of the link now (its
    /// acknowledgement was merely late): it changes nothing.
    pub fn delivered(&mut self, sent_at: Instant) {
        if self.before_opening(sent_at) {
            return;
        }
        self.losses = 0;
        if !matches!(
            self.state,
            State::Open {
                why: Why::Errors,
                ..
            }
        ) {
            self.close();
        }
    }

    /// A chunk sent on the link timed out. Counted only while the link
    /// carries data (closed) or is probed for silence: timers of chunks
    /// held behind an open circuit say nothing of the provider.
    pub fn lost(&mut self, now: Instant, jitter: f64) {
        match self.state(now) {
            State::HalfOpen { why: Why::Silent } => self.open(Why::Silent, now, jitter),
            State::Closed => {
                self.losses += 1;
                if self.losses >= LOSSES_TO_OPEN {
                    self.open(Why::Silent, now, jitter);
                }
            }
            State::Open { .. } | State::HalfOpen { why: Why::Errors } => {}
        }
    }

    fn open(&mut self, why: Why, now: Instant, jitter: f64) {
        let backoff = (FIRST_BACKOFF * 2u32.saturating_pow(self.opened.min(6)))
            .min(self.max_backoff)
            .mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.5);
        self.opened += 1;
        self.openings += 1;
        self.losses = 0;
        self.failures = 0;
        self.opened_at = Some(now);
        self.probe = None;
        self.state = State::Open {
            why,
            until: now + backoff,
        };
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.opened = 0;
        self.failures = 0;
        self.losses = 0;
        self.probe = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn failures_in_a_row_open_it_and_a_success_between_them_does_not() {
        let t = Instant::now();
        let mut b = Breaker::new();
        b.send_failed(t, false, 0.0);
        b.send_failed(t, false, 0.0);
        b.sent(t);
        b.send_failed(t, false, 0.0);
        assert!(!b.clean(), "one failure makes it suspect");
        b.send_failed(t, false, 0.0);
        assert!(b.allows_data(t), "two in a row, not three");
        b.send_failed(t, false, 0.0);
        assert_eq!(
            b.state(t),
            State::Open {
                why: Why::Errors,
                until: t + S
            }
        );
        assert!(!b.allows_data(t));
    }

    #[test]
    fn an_open_circuit_is_probed_with_a_growing_backoff_and_closes_on_success() {
        let t = Instant::now();
        let mut b = Breaker::new();
        b.send_failed(t, true, 0.0);
        assert_eq!(
            b.reopens_at(),
            Some(t + S),
            "a permanent error opens at once"
        );
        assert_eq!(b.holds_sends_until(), Some(t + S));
        // Half-open after its backoff; the probe fails: open twice as long.
        assert_eq!(b.state(t + S), State::HalfOpen { why: Why::Errors });
        assert!(b.allows_data(t + S));
        b.send_failed(t + S, false, 0.0);
        assert_eq!(b.reopens_at(), Some(t + 3 * S));
        b.send_failed(t + 3 * S, false, 0.0);
        assert_eq!(b.reopens_at(), Some(t + 7 * S));
        // Capped at a minute; jitter stretches by half at most.
        let mut at = t + 7 * S;
        for _ in 0..10 {
            b.send_failed(at, false, 0.999);
            let until = b.reopens_at().unwrap();
            assert!(until - at <= Duration::from_secs(90), "{:?}", until - at);
            at = until;
        }
        // A probe that gets through closes it, and the backoff starts over.
        b.sent(at);
        assert_eq!(b.state(at), State::Closed);
        for _ in 0..FAILURES_TO_OPEN {
            b.send_failed(at, false, 0.0);
        }
        assert_eq!(b.reopens_at(), Some(at + S));
    }

    #[test]
    fn a_provider_that_swallows_everything_opens_it_and_only_a_delivery_closes_it() {
        let t = Instant::now();
        let mut b = Breaker::new();
        for _ in 0..LOSSES_TO_OPEN - 1 {
            b.sent(t);
            b.lost(t, 0.0);
        }
        b.delivered(t);
        for _ in 0..LOSSES_TO_OPEN - 1 {
            b.lost(t, 0.0);
        }
        assert!(b.allows_data(t), "an acknowledgement in between resets it");
        b.lost(t, 0.0);
        assert!(!b.allows_data(t));
        assert_eq!(b.holds_sends_until(), None, "its messages do leave");
        assert_eq!(b.state(t + S), State::HalfOpen { why: Why::Silent });
        // Sends succeed, as they did all along: that proves nothing.
        b.sent(t + S);
        assert_eq!(b.state(t + S), State::HalfOpen { why: Why::Silent });
        // The probe is lost: open again, for longer.
        b.lost(t + S, 0.0);
        assert_eq!(b.reopens_at(), Some(t + 3 * S));
        // A chunk the probe carried is acknowledged: closed.
        b.state(t + 3 * S);
        b.delivered(t + 3 * S);
        assert_eq!(b.state(t + 3 * S), State::Closed);
    }

    #[test]
    fn timers_of_chunks_held_behind_an_open_circuit_do_not_reopen_it() {
        let t = Instant::now();
        let mut b = Breaker::new();
        b.send_failed(t, true, 0.0);
        for _ in 0..2 * LOSSES_TO_OPEN {
            b.lost(t, 0.0);
            b.lost(t + S, 0.0);
        }
        assert_eq!(b.state(t + S), State::HalfOpen { why: Why::Errors });
        b.sent(t + S);
        assert_eq!(b.state(t + S), State::Closed);
        b.lost(t + S, 0.0);
        assert!(b.allows_data(t + S), "losses start over when it closes");
        // An only link is probed at least every few seconds.
        let mut only = Breaker::new();
        only.cap_backoff(Duration::from_secs(5));
        let mut at = t;
        for _ in 0..10 {
            only.send_failed(at, true, 0.999);
            let until = only.reopens_at().unwrap();
            assert!(until - at <= Duration::from_secs(8), "{:?}", until - at);
            at = until;
        }
    }

    #[test]
    fn a_late_acknowledgement_does_not_close_a_circuit_open_for_errors() {
        let t = Instant::now();
        let mut b = Breaker::new();
        b.send_failed(t, true, 0.0);
        // A chunk that left before the errors is acknowledged now.
        b.delivered(t);
        assert!(!b.allows_data(t), "the sends still fail");
    }

    /// Issue 28 item 4: a half-open link admits one probe, not data at full
    /// pace; another only if nothing is heard of the first for a while.
    #[test]
    fn a_half_open_circuit_admits_one_probe_at_a_time() {
        let t = Instant::now();
        let mut b = Breaker::new();
        for _ in 0..LOSSES_TO_OPEN {
            b.lost(t, 0.0);
        }
        assert!(b.allows_data(t + S), "half-open: a probe may go");
        b.took_data(t + S, Duration::from_secs(2));
        assert!(!b.allows_data(t + S), "the probe is out: nothing more");
        assert!(!b.allows_data(t + S + PROBE_WAIT - S));
        assert!(b.allows_data(t + S + PROBE_WAIT), "no word of it: another");
        b.took_data(t + S + PROBE_WAIT, Duration::ZERO);
        b.delivered(t + S + PROBE_WAIT);
        assert_eq!(b.state(t + 20 * S), State::Closed);
        b.took_data(t + 20 * S, Duration::ZERO);
        assert!(b.allows_data(t + 20 * S), "closed: data flows");
    }

    /// On a channel slower than [`PROBE_WAIT`] (a chunk in twenty messages
    /// of one every six seconds) a probe is waited for as long as it takes
    /// to carry and answer: a second one sooner would go before the first
    /// could be heard of, and so on, a probe a timeout at full pace.
    #[test]
    fn a_probe_on_a_slow_channel_is_waited_for_as_long_as_it_takes() {
        let t = Instant::now();
        let mut b = Breaker::new();
        for _ in 0..LOSSES_TO_OPEN {
            b.lost(t, 0.0);
        }
        let takes = Duration::from_secs(150);
        b.took_data(t + S, takes);
        assert!(!b.allows_data(t + S + PROBE_WAIT), "still on its way");
        assert!(!b.allows_data(t + S + takes - S));
        assert!(b.allows_data(t + S + takes), "no word of it: another");
    }

    /// A timeout of a chunk sent before the circuit opened is old news too.
    #[test]
    fn a_chunk_sent_before_it_opened_is_old_news() {
        let t = Instant::now();
        let mut b = Breaker::new();
        for _ in 0..LOSSES_TO_OPEN {
            b.lost(t + S, 0.0);
        }
        assert!(b.before_opening(t) && !b.before_opening(t + S));
    }

    /// Issue 28 item 4: an acknowledgement of a chunk sent before the
    /// circuit opened is late news, not a probe that got through.
    #[test]
    fn a_late_acknowledgement_does_not_close_a_circuit_opened_for_silence() {
        let t = Instant::now();
        let mut b = Breaker::new();
        for _ in 0..LOSSES_TO_OPEN {
            b.lost(t + S, 0.0);
        }
        b.delivered(t);
        assert!(!b.allows_data(t + S), "still open");
        assert_eq!(b.state(t + 2 * S), State::HalfOpen { why: Why::Silent });
        b.delivered(t);
        assert_eq!(b.state(t + 2 * S), State::HalfOpen { why: Why::Silent });
        b.delivered(t + 2 * S);
        assert_eq!(b.state(t + 2 * S), State::Closed, "the probe's own");
    }
}
