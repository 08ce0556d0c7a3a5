//! `fastrouter`: a uWSGI fastrouter: routes uwsgi-protocol requests to the backends that
//! subscribed for their host, from uWSGI's own `--fastrouter*` and `--subscription*`
//! options.
//!
//! It demonstrates `subscription_proto::driver::ServerDriver` embedded in a mio loop of its
//! own, next to the router's listeners, its client and backend connections, a TCP stats
//! server and SIGINT/SIGTERM, all in one `mio::Poll`. Backends announce themselves to the
//! subscription server (real uWSGI instances with `--subscribe-to`/`--subscribe2`, or the
//! workspace's `subscriber` program); each request is sent to a node of the pool named by
//! its key, chosen by the pool's balancing algorithm.
//!
//! # Running it
//!
//! ```text
//! cargo run -p examples --bin fastrouter -- --fastrouter 127.0.0.1:3017 \
//!   --subscription-server 127.0.0.1:2626 --stats 127.0.0.1:3018
//! ```
//!
//! It prints `listening on ADDR` per `--fastrouter` socket, `subscription server on ADDR`
//! per subscription socket and `stats server on ADDR` once they are bound (with the real
//! port for port 0), then routes until SIGINT or SIGTERM (exit 0). uWSGI-style log lines go
//! to stderr (`[uwsgi-subscription for pid N] new pool: …`, `… => new node: …`, `… =>
//! marking … as failed`); `RUST_LOG=debug` adds the driver's own logs. Then, with a
//! backend (the workspace's echo server) subscribed with weight 3:
//!
//! ```text
//! cargo run -p examples --bin uwsgi-echo-server -- --listen 127.0.0.1:3031 &
//! cargo run -p examples --bin subscriber -- --subscribe2 server=127.0.0.1:2626,key=example.com,addr=127.0.0.1:3031,weight=3 &
//! cargo run -p examples --bin uwsgi-curl -- -H 'Host: example.com' 127.0.0.1:3017 /
//! nc 127.0.0.1 3018      # the stats JSON
//! ```
//!
//! Bind it to **loopback only** in such experiments (`127.0.0.1`, `[::1]`, unix paths):
//! unsigned subscriptions let anyone who can reach the subscription socket route your
//! traffic (see `--subscriptions-sign-check`).
//!
//! # Options
//!
//! uWSGI's names and defaults; seconds are whole numbers. Addresses: `IP:PORT`,
//! `[IPV6]:PORT`, `HOST:PORT` (resolved once), or a unix socket path (no `:`; `unix:PATH`
//! too).
//!
//! | option | meaning |
//! |---|---|
//! | `--fastrouter ADDR` | uwsgi-protocol listener, TCP or unix stream (repeatable, at least one) |
//! | `--subscription-server ADDR` (`--fastrouter-subscription-server`) | subscription socket, UDP or unix datagram (repeatable) |
//! | `--stats ADDR` (`--fastrouter-stats`) | stats server: one JSON document per connection, uWSGI 2.0.21's layout |
//! | `--subscription-algo NAME` | `wrr` (default), `lrc`, `wlrc`, `iphash` (uWSGI 2.1), `swrr`, `ketama` (beyond uWSGI); an unknown name is an error (uWSGI 2.0.21 silently uses wrr) |
//! | `--subscription-tolerance S` | a node not refreshed for longer is marked failed at its next lookup (17) |
//! | `--subscriptions-sign-check DIGEST:DIR` | require signed subscriptions, public keys in `DIR/<key>.pem` |
//! | `--subscriptions-sign-check-tolerance S` | oldest accepted signature stamp (86400) |
//! | `--subscriptions-sign-skip-uid UID` | a sender with this uid (known from credentials) needs no signature (repeatable) |
//! | `--subscriptions-use-credentials` | read SCM_CREDENTIALS on unix subscription sockets; datagrams without them are dropped |
//! | `--subscriptions-credentials-check PREFIX` | accept a subscribe only if `PREFIX<key>` exists and is owned by the sender (repeatable) |
//! | `--subscription-dotsplit` | on a miss retry `.example.org` for `www.example.org`, at most 5 lookups |
//! | `--fastrouter-subscription-fallback-key K` | on a miss look `K` up once |
//! | `--security compat\|strict` | signed-subscription replay checks: uWSGI 2.0.21's (compat) or the tightened ones (strict, default) |
//! | `--fastrouter-timeout S` | connect timeout and idle timeout of every connection (60) |
//! | `--fastrouter-max-retries N` | further nodes tried after a failed connect (3) |
//! | `--max-sessions N` | most client connections at once; further ones are closed at once (1024; not a uWSGI option) |
//! | `--subscription-coalesce-ms MS` | under a stream of subscriptions, read them in batches at most MS apart, more often as the stream grows (20; 0: wake for each datagram; not a uWSGI option) |
//!
//! # Routing
//!
//! As uWSGI's fastrouter (spec §2.5–2.8): the request's 4-byte header and vars are read
//! (at most 65535 bytes of vars); the key is `UWSGI_FASTROUTER_KEY` if present, else
//! `HTTP_HOST`, else `SERVER_NAME` (values over 255 bytes are ignored; no key closes the
//! connection); the pool's algorithm picks a node, with the TCP peer's address as the
//! client (for `iphash` and `ketama`). The router connects to the node (`host:port` over
//! TCP, a unix path, `@name` for an abstract unix socket), writes the request with header
//! byte 0 replaced by the node's `modifier1` and byte 3 by its `modifier2`, then proxies
//! both ways until the node closes, counting bytes for the stats (`tx` read from the node,
//! `rx` written to it). A failed or timed-out connect marks the node failed (it is removed
//! once no request holds it) and the request goes to a fresh pick, at most
//! `--fastrouter-max-retries` times; then the client is closed without a response.
//!
//! Differences from uWSGI: an unknown `--subscription-algo` is an error; the client closing
//! its side does not end the session (the router keeps reading the node's response until
//! the node closes; uWSGI closes at once); buffers are bounded per direction (64 KiB plus
//! the request packet); there is no cheap mode, no static nodes, no SNI, no
//! `--fastrouter-resubscribe` and no multi-process table relay; datagrams over 4096 bytes
//! are refused rather than cut. Host names in node addresses are resolved when connecting
//! (a blocking lookup; subscribers normally announce IP addresses).

// A command-line program: its output is the point, and it owns the event loop, so it reads
// the clock (STYLE §3.5).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program reports on stdout/stderr"
)]
#![allow(clippy::disallowed_methods, reason = "the event loop reads the clock")]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Parser;
use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use subscription_proto::driver::{DriverError, ServerDriver};
use subscription_proto::server::{Event, FailReason, bucket};
use subscription_proto::{Algorithm, Endpoint, Lease, Security, ServerConfig, SignCheck};
use uwsgi_packet::{Decoder, Limits, Vars};

#[path = "../mio_stream.rs"]
mod mio_stream;
use mio_stream::Stream;

#[path = "../stats_conn.rs"]
mod stats_conn;
use stats_conn::StatsConn;

/// Exit status for invalid options (clap's own errors exit 2 too).
const USAGE: u8 = 2;
/// The longest key a lookup takes (spec §2.8: longer values are ignored).
const MAX_KEY: usize = 255;
/// Most bytes waiting in one direction of a session, besides the request packet.
const PIPE_CAP: usize = 64 * 1024;
/// Size of the one read buffer shared by every connection.
const CHUNK: usize = 16 * 1024;
/// Most stats connections open at once.
const MAX_STATS_CONNS: usize = 64;
/// Log lines of one loop iteration are written once this many bytes have gathered.
const LOG_FLUSH: usize = 64 * 1024;

const SUBSCRIPTION_TOKEN: Token = Token(0);
const SIGNAL_TOKEN: Token = Token(1);
const STATS_TOKEN: Token = Token(2);
/// Listener `i` is `Token(LISTENER_BASE + i)`.
const LISTENER_BASE: usize = 16;
/// Stats connections: `Token(STATS_CONN_BASE + n)`.
const STATS_CONN_BASE: usize = 1 << 20;
/// Session `id`: client `Token(SESSION_BASE + 2 id)`, node `Token(SESSION_BASE + 2 id + 1)`.
const SESSION_BASE: usize = 1 << 24;

/// Writes whole log lines to stderr with one `write_all` (one `write(2)` unless the kernel
/// takes less), so that a line is never split into pieces as `eprintln!` splits it.
fn write_stderr(text: &str) {
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// `eprintln!` in one `write(2)`: the line is formatted first, then written once.
macro_rules! log_line {
    ($($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        write_stderr(&line);
    }};
}

/// Command line (the option names are a public contract, STYLE §3.11).
#[derive(Parser, Debug)]
#[command(
    version,
    about = "A uWSGI fastrouter: routes uwsgi requests to the nodes subscribed for their key",
    after_help = "SIGINT/SIGTERM: exit 0. Invalid options: exit 2. Bind to loopback in experiments."
)]
struct Args {
    /// uwsgi-protocol listener: IP:PORT, HOST:PORT or a unix socket path (repeatable).
    #[arg(long = "fastrouter", value_name = "ADDR", required = true, value_parser = parse_stream_addr)]
    fastrouter: Vec<StreamAddr>,
    /// Subscription server: UDP IP:PORT or a unix datagram socket path (repeatable).
    #[arg(long = "subscription-server", visible_alias = "fastrouter-subscription-server", value_name = "ADDR", value_parser = parse_datagram_addr)]
    subscription_server: Vec<Endpoint>,
    /// Stats server (TCP IP:PORT or a unix path): one JSON document per connection.
    #[arg(long, visible_alias = "fastrouter-stats", value_name = "ADDR", value_parser = parse_stream_addr)]
    stats: Option<StreamAddr>,
    /// Balancing algorithm: wrr, lrc, wlrc, iphash, swrr, ketama (uWSGI 2.0.21 silently
    /// takes an unknown name as wrr; here it is an error).
    #[arg(long, value_name = "NAME", default_value = "wrr", value_parser = parse_algo)]
    subscription_algo: Algorithm,
    /// Seconds a node may go without a refresh before it is marked failed.
    #[arg(long, value_name = "SECS", default_value_t = 17, value_parser = clap::value_parser!(u64).range(1..))]
    subscription_tolerance: u64,
    /// Require signed subscriptions: `DIGEST:DIR`, public keys in `DIR/<key>.pem`.
    #[arg(long, value_name = "DIGEST:DIR", value_parser = parse_sign_check)]
    subscriptions_sign_check: Option<SignCheck>,
    /// Oldest accepted signature stamp, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 86_400)]
    subscriptions_sign_check_tolerance: u64,
    /// A sender with this uid (from credentials) needs no signature (repeatable; > 0).
    #[arg(long, value_name = "UID", value_parser = clap::value_parser!(u32).range(1..))]
    subscriptions_sign_skip_uid: Vec<u32>,
    /// Read SCM_CREDENTIALS on unix subscription sockets; drop datagrams without them.
    #[arg(long)]
    subscriptions_use_credentials: bool,
    /// Accept a subscribe only if `PREFIX<key>` exists and is owned by the sender (repeatable).
    #[arg(long, value_name = "PREFIX")]
    subscriptions_credentials_check: Vec<String>,
    /// On a miss, retry with the suffix from the next dot (at most 5 lookups).
    #[arg(long)]
    subscription_dotsplit: bool,
    /// On a miss, look this key up once.
    #[arg(long, value_name = "KEY")]
    fastrouter_subscription_fallback_key: Option<String>,
    /// Signed-subscription replay checks: compat (uWSGI 2.0.21's) or strict.
    #[arg(long, value_name = "MODE", default_value = "strict", value_parser = parse_security)]
    security: Security,
    /// Connect timeout and idle timeout of every connection, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    fastrouter_timeout: u64,
    /// Further nodes tried after a failed connect.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=100))]
    fastrouter_max_retries: u32,
    /// Most client connections at once (not a uWSGI option).
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    max_sessions: u64,
    /// Under a stream of subscriptions, read them in batches at most this many
    /// milliseconds apart instead of waking for each datagram (0: read each at once); the
    /// interval shrinks as the stream grows, to keep the socket's queue short. A
    /// subscription is applied at most this late, against a tolerance of seconds; requests
    /// are never delayed. Not a uWSGI option.
    #[arg(long, value_name = "MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1000))]
    subscription_coalesce_ms: u64,
}

fn parse_algo(s: &str) -> Result<Algorithm, String> {
    Algorithm::from_name(s.as_bytes())
        .ok_or_else(|| format!("unknown algorithm {s:?}: expected wrr, lrc, wlrc, iphash, swrr or ketama"))
}

fn parse_security(s: &str) -> Result<Security, String> {
    match s {
        "compat" => Ok(Security::Compat),
        "strict" => Ok(Security::Strict),
        _ => Err("expected compat or strict".into()),
    }
}

fn parse_sign_check(s: &str) -> Result<SignCheck, String> {
    let (digest, dir) = subscription_proto::sign::split_spec(s).map_err(|e| e.to_string())?;
    if dir.is_empty() {
        return Err("expected DIGEST:DIR".into());
    }
    Ok(SignCheck::new(digest, dir))
}

/// A stream address: listener, stats server.
#[derive(Clone, Debug)]
enum StreamAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

fn parse_stream_addr(s: &str) -> Result<StreamAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        return if path.is_empty() {
            Err("unix: needs a path".into())
        } else {
            Ok(StreamAddr::Unix(path.into()))
        };
    }
    if s.is_empty() {
        return Err("empty address".into());
    }
    if !s.contains(':') {
        return Ok(StreamAddr::Unix(PathBuf::from(s)));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("expected IP:PORT, HOST:PORT or a unix path ({e})"))?
        .next()
        .map(StreamAddr::Tcp)
        .ok_or_else(|| format!("{s} resolves to no address"))
}

fn parse_datagram_addr(s: &str) -> Result<Endpoint, String> {
    s.parse().map_err(|e: subscription_proto::EndpointError| e.to_string())
}

/// A listening socket.
enum Listener {
    Tcp(TcpListener),
    /// Removes its file when dropped.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    fn bind(addr: &StreamAddr) -> io::Result<Self> {
        match addr {
            StreamAddr::Tcp(a) => TcpListener::bind(*a).map(Self::Tcp),
            StreamAddr::Unix(path) => {
                // A socket file left by a killed run makes bind fail; remove it, nothing else.
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

    /// The socket's name, as uWSGI's stats list it (the real port for port 0).
    fn name(&self) -> String {
        match self {
            Self::Tcp(l) => l.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
            Self::Unix(_, path) => path.display().to_string(),
        }
    }

    /// One pending connection and its peer's IP (none for unix clients).
    fn accept(&self) -> io::Result<(Stream, Option<IpAddr>, String)> {
        match self {
            Self::Tcp(l) => l.accept().map(|(s, peer)| {
                // Small requests and responses: do not wait to fill segments.
                let _ = s.set_nodelay(true);
                (Stream::Tcp(s), Some(peer.ip()), peer.to_string())
            }),
            Self::Unix(l, path) => {
                l.accept().map(|(s, _)| (Stream::Unix(s), None, format!("unix:{}", path.display())))
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

impl Drop for Listener {
    fn drop(&mut self) {
        if let Self::Unix(_, path) = self {
            // Best effort: the file may be gone already.
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Stream {
    /// `Ok(true)` once connected, `Ok(false)` while connecting, the error if it failed.
    fn connect_status(&self) -> io::Result<bool> {
        let (error, peer) = match self {
            Self::Tcp(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
            Self::Unix(s) => (s.take_error()?, s.peer_addr().map(|_| ())),
        };
        if let Some(e) = error {
            return Err(e);
        }
        match peer {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Where a node listens, from its subscribed `address` (spec §1.4).
#[derive(Debug)]
enum NodeAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
    /// `@name`: a Linux abstract unix socket.
    Abstract(Vec<u8>),
}

/// `host:port` (split at the first `:`, as uWSGI; `[v6]:port` too) is TCP, `@name` an
/// abstract socket, anything else a unix path.
fn parse_node_addr(address: &[u8]) -> Result<NodeAddr, String> {
    let text = std::str::from_utf8(address).map_err(|_| "not UTF-8".to_owned());
    if let Some(name) = address.strip_prefix(b"@") {
        return Ok(NodeAddr::Abstract(name.to_vec()));
    }
    if !address.contains(&b':') {
        use std::os::unix::ffi::OsStrExt;
        return Ok(NodeAddr::Unix(PathBuf::from(std::ffi::OsStr::from_bytes(address))));
    }
    let text = text?;
    if text.starts_with('[') {
        return text.parse().map(NodeAddr::Tcp).map_err(|_| "expected [IPV6]:PORT".to_owned());
    }
    let (host, port) = text.split_once(':').ok_or("expected HOST:PORT")?;
    let port: u16 = port.parse().map_err(|_| format!("bad port {port:?}"))?;
    // uWSGI reads ":PORT" as every interface; connecting there reaches this host.
    if host.is_empty() {
        return Ok(NodeAddr::Tcp(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(NodeAddr::Tcp(SocketAddr::new(ip, port)));
    }
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .map(NodeAddr::Tcp)
        .ok_or_else(|| format!("{host} resolves to no address"))
}

fn connect(addr: &NodeAddr) -> io::Result<Stream> {
    match addr {
        NodeAddr::Tcp(a) => {
            let s = TcpStream::connect(*a)?;
            let _ = s.set_nodelay(true);
            Ok(Stream::Tcp(s))
        }
        NodeAddr::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
        #[cfg(target_os = "linux")]
        NodeAddr::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            UnixStream::connect_addr(&addr).map(Stream::Unix)
        }
        #[cfg(not(target_os = "linux"))]
        NodeAddr::Abstract(_) => {
            Err(io::Error::new(io::ErrorKind::Unsupported, "abstract unix sockets exist on Linux only"))
        }
    }
}

/// Bytes on their way in one direction, at most [`PIPE_CAP`] besides the request packet.
#[derive(Default)]
struct Pipe {
    buf: Vec<u8>,
    pos: usize,
}

impl Pipe {
    fn pending(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn room(&self) -> usize {
        PIPE_CAP.saturating_sub(self.pending().len())
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }
}

/// Where a session is.
enum State {
    /// Reading the request's header and vars.
    Request { buf: BytesMut },
    /// Connecting to the node of `lease`.
    Connecting { node: Stream, lease: Lease },
    /// Connected: proxying both ways until the node closes.
    Proxy { node: Stream, lease: Lease, node_eof: bool },
    /// Placeholder while the state is being advanced.
    Gone,
}

/// One client connection and, once picked, its node.
struct Session {
    client: Stream,
    client_ip: Option<IpAddr>,
    peer: String,
    state: State,
    key: Vec<u8>,
    /// Connects that failed so far.
    failures: u32,
    /// To the node: the request packet, then the body as the client sends it.
    up: Pipe,
    /// To the client: the node's response.
    down: Pipe,
    client_eof: bool,
    deadline: Instant,
}

/// What advancing a session decided.
enum Next {
    /// Wait for readiness (or the deadline).
    Wait,
    /// Close it; log the reason if there is one.
    Close(Option<String>),
}

struct App {
    poll: Poll,
    server: ServerDriver,
    listeners: Vec<Listener>,
    stats: Option<Listener>,
    stats_conns: BTreeMap<Token, StatsConn<Stream>>,
    next_stats_conn: usize,
    sessions: BTreeMap<usize, Session>,
    next_session: usize,
    signals: Signals,
    decoder: Decoder,
    timeout: Duration,
    max_retries: u32,
    max_sessions: usize,
    scratch: Vec<u8>,
    /// `fastrouter` of the stats: every socket name, listeners first.
    socket_names: Vec<String>,
    /// Our pid, for the log lines (read once).
    pid: u32,
    /// The batching of subscription reads.
    coalesce: Coalesce,
    /// The log lines being gathered by `report` (kept for its capacity).
    log_buf: String,
}

/// The batching of subscription reads (`--subscription-coalesce-ms`).
///
/// Under a stream of subscriptions, waking for each datagram costs more than reading it
/// (on the benchmark's VM about 50 µs a wake-up against 1–2 µs a datagram): after a read
/// the subscription sockets are deregistered for an interval, then registered again and
/// read. The first interval is 5 ms (at most `max`); each next one is sized so that about
/// `target` datagrams queue meanwhile at the rate just seen, between 1 ms and `max`:
/// light streams are read every `max`, heavy ones often enough that the socket's queue
/// stays a small part of its receive buffer. Requests are never delayed.
struct Coalesce {
    /// The longest interval; zero: no batching.
    max: Duration,
    /// Datagrams an interval should gather: a quarter of what the receive buffer holds,
    /// between 16 and 1024 (the driver's batch per read).
    target: u64,
    /// While batching: the subscription sockets are deregistered until then.
    read_again_at: Option<Instant>,
    /// When the last read ended, and the driver's datagram count then.
    mark: (Instant, u64),
}

impl Coalesce {
    /// The first interval of a stream.
    const FIRST: Duration = Duration::from_millis(5);
    /// The shortest interval.
    const MIN: Duration = Duration::from_millis(1);
    /// What a subscription costs in a receive buffer (its kernel bookkeeping included),
    /// rounded up: 112-byte subscriptions cost 832 bytes on loopback.
    const DATAGRAM_COST: usize = 1024;
    /// The batch target without UDP sockets: unix datagram sockets queue a number of
    /// datagrams (`net.unix.max_dgram_qlen`, often 512), not bytes.
    const UNIX_TARGET: u64 = 64;

    fn new(max: Duration, server: &ServerDriver) -> Self {
        let target = server.udp_receive_buffer().map_or(Self::UNIX_TARGET, |bytes| {
            u64::try_from(bytes / Self::DATAGRAM_COST / 4).unwrap_or(u64::MAX).clamp(16, 1024)
        });
        let target = if server.local_endpoints().iter().any(|e| matches!(e, Endpoint::Unix(_))) {
            target.min(Self::UNIX_TARGET)
        } else {
            target
        };
        Self { max, target, read_again_at: None, mark: (Instant::now(), 0) }
    }

    fn enabled(&self) -> bool {
        !self.max.is_zero()
    }

    /// A stream starts: the sockets were just read (`received` datagrams so far).
    fn start(&mut self, now: Instant, received: u64) {
        self.mark = (now, received);
        self.read_again_at = Some(now + Self::FIRST.min(self.max));
    }

    /// The stream goes on: a read just ended with `received` datagrams so far.
    fn next(&mut self, now: Instant, received: u64) {
        let (then, before) = self.mark;
        let n = received.saturating_sub(before).max(1);
        let elapsed = now.saturating_duration_since(then);
        // The interval in which `target` datagrams arrive at n per `elapsed`.
        let interval = elapsed
            .checked_mul(u32::try_from(self.target).unwrap_or(u32::MAX))
            .map_or(self.max, |d| d / u32::try_from(n).unwrap_or(u32::MAX));
        let interval = interval.clamp(Self::MIN.min(self.max), self.max);
        self.mark = (now, received);
        self.read_again_at = Some(now + interval);
    }
}

/// Why the router stops with an error.
enum Fatal {
    Usage(String),
    Runtime(String),
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt().with_writer(io::stderr).with_env_filter(filter).init();
    let args = Args::parse();
    match App::start(&args).and_then(|mut app| app.serve()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal::Usage(message)) => {
            log_line!("fastrouter: {message}");
            ExitCode::from(USAGE)
        }
        Err(Fatal::Runtime(message)) => {
            log_line!("fastrouter: {message}");
            ExitCode::FAILURE
        }
    }
}

fn server_config(args: &Args) -> ServerConfig {
    let mut config = ServerConfig::new()
        .algorithm(args.subscription_algo)
        .tolerance(Duration::from_secs(args.subscription_tolerance))
        .security(args.security)
        .use_credentials(args.subscriptions_use_credentials)
        .dotsplit(args.subscription_dotsplit)
        .fallback_key(args.fastrouter_subscription_fallback_key.clone().map(String::into_bytes));
    if let Some(check) = &args.subscriptions_sign_check {
        let mut check = check.clone();
        check.tolerance = Duration::from_secs(args.subscriptions_sign_check_tolerance);
        config = config.sign_check(check);
    }
    for prefix in &args.subscriptions_credentials_check {
        config = config.credentials_check(prefix.clone().into_bytes());
    }
    for &uid in &args.subscriptions_sign_skip_uid {
        config = config.skip_uid(uid);
    }
    config
}

fn stream_addr_text(addr: &StreamAddr) -> String {
    match addr {
        StreamAddr::Tcp(a) => a.to_string(),
        StreamAddr::Unix(p) => p.display().to_string(),
    }
}

impl App {
    fn start(args: &Args) -> Result<Self, Fatal> {
        if args.subscriptions_use_credentials
            && !args.subscription_server.iter().any(|e| matches!(e, Endpoint::Unix(_)))
        {
            log_line!(
                "fastrouter: --subscriptions-use-credentials needs a unix --subscription-server to be of use"
            );
        }
        if let Some(check) = &args.subscriptions_sign_check
            && !check.dir.is_dir()
        {
            return Err(Fatal::Usage(format!(
                "--subscriptions-sign-check: {} is not a directory",
                check.dir.display()
            )));
        }
        let runtime = |what: &str, e: &dyn std::fmt::Display| Fatal::Runtime(format!("{what}: {e}"));
        let poll = Poll::new().map_err(|e| runtime("cannot create the event loop", &e))?;
        // Signals first: once the addresses are printed, SIGINT/SIGTERM mean a clean exit.
        let mut signals =
            Signals::new([SIGINT, SIGTERM]).map_err(|e| runtime("cannot handle SIGINT/SIGTERM", &e))?;
        poll.registry()
            .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)
            .map_err(|e| runtime("cannot handle SIGINT/SIGTERM", &e))?;
        let mut out = io::stdout().lock();
        let mut listeners = Vec::new();
        for (i, addr) in args.fastrouter.iter().enumerate() {
            let mut l = Listener::bind(addr).map_err(|e| {
                runtime(&format!("--fastrouter {}: cannot listen", stream_addr_text(addr)), &e)
            })?;
            poll.registry()
                .register(l.source(), Token(LISTENER_BASE + i), Interest::READABLE)
                .map_err(|e| runtime("--fastrouter", &e))?;
            let _ = writeln!(out, "listening on {}", l.name());
            listeners.push(l);
        }
        let mut server =
            ServerDriver::bind(server_config(args), &args.subscription_server).map_err(|e| match e {
                DriverError::Bind { endpoint, source } => {
                    Fatal::Runtime(format!("--subscription-server {endpoint}: cannot bind: {source}"))
                }
                e => runtime("--subscription-server", &e),
            })?;
        server
            .register(poll.registry(), SUBSCRIPTION_TOKEN)
            .map_err(|e| runtime("--subscription-server", &e))?;
        for endpoint in server.local_endpoints() {
            let _ = writeln!(out, "subscription server on {endpoint}");
        }
        let stats = match &args.stats {
            None => None,
            Some(addr) => {
                let mut l = Listener::bind(addr).map_err(|e| {
                    runtime(&format!("--stats {}: cannot listen", stream_addr_text(addr)), &e)
                })?;
                poll.registry()
                    .register(l.source(), STATS_TOKEN, Interest::READABLE)
                    .map_err(|e| runtime("--stats", &e))?;
                let _ = writeln!(out, "stats server on {}", l.name());
                Some(l)
            }
        };
        let _ = out.flush();
        drop(out);
        let mut socket_names: Vec<String> = listeners.iter().map(Listener::name).collect();
        socket_names.extend(server.local_endpoints().iter().map(ToString::to_string));
        let coalesce = Coalesce::new(Duration::from_millis(args.subscription_coalesce_ms), &server);
        Ok(Self {
            poll,
            server,
            listeners,
            stats,
            stats_conns: BTreeMap::new(),
            next_stats_conn: 0,
            sessions: BTreeMap::new(),
            next_session: 0,
            signals,
            // uWSGI's fastrouter takes vars blocks up to 65535 bytes.
            decoder: Decoder::new(Limits::unlimited().max_datasize(u16::MAX)),
            timeout: Duration::from_secs(args.fastrouter_timeout),
            max_retries: args.fastrouter_max_retries,
            max_sessions: usize::try_from(args.max_sessions).unwrap_or(usize::MAX),
            scratch: vec![0; CHUNK],
            socket_names,
            pid: std::process::id(),
            coalesce,
            log_buf: String::new(),
        })
    }

    /// The event loop, until SIGINT or SIGTERM.
    fn serve(&mut self) -> Result<(), Fatal> {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            self.expire(now);
            self.server.flush(now).map_err(|e| Fatal::Runtime(format!("subscription server: {e}")))?;
            self.report();
            let now = Instant::now();
            if self.coalesce.read_again_at.is_some_and(|t| now >= t) {
                self.read_batch(now)?;
            }
            let next_deadline = self.sessions.values().map(|s| s.deadline).min();
            let next_deadline = match (next_deadline, self.coalesce.read_again_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wait = [self.server.timeout(now), next_deadline.map(|d| d.saturating_duration_since(now))]
                .into_iter()
                .flatten()
                .min();
            match self.poll.poll(&mut events, wait) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Fatal::Runtime(format!("event loop: {e}"))),
                Ok(()) => {}
            }
            for event in &events {
                match event.token() {
                    SUBSCRIPTION_TOKEN => {
                        let now = Instant::now();
                        self.server
                            .handle_ready(event, now)
                            .map_err(|e| Fatal::Runtime(format!("subscription server: {e}")))?;
                        // Batch what comes next: one wake-up per interval, not per datagram.
                        if self.coalesce.enabled() && self.coalesce.read_again_at.is_none() {
                            self.server
                                .deregister(self.poll.registry())
                                .map_err(|e| Fatal::Runtime(format!("subscription server: {e}")))?;
                            self.coalesce.start(now, self.server.stats().datagrams_received);
                        }
                    }
                    // SIGINT, SIGTERM: exit 0. Dropping the app closes every socket and
                    // removes the unix socket files.
                    SIGNAL_TOKEN if self.signals.pending().next().is_some() => return Ok(()),
                    STATS_TOKEN => self.accept_stats(),
                    Token(t) if (LISTENER_BASE..LISTENER_BASE + self.listeners.len()).contains(&t) => {
                        self.accept(t - LISTENER_BASE);
                    }
                    Token(t) if (STATS_CONN_BASE..SESSION_BASE).contains(&t) => self.write_stats(Token(t)),
                    Token(t) if t >= SESSION_BASE => self.advance((t - SESSION_BASE) / 2),
                    _ => {}
                }
            }
            self.report();
        }
    }

    /// The end of a batching interval: listen again and read what queued; while datagrams
    /// keep coming, stay deaf for another interval.
    fn read_batch(&mut self, now: Instant) -> Result<(), Fatal> {
        let fatal = |e: DriverError| Fatal::Runtime(format!("subscription server: {e}"));
        let before = self.server.stats().datagrams_received;
        self.server.register(self.poll.registry(), SUBSCRIPTION_TOKEN).map_err(fatal)?;
        self.server.read_now(now).map_err(fatal)?;
        self.report();
        let received = self.server.stats().datagrams_received;
        if received == before {
            self.coalesce.read_again_at = None;
        } else {
            self.server.deregister(self.poll.registry()).map_err(fatal)?;
            self.coalesce.next(now, received);
        }
        Ok(())
    }

    /// uWSGI's log lines for the table's events. All the lines of one call go to stderr in
    /// one `write(2)` (a few for a large batch): `eprintln!` would write each piece of its
    /// format separately (Rust's stderr is unbuffered), 7 writes per `new node` line, which
    /// was most of the cost of 30,000 new nodes (BENCHMARKS.md).
    fn report(&mut self) {
        let pid = self.pid;
        let mut out = std::mem::take(&mut self.log_buf);
        while let Some(event) = self.server.poll_event() {
            let t = String::from_utf8_lossy;
            let _ = match event {
                Event::PoolCreated { key } => writeln!(
                    out,
                    "[uwsgi-subscription for pid {pid}] new pool: {} (hash key: {})",
                    t(&key),
                    bucket(&key)
                ),
                Event::NodeAdded { key, address } => {
                    writeln!(
                        out,
                        "[uwsgi-subscription for pid {pid}] {} => new node: {}",
                        t(&key),
                        t(&address)
                    )
                }
                Event::NodeFailed { key, address, reason } => {
                    let why = match reason {
                        FailReason::Unsubscribed => "unsubscribed",
                        FailReason::Expired => "expired",
                        FailReason::ConnectFailed => "connect failed",
                        _ => "failed",
                    };
                    writeln!(
                        out,
                        "[uwsgi-fastrouter] {} => marking {} as failed ({why})",
                        t(&key),
                        t(&address)
                    )
                }
                Event::NodeRemoved { key, address } => writeln!(
                    out,
                    "[uwsgi-subscription for pid {pid}] {} => removed node: {}",
                    t(&key),
                    t(&address)
                ),
                Event::PoolRemoved { key } => {
                    writeln!(out, "[uwsgi-subscription for pid {pid}] pool removed: {}", t(&key))
                }
                _ => Ok(()),
            };
            if out.len() >= LOG_FLUSH {
                write_stderr(&out);
                out.clear();
            }
        }
        if !out.is_empty() {
            write_stderr(&out);
            out.clear();
        }
        self.log_buf = out;
    }

    // ----- sessions -------------------------------------------------------------------------

    fn accept(&mut self, index: usize) {
        loop {
            let Some(listener) = self.listeners.get(index) else { return };
            let (mut client, client_ip, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // E.g. EMFILE; the next connection attempt wakes us again.
                    log_line!("[uwsgi-fastrouter] accept(): {e}");
                    return;
                }
            };
            if self.sessions.len() >= self.max_sessions {
                log_line!(
                    "[uwsgi-fastrouter] {peer}: {} sessions open (--max-sessions), closed",
                    self.sessions.len()
                );
                continue; // dropping it closes it
            }
            let id = self.alloc_session();
            let registered = self.poll.registry().register(
                &mut client,
                client_token(id),
                Interest::READABLE | Interest::WRITABLE,
            );
            if let Err(e) = registered {
                log_line!("[uwsgi-fastrouter] {peer}: cannot register the connection: {e}");
                continue;
            }
            self.sessions.insert(
                id,
                Session {
                    client,
                    client_ip,
                    peer,
                    state: State::Request { buf: BytesMut::new() },
                    key: Vec::new(),
                    failures: 0,
                    up: Pipe::default(),
                    down: Pipe::default(),
                    client_eof: false,
                    deadline: Instant::now() + self.timeout,
                },
            );
            // Bytes may already be queued; reading now saves an iteration.
            self.advance(id);
        }
    }

    fn alloc_session(&mut self) -> usize {
        loop {
            let id = self.next_session;
            self.next_session = (self.next_session + 1) % (1 << 40);
            if !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Runs a session as far as it goes without blocking.
    fn advance(&mut self, id: usize) {
        let Some(mut session) = self.sessions.remove(&id) else { return };
        let next = self.drive(id, &mut session);
        match next {
            Next::Wait => {
                self.sessions.insert(id, session);
            }
            Next::Close(reason) => self.close(session, reason),
        }
    }

    fn close(&mut self, mut session: Session, reason: Option<String>) {
        if let Some(reason) = reason {
            log_line!("[uwsgi-fastrouter] {}: {reason}", session.peer);
        }
        let registry = self.poll.registry();
        let _ = session.client.deregister(registry);
        if let State::Connecting { node, .. } | State::Proxy { node, .. } = &mut session.state {
            let _ = node.deregister(registry);
        }
        // Dropping the session closes both sockets and releases the lease (spec §2.6:
        // `ref -= 1` when the node's connection closes).
    }

    /// Closes sessions whose deadline passed; a connect that timed out fails over.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<usize> =
            self.sessions.iter().filter(|(_, s)| s.deadline <= now).map(|(id, _)| *id).collect();
        for id in expired {
            let Some(mut session) = self.sessions.remove(&id) else { continue };
            let next = match std::mem::replace(&mut session.state, State::Gone) {
                State::Connecting { mut node, lease } => {
                    let _ = node.deregister(self.poll.registry());
                    let address = String::from_utf8_lossy(lease.address()).into_owned();
                    self.connect_failed(id, &mut session, lease, &address, "timeout")
                }
                State::Request { .. } => Next::Close(Some("timeout reading the request".into())),
                State::Proxy { mut node, .. } => {
                    let _ = node.deregister(self.poll.registry());
                    Next::Close(Some("timeout".into()))
                }
                State::Gone => Next::Close(None),
            };
            match next {
                Next::Wait => {
                    self.sessions.insert(id, session);
                }
                Next::Close(reason) => self.close(session, reason),
            }
        }
    }

    fn drive(&mut self, id: usize, s: &mut Session) -> Next {
        loop {
            match std::mem::replace(&mut s.state, State::Gone) {
                State::Request { mut buf } => match self.read_request(s, &mut buf) {
                    Ok(true) => {
                        s.state = State::Gone;
                        if let Next::Close(reason) = self.pick_and_connect(id, s) {
                            return Next::Close(reason);
                        }
                    }
                    Ok(false) => {
                        s.state = State::Request { buf };
                        return Next::Wait;
                    }
                    Err(reason) => return Next::Close(reason),
                },
                State::Connecting { mut node, lease } => match node.connect_status() {
                    Ok(true) => {
                        // Spec §2.6: requests and last_requests count successful connects.
                        lease.connected();
                        // Spec §1.4: the fastrouter writes the node's modifiers into the
                        // client's header (nothing of it has been sent yet).
                        if let Some(m1) = s.up.buf.first_mut() {
                            *m1 = lease.modifier1();
                        }
                        if let Some(m2) = s.up.buf.get_mut(3) {
                            *m2 = lease.modifier2();
                        }
                        s.deadline = Instant::now() + self.timeout;
                        s.state = State::Proxy { node, lease, node_eof: false };
                    }
                    Ok(false) => {
                        s.state = State::Connecting { node, lease };
                        return Next::Wait;
                    }
                    Err(e) => {
                        let _ = node.deregister(self.poll.registry());
                        drop(node);
                        let address = String::from_utf8_lossy(lease.address()).into_owned();
                        if let Next::Close(reason) =
                            self.connect_failed(id, s, lease, &address, &e.to_string())
                        {
                            return Next::Close(reason);
                        }
                        // A fresh connect is in progress: check it at once (a unix connect
                        // completes at once).
                    }
                },
                State::Proxy { node, lease, node_eof } => {
                    return self.proxy(s, node, lease, node_eof);
                }
                State::Gone => return Next::Close(None),
            }
        }
    }

    /// Reads the request packet. `Ok(true)` when it is complete (in `s.up`, key set).
    fn read_request(&mut self, s: &mut Session, buf: &mut BytesMut) -> Result<bool, Option<String>> {
        loop {
            // Read no further than the packet: the body goes through the pipe.
            let want = self.decoder.reserve_hint(buf).saturating_sub(buf.len()).clamp(1, self.scratch.len());
            match s.client.read(&mut self.scratch[..want]) {
                Ok(0) => {
                    return Err(match self.decoder.decode_eof(buf) {
                        Ok(_) => None,
                        Err(e) => Some(format!("{}: {e}", e.kind().as_str())),
                    });
                }
                Ok(n) => {
                    buf.extend_from_slice(&self.scratch[..n]);
                    s.deadline = Instant::now() + self.timeout;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Some(format!("read: {e}"))),
            }
            match self.decoder.decode(buf) {
                Err(e) => return Err(Some(format!("{}: {e}", e.kind().as_str()))),
                Ok(None) => {}
                Ok(Some(packet)) => {
                    let Some(key) = request_key(&packet.vars()) else {
                        return Err(Some(
                            "no key in the request (UWSGI_FASTROUTER_KEY, HTTP_HOST, SERVER_NAME)".into(),
                        ));
                    };
                    s.key = key.to_vec();
                    s.up.push(&packet.header().to_bytes());
                    s.up.push(packet.body());
                    // Anything read past the packet is body (never, as reads stop at it).
                    s.up.push(&buf[..]);
                    buf.clear();
                    return Ok(true);
                }
            }
        }
    }

    /// A fresh lookup and a connect to the node it gives (spec §2.5, §2.6).
    fn pick_and_connect(&mut self, id: usize, s: &mut Session) -> Next {
        loop {
            let now = Instant::now();
            let Some(lease) = self.server.core_mut().pick(now, &s.key, s.client_ip) else {
                let key = String::from_utf8_lossy(&s.key).into_owned();
                return Next::Close(Some(format!("no node for key {key:?}")));
            };
            let address = String::from_utf8_lossy(lease.address()).into_owned();
            let attempt = parse_node_addr(lease.address())
                .map_err(|e| format!("bad node address: {e}"))
                .and_then(|addr| {
                    let mut node = connect(&addr).map_err(|e| e.to_string())?;
                    self.poll
                        .registry()
                        .register(&mut node, node_token(id), Interest::READABLE | Interest::WRITABLE)
                        .map_err(|e| e.to_string())?;
                    Ok(node)
                });
            match attempt {
                Ok(node) => {
                    s.deadline = now + self.timeout;
                    s.state = State::Connecting { node, lease };
                    return Next::Wait;
                }
                Err(why) => {
                    if let Next::Close(reason) = self.fail_over(s, lease, &address, &why) {
                        return Next::Close(reason);
                    }
                }
            }
        }
    }

    /// A connect failed: mark the node, then try a fresh pick if retries are left.
    fn connect_failed(&mut self, id: usize, s: &mut Session, lease: Lease, address: &str, why: &str) -> Next {
        match self.fail_over(s, lease, address, why) {
            Next::Wait => self.pick_and_connect(id, s),
            close => close,
        }
    }

    /// Marks the node failed and releases it; `Wait` if another attempt may be made.
    fn fail_over(&mut self, s: &mut Session, lease: Lease, address: &str, why: &str) -> Next {
        s.failures += 1;
        log_line!(
            "[uwsgi-fastrouter] unable to connect() to node \"{address}\" ({} retries): {why}",
            s.failures - 1
        );
        // Spec §2.6: failcnt + 1, death mark, removal once unreferenced (the lease is
        // dropped here, so at the next lookup), then a fresh LOOKUP.
        lease.mark_failed();
        drop(lease);
        if s.failures > self.max_retries {
            return Next::Close(Some(format!("giving up after {} failed connects", s.failures)));
        }
        Next::Wait
    }

    /// Proxies both ways until the node closes and its response is out.
    fn proxy(&mut self, s: &mut Session, mut node: Stream, lease: Lease, mut node_eof: bool) -> Next {
        loop {
            let mut progress = false;
            // Client → pipe (the body). The client closing its side does not end the
            // session: the node's response still comes (no half-close is passed on).
            if !s.client_eof && s.up.room() > 0 {
                let want = s.up.room().min(self.scratch.len());
                match s.client.read(&mut self.scratch[..want]) {
                    Ok(0) => {
                        s.client_eof = true;
                        progress = true;
                    }
                    Ok(n) => {
                        s.up.push(&self.scratch[..n]);
                        progress = true;
                    }
                    Err(e) if is_retry(&e) => {}
                    Err(e) => return Next::Close(Some(format!("client read: {e}"))),
                }
            }
            // Pipe → node.
            if !s.up.pending().is_empty() {
                match node.write(s.up.pending()) {
                    Ok(0) => return Next::Close(Some("the node accepts no more bytes".into())),
                    Ok(n) => {
                        s.up.consume(n);
                        lease.add_bytes(0, n as u64);
                        progress = true;
                    }
                    Err(e) if is_retry(&e) => {}
                    Err(e) => {
                        return Next::Close(Some(format!("write to node {}: {e}", text(lease.address()))));
                    }
                }
            }
            // Node → pipe (the response).
            if !node_eof && s.down.room() > 0 {
                let want = s.down.room().min(self.scratch.len());
                match node.read(&mut self.scratch[..want]) {
                    Ok(0) => {
                        node_eof = true;
                        progress = true;
                    }
                    Ok(n) => {
                        s.down.push(&self.scratch[..n]);
                        lease.add_bytes(n as u64, 0);
                        progress = true;
                    }
                    Err(e) if is_retry(&e) => {}
                    Err(e) => {
                        return Next::Close(Some(format!("read from node {}: {e}", text(lease.address()))));
                    }
                }
            }
            // Pipe → client.
            if !s.down.pending().is_empty() {
                match s.client.write(s.down.pending()) {
                    Ok(0) => return Next::Close(Some("the client accepts no more bytes".into())),
                    Ok(n) => {
                        s.down.consume(n);
                        progress = true;
                    }
                    Err(e) if is_retry(&e) => {}
                    // The client went away: nothing to log.
                    Err(_) => return Next::Close(None),
                }
            }
            if node_eof && s.down.pending().is_empty() {
                // Done: the node closed and its response is out.
                return Next::Close(None);
            }
            if progress {
                s.deadline = Instant::now() + self.timeout;
            } else {
                s.state = State::Proxy { node, lease, node_eof };
                return Next::Wait;
            }
        }
    }

    // ----- stats ------------------------------------------------------------------------------

    fn accept_stats(&mut self) {
        loop {
            let Some(listener) = &self.stats else { return };
            let (stream, _, _) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log_line!("fastrouter: --stats: accept: {e}");
                    return;
                }
            };
            if self.stats_conns.len() >= MAX_STATS_CONNS {
                continue; // dropping it closes it
            }
            let token = Token(STATS_CONN_BASE + self.next_stats_conn);
            self.next_stats_conn = (self.next_stats_conn + 1) % (SESSION_BASE - STATS_CONN_BASE);
            let mut conn = StatsConn::new(stream, self.stats_json().into_bytes());
            if self.poll.registry().register(&mut conn.stream, token, Interest::WRITABLE).is_ok() {
                self.stats_conns.insert(token, conn);
                self.write_stats(token);
            }
        }
    }

    /// Writes what is left of a stats document; closes the connection when done.
    fn write_stats(&mut self, token: Token) {
        let Some(conn) = self.stats_conns.get_mut(&token) else { return };
        if conn.write_some()
            && let Some(mut conn) = self.stats_conns.remove(&token)
        {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    /// uWSGI 2.0.21's stats document (spec §2.12, vectors/subscription/stats-fastrouter-2.0.21.json),
    /// keys in its order, formatted as it does.
    fn stats_json(&self) -> String {
        let s = |v: &str| serde_json::Value::from(v).to_string();
        let b = |v: &[u8]| s(&String::from_utf8_lossy(v));
        let (uid, gid) = std::fs::metadata("/proc/self").map(|m| (m.uid(), m.gid())).unwrap_or((0, 0));
        let cwd = std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default();
        let mut out = String::new();
        let _ = writeln!(out, "{{");
        let _ = writeln!(out, "\t\"version\":{},", s(concat!("2.0.21-rs-", env!("CARGO_PKG_VERSION"))));
        let _ = writeln!(out, "\t\"pid\":{},", std::process::id());
        let _ = writeln!(out, "\t\"uid\":{uid},");
        let _ = writeln!(out, "\t\"gid\":{gid},");
        let _ = writeln!(out, "\t\"cwd\":{},", s(&cwd));
        let _ = writeln!(out, "\t\"active_sessions\":{},", self.sessions.len());
        let names: Vec<String> = self.socket_names.iter().map(|n| s(n)).collect();
        let _ = writeln!(out, "\t\"fastrouter\":[\n{}\n\t],", names.join(",\n"));
        let _ = writeln!(out, "\t\"subscriptions\":[");
        let pools = self.server.core().pools();
        for (i, pool) in pools.iter().enumerate() {
            let _ = writeln!(out, "\t\t{{");
            let _ = writeln!(out, "\t\t\t\"key\":{},", b(pool.key()));
            let _ = writeln!(out, "\t\t\t\"hash\":{},", pool.hash());
            let _ = writeln!(out, "\t\t\t\"hits\":{},", pool.hits());
            let _ = writeln!(out, "\t\t\t\"sni_enabled\":0,");
            let _ = writeln!(out, "\t\t\t\"nodes\":[");
            for (j, n) in pool.nodes().iter().enumerate() {
                let c = n.credentials();
                let fields = [
                    ("name", b(n.address())),
                    ("modifier1", n.modifier1().to_string()),
                    ("modifier2", n.modifier2().to_string()),
                    ("last_check", n.last_check_unix().to_string()),
                    ("pid", c.pid.to_string()),
                    ("uid", c.uid.to_string()),
                    ("gid", c.gid.to_string()),
                    ("requests", n.requests().to_string()),
                    ("last_requests", n.last_requests().to_string()),
                    ("tx", n.tx().to_string()),
                    ("rx", n.rx().to_string()),
                    ("cores", n.cores().to_string()),
                    ("load", n.load().to_string()),
                    ("weight", n.weight().to_string()),
                    ("wrr", n.wrr().to_string()),
                    ("ref", n.refs().to_string()),
                    ("failcnt", n.failcnt().to_string()),
                    ("death_mark", u8::from(n.death_mark()).to_string()),
                ];
                let body: Vec<String> =
                    fields.iter().map(|(k, v)| format!("\t\t\t\t\t\"{k}\":{v}")).collect();
                let comma = if j + 1 < pool.nodes().len() { "," } else { "" };
                let _ = writeln!(out, "\t\t\t\t{{\n{}\n\t\t\t\t}}{comma}", body.join(",\n"));
            }
            let _ = writeln!(out, "\t\t\t]");
            let comma = if i + 1 < pools.len() { "," } else { "" };
            let _ = writeln!(out, "\t\t}}{comma}");
        }
        let _ = writeln!(out, "\t],");
        let _ = writeln!(out, "\t\"cheap\":0");
        let _ = writeln!(out, "}}");
        out
    }
}

fn client_token(id: usize) -> Token {
    Token(SESSION_BASE + 2 * id)
}

fn node_token(id: usize) -> Token {
    Token(SESSION_BASE + 2 * id + 1)
}

fn is_retry(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The lookup key of a request (spec §2.8): `UWSGI_FASTROUTER_KEY`, else `HTTP_HOST`, else
/// `SERVER_NAME`; values longer than 255 bytes are ignored, as uWSGI's fastrouter does.
/// `None` (no usable key, or an empty one) closes the connection.
fn request_key<'a>(vars: &Vars<'a>) -> Option<&'a [u8]> {
    let usable = |v: &&[u8]| v.len() <= MAX_KEY;
    // uWSGI overwrites the key with every later occurrence of the first two, and takes the
    // first SERVER_NAME only while no key is set.
    let last = |name: &[u8]| vars.get_all(name).filter(usable).last();
    last(b"UWSGI_FASTROUTER_KEY")
        .or_else(|| last(b"HTTP_HOST"))
        .or_else(|| vars.get_all(b"SERVER_NAME").find(usable))
        .filter(|k| !k.is_empty())
}
