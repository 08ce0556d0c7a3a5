//! Property tests of the subscription server and the wire codec (STYLE.md §3.7):
//!
//! * garbage datagrams (random bytes, damaged real datagrams, well-tiled bodies of random
//!   pairs) never change the table when they are rejected, in `Mode::Compat` and
//!   `Mode::Strict`, signed or not; `wire::decode` never panics and what it decodes
//!   round-trips (`subscription_proto::fuzzing::{handle_datagram, decode}`);
//! * an accepted subscribe is found by `pick` until it expires, with every algorithm;
//! * leases never leak: refs follow the leases held and return to 0 when all are dropped;
//! * random input-driven runs keep the table's invariants (`fuzzing::scenario`).
//!
//! The pick order itself is checked against a reference model in `tests/model.rs`.
//! `PROPTEST_CASES` bounds the cases (default 256).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is a failed test")]
#![allow(clippy::disallowed_methods, reason = "a base Instant; no behaviour depends on its value")]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use subscription_proto::fuzzing::{self, Snapshot};
use subscription_proto::wire::{self, Mode};
use subscription_proto::{
    Algorithm, Command, Lease, MemoryFiles, Security, ServerConfig, SubscriptionServer,
};

const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::Wrr,
    Algorithm::Lrc,
    Algorithm::Wlrc,
    Algorithm::IpHash,
    Algorithm::SmoothWrr,
    Algorithm::Ketama,
];
const KEYS: [&str; 3] = ["a.test", "b.test", "example.com"];
const ADDRESSES: [&str; 4] = ["127.0.0.1:3031", "127.0.0.1:3032", "10.0.0.7:3031", "/run/app.sock"];
const CLIENT: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));

/// Keys the decoder knows, and a few it does not, for bodies that reach the field rules.
const PAIR_KEYS: [&str; 22] = [
    "key",
    "address",
    "modifier1",
    "modifier2",
    "cores",
    "load",
    "weight",
    "sni_key",
    "sni_crt",
    "sni_ca",
    "notify",
    "unix",
    "sign",
    "backup",
    "algo",
    "proto",
    "vassal",
    "clear",
    "inactive",
    "Key",
    "k",
    "signx",
];

fn body_of(pairs: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in pairs {
        let k = PAIR_KEYS[*k].as_bytes();
        body.extend_from_slice(&(k.len() as u16).to_le_bytes());
        body.extend_from_slice(k);
        body.extend_from_slice(&(v.len() as u16).to_le_bytes());
        body.extend_from_slice(v);
    }
    body
}

/// A value: mostly short digits or names, sometimes arbitrary bytes.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[0-9]{0,21}".prop_map(String::into_bytes),
        2 => prop::sample::select(&["example.com", "127.0.0.1:42010", "a.test", "h", "wrr", "1"][..])
            .prop_map(|s| s.as_bytes().to_vec()),
        2 => prop::collection::vec(any::<u8>(), 0..40),
        1 => prop::collection::vec(any::<u8>(), 256..300),
    ]
}

proptest! {
    #[test]
    fn prop_garbage_is_rejected_without_state_change(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        fuzzing::handle_datagram(&bytes);
        fuzzing::decode(&bytes);
    }

    #[test]
    fn prop_damaged_datagrams_are_rejected_without_state_change(
        which in 0usize..6,
        command in prop::sample::select(&[0u8, 1, 2, 255][..]),
        flip in any::<usize>(),
        byte: u8,
        cut in any::<usize>(),
    ) {
        // A valid datagram for a node the table has (or not), then damaged.
        let (key, address) = [
            ("example.com", "127.0.0.1:42010"), ("full.test", "127.0.0.1:42040"), ("hand.test", "127.0.0.1:42012"),
            ("new.test", "127.0.0.1:1"), ("example.com", "127.0.0.1:9"), ("", "x"),
        ][which];
        let mut d = fuzzing::datagram(Command::Subscribe, key.as_bytes(), address.as_bytes(), 3);
        d[3] = command;
        let at = flip % d.len();
        d[at] ^= byte;
        d.truncate(cut % (d.len() + 1));
        fuzzing::handle_datagram(&d);
        fuzzing::decode(&d);
    }

    #[test]
    fn prop_bodies_of_random_pairs_are_decoded_and_applied_consistently(
        header in prop_oneof![Just(None), any::<[u8; 4]>().prop_map(Some)],
        command in 0u8..3,
        pairs in prop::collection::vec((0usize..PAIR_KEYS.len(), value()), 0..12),
        tail in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        // Well-tiled bodies of known keys reach the field rules that random bytes rarely do.
        let body = body_of(&pairs);
        let mut d = header.map_or_else(|| vec![224, body.len() as u8, (body.len() >> 8) as u8, command], Vec::from);
        d.extend_from_slice(&body);
        d.extend_from_slice(&tail);
        fuzzing::decode(&d);
        fuzzing::handle_datagram(&d);
    }

    #[test]
    fn prop_decode_never_panics_and_round_trips(bytes in prop::collection::vec(any::<u8>(), 0..5000)) {
        for mode in [Mode::Compat, Mode::Strict] {
            let _ = wire::decode(&bytes, mode);
        }
        fuzzing::decode(&bytes);
    }

    #[test]
    fn prop_an_accepted_subscribe_is_picked_until_it_expires(
        algorithm in prop::sample::select(&ALGORITHMS[..]),
        tolerance in prop::sample::select(&[4u64, 17][..]),
        ops in prop::collection::vec((0u8..3, 0usize..3, 0usize..4, 0u64..5, 0u64..6000), 1..60),
    ) {
        // No unsubscribe, no failure, leases dropped at once: a key's pick finds a node
        // exactly while one of its nodes was (re)subscribed within the tolerance, and the
        // node it returns is one of those.
        let t0 = Instant::now();
        let config = ServerConfig::new().algorithm(algorithm).tolerance(Duration::from_secs(tolerance));
        let mut s = SubscriptionServer::new(config, MemoryFiles::new(), t0, fuzzing::WALL);
        let mut now = t0;
        let mut last: BTreeMap<(usize, usize), Instant> = BTreeMap::new();
        for (kind, key, address, weight, millis) in ops {
            match kind {
                0 => {
                    let d = fuzzing::datagram(Command::Subscribe, KEYS[key].as_bytes(), ADDRESSES[address].as_bytes(), weight);
                    prop_assert_eq!(s.handle_datagram(now, &d), Ok(()));
                    last.insert((key, address), now);
                }
                1 => {
                    let fresh: Vec<&str> = (0..ADDRESSES.len())
                        .filter(|&a| last.get(&(key, a)).is_some_and(|&t| now - t <= Duration::from_secs(tolerance)))
                        .map(|a| ADDRESSES[a])
                        .collect();
                    let picked = s.pick(now, KEYS[key].as_bytes(), CLIENT).map(|l| l.address().to_vec());
                    match picked {
                        None => prop_assert!(fresh.is_empty(), "{:?}: no node, fresh {:?}", algorithm, fresh),
                        Some(a) => prop_assert!(
                            fresh.iter().any(|f| f.as_bytes() == a),
                            "{:?} picked {:?}, fresh {:?}", algorithm, a.escape_ascii().to_string(), fresh
                        ),
                    }
                }
                _ => now += Duration::from_millis(millis),
            }
        }
    }

    #[test]
    fn prop_leases_never_leak(
        algorithm in prop::sample::select(&ALGORITHMS[..]),
        ops in prop::collection::vec((0u8..6, 0usize..3, 0usize..4, any::<usize>()), 1..80),
    ) {
        // Refs always equal the leases held, whatever happens to the nodes meanwhile
        // (unsubscribes, failures, expiry, resurrection); none is left when all are dropped.
        let t0 = Instant::now();
        let mut s = SubscriptionServer::new(ServerConfig::new().algorithm(algorithm), MemoryFiles::new(), t0, fuzzing::WALL);
        let mut now = t0;
        let mut held: Vec<Lease> = Vec::new();
        for (kind, key, address, n) in ops {
            let (k, a) = (KEYS[key].as_bytes(), ADDRESSES[address].as_bytes());
            match kind {
                0 => { let _ = s.handle_datagram(now, &fuzzing::datagram(Command::Subscribe, k, a, 1 + n as u64 % 3)); }
                1 => { let _ = s.handle_datagram(now, &fuzzing::datagram(Command::Unsubscribe, k, a, 0)); }
                2 => {
                    if let Some(l) = s.pick(now, k, CLIENT) {
                        if n % 3 == 0 { l.mark_failed(); }
                        held.push(l);
                    }
                }
                3 => { if !held.is_empty() { held.swap_remove(n % held.len()); } }
                4 => now += Duration::from_secs(n as u64 % 20),
                _ => { let _ = s.pick(now, k, CLIENT); }
            }
            let refs: u64 = s.pools().iter().flat_map(|p| p.nodes()).map(|n| n.refs()).sum();
            prop_assert_eq!(refs, held.len() as u64, "refs in the table vs leases held");
        }
        held.clear();
        prop_assert!(s.pools().iter().flat_map(|p| p.nodes()).all(|n| n.refs() == 0));
    }

    #[test]
    fn prop_random_runs_keep_the_invariants(data in prop::collection::vec(any::<u8>(), 0..1200)) {
        fuzzing::scenario(&data);
    }
}

#[test]
fn the_shared_vectors_are_accepted_so_the_properties_are_not_vacuous() {
    // The vectors' nodes are already in `fuzzing::server`: 01 refreshes, 02 unsubscribes,
    // 10 refreshes; a new pool for a subscribe nobody made.
    let t0 = Instant::now();
    let dir =
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/vectors/subscription"));
    let hex = |name: &str| {
        let s = std::fs::read_to_string(dir.join(name)).unwrap();
        (0..s.trim().len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s.trim()[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
    };
    for mode in [Mode::Compat, Mode::Strict] {
        let mut s = fuzzing::server(t0, mode, Algorithm::Wrr);
        let before = Snapshot::of(&s).nodes();
        s.handle_datagram(t0, &hex("01-subscribe-to-plain.hex")).unwrap();
        s.handle_datagram(t0, &hex("10-python-handcrafted-subscribe.hex")).unwrap();
        assert_eq!(Snapshot::of(&s).nodes(), before, "refreshes");
        s.handle_datagram(t0, &hex("02-unsubscribe-on-sigint.hex")).unwrap();
        assert_eq!(Snapshot::of(&s).nodes(), before - 1);
        s.handle_datagram(t0, &fuzzing::datagram(Command::Subscribe, b"new.test", b"127.0.0.1:1", 0))
            .unwrap();
        assert_eq!(Snapshot::of(&s).nodes(), before);
    }
    // The signed ones pass the signature and stamp checks of `fuzzing::signed_server`.
    for security in [Security::Compat, Security::Strict] {
        // It holds vector 05's node already: replaying 05 is refused (same stamp).
        let mut s = fuzzing::signed_server(t0, security);
        assert_eq!(Snapshot::of(&s).nodes(), 1);
        let replayed = s.handle_datagram(t0, &hex("05-signed-subscribe2-sha1.hex"));
        assert_eq!(replayed.map_err(|e| e.reason()), Err("replayed"));
        s.handle_datagram(t0, &hex("06-signed-subscribe-to-key-with-port.hex")).unwrap();
        assert_eq!(Snapshot::of(&s).nodes(), 2);
        s.handle_datagram(t0, &hex("07-signed-unsubscribe.hex")).unwrap();
        assert_eq!(Snapshot::of(&s).nodes(), 1);
    }
    for name in ["01-subscribe-to-plain.hex", "05-signed-subscribe2-sha1.hex", "07-signed-unsubscribe.hex"] {
        fuzzing::handle_datagram(&hex(name));
        fuzzing::decode(&hex(name));
    }
}

#[test]
fn a_scenario_that_subscribes_picks_and_expires_runs_through() {
    // conf 0 (wrr, compat); subscribe a.test/3031, b.test/3032; pick a.test held and
    // connected; tick 2.5 s; unsubscribe a.test/3031 (kept: referenced); release; pick.
    let data = [0u8, 0, 0, 0, 1, 1, 2, 1, 2, 3, 0, 0, 3, 6, 0, 25, 0, 2, 0, 0, 0, 5, 0, 0, 0, 3, 0, 0, 0];
    fuzzing::scenario(&data);
}
