//! Property tests: garbage never changes the state, announces round-trip, and random
//! input-driven runs keep the core's invariants.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]
#![allow(clippy::disallowed_methods, reason = "a base Instant; no behaviour depends on its value")]

use legion_proto::fuzzing;
use proptest::prelude::*;

proptest! {
    #[test]
    fn prop_garbage_is_rejected_without_state_change(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::handle_datagram(&bytes);
        fuzzing::wire_open(&bytes);
    }

    #[test]
    fn prop_mangled_announces_are_rejected_without_state_change(flip in 0usize..400, byte: u8, cut in 0usize..400) {
        // A valid announce from a peer, then damaged: most damage is caught by the padding
        // or the parser, and whatever is rejected leaves no trace.
        let mut d = fuzzing::peer_datagram();
        let at = flip % d.len();
        d[at] ^= byte | 1;
        d.truncate(cut.max(4));
        fuzzing::handle_datagram(&d);
    }

    #[test]
    fn prop_random_runs_keep_the_invariants(data in prop::collection::vec(any::<u8>(), 0..2000)) {
        fuzzing::scenario(&data);
    }
}

#[test]
fn a_valid_peer_announce_is_accepted_so_the_properties_are_not_vacuous() {
    let t0 = std::time::Instant::now();
    let mut l = fuzzing::legion(t0);
    l.handle_datagram(t0, "127.0.0.1:41002".parse().unwrap(), &fuzzing::peer_datagram()).unwrap();
    assert_eq!(l.members().len(), 1);
    assert_eq!(l.members()[0].scroll(), b"scroll");
}
