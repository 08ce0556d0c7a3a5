//! `zerg-http`: a small HTTP/1.1 responder that takes its listening sockets from a zerg
//! server (uWSGI's `--zerg`), from systemd, or binds them itself, and can share them
//! onwards (uWSGI's `--zerg-server`), so instances can be added and retired without a
//! refused connection.
//!
//! It demonstrates the client side of `zerg_fdpass`: `driver::attach_all` (with a
//! deadline), `client::assign` (received sockets matched to the configured addresses),
//! `Listener::from_systemd` and `Listener::bind`, plus a `driver::ServerDriver` in the
//! same mio loop as every listener and connection. Every request gets
//! `HTTP/1.1 200 OK` with the body `"PID TEXT\n"`, then the connection is closed (one
//! request per connection, so a graceful stop never races a keep-alive request).
//!
//! # Running it
//!
//! A zero-downtime hand-over, on loopback:
//!
//! ```text
//! cargo build -p examples --bins
//! target/debug/zerg-http --http-socket 127.0.0.1:8080 --zerg-server /tmp/zs-a.sock --text old &
//! target/debug/zerg-http --zerg /tmp/zs-a.sock --zerg-server /tmp/zs-b.sock --text new &
//! target/debug/http-load --target 127.0.0.1:8080 --duration-ms 3000 &   # both pids answer
//! kill -INT %1              # the old one stops accepting, finishes its requests, exits 0
//! wait %3                   # {"ok":…,"failed":0,"refused":0,"timeouts":0,…}
//! ```
//!
//! With a `zergpool` (`--zerg POOL`), under systemd (`ListenStream=` sockets arrive as
//! `LISTEN_FDS`), or alone (`--http-socket ADDR`). Bind it to **loopback only** in such
//! experiments; keep zerg server sockets private (the default mode is 600 and only this
//! uid and root may attach).
//!
//! # Options
//!
//! | option | meaning |
//! |---|---|
//! | `--http-socket ADDR` | an HTTP listener (repeatable): `IP:PORT`, `:PORT`, `[IPv6]:PORT`, `HOST:PORT` (resolved once), a unix path or `@name`. A socket received from a zerg server or systemd with the same address is used instead of binding (uWSGI's rule, but the received socket speaks HTTP here too) |
//! | `--zerg SOCK` | attach to a zerg server or zergpool (repeatable; a path or `@name`) and serve every socket it hands over |
//! | `--zerg-timeout S` | deadline for all `--zerg` attaches together, in seconds (default 5; uWSGI has none) |
//! | `--zerg-fallback` | if an attach fails, carry on (and bind the `--http-socket` addresses nobody handed over); without it a failed attach exits 1 with uWSGI's `--- unable to connect to zerg server SOCK ---` or `--- invalid data received from zerg-server ---` |
//! | `--zerg-server SOCK` | share every listener (received, inherited or bound) with zergs that attach to `SOCK` |
//! | `--zerg-allow-uid UID`, `--zerg-allow-gid GID`, `--zerg-allow-any` | who may attach to `--zerg-server` (default: this uid and root), as in `zergpool` |
//! | `--chmod-socket[=MODE]` | mode of the `--zerg-server` socket file (3 octal digits, default `600`; no value: `666`) and, as uWSGI does, of the unix `--http-socket` files this process binds |
//! | `--text TEXT` | the body after the pid (default `hello`) |
//! | `--stop-timeout-ms MS` | how long a graceful stop waits for requests in flight (default and most 10000) |
//! | `--events-json` | one JSON object per line on stdout |
//!
//! Sockets from systemd (`LISTEN_PID`/`LISTEN_FDS`) are always taken. Listener order:
//! the `--http-socket` addresses in order, then the other systemd sockets, then the other
//! received ones (an address handed over twice is used once).
//!
//! `--events-json` lines (`t_ms`: Unix time in milliseconds):
//!
//! ```text
//! {"t_ms":…,"event":"listening","addrs":["127.0.0.1:8080","/tmp/app.sock"],"sources":["zerg","bound"],"pid":4242}
//! {"t_ms":…,"event":"zerg-served","zerg_server":"/tmp/zs-a.sock","pid":4243,"uid":1000,"fds":2}
//! {"t_ms":…,"event":"zerg-refused","zerg_server":"/tmp/zs-a.sock","pid":4244,"uid":65534,"reason":"not-allowed"}
//! {"t_ms":…,"event":"zerg-failed","zerg_server":"/tmp/zs-a.sock","reason":"timed-out"}
//! {"t_ms":…,"event":"stopping","in_flight":3}
//! {"t_ms":…,"event":"stopped","served":1234}
//! ```
//!
//! `listening` comes once, when every listener and the zerg server are ready; `sources`
//! says where each address came from (`zerg`, `bound` or `systemd`); `pid` is this
//! process's. `served` counts the 200 responses written. On stderr: uWSGI's lines
//! (`uwsgi zerg socket 0 attached to INET address 127.0.0.1:8080 fd 3`, `*** Zerg server
//! enabled on /tmp/zs-a.sock ***`), and without `--events-json` a line per event.
//!
//! SIGINT and SIGTERM stop gracefully: the listeners are deregistered and closed at once,
//! and so is the zerg server (its socket file is removed), so connections not yet
//! accepted stay queued in the kernel for the other processes holding the same sockets;
//! requests in flight are finished (for at most `--stop-timeout-ms`; a second signal
//! abandons them), then exit 0. Invalid options exit 2; a failed attach (without
//! `--zerg-fallback`), a socket that cannot be bound, or nothing to listen on exit 1.
//!
//! Requests: the head is read up to its blank line (at most 16 KiB, else `431`), a
//! `Content-Length` body is read and discarded (other bodies are ignored), an unparsable
//! head gets `400`; a connection gets 30 s to send its request.

// A command-line program: its output is the point, and it owns the event loop, so it reads
// the clock (STYLE §3.5).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program reports on stdout/stderr"
)]
#![allow(clippy::disallowed_methods, reason = "the event loop reads the clock")]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, IsTerminal as _, Read, Write};
use std::net::ToSocketAddrs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use mio::event::Source;
use mio::net::{TcpListener, UnixListener};
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use zerg_fdpass::client::{AttachOptions, Source as Origin, assign};
use zerg_fdpass::driver::{self, AttachFailure, ServerDriver, SocketFile};
use zerg_fdpass::server::{Event, PeerCred, ServerConfig};
use zerg_fdpass::{ListenAddr, Listener, StdListener, ZergAddr};

#[path = "../zerg_common.rs"]
mod zerg_common;
use zerg_common::{failure, json_str, log_line, parse_mode, print_line, refusal, server_config, unix_ms};

#[path = "../mio_stream.rs"]
mod mio_stream;
use mio_stream::Stream;

/// Exit status for invalid options (clap's own errors exit 2 too).
const USAGE: u8 = 2;
const SIGNAL_TOKEN: Token = Token(0);
/// The zerg server's driver owns tokens `1 ..= 1 + max_connections`.
const ZERG_TOKEN: Token = Token(1);
/// Listener `i` is `Token(LISTENER_BASE + i)`.
const LISTENER_BASE: usize = 1 << 16;
/// Connection `id` is `Token(CONN_BASE + id)`.
const CONN_BASE: usize = 1 << 20;
/// Longest request head read (a longer one gets 431).
const MAX_HEAD: usize = 16 * 1024;
/// Most connections open at once; further ones wait in the kernel's backlog.
const MAX_CONNS: usize = 4096;
/// Most connections accepted from one listener per wake-up (fairness between listeners).
const ACCEPT_BATCH: usize = 256;
/// How long a connection may take to send its request and read the answer.
const CONN_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest graceful stop.
const MAX_STOP_MS: u64 = 10_000;

fn command() -> Command {
    let repeat = |name: &'static str, value: &'static str, help: &'static str| {
        Arg::new(name).long(name).value_name(value).action(ArgAction::Append).help(help)
    };
    let flag = |name: &'static str, help: &'static str| {
        Arg::new(name).long(name).action(ArgAction::SetTrue).help(help)
    };
    Command::new("zerg-http")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
            "A small HTTP/1.1 responder on sockets from a zerg server, systemd or its own, \
             shareable onwards: zero-downtime hand-overs",
        )
        .after_help("SIGINT/SIGTERM: stop accepting at once, finish the requests in flight, exit 0.")
        .arg(repeat(
            "http-socket",
            "ADDR",
            "an HTTP listener: IP:PORT, :PORT, [IPv6]:PORT, a unix path or @name",
        ))
        .arg(repeat("zerg", "SOCK", "attach to this zerg server or zergpool and serve what it hands over"))
        .arg(
            Arg::new("zerg-timeout")
                .long("zerg-timeout")
                .value_name("S")
                .value_parser(value_parser!(f64))
                .default_value("5")
                .help("deadline for attaching to the --zerg servers, in seconds"),
        )
        .arg(flag("zerg-fallback", "if attaching fails, carry on and bind the --http-socket addresses"))
        .arg(
            Arg::new("zerg-server")
                .long("zerg-server")
                .value_name("SOCK")
                .help("share every listener on SOCK"),
        )
        .arg(
            repeat(
                "zerg-allow-uid",
                "UID",
                "allow this uid to attach to --zerg-server (default: own uid and root)",
            )
            .value_parser(value_parser!(u32)),
        )
        .arg(
            repeat("zerg-allow-gid", "GID", "allow members of this primary gid to attach to --zerg-server")
                .value_parser(value_parser!(u32)),
        )
        .arg(
            flag("zerg-allow-any", "allow anyone who can connect to --zerg-server (uWSGI's behaviour)")
                .conflicts_with_all(["zerg-allow-uid", "zerg-allow-gid"]),
        )
        .arg(
            Arg::new("chmod-socket")
                .long("chmod-socket")
                .value_name("MODE")
                .num_args(0..=1)
                .default_missing_value("666")
                .help(
                    "mode of the --zerg-server socket (default 600; no value: 666) and of bound unix sockets",
                ),
        )
        .arg(
            Arg::new("text")
                .long("text")
                .value_name("TEXT")
                .default_value("hello")
                .help("the body after the pid"),
        )
        .arg(
            Arg::new("stop-timeout-ms")
                .long("stop-timeout-ms")
                .value_name("MS")
                .value_parser(value_parser!(u64).range(0..=MAX_STOP_MS))
                .default_value("10000")
                .help("how long a graceful stop waits for requests in flight"),
        )
        .arg(flag("events-json", "print one JSON object per event on stdout"))
}

/// Why the program stops early.
enum Fatal {
    /// Invalid options: exit 2.
    Usage(String),
    /// Attaching, binding or the loop failed: exit 1.
    Runtime(String),
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    let matches = command().get_matches();
    match run(&matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal::Usage(message)) => {
            eprintln!("zerg-http: {message}");
            ExitCode::from(USAGE)
        }
        Err(Fatal::Runtime(message)) => {
            eprintln!("zerg-http: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Everything the options say.
struct Settings {
    http: Vec<ListenAddr>,
    zergs: Vec<ZergAddr>,
    zerg_timeout: Duration,
    fallback: bool,
    zerg_server: Option<ZergAddr>,
    config: ServerConfig,
    chmod: Option<u32>,
    text: String,
    stop_timeout: Duration,
    events_json: bool,
}

fn settings(m: &ArgMatches) -> Result<Settings, Fatal> {
    let strings = |name: &str| m.get_many::<String>(name).into_iter().flatten().cloned().collect::<Vec<_>>();
    let http = strings("http-socket")
        .iter()
        .map(|s| parse_listen(s).map_err(|e| Fatal::Usage(format!("--http-socket {s:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let zerg_addr =
        |opt: &str, s: &str| ZergAddr::parse(s).map_err(|e| Fatal::Usage(format!("--{opt} {s:?}: {e}")));
    let zergs = strings("zerg").iter().map(|s| zerg_addr("zerg", s)).collect::<Result<Vec<_>, _>>()?;
    let zerg_server = m.get_one::<String>("zerg-server").map(|s| zerg_addr("zerg-server", s)).transpose()?;
    let secs = m.get_one::<f64>("zerg-timeout").copied().unwrap_or(5.0);
    let zerg_timeout = Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Fatal::Usage(format!("--zerg-timeout {secs}: not a positive number of seconds")))?;
    let chmod = m
        .get_one::<String>("chmod-socket")
        .map(|v| parse_mode(v).ok_or_else(|| Fatal::Usage(format!("invalid chmod value: {v}"))))
        .transpose()?;
    Ok(Settings {
        http,
        zergs,
        zerg_timeout,
        fallback: m.get_flag("zerg-fallback"),
        zerg_server,
        config: server_config(m),
        chmod,
        text: m.get_one::<String>("text").cloned().unwrap_or_default(),
        stop_timeout: Duration::from_millis(
            m.get_one::<u64>("stop-timeout-ms").copied().unwrap_or(MAX_STOP_MS),
        ),
        events_json: m.get_flag("events-json"),
    })
}

fn run(matches: &ArgMatches) -> Result<(), Fatal> {
    let settings = settings(matches)?;
    // Caught from here on: a signal while attaching or binding stops the loop at once.
    let signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Fatal::Runtime(format!("cannot handle SIGINT/SIGTERM: {e}")))?;
    let listeners = gather(&settings)?;
    let mut app = App::start(&settings, listeners, signals)?;
    app.serve()
}

/// A listener and where it came from.
struct Gathered {
    listener: Listener,
    source: &'static str,
}

/// Takes the sockets from systemd and the zerg servers, matches them to the
/// `--http-socket` addresses, and binds the rest.
fn gather(s: &Settings) -> Result<Vec<Gathered>, Fatal> {
    let mut inherited: Vec<(ListenAddr, (&'static str, OwnedFd))> = Vec::new();
    let systemd = Listener::from_systemd().map_err(|e| Fatal::Runtime(format!("socket activation: {e}")))?;
    for (_, l) in systemd {
        inherited.push((l.addr, ("systemd", l.fd)));
    }
    if !s.zergs.is_empty() {
        let mut options = AttachOptions::default();
        options.timeout = s.zerg_timeout;
        for (addr, result) in driver::attach_all(&s.zergs, &options) {
            match result {
                Ok(listeners) => {
                    for l in listeners {
                        inherited.push((l.addr, ("zerg", l.fd)));
                    }
                }
                Err(failure) => {
                    // uWSGI's lines (spec §2.8), then ours with the reason.
                    if matches!(failure, AttachFailure::Connect { .. }) {
                        eprintln!("--- unable to connect to zerg server {addr} ---");
                    } else {
                        eprintln!("--- invalid data received from zerg-server ---");
                    }
                    if !s.fallback {
                        return Err(Fatal::Runtime(failure.to_string()));
                    }
                    eprintln!("zerg-http: {failure}; --zerg-fallback: carrying on without it");
                }
            }
        }
    }
    let configured: Vec<(ListenAddr, ())> = s.http.iter().map(|a| (a.clone(), ())).collect();
    let mut out = Vec::new();
    for (n, a) in assign(&configured, inherited, &()).into_iter().enumerate() {
        let gathered = match a.source {
            Origin::Inherited((source, fd)) => {
                let what = match &a.addr {
                    ListenAddr::Inet(sa) if sa.is_ipv6() => "INET6",
                    ListenAddr::Inet(_) => "INET",
                    _ => "UNIX",
                };
                let verb = if source == "zerg" { "zerg socket" } else { "socket" };
                let how = if source == "zerg" { "attached to" } else { "inherited from systemd:" };
                eprintln!("uwsgi {verb} {n} {how} {what} address {} fd {}", a.addr, fd.as_raw_fd());
                Gathered { listener: Listener { addr: a.addr, fd }, source }
            }
            Origin::Bind => {
                let listener = Listener::bind(&a.addr)
                    .map_err(|e| Fatal::Runtime(format!("--http-socket {}: cannot bind: {e}", a.addr)))?;
                if let (Some(mode), Some(path)) = (s.chmod, listener.addr.path()) {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| Fatal::Runtime(format!("chmod {}: {e}", path.display())))?;
                }
                let what = if matches!(listener.addr, ListenAddr::Inet(_)) { "TCP" } else { "UNIX" };
                eprintln!(
                    "uwsgi socket {n} bound to {what} address {} fd {}",
                    listener.addr,
                    listener.fd.as_raw_fd()
                );
                Gathered { listener, source: "bound" }
            }
        };
        out.push(gathered);
    }
    if out.is_empty() {
        return Err(if s.http.is_empty() && s.zergs.is_empty() {
            Fatal::Usage("nothing to listen on: give --http-socket ADDR or --zerg SOCK (or run it under systemd socket activation)".into())
        } else {
            Fatal::Runtime("nothing to listen on: the zerg servers handed over no sockets".into())
        });
    }
    Ok(out)
}

/// A listening socket in the loop.
enum Listen {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listen {
    fn accept(&self) -> io::Result<Stream> {
        match self {
            Self::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
            Self::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Self::Tcp(l) => l,
            Self::Unix(l) => l,
        }
    }
}

/// The answers, built once.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reply {
    Ok,
    BadRequest,
    TooLarge,
}

/// Where a connection is.
#[derive(Clone, Copy)]
enum Phase {
    /// Reading the head into `Conn::buf`.
    Head,
    /// Discarding this many more body bytes.
    Body(u64),
    /// Writing a reply; `written` bytes are out.
    Write { reply: Reply, written: usize },
}

struct Conn {
    stream: Stream,
    phase: Phase,
    buf: Vec<u8>,
    deadline: Instant,
    /// Registered for `WRITABLE` (after a write would have blocked).
    writable: bool,
}

/// What to do with a connection after driving it.
enum Next {
    /// Wait for the socket.
    Keep,
    /// The reply is out: close.
    Done,
    /// The client went away or the socket failed: close.
    Abort,
}

struct App {
    poll: Poll,
    signals: Signals,
    /// `None` once closed by a stop.
    listeners: Vec<Option<Listen>>,
    zerg: Option<ServerDriver>,
    zerg_name: String,
    conns: BTreeMap<usize, Conn>,
    timers: BTreeSet<(Instant, usize)>,
    next_id: usize,
    /// Listeners whose last accept batch ended before `WouldBlock`.
    pending_accept: BTreeSet<usize>,
    /// Accepting is held back (too many connections, or out of fds) until one closes.
    accept_blocked: bool,
    served: u64,
    /// The graceful stop's deadline, once it started.
    stopping: Option<Instant>,
    stop_timeout: Duration,
    replies: [Vec<u8>; 3],
    events_json: bool,
}

impl App {
    fn start(s: &Settings, gathered: Vec<Gathered>, mut signals: Signals) -> Result<Self, Fatal> {
        let runtime = |what: &str, e: &dyn std::fmt::Display| Fatal::Runtime(format!("{what}: {e}"));
        let poll = Poll::new().map_err(|e| runtime("cannot create the event loop", &e))?;
        let mut addrs = Vec::with_capacity(gathered.len());
        let mut sources = Vec::with_capacity(gathered.len());
        let mut offer = Vec::with_capacity(gathered.len());
        let mut listeners = Vec::with_capacity(gathered.len());
        for (i, g) in gathered.into_iter().enumerate() {
            let name = g.listener.addr.to_string();
            if s.zerg_server.is_some() {
                offer.push(g.listener.fd.try_clone().map_err(|e| runtime(&name, &e))?);
            }
            let mut listen = match g.listener.into_std() {
                StdListener::Tcp(l) => {
                    l.set_nonblocking(true).map_err(|e| runtime(&name, &e))?;
                    Listen::Tcp(TcpListener::from_std(l))
                }
                StdListener::Unix(l) => {
                    l.set_nonblocking(true).map_err(|e| runtime(&name, &e))?;
                    Listen::Unix(UnixListener::from_std(l))
                }
            };
            poll.registry()
                .register(listen.source(), Token(LISTENER_BASE + i), Interest::READABLE)
                .map_err(|e| runtime(&name, &e))?;
            listeners.push(Some(listen));
            addrs.push(name);
            sources.push(g.source);
        }
        let mut zerg = None;
        let mut zerg_name = String::new();
        if let Some(addr) = &s.zerg_server {
            let mut file = SocketFile::default();
            if let Some(mode) = s.chmod {
                file.mode = mode;
            }
            let mut driver = ServerDriver::bind(addr, s.config.clone(), file, offer)
                .map_err(|e| runtime("--zerg-server", &e))?;
            debug_assert!(ZERG_TOKEN.0 + driver.core().config().max_connections < LISTENER_BASE);
            driver.register(poll.registry(), ZERG_TOKEN).map_err(|e| runtime("--zerg-server", &e))?;
            eprintln!("*** Zerg server enabled on {addr} ***");
            zerg_name = addr.to_string();
            zerg = Some(driver);
        }
        poll.registry()
            .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)
            .map_err(|e| runtime("cannot handle SIGINT/SIGTERM", &e))?;
        let pid = std::process::id();
        let body = format!("{pid} {}\n", s.text);
        let replies = [
            response("200 OK", &body),
            response("400 Bad Request", "bad request\n"),
            response("431 Request Header Fields Too Large", "request head too large\n"),
        ];
        if s.events_json {
            print_line(&format!(
                "{{\"t_ms\":{},\"event\":\"listening\",\"addrs\":{},\"sources\":{},\"pid\":{pid}}}",
                unix_ms(),
                Value::from(addrs),
                Value::from(sources)
            ));
        } else {
            let list: Vec<String> = addrs.iter().zip(&sources).map(|(a, s)| format!("{a} ({s})")).collect();
            eprintln!("zerg-http {pid}: serving on {}", list.join(", "));
        }
        Ok(Self {
            poll,
            signals,
            listeners,
            zerg,
            zerg_name,
            conns: BTreeMap::new(),
            timers: BTreeSet::new(),
            next_id: 0,
            pending_accept: BTreeSet::new(),
            accept_blocked: false,
            served: 0,
            stopping: None,
            stop_timeout: s.stop_timeout,
            replies,
            events_json: s.events_json,
        })
    }

    /// The event loop, until a graceful stop has finished.
    fn serve(&mut self) -> Result<(), Fatal> {
        let mut events = Events::with_capacity(1024);
        loop {
            self.report_zerg();
            let now = Instant::now();
            if let Some(deadline) = self.stopping {
                if self.conns.is_empty() {
                    break;
                }
                if now >= deadline {
                    self.abandon("the stop timeout passed");
                    break;
                }
            }
            let wait = self.wait(now);
            match self.poll.poll(&mut events, wait) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Fatal::Runtime(format!("event loop: {e}"))),
                Ok(()) => {}
            }
            for event in &events {
                match event.token() {
                    SIGNAL_TOKEN => {
                        if self.signals.pending().next().is_none() {
                            continue;
                        }
                        if self.stopping.is_some() {
                            self.abandon("a second signal");
                            self.finish();
                            return Ok(());
                        }
                        self.begin_stop();
                    }
                    Token(t) if t >= CONN_BASE => self.drive(t - CONN_BASE),
                    Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE),
                    _ => {
                        if let Some(zerg) = self.zerg.as_mut()
                            && let Err(e) = zerg.handle_ready(self.poll.registry(), event, Instant::now())
                        {
                            // Not fatal: the zerg server keeps serving the next peers.
                            eprintln!("zerg-http: --zerg-server {}: {e}", self.zerg_name);
                        }
                    }
                }
            }
            let now = Instant::now();
            while let Some(&(deadline, id)) = self.timers.first() {
                if deadline > now {
                    break;
                }
                self.close(id);
            }
            if let Some(zerg) = self.zerg.as_mut() {
                zerg.handle_timeout(self.poll.registry(), now);
            }
            if !self.accept_blocked {
                let pending: Vec<usize> = std::mem::take(&mut self.pending_accept).into_iter().collect();
                for i in pending {
                    self.accept(i);
                }
            }
        }
        self.finish();
        Ok(())
    }

    /// How long the loop may sleep.
    fn wait(&self, now: Instant) -> Option<Duration> {
        if !self.pending_accept.is_empty() && !self.accept_blocked {
            return Some(Duration::ZERO);
        }
        let timers = [
            self.timers.first().map(|&(t, _)| t.saturating_duration_since(now)),
            self.zerg.as_ref().and_then(|z| z.timeout(now)),
            self.stopping.map(|t| t.saturating_duration_since(now)),
        ];
        timers.into_iter().flatten().min()
    }

    /// Accepts from listener `i` until `WouldBlock`, the batch or the connection cap.
    fn accept(&mut self, i: usize) {
        for _ in 0..ACCEPT_BATCH {
            if self.conns.len() >= MAX_CONNS {
                self.accept_blocked = true;
                self.pending_accept.insert(i);
                return;
            }
            let Some(Some(listener)) = self.listeners.get(i) else { return };
            match listener.accept() {
                Ok(stream) => self.add(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.pending_accept.remove(&i);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EMFILE (24) or ENFILE (23): wait until a connection closes.
                Err(e) if matches!(e.raw_os_error(), Some(24 | 23)) => {
                    eprintln!("zerg-http: accept: {e}; waiting for a connection to close");
                    self.accept_blocked = true;
                    self.pending_accept.insert(i);
                    return;
                }
                // The peer gave up before we accepted (ECONNABORTED 103, EPROTO 71): next one.
                Err(e) if matches!(e.raw_os_error(), Some(103 | 71)) => {}
                // Anything else would likely repeat: wait for the next readiness edge.
                Err(e) => {
                    eprintln!("zerg-http: accept: {e}");
                    self.pending_accept.remove(&i);
                    return;
                }
            }
        }
        self.pending_accept.insert(i);
    }

    fn add(&mut self, mut stream: Stream) {
        let id = self.next_id;
        self.next_id += 1;
        if self.poll.registry().register(&mut stream, Token(CONN_BASE + id), Interest::READABLE).is_err() {
            return;
        }
        let deadline = Instant::now() + CONN_TIMEOUT;
        self.timers.insert((deadline, id));
        self.conns
            .insert(id, Conn { stream, phase: Phase::Head, buf: Vec::new(), deadline, writable: false });
        // Readiness of data already queued is reported on registration (epoll), so the
        // request is read from the event loop.
    }

    /// Reads, answers, writes: as far as the socket lets us.
    fn drive(&mut self, id: usize) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let next = step(conn, &self.replies);
        match next {
            Next::Keep => {
                if let Phase::Write { .. } = conn.phase
                    && !conn.writable
                {
                    conn.writable = true;
                    let token = Token(CONN_BASE + id);
                    if self.poll.registry().reregister(&mut conn.stream, token, Interest::WRITABLE).is_err() {
                        self.close(id);
                    }
                }
            }
            Next::Done => {
                if let Phase::Write { reply: Reply::Ok, .. } = conn.phase {
                    self.served += 1;
                }
                self.close(id);
            }
            Next::Abort => self.close(id),
        }
    }

    fn close(&mut self, id: usize) {
        if let Some(mut conn) = self.conns.remove(&id) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.timers.remove(&(conn.deadline, id));
        }
        self.accept_blocked = false;
    }

    /// SIGINT/SIGTERM: close every listener and the zerg server now; finish the rest.
    fn begin_stop(&mut self) {
        for listener in &mut self.listeners {
            if let Some(mut l) = listener.take() {
                // Deregister first: the socket lives on in the other holders, and an
                // epoll registration follows the socket, not this fd.
                let _ = self.poll.registry().deregister(l.source());
            }
        }
        self.pending_accept.clear();
        // Dropping the driver closes its socket (and removes the file) and the offer.
        self.zerg = None;
        self.stopping = Some(Instant::now() + self.stop_timeout);
        let in_flight = self.conns.len();
        if self.events_json {
            print_line(&format!(
                "{{\"t_ms\":{},\"event\":\"stopping\",\"in_flight\":{in_flight}}}",
                unix_ms()
            ));
        } else {
            eprintln!("zerg-http: stopping, {in_flight} requests in flight");
        }
    }

    fn abandon(&mut self, why: &str) {
        if !self.conns.is_empty() {
            eprintln!("zerg-http: {why}: abandoning {} requests in flight", self.conns.len());
        }
        let ids: Vec<usize> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }

    fn finish(&mut self) {
        if self.events_json {
            print_line(&format!(
                "{{\"t_ms\":{},\"event\":\"stopped\",\"served\":{}}}",
                unix_ms(),
                self.served
            ));
        } else {
            eprintln!("zerg-http: stopped after serving {} requests", self.served);
        }
    }

    fn report_zerg(&mut self) {
        let Some(zerg) = self.zerg.as_mut() else { return };
        while let Some(event) = zerg.poll_event() {
            report(&self.zerg_name, &event, self.events_json);
        }
    }
}

/// Drives one connection as far as its socket allows.
fn step(conn: &mut Conn, replies: &[Vec<u8>; 3]) -> Next {
    let mut chunk = [0u8; 4096];
    // Bounded: every pass reads or writes at least one byte, or returns; the head and
    // the writes are bounded, and a body is bounded by the connection's deadline.
    loop {
        match conn.phase {
            Phase::Head | Phase::Body(_) => {
                let n = match conn.stream.read(&mut chunk) {
                    Ok(0) => return Next::Abort, // the client gave up
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Next::Abort,
                };
                match conn.phase {
                    Phase::Body(left) => {
                        let left = left.saturating_sub(n as u64);
                        conn.phase = if left == 0 { answer(Reply::Ok) } else { Phase::Body(left) };
                    }
                    _ => {
                        conn.buf.extend_from_slice(&chunk[..n]);
                        conn.phase = match parse_head(&conn.buf) {
                            Head::Partial if conn.buf.len() > MAX_HEAD => answer(Reply::TooLarge),
                            Head::Partial => Phase::Head,
                            Head::Complete { len, .. } if len > MAX_HEAD => answer(Reply::TooLarge),
                            Head::Bad => answer(Reply::BadRequest),
                            Head::Complete { len, body } => {
                                let have = (conn.buf.len() - len) as u64;
                                conn.buf = Vec::new();
                                if body > have { Phase::Body(body - have) } else { answer(Reply::Ok) }
                            }
                        };
                    }
                }
            }
            Phase::Write { reply, written } => {
                let out = &replies[reply as usize];
                let Some(rest) = out.get(written..).filter(|r| !r.is_empty()) else {
                    return Next::Done;
                };
                match conn.stream.write(rest) {
                    Ok(0) => return Next::Abort,
                    Ok(n) => conn.phase = Phase::Write { reply, written: written + n },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Next::Abort,
                }
            }
        }
    }
}

fn answer(reply: Reply) -> Phase {
    Phase::Write { reply, written: 0 }
}

/// A request head, as far as it has arrived.
enum Head {
    Partial,
    Bad,
    /// `len` bytes of head (with the blank line); `body` bytes of body follow.
    Complete {
        len: usize,
        body: u64,
    },
}

fn parse_head(buf: &[u8]) -> Head {
    let end = [&b"\r\n\r\n"[..], b"\n\n"]
        .iter()
        .filter_map(|sep| buf.windows(sep.len()).position(|w| w == *sep).map(|at| at + sep.len()))
        .min();
    let Some(len) = end else { return Head::Partial };
    let Ok(text) = std::str::from_utf8(&buf[..len]) else { return Head::Bad };
    let mut lines = text.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_ascii_whitespace();
    if parts.next().is_none() || parts.next().is_none() {
        return Head::Bad;
    }
    let mut body = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else { return Head::Bad };
        if name.trim().eq_ignore_ascii_case("content-length") {
            let Ok(n) = value.trim().parse::<u64>() else { return Head::Bad };
            if body.is_some_and(|b| b != n) {
                return Head::Bad;
            }
            body = Some(n);
        }
    }
    Head::Complete { len, body: body.unwrap_or(0) }
}

fn response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An `--http-socket` address: with a `:` it is TCP (uWSGI's rule), else a unix path or
/// `@name`; `HOST:PORT` is resolved once.
fn parse_listen(text: &str) -> Result<ListenAddr, String> {
    if !text.contains(':') {
        let text = text.strip_prefix("\\0").map_or_else(|| text.to_owned(), |name| format!("@{name}"));
        return ListenAddr::parse(&text).map_err(|e| e.to_string());
    }
    if let Ok(addr) = ListenAddr::parse(text) {
        return Ok(addr);
    }
    match text.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => Ok(ListenAddr::Inet(addr)),
        _ => {
            Err("not a TCP address (IP:PORT, :PORT, [IPv6]:PORT or HOST:PORT; an address with ':' is TCP)"
                .into())
        }
    }
}

/// One zerg-server event, as JSON or as a line on stderr.
fn report(server: &str, event: &Event, events_json: bool) {
    let ids = |peer: &Option<PeerCred>| match peer {
        Some(p) => (p.pid.to_string(), p.uid.to_string()),
        None => ("null".to_owned(), "null".to_owned()),
    };
    let (t, name) = (unix_ms(), json_str(server));
    let (json, text) = match event {
        Event::Served { peer, fds, .. } => {
            let (pid, uid) = ids(peer);
            (
                format!(
                    "{{\"t_ms\":{t},\"event\":\"zerg-served\",\"zerg_server\":{name},\"pid\":{pid},\"uid\":{uid},\"fds\":{fds}}}"
                ),
                format!("zerg-http: --zerg-server {server}: gave {fds} sockets to pid {pid} (uid {uid})"),
            )
        }
        Event::Refused { peer, reason, .. } => {
            let (pid, uid) = ids(peer);
            let reason = refusal(*reason);
            (
                format!(
                    "{{\"t_ms\":{t},\"event\":\"zerg-refused\",\"zerg_server\":{name},\"pid\":{pid},\"uid\":{uid},\"reason\":{}}}",
                    json_str(reason)
                ),
                format!("zerg-http: --zerg-server {server}: refused pid {pid} (uid {uid}): {reason}"),
            )
        }
        Event::Failed { reason, .. } => {
            let reason = failure(*reason);
            (
                format!(
                    "{{\"t_ms\":{t},\"event\":\"zerg-failed\",\"zerg_server\":{name},\"reason\":{}}}",
                    json_str(reason)
                ),
                format!("zerg-http: --zerg-server {server}: hand-off failed: {reason}"),
            )
        }
        _ => return,
    };
    if events_json {
        print_line(&json);
    } else {
        log_line(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_to_the_blank_line() {
        assert!(matches!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n"), Head::Partial));
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Head::Complete { len: 27, body: 0 }
        ));
        assert!(matches!(
            parse_head(b"POST / HTTP/1.1\r\ncontent-LENGTH: 5\r\n\r\nab"),
            Head::Complete { len: 38, body: 5 }
        ));
        assert!(matches!(parse_head(b"GET / HTTP/1.0\n\n"), Head::Complete { len: 16, body: 0 }));
        assert!(matches!(parse_head(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), Head::Bad));
        assert!(matches!(
            parse_head(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Head::Bad
        ));
        assert!(matches!(parse_head(b"\r\n\r\n"), Head::Bad));
    }
}
