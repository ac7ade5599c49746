//! The reference server of the SM APOS Shipper protocol
//! (`docs/shipper-protocol.md`): accounts with a key and a secret, every
//! request signed (HMAC-SHA256 over method, path and query, timestamp,
//! nonce and the body's hash; stale timestamps and replayed nonces
//! refused), messages posted to an account by name and long-polled from
//! one's own mailbox until a later `after` confirms them, a sliding budget
//! of posts a minute answered with 429 and `Retry-After`, and a size cap.
//!
//! For tests: every request is recorded (`GET /_emulator/record`), every
//! posted body kept (`GET /_emulator/bodies`, base64) for scanning,
//! faults injected deterministically (`POST /_emulator/faults`), and the
//! limits changed while clients run (`POST /_emulator/limits` with
//! `{"max_message": N, "rate_limit": N}`, either or both), as a provider
//! lowering an account's limits would.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub use crate::common::Faults;
use crate::common::{unix_ms, Bucket};

/// Largest message body, bytes.
pub const MAX_MESSAGE: usize = 1_000_000;
/// Posts a minute per account.
pub const RATE_LIMIT: u32 = 1000;
/// Largest clock difference accepted, seconds.
pub const MAX_SKEW: u64 = 300;
/// A nonce is remembered until its timestamp is this far behind the
/// clock: past the skew allowed, with room for the clock to step back.
const NONCE_MEMORY: u64 = 2 * MAX_SKEW + 60;
/// Longest long poll, seconds.
const MAX_WAIT: u64 = 30;
/// Messages in one answer.
const BATCH: usize = 100;

/// An account the server knows.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct AccountSpec {
    pub name: String,
    pub key: String,
    pub secret: String,
}

impl std::str::FromStr for AccountSpec {
    type Err = String;

    /// `NAME=KEY:SECRET`.
    fn from_str(s: &str) -> Result<AccountSpec, String> {
        let (name, creds) = s.split_once('=').ok_or("expected NAME=KEY:SECRET")?;
        let (key, secret) = creds.split_once(':').ok_or("expected NAME=KEY:SECRET")?;
        if !valid_name(name) || key.is_empty() || secret.is_empty() {
            return Err("expected NAME=KEY:SECRET, NAME of [a-z0-9_-]".into());
        }
        Ok(AccountSpec {
            name: name.into(),
            key: key.into(),
            secret: secret.into(),
        })
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// New limits for [`Emulator::set_limits`]: those given change.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize)]
pub struct Limits {
    pub max_message: Option<usize>,
    pub rate_limit: Option<u32>,
}

/// One request, as the record keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub at_ms: u64,
    /// The account's name (empty when the key was not known).
    pub account: String,
    /// `ping`, `send` or `poll`.
    pub method: String,
    /// The addressee of a send.
    pub to: Option<String>,
    /// Body bytes of a send; messages handed out by a poll.
    pub size: usize,
    pub status: u16,
    /// A 429's `retry_after`, in ms from `at_ms`.
    pub retry_after_ms: Option<u64>,
}

#[derive(Clone, Debug)]
struct Stored {
    seq: u64,
    id: String,
    from: String,
    text: bool,
    body: Vec<u8>,
    sent_at_ms: u64,
    /// Put back by a redelivery fault and not handed out again yet (so an
    /// `after` past it does not confirm it unseen).
    again: bool,
}

struct Account {
    name: String,
    secret: String,
    mailbox: VecDeque<Stored>,
    confirmed: VecDeque<Stored>,
    next_seq: u64,
    bucket: Option<Bucket>,
    /// Nonces seen, with the Unix second after which they may be
    /// forgotten, in the order they came (pruned from the front).
    nonces: HashMap<String, u64>,
    nonce_order: VecDeque<(u64, String)>,
    /// The poll in progress (its generation), for 409s.
    polling: u64,
}

struct Inner {
    started: Instant,
    /// The Unix second the server started.
    started_unix: u64,
    /// By key.
    accounts: HashMap<String, Account>,
    record: Vec<Request>,
    bodies: Vec<Vec<u8>>,
    faults: Faults,
    rate_limit: u32,
    max_message: usize,
    next_id: u64,
    poll_generation: u64,
}

#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Mutex<Inner>>,
    news: Arc<tokio::sync::Notify>,
}

type Failure = (StatusCode, &'static str, String, Option<u64>);

impl Emulator {
    pub fn new(accounts: &[AccountSpec]) -> Emulator {
        let accounts = accounts
            .iter()
            .map(|a| {
                (
                    a.key.clone(),
                    Account {
                        name: a.name.clone(),
                        secret: a.secret.clone(),
                        mailbox: VecDeque::new(),
                        confirmed: VecDeque::new(),
                        next_seq: 1,
                        bucket: None,
                        nonces: HashMap::new(),
                        nonce_order: VecDeque::new(),
                        polling: 0,
                    },
                )
            })
            .collect();
        Emulator {
            inner: Arc::new(Mutex::new(Inner {
                started: Instant::now(),
                started_unix: unix_ms() / 1000,
                accounts,
                record: vec![],
                bodies: vec![],
                faults: Faults::default(),
                rate_limit: RATE_LIMIT,
                max_message: MAX_MESSAGE,
                next_id: 1,
                poll_generation: 0,
            })),
            news: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Posts a minute per account.
    pub fn with_rate_limit(self, per_minute: u32) -> Emulator {
        self.lock().rate_limit = per_minute.max(1);
        self
    }

    pub fn with_max_message(self, bytes: usize) -> Emulator {
        self.lock().max_message = bytes;
        self
    }

    /// Change the limits from now on (what ping announces and what posts
    /// are held to), as a provider lowering an account's would.
    pub fn set_limits(&self, limits: Limits) {
        let mut s = self.lock();
        if let Some(bytes) = limits.max_message {
            s.max_message = bytes;
        }
        if let Some(per_minute) = limits.rate_limit {
            s.rate_limit = per_minute.max(1);
        }
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/ping", get(ping))
            .route("/v1/messages/{to}", post(send))
            .route("/v1/messages", get(poll))
            .route("/_emulator/record", get(record))
            .route("/_emulator/clock", get(clock))
            .route("/_emulator/bodies", get(bodies))
            .route("/_emulator/faults", post(set_faults))
            .route("/_emulator/limits", post(set_limits))
            .layer(axum::extract::DefaultBodyLimit::max(MAX_MESSAGE * 4))
            .with_state(self.clone())
    }

    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    pub fn record(&self) -> Vec<Request> {
        self.lock().record.clone()
    }

    /// Every body posted, in order.
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.lock().bodies.clone()
    }

    pub fn inject(&self, faults: Faults) {
        let mut s = self.lock();
        for a in s.accounts.values_mut() {
            let k = a.confirmed.len().min(faults.redeliver);
            let again: Vec<Stored> = a.confirmed.iter().rev().take(k).cloned().collect();
            for mut m in again {
                m.again = true;
                a.mailbox.push_front(m);
            }
        }
        s.faults = faults;
        drop(s);
        self.news.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn note(&mut self, account: &str, method: &str, to: Option<&str>, size: usize, r: &Response) {
        let retry_after_ms = r
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .map(|s| s * 1000);
        self.record.push(Request {
            at_ms: self.started.elapsed().as_millis() as u64,
            account: account.to_string(),
            method: method.to_string(),
            to: to.map(str::to_string),
            size,
            status: r.status().as_u16(),
            retry_after_ms,
        });
    }

    /// Check a request's signature; the account's key on success.
    fn authenticate(
        &mut self,
        method: &Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<String, Failure> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let unauthorized =
            |code, message: String| Err((StatusCode::UNAUTHORIZED, code, message, None));
        let Some(key) = header("x-shipper-key") else {
            return unauthorized("unknown_key", "no X-Shipper-Key header".into());
        };
        let (Some(ts), Some(nonce), Some(signature)) = (
            header("x-shipper-timestamp"),
            header("x-shipper-nonce"),
            header("x-shipper-signature"),
        ) else {
            return unauthorized(
                "bad_signature",
                "a signed request has X-Shipper-Timestamp, X-Shipper-Nonce and X-Shipper-Signature"
                    .into(),
            );
        };
        let Some(account) = self.accounts.get_mut(key) else {
            return unauthorized("unknown_key", "this API key is not known here".into());
        };
        let now = unix_ms() / 1000;
        let Ok(at) = ts.parse::<u64>() else {
            return unauthorized(
                "stale_timestamp",
                "the timestamp is not whole seconds".into(),
            );
        };
        // The nonces of an earlier run are gone: what was signed before
        // this server started could be a replay, so it is refused as stale.
        if at < self.started_unix {
            return unauthorized(
                "stale_timestamp",
                "signed before this server started; sign again".into(),
            );
        }
        if now.abs_diff(at) > MAX_SKEW {
            return unauthorized(
                "stale_timestamp",
                format!(
                    "the request was signed {} s from this server's clock (at most {MAX_SKEW} s): check the clock",
                    now.abs_diff(at)
                ),
            );
        }
        if !(16..=64).contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return unauthorized(
                "bad_signature",
                "the nonce is not 16 to 64 hex digits".into(),
            );
        }
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        let canonical = canonical(method.as_str(), path, ts, nonce, body);
        let mut mac = Hmac::<Sha256>::new_from_slice(account.secret.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(canonical.as_bytes());
        let good = hex::decode(signature)
            .ok()
            .is_some_and(|sig| mac.verify_slice(&sig).is_ok());
        if !good {
            return unauthorized(
                "bad_signature",
                "the signature does not match: check the API secret".into(),
            );
        }
        // Kept until its timestamp can no longer pass the skew check, by
        // the wall clock the check uses (not by when it was seen).
        while account
            .nonce_order
            .front()
            .is_some_and(|(until, _)| *until < now)
        {
            if let Some((_, old)) = account.nonce_order.pop_front() {
                account.nonces.remove(&old);
            }
        }
        if account.nonces.contains_key(nonce) {
            return unauthorized("replayed", "this nonce was used already".into());
        }
        let until = at.max(now) + NONCE_MEMORY;
        account.nonces.insert(nonce.to_string(), until);
        account.nonce_order.push_back((until, nonce.to_string()));
        Ok(key.to_string())
    }
}

/// The string a request's signature covers (see the protocol document).
pub fn canonical(method: &str, path_and_query: &str, ts: &str, nonce: &str, body: &[u8]) -> String {
    format!(
        "{method}\n{path_and_query}\n{ts}\n{nonce}\n{}",
        hex::encode(Sha256::digest(body))
    )
}

fn failure((status, code, message, retry_after): Failure) -> Response {
    let mut error = json!({ "code": code, "message": message });
    if let Some(s) = retry_after {
        error["retry_after"] = json!(s);
    }
    let mut response = (status, Json(json!({ "error": error }))).into_response();
    if let Some(s) = retry_after {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, s.into());
    }
    response
}

/// What every call does first: wait out an injected stall, check the
/// signature, answer an injected failure.
async fn admit(
    emu: &Emulator,
    op: &str,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<String, Response> {
    let stall = emu.lock().faults.take_stall();
    if let Some(d) = stall {
        tokio::time::sleep(d).await;
    }
    let mut s = emu.lock();
    let key = match s.authenticate(method, uri, headers, body) {
        Ok(key) => key,
        Err(f) => {
            let r = failure(f);
            s.note("", op, None, body.len(), &r);
            return Err(r);
        }
    };
    if let Some((status, retry_after)) = s.faults.take_failure(op) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let code = match status.as_u16() {
            429 => "rate_limited",
            401 => "unknown_key",
            500..=599 => "unavailable",
            _ => "bad_request",
        };
        let r = failure((status, code, "injected".into(), retry_after));
        let name = s.accounts[&key].name.clone();
        s.note(&name, op, None, body.len(), &r);
        return Err(r);
    }
    Ok(key)
}

async fn ping(
    State(emu): State<Emulator>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = match admit(&emu, "ping", &method, &uri, &headers, &body).await {
        Ok(k) => k,
        Err(r) => return r,
    };
    let mut s = emu.lock();
    let name = s.accounts[&key].name.clone();
    let r = Json(json!({
        "account": name,
        "rate_limit": s.rate_limit,
        "max_message": s.max_message,
    }))
    .into_response();
    s.note(&name, "ping", None, 0, &r);
    r
}

async fn send(
    State(emu): State<Emulator>,
    Path(to): Path<String>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = match admit(&emu, "send", &method, &uri, &headers, &body).await {
        Ok(k) => k,
        Err(r) => return r,
    };
    let text = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/plain"));
    let mut s = emu.lock();
    let outcome = post_message(&mut s, &key, &to, text, &body);
    let r = match outcome {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(f) => failure(f),
    };
    let name = s.accounts[&key].name.clone();
    s.note(&name, "send", Some(&to), body.len(), &r);
    drop(s);
    emu.news.notify_waiters();
    r
}

fn post_message(
    s: &mut Inner,
    key: &str,
    to: &str,
    text: bool,
    body: &[u8],
) -> Result<Value, Failure> {
    if body.len() > s.max_message {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "{} bytes is over the limit of {}",
                body.len(),
                s.max_message
            ),
            None,
        ));
    }
    if text && std::str::from_utf8(body).is_err() {
        return Err((
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a text/plain body must be UTF-8".into(),
            None,
        ));
    }
    let Some(target) = s
        .accounts
        .iter()
        .find(|(_, a)| a.name == to)
        .map(|(k, _)| k.clone())
    else {
        return Err((
            StatusCode::NOT_FOUND,
            "unknown_account",
            format!("no account is named {to:?}"),
            None,
        ));
    };
    let per_minute = f64::from(s.rate_limit);
    let burst = (per_minute / 10.0).max(1.0);
    let sender = s.accounts.get_mut(key).expect("authenticated");
    let bucket = sender.bucket.get_or_insert_with(|| Bucket::full(burst));
    if let Err(wait) = bucket.take(burst, per_minute / 60.0) {
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("over {} messages a minute", s.rate_limit),
            Some(wait),
        ));
    }
    let from = sender.name.clone();
    let id = format!("m-{:016x}", s.next_id);
    s.next_id += 1;
    s.bodies.push(body.to_vec());
    let mailbox = s.accounts.get_mut(&target).expect("found");
    let seq = mailbox.next_seq;
    mailbox.next_seq += 1;
    mailbox.mailbox.push_back(Stored {
        seq,
        id: id.clone(),
        from,
        text,
        body: body.to_vec(),
        sent_at_ms: unix_ms(),
        again: false,
    });
    Ok(json!({ "id": id, "seq": seq }))
}

#[derive(Deserialize)]
struct PollQuery {
    after: Option<u64>,
    wait: Option<u64>,
}

async fn poll(
    State(emu): State<Emulator>,
    axum::extract::Query(q): axum::extract::Query<PollQuery>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = match admit(&emu, "poll", &method, &uri, &headers, &body).await {
        Ok(k) => k,
        Err(r) => return r,
    };
    let after = q.after.unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT));
    let generation = {
        let mut s = emu.lock();
        s.poll_generation += 1;
        let g = s.poll_generation;
        let a = s.accounts.get_mut(&key).expect("authenticated");
        a.polling = g;
        let (done, kept): (VecDeque<Stored>, VecDeque<Stored>) = std::mem::take(&mut a.mailbox)
            .into_iter()
            .partition(|m| m.seq <= after && !m.again);
        a.mailbox = kept;
        a.confirmed.extend(done);
        while a.confirmed.len() > 256 {
            a.confirmed.pop_front();
        }
        g
    };
    emu.news.notify_waiters();
    loop {
        let notified = emu.news.notified();
        {
            let mut s = emu.lock();
            let a = s.accounts.get_mut(&key).expect("authenticated");
            let name = a.name.clone();
            if a.polling != generation {
                let r = failure((
                    StatusCode::CONFLICT,
                    "conflict",
                    "ended by a newer poll for this account: is another process using this key?"
                        .into(),
                    None,
                ));
                s.note(&name, "poll", None, 0, &r);
                return r;
            }
            if !a.mailbox.is_empty() || Instant::now() >= deadline {
                for m in a.mailbox.iter_mut().take(BATCH) {
                    m.again = false;
                }
                let out: Vec<Value> = a
                    .mailbox
                    .iter()
                    .take(BATCH)
                    .map(|m| {
                        json!({
                            "seq": m.seq,
                            "id": m.id,
                            "from": m.from,
                            "type": if m.text { "text" } else { "binary" },
                            "body": base64::engine::general_purpose::STANDARD.encode(&m.body),
                            "sent_at_ms": m.sent_at_ms,
                        })
                    })
                    .collect();
                let next = a
                    .mailbox
                    .iter()
                    .take(BATCH)
                    .map(|m| m.seq)
                    .max()
                    .unwrap_or(after);
                let n = out.len();
                let r = Json(json!({ "messages": out, "next": next })).into_response();
                s.note(&name, "poll", None, n, &r);
                return r;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(left, notified).await;
    }
}

/// Milliseconds since the emulator started: the clock of the record.
async fn clock(State(emu): State<Emulator>) -> Json<Value> {
    Json(json!({ "at_ms": emu.lock().started.elapsed().as_millis() as u64 }))
}

async fn record(State(emu): State<Emulator>) -> Json<Vec<Request>> {
    Json(emu.record())
}

async fn bodies(State(emu): State<Emulator>) -> Json<Vec<String>> {
    Json(
        emu.bodies()
            .iter()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
            .collect(),
    )
}

async fn set_faults(State(emu): State<Emulator>, Json(f): Json<Faults>) -> Json<Value> {
    emu.inject(f);
    Json(json!({"ok": true}))
}

async fn set_limits(State(emu): State<Emulator>, Json(l): Json<Limits>) -> Json<Value> {
    emu.set_limits(l);
    Json(json!({"ok": true}))
}
