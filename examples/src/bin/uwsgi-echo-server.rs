//! `uwsgi-echo-server`: a uwsgi-protocol server that answers every request with a JSON
//! echo of what it received.
//!
//! It demonstrates [`uwsgi_packet::Decoder`] driving real, non-blocking connections in a
//! single-threaded [mio] event loop, the way a uWSGI worker serves a `--socket`: it
//! accepts the requests nginx's `uwsgi_pass` sends (a 4-byte header, the vars, then
//! `CONTENT_LENGTH` body bytes), and for each one replies
//!
//! ```text
//! HTTP/1.1 200 OK
//! Content-Type: application/json
//! Content-Length: N
//! Connection: close
//!
//! {"modifier1":0,"modifier2":0,"datasize":62,"vars":[["REQUEST_METHOD","GET"],...],"body":""}
//! ```
//!
//! `vars` keeps the wire order and every duplicate. Every JSON string is a byte string
//! mapped 1:1 onto U+0000..U+00FF (latin-1), so the echo is lossless for arbitrary bytes,
//! like the JSON files of the test vectors. A PING (`modifier1` 100) is answered with
//! uWSGI's pong, `64 00 00 01` (vector v17).
//!
//! Like uWSGI, it serves **one request per connection** and closes after the response.
//! A malformed request (bad framing, an invalid or too large `CONTENT_LENGTH`, end of
//! input mid-packet or mid-body, an idle timeout) gets no reply: the connection is closed
//! and one line is logged to stderr, `peer ADDR: <Kind>: <detail>`, for example
//! `peer 127.0.0.1:50312: EmptyKey: zero-length key at body offset 0`. The server never
//! stops because of a peer. Memory per connection is bounded: `4 + --max-size` bytes for
//! the packet and at most `--limit-post` bytes (1 MiB) of body.
//!
//! # Running it
//!
//! ```text
//! cargo run -p examples --bin uwsgi-echo-server -- --listen 127.0.0.1:0
//! ```
//!
//! It prints one `listening on ADDR` line per listener once it is bound (with the real
//! port for `HOST:0`), then serves until it is killed (Ctrl-C). Bind it to **loopback
//! only** (`127.0.0.1:PORT` or `unix:PATH`): it is a debugging tool that echoes whatever
//! it is sent. `--listen` is repeatable; for `unix:PATH` a stale socket file left by a
//! previous run is removed first. Point nginx at it
//! (`location / { include uwsgi_params; uwsgi_pass 127.0.0.1:PORT; }`) and every page
//! shows the vars nginx sent; or run `cargo run -p examples --bin cluster-demo`, which
//! starts one and walks through what crosses the wire.
//!
//! Options mirror uWSGI's: `--max-size` is `--buffer-size` (largest vars block, default
//! 4096), `--max-vars` the most vars per request (default 128), `--timeout` is
//! `--socket-timeout` (seconds a connection may stay idle, default 4), `--limit-post` the
//! largest accepted `CONTENT_LENGTH`.

// A program, not a library: its output is the point, and it owns the event loop, so it
// reads the clock for the connections' idle deadlines (STYLE.md §3.5: only drivers do).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program reports on stdout/stderr"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "the event loop reads the clock (Instant::now) for idle timeouts"
)]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Parser;
use mio::event::Source;
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};
use uwsgi_packet::{
    BodyError, BodyProgress, DecodeError, Decoder, Header, Limits, OwnedPacket, Status, content_length,
};

#[path = "../mio_stream.rs"]
mod mio_stream;
use mio_stream::Stream;

/// `modifier1` of a PING request (spec §3.3).
const PING: u8 = 100;
/// uWSGI's answer to a PING without a warning: `100, 0, 1` (vector v17).
const PONG: [u8; 4] = [PING, 0, 0, 1];
/// The largest `--limit-post`: echoed bodies are held in memory until the reply is built.
const MAX_BODY: u64 = 1 << 20;
/// How long a connection may keep sending after its response before it is closed.
const LINGER: Duration = Duration::from_secs(2);
/// Size of the one read buffer shared by all connections.
const CHUNK: usize = 16 * 1024;

/// Command line (the option names are a public contract, STYLE.md §3.11).
#[derive(Parser, Debug)]
#[command(version, about = "A uwsgi-protocol server that echoes each request back as JSON (loopback only)")]
struct Args {
    /// Where to listen: HOST:PORT (port 0 picks a free port) or unix:PATH. Repeatable.
    #[arg(long, value_name = "ADDR", required = true, value_parser = parse_listen)]
    listen: Vec<ListenAddr>,
    /// Largest accepted vars block in bytes, like uWSGI's --buffer-size (values over 65535
    /// are clamped, as uWSGI does).
    #[arg(long, value_name = "N", default_value_t = u64::from(Limits::DEFAULT_MAX_DATASIZE))]
    max_size: u64,
    /// Most vars accepted in one request.
    #[arg(long, value_name = "N", default_value_t = Limits::DEFAULT_MAX_VARS)]
    max_vars: usize,
    /// Seconds a connection may stay idle before it is closed, like uWSGI's --socket-timeout.
    #[arg(long, value_name = "SECS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    timeout: u64,
    /// Largest accepted CONTENT_LENGTH in bytes, like uWSGI's --limit-post (at most 1 MiB:
    /// the echoed body is kept in memory).
    #[arg(long, value_name = "BYTES", default_value_t = MAX_BODY, value_parser = clap::value_parser!(u64).range(0..=MAX_BODY))]
    limit_post: u64,
    /// Most connections open at once; further ones are closed at once and logged.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    max_connections: u64,
}

/// A `--listen` value.
#[derive(Clone, Debug)]
enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

fn parse_listen(s: &str) -> Result<ListenAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a path, e.g. unix:/tmp/echo.sock".into());
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("expected HOST:PORT or unix:PATH ({e})"))?
        .next()
        .map(ListenAddr::Tcp)
        .ok_or_else(|| format!("{s} resolves to no address"))
}

/// A bound listener.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    fn bind(addr: &ListenAddr) -> io::Result<Self> {
        match addr {
            ListenAddr::Tcp(a) => TcpListener::bind(*a).map(Self::Tcp),
            ListenAddr::Unix(path) => {
                // A socket file left by a previous run (killed, so it could not clean up)
                // makes bind fail with EADDRINUSE. Remove it, but nothing else.
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", path.display()),
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                UnixListener::bind(path).map(|l| Self::Unix(l, path.clone()))
            }
        }
    }

    /// What `listening on` prints: the real port for `HOST:0`.
    fn describe(&self) -> io::Result<String> {
        match self {
            Self::Tcp(l) => Ok(l.local_addr()?.to_string()),
            Self::Unix(_, path) => Ok(format!("unix:{}", path.display())),
        }
    }

    /// One pending connection and a name for its peer, for the log.
    fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Self::Tcp(l) => l.accept().map(|(s, peer)| (Stream::Tcp(s), peer.to_string())),
            // Clients of a unix socket are usually unnamed; name them after the listener.
            Self::Unix(l, path) => {
                l.accept().map(|(s, _)| (Stream::Unix(s), format!("unix:{}", path.display())))
            }
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Self::Tcp(l) => l,
            Self::Unix(l, _) => l,
        }
    }
}

impl Stream {
    fn shutdown_write(&self) {
        // The peer may be gone already; the connection is about to close either way.
        let _ = match self {
            Self::Tcp(s) => s.shutdown(Shutdown::Write),
            Self::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

/// Where a connection is in its one request.
enum Phase {
    /// Reading the header and the vars.
    Packet,
    /// Reading `CONTENT_LENGTH` body bytes after the packet.
    Body { packet: OwnedPacket, progress: BodyProgress, body: Vec<u8> },
    /// Writing the response.
    Write { out: Vec<u8>, written: usize },
    /// Response sent and write side shut down: discarding what the peer still sends until
    /// it closes, so that closing does not turn into an RST that could destroy the
    /// response in flight (the "lingering close" of HTTP servers).
    Linger,
    /// Placeholder while a phase is being advanced.
    Done,
}

/// Why a connection is closed without a response: the `<Kind>: <detail>` of its log line.
struct Failure {
    kind: &'static str,
    detail: String,
}

impl Failure {
    fn new(kind: &'static str, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into() }
    }

    fn decode(e: DecodeError) -> Self {
        Self::new(e.kind().as_str(), e.to_string())
    }

    fn body(e: BodyError) -> Self {
        let kind = match e {
            BodyError::InvalidContentLength { .. } => "InvalidContentLength",
            BodyError::ContentLengthOverflow => "ContentLengthOverflow",
            BodyError::ConflictingContentLength { .. } => "ConflictingContentLength",
            BodyError::UnexpectedEof { .. } => "UnexpectedEof",
            _ => "BodyError",
        };
        Self::new(kind, e.to_string())
    }

    fn io(e: &io::Error) -> Self {
        Self::new("Io", e.to_string())
    }
}

/// What one step of a connection's state machine decided.
enum Step {
    /// Progress was made: run the next step at once.
    Next(Phase),
    /// The socket would block: wait for readiness (or the deadline) in this phase.
    Wait(Phase),
    /// Close the connection, logging the failure if there is one.
    Close(Option<Failure>),
}

/// Settings shared by every connection.
struct Config {
    decoder: Decoder,
    timeout: Duration,
    limit_post: u64,
}

struct Conn {
    stream: Stream,
    peer: String,
    /// The packet being received: never more than `4 + max_datasize` bytes.
    buf: BytesMut,
    phase: Phase,
    deadline: Instant,
    /// Whether WRITABLE is part of the registered interest.
    wants_write: bool,
}

impl Conn {
    /// Runs the state machine until the socket would block or the connection is done.
    /// Returns the failure to log, if the connection must be closed.
    fn drive(&mut self, cfg: &Config, scratch: &mut [u8]) -> Result<(), Option<Failure>> {
        loop {
            let phase = std::mem::replace(&mut self.phase, Phase::Done);
            let step = match phase {
                Phase::Packet => self.read_packet(cfg, scratch),
                Phase::Body { packet, progress, body } => {
                    self.read_body(cfg, scratch, packet, progress, body)
                }
                Phase::Write { out, written } => self.write_response(cfg, out, written),
                Phase::Linger => self.linger(scratch),
                Phase::Done => Step::Close(None),
            };
            match step {
                Step::Next(next) => self.phase = next,
                Step::Wait(next) => {
                    self.phase = next;
                    return Ok(());
                }
                Step::Close(failure) => return Err(failure),
            }
        }
    }

    /// Any progress pushes the idle deadline back (uWSGI bounds each wait, spec §3.1).
    fn touch(&mut self, cfg: &Config) {
        self.deadline = Instant::now() + cfg.timeout;
    }

    fn read_packet(&mut self, cfg: &Config, scratch: &mut [u8]) -> Step {
        // Read no further than the packet: what follows it is the body, read in its own
        // phase and never buffered beyond CONTENT_LENGTH.
        let want = cfg.decoder.reserve_hint(&self.buf).saturating_sub(self.buf.len()).clamp(1, scratch.len());
        match self.stream.read(&mut scratch[..want]) {
            Ok(0) => match cfg.decoder.decode_eof(&mut self.buf) {
                // Connect and close without a byte: nothing to report (uWSGI logs nothing).
                Ok(_) => Step::Close(None),
                Err(e) => Step::Close(Some(Failure::decode(e))),
            },
            Ok(n) => {
                self.buf.extend_from_slice(&scratch[..n]);
                self.touch(cfg);
                self.parse_packet(cfg)
            }
            Err(e) => self.io_error(e, Phase::Packet),
        }
    }

    fn parse_packet(&mut self, cfg: &Config) -> Step {
        // PING carries no vars; a body, if any, is ignored (spec §3.3).
        if let Ok(Status::Complete { value: header, .. }) = cfg.decoder.limits().check_header(&self.buf)
            && header.modifier1 == PING
        {
            return if self.buf.len() >= header.packet_len() {
                Step::Next(Phase::Write { out: PONG.to_vec(), written: 0 })
            } else {
                Step::Next(Phase::Packet)
            };
        }
        match cfg.decoder.decode(&mut self.buf) {
            Err(e) => Step::Close(Some(Failure::decode(e))),
            Ok(None) => Step::Next(Phase::Packet),
            Ok(Some(packet)) => match content_length(&packet.vars()) {
                Err(e) => Step::Close(Some(Failure::body(e))),
                Ok(n) if n > cfg.limit_post => Step::Close(Some(Failure::new(
                    "BodyTooLarge",
                    format!("CONTENT_LENGTH {n} exceeds the {}-byte limit (--limit-post)", cfg.limit_post),
                ))),
                Ok(n) => {
                    let mut progress = BodyProgress::new(n);
                    // `n <= limit_post <= 1 MiB`, so this fits in usize and memory.
                    let mut body = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
                    // Nothing past the packet was read, but should the buffer hold body
                    // bytes, they count (spec §6.6) and the excess is ignored.
                    let take = progress.advance(self.buf.len());
                    body.extend_from_slice(&self.buf[..take]);
                    self.buf = BytesMut::new();
                    Step::Next(Phase::Body { packet, progress, body })
                }
            },
        }
    }

    fn read_body(
        &mut self,
        cfg: &Config,
        scratch: &mut [u8],
        packet: OwnedPacket,
        mut progress: BodyProgress,
        mut body: Vec<u8>,
    ) -> Step {
        if progress.is_complete() {
            return Step::Next(Phase::Write { out: render(&packet, &body), written: 0 });
        }
        let want = usize::try_from(progress.remaining()).unwrap_or(usize::MAX).min(scratch.len());
        match self.stream.read(&mut scratch[..want]) {
            Ok(0) => match progress.at_eof() {
                Err(e) => Step::Close(Some(Failure::body(e))),
                Ok(()) => Step::Next(Phase::Write { out: render(&packet, &body), written: 0 }),
            },
            Ok(n) => {
                // Bytes past CONTENT_LENGTH are ignored, as uWSGI does.
                let take = progress.advance(n);
                body.extend_from_slice(&scratch[..take]);
                self.touch(cfg);
                Step::Next(Phase::Body { packet, progress, body })
            }
            Err(e) => self.io_error(e, Phase::Body { packet, progress, body }),
        }
    }

    fn write_response(&mut self, cfg: &Config, out: Vec<u8>, written: usize) -> Step {
        let Some(rest) = out.get(written..).filter(|rest| !rest.is_empty()) else {
            // One request per connection: done. Half-close, then drain until the peer closes.
            self.stream.shutdown_write();
            self.deadline = Instant::now() + LINGER.min(cfg.timeout);
            return Step::Next(Phase::Linger);
        };
        match self.stream.write(rest) {
            Ok(0) => Step::Close(Some(Failure::new("Io", "the peer accepts no more bytes"))),
            Ok(n) => {
                self.touch(cfg);
                Step::Next(Phase::Write { out, written: written + n })
            }
            Err(e) => self.io_error(e, Phase::Write { out, written }),
        }
    }

    fn linger(&mut self, scratch: &mut [u8]) -> Step {
        match self.stream.read(scratch) {
            Ok(0) => Step::Close(None),
            Ok(_) => Step::Next(Phase::Linger),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::Wait(Phase::Linger),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Next(Phase::Linger),
            // The response is out; what happens to the peer now is not worth a log line.
            Err(_) => Step::Close(None),
        }
    }

    fn io_error(&self, e: io::Error, phase: Phase) -> Step {
        match e.kind() {
            io::ErrorKind::WouldBlock => Step::Wait(phase),
            io::ErrorKind::Interrupted => Step::Next(phase),
            _ => Step::Close(Some(Failure::io(&e))),
        }
    }

    /// The log line for a connection whose deadline passed, if it deserves one.
    fn timeout_failure(&self, cfg: &Config) -> Option<Failure> {
        let secs = cfg.timeout.as_secs();
        let detail = match &self.phase {
            Phase::Packet => {
                let need = cfg.decoder.reserve_hint(&self.buf);
                format!("idle for {secs} s with {} of at least {need} packet bytes received", self.buf.len())
            }
            Phase::Body { progress, .. } => format!(
                "idle for {secs} s after {} of {} body bytes",
                progress.received(),
                progress.received() + progress.remaining()
            ),
            Phase::Write { out, written } => {
                format!("peer read only {written} of {} response bytes in {secs} s", out.len())
            }
            Phase::Linger | Phase::Done => return None,
        };
        Some(Failure::new("Timeout", detail))
    }

    /// The interest the current phase needs (STYLE.md §3.5 rule 5).
    fn interest(&self) -> Interest {
        if matches!(self.phase, Phase::Write { .. }) {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }
}

/// The latin-1 view of a byte string: byte `b` becomes U+00bb. Lossless, and what the
/// vectors' JSON files use.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().copied().map(char::from).collect()
}

/// The HTTP response echoing `packet` and its body.
fn render(packet: &OwnedPacket, body: &[u8]) -> Vec<u8> {
    let h: Header = packet.header();
    let vars: Vec<serde_json::Value> =
        packet.vars().iter().map(|(k, v)| serde_json::Value::from(vec![latin1(k), latin1(v)])).collect();
    // Written by hand to keep the fields in this order (serde_json's map would sort them).
    let json = format!(
        "{{\"modifier1\":{},\"modifier2\":{},\"datasize\":{},\"vars\":{},\"body\":{}}}",
        h.modifier1,
        h.modifier2,
        h.datasize,
        serde_json::Value::from(vars),
        serde_json::Value::from(latin1(body)),
    );
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        json.len()
    )
    .into_bytes();
    out.extend_from_slice(json.as_bytes());
    out
}

struct Server {
    poll: Poll,
    /// Listener `i` has token `i`; connections have tokens from `listeners.len()` up.
    listeners: Vec<Listener>,
    conns: BTreeMap<Token, Conn>,
    next_token: usize,
    max_connections: usize,
    cfg: Config,
    scratch: Vec<u8>,
}

impl Server {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        loop {
            self.expire(Instant::now());
            let wait = self
                .conns
                .values()
                .map(|c| c.deadline)
                .min()
                .map(|d| d.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, wait) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            }
            for event in &events {
                let token = event.token();
                if token.0 < self.listeners.len() {
                    self.accept_all(token.0);
                } else {
                    self.ready(token);
                }
            }
        }
    }

    /// Accepts until the listener would block (mio readiness is edge-triggered).
    fn accept_all(&mut self, index: usize) {
        loop {
            let Some(listener) = self.listeners.get(index) else { return };
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // E.g. EMFILE. The next connection attempt wakes us again.
                    eprintln!("accept on listener {index}: {e}");
                    return;
                }
            };
            if self.conns.len() >= self.max_connections {
                eprintln!(
                    "peer {peer}: TooManyConnections: {} connections open (--max-connections)",
                    self.conns.len()
                );
                continue; // dropping the stream closes it
            }
            let token = self.alloc_token();
            if let Err(e) = self.poll.registry().register(&mut stream, token, Interest::READABLE) {
                eprintln!("peer {peer}: Io: cannot register the connection: {e}");
                continue;
            }
            let conn = Conn {
                stream,
                peer,
                buf: BytesMut::new(),
                phase: Phase::Packet,
                deadline: Instant::now() + self.cfg.timeout,
                wants_write: false,
            };
            self.conns.insert(token, conn);
            // Bytes may already be queued; edge-triggered readiness reports them anyway,
            // but reading now costs one syscall and saves an iteration.
            self.ready(token);
        }
    }

    fn alloc_token(&mut self) -> Token {
        loop {
            let token = Token(self.next_token);
            self.next_token = self.next_token.checked_add(1).unwrap_or(self.listeners.len());
            if !self.conns.contains_key(&token) {
                return token;
            }
        }
    }

    /// Advances one connection after a readiness event.
    fn ready(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        let result = conn.drive(&self.cfg, &mut self.scratch);
        let result = result.and_then(|()| {
            let interest = conn.interest();
            let wants_write = interest.is_writable();
            if wants_write != conn.wants_write {
                conn.wants_write = wants_write;
                let registry = self.poll.registry();
                conn.stream.reregister(registry, token, interest).map_err(|e| Some(Failure::io(&e)))?;
            }
            Ok(())
        });
        if let Err(failure) = result {
            self.close(token, failure);
        }
    }

    /// Closes every connection whose deadline has passed.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<Token> =
            self.conns.iter().filter(|(_, c)| c.deadline <= now).map(|(t, _)| *t).collect();
        for token in expired {
            let failure = self.conns.get(&token).and_then(|c| c.timeout_failure(&self.cfg));
            self.close(token, failure);
        }
    }

    fn close(&mut self, token: Token, failure: Option<Failure>) {
        if let Some(mut conn) = self.conns.remove(&token) {
            if let Some(Failure { kind, detail }) = failure {
                eprintln!("peer {}: {kind}: {detail}", conn.peer);
            }
            // Closing the fd deregisters it too; this keeps the registry tidy on all platforms.
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uwsgi-echo-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &Args) -> io::Result<()> {
    let poll = Poll::new()?;
    let mut listeners = Vec::with_capacity(args.listen.len());
    let mut out = io::stdout().lock();
    for (i, addr) in args.listen.iter().enumerate() {
        let mut listener = Listener::bind(addr).map_err(|e| {
            let name = match addr {
                ListenAddr::Tcp(a) => a.to_string(),
                ListenAddr::Unix(p) => format!("unix:{}", p.display()),
            };
            io::Error::new(e.kind(), format!("cannot listen on {name}: {e}"))
        })?;
        poll.registry().register(listener.source(), Token(i), Interest::READABLE)?;
        writeln!(out, "listening on {}", listener.describe()?)?;
        out.flush()?;
        listeners.push(listener);
    }
    drop(out);
    let limits =
        Limits::new().max_datasize(u16::try_from(args.max_size).unwrap_or(u16::MAX)).max_vars(args.max_vars);
    let mut server = Server {
        poll,
        next_token: listeners.len(),
        listeners,
        conns: BTreeMap::new(),
        max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
        cfg: Config {
            decoder: Decoder::new(limits),
            timeout: Duration::from_secs(args.timeout),
            limit_post: args.limit_post,
        },
        scratch: vec![0; CHUNK],
    };
    server.run()
}
