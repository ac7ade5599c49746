//! Control messages, sealed in the Noise session, and the early data of a Hello.

use super::*;

/// Why a request was refused, for the requester to act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseCode {
    Permission,
    BadPath,
    Exists,
    NotFound,
    TooLarge,
    Internal,
    /// A quota or limit of the agent's (the reason has the numbers).
    Quota,
    /// The upload arrived whole and is held in the agent's quarantine.
    Quarantined,
    /// A delta's base is not what the agent holds at the path (the file
    /// changed, or is gone): send the whole file instead.
    BaseChanged,
}

/// Early data: offers of new uploads that ride in the client's first
/// handshake message (the Noise payload of [`Frame::Hello`]), so a transfer
/// starts in the message that opens its session, and its first chunks
/// (sealed with the transfer's own key) in the same message behind it. On a
/// channel of one message per 6 s that is two messages, 12 s, saved.
///
/// What it costs, and why it is bounded (DESIGN.md section 3): early data
/// is confidential and authenticated to the client's key, but not forward
/// secret against a later theft of the agent's static key, and a recording
/// of it can be replayed. So a client sends it only on links where a round
/// trip costs seconds, and an agent takes it only while `made_unix` is
/// within [`Early::WINDOW_SECS`] of its own clock and only once per session
/// id; anything else is ignored and the offer comes again, sealed, once
/// the session is up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Early {
    /// When the client made it, by its clock (Unix seconds).
    pub made_unix: u64,
    /// [`Control::Offer`]s only; anything else is dropped.
    pub offers: Vec<Control>,
}

impl Early {
    /// How far early data's clock may be from the agent's.
    pub const WINDOW_SECS: u64 = 600;

    pub fn encode(&self) -> Result<Vec<u8>> {
        codec::encode("early data", PROTOCOL_VERSION, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Early> {
        codec::decode("early data", PROTOCOL_VERSION, bytes)
    }
}

/// Control messages, always sealed in a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// The sender proposes a transfer. Repeated on every new session, so
    /// the receiver can answer what it already has.
    Offer {
        transfer: TransferId,
        manifest: Manifest,
        secret: TransferSecret,
        path: String,
        overwrite: bool,
        /// True when this transfer replaces an earlier one of the same file
        /// whose source changed (downloads).
        restarted: bool,
        /// The agent removes the uploaded file this long after it first
        /// takes the offer, by its own clock (`pigeon upload --expires`: a
        /// phone's clock may be off by hours).
        expires_after_secs: Option<u64>,
    },
    /// The receiver takes it, and already has these chunks. `epoch` names
    /// the key and manifest the answer is about ([`Manifest::epoch`]): a
    /// download re-keyed under the same id must not count old answers.
    Accept {
        transfer: TransferId,
        epoch: [u8; 8],
        have: AckState,
    },
    /// The receiver (or the agent, for a fetch) will not.
    Refuse {
        transfer: TransferId,
        code: RefuseCode,
        reason: String,
    },
    Ack {
        transfer: TransferId,
        epoch: [u8; 8],
        have: AckState,
    },
    /// All chunks are acknowledged; this is the whole file's SHA-256.
    Finish {
        transfer: TransferId,
        sha256: [u8; 32],
    },
    /// The receiver verified the whole file and put it in place; these
    /// are the faults it saw (the sender shows them with its own).
    Done {
        transfer: TransferId,
        sha256: [u8; 32],
        faults: FaultCounters,
    },
    /// The receiver's whole-file hash did not match: nothing was kept.
    Mismatch {
        transfer: TransferId,
        reason: String,
    },
    /// Client asks the agent to send a file (a download). `base`: the
    /// client holds a version of it already, to be sent only the
    /// differences from (its `--no-delta` leaves it out).
    Fetch {
        transfer: TransferId,
        path: String,
        base: Option<FetchBase>,
    },
    Cancel {
        transfer: TransferId,
    },
    /// The sender cannot go on (its source changed or cannot be read):
    /// the receiver stops at once and shows why.
    Abort {
        transfer: TransferId,
        reason: String,
    },
    List {
        request: u64,
        dir: String,
        offset: u32,
    },
    Listing {
        request: u64,
        entries: Vec<RemoteEntry>,
        more: bool,
    },
    ListRefused {
        request: u64,
        reason: String,
    },
    /// The offer's target already exists on the agent with the offer's size
    /// and this SHA-256 (a re-run after an interruption, say): the sender
    /// compares it with its own file's and decides, instead of a refusal.
    Present {
        transfer: TransferId,
        sha256: [u8; 32],
    },
    /// The agent does not trust the key that handshook: sealed in the
    /// session that handshake opened, so only the agent can have said it
    /// (a provider cannot make a client give up), and then forgotten.
    NotTrusted,
    /// Client: how much of my quota is used?
    QuotaAsk {
        request: u64,
    },
    /// Agent: the asking peer's use against its limits, and all peers'
    /// together (without the other peers' names).
    Quota {
        request: u64,
        lines: Vec<crate::policy::QuotaLine>,
    },
    /// Client: share, stop sharing, or list what is shared.
    ShareAsk {
        request: u64,
        op: ShareOp,
    },
    /// Agent: what it did, and the asker's shares now (those it made and
    /// those made with it); or why not.
    Shares {
        request: u64,
        result: std::result::Result<(String, Vec<crate::policy::Share>), String>,
    },
    /// The receiver holds these chunks only in part (some of their pieces
    /// came, not all): the sender sends only the rest of each
    /// ([`crate::link::ChunkFrame::held`]). The latest replaces any before.
    Pieces {
        transfer: TransferId,
        held: Vec<PiecesHeld>,
    },
    /// The agent's answer to [`Control::Cancel`]: it holds nothing of the
    /// transfer any more (its partial is gone, its task stopped). Until it
    /// comes, the client keeps the cancel and says it again at every
    /// session.
    Cancelled {
        transfer: TransferId,
    },
    /// Client: send me downloads no faster than this (`--bwlimit UP:DOWN`,
    /// bytes a second; None: no limit), and on the link this message came
    /// on no faster than `on_link` (that link's own `bwlimit=UP:DOWN`).
    /// Sent beside each [`Control::Fetch`], once on each link, and good
    /// for the session it is sealed in. Last of the variants so the others
    /// keep their numbers: an agent that predates it cannot decode it,
    /// counts one corrupt frame and serves the download unpaced.
    Rate {
        down: Option<u64>,
        on_link: Option<u64>,
    },
    /// Client: what do you hold at `path`, as a base for a delta? (An
    /// upload with `--overwrite` of a file this client did not send there
    /// itself: one exchange settles it.)
    BaseAsk {
        request: u64,
        path: String,
    },
    /// Agent: the file at that path in the asker's own view, as a coarse
    /// signature; None when there is none it may replace.
    BaseIs {
        request: u64,
        base: Option<FetchBase>,
    },
}

/// The version of a file a downloading client holds already
/// ([`Control::Fetch`]): its SHA-256 and a signature
/// ([`crate::delta::Signature`], coarse: it travels in every fetch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchBase {
    pub sha256: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl FetchBase {
    /// The most a signature in a fetch may take; a larger one is not read
    /// (the file goes whole).
    pub const MAX_SIGNATURE: usize = 32 * 1024;
}

/// What a receiver holds of one chunk's frame ([`Control::Pieces`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PiecesHeld {
    pub index: u32,
    /// The sealing run of the copies it holds pieces of.
    pub run: u32,
    /// The frame's length.
    pub total: u32,
    /// Byte ranges held, merged and in order.
    pub ranges: Vec<(u32, u32)>,
}

impl PiecesHeld {
    /// Most chunks one report names, and ranges per chunk: enough for a
    /// window of chunks on a text channel, and bounded work for the sender.
    pub const MAX_CHUNKS: usize = 64;
    pub const MAX_RANGES: usize = 32;

    /// The ranges, if they are well formed: in order, not touching, within
    /// the frame, at most [`MAX_RANGES`](Self::MAX_RANGES).
    pub fn checked_ranges(&self) -> Option<Vec<(usize, usize)>> {
        if self.ranges.len() > Self::MAX_RANGES {
            return None;
        }
        let mut at = 0u32;
        let mut out = Vec::with_capacity(self.ranges.len());
        for (i, &(s, e)) in self.ranges.iter().enumerate() {
            if s >= e || e > self.total || (i > 0 && s <= at) {
                return None;
            }
            at = e;
            out.push((s as usize, e as usize));
        }
        Some(out)
    }
}

/// What a [`Control::ShareAsk`] asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShareOp {
    List,
    /// Share `path` (in the asker's own folder) with the peer `with`.
    Add {
        path: String,
        with: String,
        read_only: bool,
        /// From when the agent makes the share, by its clock.
        expires_after_secs: Option<u64>,
    },
    /// Stop sharing `path`, with `with` or with everyone.
    Remove {
        path: String,
        with: Option<String>,
    },
}

impl Control {
    pub fn encode(&self) -> Result<Vec<u8>> {
        codec::encode("control", PROTOCOL_VERSION, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Control> {
        codec::decode("control", PROTOCOL_VERSION, bytes)
    }

    /// The transfer this message is about, if any.
    pub fn transfer(&self) -> Option<TransferId> {
        match self {
            Control::Offer { transfer, .. }
            | Control::Accept { transfer, .. }
            | Control::Refuse { transfer, .. }
            | Control::Ack { transfer, .. }
            | Control::Finish { transfer, .. }
            | Control::Done { transfer, .. }
            | Control::Mismatch { transfer, .. }
            | Control::Fetch { transfer, .. }
            | Control::Cancel { transfer }
            | Control::Abort { transfer, .. }
            | Control::Present { transfer, .. }
            | Control::Pieces { transfer, .. } => Some(*transfer),
            Control::List { .. }
            | Control::Listing { .. }
            | Control::ListRefused { .. }
            | Control::NotTrusted
            | Control::QuotaAsk { .. }
            | Control::Quota { .. }
            | Control::ShareAsk { .. }
            | Control::Shares { .. }
            // For the client's hooks, never a task: the task is gone.
            | Control::Cancelled { .. }
            // About the peer's downloads, whichever tasks serve them.
            | Control::Rate { .. }
            | Control::BaseAsk { .. }
            | Control::BaseIs { .. } => None,
        }
    }
}

/// One entry of a remote listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEntry {
    /// Path relative to the agent's storage root, `/`-separated.
    pub path: String,
    pub size: u64,
    pub is_dir: bool,
    /// Hex SHA-256, when the agent knows it (files it received or hashed).
    pub sha256: Option<String>,
    pub modified_unix: u64,
}
