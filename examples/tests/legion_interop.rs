//! Interop tests of record: mixed Legion clusters of the real uWSGI 2.0.21 and `legiond`
//! on 127.0.0.1 (spec `legion.md` §3, §5, §7), freq 1 s / tolerance 3 s on both sides.
//!
//! | test | checks |
//! |---|---|
//! | `*_agree_on_the_lord` (4) | AES-128-CBC and BF-CBC (uWSGI with the OpenSSL legacy provider, §7.1), 2 uWSGI + 1 legiond and 1 uWSGI + 2 legiond: every node agrees on the highest valor (stats `lord_valor`/`lord_uuid`, checksums, members; legiond events) |
//! | `a_cold_start_of_a_mixed_cluster_makes_only_the_best_node_lord` | started together (uWSGI 10, legiond 20, uWSGI 30), no node but valor 30 ever has a `lord` event / log line |
//! | `a_legiond_with_the_highest_valor_takes_over_from_a_uwsgi_lord` | the uWSGI lord logs `a new Lord`, `LEGION-EVENT unlord`, its stats `i_am_the_lord` drops to 0; legiond's `lord` event comes after the unlord |
//! | `sigkill_of_the_uwsgi_lord_makes_legiond_lord` | crash failover by expiry, timed from SIGKILL to legiond's `lord` event (≈ tolerance + ≤ freq; bound 8 s) |
//! | `sigint_of_a_legiond_lord_hands_over_to_uwsgi` | legiond's death announce makes uWSGI lord in < 3 s |
//! | `a_legiond_lord_with_quorum_2_steps_down_when_its_uwsgi_partner_dies` | `unlord` with reason `quorum-lost` within tolerance + 2 s |
//! | `a_uwsgi_lord_with_quorum_2_steps_down_when_its_legiond_partner_dies` | uWSGI steps down at expiry when it never warned about quorum before (edge case 4.15; bound 70 s) |
//! | `scrolls_cross_from_legiond_to_uwsgi` | uWSGI prints legiond's scroll between `*** The New Lord Scroll ***` lines; legiond's `--stats` is checked for uWSGI's scroll when it exposes scrolls |
//! | `scrolls_cross_from_uwsgi_to_the_legion_driver` | legiond shows no scroll, so the crate's `LegionDriver` (in the test) reads uWSGI's scroll as member scroll, lord scroll and in the scroll list |
//! | `no_uwsgi_node_is_starved_*` | 2 uWSGI + 2 legiond for 20–24 s: a capture socket (an extra `--legion-node` of each uWSGI node) timestamps every uWSGI announce by source port; the largest gap stays below 2 × freq; nobody expires a live node |
//!
//! uWSGI's state comes from its `--stats` JSON (`legions[0]`) and its stderr (read line by
//! line as it arrives, with the arrival time); legiond's from its `--events-json` stdout
//! (same) and its `--stats`. Every test has its own ports (free ones, found by binding
//! port 0) and temporary directory, so the tests run in parallel. Every wait is bounded;
//! every child is stopped by a Drop guard (SIGINT, then SIGKILL after 3 s). A missing
//! `uwsgi` is a failure, not a skip (`common::require_program`). A failing test prints the
//! tail of every uWSGI log and every legiond event.
//!
//! Runtime: about 60 s for the file with cargo's default of one test thread per CPU (2
//! here); the longest tests are the starvation ones (25–40 s). The uWSGI quorum test takes
//! ~10 s; only if uWSGI warned about quorum before the kill (not seen so far) can it take
//! up to the 70 s its bound allows.

// Tests drive real processes: they bound their waits with the clock and short sleeps, and
// use std's UDP socket to find free ports and to capture announces.
#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the clock and short sleeps")]
#![allow(
    clippy::disallowed_types,
    reason = "tests find free UDP ports and capture datagrams with std's socket"
)]
#![allow(clippy::unwrap_used, clippy::print_stderr, reason = "test code: a failed unwrap is a failed test")]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const LEGIOND: &str = env!("CARGO_BIN_EXE_legiond");
const AES: &str = "aes-128-cbc:secret";
/// Blowfish with an IV, the docs' example; uWSGI needs the legacy provider (spec §7.1).
const BF: &str = "bf-cbc:hello abcdefgh";
/// Spec §7.1, verbatim.
const OPENSSL_LEGACY_CNF: &str = "openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
legacy = legacy_sect
[default_sect]
activate = 1
[legacy_sect]
activate = 1
";
/// How often state is polled.
const POLL: Duration = Duration::from_millis(50);
/// Bound for a first election of a cluster at freq 1 (uWSGI: lord at +2 s, spec §5),
/// generous for a loaded machine.
const ELECTION: Duration = Duration::from_secs(15);
/// How long a stopped node gets between SIGINT and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

// ----- processes and their output ------------------------------------------------------

/// Lines of a child's output with their arrival time, filled by a reader thread.
struct Lines<T> {
    lines: Arc<Mutex<Vec<(Instant, T)>>>,
}

impl<T: Clone + Send + 'static> Lines<T> {
    fn read(from: impl Read + Send + 'static, parse: impl Fn(String) -> T + Send + 'static) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                let arrived = Instant::now();
                sink.lock().unwrap().push((arrived, parse(line)));
            }
        });
        Self { lines }
    }

    fn len(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    fn snapshot(&self) -> Vec<(Instant, T)> {
        self.lines.lock().unwrap().clone()
    }

    /// The first line from index `from` on that matches `pred`.
    fn find(&self, from: usize, pred: impl Fn(&T) -> bool) -> Option<(Instant, T)> {
        self.lines.lock().unwrap().iter().skip(from).find(|(_, l)| pred(l)).cloned()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Uwsgi,
    Legiond,
}

/// One node: a uWSGI master or a legiond, with its stderr (and legiond's events). Stopped
/// with SIGINT, then SIGKILL, on drop.
struct Node {
    kind: Kind,
    label: String,
    valor: u16,
    port: u16,
    stats_port: u16,
    started: Instant,
    child: Mutex<Child>,
    exit: Mutex<Option<ExitStatus>>,
    log: Lines<String>,
    /// legiond's `--events-json` lines (a line that is not JSON is kept as a string).
    events: Option<Lines<Value>>,
}

impl Node {
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

    /// Sends SIGINT (a clean stop: death hooks and a death announce).
    fn sigint(&self) -> Instant {
        let at = Instant::now();
        let status = Command::new("kill").args(["-INT", &self.pid().to_string()]).status().unwrap();
        assert!(status.success(), "kill -INT {} failed", self.label);
        at
    }

    /// Sends SIGKILL (a crash: nothing is sent) and reaps the process.
    fn sigkill(&self) -> Instant {
        let mut child = self.child.lock().unwrap();
        let at = Instant::now();
        child.kill().unwrap();
        *self.exit.lock().unwrap() = Some(child.wait().unwrap());
        at
    }

    fn wait_exit(&self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        while self.alive() {
            assert!(Instant::now() < deadline, "{} did not exit within {limit:?}", self.label);
            thread::sleep(POLL);
        }
        self.exit.lock().unwrap().unwrap()
    }

    /// `legions[0]` of the node's `--stats` document.
    fn stats(&self) -> Result<Value, String> {
        read_stats(self.stats_port).map_err(|e| format!("{}: stats: {e}", self.label))
    }

    fn events(&self) -> &Lines<Value> {
        self.events.as_ref().unwrap_or_else(|| panic!("{} has no events", self.label))
    }

    /// The first log line from index `from` on containing `needle`.
    fn log_line(&self, from: usize, needle: &str) -> Option<(Instant, String)> {
        self.log.find(from, |l| l.contains(needle))
    }

    /// The first event from index `from` on named `event`.
    fn event(&self, from: usize, event: &str) -> Option<(Instant, Value)> {
        self.events().find(from, |v| v["event"] == event)
    }

    /// The last `lord`/`unlord` event said this node is lord.
    fn legiond_claims_lord(&self) -> bool {
        let events = self.events().snapshot();
        events
            .iter()
            .rev()
            .find(|(_, v)| v["event"] == "lord" || v["event"] == "unlord")
            .is_some_and(|(_, v)| v["event"] == "lord")
    }

    /// For failure messages: the last stats, the log tail, every event.
    fn report(&self, out: &mut String) {
        let since = |t: Instant| t.saturating_duration_since(self.started).as_secs_f64();
        let state = if self.alive() { "running" } else { "exited" };
        let _ = writeln!(out, "=== {} ({state}, pid {})", self.label, self.pid());
        if self.alive() {
            match self.stats() {
                Ok(s) => {
                    let _ = writeln!(out, "stats: {s}");
                }
                Err(e) => {
                    let _ = writeln!(out, "{e}");
                }
            }
        }
        if let Some(events) = &self.events {
            let _ = writeln!(out, "--- events (s since start):");
            for (t, v) in events.snapshot() {
                let _ = writeln!(out, "{:7.3} {v}", since(t));
            }
        }
        let log = self.log.snapshot();
        // uWSGI's start-up banner ends with the master's pid; what follows is the legion.
        let banner =
            log.iter().position(|(_, l)| l.starts_with("spawned uWSGI master process")).map_or(0, |i| i + 1);
        let tail = log.len().saturating_sub(60).max(banner);
        let _ = writeln!(
            out,
            "--- stderr, last {} of {} lines{} (s since start):",
            log.len() - tail,
            log.len(),
            if banner > 0 { " after uWSGI's banner" } else { "" }
        );
        for (t, l) in &log[tail..] {
            let _ = writeln!(out, "{:7.3} {l}", since(*t));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if !self.alive() {
            return;
        }
        let _ = Command::new("kill").args(["-INT", &self.pid().to_string()]).status();
        let deadline = Instant::now() + STOP_GRACE;
        while self.alive() && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        if self.alive() {
            let mut child = self.child.lock().unwrap();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn read_stats(port: u16) -> Result<Value, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    Ok(doc["legions"][0].clone())
}

/// `n` UDP ports free on 127.0.0.1 right now (all bound at once, so distinct).
fn free_udp_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    sockets.iter().map(|s| s.local_addr().unwrap().port()).collect()
}

/// `n` TCP ports free on 127.0.0.1 right now.
fn free_tcp_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

// ----- a cluster -----------------------------------------------------------------------

/// Up to `slots` nodes of one legion `lg` on 127.0.0.1; node `i` binds `ports[i]` and
/// announces to every other slot (started or not). Fields drop in order: the nodes stop
/// before the directory goes.
struct Cluster {
    crypt: &'static str,
    freq: u64,
    tolerance: u64,
    ports: Vec<u16>,
    stats_ports: Vec<u16>,
    /// Extra announce targets of the uWSGI nodes (the starvation test's capture socket).
    uwsgi_extra_targets: Vec<u16>,
    nodes: Vec<Option<Node>>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new(crypt: &'static str, slots: usize) -> Self {
        Self::with_timers(crypt, slots, 1, 3)
    }

    fn with_timers(crypt: &'static str, slots: usize, freq: u64, tolerance: u64) -> Self {
        let dir = tempfile::Builder::new().prefix("legion-interop-").tempdir().unwrap();
        std::fs::write(dir.path().join("openssl-legacy.cnf"), OPENSSL_LEGACY_CNF).unwrap();
        Self {
            crypt,
            freq,
            tolerance,
            ports: free_udp_ports(slots),
            stats_ports: free_tcp_ports(slots),
            uwsgi_extra_targets: Vec::new(),
            nodes: (0..slots).map(|_| None).collect(),
            dir,
        }
    }

    fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().unwrap_or_else(|| panic!("node {i} was never started"))
    }

    fn live(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| n.as_ref().filter(|n| n.alive()).map(|n| (i, n)))
    }

    fn peers(&self, i: usize) -> Vec<String> {
        let mut args = Vec::new();
        for (j, p) in self.ports.iter().enumerate() {
            if j != i {
                args.push("--legion-node".to_owned());
                args.push(format!("lg 127.0.0.1:{p}"));
            }
        }
        args
    }

    /// Starts a real uWSGI node in slot `i`; `extra` options go last (after `--legion`).
    fn uwsgi(&mut self, i: usize, valor: u16, extra: &[&str]) -> &Node {
        let uwsgi = common::require_program("uwsgi");
        let mut args: Vec<String> = vec![
            "--master".into(),
            "--die-on-term".into(),
            "--legion".into(),
            format!("lg 127.0.0.1:{} {valor} {}", self.ports[i], self.crypt),
        ];
        args.extend(self.peers(i));
        for p in &self.uwsgi_extra_targets {
            args.extend(["--legion-node".to_owned(), format!("lg 127.0.0.1:{p}")]);
        }
        for (opt, value) in [
            ("--legion-freq", self.freq.to_string()),
            ("--legion-tolerance", self.tolerance.to_string()),
            ("--legion-lord", "lg log:LEGION-EVENT lord".into()),
            ("--legion-unlord", "lg log:LEGION-EVENT unlord".into()),
            ("--legion-node-joined", "lg log:LEGION-EVENT node-joined".into()),
            ("--legion-node-left", "lg log:LEGION-EVENT node-left".into()),
            ("--stats", format!("127.0.0.1:{}", self.stats_ports[i])),
        ] {
            args.extend([opt.to_owned(), value]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut cmd = Command::new(&uwsgi);
        cmd.args(&args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if self.crypt == BF {
            cmd.env("OPENSSL_CONF", self.dir.path().join("openssl-legacy.cnf"));
        }
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", uwsgi.display()));
        let log = Lines::read(child.stderr.take().unwrap(), |l| l);
        self.nodes[i] = Some(Node {
            kind: Kind::Uwsgi,
            label: format!("uwsgi[{i}] valor {valor} port {}", self.ports[i]),
            valor,
            port: self.ports[i],
            stats_port: self.stats_ports[i],
            started,
            child: Mutex::new(child),
            exit: Mutex::new(None),
            log,
            events: None,
        });
        self.node(i)
    }

    /// Starts a legiond in slot `i` with `--events-json` and `--stats`.
    fn legiond(&mut self, i: usize, valor: u16, extra: &[&str]) -> &Node {
        let mut args: Vec<String> =
            vec!["--legion".into(), format!("lg 127.0.0.1:{} {valor} {}", self.ports[i], self.crypt)];
        args.extend(self.peers(i));
        for (opt, value) in [
            ("--legion-freq", self.freq.to_string()),
            ("--legion-tolerance", self.tolerance.to_string()),
            ("--stats", format!("127.0.0.1:{}", self.stats_ports[i])),
        ] {
            args.extend([opt.to_owned(), value]);
        }
        args.push("--events-json".into());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let started = Instant::now();
        let mut child = Command::new(LEGIOND)
            .args(&args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {LEGIOND}: {e}"));
        let events = Lines::read(child.stdout.take().unwrap(), |l| {
            serde_json::from_str(&l).unwrap_or_else(|_| Value::String(format!("NOT JSON: {l}")))
        });
        let log = Lines::read(child.stderr.take().unwrap(), |l| l);
        self.nodes[i] = Some(Node {
            kind: Kind::Legiond,
            label: format!("legiond[{i}] valor {valor} port {}", self.ports[i]),
            valor,
            port: self.ports[i],
            stats_port: self.stats_ports[i],
            started,
            child: Mutex::new(child),
            exit: Mutex::new(None),
            log,
            events: Some(events),
        });
        self.node(i)
    }

    /// Every node's state, for failure messages.
    fn report(&self) -> String {
        let mut out = format!(
            "cluster: crypt {:?}, freq {} s, tolerance {} s, ports {:?}, stats {:?}\n",
            self.crypt, self.freq, self.tolerance, self.ports, self.stats_ports
        );
        for node in self.nodes.iter().flatten() {
            node.report(&mut out);
        }
        out
    }

    /// Polls `probe` every [`POLL`] until it gives a value; panics after `limit` with
    /// `what`, the probe's last complaint and the cluster report.
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

    /// Waits for a log line of node `i` containing `needle` (from line `from` on).
    fn wait_log(&self, i: usize, from: usize, needle: &str, limit: Duration) -> (Instant, String) {
        let node = self.node(i);
        self.wait(limit, &format!("{}: log line {needle:?}", node.label), || {
            node.log_line(from, needle).ok_or_else(|| "not logged".to_owned())
        })
    }

    /// Waits for a legiond event of node `i` named `event` (from event `from` on).
    fn wait_event(&self, i: usize, from: usize, event: &str, limit: Duration) -> (Instant, Value) {
        let node = self.node(i);
        self.wait(limit, &format!("{}: {event:?} event", node.label), || {
            node.event(from, event).ok_or_else(|| "no such event".to_owned())
        })
    }

    /// One look at the whole cluster: every live node's stats name node `lord` as lord
    /// (`lord_valor`, `lord_uuid`), only it has `i_am_the_lord` set, every node counts
    /// every other live node as a member and all checksums are equal. For legiond, the
    /// `state` and the last `lord`/`unlord` event agree too.
    fn agreement(&self, lord: usize) -> Result<(), String> {
        let lord_node = self.node(lord);
        let lord_stats = lord_node.stats()?;
        let lord_uuid = str_of(&lord_stats["uuid"]).to_owned();
        let checksum = u64_of(&lord_stats["checksum"]);
        let live: Vec<(usize, &Node)> = self.live().collect();
        for &(i, node) in &live {
            let s = if i == lord { lord_stats.clone() } else { node.stats()? };
            let who = &node.label;
            if u64_of(&s["lord_valor"]) != u64::from(lord_node.valor) || str_of(&s["lord_uuid"]) != lord_uuid
            {
                return Err(format!("{who} votes for {} {}", s["lord_valor"], s["lord_uuid"]));
            }
            if (u64_of(&s["i_am_the_lord"]) != 0) != (i == lord) {
                return Err(format!("{who}: i_am_the_lord {}", s["i_am_the_lord"]));
            }
            let members = s["members"].as_array().map_or(0, Vec::len);
            if members != live.len() - 1 {
                return Err(format!("{who} has {members} members, not {}", live.len() - 1));
            }
            if u64_of(&s["checksum"]) != checksum {
                return Err(format!("{who}: checksum {} != {checksum} of the lord", s["checksum"]));
            }
            if node.kind == Kind::Legiond {
                let want = if i == lord { "lord" } else { "follower" };
                if s["state"] != want {
                    return Err(format!("{who}: state {} (expected {want})", s["state"]));
                }
                if node.legiond_claims_lord() != (i == lord) {
                    return Err(format!("{who}: its last lord/unlord event disagrees with {want}"));
                }
            }
        }
        Ok(())
    }

    fn wait_agreement(&self, lord: usize, limit: Duration) {
        let what = format!("agreement on {} as lord", self.node(lord).label);
        self.wait(limit, &what, || self.agreement(lord));
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ----- 1. mixed clusters agree ----------------------------------------------------------

/// Starts `kinds[i]` with `valors[i]` together, waits until every node agrees on the
/// highest valor, and checks legiond's events name that lord.
fn mixed_cluster_agrees(crypt: &'static str, kinds: &[Kind], valors: &[u16]) {
    let mut c = Cluster::new(crypt, kinds.len());
    for (i, (&kind, &valor)) in kinds.iter().zip(valors).enumerate() {
        match kind {
            Kind::Uwsgi => c.uwsgi(i, valor, &[]),
            Kind::Legiond => c.legiond(i, valor, &[]),
        };
    }
    let lord = (0..valors.len()).max_by_key(|&i| valors[i]).unwrap();
    c.wait_agreement(lord, ELECTION);
    let t = c.node(lord).started.elapsed();
    // Stable: a second look a few announce periods later.
    thread::sleep(Duration::from_secs(3));
    c.wait_agreement(lord, Duration::from_secs(5));
    let lord_uuid = str_of(&c.node(lord).stats().unwrap()["uuid"]).to_owned();
    for (i, node) in c.live() {
        if node.kind == Kind::Legiond {
            let events = node.events().snapshot();
            let bad: Vec<&Value> = events.iter().map(|(_, v)| v).filter(|v| !v.is_object()).collect();
            assert!(bad.is_empty(), "{}: stdout lines that are not events: {bad:?}", node.label);
            // The last event that names an agreed lord names this one (every legiond here
            // hears the best node before or while its first agreement forms).
            let named = events.iter().rev().find(|(_, v)| u64_of(&v["lord_valor"]) != 0);
            assert!(
                named.is_some_and(|(_, v)| v["lord_uuid"] == lord_uuid.as_str()
                    && u64_of(&v["lord_valor"]) == u64::from(valors[lord])),
                "{}: its events do not name lord {lord_uuid}: {named:?}\n{}",
                node.label,
                c.report()
            );
            if i == lord {
                let (_, ev) = node.event(0, "lord").unwrap();
                assert_eq!(ev["lord_uuid"], lord_uuid.as_str(), "{}", c.report());
            }
        } else if i == lord {
            assert!(node.log_line(0, "LEGION-EVENT lord").is_some(), "{}", c.report());
        }
    }
    // The lord's log agrees with uWSGI's wording; uWSGI nodes logged their joins.
    for (_, node) in c.live().filter(|(_, n)| n.kind == Kind::Uwsgi) {
        let joins = node.log.snapshot().iter().filter(|(_, l)| l.contains("joined Legion lg")).count();
        assert_eq!(joins, kinds.len() - 1, "{}: one join per other node\n{}", node.label, c.report());
    }
    eprintln!(
        "{crypt} {kinds:?} {valors:?}: agreement on valor {} {:.2} s after start",
        valors[lord],
        secs(t)
    );
}

#[test]
fn aes_two_uwsgi_and_one_legiond_agree_on_the_lord() {
    mixed_cluster_agrees(AES, &[Kind::Uwsgi, Kind::Legiond, Kind::Uwsgi], &[10, 20, 30]);
}

#[test]
fn aes_one_uwsgi_and_two_legiond_agree_on_the_lord() {
    mixed_cluster_agrees(AES, &[Kind::Legiond, Kind::Uwsgi, Kind::Legiond], &[10, 20, 30]);
}

#[test]
fn bf_cbc_two_uwsgi_and_one_legiond_agree_on_the_lord() {
    mixed_cluster_agrees(BF, &[Kind::Uwsgi, Kind::Legiond, Kind::Uwsgi], &[10, 20, 30]);
}

#[test]
fn bf_cbc_one_uwsgi_and_two_legiond_agree_on_the_lord() {
    mixed_cluster_agrees(BF, &[Kind::Legiond, Kind::Uwsgi, Kind::Legiond], &[10, 20, 30]);
}

/// A cold start of a mixed cluster (all nodes started together) elects the best node
/// and nobody else: no other node runs its lord hooks on the way. uWSGI's first announce
/// leaves ≈ freq after its start and its first election round runs at ≈ 2 × freq (spec
/// §3.2), so a node that votes earlier has not heard the uWSGI nodes yet.
#[test]
fn a_cold_start_of_a_mixed_cluster_makes_only_the_best_node_lord() {
    let mut c = Cluster::new(AES, 3);
    c.uwsgi(0, 10, &[]);
    c.legiond(1, 20, &[]);
    c.uwsgi(2, 30, &[]);
    c.wait_agreement(2, ELECTION);
    thread::sleep(Duration::from_secs(1));
    let legiond = c.node(1);
    if let Some((at, lord)) = legiond.event(0, "lord") {
        let heard = legiond
            .events()
            .snapshot()
            .iter()
            .filter(|(_, v)| v["event"] == "node-joined" && u64_of(&v["seq"]) < u64_of(&lord["seq"]))
            .count();
        panic!(
            "legiond (valor 20) was lord {:.3} s after its start, having heard {heard} of the 2 uWSGI \
             nodes (valor 10 and 30), and stepped down again: a spurious lord/unlord (its lord and \
             unlord actions ran)\n{}",
            secs(at - legiond.started),
            c.report()
        );
    }
    assert!(c.node(0).log_line(0, "LEGION-EVENT lord").is_none(), "{}", c.report());
}

// ----- 2. legiond takes over ------------------------------------------------------------

#[test]
fn a_legiond_with_the_highest_valor_takes_over_from_a_uwsgi_lord() {
    let mut c = Cluster::new(AES, 3);
    c.uwsgi(0, 10, &[]);
    c.uwsgi(1, 20, &[]);
    c.wait_agreement(1, ELECTION);
    let from = c.node(1).log.len();
    let started = c.legiond(2, 30, &[]).started;
    let (lord_at, lord) = c.wait_event(2, 0, "lord", ELECTION);
    let (unlord_at, _) = c.wait_log(1, from, "LEGION-EVENT unlord", Duration::from_secs(5));
    let uuid = str_of(&lord["uuid"]).to_owned();
    assert!(
        c.node(1)
            .log_line(from, &format!("a new Lord (valor: 30 uuid: {uuid}) raised for Legion lg"))
            .is_some(),
        "uWSGI did not name legiond as the new lord\n{}",
        c.report()
    );
    c.wait_agreement(2, Duration::from_secs(5));
    assert_eq!(u64_of(&c.node(1).stats().unwrap()["i_am_the_lord"]), 0);
    // legiond waits until the old lord stops claiming the title (its announces say
    // `lord 0`), so the two are never lord at once. Arrival times of two pipes: 100 ms slack.
    let heard_first =
        c.node(2).event(0, "node-joined").is_some_and(|(_, j)| u64_of(&j["seq"]) < u64_of(&lord["seq"]));
    assert!(
        lord_at + Duration::from_millis(100) >= unlord_at,
        "two lords at once: legiond became lord {:.3} s after its start and {:.3} s before the uWSGI \
         lord stepped down ({})\n{}",
        secs(lord_at - started),
        secs(unlord_at - lord_at),
        if heard_first {
            "legiond had heard a member before its lord event"
        } else {
            "legiond's lord event came before any node-joined: it elected itself alone at the end of \
             its warm-up, before it processed the uWSGI announces"
        },
        c.report()
    );
    eprintln!(
        "legiond started; uWSGI unlord after {:.2} s, legiond lord after {:.2} s",
        secs(unlord_at - started),
        secs(lord_at - started)
    );
}

// ----- 3. crash of the uWSGI lord --------------------------------------------------------

#[test]
fn sigkill_of_the_uwsgi_lord_makes_legiond_lord() {
    let mut c = Cluster::new(AES, 3);
    c.uwsgi(0, 10, &[]);
    c.legiond(1, 20, &[]);
    c.uwsgi(2, 30, &[]);
    c.wait_agreement(2, ELECTION);
    let (ev_from, log_from) = (c.node(1).events().len(), c.node(0).log.len());
    let killed = c.node(2).sigkill();
    let (lord_at, _) = c.wait_event(1, ev_from, "lord", Duration::from_secs(8));
    let took = lord_at - killed;
    let (left, ev) = c.wait_event(1, ev_from, "node-left", Duration::from_secs(1));
    assert_eq!(
        (ev["reason"].as_str(), u64_of(&ev["node"]["valor"])),
        (Some("expired"), 30),
        "{}",
        c.report()
    );
    c.wait_log(0, log_from, "left Legion lg", Duration::from_secs(3));
    c.wait_agreement(1, Duration::from_secs(5));
    eprintln!(
        "SIGKILL of the uWSGI lord: legiond node-left after {:.2} s, lord after {:.2} s (tolerance 3 s + up to freq 1 s)",
        secs(left - killed),
        secs(took)
    );
    // The surviving uWSGI node expires the dead one after more than 3 whole seconds of
    // silence and announces its new view one period later, so the lordship cannot move
    // sooner than 3 s after the kill: faster would mean a node was dropped too early.
    assert!(took >= Duration::from_secs(3), "lord after {took:?}, before the tolerance\n{}", c.report());
}

// ----- 4. graceful stop of a legiond lord -----------------------------------------------

#[test]
fn sigint_of_a_legiond_lord_hands_over_to_uwsgi() {
    let mut c = Cluster::new(AES, 3);
    c.uwsgi(0, 10, &[]);
    c.uwsgi(1, 20, &[]);
    c.legiond(2, 30, &["--legion-death", "lg log:legiond leaving"]);
    c.wait_agreement(2, ELECTION);
    let from = c.node(1).log.len();
    let stopped = c.node(2).sigint();
    let (death, _) = c.wait_log(1, from, "announced its death to Legion lg", Duration::from_secs(3));
    let (lord_at, _) = c.wait_log(1, from, "i am now the Lord of the Legion lg", Duration::from_secs(3));
    c.wait_log(1, from, "LEGION-EVENT lord", Duration::from_secs(1));
    let took = lord_at - stopped;
    let status = c.node(2).wait_exit(Duration::from_secs(5));
    assert!(status.success(), "legiond exited with {status}\n{}", c.report());
    assert!(c.node(2).event(0, "death").is_some(), "no death event\n{}", c.report());
    c.wait_agreement(1, Duration::from_secs(5));
    eprintln!(
        "SIGINT of the legiond lord: uWSGI saw the death after {:.3} s, was lord after {:.3} s",
        secs(death - stopped),
        secs(took)
    );
    assert!(took < Duration::from_secs(3), "hand-over took {took:?}\n{}", c.report());
}

// ----- 5. quorum 2, partner killed ------------------------------------------------------

#[test]
fn a_legiond_lord_with_quorum_2_steps_down_when_its_uwsgi_partner_dies() {
    let mut c = Cluster::new(AES, 2);
    c.uwsgi(0, 10, &["--legion-quorum", "lg 2"]);
    c.legiond(1, 20, &["--legion-quorum", "lg 2"]);
    c.wait_agreement(1, ELECTION);
    let from = c.node(1).events().len();
    let killed = c.node(0).sigkill();
    let limit = Duration::from_secs(c.tolerance + 2);
    let (at, ev) = c.wait_event(1, from, "unlord", limit);
    assert_eq!(ev["reason"], "quorum-lost", "{}", c.report());
    let (left, ev) = c.wait_event(1, from, "node-left", Duration::from_secs(1));
    assert_eq!(ev["reason"], "expired", "{}", c.report());
    assert!(left <= at, "unlord before the partner expired\n{}", c.report());
    let s = c.node(1).stats().unwrap();
    assert_eq!((s["state"].as_str(), u64_of(&s["i_am_the_lord"])), (Some("follower"), 0), "{s}");
    eprintln!("quorum 2: legiond stepped down {:.2} s after its uWSGI partner's SIGKILL", secs(at - killed));
}

/// uWSGI steps a lord down for lack of quorum at most once per 60 s after its previous
/// `no quorum` warning (edge case 4.15); the first time it always may. legiond starts
/// first, so the uWSGI node counts it as a member from its very first election round and
/// never warns before the kill: then it steps down at expiry, deterministically. If it did
/// warn (a loaded machine), the wait allows the 60 s of edge case 4.15.
#[test]
fn a_uwsgi_lord_with_quorum_2_steps_down_when_its_legiond_partner_dies() {
    let mut c = Cluster::new(AES, 2);
    c.legiond(0, 10, &["--legion-quorum", "lg 2"]);
    thread::sleep(Duration::from_millis(1500));
    c.uwsgi(1, 20, &["--legion-quorum", "lg 2"]);
    c.wait_agreement(1, ELECTION);
    let warned = c.node(1).log_line(0, "no quorum").is_some();
    let from = c.node(1).log.len();
    let killed = c.node(0).sigkill();
    let limit = if warned { Duration::from_secs(70) } else { Duration::from_secs(c.tolerance + 5) };
    let (at, _) = c.wait_log(1, from, "LEGION-EVENT unlord", limit);
    c.wait_log(1, from, "without a quorum", Duration::from_secs(1));
    c.wait_log(1, from, "left Legion lg", Duration::from_secs(1));
    let s = c.node(1).stats().unwrap();
    assert_eq!(u64_of(&s["i_am_the_lord"]), 0, "{s}");
    eprintln!(
        "quorum 2: uWSGI stepped down {:.2} s after its legiond partner's SIGKILL (warned before: {warned})",
        secs(at - killed)
    );
}

// ----- 6. scrolls -------------------------------------------------------------------------

/// uWSGI prints the new lord's scroll at unlord (spec §3.12): legiond's scroll must
/// arrive intact. The other direction: legiond's `--stats` is checked for uWSGI's scroll
/// if it exposes member scrolls (`members[].scroll`) or the scroll list (`scrolls`).
#[test]
fn scrolls_cross_from_legiond_to_uwsgi() {
    let mut c = Cluster::new(BF, 2);
    let uwsgi_scroll = format!("uwsgi scroll {} k=v,dump-socket=127.0.0.1:1", c.ports[0]);
    let legiond_scroll = format!("legiond scroll {} with spaces", c.ports[1]);
    c.uwsgi(0, 20, &["--legion-scroll", &format!("lg {uwsgi_scroll}")]);
    c.wait_agreement(0, ELECTION);
    let from = c.node(0).log.len();
    c.legiond(1, 30, &["--legion-scroll", &format!("lg {legiond_scroll}")]);
    c.wait_log(0, from, "LEGION-EVENT unlord", ELECTION);
    let log: Vec<String> = c.node(0).log.snapshot().into_iter().skip(from).map(|(_, l)| l).collect();
    let start = log.iter().position(|l| l.contains("*** The New Lord Scroll ***"));
    let end = log.iter().position(|l| l.contains("*** End of the New Lord Scroll ***"));
    let (Some(start), Some(end)) = (start, end) else {
        panic!("uWSGI printed no new lord scroll\n{}", c.report());
    };
    assert_eq!(log[start + 1..end].join("\n"), legiond_scroll, "{}", c.report());
    c.wait_agreement(1, Duration::from_secs(5));

    let s = c.node(1).stats().unwrap();
    let member = &s["members"][0];
    let exposed = [member.get("scroll"), s.get("scrolls")];
    if exposed.iter().all(Option::is_none) {
        eprintln!("GAP: legiond --stats exposes no scrolls (members[].scroll, scrolls): {s}");
    }
    if let Some(scroll) = member.get("scroll") {
        assert_eq!(scroll, uwsgi_scroll.as_str(), "{}", c.report());
    }
    if let Some(scrolls) = s.get("scrolls") {
        assert!(scrolls.to_string().contains(&uwsgi_scroll), "{}", c.report());
    }
}

/// The other direction, one level down: legiond's `--stats`, events and log lines show no
/// scroll (reported as a gap), so this runs the crate legiond is built on (`LegionDriver`
/// in a mio loop of the test) next to a real uWSGI lord with a scroll, and reads the
/// member's scroll and the lord scroll from the core.
#[test]
fn scrolls_cross_from_uwsgi_to_the_legion_driver() {
    use legion_proto::driver::{Actions, Endpoint, LegionDriver, LegionSocket};
    use legion_proto::{Config, wire::Crypto};

    let mut c = Cluster::new(AES, 2);
    let uwsgi_scroll = format!("uwsgi scroll {} dump-socket=127.0.0.1:1", c.ports[0]);
    c.uwsgi(0, 30, &["--legion-scroll", &format!("lg {uwsgi_scroll}")]);
    let endpoint = |port: u16| Endpoint::resolve(&format!("127.0.0.1:{port}")).unwrap();
    let mut socket = LegionSocket::bind(&endpoint(c.ports[1])).unwrap();
    let peer = socket.target(&endpoint(c.ports[0])).unwrap();
    let config = Config::new("lg", 10, Crypto::from_spec(AES).unwrap())
        .node(peer)
        .freq(Duration::from_secs(1))
        .tolerance(Duration::from_secs(3))
        .scroll(b"driver scroll".to_vec());
    let mut driver = LegionDriver::new(socket, config, Actions::new()).unwrap();
    let mut poll = mio::Poll::new().unwrap();
    let mut events = mio::Events::with_capacity(64);
    driver.register(poll.registry(), mio::Token(0)).unwrap();
    let deadline = Instant::now() + ELECTION;
    let found = loop {
        driver.flush(Instant::now()).unwrap();
        while driver.poll_event().is_some() {}
        let core = driver.core();
        let agreed = core.lord().filter(|l| l.valor == 30);
        if let (Some(lord), [member]) = (agreed, core.members()) {
            break (lord.uuid, member.clone());
        }
        assert!(Instant::now() < deadline, "the driver never agreed on uWSGI as lord\n{}", c.report());
        let wait = driver.timeout(Instant::now()).unwrap_or(POLL).min(POLL);
        poll.poll(&mut events, Some(wait)).unwrap();
        for event in &events {
            driver.handle_ready(event, Instant::now()).unwrap();
        }
    };
    let (lord_uuid, member) = found;
    assert_eq!(member.info().uuid, lord_uuid);
    assert_eq!(String::from_utf8_lossy(member.scroll()), uwsgi_scroll, "member scroll");
    assert_eq!(String::from_utf8_lossy(driver.core().lord_scroll()), uwsgi_scroll, "lord scroll");
    let scrolls: Vec<&[u8]> = driver.core().scrolls().collect();
    assert_eq!(scrolls, [&b"driver scroll"[..], uwsgi_scroll.as_bytes()]);
    driver.shutdown(Instant::now()).unwrap();
}

// ----- 7. no uWSGI node is starved --------------------------------------------------------

/// 2 uWSGI + 2 legiond with timers `freq`/`tolerance`; a capture socket listed as an
/// extra target of each uWSGI node timestamps its announces (by source port: uWSGI sends
/// from its legion port) for `observe` after the cluster agrees. Every uWSGI node's
/// largest gap stays below 2 × freq, and no node ever expires a live one.
fn no_uwsgi_node_is_starved(freq: u64, tolerance: u64, observe: Duration) {
    let capture = UdpSocket::bind("127.0.0.1:0").unwrap();
    capture.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut c = Cluster::with_timers(AES, 4, freq, tolerance);
    c.uwsgi_extra_targets.push(capture.local_addr().unwrap().port());
    let seen: Arc<Mutex<BTreeMap<u16, Vec<Instant>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
        thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, from)) = capture.recv_from(&mut buf) {
                    seen.lock().unwrap().entry(from.port()).or_default().push(Instant::now());
                }
            }
        })
    };
    c.uwsgi(0, 10, &[]);
    c.legiond(1, 20, &[]);
    c.uwsgi(2, 30, &[]);
    c.legiond(3, 40, &[]);
    c.wait_agreement(3, Duration::from_secs(6 * freq + 10));
    let window_start = Instant::now();
    thread::sleep(observe);
    c.wait_agreement(3, Duration::from_secs(2 * freq + 2));
    let window_end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();

    let seen = seen.lock().unwrap().clone();
    let limit = Duration::from_secs(2 * freq);
    let mut summary = String::new();
    for (i, node) in c.live().filter(|(_, n)| n.kind == Kind::Uwsgi) {
        let mut times: Vec<Instant> = seen.get(&node.port).cloned().unwrap_or_default();
        times.retain(|t| (window_start..window_end).contains(t));
        let mut marks = vec![window_start];
        marks.extend(&times);
        marks.push(window_end);
        let (worst_at, worst) =
            marks.windows(2).map(|w| (w[0], w[1] - w[0])).max_by_key(|(_, gap)| *gap).unwrap();
        let _ = writeln!(
            summary,
            "{}: {} announces in {:.1} s, largest gap {:.3} s (at +{:.1} s)",
            node.label,
            times.len(),
            secs(window_end - window_start),
            secs(worst),
            secs(worst_at - window_start)
        );
        assert!(
            worst < limit,
            "uWSGI node {i} was silent for {worst:?} (limit 2 × freq = {limit:?})\n{summary}\n{}",
            c.report()
        );
    }
    for (_, node) in c.live() {
        match node.kind {
            Kind::Uwsgi => assert!(
                node.log_line(0, "left Legion").is_none()
                    && node.log_line(0, "LEGION-EVENT node-left").is_none(),
                "{} expired a live node\n{summary}\n{}",
                node.label,
                c.report()
            ),
            Kind::Legiond => assert!(
                node.event(0, "node-left").is_none(),
                "{} saw a live node leave\n{summary}\n{}",
                node.label,
                c.report()
            ),
        }
    }
    eprint!("freq {freq} s / tolerance {tolerance} s:\n{summary}");
}

#[test]
fn no_uwsgi_node_is_starved_at_freq_1() {
    no_uwsgi_node_is_starved(1, 3, Duration::from_secs(20));
}

#[test]
fn no_uwsgi_node_is_starved_at_freq_3() {
    no_uwsgi_node_is_starved(3, 9, Duration::from_secs(24));
}

/// These are tests of record against uWSGI 2.0.21 (spec §0): say so if another is installed.
#[test]
fn the_peer_is_uwsgi_2_0_21() {
    let uwsgi = common::require_program("uwsgi");
    let out = Command::new(&uwsgi).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.starts_with("2.0.21"), "{} --version: {version}", uwsgi.display());
}
