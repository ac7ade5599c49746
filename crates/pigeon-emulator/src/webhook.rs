//! Meta's side of webhooks, shared by the WhatsApp and Messenger
//! emulators: per subscriber, the `GET` handshake before the first
//! delivery, then each payload `POST`ed, oldest first, signed
//! `X-Hub-Signature-256: sha256=HMAC-SHA256(app_secret, body)` over a body
//! whose non-ASCII is escaped `\uXXXX` (as Meta's is), and retried with
//! backoff until answered 200. The Graph API both serve is
//! [`crate::graph`]'s (its error envelope is re-exported here).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
// The tests build payloads with it.
#[cfg(test)]
use serde_json::json;

pub use crate::graph::{graph_error, Failure};

/// `v` as Meta signs it: JSON with non-ASCII escaped `\uXXXX`.
pub fn escaped_json(v: &Value) -> String {
    let raw = v.to_string();
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// Where one subscriber's webhook is, and how it is reached.
#[derive(Clone, Debug)]
pub struct Subscriber {
    /// The phone number id or Page id it is for (the record's name).
    pub name: String,
    pub url: String,
    pub app_secret: String,
    pub verify_token: String,
}

/// One handshake or delivery.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub at_ms: u64,
    pub name: String,
    /// `webhook_verify` or `webhook`.
    pub method: &'static str,
    pub size: usize,
    /// 0 when the subscriber could not be reached.
    pub status: u16,
}

struct Outbox {
    to: Subscriber,
    queue: VecDeque<Value>,
    delivered: VecDeque<Value>,
    verified: bool,
    next_try: Instant,
    backoff: Duration,
}

struct State {
    started: Instant,
    outboxes: Vec<Outbox>,
    log: Vec<Delivery>,
    running: bool,
}

/// The deliverer of every subscriber's webhooks.
#[derive(Clone)]
pub struct Webhooks {
    state: Arc<Mutex<State>>,
    news: Arc<tokio::sync::Notify>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Webhooks {
    pub fn new(started: Instant, subscribers: Vec<Subscriber>) -> Webhooks {
        Webhooks {
            state: Arc::new(Mutex::new(State {
                started,
                outboxes: subscribers
                    .into_iter()
                    .map(|to| Outbox {
                        to,
                        queue: VecDeque::new(),
                        delivered: VecDeque::new(),
                        verified: false,
                        next_try: Instant::now(),
                        backoff: FIRST_BACKOFF,
                    })
                    .collect(),
                log: vec![],
                running: false,
            })),
            news: Arc::new(tokio::sync::Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `payload` for subscriber `i`. The deliverer starts on first
    /// use, in a thread of its own (so callers in any runtime, or none,
    /// can queue).
    pub fn push(&self, i: usize, payload: Value) {
        let start = {
            let mut s = self.lock();
            if let Some(o) = s.outboxes.get_mut(i) {
                o.queue.push_back(payload);
            }
            !std::mem::replace(&mut s.running, true)
        };
        if start {
            let hooks = self.clone();
            std::thread::Builder::new()
                .name("webhooks".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(hooks.deliver_forever()),
                        Err(e) => eprintln!("emulator: cannot deliver webhooks: {e}"),
                    }
                })
                .expect("a thread for webhook deliveries");
        }
        self.news.notify_waiters();
    }

    /// Post each subscriber's last `n` delivered payloads again.
    pub fn redeliver(&self, n: usize) {
        let mut s = self.lock();
        for o in &mut s.outboxes {
            let k = o.delivered.len().min(n);
            let again: Vec<Value> = o.delivered.iter().rev().take(k).cloned().collect();
            for p in again {
                o.queue.push_front(p);
            }
        }
        drop(s);
        self.news.notify_waiters();
    }

    /// Every handshake and delivery so far.
    pub fn log(&self) -> Vec<Delivery> {
        self.lock().log.clone()
    }

    async fn deliver_forever(self) {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        loop {
            let notified = self.news.notified();
            let due: Vec<(usize, Subscriber, bool, Value)> = {
                let s = self.lock();
                let now = Instant::now();
                s.outboxes
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.next_try <= now)
                    .filter_map(|(i, o)| {
                        o.queue
                            .front()
                            .map(|p| (i, o.to.clone(), o.verified, p.clone()))
                    })
                    .collect()
            };
            if due.is_empty() {
                let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
                continue;
            }
            let mut attempts = tokio::task::JoinSet::new();
            for (i, to, verified, payload) in due {
                let (http, hooks) = (http.clone(), self.clone());
                attempts.spawn(async move {
                    let ok = if verified {
                        hooks.post(&http, &to, &payload).await
                    } else {
                        hooks.handshake(&http, &to).await
                    };
                    let mut s = hooks.lock();
                    let o = &mut s.outboxes[i];
                    if !ok {
                        o.next_try = Instant::now() + o.backoff;
                        o.backoff = (o.backoff * 2).min(MAX_BACKOFF);
                    } else if !verified {
                        o.verified = true;
                    } else {
                        o.backoff = FIRST_BACKOFF;
                        if let Some(p) = o.queue.pop_front() {
                            o.delivered.push_back(p);
                            if o.delivered.len() > 256 {
                                o.delivered.pop_front();
                            }
                        }
                    }
                });
            }
            while attempts.join_next().await.is_some() {}
        }
    }

    fn note(&self, to: &Subscriber, method: &'static str, size: usize, status: u16) {
        let mut s = self.lock();
        let at_ms = s.started.elapsed().as_millis() as u64;
        s.log.push(Delivery {
            at_ms,
            name: to.name.clone(),
            method,
            size,
            status,
        });
    }

    async fn handshake(&self, http: &reqwest::Client, to: &Subscriber) -> bool {
        let challenge = format!("{}", rand::random::<u32>());
        let answer = http
            .get(&to.url)
            .query(&[
                ("hub.mode", "subscribe"),
                ("hub.verify_token", to.verify_token.as_str()),
                ("hub.challenge", challenge.as_str()),
            ])
            .send()
            .await;
        let (status, ok) = match answer {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                (status, status == 200 && body == challenge)
            }
            Err(_) => (0, false),
        };
        self.note(to, "webhook_verify", 0, status);
        ok
    }

    async fn post(&self, http: &reqwest::Client, to: &Subscriber, payload: &Value) -> bool {
        let body = escaped_json(payload);
        let mut mac =
            Hmac::<Sha256>::new_from_slice(to.app_secret.as_bytes()).expect("any key length");
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let size = body.len();
        let status = http
            .post(&to.url)
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .header("X-Hub-Signature-256", signature)
            .body(body)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        self.note(to, "webhook", size, status);
        status == 200
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_escape_non_ascii_as_meta_does() {
        let v = json!({"name": "Café ✉ 𝄞"});
        let s = escaped_json(&v);
        assert_eq!(s, r#"{"name":"Caf\u00e9 \u2709 \ud834\udd1e"}"#);
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
    }
}
