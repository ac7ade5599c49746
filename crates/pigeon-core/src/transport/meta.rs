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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
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

/// Read a Graph answer: `T` on 2xx, else the classified error.
pub async fn read<T: serde::de::DeserializeOwned>(
    platform: &str,
    what: &str,
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<T, CallError> {
    let response = response.map_err(|e| {
        CallError::Transient(format!("{platform} {what}: {}", super::http::describe(e)))
    })?;
    let status = response.status();
    let header_wait = super::http::retry_after(response.headers());
    let body = super::http::read_capped(response, super::http::MAX_ANSWER)
        .await
        .map_err(|e| CallError::Transient(format!("{platform} {what}: {e}")))?;
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
        Err(_) => CallError::Permanent(format!("{platform} {what}: HTTP {status}")),
    })
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

/// Listen for Meta's webhook on `listen` (bound now, so a taken port is
/// said at once).
pub fn serve_webhook(listen: SocketAddr, hook: Webhook) -> Result<SocketAddr, String> {
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| format!("cannot listen for the webhook on {listen}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("webhook listener: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("webhook listener: {e}"))?;
    let hook = Arc::new(hook);
    let app = axum::Router::new()
        .fallback(axum::routing::get(verify).post(deliver))
        // Meta's payloads are kilobytes.
        .layer(axum::extract::DefaultBodyLimit::max(1024 * 1024))
        .with_state(hook);
    crate::task::spawn(async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => {
                if let Err(e) = axum::serve(l, app).await {
                    tracing::error!("the webhook listener stopped: {e}");
                }
            }
            Err(e) => tracing::error!("webhook listener: {e}"),
        }
    });
    Ok(bound)
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

async fn verify(State(hook): State<Arc<Webhook>>, Query(q): Query<Handshake>) -> Response {
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

async fn deliver(State(hook): State<Arc<Webhook>>, headers: HeaderMap, body: Bytes) -> Response {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_over_the_raw_bytes() {
        // The bytes as Meta sends them: non-ASCII escaped.
        let body = br#"{"object":"whatsapp_business_account","name":"Caf\u00e9"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"app-secret").unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signature_valid(b"app-secret", body, Some(&good)));
        assert!(!signature_valid(b"other", body, Some(&good)));
        // The same JSON re-serialised (é unescaped) is different bytes.
        let reserialised = "{\"object\":\"whatsapp_business_account\",\"name\":\"Café\"}";
        assert!(!signature_valid(
            b"app-secret",
            reserialised.as_bytes(),
            Some(&good)
        ));
        assert!(!signature_valid(b"app-secret", body, None));
        assert!(!signature_valid(b"app-secret", body, Some("sha1=00")));
    }

    #[test]
    fn graph_errors_are_classified_by_code() {
        let e = |code, status| {
            let reply: GraphErrorReply = serde_json::from_value(serde_json::json!({
                "error": {"message": "m", "type": "OAuthException", "code": code, "fbtrace_id": "A"}
            }))
            .unwrap();
            classify("whatsapp", status, &reply.error)
        };
        assert!(matches!(e(131056, 400), CallError::RateLimited(d) if d == Duration::from_secs(6)));
        assert!(matches!(e(130429, 400), CallError::RateLimited(_)));
        assert!(matches!(e(190, 401), CallError::Permanent(m) if m.contains("access token")));
        assert!(matches!(e(131047, 400), CallError::Permanent(m) if m.contains("24-hour")));
        assert!(matches!(e(131000, 500), CallError::Transient(_)));
        assert!(matches!(e(100, 400), CallError::Permanent(_)));
        let window: GraphErrorReply = serde_json::from_value(serde_json::json!({
            "error": {"message": "(#10) This message is sent outside of allowed window.",
                      "type": "OAuthException", "code": 10, "error_subcode": 2018278}
        }))
        .unwrap();
        assert!(
            matches!(classify("messenger", 400, &window.error), CallError::Permanent(m) if m.contains("write to the Page first"))
        );
    }
}
