//! `http-load`: a small HTTP/1.1 load generator that counts every request that did not get
//! a `200`, for checking zero-downtime hand-overs (`zerg-http`, `zergpool`) and for the
//! cluster demo.
//!
//! `--concurrency` threads each send `GET /` on a new connection per request (TCP or a
//! unix socket), with a per-request deadline, until the run ends: after `--requests` in
//! all, after `--duration-ms`, or once `--until-file` exists. Then it prints one JSON
//! summary on stdout, including how many answers came from each pid (the first word of
//! each body, as `zerg-http` answers `"PID TEXT"`).
//!
//! # Running it
//!
//! ```text
//! cargo run -p examples --bin zerg-http -- --http-socket 127.0.0.1:8080 &
//! cargo run -p examples --bin http-load -- --target 127.0.0.1:8080 --concurrency 8 --duration-ms 2000
//! {"ok":15231,"failed":0,"refused":0,"timeouts":0,"by_pid":{"4242":15231},"latency_us":{"p50":402,"p99":1630,"max":5120}}
//! ```
//!
//! Point it at **loopback** (or a unix socket) only: it is a load generator.
//!
//! # Options
//!
//! | option | meaning |
//! |---|---|
//! | `--target ADDR` | `IP:PORT`, `[IPv6]:PORT`, `HOST:PORT` (resolved once), a unix socket path (`unix:PATH` too) or `@name` (abstract, with uWSGI's trailing NUL) |
//! | `--concurrency N` | requests in flight at once, one thread each (default 4, at most 1024) |
//! | `--requests N` \| `--duration-ms MS` \| `--until-file PATH` | when to stop (exactly one): after N requests in all; after MS milliseconds; once PATH exists. Requests in flight at the end are finished and counted |
//! | `--max-ms MS` | the longest run, whatever the mode (default 60000) |
//! | `--timeout-ms MS` | per-request deadline: connect, send, and the whole response (default 2000) |
//!
//! Each request is `GET / HTTP/1.1` with `Host:` (the target, or `localhost` for a unix
//! socket) and `Connection: close`. It is `ok` when the answer is complete (its
//! `Content-Length`, or everything until the server closes) with status 200; `refused`
//! when the connect is refused (or the unix socket does not exist); `timeouts` when the
//! deadline passes; `failed` otherwise (reset, closed early, another status, garbage).
//!
//! The summary (keys in this order; `latency_us` over the `ok` requests, nearest-rank
//! percentiles, all 0 when there are none):
//!
//! ```text
//! {"ok":N,"failed":N,"refused":N,"timeouts":N,"by_pid":{"PID":N,…},"latency_us":{"p50":…,"p99":…,"max":…}}
//! ```
//!
//! Every kind of failure is also counted on stderr with its reason
//! (`http-load: 3 x failed: connection reset by peer`). Exit 0 when
//! `failed + refused + timeouts` is 0, else 1; invalid options exit 2.
//!
//! Limits: a blocking unix `connect` has no deadline (Linux makes it wait while the
//! socket's backlog is full); answers are read up to 1 MiB.

// A command-line program: its output is the point; it measures time and waits for a file.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program reports on stdout/stderr"
)]
#![allow(clippy::disallowed_methods, reason = "a load generator measures latencies and polls for a file")]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Arg, ArgGroup, ArgMatches, Command, value_parser};
use serde_json::Value;

/// Exit status for invalid options (clap's own errors exit 2 too).
const USAGE: u8 = 2;
/// Largest answer read.
const MAX_RESPONSE: usize = 1 << 20;
/// How often the main thread looks for `--until-file`.
const FILE_POLL: Duration = Duration::from_millis(5);

fn command() -> Command {
    let number = |name: &'static str, value: &'static str, help: &'static str| {
        Arg::new(name).long(name).value_name(value).value_parser(value_parser!(u64)).help(help)
    };
    Command::new("http-load")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A small HTTP/1.1 load generator: new connection per request, one JSON summary")
        .arg(
            Arg::new("target")
                .long("target")
                .value_name("ADDR")
                .required(true)
                .help("IP:PORT, [IPv6]:PORT, HOST:PORT, a unix socket path or @name"),
        )
        .arg(
            Arg::new("concurrency")
                .long("concurrency")
                .value_name("N")
                .value_parser(value_parser!(u64).range(1..=1024))
                .default_value("4")
                .help("requests in flight at once"),
        )
        .arg(number("requests", "N", "stop after N requests in all"))
        .arg(number("duration-ms", "MS", "stop after MS milliseconds"))
        .arg(
            Arg::new("until-file")
                .long("until-file")
                .value_name("PATH")
                .value_parser(value_parser!(PathBuf))
                .help("stop once PATH exists"),
        )
        .group(ArgGroup::new("mode").args(["requests", "duration-ms", "until-file"]).required(true))
        .arg(number("max-ms", "MS", "the longest run, whatever the mode").default_value("60000"))
        .arg(
            number("timeout-ms", "MS", "per-request deadline: connect, send, whole response")
                .default_value("2000"),
        )
}

/// Where to send requests.
#[derive(Clone, Debug)]
enum Target {
    Tcp { addr: SocketAddr, host: String },
    Unix(std::os::unix::net::SocketAddr),
}

fn parse_target(text: &str) -> Result<Target, String> {
    use std::os::linux::net::SocketAddrExt as _;
    let unix = |r: io::Result<std::os::unix::net::SocketAddr>| {
        r.map(Target::Unix).map_err(|e| format!("--target {text:?}: {e}"))
    };
    if let Some(path) = text.strip_prefix("unix:") {
        return unix(std::os::unix::net::SocketAddr::from_pathname(path));
    }
    if let Some(name) = text.strip_prefix('@') {
        let mut bytes = name.as_bytes().to_vec();
        bytes.push(0);
        return unix(std::os::unix::net::SocketAddr::from_abstract_name(bytes));
    }
    if !text.contains(':') {
        return unix(std::os::unix::net::SocketAddr::from_pathname(text));
    }
    let addr = match text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => text
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("--target {text:?}: not IP:PORT, [IPv6]:PORT, HOST:PORT or a path"))?,
    };
    Ok(Target::Tcp { addr, host: text.to_owned() })
}

/// How one request ended.
enum Outcome {
    Ok { pid: String, latency_us: u64 },
    Refused(String),
    Timeout,
    Failed(String),
}

/// One thread's tallies.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    refused: u64,
    timeouts: u64,
    by_pid: BTreeMap<String, u64>,
    latencies: Vec<u64>,
    reasons: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok { pid, latency_us } => {
                self.ok += 1;
                *self.by_pid.entry(pid).or_default() += 1;
                self.latencies.push(latency_us);
            }
            Outcome::Refused(why) => {
                self.refused += 1;
                *self.reasons.entry(format!("refused: {why}")).or_default() += 1;
            }
            Outcome::Timeout => {
                self.timeouts += 1;
                *self.reasons.entry("timed out".to_owned()).or_default() += 1;
            }
            Outcome::Failed(why) => {
                self.failed += 1;
                *self.reasons.entry(format!("failed: {why}")).or_default() += 1;
            }
        }
    }

    fn merge(&mut self, other: Self) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.refused += other.refused;
        self.timeouts += other.timeouts;
        for (k, v) in other.by_pid {
            *self.by_pid.entry(k).or_default() += v;
        }
        self.latencies.extend(other.latencies);
        for (k, v) in other.reasons {
            *self.reasons.entry(k).or_default() += v;
        }
    }

    /// The summary line, keys in the documented order.
    fn summary(&mut self) -> String {
        self.latencies.sort_unstable();
        let rank = |p: u64| -> u64 {
            let n = self.latencies.len() as u64;
            if n == 0 {
                return 0;
            }
            // Nearest rank: the smallest value with at least p% of the values at or below it.
            let idx = (p * n).div_ceil(100).clamp(1, n) - 1;
            self.latencies.get(usize::try_from(idx).unwrap_or(0)).copied().unwrap_or(0)
        };
        let by_pid: serde_json::Map<String, Value> =
            self.by_pid.iter().map(|(k, v)| (k.clone(), Value::from(*v))).collect();
        format!(
            "{{\"ok\":{},\"failed\":{},\"refused\":{},\"timeouts\":{},\"by_pid\":{},\"latency_us\":{{\"p50\":{},\"p99\":{},\"max\":{}}}}}",
            self.ok,
            self.failed,
            self.refused,
            self.timeouts,
            Value::Object(by_pid),
            rank(50),
            rank(99),
            self.latencies.last().copied().unwrap_or(0)
        )
    }
}

/// When the run ends, shared by every thread.
struct Plan {
    target: Target,
    timeout: Duration,
    end: Instant,
    /// `--requests`: the total, and how many were claimed so far.
    requests: Option<u64>,
    claimed: AtomicU64,
    /// Set by the main thread once `--until-file` exists.
    stop: AtomicBool,
}

impl Plan {
    /// Claims the next request, or says the run is over.
    fn next(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= self.end {
            return false;
        }
        match self.requests {
            Some(n) => self.claimed.fetch_add(1, Ordering::Relaxed) < n,
            None => true,
        }
    }
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    match run(&matches) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("http-load: {message}");
            ExitCode::from(USAGE)
        }
    }
}

/// Runs the load; `Ok(true)` when every request was ok.
fn run(m: &ArgMatches) -> Result<bool, String> {
    let ms = |name: &str| m.get_one::<u64>(name).copied().map(Duration::from_millis);
    let target = parse_target(m.get_one::<String>("target").map(String::as_str).unwrap_or_default())?;
    let timeout = ms("timeout-ms").unwrap_or(Duration::from_secs(2));
    if timeout.is_zero() {
        return Err("--timeout-ms must be at least 1".into());
    }
    let start = Instant::now();
    let max = ms("max-ms").unwrap_or(Duration::from_secs(60));
    let end = start + ms("duration-ms").map_or(max, |d| d.min(max));
    let until_file = m.get_one::<PathBuf>("until-file").cloned();
    let plan = Arc::new(Plan {
        target,
        timeout,
        end,
        requests: m.get_one::<u64>("requests").copied(),
        claimed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let threads = m.get_one::<u64>("concurrency").copied().unwrap_or(4);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let plan = Arc::clone(&plan);
            std::thread::spawn(move || {
                let mut tally = Tally::default();
                while plan.next() {
                    tally.add(request(&plan.target, plan.timeout));
                }
                tally
            })
        })
        .collect();
    if let Some(path) = until_file {
        // Bounded by `end` (--max-ms).
        while !path.exists() && Instant::now() < end && !workers.iter().all(|w| w.is_finished()) {
            std::thread::sleep(FILE_POLL);
        }
        plan.stop.store(true, Ordering::Relaxed);
    }
    let mut total = Tally::default();
    for worker in workers {
        match worker.join() {
            Ok(tally) => total.merge(tally),
            Err(_) => return Err("a worker thread panicked".into()),
        }
    }
    for (reason, n) in &total.reasons {
        eprintln!("http-load: {n} x {reason}");
    }
    let line = total.summary();
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    Ok(total.failed + total.refused + total.timeouts == 0)
}

/// A connected socket of either kind.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn set_timeouts(&self, left: Duration) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_read_timeout(Some(left)).and_then(|()| s.set_write_timeout(Some(left))),
            Self::Unix(s) => s.set_read_timeout(Some(left)).and_then(|()| s.set_write_timeout(Some(left))),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.write_all(buf),
            Self::Unix(s) => s.write_all(buf),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// One request on a new connection.
fn request(target: &Target, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let deadline = start + timeout;
    let left = || deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
    let refused =
        |e: &io::Error| matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound);
    let (mut conn, host) = match target {
        Target::Tcp { addr, host } => match TcpStream::connect_timeout(addr, timeout) {
            Ok(s) => (Conn::Tcp(s), host.as_str()),
            Err(e) if refused(&e) => return Outcome::Refused(e.to_string()),
            Err(e) if is_timeout(&e) => return Outcome::Timeout,
            Err(e) => return Outcome::Failed(format!("connect: {e}")),
        },
        Target::Unix(addr) => match UnixStream::connect_addr(addr) {
            Ok(s) => (Conn::Unix(s), "localhost"),
            Err(e) if refused(&e) => return Outcome::Refused(e.to_string()),
            Err(e) => return Outcome::Failed(format!("connect: {e}")),
        },
    };
    let request =
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: http-load\r\nConnection: close\r\n\r\n");
    let Some(l) = left() else { return Outcome::Timeout };
    if let Err(e) = conn.set_timeouts(l).and_then(|()| conn.write_all(request.as_bytes())) {
        return if is_timeout(&e) { Outcome::Timeout } else { Outcome::Failed(format!("send: {e}")) };
    }
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    // Bounded by the deadline and MAX_RESPONSE.
    let complete = loop {
        if let Some(len) = complete_len(&buf) {
            break Some(len);
        }
        if buf.len() > MAX_RESPONSE {
            return Outcome::Failed("answer larger than 1 MiB".into());
        }
        let Some(l) = left() else { return Outcome::Timeout };
        if let Err(e) = conn.set_timeouts(l) {
            return Outcome::Failed(format!("setsockopt: {e}"));
        }
        match conn.read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Outcome::Timeout,
            Err(e) => return Outcome::Failed(format!("receive: {e}")),
        }
    };
    let latency_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    judge(&buf, complete, latency_us)
}

/// The answer's full length once its head and `Content-Length` body have arrived.
fn complete_len(buf: &[u8]) -> Option<usize> {
    let head = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&buf[..head]).ok()?;
    let length = text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
    })?;
    (buf.len() >= head + length).then_some(head + length)
}

/// Checks a complete (or closed) answer.
fn judge(buf: &[u8], complete: Option<usize>, latency_us: u64) -> Outcome {
    if buf.is_empty() {
        return Outcome::Failed("closed without an answer".into());
    }
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) else {
        return Outcome::Failed("closed in the middle of the answer's head".into());
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let status = head.lines().next().unwrap_or_default();
    let code = status.split_ascii_whitespace().nth(1).unwrap_or_default();
    if !status.starts_with("HTTP/1.") {
        return Outcome::Failed("not an HTTP answer".into());
    }
    if code != "200" {
        return Outcome::Failed(format!("status {code}"));
    }
    let has_length = head.lines().any(|l| l.to_ascii_lowercase().starts_with("content-length:"));
    if has_length && complete.is_none() {
        return Outcome::Failed("closed before the whole body arrived".into());
    }
    let body = &buf[head_end..complete.unwrap_or(buf.len())];
    let pid = String::from_utf8_lossy(body).split_ascii_whitespace().next().unwrap_or_default().to_owned();
    Outcome::Ok { pid, latency_us }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_judged() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n4242 hello";
        assert_eq!(complete_len(ok), Some(ok.len()));
        assert!(matches!(judge(ok, complete_len(ok), 5), Outcome::Ok { pid, .. } if pid == "4242"));
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n4242";
        assert_eq!(complete_len(short), None);
        assert!(matches!(judge(short, None, 5), Outcome::Failed(_)));
        let no_length = b"HTTP/1.0 200 OK\r\n\r\n77 x\n";
        assert!(matches!(judge(no_length, None, 5), Outcome::Ok { pid, .. } if pid == "77"));
        let bad = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(judge(bad, complete_len(bad), 5), Outcome::Failed(m) if m == "status 503"));
        assert!(matches!(judge(b"", None, 5), Outcome::Failed(_)));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut t = Tally { latencies: (1..=100).rev().collect(), ok: 100, ..Tally::default() };
        let line = t.summary();
        assert!(line.ends_with("\"latency_us\":{\"p50\":50,\"p99\":99,\"max\":100}}"), "{line}");
        let mut empty = Tally::default();
        assert_eq!(
            empty.summary(),
            "{\"ok\":0,\"failed\":0,\"refused\":0,\"timeouts\":0,\"by_pid\":{},\"latency_us\":{\"p50\":0,\"p99\":0,\"max\":0}}"
        );
    }

    #[test]
    fn targets() {
        assert!(matches!(parse_target("127.0.0.1:80"), Ok(Target::Tcp { .. })));
        assert!(matches!(parse_target("[::1]:80"), Ok(Target::Tcp { .. })));
        assert!(matches!(parse_target("/tmp/x.sock"), Ok(Target::Unix(_))));
        assert!(matches!(parse_target("unix:/tmp/x.sock"), Ok(Target::Unix(_))));
        assert!(matches!(parse_target("@name"), Ok(Target::Unix(_))));
        assert!(parse_target("nope:xx").is_err());
    }
}
