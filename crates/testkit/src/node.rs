//! The trait a sans-IO core implements (through a small test adapter) to run in a [`SimNet`].
//!
//! [`SimNet`]: crate::SimNet

use core::fmt::Debug;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

/// A sans-IO state machine that a [`SimNet`](crate::SimNet) can drive.
///
/// This is the workspace's common sans-IO contract (STYLE.md §3.3) reduced to what a
/// network simulator needs. Protocol crates do not implement it on their public types:
/// their tests wrap the core in a small newtype that forwards each method (and, for
/// example, logs a rejected datagram as an event instead of returning the error).
///
/// # How the simulator drives a node
///
/// 1. A node is constructed by the test, usually with
///    [`SimNet::now_for`](crate::SimNet::now_for) as its start time, and handed to
///    [`SimNet::add_node`](crate::SimNet::add_node).
/// 2. After **every** `handle_*` call, the simulator drains [`poll_transmit`] until `None`,
///    then [`poll_event`] until `None`, and only then reads [`poll_timeout`].
/// 3. `now` never goes backwards for a node, even when its clock offset is changed
///    (see [`SimNet::set_clock_offset`](crate::SimNet::set_clock_offset)).
/// 4. [`handle_timeout`] is called at (never before) the node's own reading of the instant
///    returned by [`poll_timeout`]. A node that keeps returning a deadline that has passed
///    is called again at the same virtual time; a bounded run then fails with
///    [`SimError::StepLimit`](crate::SimError::StepLimit) rather than hanging.
///
/// [`poll_transmit`]: SimNode::poll_transmit
/// [`poll_event`]: SimNode::poll_event
/// [`poll_timeout`]: SimNode::poll_timeout
/// [`handle_timeout`]: SimNode::handle_timeout
pub trait SimNode {
    /// What the node reports to its application (`poll_event`'s item).
    ///
    /// The simulator records every event, with its virtual time and node address, in
    /// [`SimNet::event_log`](crate::SimNet::event_log). Its `Debug` text is what the
    /// determinism check compares, so it should contain everything that matters and
    /// nothing that varies between identical runs: no pointers, and no `Instant`s (the
    /// epoch they count from differs between runs; report `now - start` instead).
    type Event: Debug;

    /// Feeds one datagram, received from `from`, to the node.
    ///
    /// The bytes may be duplicated, reordered or (if the fault plan says so) corrupted by
    /// the network, and the node must cope: a rejected datagram must not panic.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]);

    /// Tells the node that `now` has reached its [`poll_timeout`](SimNode::poll_timeout)
    /// deadline, so it can fire its expired timers.
    fn handle_timeout(&mut self, now: Instant);

    /// Returns the next datagram to send as `(destination, payload)`, or `None` when the
    /// node has nothing more to send.
    ///
    /// Its answer changes after `handle_*` calls and after the node's own commands.
    fn poll_transmit(&mut self) -> Option<(SocketAddr, Bytes)>;

    /// Returns the next application event, or `None` when there is none.
    ///
    /// Its answer changes after `handle_*` calls and after the node's own commands.
    fn poll_event(&mut self) -> Option<Self::Event>;

    /// Returns the instant, on the node's clock, at which
    /// [`handle_timeout`](SimNode::handle_timeout) must be called next, or `None` when no
    /// timer is armed.
    ///
    /// Its answer changes after `handle_*` calls and after the node's own commands.
    fn poll_timeout(&self) -> Option<Instant>;
}
