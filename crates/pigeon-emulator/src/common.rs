//! What every emulator shares: injected faults, consumed in order, and the
//! per-sender pacing bucket the platforms answer 429 from.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Faults to inject, consumed in order. `method` names the emulator's
/// operation (a Bot API method, `messages`, `media`, `send`, `poll`...).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Faults {
    /// The next `count` calls of `method` (any method when empty) fail with
    /// `status` (429 carries `retry_after` seconds).
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub count: u32,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub retry_after: u64,
    /// The next `stall` calls wait this long before answering.
    #[serde(default)]
    pub stall_ms: u64,
    #[serde(default)]
    pub stall: u32,
    /// Deliver again the last N messages each party had confirmed.
    #[serde(default)]
    pub redeliver: usize,
    /// Media ids handed out from now on expire at once (a 5-minute URL
    /// that is already stale when fetched).
    #[serde(default)]
    pub expire_media: u32,
    /// On the Graph emulators: the error code the injected failures
    /// carry (say 131056, the pair rate), instead of the status's usual.
    #[serde(default)]
    pub code: Option<i64>,
}

impl Faults {
    /// The stall the next call must wait, if one is due.
    pub fn take_stall(&mut self) -> Option<Duration> {
        (self.stall > 0).then(|| {
            self.stall -= 1;
            Duration::from_millis(self.stall_ms)
        })
    }

    /// The injected failure of the next call of `method`, if one is due:
    /// (status, retry_after seconds when it is a 429).
    pub fn take_failure(&mut self, method: &str) -> Option<(u16, Option<u64>)> {
        if self.count == 0 || !(self.method.is_empty() || self.method == method) {
            return None;
        }
        self.count -= 1;
        Some((
            self.status,
            (self.status == 429).then_some(self.retry_after),
        ))
    }
}

/// A token bucket: `burst` sends at once, refilled at `per_second`.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(burst: f64) -> Bucket {
        Bucket {
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Take one send, or say how many whole seconds (at least one) to wait.
    pub fn take(&mut self, burst: f64, per_second: f64) -> Result<(), u64> {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * per_second).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

/// A text's length as the platforms count "characters": UTF-16 code
/// units (Telegram counts its 4096 and its entity offsets in them; the
/// Graph API, on JavaScript strings, likewise), so a character outside the
/// Basic Multilingual Plane, an emoji, counts two.
pub fn text_length(text: &str) -> usize {
    text.encode_utf16().count()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_says_how_long_to_wait() {
        let mut b = Bucket::full(3.0);
        for _ in 0..3 {
            assert_eq!(b.take(3.0, 1.0), Ok(()));
        }
        assert_eq!(b.take(3.0, 1.0), Err(1));
        let mut slow = Bucket::full(1.0);
        assert_eq!(slow.take(1.0, 1.0 / 6.0), Ok(()));
        assert!(matches!(slow.take(1.0, 1.0 / 6.0), Err(5 | 6)));
    }

    #[test]
    fn text_length_counts_utf16_units_as_the_platforms_do() {
        assert_eq!(text_length(&"鸽".repeat(4096)), 4096);
        assert_eq!(text_length("🕊"), 2);
        assert_eq!(text_length(&"🕊".repeat(2049)), 4098);
        assert_eq!(text_length("base64+/="), 9);
    }

    #[test]
    fn faults_are_consumed_in_order_and_only_by_their_method() {
        let mut f = Faults {
            method: "send".into(),
            count: 2,
            status: 429,
            retry_after: 3,
            ..Faults::default()
        };
        assert_eq!(f.take_failure("poll"), None);
        assert_eq!(f.take_failure("send"), Some((429, Some(3))));
        assert_eq!(f.take_failure("send"), Some((429, Some(3))));
        assert_eq!(f.take_failure("send"), None);
    }
}
