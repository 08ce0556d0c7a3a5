//! Events: what the application hears about, in uWSGI's order.

use crate::NodeUuid;

/// A member's identity: `(valor, name, uuid)` (spec §3.3; pid and address are not part of it).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeInfo {
    /// The member's valor (0 = arbiter).
    pub valor: u16,
    /// The member's `name` (its host name).
    pub name: Vec<u8>,
    /// The member's uuid.
    pub uuid: NodeUuid,
}

impl core::fmt::Debug for NodeInfo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}/{}", self.name.escape_ascii(), self.valor, self.uuid)
    }
}

/// The lord as this node knows it: the candidate every member agreed on last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LordInfo {
    /// The lord's valor.
    pub valor: u16,
    /// The lord's uuid.
    pub uuid: NodeUuid,
}

/// Why a member left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeftReason {
    /// Silent for longer than the tolerance. uWSGI runs its `node-left` hooks only here.
    Expired,
    /// It announced its death (clean shutdown, reload, or suspension).
    Announced,
}

/// Why this node stopped being lord.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnlordReason {
    /// Every member agreed on a better candidate.
    NewLord,
    /// Fewer agreeing votes than the quorum.
    QuorumLost,
    /// A `lord` action failed and `death_on_lord_error` is set.
    LordActionFailed,
}

/// What happened. The seven kinds are uWSGI's hook phases.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// The legion started ([`Legion::new`](crate::Legion::new)); uWSGI's `setup` hooks.
    Setup,
    /// The first election round that reached agreement and quorum, lord or not; once per
    /// `Legion`. uWSGI's `join` hooks.
    Join,
    /// This node became lord. uWSGI's `lord` hooks. The event's `epoch` is the new
    /// fencing token.
    Lord,
    /// This node stopped being lord. uWSGI's `unlord` hooks (uWSGI fires them only for
    /// [`UnlordReason::NewLord`] and [`UnlordReason::QuorumLost`]).
    Unlord {
        /// Why.
        reason: UnlordReason,
    },
    /// A new identity was seen. uWSGI's `node-joined` hooks.
    NodeJoined {
        /// Who.
        node: NodeInfo,
    },
    /// A member left. uWSGI's `node-left` hooks (for [`LeftReason::Expired`] only).
    NodeLeft {
        /// Who.
        node: NodeInfo,
        /// Why.
        reason: LeftReason,
    },
    /// This node left the legion ([`Legion::leave`](crate::Legion::leave)); uWSGI's `death`
    /// hooks.
    Death,
}

impl EventKind {
    /// uWSGI's name for the hook phase: `setup`, `join`, `lord`, `unlord`, `node-joined`,
    /// `node-left`, `death`.
    pub fn phase(&self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Join => "join",
            Self::Lord => "lord",
            Self::Unlord { .. } => "unlord",
            Self::NodeJoined { .. } => "node-joined",
            Self::NodeLeft { .. } => "node-left",
            Self::Death => "death",
        }
    }
}

/// One event, numbered and stamped with the lord as known when it fired.
///
/// Events are edge-triggered: each change is reported once, in the order it happened
/// (within one input: node-left, node-joined, join, lord/unlord; spec §3.8).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// Sequence number, from 1, without gaps (a gap means events were dropped because
    /// the application did not drain them; see `Stats::events_dropped`).
    pub seq: u64,
    /// The highest lord epoch this node knows of when the event fired.
    pub epoch: u64,
    /// The lord this node agreed on last, if any.
    pub lord: Option<LordInfo>,
    /// What happened.
    pub kind: EventKind,
}
