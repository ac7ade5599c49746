//! Transports move opaque messages and declare their limits.
//!
//! A [`Transport`] knows nothing of frames or chunks: it sends a
//! [`Message`] (text or bytes) to an [`Address`], hands over what arrives
//! for this party, and says what it can carry ([`Capabilities`]). The link
//! above it packs frames into messages that fit, and paces them.
//!
//! The platforms' transports (Telegram, WhatsApp, Messenger, Shipper) are
//! one [`over_http::HttpTransport`], each over its own [`over_http::Api`].
//!
//! [`TransportUri`] parses the `--transport` syntax; [`Profile`] is the table
//! of real channels' limits (DESIGN.md section 6) the local spool reproduces.

mod check;
pub mod http;
pub mod local;
pub mod memory;
pub mod messenger;
pub mod meta;
mod open;
pub mod over_http;
pub mod shipper;
pub mod telegram;
pub mod whatsapp;

use std::future::Future;
use std::time::Duration;

pub use crate::alphabet::Alphabet;
use crate::error::{CoreError, Result};

pub use check::check;
pub use open::{open, profile, AnyTransport, Side};

/// Where a message goes: the recipient's inbox name on the channel
/// (a key id on the local spool; a chat id on a messenger).
pub type Address = String;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
}

impl Message {
    /// Size as the channel counts it: characters for text, bytes
    /// otherwise. The platforms' "characters" are UTF-16 code units (a
    /// character outside the Basic Multilingual Plane counts two), as
    /// JavaScript and Telegram's entity offsets count them.
    pub fn len(&self) -> usize {
        match self {
            Message::Text(s) => s.encode_utf16().count(),
            Message::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes as they travel (text as UTF-8).
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Message::Text(s) => s.into_bytes(),
            Message::Binary(b) => b,
        }
    }
}

/// A message as it arrived, with who sent it on the channel (a chat id, a
/// `wa_id`, a page-scoped id, an account name; `None` where the channel
/// does not say, as on the spool). The engine answers an authenticated
/// peer where its frames come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub from: Option<Address>,
    pub message: Message,
}

/// Provider message ids seen lately, to drop redeliveries below the
/// engine; bounded, the oldest forgotten first.
pub(crate) struct Seen<K> {
    set: std::collections::HashSet<K>,
    order: std::collections::VecDeque<K>,
}

/// Message ids a transport remembers.
const REMEMBER: usize = 4096;

impl<K: std::hash::Hash + Eq + Clone> Seen<K> {
    pub fn new() -> Seen<K> {
        Seen {
            set: std::collections::HashSet::new(),
            order: std::collections::VecDeque::new(),
        }
    }

    pub fn contains<Q>(&self, k: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.set.contains(k)
    }

    /// Remember `k`; false when it was seen already.
    pub fn insert(&mut self, k: K) -> bool {
        if !self.set.insert(k.clone()) {
            return false;
        }
        self.order.push_back(k);
        if self.order.len() > REMEMBER {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// Who a transport talks to: one fixed correspondent (the peer's chat,
/// number, account), or, on an agent given `*`, whoever writes, answered
/// at the address its messages came from.
#[derive(Debug)]
pub struct Correspondents {
    fixed: Option<Address>,
    /// Senders seen, oldest first (bounded), for `*`.
    seen: std::sync::Mutex<std::collections::VecDeque<Address>>,
    /// Addresses trusted peers are configured at, for `*`.
    introduced: std::sync::Mutex<std::collections::HashSet<Address>>,
}

/// Senders a `*` transport remembers.
const CORRESPONDENTS: usize = 256;

impl Correspondents {
    /// `peer` is the URI's address; `*` means whoever writes.
    pub fn new(peer: &str) -> Correspondents {
        Correspondents {
            fixed: (peer != "*").then(|| peer.to_string()),
            seen: std::sync::Mutex::new(std::collections::VecDeque::new()),
            introduced: std::sync::Mutex::default(),
        }
    }

    /// A trusted peer is configured at `to` ([`Transport::introduce`]).
    pub fn introduce(&self, to: &Address) {
        if self.fixed.is_none() {
            let mut known = self.introduced.lock().unwrap_or_else(|e| e.into_inner());
            // Bounded by the trust list, which the owner writes.
            known.insert(to.clone());
        }
    }

    pub fn is_any(&self) -> bool {
        self.fixed.is_none()
    }

    /// Whether a message from `from` is for us (and, for `*`, remember it
    /// as someone who may be answered).
    pub fn accept(&self, from: &str, also: &[&str]) -> bool {
        match &self.fixed {
            Some(peer) => {
                let peer = peer.trim_start_matches('@');
                std::iter::once(from)
                    .chain(also.iter().copied())
                    .any(|f| f.trim_start_matches('@').eq_ignore_ascii_case(peer))
            }
            None => {
                // Least recently heard from goes first: strangers writing
                // in a crowd do not push out a peer that keeps writing.
                let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(at) = seen.iter().position(|s| s == from) {
                    seen.remove(at);
                }
                seen.push_back(from.to_string());
                if seen.len() > CORRESPONDENTS {
                    seen.pop_front();
                }
                true
            }
        }
    }

    /// Where a message the engine addressed to `to` goes: the fixed
    /// correspondent, or (for `*`) `to` itself if it has written to us.
    pub fn recipient(&self, to: &Address) -> Result<Address, SendError> {
        match &self.fixed {
            Some(peer) => Ok(peer.clone()),
            None => {
                let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                let introduced = self.introduced.lock().unwrap_or_else(|e| e.into_inner());
                if seen.iter().any(|s| s == to) || introduced.contains(to) {
                    Ok(to.clone())
                } else {
                    Err(SendError::Failed(
                        "this transport answers whoever writes (*), and this peer has not written on it yet".into(),
                    ))
                }
            }
        }
    }
}

/// The smallest message a link can use: its header and one piece of a
/// frame with a few bytes in it (every frame can be cut that small). A
/// provider that takes less cannot carry pigeon at all.
pub const MIN_MESSAGE: usize = 64;

/// What a channel can carry.
#[derive(Clone, Debug, PartialEq)]
pub struct Capabilities {
    /// Largest message: characters on text channels, bytes otherwise.
    pub max_message: usize,
    pub text_only: bool,
    /// How a text message spells the link's bytes (`alphabet=`; nothing
    /// to binary channels).
    pub alphabet: Alphabet,
    pub messages_per_minute: Option<u32>,
    pub bytes_per_minute: Option<u64>,
    /// The provider takes short bursts over its pace (Shipper: a tenth of
    /// a minute's messages): the pace is charged when a message leaves and
    /// several may be on the wire at once. Without (the messaging apps'
    /// per-chat limits), the next message to a destination leaves only
    /// once the last one was answered and the interval has passed since,
    /// so no two ever arrive closer than the pace, whatever the network.
    pub burst: bool,
}

impl Capabilities {
    /// Refuse a message over the channel's limit.
    pub fn admit(&self, message: &Message) -> std::result::Result<(), SendError> {
        let size = message.len();
        if size > self.max_message {
            return Err(SendError::TooLarge {
                size,
                limit: self.max_message,
            });
        }
        Ok(())
    }

    /// The time between two messages at the channel's pace (None: no
    /// message pace).
    pub fn interval(&self) -> Option<std::time::Duration> {
        self.messages_per_minute
            .map(|m| std::time::Duration::from_secs_f64(60.0 / f64::from(m.max(1))))
    }

    /// Raw bytes one message can carry (base64 costs 4 characters per 3
    /// bytes, the dense alphabet 8 per 15).
    pub fn payload_bytes(&self) -> usize {
        if self.text_only {
            self.alphabet.bytes_in(self.max_message)
        } else {
            self.max_message
        }
    }
}

/// Why a send did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The provider asked to slow down; the message comes back to be sent
    /// again after `retry_after`.
    #[error("rate limited by the provider; retry after {retry_after:?}")]
    RateLimited {
        retry_after: Duration,
        message: Message,
    },
    #[error("message of {size} exceeds the channel's limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// The provider takes smaller messages than it did when this one was
    /// cut (it said so, and [`Transport::limits`] says how small now): the
    /// message comes back to be cut again to `limit`.
    #[error("message of {size} is over the provider's limit of {limit} now")]
    Shrunk {
        size: usize,
        limit: usize,
        message: Message,
    },
    /// Worth trying again (a timeout, a 5xx).
    #[error("{0}")]
    Failed(String),
    /// Will not work until the user changes something (a bad token, a
    /// closed 24-hour window): said to them, with what to do.
    #[error("{0}")]
    Permanent(String),
}

/// What a transport knows of its own state: problems only the user can
/// fix, by where they were met (`send`, `receive`, `webhook`), shown by
/// `pigeon transports`, the TUI and the errors of a client that got no
/// answer. Shared between the transport's tasks and its link.
#[derive(Debug, Default)]
pub struct Health {
    problems: std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>,
    /// The provider has answered at least once since the transport opened.
    answered: std::sync::atomic::AtomicBool,
}

/// Where [`Health::unreachable`] notes its problem.
const CONNECT: &str = "connect";

impl Health {
    /// The provider answered a call (whatever it said): its address is
    /// right, so a later refused connection is an outage, not a setting.
    pub fn answered(&self) {
        self.answered
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.clear(CONNECT);
    }

    /// A call could not connect (`message` says how). A wrong address or
    /// port is a setting only the user can fix, but a provider that once
    /// answered and now refuses is an outage worth waiting out: noted as a
    /// problem only while the provider has never answered. Returns whether
    /// it was.
    pub fn unreachable(&self, message: String) -> bool {
        if self.answered.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        self.problem(CONNECT, message);
        true
    }

    /// Note a problem met at `place`; said once (at error level) when new,
    /// and not again when another place meets the same (a bad token fails
    /// sending and polling alike).
    pub fn problem(&self, place: &'static str, message: String) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if p.get(place) != Some(&message) {
            if !p.values().any(|m| *m == message) {
                tracing::error!("{message}");
            }
            p.insert(place, message);
        }
    }

    /// `place` works again.
    pub fn clear(&self, place: &'static str) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if p.remove(place).is_some() {
            tracing::info!("the transport's {place} works again");
        }
    }

    /// The problems now, one sentence each, each said once.
    pub fn problems(&self) -> Vec<String> {
        let p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = vec![];
        for m in p.values() {
            if !out.contains(m) {
                out.push(m.clone());
            }
        }
        out
    }
}

/// A channel that moves messages. Sending and receiving are separate: the
/// link sends from one task and reads [`Transport::incoming`] in another, so
/// a slow reader never holds up a sender.
pub trait Transport: Send + Sync + 'static {
    /// What it can carry, as known when it was opened.
    fn capabilities(&self) -> &Capabilities;

    /// What it can carry now, for a transport whose provider tells its
    /// limits at run time (Shipper's server announces them, and may lower
    /// them): the link sizes and paces its messages by the latest. Others
    /// keep [`capabilities`](Self::capabilities) for ever.
    fn limits(&self) -> tokio::sync::watch::Receiver<Capabilities> {
        tokio::sync::watch::channel(self.capabilities().clone()).1
    }

    /// The URI it was opened with, for display.
    fn describe(&self) -> String;

    fn send(
        &self,
        to: &Address,
        message: Message,
    ) -> impl Future<Output = std::result::Result<(), SendError>> + Send;

    /// The messages that arrive for this party. Called once; later calls
    /// get a closed channel.
    fn incoming(&mut self) -> tokio::sync::mpsc::Receiver<Received>;

    /// Its health, shared with the tasks that poll or listen for it.
    fn health(&self) -> std::sync::Arc<Health>;

    /// A trusted peer is configured at `to` (its address for this kind of
    /// transport in peers.toml): a transport that answers whoever writes
    /// (`*`) may send there before the peer has written. Others need not
    /// care: their one correspondent is in their URI.
    fn introduce(&self, to: &Address) {
        let _ = to;
    }

    /// It answers whoever writes (`*`): it can reach a peer only at an
    /// address that peer wrote from or the trust list gives
    /// ([`introduce`](Self::introduce)), never at a name it makes up (a
    /// peer's key id is an inbox on a spool, not a chat). Others reach
    /// their peers at any address the engine names.
    fn answers_whoever_writes(&self) -> bool {
        false
    }
}

/// The channels the local spool can imitate (DESIGN.md section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    TelegramText,
    TelegramDoc,
    WhatsappText,
    WhatsappDoc,
    MessengerText,
    MessengerDoc,
    Shipper,
    Unlimited,
}

/// "10 MB per minute", the default byte ceiling of the messaging channels.
const MESSAGING_BYTES_PER_MINUTE: u64 = 10_000_000;

impl Profile {
    pub const ALL: [Profile; 8] = [
        Profile::TelegramText,
        Profile::TelegramDoc,
        Profile::WhatsappText,
        Profile::WhatsappDoc,
        Profile::MessengerText,
        Profile::MessengerDoc,
        Profile::Shipper,
        Profile::Unlimited,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::TelegramText => "telegram-text",
            Profile::TelegramDoc => "telegram-doc",
            Profile::WhatsappText => "whatsapp-text",
            Profile::WhatsappDoc => "whatsapp-doc",
            Profile::MessengerText => "messenger-text",
            Profile::MessengerDoc => "messenger-doc",
            Profile::Shipper => "shipper",
            Profile::Unlimited => "unlimited",
        }
    }

    pub fn parse(s: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The limits, in decimal megabytes (the platforms' own unit, and the
    /// cautious reading of it).
    pub fn capabilities(self) -> Capabilities {
        let (max_message, text_only, per_min, bytes) = match self {
            Profile::TelegramText => (4096, true, Some(60), Some(MESSAGING_BYTES_PER_MINUTE)),
            Profile::TelegramDoc => (
                20_000_000,
                false,
                Some(20),
                Some(MESSAGING_BYTES_PER_MINUTE),
            ),
            Profile::WhatsappText => (4096, true, Some(10), Some(MESSAGING_BYTES_PER_MINUTE)),
            Profile::WhatsappDoc => (
                100_000_000,
                false,
                Some(10),
                Some(MESSAGING_BYTES_PER_MINUTE),
            ),
            Profile::MessengerText => (2000, true, Some(60), Some(MESSAGING_BYTES_PER_MINUTE)),
            Profile::MessengerDoc => (
                25_000_000,
                false,
                Some(60),
                Some(MESSAGING_BYTES_PER_MINUTE),
            ),
            Profile::Shipper => (1_000_000, false, Some(1000), None),
            Profile::Unlimited => (4_000_000, false, None, None),
        };
        Capabilities {
            max_message,
            text_only,
            alphabet: Alphabet::Base64,
            messages_per_minute: per_min,
            bytes_per_minute: bytes,
            burst: matches!(self, Profile::Shipper | Profile::Unlimited),
        }
    }
}

/// What a hostile provider does to messages, as probabilities per message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    pub loss: f64,
    pub dup: f64,
    pub reorder: f64,
    pub corrupt: f64,
    pub delay: Duration,
    pub seed: Option<u64>,
}

impl Faults {
    pub fn any(&self) -> bool {
        self.loss > 0.0 || self.dup > 0.0 || self.reorder > 0.0 || self.corrupt > 0.0
    }

    /// The fate of one message, drawn in one go (the generator is shared
    /// by sends that run at once, and its lock is never held across an
    /// await): `None` when it is lost; `bytes` altered in place when it is
    /// corrupted (kept text on text channels, as a provider mangling
    /// characters would).
    pub(crate) fn draw(
        &self,
        rng: &mut impl rand::Rng,
        bytes: &mut [u8],
        text_only: bool,
    ) -> Option<Fate> {
        if self.loss > 0.0 && rng.gen_bool(self.loss) {
            return None;
        }
        let corrupted = self.corrupt > 0.0 && rng.gen_bool(self.corrupt) && !bytes.is_empty();
        if corrupted {
            for _ in 0..rng.gen_range(1..=3) {
                let i = rng.gen_range(0..bytes.len());
                bytes[i] = if text_only {
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
                        [rng.gen_range(0..64)]
                } else {
                    bytes[i] ^ (1 << rng.gen_range(0..8))
                };
            }
        }
        let duplicated = self.dup > 0.0 && rng.gen_bool(self.dup);
        let reordered = self.reorder > 0.0 && rng.gen_bool(self.reorder);
        let mut delay = self.delay;
        if reordered {
            // Held back long enough for later messages to overtake it.
            delay += Duration::from_millis(rng.gen_range(20..250));
        }
        let copy_after = duplicated.then(|| delay + Duration::from_millis(rng.gen_range(0..50)));
        Some(Fate {
            delay,
            copy_after,
            corrupted,
            reordered,
        })
    }
}

/// What a hostile provider does to one message that it does not lose.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fate {
    /// Delivered after this long.
    pub delay: Duration,
    /// Delivered a second time, after this long.
    pub copy_after: Option<Duration>,
    pub corrupted: bool,
    pub reordered: bool,
}

/// A parsed `--transport` value.
#[derive(Clone, Debug, PartialEq)]
pub enum TransportUri {
    /// `local:<SPOOL_DIR>[?profile=..&loss=..&dup=..&reorder=..&corrupt=..&delay_ms=..&seed=..&bytes_per_min=..]`
    Local(local::LocalUri),
    /// `telegram:<CHAT>?token_env=<VAR>|token_file=<PATH>[&api=<URL>][&local_files=<DIR>][&mode=text|document]`
    Telegram(telegram::TelegramUri),
    /// `shipper:<PEER>?base_url=<URL>&api_key_env=<VAR>&api_secret_env=<VAR>[&rate_limit=N][&timeout=S]`
    Shipper(shipper::ShipperUri),
    /// `whatsapp:<WA_ID>?phone_id=<ID>&token_env=<VAR>&app_secret_env=<VAR>&verify_token_env=<VAR>&listen=<HOST:PORT>[&api=<URL>][&mode=text|document]`
    Whatsapp(whatsapp::WhatsappUri),
    /// `messenger:<PSID>?page_id=<ID>&token_env=<VAR>&app_secret_env=<VAR>&verify_token_env=<VAR>&listen=<HOST:PORT>[&api=<URL>][&mode=text|document]`
    Messenger(messenger::MessengerUri),
    /// `mem:<NET>[?profile=..&loss=..]`, the spool's options: an in-memory
    /// channel between parties of one process (the simulator's).
    Memory(memory::MemUri),
}

impl TransportUri {
    pub fn parse(raw: &str) -> Result<TransportUri> {
        let bad = |reason: String| CoreError::BadTransport {
            uri: raw.to_string(),
            reason,
        };
        let Some((scheme, rest)) = raw.split_once(':') else {
            return Err(bad(
                "expected <kind>:<address>, e.g. local:/tmp/pigeon-spool".into(),
            ));
        };
        // `bwlimit=`, `alphabet=` and `reserve=` are every kind's: taken
        // out here, set on what is parsed.
        let (rest, bwlimit) = take_bwlimit(rest).map_err(bad)?;
        let (rest, alphabet) = take_alphabet(&rest).map_err(bad)?;
        let (rest, reserve) = take_reserve(&rest).map_err(bad)?;
        let mut uri = TransportUri::parse_kind(scheme, &rest).map_err(bad)?;
        *uri.bwlimit_mut() = bwlimit;
        *uri.reserve_mut() = reserve;
        if let Some(alphabet) = alphabet {
            let text = Profile::parse(profile(&uri)).is_some_and(|p| p.capabilities().text_only);
            match uri.alphabet_mut() {
                Some(slot) if text => *slot = Some(alphabet),
                _ => {
                    return Err(bad(format!(
                        "alphabet={alphabet} is for text links (a -text profile, or mode=text), and this one carries files: leave it out"
                    )))
                }
            }
        }
        Ok(uri)
    }

    /// The alphabet asked for with `alphabet=` (None: the default,
    /// [`Alphabet::Base64`]; binary links have none).
    pub fn alphabet(&self) -> Option<Alphabet> {
        match self {
            TransportUri::Local(l) => l.alphabet,
            TransportUri::Memory(m) => m.0.alphabet,
            TransportUri::Telegram(t) => t.alphabet,
            TransportUri::Shipper(_) => None,
            TransportUri::Whatsapp(w) => w.meta.alphabet,
            TransportUri::Messenger(m) => m.meta.alphabet,
        }
    }

    fn alphabet_mut(&mut self) -> Option<&mut Option<Alphabet>> {
        match self {
            TransportUri::Local(l) => Some(&mut l.alphabet),
            TransportUri::Memory(m) => Some(&mut m.0.alphabet),
            TransportUri::Telegram(t) => Some(&mut t.alphabet),
            TransportUri::Shipper(_) => None,
            TransportUri::Whatsapp(w) => Some(&mut w.meta.alphabet),
            TransportUri::Messenger(m) => Some(&mut m.meta.alphabet),
        }
    }

    /// What this link may send, over its own messages (`bwlimit=`; the
    /// party's `--bwlimit` holds over all its links besides).
    pub fn bwlimit(&self) -> Option<&crate::bwlimit::BwLimit> {
        match self {
            TransportUri::Local(l) => l.bwlimit.as_ref(),
            TransportUri::Memory(m) => m.0.bwlimit.as_ref(),
            TransportUri::Telegram(t) => t.bwlimit.as_ref(),
            TransportUri::Shipper(s) => s.bwlimit.as_ref(),
            TransportUri::Whatsapp(w) => w.meta.bwlimit.as_ref(),
            TransportUri::Messenger(m) => m.meta.bwlimit.as_ref(),
        }
    }

    /// Message slots left free of bulk data for the user's own messages
    /// in the same chat (`reserve=N/M`: N of every M).
    pub fn reserve(&self) -> Option<crate::link::Reserve> {
        match self {
            TransportUri::Local(l) => l.reserve,
            TransportUri::Memory(m) => m.0.reserve,
            TransportUri::Telegram(t) => t.reserve,
            TransportUri::Shipper(s) => s.reserve,
            TransportUri::Whatsapp(w) => w.meta.reserve,
            TransportUri::Messenger(m) => m.meta.reserve,
        }
    }

    fn reserve_mut(&mut self) -> &mut Option<crate::link::Reserve> {
        match self {
            TransportUri::Local(l) => &mut l.reserve,
            TransportUri::Memory(m) => &mut m.0.reserve,
            TransportUri::Telegram(t) => &mut t.reserve,
            TransportUri::Shipper(s) => &mut s.reserve,
            TransportUri::Whatsapp(w) => &mut w.meta.reserve,
            TransportUri::Messenger(m) => &mut m.meta.reserve,
        }
    }

    fn bwlimit_mut(&mut self) -> &mut Option<crate::bwlimit::BwLimit> {
        match self {
            TransportUri::Local(l) => &mut l.bwlimit,
            TransportUri::Memory(m) => &mut m.0.bwlimit,
            TransportUri::Telegram(t) => &mut t.bwlimit,
            TransportUri::Shipper(s) => &mut s.bwlimit,
            TransportUri::Whatsapp(w) => &mut w.meta.bwlimit,
            TransportUri::Messenger(m) => &mut m.meta.bwlimit,
        }
    }

    fn parse_kind(scheme: &str, rest: &str) -> std::result::Result<TransportUri, String> {
        match scheme {
            "local" => Ok(TransportUri::Local(local::LocalUri::parse(rest)?)),
            "telegram" => Ok(TransportUri::Telegram(telegram::TelegramUri::parse(rest)?)),
            "shipper" => Ok(TransportUri::Shipper(shipper::ShipperUri::parse(rest)?)),
            "whatsapp" => Ok(TransportUri::Whatsapp(whatsapp::WhatsappUri::parse(rest)?)),
            "messenger" => Ok(TransportUri::Messenger(messenger::MessengerUri::parse(rest)?)),
            "mem" => Ok(TransportUri::Memory(memory::MemUri::parse(rest)?)),
            other => Err(format!(
                "unknown transport kind {other:?}; known: local, telegram, whatsapp, messenger, shipper"
            )),
        }
    }
}

/// `rest` without its `bwlimit=` pair, and that limit (rclone's syntax:
/// `512k`, `10M`, a timetable `"08:00,512k 19:00,off"`).
fn take_bwlimit(
    rest: &str,
) -> std::result::Result<(String, Option<crate::bwlimit::BwLimit>), String> {
    let Some((head, query)) = rest.split_once('?') else {
        return Ok((rest.to_string(), None));
    };
    let mut limit = None;
    let mut kept = vec![];
    for pair in query.split('&') {
        match pair.strip_prefix("bwlimit=") {
            Some(spec) => {
                let parsed = crate::bwlimit::BwLimit::parse(spec)
                    .map_err(|e| format!("bwlimit={spec:?}: {e}"))?;
                limit = (!parsed.is_off()).then_some(parsed);
            }
            None => kept.push(pair),
        }
    }
    Ok((format!("{head}?{}", kept.join("&")), limit))
}

/// `rest` without its `reserve=` pair, and the slots it keeps free.
fn take_reserve(rest: &str) -> std::result::Result<(String, Option<crate::link::Reserve>), String> {
    let Some((head, query)) = rest.split_once('?') else {
        return Ok((rest.to_string(), None));
    };
    let mut reserve = None;
    let mut kept = vec![];
    for pair in query.split('&') {
        match pair.strip_prefix("reserve=") {
            Some(spec) => reserve = Some(crate::link::Reserve::parse(spec)?),
            None => kept.push(pair),
        }
    }
    Ok((format!("{head}?{}", kept.join("&")), reserve))
}

/// `rest` without its `alphabet=` pair, and the alphabet it names.
fn take_alphabet(rest: &str) -> std::result::Result<(String, Option<Alphabet>), String> {
    let Some((head, query)) = rest.split_once('?') else {
        return Ok((rest.to_string(), None));
    };
    let mut alphabet = None;
    let mut kept = vec![];
    for pair in query.split('&') {
        match pair.strip_prefix("alphabet=") {
            Some(name) => {
                alphabet = Some(Alphabet::parse(name).ok_or_else(|| {
                    format!("alphabet={name:?} is not one pigeon knows; use alphabet=dense (15 bits a character) or alphabet=base64")
                })?);
            }
            None => kept.push(pair),
        }
    }
    Ok((format!("{head}?{}", kept.join("&")), alphabet))
}

impl std::fmt::Display for TransportUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = match self {
            TransportUri::Local(l) => l.to_string(),
            TransportUri::Telegram(t) => t.to_string(),
            TransportUri::Shipper(t) => t.to_string(),
            TransportUri::Whatsapp(t) => t.to_string(),
            TransportUri::Messenger(t) => t.to_string(),
            TransportUri::Memory(t) => t.to_string(),
        };
        f.write_str(&shown)?;
        let mut joint = if shown.contains('?') { '&' } else { '?' };
        if let Some(b) = self.bwlimit() {
            write!(f, "{joint}bwlimit={b}")?;
            joint = '&';
        }
        if let Some(r) = self.reserve() {
            write!(f, "{joint}reserve={r}")?;
            joint = '&';
        }
        match self.alphabet() {
            Some(a) => write!(f, "{joint}alphabet={a}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 30 item 6: `reserve=N/M` on any transport, kept in what the
    /// URI says of itself, and refused with what to do when it is wrong.
    #[test]
    fn reserve_is_every_kinds_and_said_back() {
        for raw in [
            "local:/tmp/spool?profile=telegram-text&reserve=1/3",
            "telegram:@bot?token_env=T&reserve=1/3",
        ] {
            let uri = TransportUri::parse(raw).unwrap();
            assert_eq!(
                uri.reserve(),
                Some(crate::link::Reserve { free: 1, of: 3 }),
                "{raw}"
            );
            assert!(uri.to_string().contains("reserve=1/3"), "{uri}");
        }
        let err = TransportUri::parse("local:/tmp/spool?reserve=3/3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("less than M"), "{err}");
    }

    #[test]
    fn every_kind_takes_its_own_bandwidth_limit() {
        for raw in [
            "local:/tmp/s?profile=shipper&bwlimit=512k",
            "local:/tmp/s?bwlimit=08:00,512k 19:00,off",
            "telegram:@bot?token_env=T&bwlimit=1M",
            "shipper:peer?base_url=http://x&api_key_env=K&api_secret_env=S&bwlimit=10M",
            "whatsapp:123?phone_id=1&token_env=T&app_secret_env=A&verify_token_env=V&listen=127.0.0.1:1&bwlimit=2M",
        ] {
            let uri = TransportUri::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert!(uri.bwlimit().is_some(), "{raw}");
            // Shown with it, and read back the same.
            let again = TransportUri::parse(&uri.to_string()).unwrap();
            assert_eq!(again, uri, "{raw} shown as {uri}");
        }
        let none = TransportUri::parse("local:/tmp/s?bwlimit=off").unwrap();
        assert!(none.bwlimit().is_none());
        let bad = TransportUri::parse("local:/tmp/s?bwlimit=fast").unwrap_err();
        assert!(bad.to_string().contains("bwlimit=\"fast\""), "{bad}");
    }

    #[test]
    fn parses_local_uris_with_knobs() {
        let u = TransportUri::parse(
            "local:/tmp/s?profile=telegram-text&loss=0.1&dup=0.05&reorder=0.2&corrupt=0.01&delay_ms=5&seed=7&bytes_per_min=1000",
        )
        .unwrap();
        let TransportUri::Local(l) = &u else {
            panic!("not a local uri")
        };
        assert_eq!(l.profile, Profile::TelegramText);
        assert_eq!(l.faults.loss, 0.1);
        assert_eq!(l.faults.seed, Some(7));
        assert_eq!(l.faults.delay, Duration::from_millis(5));
        assert_eq!(l.capabilities().bytes_per_minute, Some(1000));
        assert_eq!(TransportUri::parse(&u.to_string()).unwrap(), u);
    }

    #[test]
    fn refuses_bad_uris_clearly() {
        for bad in [
            "nothing",
            "ftp:/x",
            "local:",
            "local:/x?profile=carrier-pigeon",
            "local:/x?loss=2",
            "local:/x?bogus=1",
        ] {
            let err = TransportUri::parse(bad).unwrap_err().to_string();
            assert!(err.contains("invalid transport"), "{bad}: {err}");
        }
    }

    #[test]
    fn every_text_kind_takes_an_alphabet_and_shows_it() {
        for raw in [
            "local:/tmp/s?profile=telegram-text&alphabet=dense",
            "mem:n?profile=messenger-text&alphabet=base64&bwlimit=1M",
            "telegram:@bot?token_env=T&alphabet=dense",
            "whatsapp:123?phone_id=1&token_env=T&app_secret_env=A&verify_token_env=V&listen=127.0.0.1:1&alphabet=dense",
            "messenger:9?page_id=1&token_env=T&app_secret_env=A&verify_token_env=V&listen=127.0.0.1:1&alphabet=dense",
        ] {
            let uri = TransportUri::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert!(uri.alphabet().is_some(), "{raw}");
            let again = TransportUri::parse(&uri.to_string()).unwrap();
            assert_eq!(again, uri, "{raw} shown as {uri}");
        }
        let plain = TransportUri::parse("local:/tmp/s?profile=telegram-text").unwrap();
        assert_eq!(plain.alphabet(), None);
    }

    #[test]
    fn an_alphabet_on_a_file_link_or_an_unknown_one_is_refused_clearly() {
        for (raw, says) in [
            (
                "local:/tmp/s?profile=shipper&alphabet=dense",
                "is for text links",
            ),
            (
                "telegram:@bot?token_env=T&mode=document&alphabet=dense",
                "is for text links",
            ),
            (
                "shipper:peer?base_url=http://x&api_key_env=K&api_secret_env=S&alphabet=dense",
                "is for text links",
            ),
            (
                "local:/tmp/s?profile=telegram-text&alphabet=emoji",
                "alphabet=dense",
            ),
        ] {
            let err = TransportUri::parse(raw).unwrap_err().to_string();
            assert!(err.contains(says), "{raw}: {err}");
        }
    }

    #[test]
    fn dense_text_links_carry_fifteen_bytes_per_eight_characters() {
        for uri in [
            "local:/tmp/s?profile=telegram-text&alphabet=dense",
            "telegram:@bot?token_env=T&alphabet=dense",
            "whatsapp:123?phone_id=1&token_env=T&app_secret_env=A&verify_token_env=V&listen=127.0.0.1:1&alphabet=dense",
        ] {
            let caps = match TransportUri::parse(uri).unwrap() {
                TransportUri::Local(l) => l.capabilities(),
                TransportUri::Telegram(t) => t.capabilities(),
                TransportUri::Whatsapp(w) => w.capabilities(),
                _ => unreachable!(),
            };
            assert_eq!(caps.alphabet, Alphabet::Dense, "{uri}");
            assert_eq!(caps.payload_bytes(), 7680, "{uri}");
        }
        let messenger = TransportUri::parse(
            "messenger:9?page_id=1&token_env=T&app_secret_env=A&verify_token_env=V&listen=127.0.0.1:1&alphabet=dense",
        )
        .unwrap();
        let TransportUri::Messenger(m) = messenger else {
            unreachable!()
        };
        assert_eq!(m.capabilities().payload_bytes(), 3750);
    }

    #[test]
    fn text_is_counted_in_utf16_units_as_the_platforms_count_it() {
        assert_eq!(Message::Text("鸽".repeat(4096)).len(), 4096);
        assert_eq!(Message::Text("🕊".repeat(10)).len(), 20);
    }

    #[test]
    fn text_profiles_carry_three_bytes_per_four_characters() {
        assert_eq!(Profile::TelegramText.capabilities().payload_bytes(), 3072);
        assert_eq!(Profile::MessengerText.capabilities().payload_bytes(), 1500);
    }
}
