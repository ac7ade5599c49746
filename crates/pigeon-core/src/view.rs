//! What the engine shows to the outside: snapshots and events.
//!
//! A front end (the TUI, the plain CLI) never reaches into the engine. It gets
//! two things:
//!
//! - [`EngineSnapshot`] through a `tokio::sync::watch` channel: the latest
//!   state of every transfer and every transport, republished at most every
//!   50 ms while something changes and never while nothing does;
//! - [`Event`]s through a `tokio::sync::broadcast` channel: one per thing that
//!   happened (a transfer queued, finished, failed; a log line), for notices
//!   and logs.
//!
//! Both are plain data, cheap to clone (chunk maps are shared `Arc`s), so a
//! UI can render from them without locks.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A transfer id, shown as 32 hex characters (16 random bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TransferId(pub [u8; 16]);

impl TransferId {
    pub fn random() -> Self {
        TransferId(rand::random())
    }

    /// The first 8 hex characters: enough to name a transfer on a command line.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl std::fmt::Display for TransferId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for TransferId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TransferId({})", self.short())
    }
}

impl std::str::FromStr for TransferId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = hex::decode(s).map_err(|_| format!("not a transfer id: {s:?}"))?;
        let arr: [u8; 16] = bytes
            .try_into()
            .map_err(|_| format!("a transfer id is 32 hex characters, got {s:?}"))?;
        Ok(TransferId(arr))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Upload,
    Download,
}

/// The life of a transfer, as stored and as shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    Pending,
    InProgress,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl TransferStatus {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// State of one chunk in a chunk map. Ordered by how bad it is, so a group of
/// chunks shown as one cell can show its worst member with `max()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum ChunkState {
    Acked = 0,
    Pending = 1,
    InFlight = 2,
    Retried = 3,
    Failed = 4,
}

impl ChunkState {
    pub fn from_u8(v: u8) -> ChunkState {
        match v {
            0 => ChunkState::Acked,
            2 => ChunkState::InFlight,
            3 => ChunkState::Retried,
            4 => ChunkState::Failed,
            _ => ChunkState::Pending,
        }
    }
}

/// Counters of what the channel did to us, per transfer and per transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounters {
    /// Messages or frames that failed to parse or to authenticate.
    pub corrupt: u64,
    /// Frames seen twice (same transfer and chunk, or a replayed nonce).
    pub duplicate: u64,
    /// Chunks that arrived after a later one.
    pub reordered: u64,
    /// Chunks sent again because no acknowledgement came in time.
    pub retransmitted: u64,
    /// Chunks that timed out or were found missing where they were sent:
    /// for a transport, what it lost (each chunk is charged to the link
    /// that carried it); for a transfer, what all its links lost.
    #[serde(default)]
    pub lost: u64,
}

impl FaultCounters {
    pub fn add(&mut self, other: &FaultCounters) {
        self.corrupt += other.corrupt;
        self.duplicate += other.duplicate;
        self.reordered += other.reordered;
        self.retransmitted += other.retransmitted;
        self.lost += other.lost;
    }
}

/// One transfer as a front end sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TransferView {
    pub id: TransferId,
    pub direction: Direction,
    pub local_path: String,
    pub remote_path: String,
    pub peer: String,
    pub size: u64,
    pub status: TransferStatus,
    pub chunks_total: u64,
    pub chunks_done: u64,
    pub bytes_done: u64,
    /// Bytes per second over the last few seconds.
    pub rate: f64,
    pub eta: Option<Duration>,
    pub transport: String,
    /// Queue position: lower runs first.
    pub priority: i64,
    pub error: Option<String>,
    pub faults: FaultCounters,
    /// One [`ChunkState`] byte per chunk (`ChunkState as u8`).
    #[serde(with = "shared_bytes")]
    pub chunk_map: Arc<[u8]>,
    /// The link (its index among the transports) that last carried each
    /// chunk, 255 for none yet; empty unless several links carried this
    /// run's chunks.
    #[serde(default = "no_links", with = "shared_bytes")]
    pub chunk_links: Arc<[u8]>,
    pub resumed: bool,
    pub created_unix: u64,
    /// The whole file's SHA-256 in hex, once known (an upload hashes its
    /// file before it offers it; a download learns it from the offer).
    pub sha256: Option<String>,
    pub mime: String,
    /// What moves is a delta of a file of this size (`size` is the
    /// delta's): the differences from the version the other side holds.
    #[serde(default)]
    pub delta_of: Option<u64>,
}

/// A transport's health as a front end sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransportHealth {
    /// The URI it was opened with, e.g. `local:/tmp/spool?profile=telegram-text`.
    pub uri: String,
    pub profile: String,
    /// Data may go on it (its circuit is not open).
    pub up: bool,
    pub state: LinkState,
    /// Its part of the data bytes all links sent in the last minute.
    pub share: Option<f64>,
    pub rtt: Option<Duration>,
    /// Bytes per second sent, newest last, one sample per second (at most 60).
    pub throughput: Vec<u64>,
    pub messages_last_minute: u32,
    pub messages_per_minute_limit: Option<u32>,
    pub errors: u64,
    pub retry_after: Option<Duration>,
    pub faults: FaultCounters,
    /// What is wrong with it that only the user can fix (a refused token,
    /// a port nothing listens on), as `pigeon transports test` says it;
    /// empty while it works.
    #[serde(default)]
    pub problems: Vec<String>,
    /// What the link changed by itself that the user should know, in a
    /// few words, the first of which says it alone when room is short
    /// (`base64: dense text arrived mangled`: see `link/fallback.rs`);
    /// empty while it runs as set.
    #[serde(default)]
    pub notes: Vec<String>,
}

impl TransportHealth {
    /// What is wrong with it, if only the user can fix it, as `pigeon
    /// transports test` says it: `<URI>: <what is wrong>`.
    pub fn failure(&self) -> Option<String> {
        (!self.problems.is_empty()).then(|| format!("{}: {}", self.uri, self.problems.join("; ")))
    }
}

/// What a link is doing, as its circuit breaker and the provider say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LinkState {
    /// Data flows.
    #[default]
    Up,
    /// The provider asked to wait this long before the next message.
    RateLimited { wait: Duration },
    /// Out after failures: no data until it is probed in `retry_in`.
    /// `silent`: sends succeeded but nothing they carried arrived.
    Open { silent: bool, retry_in: Duration },
    /// Being probed: what goes on it now decides whether it is back.
    Probing,
}

impl LinkState {
    /// A short word for it: `up`, `rate limited`, `down`, `silent`, `probing`.
    pub fn word(&self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::RateLimited { .. } => "rate limited",
            LinkState::Open { silent: false, .. } => "down",
            LinkState::Open { silent: true, .. } => "silent",
            LinkState::Probing => "probing",
        }
    }
}

/// Everything a front end needs to draw one frame.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EngineSnapshot {
    /// The peer this party talks to (the agent, for a client).
    pub peer: String,
    /// True when the peer is the agent embedded in this process.
    pub embedded_agent: bool,
    pub transfers: Vec<TransferView>,
    pub transports: Vec<TransportHealth>,
    /// How long the peer has not answered something waiting on it (a
    /// transfer, a listing), once that is long enough to say (10 s, more
    /// on the slowest channels); None while it answers.
    pub agent_silent: Option<Duration>,
    /// Monotonic counter, bumped on every publish.
    pub version: u64,
}

impl EngineSnapshot {
    /// Whether some figure shown would change with time alone: a running
    /// transfer's rate and ETA, a link's traffic of the last minute, a
    /// silence being counted, a wait before a retry.
    pub fn figures_moving(&self) -> bool {
        self.agent_silent.is_some()
            || self
                .transfers
                .iter()
                .any(|t| t.status == TransferStatus::InProgress)
            || self.transports.iter().any(|l| {
                l.messages_last_minute > 0
                    || l.throughput.iter().any(|&b| b > 0)
                    || l.retry_after.is_some()
                    || !matches!(l.state, LinkState::Up)
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

/// Things that happened, in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Event {
    /// `name`: the remote path, as in every event about a transfer (a
    /// front end names files, not ids, even before its snapshot has them).
    Queued {
        id: TransferId,
        name: String,
    },
    Started {
        id: TransferId,
        name: String,
        resumed: bool,
    },
    Completed {
        id: TransferId,
        name: String,
    },
    Failed {
        id: TransferId,
        name: String,
        error: String,
    },
    Cancelled {
        id: TransferId,
        name: String,
    },
    Log {
        level: LogLevel,
        message: String,
    },
    /// Sent once when a transfer of this run ends, whatever the outcome:
    /// what `--json` prints.
    Finished(Box<TransferReport>),
}

/// The record of one transfer run, as `--json` prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferReport {
    pub id: String,
    pub direction: Direction,
    pub local_path: String,
    pub remote_path: String,
    pub size: u64,
    pub sha256: Option<String>,
    pub mime: String,
    pub status: TransferStatus,
    pub chunks_total: u64,
    /// Distinct chunks this run sent (upload) or received (download).
    pub chunks_sent: u64,
    pub chunks_retransmitted: u64,
    pub resumed: bool,
    pub transport: String,
    pub elapsed_ms: u64,
    pub faults: FaultCounters,
    pub error: Option<String>,
    /// Sent as the differences from the version the other side held:
    /// the delta's bytes (before gzip), against `size`, the file's.
    #[serde(default)]
    pub delta: Option<u64>,
}

/// A chunk map on the wire: bytes, shared again once read.
fn no_links() -> Arc<[u8]> {
    Arc::from(Vec::new())
}

mod shared_bytes {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(map: &Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(map)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[u8]>, D::Error> {
        let bytes: serde_bytes::ByteBuf = Deserialize::deserialize(d)?;
        Ok(Arc::from(bytes.into_vec()))
    }
}

/// `1023 B`, `1.5 KiB`, `12 MiB`, `3.2 GiB`: at most 8 characters.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// A count and its noun, singular for one: `plural(1, "chunk")` is
/// `1 chunk`, `plural(3, "entry")` is `3 entries`. English only, and only
/// the regular forms our messages use (`-y` to `-ies`, `-s`/`-x`/`-ch`/`-sh`
/// to `-es`); a message that needs an irregular noun spells both itself.
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        return format!("1 {noun}");
    }
    let vowel_before = |stem: &str| stem.ends_with(['a', 'e', 'i', 'o', 'u']);
    let many = match noun.strip_suffix('y') {
        Some(stem) if !vowel_before(stem) => format!("{stem}ies"),
        _ if ["s", "x", "ch", "sh"].iter().any(|end| noun.ends_with(end)) => format!("{noun}es"),
        _ => format!("{noun}s"),
    };
    format!("{n} {many}")
}

/// RFC 3339 for times up to the year 9999 (all a peer should send), the
/// raw seconds beyond, never a panic.
pub fn format_time(unix: u64) -> String {
    const LAST_SECOND_OF_9999: u64 = 253_402_300_799;
    if unix > LAST_SECOND_OF_9999 {
        return format!("@{unix}");
    }
    std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::from_secs(unix))
        .map_or_else(
            || format!("@{unix}"),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        )
}

#[cfg(test)]
mod plural_tests {
    use super::plural;

    /// Issue 32: "1 chunks sent".
    #[test]
    fn one_is_singular_and_every_other_count_is_plural() {
        assert_eq!(plural(1, "chunk"), "1 chunk");
        assert_eq!(plural(0, "chunk"), "0 chunks");
        assert_eq!(plural(2, "transfer"), "2 transfers");
        assert_eq!(plural(1, "entry"), "1 entry");
        assert_eq!(plural(7, "entry"), "7 entries");
        assert_eq!(plural(4, "key"), "4 keys");
        assert_eq!(plural(2, "match"), "2 matches");
    }
}
