//! The mio driver: a [`Legion`] on a real socket, with the clock, randomness and hook
//! actions around it (feature `mio`).
//!
//! [`LegionDriver`] owns one [`Legion`], its [`LegionSocket`], a 65536-byte receive buffer,
//! a queue of sends blocked by `WouldBlock`, and an action runner. It is composable
//! (STYLE §3.5): register it in your own [`mio::Poll`] next to other sources, or let
//! [`LegionDriver::run`] run a loop for it.
//!
//! | method | when |
//! |---|---|
//! | [`LegionDriver::register`] | once, with a token of yours |
//! | [`LegionDriver::handle_ready`] | for every mio event with that token |
//! | [`LegionDriver::flush`] | once per loop iteration: fires due timers, sends |
//! | [`LegionDriver::timeout`] | the longest the loop may sleep |
//! | [`LegionDriver::poll_event`], [`LegionDriver::poll_action_outcome`] | after each of the above, until `None` |
//! | [`LegionDriver::shutdown`] | to leave: death actions, death announce |
//!
//! # Transports
//!
//! The transport follows the bind [`Endpoint`]:
//! - **UDP**, IPv4 or IPv6 (`127.0.0.1:41001`, `[::1]:41001`). uWSGI speaks IPv4 only.
//! - **Multicast** when the bind address is a multicast group (IPv4 224.0.0.0/4, IPv6
//!   ff00::/8): as uWSGI does, the socket binds the wildcard address on the group's port
//!   with `SO_REUSEADDR` (several nodes of one host share the port), joins the group on
//!   the default interface, and sends with multicast loop on and a TTL (hop limit) of 1.
//!   List the group as the only target (uWSGI `--legion-mcast`). The driver sets
//!   [`Config::multicast`]: members' source addresses share the group's port, so a unicast
//!   to one would reach whichever node the kernel picks; the core sends its triggered
//!   announces to the group instead, and only while no uWSGI node is on it.
//! - **Unix datagram sockets** (`unix:/path`), for nodes on one host. uWSGI cannot use
//!   them (its targets are IPv4 only, spec §1.1 item 7). The core addresses peers with
//!   IP [`SocketAddr`]s, so the socket keeps a table of paths: the path at position `i`
//!   (from 1; the own path comes first) is known to the core as `127.255.x.y:0` with
//!   `x.y` = `i` in base 256. [`LegionSocket::target`] gives the address of a target path
//!   for [`Config::node`], [`LegionSocket::endpoint_of`] the path of an address.
//!   Datagrams from an unnamed socket are delivered as from `127.255.255.255:0`.
//!
//! Unlike uWSGI, a unicast socket is bound **without** `SO_REUSEADDR`, so a second node on
//! the same port fails at start instead of silently sharing (and splitting) the traffic.
//!
//! # Actions
//!
//! [`Actions`] lists per [`Hook`] what runs when an event fires (spec §3.9): `cmd:` /
//! `exec:` shell commands, `log:` lines, Rust callbacks. They run on one thread per driver,
//! **off the event loop** (uWSGI blocks its legion thread), one at a time, in event order;
//! a command that runs longer than [`Actions::timeout`] is killed and fails. Which hook
//! runs for which event follows uWSGI ([`Hook::of`]): no `node-left` actions for a death
//! announce. When the actions of a `lord` event have finished, their outcome goes back to
//! the core ([`Legion::handle_action_result`]), which steps down if one failed and
//! `death_on_lord_error` is set; as in uWSGI, a failed lord action then skips the
//! remaining ones. The action thread wakes the event loop through a socket registered
//! with the driver's token. Besides uWSGI, commands get `LEGION_NAME`, `LEGION_EVENT`,
//! `LEGION_SEQ` and `LEGION_EPOCH` (the fencing token) in their environment.
//!
//! # Logs
//!
//! A library does not print: the driver logs through [`tracing`]. Rejected datagrams are
//! logged at `debug` (own datagrams at `trace`) and counted ([`Stats::rejected`](crate::Stats::rejected)
//! in the core); failed sends at `debug` ([`DriverStats`]); failed actions at `warn`.

// STYLE §3.5: this module is the one place of the crate that reads the clock (Instant::now,
// SystemTime::now for the core's wall clock), sleeps (the action thread's bounded wait for
// a child process, the shutdown's short retries) and touches sockets.
#![allow(
    clippy::disallowed_methods,
    reason = "the driver reads the clock and bounds its waits (STYLE §3.5: only driver.rs may)"
)]

use core::fmt;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram as StdUnixDatagram;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::event::Source;
use mio::net::{UdpSocket, UnixDatagram};
use mio::{Events, Interest, Poll, Registry, Token};
use tracing::{debug, info, trace, warn};

pub use crate::action::{
    Action, ActionCallback, ActionConfigError, ActionFailure, ActionOutcome, Actions, Hook,
};
use crate::{Config, ConfigError, DatagramError, Event, Legion, NodeUuid, Transmit};

/// Size of the receive buffer: any UDP datagram fits.
const RECV_BUF: usize = 65_536;
/// Most datagrams read in one [`LegionDriver::handle_ready`]; the rest wait for the next
/// loop iteration ([`LegionDriver::timeout`] is then zero), so a flood cannot starve the
/// other sources of the loop.
const RECV_BATCH: usize = 1024;
/// Most sends kept while the socket would block; beyond it the oldest is dropped.
const SEND_QUEUE_CAP: usize = 4096;
/// Most undelivered events and action outcomes kept; beyond it the oldest is dropped.
const QUEUE_CAP: usize = 4096;
/// First address of the unix path table (`127.255.0.0`; position 0 is never used).
const UNIX_TABLE_BASE: u32 = 0x7fff_0000;
/// Most paths in the unix table: `127.255.0.1` to `127.255.255.254`.
const UNIX_TABLE_CAP: usize = 0xfffe;
/// The address of datagrams from an unnamed unix socket.
const UNIX_UNNAMED: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 255, 255, 255)), 0);

/// Why the driver failed.
///
/// Returned by construction ([`LegionSocket::bind`], [`LegionDriver::new`]) for a setup
/// that cannot work, and by the loop methods for an IO error of the socket or the poll
/// itself (the driver is then unusable). Send failures, rejected datagrams and failed
/// actions are never errors: they are logged and counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// An IO error of the socket, the poll or the action thread.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The configuration cannot start a legion.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The text is not an endpoint (`IP:PORT`, `[IPV6]:PORT`, `unix:PATH`).
    #[error("invalid endpoint {text:?}: {why}")]
    InvalidEndpoint {
        /// The text as given.
        text: String,
        /// What is wrong with it.
        why: String,
    },
    /// A target another transport than the socket's (a unix path for a UDP socket, an
    /// IPv6 address for an IPv4 socket, …).
    #[error("target {target} cannot be reached from the {local} socket")]
    TransportMismatch {
        /// The target.
        target: String,
        /// The socket's own endpoint.
        local: String,
    },
    /// The unix path table is full (65534 paths).
    #[error("too many unix socket paths (at most 65534)")]
    TooManyUnixPaths,
}

/// Where a legion socket binds, or a target: a UDP address or a unix socket path.
///
/// Parsed from `IP:PORT`, `[IPV6]:PORT` or `unix:PATH` ([`FromStr`] takes literal
/// addresses only; [`Endpoint::resolve`] also resolves host names, once, as uWSGI does).
/// Displayed the same way.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// A UDP address; a multicast group makes the socket a multicast one.
    Ip(SocketAddr),
    /// A unix datagram socket path.
    Unix(PathBuf),
}

impl Endpoint {
    /// Like [`FromStr`], but `HOST:PORT` with a host name is resolved (the first address
    /// wins).
    ///
    /// # Errors
    /// [`DriverError::InvalidEndpoint`] when the text is not an endpoint or the name does
    /// not resolve.
    pub fn resolve(text: &str) -> Result<Self, DriverError> {
        if let Ok(endpoint) = text.parse() {
            return Ok(endpoint);
        }
        let invalid = |why: String| DriverError::InvalidEndpoint { text: text.to_owned(), why };
        if !text.contains(':') {
            return Err(invalid("expected IP:PORT, [IPV6]:PORT, HOST:PORT or unix:PATH".into()));
        }
        text.to_socket_addrs()
            .map_err(|e| invalid(e.to_string()))?
            .next()
            .map(Self::Ip)
            .ok_or_else(|| invalid("the name resolves to no address".into()))
    }

    /// Whether this is a multicast group.
    pub fn is_multicast(&self) -> bool {
        matches!(self, Self::Ip(a) if a.ip().is_multicast())
    }
}

impl FromStr for Endpoint {
    type Err = DriverError;

    fn from_str(text: &str) -> Result<Self, DriverError> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(DriverError::InvalidEndpoint {
                    text: text.to_owned(),
                    why: "unix: needs a path".into(),
                });
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        text.parse().map(Self::Ip).map_err(|e: std::net::AddrParseError| DriverError::InvalidEndpoint {
            text: text.to_owned(),
            why: format!("{e} (expected IP:PORT, [IPV6]:PORT or unix:PATH)"),
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

enum Sock {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

/// A bound legion socket: bind it first (port 0 picks a free port), then build the
/// [`Config`] with [`LegionSocket::local_endpoint`] and the targets, then start a
/// [`LegionDriver`] on it.
pub struct LegionSocket {
    sock: Sock,
    local: Endpoint,
    group: Option<IpAddr>,
    /// Unix mode: the path table (see the module doc). Position `i` is address `i + 1`.
    paths: Vec<PathBuf>,
    /// The socket file to remove on drop (unix mode).
    owned_path: Option<PathBuf>,
}

impl LegionSocket {
    /// Binds the socket for `endpoint` (see the module doc for the transports).
    ///
    /// For a unix path, a stale socket file left by a killed process is removed first
    /// (any other file is an error); the file is removed again when the socket is dropped.
    ///
    /// # Errors
    /// [`DriverError::Io`] when the socket cannot be bound or configured.
    pub fn bind(endpoint: &Endpoint) -> Result<Self, DriverError> {
        match endpoint {
            Endpoint::Ip(addr) if addr.ip().is_multicast() => Self::bind_multicast(*addr),
            Endpoint::Ip(addr) => {
                let sock = UdpSocket::bind(*addr)?;
                let local = Endpoint::Ip(sock.local_addr()?);
                Ok(Self { sock: Sock::Udp(sock), local, group: None, paths: Vec::new(), owned_path: None })
            }
            Endpoint::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    if !meta.file_type().is_socket() {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", path.display()),
                        )
                        .into());
                    }
                    std::fs::remove_file(path)?;
                }
                let sock = UnixDatagram::bind(path)?;
                Ok(Self {
                    sock: Sock::Unix(sock),
                    local: endpoint.clone(),
                    group: None,
                    paths: vec![path.clone()],
                    owned_path: Some(path.clone()),
                })
            }
        }
    }

    /// uWSGI core/socket.c, `bind_to_udp` for a multicast address (spec §1.1 item 5).
    fn bind_multicast(group: SocketAddr) -> Result<Self, DriverError> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(group), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        match group.ip() {
            IpAddr::V4(g) => {
                socket.bind(&SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), group.port()).into())?;
                socket.join_multicast_v4(&g, &Ipv4Addr::UNSPECIFIED)?;
                socket.set_multicast_loop_v4(true)?;
                socket.set_multicast_ttl_v4(1)?;
            }
            IpAddr::V6(g) => {
                socket.set_only_v6(true)?;
                socket.bind(&SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), group.port()).into())?;
                socket.join_multicast_v6(&g, 0)?;
                socket.set_multicast_loop_v6(true)?;
                socket.set_multicast_hops_v6(1)?;
            }
        }
        socket.set_nonblocking(true)?;
        let sock = UdpSocket::from_std(socket.into());
        let port = sock.local_addr()?.port();
        Ok(Self {
            sock: Sock::Udp(sock),
            local: Endpoint::Ip(SocketAddr::new(group.ip(), port)),
            group: Some(group.ip()),
            paths: Vec::new(),
            owned_path: None,
        })
    }

    /// The endpoint bound, with the real port for port 0; for a multicast socket, the
    /// group and port.
    pub fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }

    /// The address the core knows this node's own socket by: the bound address, or for a
    /// unix socket its table address. List it as a node if you want every node to have
    /// the same target list (a node drops its own announces).
    pub fn local_addr(&self) -> SocketAddr {
        match &self.local {
            Endpoint::Ip(a) => *a,
            Endpoint::Unix(_) => table_addr(0),
        }
    }

    /// The multicast group joined, if any.
    pub fn multicast_group(&self) -> Option<IpAddr> {
        self.group
    }

    /// Whether this is a unix datagram socket.
    pub fn is_unix(&self) -> bool {
        matches!(self.sock, Sock::Unix(_))
    }

    /// The address to list in [`Config::node`] for a target: the address itself for UDP,
    /// the path's table address for a unix socket (added to the table if new).
    ///
    /// # Errors
    /// [`DriverError::TransportMismatch`] for a target this socket cannot send to (a path
    /// for a UDP socket, an address for a unix socket, an IPv6 address for an IPv4 socket
    /// or the other way round); [`DriverError::TooManyUnixPaths`] when the table is full.
    pub fn target(&mut self, target: &Endpoint) -> Result<SocketAddr, DriverError> {
        let mismatch =
            || DriverError::TransportMismatch { target: target.to_string(), local: self.local.to_string() };
        match (&self.sock, target) {
            (Sock::Udp(_), Endpoint::Ip(addr)) => {
                if addr.is_ipv4() == self.local_addr().is_ipv4() {
                    Ok(*addr)
                } else {
                    Err(mismatch())
                }
            }
            (Sock::Unix(_), Endpoint::Unix(path)) => {
                self.path_addr(path).ok_or(DriverError::TooManyUnixPaths)
            }
            _ => Err(mismatch()),
        }
    }

    /// The endpoint of an address the core uses: the address itself for UDP, the path for
    /// a unix table address. `None` for an unknown table address.
    pub fn endpoint_of(&self, addr: SocketAddr) -> Option<Endpoint> {
        match self.sock {
            Sock::Udp(_) => Some(Endpoint::Ip(addr)),
            Sock::Unix(_) => table_index(addr).and_then(|i| self.paths.get(i)).cloned().map(Endpoint::Unix),
        }
    }

    /// The table address of a path, added if new; `None` when the table is full.
    fn path_addr(&mut self, path: &Path) -> Option<SocketAddr> {
        if let Some(i) = self.paths.iter().position(|p| p == path) {
            return Some(table_addr(i));
        }
        if self.paths.len() >= UNIX_TABLE_CAP {
            return None;
        }
        self.paths.push(path.to_path_buf());
        Some(table_addr(self.paths.len() - 1))
    }

    fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match &self.sock {
            Sock::Udp(s) => s.recv_from(buf),
            Sock::Unix(s) => {
                let (n, from) = s.recv_from(buf)?;
                let addr = match from.as_pathname() {
                    Some(path) => {
                        let path = path.to_path_buf();
                        self.path_addr(&path).unwrap_or(UNIX_UNNAMED)
                    }
                    None => UNIX_UNNAMED,
                };
                Ok((n, addr))
            }
        }
    }

    fn send_to(&self, payload: &[u8], destination: SocketAddr) -> io::Result<usize> {
        match &self.sock {
            Sock::Udp(s) => s.send_to(payload, destination),
            Sock::Unix(s) => match table_index(destination).and_then(|i| self.paths.get(i)) {
                Some(path) => s.send_to(payload, path),
                None => Err(io::Error::new(io::ErrorKind::NotFound, "no unix path for this address")),
            },
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match &mut self.sock {
            Sock::Udp(s) => s,
            Sock::Unix(s) => s,
        }
    }
}

impl Drop for LegionSocket {
    fn drop(&mut self) {
        if let Some(path) = &self.owned_path {
            // Best effort: the file may be gone already.
            let _ = std::fs::remove_file(path);
        }
    }
}

impl fmt::Debug for LegionSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LegionSocket")
            .field("local", &self.local)
            .field("group", &self.group)
            .field("unix_paths", &self.paths.len())
            .finish_non_exhaustive()
    }
}

fn table_addr(index: usize) -> SocketAddr {
    // `index < UNIX_TABLE_CAP`, so this stays within 127.255.0.1 ..= 127.255.255.254.
    let offset = u32::try_from(index + 1).unwrap_or(u32::MAX) & 0xffff;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(UNIX_TABLE_BASE | offset)), 0)
}

fn table_index(addr: SocketAddr) -> Option<usize> {
    let IpAddr::V4(ip) = addr.ip() else { return None };
    let bits = u32::from(ip);
    if bits & 0xffff_0000 != UNIX_TABLE_BASE || addr.port() != 0 {
        return None;
    }
    usize::try_from(bits & 0xffff).ok()?.checked_sub(1)
}

/// Counters of the driver, next to the core's [`Stats`](crate::Stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverStats {
    /// Datagrams read from the socket.
    pub datagrams_received: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Sends that failed (no route, no such unix socket, …); the datagram is dropped.
    pub send_errors: u64,
    /// Datagrams dropped because the socket would block: on a unix socket (a peer's queue
    /// is full) at once, on UDP when the send queue overflows.
    pub sends_dropped: u64,
    /// Receive errors skipped (ICMP errors of earlier sends).
    pub recv_errors: u64,
    /// Events dropped because they were not polled.
    pub events_dropped: u64,
    /// Action outcomes dropped because they were not polled.
    pub outcomes_dropped: u64,
    /// Actions run.
    pub actions_run: u64,
    /// Of those, actions that failed.
    pub actions_failed: u64,
}

/// Stops a running [`LegionDriver::run`] from any thread: the loop leaves the legion
/// (death actions, death announce) and returns.
#[derive(Clone)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    wake: Arc<StdUnixDatagram>,
}

impl StopHandle {
    /// Asks the loop to stop; it wakes at once.
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // A full wake socket means a wake-up is pending anyway.
        let _ = self.wake.send(&[0]);
    }

    /// Whether [`StopHandle::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StopHandle").field("stopped", &self.is_stopped()).finish()
    }
}

/// An event handed to the action thread.
struct Job {
    event: Event,
    hook: Hook,
}

/// What the action thread reports.
enum WorkerMsg {
    Outcome(ActionOutcome),
    /// Every action of the job has run (or the rest was skipped).
    Done {
        seq: u64,
        hook: Hook,
        success: bool,
        planned: usize,
    },
}

/// The driver's side of the action thread.
struct Runner {
    /// `None` when no hook has an action: then no thread is started.
    jobs: Option<mpsc::Sender<Job>>,
    results: mpsc::Receiver<WorkerMsg>,
    /// Actions per hook, so that events without actions never reach the thread.
    counts: [usize; 7],
    /// Actions dispatched whose job is not done.
    pending: usize,
    timeout: Duration,
    cancel: Arc<AtomicBool>,
}

/// One legion node on a real socket; see the [module documentation](self).
///
/// ```no_run
/// use std::time::Duration;
/// use legion_proto::{Config, wire::Crypto};
/// use legion_proto::driver::{Actions, Endpoint, Hook, LegionDriver, LegionSocket};
///
/// let mut socket = LegionSocket::bind(&"127.0.0.1:41001".parse()?)?;
/// let peer = socket.target(&"127.0.0.1:41002".parse()?)?;
/// let config = Config::new("lg", 10, Crypto::from_spec("aes-128-cbc:secret")?)
///     .node(peer)
///     .freq(Duration::from_secs(1))
///     .tolerance(Duration::from_secs(3));
/// let mut actions = Actions::new();
/// actions.parse(Hook::Lord, "cmd:ip addr add 10.0.0.1/24 dev eth0")?;
/// let driver = LegionDriver::new(socket, config, actions)?;
/// let stop = driver.stop_handle(); // call stop.stop() from another thread to leave
/// driver.run(&stop, |event| println!("{} (epoch {})", event.kind.phase(), event.epoch))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LegionDriver {
    core: Legion,
    socket: LegionSocket,
    /// The legion name, for logs.
    name: String,
    buf: Box<[u8]>,
    sendq: VecDeque<Transmit>,
    events: VecDeque<Event>,
    outcomes: VecDeque<ActionOutcome>,
    runner: Runner,
    /// Read end of the wake socket: the action thread and [`StopHandle`]s write a byte.
    wake_rx: UnixDatagram,
    wake_tx: Arc<StdUnixDatagram>,
    stop: Arc<AtomicBool>,
    registry: Option<Registry>,
    token: Option<Token>,
    /// Whether WRITABLE is part of the registered interest.
    writable: bool,
    /// The last receive batch was cut short: more datagrams may be waiting.
    still_readable: bool,
    last_now: Instant,
    stats: DriverStats,
}

impl LegionDriver {
    /// Starts a member of the legion on `socket`, with a new random uuid, the clock read
    /// now, and the hook actions `actions` (a thread runs them if there are any).
    ///
    /// The `setup` event and the first announce are queued; nothing is sent before
    /// [`LegionDriver::flush`].
    ///
    /// # Errors
    /// [`DriverError::Config`] for an unusable configuration, [`DriverError::Io`] when no
    /// randomness, wake socket or thread can be had.
    pub fn new(socket: LegionSocket, config: Config, actions: Actions) -> Result<Self, DriverError> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random)
            .map_err(|e| io::Error::other(format!("no randomness for the uuid: {e}")))?;
        let now = Instant::now();
        let wall_clock = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self::with_identity(socket, config, actions, NodeUuid::from_random(random), now, wall_clock)
    }

    /// Like [`LegionDriver::new`] with the uuid, the current `now` and the wall-clock time
    /// (since the Unix epoch) at `now` given, as [`Legion::new`] takes them.
    ///
    /// # Errors
    /// As [`LegionDriver::new`].
    pub fn with_identity(
        socket: LegionSocket,
        config: Config,
        actions: Actions,
        uuid: NodeUuid,
        now: Instant,
        wall_clock: Duration,
    ) -> Result<Self, DriverError> {
        let name = String::from_utf8_lossy(config.legion()).into_owned();
        // Members' source addresses share the group's port (every node of a host binds it),
        // so the core must not unicast to them: it sends to the group instead.
        let config = if socket.group.is_some() { config.multicast(true) } else { config };
        let stop_lord_on_error = config.death_on_lord_error.is_some();
        let core = Legion::new(config, uuid, now, wall_clock)?;
        let (wake_tx, wake_rx) = StdUnixDatagram::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        let wake_tx = Arc::new(wake_tx);
        let (results_tx, results) = mpsc::channel();
        let counts = Hook::ALL.map(|h| actions.len(h));
        let timeout = actions.timeout;
        let cancel = Arc::new(AtomicBool::new(false));
        let jobs = if actions.is_empty() {
            None
        } else {
            let (jobs_tx, jobs_rx) = mpsc::channel();
            let worker = Worker {
                actions,
                jobs: jobs_rx,
                results: results_tx,
                wake: Arc::clone(&wake_tx),
                cancel: Arc::clone(&cancel),
                legion: name.clone(),
                stop_lord_on_error,
            };
            std::thread::Builder::new().name(format!("legion-actions-{name}")).spawn(move || worker.run())?;
            Some(jobs_tx)
        };
        let mut driver = Self {
            core,
            socket,
            name,
            buf: vec![0; RECV_BUF].into_boxed_slice(),
            sendq: VecDeque::new(),
            events: VecDeque::new(),
            outcomes: VecDeque::new(),
            runner: Runner { jobs, results, counts, pending: 0, timeout, cancel },
            wake_rx: UnixDatagram::from_std(wake_rx),
            wake_tx,
            stop: Arc::new(AtomicBool::new(false)),
            registry: None,
            token: None,
            writable: false,
            still_readable: false,
            last_now: now,
            stats: DriverStats::default(),
        };
        driver.pump(now);
        Ok(driver)
    }

    // ----- the composable loop API --------------------------------------------------------

    /// Registers the socket (and the action thread's wake-up socket) with `token`.
    ///
    /// Interest follows need: READABLE always, WRITABLE only while sends are blocked;
    /// the driver re-registers itself when that changes, with a clone of `registry`.
    ///
    /// # Errors
    /// [`DriverError::Io`] from the registry.
    pub fn register(&mut self, registry: &Registry, token: Token) -> Result<(), DriverError> {
        let interest = self.wanted_interest();
        self.socket.source().register(registry, token, interest)?;
        registry.register(&mut self.wake_rx, token, Interest::READABLE)?;
        self.registry = Some(registry.try_clone()?);
        self.token = Some(token);
        self.writable = interest.is_writable();
        Ok(())
    }

    /// Removes the driver's sources from `registry`.
    ///
    /// # Errors
    /// [`DriverError::Io`] from the registry.
    pub fn deregister(&mut self, registry: &Registry) -> Result<(), DriverError> {
        self.socket.source().deregister(registry)?;
        registry.deregister(&mut self.wake_rx)?;
        self.registry = None;
        self.token = None;
        Ok(())
    }

    /// Handles a mio event of the driver's token: reads datagrams until `WouldBlock` (at
    /// most a batch; see [`LegionDriver::timeout`]), feeds them to the core, collects the
    /// action thread's results, and sends what is queued.
    ///
    /// Rejected datagrams are logged at `debug` and counted by the core; they are not
    /// errors. Then poll [`LegionDriver::poll_event`] until `None`.
    ///
    /// # Errors
    /// [`DriverError::Io`] for a receive error other than `WouldBlock`, `Interrupted` and
    /// ICMP errors, or a failed re-registration.
    pub fn handle_ready(&mut self, event: &mio::event::Event, now: Instant) -> Result<(), DriverError> {
        let now = self.clamp(now);
        trace!(legion = %self.name, readable = event.is_readable(), writable = event.is_writable(), "ready");
        self.receive(now)?;
        self.drain_results(now);
        self.send_queued();
        self.update_interest()
    }

    /// Reads the rest of a receive batch that was cut short, fires the core's timers if
    /// they are due, collects action results and sends what is queued, stopping at
    /// `WouldBlock`. Call it once per loop iteration, and after using
    /// [`LegionDriver::core_mut`].
    ///
    /// # Errors
    /// [`DriverError::Io`] for a receive error (as [`LegionDriver::handle_ready`]) or a
    /// failed re-registration.
    pub fn flush(&mut self, now: Instant) -> Result<(), DriverError> {
        let now = self.clamp(now);
        if self.still_readable {
            // The last batch stopped before `WouldBlock`; readiness is edge-triggered, so
            // no new event will say the rest is there.
            self.receive(now)?;
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        self.pump(now);
        self.drain_results(now);
        self.send_queued();
        self.update_interest()
    }

    /// How long the loop may sleep from `now`: until the core's next deadline; zero when a
    /// receive batch was cut short; `None` after leaving (nothing is scheduled).
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        if self.still_readable {
            return Some(Duration::ZERO);
        }
        self.core.poll_timeout().map(|t| t.saturating_duration_since(now))
    }

    /// The next event, in order. Every event has already been handed to the action thread
    /// when it is returned here; events are kept (at most 4096) until polled. Changes after
    /// [`LegionDriver::handle_ready`], [`LegionDriver::flush`], [`LegionDriver::leave`]
    /// and [`LegionDriver::shutdown`].
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The outcome of the next finished action, in order. Changes after
    /// [`LegionDriver::handle_ready`], [`LegionDriver::flush`] and
    /// [`LegionDriver::shutdown`].
    pub fn poll_action_outcome(&mut self) -> Option<ActionOutcome> {
        self.outcomes.pop_front()
    }

    /// The core.
    pub fn core(&self) -> &Legion {
        &self.core
    }

    /// The core, for commands. Call [`LegionDriver::flush`] afterwards, so that what the
    /// command queued is sent and its events reach the actions.
    pub fn core_mut(&mut self) -> &mut Legion {
        &mut self.core
    }

    /// The socket.
    pub fn socket(&self) -> &LegionSocket {
        &self.socket
    }

    /// The driver's counters.
    pub fn stats(&self) -> &DriverStats {
        &self.stats
    }

    /// A handle that stops [`LegionDriver::run`].
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle { flag: Arc::clone(&self.stop), wake: Arc::clone(&self.wake_tx) }
    }

    /// Leaves the legion without waiting: the `death` event goes to the actions and the
    /// death announce is sent (or queued while the socket would block). See
    /// [`LegionDriver::shutdown`] to wait for both.
    ///
    /// # Errors
    /// [`DriverError::Io`] for a failed re-registration.
    pub fn leave(&mut self, now: Instant) -> Result<(), DriverError> {
        let now = self.clamp(now);
        self.core.leave(now);
        self.pump(now);
        self.send_queued();
        self.update_interest()
    }

    /// Leaves the legion cleanly, as uWSGI does at exit: [`LegionDriver::leave`], then
    /// sends the death announce (retrying briefly while the socket would block), then waits
    /// for the actions queued so far (the `death` actions last), each within the action
    /// timeout. Peers remove this node at once instead of after the tolerance.
    ///
    /// This blocks the calling thread. Afterwards the driver does nothing more; poll the
    /// remaining events and outcomes.
    ///
    /// # Errors
    /// [`DriverError::Io`] for a failed re-registration.
    pub fn shutdown(&mut self, now: Instant) -> Result<(), DriverError> {
        self.leave(now)?;
        for _ in 0..100 {
            if self.sendq.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
            self.send_queued();
        }
        let pending = u32::try_from(self.runner.pending).unwrap_or(u32::MAX);
        let budget = self.runner.timeout.saturating_mul(pending).saturating_add(Duration::from_secs(1));
        let deadline = Instant::now() + budget;
        while self.runner.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(legion = %self.name, pending = self.runner.pending, "actions still running at shutdown");
                break;
            }
            match self.runner.results.recv_timeout(left) {
                Ok(msg) => {
                    let now = self.clamp(Instant::now());
                    self.handle_msg(msg, now);
                }
                Err(_) => break,
            }
        }
        self.update_interest()
    }

    /// Runs the legion on its own [`mio::Poll`] until `stop` is stopped, calling
    /// `on_event` for every event, then [`LegionDriver::shutdown`]s (the `death` event is
    /// passed to `on_event` too). Action outcomes are logged, not returned.
    ///
    /// `stop` should come from this driver's [`LegionDriver::stop_handle`], which wakes the
    /// loop at once; with another handle the loop checks it every 100 ms.
    ///
    /// # Errors
    /// [`DriverError::Io`] from the poll or the socket.
    pub fn run(mut self, stop: &StopHandle, mut on_event: impl FnMut(&Event)) -> Result<(), DriverError> {
        let mut poll = Poll::new()?;
        self.register(poll.registry(), Token(0))?;
        let own = Arc::ptr_eq(&stop.flag, &self.stop);
        let mut events = Events::with_capacity(64);
        loop {
            self.flush(Instant::now())?;
            while let Some(event) = self.poll_event() {
                on_event(&event);
            }
            self.outcomes.clear();
            if stop.is_stopped() {
                break;
            }
            let mut wait = self.timeout(Instant::now());
            if !own {
                wait = Some(wait.map_or(Duration::from_millis(100), |w| w.min(Duration::from_millis(100))));
            }
            match poll.poll(&mut events, wait) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            }
            for event in &events {
                self.handle_ready(event, Instant::now())?;
            }
        }
        self.shutdown(Instant::now())?;
        while let Some(event) = self.poll_event() {
            on_event(&event);
        }
        Ok(())
    }

    // ----- internals ----------------------------------------------------------------------

    /// The core's `now` never goes backwards (its debug builds assert it).
    fn clamp(&mut self, now: Instant) -> Instant {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    /// Moves the core's outputs out, in the contract's order: transmits to the send queue,
    /// events to the action thread and the event queue.
    fn pump(&mut self, now: Instant) {
        loop {
            while let Some(t) = self.core.poll_transmit() {
                if self.sendq.len() >= SEND_QUEUE_CAP {
                    self.sendq.pop_front();
                    self.stats.sends_dropped += 1;
                }
                self.sendq.push_back(t);
            }
            let Some(event) = self.core.poll_event() else { break };
            debug!(legion = %self.name, seq = event.seq, epoch = event.epoch, event = event.kind.phase(), "event");
            self.dispatch(&event, now);
            if self.events.len() >= QUEUE_CAP {
                self.events.pop_front();
                self.stats.events_dropped += 1;
            }
            self.events.push_back(event);
        }
    }

    /// Hands an event to the action thread if its hook has actions.
    fn dispatch(&mut self, event: &Event, now: Instant) {
        let Some(hook) = Hook::of(&event.kind) else { return };
        let planned = self.runner.counts[hook.index()];
        if planned == 0 {
            return;
        }
        let sent = self
            .runner
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(Job { event: event.clone(), hook }).is_ok());
        if sent {
            self.runner.pending += planned;
        } else {
            // The action thread is gone (it cannot be, short of a panic in the runner):
            // the actions cannot run, which counts as a failure.
            warn!(legion = %self.name, hook = hook.name(), "the action thread is gone; actions not run");
            if hook == Hook::Lord {
                self.core.handle_action_result(now, event.seq, false);
            }
        }
    }

    fn receive(&mut self, now: Instant) -> Result<(), DriverError> {
        self.still_readable = false;
        for _ in 0..RECV_BATCH {
            match self.socket.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    self.stats.datagrams_received += 1;
                    let datagram = self.buf.get(..n).unwrap_or_default();
                    if let Err(e) = self.core.handle_datagram(now, from, datagram) {
                        if e == DatagramError::Own {
                            trace!(legion = %self.name, %from, "own datagram dropped");
                        } else {
                            debug!(legion = %self.name, %from, reason = e.reason(), "datagram rejected: {e}");
                        }
                    }
                    self.pump(now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    // An ICMP error for an earlier send: not about this socket.
                    self.stats.recv_errors += 1;
                    debug!(legion = %self.name, "receive error skipped: {e}");
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.still_readable = true;
        Ok(())
    }

    /// Sends the queue's datagrams until the socket would block.
    fn send_queued(&mut self) {
        while let Some(t) = self.sendq.front() {
            match self.socket.send_to(&t.payload, t.destination) {
                Ok(_) => {
                    self.stats.datagrams_sent += 1;
                    self.sendq.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !self.socket.is_unix() => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A unix datagram socket would block because one peer's queue is full,
                    // and readiness would not say when it drains: drop this announce (the
                    // next period sends another) rather than stall every peer behind it.
                    self.stats.sends_dropped += 1;
                    debug!(legion = %self.name, destination = %t.destination, "unix peer busy, announce dropped");
                    self.sendq.pop_front();
                }
                Err(e) => {
                    self.stats.send_errors += 1;
                    let to = self
                        .socket
                        .endpoint_of(t.destination)
                        .map_or_else(|| t.destination.to_string(), |e| e.to_string());
                    debug!(legion = %self.name, destination = %to, "send failed: {e}");
                    self.sendq.pop_front();
                }
            }
        }
    }

    fn wanted_interest(&self) -> Interest {
        if self.sendq.is_empty() { Interest::READABLE } else { Interest::READABLE | Interest::WRITABLE }
    }

    fn update_interest(&mut self) -> Result<(), DriverError> {
        let interest = self.wanted_interest();
        if interest.is_writable() == self.writable {
            return Ok(());
        }
        if let (Some(registry), Some(token)) = (&self.registry, self.token) {
            self.socket.source().reregister(registry, token, interest)?;
            self.writable = interest.is_writable();
        }
        Ok(())
    }

    /// Drains the wake socket and every result of the action thread.
    fn drain_results(&mut self, now: Instant) {
        let mut scratch = [0u8; 64];
        while self.wake_rx.recv(&mut scratch).is_ok() {}
        loop {
            match self.runner.results.try_recv() {
                Ok(msg) => self.handle_msg(msg, now),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    if self.runner.jobs.is_some() && self.runner.pending > 0 {
                        warn!(legion = %self.name, "the action thread is gone");
                    }
                    self.runner.pending = 0;
                    break;
                }
            }
        }
    }

    fn handle_msg(&mut self, msg: WorkerMsg, now: Instant) {
        match msg {
            WorkerMsg::Outcome(outcome) => {
                self.stats.actions_run += 1;
                match &outcome.result {
                    Ok(()) => debug!(
                        legion = %self.name, hook = outcome.hook.name(), action = %outcome.action,
                        elapsed_ms = outcome.elapsed.as_millis(), "action done"
                    ),
                    Err(failure) => {
                        self.stats.actions_failed += 1;
                        warn!(
                            legion = %self.name, action = %outcome.action,
                            "ERROR, {} hook returned: {failure}", outcome.hook
                        );
                    }
                }
                if self.outcomes.len() >= QUEUE_CAP {
                    self.outcomes.pop_front();
                    self.stats.outcomes_dropped += 1;
                }
                self.outcomes.push_back(outcome);
            }
            WorkerMsg::Done { seq, hook, success, planned } => {
                self.runner.pending = self.runner.pending.saturating_sub(planned);
                if hook == Hook::Lord {
                    self.core.handle_action_result(now, seq, success);
                    self.pump(now);
                }
            }
        }
    }
}

impl Drop for LegionDriver {
    fn drop(&mut self) {
        // Queued and running actions are abandoned (a running command is killed); the
        // thread ends when it sees the closed job channel.
        self.runner.cancel.store(true, Ordering::SeqCst);
    }
}

impl fmt::Debug for LegionDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LegionDriver")
            .field("core", &self.core)
            .field("socket", &self.socket)
            .field("queued_sends", &self.sendq.len())
            .field("pending_actions", &self.runner.pending)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The action thread: runs the jobs in order, one action at a time.
struct Worker {
    actions: Actions,
    jobs: mpsc::Receiver<Job>,
    results: mpsc::Sender<WorkerMsg>,
    wake: Arc<StdUnixDatagram>,
    cancel: Arc<AtomicBool>,
    legion: String,
    /// uWSGI stops at the first failed lord hook when `death_on_lord_error` is set.
    stop_lord_on_error: bool,
}

impl Worker {
    fn run(mut self) {
        while let Ok(job) = self.jobs.recv() {
            let timeout = self.actions.timeout;
            let list = &mut self.actions.hooks[job.hook.index()];
            let planned = list.len();
            let mut success = true;
            for action in list.iter_mut() {
                let start = Instant::now();
                let (result, log) = if self.cancel.load(Ordering::SeqCst) {
                    (Err(ActionFailure::Cancelled), None)
                } else {
                    run_action(action, &job, timeout, &self.cancel, &self.legion)
                };
                let failed = result.is_err();
                success &= !failed;
                let outcome = ActionOutcome {
                    seq: job.event.seq,
                    hook: job.hook,
                    action: action.describe(),
                    result,
                    log,
                    elapsed: start.elapsed(),
                };
                // The driver may be gone; then nobody wants the outcome.
                let _ = self.results.send(WorkerMsg::Outcome(outcome));
                let _ = self.wake.send(&[1]);
                if failed && job.hook == Hook::Lord && self.stop_lord_on_error {
                    break;
                }
            }
            let _ =
                self.results.send(WorkerMsg::Done { seq: job.event.seq, hook: job.hook, success, planned });
            let _ = self.wake.send(&[1]);
        }
    }
}

fn run_action(
    action: &mut Action,
    job: &Job,
    timeout: Duration,
    cancel: &AtomicBool,
    legion: &str,
) -> (Result<(), ActionFailure>, Option<String>) {
    match action {
        Action::Shell(cmd) => (run_shell(cmd, job, timeout, cancel, legion), None),
        Action::Log(text) => {
            info!(legion, hook = job.hook.name(), "{text}");
            (Ok(()), Some(text.clone()))
        }
        Action::Unknown { name, .. } => (Err(ActionFailure::UnknownAction { name: name.clone() }), None),
        Action::Callback(f) => {
            let result = match catch_unwind(AssertUnwindSafe(|| f(&job.event))) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => Err(ActionFailure::Callback { message }),
                Err(_) => Err(ActionFailure::Callback { message: "the callback panicked".into() }),
            };
            (result, None)
        }
    }
}

/// `cmd:` — `/bin/sh -c`, waited for at most `timeout`, killed on timeout or cancel.
fn run_shell(
    cmd: &str,
    job: &Job,
    timeout: Duration,
    cancel: &AtomicBool,
    legion: &str,
) -> Result<(), ActionFailure> {
    debug!(legion, "(phase: {} legion: {legion}) calling cmd:{cmd}", job.hook);
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        // uWSGI's hooks write to its log; ours must never mix into a program's stdout.
        .stdout(Stdio::from(io::stderr()))
        .env("LEGION_NAME", legion)
        .env("LEGION_EVENT", job.hook.name())
        .env("LEGION_SEQ", job.event.seq.to_string())
        .env("LEGION_EPOCH", job.event.epoch.to_string())
        // Its own process group, so a timeout kills what the shell started too.
        .process_group(0)
        .spawn()
        .map_err(|e| ActionFailure::Spawn { message: e.to_string() })?;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return match (status.code(), status.signal()) {
                    (Some(0), _) => Ok(()),
                    (Some(code), _) => Err(ActionFailure::ExitStatus { code }),
                    (None, Some(signal)) => Err(ActionFailure::Signal { signal }),
                    (None, None) => Err(ActionFailure::ExitStatus { code: -1 }),
                };
            }
            Ok(None) => {}
            Err(e) => return Err(ActionFailure::Spawn { message: e.to_string() }),
        }
        let now = Instant::now();
        let cancelled = cancel.load(Ordering::SeqCst);
        if cancelled || now >= deadline {
            // The child may have exited meanwhile; kill its group and reap either way.
            if let Some(pgid) = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)) {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(if cancelled {
                ActionFailure::Cancelled
            } else {
                ActionFailure::TimedOut { after: timeout }
            });
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_display_alike() {
        for text in ["127.0.0.1:41001", "[::1]:41001", "unix:/tmp/lg.sock", "239.41.0.1:41001"] {
            let e: Endpoint = text.parse().unwrap();
            assert_eq!(e.to_string(), text);
        }
        assert!("239.41.0.1:1".parse::<Endpoint>().unwrap().is_multicast());
        assert!("[ff02::1]:1".parse::<Endpoint>().unwrap().is_multicast());
        assert!(!"127.0.0.1:1".parse::<Endpoint>().unwrap().is_multicast());
        assert!("unix:".parse::<Endpoint>().is_err());
        assert!("nowhere".parse::<Endpoint>().is_err());
        assert!(Endpoint::resolve("localhost:41001").is_ok());
    }

    #[test]
    fn unix_table_addresses_round_trip() {
        for i in [0, 1, 255, 256, UNIX_TABLE_CAP - 1] {
            let addr = table_addr(i);
            assert_eq!(table_index(addr), Some(i), "{addr}");
            assert_ne!(addr, UNIX_UNNAMED);
        }
        assert_eq!(table_addr(0).to_string(), "127.255.0.1:0");
        assert_eq!(table_index(UNIX_UNNAMED), Some(0xffff - 1)); // never a table position
        assert_eq!(table_index("127.0.0.1:0".parse().unwrap()), None);
    }
}
