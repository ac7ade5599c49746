//! Writes the seed corpora, fuzz/seeds/<target>/, with pigeon-core's own
//! encoders (the link's seeds are what a real link sends): a handful of
//! small valid inputs per target. `scripts/fuzz --seeds` builds and runs
//! it; it writes next to its manifest unless given a folder. The link's
//! frame ids are random, so those seeds differ from run to run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pigeon_core::fuzzing;
use pigeon_core::crypto::{ChunkCipher, ChunkNonce, TransferSecret};
use pigeon_core::engine::handle::RemoteEntry;
use pigeon_core::fuzzing::{gunzip_input, link_input};
use pigeon_core::protocol::{
    AckState, ChunkBody, Control, Early, Frame, Gzip, Manifest, RefuseCode,
};
use pigeon_core::transport::{
    Address, Capabilities, Health, Message, Received, SendError, Transport,
};
use pigeon_core::view::{FaultCounters, TransferId};
use tokio::sync::mpsc;

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds"));
    let mut total = 0;
    let mut write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("creating a seed folder");
        std::fs::write(dir.join(name), bytes).expect("writing a seed");
        total += bytes.len();
    };

    for (name, f) in frames() {
        write("frame", name, &f.encode().expect("encode"));
    }
    for (name, c) in controls() {
        write("control", name, &c.encode().expect("encode"));
    }
    let early = Early {
        made_unix: 1_750_000_000,
        offers: controls().into_iter().map(|(_, c)| c).take(1).collect(),
    };
    write("control", "early", &early.encode().expect("encode"));
    for (name, m) in manifests() {
        write(
            "manifest",
            name,
            &fuzzing::codec_encode("manifest", 1, &m).expect("encode"),
        );
    }
    for (name, raw) in names() {
        write("name", name, raw.as_bytes());
    }
    for (name, data, expected) in gzipped() {
        write("gunzip", name, &gunzip_input(expected, &data));
    }
    for (name, input) in link_messages() {
        write("link_unpack", name, &input);
    }
    eprintln!("wrote {total} bytes of seeds under {}", root.display());
}

fn manifest(size: u64, chunk_size: u32) -> Manifest {
    Manifest {
        name: "report.csv".into(),
        size,
        chunk_size,
        mime: "text/csv".into(),
        modified_unix: 1_750_000_000,
        mode: 0o644,
        delta: None,
    }
}

fn secret() -> TransferSecret {
    TransferSecret {
        key: [0x11; 32],
        nonce_prefix: [0x22; 15],
    }
}

/// A chunk frame as the sender builds it, and its cipher.
fn chunk(data: &[u8], at: ChunkNonce, gzip: Gzip) -> (Vec<u8>, ChunkCipher) {
    let cipher = ChunkCipher::new(&secret(), &[5; 16], &[6; 32]);
    let (frame, _, _) = ChunkBody::frame(
        &cipher,
        &[5; 16],
        at,
        data.len(),
        gzip,
        |b| {
            b.copy_from_slice(data);
            Ok(())
        },
        |_| {},
    )
    .expect("building a chunk frame");
    (frame, cipher)
}

fn at(run: u32, index: u32, last: bool) -> ChunkNonce {
    ChunkNonce { run, index, last }
}

fn frames() -> Vec<(&'static str, Frame)> {
    let text = b"2025-06-01 12:00:00 all is well\n".repeat(20);
    let chunk_frame = |data: &[u8], at, gzip| {
        Frame::decode_owned(chunk(data, at, gzip).0).expect("a chunk frame decodes")
    };
    vec![
        (
            "hello",
            Frame::Hello {
                session: [1; 16],
                from: [2; 32],
                noise: vec![3; 96],
            },
        ),
        (
            "welcome",
            Frame::Welcome {
                session: [1; 16],
                noise: vec![4; 64],
            },
        ),
        (
            "sealed",
            Frame::Sealed {
                session: [1; 16],
                from: [5; 8],
                nonce: 7,
                body: vec![6; 40],
            },
        ),
        (
            "unknown-session",
            Frame::UnknownSession {
                session: [1; 16],
                from: [2; 32],
            },
        ),
        (
            "chunk-raw",
            chunk_frame(b"hello, pigeon", at(1, 0, true), Gzip::Never),
        ),
        (
            "chunk-gzip",
            chunk_frame(&text, at(3, 2, false), Gzip::Always),
        ),
        (
            "chunk-wide",
            chunk_frame(&[9; 300], at(u32::MAX, 70_000, true), Gzip::Never),
        ),
    ]
}

fn controls() -> Vec<(&'static str, Control)> {
    let t = TransferId([8; 16]);
    vec![
        (
            "offer",
            Control::Offer {
                transfer: t,
                manifest: manifest(10_000, 4096),
                secret: secret(),
                path: "inbox/report.csv".into(),
                overwrite: false,
                restarted: false,
                expires_after_secs: None,
            },
        ),
        (
            "accept",
            Control::Accept {
                transfer: t,
                epoch: [1; 8],
                have: AckState {
                    base: 2,
                    ranges: vec![(4, 6), (9, 12)],
                },
            },
        ),
        (
            "ack",
            Control::Ack {
                transfer: t,
                epoch: [1; 8],
                have: AckState {
                    base: 300,
                    ranges: vec![(400, 70_000)],
                },
            },
        ),
        (
            "refuse",
            Control::Refuse {
                transfer: t,
                code: RefuseCode::Exists,
                reason: "inbox/report.csv exists".into(),
            },
        ),
        (
            "finish",
            Control::Finish {
                transfer: t,
                sha256: [3; 32],
            },
        ),
        (
            "done",
            Control::Done {
                transfer: t,
                sha256: [3; 32],
                faults: FaultCounters {
                    corrupt: 1,
                    duplicate: 2,
                    reordered: 3,
                    retransmitted: 4,
                    lost: 5,
                },
            },
        ),
        (
            "mismatch",
            Control::Mismatch {
                transfer: t,
                reason: "whole-file hash".into(),
            },
        ),
        (
            "fetch",
            Control::Fetch {
                transfer: t,
                path: "logs/app.log".into(),
                base: None,
            },
        ),
        ("cancel", Control::Cancel { transfer: t }),
        (
            "abort",
            Control::Abort {
                transfer: t,
                reason: "source changed".into(),
            },
        ),
        (
            "list",
            Control::List {
                request: 1,
                dir: "photos/2025".into(),
                offset: 0,
            },
        ),
        (
            "listing",
            Control::Listing {
                request: 1,
                entries: vec![
                    RemoteEntry {
                        path: "photos/a.jpg".into(),
                        size: 123_456,
                        is_dir: false,
                        sha256: Some("ab".repeat(32)),
                        modified_unix: 1_750_000_000,
                    },
                    RemoteEntry {
                        path: "photos/old".into(),
                        size: 0,
                        is_dir: true,
                        sha256: None,
                        modified_unix: 0,
                    },
                ],
                more: true,
            },
        ),
        (
            "list-refused",
            Control::ListRefused {
                request: 2,
                reason: "may not list".into(),
            },
        ),
        (
            "present",
            Control::Present {
                transfer: t,
                sha256: [4; 32],
            },
        ),
        ("not-trusted", Control::NotTrusted),
    ]
}

fn manifests() -> Vec<(&'static str, Manifest)> {
    vec![
        ("empty", manifest(0, 64)),
        ("one-chunk", manifest(1000, 4096)),
        ("exact", manifest(3 * 65_536, 65_536)),
        ("ragged", manifest(1_000_001, 1 << 20)),
        ("largest", manifest((1 << 26) * (16 << 20), 16 << 20)),
        ("too-many-chunks", manifest((1 << 26) * 64 + 1, 64)),
    ]
}

fn names() -> Vec<(&'static str, &'static str)> {
    vec![
        ("file", "report.pdf"),
        ("nested", "inbox/2025/06/report.pdf"),
        ("dot-slash", "./photos//beach.jpg"),
        ("nfd", "cafe\u{301}/nai\u{308}ve.txt"),
        ("emoji", "\u{1F44D}\u{1F3FD} notes.md"),
        ("join", "inbox\nreport.pdf"),
        ("reserved-deep", "a/.pigeon/b"),
        ("escape-attempt", "a/../../etc/passwd"),
    ]
}

/// (name, gzip stream, declared size): the sender's own gzip, taken back
/// out of the chunk frames it builds.
fn gzipped() -> Vec<(&'static str, Vec<u8>, u32)> {
    let gz = |data: &[u8]| -> Vec<u8> {
        let nonce = at(1, 0, true);
        let (frame, cipher) = chunk(data, nonce, Gzip::Always);
        let Ok(Frame::Chunk { body, .. }) = Frame::decode_owned(frame) else {
            panic!("not a chunk frame")
        };
        let plain = cipher.open(nonce, &body).expect("opens");
        plain[33..].to_vec()
    };
    let log = b"2025-06-01 12:00:00 GET /index.html 200\n".repeat(100);
    let zeros = vec![0u8; 256 << 10];
    vec![
        ("empty", gz(b""), 0),
        ("hello", gz(b"hello, pigeon"), 13),
        ("log", gz(&log), log.len() as u32),
        ("short-claim", gz(&log), 1000),
        ("bomb", gz(&zeros), 4096),
    ]
}

/// A transport whose sends the test keeps.
struct Capture {
    caps: Capabilities,
    sent: mpsc::UnboundedSender<Message>,
}

impl Transport for Capture {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }
    fn describe(&self) -> String {
        "capture:".into()
    }
    async fn send(&self, _: &Address, message: Message) -> Result<(), SendError> {
        let _ = self.sent.send(message);
        Ok(())
    }
    fn incoming(&mut self) -> mpsc::Receiver<Received> {
        mpsc::channel(1).1
    }
    fn health(&self) -> std::sync::Arc<Health> {
        Default::default()
    }
}

/// The messages a real link sends for `frames` over a channel of
/// `max_message` (text: base64).
fn send_through_link(frames: &[Vec<u8>], max_message: usize, text_only: bool) -> Vec<Message> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let caps = Capabilities {
            max_message,
            text_only,
            alphabet: pigeon_core::alphabet::Alphabet::Base64,
            messages_per_minute: None,
            bytes_per_minute: None,
            burst: false,
        };
        let (inbound, _keep) = mpsc::channel(1);
        let link = pigeon_core::fuzzing::start_link(
            Capture { caps, sent: tx },
            "capture",
            0,
            inbound,
            vec![],
            pigeon_core::fuzzing::shared_reassembler(),
        );
        for f in frames {
            link.send_control(&"peer".to_string(), f.clone(), None);
        }
        let mut out = vec![];
        loop {
            match tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
                Ok(Some(m)) => out.push(m),
                _ if link.is_drained() => break,
                _ => {}
            }
        }
        out
    })
}

fn link_messages() -> Vec<(&'static str, Vec<u8>)> {
    let small = Frame::UnknownSession {
        session: [1; 16],
        from: [2; 32],
    }
    .encode()
    .expect("encode");
    let sealed = Frame::Sealed {
        session: [1; 16],
        from: [5; 8],
        nonce: 3,
        body: vec![7; 150],
    }
    .encode()
    .expect("encode");
    let (chunk_frame, _) = chunk(&[0x5a; 600], at(1, 0, true), Gzip::Never);
    let frames = vec![small.clone(), sealed.clone(), chunk_frame];
    let binary = send_through_link(&frames, 256, false);
    let text = send_through_link(&frames, 256, true);
    let whole = send_through_link(&[small, sealed], 4096, false);
    // The same fragments arriving backwards, and one twice.
    let mut shuffled = binary.clone();
    shuffled.reverse();
    shuffled.push(binary[1].clone());
    assert!(binary.len() > 2, "the frames were not fragmented");
    vec![
        ("whole", link_input(255, &whole)),
        ("fragments", link_input(255, &binary)),
        ("fragments-text", link_input(255, &text)),
        ("fragments-shuffled", link_input(255, &shuffled)),
        ("fragments-small-budget", link_input(3, &binary)),
    ]
}
