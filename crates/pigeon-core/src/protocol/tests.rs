use super::*;
use proptest::prelude::*;

fn cipher() -> ChunkCipher {
    ChunkCipher::new(&TransferSecret::random(), &[1; 16], &[2; 32])
}

/// Seal `data` as chunk `index` the way the sender does; returns the
/// sealed body (as the receiver gets it), the hash and whether it was
/// gzipped.
fn at(index: u32, last: bool) -> ChunkNonce {
    ChunkNonce {
        run: 1,
        index,
        last,
    }
}

fn seal(c: &ChunkCipher, index: u32, last: bool, data: &[u8]) -> (Vec<u8>, [u8; 32], bool) {
    let (frame, hash, gz) = ChunkBody::frame(
        c,
        &[1; 16],
        at(index, last),
        data.len(),
        Gzip::IfUseful,
        |b| {
            b.copy_from_slice(data);
            Ok(())
        },
        |_| {},
    )
    .unwrap();
    let Frame::Chunk { body, .. } = Frame::decode_owned(frame).unwrap() else {
        panic!("not a chunk frame")
    };
    (body, hash, gz)
}

#[test]
fn chunk_counts_cover_edge_sizes() {
    assert_eq!(chunk_count(0, 10), 1);
    assert_eq!(chunk_count(1, 10), 1);
    assert_eq!(chunk_count(10, 10), 1);
    assert_eq!(chunk_count(11, 10), 2);
    assert_eq!(chunk_count(30, 10), 3);
}

#[test]
fn compressible_chunks_are_compressed_and_come_back() {
    let c = cipher();
    let data = b"log line 42: all is well\n".repeat(200);
    let (body, hash, gz) = seal(&c, 0, true, &data);
    assert!(gz);
    assert!(body.len() < data.len() / 4);
    let (back, h2) = ChunkBody::open_owned(&c, at(0, true), body, data.len()).unwrap();
    assert_eq!(back, data);
    assert_eq!(hash, h2);
}

#[test]
fn incompressible_chunks_go_raw() {
    let c = cipher();
    let data: Vec<u8> = (0..4096).map(|_| rand::random()).collect();
    let (body, _, gz) = seal(&c, 0, false, &data);
    assert!(!gz);
    assert_eq!(body.len(), data.len() + 33 + crypto::TAG_LEN);
}

/// 50 MiB of zeros, gzipped (about 50 KB).
fn bomb() -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1024 * 1024];
    for _ in 0..50 {
        enc.write_all(&block).unwrap();
    }
    enc.finish().unwrap()
}

#[test]
fn inflation_stops_one_byte_past_the_declared_size_in_bounded_memory() {
    let gz = bomb();
    let out = inflate(&gz, 4096, 0).unwrap();
    // One byte past the cap is how a bomb is told from a chunk: never
    // more is inflated, and never more is allocated than the cap asks.
    assert_eq!(out.len(), 4097);
    assert!(
        out.capacity() <= 2 * 4097,
        "{} bytes allocated",
        out.capacity()
    );
}

#[test]
fn a_decompression_bomb_is_refused_without_inflating_it() {
    // A sender with the key crafts a chunk whose gzip expands far past
    // the declared size: it is refused after the cap, not after 50 MiB.
    let secret = TransferSecret::random();
    let c = ChunkCipher::new(&secret, &[1; 16], &[2; 32]);
    let mut plain = vec![FLAG_GZIP];
    plain.extend_from_slice(&[0u8; 32]);
    plain.extend_from_slice(&bomb());
    let body = c.seal(at(0, true), &plain).unwrap();
    let err = ChunkBody::open_owned(&c, at(0, true), body, 4096).unwrap_err();
    assert!(
        err.to_string()
            .contains("holds 4097 bytes, the manifest says 4096"),
        "{err}"
    );
}

#[test]
fn frames_round_trip_and_refuse_garbage() {
    let f = Frame::Chunk {
        transfer: [3; 16],
        index: 77,
        run: 9,
        last: false,
        body: vec![1, 2, 3],
    };
    assert_eq!(Frame::decode(&f.encode().unwrap()).unwrap(), f);
    assert!(Frame::decode(&[PROTOCOL_VERSION, 200, 1, 2]).is_err());
}

#[test]
fn frames_built_in_one_buffer_match_the_codec_and_open() {
    let c = cipher();
    for len in [0usize, 1, 200, 251, 70_000, 300_000] {
        for text in [false, true] {
            let data: Vec<u8> = if text {
                b"line of a log file\n"
                    .iter()
                    .cycle()
                    .take(len)
                    .copied()
                    .collect()
            } else {
                (0..len).map(|_| rand::random()).collect()
            };
            let mut seen = vec![];
            let (bytes, hash, _) = ChunkBody::frame(
                &c,
                &[7; 16],
                ChunkNonce {
                    run: 700,
                    index: 300,
                    last: true,
                },
                len,
                Gzip::IfUseful,
                |buf| {
                    buf.copy_from_slice(&data);
                    Ok(())
                },
                |d| seen = d.to_vec(),
            )
            .unwrap();
            assert_eq!(seen, data);
            let Frame::Chunk {
                transfer,
                run,
                index,
                last,
                body,
            } = Frame::decode(&bytes).unwrap()
            else {
                panic!("not a chunk frame")
            };
            assert_eq!((transfer, run, index, last), ([7; 16], 700, 300, true));
            assert_eq!(
                Frame::decode_owned(bytes.clone()).unwrap(),
                Frame::decode(&bytes).unwrap()
            );
            let again = Frame::Chunk {
                transfer,
                run,
                index,
                last,
                body: body.clone(),
            }
            .encode()
            .unwrap();
            assert_eq!(
                again, bytes,
                "hand-built head differs from bincode's at len {len}"
            );
            let (back, h) = ChunkBody::open_owned(
                &c,
                ChunkNonce {
                    run: 700,
                    index: 300,
                    last: true,
                },
                body,
                len,
            )
            .unwrap();
            assert_eq!((back, h), (data, hash));
        }
    }
}

#[test]
fn a_chunk_sealed_again_with_the_same_choice_is_the_same_bytes() {
    // Resends reuse the recorded gzip choice, so a nonce never seals two
    // different plaintexts: check that the same choice gives the same bytes.
    let c = cipher();
    let data = b"compressible compressible compressible\n".repeat(3000);
    let build = |gzip: Squeeze| {
        ChunkBody::frame(
            &c,
            &[1; 16],
            at(5, false),
            data.len(),
            gzip,
            |b| {
                b.copy_from_slice(&data);
                Ok(())
            },
            |_| {},
        )
        .unwrap()
    };
    for plan in [Gzip::Never, Gzip::Always, Gzip::IfUseful] {
        for level in [1, 6, 9] {
            let gzip = Squeeze { plan, level };
            assert_eq!(build(gzip).0, build(gzip).0, "{gzip:?}");
        }
    }
    assert!(build(Gzip::Always.into()).2 && !build(Gzip::Never.into()).2);
    // A higher level is fewer bytes to send, and opens the same.
    let fast = build(Gzip::Always.into()).0;
    let small = build(Squeeze {
        plan: Gzip::Always,
        level: 6,
    })
    .0;
    assert!(
        small.len() < fast.len(),
        "{} vs {}",
        small.len(),
        fast.len()
    );
    for frame in [fast, small] {
        let Frame::Chunk { body, .. } = Frame::decode_owned(frame).unwrap() else {
            panic!("not a chunk")
        };
        let (back, _) = ChunkBody::open_owned(&c, at(5, false), body, data.len()).unwrap();
        assert_eq!(back, data);
    }
}

#[test]
fn chunk_frame_overhead_bound_holds() {
    let c = cipher();
    let data: Vec<u8> = (0..3000).map(|_| rand::random()).collect();
    let (frame, _, _) = ChunkBody::frame(
        &c,
        &[3; 16],
        ChunkNonce {
            run: u32::MAX,
            index: u32::MAX,
            last: true,
        },
        data.len(),
        Gzip::IfUseful,
        |b| {
            b.copy_from_slice(&data);
            Ok(())
        },
        |_| {},
    )
    .unwrap();
    let Frame::Chunk { body, .. } = Frame::decode_owned(frame).unwrap() else {
        panic!("not a chunk frame")
    };
    let f = Frame::Chunk {
        transfer: [3; 16],
        run: u32::MAX,
        index: u32::MAX,
        last: true,
        body,
    };
    assert!(f.encode().unwrap().len() <= data.len() + CHUNK_FRAME_OVERHEAD);
}

proptest! {
    #[test]
    fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Frame::decode(&bytes);
        let mut chunkish = vec![PROTOCOL_VERSION, CHUNK_VARIANT];
        chunkish.extend_from_slice(&bytes);
        if let (Ok(a), Ok(b)) = (Frame::decode_owned(chunkish.clone()), Frame::decode(&chunkish)) {
            prop_assert_eq!(a, b);
        }
        let _ = Control::decode(&bytes);
        let mut versioned = vec![PROTOCOL_VERSION];
        versioned.extend_from_slice(&bytes);
        let _ = Frame::decode(&versioned);
        let _ = Control::decode(&versioned);
    }

    #[test]
    fn ack_state_names_exactly_the_set_bits(bits in proptest::collection::vec(any::<bool>(), 0..600)) {
        let mut map = Bitmap::new(bits.len() as u32);
        for (i, &b) in bits.iter().enumerate() {
            if b { map.set(i as u32); }
        }
        let ack = AckState::from_bitmap(&map);
        let named: Vec<u32> = ack.indices().collect();
        let expected: Vec<u32> = (0..bits.len() as u32).filter(|&i| bits[i as usize]).collect();
        if ack.ranges.len() < AckState::MAX_RANGES {
            prop_assert_eq!(named, expected);
        }
        for i in 0..bits.len() as u32 {
            if ack.contains(i) { prop_assert!(bits[i as usize]); }
        }
    }

    #[test]
    fn a_normalized_claim_names_what_the_raw_one_names(
        base in 0u32..300,
        ranges in proptest::collection::vec((0u32..400, 0u32..400), 0..40),
        len in 0u32..350,
    ) {
        let raw = AckState { base, ranges };
        let norm = raw.normalized(len);
        for w in norm.ranges.windows(2) {
            prop_assert!(w[0].1 < w[1].0, "sorted and merged: {:?}", norm.ranges);
        }
        for i in 0..len {
            let named = i < base || raw.ranges.iter().any(|&(s, e)| i >= s && i < e);
            prop_assert_eq!(norm.contains(i), named, "index {}", i);
        }
    }

    #[test]
    fn chunking_then_reassembly_gives_the_file_back(
        data in proptest::collection::vec(any::<u8>(), 0..5000),
        chunk_size in 1u32..700,
    ) {
        let m = Manifest { name: "f".into(), size: data.len() as u64, chunk_size, mime: String::new(), modified_unix: 0, mode: 0, delta: None };
        let c = cipher();
        let mut out = vec![0u8; data.len()];
        // Seal every chunk, then open them in reverse order.
        let sealed: Vec<_> = (0..m.chunk_count()).map(|i| {
            let off = m.offset(i) as usize;
            let len = m.chunk_len(i);
            let last = i + 1 == m.chunk_count();
            seal(&c, i, last, &data[off..off + len]).0
        }).collect();
        for i in (0..m.chunk_count()).rev() {
            let last = i + 1 == m.chunk_count();
            let (d, _) = ChunkBody::open_owned(&c, at(i, last), sealed[i as usize].clone(), m.chunk_len(i)).unwrap();
            let off = m.offset(i) as usize;
            out[off..off + d.len()].copy_from_slice(&d);
        }
        prop_assert_eq!(out, data);
    }
}

#[test]
fn both_decoders_refuse_an_eight_byte_varint_where_a_u32_belongs() {
    // Found by fuzzing (fuzz/regressions/frame/chunk-run-u64-varint): a
    // chunk frame whose run is written in the u64 form.
    let input = include_bytes!("../../../../fuzz/regressions/frame/chunk-run-u64-varint");
    assert!(Frame::decode(input).is_err());
    assert!(Frame::decode_owned(input.to_vec()).is_err());
}

/// A delta's base and result are part of what every chunk is bound to:
/// the same chunks against another base (or as the whole file) do not
/// open.
#[test]
fn a_manifest_binds_its_delta() {
    let whole = Manifest::sample("app", 1000, 256);
    let delta = DeltaOf {
        base_sha256: [1; 32],
        size: 5000,
        sha256: [2; 32],
    };
    let with = Manifest {
        delta: Some(delta),
        ..whole.clone()
    };
    let other_base = Manifest {
        delta: Some(DeltaOf {
            base_sha256: [3; 32],
            ..delta
        }),
        ..whole.clone()
    };
    let hashes = [&whole, &with, &other_base].map(|m| m.hash().unwrap());
    assert_ne!(hashes[0], hashes[1]);
    assert_ne!(hashes[1], hashes[2]);
    assert_eq!(with.file_size(), 5000);
    assert_eq!(whole.file_size(), 1000);
}
