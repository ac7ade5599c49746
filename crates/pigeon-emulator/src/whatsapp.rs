//! A WhatsApp Cloud API (Graph) server on 127.0.0.1, written from Meta's
//! documentation, for business numbers that write to each other:
//!
//! - `POST /{version}/{phone_id}/messages` (text up to 4,096 characters, or a
//!   document by media id), answering `{"messaging_product","contacts",
//!   "messages":[{"id":"wamid…"}]}`; errors in the Graph envelope
//!   `{"error":{"message","type","code","error_subcode","fbtrace_id"}}`:
//!   190 for a bad token, 100 for bad parameters, 131056 over the pair rate
//!   (about one message every 6 s to one user), 130429 over throughput;
//! - `POST /{version}/{phone_id}/media` (multipart; documents of the listed
//!   types, up to 100 MB) → `{"id"}`; `GET /{version}/{media_id}` → a URL
//!   valid 5 minutes, fetched with the bearer token; an unknown or expired
//!   id is 400 with code 100, subcode 33;
//! - `GET /{version}/{phone_id}`: the number's details;
//! - webhooks: before the first delivery the `GET` handshake
//!   (`hub.mode=subscribe`, `hub.verify_token`, `hub.challenge` echoed),
//!   then `POST`s of `messages` changes (inbound messages, and `sent` or
//!   `failed` statuses of what a number sent) signed
//!   `X-Hub-Signature-256: sha256=HMAC-SHA256(app_secret, body)` over a body
//!   whose non-ASCII is escaped `\uXXXX`, as Meta's is; anything but a 200
//!   is retried with backoff; a message outside the 24-hour window is
//!   accepted, then fails in a status with 131047.
//!
//! For tests: every request and delivery is recorded (`GET
//! /_emulator/record`), every text and document kept for scanning, and
//! faults injected (`POST /_emulator/faults`): the next N calls of a method
//! fail, stalls, redelivery of confirmed webhooks, expired media, a closed
//! window.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub use crate::common::Faults;
use crate::common::{unix_ms, Bucket};
use crate::graph::{self, bad_param, graph_error, Failure, GraphEmulator};
use crate::webhook::{Subscriber, Webhooks};

pub const MAX_TEXT: usize = 4096;
pub const MAX_DOCUMENT: usize = 100 * 1000 * 1000;
/// How long a media URL works.
pub const MEDIA_URL_LIFETIME: Duration = Duration::from_secs(300);
/// The document types WhatsApp takes.
const DOCUMENT_TYPES: [&str; 8] = [
    "text/plain",
    "application/pdf",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
];

/// A business number the emulator knows, and where its webhook is.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct NumberSpec {
    pub phone_id: String,
    /// Its number as WhatsApp ids it (digits).
    pub wa_id: String,
    /// Its profile name as others see it (may be any Unicode).
    pub name: String,
    pub token: String,
    pub app_secret: String,
    pub verify_token: String,
    /// The webhook URL Meta calls (e.g. `http://127.0.0.1:8443/webhook`).
    pub webhook: String,
}

/// One request or webhook delivery, as the record keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub at_ms: u64,
    /// The calling number's phone id (a webhook's: the one called).
    pub number: String,
    /// `messages`, `media`, `media_lookup`, `media_download`, `phone`,
    /// `webhook_verify`, `webhook`.
    pub method: String,
    pub to: Option<String>,
    /// Characters of a text, bytes of a document.
    pub size: usize,
    pub status: u16,
    /// The Graph error code of a failure.
    pub code: Option<i64>,
    /// How long the sender should wait (6 s after a pair-rate error).
    pub retry_after_ms: Option<u64>,
}

struct Media {
    bytes: Arc<Vec<u8>>,
    mime: String,
    /// The number allowed to fetch it.
    owner: String,
    expired: bool,
}

struct Number {
    spec: NumberSpec,
    /// Pair-rate buckets by recipient.
    pairs: HashMap<String, Bucket>,
    throughput: Option<Bucket>,
}

struct Inner {
    started: Instant,
    numbers: Vec<Number>,
    media: HashMap<String, Media>,
    urls: HashMap<String, (String, Instant)>,
    record: Vec<Request>,
    /// Every text and document body sent, for scanning.
    bodies: Vec<Vec<u8>>,
    faults: Faults,
    /// Messages a second to one recipient, and the burst.
    pair_rate: (f64, f64),
    /// Messages a second one number may send (Cloud API's default: 80).
    throughput: f64,
    /// The 24-hour windows: false once a fault closed them.
    windows_open: bool,
    next_id: u64,
    hooks: Webhooks,
}

#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Mutex<Inner>>,
}

impl Emulator {
    pub fn new(numbers: &[NumberSpec]) -> Emulator {
        let started = Instant::now();
        let hooks = Webhooks::new(
            started,
            numbers
                .iter()
                .map(|n| Subscriber {
                    name: n.phone_id.clone(),
                    url: n.webhook.clone(),
                    app_secret: n.app_secret.clone(),
                    verify_token: n.verify_token.clone(),
                })
                .collect(),
        );
        Emulator {
            inner: Arc::new(Mutex::new(Inner {
                started,
                numbers: numbers
                    .iter()
                    .map(|spec| Number {
                        spec: spec.clone(),
                        pairs: HashMap::new(),
                        throughput: None,
                    })
                    .collect(),
                media: HashMap::new(),
                urls: HashMap::new(),
                record: vec![],
                bodies: vec![],
                faults: Faults::default(),
                pair_rate: (1.0 / 6.0, 1.0),
                throughput: 80.0,
                windows_open: true,
                next_id: 1,
                hooks,
            })),
        }
    }

    /// Allow `per_second` messages a second to one recipient, in bursts of
    /// `burst`, instead of WhatsApp's one every 6 s (to run tests quickly).
    pub fn with_pair_rate(self, per_second: f64, burst: f64) -> Emulator {
        self.lock().pair_rate = (per_second, burst.max(1.0));
        self
    }

    /// Allow `per_second` messages a second from one number instead of 80.
    pub fn with_throughput(self, per_second: f64) -> Emulator {
        self.lock().throughput = per_second.max(1.0);
        self
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{version}/{id}", get(lookup))
            .route("/{version}/{id}/messages", post(messages))
            .route("/{version}/{id}/media", post(upload))
            .route("/_media/{token}", get(download))
            .merge(graph::emulator_routes())
            .layer(axum::extract::DefaultBodyLimit::max(
                MAX_DOCUMENT + 1_000_000,
            ))
            .with_state(self.clone())
    }

    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Every request and webhook delivery, in time order.
    pub fn record(&self) -> Vec<Request> {
        let s = self.lock();
        graph::with_deliveries(
            &s.record,
            &s.hooks,
            |d| Request {
                at_ms: d.at_ms,
                number: d.name,
                method: d.method.to_string(),
                to: None,
                size: d.size,
                status: d.status,
                code: None,
                retry_after_ms: None,
            },
            |r| r.at_ms,
        )
    }

    /// Every text and document sent, in order.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.lock().bodies.clone()
    }

    /// Inject faults. `redeliver` posts the last N delivered webhooks of
    /// each number again; `expire_media` makes the next N media ids handed
    /// to recipients stale; a fault with method `window` closes every
    /// 24-hour window.
    pub fn inject(&self, faults: Faults) {
        let mut s = self.lock();
        s.hooks.redeliver(faults.redeliver);
        if faults.method == "window" {
            s.windows_open = false;
        }
        s.faults = faults;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    #[allow(clippy::too_many_arguments)]
    fn note(
        &mut self,
        number: &str,
        method: &str,
        to: Option<&str>,
        size: usize,
        status: u16,
        code: Option<i64>,
        retry_after_ms: Option<u64>,
    ) {
        self.record.push(Request {
            at_ms: self.started.elapsed().as_millis() as u64,
            number: number.to_string(),
            method: method.to_string(),
            to: to.map(str::to_string),
            size,
            status,
            code,
            retry_after_ms,
        });
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The number whose token this is.
    fn caller(&self, headers: &HeaderMap) -> Result<usize, Failure> {
        let Some(token) = graph::bearer(headers) else {
            return Err((
                StatusCode::UNAUTHORIZED,
                190,
                None,
                "An access token is required to request this resource.".into(),
            ));
        };
        self.numbers
            .iter()
            .position(|n| n.spec.token == token)
            .ok_or((
                StatusCode::UNAUTHORIZED,
                190,
                None,
                "Invalid OAuth access token - Cannot parse access token".into(),
            ))
    }

    /// Queue a `messages` change for number `to`'s webhook.
    fn queue(&mut self, to: usize, value: Value) {
        let n = &self.numbers[to];
        let mut change = json!({
            "messaging_product": "whatsapp",
            "metadata": {
                "display_phone_number": n.spec.wa_id,
                "phone_number_id": n.spec.phone_id,
            },
        });
        if let (Some(c), Some(extra)) = (change.as_object_mut(), value.as_object()) {
            c.extend(extra.clone());
        }
        let payload = json!({
            "object": "whatsapp_business_account",
            "entry": [{
                "id": format!("10{}", n.spec.phone_id),
                "changes": [{ "value": change, "field": "messages" }],
            }],
        });
        self.hooks.push(to, payload);
    }

    fn status(&mut self, sender: usize, wamid: &str, to: &str, failed: Option<(i64, &str)>) {
        let mut status = json!({
            "id": wamid,
            "status": if failed.is_some() { "failed" } else { "sent" },
            "timestamp": (unix_ms() / 1000).to_string(),
            "recipient_id": to,
        });
        if let Some((code, title)) = failed {
            status["errors"] = json!([{
                "code": code,
                "title": title,
                "message": title,
                "error_data": {"details": title},
            }]);
        }
        self.queue(sender, json!({ "statuses": [status] }));
    }
}

fn no_object(id: &str) -> Failure {
    graph::no_object("get", id)
}

impl GraphEmulator for Emulator {
    type Request = Request;

    fn faults<T>(&self, f: impl FnOnce(&mut Faults) -> T) -> T {
        f(&mut self.lock().faults)
    }

    fn elapsed_ms(&self) -> u64 {
        self.lock().started.elapsed().as_millis() as u64
    }

    fn record(&self) -> Vec<Request> {
        Emulator::record(self)
    }

    fn inject(&self, faults: Faults) {
        Emulator::inject(self, faults)
    }

    /// The Cloud API's codes, or the one the fault names (say 131056,
    /// the pair rate).
    fn injected(status: u16, asked: Option<i64>) -> (i64, &'static str) {
        let (usual, message) = match status {
            429 => (130429, "Rate limit hit"),
            401 => (
                190,
                "Error validating access token: The session has been invalidated",
            ),
            500..=599 => (131000, "Something went wrong"),
            _ => (100, "Invalid parameter"),
        };
        let code = asked.unwrap_or(usual);
        let message = match code {
            131056 => "(#131056) (Business Account, Consumer Account) pair rate limit hit",
            _ => message,
        };
        (code, message)
    }
}

async fn messages(
    State(emu): State<Emulator>,
    Path((_version, phone_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let injected = graph::admit(&emu, "messages").await;
    let mut s = emu.lock();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let to = request["to"].as_str().unwrap_or("").to_string();
    let size = request["text"]["body"]
        .as_str()
        .map_or(0, crate::common::text_length);
    let outcome = match injected {
        Some(f) => Err(f),
        None => send(&mut s, &phone_id, &headers, &request),
    };
    let (response, status, code) = graph::answer(outcome);
    let retry = (code == Some(131056)).then_some(6000);
    let caller = s
        .caller(&headers)
        .map(|i| s.numbers[i].spec.phone_id.clone())
        .unwrap_or_default();
    s.note(&caller, "messages", Some(&to), size, status, code, retry);
    response
}

fn send(s: &mut Inner, phone_id: &str, headers: &HeaderMap, req: &Value) -> Result<Value, Failure> {
    let caller = s.caller(headers)?;
    if s.numbers[caller].spec.phone_id != phone_id {
        return Err(no_object(phone_id));
    }
    if req["messaging_product"] != "whatsapp" {
        return Err(bad_param(
            "(#100) The parameter messaging_product is required.",
        ));
    }
    let to = req["to"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad_param("(#100) The parameter to is required."))?
        .to_string();
    let kind = req["type"].as_str().unwrap_or("text");
    let content = match kind {
        "text" => {
            let text = req["text"]["body"]
                .as_str()
                .ok_or_else(|| bad_param("(#100) The parameter text['body'] is required."))?;
            if crate::common::text_length(text) > MAX_TEXT {
                return Err(bad_param(
                    "(#100) Param text['body'] must be at most 4096 characters long.",
                ));
            }
            s.bodies.push(text.as_bytes().to_vec());
            Ok(text.to_string())
        }
        "document" => {
            let id = req["document"]["id"]
                .as_str()
                .ok_or_else(|| bad_param("(#100) The parameter document['id'] is required."))?;
            match s.media.get(id) {
                Some(m) if m.owner == phone_id && !m.expired => Err(id.to_string()),
                _ => return Err(no_object(id)),
            }
        }
        other => {
            return Err(bad_param(format!(
                "(#100) Unsupported message type {other}"
            )))
        }
    };
    // Throughput (80 messages a second per number), then the pair rate.
    let (pair_rate, pair_burst) = s.pair_rate;
    let throughput = s.throughput;
    let number = &mut s.numbers[caller];
    if number
        .throughput
        .get_or_insert_with(|| Bucket::full(throughput))
        .take(throughput, throughput)
        .is_err()
    {
        return Err((
            StatusCode::BAD_REQUEST,
            130429,
            None,
            "(#130429) Rate limit hit: Cloud API message throughput has been reached.".into(),
        ));
    }
    if number
        .pairs
        .entry(to.clone())
        .or_insert_with(|| Bucket::full(pair_burst))
        .take(pair_burst, pair_rate)
        .is_err()
    {
        return Err((
            StatusCode::BAD_REQUEST,
            131056,
            None,
            "(#131056) (Business Account, Consumer Account) pair rate limit hit".into(),
        ));
    }
    let wamid = format!("wamid.HBgL{:020}", s.id());
    let sender_wa = s.numbers[caller].spec.wa_id.clone();
    let sender_name = s.numbers[caller].spec.name.clone();
    let recipient = s.numbers.iter().position(|n| n.spec.wa_id == to);
    if !s.windows_open {
        s.status(caller, &wamid, &to, Some((131047, "Re-engagement message")));
    } else if let Some(r) = recipient {
        let mut message = json!({
            "from": sender_wa,
            "id": wamid,
            "timestamp": (unix_ms() / 1000).to_string(),
        });
        match content {
            Ok(text) => {
                message["type"] = json!("text");
                message["text"] = json!({ "body": text });
            }
            Err(media_id) => {
                // The recipient gets a media id of its own for the document.
                let (bytes, mime) = {
                    let m = &s.media[&media_id];
                    (m.bytes.clone(), m.mime.clone())
                };
                let theirs = format!("{}", 7_000_000_000 + s.id());
                let expired = s.faults.expire_media > 0;
                if expired {
                    s.faults.expire_media -= 1;
                }
                let sha = base64_std(&Sha256::digest(&*bytes));
                s.media.insert(
                    theirs.clone(),
                    Media {
                        bytes,
                        mime: mime.clone(),
                        owner: s.numbers[r].spec.phone_id.clone(),
                        expired,
                    },
                );
                message["type"] = json!("document");
                message["document"] = json!({
                    "filename": req["document"]["filename"].as_str().unwrap_or("file"),
                    "mime_type": mime,
                    "sha256": sha,
                    "id": theirs,
                });
            }
        }
        s.queue(
            r,
            json!({
                "contacts": [{ "profile": { "name": sender_name }, "wa_id": sender_wa }],
                "messages": [message],
            }),
        );
        s.status(caller, &wamid, &to, None);
    } else {
        s.status(caller, &wamid, &to, Some((131026, "Message undeliverable")));
    }
    Ok(json!({
        "messaging_product": "whatsapp",
        "contacts": [{ "input": to, "wa_id": to }],
        "messages": [{ "id": wamid }],
    }))
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn upload(
    State(emu): State<Emulator>,
    Path((_version, phone_id)): Path<(String, String)>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let injected = graph::admit(&emu, "media").await;
    let mut product = None;
    let mut declared = None;
    let mut file: Option<(Vec<u8>, Option<String>)> = None;
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_string();
                let kind = field.content_type().map(str::to_string);
                let Ok(bytes) = field.bytes().await else {
                    return graph_error(bad_param("(#100) broken multipart form"));
                };
                match name.as_str() {
                    "messaging_product" => {
                        product = Some(String::from_utf8_lossy(&bytes).into_owned())
                    }
                    "type" => declared = Some(String::from_utf8_lossy(&bytes).into_owned()),
                    "file" => file = Some((bytes.to_vec(), kind)),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(_) => {
                return graph_error((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    131052,
                    None,
                    "Media upload error: file too large".into(),
                ))
            }
        }
    }
    let mut s = emu.lock();
    let size = file.as_ref().map_or(0, |f| f.0.len());
    let outcome = match injected {
        Some(f) => Err(f),
        None => (|| {
            let caller = s.caller(&headers)?;
            if s.numbers[caller].spec.phone_id != phone_id {
                return Err(no_object(&phone_id));
            }
            if product.as_deref() != Some("whatsapp") {
                return Err(bad_param(
                    "(#100) The parameter messaging_product is required.",
                ));
            }
            let (bytes, part_type) =
                file.ok_or_else(|| bad_param("(#100) The parameter file is required."))?;
            let mime = declared.or(part_type).unwrap_or_default();
            if !DOCUMENT_TYPES.contains(&mime.as_str()) {
                return Err(bad_param(format!(
                    "(#100) Param file must be a file with one of the following types: {}. Received file of type '{mime}'.",
                    DOCUMENT_TYPES.join(", ")
                )));
            }
            if bytes.len() > MAX_DOCUMENT {
                return Err((
                    StatusCode::BAD_REQUEST,
                    131052,
                    None,
                    "Media upload error: file too large".into(),
                ));
            }
            s.bodies.push(bytes.clone());
            let id = format!("{}", 5_000_000_000 + s.id());
            s.media.insert(
                id.clone(),
                Media {
                    bytes: Arc::new(bytes),
                    mime,
                    owner: phone_id.clone(),
                    expired: false,
                },
            );
            Ok(json!({ "id": id }))
        })(),
    };
    let (response, status, code) = graph::answer(outcome);
    s.note(&phone_id, "media", None, size, status, code, None);
    response
}

/// `GET /{version}/{id}`: a phone number's details, or a media URL.
async fn lookup(
    State(emu): State<Emulator>,
    Path((_version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let method = if emu.lock().numbers.iter().any(|n| n.spec.phone_id == id) {
        "phone"
    } else {
        "media_lookup"
    };
    let injected = graph::admit(&emu, method).await;
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let mut s = emu.lock();
    let outcome = match injected {
        Some(f) => Err(f),
        None => (|| {
            let caller = s.caller(&headers)?;
            let me = s.numbers[caller].spec.clone();
            if method == "phone" {
                if me.phone_id != id {
                    return Err(no_object(&id));
                }
                return Ok(json!({
                    "verified_name": me.name,
                    "display_phone_number": format!("+{}", me.wa_id),
                    "id": me.phone_id,
                    "quality_rating": "GREEN",
                }));
            }
            let m = s.media.get(&id).ok_or_else(|| no_object(&id))?;
            if m.owner != me.phone_id || m.expired {
                return Err(no_object(&id));
            }
            let (mime, size, sha) = (
                m.mime.clone(),
                m.bytes.len(),
                hex::encode(Sha256::digest(&*m.bytes)),
            );
            let token = format!("{:032x}", rand::random::<u128>());
            s.urls.insert(token.clone(), (id.clone(), Instant::now()));
            Ok(json!({
                "messaging_product": "whatsapp",
                "url": format!("http://{host}/_media/{token}"),
                "mime_type": mime,
                "sha256": sha,
                "file_size": size,
                "id": id,
            }))
        })(),
    };
    let caller = s
        .caller(&headers)
        .map(|i| s.numbers[i].spec.phone_id.clone())
        .unwrap_or_default();
    let (response, status, code) = graph::answer(outcome);
    s.note(&caller, method, None, 0, status, code, None);
    response
}

async fn download(
    State(emu): State<Emulator>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let injected = graph::admit(&emu, "media_download").await;
    let mut s = emu.lock();
    let caller = s.caller(&headers).ok();
    let found = s
        .urls
        .get(&token)
        .filter(|(_, at)| at.elapsed() < MEDIA_URL_LIFETIME)
        .and_then(|(id, _)| s.media.get(id))
        .filter(|m| caller.is_some_and(|c| s.numbers[c].spec.phone_id == m.owner))
        .map(|m| (m.bytes.clone(), m.mime.clone()));
    let number = caller.map_or(String::new(), |c| s.numbers[c].spec.phone_id.clone());
    let (response, status, size) = match (injected, found) {
        (Some(f), _) => {
            let st = f.0.as_u16();
            (graph_error(f), st, 0)
        }
        (None, Some((bytes, mime))) => {
            let n = bytes.len();
            (
                ([(axum::http::header::CONTENT_TYPE, mime)], bytes.to_vec()).into_response(),
                200,
                n,
            )
        }
        // Without the token, or after 5 minutes: refused, as Meta does.
        (None, None) => (
            (StatusCode::NOT_FOUND, "URL signature expired").into_response(),
            404,
            0,
        ),
    };
    s.note(&number, "media_download", None, size, status, None, None);
    response
}
