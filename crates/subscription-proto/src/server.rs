//! The sans-IO subscription server: the key → nodes table of a uWSGI router (spec §2).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::files::Files;
use crate::sign::{Digest, Verifier};
use crate::wire::{self, Mode};
use crate::{Command, Endpoint, Request};

/// A balancing algorithm (spec §2.7, plus two beyond uWSGI).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// uWSGI's weighted round robin (the default), credit by credit as 2.0.21 does it:
    /// weights 3 and 2 give 1:1, because credits are `weight / min_weight` in integers.
    #[default]
    Wrr,
    /// uWSGI's least reference count.
    Lrc,
    /// uWSGI's weighted least reference count.
    Wlrc,
    /// uWSGI 2.1's client IP hash.
    IpHash,
    /// Beyond uWSGI: nginx's smooth weighted round robin (exact proportions, interleaved).
    SmoothWrr,
    /// Beyond uWSGI: consistent hashing of the client IP on a ketama ring (160 points per
    /// unit of weight), so a client keeps its node when others come and go.
    Ketama,
}

impl Algorithm {
    /// The name used in options and the `algo` key: `wrr`, `lrc`, `wlrc`, `iphash`,
    /// `swrr`, `ketama`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Wrr => "wrr",
            Self::Lrc => "lrc",
            Self::Wlrc => "wlrc",
            Self::IpHash => "iphash",
            Self::SmoothWrr => "swrr",
            Self::Ketama => "ketama",
        }
    }

    /// Reads a name; `None` for an unknown one (uWSGI silently uses wrr then).
    pub fn from_name(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"wrr" => Self::Wrr,
            b"lrc" => Self::Lrc,
            b"wlrc" => Self::Wlrc,
            b"iphash" => Self::IpHash,
            b"swrr" => Self::SmoothWrr,
            b"ketama" => Self::Ketama,
            _ => return None,
        })
    }
}

/// How strictly signed subscriptions are checked (spec §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Security {
    /// Exactly uWSGI 2.0.21's checks, holes included: refreshes replayed within the
    /// tolerance are accepted, an unsubscribe carries no time check, a captured subscribe
    /// with its (unsigned) header flipped unsubscribes, far-future stamps pass.
    Compat,
    /// Recommended. Every accepted signed packet must carry a stamp newer than the last
    /// one accepted for that node (refreshes and unsubscribes alike), so replays and header
    /// flips fail; unsubscribes need a signed, fresh stamp; stamps more than
    /// `max_future` ahead are refused. Stays compatible with uWSGI subscribers, whose
    /// stamps are `now + command`.
    #[default]
    Strict,
}

/// Signature checking: `--subscriptions-sign-check DIGEST:DIR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignCheck {
    /// The digest both sides use (not carried in the packet).
    pub digest: Digest,
    /// Where `<sanitized key>.pem` public keys are.
    pub dir: PathBuf,
    /// `--subscriptions-sign-check-tolerance`: how old a stamp may be (default 24 h).
    pub tolerance: Duration,
    /// Strict mode only: how far in the future a stamp may be (default 5 min).
    pub max_future: Duration,
}

impl SignCheck {
    /// A check with `digest` and keys in `dir`, uWSGI's 24 h tolerance and a 5 min future
    /// bound (strict mode).
    pub fn new(digest: Digest, dir: impl Into<PathBuf>) -> Self {
        Self {
            digest,
            dir: dir.into(),
            tolerance: Duration::from_secs(86_400),
            max_future: Duration::from_secs(300),
        }
    }
}

/// Configuration of a [`SubscriptionServer`]. Defaults are uWSGI 2.0.21's.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub(crate) algorithm: Algorithm,
    pub(crate) tolerance: Duration,
    pub(crate) tolerance_inactive: Duration,
    pub(crate) mode: Mode,
    pub(crate) security: Security,
    pub(crate) sign: Option<SignCheck>,
    pub(crate) use_credentials: bool,
    pub(crate) credentials_check: Vec<Vec<u8>>,
    pub(crate) skip_uids: Vec<u32>,
    pub(crate) fallback_key: Option<Vec<u8>>,
    pub(crate) dotsplit: bool,
    pub(crate) mountpoints_depth: usize,
    pub(crate) require_vassal: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerConfig {
    /// uWSGI's defaults: wrr, tolerance 17 s, compat decoding, no signatures.
    pub fn new() -> Self {
        Self {
            algorithm: Algorithm::Wrr,
            tolerance: Duration::from_secs(17),
            tolerance_inactive: Duration::from_secs(17),
            mode: Mode::Compat,
            security: Security::Strict,
            sign: None,
            use_credentials: false,
            credentials_check: Vec::new(),
            skip_uids: Vec::new(),
            fallback_key: None,
            dotsplit: false,
            mountpoints_depth: 0,
            require_vassal: false,
        }
    }

    /// Default balancing algorithm (`--subscription-algo`); a pool created by a request
    /// with an `algo` key uses that one instead.
    #[must_use]
    pub fn algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// `--subscription-tolerance`: a node not refreshed for longer is marked failed at its
    /// next lookup (default 17 s).
    #[must_use]
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// `--subscription-tolerance-inactive` (uWSGI 2.1): the same for nodes with a vassal and
    /// no address.
    #[must_use]
    pub fn tolerance_inactive(mut self, tolerance: Duration) -> Self {
        self.tolerance_inactive = tolerance;
        self
    }

    /// How datagrams are decoded: [`Mode::Compat`] (default; what 2.0.21 accepts) or
    /// [`Mode::Strict`].
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// How signed subscriptions are checked (default [`Security::Strict`]).
    #[must_use]
    pub fn security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// Require signatures (`--subscriptions-sign-check`).
    #[must_use]
    pub fn sign_check(mut self, check: SignCheck) -> Self {
        self.sign = Some(check);
        self
    }

    /// `--subscriptions-use-credentials`: datagrams must come with the sender's
    /// `SCM_CREDENTIALS` (unix sockets); those without are dropped.
    #[must_use]
    pub fn use_credentials(mut self, on: bool) -> Self {
        self.use_credentials = on;
        self
    }

    /// `--subscriptions-credentials-check PREFIX` (repeatable): a subscribe is accepted only
    /// if `PREFIX` + key exists and is owned by the sender's uid and gid.
    #[must_use]
    pub fn credentials_check(mut self, prefix: impl Into<Vec<u8>>) -> Self {
        self.credentials_check.push(prefix.into());
        self
    }

    /// `--subscriptions-sign-skip-uid UID` (repeatable; uid > 0): a sender with that uid
    /// (known from credentials) bypasses signature and stamp checks.
    #[must_use]
    pub fn skip_uid(mut self, uid: u32) -> Self {
        if uid > 0 {
            self.skip_uids.push(uid);
        }
        self
    }

    /// `--fastrouter-subscription-fallback-key`: on a miss, look this key up once.
    #[must_use]
    pub fn fallback_key(mut self, key: Option<Vec<u8>>) -> Self {
        self.fallback_key = key;
        self
    }

    /// `--subscription-dotsplit`: on a miss, retry with the suffix from the next `.`
    /// (dot included), at most 5 lookups in all (spec §2.8).
    #[must_use]
    pub fn dotsplit(mut self, on: bool) -> Self {
        self.dotsplit = on;
        self
    }

    /// `--subscription-mountpoints N` (uWSGI 2.1): append up to N leading `PATH_INFO`
    /// segments to the host key (used by [`SubscriptionServer::pick_with_path`]).
    #[must_use]
    pub fn mountpoints_depth(mut self, depth: usize) -> Self {
        self.mountpoints_depth = depth;
        self
    }

    /// `--subscription-vassal-required` (uWSGI 2.1): drop subscriptions without `vassal`.
    #[must_use]
    pub fn require_vassal(mut self, on: bool) -> Self {
        self.require_vassal = on;
        self
    }
}

/// The sender's `SCM_CREDENTIALS` (unix datagram sockets), as the driver read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Credentials {
    /// Sender pid.
    pub pid: u32,
    /// Sender uid.
    pub uid: u32,
    /// Sender gid.
    pub gid: u32,
}

/// Why a datagram was dropped. The table is unchanged (except the rejection counters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// The datagram is not a valid subscription.
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// `use_credentials` is on and the datagram carried none.
    #[error("no SCM_CREDENTIALS with the datagram")]
    NoCredentials,
    /// The credentials check failed (file missing or owned by someone else).
    #[error("the credentials check refused the sender")]
    CredentialsRefused,
    /// A signature is required and missing, wrong, or its key file is missing.
    #[error("missing or invalid signature")]
    BadSignature,
    /// The stamp is older than the tolerance, or not newer than the node's last one
    /// (uWSGI logs these as "invalid (sniffed ?) packet").
    #[error("stale or replayed stamp {unix}")]
    Replayed {
        /// The stamp.
        unix: u64,
    },
    /// Strict security: the stamp is too far in the future.
    #[error("stamp {unix} is too far in the future")]
    FromTheFuture {
        /// The stamp.
        unix: u64,
    },
    /// `require_vassal` is on and the request has no `vassal`.
    #[error("no vassal in the request")]
    NoVassal,
    /// An unsubscribe for a node that is not in the table (ignored, as uWSGI does).
    #[error("unsubscribe for an unknown node")]
    UnknownNode,
}

impl DatagramError {
    /// A short stable label, for counting rejections.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Wire(e) => e.reason(),
            Self::NoCredentials => "no_credentials",
            Self::CredentialsRefused => "credentials_refused",
            Self::BadSignature => "bad_signature",
            Self::Replayed { .. } => "replayed",
            Self::FromTheFuture { .. } => "future",
            Self::NoVassal => "no_vassal",
            Self::UnknownNode => "unknown_node",
        }
    }
}

/// What changed in the table. Edge-triggered; refreshes are not reported.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A pool was created (uWSGI: `new pool: <key>`).
    PoolCreated {
        /// The key.
        key: Vec<u8>,
    },
    /// A node was added to a pool (uWSGI: `<key> => new node: <address>`).
    NodeAdded {
        /// The pool.
        key: Vec<u8>,
        /// The node's address.
        address: Vec<u8>,
    },
    /// A node was marked failed (uWSGI: `<key> => marking <address> as failed`).
    NodeFailed {
        /// The pool.
        key: Vec<u8>,
        /// The node's address.
        address: Vec<u8>,
        /// Why.
        reason: FailReason,
    },
    /// A node was removed from the table.
    NodeRemoved {
        /// The pool.
        key: Vec<u8>,
        /// The node's address.
        address: Vec<u8>,
    },
    /// A pool lost its last node and was removed.
    PoolRemoved {
        /// The key.
        key: Vec<u8>,
    },
}

/// Why a node was marked failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailReason {
    /// It unsubscribed.
    Unsubscribed,
    /// Not refreshed within the tolerance (seen at a lookup).
    Expired,
    /// A connection to it failed ([`Lease::mark_failed`]).
    ConnectFailed,
}

/// A datagram the server sends: only notify acknowledgements, to unix sockets (§1.7).
#[must_use]
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where.
    pub destination: Endpoint,
    /// What.
    pub payload: Bytes,
}

impl fmt::Debug for Transmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmit")
            .field("destination", &self.destination)
            .field("len", &self.payload.len())
            .finish()
    }
}

/// Counters a lease updates from wherever the request is proxied.
#[derive(Debug, Default)]
struct Shared {
    refs: AtomicU64,
    requests: AtomicU64,
    last_requests: AtomicU64,
    tx: AtomicU64,
    rx: AtomicU64,
    failed: AtomicBool,
}

/// A node of a pool.
#[derive(Clone, Debug)]
pub struct Node {
    address: Vec<u8>,
    /// [`fingerprint`] of `address`: finding a pool's node compares it first, without
    /// reading the address from the heap.
    address_hash: u64,
    modifier1: u8,
    modifier2: u8,
    last_check: Instant,
    last_check_unix: u64,
    cores: u64,
    load: u64,
    weight: u64,
    wrr: u64,
    current: i64,
    unix_check: u64,
    credentials: Credentials,
    notify: Option<Vec<u8>>,
    backup: u64,
    proto: u8,
    vassal: Option<Vec<u8>>,
    failcnt: u64,
    death_mark: bool,
    shared: Arc<Shared>,
}

impl Node {
    /// The address the router connects to.
    pub fn address(&self) -> &[u8] {
        &self.address
    }
    /// `modifier1` to write into forwarded requests.
    pub fn modifier1(&self) -> u8 {
        self.modifier1
    }
    /// `modifier2` to write into forwarded requests.
    pub fn modifier2(&self) -> u8 {
        self.modifier2
    }
    /// Unix time (s) of the last subscribe or refresh.
    pub fn last_check_unix(&self) -> u64 {
        self.last_check_unix
    }
    /// `cores` as announced.
    pub fn cores(&self) -> u64 {
        self.cores
    }
    /// `load` as announced.
    pub fn load(&self) -> u64 {
        self.load
    }
    /// The balancing weight (at least 1).
    pub fn weight(&self) -> u64 {
        self.weight
    }
    /// The wrr credit left.
    pub fn wrr(&self) -> u64 {
        self.wrr
    }
    /// Leases alive (uWSGI's `ref`).
    pub fn refs(&self) -> u64 {
        self.shared.refs.load(Ordering::Relaxed)
    }
    /// Connections made to it.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }
    /// Connections since the last refresh.
    pub fn last_requests(&self) -> u64 {
        self.shared.last_requests.load(Ordering::Relaxed)
    }
    /// Bytes read from it.
    pub fn tx(&self) -> u64 {
        self.shared.tx.load(Ordering::Relaxed)
    }
    /// Bytes written to it.
    pub fn rx(&self) -> u64 {
        self.shared.rx.load(Ordering::Relaxed)
    }
    /// Times it was marked failed.
    pub fn failcnt(&self) -> u64 {
        self.failcnt
    }
    /// Whether it is marked failed (no longer picked).
    pub fn death_mark(&self) -> bool {
        self.death_mark
    }
    /// The creating packet's credentials (zero without credentials).
    pub fn credentials(&self) -> Credentials {
        self.credentials
    }
    /// The notify socket its creating request named, if any.
    pub fn notify(&self) -> Option<&[u8]> {
        self.notify.as_deref()
    }
    /// uWSGI 2.1 backup level.
    pub fn backup(&self) -> u64 {
        self.backup
    }
    /// uWSGI 2.1 protocol byte (`u` by default).
    pub fn proto(&self) -> u8 {
        self.proto
    }
    /// uWSGI 2.1 vassal name.
    pub fn vassal(&self) -> Option<&[u8]> {
        self.vassal.as_deref()
    }
    /// Whether this node is the one at `address` (whose [`fingerprint`] is `hash`).
    fn is(&self, address: &[u8], hash: u64) -> bool {
        self.address_hash == hash && self.address == address
    }
    fn alive(&self) -> bool {
        !self.death_mark
    }
    fn refs_now(&self) -> u64 {
        self.shared.refs.load(Ordering::Relaxed)
    }
}

/// A pool: the nodes of one key.
#[derive(Clone, Debug)]
pub struct Pool {
    key: Vec<u8>,
    hits: u64,
    algorithm: Algorithm,
    verifier: Option<Verifier>,
    nodes: Vec<Node>,
    created: u64,
    /// The ketama ring, with a fingerprint of the (address, weight, alive) list it was
    /// built from: rebuilt only when that changes.
    ring: Option<(u64, Vec<(u32, usize)>)>,
}

impl Pool {
    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
    /// uWSGI's bucket index for the key (its stats field `hash`).
    pub fn hash(&self) -> u32 {
        bucket(&self.key)
    }
    /// Lookups of this key.
    pub fn hits(&self) -> u64 {
        self.hits
    }
    /// The pool's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// The nodes, in insertion order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
}

/// uWSGI's `djb33x` over C `char`s as x86-64 has them (signed: bytes ≥ 0x80 are
/// sign-extended), spec §2.1.
pub fn djb33x(key: &[u8]) -> u32 {
    key.iter().fold(5381u32, |h, &b| h.wrapping_mul(33) ^ (b as i8 as i32 as u32))
}

/// uWSGI's bucket: `djb33x(key) % 65535` (not 65536).
pub fn bucket(key: &[u8]) -> u32 {
    djb33x(key) % 65535
}

/// A picked node. Holding it counts as a reference (uWSGI's `ref`); dropping it releases
/// the reference. Report what happened with [`Lease::connected`],
/// [`Lease::mark_failed`] and [`Lease::add_bytes`]; the counters are shared with the
/// table, so a lease may live on another thread.
#[derive(Debug)]
pub struct Lease {
    key: Vec<u8>,
    address: Vec<u8>,
    modifier1: u8,
    modifier2: u8,
    proto: u8,
    shared: Arc<Shared>,
}

impl Lease {
    /// The pool's key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
    /// Where to connect: `host:port` (TCP) or a unix path (`@name` = abstract).
    pub fn address(&self) -> &[u8] {
        &self.address
    }
    /// `modifier1` to write into the forwarded request.
    pub fn modifier1(&self) -> u8 {
        self.modifier1
    }
    /// `modifier2` to write into the forwarded request.
    pub fn modifier2(&self) -> u8 {
        self.modifier2
    }
    /// The node's protocol byte (`u` uwsgi, `h` http, …).
    pub fn proto(&self) -> u8 {
        self.proto
    }
    /// The connection to the node succeeded (`requests` and `last_requests` + 1).
    pub fn connected(&self) {
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        self.shared.last_requests.fetch_add(1, Ordering::Relaxed);
    }
    /// Bytes read from (`tx`) and written to (`rx`) the node.
    pub fn add_bytes(&self, tx: u64, rx: u64) {
        self.shared.tx.fetch_add(tx, Ordering::Relaxed);
        self.shared.rx.fetch_add(rx, Ordering::Relaxed);
    }
    /// The connection failed: the node is marked failed (and removed once unreferenced),
    /// as uWSGI does on a connect error (spec §2.6). Applied at the table's next lookup.
    pub fn mark_failed(&self) {
        self.shared.failed.store(true, Ordering::Relaxed);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.refs.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counters for monitoring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams given to the server.
    pub datagrams: u64,
    /// Subscribes and refreshes accepted.
    pub subscribes: u64,
    /// Unsubscribes applied.
    pub unsubscribes: u64,
    /// Rejected datagrams by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Lookups (`pick*` calls, each retry counted).
    pub lookups: u64,
    /// Lookups that found no node.
    pub misses: u64,
    /// Events dropped because the application did not drain them.
    pub events_dropped: u64,
}

const EVENT_QUEUE_CAP: usize = 65_536;

/// A 64-bit hash of a short byte string (FxHash's step on little-endian 8-byte words, the
/// length first): a node's address fingerprint. Fixed, not keyed: equal fingerprints are
/// told apart by comparing the addresses.
fn fingerprint(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let step = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    let mut h = step(0, bytes.len() as u64);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        h = step(h, u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = step(h, u64::from_le_bytes(word));
    }
    h
}

/// The subscription table of one router process.
///
/// Sans-IO: [`SubscriptionServer::handle_datagram`] takes each received datagram (and its
/// credentials, if the driver reads them), [`SubscriptionServer::pick`] chooses a node for
/// a request. There are no timers: as in uWSGI, liveness is checked lazily when a key is
/// looked up (spec §2.5), so [`SubscriptionServer::poll_timeout`] is always `None`.
pub struct SubscriptionServer {
    config: ServerConfig,
    files: Box<dyn Files + Send>,
    pools: BTreeMap<Vec<u8>, Pool>,
    next_pool: u64,
    start: Instant,
    wall_start: Duration,
    last_now: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl fmt::Debug for SubscriptionServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionServer")
            .field("config", &self.config)
            .field("pools", &self.pools.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SubscriptionServer {
    /// An empty table. `wall_clock` is the time since the Unix epoch at `now` (stamps of
    /// signed subscriptions are compared with it); `files` serves the key and credential
    /// look-ups ([`RealFiles`](crate::RealFiles) for the filesystem).
    pub fn new(
        config: ServerConfig,
        files: impl Files + Send + 'static,
        now: Instant,
        wall_clock: Duration,
    ) -> Self {
        Self {
            config,
            files: Box::new(files),
            pools: BTreeMap::new(),
            next_pool: 0,
            start: now,
            wall_start: wall_clock,
            last_now: now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    // ----- inputs ------------------------------------------------------------------------

    /// Processes one datagram received without credentials.
    ///
    /// # Errors
    /// [`DatagramError`] when it is dropped; the table is then unchanged.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> Result<(), DatagramError> {
        self.handle_datagram_with_credentials(now, datagram, None)
    }

    /// Processes one datagram with the sender's `SCM_CREDENTIALS`, if the driver read any.
    ///
    /// # Errors
    /// As [`SubscriptionServer::handle_datagram`].
    pub fn handle_datagram_with_credentials(
        &mut self,
        now: Instant,
        datagram: &[u8],
        credentials: Option<Credentials>,
    ) -> Result<(), DatagramError> {
        let now = self.clamp(now);
        self.stats.datagrams += 1;
        let result = self.accept(now, datagram, credentials);
        if let Err(e) = &result {
            *self.stats.rejected.entry(e.reason()).or_insert(0) += 1;
        }
        result
    }

    /// No timers: expiry is lazy. Provided for the common driving contract.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.clamp(now);
    }

    // ----- lookups -----------------------------------------------------------------------

    /// Picks a node for a request for `key`, from a client at `client` (the router's TCP
    /// peer; `iphash` and `ketama` need it). Applies the fallback key and dot-split rules
    /// (spec §2.8). The returned [`Lease`] holds a reference until dropped.
    pub fn pick(&mut self, now: Instant, key: &[u8], client: Option<IpAddr>) -> Option<Lease> {
        let now = self.clamp(now);
        if self.config.dotsplit {
            // "retry with the suffix starting at the next `.` including the dot, at most 5
            // lookups in total"; no fallback key in dot-split mode.
            let mut k = key;
            for _ in 0..5 {
                if let Some(lease) = self.lookup(now, k, client) {
                    return Some(lease);
                }
                let Some(dot) = k.iter().skip(1).position(|&b| b == b'.') else { break };
                k = &k[dot + 1..];
            }
            return None;
        }
        if let Some(lease) = self.lookup(now, key, client) {
            return Some(lease);
        }
        let fallback = self.config.fallback_key.clone()?;
        self.lookup(now, &fallback, client)
    }

    /// Like [`SubscriptionServer::pick`] with uWSGI 2.1 mountpoints: up to
    /// `mountpoints_depth` leading segments of `path_info` are appended to `host`
    /// (`host/foo`); on a miss the plain host is tried. `None` if `path_info` does not
    /// start with `/`.
    pub fn pick_with_path(
        &mut self,
        now: Instant,
        host: &[u8],
        path_info: &[u8],
        client: Option<IpAddr>,
    ) -> Option<Lease> {
        let depth = self.config.mountpoints_depth;
        if depth == 0 {
            return self.pick(now, host, client);
        }
        if path_info.first() != Some(&b'/') {
            return None;
        }
        let mut key = host.to_vec();
        let segments = path_info[1..].split(|&b| b == b'/').filter(|s| !s.is_empty()).take(depth);
        for s in segments {
            key.push(b'/');
            key.extend_from_slice(s);
        }
        if key.len() > host.len()
            && let Some(lease) = self.pick(now, &key, client)
        {
            return Some(lease);
        }
        self.pick(now, host, client)
    }

    // ----- outputs and getters -----------------------------------------------------------

    /// The next datagram to send (notify acknowledgements).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Always `None`: the table has no timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The pools, in uWSGI's stats order (bucket, then creation).
    pub fn pools(&self) -> Vec<&Pool> {
        let mut v: Vec<&Pool> = self.pools.values().collect();
        v.sort_by_key(|p| (p.hash(), p.created));
        v
    }

    /// One pool.
    pub fn pool(&self, key: &[u8]) -> Option<&Pool> {
        self.pools.get(key)
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    // ----- internals ---------------------------------------------------------------------

    fn clamp(&mut self, now: Instant) -> Instant {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    fn unix(&self, now: Instant) -> u64 {
        (self.wall_start + now.saturating_duration_since(self.start)).as_secs()
    }

    fn emit(&mut self, e: Event) {
        if self.events.len() >= EVENT_QUEUE_CAP {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    fn skipped(&self, credentials: Option<Credentials>) -> bool {
        credentials.is_some_and(|c| self.config.skip_uids.contains(&c.uid))
    }

    /// Spec §3.3 SIGN_OK: the signature only. Loads the pool's key on first use.
    fn sign_ok(&mut self, key: &[u8], decoded: &wire::Decoded, datagram: &[u8]) -> bool {
        let Some(check) = self.config.sign.clone() else { return true };
        let (Some(sig), Some(region)) = (decoded.request.sign.as_deref(), decoded.signed_region.clone())
        else {
            return false;
        };
        let Some(covered) = datagram.get(region).filter(|r| !r.is_empty()) else { return false };
        let cached = self.pools.get(key).and_then(|p| p.verifier.clone());
        let verifier = match cached {
            Some(v) => v,
            None => {
                let Some(v) = self.load_key(&check, key) else { return false };
                if let Some(p) = self.pools.get_mut(key) {
                    p.verifier = Some(v.clone());
                }
                v
            }
        };
        verifier.verify(covered, sig)
    }

    fn load_key(&mut self, check: &SignCheck, key: &[u8]) -> Option<Verifier> {
        let path = check.dir.join(crate::sign::pem_file_name(key));
        let pem = self.files.read(&path)?;
        Verifier::from_pem(check.digest, &pem).ok()
    }

    /// Spec §2.11: `stat(PREFIX + key)` must exist and be owned by the sender.
    fn credentials_ok(&mut self, key: &[u8], credentials: Option<Credentials>) -> bool {
        if self.config.credentials_check.is_empty() {
            return true;
        }
        let Some(c) = credentials else { return false };
        let prefixes = self.config.credentials_check.clone();
        prefixes.iter().any(|prefix| {
            let mut p = prefix.clone();
            p.extend_from_slice(key);
            let path = PathBuf::from(std::ffi::OsString::from(String::from_utf8_lossy(&p).into_owned()));
            self.files.owner(&path) == Some((c.uid, c.gid))
        })
    }

    fn accept(
        &mut self,
        now: Instant,
        datagram: &[u8],
        credentials: Option<Credentials>,
    ) -> Result<(), DatagramError> {
        if self.config.use_credentials && credentials.is_none() {
            return Err(DatagramError::NoCredentials);
        }
        let decoded = wire::decode(datagram, self.config.mode)?;
        if self.config.require_vassal && decoded.request.vassal.is_none() {
            return Err(DatagramError::NoVassal);
        }
        match decoded.command {
            Command::Subscribe => self.subscribe(now, &decoded, datagram, credentials),
            Command::Unsubscribe => self.unsubscribe(now, &decoded, datagram, credentials),
        }
    }

    /// Strict security: a stamp must not be far in the future.
    fn check_future(&self, now: Instant, unix: u64, skipped: bool) -> Result<(), DatagramError> {
        if let (Some(check), Security::Strict, false) = (&self.config.sign, self.config.security, skipped)
            && unix > self.unix(now) + check.max_future.as_secs()
        {
            return Err(DatagramError::FromTheFuture { unix });
        }
        Ok(())
    }

    /// Spec §2.3, in its exact order of checks.
    fn subscribe(
        &mut self,
        now: Instant,
        d: &wire::Decoded,
        datagram: &[u8],
        credentials: Option<Credentials>,
    ) -> Result<(), DatagramError> {
        let req = &d.request;
        let key: &[u8] = &req.key;
        let address_hash = fingerprint(&req.address);
        let skipped = self.skipped(credentials);
        let stamp = req.unix.unwrap_or(0);
        let signing = self.config.sign.is_some() && !skipped;
        let tolerance = self.config.sign.as_ref().map_or(Duration::ZERO, |c| c.tolerance).as_secs();
        let unix_now = self.unix(now);
        // An existing pool's checks; without signatures and credential checks there are
        // none, and a refresh looks its key up once.
        if (signing || !self.config.credentials_check.is_empty()) && self.pools.contains_key(key) {
            if signing && !self.sign_ok(key, d, datagram) {
                return Err(DatagramError::BadSignature);
            }
            if !self.credentials_ok(key, credentials) {
                return Err(DatagramError::CredentialsRefused);
            }
            if signing {
                self.check_future(now, stamp, skipped)?;
            }
        }
        let strict = self.config.security == Security::Strict;
        if let Some(pool) = self.pools.get_mut(key) {
            let has_key = pool.verifier.is_some();
            if let Some(idx) = pool.nodes.iter().position(|n| n.is(&req.address, address_hash)) {
                let node = &mut pool.nodes[idx];
                // Refresh: "req.unix <= node.unix_check → DROP" (uWSGI never updates
                // unix_check; strict mode does, so replays fail).
                if has_key && !skipped && stamp <= node.unix_check {
                    return Err(DatagramError::Replayed { unix: stamp });
                }
                // A connection failure reported since the last lookup happened first: uWSGI
                // applies it at once (marked, removed if unreferenced), so this refresh
                // finds the node either gone (and re-creates it) or marked (and revives it).
                let node = if node.shared.failed.swap(false, Ordering::Relaxed) {
                    let was_alive = node.alive();
                    node.failcnt += 1;
                    node.death_mark = true;
                    let unreferenced = node.refs_now() == 0;
                    let address = node.address.clone();
                    if was_alive {
                        self.emit(Event::NodeFailed {
                            key: key.to_vec(),
                            address: address.clone(),
                            reason: FailReason::ConnectFailed,
                        });
                    }
                    if unreferenced {
                        let Some(pool) = self.pools.get_mut(key) else { return Ok(()) };
                        pool.nodes.remove(idx);
                        let emptied = pool.nodes.is_empty();
                        let verifier = pool.verifier.clone();
                        self.emit(Event::NodeRemoved { key: key.to_vec(), address });
                        if emptied {
                            // The pool went with its last node: this subscribe creates it anew
                            // (new hits, new place in the stats order), as in uWSGI.
                            self.pools.remove(key);
                            self.emit(Event::PoolRemoved { key: key.to_vec() });
                            self.create_pool(req, verifier);
                            self.emit(Event::PoolCreated { key: key.to_vec() });
                        }
                        let node = new_node(req, now, unix_now, credentials);
                        if let Some(pool) = self.pools.get_mut(key) {
                            pool.nodes.push(node);
                        }
                        self.stats.subscribes += 1;
                        self.emit(Event::NodeAdded { key: key.to_vec(), address: req.address.clone() });
                        self.notify(key, req);
                        return Ok(());
                    }
                    let Some(pool) = self.pools.get_mut(key) else { return Ok(()) };
                    &mut pool.nodes[idx]
                } else {
                    node
                };
                if strict && has_key && !skipped {
                    node.unix_check = stamp;
                }
                node.death_mark = false;
                node.last_check = now;
                node.last_check_unix = unix_now;
                node.cores = req.cores;
                node.load = req.load;
                node.weight = req.weight.max(1);
                node.shared.last_requests.store(0, Ordering::Relaxed);
                self.stats.subscribes += 1;
                return Ok(());
            }
            // New node in an existing pool: "req.unix < now - sign_tolerance → DROP".
            if has_key && !skipped && stamp < unix_now.saturating_sub(tolerance) {
                return Err(DatagramError::Replayed { unix: stamp });
            }
            let node = new_node(req, now, unix_now, credentials);
            pool.nodes.push(node);
        } else {
            // New pool: NEW_SIGN_CTX (spec §3.3) then the credentials check.
            if signing {
                if req.sign.is_none() {
                    return Err(DatagramError::BadSignature);
                }
                if stamp < unix_now.saturating_sub(tolerance) {
                    return Err(DatagramError::Replayed { unix: stamp });
                }
                self.check_future(now, stamp, skipped)?;
                let Some(check) = self.config.sign.clone() else { return Ok(()) };
                let Some(verifier) = self.load_key(&check, key) else {
                    return Err(DatagramError::BadSignature);
                };
                let (Some(sig), Some(region)) = (req.sign.as_deref(), d.signed_region.clone()) else {
                    return Err(DatagramError::BadSignature);
                };
                if !datagram.get(region).is_some_and(|r| !r.is_empty() && verifier.verify(r, sig)) {
                    return Err(DatagramError::BadSignature);
                }
                if !self.credentials_ok(key, credentials) {
                    return Err(DatagramError::CredentialsRefused);
                }
                self.create_pool(req, Some(verifier));
            } else {
                if !self.credentials_ok(key, credentials) {
                    return Err(DatagramError::CredentialsRefused);
                }
                self.create_pool(req, None);
            }
            let node = new_node(req, now, unix_now, credentials);
            if let Some(pool) = self.pools.get_mut(key) {
                pool.nodes.push(node);
            }
            self.emit(Event::PoolCreated { key: key.to_vec() });
        }
        self.stats.subscribes += 1;
        self.emit(Event::NodeAdded { key: key.to_vec(), address: req.address.clone() });
        self.notify(key, req);
        Ok(())
    }

    /// Spec §1.7: the acknowledgement goes to `notify` (a unix datagram path) on a new
    /// node only.
    fn notify(&mut self, key: &[u8], req: &Request) {
        if let Some(path) = req.notify.as_ref().filter(|n| (1..=wire::MAX_NOTIFY).contains(&n.len())) {
            let destination = Endpoint::Unix(PathBuf::from(String::from_utf8_lossy(path).into_owned()));
            let payload = Bytes::from(wire::notify_ack(key, &req.address));
            self.transmits.push_back(Transmit { destination, payload });
        }
    }

    fn create_pool(&mut self, req: &Request, verifier: Option<Verifier>) {
        let algorithm = req.algo.as_deref().and_then(Algorithm::from_name).unwrap_or(self.config.algorithm);
        self.next_pool += 1;
        self.pools.insert(
            req.key.clone(),
            Pool {
                key: req.key.clone(),
                hits: 0,
                algorithm,
                verifier,
                nodes: Vec::new(),
                created: self.next_pool,
                ring: None,
            },
        );
    }

    /// Spec §2.4: only key and address matter. uWSGI checks the signature and nothing else;
    /// strict security also wants a stamp newer than the node's last accepted one.
    fn unsubscribe(
        &mut self,
        now: Instant,
        d: &wire::Decoded,
        datagram: &[u8],
        credentials: Option<Credentials>,
    ) -> Result<(), DatagramError> {
        let req = &d.request;
        let key: &[u8] = &req.key;
        let address_hash = fingerprint(&req.address);
        let skipped = self.skipped(credentials);
        let exists =
            self.pools.get(key).is_some_and(|p| p.nodes.iter().any(|n| n.is(&req.address, address_hash)));
        if !exists || req.address.is_empty() {
            return Err(DatagramError::UnknownNode);
        }
        let signing = self.config.sign.is_some() && !skipped;
        if signing && !self.sign_ok(key, d, datagram) {
            return Err(DatagramError::BadSignature);
        }
        let strict = self.config.security == Security::Strict && signing;
        let stamp = req.unix.unwrap_or(0);
        if strict {
            self.check_future(now, stamp, skipped)?;
        }
        let Some(pool) = self.pools.get_mut(key) else { return Err(DatagramError::UnknownNode) };
        let Some(i) = pool.nodes.iter().position(|n| n.is(&req.address, address_hash)) else {
            return Err(DatagramError::UnknownNode);
        };
        if strict {
            if stamp <= pool.nodes[i].unix_check {
                return Err(DatagramError::Replayed { unix: stamp });
            }
            pool.nodes[i].unix_check = stamp;
        }
        self.stats.unsubscribes += 1;
        let node = &mut pool.nodes[i];
        let was_alive = node.alive();
        node.failcnt += 1;
        node.death_mark = true;
        if was_alive {
            let address = node.address.clone();
            self.emit(Event::NodeFailed { key: key.to_vec(), address, reason: FailReason::Unsubscribed });
        }
        if self.pools.get(key).is_some_and(|p| p.nodes[i].refs_now() == 0) {
            self.remove_node(key, i);
        }
        Ok(())
    }

    fn remove_node(&mut self, key: &[u8], i: usize) {
        let Some(pool) = self.pools.get_mut(key) else { return };
        let node = pool.nodes.remove(i);
        let empty = pool.nodes.is_empty();
        self.emit(Event::NodeRemoved { key: key.to_vec(), address: node.address });
        if empty {
            self.pools.remove(key);
            self.emit(Event::PoolRemoved { key: key.to_vec() });
        }
    }

    /// Spec §2.5: LOOKUP(key), with lazy liveness, then the pool's algorithm.
    fn lookup(&mut self, now: Instant, key: &[u8], client: Option<IpAddr>) -> Option<Lease> {
        self.stats.lookups += 1;
        if key.len() > wire::MAX_KEY {
            self.stats.misses += 1;
            return None;
        }
        let Some(pool) = self.pools.get_mut(key) else {
            self.stats.misses += 1;
            return None;
        };
        pool.hits += 1;
        let algorithm = pool.algorithm;
        let (tolerance, tolerance_inactive) = (self.config.tolerance, self.config.tolerance_inactive);
        let mut events = Vec::new();
        // Failed connections first, on every node: uWSGI marks (and, unreferenced, removes)
        // the node as soon as the connect fails (spec §2.6), before the retry's lookup.
        let mut j = 0;
        while j < pool.nodes.len() {
            let n = &mut pool.nodes[j];
            if n.shared.failed.swap(false, Ordering::Relaxed) {
                if n.alive() {
                    events.push(Event::NodeFailed {
                        key: key.to_vec(),
                        address: n.address.clone(),
                        reason: FailReason::ConnectFailed,
                    });
                }
                n.failcnt += 1;
                n.death_mark = true;
                if n.refs_now() == 0 {
                    let gone = pool.nodes.remove(j);
                    events.push(Event::NodeRemoved { key: key.to_vec(), address: gone.address });
                    continue;
                }
            }
            j += 1;
        }
        let mut i = 0;
        let mut picked = None;
        while i < pool.nodes.len() {
            let n = &mut pool.nodes[i];
            let tol = if n.address.is_empty() { tolerance_inactive } else { tolerance };
            // "now - node.last_check > tolerance" (strictly greater); failcnt grows on
            // every lookup while the stale node survives.
            if now.saturating_duration_since(n.last_check) > tol {
                if n.alive() {
                    events.push(Event::NodeFailed {
                        key: key.to_vec(),
                        address: n.address.clone(),
                        reason: FailReason::Expired,
                    });
                }
                n.failcnt += 1;
                n.death_mark = true;
            }
            if n.death_mark && n.refs_now() == 0 {
                let gone = pool.nodes.remove(i);
                events.push(Event::NodeRemoved { key: key.to_vec(), address: gone.address });
                continue;
            }
            // wrr STEP1: any alive node with credit left (uWSGI tests no backup level here;
            // credits are only handed out at the level being served).
            if algorithm == Algorithm::Wrr && n.alive() && n.wrr > 0 {
                n.wrr -= 1;
                picked = Some(i);
                break;
            }
            i += 1;
        }
        if pool.nodes.is_empty() {
            self.pools.remove(key);
            events.push(Event::PoolRemoved { key: key.to_vec() });
            for e in events {
                self.emit(e);
            }
            self.stats.misses += 1;
            return None;
        }
        let picked = picked.or_else(|| step2(pool, algorithm, client));
        let lease = picked.map(|i| {
            let n = &pool.nodes[i];
            n.shared.refs.fetch_add(1, Ordering::Relaxed);
            Lease {
                key: key.to_vec(),
                address: n.address.clone(),
                modifier1: n.modifier1,
                modifier2: n.modifier2,
                proto: n.proto,
                shared: Arc::clone(&n.shared),
            }
        });
        for e in events {
            self.emit(e);
        }
        if lease.is_none() {
            self.stats.misses += 1;
        }
        lease
    }
}

fn new_node(req: &Request, now: Instant, unix_now: u64, credentials: Option<Credentials>) -> Node {
    Node {
        address: req.address.clone(),
        address_hash: fingerprint(&req.address),
        modifier1: req.modifier1,
        modifier2: req.modifier2,
        last_check: now,
        last_check_unix: unix_now,
        cores: req.cores,
        load: req.load,
        weight: req.weight.max(1),
        wrr: 0,
        current: 0,
        unix_check: req.unix.unwrap_or(0),
        credentials: credentials.unwrap_or_default(),
        notify: req.notify.clone(),
        backup: req.backup.unwrap_or(0),
        proto: req.proto.unwrap_or(b'u'),
        vassal: req.vassal.clone(),
        failcnt: 0,
        death_mark: false,
        shared: Arc::new(Shared::default()),
    }
}

/// The algorithms' second step, level by level (uWSGI 2.1 backup levels: level 0 first,
/// then the next higher level that has alive nodes).
fn step2(pool: &mut Pool, algorithm: Algorithm, client: Option<IpAddr>) -> Option<usize> {
    let mut level = 0u64;
    loop {
        let pick = match algorithm {
            Algorithm::Wrr => wrr_reset(pool, level),
            Algorithm::Lrc => least_refs(&pool.nodes, level, |n| n.refs_now() as f64),
            Algorithm::Wlrc => least_refs(&pool.nodes, level, |n| n.refs_now() as f64 / n.weight as f64),
            Algorithm::IpHash => return ip_hash(&pool.nodes, client),
            Algorithm::SmoothWrr => smooth_wrr(&mut pool.nodes, level),
            Algorithm::Ketama => return ketama(pool, client),
        };
        if pick.is_some() {
            return pick;
        }
        level = pool.nodes.iter().filter(|n| n.alive() && n.backup > level).map(|n| n.backup).min()?;
    }
}

/// Spec §2.7.1 STEP2: credits = weight / min weight (integers; min over all alive nodes),
/// then the LAST alive node is picked.
fn wrr_reset(pool: &mut Pool, level: u64) -> Option<usize> {
    let m = pool.nodes.iter().filter(|n| n.alive()).map(|n| n.weight).min()?;
    for n in pool.nodes.iter_mut().filter(|n| n.alive() && n.backup == level) {
        n.wrr = n.weight / m;
    }
    let chosen = pool.nodes.iter().rposition(|n| n.alive() && n.backup == level)?;
    let n = &mut pool.nodes[chosen];
    n.wrr = n.wrr.saturating_sub(1);
    Some(chosen)
}

/// Spec §2.7.2/§2.7.3: lrc and wlrc, with uWSGI's "min == 0 means unset" and break rule,
/// where `next` is the raw successor (it may be dead).
fn least_refs(nodes: &[Node], level: u64, r: impl Fn(&Node) -> f64) -> Option<usize> {
    let mut chosen = None;
    let mut min = 0.0f64;
    for (i, n) in nodes.iter().enumerate() {
        if !n.alive() || n.backup != level {
            continue;
        }
        let rn = r(n);
        if min == 0.0 || rn < min {
            min = rn;
            chosen = Some(i);
            let keep_walking = nodes
                .get(i + 1)
                .is_some_and(|next| r(next) <= rn && next.last_requests_now() <= n.last_requests_now());
            if min == 0.0 && !keep_walking {
                break;
            }
        }
    }
    chosen
}

impl Node {
    fn last_requests_now(&self) -> u64 {
        self.shared.last_requests.load(Ordering::Relaxed)
    }
}

/// Spec §2.7.4: IPv4 `s_addr % count` with `s_addr` read as x86-64 reads it (the address
/// bytes as a little-endian u32); IPv6 `djb33x(16 bytes) % count`; no client, no pick.
fn ip_hash(nodes: &[Node], client: Option<IpAddr>) -> Option<usize> {
    let alive: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].alive()).collect();
    if alive.is_empty() {
        return None;
    }
    let h = match client? {
        IpAddr::V4(a) => u32::from_le_bytes(a.octets()),
        IpAddr::V6(a) => djb33x(&a.octets()),
    };
    alive.get(h as usize % alive.len()).copied()
}

/// nginx's smooth weighted round robin: every alive node gains its weight, the one with
/// the most current weight is picked and pays the total back.
fn smooth_wrr(nodes: &mut [Node], level: u64) -> Option<usize> {
    let mut total = 0i64;
    let mut best: Option<(usize, i64)> = None;
    for (i, n) in nodes.iter_mut().enumerate() {
        if !n.alive() || n.backup != level {
            continue;
        }
        // Weights are u64 on the wire; cap them so the sums cannot overflow.
        let w = i64::try_from(n.weight.min(1 << 40)).unwrap_or(1);
        n.current += w;
        total += w;
        if best.is_none_or(|(_, c)| n.current > c) {
            best = Some((i, n.current));
        }
    }
    let (b, _) = best?;
    nodes[b].current -= total;
    Some(b)
}

/// Consistent hashing of the client IP on a ketama ring: 40 FNV-1a-hashed groups of 4
/// points per unit of weight (160 points), the first point clockwise from the client's
/// hash wins.
fn ketama(pool: &mut Pool, client: Option<IpAddr>) -> Option<usize> {
    let client = client?;
    // O(nodes) per pick to check the cached ring; the ring itself is rebuilt only when a
    // node comes, goes, dies or changes weight.
    let fingerprint = pool.nodes.iter().enumerate().fold(0xcbf2_9ce4_8422_2325u64, |h, (i, n)| {
        let mut h = (h ^ i as u64).wrapping_mul(0x0000_0100_0000_01b3);
        h = (h ^ fnv1a64(&n.address)).wrapping_mul(0x0000_0100_0000_01b3);
        h = (h ^ n.weight).wrapping_mul(0x0000_0100_0000_01b3);
        (h ^ u64::from(n.alive())).wrapping_mul(0x0000_0100_0000_01b3)
    });
    if pool.ring.as_ref().is_none_or(|(f, _)| *f != fingerprint) {
        let mut ring: Vec<(u32, usize)> = Vec::new();
        for (i, n) in pool.nodes.iter().enumerate().filter(|(_, n)| n.alive()) {
            let groups = 40 * n.weight.min(100);
            for g in 0..groups {
                let mut label = n.address.clone();
                label.extend_from_slice(format!("-{g}").as_bytes());
                let h = fnv1a64(&label);
                for k in 0..4 {
                    ring.push(((h >> (k * 16)) as u32 ^ (h >> 32) as u32, i));
                }
            }
        }
        ring.sort_unstable();
        pool.ring = Some((fingerprint, ring));
    }
    let ring = &pool.ring.as_ref()?.1;
    let first = ring.first()?;
    let h = match client {
        IpAddr::V4(a) => fnv1a64(&a.octets()) as u32,
        IpAddr::V6(a) => fnv1a64(&a.octets()) as u32,
    };
    let at = ring.partition_point(|(p, _)| *p < h);
    Some(ring.get(at).unwrap_or(first).1)
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "a base Instant for virtual time; nothing depends on its value")]
mod tests {
    use super::*;
    use crate::MemoryFiles;

    const WALL: Duration = Duration::from_secs(1_800_000_000);

    fn server(config: ServerConfig) -> (SubscriptionServer, Instant) {
        let t0 = Instant::now();
        (SubscriptionServer::new(config, MemoryFiles::new(), t0, WALL), t0)
    }

    fn sub(key: &str, address: &str, weight: u64) -> Vec<u8> {
        let req = Request { key: key.into(), address: address.into(), weight, ..Request::default() };
        wire::encode(Command::Subscribe, &req).unwrap()
    }

    fn unsub(key: &str, address: &str) -> Vec<u8> {
        let req = Request { key: key.into(), address: address.into(), ..Request::default() };
        wire::encode(Command::Unsubscribe, &req).unwrap()
    }

    /// The first letter of each picked address, `n` picks, each a request that connected
    /// and finished (the lease dropped at once), as the verified sequences were made.
    fn sequence(s: &mut SubscriptionServer, now: Instant, key: &str, n: usize) -> String {
        (0..n)
            .map(|_| {
                s.pick(now, key.as_bytes(), None).map_or('-', |l| {
                    l.connected();
                    char::from(l.address()[0])
                })
            })
            .collect()
    }

    #[test]
    fn wrr_reproduces_the_orders_recorded_on_uwsgi() {
        // Spec §2.7.1, verified with real requests.
        for (nodes, want) in [
            (&[("A", 3), ("B", 1)][..], "BAAABAAA"),
            (&[("A", 3), ("B", 1), ("C", 1)][..], "CAAAB"),
            (&[("A", 3), ("B", 2)][..], "BABA"),
        ] {
            let (mut s, t0) = server(ServerConfig::new());
            for (a, w) in nodes {
                s.handle_datagram(t0, &sub("k", a, *w)).unwrap();
            }
            assert_eq!(sequence(&mut s, t0, "k", want.len()), want, "{nodes:?}");
        }
    }

    #[test]
    fn lrc_and_wlrc_walk_forward_over_idle_nodes() {
        // Spec §2.7.2: three idle nodes give C B A C B A; with A busy, C B C B.
        for algorithm in [Algorithm::Lrc, Algorithm::Wlrc] {
            let (mut s, t0) = server(ServerConfig::new().algorithm(algorithm));
            for a in ["A", "B", "C"] {
                s.handle_datagram(t0, &sub("k", a, 1)).unwrap();
            }
            assert_eq!(sequence(&mut s, t0, "k", 6), "CBACBA", "{algorithm:?}");
            // Hold a lease on A (bounded search: each pick is a finished request).
            let busy = (0..10)
                .find_map(|_| {
                    let l = s.pick(t0, b"k", None)?;
                    l.connected();
                    (l.address() == b"A").then_some(l)
                })
                .expect("A is picked within 10 requests");
            // With a lease held on A the walk skips it.
            let seq = sequence(&mut s, t0, "k", 4);
            assert!(!seq.contains('A'), "{algorithm:?}: {seq}");
            drop(busy);
        }
    }

    #[test]
    fn smooth_wrr_interleaves_exact_proportions() {
        let (mut s, t0) = server(ServerConfig::new().algorithm(Algorithm::SmoothWrr));
        for (a, w) in [("A", 5), ("B", 1), ("C", 1)] {
            s.handle_datagram(t0, &sub("k", a, w)).unwrap();
        }
        assert_eq!(sequence(&mut s, t0, "k", 7), "AABACAA");
    }

    #[test]
    fn iphash_and_ketama_keep_a_client_on_its_node() {
        for algorithm in [Algorithm::IpHash, Algorithm::Ketama] {
            let (mut s, t0) = server(ServerConfig::new().algorithm(algorithm));
            for a in ["A", "B", "C", "D"] {
                s.handle_datagram(t0, &sub("k", a, 1)).unwrap();
            }
            let ip: IpAddr = "10.1.2.3".parse().unwrap();
            let first = s.pick(t0, b"k", Some(ip)).unwrap().address().to_vec();
            for _ in 0..5 {
                assert_eq!(s.pick(t0, b"k", Some(ip)).unwrap().address(), first, "{algorithm:?}");
            }
            assert!(s.pick(t0, b"k", None).is_none(), "{algorithm:?} needs a client address");
        }
        // iphash: s_addr as a little-endian u32 % count (spec §2.7.4): 10.1.2.3 → 0x0302010a.
        let (mut s, t0) = server(ServerConfig::new().algorithm(Algorithm::IpHash));
        for a in ["A", "B", "C"] {
            s.handle_datagram(t0, &sub("k", a, 1)).unwrap();
        }
        let want = [b"A", b"B", b"C"][(0x0302_010a_u32 % 3) as usize];
        assert_eq!(s.pick(t0, b"k", Some("10.1.2.3".parse().unwrap())).unwrap().address(), want);
    }

    #[test]
    fn expiry_is_lazy_strict_and_a_refresh_resurrects() {
        let (mut s, t0) = server(ServerConfig::new().tolerance(Duration::from_secs(4)));
        s.handle_datagram(t0, &sub("k", "A", 1)).unwrap();
        // "alive at age 4, marked failed at age 5" (strictly greater than the tolerance).
        assert!(s.pick(t0 + Duration::from_secs(4), b"k", None).is_some());
        let held = s.pick(t0 + Duration::from_secs(4), b"k", None).unwrap();
        assert!(s.pick(t0 + Duration::from_secs(5), b"k", None).is_none());
        assert!(s.pool(b"k").unwrap().nodes()[0].death_mark(), "kept while referenced");
        // A refresh before the node is removed brings it back, failcnt kept.
        s.handle_datagram(t0 + Duration::from_secs(6), &sub("k", "A", 1)).unwrap();
        assert!(s.pick(t0 + Duration::from_secs(6), b"k", None).is_some());
        assert!(s.pool(b"k").unwrap().nodes()[0].failcnt() >= 1);
        drop(held);
    }

    #[test]
    fn unsubscribe_removes_an_unreferenced_node_and_the_empty_pool() {
        let (mut s, t0) = server(ServerConfig::new());
        s.handle_datagram(t0, &sub("k", "A", 1)).unwrap();
        s.handle_datagram(t0, &sub("k", "B", 1)).unwrap();
        let lease = s.pick(t0, b"k", None).unwrap();
        assert_eq!(lease.address(), b"B");
        s.handle_datagram(t0, &unsub("k", "B")).unwrap();
        assert_eq!(s.pool(b"k").unwrap().nodes().len(), 2, "B is referenced: kept, marked");
        assert_eq!(sequence(&mut s, t0, "k", 2), "AA");
        drop(lease);
        let _ = s.pick(t0, b"k", None);
        assert_eq!(s.pool(b"k").unwrap().nodes().len(), 1, "removed at the next lookup once unreferenced");
        s.handle_datagram(t0, &unsub("k", "A")).unwrap();
        assert!(s.pool(b"k").is_none());
        assert_eq!(s.handle_datagram(t0, &unsub("k", "A")), Err(DatagramError::UnknownNode));
        let events: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert!(events.contains(&Event::PoolRemoved { key: b"k".to_vec() }));
    }

    #[test]
    fn a_failed_connection_marks_the_node() {
        let (mut s, t0) = server(ServerConfig::new());
        s.handle_datagram(t0, &sub("k", "A", 1)).unwrap();
        s.handle_datagram(t0, &sub("k", "B", 1)).unwrap();
        let lease = s.pick(t0, b"k", None).unwrap();
        lease.mark_failed();
        drop(lease);
        assert_eq!(sequence(&mut s, t0, "k", 3), "AAA");
        assert_eq!(s.pool(b"k").unwrap().nodes().len(), 1);
    }

    #[test]
    fn dotsplit_fallback_and_mountpoints() {
        let (mut s, t0) = server(ServerConfig::new().dotsplit(true));
        s.handle_datagram(t0, &sub(".example.org", "W", 1)).unwrap();
        assert!(s.pick(t0, b"a.b.c.d.example.org", None).is_some());
        assert!(s.pick(t0, b"a.b.c.d.e.example.org", None).is_none(), "at most 5 lookups");
        assert!(s.pick(t0, b"www.example.org:80", None).is_none(), "the port is kept");

        let (mut s, t0) = server(ServerConfig::new().fallback_key(Some(b"default".to_vec())));
        s.handle_datagram(t0, &sub("default", "D", 1)).unwrap();
        assert_eq!(s.pick(t0, b"nope", None).unwrap().address(), b"D");

        let (mut s, t0) = server(ServerConfig::new().mountpoints_depth(1));
        s.handle_datagram(t0, &sub("h/foo", "F", 1)).unwrap();
        s.handle_datagram(t0, &sub("h", "H", 1)).unwrap();
        assert_eq!(s.pick_with_path(t0, b"h", b"/foo/bar", None).unwrap().address(), b"F");
        assert_eq!(s.pick_with_path(t0, b"h", b"/other", None).unwrap().address(), b"H");
        assert!(s.pick_with_path(t0, b"h", b"foo", None).is_none());
    }

    #[test]
    fn djb33x_matches_uwsgi_stats() {
        // Spec §2.1: "example.com" → bucket 30778; "café.test" (UTF-8) → 18091 (signed char).
        assert_eq!(djb33x(b"example.com"), 3_904_343_938);
        assert_eq!(bucket(b"example.com"), 30778);
        assert_eq!(bucket("café.test".as_bytes()), 18091);
    }

    #[test]
    fn notify_ack_goes_to_the_unix_path_on_new_nodes_only() {
        let (mut s, t0) = server(ServerConfig::new());
        let req = Request {
            key: b"ack.test".to_vec(),
            address: b"127.0.0.1:42051".to_vec(),
            notify: Some(b"./ack.sock".to_vec()),
            ..Request::default()
        };
        let d = wire::encode(Command::Subscribe, &req).unwrap();
        s.handle_datagram(t0, &d).unwrap();
        let t = s.poll_transmit().unwrap();
        assert_eq!(t.destination, Endpoint::Unix("./ack.sock".into()));
        assert_eq!(&t.payload[..], b"[subscription ack] ack.test => new node: 127.0.0.1:42051");
        s.handle_datagram(t0, &d).unwrap();
        assert!(s.poll_transmit().is_none(), "no ack on refresh");
    }

    #[test]
    fn credentials_are_required_and_checked() {
        let files = MemoryFiles::new().with("/creds/k", "", 1000, 1000);
        let t0 = Instant::now();
        let config = ServerConfig::new().use_credentials(true).credentials_check("/creds/");
        let mut s = SubscriptionServer::new(config, files, t0, WALL);
        assert_eq!(s.handle_datagram(t0, &sub("k", "A", 1)), Err(DatagramError::NoCredentials));
        let root = Credentials { pid: 1, uid: 0, gid: 0 };
        let owner = Credentials { pid: 2, uid: 1000, gid: 1000 };
        assert_eq!(
            s.handle_datagram_with_credentials(t0, &sub("k", "A", 1), Some(root)),
            Err(DatagramError::CredentialsRefused)
        );
        s.handle_datagram_with_credentials(t0, &sub("k", "A", 1), Some(owner)).unwrap();
        assert_eq!(s.pool(b"k").unwrap().nodes()[0].credentials(), owner);
        assert_eq!(s.stats().rejected.get("credentials_refused"), Some(&1));
    }
}
