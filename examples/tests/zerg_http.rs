//! `zerg-http` and `http-load` end to end, with `zergpool`: serving on its own sockets
//! (TCP on 127.0.0.1 and [::1], unix path, abstract name), on sockets received from a
//! zergpool (matched to `--http-socket` by address), from systemd socket activation;
//! `--zerg-fallback` and uWSGI's exit-1 message without it; `--zerg-server` sharing with a
//! second instance (both pids answer, the first one stops and the second keeps serving);
//! a stranger refused by `--zerg-server`; the graceful stop (a request in flight
//! completes, new connections are refused at once) and its bound; `http-load`'s JSON and
//! exit status for refusals, timeouts and bad answers. The real-uWSGI interop and the
//! full hand-over test live elsewhere.
//!
//! Ports are 0 (the kernel picks), unix sockets live in per-test temporary directories,
//! abstract names carry the test's pid and name. Every wait is bounded; every child is
//! killed when its guard drops.

#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the clock and short sleeps")]
#![allow(clippy::unwrap_used, clippy::print_stderr, reason = "test code")]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::procs::{Proc, is};

const HTTP: &str = env!("CARGO_BIN_EXE_zerg-http");
const POOL: &str = env!("CARGO_BIN_EXE_zergpool");
const LOAD: &str = env!("CARGO_BIN_EXE_http-load");
/// Bound for any one thing to happen (start, attach, exit), generous for a loaded machine.
const WAIT: Duration = Duration::from_secs(10);
const NOBODY: u32 = 65534;

/// An abstract name unique to this test process and `tag`.
fn abstract_name(tag: &str) -> String {
    format!("@zerg-http-test-{}-{tag}", std::process::id())
}

fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// `zerg-http` with `--events-json` and `extra`, once it is listening.
fn zerg_http(extra: &[String]) -> (Proc, Value) {
    let mut all = extra.to_vec();
    all.push("--events-json".into());
    let p = Proc::start(HTTP, &all);
    let listening = p.wait_for("listening", WAIT, is("listening"));
    assert_eq!(listening["pid"], p.pid(), "{listening}");
    (p, listening)
}

/// Runs `http-load` with `extra` options; its exit status and summary.
fn load(extra: &[String]) -> (ExitStatus, Value) {
    let mut cmd = Command::new(LOAD);
    cmd.args(extra);
    let out = common::run_bounded(cmd, None, Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("http-load printed no JSON ({e}): {text:?}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status, summary)
}

/// `n` requests to `target`, which must all be answered by `pid`.
fn all_from(target: &str, n: u64, pid: u32) {
    let (status, summary) =
        load(&args(&["--target", target, "--requests", &n.to_string(), "--concurrency", "4"]));
    assert!(status.success(), "{target}: {summary}");
    assert_eq!(summary["ok"], n, "{target}: {summary}");
    assert_eq!(summary["by_pid"], json!({ pid.to_string(): n }), "{target}: {summary}");
}

/// Loads `target` in rounds until every pid in `pids` has answered (bounded rounds).
fn until_all_answer(target: &str, pids: &[u32]) -> Value {
    for _ in 0..10 {
        let (status, summary) = load(&args(&["--target", target, "--requests", "200", "--concurrency", "8"]));
        assert!(status.success(), "{summary}");
        if pids.iter().all(|p| summary["by_pid"][p.to_string()].as_u64().unwrap_or(0) > 0) {
            return summary;
        }
    }
    panic!("{pids:?} did not all answer on {target} in 10 rounds of 200 requests");
}

/// One raw request over TCP; the whole answer.
fn get(addr: &str, request: &[u8]) -> String {
    let addr: SocketAddr = addr.parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn serves_on_its_own_sockets_tcp_v4_v6_unix_and_abstract() {
    let dir = tempfile::tempdir().unwrap();
    let unix = path_str(&dir.path().join("h.sock"));
    let abs = abstract_name("own");
    let (p, listening) = zerg_http(&args(&[
        "--http-socket",
        "127.0.0.1:0",
        "--http-socket",
        "[::1]:0",
        "--http-socket",
        &unix,
        "--http-socket",
        &abs,
        "--text",
        "own sockets",
    ]));
    let addrs = strings(&listening["addrs"]);
    assert_eq!(listening["sources"], json!(["bound", "bound", "bound", "bound"]));
    assert!(addrs[0].starts_with("127.0.0.1:") && addrs[1].starts_with("[::1]:"), "{addrs:?}");
    assert_eq!(addrs[2..], [unix.clone(), abs]);
    let pid = p.pid();
    for target in &addrs {
        all_from(target, 20, pid);
    }
    // The answer, byte for byte, and a POST whose body is read and discarded.
    let answer = get(&addrs[0], b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    let body = format!("{pid} own sockets\n");
    assert_eq!(
        answer,
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    );
    let answer = get(&addrs[1], b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with(&body), "{answer}");
    let answer = get(&addrs[0], b"garbage\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let answer = get(&addrs[0], format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000)).as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    // --duration-ms and --until-file end the run too.
    let (status, summary) = load(&args(&["--target", &addrs[0], "--duration-ms", "300"]));
    assert!(status.success() && summary["ok"].as_u64().unwrap() > 0, "{summary}");
    let flag = dir.path().join("done");
    let f = flag.clone();
    let toucher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(f, b"").unwrap();
    });
    let started = Instant::now();
    let (status, summary) =
        load(&args(&["--target", &unix, "--until-file", &path_str(&flag), "--max-ms", "20000"]));
    toucher.join().unwrap();
    assert!(status.success() && summary["ok"].as_u64().unwrap() > 0, "{summary}");
    assert!(started.elapsed() < Duration::from_secs(15), "--until-file stopped the run");

    p.signal("-TERM");
    let stopped = p.wait_for("stopped", WAIT, is("stopped"));
    assert!(stopped["served"].as_u64().unwrap() >= 83, "{stopped}");
    assert!(p.expect_exit(WAIT).success(), "{}", p.stderr_text());
}

#[test]
fn attaches_to_a_zergpool_and_serves_the_received_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let pool_sock = path_str(&dir.path().join("pool.sock"));
    let unix = path_str(&dir.path().join("app.sock"));
    let pool = Proc::start(
        POOL,
        &args(&["--zergpool", &format!("{pool_sock}:127.0.0.1:0,{unix}"), "--events-json"]),
    );
    let pooled = strings(&pool.wait_for("listening", WAIT, is("listening"))["addrs"]);
    // The pool's TCP address is also configured: the received socket is used for it
    // (client::assign), and the other --http-socket is bound.
    let (a, listening) = zerg_http(&args(&[
        "--zerg",
        &pool_sock,
        "--http-socket",
        &pooled[0],
        "--http-socket",
        "127.0.0.1:0",
        "--text",
        "a",
    ]));
    let addrs = strings(&listening["addrs"]);
    assert_eq!(listening["sources"], json!(["zerg", "bound", "zerg"]), "{listening}");
    assert_eq!((addrs[0].as_str(), addrs[2].as_str()), (pooled[0].as_str(), pooled[1].as_str()));
    let served = pool.wait_for("served", WAIT, is("served"));
    assert_eq!((served["pid"].as_u64(), served["fds"].as_u64()), (Some(u64::from(a.pid())), Some(2)));
    a.wait_stderr(&format!("uwsgi zerg socket 0 attached to INET address {} fd ", pooled[0]), WAIT);
    // The pool never accepts: every answer comes from the zerg.
    all_from(&pooled[0], 30, a.pid());
    all_from(&pooled[1], 30, a.pid());
    // A second zerg on the same pool shares the load.
    let (b, _) = zerg_http(&args(&["--zerg", &pool_sock, "--text", "b"]));
    until_all_answer(&pooled[0], &[a.pid(), b.pid()]);
    // The first stops; the pool's sockets live on in the second.
    a.signal("-INT");
    a.wait_for("stopped", WAIT, is("stopped"));
    assert!(a.expect_exit(WAIT).success());
    all_from(&pooled[0], 30, b.pid());
    all_from(&pooled[1], 30, b.pid());
}

#[test]
fn zerg_fallback_binds_the_sockets_itself_and_without_it_a_failed_attach_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = path_str(&dir.path().join("missing.sock"));
    let (p, listening) =
        zerg_http(&args(&["--zerg", &missing, "--zerg-fallback", "--http-socket", "127.0.0.1:0"]));
    assert_eq!(listening["sources"], json!(["bound"]));
    p.wait_stderr(&format!("--- unable to connect to zerg server {missing} ---"), WAIT);
    all_from(listening["addrs"][0].as_str().unwrap(), 10, p.pid());
    p.signal("-INT");
    assert!(p.expect_exit(WAIT).success());

    let mut cmd = Command::new(HTTP);
    cmd.args(["--zerg", &missing, "--http-socket", "127.0.0.1:0"]);
    let out = common::run_bounded(cmd, None, WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("--- unable to connect to zerg server {missing} ---")), "{stderr}");
    // An empty pool is valid data for our client, but leaves nothing to serve.
    let empty = abstract_name("empty");
    let pool = Proc::start(POOL, &args(&["--zergpool", &format!("{empty}:"), "--events-json"]));
    pool.wait_for("listening", WAIT, is("listening"));
    let mut cmd = Command::new(HTTP);
    cmd.args(["--zerg", &empty]);
    let out = common::run_bounded(cmd, None, WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing to listen on"), "{stderr}");
}

#[test]
fn zerg_server_shares_every_listener_with_a_second_instance() {
    let dir = tempfile::tempdir().unwrap();
    let zs = dir.path().join("zs.sock");
    let unix = path_str(&dir.path().join("h.sock"));
    let (a, listening) = zerg_http(&args(&[
        "--http-socket",
        "127.0.0.1:0",
        "--http-socket",
        &unix,
        "--zerg-server",
        &path_str(&zs),
        "--text",
        "a",
    ]));
    assert_eq!(mode(&zs), 0o600, "the zerg server socket's default mode");
    let addrs = strings(&listening["addrs"]);
    let (b, b_listening) = zerg_http(&args(&["--zerg", &path_str(&zs), "--text", "b"]));
    assert_eq!(b_listening["addrs"], listening["addrs"]);
    assert_eq!(b_listening["sources"], json!(["zerg", "zerg"]));
    let served = a.wait_for("zerg-served", WAIT, is("zerg-served"));
    assert_eq!(served["zerg_server"], path_str(&zs));
    assert_eq!((served["pid"].as_u64(), served["fds"].as_u64()), (Some(u64::from(b.pid())), Some(2)));
    assert_eq!(served["uid"], std::fs::metadata("/proc/self").unwrap().uid());
    let summary = until_all_answer(&addrs[0], &[a.pid(), b.pid()]);
    eprintln!("shared: {summary}");
    until_all_answer(&unix, &[a.pid(), b.pid()]);
    // A stops: its zerg server goes (the file too); B keeps every socket.
    a.signal("-INT");
    a.wait_for("stopped", WAIT, is("stopped"));
    assert!(a.expect_exit(WAIT).success(), "{}", a.stderr_text());
    assert!(!zs.exists(), "the zerg server socket file is removed");
    all_from(&addrs[0], 50, b.pid());
    all_from(&unix, 50, b.pid());
}

#[test]
fn zerg_server_refuses_a_peer_not_on_the_allow_list() {
    assert_eq!(
        std::fs::metadata("/proc/self").unwrap().uid(),
        0,
        "this test starts a zerg as uid {NOBODY}: run it as root (scripts/test.sh does)"
    );
    // An abstract name: no file permissions, only the peer check (spec §7).
    let zs = abstract_name("zs");
    let (a, _) = zerg_http(&args(&["--http-socket", "127.0.0.1:0", "--zerg-server", &zs]));
    let mut cmd = Command::new(HTTP);
    cmd.args(["--zerg", &zs]).uid(NOBODY).gid(NOBODY);
    let out = common::run_bounded(cmd, None, WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--- invalid data received from zerg-server ---"), "{stderr}");
    let refused = a.wait_for("zerg-refused", WAIT, is("zerg-refused"));
    assert_eq!(
        (refused["uid"].as_u64(), refused["reason"].as_str()),
        (Some(u64::from(NOBODY)), Some("not-allowed"))
    );
    assert!(!a.json_lines().iter().any(is("zerg-served")));
}

#[test]
fn sigint_finishes_the_request_in_flight_and_refuses_new_connections_at_once() {
    let (p, listening) = zerg_http(&args(&["--http-socket", "127.0.0.1:0"]));
    let addr = listening["addrs"][0].as_str().unwrap().to_owned();
    let sa: SocketAddr = addr.parse().unwrap();
    let mut slow = TcpStream::connect_timeout(&sa, WAIT).unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n").unwrap();
    // A complete request on a second connection: once it is answered, the first one,
    // queued before it on the same socket, has been accepted too.
    let answer = get(&addr, b"GET / HTTP/1.1\r\nHost: quick\r\n\r\n");
    assert!(answer.ends_with(&format!("{} hello\n", p.pid())), "{answer}");

    p.signal("-INT");
    let stopping = p.wait_for("stopping", WAIT, is("stopping"));
    assert_eq!(stopping["in_flight"], 1, "{stopping}");
    // The only holder closed its listener: nobody accepts any more.
    let refused = TcpStream::connect_timeout(&sa, WAIT).map(|_| ()).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");
    // The request in flight still completes.
    slow.write_all(b"\r\n").unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with(&format!("{} hello\n", p.pid())), "{answer}");
    let stopped = p.wait_for("stopped", WAIT, is("stopped"));
    assert_eq!(stopped["served"], 2);
    assert!(p.expect_exit(WAIT).success(), "{}", p.stderr_text());
}

#[test]
fn a_graceful_stop_is_bounded_and_a_second_signal_ends_it() {
    for second_signal in [false, true] {
        let (p, listening) = zerg_http(&args(&["--http-socket", "127.0.0.1:0", "--stop-timeout-ms", "500"]));
        let addr = listening["addrs"][0].as_str().unwrap().to_owned();
        let sa: SocketAddr = addr.parse().unwrap();
        let _idle = TcpStream::connect_timeout(&sa, WAIT).unwrap();
        get(&addr, b"GET / HTTP/1.1\r\n\r\n");
        let started = Instant::now();
        p.signal("-TERM");
        assert_eq!(p.wait_for("stopping", WAIT, is("stopping"))["in_flight"], 1);
        if second_signal {
            p.signal("-TERM");
        }
        let stopped = p.wait_for("stopped", WAIT, is("stopped"));
        assert_eq!(stopped["served"], 1);
        assert!(p.expect_exit(WAIT).success());
        let took = started.elapsed();
        if !second_signal {
            assert!(took >= Duration::from_millis(450), "waited for the request in flight: {took:?}");
        }
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}

#[test]
fn systemd_socket_activation_provides_the_listeners() {
    let python = common::require_program("python3");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // Binds the socket as fd 3 and execs zerg-http with LISTEN_PID (exec keeps the pid).
    // The same address is also given as --http-socket: the inherited socket serves it.
    let script = format!(
        "import os, socket\n\
         s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(64)\n\
         os.dup2(s.fileno(), 3); os.set_inheritable(3, True)\n\
         os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='http')\n\
         os.execv({HTTP:?}, [{HTTP:?}, '--events-json', '--http-socket', '127.0.0.1:{port}'])\n"
    );
    let mut cmd = Command::new(python);
    cmd.args(["-c", &script]);
    let p = Proc::command(cmd);
    let listening = p.wait_for("listening", WAIT, is("listening"));
    assert_eq!(listening["sources"], json!(["systemd"]), "{listening}");
    assert_eq!(listening["addrs"], json!([format!("127.0.0.1:{port}")]));
    all_from(&format!("127.0.0.1:{port}"), 20, p.pid());
    p.signal("-INT");
    assert!(p.expect_exit(WAIT).success(), "{}", p.stderr_text());
}

#[test]
fn invalid_options_exit_2() {
    let cases: [(&[&str], &str); 5] = [
        (&["--zerg", "/tmp/a:43199"], "zerg servers are unix sockets"),
        (&["--http-socket", "nowhere:http"], "not a TCP address"),
        (&["--http-socket", "127.0.0.1:0", "--chmod-socket", "9"], "invalid chmod value"),
        (&["--http-socket", "127.0.0.1:0", "--stop-timeout-ms", "20000"], "20000"),
        (&[], "nothing to listen on"),
    ];
    for (list, message) in cases {
        let mut cmd = Command::new(HTTP);
        cmd.args(list);
        let out = common::run_bounded(cmd, None, WAIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{list:?}: {stderr}");
        assert!(stderr.contains(message), "{list:?}: {stderr}");
    }
    let mut cmd = Command::new(LOAD);
    cmd.args(["--target", "127.0.0.1:1"]);
    let out = common::run_bounded(cmd, None, WAIT);
    assert_eq!(out.status.code(), Some(2), "http-load needs a mode");
}

#[test]
fn http_load_counts_refusals_timeouts_and_bad_answers() {
    // Refused: nothing listens on a port that was just free.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (status, summary) = load(&args(&["--target", &format!("127.0.0.1:{port}"), "--requests", "3"]));
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        serde_json::to_string(&summary).unwrap(),
        r#"{"by_pid":{},"failed":0,"latency_us":{"max":0,"p50":0,"p99":0},"ok":0,"refused":3,"timeouts":0}"#
    );
    let dir = tempfile::tempdir().unwrap();
    let (status, summary) =
        load(&args(&["--target", &path_str(&dir.path().join("none.sock")), "--requests", "2"]));
    assert_eq!((status.code(), summary["refused"].as_u64()), (Some(1), Some(2)));

    // Timeouts: a listener that never accepts (the kernel completes the handshakes).
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let (status, summary) =
        load(&args(&["--target", &target, "--requests", "2", "--concurrency", "2", "--timeout-ms", "200"]));
    assert_eq!((status.code(), summary["timeouts"].as_u64()), (Some(1), Some(2)), "{summary}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Failed: a 503, and a server that closes without answering.
    let bad = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = bad.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        for (i, conn) in bad.incoming().take(2).enumerate() {
            let mut conn = conn.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            if i == 0 {
                let _ = conn.write_all(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
            }
        }
    });
    let (status, summary) = load(&args(&["--target", &target, "--requests", "2", "--concurrency", "1"]));
    server.join().unwrap();
    assert_eq!(
        (status.code(), summary["failed"].as_u64(), summary["ok"].as_u64()),
        (Some(1), Some(2), Some(0))
    );

    // The summary's keys come in the documented order.
    let (p, listening) = zerg_http(&args(&["--http-socket", "127.0.0.1:0"]));
    let mut cmd = Command::new(LOAD);
    cmd.args(["--target", listening["addrs"][0].as_str().unwrap(), "--requests", "5"]);
    let out = common::run_bounded(cmd, None, WAIT);
    let line = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        r#"{{"ok":5,"failed":0,"refused":0,"timeouts":0,"by_pid":{{"{}":5}},"latency_us":{{"p50":"#,
        p.pid()
    );
    assert!(line.starts_with(&expected), "{line}");
    assert!(out.status.success());
    p.signal("-INT");
    assert!(p.expect_exit(WAIT).success());
}
