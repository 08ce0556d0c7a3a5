//! Emperor settings, with uWSGI 2.0.21's defaults (spec §2.15).

use std::time::Duration;

use thiserror::Error;

/// How a name's blacklist delay grows with each death before it was loyal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ThrottleGrowth {
    /// `step`, `2·step`, `3·step`, … up to the cap: the levels uWSGI 2.0.21 showed
    /// (1001, 2001, … 7001 ms in spec §2.8), in one unit and without its 1 ms first step.
    #[default]
    Linear,
    /// `step`, `2·step`, `4·step`, … up to the cap.
    Doubling,
}

/// Emperor settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EmperorConfig {
    /// Blacklist step (`--emperor-throttle`, default 1 s).
    pub throttle: Duration,
    /// Blacklist cap (`--emperor-max-throttle`, default 180 s).
    pub max_throttle: Duration,
    /// How the delay grows.
    pub throttle_growth: ThrottleGrowth,
    /// A vassal that sent a heartbeat and then none for this long is killed
    /// (`--emperor-required-heartbeat`, default 30 s).
    pub required_heartbeat: Duration,
    /// A stopping or cursed vassal still alive after this long is killed, and again every
    /// period (`--emperor-curse-tolerance`, default 30 s).
    pub curse_tolerance: Duration,
    /// On shutdown, vassals still alive after this long are killed (`--reload-mercy`,
    /// default 30 s).
    pub mercy: Duration,
    /// Send the graceful stop byte (2) instead of 0 (`--emperor-graceful-shutdown`).
    pub graceful_shutdown: bool,
    /// Blacklist names that die before they are loyal (default `true`;
    /// `--emperor-no-blacklist` turns it off).
    pub blacklist: bool,
    /// Run each vassal as the owner of its config, refusing root (`--emperor-tyrant`).
    pub tyrant: bool,
    /// Most broodlord zergs at once (`--emperor-broodlord`, default 0 = off).
    pub broodlord: usize,
    /// Extra config extensions; their vassals get `--config` (`--emperor-extra-extension`).
    pub extra_extensions: Vec<String>,
}

impl Default for EmperorConfig {
    fn default() -> Self {
        Self {
            throttle: Duration::from_secs(1),
            max_throttle: Duration::from_secs(180),
            throttle_growth: ThrottleGrowth::Linear,
            required_heartbeat: Duration::from_secs(30),
            curse_tolerance: Duration::from_secs(30),
            mercy: Duration::from_secs(30),
            graceful_shutdown: false,
            blacklist: true,
            tyrant: false,
            broodlord: 0,
            extra_extensions: Vec::new(),
        }
    }
}

/// Why a configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The cap is below the step.
    #[error("max throttle {max:?} is below the throttle step {step:?}")]
    CapBelowStep {
        /// The step.
        step: Duration,
        /// The cap.
        max: Duration,
    },
    /// An extra extension does not start with a dot.
    #[error("extra extension {0:?} must start with '.'")]
    Extension(String),
}

impl EmperorConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (value, name) in [
            (self.throttle, "throttle"),
            (self.required_heartbeat, "required heartbeat"),
            (self.curse_tolerance, "curse tolerance"),
            (self.mercy, "mercy"),
        ] {
            if value.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.max_throttle < self.throttle {
            return Err(ConfigError::CapBelowStep { step: self.throttle, max: self.max_throttle });
        }
        if let Some(e) = self.extra_extensions.iter().find(|e| !e.starts_with('.') || e.len() < 2) {
            return Err(ConfigError::Extension(e.clone()));
        }
        Ok(())
    }
}
