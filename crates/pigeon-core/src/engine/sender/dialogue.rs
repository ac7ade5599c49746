//! The sender's side of the conversation: offering, sending, finishing,
//! and when to speak again to a receiver that has not answered.
//!
//! ```text
//! Offering --Accept / Ack--> Sending --every chunk acknowledged--> (hash) --> Finishing
//!    ^  '-- unanswered: offer again after 2, 4, 8, 16 round trips (60 s at most)
//!    '----- Sending, nothing heard for 3 round trips: offer again (a receiver
//!           that restarted without our session answers with what it holds)
//! Finishing --Ack with gaps--> Sending      Finishing --Fetch--> offer, then Finish at once
//! ```
//!
//! Pure: no I/O, no clock (what needs the time takes `now` and the round
//! trip). The sender does what [`Dialogue::due`] says and reports back
//! what it sent; answers go through [`Dialogue::answer`], which says how
//! much of an acknowledgement to believe.

use std::time::Duration;

use tokio::time::Instant;

use super::window::AckScope;

/// Where the conversation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Offering,
    Sending,
    Finishing,
}

/// Something the sender must do by itself, now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// The receiver said nothing for the silence limit: stop.
    Silent,
    /// Every chunk is acknowledged: hash the whole file, then
    /// [`Dialogue::hashed`].
    Hash,
    /// Send the Finish (the whole file's hash), then [`Dialogue::finish_sent`].
    Finish,
    /// Send the offer, then [`Dialogue::offer_sent`].
    Offer,
}

/// The receiver's answers that say what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// To an offer.
    Accept,
    /// To chunks, or to a Finish.
    Ack,
}

/// How to take in an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Take {
    pub scope: AckScope,
    /// It answers our offer or finish: what it does not hold is lost,
    /// also what was acknowledged before (the receiver restarted).
    pub forget_missing: bool,
}

/// How soon a control frame that found no link ready is tried again.
const RETRY_UNSENT: Duration = Duration::from_millis(200);
/// The longest between two offers nobody answers.
const OFFER_MAX_WAIT: Duration = Duration::from_secs(60);
/// Round trips without a word, while sending, before the sender asks.
const QUIET_RTTS: u32 = 3;

pub(crate) struct Dialogue {
    phase: Phase,
    /// Which keying answers must be about ([`crate::protocol::Manifest::epoch`]).
    epoch: [u8; 8],
    /// An offer or a finish went out and its answer has not come: only
    /// then is a whole answer taken in (O(chunks)); other acknowledgements
    /// are read only for the chunks in flight, so a peer that floods them
    /// costs O(window) each.
    answer_due: bool,
    /// Offers sent since the receiver last answered.
    offers_unanswered: u32,
    /// When to offer (or finish) again.
    resync_at: Option<Instant>,
    last_heard: Instant,
    silence_limit: Duration,
}

impl Dialogue {
    pub fn new(epoch: [u8; 8], silence_limit: Duration, now: Instant) -> Dialogue {
        Dialogue {
            phase: Phase::Offering,
            epoch,
            answer_due: false,
            offers_unanswered: 0,
            resync_at: None,
            last_heard: now,
            silence_limit,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// What to do now, if anything; asked again after each is done.
    /// `all_acked`: the receiver holds every chunk.
    pub fn due(&self, now: Instant, rto: Duration, all_acked: bool) -> Option<Due> {
        let resync_due = self.resync_at.is_none_or(|t| t <= now);
        if now.duration_since(self.last_heard) > self.silence_limit {
            return Some(Due::Silent);
        }
        match self.phase {
            Phase::Sending if all_acked => Some(Due::Hash),
            Phase::Finishing if resync_due => Some(Due::Finish),
            Phase::Offering if self.resync_at.is_some_and(|t| t <= now) => Some(Due::Offer),
            // Chunks going out but nothing coming back: the receiver may
            // have restarted without our session. A sealed offer makes it
            // say so (and answers with what it holds if it did not).
            Phase::Sending if self.quiet(now, rto) && resync_due => Some(Due::Offer),
            _ => None,
        }
    }

    /// An offer or a Finish went and its answer has not come yet.
    pub fn awaiting_answer(&self) -> bool {
        self.answer_due
    }

    /// Nothing heard for a few round trips: probe with offers, do not pour
    /// chunks into the void.
    pub fn quiet(&self, now: Instant, rto: Duration) -> bool {
        now.duration_since(self.last_heard) > rto * QUIET_RTTS
    }

    /// The whole file is hashed: finish.
    pub fn hashed(&mut self) {
        self.phase = Phase::Finishing;
        self.resync_at = None;
    }

    pub fn finish_sent(&mut self, now: Instant, rto: Duration) {
        self.answer_due = true;
        self.resync_at = Some(now + rto);
    }

    /// An offer was handed to a link (`sent`) or found none ready.
    /// Answering an offer costs the receiver a few syncs to disk, more than
    /// a chunk's round trip: wait two, then back off while it is
    /// unanswered (each repeat also forces a message out).
    pub fn offer_sent(&mut self, sent: bool, now: Instant, rto: Duration) {
        self.answer_due |= sent;
        self.offers_unanswered = self.offers_unanswered.saturating_add(u32::from(sent));
        let wait = if sent {
            rto * 2u32.pow(self.offers_unanswered.clamp(1, 4))
        } else {
            RETRY_UNSENT
        };
        self.resync_at = Some(now + wait.min(OFFER_MAX_WAIT));
    }

    /// The offer and the first chunks went in the Hello that opened the
    /// session: sending, with the offer's answer due.
    pub fn went_early(&mut self) {
        self.phase = Phase::Sending;
        self.answer_due = true;
        self.offers_unanswered = 1;
        self.resync_at = None;
    }

    /// A control frame from the receiver (authenticated by the session).
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.offers_unanswered = 0;
    }

    /// An answer saying what the receiver holds, about keying `epoch`: how
    /// to take it into the window, then [`Dialogue::applied`]. None when it
    /// is about another keying (an older run's, replayed) and is dropped.
    pub fn answer(&mut self, kind: Answer, epoch: [u8; 8]) -> Option<Take> {
        if epoch != self.epoch {
            return None;
        }
        if self.phase == Phase::Offering {
            // An acknowledgement means it was accepted before.
            self.phase = Phase::Sending;
            self.resync_at = None;
        }
        let due = std::mem::take(&mut self.answer_due);
        let take = Take {
            scope: if due {
                AckScope::All
            } else {
                AckScope::InFlight
            },
            // What the receiver holds now is the truth, also when it holds
            // less than we thought; an acknowledgement that is not the
            // answer to our Finish says only what arrived.
            forget_missing: due && (kind == Answer::Accept || self.phase == Phase::Finishing),
        };
        Some(take)
    }

    /// An answer of `kind` is in the window; `all_acked`: the receiver
    /// holds every chunk.
    pub fn applied(&mut self, kind: Answer, all_acked: bool) {
        if kind == Answer::Ack && self.phase == Phase::Finishing && !all_acked {
            // Answering our Finish with gaps: send them again.
            self.phase = Phase::Sending;
        }
    }

    /// The receiver asked for the file (it restarted): offer again (after
    /// `offer_sent`), and when finishing, follow it with the Finish at
    /// once. A receiver that restarted opens its partial file only on an
    /// offer and ignores a Finish before it (found by the simulator, seed
    /// 185: a download whose client was killed after the last chunk's
    /// acknowledgement fetched and was told Finish for ever).
    pub fn fetched(&mut self) {
        if self.phase == Phase::Finishing {
            self.resync_at = None;
        }
    }

    /// A new session (the other side restarted, or this one did): whether
    /// to ask again what the receiver holds.
    pub fn reoffer_on_new_session(&self) -> bool {
        self.phase != Phase::Finishing
    }

    /// When to wake for the conversation's sake. A time already past is no
    /// reason to wake: while chunks flow and answers come it stays past,
    /// and waking for it would spin the loop until the peer fell quiet
    /// (found by the simulator, seed 15: a paused clock never advanced).
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.resync_at.filter(|&t| t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTO: Duration = Duration::from_secs(1);
    const EPOCH: [u8; 8] = [7; 8];
    const LIMIT: Duration = Duration::from_secs(120);

    fn fresh() -> (Dialogue, Instant) {
        let t0 = Instant::now();
        (Dialogue::new(EPOCH, LIMIT, t0), t0)
    }

    /// Offer through the dialogue, as the sender does.
    fn offer(d: &mut Dialogue, now: Instant) {
        d.offer_sent(true, now, RTO);
    }

    /// An answer, taken in, leaving the receiver holding all (`all_acked`)
    /// or not; how it was to be taken.
    fn answer(d: &mut Dialogue, kind: Answer, epoch: [u8; 8], all_acked: bool) -> Option<Take> {
        let take = d.answer(kind, epoch)?;
        d.applied(kind, all_acked);
        Some(take)
    }

    #[test]
    fn an_offer_is_repeated_with_backoff_until_answered() {
        let (mut d, t0) = fresh();
        assert_eq!(
            d.due(t0, RTO, false),
            None,
            "the first offer is the driver's"
        );
        offer(&mut d, t0);
        let mut at = t0;
        for wait in [2, 4, 8, 16, 16] {
            let next = d.next_wake(at).expect("a repeat is planned");
            assert_eq!(next - at, RTO * wait);
            assert_eq!(d.due(next - Duration::from_millis(1), RTO, false), None);
            assert_eq!(d.due(next, RTO, false), Some(Due::Offer));
            offer(&mut d, next);
            at = next;
        }
        // A slow channel's round trip: never more than a minute apart.
        d.offer_sent(true, at, Duration::from_secs(30));
        assert_eq!(d.next_wake(at).unwrap() - at, OFFER_MAX_WAIT);
        // No link ready: again soon, without counting it.
        let (mut d, t0) = fresh();
        d.offer_sent(false, t0, RTO);
        assert_eq!(d.next_wake(t0).unwrap() - t0, RETRY_UNSENT);
        d.offer_sent(true, t0, RTO);
        assert_eq!(
            d.next_wake(t0).unwrap() - t0,
            RTO * 2,
            "the first sent offer"
        );
    }

    #[test]
    fn accept_starts_sending_and_is_believed_in_full() {
        let (mut d, t0) = fresh();
        offer(&mut d, t0);
        d.heard(t0 + RTO);
        let took = answer(&mut d, Answer::Accept, EPOCH, false);
        assert_eq!(d.phase(), Phase::Sending);
        assert_eq!(
            took,
            Some(Take {
                scope: AckScope::All,
                forget_missing: true
            })
        );
        // Later acknowledgements are read only for the chunks in flight.
        let took = answer(&mut d, Answer::Ack, EPOCH, false);
        assert_eq!(took.unwrap().scope, AckScope::InFlight);
        assert!(!took.unwrap().forget_missing);
        assert_eq!(d.next_wake(t0 + RTO), None, "no offer is planned");
    }

    #[test]
    fn an_answer_about_another_keying_changes_nothing() {
        let (mut d, t0) = fresh();
        offer(&mut d, t0);
        assert_eq!(answer(&mut d, Answer::Accept, [8; 8], true), None);
        assert_eq!(d.phase(), Phase::Offering);
        assert_eq!(d.due(t0 + RTO * 2, RTO, false), Some(Due::Offer));
    }

    #[test]
    fn an_ack_while_offering_means_it_was_accepted() {
        let (mut d, t0) = fresh();
        offer(&mut d, t0);
        let t = answer(&mut d, Answer::Ack, EPOCH, false).unwrap();
        assert_eq!(t.scope, AckScope::All, "it answers the offer");
        assert!(!t.forget_missing, "an ack says only what arrived");
        assert_eq!(d.phase(), Phase::Sending);
    }

    #[test]
    fn every_chunk_acknowledged_hashes_then_finishes_and_repeats_it() {
        let (mut d, t0) = fresh();
        d.went_early();
        assert_eq!(d.due(t0, RTO, false), None);
        assert_eq!(d.due(t0, RTO, true), Some(Due::Hash));
        d.hashed();
        assert_eq!(d.phase(), Phase::Finishing);
        assert_eq!(d.due(t0, RTO, true), Some(Due::Finish));
        d.finish_sent(t0, RTO);
        assert_eq!(d.due(t0 + RTO / 2, RTO, true), None);
        assert_eq!(
            d.due(t0 + RTO, RTO, true),
            Some(Due::Finish),
            "unanswered: again"
        );
        assert!(
            !d.reoffer_on_new_session(),
            "finishing goes on through a new session"
        );
    }

    #[test]
    fn a_finish_answered_with_gaps_goes_back_to_sending() {
        let (mut d, t0) = fresh();
        d.went_early();
        d.hashed();
        d.finish_sent(t0, RTO);
        d.heard(t0 + RTO / 2);
        let t = answer(&mut d, Answer::Ack, EPOCH, false).unwrap();
        assert_eq!(t.scope, AckScope::All);
        assert!(t.forget_missing, "the answer to a Finish is the truth");
        assert_eq!(d.phase(), Phase::Sending);
        // Once the gaps are acknowledged: hash (cheap, it is kept) and finish.
        assert_eq!(d.due(t0 + RTO, RTO, true), Some(Due::Hash));
        // An ack that completes it while finishing stays finishing.
        d.hashed();
        d.finish_sent(t0 + RTO, RTO);
        assert!(answer(&mut d, Answer::Ack, EPOCH, true).is_some());
        assert_eq!(d.phase(), Phase::Finishing);
    }

    #[test]
    fn a_fetch_while_finishing_is_offered_and_finished_at_once() {
        // Seed 185: the receiver restarted and fetches; it ignores a
        // Finish until it has the offer.
        let (mut d, t0) = fresh();
        d.went_early();
        d.hashed();
        d.finish_sent(t0, RTO);
        let t1 = t0 + RTO / 4;
        d.heard(t1);
        d.offer_sent(true, t1, RTO);
        d.fetched();
        assert_eq!(
            d.due(t1, RTO, true),
            Some(Due::Finish),
            "the Finish follows at once"
        );
        // While sending, the fetch's offer is simply repeated if need be.
        let (mut d, t0) = fresh();
        d.went_early();
        d.offer_sent(true, t0, RTO);
        d.fetched();
        assert_eq!(d.due(t0, RTO, false), None);
    }

    #[test]
    fn a_quiet_receiver_is_probed_with_offers_not_chunks() {
        let (mut d, t0) = fresh();
        d.went_early();
        assert!(answer(&mut d, Answer::Accept, EPOCH, false).is_some());
        d.heard(t0);
        assert!(!d.quiet(t0 + RTO * 3, RTO));
        assert_eq!(d.due(t0 + RTO * 3, RTO, false), None);
        let t1 = t0 + RTO * 3 + Duration::from_millis(1);
        assert!(d.quiet(t1, RTO));
        assert_eq!(d.due(t1, RTO, false), Some(Due::Offer));
        offer(&mut d, t1);
        assert_eq!(d.due(t1, RTO, false), None, "once, then after its backoff");
        assert_eq!(d.due(t1 + RTO * 2, RTO, false), Some(Due::Offer));
        assert!(d.reoffer_on_new_session());
    }

    #[test]
    fn silence_past_the_limit_stops_whatever_the_phase() {
        let (mut d, t0) = fresh();
        offer(&mut d, t0);
        assert_eq!(d.due(t0 + LIMIT, RTO, false), Some(Due::Offer));
        let late = t0 + LIMIT + Duration::from_millis(1);
        assert_eq!(d.due(late, RTO, false), Some(Due::Silent));
        d.heard(late);
        assert_ne!(d.due(late, RTO, false), Some(Due::Silent));
        d.hashed();
        assert_eq!(
            d.due(late + LIMIT + Duration::from_millis(1), RTO, true),
            Some(Due::Silent)
        );
    }

    #[test]
    fn an_early_offer_counts_as_one_unanswered() {
        let (mut d, t0) = fresh();
        d.went_early();
        assert_eq!(d.phase(), Phase::Sending);
        // Quiet after the Hello: the next offer backs off as a second one.
        let t1 = t0 + RTO * 4;
        assert_eq!(d.due(t1, RTO, false), Some(Due::Offer));
        offer(&mut d, t1);
        assert_eq!(d.next_wake(t1).unwrap() - t1, RTO * 4);
    }
}
