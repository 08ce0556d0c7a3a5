//! The Emperor core driven by channel bytes, EOFs, exits, time, scans, reports, on-demand connections and the shutdown, interleaved from the input: no panic, a pid maps to at most one vassal, nothing leaks: see `emperor_core::fuzzing::channel`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| emperor_core::fuzzing::channel(data));
