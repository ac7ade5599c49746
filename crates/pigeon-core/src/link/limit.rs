//! A bandwidth limit shared by every link of a party (`--bwlimit`,
//! `bwlimit` in config.toml): what this party sends, over all its links
//! together, never exceeds the rate the timetable gives for the local time.
//!
//! A GCRA with no burst: each message moves the next free time on by its
//! size over the rate, so over any span longer than one message the bytes
//! sent stay under the rate times the span, plus one message.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::bwlimit::BwLimit;

pub struct Limiter {
    schedule: BwLimit,
    next_free: Mutex<Instant>,
}

impl Limiter {
    pub fn new(schedule: BwLimit) -> Limiter {
        Limiter {
            schedule,
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Bytes per second this party may send now (None: no limit).
    pub fn rate_now(&self) -> Option<u64> {
        let now = jiff::Zoned::now();
        let weekday = now.weekday().to_monday_zero_offset() as u8;
        let minute = now.hour() as u16 * 60 + now.minute() as u16;
        self.schedule.at(weekday, minute).up
    }

    /// When the next message may leave: already past if no limit is in
    /// force now (a timetable that turned it off forgets the debt of the
    /// last message sent under it). Past, not now: the send loop compares
    /// it with a `now` taken before, and a later now held every message.
    pub fn free_at(&self) -> Instant {
        let mut next = crate::task::lock(&self.next_free);
        if self.rate_now().is_none() {
            *next = (*next).min(Instant::now());
        }
        *next
    }

    /// A message of `bytes` left at `now`.
    pub fn charge(&self, bytes: usize, now: Instant) {
        let Some(rate) = self.rate_now() else {
            return;
        };
        let mut next = crate::task::lock(&self.next_free);
        *next = (*next).max(now) + Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_moves_the_next_free_time_by_its_size_over_the_rate() {
        let l = Limiter::new(BwLimit::parse("10K").unwrap());
        assert_eq!(l.rate_now(), Some(10 * 1024));
        let t = Instant::now();
        l.charge(5 * 1024, t);
        assert_eq!(l.free_at(), t + Duration::from_millis(500));
        // Sent late: the time lost is not made up with a burst.
        let later = t + Duration::from_secs(3);
        l.charge(10 * 1024, later);
        assert_eq!(l.free_at(), later + Duration::from_secs(1));
        let off = Limiter::new(BwLimit::parse("off").unwrap());
        off.charge(1 << 30, t);
        assert!(off.free_at() <= Instant::now());
    }

    /// A limit with no upload rate in force (`off:64k`, or a timetable's
    /// off hours) never holds a message: free before any `now` taken
    /// before asking (it once said "now", always after the send loop's
    /// own now, and nothing left).
    #[test]
    fn no_upload_rate_in_force_is_free_before_the_callers_now() {
        let l = Limiter::new(BwLimit::parse("off:64k").unwrap());
        let now = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(l.free_at() <= now);
        l.charge(1 << 20, Instant::now());
        let now = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        assert!(l.free_at() <= now);
    }
}
