//! A run driven by the input (sealed announces from four peers, clock ticks, commands): events numbered without gaps, members distinct: see `legion_proto::fuzzing::scenario`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| legion_proto::fuzzing::scenario(data));
