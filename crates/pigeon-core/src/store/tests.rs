use super::*;

/// The store in `dir` again, once the handle just dropped has let go of
/// it: sled closes in the background, and a test that reopens at once can
/// find it still locked (seen once in CI).
fn reopen(dir: &std::path::Path) -> Store {
    for _ in 0..200 {
        match Store::open(dir) {
            Err(CoreError::StoreLocked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other.unwrap(),
        }
    }
    panic!("the store stayed locked after its handle was dropped");
}

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
    let s = reopen(dir.path());
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
    let s = reopen(dir.path());
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

/// Issue 25, item 1: the queue wrote back a copy of a record read before
/// the sender began a new sealing run, and a crash then began that run
/// again under other bytes.
#[test]
fn a_stale_copy_written_back_never_lowers_the_sealing_run() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let id = TransferId::random();
    s.put_transfer(&record(id)).unwrap();
    let stale = s.transfer(&id).unwrap().unwrap();
    assert_eq!(s.begin_seal_run(&id, 0).unwrap(), 1);
    assert_eq!(s.begin_seal_run(&id, 0).unwrap(), 2);
    s.put_transfer(&stale).unwrap();
    assert_eq!(s.transfer(&id).unwrap().unwrap().seal_run, 2, "whole write");
    s.update_transfer(&id, |r| r.seal_run = 0).unwrap();
    assert_eq!(s.transfer(&id).unwrap().unwrap().seal_run, 2, "update");
    assert_eq!(s.begin_seal_run(&id, 0).unwrap(), 3);
    assert_eq!(s.begin_seal_run(&id, 9).unwrap(), 10, "a known floor");
    assert!(s.begin_seal_run(&TransferId::random(), 0).is_err());
    s.update_transfer(&id, |r| r.seal_run = u32::MAX).unwrap();
    let err = s.begin_seal_run(&id, 0).unwrap_err().to_string();
    assert!(err.contains("start it again"), "{err}");
}

/// Two writers each change their own field of one record at once; both
/// changes stay (the bug class: a record read, changed and written back
/// whole loses the other writer's change).
#[test]
fn concurrent_updates_of_different_fields_both_stay() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let id = TransferId::random();
    s.put_transfer(&record(id)).unwrap();
    std::thread::scope(|scope| {
        let a = scope.spawn(|| {
            for n in 1..=500 {
                s.update_transfer(&id, |r| r.priority = n).unwrap();
            }
        });
        let b = scope.spawn(|| {
            for n in 1..=500 {
                s.update_transfer(&id, |r| r.chunks_done = n).unwrap();
            }
        });
        a.join().unwrap();
        b.join().unwrap();
    });
    let rec = s.transfer(&id).unwrap().unwrap();
    assert_eq!((rec.priority, rec.chunks_done), (500, 500));
    assert!(s
        .update_transfer(&TransferId::random(), |r| r.priority = 1)
        .unwrap()
        .is_none());
}

/// A second opener is told which process holds the store, by pid.
#[test]
fn a_store_in_use_names_the_process_that_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    let err = match Store::open(dir.path()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a store opened twice"),
    };
    assert!(
        err.contains(&format!("(pid {}", std::process::id())),
        "{err}"
    );
    assert!(err.contains("stop it or use another --home"), "{err}");
}

/// Issue 32: the holder's liveness is asked of the kernel, not of `/proc`
/// (which Android restricts), so a phone's "store held" error still names
/// its holder.
#[test]
fn a_holders_liveness_needs_no_proc() {
    assert!(process_lives(std::process::id()));
    assert!(!process_lives(0), "0 would ask about our process group");
    assert!(!process_lives(u32::MAX), "beyond i32: never a group");
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    assert!(!process_lives(gone), "a reaped child is gone");
}
