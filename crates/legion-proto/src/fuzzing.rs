//! Entry points for the fuzz targets and property tests. Private: may change or vanish.
//!
//! Each asserts invariants, not only the absence of panics. They read the clock once, for
//! a base `Instant`; nothing depends on its value.
#![allow(clippy::disallowed_methods, reason = "a base Instant for the runs; no behaviour depends on it")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire::{self, Crypto};
use crate::{Announce, Config, Extension, Legion, NodeUuid};

/// The capture time of the shared vectors, so that the seeds pass the skew check and
/// reach the membership code.
const WALL: Duration = Duration::from_secs(1_795_310_430);

fn crypto() -> Crypto {
    // The shared vectors' secret, so the seeds decrypt. A fixed, valid spec: cannot fail.
    Crypto::from_spec("aes-128-cbc:secret").unwrap_or_else(|_| unreachable!("valid cipher spec"))
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i], 41001))
}

/// A legion at `now`, valor 10, three targets, 1 s / 3 s timers.
pub fn legion(now: Instant) -> Legion {
    let config = Config::new("lg", 10, crypto())
        .nodes([addr(1), addr(2), addr(3)])
        .node_name("me")
        .freq(Duration::from_secs(1))
        .tolerance(Duration::from_secs(3))
        .quorum(2);
    Legion::new(config, NodeUuid::from_random([0x11; 16]), now, WALL)
        .unwrap_or_else(|_| unreachable!("valid config"))
}

/// A valid announce from a peer (valor 20), sealed, as [`legion`] at `t0` accepts it.
pub fn peer_datagram() -> Vec<u8> {
    let a = Announce {
        legion: b"lg".to_vec(),
        valor: 20,
        unix: WALL.as_secs(),
        lord: 0,
        name: b"peer".to_vec(),
        pid: 9,
        uuid: NodeUuid::from_random([0x22; 16]),
        checksum: 0,
        lord_valor: 0,
        lord_uuid: NodeUuid::NIL,
        scroll: b"scroll".to_vec(),
        dead: false,
        ext: None,
    };
    wire::seal(&crypto(), &a).map(|b| b.to_vec()).unwrap_or_default()
}

/// `wire::open` on arbitrary bytes, with and without a key: never panics; what opens
/// re-seals and opens to the same announce.
pub fn wire_open(data: &[u8]) {
    let c = crypto();
    if let Ok(a) = wire::open(&c, data) {
        let again = wire::seal(&c, &a).map(|d| wire::open(&c, &d));
        assert!(matches!(again, Ok(Ok(ref b)) if *b == a), "open(seal(a)) != a");
    }
    if let Ok(a) = wire::open_plaintext(data) {
        let plain = wire::encode_plaintext(&a).unwrap_or_default();
        assert_eq!(wire::decode_plaintext(&plain).ok(), Some(a));
    }
}

/// Arbitrary bytes given to `handle_datagram`: a rejected datagram leaves the state as
/// it was, counters apart.
pub fn handle_datagram(data: &[u8]) {
    let t0 = Instant::now();
    let mut l = legion(t0);
    let before = l.snapshot();
    if l.handle_datagram(t0, addr(2), data).is_err() {
        assert_eq!(before, l.snapshot(), "rejected datagram changed the state");
    }
}

/// A run driven by the input: each 8-byte record is a sealed announce from one of four
/// peers (fields taken from the bytes), a tick of the clock, or a command. Checks that
/// nothing panics and that events are numbered without gaps.
pub fn scenario(data: &[u8]) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut l = legion(t0);
    let c = crypto();
    let uuids: Vec<NodeUuid> = (1..=4u8).map(|i| NodeUuid::from_random([i; 16])).collect();
    let mut next_seq = 1;
    for rec in data.chunks(8) {
        let b = |i: usize| rec.get(i).copied().unwrap_or(0);
        match b(0) % 8 {
            0..=4 => {
                let peer = usize::from(b(1) % 4);
                let vote = usize::from(b(2) % 5);
                let a = Announce {
                    legion: if b(3) == 255 { b"other".to_vec() } else { b"lg".to_vec() },
                    valor: u64::from(b(4) % 4) * 10,
                    unix: WALL.as_secs() + now.duration_since(t0).as_secs() - u64::from(b(5) % 4) * 30,
                    lord: u64::from(b(6) & 1),
                    name: format!("peer{peer}").into_bytes(),
                    pid: 7,
                    uuid: uuids[peer],
                    checksum: u64::from(b(7)) * 300,
                    lord_valor: u64::from(b(2) % 4) * 10,
                    lord_uuid: if vote == 4 { l.uuid() } else { uuids[vote] },
                    scroll: Vec::new(),
                    dead: b(6) & 2 != 0,
                    ext: (b(6) & 4 != 0).then_some(Extension { version: 1, epoch: u64::from(b(5)) }),
                };
                if let Ok(d) = wire::seal(&c, &a) {
                    let _ = l.handle_datagram(now, addr(1 + b(1) % 3), &d);
                }
            }
            5 | 6 => {
                now += Duration::from_millis(u64::from(b(1)) * 20);
                if l.poll_timeout().is_some_and(|t| t <= now) {
                    l.handle_timeout(now);
                }
            }
            _ => match b(1) % 3 {
                0 => l.announce(now),
                1 => l.handle_action_result(now, u64::from(b(2)), b(3) & 1 == 0),
                _ => l.leave(now),
            },
        }
        while l.poll_transmit().is_some() {}
        while let Some(e) = l.poll_event() {
            assert_eq!(e.seq, next_seq, "events numbered without gaps");
            next_seq += 1;
        }
        // Members have distinct identities.
        let m = l.members();
        for (i, x) in m.iter().enumerate() {
            assert!(m[i + 1..].iter().all(|y| y.info() != x.info()), "duplicate member");
        }
    }
}
