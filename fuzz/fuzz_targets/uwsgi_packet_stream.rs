//! The streaming `Decoder`, fed in chunks (size from the first byte), agrees with one-shot
//! decoding: see `uwsgi_packet::fuzzing::stream`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| uwsgi_packet::fuzzing::stream(data));
