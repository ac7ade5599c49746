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

/// Graph's raw "Object with ID '1001' does not exist…" and a bare 404 from
/// a URL without the version are said with what to check.
#[test]
fn a_wrong_id_and_a_url_without_the_version_say_what_to_check() {
    let wrong_id: GraphErrorReply = serde_json::from_value(serde_json::json!({
        "error": {"message": "Unsupported post request. Object with ID '1001' does not exist, cannot be loaded due to missing permissions, or does not support this operation.",
                  "type": "GraphMethodException", "code": 100, "error_subcode": 33}
    }))
    .unwrap();
    let said = match classify("whatsapp", 400, &wrong_id.error) {
        CallError::Permanent(m) => m,
        other => panic!("{other:?}"),
    };
    assert!(
        said.contains("check the id in the URI (phone_id="),
        "{said}"
    );
    let bare = not_graph("whatsapp", "send", 404);
    assert!(
        bare.contains("HTTP 404") && bare.contains("/v25.0"),
        "{bare}"
    );
}

/// Limits short enough for a test to wait them out.
const QUICK: WebhookLimits = WebhookLimits {
    header_timeout: Duration::from_secs(1),
    body_timeout: Duration::from_secs(1),
    max_connections: 64,
    max_body: 64 * 1024,
    connection_lifetime: Duration::from_secs(30),
};

const SECRET: &str = "app-secret";

/// A Messenger webhook on a free port, within `limits`; the receiver
/// must be kept for POSTs to be taken.
fn start(limits: WebhookLimits) -> (SocketAddr, mpsc::Receiver<serde_json::Value>) {
    let (out, rx) = mpsc::channel(64);
    let hook = Webhook {
        object: "page",
        app_secret: zeroize::Zeroizing::new(SECRET.into()),
        verify_token: zeroize::Zeroizing::new("verify".into()),
        out,
        health: Arc::default(),
    };
    let addr = serve_webhook_within("127.0.0.1:0".parse().unwrap(), hook, limits).unwrap();
    (addr, rx)
}

fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A well-formed signed POST, as Meta sends it: its status and how long
/// the answer took.
async fn signed_post(addr: SocketAddr, body: Vec<u8>) -> (u16, Duration) {
    let started = std::time::Instant::now();
    let response = super::super::http::client()
        .unwrap()
        .post(format!("http://{addr}/webhook"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), started.elapsed())
}

fn page_event() -> Vec<u8> {
    br#"{"object":"page","entry":[]}"#.to_vec()
}

/// A client that sends `bytes` and then nothing (`half_close`: and shuts
/// its side, as a client that went away half-way does).
async fn stalled(addr: SocketAddr, bytes: &[u8], half_close: bool) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    if half_close {
        s.shutdown().await.unwrap();
    }
    s
}

/// What the server sent before it closed `s`, or None when it is still
/// open at `deadline`.
async fn closed_by(
    s: &mut tokio::net::TcpStream,
    deadline: tokio::time::Instant,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    match tokio::time::timeout_at(deadline, s.read_to_end(&mut got)).await {
        Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => None,
    }
}

const PARTIAL_HEADERS: &[u8] = b"POST /webhook HTTP/1.1\r\nHost: pigeon\r\nContent-Le";
const PARTIAL_BODY: &[u8] =
    b"POST /webhook HTTP/1.1\r\nHost: pigeon\r\nContent-Length: 1000\r\n\r\n{\"object\":";

/// Regression: 300 connections sending partial requests stayed open past
/// 35 s (+35 MB RSS), and nothing bounded them.
#[tokio::test]
async fn slow_and_half_open_clients_are_closed_while_signed_posts_are_answered() {
    let (addr, _rx) = start(QUICK);
    let started = tokio::time::Instant::now();
    let mut slow = Vec::new();
    for i in 0..48 {
        let (bytes, half_close) = match i % 4 {
            0 => (PARTIAL_HEADERS, false),
            1 => (PARTIAL_BODY, false),
            2 => (PARTIAL_HEADERS, true),
            _ => (PARTIAL_BODY, true),
        };
        slow.push(stalled(addr, bytes, half_close).await);
    }
    // The slow ones hold no one up.
    let (status, took) = signed_post(addr, page_event()).await;
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_millis(700),
        "a signed POST took {took:?}"
    );
    // Each is closed within its timeout (and some slack for a busy machine).
    let deadline = started + QUICK.header_timeout + QUICK.body_timeout + Duration::from_secs(2);
    for (i, s) in slow.iter_mut().enumerate() {
        let said = closed_by(s, deadline).await;
        assert!(
            said.is_some(),
            "slow client {i} still open after {:?}",
            started.elapsed()
        );
    }
    let (status, _) = signed_post(addr, page_event()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_body_that_trickles_in_is_cut_off_at_the_body_timeout() {
    use tokio::io::AsyncWriteExt;
    let (addr, _rx) = start(QUICK);
    let mut s = stalled(addr, PARTIAL_BODY, false).await;
    let started = tokio::time::Instant::now();
    // A byte every 200 ms: never idle for long, never done.
    let mut said = None;
    for _ in 0..20 {
        if let Some(answer) = closed_by(
            &mut s,
            tokio::time::Instant::now() + Duration::from_millis(200),
        )
        .await
        {
            said = Some(answer);
            break;
        }
        let _ = s.write_all(b" ").await;
    }
    let said = said.expect("a trickling body is cut off");
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    assert!(started.elapsed() < QUICK.body_timeout + Duration::from_secs(1));
}

#[tokio::test]
async fn connections_past_the_cap_wait_for_a_slot() {
    let limits = WebhookLimits {
        max_connections: 4,
        ..QUICK
    };
    let (addr, _rx) = start(limits);
    let mut idle = Vec::new();
    for _ in 0..limits.max_connections {
        idle.push(stalled(addr, b"", false).await);
    }
    // Served only once the idle ones are closed (after a header timeout).
    let (status, took) = signed_post(addr, page_event()).await;
    assert_eq!(status, 200);
    assert!(
        took >= limits.header_timeout - Duration::from_millis(300),
        "answered in {took:?} past a full house of {} connections",
        limits.max_connections
    );
    assert!(
        took < limits.header_timeout + Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413_unread() {
    let (addr, _rx) = start(QUICK);
    let deadline = || tokio::time::Instant::now() + Duration::from_millis(700);
    // Declared too big: refused before the body is read (none is sent
    // past its first bytes, and the answer comes anyway).
    let mut s = stalled(
        addr,
        b"POST /webhook HTTP/1.1\r\nHost: pigeon\r\nContent-Length: 100000000\r\n\r\n{\"object\":",
        false,
    )
    .await;
    let said = closed_by(&mut s, deadline())
        .await
        .expect("answered and closed at once");
    assert!(said.starts_with("HTTP/1.1 413"), "{said}");
    // Undeclared (chunked): refused once it grows past the cap.
    let mut chunked =
        b"POST /webhook HTTP/1.1\r\nHost: pigeon\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..(QUICK.max_body / 4096 + 2) {
        chunked.extend_from_slice(format!("1000\r\n{}\r\n", "x".repeat(4096)).as_bytes());
    }
    let mut s = stalled(addr, &chunked, false).await;
    let said = closed_by(&mut s, deadline())
        .await
        .expect("answered and closed at once");
    assert!(said.starts_with("HTTP/1.1 413"), "{said}");
    // A signed body at the cap is taken.
    let mut body = br#"{"object":"page","entry":[],"pad":""#.to_vec();
    body.resize(QUICK.max_body - 2, b'x');
    body.extend_from_slice(b"\"}");
    assert_eq!(signed_post(addr, body).await.0, 200);
}

#[test]
fn default_webhook_limits_are_a_few_seconds_and_a_few_megabytes() {
    let d = WebhookLimits::DEFAULT;
    assert!(d.header_timeout <= Duration::from_secs(10));
    assert!(d.body_timeout <= Duration::from_secs(10));
    assert_eq!(d.max_connections, 64);
    assert!((1024 * 1024..=8 * 1024 * 1024).contains(&d.max_body));
}

/// Issue 32: a Graph API address nothing listens on is a setting only
/// the user can fix while it never answered, said as the call says it.
#[tokio::test]
async fn a_refused_graph_api_is_a_problem_until_it_first_answers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);
    let health = super::super::Health::default();
    let refused = reqwest::Client::new()
        .get(format!("http://{dead}/v21.0/me"))
        .send()
        .await;
    let err = read::<serde_json::Value>("whatsapp", "send", refused, &health)
        .await
        .unwrap_err()
        .message();
    assert!(
        err.contains("cannot connect") && err.contains("refused"),
        "{err}"
    );
    assert_eq!(health.problems(), vec![err]);
    // An answer, even a refusal of the token, is a server that is there.
    health.answered();
    assert!(health.problems().is_empty());
    let again = reqwest::Client::new()
        .get(format!("http://{dead}/v21.0/me"))
        .send()
        .await;
    let _ = read::<serde_json::Value>("whatsapp", "send", again, &health).await;
    assert!(health.problems().is_empty(), "an outage, not a setting");
}
