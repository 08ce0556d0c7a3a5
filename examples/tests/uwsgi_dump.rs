//! Runs the `uwsgi-dump` program on every shared uwsgi-packet vector
//! (`shared/vectors/uwsgi-packet`, a sibling of the checkout): the valid ones must print
//! exactly their `.json` (header fields, vars or items, bytes after the packet), the
//! malformed ones must get `malformed.json`'s verdict (exit 2 and one of the allowed error
//! kinds, or exit 0).

// Test code: a failed unwrap is a failed test. The process helper bounds each run with
// the clock and polls with sleep; these tests are a driver, not a sans-IO core.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

/// Every run of the program must end within this.
const RUN_LIMIT: Duration = Duration::from_secs(20);

fn vectors_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/uwsgi-packet");
    assert!(
        dir.join("malformed.json").is_file(),
        "the shared test vectors are missing: expected {} (the `shared/` directory must sit next to \
         the repository checkout, as it does on the dev machines and in CI)",
        dir.display()
    );
    dir
}

/// Runs `uwsgi-dump ARGS` with `stdin` as its input, bounded by [`RUN_LIMIT`].
fn dump(args: &[&str], stdin: &[u8]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_uwsgi-dump"));
    cmd.args(args);
    common::run_bounded(cmd, Some(stdin), RUN_LIMIT)
}

fn read_hex(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Names (without extension) of the files in the vector directory starting with `prefix`
/// and ending with `.ext`, sorted.
fn vector_names(dir: &Path, prefix: &str, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(prefix))
        .filter_map(|n| n.strip_suffix(&format!(".{ext}")).map(str::to_owned))
        .collect();
    names.sort();
    names
}

fn is_array(v: &Value) -> bool {
    v.get("encoding").and_then(Value::as_str) == Some("array")
}

/// The differences between `uwsgi-dump`'s output and a vector's JSON, on the keys the
/// program promises; empty when they agree.
fn differences(name: &str, got: &Value, want: &Value) -> Vec<String> {
    let body = if is_array(want) { "items" } else { "vars" };
    let mut diffs = Vec::new();
    for key in ["modifier1", "modifier2", "datasize", body, "after_vars", "encoding"] {
        if got.get(key) != want.get(key) {
            diffs.push(format!(
                "{name}: `{key}` is {} but the vector says {}",
                got.get(key).map_or_else(|| "absent".to_owned(), Value::to_string),
                want.get(key).map_or_else(|| "absent".to_owned(), Value::to_string),
            ));
        }
    }
    // Nothing else: in particular not `vars` and `items` together.
    let allowed = ["modifier1", "modifier2", "datasize", body, "after_vars", "encoding"];
    for key in got.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
        if !allowed.contains(&key.as_str()) {
            diffs.push(format!("{name}: unexpected key `{key}` in the output"));
        }
    }
    diffs
}

/// Parses the program's stdout, which must be one JSON object.
fn output_json(name: &str, out: &Output) -> Value {
    let text =
        std::str::from_utf8(&out.stdout).unwrap_or_else(|e| panic!("{name}: stdout is not UTF-8: {e}"));
    let value: Value = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{name}: stdout is not one JSON document ({e}):\n{text}"));
    assert!(value.is_object(), "{name}: stdout is not a JSON object:\n{text}");
    value
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_valid_vector_dumps_to_its_json() {
    let dir = vectors_dir();
    let names = vector_names(&dir, "v", "json");
    // The README lists 22 valid vectors; fewer means a broken checkout, not a pass.
    assert!(names.len() >= 22, "only {} valid vectors in {}", names.len(), dir.display());
    assert_eq!(names, vector_names(&dir, "v", "hex"), "every vNN.hex has a vNN.json and back");

    let mut diffs = Vec::new();
    for name in &names {
        let want = read_json(&dir.join(format!("{name}.json")));
        let hex = read_hex(&dir.join(format!("{name}.hex")));
        let mut args = vec!["--hex"];
        if is_array(&want) {
            args.push("--array");
        }
        let out = dump(&args, hex.as_bytes());
        assert!(
            out.status.success(),
            "{name}: uwsgi-dump {args:?} failed ({}): {}",
            out.status,
            stderr(&out)
        );
        diffs.extend(differences(name, &output_json(name, &out), &want));
    }
    assert!(diffs.is_empty(), "{} mismatches:\n{}", diffs.len(), diffs.join("\n"));
}

#[test]
fn every_malformed_vector_gets_its_verdict() {
    let dir = vectors_dir();
    let verdicts = read_json(&dir.join("malformed.json"));
    let verdicts = verdicts.as_object().unwrap();
    let names: Vec<&String> = verdicts.keys().filter(|k| !k.starts_with('_')).collect();
    assert!(names.len() >= 21, "only {} entries in malformed.json", names.len());
    let mut hex_names = vector_names(&dir, "m", "hex");
    hex_names.sort();
    assert_eq!(names, hex_names.iter().collect::<Vec<_>>(), "malformed.json and the mNN.hex files agree");

    let mut failures = Vec::new();
    for name in names {
        let verdict = &verdicts[name];
        let hex = read_hex(&dir.join(format!("{name}.hex")));
        let mut args = vec!["--hex".to_owned()];
        if is_array(verdict) {
            args.push("--array".to_owned());
        }
        if let Some(limits) = verdict.get("limits") {
            if let Some(max) = limits.get("max_datasize") {
                args.push("--max-size".to_owned());
                args.push(max.to_string());
            }
            // uwsgi-dump's var limit is fixed at uWSGI's default.
            if let Some(max) = limits.get("max_vars") {
                assert_eq!(max, 128, "{name}: uwsgi-dump only knows max_vars 128");
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = dump(&args, hex.as_bytes());
        let err = stderr(&out);
        match verdict["codec"].as_str() {
            Some("reject") => {
                let kinds: Vec<&str> = verdict["error"].as_str().unwrap().split('|').collect();
                let prefix_ok = kinds.iter().any(|k| err.starts_with(&format!("error: {k}: ")));
                if out.status.code() != Some(2) || !prefix_ok || !out.stdout.is_empty() {
                    failures.push(format!(
                        "{name}: expected exit 2 and `error: {}: ...`, got {} with stderr {err:?} and {} stdout bytes",
                        kinds.join("|"),
                        out.status,
                        out.stdout.len()
                    ));
                }
            }
            Some("accept") => {
                if !out.status.success() {
                    failures.push(format!("{name}: expected acceptance, got {}: {err}", out.status));
                    continue;
                }
                // The header fields must still be the bytes' own.
                let got = output_json(name, &out);
                let bytes = unhex(&hex);
                let datasize = u16::from_le_bytes([bytes[1], bytes[2]]);
                if got["modifier1"] != bytes[0] || got["datasize"] != datasize || got["modifier2"] != bytes[3]
                {
                    failures.push(format!("{name}: wrong header in {got}"));
                }
            }
            other => panic!("{name}: unknown codec verdict {other:?}"),
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn raw_stdin_gives_the_same_dump_as_hex() {
    let dir = vectors_dir();
    // v10: request body after the vars; v08 and v11: non-UTF-8 and NUL bytes; v20: array.
    for name in ["v10-post-body-same-write", "v08-latin1-key-value", "v11-nul-bytes", "v20-rpc-array"] {
        let want = read_json(&dir.join(format!("{name}.json")));
        let hex = read_hex(&dir.join(format!("{name}.hex")));
        let array: &[&str] = if is_array(&want) { &["--array"] } else { &[] };
        let raw = dump(array, &unhex(&hex));
        assert!(raw.status.success(), "{name}: {}", stderr(&raw));
        let diffs = differences(name, &output_json(name, &raw), &want);
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
        let via_hex = dump(&[&["--hex"], array].concat(), hex.as_bytes());
        assert_eq!(raw.stdout, via_hex.stdout, "{name}: raw and --hex outputs differ");
    }
}

#[test]
fn max_size_is_applied() {
    let dir = vectors_dir();
    // m07: datasize 65535, well-formed. uWSGI with --buffer-size 65535 accepts it.
    let m07 = read_hex(&dir.join("m07-datasize-ffff.hex"));
    let out = dump(&["--hex", "--max-size", "65535"], m07.as_bytes());
    assert!(out.status.success(), "m07 with --max-size 65535: {}", stderr(&out));
    let got = output_json("m07", &out);
    assert_eq!(got["datasize"], 65535);
    assert!(got["vars"].as_array().is_some_and(|v| !v.is_empty()), "{got}");
    // The same bytes with the default limit, and v13 (datasize 4096) one byte over a limit.
    let out = dump(&["--hex"], m07.as_bytes());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: TooLarge: datasize 65535 exceeds the 4096-byte limit"),
        "{}",
        stderr(&out)
    );
    let v13 = read_hex(&dir.join("v13-datasize-4096.hex"));
    let out = dump(&["--hex", "--max-size", "4095"], v13.as_bytes());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("error: TooLarge: "), "{}", stderr(&out));
    assert!(dump(&["--hex", "--max-size", "4096"], v13.as_bytes()).status.success());
}

#[test]
fn bad_hex_and_bad_usage_exit_2() {
    for input in ["0g", "abc", "00 01 0x"] {
        let out = dump(&["--hex"], input.as_bytes());
        assert_eq!(out.status.code(), Some(2), "{input:?}");
        assert!(stderr(&out).starts_with("error: InvalidHex: "), "{input:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
    // Whitespace anywhere is fine, upper case too: the PING vector, spaced out.
    let out = dump(&["--hex"], b" 64 00\n00\t00 \n");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = dump(&["--hex"], b"6E00 0011");
    assert_eq!(output_json("signal", &out)["modifier2"], 17);

    for args in [&["--max-size", "65536"][..], &["--max-size", "-1"], &["--nope"], &["extra"]] {
        let out = dump(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn an_http_request_is_named_as_such() {
    let out = dump(&[], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).starts_with("error: HttpRequest: "), "{}", stderr(&out));
}
