//! Smoke test of `cluster-demo`: it runs to completion on its own (starting the sibling
//! `uwsgi-echo-server`), within a time limit, and reports each step; and it fails
//! loudly when its server cannot be started.

// Tests wait for a child process with bounded polling (Instant::now + thread::sleep).
#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the clock and short sleeps")]
#![allow(clippy::unwrap_used, reason = "test code")]

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs `cluster-demo` with `args`, killing it if it takes longer than `limit`.
/// Returns its exit status, stdout and stderr.
fn run_demo(args: &[&str], limit: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cluster-demo"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes on threads so that a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cluster-demo did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

#[test]
fn demo_runs_every_section_and_exits_zero() {
    let (status, out, err) = run_demo(&[], Duration::from_secs(60));
    assert!(status.success(), "exit {status}\nstdout:\n{out}\nstderr:\n{err}");
    for expected in [
        "listening on 127.0.0.1:",
        // The requests, taken apart.
        "A GET with a query string",
        "A POST: the body follows the vars",
        "body (16 bytes after the packet): hello=world&n=42",
        "Repeated headers",
        "modifier1 = 0",
        "datasize  = ",
        "response: HTTP/1.1 200 OK",
        "the echo matches what was sent",
        "reply (4 bytes): 64 00 00 01",
        // The malformed inputs: codec verdicts, no reply, the server's log lines.
        "codec: EmptyKey",
        "codec: TooLarge",
        "codec: HttpRequest",
        "reply: 0 bytes, then the server closed the connection",
        ": EmptyKey: zero-length key",
        ": TooLarge: datasize 5000",
        ": HttpRequest: ",
        // And the server survived them.
        "The server survived",
        "still running",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in the demo's output:\n{out}");
    }
    // The vars table shows both duplicates, in wire order (the padding varies).
    let dup: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("HTTP_X_DUP "))
        .filter_map(|l| l.split_once(" = ").map(|(_, v)| v))
        .collect();
    assert_eq!(dup, ["one", "two"], "duplicate vars in the table:\n{out}");
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("all ") && last.ends_with(" checks passed"), "last line {last:?}\n{out}");
    assert!(!out.contains("server log (other)"), "unexpected server log lines:\n{out}");
    assert!(err.is_empty(), "nothing on stderr when all goes well: {err}");
}

#[test]
fn demo_fails_when_its_server_does_not_start() {
    // `true` exits at once without printing `listening on`.
    let (status, out, err) = run_demo(&["--server", "/bin/true", "--timeout", "5"], Duration::from_secs(30));
    assert!(!status.success(), "a demo without a server must fail\nstdout:\n{out}");
    assert!(err.contains("cluster-demo: FAILED:") && err.contains("listening on"), "stderr: {err}");
    let (status, _, err) = run_demo(&["--server", "/nonexistent/uwsgi-echo-server"], Duration::from_secs(30));
    assert!(!status.success());
    assert!(err.contains("cannot start /nonexistent/uwsgi-echo-server"), "stderr: {err}");
}
