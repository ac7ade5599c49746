use super::*;

fn record(id: TransferId) -> TransferRecord {
    TransferRecord::begin(NewTransfer {
        id,
        direction: Direction::Upload,
        role: Role::Sender,
        peer: "agent",
        local_path: "/tmp/x".into(),
        remote_path: "x".into(),
        manifest: Manifest {
            mime: "text/plain".into(),
            ..Manifest::sample("x", 10, 4)
        },
        secret: Some(TransferSecret::random()),
        transport: "local:/s".into(),
    })
}

#[test]
fn records_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let id = TransferId::random();
    {
        let s = Store::open(dir.path()).unwrap();
        s.put_transfer(&record(id)).unwrap();
        let mut b = Bitmap::new(3);
        b.set(1);
        s.put_bitmap(&id, &b).unwrap();
        s.put_chunk_hash(&id, 1, &[5; 32]).unwrap();
        s.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.transfer(&id).unwrap().unwrap().remote_path, "x");
    assert!(s.bitmap(&id).unwrap().unwrap().get(1));
    assert_eq!(s.chunk_hash(&id, 1).unwrap(), Some([5; 32]));
    assert_eq!(s.find_transfer(&id.short()).unwrap().id, id);
    s.delete_transfer(&id).unwrap();
    assert!(s.transfer(&id).unwrap().is_none());
    assert!(s.chunk_hash(&id, 1).unwrap().is_none());
}

#[test]
fn secrets_live_in_their_own_file_and_are_gone_when_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let id = TransferId::random();
    let rec = record(id);
    let key = rec.secret.clone().unwrap().key;
    {
        let s = Store::open(dir.path()).unwrap();
        s.put_transfer(&rec).unwrap();
        s.put_secret(&id, rec.secret.as_ref().unwrap()).unwrap();
        s.flush().unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.transfer(&id).unwrap().unwrap().secret, rec.secret);
    s.forget_secret(&id).unwrap();
    s.forget_secret(&id).unwrap();
    assert!(s.transfer(&id).unwrap().unwrap().secret.is_none());
    s.flush().unwrap();
    drop(s);
    // Nowhere in the home: not in sled's files, not in a key file.
    for file in walk(dir.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(32).any(|w| w == key),
            "the key is still in {}",
            file.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn audit_log_is_chained() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    for i in 0..3 {
        s.audit(AuditRecord::new("p", "upload", &format!("f{i}"), "ok"))
            .unwrap();
    }
    let log = s.audit_log().unwrap();
    assert_eq!(log.len(), 3);
    // Tamper with the middle record.
    let mut rec = log[1].clone();
    rec.path = "other".into();
    s.audit
        .insert(
            1u64.to_be_bytes(),
            codec::encode("a", AUDIT_VERSION, &rec).unwrap(),
        )
        .unwrap();
    assert!(s.audit_log().is_err());
}
