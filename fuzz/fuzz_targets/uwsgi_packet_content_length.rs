//! `parse_content_length` agrees with a reference built on `str::parse::<u64>`: see
//! `uwsgi_packet::fuzzing::content_length`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| uwsgi_packet::fuzzing::content_length(data));
