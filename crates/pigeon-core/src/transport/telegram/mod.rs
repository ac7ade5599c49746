//! `telegram:` the Telegram Bot API.
//!
//! Bots do not see other bots' messages, except in Bot-to-Bot Communication
//! Mode: with it on for both bots, a bot writes to the other's `@username`
//! in a private chat. So a link is two bots, one per party: each sends to
//! the other's chat and long-polls `getUpdates` for what the other sent.
//!
//! ```text
//! telegram:<CHAT>?token_env=<VAR>|token_file=<PATH>[&api=<URL>][&local_files=<DIR>][&mode=text|document]
//! ```
//!
//! - `text` (default): base64 (or `alphabet=dense`) in messages of up to
//!   4,096 characters
//!   (`sendMessage`), about one a second per chat;
//! - `document`: chunks as file attachments (`sendDocument`, fetched with
//!   `getFile`: 20 MB down on the public server, which is the limit here).
//!
//! Delivery is at least once: an update is confirmed (by the next poll's
//! `offset`) only after the link holds it, and updates seen before are
//! dropped by message id. A 429 carries `retry_after`, which is obeyed.
//! The token never appears in a message, a log line or `describe()`.
//!
//! The server is not trusted with this machine: a local Bot API server
//! (`--local`) answers `getFile` with a path on its own disk, and pigeon
//! reads such a path only when the URI names that server's folder
//! (`local_files=`), and then only a regular file inside it, no bigger than
//! a document ([`local_files`]). Downloads over HTTP are capped as they
//! stream. Answers that bring nothing new (the same update again, or an
//! empty answer at once instead of a long poll) slow the polling down
//! ([`IdlePace`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;

mod local_files;

use super::http::{self, CallError, SecretSource};
use super::over_http::{self, HttpTransport, PollBackoff};
use super::{Capabilities, Correspondents, Health, Message, Received, SendError};

/// The public Bot API server.
pub const PUBLIC_API: &str = "https://api.telegram.org";
/// The most `getFile` serves on the public Bot API server (and the largest
/// document pigeon reads).
const MAX_DOWNLOAD: usize = 20_000_000;
/// Seconds a `getUpdates` long poll waits for news.
const POLL_SECONDS: u64 = 25;
/// The least time between the starts of two polls after one that brought
/// nothing new: doubled for each such answer in a row, up to
/// [`IDLE_POLL_MAX`]. A server that ignores `timeout`, or answers the same
/// update again and again, would otherwise be asked in a tight loop.
const IDLE_POLL_FIRST: Duration = Duration::from_millis(500);
/// The most [`IdlePace`] waits between polls. Below [`POLL_SECONDS`], so
/// an honest long poll that ends empty is never held up.
const IDLE_POLL_MAX: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Text,
    Document,
}

/// A parsed `telegram:` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelegramUri {
    /// The peer's bot: `@username` or a numeric chat id.
    pub chat: String,
    pub token: SecretSource,
    pub api: String,
    pub mode: Mode,
    /// Messages a minute to the peer's chat (Telegram's own limit is
    /// about one a second; a local Bot API server or an emulator may allow
    /// more).
    pub msgs_per_min: Option<u32>,
    /// What this one link may send (`bwlimit=`, set by [`TransportUri::parse`](super::TransportUri::parse)).
    pub bwlimit: Option<crate::bwlimit::BwLimit>,
    /// Message slots left free of bulk data (`reserve=N/M`, set by
    /// [`TransportUri::parse`](super::TransportUri::parse)).
    pub reserve: Option<crate::link::Reserve>,
    /// The text alphabet asked for (`alphabet=`, set by [`TransportUri::parse`](crate::transport::TransportUri::parse)).
    pub alphabet: Option<crate::alphabet::Alphabet>,
    /// The working folder of a local Bot API server (`local_files=`): the
    /// only place whose files `getFile` may name by an absolute path.
    /// Without it such an answer is refused (a server could name any file
    /// the user can read, or `/dev/zero`).
    pub local_files: Option<PathBuf>,
}

impl TelegramUri {
    pub fn parse(rest: &str) -> Result<TelegramUri, String> {
        let (chat, query) = rest.split_once('?').unwrap_or((rest, ""));
        let chat_ok = chat == "*"
            || chat.strip_prefix('@').is_some_and(|u| {
                !u.is_empty() && u.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            })
            || chat.parse::<i64>().is_ok();
        if !chat_ok {
            return Err(format!(
                "telegram: needs the peer's chat: its bot's @username, a numeric chat id, or * on an agent to answer whoever writes (got {chat:?})"
            ));
        }
        let mut token = None;
        let mut api = PUBLIC_API.to_string();
        let mut mode = Mode::Text;
        let mut msgs_per_min = None;
        let mut local_files = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not key=value"))?;
            match key {
                "token_env" => token = Some(SecretSource::Env(value.to_string())),
                "token_file" => token = Some(SecretSource::File(PathBuf::from(value))),
                "token" => {
                    return Err(
                        "a token is never given on the command line: put it in an environment variable (token_env=VAR) or a file (token_file=PATH)".into(),
                    )
                }
                "api" => api = value.trim_end_matches('/').to_string(),
                "local_files" => {
                    if value.is_empty() {
                        return Err("local_files= needs the local Bot API server's working folder (its --dir)".into());
                    }
                    local_files = Some(PathBuf::from(value))
                }
                "msgs_per_min" => {
                    msgs_per_min = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|&n: &u32| n > 0)
                            .ok_or_else(|| format!("msgs_per_min={value:?} is not a positive whole number"))?,
                    )
                }
                "mode" => {
                    mode = match value {
                        "text" => Mode::Text,
                        "document" => Mode::Document,
                        other => return Err(format!("mode={other:?}: use text or document")),
                    }
                }
                other => {
                    return Err(format!(
                        "unknown telegram setting {other:?}; known: token_env, token_file, api, local_files, mode, msgs_per_min"
                    ))
                }
            }
        }
        let token = token
            .ok_or("telegram: needs the bot token's place: token_env=<VAR> or token_file=<PATH>")?;
        if local_files.is_some() && api == PUBLIC_API {
            return Err("local_files= is for a local Bot API server: give its address too (api=http://127.0.0.1:8081)".into());
        }
        Ok(TelegramUri {
            chat: chat.to_string(),
            token,
            api,
            mode,
            msgs_per_min,
            bwlimit: None,
            reserve: None,
            alphabet: None,
            local_files,
        })
    }

    pub fn capabilities(&self) -> Capabilities {
        let mut caps = match self.mode {
            Mode::Text => Capabilities {
                max_message: 4096,
                text_only: true,
                alphabet: self.alphabet.unwrap_or_default(),
                messages_per_minute: Some(60),
                bytes_per_minute: Some(10_000_000),
                burst: false,
            },
            Mode::Document => Capabilities {
                max_message: 20_000_000,
                text_only: false,
                alphabet: crate::alphabet::Alphabet::Base64,
                messages_per_minute: Some(20),
                bytes_per_minute: Some(10_000_000),
                burst: false,
            },
        };
        if let Some(m) = self.msgs_per_min {
            caps.messages_per_minute = Some(m);
            // The byte ceiling scales with a pace that is asked for.
            caps.bytes_per_minute = caps
                .bytes_per_minute
                .map(|b| b.max(u64::from(m) * caps.payload_bytes() as u64));
        }
        caps
    }
}

impl std::fmt::Display for TelegramUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "telegram:{}?", self.chat)?;
        match &self.token {
            SecretSource::Env(v) => write!(f, "token_env={v}")?,
            SecretSource::File(p) => write!(f, "token_file={}", p.display())?,
        }
        if self.api != PUBLIC_API {
            write!(f, "&api={}", self.api)?;
        }
        if let Some(dir) = &self.local_files {
            write!(f, "&local_files={}", dir.display())?;
        }
        if self.mode == Mode::Document {
            f.write_str("&mode=document")?;
        }
        if let Some(m) = self.msgs_per_min {
            write!(f, "&msgs_per_min={m}")?;
        }
        Ok(())
    }
}

/// The Bot API's answer envelope.
#[derive(Debug, Deserialize)]
struct Reply<T> {
    ok: bool,
    result: Option<T>,
    error_code: Option<u16>,
    description: Option<String>,
    parameters: Option<ReplyParameters>,
}

#[derive(Debug, Deserialize)]
struct ReplyParameters {
    retry_after: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Update {
    update_id: i64,
    message: Option<TgMessage>,
}

#[derive(Debug, Deserialize)]
struct TgMessage {
    message_id: i64,
    chat: Chat,
    from: Option<User>,
    text: Option<String>,
    document: Option<Document>,
}

#[derive(Debug, Deserialize)]
struct Chat {
    id: i64,
}

#[derive(Debug, Deserialize)]
struct User {
    id: i64,
    username: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Document {
    file_id: String,
    file_size: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct File {
    file_path: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Me {
    pub id: i64,
    pub username: Option<String>,
}

/// The Bot API as this bot sees it.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: zeroize::Zeroizing<String>,
    /// `local_files=`: where `getFile`'s absolute paths may point.
    local_files: Option<PathBuf>,
    /// Told whether the server answers at all ([`Health::unreachable`]).
    health: Arc<Health>,
}

impl Api {
    fn new(uri: &TelegramUri, health: Arc<Health>) -> Result<Api, String> {
        Ok(Api {
            http: http::client()?,
            base: uri.api.clone(),
            token: uri.token.load()?,
            local_files: uri.local_files.clone(),
            health,
        })
    }

    fn url(&self, method: &str) -> String {
        format!("{}/bot{}/{method}", self.base, self.token.as_str())
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, CallError> {
        let label = format!("telegram {method}");
        let response = request.send().await.map_err(|e| {
            let (m, noted) = http::unanswered(&label, e, &self.health);
            if !noted {
                tracing::debug!("{m}");
            }
            CallError::Transient(m)
        })?;
        let http::Answer {
            status,
            header_wait,
            body,
        } = http::answer(&label, response, &self.health, http::MAX_ANSWER).await?;
        let reply: Reply<T> = serde_json::from_slice(&body).map_err(|_| {
            CallError::Transient(format!(
                "telegram {method}: HTTP {status} with an answer that is not the Bot API's"
            ))
        })?;
        if reply.ok {
            return reply
                .result
                .ok_or_else(|| CallError::Transient(format!("telegram {method}: no result")));
        }
        let code = reply.error_code.unwrap_or(status.as_u16());
        let description =
            crate::policy::escape_control(reply.description.as_deref().unwrap_or("no description"))
                .into_owned();
        let wait = reply
            .parameters
            .and_then(|p| p.retry_after)
            .map(http::provider_wait)
            .or(header_wait);
        Err(match code {
            429 => CallError::RateLimited(wait.unwrap_or(Duration::from_secs(1))),
            401 => CallError::Permanent(format!(
                "telegram refused the bot token (401 {description}): check the token in its environment variable or file (from @BotFather)"
            )),
            403 => CallError::Permanent(format!(
                "telegram: the bot may not write to this chat (403 {description}); is bot-to-bot mode on for both bots?"
            )),
            409 => CallError::Transient(format!(
                "telegram {method}: 409 {description}: another process polls with this bot token, or a webhook is set (deleteWebhook)"
            )),
            400 => CallError::Permanent(format!("telegram {method}: 400 {description}")),
            _ => CallError::Transient(format!("telegram {method}: {code} {description}")),
        })
    }
}

/// An open Telegram link.
pub type Telegram = HttpTransport<Api>;

impl Telegram {
    /// Load the token and start polling. Fails at once when the token is
    /// missing; a wrong one is reported by the first call.
    pub fn open(uri: TelegramUri) -> Result<Telegram, String> {
        let health = Arc::new(Health::default());
        let api = Api::new(&uri, health.clone())?;
        let caps = uri.capabilities();
        let peer = uri.chat.clone();
        Ok(HttpTransport::start(
            uri,
            caps,
            &peer,
            api,
            health.clone(),
            |api, correspondents, tx| poll(api.clone(), correspondents, tx, health),
        ))
    }

    /// `getMe`: who this bot is (a check of the token). Does not poll, so
    /// a running pigeon on the same bot is not disturbed.
    pub async fn check(uri: &TelegramUri) -> Result<Me, String> {
        let api = Api::new(uri, Arc::default())?;
        let req = api.http.post(api.url("getMe"));
        api.call("getMe", req).await.map_err(|e| match e {
            CallError::RateLimited(d) => format!("telegram: rate limited for {d:?}"),
            CallError::Permanent(m) | CallError::Transient(m) => m,
        })
    }

    fn chat_id(chat: &str) -> serde_json::Value {
        match chat.parse::<i64>() {
            Ok(id) => serde_json::Value::from(id),
            Err(_) => serde_json::Value::from(chat),
        }
    }
}

impl over_http::Api for Api {
    type Uri = TelegramUri;

    async fn send(&self, to: &super::Address, message: Message) -> Result<(), SendError> {
        let chat = Telegram::chat_id(to);
        let (method, request) = match &message {
            Message::Text(text) => (
                "sendMessage",
                self.http
                    .post(self.url("sendMessage"))
                    .json(&serde_json::json!({ "chat_id": chat, "text": text })),
            ),
            Message::Binary(bytes) => {
                let part = reqwest::multipart::Part::bytes(bytes.clone())
                    .file_name("pigeon.bin")
                    .mime_str("application/octet-stream")
                    .map_err(|e| SendError::Failed(e.to_string()))?;
                let form = reqwest::multipart::Form::new()
                    .text("chat_id", to.clone())
                    .part("document", part);
                (
                    "sendDocument",
                    self.http
                        .post(self.url("sendDocument"))
                        .timeout(Duration::from_secs(300))
                        .multipart(form),
                )
            }
        };
        match self.call::<serde_json::Value>(method, request).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.into_send_error(message)),
        }
    }
}

/// Long-poll `getUpdates` for ever, handing each message from the peer's
/// chat to the link. An update is confirmed (the next poll's offset) only
/// once the link has taken it.
async fn poll(
    api: Arc<Api>,
    correspondents: Arc<Correspondents>,
    tx: mpsc::Sender<Received>,
    health: Arc<Health>,
) {
    let mut offset: Option<i64> = None;
    let mut seen: super::Seen<i64> = super::Seen::new();
    let mut backoff = PollBackoff::default();
    let mut idle = IdlePace::default();
    loop {
        let mut body = serde_json::json!({
            "timeout": POLL_SECONDS,
            "allowed_updates": ["message"],
        });
        if let Some(o) = offset {
            body["offset"] = serde_json::Value::from(o);
        }
        let poll_started = tokio::time::Instant::now();
        let request = api
            .http
            .post(api.url("getUpdates"))
            .timeout(Duration::from_secs(POLL_SECONDS + 15))
            .json(&body);
        let updates: Vec<Update> = match api.call::<Vec<Update>>("getUpdates", request).await {
            Ok(u) => {
                backoff.answered(&health);
                u
            }
            Err(e) => {
                tokio::time::sleep(backoff.failed(e, &health)).await;
                continue;
            }
        };
        // New: an update at or past the offset asked for. Updates the
        // server was already told to forget are not news.
        let news = updates
            .iter()
            .any(|u| offset.is_none_or(|o| u.update_id >= o));
        let next_poll = poll_started + idle.after(news);
        for update in updates {
            offset = Some(offset.map_or(update.update_id + 1, |o| o.max(update.update_id + 1)));
            let Some(m) = update.message else { continue };
            let chat = m.chat.id.to_string();
            let username = m.from.as_ref().and_then(|u| u.username.clone());
            let user_id = m.from.as_ref().map(|u| u.id.to_string());
            let also: Vec<&str> = username
                .iter()
                .chain(user_id.iter())
                .map(String::as_str)
                .collect();
            if !correspondents.accept(&chat, &also) {
                tracing::debug!(chat = m.chat.id, "a message from another chat; ignored");
                continue;
            }
            // Redelivered (after a restart of the server's view of us, say).
            let key = m.chat.id.wrapping_mul(1 << 20) ^ m.message_id;
            if !seen.insert(key) {
                continue;
            }
            let message = match (m.text, m.document) {
                (Some(text), _) => Message::Text(text),
                // Never fetched: bigger than any chunk pigeon sends.
                (None, Some(doc)) if doc.file_size.is_some_and(|n| n > MAX_DOWNLOAD as u64) => {
                    tracing::warn!("a document over 20 MB in the chat; not pigeon's, ignored");
                    continue;
                }
                (None, Some(doc)) => match fetch_document(&api, &doc.file_id).await {
                    Ok(bytes) => Message::Binary(bytes),
                    Err(e) => {
                        tracing::warn!("{e}");
                        continue;
                    }
                },
                _ => continue,
            };
            // Only a `*` transport needs to say who wrote: with a fixed peer,
            // replies keep one address (and one pace).
            let from = correspondents.is_any().then_some(chat);
            if tx.send(Received { from, message }).await.is_err() {
                return;
            }
        }
        tokio::time::sleep_until(next_poll).await;
    }
}

/// How long after the start of a poll the next may start: at once after
/// news, else a wait that grows with each answer in a row that brought
/// nothing new (the same updates again, or nothing, sooner than a long
/// poll would), from [`IDLE_POLL_FIRST`] to [`IDLE_POLL_MAX`].
#[derive(Debug, Default)]
struct IdlePace {
    /// The wait after the next answer without news (zero: the first).
    wait: Duration,
}

impl IdlePace {
    fn after(&mut self, news: bool) -> Duration {
        if news {
            self.wait = Duration::ZERO;
            return Duration::ZERO;
        }
        self.wait = (self.wait * 2).clamp(IDLE_POLL_FIRST, IDLE_POLL_MAX);
        self.wait
    }
}

/// `getFile`, then the file itself: over HTTP, or, from a local Bot API
/// server named with `local_files=`, from the path it answers with. Either
/// way no more than [`MAX_DOWNLOAD`] bytes are read.
async fn fetch_document(api: &Api, file_id: &str) -> Result<Vec<u8>, String> {
    let request = api
        .http
        .post(api.url("getFile"))
        .json(&serde_json::json!({ "file_id": file_id }));
    let file: File = api.call("getFile", request).await.map_err(|e| match e {
        CallError::RateLimited(d) => format!("telegram getFile: rate limited for {d:?}"),
        CallError::Permanent(m) | CallError::Transient(m) => m,
    })?;
    let path = file
        .file_path
        .ok_or("telegram getFile: no file_path (the file is gone)")?;
    if path.starts_with('/') {
        let Some(root) = api.local_files.clone() else {
            return Err(format!(
                "telegram getFile: the server answered with a path on this machine ({}), which pigeon reads only from a local Bot API server named with local_files=<its --dir> on the telegram URI; the document was skipped",
                local_files::shown(&path, &api.token)
            ));
        };
        let token = api.token.clone();
        return tokio::task::spawn_blocking(move || {
            local_files::read(&root, &path, MAX_DOWNLOAD, &token)
        })
        .await
        .map_err(|e| format!("telegram: reading a local Bot API file stopped: {e}"))?;
    }
    let url = format!("{}/file/bot{}/{path}", api.base, api.token.as_str());
    let response = api
        .http
        .get(url)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .map_err(|e| format!("telegram file download: {}", http::describe(e)))?;
    if !response.status().is_success() {
        return Err(format!(
            "telegram file download: HTTP {}",
            response.status()
        ));
    }
    // Capped as it streams, whatever Content-Length says.
    http::read_capped(response, MAX_DOWNLOAD)
        .await
        .map_err(|e| format!("telegram file download: {e}"))
}

#[cfg(test)]
mod tests;
