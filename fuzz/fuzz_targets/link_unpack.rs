//! A sequence of channel messages: link unpacking and fragment reassembly.
//! The properties are in crates/pigeon-core/src/fuzzing.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pigeon_core::fuzzing::link_unpack(data));
