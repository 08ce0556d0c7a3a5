//! The simulator's error types.

use core::fmt;
use std::time::Duration;

use crate::log::Elapsed;

/// Why a bounded run ([`SimNet::run_until`](crate::SimNet::run_until) and friends) failed.
///
/// Every variant leaves the simulation as it was when the run stopped, so a test can
/// still inspect the nodes, the [`event_log`](crate::SimNet::event_log) and the
/// [`stats`](crate::SimNet::stats) before failing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimError {
    /// The run took `max_steps` steps without reaching its goal.
    ///
    /// Likely cause: the goal is never reached (a protocol bug), the bound is too tight
    /// for the scenario, or a node livelocks (for example a `poll_timeout` that stays in
    /// the past after `handle_timeout`, which keeps virtual time from advancing).
    StepLimit {
        /// The bound that was exceeded.
        max_steps: usize,
        /// Virtual time when the run stopped.
        elapsed: Duration,
    },
    /// Virtual time would have passed `limit` before the goal was reached
    /// ([`SimNet::run_until_within`](crate::SimNet::run_until_within)). The clock is left
    /// at `limit`.
    ///
    /// Likely cause: the protocol is too slow to converge (a liveness bug), or the limit
    /// does not allow for the fault plan's latency and loss.
    TimeLimit {
        /// The virtual time the goal had to be reached by.
        limit: Duration,
        /// Steps taken by this run.
        steps: usize,
    },
    /// Nothing was left to do (no datagram in flight, no timer armed) and the goal had not
    /// been reached, so it never will be.
    Idle {
        /// Steps taken by this run.
        steps: usize,
        /// Virtual time when the network went idle.
        elapsed: Duration,
    },
    /// An invariant registered with [`SimNet::add_invariant`](crate::SimNet::add_invariant)
    /// failed after a step. The step's effects are kept.
    ///
    /// Likely cause: a safety bug in the protocol under test (or in the invariant).
    Invariant {
        /// The name the invariant was registered under.
        name: String,
        /// The simulation's total step count ([`Stats::steps`](crate::Stats::steps)) when
        /// it failed.
        step: u64,
        /// Virtual time when it failed.
        elapsed: Duration,
        /// The invariant's own explanation.
        message: String,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StepLimit { max_steps, elapsed } => write!(
                f,
                "simulation did not reach its goal within {max_steps} steps (virtual time {}); \
                 raise the bound, or look for a livelock if virtual time stopped advancing",
                Elapsed(*elapsed)
            ),
            Self::TimeLimit { limit, steps } => write!(
                f,
                "simulation did not reach its goal by virtual time {} ({steps} steps)",
                Elapsed(*limit)
            ),
            Self::Idle { steps, elapsed } => write!(
                f,
                "simulation went idle at virtual time {} after {steps} steps without reaching its goal",
                Elapsed(*elapsed)
            ),
            Self::Invariant { name, step, elapsed, message } => write!(
                f,
                "invariant `{name}` failed after step {step} at virtual time {}: {message}",
                Elapsed(*elapsed)
            ),
        }
    }
}

impl std::error::Error for SimError {}

/// A [`FaultPlan`](crate::FaultPlan) that cannot be used.
///
/// Returned by [`FaultPlan::validate`](crate::FaultPlan::validate); the cause is always a
/// mistake in the test that built the plan.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum FaultPlanError {
    /// A probability is not a number in `0.0..=1.0`.
    ProbabilityOutOfRange {
        /// The field's name (`"loss"`, `"duplicate"`, `"reorder"` or `"corrupt"`).
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// `latency_min` is greater than `latency_max`.
    LatencyRangeInverted {
        /// `latency_min`.
        min: Duration,
        /// `latency_max`.
        max: Duration,
    },
}

impl fmt::Display for FaultPlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ProbabilityOutOfRange { field, value } => {
                write!(f, "fault plan `{field}` is {value}, not a probability in 0.0..=1.0")
            }
            Self::LatencyRangeInverted { min, max } => {
                write!(f, "fault plan latency_min {min:?} is greater than latency_max {max:?}")
            }
        }
    }
}

impl std::error::Error for FaultPlanError {}

/// A `SIM_SEED` or `SIM_SEEDS` value that cannot be parsed.
///
/// Returned by [`parse_seeds`](crate::parse_seeds); the cause is the environment the
/// tests were started with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SeedError {
    /// The variable is not a decimal (or `0x`-prefixed hexadecimal) `u64`.
    NotANumber {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
    },
}

impl fmt::Display for SeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotANumber { var, value } => {
                write!(f, "{var}={value:?} is not a decimal or 0x-prefixed hexadecimal u64")
            }
        }
    }
}

impl std::error::Error for SeedError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_bound_and_the_time() {
        let e = SimError::StepLimit { max_steps: 10, elapsed: Duration::from_millis(1500) };
        let text = e.to_string();
        assert!(text.contains("within 10 steps"), "{text}");
        assert!(text.contains("1.500000000s"), "{text}");

        let e = SimError::Invariant {
            name: "one lord".into(),
            step: 7,
            elapsed: Duration::ZERO,
            message: "two lords".into(),
        };
        assert_eq!(
            e.to_string(),
            "invariant `one lord` failed after step 7 at virtual time 0.000000000s: two lords"
        );
    }

    #[test]
    fn fault_plan_error_names_the_field() {
        let e = FaultPlanError::ProbabilityOutOfRange { field: "loss", value: 2.0 };
        assert_eq!(e.to_string(), "fault plan `loss` is 2, not a probability in 0.0..=1.0");
    }
}
