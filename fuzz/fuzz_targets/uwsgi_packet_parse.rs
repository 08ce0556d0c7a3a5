//! Every parser (vars, array, raw frame) on arbitrary bytes under three sets of limits:
//! see `uwsgi_packet::fuzzing::parse`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| uwsgi_packet::fuzzing::parse(data));
