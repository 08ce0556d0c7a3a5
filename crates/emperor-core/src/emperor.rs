//! The sans-IO Emperor: one vassal per configuration, kept alive (spec §2).
//!
//! Inputs are monitor reports ([`Emperor::handle_scan`] for sources that list everything,
//! [`Emperor::handle_report`] / [`Emperor::handle_removed`] for event sources), the
//! driver's results ([`Emperor::handle_spawned`], [`Emperor::handle_spawn_failed`],
//! [`Emperor::handle_exit`]), channel input ([`Emperor::handle_byte`],
//! [`Emperor::handle_eof`]), on-demand sockets ([`Emperor::handle_connection`],
//! [`Emperor::handle_bind_failed`]), commands ([`Emperor::reload_all`],
//! [`Emperor::clear_blacklist`], [`Emperor::shutdown`]) and time
//! ([`Emperor::handle_timeout`]). Outputs are [`Action`]s and [`Event`]s.
//!
//! # Differences from uWSGI 2.0.21 (spec §8.3), on purpose
//!
//! * A crash (an exit while running, or after the channel closed) respawns from the
//!   retained record once the blacklist allows it, whatever the monitor: uWSGI's outcome
//!   depends on a race and loses vassals of event monitors (spec §2.7).
//! * Exit code 26 ("exile") keeps the record without a process until the config changes
//!   or disappears, instead of a respawn at every scan.
//! * The config is pushed at spawn and on byte 2 only, never after byte 1 (2.0.21's extra
//!   push makes a vassal run a stale config, spec §1.3). Configs over 65535 bytes are
//!   refused (2.0.21 corrupts the stream).
//! * The blacklist has one unit: the first delay is the throttle step (uWSGI: 1 ms by a
//!   unit mix-up), growth is capped, not halved at the cap.
//! * An empty on-demand socket name means "no socket" (2.0.21 binds "" and never runs it).
//! * A vassal stopped because its owner or mode changed is re-added at once from the
//!   latest report (uWSGI waits for a rescan, which event monitors never do).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::config::{ConfigError, EmperorConfig, ThrottleGrowth};
use crate::proto::{self, FromVassal, ToVassal};

/// Names of 255 bytes or more are refused (uWSGI's limit).
pub const MAX_NAME_LEN: usize = 254;

/// Cap of the event queue; the oldest event is dropped beyond it (and counted).
const EVENT_CAP: usize = 65_536;

/// Which monitor reported a vassal (its index in the program's `--emperor` list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonitorId(pub u32);

/// One vassal record. A name keeps its id across crash respawns; a new record (after a
/// removal, or a broodlord zerg) gets a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VassalId(pub u64);

/// What a monitor says about one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The vassal name: a file name for `dir://`, the matched path for `glob://`.
    pub name: String,
    /// Modification time, unix seconds: a larger value than last time means "reload".
    pub mtime: u64,
    /// The config text when the monitor supplies it (config pipe mode).
    pub config: Option<Vec<u8>>,
    /// Owner uid (used in tyrant mode).
    pub uid: u32,
    /// Owner gid (used in tyrant mode).
    pub gid: u32,
    /// On-demand socket (`IP:PORT` or a unix path): bind it, spawn on the first
    /// connection. Empty means none.
    pub on_demand: Option<String>,
}

impl Report {
    /// A file-mode report.
    #[must_use]
    pub fn new(name: impl Into<String>, mtime: u64) -> Self {
        Self { name: name.into(), mtime, config: None, uid: 0, gid: 0, on_demand: None }
    }
}

/// What the driver must start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawn {
    /// The record.
    pub id: VassalId,
    /// The vassal name.
    pub name: String,
    /// Arguments after the binary: the config flag and name (`--ini app.ini`,
    /// `--ini emperor://app.ini` in pipe mode, `--ini app.ini:zerg` for a zerg).
    pub args: Vec<String>,
    /// Drop to this uid and gid before exec (tyrant mode).
    pub credentials: Option<(u32, u32)>,
    /// Create the config channel (`UWSGI_EMPEROR_FD_CONFIG`) and push this blob (header
    /// included) right after the spawn.
    pub config_blob: Option<Vec<u8>>,
    /// Give the vassal its on-demand listening socket as fd 0.
    pub on_demand: bool,
    /// Extra environment (`UWSGI_BROODLORD_NUM` for zergs).
    pub env: Vec<(String, String)>,
}

/// A side effect for the driver. Exhaustive on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the channel(s), fork and exec; report with [`Emperor::handle_spawned`] or
    /// [`Emperor::handle_spawn_failed`].
    Spawn(Spawn),
    /// Write one byte on the vassal's channel (a failure is [`Emperor::handle_eof`]).
    Write {
        /// The record.
        id: VassalId,
        /// The message.
        message: ToVassal,
    },
    /// Write this blob (header included) on the vassal's config channel.
    PushConfig {
        /// The record.
        id: VassalId,
        /// `73 LL LL 00` + config.
        blob: Vec<u8>,
    },
    /// `SIGKILL` the vassal's process group.
    Kill {
        /// The record.
        id: VassalId,
        /// Its pid (the group leader).
        pid: u32,
    },
    /// Bind and listen on the on-demand socket and watch it; report a failure with
    /// [`Emperor::handle_bind_failed`], a connection with [`Emperor::handle_connection`].
    BindOnDemand {
        /// The record.
        id: VassalId,
        /// `IP:PORT` or a unix path.
        socket: String,
    },
    /// Watch the already bound on-demand socket again (the vassal went back to
    /// on-demand).
    WatchOnDemand {
        /// The record.
        id: VassalId,
    },
    /// The process is gone: close its channels.
    CloseChannels {
        /// The record.
        id: VassalId,
    },
    /// The record is gone: close everything it had (channels, on-demand socket).
    Forget {
        /// The record.
        id: VassalId,
    },
}

/// What happened to a vassal, for logs and `--events-json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The record (`None` for a refused report, which has none).
    pub id: Option<VassalId>,
    /// The vassal name.
    pub vassal: String,
    /// Its pid, when it has one.
    pub pid: Option<u32>,
    /// What happened.
    pub kind: EventKind,
}

/// How a child ended, as `waitpid` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, if it exited.
    pub code: Option<i32>,
    /// The signal, if one killed it.
    pub signal: Option<i32>,
}

/// Why a report was not acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The name has no config extension.
    UnknownExtension,
    /// The name is 255 bytes or longer, or empty.
    BadName,
    /// Tyrant mode and the config belongs to root.
    TyrantRoot,
    /// The pushed config is too large or empty.
    Config(proto::ConfigPipeError),
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// First start of a record.
    Spawned,
    /// Byte 1.
    Ready,
    /// Byte 5.
    Accepting,
    /// First byte 17 of this process (kept across reloads; a crash respawn must earn it
    /// again).
    Loyal,
    /// Reload sent (byte 1) after a config change or [`Emperor::reload_all`].
    Reloaded,
    /// The record is gone (removed, or stopped for good).
    Destroyed,
    /// The process died unexpectedly.
    Died(ExitStatus),
    /// Started again after a death.
    Respawned,
    /// A respawn waits for the blacklist.
    Throttled {
        /// How long.
        delay: Duration,
    },
    /// The channel closed while running: the vassal is cursed and will be killed after
    /// the curse tolerance.
    Cursed,
    /// No heartbeat within the required period: killed.
    HeartbeatMissed,
    /// Waiting for the first connection on its on-demand socket.
    OnDemand,
    /// Killed after the curse tolerance or the shutdown mercy.
    Killed,
    /// A stop byte was sent.
    Stopping,
    /// Exited with code 26: kept without a process until its config changes.
    Exiled,
    /// The report was not acted on.
    Refused(Refusal),
}

impl EventKind {
    /// The name used by `--events-json`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Spawned => "spawned",
            Self::Ready => "ready",
            Self::Accepting => "accepting",
            Self::Loyal => "loyal",
            Self::Reloaded => "reloaded",
            Self::Destroyed => "destroyed",
            Self::Died(_) => "died",
            Self::Respawned => "respawned",
            Self::Throttled { .. } => "throttled",
            Self::Cursed => "cursed",
            Self::HeartbeatMissed => "heartbeat-missed",
            Self::OnDemand => "on-demand",
            Self::Killed => "killed",
            Self::Stopping => "stopping",
            Self::Exiled => "exiled",
            Self::Refused(_) => "refused",
        }
    }
}

/// Why a vassal is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// Its config disappeared: forget it.
    Removed,
    /// Owner or on-demand mode changed: start it again from the latest report.
    Changed,
    /// It asked (byte 22): forget it (a listing monitor re-adds it).
    Voluntary,
    /// The channel closed: a crash.
    Cursed,
    /// Emperor shutdown.
    Shutdown,
}

/// Where a record is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the blacklist before (re)spawning.
    Throttled { until: Instant },
    /// `Action::Spawn` issued.
    Spawning,
    /// Alive.
    Running { pid: u32 },
    /// Stop byte sent (or cursed); killed at `kill_at` if still alive.
    Stopping { pid: u32, reason: StopReason, kill_at: Instant },
    /// Listening on its on-demand socket, no process.
    OnDemand,
    /// Asked to stop so it can go back to on-demand.
    BackToOnDemand { pid: u32, kill_at: Instant },
    /// Exited with 26: no process until the config changes.
    Exiled,
}

impl Phase {
    fn pid(self) -> Option<u32> {
        match self {
            Self::Running { pid } | Self::Stopping { pid, .. } | Self::BackToOnDemand { pid, .. } => {
                Some(pid)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Spawn,
    Kill,
    Heartbeat,
}

/// One record, as [`Emperor::vassals`] shows it.
#[derive(Debug, Clone)]
pub struct Vassal {
    /// Its id.
    pub id: VassalId,
    /// Its name.
    pub name: String,
    /// The monitor that reported it.
    pub monitor: MonitorId,
    /// The latest report.
    pub report: Report,
    /// `mtime` of the config it runs.
    pub last_mod: u64,
    /// `mtime` when the record was created.
    pub born: u64,
    /// When it first ran.
    pub first_run: Option<Instant>,
    /// When it last started or was reloaded.
    pub last_run: Option<Instant>,
    /// Sent 17 since its last (re)spawn; kept across reloads, cleared by a crash.
    pub loyal: bool,
    /// Sent 1 since its last (re)start.
    pub ready: bool,
    /// Sent 5 since its last (re)start.
    pub accepting: bool,
    /// Last 17.
    pub last_loyal: Option<Instant>,
    /// Last 1.
    pub last_ready: Option<Instant>,
    /// Last 5.
    pub last_accepting: Option<Instant>,
    /// Last 26 (cleared when the heartbeat watchdog fires).
    pub last_heartbeat: Option<Instant>,
    /// When it was cursed or asked to stop.
    pub cursed_at: Option<Instant>,
    /// Emperor-initiated reloads.
    pub respawns: u64,
    /// A broodlord zerg (`NAME:zerg`).
    pub zerg: bool,
    /// uWSGI's status number: 0 normal, 1 being destroyed, 2 going back to on-demand.
    pub status: u8,
    phase: Phase,
    timers: BTreeMap<Timer, Instant>,
    deaths: u64,
    broodlord_num: Option<u64>,
    pending: Pending,
}

impl Vassal {
    /// Its pid, when it has a process.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.phase.pid()
    }

    /// Whether it is waiting for a connection on its on-demand socket.
    #[must_use]
    pub fn is_on_demand_waiting(&self) -> bool {
        self.phase == Phase::OnDemand
    }
}

/// What to do once a spawn in progress reports its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    None,
    Reload,
    Stop(StopReason),
}

/// A blacklist entry, as [`Emperor::blacklist`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blacklisted {
    /// The name.
    pub name: String,
    /// The current delay.
    pub level: Duration,
    /// Deaths after the first.
    pub attempts: u32,
    /// First death.
    pub first_attempt: Instant,
    /// Latest death.
    pub last_attempt: Instant,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Spawns issued.
    pub spawns: u64,
    /// Deaths seen.
    pub deaths: u64,
    /// Kills issued.
    pub kills: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
}

/// The Emperor core. See the [module docs](self).
#[derive(Debug)]
pub struct Emperor {
    config: EmperorConfig,
    vassals: BTreeMap<VassalId, Vassal>,
    by_name: BTreeMap<String, VassalId>,
    by_pid: BTreeMap<u32, VassalId>,
    timers: BTreeSet<(Instant, VassalId, Timer)>,
    blacklist: BTreeMap<String, Blacklisted>,
    refused: BTreeMap<String, u64>,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    next_id: u64,
    broodlord_counter: u64,
    shutdown: Option<Instant>,
    mercy_spent: bool,
    last_now: Option<Instant>,
    stats: Stats,
}

impl Emperor {
    /// An emperor with no vassals yet.
    pub fn new(config: EmperorConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            vassals: BTreeMap::new(),
            by_name: BTreeMap::new(),
            by_pid: BTreeMap::new(),
            timers: BTreeSet::new(),
            blacklist: BTreeMap::new(),
            refused: BTreeMap::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 0,
            broodlord_counter: 0,
            shutdown: None,
            mercy_spent: false,
            last_now: None,
            stats: Stats::default(),
        })
    }

    // ----- getters --------------------------------------------------------------------

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &EmperorConfig {
        &self.config
    }

    /// Every record, in creation order.
    pub fn vassals(&self) -> impl Iterator<Item = &Vassal> {
        self.vassals.values()
    }

    /// A record by id.
    #[must_use]
    pub fn vassal(&self, id: VassalId) -> Option<&Vassal> {
        self.vassals.get(&id)
    }

    /// The record of a (non-zerg) name.
    #[must_use]
    pub fn by_name(&self, name: &str) -> Option<&Vassal> {
        self.by_name.get(name).and_then(|id| self.vassals.get(id))
    }

    /// The record of a pid.
    #[must_use]
    pub fn by_pid(&self, pid: u32) -> Option<&Vassal> {
        self.by_pid.get(&pid).and_then(|id| self.vassals.get(id))
    }

    /// The blacklist.
    pub fn blacklist(&self) -> impl Iterator<Item = &Blacklisted> {
        self.blacklist.values()
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether [`Emperor::shutdown`] was called.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// After [`Emperor::shutdown`]: every vassal is gone, or the mercy ran out (and the
    /// survivors were killed). The program may exit.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.shutdown.is_some() && (self.vassals.is_empty() || self.mercy_spent)
    }

    /// Number of broodlord zergs.
    #[must_use]
    pub fn zergs(&self) -> usize {
        self.vassals.values().filter(|v| v.zerg).count()
    }

    // ----- outputs --------------------------------------------------------------------

    /// The next side effect.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next deadline (a throttled respawn, a kill, a heartbeat check, the shutdown
    /// mercy). Changes after any input.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|(t, _, _)| *t);
        let mercy = self.shutdown.filter(|_| !self.mercy_spent);
        match (timer, mercy) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- monitor input --------------------------------------------------------------

    /// A listing monitor's complete view: every config it sees now. Names it reported
    /// before and no longer lists are stopped (their zergs too).
    pub fn handle_scan(&mut self, now: Instant, monitor: MonitorId, reports: Vec<Report>) {
        let now = self.clock(now);
        if self.shutdown.is_some() {
            return;
        }
        let seen: BTreeSet<String> = reports.iter().map(|r| r.name.clone()).collect();
        for report in reports {
            self.report(now, monitor, report);
        }
        let gone: Vec<VassalId> = self
            .vassals
            .values()
            .filter(|v| v.monitor == monitor && !seen.contains(config_name(v)))
            .map(|v| v.id)
            .collect();
        for id in gone {
            self.remove(now, id);
        }
    }

    /// An event monitor says this config was added or changed.
    pub fn handle_report(&mut self, now: Instant, monitor: MonitorId, report: Report) {
        let now = self.clock(now);
        if self.shutdown.is_none() {
            self.report(now, monitor, report);
        }
    }

    /// An event monitor says this config is gone (its zergs go too).
    pub fn handle_removed(&mut self, now: Instant, monitor: MonitorId, name: &str) {
        let now = self.clock(now);
        let ids: Vec<VassalId> = self
            .vassals
            .values()
            .filter(|v| v.monitor == monitor && config_name(v) == name)
            .map(|v| v.id)
            .collect();
        for id in ids {
            self.remove(now, id);
        }
    }

    // ----- driver results -------------------------------------------------------------

    /// The spawn of `id` produced `pid`.
    pub fn handle_spawned(&mut self, now: Instant, id: VassalId, pid: u32) {
        let now = self.clock(now);
        let Some(v) = self.vassals.get_mut(&id) else { return };
        if v.phase != Phase::Spawning {
            return;
        }
        v.phase = Phase::Running { pid };
        v.status = 0;
        v.first_run.get_or_insert(now);
        v.last_run = Some(now);
        v.ready = false;
        v.accepting = false;
        v.last_heartbeat = None;
        v.cursed_at = None;
        let kind = if v.deaths > 0 { EventKind::Respawned } else { EventKind::Spawned };
        let pending = std::mem::replace(&mut v.pending, Pending::None);
        self.by_pid.insert(pid, id);
        self.emit(id, kind);
        match pending {
            Pending::None => {}
            Pending::Reload => self.reload(now, id),
            Pending::Stop(reason) => self.stop(now, id, reason),
        }
    }

    /// The spawn of `id` failed (fork, exec, socketpair): handled as a death.
    pub fn handle_spawn_failed(&mut self, now: Instant, id: VassalId) {
        let now = self.clock(now);
        if self.vassals.get(&id).is_some_and(|v| v.phase == Phase::Spawning) {
            self.act(Action::CloseChannels { id });
            self.crashed(now, id, ExitStatus { code: None, signal: None });
        }
    }

    /// A child was reaped.
    pub fn handle_exit(&mut self, now: Instant, pid: u32, status: ExitStatus) {
        let now = self.clock(now);
        let Some(id) = self.by_pid.remove(&pid) else { return };
        let Some(v) = self.vassals.get(&id) else { return };
        let phase = v.phase;
        self.cancel(id, Timer::Kill);
        self.cancel(id, Timer::Heartbeat);
        self.act(Action::CloseChannels { id });
        match phase {
            Phase::Running { .. } | Phase::Stopping { reason: StopReason::Cursed, .. } => {
                self.crashed(now, id, status);
            }
            Phase::BackToOnDemand { .. } => {
                if let Some(v) = self.vassals.get_mut(&id) {
                    v.phase = Phase::OnDemand;
                    v.status = 0;
                    v.ready = false;
                    v.accepting = false;
                    v.cursed_at = None;
                }
                self.act(Action::WatchOnDemand { id });
                self.emit(id, EventKind::OnDemand);
            }
            Phase::Stopping { reason: StopReason::Changed, .. } => {
                let report = self.vassals.get(&id).map(|v| (v.monitor, v.report.clone(), v.zerg));
                self.delete(now, id, false);
                if let Some((monitor, report, false)) = report {
                    self.report(now, monitor, report);
                }
            }
            Phase::Stopping { .. } => self.delete(now, id, true),
            Phase::Throttled { .. } | Phase::Spawning | Phase::OnDemand | Phase::Exiled => {}
        }
    }

    // ----- channel input --------------------------------------------------------------

    /// One byte from vassal `id`'s channel.
    pub fn handle_byte(&mut self, now: Instant, id: VassalId, byte: u8) {
        let now = self.clock(now);
        let Some(message) = FromVassal::from_byte(byte) else { return };
        let Some(v) = self.vassals.get_mut(&id) else { return };
        let running = matches!(v.phase, Phase::Running { .. });
        match message {
            FromVassal::Ready => {
                v.ready = true;
                v.last_ready = Some(now);
                self.emit(id, EventKind::Ready);
            }
            FromVassal::Accepting => {
                v.accepting = true;
                v.last_accepting = Some(now);
                self.emit(id, EventKind::Accepting);
            }
            FromVassal::Loyal => {
                let first = !v.loyal;
                v.loyal = true;
                v.last_loyal = Some(now);
                let name = v.name.clone();
                self.blacklist.remove(&name);
                if first {
                    self.emit(id, EventKind::Loyal);
                }
            }
            FromVassal::Heartbeat => {
                v.last_heartbeat = Some(now);
                if running {
                    let due = now + self.config.required_heartbeat;
                    self.schedule(id, Timer::Heartbeat, due);
                }
            }
            FromVassal::ConfigRequest => {
                if let Some(config) = &v.report.config
                    && let Ok(blob) = proto::encode_config(config)
                {
                    self.act(Action::PushConfig { id, blob });
                }
            }
            FromVassal::VoluntaryShutdown => {
                if !running {
                    return;
                }
                if v.report.on_demand.is_some() {
                    let Phase::Running { pid } = v.phase else { return };
                    let kill_at = now + self.config.curse_tolerance;
                    v.phase = Phase::BackToOnDemand { pid, kill_at };
                    v.status = 2;
                    v.cursed_at = Some(now);
                    let message = self.stop_message();
                    self.cancel(id, Timer::Heartbeat);
                    self.schedule(id, Timer::Kill, kill_at);
                    self.act(Action::Write { id, message });
                    self.emit(id, EventKind::Stopping);
                } else {
                    self.stop(now, id, StopReason::Voluntary);
                }
            }
            FromVassal::Sos => {
                if running && self.config.broodlord > 0 && self.zergs() < self.config.broodlord {
                    self.add_zerg(now, id);
                }
            }
        }
    }

    /// Vassal `id`'s channel reached EOF (or a write to it failed): every holder closed
    /// it. A running vassal is cursed (killed after the curse tolerance, then respawned
    /// as a crash).
    pub fn handle_eof(&mut self, now: Instant, id: VassalId) {
        let now = self.clock(now);
        let Some(v) = self.vassals.get_mut(&id) else { return };
        if let Phase::Running { pid } = v.phase {
            let kill_at = now + self.config.curse_tolerance;
            v.phase = Phase::Stopping { pid, reason: StopReason::Cursed, kill_at };
            v.status = 1;
            v.cursed_at = Some(now);
            self.cancel(id, Timer::Heartbeat);
            self.schedule(id, Timer::Kill, kill_at);
            self.emit(id, EventKind::Cursed);
        }
    }

    // ----- on-demand ------------------------------------------------------------------

    /// A connection is waiting on `id`'s on-demand socket: spawn it with the socket.
    pub fn handle_connection(&mut self, now: Instant, id: VassalId) {
        self.clock(now);
        if self.shutdown.is_some() {
            return;
        }
        if self.vassals.get(&id).is_some_and(|v| v.phase == Phase::OnDemand) {
            self.spawn(id);
        }
    }

    /// `id`'s on-demand socket could not be bound: the record is dropped (and
    /// blacklisted, as uWSGI does).
    pub fn handle_bind_failed(&mut self, now: Instant, id: VassalId) {
        let now = self.clock(now);
        if self.vassals.get(&id).is_some_and(|v| v.phase == Phase::OnDemand) {
            self.delete(now, id, true);
        }
    }

    // ----- commands -------------------------------------------------------------------

    /// Reloads every running vassal (SIGHUP to uWSGI's emperor).
    pub fn reload_all(&mut self, now: Instant) {
        let now = self.clock(now);
        let ids: Vec<VassalId> = self.vassals.keys().copied().collect();
        for id in ids {
            self.reload(now, id);
        }
    }

    /// Clears the blacklist (SIGURG to uWSGI's emperor).
    pub fn clear_blacklist(&mut self) {
        self.blacklist.clear();
    }

    /// Stops every vassal; those still alive after the mercy are killed. Reports are
    /// ignored from now on. See [`Emperor::is_finished`].
    pub fn shutdown(&mut self, now: Instant) {
        let now = self.clock(now);
        if self.shutdown.is_some() {
            return;
        }
        let deadline = now + self.config.mercy;
        self.shutdown = Some(deadline);
        let ids: Vec<VassalId> = self.vassals.keys().copied().collect();
        for id in ids {
            let Some(v) = self.vassals.get(&id) else { continue };
            match v.phase {
                Phase::Running { .. } => self.stop(now, id, StopReason::Shutdown),
                Phase::Stopping { pid, .. } | Phase::BackToOnDemand { pid, .. } => {
                    if let Some(v) = self.vassals.get_mut(&id) {
                        v.phase = Phase::Stopping { pid, reason: StopReason::Shutdown, kill_at: deadline };
                        v.status = 1;
                    }
                    self.schedule(id, Timer::Kill, deadline);
                }
                Phase::Spawning => self.stop(now, id, StopReason::Shutdown),
                Phase::Throttled { .. } | Phase::OnDemand | Phase::Exiled => self.delete(now, id, true),
            }
        }
    }

    // ----- time -----------------------------------------------------------------------

    /// Fires every due timer: throttled respawns, kills, heartbeat checks, the shutdown
    /// mercy. Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        // Bounded: each iteration removes one timer; handlers only add timers in the future.
        while let Some(&(at, id, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, id, timer));
            if let Some(v) = self.vassals.get_mut(&id) {
                v.timers.remove(&timer);
            }
            match timer {
                Timer::Spawn => {
                    if self.vassals.get(&id).is_some_and(|v| matches!(v.phase, Phase::Throttled { .. })) {
                        self.start(id);
                    }
                }
                Timer::Kill => self.kill(now, id),
                Timer::Heartbeat => {
                    let Some(v) = self.vassals.get_mut(&id) else { continue };
                    if let Phase::Running { pid } = v.phase {
                        v.last_heartbeat = None;
                        self.stats.kills += 1;
                        self.act(Action::Kill { id, pid });
                        self.emit(id, EventKind::HeartbeatMissed);
                    }
                }
            }
        }
        if let Some(deadline) = self.shutdown
            && now >= deadline
            && !self.mercy_spent
        {
            self.mercy_spent = true;
            let pids: Vec<(VassalId, u32)> =
                self.vassals.values().filter_map(|v| v.phase.pid().map(|p| (v.id, p))).collect();
            for (id, pid) in pids {
                self.cancel(id, Timer::Kill);
                self.stats.kills += 1;
                self.act(Action::Kill { id, pid });
                self.emit(id, EventKind::Killed);
            }
            // The kills above are the last word: no timer is left to fire.
            for v in self.vassals.values_mut() {
                v.timers.clear();
            }
            self.timers.clear();
        }
    }

    // ----- internals ------------------------------------------------------------------

    fn report(&mut self, now: Instant, monitor: MonitorId, mut report: Report) {
        if report.on_demand.as_deref().is_some_and(str::is_empty) {
            report.on_demand = None;
        }
        if let Some(refusal) = self.refusal(&report) {
            // Once per (name, mtime): a listing monitor reports it at every scan.
            if self.refused.get(&report.name) != Some(&report.mtime) {
                self.refused.insert(report.name.clone(), report.mtime);
                let kind = EventKind::Refused(refusal);
                self.push_event(Event { id: None, vassal: report.name.clone(), pid: None, kind });
            }
            // A running vassal whose owner became root is stopped (tyrant).
            if let Some(&id) = self.by_name.get(&report.name)
                && self.config.tyrant
            {
                self.stop(now, id, StopReason::Removed);
            }
            return;
        }
        self.refused.remove(&report.name);
        let Some(&id) = self.by_name.get(&report.name) else {
            self.add(now, monitor, report, None);
            return;
        };
        let Some(v) = self.vassals.get_mut(&id) else { return };
        if v.status == 1 {
            return;
        }
        let owner_changed = self.config.tyrant && (v.report.uid, v.report.gid) != (report.uid, report.gid);
        let newer = report.mtime > v.last_mod;
        let mode_changed = newer && v.report.on_demand.is_some() != report.on_demand.is_some();
        if owner_changed || mode_changed {
            v.report = report;
            self.stop(now, id, StopReason::Changed);
            return;
        }
        if !newer {
            return;
        }
        let mtime = report.mtime;
        v.report = report;
        v.last_mod = mtime;
        match v.phase {
            Phase::Running { .. } => self.reload(now, id),
            Phase::Spawning => {
                if v.pending == Pending::None {
                    v.pending = Pending::Reload;
                }
            }
            Phase::Exiled => {
                v.deaths = 0;
                self.start(id);
            }
            // The new config is used at the next start.
            Phase::OnDemand
            | Phase::Throttled { .. }
            | Phase::BackToOnDemand { .. }
            | Phase::Stopping { .. } => {}
        }
    }

    fn refusal(&self, report: &Report) -> Option<Refusal> {
        if report.name.is_empty() || report.name.len() > MAX_NAME_LEN || report.name.contains('\0') {
            return Some(Refusal::BadName);
        }
        if proto::config_flag(&report.name, &self.config.extra_extensions).is_none() {
            return Some(Refusal::UnknownExtension);
        }
        if self.config.tyrant && (report.uid == 0 || report.gid == 0) {
            return Some(Refusal::TyrantRoot);
        }
        if let Some(config) = &report.config
            && let Err(e) = proto::encode_config(config)
        {
            return Some(Refusal::Config(e));
        }
        None
    }

    fn add(
        &mut self,
        now: Instant,
        monitor: MonitorId,
        report: Report,
        broodlord_num: Option<u64>,
    ) -> VassalId {
        let id = VassalId(self.next_id);
        self.next_id += 1;
        let zerg = broodlord_num.is_some();
        let vassal = Vassal {
            id,
            name: report.name.clone(),
            monitor,
            last_mod: report.mtime,
            born: report.mtime,
            report,
            first_run: None,
            last_run: None,
            loyal: false,
            ready: false,
            accepting: false,
            last_loyal: None,
            last_ready: None,
            last_accepting: None,
            last_heartbeat: None,
            cursed_at: None,
            respawns: 0,
            zerg,
            status: 0,
            phase: Phase::Spawning,
            timers: BTreeMap::new(),
            deaths: 0,
            broodlord_num,
            pending: Pending::None,
        };
        if !zerg {
            self.by_name.insert(vassal.name.clone(), id);
        }
        let on_demand = vassal.report.on_demand.clone();
        self.vassals.insert(id, vassal);
        if let Some(socket) = on_demand {
            if let Some(v) = self.vassals.get_mut(&id) {
                v.phase = Phase::OnDemand;
            }
            self.act(Action::BindOnDemand { id, socket });
            self.emit(id, EventKind::OnDemand);
            return id;
        }
        match self.throttled_until(&self.vassals[&id].name.clone(), now) {
            Some(until) => self.throttle(id, now, until),
            None => self.spawn(id),
        }
        id
    }

    fn add_zerg(&mut self, now: Instant, parent: VassalId) {
        let Some(p) = self.vassals.get(&parent) else { return };
        let mut report = Report::new(format!("{}:zerg", p.name), p.report.mtime);
        report.uid = p.report.uid;
        report.gid = p.report.gid;
        let monitor = p.monitor;
        self.broodlord_counter += 1;
        let n = self.broodlord_counter;
        self.add(now, monitor, report, Some(n));
    }

    fn spawn(&mut self, id: VassalId) {
        let on_demand_trigger;
        let spawn = {
            let Some(v) = self.vassals.get_mut(&id) else { return };
            on_demand_trigger = v.phase == Phase::OnDemand;
            let flag = proto::config_flag(&v.name, &self.config.extra_extensions).unwrap_or("--config");
            let target =
                if v.report.config.is_some() { format!("emperor://{}", v.name) } else { v.name.clone() };
            let config_blob = v.report.config.as_deref().and_then(|c| proto::encode_config(c).ok());
            let mut env = Vec::new();
            if let Some(n) = v.broodlord_num {
                env.push(("UWSGI_BROODLORD_NUM".to_owned(), n.to_string()));
            }
            v.phase = Phase::Spawning;
            v.status = 0;
            Spawn {
                id,
                name: v.name.clone(),
                args: vec![flag.to_owned(), target],
                credentials: self.config.tyrant.then_some((v.report.uid, v.report.gid)),
                config_blob,
                on_demand: on_demand_trigger,
                env,
            }
        };
        self.stats.spawns += 1;
        self.act(Action::Spawn(spawn));
    }

    /// Starts a record that has no process: an on-demand one goes back to waiting for a
    /// connection on its socket (which the driver kept), any other is spawned.
    fn start(&mut self, id: VassalId) {
        let Some(v) = self.vassals.get_mut(&id) else { return };
        if v.report.on_demand.is_none() {
            self.spawn(id);
            return;
        }
        v.phase = Phase::OnDemand;
        v.status = 0;
        v.ready = false;
        v.accepting = false;
        v.cursed_at = None;
        // Its next process starts like its first, on a connection ("spawned").
        v.deaths = 0;
        self.act(Action::WatchOnDemand { id });
        self.emit(id, EventKind::OnDemand);
    }

    fn reload(&mut self, now: Instant, id: VassalId) {
        let Some(v) = self.vassals.get_mut(&id) else { return };
        if !matches!(v.phase, Phase::Running { .. }) {
            return;
        }
        v.respawns += 1;
        v.last_run = Some(now);
        v.ready = false;
        v.accepting = false;
        self.act(Action::Write { id, message: ToVassal::Reload });
        self.emit(id, EventKind::Reloaded);
    }

    fn stop_message(&self) -> ToVassal {
        if self.config.graceful_shutdown { ToVassal::GracefulStop } else { ToVassal::Stop }
    }

    fn stop(&mut self, now: Instant, id: VassalId, reason: StopReason) {
        let message = self.stop_message();
        let kill_after = match reason {
            StopReason::Shutdown => {
                self.shutdown.map_or(self.config.mercy, |d| d.saturating_duration_since(now))
            }
            _ => self.config.curse_tolerance,
        };
        let Some(v) = self.vassals.get_mut(&id) else { return };
        match v.phase {
            Phase::Running { pid } | Phase::BackToOnDemand { pid, .. } => {
                let kill_at = now + kill_after;
                v.phase = Phase::Stopping { pid, reason, kill_at };
                v.status = 1;
                v.cursed_at = Some(now);
                self.cancel(id, Timer::Heartbeat);
                self.schedule(id, Timer::Kill, kill_at);
                self.act(Action::Write { id, message });
                self.emit(id, EventKind::Stopping);
            }
            Phase::Stopping { pid, reason: old, kill_at } => {
                // A removal or shutdown overrides a restart-after-stop (and a crash): the
                // record must not come back.
                let reason = match (old, reason) {
                    (_, StopReason::Shutdown)
                    | (StopReason::Changed | StopReason::Cursed, StopReason::Removed) => reason,
                    _ => old,
                };
                v.phase = Phase::Stopping { pid, reason, kill_at };
            }
            Phase::Spawning => {
                // The spawn is being carried out: stop it once it reports its pid.
                v.pending = Pending::Stop(reason);
            }
            Phase::Throttled { .. } | Phase::OnDemand | Phase::Exiled => self.delete(now, id, true),
        }
    }

    fn remove(&mut self, now: Instant, id: VassalId) {
        self.stop(now, id, StopReason::Removed);
    }

    fn kill(&mut self, now: Instant, id: VassalId) {
        let Some(v) = self.vassals.get_mut(&id) else { return };
        let Some(pid) = v.phase.pid() else { return };
        let again = now + self.config.curse_tolerance;
        v.cursed_at = Some(now);
        self.stats.kills += 1;
        self.act(Action::Kill { id, pid });
        self.emit(id, EventKind::Killed);
        self.schedule(id, Timer::Kill, again);
    }

    fn crashed(&mut self, now: Instant, id: VassalId, status: ExitStatus) {
        self.stats.deaths += 1;
        let Some(v) = self.vassals.get_mut(&id) else { return };
        v.deaths += 1;
        v.ready = false;
        v.accepting = false;
        v.last_heartbeat = None;
        let loyal = v.loyal;
        // The next process must prove itself again (uWSGI's respawn is a new, unloyal
        // instance): a once-loyal vassal that keeps crashing is throttled from its second
        // crash on, not respawned in a tight loop.
        v.loyal = false;
        let name = v.name.clone();
        let zerg = v.zerg;
        self.emit(id, EventKind::Died(status));
        if zerg {
            // Zergs are reinforcements on request; a dead one is not replaced.
            self.delete(now, id, true);
            return;
        }
        if status.code == Some(26) {
            if let Some(v) = self.vassals.get_mut(&id) {
                v.phase = Phase::Exiled;
                v.status = 0;
            }
            self.emit(id, EventKind::Exiled);
            return;
        }
        if !loyal {
            self.blame(&name, now);
        }
        match self.throttled_until(&name, now) {
            Some(until) => self.throttle(id, now, until),
            None => self.start(id),
        }
    }

    fn throttle(&mut self, id: VassalId, now: Instant, until: Instant) {
        if let Some(v) = self.vassals.get_mut(&id) {
            v.phase = Phase::Throttled { until };
            v.status = 0;
        }
        self.schedule(id, Timer::Spawn, until);
        self.emit(id, EventKind::Throttled { delay: until.saturating_duration_since(now) });
    }

    fn throttled_until(&self, name: &str, now: Instant) -> Option<Instant> {
        let entry = self.blacklist.get(name)?;
        let until = entry.last_attempt + entry.level;
        (until > now).then_some(until)
    }

    fn blame(&mut self, name: &str, now: Instant) {
        if !self.config.blacklist {
            return;
        }
        let (step, cap, growth) =
            (self.config.throttle, self.config.max_throttle, self.config.throttle_growth);
        match self.blacklist.get_mut(name) {
            Some(e) => {
                let next = match growth {
                    ThrottleGrowth::Linear => e.level.saturating_add(step),
                    ThrottleGrowth::Doubling => e.level.saturating_mul(2),
                };
                e.level = next.min(cap);
                e.attempts += 1;
                e.last_attempt = now;
            }
            None => {
                let entry = Blacklisted {
                    name: name.to_owned(),
                    level: step,
                    attempts: 0,
                    first_attempt: now,
                    last_attempt: now,
                };
                self.blacklist.insert(name.to_owned(), entry);
            }
        }
    }

    fn delete(&mut self, now: Instant, id: VassalId, blame: bool) {
        let Some(v) = self.vassals.remove(&id) else { return };
        for (timer, at) in &v.timers {
            self.timers.remove(&(*at, id, *timer));
        }
        if let Some(pid) = v.phase.pid()
            && self.by_pid.get(&pid) == Some(&id)
        {
            self.by_pid.remove(&pid);
        }
        if self.by_name.get(&v.name) == Some(&id) {
            self.by_name.remove(&v.name);
        }
        // uWSGI blacklists every record deleted before it was loyal (spec §2.6), except
        // on-demand records that never ran and zergs.
        if blame && !v.loyal && !v.zerg && v.first_run.is_some() && self.shutdown.is_none() {
            self.blame(&v.name, now);
        }
        self.act(Action::Forget { id });
        self.push_event(Event {
            id: Some(id),
            vassal: v.name,
            pid: v.phase.pid(),
            kind: EventKind::Destroyed,
        });
    }

    fn schedule(&mut self, id: VassalId, timer: Timer, at: Instant) {
        self.cancel(id, timer);
        if let Some(v) = self.vassals.get_mut(&id) {
            v.timers.insert(timer, at);
            self.timers.insert((at, id, timer));
        }
    }

    fn cancel(&mut self, id: VassalId, timer: Timer) {
        if let Some(v) = self.vassals.get_mut(&id)
            && let Some(at) = v.timers.remove(&timer)
        {
            self.timers.remove(&(at, id, timer));
        }
    }

    fn act(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    fn emit(&mut self, id: VassalId, kind: EventKind) {
        let Some(v) = self.vassals.get(&id) else { return };
        let event = Event { id: Some(id), vassal: v.name.clone(), pid: v.phase.pid(), kind };
        self.push_event(event);
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= EVENT_CAP {
            self.events.pop_front();
            self.stats.events_dropped += 1;
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

/// The config a record runs: its name, or for a zerg (`app.ini:zerg`) its parent's.
fn config_name(v: &Vassal) -> &str {
    if v.zerg { v.name.rsplit_once(':').map_or(v.name.as_str(), |(base, _)| base) } else { &v.name }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "a base Instant for virtual time; nothing depends on its value")]
mod tests {
    use super::*;

    const M: MonitorId = MonitorId(0);

    struct Harness {
        e: Emperor,
        t0: Instant,
        now: Instant,
        next_pid: u32,
        actions: Vec<Action>,
        events: Vec<Event>,
    }

    impl Harness {
        fn new(config: EmperorConfig) -> Self {
            let t0 = Instant::now();
            let e = Emperor::new(config).expect("valid config");
            Self { e, t0, now: t0, next_pid: 100, actions: Vec::new(), events: Vec::new() }
        }

        /// Drains outputs, answering spawns with fresh pids.
        fn drain(&mut self) {
            for _ in 0..1000 {
                let Some(a) = self.e.poll_action() else { break };
                if let Action::Spawn(s) = &a {
                    self.next_pid += 1;
                    self.e.handle_spawned(self.now, s.id, self.next_pid);
                }
                self.actions.push(a);
            }
            self.events.extend(std::iter::from_fn(|| self.e.poll_event()));
        }

        fn scan(&mut self, reports: &[(&str, u64)]) {
            let reports = reports.iter().map(|(n, t)| Report::new(*n, *t)).collect();
            self.e.handle_scan(self.now, M, reports);
            self.drain();
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
            self.e.handle_timeout(self.now);
            self.drain();
        }

        fn pid(&self, name: &str) -> Option<u32> {
            self.e.by_name(name).and_then(Vassal::pid)
        }

        fn kinds(&mut self) -> Vec<&'static str> {
            std::mem::take(&mut self.events).iter().map(|e| e.kind.name()).collect()
        }

        fn take_actions(&mut self) -> Vec<Action> {
            std::mem::take(&mut self.actions)
        }
    }

    #[test]
    fn spawn_reload_destroy() {
        let mut h = Harness::new(EmperorConfig::default());
        h.scan(&[("a.ini", 10), ("notes.txt", 10)]);
        let pid = h.pid("a.ini").expect("spawned");
        assert_eq!(h.kinds(), ["refused", "spawned"]);
        h.take_actions();
        let id = h.e.by_name("a.ini").map(|v| v.id).expect("record");
        for b in [1, 5, 17, 26] {
            h.e.handle_byte(h.now, id, b);
        }
        h.drain();
        assert_eq!(h.kinds(), ["ready", "accepting", "loyal"]);
        // Same mtime: nothing. Newer: reload byte, same pid.
        h.scan(&[("a.ini", 10)]);
        assert!(h.take_actions().is_empty());
        h.scan(&[("a.ini", 11)]);
        assert_eq!(h.take_actions(), [Action::Write { id, message: ToVassal::Reload }]);
        assert_eq!(h.pid("a.ini"), Some(pid));
        assert_eq!(h.kinds(), ["reloaded"]);
        // Older mtime never reloads.
        h.scan(&[("a.ini", 5)]);
        assert!(h.take_actions().is_empty());
        // Removed: stop byte, then destroyed when reaped; no blacklist (it was loyal).
        h.scan(&[]);
        assert_eq!(h.take_actions(), [Action::Write { id, message: ToVassal::Stop }]);
        h.e.handle_exit(h.now, pid, ExitStatus { code: Some(0), signal: None });
        h.drain();
        assert_eq!(h.kinds(), ["stopping", "destroyed"]);
        assert!(h.e.by_name("a.ini").is_none());
        assert_eq!(h.e.blacklist().count(), 0);
    }

    #[test]
    fn crashes_respawn_with_growing_throttle() {
        let mut h = Harness::new(EmperorConfig::default());
        h.scan(&[("a.ini", 10)]);
        let mut delays = Vec::new();
        for _ in 0..4 {
            let pid = h.pid("a.ini").expect("running");
            h.events.clear();
            h.e.handle_exit(h.now, pid, ExitStatus { code: None, signal: Some(9) });
            h.drain();
            let delay = h.events.iter().find_map(|e| match e.kind {
                EventKind::Throttled { delay } => Some(delay),
                _ => None,
            });
            delays.push(delay.unwrap_or_default());
            // Not before the delay...
            if let Some(d) = delay {
                h.advance(d - Duration::from_millis(1));
                assert_eq!(h.pid("a.ini"), None);
                h.advance(Duration::from_millis(1));
            }
            assert!(h.pid("a.ini").is_some(), "respawned");
        }
        assert_eq!(delays, [1, 2, 3, 4].map(Duration::from_secs));
        // Loyal clears the blacklist: the next crash respawns at once.
        let id = h.e.by_name("a.ini").map(|v| v.id).expect("record");
        h.e.handle_byte(h.now, id, 17);
        let pid = h.pid("a.ini").expect("running");
        h.e.handle_exit(h.now, pid, ExitStatus { code: Some(1), signal: None });
        h.drain();
        assert!(h.pid("a.ini").is_some());
        assert!(h.kinds().contains(&"respawned"));
        // The respawned process has not been loyal yet: crashing again is throttled (a
        // once-loyal vassal that keeps crashing at startup must not spin).
        assert!(!h.e.by_name("a.ini").expect("record").loyal);
        let pid = h.pid("a.ini").expect("running");
        h.e.handle_exit(h.now, pid, ExitStatus { code: Some(1), signal: None });
        h.drain();
        assert_eq!(h.pid("a.ini"), None, "throttled, not respawned at once");
        assert!(h.kinds().contains(&"throttled"));
        h.advance(Duration::from_secs(1));
        assert!(h.pid("a.ini").is_some());
    }

    #[test]
    fn exit_26_exiles_until_the_config_changes() {
        let mut h = Harness::new(EmperorConfig::default());
        h.scan(&[("a.ini", 10)]);
        let pid = h.pid("a.ini").expect("running");
        h.e.handle_exit(h.now, pid, ExitStatus { code: Some(26), signal: None });
        h.drain();
        h.advance(Duration::from_secs(600));
        h.scan(&[("a.ini", 10)]);
        assert_eq!(h.pid("a.ini"), None);
        h.scan(&[("a.ini", 11)]);
        assert!(h.pid("a.ini").is_some());
    }

    #[test]
    fn eof_curses_then_kills_then_respawns() {
        let mut h = Harness::new(EmperorConfig::default());
        h.scan(&[("a.ini", 10)]);
        let id = h.e.by_name("a.ini").map(|v| v.id).expect("record");
        h.e.handle_byte(h.now, id, 17);
        let pid = h.pid("a.ini").expect("running");
        h.e.handle_eof(h.now, id);
        h.drain();
        h.take_actions();
        h.advance(Duration::from_secs(29));
        assert!(h.take_actions().is_empty());
        h.advance(Duration::from_secs(1));
        assert_eq!(h.take_actions(), [Action::Kill { id, pid }]);
        h.e.handle_exit(h.now, pid, ExitStatus { code: None, signal: Some(9) });
        h.drain();
        assert_ne!(h.pid("a.ini"), Some(pid));
        assert!(h.pid("a.ini").is_some());
        assert!(h.kinds().ends_with(&["killed", "died", "respawned"]));
    }

    #[test]
    fn heartbeat_watchdog_kills() {
        let mut h = Harness::new(EmperorConfig::default());
        h.scan(&[("a.ini", 10)]);
        let id = h.e.by_name("a.ini").map(|v| v.id).expect("record");
        let pid = h.pid("a.ini").expect("running");
        h.advance(Duration::from_secs(100));
        assert!(
            h.take_actions().iter().all(|a| !matches!(a, Action::Kill { .. })),
            "no heartbeat, no watchdog"
        );
        h.e.handle_byte(h.now, id, 26);
        h.advance(Duration::from_secs(20));
        h.e.handle_byte(h.now, id, 26);
        h.advance(Duration::from_secs(29));
        assert!(h.take_actions().is_empty());
        h.advance(Duration::from_secs(1));
        assert_eq!(h.take_actions(), [Action::Kill { id, pid }]);
        assert!(h.kinds().contains(&"heartbeat-missed"));
    }

    #[test]
    fn on_demand_cycle() {
        let mut h = Harness::new(EmperorConfig::default());
        let mut r = Report::new("od.ini", 10);
        r.on_demand = Some("127.0.0.1:9000".into());
        h.e.handle_scan(h.now, M, vec![r.clone()]);
        h.drain();
        let id = h.e.by_name("od.ini").map(|v| v.id).expect("record");
        assert_eq!(h.take_actions(), [Action::BindOnDemand { id, socket: "127.0.0.1:9000".into() }]);
        assert_eq!(h.pid("od.ini"), None);
        h.e.handle_connection(h.now, id);
        h.drain();
        let acts = h.take_actions();
        assert!(matches!(&acts[..], [Action::Spawn(s)] if s.on_demand));
        let pid = h.pid("od.ini").expect("running");
        h.e.handle_byte(h.now, id, 22);
        h.drain();
        assert_eq!(h.take_actions(), [Action::Write { id, message: ToVassal::Stop }]);
        h.e.handle_exit(h.now, pid, ExitStatus { code: Some(0), signal: None });
        h.drain();
        assert_eq!(h.take_actions(), [Action::CloseChannels { id }, Action::WatchOnDemand { id }]);
        assert_eq!(h.pid("od.ini"), None);
        // A crash goes back to waiting on the socket (kept by the driver): the next
        // process gets it as fd 0 again, on the next connection.
        h.e.handle_connection(h.now, id);
        h.drain();
        let acts = h.take_actions();
        assert!(matches!(&acts[..], [Action::Spawn(s)] if s.on_demand));
        let pid = h.pid("od.ini").expect("running");
        h.kinds();
        h.e.handle_exit(h.now, pid, ExitStatus { code: None, signal: Some(9) });
        h.drain();
        assert_eq!(h.pid("od.ini"), None);
        assert_eq!(h.kinds(), ["died", "throttled"], "never loyal: blacklisted");
        assert_eq!(h.take_actions(), [Action::CloseChannels { id }]);
        h.advance(Duration::from_secs(1));
        assert_eq!(h.take_actions(), [Action::WatchOnDemand { id }]);
        assert_eq!(h.kinds(), ["on-demand"]);
        assert!(h.e.by_name("od.ini").is_some_and(Vassal::is_on_demand_waiting));
        h.e.handle_connection(h.now, id);
        h.drain();
        let acts = h.take_actions();
        assert!(matches!(&acts[..], [Action::Spawn(s)] if s.on_demand), "{acts:?}");
        assert_eq!(h.kinds(), ["spawned"]);
        // An empty socket name is no socket (2.0.21 binds "" and never runs it).
        r.name = "plain.ini".into();
        r.on_demand = Some(String::new());
        h.e.handle_scan(h.now, M, vec![r]);
        h.drain();
        assert!(h.pid("plain.ini").is_some());
    }

    #[test]
    fn broodlord_and_pipe_mode() {
        let config = EmperorConfig { broodlord: 2, ..EmperorConfig::default() };
        let mut h = Harness::new(config);
        let mut r = Report::new("b.ini", 10);
        r.config = Some(b"[uwsgi]\nsocket = :3031\n".to_vec());
        h.e.handle_scan(h.now, M, vec![r]);
        h.drain();
        let acts = h.take_actions();
        let Some(Action::Spawn(s)) = acts.first() else { panic!("{acts:?}") };
        assert_eq!(s.args, ["--ini", "emperor://b.ini"]);
        assert_eq!(s.config_blob.as_ref().map(|b| b[..4].to_vec()), Some(vec![0x73, 23, 0, 0]));
        let id = s.id;
        for _ in 0..3 {
            h.e.handle_byte(h.now, id, 30);
        }
        h.drain();
        let zergs: Vec<Spawn> = h
            .take_actions()
            .into_iter()
            .filter_map(|a| if let Action::Spawn(s) = a { Some(s) } else { None })
            .collect();
        assert_eq!(zergs.len(), 2, "capped at --emperor-broodlord");
        assert_eq!(zergs[0].args, ["--ini", "b.ini:zerg"]);
        assert_eq!(zergs[1].env, [("UWSGI_BROODLORD_NUM".to_owned(), "2".to_owned())]);
        // Byte 2 pushes the config again; byte 1 never does.
        h.e.handle_byte(h.now, id, 2);
        h.drain();
        assert!(matches!(&h.take_actions()[..], [Action::PushConfig { .. }]));
        // The base config disappears: its zergs go too.
        h.e.handle_scan(h.now, M, vec![]);
        h.drain();
        let stops = h.take_actions().iter().filter(|a| matches!(a, Action::Write { .. })).count();
        assert_eq!(stops, 3);
    }

    #[test]
    fn tyrant_refuses_root_and_drops_privileges() {
        let config = EmperorConfig { tyrant: true, ..EmperorConfig::default() };
        let mut h = Harness::new(config);
        let mut r = Report::new("t.ini", 10);
        h.e.handle_scan(h.now, M, vec![r.clone()]);
        h.e.handle_scan(h.now, M, vec![r.clone()]);
        h.drain();
        assert_eq!(h.kinds(), ["refused"], "refused once, not at every scan");
        r.uid = 1001;
        r.gid = 1001;
        h.e.handle_scan(h.now, M, vec![r.clone()]);
        h.drain();
        let acts = h.take_actions();
        assert!(matches!(&acts[..], [Action::Spawn(s)] if s.credentials == Some((1001, 1001))));
        // Owner change: stop, then start again as the new owner.
        r.uid = 1002;
        h.e.handle_scan(h.now, M, vec![r]);
        h.drain();
        let pid = h.pid("t.ini").expect("running");
        h.e.handle_exit(h.now, pid, ExitStatus { code: Some(0), signal: None });
        h.drain();
        let acts = h.take_actions();
        assert!(acts.iter().any(|a| matches!(a, Action::Spawn(s) if s.credentials == Some((1002, 1001)))));
    }

    #[test]
    fn shutdown_stops_everything_and_kills_after_mercy() {
        let config = EmperorConfig { graceful_shutdown: true, ..EmperorConfig::default() };
        let mut h = Harness::new(config);
        h.scan(&[("a.ini", 1), ("b.ini", 1)]);
        let (a, b) = (h.pid("a.ini").expect("a"), h.pid("b.ini").expect("b"));
        h.take_actions();
        h.e.shutdown(h.now);
        h.drain();
        let stops: Vec<_> = h.take_actions();
        assert_eq!(stops.len(), 2);
        assert!(stops.iter().all(|s| matches!(s, Action::Write { message: ToVassal::GracefulStop, .. })));
        h.e.handle_exit(h.now, a, ExitStatus { code: Some(0), signal: None });
        h.drain();
        assert!(!h.e.is_finished());
        h.scan(&[("c.ini", 1)]);
        assert!(h.pid("c.ini").is_none(), "no spawns during shutdown");
        h.advance(Duration::from_secs(30));
        assert!(h.take_actions().iter().any(|x| matches!(x, Action::Kill { pid, .. } if *pid == b)));
        assert!(h.e.is_finished());
        assert_eq!(h.e.poll_timeout(), None);
        let _ = h.t0;
    }
}
