//! Runs the `uwsgi-curl` program against the real uWSGI 2.0.21 (python3 plugin) serving
//! the echo app of spec/uwsgi-packet.md §8 (`tests/data/echo_app.py`), which answers with
//! the request's `environ` and body as JSON.
//!
//! Checks: a GET with a query string (REQUEST_METHOD, QUERY_STRING, decoded PATH_INFO,
//! REQUEST_URI, nginx's var order), a POST body, repeated headers (`environ` keeps the
//! last, spec §2.5), `--var`, TCP peer vars, a 60 KiB vars block (intact with
//! `--buffer-size 65535`, refused cleanly by a default 4096-byte uWSGI), connection
//! failures, a silent server with `--timeout 0.5`, and usage errors. One test captures the
//! request bytes on a plain listener instead, to check what uWSGI's `environ` cannot show
//! (duplicate vars in wire order, the modifiers) and the report of an empty reply.
//!
//! Each test starts its own uWSGI on a unix socket (or 127.0.0.1 with a kernel-assigned
//! port) in its own temporary directory, so the tests can run in parallel. Every wait is
//! bounded in time. A missing `uwsgi` is a failure, not a skip (`common::require_program`).

// Test code: a failed unwrap is a failed test. The helpers bound every wait with the clock
// and poll with sleep; these tests drive real processes, they are not a sans-IO core.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use std::ffi::OsStr;
use std::io::Read as _;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use uwsgi_packet::{Limits, Packet, content_length};

/// How long uWSGI may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(10);
/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(50);
/// How long one `uwsgi-curl` run may take (its own `--timeout` is 10 s per step).
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A uWSGI master + 1 worker serving the echo app, stopped (SIGTERM, `--die-on-term`)
/// and reaped on drop.
struct Uwsgi {
    child: Child,
    /// `unix:PATH` or `127.0.0.1:PORT`, as uwsgi-curl takes it.
    addr: String,
    log: PathBuf,
    // Kept last: the directory goes after the process is gone.
    _dir: tempfile::TempDir,
}

impl Uwsgi {
    /// Starts uWSGI on a unix socket in a fresh temporary directory.
    fn unix(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("uwsgi-curl-interop-").tempdir().unwrap();
        let sock = dir.path().join("uw.sock");
        let server = Self::spawn(dir, sock.as_os_str(), extra);
        let addr = format!("unix:{}", sock.display());
        server.wait_until(|_| UnixStream::connect(&sock).is_ok().then(|| addr.clone()))
    }

    /// Starts uWSGI on 127.0.0.1 with a port the kernel picks (read back from its log).
    fn tcp(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("uwsgi-curl-interop-").tempdir().unwrap();
        let server = Self::spawn(dir, OsStr::new("127.0.0.1:0"), extra);
        server.wait_until(|log| {
            // "uwsgi socket 0 bound to TCP address 127.0.0.1:34961 (port auto-assigned) fd 3"
            let line = log.lines().find(|l| l.contains("bound to TCP address 127.0.0.1:"))?;
            let addr = line.split_whitespace().find(|w| w.starts_with("127.0.0.1:"))?.to_owned();
            std::net::TcpStream::connect(&addr).is_ok().then_some(addr)
        })
    }

    fn spawn(dir: tempfile::TempDir, socket: &OsStr, extra: &[&str]) -> Self {
        let uwsgi = common::require_program("uwsgi");
        let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/echo_app.py");
        let log = dir.path().join("uw.log");
        let child = Command::new(&uwsgi)
            .args(["--plugin", "python3", "--socket"])
            .arg(socket)
            .arg("--wsgi-file")
            .arg(&app)
            .args(["--master", "--processes", "1", "--die-on-term", "--logto"])
            .arg(&log)
            .args(extra)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", uwsgi.display()));
        Self { child, addr: String::new(), log, _dir: dir }
    }

    /// Polls `ready` (given the log so far) every [`POLL`] until it yields the address,
    /// for at most [`START_LIMIT`].
    fn wait_until(mut self, mut ready: impl FnMut(&str) -> Option<String>) -> Self {
        let start = Instant::now();
        while start.elapsed() < START_LIMIT {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("uwsgi exited during startup ({status}); its log:\n{}", self.log());
            }
            if let Some(addr) = ready(&self.log()) {
                self.addr = addr;
                return self;
            }
            thread::sleep(POLL);
        }
        panic!("uwsgi was not accepting connections after {START_LIMIT:?}; its log:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs uwsgi-curl with `args` and then this server's address and `uri`.
    fn curl(&self, args: &[&str], uri: &str) -> Output {
        curl(&[args, &[self.addr.as_str(), uri]].concat())
    }

    /// Runs a request that must succeed and returns the echoed environ.
    fn environ(&self, args: &[&str], uri: &str) -> Value {
        let out = self.curl(args, uri);
        assert!(
            out.status.success(),
            "uwsgi-curl {args:?} {uri} failed ({}): {}\nuwsgi log:\n{}",
            out.status,
            stderr(&out),
            self.log()
        );
        echoed_environ(&out.stdout)
    }
}

impl Drop for Uwsgi {
    fn drop(&mut self) {
        // --die-on-term: SIGTERM stops the master and its worker (without it TERM reloads).
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `uwsgi-curl ARGS`, killing it (and failing) if it outlives [`RUN_LIMIT`].
fn curl(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_uwsgi-curl"));
    cmd.args(args);
    common::run_bounded(cmd, None, RUN_LIMIT)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Splits a raw HTTP response at the blank line.
fn split_response(raw: &[u8]) -> (&[u8], &[u8]) {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
    (&raw[..at], &raw[at + 4..])
}

/// The echo app's JSON from a full raw response, which must be a 200.
fn echoed_environ(raw: &[u8]) -> Value {
    let (head, body) = split_response(raw);
    let head = String::from_utf8_lossy(head);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "not a 200:\n{head}");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// `environ[key]` as a string (panics with the environ if absent).
fn var<'a>(environ: &'a Value, key: &str) -> &'a str {
    environ.get(key).and_then(Value::as_str).unwrap_or_else(|| panic!("no {key} in environ {environ:#}"))
}

/// The keys the echo app saw, in the order uWSGI inserted them (wire order).
fn keys_in_order(environ: &Value) -> Vec<&str> {
    environ["__keys_in_order__"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect()
}

/// nginx's var order with Debian's uwsgi_params, minus DOCUMENT_ROOT and HTTPS (spec §5).
const NGINX_ORDER: [&str; 13] = [
    "QUERY_STRING",
    "REQUEST_METHOD",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "REQUEST_URI",
    "PATH_INFO",
    "SERVER_PROTOCOL",
    "REQUEST_SCHEME",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "SERVER_PORT",
    "SERVER_NAME",
    "HTTP_HOST",
];

#[test]
fn get_with_a_query_string() {
    let uw = Uwsgi::unix(&[]);
    // Spec §8's first request.
    let env = uw.environ(&[], "/path/to?x=1&y=two%20words");
    assert_eq!(var(&env, "REQUEST_METHOD"), "GET");
    assert_eq!(var(&env, "QUERY_STRING"), "x=1&y=two%20words");
    assert_eq!(var(&env, "PATH_INFO"), "/path/to");
    assert_eq!(var(&env, "REQUEST_URI"), "/path/to?x=1&y=two%20words");
    assert_eq!(var(&env, "SERVER_PROTOCOL"), "HTTP/1.1");
    assert_eq!(var(&env, "REQUEST_SCHEME"), "http");
    // nginx sends CONTENT_TYPE and CONTENT_LENGTH empty on a GET (v01).
    assert_eq!(var(&env, "CONTENT_TYPE"), "");
    assert_eq!(var(&env, "CONTENT_LENGTH"), "");
    assert_eq!(var(&env, "__body__"), "");
    // Unix socket: no peer address.
    assert_eq!((var(&env, "REMOTE_ADDR"), var(&env, "REMOTE_PORT")), ("127.0.0.1", "0"));
    assert_eq!((var(&env, "SERVER_NAME"), var(&env, "HTTP_HOST")), ("localhost", "localhost"));
    assert_eq!(keys_in_order(&env)[..NGINX_ORDER.len()], NGINX_ORDER);

    // PATH_INFO is nginx's $document_uri: decoded, slashes merged, dot segments resolved;
    // REQUEST_URI is the target as sent; the fragment never leaves the client.
    let env = uw.environ(&[], "/a%20b//c/./d/%2e%2e/%C3%A9?q=%2F#frag");
    assert_eq!(var(&env, "PATH_INFO"), "/a b/c/\u{c3}\u{a9}", "latin-1 view of the UTF-8 bytes");
    assert_eq!(var(&env, "REQUEST_URI"), "/a%20b//c/./d/%2e%2e/%C3%A9?q=%2F");
    assert_eq!(var(&env, "QUERY_STRING"), "q=%2F");

    // --body-only prints exactly the body of the full response.
    let full = uw.curl(&[], "/same");
    let body = uw.curl(&["--body-only"], "/same");
    assert!(full.status.success() && body.status.success(), "{} {}", stderr(&full), stderr(&body));
    let (_, full_body) = split_response(&full.stdout);
    assert_eq!(full_body, &body.stdout[..]);
}

#[test]
fn post_with_a_body() {
    let uw = Uwsgi::unix(&[]);
    let env = uw.environ(&["-d", "hello=world&n=42"], "/submit");
    assert_eq!(var(&env, "REQUEST_METHOD"), "POST");
    assert_eq!(var(&env, "__body__"), "hello=world&n=42");
    assert_eq!(var(&env, "CONTENT_LENGTH"), "16");
    assert_eq!(var(&env, "CONTENT_TYPE"), "application/x-www-form-urlencoded");

    // -X and a Content-Type header; several -d are joined with '&' as curl does. nginx
    // also forwards the header itself as HTTP_CONTENT_TYPE (v02).
    let env = uw.environ(&["-X", "PUT", "-H", "Content-Type: text/plain", "-d", "a=1", "-d", "b=2"], "/put");
    assert_eq!(var(&env, "REQUEST_METHOD"), "PUT");
    assert_eq!(var(&env, "__body__"), "a=1&b=2");
    assert_eq!(var(&env, "CONTENT_LENGTH"), "7");
    assert_eq!(var(&env, "CONTENT_TYPE"), "text/plain");
    assert_eq!(var(&env, "HTTP_CONTENT_TYPE"), "text/plain");
}

#[test]
fn repeated_headers_extra_vars_and_host() {
    let uw = Uwsgi::unix(&[]);
    let env = uw.environ(
        &[
            "-H",
            "X-Dup: one",
            "-H",
            "X-Dup: two",
            "-H",
            "Host: Example.TEST:8080",
            "-H",
            "User-Agent: spec-client/1.0",
            "--var",
            "MY_VAR=hello=world",
            "--var",
            "UWSGI_SCHEME=https",
        ],
        "/dup",
    );
    // One var per header line; Python's environ keeps the last (spec §2.5).
    assert_eq!(var(&env, "HTTP_X_DUP"), "two");
    assert_eq!(var(&env, "HTTP_USER_AGENT"), "spec-client/1.0");
    // Host becomes nginx's $host and is not forwarded a second time.
    assert_eq!((var(&env, "HTTP_HOST"), var(&env, "SERVER_NAME")), ("example.test", "example.test"));
    // --var goes out raw (split at the first '='), after everything else, and uWSGI
    // interprets its own vars (spec §2.6: UWSGI_SCHEME sets wsgi.url_scheme).
    assert_eq!(var(&env, "MY_VAR"), "hello=world");
    assert_eq!(var(&env, "wsgi.url_scheme"), "https");
    let keys = keys_in_order(&env);
    let pos = |k: &str| keys.iter().position(|x| *x == k).unwrap_or_else(|| panic!("{k} not in {keys:?}"));
    assert!(pos("HTTP_HOST") < pos("HTTP_X_DUP") && pos("HTTP_X_DUP") < pos("HTTP_USER_AGENT"), "{keys:?}");
    assert!(pos("HTTP_USER_AGENT") < pos("MY_VAR") && pos("MY_VAR") < pos("UWSGI_SCHEME"), "{keys:?}");
}

#[test]
fn tcp_peer_and_server_vars() {
    let uw = Uwsgi::tcp(&[]);
    let env = uw.environ(&[], "/tcp");
    let port = uw.addr.rsplit_once(':').unwrap().1;
    assert_eq!(var(&env, "SERVER_PORT"), port);
    assert_eq!((var(&env, "SERVER_NAME"), var(&env, "HTTP_HOST")), ("127.0.0.1", "127.0.0.1"));
    assert_eq!(var(&env, "REMOTE_ADDR"), "127.0.0.1");
    let remote_port: u16 = var(&env, "REMOTE_PORT").parse().unwrap();
    assert_ne!(remote_port, 0);
    assert_eq!(var(&env, "PATH_INFO"), "/tcp");
}

/// A header whose value is 60 KiB of varied bytes, so a lost or moved byte shows.
fn sixty_kib_value() -> String {
    (0..60 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect()
}

#[test]
fn sixty_kib_of_vars_reach_a_large_buffer_uwsgi_intact() {
    let uw = Uwsgi::unix(&["--buffer-size", "65535"]);
    let big = sixty_kib_value();
    let header = format!("X-Big: {big}");
    let env = uw.environ(&["-H", &header, "-d", "tail"], "/big");
    assert_eq!(var(&env, "HTTP_X_BIG").len(), big.len());
    assert!(var(&env, "HTTP_X_BIG") == big, "the 60 KiB value was altered");
    assert_eq!(var(&env, "__body__"), "tail", "the body after a 60 KiB vars block");
}

#[test]
fn sixty_kib_of_vars_are_refused_cleanly_by_a_default_uwsgi() {
    let uw = Uwsgi::unix(&[]);
    let header = format!("X-Big: {}", sixty_kib_value());
    let start = Instant::now();
    let out = uw.curl(&["--timeout", "5", "-H", &header], "/big");
    // uWSGI reads the 4-byte header, sees datasize > 4096, closes without reading the
    // rest: the client sees a reset (or a broken pipe) and no reply (spec §3.1, §4).
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
    // Its log says why; poll briefly, the line may land just after the close.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !uw.log().contains("invalid request block size") && Instant::now() < deadline {
        thread::sleep(POLL);
    }
    assert!(uw.log().contains("invalid request block size: "), "uwsgi log:\n{}", uw.log());
    // And it still serves the next request.
    assert_eq!(var(&uw.environ(&[], "/after"), "PATH_INFO"), "/after");
}

#[test]
fn connection_failures_are_reported() {
    // A port that was just free: bind, read the port, close.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let out = curl(&["--timeout", "5", &addr, "/"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).starts_with(&format!("error: connecting to {addr}: ")), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix:{}", dir.path().join("missing.sock").display());
    let out = curl(&["--timeout", "5", &addr, "/"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).starts_with(&format!("error: connecting to {addr}: ")), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn a_silent_server_times_out() {
    // The kernel completes the handshake from the backlog; nobody ever reads or answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let start = Instant::now();
    let out = curl(&["--timeout", "0.5", &addr, "/"]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(4), "took {took:?}");
    drop(listener);
}

/// Accepts one connection on `listener` within 10 s, reads one request (header, vars,
/// `CONTENT_LENGTH` body bytes), then closes without replying. Returns the bytes read.
fn capture_one_request(listener: TcpListener) -> Vec<u8> {
    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && start.elapsed() < START_LIMIT => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("no connection within {START_LIMIT:?}: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut wire = vec![0; 4];
    conn.read_exact(&mut wire).unwrap();
    let datasize = usize::from(u16::from_le_bytes([wire[1], wire[2]]));
    wire.resize(4 + datasize, 0);
    conn.read_exact(&mut wire[4..]).unwrap();
    let (packet, _) = Packet::parse(&wire, &Limits::unlimited()).unwrap().at_eof().unwrap();
    let body_len = content_length(&packet.vars()).unwrap();
    let mut body = vec![0; usize::try_from(body_len).unwrap()];
    conn.read_exact(&mut body).unwrap();
    wire.extend_from_slice(&body);
    wire
}

#[test]
fn request_bytes_on_the_wire_and_an_empty_reply() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = thread::spawn(move || capture_one_request(listener));
    let out = curl(&[
        "--modifier1",
        "5",
        "--modifier2",
        "9",
        "-H",
        "X-Dup: one",
        "-H",
        "X-Dup: two",
        "-H",
        "X_Under: dropped",
        "--var",
        "X-RAW=1",
        "-d",
        "body bytes",
        &addr,
        "/w?q",
    ]);
    let wire = server.join().unwrap();
    // The capture closed without a byte of reply: a clean EOF, reported as such.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("closed the connection without replying"), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning: header `X_Under` dropped"), "{}", stderr(&out));

    let (packet, used) = Packet::parse(&wire, &Limits::unlimited()).unwrap().at_eof().unwrap();
    assert_eq!((packet.modifier1(), packet.modifier2()), (5, 9));
    assert_eq!(&wire[used..], b"body bytes", "the body follows the vars");
    let keys: Vec<&[u8]> = packet.vars().iter().map(|(k, _)| k).collect();
    let nginx: Vec<&[u8]> = NGINX_ORDER.iter().map(|k| k.as_bytes()).collect();
    assert_eq!(keys[..nginx.len()], nginx[..]);
    // One var per header line, in order (nginx 1.22, v03); the `--var` last, raw.
    assert_eq!(keys[nginx.len()..], [&b"HTTP_X_DUP"[..], b"HTTP_X_DUP", b"X-RAW"]);
    assert_eq!(packet.vars().get_all(b"HTTP_X_DUP").collect::<Vec<_>>(), [&b"one"[..], b"two"]);
    assert_eq!(packet.vars().get(b"CONTENT_LENGTH"), Some(&b"10"[..]));
    assert_eq!(packet.vars().get(b"REQUEST_URI"), Some(&b"/w?q"[..]));
}

#[test]
fn usage_errors_exit_2_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = format!("unix:{}", dir.path().join("missing.sock").display());
    let too_big = format!("X-Big: {}", "x".repeat(70_000));
    let cases: [&[&str]; 8] = [
        &[&nowhere, "no-slash"],
        &[&nowhere, "/bad%zz"],
        &[&nowhere, "/../etc"],
        &["127.0.0.1", "/"],
        &["-H", "no colon", &nowhere, "/"],
        &["--timeout", "0", &nowhere, "/"],
        &["--var", "NOEQUALS", &nowhere, "/"],
        // Vars over 65535 bytes cannot be framed (uWSGI would wrap the length; we refuse).
        &["-H", &too_big, &nowhere, "/"],
    ];
    for args in cases {
        let out = curl(args);
        let shown: Vec<&str> = args.iter().map(|a| if a.len() > 80 { "<70 KB header>" } else { a }).collect();
        assert_eq!(out.status.code(), Some(2), "{shown:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("error: "), "{shown:?}: {}", stderr(&out));
    }
    let out = curl(&["-H", &too_big, &nowhere, "/"]);
    assert!(stderr(&out).contains("65535"), "{}", stderr(&out));
}
