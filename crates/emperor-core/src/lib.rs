//! The uWSGI Emperor for Rust: keep one "vassal" process per configuration, spawn on
//! appearance, reload on change, destroy on removal, respawn crashes with throttling,
//! compatible with uWSGI 2.0.21's emperor ↔ vassal protocol both ways.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | [`emperor`] | the sans-IO supervisor, [`Emperor`] |
//! | [`vassal`] | the sans-IO vassal side, [`vassal::VassalChannel`] |
//! | `link` (feature `mio`) | `EmperorLink`: the vassal side over the fds a uWSGI Emperor passes down (`UWSGI_EMPEROR_FD`) |
//! | [`proto`] | channel bytes, the config pipe's header and reader, config flags by extension |
//! | [`stats`] | the stats JSON in uWSGI's layout |
//! | [`config`] | [`EmperorConfig`], uWSGI's defaults |
//! | `monitor` (feature `mio`) | `dir://` and `glob://` with inotify |
//! | `driver` (feature `mio`) | `EmperorDriver`: real processes around an [`Emperor`] |
//!
//! # Sans-IO contract
//!
//! Inputs: `handle_scan` / `handle_report` / `handle_removed` (monitors),
//! `handle_spawned` / `handle_spawn_failed` / `handle_exit` (the driver's process
//! results), `handle_byte` / `handle_eof` (channels), `handle_connection` /
//! `handle_bind_failed` (on-demand sockets), `reload_all` / `clear_blacklist` /
//! `shutdown` (commands) and `handle_timeout`. After each, drain `poll_action` (perform
//! every [`Action`]), then `poll_event`, then read `poll_timeout`. `now` never goes
//! backwards; the same inputs give the same outputs (the simulation test checks the
//! supervision invariants against a fake process table).
//!
//! ```
//! use std::time::Instant;
//! use emperor_core::{Action, Emperor, EmperorConfig, MonitorId, Report};
//!
//! let now = Instant::now();
//! let mut emperor = Emperor::new(EmperorConfig::default())?;
//! emperor.handle_scan(now, MonitorId(0), vec![Report::new("app.ini", 1_700_000_000)]);
//! let Some(Action::Spawn(spawn)) = emperor.poll_action() else { panic!() };
//! assert_eq!(spawn.args, ["--ini", "app.ini"]);
//! emperor.handle_spawned(now, spawn.id, 4242);
//! // A newer mtime reloads it in place (byte 1 on its channel).
//! emperor.handle_scan(now, MonitorId(0), vec![Report::new("app.ini", 1_700_000_001)]);
//! assert!(matches!(emperor.poll_action(), Some(Action::Write { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Differences from uWSGI 2.0.21
//!
//! Listed in the [`emperor`] module docs: deterministic crash respawn from the retained
//! record, exile on exit code 26, no config push after byte 1, configs over 65535 bytes
//! refused, a one-unit blacklist, empty on-demand socket = none, re-add after an owner or
//! mode change, escaped stats strings, the `UWSGI_VASSAL_*` rewrite done as intended.
//!
//! # Protocol reference
//!
//! The project's `spec/emperor.md`, checked against uWSGI 2.0.21.

pub mod config;
#[cfg(feature = "mio")]
#[cfg_attr(docsrs, doc(cfg(feature = "mio")))]
pub mod driver;
pub mod emperor;
#[cfg(any(fuzzing, feature = "__fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "mio")]
#[cfg_attr(docsrs, doc(cfg(feature = "mio")))]
pub mod link;
#[cfg(feature = "mio")]
#[cfg_attr(docsrs, doc(cfg(feature = "mio")))]
pub mod monitor;
pub mod proto;
pub mod stats;
pub mod vassal;

pub use config::{ConfigError, EmperorConfig, ThrottleGrowth};
pub use emperor::{
    Action, Emperor, Event, EventKind, ExitStatus, MonitorId, Report, Spawn, Vassal, VassalId,
};

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
