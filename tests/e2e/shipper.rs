//! Issue 7 (Shipper): two real pigeon processes, each its own Shipper
//! account, talk through the reference server of the protocol
//! (`docs/shipper-protocol.md`), up and down, byte-exact; the server's
//! record proves every message within the size cap and no post inside a
//! `Retry-After`; what it stored never holds the plaintext; wrong or
//! replayed credentials are refused. Issue 32: a link learns the
//! server's limits (ping at open, and again on 413 and 429) and cuts and
//! paces its messages by them, also when they are lowered mid-transfer.

use std::time::Duration;

use crate::common::*;
use pigeon_emulator::shipper::{Emulator, Limits, Request};
use pigeon_emulator::Faults;

const CLIENT_KEY: &str = SHIP_CLIENT_KEY;
const CLIENT_SECRET: &str = SHIP_CLIENT_SECRET;
const AGENT_KEY: &str = SHIP_AGENT_KEY;
const AGENT_SECRET: &str = SHIP_AGENT_SECRET;
/// A line of the test files that must never reach the provider in clear.
const CANARY: &[u8] = b"PIGEON-CANARY-7f3a9c";

struct Ship {
    w: World,
    emu: Emulator,
    base: String,
}

impl Ship {
    fn new(rate_limit: u32) -> Ship {
        Ship::with_limits(pigeon_emulator::shipper::MAX_MESSAGE, rate_limit)
    }

    /// A server announcing (and holding posts to) these limits.
    fn with_limits(max_message: usize, rate_limit: u32) -> Ship {
        let (emu, base) = shipper_emulator(max_message, rate_limit);
        Ship {
            w: World::new(""),
            emu,
            base,
        }
    }

    fn uri(&self, peer: &str) -> String {
        format!(
            "shipper:{peer}?base_url={}&api_key_env=PIGEON_SHIPPER_KEY&api_secret_env=PIGEON_SHIPPER_SECRET&timeout=5",
            self.base
        )
    }

    fn start_agent(&self) -> Proc {
        let uri = self.uri("dev-laptop");
        let mut p = Proc::spawn_env(
            &self.w.agent_home,
            &["agent", "--transport", &uri],
            &self.w.logs,
            "agent",
            &[
                ("PIGEON_SHIPPER_KEY", AGENT_KEY),
                ("PIGEON_SHIPPER_SECRET", AGENT_SECRET),
            ],
        );
        wait_until("the agent is ready", Duration::from_secs(60), || {
            p.stderr().contains("agent ready") || p.exited()
        });
        assert!(!p.exited(), "the agent exited:\n{}", p.stderr());
        p
    }

    /// A pigeon command in the client's home with `secret` as its API secret.
    fn spawn_client_with(&self, secret: &str, args: &[&str]) -> Proc {
        let uri = self.uri("agent-phone");
        let mut v: Vec<&str> = args.to_vec();
        v.extend(["--json", "--transport", &uri]);
        Proc::spawn_env(
            &self.w.client_home,
            &v,
            &self.w.logs,
            "client",
            &[
                ("PIGEON_SHIPPER_KEY", CLIENT_KEY),
                ("PIGEON_SHIPPER_SECRET", secret),
            ],
        )
    }

    fn client(&self, args: &[&str]) -> Run {
        self.spawn_client_with(CLIENT_SECRET, args)
            .wait(CLIENT_TIMEOUT)
    }

    fn record(&self) -> Vec<Request> {
        self.emu.record()
    }

    /// Posts by `account` the server answered with `status`.
    fn answered(&self, account: &str, status: u16) -> Vec<Request> {
        self.record()
            .into_iter()
            .filter(|r| r.method == "send" && r.account == account && r.status == status)
            .collect()
    }

    fn sends_by(&self, account: &str) -> usize {
        self.record()
            .iter()
            .filter(|r| r.method == "send" && r.account == account)
            .count()
    }

    /// A file of `len` bytes: random, with the canary every 4 KiB.
    fn canary_file(&self, name: &str, len: usize, seed: u64) -> std::path::PathBuf {
        self.w.canary_file(name, len, seed, CANARY)
    }
}

/// Every message within the cap, no post inside a `Retry-After`, nothing
/// stored in clear, and no secret in what the parties printed.
fn check_record(s: &Ship, runs: &[&Run]) {
    let record = s.record();
    for r in record.iter().filter(|r| r.method == "send") {
        assert!(r.size <= 1_000_000, "a message of {} bytes", r.size);
    }
    let calls: Vec<Call> = record
        .iter()
        .map(|r| Call {
            who: r.account.clone(),
            send: r.method == "send",
            at_ms: r.at_ms,
            wait_ms: r.retry_after_ms.filter(|_| r.status == 429),
        })
        .collect();
    assert_no_send_inside_a_wait(&calls);
    let bodies = s.emu.bodies();
    assert!(!bodies.is_empty(), "messages went through the provider");
    assert_no_plaintext(&bodies, CANARY);
    for run in runs {
        for secret in [CLIENT_SECRET, AGENT_SECRET, "shipper-secret"] {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "a secret was printed:\n{}",
                run.describe()
            );
        }
    }
}

#[test]
fn moves_5_mb_up_and_down_byte_exact_and_the_provider_sees_no_plaintext() {
    let s = Ship::new(1000);
    let mut agent = s.start_agent();
    let f = s.canary_file("data.bin", 5_000_000, 1);
    let up = s.client(&["upload", f.to_str().unwrap()]);
    up.assert_ok();
    assert_same_file(&f, &s.w.storage().join("data.bin"));
    let out = s.w.work.join("data.back");
    let down = s.client(&["download", "data.bin", "-o", out.to_str().unwrap()]);
    down.assert_ok();
    assert_same_file(&f, &out);
    // 5 MB each way in messages of up to 1 MB: a handful, filled.
    let (by_client, by_agent) = (s.sends_by("dev-laptop"), s.sends_by("agent-phone"));
    assert!(
        (5..60).contains(&by_client) && (5..60).contains(&by_agent),
        "messages filled to the cap: {by_client} up, {by_agent} down"
    );
    check_record(&s, &[&up, &down]);
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn throttling_failures_stalls_and_redeliveries_cost_time_not_bytes() {
    // 60 posts a minute: a burst of 6, then one a second, which the link
    // learns from the server. Chunks fill 1 MB posts, so 12 MB last long
    // enough (about 12 s unhindered) for the faults to land in the middle
    // of the upload: they start once chunks flow (on the handshake, a lost
    // answer at this pace waits out the offer's timer instead).
    let s = Ship::new(60);
    let mut agent = s.start_agent();
    let f = s.canary_file("battered.bin", 12_000_000, 2);
    let emu = s.emu.clone();
    let injector = std::thread::spawn(move || {
        wait_until("chunks flow", Duration::from_secs(60), || {
            emu.record()
                .iter()
                .any(|r| r.method == "send" && r.status == 201 && r.size > 500_000)
        });
        emu.inject(Faults {
            method: "send".into(),
            count: 2,
            status: 429,
            retry_after: 2,
            ..Faults::default()
        });
        std::thread::sleep(Duration::from_millis(2500));
        emu.inject(Faults {
            method: "send".into(),
            count: 3,
            status: 503,
            redeliver: 5,
            stall: 2,
            stall_ms: 3000,
            ..Faults::default()
        });
    });
    let up = s.client(&["upload", f.to_str().unwrap()]);
    injector.join().unwrap();
    up.assert_ok();
    assert_same_file(&f, &s.w.storage().join("battered.bin"));
    assert!(
        s.record().iter().any(|r| r.status == 429),
        "the 429s were served"
    );
    check_record(&s, &[&up]);
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn either_side_killed_mid_transfer_loses_nothing() {
    let s = Ship::new(120);
    let mut agent = s.start_agent();
    let f = s.canary_file("dies.bin", 6_000_000, 3);
    let first = s.spawn_client_with(CLIENT_SECRET, &["upload", f.to_str().unwrap()]);
    let mut first = first;
    wait_until("the upload is under way", Duration::from_secs(60), || {
        s.sends_by("dev-laptop") >= 3 || first.exited()
    });
    first.kill9();
    agent.kill9();
    let mut agent = s.start_agent();
    let second = s.spawn_client_with(CLIENT_SECRET, &["upload", f.to_str().unwrap()]);
    wait_until(
        "the upload is under way again",
        Duration::from_secs(60),
        || s.sends_by("dev-laptop") >= 6,
    );
    agent.kill9();
    let mut agent = s.start_agent();
    let run = second.wait(CLIENT_TIMEOUT);
    run.assert_ok();
    assert_same_file(&f, &s.w.storage().join("dies.bin"));
    check_record(&s, &[&run]);
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn a_wrong_secret_is_refused_with_what_to_do_and_never_printed() {
    let s = Ship::new(1000);
    let mut agent = s.start_agent();
    let run = s
        .spawn_client_with("not-the-secret", &["ls", "--timeout", "8"])
        .wait(CLIENT_TIMEOUT);
    run.assert_failed();
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(!all.contains("not-the-secret"), "printed:\n{all}");
    assert!(
        all.contains("refused the credentials") && all.contains("api_secret"),
        "the user is told which setting to check:\n{all}"
    );
    // `transports test` checks the credentials without disturbing the agent.
    let uri = s.uri("agent-phone");
    let check = |secret: &str| {
        Proc::spawn_env(
            &s.w.client_home,
            &["transports", "test", &uri],
            &s.w.logs,
            "check",
            &[
                ("PIGEON_SHIPPER_KEY", CLIENT_KEY),
                ("PIGEON_SHIPPER_SECRET", secret),
            ],
        )
        .wait(CLIENT_TIMEOUT)
    };
    let good = check(CLIENT_SECRET);
    good.assert_ok();
    assert!(
        good.stdout.contains("the account \"dev-laptop\""),
        "{}",
        good.describe()
    );
    let bad = check("not-the-secret");
    bad.assert_failed();
    assert!(
        bad.stdout.contains("bad_signature") && !bad.stdout.contains("not-the-secret"),
        "{}",
        bad.describe()
    );
    // `transports list` checks what config.toml names, one line each.
    std::fs::write(
        s.w.client_home.join("config.toml"),
        format!("transports = [{uri:?}, \"shipper:nobody\"]\n"),
    )
    .unwrap();
    let list = Proc::spawn_env(
        &s.w.client_home,
        &["transports", "list"],
        &s.w.logs,
        "list",
        &[
            ("PIGEON_SHIPPER_KEY", CLIENT_KEY),
            ("PIGEON_SHIPPER_SECRET", CLIENT_SECRET),
        ],
    )
    .wait(CLIENT_TIMEOUT);
    list.assert_failed();
    assert!(
        list.stdout.contains("1. shipper:agent-phone")
            && list.stdout.contains("ok, these credentials")
            && list.stdout.contains("2. ")
            && list.stdout.contains("needs base_url"),
        "{}",
        list.describe()
    );
    agent.terminate(Duration::from_secs(10));
}

/// What a hostile network does to a signed request: replays it, changes
/// its body or its path, or holds it for ten minutes. The server refuses
/// each, so the protocol's guarantees hold for any conforming server.
#[test]
fn replayed_altered_and_stale_requests_are_refused() {
    use hmac::Mac;
    let s = Ship::new(1000);
    let client = reqwest::blocking::Client::new();
    let sign = |method: &str, path: &str, ts: u64, nonce: &str, body: &[u8]| {
        let canonical =
            pigeon_emulator::shipper::canonical(method, path, &ts.to_string(), nonce, body);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(CLIENT_SECRET.as_bytes()).unwrap();
        mac.update(canonical.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let post = |path: &str, ts: u64, nonce: &str, signed_body: &[u8], body: &[u8]| {
        client
            .post(format!("{}{path}", s.base))
            .header("X-Shipper-Key", CLIENT_KEY)
            .header("X-Shipper-Timestamp", ts.to_string())
            .header("X-Shipper-Nonce", nonce)
            .header(
                "X-Shipper-Signature",
                sign("POST", "/v1/messages/agent-phone", ts, nonce, signed_body),
            )
            .body(body.to_vec())
            .send()
            .unwrap()
    };
    let code = |r: reqwest::blocking::Response| {
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().unwrap_or_default();
        (
            status,
            v["error"]["code"].as_str().unwrap_or("").to_string(),
        )
    };
    let path = "/v1/messages/agent-phone";
    assert_eq!(
        post(path, now, "00112233445566778899", b"hi", b"hi").status(),
        201
    );
    assert_eq!(
        code(post(path, now, "00112233445566778899", b"hi", b"hi")),
        (401, "replayed".into())
    );
    assert_eq!(
        code(post(path, now, "aa112233445566778899", b"hi", b"HI")),
        (401, "bad_signature".into())
    );
    assert_eq!(
        code(post(
            "/v1/messages/dev-laptop",
            now,
            "bb112233445566778899",
            b"hi",
            b"hi"
        )),
        (401, "bad_signature".into())
    );
    assert_eq!(
        code(post(path, now - 600, "cc112233445566778899", b"hi", b"hi")),
        (401, "stale_timestamp".into())
    );
    let accepted = s.record().iter().filter(|r| r.status == 201).count();
    assert_eq!(accepted, 1, "only the first, genuine request was taken");
}

/// Issue 32: against a server announcing 400,000-byte messages pigeon
/// posted 999,990-byte ones, refused with 413 for ever, and paced itself
/// at 1000 a minute against a server allowing 60. Asked at open, the
/// server's limits cut and pace every message from the first.
#[test]
fn an_upload_is_cut_and_paced_to_the_limits_the_server_announces() {
    let s = Ship::with_limits(400_000, 60);
    let mut agent = s.start_agent();
    let f = s.canary_file("limited.bin", 3_000_000, 4);
    let up = s
        .spawn_client_with(CLIENT_SECRET, &["upload", f.to_str().unwrap()])
        .wait(Duration::from_secs(60));
    up.assert_ok();
    assert_same_file(&f, &s.w.storage().join("limited.bin"));
    for account in ["dev-laptop", "agent-phone"] {
        assert_eq!(
            s.answered(account, 413).len(),
            0,
            "{account} posted over the announced max_message"
        );
        let limited = s.answered(account, 429).len();
        assert!(
            limited <= 2,
            "{account} was refused {limited} posts as over the pace"
        );
    }
    let sizes: Vec<usize> = s
        .answered("dev-laptop", 201)
        .iter()
        .map(|r| r.size)
        .collect();
    assert!(
        sizes.iter().all(|&n| n <= 400_000) && sizes.iter().filter(|&&n| n > 300_000).count() >= 5,
        "messages filled to the announced 400,000 bytes: {sizes:?}"
    );
    check_record(&s, &[&up]);
    agent.terminate(Duration::from_secs(10));
}

/// Issue 32: the server lowers its limits while an upload runs. The link
/// learns them from the 413 (pinging again), cuts what was refused to the
/// new size, slows to the new pace, and the upload finishes.
#[test]
fn limits_lowered_mid_transfer_are_learned_and_the_upload_finishes() {
    let s = Ship::with_limits(1_000_000, 120);
    let mut agent = s.start_agent();
    let f = s.canary_file("lowered.bin", 4_000_000, 5);
    let emu = s.emu.clone();
    let lowered_at = std::sync::Arc::new(std::sync::Mutex::new(None));
    let lowering = {
        let lowered_at = lowered_at.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(60) {
                let big = emu
                    .record()
                    .iter()
                    .filter(|r| r.method == "send" && r.status == 201 && r.size > 500_000)
                    .count();
                if big >= 2 {
                    let at = emu.record().last().map_or(0, |r| r.at_ms);
                    emu.set_limits(Limits {
                        max_message: Some(300_000),
                        rate_limit: Some(60),
                    });
                    *lowered_at.lock().unwrap() = Some(at);
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let up = s
        .spawn_client_with(CLIENT_SECRET, &["upload", f.to_str().unwrap()])
        .wait(Duration::from_secs(60));
    lowering.join().unwrap();
    up.assert_ok();
    assert_same_file(&f, &s.w.storage().join("lowered.bin"));
    let lowered_at = lowered_at
        .lock()
        .unwrap()
        .expect("the limits were lowered mid-transfer");
    let too_large = s.answered("dev-laptop", 413);
    assert!(
        !too_large.is_empty() && too_large.len() <= 4,
        "only the posts on the wire when the limit went down were refused: {too_large:?}"
    );
    let first_refusal = too_large[0].at_ms;
    let pinged_again = s
        .record()
        .iter()
        .any(|r| r.method == "ping" && r.account == "dev-laptop" && r.at_ms >= first_refusal);
    assert!(pinged_again, "the 413 had the link ask the server's limits");
    let after: Vec<usize> = s
        .answered("dev-laptop", 201)
        .iter()
        .filter(|r| r.at_ms > first_refusal)
        .map(|r| r.size)
        .collect();
    assert!(
        !after.is_empty() && after.iter().all(|&n| n <= 300_000),
        "posts after the refusal fit the new limit: {after:?}"
    );
    let limited = s.answered("dev-laptop", 429).len();
    assert!(limited <= 2, "{limited} posts over the new pace");
    assert!(lowered_at <= first_refusal, "refused only once lowered");
    check_record(&s, &[&up]);
    agent.terminate(Duration::from_secs(10));
}
