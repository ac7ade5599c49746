//! A remote path: RemotePath::parse, join and escape_control.
//! The properties are in crates/pigeon-core/src/fuzzing.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pigeon_core::fuzzing::name(data));
