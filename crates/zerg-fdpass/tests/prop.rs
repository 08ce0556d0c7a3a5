//! Property tests (STYLE.md §3.7):
//!
//! * any sequence of reads (random chunks, fds on random reads, `MSG_CTRUNC`, times) fed
//!   to the client through `fuzzing::run_client` never leaks a tracked fd and completes
//!   only with a valid header, and agrees with a small reference model;
//! * a valid hand-off split at every point, with the fds on the first chunk, completes
//!   with exactly those fds;
//! * `Header` round trips for every count a message can carry, and `decode` never panics;
//! * `ListenAddr` and `ZergAddr` parse → display → parse round trips;
//! * random accept / sent / error / timeout / re-offer runs of `ZergServer` keep
//!   `connections() <= max_connections`, close every connection exactly once, keep the
//!   counters consistent and write each peer exactly the header it was promised;
//! * with real fds (feature `mio`, fewer cases): hostile servers sending random malformed
//!   hand-offs with real sockets and files attached to `driver::attach` never leave an fd
//!   behind in this process.
//!
//! `PROPTEST_CASES` bounds the cases (default 256) except for the real-fd property.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is a failed test")]
#![allow(clippy::disallowed_methods, reason = "a base Instant; no behaviour depends on its value")]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use zerg_fdpass::fuzzing::{self, Read};
use zerg_fdpass::proto::{DecodeError, HEADER_LEN, Header, MAGIC, MAX_FDS};
use zerg_fdpass::server::{Action, ConnId, Event, PeerCred, PeerPolicy, ServerConfig, ZergServer};
use zerg_fdpass::{ListenAddr, ZergAddr};

/// The client's deadline in `fuzzing::run_client`.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

fn header(count: i32) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&count.to_ne_bytes());
    h
}

/// What the client should make of `reads`: `Some(fds)` if it completes. A straight
/// reading of the rules in `client::Attach::handle_recv` (spec §2.6 plus §7's checks).
fn model(reads: &[Read], strict: bool) -> Option<usize> {
    let mut got = Vec::new();
    let mut fds: Option<usize> = None;
    for read in reads {
        if read.truncated || read.at >= CLIENT_TIMEOUT {
            return None;
        }
        if read.fds > 0 {
            if fds.is_some() {
                return None;
            }
            fds = Some(read.fds);
        }
        if read.data.is_empty() {
            return None;
        }
        let take = read.data.len().min(HEADER_LEN - got.len());
        got.extend_from_slice(&read.data[..take]);
        if got.len() >= MAGIC.len() && got[..MAGIC.len()] != *MAGIC {
            return None;
        }
        if got.len() == HEADER_LEN {
            let count = Header::decode(&got).ok()?.count;
            let fds = fds.unwrap_or(0);
            return (!strict || count == fds).then_some(fds);
        }
    }
    None
}

/// Random reads with cumulative times.
fn random_reads() -> impl Strategy<Value = Vec<Read>> {
    let read = (
        prop::collection::vec(any::<u8>(), 0..16),
        prop_oneof![3 => Just(0usize), 1 => 0usize..5],
        prop::bool::weighted(0.05),
        0u64..1500,
    );
    prop::collection::vec(read, 0..12).prop_map(|reads| {
        let mut at = Duration::ZERO;
        reads
            .into_iter()
            .map(|(data, fds, truncated, ms)| {
                at += Duration::from_millis(ms);
                Read { data, fds, truncated, at }
            })
            .collect()
    })
}

/// A hand-off that is often valid: a header (the right count, another count, a damaged
/// magic), cut at random points, fds on random chunks, rare truncation, sometimes late.
fn mostly_valid_reads() -> impl Strategy<Value = Vec<Read>> {
    (
        0usize..6,
        prop_oneof![4 => Just(None), 1 => any::<i32>().prop_map(Some)],
        prop::option::weighted(0.1, (0..HEADER_LEN, any::<u8>())),
        prop::collection::vec(1..HEADER_LEN, 0..5),
        prop::collection::vec((0usize..8, 0usize..4), 0..3),
        prop::collection::vec(prop::bool::weighted(0.03), 8),
        prop::collection::vec(0u64..1200, 8),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(|(fds, count, damage, mut cuts, fd_reads, truncs, times, extra)| {
            let mut data = header(count.unwrap_or_else(|| i32::try_from(fds).unwrap()));
            if let Some((at, byte)) = damage {
                data[at] ^= byte | 1;
            }
            data.extend_from_slice(&extra);
            cuts.push(0);
            cuts.push(data.len());
            cuts.sort_unstable();
            cuts.dedup();
            let mut at = Duration::ZERO;
            let mut reads: Vec<Read> = cuts
                .windows(2)
                .enumerate()
                .map(|(i, w)| {
                    at += Duration::from_millis(times[i % times.len()]);
                    Read { data: data[w[0]..w[1]].to_vec(), fds: 0, truncated: truncs[i % truncs.len()], at }
                })
                .collect();
            // The server's fds ride on one read, or (hostile) on several.
            let n = reads.len();
            reads[0].fds = fds;
            for (read, count) in fd_reads {
                if count > 0 {
                    reads[read % n].fds = count;
                }
            }
            reads
        })
}

proptest! {
    #[test]
    fn any_reads_never_leak_and_complete_only_with_a_valid_header(reads in random_reads(), strict: bool) {
        // `run_client` panics on a leaked fd or a result that contradicts the header.
        let got = fuzzing::run_client(&reads, strict);
        prop_assert_eq!(got, model(&reads, strict));
    }

    #[test]
    fn mostly_valid_hand_offs_match_the_model(reads in mostly_valid_reads(), strict: bool) {
        let got = fuzzing::run_client(&reads, strict);
        prop_assert_eq!(got, model(&reads, strict));
    }

    #[test]
    fn a_valid_hand_off_split_anywhere_with_its_fds_first_completes(
        count in 0..=MAX_FDS,
        more_cuts in prop::collection::vec(1..HEADER_LEN, 0..4),
        gaps in prop::collection::vec(0u64..1000, 16),
    ) {
        let data = header(i32::try_from(count).unwrap());
        // Every single split point, then a random further chunking of the second part.
        for split in 1..=HEADER_LEN {
            let mut cuts: Vec<usize> =
                more_cuts.iter().copied().filter(|c| *c > split).chain([0, split, HEADER_LEN]).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut at = Duration::ZERO;
            let reads: Vec<Read> = cuts
                .windows(2)
                .enumerate()
                .map(|(i, w)| {
                    at += Duration::from_millis(gaps[i]);
                    Read { data: data[w[0]..w[1]].to_vec(), fds: if i == 0 { count } else { 0 }, truncated: false, at }
                })
                .collect();
            prop_assert!(at < CLIENT_TIMEOUT);
            for strict in [true, false] {
                prop_assert_eq!(fuzzing::run_client(&reads, strict), Some(count), "split at {}", split);
            }
        }
    }

    #[test]
    fn header_decode_never_panics_and_re_encodes_what_it_accepts(bytes in prop::collection::vec(any::<u8>(), 0..32)) {
        match Header::decode(&bytes) {
            Ok(h) => {
                prop_assert!(h.count <= MAX_FDS);
                let encoded = h.encode();
                prop_assert_eq!(encoded.as_slice(), &bytes[..HEADER_LEN]);
            }
            Err(DecodeError::Short(n)) => prop_assert!(n == bytes.len() && n < HEADER_LEN),
            Err(DecodeError::BadMagic) => prop_assert_ne!(&bytes[..MAGIC.len()], MAGIC.as_slice()),
            Err(DecodeError::NegativeCount(c)) => prop_assert!(c < 0),
            Err(DecodeError::TooManyFds(c)) => prop_assert!(usize::try_from(c).unwrap() > MAX_FDS),
            Err(e) => prop_assert!(false, "unknown error {e:?}"),
        }
    }

    #[test]
    fn header_decode_reads_any_count(count: i32) {
        let decoded = Header::decode(&header(count));
        match usize::try_from(count) {
            Ok(n) if n <= MAX_FDS => prop_assert_eq!(decoded, Ok(Header { count: n })),
            Ok(_) => prop_assert_eq!(decoded, Err(DecodeError::TooManyFds(count))),
            Err(_) => prop_assert_eq!(decoded, Err(DecodeError::NegativeCount(count))),
        }
    }
}

#[test]
fn header_round_trips_for_every_count_a_message_can_carry() {
    for count in 0..=MAX_FDS {
        let h = Header::new(count).unwrap();
        let bytes = h.encode();
        assert_eq!(&bytes[..MAGIC.len()], MAGIC);
        assert_eq!(Header::decode(&bytes), Ok(h));
        assert_eq!(bytes.to_vec(), header(i32::try_from(count).unwrap()));
    }
    assert!(Header::new(MAX_FDS + 1).is_err());
}

/// The fuzz targets' entry points on the seeds `fuzz/seed-corpus.sh` makes from the shared
/// vectors (stable CI replays them here; fuzzing itself needs the fuzz workspace).
#[test]
fn the_fuzz_entry_points_take_the_vector_seeds() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/vectors/zerg"));
    let hex = |name: &str| -> Vec<u8> {
        let s = std::fs::read_to_string(dir.join(name)).unwrap();
        let s = s.trim();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    };
    fuzzing::frame(&hex("vassal-sos.hex"));
    for (name, count) in [
        ("server-1fd", 1),
        ("server-3fd-mixed", 3),
        ("server-dedup-2of3", 2),
        ("server-10fd", 10),
        ("zergpool-2fd", 2),
        ("zergpool-0fd", 0),
    ] {
        let data = hex(&format!("{name}.data.hex"));
        fuzzing::frame(&data);
        // The seeds: [len, fds, flags] + data, with count % 8 fds on the first read.
        let fds = u8::try_from(count % 8).unwrap();
        let one_read = [&[14, fds, 0][..], &data].concat();
        let magic_then_count = [&[10, fds, 0][..], &data[..10], &[4, 0, 0], &data[10..]].concat();
        let byte_by_byte: Vec<u8> =
            data.iter().enumerate().flat_map(|(i, b)| [1, if i == 0 { fds } else { 0 }, 0, *b]).collect();
        for input in [one_read, magic_then_count, byte_by_byte] {
            fuzzing::client(&input);
            let reads = fuzzing::reads_from_bytes(&input);
            let strict = (count < 8).then_some(count);
            assert_eq!(fuzzing::run_client(&reads, true), strict, "{name}");
            assert_eq!(fuzzing::run_client(&reads, false), Some(count % 8), "{name}");
        }
    }
}

// --- addresses ------------------------------------------------------------------------------

/// Text in uWSGI's socket syntax with the address it names.
fn listen_addr_text() -> impl Strategy<Value = (String, ListenAddr)> {
    prop_oneof![
        (any::<Ipv4Addr>(), any::<u16>())
            .prop_map(|(ip, port)| (format!("{ip}:{port}"), ListenAddr::Inet(SocketAddr::from((ip, port))))),
        any::<u16>().prop_map(|port| (
            format!(":{port}"),
            ListenAddr::Inet(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        )),
        (any::<Ipv6Addr>(), any::<u16>()).prop_map(|(ip, port)| (
            format!("[{ip}]:{port}"),
            ListenAddr::Inet(SocketAddr::from((ip, port)))
        )),
        "/[a-zA-Z0-9_. /-]{0,90}".prop_map(|p| (p.clone(), ListenAddr::Unix(p.into()))),
        "[a-zA-Z0-9_.][a-zA-Z0-9_. /-]{0,60}".prop_map(|p| (p.clone(), ListenAddr::Unix(p.into()))),
        "[^\\x00]{0,30}".prop_map(|name| {
            let mut bytes = name.as_bytes().to_vec();
            bytes.push(0);
            (format!("@{name}"), ListenAddr::Abstract(bytes))
        }),
    ]
}

proptest! {
    #[test]
    fn listen_addresses_parse_display_and_parse_back((text, expected) in listen_addr_text()) {
        let len_ok = match &expected {
            ListenAddr::Abstract(b) => b.len() < 107,
            ListenAddr::Unix(_) => text.len() <= 107,
            ListenAddr::Inet(_) => true,
        };
        let parsed = ListenAddr::parse(&text);
        if !len_ok {
            prop_assert!(parsed.is_err());
            return Ok(());
        }
        let parsed = parsed.unwrap();
        prop_assert_eq!(&parsed, &expected);
        let shown = parsed.to_string();
        prop_assert_eq!(ListenAddr::parse(&shown), Ok(parsed.clone()), "displayed as {:?}", shown);
        prop_assert_eq!(shown.parse::<ListenAddr>(), Ok(parsed));
    }

    #[test]
    fn listen_addr_parse_never_panics_and_what_parses_round_trips(text in "\\PC{0,40}") {
        if let Ok(addr) = ListenAddr::parse(&text) {
            let shown = addr.to_string();
            prop_assert_eq!(ListenAddr::parse(&shown), Ok(addr), "{:?} displayed as {:?}", text, shown);
        }
    }

    #[test]
    fn zerg_addresses_parse_display_and_parse_back(text in prop_oneof!["/[a-zA-Z0-9_. /-]{0,90}", "@[^\\x00:]{0,30}", "\\PC{0,40}"]) {
        if let Ok(addr) = ZergAddr::parse(&text) {
            prop_assert!(!text.contains(':'), "the colon trap: {:?}", text);
            let shown = addr.to_string();
            prop_assert_eq!(ZergAddr::parse(&shown), Ok(addr.clone()), "{:?} displayed as {:?}", text, shown);
            if let Some(name) = text.strip_prefix('@') {
                let mut kernel = name.as_bytes().to_vec();
                kernel.push(0);
                prop_assert_eq!(addr.abstract_bytes(), Some(kernel), "uWSGI's NUL");
            }
        }
    }
}

// --- the server core --------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    /// A peer connects: 0 = the allowed uid, 1 = a stranger, 2 = no credentials.
    Accept(u8),
    /// `sendmsg` wrote this many bytes on the `n`-th connection ever accepted (also
    /// absurd counts: the core must not overflow on a misbehaving driver).
    Sent(usize, usize),
    /// `sendmsg` failed on the `n`-th connection.
    SendError(usize),
    /// Time passes, then the timers run.
    Tick(u64),
    /// The offer changes.
    Offer(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3).prop_map(Op::Accept),
        4 => (0usize..16, prop_oneof![6 => Just(14usize), 4 => 0usize..=16, 1 => Just(usize::MAX)]).prop_map(|(c, n)| Op::Sent(c, n)),
        1 => (0usize..16).prop_map(Op::SendError),
        2 => (0u64..4000).prop_map(Op::Tick),
        1 => (0..=MAX_FDS).prop_map(Op::Offer),
    ]
}

#[derive(Debug, Default)]
struct ConnModel {
    /// The header this peer was promised (`None`: refused).
    promised: Option<Vec<u8>>,
    sent: usize,
    sends: usize,
    closes: usize,
}

proptest! {
    #[test]
    fn the_server_core_closes_every_connection_once_and_keeps_its_counters(
        max_connections in 1usize..5,
        offer in 0..=MAX_FDS,
        ops in prop::collection::vec(op(), 0..80),
    ) {
        const OWNER: u32 = 1000;
        let start = Instant::now();
        let mut config = ServerConfig::new(PeerPolicy::owner_and_root(OWNER));
        config.max_connections = max_connections;
        config.send_timeout = Duration::from_secs(5);
        let mut server = ZergServer::new(config, offer).unwrap();
        let mut now = start;
        let mut offer = offer;
        let mut ids: Vec<ConnId> = Vec::new();
        let mut conns: BTreeMap<ConnId, ConnModel> = BTreeMap::new();
        let mut events: Vec<Event> = Vec::new();

        let check = |server: &mut ZergServer, conns: &mut BTreeMap<ConnId, ConnModel>, events: &mut Vec<Event>, now: Instant| -> Result<(), TestCaseError> {
            while let Some(action) = server.poll_action() {
                match action {
                    Action::Send { conn, data, attach_fds } => {
                        let c = conns.get_mut(&conn).expect("a send for a known connection");
                        prop_assert_eq!(c.closes, 0, "a send after the close");
                        let promised = c.promised.as_ref().expect("no send to a refused peer");
                        prop_assert_eq!(data.bytes(), &promised[c.sent..], "the rest of the promised header");
                        prop_assert_eq!(attach_fds, c.sends == 0, "fds ride on the first write only");
                        c.sends += 1;
                    }
                    Action::Close { conn } => {
                        let c = conns.get_mut(&conn).expect("a close for a known connection");
                        c.closes += 1;
                        prop_assert_eq!(c.closes, 1, "closed twice");
                    }
                }
            }
            events.extend(std::iter::from_fn(|| server.poll_event()));
            prop_assert!(server.connections() <= max_connections);
            let open = conns.values().filter(|c| c.closes == 0).count();
            prop_assert_eq!(server.connections(), open);
            let stats = server.stats();
            let closed = conns.values().filter(|c| c.closes == 1).count();
            prop_assert_eq!(usize::try_from(stats.served + stats.refused + stats.failed).unwrap(), closed);
            prop_assert_eq!(events.len(), closed, "one event per finished connection");
            prop_assert_eq!(server.poll_timeout().is_some(), open > 0);
            if let Some(t) = server.poll_timeout() {
                prop_assert!(t > now, "an expired deadline was left behind");
            }
            Ok(())
        };

        for op in ops {
            match op {
                Op::Accept(who) => {
                    let peer = match who {
                        0 => Some(PeerCred { pid: 1, uid: OWNER, gid: OWNER }),
                        1 => Some(PeerCred { pid: 2, uid: 4242, gid: 4242 }),
                        _ => None,
                    };
                    let before = server.connections();
                    let id = server.handle_accept(now, peer);
                    prop_assert!(!conns.contains_key(&id), "ids are never reused");
                    let served = who == 0 && before < max_connections;
                    let promised = served.then(|| header(i32::try_from(offer).unwrap()));
                    conns.insert(id, ConnModel { promised, ..ConnModel::default() });
                    ids.push(id);
                }
                Op::Sent(i, n) => {
                    if let Some(&id) = ids.get(i % ids.len().max(1)) {
                        server.handle_sent(now, id, n);
                        if let Some(c) = conns.get_mut(&id).filter(|c| c.closes == 0) {
                            c.sent = c.sent.saturating_add(n).min(HEADER_LEN);
                        }
                    }
                }
                Op::SendError(i) => {
                    if let Some(&id) = ids.get(i % ids.len().max(1)) {
                        server.handle_send_error(now, id);
                    }
                }
                Op::Tick(ms) => {
                    now += Duration::from_millis(ms);
                    server.handle_timeout(now);
                }
                Op::Offer(n) => {
                    server.set_offer(n).unwrap();
                    offer = n;
                }
            }
            check(&mut server, &mut conns, &mut events, now)?;
        }
        // Eventually every connection is closed, exactly once.
        now += Duration::from_secs(6);
        server.handle_timeout(now);
        check(&mut server, &mut conns, &mut events, now)?;
        prop_assert_eq!(server.connections(), 0);
        prop_assert!(conns.values().all(|c| c.closes == 1));
        prop_assert_eq!(server.poll_timeout(), None);
        // Served events report the count the peer was promised.
        for event in &events {
            if let Event::Served { conn, fds, .. } = event {
                let promised = conns[conn].promised.as_ref().unwrap();
                prop_assert_eq!(Header::decode(promised).unwrap().count, *fds);
                prop_assert_eq!(conns[conn].sent, HEADER_LEN);
            }
        }
        prop_assert!(server.set_offer(MAX_FDS + 1).is_err());
    }
}

// --- real fds -----------------------------------------------------------------------------------

/// Hostile servers with real fds against `driver::attach`, counting `/proc/self/fd`.
///
/// The count is process-wide: `cargo nextest` (the project's runner) runs this test in a
/// process of its own. Under `cargo test` the other tests of this file run as threads of
/// the same process; they open no fds while running (proptest reads its regressions file
/// before a test's first case), but a failure there could disturb this count.
#[cfg(feature = "mio")]
mod real_fds {
    use std::io::{self, IoSlice, Read as _};
    use std::mem::MaybeUninit;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use rustix::net::{AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketType};
    use zerg_fdpass::client::AttachOptions;
    use zerg_fdpass::driver;
    use zerg_fdpass::{ListenAddr, Listener, ZergAddr};

    use super::header;

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    /// Kinds of fds a hostile server attaches.
    #[derive(Debug, Clone, Copy)]
    enum Kind {
        TcpListener,
        UnixListener,
        Udp,
        TcpNotListening,
        UnboundUnix,
        File,
    }

    fn make(kind: Kind) -> OwnedFd {
        static N: AtomicUsize = AtomicUsize::new(0);
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        match kind {
            Kind::TcpListener => Listener::bind(&ListenAddr::Inet(loopback)).unwrap().fd,
            Kind::UnixListener => {
                let n = N.fetch_add(1, Ordering::Relaxed);
                let name = format!("@zft-prop-{}-{n}", std::process::id());
                Listener::bind(&ListenAddr::parse(&name).unwrap()).unwrap().fd
            }
            Kind::Udp | Kind::TcpNotListening => {
                let ty = if matches!(kind, Kind::Udp) { SocketType::DGRAM } else { SocketType::STREAM };
                let s = rustix::net::socket(AddressFamily::INET, ty, None).unwrap();
                rustix::net::bind(&s, &loopback).unwrap();
                s
            }
            Kind::UnboundUnix => rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap(),
            Kind::File => tempfile::tempfile().unwrap().into(),
        }
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            4 => Just(Kind::TcpListener),
            3 => Just(Kind::UnixListener),
            1 => Just(Kind::Udp),
            1 => Just(Kind::TcpNotListening),
            1 => Just(Kind::UnboundUnix),
            1 => Just(Kind::File),
        ]
    }

    /// One `sendmsg` of the hostile server, then a pause.
    #[derive(Debug, Clone)]
    struct Chunk {
        data: Vec<u8>,
        fds: Vec<Kind>,
        pause_ms: u64,
    }

    /// A hand-off gone wrong: bytes that are often a real header (right or wrong count,
    /// damaged), cut into chunks, fds of every kind on random chunks; then the server
    /// closes, or holds the connection until the client gives up.
    fn junk() -> impl Strategy<Value = (Vec<Chunk>, bool)> {
        let bytes = prop_oneof![
            3 => (0i32..6).prop_map(header),
            1 => any::<i32>().prop_map(header),
            1 => ((0i32..6).prop_map(header), 0usize..14, 1u8..=255).prop_map(|(mut h, at, x)| {
                h[at] ^= x;
                h
            }),
            1 => prop::collection::vec(any::<u8>(), 0..20),
        ];
        (
            bytes,
            prop::collection::vec(any::<u8>(), 0..6),
            prop::collection::vec(1usize..20, 0..4),
            prop::collection::vec((0usize..5, prop::collection::vec(kind(), 0..4)), 0..3),
            prop::collection::vec(0u64..15, 5),
            prop::bool::weighted(0.15),
        )
            .prop_map(|(mut data, extra, mut cuts, fd_groups, pauses, hold)| {
                data.extend_from_slice(&extra);
                cuts.retain(|c| *c < data.len());
                cuts.push(0);
                cuts.push(data.len());
                cuts.sort_unstable();
                cuts.dedup();
                let mut chunks: Vec<Chunk> = cuts
                    .windows(2)
                    .enumerate()
                    .map(|(i, w)| Chunk {
                        data: data[w[0]..w[1]].to_vec(),
                        fds: vec![],
                        pause_ms: pauses[i % 5],
                    })
                    .collect();
                if chunks.is_empty() {
                    chunks.push(Chunk { data: vec![], fds: vec![], pause_ms: 0 });
                }
                let n = chunks.len();
                for (at, fds) in fd_groups {
                    chunks[at % n].fds.extend(fds);
                }
                (chunks, hold)
            })
    }

    fn send_with_fds(stream: BorrowedFd<'_>, data: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        let mut space =
            vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len().max(1)))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() {
            assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
        }
        Ok(rustix::net::sendmsg(stream, &[IoSlice::new(data)], &mut control, SendFlags::NOSIGNAL)?)
    }

    fn run_case(chunks: &[Chunk], hold: bool, strict: bool) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let before = open_fds();
        {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let addr = ZergAddr::parse(&format!("@zerg-fdpass-prop-{}-{n}", std::process::id())).unwrap();
            let listener = UnixListener::bind_addr(&addr.to_socket_addr().unwrap()).unwrap();
            listener.set_nonblocking(true).unwrap();
            // The fds are made before the server starts, and dropped by it.
            let prepared: Vec<(Vec<u8>, Vec<OwnedFd>, u64)> = chunks
                .iter()
                .map(|c| (c.data.clone(), c.fds.iter().map(|k| make(*k)).collect(), c.pause_ms))
                .collect();
            let server = std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(10);
                let stream = loop {
                    match listener.accept() {
                        Ok((s, _)) => break Some(s),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < end => {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err(_) => break None,
                    }
                };
                let Some(mut stream) = stream else { return };
                stream.set_nonblocking(false).unwrap();
                for (data, fds, pause_ms) in prepared {
                    let _ = send_with_fds(stream.as_fd(), &data, &fds);
                    std::thread::sleep(Duration::from_millis(pause_ms));
                }
                if hold {
                    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let mut buf = [0u8; 16];
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                }
            });
            let mut options = AttachOptions::default();
            options.timeout = Duration::from_millis(250);
            options.strict_count = strict;
            let result = driver::attach(&addr, &options);
            // Success is possible (a valid header with only listeners); either way every
            // fd that arrived is dropped here.
            drop(result);
            server.join().unwrap();
        }
        assert_eq!(open_fds(), before, "fd leak after {chunks:?} (hold {hold}, strict {strict})");
    }

    #[test]
    fn random_malformed_hand_offs_with_real_fds_leave_no_fd_behind() {
        let mut runner =
            TestRunner::new(Config { cases: 32, failure_persistence: None, ..Config::default() });
        runner
            .run(&(junk(), any::<bool>()), |((chunks, hold), strict)| {
                run_case(&chunks, hold, strict);
                Ok(())
            })
            .unwrap();
    }
}
