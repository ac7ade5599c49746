use super::*;

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};

#[test]
fn uris_parse_and_never_hold_a_token() {
    let u =
        TelegramUri::parse("@agent_bot?token_env=TG_TOKEN&mode=document&api=http://127.0.0.1:9/")
            .unwrap();
    assert_eq!(u.chat, "@agent_bot");
    assert_eq!(u.mode, Mode::Document);
    assert_eq!(u.api, "http://127.0.0.1:9");
    assert_eq!(
        TelegramUri::parse(&u.to_string()["telegram:".len()..]).unwrap(),
        u
    );
    for bad in [
        "",
        "agent",
        "@",
        "@a b?token_env=X",
        "@a",
        "@a?token=123:abc",
        "@a?token_env=X&mode=video",
    ] {
        assert!(TelegramUri::parse(bad).is_err(), "{bad:?} accepted");
    }
    let local = TelegramUri::parse(
        "@agent_bot?token_env=TG_TOKEN&api=http://127.0.0.1:8081&local_files=/var/lib/telegram-bot-api",
    )
    .unwrap();
    assert_eq!(
        local.local_files.as_deref(),
        Some(std::path::Path::new("/var/lib/telegram-bot-api"))
    );
    assert_eq!(
        TelegramUri::parse(&local.to_string()["telegram:".len()..]).unwrap(),
        local
    );
    // Only beside a local server's address, and never empty.
    for bad in [
        "@a?token_env=X&local_files=/var/lib/telegram-bot-api",
        "@a?token_env=X&api=http://127.0.0.1:8081&local_files=",
    ] {
        let err = TelegramUri::parse(bad).expect_err(bad);
        assert!(err.contains("local_files"), "{err}");
    }
    let err = TelegramUri::parse("@a?token=123:abc").unwrap_err();
    assert!(!err.contains("123:abc"), "{err}");
    assert!(TelegramUri::parse("-1001234?token_file=/run/tg").is_ok());
}

#[test]
fn bot_api_envelopes_decode_as_documented() {
    let ok: Reply<Vec<Update>> = serde_json::from_str(
        r#"{"ok":true,"result":[{"update_id":5,"message":{"message_id":9,"date":1,"chat":{"id":42,"type":"private"},"from":{"id":42,"is_bot":true,"first_name":"A","username":"agent_bot"},"text":"UEcB"}}]}"#,
    )
    .unwrap();
    let m = ok.result.unwrap().remove(0).message.unwrap();
    assert_eq!(m.text.as_deref(), Some("UEcB"));
    let limited: Reply<serde_json::Value> = serde_json::from_str(
        r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#,
    )
    .unwrap();
    assert!(!limited.ok);
    assert_eq!(limited.parameters.unwrap().retry_after, Some(3));
}

/// A Bot API stand-in: `getFile` names `file_path`, `/file/...` streams
/// zeros for ever (no Content-Length), and `getUpdates` answers `updates`
/// every time, counting the calls.
#[derive(Clone)]
struct Stub {
    file_path: String,
    updates: serde_json::Value,
    polls: Arc<AtomicUsize>,
}

impl Stub {
    fn new(file_path: &str, updates: serde_json::Value) -> Stub {
        Stub {
            file_path: file_path.to_string(),
            updates,
            polls: Arc::default(),
        }
    }

    /// Serve on a free port; the `api=` address.
    async fn start(self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(stub_answer).with_state(self);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }
}

async fn stub_answer(State(stub): State<Stub>, uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/file/") {
        let zeros = futures::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(Bytes::from_static(&[0; 64 * 1024]))
        });
        return Response::new(Body::from_stream(zeros));
    }
    let result = if path.ends_with("/getFile") {
        serde_json::json!({ "file_id": "f", "file_path": stub.file_path })
    } else if path.ends_with("/getUpdates") {
        stub.polls.fetch_add(1, Ordering::SeqCst);
        stub.updates.clone()
    } else {
        serde_json::Value::Bool(true)
    };
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "ok": true, "result": result }).to_string(),
    )
        .into_response()
}

fn api(base: &str, local_files: Option<&std::path::Path>) -> Api {
    Api {
        http: http::client().unwrap(),
        base: base.to_string(),
        token: zeroize::Zeroizing::new("1001:test".into()),
        local_files: local_files.map(Into::into),
        health: Arc::default(),
    }
}

/// An address nothing listens on (a port just let go).
async fn dead_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Issue 32: a wrong port is a setting only the user can fix when the
/// server never answered, said in the words `pigeon transports test`
/// uses; once it has answered, a refusal is an outage and not noted.
#[tokio::test]
async fn a_refused_connection_is_a_problem_only_until_the_server_first_answers() {
    let dead = dead_address().await;
    let health: Arc<Health> = Arc::default();
    let wrong_port = Api {
        health: health.clone(),
        ..api(&dead, None)
    };
    let err = wrong_port
        .call::<serde_json::Value>("getMe", wrong_port.http.post(wrong_port.url("getMe")))
        .await
        .unwrap_err()
        .message();
    assert!(
        err.contains("cannot connect") && err.contains("refused"),
        "{err}"
    );
    assert_eq!(health.problems(), vec![err.clone()], "noted as it was said");
    // The words are those of the check behind `pigeon transports test`.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "1001:test").unwrap();
    let uri = TelegramUri::parse(&format!(
        "@agent_bot?token_file={}&api={dead}",
        token.display()
    ))
    .unwrap();
    let checked = Telegram::check(&uri).await.unwrap_err();
    assert_eq!(checked, err);

    // The server answers: the problem goes, and a later refusal is an
    // outage to wait out, not a setting.
    let live = Stub::new("x", serde_json::json!([])).start().await;
    let answering = Api {
        health: health.clone(),
        ..api(&live, None)
    };
    answering
        .call::<serde_json::Value>("getMe", answering.http.post(answering.url("getMe")))
        .await
        .unwrap();
    assert!(health.problems().is_empty(), "{:?}", health.problems());
    let _ = wrong_port
        .call::<serde_json::Value>("getMe", wrong_port.http.post(wrong_port.url("getMe")))
        .await
        .unwrap_err();
    assert!(health.problems().is_empty(), "{:?}", health.problems());
}

/// `fetch_document` against a stub naming `file_path`, which must answer
/// within two seconds (a FIFO opened for reading would wait for ever; it
/// is then opened for writing, so that the test ends and says so).
async fn fetch_named(
    file_path: &str,
    local_files: Option<&std::path::Path>,
) -> Result<Vec<u8>, String> {
    let base = Stub::new(file_path, serde_json::json!([])).start().await;
    let api = api(&base, local_files);
    match tokio::time::timeout(Duration::from_secs(2), fetch_document(&api, "f")).await {
        Ok(result) => result,
        Err(_) => {
            let _ = std::fs::OpenOptions::new().write(true).open(file_path);
            panic!("getFile naming {file_path} was not answered within 2 s");
        }
    }
}

/// The folder a local Bot API server works in, with one of each thing a
/// hostile server could name: a document, a secret outside, a link out,
/// a FIFO, a file over the document limit.
struct LocalServerDir {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

impl LocalServerDir {
    fn new() -> LocalServerDir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("telegram-bot-api");
        let docs = root.join("1001:test").join("documents");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("file_0.bin"), b"sealed chunk").unwrap();
        let outside = tmp.path().join("id_ed25519");
        std::fs::write(&outside, b"a secret beside the folder").unwrap();
        std::os::unix::fs::symlink(&outside, docs.join("link_out.bin")).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(docs.join("pipe.bin"))
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo failed");
        std::fs::File::create(docs.join("huge.bin"))
            .unwrap()
            .set_len(MAX_DOWNLOAD as u64 + 1)
            .unwrap();
        LocalServerDir {
            _tmp: tmp,
            root,
            outside,
        }
    }

    fn doc(&self, name: &str) -> String {
        self.root
            .join("1001:test/documents")
            .join(name)
            .display()
            .to_string()
    }
}

/// Regression: a stub server answering getFile with `/dev/zero` made
/// pigeon read until memory ran out, whatever `api=` pointed at.
#[tokio::test]
async fn absolute_get_file_paths_are_refused_without_local_files() {
    let dir = LocalServerDir::new();
    for path in ["/dev/zero".to_string(), dir.doc("file_0.bin")] {
        let err = fetch_named(&path, None).await.expect_err(&path);
        let without_token = path.replace("1001:test", "<bot token>");
        assert!(
            err.contains(&without_token),
            "names what the server sent: {err}"
        );
        assert!(err.contains("local_files="), "names the option: {err}");
        assert!(!err.contains("1001:test"), "the bot token is shown: {err}");
    }
}

#[tokio::test]
async fn local_files_yields_only_regular_files_inside_its_folder() {
    let dir = LocalServerDir::new();
    let root = Some(dir.root.as_path());
    assert_eq!(
        fetch_named(&dir.doc("file_0.bin"), root).await.unwrap(),
        b"sealed chunk"
    );
    let outside = dir.outside.display().to_string();
    let dotdot = format!("{}/../id_ed25519", dir.root.display());
    for (path, says) in [
        ("/dev/zero", "outside"),
        (outside.as_str(), "outside"),
        (dotdot.as_str(), "outside"),
        (&dir.doc("link_out.bin"), "outside"),
        (&dir.doc("pipe.bin"), "not a regular file"),
        (
            &dir.doc("huge.bin"),
            "over the 20000000-byte document limit",
        ),
        (&dir.doc("missing.bin"), "cannot find"),
    ] {
        let err = fetch_named(path, root).await.expect_err(path);
        assert!(err.contains(says), "{path}: {err}");
        assert!(!err.contains("1001:test"), "the bot token is shown: {err}");
    }
}

#[tokio::test]
async fn http_downloads_stop_at_the_document_limit() {
    let base = Stub::new("documents/file_0.bin", serde_json::json!([]))
        .start()
        .await;
    let api = api(&base, None);
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), fetch_document(&api, "f"))
        .await
        .expect("an endless download is cut off, not read for ever")
        .expect_err("an endless download is refused");
    assert!(err.contains("over 20000000 bytes"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Regression: a server answering the same update again and again was
/// polled 8,723 times in 6 s.
#[tokio::test]
async fn polling_slows_down_when_answers_bring_nothing_new() {
    let same = serde_json::json!([{ "update_id": 5, "message": {
        "message_id": 9, "date": 1, "chat": { "id": 42, "type": "private" },
        "from": { "id": 42, "is_bot": true, "first_name": "A", "username": "peer_bot" },
        "text": "UEcB"
    }}]);
    // The same update for ever, and an empty answer at once for ever.
    let stubs = [Stub::new("", same), Stub::new("", serde_json::json!([]))];
    let mut runs = Vec::new();
    for stub in &stubs {
        let base = stub.clone().start().await;
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(poll(
            Arc::new(api(&base, None)),
            Arc::new(Correspondents::new("*")),
            tx,
            Arc::new(Health::default()),
        ));
        runs.push((task, rx));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (stub, (task, mut rx)) in stubs.iter().zip(runs) {
        task.abort();
        let polls = stub.polls.load(Ordering::SeqCst);
        // 0, 0.5, 1.5 s: 3 or 4 with the first answer's news.
        assert!(polls <= 6, "{polls} polls in 3 s of answers without news");
        assert!(polls >= 2, "polling stopped: {polls}");
        if !stub.updates.as_array().unwrap().is_empty() {
            assert!(rx.try_recv().is_ok(), "the first delivery is news");
            assert!(rx.try_recv().is_err(), "and is delivered once");
        }
    }
}

#[test]
fn idle_polls_wait_longer_each_time_until_news() {
    let mut pace = IdlePace::default();
    let waits: Vec<u64> = (0..7)
        .map(|_| pace.after(false).as_millis() as u64)
        .collect();
    assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    assert_eq!(pace.after(true), Duration::ZERO);
    assert_eq!(pace.after(false), IDLE_POLL_FIRST);
    assert!(IDLE_POLL_MAX < Duration::from_secs(POLL_SECONDS));
}
