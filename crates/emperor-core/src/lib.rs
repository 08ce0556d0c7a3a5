//! The uWSGI Emperor for Rust: keep one "vassal" process per configuration, spawn on
//! appearance, reload on change, destroy on removal, respawn crashes with throttling,
//! compatible with uWSGI 2.0.21's emperor ↔ vassal protocol.
//!
//! Work in progress: this release has the sans-IO core ([`Emperor`]) and the channel
//! codec ([`proto`]).
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

pub mod config;
#[cfg(feature = "mio")]
#[cfg_attr(docsrs, doc(cfg(feature = "mio")))]
pub mod driver;
pub mod emperor;
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
