//! What pigeon's HTTP layer costs per message, next to a bare HTTP POST of
//! the same body to the same server: each platform transport sends N full
//! messages, one after another, to its emulator on 127.0.0.1 with pacing
//! off, and so does a plain `reqwest` client. Prints one JSON line per
//! platform (`bench/run` section 7).
//!
//! ```text
//! cargo run --release -p pigeon-core --example http_overhead -- [N]
//! ```

use std::time::{Duration, Instant};

use pigeon_core::transport::{shipper, telegram, whatsapp, Message, Transport};

fn stats(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    serde_json::json!({ "mean_ms": round(mean), "p50_ms": round(at(0.5)), "p99_ms": round(at(0.99)) })
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn time_sends(t: &mut impl Transport, n: usize, message: &Message) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        if let Err(e) = t.send(&"peer".to_string(), message.clone()).await {
            panic!(
                "a send to the emulator failed: {}",
                e.to_string().chars().take(200).collect::<String>()
            );
        }
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    out
}

async fn time_bare(
    n: usize,
    request: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Vec<f64> {
    let http = reqwest::Client::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let r = request(&http).send().await.expect("a bare POST");
        let _ = r.bytes().await;
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    out
}

fn report(platform: &str, n: usize, size: usize, pigeon: Vec<f64>, bare: Vec<f64>) {
    let (p, b) = (stats(pigeon), stats(bare));
    let overhead = p["mean_ms"].as_f64().unwrap_or(0.0) - b["mean_ms"].as_f64().unwrap_or(0.0);
    println!(
        "{}",
        serde_json::json!({
            "kind": "overhead", "platform": platform, "messages": n, "message_size": size,
            "pigeon": p, "bare": b, "overhead_ms": round(overhead),
        })
    );
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let text = "A".repeat(4096);
    let message = Message::Text(text.clone());

    // Telegram: sendMessage.
    let tg = pigeon_emulator::telegram::Emulator::new(&[
        pigeon_emulator::telegram::BotSpec {
            token: "1:a".into(),
            username: "a_bot".into(),
        },
        pigeon_emulator::telegram::BotSpec {
            token: "2:b".into(),
            username: "b_bot".into(),
        },
    ])
    .with_rate(1e9);
    let api = pigeon_emulator::serve_in_background(tg.router()).expect("emulator");
    std::env::set_var("OVERHEAD_TG", "1:a");
    let uri = telegram::TelegramUri::parse(&format!("@b_bot?token_env=OVERHEAD_TG&api={api}"))
        .expect("uri");
    let mut t = telegram::Telegram::open(uri).expect("telegram");
    let pigeon = time_sends(&mut t, n, &message).await;
    let bare = time_bare(n, |h| {
        h.post(format!("{api}/bot1:a/sendMessage"))
            .json(&serde_json::json!({"chat_id": "@b_bot", "text": text}))
    })
    .await;
    report("telegram", n, 4096, pigeon, bare);

    // Shipper: a signed 1 MB post.
    let sh = pigeon_emulator::shipper::Emulator::new(&[
        pigeon_emulator::shipper::AccountSpec {
            name: "a".into(),
            key: "ka".into(),
            secret: "sa".into(),
        },
        pigeon_emulator::shipper::AccountSpec {
            name: "b".into(),
            key: "kb".into(),
            secret: "sb".into(),
        },
    ])
    .with_rate_limit(u32::MAX / 2);
    let base = pigeon_emulator::serve_in_background(sh.router()).expect("emulator");
    std::env::set_var("OVERHEAD_SK", "ka");
    std::env::set_var("OVERHEAD_SS", "sa");
    let uri = shipper::ShipperUri::parse(&format!(
        "b?base_url={base}&api_key_env=OVERHEAD_SK&api_secret_env=OVERHEAD_SS"
    ))
    .expect("uri");
    let mut s = shipper::Shipper::open(uri).expect("shipper");
    let body = vec![7u8; 1_000_000];
    let pigeon = time_sends(&mut s, n / 3, &Message::Binary(body.clone())).await;
    // The bare client skips the signature, so the server refuses it (401)
    // after reading the body: the same bytes moved, minus pigeon's work.
    let bare = time_bare(n / 3, |h| {
        h.post(format!("{base}/v1/messages/b")).body(body.clone())
    })
    .await;
    report("shipper", n / 3, body.len(), pigeon, bare);

    // WhatsApp: a text message (the webhook is not needed to send).
    let hook = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = hook.local_addr().expect("addr").port();
    drop(hook);
    let wa = pigeon_emulator::whatsapp::Emulator::new(&[pigeon_emulator::whatsapp::NumberSpec {
        phone_id: "1".into(),
        wa_id: "15550000001".into(),
        name: "a".into(),
        token: "ta".into(),
        app_secret: "x".into(),
        verify_token: "v".into(),
        webhook: "http://127.0.0.1:9/unused".into(),
    }])
    .with_pair_rate(1e9, 1e9)
    .with_throughput(1e9);
    let base = pigeon_emulator::serve_in_background(wa.router()).expect("emulator");
    for (k, v) in [
        ("OVERHEAD_WT", "ta"),
        ("OVERHEAD_WA", "x"),
        ("OVERHEAD_WV", "v"),
    ] {
        std::env::set_var(k, v);
    }
    let uri = whatsapp::WhatsappUri::parse(&format!(
        "15550000009?phone_id=1&token_env=OVERHEAD_WT&app_secret_env=OVERHEAD_WA&verify_token_env=OVERHEAD_WV&listen=127.0.0.1:{port}&api={base}/v25.0"
    ))
    .expect("uri");
    let mut w = whatsapp::Whatsapp::open(uri).expect("whatsapp");
    let pigeon = time_sends(&mut w, n, &message).await;
    let bare = time_bare(n, |h| {
        h.post(format!("{base}/v25.0/1/messages"))
            .bearer_auth("ta")
            .json(&serde_json::json!({"messaging_product": "whatsapp", "to": "15550000009", "type": "text", "text": {"body": text}}))
    })
    .await;
    report("whatsapp", n, 4096, pigeon, bare);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
