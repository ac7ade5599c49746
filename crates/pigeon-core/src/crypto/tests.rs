use super::*;

fn pair() -> (Identity, Identity) {
    (Identity::generate().unwrap(), Identity::generate().unwrap())
}

fn sessions() -> (Session, Session) {
    let (a, b) = pair();
    let sid = [7u8; 16];
    let (init, m1) = Initiator::start(&a, &b.public(), &sid, &[]).unwrap();
    let (resp, m2, early) = respond(&b, &a.public(), &sid, &m1).unwrap();
    assert!(early.is_empty());
    (init.finish(&m2).unwrap(), resp)
}

#[test]
fn handshake_gives_working_sessions_both_ways() {
    let (mut a, mut b) = sessions();
    let (n, ct) = a.seal(b"hello").unwrap();
    assert_eq!(b.open(n, &ct).unwrap().unwrap(), b"hello");
    let (n, ct) = b.seal(b"back").unwrap();
    assert_eq!(a.open(n, &ct).unwrap().unwrap(), b"back");
}

#[test]
fn handshake_from_an_impostor_fails() {
    let (a, b) = pair();
    let mallory = Identity::generate().unwrap();
    let sid = [1u8; 16];
    // Mallory claims to be `a`.
    let (_, m1) = Initiator::start(&mallory, &b.public(), &sid, b"early").unwrap();
    assert!(respond(&b, &a.public(), &sid, &m1).is_err());
}

#[test]
fn early_data_reaches_only_the_responder_and_only_unaltered() {
    let (a, b) = pair();
    let sid = [3u8; 16];
    let secret = b"offer: transfer key 0123456789abcdef";
    let (init, m1) = Initiator::start(&a, &b.public(), &sid, secret).unwrap();
    assert!(
        !m1.windows(secret.len()).any(|w| w == secret),
        "early data travels sealed"
    );
    let (_, m2, early) = respond(&b, &a.public(), &sid, &m1).unwrap();
    assert_eq!(early, secret);
    init.finish(&m2).unwrap();
    // Anyone else's key cannot read it; one flipped bit is refused.
    let eve = Identity::generate().unwrap();
    assert!(respond(&eve, &a.public(), &sid, &m1).is_err());
    let mut bent = m1.clone();
    *bent.last_mut().unwrap() ^= 1;
    assert!(respond(&b, &a.public(), &sid, &bent).is_err());
    assert!(Initiator::start(&a, &b.public(), &sid, &vec![0; MAX_EARLY + 1]).is_err());
}

#[test]
fn handshake_replayed_under_another_session_id_fails() {
    let (a, b) = pair();
    let (_, m1) = Initiator::start(&a, &b.public(), &[1u8; 16], b"early").unwrap();
    assert!(respond(&b, &a.public(), &[2u8; 16], &m1).is_err());
}

#[test]
fn session_rejects_replay_and_accepts_reordering() {
    let (mut a, mut b) = sessions();
    let frames: Vec<_> = (0..5).map(|i| a.seal(&[i]).unwrap()).collect();
    for &k in &[3usize, 0, 4, 1, 2] {
        let (n, ct) = &frames[k];
        assert_eq!(b.open(*n, ct).unwrap().unwrap(), vec![k as u8]);
    }
    let (n, ct) = &frames[2];
    assert!(b.open(*n, ct).unwrap().is_none(), "replay must be refused");
}

#[test]
fn session_rejects_every_single_byte_flip() {
    let (mut a, mut b) = sessions();
    let (n, ct) = a.seal(b"control frame").unwrap();
    for i in 0..ct.len() {
        let mut bad = ct.clone();
        bad[i] ^= 0x40;
        assert!(b.open(n, &bad).is_err(), "flip at {i} accepted");
    }
    assert!(b.open(n + 1, &ct).is_err(), "wrong nonce accepted");
}

#[test]
fn replay_window_forgets_only_what_slid_out() {
    let mut w = ReplayWindow::default();
    w.mark(5);
    assert!(!w.is_fresh(5));
    assert!(w.is_fresh(4));
    w.mark(5 + ReplayWindow::SIZE + 1);
    assert!(!w.is_fresh(4), "too old to tell is refused");
    assert!(w.is_fresh(5 + ReplayWindow::SIZE));
}

fn cipher(secret: &TransferSecret, id: u8) -> ChunkCipher {
    ChunkCipher::new(secret, &[id; 16], &[9u8; 32])
}

fn at(run: u32, index: u32, last: bool) -> ChunkNonce {
    ChunkNonce { run, index, last }
}

#[test]
fn chunk_round_trip() {
    let s = TransferSecret::random();
    let c = cipher(&s, 1);
    let ct = c.seal(at(1, 3, false), b"data").unwrap();
    assert_eq!(c.open(at(1, 3, false), &ct).unwrap(), b"data");
}

#[test]
fn each_sealing_run_has_its_own_nonces() {
    // The same chunk sealed by two runs of a sender never shares a
    // keystream, and a chunk cannot be presented as another run's.
    let s = TransferSecret::random();
    let c = cipher(&s, 1);
    let a = c.seal(at(1, 3, false), &[0u8; 64]).unwrap();
    let b = c.seal(at(2, 3, false), &[0u8; 64]).unwrap();
    assert_ne!(a[..64], b[..64], "two runs produced the same keystream");
    assert!(c.open(at(2, 3, false), &a).is_err());
}

#[test]
fn chunk_tamper_reorder_truncate_splice_all_fail() {
    let s = TransferSecret::random();
    let c = cipher(&s, 1);
    let ct = c.seal(at(0, 3, false), b"some chunk bytes").unwrap();
    for i in 0..ct.len() {
        let mut bad = ct.clone();
        bad[i] ^= 1;
        assert!(c.open(at(0, 3, false), &bad).is_err(), "tamper at {i}");
    }
    // Reordered: presented as another index.
    assert!(c.open(at(0, 4, false), &ct).is_err());
    // Truncation: a middle chunk presented as the last one.
    assert!(c.open(at(0, 3, true), &ct).is_err());
    assert!(c.open(at(0, 3, false), &ct[..ct.len() - 1]).is_err());
    // Spliced into another transfer with the same key material.
    assert!(cipher(&s, 2).open(at(0, 3, false), &ct).is_err());
    // Or another transfer altogether.
    assert!(cipher(&TransferSecret::random(), 1)
        .open(at(0, 3, false), &ct)
        .is_err());
    // Same transfer id but a different manifest.
    let other = ChunkCipher::new(&s, &[1; 16], &[8u8; 32]);
    assert!(other.open(at(0, 3, false), &ct).is_err());
}

#[test]
fn public_key_parses_its_own_display() {
    let id = Identity::generate().unwrap();
    let shown = id.public().to_string();
    assert_eq!(shown.len(), 64);
    assert_eq!(shown.parse::<PublicKey>().unwrap(), id.public());
    assert!("abc".parse::<PublicKey>().is_err());
}
