use super::*;

const URI: &str = "15550001111?phone_id=106540352242922&token_env=WA_TOKEN&app_secret_file=/run/wa-app&verify_token_env=WA_VERIFY&listen=127.0.0.1:8443&mode=document";

#[test]
fn uris_parse_round_trip_and_never_hold_a_secret() {
    let u = WhatsappUri::parse(URI).unwrap();
    assert_eq!(u.peer, "15550001111");
    assert_eq!(u.phone_id, "106540352242922");
    assert_eq!(u.meta.api, PUBLIC_API);
    assert_eq!(u.meta.mode, Mode::Document);
    assert_eq!(
        WhatsappUri::parse(&u.to_string()["whatsapp:".len()..]).unwrap(),
        u
    );
    for bad in [
        "+15550001111?phone_id=1&token_env=A&app_secret_env=B&verify_token_env=C&listen=127.0.0.1:1",
        "15550001111?token_env=A&app_secret_env=B&verify_token_env=C&listen=127.0.0.1:1",
        "15550001111?phone_id=1&token_env=A&app_secret_env=B&verify_token_env=C",
        "15550001111?phone_id=1&token_env=A&app_secret_env=B&listen=127.0.0.1:1",
        "15550001111?phone_id=1&token=EAAhunter2&app_secret_env=B&verify_token_env=C&listen=127.0.0.1:1",
        "15550001111?phone_id=1&token_env=A&app_secret_env=B&verify_token_env=C&listen=localhost",
        "15550001111?phone_id=1&token_env=A&app_secret_env=B&verify_token_env=C&listen=127.0.0.1:1&colour=red",
    ] {
        let err = WhatsappUri::parse(bad).expect_err(bad);
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[test]
fn documents_leave_room_for_their_base64() {
    let caps = WhatsappUri::parse(URI).unwrap().capabilities();
    assert!(caps.max_message.div_ceil(3) * 4 <= MAX_DOCUMENT);
    assert_eq!(caps.messages_per_minute, Some(10));
}

/// One webhook POST as Meta's Cloud API documents it ("messages"
/// field: metadata, contacts, messages, statuses), written from the
/// documentation, not from our emulator.
fn notification(value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{ "field": "messages", "value": value }]
        }]
    })
}

#[tokio::test]
async fn webhook_notifications_as_documented_are_taken_apart() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "EAAJB-test-token").unwrap();
    let uri = WhatsappUri::parse(&format!(
        "15550001111?phone_id=106540352242922&token_file={}&app_secret_env=WA_APP&verify_token_env=WA_VERIFY&listen=127.0.0.1:8443",
        token.display()
    ))
    .unwrap();
    let api = Arc::new(Api::new(&uri, Arc::default()).unwrap());
    let correspondents = Arc::new(Correspondents::new(&uri.peer));
    let health = Arc::new(Health::default());
    let (hooks, hooks_rx) = mpsc::channel(8);
    let (tx, mut rx) = mpsc::channel(8);
    crate::task::spawn(hand_on(
        api,
        uri,
        correspondents,
        hooks_rx,
        tx,
        health.clone(),
    ));

    let metadata = json!({
        "display_phone_number": "15550009999",
        "phone_number_id": "106540352242922"
    });
    let text = |from: &str, id: &str, body: &str| {
        notification(json!({
            "messaging_product": "whatsapp",
            "metadata": metadata,
            "contacts": [{ "profile": { "name": "Kerry Fisher" }, "wa_id": from }],
            "messages": [{
                "from": from,
                "id": id,
                "timestamp": "1733011200",
                "type": "text",
                "text": { "body": body }
            }]
        }))
    };
    let id = "wamid.HBgLMTU1NTAwMDExMTEVAgASGBQzQTdCRTc0RkQ3QjdGNkYyNjA1OQA=";
    hooks
        .send(text("15550001111", id, "UEcBAQ=="))
        .await
        .unwrap();
    // Meta delivers at least once: the same message id again.
    hooks
        .send(text("15550001111", id, "UEcBAQ=="))
        .await
        .unwrap();
    // Someone else writing to the number.
    hooks
        .send(text("15550002222", "wamid.other", "hello"))
        .await
        .unwrap();
    // Our message could not be delivered: the 24-hour window closed.
    hooks
        .send(notification(json!({
            "messaging_product": "whatsapp",
            "metadata": metadata,
            "statuses": [{
                "id": "wamid.sent-by-us",
                "status": "failed",
                "timestamp": "1733011260",
                "recipient_id": "15550001111",
                "errors": [{
                    "code": 131047,
                    "title": "Re-engagement message",
                    "message": "Re-engagement message",
                    "error_data": { "details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number." }
                }]
            }]
        })))
        .await
        .unwrap();
    let got = rx.recv().await.unwrap();
    assert_eq!(
        got.from, None,
        "a fixed correspondent needs no reply address"
    );
    assert!(matches!(got.message, Message::Text(ref t) if t == "UEcBAQ=="));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "the repeat and the stranger are dropped"
    );
    let problems = health.problems();
    assert!(
        problems.iter().any(|p| p.contains("not delivered")),
        "{problems:?}"
    );
}
