//! A run driven by the input (subscribes, unsubscribes, picks, leases, clock ticks, damaged datagrams, all six algorithms): refs follow the leases, events replay to the table, picks are fresh: see `subscription_proto::fuzzing::scenario`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| subscription_proto::fuzzing::scenario(data));
