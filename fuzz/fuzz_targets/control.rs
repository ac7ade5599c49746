//! An opened sealed frame's plaintext: Control::decode (and Early::decode).
//! The properties are in crates/pigeon-core/src/fuzzing.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pigeon_core::fuzzing::control(data));
