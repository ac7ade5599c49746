//! `messenger:` the Messenger Platform's Send API, the Page's side.
//!
//! ```text
//! messenger:<PSID>?page_id=<ID>&token_env=<VAR>&app_secret_env=<VAR>&verify_token_env=<VAR>&listen=<HOST:PORT>[&api=<URL>][&mode=text|document]
//! ```
//!
//! A Page speaks to people who wrote to it first, for 24 hours after their
//! last message; `<PSID>` is the person's page-scoped id (it arrives in the
//! webhook when they write). Sends go to `POST /{page_id}/messages`; what
//! the person sends arrives by the webhook this transport listens for on
//! `listen`. There is no official API for the person's side: see the
//! README for what that means for pigeon.
//!
//! - `text` (default): base64 (or `alphabet=dense`) in messages of up to
//!   2,000 characters;
//! - `document`: chunks as file attachments (up to 25 MB), uploaded with
//!   the message and fetched from the URL the webhook names.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::http;
use super::meta::{self, CallError, MetaSettings, UriQuery};
use super::over_http::{self, HttpTransport};
use super::{Capabilities, Correspondents, Health, Message, Received, SendError};

pub use super::meta::{Mode, PUBLIC_API};
pub const MAX_TEXT: usize = 2000;
pub const MAX_ATTACHMENT: usize = 25_000_000;
/// The longest an attachment's fetch may take, retries included.
const FETCH_DEADLINE: Duration = Duration::from_secs(120);

/// A parsed `messenger:` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessengerUri {
    /// The person's page-scoped id.
    pub psid: String,
    pub page_id: String,
    /// Secrets, webhook, API, mode and pace.
    pub meta: MetaSettings,
}

impl MessengerUri {
    pub fn parse(rest: &str) -> Result<MessengerUri, String> {
        let (psid, query) = rest.split_once('?').unwrap_or((rest, ""));
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit());
        if psid != "*" && !digits(psid) {
            return Err(format!(
                "messenger: needs the person's page-scoped id (PSID, digits; it is in the webhook when they write to the Page) (got {psid:?})"
            ));
        }
        let q = UriQuery::parse(query)?;
        q.only(
            "messenger",
            &["page_id", "listen", "api", "mode", "msgs_per_min"],
            &["token", "app_secret", "verify_token"],
        )?;
        let page_id = q
            .get("page_id")
            .filter(|p| digits(p))
            .ok_or("messenger: needs page_id=<ID>, the Page's id (Page settings, About)")?;
        Ok(MessengerUri {
            psid: psid.to_string(),
            page_id: page_id.to_string(),
            meta: MetaSettings::parse("messenger", &q)?,
        })
    }

    pub fn capabilities(&self) -> Capabilities {
        self.meta.capabilities(MAX_TEXT, MAX_ATTACHMENT, 60)
    }
}

impl std::fmt::Display for MessengerUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "messenger:{}?page_id={}", self.psid, self.page_id)?;
        self.meta.fmt_query(f)
    }
}

/// What `GET /{page_id}` answers (the fields pigeon shows).
#[derive(Debug, Deserialize)]
pub struct Page {
    pub id: String,
    pub name: Option<String>,
}

/// The Send API as the Page sees it.
pub struct Api {
    http: reqwest::Client,
    /// For attachment URLs: no redirects.
    fetcher: reqwest::Client,
    base: String,
    page_id: String,
    token: zeroize::Zeroizing<String>,
    /// Told whether the API answers at all ([`Health::unreachable`]).
    health: Arc<Health>,
}

impl Api {
    fn new(uri: &MessengerUri, health: Arc<Health>) -> Result<Api, String> {
        Ok(Api {
            http: http::client()?,
            fetcher: http::client_no_redirects()?,
            base: uri.meta.api.clone(),
            page_id: uri.page_id.clone(),
            token: uri.meta.token.load()?,
            health,
        })
    }

    fn messages(&self) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/{}/messages", self.base, self.page_id))
            .bearer_auth(self.token.as_str())
    }

    /// Send `message` to the person `psid`.
    async fn deliver(&self, psid: &str, message: &Message) -> Result<(), CallError> {
        let recipient = json!({ "id": psid }).to_string();
        let request = match message {
            Message::Text(text) => self.messages().json(&json!({
                "recipient": { "id": psid },
                "messaging_type": "RESPONSE",
                "message": { "text": text },
            })),
            Message::Binary(bytes) => {
                let part = reqwest::multipart::Part::bytes(bytes.clone())
                    .file_name("pigeon.bin")
                    .mime_str("application/octet-stream")
                    .map_err(|e| CallError::Permanent(e.to_string()))?;
                let form = reqwest::multipart::Form::new()
                    .text("recipient", recipient)
                    .text("messaging_type", "RESPONSE")
                    .text(
                        "message",
                        json!({"attachment": {"type": "file", "payload": {"is_reusable": false}}})
                            .to_string(),
                    )
                    .part("filedata", part);
                self.messages()
                    .timeout(Duration::from_secs(300))
                    .multipart(form)
            }
        };
        meta::read::<Value>("messenger", "send", request.send().await, &self.health)
            .await
            .map(drop)
    }
}

/// An open Messenger link (the Page's side).
pub type Messenger = HttpTransport<Api>;

impl Messenger {
    /// Load the secrets, listen for the webhook and start handing on what
    /// it brings.
    pub fn open(uri: MessengerUri) -> Result<Messenger, String> {
        let health = Arc::new(Health::default());
        let api = Api::new(&uri, health.clone())?;
        let (hook_tx, hook_rx) = mpsc::channel(64);
        let webhook = meta::serve_webhook(
            uri.meta.listen,
            meta::Webhook {
                object: "page",
                app_secret: uri.meta.app_secret.load()?,
                verify_token: uri.meta.verify_token.load()?,
                out: hook_tx,
                health: health.clone(),
            },
        )?;
        let caps = uri.capabilities();
        let peer = uri.psid.clone();
        let page_id = uri.page_id.clone();
        let transport =
            HttpTransport::start(uri, caps, &peer, api, health, |api, correspondents, tx| {
                hand_on(api.clone(), page_id, correspondents, hook_rx, tx)
            });
        Ok(transport.with_webhook(webhook))
    }

    /// `GET /{page_id}`: the Page the token speaks for. Opens no webhook.
    pub async fn check(uri: &MessengerUri) -> Result<Page, String> {
        let api = Api::new(uri, Arc::default())?;
        uri.meta.app_secret.load()?;
        uri.meta.verify_token.load()?;
        let response = api
            .http
            .get(format!("{}/{}", api.base, api.page_id))
            .bearer_auth(api.token.as_str())
            .send()
            .await;
        meta::read("messenger", "page lookup", response, &api.health)
            .await
            .map_err(CallError::message)
    }
}

impl over_http::Api for Api {
    type Uri = MessengerUri;

    async fn send(&self, to: &super::Address, message: Message) -> Result<(), SendError> {
        match self.deliver(to, &message).await {
            Ok(()) => Ok(()),
            Err(e) => Err(e.into_send_error(message)),
        }
    }
}

/// Take the webhook's payloads apart: messages from the person go to the
/// link (attachments fetched first); echoes of the Page's own messages and
/// repeats by message id are dropped.
async fn hand_on(
    api: Arc<Api>,
    page_id: String,
    correspondents: Arc<Correspondents>,
    mut hooks: mpsc::Receiver<Value>,
    tx: mpsc::Sender<Received>,
) {
    let mut seen: super::Seen<String> = super::Seen::new();
    while let Some(payload) = hooks.recv().await {
        let events = payload["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["id"].as_str() == Some(page_id.as_str()))
            .flat_map(|e| e["messaging"].as_array().into_iter().flatten());
        for event in events {
            let m = &event["message"];
            let from = event["sender"]["id"].as_str().unwrap_or("");
            let psid_ok =
                !from.is_empty() && from.len() <= 32 && from.bytes().all(|b| b.is_ascii_digit());
            if m["is_echo"] == true || !psid_ok || !correspondents.accept(from, &[]) {
                continue;
            }
            let Some(mid) = m["mid"].as_str() else {
                continue;
            };
            if seen.contains(mid) {
                continue;
            }
            let message = if let Some(text) = m["text"].as_str() {
                Message::Text(text.to_string())
            } else if let Some(url) = file_attachment(&api.base, m) {
                // Bounded: the webhooks behind it wait.
                match tokio::time::timeout(FETCH_DEADLINE, fetch(&api, &url))
                    .await
                    .ok()
                    .flatten()
                {
                    Some(bytes) => Message::Binary(bytes),
                    None => continue,
                }
            } else {
                continue;
            };
            seen.insert(mid.to_string());
            let from = correspondents.is_any().then(|| from.to_string());
            if tx.send(Received { from, message }).await.is_err() {
                return;
            }
        }
    }
}

/// The URL of a message's file attachment, if it is one pigeon may fetch:
/// a `file` (a person sharing a link makes a `fallback` attachment with
/// any URL in it), on Meta's CDN over HTTPS, or on the API's own host (an
/// emulator). Anything else would let whoever writes make the agent fetch
/// from its own network.
fn file_attachment(api: &str, m: &Value) -> Option<String> {
    let a = &m["attachments"][0];
    if a["type"] != "file" {
        return None;
    }
    let url = reqwest::Url::parse(a["payload"]["url"].as_str()?).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    let meta_cdn = url.scheme() == "https"
        && ["fbcdn.net", "fbsbx.com"]
            .iter()
            .any(|d| host == *d || host.ends_with(&format!(".{d}")));
    let api = reqwest::Url::parse(api).ok()?;
    let same_as_api = url.scheme() == api.scheme()
        && url.host_str() == api.host_str()
        && url.port_or_known_default() == api.port_or_known_default();
    if meta_cdn || same_as_api {
        Some(url.to_string())
    } else {
        tracing::warn!("an attachment URL off Meta's CDN; not fetched");
        None
    }
}

/// An attachment's bytes from its CDN URL (at most 25 MB). A failure is
/// logged and the chunk left to the sender's retransmission.
async fn fetch(api: &Api, url: &str) -> Option<Vec<u8>> {
    let mut wait = Duration::from_millis(500);
    for attempt in 0..4 {
        let outcome = async {
            let r = api
                .fetcher
                .get(url)
                .timeout(Duration::from_secs(300))
                .send()
                .await
                .map_err(|e| (true, http::describe(e)))?;
            let status = r.status();
            if !status.is_success() {
                return Err((status.is_server_error(), format!("HTTP {status}")));
            }
            http::read_capped(r, MAX_ATTACHMENT)
                .await
                .map_err(|e| (false, e))
        }
        .await;
        match outcome {
            Ok(bytes) => return Some(bytes),
            Err((true, e)) if attempt < 3 => {
                tracing::debug!("messenger attachment: {e}; trying again")
            }
            Err((_, e)) => {
                tracing::warn!("messenger attachment: {e}; the chunk will be sent again");
                return None;
            }
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a webhook hands over twice, and the Page's own echoes, reach
    /// the link once and never, even on `*` (an echo's sender is the Page).
    #[tokio::test]
    async fn repeats_and_echoes_are_dropped_below_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "x").unwrap();
        let s = secret.display();
        let uri = MessengerUri::parse(&format!(
            "*?page_id=7&token_file={s}&app_secret_file={s}&verify_token_file={s}&listen=127.0.0.1:1"
        ))
        .unwrap();
        let api = Arc::new(Api::new(&uri, Arc::default()).unwrap());
        let (hooks, hooks_rx) = mpsc::channel(8);
        let (tx, mut rx) = mpsc::channel(8);
        crate::task::spawn(hand_on(
            api,
            "7".into(),
            Arc::new(Correspondents::new("*")),
            hooks_rx,
            tx,
        ));
        let event = |sender: &str, mid: &str, echo: bool| {
            json!({"object": "page", "entry": [{"id": "7", "time": 1, "messaging": [{
                "sender": {"id": sender}, "recipient": {"id": "7"}, "timestamp": 1,
                "message": {"mid": mid, "text": "aGk=", "is_echo": echo}}]}]})
        };
        hooks.send(event("5", "m_1", false)).await.unwrap();
        hooks.send(event("5", "m_1", false)).await.unwrap();
        hooks.send(event("7", "m_2", true)).await.unwrap();
        hooks.send(event("6", "m_3", false)).await.unwrap();
        let first = rx.recv().await.unwrap();
        assert_eq!(first.message, Message::Text("aGk=".into()));
        assert_eq!(first.from.as_deref(), Some("5"));
        // The next is the other person's, not the repeat or the echo.
        let next = rx.recv().await.unwrap();
        assert_eq!(next.from.as_deref(), Some("6"));
        assert!(tokio::time::timeout(Duration::from_millis(100), rx.recv())
            .await
            .is_err());
    }

    #[test]
    fn only_file_attachments_on_metas_cdn_or_the_api_host_are_fetched() {
        let m = |kind: &str, url: &str| json!({"attachments": [{"type": kind, "payload": {"url": url}}]});
        let api = "https://graph.facebook.com/v25.0";
        let cdn = "https://cdn.fbsbx.com/v/t59/file.bin?_nc=1";
        assert_eq!(file_attachment(api, &m("file", cdn)).as_deref(), Some(cdn));
        assert!(file_attachment(api, &m("file", "https://scontent.xx.fbcdn.net/a")).is_some());
        for (kind, url) in [
            ("fallback", cdn),
            ("file", "http://cdn.fbsbx.com/a"),
            ("file", "https://169.254.169.254/latest/meta-data"),
            ("file", "https://fbsbx.com.evil.example/a"),
            ("file", "https://evilfbcdn.net/a"),
            ("file", "http://127.0.0.1:8080/admin"),
        ] {
            assert_eq!(file_attachment(api, &m(kind, url)), None, "{kind} {url}");
        }
        // The emulator: the API's own host and port.
        let local = "http://127.0.0.1:8084/v25.0";
        assert!(file_attachment(local, &m("file", "http://127.0.0.1:8084/_cdn/ab")).is_some());
        assert!(file_attachment(local, &m("file", "http://127.0.0.1:22/")).is_none());
    }

    #[test]
    fn uris_parse_round_trip_and_never_hold_a_secret() {
        let u = MessengerUri::parse(
            "2417001122334455?page_id=106540352242922&token_env=FB_TOKEN&app_secret_env=FB_APP&verify_token_file=/run/v&listen=127.0.0.1:8444&mode=document",
        )
        .unwrap();
        assert_eq!(u.psid, "2417001122334455");
        assert_eq!(u.meta.mode, Mode::Document);
        assert_eq!(u.capabilities().max_message, MAX_ATTACHMENT);
        assert_eq!(
            MessengerUri::parse(&u.to_string()["messenger:".len()..]).unwrap(),
            u
        );
        for bad in [
            "person?page_id=1&token_env=A&app_secret_env=B&verify_token_env=C&listen=127.0.0.1:1",
            "1?token_env=A&app_secret_env=B&verify_token_env=C&listen=127.0.0.1:1",
            "1?page_id=1&token=EAAhunter2&app_secret_env=B&verify_token_env=C&listen=127.0.0.1:1",
            "1?page_id=1&token_env=A&app_secret_env=B&verify_token_env=C",
        ] {
            let err = MessengerUri::parse(bad).expect_err(bad);
            assert!(!err.contains("hunter2"), "{err}");
        }
        assert_eq!(
            MessengerUri::parse(
                "1?page_id=2&token_env=A&app_secret_env=B&verify_token_env=C&listen=127.0.0.1:1"
            )
            .unwrap()
            .capabilities()
            .payload_bytes(),
            1500
        );
    }
}
