//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer).
//! Compiled only with the `fuzzing` feature; not an API.
//!
//! One function per target, each taking the fuzzer's bytes: it feeds them
//! to the code that reads what a peer or a channel sends (frames, link
//! messages and their fragments, manifests, control messages, remote
//! paths, gzipped chunks) and asserts what must hold whatever the bytes.
//! A panic is a finding: either the code under test panicked or a property
//! below failed. Inputs that hold more than one value are laid out by the
//! `*_input` functions, which `fuzz/src/bin/seeds.rs` uses for the seeds.
//!
//! Inputs that once broke a property are kept in `fuzz/regressions/`; all
//! of them now run clean.

#![doc(hidden)]

use std::io::Read as _;
use std::path::{Component, Path};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::codec;
use crate::crypto::{sha256, ChunkCipher, ChunkNonce, TransferSecret};
use crate::error::CoreError;
use crate::link::{self, Reassembler, MAX_FRAME};
use crate::policy::{escape_control, is_reserved, RemotePath};
use crate::protocol::{AckState, ChunkBody, Control, Early, Frame, Manifest};
use crate::transport::{Address, Capabilities, Health, Message, Received, SendError, Transport};

/// What the seed builder needs of the crate's inner layers.
pub use crate::codec::encode as codec_encode;
pub use crate::link::shared_reassembler;
pub use crate::link::start as start_link;

/// [`Frame::decode`] and [`Frame::decode_owned`] (its fast path for chunks):
/// they agree, and what they take encodes, no longer, to the same frame.
pub fn frame(data: &[u8]) {
    let generic = Frame::decode(data).ok();
    let owned = Frame::decode_owned(data.to_vec()).ok();
    // The fast chunk decoder and the generic one agree on every input
    // (they did not on an 8-byte varint for a u32, fixed).
    assert_eq!(owned, generic, "decode_owned differs from decode");
    for f in generic.iter().chain(owned.iter()) {
        round_trip(f, data.len(), Frame::encode, Frame::decode);
        let bytes = f.encode().expect("checked by round_trip");
        assert_eq!(Frame::decode_owned(bytes).ok().as_ref(), Some(f));
    }
}

/// Link messages as a transport hands them over, through a real link
/// ([`link::start`]) and, beside it, through [`link::unpack_owned`],
/// [`link::unpack`] and a [`Reassembler`] with a small budget. Input:
/// [`link_input`]. The link gives the frames that unpacking gives, both
/// unpackers agree, and the small reassembler never holds more than its
/// budget.
pub fn link_unpack(data: &[u8]) {
    let Some((&budget_byte, mut rest)) = data.split_first() else {
        return;
    };
    let mut messages = vec![];
    while let [kind, a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
        let (body, next) = tail.split_at(len);
        messages.push(if kind & 1 == 1 {
            Message::Text(String::from_utf8_lossy(body).into_owned())
        } else {
            Message::Binary(body.to_vec())
        });
        rest = next;
    }

    // The receive loop's own budget.
    let mut whole = Reassembler::new(64 * 1024 * 1024);
    let mut owned = Reassembler::new(64 * 1024 * 1024);
    let budget = (usize::from(budget_byte & 15) + 1) << (6 + (budget_byte >> 4));
    let mut small = Reassembler::new(budget);
    let mut expected = vec![];
    for m in &messages {
        let Some(bytes) = link_bytes(m) else { continue };
        let a = link::unpack(&bytes, &mut whole);
        let b = link::unpack_owned(bytes.clone(), &mut owned);
        assert_eq!(a, b, "unpack and unpack_owned differ");
        expected.extend(a.unwrap_or_default());
        if let Ok(frames) = link::unpack(&bytes, &mut small) {
            assert!(frames.iter().all(|f| f.len() <= MAX_FRAME));
        }
        assert!(
            small.bytes_held() <= budget,
            "reassembly holds {} bytes, its budget is {budget}",
            small.bytes_held()
        );
    }
    assert_eq!(through_link(messages), expected, "the link's frames differ");
}

/// Lay out [`link_unpack`]'s input: the small reassembler's budget `b`
/// (`((b & 15) + 1) << (6 + (b >> 4))` bytes: 64 B to 32 MiB), then per
/// message a kind byte (1: text, 0: binary), its length (u16,
/// little-endian, longer messages are cut) and its bytes.
pub fn link_input(budget: u8, messages: &[Message]) -> Vec<u8> {
    let mut out = vec![budget];
    for m in messages {
        let (kind, bytes) = match m {
            Message::Text(s) => (1, s.as_bytes()),
            Message::Binary(b) => (0, b.as_slice()),
        };
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        out.push(kind);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&bytes[..usize::from(len)]);
    }
    out
}

/// What the link's receive loop unpacks from a message: its bytes when they
/// begin with the link's magic, else their base64 (the rule `link_bytes` in
/// link/mod.rs applies, restated here as the reference).
fn link_bytes(m: &Message) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let raw = match m {
        Message::Text(s) => s.as_bytes(),
        Message::Binary(b) => b,
    };
    if raw.starts_with(b"PG") {
        return Some(raw.to_vec());
    }
    let text = std::str::from_utf8(raw).ok()?.trim();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .filter(|b| b.starts_with(b"PG"))
}

/// A transport that hands over `incoming` and sends nowhere.
struct Feed {
    caps: Capabilities,
    incoming: Option<mpsc::Receiver<Received>>,
    health: Arc<Health>,
}

impl Transport for Feed {
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }
    fn describe(&self) -> String {
        "fuzz:".into()
    }
    async fn send(&self, _: &Address, _: Message) -> Result<(), SendError> {
        Ok(())
    }
    fn incoming(&mut self) -> mpsc::Receiver<Received> {
        self.incoming.take().unwrap_or_else(|| mpsc::channel(1).1)
    }
    fn health(&self) -> Arc<Health> {
        self.health.clone()
    }
}

/// The frames a link delivers for `messages`, in order.
fn through_link(messages: Vec<Message>) -> Vec<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let (tx, rx) = mpsc::channel(messages.len().max(1));
        for message in messages {
            tx.try_send(Received {
                from: None,
                message,
            })
            .expect("the channel has room for every message");
        }
        drop(tx);
        let feed = Feed {
            caps: Capabilities {
                max_message: 4096,
                text_only: false,
                alphabet: crate::alphabet::Alphabet::Base64,
                messages_per_minute: None,
                bytes_per_minute: None,
                burst: false,
            },
            incoming: Some(rx),
            health: Arc::default(),
        };
        let (inbound, mut frames) = mpsc::channel(16);
        let _link = link::start(feed, "fuzz", 0, inbound, vec![], link::shared_reassembler());
        let mut out = vec![];
        // Ends when the receive loop has read every message and stopped.
        while let Some(f) = frames.recv().await {
            out.push(f.frame);
        }
        out
    })
}

/// A [`Manifest`] as [`Manifest::hash`] encodes it (codec version 1): see
/// [`check_manifest`].
pub fn manifest(data: &[u8]) {
    if let Ok(m) = codec::decode::<Manifest>("manifest", 1, data) {
        round_trip(
            &m,
            data.len(),
            |m| codec::encode("manifest", 1, m),
            |b| codec::decode("manifest", 1, b),
        );
        check_manifest(&m);
    }
}

/// A manifest [`Manifest::check`] lets through has the chunk geometry the
/// receiver relies on: a chunk count that fits (no truncation), chunks
/// that tile the file exactly, and a hash and epoch.
fn check_manifest(m: &Manifest) {
    if m.check().is_err() {
        return;
    }
    let count = m.chunk_count();
    let exact = m.size.div_ceil(u64::from(m.chunk_size)).max(1);
    assert_eq!(u64::from(count), exact, "chunk count truncated");
    assert!(count <= 1 << 26);
    let last = count - 1;
    assert_eq!(m.offset(last), u64::from(last) * u64::from(m.chunk_size));
    assert_eq!(m.offset(last) + m.chunk_len(last) as u64, m.size);
    assert!(m.chunk_len(last) > 0 || m.size == 0, "an empty last chunk");
    assert!(m.chunk_len(0) <= m.chunk_size as usize);
    if count > 1 {
        assert_eq!(m.chunk_len(last - 1), m.chunk_size as usize);
    }
    assert_eq!(m.chunk_len(count), 0, "a chunk past the end");
    let secret = TransferSecret {
        key: [7; 32],
        nonce_prefix: [9; 15],
    };
    assert!(m.hash().is_ok() && m.epoch(&secret).is_ok());
}

/// [`Control::decode`], as the engine runs it on an opened sealed frame,
/// and [`Early::decode`] (the offers in a handshake) on the same bytes:
/// round trips, then what the engine checks first in what they carry
/// (manifests, paths, acknowledged ranges).
pub fn control(data: &[u8]) {
    if let Ok(c) = Control::decode(data) {
        round_trip(&c, data.len(), Control::encode, Control::decode);
        inspect(&c);
    }
    if let Ok(e) = Early::decode(data) {
        round_trip(&e, data.len(), Early::encode, Early::decode);
        e.offers.iter().for_each(inspect);
    }
}

fn inspect(c: &Control) {
    let _ = c.transfer();
    match c {
        Control::Offer { manifest, path, .. } => {
            check_manifest(manifest);
            check_name(path);
        }
        Control::Fetch { path, .. } => {
            check_name(path);
        }
        Control::List { dir, .. } => {
            check_name(dir);
        }
        Control::Accept { have, .. } | Control::Ack { have, .. } => check_ack(have),
        Control::Listing { entries, .. } => {
            for e in entries {
                check_shown(&e.path);
            }
        }
        _ => {}
    }
}

/// [`AckState::normalized`] gives sorted, merged ranges inside `base..len`
/// that name exactly what the raw claim names below `len`.
fn check_ack(raw: &AckState) {
    for len in [0, 100, raw.base, raw.base.saturating_add(1000), u32::MAX] {
        let n = raw.normalized(len);
        assert_eq!(n.base, raw.base.min(len));
        for &(s, e) in &n.ranges {
            assert!(n.base <= s && s < e && e <= len, "{n:?} for len {len}");
        }
        for w in n.ranges.windows(2) {
            assert!(w[0].1 < w[1].0, "not merged: {n:?}");
        }
        let named = |i: u32| i < raw.base || raw.ranges.iter().any(|&(s, e)| s <= i && i < e);
        let probes = raw
            .ranges
            .iter()
            .flat_map(|&(s, e)| [s.wrapping_sub(1), s, e.wrapping_sub(1), e]);
        for i in probes.chain([raw.base.wrapping_sub(1), raw.base, len.wrapping_sub(1)]) {
            if i < len {
                assert_eq!(n.contains(i), named(i), "index {i} of {raw:?}, len {len}");
            }
        }
        if n.indices().take(1 << 16).count() < 1 << 16 {
            let all: Vec<u32> = n.indices().collect();
            assert!(all.windows(2).all(|w| w[0] < w[1]));
            assert!(all.iter().all(|&i| n.contains(i)));
        }
    }
}

/// The remote path parser, [`RemotePath::parse`] (and `parse_file`,
/// `join`), and [`escape_control`]. Input: UTF-8; a first `\n` splits it
/// into a path and a name to join to it.
pub fn name(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let (base, leaf) = raw.split_once('\n').unwrap_or((raw, ""));
    let Some(p) = check_name(base) else { return };
    check_name(leaf);
    if let Ok(j) = p.join(leaf) {
        check_path(&j);
        assert!(
            j.components().starts_with(p.components()),
            "{j} not under {p}"
        );
    }
}

/// What any name is shown as has no control or bidi characters; what the
/// parser takes is a path that stays under the root.
fn check_name(raw: &str) -> Option<RemotePath> {
    check_shown(raw);
    let _ = is_reserved(raw);
    let p = RemotePath::parse(raw);
    match (&p, RemotePath::parse_file(raw)) {
        (Ok(p), Ok(f)) => assert_eq!(p, &f),
        (Ok(p), Err(_)) => assert!(p.is_root(), "parse_file refused {p}"),
        (Err(_), Ok(f)) => panic!("parse_file took {f}, parse refused it"),
        (Err(_), Err(_)) => {}
    }
    let p = p.ok()?;
    check_path(&p);
    Some(p)
}

fn check_shown(raw: &str) {
    let shown = escape_control(raw);
    assert!(
        !shown.chars().any(|c| c.is_control() || is_bidi(c)),
        "{shown:?} still holds control or bidi characters"
    );
}

fn is_bidi(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn check_path(p: &RemotePath) {
    let s = p.to_string();
    assert!(
        !s.starts_with('/') && !s.contains('\\') && !s.contains('\0'),
        "{s:?}"
    );
    for part in p.components() {
        assert!(!part.is_empty() && part != "." && part != ".." && !part.contains('/'));
        assert!(part.len() <= 255, "a component of {} bytes", part.len());
        assert!(
            !part.chars().any(|c| c.is_control() || is_bidi(c)),
            "{part:?}"
        );
        assert!(unicode_normalization::is_nfc(part), "{part:?} is not NFC");
    }
    if let Some(first) = p.components().first() {
        assert!(!is_reserved(first), "{first:?} is reserved");
    }
    // As the file system reads it: plain names only, one per component.
    let path = Path::new(&s);
    assert!(
        path.components().all(|c| matches!(c, Component::Normal(_))),
        "{s:?}"
    );
    assert_eq!(path.components().count(), p.components().len(), "{s:?}");
    // One name is one file: what it shows parses back to itself (the
    // `./C:x` and NFC-length cases found here are fixed in policy.rs).
    let again = RemotePath::parse(&s);
    assert!(
        again.as_ref().is_ok_and(|q| q == p),
        "{} bytes shown, parsed back as {again:?}",
        s.len()
    );
}

/// The bounded gunzip of a chunk body ([`ChunkBody::open_owned`] on a
/// gzip-flagged body, sealed here under a fixed key). Input:
/// [`gunzip_input`]. It never inflates more than one byte past the size
/// the manifest declares, and returns data only of exactly that size and
/// hash.
pub fn gunzip(data: &[u8]) {
    let Some((len, gz)) = data.split_first_chunk::<4>() else {
        return;
    };
    let expected = u32::from_le_bytes(*len).min(1 << 20) as usize;
    // The same bytes inflated here, to claim the right hash when they fit.
    let mut reference = vec![];
    let clean = flate2::read::GzDecoder::new(gz)
        .take(expected as u64 + 1)
        .read_to_end(&mut reference)
        .is_ok();
    let fits = clean && reference.len() == expected;
    let mut plain = vec![1]; // FLAG_GZIP, protocol/chunk.rs
    plain.extend_from_slice(&sha256(&reference[..reference.len().min(expected)]));
    plain.extend_from_slice(gz);
    let secret = TransferSecret {
        key: [1; 32],
        nonce_prefix: [2; 15],
    };
    let cipher = ChunkCipher::new(&secret, &[3; 16], &[4; 32]);
    let at = ChunkNonce {
        run: 1,
        index: 0,
        last: true,
    };
    let body = cipher.seal(at, &plain).expect("sealing never fails");
    match ChunkBody::open_owned(&cipher, at, body, expected) {
        Ok((out, hash)) => {
            assert!(fits, "took {} bytes the reference refused", out.len());
            assert_eq!(out.len(), expected);
            assert_eq!(hash, sha256(&out));
            assert_eq!(out, reference);
        }
        Err(CoreError::Integrity(msg)) => {
            assert!(!fits, "refused what fits: {msg}");
            // "chunk 0 holds N bytes, the manifest says M"
            let held = msg
                .split_once(" holds ")
                .and_then(|(_, r)| r.split(' ').next())
                .and_then(|n| n.parse::<usize>().ok());
            if let Some(n) = held {
                assert!(n <= expected + 1, "inflated {n} bytes for {expected}");
            }
        }
        Err(e) => panic!("not an integrity error: {e}"),
    }
}

/// Lay out [`gunzip`]'s input: the declared size (u32, little-endian,
/// capped at 1 MiB), then the gzip stream.
pub fn gunzip_input(expected_len: u32, gz: &[u8]) -> Vec<u8> {
    let mut out = expected_len.to_le_bytes().to_vec();
    out.extend_from_slice(gz);
    out
}

/// `value` encodes to at most `input_len` bytes (the codec's encoding is
/// the shortest, so never longer than what it was decoded from) that
/// decode to the same value.
fn round_trip<T: PartialEq + std::fmt::Debug>(
    value: &T,
    input_len: usize,
    encode: impl Fn(&T) -> crate::error::Result<Vec<u8>>,
    decode: impl Fn(&[u8]) -> crate::error::Result<T>,
) {
    let bytes = encode(value).expect("a decoded value encodes");
    assert!(bytes.len() <= input_len, "encodes longer than it came");
    assert_eq!(decode(&bytes).ok().as_ref(), Some(value), "round trip");
}
