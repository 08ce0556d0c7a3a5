//! The sans-IO zerg server: which connections get the sockets, and what to write to them.
//!
//! Per connection (spec §10): `accepted → peer check → send 14 bytes (+ fds on the first
//! write) → close`. uWSGI checks nobody; [`ZergServer`] checks the peer's `SO_PEERCRED`
//! against a [`PeerPolicy`] (default: the server's own uid and root) and closes on anyone
//! else without a byte (spec §7). A connection that cannot be written within
//! [`ServerConfig::send_timeout`] is closed.
//!
//! The core never sees an fd: it knows how many sockets are on offer and tells the driver
//! to attach them ([`Action::Send`] with `attach_fds`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::proto::{HEADER_LEN, Header, MAX_FDS};

/// Credentials of a connected peer (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCred {
    /// The peer's pid when it connected.
    pub pid: u32,
    /// Its effective uid.
    pub uid: u32,
    /// Its effective gid.
    pub gid: u32,
}

/// Who may attach: an allow-list of uids and gids (a peer matching either is served).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    uids: BTreeSet<u32>,
    gids: BTreeSet<u32>,
    any: bool,
    explicit: bool,
}

impl PeerPolicy {
    /// The default: the server's own uid and root.
    #[must_use]
    pub fn owner_and_root(own_uid: u32) -> Self {
        Self { uids: [0, own_uid].into(), gids: BTreeSet::new(), any: false, explicit: false }
    }

    /// Everyone who can connect (uWSGI's behaviour). Only the socket file's permissions
    /// protect such a server, and abstract names have none (spec §7).
    #[must_use]
    pub fn anyone() -> Self {
        Self { uids: BTreeSet::new(), gids: BTreeSet::new(), any: true, explicit: true }
    }

    /// An explicit allow-list, empty to start with: add uids and gids to it.
    #[must_use]
    pub fn only() -> Self {
        Self { uids: BTreeSet::new(), gids: BTreeSet::new(), any: false, explicit: true }
    }

    /// Also allow this uid (makes the list explicit).
    #[must_use]
    pub fn allow_uid(mut self, uid: u32) -> Self {
        self.uids.insert(uid);
        self.explicit = true;
        self
    }

    /// Also allow members of this primary gid (makes the list explicit).
    #[must_use]
    pub fn allow_gid(mut self, gid: u32) -> Self {
        self.gids.insert(gid);
        self.explicit = true;
        self
    }

    /// Whether the list was set by the user rather than defaulted (a server on an
    /// abstract name warns when it was not).
    #[must_use]
    pub fn is_explicit(&self) -> bool {
        self.explicit
    }

    /// Whether everyone is allowed.
    #[must_use]
    pub fn allows_anyone(&self) -> bool {
        self.any
    }

    /// Whether this peer may attach. Unknown credentials are only allowed by
    /// [`PeerPolicy::anyone`].
    #[must_use]
    pub fn permits(&self, peer: Option<&PeerCred>) -> bool {
        if self.any {
            return true;
        }
        peer.is_some_and(|p| self.uids.contains(&p.uid) || self.gids.contains(&p.gid))
    }
}

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Who may attach.
    pub policy: PeerPolicy,
    /// How long a connection may take to accept the 14 bytes before it is closed
    /// (default 5 s; uWSGI has none).
    pub send_timeout: Duration,
    /// Connections in flight at once (default 64); more are closed at once and counted.
    pub max_connections: usize,
}

impl ServerConfig {
    /// Defaults with the given policy.
    #[must_use]
    pub fn new(policy: PeerPolicy) -> Self {
        Self { policy, send_timeout: Duration::from_secs(5), max_connections: 64 }
    }
}

/// Why a server cannot be configured.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// More sockets than one `SCM_RIGHTS` message carries (uWSGI fails at each attach).
    #[error("{0} sockets on offer: one hand-off carries at most {MAX_FDS}")]
    TooManyFds(usize),
    /// `max_connections` is zero.
    #[error("max_connections must be at least 1")]
    NoConnections,
}

/// One accepted connection, named by the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Bytes to write on a connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    buf: [u8; HEADER_LEN],
    start: usize,
}

impl Chunk {
    /// The bytes.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chunk({} bytes)", self.bytes().len())
    }
}

/// A side effect for the driver. Exhaustive on purpose: a driver must handle each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `data` with one `sendmsg`; with `attach_fds`, attach every socket on offer
    /// as one `SCM_RIGHTS` message (only ever on the first write). Report the result with
    /// [`ZergServer::handle_sent`] or [`ZergServer::handle_send_error`]; on `WouldBlock`,
    /// retry the same action when the connection is writable.
    Send {
        /// The connection.
        conn: ConnId,
        /// What to write.
        data: Chunk,
        /// Whether to attach the fds.
        attach_fds: bool,
    },
    /// Close the connection and forget it.
    Close {
        /// The connection.
        conn: ConnId,
    },
}

/// Why a connection was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The peer is not on the allow-list.
    NotAllowed,
    /// `SO_PEERCRED` was not available and the policy needs it.
    NoCredentials,
    /// `max_connections` connections were already in flight.
    Busy,
}

/// Why a hand-off did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The peer did not take the bytes within `send_timeout`.
    TimedOut,
    /// `sendmsg` failed (the peer went away: `EPIPE`, `ECONNRESET`, ...).
    SendFailed,
}

/// What happened, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A peer got the sockets.
    Served {
        /// The connection.
        conn: ConnId,
        /// Its credentials.
        peer: Option<PeerCred>,
        /// How many fds it got.
        fds: usize,
    },
    /// A peer was closed on without a byte.
    Refused {
        /// The connection.
        conn: ConnId,
        /// Its credentials.
        peer: Option<PeerCred>,
        /// Why.
        reason: Refusal,
    },
    /// A hand-off started and did not finish.
    Failed {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: Failure,
    },
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Hand-offs completed.
    pub served: u64,
    /// Connections refused.
    pub refused: u64,
    /// Hand-offs that failed.
    pub failed: u64,
}

#[derive(Debug)]
struct Conn {
    peer: Option<PeerCred>,
    header: Header,
    sent: usize,
    deadline: Instant,
}

/// The zerg server core. See the [module docs](self).
#[derive(Debug)]
pub struct ZergServer {
    config: ServerConfig,
    offer: usize,
    conns: BTreeMap<ConnId, Conn>,
    timers: BTreeSet<(Instant, ConnId)>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    next_id: u64,
    last_now: Option<Instant>,
    stats: Stats,
}

/// Cap of the event queue; the oldest event is dropped beyond it.
const EVENT_CAP: usize = 1024;

impl ZergServer {
    /// A server offering `offer` sockets.
    pub fn new(config: ServerConfig, offer: usize) -> Result<Self, ConfigError> {
        if config.max_connections == 0 {
            return Err(ConfigError::NoConnections);
        }
        check_offer(offer)?;
        Ok(Self {
            config,
            offer,
            conns: BTreeMap::new(),
            timers: BTreeSet::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 0,
            last_now: None,
            stats: Stats::default(),
        })
    }

    /// Changes the number of sockets on offer; connections already being served keep the
    /// count they were told.
    pub fn set_offer(&mut self, offer: usize) -> Result<(), ConfigError> {
        check_offer(offer)?;
        self.offer = offer;
        Ok(())
    }

    /// The number of sockets on offer.
    #[must_use]
    pub fn offer(&self) -> usize {
        self.offer
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Connections in flight.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// A connection was accepted; `peer` is its `SO_PEERCRED` (`None` if unavailable).
    /// Queues either the hand-off or a close.
    pub fn handle_accept(&mut self, now: Instant, peer: Option<PeerCred>) -> ConnId {
        let now = self.clock(now);
        let conn = ConnId(self.next_id);
        self.next_id += 1;
        let refusal = if self.conns.len() >= self.config.max_connections {
            Some(Refusal::Busy)
        } else if self.config.policy.permits(peer.as_ref()) {
            None
        } else if peer.is_none() {
            Some(Refusal::NoCredentials)
        } else {
            Some(Refusal::NotAllowed)
        };
        if let Some(reason) = refusal {
            self.stats.refused += 1;
            self.actions.push_back(Action::Close { conn });
            self.emit(Event::Refused { conn, peer, reason });
            return conn;
        }
        let deadline = now + self.config.send_timeout;
        let header = self.header();
        self.conns.insert(conn, Conn { peer, header, sent: 0, deadline });
        self.timers.insert((deadline, conn));
        let data = Chunk { buf: header.encode(), start: 0 };
        self.actions.push_back(Action::Send { conn, data, attach_fds: true });
        conn
    }

    /// `sendmsg` wrote `written` bytes (and the fds, if they were attached). Queues the
    /// rest of the bytes, or the close once all 14 are out.
    pub fn handle_sent(&mut self, now: Instant, conn: ConnId, written: usize) {
        self.clock(now);
        let Some(state) = self.conns.get_mut(&conn) else { return };
        state.sent = state.sent.saturating_add(written).min(HEADER_LEN);
        if state.sent < HEADER_LEN {
            // The rest of the header this peer was promised (the offer may have changed).
            let data = Chunk { buf: state.header.encode(), start: state.sent };
            self.actions.push_back(Action::Send { conn, data, attach_fds: false });
            return;
        }
        let (peer, fds) = (state.peer, state.header.count);
        self.forget(conn);
        self.stats.served += 1;
        self.actions.push_back(Action::Close { conn });
        self.emit(Event::Served { conn, peer, fds });
    }

    /// `sendmsg` failed with something other than `WouldBlock`/`Interrupted`.
    pub fn handle_send_error(&mut self, now: Instant, conn: ConnId) {
        self.clock(now);
        if self.forget(conn) {
            self.fail(conn, Failure::SendFailed);
        }
    }

    /// Closes connections whose deadline passed. Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        while let Some(&(deadline, conn)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.forget(conn);
            self.fail(conn, Failure::TimedOut);
        }
    }

    /// The next side effect.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest send deadline. Changes after `handle_accept`, `handle_sent`,
    /// `handle_send_error` and `handle_timeout`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(t, _)| t)
    }

    fn header(&self) -> Header {
        // `offer <= MAX_FDS` is checked wherever it is set.
        Header { count: self.offer }
    }

    fn forget(&mut self, conn: ConnId) -> bool {
        match self.conns.remove(&conn) {
            Some(state) => {
                self.timers.remove(&(state.deadline, conn));
                true
            }
            None => false,
        }
    }

    fn fail(&mut self, conn: ConnId, reason: Failure) {
        self.stats.failed += 1;
        self.actions.push_back(Action::Close { conn });
        self.emit(Event::Failed { conn, reason });
    }

    fn emit(&mut self, event: Event) {
        if self.events.len() >= EVENT_CAP {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn clock(&mut self, now: Instant) -> Instant {
        let now = match self.last_now {
            Some(last) if now < last => {
                debug_assert!(now >= last, "time went backwards");
                last
            }
            _ => now,
        };
        self.last_now = Some(now);
        now
    }
}

fn check_offer(offer: usize) -> Result<(), ConfigError> {
    if offer > MAX_FDS {
        return Err(ConfigError::TooManyFds(offer));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "a base Instant for virtual time; nothing depends on its value")]
mod tests {
    use super::*;

    fn drain(server: &mut ZergServer) -> Vec<Action> {
        std::iter::from_fn(|| server.poll_action()).collect()
    }

    #[test]
    fn serves_an_allowed_peer_in_one_write() {
        let now = Instant::now();
        let mut s = ZergServer::new(ServerConfig::new(PeerPolicy::owner_and_root(1000)), 3).expect("config");
        let peer = PeerCred { pid: 7, uid: 1000, gid: 1000 };
        let conn = s.handle_accept(now, Some(peer));
        let actions = drain(&mut s);
        let [Action::Send { data, attach_fds: true, .. }] = actions.as_slice() else {
            panic!("expected one send, got {actions:?}")
        };
        assert_eq!(data.bytes(), b"uwsgi-zerg\x03\x00\x00\x00");
        s.handle_sent(now, conn, 14);
        assert_eq!(drain(&mut s), [Action::Close { conn }]);
        assert_eq!(s.poll_event(), Some(Event::Served { conn, peer: Some(peer), fds: 3 }));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn short_writes_continue_without_fds() {
        let now = Instant::now();
        let mut s = ZergServer::new(ServerConfig::new(PeerPolicy::anyone()), 1).expect("config");
        let conn = s.handle_accept(now, None);
        drain(&mut s);
        s.handle_sent(now, conn, 4);
        let actions = drain(&mut s);
        let [Action::Send { data, attach_fds: false, .. }] = actions.as_slice() else {
            panic!("expected the rest, got {actions:?}")
        };
        assert_eq!(data.bytes(), b"i-zerg\x01\x00\x00\x00");
    }

    #[test]
    fn refuses_strangers_and_unknown_peers_and_times_out() {
        let now = Instant::now();
        let mut s = ZergServer::new(ServerConfig::new(PeerPolicy::owner_and_root(1000)), 1).expect("config");
        let stranger = s.handle_accept(now, Some(PeerCred { pid: 1, uid: 65534, gid: 65534 }));
        assert_eq!(drain(&mut s), [Action::Close { conn: stranger }]);
        let unknown = s.handle_accept(now, None);
        assert_eq!(drain(&mut s), [Action::Close { conn: unknown }]);
        let root = s.handle_accept(now, Some(PeerCred { pid: 1, uid: 0, gid: 0 }));
        drain(&mut s);
        s.handle_timeout(now + Duration::from_secs(4));
        assert!(drain(&mut s).is_empty());
        s.handle_timeout(now + Duration::from_secs(5));
        assert_eq!(drain(&mut s), [Action::Close { conn: root }]);
        let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert_eq!(events.len(), 3);
        assert_eq!(s.stats(), Stats { served: 0, refused: 2, failed: 1 });
        assert!(ZergServer::new(ServerConfig::new(PeerPolicy::anyone()), 254).is_err());
    }

    #[test]
    fn group_allow_list() {
        let p = PeerPolicy::only().allow_gid(33);
        assert!(p.permits(Some(&PeerCred { pid: 1, uid: 5, gid: 33 })));
        assert!(!p.permits(Some(&PeerCred { pid: 1, uid: 0, gid: 0 })));
        assert!(p.is_explicit() && !PeerPolicy::owner_and_root(0).is_explicit());
    }
}
