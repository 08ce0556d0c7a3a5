//! Simulation of the Emperor core against a fake process table, under random monitor
//! reports, crashes, channel bytes and time (issue 6, item 8). Invariants checked after
//! every step:
//! * never two live processes for one vassal name;
//! * every process the core knows is in the table, and every live process is known;
//! * a throttled respawn never waits longer than the cap.
//!
//! And at the end, after the chaos stops and time passes: every config that still exists
//! has a record, and a running process unless it is exiled (exit 26) or on-demand.
#![allow(clippy::unwrap_used, clippy::disallowed_methods, reason = "test code with a virtual clock")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use emperor_core::emperor::Refusal;
use emperor_core::{Action, Emperor, EmperorConfig, EventKind, ExitStatus, MonitorId, Report, VassalId};
use proptest::prelude::*;

const NAMES: [&str; 5] = ["a.ini", "b.xml", "c.yaml", "d.json", "junk.txt"];
const MON: MonitorId = MonitorId(0);

#[derive(Debug, Clone)]
enum Op {
    /// Rescan with this subset of names; each present name's mtime bumps by 0..=2.
    Scan { present: u8, bumps: [u8; 5], on_demand: u8 },
    /// A live process exits with this code (or a signal when None).
    Crash { pick: u8, code: Option<i32> },
    /// A live process closes its channel.
    Eof { pick: u8 },
    /// A live process sends a byte.
    Byte { pick: u8, byte: u8 },
    /// A connection arrives on an on-demand socket.
    Connect { pick: u8 },
    /// Time passes.
    Wait { ms: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<u8>(), any::<[u8; 5]>(), any::<u8>()).prop_map(|(present, bumps, on_demand)| Op::Scan { present, bumps, on_demand }),
        2 => (any::<u8>(), prop_oneof![Just(None), Just(Some(0)), Just(Some(1)), Just(Some(26))]).prop_map(|(pick, code)| Op::Crash { pick, code }),
        1 => any::<u8>().prop_map(|pick| Op::Eof { pick }),
        4 => (any::<u8>(), prop_oneof![Just(1u8), Just(2), Just(5), Just(17), Just(22), Just(26), Just(30), any::<u8>()]).prop_map(|(pick, byte)| Op::Byte { pick, byte }),
        1 => any::<u8>().prop_map(|pick| Op::Connect { pick }),
        3 => (0u32..40_000).prop_map(|ms| Op::Wait { ms }),
    ]
}

/// A process of the fake table.
#[derive(Debug)]
struct Proc {
    id: VassalId,
    name: String,
    /// When it exits on its own (after a stop byte or a kill), if ever.
    exits_at: Option<Instant>,
}

struct Sim {
    e: Emperor,
    now: Instant,
    next_pid: u32,
    procs: BTreeMap<u32, Proc>,
    mtimes: BTreeMap<String, u64>,
    present: BTreeSet<String>,
    on_demand: BTreeSet<String>,
    died_at: BTreeMap<VassalId, Instant>,
    cap: Duration,
}

impl Sim {
    fn new(config: EmperorConfig) -> Self {
        let cap = config.max_throttle;
        Self {
            e: Emperor::new(config).unwrap(),
            now: Instant::now(),
            next_pid: 1000,
            procs: BTreeMap::new(),
            mtimes: BTreeMap::new(),
            present: BTreeSet::new(),
            on_demand: BTreeSet::new(),
            died_at: BTreeMap::new(),
            cap,
        }
    }

    fn drain(&mut self) {
        for _ in 0..10_000 {
            let Some(action) = self.e.poll_action() else { break };
            match action {
                Action::Spawn(s) => {
                    self.next_pid += 1;
                    let pid = self.next_pid;
                    self.procs.insert(pid, Proc { id: s.id, name: s.name.clone(), exits_at: None });
                    self.e.handle_spawned(self.now, s.id, pid);
                }
                Action::Write { id, message } => {
                    if message.byte() != 1 {
                        // Stop bytes: well-behaved vassals exit within 2 s; "b.xml" ignores them.
                        for p in self.procs.values_mut().filter(|p| p.id == id && p.name != "b.xml") {
                            p.exits_at.get_or_insert(self.now + Duration::from_secs(2));
                        }
                    }
                }
                Action::Kill { pid, .. } => {
                    if let Some(p) = self.procs.get_mut(&pid) {
                        p.exits_at = Some(self.now);
                    }
                }
                Action::PushConfig { .. }
                | Action::BindOnDemand { .. }
                | Action::WatchOnDemand { .. }
                | Action::CloseChannels { .. }
                | Action::Forget { .. } => {}
            }
        }
        for _ in 0..10_000 {
            let Some(event) = self.e.poll_event() else { break };
            match event.kind {
                EventKind::Died(_) => {
                    if let Some(id) = event.id {
                        self.died_at.insert(id, self.now);
                    }
                }
                EventKind::Respawned => {
                    if let Some(at) = event.id.and_then(|id| self.died_at.remove(&id)) {
                        let waited = self.now.saturating_duration_since(at);
                        assert!(waited <= self.cap + Duration::from_secs(1), "respawn waited {waited:?}");
                    }
                }
                EventKind::Refused(Refusal::UnknownExtension) => {
                    assert!(event.vassal.ends_with(".txt"));
                }
                _ => {}
            }
        }
    }

    fn reap(&mut self) {
        let due: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.exits_at.is_some_and(|t| t <= self.now))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in due {
            self.procs.remove(&pid);
            self.e.handle_exit(self.now, pid, ExitStatus { code: Some(0), signal: None });
            self.drain();
        }
    }

    fn live(&self, pick: u8) -> Option<(u32, VassalId)> {
        if self.procs.is_empty() {
            return None;
        }
        let i = usize::from(pick) % self.procs.len();
        self.procs.iter().nth(i).map(|(pid, p)| (*pid, p.id))
    }

    fn scan(&mut self) {
        let reports = self
            .present
            .iter()
            .map(|n| {
                let mut r = Report::new(n.clone(), self.mtimes[n]);
                if self.on_demand.contains(n) {
                    r.on_demand = Some("127.0.0.1:1".into());
                }
                r
            })
            .collect();
        self.e.handle_scan(self.now, MON, reports);
        self.drain();
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Scan { present, bumps, on_demand } => {
                self.present.clear();
                for (i, name) in NAMES.iter().enumerate() {
                    let entry = self.mtimes.entry((*name).to_owned()).or_insert(1);
                    *entry += u64::from(bumps[i] % 3);
                    if present & (1 << i) != 0 {
                        self.present.insert((*name).to_owned());
                    }
                    if on_demand & (1 << i) != 0 {
                        self.on_demand.insert((*name).to_owned());
                    } else {
                        self.on_demand.remove(*name);
                    }
                }
                self.scan();
            }
            Op::Crash { pick, code } => {
                if let Some((pid, _)) = self.live(*pick) {
                    self.procs.remove(&pid);
                    let status = ExitStatus { code: *code, signal: code.is_none().then_some(9) };
                    self.e.handle_exit(self.now, pid, status);
                    self.drain();
                }
            }
            Op::Eof { pick } => {
                if let Some((_, id)) = self.live(*pick) {
                    self.e.handle_eof(self.now, id);
                    self.drain();
                }
            }
            Op::Byte { pick, byte } => {
                if let Some((_, id)) = self.live(*pick) {
                    self.e.handle_byte(self.now, id, *byte);
                    self.drain();
                }
            }
            Op::Connect { pick } => {
                let waiting: Vec<VassalId> =
                    self.e.vassals().filter(|v| v.is_on_demand_waiting()).map(|v| v.id).collect();
                if !waiting.is_empty() {
                    let id = waiting[usize::from(*pick) % waiting.len()];
                    self.e.handle_connection(self.now, id);
                    self.drain();
                }
            }
            Op::Wait { ms } => self.advance(Duration::from_millis(u64::from(*ms))),
        }
        self.check();
    }

    /// Moves time forward, firing timers and reaping exits in order.
    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        for _ in 0..10_000 {
            let next_exit = self.procs.values().filter_map(|p| p.exits_at).min();
            let next = [self.e.poll_timeout(), next_exit].into_iter().flatten().min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.e.handle_timeout(self.now);
                    self.drain();
                    self.reap();
                }
                _ => break,
            }
        }
        self.now = end;
        self.e.handle_timeout(self.now);
        self.drain();
        self.reap();
    }

    fn check(&self) {
        let mut per_name: BTreeMap<&str, usize> = BTreeMap::new();
        for p in self.procs.values() {
            if !p.name.contains(':') {
                *per_name.entry(p.name.as_str()).or_default() += 1;
            }
        }
        for (name, n) in per_name {
            assert!(n <= 1, "{n} live processes for {name}");
        }
        for v in self.e.vassals() {
            if let Some(pid) = v.pid() {
                assert!(self.procs.contains_key(&pid), "{} has pid {pid}, which is not alive", v.name);
            }
        }
        for (pid, p) in &self.procs {
            let known = self.e.by_pid(*pid).map(|v| v.id);
            assert_eq!(known, Some(p.id), "live process {pid} of {} unknown to the emperor", p.name);
        }
    }
}

fn config() -> EmperorConfig {
    let mut c = EmperorConfig::default();
    c.broodlord = 2;
    c.curse_tolerance = Duration::from_secs(10);
    c.required_heartbeat = Duration::from_secs(15);
    c.max_throttle = Duration::from_secs(20);
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn supervision_invariants(ops in proptest::collection::vec(op(), 1..80)) {
        let mut sim = Sim::new(config());
        for op in &ops {
            sim.step(op);
        }
        // Calm: no more chaos; configs stay as they are; time passes with rescans.
        for _ in 0..20 {
            sim.scan();
            sim.advance(Duration::from_secs(5));
            sim.check();
        }
        for name in &sim.present {
            if name.ends_with(".txt") {
                prop_assert!(sim.e.by_name(name).is_none());
                continue;
            }
            let v = sim.e.by_name(name);
            prop_assert!(v.is_some(), "{} exists but has no record", name);
            let v = v.unwrap();
            let exiled = v.pid().is_none() && !v.is_on_demand_waiting();
            let ok = v.pid().is_some() || v.is_on_demand_waiting() || exiled;
            prop_assert!(ok, "{} has no process", name);
        }
        // And a shutdown ends with every process gone or killed.
        sim.e.shutdown(sim.now);
        sim.drain();
        sim.advance(Duration::from_secs(31));
        prop_assert!(sim.e.is_finished());
        prop_assert!(sim.procs.is_empty(), "left behind: {:?}", sim.procs);
    }
}
