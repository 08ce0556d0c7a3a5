//! Errors of the state machine: configuration and rejected datagrams.

use crate::wire::WireError;

/// Why a [`Config`](crate::Config) cannot start a [`Legion`](crate::Legion).
///
/// Returned by [`Legion::new`](crate::Legion::new); nothing was started. Always an
/// integration error: fix the configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The legion name is empty.
    #[error("the legion name is empty")]
    EmptyLegionName,
    /// The node name is empty: uWSGI peers ignore announces without a name (spec 4.10).
    #[error("the node name is empty; peers would ignore this node's announces")]
    EmptyNodeName,
    /// The announce period is zero.
    #[error("the announce period (freq) must be greater than zero")]
    ZeroFreq,
    /// The tolerance does not exceed the announce period, so healthy members would expire
    /// between two announces.
    #[error("the tolerance ({tolerance:?}) must be longer than the announce period ({freq:?})")]
    ToleranceNotAboveFreq {
        /// The configured announce period.
        freq: core::time::Duration,
        /// The configured tolerance.
        tolerance: core::time::Duration,
    },
    /// The scroll makes announces larger than a datagram uWSGI can receive (spec 4.6).
    #[error("the scroll of {len} bytes makes announces exceed {max} bytes")]
    ScrollTooLarge {
        /// The scroll's length.
        len: usize,
        /// The largest datagram uWSGI receives.
        max: usize,
    },
    /// The uuid is nil (36 NUL bytes), which peers read as "no uuid".
    #[error("the node uuid is nil")]
    NilUuid,
}

/// Why a datagram was rejected by [`Legion::handle_datagram`](crate::Legion::handle_datagram).
///
/// Non-fatal: the datagram is dropped, the legion's state is unchanged (apart from the
/// rejection counter in [`Stats`](crate::Stats)), and the next datagram is processed
/// normally. Most causes are junk or another legion on the same port; `Wire(Decrypt)` for
/// every datagram usually means the two sides disagree on the secret or cipher.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// The datagram is not a valid announce (framing, decryption, encoding).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// An announce for another legion (spec §2.7 step 6; uWSGI: `invalid legion name`).
    #[error("announce for another legion")]
    OtherLegion,
    /// This node's own announce, come back (multicast loop, or itself listed as a node).
    #[error("own announce")]
    Own,
    /// The announce's `unix` time is older than the skew tolerance (replay window, §2.6).
    #[error("announce {age_secs} s old exceeds the skew tolerance")]
    Stale {
        /// How old it was, in seconds.
        age_secs: u64,
    },
    /// The announce's `unix` time is further in the future than `max_future_skew`.
    #[error("announce {ahead_secs} s in the future exceeds the future skew limit")]
    FromTheFuture {
        /// How far ahead it was, in seconds.
        ahead_secs: u64,
    },
    /// The announce has an empty `name` (uWSGI ignores it too, edge case 4.10).
    #[error("announce without a node name")]
    EmptyName,
    /// The announce's uuid is missing or not 36 bytes (uWSGI would store a nil uuid, 4.9).
    #[error("announce without a valid uuid")]
    NilUuid,
    /// The announce's valor exceeds 65535 (uWSGI truncates it and then never finds the
    /// member again, edge case 4.7).
    #[error("valor {valor} exceeds 65535")]
    ValorOutOfRange {
        /// The announced valor.
        valor: u64,
    },
    /// A death announce from a node that is not a member (ignored, edge case 4.13).
    #[error("death announce from an unknown node")]
    UnknownDead,
    /// This node has left the legion and processes nothing more.
    #[error("this node has left the legion")]
    Left,
}

impl DatagramError {
    /// A short stable label for counting rejections: the [`WireError`]'s own label for
    /// wire errors, otherwise `other_legion`, `own`, `stale`, `future`, `empty_name`,
    /// `nil_uuid`, `valor_out_of_range`, `unknown_dead`, `left`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Wire(e) => e.reason(),
            Self::OtherLegion => "other_legion",
            Self::Own => "own",
            Self::Stale { .. } => "stale",
            Self::FromTheFuture { .. } => "future",
            Self::EmptyName => "empty_name",
            Self::NilUuid => "nil_uuid",
            Self::ValorOutOfRange { .. } => "valor_out_of_range",
            Self::UnknownDead => "unknown_dead",
            Self::Left => "left",
        }
    }
}
