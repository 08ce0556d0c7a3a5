//! `uwsgi-echo-server` end to end: real sockets (TCP on 127.0.0.1 and a unix socket),
//! valid requests and vectors echoed exactly, every malformed vector refused without a
//! reply while the server keeps serving, fragmentation, HTTP detection, idle timeouts,
//! limits and many concurrent connections.

// Tests wait for a child process with bounded polling (Instant::now + thread::sleep).
#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the clock and short sleeps")]
#![allow(clippy::unwrap_used, clippy::print_stderr, reason = "test code")]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use uwsgi_packet::encode_packet;

/// Upper bound for every wait in this file.
const WAIT: Duration = Duration::from_secs(10);

fn vectors_dir() -> PathBuf {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/uwsgi-packet"));
    assert!(
        dir.join("malformed.json").is_file(),
        "the uwsgi-packet test vectors are missing: expected them in {}",
        dir.display()
    );
    dir.to_path_buf()
}

fn read_hex(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = text.trim();
    assert!(text.len().is_multiple_of(2), "{}: odd number of hex digits", path.display());
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

/// A running `uwsgi-echo-server` with a TCP and a unix listener. Dropping it kills it.
struct Server {
    child: Child,
    tcp: SocketAddr,
    unix: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let unix = dir.path().join("echo.sock");
        // A stale socket file, as a killed server leaves behind: it must be replaced.
        drop(std::os::unix::net::UnixListener::bind(&unix).unwrap());
        assert!(unix.exists());
        let mut child = Command::new(env!("CARGO_BIN_EXE_uwsgi-echo-server"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--listen")
            .arg(format!("unix:{}", unix.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut server =
            Self { child, tcp: SocketAddr::from(([127, 0, 0, 1], 0)), unix: unix.clone(), log, _dir: dir };
        let first = rx.recv_timeout(WAIT).expect("no first `listening on` line");
        let second = rx.recv_timeout(WAIT).expect("no second `listening on` line");
        server.tcp = first
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line {first:?}"));
        assert_ne!(server.tcp.port(), 0, "the real port must be printed");
        assert_eq!(second, format!("listening on unix:{}", unix.display()));
        server
    }

    /// Waits (bounded) for a log line containing `needle`.
    fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line containing {needle:?}; log: {:#?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the server exited; log: {:#?}",
            self.log.lock().unwrap()
        );
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect_timeout(&self.tcp, WAIT).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        s
    }

    /// One request over TCP; returns the reply and the client's address (which the log names).
    fn exchange_tcp(&self, wire: &[u8]) -> (Vec<u8>, SocketAddr) {
        let s = self.connect();
        let me = s.local_addr().unwrap();
        (exchange(s, wire), me)
    }

    fn exchange_unix(&self, wire: &[u8]) -> Vec<u8> {
        let s = UnixStream::connect(&self.unix).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        exchange(s, wire)
    }

    /// Asserts that a fresh, valid request is answered.
    fn assert_serves(&self, context: &str) {
        let mut wire = Vec::new();
        encode_packet(0, 0, &[("REQUEST_METHOD", "GET"), ("PATH_INFO", "/alive")], &mut wire).unwrap();
        let (reply, _) = self.exchange_tcp(&wire);
        let echo = Echo::parse(&reply).unwrap_or_else(|e| panic!("after {context}: no valid answer: {e}"));
        assert_eq!(
            echo.vars,
            pairs(&[("REQUEST_METHOD", "GET"), ("PATH_INFO", "/alive")]),
            "after {context}"
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

trait HalfClose: Read + Write {
    fn shutdown_write(&self) -> io::Result<()>;
}

impl HalfClose for TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl HalfClose for UnixStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

fn closed_by_peer(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected
    )
}

/// Sends `wire`, half-closes, and reads until the server closes (a reset counts: the
/// server closes with our bytes unread after a framing error, like uWSGI). Panics if the
/// server neither answers nor closes within the read timeout.
fn exchange(mut s: impl HalfClose, wire: &[u8]) -> Vec<u8> {
    match s.write_all(wire) {
        Err(e) if !closed_by_peer(&e) => panic!("write: {e}"),
        _ => {}
    }
    let _ = s.shutdown_write();
    read_until_close(&mut s)
}

fn read_until_close(s: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if closed_by_peer(&e) => return out,
            Err(e) => panic!("the server neither answered nor closed within {WAIT:?}: {e}"),
        }
    }
}

/// The bytes of a latin-1 string (every char must be U+0000..U+00FF).
fn bytes_of(s: &str) -> Vec<u8> {
    s.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or_else(|_| panic!("{c:?} is not latin-1"))).collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    p.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect()
}

/// A decoded JSON echo.
#[derive(Debug)]
struct Echo {
    modifier1: u64,
    modifier2: u64,
    vars: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

impl Echo {
    fn parse(reply: &[u8]) -> Result<Self, String> {
        let text = String::from_utf8(reply.to_vec()).map_err(|e| format!("not UTF-8: {e}"))?;
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("not HTTP: {text:?}"))?;
        let mut lines = head.split("\r\n");
        if lines.next() != Some("HTTP/1.1 200 OK") {
            return Err(format!("bad status line in {head:?}"));
        }
        let headers: Vec<&str> = lines.collect();
        for expected in ["Content-Type: application/json", "Connection: close"] {
            if !headers.contains(&expected) {
                return Err(format!("missing {expected:?} in {head:?}"));
            }
        }
        if !headers.contains(&format!("Content-Length: {}", body.len()).as_str()) {
            return Err(format!("Content-Length does not match the {} body bytes: {head:?}", body.len()));
        }
        let json: Value = serde_json::from_str(body).map_err(|e| format!("bad JSON {body:?}: {e}"))?;
        let vars = json["vars"]
            .as_array()
            .ok_or("no vars")?
            .iter()
            .map(|p| match p.as_array().map(Vec::as_slice) {
                Some([Value::String(k), Value::String(v)]) => Ok((bytes_of(k), bytes_of(v))),
                _ => Err(format!("bad pair {p}")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            modifier1: json["modifier1"].as_u64().ok_or("no modifier1")?,
            modifier2: json["modifier2"].as_u64().ok_or("no modifier2")?,
            vars,
            body: bytes_of(json["body"].as_str().ok_or("no body")?),
        })
    }
}

#[test]
fn valid_requests_are_echoed_over_tcp_and_unix() {
    let mut server = Server::start(&[]);
    let body: Vec<u8> = (0..=255u8).collect();
    let len = body.len().to_string();
    let vars: Vec<(&[u8], &[u8])> = vec![
        (b"REQUEST_METHOD", b"POST"),
        (b"CONTENT_LENGTH", len.as_bytes()),
        (b"HTTP_X_DUP", b"one"),
        (b"HTTP_X_DUP", b"two"),
        (b"EMPTY", b""),
        (b"BIN\xff\x00", b"\x00\x01\xe9\xff"),
        (b"PATH_INFO", b"/x"),
    ];
    let mut wire = Vec::new();
    encode_packet(5, 9, &vars, &mut wire).unwrap();
    wire.extend_from_slice(&body);
    // Bytes past CONTENT_LENGTH are ignored, as uWSGI does.
    wire.extend_from_slice(b"IGNORED-TRAILING-BYTES");
    let expected: Vec<(Vec<u8>, Vec<u8>)> = vars.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();

    let (tcp_reply, _) = server.exchange_tcp(&wire);
    let unix_reply = server.exchange_unix(&wire);
    for (transport, reply) in [("tcp", tcp_reply), ("unix", unix_reply)] {
        let echo = Echo::parse(&reply).unwrap_or_else(|e| panic!("{transport}: {e}"));
        assert_eq!((echo.modifier1, echo.modifier2), (5, 9), "{transport}");
        assert_eq!(echo.vars, expected, "{transport}: vars in wire order, duplicates kept");
        assert_eq!(echo.body, body, "{transport}: body, latin-1 mapped losslessly");
    }
    // The JSON keeps its documented field order.
    let (reply, _) = server.exchange_tcp(&wire);
    let text = String::from_utf8(reply).unwrap();
    let json = &text[text.find("\r\n\r\n").unwrap() + 4..];
    assert!(json.starts_with(r#"{"modifier1":5,"modifier2":9,"datasize":"#), "{json}");
    assert!(
        server.log.lock().unwrap().is_empty(),
        "valid requests log nothing: {:?}",
        server.log.lock().unwrap()
    );
    server.assert_alive();
}

#[test]
fn valid_vectors_are_echoed_exactly() {
    let mut server = Server::start(&[]);
    let dir = vectors_dir();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if !name.starts_with('v') || path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let spec: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let wire = read_hex(&path.with_extension("hex"));
        let (reply, _) = server.exchange_tcp(&wire);
        if spec["modifier1"] == 100 {
            assert_eq!(reply, [0x64, 0, 0, 1], "{name}: PING gets uWSGI's pong");
            seen += 1;
            continue;
        }
        let Some(vars) = spec["vars"].as_array() else {
            continue; // v20: an array body, not vars; the echo server speaks vars only
        };
        let vars: Vec<(Vec<u8>, Vec<u8>)> = vars
            .iter()
            .map(|p| (bytes_of(p[0].as_str().unwrap()), bytes_of(p[1].as_str().unwrap())))
            .collect();
        let after = bytes_of(spec["after_vars"].as_str().unwrap_or(""));
        let cl = vars
            .iter()
            .find(|(k, _)| k == b"CONTENT_LENGTH")
            .map_or(0, |(_, v)| std::str::from_utf8(v).unwrap().parse::<usize>().unwrap_or(0));
        let echo = Echo::parse(&reply).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(echo.modifier1, spec["modifier1"].as_u64().unwrap(), "{name}");
        assert_eq!(echo.modifier2, spec["modifier2"].as_u64().unwrap(), "{name}");
        assert_eq!(echo.vars, vars, "{name}");
        assert_eq!(echo.body, after[..cl.min(after.len())], "{name}");
        seen += 1;
    }
    assert!(seen >= 20, "only {seen} valid vectors were exercised");
    server.assert_alive();
}

/// The log kind the server must report for each malformed vector, `None` for those the
/// echo server answers (valid framing: m13 empty vars, m14 unknown modifier1).
fn expected_verdict(name: &str, malformed: &Value) -> Option<Vec<String>> {
    match name {
        "m13-empty-body" | "m14-unknown-modifier1" => None,
        // Framed correctly; the body layer refuses them.
        "m16-content-length-gt-body" => Some(vec!["UnexpectedEof".into()]),
        "m17-content-length-junk" => Some(vec!["InvalidContentLength".into()]),
        // RPC arrays read as vars: refused, whichever way the vars parser words it.
        "m20-array-trailing-empty-item" | "m21-array-item-overrun" => Some(vec![]),
        _ => {
            let entry = &malformed[name];
            assert_eq!(entry["codec"], "reject", "{name}: malformed.json says the codec accepts it");
            Some(entry["error"].as_str().unwrap().split('|').map(str::to_owned).collect())
        }
    }
}

#[test]
fn every_malformed_vector_is_refused_without_reply_and_the_server_survives() {
    let mut server = Server::start(&[]);
    let dir = vectors_dir();
    let malformed: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("malformed.json")).unwrap()).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('m') && n.ends_with(".hex"))
        .map(|n| n.trim_end_matches(".hex").to_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 21, "expected m01..m21, found {names:?}");
    for name in &names {
        assert!(malformed.get(name).is_some(), "{name} is not described in malformed.json");
        let wire = read_hex(&dir.join(format!("{name}.hex")));
        let (reply, me) = server.exchange_tcp(&wire);
        match expected_verdict(name, &malformed) {
            None => {
                let echo = Echo::parse(&reply).unwrap_or_else(|e| panic!("{name}: expected an echo: {e}"));
                assert_eq!(u64::from(wire[0]), echo.modifier1, "{name}");
            }
            Some(kinds) => {
                assert!(
                    reply.is_empty(),
                    "{name}: expected no reply, got {:?}",
                    reply.escape_ascii().to_string()
                );
                let line = server.wait_log(&format!("peer {me}: "));
                let kind = line.split(": ").nth(1).unwrap_or_default();
                assert!(
                    kinds.is_empty() || kinds.iter().any(|k| k == kind),
                    "{name}: logged {line:?}, expected one of {kinds:?}"
                );
                assert_eq!(line.lines().count(), 1);
            }
        }
        server.assert_alive();
        server.assert_serves(name);
    }
    server.assert_alive();
}

#[test]
fn one_byte_writes_with_gaps_are_reassembled() {
    let mut server = Server::start(&[]);
    let mut wire = Vec::new();
    encode_packet(
        0,
        0,
        &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "5"), ("PATH_INFO", "/slow")],
        &mut wire,
    )
    .unwrap();
    wire.extend_from_slice(b"12345");
    let mut s = server.connect();
    s.set_nodelay(true).unwrap();
    for b in &wire {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
    // No half-close: the server answers as soon as the body is complete.
    let echo = Echo::parse(&read_until_close(&mut s)).unwrap();
    assert_eq!(
        echo.vars,
        pairs(&[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "5"), ("PATH_INFO", "/slow")])
    );
    assert_eq!(echo.body, b"12345");
    server.assert_alive();
}

#[test]
fn http_request_is_closed_and_logged() {
    let mut server = Server::start(&[]);
    let (reply, me) = server.exchange_tcp(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert!(reply.is_empty(), "no reply to HTTP: {reply:?}");
    let line = server.wait_log(&format!("peer {me}: "));
    assert!(line.starts_with(&format!("peer {me}: HttpRequest: ")), "{line}");
    server.assert_alive();
    server.assert_serves("an HTTP request");
}

#[test]
fn ping_is_answered_with_a_pong() {
    let mut server = Server::start(&[]);
    assert_eq!(server.exchange_tcp(&[100, 0, 0, 0]).0, [100, 0, 0, 1]);
    assert_eq!(server.exchange_unix(&[100, 0, 0, 0]), [100, 0, 0, 1]);
    server.assert_alive();
}

#[test]
fn idle_connections_are_closed_after_the_timeout() {
    let mut server = Server::start(&["--timeout", "1"]);
    // Half a header, then silence (vector m01 without EOF): closed after --timeout.
    let mut partial = server.connect();
    let me = partial.local_addr().unwrap();
    partial.write_all(&[0, 5]).unwrap();
    let mut silent = server.connect();
    let started = Instant::now();
    assert!(read_until_close(&mut partial).is_empty());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(5),
        "closed after {elapsed:?}"
    );
    let line = server.wait_log(&format!("peer {me}: "));
    assert!(line.contains(": Timeout: "), "{line}");
    // A connection that sends nothing is closed too.
    assert!(read_until_close(&mut silent).is_empty());
    assert!(started.elapsed() < Duration::from_secs(5));
    // A body that stops coming is cut off as well.
    let mut wire = Vec::new();
    encode_packet(0, 0, &[("CONTENT_LENGTH", "10")], &mut wire).unwrap();
    let mut stalled = server.connect();
    let me = stalled.local_addr().unwrap();
    stalled.write_all(&wire).unwrap();
    stalled.write_all(b"abc").unwrap();
    assert!(read_until_close(&mut stalled).is_empty());
    let line = server.wait_log(&format!("peer {me}: "));
    assert!(line.contains(": Timeout: ") && line.contains("3 of 10 body bytes"), "{line}");
    server.assert_alive();
    server.assert_serves("timeouts");
}

#[test]
fn limits_are_configurable() {
    let mut server = Server::start(&["--max-size", "100", "--max-vars", "2", "--limit-post", "10"]);
    let cases: [(&[(&str, &str)], &str); 3] = [
        (&[("K", &"x".repeat(100))], "TooLarge"),
        (&[("A", "1"), ("B", "2"), ("C", "3")], "TooManyVars"),
        (&[("CONTENT_LENGTH", "11")], "BodyTooLarge"),
    ];
    for (vars, kind) in cases {
        let mut wire = Vec::new();
        encode_packet(0, 0, vars, &mut wire).unwrap();
        wire.extend_from_slice(b"01234567890");
        let (reply, me) = server.exchange_tcp(&wire);
        assert!(reply.is_empty(), "{kind}: {reply:?}");
        let line = server.wait_log(&format!("peer {me}: "));
        assert!(line.starts_with(&format!("peer {me}: {kind}: ")), "{line}");
    }
    // At the limits: accepted.
    let mut wire = Vec::new();
    encode_packet(0, 0, &[("CONTENT_LENGTH", "10"), ("K", "v")], &mut wire).unwrap();
    wire.extend_from_slice(b"0123456789");
    let echo = Echo::parse(&server.exchange_tcp(&wire).0).unwrap();
    assert_eq!(echo.body, b"0123456789");
    server.assert_alive();
}

#[test]
fn many_concurrent_connections_are_served() {
    const N: usize = 200;
    let mut server = Server::start(&[]);
    // Open every connection and send half of each request before finishing any of them,
    // so the server holds N partial requests at once.
    let mut conns = Vec::new();
    for i in 0..N {
        let id = i.to_string();
        let mut wire = Vec::new();
        encode_packet(
            0,
            0,
            &[("REQUEST_METHOD", "POST"), ("ID", id.as_str()), ("CONTENT_LENGTH", "4")],
            &mut wire,
        )
        .unwrap();
        wire.extend_from_slice(format!("{i:04}").as_bytes());
        let mut s = server.connect();
        let half = wire.len() / 2;
        s.write_all(&wire[..half]).unwrap();
        conns.push((s, wire, half));
    }
    for (s, wire, half) in &mut conns {
        s.write_all(&wire[*half..]).unwrap();
    }
    for (i, (s, _, _)) in conns.iter_mut().enumerate() {
        let echo = Echo::parse(&read_until_close(s)).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(echo.vars[1], (b"ID".to_vec(), i.to_string().into_bytes()));
        assert_eq!(echo.body, format!("{i:04}").into_bytes());
    }
    server.assert_alive();
}

#[test]
fn connections_over_the_cap_are_refused_and_logged() {
    let mut server = Server::start(&["--max-connections", "3"]);
    let idle: Vec<TcpStream> = (0..3).map(|_| server.connect()).collect();
    // Give the server time to accept the three before the fourth arrives.
    std::thread::sleep(Duration::from_millis(300));
    let mut wire = Vec::new();
    encode_packet(0, 0, &[("PATH_INFO", "/over")], &mut wire).unwrap();
    let (reply, me) = server.exchange_tcp(&wire);
    assert!(reply.is_empty());
    assert!(server.wait_log(&format!("peer {me}: ")).contains(": TooManyConnections: "));
    drop(idle);
    // Once the idle ones are gone (noticed asynchronously), service resumes.
    let deadline = Instant::now() + WAIT;
    loop {
        let (reply, _) = server.exchange_tcp(&wire);
        if Echo::parse(&reply).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "service did not resume after the idle connections closed");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.assert_alive();
}

#[test]
fn bad_command_lines_are_refused() {
    let bin = env!("CARGO_BIN_EXE_uwsgi-echo-server");
    // No --listen at all.
    let out = Command::new(bin).stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    // A path that exists and is not a socket is never deleted.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("precious.txt");
    std::fs::write(&file, "keep me").unwrap();
    let out = Command::new(bin).arg("--listen").arg(format!("unix:{}", file.display())).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"), "{out:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}
