//! Fuzz regressions, replayed on stable (STYLE.md §3.7), with `--features __fuzzing`.
//!
//! * Every committed crasher in `tests/fuzz/` goes through the `emperor_core::fuzzing`
//!   entry point its file name starts with: `tests/fuzz/<target>-<hash>`, `<target>` one of
//!   `emperor_core_channel`, `emperor_core_config_pipe`.
//! * The seeds `fuzz/seed-corpus.sh` builds from the shared vectors (`vectors/emperor`:
//!   `session-basic.tsv`, `config-pipe-header.hex`) are rebuilt here and replayed, and a
//!   few thousand pseudo-random inputs per target run too, so the targets' invariants are
//!   checked even with no crasher and no fuzzer.
//!
//! How to add a crasher: `fuzz/README.md`.
#![cfg(feature = "__fuzzing")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is a failed test")]

use std::path::{Path, PathBuf};

use emperor_core::fuzzing;

/// A fuzz target: its cargo-fuzz name and the entry point it calls.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 2] =
    [("emperor_core_channel", fuzzing::channel), ("emperor_core_config_pipe", fuzzing::config_pipe)];

fn crashers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

fn vectors_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/emperor");
    assert!(
        dir.join("README.md").is_file(),
        "shared vectors not found at {}: the project's shared/ folder must sit beside the checkout",
        dir.display()
    );
    dir
}

fn target_for(file_name: &str) -> Target {
    TARGETS
        .into_iter()
        .find(|(name, _)| file_name.strip_prefix(name).is_some_and(|rest| rest.starts_with('-')))
        .unwrap_or_else(|| {
            panic!(
                "tests/fuzz/{file_name}: name it <target>-<hash>, <target> one of {:?}",
                TARGETS.map(|t| t.0)
            )
        })
}

/// Runs `run` on `data`; if it panics (the hook has printed the invariant that broke),
/// fails saying which input it was.
fn check(what: &str, run: fn(&[u8]), data: &[u8]) {
    if std::panic::catch_unwind(|| run(data)).is_err() {
        let shown = &data[..data.len().min(48)];
        panic!("{what}: the fuzz target's invariant failed ({} input bytes: {shown:02x?})", data.len());
    }
}

/// The seed `fuzz/seed-corpus.sh` writes for `emperor_core_channel` from
/// `session-basic.tsv`: configuration byte 0, then per line a time record (op 6, the
/// milliseconds since the previous line) and the line itself: a vassal byte as a raw
/// channel byte of the first open channel (op `0x20`), an emperor reload as a scan that
/// bumps `a.ini`'s mtime (op 10), an emperor stop as a scan without `a.ini`; the
/// emperor's unknown byte 99 has no input.
fn session_seed(tsv: &str) -> Vec<u8> {
    let mut out = vec![0u8];
    let mut last_ms = 0u64;
    for line in tsv.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let ms = (cols[0].parse::<f64>().unwrap() * 1000.0).round() as u64;
        let dt = u16::try_from(ms - last_ms).unwrap();
        last_ms = ms;
        out.extend([6, dt.to_le_bytes()[0], dt.to_le_bytes()[1]]);
        let byte: u8 = cols[2].parse().unwrap();
        match (cols[1], byte) {
            ("V->E", b) => out.extend([0x20, 0, b]),
            ("E->V", 1) => out.extend([10, 0b11, 0b01]),
            ("E->V", 0) => out.extend([10, 0b10, 0]),
            _ => {}
        }
    }
    out
}

/// The seeds of `emperor_core_config_pipe` from `config-pipe-header.hex`: the observed
/// header with a 193-byte body, alone and twice in a row, under three chunk profiles.
fn config_pipe_seeds(hex: &str) -> Vec<Vec<u8>> {
    let digits: String =
        hex.lines().filter(|l| !l.starts_with('#')).collect::<String>().split_whitespace().collect();
    let header: Vec<u8> =
        (0..digits.len()).step_by(2).map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap()).collect();
    assert_eq!(header, [0x73, 0xc1, 0x00, 0x00], "the captured header");
    let mut blob = header;
    blob.extend((0..193).map(|i| b"[uwsgi]\nsocket = :3031\n"[i % 23]));
    let mut seeds = Vec::new();
    for profile in [0x00u8, 0x03, 0x06] {
        let mut one = vec![profile];
        one.extend(&blob);
        seeds.push(one.clone());
        one.extend(&blob);
        seeds.push(one);
    }
    seeds
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
        let data = std::fs::read(crashers_dir().join(&name)).unwrap();
        let (target, run) = target_for(&name);
        check(&format!("tests/fuzz/{name} through {target}"), run, &data);
    }
}

#[test]
fn the_vector_seeds_pass_both_targets() {
    let tsv = std::fs::read_to_string(vectors_dir().join("session-basic.tsv")).unwrap();
    let seed = session_seed(&tsv);
    assert!(seed.len() > 100, "the session has 26 lines");
    check("session-basic.tsv through channel", fuzzing::channel, &seed);
    // Under every configuration byte too.
    for config in 0..=255u8 {
        let mut s = seed.clone();
        s[0] = config;
        check(&format!("session-basic.tsv, config {config:#04x}"), fuzzing::channel, &s);
    }
    let hex = std::fs::read_to_string(vectors_dir().join("config-pipe-header.hex")).unwrap();
    for (i, s) in config_pipe_seeds(&hex).iter().enumerate() {
        check(&format!("config-pipe seed {i}"), fuzzing::config_pipe, s);
    }
}

/// xorshift64*: inputs for the smoke runs below, the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = usize::try_from(self.next()).unwrap() % max;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn pseudo_random_inputs_pass_both_targets() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..3000 {
        let data = rng.bytes(400);
        check(&format!("channel, input {i}"), fuzzing::channel, &data);
        check(&format!("config_pipe, input {i}"), fuzzing::config_pipe, &data);
    }
    // Records biased to the meaningful ops: channel bytes from open channels, exits of
    // live processes, time, scans.
    for i in 0..2000 {
        let mut data = vec![rng.next() as u8];
        for _ in 0..(rng.next() % 80) {
            let op = [0x30u8, 0x31, 0x32, 0x05, 0x06, 0x16, 0x08, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e]
                [usize::try_from(rng.next() % 12).unwrap()];
            data.extend([op, rng.next() as u8, rng.next() as u8]);
        }
        check(&format!("channel, biased input {i}"), fuzzing::channel, &data);
    }
}

#[test]
fn crasher_names_select_their_target() {
    assert_eq!(target_for("emperor_core_channel-0123abcd").0, "emperor_core_channel");
    assert_eq!(target_for("emperor_core_config_pipe-0123abcd").0, "emperor_core_config_pipe");
    assert!(std::panic::catch_unwind(|| target_for("emperor_core_nope-0123abcd")).is_err());
}
