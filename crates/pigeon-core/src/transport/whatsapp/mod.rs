//! `whatsapp:` the WhatsApp Cloud API (Graph), the business number's side.
//!
//! ```text
//! whatsapp:<WA_ID>?phone_id=<ID>&token_env=<VAR>&app_secret_env=<VAR>&verify_token_env=<VAR>&listen=<HOST:PORT>[&api=<URL>][&mode=text|document]
//! ```
//!
//! (each `_env` may be `_file=<PATH>` instead). Sends go to
//! `POST /{phone_id}/messages`; what the peer's number sends arrives by the
//! webhook this transport listens for on `listen` (put a tunnel with a
//! valid certificate in front: Meta calls only public HTTPS). Topology:
//! two business numbers, one per party, each writing to the other's
//! `wa_id` (see the README for what Meta does and does not promise there).
//!
//! - `text` (default): base64 (or `alphabet=dense`) in text messages of up
//!   to 4,096 characters;
//! - `document`: chunks as documents uploaded with `POST /{phone_id}/media`.
//!   WhatsApp takes documents of listed types only (`text/plain`, PDF,
//!   office formats), so a chunk travels as a `text/plain` file of its
//!   base64: 100 MB of document, 75 MB of chunk. The receiver asks
//!   `GET /{media_id}` for a URL (valid 5 minutes) and fetches it with the
//!   token.
//!
//! About one message every 6 s to one user (the pair rate, error 131056),
//! which is the pace the link keeps. A message sent outside the 24-hour
//! window fails later, in a `failed` status on the webhook (131047): that
//! is said, with what to do.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::http;
use super::meta::{self, CallError, MetaSettings, UriQuery};
use super::over_http::{self, HttpTransport};
use super::{Capabilities, Correspondents, Health, Message, Received, SendError};

pub use super::meta::{Mode, PUBLIC_API};
/// Largest text message, characters.
pub const MAX_TEXT: usize = 4096;
/// Largest document, bytes.
pub const MAX_DOCUMENT: usize = 100_000_000;
/// The longest a document's fetch may take, retries included.
const FETCH_DEADLINE: Duration = Duration::from_secs(120);

/// A parsed `whatsapp:` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhatsappUri {
    /// The peer's number as WhatsApp ids it (digits, no `+`).
    pub peer: String,
    pub phone_id: String,
    /// Secrets, webhook, API, mode and pace (WhatsApp's pair rate is
    /// about 10 a minute).
    pub meta: MetaSettings,
}

impl WhatsappUri {
    pub fn parse(rest: &str) -> Result<WhatsappUri, String> {
        let (peer, query) = rest.split_once('?').unwrap_or((rest, ""));
        if peer != "*"
            && (peer.is_empty() || peer.len() > 20 || !peer.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "whatsapp: needs the peer's number as its wa_id: digits with the country code, no + (got {peer:?})"
            ));
        }
        let q = UriQuery::parse(query)?;
        q.only(
            "whatsapp",
            &["phone_id", "listen", "api", "mode", "msgs_per_min"],
            &["token", "app_secret", "verify_token"],
        )?;
        let phone_id = q
            .get("phone_id")
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .ok_or("whatsapp: needs phone_id=<ID>, the business number's id from the app's WhatsApp setup page")?;
        Ok(WhatsappUri {
            peer: peer.to_string(),
            phone_id: phone_id.to_string(),
            meta: MetaSettings::parse("whatsapp", &q)?,
        })
    }

    /// A chunk travels as its base64 in a text/plain document.
    pub fn capabilities(&self) -> Capabilities {
        self.meta.capabilities(MAX_TEXT, MAX_DOCUMENT / 4 * 3, 10)
    }
}

impl std::fmt::Display for WhatsappUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "whatsapp:{}?phone_id={}", self.peer, self.phone_id)?;
        self.meta.fmt_query(f)
    }
}

/// What `GET /{phone_id}` answers (the fields pigeon shows).
#[derive(Debug, Deserialize)]
pub struct PhoneNumber {
    pub id: String,
    pub display_phone_number: Option<String>,
    pub verified_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MediaUrl {
    url: String,
}

#[derive(Debug, Deserialize)]
struct Uploaded {
    id: String,
}

/// The Cloud API as this business number sees it.
pub struct Api {
    http: reqwest::Client,
    base: String,
    phone_id: String,
    token: zeroize::Zeroizing<String>,
    /// Told whether the API answers at all ([`Health::unreachable`]).
    health: Arc<Health>,
}

impl Api {
    fn new(uri: &WhatsappUri, health: Arc<Health>) -> Result<Api, String> {
        Ok(Api {
            http: http::client()?,
            base: uri.meta.api.clone(),
            phone_id: uri.phone_id.clone(),
            token: uri.meta.token.load()?,
            health,
        })
    }

    fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.http.get(url).bearer_auth(self.token.as_str())
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/{}/{path}", self.base, self.phone_id))
            .bearer_auth(self.token.as_str())
    }

    async fn send_message(&self, to: &str, content: Value) -> Result<(), CallError> {
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
        });
        if let (Some(b), Some(c)) = (body.as_object_mut(), content.as_object()) {
            b.extend(c.clone());
        }
        let response = self.post("messages").json(&body).send().await;
        meta::read::<Value>("whatsapp", "send", response, &self.health)
            .await
            .map(drop)
    }

    /// Upload `text` as a `text/plain` document; its media id.
    async fn upload(&self, text: String) -> Result<String, CallError> {
        let part = reqwest::multipart::Part::bytes(text.into_bytes())
            .file_name("pigeon.txt")
            .mime_str("text/plain")
            .map_err(|e| CallError::Permanent(e.to_string()))?;
        let form = reqwest::multipart::Form::new()
            .text("messaging_product", "whatsapp")
            .text("type", "text/plain")
            .part("file", part);
        let response = self
            .post("media")
            .timeout(Duration::from_secs(300))
            .multipart(form)
            .send()
            .await;
        Ok(
            meta::read::<Uploaded>("whatsapp", "media upload", response, &self.health)
                .await?
                .id,
        )
    }

    /// The bytes of media `id`: its URL (valid 5 minutes), then the file.
    async fn download(&self, id: &str) -> Result<Vec<u8>, CallError> {
        let lookup = self.get(&format!("{}/{id}", self.base)).send().await;
        let url = meta::read::<MediaUrl>("whatsapp", "media lookup", lookup, &self.health)
            .await?
            .url;
        let response = self
            .get(&url)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .map_err(|e| {
                CallError::Transient(format!("whatsapp media download: {}", http::describe(e)))
            })?;
        if !response.status().is_success() {
            return Err(CallError::Transient(format!(
                "whatsapp media download: HTTP {}",
                response.status()
            )));
        }
        http::read_capped(response, MAX_DOCUMENT)
            .await
            .map_err(|e| CallError::Permanent(format!("whatsapp media download: {e}")))
    }
}

/// An open WhatsApp link.
pub type Whatsapp = HttpTransport<Api>;

impl Whatsapp {
    /// Load the secrets, listen for the webhook and start handing on what
    /// it brings. Fails at once when a secret is missing or the port is
    /// taken; a wrong token is reported by the first call.
    pub fn open(uri: WhatsappUri) -> Result<Whatsapp, String> {
        let health = Arc::new(Health::default());
        let api = Api::new(&uri, health.clone())?;
        let (hook_tx, hook_rx) = mpsc::channel(64);
        let webhook = meta::serve_webhook(
            uri.meta.listen,
            meta::Webhook {
                object: "whatsapp_business_account",
                app_secret: uri.meta.app_secret.load()?,
                verify_token: uri.meta.verify_token.load()?,
                out: hook_tx,
                health: health.clone(),
            },
        )?;
        let caps = uri.capabilities();
        let peer = uri.peer.clone();
        let hand_on_uri = uri.clone();
        let hand_on_health = health.clone();
        let transport =
            HttpTransport::start(uri, caps, &peer, api, health, |api, correspondents, tx| {
                hand_on(
                    api.clone(),
                    hand_on_uri,
                    correspondents,
                    hook_rx,
                    tx,
                    hand_on_health,
                )
            });
        Ok(transport.with_webhook(webhook))
    }

    /// `GET /{phone_id}`: the number the token speaks for. Opens no
    /// webhook, so a running pigeon is not disturbed.
    pub async fn check(uri: &WhatsappUri) -> Result<PhoneNumber, String> {
        let api = Api::new(uri, Arc::default())?;
        uri.meta.app_secret.load()?;
        uri.meta.verify_token.load()?;
        let response = api
            .get(&format!("{}/{}", api.base, api.phone_id))
            .send()
            .await;
        meta::read("whatsapp", "phone number lookup", response, &api.health)
            .await
            .map_err(CallError::message)
    }
}

impl over_http::Api for Api {
    type Uri = WhatsappUri;

    async fn send(&self, to: &super::Address, message: Message) -> Result<(), SendError> {
        let outcome = match &message {
            Message::Text(text) => {
                self.send_message(
                    to,
                    json!({"type": "text", "text": {"preview_url": false, "body": text}}),
                )
                .await
            }
            Message::Binary(bytes) => {
                let text = base64::engine::general_purpose::STANDARD.encode(bytes);
                match self.upload(text).await {
                    Ok(id) => {
                        self.send_message(
                            to,
                            json!({"type": "document", "document": {"id": id, "filename": "pigeon.txt"}}),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(e) => Err(e.into_send_error(message)),
        }
    }
}

/// Take the webhook's payloads apart: messages from the peer go to the
/// link (documents fetched first), repeats by message id are dropped, and
/// failed statuses of what we sent are said.
async fn hand_on(
    api: Arc<Api>,
    uri: WhatsappUri,
    correspondents: Arc<Correspondents>,
    mut hooks: mpsc::Receiver<Value>,
    tx: mpsc::Sender<Received>,
    health: Arc<Health>,
) {
    let mut seen: super::Seen<String> = super::Seen::new();
    while let Some(payload) = hooks.recv().await {
        let values = payload["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| e["changes"].as_array().into_iter().flatten())
            .filter(|c| c["field"] == "messages")
            .map(|c| &c["value"]);
        for value in values {
            if value["metadata"]["phone_number_id"].as_str() != Some(uri.phone_id.as_str()) {
                continue;
            }
            for status in value["statuses"].as_array().into_iter().flatten() {
                match status["status"].as_str() {
                    Some("failed") => report_failed_status(&health, status),
                    Some("sent" | "delivered" | "read") => health.clear("delivery"),
                    _ => {}
                }
            }
            for m in value["messages"].as_array().into_iter().flatten() {
                let from = m["from"].as_str().unwrap_or("");
                let wa_id_ok = !from.is_empty()
                    && from.len() <= 20
                    && from.bytes().all(|b| b.is_ascii_digit());
                if !wa_id_ok || !correspondents.accept(from, &[]) {
                    tracing::debug!("a WhatsApp message from another number; ignored");
                    continue;
                }
                let Some(id) = m["id"].as_str() else { continue };
                if seen.contains(id) {
                    continue;
                }
                let message = match m["type"].as_str() {
                    Some("text") => match m["text"]["body"].as_str() {
                        Some(body) => Message::Text(body.to_string()),
                        None => continue,
                    },
                    Some("document") => {
                        let Some(media) = m["document"]["id"].as_str() else {
                            continue;
                        };
                        // Bounded: the webhooks behind it wait.
                        let fetched =
                            tokio::time::timeout(FETCH_DEADLINE, fetch(&api, media)).await;
                        match fetched.ok().flatten() {
                            Some(bytes) => Message::Binary(bytes),
                            // Gone for good: the sender sends the chunk again.
                            None => continue,
                        }
                    }
                    _ => continue,
                };
                seen.insert(id.to_string());
                // The peer wrote: our window to it is open.
                health.clear("delivery");
                let from = correspondents.is_any().then(|| from.to_string());
                if tx.send(Received { from, message }).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A document's chunk: its base64 text decoded. A failure is logged and
/// the chunk left to the sender's retransmission.
async fn fetch(api: &Api, media: &str) -> Option<Vec<u8>> {
    let mut wait = Duration::from_millis(500);
    for attempt in 0..4 {
        match api.download(media).await {
            Ok(text) => {
                return match base64::engine::general_purpose::STANDARD.decode(text.trim_ascii()) {
                    Ok(bytes) => Some(bytes),
                    Err(_) => {
                        tracing::warn!("a WhatsApp document that is not pigeon's; dropped");
                        None
                    }
                };
            }
            Err(CallError::Transient(m)) if attempt < 3 => {
                tracing::debug!("{m}; trying again");
            }
            Err(CallError::RateLimited(d)) if attempt < 3 => wait = d.min(Duration::from_secs(10)),
            Err(e) => {
                tracing::warn!("{}; the chunk will be sent again", e.message());
                return None;
            }
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    None
}

fn report_failed_status(health: &Health, status: &Value) {
    for e in status["errors"].as_array().into_iter().flatten() {
        let error = meta::GraphError {
            message: e["title"]
                .as_str()
                .or(e["message"].as_str())
                .unwrap_or("failed")
                .to_string(),
            kind: String::new(),
            code: e["code"].as_i64().unwrap_or(0),
            error_subcode: None,
            fbtrace_id: None,
            error_data: None,
        };
        match meta::classify("whatsapp", 400, &error) {
            CallError::Permanent(m) => {
                health.problem("delivery", format!("a message was not delivered: {m}"))
            }
            other => tracing::warn!("a message was not delivered: {}", other.message()),
        }
    }
}

#[cfg(test)]
mod tests;
