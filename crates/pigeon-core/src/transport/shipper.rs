//! `shipper:` the SM APOS Shipper HTTP API, as `docs/shipper-protocol.md`
//! defines it: messages posted to the peer's account by name, our mailbox
//! long-polled, every request signed with HMAC-SHA256 under the API secret.
//!
//! ```text
//! shipper:<PEER>?base_url=<URL>&api_key_env=<VAR>&api_secret_env=<VAR>[&rate_limit=<N per minute>][&timeout=<S>]
//! ```
//!
//! (`api_key_file=` and `api_secret_file=` read them from files instead.)
//! Delivery is at least once: a message is confirmed (the next poll's
//! `after`) only once the link holds it, and ids seen before are dropped.
//! Neither secret appears in a message, a log line or `describe()`.
//!
//! The server's limits are learned, not assumed ([`Limits`]): a
//! [`Shipper`] asks `GET /v1/ping` when it opens, and no message is posted
//! before that answer (or its failure), so messages are cut to the
//! server's `max_message` from the first. The link reads them through
//! [`Transport::limits`](super::Transport::limits): messages of at most min(1,000,000, the announced
//! `max_message`) bytes, at most min(the URI's `rate_limit=`, the
//! announced `rate_limit`) a minute. A ping that fails for now leaves the
//! protocol's defaults and is tried again later; one refused for good
//! (401, 404) is the transport's health problem.
//!
//! The server may lower its limits while the link runs. A `413
//! too_large` pings again and hands the message back to the link
//! ([`SendError::Shrunk`]) to be cut again to the new size (to half its
//! size when the ping does not explain the refusal); it is never retried
//! as it was. A `429 rate_limited` pings again too, so the link slows to
//! the announced rate besides waiting out `Retry-After`. A server whose
//! `max_message` is below what one piece of a frame needs
//! ([`MIN_MESSAGE`]) is a permanent failure that says so.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::http::{self, CallError, SecretSource};
use super::over_http::{self, HttpTransport, PollBackoff};
use super::{Capabilities, Correspondents, Health, Message, Received, SendError, MIN_MESSAGE};
// The tests drive a Shipper through the trait, as the link does.
#[cfg(test)]
use super::Transport;

/// Seconds a poll waits for news.
const POLL_SECONDS: u64 = 25;
/// The least time between the starts of two polls that found nothing (a
/// server that ignores `wait` would otherwise be asked in a loop).
const EMPTY_POLL_FLOOR: Duration = Duration::from_millis(500);
/// The protocol's largest message.
pub const MAX_MESSAGE: usize = 1_000_000;
/// The protocol's default posts a minute.
pub const DEFAULT_RATE_LIMIT: u32 = 1000;

/// A parsed `shipper:` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipperUri {
    /// The peer's account name.
    pub peer: String,
    pub base_url: String,
    pub api_key: SecretSource,
    pub api_secret: SecretSource,
    /// Posts a minute at most (`rate_limit=`), whatever the server allows.
    pub rate_limit: Option<u32>,
    /// Per-request timeout (a poll's is its wait plus this).
    pub timeout: Duration,
    /// What this one link may send (`bwlimit=`, set by [`TransportUri::parse`](super::TransportUri::parse)).
    pub bwlimit: Option<crate::bwlimit::BwLimit>,
    /// Message slots left free of bulk data (`reserve=N/M`, set by
    /// [`TransportUri::parse`](super::TransportUri::parse)).
    pub reserve: Option<crate::link::Reserve>,
}

impl ShipperUri {
    pub fn parse(rest: &str) -> Result<ShipperUri, String> {
        let (peer, query) = rest.split_once('?').unwrap_or((rest, ""));
        let name_ok = peer == "*"
            || (1..=64).contains(&peer.len())
                && peer.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
        if !name_ok {
            return Err(format!(
                "shipper: needs the peer's account name, of a-z, 0-9, _ and - (got {peer:?})"
            ));
        }
        let (mut base_url, mut key, mut secret) = (None, None, None);
        let mut rate_limit = None;
        let mut timeout = Duration::from_secs(30);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not key=value"))?;
            match k {
                "base_url" => {
                    if !(v.starts_with("https://") || v.starts_with("http://")) {
                        return Err(format!("base_url={v:?} is not an http(s) URL"));
                    }
                    base_url = Some(v.trim_end_matches('/').to_string());
                }
                "api_key_env" => key = Some(SecretSource::Env(v.into())),
                "api_key_file" => key = Some(SecretSource::File(PathBuf::from(v))),
                "api_secret_env" => secret = Some(SecretSource::Env(v.into())),
                "api_secret_file" => secret = Some(SecretSource::File(PathBuf::from(v))),
                "api_key" | "api_secret" => {
                    return Err(format!(
                        "{k} is never given on the command line: put it in an environment variable ({k}_env=VAR) or a file ({k}_file=PATH)"
                    ))
                }
                "rate_limit" => {
                    rate_limit = Some(v
                        .parse()
                        .ok()
                        .filter(|&n: &u32| n > 0)
                        .ok_or_else(|| format!("rate_limit={v:?} is not a positive whole number of messages a minute"))?)
                }
                "timeout" => {
                    timeout = v
                        .parse::<u64>()
                        .ok()
                        .filter(|&s| (1..=600).contains(&s))
                        .map(Duration::from_secs)
                        .ok_or_else(|| format!("timeout={v:?} is not 1 to 600 seconds"))?
                }
                other => {
                    return Err(format!(
                        "unknown shipper setting {other:?}; known: base_url, api_key_env, api_key_file, api_secret_env, api_secret_file, rate_limit, timeout"
                    ))
                }
            }
        }
        Ok(ShipperUri {
            peer: peer.to_string(),
            base_url: base_url.ok_or("shipper: needs base_url=<URL>")?,
            api_key: key.ok_or("shipper: needs api_key_env=<VAR> or api_key_file=<PATH>")?,
            api_secret: secret
                .ok_or("shipper: needs api_secret_env=<VAR> or api_secret_file=<PATH>")?,
            rate_limit,
            timeout,
            bwlimit: None,
            reserve: None,
        })
    }

    /// What a link may send before the server has said anything: the
    /// protocol's defaults, under the URI's `rate_limit=`.
    pub fn capabilities(&self) -> Capabilities {
        self.limits(Learned::default())
    }

    /// What a link may send once the server's limits are `learned`: the
    /// least of the protocol's, the URI's and the server's.
    fn limits(&self, learned: Learned) -> Capabilities {
        let max_message = [Some(MAX_MESSAGE), learned.max_message, learned.taught]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(MAX_MESSAGE);
        let per_minute = match (self.rate_limit, learned.rate_limit) {
            (Some(mine), Some(theirs)) => mine.min(theirs),
            (mine, theirs) => mine.or(theirs).unwrap_or(DEFAULT_RATE_LIMIT),
        };
        Capabilities {
            // Below the least a link can use the sends refuse for good
            // (see `Limits::too_small`); the link's arithmetic stays sane.
            max_message: max_message.max(MIN_MESSAGE),
            text_only: false,
            alphabet: crate::alphabet::Alphabet::Base64,
            messages_per_minute: Some(per_minute.max(1)),
            bytes_per_minute: None,
            // docs/shipper-protocol.md: a burst of a tenth of a minute.
            burst: true,
        }
    }
}

/// What the server taught of its limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Learned {
    /// The last ping's `max_message`.
    max_message: Option<usize>,
    /// The last ping's `rate_limit`.
    rate_limit: Option<u32>,
    /// What a 413 the ping did not explain taught: the server refuses
    /// messages of that size whatever it announces. Only ever lowered.
    taught: Option<usize>,
}

/// The largest message to try after the server refused one of `size`
/// bytes as too large, when it allows `allowed` now (after pinging again):
/// that, if it explains the refusal; else half the size, since the server
/// refuses less than it announces (or could not be asked).
fn limit_after_too_large(size: usize, allowed: usize) -> usize {
    if allowed < size {
        allowed
    } else {
        size / 2
    }
}

impl std::fmt::Display for ShipperUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = |s: &SecretSource, name: &str| match s {
            SecretSource::Env(v) => format!("{name}_env={v}"),
            SecretSource::File(p) => format!("{name}_file={}", p.display()),
        };
        write!(
            f,
            "shipper:{}?base_url={}&{}&{}",
            self.peer,
            self.base_url,
            source(&self.api_key, "api_key"),
            source(&self.api_secret, "api_secret")
        )?;
        if let Some(n) = self.rate_limit {
            write!(f, "&rate_limit={n}")?;
        }
        if self.timeout != Duration::from_secs(30) {
            write!(f, "&timeout={}", self.timeout.as_secs())?;
        }
        Ok(())
    }
}

/// What `GET /v1/ping` answers.
#[derive(Debug, Deserialize)]
pub struct Ping {
    pub account: String,
    pub rate_limit: u32,
    pub max_message: usize,
}

#[derive(Debug, Deserialize)]
struct Mailbox {
    messages: Vec<Posted>,
    next: u64,
}

#[derive(Debug, Deserialize)]
struct Posted {
    seq: u64,
    id: String,
    from: String,
    #[serde(rename = "type")]
    kind: String,
    body: String,
}

#[derive(Debug, Deserialize)]
struct ErrorReply {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
    retry_after: Option<u64>,
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: zeroize::Zeroizing<String>,
    secret: zeroize::Zeroizing<String>,
    timeout: Duration,
    /// Learns whether the server ever answered: a refused connection
    /// before it has is a setting to fix ([`Health::unreachable`]).
    health: Arc<Health>,
}

/// The string a request's signature covers: method, path and query as on
/// the request line, timestamp, nonce and the body's SHA-256, one a line.
fn canonical(method: &str, path_and_query: &str, ts: &str, nonce: &str, body: &[u8]) -> String {
    format!(
        "{method}\n{path_and_query}\n{ts}\n{nonce}\n{}",
        hex::encode(Sha256::digest(body))
    )
}

impl Api {
    fn new(uri: &ShipperUri, health: Arc<Health>) -> Result<Api, String> {
        Ok(Api {
            http: http::client()?,
            base: uri.base_url.clone(),
            key: uri.api_key.load()?,
            secret: uri.api_secret.load()?,
            timeout: uri.timeout,
            health,
        })
    }

    /// A signed request for `path` (which starts with `/`).
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<reqwest::RequestBuilder, CallError> {
        let url = reqwest::Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| CallError::Permanent(format!("shipper: base_url is not a URL ({e})")))?;
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let ts = (crate::store::now_unix()).to_string();
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(canonical(method.as_str(), &path_and_query, &ts, &nonce, &body).as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        Ok(self
            .http
            .request(method, url)
            .timeout(timeout)
            .header("X-Shipper-Key", self.key.as_str())
            .header("X-Shipper-Timestamp", ts)
            .header("X-Shipper-Nonce", nonce)
            .header("X-Shipper-Signature", signature)
            .body(body))
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, Refusal> {
        let label = format!("shipper {what}");
        let response = request.send().await.map_err(|e| {
            let (said, _) = http::unanswered(&label, e, &self.health);
            Refusal::without_answer(CallError::Transient(said))
        })?;
        // A poll answers up to 100 messages of 1 MB, in base64.
        let limit = 100 * MAX_MESSAGE * 4 / 3 + http::MAX_ANSWER;
        let http::Answer {
            status,
            header_wait,
            body,
        } = http::answer(&label, response, &self.health, limit)
            .await
            .map_err(Refusal::without_answer)?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|_| {
                Refusal::without_answer(CallError::Transient(format!(
                    "shipper {what}: HTTP {status} with an answer that is not the Shipper protocol's"
                )))
            });
        }
        let (code, message, wait) = match serde_json::from_slice::<ErrorReply>(&body) {
            Ok(r) => (
                r.error.code,
                crate::policy::escape_control(&r.error.message).into_owned(),
                r.error.retry_after.map(http::provider_wait).or(header_wait),
            ),
            Err(_) => (String::new(), format!("HTTP {status}"), header_wait),
        };
        let error = match status.as_u16() {
            429 => CallError::RateLimited(wait.unwrap_or(Duration::from_secs(1))),
            401 => CallError::Permanent(format!(
                "shipper refused the credentials ({code}: {message}): check api_key and api_secret{}",
                if code == "stale_timestamp" { " and this machine's clock" } else { "" }
            )),
            404 => CallError::Permanent(format!(
                "shipper {what}: {message} (is the peer's account name right?)"
            )),
            413 => CallError::Permanent(format!("shipper {what}: too_large: {message}")),
            409 => CallError::Transient(format!(
                "shipper {what}: {message}"
            )),
            400..=499 => CallError::Permanent(format!("shipper {what}: {status} {message}")),
            _ => CallError::Transient(format!("shipper {what}: {status} {message}")),
        };
        Err(Refusal {
            status: Some(status.as_u16()),
            error,
        })
    }

    /// `GET /v1/ping`.
    async fn ping(&self) -> Result<Ping, CallError> {
        let request = self.request(reqwest::Method::GET, "/v1/ping", vec![], self.timeout)?;
        self.call("ping", request).await.map_err(CallError::from)
    }
}

/// A call that did not succeed: what it means, and the server's status
/// when it answered (a 413 and a 429 teach the link about the limits).
struct Refusal {
    status: Option<u16>,
    error: CallError,
}

impl Refusal {
    fn without_answer(error: CallError) -> Refusal {
        Refusal {
            status: None,
            error,
        }
    }
}

impl From<Refusal> for CallError {
    fn from(r: Refusal) -> CallError {
        r.error
    }
}

/// The limits a link on this server may send by, as learned: shared by
/// the sends, the ping at open, and the link (through a watch).
struct Limits {
    uri: ShipperUri,
    learned: Mutex<Learned>,
    caps: watch::Sender<Capabilities>,
    /// True once the first ping has ended, answered or not: no message
    /// is posted before (it would be cut to sizes the server may refuse).
    opened: watch::Sender<bool>,
    /// When the last ping that answered was sent, held while one is under
    /// way: several sends refused at once cost one ping.
    pinged: tokio::sync::Mutex<Option<Instant>>,
}

impl Limits {
    fn new(uri: &ShipperUri) -> Limits {
        Limits {
            uri: uri.clone(),
            learned: Mutex::new(Learned::default()),
            caps: watch::channel(uri.capabilities()).0,
            opened: watch::channel(false).0,
            pinged: tokio::sync::Mutex::new(None),
        }
    }

    fn now(&self) -> Capabilities {
        self.caps.borrow().clone()
    }

    /// Ask the server its limits, unless a ping sent after `asked` has
    /// answered already.
    async fn learn(&self, api: &Api, asked: Instant) -> Result<(), CallError> {
        let mut pinged = self.pinged.lock().await;
        if pinged.is_some_and(|at| at >= asked) {
            return Ok(());
        }
        let sent = Instant::now();
        let ping = api.ping().await?;
        *pinged = Some(sent);
        self.update(|l| {
            l.max_message = Some(ping.max_message);
            l.rate_limit = Some(ping.rate_limit.max(1));
        });
        Ok(())
    }

    /// Change what was learned, and tell the link when that changes what
    /// it may send.
    fn update(&self, change: impl FnOnce(&mut Learned)) {
        let mut learned = crate::task::lock(&self.learned);
        change(&mut learned);
        let caps = self.uri.limits(*learned);
        self.caps.send_if_modified(|now| {
            if *now == caps {
                return false;
            }
            tracing::info!(
                max_message = caps.max_message,
                per_minute = ?caps.messages_per_minute,
                "shipper: sending by the server's limits"
            );
            *now = caps;
            true
        });
    }

    /// The server refused a message of `size` bytes as too large
    /// (`words`: its own), and has been asked its limits again: the size
    /// to cut it to, or why no message can be cut small enough.
    fn too_large(&self, size: usize, words: &str) -> Result<usize, String> {
        let allowed = self.allowed();
        let limit = limit_after_too_large(size, allowed);
        if limit < allowed {
            // The server refuses less than it announces: held to that for
            // good (an announcement that explains a 413 is followed as it
            // changes, up again included).
            self.update(|l| l.taught = Some(l.taught.map_or(limit, |t| t.min(limit))));
        }
        match self.too_small() {
            Some(why) => Err(format!(
                "{why} (it refused a message of {size} bytes: {words})"
            )),
            None => Ok(self.allowed()),
        }
    }

    /// The largest message the server takes, as far as is known (before
    /// the floor [`ShipperUri::limits`] keeps for the link).
    fn allowed(&self) -> usize {
        let l = *crate::task::lock(&self.learned);
        [Some(MAX_MESSAGE), l.max_message, l.taught]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(MAX_MESSAGE)
    }

    /// Why nothing can be sent, when the server takes messages too small
    /// for one piece of a frame.
    fn too_small(&self) -> Option<String> {
        let allowed = self.allowed();
        (allowed < MIN_MESSAGE).then(|| {
            format!(
                "shipper send: the server takes messages of at most {allowed} bytes (max_message), and pigeon needs at least {MIN_MESSAGE}: raise the account's max_message on the server, or use another transport"
            )
        })
    }
}

/// An open Shipper link.
pub type Shipper = HttpTransport<Posting>;

/// What a [`Shipper`] sends through: the signed API, and the limits it
/// learned (held by the transport alone, so that the ping at open stops
/// when the transport is gone).
pub struct Posting {
    api: Arc<Api>,
    limits: Arc<Limits>,
}

/// The longest wait between two pings at open that found no server.
const PING_BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Shipper {
    /// Load the credentials, start polling, and ask the server its
    /// limits. Fails at once when a credential is missing; wrong ones are
    /// reported by the first call.
    pub fn open(uri: ShipperUri) -> Result<Shipper, String> {
        let health = Arc::new(Health::default());
        let api = Arc::new(Api::new(&uri, health.clone())?);
        let caps = uri.capabilities();
        let limits = Arc::new(Limits::new(&uri));
        let learning = Arc::downgrade(&limits);
        let peer = uri.peer.clone();
        let polling = health.clone();
        let shipper = HttpTransport::start(
            uri,
            caps,
            &peer,
            Posting {
                api: api.clone(),
                limits,
            },
            health.clone(),
            |posting, correspondents, tx| poll(posting.api.clone(), correspondents, tx, polling),
        );
        crate::task::spawn(learn_at_open(api, learning, health));
        Ok(shipper)
    }

    /// `GET /v1/ping`: which account the credentials are. Does not poll,
    /// so a running pigeon on the same account is not disturbed.
    pub async fn check(uri: &ShipperUri) -> Result<Ping, String> {
        let api = Api::new(uri, Arc::default())?;
        api.ping().await.map_err(CallError::message)
    }
}

/// Ask the server its limits until it answers (or refuses for good), the
/// sends waiting for the first answer; stops when the transport is gone.
async fn learn_at_open(api: Arc<Api>, limits: Weak<Limits>, health: Arc<Health>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(l) = limits.upgrade() else { return };
        let outcome = l.learn(&api, Instant::now()).await;
        // Answered or not, the sends go on: by the defaults if need be.
        l.opened.send_replace(true);
        match outcome {
            Ok(()) => {
                if let Some(why) = l.too_small() {
                    health.problem("send", why);
                }
                return;
            }
            Err(CallError::Permanent(m)) => {
                health.problem("send", m);
                return;
            }
            Err(CallError::RateLimited(wait)) => {
                drop(l);
                tokio::time::sleep(wait).await;
            }
            Err(CallError::Transient(m)) => {
                drop(l);
                tracing::warn!(
                    "{m}; sending by the protocol's default limits, asking again in {backoff:?}"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(PING_BACKOFF_MAX);
            }
        }
    }
}

impl over_http::Api for Posting {
    type Uri = ShipperUri;

    /// Nothing goes before the server has said its limits (or failed to
    /// within a request's time), and then nothing over them: the link
    /// cuts to them.
    async fn admit(&self, _caps: &Capabilities, message: Message) -> Result<Message, SendError> {
        let mut opened = self.limits.opened.subscribe();
        let _ = tokio::time::timeout(self.api.timeout, opened.wait_for(|o| *o)).await;
        if let Some(why) = self.limits.too_small() {
            return Err(SendError::Permanent(why));
        }
        let limit = self.limits.now().max_message;
        if message.len() > limit {
            // Cut before the server's answer was known: cut again.
            return Err(SendError::Shrunk {
                size: message.len(),
                limit,
                message,
            });
        }
        Ok(message)
    }

    fn limits(&self) -> Option<watch::Receiver<Capabilities>> {
        Some(self.limits.caps.subscribe())
    }

    async fn send(&self, to: &super::Address, message: Message) -> Result<(), SendError> {
        let (kind, body) = match &message {
            Message::Text(t) => ("text/plain; charset=utf-8", t.as_bytes().to_vec()),
            Message::Binary(b) => ("application/octet-stream", b.clone()),
        };
        let path = format!("/v1/messages/{to}");
        let request = self
            .api
            .request(reqwest::Method::POST, &path, body, self.api.timeout)
            .map_err(|e| SendError::Failed(e.message()))?
            .header(reqwest::header::CONTENT_TYPE, kind);
        let asked = Instant::now();
        let refusal = match self.api.call::<serde_json::Value>("send", request).await {
            Ok(_) => return Ok(()),
            Err(r) => r,
        };
        match refusal.status {
            // docs/shipper-protocol.md: permanent until the configuration
            // changes, so never sent again as it was: the server's limit
            // is asked and the message cut again to it.
            Some(413) => {
                if let Err(e) = self.limits.learn(&self.api, asked).await {
                    tracing::warn!("{}; cutting the message smaller anyway", e.message());
                }
                let words = refusal.error.message();
                let size = message.len();
                match self.limits.too_large(size, &words) {
                    Ok(limit) => {
                        tracing::warn!("{words}: cutting messages to {limit} bytes");
                        Err(SendError::Shrunk {
                            size,
                            limit,
                            message,
                        })
                    }
                    Err(why) => Err(SendError::Permanent(why)),
                }
            }
            // Over the server's pace: its pace may be lower than the link
            // knows, so it is asked (the link slows to it); the wait the
            // answer named is obeyed as well.
            Some(429) => {
                if let Err(e) = self.limits.learn(&self.api, asked).await {
                    tracing::debug!("{}; keeping the pace known", e.message());
                }
                Err(refusal.error.into_send_error(message))
            }
            _ => Err(refusal.error.into_send_error(message)),
        }
    }
}

/// Poll the mailbox for ever, handing each message from the peer to the
/// link; `after` moves past a message only once the link has taken it.
async fn poll(
    api: Arc<Api>,
    correspondents: Arc<Correspondents>,
    tx: mpsc::Sender<Received>,
    health: Arc<Health>,
) {
    let mut after = 0u64;
    let mut seen: super::Seen<String> = super::Seen::new();
    let mut backoff = PollBackoff::default();
    loop {
        let poll_started = tokio::time::Instant::now();
        let path = format!("/v1/messages?after={after}&wait={POLL_SECONDS}");
        let mailbox: Result<Mailbox, CallError> = match api.request(
            reqwest::Method::GET,
            &path,
            vec![],
            api.timeout + Duration::from_secs(POLL_SECONDS),
        ) {
            Ok(request) => api.call("poll", request).await.map_err(CallError::from),
            Err(e) => Err(e),
        };
        let mailbox = match mailbox {
            Ok(m) => {
                backoff.answered(&health);
                if m.messages.is_empty() {
                    tokio::time::sleep_until(poll_started + EMPTY_POLL_FLOOR).await;
                }
                m
            }
            Err(e) => {
                tokio::time::sleep(backoff.failed(e, &health)).await;
                continue;
            }
        };
        for m in mailbox.messages {
            // Names are the server's, checked before use as an address.
            let name_ok = (1..=64).contains(&m.from.len())
                && m.from.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !name_ok || !correspondents.accept(&m.from, &[]) {
                tracing::debug!(from = %crate::policy::escape_control(&m.from), "a message from another account; ignored");
                continue;
            }
            if !seen.insert(m.id.clone()) {
                continue;
            }
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&m.body) else {
                tracing::warn!(
                    seq = m.seq,
                    "shipper: a message body that is not base64; dropped"
                );
                continue;
            };
            let message = if m.kind == "text" {
                match String::from_utf8(bytes) {
                    Ok(t) => Message::Text(t),
                    Err(_) => continue,
                }
            } else {
                Message::Binary(bytes)
            };
            let from = correspondents.is_any().then(|| m.from.clone());
            if tx.send(Received { from, message }).await.is_err() {
                return;
            }
        }
        after = after.max(mailbox.next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_round_trip_and_never_hold_a_secret() {
        let u = ShipperUri::parse(
            "agent-phone?base_url=https://ship.example/api/&api_key_env=SK&api_secret_file=/run/ss&rate_limit=120&timeout=10",
        )
        .unwrap();
        assert_eq!(u.peer, "agent-phone");
        assert_eq!(u.base_url, "https://ship.example/api");
        assert_eq!(u.rate_limit, Some(120));
        assert_eq!(u.timeout, Duration::from_secs(10));
        assert_eq!(
            ShipperUri::parse(&u.to_string()["shipper:".len()..]).unwrap(),
            u
        );
        for bad in [
            "",
            "Agent?base_url=http://x&api_key_env=A&api_secret_env=B",
            "a?api_key_env=A&api_secret_env=B",
            "a?base_url=ftp://x&api_key_env=A&api_secret_env=B",
            "a?base_url=http://x&api_secret_env=B",
            "a?base_url=http://x&api_key_env=A",
            "a?base_url=http://x&api_key_env=A&api_secret=hunter2",
            "a?base_url=http://x&api_key_env=A&api_secret_env=B&rate_limit=0",
        ] {
            let err = ShipperUri::parse(bad).expect_err(bad);
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    /// The protocol document's canonical string, checked against a value
    /// computed by hand (`printf ... | openssl dgst -sha256 -hmac s3cret`).
    #[test]
    fn signatures_cover_method_path_time_nonce_and_body() {
        let c = canonical("POST", "/v1/messages/agent", "1764576000", "00ff", b"hi");
        assert_eq!(
            c,
            "POST\n/v1/messages/agent\n1764576000\n00ff\n8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4"
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(c.as_bytes());
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "e6663cff750a6552e645da63479923c6f4ec07406738d249ce3d09edb52039f1"
        );
    }

    #[test]
    fn error_replies_decode_as_documented() {
        let r: ErrorReply = serde_json::from_str(
            r#"{"error":{"code":"rate_limited","message":"over 1000 messages a minute","retry_after":3}}"#,
        )
        .unwrap();
        assert_eq!(r.error.code, "rate_limited");
        assert_eq!(r.error.retry_after, Some(3));
        let m: Mailbox = serde_json::from_str(
            r#"{"messages":[{"seq":43,"id":"m-2b","from":"dev","type":"binary","body":"aGk=","sent_at_ms":1}],"next":43}"#,
        )
        .unwrap();
        assert_eq!(m.next, 43);
        assert_eq!(m.messages[0].kind, "binary");
    }

    #[test]
    fn limits_are_the_least_of_the_protocols_the_uris_and_the_servers() {
        let uri = |q: &str| {
            ShipperUri::parse(&format!(
                "peer?base_url=http://x&api_key_env=K&api_secret_env=S{q}"
            ))
            .unwrap()
        };
        let server = |max_message, rate_limit| Learned {
            max_message: Some(max_message),
            rate_limit: Some(rate_limit),
            taught: None,
        };
        // Before the server has said anything: the protocol's defaults.
        let free = uri("");
        assert_eq!(free.capabilities().max_message, MAX_MESSAGE);
        assert_eq!(free.capabilities().messages_per_minute, Some(1000));
        assert_eq!(
            uri("&rate_limit=30").capabilities().messages_per_minute,
            Some(30)
        );
        // The server's, under the protocol's largest message.
        let caps = free.limits(server(400_000, 60));
        assert_eq!(
            (caps.max_message, caps.messages_per_minute),
            (400_000, Some(60))
        );
        let caps = free.limits(server(5_000_000, 2000));
        assert_eq!(
            (caps.max_message, caps.messages_per_minute),
            (MAX_MESSAGE, Some(2000))
        );
        // The URI's rate_limit= only ever lowers the server's.
        let caps = uri("&rate_limit=30").limits(server(400_000, 60));
        assert_eq!(caps.messages_per_minute, Some(30));
        let caps = uri("&rate_limit=120").limits(server(400_000, 60));
        assert_eq!(caps.messages_per_minute, Some(60));
        // What a 413 taught holds below what the server announces.
        let caps = free.limits(Learned {
            taught: Some(250_000),
            ..server(400_000, 60)
        });
        assert_eq!(caps.max_message, 250_000);
    }

    #[test]
    fn a_413_cuts_to_the_announced_size_or_else_to_half() {
        // The server announces less than was refused: that is the size.
        assert_eq!(limit_after_too_large(999_990, 400_000), 400_000);
        // It announces more (it refuses less than it says, or the ping
        // failed): halve, until the server takes it.
        assert_eq!(limit_after_too_large(400_000, 1_000_000), 200_000);
        assert_eq!(limit_after_too_large(400_000, 400_000), 200_000);
        // A server below what one piece of a frame needs is a failure that
        // says what to do, in the protocol's words.
        let uri =
            ShipperUri::parse("peer?base_url=http://x&api_key_env=K&api_secret_env=S").unwrap();
        let limits = Limits::new(&uri);
        // A server announcing 1,000,000 that refuses 400,000: halved, and
        // held there though it goes on announcing more.
        limits.update(|l| l.max_message = Some(1_000_000));
        assert_eq!(limits.too_large(400_000, "too_large"), Ok(200_000));
        limits.update(|l| l.max_message = Some(1_000_000));
        assert_eq!(limits.now().max_message, 200_000);
        // One that announces what it refuses is followed, up again too.
        let limits = Limits::new(&uri);
        limits.update(|l| l.max_message = Some(300_000));
        assert_eq!(limits.too_large(400_000, "too_large"), Ok(300_000));
        limits.update(|l| l.max_message = Some(600_000));
        assert_eq!(limits.now().max_message, 600_000);
        limits.update(|l| l.max_message = Some(40));
        let err = limits
            .too_large(
                300,
                "shipper send: too_large: 300 bytes is over the limit of 40",
            )
            .unwrap_err();
        assert!(
            err.contains("at most 40 bytes (max_message)")
                && err.contains("raise the account's max_message")
                && err.contains("too_large"),
            "{err}"
        );
    }

    /// A Shipper on the reference server, with its credentials in files.
    struct OnServer {
        emu: pigeon_emulator::shipper::Emulator,
        shipper: Shipper,
        _dir: tempfile::TempDir,
    }

    fn on_server(max_message: usize, rate_limit: u32) -> OnServer {
        use pigeon_emulator::shipper::{AccountSpec, Emulator};
        let account = |name: &str| AccountSpec {
            name: name.into(),
            key: format!("key-{name}"),
            secret: format!("secret-{name}"),
        };
        let emu = Emulator::new(&[account("me"), account("peer")])
            .with_max_message(max_message)
            .with_rate_limit(rate_limit);
        let base = pigeon_emulator::serve_in_background(emu.router()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "key-me").unwrap();
        std::fs::write(dir.path().join("secret"), "secret-me").unwrap();
        let uri = ShipperUri::parse(&format!(
            "peer?base_url={base}&api_key_file={}&api_secret_file={}&timeout=5",
            dir.path().join("key").display(),
            dir.path().join("secret").display()
        ))
        .unwrap();
        OnServer {
            emu,
            shipper: Shipper::open(uri).unwrap(),
            _dir: dir,
        }
    }

    impl OnServer {
        fn count(&self, method: &str, status: u16) -> usize {
            self.emu
                .record()
                .iter()
                .filter(|r| r.method == method && r.status == status)
                .count()
        }

        async fn send(&self, bytes: usize) -> Result<(), SendError> {
            self.shipper
                .send(&"peer".to_string(), Message::Binary(vec![7; bytes]))
                .await
        }
    }

    /// Issue 32: a server announcing 400,000-byte messages was sent
    /// 999,990-byte ones, refused with 413 every 5 s for ever.
    #[tokio::test]
    async fn the_servers_limits_are_learned_at_open_before_any_post() {
        let s = on_server(400_000, 60);
        // The first send waits for the ping, and hands back a message cut
        // to the old size without posting it.
        match s.send(999_990).await {
            Err(SendError::Shrunk { size, limit, .. }) => {
                assert_eq!((size, limit), (999_990, 400_000))
            }
            other => panic!("not handed back to be cut again: {other:?}"),
        }
        let caps = s.shipper.limits().borrow().clone();
        assert_eq!(
            (caps.max_message, caps.messages_per_minute),
            (400_000, Some(60))
        );
        s.send(400_000).await.unwrap();
        assert_eq!(s.count("ping", 200), 1, "{:?}", s.emu.record());
        assert_eq!(s.count("send", 413), 0, "nothing was posted over the limit");
    }

    #[tokio::test]
    async fn a_413_pings_again_and_hands_the_message_back_smaller_never_as_it_was() {
        let s = on_server(1_000_000, 1000);
        s.send(500_000).await.unwrap();
        // The provider lowers the account's limit while the link runs.
        s.emu.set_limits(pigeon_emulator::shipper::Limits {
            max_message: Some(300_000),
            rate_limit: None,
        });
        match s.send(500_000).await {
            Err(SendError::Shrunk { limit, message, .. }) => {
                assert_eq!(limit, 300_000);
                assert_eq!(message.len(), 500_000, "the message itself comes back");
            }
            other => panic!("a 413 was not handed back to be cut again: {other:?}"),
        }
        assert_eq!(s.shipper.limits().borrow().max_message, 300_000);
        assert_eq!((s.count("send", 413), s.count("ping", 200)), (1, 2));
        s.send(300_000).await.unwrap();
        // A server that refuses less than it announces: halved each time.
        s.emu.set_limits(pigeon_emulator::shipper::Limits {
            max_message: Some(100),
            rate_limit: None,
        });
        match s.send(300_000).await {
            Err(SendError::Shrunk { limit, .. }) => assert_eq!(limit, 100),
            other => panic!("{other:?}"),
        }
        // Below what one piece of a frame needs: said, and nothing posted.
        s.emu.set_limits(pigeon_emulator::shipper::Limits {
            max_message: Some(50),
            rate_limit: None,
        });
        match s.send(100).await {
            Err(SendError::Permanent(m)) => assert!(m.contains("max_message"), "{m}"),
            other => panic!("{other:?}"),
        }
        let before = s.count("send", 413);
        match s.send(64).await {
            Err(SendError::Permanent(m)) => assert!(m.contains("raise"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.count("send", 413), before, "not posted again");
    }

    #[tokio::test]
    async fn a_429_slows_the_link_to_the_announced_rate() {
        let s = on_server(1_000_000, 1000);
        s.send(1000).await.unwrap();
        assert_eq!(s.shipper.limits().borrow().messages_per_minute, Some(1000));
        // The provider lowers the account's rate: a burst of 1 at 6 a minute.
        s.emu.set_limits(pigeon_emulator::shipper::Limits {
            max_message: None,
            rate_limit: Some(6),
        });
        let refused = loop {
            match s.send(1000).await {
                Ok(()) => continue,
                Err(e) => break e,
            }
        };
        assert!(
            matches!(refused, SendError::RateLimited { .. }),
            "{refused:?}"
        );
        assert_eq!(
            s.shipper.limits().borrow().messages_per_minute,
            Some(6),
            "the link paces by the server's rate, not only its Retry-After"
        );
    }
}
