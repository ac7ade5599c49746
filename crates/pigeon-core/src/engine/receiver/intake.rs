//! The receiver's bookkeeping: which chunks it holds, when it says so,
//! when it asks again, and when it gives up on a silent sender.
//!
//! Pure: no I/O, no clock (what needs the time takes `now`). The receiver
//! opens and writes each chunk and makes its acknowledgements durable; this
//! decides what a chunk is (new, a duplicate, out of range, in order for
//! the running hash), when an acknowledgement is due and what it names,
//! when a downloading client repeats its fetch, and what a Finish needs.
//!
//! ```text
//!            chunk (new) ──> held, unsynced ──ack timer──> Ack{have} in flight
//!                               ^                               │ durable, sent
//!            chunk (dup) ──> ack timer armed                    v
//!                               '──────────────────────────── settled
//! Finish: incomplete ──> acknowledge first;  complete ──> verify (running
//!         hash if every chunk came in order, else read the file back)
//! ```

use std::time::Duration;

use tokio::time::Instant;

use crate::bitmap::Bitmap;

/// The longest a downloading receiver stays quiet before asking the
/// sender again (one small message a minute at worst).
pub(crate) const REFETCH_MAX: Duration = Duration::from_secs(60);

/// How soon a fetch that could not be handed to a link is tried again.
const FETCH_RETRY: Duration = Duration::from_millis(200);

/// What an arriving chunk is, before it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Beyond the file's last chunk: corrupt (or hostile).
    OutOfRange,
    /// Held already: count it, and say again what is held.
    Duplicate,
    /// New: open it and write it. `extends_hash`: it is the next chunk of
    /// an unbroken run from the first, so the running hash takes it.
    New { extends_hash: bool },
}

/// An acknowledgement to make durable and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AckPlan {
    /// Chunks were written since the last sync: sync the file first.
    pub sync: bool,
    /// Every chunk held when the plan was made (and only those).
    pub have: Bitmap,
}

/// What a Finish from the sender needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinishStep {
    /// Chunks are missing: acknowledge what is held so they are resent.
    AckFirst,
    /// Every chunk is held: verify the whole file. `running`: the running
    /// hash saw every chunk in order and is the file's; else read it back.
    Verify { running: bool },
}

pub(crate) struct Intake {
    have: Bitmap,
    highest: Option<u32>,
    /// The next chunk the running hash needs; None once a gap broke it.
    hash_next: Option<u32>,
    unsynced: bool,
    ack_delay: Duration,
    ack_due: Option<Instant>,
    ack_in_flight: bool,
    /// This side fetches (a download's client) and repeats its fetch.
    initiator: bool,
    fetch_at: Option<Instant>,
    silence_limit: Duration,
    last_heard: Instant,
}

impl Intake {
    /// `have`: the chunks a previous run made durable.
    pub fn new(
        have: Bitmap,
        ack_delay: Duration,
        initiator: bool,
        silence_limit: Duration,
        now: Instant,
    ) -> Intake {
        let hash_next = (have.count() == 0).then_some(0);
        Intake {
            have,
            highest: None,
            hash_next,
            unsynced: false,
            ack_delay,
            ack_due: None,
            ack_in_flight: false,
            initiator,
            fetch_at: None,
            silence_limit,
            last_heard: now,
        }
    }

    pub fn have(&self) -> &Bitmap {
        &self.have
    }

    /// Start over with `chunks` chunks, none held (a new manifest or key).
    /// The caller has waited for any acknowledgement in flight: it was of
    /// the old keying, and the next one is of the new.
    pub fn reset(&mut self, chunks: u32) {
        self.have = Bitmap::new(chunks);
        self.highest = None;
        self.hash_next = Some(0);
        self.unsynced = false;
        self.ack_in_flight = false;
        self.ack_due = None;
    }

    /// What was held is gone (the partial file was deleted).
    pub fn forget(&mut self) {
        self.have = Bitmap::new(self.have.len());
        self.hash_next = None;
    }

    /// Chunk `index` arrived (not yet opened).
    pub fn arrive(&self, index: u32) -> Arrival {
        if index >= self.have.len() {
            return Arrival::OutOfRange;
        }
        if self.have.get(index) {
            return Arrival::Duplicate;
        }
        // Nothing changes until the chunk opened under the key: a forged
        // chunk from anyone on the channel must not cost the running hash.
        Arrival::New {
            extends_hash: self.hash_next == Some(index),
        }
    }

    /// Chunk `index` opened under the key and is written (not yet synced):
    /// the sender is there. Returns whether it came after a later chunk.
    pub fn stored(&mut self, index: u32, extended_hash: bool, now: Instant, rto: Duration) -> bool {
        let reordered = self.highest.is_some_and(|h| index < h);
        self.highest = Some(self.highest.map_or(index, |h| h.max(index)));
        self.have.set(index);
        self.unsynced = true;
        // A gap or a chunk from an earlier run ends the running hash: the
        // file is read back at the end instead.
        self.hash_next = extended_hash.then_some(index + 1);
        self.last_heard = now;
        if self.initiator {
            // Chunks are flowing: no need to ask again soon.
            self.fetch_at = Some(now + refetch_after(rto));
        }
        self.arm_ack(now);
        reordered
    }

    /// A control frame from the sender arrived (they are authenticated by
    /// the session).
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// The sender has said nothing (authentic) for longer than the limit.
    pub fn silent(&self, now: Instant) -> bool {
        now.duration_since(self.last_heard) > self.silence_limit
    }

    /// A copy of a chunk held already opened under the key: the sender
    /// sent it again, so our acknowledgement may be lost. Say again what
    /// is held. (Only after it opened: anyone on the channel can write a
    /// chunk frame, and a forged one must not make us write.)
    pub fn duplicate_opened(&mut self, now: Instant) {
        self.arm_ack(now);
    }

    fn arm_ack(&mut self, now: Instant) {
        if self.ack_due.is_none() {
            self.ack_due = Some(now + self.ack_delay);
        }
    }

    /// The acknowledgement timer, at `now`: what to make durable and send,
    /// if it is due and none is in flight (one at a time: a later one
    /// waits its turn, so an older one never lands after it).
    pub fn ack_timer(&mut self, now: Instant) -> Option<AckPlan> {
        if self.ack_due.is_none_or(|t| t > now) {
            return None;
        }
        if self.ack_in_flight {
            self.ack_due = Some(now + self.ack_delay);
            return None;
        }
        Some(self.ack_now())
    }

    /// An acknowledgement of everything held, now (answering a Finish with
    /// gaps, say). The caller has settled any in flight first.
    pub fn ack_now(&mut self) -> AckPlan {
        self.ack_due = None;
        self.ack_in_flight = true;
        AckPlan {
            sync: std::mem::take(&mut self.unsynced),
            have: self.have.clone(),
        }
    }

    /// Whether an acknowledgement is being made durable and sent.
    #[cfg(test)]
    pub fn ack_in_flight(&self) -> bool {
        self.ack_in_flight
    }

    /// The acknowledgement in flight is durable and sent (or failed).
    pub fn ack_settled(&mut self) {
        self.ack_in_flight = false;
    }

    /// Everything held is being made durable outside an acknowledgement
    /// (on a pause, an offer, a finish): nothing is left unsynced.
    pub fn synced(&mut self) -> bool {
        std::mem::take(&mut self.unsynced)
    }

    /// The fetch timer, at `now`: whether to send the fetch again.
    pub fn fetch_due(&self, now: Instant) -> bool {
        self.fetch_at.is_some_and(|t| t <= now)
    }

    /// A fetch went out (`sent`) or found no link ready. Unanswered, it is
    /// repeated after two round trips, never more than [`REFETCH_MAX`].
    pub fn fetched(&mut self, sent: bool, now: Instant, rto: Duration) {
        let wait = if sent {
            (rto * 2).min(REFETCH_MAX)
        } else {
            FETCH_RETRY
        };
        self.fetch_at = Some(now + wait);
    }

    /// The sender offered the file and was answered: a downloading client
    /// waits for chunks, and asks again if they do not come.
    pub fn answered_offer(&mut self, now: Instant, rto: Duration) {
        self.fetch_at = self.initiator.then(|| now + refetch_after(rto));
    }

    /// What a Finish needs now.
    pub fn finish(&self) -> FinishStep {
        if !self.have.is_complete() {
            return FinishStep::AckFirst;
        }
        FinishStep::Verify {
            running: self.hash_next == Some(self.have.len()),
        }
    }

    /// When the receiver next has something to do by itself.
    pub fn next_wake(&self, now: Instant) -> Instant {
        [self.fetch_at, self.ack_due]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(1))
    }
}

/// How long a downloading receiver waits, while chunks flow, before it
/// asks again. Four round trips, but never more than [`REFETCH_MAX`]:
/// after the last chunk it waits for the sender's Finish, and a sender
/// that restarted in between says nothing until asked (the simulator,
/// seed 745: four timeouts of a lossy 10-a-minute channel were 226 s of
/// silence after the agent came back).
pub(crate) fn refetch_after(rto: Duration) -> Duration {
    (rto * 4).min(REFETCH_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const RTO: Duration = Duration::from_secs(2);

    fn intake(chunks: u32, initiator: bool) -> (Intake, Instant) {
        let t0 = Instant::now();
        let i = Intake::new(
            Bitmap::new(chunks),
            20 * MS,
            initiator,
            Duration::from_secs(120),
            t0,
        );
        (i, t0)
    }

    fn take(i: &mut Intake, index: u32, now: Instant) -> bool {
        let Arrival::New { extends_hash } = i.arrive(index) else {
            panic!("chunk {index} should be new");
        };
        i.stored(index, extends_hash, now, RTO)
    }

    #[test]
    fn chunks_in_order_keep_the_running_hash_and_a_gap_breaks_it() {
        let (mut i, t0) = intake(4, false);
        for n in 0..4 {
            assert_eq!(i.arrive(n), Arrival::New { extends_hash: true });
            assert!(!i.stored(n, true, t0, RTO), "in order is not reordered");
        }
        assert_eq!(i.finish(), FinishStep::Verify { running: true });

        let (mut i, t0) = intake(4, false);
        take(&mut i, 0, t0);
        assert_eq!(
            i.arrive(2),
            Arrival::New {
                extends_hash: false
            }
        );
        i.stored(2, false, t0, RTO);
        // Chunk 1 now fills the gap, but the hash already missed 2.
        assert_eq!(
            i.arrive(1),
            Arrival::New {
                extends_hash: false
            }
        );
        assert!(i.stored(1, false, t0, RTO), "1 after 2 is reordered");
        take(&mut i, 3, t0);
        assert_eq!(i.finish(), FinishStep::Verify { running: false });
    }

    #[test]
    fn a_forged_arrival_of_the_next_chunk_leaves_the_running_hash_intact() {
        // Issue 25 §3: anyone on the channel can send a chunk frame naming
        // the next index. It arrives but never opens (no `stored`): the
        // genuine chunk after it must still extend the running hash, or
        // one forged frame makes the receiver read the whole file back.
        let (mut i, t0) = intake(3, false);
        take(&mut i, 0, t0);
        for _ in 0..3 {
            assert_eq!(i.arrive(1), Arrival::New { extends_hash: true });
        }
        assert_eq!(
            i.arrive(2),
            Arrival::New {
                extends_hash: false
            },
            "a forged later chunk is not in order either"
        );
        assert_eq!(
            i.arrive(1),
            Arrival::New { extends_hash: true },
            "the genuine chunk 1 still extends the hash"
        );
        i.stored(1, true, t0, RTO);
        take(&mut i, 2, t0);
        assert_eq!(i.finish(), FinishStep::Verify { running: true });
        assert_eq!(i.have().count(), 3, "forgeries held nothing");
    }

    #[test]
    fn a_resumed_receiver_reads_the_file_back() {
        let mut held = Bitmap::new(3);
        held.set(0);
        let t0 = Instant::now();
        let mut i = Intake::new(held, 20 * MS, false, Duration::from_secs(60), t0);
        assert_eq!(i.arrive(0), Arrival::Duplicate);
        take(&mut i, 1, t0);
        take(&mut i, 2, t0);
        assert_eq!(i.finish(), FinishStep::Verify { running: false });
    }

    #[test]
    fn duplicates_and_strays_change_nothing_but_ask_for_an_ack() {
        let (mut i, t0) = intake(2, false);
        assert_eq!(i.arrive(2), Arrival::OutOfRange);
        assert_eq!(i.arrive(u32::MAX), Arrival::OutOfRange);
        assert_eq!(i.ack_timer(t0 + MS * 100), None, "a stray arms nothing");
        take(&mut i, 0, t0);
        let plan = i.ack_timer(t0 + 20 * MS).expect("due");
        assert!(plan.sync);
        i.ack_settled();
        // The acknowledgement was lost: the sender sends 0 again, and is
        // told again, with no sync (nothing new was written).
        assert_eq!(i.arrive(0), Arrival::Duplicate);
        assert_eq!(i.ack_timer(t0 + 50 * MS), None, "not before it opened");
        i.duplicate_opened(t0 + 30 * MS);
        let again = i
            .ack_timer(t0 + 50 * MS)
            .expect("a duplicate re-arms the ack");
        assert!(!again.sync);
        assert_eq!(again.have, plan.have);
        assert_eq!(i.have().count(), 1);
    }

    #[test]
    fn acknowledgements_batch_and_one_at_a_time() {
        let (mut i, t0) = intake(8, false);
        take(&mut i, 0, t0);
        take(&mut i, 1, t0 + 5 * MS);
        assert_eq!(i.ack_timer(t0 + 19 * MS), None, "not due before the delay");
        assert_eq!(
            i.next_wake(t0),
            t0 + 20 * MS,
            "the first chunk set the time"
        );
        let first = i.ack_timer(t0 + 20 * MS).expect("due");
        assert_eq!(first.have.count(), 2);
        assert!(i.ack_in_flight());
        // While it is being made durable, chunk 2 lands: its ack waits.
        take(&mut i, 2, t0 + 21 * MS);
        assert_eq!(i.ack_timer(t0 + 41 * MS), None, "one in flight at a time");
        assert_eq!(
            i.next_wake(t0 + 41 * MS),
            t0 + 61 * MS,
            "and is tried again"
        );
        i.ack_settled();
        let second = i
            .ack_timer(t0 + 61 * MS)
            .expect("due after the first settled");
        assert!(second.sync, "chunk 2 is not synced yet");
        assert_eq!(second.have.count(), 3);
        i.ack_settled();
        assert_eq!(
            i.ack_timer(t0 + 200 * MS),
            None,
            "nothing new, nothing sent"
        );
    }

    #[test]
    fn an_acknowledgement_names_only_what_was_written_before_it() {
        let (mut i, t0) = intake(4, false);
        take(&mut i, 0, t0);
        let plan = i.ack_timer(t0 + 20 * MS).expect("due");
        take(&mut i, 1, t0 + 21 * MS);
        assert!(plan.have.get(0) && !plan.have.get(1));
        // A sync outside an ack (a pause) covers chunk 1.
        assert!(i.synced());
        assert!(!i.synced());
    }

    #[test]
    fn a_downloading_client_repeats_its_fetch_with_a_ceiling() {
        let (mut i, t0) = intake(4, true);
        assert!(!i.fetch_due(t0), "the first fetch is the driver's");
        i.fetched(true, t0, RTO);
        assert!(!i.fetch_due(t0 + RTO * 2 - MS));
        assert!(i.fetch_due(t0 + RTO * 2));
        // No link took it: again soon.
        i.fetched(false, t0 + RTO * 2, RTO);
        assert!(i.fetch_due(t0 + RTO * 2 + FETCH_RETRY));
        // A slow link's round trip does not leave it silent for long.
        let slow = Duration::from_secs(90);
        i.fetched(true, t0, slow);
        assert!(i.fetch_due(t0 + REFETCH_MAX));
        // Chunks flowing put the next fetch off by four round trips.
        let t1 = t0 + Duration::from_secs(10);
        i.fetched(true, t1, RTO);
        take(&mut i, 0, t1 + MS);
        assert!(!i.fetch_due(t1 + RTO * 2), "chunks came: no need to ask");
        assert!(i.fetch_due(t1 + MS + RTO * 4));
        i.answered_offer(t1, slow);
        assert!(
            i.fetch_due(t1 + REFETCH_MAX),
            "four slow round trips are capped"
        );
    }

    #[test]
    fn an_agent_never_fetches() {
        let (mut i, t0) = intake(2, false);
        i.answered_offer(t0, RTO);
        take(&mut i, 0, t0);
        assert!(!i.fetch_due(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn only_authentic_traffic_keeps_the_sender_alive() {
        let t0 = Instant::now();
        let mut i = Intake::new(Bitmap::new(4), 20 * MS, false, Duration::from_secs(10), t0);
        let t1 = t0 + Duration::from_secs(8);
        // Strays and duplicates (which anyone could replay) do not count.
        i.arrive(9);
        assert!(i.silent(t0 + Duration::from_secs(11)));
        take(&mut i, 0, t1);
        assert!(!i.silent(t0 + Duration::from_secs(11)));
        i.heard(t0 + Duration::from_secs(15));
        assert!(!i.silent(t0 + Duration::from_secs(25)));
        assert!(i.silent(t0 + Duration::from_secs(26)));
    }

    #[test]
    fn a_reset_while_an_acknowledgement_is_in_flight_does_not_stop_the_next() {
        // A rekeyed offer arrives while an ack of the old keying is being
        // made durable: the receiver waits for it, then resets. Found in
        // review: the flag stayed set and no ack went out again.
        let (mut i, t0) = intake(4, true);
        take(&mut i, 0, t0);
        assert!(i.ack_timer(t0 + 20 * MS).is_some());
        assert!(i.ack_in_flight());
        i.reset(6);
        take(&mut i, 0, t0 + 30 * MS);
        let plan = i
            .ack_timer(t0 + 50 * MS)
            .expect("the new keying's ack goes");
        assert_eq!((plan.have.len(), plan.have.count()), (6, 1));
    }

    #[test]
    fn finish_with_gaps_asks_for_them_and_a_reset_starts_over() {
        let (mut i, t0) = intake(3, false);
        take(&mut i, 0, t0);
        take(&mut i, 2, t0);
        assert_eq!(i.finish(), FinishStep::AckFirst);
        let plan = i.ack_now();
        assert_eq!(plan.have.count(), 2);
        i.ack_settled();
        i.reset(5);
        assert_eq!(i.have().len(), 5);
        assert_eq!(i.have().count(), 0);
        assert!(!i.synced(), "nothing of the new keying is written");
        assert_eq!(i.arrive(0), Arrival::New { extends_hash: true });
        i.forget();
        assert_eq!(
            i.arrive(0),
            Arrival::New {
                extends_hash: false
            }
        );
    }
}
