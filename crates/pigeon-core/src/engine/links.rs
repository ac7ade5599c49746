//! Which link: each frame's way to a peer, the links judged per peer.
//!
//! A node has links (one per transport) and peers; what a link knows of a
//! peer (may data go there, do answers arrive, how long a round trip
//! takes) is kept per (peer, link) address ([`crate::link`]). Here the
//! node chooses: the link control frames to a peer go on, the link each
//! chunk goes on (soonest to send it, behind what the link holds; never a
//! link that does not reach the peer; not one that lost it twice), the
//! link a small transfer's chunk goes on ahead of bulk data. And the
//! links' life: opening one per transport, watching them for failures only
//! the user can fix.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::*;
use crate::link::{self, message_payload, Inbound, LinkHandle};
use crate::transport::{self, Address, Side, TransportUri};

impl Node {
    /// Where `peer` is on `link`, if that link can reach it
    /// ([`Peer::address_on`]).
    pub(crate) fn address(&self, peer: &Peer, link: usize) -> Option<Address> {
        let handle = self.links.get(link)?;
        peer.address_on(link, handle.answers_whoever_writes())
    }

    /// Whether data for `peer` may go on `link` now: the link reaches the
    /// peer and its circuit to it is not open. Links are judged per peer:
    /// one peer's chat being gone says nothing of another's.
    pub(crate) fn usable(&self, peer: &Peer, link: usize) -> bool {
        self.address(peer, link)
            .is_some_and(|to| self.links[link].usable(&to))
    }

    /// The links that reach `peer` (all of them, if none does yet): what a
    /// transfer with it is sized and compressed for.
    pub(crate) fn links_to<'a>(&'a self, peer: &'a Peer) -> Vec<&'a LinkHandle> {
        let reach: Vec<&LinkHandle> = (0..self.links.len())
            .filter(|&i| self.address(peer, i).is_some())
            .map(|i| &self.links[i])
            .collect();
        if reach.is_empty() {
            self.links.iter().collect()
        } else {
            reach
        }
    }

    /// Tell `link` something of `peer` at its address there (nothing, if
    /// the link does not reach it).
    pub(crate) fn judge(&self, peer: &Peer, link: usize, f: impl FnOnce(&LinkHandle, &Address)) {
        if let Some(to) = self.address(peer, link) {
            f(&self.links[link], &to);
        }
    }

    /// The link control frames to `peer` go on, with the peer's address
    /// there: of the links that reach it and whose circuit to it is
    /// closed, the one with the shortest round trip (the session's when
    /// none is measured yet). A link whose answers seem not to arrive (the
    /// peer keeps asking again, [`LinkHandle::doubted`]) comes last, and a
    /// link whose last send failed after those whose did not (a lost
    /// acknowledgement costs a round trip, and one failure is enough to
    /// doubt it), then one being probed, the one whose last failure is
    /// oldest first (links that fail take turns, so one that came back is
    /// found: a seed once sent every answer for nine minutes to a link
    /// that was gone, beside one that had come back); if none is usable, the session's
    /// (its link retries it when it may), else any that reaches the peer.
    /// None: no link reaches it (a link that answers whoever writes, and
    /// the peer has not written on it).
    pub(crate) fn control_link(
        &self,
        peer: &Peer,
        preferred: usize,
    ) -> Option<(usize, &LinkHandle, Address)> {
        let preferred = preferred.min(self.links.len() - 1);
        let reach: Vec<(usize, Address)> = (0..self.links.len())
            .filter_map(|i| Some((i, self.address(peer, i)?)))
            .collect();
        let best = reach
            .iter()
            .filter(|(i, to)| self.links[*i].usable(to))
            .min_by_key(|(i, to)| {
                let link = &self.links[*i];
                (
                    link.doubted(to),
                    !link.clean(to),
                    // Among links whose last send failed: the one that
                    // failed longest ago (a failure long past says nothing
                    // of a link that works now: its `clean` says so).
                    link.last_failed(to).filter(|_| !link.clean(to)),
                    link.rtt(to).unwrap_or(Duration::MAX),
                    usize::from(*i != preferred),
                )
            })
            .or_else(|| reach.iter().find(|(i, _)| *i == preferred))
            .or_else(|| reach.first())?;
        Some((best.0, &self.links[best.0], best.1.clone()))
    }

    /// `peer` asked again for what was answered (a chunk already
    /// acknowledged came again): charge the link answers to it go on, so
    /// that a link swallowing this direction is found and left.
    ///
    /// For a timeout after answers moved off a doubted link, nothing is
    /// charged: what the peer asks again then it asked before an answer on
    /// the new link could reach it, and must not doubt that one too.
    pub(crate) fn answer_lost(&self, peer: &Peer) {
        if let Some((index, link, to)) = self.control_link(peer, self.session_link(peer)) {
            let grace = Rto::for_link(link, link.rtt(&to)).get();
            let mut moved = lock(&peer.moved_answers);
            if moved.is_some_and(|at| at.elapsed() < grace) {
                return;
            }
            let was = link.doubted(&to);
            link.answer_lost(&to);
            if !was && link.doubted(&to) {
                *moved = Some(tokio::time::Instant::now());
                tracing::debug!(link = index, peer = %peer.name, "answers on this link seem lost: others first");
            }
        }
    }

    /// `peer` moved on after our answers: the link they go on carries them.
    pub(crate) fn answers_arrive(&self, peer: &Peer) {
        if let Some((_, link, to)) = self.control_link(peer, self.session_link(peer)) {
            link.answers_arrive(&to);
        }
    }

    /// The timeout for answers from `peer` on the link control frames to
    /// it go on now.
    pub(crate) fn control_rto(&self, peer: &Peer) -> Rto {
        match self.control_link(peer, self.session_link(peer)) {
            Some((_, link, to)) => Rto::for_link(link, link.rtt(&to)),
            None => Rto::for_link(&self.links[0], None),
        }
    }

    pub(crate) fn session_link(&self, peer: &Peer) -> usize {
        peer.session.borrow().as_ref().map_or(0, |slot| slot.link)
    }

    /// Pin `peer` at the addresses the trust list gives it, on every link
    /// of their kind, and tell those links it may be written to there.
    pub(crate) fn pin(&self, peer: &Peer, addresses: &std::collections::BTreeMap<String, String>) {
        let mut pinned = HashMap::new();
        for (i, link) in self.links.iter().enumerate() {
            if let Some(address) = addresses.get(link.scheme()) {
                link.introduce(address);
                pinned.insert(i, address.clone());
            }
        }
        *lock(&peer.pinned) = pinned;
    }

    /// The link a Hello to `peer` would go on now, and the room its
    /// message has for early data besides the Hello, if that link takes
    /// early data.
    pub(crate) fn early_room(&self, peer: &Peer) -> Option<(usize, usize)> {
        if !self.early_data.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let (index, link, _) = self.control_link(peer, 0)?;
        let caps = &link.capabilities();
        caps.interval()
            .is_some_and(|i| i >= early::EARLY_MIN_INTERVAL)
            .then(|| {
                (
                    index,
                    message_payload(caps).saturating_sub(early::HELLO_OVERHEAD),
                )
            })
    }

    /// Wait for room for one data frame of up to `bytes` on any link whose
    /// circuit is not open, and take the first that has it: each link's
    /// queue drains at its own pace, so each takes chunks as fast as it
    /// carries them and a transfer runs at the sum of their paces. Returns
    /// the link index and the reservation. If every circuit is open, any
    /// link will do: its send loop holds the frame until it is probed.
    ///
    /// `rest`: the bytes of the transfer still to send, this frame
    /// included. A link takes the frame only if it would send it before
    /// the links together send all of that ([`worth_it`]).
    ///
    /// `avoid`: links (one bit each) not to use while another would do: a
    /// chunk lost there again and again goes elsewhere, whatever that link's
    /// breaker says yet.
    ///
    /// Only links that reach `peer` are used ([`Node::address`]); there is
    /// always one, the one its session came by.
    pub async fn reserve_data(
        &self,
        peer: &Peer,
        bytes: usize,
        rest: u64,
        avoid: u64,
    ) -> (usize, OwnedSemaphorePermit) {
        // One link: nothing to choose, and a waiter keeps its place in the
        // queue (looking again would put it at the back, behind smaller
        // frames of other transfers).
        if let [only] = self.links.as_slice() {
            return (0, only.reserve(bytes).await);
        }
        loop {
            let reach: Vec<usize> = (0..self.links.len())
                .filter(|&i| self.address(peer, i).is_some())
                .collect();
            let mut usable: Vec<usize> = reach
                .iter()
                .copied()
                .filter(|&i| self.usable(peer, i))
                .collect();
            if usable.is_empty() {
                usable = reach;
            }
            if usable.is_empty() {
                // Reached by none yet (it has not written on a link that
                // answers whoever writes): the session's link, where it did.
                usable = vec![self.session_link(peer).min(self.links.len() - 1)];
            }
            usable = unless_avoided(usable, avoid);
            let times: Vec<Duration> = usable
                .iter()
                .map(|&i| self.links[i].time_to_finish(bytes))
                .collect();
            let paces: Vec<Option<f64>> = usable.iter().map(|&i| self.links[i].pace()).collect();
            let worth = worth_it(&times, &paces, rest);
            // With room on several, the one that would have sent it
            // soonest, behind what it holds: each link takes chunks in
            // proportion to its pace (earliest finish first).
            let mut by_finish: Vec<(usize, Duration)> = usable
                .iter()
                .zip(times)
                .zip(worth)
                .filter_map(|((&i, t), w)| w.then_some((i, t)))
                .collect();
            // Unpaced links all finish at once: the one with the most room.
            by_finish.sort_by_key(|&(i, t)| (t, std::cmp::Reverse(self.links[i].room())));
            let usable: Vec<usize> = by_finish.into_iter().map(|(i, _)| i).collect();
            if let Some(got) = usable
                .iter()
                .find_map(|&i| self.links[i].try_reserve(bytes).map(|p| (i, p)))
            {
                return got;
            }
            let waits = usable.iter().map(|&i| {
                let link = self.links[i].clone();
                Box::pin(async move { (i, link.reserve(bytes).await) })
            });
            tokio::select! {
                (got, _, _) = futures::future::select_all(waits) => return got,
                // A circuit may have opened or closed meanwhile.
                () = tokio::time::sleep(RESERVE_RECHECK) => {}
            }
        }
    }

    /// Queue a chunk's frame for `peer` on `link`, in the room
    /// [`reserve_data`](Self::reserve_data) made there. A link that does
    /// not reach the peer drops it: its timer sends it again elsewhere.
    pub fn send_data(
        &self,
        link: usize,
        peer: &Peer,
        chunk: link::ChunkFrame,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        match self.address(peer, link) {
            Some(to) => {
                self.links[link].took_data(&to, chunk.frame.len());
                self.links[link].send_reserved(&to, chunk, permit);
            }
            None => {
                tracing::warn!(link, peer = %peer.name, "a chunk for a link that does not reach its peer")
            }
        }
    }

    /// The link a small transfer's frame of `bytes` goes on, ahead of bulk
    /// data and without a reservation: of the usable links that reach
    /// `peer` and carry it in one message, the one that sends it soonest.
    /// None: no link carries it in one message (it goes the usual way).
    /// `avoid` as for [`reserve_data`](Self::reserve_data): links not to
    /// use while another would do.
    pub(crate) fn small_link(&self, peer: &Peer, bytes: usize, avoid: u64) -> Option<usize> {
        let usable: Vec<usize> = (0..self.links.len())
            .filter(|&i| self.usable(peer, i))
            .collect();
        // Among the links it may go on (a link it was lost on twice is
        // left if another would do, even one that carries it in pieces:
        // then it goes the usual way).
        unless_avoided(usable, avoid)
            .into_iter()
            .filter(|&i| {
                message_payload(&self.links[i].capabilities())
                    >= bytes + link::WHOLE_RECORD_OVERHEAD
            })
            .min_by_key(|&i| self.links[i].time_to_send(bytes))
    }
}

/// How often a sender waiting for room on the links looks again at which
/// of them are usable.
const RESERVE_RECHECK: Duration = Duration::from_millis(250);

/// Open a link on each transport `uris` names, for the party with key id
/// `me`. `client`: a spool folder that does not exist is a typo to report,
/// not a folder to make (an agent makes it).
pub(crate) fn open_links(
    uris: &[TransportUri],
    me: KeyId,
    inbound: mpsc::Sender<Inbound>,
    client: bool,
    bwlimit: Option<&crate::bwlimit::BwLimit>,
) -> Result<Vec<LinkHandle>> {
    open_links_named(uris, &me.to_string(), inbound, client, bwlimit)
}

/// [`open_links`] for an inbox not named by a key (a pairing's slot).
pub(crate) fn open_links_named(
    uris: &[TransportUri],
    me: &str,
    inbound: mpsc::Sender<Inbound>,
    client: bool,
    bwlimit: Option<&crate::bwlimit::BwLimit>,
) -> Result<Vec<LinkHandle>> {
    let limit = bwlimit
        .filter(|b| !b.is_off())
        .map(|b| Arc::new(link::Limiter::new(b.clone())));
    if uris.is_empty() {
        return Err(CoreError::Config(
            "no transport given; pass --transport local:<SPOOL_DIR> (or set transports in config.toml)".into(),
        ));
    }
    let side = if client { Side::Client } else { Side::Agent };
    let pieces = link::shared_reassembler();
    let links: Vec<LinkHandle> = uris
        .iter()
        .enumerate()
        .map(|(i, uri)| {
            let transport = transport::open(uri, &me.to_string(), side)?;
            let own = uri
                .bwlimit()
                .map(|b| Arc::new(link::Limiter::new(b.clone())));
            let link = link::start(
                transport,
                transport::profile(uri),
                i,
                inbound.clone(),
                limit.iter().chain(own.iter()).cloned().collect(),
                pieces.clone(),
            )
            .described_as(uri.to_string());
            if let Some(reserve) = uri.reserve() {
                link.reserve_slots(reserve);
            }
            Ok(link)
        })
        .collect::<Result<_>>()?;
    if let [only] = links.as_slice() {
        // Nothing else can carry what waits for it: probe it often.
        only.cap_backoff(ONLY_LINK_BACKOFF);
    }
    Ok(links)
}

/// `links` without those `avoid` names (one bit each), unless that would
/// leave none.
fn unless_avoided(links: Vec<usize>, avoid: u64) -> Vec<usize> {
    let avoided = |i: usize| i < 64 && avoid & (1 << i) != 0;
    if links.iter().all(|&i| avoided(i)) {
        return links;
    }
    links.into_iter().filter(|&i| !avoided(i)).collect()
}

/// Which links may take a frame that each takes `times` to send (at
/// `paces`, bytes a second; None: unpaced), with `rest` bytes of its
/// transfer still to go: those that would have sent it before all of them
/// together send the rest, and always the one that sends it soonest. A
/// text channel beside a document channel would otherwise hold the
/// transfer's end for minutes on one chunk in hundreds of pieces.
fn worth_it(times: &[Duration], paces: &[Option<f64>], rest: u64) -> Vec<bool> {
    let together: Option<f64> = paces.iter().copied().sum();
    let all_of_it = together.map_or(Duration::ZERO, |p| {
        Duration::from_secs_f64(rest as f64 / p.max(1.0))
    });
    let soonest = times.iter().min().copied().unwrap_or_default();
    let bar = all_of_it.max(soonest);
    times.iter().map(|t| *t <= bar).collect()
}

/// The longest a party's only link stays out after failures.
const ONLY_LINK_BACKOFF: Duration = Duration::from_secs(5);

/// How often [`watch_links`] looks at the links' health.
const LINK_WATCH: Duration = Duration::from_millis(250);

/// Say once each link that fails for a reason only the user can fix (and
/// when it works again), and keep [`Node::unreachable`] current: a client
/// with no working link stops waiting at once instead of after its
/// `--timeout`. `agent`: the words for an agent's log, which keeps trying.
pub(crate) async fn watch_links(node: std::sync::Weak<Node>, agent: bool) {
    let mut told: HashMap<usize, String> = HashMap::new();
    loop {
        let Some(node) = node.upgrade() else { return };
        let failed: HashMap<usize, String> = node.failed_links().into_iter().collect();
        let several = node.links.len() > 1;
        for (i, why) in &failed {
            if told.get(i) == Some(why) {
                continue;
            }
            let next = match (agent, several) {
                (true, true) => "the agent carries on over its other transports and tries this one again now and then; fix the setting and restart the agent",
                (true, false) => "nothing reaches this agent until it is fixed; it tries again now and then, but fix the setting and restart the agent",
                (false, true) => "the other transports carry on without it",
                (false, false) => "nothing reaches the agent until it is fixed",
            };
            let message = format!("transport failed: {why}; {next}");
            if agent {
                node.log(LogLevel::Warn, message);
            } else {
                // A client's front end shows it from the links' health in
                // its snapshots (an event sent before it subscribed would
                // be lost); the command stops on `unreachable`.
                tracing::warn!("{message}");
            }
        }
        for i in told.keys().filter(|i| !failed.contains_key(i)) {
            node.log(
                LogLevel::Info,
                format!("transport {} works again", node.links[*i].describe()),
            );
        }
        if failed != told {
            node.touch();
        }
        told = failed;
        let now = node.no_working_link();
        node.unreachable.send_if_modified(|was| {
            let changed = *was != now;
            *was = now;
            changed
        });
        drop(node);
        tokio::time::sleep(LINK_WATCH).await;
    }
}
