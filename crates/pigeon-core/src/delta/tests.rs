use std::io::Cursor;

use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::*;

fn params(bs: u32, strong: u8) -> SignatureParams {
    SignatureParams {
        block_size: bs,
        strong_len: strong,
    }
}

fn delta_of(base: &[u8], new: &[u8], p: SignatureParams) -> (Vec<u8>, DeltaStats) {
    let sig = Signature::of(base, p).expect("signature of a slice");
    let mut delta = Vec::new();
    let stats = diff(&sig, new, new.len() as u64, &mut delta).expect("diff into a Vec");
    (delta, stats)
}

fn rebuild(base: &[u8], delta: &[u8], limit: u64) -> Result<Vec<u8>, DeltaError> {
    let mut out = Vec::new();
    apply(Cursor::new(base), base.len() as u64, delta, &mut out, limit)?;
    Ok(out)
}

fn roundtrip(base: &[u8], new: &[u8], p: SignatureParams) -> DeltaStats {
    let (delta, stats) = delta_of(base, new, p);
    assert_eq!(stats.delta_len, delta.len() as u64);
    assert_eq!(stats.copied + stats.literal, new.len() as u64);
    let out = rebuild(base, &delta, new.len() as u64).expect("apply of an honest delta");
    assert_eq!(out, new);
    stats
}

/// Bytes with some repetition, so that blocks recur and candidates collide.
fn data(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..max),
        proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(0u8)], 0..max),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Replace(usize, Vec<u8>),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..300)
        )
            .prop_map(|(a, b)| Edit::Insert(a, b)),
        (any::<usize>(), 1usize..400).prop_map(|(a, n)| Edit::Delete(a, n)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..50)
        )
            .prop_map(|(a, b)| Edit::Replace(a, b)),
    ];
    proptest::collection::vec(edit, 0..8)
}

fn edited(base: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = base.to_vec();
    for e in edits {
        let at = |a: usize, len: usize| if len == 0 { 0 } else { a % (len + 1) };
        match e {
            Edit::Insert(a, b) => {
                let p = at(*a, v.len());
                v.splice(p..p, b.iter().copied());
            }
            Edit::Delete(a, n) => {
                let p = at(*a, v.len());
                let end = (p + n).min(v.len());
                v.drain(p..end);
            }
            Edit::Replace(a, b) => {
                let p = at(*a, v.len());
                let end = (p + b.len()).min(v.len());
                v.splice(p..end, b.iter().copied());
            }
        }
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn diff_then_apply_rebuilds_any_edited_file(
        base in data(6000), eds in edits(), bs in prop_oneof![Just(64u32), Just(100), Just(512)],
    ) {
        let new = edited(&base, &eds);
        roundtrip(&base, &new, params(bs, 8));
    }

    #[test]
    fn diff_then_apply_rebuilds_unrelated_files(base in data(3000), new in data(3000)) {
        roundtrip(&base, &new, params(64, 16));
    }

    #[test]
    fn diff_is_deterministic(base in data(4000), eds in edits()) {
        let new = edited(&base, &eds);
        let (a, _) = delta_of(&base, &new, params(64, 8));
        let (b, _) = delta_of(&base, &new, params(64, 8));
        prop_assert_eq!(a, b);
    }

    #[test]
    fn signature_decode_of_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Signature::decode(&bytes);
        let mut with_magic = b"PGSG\x01".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = Signature::decode(&with_magic);
    }

    #[test]
    fn apply_of_random_or_mangled_deltas_never_panics_nor_overruns(
        base in data(2000), new in data(2000), noise in proptest::collection::vec(any::<u8>(), 0..64),
        at in any::<usize>(),
    ) {
        let (mut delta, _) = delta_of(&base, &new, params(64, 8));
        let p = at % (delta.len() + 1);
        delta.splice(p..p.min(delta.len()).saturating_add(noise.len().min(delta.len() - p)), noise.iter().copied());
        let limit = 4096;
        if let Ok(out) = rebuild(&base, &delta, limit) {
            prop_assert!(out.len() as u64 <= limit);
        }
        let mut raw = b"PGDL\x01".to_vec();
        raw.extend_from_slice(&noise);
        let _ = rebuild(&base, &raw, limit);
    }

    #[test]
    fn signature_encode_decode_roundtrips(base in data(5000), bs in 64u32..700) {
        let sig = Signature::of(&base[..], params(bs, 16)).expect("signature");
        let bytes = sig.encode();
        prop_assert_eq!(bytes.len(), sig.encoded_len());
        prop_assert_eq!(Signature::decode(&bytes).expect("decode"), sig);
    }
}

#[test]
fn empty_base_empty_new_identical_and_short_files_roundtrip() {
    let base: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let p = params(64, 16);
    roundtrip(b"", b"", p);
    roundtrip(b"", &base, p);
    roundtrip(&base, b"", p);
    roundtrip(&base, &base[..10], p); // shorter than a block
    roundtrip(&base[..10], &base[..10], p);
    let same = roundtrip(&base, &base, p);
    assert_eq!(same.literal, 0, "an identical file is all copies");
    assert_eq!(same.ops, 1, "one copy for an identical file");
    assert_eq!(
        base.len() % 64,
        8,
        "the base is not a multiple of the block"
    );
}

#[test]
fn appended_file_costs_about_the_appended_bytes() {
    let base: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut new = base.clone();
    new.extend_from_slice(&[7u8; 3000]);
    let stats = roundtrip(&base, &new, params(512, 16));
    // The base's short last block cannot match mid-file, so it travels too.
    assert!(stats.literal <= 3000 + 512, "literal {}", stats.literal);
    assert!(stats.delta_len < 3000 + 512 + 32);
}

#[test]
fn a_moved_range_is_found_at_its_new_offset() {
    let base: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let mut new = base[50_000..].to_vec();
    new.extend_from_slice(&base[..50_000]);
    let stats = roundtrip(&base, &new, params(256, 16));
    assert!(stats.literal < 2 * 256, "literal {}", stats.literal);
}

/// Issue 31: apply cannot know the base changed (same length, other bytes);
/// the rebuilt file then fails the SHA-256 the caller checks.
#[test]
fn a_changed_base_of_the_same_length_yields_a_file_failing_the_callers_sha256() {
    let base: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let mut new = base.clone();
    new[100] ^= 1;
    let (delta, _) = delta_of(&base, &new, params(256, 16));
    let mut changed = base.clone();
    changed[10_000] ^= 0xff;
    let out = rebuild(&changed, &delta, 1 << 20).expect("apply only checks the length");
    assert_ne!(Sha256::digest(&out), Sha256::digest(&new));
}

fn honest() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let base: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let mut new = base.clone();
    new.splice(1000..1000, b"hello".iter().copied());
    let (delta, _) = delta_of(&base, &new, params(256, 16));
    (base, new, delta)
}

/// A delta from its parts: header (base length, result length), then ops.
fn forged(base_len: u64, result_len: u64, ops: &[u8]) -> Vec<u8> {
    let mut d = b"PGDL\x01".to_vec();
    write_varint(&mut d, base_len);
    write_varint(&mut d, result_len);
    d.extend_from_slice(ops);
    d
}

#[test]
fn hostile_copy_outside_the_base_is_refused() {
    let (base, _, _) = honest();
    let mut ops = vec![OP_COPY];
    write_varint(&mut ops, zigzag(4000));
    write_varint(&mut ops, 200);
    ops.push(OP_END);
    let err = rebuild(&base, &forged(4096, 200, &ops), 1 << 20).expect_err("past the end");
    assert!(matches!(err, DeltaError::CopyOutOfBounds { .. }), "{err}");
    let mut ops = vec![OP_COPY];
    write_varint(&mut ops, zigzag(-1));
    write_varint(&mut ops, 10);
    ops.push(OP_END);
    let err = rebuild(&base, &forged(4096, 10, &ops), 1 << 20).expect_err("before the start");
    assert!(matches!(err, DeltaError::CopyOutOfBounds { .. }), "{err}");
    let mut ops = vec![OP_COPY];
    write_varint(&mut ops, zigzag(10));
    write_varint(&mut ops, u64::MAX);
    ops.push(OP_END);
    let err =
        rebuild(&base, &forged(4096, u64::MAX, &ops), u64::MAX).expect_err("overflowing length");
    assert!(matches!(err, DeltaError::CopyOutOfBounds { .. }), "{err}");
}

/// Additions are bounded as copies are: inside the base, within the
/// announced length, their differences present in full.
#[test]
fn hostile_additions_outside_the_base_or_cut_short_are_refused() {
    let (base, _, _) = honest();
    let mut ops = vec![OP_ADD];
    write_varint(&mut ops, zigzag(4090));
    write_varint(&mut ops, 10);
    ops.extend_from_slice(&[1; 10]);
    ops.push(OP_END);
    let err = rebuild(&base, &forged(4096, 10, &ops), 1 << 20).expect_err("past the end");
    assert!(matches!(err, DeltaError::CopyOutOfBounds { .. }), "{err}");
    let mut ops = vec![OP_ADD];
    write_varint(&mut ops, zigzag(0));
    write_varint(&mut ops, 100);
    ops.extend_from_slice(&[1; 60]);
    let err = rebuild(&base, &forged(4096, 100, &ops), 1 << 20).expect_err("cut short");
    assert!(matches!(err, DeltaError::Truncated), "{err}");
    let mut ops = vec![OP_ADD];
    write_varint(&mut ops, zigzag(0));
    write_varint(&mut ops, 100);
    ops.extend_from_slice(&[1; 100]);
    ops.push(OP_END);
    let err = rebuild(&base, &forged(4096, 50, &ops), 1 << 20).expect_err("past its length");
    assert!(matches!(err, DeltaError::Overrun { .. }), "{err}");
    // And an honest one adds, wrapping.
    let mut ops = vec![OP_ADD];
    write_varint(&mut ops, zigzag(0));
    write_varint(&mut ops, 3);
    ops.extend_from_slice(&[1, 0, 255]);
    ops.push(OP_END);
    let out = rebuild(&base, &forged(4096, 3, &ops), 1 << 20).expect("an honest addition");
    assert_eq!(
        out,
        vec![base[0].wrapping_add(1), base[1], base[2].wrapping_add(255)]
    );
}

#[test]
fn hostile_result_over_the_limit_is_refused_before_writing() {
    let (base, new, delta) = honest();
    let err = rebuild(&base, &delta, new.len() as u64 - 1).expect_err("over the limit");
    assert!(matches!(err, DeltaError::TooLarge { .. }), "{err}");
}

#[test]
fn hostile_instructions_past_the_announced_length_are_refused() {
    let (base, _, _) = honest();
    // A copy loop: the same range again and again, far past the header's length.
    let mut ops = Vec::new();
    for i in 0..100 {
        ops.push(OP_COPY);
        write_varint(&mut ops, zigzag(if i == 0 { 0 } else { -4096 }));
        write_varint(&mut ops, 4096);
    }
    ops.push(OP_END);
    let err = rebuild(&base, &forged(4096, 8192, &ops), 1 << 30).expect_err("overrun");
    assert!(matches!(err, DeltaError::Overrun { .. }), "{err}");
}

#[test]
fn hostile_truncated_trailing_or_short_deltas_are_refused() {
    let (base, _, delta) = honest();
    for cut in [0, 3, 5, 6, delta.len() / 2, delta.len() - 1] {
        let err = rebuild(&base, &delta[..cut], 1 << 20).expect_err("truncated");
        assert!(
            matches!(err, DeltaError::Truncated | DeltaError::NotADelta),
            "cut at {cut}: {err}"
        );
    }
    let mut trailing = delta.clone();
    trailing.push(0);
    let err = rebuild(&base, &trailing, 1 << 20).expect_err("trailing");
    assert!(matches!(err, DeltaError::TrailingBytes), "{err}");
    // Fewer bytes than announced.
    let mut ops = vec![OP_LITERAL];
    write_varint(&mut ops, 3);
    ops.extend_from_slice(b"abc");
    ops.push(OP_END);
    let err = rebuild(&base, &forged(4096, 10, &ops), 1 << 20).expect_err("short");
    assert!(matches!(err, DeltaError::LengthMismatch { .. }), "{err}");
}

#[test]
fn hostile_header_and_opcodes_are_refused() {
    let (base, _, delta) = honest();
    let err = rebuild(&base[..4000], &delta, 1 << 20).expect_err("other base length");
    assert!(matches!(err, DeltaError::BaseMismatch { .. }), "{err}");
    let err = rebuild(&base, &forged(4096, 1, &[9]), 1 << 20).expect_err("unknown op");
    assert!(matches!(err, DeltaError::UnknownInstruction(9)), "{err}");
    let err =
        rebuild(&base, &forged(4096, 1, &[OP_LITERAL, 0, OP_END]), 1 << 20).expect_err("empty op");
    assert!(matches!(err, DeltaError::EmptyInstruction), "{err}");
    let mut bad = delta.clone();
    bad[0] = b'X';
    assert!(matches!(
        rebuild(&base, &bad, 1 << 20),
        Err(DeltaError::NotADelta)
    ));
    let mut bad = delta;
    bad[4] = 2;
    assert!(matches!(
        rebuild(&base, &bad, 1 << 20),
        Err(DeltaError::UnsupportedVersion { .. })
    ));
    let huge = [
        b'P', b'G', b'D', b'L', 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ];
    assert!(matches!(
        rebuild(&base, &huge, 1 << 20),
        Err(DeltaError::BadVarint)
    ));
}

#[test]
fn hostile_signature_headers_are_refused_without_allocating() {
    let sig = Signature::of(&[1u8; 1000][..], params(64, 8)).expect("signature");
    let good = sig.encode();
    // A base length of 2^60 with a few bytes of body: refused, not allocated.
    let mut huge = b"PGSG\x01".to_vec();
    write_varint(&mut huge, 64);
    huge.push(8);
    write_varint(&mut huge, 1 << 60);
    huge.extend_from_slice(&[0; 24]);
    assert!(matches!(
        Signature::decode(&huge),
        Err(DeltaError::BadSignature(_))
    ));
    assert!(Signature::decode(&good[..good.len() - 1]).is_err());
    let mut tiny = b"PGSG\x01".to_vec();
    write_varint(&mut tiny, 1);
    tiny.push(8);
    write_varint(&mut tiny, 0);
    assert!(matches!(
        Signature::decode(&tiny),
        Err(DeltaError::BadSignature(_))
    ));
}

#[test]
fn block_sizes_keep_travelling_signatures_compact() {
    for len in [0u64, 1, 1 << 20, 100_000_000, 1 << 30, 10 << 30] {
        let p = SignatureParams::for_file(len, Travels::Yes);
        let blocks = len.div_ceil(u64::from(p.block_size));
        let bytes = blocks * (4 + u64::from(p.strong_len)) + 32;
        assert!(bytes <= 32 << 10, "{len}: {bytes} bytes");
        let p = SignatureParams::for_file(len, Travels::No);
        let blocks = len.div_ceil(u64::from(p.block_size));
        assert!(
            blocks * (4 + u64::from(p.strong_len)) <= 10 << 20,
            "{len}: stored too big"
        );
    }
}

fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A reader that hands out at most `step` bytes a call, like a pipe.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Literal runs longer than the window are written out as they go and the
/// window slides: matches before, inside and after them are all found.
#[test]
fn files_larger_than_the_window_roundtrip_with_matches_on_both_sides() {
    let base = noise(1, 3 << 20);
    let mut new = base[..1 << 20].to_vec();
    new.extend_from_slice(&noise(2, (5 << 20) / 2));
    new.extend_from_slice(&base[1 << 20..]);
    new.extend_from_slice(&base[100..5000]);
    let p = params(96, 16);
    let sig = Signature::of(
        Trickle {
            data: &base,
            step: 1000,
        },
        p,
    )
    .expect("signature");
    let mut delta = Vec::new();
    let stats = diff(
        &sig,
        Trickle {
            data: &new,
            step: 7777,
        },
        new.len() as u64,
        &mut delta,
    )
    .expect("diff");
    // Each of the four seams costs less than a block: only whole blocks of
    // the base are copied.
    assert!(
        stats.literal < (5 << 20) / 2 + 4 * 96,
        "literal {}",
        stats.literal
    );
    assert_eq!(
        rebuild(&base, &delta, new.len() as u64).expect("apply"),
        new
    );
    let (whole, _) = delta_of(&base, &new, p);
    assert_eq!(
        delta, whole,
        "the delta does not depend on how the file is read"
    );
}

#[test]
fn a_file_that_changed_length_while_read_is_an_error() {
    let base = noise(3, 10_000);
    let sig = Signature::of(&base[..], params(96, 16)).expect("signature");
    let err = diff(&sig, &base[..], 9_999, &mut Vec::new()).expect_err("longer than announced");
    assert!(err.to_string().contains("changed while"), "{err}");
    let err = diff(&sig, &base[..], 10_001, &mut Vec::new()).expect_err("shorter than announced");
    assert!(err.to_string().contains("changed while"), "{err}");
}

/// A signature built to collide (weak checksums of the new file's own
/// blocks, strong hashes that never match, blocks of a megabyte) would
/// make every offset of a run of equal bytes cost a megabyte of hashing:
/// the diff gives up at a bounded cost instead.
#[test]
fn hostile_signature_that_collides_everywhere_costs_a_bounded_diff() {
    let block = 1 << 20;
    let new = vec![0u8; 48 << 20];
    let honest = Signature::of(&new[..block], params(block as u32, 8)).unwrap();
    let mut bytes = honest.encode();
    let n = bytes.len();
    for b in &mut bytes[n - 8..] {
        *b ^= 0xff;
    }
    let sig = Signature::decode(&bytes).unwrap();
    let started = std::time::Instant::now();
    let err = diff(&sig, &new[..], new.len() as u64, std::io::sink()).expect_err("gives up");
    assert!(err.to_string().contains("bounded cost"), "{err}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
