//! uWSGI's zerg mode for Rust servers: hand listening sockets to helper processes over a
//! unix socket, so capacity can grow and versions can change without a refused
//! connection. Both ends, wire-compatible with uWSGI 2.0.21's `--zerg-server`, `--zerg`
//! and the `zergpool` plugin, with the safety uWSGI lacks.
//!
//! A zerg **server** holds listening sockets and, to each peer that connects to its unix
//! socket, sends 14 bytes (`uwsgi-zerg` + a count) with the sockets attached as one
//! `SCM_RIGHTS` message, then closes. A zerg **client** receives duplicates of those
//! listeners and `accept()`s on them; the kernel spreads connections over every process
//! waiting on a socket. There is no further protocol (spec §0–§2).
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | [`proto`] | the 14-byte message: [`proto::Header`], constants |
//! | [`server`] | sans-IO server: [`ZergServer`], peer checks ([`PeerPolicy`]), actions, events |
//! | [`client`] | sans-IO client: [`client::Attach`] (receive with a deadline), fd checks, matching to configured addresses |
//! | [`addr`] | [`ZergAddr`] (`/path`, `@name`) and [`ListenAddr`] (`IP:PORT`, `[v6]:PORT`, paths), uWSGI syntax |
//! | [`systemd`] | `LISTEN_FDS` parsing |
//! | [`Listener`] | a listener with its address: from a hand-off, from systemd, or bound |
//! | `driver` (feature `mio`) | a [`ServerDriver`](driver::ServerDriver) for a host's event loop, and [`attach`](driver::attach) with a deadline |
//!
//! All syscalls live in one private module, `scm`: `sendmsg`/`recvmsg` with
//! `SCM_RIGHTS`, `SO_PEERCRED`, the listener checks. Received fds are [`OwnedFd`]s from
//! the moment they arrive, so every failure path closes them.
//!
//! # Sans-IO contract
//!
//! [`ZergServer`]: after every `handle_*` call, drain `poll_action` (perform each
//! [`server::Action`]: `Send` with or without the fds, `Close`), then `poll_event`, then
//! read `poll_timeout`. `now` never goes backwards. [`client::Attach`] is a typestate:
//! each input consumes it and returns the next state, the hand-off, or an error (with
//! every fd dropped).
//!
//! ```
//! use std::time::Instant;
//! use zerg_fdpass::server::{Action, PeerCred, PeerPolicy, ServerConfig, ZergServer};
//! use zerg_fdpass::client::{Attach, AttachOptions, Step};
//!
//! let now = Instant::now();
//! // A server offering 2 sockets to uid 1000 and root.
//! let mut server = ZergServer::new(ServerConfig::new(PeerPolicy::owner_and_root(1000)), 2)?;
//! let conn = server.handle_accept(now, Some(PeerCred { pid: 42, uid: 1000, gid: 1000 }));
//! let Some(Action::Send { data, attach_fds: true, .. }) = server.poll_action() else { panic!() };
//! assert_eq!(data.bytes(), b"uwsgi-zerg\x02\x00\x00\x00");
//!
//! // The client side, fed what recvmsg returned (fds are any type; drivers use OwnedFd).
//! let attach = Attach::new(now, &AttachOptions::default());
//! let Step::Done(handoff) = attach.handle_recv(now, data.bytes(), vec!["fd-a", "fd-b"], false)? else { panic!() };
//! assert_eq!(handoff.fds, ["fd-a", "fd-b"]);
//!
//! server.handle_sent(now, conn, 14);
//! assert_eq!(server.poll_action(), Some(Action::Close { conn }));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Driving with mio
//!
//! ```no_run
//! # #[cfg(feature = "mio")] {
//! use std::time::Instant;
//! use zerg_fdpass::driver::{self, ServerDriver, SocketFile};
//! use zerg_fdpass::{client::AttachOptions, Listener, ZergAddr};
//!
//! // Server: bind a listener, offer a duplicate of it on /run/app/zerg.sock.
//! let http = Listener::bind(&"127.0.0.1:8080".parse()?)?;
//! let zerg_addr: ZergAddr = "/run/app/zerg.sock".parse()?;
//! let mut server =
//!     ServerDriver::bind(&zerg_addr, ServerDriver::default_config(), SocketFile::default(), vec![http.fd.try_clone()?])?;
//! let mut poll = mio::Poll::new()?;
//! server.register(poll.registry(), mio::Token(100))?;
//! // ... in the loop: server.handle_ready(poll.registry(), &event, Instant::now())?;
//!
//! // Client (another process): attach within 5 s and accept on what arrived.
//! for listener in driver::attach(&zerg_addr, &AttachOptions::default())? {
//!     println!("got a listener on {}", listener.addr);
//! }
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Beyond uWSGI 2.0.21 (spec §7)
//!
//! * The server checks `SO_PEERCRED` against an allow-list (default: its own uid and
//!   root), sets the socket file's mode (default `0o600`) and owner explicitly, removes
//!   the file when dropped, warns on abstract names without an explicit allow-list,
//!   refuses more than 253 sockets when configured, and times out slow peers.
//! * The client makes room for 253 fds (one connection, nothing leaked), has a deadline,
//!   treats `MSG_CTRUNC` and count mismatches as errors, and checks each fd is a bound,
//!   listening stream socket (inet, inet6, unix) instead of crashing or spinning.
//! * Several servers give separate lists (no lost terminator); IPv6 works everywhere.
//! * A `:` in a zerg address is refused with a clear error (uWSGI silently makes it TCP).
//!
//! Received listeners share their open file description with the server: setting
//! `O_NONBLOCK` on one (as mio does) sets it for every holder, as with uWSGI (spec §3.1).
//!
//! # Protocol reference
//!
//! The project's `spec/zerg.md`, checked against uWSGI 2.0.21.

pub mod addr;
pub mod client;
#[cfg(feature = "mio")]
#[cfg_attr(docsrs, doc(cfg(feature = "mio")))]
pub mod driver;
#[cfg(any(fuzzing, feature = "__fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod inherited;
mod listener;
pub mod proto;
mod scm;
pub mod server;
pub mod systemd;

#[cfg(doc)]
use std::os::fd::OwnedFd;

pub use addr::{AddrError, ListenAddr, ZergAddr};
pub use listener::{ActivationError, Listener, StdListener};
pub use server::{PeerCred, PeerPolicy, ZergServer};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
