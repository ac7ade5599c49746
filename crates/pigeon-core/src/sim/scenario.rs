//! Scenarios drawn from a seed.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::transport::{Faults, Profile};

/// Who crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party {
    Client,
    Agent,
}

/// A crash: when (from the start), who, and how long it stays down.
#[derive(Clone, Copy, Debug)]
pub struct Crash {
    pub at: Duration,
    pub party: Party,
    pub down_for: Duration,
}

/// A second shell's `pigeon resume --all` while the transfer runs: the
/// queue rewrites the transfer's record beside its running task (issue 25:
/// a stale copy written back lowered the sealing run). Sometimes the client
/// is killed right after.
#[derive(Clone, Copy, Debug)]
pub struct Nudge {
    pub at: Duration,
    pub crash_after: Option<Duration>,
}

/// Seeds from here on give both parties one to three channels at once
/// (issue 28), each with its own profile, faults and outage. Seeds below
/// draw exactly what they drew before such scenarios existed, so every
/// seed replays as it always did.
pub const MULTI_LINK_SEEDS: u64 = 1_000_000;

/// One channel both parties use.
#[derive(Clone, Debug)]
pub struct Channel {
    pub profile: Profile,
    pub faults: Faults,
    pub outage: Option<Outage>,
}

/// A time in which a channel misbehaves as a whole: from `from` until
/// `until`, or for good.
#[derive(Clone, Copy, Debug)]
pub struct Outage {
    pub kind: OutageKind,
    pub from: Duration,
    pub until: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutageKind {
    /// Every send fails with an error (a provider answering 5xx).
    FailingSends,
    /// Messages to this party vanish, without an error to the sender: a
    /// channel that swallows one direction.
    Blackhole(Party),
}

impl Outage {
    pub fn active(&self, now: Duration) -> bool {
        now >= self.from && self.until.is_none_or(|u| now < u)
    }
}

/// The longest a scenario's transfer may take at its channel's pace.
const MAX_IDEAL: Duration = Duration::from_secs(2 * 3600);

/// How hard the seeds may push.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_size: u64,
    pub max_crashes: u32,
    /// Profiles to draw from: all of them, or only the fast ones (whose
    /// files take few messages, so a `cargo test` seed stays quick).
    pub slow_profiles: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_size: 256 * 1024,
            max_crashes: 3,
            slow_profiles: true,
        }
    }
}

/// What happens in one simulated run.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub size: u64,
    pub kind: Content,
    pub profile: Profile,
    pub faults: Faults,
    pub download: bool,
    /// Oldest first.
    pub crashes: Vec<Crash>,
    /// Everything sent in this window (from, until) is lost.
    pub partition: Option<(Duration, Duration)>,
    /// A key the agent does not trust tries to upload too.
    pub stranger: bool,
    /// Oldest first.
    pub nudges: Vec<Nudge>,
    /// The channels both parties use: the first is `profile` with
    /// `faults` (and the partition); more only from [`MULTI_LINK_SEEDS`].
    pub links: Vec<Channel>,
}

/// What the file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// Incompressible.
    Random,
    /// Log lines, which gzip shrinks about five times.
    Log,
    Zeros,
}

impl Scenario {
    pub fn from_seed(seed: u64, limits: &Limits) -> Scenario {
        let mut rng = StdRng::seed_from_u64(seed);
        let profiles: &[Profile] = if limits.slow_profiles {
            &Profile::ALL
        } else {
            &[Profile::TelegramDoc, Profile::Shipper, Profile::Unlimited]
        };
        let profile = profiles[rng.gen_range(0..profiles.len())];
        // Sizes spread over orders of magnitude: empty, one chunk, many.
        let size = match rng.gen_range(0..10) {
            0 => 0,
            1 => rng.gen_range(1..64),
            _ => {
                let exp = rng.gen_range(6.0..(limits.max_size.max(128) as f64).log2());
                2f64.powf(exp) as u64
            }
        }
        .min(limits.max_size);
        // A channel's pace bounds what one scenario can carry: 256 MiB over
        // ten 4 KB messages a minute is weeks. Halve until it fits.
        let mut size = size;
        while ideal_time(profile, size) > MAX_IDEAL {
            size /= 2;
        }
        let kind = match rng.gen_range(0..3) {
            0 => Content::Random,
            1 => Content::Log,
            _ => Content::Zeros,
        };
        let prob = |rng: &mut StdRng, max: f64| {
            if rng.gen_bool(0.3) {
                0.0
            } else {
                rng.gen_range(0.0..max)
            }
        };
        let faults = Faults {
            loss: prob(&mut rng, 0.2),
            dup: prob(&mut rng, 0.1),
            reorder: prob(&mut rng, 0.3),
            corrupt: prob(&mut rng, 0.02),
            delay: Duration::from_millis(rng.gen_range(0..200)),
            seed: Some(rng.gen()),
        };
        let scenario_length = ideal_time(profile, size) + Duration::from_secs(10);
        let mut crashes: Vec<Crash> = (0..rng.gen_range(0..=limits.max_crashes))
            .map(|_| Crash {
                at: scenario_length.mul_f64(rng.gen_range(0.0..1.2)),
                party: if rng.gen_bool(0.5) {
                    Party::Client
                } else {
                    Party::Agent
                },
                down_for: Duration::from_millis(rng.gen_range(0..20_000)),
            })
            .collect();
        crashes.sort_by_key(|c| c.at);
        let partition = rng.gen_bool(0.2).then(|| {
            let from = scenario_length.mul_f64(rng.gen_range(0.0..1.0));
            (
                from,
                from + Duration::from_millis(rng.gen_range(1_000..60_000)),
            )
        });
        let mut scenario = Scenario {
            seed,
            size,
            kind,
            profile,
            faults: faults.clone(),
            download: rng.gen_bool(0.3),
            crashes,
            partition,
            stranger: rng.gen_bool(0.25),
            nudges: vec![],
            links: vec![Channel {
                profile,
                faults,
                outage: None,
            }],
        };
        // Drawn after everything else, so the draws above stay what they
        // were for every seed.
        if rng.gen_bool(0.4) {
            scenario.nudges = (0..rng.gen_range(1..=3))
                .map(|_| Nudge {
                    at: scenario_length.mul_f64(rng.gen_range(0.0..1.0)),
                    crash_after: rng
                        .gen_bool(0.5)
                        .then(|| Duration::from_millis(rng.gen_range(0..1500))),
                })
                .collect();
            scenario.nudges.sort_by_key(|n| n.at);
        }
        if seed >= MULTI_LINK_SEEDS {
            scenario.draw_more_links(&mut rng, profiles, scenario_length);
        }
        scenario
    }

    /// One or two more channels, and outages on any of them; at least one
    /// channel comes back (or never goes), so the transfer can end.
    fn draw_more_links(&mut self, rng: &mut StdRng, profiles: &[Profile], length: Duration) {
        // Zero with probability `none`, else up to `max`.
        let some = |rng: &mut StdRng, none: f64, max: f64| {
            if rng.gen_bool(none) {
                0.0
            } else {
                rng.gen_range(0.0..max)
            }
        };
        let faults = |rng: &mut StdRng| Faults {
            loss: some(rng, 0.5, 0.1),
            dup: some(rng, 0.5, 0.05),
            reorder: some(rng, 0.5, 0.2),
            corrupt: some(rng, 0.7, 0.01),
            delay: Duration::from_millis(rng.gen_range(0..200)),
            seed: Some(rng.gen()),
        };
        for _ in 0..rng.gen_range(1..=2) {
            let profile = profiles[rng.gen_range(0..profiles.len())];
            let faults = faults(rng);
            self.links.push(Channel {
                profile,
                faults,
                outage: None,
            });
        }
        for link in &mut self.links {
            if rng.gen_bool(0.4) {
                let from = length.mul_f64(rng.gen_range(0.0..1.0));
                let kind = match rng.gen_range(0..3) {
                    0 => OutageKind::FailingSends,
                    1 => OutageKind::Blackhole(Party::Client),
                    _ => OutageKind::Blackhole(Party::Agent),
                };
                let until = rng
                    .gen_bool(0.7)
                    .then(|| from + Duration::from_millis(rng.gen_range(1_000..120_000)));
                link.outage = Some(Outage { kind, from, until });
            }
        }
        if self
            .links
            .iter()
            .all(|l| l.outage.is_some_and(|o| o.until.is_none()))
        {
            let last = self.links.last_mut().expect("one link at least");
            if let Some(o) = &mut last.outage {
                o.until = Some(o.from + Duration::from_secs(30));
            }
        }
        // Sizes were fitted to the first link's pace; the slowest one
        // decides now (halve until it fits, as above).
        while self
            .links
            .iter()
            .any(|l| ideal_time(l.profile, self.size) > MAX_IDEAL)
        {
            self.size /= 2;
        }
    }

    /// The `mem:` URI's options for one party on one link (each draws its
    /// own faults).
    pub fn query(&self, link: usize, party: u64) -> String {
        let Channel {
            profile, faults: f, ..
        } = &self.links[link];
        format!(
            "profile={}&loss={}&dup={}&reorder={}&corrupt={}&delay_ms={}&seed={}",
            profile.name(),
            f.loss,
            f.dup,
            f.reorder,
            f.corrupt,
            f.delay.as_millis(),
            f.seed.unwrap_or(0) ^ party.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        )
    }

    /// The file's bytes, from the seed.
    pub fn content(&self) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x5eed);
        let n = self.size as usize;
        match self.kind {
            Content::Random => (0..n).map(|_| rng.gen()).collect(),
            Content::Zeros => vec![0; n],
            Content::Log => {
                let mut out = Vec::with_capacity(n + 100);
                let mut line = 0u64;
                while out.len() < n {
                    let level = ["INFO", "WARN", "DEBUG"][rng.gen_range(0..3)];
                    out.extend_from_slice(
                        format!(
                            "2026-12-01T10:{:02}:{:02} {level} worker-{} handled request {line} in {} ms\n",
                            line / 60 % 60,
                            line % 60,
                            rng.gen_range(0..8),
                            rng.gen_range(1..900)
                        )
                        .as_bytes(),
                    );
                    line += 1;
                }
                out.truncate(n);
                out
            }
        }
    }

    /// When the faults stop: after the last crash is over, the partition
    /// has healed and every outage that ends has ended.
    pub fn calm_after(&self) -> Duration {
        let crashes = self.crashes.iter().map(|c| c.at + c.down_for);
        let partition = self.partition.map(|(_, until)| until);
        let outages = self.links.iter().filter_map(|l| l.outage?.until);
        crashes
            .chain(partition)
            .chain(outages)
            .max()
            .unwrap_or_default()
            .max(ideal_time(self.profile, self.size) / 2)
    }

    /// How long the transfer may take once the faults have stopped: twice
    /// its ideal time on the channel, plus what recovering costs (a
    /// handshake, a resynchronisation, retransmission timers backed off
    /// to their 60 s ceiling while the channel was dead).
    ///
    /// With several links, the slowest of those up after the calm sets the
    /// ideal: chunks it took before the calm arrive at its pace (until a
    /// scheduler keeps a slow link from taking bytes it would deliver last,
    /// issue 30, the fastest one cannot).
    pub fn calm_bound(&self) -> Duration {
        let slowest_up = self
            .links
            .iter()
            .filter(|l| l.outage.is_none_or(|o| o.until.is_some()))
            .map(|l| ideal_time(l.profile, self.size))
            .max()
            .unwrap_or_else(|| ideal_time(self.profile, self.size));
        slowest_up * 2 + Duration::from_secs(180)
    }
}

impl Scenario {
    /// The most chunks an upload may send again: a chunk for each message
    /// the channels lost, cut, corrupted or reordered (a message may carry
    /// several small chunks: as many as the largest message holds), one
    /// for each crash and nudge (a run starts over from what is
    /// acknowledged), and a few probes. Beyond it the sender sent again
    /// what nothing lost: a resent window after an outage, say.
    pub fn resend_allowance(&self, out: &super::Outcome) -> u64 {
        const MIN_CHUNK: u64 = 64 * 1024;
        let per_message = self
            .links
            .iter()
            .map(|l| (l.profile.capabilities().payload_bytes() as u64).div_ceil(MIN_CHUNK))
            .max()
            .unwrap_or(1)
            .max(1);
        let troubles = out.lost + out.cut + out.corrupted + out.reordered;
        let restarts = (self.crashes.len() + self.nudges.len()) as u64;
        per_message * (troubles + restarts + 2) + 8
    }
}

/// The time `size` bytes take at the profile's pace, incompressible,
/// in base64 on a text channel.
pub fn ideal_time(profile: Profile, size: u64) -> Duration {
    let caps = profile.capabilities();
    let payload = caps.payload_bytes().max(1) as u64;
    let messages = size.div_ceil(payload) + 2;
    let by_messages = caps
        .messages_per_minute
        .map_or(0.0, |m| messages as f64 * 60.0 / f64::from(m));
    let by_bytes = caps
        .bytes_per_minute
        .map_or(0.0, |b| size as f64 * 60.0 / b as f64);
    Duration::from_secs_f64(by_messages.max(by_bytes))
}
