//! Cost of the subscription server's table (STYLE.md §3.7), no sockets.
//!
//! * `subscription_proto/pick/<algo>/<N>`: one `pick` of a key whose pool has `N` nodes
//!   (8, 1000) of equal weight, the lease told `connected()` and dropped at once (a request
//!   that went through), for uWSGI's wrr and lrc (and, beyond uWSGI, wlrc, iphash, swrr and
//!   ketama). The clock stands still: no node expires.
//! * `subscription_proto/handle_datagram/refresh`: one subscribe datagram for a node the
//!   table has (decode, pool lookup, node refresh), with 10,000 keys × 3 nodes in the table.
//! * `subscription_proto/handle_datagram/new_node`: the same for a node the table does not
//!   have (decode, a new node at the tail of an existing pool, its event); the nodes added
//!   are unsubscribed after each sample, outside the measured time, so the table stays at
//!   10,000 × 3 (+ at most one sample's worth).
//! * `subscription_proto/decode/<mode>`: `wire::decode` of vector 01 (a 2.0.21
//!   `--subscribe-to` datagram, 106 bytes), compat and strict; `encode` of the same request.
//!
//! Run: `cargo bench -p benches --bench subscription_proto`. Results: `BENCHMARKS.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench setup: a failure should abort the run")]
#![allow(clippy::disallowed_methods, reason = "a base Instant for the virtual clock and iter_custom's timer")]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use subscription_proto::wire::{self, Mode};
use subscription_proto::{Algorithm, Command, MemoryFiles, Request, ServerConfig, SubscriptionServer};

const WALL: Duration = Duration::from_secs(1_800_000_000);
const KEYS: usize = 10_000;
const NODES_PER_KEY: usize = 3;

fn datagram(command: Command, key: &str, address: &str) -> Vec<u8> {
    let req = Request { key: key.into(), address: address.into(), cores: 2, ..Request::default() };
    wire::encode(command, &req).unwrap()
}

/// A distinct `host:port` per `i` (up to 2^24).
fn address(i: usize) -> String {
    format!("10.{}.{}.{}:3031", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

fn key(i: usize) -> String {
    format!("app{i}.example.com")
}

fn server(algorithm: Algorithm, t0: Instant) -> SubscriptionServer {
    SubscriptionServer::new(ServerConfig::new().algorithm(algorithm), MemoryFiles::new(), t0, WALL)
}

fn bench_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("subscription_proto/pick");
    group.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(30);
    group.throughput(Throughput::Elements(1));
    let client = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    for algorithm in [
        Algorithm::Wrr,
        Algorithm::Lrc,
        Algorithm::Wlrc,
        Algorithm::IpHash,
        Algorithm::SmoothWrr,
        Algorithm::Ketama,
    ] {
        for n in [8usize, 1000] {
            let t0 = Instant::now();
            let mut s = server(algorithm, t0);
            for i in 0..n {
                s.handle_datagram(t0, &datagram(Command::Subscribe, "example.com", &address(i))).unwrap();
            }
            while s.poll_event().is_some() {}
            group.bench_function(BenchmarkId::new(algorithm.name(), n), |b| {
                b.iter(|| {
                    let lease = s.pick(t0, black_box(b"example.com"), client).unwrap();
                    lease.connected();
                    drop(lease);
                });
            });
            while s.poll_event().is_some() {}
            assert_eq!(s.pool(b"example.com").unwrap().nodes().len(), n, "no node lost while picking");
        }
    }
    group.finish();
}

fn bench_handle_datagram(c: &mut Criterion) {
    let mut group = c.benchmark_group("subscription_proto/handle_datagram");
    group.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(30);
    group.throughput(Throughput::Elements(1));
    let t0 = Instant::now();
    let mut s = server(Algorithm::Wrr, t0);
    for k in 0..KEYS {
        for n in 0..NODES_PER_KEY {
            s.handle_datagram(t0, &datagram(Command::Subscribe, &key(k), &address(n))).unwrap();
        }
    }
    while s.poll_event().is_some() {}
    assert_eq!(s.pools().len(), KEYS);

    let refresh = datagram(Command::Subscribe, &key(KEYS / 2), &address(1));
    group.bench_function("refresh", |b| {
        b.iter(|| {
            s.handle_datagram(t0, black_box(&refresh)).unwrap();
            while s.poll_event().is_some() {}
        });
    });

    // Fresh addresses (beyond the 3 of every pool), spread over all keys.
    let mut next = NODES_PER_KEY;
    group.bench_function("new_node", |b| {
        b.iter_custom(|iters| {
            let added: Vec<(String, String)> = (0..iters as usize)
                .map(|i| {
                    next += 1;
                    (key((i * 7919) % KEYS), address(next))
                })
                .collect();
            let datagrams: Vec<Vec<u8>> =
                added.iter().map(|(k, a)| datagram(Command::Subscribe, k, a)).collect();
            let start = Instant::now();
            for d in &datagrams {
                s.handle_datagram(t0, black_box(d)).unwrap();
                while s.poll_event().is_some() {}
            }
            let elapsed = start.elapsed();
            for (k, a) in &added {
                s.handle_datagram(t0, &datagram(Command::Unsubscribe, k, a)).unwrap();
            }
            while s.poll_event().is_some() {}
            elapsed
        });
    });
    group.finish();
    assert_eq!(s.pools().iter().map(|p| p.nodes().len()).sum::<usize>(), KEYS * NODES_PER_KEY);
}

fn bench_wire(c: &mut Criterion) {
    let mut group = c.benchmark_group("subscription_proto");
    group.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(30);
    // Vector 01: what `--subscribe-to 127.0.0.1:42002:example.com` sends.
    let req = Request {
        key: b"example.com".to_vec(),
        address: b"127.0.0.1:42010".to_vec(),
        cores: 2,
        ..Request::default()
    };
    let d = wire::encode(Command::Subscribe, &req).unwrap();
    assert_eq!(d.len(), 106);
    group.throughput(Throughput::Bytes(d.len() as u64));
    for (name, mode) in [("compat", Mode::Compat), ("strict", Mode::Strict)] {
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| wire::decode(black_box(&d), mode).unwrap());
        });
    }
    group.bench_function("encode", |b| b.iter(|| wire::encode(Command::Subscribe, black_box(&req)).unwrap()));
    group.finish();
}

criterion_group!(benches, bench_pick, bench_handle_datagram, bench_wire);
criterion_main!(benches);
