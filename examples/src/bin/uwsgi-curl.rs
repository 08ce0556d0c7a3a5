//! `uwsgi-curl`: send one HTTP-style request to a uwsgi-protocol socket, the way nginx's
//! `uwsgi_pass` does, and print the response.
//!
//! Demonstrates [`uwsgi_packet::PacketBuilder`] building a request packet var by var, with
//! every length checked, and the uwsgi request/response exchange of spec §3 on a blocking
//! socket: header + vars + body out, raw HTTP back, ended by EOF. Point it at a uWSGI
//! `--socket` (not `--http`), or at anything else speaking the uwsgi protocol. It only
//! connects where you tell it to (use loopback or a unix socket); it listens nowhere.
//!
//! ```text
//! uwsgi --plugin python3 --socket 127.0.0.1:45020 --wsgi-file app.py --master --die-on-term &
//! cargo run -p examples --bin uwsgi-curl -- 127.0.0.1:45020 '/path/to?x=1&y=two%20words'
//! cargo run -p examples --bin uwsgi-curl -- -d 'hello=world&n=42' --body-only unix:/tmp/uw.sock /submit
//! cargo run -p examples --bin uwsgi-curl -- -H 'X-Dup: one' -H 'X-Dup: two' --var UWSGI_SCHEME=https '[::1]:45020' /dup
//! ```
//!
//! Usage: `uwsgi-curl [-X METHOD] [-H 'Name: value']... [-d BODY]... [--var K=V]...
//! [--modifier1 N] [--modifier2 N] [--timeout SECS] [--body-only] ADDR URI`
//!
//! * `ADDR`: `HOST:PORT` (`127.0.0.1:45020`, `[::1]:45020`, `localhost:45020`) or
//!   `unix:PATH`.
//! * `URI`: the request target, `/path?query` (a `#fragment` is dropped, as curl does).
//! * `-X METHOD`: default `GET`, or `POST` when `-d` is given.
//! * `-d BODY`: the request body, sent after the vars. Several `-d` are joined with `&`,
//!   as curl does (but `@file` is not special). Sets `CONTENT_LENGTH` and, unless a
//!   `Content-Type` header is given, `CONTENT_TYPE=application/x-www-form-urlencoded`.
//! * `-H 'Name: value'`: one `HTTP_NAME` var per header line (`-` becomes `_`, upper
//!   case); repeated headers give repeated vars, as nginx 1.22 sends them. A name with an
//!   `_` is dropped with a warning, as nginx does by default. `Host` is not forwarded
//!   as such: it sets `HTTP_HOST` and `SERVER_NAME` (host part, lower case, no port: nginx's
//!   `$host`).
//! * `--var K=V`: an extra raw var, appended after all the others.
//! * `--modifier1 N`, `--modifier2 N`: the header's modifiers (default 0, 0).
//! * `--timeout SECS`: bounds the connect and every read and write (default 10, fractions
//!   allowed).
//! * `--body-only`: print only what follows the response's header block (`\r\n\r\n`),
//!   as curl does without `-i`. By default the whole raw response is printed as received.
//!
//! The vars, in the order of Debian's stock `uwsgi_params`: `QUERY_STRING`,
//! `REQUEST_METHOD`, `CONTENT_TYPE`, `CONTENT_LENGTH` (empty without a body, as nginx
//! sends it), `REQUEST_URI`, `PATH_INFO` (the path percent-decoded and normalised: nginx's
//! `$document_uri`), `SERVER_PROTOCOL=HTTP/1.1`, `REQUEST_SCHEME=http`, `REMOTE_ADDR` and
//! `REMOTE_PORT` (our end of the TCP connection; `127.0.0.1` and `0` on a unix socket),
//! `SERVER_PORT` (ADDR's port; `80` for a unix socket), `SERVER_NAME`, `HTTP_HOST`
//! (ADDR's host, or `localhost` for a unix socket, unless `-H Host:` says otherwise), then
//! the headers, then the `--var`s. `DOCUMENT_ROOT` is not sent: there is no document root.
//!
//! What to expect: the raw HTTP response uWSGI sends (`HTTP/1.1 200 OK`, headers, body) on
//! stdout, exit status 0. The client does not half-close its end before reading (the
//! fastrouter drops a session whose client half-closes, spec §8); it reads until the
//! server closes. Errors go to stderr as `error: ...`: exit 1 for connection, IO and
//! timeout failures and for a server that closes without replying (which is how uWSGI
//! rejects a malformed or oversized request: see its log), 2 for bad usage, including a
//! request whose vars exceed the 65535 bytes a uwsgi packet can carry.

// A command-line program: printing the response and the errors is its job. It is a
// blocking IO driver, not a sans-IO core, so it reads the clock for its deadlines.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use uwsgi_packet::{EncodeError, PacketBuilder};

/// Send one HTTP-style request to a uwsgi-protocol socket (as nginx's uwsgi_pass does) and
/// print the response.
#[derive(Parser, Debug)]
#[command(name = "uwsgi-curl", version)]
struct Args {
    /// Request method [default: GET, or POST with -d].
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    method: Option<String>,

    /// A request header, 'Name: value'; repeat for more (repeats of a name are kept).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<OsString>,

    /// Request body; several are joined with '&'.
    #[arg(short = 'd', long = "data", value_name = "BODY")]
    data: Vec<OsString>,

    /// An extra var KEY=VALUE, appended after the others; repeat for more.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    vars: Vec<OsString>,

    /// modifier1 of the request header.
    #[arg(long, value_name = "N", default_value_t = 0)]
    modifier1: u8,

    /// modifier2 of the request header.
    #[arg(long, value_name = "N", default_value_t = 0)]
    modifier2: u8,

    /// Seconds allowed for the connect and for each read and write.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_timeout)]
    timeout: Duration,

    /// Print only the response body (what follows the first blank line).
    #[arg(long)]
    body_only: bool,

    /// Where to connect (`HOST:PORT`, `[IPV6]:PORT` or `unix:PATH`).
    #[arg(value_name = "ADDR", help = "Where to connect: HOST:PORT, [IPV6]:PORT or unix:PATH")]
    addr: String,

    /// Request target: /path?query.
    #[arg(value_name = "URI")]
    uri: OsString,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err("must be a positive number of seconds".to_owned());
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{e}"))
}

/// Exit statuses.
const EXIT_IO: u8 = 1;
const EXIT_USAGE: u8 = 2;

/// A failure: the message (after `error: `) and the exit status.
struct Failure {
    message: String,
    status: u8,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self { message: message.into(), status: EXIT_USAGE }
    }

    fn io(message: impl Into<String>) -> Self {
        Self { message: message.into(), status: EXIT_IO }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.status)
        }
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    let target = Target::parse(&args.addr)?;
    let request = Request::from_args(args, &target)?;
    // Check that the vars fit in a packet before connecting: a request that cannot be
    // framed is a usage error whether or not the server is up.
    request.encode(&Peer::placeholder())?;

    let mut conn = connect(&target, args.timeout)
        .map_err(|e| Failure::io(format!("connecting to {}: {}", args.addr, describe(&e, args.timeout))))?;
    conn.set_timeouts(args.timeout)
        .map_err(|e| Failure::io(format!("configuring the socket to {}: {e}", args.addr)))?;
    let packet = request.encode(&conn.peer_vars())?;

    let mut wire = Vec::with_capacity(packet.len() + request.body.len());
    wire.extend_from_slice(&packet);
    wire.extend_from_slice(&request.body);
    // No shutdown(Write) afterwards: a client that half-closes before reading loses its
    // session on uWSGI's fastrouter (spec §8). The server ends the exchange by closing.
    let sent = conn.write_all(&wire).and_then(|()| conn.flush());

    let mut response = Vec::new();
    let received = match &sent {
        // The server closed early; it may still have answered before closing.
        Err(e) if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) => {
            conn.read_to_end(&mut response)
        }
        // A send timeout or another failure: there is nothing worth waiting for.
        Err(_) => Ok(0),
        Ok(()) => conn.read_to_end(&mut response),
    };

    match (sent, received) {
        (Ok(()), Ok(_)) => {}
        (Err(e), _) if response.is_empty() => {
            return Err(Failure::io(format!(
                "sending the request to {}: {}",
                args.addr,
                describe(&e, args.timeout)
            )));
        }
        (Err(e), _) => {
            // Servers may answer (e.g. an error page) and close before reading a whole
            // request; what they said is still the answer.
            eprintln!(
                "warning: {} replied before reading the whole request ({})",
                args.addr,
                describe(&e, args.timeout)
            );
        }
        (Ok(()), Err(e)) => {
            // Print what did arrive, then fail.
            if let Some(part) = selected(&response, args.body_only) {
                let _ = print(part);
            }
            let when = match response.len() {
                0 => String::new(),
                n => format!(" (after {n} bytes)"),
            };
            let hint = if response.is_empty() && e.kind() == io::ErrorKind::ConnectionReset {
                " (uWSGI resets the connection when it rejects a request it has not read in full: see its log)"
            } else {
                ""
            };
            return Err(Failure::io(format!(
                "reading the response from {}{when}: {}{hint}",
                args.addr,
                describe(&e, args.timeout)
            )));
        }
    }

    if response.is_empty() {
        return Err(Failure::io(format!(
            "{} closed the connection without replying (uWSGI does this when it rejects a \
             request: see its log)",
            args.addr
        )));
    }
    let Some(out) = selected(&response, args.body_only) else {
        return Err(Failure::io(format!(
            "the response from {} has no end of headers (\\r\\n\\r\\n); run without --body-only \
             to see it",
            args.addr
        )));
    };
    print(out).map_err(|e| Failure::io(format!("writing stdout: {e}")))
}

/// What to print of `response`: all of it, or with `--body-only` what follows the header
/// block (`None` if it has no end).
fn selected(response: &[u8], body_only: bool) -> Option<&[u8]> {
    if !body_only {
        return Some(response);
    }
    find(response, b"\r\n\r\n").map(|at| &response[at + 4..])
}

/// Writes `bytes` to stdout. A closed pipe (`| head`) is not an error.
fn print(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// An IO error as a message; timeouts say how long we waited.
fn describe(e: &io::Error, timeout: Duration) -> String {
    match e.kind() {
        // A socket read/write timeout is reported as WouldBlock (EAGAIN) on Unix.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!("timed out after {timeout:?}"),
        _ => e.to_string(),
    }
}

/// The first position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// --- where to connect ---------------------------------------------------------------------

/// A parsed `ADDR`.
#[derive(Clone, Debug)]
enum Target {
    /// `HOST:PORT`: `host` as written (brackets kept for IPv6), for `SERVER_NAME`.
    Tcp { spec: String, host: String, port: u16 },
    /// `unix:PATH`.
    Unix(PathBuf),
}

impl Target {
    fn parse(addr: &str) -> Result<Self, Failure> {
        if let Some(path) = addr.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(Failure::usage("ADDR `unix:` needs a path, e.g. unix:/tmp/uwsgi.sock"));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let bad = || Failure::usage(format!("ADDR `{addr}` is not HOST:PORT, [IPV6]:PORT or unix:PATH"));
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let bracketed = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
        if host.is_empty() || (host.contains(':') && !bracketed) {
            return Err(bad());
        }
        Ok(Self::Tcp { spec: addr.to_owned(), host: host.to_ascii_lowercase(), port })
    }

    /// `SERVER_NAME`/`HTTP_HOST` when no `Host` header is given.
    fn default_host(&self) -> String {
        match self {
            Self::Tcp { host, .. } => host.clone(),
            Self::Unix(_) => "localhost".to_owned(),
        }
    }

    /// `SERVER_PORT`.
    fn server_port(&self) -> String {
        match self {
            Self::Tcp { port, .. } => port.to_string(),
            Self::Unix(_) => "80".to_owned(),
        }
    }
}

/// A connected socket.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// `REMOTE_ADDR` and `REMOTE_PORT`: our end of the connection.
struct Peer {
    addr: String,
    port: String,
}

impl Peer {
    fn placeholder() -> Self {
        Self { addr: "127.0.0.1".to_owned(), port: "0".to_owned() }
    }
}

impl Conn {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Self::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
            Self::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
        }
    }

    fn peer_vars(&self) -> Peer {
        match self {
            // nginx's $remote_addr: the bare IP, no brackets for IPv6.
            Self::Tcp(s) => match s.local_addr() {
                Ok(a) => Peer { addr: a.ip().to_string(), port: a.port().to_string() },
                Err(_) => Peer::placeholder(),
            },
            Self::Unix(_) => Peer::placeholder(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.flush(),
            Self::Unix(s) => s.flush(),
        }
    }
}

/// Connects within `timeout`, name resolution included.
///
/// std has no connect timeout for unix sockets (a full listen backlog blocks `connect`)
/// and none for DNS, so the blocking work runs on a helper thread and we wait for it with
/// a deadline. On timeout the thread is abandoned; the process exits soon after.
fn connect(target: &Target, timeout: Duration) -> io::Result<Conn> {
    let deadline = Instant::now() + timeout;
    let (tx, rx) = mpsc::channel();
    let target = target.clone();
    std::thread::Builder::new().name("connect".to_owned()).spawn(move || {
        let result = match &target {
            Target::Unix(path) => UnixStream::connect(path).map(Conn::Unix),
            Target::Tcp { spec, .. } => connect_tcp(spec, deadline).map(Conn::Tcp),
        };
        // The receiver is gone only if we already gave up.
        let _ = tx.send(result);
    })?;
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(io::Error::from(io::ErrorKind::TimedOut)),
    }
}

/// Tries every address `spec` resolves to, in order, until one connects.
fn connect_tcp(spec: &str, deadline: Instant) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = spec.to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

// --- the request ------------------------------------------------------------------------

/// Everything but `REMOTE_ADDR`/`REMOTE_PORT`, which depend on the connection.
struct Request {
    modifier1: u8,
    modifier2: u8,
    /// The vars before `REMOTE_ADDR`.
    head: Vec<(&'static [u8], Vec<u8>)>,
    /// The vars after `REMOTE_PORT`: server vars, headers, `--var`s.
    tail: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

impl Request {
    fn from_args(args: &Args, target: &Target) -> Result<Self, Failure> {
        let uri = args.uri.as_bytes();
        // curl does not send the fragment.
        let uri = uri.split(|&b| b == b'#').next().unwrap_or_default();
        if !uri.starts_with(b"/") {
            return Err(Failure::usage("URI must start with `/` (e.g. `/path?query`)"));
        }
        if let Some(b) = uri.iter().find(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err(Failure::usage(format!(
                "URI contains the byte {:#04x}; percent-encode it (e.g. a space as %20)",
                b
            )));
        }
        let (path, query) = match uri.iter().position(|&b| b == b'?') {
            Some(q) => (&uri[..q], &uri[q + 1..]),
            None => (uri, &b""[..]),
        };
        let path_info = document_uri(path).map_err(Failure::usage)?;

        let has_body = !args.data.is_empty();
        let body = args.data.iter().map(|d| d.as_bytes()).collect::<Vec<_>>().join(&b'&');
        let method = match &args.method {
            Some(m) if m.is_empty() || !m.bytes().all(is_token_byte) => {
                return Err(Failure::usage(format!("`{m}` is not a valid HTTP method")));
            }
            Some(m) => m.clone(),
            None if has_body => "POST".to_owned(),
            None => "GET".to_owned(),
        };

        let mut host = None;
        let mut content_type = None;
        let mut headers = Vec::new();
        for line in &args.headers {
            let line = line.as_bytes();
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return Err(Failure::usage(format!("header `{}` is not `Name: value`", line.escape_ascii())));
            };
            let name = &line[..colon];
            let value = line[colon + 1..].trim_ascii();
            if name.is_empty() || !name.iter().copied().all(is_token_byte) {
                return Err(Failure::usage(format!("`{}` is not a valid header name", name.escape_ascii())));
            }
            if name.contains(&b'_') {
                // nginx's default `underscores_in_headers off`: X_Foo would pose as X-Foo.
                eprintln!(
                    "warning: header `{}` dropped: nginx drops names with `_` (underscores_in_headers off)",
                    name.escape_ascii()
                );
                continue;
            }
            if name.eq_ignore_ascii_case(b"host") {
                // nginx answers 400 to a second Host header.
                if host.is_some() {
                    return Err(Failure::usage("more than one Host header"));
                }
                host = Some(nginx_host(value));
                // HTTP_HOST is a configured param in uwsgi_params; nginx does not forward
                // a client header whose var name equals a param (spec §5).
                continue;
            }
            if name.eq_ignore_ascii_case(b"content-type") && content_type.is_none() {
                content_type = Some(value.to_vec());
            }
            let mut key = b"HTTP_".to_vec();
            key.extend(name.iter().map(|&b| if b == b'-' { b'_' } else { b.to_ascii_uppercase() }));
            headers.push((key, value.to_vec()));
        }
        let host = host.filter(|h| !h.is_empty()).unwrap_or_else(|| target.default_host().into_bytes());
        let content_type = content_type.unwrap_or_else(|| {
            if has_body { b"application/x-www-form-urlencoded".to_vec() } else { Vec::new() }
        });
        // nginx sends CONTENT_LENGTH empty when the request has no body.
        let content_length = if has_body { body.len().to_string().into_bytes() } else { Vec::new() };

        let head: Vec<(&'static [u8], Vec<u8>)> = vec![
            (b"QUERY_STRING", query.to_vec()),
            (b"REQUEST_METHOD", method.into_bytes()),
            (b"CONTENT_TYPE", content_type),
            (b"CONTENT_LENGTH", content_length),
            (b"REQUEST_URI", uri.to_vec()),
            (b"PATH_INFO", path_info),
            (b"SERVER_PROTOCOL", b"HTTP/1.1".to_vec()),
            (b"REQUEST_SCHEME", b"http".to_vec()),
        ];
        let mut tail: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"SERVER_PORT".to_vec(), target.server_port().into_bytes()),
            (b"SERVER_NAME".to_vec(), host.clone()),
            (b"HTTP_HOST".to_vec(), host),
        ];
        tail.extend(headers);
        for var in &args.vars {
            let var = var.as_bytes();
            let Some(eq) = var.iter().position(|&b| b == b'=') else {
                return Err(Failure::usage(format!("--var `{}` is not KEY=VALUE", var.escape_ascii())));
            };
            tail.push((var[..eq].to_vec(), var[eq + 1..].to_vec()));
        }
        Ok(Self { modifier1: args.modifier1, modifier2: args.modifier2, head, tail, body })
    }

    /// The packet: header and vars (the body is sent after it).
    fn encode(&self, peer: &Peer) -> Result<bytes::Bytes, Failure> {
        let fail = |e: EncodeError| {
            Failure::usage(format!(
                "the request cannot be framed as a uwsgi packet: {e} (a packet's vars are \
                 limited to 65535 bytes in all)"
            ))
        };
        let mut b = PacketBuilder::new(self.modifier1, self.modifier2);
        for (k, v) in &self.head {
            b.push(k, v).map_err(fail)?;
        }
        b.push(b"REMOTE_ADDR", peer.addr.as_bytes()).map_err(fail)?;
        b.push(b"REMOTE_PORT", peer.port.as_bytes()).map_err(fail)?;
        for (k, v) in &self.tail {
            b.push(k, v).map_err(fail)?;
        }
        Ok(b.finish())
    }
}

/// RFC 9110 `tchar`: the bytes allowed in a method or a header name.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// nginx's `$host` from a `Host` header: the host part, lower case, without the port or a
/// trailing dot.
fn nginx_host(value: &[u8]) -> Vec<u8> {
    let host = if value.starts_with(b"[") {
        match value.iter().position(|&b| b == b']') {
            Some(end) => &value[..=end],
            None => value,
        }
    } else {
        value.split(|&b| b == b':').next().unwrap_or_default()
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    host.to_ascii_lowercase()
}

/// nginx's `$document_uri` for a request path: percent-decoded, `//` merged, `.` and `..`
/// segments resolved. Like nginx, refuses a bad escape, an encoded NUL, and a `..` above
/// the root (nginx answers those with 400).
fn document_uri(path: &[u8]) -> Result<Vec<u8>, String> {
    let decoded = percent_decode(path)?;
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing_slash = false;
    // `decoded` starts with '/', so the first split part is empty: skip it.
    for part in decoded.split(|&b| b == b'/').skip(1) {
        trailing_slash = true;
        match part {
            b"" | b"." => {}
            b".." => {
                if segments.pop().is_none() {
                    return Err(format!("URI path `{}` climbs above the root", path.escape_ascii()));
                }
            }
            segment => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = b"/".to_vec();
    out.extend_from_slice(&segments.join(&b'/'));
    if trailing_slash && !segments.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

fn percent_decode(path: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let hex = |at: usize| path.get(at).and_then(|&c| char::from(c).to_digit(16));
        let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
            return Err(format!("URI path `{}` has a bad %-escape at byte {i}", path.escape_ascii()));
        };
        // Both digits are below 16.
        let byte = (hi * 16 + lo) as u8;
        if byte == 0 {
            return Err(format!("URI path `{}` encodes a NUL byte", path.escape_ascii()));
        }
        out.push(byte);
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_uri_decodes_and_normalises_like_nginx() {
        let ok = |p: &str| String::from_utf8(document_uri(p.as_bytes()).unwrap()).unwrap();
        assert_eq!(ok("/path/to"), "/path/to");
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/a%20b//c/./d/"), "/a b/c/d/");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/a/%2e%2e/b"), "/b");
        assert_eq!(ok("/x%2Fy"), "/x/y");
        assert_eq!(document_uri(b"/%e9t%C3%A9").unwrap(), b"/\xe9t\xc3\xa9");
        assert!(document_uri(b"/..").is_err());
        assert!(document_uri(b"/a%2").is_err());
        assert!(document_uri(b"/a%zz").is_err());
        assert!(document_uri(b"/a%00").is_err());
    }

    #[test]
    fn host_header_becomes_nginx_host() {
        assert_eq!(nginx_host(b"Example.COM:8080"), b"example.com");
        assert_eq!(nginx_host(b"[::1]:80"), b"[::1]");
        assert_eq!(nginx_host(b"a.test."), b"a.test");
    }

    #[test]
    fn addr_forms() {
        assert!(matches!(Target::parse("127.0.0.1:9000"), Ok(Target::Tcp { port: 9000, .. })));
        assert!(matches!(Target::parse("[::1]:9000"), Ok(Target::Tcp { port: 9000, .. })));
        assert!(matches!(Target::parse("unix:/tmp/s"), Ok(Target::Unix(_))));
        for bad in ["127.0.0.1", "::1:80", "host:x", ":80", "unix:", "host:70000"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert_eq!(parse_timeout("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "nan", "inf", "x"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }
}
