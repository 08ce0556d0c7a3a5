//! Entry points for the fuzz targets and property tests. Private: may change or vanish.
//!
//! Each asserts invariants, not only the absence of panics. They read the clock once, for
//! a base `Instant`; nothing depends on its value.
#![allow(clippy::disallowed_methods, reason = "a base Instant for the runs; no behaviour depends on it")]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::server::{DatagramError, Event};
use crate::sign::Digest;
use crate::wire::{self, Mode};
use crate::{
    Algorithm, Command, Lease, MemoryFiles, Request, Security, ServerConfig, SignCheck, SubscriptionServer,
};

/// The capture time of the shared vectors' signed datagrams (their `unix` stamp is
/// 1795309356), so the seeds pass the stamp checks and reach the signature code.
pub const WALL: Duration = Duration::from_secs(1_795_309_360);

/// The public key of the shared vectors (`vectors/subscription/keys/secure.test.pem`,
/// RSA-2048), which verifies vectors 05–07.
pub const SECURE_TEST_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtXQyF7dupRmZStzgUAoy
R5EOjHHs4yrP4NCIcaQ8UmOf/ozHygwvxjPwkpwql5uUMCGkKSTdx2qnPT0O9UKD
Bgcmpn1iYKpA9TguHreZJ7SzpFEMnEMAcdBZWA0XKImU73xHE/iscmJpboQngjmG
HQnpm8rYB5ng3P33n3RmYcYYjCVrST0Dikhn1yaHBjTzQEx9NxG90O/6SE063mob
RlFg9ah2XKQP+ae8AbgwHOxTWXYqdd8r0ZNi9EE6yAXEDT7dxZlPcaxI6XBwVF1d
4Cl8gBhXFPKgyI7cEHnS2WJv7mMq+w237MVABXbVPUR3MYljXJDFDqSZPfvQzGBz
kwIDAQAB
-----END PUBLIC KEY-----
";

/// Vector 05 (`05-signed-subscribe2-sha1.hex`): `secure.test` → `127.0.0.1:42020`, signed
/// with SHA1, stamp 1795309356.
const VECTOR_05_HEX: &str = concat!(
    "e080010003006b65790b007365637572652e746573740700616464726573730f003132372e302e302e313a3432303230",
    "09006d6f6469666965723101003009006d6f646966696572320100300500636f72657301003104006c6f616401003006",
    "007765696768740100300400756e69780a003137393533303933353604007369676e000145f682fe3c7be783ed6465db",
    "c2de12099394f0ba084f713dd839bcc3f1e3701c85ccbb2203d321695c099104494ff63d633fe5c6bfc916a845afafc4",
    "c3433a35cb5ed56d9e1c489c6abe74c1b2744e92f1c03a525554591fb2ae24d537d0cbc96127c9238efc5d997ded3844",
    "fe174566bb3046f6efc2561fec2583ae12ddcc471a55b317a1a0fdae3762588dc8f6a40d21644abb11845620d3fcba4f",
    "06be79015743ebe6e85db119d7ff4b19ca4e19126dbd98dc10081cc23e6a058ef13a92a708f18f2ac2228ad9e59849db",
    "c4f32e9ed07b125e05ad9a75c965f802933ca1e3a5d31c163f04d05a9a76d1cb2d32e0abfd8ce002762cb563ad9d11d2",
    "23da313b",
);

/// The keys and addresses of the shared vectors 01–08 and 10, so their seeds refresh or
/// unsubscribe nodes that [`server`] already has.
const VECTOR_NODES: [(&str, &str); 6] = [
    ("example.com", "127.0.0.1:42010"),
    ("full.test", "127.0.0.1:42040"),
    ("explicit.test", "10.0.0.7:3031"),
    ("resub.test", "127.0.0.1:42200"),
    ("hand.test", "127.0.0.1:42012"),
    ("example.com", "127.0.0.1:42011"),
];

/// An unsigned subscribe (or unsubscribe) datagram.
pub fn datagram(command: Command, key: &[u8], address: &[u8], weight: u64) -> Vec<u8> {
    let req =
        Request { key: key.to_vec(), address: address.to_vec(), weight, cores: 1, ..Request::default() };
    wire::encode(command, &req).unwrap_or_default()
}

/// A server decoding in `mode` with `algorithm`, tolerance 17 s, holding one node per
/// `VECTOR_NODES` entry.
pub fn server(now: Instant, mode: Mode, algorithm: Algorithm) -> SubscriptionServer {
    let config = ServerConfig::new().mode(mode).algorithm(algorithm);
    let mut s = SubscriptionServer::new(config, MemoryFiles::new(), now, WALL);
    for (key, address) in VECTOR_NODES {
        let _ = s.handle_datagram(now, &datagram(Command::Subscribe, key.as_bytes(), address.as_bytes(), 2));
    }
    drain(&mut s);
    s
}

/// A server checking SHA1 signatures with the shared vectors' public key (for `secure.test`
/// and `secure.test:8000`), in `security` mode, holding vector 05's node.
pub fn signed_server(now: Instant, security: Security) -> SubscriptionServer {
    let files = MemoryFiles::new().with("/keys/secure.test.pem", SECURE_TEST_PEM, 0, 0).with(
        "/keys/secure.test_8000.pem",
        SECURE_TEST_PEM,
        0,
        0,
    );
    let config = ServerConfig::new().security(security).sign_check(SignCheck::new(Digest::Sha1, "/keys"));
    let mut s = SubscriptionServer::new(config, files, now, WALL);
    let _ = s.handle_datagram(now, &unhex(VECTOR_05_HEX));
    drain(&mut s);
    s
}

fn unhex(hex: &str) -> Vec<u8> {
    let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
    hex.as_bytes().chunks(2).map(|p| digit(p[0]) << 4 | digit(p.get(1).copied().unwrap_or(b'0'))).collect()
}

fn drain(s: &mut SubscriptionServer) -> (usize, usize) {
    let events = std::iter::from_fn(|| s.poll_event()).count();
    let transmits = std::iter::from_fn(|| s.poll_transmit()).count();
    (events, transmits)
}

/// Everything the public getters show of a table, counters of the stats apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot(Vec<PoolSnapshot>);

/// One pool of a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSnapshot {
    key: Vec<u8>,
    hash: u32,
    hits: u64,
    algorithm: Algorithm,
    nodes: Vec<NodeSnapshot>,
}

/// One node of a [`Snapshot`]: every getter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSnapshot {
    address: Vec<u8>,
    modifier1: u8,
    modifier2: u8,
    last_check_unix: u64,
    cores: u64,
    load: u64,
    weight: u64,
    wrr: u64,
    refs: u64,
    requests: u64,
    last_requests: u64,
    tx: u64,
    rx: u64,
    failcnt: u64,
    death_mark: bool,
    credentials: crate::Credentials,
    notify: Option<Vec<u8>>,
    backup: u64,
    proto: u8,
    vassal: Option<Vec<u8>>,
}

impl Snapshot {
    /// The table as [`SubscriptionServer::pools`] shows it.
    pub fn of(s: &SubscriptionServer) -> Self {
        Self(
            s.pools()
                .into_iter()
                .map(|p| PoolSnapshot {
                    key: p.key().to_vec(),
                    hash: p.hash(),
                    hits: p.hits(),
                    algorithm: p.algorithm(),
                    nodes: p
                        .nodes()
                        .iter()
                        .map(|n| NodeSnapshot {
                            address: n.address().to_vec(),
                            modifier1: n.modifier1(),
                            modifier2: n.modifier2(),
                            last_check_unix: n.last_check_unix(),
                            cores: n.cores(),
                            load: n.load(),
                            weight: n.weight(),
                            wrr: n.wrr(),
                            refs: n.refs(),
                            requests: n.requests(),
                            last_requests: n.last_requests(),
                            tx: n.tx(),
                            rx: n.rx(),
                            failcnt: n.failcnt(),
                            death_mark: n.death_mark(),
                            credentials: n.credentials(),
                            notify: n.notify().map(<[u8]>::to_vec),
                            backup: n.backup(),
                            proto: n.proto(),
                            vassal: n.vassal().map(<[u8]>::to_vec),
                        })
                        .collect(),
                })
                .collect(),
        )
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.0.iter().map(|p| p.nodes.len()).sum()
    }
}

/// `wire::decode` in both modes on arbitrary bytes: never panics; a strict decode is also a
/// compat decode of the same request (unless a number has 20 bytes or more, which compat
/// reads as 0, as uWSGI does); every decoded request that can be encoded encodes to a
/// datagram that decodes, in strict mode, to the same command and request, and re-encodes
/// to the same bytes.
pub fn decode(data: &[u8]) {
    let strict = wire::decode(data, Mode::Strict);
    let compat = wire::decode(data, Mode::Compat);
    if let Ok(s) = &strict {
        let c = compat.as_ref().unwrap_or_else(|e| panic!("strict accepts, compat refuses: {e:?}"));
        assert_eq!(s.command, c.command, "command");
        assert_eq!(s.signed_region, c.signed_region, "signed region");
        if !has_long_numbers(data) {
            assert_eq!(s.request, c.request, "strict and compat read the pairs differently");
        }
    }
    let strict_ok = strict.is_ok();
    for decoded in [strict, compat].into_iter().flatten() {
        match wire::encode(decoded.command, &decoded.request) {
            Ok(e) => {
                let again =
                    wire::decode(&e, Mode::Strict).unwrap_or_else(|err| panic!("encode gave {err:?}"));
                assert_eq!(
                    (again.command, &again.request),
                    (decoded.command, &decoded.request),
                    "round trip"
                );
                let region = decoded.request.sign.as_ref().map(|sign| 4..e.len() - (8 + sign.len()));
                assert_eq!(again.signed_region, region, "the sign pair is last");
                assert_eq!(wire::encode(again.command, &again.request).ok(), Some(e), "not a fixpoint");
            }
            Err(wire::WireError::TooLargeToSend { .. }) => {
                // The canonical form writes the seven base pairs and numbers in full
                // (compat reads a 1-byte "/" as 2^64 - 1): it can outgrow what was
                // received, by less than 256 bytes.
                assert!(
                    data.len() > wire::MAX_DATAGRAM - 256,
                    "a {}-byte datagram re-encodes too large",
                    data.len()
                );
            }
            Err(e) => {
                // Compat keeps what the encoder refuses: an empty `sign`, `sign` without
                // `unix`. Strict refuses them itself.
                assert!(
                    matches!(e, wire::WireError::EmptySignature | wire::WireError::SignWithoutUnix),
                    "decoded but not encodable: {e:?}"
                );
                assert!(!strict_ok, "strict accepted what encode refuses: {e:?}");
            }
        }
    }
}

/// Whether a numeric pair of a (strictly tiled) datagram has 20 bytes or more.
fn has_long_numbers(data: &[u8]) -> bool {
    const NUMBERS: [&[u8]; 8] =
        [b"modifier1", b"modifier2", b"cores", b"load", b"weight", b"unix", b"backup", b"clear"];
    uwsgi_packet::Vars::parse(data.get(4..).unwrap_or_default(), wire::MAX_DATAGRAM)
        .map(|vars| vars.into_iter().any(|(k, v)| NUMBERS.contains(&k) && v.len() >= 20))
        .unwrap_or(true)
}

/// Arbitrary bytes given to `handle_datagram`, on a table of six nodes decoding in compat
/// and in strict mode, and, if the datagram is signed, on a signed table holding vector 05's
/// node (compat or strict security, after header byte 0's low bit): a
/// rejected datagram leaves the table exactly as it was, with no event and no ack, and its
/// wire error is `wire::decode`'s; an accepted subscribe leaves its node alive and
/// refreshed, an accepted unsubscribe removes its node (nothing holds a lease).
pub fn handle_datagram(data: &[u8]) {
    let t0 = Instant::now();
    for mode in [Mode::Compat, Mode::Strict] {
        let mut s = server(t0, mode, Algorithm::Wrr);
        check_datagram(&mut s, t0 + Duration::from_secs(5), data, mode);
    }
    // Signed: only when the datagram carries a signature (RSA is slow), with the security
    // mode chosen by header byte 0, which compat decoding ignores (224, the vectors': compat).
    if wire::decode(data, Mode::Compat).is_ok_and(|d| d.request.sign.is_some()) {
        let security = if data[0] & 1 == 0 { Security::Compat } else { Security::Strict };
        let mut s = signed_server(t0, security);
        check_datagram(&mut s, t0, data, Mode::Compat);
    }
}

fn check_datagram(s: &mut SubscriptionServer, now: Instant, data: &[u8], mode: Mode) {
    let before = Snapshot::of(s);
    let result = s.handle_datagram(now, data);
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
    let acks = std::iter::from_fn(|| s.poll_transmit()).count();
    let after = Snapshot::of(s);
    let decoded = wire::decode(data, mode);
    match result {
        Err(e) => {
            assert_eq!(before, after, "rejected datagram ({e:?}) changed the table");
            assert!(
                events.is_empty() && acks == 0,
                "rejected datagram ({e:?}) had effects: {events:?}, {acks} acks"
            );
            if let DatagramError::Wire(w) = e {
                assert_eq!(decoded.err(), Some(w), "the server's wire error is not decode's");
            } else {
                assert!(decoded.is_ok(), "{e:?} for a datagram that does not decode");
            }
        }
        Ok(()) => {
            let d = decoded.unwrap_or_else(|e| panic!("accepted a datagram that does not decode: {e:?}"));
            let req = &d.request;
            let node = s.pool(&req.key).and_then(|p| p.nodes().iter().find(|n| n.address() == req.address));
            match d.command {
                Command::Subscribe => {
                    let n = node.unwrap_or_else(|| panic!("accepted subscribe left no node"));
                    assert!(!n.death_mark(), "accepted subscribe left a dead node");
                    assert_eq!((n.weight(), n.cores(), n.load()), (req.weight.max(1), req.cores, req.load));
                    let added = after.nodes() == before.nodes() + 1;
                    assert!(added || after.nodes() == before.nodes(), "a subscribe adds at most one node");
                    assert_eq!(
                        added,
                        events.iter().any(|e| matches!(e, Event::NodeAdded { .. })),
                        "{events:?}"
                    );
                    assert!(acks <= usize::from(added), "an ack without a new node");
                }
                Command::Unsubscribe => {
                    assert!(node.is_none(), "unsubscribed unreferenced node still in the table");
                    assert_eq!(after.nodes() + 1, before.nodes(), "an unsubscribe removes one node");
                    assert_eq!(acks, 0, "an ack on unsubscribe");
                }
            }
        }
    }
}

const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::Wrr,
    Algorithm::Lrc,
    Algorithm::Wlrc,
    Algorithm::IpHash,
    Algorithm::SmoothWrr,
    Algorithm::Ketama,
];
const SCENARIO_KEYS: [&str; 5] = ["a.test", ".example.org", "b.test", "default", "x"];
const SCENARIO_LOOKUPS: [&str; 3] = ["www.example.org", "a.b.c.d.e.example.org", "nobody"];
const SCENARIO_ADDRESSES: [&str; 5] =
    ["127.0.0.1:3031", "127.0.0.1:3032", "10.0.0.7:3031", "/run/a.sock", "@abstract"];
const SCENARIO_TOLERANCE: Duration = Duration::from_secs(17);

/// A run driven by the input. The first byte picks the algorithm (all six), dot-split, a
/// fallback key and the decoding mode; then each 4-byte record is a subscribe, an
/// unsubscribe, a pick (client address, `connected`, `mark_failed`, held or dropped), the
/// release of a held lease, a clock tick (0–25.5 s), or a damaged datagram. Checks after
/// every step:
///
/// * every node's `refs` is the number of leases held on it, and a held lease's node is
///   still in the table;
/// * no pool is empty, no address appears twice in a pool, every weight is at least 1;
/// * a pick returns an alive node not older than the tolerance, from an existing pool;
/// * the events, replayed, give exactly the table's pools and nodes;
/// * a rejected datagram changes nothing.
///
/// At the end, with every lease dropped, all refs are 0, and one lookup per key after the
/// tolerance empties the table.
pub fn scenario(data: &[u8]) {
    let Some((&conf, records)) = data.split_first() else { return };
    let t0 = Instant::now();
    let mut now = t0;
    let mode = if conf & 0x20 != 0 { Mode::Strict } else { Mode::Compat };
    let config = ServerConfig::new()
        .algorithm(ALGORITHMS[usize::from(conf & 0x07) % 6])
        .dotsplit(conf & 0x08 != 0)
        .fallback_key((conf & 0x10 != 0).then(|| b"default".to_vec()))
        .mode(mode)
        .tolerance(SCENARIO_TOLERANCE);
    let mut s = SubscriptionServer::new(config, MemoryFiles::new(), t0, WALL);
    let mut held: Vec<Lease> = Vec::new();
    // The table as the events tell it: key → addresses.
    let mut replay: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for rec in records.chunks(4) {
        let b = |i: usize| rec.get(i).copied().unwrap_or(0);
        let key = SCENARIO_KEYS[usize::from(b(1)) % SCENARIO_KEYS.len()].as_bytes();
        let address = SCENARIO_ADDRESSES[usize::from(b(2)) % SCENARIO_ADDRESSES.len()].as_bytes();
        match b(0) % 8 {
            0 | 1 => {
                let req = Request {
                    key: key.to_vec(),
                    address: address.to_vec(),
                    weight: u64::from(b(3) % 6),
                    cores: u64::from(b(3) >> 4),
                    notify: (b(3) & 0x80 != 0).then(|| b"/run/ack.sock".to_vec()),
                    ..Request::default()
                };
                let d = wire::encode(Command::Subscribe, &req).unwrap_or_default();
                assert_eq!(s.handle_datagram(now, &d), Ok(()), "a valid subscribe is accepted");
            }
            2 => {
                let d = datagram(Command::Unsubscribe, key, address, 0);
                let r = s.handle_datagram(now, &d);
                assert!(matches!(r, Ok(()) | Err(DatagramError::UnknownNode)), "{r:?}");
            }
            3 | 4 => {
                let lookups = SCENARIO_KEYS.len() + SCENARIO_LOOKUPS.len();
                let i = usize::from(b(1)) % lookups;
                let wanted = SCENARIO_KEYS.get(i).or_else(|| SCENARIO_LOOKUPS.get(i - SCENARIO_KEYS.len()));
                let wanted = wanted.map_or(&b""[..], |k| k.as_bytes());
                let client = (b(2) != 255).then(|| IpAddr::V4(Ipv4Addr::new(10, 0, b(2), b(3))));
                if let Some(lease) = s.pick(now, wanted, client) {
                    check_pick(&s, now, t0, &lease);
                    if b(3) & 2 != 0 {
                        lease.connected();
                        lease.add_bytes(u64::from(b(2)), u64::from(b(3)));
                    }
                    if b(3) & 4 != 0 {
                        lease.mark_failed();
                    }
                    if b(3) & 1 != 0 {
                        held.push(lease);
                    }
                }
            }
            5 => {
                if !held.is_empty() {
                    held.swap_remove(usize::from(b(1)) % held.len());
                }
            }
            6 => now += Duration::from_millis(u64::from(b(1)) * 100),
            _ => {
                // A datagram damaged by the record: any command byte, cut anywhere.
                let mut d = datagram(Command::Subscribe, key, address, 1);
                d[3] = b(3);
                d.truncate(usize::from(b(3)) % (d.len() + 1));
                let before = Snapshot::of(&s);
                if s.handle_datagram(now, &d).is_err() {
                    assert_eq!(before, Snapshot::of(&s), "rejected datagram changed the table");
                }
            }
        }
        while s.poll_transmit().is_some() {}
        replay_events(&mut s, &mut replay);
        check_table(&s, &held, &replay);
    }
    held.clear();
    assert!(s.pools().iter().flat_map(|p| p.nodes()).all(|n| n.refs() == 0), "a reference leaked");
    // Everything expires: one lookup per key removes every node.
    now += SCENARIO_TOLERANCE + Duration::from_secs(1);
    let keys: Vec<Vec<u8>> = s.pools().iter().map(|p| p.key().to_vec()).collect();
    for key in keys {
        assert!(s.pick(now, &key, Some(IpAddr::V4(Ipv4Addr::LOCALHOST))).is_none_or(|l| l.key() != key));
    }
    assert!(s.pools().is_empty(), "expired nodes left after a lookup of every key");
    replay_events(&mut s, &mut replay);
    assert!(replay.is_empty(), "the events do not empty the table: {replay:?}");
}

fn check_pick(s: &SubscriptionServer, now: Instant, t0: Instant, lease: &Lease) {
    let pool = s.pool(lease.key()).unwrap_or_else(|| panic!("picked from a missing pool"));
    let node = pool.nodes().iter().find(|n| n.address() == lease.address());
    let node = node.unwrap_or_else(|| panic!("picked a node not in its pool"));
    assert!(!node.death_mark(), "picked a dead node");
    let now_unix = (WALL + now.duration_since(t0)).as_secs();
    assert!(now_unix - node.last_check_unix() <= SCENARIO_TOLERANCE.as_secs(), "picked an expired node");
}

fn replay_events(s: &mut SubscriptionServer, replay: &mut BTreeMap<Vec<u8>, Vec<Vec<u8>>>) {
    while let Some(e) = s.poll_event() {
        match e {
            Event::PoolCreated { key } => {
                assert!(replay.insert(key, Vec::new()).is_none(), "pool created twice");
            }
            Event::NodeAdded { key, address } => {
                let nodes = replay.get_mut(&key).unwrap_or_else(|| panic!("node added to an unknown pool"));
                assert!(!nodes.contains(&address), "node added twice");
                nodes.push(address);
            }
            Event::NodeRemoved { key, address } => {
                let nodes =
                    replay.get_mut(&key).unwrap_or_else(|| panic!("node removed from an unknown pool"));
                let at = nodes.iter().position(|a| *a == address);
                nodes.remove(at.unwrap_or_else(|| panic!("unknown node removed")));
            }
            Event::PoolRemoved { key } => {
                let nodes = replay.remove(&key).unwrap_or_else(|| panic!("unknown pool removed"));
                assert!(nodes.is_empty(), "pool removed with nodes");
            }
            _ => {}
        }
    }
}

fn check_table(s: &SubscriptionServer, held: &[Lease], replay: &BTreeMap<Vec<u8>, Vec<Vec<u8>>>) {
    let mut leases: BTreeMap<(&[u8], &[u8]), u64> = BTreeMap::new();
    for l in held {
        *leases.entry((l.key(), l.address())).or_insert(0) += 1;
    }
    let mut told = replay.clone();
    for p in s.pools() {
        assert!(!p.nodes().is_empty(), "empty pool left in the table");
        let addresses: Vec<Vec<u8>> = p.nodes().iter().map(|n| n.address().to_vec()).collect();
        assert_eq!(told.remove(p.key()).as_ref(), Some(&addresses), "the events disagree with the table");
        for (i, n) in p.nodes().iter().enumerate() {
            assert!(p.nodes()[..i].iter().all(|m| m.address() != n.address()), "address twice in a pool");
            assert!(n.weight() >= 1, "weight 0 stored");
            let want = leases.remove(&(p.key(), n.address())).unwrap_or(0);
            assert_eq!(n.refs(), want, "refs differ from the leases held");
        }
    }
    assert!(told.is_empty(), "the events tell of pools not in the table: {told:?}");
    assert!(leases.is_empty(), "a held lease's node left the table: {leases:?}");
}
