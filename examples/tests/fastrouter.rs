//! `fastrouter` and `subscriber` end to end: real processes on 127.0.0.1 and unix sockets
//! in a temporary directory. Backends are the workspace's `uwsgi-echo-server` (each
//! subscribed with its own `modifier1`, which the router writes into the requests it
//! forwards and the echo shows, so every response says which backend served it); requests
//! are built with `uwsgi_packet`.
//!
//! Checked: uWSGI's wrr order (weights 3 and 1 give `B A A A B A A A`, spec §2.7.1), the
//! modifier rewrite (§1.4), the key precedence (§2.8), the stats JSON (§2.12), removal on
//! the subscriber's SIGINT, a dead backend marked failed and the request retried on
//! another (§2.6), notify acknowledgements, unix sockets everywhere, SIGTERM, and invalid
//! options. Every wait is bounded; every child is killed when its guard drops.

#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the clock and short sleeps")]
#![allow(clippy::unwrap_used, clippy::print_stderr, reason = "test code")]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use uwsgi_packet::encode_packet;

const FASTROUTER: &str = env!("CARGO_BIN_EXE_fastrouter");
const SUBSCRIBER: &str = env!("CARGO_BIN_EXE_subscriber");
const ECHO: &str = env!("CARGO_BIN_EXE_uwsgi-echo-server");
/// The longest any single wait may take.
const WAIT: Duration = Duration::from_secs(10);

/// A running program: stdout lines on a channel, stderr collected; killed on drop.
struct Proc {
    name: &'static str,
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn start(name: &'static str, bin: &str, args: &[String]) -> Self {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {bin}: {e}"));
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Self { name, child, lines, seen: Vec::new(), stderr }
    }

    /// The first stdout line from `from` on that satisfies `pred`, within [`WAIT`].
    fn wait_line(&mut self, from: usize, what: &str, pred: impl Fn(&str) -> bool) -> (usize, String) {
        let deadline = Instant::now() + WAIT;
        let mut i = from;
        loop {
            while i < self.seen.len() {
                if pred(&self.seen[i]) {
                    return (i, self.seen[i].clone());
                }
                i += 1;
            }
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "{}: no {what} within {WAIT:?}; stdout: {:#?}\nstderr: {}",
                    self.name,
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    /// The value after `prefix` of the first line starting with it.
    fn announced(&mut self, prefix: &str) -> String {
        let (_, line) = self.wait_line(0, prefix, |l| l.starts_with(prefix));
        line[prefix.len()..].to_owned()
    }

    /// Number of `--events-json` lines with this `event` so far (after reading what came).
    fn count_events(&mut self, event: &str) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.iter().filter(|l| json(l)["event"] == event).count()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle`, within [`WAIT`].
    fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.stderr();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {needle:?} on stderr within {WAIT:?}: {log}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([name, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit; stderr: {}", self.name, self.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or(Value::Null)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// An echo backend on `listen`; returns it and its address as a subscriber advertises it.
fn echo(listen: &str) -> (Proc, String) {
    let mut p = Proc::start("uwsgi-echo-server", ECHO, &strings(&["--listen", listen]));
    let addr = p.announced("listening on ");
    let addr = addr.strip_prefix("unix:").map_or_else(|| addr.clone(), str::to_owned);
    (p, addr)
}

/// The router's three addresses: fastrouter, subscription server, stats.
struct Router {
    proc: Proc,
    listen: String,
    subscription: String,
    stats: String,
}

fn router(extra: &[&str]) -> Router {
    let mut args = strings(&["--fastrouter", "127.0.0.1:0", "--subscription-server", "127.0.0.1:0"]);
    args.extend(strings(&["--stats", "127.0.0.1:0"]));
    args.extend(strings(extra));
    let mut proc = Proc::start("fastrouter", FASTROUTER, &args);
    let listen = proc.announced("listening on ");
    let subscription = proc.announced("subscription server on ");
    let stats = proc.announced("stats server on ");
    Router { proc, listen, subscription, stats }
}

/// One stats document.
fn stats(addr: &str) -> Value {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stats are not JSON ({e}): {text}"))
}

/// The node names of `key` in the stats.
fn stats_nodes(doc: &Value, key: &str) -> Vec<String> {
    doc["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["key"] == key)
        .flat_map(|p| p["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_owned()))
        .collect()
}

/// Polls the stats until `pred` holds, within [`WAIT`].
fn wait_stats(addr: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let doc = stats(addr);
        if pred(&doc) {
            return doc;
        }
        assert!(Instant::now() < deadline, "no {what} within {WAIT:?}; stats: {doc:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn packet(vars: &[(&str, &str)]) -> Vec<u8> {
    let mut wire = Vec::new();
    encode_packet(0, 0, vars, &mut wire).unwrap();
    wire
}

fn closed_by_peer(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected
    )
}

/// Sends `wire` (no half-close) and reads until the router closes.
fn exchange(mut s: impl Read + Write, wire: &[u8]) -> Vec<u8> {
    match s.write_all(wire) {
        Err(e) if !closed_by_peer(&e) => panic!("write: {e}"),
        _ => {}
    }
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if closed_by_peer(&e) => return out,
            Err(e) => panic!("the router neither answered nor closed within {WAIT:?}: {e}"),
        }
    }
}

fn tcp(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// The echo's JSON from an HTTP response; `None` if the router closed without one.
fn echoed(reply: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(reply).unwrap();
    let (_, body) = text.split_once("\r\n\r\n")?;
    Some(serde_json::from_str(body).unwrap())
}

/// Routes one request with HTTP_HOST = `host` (plus `extra` vars); the serving backend's
/// modifier1 (or `None` without a response).
fn route(addr: &str, host: &str, extra: &[(&str, &str)]) -> Option<u64> {
    let mut vars = vec![("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"), ("HTTP_HOST", host)];
    vars.extend_from_slice(extra);
    let reply = exchange(tcp(addr), &packet(&vars));
    echoed(&reply).map(|e| e["modifier1"].as_u64().unwrap())
}

/// A subscriber with `--events-json`, refreshing every 60 s: after its first two rounds
/// (at start and one second later, spec §4.1) nothing is sent for a minute, so a node the
/// router removes stays removed for the test.
fn subscriber(args: &[String]) -> Proc {
    let mut all = args.to_vec();
    all.extend(strings(&["--events-json", "--subscribe-freq", "60"]));
    Proc::start("subscriber", SUBSCRIBER, &all)
}

/// Waits for the first two rounds of `n` subscriptions (spec §4.1: at start and one
/// second later).
fn wait_two_rounds(s: &mut Proc, n: usize) {
    let deadline = Instant::now() + WAIT;
    while s.count_events("sent") < 2 * n {
        assert!(Instant::now() < deadline, "no second round; stdout: {:#?}", s.seen);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Sent is not yet applied: give the router a moment to read the refreshes, so that
    // none of them re-creates a node the test is about to see removed.
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn wrr_order_stats_and_unsubscribe() {
    let (_a, addr_a) = echo("127.0.0.1:0");
    let (_b, addr_b) = echo("127.0.0.1:0");
    let mut r = router(&[]);
    let sub = &r.subscription;
    // A (modifier1 11) weight 3, B (modifier1 12) weight 1. Spec §4.1: every
    // --subscribe-to goes before every --subscribe2, so A is the first node.
    let mut s = subscriber(&[
        "--subscribe2".into(),
        format!("server={sub},key=example.com,addr={addr_b},weight=1,modifier1=12"),
        "--subscribe-to".into(),
        format!("{addr_a}={sub}:example.com,11"),
        "--weight".into(),
        "3".into(),
    ]);
    s.wait_line(0, "two sent lines", |l| json(l)["event"] == "sent" && json(l)["key"] == "example.com");
    let doc = wait_stats(&r.stats, "both nodes", |d| stats_nodes(d, "example.com").len() == 2);
    assert_eq!(stats_nodes(&doc, "example.com"), [addr_a, addr_b]);

    // Spec §2.7.1: weights 3 and 1 give B A A A B A A A.
    let order: Vec<Option<u64>> = (0..8).map(|_| route(&r.listen, "example.com", &[])).collect();
    let (a, b) = (Some(11), Some(12));
    assert_eq!(order, [b, a, a, a, b, a, a, a]);

    // Spec §2.8: UWSGI_FASTROUTER_KEY wins over HTTP_HOST; an unknown key, or none, closes
    // the connection without a response.
    assert!(route(&r.listen, "nowhere.test", &[("UWSGI_FASTROUTER_KEY", "example.com")]).is_some());
    assert_eq!(route(&r.listen, "example.com", &[("UWSGI_FASTROUTER_KEY", "nowhere.test")]), None);
    assert!(exchange(tcp(&r.listen), &packet(&[("PATH_INFO", "/")])).is_empty());

    // Spec §2.12: uWSGI 2.0.21's layout.
    let doc = stats(&r.stats);
    let keys: Vec<&str> = doc.as_object().unwrap().keys().map(String::as_str).collect();
    for k in
        ["version", "pid", "uid", "gid", "cwd", "active_sessions", "fastrouter", "subscriptions", "cheap"]
    {
        assert!(keys.contains(&k), "{k} missing: {doc:#}");
    }
    let sockets: Vec<&str> =
        doc["fastrouter"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(sockets, [r.listen.as_str(), r.subscription.as_str()]);
    assert_eq!(doc["pid"], r.proc.child.id());
    let pool = &doc["subscriptions"][0];
    assert_eq!(pool["key"], "example.com");
    assert_eq!(pool["hash"], 30778);
    assert_eq!(pool["sni_enabled"], 0);
    let nodes = pool["nodes"].as_array().unwrap();
    let field = |i: usize, k: &str| nodes[i][k].as_u64().unwrap_or_else(|| panic!("{k}: {doc:#}"));
    assert_eq!((field(0, "weight"), field(1, "weight")), (3, 1));
    assert_eq!((field(0, "modifier1"), field(1, "modifier1")), (11, 12));
    // 8 in the wrr run, then the UWSGI_FASTROUTER_KEY request (a new wrr cycle: B).
    assert_eq!((field(0, "requests"), field(1, "requests")), (6, 3));
    for (i, node) in nodes.iter().enumerate() {
        assert!(field(i, "tx") > 0 && field(i, "rx") > 0, "{doc:#}");
        assert_eq!((field(i, "ref"), field(i, "death_mark"), field(i, "failcnt")), (0, 0, 0));
        for k in ["last_check", "pid", "uid", "gid", "last_requests", "cores", "load", "wrr"] {
            assert!(node[k].is_u64(), "{k}: {doc:#}");
        }
    }
    r.proc.wait_stderr("new pool: example.com (hash key: 30778)");

    // SIGINT: the subscriber unsubscribes and exits 0; the nodes go.
    s.signal("-INT");
    assert!(s.wait_exit().success(), "{}", s.stderr());
    s.wait_line(0, "the unsubscribes", |l| json(l)["command"] == "unsubscribe");
    wait_stats(&r.stats, "no pool", |d| d["subscriptions"].as_array().unwrap().is_empty());
    assert_eq!(route(&r.listen, "example.com", &[]), None);

    // SIGTERM: the router exits 0.
    r.proc.signal("-TERM");
    assert!(r.proc.wait_exit().success());
}

#[test]
fn a_dead_backend_is_marked_failed_and_the_request_retried() {
    let (_a, addr_a) = echo("127.0.0.1:0");
    let (mut b, addr_b) = echo("127.0.0.1:0");
    let r = router(&["--fastrouter-max-retries", "2"]);
    let sub = &r.subscription;
    let mut args = Vec::new();
    for (addr, m1) in [(&addr_a, 21), (&addr_b, 22)] {
        args.push("--subscribe2".to_owned());
        args.push(format!("server={sub},key=retry.test,addr={addr},modifier1={m1}"));
    }
    let mut s = subscriber(&args);
    wait_two_rounds(&mut s, 2);
    wait_stats(&r.stats, "both nodes", |d| stats_nodes(d, "retry.test").len() == 2);

    // wrr with equal weights picks the last node first: B. B is dead: the connect fails,
    // the lease is marked failed and the request goes to a fresh pick, A.
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    assert_eq!(route(&r.listen, "retry.test", &[]), Some(21));
    r.proc.wait_stderr(&format!("unable to connect() to node \"{addr_b}\""));
    // The table applies the failure at the next lookup that walks to B (the retry's wrr
    // lookup stopped at A, which still had credit): B is marked failed and, unreferenced,
    // removed; A serves.
    assert_eq!(route(&r.listen, "retry.test", &[]), Some(21));
    r.proc.wait_stderr(&format!("retry.test => marking {addr_b} as failed"));
    let doc = stats(&r.stats);
    assert_eq!(stats_nodes(&doc, "retry.test"), [addr_a], "{doc:#}\n{}", r.proc.stderr());
    assert_eq!(route(&r.listen, "retry.test", &[]), Some(21));
}

#[test]
fn all_nodes_dead_closes_the_client_after_the_retries() {
    let (mut a, addr_a) = echo("127.0.0.1:0");
    let r = router(&["--fastrouter-max-retries", "1"]);
    let mut s = subscriber(&[
        "--subscribe2".into(),
        format!("server={},key=dead.test,addr={addr_a}", r.subscription),
    ]);
    wait_two_rounds(&mut s, 1);
    wait_stats(&r.stats, "the node", |d| stats_nodes(d, "dead.test").len() == 1);
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert_eq!(route(&r.listen, "dead.test", &[]), None);
    r.proc.wait_stderr("dead.test => marking");
}

#[test]
fn unix_sockets_everywhere_and_the_notify_ack() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let (_a, addr_a) = echo(&format!("unix:{}", p("a.sock")));
    assert!(!addr_a.contains(':'), "a unix node address: {addr_a}");
    let mut router = Proc::start(
        "fastrouter",
        FASTROUTER,
        &strings(&["--fastrouter", &p("fr.sock"), "--fastrouter-subscription-server", &p("sub.sock")]),
    );
    router.announced("subscription server on ");
    let mut s = subscriber(&[
        "--socket".into(),
        addr_a.clone(),
        "--subscribe-to".into(),
        format!("{}:unix.test,31", p("sub.sock")),
        "--notify-socket".into(),
        p("notify.sock"),
    ]);
    // Spec §1.7: the router acknowledges the new node on the subscriber's notify socket.
    let (_, ack) = s.wait_line(0, "the ack", |l| json(l)["event"] == "ack");
    assert_eq!(json(&ack)["key"], "unix.test");
    assert_eq!(json(&ack)["address"], addr_a.as_str());

    let mut stream = UnixStream::connect(p("fr.sock")).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let wire = packet(&[("REQUEST_METHOD", "GET"), ("SERVER_NAME", "unix.test")]);
    let reply = exchange(&mut stream, &wire);
    assert_eq!(echoed(&reply).map(|e| e["modifier1"].clone()), Some(Value::from(31)), "{}", router.stderr());

    s.signal("-TERM");
    assert!(s.wait_exit().success());
    assert!(!Path::new(&p("notify.sock")).exists(), "the notify socket file is removed");
    router.signal("-INT");
    assert!(router.wait_exit().success());
    assert!(!Path::new(&p("fr.sock")).exists() && !Path::new(&p("sub.sock")).exists());
}

#[test]
fn start_unsubscribed_waits_for_sigusr1() {
    let r = router(&[]);
    let mut s = subscriber(&[
        "--start-unsubscribed".into(),
        "--subscribe2".into(),
        format!("server={},key=late.test,addr=127.0.0.1:1", r.subscription),
    ]);
    s.wait_line(0, "started", |l| json(l)["event"] == "started");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.count_events("sent"), 0);
    s.signal("-USR1");
    s.wait_line(0, "a sent line", |l| json(l)["event"] == "sent");
    wait_stats(&r.stats, "the node", |d| stats_nodes(d, "late.test").len() == 1);
}

#[test]
fn invalid_options_exit_2_naming_the_option() {
    let run = |bin: &str, args: &[&str]| {
        let out = Command::new(bin).args(args).stdin(Stdio::null()).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for (bin, args, option) in [
        (
            FASTROUTER,
            &["--fastrouter", "127.0.0.1:0", "--subscription-algo", "fastest"][..],
            "--subscription-algo",
        ),
        (FASTROUTER, &["--fastrouter", "127.0.0.1:0", "--security", "lax"][..], "--security"),
        (
            FASTROUTER,
            &["--fastrouter", "127.0.0.1:0", "--subscriptions-sign-check", "NOPE:/tmp"][..],
            "--subscriptions-sign-check",
        ),
        (
            FASTROUTER,
            &["--fastrouter", "127.0.0.1:0", "--fastrouter-timeout", "0"][..],
            "--fastrouter-timeout",
        ),
        (FASTROUTER, &["--subscription-server", "127.0.0.1:0"][..], "--fastrouter"),
        (SUBSCRIBER, &["--subscribe-to", "127.0.0.1:2626"][..], "--subscribe-to"),
        (SUBSCRIBER, &["--subscribe2", "key=k"][..], "--subscribe2"),
        (SUBSCRIBER, &["--subscribe-to", "127.0.0.1:2626:k"][..], "--subscribe-to"),
        (SUBSCRIBER, &["--subscribe-freq", "0", "--st", "a=127.0.0.1:2626:k"][..], "--subscribe-freq"),
        (SUBSCRIBER, &[][..], "nothing to subscribe"),
    ] {
        let (code, stderr) = run(bin, args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(option), "{args:?}: {stderr}");
    }
}

#[test]
fn sighup_reloads_and_sigtstp_pauses_and_resumes() {
    let r = router(&[]);
    let mut s = subscriber(&[
        "--unsubscribe-on-graceful-reload".into(),
        "--subscribe2".into(),
        format!("server={},key=sig.test,addr=127.0.0.1:1", r.subscription),
    ]);
    let (at, _) = s.wait_line(0, "started", |l| json(l)["event"] == "started");
    let (at, _) = s.wait_line(at, "the first subscribe", |l| json(l)["command"] == "subscribe");
    wait_stats(&r.stats, "the node", |d| stats_nodes(d, "sig.test").len() == 1);

    // Spec §4.1: a graceful reload unsubscribes (with the option), then starts over.
    s.signal("-HUP");
    let (at, _) = s.wait_line(at + 1, "reloaded", |l| json(l)["event"] == "reloaded");
    let (i, _) = s.wait_line(at, "the reload's unsubscribe", |l| json(l)["command"] == "unsubscribe");
    let (at, _) = s.wait_line(i, "the reload's subscribe", |l| json(l)["command"] == "subscribe");

    // SIGTSTP pauses (unsubscribes), SIGTSTP again resumes (subscribes at once).
    s.signal("-TSTP");
    let (at, _) = s.wait_line(at, "paused", |l| json(l)["event"] == "paused");
    wait_stats(&r.stats, "no node", |d| stats_nodes(d, "sig.test").is_empty());
    s.signal("-TSTP");
    s.wait_line(at, "resumed", |l| json(l)["event"] == "resumed");
    wait_stats(&r.stats, "the node again", |d| stats_nodes(d, "sig.test").len() == 1);
}
