//! Download rates: the client asks, the agent paces.
//!
//! A party's own `--bwlimit` (and a link's `bwlimit=`) paces what it sends
//! ([`crate::link::Limiter`]). A download is sent by the agent, so the DOWN
//! part of a client's `--bwlimit UP:DOWN` is a request: the client says it
//! in a [`Control::Rate`] beside each fetch ([`Asked::tell`]), once on each
//! of its links, with that link's own DOWN rate; the agent keeps it per
//! peer and session ([`Gate`]) and its sender for that peer waits on it
//! ([`Gate::admit`], [`Gate::charge`]) before each chunk, on top of the
//! agent's own limits. So what reaches the client never goes faster than
//! it asked (the agent's own `--bwlimit` may make it slower still).
//!
//! ```text
//! client: Fetch, Rate{down, on_link} on each link ──▶ agent router: Gate::set
//! agent sender: Gate::admit ─▶ reserve a link ─▶ send ─▶ Gate::charge
//! ```
//!
//! Both pacers are GCRAs with no burst, like the links' own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{lock, Node, Peer};
use crate::bwlimit::{BwLimit, Rate};
use crate::protocol::Control;
use crate::transport::TransportUri;

/// What a client asks of downloads: its `--bwlimit`'s DOWN part over all
/// its links, and each link's own `bwlimit=` DOWN part.
#[derive(Debug, Default)]
pub(crate) struct Asked {
    total: Option<BwLimit>,
    links: Vec<Option<BwLimit>>,
}

impl Asked {
    pub fn new(total: Option<&BwLimit>, uris: &[TransportUri]) -> Asked {
        Asked {
            total: total.cloned(),
            links: uris.iter().map(|u| u.bwlimit().cloned()).collect(),
        }
    }

    /// True when no limit ever asks for a download rate: then nothing is
    /// said, and an agent of any age sends as it always did.
    pub fn is_empty(&self) -> bool {
        let never = |b: &Option<BwLimit>| b.as_ref().is_none_or(|b| !b.limits_down());
        never(&self.total) && self.links.iter().all(never)
    }

    /// The rates in force now, by the local clock: over all links, and on
    /// each link (by index).
    pub fn now(&self) -> (Rate, Vec<Rate>) {
        let now = jiff::Zoned::now();
        let weekday = now.weekday().to_monday_zero_offset() as u8;
        let minute = now.hour() as u16 * 60 + now.minute() as u16;
        let at = |b: &Option<BwLimit>| b.as_ref().and_then(|b| b.at(weekday, minute).down);
        (at(&self.total), self.links.iter().map(at).collect())
    }

    /// Tell the agent, once on each link (it learns each link's own rate
    /// from the link the message came on). Sent after a fetch, never
    /// before: an agent that predates [`Control::Rate`] cannot open it,
    /// and a session whose first frame does not open is taken for one made
    /// from a stale handshake.
    pub fn tell(&self, node: &Node, peer: &Peer) {
        if self.is_empty() {
            return;
        }
        let (down, links) = self.now();
        for (link, on_link) in links.into_iter().enumerate() {
            send_on(node, peer, link, &Control::Rate { down, on_link });
        }
    }
}

/// Seal `control` in the peer's current session and queue it on `link`
/// (not on the link control frames usually take: the message says
/// something about the link it comes on).
fn send_on(node: &Node, peer: &Peer, link: usize, control: &Control) -> bool {
    let Some(slot) = peer.session.borrow().clone() else {
        return false;
    };
    let Some(handle) = node.links.get(link) else {
        return false;
    };
    // Only where the link reaches the peer (a link that answers whoever
    // writes, and the peer has not written on it: no address there).
    let Some(to) = node.address(peer, link) else {
        return false;
    };
    match node.seal(&slot, control) {
        Ok(frame) => {
            handle.send_control(&to, frame, None);
            true
        }
        Err(_) => false,
    }
}

/// One rate's pace: when the next frame may leave.
#[derive(Clone, Copy, Debug)]
struct Pace {
    rate: u64,
    next_free: Instant,
}

impl Pace {
    fn new(rate: Rate, now: Instant) -> Option<Pace> {
        rate.map(|rate| Pace {
            rate: rate.max(1),
            next_free: now,
        })
    }

    fn charge(&mut self, bytes: usize, now: Instant) {
        let cost = Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        self.next_free = self.next_free.max(now) + cost;
    }
}

/// The rates one peer asked its downloads be sent at, in the session it
/// asked them in (a new session, a new client run, asks afresh: until it
/// does, nothing is paced).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    inner: Mutex<Asks>,
}

#[derive(Debug, Default)]
struct Asks {
    session: Option<[u8; 16]>,
    total: Option<Pace>,
    links: HashMap<usize, Pace>,
}

/// What [`Gate::admit`] says of the next frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// It may go now, on any link not in `closed` (one bit each).
    Now { closed: u64 },
    /// Nothing may go before then.
    Until(Instant),
}

impl Gate {
    /// The peer asked, in `session`, on `link`: at most `down` over all
    /// links, and `on_link` on this one. A rate already in force keeps
    /// its debt (asking again does not buy a burst).
    pub fn set(&self, session: [u8; 16], link: usize, down: Rate, on_link: Rate, now: Instant) {
        let mut asks = lock(&self.inner);
        if asks.session != Some(session) {
            *asks = Asks {
                session: Some(session),
                ..Asks::default()
            };
        }
        asks.total = keep_debt(asks.total, down, now);
        match keep_debt(asks.links.get(&link).copied(), on_link, now) {
            Some(p) => asks.links.insert(link, p),
            None => asks.links.remove(&link),
        };
    }

    /// Whether a frame may leave now, in `session`, on which of `usable`
    /// (the links whose circuits are closed; all of them if none is).
    pub fn admit(&self, session: Option<[u8; 16]>, usable: &[bool], now: Instant) -> Admit {
        let asks = lock(&self.inner);
        if session.is_none() || asks.session != session {
            return Admit::Now { closed: 0 };
        }
        if let Some(t) = asks.total.filter(|p| p.next_free > now) {
            return Admit::Until(t.next_free);
        }
        let free_at = |i: usize| asks.links.get(&i).map_or(now, |p| p.next_free);
        let closed: u64 = (0..usable.len().min(64))
            .filter(|&i| free_at(i) > now)
            .fold(0, |m, i| m | 1 << i);
        let any_usable = usable.iter().any(|&u| u);
        let candidates = (0..usable.len().min(64)).filter(|&i| usable[i] || !any_usable);
        if candidates.clone().any(|i| closed & (1 << i) == 0) {
            return Admit::Now { closed };
        }
        // Every link that could take it is paced out: wait for the first.
        match candidates.map(free_at).min() {
            Some(t) => Admit::Until(t),
            None => Admit::Now { closed: 0 },
        }
    }

    /// A frame of `bytes` left on `link` at `now`, in `session`.
    pub fn charge(&self, session: Option<[u8; 16]>, link: usize, bytes: usize, now: Instant) {
        let mut asks = lock(&self.inner);
        if session.is_none() || asks.session != session {
            return;
        }
        if let Some(p) = asks.total.as_mut() {
            p.charge(bytes, now);
        }
        if let Some(p) = asks.links.get_mut(&link) {
            p.charge(bytes, now);
        }
    }
}

/// The pace for `rate`, keeping `old`'s next free time if there was one.
fn keep_debt(old: Option<Pace>, rate: Rate, now: Instant) -> Option<Pace> {
    let mut pace = Pace::new(rate, now)?;
    if let Some(old) = old {
        pace.next_free = old.next_free;
    }
    Some(pace)
}

/// Each peer's [`Gate`], by name (the agent's).
#[derive(Debug, Default)]
pub(crate) struct Gates {
    by_peer: Mutex<HashMap<String, Arc<Gate>>>,
}

impl Gates {
    pub fn of(&self, peer: &str) -> Arc<Gate> {
        lock(&self.by_peer)
            .entry(peer.to_string())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: [u8; 16] = [7; 16];

    #[test]
    fn an_asked_rate_paces_every_link_and_a_link_rate_only_its_own() {
        let t = Instant::now();
        let gate = Gate::default();
        gate.set(S, 0, Some(100_000), None, t);
        gate.set(S, 1, Some(100_000), Some(10_000), t);
        assert_eq!(
            gate.admit(Some(S), &[true, true], t),
            Admit::Now { closed: 0 }
        );
        // 50 KB on link 0: the whole rate is spent for half a second.
        gate.charge(Some(S), 0, 50_000, t);
        let half = t + Duration::from_millis(500);
        assert_eq!(gate.admit(Some(S), &[true, true], t), Admit::Until(half));
        assert_eq!(
            gate.admit(Some(S), &[true, true], half),
            Admit::Now { closed: 0 }
        );
        // 10 KB on link 1 spends its own rate for a second, the total's for
        // a tenth: link 0 may still go, link 1 may not.
        gate.charge(Some(S), 1, 10_000, half);
        let after = half + Duration::from_millis(100);
        assert_eq!(
            gate.admit(Some(S), &[true, true], after),
            Admit::Now { closed: 0b10 }
        );
        // With link 0 out, the next frame waits for link 1.
        let free = half + Duration::from_secs(1);
        assert_eq!(
            gate.admit(Some(S), &[false, true], after),
            Admit::Until(free)
        );
    }

    #[test]
    fn a_rate_holds_only_in_the_session_that_asked_it() {
        let t = Instant::now();
        let gate = Gate::default();
        gate.set(S, 0, Some(1_000), None, t);
        gate.charge(Some(S), 0, 10_000, t);
        assert!(matches!(gate.admit(Some(S), &[true], t), Admit::Until(_)));
        assert_eq!(
            gate.admit(Some([8; 16]), &[true], t),
            Admit::Now { closed: 0 }
        );
        assert_eq!(gate.admit(None, &[true], t), Admit::Now { closed: 0 });
        // A new session that asks nothing is unpaced; asking again keeps
        // no debt of the old session.
        gate.set([8; 16], 0, None, None, t);
        assert_eq!(
            gate.admit(Some([8; 16]), &[true], t),
            Admit::Now { closed: 0 }
        );
    }

    #[test]
    fn asking_again_keeps_the_debt_and_off_lifts_the_limit() {
        let t = Instant::now();
        let gate = Gate::default();
        gate.set(S, 0, Some(1_000), None, t);
        gate.charge(Some(S), 0, 1_000, t);
        gate.set(S, 0, Some(1_000), None, t);
        let second = t + Duration::from_secs(1);
        assert_eq!(gate.admit(Some(S), &[true], t), Admit::Until(second));
        gate.set(S, 0, None, None, t);
        assert_eq!(gate.admit(Some(S), &[true], t), Admit::Now { closed: 0 });
    }

    #[test]
    fn a_client_asks_only_the_down_part_and_says_nothing_without_one() {
        let uri = |s: &str| TransportUri::parse(s).expect("a test URI");
        let up_only = BwLimit::parse("1M:off").expect("a limit");
        let none = Asked::new(Some(&up_only), &[uri("local:/tmp/x")]);
        assert!(none.is_empty());
        let both = BwLimit::parse("off:100k").expect("a limit");
        let links = [uri("local:/tmp/x"), uri("local:/tmp/y?bwlimit=1M:20k")];
        let asked = Asked::new(Some(&both), &links);
        assert!(!asked.is_empty());
        assert_eq!(asked.now(), (Some(100 * 1024), vec![None, Some(20 * 1024)]));
        // A link's own DOWN alone is a request too.
        let asked = Asked::new(None, &links);
        assert_eq!(asked.now(), (None, vec![None, Some(20 * 1024)]));
    }

    #[test]
    fn a_rate_message_round_trips_and_names_no_transfer() {
        let rate = Control::Rate {
            down: Some(100 * 1024),
            on_link: None,
        };
        let back = Control::decode(&rate.encode().expect("encodes")).expect("decodes");
        assert_eq!(back, rate);
        assert_eq!(rate.transfer(), None);
        // The variants before it keep their numbers: a Fetch encoded today
        // is what an older agent reads.
        let fetch = Control::Fetch {
            transfer: crate::view::TransferId([1; 16]),
            path: "a".into(),
            base: None,
        };
        let bytes = fetch.encode().expect("encodes");
        assert_eq!(bytes[1], 7, "Fetch is the eighth variant");
    }
}
