//! The simulator driving a toy heartbeat protocol: what protocol crates' `tests/sim.rs`
//! will look like, and the simulator's own guarantees (faults, partitions, clock skew,
//! bounds, determinism, accounting).
//!
//! Run one seed of a sweep with `SIM_SEED=<n> cargo test -p testkit --test sim <name>`,
//! more seeds with `SIM_SEEDS=<k>`.

// Tests unwrap freely: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use testkit::{
    Bytes, ClockOffset, FaultPlan, SimError, SimNet, SimNode, check_determinism, seeds_from_env, sweep,
};

const PACKAGE: &str = env!("CARGO_PKG_NAME");
const MS: Duration = Duration::from_millis(1);
const PING_INTERVAL: Duration = Duration::from_millis(100);
const ALIVE_FOR: Duration = Duration::from_millis(300);

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 3000))
}

/// What a [`Heartbeat`] node reports (edge-triggered).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Liveness {
    /// Heard from this peer after not hearing from it for `ALIVE_FOR` (or ever).
    Up(SocketAddr),
    /// Not heard from this peer for `ALIVE_FOR`.
    Down(SocketAddr),
}

/// The toy protocol: pings every peer every `PING_INTERVAL`, and considers alive the
/// peers it has heard a ping from within the last `ALIVE_FOR`.
///
/// It panics if its clock ever goes backwards, so every test also checks that.
struct Heartbeat {
    peers: Vec<SocketAddr>,
    next_ping: Instant,
    last_heard: BTreeMap<SocketAddr, Instant>,
    alive: BTreeSet<SocketAddr>,
    pings_sent: u64,
    last_now: Instant,
    outbox: VecDeque<(SocketAddr, Bytes)>,
    events: VecDeque<Liveness>,
}

impl Heartbeat {
    fn new(peers: Vec<SocketAddr>, now: Instant) -> Self {
        Self {
            peers,
            next_ping: now,
            last_heard: BTreeMap::new(),
            alive: BTreeSet::new(),
            pings_sent: 0,
            last_now: now,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    fn observe(&mut self, now: Instant) {
        assert!(now >= self.last_now, "time went backwards: {now:?} < {:?}", self.last_now);
        self.last_now = now;
    }

    fn hears(&self, peer: SocketAddr) -> bool {
        self.alive.contains(&peer)
    }
}

impl SimNode for Heartbeat {
    type Event = Liveness;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.observe(now);
        // Anything else (a corrupted or injected datagram) is ignored.
        if bytes == b"ping" && self.peers.contains(&from) {
            self.last_heard.insert(from, now);
            if self.alive.insert(from) {
                self.events.push_back(Liveness::Up(from));
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        if now >= self.next_ping {
            for &peer in &self.peers {
                self.outbox.push_back((peer, Bytes::from_static(b"ping")));
            }
            self.pings_sent += 1;
            // Keep the cadence, skipping ticks missed (none are, in a simulation).
            while self.next_ping <= now {
                self.next_ping += PING_INTERVAL;
            }
        }
        let expired: Vec<SocketAddr> =
            self.alive.iter().copied().filter(|peer| self.last_heard[peer] + ALIVE_FOR <= now).collect();
        for peer in expired {
            self.alive.remove(&peer);
            self.events.push_back(Liveness::Down(peer));
        }
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Bytes)> {
        self.outbox.pop_front()
    }

    fn poll_event(&mut self) -> Option<Liveness> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.alive.iter().map(|peer| self.last_heard[peer] + ALIVE_FOR).min();
        Some(expiry.map_or(self.next_ping, |e| e.min(self.next_ping)))
    }
}

/// `n` fully meshed heartbeat nodes at `addr(1)..=addr(n)`, with a conservation-of-datagrams
/// invariant checked after every step.
fn cluster(net: &mut SimNet<Heartbeat>, n: u8) -> Vec<SocketAddr> {
    let addrs: Vec<SocketAddr> = (1..=n).map(addr).collect();
    for &me in &addrs {
        let peers = addrs.iter().copied().filter(|&p| p != me).collect();
        let now = net.now_for(me);
        net.add_node(me, Heartbeat::new(peers, now));
    }
    net.add_invariant("every datagram is accounted for", |net: &SimNet<Heartbeat>| {
        net.stats().accounted(net.in_flight())
    });
    addrs
}

fn hears(net: &SimNet<Heartbeat>, who: SocketAddr, peer: SocketAddr) -> bool {
    net.node(who).is_some_and(|node| node.hears(peer))
}

fn all_hear_all(net: &SimNet<Heartbeat>) -> bool {
    net.nodes().all(|(_, node)| node.peers.iter().all(|&p| node.hears(p)))
}

#[test]
fn sim_perfect_network_converges() {
    let mut net = SimNet::new(1);
    let addrs = cluster(&mut net, 4);
    // First pings go out at 0 and arrive 1 ms later.
    net.run_until_within(all_hear_all, 2 * MS, 1_000).unwrap();
    assert_eq!(net.elapsed(), MS);
    // And it stays converged: no Down event over 2 s.
    net.run_for(Duration::from_secs(2), 10_000).unwrap();
    assert!(all_hear_all(&net));
    assert!(net.event_log().iter().all(|e| matches!(e.event, Liveness::Up(_))));
    assert_eq!(net.event_log().len(), 4 * 3);
    let stats = net.stats();
    assert_eq!(stats.delivered, stats.sent);
    assert_eq!(stats.dropped() + stats.duplicated + stats.reordered + stats.unroutable, 0);
    // 21 rounds (t = 0, 100, …, 2000 ms) of 4 nodes pinging 3 peers.
    assert_eq!(stats.sent, 21 * 4 * 3);
    assert_eq!(net.node(addrs[0]).unwrap().pings_sent, 21);
}

#[test]
fn sim_cut_stops_both_directions_and_heal_restores() {
    let mut net = SimNet::new(2);
    let [a, b, c] = cluster(&mut net, 3)[..] else { unreachable!() };
    net.run_until(all_hear_all, 1_000).unwrap();

    net.cut(a, b);
    net.run_until_within(|n| !hears(n, a, b) && !hears(n, b, a), ALIVE_FOR + PING_INTERVAL, 10_000).unwrap();
    net.run_for(Duration::from_millis(500), 10_000).unwrap();
    assert!(!hears(&net, a, b) && !hears(&net, b, a));
    assert!(
        hears(&net, a, c) && hears(&net, c, a) && hears(&net, b, c) && hears(&net, c, b),
        "c is not cut off"
    );
    assert!(net.events_of(a).any(|(_, e)| *e == Liveness::Down(b)));
    assert!(net.stats().dropped_partition >= 2 * 8, "{:?}", net.stats());

    net.heal();
    net.run_until_within(all_hear_all, PING_INTERVAL + 2 * MS, 10_000).unwrap();
}

#[test]
fn sim_one_way_cut_and_isolation() {
    let mut net = SimNet::new(3);
    let [a, b, c] = cluster(&mut net, 3)[..] else { unreachable!() };
    net.run_until(all_hear_all, 1_000).unwrap();

    net.cut_one_way(a, b);
    net.run_for(Duration::from_millis(500), 10_000).unwrap();
    assert!(!hears(&net, b, a), "b no longer hears a");
    assert!(hears(&net, a, b), "a still hears b");

    net.heal();
    net.isolate(c);
    net.run_for(Duration::from_millis(500), 10_000).unwrap();
    assert!(hears(&net, a, b) && hears(&net, b, a));
    assert!(!hears(&net, a, c) && !hears(&net, b, c) && !hears(&net, c, a) && !hears(&net, c, b));

    net.heal();
    net.run_until_within(all_hear_all, PING_INTERVAL + 2 * MS, 10_000).unwrap();
}

#[test]
fn sim_filter_drops_what_the_scenario_says() {
    let mut net = SimNet::new(4);
    let [a, b, _c] = cluster(&mut net, 3)[..] else { unreachable!() };
    // Scenario rule: from 1 s on, nothing from a reaches b.
    net.set_filter(move |d| !(d.from == a && d.to == b && d.sent_at >= Duration::from_secs(1)));
    net.run_for(Duration::from_millis(1_500), 10_000).unwrap();
    assert!(!hears(&net, b, a) && hears(&net, a, b));
    let (down_at, _) = net.events_of(b).find(|(_, e)| **e == Liveness::Down(a)).unwrap();
    // The last ping from a before the rule left at 900 ms and arrived at 901 ms.
    assert_eq!(down_at, Duration::from_millis(901) + ALIVE_FOR);
    assert_eq!(net.stats().dropped_filter, 6, "pings at 1000..=1500 ms");
}

/// Builds and runs a 3-node cluster under swarm faults, with the random choices of the
/// test itself (a crash, a restart, clock offsets) drawn from the simulation's seed.
fn swarm_run(seed: u64) -> SimNet<Heartbeat> {
    let mut net = SimNet::swarm(seed);
    net.record_trace(true);
    let addrs = cluster(&mut net, 3);
    for _ in 0..10 {
        let who = addrs[net.rng_mut().usize(..addrs.len())];
        let offset = ClockOffset::from_millis(net.rng_mut().i64(-500..=500));
        net.set_clock_offset(who, offset);
        net.run_for(Duration::from_millis(100), 10_000).unwrap();
    }
    let victim = addrs[net.rng_mut().usize(..addrs.len())];
    net.remove_node(victim);
    net.run_for(Duration::from_millis(300), 10_000).unwrap();
    let peers = addrs.iter().copied().filter(|&p| p != victim).collect();
    let now = net.now_for(victim);
    net.add_node(victim, Heartbeat::new(peers, now));
    net.run_for(Duration::from_millis(600), 10_000).unwrap();
    net
}

fn full_transcript(net: &SimNet<Heartbeat>) -> String {
    let trace: Vec<String> = net.trace().iter().map(ToString::to_string).collect();
    format!("{}{}\n", net.transcript(), trace.join("\n"))
}

#[test]
fn sim_same_seed_same_trace() {
    for seed in [0, 1, 2] {
        check_determinism(seed, |seed| full_transcript(&swarm_run(seed))).unwrap();
    }
    // Identical stats too, and a log long enough to mean something.
    let (x, y) = (swarm_run(7), swarm_run(7));
    assert_eq!(x.stats(), y.stats());
    assert!(x.event_log().len() >= 6 && x.trace().len() > 100);
}

#[test]
fn sim_different_seed_different_trace() {
    let runs: Vec<String> = [1, 2].into_iter().map(|seed| full_transcript(&swarm_run(seed))).collect();
    assert_ne!(runs[0], runs[1]);
    assert_ne!(swarm_run(1).stats(), swarm_run(2).stats());
}

#[test]
fn sim_time_never_goes_backwards_for_any_node() {
    // `Heartbeat::observe` asserts it; `swarm_run` changes clock offsets up and down,
    // crashes and restarts a node, under every kind of swarm fault. `sweep` reports the
    // seed of a failure.
    sweep(PACKAGE, "sim_time_never_goes_backwards_for_any_node", &seeds_from_env(8), |seed| {
        let net = swarm_run(seed);
        net.stats().accounted(net.in_flight())?;
        if net.stats().timeouts < 3 * 10 {
            return Err(format!("too few timeouts: {:?}", net.stats()));
        }
        Ok(())
    });
}

#[test]
fn sim_swarm_cluster_converges_and_accounts_every_datagram() {
    sweep(PACKAGE, "sim_swarm_cluster_converges_and_accounts_every_datagram", &seeds_from_env(16), |seed| {
        let mut net = SimNet::swarm(seed);
        let addrs = cluster(&mut net, 4);
        // Liveness: within 1 s every node has heard every peer at least once
        // (swarm loss is at most 20 %, and each pair exchanges 10 pings).
        net.run_for(Duration::from_secs(1), 100_000).map_err(|e| e.to_string())?;
        for &who in &addrs {
            for &peer in &addrs {
                if who != peer && !net.events_of(who).any(|(_, e)| *e == Liveness::Up(peer)) {
                    return Err(format!("{who} never heard {peer}; plan {:?}", net.fault_plan()));
                }
            }
        }
        Ok(())
    });
}

/// A node for measuring the network: `Source` sends `count` numbered datagrams to `to`,
/// one per millisecond; `Sink` records the numbers it receives.
enum Meter {
    Source { to: SocketAddr, next: u32, count: u32, at: Instant, outbox: Option<Bytes> },
    Sink { received: Vec<u32> },
}

impl SimNode for Meter {
    type Event = ();

    fn handle_datagram(&mut self, _now: Instant, _from: SocketAddr, bytes: &[u8]) {
        if let (Self::Sink { received }, Ok(n)) = (self, <[u8; 4]>::try_from(bytes)) {
            received.push(u32::from_be_bytes(n));
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Self::Source { next, count, at, outbox, .. } = self
            && *next < *count
            && now >= *at
        {
            *outbox = Some(Bytes::copy_from_slice(&next.to_be_bytes()));
            *next += 1;
            *at += MS;
        }
    }

    fn poll_transmit(&mut self) -> Option<(SocketAddr, Bytes)> {
        match self {
            Self::Source { to, outbox, .. } => outbox.take().map(|b| (*to, b)),
            Self::Sink { .. } => None,
        }
    }

    fn poll_event(&mut self) -> Option<()> {
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Self::Source { next, count, at, .. } if next < count => Some(*at),
            _ => None,
        }
    }
}

/// Sends `count` datagrams from a source to a sink under `plan`; returns the numbers
/// received, in arrival order, and the network.
fn measure(seed: u64, plan: FaultPlan, count: u32) -> (Vec<u32>, SimNet<Meter>) {
    let (src, dst) = (addr(1), addr(2));
    let mut net = SimNet::new(seed).with_fault_plan(plan);
    let at = net.now();
    net.add_node(src, Meter::Source { to: dst, next: 0, count, at, outbox: None });
    net.add_node(dst, Meter::Sink { received: Vec::new() });
    net.run_until_idle(10 * count as usize).unwrap();
    let Some(Meter::Sink { received }) = net.remove_node(dst) else { unreachable!() };
    (received, net)
}

/// `observed` is within `expected` ± `slack` (loose bounds: these are statistical).
fn near(what: &str, observed: u64, expected: f64, slack: f64) -> Result<(), String> {
    let (lo, hi) = (expected * (1.0 - slack), expected * (1.0 + slack));
    if (lo..=hi).contains(&(observed as f64)) {
        Ok(())
    } else {
        Err(format!("{what}: {observed} not in {lo:.0}..={hi:.0}"))
    }
}

fn check<T: core::fmt::Debug + PartialEq>(what: &str, left: T, right: T) -> Result<(), String> {
    if left == right { Ok(()) } else { Err(format!("{what}: {left:?} != {right:?}")) }
}

#[test]
fn sim_duplication_and_reordering_happen_at_the_configured_rates() {
    const N: u32 = 2_000;
    let test = "sim_duplication_and_reordering_happen_at_the_configured_rates";
    sweep(PACKAGE, test, &seeds_from_env(4), |seed| {
        let plan = FaultPlan { duplicate: 0.1, reorder: 0.1, reorder_delay: 20 * MS, ..FaultPlan::default() };
        let (received, net) = measure(seed, plan, N);
        let stats = net.stats();
        near("duplicated", stats.duplicated, 0.1 * f64::from(N), 0.3)?;
        let copies = u64::from(N) + stats.duplicated;
        near("reordered", stats.reordered, 0.1 * copies as f64, 0.3)?;
        // Nothing lost: every number arrives, duplicates are exactly the extra copies.
        check("received", received.len() as u64, copies)?;
        check("distinct", received.iter().collect::<BTreeSet<_>>().len(), N as usize)?;
        check("delivered", stats.delivered, copies)?;
        // A held-back copy is overtaken by the ones sent in the next milliseconds, unless
        // its extra delay (uniform in 0..=20 ms) was under 1 ms: count late arrivals.
        let mut highest = 0;
        let mut late = 0;
        for &n in &received {
            if n < highest {
                late += 1;
            }
            highest = highest.max(n);
        }
        if !(stats.reordered * 8 / 10..=stats.reordered + stats.duplicated).contains(&late) {
            return Err(format!("{late} late arrivals for {stats:?}"));
        }
        Ok(())
    });
}

#[test]
fn sim_perfect_plan_preserves_order_and_loss_drops_at_its_rate() {
    const N: u32 = 2_000;
    let (received, _) = measure(12, FaultPlan::default(), N);
    assert_eq!(received, (0..N).collect::<Vec<_>>());

    let test = "sim_perfect_plan_preserves_order_and_loss_drops_at_its_rate";
    sweep(PACKAGE, test, &seeds_from_env(4), |seed| {
        let (received, net) = measure(seed, FaultPlan { loss: 0.25, ..FaultPlan::default() }, N);
        near("lost", net.stats().dropped_loss, 0.25 * f64::from(N), 0.2)?;
        check("received + lost", received.len() as u64 + net.stats().dropped_loss, u64::from(N))?;
        if !received.windows(2).all(|w| w[0] < w[1]) {
            return Err("loss alone reordered datagrams".into());
        }
        Ok(())
    });
}

#[test]
fn sim_clock_offset_is_applied() {
    let mut net: SimNet<Heartbeat> = SimNet::new(5);
    let (ahead, behind) = (addr(1), addr(2));
    net.set_clock_offset(ahead, ClockOffset::Ahead(Duration::from_secs(1)));
    net.set_clock_offset(behind, ClockOffset::from_millis(-250));
    cluster(&mut net, 3);
    net.run_for(Duration::from_millis(1_050), 10_000).unwrap();

    let epoch = net.epoch();
    let now_of = |net: &mut SimNet<Heartbeat>, who| net.with_node(who, |_, now| now).unwrap();
    assert_eq!(now_of(&mut net, ahead), epoch + Duration::from_millis(2_050));
    assert_eq!(now_of(&mut net, behind), epoch + Duration::from_millis(800));
    assert_eq!(now_of(&mut net, addr(3)), epoch + Duration::from_millis(1_050));
    // The skew changes what each node reads, not how often its timers fire:
    // every node pinged at 0, 100, …, 1000 ms of simulated time.
    for (who, node) in net.nodes() {
        assert_eq!(node.pings_sent, 11, "{who}");
    }
    assert!(all_hear_all(&net));
}

#[test]
fn sim_run_until_fails_when_the_bound_is_exceeded() {
    let mut net = SimNet::new(6);
    cluster(&mut net, 2);
    let err = net.run_until(|_| false, 100).unwrap_err();
    assert!(matches!(err, SimError::StepLimit { max_steps: 100, .. }), "{err:?}");
    assert!(err.to_string().contains("did not reach its goal within 100 steps"), "{err}");
    assert_eq!(net.stats().steps, 100, "exactly the bound was spent");

    let start = net.elapsed();
    let err = net.run_until_within(|_| false, Duration::from_millis(250), 100_000).unwrap_err();
    assert!(matches!(err, SimError::TimeLimit { .. }), "{err:?}");
    assert_eq!(net.elapsed(), start + Duration::from_millis(250));

    let err = net.run_for(Duration::from_secs(10), 10).unwrap_err();
    assert!(matches!(err, SimError::StepLimit { max_steps: 10, .. }), "{err:?}");
}

#[test]
fn sim_invariant_failure_stops_the_run() {
    let mut net = SimNet::new(8);
    let [a, b] = cluster(&mut net, 2)[..] else { unreachable!() };
    net.add_invariant("a never hears b", move |net: &SimNet<Heartbeat>| {
        if hears(net, a, b) { Err(format!("{a} hears {b}")) } else { Ok(()) }
    });
    let err = net.run_for(Duration::from_secs(1), 1_000).unwrap_err();
    let SimError::Invariant { name, elapsed, message, .. } = err else { panic!("{err:?}") };
    assert_eq!((name.as_str(), elapsed, message), ("a never hears b", MS, format!("{a} hears {b}")));
}

#[test]
fn sim_datagrams_to_removed_nodes_are_unroutable() {
    let mut net = SimNet::new(9);
    let [a, b, c] = cluster(&mut net, 3)[..] else { unreachable!() };
    net.run_until(all_hear_all, 1_000).unwrap();
    let crashed = net.remove_node(c).unwrap();
    assert!(crashed.hears(a));
    let before = net.stats();
    net.run_for(Duration::from_millis(500), 10_000).unwrap();
    let stats = net.stats();
    // a and b each ping c at 100, 200, 300, 400 and 500 ms.
    assert_eq!(stats.unroutable - before.unroutable, 2 * 5);
    assert!(net.events_of(a).any(|(_, e)| *e == Liveness::Down(c)));
    assert!(net.events_of(b).any(|(_, e)| *e == Liveness::Down(c)));
    assert!(hears(&net, a, b));
    stats.accounted(net.in_flight()).unwrap();

    // Injected traffic to an address that never had a node is unroutable too.
    net.inject(a, addr(99), &b"ping"[..]);
    net.run_for(2 * MS, 100).unwrap();
    assert_eq!(net.stats().unroutable, stats.unroutable + 1);
}
