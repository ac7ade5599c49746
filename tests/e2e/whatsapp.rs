//! Issue 7 (WhatsApp): two real pigeon processes, each a business number
//! of the Cloud API, talk through a local emulator of it: sends by the
//! Graph API, receipts by signed webhooks each process listens for. Text
//! mode and document mode, up and down, byte-exact; the record proves every
//! message within WhatsApp's limits and no send inside a pair-rate wait;
//! what the provider held never has the plaintext; wrong tokens, wrong
//! signatures and a closed 24-hour window are said plainly.

use std::time::Duration;

use crate::common::*;
use pigeon_emulator::whatsapp::{Emulator, NumberSpec, Request};
use pigeon_emulator::Faults;

const CLIENT_TOKEN: &str = "EAAclient-wa-secret-token";
const AGENT_TOKEN: &str = "EAAagent-wa-secret-token";
const APP_SECRET: &str = "wa-app-secret-value";
const VERIFY: &str = "wa-verify-token-value";
const CLIENT_WA: &str = "15550001001";
const AGENT_WA: &str = "15550001002";
/// Must never reach the provider in clear.
const CANARY: &[u8] = b"PIGEON-CANARY-wa-41d2";

struct Wa {
    w: World,
    emu: Emulator,
    api: String,
    client_port: u16,
    agent_port: u16,
    /// More of both parties' URI query (`&alphabet=dense`).
    more: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

impl Wa {
    fn new() -> Wa {
        let (client_port, agent_port) = (free_port(), free_port());
        let number = |phone_id: &str, wa_id: &str, name: &str, token: &str, port: u16| NumberSpec {
            phone_id: phone_id.into(),
            wa_id: wa_id.into(),
            name: name.into(),
            token: token.into(),
            app_secret: APP_SECRET.into(),
            verify_token: VERIFY.into(),
            webhook: format!("http://127.0.0.1:{port}/webhook"),
        };
        // Names with non-ASCII: the signed webhook bodies escape them.
        let emu = Emulator::new(&[
            number("1001", CLIENT_WA, "Dev laptop ✉", CLIENT_TOKEN, client_port),
            number("1002", AGENT_WA, "Téléphone agent", AGENT_TOKEN, agent_port),
        ])
        .with_pair_rate(25.0, 5.0);
        let base = pigeon_emulator::serve_in_background(emu.router())
            .expect("the emulator listens on 127.0.0.1");
        Wa {
            w: World::new(""),
            emu,
            api: format!("{base}/v25.0"),
            client_port,
            agent_port,
            more: String::new(),
        }
    }

    fn uri(&self, peer: &str, phone_id: &str, port: u16, mode: &str) -> String {
        format!(
            "whatsapp:{peer}?phone_id={phone_id}&token_env=PIGEON_WA_TOKEN&app_secret_env=PIGEON_WA_APP_SECRET&verify_token_env=PIGEON_WA_VERIFY&listen=127.0.0.1:{port}&api={}&mode={mode}&msgs_per_min=1200{}",
            self.api, self.more
        )
    }

    fn client_uri(&self, mode: &str) -> String {
        self.uri(AGENT_WA, "1001", self.client_port, mode)
    }

    fn start_agent(&self, mode: &str) -> Proc {
        let uri = self.uri(CLIENT_WA, "1002", self.agent_port, mode);
        let mut p = Proc::spawn_env(
            &self.w.agent_home,
            &["agent", "--transport", &uri],
            &self.w.logs,
            "agent",
            &env(AGENT_TOKEN, APP_SECRET),
        );
        wait_until("the agent is ready", Duration::from_secs(60), || {
            p.stderr().contains("agent ready") || p.exited()
        });
        assert!(!p.exited(), "the agent exited:\n{}", p.stderr());
        p
    }

    fn spawn_client_with(&self, token: &str, app_secret: &str, mode: &str, args: &[&str]) -> Proc {
        let uri = self.client_uri(mode);
        let mut v: Vec<&str> = args.to_vec();
        v.extend(["--json", "--transport", &uri]);
        Proc::spawn_env(
            &self.w.client_home,
            &v,
            &self.w.logs,
            "client",
            &env(token, app_secret),
        )
    }

    fn client(&self, mode: &str, args: &[&str]) -> Run {
        self.spawn_client_with(CLIENT_TOKEN, APP_SECRET, mode, args)
            .wait(CLIENT_TIMEOUT)
    }

    fn record(&self) -> Vec<Request> {
        self.emu.record()
    }

    fn sends_by(&self, number: &str) -> usize {
        self.record()
            .iter()
            .filter(|r| r.method == "messages" && r.number == number && r.status == 200)
            .count()
    }

    fn canary_file(&self, name: &str, len: usize, seed: u64) -> std::path::PathBuf {
        self.w.canary_file(name, len, seed, CANARY)
    }

    fn round_trip(&self, mode: &str, size: usize, seed: u64) -> (Run, Run) {
        let f = self.canary_file(&format!("{mode}.bin"), size, seed);
        let up = self.client(mode, &["upload", f.to_str().unwrap()]);
        up.assert_ok();
        assert_same_file(&f, &self.w.storage().join(format!("{mode}.bin")));
        let out = self.w.work.join(format!("{mode}.back"));
        let down = self.client(
            mode,
            &[
                "download",
                &format!("{mode}.bin"),
                "-o",
                out.to_str().unwrap(),
            ],
        );
        down.assert_ok();
        assert_same_file(&f, &out);
        (up, down)
    }
}

fn env<'a>(token: &'a str, app_secret: &'a str) -> [(&'static str, &'a str); 3] {
    [
        ("PIGEON_WA_TOKEN", token),
        ("PIGEON_WA_APP_SECRET", app_secret),
        ("PIGEON_WA_VERIFY", VERIFY),
    ]
}

/// Every message within WhatsApp's limits, nothing sent to a user inside
/// the 6 s after a pair-rate error, nothing in clear at the provider, and
/// no secret in what the parties printed.
fn check_record(wa: &Wa, runs: &[&Run]) {
    let record = wa.record();
    for r in &record {
        if r.method == "messages" {
            assert!(r.size <= 4096, "a text of {} characters", r.size);
        }
        if r.method == "media" {
            assert!(r.size <= 100_000_000, "a document of {} bytes", r.size);
        }
    }
    let calls: Vec<Call> = record
        .iter()
        .map(|r| Call {
            who: r.number.clone(),
            send: r.method == "messages",
            at_ms: r.at_ms,
            wait_ms: r.retry_after_ms.filter(|_| r.code == Some(131056)),
        })
        .collect();
    assert_no_send_inside_a_wait(&calls);
    let bodies = wa.emu.bodies();
    assert!(!bodies.is_empty(), "messages went through the provider");
    assert_no_plaintext(&bodies, CANARY);
    for run in runs {
        for secret in [
            CLIENT_TOKEN,
            AGENT_TOKEN,
            APP_SECRET,
            VERIFY,
            "wa-secret-token",
        ] {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "a secret was printed:\n{}",
                run.describe()
            );
        }
    }
}

#[test]
fn text_mode_moves_300_kb_up_and_down_byte_exact() {
    let wa = Wa::new();
    let mut agent = wa.start_agent("text");
    let (up, down) = wa.round_trip("text", 300_000, 1);
    assert!(
        wa.sends_by("1001") >= 100 && wa.sends_by("1002") >= 100,
        "300 KB each way in 3 KB texts"
    );
    assert!(
        wa.record()
            .iter()
            .any(|r| r.method == "webhook_verify" && r.status == 200),
        "each webhook passed Meta's handshake"
    );
    check_record(&wa, &[&up, &down]);
    agent.terminate(Duration::from_secs(10));
}

/// Issue 29: with `alphabet=dense` every message that carries data spells
/// 15 bits a character, within WhatsApp's 4096 (UTF-16 units, as the
/// emulator counts them), and 200 KB each way take fewer than half
/// base64's messages.
#[test]
fn text_mode_with_the_dense_alphabet_moves_200_kb_up_and_down_byte_exact() {
    let mut wa = Wa::new();
    wa.more = "&alphabet=dense".into();
    let mut agent = wa.start_agent("text");
    let (up, down) = wa.round_trip("text", 200_000, 4);
    let dense = assert_chunks_go_dense("whatsapp", &wa.emu.bodies());
    assert!(dense >= 2 * 200_000 / 7680, "{dense} dense messages");
    let sent = wa.sends_by("1001") + wa.sends_by("1002");
    // 200 KB each way: 134 messages of 3 KB in base64, 54 of 7.5 KB dense.
    assert!(sent <= 90, "200 KB each way took {sent} messages");
    check_record(&wa, &[&up, &down]);
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn document_mode_moves_5_mb_up_and_down_byte_exact() {
    let wa = Wa::new();
    let mut agent = wa.start_agent("document");
    let (up, down) = wa.round_trip("document", 5_000_000, 2);
    let docs = wa
        .record()
        .iter()
        .filter(|r| r.method == "media" && r.status == 200)
        .count();
    assert!(docs >= 2, "chunks travel as documents: {docs}");
    check_record(&wa, &[&up, &down]);
    agent.terminate(Duration::from_secs(10));
}

/// Throughput errors, 5xx, a stall, webhooks delivered twice, and media
/// that expired before it was fetched: the transfer takes longer, and
/// arrives whole.
#[test]
fn throttling_failures_redeliveries_and_expired_media_cost_time_not_bytes() {
    let wa = Wa::new();
    let mut agent = wa.start_agent("document");
    let f = wa.canary_file("battered.bin", 3_000_000, 3);
    // The first documents handed over expire before they are fetched, and
    // the first message meets the pair rate as Meta says it: 400, 131056.
    wa.emu.inject(Faults {
        expire_media: 2,
        method: "messages".into(),
        count: 1,
        status: 400,
        code: Some(131056),
        ..Faults::default()
    });
    let emu = wa.emu.clone();
    // Each fault once the one before it was served (by the record), so
    // none is overwritten before its turn, however fast the machine.
    let injector = std::thread::spawn(move || {
        let served = |code: i64| {
            wait_until("a fault was served", Duration::from_secs(90), || {
                emu.record().iter().any(|r| r.code == Some(code))
            })
        };
        served(131056);
        emu.inject(Faults {
            method: "messages".into(),
            count: 2,
            status: 429,
            expire_media: 2,
            ..Faults::default()
        });
        served(130429);
        emu.inject(Faults {
            method: "media".into(),
            count: 2,
            status: 503,
            redeliver: 6,
            stall: 2,
            stall_ms: 3000,
            expire_media: 2,
            ..Faults::default()
        });
    });
    let up = wa.client("document", &["upload", f.to_str().unwrap()]);
    injector.join().unwrap();
    up.assert_ok();
    assert_same_file(&f, &wa.w.storage().join("battered.bin"));
    let record = wa.record();
    assert!(
        record.iter().any(|r| r.code == Some(130429)),
        "the throttling was served"
    );
    assert!(
        record.iter().any(|r| r.code == Some(131056)),
        "the pair rate was met (and check_record proves nothing went inside its 6 s)"
    );
    assert!(
        record
            .iter()
            .any(|r| r.method == "media_lookup" && r.code == Some(100)),
        "an expired media id was met"
    );
    check_record(&wa, &[&up]);
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn a_client_killed_mid_upload_and_a_restarted_agent_lose_nothing() {
    let wa = Wa::new();
    let mut agent = wa.start_agent("text");
    let f = wa.canary_file("dies.bin", 200_000, 4);
    let mut first = wa.spawn_client_with(
        CLIENT_TOKEN,
        APP_SECRET,
        "text",
        &["upload", f.to_str().unwrap()],
    );
    wait_until("the upload is under way", Duration::from_secs(60), || {
        wa.sends_by("1001") >= 20 || first.exited()
    });
    first.kill9();
    agent.kill9();
    let mut agent = wa.start_agent("text");
    let run = wa.client("text", &["upload", f.to_str().unwrap()]);
    run.assert_ok();
    assert_same_file(&f, &wa.w.storage().join("dies.bin"));
    check_record(&wa, &[&run]);
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn wrong_tokens_wrong_signatures_and_a_closed_window_are_said_plainly() {
    let wa = Wa::new();
    let mut agent = wa.start_agent("text");
    // A wrong access token.
    let run = wa
        .spawn_client_with(
            "EAAwrong-token",
            APP_SECRET,
            "text",
            &["ls", "--timeout", "8"],
        )
        .wait(CLIENT_TIMEOUT);
    run.assert_failed();
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(!all.contains("EAAwrong-token"), "printed:\n{all}");
    assert!(
        all.contains("access token is invalid"),
        "the user is told the token is wrong:\n{all}"
    );
    // The client's app secret is not the app's: Meta's signed webhooks are
    // refused, and the user is told why nothing arrives.
    let run = wa
        .spawn_client_with(
            CLIENT_TOKEN,
            "not-the-app-secret",
            "text",
            &["ls", "--timeout", "8"],
        )
        .wait(CLIENT_TIMEOUT);
    run.assert_failed();
    assert!(
        run.stderr.contains("X-Hub-Signature-256") && run.stderr.contains("app_secret"),
        "{}",
        run.describe()
    );
    assert!(
        wa.record()
            .iter()
            .any(|r| r.method == "webhook" && r.status == 401),
        "the bad-signature refusal is what Meta saw"
    );
    // `transports test` checks the token without opening the webhook.
    let check = Proc::spawn_env(
        &wa.w.client_home,
        &["transports", "test", &wa.client_uri("text")],
        &wa.w.logs,
        "check",
        &env(CLIENT_TOKEN, APP_SECRET),
    )
    .wait(CLIENT_TIMEOUT);
    check.assert_ok();
    assert!(
        check.stdout.contains("+15550001001"),
        "{}",
        check.describe()
    );
    // Every 24-hour window closes: sends are accepted, then fail by status.
    wa.emu.inject(Faults {
        method: "window".into(),
        ..Faults::default()
    });
    let run = wa.client("text", &["ls", "--timeout", "8"]);
    run.assert_failed();
    assert!(
        run.stderr.contains("24-hour window") && run.stderr.contains("write first"),
        "{}",
        run.describe()
    );
    check_record(&wa, &[&run, &check]);
    agent.terminate(Duration::from_secs(10));
}
