//! The retransmission timeout (RFC 6298), floored by the channel's pace.

use std::time::Duration;

use crate::link::LinkHandle;

/// Round-trip timeout estimator (RFC 6298), with a floor that accounts for
/// the channel's pace.
#[derive(Clone, Debug)]
pub(crate) struct Rto {
    srtt: Option<Duration>,
    rttvar: Duration,
    floor: Duration,
    current: Duration,
}

impl Rto {
    /// The timeout for what goes on `link`, starting from a round trip
    /// already `measured` to the peer there (the handshake's), if any.
    pub fn for_link(link: &LinkHandle, measured: Option<Duration>) -> Rto {
        let caps = &link.capabilities();
        let interval = caps.interval().unwrap_or(Duration::ZERO);
        // A channel with a byte ceiling sends a full message only so often.
        let message_time = caps.bytes_per_minute.map_or(Duration::ZERO, |b| {
            Duration::from_secs_f64(
                crate::link::message_payload(caps) as f64 / (b.max(1) as f64 / 60.0),
            )
        });
        // A frame may wait behind two messages here and two there, and a
        // chunk behind the two messages' worth of data queued on its link.
        let floor = (interval * 5)
            .max(message_time * 3)
            .max(Duration::from_millis(300));
        // Start from a round trip already measured, else from a cautious
        // guess.
        let current = match measured.filter(|m| !m.is_zero()) {
            Some(m) => (m * 3).max(floor),
            None => floor.max(Duration::from_secs(1)) * 2,
        };
        Rto {
            srtt: None,
            rttvar: Duration::ZERO,
            floor,
            current,
        }
    }

    /// A timeout of `d` and a floor of `d`, for tests of what uses one.
    #[cfg(test)]
    pub fn fixed(d: Duration) -> Rto {
        Rto {
            srtt: None,
            rttvar: Duration::ZERO,
            floor: d,
            current: d,
        }
    }

    pub fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + diff) / 4;
                self.srtt = Some((s * 7 + rtt) / 8);
            }
        }
        let s = self.srtt.unwrap_or(rtt);
        self.current = (s + self.rttvar * 4).clamp(self.floor, Duration::from_secs(60));
    }

    pub fn get(&self) -> Duration {
        self.current
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }
}
