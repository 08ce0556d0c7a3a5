//! `cluster-demo`: a self-contained tour of the workspace's protocols on loopback, with
//! nothing to set up.
//!
//! It starts the sibling program `uwsgi-echo-server` on `127.0.0.1:0` (a free port), learns
//! the port from its `listening on` line, and talks to it with the `uwsgi_packet` codec,
//! printing what crosses the wire, section by section:
//!
//! 1. starting the server;
//! 2. a GET with a query string: the 4-byte header taken apart (`modifier1`, the
//!    little-endian `datasize`, `modifier2`), a hex dump, the vars table, and the JSON
//!    echo the server sent back;
//! 3. a POST whose body follows the vars on the stream (`CONTENT_LENGTH`);
//! 4. repeated headers: duplicate vars keep their order (nginx 1.22 sends one var per
//!    header line);
//! 5. a PING (`modifier1` 100) and uWSGI's pong, `64 00 00 01`;
//! 6. malformed input (a zero-length key, an oversized `datasize`, an HTTP request sent to
//!    the uwsgi socket): the codec's verdict, the server closing without a reply, and the
//!    line it logged;
//! 7. a valid request afterwards, to show the server survived.
//!
//! Later crates add their own sections (subscriptions, Legion, zerg, emperor).
//!
//! # Running it
//!
//! ```text
//! cargo build -p examples --bins && cargo run -p examples --bin cluster-demo
//! ```
//!
//! The demo looks for `uwsgi-echo-server` next to its own executable (`target/debug/`),
//! so build the package's programs first (`cargo run` builds only the one it runs); or
//! pass `--server PATH`. Everything binds **loopback only**. Every wait is bounded by
//! `--timeout` (default 10 s). Expect about 150 lines of annotated hex dumps and
//! tables ending with `all N checks passed`, exit status 0. On any failure it prints
//! `cluster-demo: FAILED: …` and exits with status 1. The server is stopped when the demo
//! ends, whatever happens.

// A program: its output is the point. It reads the clock only to bound its waits.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program reports on stdout/stderr"
)]
#![allow(clippy::disallowed_methods, reason = "bounded waits read the clock (Instant::now)")]

use std::error::Error;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use uwsgi_packet::{Header, Limits, Packet, Status, encode_packet};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Command line (the option names are a public contract, STYLE.md §3.11).
#[derive(Parser, Debug)]
#[command(version, about = "A self-contained loopback tour of the uwsgi protocol and the cluster programs")]
struct Args {
    /// The uwsgi-echo-server program to start (default: the one next to this program).
    #[arg(long, value_name = "PATH")]
    server: Option<PathBuf>,
    /// Upper bound in seconds for every wait (server start, connect, reply, log line).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut demo = Demo { timeout: Duration::from_secs(args.timeout), section: 0, checks: 0, server: None };
    match demo.run(&args) {
        Ok(()) => {
            println!("\nall {} checks passed", demo.checks);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cluster-demo: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
    // `demo` (and with it the server) is dropped here: the Drop guard stops the server.
}

/// The running demo: its settings, the server it started and the checks passed so far.
struct Demo {
    timeout: Duration,
    section: usize,
    checks: usize,
    server: Option<EchoServer>,
}

impl Demo {
    fn run(&mut self, args: &Args) -> Result<()> {
        self.section_start_server(args)?;
        self.section_get_with_query()?;
        self.section_post_with_body()?;
        self.section_duplicate_headers()?;
        self.section_ping()?;
        self.section_malformed()?;
        self.section_survived()?;
        Ok(())
    }

    fn heading(&mut self, title: &str) {
        self.section += 1;
        let head = format!("== {}. {title} ", self.section);
        println!("\n{head}{}", "=".repeat(78usize.saturating_sub(head.len())));
    }

    fn check(&mut self, ok: bool, what: impl Into<String>) -> Result<()> {
        if ok {
            self.checks += 1;
            Ok(())
        } else {
            Err(what.into().into())
        }
    }

    fn server(&mut self) -> Result<&mut EchoServer> {
        self.server.as_mut().ok_or_else(|| "the echo server is not running".into())
    }

    // ---- sections ------------------------------------------------------------------

    fn section_start_server(&mut self, args: &Args) -> Result<()> {
        self.heading("Start uwsgi-echo-server on loopback");
        let program = match &args.server {
            Some(path) => path.clone(),
            None => sibling_program("uwsgi-echo-server")?,
        };
        let server = EchoServer::start(&program, self.timeout)?;
        println!("  $ {} --listen 127.0.0.1:0", program.display());
        println!("  server says: listening on {}", server.addr);
        println!("  (one request per connection, replies with a JSON echo, closes on malformed input)");
        self.server = Some(server);
        self.checks += 1;
        Ok(())
    }

    fn section_get_with_query(&mut self) -> Result<()> {
        self.heading("A GET with a query string, as nginx's uwsgi_pass sends it");
        let vars = [
            ("QUERY_STRING", "x=1&y=two%20words"),
            ("REQUEST_METHOD", "GET"),
            ("CONTENT_LENGTH", ""),
            ("REQUEST_URI", "/path/to?x=1&y=two%20words"),
            ("PATH_INFO", "/path/to"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("HTTP_HOST", "127.0.0.1"),
        ];
        println!("  An empty CONTENT_LENGTH (nginx sends one on GET) means no body.");
        self.request(0, 0, &vars, b"")
    }

    fn section_post_with_body(&mut self) -> Result<()> {
        self.heading("A POST: the body follows the vars on the stream");
        let body = b"hello=world&n=42";
        let len = body.len().to_string();
        let vars = [
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
            ("CONTENT_LENGTH", len.as_str()),
            ("PATH_INFO", "/submit"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
        ];
        println!("  datasize counts the vars only; the {} body bytes come after them with no", body.len());
        println!("  separator, and CONTENT_LENGTH says how many to read.");
        self.request(0, 0, &vars, body)
    }

    fn section_duplicate_headers(&mut self) -> Result<()> {
        self.heading("Repeated headers: duplicate vars keep their order");
        let vars = [
            ("REQUEST_METHOD", "GET"),
            ("PATH_INFO", "/dup"),
            ("HTTP_X_DUP", "one"),
            ("HTTP_X_DUP", "two"),
            ("HTTP_COOKIE", "a=1"),
            ("HTTP_COOKIE", "b=2"),
        ];
        println!("  nginx 1.22 sends one var per header line; the vars are a list, not a map,");
        println!("  so both X-Dup values and both cookies arrive, in wire order.");
        self.request(0, 0, &vars, b"")
    }

    fn section_ping(&mut self) -> Result<()> {
        self.heading("PING: modifier1 100, answered like uWSGI");
        let wire = Header::new(100, 0, 0).to_bytes();
        print_header(&wire);
        let reply = self.exchange(&wire)?;
        println!("  reply ({} bytes): {}", reply.len(), hex(&reply));
        self.check(
            reply == [100, 0, 0, 1],
            format!("PING: expected the pong 64 00 00 01, got {}", hex(&reply)),
        )?;
        println!("  = modifier1 100, datasize 0, modifier2 1: a pong without a warning (vector v17)");
        Ok(())
    }

    fn section_malformed(&mut self) -> Result<()> {
        self.heading("Malformed input: no reply, the connection is closed, one log line");
        // A zero-length key. Our encoder refuses to build one (EncodeError::EmptyKey), so it
        // is written by hand: key length 00 00, then a value "GET" (like vector m04).
        let empty_key = [&Header::new(0, 7, 0).to_bytes()[..], b"\x00\x00\x03\x00GET"].concat();
        // A header announcing 5000 bytes, more than the server's 4096 (vector m19): refused
        // on the header alone, before any body byte is buffered.
        let too_large = Header::new(0, 5000, 0).to_bytes().to_vec();
        // A browser or curl pointed at the uwsgi socket.
        let http = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec();
        let cases: [(&str, Vec<u8>, &str); 3] = [
            ("a zero-length key", empty_key, "EmptyKey"),
            ("datasize 5000 > --max-size 4096", too_large, "TooLarge"),
            ("an HTTP request on the uwsgi socket", http, "HttpRequest"),
        ];
        for (what, wire, kind) in cases {
            println!("\n  -- {what}");
            println!("  wire ({} bytes):", wire.len());
            hexdump(&wire, 0);
            let verdict = match Packet::parse(&wire, &Limits::default()) {
                Ok(Status::Complete { .. }) => "accepted".to_owned(),
                Ok(Status::Incomplete(i)) => format!("incomplete: {}", i.eof_error()),
                Err(e) => format!("{}: {e}", e.kind()),
            };
            println!("  codec: {verdict}");
            self.check(
                verdict.starts_with(kind),
                format!("{what}: codec verdict {verdict:?}, expected {kind}"),
            )?;
            let reply = self.exchange(&wire)?;
            println!("  reply: {} bytes, then the server closed the connection", reply.len());
            self.check(reply.is_empty(), format!("{what}: the server replied {} bytes", reply.len()))?;
            let timeout = self.timeout;
            let line = self.server()?.log_line(kind, timeout)?;
            println!("  server log: {line}");
            self.checks += 1;
        }
        Ok(())
    }

    fn section_survived(&mut self) -> Result<()> {
        self.heading("The server survived: a valid request after the malformed ones");
        let vars =
            [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/still-there"), ("SERVER_PROTOCOL", "HTTP/1.1")];
        self.request(0, 0, &vars, b"")?;
        let running = self.server()?.child.try_wait()?.is_none();
        self.check(running, "the echo server process has exited")?;
        println!("  the server survived every malformed request and is still running");
        Ok(())
    }

    // ---- helpers -------------------------------------------------------------------

    /// Sends one request, shows it taken apart, and checks the JSON echo against it.
    fn request(&mut self, modifier1: u8, modifier2: u8, vars: &[(&str, &str)], body: &[u8]) -> Result<()> {
        let mut wire = Vec::new();
        encode_packet(modifier1, modifier2, vars, &mut wire)?;
        let packet_len = wire.len();
        wire.extend_from_slice(body);

        println!("  wire ({} bytes: 4 header + {} vars + {} body):", wire.len(), packet_len - 4, body.len());
        print_header(&wire);
        hexdump(&wire[Header::LEN..], Header::LEN);
        // Decode what we are about to send, as the server will.
        let (packet, consumed) = Packet::parse(&wire, &Limits::default())?.at_eof()?;
        println!("  vars (decoded with uwsgi_packet::Packet::parse, wire order):");
        let width = packet.vars().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in packet.vars() {
            let key = k.escape_ascii().to_string();
            let value = if v.is_empty() { "(empty)".to_owned() } else { v.escape_ascii().to_string() };
            println!("    {key:<width$} = {value}");
        }
        match &wire[consumed..] {
            [] => println!("  body: (none)"),
            rest => println!("  body ({} bytes after the packet): {}", rest.len(), rest.escape_ascii()),
        }

        let reply = self.exchange(&wire)?;
        let (status, json) = parse_http_reply(&reply)?;
        println!("  response: {status}, {} bytes of JSON", json.len());
        let echo: Value = serde_json::from_slice(json)?;
        let echoed_vars = echo_vars(&echo)?;
        let echoed_body =
            echo.get("body").and_then(Value::as_str).ok_or("the echo has no \"body\" string")?;
        println!(
            "  echo: modifier1 {}, modifier2 {}, datasize {}, {} vars, body {:?}",
            echo["modifier1"],
            echo["modifier2"],
            echo["datasize"],
            echoed_vars.len(),
            echoed_body
        );
        self.check(status == "HTTP/1.1 200 OK", format!("unexpected status line {status:?}"))?;
        self.check(
            echo["modifier1"] == modifier1 && echo["modifier2"] == modifier2,
            format!("the echo's modifiers differ: {echo}"),
        )?;
        let sent: Vec<(String, String)> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.check(
            echoed_vars == sent,
            format!("the echoed vars differ from the sent ones: {echoed_vars:?}"),
        )?;
        self.check(echoed_body == latin1(body), format!("the echoed body differs: {echoed_body:?}"))?;
        println!("  the echo matches what was sent: same vars in the same order, same body");
        Ok(())
    }

    /// One connection: send `wire`, half-close, read until the server closes.
    fn exchange(&self, wire: &[u8]) -> Result<Vec<u8>> {
        let addr = self.server.as_ref().ok_or("the echo server is not running")?.addr;
        exchange(addr, wire, self.timeout).map_err(|e| format!("talking to {addr}: {e}").into())
    }
}

/// Sends `wire` on a new connection and returns everything the server sent before
/// closing. A reset counts as a close: the server closes with our bytes unread after a
/// framing error, as uWSGI does.
fn exchange(addr: SocketAddr, wire: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let is_closed = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected
        )
    };
    match stream.write_all(wire) {
        Err(e) if !is_closed(&e) => return Err(e),
        _ => {}
    }
    // "Unless stated otherwise the client half-closed (shutdown WR) after sending."
    let _ = stream.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(reply),
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_closed(&e) => return Ok(reply),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no end of reply within {} s", timeout.as_secs()),
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Prints the 4 header bytes and what each field means.
fn print_header(wire: &[u8]) {
    let Some(bytes) = wire.first_chunk::<4>() else { return };
    let h = Header::from_bytes(*bytes);
    let m1 = match h.modifier1 {
        0 => "a WSGI/HTTP-style request (nginx's default)",
        5 => "a PSGI request",
        100 => "PING",
        101 => "ECHO",
        110 => "a signal",
        173 => "RPC",
        224 => "a subscription",
        _ => "see spec §1.1",
    };
    println!("  header  {}", hex(bytes));
    println!("          modifier1 = {:<5} {m1}", h.modifier1);
    println!(
        "          datasize  = {:<5} bytes {:02x} {:02x}: a little-endian u16 (0x{:04x}), header not counted",
        h.datasize, bytes[1], bytes[2], h.datasize
    );
    println!(
        "          modifier2 = {:<5} {}",
        h.modifier2,
        if h.modifier2 == 0 { "(unused here)" } else { "" }
    );
}

/// A classic 16-bytes-a-line hex dump, offsets starting at `base`; long inputs are cut.
fn hexdump(bytes: &[u8], base: usize) {
    const MAX_LINES: usize = 8;
    for (i, line) in bytes.chunks(16).take(MAX_LINES).enumerate() {
        let ascii: String = line
            .iter()
            .map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '.' })
            .collect();
        println!("    {:04x}  {:<48} {ascii}", base + i * 16, hex(line));
    }
    if bytes.len() > MAX_LINES * 16 {
        println!("    ...   ({} more bytes)", bytes.len() - MAX_LINES * 16);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().copied().map(char::from).collect()
}

/// Splits an HTTP reply into its status line and its body (Content-Length bytes).
fn parse_http_reply(reply: &[u8]) -> Result<(String, &[u8])> {
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP reply ({} bytes): {}", reply.len(), reply.escape_ascii()))?;
    let head = String::from_utf8_lossy(&reply[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_owned();
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .ok_or("the reply has no Content-Length")?
        .1
        .trim()
        .parse()?;
    let body = &reply[end + 4..];
    if body.len() != length {
        return Err(format!("Content-Length {length} but {} body bytes", body.len()).into());
    }
    Ok((status, body))
}

/// The echo's `vars` as (key, value) pairs of latin-1 strings.
fn echo_vars(echo: &Value) -> Result<Vec<(String, String)>> {
    let list = echo.get("vars").and_then(Value::as_array).ok_or("the echo has no \"vars\" list")?;
    list.iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(k), Value::String(v)]) => Ok((k.clone(), v.clone())),
            _ => Err(format!("not a [key, value] pair: {pair}").into()),
        })
        .collect()
}

/// Where a sibling program of this one lives: next to the running executable.
fn sibling_program(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or("the running program has no directory")?;
    // `target/debug/cluster-demo` has its siblings in `target/debug/`; a copy run from
    // `target/debug/deps/` (as some test runners do) has them one level up.
    let candidates = [Some(dir.join(name)), dir.parent().map(|d| d.join(name))];
    candidates.into_iter().flatten().find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "`{name}` was not found next to {}: build it with `cargo build -p examples --bins` \
             (cargo run builds only the program it runs), or pass --server PATH",
            exe.display()
        )
        .into()
    })
}

/// The `uwsgi-echo-server` child process. Dropping it stops the server.
struct EchoServer {
    child: Child,
    addr: SocketAddr,
    /// The server's stderr, line by line (read by a thread so the pipe never fills).
    log: Receiver<String>,
}

impl EchoServer {
    fn start(program: &PathBuf, timeout: Duration) -> Result<Self> {
        let mut child = Command::new(program)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        // Built first, so that an error below still stops the child.
        let (log_tx, log) = mpsc::channel();
        let mut server = Self { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), log };
        let (out_tx, out_rx) = mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || forward_lines(stdout, &out_tx));
        }
        if let Some(stderr) = stderr {
            std::thread::spawn(move || forward_lines(stderr, &log_tx));
        }
        let line = out_rx.recv_timeout(timeout).map_err(|_| {
            format!("{} printed no `listening on` line within {} s", program.display(), timeout.as_secs())
        })?;
        server.addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("unexpected first line from the server: {line:?}"))?;
        Ok(server)
    }

    /// Waits (bounded) for the server's next log line, which must name `kind`.
    fn log_line(&mut self, kind: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .log
                .recv_timeout(left)
                .map_err(|_| format!("the server logged no {kind} line within {} s", timeout.as_secs()))?;
            if line.contains(&format!(": {kind}: ")) {
                return Ok(line);
            }
            println!("  server log (other): {line}");
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends every line of `from` into `to` until EOF or until nobody listens.
fn forward_lines(from: impl Read, to: &mpsc::Sender<String>) {
    for line in BufReader::new(from).lines() {
        let Ok(line) = line else { return };
        if to.send(line).is_err() {
            return;
        }
    }
}
