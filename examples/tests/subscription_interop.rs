//! Interop tests of record for the subscription system (spec `subscription.md`): the real
//! uWSGI 2.0.21 and the workspace's `fastrouter` and `subscriber`, both ways, on 127.0.0.1.
//!
//! | test | checks |
//! |---|---|
//! | `real_backends_subscribe_to_our_fastrouter_in_uwsgi_wrr_order` | 3 real uWSGI backends (`--subscribe2 …,weight=3`, `--subscribe-to`, `--subscribe2 …,weight=2`) subscribe to our `fastrouter`; its stats list them (weights, `hash` 30778); requests through it follow uWSGI's wrr (A=3,B=1: `B A A A B A A A`; C=2 joins at the next reset: `C A A A B C`, §2.7.1); stats `requests` 12/4/4; SIGINT of B unsubscribes it: gone from the stats, logged, requests never reach it again (A=3,C=2 then alternate: integer credits 3/2 = 2/2 = 1) |
//! | `our_subscriber_and_a_hand_built_packet_subscribe_to_the_real_fastrouter` | our `subscriber` (`--subscribe2 …,weight=2`) and a datagram from `wire::encode` subscribe real uWSGI backends' addresses to the real fastrouter: its stats show the nodes and weights, real requests reach those backends; our subscriber's SIGINT and a hand-built unsubscribe remove them |
//! | `real_backends_sign_their_subscriptions_to_our_fastrouter` | our `fastrouter --subscriptions-sign-check SHA1:DIR`: an unsigned and a wrongly signed (other key) real backend are refused, before and after the pool exists; the one signed with the test key is accepted and serves every request; its signed unsubscribe (SIGINT) removes it |
//! | `our_subscriber_signs_for_the_real_fastrouter` | the real fastrouter with `--subscriptions-sign-check SHA1:DIR`: our signed `subscriber` is accepted (stats, requests reach the backend); our unsigned one and a hand-built datagram with a signature of other bytes are refused; a hand-built signed subscribe/unsubscribe (`sign_request`) pair is accepted; our subscriber's signed unsubscribe removes its node |
//! | `a_killed_real_backend_expires_from_our_fastrouter` | `--subscription-tolerance 3`: SIGKILL of a real backend (`--subscribe-freq 1`); its node stays listed until a request comes after the tolerance (lazy expiry, §2.5), which marks it failed as expired (not as a connect failure) and is served by the live backend |
//! | `a_killed_subscriber_expires_from_the_real_fastrouter` | the same with SIGKILL of our `subscriber` and the real fastrouter; the backend it announced keeps serving until the expiry |
//!
//! Backends are real uWSGI instances (python3 plugin) serving `tests/data/node_app.py`,
//! which answers `node=<NODE> host=<HTTP_HOST>`: every response says which backend a
//! router chose. Requests are uwsgi packets built with `uwsgi_packet`. The routers' state
//! comes from their stats JSON (§2.12) and stderr; our subscriber's from `--events-json`;
//! our fastrouter runs with `RUST_LOG=subscription_proto=debug` so that its refusals are
//! logged (uWSGI drops bad signatures silently).
//!
//! Every test has its own ports (uWSGI needs explicit ones: found by binding port 0 and
//! releasing it; a uWSGI that loses the race is restarted on fresh ports) and temporary
//! directory, so the tests run in parallel. Every wait is bounded; every child runs in its
//! own process group and is stopped when the test ends (SIGINT, then SIGKILL of the group
//! after 3 s). A missing `uwsgi` is a failure, not a skip (`common::require_program`). A
//! failing test prints the tail of every process's stderr and stdout.
//!
//! Runtime: about 11 s for the file with cargo's default of one test thread per CPU (2
//! here), about 7 s with all six at once; the expiry tests are the longest (about 7 s
//! each: a 5 s wait past the 3 s tolerance, spec §2.5).

// Tests drive real processes: they bound their waits with the clock and short sleeps and
// stamp signed datagrams with the wall clock.
#![allow(
    clippy::disallowed_methods,
    reason = "tests bound their waits with the clock and short sleeps, and stamp signed datagrams"
)]
#![allow(
    clippy::disallowed_types,
    reason = "tests find free UDP ports and send hand-built datagrams with std's UDP socket"
)]
#![allow(clippy::unwrap_used, reason = "test code: a failed unwrap is a failed test")]

mod common;

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use subscription_proto::Request;
use subscription_proto::request::Command as Cmd;
use subscription_proto::sign::{Digest, Signer, sign_request, unix_stamp};
use subscription_proto::wire;
use uwsgi_packet::encode_packet;

const FASTROUTER: &str = env!("CARGO_BIN_EXE_fastrouter");
const SUBSCRIBER: &str = env!("CARGO_BIN_EXE_subscriber");
/// The shared test vectors: signing keys (README there).
const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/subscription");
/// The longest any single wait may take.
const WAIT: Duration = Duration::from_secs(10);
/// How often state is polled.
const POLL: Duration = Duration::from_millis(50);
/// How long a stopped process gets between SIGINT and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// `--subscription-tolerance` of the expiry tests (both routers).
const TOLERANCE: u64 = 3;
/// How long after the last possible refresh a node is surely past the tolerance: the
/// routers count whole seconds and expire at age > tolerance (spec §2.5), and the last
/// refresh came at most about a second before the kill.
const PAST_TOLERANCE: Duration = Duration::from_secs(TOLERANCE + 2);
/// How many times a uWSGI that lost a port race is restarted.
const PORT_ATTEMPTS: usize = 3;

// ----- processes and their output ------------------------------------------------------

/// Lines of a child's output, filled by a reader thread as they arrive (so a line may be
/// seen a little after the router acted on it: wait for lines, never just look).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>, Arc<AtomicBool>);

impl Lines {
    fn follow(from: impl Read + Send + 'static) -> Self {
        let lines = Self::default();
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                sink.0.lock().unwrap().push(line);
            }
            sink.1.store(true, Ordering::Release);
        });
        lines
    }

    /// Waits (at most `limit`) until the writers closed the pipe: every line is in.
    fn wait_closed(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.1.load(Ordering::Acquire) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
    }

    fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|l| pred(l)).count()
    }

    fn contains(&self, needle: &str) -> bool {
        self.count(|l| l.contains(needle)) > 0
    }
}

/// A child process in its own process group (a uWSGI master and its workers, or one of
/// our programs), with its stdout and stderr.
struct Proc {
    label: String,
    child: Mutex<Child>,
    /// Set once the child is reaped: from then on its pid may be reused and is never
    /// signalled again.
    exit: Mutex<Option<ExitStatus>>,
    stdout: Lines,
    stderr: Lines,
}

impl Proc {
    fn spawn(label: String, mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{label}: cannot start {cmd:?}: {e}"));
        let stdout = Lines::follow(child.stdout.take().unwrap());
        let stderr = Lines::follow(child.stderr.take().unwrap());
        Self { label, child: Mutex::new(child), exit: Mutex::new(None), stdout, stderr }
    }

    fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    fn alive(&self) -> bool {
        let mut exit = self.exit.lock().unwrap();
        if exit.is_none() {
            *exit = self.child.lock().unwrap().try_wait().unwrap();
        }
        exit.is_none()
    }

    /// Sends `signal` (`-INT`, …) to the process (a uWSGI master: the instance).
    fn signal(&self, signal: &str) {
        assert!(self.alive(), "{}: already exited, cannot send {signal}", self.label);
        let status = Command::new("kill").args([signal, &self.pid().to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {} failed", self.label);
    }

    /// SIGKILL of the whole process group (a uWSGI master and its workers: nothing is sent,
    /// nothing keeps serving), then reaps the leader. The group is signalled only while its
    /// leader is unreaped, so its id cannot belong to anyone else.
    fn kill_group(&self) {
        let mut exit = self.exit.lock().unwrap();
        if exit.is_some() {
            return;
        }
        let mut child = self.child.lock().unwrap();
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
        let _ = child.kill();
        *exit = Some(child.wait().unwrap());
    }

    fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while self.alive() {
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
        *self.exit.lock().unwrap()
    }

    /// Our subscriber's `--events-json` lines of `event` (and `command`, if given).
    fn events(&self, event: &str, command: Option<&str>) -> usize {
        self.stdout.count(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
            v["event"] == event && command.is_none_or(|c| v["command"] == c)
        })
    }

    /// For failure messages: the state and the tails of stderr and stdout.
    fn report(&self, out: &mut String) {
        let state = match *self.exit.lock().unwrap() {
            Some(status) => format!("exited: {status}"),
            None => "running".to_owned(),
        };
        let _ = writeln!(out, "=== {} (pid {}, {state})", self.label, self.pid());
        for (name, lines) in [("stderr", &self.stderr), ("stdout", &self.stdout)] {
            let lines = lines.snapshot();
            if lines.is_empty() {
                continue;
            }
            // uWSGI's banner ends with the worker spawn; what follows is the interesting part.
            let banner = lines.iter().rposition(|l| l.starts_with("spawned uWSGI")).map_or(0, |i| i + 1);
            let tail = banner.max(lines.len().saturating_sub(40)).min(lines.len());
            let _ = writeln!(out, "--- {name}, last {} of {} lines:", lines.len() - tail, lines.len());
            for l in &lines[tail..] {
                let _ = writeln!(out, "{l}");
            }
        }
    }
}

/// A router: where it takes uwsgi requests, subscriptions and stats connections.
struct Router {
    proc: Rc<Proc>,
    listen: String,
    subscription: String,
    stats: String,
}

/// A real uWSGI backend serving `node_app.py` as `NODE=name`.
struct Backend {
    proc: Rc<Proc>,
    /// `127.0.0.1:PORT`, as it subscribes itself.
    addr: String,
}

/// One test's processes and temporary directory. Dropping it stops every process (SIGINT
/// to all, then SIGKILL of the groups still there after [`STOP_GRACE`]), then removes the
/// directory.
struct Scene {
    procs: Vec<Rc<Proc>>,
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("subscription-interop-").tempdir().unwrap();
        Self { procs: Vec::new(), dir }
    }

    fn add(&mut self, proc: Proc) -> Rc<Proc> {
        let proc = Rc::new(proc);
        self.procs.push(Rc::clone(&proc));
        proc
    }

    /// Every process's state, for failure messages.
    fn report(&self) -> String {
        let mut out = String::new();
        for p in &self.procs {
            p.alive();
            p.report(&mut out);
        }
        out
    }

    /// Polls `probe` every [`POLL`] until it gives a value; panics after `limit` with
    /// `what`, the probe's last complaint and the report.
    fn wait<T>(&self, limit: Duration, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            match probe() {
                Ok(v) => return v,
                Err(why) if Instant::now() >= deadline => {
                    panic!("{what}: not within {limit:?}: {why}\n{}", self.report())
                }
                Err(_) => thread::sleep(POLL),
            }
        }
    }

    /// Waits until `proc` logged a line containing `needle` on stderr.
    fn wait_log(&self, proc: &Proc, needle: &str) {
        self.wait(WAIT, &format!("{}: a log line with {needle:?}", proc.label), || {
            proc.stderr.contains(needle).then_some(()).ok_or_else(|| "not logged".to_owned())
        });
    }

    /// Panics with `message` and the report unless `ok`.
    fn check(&self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            panic!("{}\n{}", message(), self.report());
        }
    }

    // ----- our programs -----

    /// Our `fastrouter` on port 0 everywhere, its refusals logged.
    fn our_fastrouter(&mut self, extra: &[String]) -> Router {
        let mut cmd = Command::new(FASTROUTER);
        cmd.args(["--fastrouter", "127.0.0.1:0", "--subscription-server", "127.0.0.1:0"])
            .args(["--stats", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "subscription_proto=debug")
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path());
        let proc = self.add(Proc::spawn("our fastrouter".into(), cmd));
        let announced = |prefix: &str| {
            self.wait(WAIT, &format!("our fastrouter: {prefix:?} on stdout"), || {
                self.check(proc.alive(), || "our fastrouter exited at start".into());
                proc.stdout
                    .snapshot()
                    .iter()
                    .find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
                    .ok_or_else(|| "not printed".to_owned())
            })
        };
        let listen = announced("listening on ");
        let subscription = announced("subscription server on ");
        let stats = announced("stats server on ");
        Router { proc, listen, subscription, stats }
    }

    /// Our `subscriber` with `--events-json`.
    fn subscriber(&mut self, label: &str, args: &[String]) -> Rc<Proc> {
        let mut cmd = Command::new(SUBSCRIBER);
        cmd.args(args).arg("--events-json").current_dir(self.dir.path());
        let proc = self.add(Proc::spawn(format!("our subscriber {label}"), cmd));
        self.wait(WAIT, &format!("{}: the started event", proc.label), || {
            self.check(proc.alive(), || format!("{} exited at start", proc.label));
            (proc.events("started", None) > 0).then_some(()).ok_or_else(|| "not yet".to_owned())
        });
        proc
    }

    // ----- real uWSGI -----

    /// Starts a uWSGI (`args` built from fresh `ports`, `tcp` TCP then `udp` UDP ones)
    /// until one gets its ports, and waits for `ready`.
    fn uwsgi(
        &mut self,
        label: &str,
        (tcp, udp): (usize, usize),
        env: &[(&str, &str)],
        args: impl Fn(&[u16]) -> Vec<String>,
        ready: impl Fn(&Proc, &[u16]) -> bool,
    ) -> (Rc<Proc>, Vec<u16>) {
        let uwsgi = common::require_program("uwsgi");
        for attempt in 1..=PORT_ATTEMPTS {
            let ports = [free_tcp_ports(tcp), free_udp_ports(udp)].concat();
            let mut cmd = Command::new(&uwsgi);
            cmd.args(args(&ports)).envs(env.iter().copied()).current_dir(self.dir.path());
            let proc = self.add(Proc::spawn(format!("uwsgi {label} {ports:?}"), cmd));
            let deadline = Instant::now() + WAIT;
            loop {
                if ready(&proc, &ports) {
                    return (proc, ports);
                }
                if !proc.alive() {
                    proc.stderr.wait_closed(Duration::from_secs(2));
                    if attempt < PORT_ATTEMPTS && proc.stderr.contains("Address already in use") {
                        break;
                    }
                    panic!("{label}: uWSGI exited during startup\n{}", self.report());
                }
                if Instant::now() >= deadline {
                    panic!("{label}: uWSGI was not ready within {WAIT:?}\n{}", self.report());
                }
                thread::sleep(POLL);
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// A real uWSGI backend serving `node_app.py` with `NODE=node`, plus `extra` options
    /// (its subscriptions).
    fn backend(&mut self, node: &str, extra: &[String]) -> Backend {
        let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/node_app.py");
        let args = |ports: &[u16]| {
            let mut args = strings(&["--plugin", "python3", "--master", "--die-on-term", "--socket"]);
            args.push(format!("127.0.0.1:{}", ports[0]));
            args.extend(["--wsgi-file".into(), app.display().to_string()]);
            args.extend_from_slice(extra);
            args
        };
        let ready = |p: &Proc, _: &[u16]| p.stderr.contains("spawned uWSGI worker 1");
        let (proc, ports) = self.uwsgi(&format!("backend {node}"), (1, 0), &[("NODE", node)], args, ready);
        Backend { proc, addr: format!("127.0.0.1:{}", ports[0]) }
    }

    /// The real uWSGI fastrouter (spec §7 recipe A) plus `extra` options.
    fn real_fastrouter(&mut self, extra: &[String]) -> Router {
        let args = |ports: &[u16]| {
            let mut args = strings(&["--plugin", "fastrouter", "--master", "--die-on-term"]);
            for (opt, port) in [
                ("--fastrouter", ports[0]),
                ("--fastrouter-stats", ports[1]),
                ("--fastrouter-subscription-server", ports[2]),
            ] {
                args.extend([opt.to_owned(), format!("127.0.0.1:{port}")]);
            }
            args.extend_from_slice(extra);
            args
        };
        let ready = |_: &Proc, ports: &[u16]| stats(&format!("127.0.0.1:{}", ports[1])).is_ok();
        let (proc, ports) = self.uwsgi("fastrouter", (2, 1), &[], args, ready);
        let [listen, stats, subscription] = [0, 1, 2].map(|i| format!("127.0.0.1:{}", ports[i]));
        Router { proc, listen, subscription, stats }
    }

    // ----- routers' state and requests -----

    /// One stats document of the router at `addr`.
    fn stats(&self, addr: &str) -> Value {
        stats(addr).unwrap_or_else(|e| panic!("stats of {addr}: {e}\n{}", self.report()))
    }

    /// Waits until the stats at `addr` list exactly `want` (in order) for `key` (nothing:
    /// no pool); returns the document.
    fn wait_nodes(&self, addr: &str, key: &str, want: &[&str]) -> Value {
        self.wait(WAIT, &format!("stats of {addr}: {key} => {want:?}"), || {
            let doc = stats(addr)?;
            if node_names(&doc, key) == want {
                Ok(doc)
            } else {
                Err(format!("{key} => {:?}; stats: {doc:#}", node_names(&doc, key)))
            }
        })
    }

    /// One request for `host` through the router at `addr`: the responding backend's
    /// name, or `None` if the router closed the connection without a response.
    fn route(&self, addr: &str, host: &str) -> Option<String> {
        route(addr, host).unwrap_or_else(|e| panic!("request for {host} via {addr}: {e}\n{}", self.report()))
    }

    /// `n` requests for `host`: the responding backends' names (`-` for no response).
    fn routes(&self, addr: &str, host: &str, n: usize) -> Vec<String> {
        (0..n).map(|_| self.route(addr, host).unwrap_or_else(|| "-".into())).collect()
    }

    /// A directory with the public keys of `secure.test` and `secure.test:8000` (the shared
    /// vectors' `secure.test.pem`), for `--subscriptions-sign-check SHA1:DIR`.
    fn public_keys(&self) -> String {
        let dir = self.dir.path().join("pub");
        std::fs::create_dir(&dir).unwrap();
        for name in ["secure.test.pem", "secure.test_8000.pem"] {
            std::fs::copy(vector_key(name), dir.join(name)).unwrap();
        }
        dir.display().to_string()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let live: Vec<&Rc<Proc>> = self.procs.iter().filter(|p| p.alive()).collect();
        for p in &live {
            let _ = Command::new("kill").args(["-INT", &p.pid().to_string()]).status();
        }
        let deadline = Instant::now() + STOP_GRACE;
        while live.iter().any(|p| p.alive()) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        for p in live {
            p.kill_group();
        }
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// `n` TCP ports free on 127.0.0.1 right now (all bound at once, so distinct).
fn free_tcp_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// `n` UDP ports free on 127.0.0.1 right now.
fn free_udp_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    sockets.iter().map(|s| s.local_addr().unwrap().port()).collect()
}

fn vector_key(name: &str) -> PathBuf {
    let path = Path::new(VECTORS).join("keys").join(name);
    assert!(
        path.is_file(),
        "{} not found: the project's shared/ folder (vectors/subscription/keys) must sit beside the checkout",
        path.display()
    );
    path
}

/// The test-only private key whose public half is `secure.test.pem`.
fn test_private_key() -> String {
    vector_key("TEST-ONLY-subscriber-private.pem").display().to_string()
}

/// Another private key: signatures made with it do not verify with `secure.test.pem`.
fn wrong_private_key() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/TEST-ONLY-wrong-private.pem").display().to_string()
}

fn stats(addr: &str) -> Result<Value, String> {
    let sa: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))
}

/// The pool `key` of a stats document.
fn pool<'a>(doc: &'a Value, key: &str) -> Option<&'a Value> {
    doc["subscriptions"].as_array()?.iter().find(|p| p["key"] == key)
}

/// The node names of pool `key`, in table order (none without the pool).
fn node_names(doc: &Value, key: &str) -> Vec<String> {
    pool(doc, key)
        .and_then(|p| p["nodes"].as_array())
        .map(|nodes| nodes.iter().map(|n| n["name"].as_str().unwrap_or("?").to_owned()).collect())
        .unwrap_or_default()
}

/// Field `field` of node `name` in pool `key`.
fn node_field(doc: &Value, key: &str, name: &str, field: &str) -> Option<u64> {
    pool(doc, key)?["nodes"].as_array()?.iter().find(|n| n["name"] == name)?[field].as_u64()
}

fn closed_by_peer(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected
    )
}

/// Sends a uwsgi request for `host` and reads until the router closes.
fn route(addr: &str, host: &str) -> Result<Option<String>, String> {
    let sa: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&sa, WAIT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
    let vars = [
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/"),
        ("PATH_INFO", "/"),
        ("QUERY_STRING", ""),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("SERVER_NAME", host),
        ("SERVER_PORT", "80"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("HTTP_HOST", host),
    ];
    let mut wire = Vec::new();
    encode_packet(0, 0, &vars, &mut wire).map_err(|e| format!("encode: {e}"))?;
    match s.write_all(&wire) {
        Err(e) if !closed_by_peer(&e) => return Err(format!("write: {e}")),
        _ => {}
    }
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if closed_by_peer(&e) => break,
            Err(e) => return Err(format!("neither a response nor a close within {WAIT:?}: {e}")),
        }
    }
    if reply.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&reply);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).ok_or_else(|| format!("not HTTP: {text:?}"))?;
    let node = body
        .strip_prefix("node=")
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| format!("not node_app.py's answer: {text:?}"))?;
    if !body.contains(&format!("host={host}")) {
        return Err(format!("the backend saw another host: {text:?}"));
    }
    Ok(Some(node.to_owned()))
}

/// Sends one hand-built datagram to a subscription server.
fn send_datagram(server: &str, datagram: &[u8]) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = socket.send_to(datagram, server).unwrap();
    assert_eq!(sent, datagram.len());
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn request(key: &str, address: &str, weight: u64) -> Request {
    Request {
        key: key.as_bytes().to_vec(),
        address: address.as_bytes().to_vec(),
        cores: 1,
        weight,
        ..Request::default()
    }
}

/// Our fastrouter's refusals (its driver's debug log) with `reason`; `signed` tells those
/// of datagrams with a signature (an RSA-2048 `sign` pair makes them over 300 bytes) from
/// unsigned ones.
fn refusals(router: &Proc, reason: &str, signed: bool) -> usize {
    router.stderr.count(|l| {
        let len = l.split("len=").nth(1).and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(0);
        l.contains("subscription datagram rejected")
            && l.contains(&format!("reason=\"{reason}\""))
            && (len > 300) == signed
    })
}

// ----- tests -----------------------------------------------------------------------------

#[test]
fn real_backends_subscribe_to_our_fastrouter_in_uwsgi_wrr_order() {
    let mut scene = Scene::new();
    let r = scene.our_fastrouter(&[]);
    let sub = r.subscription.clone();
    // One subscription per uWSGI instance, so 2.0.21's process-global subscribe2 weight
    // (spec §4.3) cannot leak into another one; B's --subscribe-to sends weight 0, stored
    // as 1. Each waits for the previous one to be in the table: the table order is the
    // subscription order, and wrr depends on it.
    let a = scene.backend("A", &["--subscribe2".into(), format!("server={sub},key=example.com,weight=3")]);
    scene.wait_nodes(&r.stats, "example.com", &[&a.addr]);
    let b = scene.backend("B", &["--subscribe-to".into(), format!("{sub}:example.com")]);
    let doc = scene.wait_nodes(&r.stats, "example.com", &[&a.addr, &b.addr]);
    let p = pool(&doc, "example.com").unwrap();
    scene.check(p["hash"] == 30778 && p["sni_enabled"] == 0, || format!("pool fields: {doc:#}"));
    for (addr, weight) in [(&a.addr, 3), (&b.addr, 1)] {
        let f = |k: &str| node_field(&doc, "example.com", addr, k);
        let got = (f("weight"), f("cores"), f("modifier1"), f("death_mark"), f("ref"));
        scene.check(got == (Some(weight), Some(1), Some(0), Some(0), Some(0)), || {
            format!("{addr}: (weight, cores, modifier1, death_mark, ref) = {got:?}; stats: {doc:#}")
        });
    }
    scene.wait_log(&r.proc, "new pool: example.com (hash key: 30778)");
    for addr in [&a.addr, &b.addr] {
        scene.wait_log(&r.proc, &format!("example.com => new node: {addr}"));
    }

    // Spec §2.7.1: weights 3 and 1 give B A A A B A A A.
    let order = scene.routes(&r.listen, "example.com", 8);
    scene.check(order == ["B", "A", "A", "A", "B", "A", "A", "A"], || {
        format!("A=3, B=1: responses in the order {order:?}, not B A A A B A A A")
    });

    // C (weight 2) joins with no credit; at the next reset (every credit spent) the
    // credits are A 3, B 1, C 2 and the last node goes first: C A A A B C, twice.
    let c = scene.backend("C", &["--subscribe2".into(), format!("server={sub},key=example.com,weight=2")]);
    scene.wait_nodes(&r.stats, "example.com", &[&a.addr, &b.addr, &c.addr]);
    let order = scene.routes(&r.listen, "example.com", 12);
    let cycle = ["C", "A", "A", "A", "B", "C"];
    scene.check(order == [cycle, cycle].concat(), || {
        format!("A=3, B=1, C=2: responses in the order {order:?}, not {cycle:?} twice")
    });
    let doc = scene.stats(&r.stats);
    let served: Vec<Option<u64>> =
        [&a.addr, &b.addr, &c.addr].iter().map(|n| node_field(&doc, "example.com", n, "requests")).collect();
    scene.check(served == [Some(12), Some(4), Some(4)], || {
        format!("stats requests of A, B, C: {served:?}, not 12, 4, 4: {doc:#}")
    });

    // SIGINT: B unsubscribes (spec §4.1) and, with no request in flight, goes at once.
    b.proc.signal("-INT");
    scene.wait_nodes(&r.stats, "example.com", &[&a.addr, &c.addr]);
    let marked = format!("example.com => marking {} as failed (unsubscribed)", b.addr);
    scene.wait_log(&r.proc, &marked);
    // Every credit was spent; the next resets are over A 3 and C 2 only: the smallest
    // weight is 2 now, so the integer credits are 3/2 = 1 and 2/2 = 1 and C and A alternate
    // (uWSGI's A=3,B=2 → B A B A, spec §2.7.1).
    let order = scene.routes(&r.listen, "example.com", 6);
    scene.check(order == ["C", "A", "C", "A", "C", "A"], || {
        format!("after B's unsubscribe, A=3, C=2: responses in the order {order:?}, not C A C A C A")
    });
    let status = b.proc.wait_exit(WAIT);
    scene.check(status.is_some(), || "backend B did not exit on SIGINT".into());
}

#[test]
fn our_subscriber_and_a_hand_built_packet_subscribe_to_the_real_fastrouter() {
    let mut scene = Scene::new();
    let r = scene.real_fastrouter(&[]);
    let x = scene.backend("X", &[]);
    let y = scene.backend("Y", &[]);

    // Our subscriber announces X's address (spec §4.3 subscribe2).
    let s = scene.subscriber(
        "X",
        &["--subscribe2".into(), format!("server={},key=ours.test,addr={},weight=2", r.subscription, x.addr)],
    );
    let doc = scene.wait_nodes(&r.stats, "ours.test", &[&x.addr]);
    let weight = node_field(&doc, "ours.test", &x.addr, "weight");
    scene
        .check(weight == Some(2), || format!("the real fastrouter stores weight {weight:?}, not 2: {doc:#}"));
    let order = scene.routes(&r.listen, "ours.test", 2);
    scene.check(order == ["X", "X"], || format!("requests for ours.test reached {order:?}, not X"));

    // A datagram built by the codec announces Y's address.
    let hand = request("hand.test", &y.addr, 3);
    send_datagram(&r.subscription, &wire::encode(Cmd::Subscribe, &hand).unwrap());
    let doc = scene.wait_nodes(&r.stats, "hand.test", &[&y.addr]);
    let weight = node_field(&doc, "hand.test", &y.addr, "weight");
    scene
        .check(weight == Some(3), || format!("the real fastrouter stores weight {weight:?}, not 3: {doc:#}"));
    let order = scene.routes(&r.listen, "hand.test", 2);
    scene.check(order == ["Y", "Y"], || format!("requests for hand.test reached {order:?}, not Y"));
    let doc = scene.stats(&r.stats);
    let requests = node_field(&doc, "ours.test", &x.addr, "requests");
    scene.check(requests == Some(2), || format!("X served {requests:?} requests, not 2: {doc:#}"));

    // Our subscriber's SIGINT: it unsubscribes and exits 0; the real router drops the node
    // and the pool, and requests for the key get no response.
    s.signal("-INT");
    let status = s.wait_exit(WAIT);
    scene.check(status.is_some_and(|s| s.success()), || {
        format!("our subscriber's exit on SIGINT: {status:?}")
    });
    scene.wait(WAIT, "our subscriber's unsubscribe event", || {
        let n = s.events("sent", Some("unsubscribe"));
        (n == 1).then_some(()).ok_or_else(|| format!("{n} unsubscribe events"))
    });
    scene.wait_nodes(&r.stats, "ours.test", &[]);
    let marked = format!("ours.test => marking {} as failed", x.addr);
    scene.wait_log(&r.proc, &marked);
    let got = scene.route(&r.listen, "ours.test");
    scene.check(got.is_none(), || format!("a request for the unsubscribed ours.test reached {got:?}"));

    // A hand-built unsubscribe (header byte 3 = 1) removes Y.
    send_datagram(&r.subscription, &wire::encode(Cmd::Unsubscribe, &hand).unwrap());
    scene.wait_nodes(&r.stats, "hand.test", &[]);
    let got = scene.route(&r.listen, "hand.test");
    scene.check(got.is_none(), || format!("a request for the unsubscribed hand.test reached {got:?}"));
}

#[test]
fn real_backends_sign_their_subscriptions_to_our_fastrouter() {
    let mut scene = Scene::new();
    let keys = scene.public_keys();
    let r = scene.our_fastrouter(&["--subscriptions-sign-check".into(), format!("SHA1:{keys}")]);
    let sub = r.subscription.clone();
    let freq = ["--subscribe-freq".to_owned(), "1".to_owned()];

    // Unsigned, and signed with a key that is not secure.test's: refused while there is no
    // pool (a new pool needs a valid signature, spec §3.3).
    let mut unsigned = vec!["--subscribe-to".into(), format!("{sub}:secure.test")];
    unsigned.extend_from_slice(&freq);
    let _u = scene.backend("U", &unsigned);
    let mut wrong =
        vec!["--subscribe-to".into(), format!("{sub}:secure.test,0,SHA1:{}", wrong_private_key())];
    wrong.extend_from_slice(&freq);
    let _w = scene.backend("W", &wrong);
    let refused = || (refusals(&r.proc, "bad_signature", false), refusals(&r.proc, "bad_signature", true));
    scene.wait(WAIT, "our fastrouter refuses the unsigned and the wrongly signed subscription", || {
        let (u, w) = refused();
        (u >= 1 && w >= 1).then_some(()).ok_or_else(|| format!("refused: {u} unsigned, {w} wrongly signed"))
    });
    let doc = scene.stats(&r.stats);
    scene.check(pool(&doc, "secure.test").is_none(), || format!("a pool without a valid signature: {doc:#}"));

    // Signed with the test key (spec §3.1, the --subscribe-to form): accepted.
    let mut signed =
        vec!["--subscribe-to".into(), format!("{sub}:secure.test,0,SHA1:{}", test_private_key())];
    signed.extend_from_slice(&freq);
    let s = scene.backend("S", &signed);
    scene.wait_nodes(&r.stats, "secure.test", &[&s.addr]);

    // The others keep trying every second, now against the existing pool: still refused.
    let (u0, w0) = refused();
    scene.wait(WAIT, "our fastrouter refuses them again once the pool exists", || {
        let (u, w) = refused();
        (u >= u0 + 2 && w >= w0 + 2)
            .then_some(())
            .ok_or_else(|| format!("refused since: {} unsigned, {} wrongly signed", u - u0, w - w0))
    });
    let doc = scene.stats(&r.stats);
    scene.check(node_names(&doc, "secure.test") == [s.addr.as_str()], || {
        format!("the unsigned or the wrongly signed subscription was accepted: {doc:#}")
    });
    let order = scene.routes(&r.listen, "secure.test", 4);
    scene.check(order == ["S", "S", "S", "S"], || {
        format!("requests for secure.test reached {order:?}, not S")
    });

    // S's signed unsubscribe (stamp now + 1, spec §3.2) removes it.
    s.proc.signal("-INT");
    scene.wait_nodes(&r.stats, "secure.test", &[]);
    let marked = format!("secure.test => marking {} as failed (unsubscribed)", s.addr);
    scene.wait_log(&r.proc, &marked);
    let got = scene.route(&r.listen, "secure.test");
    scene.check(got.is_none(), || format!("a request for secure.test reached {got:?} after the unsubscribe"));
}

#[test]
fn our_subscriber_signs_for_the_real_fastrouter() {
    let mut scene = Scene::new();
    let keys = scene.public_keys();
    let r = scene.real_fastrouter(&["--subscriptions-sign-check".into(), format!("SHA1:{keys}")]);
    let x = scene.backend("X", &[]);
    let y = scene.backend("Y", &[]);
    let sub = r.subscription.clone();

    // Signed (spec §3.1, subscribe2 `sign=`): accepted.
    let s = scene.subscriber(
        "signed",
        &[
            "--subscribe2".into(),
            format!("server={sub},key=secure.test,addr={},sign=SHA1:{}", x.addr, test_private_key()),
        ],
    );
    scene.wait_nodes(&r.stats, "secure.test", &[&x.addr]);

    // Unsigned: refused (uWSGI drops it silently, spec §3.4).
    let u = scene.subscriber(
        "unsigned",
        &["--subscribe2".into(), format!("server={sub},key=secure.test,addr={}", y.addr)],
    );
    scene.wait(WAIT, "the unsigned subscriber's first two rounds", || {
        let n = u.events("sent", Some("subscribe"));
        (n >= 2).then_some(()).ok_or_else(|| format!("{n} sent"))
    });
    // Hand-built with a valid stamp and the signature of other bytes (weight 1, sent with 5).
    let signer = Signer::from_pem(Digest::Sha1, &std::fs::read(test_private_key()).unwrap()).unwrap();
    let stamp = unix_stamp(now_secs(), Cmd::Subscribe);
    let mut forged = request("secure.test", &y.addr, 1);
    forged.unix = Some(stamp);
    let signature = signer.sign(&wire::encode(Cmd::Subscribe, &forged).unwrap()[4..]);
    forged.weight = 5;
    forged.sign = Some(signature);
    send_datagram(&sub, &wire::encode(Cmd::Subscribe, &forged).unwrap());
    // Then a valid hand-built signed subscribe for another key: once uWSGI shows it, it has
    // read the datagrams sent before it on this socket.
    let marker = request("secure.test:8000", &x.addr, 1);
    send_datagram(&sub, &sign_request(Cmd::Subscribe, &marker, &signer, stamp).unwrap());
    scene.wait_nodes(&r.stats, "secure.test:8000", &[&x.addr]);
    let doc = scene.stats(&r.stats);
    scene.check(node_names(&doc, "secure.test") == [x.addr.as_str()], || {
        format!("the unsigned or the forged subscription was accepted: {doc:#}")
    });
    let order = scene.routes(&r.listen, "secure.test", 3);
    scene.check(order == ["X", "X", "X"], || format!("requests for secure.test reached {order:?}, not X"));

    // The hand-built signed unsubscribe of the marker (stamp + 1) is accepted.
    let unsubscribe =
        sign_request(Cmd::Unsubscribe, &marker, &signer, unix_stamp(now_secs(), Cmd::Unsubscribe));
    send_datagram(&sub, &unsubscribe.unwrap());
    scene.wait_nodes(&r.stats, "secure.test:8000", &[]);

    // Our subscriber's SIGINT: a signed unsubscribe, accepted; the pool goes.
    s.signal("-INT");
    let status = s.wait_exit(WAIT);
    scene.check(status.is_some_and(|s| s.success()), || {
        format!("our subscriber's exit on SIGINT: {status:?}")
    });
    scene.wait_nodes(&r.stats, "secure.test", &[]);
    let got = scene.route(&r.listen, "secure.test");
    scene.check(got.is_none(), || format!("a request for secure.test reached {got:?} after the unsubscribe"));
}

#[test]
fn a_killed_real_backend_expires_from_our_fastrouter() {
    let mut scene = Scene::new();
    let r = scene.our_fastrouter(&["--subscription-tolerance".into(), TOLERANCE.to_string()]);
    let sub = r.subscription.clone();
    let args = ["--subscribe-to".into(), format!("{sub}:expiry.test"), "--subscribe-freq".into(), "1".into()];
    // V first: a lookup checks every node's age up to the first one with wrr credit, so
    // the victim at the head is checked by every lookup (spec §2.5).
    let v = scene.backend("V", &args);
    scene.wait_nodes(&r.stats, "expiry.test", &[&v.addr]);
    let l = scene.backend("L", &args);
    scene.wait_nodes(&r.stats, "expiry.test", &[&v.addr, &l.addr]);
    let order = scene.routes(&r.listen, "expiry.test", 2);
    scene.check(order == ["L", "V"], || format!("responses in the order {order:?}, not L V"));

    // SIGKILL of V's master and worker: no unsubscribe, no more refreshes. No request
    // until past the tolerance: the node stays, unchecked (lazy expiry).
    v.proc.kill_group();
    let killed = Instant::now();
    thread::sleep(PAST_TOLERANCE);
    let doc = scene.stats(&r.stats);
    let dead = node_field(&doc, "expiry.test", &v.addr, "death_mark");
    scene.check(
        node_names(&doc, "expiry.test") == [v.addr.as_str(), l.addr.as_str()] && dead == Some(0),
        || format!("before any lookup the stale node stays listed, alive (spec §2.5): {doc:#}"),
    );

    // The next request's lookup marks V failed as expired and removes it; L serves.
    let order = scene.routes(&r.listen, "expiry.test", 3);
    scene.check(order == ["L", "L", "L"], || {
        format!("after the tolerance, responses {order:?} (not L L L), {:?} after the kill", killed.elapsed())
    });
    scene.wait_nodes(&r.stats, "expiry.test", &[&l.addr]);
    let expired = format!("expiry.test => marking {} as failed (expired)", v.addr);
    scene.wait_log(&r.proc, &expired);
    scene.check(!r.proc.stderr.contains(&format!("unable to connect() to node \"{}\"", v.addr)), || {
        "the stale node was picked and found dead instead of expiring".into()
    });
}

#[test]
fn a_killed_subscriber_expires_from_the_real_fastrouter() {
    let mut scene = Scene::new();
    let r = scene.real_fastrouter(&["--subscription-tolerance".into(), TOLERANCE.to_string()]);
    let x = scene.backend("X", &[]);
    let y = scene.backend("Y", &[]);
    let announce = |addr: &str| {
        ["--subscribe2".into(), format!("server={},key=expiry.test,addr={addr}", r.subscription)]
            .into_iter()
            .chain(["--subscribe-freq".into(), "1".into()])
            .collect::<Vec<String>>()
    };
    // The victim's node first, as above.
    let v = scene.subscriber("X", &announce(&x.addr));
    scene.wait_nodes(&r.stats, "expiry.test", &[&x.addr]);
    let _l = scene.subscriber("Y", &announce(&y.addr));
    scene.wait_nodes(&r.stats, "expiry.test", &[&x.addr, &y.addr]);
    let order = scene.routes(&r.listen, "expiry.test", 2);
    scene.check(order == ["Y", "X"], || format!("responses in the order {order:?}, not Y X"));

    // SIGKILL of our subscriber: nothing is sent. Its backend keeps serving until the node
    // expires.
    v.kill_group();
    let killed = Instant::now();
    let order = scene.routes(&r.listen, "expiry.test", 2);
    scene.check(order == ["Y", "X"], || format!("right after the kill: responses {order:?}, not Y X"));
    thread::sleep(PAST_TOLERANCE);
    let doc = scene.stats(&r.stats);
    let dead = node_field(&doc, "expiry.test", &x.addr, "death_mark");
    scene.check(
        node_names(&doc, "expiry.test") == [x.addr.as_str(), y.addr.as_str()] && dead == Some(0),
        || format!("before any lookup the stale node stays listed, alive (spec §2.5): {doc:#}"),
    );

    let order = scene.routes(&r.listen, "expiry.test", 3);
    scene.check(order == ["Y", "Y", "Y"], || {
        format!("after the tolerance, responses {order:?} (not Y Y Y), {:?} after the kill", killed.elapsed())
    });
    scene.wait_nodes(&r.stats, "expiry.test", &[&y.addr]);
    let expired =
        format!("expiry.test => marking {} as failed (no announce received in {TOLERANCE} seconds)", x.addr);
    scene.wait_log(&r.proc, &expired);
}
