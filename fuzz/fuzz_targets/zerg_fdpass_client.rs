//! The client state machine on reads cut from the input (chunks, fd counts, `MSG_CTRUNC`, times), strict and advisory count: no tracked fd leaks, completion only with a valid header: see `zerg_fdpass::fuzzing::client`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| zerg_fdpass::fuzzing::client(data));
