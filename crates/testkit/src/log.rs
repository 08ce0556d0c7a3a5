//! What the simulator records: node events, an optional network trace, and counters.

use core::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Formats a virtual time (time since the simulation's epoch) as seconds with nanosecond
/// precision, for example `1.500000000s`.
///
/// Integer formatting only, so the text is identical on every platform; logs and the
/// determinism check rely on that.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use testkit::Elapsed;
///
/// assert_eq!(Elapsed(Duration::from_micros(1_000_250)).to_string(), "1.000250000s");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Elapsed(pub Duration);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}s", self.0.as_secs(), self.0.subsec_nanos())
    }
}

/// One event a node reported through [`poll_event`](crate::SimNode::poll_event).
///
/// [`SimNet::event_log`](crate::SimNet::event_log) holds them in the one order the
/// simulator collected them (a total order: by virtual time, then by the order the nodes
/// were driven), which is what the determinism check compares.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogEntry<E> {
    /// Virtual time (since the epoch) at which the event was collected.
    pub at: Duration,
    /// The node that reported it.
    pub node: SocketAddr,
    /// The event.
    pub event: E,
}

impl<E: fmt::Debug> fmt::Display for LogEntry<E> {
    /// `<time> <node> <event as Debug>`, one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {:?}", Elapsed(self.at), self.node, self.event)
    }
}

/// Why the simulated network did not deliver a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Lost by the fault plan's [`loss`](crate::FaultPlan::loss) probability.
    Loss,
    /// The link was cut or one end isolated, when it was sent or when it would have
    /// arrived.
    Partition,
    /// The test's filter ([`SimNet::set_filter`](crate::SimNet::set_filter)) refused it.
    Filter,
    /// No node was at the destination address when it arrived.
    Unroutable,
    /// The in-flight queue was full ([`SimNet::set_max_in_flight`](crate::SimNet::set_max_in_flight)).
    QueueFull,
}

/// One entry of the optional network trace (see
/// [`SimNet::record_trace`](crate::SimNet::record_trace)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TraceEntry {
    /// Virtual time (since the epoch) of the entry.
    pub at: Duration,
    /// What happened.
    pub kind: TraceKind,
}

/// What a [`TraceEntry`] records.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceKind {
    /// A datagram (or a copy of one) was put in flight.
    Send {
        /// Sender.
        from: SocketAddr,
        /// Destination.
        to: SocketAddr,
        /// Payload length in bytes.
        len: usize,
        /// When it is due to arrive.
        deliver_at: Duration,
        /// This is the extra copy made by the fault plan's duplication.
        duplicate: bool,
        /// It was held back by the fault plan's reordering.
        reordered: bool,
        /// One of its bits was flipped by the fault plan's corruption.
        corrupted: bool,
    },
    /// A datagram was handed to its destination node.
    Deliver {
        /// Sender.
        from: SocketAddr,
        /// Destination.
        to: SocketAddr,
        /// Payload length in bytes.
        len: usize,
    },
    /// A datagram was dropped.
    Drop {
        /// Sender.
        from: SocketAddr,
        /// Destination.
        to: SocketAddr,
        /// Payload length in bytes.
        len: usize,
        /// Why.
        reason: DropReason,
    },
    /// A node's `handle_timeout` was called.
    Timeout {
        /// The node.
        node: SocketAddr,
    },
}

impl fmt::Display for TraceEntry {
    /// One line, for example `0.001000000s 10.0.0.1:1 -> 10.0.0.2:1 deliver 5 bytes`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", Elapsed(self.at))?;
        match &self.kind {
            TraceKind::Send { from, to, len, deliver_at, duplicate, reordered, corrupted } => {
                write!(f, "{from} -> {to} send {len} bytes, due {}", Elapsed(*deliver_at))?;
                for (flag, name) in
                    [(duplicate, "duplicate"), (reordered, "reordered"), (corrupted, "corrupted")]
                {
                    if *flag {
                        write!(f, " {name}")?;
                    }
                }
                Ok(())
            }
            TraceKind::Deliver { from, to, len } => write!(f, "{from} -> {to} deliver {len} bytes"),
            TraceKind::Drop { from, to, len, reason } => {
                write!(f, "{from} -> {to} drop {len} bytes ({reason:?})")
            }
            TraceKind::Timeout { node } => write!(f, "{node} timeout"),
        }
    }
}

/// Counters kept by a [`SimNet`](crate::SimNet); see [`SimNet::stats`](crate::SimNet::stats).
///
/// Every datagram is accounted for exactly once:
/// `sent + duplicated == delivered + dropped_loss + dropped_partition + dropped_filter +
/// dropped_queue_full + unroutable + in_flight` (see [`Stats::accounted`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Stats {
    /// Steps taken ([`SimNet::step`](crate::SimNet::step) calls that did something).
    pub steps: u64,
    /// `handle_timeout` calls.
    pub timeouts: u64,
    /// Datagrams handed to the network by nodes (and by
    /// [`SimNet::inject`](crate::SimNet::inject)).
    pub sent: u64,
    /// Datagrams handed to their destination's `handle_datagram`.
    pub delivered: u64,
    /// Datagrams dropped by the fault plan's loss.
    pub dropped_loss: u64,
    /// Datagrams dropped because of a partition, at send or at arrival time.
    pub dropped_partition: u64,
    /// Datagrams refused by the test's filter.
    pub dropped_filter: u64,
    /// Datagrams dropped because the in-flight queue was full.
    pub dropped_queue_full: u64,
    /// Extra copies made by the fault plan's duplication.
    pub duplicated: u64,
    /// Copies held back by the fault plan's reordering.
    pub reordered: u64,
    /// Copies corrupted by the fault plan.
    pub corrupted: u64,
    /// Datagrams that arrived at an address with no node (never added, or removed).
    pub unroutable: u64,
}

impl Stats {
    /// Checks the conservation law above, given the number of datagrams still in flight.
    ///
    /// Returns `Err` with both sides when a datagram has been lost track of, which would
    /// be a bug in the simulator.
    ///
    /// # Errors
    ///
    /// A message with both sides of the equation.
    pub fn accounted(&self, in_flight: usize) -> Result<(), String> {
        let inputs = self.sent + self.duplicated;
        let outputs = self.delivered
            + self.dropped_loss
            + self.dropped_partition
            + self.dropped_filter
            + self.dropped_queue_full
            + self.unroutable
            + in_flight as u64;
        if inputs == outputs {
            Ok(())
        } else {
            Err(format!(
                "sent + duplicated = {inputs} but delivered + dropped + unroutable + in flight = {outputs}"
            ))
        }
    }

    /// All datagrams dropped, for any reason (not counting unroutable ones).
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_partition + self.dropped_filter + self.dropped_queue_full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn elapsed_prints_nanoseconds() {
        assert_eq!(Elapsed(Duration::ZERO).to_string(), "0.000000000s");
        assert_eq!(Elapsed(Duration::new(12, 3)).to_string(), "12.000000003s");
    }

    #[test]
    fn log_entry_is_one_line() {
        let entry = LogEntry { at: Duration::from_millis(2), node: addr(7), event: "Heard" };
        assert_eq!(entry.to_string(), "0.002000000s 10.0.0.1:7 \"Heard\"");
    }

    #[test]
    fn trace_entries_print_their_flags() {
        let entry = TraceEntry {
            at: Duration::from_millis(1),
            kind: TraceKind::Send {
                from: addr(1),
                to: addr(2),
                len: 4,
                deliver_at: Duration::from_millis(3),
                duplicate: true,
                reordered: false,
                corrupted: true,
            },
        };
        assert_eq!(
            entry.to_string(),
            "0.001000000s 10.0.0.1:1 -> 10.0.0.1:2 send 4 bytes, due 0.003000000s duplicate corrupted"
        );
        let entry = TraceEntry {
            at: Duration::ZERO,
            kind: TraceKind::Drop { from: addr(1), to: addr(2), len: 0, reason: DropReason::Unroutable },
        };
        assert_eq!(entry.to_string(), "0.000000000s 10.0.0.1:1 -> 10.0.0.1:2 drop 0 bytes (Unroutable)");
    }

    #[test]
    fn accounting_detects_a_missing_datagram() {
        let stats = Stats { sent: 3, duplicated: 1, delivered: 2, dropped_loss: 1, ..Stats::default() };
        assert_eq!(stats.accounted(1), Ok(()));
        assert!(stats.accounted(0).is_err());
        assert_eq!(stats.dropped(), 1);
    }
}
