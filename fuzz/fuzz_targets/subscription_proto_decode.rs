//! `wire::decode` in compat and strict mode on arbitrary bytes: strict implies compat with the same request; what decodes re-encodes and decodes to itself: see `subscription_proto::fuzzing::decode`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| subscription_proto::fuzzing::decode(data));
