//! Helpers shared by the example programs' integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::print_stderr)]

pub mod procs;

use std::path::PathBuf;

/// The absolute path of a required peer program (`uwsgi`, `nginx`, …).
///
/// A missing peer is a test **failure**, never a skip: the README's test command installs
/// every peer (`scripts/test.sh`), and under `CI=true` nothing may be skipped.
pub fn require_program(name: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    let extra = [PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin"), PathBuf::from("/sbin")];
    for dir in std::env::split_paths(&dirs).chain(extra) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    let ci = std::env::var("CI").map(|v| v == "true").unwrap_or(false);
    panic!(
        "required peer program `{name}` is not installed{}: run `scripts/test.sh`, which installs \
         uwsgi-core, uwsgi-plugin-python3 and nginx-light (apt, as root)",
        if ci { " (CI=true: peers are never skipped)" } else { "" }
    );
}

/// Spawns `cmd`, writes `stdin` to it (or gives it no stdin when `None`) and collects its
/// output; kills it and panics if it is still running after `limit`. The pipes are served
/// by threads so a large output cannot block the child.
#[allow(clippy::disallowed_methods, reason = "test code: bounding a child process's run time")]
pub fn run_bounded(
    mut cmd: std::process::Command,
    stdin: Option<&[u8]>,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::io::{Read as _, Write as _};
    use std::process::Stdio;
    let mut child = cmd
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let writer = stdin.map(|input| {
        let mut child_in = child.stdin.take().unwrap();
        let input = input.to_vec();
        // Dropping child_in at the end of the thread closes the program's stdin.
        std::thread::spawn(move || {
            let _ = child_in.write_all(&input);
        })
    });
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} was still running after {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    if let Some(w) = writer {
        w.join().unwrap();
    }
    std::process::Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}
