//! `legiond` end to end: real processes on 127.0.0.1 with millisecond timers
//! (`--legion-freq-ms 100 --legion-tolerance-ms 400`), read through `--events-json`:
//! election of the highest valor, failover after SIGKILL (expiry) and after SIGINT (death
//! announce), `--ini` files, `--stats`, uWSGI's log lines, invalid options, and one
//! election with a real uWSGI 2.0.21 node (a missing `uwsgi` is a failure, not a skip:
//! `common::require_program`).
//!
//! Every wait is bounded; every child is killed when its guard drops.

// Tests bound their waits with the clock and short sleeps.
#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the clock and short sleeps")]
#![allow(clippy::unwrap_used, clippy::print_stderr, reason = "test code")]

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_legiond");
const TOLERANCE: Duration = Duration::from_millis(400);
/// Bound for a first election (warm-up and a few rounds), generous for a loaded machine.
const ELECTION: Duration = Duration::from_secs(8);
const FAST: [&str; 4] = ["--legion-freq-ms", "100", "--legion-tolerance-ms", "400"];

/// `n` UDP ports free on 127.0.0.1 right now.
fn free_udp_ports(n: usize) -> Vec<u16> {
    #[allow(clippy::disallowed_types, reason = "only to find free ports")]
    let sockets: Vec<std::net::UdpSocket> =
        (0..n).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    sockets.iter().map(|s| s.local_addr().unwrap().port()).collect()
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The options of node `i` (valor `valors[i]`) of a cluster on `ports`.
fn node_args(ports: &[u16], valors: &[u16], i: usize) -> Vec<String> {
    let mut args =
        vec!["--legion".to_owned(), format!("lg 127.0.0.1:{} {} aes-128-cbc:secret", ports[i], valors[i])];
    for p in ports {
        args.push("--legion-node".into());
        args.push(format!("lg 127.0.0.1:{p}"));
    }
    args.extend(FAST.iter().map(|s| (*s).to_owned()));
    args
}

/// A running `legiond`; killed on drop.
struct Node {
    child: Child,
    valor: u16,
    lines: Receiver<Value>,
    events: Vec<Value>,
    stderr: Arc<Mutex<String>>,
}

impl Node {
    fn start(valor: u16, args: &[String]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
                if tx.send(value).is_err() {
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
        Self { child, valor, lines, events: Vec::new(), stderr }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Events received so far; the index to pass to [`Node::wait_for`] for later ones.
    fn mark(&mut self) -> usize {
        while let Ok(v) = self.lines.try_recv() {
            self.events.push(v);
        }
        self.events.len()
    }

    /// The first event from index `from` on that matches `pred`, within `limit`.
    fn wait_for(&mut self, from: usize, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        let mut i = from;
        loop {
            while i < self.events.len() {
                if pred(&self.events[i]) {
                    return self.events[i].clone();
                }
                i += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => self.events.push(v),
                Err(RecvTimeoutError::Timeout) => panic!(
                    "node {}: no {what} within {limit:?}; events: {:#?}\nstderr: {}",
                    self.valor,
                    self.events,
                    self.stderr.lock().unwrap()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "node {}: exited before {what}; events: {:#?}\nstderr: {}",
                    self.valor,
                    self.events,
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([name, &self.pid()]).status().unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "node {} did not exit within {limit:?}", self.valor);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is(event: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["event"] == event
}

/// Three nodes (valors 10, 20, 30) started together, with `extra(i)` options each.
fn cluster(extra: impl Fn(usize) -> Vec<String>) -> Vec<Node> {
    let valors = [10, 20, 30];
    let ports = free_udp_ports(3);
    (0..3)
        .map(|i| {
            let mut args = node_args(&ports, &valors, i);
            args.push("--events-json".into());
            args.extend(extra(i));
            Node::start(valors[i], &args)
        })
        .collect()
}

/// Waits until node 30 is lord and the others agree on it; returns its lord event.
fn elect_30(nodes: &mut [Node]) -> Value {
    let lord = nodes[2].wait_for(0, "lord event", ELECTION, is("lord"));
    for node in &mut nodes[..2] {
        node.wait_for(0, "agreement on valor 30", ELECTION, |v| v["lord_valor"] == 30);
    }
    lord
}

#[test]
fn three_nodes_elect_the_highest_valor_and_fail_over_after_sigkill() {
    let mut nodes = cluster(|_| Vec::new());
    let lord = elect_30(&mut nodes);
    assert_eq!(lord["valor"], 30);
    assert_eq!(lord["lord_valor"], 30);
    assert_eq!(lord["lord_uuid"].as_str().unwrap().len(), 36);
    let old_epoch = lord["epoch"].as_u64().unwrap();
    // Exactly one lord: let a few tolerances pass, nobody else claims it.
    std::thread::sleep(3 * TOLERANCE);
    for node in &mut nodes {
        node.mark();
    }
    for node in &nodes[..2] {
        assert!(
            !node.events.iter().any(is("lord")),
            "node {} became lord too: {:#?}",
            node.valor,
            node.events
        );
    }
    assert_eq!(nodes[2].events.iter().filter(|v| is("lord")(v)).count(), 1);

    let from = [nodes[0].mark(), nodes[1].mark()];
    nodes[2].signal("-KILL");
    let killed = Instant::now();
    let new = nodes[1].wait_for(
        from[1],
        "lord event after the kill",
        TOLERANCE + Duration::from_secs(3),
        is("lord"),
    );
    let took = killed.elapsed();
    eprintln!("failover after SIGKILL in {took:?}");
    assert!(new["epoch"].as_u64().unwrap() > old_epoch, "{new} after epoch {old_epoch}");
    // The crash is found by expiry: node-left, reason expired, at both survivors.
    for (i, node) in nodes[..2].iter_mut().enumerate() {
        let left = node.wait_for(from[i], "node-left", Duration::from_secs(2), is("node-left"));
        assert_eq!(left["reason"], "expired");
        assert_eq!(left["node"]["valor"], 30);
    }
    // Events are edge-triggered: node 10 reports no new agreement, but it never claims
    // the lordship.
    std::thread::sleep(2 * TOLERANCE);
    nodes[0].mark();
    assert!(!nodes[0].events.iter().any(is("lord")), "{:#?}", nodes[0].events);
}

#[test]
fn sigint_of_the_lord_announces_its_death_and_hands_over_at_once() {
    let mut nodes = cluster(|i| {
        if i == 2 { vec!["--legion-death".into(), "lg log:goodbye from 30".into()] } else { Vec::new() }
    });
    elect_30(&mut nodes);
    let from = [nodes[0].mark(), nodes[1].mark()];
    nodes[2].signal("-INT");
    let stopped = Instant::now();
    let new = nodes[1].wait_for(from[1], "lord event after SIGINT", Duration::from_secs(2), is("lord"));
    let took = stopped.elapsed();
    eprintln!("graceful hand-over in {took:?}");
    assert!(took < Duration::from_secs(1), "hand-over took {took:?}");
    assert_eq!(new["valor"], 20);
    for (i, node) in nodes[..2].iter_mut().enumerate() {
        let left = node.wait_for(from[i], "node-left", Duration::from_secs(1), is("node-left"));
        assert_eq!(left["reason"], "announced");
        assert_eq!(left["node"]["valor"], 30);
    }
    // The stopped node ran its death action, printed its death event, and exited 0.
    let status = nodes[2].wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status:?}");
    nodes[2].wait_for(0, "death event", Duration::from_secs(1), is("death"));
    assert!(nodes[2].stderr().contains("goodbye from 30"), "{}", nodes[2].stderr());
}

#[test]
fn an_ini_file_is_equivalent_to_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_udp_ports(2);
    let ini = dir.path().join("node.ini");
    std::fs::write(
        &ini,
        format!(
            "# a uWSGI config, pasted\n\
             [uwsgi]\n\
             master = true\n\
             legion = lg 127.0.0.1:{p0} 20 aes-128-cbc:secret\n\
             ; targets, in order, the key repeated\n\
             legion-node = lg 127.0.0.1:{p0}\n\
             legion-node = lg 127.0.0.1:{p1}\n\
             legion-freq-ms = 100\n\
             legion-tolerance-ms = 400\n\
             legion-lord = lg log:INI-LORD\n\
             events-json = true\n\
             [other]\n\
             legion = this section is ignored\n",
            p0 = ports[0],
            p1 = ports[1],
        ),
    )
    .unwrap();
    let mut a = Node::start(20, &["--ini".to_owned(), ini.display().to_string()]);
    let mut b_args = node_args(&ports, &[20, 10], 1);
    b_args.push("--events-json".into());
    let mut b = Node::start(10, &b_args);
    a.wait_for(0, "lord event", ELECTION, is("lord"));
    b.wait_for(0, "agreement on valor 20", ELECTION, |v| v["lord_valor"] == 20);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !a.stderr().contains("INI-LORD") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = a.stderr();
    assert!(log.contains("INI-LORD"), "{log}");
    assert!(log.contains("master: not a legiond option, ignored"), "{log}");
}

#[test]
fn stats_serve_uwsgi_legions_json_and_log_lines_follow_uwsgi() {
    let port = free_udp_ports(1)[0];
    let stats = free_tcp_port();
    let mut args = node_args(&[port], &[10], 0);
    args.extend(["--stats".to_owned(), format!("127.0.0.1:{stats}")]);
    args.extend(["--legion-quorum".to_owned(), "lg 1".to_owned(), "--node-name".to_owned(), "n1".to_owned()]);
    // No --events-json: uWSGI's log lines on stderr.
    let node = Node::start(10, &args);
    let deadline = Instant::now() + ELECTION;
    while !node.stderr().contains("i am now the Lord of the Legion lg") {
        assert!(Instant::now() < deadline, "no lord line: {}", node.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut s = TcpStream::connect(("127.0.0.1", stats)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let doc: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let l = &doc["legions"][0];
    assert_eq!(l["legion"], "lg");
    assert_eq!(l["addr"], format!("127.0.0.1:{port}"));
    assert_eq!(l["valor"], 10);
    assert_eq!(l["quorum"], 1);
    assert_eq!(l["state"], "lord");
    assert_eq!(l["epoch"], 1);
    assert!(l["i_am_the_lord"].as_u64().unwrap() > 1_600_000_000, "{l}");
    assert_eq!(l["lord_valor"], 10);
    assert_eq!(l["lord_uuid"], l["uuid"]);
    assert_eq!(l["nodes"], serde_json::json!([format!("127.0.0.1:{port}")]));
    assert_eq!(l["members"], serde_json::json!([]));
    assert!(l["checksum"].as_u64().unwrap() > 10);
    let log = node.stderr();
    assert!(log.contains("[uwsgi-legion] --- WE HAVE QUORUM FOR LEGION lg !!!"), "{log}");
}

fn run_invalid(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("legiond {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn invalid_options_exit_2_with_a_message_naming_the_option() {
    let legion = "lg 127.0.0.1:0 10 aes-128-cbc:secret";
    let dir = tempfile::tempdir().unwrap();
    let bad_ini = dir.path().join("bad.ini");
    std::fs::write(&bad_ini, "[uwsgi]\nlegion-node = other 127.0.0.1:1\n").unwrap();
    let bad_ini = bad_ini.display().to_string();
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--legion", "lg 127.0.0.1:0 ten aes-128-cbc:secret"], vec!["--legion", "valor"]),
        (vec!["--legion", "lg 127.0.0.1:0 70000 aes-128-cbc:secret"], vec!["--legion", "65535"]),
        (vec!["--legion", "lg 127.0.0.1:0 10"], vec!["--legion", "expected"]),
        (vec!["--legion", "lg 127.0.0.1:0 10 rot13:secret"], vec!["--legion", "rot13"]),
        (vec!["--legion", "lg 127.0.0.1:0 10 aes-128-cbc:s", "--legion", legion], vec!["already declared"]),
        (
            vec!["--legion-node", "lg 127.0.0.1:1", "--legion", legion],
            vec!["--legion-node", "unknown legion: lg"],
        ),
        (
            vec!["--legion", legion, "--legion-quorum", "other 2"],
            vec!["--legion-quorum", "unknown legion: other"],
        ),
        (vec!["--legion", legion, "--legion-freq", "abc"], vec!["--legion-freq", "abc"]),
        (
            vec!["--legion", legion, "--legion-lord", "lg nocolon"],
            vec!["--legion-lord", "invalid lord action"],
        ),
        (vec!["--legion", legion, "--legion-node", "lg [::1]:1"], vec!["--legion-node", "[::1]:1"]),
        (
            vec!["--legion", legion, "--legion-freq", "5", "--legion-tolerance", "2"],
            vec!["tolerance", "--legion-tolerance"],
        ),
        (vec!["--legion-mcast", legion], vec!["--legion-mcast", "not a multicast group"]),
        (
            vec!["--legion", legion, "--ini", &bad_ini],
            vec!["bad.ini:2: legion-node", "unknown legion: other"],
        ),
        (vec!["--legion", legion, "--ini", "/nonexistent/x.ini"], vec!["--ini", "cannot read"]),
        (vec!["--legion", legion, "--stats", "nowhere"], vec!["--stats"]),
        (vec![], vec!["no legion configured"]),
        (vec!["--no-such-option"], vec!["--no-such-option"]),
    ];
    for (args, needles) in cases {
        let out = run_invalid(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "legiond {args:?}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "legiond {args:?}: {needle:?} not in {stderr:?}");
        }
        assert!(out.stdout.is_empty(), "legiond {args:?} printed {:?}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn a_port_in_use_exits_1() {
    #[allow(clippy::disallowed_types, reason = "holds the port the node wants")]
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let spec = format!("lg 127.0.0.1:{port} 10 aes-128-cbc:secret");
    let out = run_invalid(&["--legion", &spec]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot bind"), "{stderr}");
}

/// A real uWSGI node; killed on drop.
struct Uwsgi {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Uwsgi {
    fn start(args: &[String]) -> Self {
        let uwsgi = common::require_program("uwsgi");
        let mut child = Command::new(&uwsgi)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", uwsgi.display()));
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Self { child, log }
    }

    /// Waits for a log line containing `needle`, written after byte `from` of the log.
    fn wait_log(&self, from: usize, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log.lock().unwrap().get(from..).unwrap_or_default().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "uWSGI logged no {needle:?} within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Uwsgi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spec §7.2 and §5: uWSGI 2.0.21 (valor 10) and legiond (valor 20), freq 1 / tolerance 3.
/// Both agree on legiond as lord; when legiond stops, its death announce makes uWSGI lord
/// within a few seconds, not after the tolerance.
#[test]
fn legiond_and_a_real_uwsgi_node_elect_one_lord_and_hand_over() {
    let ports = free_udp_ports(2);
    let uwsgi = Uwsgi::start(&[
        "--master".into(),
        "--die-on-term".into(),
        "--legion".into(),
        format!("lg 127.0.0.1:{} 10 aes-128-cbc:secret", ports[0]),
        "--legion-node".into(),
        format!("lg 127.0.0.1:{}", ports[1]),
        "--legion-freq".into(),
        "1".into(),
        "--legion-tolerance".into(),
        "3".into(),
        "--legion-lord".into(),
        "lg log:LEGION-EVENT lord".into(),
    ]);
    let mut node = Node::start(
        20,
        &[
            "--legion".into(),
            format!("lg 127.0.0.1:{} 20 aes-128-cbc:secret", ports[1]),
            "--legion-node".into(),
            format!("lg 127.0.0.1:{}", ports[0]),
            "--legion-freq".into(),
            "1".into(),
            "--legion-tolerance".into(),
            "3".into(),
            "--events-json".into(),
        ],
    );
    let limit = Duration::from_secs(15);
    node.wait_for(0, "lord event", limit, is("lord"));
    let joined = node.wait_for(0, "the uWSGI node joining", limit, is("node-joined"));
    assert_eq!(joined["node"]["valor"], 10);
    // uWSGI agrees: its quorum report counts both nodes and votes for valor 20.
    uwsgi.wait_log(0, "joined Legion lg", limit);
    uwsgi.wait_log(0, "votes: 2", limit);
    assert!(!uwsgi.log().contains("LEGION-EVENT lord"), "uWSGI became lord too:\n{}", uwsgi.log());

    let from = uwsgi.log().len();
    node.signal("-INT");
    let stopped = Instant::now();
    assert!(node.wait_exit(Duration::from_secs(5)).success());
    uwsgi.wait_log(from, "announced its death to Legion lg", Duration::from_secs(5));
    uwsgi.wait_log(from, "i am now the Lord of the Legion lg", Duration::from_secs(5));
    let took = stopped.elapsed();
    eprintln!("uWSGI took over {took:?} after SIGINT");
    // Faster than expiry (tolerance 3 s + 1 + up to one period, spec §5).
    assert!(took < Duration::from_secs(4), "{took:?}");
}
