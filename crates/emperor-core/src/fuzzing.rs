//! Entry points for the fuzz targets and regression tests (feature `__fuzzing`). Private:
//! may change or vanish.
//!
//! Each asserts invariants, not only the absence of panics. They read the clock once, for
//! a base `Instant`; nothing depends on its value.
#![allow(clippy::disallowed_methods, reason = "a base Instant for virtual time; no behaviour depends on it")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::config::{EmperorConfig, ThrottleGrowth};
use crate::emperor::{Action, Emperor, EventKind, ExitStatus, MonitorId, Report, VassalId};
use crate::proto::{self, CONFIG_HEADER_LEN, ConfigPipeError, ConfigReader, MAX_CONFIG_LEN};
use crate::vassal::{Command, VassalChannel};

// ----- emperor_core_channel ---------------------------------------------------------------

/// The configs the channel target's monitors know. `pipe.ini` comes with its config text
/// (pipe mode), `od.ini` with an on-demand socket, `e.conf` needs the extra extension,
/// `junk.txt` is always refused.
const NAMES: [&str; 6] = ["a.ini", "b.ini", "pipe.ini", "od.ini", "e.conf", "junk.txt"];

/// The bytes a vassal means something with (spec §1.4).
const MEANINGFUL: [u8; 7] = [1, 2, 5, 17, 22, 26, 30];

/// Bound of one drain: every input produces a few actions, never thousands.
const DRAIN_LIMIT: usize = 10_000;

/// A driver stand-in for the channel target: a fake process table that answers spawns at
/// once (as `driver.rs` does), and the bookkeeping to check the core's actions.
struct Harness {
    e: Emperor,
    now: Instant,
    next_pid: u32,
    /// Live processes: pid → the record it was spawned for.
    alive: BTreeMap<u32, VassalId>,
    /// Every pid ever handed out, to report stale exits.
    ever: Vec<u32>,
    /// Records whose channel is open (spawned, not yet closed or at EOF).
    open: BTreeSet<VassalId>,
    /// Records the core forgot: no action may name them again.
    forgotten: BTreeSet<VassalId>,
    /// The largest id seen.
    max_id: u64,
    /// The next `Action::Spawn` fails (fork/exec error).
    fail_next_spawn: bool,
    mtimes: [u64; NAMES.len()],
    broodlord: usize,
    mercy: Duration,
}

impl Harness {
    fn new(config: EmperorConfig) -> Self {
        let broodlord = config.broodlord;
        let mercy = config.mercy;
        let e = Emperor::new(config).expect("the harness builds valid configs");
        Self {
            e,
            now: Instant::now(),
            next_pid: 100,
            alive: BTreeMap::new(),
            ever: Vec::new(),
            open: BTreeSet::new(),
            forgotten: BTreeSet::new(),
            max_id: 0,
            fail_next_spawn: false,
            mtimes: [1; NAMES.len()],
            broodlord,
            mercy,
        }
    }

    fn report(&self, i: usize, uid: u32, on_demand_empty: bool) -> Report {
        let name = NAMES[i % NAMES.len()];
        let mut r = Report::new(name, self.mtimes[i % NAMES.len()]);
        r.uid = uid;
        r.gid = uid;
        if name == "pipe.ini" {
            // The mtime changes the text, so a reload pushes something new; mtime 0 would
            // be an empty config, which is refused.
            let text = format!("[uwsgi]\nversion = {}\n", r.mtime);
            r.config = Some(text.into_bytes());
        }
        if name == "od.ini" {
            r.on_demand = Some(if on_demand_empty { String::new() } else { "127.0.0.1:9000".into() });
        }
        r
    }

    /// A record id: an open channel's when `open_only` (what a real channel can say),
    /// else any id up to one past the largest seen (unknown ids included).
    fn pick_id(&self, a: u8, open_only: bool) -> VassalId {
        if open_only && !self.open.is_empty() {
            let i = usize::from(a) % self.open.len();
            if let Some(&id) = self.open.iter().nth(i) {
                return id;
            }
        }
        VassalId(u64::from(a) % (self.max_id + 2))
    }

    fn exit_status(b: u8) -> ExitStatus {
        match b % 4 {
            0 => ExitStatus { code: Some(0), signal: None },
            1 => ExitStatus { code: Some(1), signal: None },
            2 => ExitStatus { code: Some(26), signal: None },
            _ => ExitStatus { code: None, signal: Some(9) },
        }
    }

    /// Carries out the core's actions the way the driver does, checking each.
    fn drain(&mut self) {
        for _ in 0..DRAIN_LIMIT {
            let Some(action) = self.e.poll_action() else {
                self.drain_events();
                return;
            };
            match action {
                Action::Spawn(s) => {
                    assert!(!self.forgotten.contains(&s.id), "spawn of a forgotten record {:?}", s.id);
                    assert!(!self.e.is_shutting_down(), "spawn of {} during the shutdown", s.name);
                    assert!(
                        !self.alive.values().any(|&id| id == s.id),
                        "second process for {:?} ({}) while one is alive",
                        s.id,
                        s.name
                    );
                    assert_eq!(s.args.len(), 2, "flag and name: {:?}", s.args);
                    self.max_id = self.max_id.max(s.id.0);
                    if std::mem::take(&mut self.fail_next_spawn) {
                        self.e.handle_spawn_failed(self.now, s.id);
                    } else {
                        self.next_pid += 1;
                        let pid = self.next_pid;
                        self.alive.insert(pid, s.id);
                        self.ever.push(pid);
                        self.open.insert(s.id);
                        if let Some(blob) = &s.config_blob {
                            check_blob(blob);
                        }
                        self.e.handle_spawned(self.now, s.id, pid);
                        assert_eq!(
                            self.e.by_pid(pid).map(|v| v.id),
                            Some(s.id),
                            "the process spawned for {} is not tracked: it would leak",
                            s.name
                        );
                    }
                }
                Action::Write { id, .. } => {
                    assert!(!self.forgotten.contains(&id), "write to a forgotten record {id:?}");
                    assert!(self.alive.values().any(|&p| p == id), "write to {id:?}, which has no process");
                }
                Action::PushConfig { id, blob } => {
                    assert!(!self.forgotten.contains(&id), "push to a forgotten record {id:?}");
                    check_blob(&blob);
                    let config = self.e.vassal(id).and_then(|v| v.report.config.clone());
                    assert_eq!(
                        config.as_deref(),
                        Some(&blob[CONFIG_HEADER_LEN..]),
                        "pushed config of {id:?}"
                    );
                }
                Action::Kill { id, pid } => {
                    assert_eq!(
                        self.alive.get(&pid),
                        Some(&id),
                        "kill of pid {pid}, not a live process of {id:?}"
                    );
                }
                Action::BindOnDemand { id, socket } => {
                    assert!(!self.forgotten.contains(&id), "bind for a forgotten record {id:?}");
                    assert!(!socket.is_empty(), "bind of an empty socket name");
                    self.max_id = self.max_id.max(id.0);
                }
                Action::WatchOnDemand { id } => {
                    assert!(!self.forgotten.contains(&id), "watch for a forgotten record {id:?}");
                }
                Action::CloseChannels { id } => {
                    self.open.remove(&id);
                }
                Action::Forget { id } => {
                    assert!(
                        !self.alive.values().any(|&p| p == id),
                        "{id:?} forgotten while its process is alive"
                    );
                    assert!(self.forgotten.insert(id), "{id:?} forgotten twice");
                    self.open.remove(&id);
                }
            }
        }
        panic!("more than {DRAIN_LIMIT} actions for one input");
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.e.poll_event() {
            if matches!(event.kind, EventKind::Spawned | EventKind::Respawned) {
                assert!(event.pid.is_some(), "{:?} without a pid", event.kind);
            }
            if let Some(id) = event.id {
                self.max_id = self.max_id.max(id.0);
            }
        }
    }

    /// The structural invariants, after every input.
    fn check(&self) {
        let mut pids = BTreeSet::new();
        let mut names = BTreeSet::new();
        for v in self.e.vassals() {
            if let Some(pid) = v.pid() {
                assert!(pids.insert(pid), "pid {pid} maps to two vassals");
                assert_eq!(
                    self.alive.get(&pid),
                    Some(&v.id),
                    "{} holds pid {pid}, not its live process",
                    v.name
                );
                assert_eq!(self.e.by_pid(pid).map(|x| x.id), Some(v.id), "by_pid({pid})");
            }
            if !v.zerg {
                assert!(names.insert(v.name.clone()), "two records named {}", v.name);
                assert_eq!(self.e.by_name(&v.name).map(|x| x.id), Some(v.id), "by_name({})", v.name);
            }
            assert!(!self.forgotten.contains(&v.id), "{:?} forgotten but still listed", v.id);
        }
        for (&pid, &id) in &self.alive {
            assert_eq!(
                self.e.vassal(id).and_then(|v| v.pid()),
                Some(pid),
                "live process {pid} of {id:?} is not tracked: it would leak"
            );
        }
        assert!(self.e.zergs() <= self.broodlord, "{} zergs, cap {}", self.e.zergs(), self.broodlord);
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.e.handle_timeout(self.now);
        self.drain();
        if let Some(next) = self.e.poll_timeout() {
            assert!(next > self.now, "a timer due at {next:?} survived handle_timeout");
        }
    }

    fn exit(&mut self, pid: u32, status: ExitStatus) {
        self.alive.remove(&pid);
        self.e.handle_exit(self.now, pid, status);
    }

    /// One 3-byte record.
    fn step(&mut self, op: u8, a: u8, b: u8) {
        let flags = op >> 4;
        let open_only = flags & 2 != 0;
        match op & 0x0f {
            0..=4 => {
                let byte = if flags & 1 != 0 { MEANINGFUL[usize::from(b) % MEANINGFUL.len()] } else { b };
                let id = self.pick_id(a, open_only);
                self.e.handle_byte(self.now, id, byte);
            }
            5 => {
                let id = self.pick_id(a, open_only);
                self.open.remove(&id);
                self.e.handle_eof(self.now, id);
            }
            6 | 7 => {
                let ms = u64::from(u16::from_le_bytes([a, b]));
                let scale = if flags & 1 != 0 { 100 } else { 1 };
                self.advance(Duration::from_millis(ms * scale));
            }
            8 | 9 => {
                if flags & 1 == 0 && !self.alive.is_empty() {
                    let i = usize::from(a) % self.alive.len();
                    if let Some(&pid) = self.alive.keys().nth(i) {
                        self.exit(pid, Self::exit_status(b));
                    }
                } else {
                    // A pid the emperor does not own (any more): ignored.
                    let stale = self.ever.get(usize::from(a)).copied().unwrap_or(1);
                    if !self.alive.contains_key(&stale) {
                        self.e.handle_exit(self.now, stale, Self::exit_status(b));
                    }
                }
            }
            10 => {
                let uid = if flags & 4 != 0 { 0 } else { 1000 + u32::from(flags & 1) };
                let mut reports = Vec::new();
                for i in 0..NAMES.len() {
                    if a & (1 << i) != 0 {
                        self.mtimes[i] += u64::from((b >> i) & 1);
                        reports.push(self.report(i, uid, flags & 8 != 0));
                    }
                }
                self.e.handle_scan(self.now, MonitorId(0), reports);
            }
            11 => {
                // An event monitor (a second one, so names can be owned by either).
                let i = usize::from(a) % NAMES.len();
                if flags & 1 != 0 {
                    self.e.handle_removed(self.now, MonitorId(1), NAMES[i]);
                } else {
                    self.mtimes[i] += u64::from(b & 1);
                    let uid = if flags & 4 != 0 { 0 } else { 1000 };
                    let report = self.report(i, uid, flags & 8 != 0);
                    self.e.handle_report(self.now, MonitorId(1), report);
                }
            }
            12 => {
                let id = self.pick_id(a, open_only);
                if flags & 1 != 0 {
                    self.e.handle_bind_failed(self.now, id);
                } else {
                    self.e.handle_connection(self.now, id);
                }
            }
            13 => {
                if flags & 1 != 0 {
                    self.e.clear_blacklist();
                } else {
                    self.e.reload_all(self.now);
                }
            }
            _ => {
                if flags & 1 != 0 {
                    self.e.shutdown(self.now);
                } else {
                    self.fail_next_spawn = true;
                }
            }
        }
        self.drain();
        self.check();
    }

    /// Shutdown, every live process exits, the mercy passes: nothing may be left.
    fn finish(&mut self) {
        self.fail_next_spawn = false;
        self.e.shutdown(self.now);
        self.drain();
        self.check();
        // Bounded: no spawn happens during the shutdown (checked in `drain`).
        while let Some((&pid, _)) = self.alive.iter().next() {
            self.exit(pid, ExitStatus { code: Some(0), signal: None });
            self.drain();
            self.check();
        }
        let mercy = self.mercy;
        self.advance(mercy + Duration::from_secs(1));
        self.check();
        assert!(self.e.is_finished(), "not finished after the shutdown with no process left");
        let left: Vec<String> = self.e.vassals().map(|v| v.name.clone()).collect();
        assert!(left.is_empty(), "records left after the shutdown: {left:?}");
        assert_eq!(self.e.poll_timeout(), None, "a timer left after the shutdown");
    }
}

fn check_blob(blob: &[u8]) {
    assert!(blob.len() > CONFIG_HEADER_LEN, "config blob of {} bytes", blob.len());
    let mut header = [0u8; CONFIG_HEADER_LEN];
    header.copy_from_slice(&blob[..CONFIG_HEADER_LEN]);
    assert_eq!(proto::decode_config_header(header), Ok(blob.len() - CONFIG_HEADER_LEN), "blob header");
}

/// The emperor's configuration from the first input byte.
fn channel_config(byte: u8) -> EmperorConfig {
    let mut c = EmperorConfig {
        graceful_shutdown: byte & 1 != 0,
        blacklist: byte & 2 == 0,
        tyrant: byte & 4 != 0,
        broodlord: usize::from((byte >> 3) & 3),
        ..EmperorConfig::default()
    };
    if byte & 0x20 != 0 {
        c.throttle_growth = ThrottleGrowth::Doubling;
    }
    if byte & 0x40 != 0 {
        // Short timers, so that the time records reach the caps and the kills.
        c.throttle = Duration::from_millis(10);
        c.max_throttle = Duration::from_millis(100);
        c.required_heartbeat = Duration::from_secs(2);
        c.curse_tolerance = Duration::from_secs(1);
        c.mercy = Duration::from_secs(1);
    }
    if byte & 0x80 != 0 {
        c.extra_extensions = vec![".conf".to_owned()];
    }
    c
}

/// `emperor_core_channel`: the first byte picks the configuration (graceful stops, no
/// blacklist, tyrant, broodlord 0–3, doubling throttle, short timers, extra extension);
/// `a.ini` and `b.ini` are spawned; then 3-byte records `[op, a, b]` drive the core:
/// channel bytes (`op & 15` 0–4; raw or one of the meaningful ones, for any id or an open
/// channel's), EOF (5), time (6–7, up to 6553 s), exits of live or stale pids (8–9),
/// listing scans and event-monitor reports/removals of six names (10–11), on-demand
/// connections and bind failures (12), reload-all / clear-blacklist (13), a failing spawn
/// or the shutdown (14–15). After every record: a pid maps to at most one vassal and each
/// live process to exactly its vassal (nothing leaks), names are unique, zergs within the
/// cap, no action names a forgotten record, kills only hit live processes, writes only
/// go to vassals with a process, pushed configs are the record's, no spawn during the
/// shutdown, `handle_timeout` leaves no due timer. At the end: shutdown, every process
/// exits, the mercy passes, and no record or timer is left.
pub fn channel(data: &[u8]) {
    let Some((&config, rest)) = data.split_first() else { return };
    let mut h = Harness::new(channel_config(config));
    let uid = 1000;
    let reports = vec![h.report(0, uid, false), h.report(1, uid, false)];
    h.e.handle_scan(h.now, MonitorId(0), reports);
    h.drain();
    h.check();
    for rec in rest.chunks_exact(3) {
        h.step(rec[0], rec[1], rec[2]);
    }
    h.finish();
}

// ----- emperor_core_config_pipe -----------------------------------------------------------

/// A tiny LCG: the chunk schedule, from the input's first byte.
struct Schedule {
    state: u32,
    max: usize,
}

impl Schedule {
    fn new(byte: u8) -> Self {
        const MAX: [usize; 8] = [1, 2, 3, 4, 7, 16, 300, 70_000];
        Self {
            state: u32::from(byte).wrapping_mul(2_654_435_761).wrapping_add(1),
            max: MAX[usize::from(byte & 7)],
        }
    }

    fn next(&mut self) -> u32 {
        self.state = self.state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        self.state >> 8
    }

    /// A chunk size in `1..=max`.
    fn size(&mut self) -> usize {
        1 + usize::try_from(self.next()).unwrap_or(0) % self.max
    }
}

/// What a config stream yields: a config, or the error that ended a blob.
type Blob = Result<Vec<u8>, ConfigPipeError>;

/// An independent byte-at-a-time reader of the config stream, with `VassalChannel`'s
/// policy on a bad header: report it, reset, and drop the rest of that read.
#[derive(Default)]
struct RefReader {
    header: Vec<u8>,
    want: Option<usize>,
    body: Vec<u8>,
}

impl RefReader {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<Blob>) {
        for &b in chunk {
            match self.want {
                None => {
                    self.header.push(b);
                    if self.header.len() == CONFIG_HEADER_LEN {
                        let len = usize::from(u16::from_le_bytes([self.header[1], self.header[2]]));
                        let error = if self.header[0] != proto::CONFIG_MODIFIER1 {
                            Some(ConfigPipeError::BadModifier(self.header[0]))
                        } else if len == 0 {
                            Some(ConfigPipeError::Empty)
                        } else {
                            None
                        };
                        if let Some(e) = error {
                            out.push(Err(e));
                            *self = Self::default();
                            return;
                        }
                        self.want = Some(len);
                    }
                }
                Some(len) => {
                    self.body.push(b);
                    if self.body.len() == len {
                        out.push(Ok(std::mem::take(&mut self.body)));
                        *self = Self::default();
                    }
                }
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.header.is_empty() && self.want.is_none() && self.body.is_empty()
    }
}

/// Feeds `chunk` to a bare `ConfigReader` with the same policy as `VassalChannel`.
fn feed_reader(reader: &mut ConfigReader, mut chunk: &[u8], out: &mut Vec<Blob>) {
    // Bounded: each round consumes at least one byte (checked) or stops.
    while !chunk.is_empty() {
        match reader.feed(chunk) {
            Ok((used, done)) => {
                assert!(used >= 1 && used <= chunk.len(), "used {used} of {} bytes", chunk.len());
                if let Some(config) = done {
                    assert!((1..=MAX_CONFIG_LEN).contains(&config.len()), "config of {} bytes", config.len());
                    out.push(Ok(config));
                }
                chunk = &chunk[used..];
            }
            Err(e) => {
                *reader = ConfigReader::new();
                out.push(Err(e));
                return;
            }
        }
    }
}

/// What `VassalChannel::handle_bytes` must make of channel bytes.
fn channel_commands(chunk: &[u8], lost: &mut bool, out: &mut Vec<Command>) {
    if chunk.is_empty() {
        if !std::mem::replace(lost, true) {
            out.push(Command::EmperorLost);
        }
        return;
    }
    for &b in chunk {
        match b {
            0 => out.push(Command::Stop),
            1 => out.push(Command::Reload),
            2 => out.push(Command::GracefulStop),
            _ => {}
        }
    }
}

fn blob_command(b: Blob) -> Command {
    match b {
        Ok(config) => Command::Config(config),
        Err(e) => Command::BadConfig(e),
    }
}

/// Feeds `stream` to a `ConfigReader` and to a `VassalChannel` (config side) in chunks of
/// the schedule, interleaved with `channel` bytes on its channel side; checks both
/// against `RefReader` and `channel_commands`, and returns the blobs.
fn run_stream(schedule: &mut Schedule, stream: &[u8], channel: &[u8]) -> Vec<Blob> {
    let mut reader = ConfigReader::new();
    let mut reference = RefReader::default();
    let mut vassal = VassalChannel::new(Instant::now(), None);
    let (mut got, mut want, mut want_cmds) = (Vec::new(), Vec::new(), Vec::new());
    let mut lost = false;
    let (mut s, mut c) = (stream, channel);
    // Bounded: every round consumes at least one byte of one side.
    while !s.is_empty() || !c.is_empty() {
        let pick = schedule.next();
        if pick.is_multiple_of(32) {
            channel_commands(&[], &mut lost, &mut want_cmds);
            vassal.handle_bytes(&[]);
        }
        if !s.is_empty() && (c.is_empty() || (pick / 32).is_multiple_of(2)) {
            let n = schedule.size().min(s.len());
            let (chunk, tail) = s.split_at(n);
            s = tail;
            let start = want.len();
            reference.feed(chunk, &mut want);
            want_cmds.extend(want[start..].iter().cloned().map(blob_command));
            feed_reader(&mut reader, chunk, &mut got);
            vassal.handle_config_bytes(chunk);
        } else if !c.is_empty() {
            let n = schedule.size().min(c.len());
            let (chunk, tail) = c.split_at(n);
            c = tail;
            channel_commands(chunk, &mut lost, &mut want_cmds);
            vassal.handle_bytes(chunk);
        }
    }
    assert_eq!(got, want, "ConfigReader against the reference reader");
    let cmds: Vec<Command> = std::iter::from_fn(|| vassal.poll_command()).collect();
    assert_eq!(cmds, want_cmds, "VassalChannel commands");
    assert_eq!(vassal.poll_transmit(), None, "input alone makes a vassal say nothing");
    // A fresh blob after the stream comes out whole when the stream ended on a boundary.
    if reference.is_idle() {
        let blob = proto::encode_config(b"x").expect("1 byte fits");
        let mut tail = Vec::new();
        feed_reader(&mut reader, &blob, &mut tail);
        assert_eq!(tail, [Ok(b"x".to_vec())], "the reader is back at a header after the stream");
    }
    got
}

/// Valid configs cut from the input: a length byte `L` then `L` bytes (the first `L = 0`:
/// a config of the next two bytes' LE length, 1–65535, filled with a pattern; one per
/// input, so that an input of zeros stays cheap to run).
fn configs_from(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut big = false;
    while let Some((&len, tail)) = rest.split_first() {
        rest = tail;
        if len == 0 && !std::mem::replace(&mut big, true) {
            let [lo, hi, ..] = rest else { break };
            let n = usize::from(u16::from_le_bytes([*lo, *hi])).max(1);
            rest = &rest[2..];
            out.push((0..n).map(|i| (i % 251) as u8).collect());
        } else {
            let n = usize::from(len).max(1).min(rest.len());
            if n == 0 {
                break;
            }
            out.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
    }
    out
}

/// `emperor_core_config_pipe`: the first byte seeds the chunk schedule (largest chunk 1,
/// 2, 3, 4, 7, 16, 300 or 70,000 bytes). Two runs:
///
/// 1. the rest as a raw config-pipe stream, cut in chunks, into `ConfigReader` and
///    `VassalChannel::handle_config_bytes`, interleaved with the same bytes as channel
///    input (`handle_bytes`, EOFs at random): never a panic, `feed` uses 1..=len bytes,
///    configs are 1–65535 bytes, and both equal an independent byte-at-a-time reader
///    (with `VassalChannel`'s reset-on-error); until the first error they also equal one
///    read of the whole stream (chunking changes nothing); the channel commands are
///    exactly bytes 0/1/2 and one `EmperorLost`, at the first EOF;
/// 2. configs cut from the rest (a length byte and that many bytes, or one large
///    patterned config) framed with `encode_config`: every config comes out whole, equal
///    and in order, under any chunking, and the reader ends on a blob boundary.
pub fn config_pipe(data: &[u8]) {
    let Some((&seed, rest)) = data.split_first() else { return };
    // 1. Raw.
    let mut schedule = Schedule::new(seed);
    let chunked = run_stream(&mut schedule, rest, rest);
    let mut whole = Vec::new();
    RefReader::default().feed(rest, &mut whole);
    let first_error = whole.iter().position(Result::is_err).map_or(whole.len(), |i| i + 1);
    assert!(chunked.len() >= first_error, "chunked stream ended early");
    assert_eq!(chunked[..first_error], whole[..first_error], "chunking changed what was read");
    // 2. Valid.
    let configs = configs_from(rest);
    let mut stream = Vec::new();
    for c in &configs {
        let blob = proto::encode_config(c).expect("1..=65535 bytes");
        check_blob(&blob);
        stream.extend_from_slice(&blob);
    }
    let mut schedule = Schedule::new(seed.rotate_left(3));
    let got = run_stream(&mut schedule, &stream, &rest[..rest.len().min(64)]);
    let want: Vec<Blob> = configs.into_iter().map(Ok).collect();
    assert_eq!(got, want, "a valid stream decodes to the configs framed");
    if seed & 0x80 != 0 {
        assert_eq!(proto::encode_config(b""), Err(ConfigPipeError::Empty));
        let big = vec![b'x'; MAX_CONFIG_LEN + 1];
        assert_eq!(proto::encode_config(&big), Err(ConfigPipeError::TooLarge(MAX_CONFIG_LEN + 1)));
    }
}
