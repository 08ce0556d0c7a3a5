//! Configuration of one legion membership.

use core::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::wire::Crypto;

/// Everything a [`Legion`](crate::Legion) needs to know before it starts.
///
/// Built with by-value setters; defaults are uWSGI 2.0.21's (spec §3.1). Fields are private
/// so options can be added without a breaking change. `Debug` never prints the secret.
///
/// ```
/// use std::time::Duration;
/// use legion_proto::{Config, wire::Crypto};
/// let config = Config::new("lg", 10, Crypto::from_spec("aes-128-cbc:secret")?)
///     .node("127.0.0.1:41002".parse()?)
///     .freq(Duration::from_secs(1))
///     .tolerance(Duration::from_secs(3))
///     .quorum(2);
/// assert!(!format!("{config:?}").contains("secret"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) legion: Vec<u8>,
    pub(crate) valor: u16,
    pub(crate) crypto: Crypto,
    pub(crate) node_name: Vec<u8>,
    pub(crate) pid: u64,
    pub(crate) nodes: Vec<SocketAddr>,
    pub(crate) freq: Duration,
    pub(crate) tolerance: Duration,
    pub(crate) skew_tolerance: Duration,
    pub(crate) max_future_skew: Option<Duration>,
    pub(crate) quorum: usize,
    pub(crate) scroll: Vec<u8>,
    pub(crate) scroll_max_size: usize,
    pub(crate) death_on_lord_error: Option<Duration>,
    pub(crate) compat_step_down_rate_limit: bool,
    pub(crate) extensions: bool,
    pub(crate) multicast: bool,
    pub(crate) warmup: Option<Duration>,
    pub(crate) event_queue_cap: usize,
}

impl Config {
    /// uWSGI's `--legion-freq` default: 3 s.
    pub const DEFAULT_FREQ: Duration = Duration::from_secs(3);
    /// uWSGI's `--legion-tolerance` default: 15 s.
    pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(15);
    /// uWSGI's `--legion-skew-tolerance` default: 60 s (its `--help` wrongly says 30).
    pub const DEFAULT_SKEW_TOLERANCE: Duration = Duration::from_secs(60);
    /// uWSGI's `--legion-scroll-max-size` default: 4096 bytes.
    pub const DEFAULT_SCROLL_MAX_SIZE: usize = 4096;

    /// A legion named `legion`, joined with `valor` (0 = arbiter: votes, never lord) and
    /// the legion's cipher and secret. Everything else has uWSGI's defaults; no announce
    /// targets are set, so add them with [`Config::node`].
    pub fn new(legion: impl Into<Vec<u8>>, valor: u16, crypto: Crypto) -> Self {
        Self {
            legion: legion.into(),
            valor,
            crypto,
            node_name: b"localhost".to_vec(),
            pid: 0,
            nodes: Vec::new(),
            freq: Self::DEFAULT_FREQ,
            tolerance: Self::DEFAULT_TOLERANCE,
            skew_tolerance: Self::DEFAULT_SKEW_TOLERANCE,
            max_future_skew: None,
            quorum: 0,
            scroll: Vec::new(),
            scroll_max_size: Self::DEFAULT_SCROLL_MAX_SIZE,
            death_on_lord_error: None,
            compat_step_down_rate_limit: false,
            extensions: true,
            multicast: false,
            warmup: None,
            event_queue_cap: 4096,
        }
    }

    /// Adds an announce target (uWSGI `--legion-node`). Every peer must be listed; listing
    /// this node itself is harmless (its own announces are dropped by the loop check). For
    /// multicast, list the group (uWSGI `--legion-mcast` does).
    #[must_use]
    pub fn node(mut self, addr: SocketAddr) -> Self {
        if !self.nodes.contains(&addr) {
            self.nodes.push(addr);
        }
        self
    }

    /// Adds several announce targets.
    #[must_use]
    pub fn nodes(self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        addrs.into_iter().fold(self, Self::node)
    }

    /// This node's name in announces (uWSGI sends `gethostname()`); part of its identity.
    #[must_use]
    pub fn node_name(mut self, name: impl Into<Vec<u8>>) -> Self {
        self.node_name = name.into();
        self
    }

    /// This node's process id in announces (used by peers only for loop detection).
    #[must_use]
    pub fn pid(mut self, pid: u64) -> Self {
        self.pid = pid;
        self
    }

    /// Announce period (`--legion-freq`, default 3 s). Sub-second values are allowed; toward
    /// uWSGI peers this node still sends at most one announce per second (see the crate doc).
    #[must_use]
    pub fn freq(mut self, freq: Duration) -> Self {
        self.freq = freq;
        self
    }

    /// How long a silent member is kept (`--legion-tolerance`, default 15 s).
    #[must_use]
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// How old an announce's `unix` time may be (`--legion-skew-tolerance`, default 60 s).
    #[must_use]
    pub fn skew_tolerance(mut self, skew: Duration) -> Self {
        self.skew_tolerance = skew;
        self
    }

    /// Beyond uWSGI: also refuse announces whose `unix` time is more than `skew` in the
    /// future (uWSGI accepts any future time, spec edge case 4.2). Default: off.
    #[must_use]
    pub fn max_future_skew(mut self, skew: Option<Duration>) -> Self {
        self.max_future_skew = skew;
        self
    }

    /// Votes needed to elect a lord (`--legion-quorum`, default 0: a lone node elects
    /// itself). Use a majority of the cluster to rule out two lords after a partition.
    #[must_use]
    pub fn quorum(mut self, quorum: usize) -> Self {
        self.quorum = quorum;
        self
    }

    /// This node's scroll (`--legion-scroll`): an opaque blob sent in every announce.
    #[must_use]
    pub fn scroll(mut self, scroll: impl Into<Vec<u8>>) -> Self {
        self.scroll = scroll.into();
        self
    }

    /// Largest lord scroll kept (`--legion-scroll-max-size`, default 4096).
    #[must_use]
    pub fn scroll_max_size(mut self, max: usize) -> Self {
        self.scroll_max_size = max;
        self
    }

    /// `--legion-death-on-lord-error`: when a `lord` action fails, step down, announce
    /// death and stay out of the election for this long. Default: off.
    #[must_use]
    pub fn death_on_lord_error(mut self, suspension: Option<Duration>) -> Self {
        self.death_on_lord_error = suspension;
        self
    }

    /// Compatibility switch for spec edge case 4.15: uWSGI 2.0.21 steps a lord down for
    /// lack of quorum at most once per 60 s. Default `false`: step down at once.
    #[must_use]
    pub fn compat_step_down_rate_limit(mut self, on: bool) -> Self {
        self.compat_step_down_rate_limit = on;
        self
    }

    /// Whether to add the extension key (lord epoch) to announces and send triggered
    /// announces to peers that have it (default `true`). With `false` this node behaves
    /// on the wire exactly like uWSGI 2.0.21.
    #[must_use]
    pub fn extensions(mut self, on: bool) -> Self {
        self.extensions = on;
        self
    }

    /// Whether the targets are a multicast group (uWSGI `--legion-mcast`); the mio driver
    /// sets it for a multicast socket. Members' source addresses then cannot be reached
    /// one by one (on one host, nodes share the group's port), so triggered and fast
    /// announces go to the group, and only while every known member runs this crate: a
    /// group with a uWSGI node on it keeps uWSGI's pacing. Default `false`.
    #[must_use]
    pub fn multicast(mut self, on: bool) -> Self {
        self.multicast = on;
        self
    }

    /// How long a new node listens before it votes (default: two and a half announce
    /// periods). uWSGI's first election round comes at its second wakeup, about two periods
    /// after start; a uWSGI peer started at the same time sends its first announce one
    /// period after start, or two when the traffic it receives restarts its wait (seen on
    /// the real 2.0.21), so a shorter warm-up risks electing this node before it has heard
    /// the others.
    #[must_use]
    pub fn warmup(mut self, warmup: Duration) -> Self {
        self.warmup = Some(warmup);
        self
    }

    /// Most undelivered events kept; beyond it the oldest is dropped and counted in
    /// [`Stats::events_dropped`](crate::Stats::events_dropped). Default 4096.
    #[must_use]
    pub fn event_queue_cap(mut self, cap: usize) -> Self {
        self.event_queue_cap = cap;
        self
    }

    /// The legion's name.
    pub fn legion(&self) -> &[u8] {
        &self.legion
    }

    /// This node's valor.
    pub fn valor_value(&self) -> u16 {
        self.valor
    }

    /// The announce period.
    pub fn freq_value(&self) -> Duration {
        self.freq
    }

    /// The member tolerance.
    pub fn tolerance_value(&self) -> Duration {
        self.tolerance
    }

    /// The configured announce targets.
    pub fn targets(&self) -> &[SocketAddr] {
        &self.nodes
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("legion", &self.legion.escape_ascii().to_string())
            .field("valor", &self.valor)
            .field("crypto", &self.crypto)
            .field("node_name", &self.node_name.escape_ascii().to_string())
            .field("pid", &self.pid)
            .field("nodes", &self.nodes)
            .field("freq", &self.freq)
            .field("tolerance", &self.tolerance)
            .field("skew_tolerance", &self.skew_tolerance)
            .field("max_future_skew", &self.max_future_skew)
            .field("quorum", &self.quorum)
            .field("scroll_len", &self.scroll.len())
            .field("scroll_max_size", &self.scroll_max_size)
            .field("death_on_lord_error", &self.death_on_lord_error)
            .field("compat_step_down_rate_limit", &self.compat_step_down_rate_limit)
            .field("extensions", &self.extensions)
            .field("multicast", &self.multicast)
            .field("warmup", &self.warmup)
            .finish_non_exhaustive()
    }
}
