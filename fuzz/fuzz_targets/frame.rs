//! A frame as it leaves the link: Frame::decode and decode_owned.
//! The properties are in crates/pigeon-core/src/fuzzing.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pigeon_core::fuzzing::frame(data));
