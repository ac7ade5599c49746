//! A Telegram Bot API server on 127.0.0.1, written from the Bot API's
//! documentation: the `{"ok":…}` envelope and its error codes, the size
//! limits (4,096 characters a message, 50 MB up, 20 MB through `getFile`),
//! about one message a second per chat (then 429 with `retry_after`),
//! `getUpdates` long polling where an update stays until a later `offset`
//! confirms it and a second poller gets 409, and bot-to-bot mode: a bot
//! writes to another bot's `@username` and the other bot receives it.
//!
//! For tests: every request is recorded (`GET /_emulator/record`), and
//! faults are injected deterministically (`POST /_emulator/faults`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub const MAX_TEXT: usize = 4096;
pub const MAX_UPLOAD: usize = 50 * 1000 * 1000;
pub const MAX_DOWNLOAD: usize = 20 * 1000 * 1000;
/// Messages a bot may send to one chat in a burst, refilled one a second.
const BURST: f64 = 3.0;

/// A bot the emulator knows: its token and `@username`.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BotSpec {
    pub token: String,
    pub username: String,
}

/// One request, as the record keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub at_ms: u64,
    pub bot: String,
    pub method: String,
    pub chat: Option<String>,
    /// Characters of a text (UTF-16 units), bytes of a document.
    pub size: usize,
    pub status: u16,
    /// A 429's `retry_after`, in ms from `at_ms`.
    pub retry_after_ms: Option<u64>,
}

pub use crate::common::Faults;
use crate::common::{text_length, Bucket};

struct Bot {
    id: i64,
    username: String,
    queue: VecDeque<Value>,
    /// Confirmed updates kept for redelivery faults.
    confirmed: VecDeque<Value>,
    /// The poll in progress (its generation), for 409s.
    polling: u64,
}

struct Inner {
    started: Instant,
    bots: HashMap<String, Bot>,
    next_update: i64,
    next_message: i64,
    files: HashMap<String, (String, Vec<u8>)>,
    /// Every text and document sent, for scanning.
    bodies: Vec<Vec<u8>>,
    buckets: HashMap<(i64, i64), Bucket>,
    record: Vec<Request>,
    faults: Faults,
    poll_generation: u64,
    /// Messages a second a bot may send to one chat.
    rate: f64,
}

#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Mutex<Inner>>,
    news: Arc<tokio::sync::Notify>,
}

impl Emulator {
    pub fn new(bots: &[BotSpec]) -> Emulator {
        let mut map = HashMap::new();
        for (i, b) in bots.iter().enumerate() {
            map.insert(b.token.clone(), new_bot(1_000_000 + i as i64, &b.username));
        }
        Emulator {
            inner: Arc::new(Mutex::new(Inner {
                started: Instant::now(),
                bots: map,
                next_update: 100_000,
                next_message: 1,
                files: HashMap::new(),
                bodies: vec![],
                buckets: HashMap::new(),
                record: vec![],
                faults: Faults::default(),
                poll_generation: 0,
                rate: 1.0,
            })),
            news: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Allow `per_second` messages a second per chat instead of Telegram's
    /// one (to run tests quickly; the burst stays at three).
    pub fn with_rate(self, per_second: f64) -> Emulator {
        self.lock().rate = per_second;
        self
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/bot{token}/{method}", post(api_post).get(api_get))
            .route("/file/bot{token}/{*path}", get(file))
            .route("/_emulator/record", get(record))
            .route("/_emulator/clock", get(clock))
            .route("/_emulator/faults", post(set_faults))
            .route("/_emulator/bots", post(add_bot))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_UPLOAD + 1_000_000))
            .with_state(self.clone())
    }

    /// Serve on `listener` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    pub fn record(&self) -> Vec<Request> {
        self.lock().record.clone()
    }

    /// Every text and document sent, in order.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.lock().bodies.clone()
    }

    /// Another bot, from now on; its id.
    pub fn add_bot(&self, b: BotSpec) -> i64 {
        let mut s = self.lock();
        let id = 1_000_000 + s.bots.len() as i64;
        s.bots.insert(b.token.clone(), new_bot(id, &b.username));
        id
    }

    pub fn inject(&self, faults: Faults) {
        let mut s = self.lock();
        redeliver(&mut s, faults.redeliver);
        s.faults = faults;
        drop(s);
        self.news.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Keep one request in the record.
    fn note(
        &mut self,
        bot: String,
        method: &str,
        chat: Option<String>,
        size: usize,
        status: u16,
        retry_after_ms: Option<u64>,
    ) {
        let at_ms = self.started.elapsed().as_millis() as u64;
        self.record.push(Request {
            at_ms,
            bot,
            method: method.to_string(),
            chat,
            size,
            status,
            retry_after_ms,
        });
    }
}

fn new_bot(id: i64, username: &str) -> Bot {
    Bot {
        id,
        username: username.trim_start_matches('@').to_string(),
        queue: VecDeque::new(),
        confirmed: VecDeque::new(),
        polling: 0,
    }
}

fn redeliver(s: &mut Inner, n: usize) {
    for bot in s.bots.values_mut() {
        let k = bot.confirmed.len().min(n);
        let again: Vec<Value> = bot.confirmed.iter().rev().take(k).rev().cloned().collect();
        for u in again.into_iter().rev() {
            bot.queue.push_front(u);
        }
    }
}

fn ok(result: Value) -> Response {
    Json(json!({ "ok": true, "result": result })).into_response()
}

fn fail(code: u16, description: &str, retry_after: Option<u64>) -> Response {
    let mut body = json!({ "ok": false, "error_code": code, "description": description });
    if let Some(s) = retry_after {
        body["parameters"] = json!({ "retry_after": s });
    }
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(body)).into_response()
}

/// A method's parameters, from the query string, a JSON or form body, or
/// a multipart form (whose file goes in `file`).
#[derive(Default)]
struct Params {
    fields: HashMap<String, Value>,
    file: Option<Vec<u8>>,
}

impl Params {
    fn str(&self, key: &str) -> Option<String> {
        match self.fields.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            other => Some(other.to_string()),
        }
    }

    fn int(&self, key: &str) -> Option<i64> {
        self.str(key)?.parse().ok()
    }
}

async fn api_get(
    State(emu): State<Emulator>,
    Path((token, method)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut p = Params::default();
    for (k, v) in query {
        p.fields.insert(k, Value::String(v));
    }
    call(emu, token, method, p).await
}

async fn api_post(
    State(emu): State<Emulator>,
    Path((token, method)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    req: axum::extract::Request,
) -> Response {
    use axum::extract::FromRequest;
    let mut p = Params::default();
    for (k, v) in query {
        p.fields.insert(k, Value::String(v));
    }
    let kind = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if kind.starts_with("multipart/form-data") {
        let Ok(mut form) = Multipart::from_request(req, &()).await else {
            return fail(400, "Bad Request: broken multipart form", None);
        };
        loop {
            match form.next_field().await {
                Ok(Some(field)) => {
                    let name = field.name().unwrap_or("").to_string();
                    let is_file = field.file_name().is_some();
                    let Ok(bytes) = field.bytes().await else {
                        return fail(400, "Bad Request: broken multipart form", None);
                    };
                    if is_file {
                        p.file = Some(bytes.to_vec());
                    } else {
                        p.fields.insert(
                            name,
                            Value::String(String::from_utf8_lossy(&bytes).into_owned()),
                        );
                    }
                }
                Ok(None) => break,
                Err(_) => return fail(413, "Request Entity Too Large", None),
            }
        }
        return call(emu, token, method, p).await;
    }
    let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_UPLOAD + 1_000_000).await else {
        return fail(413, "Request Entity Too Large", None);
    };
    if kind.starts_with("application/json") {
        match serde_json::from_slice::<HashMap<String, Value>>(&body) {
            Ok(map) => p.fields.extend(map),
            Err(_) => return fail(400, "Bad Request: can't parse JSON object", None),
        }
    } else if kind.starts_with("application/x-www-form-urlencoded") {
        for pair in String::from_utf8_lossy(&body).split('&') {
            if let Some((k, v)) = pair.split_once('=') {
                p.fields.insert(k.to_string(), Value::String(v.to_string()));
            }
        }
    }
    call(emu, token, method, p).await
}

async fn call(emu: Emulator, token: String, method: String, p: Params) -> Response {
    let stall = emu.lock().faults.take_stall();
    if let Some(d) = stall {
        tokio::time::sleep(d).await;
    }
    let answered = {
        let mut s = emu.lock();
        answer(&mut s, &token, &method, &p)
    };
    match answered {
        Some(response) => {
            emu.news.notify_waiters();
            response
        }
        None => get_updates(emu, token, p).await,
    }
}

/// Answer a call at once, or `None` for a long poll (which waits).
fn answer(s: &mut Inner, token: &str, method: &str, p: &Params) -> Option<Response> {
    let Some(bot_name) = s.bots.get(token).map(|b| b.username.clone()) else {
        return Some(fail(401, "Unauthorized", None));
    };
    let chat = p.str("chat_id");
    let size = p
        .str("text")
        .map(|t| text_length(&t))
        .or(p.file.as_ref().map(Vec::len))
        .unwrap_or(0);
    // An injected fault answers first.
    if let Some((status, retry_after)) = s.faults.take_failure(method) {
        let retry = retry_after.unwrap_or(0);
        s.note(
            bot_name,
            method,
            chat,
            size,
            status,
            retry_after.map(|r| r * 1000),
        );
        let text = match status {
            429 => format!("Too Many Requests: retry after {retry}"),
            500..=599 => "Internal Server Error".to_string(),
            401 => "Unauthorized".to_string(),
            _ => "Bad Request: injected".to_string(),
        };
        return Some(fail(status, &text, retry_after));
    }
    if method == "getUpdates" {
        return None;
    }
    let outcome = match method {
        "getMe" => {
            let b = &s.bots[token];
            Ok(
                json!({"id": b.id, "is_bot": true, "first_name": b.username, "username": b.username}),
            )
        }
        "deleteWebhook" => Ok(json!(true)),
        "sendMessage" | "sendDocument" => send(s, token, method, p),
        "getFile" => get_file(s, p),
        _ => Err((404, "Not Found".to_string(), None)),
    };
    let (response, status, retry) = match outcome {
        Ok(v) => (ok(v), 200, None),
        Err((code, text, retry)) => (fail(code, &text, retry), code, retry),
    };
    s.note(
        bot_name,
        method,
        chat,
        size,
        status,
        retry.map(|r| r * 1000),
    );
    Some(response)
}

type Failure = (u16, String, Option<u64>);

fn send(s: &mut Inner, token: &str, method: &str, p: &Params) -> Result<Value, Failure> {
    let bad = |t: &str| (400, format!("Bad Request: {t}"), None);
    let chat = p.str("chat_id").ok_or_else(|| bad("chat_id is empty"))?;
    let from = &s.bots[token];
    let (from_id, from_name) = (from.id, from.username.clone());
    let target = s
        .bots
        .iter()
        .find(|(_, b)| {
            chat.trim_start_matches('@')
                .eq_ignore_ascii_case(&b.username)
                && chat.starts_with('@')
                || chat == b.id.to_string()
        })
        .map(|(t, b)| (t.clone(), b.id))
        .ok_or_else(|| bad("chat not found"))?;
    // About one message a second per chat, with a small burst.
    let rate = s.rate;
    let bucket = s
        .buckets
        .entry((from_id, target.1))
        .or_insert_with(|| Bucket::full(BURST));
    if let Err(wait) = bucket.take(BURST, rate) {
        return Err((
            429,
            format!("Too Many Requests: retry after {wait}"),
            Some(wait),
        ));
    }
    let message_id = s.next_message;
    s.next_message += 1;
    let date = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut message = json!({
        "message_id": message_id,
        "date": date,
        "chat": {"id": from_id, "type": "private", "username": from_name, "first_name": from_name},
        "from": {"id": from_id, "is_bot": true, "first_name": from_name, "username": from_name},
    });
    if method == "sendMessage" {
        let text = p.str("text").ok_or_else(|| bad("message text is empty"))?;
        if text.is_empty() {
            return Err(bad("message text is empty"));
        }
        if text_length(&text) > MAX_TEXT {
            return Err(bad("message is too long"));
        }
        s.bodies.push(text.as_bytes().to_vec());
        message["text"] = json!(text);
    } else {
        let data = p
            .file
            .clone()
            .ok_or_else(|| bad("there is no document in the request"))?;
        if data.len() > MAX_UPLOAD {
            return Err((413, "Request Entity Too Large".into(), None));
        }
        let file_id = format!("BQAC{:016x}", rand::random::<u64>());
        let path = format!("documents/file_{message_id}.bin");
        message["document"] = json!({
            "file_id": file_id,
            "file_unique_id": format!("AgAD{message_id}"),
            "file_name": "pigeon.bin",
            "mime_type": "application/octet-stream",
            "file_size": data.len(),
        });
        s.bodies.push(data.clone());
        s.files.insert(file_id, (path, data));
    }
    let update_id = s.next_update;
    s.next_update += 1;
    let update = json!({"update_id": update_id, "message": message.clone()});
    if let Some(b) = s.bots.get_mut(&target.0) {
        b.queue.push_back(update);
    }
    // What the sender gets back: the message as it sees it (to the chat).
    message["chat"] = json!({"id": target.1, "type": "private"});
    Ok(message)
}

fn get_file(s: &Inner, p: &Params) -> Result<Value, Failure> {
    let id = p
        .str("file_id")
        .ok_or((400, "Bad Request: file_id is empty".to_string(), None))?;
    let (path, data) =
        s.files
            .get(&id)
            .ok_or((400, "Bad Request: invalid file_id".to_string(), None))?;
    if data.len() > MAX_DOWNLOAD {
        return Err((400, "Bad Request: file is too big".into(), None));
    }
    Ok(json!({"file_id": id, "file_unique_id": "AgAD", "file_size": data.len(), "file_path": path}))
}

async fn get_updates(emu: Emulator, token: String, p: Params) -> Response {
    let timeout = Duration::from_secs(p.int("timeout").unwrap_or(0).clamp(0, 50) as u64);
    let limit = p.int("limit").unwrap_or(100).clamp(1, 100) as usize;
    let offset = p.int("offset");
    let deadline = Instant::now() + timeout;
    let generation = {
        let mut s = emu.lock();
        s.poll_generation += 1;
        let g = s.poll_generation;
        let b = s.bots.get_mut(&token).expect("token checked");
        // A newer poll ends an older one with 409, as the server does.
        b.polling = g;
        if let Some(o) = offset {
            while b
                .queue
                .front()
                .is_some_and(|u| u["update_id"].as_i64().unwrap_or(0) < o)
            {
                if let Some(u) = b.queue.pop_front() {
                    b.confirmed.push_back(u);
                    if b.confirmed.len() > 256 {
                        b.confirmed.pop_front();
                    }
                }
            }
        }
        g
    };
    emu.news.notify_waiters();
    loop {
        let notified = emu.news.notified();
        {
            let mut s = emu.lock();
            let b = s.bots.get_mut(&token).expect("token checked");
            let name = b.username.clone();
            if b.polling != generation {
                s.note(name, "getUpdates", None, 0, 409, None);
                return fail(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                    None,
                );
            }
            if !b.queue.is_empty() || Instant::now() >= deadline {
                let out: Vec<Value> = b.queue.iter().take(limit).cloned().collect();
                s.note(name, "getUpdates", None, out.len(), 200, None);
                return ok(Value::Array(out));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(left, notified).await;
    }
}

async fn file(
    State(emu): State<Emulator>,
    Path((token, path)): Path<(String, String)>,
) -> Response {
    let s = emu.lock();
    if !s.bots.contains_key(&token) {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    }
    match s.files.values().find(|(p, _)| *p == path) {
        Some((_, data)) => data.clone().into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

/// Milliseconds since the emulator started: the clock of the record.
async fn clock(State(emu): State<Emulator>) -> Json<Value> {
    Json(json!({ "at_ms": emu.lock().started.elapsed().as_millis() as u64 }))
}

async fn record(State(emu): State<Emulator>) -> Json<Vec<Request>> {
    Json(emu.record())
}

async fn set_faults(State(emu): State<Emulator>, Json(f): Json<Faults>) -> Json<Value> {
    emu.inject(f);
    Json(json!({"ok": true}))
}

async fn add_bot(State(emu): State<Emulator>, Json(b): Json<BotSpec>) -> Json<Value> {
    let id = emu.add_bot(b);
    Json(json!({"ok": true, "id": id}))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 29: Telegram's 4096 "characters" are UTF-16 units, so 4096
    /// ideographs fit and 2049 emoji (4098 units) do not.
    #[tokio::test]
    async fn send_message_counts_the_limit_in_utf16_units() {
        let bots = [
            BotSpec {
                token: "1:a".into(),
                username: "a_bot".into(),
            },
            BotSpec {
                token: "2:b".into(),
                username: "b_bot".into(),
            },
        ];
        let emu = Emulator::new(&bots).with_rate(1000.0);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(emu.clone().serve(listener));
        let http = reqwest::Client::new();
        for (text, accepted) in [
            ("鸽".repeat(MAX_TEXT), true),
            ("鸽".repeat(MAX_TEXT + 1), false),
            ("🕊".repeat(MAX_TEXT / 2), true),
            ("🕊".repeat(MAX_TEXT / 2 + 1), false),
        ] {
            let reply = http
                .post(format!("http://{addr}/bot1:a/sendMessage"))
                .json(&json!({"chat_id": "@b_bot", "text": text}))
                .send()
                .await
                .unwrap();
            let status = reply.status().as_u16();
            let units = text.encode_utf16().count();
            assert_eq!(status == 200, accepted, "{units} units: {status}");
            if !accepted {
                let body: Value = reply.json().await.unwrap();
                assert_eq!(body["description"], "Bad Request: message is too long");
            }
        }
        let sizes: Vec<usize> = emu.record().iter().map(|r| r.size).collect();
        assert_eq!(sizes, [4096, 4097, 4096, 4098]);
    }
}
