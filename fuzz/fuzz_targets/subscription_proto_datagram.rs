//! `SubscriptionServer::handle_datagram` on arbitrary bytes (compat, strict, signed): a rejected datagram leaves the table unchanged, an accepted one did what it said: see `subscription_proto::fuzzing::handle_datagram`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| subscription_proto::fuzzing::handle_datagram(data));
