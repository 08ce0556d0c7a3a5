//! mio drivers: [`ServerDriver`] serves attach requests inside a host program's event
//! loop; [`attach`] / [`attach_all`] receive sockets with a deadline.
//!
//! The drivers are the only code here that reads the clock or touches a socket besides
//! the `scm` syscall module. Logs go through `tracing`.
#![allow(
    clippy::disallowed_methods,
    reason = "the driver is the one place that reads the clock (STYLE.md §3.5)"
)]

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Registry, Token};
use tracing::{debug, warn};

use crate::addr::ZergAddr;
use crate::client::{Attach, AttachError, AttachOptions, Step, validate};
use crate::listener::Listener;
use crate::scm;
use crate::server::{Action, ConfigError, ConnId, Event, ServerConfig, ZergServer};

/// Why a driver failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// An IO error of the listening socket or the poll.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The zerg socket could not be bound or prepared.
    #[error("cannot bind zerg server {addr}: {source}")]
    Bind {
        /// Where.
        addr: ZergAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The offer or the configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Owner and mode of a zerg server's socket file (ignored for abstract names, which have
/// none: spec §7). uWSGI leaves the mode to the umask; this crate sets it explicitly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketFile {
    /// Permission bits (default `0o600`: only the owner, who with root is the default
    /// allow-list, can connect).
    pub mode: u32,
    /// New owner uid, if any.
    pub uid: Option<u32>,
    /// New owner gid, if any.
    pub gid: Option<u32>,
}

impl Default for SocketFile {
    fn default() -> Self {
        Self { mode: 0o600, uid: None, gid: None }
    }
}

/// A zerg server on a unix socket, handing its offer of listening sockets to each
/// allowed peer. Register it in your `mio::Poll`; it reserves tokens
/// `token ..= token + max_connections` (the listener, then connections whose write
/// blocked, which in practice never happens for 14 bytes).
#[derive(Debug)]
pub struct ServerDriver {
    addr: ZergAddr,
    listener: UnixListener,
    core: ZergServer,
    offer: Vec<OwnedFd>,
    conns: BTreeMap<ConnId, Conn>,
    slots: Vec<Option<ConnId>>,
    base: Option<Token>,
    inode: Option<(u64, u64)>,
    last_now: Option<Instant>,
    /// The last accept batch ran out before `WouldBlock`: connections may be waiting
    /// that no new readiness edge will announce (STYLE.md §3.5 rule 4), so
    /// [`ServerDriver::timeout`] answers zero and [`ServerDriver::handle_timeout`]
    /// accepts again.
    still_readable: bool,
}

/// Most connections accepted per wake-up, so one busy zerg socket cannot starve the rest
/// of the host's loop.
const ACCEPT_BATCH: usize = 1024;

#[derive(Debug)]
struct Conn {
    stream: UnixStream,
    /// The send that hit `WouldBlock`, retried when writable.
    blocked: Option<Action>,
    slot: Option<usize>,
}

impl ServerDriver {
    /// Binds `addr` (removing a stale socket file, refusing a live one), sets the file's
    /// mode and owner, and offers `offer` (dup them if the program keeps using them).
    /// Warns when the name is abstract and the allow-list was not set explicitly.
    pub fn bind(
        addr: &ZergAddr,
        config: ServerConfig,
        file: SocketFile,
        offer: Vec<OwnedFd>,
    ) -> Result<Self, DriverError> {
        let core = ZergServer::new(config, offer.len())?;
        let bind_err = |source| DriverError::Bind { addr: addr.clone(), source };
        if let Some(path) = addr.path() {
            crate::listener::remove_stale_socket(path).map_err(bind_err)?;
        }
        let sa = addr.to_socket_addr().map_err(bind_err)?;
        let std_listener = std::os::unix::net::UnixListener::bind_addr(&sa).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let mut inode = None;
        if let Some(path) = addr.path() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(file.mode)).map_err(bind_err)?;
            if file.uid.is_some() || file.gid.is_some() {
                std::os::unix::fs::chown(path, file.uid, file.gid).map_err(bind_err)?;
            }
            let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
            inode = Some((meta.dev(), meta.ino()));
        }
        if addr.is_abstract() && !core.config().policy.is_explicit() {
            warn!(
                %addr,
                "zerg server on an abstract name: no file permissions protect it, anyone in this network \
                 namespace can connect; only the default peer check (own uid and root) stands in the way \
                 (set an explicit allow-list to silence this)"
            );
        }
        Ok(Self {
            addr: addr.clone(),
            listener: UnixListener::from_std(std_listener),
            core,
            offer,
            conns: BTreeMap::new(),
            slots: Vec::new(),
            base: None,
            inode,
            last_now: None,
            still_readable: false,
        })
    }

    /// The default configuration for this process: allow its own uid and root.
    #[must_use]
    pub fn default_config() -> ServerConfig {
        ServerConfig::new(crate::server::PeerPolicy::owner_and_root(scm::current_uid()))
    }

    /// Where it listens.
    #[must_use]
    pub fn addr(&self) -> &ZergAddr {
        &self.addr
    }

    /// Replaces the offer (the next peers get the new list).
    pub fn set_offer(&mut self, offer: Vec<OwnedFd>) -> Result<(), DriverError> {
        self.core.set_offer(offer.len())?;
        self.offer = offer;
        Ok(())
    }

    /// Registers the listener with `token` (see the type's docs for the token range).
    pub fn register(&mut self, registry: &Registry, token: Token) -> Result<(), DriverError> {
        registry.register(&mut self.listener, token, Interest::READABLE)?;
        self.base = Some(token);
        self.slots = vec![None; self.core.config().max_connections];
        Ok(())
    }

    /// Handles a readiness event for one of this driver's tokens (others are ignored).
    pub fn handle_ready(
        &mut self,
        registry: &Registry,
        event: &mio::event::Event,
        now: Instant,
    ) -> Result<(), DriverError> {
        let Some(base) = self.base else { return Ok(()) };
        let token = event.token();
        if token == base {
            self.accept_all(registry, now);
        } else if let Some(slot) = token.0.checked_sub(base.0 + 1)
            && let Some(Some(conn)) = self.slots.get(slot).copied()
            && let Some(state) = self.conns.get_mut(&conn)
            && let Some(action) = state.blocked.take()
        {
            self.execute(registry, now, action);
            self.drain(registry, now);
        }
        Ok(())
    }

    /// Fires the core's timers (closes connections past their send deadline), and
    /// accepts the connections a capped accept batch left waiting. Early or repeated
    /// calls are harmless.
    pub fn handle_timeout(&mut self, registry: &Registry, now: Instant) {
        let now = self.clamp(now);
        self.core.handle_timeout(now);
        self.drain(registry, now);
        if self.still_readable && self.base.is_some() {
            self.accept_all(registry, now);
        }
    }

    /// How long the host loop may sleep before [`ServerDriver::handle_timeout`]: the
    /// earliest send deadline, or zero while connections wait to be accepted.
    #[must_use]
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        if self.still_readable {
            return Some(Duration::ZERO);
        }
        self.core.poll_timeout().map(|t| t.saturating_duration_since(now))
    }

    /// The next event (served, refused, failed), for logs and metrics.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.poll_event()
    }

    /// The core, for its stats and configuration.
    #[must_use]
    pub fn core(&self) -> &ZergServer {
        &self.core
    }

    fn clamp(&mut self, now: Instant) -> Instant {
        let now = self.last_now.map_or(now, |l| l.max(now));
        self.last_now = Some(now);
        now
    }

    /// Accepts until `WouldBlock` or the batch runs out; accept errors are logged, never
    /// fatal (the listener stays registered).
    fn accept_all(&mut self, registry: &Registry, now: Instant) {
        let now = self.clamp(now);
        // Bounded: at most one batch per wake-up. Readiness is edge-triggered, so a batch
        // that runs out before `WouldBlock` sets `still_readable` and the rest is taken
        // from `handle_timeout` (which `timeout` schedules at once).
        self.still_readable = false;
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let peer = match scm::peer_cred(stream.as_fd()) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            debug!("SO_PEERCRED failed on a zerg connection: {e}");
                            None
                        }
                    };
                    let conn = self.core.handle_accept(now, peer);
                    self.conns.insert(conn, Conn { stream, blocked: None, slot: None });
                    self.drain(registry, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        rustix::io::Errno::from_io_error(&e),
                        Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)
                    ) =>
                {
                    warn!("zerg server {}: out of file descriptors: {e}", self.addr);
                    return;
                }
                Err(e) => {
                    debug!("zerg server {}: accept failed: {e}", self.addr);
                    return;
                }
            }
        }
        self.still_readable = true;
    }

    fn drain(&mut self, registry: &Registry, now: Instant) {
        // Bounded by the actions the core queued (each send/close is finite).
        while let Some(action) = self.core.poll_action() {
            self.execute(registry, now, action);
        }
    }

    fn execute(&mut self, registry: &Registry, now: Instant, action: Action) {
        match action {
            Action::Send { conn, data, attach_fds } => {
                let Some(state) = self.conns.get_mut(&conn) else { return };
                let fds: Vec<BorrowedFd<'_>> =
                    if attach_fds { self.offer.iter().map(AsFd::as_fd).collect() } else { Vec::new() };
                let result = loop {
                    match scm::send_with_fds(state.stream.as_fd(), data.bytes(), &fds) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        r => break r,
                    }
                };
                match result {
                    Ok(n) => self.core.handle_sent(now, conn, n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        state.blocked = Some(Action::Send { conn, data, attach_fds });
                        if state.slot.is_none() {
                            let base = self.base.map_or(0, |t| t.0);
                            let free = self.slots.iter().position(Option::is_none);
                            match free {
                                Some(slot)
                                    if registry
                                        .register(
                                            &mut state.stream,
                                            Token(base + 1 + slot),
                                            Interest::WRITABLE,
                                        )
                                        .is_ok() =>
                                {
                                    self.slots[slot] = Some(conn);
                                    state.slot = Some(slot);
                                }
                                _ => self.core.handle_send_error(now, conn),
                            }
                        }
                    }
                    Err(e) => {
                        debug!("zerg server {}: sendmsg failed: {e}", self.addr);
                        self.core.handle_send_error(now, conn);
                    }
                }
            }
            Action::Close { conn } => {
                if let Some(mut state) = self.conns.remove(&conn)
                    && let Some(slot) = state.slot
                {
                    let _ = registry.deregister(&mut state.stream);
                    if let Some(s) = self.slots.get_mut(slot) {
                        *s = None;
                    }
                }
            }
        }
    }
}

impl Drop for ServerDriver {
    /// Removes the socket file if it is still the one this driver bound (uWSGI leaves a
    /// dead file behind).
    fn drop(&mut self) {
        if let (Some(path), Some(inode)) = (self.addr.path(), self.inode)
            && let Ok(meta) = std::fs::symlink_metadata(path)
            && (meta.dev(), meta.ino()) == inode
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Why attaching to one zerg server failed. Every fd received from it was closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachFailure {
    /// The server could not be reached (no such socket, refused, no permission).
    #[error("unable to connect to zerg server {addr}: {source}")]
    Connect {
        /// The server.
        addr: ZergAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading from it failed.
    #[error("zerg server {addr}: {source}")]
    Io {
        /// The server.
        addr: ZergAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It sent something that is not a usable hand-off.
    #[error("zerg server {addr}: {error}")]
    Protocol {
        /// The server.
        addr: ZergAddr,
        /// What was wrong.
        error: AttachError,
    },
}

/// Attaches to one zerg server: connect, receive the hand-off, check every fd, all
/// within `options.timeout`.
pub fn attach(addr: &ZergAddr, options: &AttachOptions) -> Result<Vec<Listener>, AttachFailure> {
    match attach_all(std::slice::from_ref(addr), options).pop() {
        Some((_, result)) => result,
        None => Err(AttachFailure::Io { addr: addr.clone(), source: io::Error::other("no result") }),
    }
}

enum Pending {
    /// Connect now, or again at this time (`EAGAIN`: the server's backlog is full).
    Connect(Instant),
    /// Connected; the hand-off is arriving.
    Receiving(UnixStream, Attach<OwnedFd>),
}

enum Progress {
    Wait(Attach<OwnedFd>),
    Done(crate::client::Handoff<OwnedFd>),
}

enum RecvError {
    Io(io::Error),
    Protocol(AttachError),
}

impl RecvError {
    fn with_addr(self, addr: &ZergAddr) -> AttachFailure {
        match self {
            Self::Io(source) => AttachFailure::Io { addr: addr.clone(), source },
            Self::Protocol(error) => AttachFailure::Protocol { addr: addr.clone(), error },
        }
    }
}

/// Reads until the socket would block or the hand-off is complete.
fn receive(stream: &UnixStream, mut attach: Attach<OwnedFd>, now: Instant) -> Result<Progress, RecvError> {
    // Bounded: each read takes at least one of the 14 bytes, or ends the exchange;
    // `Interrupted` is retried a bounded number of times.
    for _ in 0..64 {
        let mut buf = [0u8; crate::proto::HEADER_LEN];
        let want = attach.wants();
        match scm::recv_with_fds(stream.as_fd(), &mut buf[..want]) {
            Ok(r) => {
                let data = buf.get(..r.bytes).unwrap_or_default();
                match attach.handle_recv(now, data, r.fds, r.control_truncated) {
                    Ok(Step::NeedMore(a)) => attach = a,
                    Ok(Step::Done(h)) => return Ok(Progress::Done(h)),
                    Err(e) => return Err(RecvError::Protocol(e)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::Wait(attach)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RecvError::Io(e)),
        }
    }
    Err(RecvError::Io(io::Error::other("too many interrupted reads")))
}

/// Checks every received fd; any bad one fails the whole hand-off (all fds closed).
fn finish(addr: &ZergAddr, handoff: crate::client::Handoff<OwnedFd>) -> Result<Vec<Listener>, AttachFailure> {
    let mut out = Vec::with_capacity(handoff.fds.len());
    for (index, fd) in handoff.fds.into_iter().enumerate() {
        let info =
            scm::inspect(fd.as_fd()).map_err(|source| AttachFailure::Io { addr: addr.clone(), source })?;
        match validate(&info) {
            Ok(listen) => out.push(Listener { addr: listen, fd }),
            Err(reason) => {
                return Err(AttachFailure::Protocol {
                    addr: addr.clone(),
                    error: AttachError::Rejected { index, reason },
                });
            }
        }
    }
    Ok(out)
}

fn connect(addr: &ZergAddr) -> io::Result<UnixStream> {
    UnixStream::connect_addr(&addr.to_socket_addr()?)
}

/// Attaches to several zerg servers at once within one deadline; one result per server,
/// in order. The lists are kept apart (uWSGI concatenates them and can lose the end of
/// the list: spec §3.1).
#[must_use]
pub fn attach_all(
    addrs: &[ZergAddr],
    options: &AttachOptions,
) -> Vec<(ZergAddr, Result<Vec<Listener>, AttachFailure>)> {
    let start = Instant::now();
    let deadline = start + options.timeout;
    let mut results: Vec<Option<Result<Vec<Listener>, AttachFailure>>> = addrs.iter().map(|_| None).collect();
    let mut pending: BTreeMap<usize, Pending> =
        (0..addrs.len()).map(|i| (i, Pending::Connect(start))).collect();
    let mut poll = match Poll::new() {
        Ok(p) => Some(p),
        Err(e) => {
            for (i, addr) in addrs.iter().enumerate() {
                let source = io::Error::new(e.kind(), e.to_string());
                results[i] = Some(Err(AttachFailure::Io { addr: addr.clone(), source }));
            }
            None
        }
    };
    let mut events = Events::with_capacity(16);
    // Bounded in time: the loop ends at the deadline at the latest.
    while let Some(poll) = poll.as_mut() {
        let now = Instant::now();
        let due: Vec<usize> = pending
            .iter()
            .filter(|(_, p)| matches!(p, Pending::Connect(at) if *at <= now))
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            pending.remove(&i);
            let Some(addr) = addrs.get(i) else { continue };
            let mut stream = match connect(addr) {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    pending.insert(i, Pending::Connect(now + Duration::from_millis(10)));
                    continue;
                }
                Err(source) => {
                    results[i] = Some(Err(AttachFailure::Connect { addr: addr.clone(), source }));
                    continue;
                }
            };
            if let Err(source) = poll.registry().register(&mut stream, Token(i), Interest::READABLE) {
                results[i] = Some(Err(AttachFailure::Io { addr: addr.clone(), source }));
                continue;
            }
            match receive(&stream, Attach::new(start, options), now) {
                Ok(Progress::Wait(attach)) => {
                    pending.insert(i, Pending::Receiving(stream, attach));
                }
                Ok(Progress::Done(h)) => results[i] = Some(finish(addr, h)),
                Err(e) => results[i] = Some(Err(e.with_addr(addr))),
            }
        }
        if pending.is_empty() {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wake = pending
            .values()
            .filter_map(|p| if let Pending::Connect(at) = p { Some(*at) } else { None })
            .fold(deadline, Instant::min);
        match poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                for (i, _) in std::mem::take(&mut pending) {
                    if let Some(addr) = addrs.get(i) {
                        let source = io::Error::new(e.kind(), e.to_string());
                        results[i] = Some(Err(AttachFailure::Io { addr: addr.clone(), source }));
                    }
                }
                break;
            }
        }
        for event in &events {
            let i = event.token().0;
            let Some(addr) = addrs.get(i) else { continue };
            if let Some(Pending::Receiving(stream, attach)) = pending.remove(&i) {
                match receive(&stream, attach, Instant::now()) {
                    Ok(Progress::Wait(attach)) => {
                        pending.insert(i, Pending::Receiving(stream, attach));
                    }
                    Ok(Progress::Done(h)) => results[i] = Some(finish(addr, h)),
                    Err(e) => results[i] = Some(Err(e.with_addr(addr))),
                }
            }
        }
    }
    // Whatever is still pending ran out of time (its fds close as `pending` drops).
    addrs
        .iter()
        .zip(results)
        .map(|(a, r)| {
            let r = r.unwrap_or_else(|| {
                Err(AttachFailure::Protocol { addr: a.clone(), error: AttachError::TimedOut })
            });
            (a.clone(), r)
        })
        .collect()
}
