use super::*;
use crate::crypto::Identity;

fn open_upload(size: u64, chunk_size: u32, done: u32) -> TransferRecord {
    let manifest = Manifest::sample("x", size, chunk_size);
    TransferRecord {
        status: TransferStatus::InProgress,
        chunks_done: done,
        created_unix: 0,
        ..TransferRecord::begin(NewTransfer {
            id: TransferId::random(),
            direction: Direction::Upload,
            role: Role::Receiver,
            peer: "laptop",
            local_path: "/r/x".into(),
            remote_path: "x".into(),
            manifest,
            secret: None,
            transport: String::new(),
        })
    }
}

#[test]
fn open_limits_refuse_too_many_too_big_and_too_many_chunks_before_allocating() {
    let small = open_upload(1000, 100, 0).manifest;
    // Number of open uploads.
    let many: Vec<_> = (0..MAX_OPEN_UPLOADS)
        .map(|_| open_upload(10, 10, 0))
        .collect();
    let limits = policy::effective(None, &Default::default());
    let fits = |open: &[TransferRecord]| {
        let used = policy::usage(open, &[], now_unix())["laptop"];
        let none = crate::policy::Limits::default();
        crate::policy::limits::check("laptop", 1000, (&used, &limits), (&used, &none))
    };
    let err = fits(&many).unwrap_err();
    assert!(
        err.contains("16 uploads of laptop are already open"),
        "{err}"
    );
    assert!(fits(&many[1..]).is_ok());
    assert!(within_open_limits(&many, &small, None).is_ok());
    // Chunks: 2^26 chunks of 16 MiB pass the manifest check, not this.
    let huge = open_upload(u64::from(u32::MAX) * 1024, 64 * 1024, 0).manifest;
    let err = within_open_limits(&[open_upload(1 << 20, 64, 0)], &huge, None).unwrap_err();
    assert!(err.contains("chunks"), "{err}");
    // Free space, counting what open uploads still need.
    let half = open_upload(600, 100, 2);
    let err = within_open_limits(std::slice::from_ref(&half), &small, Some(1200)).unwrap_err();
    assert!(err.contains("not enough space"), "{err}");
    assert!(within_open_limits(&[half], &small, Some(1400)).is_ok());
}

#[test]
fn ten_thousand_untrusted_handshakes_in_a_minute_cost_two_audit_records() {
    let mut tally = RefusalTally::default();
    let t0 = tokio::time::Instant::now();
    let mut records = vec![];
    for i in 0..10_000u64 {
        let key = Identity::generate().unwrap().public();
        records.extend(tally.refuse(key, t0 + Duration::from_millis(i)));
    }
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(tally.keys.len() <= RefusalTally::MAX_KEYS);
    // The next minute's first refusal closes the last one.
    let key = Identity::generate().unwrap().public();
    records.extend(tally.refuse(key, t0 + Duration::from_secs(61)));
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(records[1].1.contains("9999 more handshakes"), "{records:?}");
    assert!(
        records[1].1.contains("4096 or more untrusted keys"),
        "{records:?}"
    );
    assert!(tally.close().is_none());
}
