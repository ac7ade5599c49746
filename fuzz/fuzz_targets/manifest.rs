//! A manifest: Manifest::check and the chunk geometry it guards.
//! The properties are in crates/pigeon-core/src/fuzzing.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pigeon_core::fuzzing::manifest(data));
