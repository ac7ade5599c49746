//! A gzipped chunk body: the bounded gunzip in ChunkBody::open_owned.
//! The properties are in crates/pigeon-core/src/fuzzing.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pigeon_core::fuzzing::gunzip(data));
