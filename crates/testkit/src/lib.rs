//! A deterministic simulated UDP network, with a virtual clock, for testing the workspace's
//! sans-IO protocol cores.
//!
//! It is test support (`publish = false`), and it is protocol-agnostic: it depends on no
//! protocol crate. A protocol crate takes it as a dev-dependency, wraps its core in a small
//! adapter implementing [`SimNode`], and drives a cluster of them through a [`SimNet`] in
//! `tests/sim.rs`. There are no sockets, no threads and no real clock: one seed determines
//! the whole run, so any failure can be replayed exactly.
//!
//! # Model
//!
//! * **Nodes** are [`SimNode`]s keyed by `SocketAddr` ([`SimNet::add_node`],
//!   [`SimNet::remove_node`] for a crash). They follow the workspace's sans-IO contract:
//!   after every `handle_*` call the simulator drains `poll_transmit`, then `poll_event`,
//!   then reads `poll_timeout`.
//! * **Virtual time** is an epoch `Instant` plus a `Duration` ([`SimNet::now`],
//!   [`SimNet::elapsed`]). [`SimNet::step`] jumps straight to the next thing that happens:
//!   the earliest of the next datagram arrival and the nodes' deadlines. Timers due at that
//!   instant fire first (nodes in address order), otherwise one datagram is delivered.
//! * **Bounded runs**: [`SimNet::run_until`], [`SimNet::run_until_within`],
//!   [`SimNet::run_for`] and [`SimNet::run_until_idle`] take a maximum number of steps and
//!   return a [`SimError`] instead of hanging.
//! * **Faults are data**: a [`FaultPlan`] (latency and jitter, loss, duplication, reordering,
//!   corruption; [`FaultPlan::swarm`] derives one from a seed), partitions
//!   ([`SimNet::cut`], [`SimNet::cut_one_way`], [`SimNet::partition`], [`SimNet::isolate`],
//!   [`SimNet::heal`]), a per-test filter ([`SimNet::set_filter`]), and per-node clock skew
//!   ([`SimNet::set_clock_offset`]).
//! * **Records**: every event with its time and node ([`SimNet::event_log`]), counters
//!   ([`Stats`]), an optional network trace ([`SimNet::record_trace`]) and a textual
//!   [`SimNet::transcript`].
//!
//! # Quick start
//!
//! Two nodes play ping-pong three times over a perfect network with 1 ms latency:
//!
//! ```
//! use std::collections::VecDeque;
//! use std::net::SocketAddr;
//! use std::time::{Duration, Instant};
//!
//! use testkit::{Bytes, SimNet, SimNode};
//!
//! /// Sends `rounds` pings to `peer`, one after each pong; answers every ping with a pong.
//! struct PingPong {
//!     peer: SocketAddr,
//!     rounds: u32,
//!     outbox: VecDeque<(SocketAddr, Bytes)>,
//!     events: VecDeque<&'static str>,
//! }
//!
//! impl PingPong {
//!     fn new(peer: SocketAddr, rounds: u32) -> Self {
//!         let mut node = Self { peer, rounds, outbox: VecDeque::new(), events: VecDeque::new() };
//!         node.ping();
//!         node
//!     }
//!     fn ping(&mut self) {
//!         if self.rounds > 0 {
//!             self.rounds -= 1;
//!             self.outbox.push_back((self.peer, Bytes::from_static(b"ping")));
//!         }
//!     }
//! }
//!
//! impl SimNode for PingPong {
//!     type Event = &'static str;
//!     fn handle_datagram(&mut self, _now: Instant, from: SocketAddr, bytes: &[u8]) {
//!         match bytes {
//!             b"ping" => self.outbox.push_back((from, Bytes::from_static(b"pong"))),
//!             b"pong" => {
//!                 self.events.push_back("pong");
//!                 self.ping();
//!             }
//!             _ => self.events.push_back("garbage"),
//!         }
//!     }
//!     fn handle_timeout(&mut self, _now: Instant) {}
//!     fn poll_transmit(&mut self) -> Option<(SocketAddr, Bytes)> {
//!         self.outbox.pop_front()
//!     }
//!     fn poll_event(&mut self) -> Option<&'static str> {
//!         self.events.pop_front()
//!     }
//!     fn poll_timeout(&self) -> Option<Instant> {
//!         None // no timers
//!     }
//! }
//!
//! let a: SocketAddr = "10.0.0.1:4000".parse()?;
//! let b: SocketAddr = "10.0.0.2:4000".parse()?;
//! let mut net = SimNet::new(7);
//! net.add_node(a, PingPong::new(b, 3));
//! net.add_node(b, PingPong::new(a, 0));
//!
//! let steps = net.run_until_idle(100)?;
//! assert_eq!(steps, 6); // 3 pings + 3 pongs delivered
//! assert_eq!(net.elapsed(), Duration::from_millis(6));
//! assert_eq!(net.events_of(a).count(), 3);
//! assert_eq!(net.stats().delivered, 6);
//! assert_eq!(
//!     net.event_log()[0].to_string(),
//!     "0.002000000s 10.0.0.1:4000 \"pong\"",
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Seeds, sweeps and reproduction
//!
//! [`SimNet::new`] takes the seed; the network's random choices (and the test's own, via
//! [`SimNet::rng_mut`]) all come from it. A simulation test usually sweeps seeds:
//!
//! ```
//! use testkit::{seeds_from_env, sweep};
//!
//! // SIM_SEED=<n> runs one seed, SIM_SEEDS=<k> runs k seeds, otherwise 8.
//! let seeds = seeds_from_env(8);
//! sweep(env!("CARGO_PKG_NAME"), "sim_example", &seeds, |seed| {
//!     // Build a SimNet::swarm(seed), run it, return Err(text) on failure.
//!     let _ = seed;
//!     Ok(())
//! });
//! ```
//!
//! On failure [`sweep`] panics with the seed and the [`reproduce_line`]
//! (`SIM_SEED=<n> cargo test -p <package> --test sim <name>`).
//!
//! # Commands, crashes, restarts and clock skew
//!
//! * [`SimNet::with_node`] calls a node's command (say `leave()`) with the node's own `now`
//!   and sends what it queued at once; [`SimNet::node`] / [`SimNet::node_mut`] give plain
//!   access.
//! * [`SimNet::remove_node`] is a crash: in-flight datagrams to it become
//!   [`unroutable`](Stats::unroutable). Adding a fresh node at the same address is a
//!   restart.
//! * [`SimNet::set_clock_offset`] skews one node's clock by a fixed [`ClockOffset`]; build
//!   nodes with [`SimNet::now_for`] so their start time is on their own clock. A node's
//!   clock never goes backwards, even when its offset is lowered.
//! * [`SimNet::inject`] sends arbitrary bytes from any address (garbage, replays).
//!
//! # Invariants and determinism
//!
//! [`SimNet::add_invariant`] registers a safety check run after every step of every
//! bounded run; liveness is a [`SimNet::run_until_within`] goal. [`check_determinism`] runs a
//! seed twice and compares the [`SimNet::transcript`]s, which catches `HashMap` iteration
//! order, clocks read by the core, and unseeded randomness.
//!
//! # Logs
//!
//! Times are always printed as time since the epoch ([`Elapsed`], `1.500000000s`).
//! [`SimNet::transcript`] prints the event log and the final [`Stats`];
//! [`SimNet::trace`] (after [`SimNet::record_trace`]) lists every send, delivery, drop and
//! timeout. Print either from a failing test to see what happened.
//!
//! # Crate features
//!
//! None.

pub use bytes::Bytes;
pub use fastrand::Rng;

mod error;
mod fault;
mod log;
mod net;
mod node;
mod seed;

pub use error::{FaultPlanError, SeedError, SimError};
pub use fault::{ClockOffset, Datagram, FaultPlan};
pub use log::{DropReason, Elapsed, LogEntry, Stats, TraceEntry, TraceKind};
pub use net::{DEFAULT_MAX_IN_FLIGHT, SimNet};
pub use node::SimNode;
pub use seed::{SIM_SEED, SIM_SEEDS, check_determinism, parse_seeds, reproduce_line, seeds_from_env, sweep};
