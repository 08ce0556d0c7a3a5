//! [`SimNet`]: nodes, a virtual clock, and a faulty network between them.

use core::fmt;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fastrand::Rng;

use crate::error::SimError;
use crate::fault::{ClockOffset, Datagram, FaultPlan};
use crate::log::{DropReason, Elapsed, LogEntry, Stats, TraceEntry, TraceKind};
use crate::node::SimNode;

/// The default cap on datagrams in flight; see [`SimNet::set_max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT: usize = 100_000;

type Filter = Box<dyn FnMut(&Datagram) -> bool>;
type InvariantFn<N> = Box<dyn FnMut(&SimNet<N>) -> Result<(), String>>;

struct Invariant<N: SimNode> {
    name: String,
    check: InvariantFn<N>,
}

/// One node and the last `now` it was given (to keep its clock monotonic).
struct NodeSlot<N> {
    node: N,
    last_now: Option<Instant>,
}

/// A datagram in the delivery queue.
struct InFlight {
    from: SocketAddr,
    to: SocketAddr,
    payload: Bytes,
}

/// Everything between the nodes: the fault plan, partitions, the filter, the delivery
/// queue, the random number generator, the counters and the trace.
///
/// Kept apart from the nodes so that draining a node (which borrows it mutably) can send
/// into the network (which is borrowed mutably too).
struct Wire {
    plan: FaultPlan,
    rng: Rng,
    /// Keyed by (arrival time, sequence number): the sequence number makes the order of
    /// datagrams due at the same instant deterministic (first sent, first delivered).
    queue: BTreeMap<(Duration, u64), InFlight>,
    next_seq: u64,
    max_in_flight: usize,
    /// Directed links that are down: `(from, to)`.
    cut: BTreeSet<(SocketAddr, SocketAddr)>,
    isolated: BTreeSet<SocketAddr>,
    filter: Option<Filter>,
    stats: Stats,
    trace: Vec<TraceEntry>,
    trace_on: bool,
}

impl Wire {
    fn link_up(&self, from: SocketAddr, to: SocketAddr) -> bool {
        !self.isolated.contains(&from) && !self.isolated.contains(&to) && !self.cut.contains(&(from, to))
    }

    fn chance(&mut self, p: f64) -> bool {
        // No draw at all when the fault is off: a perfect network consumes no randomness.
        p > 0.0 && self.rng.f64() < p
    }

    fn uniform(&mut self, min: Duration, max: Duration) -> Duration {
        if max <= min {
            return min;
        }
        let span = u64::try_from((max - min).as_nanos()).unwrap_or(u64::MAX);
        min + Duration::from_nanos(self.rng.u64(0..=span))
    }

    fn record(&mut self, at: Duration, kind: TraceKind) {
        if self.trace_on {
            self.trace.push(TraceEntry { at, kind });
        }
    }

    fn drop_datagram(
        &mut self,
        at: Duration,
        from: SocketAddr,
        to: SocketAddr,
        len: usize,
        reason: DropReason,
    ) {
        let counter = match reason {
            DropReason::Loss => &mut self.stats.dropped_loss,
            DropReason::Partition => &mut self.stats.dropped_partition,
            DropReason::Filter => &mut self.stats.dropped_filter,
            DropReason::Unroutable => &mut self.stats.unroutable,
            DropReason::QueueFull => &mut self.stats.dropped_queue_full,
        };
        *counter += 1;
        self.record(at, TraceKind::Drop { from, to, len, reason });
    }

    /// Puts one datagram sent at `now` through the fault plan (see [`FaultPlan`]'s doc for
    /// the order of the steps).
    fn send(&mut self, now: Duration, from: SocketAddr, to: SocketAddr, payload: Bytes) {
        self.stats.sent += 1;
        let len = payload.len();
        if !self.link_up(from, to) {
            return self.drop_datagram(now, from, to, len, DropReason::Partition);
        }
        if let Some(filter) = &mut self.filter {
            let datagram = Datagram { from, to, payload: payload.clone(), sent_at: now };
            if !filter(&datagram) {
                return self.drop_datagram(now, from, to, len, DropReason::Filter);
            }
        }
        if self.chance(self.plan.loss) {
            return self.drop_datagram(now, from, to, len, DropReason::Loss);
        }
        let duplicate = self.chance(self.plan.duplicate);
        self.enqueue(now, from, to, payload.clone(), false);
        if duplicate {
            self.stats.duplicated += 1;
            self.enqueue(now, from, to, payload, true);
        }
    }

    fn enqueue(
        &mut self,
        now: Duration,
        from: SocketAddr,
        to: SocketAddr,
        mut payload: Bytes,
        duplicate: bool,
    ) {
        let mut deliver_at = now + self.uniform(self.plan.latency_min, self.plan.latency_max);
        let reordered = self.chance(self.plan.reorder);
        if reordered {
            self.stats.reordered += 1;
            deliver_at += self.uniform(Duration::ZERO, self.plan.reorder_delay);
        }
        let corrupted = !payload.is_empty() && self.chance(self.plan.corrupt);
        if corrupted {
            self.stats.corrupted += 1;
            let bit = self.rng.usize(0..payload.len() * 8);
            let mut bytes = BytesMut::from(&payload[..]);
            bytes[bit / 8] ^= 1 << (bit % 8);
            payload = bytes.freeze();
        }
        let len = payload.len();
        if self.queue.len() >= self.max_in_flight {
            return self.drop_datagram(now, from, to, len, DropReason::QueueFull);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.insert((deliver_at, seq), InFlight { from, to, payload });
        self.record(now, TraceKind::Send { from, to, len, deliver_at, duplicate, reordered, corrupted });
    }
}

/// A deterministic simulated UDP network of [`SimNode`]s, with a virtual clock.
///
/// * **Nodes** are kept in a `BTreeMap` keyed by address, so whenever several nodes must be
///   visited (timers due at the same instant, draining outputs) they are visited in address
///   order.
/// * **Time** is virtual: an epoch `Instant` fixed at construction plus a `Duration`.
///   It only moves forward, and only in [`step`](Self::step) and the `run_*` methods.
/// * **The network** is a queue of datagrams ordered by (arrival time, sequence number),
///   fed through a [`FaultPlan`], partitions and an optional filter.
/// * **Randomness** comes from one `fastrand::Rng` seeded with the seed given to
///   [`new`](Self::new); there is no other source. The same seed and the same test code
///   give the same run, event for event.
///
/// See the [crate documentation](crate) for an example.
pub struct SimNet<N: SimNode> {
    seed: u64,
    epoch: Instant,
    elapsed: Duration,
    nodes: BTreeMap<SocketAddr, NodeSlot<N>>,
    offsets: BTreeMap<SocketAddr, ClockOffset>,
    wire: Wire,
    log: Vec<LogEntry<N::Event>>,
    invariants: Vec<Invariant<N>>,
}

impl<N: SimNode> fmt::Debug for SimNet<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimNet")
            .field("seed", &self.seed)
            .field("elapsed", &format_args!("{}", Elapsed(self.elapsed)))
            .field("nodes", &self.nodes.keys().collect::<Vec<_>>())
            .field("in_flight", &self.wire.queue.len())
            .field("stats", &self.wire.stats)
            .field("plan", &self.wire.plan)
            .finish_non_exhaustive()
    }
}

impl<N: SimNode> SimNet<N> {
    /// Creates an empty network on a perfect [`FaultPlan::default`] network, with every
    /// random choice derived from `seed`.
    ///
    /// The epoch (virtual time zero) is fixed here, once; see [`epoch`](Self::epoch).
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            epoch: epoch(),
            elapsed: Duration::ZERO,
            nodes: BTreeMap::new(),
            offsets: BTreeMap::new(),
            wire: Wire {
                plan: FaultPlan::default(),
                rng: Rng::with_seed(seed),
                queue: BTreeMap::new(),
                next_seq: 0,
                max_in_flight: DEFAULT_MAX_IN_FLIGHT,
                cut: BTreeSet::new(),
                isolated: BTreeSet::new(),
                filter: None,
                stats: Stats::default(),
                trace: Vec::new(),
                trace_on: false,
            },
            log: Vec::new(),
            invariants: Vec::new(),
        }
    }

    /// Creates an empty network whose fault plan is also derived from `seed`:
    /// `SimNet::new(seed).with_fault_plan(FaultPlan::swarm(seed))`.
    #[must_use]
    pub fn swarm(seed: u64) -> Self {
        Self::new(seed).with_fault_plan(FaultPlan::swarm(seed))
    }

    /// Replaces the fault plan, by value (builder style).
    ///
    /// # Panics
    ///
    /// If the plan is invalid ([`FaultPlan::validate`]).
    #[must_use]
    pub fn with_fault_plan(mut self, plan: FaultPlan) -> Self {
        self.set_fault_plan(plan);
        self
    }

    /// Replaces the fault plan. It applies to datagrams sent from now on; datagrams already
    /// in flight keep the arrival time they were given.
    ///
    /// # Panics
    ///
    /// If the plan is invalid ([`FaultPlan::validate`]): that is a mistake in the test.
    pub fn set_fault_plan(&mut self, plan: FaultPlan) {
        if let Err(e) = plan.validate() {
            panic!("invalid fault plan: {e}");
        }
        self.wire.plan = plan;
    }

    /// The current fault plan.
    #[must_use]
    pub fn fault_plan(&self) -> &FaultPlan {
        &self.wire.plan
    }

    /// The seed this network was created with.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The simulator's random number generator, for a test's own random choices (which
    /// node to crash, when to heal, …) so that they too are derived from the seed.
    ///
    /// Drawing from it changes the draws the network makes afterwards; that is still
    /// deterministic.
    pub fn rng_mut(&mut self) -> &mut Rng {
        &mut self.wire.rng
    }

    // ---- Time -------------------------------------------------------------------------

    /// Virtual time zero, as an `Instant`.
    ///
    /// It is derived once, at construction, from the real clock (the only clock reading in
    /// this crate). Nothing depends on its value: every `now` the simulator hands out is
    /// `epoch + elapsed`, and all logs print `elapsed`.
    #[must_use]
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The current virtual time, as an `Instant`: `epoch() + elapsed()`.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.epoch + self.elapsed
    }

    /// The current virtual time, as time since the epoch.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The current time on `addr`'s clock: [`now`](Self::now) shifted by its
    /// [`ClockOffset`], and never earlier than the last `now` given to the node there.
    ///
    /// Use it as the start time when constructing a node for `addr`.
    #[must_use]
    pub fn now_for(&self, addr: SocketAddr) -> Instant {
        let raw = shift(self.now(), self.clock_offset(addr));
        match self.nodes.get(&addr).and_then(|slot| slot.last_now) {
            Some(last) if last > raw => last,
            _ => raw,
        }
    }

    /// Sets the offset of `addr`'s clock from the simulation's (clock skew). It may be set
    /// before the node is added (then construct the node with [`now_for`](Self::now_for)),
    /// and it survives [`remove_node`](Self::remove_node), like a machine's clock.
    ///
    /// Changing the offset of a running node never makes its clock go backwards: if the new
    /// offset is smaller, the node's clock stands still until the new reading catches up.
    ///
    /// # Panics
    ///
    /// If `offset` is [`ClockOffset::Behind`] by more than [`ClockOffset::MAX_BEHIND`].
    pub fn set_clock_offset(&mut self, addr: SocketAddr, offset: ClockOffset) {
        if let ClockOffset::Behind(by) = offset {
            assert!(
                by <= ClockOffset::MAX_BEHIND,
                "clock offset of {addr} is {by:?} behind; at most {:?} is supported",
                ClockOffset::MAX_BEHIND
            );
        }
        self.offsets.insert(addr, offset);
    }

    /// The offset of `addr`'s clock ([`ClockOffset::ZERO`] unless set).
    #[must_use]
    pub fn clock_offset(&self, addr: SocketAddr) -> ClockOffset {
        self.offsets.get(&addr).copied().unwrap_or_default()
    }

    // ---- Nodes ------------------------------------------------------------------------

    /// Adds a node at `addr`, and sends whatever it has queued already (at the current
    /// virtual time).
    ///
    /// The node counts as having been given [`now_for(addr)`](Self::now_for) (construct it
    /// with that as its start time): every `now` it is given later is at or after it, even
    /// if its clock offset is lowered before its first timer fires.
    ///
    /// # Panics
    ///
    /// If a node is already at `addr` (remove it first to model a restart).
    pub fn add_node(&mut self, addr: SocketAddr, node: N) {
        assert!(!self.nodes.contains_key(&addr), "a node is already at {addr}");
        let start = self.now_for(addr);
        self.nodes.insert(addr, NodeSlot { node, last_now: Some(start) });
        self.flush_node(addr);
    }

    /// Removes the node at `addr` (a crash: no goodbye is sent) and returns it.
    ///
    /// Datagrams still in flight to it are counted as
    /// [`unroutable`](Stats::unroutable) when they arrive; those it sent are still
    /// delivered.
    pub fn remove_node(&mut self, addr: SocketAddr) -> Option<N> {
        self.nodes.remove(&addr).map(|slot| slot.node)
    }

    /// The node at `addr`.
    #[must_use]
    pub fn node(&self, addr: SocketAddr) -> Option<&N> {
        self.nodes.get(&addr).map(|slot| &slot.node)
    }

    /// The node at `addr`, mutably: for example to issue a command.
    ///
    /// What the command queues is sent at the start of the next step (at the current
    /// virtual time). To pass the node its own `now` and flush at once, use
    /// [`with_node`](Self::with_node).
    #[must_use]
    pub fn node_mut(&mut self, addr: SocketAddr) -> Option<&mut N> {
        self.nodes.get_mut(&addr).map(|slot| &mut slot.node)
    }

    /// Calls `f` with the node at `addr` and the node's current time, then sends what it
    /// queued and logs its events. Returns `None` if there is no node at `addr`.
    ///
    /// The `now` given to `f` counts as given to the node: its clock stays monotonic.
    pub fn with_node<R>(&mut self, addr: SocketAddr, f: impl FnOnce(&mut N, Instant) -> R) -> Option<R> {
        let now = self.tick_node(addr)?;
        let slot = self.nodes.get_mut(&addr)?;
        let result = f(&mut slot.node, now);
        self.flush_node(addr);
        Some(result)
    }

    /// The addresses of all nodes, in order.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.nodes.keys().copied()
    }

    /// All nodes with their addresses, in address order.
    pub fn nodes(&self) -> impl Iterator<Item = (SocketAddr, &N)> + '_ {
        self.nodes.iter().map(|(addr, slot)| (*addr, &slot.node))
    }

    /// The number of nodes.
    #[must_use]
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    // ---- Partitions and filter ----------------------------------------------------------

    /// Cuts the link between `a` and `b`, in both directions.
    pub fn cut(&mut self, a: SocketAddr, b: SocketAddr) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Cuts the link from `from` to `to` only: `to` still reaches `from`.
    pub fn cut_one_way(&mut self, from: SocketAddr, to: SocketAddr) {
        self.wire.cut.insert((from, to));
    }

    /// Cuts every link between a node of `side_a` and a node of `side_b`, both ways.
    pub fn partition(&mut self, side_a: &[SocketAddr], side_b: &[SocketAddr]) {
        for &a in side_a {
            for &b in side_b {
                self.cut(a, b);
            }
        }
    }

    /// Cuts `addr` off from everyone, including nodes added later, in both directions.
    pub fn isolate(&mut self, addr: SocketAddr) {
        self.wire.isolated.insert(addr);
    }

    /// Restores every link cut by [`cut`](Self::cut), [`cut_one_way`](Self::cut_one_way),
    /// [`partition`](Self::partition) and [`isolate`](Self::isolate). Datagrams dropped
    /// meanwhile stay dropped. The filter is not affected.
    pub fn heal(&mut self) {
        self.wire.cut.clear();
        self.wire.isolated.clear();
    }

    /// Whether a datagram from `from` to `to` would pass the partitions now (the fault
    /// plan and the filter aside). Handy for invariants over "nodes that can hear each
    /// other".
    #[must_use]
    pub fn can_reach(&self, from: SocketAddr, to: SocketAddr) -> bool {
        self.wire.link_up(from, to)
    }

    /// Installs a filter, replacing any previous one: it sees every datagram when it is
    /// sent (after the partitions, before the fault plan), and drops it by returning
    /// `false` (counted in [`dropped_filter`](Stats::dropped_filter)).
    ///
    /// Rules specific to one scenario ("drop every announce from node 3 after 2 s") belong
    /// in such a filter, in the test, not in this crate.
    pub fn set_filter(&mut self, filter: impl FnMut(&Datagram) -> bool + 'static) {
        self.wire.filter = Some(Box::new(filter));
    }

    /// Removes the filter.
    pub fn clear_filter(&mut self) {
        self.wire.filter = None;
    }

    /// Sends a datagram into the network as if `from` had sent it now (`from` need not be
    /// a node): for example garbage, a replay, or a message from a client that is not
    /// simulated. It goes through the partitions, filter and fault plan like any other.
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, payload: impl Into<Bytes>) {
        self.wire.send(self.elapsed, from, to, payload.into());
    }

    /// Caps the number of datagrams in flight (default [`DEFAULT_MAX_IN_FLIGHT`]). Beyond
    /// it, new datagrams are dropped and counted in
    /// [`dropped_queue_full`](Stats::dropped_queue_full), so a broadcast storm shows up in
    /// the stats instead of exhausting memory.
    pub fn set_max_in_flight(&mut self, max: usize) {
        self.wire.max_in_flight = max;
    }

    /// The number of datagrams in flight.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.wire.queue.len()
    }

    // ---- Stepping -----------------------------------------------------------------------

    /// The virtual time of the next thing that will happen: the earliest of the next
    /// datagram arrival and the nodes' [`poll_timeout`](SimNode::poll_timeout) (mapped to
    /// the simulation's clock, and never earlier than now). `None` when nothing is
    /// scheduled.
    ///
    /// Outputs queued through [`node_mut`](Self::node_mut) and not yet flushed are not
    /// counted; [`step`](Self::step) flushes them first.
    #[must_use]
    pub fn next_event_time(&self) -> Option<Duration> {
        let delivery = self.wire.queue.first_key_value().map(|(&(at, _), _)| at);
        match (self.next_timer(), delivery) {
            (Some(t), Some(d)) => Some(t.min(d)),
            (t, d) => t.or(d),
        }
    }

    /// Does the next thing: advances the clock to [`next_event_time`](Self::next_event_time),
    /// then either calls `handle_timeout` on every node whose deadline has come (in address
    /// order) or delivers the next datagram. Timers go first when both are due at the same
    /// instant. After each `handle_*` call it drains that node (transmits into the
    /// network, events into the [`event_log`](Self::event_log)), and at the start and end
    /// of the step it drains every node.
    ///
    /// Returns `false`, without advancing the clock, when nothing is scheduled.
    ///
    /// Invariants are not checked here; [`try_step`](Self::try_step) and the `run_*`
    /// methods check them.
    pub fn step(&mut self) -> bool {
        self.flush_all();
        let next_timer = self.next_timer();
        let next_delivery = self.wire.queue.first_key_value().map(|(&(at, _), _)| at);
        // Timers first on a tie, as a driver loop handles expired timers before reading
        // the socket.
        let timers_at = match (next_timer, next_delivery) {
            (None, None) => return false,
            (Some(timer), Some(delivery)) => Some(timer).filter(|&timer| timer <= delivery),
            (timer, None) => timer,
            (None, Some(_)) => None,
        };
        self.wire.stats.steps += 1;
        if let Some(at) = timers_at {
            self.advance_to(at);
            self.fire_due_timers();
        } else if let Some(((at, _), datagram)) = self.wire.queue.pop_first() {
            self.advance_to(at);
            self.deliver(datagram);
        }
        self.flush_all();
        true
    }

    /// [`step`](Self::step), then (if a step was taken) every invariant.
    ///
    /// # Errors
    ///
    /// [`SimError::Invariant`] for the first invariant that fails.
    pub fn try_step(&mut self) -> Result<bool, SimError> {
        let progressed = self.step();
        if progressed {
            self.check_invariants()?;
        }
        Ok(progressed)
    }

    /// Steps until `done` returns `true`, checking the invariants after every step, and
    /// returns the number of steps taken. `done` is checked before the first step too, so
    /// a goal already reached takes 0 steps.
    ///
    /// # Errors
    ///
    /// * [`SimError::StepLimit`] after `max_steps` steps without reaching the goal (the
    ///   bound that keeps a broken protocol from hanging the test, like quinn's
    ///   `drive_bounded`);
    /// * [`SimError::Idle`] if nothing is left to do and the goal has not been reached;
    /// * [`SimError::Invariant`] if an invariant fails.
    pub fn run_until(
        &mut self,
        mut done: impl FnMut(&Self) -> bool,
        max_steps: usize,
    ) -> Result<usize, SimError> {
        self.run_bounded(&mut done, max_steps, None)
    }

    /// Like [`run_until`](Self::run_until), but also fails if the goal has not been reached
    /// within `within` of virtual time from now: the shape of a liveness check ("one lord
    /// within 3 announce intervals after `heal()`").
    ///
    /// # Errors
    ///
    /// As [`run_until`](Self::run_until), plus [`SimError::TimeLimit`]; the clock is then
    /// left at the limit.
    pub fn run_until_within(
        &mut self,
        mut done: impl FnMut(&Self) -> bool,
        within: Duration,
        max_steps: usize,
    ) -> Result<usize, SimError> {
        let limit = self.elapsed + within;
        self.run_bounded(&mut done, max_steps, Some(limit))
    }

    /// Runs every step scheduled within the next `duration` of virtual time, checking the
    /// invariants after each, then sets the clock to exactly `now + duration`. Returns the
    /// number of steps taken.
    ///
    /// # Errors
    ///
    /// [`SimError::StepLimit`] if that takes more than `max_steps` steps;
    /// [`SimError::Invariant`] if an invariant fails.
    pub fn run_for(&mut self, duration: Duration, max_steps: usize) -> Result<usize, SimError> {
        let end = self.elapsed + duration;
        let mut steps = 0;
        loop {
            self.flush_all();
            match self.next_event_time() {
                Some(at) if at <= end => {}
                _ => break,
            }
            if steps >= max_steps {
                return Err(SimError::StepLimit { max_steps, elapsed: self.elapsed });
            }
            self.try_step()?;
            steps += 1;
        }
        self.advance_to(end);
        Ok(steps)
    }

    /// Steps until nothing is scheduled (no datagram in flight, no timer armed), checking
    /// the invariants after each step. Returns the number of steps taken.
    ///
    /// # Errors
    ///
    /// [`SimError::StepLimit`] if the network is still busy after `max_steps` steps (a
    /// protocol with periodic timers never goes idle: use [`run_for`](Self::run_for));
    /// [`SimError::Invariant`] if an invariant fails.
    pub fn run_until_idle(&mut self, max_steps: usize) -> Result<usize, SimError> {
        let mut steps = 0;
        loop {
            self.flush_all();
            if self.next_event_time().is_none() {
                return Ok(steps);
            }
            if steps >= max_steps {
                return Err(SimError::StepLimit { max_steps, elapsed: self.elapsed });
            }
            self.try_step()?;
            steps += 1;
        }
    }

    fn run_bounded(
        &mut self,
        done: &mut dyn FnMut(&Self) -> bool,
        max_steps: usize,
        limit: Option<Duration>,
    ) -> Result<usize, SimError> {
        let mut steps = 0;
        loop {
            self.flush_all();
            if done(self) {
                return Ok(steps);
            }
            if steps >= max_steps {
                return Err(SimError::StepLimit { max_steps, elapsed: self.elapsed });
            }
            let Some(next) = self.next_event_time() else {
                return Err(SimError::Idle { steps, elapsed: self.elapsed });
            };
            if let Some(limit) = limit.filter(|limit| next > *limit) {
                self.advance_to(limit);
                return Err(SimError::TimeLimit { limit, steps });
            }
            self.try_step()?;
            steps += 1;
        }
    }

    // ---- Invariants ---------------------------------------------------------------------

    /// Registers an invariant, checked after every step taken by [`try_step`](Self::try_step)
    /// and the `run_*` methods, in registration order. It returns `Err` with an explanation
    /// when the state is wrong; the run then stops with [`SimError::Invariant`].
    ///
    /// Safety properties go here ("at most one lord among nodes that can all hear each
    /// other"); liveness properties are the goal of a [`run_until_within`](Self::run_until_within).
    pub fn add_invariant(
        &mut self,
        name: impl Into<String>,
        check: impl FnMut(&Self) -> Result<(), String> + 'static,
    ) {
        self.invariants.push(Invariant { name: name.into(), check: Box::new(check) });
    }

    /// Checks every invariant now.
    ///
    /// # Errors
    ///
    /// [`SimError::Invariant`] for the first one that fails.
    pub fn check_invariants(&mut self) -> Result<(), SimError> {
        // Taken out so each check can borrow the whole network; no check can register
        // another (it only gets `&Self`), so putting them back loses nothing.
        let mut invariants = core::mem::take(&mut self.invariants);
        let mut result = Ok(());
        for invariant in &mut invariants {
            if let Err(message) = (invariant.check)(self) {
                result = Err(SimError::Invariant {
                    name: invariant.name.clone(),
                    step: self.wire.stats.steps,
                    elapsed: self.elapsed,
                    message,
                });
                break;
            }
        }
        self.invariants = invariants;
        result
    }

    // ---- Records ------------------------------------------------------------------------

    /// The counters. See [`Stats`] for the conservation law they obey.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.wire.stats
    }

    /// Every event every node has reported, in the order collected (a total order).
    #[must_use]
    pub fn event_log(&self) -> &[LogEntry<N::Event>] {
        &self.log
    }

    /// The events reported by the node at `addr`, in order, with their virtual times.
    pub fn events_of(&self, addr: SocketAddr) -> impl Iterator<Item = (Duration, &N::Event)> + '_ {
        self.log.iter().filter(move |entry| entry.node == addr).map(|entry| (entry.at, &entry.event))
    }

    /// The whole run as text: one line per [`event_log`](Self::event_log) entry, then the
    /// final virtual time and [`Stats`]. Two runs with the same seed must produce the same
    /// transcript; see [`check_determinism`](crate::check_determinism).
    #[must_use]
    pub fn transcript(&self) -> String {
        use core::fmt::Write as _;
        let mut out = String::new();
        for entry in &self.log {
            let _ = writeln!(out, "{entry}");
        }
        let _ = writeln!(
            out,
            "end at {} with {} in flight, {:?}",
            Elapsed(self.elapsed),
            self.in_flight(),
            self.wire.stats
        );
        out
    }

    /// Starts (`true`) or stops (`false`) recording the network trace: every send,
    /// delivery, drop and timeout. Off by default, since it grows with every datagram.
    /// Stopping keeps what was recorded; starting again appends.
    pub fn record_trace(&mut self, on: bool) {
        self.wire.trace_on = on;
    }

    /// The network trace recorded so far (empty unless [`record_trace`](Self::record_trace)
    /// was turned on).
    #[must_use]
    pub fn trace(&self) -> &[TraceEntry] {
        &self.wire.trace
    }

    // ---- Internals ----------------------------------------------------------------------

    fn advance_to(&mut self, at: Duration) {
        // Time never goes backwards: `at` comes from the queue or a clamped deadline.
        self.elapsed = self.elapsed.max(at);
    }

    /// The node's deadline on the simulation's clock, never earlier than now.
    fn deadline_of(&self, addr: SocketAddr, slot: &NodeSlot<N>) -> Option<Duration> {
        let deadline = slot.node.poll_timeout()?;
        let global = match self.clock_offset(addr) {
            // A deadline so far in the past that it cannot be shifted is due now.
            ClockOffset::Ahead(by) => deadline.checked_sub(by),
            // One so far in the future that it cannot be shifted will never come.
            ClockOffset::Behind(by) => Some(deadline.checked_add(by)?),
        };
        let since_epoch = global.map_or(Duration::ZERO, |g| g.saturating_duration_since(self.epoch));
        Some(since_epoch.max(self.elapsed))
    }

    fn next_timer(&self) -> Option<Duration> {
        self.nodes.iter().filter_map(|(addr, slot)| self.deadline_of(*addr, slot)).min()
    }

    /// The `now` to pass to the node at `addr`, recorded as given (monotonic per node).
    fn tick_node(&mut self, addr: SocketAddr) -> Option<Instant> {
        let now = self.now_for(addr);
        let slot = self.nodes.get_mut(&addr)?;
        slot.last_now = Some(now);
        Some(now)
    }

    /// Calls `handle_timeout` on every node whose deadline has come, in address order,
    /// draining each right after its call.
    fn fire_due_timers(&mut self) {
        let due: Vec<SocketAddr> = self
            .nodes
            .iter()
            .filter(|(addr, slot)| self.deadline_of(**addr, slot).is_some_and(|d| d <= self.elapsed))
            .map(|(addr, _)| *addr)
            .collect();
        for addr in due {
            let Some(now) = self.tick_node(addr) else { continue };
            if let Some(slot) = self.nodes.get_mut(&addr) {
                slot.node.handle_timeout(now);
            }
            self.wire.stats.timeouts += 1;
            self.wire.record(self.elapsed, TraceKind::Timeout { node: addr });
            self.flush_node(addr);
        }
    }

    fn deliver(&mut self, datagram: InFlight) {
        let InFlight { from, to, payload } = datagram;
        let len = payload.len();
        if !self.nodes.contains_key(&to) {
            return self.wire.drop_datagram(self.elapsed, from, to, len, DropReason::Unroutable);
        }
        // A link cut while the datagram was in flight drops it too.
        if !self.wire.link_up(from, to) {
            return self.wire.drop_datagram(self.elapsed, from, to, len, DropReason::Partition);
        }
        let Some(now) = self.tick_node(to) else { return };
        if let Some(slot) = self.nodes.get_mut(&to) {
            slot.node.handle_datagram(now, from, &payload);
        }
        self.wire.stats.delivered += 1;
        self.wire.record(self.elapsed, TraceKind::Deliver { from, to, len });
        self.flush_node(to);
    }

    /// Drains the node at `addr` (see [`drain`]).
    fn flush_node(&mut self, addr: SocketAddr) {
        if let Some(slot) = self.nodes.get_mut(&addr) {
            drain(addr, &mut slot.node, self.elapsed, &mut self.wire, &mut self.log);
        }
    }

    /// Drains every node, in address order.
    fn flush_all(&mut self) {
        for (addr, slot) in &mut self.nodes {
            drain(*addr, &mut slot.node, self.elapsed, &mut self.wire, &mut self.log);
        }
    }
}

/// Drains one node at virtual time `at`: transmits into the network until `None`, then
/// events into the log until `None` (the contract's order).
fn drain<N: SimNode>(
    addr: SocketAddr,
    node: &mut N,
    at: Duration,
    wire: &mut Wire,
    log: &mut Vec<LogEntry<N::Event>>,
) {
    while let Some((to, payload)) = node.poll_transmit() {
        wire.send(at, addr, to, payload);
    }
    while let Some(event) = node.poll_event() {
        log.push(LogEntry { at, node: addr, event });
    }
}

/// Reads `t` on a clock shifted by `offset`.
fn shift(t: Instant, offset: ClockOffset) -> Instant {
    match offset {
        ClockOffset::Ahead(by) => t + by,
        // Cannot underflow: `t` is at or after the epoch, which is `MAX_BEHIND` after a real
        // instant, and `set_clock_offset` refuses larger offsets.
        ClockOffset::Behind(by) => t - by,
    }
}

/// The epoch of a new simulation.
///
/// This is the crate's one clock reading (hence the `allow`): a simulation needs some
/// `Instant` to add its virtual `Duration`s to, and std offers no other way to get one.
/// Only the epoch is read; no behaviour and no output depends on its value (logs print
/// time since the epoch). It is placed `ClockOffset::MAX_BEHIND` after the reading so that
/// a node's clock set behind by up to that much is still a valid `Instant`.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now() + ClockOffset::MAX_BEHIND
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 9000))
    }

    const MS: Duration = Duration::from_millis(1);

    /// A scriptable node: sends what the test queues, arms the deadline the test sets,
    /// and reports everything it sees as an event.
    #[derive(Default)]
    struct Probe {
        outbox: VecDeque<(SocketAddr, Bytes)>,
        events: VecDeque<String>,
        deadline: Option<Instant>,
        /// Keep the deadline after it fires (a livelocked node).
        sticky: bool,
        /// Every `now` this node was given.
        nows: Vec<Instant>,
        received: Vec<(SocketAddr, Bytes)>,
    }

    impl Probe {
        fn send(&mut self, to: SocketAddr, bytes: &'static [u8]) {
            self.outbox.push_back((to, Bytes::from_static(bytes)));
        }
    }

    impl SimNode for Probe {
        type Event = String;
        fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
            self.nows.push(now);
            self.received.push((from, Bytes::copy_from_slice(bytes)));
            self.events.push_back(format!("from {from}: {}", bytes.escape_ascii()));
        }
        fn handle_timeout(&mut self, now: Instant) {
            self.nows.push(now);
            if !self.sticky && self.deadline.is_some_and(|d| d <= now) {
                self.deadline = None;
            }
            self.events.push_back("timeout".to_owned());
        }
        fn poll_transmit(&mut self) -> Option<(SocketAddr, Bytes)> {
            self.outbox.pop_front()
        }
        fn poll_event(&mut self) -> Option<String> {
            self.events.pop_front()
        }
        fn poll_timeout(&self) -> Option<Instant> {
            self.deadline
        }
    }

    fn pair() -> SimNet<Probe> {
        let mut net = SimNet::new(1);
        net.add_node(addr(1), Probe::default());
        net.add_node(addr(2), Probe::default());
        net
    }

    #[test]
    fn an_empty_network_is_idle_and_time_stands_still() {
        let mut net = pair();
        assert_eq!(net.next_event_time(), None);
        assert!(!net.step());
        assert_eq!(net.elapsed(), Duration::ZERO);
        assert_eq!(net.now(), net.epoch());
        assert_eq!(net.stats().steps, 0);
    }

    #[test]
    fn datagrams_due_at_the_same_instant_arrive_in_send_order() {
        let mut net = pair();
        let p = net.node_mut(addr(1)).unwrap();
        p.send(addr(2), b"first");
        p.send(addr(2), b"second");
        p.send(addr(2), b"third");
        assert_eq!(net.run_until_idle(10), Ok(3));
        let received: Vec<&[u8]> = net.node(addr(2)).unwrap().received.iter().map(|(_, b)| &b[..]).collect();
        assert_eq!(received, [&b"first"[..], b"second", b"third"]);
        assert_eq!(net.elapsed(), MS);
    }

    #[test]
    fn timers_fire_before_deliveries_due_at_the_same_instant_in_address_order() {
        let mut net = pair();
        let now = net.now();
        net.node_mut(addr(1)).unwrap().send(addr(2), b"x");
        net.node_mut(addr(2)).unwrap().deadline = Some(now + MS);
        net.node_mut(addr(1)).unwrap().deadline = Some(now + MS);
        assert!(net.step());
        assert_eq!(net.stats().timeouts, 2, "both due timers fire in one step");
        assert!(net.step());
        let log: Vec<String> = net.event_log().iter().map(ToString::to_string).collect();
        assert_eq!(
            log,
            [
                "0.001000000s 10.0.0.1:9000 \"timeout\"",
                "0.001000000s 10.0.0.2:9000 \"timeout\"",
                "0.001000000s 10.0.0.2:9000 \"from 10.0.0.1:9000: x\"",
            ]
        );
    }

    #[test]
    fn a_deadline_in_the_past_fires_now_without_moving_time_backwards() {
        let mut net = pair();
        net.run_for(10 * MS, 10).unwrap();
        let past = net.now() - 5 * MS;
        net.node_mut(addr(1)).unwrap().deadline = Some(past);
        assert_eq!(net.next_event_time(), Some(10 * MS));
        assert!(net.step());
        assert_eq!(net.elapsed(), 10 * MS);
        assert_eq!(net.node(addr(1)).unwrap().nows, [net.now()]);
    }

    #[test]
    fn a_livelocked_node_hits_the_step_limit() {
        let mut net = pair();
        let now = net.now();
        let p = net.node_mut(addr(1)).unwrap();
        p.deadline = Some(now + MS);
        p.sticky = true;
        let err = net.run_until(|_| false, 50).unwrap_err();
        assert_eq!(err, SimError::StepLimit { max_steps: 50, elapsed: MS });
    }

    #[test]
    fn run_until_checks_the_goal_before_stepping() {
        let mut net = pair();
        net.node_mut(addr(1)).unwrap().send(addr(2), b"x");
        assert_eq!(net.run_until(|_| true, 0), Ok(0));
        assert_eq!(net.in_flight(), 1, "outputs queued by node_mut are flushed first");
        assert_eq!(net.run_until(|n| n.stats().delivered == 1, 5), Ok(1));
    }

    #[test]
    fn run_until_reports_idle_when_the_goal_cannot_be_reached() {
        let mut net = pair();
        net.node_mut(addr(1)).unwrap().send(addr(2), b"x");
        assert_eq!(net.run_until(|_| false, 5), Err(SimError::Idle { steps: 1, elapsed: MS }));
    }

    #[test]
    fn run_until_within_stops_at_the_time_limit() {
        let mut net = pair();
        let now = net.now();
        net.node_mut(addr(1)).unwrap().deadline = Some(now + 50 * MS);
        let err = net.run_until_within(|_| false, 20 * MS, 100).unwrap_err();
        assert_eq!(err, SimError::TimeLimit { limit: 20 * MS, steps: 0 });
        assert_eq!(net.elapsed(), 20 * MS);
        assert_eq!(net.run_until_within(|n| n.stats().timeouts == 1, 40 * MS, 100), Ok(1));
        assert_eq!(net.elapsed(), 50 * MS);
    }

    #[test]
    fn run_for_lands_exactly_on_the_end_time() {
        let mut net = pair();
        let now = net.now();
        net.node_mut(addr(1)).unwrap().deadline = Some(now + 3 * MS);
        assert_eq!(net.run_for(3 * MS, 10), Ok(1), "an event exactly at the end is included");
        assert_eq!(net.run_for(7 * MS, 10), Ok(0));
        assert_eq!(net.elapsed(), 10 * MS);
        net.node_mut(addr(1)).unwrap().sticky = true;
        net.node_mut(addr(1)).unwrap().deadline = Some(net.now());
        assert!(matches!(net.run_for(MS, 5), Err(SimError::StepLimit { max_steps: 5, .. })));
    }

    #[test]
    fn with_node_passes_the_node_clock_and_flushes() {
        let mut net = pair();
        net.set_clock_offset(addr(1), ClockOffset::Ahead(5 * MS));
        let seen = net.with_node(addr(1), |p, now| {
            p.send(addr(2), b"hi");
            now
        });
        assert_eq!(seen, Some(net.now() + 5 * MS));
        assert_eq!(net.in_flight(), 1);
        assert_eq!(net.with_node(addr(9), |_, now| now), None);
    }

    #[test]
    fn clock_offsets_shift_now_and_map_deadlines_back() {
        let mut net: SimNet<Probe> = SimNet::new(1);
        net.set_clock_offset(addr(1), ClockOffset::Ahead(Duration::from_secs(2)));
        net.set_clock_offset(addr(2), ClockOffset::Behind(Duration::from_secs(2)));
        for n in [1, 2] {
            let start = net.now_for(addr(n));
            net.add_node(addr(n), Probe { deadline: Some(start + 10 * MS), ..Probe::default() });
        }
        net.run_for(20 * MS, 10).unwrap();
        let epoch = net.epoch();
        let ahead = &net.node(addr(1)).unwrap().nows;
        let behind = &net.node(addr(2)).unwrap().nows;
        // Both timers fire 10 ms into the run, each reading its own clock.
        assert_eq!(ahead, &[epoch + Duration::from_secs(2) + 10 * MS]);
        assert_eq!(behind, &[epoch + 10 * MS - Duration::from_secs(2)]);
        assert_eq!(net.stats().timeouts, 2);
    }

    #[test]
    fn lowering_a_clock_offset_never_moves_a_node_clock_backwards() {
        let mut net = pair();
        net.set_clock_offset(addr(1), ClockOffset::Ahead(100 * MS));
        net.node_mut(addr(2)).unwrap().send(addr(1), b"a");
        net.run_until_idle(10).unwrap();
        let first = net.node(addr(1)).unwrap().nows[0];
        net.set_clock_offset(addr(1), ClockOffset::ZERO);
        for _ in 0..3 {
            net.node_mut(addr(2)).unwrap().send(addr(1), b"b");
            net.run_until_idle(10).unwrap();
        }
        let nows = &net.node(addr(1)).unwrap().nows;
        assert!(nows.windows(2).all(|w| w[0] <= w[1]), "{nows:?}");
        assert_eq!(nows[3], first, "the clock stands still until the new reading catches up");
        assert_eq!(net.now_for(addr(1)), first);
    }

    #[test]
    fn a_node_set_behind_before_its_first_timer_never_sees_a_time_before_its_start() {
        let mut net: SimNet<Probe> = SimNet::new(1);
        let start = net.now_for(addr(1));
        net.add_node(addr(1), Probe { deadline: Some(start + MS), ..Probe::default() });
        net.set_clock_offset(addr(1), ClockOffset::Behind(100 * MS));
        // The node's clock stands at its start time until the new reading passes it, 100 ms
        // later; its timer fires when its own clock reaches the deadline.
        net.run_for(10 * MS, 10).unwrap();
        assert_eq!(net.now_for(addr(1)), start);
        assert!(net.node(addr(1)).unwrap().nows.is_empty());
        net.run_for(100 * MS, 10).unwrap();
        assert_eq!(net.node(addr(1)).unwrap().nows, [start + MS]);
        assert_eq!(net.stats().timeouts, 1);
        assert_eq!(net.now_for(addr(1)), start + 10 * MS);
    }

    #[test]
    #[should_panic(expected = "at most")]
    fn offsets_behind_beyond_the_headroom_are_refused() {
        let mut net = pair();
        net.set_clock_offset(addr(1), ClockOffset::Behind(ClockOffset::MAX_BEHIND + MS));
    }

    #[test]
    #[should_panic(expected = "already at")]
    fn adding_two_nodes_at_one_address_is_refused() {
        let mut net = pair();
        net.add_node(addr(1), Probe::default());
    }

    #[test]
    #[should_panic(expected = "invalid fault plan")]
    fn an_invalid_fault_plan_is_refused() {
        let _ = SimNet::<Probe>::new(1).with_fault_plan(FaultPlan { loss: 2.0, ..FaultPlan::default() });
    }

    #[test]
    fn a_cut_during_flight_drops_the_datagram_on_arrival() {
        let mut net = pair();
        net.node_mut(addr(1)).unwrap().send(addr(2), b"x");
        net.run_until(|n| n.in_flight() == 1, 1).unwrap();
        net.cut_one_way(addr(1), addr(2));
        assert!(!net.can_reach(addr(1), addr(2)) && net.can_reach(addr(2), addr(1)));
        net.run_until_idle(5).unwrap();
        assert_eq!(net.stats().dropped_partition, 1);
        assert_eq!(net.stats().delivered, 0);
    }

    #[test]
    fn isolation_covers_nodes_added_later_and_heal_restores_everything() {
        let mut net = pair();
        net.isolate(addr(1));
        net.partition(&[addr(2)], &[addr(4)]);
        assert!(!net.can_reach(addr(3), addr(1)) && !net.can_reach(addr(1), addr(3)));
        assert!(!net.can_reach(addr(4), addr(2)) && net.can_reach(addr(4), addr(3)));
        net.heal();
        assert!(net.can_reach(addr(3), addr(1)) && net.can_reach(addr(4), addr(2)));
    }

    #[test]
    fn the_filter_sees_each_datagram_once_and_can_drop_it() {
        let mut net = pair();
        net.set_filter(|d| d.payload[..] != *b"drop me" && d.from == addr(1));
        net.node_mut(addr(1)).unwrap().send(addr(2), b"keep");
        net.node_mut(addr(1)).unwrap().send(addr(2), b"drop me");
        net.node_mut(addr(2)).unwrap().send(addr(1), b"keep");
        net.run_until_idle(10).unwrap();
        assert_eq!((net.stats().delivered, net.stats().dropped_filter), (1, 2));
        net.clear_filter();
        net.inject(addr(9), addr(2), &b"drop me"[..]);
        net.run_until_idle(10).unwrap();
        assert_eq!(
            net.node(addr(2)).unwrap().received.last().unwrap(),
            &(addr(9), Bytes::from_static(b"drop me"))
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let mut net = pair();
        net.set_max_in_flight(2);
        for _ in 0..5 {
            net.inject(addr(1), addr(2), Bytes::from_static(b"x"));
        }
        assert_eq!((net.in_flight(), net.stats().dropped_queue_full), (2, 3));
        assert_eq!(net.stats().accounted(net.in_flight()), Ok(()));
    }

    #[test]
    fn corruption_flips_exactly_one_bit() {
        let mut net = pair().with_fault_plan(FaultPlan { corrupt: 1.0, ..FaultPlan::default() });
        let original = [0u8; 16];
        for _ in 0..50 {
            net.inject(addr(1), addr(2), Bytes::copy_from_slice(&original));
        }
        net.inject(addr(1), addr(2), Bytes::new());
        net.run_until_idle(100).unwrap();
        let received = &net.node(addr(2)).unwrap().received;
        assert_eq!(received.len(), 51);
        for (_, bytes) in &received[..50] {
            let flipped: u32 = bytes.iter().map(|b| b.count_ones()).sum();
            assert_eq!(flipped, 1, "{bytes:?}");
        }
        assert!(received[50].1.is_empty(), "an empty datagram cannot be corrupted");
        assert_eq!(net.stats().corrupted, 50);
    }

    #[test]
    fn latency_stays_within_the_configured_range() {
        let plan = FaultPlan { latency_min: 2 * MS, latency_max: 7 * MS, ..FaultPlan::default() };
        let mut net = pair().with_fault_plan(plan);
        net.record_trace(true);
        for _ in 0..200 {
            net.inject(addr(1), addr(2), Bytes::from_static(b"x"));
        }
        let dues: Vec<Duration> = net
            .trace()
            .iter()
            .filter_map(|e| match e.kind {
                TraceKind::Send { deliver_at, .. } => Some(deliver_at),
                _ => None,
            })
            .collect();
        assert_eq!(dues.len(), 200);
        assert!(dues.iter().all(|d| (2 * MS..=7 * MS).contains(d)));
        assert!(
            dues.iter().any(|d| *d < 3 * MS) && dues.iter().any(|d| *d > 6 * MS),
            "jitter spans the range"
        );
    }

    #[test]
    fn invariants_run_after_every_step_and_stop_the_run() {
        let mut net = pair();
        for _ in 0..5 {
            net.node_mut(addr(1)).unwrap().send(addr(2), b"x");
        }
        net.add_invariant("accounting", |n: &SimNet<Probe>| n.stats().accounted(n.in_flight()));
        net.add_invariant("at most 2 deliveries", |n: &SimNet<Probe>| {
            let delivered = n.stats().delivered;
            if delivered <= 2 { Ok(()) } else { Err(format!("{delivered} delivered")) }
        });
        let err = net.run_until_idle(100).unwrap_err();
        assert_eq!(
            err,
            SimError::Invariant {
                name: "at most 2 deliveries".into(),
                step: 3,
                elapsed: MS,
                message: "3 delivered".into()
            }
        );
        assert_eq!(net.stats().delivered, 3, "the failing step's effects are kept");
        assert!(net.check_invariants().is_err(), "invariants survive a failure");
    }

    #[test]
    fn the_trace_records_sends_deliveries_drops_and_timeouts() {
        let mut net = pair();
        net.record_trace(true);
        let now = net.now();
        net.node_mut(addr(1)).unwrap().deadline = Some(now + MS);
        net.node_mut(addr(1)).unwrap().send(addr(2), b"abc");
        net.node_mut(addr(1)).unwrap().send(addr(3), b"lost");
        net.run_until_idle(10).unwrap();
        net.record_trace(false);
        net.inject(addr(1), addr(2), Bytes::from_static(b"untraced"));
        let lines: Vec<String> = net.trace().iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "0.000000000s 10.0.0.1:9000 -> 10.0.0.2:9000 send 3 bytes, due 0.001000000s",
                "0.000000000s 10.0.0.1:9000 -> 10.0.0.3:9000 send 4 bytes, due 0.001000000s",
                "0.001000000s 10.0.0.1:9000 timeout",
                "0.001000000s 10.0.0.1:9000 -> 10.0.0.2:9000 deliver 3 bytes",
                "0.001000000s 10.0.0.1:9000 -> 10.0.0.3:9000 drop 4 bytes (Unroutable)",
            ]
        );
        assert_eq!(net.stats().unroutable, 1);
    }

    #[test]
    fn a_removed_node_can_be_restarted_at_the_same_address() {
        let mut net = pair();
        let old = net.remove_node(addr(2));
        assert!(old.is_some());
        assert_eq!(net.node_count(), 1);
        assert!(net.remove_node(addr(2)).is_none());
        net.add_node(addr(2), Probe::default());
        assert_eq!(net.addrs().collect::<Vec<_>>(), [addr(1), addr(2)]);
        assert_eq!(net.nodes().count(), 2);
    }

    #[test]
    fn debug_output_summarises_without_node_internals() {
        let net = pair();
        let text = format!("{net:?}");
        assert!(
            text.starts_with(
                "SimNet { seed: 1, elapsed: 0.000000000s, nodes: [10.0.0.1:9000, 10.0.0.2:9000], in_flight: 0, "
            ),
            "{text}"
        );
        assert!(text.ends_with(", .. }"), "{text}");
    }
}
