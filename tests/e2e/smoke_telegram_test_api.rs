//! Smoke test against an emulator nobody here wrote: the npm package
//! `telegram-test-api` 4.2.1, driven by `tests/tta/server.js`. pigeon's real
//! Telegram transport (text mode) exchanges one 4,096-character base64 text
//! each way with a simulated user, and asks `getMe` who the bot is.
//!
//! The package is installed into `tests/tta/node_modules` by `npm ci` on
//! first use (pinned by `tests/tta/package-lock.json`); Node.js and npm must
//! be on the PATH.
//!
//! Where the package differs from the Bot API (read in its source):
//! `getUpdates` ignores `timeout` and `offset` (no long poll; an update is
//! gone once returned, so delivery is at most once), `getMe` has no
//! `is_bot`, a sent message's `date` is in milliseconds, errors are
//! `{"message"}` with HTTP 500 instead of the `ok`/`error_code` envelope,
//! `sendMessage` to an `@username` yields `chat.id: null`, and updates
//! carry the bot token in `message.botToken`. None of it breaks pigeon's
//! client. Only the first is worked around, in `tests/tta/server.js`: it
//! holds a `getUpdates` that would come back empty, because pigeon's long
//! poll against an instant answer is a busy loop (about a thousand calls a
//! second).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use pigeon_core::transport::telegram::{Telegram, TelegramUri};
use pigeon_core::transport::{Message, Transport};
use rand::{RngCore, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The bot's token as the emulator sees it (any string is accepted).
const TOKEN: &str = "4242:tta-smoke-token";
/// The simulated user; its private chat has the same id, as on Telegram.
const USER_ID: i64 = 5_550_001;
/// The version `tests/tta/package.json` pins.
const TTA_VERSION: &str = "4.2.1";
/// Longest wait for one step of the exchange.
const STEP: Duration = Duration::from_secs(20);

/// `tests/tta`: the launcher, its package.json and lock.
fn tta_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tta")
}

/// The installed telegram-test-api's version, if any.
fn installed_version(dir: &Path) -> Option<String> {
    let manifest = dir.join("node_modules/telegram-test-api/package.json");
    let text = std::fs::read_to_string(manifest).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    value["version"].as_str().map(str::to_owned)
}

/// `npm ci` in `tests/tta` unless the pinned version is installed already.
/// Once per test binary; a failure fails every caller with its reason.
fn ensure_installed() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = INSTALLED.get_or_init(|| {
        let dir = tta_dir();
        if installed_version(&dir).as_deref() == Some(TTA_VERSION) {
            return Ok(());
        }
        let output = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                format!(
                    "cannot run npm ({e}): this test needs Node.js and npm on the PATH \
                     (Debian: apt-get install nodejs npm)"
                )
            })?;
        if !output.status.success() {
            return Err(format!(
                "npm ci in {} failed ({}):\n{}",
                dir.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        match installed_version(&dir) {
            Some(v) if v == TTA_VERSION => Ok(()),
            other => Err(format!(
                "npm ci installed telegram-test-api {other:?}, not {TTA_VERSION}: \
                 tests/tta/package-lock.json and this test disagree"
            )),
        }
    });
    if let Err(reason) = outcome {
        panic!("{reason}");
    }
}

/// `tests/tta/server.js`: telegram-test-api on 127.0.0.1 and its simulated
/// user, spoken to in JSON lines. The process is killed when this is
/// dropped, and exits by itself when its stdin closes.
struct TtaServer {
    /// Held for `kill_on_drop`.
    _child: Child,
    commands: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
    port: u16,
}

impl TtaServer {
    /// Start the launcher (npm must have installed the package: see
    /// [`ensure_installed`]) and wait for its port.
    async fn start() -> TtaServer {
        let mut child = Command::new("node")
            .arg("server.js")
            .args(["--user-id", &USER_ID.to_string()])
            .current_dir(tta_dir())
            .env("PIGEON_TTA_TOKEN", TOKEN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be on the PATH to run tests/tta/server.js");
        let commands = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut answers = BufReader::new(stdout).lines();
        let hello = tokio::time::timeout(STEP, answers.next_line())
            .await
            .expect("tests/tta/server.js did not say its port in time")
            .expect("reading tests/tta/server.js's stdout")
            .expect("tests/tta/server.js exited before listening (its stderr is above)");
        let hello: Value = serde_json::from_str(&hello)
            .unwrap_or_else(|e| panic!("server.js's first line is not JSON ({e}): {hello}"));
        let port = hello["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("server.js's first line has no port: {hello}"));
        TtaServer {
            _child: child,
            commands,
            answers,
            port,
        }
    }

    /// The Bot API base URL for pigeon's `api=`.
    fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One command, its `result` back; an error answer panics with it.
    async fn command(&mut self, command: Value) -> Value {
        let mut line = command.to_string();
        line.push('\n');
        self.commands
            .write_all(line.as_bytes())
            .await
            .expect("writing a command to server.js");
        let answer = tokio::time::timeout(STEP, self.answers.next_line())
            .await
            .unwrap_or_else(|_| panic!("server.js did not answer {} in time", command["op"]))
            .expect("reading server.js's answer")
            .expect("server.js exited (its stderr is above)");
        let answer: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("server.js answered with no JSON ({e}): {answer}"));
        assert_eq!(
            answer["ok"], true,
            "server.js refused {}: {answer}",
            command["op"]
        );
        answer["result"].clone()
    }

    /// The simulated user writes `text` to the bot (the package's
    /// `TelegramClient.makeMessage` and `sendMessage`).
    async fn user_sends(&mut self, text: &str) {
        self.command(json!({ "op": "send", "text": text })).await;
    }

    /// What the bot sent to the user's chat since the last call, as the
    /// package stores it (`TelegramClient.getUpdates`).
    async fn user_receives(&mut self) -> Vec<Value> {
        match self.command(json!({ "op": "receive" })).await {
            Value::Array(updates) => updates,
            other => panic!("receive answered with no list: {other}"),
        }
    }
}

/// `bytes` random bytes (seeded) as standard base64: what pigeon's text
/// mode puts in a message.
fn base64_text(seed: u64, bytes: usize) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut raw = vec![0u8; bytes];
    rng.fill_bytes(&mut raw);
    base64::engine::general_purpose::STANDARD.encode(raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_exchange_through_telegram_test_api() {
    // npm ci blocks for seconds on a first run; the other worker stays free.
    tokio::task::block_in_place(ensure_installed);
    let started = Instant::now();
    let mut server = TtaServer::start().await;
    let home = tempfile::tempdir().expect("a temporary folder for the token file");
    let token_file = home.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("writing the token file");
    let uri = TelegramUri::parse(&format!(
        "{USER_ID}?token_file={}&api={}&mode=text",
        token_file.display(),
        server.api()
    ))
    .expect("a valid telegram URI");
    let me = Telegram::check(&uri)
        .await
        .expect("getMe through telegram-test-api");
    let mut bot = Telegram::open(uri).expect("opening pigeon's Telegram transport");
    let limit = bot.capabilities().max_message;
    assert_eq!(limit, 4096, "text mode carries 4,096 characters");

    // getMe: the package answers with a fixed bot, whatever the token.
    assert_eq!(me.id, 666);
    assert_eq!(me.username.as_deref(), Some("TestNameBot"));

    // Bot to user: a full message, with the padding and `+`/`/` base64 has.
    let down = base64_text(1, 3070);
    assert_eq!(down.len(), limit);
    assert!(down.ends_with("==") && down.contains('+') && down.contains('/'));
    bot.send(&USER_ID.to_string(), Message::Text(down.clone()))
        .await
        .expect("sendMessage through telegram-test-api");
    let received = server.user_receives().await;
    assert_eq!(received.len(), 1, "the user got one message: {received:?}");
    let sent = &received[0]["message"];
    assert_eq!(sent["chat_id"], USER_ID, "addressed to the user's chat");
    assert_eq!(
        sent["text"].as_str(),
        Some(down.as_str()),
        "the user read the bot's text byte-exact"
    );

    // User to bot: the package's own update shape reaches incoming().
    let up = base64_text(2, 3072);
    assert_eq!(up.len(), limit);
    let mut inbox = bot.incoming();
    server.user_sends(&up).await;
    let got = tokio::time::timeout(STEP, inbox.recv())
        .await
        .expect("the user's message reached incoming() in time")
        .expect("the transport's inbox stayed open");
    assert_eq!(
        got.message,
        Message::Text(up),
        "the bot read the user's text byte-exact"
    );
    assert_eq!(
        got.from, None,
        "with a fixed peer the transport keeps one address (it names senders only on *)"
    );

    eprintln!(
        "telegram-test-api {TTA_VERSION} smoke exchange took {:?}",
        started.elapsed()
    );
}
