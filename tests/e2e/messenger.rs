//! Issue 7 (Messenger): the agent is a Page on a local emulator of the
//! Messenger Platform (Send API out, signed webhooks in); the client is
//! the person who writes to it. There is no API for a person's side, so
//! the person is played the way a human at the Messenger app would: what
//! the Page sends reaches the client's inbox, and what the client writes
//! is typed to the Page (`Bridge`). Both parties are real pigeon
//! processes; every line of the Page's side is the shipped client code.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use pigeon_emulator::messenger::{Emulator, PageSpec, PersonMessage, PersonSpec, Request};
use pigeon_emulator::person::messages_in;
use pigeon_emulator::Faults;

const PAGE_TOKEN: &str = "EAApage-fb-secret-token";
const APP_SECRET: &str = "fb-app-secret-value";
const VERIFY: &str = "fb-verify-token-value";
const PAGE_ID: &str = "104000000000001";
const PSID: &str = "2417001122334455";
const CANARY: &[u8] = b"PIGEON-CANARY-fb-9e07";

/// The person between the client's inbox and the Page, carrying each
/// message across as it comes, until dropped.
struct Bridge {
    stop: Arc<AtomicBool>,
    /// While set, the person reads but does not write.
    hold: Arc<AtomicBool>,
}

impl Bridge {
    fn start(
        emu: Emulator,
        base: String,
        to_page: PathBuf,
        to_client: PathBuf,
        text: bool,
    ) -> Bridge {
        let stop = Arc::new(AtomicBool::new(false));
        let hold = Arc::new(AtomicBool::new(false));
        let (done, held) = (stop.clone(), hold.clone());
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while !done.load(Ordering::Relaxed) {
                let writing = !held.load(Ordering::Relaxed);
                for path in messages_in(&to_page).into_iter().filter(|_| writing) {
                    let Ok(bytes) = std::fs::read(&path) else {
                        continue;
                    };
                    let _ = std::fs::remove_file(&path);
                    let m = if text {
                        PersonMessage::Text(String::from_utf8_lossy(&bytes).into_owned())
                    } else {
                        PersonMessage::File(bytes)
                    };
                    emu.person_send(PSID, m, &base);
                }
                for m in emu.person_take(PSID) {
                    let bytes = match m {
                        PersonMessage::Text(t) => t.into_bytes(),
                        PersonMessage::File(b) => b,
                    };
                    seq += 1;
                    let name = format!("{:020}-bridge-{seq:010}.msg", seq);
                    let tmp = to_client.join(format!(".tmp-{name}"));
                    std::fs::create_dir_all(&to_client).expect("the client's inbox");
                    std::fs::write(&tmp, bytes).expect("writing to the client's inbox");
                    std::fs::rename(&tmp, to_client.join(name)).expect("delivering");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Bridge { stop, hold }
    }
}

impl Bridge {
    /// The person as the README's recipe plays them: `pigeon-emulator
    /// messenger-person`'s carrier, over the emulator's HTTP endpoints.
    fn start_http(base: String, to_page: PathBuf, to_client: PathBuf, text: bool) -> Bridge {
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let carrier = pigeon_emulator::person::Carrier {
            api: base,
            psid: PSID.into(),
            to_page,
            from_page: to_client,
            mode: if text {
                pigeon_emulator::person::Mode::Text
            } else {
                pigeon_emulator::person::Mode::Document
            },
        };
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let http = reqwest::Client::new();
            let mut seq = 0;
            std::fs::create_dir_all(&carrier.from_page).expect("the client's inbox");
            while !done.load(Ordering::Relaxed) {
                runtime
                    .block_on(carrier.step(&http, &mut seq))
                    .expect("the carrier carries");
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Bridge {
            stop,
            hold: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Fb {
    w: World,
    emu: Emulator,
    base: String,
    port: u16,
    bridge: Bridge,
    mode: &'static str,
    /// More of both parties' URI query (`&alphabet=dense`).
    more: String,
}

impl Fb {
    fn new(mode: &'static str) -> Fb {
        Fb::carried(mode, false)
    }

    /// `by_http`: the person is `pigeon-emulator messenger-person`'s
    /// carrier (the README's recipe), not the in-process one.
    fn carried(mode: &'static str, by_http: bool) -> Fb {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let emu = Emulator::new(
            &[PageSpec {
                page_id: PAGE_ID.into(),
                name: "Pigeon Agent — test Page".into(),
                token: PAGE_TOKEN.into(),
                app_secret: APP_SECRET.into(),
                verify_token: VERIFY.into(),
                webhook: format!("http://127.0.0.1:{port}/webhook"),
            }],
            &[PersonSpec {
                psid: PSID.into(),
                page_id: PAGE_ID.into(),
            }],
        )
        .with_rate(25.0, 5.0);
        let base = pigeon_emulator::serve_in_background(emu.router())
            .expect("the emulator listens on 127.0.0.1");
        let w = World::new("");
        let bridge = if by_http {
            Bridge::start_http(
                base.clone(),
                w.agent_inbox(),
                w.client_inbox(),
                mode == "text",
            )
        } else {
            Bridge::start(
                emu.clone(),
                base.clone(),
                w.agent_inbox(),
                w.client_inbox(),
                mode == "text",
            )
        };
        Fb {
            w,
            emu,
            base,
            port,
            bridge,
            mode,
            more: String::new(),
        }
    }

    fn page_uri(&self) -> String {
        format!(
            "messenger:{PSID}?page_id={PAGE_ID}&token_env=PIGEON_FB_TOKEN&app_secret_env=PIGEON_FB_APP_SECRET&verify_token_env=PIGEON_FB_VERIFY&listen=127.0.0.1:{}&api={}/v25.0&mode={}&msgs_per_min=1200{}",
            self.port, self.base, self.mode, self.more
        )
    }

    fn start_agent(&self, token: &str) -> Proc {
        let uri = self.page_uri();
        let mut p = Proc::spawn_env(
            &self.w.agent_home,
            &["agent", "--transport", &uri],
            &self.w.logs,
            "agent",
            &[
                ("PIGEON_FB_TOKEN", token),
                ("PIGEON_FB_APP_SECRET", APP_SECRET),
                ("PIGEON_FB_VERIFY", VERIFY),
            ],
        );
        wait_until("the agent is ready", Duration::from_secs(60), || {
            p.stderr().contains("agent ready") || p.exited()
        });
        assert!(!p.exited(), "the agent exited:\n{}", p.stderr());
        p
    }

    /// The person's side: a spool whose far end is the bridge.
    fn client(&self, args: &[&str]) -> Run {
        let profile = if self.mode == "text" {
            "messenger-text"
        } else {
            "messenger-doc"
        };
        let uri = format!(
            "local:{}?profile={profile}&msgs_per_min=1200{}",
            self.w.spool.display(),
            self.more
        );
        let mut v: Vec<&str> = args.to_vec();
        v.extend(["--json", "--transport", &uri]);
        Proc::spawn(&self.w.client_home, &v, &self.w.logs, "client").wait(CLIENT_TIMEOUT)
    }

    fn record(&self) -> Vec<Request> {
        self.emu.record()
    }

    fn canary_file(&self, name: &str, len: usize, seed: u64) -> std::path::PathBuf {
        self.w.canary_file(name, len, seed, CANARY)
    }
}

fn check_record(fb: &Fb, agent_log: &str) {
    let record = fb.record();
    for r in record
        .iter()
        .filter(|r| r.method == "messages" && r.status == 200)
    {
        if fb.mode == "text" {
            assert!(r.size <= 2000, "a text of {} characters", r.size);
        } else {
            assert!(r.size <= 25_000_000, "an attachment of {} bytes", r.size);
        }
    }
    let calls: Vec<Call> = record
        .iter()
        .map(|r| Call {
            who: r.page.clone(),
            send: r.method == "messages",
            at_ms: r.at_ms,
            wait_ms: r.retry_after_ms.filter(|_| r.code == Some(613)),
        })
        .collect();
    assert_no_send_inside_a_wait(&calls);
    let bodies = fb.emu.bodies();
    assert!(!bodies.is_empty(), "messages went through the provider");
    assert_no_plaintext(&bodies, CANARY);
    for secret in [PAGE_TOKEN, APP_SECRET, VERIFY] {
        assert!(!agent_log.contains(secret), "a secret was logged");
    }
}

fn round_trip(fb: &Fb, size: usize, seed: u64) {
    let f = fb.canary_file("data.bin", size, seed);
    fb.client(&["upload", f.to_str().unwrap()]).assert_ok();
    assert_same_file(&f, &fb.w.storage().join("data.bin"));
    let out = fb.w.work.join("data.back");
    fb.client(&["download", "data.bin", "-o", out.to_str().unwrap()])
        .assert_ok();
    assert_same_file(&f, &out);
}

/// Also the README's recipe: the person is `pigeon-emulator
/// messenger-person`'s carrier, over the emulator's HTTP.
#[test]
fn text_mode_moves_300_kb_through_a_page_up_and_down() {
    let fb = Fb::carried("text", true);
    // The recipe names the spool's inboxes with `keys show --id`.
    let id = pigeon(
        &fb.w.agent_home,
        &["keys", "show", "--id"],
        &fb.w.logs,
        Duration::from_secs(30),
    );
    assert_eq!(
        Some(id.stdout.trim()),
        fb.w.agent_inbox().file_name().and_then(|n| n.to_str())
    );
    let mut agent = fb.start_agent(PAGE_TOKEN);
    round_trip(&fb, 300_000, 1);
    let sent = fb
        .record()
        .iter()
        .filter(|r| r.method == "messages" && r.status == 200)
        .count();
    assert!(sent >= 200, "300 KB down in 1.5 KB texts: {sent}");
    check_record(&fb, &agent.stderr());
    agent.terminate(Duration::from_secs(10));
}

/// Issue 29: with `alphabet=dense` on the Page and on the person's side,
/// every message that carries data spells 15 bits a character, within
/// Messenger's 2000 (UTF-16 units, as the emulator counts them), and 200
/// KB each way take fewer than half base64's messages.
#[test]
fn text_mode_with_the_dense_alphabet_moves_200_kb_up_and_down_byte_exact() {
    let mut fb = Fb::new("text");
    fb.more = "&alphabet=dense".into();
    let mut agent = fb.start_agent(PAGE_TOKEN);
    round_trip(&fb, 200_000, 4);
    let dense = assert_chunks_go_dense("messenger", &fb.emu.bodies());
    assert!(dense >= 2 * 200_000 / 3750, "{dense} dense messages");
    let sent = fb
        .record()
        .iter()
        .filter(|r| r.method == "messages" && r.status == 200)
        .count();
    // The Page's share: 200 KB down (134 messages of 1.5 KB in base64, 54
    // of 3.7 KB dense) and the answers to 200 KB up.
    assert!(sent <= 110, "the Page sent {sent} messages");
    check_record(&fb, &agent.stderr());
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn document_mode_moves_2_mb_with_throttling_redelivery_and_dead_links() {
    let fb = Fb::new("document");
    let mut agent = fb.start_agent(PAGE_TOKEN);
    fb.emu.inject(Faults {
        method: "messages".into(),
        count: 1,
        status: 429,
        expire_media: 1,
        ..Faults::default()
    });
    // Two chunks each way: enough for a throttled send and a dead link
    // to land mid-transfer, at the 10 MB a minute the profile allows.
    let f = fb.canary_file("data.bin", 2_000_000, 2);
    fb.client(&["upload", f.to_str().unwrap()]).assert_ok();
    assert_same_file(&f, &fb.w.storage().join("data.bin"));
    // Meta posts the last webhooks again (as it does after a timeout).
    let posted = |fb: &Fb| {
        fb.record()
            .iter()
            .filter(|r| r.method == "webhook" && r.status == 200)
            .count()
    };
    let before = posted(&fb);
    fb.emu.inject(Faults {
        redeliver: 3,
        ..Faults::default()
    });
    wait_until(
        "the webhooks are posted again",
        Duration::from_secs(20),
        || posted(&fb) >= before + 3,
    );
    let out = fb.w.work.join("data.back");
    fb.client(&["download", "data.bin", "-o", out.to_str().unwrap()])
        .assert_ok();
    assert_same_file(&f, &out);
    let record = fb.record();
    assert!(
        record.iter().any(|r| r.code == Some(613)),
        "the throttling was served"
    );
    assert!(
        record
            .iter()
            .any(|r| r.method == "attachment" && r.status == 404),
        "a dead attachment link was met"
    );
    check_record(&fb, &agent.stderr());
    agent.terminate(Duration::from_secs(10));
}

#[test]
fn a_bad_page_token_and_a_closed_window_are_said_plainly() {
    let fb = Fb::new("text");
    let mut agent = fb.start_agent("EAAwrong-page-token");
    let run = fb.client(&["ls", "--timeout", "8"]);
    run.assert_failed();
    wait_until("the agent says why", Duration::from_secs(20), || {
        agent.stderr().contains("access token is invalid")
    });
    assert!(!agent.stderr().contains("EAAwrong-page-token"));
    agent.terminate(Duration::from_secs(10));
    // The right token. Mid-download the person stops writing and a day
    // passes: the Page may not send, and says why; when the person writes
    // again the download goes on.
    let mut agent = fb.start_agent(PAGE_TOKEN);
    // Incompressible: a run of one byte would fit in a few messages.
    let big = random_bytes(200_000, 9);
    fb.w.put_remote("big.bin", &big);
    let out = fb.w.work.join("big.back");
    let profile = "messenger-text";
    let uri = format!(
        "local:{}?profile={profile}&msgs_per_min=1200",
        fb.w.spool.display()
    );
    let download = Proc::spawn(
        &fb.w.client_home,
        &[
            "download",
            "big.bin",
            "-o",
            out.to_str().unwrap(),
            "--json",
            "--transport",
            &uri,
        ],
        &fb.w.logs,
        "client",
    );
    let sent = |fb: &Fb| {
        fb.record()
            .iter()
            .filter(|r| r.method == "messages" && r.status == 200)
            .count()
    };
    let before = sent(&fb);
    wait_until("the download is under way", Duration::from_secs(60), || {
        sent(&fb) >= before + 10
    });
    fb.bridge.hold.store(true, Ordering::Relaxed);
    fb.emu.inject(Faults {
        method: "window".into(),
        ..Faults::default()
    });
    wait_until(
        "the Page is refused and says why",
        Duration::from_secs(30),
        || {
            fb.record().iter().any(|r| r.code == Some(10))
                && agent.stderr().contains("write to the Page first")
        },
    );
    fb.bridge.hold.store(false, Ordering::Relaxed);
    download.wait(CLIENT_TIMEOUT).assert_ok();
    assert_eq!(std::fs::read(&out).unwrap(), big);
    agent.terminate(Duration::from_secs(10));
    check_record(&fb, &agent.stderr());
}

/// The Page's agent dies mid-upload and comes back: the person's pigeon
/// goes on, and the file arrives whole.
#[test]
fn the_page_killed_mid_upload_loses_nothing() {
    let fb = Fb::new("text");
    let mut agent = fb.start_agent(PAGE_TOKEN);
    let f = fb.canary_file("dies.bin", 150_000, 5);
    let uri = format!(
        "local:{}?profile=messenger-text&msgs_per_min=1200",
        fb.w.spool.display()
    );
    let upload = Proc::spawn(
        &fb.w.client_home,
        &["upload", f.to_str().unwrap(), "--json", "--transport", &uri],
        &fb.w.logs,
        "client",
    );
    wait_until("the upload is under way", Duration::from_secs(60), || {
        fb.record()
            .iter()
            .filter(|r| r.method == "webhook" && r.status == 200)
            .count()
            >= 20
    });
    agent.kill9();
    let mut agent = fb.start_agent(PAGE_TOKEN);
    upload.wait(CLIENT_TIMEOUT).assert_ok();
    assert_same_file(&f, &fb.w.storage().join("dies.bin"));
    check_record(&fb, &agent.stderr());
    agent.terminate(Duration::from_secs(10));
}
