//! `Legion::handle_datagram` on arbitrary bytes: a rejected datagram leaves the state unchanged: see `legion_proto::fuzzing::handle_datagram`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| legion_proto::fuzzing::handle_datagram(data));
