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
//! A 429's `Retry-After` is obeyed. Neither secret appears in a message, a
//! log line or `describe()`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::http::{self, CallError, SecretSource};
use super::{Capabilities, Correspondents, Health, Message, Received, SendError, Transport};

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
    /// Posts a minute (the account's limit, or lower).
    pub rate_limit: u32,
    /// Per-request timeout (a poll's is its wait plus this).
    pub timeout: Duration,
    /// What this one link may send (`bwlimit=`, set by [`TransportUri::parse`](super::TransportUri::parse)).
    pub bwlimit: Option<crate::bwlimit::BwLimit>,
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
        let mut rate_limit = DEFAULT_RATE_LIMIT;
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
                    rate_limit = v
                        .parse()
                        .ok()
                        .filter(|&n: &u32| n > 0)
                        .ok_or_else(|| format!("rate_limit={v:?} is not a positive whole number of messages a minute"))?
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
        })
    }

    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_message: MAX_MESSAGE,
            text_only: false,
            messages_per_minute: Some(self.rate_limit),
            bytes_per_minute: None,
            // docs/shipper-protocol.md: a burst of a tenth of a minute.
            burst: true,
        }
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
        if self.rate_limit != DEFAULT_RATE_LIMIT {
            write!(f, "&rate_limit={}", self.rate_limit)?;
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
    fn new(uri: &ShipperUri) -> Result<Api, String> {
        Ok(Api {
            http: http::client()?,
            base: uri.base_url.clone(),
            key: uri.api_key.load()?,
            secret: uri.api_secret.load()?,
            timeout: uri.timeout,
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
    ) -> Result<T, CallError> {
        let response = request
            .send()
            .await
            .map_err(|e| CallError::Transient(format!("shipper {what}: {}", http::describe(e))))?;
        let status = response.status();
        let header_wait = http::retry_after(response.headers());
        // A poll answers up to 100 messages of 1 MB, in base64.
        let body = http::read_capped(response, 100 * MAX_MESSAGE * 4 / 3 + http::MAX_ANSWER)
            .await
            .map_err(|e| CallError::Transient(format!("shipper {what}: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|_| {
                CallError::Transient(format!(
                    "shipper {what}: HTTP {status} with an answer that is not the Shipper protocol's"
                ))
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
        Err(match status.as_u16() {
            429 => CallError::RateLimited(wait.unwrap_or(Duration::from_secs(1))),
            401 => CallError::Permanent(format!(
                "shipper refused the credentials ({code}: {message}): check api_key and api_secret{}",
                if code == "stale_timestamp" { " and this machine's clock" } else { "" }
            )),
            404 => CallError::Permanent(format!(
                "shipper {what}: {message} (is the peer's account name right?)"
            )),
            413 => CallError::Permanent(format!("shipper {what}: {message}")),
            409 => CallError::Transient(format!(
                "shipper {what}: {message}"
            )),
            400..=499 => CallError::Permanent(format!("shipper {what}: {status} {message}")),
            _ => CallError::Transient(format!("shipper {what}: {status} {message}")),
        })
    }
}

/// An open Shipper link.
pub struct Shipper {
    uri: ShipperUri,
    caps: Capabilities,
    api: Arc<Api>,
    inbox: Option<mpsc::Receiver<Received>>,
    health: Arc<Health>,
    correspondents: Arc<Correspondents>,
}

impl Shipper {
    /// Load the credentials and start polling. Fails at once when one is
    /// missing; wrong ones are reported by the first call.
    pub fn open(uri: ShipperUri) -> Result<Shipper, String> {
        let api = Arc::new(Api::new(&uri)?);
        let caps = uri.capabilities();
        let (tx, rx) = mpsc::channel(16);
        let health = Arc::new(Health::default());
        let correspondents = Arc::new(Correspondents::new(&uri.peer));
        crate::task::spawn(poll(
            api.clone(),
            correspondents.clone(),
            tx,
            health.clone(),
        ));
        Ok(Shipper {
            uri,
            caps,
            api,
            inbox: Some(rx),
            health,
            correspondents,
        })
    }

    /// `GET /v1/ping`: which account the credentials are. Does not poll,
    /// so a running pigeon on the same account is not disturbed.
    pub async fn check(uri: &ShipperUri) -> Result<Ping, String> {
        let api = Api::new(uri)?;
        let request = api
            .request(reqwest::Method::GET, "/v1/ping", vec![], api.timeout)
            .map_err(CallError::message)?;
        api.call("ping", request).await.map_err(CallError::message)
    }
}

impl Transport for Shipper {
    fn introduce(&self, to: &super::Address) {
        self.correspondents.introduce(to);
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn describe(&self) -> String {
        self.uri.to_string()
    }

    async fn send(&self, to: &super::Address, message: Message) -> Result<(), SendError> {
        self.caps.admit(&message)?;
        let (kind, body) = match &message {
            Message::Text(t) => ("text/plain; charset=utf-8", t.as_bytes().to_vec()),
            Message::Binary(b) => ("application/octet-stream", b.clone()),
        };
        let path = format!("/v1/messages/{}", self.correspondents.recipient(to)?);
        let request = self
            .api
            .request(reqwest::Method::POST, &path, body, self.api.timeout)
            .map_err(|e| SendError::Failed(e.message()))?
            .header(reqwest::header::CONTENT_TYPE, kind);
        match self.api.call::<serde_json::Value>("send", request).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.into_send_error(message)),
        }
    }

    fn incoming(&mut self) -> mpsc::Receiver<Received> {
        self.inbox.take().unwrap_or_else(|| mpsc::channel(1).1)
    }

    fn health(&self) -> Arc<Health> {
        self.health.clone()
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
    let mut backoff = Duration::from_secs(1);
    loop {
        let poll_started = tokio::time::Instant::now();
        let path = format!("/v1/messages?after={after}&wait={POLL_SECONDS}");
        let mailbox: Result<Mailbox, CallError> = match api.request(
            reqwest::Method::GET,
            &path,
            vec![],
            api.timeout + Duration::from_secs(POLL_SECONDS),
        ) {
            Ok(request) => api.call("poll", request).await,
            Err(e) => Err(e),
        };
        let mailbox = match mailbox {
            Ok(m) => {
                backoff = Duration::from_secs(1);
                health.clear("receive");
                if m.messages.is_empty() {
                    tokio::time::sleep_until(poll_started + EMPTY_POLL_FLOOR).await;
                }
                m
            }
            Err(e) => {
                let wait = match e {
                    CallError::RateLimited(d) => d,
                    CallError::Permanent(m) => {
                        health.problem("receive", m);
                        Duration::from_secs(30)
                    }
                    CallError::Transient(m) => {
                        tracing::warn!("{m}; polling again in {backoff:?}");
                        let w = backoff + backoff.mul_f64(rand::random::<f64>() * 0.25);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        w
                    }
                };
                tokio::time::sleep(wait).await;
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
        assert_eq!(u.rate_limit, 120);
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
}
