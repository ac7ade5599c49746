//! A Messenger Platform server on 127.0.0.1, written from Meta's
//! documentation: Pages and the people who write to them.
//!
//! - `POST /{version}/{page_id}/messages` (or `/me/messages`), with the Page
//!   token as `access_token` or a bearer: text up to 2,000 characters, or a
//!   file attachment (multipart `filedata`, up to 25 MB), answering
//!   `{"recipient_id","message_id"}`; only within 24 hours of the person's
//!   last message (else code 10, subcode 2018278); errors in the Graph
//!   envelope (190 bad token, 100 bad parameter, 613 over the rate, 551
//!   the person is unavailable);
//! - `GET /{version}/{page_id}`: the Page's name and id;
//! - webhooks: the `GET` handshake, then `POST`s of `page` entries with
//!   `messaging` events, signed `X-Hub-Signature-256` over bytes with
//!   non-ASCII escaped, retried until answered 200; attachments as URLs
//!   fetched without a token.
//!
//! There is no official API for the person's side; for tests and
//! rehearsal the person is played through [`Emulator::person_send`] and
//! [`Emulator::person_take`] (and `POST /_emulator/person/{psid}/send`,
//! `GET /_emulator/person/{psid}/inbox`), as someone at the Messenger app
//! would.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use crate::common::Faults;
use crate::common::{unix_ms, Bucket};
use crate::graph::{self, bad_param, Failure, GraphEmulator};
use crate::webhook::{Subscriber, Webhooks};

pub const MAX_TEXT: usize = 2000;
pub const MAX_ATTACHMENT: usize = 25 * 1000 * 1000;
/// The standard messaging window.
pub const WINDOW: Duration = Duration::from_secs(24 * 3600);

/// A Page the emulator knows, and where its webhook is.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct PageSpec {
    pub page_id: String,
    pub name: String,
    pub token: String,
    pub app_secret: String,
    pub verify_token: String,
    pub webhook: String,
}

/// A person, by the page-scoped id the Page knows them by.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct PersonSpec {
    pub psid: String,
    /// The Page they write to.
    pub page_id: String,
}

/// What a person receives, or sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PersonMessage {
    Text(String),
    File(Vec<u8>),
}

/// One request or webhook delivery, as the record keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub at_ms: u64,
    /// The Page.
    pub page: String,
    /// `messages`, `page`, `attachment`, `webhook_verify`, `webhook`.
    pub method: String,
    pub to: Option<String>,
    pub size: usize,
    pub status: u16,
    pub code: Option<i64>,
    pub retry_after_ms: Option<u64>,
}

struct Person {
    spec: PersonSpec,
    inbox: VecDeque<PersonMessage>,
    /// When they last wrote to the Page.
    last_wrote: Option<Instant>,
    bucket: Option<Bucket>,
}

struct Inner {
    started: Instant,
    pages: Vec<PageSpec>,
    people: Vec<Person>,
    files: HashMap<String, (Vec<u8>, bool)>,
    record: Vec<Request>,
    bodies: Vec<Vec<u8>>,
    faults: Faults,
    /// Messages a second to one person, and the burst.
    rate: (f64, f64),
    next_id: u64,
    hooks: Webhooks,
}

#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Mutex<Inner>>,
}

impl Emulator {
    pub fn new(pages: &[PageSpec], people: &[PersonSpec]) -> Emulator {
        let started = Instant::now();
        let hooks = Webhooks::new(
            started,
            pages
                .iter()
                .map(|p| Subscriber {
                    name: p.page_id.clone(),
                    url: p.webhook.clone(),
                    app_secret: p.app_secret.clone(),
                    verify_token: p.verify_token.clone(),
                })
                .collect(),
        );
        Emulator {
            inner: Arc::new(Mutex::new(Inner {
                started,
                pages: pages.to_vec(),
                people: people
                    .iter()
                    .map(|p| Person {
                        spec: p.clone(),
                        inbox: VecDeque::new(),
                        last_wrote: None,
                        bucket: None,
                    })
                    .collect(),
                files: HashMap::new(),
                record: vec![],
                bodies: vec![],
                faults: Faults::default(),
                rate: (1.0, 3.0),
                next_id: 1,
                hooks,
            })),
        }
    }

    /// Messages a second a Page may send to one person, and the burst.
    pub fn with_rate(self, per_second: f64, burst: f64) -> Emulator {
        self.lock().rate = (per_second, burst.max(1.0));
        self
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{version}/{id}", get(page))
            .route("/{version}/{id}/messages", post(messages))
            .route("/_cdn/{file}", get(attachment))
            .merge(graph::emulator_routes())
            .route("/_emulator/person/{psid}/send", post(person_post))
            .route("/_emulator/person/{psid}/inbox", get(person_inbox))
            .layer(axum::extract::DefaultBodyLimit::max(
                MAX_ATTACHMENT + 1_000_000,
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
                page: d.name,
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

    /// Every text and attachment a Page or a person sent, in order.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.lock().bodies.clone()
    }

    /// `redeliver` posts each Page's last N delivered webhooks again;
    /// `expire_media` makes the next N attachment URLs dead; a fault with
    /// method `window` ends every 24-hour window.
    pub fn inject(&self, faults: Faults) {
        let mut s = self.lock();
        s.hooks.redeliver(faults.redeliver);
        if faults.method == "window" {
            for p in &mut s.people {
                p.last_wrote = None;
            }
        }
        s.faults = faults;
    }

    /// The person `psid` writes to their Page (opening its 24-hour window).
    /// `base` is the emulator's own URL, for attachment links. False when
    /// no such person is known.
    pub fn person_send(&self, psid: &str, message: PersonMessage, base: &str) -> bool {
        let mut s = self.lock();
        let Some(i) = s.people.iter().position(|p| p.spec.psid == psid) else {
            return false;
        };
        s.people[i].last_wrote = Some(Instant::now());
        let page_id = s.people[i].spec.page_id.clone();
        let Some(page) = s.pages.iter().position(|p| p.page_id == page_id) else {
            return false;
        };
        let mid = format!("m_{:024}", s.id());
        let content = match message {
            PersonMessage::Text(t) => {
                s.bodies.push(t.as_bytes().to_vec());
                json!({ "mid": mid, "text": t })
            }
            PersonMessage::File(bytes) => {
                s.bodies.push(bytes.clone());
                let file = format!("{:032x}", rand::random::<u128>());
                s.files.insert(file.clone(), (bytes, false));
                json!({ "mid": mid, "attachments": [{
                    "type": "file",
                    "payload": { "url": format!("{base}/_cdn/{file}") },
                }]})
            }
        };
        let ms = unix_ms();
        let payload = json!({
            "object": "page",
            "entry": [{
                "id": page_id,
                "time": ms,
                "messaging": [{
                    "sender": { "id": psid },
                    "recipient": { "id": page_id },
                    "timestamp": ms,
                    "message": content,
                }],
            }],
        });
        s.hooks.push(page, payload);
        true
    }

    /// What the Pages sent to `psid`, oldest first, taken.
    pub fn person_take(&self, psid: &str) -> Vec<PersonMessage> {
        let mut s = self.lock();
        s.people
            .iter_mut()
            .find(|p| p.spec.psid == psid)
            .map(|p| p.inbox.drain(..).collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    #[allow(clippy::too_many_arguments)]
    fn note(
        &mut self,
        page: &str,
        method: &str,
        to: Option<&str>,
        size: usize,
        status: u16,
        code: Option<i64>,
        retry_after_ms: Option<u64>,
    ) {
        self.record.push(Request {
            at_ms: self.started.elapsed().as_millis() as u64,
            page: page.to_string(),
            method: method.to_string(),
            to: to.map(str::to_string),
            size,
            status,
            code,
            retry_after_ms,
        });
    }

    /// The Page whose token this is.
    fn caller(
        &self,
        headers: &HeaderMap,
        query: &HashMap<String, String>,
    ) -> Result<usize, Failure> {
        let token = graph::bearer(headers).or(query.get("access_token").map(String::as_str));
        let invalid = (
            StatusCode::UNAUTHORIZED,
            190,
            None,
            "Invalid OAuth access token - Cannot parse access token".to_string(),
        );
        let token = token.ok_or(invalid.clone())?;
        self.pages
            .iter()
            .position(|p| p.token == token)
            .ok_or(invalid)
    }
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

    /// The Messenger Platform's codes (a fault's own code is not used).
    fn injected(status: u16, _asked: Option<i64>) -> (i64, &'static str) {
        match status {
            429 => (613, "Calls to this api have exceeded the rate limit."),
            401 => (
                190,
                "Error validating access token: The session has been invalidated",
            ),
            500..=599 => (
                2,
                "An unexpected error has occurred. Please retry your request later.",
            ),
            _ => (100, "Invalid parameter"),
        }
    }
}

/// The Send API's parameters, from JSON or a multipart form.
#[derive(Default)]
struct SendParams {
    recipient: Value,
    message: Value,
    file: Option<Vec<u8>>,
}

async fn messages(
    State(emu): State<Emulator>,
    Path((_version, page_id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Response {
    use axum::extract::FromRequest;
    let injected = graph::admit(&emu, "messages").await;
    let kind = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut p = SendParams::default();
    if kind.starts_with("multipart/form-data") {
        let Ok(mut form) = Multipart::from_request(req, &()).await else {
            return graph::graph_error(bad_param("(#100) broken multipart form"));
        };
        loop {
            match form.next_field().await {
                Ok(Some(field)) => {
                    let name = field.name().unwrap_or("").to_string();
                    let Ok(bytes) = field.bytes().await else {
                        return graph::graph_error(bad_param("(#100) broken multipart form"));
                    };
                    match name.as_str() {
                        "recipient" => {
                            p.recipient = serde_json::from_slice(&bytes).unwrap_or_default()
                        }
                        "message" => p.message = serde_json::from_slice(&bytes).unwrap_or_default(),
                        "filedata" => p.file = Some(bytes.to_vec()),
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    return graph::graph_error(bad_param(
                        "(#100) Attachment size exceeds allowable limit",
                    ))
                }
            }
        }
    } else {
        let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_ATTACHMENT).await else {
            return graph::graph_error(bad_param("(#100) body too large"));
        };
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        p.recipient = v["recipient"].clone();
        p.message = v["message"].clone();
    }
    let mut s = emu.lock();
    let to = p.recipient["id"].as_str().map(str::to_string);
    let size = p.message["text"].as_str().map_or(
        p.file.as_ref().map_or(0, Vec::len),
        crate::common::text_length,
    );
    let outcome = match injected {
        Some(f) => Err(f),
        None => send(&mut s, &page_id, &headers, &query, p),
    };
    let caller = s
        .caller(&headers, &query)
        .map(|i| s.pages[i].page_id.clone())
        .unwrap_or_default();
    let (response, status, code) = graph::answer(outcome);
    // What a careful client waits after it (Meta names no time).
    let retry = (code == Some(613)).then_some(10_000);
    s.note(
        &caller,
        "messages",
        to.as_deref(),
        size,
        status,
        code,
        retry,
    );
    response
}

fn send(
    s: &mut Inner,
    page_id: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    p: SendParams,
) -> Result<Value, Failure> {
    let caller = s.caller(headers, query)?;
    let me = s.pages[caller].page_id.clone();
    if page_id != "me" && page_id != me {
        return Err(graph::no_object("post", page_id));
    }
    let psid = p.recipient["id"]
        .as_str()
        .ok_or_else(|| bad_param("(#100) param recipient must be non-empty."))?;
    let person = s
        .people
        .iter()
        .position(|x| x.spec.psid == psid && x.spec.page_id == me)
        .ok_or((
            StatusCode::BAD_REQUEST,
            100,
            Some(2_018_001),
            "(#100) No matching user found".to_string(),
        ))?;
    let content = if let Some(text) = p.message["text"].as_str() {
        if crate::common::text_length(text) > MAX_TEXT {
            return Err(bad_param(
                "(#100) Length of param message[text] must be less than or equal to 2000",
            ));
        }
        PersonMessage::Text(text.to_string())
    } else if p.message["attachment"]["type"] == "file" {
        let bytes = p
            .file
            .ok_or_else(|| bad_param("(#100) Upload attachment failure."))?;
        if bytes.len() > MAX_ATTACHMENT {
            return Err(bad_param("(#100) Attachment size exceeds allowable limit"));
        }
        PersonMessage::File(bytes)
    } else {
        return Err(bad_param(
            "(#100) param message must contain text or an attachment",
        ));
    };
    let in_window = matches!(s.people[person].last_wrote, Some(at) if at.elapsed() < WINDOW);
    if !in_window {
        return Err((
            StatusCode::BAD_REQUEST,
            10,
            Some(2_018_278),
            "(#10) This message is sent outside of allowed window.".into(),
        ));
    }
    let (rate, burst) = s.rate;
    if s.people[person]
        .bucket
        .get_or_insert_with(|| Bucket::full(burst))
        .take(burst, rate)
        .is_err()
    {
        return Err((
            StatusCode::BAD_REQUEST,
            613,
            None,
            "Calls to this api have exceeded the rate limit.".into(),
        ));
    }
    s.bodies.push(match &content {
        PersonMessage::Text(t) => t.as_bytes().to_vec(),
        PersonMessage::File(b) => b.clone(),
    });
    s.people[person].inbox.push_back(content);
    let mid = format!("m_{:024}", s.id());
    Ok(json!({ "recipient_id": psid, "message_id": mid }))
}

async fn page(
    State(emu): State<Emulator>,
    Path((_version, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let injected = graph::admit(&emu, "page").await;
    let mut s = emu.lock();
    let outcome = match injected {
        Some(f) => Err(f),
        None => s.caller(&headers, &query).and_then(|i| {
            let p = &s.pages[i];
            if id == p.page_id || id == "me" {
                Ok(json!({ "name": p.name, "id": p.page_id }))
            } else {
                Err((
                    StatusCode::BAD_REQUEST,
                    100,
                    Some(33),
                    format!("Unsupported get request. Object with ID '{id}' does not exist"),
                ))
            }
        }),
    };
    let (response, status, code) = graph::answer(outcome);
    s.note(&id, "page", None, 0, status, code, None);
    response
}

async fn attachment(State(emu): State<Emulator>, Path(file): Path<String>) -> Response {
    let mut s = emu.lock();
    if s.faults.expire_media > 0 {
        s.faults.expire_media -= 1;
        if let Some(f) = s.files.get_mut(&file) {
            f.1 = true;
        }
    }
    let found = s
        .files
        .get(&file)
        .filter(|(_, dead)| !dead)
        .map(|(b, _)| b.clone());
    let (response, status, size) = match found {
        Some(bytes) => {
            let n = bytes.len();
            (bytes.into_response(), 200, n)
        }
        None => (
            (StatusCode::NOT_FOUND, "URL expired").into_response(),
            404,
            0,
        ),
    };
    s.note("", "attachment", None, size, status, None, None);
    response
}

/// `{"text": ..}` or `{"file": <base64>}`.
async fn person_post(
    State(emu): State<Emulator>,
    Path(psid): Path<String>,
    headers: HeaderMap,
    Json(v): Json<Value>,
) -> Response {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let message = match (v["text"].as_str(), v["file"].as_str()) {
        (Some(t), _) => PersonMessage::Text(t.to_string()),
        (None, Some(b)) => match base64::engine::general_purpose::STANDARD.decode(b) {
            Ok(bytes) => PersonMessage::File(bytes),
            Err(_) => return (StatusCode::BAD_REQUEST, "file is not base64").into_response(),
        },
        _ => return (StatusCode::BAD_REQUEST, "send {\"text\"} or {\"file\"}").into_response(),
    };
    if emu.person_send(&psid, message, &format!("http://{host}")) {
        Json(json!({"ok": true})).into_response()
    } else {
        (StatusCode::NOT_FOUND, "no such person").into_response()
    }
}

async fn person_inbox(State(emu): State<Emulator>, Path(psid): Path<String>) -> Json<Value> {
    let out: Vec<Value> = emu
        .person_take(&psid)
        .into_iter()
        .map(|m| match m {
            PersonMessage::Text(t) => json!({ "text": t }),
            PersonMessage::File(b) => {
                json!({ "file": base64::engine::general_purpose::STANDARD.encode(b) })
            }
        })
        .collect();
    Json(Value::Array(out))
}
