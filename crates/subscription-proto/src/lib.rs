//! Sans-IO uWSGI subscription system: the subscriber that announces "key → my address",
//! and the server (router) table that keeps those nodes and balances requests over them.
//!
//! Backends send small UDP (or unix datagram) packets to a router's subscription server:
//! "requests for `example.com` may go to `127.0.0.1:3031`". The router keeps a table of
//! pools (one per key) of nodes, expires nodes that stop refreshing, and picks a node for
//! each request with a balancing algorithm. This crate is both sides, wire-compatible with
//! uWSGI 2.0.21: our subscribers work with a real uWSGI fastrouter, real uWSGI backends
//! subscribe to our server. No sockets, no clock: see the workspace's `fastrouter` and
//! `subscriber` programs for drivers.
//!
//! # Sans-IO contract
//!
//! | | [`SubscriptionServer`] | [`Subscriber`] |
//! |---|---|---|
//! | construct | [`SubscriptionServer::new`] | [`Subscriber::new`] (queues the first round) |
//! | inputs | [`SubscriptionServer::handle_datagram`] (and `_with_credentials`) | [`Subscriber::handle_timeout`], [`Subscriber::handle_notify`] |
//! | commands | [`SubscriptionServer::pick`], [`SubscriptionServer::pick_with_path`] | [`Subscriber::pause`], [`Subscriber::resume`], [`Subscriber::reload`], [`Subscriber::shutdown`] |
//! | outputs | `poll_transmit` (notify acks), `poll_event` | `poll_transmit`, `poll_event`, `poll_timeout` |
//!
//! After every input or command, drain `poll_transmit` then `poll_event`, then read
//! `poll_timeout`. `now` never goes backwards. Same inputs, same outputs: the wall clock is
//! an input at construction, and files (public keys, credential files, check files) are
//! read through the [`Files`] trait you pass in ([`RealFiles`] or [`MemoryFiles`]).
//!
//! # Quick start
//!
//! ```
//! use std::time::{Duration, Instant};
//! use subscription_proto::{
//!     Endpoint, MemoryFiles, ServerConfig, Subscriber, SubscriberConfig, Subscription, SubscriptionServer,
//! };
//!
//! let now = Instant::now();
//! let wall = Duration::from_secs(1_800_000_000);
//! let server_addr: Endpoint = "127.0.0.1:2626".parse()?;
//! let mut server = SubscriptionServer::new(ServerConfig::new(), MemoryFiles::new(), now, wall);
//! let backends = ["127.0.0.1:3031", "127.0.0.1:3032"].map(|a| Subscription::new(server_addr.clone(), "example.com", a));
//! let mut subscriber = Subscriber::new(SubscriberConfig::new(), backends.to_vec(), MemoryFiles::new(), now, wall)?;
//!
//! // Deliver what the subscriber sends.
//! while let Some(t) = subscriber.poll_transmit() {
//!     server.handle_datagram(now, &t.payload)?;
//! }
//! // uWSGI's wrr with equal weights: the last node first, then the others.
//! let picks: Vec<Vec<u8>> =
//!     (0..4).filter_map(|_| server.pick(now, b"example.com", None)).map(|l| l.address().to_vec()).collect();
//! assert_eq!(picks, [b"127.0.0.1:3032".to_vec(), b"127.0.0.1:3031".to_vec(), b"127.0.0.1:3032".to_vec(), b"127.0.0.1:3031".to_vec()]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Beyond uWSGI 2.0.21
//!
//! * Two more balancing algorithms: nginx's smooth weighted round robin and ketama
//!   consistent hashing of the client IP; uWSGI 2.1's `iphash`, backup levels, per-pool
//!   `algo`, mountpoints and vassal keys are understood.
//! * [`Security::Strict`] (the default) closes the replay holes of 2.0.21's signed
//!   subscriptions (spec §3.4); [`Security::Compat`] reproduces them.
//! * Keys longer than 255 bytes are refused (2.0.21 corrupts memory on them).
//! * A [`Lease`] releases its reference when dropped.
//! * `check=FILE` follows uWSGI's documentation (send while FILE exists), not 2.0.21's
//!   inverted behaviour.
//!
//! # Driving with mio
//!
//! With the `mio` feature, `driver::ServerDriver` runs a [`SubscriptionServer`] on real
//! subscription sockets (UDP, unix datagram, `SCM_CREDENTIALS`) and sends its notify
//! acknowledgements; `driver::SubscriberDriver` sends a [`Subscriber`]'s datagrams and
//! reads its notify socket. Register them in your own `mio::Poll`, or let them run a loop:
//!
//! ```no_run
//! # #[cfg(feature = "mio")] {
//! use subscription_proto::driver::{ServerDriver, SubscriberDriver};
//! use subscription_proto::{ServerConfig, SubscriberConfig, Subscription};
//!
//! // A router's table on 127.0.0.1:2626 (run it in its own thread or loop).
//! let server = ServerDriver::bind(ServerConfig::new(), &["127.0.0.1:2626".parse()?])?;
//! # drop(server);
//! // A backend announcing itself there, acknowledgements on ./notify.sock.
//! let sub = Subscription::new("127.0.0.1:2626".parse()?, "example.com", "127.0.0.1:3031");
//! let driver = SubscriberDriver::start(SubscriberConfig::new(), vec![sub], Some("notify.sock".into()))?;
//! let stop = driver.stop_handle(); // stop.stop() unsubscribes and ends the loop
//! driver.run(&stop, |event| println!("{event:?}"))?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The workspace's `fastrouter` and `subscriber` programs are these drivers behind
//! uWSGI's options.
//!
//! # Protocol reference
//!
//! The project's `spec/subscription.md`, checked against uWSGI 2.0.21.

#[cfg(feature = "mio")]
#[cfg_attr(docsrs, doc(cfg(feature = "mio")))]
pub mod driver;
mod endpoint;
mod files;
#[cfg(any(fuzzing, feature = "__fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod request;
pub mod server;
pub mod sign;
pub mod subscriber;
pub mod wire;

pub use endpoint::{Endpoint, EndpointError};
pub use files::{Files, MemoryFiles, RealFiles};
pub use request::{Command, Request};
pub use server::{Algorithm, Credentials, Lease, Security, ServerConfig, SignCheck, SubscriptionServer};
pub use subscriber::{Subscriber, SubscriberConfig, Subscription};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
