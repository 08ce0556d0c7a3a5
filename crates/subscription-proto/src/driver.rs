//! The mio drivers: a [`SubscriptionServer`] on its subscription sockets, a [`Subscriber`]
//! with its sending sockets and notify socket (feature `mio`).
//!
//! Both drivers are composable (STYLE §3.5): register them in your own [`mio::Poll`] next
//! to other sources (a router's listeners and connections, a stats server, signals), or
//! let `run` run a loop for one of them.
//!
//! | method | when |
//! |---|---|
//! | `register` | once, with a token of yours (every socket of the driver shares it) |
//! | `handle_ready` | for every mio event with that token |
//! | `flush` | once per loop iteration, and after using `core_mut`: fires due timers, sends |
//! | `timeout` | the longest the loop may sleep |
//! | `poll_event` | after each of the above, until `None` |
//!
//! # [`ServerDriver`]
//!
//! Owns the table and its subscription sockets (uWSGI `--<router>-subscription-server`,
//! repeatable): UDP `IP:PORT` (IPv4 or IPv6) or a unix datagram socket path (spec §1.1).
//! Every readiness event drains every socket until `WouldBlock` (at most a batch per
//! socket; [`ServerDriver::timeout`] is then zero). With
//! [`ServerConfig::use_credentials`](crate::ServerConfig::use_credentials), unix sockets
//! get `SO_PASSCRED` and datagrams are read with `recvmsg`; their `SCM_CREDENTIALS` go to
//! [`SubscriptionServer::handle_datagram_with_credentials`] (datagrams without any, e.g.
//! over UDP, are then dropped by the table, as uWSGI does, spec §2.11). Notify
//! acknowledgements (spec §1.7) are sent from one unbound unix datagram socket; one that
//! would block or fails is dropped and counted (the subscriber's next refresh does not
//! ask for another: acks are sent on node creation only, as in uWSGI). The server side
//! never sends anything else. Lookups are the table's: `core_mut().pick(…)`.
//!
//! The table reads its key and credential files through [`RealFiles`];
//! [`ServerDriver::bind`] reads the clock. UDP sockets get a 4 MiB receive buffer (if
//! `net.core.rmem_max` allows) and are read with `recvmmsg`, up to 32 datagrams per system
//! call, each in a slot one byte longer than [`wire::MAX_DATAGRAM`]; unix sockets are read
//! one datagram at a time into a 64 KiB buffer (with `recvmsg` for credentials). Datagrams
//! longer than [`wire::MAX_DATAGRAM`] are rejected by the table (uWSGI cuts them to 4096
//! bytes and applies what is left).
//!
//! # [`SubscriberDriver`]
//!
//! Owns a [`Subscriber`] and sends its datagrams: to UDP servers from one UDP socket per
//! address family (bound to the wildcard address on an ephemeral port), to unix servers
//! from one unbound unix datagram socket. uWSGI opens a fresh socket for every datagram;
//! the router cannot tell the difference (it never replies on the socket). A UDP send that
//! would block waits in a queue (at most 4096); a unix send that would block (the router's
//! queue is full) is dropped, like any failed send: logged at `debug`, counted, and
//! reported as [`SubscriberEvent::SendFailed`] — the next round sends again, as uWSGI's
//! "send errors are logged and ignored". With a notify socket (uWSGI `--notify-socket`),
//! the driver binds it and hands what arrives to [`Subscriber::handle_notify`].
//!
//! # Logs
//!
//! A library does not print: the drivers log through [`tracing`]. Rejected datagrams are
//! logged at `debug` and counted (by the table's [`Stats`](crate::server::Stats)); failed
//! sends at `debug` ([`ServerDriverStats`], [`SubscriberDriverStats`]).

// STYLE §3.5: this module is the one place of the crate that reads the clock (Instant::now,
// SystemTime::now for the cores' wall clock), sleeps (the shutdown's short retries) and
// touches sockets.
#![allow(
    clippy::disallowed_methods,
    reason = "the driver reads the clock and bounds its waits (STYLE §3.5: only driver.rs may)"
)]

use core::fmt;
use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixDatagram as StdUnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::event::Source;
use mio::net::{UdpSocket, UnixDatagram};
use mio::{Events, Interest, Poll, Registry, Token};
use nix::sys::socket::MultiHeaders;
use tracing::{debug, trace};

use crate::server::{self, Credentials, ServerConfig, SubscriptionServer};
use crate::subscriber::{self, ConfigError, Subscriber, SubscriberConfig, Subscription, Transmit};
use crate::{Endpoint, RealFiles, wire};

/// Room for a datagram of a unix socket (read one at a time): any datagram a subscriber
/// sends fits (the table rejects more than 4096 bytes anyway, and says so).
const RECV_BUF: usize = 65_536;
/// Most datagrams read from a UDP socket by one `recvmmsg`.
const UDP_BATCH: usize = 32;
/// Room for one datagram of a `recvmmsg` batch: one byte more than the table accepts, so
/// that a longer datagram still arrives too long (cut to this size; the table rejects it).
const UDP_SLOT: usize = wire::MAX_DATAGRAM + 1;
/// Most datagrams read from one socket in one call; the rest wait for the next loop
/// iteration (the driver's `timeout` is then zero), so a flood on one socket cannot starve
/// the other sources of the loop.
const RECV_BATCH: usize = 1024;
/// Most sends kept while a UDP socket would block; beyond it the oldest is dropped.
const SEND_QUEUE_CAP: usize = 4096;
/// Most undelivered subscriber events kept; beyond it the oldest is dropped.
const EVENT_QUEUE_CAP: usize = 4096;

/// Why a driver failed.
///
/// Returned by construction for a setup that cannot work (a socket that cannot be bound),
/// and by the loop methods for an IO error of a socket or of the poll itself. Rejected
/// datagrams and failed sends are never errors: they are logged and counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// An IO error of a socket or the poll.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A socket could not be bound (address in use, no permission, missing directory…).
    #[error("cannot bind {endpoint}: {source}")]
    Bind {
        /// Where.
        endpoint: Endpoint,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The subscriber cannot be built (an unencodable subscription, a zero interval).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Stops a running `run` loop from any thread (or a signal handler's thread): the loop
/// wakes at once, finishes (a subscriber unsubscribes) and returns.
#[derive(Clone)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    wake: Arc<StdUnixDatagram>,
}

impl StopHandle {
    fn new() -> io::Result<(Self, UnixDatagram)> {
        let (tx, rx) = StdUnixDatagram::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok((Self { flag: Arc::new(AtomicBool::new(false)), wake: Arc::new(tx) }, UnixDatagram::from_std(rx)))
    }

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

/// The receive buffer asked for on UDP subscription sockets.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Drains a wake socket.
fn drain_wake(wake: &UnixDatagram) {
    let mut scratch = [0u8; 64];
    while wake.recv(&mut scratch).is_ok() {}
}

fn wall_clock() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Removes a stale socket file left by a killed process (bind fails on it); any other kind
/// of file is an error.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    Ok(())
}

/// A bound unix datagram socket that removes its file when dropped.
struct OwnedUnixDatagram {
    sock: UnixDatagram,
    path: PathBuf,
}

impl OwnedUnixDatagram {
    fn bind(path: &Path) -> io::Result<Self> {
        remove_stale_socket(path)?;
        let sock = UnixDatagram::bind(path)?;
        Ok(Self { sock, path: path.to_path_buf() })
    }
}

impl Drop for OwnedUnixDatagram {
    fn drop(&mut self) {
        // Best effort: the file may be gone already.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One subscription socket of a server.
enum ServerSocket {
    Udp { sock: UdpSocket, local: SocketAddr },
    Unix(OwnedUnixDatagram),
}

impl ServerSocket {
    fn bind(endpoint: &Endpoint, pass_credentials: bool) -> Result<Self, DriverError> {
        let bind_error = |source| DriverError::Bind { endpoint: endpoint.clone(), source };
        match endpoint {
            Endpoint::Udp(addr) => {
                let sock = UdpSocket::bind(*addr).map_err(bind_error)?;
                // A burst of subscriptions must fit the receive buffer while the loop is
                // busy: the default (~212 KB, 256 datagrams: 2.6 ms at 100,000 a second)
                // drops refreshes at the first preemption. Ask for 4 MiB; the kernel caps it
                // at net.core.rmem_max, and a refusal leaves the default (best effort).
                let _ = nix::sys::socket::setsockopt(
                    &sock,
                    nix::sys::socket::sockopt::RcvBuf,
                    &UDP_RECEIVE_BUFFER,
                );
                let local = sock.local_addr()?;
                Ok(Self::Udp { sock, local })
            }
            Endpoint::Unix(path) => {
                let sock = OwnedUnixDatagram::bind(path).map_err(bind_error)?;
                if pass_credentials {
                    // Spec §2.11: the kernel attaches the sender's pid/uid/gid to every
                    // datagram once SO_PASSCRED is on.
                    nix::sys::socket::setsockopt(&sock.sock, nix::sys::socket::sockopt::PassCred, &true)
                        .map_err(io::Error::from)?;
                }
                Ok(Self::Unix(sock))
            }
        }
    }

    fn endpoint(&self) -> Endpoint {
        match self {
            Self::Udp { local, .. } => Endpoint::Udp(*local),
            Self::Unix(s) => Endpoint::Unix(s.path.clone()),
        }
    }

    /// Reads what is queued, up to a batch: on a UDP socket up to [`UDP_BATCH`] datagrams
    /// with one `recvmmsg`, datagram `k` in `buf[k * UDP_SLOT..]` and its length in
    /// `lens[k]` (its real length: more than `UDP_SLOT` when it was cut); on a unix socket
    /// one datagram in `buf[..lens[0]]` and, when asked for, its credentials. Returns how
    /// many datagrams were read (at least one) or the socket's error (`WouldBlock` when
    /// nothing is queued).
    fn recv_batch(
        &self,
        headers: &mut Option<MultiHeaders<()>>,
        buf: &mut [u8],
        lens: &mut [usize; UDP_BATCH],
        credentials: bool,
    ) -> io::Result<(usize, Option<Credentials>)> {
        match self {
            Self::Udp { sock, .. } => {
                let headers = headers.get_or_insert_with(|| MultiHeaders::preallocate(UDP_BATCH, None));
                recv_udp_batch(sock, headers, buf, lens).map(|n| (n, None))
            }
            Self::Unix(s) => {
                let (n, c) = if credentials {
                    recv_with_credentials(&s.sock, buf)?
                } else {
                    (s.sock.recv(buf)?, None)
                };
                lens[0] = n;
                Ok((1, c))
            }
        }
    }

    /// Where datagram `k` of a batch read by [`ServerSocket::recv_batch`] starts, and the
    /// most bytes it can have there.
    fn slot(&self, k: usize) -> (usize, usize) {
        match self {
            Self::Udp { .. } => (k * UDP_SLOT, UDP_SLOT),
            Self::Unix(_) => (0, RECV_BUF),
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Self::Udp { sock, .. } => sock,
            Self::Unix(s) => &mut s.sock,
        }
    }
}

/// `recvmmsg` of up to [`UDP_BATCH`] datagrams into the slots of `buf` (nix's safe API):
/// one system call for a batch instead of one `recvfrom` per datagram. `MSG_TRUNC` makes
/// the kernel report a cut datagram's real length.
fn recv_udp_batch(
    sock: &UdpSocket,
    headers: &mut MultiHeaders<()>,
    buf: &mut [u8],
    lens: &mut [usize; UDP_BATCH],
) -> io::Result<usize> {
    use nix::sys::socket::{MsgFlags, recvmmsg};
    let mut slots = buf.chunks_exact_mut(UDP_SLOT);
    let mut iovs: [[io::IoSliceMut<'_>; 1]; UDP_BATCH] =
        std::array::from_fn(|_| [io::IoSliceMut::new(slots.next().unwrap_or_default())]);
    let received = recvmmsg(sock.as_raw_fd(), headers, iovs.iter_mut(), MsgFlags::MSG_TRUNC, None)
        .map_err(io::Error::from)?;
    let mut n = 0;
    for (len, msg) in lens.iter_mut().zip(received) {
        *len = msg.bytes;
        n += 1;
    }
    Ok(n)
}

/// `recvmsg` with room for one `SCM_CREDENTIALS` message (nix's safe API).
fn recv_with_credentials(sock: &UnixDatagram, buf: &mut [u8]) -> io::Result<(usize, Option<Credentials>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, UnixCredentials, recvmsg};
    let mut space = nix::cmsg_space!(UnixCredentials);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut credentials = None;
    // A truncated control buffer (MSG_CTRUNC) counts as no credentials: the table drops
    // the datagram.
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmCredentials(c) = cmsg {
                credentials = Some(Credentials {
                    pid: u32::try_from(c.pid()).unwrap_or(0),
                    uid: c.uid(),
                    gid: c.gid(),
                });
            }
        }
    }
    Ok((msg.bytes, credentials))
}

/// Counters of a [`ServerDriver`], next to the table's [`Stats`](crate::server::Stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerDriverStats {
    /// Datagrams read from the subscription sockets.
    pub datagrams_received: u64,
    /// Of those, datagrams the table rejected (by reason in the table's stats).
    pub datagrams_rejected: u64,
    /// Notify acknowledgements sent.
    pub acks_sent: u64,
    /// Notify acknowledgements that could not be sent (no such socket, queue full, …).
    pub acks_failed: u64,
    /// Receive errors skipped (ICMP errors and the like).
    pub recv_errors: u64,
}

/// A subscription server on real sockets; see the [module documentation](self).
///
/// ```no_run
/// use std::time::Instant;
/// use subscription_proto::ServerConfig;
/// use subscription_proto::driver::ServerDriver;
///
/// let driver = ServerDriver::bind(ServerConfig::new(), &["127.0.0.1:2626".parse()?, "/tmp/sub.sock".parse()?])?;
/// let stop = driver.stop_handle(); // stop.stop() from another thread ends `run`
/// driver.run(&stop, |event| println!("{event:?}"))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ServerDriver {
    core: SubscriptionServer,
    sockets: Vec<ServerSocket>,
    /// Whether datagrams of unix sockets are read with their credentials.
    credentials: bool,
    /// The unbound socket notify acknowledgements are sent from (made at the first one).
    ack_socket: Option<StdUnixDatagram>,
    buf: Box<[u8]>,
    wake_rx: UnixDatagram,
    stop: StopHandle,
    /// A receive batch was cut short: more datagrams may be waiting.
    still_readable: bool,
    last_now: Instant,
    stats: ServerDriverStats,
}

impl ServerDriver {
    /// A table with `config`, the filesystem ([`RealFiles`]) and the clock read now, on
    /// sockets bound to `endpoints` (port 0 picks a free port: see
    /// [`ServerDriver::local_endpoints`]).
    ///
    /// A unix path's stale socket file (left by a killed process) is removed first, any
    /// other file there is an error; the file is removed again when the driver is dropped.
    ///
    /// # Errors
    /// [`DriverError::Bind`] when a socket cannot be bound, [`DriverError::Io`] when it
    /// cannot be set up.
    pub fn bind(config: ServerConfig, endpoints: &[Endpoint]) -> Result<Self, DriverError> {
        let core = SubscriptionServer::new(config, RealFiles, Instant::now(), wall_clock());
        Self::new(core, endpoints)
    }

    /// Like [`ServerDriver::bind`] with a table of yours (its own files and clock).
    ///
    /// # Errors
    /// As [`ServerDriver::bind`].
    pub fn new(core: SubscriptionServer, endpoints: &[Endpoint]) -> Result<Self, DriverError> {
        let credentials = core.config().use_credentials;
        let sockets =
            endpoints.iter().map(|e| ServerSocket::bind(e, credentials)).collect::<Result<Vec<_>, _>>()?;
        let (stop, wake_rx) = StopHandle::new()?;
        Ok(Self {
            core,
            sockets,
            credentials,
            ack_socket: None,
            buf: vec![0; RECV_BUF.max(UDP_BATCH * UDP_SLOT)].into_boxed_slice(),
            wake_rx,
            stop,
            still_readable: false,
            last_now: Instant::now(),
            stats: ServerDriverStats::default(),
        })
    }

    // ----- the composable loop API --------------------------------------------------------

    /// Registers every subscription socket (READABLE; the server never waits to send) and
    /// the stop handle's wake-up socket with `token`.
    ///
    /// # Errors
    /// [`DriverError::Io`] from the registry.
    pub fn register(&mut self, registry: &Registry, token: Token) -> Result<(), DriverError> {
        for s in &mut self.sockets {
            s.source().register(registry, token, Interest::READABLE)?;
        }
        registry.register(&mut self.wake_rx, token, Interest::READABLE)?;
        Ok(())
    }

    /// Removes the driver's sockets from `registry`.
    ///
    /// # Errors
    /// [`DriverError::Io`] from the registry.
    pub fn deregister(&mut self, registry: &Registry) -> Result<(), DriverError> {
        for s in &mut self.sockets {
            s.source().deregister(registry)?;
        }
        registry.deregister(&mut self.wake_rx)?;
        Ok(())
    }

    /// Handles a mio event of the driver's token: reads every socket until `WouldBlock`
    /// (at most a batch each), feeds the datagrams to the table, and sends the
    /// acknowledgements they asked for. Then poll [`ServerDriver::poll_event`] until `None`.
    ///
    /// # Errors
    /// [`DriverError::Io`] for a receive error other than `WouldBlock`, `Interrupted` and
    /// ICMP errors.
    pub fn handle_ready(&mut self, event: &mio::event::Event, now: Instant) -> Result<(), DriverError> {
        trace!(readable = event.is_readable(), "subscription sockets ready");
        // Only `StopHandle::stop` writes the wake socket: no syscall for it on every event.
        if self.stop.is_stopped() {
            drain_wake(&self.wake_rx);
        }
        self.receive(now)
    }

    /// Reads every subscription socket now, as [`ServerDriver::handle_ready`] does. For a
    /// loop that batches reads: deregister the sockets after a read, come back after a
    /// short interval, register them again and call this for what queued meanwhile.
    ///
    /// # Errors
    /// As [`ServerDriver::handle_ready`].
    pub fn read_now(&mut self, now: Instant) -> Result<(), DriverError> {
        self.receive(now)
    }

    /// Reads the rest of a receive batch that was cut short, and sends queued
    /// acknowledgements. Call it once per loop iteration, and after using
    /// [`ServerDriver::core_mut`].
    ///
    /// # Errors
    /// As [`ServerDriver::handle_ready`].
    pub fn flush(&mut self, now: Instant) -> Result<(), DriverError> {
        let now = self.clamp(now);
        if self.still_readable {
            // Readiness is edge-triggered: no new event will say the rest is there.
            self.receive(now)?;
        }
        self.core.handle_timeout(now);
        self.send_acks();
        Ok(())
    }

    /// How long the loop may sleep: zero when a receive batch was cut short, else `None`
    /// (the table has no timers: liveness is checked at lookups, spec §2.5).
    pub fn timeout(&self, _now: Instant) -> Option<Duration> {
        self.still_readable.then_some(Duration::ZERO)
    }

    /// The next event of the table (new pools and nodes, failures, removals), in order.
    /// Changes after [`ServerDriver::handle_ready`], [`ServerDriver::flush`] and lookups
    /// through [`ServerDriver::core_mut`].
    pub fn poll_event(&mut self) -> Option<server::Event> {
        self.core.poll_event()
    }

    /// The table: pools and nodes for stats.
    pub fn core(&self) -> &SubscriptionServer {
        &self.core
    }

    /// The table, for lookups ([`SubscriptionServer::pick`]).
    pub fn core_mut(&mut self) -> &mut SubscriptionServer {
        &mut self.core
    }

    /// The endpoints bound, in the order given, with the real port for port 0.
    pub fn local_endpoints(&self) -> Vec<Endpoint> {
        self.sockets.iter().map(ServerSocket::endpoint).collect()
    }

    /// The driver's counters.
    pub fn stats(&self) -> &ServerDriverStats {
        &self.stats
    }

    /// The smallest receive buffer of the UDP subscription sockets, in bytes as the kernel
    /// counts them (`SO_RCVBUF`: twice what was asked for, each datagram charged with its
    /// bookkeeping: about 800 bytes for a 100-byte subscription on loopback); `None` without
    /// UDP sockets. A loop that batches reads sizes its batches from it.
    pub fn udp_receive_buffer(&self) -> Option<usize> {
        self.sockets
            .iter()
            .filter_map(|s| match s {
                ServerSocket::Udp { sock, .. } => {
                    nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::RcvBuf).ok()
                }
                ServerSocket::Unix(_) => None,
            })
            .min()
    }

    /// A handle that stops [`ServerDriver::run`].
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Runs the server on its own [`mio::Poll`] until `stop` is stopped, calling
    /// `on_event` for every table event.
    ///
    /// `stop` should come from this driver's [`ServerDriver::stop_handle`], which wakes the
    /// loop at once; with another handle the loop checks it every 100 ms.
    ///
    /// # Errors
    /// [`DriverError::Io`] from the poll or a socket.
    pub fn run(
        mut self,
        stop: &StopHandle,
        mut on_event: impl FnMut(&server::Event),
    ) -> Result<(), DriverError> {
        let mut poll = Poll::new()?;
        self.register(poll.registry(), Token(0))?;
        let own = Arc::ptr_eq(&stop.flag, &self.stop.flag);
        let mut events = Events::with_capacity(64);
        loop {
            self.flush(Instant::now())?;
            while let Some(event) = self.poll_event() {
                on_event(&event);
            }
            if stop.is_stopped() {
                return Ok(());
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
    }

    // ----- internals ----------------------------------------------------------------------

    fn clamp(&mut self, now: Instant) -> Instant {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    fn receive(&mut self, now: Instant) -> Result<(), DriverError> {
        let now = self.clamp(now);
        self.still_readable = false;
        // `recvmmsg`'s headers, made at the first UDP read of this call and not kept: they
        // hold raw pointers, and the driver stays `Send`.
        let mut headers = None;
        let mut lens = [0usize; UDP_BATCH];
        for i in 0..self.sockets.len() {
            let mut drained = false;
            let mut read = 0;
            while read < RECV_BATCH {
                let socket = &self.sockets[i];
                match socket.recv_batch(&mut headers, &mut self.buf, &mut lens, self.credentials) {
                    Ok((count, credentials)) => {
                        read += count;
                        self.stats.datagrams_received += count as u64;
                        for (k, &len) in lens.iter().enumerate().take(count) {
                            let (start, room) = self.sockets[i].slot(k);
                            let datagram = self.buf.get(start..start + len.min(room)).unwrap_or_default();
                            if let Err(e) =
                                self.core.handle_datagram_with_credentials(now, datagram, credentials)
                            {
                                self.stats.datagrams_rejected += 1;
                                debug!(
                                    socket = %self.sockets[i].endpoint(),
                                    reason = e.reason(),
                                    len,
                                    "subscription datagram rejected: {e}"
                                );
                            }
                            // Acks go out as the datagrams come in (the contract's drain order).
                            self.send_acks();
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                        ) =>
                    {
                        // An ICMP error for something this socket never sent: skip it.
                        read += 1;
                        self.stats.recv_errors += 1;
                        debug!(socket = %self.sockets[i].endpoint(), "receive error skipped: {e}");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            self.still_readable |= !drained;
        }
        Ok(())
    }

    /// Sends the table's notify acknowledgements (spec §1.7: always unix datagrams).
    fn send_acks(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            let Endpoint::Unix(path) = &t.destination else {
                // The table only ever addresses acks to paths.
                self.stats.acks_failed += 1;
                continue;
            };
            if self.ack_socket.is_none() {
                match StdUnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)) {
                    Ok(s) => self.ack_socket = Some(s),
                    Err(e) => {
                        self.stats.acks_failed += 1;
                        debug!("cannot create the notify socket: {e}");
                        continue;
                    }
                }
            }
            let Some(sock) = &self.ack_socket else { continue };
            match sock.send_to(&t.payload, path) {
                Ok(_) => {
                    self.stats.acks_sent += 1;
                    trace!(notify = %path.display(), "notify ack sent");
                }
                Err(e) => {
                    // uWSGI logs and forgets a failed ack; so do we.
                    self.stats.acks_failed += 1;
                    debug!(notify = %path.display(), "notify ack not sent: {e}");
                }
            }
        }
    }
}

impl fmt::Debug for ServerDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerDriver")
            .field("core", &self.core)
            .field("endpoints", &self.local_endpoints())
            .field("credentials", &self.credentials)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// What a [`SubscriberDriver`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriberEvent {
    /// A datagram went out (decode it with [`wire::decode`] to see what it said).
    Sent(Transmit),
    /// A datagram could not be sent; it is dropped (the next round sends again).
    SendFailed {
        /// The datagram.
        transmit: Transmit,
        /// Why, as the OS said it.
        error: String,
    },
    /// An event of the subscriber: an acknowledgement on the notify socket, a skipped
    /// subscription.
    Core(subscriber::Event),
}

/// Counters of a [`SubscriberDriver`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberDriverStats {
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// Datagrams that could not be sent (no route, no such unix socket, its queue full,
    /// send queue overflow).
    pub send_errors: u64,
    /// Datagrams received on the notify socket.
    pub notify_received: u64,
    /// Events dropped because they were not polled.
    pub events_dropped: u64,
}

/// A sending socket of a subscriber.
struct SendSocket {
    sock: UdpSocket,
    /// Whether it is registered for WRITABLE (only while sends wait on it).
    registered: bool,
}

/// A subscriber on real sockets; see the [module documentation](self).
///
/// ```no_run
/// use subscription_proto::{Subscription, SubscriberConfig};
/// use subscription_proto::driver::SubscriberDriver;
///
/// let sub = Subscription::new("127.0.0.1:2626".parse()?, "example.com", "127.0.0.1:3031");
/// let driver = SubscriberDriver::start(SubscriberConfig::new(), vec![sub], Some("/tmp/notify.sock".into()))?;
/// let stop = driver.stop_handle(); // stop.stop() unsubscribes and ends `run`
/// driver.run(&stop, |event| println!("{event:?}"))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SubscriberDriver {
    core: Subscriber,
    udp4: Option<SendSocket>,
    udp6: Option<SendSocket>,
    /// Unbound: sends to unix servers (made at the first one).
    unix: Option<StdUnixDatagram>,
    notify: Option<OwnedUnixDatagram>,
    sendq: VecDeque<Transmit>,
    events: VecDeque<SubscriberEvent>,
    buf: Box<[u8]>,
    wake_rx: UnixDatagram,
    stop: StopHandle,
    registry: Option<Registry>,
    token: Option<Token>,
    last_now: Instant,
    stats: SubscriberDriverStats,
}

impl SubscriberDriver {
    /// Starts subscribing: binds the notify socket at `notify` if given (uWSGI
    /// `--notify-socket`), advertises it as `notify` in every subscription that names no
    /// other (uWSGI does the same unless `--subscription-notify-socket` is set), and builds
    /// the [`Subscriber`] with the clock read now and the filesystem for check files. The
    /// first round is queued (unless `start_unsubscribed`); nothing is sent before
    /// [`SubscriberDriver::flush`].
    ///
    /// # Errors
    /// [`DriverError::Config`] for a subscription that cannot be sent (a notify path over
    /// 101 bytes is not advertised, as uWSGI ignores it), [`DriverError::Bind`] and
    /// [`DriverError::Io`] for the sockets.
    pub fn start(
        config: SubscriberConfig,
        mut subscriptions: Vec<Subscription>,
        notify: Option<PathBuf>,
    ) -> Result<Self, DriverError> {
        if let Some(path) = &notify {
            let advertised = path.as_os_str().as_encoded_bytes();
            if (1..=wire::MAX_NOTIFY).contains(&advertised.len()) {
                for s in subscriptions.iter_mut().filter(|s| s.request.notify.is_none()) {
                    s.request.notify = Some(advertised.to_vec());
                }
            }
        }
        let now = Instant::now();
        let core = Subscriber::new(config, subscriptions, RealFiles, now, wall_clock())?;
        Self::new(core, notify)
    }

    /// Drives a subscriber of yours, binding the notify socket at `notify` if given (the
    /// subscriptions should advertise it).
    ///
    /// # Errors
    /// [`DriverError::Bind`] and [`DriverError::Io`] for the sockets.
    pub fn new(core: Subscriber, notify: Option<PathBuf>) -> Result<Self, DriverError> {
        let notify = match notify {
            None => None,
            Some(path) => Some(
                OwnedUnixDatagram::bind(&path)
                    .map_err(|source| DriverError::Bind { endpoint: Endpoint::Unix(path.clone()), source })?,
            ),
        };
        let servers: Vec<&Endpoint> = core.subscriptions().iter().map(|s| &s.server).collect();
        let wants = |v4: bool| servers.iter().any(|e| matches!(e, Endpoint::Udp(a) if a.is_ipv4() == v4));
        let udp = |ip: std::net::IpAddr| -> Result<SendSocket, DriverError> {
            Ok(SendSocket { sock: UdpSocket::bind(SocketAddr::new(ip, 0))?, registered: false })
        };
        let udp4 = if wants(true) { Some(udp(Ipv4Addr::UNSPECIFIED.into())?) } else { None };
        let udp6 = if wants(false) { Some(udp(Ipv6Addr::UNSPECIFIED.into())?) } else { None };
        let (stop, wake_rx) = StopHandle::new()?;
        let mut driver = Self {
            core,
            udp4,
            udp6,
            unix: None,
            notify,
            sendq: VecDeque::new(),
            events: VecDeque::new(),
            buf: vec![0; RECV_BUF].into_boxed_slice(),
            wake_rx,
            stop,
            registry: None,
            token: None,
            last_now: Instant::now(),
            stats: SubscriberDriverStats::default(),
        };
        driver.pump();
        Ok(driver)
    }

    // ----- the composable loop API --------------------------------------------------------

    /// Registers the notify socket (READABLE) and the stop handle's wake-up socket with
    /// `token`; a UDP socket is registered (WRITABLE) only while sends wait on it, with a
    /// clone of `registry`.
    ///
    /// # Errors
    /// [`DriverError::Io`] from the registry.
    pub fn register(&mut self, registry: &Registry, token: Token) -> Result<(), DriverError> {
        if let Some(n) = &mut self.notify {
            registry.register(&mut n.sock, token, Interest::READABLE)?;
        }
        registry.register(&mut self.wake_rx, token, Interest::READABLE)?;
        self.registry = Some(registry.try_clone()?);
        self.token = Some(token);
        self.update_interest()
    }

    /// Removes the driver's sockets from `registry`.
    ///
    /// # Errors
    /// [`DriverError::Io`] from the registry.
    pub fn deregister(&mut self, registry: &Registry) -> Result<(), DriverError> {
        if let Some(n) = &mut self.notify {
            registry.deregister(&mut n.sock)?;
        }
        registry.deregister(&mut self.wake_rx)?;
        for s in [&mut self.udp4, &mut self.udp6].into_iter().flatten() {
            if s.registered {
                registry.deregister(&mut s.sock)?;
                s.registered = false;
            }
        }
        self.registry = None;
        self.token = None;
        Ok(())
    }

    /// Handles a mio event of the driver's token: reads the notify socket until
    /// `WouldBlock` (acknowledgements become [`SubscriberEvent::Core`] events) and sends
    /// what waits. Then poll [`SubscriberDriver::poll_event`] until `None`.
    ///
    /// # Errors
    /// [`DriverError::Io`] for a receive error other than `WouldBlock` and `Interrupted`,
    /// or a failed re-registration.
    pub fn handle_ready(&mut self, event: &mio::event::Event, now: Instant) -> Result<(), DriverError> {
        let now = self.clamp(now);
        trace!(readable = event.is_readable(), writable = event.is_writable(), "subscriber sockets ready");
        drain_wake(&self.wake_rx);
        self.receive_notify(now)?;
        self.send_queued();
        self.update_interest()
    }

    /// Sends the round that is due, if any, and what waits. Call it once per loop
    /// iteration, and after using [`SubscriberDriver::core_mut`] (pause, resume, reload).
    ///
    /// # Errors
    /// [`DriverError::Io`] for a failed re-registration.
    pub fn flush(&mut self, now: Instant) -> Result<(), DriverError> {
        let now = self.clamp(now);
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        self.pump();
        self.send_queued();
        self.update_interest()
    }

    /// How long the loop may sleep from `now`: until the next round; `None` when stopped
    /// or paused.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        self.core.poll_timeout().map(|t| t.saturating_duration_since(now))
    }

    /// The next event, in order; kept (at most 4096) until polled. Changes after
    /// [`SubscriberDriver::handle_ready`], [`SubscriberDriver::flush`] and
    /// [`SubscriberDriver::shutdown`].
    pub fn poll_event(&mut self) -> Option<SubscriberEvent> {
        self.events.pop_front()
    }

    /// The subscriber.
    pub fn core(&self) -> &Subscriber {
        &self.core
    }

    /// The subscriber, for commands ([`Subscriber::pause`], [`Subscriber::resume`],
    /// [`Subscriber::reload`]). Call [`SubscriberDriver::flush`] afterwards.
    pub fn core_mut(&mut self) -> &mut Subscriber {
        &mut self.core
    }

    /// The notify socket's path, if one is bound.
    pub fn notify_path(&self) -> Option<&Path> {
        self.notify.as_ref().map(|n| n.path.as_path())
    }

    /// The driver's counters.
    pub fn stats(&self) -> &SubscriberDriverStats {
        &self.stats
    }

    /// A handle that stops [`SubscriberDriver::run`].
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Unsubscribes (or, with `clear_on_exit`, sends the `clear` round) as uWSGI does at
    /// shutdown, and sends it, retrying briefly (at most 200 ms) while a UDP socket would
    /// block. This blocks the calling thread; afterwards the subscriber sends nothing more.
    ///
    /// # Errors
    /// [`DriverError::Io`] for a failed re-registration.
    pub fn shutdown(&mut self, now: Instant) -> Result<(), DriverError> {
        let now = self.clamp(now);
        self.core.shutdown(now);
        self.pump();
        self.send_queued();
        for _ in 0..100 {
            if self.sendq.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
            self.send_queued();
        }
        self.update_interest()
    }

    /// Runs the subscriber on its own [`mio::Poll`] until `stop` is stopped, calling
    /// `on_event` for every event, then [`SubscriberDriver::shutdown`]s (the unsubscribe
    /// datagrams are passed to `on_event` too).
    ///
    /// `stop` should come from this driver's [`SubscriberDriver::stop_handle`], which wakes
    /// the loop at once; with another handle the loop checks it every 100 ms.
    ///
    /// # Errors
    /// [`DriverError::Io`] from the poll or a socket.
    pub fn run(
        mut self,
        stop: &StopHandle,
        mut on_event: impl FnMut(&SubscriberEvent),
    ) -> Result<(), DriverError> {
        let mut poll = Poll::new()?;
        self.register(poll.registry(), Token(0))?;
        let own = Arc::ptr_eq(&stop.flag, &self.stop.flag);
        let mut events = Events::with_capacity(64);
        loop {
            self.flush(Instant::now())?;
            while let Some(event) = self.poll_event() {
                on_event(&event);
            }
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

    fn clamp(&mut self, now: Instant) -> Instant {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    fn emit(&mut self, event: SubscriberEvent) {
        if self.events.len() >= EVENT_QUEUE_CAP {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Moves the core's outputs out, in the contract's order: transmits, then events.
    fn pump(&mut self) {
        while let Some(t) = self.core.poll_transmit() {
            if self.sendq.len() >= SEND_QUEUE_CAP
                && let Some(old) = self.sendq.pop_front()
            {
                self.stats.send_errors += 1;
                self.emit(SubscriberEvent::SendFailed { transmit: old, error: "send queue full".into() });
            }
            self.sendq.push_back(t);
        }
        while let Some(e) = self.core.poll_event() {
            self.emit(SubscriberEvent::Core(e));
        }
    }

    fn receive_notify(&mut self, now: Instant) -> Result<(), DriverError> {
        let Some(notify) = &self.notify else { return Ok(()) };
        loop {
            match notify.sock.recv(&mut self.buf) {
                Ok(n) => {
                    self.stats.notify_received += 1;
                    let datagram = self.buf.get(..n).unwrap_or_default();
                    debug!("[notify-socket] {}", datagram.escape_ascii());
                    self.core.handle_notify(now, datagram);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.pump();
        Ok(())
    }

    /// Sends the queue's datagrams until a UDP socket would block.
    fn send_queued(&mut self) {
        while let Some(t) = self.sendq.front() {
            let result = match &t.destination {
                Endpoint::Udp(addr) => {
                    let sock = if addr.is_ipv4() { &self.udp4 } else { &self.udp6 };
                    match sock {
                        Some(s) => s.sock.send_to(&t.payload, *addr),
                        None => Err(io::Error::new(
                            io::ErrorKind::Unsupported,
                            "no socket for this address family",
                        )),
                    }
                }
                Endpoint::Unix(path) => {
                    if self.unix.is_none() {
                        match StdUnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)) {
                            Ok(s) => self.unix = Some(s),
                            Err(e) => debug!("cannot create a unix datagram socket: {e}"),
                        }
                    }
                    match &self.unix {
                        Some(s) => s.send_to(&t.payload, path),
                        None => Err(io::Error::other("no unix datagram socket")),
                    }
                }
            };
            match result {
                Ok(_) => {
                    self.stats.datagrams_sent += 1;
                    if let Some(t) = self.sendq.pop_front() {
                        trace!(destination = %t.destination, len = t.payload.len(), "subscription datagram sent");
                        self.emit(SubscriberEvent::Sent(t));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock && matches!(t.destination, Endpoint::Udp(_)) =>
                {
                    break;
                }
                Err(e) => {
                    // uWSGI: "send errors are logged and ignored" (spec §1.1). A unix
                    // socket would block because the router's queue is full, and readiness
                    // would not say when it drains: drop it rather than stall the rest.
                    self.stats.send_errors += 1;
                    debug!(destination = %t.destination, "subscription datagram not sent: {e}");
                    if let Some(t) = self.sendq.pop_front() {
                        self.emit(SubscriberEvent::SendFailed { transmit: t, error: e.to_string() });
                    }
                }
            }
        }
    }

    /// Interest follows need: a UDP socket is registered for WRITABLE only while the send
    /// at the front of the queue waits on it.
    fn update_interest(&mut self) -> Result<(), DriverError> {
        let (Some(registry), Some(token)) = (&self.registry, self.token) else { return Ok(()) };
        let waiting_on = match self.sendq.front().map(|t| &t.destination) {
            Some(Endpoint::Udp(a)) => Some(a.is_ipv4()),
            _ => None,
        };
        for (v4, slot) in [(true, &mut self.udp4), (false, &mut self.udp6)] {
            let Some(s) = slot else { continue };
            let wanted = waiting_on == Some(v4);
            if wanted && !s.registered {
                registry.register(&mut s.sock, token, Interest::WRITABLE)?;
                s.registered = true;
            } else if !wanted && s.registered {
                registry.deregister(&mut s.sock)?;
                s.registered = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for SubscriberDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriberDriver")
            .field("core", &self.core)
            .field("notify", &self.notify_path())
            .field("queued_sends", &self.sendq.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, Request};

    fn subscribe(key: &str) -> Vec<u8> {
        let req = Request { key: key.into(), address: b"127.0.0.1:3031".to_vec(), ..Request::default() };
        wire::encode(Command::Subscribe, &req).unwrap()
    }

    /// `subscribe(key)` with an unknown pair appended so that it is exactly `len` bytes.
    fn padded(key: &str, len: usize) -> Vec<u8> {
        let mut d = subscribe(key);
        let pad = len - d.len() - 2 - 3 - 2;
        d.extend_from_slice(&3u16.to_le_bytes());
        d.extend_from_slice(b"pad");
        d.extend_from_slice(&u16::try_from(pad).unwrap().to_le_bytes());
        d.resize(len, b'x');
        let datasize = u16::try_from(len - 4).unwrap().to_le_bytes();
        d[1..3].copy_from_slice(&datasize);
        d
    }

    /// One read takes more datagrams than a `recvmmsg` batch holds; a datagram of exactly
    /// `MAX_DATAGRAM` bytes fits its slot and is applied; a longer one is rejected as too
    /// large, not cut to its slot and applied.
    #[test]
    fn udp_reads_span_several_batches_and_keep_the_size_limit() {
        let mut driver = ServerDriver::bind(ServerConfig::new(), &["127.0.0.1:0".parse().unwrap()]).unwrap();
        let Endpoint::Udp(addr) = driver.local_endpoints()[0] else { panic!("not UDP") };
        let sender = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let n = UDP_BATCH * 2 + 5;
        let mut datagrams: Vec<Vec<u8>> = (0..n).map(|i| subscribe(&format!("k{i}.test"))).collect();
        datagrams.push(padded("full.test", wire::MAX_DATAGRAM));
        datagrams.push(padded("long.test", wire::MAX_DATAGRAM + 100));
        for d in &datagrams {
            sender.send_to(d, addr).unwrap();
        }
        // Loopback delivers during `send_to`; allow a moment anyway, bounded.
        let deadline = Instant::now() + Duration::from_secs(5);
        while driver.stats().datagrams_received < datagrams.len() as u64 && Instant::now() < deadline {
            driver.read_now(Instant::now()).unwrap();
        }
        assert_eq!(driver.stats().datagrams_received, datagrams.len() as u64);
        assert_eq!(driver.stats().datagrams_rejected, 1);
        assert_eq!(driver.core().stats().rejected.get("too_large"), Some(&1));
        assert_eq!(driver.core().pools().len(), n + 1);
        assert!(driver.core().pool(b"full.test").is_some());
        assert!(driver.core().pool(b"long.test").is_none());
        assert!(driver.udp_receive_buffer().is_some_and(|b| b > 0));
    }
}
