//! Real nginx (`uwsgi_pass`) in front of `uwsgi-echo-server`: what nginx puts on the wire
//! (spec §5) reaches our server intact, in nginx's order, and our reply reaches the client.
//!
//! Everything lives in a temporary directory and talks over unix sockets: the client
//! speaks HTTP/1.1 to `nginx.sock`, nginx speaks uwsgi to `echo.sock`. No TCP port is
//! needed, so there is nothing to race for.

// Tests wait for child processes with bounded polling (Instant::now + thread::sleep).
#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the clock and short sleeps")]
#![allow(clippy::unwrap_used, clippy::print_stderr, reason = "test code")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Upper bound for every wait in this file.
const WAIT: Duration = Duration::from_secs(15);

/// Debian's stock params file, which the config includes and the test reads for the
/// expected var order.
const UWSGI_PARAMS: &str = "/etc/nginx/uwsgi_params";

/// `uwsgi-echo-server` on `unix:DIR/echo.sock`. Dropping it kills it.
struct EchoServer {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl EchoServer {
    fn start(sock: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_uwsgi-echo-server"))
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stderr, sink) = (child.stderr.take().unwrap(), Arc::clone(&log));
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let server = Self { child, log };
        let line = rx.recv_timeout(WAIT).expect("uwsgi-echo-server printed no `listening on` line");
        assert_eq!(line, format!("listening on unix:{}", sock.display()));
        server
    }

    fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no server log line with {needle:?}: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx (master + 1 worker, `daemon off`) on `unix:DIR/nginx.sock`. Dropping it stops it
/// with SIGTERM (fast shutdown) and waits, bounded, for the master to exit.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    fn start(nginx: &Path, dir: &Path, upstream: &Path) -> Self {
        for sub in ["logs", "tmp", "www"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let d = dir.display();
        // Workers switch to `user` only when the master runs as root; otherwise nginx warns
        // and ignores the directive. As root, `root` keeps the workers able to reach the
        // sockets inside the private temporary directory.
        let user = if running_as_root() { "user root root;\n" } else { "" };
        let conf = format!(
            "{user}daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/logs/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/logs/access.log;
    root {d}/www;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen unix:{d}/nginx.sock;
        server_name interop.test;
        location / {{
            include {UWSGI_PARAMS};
            uwsgi_pass unix:{upstream};
        }}
    }}
}}
",
            upstream = upstream.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            // The early error log (before the config is read) too, not /var/log/nginx.
            .arg("-e")
            .arg(dir.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Self { child, dir: dir.to_path_buf() };
        // Ready once the socket accepts connections.
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = nginx.child.try_wait().unwrap() {
                panic!("nginx exited with {status}; error.log:\n{}", nginx.error_log());
            }
            if UnixStream::connect(nginx.sock()).is_ok() {
                return nginx;
            }
            assert!(Instant::now() < deadline, "nginx did not start; error.log:\n{}", nginx.error_log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("nginx.sock")
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }

    /// Sends one raw HTTP/1.1 request and returns the parsed response.
    fn request(&self, raw: &[u8]) -> Response {
        let mut s = UnixStream::connect(self.sock()).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        // `Connection: close`: nginx closes after the response.
        if let Err(e) = s.read_to_end(&mut out) {
            panic!("no complete response from nginx within {WAIT:?}: {e}; error.log:\n{}", self.error_log());
        }
        let _ = s.shutdown(Shutdown::Both);
        Response::parse(&out)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("nginx error.log:\n{}", self.error_log());
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn running_as_root() -> bool {
    // The effective uid is the second number of the `Uid:` line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                .map(|u| u == "0")
        })
        .unwrap_or(false)
}

/// An HTTP response from nginx.
#[derive(Debug)]
struct Response {
    status: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Self {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP response: {:?}", raw.escape_ascii().to_string()));
        let head = std::str::from_utf8(&raw[..end]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let rest = &raw[end + 4..];
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            dechunk(rest)
        } else if let Some(len) = header("content-length") {
            let len: usize = len.parse().unwrap();
            assert_eq!(rest.len(), len, "Content-Length {len} but {} body bytes", rest.len());
            rest.to_vec()
        } else {
            rest.to_vec()
        };
        Self { status, headers, body }
    }

    /// The echo server's JSON, after checking that nginx relayed a 200.
    fn echo(&self) -> Echo {
        assert_eq!(self.status, "HTTP/1.1 200 OK", "{self:?}");
        assert!(
            self.headers.iter().any(|(k, v)| k == "content-type" && v == "application/json"),
            "{:?}",
            self.headers
        );
        let json: Value = serde_json::from_slice(&self.body).unwrap();
        let vars = json["vars"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (bytes_of(p[0].as_str().unwrap()), bytes_of(p[1].as_str().unwrap())))
            .collect();
        Echo {
            modifier1: json["modifier1"].as_u64().unwrap(),
            vars,
            body: bytes_of(json["body"].as_str().unwrap()),
        }
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size_text = std::str::from_utf8(&rest[..eol]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn bytes_of(s: &str) -> Vec<u8> {
    s.chars().map(|c| u8::try_from(u32::from(c)).unwrap()).collect()
}

/// The request as our server received it from nginx.
struct Echo {
    modifier1: u64,
    vars: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

impl Echo {
    fn keys(&self) -> Vec<String> {
        self.vars.iter().map(|(k, _)| String::from_utf8_lossy(k).into_owned()).collect()
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.vars
            .iter()
            .filter(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The single value of `key`.
    fn one(&self, key: &str) -> String {
        let all = self.all(key);
        assert_eq!(all.len(), 1, "{key}: expected exactly one var, got {all:?}");
        all.into_iter().next().unwrap()
    }
}

/// The var names `uwsgi_params` declares, in order, except `if_not_empty` ones (HTTPS is
/// empty over plain HTTP and then omitted, spec §5).
fn param_order() -> Vec<String> {
    let text = std::fs::read_to_string(UWSGI_PARAMS)
        .unwrap_or_else(|e| panic!("{UWSGI_PARAMS}: {e} (it ships with nginx-light; run scripts/test.sh)"));
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("uwsgi_param") && !l.contains("if_not_empty"))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect();
    for expected in ["QUERY_STRING", "REQUEST_METHOD", "CONTENT_LENGTH", "PATH_INFO", "SERVER_PROTOCOL"] {
        assert!(names.iter().any(|n| n == expected), "{UWSGI_PARAMS} lacks {expected}: {names:?}");
    }
    names
}

/// Checks the common shape: every param in `uwsgi_params` order first, then the client's
/// headers as `HTTP_*`, in the order they were sent.
fn assert_nginx_shape(echo: &Echo, client_headers: &[&str]) {
    let params = param_order();
    let keys = echo.keys();
    assert_eq!(echo.modifier1, 0, "uwsgi_modifier1 defaults to 0");
    assert_eq!(keys[..params.len()], params[..], "nginx's params first, in {UWSGI_PARAMS} order");
    let rest: Vec<&str> = keys[params.len()..].iter().map(String::as_str).collect();
    assert!(rest.iter().all(|k| k.starts_with("HTTP_")), "only client headers after the params: {rest:?}");
    let positions: Vec<usize> = client_headers
        .iter()
        .map(|h| rest.iter().position(|k| k == h).unwrap_or_else(|| panic!("{h} not forwarded: {rest:?}")))
        .collect();
    assert!(positions.is_sorted(), "client headers out of order: {rest:?}");
    assert_eq!(echo.one("SERVER_PROTOCOL"), "HTTP/1.1");
    assert_eq!(echo.one("REQUEST_SCHEME"), "http");
    assert_eq!(echo.one("SERVER_NAME"), "interop.test");
    // Debian's params send `HTTP_HOST $host`: the client's Host, port dropped, not duplicated.
    assert_eq!(echo.one("HTTP_HOST"), "interop.test");
}

struct Setup {
    nginx: Nginx,
    echo: EchoServer,
    dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let nginx = common::require_program("nginx");
    let dir = tempfile::tempdir().unwrap();
    let upstream = dir.path().join("echo.sock");
    let echo = EchoServer::start(&upstream);
    let nginx = Nginx::start(&nginx, dir.path(), &upstream);
    Setup { nginx, echo, dir }
}

#[test]
fn get_with_query_reaches_the_echo_server_in_nginx_order() {
    let s = setup();
    let resp = s.nginx.request(
        b"GET /path/to?x=1&y=two%20words HTTP/1.1\r\nHost: interop.test:8080\r\nUser-Agent: interop/1.0\r\n\
          Accept: */*\r\nConnection: close\r\n\r\n",
    );
    let echo = resp.echo();
    assert_nginx_shape(&echo, &["HTTP_USER_AGENT", "HTTP_ACCEPT"]);
    assert_eq!(echo.one("QUERY_STRING"), "x=1&y=two%20words");
    assert_eq!(echo.one("REQUEST_METHOD"), "GET");
    assert_eq!(echo.one("REQUEST_URI"), "/path/to?x=1&y=two%20words");
    assert_eq!(echo.one("PATH_INFO"), "/path/to");
    assert_eq!(echo.one("DOCUMENT_ROOT"), s.dir.path().join("www").display().to_string());
    // Empty values are sent, not omitted (spec §5).
    assert_eq!(echo.one("CONTENT_LENGTH"), "");
    assert_eq!(echo.one("CONTENT_TYPE"), "");
    assert_eq!(echo.one("HTTP_USER_AGENT"), "interop/1.0");
    assert_eq!(echo.one("HTTP_ACCEPT"), "*/*");
    assert!(echo.body.is_empty());
    assert!(s.echo.log.lock().unwrap().is_empty(), "{:?}", s.echo.log.lock().unwrap());
}

#[test]
fn post_body_arrives_intact() {
    let s = setup();
    // Every byte value, to show the body passes through nginx and the echo losslessly.
    let body: Vec<u8> = (0..=255u8).rev().collect();
    let mut raw = format!(
        "POST /submit HTTP/1.1\r\nHost: interop.test\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let echo = s.nginx.request(&raw).echo();
    assert_nginx_shape(&echo, &["HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"]);
    assert_eq!(echo.one("REQUEST_METHOD"), "POST");
    assert_eq!(echo.one("CONTENT_LENGTH"), "256");
    assert_eq!(echo.one("CONTENT_TYPE"), "application/octet-stream");
    // nginx forwards the client's own headers too (vector v02).
    assert_eq!(echo.one("HTTP_CONTENT_LENGTH"), "256");
    assert_eq!(echo.body, body);
}

#[test]
fn repeated_headers_keep_every_value_in_order() {
    let s = setup();
    let echo = s
        .nginx
        .request(
            b"GET /dup HTTP/1.1\r\nHost: interop.test\r\nX-Dup: one\r\nX-Dup: two\r\nCookie: a=1\r\n\
              Cookie: b=2\r\nConnection: close\r\n\r\n",
        )
        .echo();
    assert_nginx_shape(&echo, &["HTTP_X_DUP", "HTTP_COOKIE"]);
    // nginx 1.22 sends one var per header line (v03); newer nginx joins them (spec §5).
    let dup = echo.all("HTTP_X_DUP");
    assert!(dup == ["one", "two"] || dup == ["one, two"], "HTTP_X_DUP: {dup:?}");
    let cookie = echo.all("HTTP_COOKIE");
    assert!(cookie == ["a=1", "b=2"] || cookie == ["a=1; b=2"], "HTTP_COOKIE: {cookie:?}");
}

#[test]
fn chunked_body_is_dechunked_by_nginx() {
    let s = setup();
    let echo = s
        .nginx
        .request(
            b"POST /chunked HTTP/1.1\r\nHost: interop.test\r\nTransfer-Encoding: chunked\r\n\
              Connection: close\r\n\r\n7\r\nchunked\r\na\r\n-body-data\r\n0\r\n\r\n",
        )
        .echo();
    assert_nginx_shape(&echo, &["HTTP_TRANSFER_ENCODING"]);
    // v04: CONTENT_LENGTH of the de-chunked body, yet Transfer-Encoding still forwarded.
    assert_eq!(echo.one("CONTENT_LENGTH"), "17");
    assert_eq!(echo.one("HTTP_TRANSFER_ENCODING"), "chunked");
    assert_eq!(echo.body, b"chunked-body-data");
}

#[test]
fn vars_over_the_servers_limit_become_a_502() {
    let s = setup();
    // 5000 bytes of header: nginx accepts it (8 KiB buffers), our server refuses the
    // datasize on the header alone, as uWSGI does (spec §5: nginx answers 502).
    let big = "x".repeat(5000);
    let resp = s.nginx.request(
        format!("GET /big HTTP/1.1\r\nHost: interop.test\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert!(resp.status.starts_with("HTTP/1.1 502"), "{:?}", resp.status);
    assert!(s.echo.wait_log(": TooLarge: ").contains("exceeds the 4096-byte limit"));
    // Both keep working.
    let echo =
        s.nginx.request(b"GET /after HTTP/1.1\r\nHost: interop.test\r\nConnection: close\r\n\r\n").echo();
    assert_eq!(echo.one("PATH_INFO"), "/after");
}
