//! When the client says Hello, and what its handshakes measure.
//!
//! ```text
//! Hello --Welcome--> established (first Hello answered: its round trip is a sample)
//!   '--no Welcome in time--> Hello again, waiting twice as long (20 s at most)
//! established --"unknown session" hint--> Hello again, at most once a second
//! ```
//!
//! Pure: the client's `connect` task sends, waits and records what this
//! says. A hint that our session is gone is unauthenticated (anyone on the
//! channel can forge one), so it may cost at most one handshake a second.

use std::time::Duration;

use tokio::time::Instant;

/// The longest wait for a Welcome before the Hello goes again.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(20);
/// The least time between two handshakes started by hints.
pub(crate) const HINT_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct HandshakeTimer {
    wait: Duration,
    attempts: u32,
    started: Instant,
}

impl HandshakeTimer {
    /// A new handshake at `now`; the first wait is `floor` (the link's
    /// retransmission timeout).
    pub fn new(floor: Duration, now: Instant) -> HandshakeTimer {
        HandshakeTimer {
            wait: floor,
            attempts: 0,
            started: now,
        }
    }

    /// A Hello went out: how long to wait for its Welcome.
    pub fn sent(&mut self) -> Duration {
        self.attempts += 1;
        self.wait
    }

    /// No Welcome in time: the next Hello waits twice as long.
    pub fn timed_out(&mut self) {
        self.wait = (self.wait * 2).min(MAX_WAIT);
    }

    /// Established at `now`: the round trip, if the first Hello was
    /// answered (after a repeat, the Welcome may answer either copy).
    pub fn round_trip(&self, now: Instant) -> Option<Duration> {
        (self.attempts == 1).then(|| now.duration_since(self.started))
    }

    /// Told at `now` that the session is gone: how long to wait before the
    /// next handshake.
    pub fn restart_after(&self, now: Instant) -> Duration {
        HINT_INTERVAL.saturating_sub(now.duration_since(self.started))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOR: Duration = Duration::from_millis(600);

    #[test]
    fn an_unanswered_hello_backs_off_to_a_ceiling() {
        let t0 = Instant::now();
        let mut h = HandshakeTimer::new(FLOOR, t0);
        let mut waits = vec![];
        for _ in 0..8 {
            waits.push(h.sent());
            h.timed_out();
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [600, 1200, 2400, 4800, 9600, 19200, 20000, 20000]);
    }

    #[test]
    fn only_a_first_hello_answered_measures_the_round_trip() {
        let t0 = Instant::now();
        let mut h = HandshakeTimer::new(FLOOR, t0);
        h.sent();
        assert_eq!(
            h.round_trip(t0 + Duration::from_millis(250)),
            Some(Duration::from_millis(250))
        );
        h.timed_out();
        h.sent();
        assert_eq!(h.round_trip(t0 + Duration::from_secs(2)), None, "Karn");
    }

    #[test]
    fn forged_hints_cost_at_most_one_handshake_a_second() {
        let t0 = Instant::now();
        let mut h = HandshakeTimer::new(FLOOR, t0);
        h.sent();
        assert_eq!(
            h.restart_after(t0 + Duration::from_millis(300)),
            Duration::from_millis(700)
        );
        assert_eq!(h.restart_after(t0 + Duration::from_secs(5)), Duration::ZERO);
    }
}
