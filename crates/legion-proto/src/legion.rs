//! The sans-IO Legion state machine.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::event::{Event, EventKind, LeftReason, LordInfo, NodeInfo, UnlordReason};
use crate::wire::{self, MAX_DATAGRAM};
use crate::{Announce, Config, ConfigError, DatagramError, Extension, NodeUuid};

/// uWSGI's announce period is whole seconds, at least one: toward peers that may be uWSGI
/// this node never sends more often than this (spec §3.2, edge case 4.17).
const MIN_COMPAT_INTERVAL: Duration = Duration::from_secs(1);
/// uWSGI steps a lord down for lack of quorum at most once per 60 s (edge case 4.15).
const COMPAT_QUORUM_WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// The extension format this crate writes.
const EXTENSION_VERSION: u32 = 1;
/// Most transmits kept undelivered before the oldest is dropped.
const TRANSMIT_QUEUE_CAP: usize = 65_536;

/// A datagram to send.
#[must_use]
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The sealed announce. One announce sent to N targets is one allocation.
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

/// Where this node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Started less than the warm-up ago (two and a half announce periods by default):
    /// announcing and listening, but not yet voting, so that it hears from every live
    /// member first.
    Warmup,
    /// A member that is not lord.
    Follower,
    /// The lord.
    Lord,
    /// Out of the election after a failed `lord` action (`death_on_lord_error`).
    Suspended,
    /// Left the legion ([`Legion::leave`]); does nothing more.
    Left,
}

/// Counters, for monitoring. Every rejected datagram is counted once, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams given to [`Legion::handle_datagram`].
    pub datagrams_received: u64,
    /// Announces accepted (processed as membership information).
    pub announces_accepted: u64,
    /// Rejected datagrams by [`DatagramError::reason`].
    pub rejected: BTreeMap<&'static str, u64>,
    /// Announces sealed (each may go to several targets).
    pub announces_sent: u64,
    /// Of those, announces triggered by a change rather than by the timer.
    pub triggered_announces: u64,
    /// Datagrams queued for sending.
    pub transmits: u64,
    /// Transmits dropped because the application did not drain them.
    pub transmits_dropped: u64,
    /// Events dropped because the application did not drain them.
    pub events_dropped: u64,
    /// Election rounds run.
    pub election_rounds: u64,
}

/// A member: another node of the legion this node has heard from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    info: NodeInfo,
    scroll: Vec<u8>,
    last_seen: Instant,
    checksum: u64,
    vote: (u64, NodeUuid),
    /// Its last announce said it is lord (`lord` field not 0).
    claims_lord: bool,
    ext: Option<Extension>,
    addr: SocketAddr,
}

impl Member {
    /// Its identity.
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// Its scroll, as received in its first announce (spec §3.12).
    pub fn scroll(&self) -> &[u8] {
        &self.scroll
    }

    /// When its last announce arrived.
    pub fn last_seen(&self) -> Instant {
        self.last_seen
    }

    /// The membership checksum it announced last.
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// The candidate it votes for: `(lord_valor, lord_uuid)`.
    pub fn vote(&self) -> (u64, NodeUuid) {
        self.vote
    }

    /// Whether its last announce said it is lord.
    pub fn claims_lord(&self) -> bool {
        self.claims_lord
    }

    /// Whether it runs this crate (its announces carry the extension key).
    pub fn is_extended(&self) -> bool {
        self.ext.is_some()
    }

    /// The lord epoch it announced, if it runs this crate.
    pub fn epoch(&self) -> Option<u64> {
        self.ext.map(|e| e.epoch)
    }

    /// The source address of its last announce.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Warmup { until: Instant },
    Running,
    Suspended { until: Instant },
    Left,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lordship {
    /// Unix time (s) this node became lord: the announce's `lord` field.
    since_unix: u64,
    /// The event that made it lord, for [`Legion::handle_action_result`].
    event_seq: u64,
}

/// What the last announce said, to send a triggered one only when something changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Said {
    checksum: u64,
    vote: (u64, NodeUuid),
    lord: u64,
    epoch: u64,
    dead: bool,
}

/// The Legion state machine of one node in one legion.
///
/// See the [crate documentation](crate) for the driving contract.
#[derive(Clone)]
pub struct Legion {
    config: Config,
    uuid: NodeUuid,
    /// `now` and wall clock at construction: wall(now) = wall_start + (now − start).
    start: Instant,
    wall_start: Duration,
    last_now: Instant,
    phase: Phase,
    lordship: Option<Lordship>,
    /// Announces carry `dead` (suspended, or left).
    dead_flag: bool,
    members: Vec<Member>,
    /// Results of the last election round: 0 and (0, nil) before the first (spec §1.4).
    checksum: u64,
    vote: (u64, NodeUuid),
    agreed: Option<LordInfo>,
    joined: bool,
    lord_scroll: Vec<u8>,
    /// The highest lord epoch seen (own or announced by a member).
    epoch: u64,
    last_quorum_warning: Option<Instant>,
    /// When each configured target was last sent an announce, in configuration order.
    sent: Vec<(SocketAddr, Option<Instant>)>,
    last_fast_send: Option<Instant>,
    said: Option<Said>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_seq: u64,
    stats: Stats,
}

impl Legion {
    /// Starts a member of the legion `config` describes.
    ///
    /// `uuid` is this node's identity for this run; make a new random one at every start
    /// (e.g. [`NodeUuid::from_random`]), as uWSGI does. `wall_clock` is the wall-clock time
    /// (since the Unix epoch) at `now`; later wall-clock times are derived from `now`, so
    /// the core never reads a clock.
    ///
    /// Emits [`EventKind::Setup`] and queues the first announce to every target.
    ///
    /// # Errors
    /// [`ConfigError`] for an unusable configuration.
    pub fn new(
        config: Config,
        uuid: NodeUuid,
        now: Instant,
        wall_clock: Duration,
    ) -> Result<Self, ConfigError> {
        if config.legion.is_empty() {
            return Err(ConfigError::EmptyLegionName);
        }
        if config.node_name.is_empty() {
            return Err(ConfigError::EmptyNodeName);
        }
        if config.freq.is_zero() {
            return Err(ConfigError::ZeroFreq);
        }
        if config.tolerance <= config.freq {
            return Err(ConfigError::ToleranceNotAboveFreq {
                freq: config.freq,
                tolerance: config.tolerance,
            });
        }
        if uuid.is_nil() {
            return Err(ConfigError::NilUuid);
        }
        let mut legion = Self {
            config,
            uuid,
            start: now,
            wall_start: wall_clock,
            last_now: now,
            phase: Phase::Warmup { until: now },
            lordship: None,
            dead_flag: false,
            members: Vec::new(),
            checksum: 0,
            vote: (0, NodeUuid::NIL),
            agreed: None,
            joined: false,
            lord_scroll: Vec::new(),
            epoch: 0,
            last_quorum_warning: None,
            sent: Vec::new(),
            last_fast_send: None,
            said: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_seq: 1,
            stats: Stats::default(),
        };
        // The largest announce this node can send must fit a datagram uWSGI can receive.
        let mut probe = legion.build_announce(now);
        probe.unix = u64::MAX;
        probe.lord = u64::MAX;
        probe.pid = u64::MAX;
        probe.checksum = u64::MAX;
        probe.lord_valor = u64::MAX;
        probe.dead = true;
        probe.ext = Some(Extension { version: EXTENSION_VERSION, epoch: u64::MAX });
        if wire::seal(&legion.config.crypto, &probe).is_err() {
            return Err(ConfigError::ScrollTooLarge { len: legion.config.scroll.len(), max: MAX_DATAGRAM });
        }
        legion.phase =
            Phase::Warmup { until: now + legion.config.warmup.unwrap_or(legion.config.freq * 5 / 2) };
        legion.sent = legion.config.nodes.iter().map(|&a| (a, None)).collect();
        legion.emit(EventKind::Setup);
        // Beyond uWSGI (which waits one period): announce at once, so peers learn of this
        // node a period sooner. One datagram, so no uWSGI peer is disturbed by it.
        legion.send_to_all(now, false);
        Ok(legion)
    }

    // ----- inputs ------------------------------------------------------------------------

    /// Processes one received datagram.
    ///
    /// `from` is the datagram's source address. uWSGI ignores it (identity comes from the
    /// payload); this node uses it only to send triggered announces to peers that run this
    /// crate.
    ///
    /// # Errors
    /// [`DatagramError`] when the datagram is rejected; the state is then unchanged apart
    /// from [`Stats::rejected`]. Never panics, whatever the bytes.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), DatagramError> {
        let now = self.clamp(now);
        self.stats.datagrams_received += 1;
        let result = self.accept(now, from, datagram);
        if let Err(e) = &result {
            *self.stats.rejected.entry(e.reason()).or_insert(0) += 1;
        }
        result
    }

    /// Fires every timer that is due at `now`: expiry, the end of the warm-up or of a
    /// suspension, periodic announces, and an election round. Calling it early or twice is
    /// harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        if self.phase == Phase::Left {
            return;
        }
        // Spec §3.8 order: node-left (expiry) first.
        self.expire(now);
        match self.phase {
            Phase::Warmup { until } if now >= until => self.phase = Phase::Running,
            Phase::Suspended { until } if now >= until => {
                // Beyond uWSGI (edge case 4.16): the dead flag is cleared after the
                // suspension, so the node rejoins instead of announcing death forever.
                self.phase = Phase::Running;
                self.dead_flag = false;
                self.sent.iter_mut().for_each(|(_, t)| *t = None);
            }
            _ => {}
        }
        if self.phase == Phase::Running {
            self.election_round(now);
        }
        if matches!(self.phase, Phase::Warmup { .. } | Phase::Running) {
            let due: Vec<SocketAddr> =
                self.sent.iter().filter(|(a, t)| self.target_due(*a, *t) <= now).map(|(a, _)| *a).collect();
            if !due.is_empty() {
                self.send_to_targets(now, due);
            }
            if self.fast_due().is_some_and(|t| t <= now) {
                self.send_fast(now, false);
            }
        }
        self.send_if_changed(now);
    }

    /// Reports the outcome of the actions run for event `seq`.
    ///
    /// Only the outcome of a [`EventKind::Lord`] event matters: when its actions failed and
    /// `death_on_lord_error` is set, this node steps down ([`UnlordReason::LordActionFailed`]),
    /// announces its death and stays out of the election for the configured time, as
    /// uWSGI's `--legion-death-on-lord-error` does (spec §3.10). Any other call is ignored.
    pub fn handle_action_result(&mut self, now: Instant, seq: u64, success: bool) {
        let now = self.clamp(now);
        let Some(suspension) = self.config.death_on_lord_error else { return };
        let Some(lordship) = self.lordship else { return };
        if success || lordship.event_seq != seq || self.phase == Phase::Left {
            return;
        }
        self.lordship = None;
        self.emit(EventKind::Unlord { reason: UnlordReason::LordActionFailed });
        self.phase = Phase::Suspended { until: now + suspension };
        self.dead_flag = true;
        self.send_to_all(now, true);
    }

    /// Queues an announce to every target now, as the periodic timer would, and restarts
    /// the announce period from now. Does nothing while suspended or after leaving.
    pub fn announce(&mut self, now: Instant) {
        let now = self.clamp(now);
        if matches!(self.phase, Phase::Warmup { .. } | Phase::Running) {
            self.send_to_all(now, false);
        }
    }

    /// Leaves the legion: emits [`EventKind::Death`] and queues a death announce to every
    /// target, so peers remove this node at once instead of after the tolerance. No
    /// `unlord` event fires (uWSGI does not run unlord hooks at shutdown). Afterwards the
    /// legion ignores every input.
    pub fn leave(&mut self, now: Instant) {
        let now = self.clamp(now);
        if self.phase == Phase::Left {
            return;
        }
        self.emit(EventKind::Death);
        self.dead_flag = true;
        self.send_to_all(now, true);
        self.lordship = None;
        self.phase = Phase::Left;
    }

    // ----- outputs -----------------------------------------------------------------------

    /// The next datagram to send. Changes after every `handle_*` call and command.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, in order. Changes after every `handle_*` call and command.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Legion::handle_timeout`] must be called next; `None` once the node has left.
    /// Changes after every `handle_*` call and command.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let phase_deadline = match self.phase {
            Phase::Left => return None,
            Phase::Warmup { until } | Phase::Suspended { until } => Some(until),
            Phase::Running => None,
        };
        let sending = matches!(self.phase, Phase::Warmup { .. } | Phase::Running);
        let expiry = self.members.iter().map(|m| m.last_seen + self.config.tolerance).min();
        [
            phase_deadline,
            expiry,
            sending.then(|| self.sent.iter().map(|(a, t)| self.target_due(*a, *t)).min()).flatten(),
            sending.then(|| self.fast_due()).flatten(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- getters -----------------------------------------------------------------------

    /// This node's uuid.
    pub fn uuid(&self) -> NodeUuid {
        self.uuid
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where this node stands.
    pub fn state(&self) -> State {
        match self.phase {
            Phase::Left => State::Left,
            Phase::Suspended { .. } => State::Suspended,
            Phase::Warmup { .. } => State::Warmup,
            Phase::Running if self.lordship.is_some() => State::Lord,
            Phase::Running => State::Follower,
        }
    }

    /// Whether this node is the lord.
    pub fn is_lord(&self) -> bool {
        self.lordship.is_some()
    }

    /// The lord every member agreed on in the last round that reached agreement and quorum.
    pub fn lord(&self) -> Option<LordInfo> {
        self.agreed
    }

    /// The highest lord epoch known: the fencing token. A new lord takes one more than the
    /// highest it has seen; a write stamped with a lower epoch comes from a deposed lord.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The members, in order of first appearance.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// This node's checksum from its last election round (0 before the first).
    pub fn checksum(&self) -> u64 {
        self.checksum
    }

    /// This node's vote from its last election round: `(valor, uuid)` of its best candidate.
    pub fn vote(&self) -> (u64, NodeUuid) {
        self.vote
    }

    /// This node's own scroll.
    pub fn config_scroll(&self) -> &[u8] {
        &self.config.scroll
    }

    /// The lord scroll: the best candidate's scroll, or this node's own while it is lord.
    pub fn lord_scroll(&self) -> &[u8] {
        &self.lord_scroll
    }

    /// Every scroll: this node's own, then each member's, in membership order (uWSGI's
    /// `uwsgi.scrolls()`).
    pub fn scrolls(&self) -> impl Iterator<Item = &[u8]> {
        core::iter::once(&self.config.scroll[..]).chain(self.members.iter().map(|m| &m.scroll[..]))
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The unix time (s) this node became lord, 0 if it is not lord (uWSGI's `i_am_the_lord`).
    pub fn lord_since(&self) -> u64 {
        self.lordship.map_or(0, |l| l.since_unix)
    }

    /// The wall-clock time at `now`, as this node derives it.
    pub fn wall_clock(&self, now: Instant) -> Duration {
        self.wall_start + now.saturating_duration_since(self.start)
    }

    // ----- internals ---------------------------------------------------------------------

    /// STYLE §3.3 rule 2: `now` never goes backwards; a late `now` is taken as the last one.
    fn clamp(&mut self, now: Instant) -> Instant {
        debug_assert!(now >= self.last_now, "time went backwards");
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    fn unix(&self, now: Instant) -> u64 {
        self.wall_clock(now).as_secs()
    }

    /// The receive pipeline after decryption (spec §2.7 steps 6–9, then §3.3).
    fn accept(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) -> Result<(), DatagramError> {
        if self.phase == Phase::Left {
            return Err(DatagramError::Left);
        }
        let a = wire::open(&self.config.crypto, datagram)?;
        // Step 6: "legion == local name", same length and bytes.
        if a.legion != self.config.legion {
            return Err(DatagramError::OtherLegion);
        }
        // Step 7: a loop only if name, pid, valor and uuid all match (edge case 4.11).
        if a.name == self.config.node_name
            && a.pid == self.config.pid
            && a.valor == u64::from(self.config.valor)
            && a.uuid == self.uuid
        {
            return Err(DatagramError::Own);
        }
        // Step 8: "unix ≥ now − skew"; the future is unbounded unless configured.
        let unix_now = self.unix(now);
        let age = unix_now.saturating_sub(a.unix);
        if age > self.config.skew_tolerance.as_secs() {
            return Err(DatagramError::Stale { age_secs: age });
        }
        if let Some(max) = self.config.max_future_skew {
            let ahead = a.unix.saturating_sub(unix_now);
            if ahead > max.as_secs() {
                return Err(DatagramError::FromTheFuture { ahead_secs: ahead });
            }
        }
        // Edge cases 4.10, 4.9, 4.7: refuse what uWSGI mishandles.
        if a.name.is_empty() {
            return Err(DatagramError::EmptyName);
        }
        if a.uuid.is_nil() {
            return Err(DatagramError::NilUuid);
        }
        let valor = u16::try_from(a.valor).map_err(|_| DatagramError::ValorOutOfRange { valor: a.valor })?;
        let index = self
            .members
            .iter()
            .position(|m| m.info.valor == valor && m.info.uuid == a.uuid && m.info.name == a.name);
        if a.dead {
            // Spec §3.3: a known identity announcing death is removed at once; an unknown
            // one is ignored (edge case 4.13).
            let Some(i) = index else { return Err(DatagramError::UnknownDead) };
            self.stats.announces_accepted += 1;
            let gone = self.members.remove(i);
            self.emit(EventKind::NodeLeft { node: gone.info, reason: LeftReason::Announced });
        } else {
            self.stats.announces_accepted += 1;
            let i = match index {
                Some(i) => i,
                None => {
                    let info = NodeInfo { valor, name: a.name, uuid: a.uuid };
                    self.members.push(Member {
                        info: info.clone(),
                        // Spec §3.12: the scroll of the first announce is kept for good.
                        scroll: a.scroll,
                        last_seen: now,
                        checksum: 0,
                        vote: (0, NodeUuid::NIL),
                        claims_lord: false,
                        ext: None,
                        addr: from,
                    });
                    self.emit(EventKind::NodeJoined { node: info });
                    self.members.len() - 1
                }
            };
            let m = &mut self.members[i];
            m.last_seen = now;
            m.checksum = a.checksum;
            m.vote = (a.lord_valor, a.lord_uuid);
            m.claims_lord = a.lord != 0;
            m.ext = a.ext.filter(|e| e.version >= 1);
            m.addr = from;
            let extended = m.ext.is_some();
            let better_claimant =
                m.claims_lord && (u64::from(valor), a.uuid) > (u64::from(self.config.valor), self.uuid);
            if let Some(e) = m.ext {
                self.epoch = self.epoch.max(e.epoch);
            }
            // Beyond uWSGI: a lord that hears a better node claiming lordship (after a
            // lossy spell made each side expire the other) steps down at once instead of
            // waiting for the membership to agree again, so two lords that hear each
            // other never coexist. The election then settles on the best node as usual.
            if better_claimant && self.lordship.take().is_some() {
                self.emit(EventKind::Unlord { reason: UnlordReason::NewLord });
            }
            // Align to uWSGI traffic (spec §3.2): a receipt restarts a uWSGI node's wait,
            // and a burst in a later whole second than its last announce can silence it
            // (edge case 4.17). So a possible uWSGI node hears from this node only right
            // after its own announce, in the same second as it.
            if !extended && matches!(self.phase, Phase::Warmup { .. } | Phase::Running) {
                self.answer_uwsgi(now, from);
            }
        }
        // uWSGI skips the round after a death announce; running it at once lets members
        // that run this crate agree on a successor one round trip sooner.
        if self.phase == Phase::Running {
            self.election_round(now);
        }
        self.send_if_changed(now);
        Ok(())
    }

    /// Spec §3.4: members silent for longer than the tolerance are removed.
    fn expire(&mut self, now: Instant) {
        let tolerance = self.config.tolerance;
        let mut i = 0;
        while i < self.members.len() {
            if now >= self.members[i].last_seen + tolerance {
                let gone = self.members.remove(i);
                self.emit(EventKind::NodeLeft { node: gone.info, reason: LeftReason::Expired });
            } else {
                i += 1;
            }
        }
    }

    /// Spec §3.5: best candidate, target, checksum, all-or-nothing votes, decision.
    fn election_round(&mut self, now: Instant) {
        self.stats.election_rounds += 1;
        let own_valor = u64::from(self.config.valor);
        // 1. Best candidate: self, then every member with valor > 0; higher valor wins,
        //    then the greater uuid (byte-wise).
        let mut best = (own_valor, self.uuid);
        let mut best_member = None;
        for (i, m) in self.members.iter().enumerate() {
            let v = u64::from(m.info.valor);
            if v > 0 && (v > best.0 || (v == best.0 && m.info.uuid > best.1)) {
                best = (v, m.info.uuid);
                best_member = Some(i);
            }
        }
        self.vote = best;
        if let Some(i) = best_member {
            let scroll = &self.members[i].scroll;
            self.lord_scroll = if (1..=self.config.scroll_max_size).contains(&scroll.len()) {
                scroll.clone()
            } else {
                Vec::new()
            };
        }
        // 2. Target.
        let suspended = matches!(self.phase, Phase::Suspended { .. });
        let i_am_best = best_member.is_none() && own_valor > 0 && !suspended;
        let target = if best_member.is_some() {
            best
        } else if i_am_best {
            (own_valor, self.uuid)
        } else {
            (0, NodeUuid::NIL)
        };
        // 3. Checksum over self and members (spec §3.6).
        self.checksum = self.members.iter().fold(own_valor + self.uuid.byte_sum(), |sum, m| {
            sum + u64::from(m.info.valor) + m.info.uuid.byte_sum()
        });
        // 4. Votes: all or nothing.
        let agree = self.members.iter().all(|m| m.checksum == self.checksum && m.vote == target);
        let votes = if agree { 1 + self.members.len() } else { 0 };
        // 5. Decide.
        if votes > 0 && votes >= self.config.quorum {
            self.agreed = (target.0 > 0).then_some(LordInfo { valor: target.0 as u16, uuid: target.1 });
            if !self.joined {
                self.joined = true;
                self.emit(EventKind::Join);
            }
            // Beyond uWSGI: a new lord waits until no member still claims lordship (the
            // old lord announces `lord 0` once it has seen the agreement), so two nodes
            // that hear each other are never lord at once. uWSGI takes over at once and
            // both are lord for up to one announce period.
            if i_am_best && self.lordship.is_none() && !self.members.iter().any(|m| m.claims_lord) {
                self.become_lord(now);
            } else if !i_am_best && self.lordship.is_some() {
                self.lordship = None;
                self.emit(EventKind::Unlord { reason: UnlordReason::NewLord });
            }
        } else if votes > 0 {
            // Below quorum: no lord. uWSGI steps a lord down at most once per 60 s
            // (edge case 4.15); by default we step down at once.
            self.agreed = None;
            let warned_recently = self
                .last_quorum_warning
                .is_some_and(|t| now.saturating_duration_since(t) < COMPAT_QUORUM_WARNING_INTERVAL);
            if !(self.config.compat_step_down_rate_limit && warned_recently) {
                self.last_quorum_warning = Some(now);
                if self.lordship.take().is_some() {
                    self.emit(EventKind::Unlord { reason: UnlordReason::QuorumLost });
                }
            }
        }
        // votes == 0: the members disagree; nothing changes (spec §3.5).
    }

    fn become_lord(&mut self, now: Instant) {
        self.epoch += 1;
        self.lord_scroll = self.config.scroll.clone();
        self.agreed = Some(LordInfo { valor: self.config.valor, uuid: self.uuid });
        let seq = self.emit(EventKind::Lord);
        self.lordship = Some(Lordship { since_unix: self.unix(now), event_seq: seq });
        // uWSGI announces at once when it becomes lord (spec §3.2, 2.). This node does so
        // to every target except the uWSGI nodes it answers in phase (the `lord` field is
        // informational for them; they learn it at their next announce).
        let dests: Vec<SocketAddr> =
            self.sent.iter().map(|(a, _)| *a).filter(|a| !self.is_uwsgi_target(*a)).collect();
        self.send_to_targets(now, dests);
    }

    fn emit(&mut self, kind: EventKind) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.events.len() >= self.config.event_queue_cap.max(1) {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(Event { seq, epoch: self.epoch, lord: self.agreed, kind });
        seq
    }

    fn compat_interval(&self) -> Duration {
        self.config.freq.max(MIN_COMPAT_INTERVAL)
    }

    /// Whether a member without the extension key (so possibly uWSGI) was last heard
    /// from this configured target's address.
    fn is_uwsgi_target(&self, addr: SocketAddr) -> bool {
        self.members.iter().any(|m| m.ext.is_none() && m.addr == addr)
    }

    /// When a configured target is due its periodic announce. A uWSGI target is answered
    /// right after its own announces ([`Self::answer_uwsgi`]); its timer is only the
    /// fallback for when those stop arriving.
    fn target_due(&self, addr: SocketAddr, last: Option<Instant>) -> Instant {
        let interval = self.compat_interval();
        match last {
            None => self.start,
            Some(t) if self.is_uwsgi_target(addr) => t + interval + interval / 2,
            Some(t) => t + interval,
        }
    }

    /// Answers an announce from a member without the extension key, received from
    /// `from`, in its phase: to `from` itself when it is a configured target, otherwise
    /// (a multicast group, or an address not configured) to the targets that are not known
    /// nodes, so the group stays in the uWSGI nodes' phase. At most once per half period.
    fn answer_uwsgi(&mut self, now: Instant, from: SocketAddr) {
        let half = self.compat_interval() / 2;
        let ready = |t: Option<Instant>| t.is_none_or(|t| now >= t + half);
        let dests: Vec<SocketAddr> = if self.sent.iter().any(|(a, _)| *a == from) {
            self.sent.iter().filter(|(a, t)| *a == from && ready(*t)).map(|(a, _)| *a).collect()
        } else {
            self.sent
                .iter()
                .filter(|(a, t)| ready(*t) && !self.members.iter().any(|m| m.addr == *a))
                .map(|(a, _)| *a)
                .collect()
        };
        self.send_to_targets(now, dests);
    }

    /// When the next fast announce to extended peers is due (only with a sub-second freq).
    fn fast_due(&self) -> Option<Instant> {
        if !self.config.extensions
            || self.config.freq >= self.compat_interval()
            || !self.has_extended_members()
        {
            return None;
        }
        let last = self.last_fast_send?;
        Some(last + self.config.freq)
    }

    fn has_extended_members(&self) -> bool {
        self.members.iter().any(|m| m.ext.is_some())
    }

    /// Where fast and triggered announces go: the extended members one by one or, on a
    /// multicast group, the group, but only while no member lacks the extension key.
    fn extended_destinations(&self) -> Vec<SocketAddr> {
        if self.config.multicast {
            if self.members.iter().all(|m| m.ext.is_some()) {
                return self.config.nodes.clone();
            }
            return Vec::new();
        }
        let mut dests: Vec<SocketAddr> = Vec::new();
        for m in self.members.iter().filter(|m| m.ext.is_some()) {
            if !dests.contains(&m.addr) {
                dests.push(m.addr);
            }
        }
        dests
    }

    fn build_announce(&self, now: Instant) -> Announce {
        Announce {
            legion: self.config.legion.clone(),
            valor: u64::from(self.config.valor),
            unix: self.unix(now),
            lord: self.lord_since(),
            name: self.config.node_name.clone(),
            pid: self.config.pid,
            uuid: self.uuid,
            checksum: self.checksum,
            lord_valor: self.vote.0,
            // An arbiter with no candidate votes (0, own uuid); before the first round the
            // vote is (0, nil) (spec §1.4 and vector aes128-arbiter).
            lord_uuid: self.vote.1,
            scroll: self.config.scroll.clone(),
            dead: self.dead_flag,
            ext: self
                .config
                .extensions
                .then_some(Extension { version: EXTENSION_VERSION, epoch: self.epoch }),
        }
    }

    fn said_now(&self) -> Said {
        Said {
            checksum: self.checksum,
            vote: self.vote,
            lord: self.lord_since(),
            epoch: self.epoch,
            dead: self.dead_flag,
        }
    }

    /// Seals the current announce once and queues it for `destinations`.
    fn send(&mut self, now: Instant, destinations: Vec<SocketAddr>, triggered: bool) {
        if destinations.is_empty() {
            return;
        }
        // `new` checked that the largest possible announce seals.
        let Ok(payload) = wire::seal(&self.config.crypto, &self.build_announce(now)) else { return };
        self.stats.announces_sent += 1;
        if triggered {
            self.stats.triggered_announces += 1;
        }
        for destination in destinations {
            if self.transmits.len() >= TRANSMIT_QUEUE_CAP {
                self.transmits.pop_front();
                self.stats.transmits_dropped += 1;
            }
            self.stats.transmits += 1;
            self.transmits.push_back(Transmit { destination, payload: payload.clone() });
        }
        self.said = Some(self.said_now());
    }

    /// An announce to every configured target and every extended member, at once: the
    /// first announce, `announce()`, and death announces.
    fn send_to_all(&mut self, now: Instant, triggered: bool) {
        let mut dests = self.config.nodes.clone();
        if !self.config.multicast {
            for m in self.members.iter().filter(|m| m.ext.is_some()) {
                if !dests.contains(&m.addr) {
                    dests.push(m.addr);
                }
            }
        }
        for (_, t) in &mut self.sent {
            *t = Some(now);
        }
        self.last_fast_send = Some(now);
        self.send(now, dests, triggered);
    }

    /// A periodic announce to some configured targets.
    fn send_to_targets(&mut self, now: Instant, dests: Vec<SocketAddr>) {
        for (a, t) in &mut self.sent {
            if dests.contains(a) {
                *t = Some(now);
            }
        }
        self.send(now, dests, false);
    }

    /// An announce to the members that run this crate only: never to a uWSGI node.
    fn send_fast(&mut self, now: Instant, triggered: bool) {
        let dests = self.extended_destinations();
        self.last_fast_send = Some(now);
        self.send(now, dests, triggered);
    }

    /// Beyond uWSGI: when the checksum, vote, lordship, epoch or dead flag changed since
    /// the last announce, tell the extended members at once, so a hand-over among them
    /// takes round trips instead of announce periods.
    fn send_if_changed(&mut self, now: Instant) {
        if !self.config.extensions || !matches!(self.phase, Phase::Warmup { .. } | Phase::Running) {
            return;
        }
        if self.said != Some(self.said_now()) && self.has_extended_members() {
            self.send_fast(now, true);
        }
    }
}

/// Everything that defines a legion's behaviour except its counters, for the property
/// "a rejected datagram changes nothing" (private; only with the fuzzing feature).
#[cfg(any(fuzzing, feature = "__fuzzing"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    phase: String,
    lordship: Option<(u64, u64)>,
    dead_flag: bool,
    members: Vec<Member>,
    checksum: u64,
    vote: (u64, NodeUuid),
    agreed: Option<LordInfo>,
    joined: bool,
    lord_scroll: Vec<u8>,
    epoch: u64,
    sent: Vec<(SocketAddr, Option<Instant>)>,
    last_fast_send: Option<Instant>,
    transmits: Vec<Transmit>,
    events: Vec<Event>,
    next_seq: u64,
}

#[cfg(any(fuzzing, feature = "__fuzzing"))]
impl Legion {
    /// The state without the counters.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            phase: format!("{:?}", self.phase),
            lordship: self.lordship.map(|l| (l.since_unix, l.event_seq)),
            dead_flag: self.dead_flag,
            members: self.members.clone(),
            checksum: self.checksum,
            vote: self.vote,
            agreed: self.agreed,
            joined: self.joined,
            lord_scroll: self.lord_scroll.clone(),
            epoch: self.epoch,
            sent: self.sent.clone(),
            last_fast_send: self.last_fast_send,
            transmits: self.transmits.iter().cloned().collect(),
            events: self.events.iter().cloned().collect(),
            next_seq: self.next_seq,
        }
    }
}

impl fmt::Debug for Legion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Legion")
            .field("legion", &self.config.legion.escape_ascii().to_string())
            .field("uuid", &self.uuid)
            .field("valor", &self.config.valor)
            .field("state", &self.state())
            .field("members", &self.members.len())
            .field("lord", &self.agreed)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}
