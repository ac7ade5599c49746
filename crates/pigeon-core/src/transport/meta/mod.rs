//! What Meta's platforms (WhatsApp Cloud API, Messenger) share: the Graph
//! error envelope and what its codes mean, and the webhook receiver.
//!
//! The webhook is how Meta hands over inbound messages: a `GET` handshake
//! that echoes `hub.challenge` when `hub.verify_token` matches, then `POST`s
//! signed `X-Hub-Signature-256: sha256=HMAC-SHA256(app_secret, raw body)`.
//! The signature is checked over the raw bytes as they arrived (Meta
//! escapes non-ASCII as `\uXXXX` in what it signs, so re-serialising would
//! break it), in constant time, before anything is parsed. A `POST` is
//! answered at once: 200 when its payload is queued for the transport, 503
//! when the queue is full (Meta then delivers it again later), so a slow
//! media download never holds up Meta's calls. A payload queued but not
//! yet handed on when the process dies is lost to the transport; the
//! engine's retransmission covers it.
//!
//! The port is open to anyone who finds it, so before any signature is
//! checked the listener bounds what a client can hold ([`WebhookLimits`]):
//! a few seconds for a request's headers and as many for its body, 64
//! connections at once (more wait to be accepted), and bodies of at most
//! 4 MiB, refused by their Content-Length before a byte of them is read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use tokio::sync::mpsc;

use super::http::SecretSource;
use super::Capabilities;

/// The Graph API's error envelope.
#[derive(Debug, Deserialize)]
pub struct GraphErrorReply {
    pub error: GraphError,
}

#[derive(Debug, Deserialize)]
pub struct GraphError {
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub code: i64,
    pub error_subcode: Option<i64>,
    pub fbtrace_id: Option<String>,
    pub error_data: Option<serde_json::Value>,
}

pub use super::http::CallError;

/// Classify a Graph error by its code (the HTTP status varies for one
/// code across endpoints; the code does not). `platform` names it in the
/// message.
pub fn classify(platform: &str, status: u16, e: &GraphError) -> CallError {
    let what = crate::policy::escape_control(&e.message).into_owned();
    let said = format!(
        "{platform}: {what} (code {}{})",
        e.code,
        match e.error_subcode {
            Some(s) => format!(", subcode {s}"),
            None => String::new(),
        }
    );
    // Messenger's window: code 10 with this subcode (10 alone is a
    // missing permission).
    if e.code == 10 && e.error_subcode == Some(2_018_278) {
        return CallError::Permanent(format!(
            "{said}: outside the 24-hour window; the person must write to the Page first"
        ));
    }
    if status == 429 && !matches!(e.code, 131056 | 130429 | 613 | 4 | 17 | 32 | 80007) {
        return CallError::RateLimited(Duration::from_secs(10));
    }
    match e.code {
        // Pair rate (one message every ~6 s to one user).
        131056 => CallError::RateLimited(Duration::from_secs(6)),
        // Throughput (per second).
        130429 => CallError::RateLimited(Duration::from_secs(1)),
        // Messenger's send rate; Meta gives no wait, so a short one that
        // the link's backoff stretches if it comes again.
        613 => CallError::RateLimited(Duration::from_secs(10)),
        // The app- and account-level call limits (per hour).
        4 | 17 | 32 | 80007 => CallError::RateLimited(Duration::from_secs(60)),
        190 | 102 => CallError::Permanent(format!(
            "{said}: the access token is invalid or expired; make a new one (a System User token does not expire) and put it where token_env/token_file points"
        )),
        10 | 200..=299 => CallError::Permanent(format!(
            "{said}: the token lacks a permission (whatsapp_business_messaging / pages_messaging)"
        )),
        131047 => CallError::Permanent(format!(
            "{said}: outside the 24-hour window; the other side must write first (or send it a template message) before pigeon can"
        )),
        // "Unsupported request. Object with ID '…' does not exist, cannot
        // be loaded due to missing permissions…": the id in the URI is
        // wrong, or the token is another account's.
        100 if e.error_subcode == Some(33) => CallError::Permanent(format!(
            "{said}: check the id in the URI ({}) and that the token belongs to that account",
            match platform {
                "whatsapp" => "phone_id=, the business number's Phone Number ID, not the phone number",
                _ => "the Page id",
            }
        )),
        131026 | 131030 | 551 => CallError::Permanent(format!(
            "{said}: the recipient cannot get messages from this sender (not on the platform, blocked, or not allowed for a test number)"
        )),
        // WhatsApp's spam rate limit: slow down for a while.
        131048 => CallError::RateLimited(Duration::from_secs(60)),
        // 1 and 2: unknown and temporary errors; 131000 "something went
        // wrong"; 131016 service unavailable; Messenger's 1200 "temporary
        // send message failure".
        1 | 2 | 1200 | 131000 | 131016 => CallError::Transient(said),
        _ if status >= 500 => CallError::Transient(said),
        _ => CallError::Permanent(said),
    }
}

/// Read a Graph answer: `T` on 2xx, else the classified error. `health`
/// learns whether the API answered at all ([`super::Health::unreachable`]).
pub async fn read<T: serde::de::DeserializeOwned>(
    platform: &str,
    what: &str,
    response: Result<reqwest::Response, reqwest::Error>,
    health: &super::Health,
) -> Result<T, CallError> {
    let label = format!("{platform} {what}");
    let response =
        response.map_err(|e| CallError::Transient(super::http::unanswered(&label, e, health).0))?;
    let super::http::Answer {
        status,
        header_wait,
        body,
    } = super::http::answer(&label, response, health, super::http::MAX_ANSWER).await?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|_| {
            CallError::Transient(format!(
                "{platform} {what}: HTTP {status} with an answer that is not the Graph API's"
            ))
        });
    }
    Err(match serde_json::from_slice::<GraphErrorReply>(&body) {
        Ok(reply) => match classify(platform, status.as_u16(), &reply.error) {
            CallError::RateLimited(d) => CallError::RateLimited(header_wait.unwrap_or(d)),
            other => other,
        },
        Err(_) if status.as_u16() == 429 => {
            CallError::RateLimited(header_wait.unwrap_or(Duration::from_secs(1)))
        }
        Err(_) if status.is_server_error() => {
            CallError::Transient(format!("{platform} {what}: HTTP {status}"))
        }
        Err(_) => CallError::Permanent(not_graph(platform, what, status.as_u16())),
    })
}

/// An error answer that is not the Graph API's: most often a URL that
/// does not lead to it (a missing version segment).
fn not_graph(platform: &str, what: &str, status: u16) -> String {
    let hint = match status {
        404 => "; the address is not the Graph API's: check api= (it ends with the version, e.g. api=http://127.0.0.1:8083/v25.0, or leave it out for Meta's)",
        401 | 403 => "; check the token",
        _ => "",
    };
    format!("{platform} {what}: HTTP {status}, not a Graph API answer{hint}")
}

/// `key=value` pairs of a URI query, with the rules every Meta URI shares.
pub struct UriQuery<'a> {
    pub pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> UriQuery<'a> {
    pub fn parse(query: &'a str) -> Result<UriQuery<'a>, String> {
        let pairs = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.split_once('=')
                    .ok_or_else(|| format!("{p:?} is not key=value"))
            })
            .collect::<Result<_, _>>()?;
        Ok(UriQuery { pairs })
    }

    /// The secret `name` as `name_env=` or `name_file=`; never `name=`.
    pub fn secret(&self, name: &str) -> Result<SecretSource, String> {
        let mut found = None;
        for &(k, v) in &self.pairs {
            if k == name {
                return Err(format!(
                    "{name} is never given on the command line: put it in an environment variable ({name}_env=VAR) or a file ({name}_file=PATH)"
                ));
            }
            if k.strip_suffix("_env") == Some(name) {
                found = Some(SecretSource::Env(v.to_string()));
            }
            if k.strip_suffix("_file") == Some(name) {
                found = Some(SecretSource::File(PathBuf::from(v)));
            }
        }
        found.ok_or_else(|| format!("needs {name}_env=<VAR> or {name}_file=<PATH>"))
    }

    /// `listen=HOST:PORT`, required: where the webhook listens.
    pub fn listen(&self) -> Result<SocketAddr, String> {
        let listen = self.get("listen").ok_or(
            "needs listen=<HOST:PORT> for the webhook (e.g. 127.0.0.1:8443, behind a tunnel)",
        )?;
        listen
            .parse()
            .map_err(|_| format!("listen={listen:?} is not HOST:PORT (an IP address and a port)"))
    }

    /// `mode=text|document`: whether it is document.
    pub fn mode(&self) -> Result<bool, String> {
        match self.get("mode").unwrap_or("text") {
            "text" => Ok(false),
            "document" => Ok(true),
            other => Err(format!("mode={other:?}: use text or document")),
        }
    }

    /// `msgs_per_min=N`, optional.
    pub fn msgs_per_min(&self) -> Result<Option<u32>, String> {
        self.get("msgs_per_min")
            .map(|v| {
                v.parse()
                    .ok()
                    .filter(|&n: &u32| n > 0)
                    .ok_or_else(|| format!("msgs_per_min={v:?} is not a positive whole number"))
            })
            .transpose()
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    /// Refuse keys not in `known` (the `_env`/`_file` forms of `secrets`
    /// count as known).
    pub fn only(&self, kind: &str, known: &[&str], secrets: &[&str]) -> Result<(), String> {
        for (k, _) in &self.pairs {
            let base = k
                .strip_suffix("_env")
                .or(k.strip_suffix("_file"))
                .unwrap_or(k);
            if !known.contains(k) && !secrets.contains(&base) {
                return Err(format!(
                    "unknown {kind} setting {k:?}; known: {}, and {} as _env or _file",
                    known.join(", "),
                    secrets.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// `source` as its URI key.
pub fn secret_key(source: &SecretSource, name: &str) -> String {
    match source {
        SecretSource::Env(v) => format!("{name}_env={v}"),
        SecretSource::File(p) => format!("{name}_file={}", p.display()),
    }
}

/// Text messages or documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Text,
    Document,
}

/// What every Meta URI (`whatsapp:`, `messenger:`) says besides whom it
/// talks to: where its three secrets are, where its webhook listens, the
/// Graph API, text or documents, and an asked-for pace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaSettings {
    pub token: SecretSource,
    pub app_secret: SecretSource,
    pub verify_token: SecretSource,
    pub listen: SocketAddr,
    pub api: String,
    pub mode: Mode,
    /// Messages a minute to the peer, instead of the platform's.
    pub msgs_per_min: Option<u32>,
    /// What this one link may send (`bwlimit=`, set by [`TransportUri::parse`](super::TransportUri::parse)).
    pub bwlimit: Option<crate::bwlimit::BwLimit>,
    /// Message slots left free of bulk data (`reserve=N/M`, set by
    /// [`TransportUri::parse`](super::TransportUri::parse)).
    pub reserve: Option<crate::link::Reserve>,
    /// The text alphabet asked for (`alphabet=`, set by [`TransportUri::parse`](crate::transport::TransportUri::parse)).
    pub alphabet: Option<crate::alphabet::Alphabet>,
}

/// The public Graph API, with the version pigeon was written against.
pub const PUBLIC_API: &str = "https://graph.facebook.com/v25.0";

impl MetaSettings {
    /// The shared keys of `q` (`platform` names the URI in errors); the
    /// caller has checked the other keys.
    pub fn parse(platform: &str, q: &UriQuery) -> Result<MetaSettings, String> {
        let secret = |name: &str| q.secret(name).map_err(|e| format!("{platform}: {e}"));
        Ok(MetaSettings {
            token: secret("token")?,
            app_secret: secret("app_secret")?,
            verify_token: secret("verify_token")?,
            listen: q.listen()?,
            api: q.get("api").map_or(PUBLIC_API.to_string(), |a| {
                a.trim_end_matches('/').to_string()
            }),
            mode: if q.mode()? {
                Mode::Document
            } else {
                Mode::Text
            },
            msgs_per_min: q.msgs_per_min()?,
            bwlimit: None,
            reserve: None,
            alphabet: None,
        })
    }

    /// The shared keys, as `parse` reads them (after the URI's own).
    pub fn fmt_query(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "&{}&{}&{}&listen={}",
            secret_key(&self.token, "token"),
            secret_key(&self.app_secret, "app_secret"),
            secret_key(&self.verify_token, "verify_token"),
            self.listen
        )?;
        if self.api != PUBLIC_API {
            write!(f, "&api={}", self.api)?;
        }
        if self.mode == Mode::Document {
            f.write_str("&mode=document")?;
        }
        if let Some(m) = self.msgs_per_min {
            write!(f, "&msgs_per_min={m}")?;
        }
        Ok(())
    }

    /// The link's limits: texts of `text_max` characters or documents of
    /// `document_max` bytes, `per_min` a minute (or the pace asked for),
    /// under the messaging channels' 10 MB a minute.
    pub fn capabilities(&self, text_max: usize, document_max: usize, per_min: u32) -> Capabilities {
        let (max_message, text_only) = match self.mode {
            Mode::Text => (text_max, true),
            Mode::Document => (document_max, false),
        };
        let mut caps = Capabilities {
            max_message,
            text_only,
            alphabet: self.alphabet.unwrap_or_default(),
            messages_per_minute: Some(per_min),
            bytes_per_minute: Some(10_000_000),
            burst: false,
        };
        if let Some(m) = self.msgs_per_min {
            // The byte ceiling scales with a pace that is asked for.
            caps.messages_per_minute = Some(m);
            caps.bytes_per_minute = caps
                .bytes_per_minute
                .map(|b| b.max(u64::from(m) * caps.payload_bytes().min(4_000_000) as u64));
        }
        caps
    }
}

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `body`) matches `header`, in
/// constant time.
pub fn signature_valid(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Where a webhook hands what it was given: the raw, verified JSON bodies.
pub type Deliveries = mpsc::Sender<serde_json::Value>;

/// A webhook receiver's settings.
pub struct Webhook {
    /// The `object` Meta names in the payloads this hook takes.
    pub object: &'static str,
    pub app_secret: zeroize::Zeroizing<String>,
    pub verify_token: zeroize::Zeroizing<String>,
    /// Where verified payloads go.
    pub out: Deliveries,
    /// Where refused handshakes and signatures are said.
    pub health: Arc<super::Health>,
}

/// What a webhook listener allows a client, whoever it is: the port is
/// public (behind a tunnel), and a client that sends slowly, or not at
/// all, must not hold memory or connections for long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebhookLimits {
    /// Time for a request's headers to arrive, from the connection's
    /// start or the end of its last answer (an idle connection kept alive
    /// is closed after it too).
    pub header_timeout: Duration,
    /// Time for a request's body to arrive once its headers have.
    pub body_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// Largest body, bytes: a bigger one is answered 413, unread.
    pub max_body: usize,
    /// The longest a connection is kept: then it is asked to close, and
    /// closed a `body_timeout` later (a client that never reads its
    /// answers holds no connection for ever).
    pub connection_lifetime: Duration,
}

impl WebhookLimits {
    /// Meta's calls come from its servers, whole, in well under a second;
    /// its payloads are kilobytes (WhatsApp's webhooks overview allows up
    /// to 3 MB, and Messenger batches up to 1,000 events in one), so
    /// 4 MiB leaves room.
    pub const DEFAULT: WebhookLimits = WebhookLimits {
        header_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(10),
        max_connections: 64,
        max_body: 4 * 1024 * 1024,
        connection_lifetime: Duration::from_secs(120),
    };
}

/// Listen for Meta's webhook on `listen` (bound now, so a taken port is
/// said at once), within [`WebhookLimits::DEFAULT`].
pub fn serve_webhook(listen: SocketAddr, hook: Webhook) -> Result<SocketAddr, String> {
    serve_webhook_within(listen, hook, WebhookLimits::DEFAULT)
}

/// [`serve_webhook`] within `limits`.
pub fn serve_webhook_within(
    listen: SocketAddr,
    hook: Webhook,
    limits: WebhookLimits,
) -> Result<SocketAddr, String> {
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| format!("cannot listen for the webhook on {listen}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("webhook listener: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("webhook listener: {e}"))?;
    let app = axum::Router::new()
        .fallback(axum::routing::get(verify).post(deliver))
        .with_state(Arc::new(Hook { hook, limits }));
    crate::task::spawn(async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => accept(l, app, limits).await,
            Err(e) => tracing::error!("webhook listener: {e}"),
        }
    });
    Ok(bound)
}

/// A webhook's settings with the limits it is served within.
struct Hook {
    hook: Webhook,
    limits: WebhookLimits,
}

/// Accept connections for ever, at most `limits.max_connections` at once.
///
/// Written here rather than with `axum::serve`, which sets no header read
/// timeout (hyper's needs a timer) and takes every connection offered.
async fn accept(listener: tokio::net::TcpListener, app: axum::Router, limits: WebhookLimits) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        // A slot before a connection: past the cap, clients wait in the
        // kernel's backlog, not in our memory.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning.
                tracing::warn!("the webhook listener could not take a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let connection = http.serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(app.clone()),
        );
        crate::task::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = tokio::time::sleep(limits.connection_lifetime) => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.body_timeout, connection).await;
                }
            }
            drop(slot);
        });
    }
}

#[derive(Deserialize)]
struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

async fn verify(State(hook): State<Arc<Hook>>, Query(q): Query<Handshake>) -> Response {
    let hook = &hook.hook;
    let token_ok = q.verify_token.as_deref().is_some_and(|t| {
        use subtle::ConstantTimeEq;
        bool::from(t.as_bytes().ct_eq(hook.verify_token.as_bytes()))
    });
    match (q.mode.as_deref(), token_ok, q.challenge) {
        (Some("subscribe"), true, Some(challenge)) => {
            tracing::info!("the webhook was verified by the platform");
            hook.health.clear("webhook handshake");
            challenge.into_response()
        }
        _ => {
            hook.health.problem(
                "webhook handshake",
                "a webhook verification with a wrong hub.verify_token was refused: is verify_token the one set in the app's webhook settings?".into(),
            );
            (StatusCode::FORBIDDEN, "verify token mismatch").into_response()
        }
    }
}

async fn deliver(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: Body) -> Response {
    let body = match read_body(body, &headers, &hook.limits).await {
        Ok(body) => body,
        Err(refused) => return refused.into_response(),
    };
    let hook = &hook.hook;
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature_valid(hook.app_secret.as_bytes(), &body, signature) {
        hook.health.problem(
            "webhook signature",
            "webhook POSTs without a valid X-Hub-Signature-256 are refused, so nothing arrives: is app_secret the app's secret (App settings, Basic)?".into(),
        );
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    hook.health.clear("webhook signature");
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    if payload["object"] != hook.object {
        // Signed by our app but not for this product: nothing to do here.
        return StatusCode::OK.into_response();
    }
    // Never wait here: a full queue is a 503, which Meta retries.
    match hook.out.try_send(payload) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// A request's body, within `limits`: 413 when it is bigger than
/// `max_body` (by its Content-Length before a byte is read, else as soon
/// as it grows past it), 408 when it takes longer than `body_timeout`.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limits: &WebhookLimits,
) -> Result<Bytes, (StatusCode, String)> {
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a webhook body is at most {} bytes", limits.max_body),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut chunks = body.into_data_stream();
        let mut whole = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk =
                chunk.map_err(|_| (StatusCode::BAD_REQUEST, "the body was cut off".to_string()))?;
            if whole.len() + chunk.len() > limits.max_body {
                return Err(too_large());
            }
            whole.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(whole))
    };
    tokio::time::timeout(limits.body_timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err((
                StatusCode::REQUEST_TIMEOUT,
                "the body came too slowly".to_string(),
            ))
        })
}

#[cfg(test)]
mod tests;
