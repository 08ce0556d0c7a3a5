//! Pairs cut from the input encode alike through `PacketBuilder` and `encode_packet` and
//! decode back unchanged: see `uwsgi_packet::fuzzing::roundtrip`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| uwsgi_packet::fuzzing::roundtrip(data));
