//! Network faults and clock skew, as plain data.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fastrand::Rng;

use crate::error::FaultPlanError;

/// How the simulated network treats every datagram: latency, jitter, loss, duplication,
/// reordering and corruption.
///
/// A `FaultPlan` is data (TigerBeetle's packet-simulator options, str0m's netem config):
/// build one with struct-update syntax or [`FaultPlan::swarm`], and hand it to
/// [`SimNet::set_fault_plan`](crate::SimNet::set_fault_plan). Partitions are not part of
/// the plan; they are verbs on the [`SimNet`](crate::SimNet) (`cut`, `isolate`, `heal`).
///
/// Each datagram a node sends goes through these steps, in this order, each drawing from
/// the simulator's single seeded random number generator only when its probability is
/// above zero:
///
/// 1. dropped if the link is partitioned or the test's filter refuses it;
/// 2. dropped with probability [`loss`](Self::loss);
/// 3. duplicated with probability [`duplicate`](Self::duplicate) (the copy is then handled
///    exactly like the original, with its own latency);
/// 4. each copy gets a latency drawn uniformly from
///    [`latency_min`](Self::latency_min)`..=`[`latency_max`](Self::latency_max);
/// 5. with probability [`reorder`](Self::reorder), a copy is held back by an extra delay
///    drawn uniformly from `0..=`[`reorder_delay`](Self::reorder_delay), so later datagrams
///    overtake it;
/// 6. with probability [`corrupt`](Self::corrupt), one random bit of the copy is flipped.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use testkit::FaultPlan;
///
/// let lossy = FaultPlan { loss: 0.1, latency_max: Duration::from_millis(20), ..FaultPlan::default() };
/// assert!(lossy.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// The smallest one-way latency. Default: 1 ms.
    pub latency_min: Duration,
    /// The largest one-way latency; latencies are uniform in `latency_min..=latency_max`
    /// (so any spread between the two is jitter). Default: 1 ms.
    pub latency_max: Duration,
    /// Probability, in `0.0..=1.0`, that a datagram is lost. Default: 0.
    pub loss: f64,
    /// Probability, in `0.0..=1.0`, that a datagram is delivered twice. Default: 0.
    pub duplicate: f64,
    /// Probability, in `0.0..=1.0`, that a datagram is held back by an extra delay of up to
    /// [`reorder_delay`](Self::reorder_delay). Default: 0.
    pub reorder: f64,
    /// The largest extra delay of a reordered datagram. Default: 20 ms.
    pub reorder_delay: Duration,
    /// Probability, in `0.0..=1.0`, that one random bit of a datagram is flipped. Default: 0.
    ///
    /// [`FaultPlan::swarm`] never turns this on: what a corrupted datagram does depends on
    /// whether the protocol authenticates its datagrams, so tests opt in explicitly.
    pub corrupt: f64,
}

impl Default for FaultPlan {
    /// A perfect network: every datagram arrives once, intact, in order, after exactly 1 ms.
    fn default() -> Self {
        Self::perfect(Duration::from_millis(1))
    }
}

impl FaultPlan {
    /// A perfect network with a fixed one-way `latency`: no loss, no duplication, no
    /// reordering, no corruption.
    #[must_use]
    pub fn perfect(latency: Duration) -> Self {
        Self {
            latency_min: latency,
            latency_max: latency,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(20),
            corrupt: 0.0,
        }
    }

    /// Derives random fault parameters from `seed` ("swarm testing", as TigerBeetle's
    /// simulator does): each seed explores a different kind of bad network.
    ///
    /// Each of loss, duplication and reordering is switched on for about half of the seeds;
    /// when on, loss is at most 20 %, duplication at most 10 % and reordering at most 20 %
    /// (held back by up to 50 ms). Latency is 0–5 ms plus 0–20 ms of jitter. Corruption is
    /// always off. The same seed always gives the same plan, and the plan is always valid.
    ///
    /// # Examples
    ///
    /// ```
    /// use testkit::FaultPlan;
    ///
    /// assert_eq!(FaultPlan::swarm(42), FaultPlan::swarm(42));
    /// assert!(FaultPlan::swarm(42).validate().is_ok());
    /// ```
    #[must_use]
    pub fn swarm(seed: u64) -> Self {
        // A stream distinct from the one `SimNet::new(seed)` uses for the datagrams, so the
        // plan and the per-datagram draws are not correlated.
        let mut rng = Rng::with_seed(seed ^ 0x5357_4152_4d5f_504c); // "SWARM_PL"
        let latency_min = Duration::from_micros(rng.u64(0..=5_000));
        let latency_max = latency_min + Duration::from_micros(rng.u64(0..=20_000));
        // Every parameter is drawn whether or not it is used, so that changing one range
        // above does not reshuffle all the others.
        let loss_on = rng.bool();
        let loss = rng.f64() * 0.2;
        let duplicate_on = rng.bool();
        let duplicate = rng.f64() * 0.1;
        let reorder_on = rng.bool();
        let reorder = rng.f64() * 0.2;
        let reorder_delay = Duration::from_micros(rng.u64(1_000..=50_000));
        Self {
            latency_min,
            latency_max,
            loss: if loss_on { loss } else { 0.0 },
            duplicate: if duplicate_on { duplicate } else { 0.0 },
            reorder: if reorder_on { reorder } else { 0.0 },
            reorder_delay,
            corrupt: 0.0,
        }
    }

    /// Checks that every probability is a number in `0.0..=1.0` and that
    /// `latency_min <= latency_max`.
    ///
    /// # Errors
    ///
    /// [`FaultPlanError::ProbabilityOutOfRange`] names the first bad probability;
    /// [`FaultPlanError::LatencyRangeInverted`] reports inverted latency bounds.
    pub fn validate(&self) -> Result<(), FaultPlanError> {
        for (field, value) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("corrupt", self.corrupt),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(FaultPlanError::ProbabilityOutOfRange { field, value });
            }
        }
        if self.latency_min > self.latency_max {
            return Err(FaultPlanError::LatencyRangeInverted {
                min: self.latency_min,
                max: self.latency_max,
            });
        }
        Ok(())
    }

    /// Whether this plan is a perfect network: no loss, duplication, reordering or
    /// corruption, and no jitter.
    #[must_use]
    pub fn is_perfect(&self) -> bool {
        self.loss == 0.0
            && self.duplicate == 0.0
            && self.reorder == 0.0
            && self.corrupt == 0.0
            && self.latency_min == self.latency_max
    }
}

/// A datagram on its way through the simulated network, as a test's filter sees it.
///
/// See [`SimNet::set_filter`](crate::SimNet::set_filter).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Datagram {
    /// The sender's address.
    pub from: SocketAddr,
    /// The destination address.
    pub to: SocketAddr,
    /// The payload, exactly as the sender produced it.
    pub payload: Bytes,
    /// When it was sent, as time since the simulation's epoch.
    pub sent_at: Duration,
}

/// A fixed offset between a node's clock and the simulation's clock.
///
/// The simulator adds (or subtracts) it to every `now` it passes to that node, and
/// converts the node's [`poll_timeout`](crate::SimNode::poll_timeout) back, so a node
/// whose clock is one second ahead still sees its 100 ms timers fire every 100 ms.
/// See [`SimNet::set_clock_offset`](crate::SimNet::set_clock_offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClockOffset {
    /// The node's clock reads this much later than the simulation's.
    Ahead(Duration),
    /// The node's clock reads this much earlier than the simulation's. At most
    /// [`ClockOffset::MAX_BEHIND`].
    Behind(Duration),
}

impl Default for ClockOffset {
    /// No offset.
    fn default() -> Self {
        Self::ZERO
    }
}

impl ClockOffset {
    /// No offset: the node reads the simulation's clock.
    pub const ZERO: Self = Self::Ahead(Duration::ZERO);

    /// The largest supported [`ClockOffset::Behind`]: one hour.
    ///
    /// The simulation's epoch is placed this far after the real instant it was created at,
    /// so that a node's clock set behind never needs an `Instant` the platform may not be
    /// able to represent.
    pub const MAX_BEHIND: Duration = Duration::from_secs(3600);

    /// An offset in signed milliseconds: positive is ahead, negative is behind.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use testkit::ClockOffset;
    ///
    /// assert_eq!(ClockOffset::from_millis(-250), ClockOffset::Behind(Duration::from_millis(250)));
    /// assert_eq!(ClockOffset::from_millis(0), ClockOffset::ZERO);
    /// ```
    #[must_use]
    pub fn from_millis(ms: i64) -> Self {
        let magnitude = Duration::from_millis(ms.unsigned_abs());
        if ms < 0 { Self::Behind(magnitude) } else { Self::Ahead(magnitude) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_a_perfect_one_millisecond_network() {
        let plan = FaultPlan::default();
        assert!(plan.is_perfect());
        assert_eq!(plan.latency_min, Duration::from_millis(1));
        assert_eq!(plan.validate(), Ok(()));
    }

    #[test]
    fn out_of_range_probabilities_are_rejected() {
        let plan = FaultPlan { duplicate: 1.5, ..FaultPlan::default() };
        assert_eq!(
            plan.validate(),
            Err(FaultPlanError::ProbabilityOutOfRange { field: "duplicate", value: 1.5 })
        );
        let plan = FaultPlan { loss: f64::NAN, ..FaultPlan::default() };
        assert!(matches!(plan.validate(), Err(FaultPlanError::ProbabilityOutOfRange { field: "loss", .. })));
        let plan = FaultPlan { corrupt: -0.1, ..FaultPlan::default() };
        assert!(plan.validate().is_err());
    }

    #[test]
    fn inverted_latency_is_rejected() {
        let plan = FaultPlan { latency_min: Duration::from_millis(5), ..FaultPlan::default() };
        assert_eq!(
            plan.validate(),
            Err(FaultPlanError::LatencyRangeInverted {
                min: Duration::from_millis(5),
                max: Duration::from_millis(1)
            })
        );
    }

    #[test]
    fn swarm_is_valid_and_reproducible_and_varies_with_the_seed() {
        let plans: Vec<FaultPlan> = (0..64).map(FaultPlan::swarm).collect();
        for (seed, plan) in plans.iter().enumerate() {
            assert_eq!(plan.validate(), Ok(()), "seed {seed}: {plan:?}");
            assert_eq!(plan.corrupt, 0.0);
            assert_eq!(*plan, FaultPlan::swarm(seed as u64));
        }
        // Each fault is on for some seeds and off for others.
        assert!(plans.iter().any(|p| p.loss > 0.0) && plans.iter().any(|p| p.loss == 0.0));
        assert!(plans.iter().any(|p| p.duplicate > 0.0) && plans.iter().any(|p| p.duplicate == 0.0));
        assert!(plans.iter().any(|p| p.reorder > 0.0) && plans.iter().any(|p| p.reorder == 0.0));
        assert!(plans.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn clock_offset_from_signed_millis() {
        assert_eq!(ClockOffset::from_millis(1500), ClockOffset::Ahead(Duration::from_millis(1500)));
        assert_eq!(ClockOffset::from_millis(-1), ClockOffset::Behind(Duration::from_millis(1)));
        assert_eq!(ClockOffset::default(), ClockOffset::ZERO);
    }
}
