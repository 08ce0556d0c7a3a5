//! Cost of the Legion core per received announce (STYLE.md §3.7).
//!
//! * `legion_proto/handle_datagram/<N>`: one member's announce processed by a node that
//!   knows `N − 1` members (3, 100, 1000): decryption, decoding, the receive checks, the
//!   membership update and a full election round (checksum and votes over every member).
//! * `legion_proto/open/<cipher>`: decryption and decoding of one announce alone
//!   (`wire::open`), for AES-128-CBC and Blowfish-CBC.
//! * `legion_proto/seal/<cipher>`: encoding and encryption of one announce.
//!
//! Run: `cargo bench -p benches --bench legion_proto`. Results: `BENCHMARKS.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench setup: a failure should abort the run")]
#![allow(clippy::disallowed_methods, reason = "a base Instant for the virtual clock")]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use legion_proto::wire::{self, Crypto};
use legion_proto::{Announce, Config, Legion, NodeUuid};

const WALL: Duration = Duration::from_secs(1_800_000_000);

fn peer_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 41001))
}

fn announce(i: usize, members: usize, checksum: u64) -> Announce {
    Announce {
        legion: b"lg".to_vec(),
        valor: (i % 1000) as u64 + 1,
        unix: WALL.as_secs(),
        lord: 0,
        name: format!("node-{i}").into_bytes(),
        pid: 4000 + i as u64,
        uuid: NodeUuid::from_random((i as u128 + 1).to_le_bytes()),
        checksum,
        lord_valor: members as u64,
        lord_uuid: NodeUuid::from_random([7; 16]),
        scroll: Vec::new(),
        dead: false,
        ext: None,
    }
}

fn bench_handle_datagram(c: &mut Criterion) {
    let crypto = Crypto::from_spec("aes-128-cbc:secret").unwrap();
    let mut group = c.benchmark_group("legion_proto/handle_datagram");
    group.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(30);
    for n in [3usize, 100, 1000] {
        let t0 = Instant::now();
        let config = Config::new("lg", 5, crypto.clone())
            .nodes((1..n).map(peer_addr))
            .freq(Duration::from_secs(3))
            .tolerance(Duration::from_secs(15));
        let mut legion = Legion::new(config, NodeUuid::from_random([1; 16]), t0, WALL).unwrap();
        let datagrams: Vec<Vec<u8>> =
            (1..n).map(|i| wire::seal(&crypto, &announce(i, n, 12345)).unwrap().to_vec()).collect();
        for (i, d) in datagrams.iter().enumerate() {
            legion.handle_datagram(t0, peer_addr(i + 1), d).unwrap();
        }
        while legion.poll_transmit().is_some() {}
        while legion.poll_event().is_some() {}
        assert_eq!(legion.members().len(), n - 1);
        let probe = &datagrams[datagrams.len() / 2];
        let from = peer_addr(datagrams.len() / 2 + 1);
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                legion.handle_datagram(t0, from, black_box(probe)).unwrap();
                while legion.poll_transmit().is_some() {}
            });
        });
    }
    group.finish();
}

fn bench_wire(c: &mut Criterion) {
    let mut group = c.benchmark_group("legion_proto");
    group.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(30);
    for spec in ["aes-128-cbc:secret", "bf-cbc:hello abcdefgh"] {
        let crypto = Crypto::from_spec(spec).unwrap();
        let name = crypto.cipher_name();
        let a = announce(1, 3, 2517);
        let d = wire::seal(&crypto, &a).unwrap();
        group.throughput(Throughput::Bytes(d.len() as u64));
        group.bench_function(BenchmarkId::new("open", name), |b| {
            b.iter(|| wire::open(&crypto, black_box(&d)).unwrap())
        });
        group.bench_function(BenchmarkId::new("seal", name), |b| {
            b.iter(|| wire::seal(&crypto, black_box(&a)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_handle_datagram, bench_wire);
criterion_main!(benches);
