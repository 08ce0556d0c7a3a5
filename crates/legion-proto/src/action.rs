//! Hook actions: what a node runs when an event fires (spec §3.8, §3.9).
//!
//! Configuration only: which actions run for which [`Hook`], parsed from uWSGI's
//! `<action>:<argument>` text or given as Rust callbacks. The [driver](crate::driver)
//! runs them, off its event loop.

use core::fmt;
use std::time::Duration;

use crate::{Event, EventKind, LeftReason, UnlordReason};

/// A hook phase: the uWSGI option `--legion-<phase>` that lists its actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// `--legion-setup`: the legion started.
    Setup,
    /// `--legion-death`: the node leaves the legion (clean shutdown).
    Death,
    /// `--legion-lord`: this node became lord. Their outcome is reported to the core
    /// ([`Legion::handle_action_result`](crate::Legion::handle_action_result)).
    Lord,
    /// `--legion-unlord`: this node stopped being lord for a new lord or a lost quorum.
    Unlord,
    /// `--legion-join`: the first election round that reached agreement and quorum.
    Join,
    /// `--legion-node-joined`: a new member was seen.
    NodeJoined,
    /// `--legion-node-left`: a member expired.
    NodeLeft,
}

impl Hook {
    /// Every hook, in the order of uWSGI's option table.
    pub const ALL: [Self; 7] =
        [Self::Setup, Self::Death, Self::Lord, Self::Unlord, Self::Join, Self::NodeJoined, Self::NodeLeft];

    /// uWSGI's name for the phase: `setup`, `death`, `lord`, `unlord`, `join`,
    /// `node-joined`, `node-left` (the same as [`EventKind::phase`]).
    pub fn name(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Death => "death",
            Self::Lord => "lord",
            Self::Unlord => "unlord",
            Self::Join => "join",
            Self::NodeJoined => "node-joined",
            Self::NodeLeft => "node-left",
        }
    }

    /// The hook named `name` (see [`Hook::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == name)
    }

    /// The hook whose actions run for an event, as uWSGI runs them: `node-left` only when
    /// the member expired (not when it announced its death), `unlord` only for a new lord
    /// or a lost quorum (uWSGI never became lord when its lord hooks failed, so it has no
    /// unlord to run then).
    pub fn of(kind: &EventKind) -> Option<Self> {
        match kind {
            EventKind::Setup => Some(Self::Setup),
            EventKind::Join => Some(Self::Join),
            EventKind::Lord => Some(Self::Lord),
            EventKind::Unlord { reason: UnlordReason::NewLord | UnlordReason::QuorumLost } => {
                Some(Self::Unlord)
            }
            EventKind::Unlord { reason: UnlordReason::LordActionFailed } => None,
            EventKind::NodeJoined { .. } => Some(Self::NodeJoined),
            EventKind::NodeLeft { reason: LeftReason::Expired, .. } => Some(Self::NodeLeft),
            EventKind::NodeLeft { reason: LeftReason::Announced, .. } => None,
            EventKind::Death => Some(Self::Death),
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Self::Setup => 0,
            Self::Death => 1,
            Self::Lord => 2,
            Self::Unlord => 3,
            Self::Join => 4,
            Self::NodeJoined => 5,
            Self::NodeLeft => 6,
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust callback run as an action: `Ok` is success, `Err` a failure with a message.
pub type ActionCallback = Box<dyn FnMut(&Event) -> Result<(), String> + Send>;

/// One action of a hook (spec §3.9).
#[non_exhaustive]
pub enum Action {
    /// `cmd:<shell>` or `exec:<shell>` (uWSGI's alias): `/bin/sh -c <shell>`; exit status
    /// 0 is success. The command's output goes to this process's stderr (uWSGI's goes to
    /// its log), never to its stdout.
    Shell(String),
    /// `log:<text>`: the text is logged (a `tracing` info event, and the driver's
    /// [`ActionOutcome::log`]); always a success.
    Log(String),
    /// Any other `<name>:<argument>`. As in uWSGI the name is looked up only when the
    /// hook fires: running it fails (`unable to find legion_action`), which counts for
    /// `death_on_lord_error`.
    Unknown {
        /// The action name.
        name: String,
        /// Its argument.
        arg: String,
    },
    /// A Rust callback, for embedders ([`Action::callback`]). It runs on the driver's
    /// action thread; it cannot be interrupted, so the action timeout does not apply.
    /// A panic counts as a failure.
    Callback(ActionCallback),
}

impl Action {
    /// Parses uWSGI's `<action>:<argument>` (the text after the legion name in
    /// `--legion-lord "<legion> <action>:<argument>"`).
    ///
    /// ```
    /// use legion_proto::driver::Action;
    /// assert!(matches!(Action::parse("cmd:ip addr add 10.0.0.1/24 dev eth0")?, Action::Shell(_)));
    /// assert!(matches!(Action::parse("log:i am the lord")?, Action::Log(_)));
    /// assert!(matches!(Action::parse("signal:17")?, Action::Unknown { .. })); // fails when run
    /// assert!(Action::parse("no colon").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ActionConfigError::NoColon`] when the text has no `:` (uWSGI exits at startup
    /// with `invalid <phase> action`).
    pub fn parse(text: &str) -> Result<Self, ActionConfigError> {
        let Some((name, arg)) = text.split_once(':') else {
            return Err(ActionConfigError::NoColon { text: text.to_owned() });
        };
        Ok(match name {
            "cmd" | "exec" => Self::Shell(arg.to_owned()),
            "log" => Self::Log(arg.to_owned()),
            _ => Self::Unknown { name: name.to_owned(), arg: arg.to_owned() },
        })
    }

    /// A Rust callback action.
    pub fn callback(f: impl FnMut(&Event) -> Result<(), String> + Send + 'static) -> Self {
        Self::Callback(Box::new(f))
    }

    /// The action as configuration text (`cmd:…`, `log:…`, `callback` for a callback),
    /// for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Shell(cmd) => format!("cmd:{cmd}"),
            Self::Log(text) => format!("log:{text}"),
            Self::Unknown { name, arg } => format!("{name}:{arg}"),
            Self::Callback(_) => "callback".to_owned(),
        }
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Action({})", self.describe())
    }
}

/// A hook action that cannot be configured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActionConfigError {
    /// The text has no `:` between the action name and its argument.
    #[error("invalid action {text:?}: expected <action>:<argument>")]
    NoColon {
        /// The text as given.
        text: String,
    },
}

/// The actions of one legion: an ordered list per [`Hook`], and the time each may take.
///
/// ```
/// use std::time::Duration;
/// use legion_proto::driver::{Action, Actions, Hook};
/// let mut actions = Actions::new().timeout(Duration::from_secs(10));
/// actions.parse(Hook::Lord, "cmd:ip addr add 10.0.0.1/24 dev eth0")?;
/// actions.parse(Hook::Lord, "log:i am the lord")?;
/// actions.push(Hook::Unlord, Action::callback(|event| {
///     println!("stepped down at epoch {}", event.epoch);
///     Ok(())
/// }));
/// assert_eq!(actions.len(Hook::Lord), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Actions {
    pub(crate) hooks: [Vec<Action>; 7],
    pub(crate) timeout: Duration,
}

impl Actions {
    /// The default time an action may take before it is killed and counted a failure.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// No actions; timeout [`Actions::DEFAULT_TIMEOUT`].
    pub fn new() -> Self {
        Self { hooks: Default::default(), timeout: Self::DEFAULT_TIMEOUT }
    }

    /// How long one `cmd:` action may run before it is killed and counted a failure
    /// (uWSGI waits for ever, blocking its legion thread).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Appends an action to a hook; actions of one hook run in the order added.
    pub fn push(&mut self, hook: Hook, action: Action) -> &mut Self {
        self.hooks[hook.index()].push(action);
        self
    }

    /// Parses `<action>:<argument>` ([`Action::parse`]) and appends it to a hook.
    ///
    /// # Errors
    /// As [`Action::parse`].
    pub fn parse(&mut self, hook: Hook, text: &str) -> Result<&mut Self, ActionConfigError> {
        let action = Action::parse(text)?;
        Ok(self.push(hook, action))
    }

    /// The actions of a hook, in order.
    pub fn get(&self, hook: Hook) -> &[Action] {
        &self.hooks[hook.index()]
    }

    /// How many actions a hook has.
    pub fn len(&self, hook: Hook) -> usize {
        self.hooks[hook.index()].len()
    }

    /// Whether no hook has an action.
    pub fn is_empty(&self) -> bool {
        self.hooks.iter().all(Vec::is_empty)
    }

    /// The action timeout.
    pub fn timeout_value(&self) -> Duration {
        self.timeout
    }
}

impl Default for Actions {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Actions");
        for hook in Hook::ALL {
            d.field(hook.name(), &self.get(hook));
        }
        d.field("timeout", &self.timeout).finish()
    }
}

/// Why an action failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActionFailure {
    /// The command exited with a non-zero status (uWSGI: `<phase> hook returned: N`).
    #[error("exit status {code}")]
    ExitStatus {
        /// The exit status.
        code: i32,
    },
    /// The command was killed by a signal.
    #[error("killed by signal {signal}")]
    Signal {
        /// The signal number.
        signal: i32,
    },
    /// The command ran longer than the action timeout and was killed.
    #[error("timed out after {after:?}")]
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// The command could not be started.
    #[error("cannot run /bin/sh: {message}")]
    Spawn {
        /// The OS error.
        message: String,
    },
    /// The action name is not known (uWSGI: `unable to find legion_action`).
    #[error("unable to find legion_action {name:?}")]
    UnknownAction {
        /// The name.
        name: String,
    },
    /// A callback returned an error or panicked.
    #[error("callback failed: {message}")]
    Callback {
        /// Its message.
        message: String,
    },
    /// The driver was dropped while the action was queued or running.
    #[error("cancelled: the driver was dropped")]
    Cancelled,
}

/// What one action did: reported by the driver once the action has finished.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActionOutcome {
    /// The [`Event::seq`] of the event the action ran for.
    pub seq: u64,
    /// The hook.
    pub hook: Hook,
    /// The action, as configuration text ([`Action::describe`]).
    pub action: String,
    /// Success, or why it failed.
    pub result: Result<(), ActionFailure>,
    /// For a `log:` action, its text.
    pub log: Option<String>,
    /// How long it ran.
    pub elapsed: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeInfo, NodeUuid};

    #[test]
    fn hooks_follow_uwsgi_for_death_announces_and_failed_lord_actions() {
        let node = NodeInfo { valor: 1, name: b"n".to_vec(), uuid: NodeUuid::from_random([3; 16]) };
        let left = |reason| EventKind::NodeLeft { node: node.clone(), reason };
        assert_eq!(Hook::of(&left(LeftReason::Expired)), Some(Hook::NodeLeft));
        assert_eq!(Hook::of(&left(LeftReason::Announced)), None);
        assert_eq!(Hook::of(&EventKind::Unlord { reason: UnlordReason::QuorumLost }), Some(Hook::Unlord));
        assert_eq!(Hook::of(&EventKind::Unlord { reason: UnlordReason::LordActionFailed }), None);
        for hook in Hook::ALL {
            assert_eq!(Hook::from_name(hook.name()), Some(hook));
            assert_eq!(Hook::ALL[hook.index()], hook);
        }
    }

    #[test]
    fn actions_parse_like_uwsgi() {
        assert!(matches!(Action::parse("exec:true"), Ok(Action::Shell(c)) if c == "true"));
        assert!(matches!(Action::parse("log:a:b"), Ok(Action::Log(t)) if t == "a:b"));
        assert!(matches!(Action::parse("cmd:"), Ok(Action::Shell(c)) if c.is_empty()));
        assert_eq!(
            Action::parse("nocolon").map(|_| ()),
            Err(ActionConfigError::NoColon { text: "nocolon".into() })
        );
        assert_eq!(Action::parse("alarm:x y").map(|a| a.describe()), Ok("alarm:x y".to_owned()));
    }
}
