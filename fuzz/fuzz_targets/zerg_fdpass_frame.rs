//! `proto::Header::decode` on arbitrary bytes: what decodes re-encodes byte for byte, every error matches the bytes, and the client read in one piece agrees: see `zerg_fdpass::fuzzing::frame`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zerg_fdpass::fuzzing::frame(data));
