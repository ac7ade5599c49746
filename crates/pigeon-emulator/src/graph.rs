//! The Graph API as both Meta emulators serve it (the WhatsApp Cloud API
//! and the Messenger Platform): the error envelope and the parameter and
//! object errors both platforms answer with, the bearer token, injected
//! faults answered in each platform's codes, and the `/_emulator/`
//! routes (record, clock, faults). The webhooks both send, signed, are
//! [`crate::webhook`]'s.
//!
//! A platform's emulator implements [`GraphEmulator`]; its handlers call
//! [`admit`] first and answer with [`answer`].

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use crate::common::Faults;
use crate::webhook::{Delivery, Webhooks};

/// A Graph failure: HTTP status, code, subcode, message.
pub type Failure = (StatusCode, i64, Option<i64>, String);

/// `{"error":{"message","type","code","error_subcode","fbtrace_id"}}`.
pub fn graph_error((status, code, subcode, message): Failure) -> Response {
    let mut error = json!({
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": format!("A{:016x}", rand::random::<u64>()),
    });
    if let Some(s) = subcode {
        error["error_subcode"] = json!(s);
    }
    (status, Json(json!({ "error": error }))).into_response()
}

/// A call's outcome as answered: the response, its status, and the
/// Graph code of a failure (for the record).
pub fn answer(outcome: Result<Value, Failure>) -> (Response, u16, Option<i64>) {
    match outcome {
        Ok(v) => (Json(v).into_response(), 200, None),
        Err(f) => {
            let (status, code) = (f.0.as_u16(), f.1);
            (graph_error(f), status, Some(code))
        }
    }
}

/// Code 100: a parameter is missing or wrong.
pub fn bad_param(message: impl Into<String>) -> Failure {
    (StatusCode::BAD_REQUEST, 100, None, message.into())
}

/// Code 100, subcode 33: no object `id` that this token may see, for a
/// `verb` (`get`, `post`) request.
pub fn no_object(verb: &str, id: &str) -> Failure {
    (
        StatusCode::BAD_REQUEST,
        100,
        Some(33),
        format!("Unsupported {verb} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."),
    )
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// What a Meta platform's emulator offers the shared Graph code.
pub trait GraphEmulator: Clone + Send + Sync + 'static {
    /// One line of its record.
    type Request: Serialize + Send;

    /// `f` on the faults still to inject.
    fn faults<T>(&self, f: impl FnOnce(&mut Faults) -> T) -> T;

    /// Milliseconds since the emulator started: the clock of the record.
    fn elapsed_ms(&self) -> u64;

    /// Every request and webhook delivery, in time order.
    fn record(&self) -> Vec<Self::Request>;

    /// Inject `faults`.
    fn inject(&self, faults: Faults);

    /// The code and message an injected failure with HTTP `status`
    /// carries on this platform (`asked`: the code the fault names).
    fn injected(status: u16, asked: Option<i64>) -> (i64, &'static str);
}

/// Wait out an injected stall; answer an injected failure of `method`.
pub async fn admit<E: GraphEmulator>(emu: &E, method: &str) -> Option<Failure> {
    if let Some(d) = emu.faults(Faults::take_stall) {
        tokio::time::sleep(d).await;
    }
    let (status, asked) = emu.faults(|f| {
        let asked = f.code;
        f.take_failure(method).map(|(status, _)| (status, asked))
    })?;
    let (code, message) = E::injected(status, asked);
    Some((
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        code,
        None,
        message.into(),
    ))
}

/// `GET /_emulator/record`, `GET /_emulator/clock`, `POST /_emulator/faults`.
pub fn emulator_routes<E: GraphEmulator>() -> Router<E> {
    Router::new()
        .route("/_emulator/record", get(record::<E>))
        .route("/_emulator/clock", get(clock::<E>))
        .route("/_emulator/faults", post(set_faults::<E>))
}

/// `record` with the webhook deliveries of `hooks` (as `line` makes them
/// lines of the record), in time order by `at_ms`.
pub fn with_deliveries<R: Clone>(
    record: &[R],
    hooks: &Webhooks,
    line: impl Fn(Delivery) -> R,
    at_ms: impl Fn(&R) -> u64,
) -> Vec<R> {
    let mut all = record.to_vec();
    all.extend(hooks.log().into_iter().map(line));
    all.sort_by_key(at_ms);
    all
}

async fn clock<E: GraphEmulator>(State(emu): State<E>) -> Json<Value> {
    Json(json!({ "at_ms": emu.elapsed_ms() }))
}

async fn record<E: GraphEmulator>(State(emu): State<E>) -> Json<Vec<E::Request>> {
    Json(emu.record())
}

async fn set_faults<E: GraphEmulator>(State(emu): State<E>, Json(f): Json<Faults>) -> Json<Value> {
    emu.inject(f);
    Json(json!({"ok": true}))
}
