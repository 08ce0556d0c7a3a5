//! Fuzz regressions, replayed on stable (STYLE.md §3.7).
//!
//! * Every minimized crasher in `tests/fuzz/` goes through the `uwsgi_packet::fuzzing`
//!   entry point its file name starts with: `tests/fuzz/<target>-<hash>`, where `<target>`
//!   is the cargo-fuzz target (`uwsgi_packet_parse`, `uwsgi_packet_stream`,
//!   `uwsgi_packet_roundtrip`, `uwsgi_packet_content_length`).
//! * Every shared vector goes through `fuzzing::parse`, and through `fuzzing::stream` with
//!   every chunk size, so this file checks the fuzz invariants even with no crasher.
//!
//! Each entry point asserts the codec's invariants, so a failure here is a panic with the
//! invariant's message. How to add a crasher: `fuzz/README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is a failed test")]

use std::path::{Path, PathBuf};

use uwsgi_packet::fuzzing;

/// A fuzz target: its cargo-fuzz name and the entry point it calls.
type Target = (&'static str, fn(&[u8]));

/// Every fuzz target.
const TARGETS: [Target; 4] = [
    ("uwsgi_packet_parse", fuzzing::parse),
    ("uwsgi_packet_stream", fuzzing::stream),
    ("uwsgi_packet_roundtrip", fuzzing::roundtrip),
    ("uwsgi_packet_content_length", fuzzing::content_length),
];

fn crashers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

fn vectors_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/uwsgi-packet");
    assert!(
        dir.join("README.md").is_file(),
        "shared vectors not found at {}: the project's shared/ folder must sit beside the checkout",
        dir.display()
    );
    dir
}

/// The target (name and entry point) for a crasher file named `<target>-<hash>`.
fn target_for(file_name: &str) -> Target {
    let target = file_name.split_once('-').map_or(file_name, |(target, _)| target);
    TARGETS.into_iter().find(|(name, _)| *name == target).unwrap_or_else(|| {
        panic!("tests/fuzz/{file_name}: name it <target>-<hash>, <target> one of {:?}", TARGETS.map(|t| t.0))
    })
}

/// Runs `run` on `data`; if it panics (the hook has printed the invariant that broke),
/// fails saying which input it was.
fn check(what: &str, run: fn(&[u8]), data: &[u8]) {
    if std::panic::catch_unwind(|| run(data)).is_err() {
        panic!("{what}: the fuzz target's invariant failed ({} input bytes: {:?})", data.len(), Snip(data));
    }
}

/// Debug-prints at most the first 32 bytes.
struct Snip<'a>(&'a [u8]);

impl std::fmt::Debug for Snip<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.0[..self.0.len().min(32)];
        write!(f, "{shown:02x?}{}", if shown.len() < self.0.len() { "…" } else { "" })
    }
}

/// Replays the committed crasher `file_name` through its target.
fn replay(file_name: &str) {
    let data = std::fs::read(crashers_dir().join(file_name)).unwrap();
    let (target, run) = target_for(file_name);
    check(&format!("tests/fuzz/{file_name} through {target}"), run, &data);
}

/// `(file stem, bytes)` of every `*.hex` vector, valid and malformed.
fn vectors() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(vectors_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "hex") {
            let text = std::fs::read_to_string(&path).unwrap();
            let hex = text.trim();
            assert!(hex.len().is_multiple_of(2), "{}: odd number of hex digits", path.display());
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
                .collect();
            out.push((path.file_stem().unwrap().to_string_lossy().into_owned(), bytes));
        }
    }
    out.sort();
    assert!(out.len() >= 43, "expected the 22 valid and 21 malformed vectors, found {}", out.len());
    out
}

#[test]
fn every_committed_crasher_passes_its_target() {
    let Ok(entries) = std::fs::read_dir(crashers_dir()) else {
        return; // no crasher committed yet
    };
    let mut names: Vec<String> =
        entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    for name in names {
        replay(&name);
    }
}

/// Found by `uwsgi_packet_roundtrip` on its first run, on the seed m07 (65539 bytes),
/// then minimized by hand (libFuzzer's `tmin` stalled at 62170 bytes): 39324 zero bytes. The
/// target cut them into 13108 pairs `("\0", "")` of 5 encoded bytes each, 65540 in all,
/// one more than a `u16` datasize holds, so `PacketBuilder::push` rightly returned
/// `BodyTooLarge { len: 65540 }` and the target's `expect("small pairs fit")` panicked.
/// 39321 zero bytes (65535 encoded) passed. The codec was right; the target assumed any
/// input gives pairs that fit, but a pair grows by up to 5/3 when encoded, so inputs of
/// 39324 bytes or more can overflow. Fixed in `uwsgi_packet::fuzzing::roundtrip`: it stops
/// taking pairs before the body would pass 65535 bytes.
#[test]
fn roundtrip_of_pairs_over_65535_encoded_bytes() {
    let name = "uwsgi_packet_roundtrip-69102c32bd30a058e611d053edefb7fa9ac204fd";
    let data = std::fs::read(crashers_dir().join(name)).unwrap();
    assert_eq!(data, vec![0u8; 39324], "the crasher is 39324 zero bytes");
    replay(name);
}

#[test]
fn crasher_names_select_their_target() {
    assert_eq!(target_for("uwsgi_packet_parse-0123abcd").0, "uwsgi_packet_parse");
    assert_eq!(target_for("uwsgi_packet_content_length-0123abcd").0, "uwsgi_packet_content_length");
    assert!(std::panic::catch_unwind(|| target_for("uwsgi_packet_nope-0123abcd")).is_err());
}

#[test]
fn every_vector_passes_the_parse_target() {
    for (name, bytes) in vectors() {
        check(&format!("parse: {name}"), fuzzing::parse, &bytes);
        // Some prefixes too: the truncated packets a stream delivers on the way.
        for cut in [0, 1, 3, 4, 5, bytes.len() / 2, bytes.len().saturating_sub(1)] {
            check(&format!("parse: {name}[..{cut}]"), fuzzing::parse, &bytes[..cut.min(bytes.len())]);
        }
    }
}

#[test]
fn every_vector_passes_the_stream_target_at_every_chunk_size() {
    for (name, bytes) in vectors() {
        // The target's first byte picks the chunk size: byte % 16 + 1.
        for chunk in 0u8..16 {
            let mut input = Vec::with_capacity(bytes.len() + 1);
            input.push(chunk);
            input.extend_from_slice(&bytes);
            check(&format!("stream: {name} in {}-byte chunks", chunk + 1), fuzzing::stream, &input);
        }
    }
}
