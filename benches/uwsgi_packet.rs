//! Throughput of the `uwsgi-packet` codec on real and 4 KiB packets (STYLE.md §3.7).
//!
//! Benchmark IDs are `uwsgi_packet/<op>/<input>`, all with `Throughput::Bytes` set to the
//! packet's length on the wire (4-byte header + `datasize`), so every op on one input is
//! measured against the same bytes:
//!
//! * `parse_iter`: [`Packet::parse`] with the default [`Limits`], then every var visited,
//!   each `(key, value)` pair passed through [`black_box`].
//! * `stream_decode`: [`Decoder::decode`] splitting the packet off a fresh `BytesMut` (its
//!   copy is made in the untimed setup of `iter_batched`), then every var visited.
//! * `encode`: [`encode_packet`] of the decoded pairs (a prepared `Vec` of slices) into a
//!   reused `Vec<u8>`.
//! * `baseline_read_every_byte`: 64-bit FNV-1a over the whole packet, one byte at a time.
//!   Each step depends on the previous one, so it cannot be vectorised or skipped: the
//!   cost of a single pass that really reads every byte.
//! * `baseline_sum_bytes`: a wrapping `u64` sum of the bytes, which the compiler
//!   vectorises: about the speed of reading the buffer from L1.
//!
//! Inputs: the nginx captures v01–v05 of `shared/vectors/uwsgi-packet` (packet bytes only,
//! any request body after them dropped), vector v13 (datasize 4096, 4 vars, one big
//! value) and a synthetic 4 KiB packet of 128 vars of 32 bytes each (the most vars a
//! default uWSGI accepts: more vars, more length fields to walk).
//!
//! Run: `cargo bench -p benches --bench uwsgi_packet`. Results: `BENCHMARKS.md`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "bench setup: a missing vector should abort the run"
)]

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use uwsgi_packet::{Decoder, Header, Limits, Packet, encode_packet};

/// Where the shared vectors are: `shared/` sits beside the checkout.
const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/uwsgi-packet");

/// The nginx captures, by bench input name and vector file stem.
const NGINX: [(&str, &str); 5] = [
    ("nginx-v01", "v01-nginx-get-query"),
    ("nginx-v02", "v02-nginx-post-body"),
    ("nginx-v03", "v03-nginx-duplicate-headers"),
    ("nginx-v04", "v04-nginx-chunked-dechunked"),
    ("nginx-v05", "v05-nginx-modifiers-5-9"),
];

/// Reads vector `stem` and keeps only its packet: 4 header bytes + `datasize`.
fn vector_packet(stem: &str) -> Vec<u8> {
    let path = Path::new(VECTORS).join(format!("{stem}.hex"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read {}: {e} (the shared/ folder must sit beside the checkout)", path.display())
    });
    let hex = text.trim().as_bytes();
    assert!(hex.len().is_multiple_of(2), "{stem}: odd number of hex digits");
    let mut bytes: Vec<u8> = hex
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).expect("hex digit"))
        .collect();
    let header = Header::from_bytes(*bytes.first_chunk::<4>().expect("a 4-byte header"));
    bytes.truncate(header.packet_len());
    assert_eq!(bytes.len(), header.packet_len(), "{stem}: truncated vector");
    bytes
}

/// A 4 KiB packet of 128 vars, 32 bytes each on the wire (17-byte key, 11-byte value).
fn many_small_vars() -> Vec<u8> {
    let pairs: Vec<(String, String)> =
        (0..128).map(|i| (format!("HTTP_X_HEADER_{i:03}"), format!("value-{i:05}"))).collect();
    let mut wire = Vec::new();
    encode_packet(0, 0, &pairs, &mut wire).unwrap();
    assert_eq!(wire.len(), Header::LEN + 4096);
    wire
}

/// Every bench input: `(name, packet bytes)`.
fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut out: Vec<_> = NGINX.iter().map(|&(name, stem)| (name, vector_packet(stem))).collect();
    out.push(("4KiB-v13", vector_packet("v13-datasize-4096")));
    out.push(("4KiB-128vars", many_small_vars()));
    out
}

/// 64-bit FNV-1a: a serial dependency through every byte.
#[inline(never)]
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A wrapping sum of the bytes; auto-vectorised.
#[inline(never)]
fn sum_bytes(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| acc.wrapping_add(u64::from(b)))
}

fn bench_uwsgi_packet(c: &mut Criterion) {
    let limits = Limits::default();
    let decoder = Decoder::new(limits);
    let mut group = c.benchmark_group("uwsgi_packet");
    for (name, wire) in inputs() {
        let wire = wire.as_slice();
        let (packet, consumed) = Packet::parse(wire, &limits).unwrap().at_eof().unwrap();
        assert_eq!(consumed, wire.len(), "{name}: the packet is the whole input");
        let pairs: Vec<(&[u8], &[u8])> = packet.vars().iter().collect();
        group.throughput(Throughput::Bytes(wire.len() as u64));

        group.bench_with_input(BenchmarkId::new("parse_iter", name), wire, |b, wire| {
            b.iter(|| {
                let (packet, consumed) = Packet::parse(black_box(wire), &limits).unwrap().complete().unwrap();
                for pair in packet.vars() {
                    black_box(pair);
                }
                consumed
            });
        });

        group.bench_with_input(BenchmarkId::new("stream_decode", name), wire, |b, wire| {
            b.iter_batched(
                || BytesMut::from(wire),
                |mut buf| {
                    let packet = decoder.decode(&mut buf).unwrap().unwrap();
                    for pair in packet.vars() {
                        black_box(pair);
                    }
                    (packet, buf)
                },
                BatchSize::SmallInput,
            );
        });

        let mut out = Vec::with_capacity(wire.len());
        encode_packet(packet.modifier1(), packet.modifier2(), &pairs, &mut out).unwrap();
        assert_eq!(out, wire, "{name}: encode reproduces the packet");
        group.bench_with_input(BenchmarkId::new("encode", name), &pairs, |b, pairs| {
            b.iter(|| {
                out.clear();
                let n = encode_packet(packet.modifier1(), packet.modifier2(), black_box(pairs), &mut out)
                    .unwrap();
                black_box(&out);
                n
            });
        });

        group.bench_with_input(BenchmarkId::new("baseline_read_every_byte", name), wire, |b, wire| {
            b.iter(|| fnv1a(black_box(wire)));
        });

        group.bench_with_input(BenchmarkId::new("baseline_sum_bytes", name), wire, |b, wire| {
            b.iter(|| sum_bytes(black_box(wire)));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Quick enough for a 2-core machine: the whole run takes under two minutes.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench_uwsgi_packet
}
criterion_main!(benches);
