//! Issue 7 (Telegram): two real pigeon processes, each its own bot, talk
//! through a local emulator of the Telegram Bot API (bot-to-bot mode), in
//! text mode and in document mode, up and down, byte-exact; the emulator's
//! record proves every message within Telegram's limits and no send inside
//! a `retry_after`.

use std::time::{Duration, Instant};

use crate::common::*;
use pigeon_emulator::telegram::{BotSpec, Emulator, Faults, Request};

const CLIENT_TOKEN: &str = TG_CLIENT_TOKEN;
const AGENT_TOKEN: &str = TG_AGENT_TOKEN;
/// Written through every test file: must never reach the provider in clear.
const CANARY: &[u8] = b"PIGEON-CANARY-tg-5b8e";

/// An emulator on 127.0.0.1 in a thread of its own, and two parties.
struct Tg {
    w: World,
    emu: Emulator,
    api: String,
    /// More of both parties' URI query (`&alphabet=dense`).
    more: String,
}

impl Tg {
    fn new(rate: f64) -> Tg {
        let w = World::new("");
        let (emu, api) = telegram_emulator(rate);
        Tg {
            w,
            emu,
            api,
            more: String::new(),
        }
    }

    fn uri(&self, peer: &str, mode: &str, pace: u32) -> String {
        format!(
            "telegram:@{peer}?token_env=PIGEON_TG_TOKEN&api={}&mode={mode}&msgs_per_min={pace}{}",
            self.api, self.more
        )
    }

    fn start_agent(&mut self, mode: &str, pace: u32) -> Proc {
        let uri = self.uri("client_bot", mode, pace);
        self.spawn_agent(&uri)
    }

    /// An agent on `telegram:*`: it answers whoever writes.
    fn start_star_agent(&self) -> Proc {
        let star = format!(
            "telegram:*?token_env=PIGEON_TG_TOKEN&api={}&mode=text&msgs_per_min=1200",
            self.api
        );
        self.spawn_agent(&star)
    }

    fn spawn_agent(&self, uri: &str) -> Proc {
        let mut p = Proc::spawn_env(
            &self.w.agent_home,
            &["agent", "--transport", uri],
            &self.w.logs,
            "agent",
            &[("PIGEON_TG_TOKEN", AGENT_TOKEN)],
        );
        wait_until("the agent is ready", Duration::from_secs(60), || {
            p.stderr().contains("agent ready") || p.exited()
        });
        assert!(!p.exited(), "the agent exited:\n{}", p.stderr());
        p
    }

    fn client(&self, mode: &str, pace: u32, args: &[&str]) -> Run {
        self.client_with_token(mode, pace, CLIENT_TOKEN, args)
    }

    fn client_with_token(&self, mode: &str, pace: u32, token: &str, args: &[&str]) -> Run {
        let uri = self.uri("agent_bot", mode, pace);
        let mut v: Vec<&str> = args.to_vec();
        v.extend(["--json", "--transport", &uri]);
        self.spawn_client(token, &v).wait(CLIENT_TIMEOUT)
    }

    /// A pigeon command in the client's home, with `token` as its bot's.
    fn spawn_client(&self, token: &str, args: &[&str]) -> Proc {
        Proc::spawn_env(
            &self.w.client_home,
            args,
            &self.w.logs,
            "client",
            &[("PIGEON_TG_TOKEN", token)],
        )
    }

    /// The chats the agent's bot sent a message to.
    fn chats_the_agent_wrote_to(&self) -> std::collections::BTreeSet<String> {
        self.record()
            .iter()
            .filter(|r| r.bot == "agent_bot" && r.method == "sendMessage" && r.status == 200)
            .filter_map(|r| r.chat.clone())
            .collect()
    }

    fn record(&self) -> Vec<Request> {
        self.emu.record()
    }
}

/// Every message within Telegram's limits, no 429 unanswered by a wait,
/// and no token anywhere in what the parties printed.
fn check_record(tg: &Tg, runs: &[&Run]) {
    let bodies = tg.emu.bodies();
    assert!(!bodies.is_empty(), "messages went through the provider");
    assert_no_plaintext(&bodies, CANARY);
    let record = tg.record();
    for r in &record {
        if r.method == "sendMessage" {
            assert!(r.size <= 4096, "a message of {} characters", r.size);
        }
        if r.method == "sendDocument" {
            assert!(r.size <= 20_000_000, "a document of {} bytes", r.size);
        }
    }
    // After a 429, that bot sends nothing before retry_after.
    let calls: Vec<Call> = record
        .iter()
        .map(|r| Call {
            who: r.bot.clone(),
            send: r.method.starts_with("send"),
            at_ms: r.at_ms,
            wait_ms: r.retry_after_ms.filter(|_| r.status == 429),
        })
        .collect();
    assert_no_send_inside_a_wait(&calls);
    for run in runs {
        for secret in [CLIENT_TOKEN, AGENT_TOKEN, "secret-token"] {
            assert!(
                !run.stdout.contains(secret) && !run.stderr.contains(secret),
                "a token was printed:\n{}",
                run.describe()
            );
        }
    }
}

fn round_trip(tg: &Tg, mode: &str, pace: u32, size: usize, seed: u64) -> (Run, Run) {
    let f = canary_file(&tg.w, &format!("{mode}.bin"), size, seed);
    let up = tg.client(mode, pace, &["upload", f.to_str().unwrap()]);
    up.assert_ok();
    assert_same_file(&f, &tg.w.storage().join(format!("{mode}.bin")));
    let out = tg.w.work.join(format!("{mode}.back"));
    let down = tg.client(
        mode,
        pace,
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

#[test]
fn text_mode_moves_300_kb_up_and_down_byte_exact() {
    let mut tg = Tg::new(25.0);
    let mut agent = tg.start_agent("text", 1200);
    let (up, down) = round_trip(&tg, "text", 1200, 300_000, 1);
    let sent = tg
        .record()
        .iter()
        .filter(|r| r.method == "sendMessage" && r.status == 200)
        .count();
    assert!(sent >= 2 * 100, "300 KB each way in 3 KB messages: {sent}");
    check_record(&tg, &[&up, &down]);
    agent.terminate(Duration::from_secs(10));
}

/// Issue 29: with `alphabet=dense` each message spells 15 bits a
/// character, within Telegram's 4096 (UTF-16 units, as the emulator counts
/// them), and the same data takes fewer than half base64's messages.
#[test]
fn text_mode_with_the_dense_alphabet_moves_200_kb_up_and_down_byte_exact() {
    let mut tg = Tg::new(25.0);
    tg.more = "&alphabet=dense".into();
    let mut agent = tg.start_agent("text", 1200);
    let (up, down) = round_trip(&tg, "text", 1200, 200_000, 4);
    let dense = assert_chunks_go_dense("telegram", &tg.emu.bodies());
    assert!(dense >= 2 * 200_000 / 7680, "{dense} dense messages");
    let sent = tg
        .record()
        .iter()
        .filter(|r| r.method == "sendMessage" && r.status == 200)
        .count();
    // 200 KB each way: 134 messages of 3 KB in base64, 54 of 7.5 KB dense.
    assert!(sent <= 90, "200 KB each way took {sent} dense messages");
    check_record(&tg, &[&up, &down]);
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn document_mode_moves_5_mb_up_and_down_byte_exact() {
    let mut tg = Tg::new(25.0);
    let mut agent = tg.start_agent("document", 600);
    let (up, down) = round_trip(&tg, "document", 600, 5_000_000, 2);
    let docs = tg
        .record()
        .iter()
        .filter(|r| r.method == "sendDocument" && r.status == 200)
        .count();
    assert!(docs >= 2, "chunks travel as documents: {docs}");
    check_record(&tg, &[&up, &down]);
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn injected_429s_and_5xx_are_obeyed_and_survived() {
    let mut tg = Tg::new(25.0);
    let mut agent = tg.start_agent("text", 1200);
    let f = canary_file(&tg.w, "limited.bin", 120_000, 3);
    // Let the transfer start, then the provider says "slow down", twice,
    // and fails a few sends outright.
    let emu = tg.emu.clone();
    let injector = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        emu.inject(Faults {
            method: "sendMessage".into(),
            count: 2,
            status: 429,
            retry_after: 2,
            ..Faults::default()
        });
        std::thread::sleep(Duration::from_millis(2500));
        emu.inject(Faults {
            method: "sendMessage".into(),
            count: 3,
            status: 502,
            ..Faults::default()
        });
    });
    let started = Instant::now();
    let up = tg.client("text", 1200, &["upload", f.to_str().unwrap()]);
    injector.join().unwrap();
    up.assert_ok();
    assert_same_file(&f, &tg.w.storage().join("limited.bin"));
    let record = tg.record();
    assert!(
        record.iter().any(|r| r.status == 429),
        "the 429s were served (took {:?})",
        started.elapsed()
    );
    check_record(&tg, &[&up]);
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn a_wrong_token_is_refused_with_what_to_do_and_never_printed() {
    let mut tg = Tg::new(25.0);
    let mut agent = tg.start_agent("text", 1200);
    let run = tg.client_with_token("text", 1200, "999:wrong-token", &["ls", "--timeout", "8"]);
    run.assert_failed();
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(
        !all.contains("wrong-token"),
        "the token was printed:\n{all}"
    );
    assert!(
        all.contains("refused the bot token") && all.contains("BotFather"),
        "the user is told the token is wrong and where tokens come from:\n{all}"
    );
    // A token named but not set is refused before anything is sent.
    let uri = format!(
        "telegram:@agent_bot?token_env=PIGEON_TG_UNSET&api={}",
        tg.api
    );
    let run = Proc::spawn_env(
        &tg.w.client_home,
        &["ls", "--transport", &uri],
        &tg.w.logs,
        "client",
        &[],
    )
    .wait(CLIENT_TIMEOUT);
    run.assert_failed();
    assert!(
        run.stderr.contains("PIGEON_TG_UNSET is not set"),
        "{}",
        run.describe()
    );
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn redelivered_updates_and_a_client_killed_mid_upload_lose_nothing() {
    let mut tg = Tg::new(25.0);
    let mut agent = tg.start_agent("text", 1200);
    let f = canary_file(&tg.w, "battered.bin", 200_000, 4);
    let uri = tg.uri("agent_bot", "text", 1200);
    let spawn = |tg: &Tg| {
        tg.spawn_client(
            CLIENT_TOKEN,
            &["upload", f.to_str().unwrap(), "--json", "--transport", &uri],
        )
    };
    let mut first = spawn(&tg);
    wait_until("the upload is under way", Duration::from_secs(60), || {
        tg.record()
            .iter()
            .filter(|r| r.method == "sendMessage" && r.bot == "client_bot")
            .count()
            >= 20
            || first.exited()
    });
    // Telegram hands both bots their last updates again (as after a
    // poller restart), and the client dies without a word.
    tg.emu.inject(Faults {
        redeliver: 30,
        ..Faults::default()
    });
    first.kill9();
    let run = spawn(&tg).wait(CLIENT_TIMEOUT);
    run.assert_ok();
    assert_same_file(&f, &tg.w.storage().join("battered.bin"));
    check_record(&tg, &[&run]);
    agent.terminate(Duration::from_secs(10));
}

/// The agent dies mid-upload and comes back: what Telegram had not seen
/// confirmed is handed to the new process again (getUpdates without an
/// offset starts at the first unconfirmed update), and a provider stall of
/// seconds on the way costs time, not the transfer.
#[test]
fn an_agent_killed_mid_upload_and_a_stalled_provider_lose_nothing() {
    let mut tg = Tg::new(25.0);
    let mut agent = tg.start_agent("text", 1200);
    let f = canary_file(&tg.w, "agent-dies.bin", 200_000, 6);
    let uri = tg.uri("agent_bot", "text", 1200);
    let client = tg.spawn_client(
        CLIENT_TOKEN,
        &["upload", f.to_str().unwrap(), "--json", "--transport", &uri],
    );
    wait_until("the upload is under way", Duration::from_secs(60), || {
        tg.record()
            .iter()
            .filter(|r| r.method == "sendMessage" && r.bot == "client_bot")
            .count()
            >= 20
    });
    agent.kill9();
    tg.emu.inject(Faults {
        stall: 2,
        stall_ms: 3000,
        ..Faults::default()
    });
    let mut agent = tg.start_agent("text", 1200);
    let run = client.wait(CLIENT_TIMEOUT);
    run.assert_ok();
    assert_same_file(&f, &tg.w.storage().join("agent-dies.bin"));
    check_record(&tg, &[&run]);
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn transports_test_checks_the_token_and_says_what_is_wrong() {
    let tg = Tg::new(25.0);
    let uri = tg.uri("agent_bot", "text", 60);
    let check = |token: &str| {
        tg.spawn_client(token, &["transports", "test", &uri])
            .wait(CLIENT_TIMEOUT)
    };
    let good = check(CLIENT_TOKEN);
    good.assert_ok();
    assert!(
        good.stdout.contains("ok, this bot is @client_bot"),
        "{}",
        good.describe()
    );
    let bad = check("5:not-a-token");
    bad.assert_failed();
    assert!(
        bad.stdout.contains("refused the bot token") && !bad.stdout.contains("not-a-token"),
        "{}",
        bad.describe()
    );
}

/// An agent on `telegram:*` answers whoever writes: two clients, each its
/// own bot (and key), upload through it, and each gets its answers in its
/// own chat. A bot the agent does not trust gets nothing.
#[test]
fn an_agent_on_star_answers_each_client_in_its_own_chat() {
    let tg = Tg::new(25.0);
    let second_token = "1003:second-client-token";
    tg.emu.add_bot(BotSpec {
        token: second_token.into(),
        username: "second_bot".into(),
    });
    let mut agent = tg.start_star_agent();
    // The first client, as always.
    let f = canary_file(&tg.w, "first.bin", 40_000, 11);
    tg.client("text", 1200, &["upload", f.to_str().unwrap()])
        .assert_ok();
    assert_same_file(&f, &tg.w.storage().join("first.bin"));
    // A second client: its own home and key, trusted by the agent, its own bot.
    let (home, key) = tg.w.stranger("second");
    pigeon(
        &tg.w.agent_home,
        &["keys", "trust", &key, "--name", "second"],
        &tg.w.logs,
        Duration::from_secs(30),
    )
    .assert_ok();
    let uri = tg.uri("agent_bot", "text", 1200);
    let g = canary_file(&tg.w, "second.bin", 40_000, 12);
    Proc::spawn_env(
        &home,
        &["upload", g.to_str().unwrap(), "--json", "--transport", &uri],
        &tg.w.logs,
        "second",
        &[("PIGEON_TG_TOKEN", second_token)],
    )
    .wait(CLIENT_TIMEOUT)
    .assert_ok();
    assert_same_file(&g, &tg.w.storage_root().join("second/second.bin"));
    // A stranger's bot writes too, with a key the agent does not trust:
    // it gets the refusal, and nothing else.
    let stranger_token = "1004:stranger-token";
    let stranger_id = tg.emu.add_bot(BotSpec {
        token: stranger_token.into(),
        username: "stranger_bot".into(),
    });
    let (stranger_home, _) = tg.w.stranger("intruder");
    let run = Proc::spawn_env(
        &stranger_home,
        &["ls", "--timeout", "5", "--transport", &uri],
        &tg.w.logs,
        "intruder",
        &[("PIGEON_TG_TOKEN", stranger_token)],
    )
    .wait(CLIENT_TIMEOUT);
    run.assert_failed();
    assert!(
        run.stderr.contains("does not trust this key"),
        "{}",
        run.describe()
    );
    let to_stranger = tg
        .record()
        .iter()
        .filter(|r| {
            r.bot == "agent_bot"
                && r.method.starts_with("send")
                && r.chat.as_deref() == Some(stranger_id.to_string().as_str())
        })
        .count();
    assert!(
        to_stranger <= 2,
        "the agent wrote {to_stranger} messages to a chat whose key it does not trust"
    );
    // The agent wrote to both chats, and to no other but the refusal's.
    let chats = tg.chats_the_agent_wrote_to();
    assert_eq!(
        chats.len(),
        3,
        "the agent answered each client in its chat, and the stranger once: {chats:?}"
    );
    agent.terminate(Duration::from_secs(10));
}

/// A seeded random file with the canary in it.
fn canary_file(w: &World, name: &str, len: usize, seed: u64) -> std::path::PathBuf {
    w.canary_file(name, len, seed, CANARY)
}

/// The scan sees a canary through base64, as a text channel would carry it.
#[test]
#[should_panic(expected = "base64-encoded")]
fn the_plaintext_scan_sees_through_base64() {
    use base64::Engine as _;
    let leaked =
        base64::engine::general_purpose::STANDARD.encode([b"xx".as_slice(), CANARY].concat());
    assert_no_plaintext(&[leaked.into_bytes()], CANARY);
}

/// An address in peers.toml pins where an agent on `*` answers a peer:
/// pinned at another chat, the laptop's own chat hears nothing (even
/// though its frames authenticate); the pin forgotten, it is answered in
/// its chat again.
#[test]
fn an_address_in_peers_toml_pins_where_the_agent_answers() {
    let tg = Tg::new(25.0);
    let decoy = tg.emu.add_bot(BotSpec {
        token: "1005:decoy-token".into(),
        username: "decoy_bot".into(),
    });
    let trust = |address: &str| {
        pigeon(
            &tg.w.agent_home,
            &[
                "keys",
                "trust",
                &tg.w.client_key,
                "--name",
                "laptop",
                "--address",
                address,
            ],
            &tg.w.logs,
            Duration::from_secs(30),
        )
        .assert_ok();
    };
    trust(&format!("telegram={decoy}"));
    let listed = pigeon(
        &tg.w.agent_home,
        &["keys", "list"],
        &tg.w.logs,
        Duration::from_secs(30),
    );
    assert!(
        listed.stdout.contains(&format!("telegram={decoy}")),
        "{}",
        listed.stdout
    );
    let mut agent = tg.start_star_agent();
    tg.client("text", 1200, &["ls", "--timeout", "4"])
        .assert_failed();
    let answered = tg.chats_the_agent_wrote_to();
    assert_eq!(
        answered,
        [decoy.to_string()].into(),
        "the agent answered only at the pinned chat"
    );
    trust("telegram=");
    tg.client("text", 1200, &["ls"]).assert_ok();
    agent.terminate(Duration::from_secs(10));
}

/// Issue 28 item 3: a peer's key id is no chat. An agent on a spool and on
/// `telegram:*` serves a peer that has only ever written on the spool: the
/// faster Telegram link does not reach that peer, so its download goes all
/// on the spool, in chunks sized for the spool, and no send is tried where
/// it could only fail (which would count against the Telegram link for
/// every peer on it).
#[test]
fn an_agent_on_star_never_writes_to_a_peer_where_it_has_not_written() {
    let mut tg = Tg::new(25.0);
    // A text spool, and a faster document link: the agent would put most
    // of the download on Telegram, in its large chunks, if it could.
    tg.w.query = "profile=telegram-text&msgs_per_min=1200".into();
    let star = format!(
        "telegram:*?token_env=PIGEON_TG_TOKEN&api={}&mode=document&msgs_per_min=20",
        tg.api
    );
    let mut agent = Proc::spawn_env(
        &tg.w.agent_home,
        &["agent", "--transport", &tg.w.uri(), "--transport", &star],
        &tg.w.logs,
        "agent",
        &[("PIGEON_TG_TOKEN", AGENT_TOKEN)],
    );
    wait_until("the agent is ready", Duration::from_secs(60), || {
        agent.stderr().contains("agent ready") || agent.exited()
    });
    let data = std::fs::read(tg.w.random_file("log.bin", 300_000, 28)).unwrap();
    tg.w.put_remote("log.bin", &data);
    let out = tg.w.work.join("fetched.bin");
    let run = tg.w.download("log.bin", &out, &[]);
    run.assert_ok();
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert_eq!(
        run.report()["chunks_total"],
        5,
        "chunks sized for the text spool (64 KiB), not the document link: {}",
        run.describe()
    );
    let log = agent.stderr();
    assert!(
        !log.contains("has not written on it yet") && !log.contains("transport send failed"),
        "the agent tried the peer where it cannot reach it:\n{log}"
    );
    let sent: Vec<Request> = tg
        .record()
        .into_iter()
        .filter(|r| r.bot == "agent_bot" && r.method.starts_with("send"))
        .collect();
    assert!(sent.is_empty(), "the agent wrote on Telegram: {sent:?}");
    agent.terminate(Duration::from_secs(10));
}
