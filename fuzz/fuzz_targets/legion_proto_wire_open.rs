//! `wire::open` (with the key) and `wire::open_plaintext` (without) on arbitrary bytes; what opens re-seals to the same announce: see `legion_proto::fuzzing::wire_open`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| legion_proto::fuzzing::wire_open(data));
