//! Pairing by a short code: two parties that trust nothing yet exchange
//! their public keys over the channel, authenticated by a code a person
//! reads from one screen and types on the other (`7-gravel-ostrich`).
//!
//! The agent's owner runs `pigeon pair`, which makes a code and waits; the
//! developer runs `pigeon pair 7-gravel-ostrich` on the client. The two run
//! SPAKE2 (the `spake2` crate, over Ed25519) with the code as the password,
//! then each sends its public key sealed under the shared key (XChaCha20-
//! Poly1305, a key per direction, the whole exchange as associated data):
//! opening the other's seal is the key confirmation. Then each trusts the
//! other, the agent with the permissions and limits its owner gave.
//!
//! What an adversary on the channel can do, and what it gets:
//!
//! - read everything: the SPAKE2 messages reveal nothing about the code, the
//!   keys travel sealed;
//! - guess: the first attempt that reaches the agent burns the code, right
//!   or wrong (one guess in 65,536 per code), and a code lives ten minutes;
//! - stand in the middle: without the code it cannot make either seal, so
//!   both sides fail, and say so;
//! - redeliver, drop or reorder: every message is repeated until answered,
//!   a repeat gets the same answer, and a message of another attempt or
//!   another step is ignored.
//!
//! The digit of the code is its slot: on a spool the agent listens at
//! `pair-<digit>` (a client cannot know the agent's inbox before it knows
//! its key); on a bot or a phone number the channel itself is the meeting
//! place. The words are the secret.

use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use spake2::{Ed25519Group, Identity as SpakeIdentity, Password, Spake2};

use crate::codec;
use crate::crypto::PublicKey;
use crate::error::{CoreError, Result};

/// How long a code can be used.
pub const CODE_LIFETIME: Duration = Duration::from_secs(600);

/// The words of a code: 256, so each is one byte of the secret.
const WORDS: [&str; 256] = [
    "acorn", "actor", "adobe", "agent", "album", "alley", "amber", "anchor", "angle", "ankle",
    "apple", "apron", "arena", "armor", "arrow", "aspen", "atlas", "attic", "autumn", "avocado",
    "bacon", "badge", "bagel", "baker", "bamboo", "banjo", "barley", "barrel", "basil", "basket",
    "beacon", "beaver", "bellow", "berry", "bishop", "blanket", "blossom", "bonnet", "border",
    "bottle", "bracket", "bramble", "breeze", "brick", "bridge", "bronze", "brook", "bucket",
    "buffalo", "bugle", "bundle", "burrow", "butter", "button", "cabin", "cactus", "camel",
    "candle", "canoe", "canyon", "carbon", "carpet", "carrot", "castle", "cedar", "cellar",
    "cement", "chalk", "cherry", "chess", "chimney", "cider", "cinder", "circus", "clover",
    "cobalt", "cocoa", "comet", "copper", "coral", "cotton", "cradle", "crater", "cricket",
    "crystal", "cupboard", "curtain", "cypress", "daisy", "dancer", "delta", "desert", "dolphin",
    "donkey", "dragon", "drizzle", "drum", "eagle", "easel", "echo", "elbow", "ember", "engine",
    "falcon", "feather", "fennel", "ferry", "fiddle", "figure", "flannel", "flute", "forest",
    "fossil", "fountain", "fox", "garden", "garlic", "gazelle", "geyser", "ginger", "glacier",
    "goblet", "gravel", "guitar", "hammer", "harbor", "harvest", "hazel", "hedge", "helmet",
    "heron", "hollow", "honey", "hornet", "iceberg", "igloo", "island", "ivory", "jacket",
    "jasmine", "jelly", "jigsaw", "jungle", "kayak", "kennel", "kettle", "kitten", "ladder",
    "lagoon", "lantern", "laurel", "lemon", "lentil", "lilac", "linen", "lobster", "locket",
    "lotus", "magnet", "mango", "maple", "marble", "meadow", "melon", "mesa", "meteor", "mitten",
    "monsoon", "mosaic", "muffin", "mustard", "napkin", "nectar", "needle", "nickel", "noodle",
    "nutmeg", "oasis", "oatmeal", "ocean", "olive", "onion", "orbit", "orchid", "ostrich", "otter",
    "oyster", "paddle", "pancake", "panda", "parrot", "pebble", "pepper", "pickle", "pigeon",
    "pillow", "pine", "planet", "plum", "pocket", "pony", "poppy", "potato", "prairie", "puffin",
    "pumpkin", "quartz", "quill", "rabbit", "radish", "raven", "reef", "ribbon", "river", "rocket",
    "saddle", "saffron", "salmon", "sandal", "satin", "scarf", "shovel", "silver", "sketch",
    "sparrow", "spider", "spruce", "squash", "stable", "starling", "summit", "sunset", "swallow",
    "tablet", "teapot", "thistle", "thunder", "tiger", "timber", "tomato", "trumpet", "tulip",
    "tunnel", "turnip", "umbrella", "valley", "velvet", "violet", "wagon", "walnut", "walrus",
    "wasp", "whale", "wheat", "willow", "zebra",
];

/// A pairing code: a slot digit and two words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairCode {
    slot: u8,
    words: [u8; 2],
}

impl PairCode {
    pub fn random() -> PairCode {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        PairCode {
            slot: rng.gen_range(1..=9),
            words: [rng.gen(), rng.gen()],
        }
    }

    /// `7-gravel-ostrich`, in any case, with spaces or dashes.
    pub fn parse(text: &str) -> Result<PairCode> {
        let bad = |why: String| {
            CoreError::Config(format!(
                "{why}; a pairing code looks like 7-gravel-ostrich (as `pigeon pair` printed it on the agent)"
            ))
        };
        let lower = text.trim().to_lowercase();
        let parts: Vec<&str> = lower
            .split(|c: char| c == '-' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .collect();
        let [slot, a, b] = parts.as_slice() else {
            return Err(bad(format!("{text:?} is not a code")));
        };
        let slot: u8 = slot
            .parse()
            .ok()
            .filter(|s| (1..=9).contains(s))
            .ok_or_else(|| bad(format!("{slot:?} is not a digit from 1 to 9")))?;
        let word = |w: &str| {
            WORDS
                .iter()
                .position(|x| *x == w)
                .map(|i| i as u8)
                .ok_or_else(|| bad(format!("{w:?} is not one of the code words")))
        };
        Ok(PairCode {
            slot,
            words: [word(a)?, word(b)?],
        })
    }

    /// Where the agent waits on a spool.
    pub fn inbox(&self) -> String {
        format!("pair-{}", self.slot)
    }

    pub fn slot(&self) -> u8 {
        self.slot
    }

    fn password(&self) -> Password {
        Password::new(self.to_string().as_bytes())
    }
}

impl std::fmt::Display for PairCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}-{}",
            self.slot, WORDS[self.words[0] as usize], WORDS[self.words[1] as usize]
        )
    }
}

/// One pairing message, the body of a [`crate::protocol::Frame::Pair`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairMessage {
    /// The attempt (one per client run).
    pub attempt: [u8; 16],
    /// When the client began it, by its clock: a start from before the
    /// code existed (left in a spool, a bot's backlog) is not a guess.
    pub made_unix: u64,
    pub step: Step,
    /// The client's inbox, so a spool agent can answer before it knows
    /// the key (nothing else is taken from it).
    pub reply_to: String,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Client: its SPAKE2 message.
    Start,
    /// Agent: its SPAKE2 message and its introduction, sealed.
    Answer,
    /// Client: its introduction, sealed; empty when it could not open the
    /// agent's (a wrong code), so the agent learns it at once.
    Confirm,
    /// Agent: the outcome, sealed.
    Done,
}

/// What each side tells the other, sealed under the code's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introduction {
    pub key: [u8; 32],
    /// The name it suggests for itself (the agent's owner may override).
    pub name: String,
    /// The agent's answer to a confirmation: empty when paired, else why not.
    pub refusal: String,
}

const VERSION: u8 = 1;
const ID_CLIENT: &[u8] = b"pigeon pair client";
const ID_AGENT: &[u8] = b"pigeon pair agent";

/// The sealing of one direction, bound to the whole exchange.
struct Sealer {
    key: [u8; 32],
    context: Vec<u8>,
}

impl Sealer {
    fn new(shared: &[u8], label: &[u8], attempt: &[u8; 16], start: &[u8], answer: &[u8]) -> Sealer {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(shared).expect("any key length");
        mac.update(label);
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        let mut context = b"pigeon pair v1".to_vec();
        context.extend_from_slice(attempt);
        context.extend_from_slice(start);
        context.extend_from_slice(answer);
        Sealer { key, context }
    }

    fn seal(&self, step: Step, intro: &Introduction) -> Result<Vec<u8>> {
        let plain = codec::encode("pairing introduction", VERSION, intro)?;
        let nonce: [u8; 24] = rand::random();
        let mut aad = self.context.clone();
        aad.push(step as u8);
        let sealed = XChaCha20Poly1305::new((&self.key).into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| CoreError::Crypto("sealing a pairing message".into()))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    fn open(&self, step: Step, body: &[u8]) -> Option<Introduction> {
        if body.len() < 24 {
            return None;
        }
        let (nonce, sealed) = body.split_at(24);
        let mut aad = self.context.clone();
        aad.push(step as u8);
        let plain = XChaCha20Poly1305::new((&self.key).into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .ok()?;
        codec::decode("pairing introduction", VERSION, &plain).ok()
    }
}

/// How a pairing ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Paired with this key, which suggested this name.
    Paired {
        key: PublicKey,
        name: String,
    },
    Failed(String),
}

/// How far a client's clock may be behind the agent's.
const CLOCK_SKEW: u64 = 60;

/// The agent's side: a code, burnt by the first attempt that reaches it.
pub struct AgentSide {
    code: PairCode,
    me: Introduction,
    made: Instant,
    made_unix: u64,
    attempt: Option<AgentAttempt>,
    /// What the last Done said, for a repeated Confirm.
    done: Option<Vec<u8>>,
}

struct AgentAttempt {
    attempt: [u8; 16],
    answer: Vec<u8>,
    /// Client → agent, and agent → client.
    from_client: Sealer,
    to_client: Sealer,
}

impl AgentSide {
    pub fn new(code: PairCode, key: PublicKey, name: &str, now: Instant) -> AgentSide {
        AgentSide {
            code,
            me: Introduction {
                key: key.0,
                name: name.to_string(),
                refusal: String::new(),
            },
            made: now,
            made_unix: crate::store::now_unix(),
            attempt: None,
            done: None,
        }
    }

    /// Whether an attempt has taken the code.
    pub fn taken(&self) -> bool {
        self.attempt.is_some()
    }

    /// Whether the code has expired (only before an attempt took it).
    pub fn expired(&self, now: Instant) -> bool {
        self.attempt.is_none() && now.duration_since(self.made) > CODE_LIFETIME
    }

    /// Take one message: the reply to send (to `reply_to`), and the end,
    /// if this was it. `accept` decides on the client's introduction (it
    /// saves the trust): `Err` is the refusal to tell the client.
    pub fn on_message(
        &mut self,
        m: &PairMessage,
        now: Instant,
        accept: &mut dyn FnMut(&Introduction) -> std::result::Result<(), String>,
    ) -> (Option<PairMessage>, Option<Ended>) {
        let reply = |step, body| PairMessage {
            attempt: m.attempt,
            made_unix: m.made_unix,
            step,
            reply_to: String::new(),
            body,
        };
        match (&self.attempt, m.step) {
            (None, Step::Start) => {
                if self.expired(now) || m.made_unix.saturating_add(CLOCK_SKEW) < self.made_unix {
                    return (None, None);
                }
                let (spake, answer) = Spake2::<Ed25519Group>::start_b(
                    &self.code.password(),
                    &SpakeIdentity::new(ID_CLIENT),
                    &SpakeIdentity::new(ID_AGENT),
                );
                let Ok(shared) = spake.finish(&m.body) else {
                    // Not a SPAKE2 message at all: garbage, not a guess.
                    return (None, None);
                };
                let to_client =
                    Sealer::new(&shared, b"agent to client", &m.attempt, &m.body, &answer);
                let from_client =
                    Sealer::new(&shared, b"client to agent", &m.attempt, &m.body, &answer);
                let Ok(sealed) = to_client.seal(Step::Answer, &self.me) else {
                    return (None, None);
                };
                let mut body = (answer.len() as u16).to_be_bytes().to_vec();
                body.extend_from_slice(&answer);
                body.extend_from_slice(&sealed);
                self.attempt = Some(AgentAttempt {
                    attempt: m.attempt,
                    answer: body.clone(),
                    from_client,
                    to_client,
                });
                (Some(reply(Step::Answer, body)), None)
            }
            // The same start again: its answer was lost.
            (Some(a), Step::Start) if a.attempt == m.attempt => {
                (Some(reply(Step::Answer, a.answer.clone())), None)
            }
            (Some(a), Step::Confirm) if a.attempt == m.attempt => {
                if let Some(done) = &self.done {
                    return (Some(reply(Step::Done, done.clone())), None);
                }
                if m.body.is_empty() {
                    return (
                        None,
                        Some(Ended::Failed(
                            "the client could not open this side's answer: the code typed there was wrong; this code is burnt, run `pigeon pair` again for a new one".into(),
                        )),
                    );
                }
                let Some(intro) = a.from_client.open(Step::Confirm, &m.body) else {
                    return (
                        None,
                        Some(Ended::Failed(
                            "the client's confirmation did not authenticate (altered on the way?); this code is burnt, run `pigeon pair` again".into(),
                        )),
                    );
                };
                let verdict = accept(&intro);
                let told = Introduction {
                    refusal: verdict.clone().err().unwrap_or_default(),
                    ..self.me.clone()
                };
                let Ok(done) = a.to_client.seal(Step::Done, &told) else {
                    return (
                        None,
                        Some(Ended::Failed("sealing the answer failed".into())),
                    );
                };
                self.done = Some(done.clone());
                let ended = match verdict {
                    Ok(()) => Ended::Paired {
                        key: PublicKey(intro.key),
                        name: intro.name,
                    },
                    Err(why) => Ended::Failed(why),
                };
                (Some(reply(Step::Done, done)), Some(ended))
            }
            // Another attempt once the code is taken, or a step out of turn.
            _ => (None, None),
        }
    }
}

/// The client's side of one attempt.
pub struct ClientSide {
    attempt: [u8; 16],
    made_unix: u64,
    start: Vec<u8>,
    spake: Option<Spake2<Ed25519Group>>,
    me: Introduction,
    reply_to: String,
    /// After the agent's answer opened: what to repeat, and the seal to
    /// open its Done with.
    confirm: Option<(PairMessage, Sealer, Introduction)>,
}

impl ClientSide {
    pub fn new(code: &PairCode, key: PublicKey, name: &str, reply_to: &str) -> ClientSide {
        let (spake, start) = Spake2::<Ed25519Group>::start_a(
            &code.password(),
            &SpakeIdentity::new(ID_CLIENT),
            &SpakeIdentity::new(ID_AGENT),
        );
        ClientSide {
            attempt: rand::random(),
            made_unix: crate::store::now_unix(),
            start,
            spake: Some(spake),
            me: Introduction {
                key: key.0,
                name: name.to_string(),
                refusal: String::new(),
            },
            reply_to: reply_to.to_string(),
            confirm: None,
        }
    }

    /// What to send now, and again until it is answered.
    pub fn outgoing(&self) -> PairMessage {
        match &self.confirm {
            Some((m, _, _)) => m.clone(),
            None => PairMessage {
                attempt: self.attempt,
                made_unix: self.made_unix,
                step: Step::Start,
                reply_to: self.reply_to.clone(),
                body: self.start.clone(),
            },
        }
    }

    /// Take one message from the agent; the end, if this was it (with a
    /// last message to send on a failure, so the agent learns it too).
    pub fn on_message(&mut self, m: &PairMessage) -> (Option<PairMessage>, Option<Ended>) {
        if m.attempt != self.attempt {
            return (None, None);
        }
        match m.step {
            Step::Answer if self.confirm.is_none() => {
                let Some(spake) = self.spake.take() else {
                    return (None, None);
                };
                let fail = |why: &str| {
                    let abort = PairMessage {
                        attempt: self.attempt,
                        made_unix: self.made_unix,
                        step: Step::Confirm,
                        reply_to: self.reply_to.clone(),
                        body: vec![],
                    };
                    (Some(abort), Some(Ended::Failed(why.to_string())))
                };
                let wrong = "wrong code: the agent's answer does not open with it (check the words; that code is now burnt: run `pigeon pair` on the agent again)";
                let Some((answer, sealed)) = split_answer(&m.body) else {
                    return fail(wrong);
                };
                let Ok(shared) = spake.finish(answer) else {
                    return fail(wrong);
                };
                let from_agent = Sealer::new(
                    &shared,
                    b"agent to client",
                    &self.attempt,
                    &self.start,
                    answer,
                );
                let to_agent = Sealer::new(
                    &shared,
                    b"client to agent",
                    &self.attempt,
                    &self.start,
                    answer,
                );
                let Some(agent) = from_agent.open(Step::Answer, sealed) else {
                    return fail(wrong);
                };
                let Ok(body) = to_agent.seal(Step::Confirm, &self.me) else {
                    return fail("sealing the confirmation failed");
                };
                let confirm = PairMessage {
                    attempt: self.attempt,
                    made_unix: self.made_unix,
                    step: Step::Confirm,
                    reply_to: self.reply_to.clone(),
                    body,
                };
                self.confirm = Some((confirm.clone(), from_agent, agent));
                (Some(confirm), None)
            }
            Step::Done => {
                let Some((_, from_agent, agent)) = &self.confirm else {
                    return (None, None);
                };
                let Some(done) = from_agent.open(Step::Done, &m.body) else {
                    return (None, None);
                };
                if done.key != agent.key {
                    return (None, None);
                }
                let ended = match done.refusal.is_empty() {
                    true => Ended::Paired {
                        key: PublicKey(agent.key),
                        name: agent.name.clone(),
                    },
                    false => Ended::Failed(format!("the agent refused: {}", done.refusal)),
                };
                (None, Some(ended))
            }
            _ => (None, None),
        }
    }
}

/// The agent's answer: its SPAKE2 message (length-prefixed) and its seal.
fn split_answer(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let answer = body.get(2..2 + len)?;
    Some((answer, &body[2 + len..]))
}

/// How long the agent keeps answering a repeated confirmation once paired
/// (its last answer may have been lost): a few of the slowest link's
/// message intervals, at least this.
const LINGER: Duration = Duration::from_secs(5);

fn linger(links: &[crate::link::LinkHandle]) -> Duration {
    links
        .iter()
        .filter_map(|l| l.capabilities().messages_per_minute)
        .map(|per_minute| Duration::from_secs(4 * 60 / u64::from(per_minute.max(1))))
        .max()
        .unwrap_or_default()
        .clamp(LINGER, CODE_LIFETIME)
}

/// Where a pairing client wrote from: the kind of transport and its
/// address there, when the channel names senders (a bot's chat, a number).
pub type Origin<'a> = Option<(&'a str, &'a crate::transport::Address)>;

/// A spool inbox name as a client has one (its key id: 16 hex digits):
/// the only `reply_to` the agent writes to.
fn is_inbox(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn frame(m: &PairMessage) -> Result<Vec<u8>> {
    crate::protocol::Frame::Pair {
        body: codec::encode("pairing message", VERSION, m)?,
    }
    .encode()
}

fn message(inbound: &crate::link::Inbound) -> Option<PairMessage> {
    match crate::protocol::Frame::decode(&inbound.frame).ok()? {
        crate::protocol::Frame::Pair { body } => {
            codec::decode("pairing message", VERSION, &body).ok()
        }
        _ => None,
    }
}

/// Let what the links hold go out before they are dropped.
async fn drain(links: &[crate::link::LinkHandle]) {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < until && !links.iter().all(|l| l.is_drained()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The agent's side: wait on `transports` for one client with `code`
/// (for [`CODE_LIFETIME`]); `accept` saves its trust (and is told where
/// it wrote from, to pin it there), or says why not.
pub async fn offer(
    transports: &[crate::transport::TransportUri],
    code: PairCode,
    me: PublicKey,
    my_name: &str,
    mut accept: impl FnMut(&Introduction, Origin<'_>) -> std::result::Result<(), String>,
) -> Result<Ended> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let links = crate::engine::open_links_named(transports, &code.inbox(), tx, false, None)?;
    let started = Instant::now();
    let mut side = AgentSide::new(code, me, my_name, started);
    let mut ended = None;
    let mut linger: Option<Instant> = None;
    loop {
        let wait = match linger {
            Some(until) => until.saturating_duration_since(Instant::now()),
            None => CODE_LIFETIME.saturating_sub(started.elapsed()) + Duration::from_secs(1),
        };
        let inbound = match tokio::time::timeout(wait, rx.recv()).await {
            Err(_) => break,
            Ok(None) => return Err(CoreError::Transfer("the transports closed".into())),
            Ok(Some(i)) => i,
        };
        let Some(m) = message(&inbound) else {
            continue;
        };
        let from = inbound.from.clone();
        let scheme = links[inbound.link].scheme().to_string();
        let (reply, end) = side.on_message(&m, Instant::now(), &mut |intro| {
            accept(intro, from.as_ref().map(|f| (scheme.as_str(), f)))
        });
        if let Some(reply) = reply {
            let to = match from {
                Some(f) => Some(f),
                None => is_inbox(&m.reply_to).then(|| m.reply_to.clone()),
            };
            if let (Some(to), Ok(bytes)) = (to, frame(&reply)) {
                links[inbound.link].send_control(&to, bytes, None);
            }
        }
        if let Some(end) = end {
            let paired = matches!(end, Ended::Paired { .. });
            ended.get_or_insert(end);
            if !paired {
                break;
            }
            linger.get_or_insert(Instant::now() + self::linger(&links));
        }
    }
    drain(&links).await;
    Ok(ended.unwrap_or_else(|| match side.taken() {
        true => Ended::Failed(
            "an attempt took the code but never confirmed it (a guess on the channel, or a client that stopped); the code is burnt: run `pigeon pair` again".into(),
        ),
        false => Ended::Failed(format!(
            "no client paired within {} minutes; the code has expired (run `pigeon pair` again)",
            CODE_LIFETIME.as_secs() / 60
        )),
    }))
}

/// The client's side: pair with whoever waits on `transports` with `code`,
/// giving up after `limit`.
pub async fn accept(
    transports: &[crate::transport::TransportUri],
    code: PairCode,
    me: PublicKey,
    my_name: &str,
    limit: Duration,
) -> Result<Ended> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let inbox = me.id().to_string();
    let links = crate::engine::open_links_named(transports, &inbox, tx, true, None)?;
    let mut side = ClientSide::new(&code, me, my_name, &inbox);
    // On a spool the agent waits at its slot's inbox; a bot or a number is
    // the only correspondent of a client's transport, whatever this says.
    let to = code.inbox();
    let send = |m: &PairMessage| {
        if let Ok(bytes) = frame(m) {
            for link in &links {
                link.send_control(&to, bytes.clone(), None);
            }
        }
    };
    let started = Instant::now();
    let first = Duration::from_secs(2);
    let mut wait = first;
    send(&side.outgoing());
    loop {
        match tokio::time::timeout(wait, rx.recv()).await {
            Err(_) => {
                if started.elapsed() > limit {
                    return Ok(Ended::Failed(format!(
                        "no agent answered in {} s at code {}-…: is `pigeon pair` running on the agent, over the same transport ({}), within its {} minutes, and is this machine's clock within a minute of the agent's?",
                        limit.as_secs(),
                        code.slot(),
                        transports.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "),
                        CODE_LIFETIME.as_secs() / 60
                    )));
                }
                send(&side.outgoing());
                wait = (wait * 2).min(Duration::from_secs(20));
            }
            Ok(None) => return Err(CoreError::Transfer("the transports closed".into())),
            Ok(Some(inbound)) => {
                let Some(m) = message(&inbound) else {
                    continue;
                };
                let (reply, end) = side.on_message(&m);
                if let Some(reply) = reply {
                    send(&reply);
                    wait = first;
                }
                if let Some(end) = end {
                    drain(&links).await;
                    return Ok(end);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;

    fn keys() -> (PublicKey, PublicKey) {
        (
            Identity::generate().unwrap().public(),
            Identity::generate().unwrap().public(),
        )
    }

    #[test]
    fn codes_read_back_and_typos_are_named() {
        for _ in 0..100 {
            let c = PairCode::random();
            assert_eq!(PairCode::parse(&c.to_string()).unwrap(), c);
            assert_eq!(PairCode::parse(&c.to_string().to_uppercase()).unwrap(), c);
            assert!((1..=9).contains(&c.slot()));
        }
        let c = PairCode::parse(" 7 gravel  ostrich ").unwrap();
        assert_eq!(c.to_string(), "7-gravel-ostrich");
        assert_eq!(c.inbox(), "pair-7");
        assert!(PairCode::parse("7-gravle-ostrich")
            .unwrap_err()
            .to_string()
            .contains("\"gravle\" is not one of the code words"));
        assert!(PairCode::parse("0-gravel-ostrich").is_err());
        assert!(PairCode::parse("7-gravel").is_err());
        let mut sorted = WORDS.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 256, "256 distinct words");
    }

    /// Run a whole exchange, every message delivered twice.
    fn exchange(agent_code: &str, client_code: &str) -> (Ended, Ended, usize) {
        let (ak, ck) = keys();
        let now = Instant::now();
        let mut agent = AgentSide::new(PairCode::parse(agent_code).unwrap(), ak, "phone", now);
        let mut client = ClientSide::new(
            &PairCode::parse(client_code).unwrap(),
            ck,
            "laptop",
            "00112233aabbccdd",
        );
        let mut accepted = 0;
        let mut to_agent = vec![client.outgoing()];
        let (mut agent_end, mut client_end) = (None, None);
        for _ in 0..10 {
            let mut to_client = vec![];
            for m in to_agent.drain(..) {
                for _ in 0..2 {
                    let (reply, end) = agent.on_message(&m, now, &mut |i| {
                        accepted += 1;
                        assert_eq!(i.key, ck.0);
                        Ok(())
                    });
                    to_client.extend(reply);
                    if end.is_some() {
                        agent_end = end;
                    }
                }
            }
            for m in to_client {
                for _ in 0..2 {
                    let (reply, end) = client.on_message(&m);
                    to_agent.extend(reply);
                    if end.is_some() && client_end.is_none() {
                        client_end = end;
                    }
                }
            }
            if agent_end.is_some() && client_end.is_some() {
                break;
            }
        }
        (agent_end.unwrap(), client_end.unwrap(), accepted)
    }

    #[test]
    fn the_right_code_pairs_both_ways_once_whatever_is_repeated() {
        let (agent, client, accepted) = exchange("3-maple-otter", "3-maple-otter");
        let Ended::Paired { name, .. } = &agent else {
            panic!("{agent:?}")
        };
        assert_eq!(name, "laptop");
        let Ended::Paired { name, .. } = &client else {
            panic!("{client:?}")
        };
        assert_eq!(name, "phone");
        assert_eq!(
            accepted, 1,
            "trusted once, however often the confirmation came"
        );
    }

    #[test]
    fn a_wrong_code_fails_on_both_sides_and_burns_the_code() {
        let (agent, client, accepted) = exchange("3-maple-otter", "3-maple-walrus");
        assert!(
            matches!(&client, Ended::Failed(w) if w.starts_with("wrong code")),
            "{client:?}"
        );
        assert!(
            matches!(&agent, Ended::Failed(w) if w.contains("burnt")),
            "{agent:?}"
        );
        assert_eq!(accepted, 0);
    }

    #[test]
    fn the_first_attempt_takes_the_code_others_and_late_ones_get_nothing() {
        let (ak, ck) = keys();
        let now = Instant::now();
        let code = PairCode::parse("5-comet-tiger").unwrap();
        let mut agent = AgentSide::new(code, ak, "phone", now);
        let guess = ClientSide::new(
            &PairCode::parse("5-comet-lotus").unwrap(),
            ck,
            "mallory",
            "00112233aabbccdd",
        );
        let real = ClientSide::new(&code, ck, "laptop", "00112233aabbccdd");
        let mut no =
            |_: &Introduction| -> std::result::Result<(), String> { panic!("nothing is accepted") };
        assert!(agent
            .on_message(&guess.outgoing(), now, &mut no)
            .0
            .is_some());
        // The right code, but second: ignored, never answered.
        assert_eq!(
            agent.on_message(&real.outgoing(), now, &mut no),
            (None, None)
        );
        // A code nobody used expires.
        let fresh = AgentSide::new(code, ak, "phone", now);
        assert!(!fresh.expired(now));
        assert!(fresh.expired(now + CODE_LIFETIME + Duration::from_secs(1)));
        // A start left over from before the code was made (a spool's or a
        // bot's backlog) does not burn it.
        let mut stale = real.outgoing();
        stale.made_unix -= 3600;
        let mut fresh = AgentSide::new(code, ak, "phone", now);
        assert_eq!(fresh.on_message(&stale, now, &mut no), (None, None));
        assert!(fresh.on_message(&real.outgoing(), now, &mut no).0.is_some());
        let mut late = AgentSide::new(code, ak, "phone", now);
        let m = real.outgoing();
        assert_eq!(
            late.on_message(&m, now + CODE_LIFETIME * 2, &mut no),
            (None, None)
        );
    }

    #[test]
    fn a_tampered_answer_or_confirmation_fails_and_never_pairs() {
        let (ak, ck) = keys();
        let now = Instant::now();
        let code = PairCode::parse("2-amber-heron").unwrap();
        let mut agent = AgentSide::new(code, ak, "phone", now);
        let mut client = ClientSide::new(&code, ck, "laptop", "00112233aabbccdd");
        let (answer, _) = agent.on_message(&client.outgoing(), now, &mut |_| Ok(()));
        let mut answer = answer.unwrap();
        let last = answer.body.len() - 1;
        answer.body[last] ^= 1;
        let (abort, end) = client.on_message(&answer);
        assert!(matches!(end, Some(Ended::Failed(_))));
        let (_, end) = agent.on_message(&abort.unwrap(), now, &mut |_| Ok(()));
        assert!(matches!(end, Some(Ended::Failed(_))));
    }
}
