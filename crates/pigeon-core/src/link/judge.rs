//! What a link knows of each destination it sends to.
//!
//! One link may reach many peers: an agent's bot writes to every peer's
//! chat over one token. Whether data may go on it ([`Breaker`]), whether
//! answers sent on it arrive ([`Answers`]) and how long a round trip takes
//! are facts about one destination, not the link: a chat that is gone (the
//! provider answers 400) must not close the link to every other peer, and a
//! peer whose network swallows replies must not send the others' replies
//! elsewhere. So they are kept per destination address, and the link as a
//! whole is shown as its best destination ([`Judges::summary`]).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::answers::Answers;
use super::breaker::{self, Breaker};
use crate::transport::Address;

/// Most destinations a link keeps judgements of. Destinations are trusted
/// peers' addresses (the engine sends to nobody else), so this only bounds
/// memory against a mistake; over it, the quietest judgement goes.
const MAX_DESTINATIONS: usize = 4096;

/// One destination, as this link has found it.
#[derive(Clone, Debug, Default)]
pub(crate) struct Judge {
    pub breaker: Breaker,
    pub answers: Answers,
    /// The smoothed round trip measured to it, if any.
    pub rtt: Option<Duration>,
}

#[derive(Default)]
pub(crate) struct Judges {
    by: HashMap<Address, Judge>,
    /// The longest any destination's circuit stays open (a party's only
    /// link is probed often: [`Breaker::cap_backoff`]).
    cap: Option<Duration>,
}

impl Judges {
    /// The judgement of `to`, made now if there was none.
    pub fn of(&mut self, to: &Address) -> &mut Judge {
        if !self.by.contains_key(to) && self.by.len() >= MAX_DESTINATIONS {
            self.forget_one();
        }
        let cap = self.cap;
        self.by.entry(to.clone()).or_insert_with(|| {
            let mut judge = Judge::default();
            if let Some(cap) = cap {
                judge.breaker.cap_backoff(cap);
            }
            judge
        })
    }

    /// The judgement of `to`, if it has one (reading never makes one).
    pub fn get(&self, to: &Address) -> Option<&Judge> {
        self.by.get(to)
    }

    pub fn cap_backoff(&mut self, d: Duration) {
        self.cap = Some(d);
        for judge in self.by.values_mut() {
            judge.breaker.cap_backoff(d);
        }
    }

    /// The link as a whole: the state of its best destination (one peer's
    /// chat being gone does not make the link down), and the shortest
    /// round trip. A link that has sent nowhere yet is closed.
    pub fn summary(&mut self, now: Instant) -> (breaker::State, Option<Duration>) {
        let rank = |s: &breaker::State| match s {
            breaker::State::Closed => 0,
            breaker::State::HalfOpen { .. } => 1,
            breaker::State::Open { .. } => 2,
        };
        let best = self
            .by
            .values_mut()
            .map(|j| j.breaker.state(now))
            .min_by_key(rank)
            .unwrap_or(breaker::State::Closed);
        let rtt = self.by.values().filter_map(|j| j.rtt).min();
        (best, rtt)
    }

    /// Make room: drop a judgement that says nothing (closed, clean, not
    /// doubted), else any.
    fn forget_one(&mut self) {
        let now = Instant::now();
        let quiet = self
            .by
            .iter()
            .find(|(_, j)| j.breaker.clean() && !j.answers.doubted(now))
            .map(|(a, _)| a.clone());
        let victim = quiet.or_else(|| self.by.keys().next().cloned());
        if let Some(a) = victim {
            self.by.remove(&a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_destination_failing_leaves_the_others_and_the_link_up() {
        let t = Instant::now();
        let mut j = Judges::default();
        let gone = "chat-gone".to_string();
        let fine = "chat-fine".to_string();
        j.of(&fine).breaker.sent(t);
        j.of(&gone).breaker.send_failed(t, true, 0.0);
        assert!(!j.of(&gone).breaker.allows_data(t));
        assert!(j.of(&fine).breaker.allows_data(t));
        assert_eq!(
            j.summary(t).0,
            breaker::State::Closed,
            "its best destination"
        );
        j.of(&fine).breaker.send_failed(t, true, 0.0);
        assert!(matches!(j.summary(t).0, breaker::State::Open { .. }));
    }

    #[test]
    fn a_cap_applies_to_destinations_known_and_new() {
        let t = Instant::now();
        let mut j = Judges::default();
        // Fail at every probe: the backoff grows towards its ceiling.
        let fail_until_long = |j: &mut Judges, to: &Address| {
            let mut at = t;
            for _ in 0..8 {
                j.of(to).breaker.send_failed(at, true, 0.0);
                at = j.of(to).breaker.reopens_at().expect("open");
            }
            at
        };
        let a = "a".to_string();
        let at = fail_until_long(&mut j, &a);
        j.of(&a).breaker.send_failed(at, true, 0.0);
        assert!(
            !j.of(&a).breaker.allows_data(at + Duration::from_secs(30)),
            "uncapped, it stays open long"
        );
        j.cap_backoff(Duration::from_secs(2));
        let b = "b".to_string();
        let bt = fail_until_long(&mut j, &b);
        for (to, when) in [(&a, at + Duration::from_secs(120)), (&b, bt)] {
            j.of(to).breaker.send_failed(when, true, 0.0);
            assert!(
                j.of(to).breaker.allows_data(when + Duration::from_secs(3)),
                "{to}: open at most the cap with jitter"
            );
        }
    }

    #[test]
    fn destinations_are_bounded() {
        let mut j = Judges::default();
        for i in 0..MAX_DESTINATIONS + 10 {
            j.of(&format!("chat-{i}"));
        }
        assert_eq!(j.by.len(), MAX_DESTINATIONS);
    }
}
