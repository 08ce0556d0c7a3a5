//! Sans-IO implementation of the uWSGI Legion lord-election protocol.
//!
//! A legion is a group of nodes that elect one **lord** among themselves: the node with
//! the highest valor (ties: the greater uuid), once every member agrees on the membership
//! and on the candidate, and enough of them agree (the quorum). Nodes tell each other who
//! they are in encrypted UDP announces. uWSGI uses this to move a failover IP, run a cron
//! job on exactly one node, or start a daemon only on the lord; this crate lets any Rust
//! program take part in the same election, next to real uWSGI 2.0.x nodes.
//!
//! This crate is the protocol only: no sockets, no threads, no clock. It takes bytes and
//! [`Instant`](std::time::Instant)s and gives back datagrams to send, events and the next
//! deadline. The workspace's `legiond` program drives it with mio.
//!
//! # Sans-IO contract
//!
//! | method | group |
//! |---|---|
//! | [`Legion::new`] | construct: validates the config, emits `Setup`, queues the first announce |
//! | [`Legion::handle_datagram`] | input: one received datagram |
//! | [`Legion::handle_timeout`] | input: time passed ([`Legion::poll_timeout`] was reached) |
//! | [`Legion::handle_action_result`], [`Legion::leave`] | commands |
//! | [`Legion::poll_transmit`] | output: datagrams to send |
//! | [`Legion::poll_event`] | output: events, in order, numbered |
//! | [`Legion::poll_timeout`] | output: when to call `handle_timeout` next |
//! | [`Legion::state`], [`Legion::lord`], [`Legion::members`], [`Legion::epoch`], [`Legion::stats`], … | getters, at any time |
//!
//! 1. After **every** `handle_*` call and command, drain [`Legion::poll_transmit`] until
//!    `None`, then [`Legion::poll_event`] until `None`, and only then read
//!    [`Legion::poll_timeout`].
//! 2. `now` never goes backwards. (Debug builds assert it; release builds take a late `now`
//!    as the last one.)
//! 3. There are no hidden clocks, threads or random numbers: the same inputs give the same
//!    outputs, byte for byte. The node's uuid and the wall-clock time at start are inputs
//!    of [`Legion::new`].
//!
//! # Quick start
//!
//! Two nodes wired by hand in memory, with virtual time:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use legion_proto::{Config, EventKind, Legion, NodeUuid, wire::Crypto};
//!
//! let crypto = Crypto::from_spec("aes-128-cbc:secret")?;
//! let (a_addr, b_addr) = ("127.0.0.1:41001".parse()?, "127.0.0.1:41002".parse()?);
//! let config = |valor| Config::new("lg", valor, crypto.clone())
//!     .nodes([a_addr, b_addr])
//!     .freq(Duration::from_secs(1))
//!     .tolerance(Duration::from_secs(3));
//! let t0 = Instant::now();
//! let wall = Duration::from_secs(1_800_000_000);
//! let mut a = Legion::new(config(10), NodeUuid::from_random([1; 16]), t0, wall)?;
//! let mut b = Legion::new(config(20), NodeUuid::from_random([2; 16]), t0, wall)?;
//!
//! // One node's turn: fire its timer if due, deliver what it sends to the other at once.
//! fn turn(me: &mut Legion, other: &mut Legion, me_addr: std::net::SocketAddr, now: Instant) {
//!     if me.poll_timeout().is_some_and(|t| t <= now) {
//!         me.handle_timeout(now);
//!     }
//!     while let Some(t) = me.poll_transmit() {
//!         if t.destination != me_addr {
//!             let _ = other.handle_datagram(now, me_addr, &t.payload);
//!         }
//!     }
//! }
//! let mut now = t0;
//! while now < t0 + Duration::from_secs(5) {
//!     turn(&mut a, &mut b, a_addr, now);
//!     turn(&mut b, &mut a, b_addr, now);
//!     now += Duration::from_millis(10);
//! }
//! assert!(b.is_lord() && !a.is_lord());
//! assert_eq!(a.lord().map(|l| l.valor), Some(20));
//! let kinds: Vec<_> = std::iter::from_fn(|| b.poll_event()).map(|e| e.kind.phase()).collect();
//! assert_eq!(kinds, ["setup", "node-joined", "join", "lord"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Driving with mio
//!
//! With the `mio` feature, `driver::LegionDriver` runs a `Legion` on a real UDP
//! (IPv4, IPv6, multicast) or unix datagram socket, reads the clock, makes the uuid, and
//! runs the hook actions (`cmd:`, `log:`, Rust callbacks) off the event loop. Register it
//! in your own `mio::Poll`, or let it run its own loop:
//!
//! ```no_run
//! # #[cfg(feature = "mio")] {
//! use std::time::Duration;
//! use legion_proto::{Config, wire::Crypto};
//! use legion_proto::driver::{Actions, Hook, LegionDriver, LegionSocket};
//!
//! let mut socket = LegionSocket::bind(&"127.0.0.1:41001".parse()?)?;
//! let peer = socket.target(&"127.0.0.1:41002".parse()?)?;
//! let config = Config::new("lg", 10, Crypto::from_spec("aes-128-cbc:secret")?)
//!     .node(peer)
//!     .freq(Duration::from_secs(1))
//!     .tolerance(Duration::from_secs(3));
//! let mut actions = Actions::new();
//! actions.parse(Hook::Lord, "log:i am the lord")?;
//! let driver = LegionDriver::new(socket, config, actions)?;
//! let stop = driver.stop_handle();
//! driver.run(&stop, |event| println!("{} epoch {}", event.kind.phase(), event.epoch))?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The workspace's `legiond` program is that driver behind uWSGI's `--legion*` options.
//!
//! # Behaviour, and where it differs from uWSGI 2.0.21
//!
//! The election is uWSGI's exactly (spec §3.5): best candidate, membership checksum, the
//! all-or-nothing vote, quorum, scrolls, the `dead` announce, expiry, the skew window and
//! loop detection; events fire in uWSGI's order (node-left, node-joined, join,
//! lord/unlord). Timers are [`Duration`](std::time::Duration)s: uWSGI's defaults (3 s
//! announce period, 15 s tolerance, 60 s skew) by default, milliseconds allowed.
//!
//! Beyond uWSGI, without breaking the wire:
//! - **Extension key.** Announces carry one extra key, `legion_rs`, which uWSGI ignores.
//!   It marks the sender as running this crate and carries its **lord epoch**.
//! - **Triggered announces.** When the membership, the vote or the lordship changes, an
//!   announce goes at once to the members that have the extension key, so a hand-over
//!   among them takes round trips, not announce periods. Toward every other target
//!   (possibly a uWSGI node, or a multicast group) a node sends at most one announce per
//!   period (never more than one per second), right after the announces it receives from
//!   such nodes: a uWSGI node that receives datagrams about once a second or faster at
//!   another phase stops announcing and gets expired (spec §3.2, edge case 4.17).
//! - **Epoch.** A new lord takes one more than the highest epoch it has seen. Events carry
//!   the epoch, so an embedder can fence writes from a deposed lord.
//! - **First announce at once** instead of one period after start. The first vote still
//!   comes after a warm-up of two and a half periods ([`Config::warmup`]), so that a node
//!   hears the uWSGI nodes started with it before it votes.
//! - **Fixed 2.0.21 bugs**, each documented where it is handled: valor above 65535 (4.7),
//!   empty names (4.10), nil uuids (4.9) are refused; a lord without quorum steps down at
//!   once (4.15; [`Config::compat_step_down_rate_limit`] restores uWSGI's 60 s limit);
//!   after a `death_on_lord_error` suspension the node rejoins instead of announcing death
//!   forever (4.16); the header length is always read little-endian (4.19).
//!
//! # Errors
//!
//! [`ConfigError`] from [`Legion::new`] (fix the configuration); [`DatagramError`] from
//! [`Legion::handle_datagram`], non-fatal: the datagram is dropped, the state unchanged,
//! and [`Stats::rejected`] counts it by reason.
//!
//! # Crate features
//!
//! * No default features.
//! * `mio`: the `driver` module (mio event loop, sockets, hook actions).
//! * `__fuzzing`: private, may vanish; entry points for the fuzz targets.
//!
//! # Protocol reference
//!
//! The project's `spec/legion.md` (wire format, crypto, election, timings measured on
//! uWSGI 2.0.21, edge cases); section numbers in this crate's comments refer to it.

#[cfg(feature = "mio")]
mod action;
pub mod announce;
mod config;
mod crypto;
mod error;
mod event;
#[cfg(any(fuzzing, feature = "__fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod legion;
pub mod wire;

#[cfg(feature = "mio")]
#[cfg_attr(docsrs, doc(cfg(feature = "mio")))]
pub mod driver;

pub use announce::{Announce, Extension, NodeUuid, UUID_LEN};
pub use config::Config;
pub use error::{ConfigError, DatagramError};
pub use event::{Event, EventKind, LeftReason, LordInfo, NodeInfo, UnlordReason};
pub use legion::{Legion, Member, State, Stats, Transmit};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
