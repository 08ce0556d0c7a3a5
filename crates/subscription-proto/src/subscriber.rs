//! The sans-IO subscriber: announces "key → my address" to routers (spec §4).

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::files::Files;
use crate::sign::Signer;
use crate::wire;
use crate::{Command, Endpoint, Request};

/// One subscription: what to announce, to which router, how.
///
/// The fields of uWSGI's `subscribe()`: the request's pairs (key, address, modifiers,
/// weight, SNI files, notify socket, and the uWSGI 2.1 keys), signing, and a check file.
#[derive(Clone)]
pub struct Subscription {
    /// The router's subscription server.
    pub server: Endpoint,
    /// The pairs to send (the `unix` and `sign` pairs are added when signing).
    pub request: Request,
    /// Sign every datagram (`sign=DIGEST:KEY.pem`).
    pub signer: Option<Signer>,
    /// `check=FILE`: the subscription is sent only while FILE exists, as uWSGI's
    /// documentation says. uWSGI 2.0.21 does the opposite (sends only while it does **not**
    /// exist, spec §4.3); this crate follows the documentation.
    pub check: Option<PathBuf>,
}

impl Subscription {
    /// A subscription of `key` → `address` to `server`, weight 1, no signing.
    pub fn new(server: Endpoint, key: impl Into<Vec<u8>>, address: impl Into<Vec<u8>>) -> Self {
        Self {
            server,
            request: Request { key: key.into(), address: address.into(), weight: 1, ..Request::default() },
            signer: None,
            check: None,
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("server", &self.server)
            .field("request", &self.request)
            .field("signed", &self.signer.is_some())
            .field("check", &self.check)
            .finish()
    }
}

/// Client parameters (uWSGI's subscription client options).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriberConfig {
    announce_interval: Duration,
    start_unsubscribed: bool,
    clear_on_exit: bool,
    unsubscribe_on_reload: bool,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl SubscriberConfig {
    /// uWSGI's defaults: refresh every 10 s, start subscribed, unsubscribe on exit.
    pub fn new() -> Self {
        Self {
            announce_interval: Duration::from_secs(10),
            start_unsubscribed: false,
            clear_on_exit: false,
            unsubscribe_on_reload: false,
        }
    }

    /// `--subscribe-freq`: the refresh period (default 10 s). uWSGI also sends one second
    /// after start; so does this crate.
    #[must_use]
    pub fn announce_interval(mut self, interval: Duration) -> Self {
        self.announce_interval = interval;
        self
    }

    /// `--start-unsubscribed`: send nothing until [`Subscriber::resume`].
    #[must_use]
    pub fn start_unsubscribed(mut self, on: bool) -> Self {
        self.start_unsubscribed = on;
        self
    }

    /// `--subscription-clear-on-shutdown` (uWSGI 2.1): at exit send a subscribe with
    /// `clear=1` instead of an unsubscribe.
    #[must_use]
    pub fn clear_on_exit(mut self, on: bool) -> Self {
        self.clear_on_exit = on;
        self
    }

    /// `--unsubscribe-on-graceful-reload`: [`Subscriber::reload`] unsubscribes.
    #[must_use]
    pub fn unsubscribe_on_reload(mut self, on: bool) -> Self {
        self.unsubscribe_on_reload = on;
        self
    }
}

/// Why a subscriber cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A subscription cannot be encoded (key over 255 bytes, empty address, …).
    #[error("subscription {index} cannot be sent: {source}")]
    Unencodable {
        /// Its position.
        index: usize,
        /// Why.
        #[source]
        source: wire::WireError,
    },
    /// The refresh period is zero.
    #[error("the announce interval must be greater than zero")]
    ZeroInterval,
}

/// What the subscriber reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A router acknowledged a new node on the notify socket (spec §1.7).
    Acknowledged {
        /// The pool.
        key: Vec<u8>,
        /// The node.
        address: Vec<u8>,
    },
    /// A subscription was not sent because its check file is missing.
    Skipped {
        /// Its position.
        index: usize,
    },
}

/// A datagram to send.
#[must_use]
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The router's subscription server.
    pub destination: Endpoint,
    /// The datagram.
    pub payload: Bytes,
}

impl fmt::Debug for Transmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmit")
            .field("destination", &self.destination)
            .field("len", &self.payload.len())
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running { next: Instant, round: u64 },
    Paused,
    Stopped,
}

/// Subscribes to routers and keeps the subscriptions fresh.
///
/// Rounds go out at start, one second later, then every announce interval: each sends
/// every subscription, in order. [`Subscriber::shutdown`] unsubscribes.
pub struct Subscriber {
    subscriptions: Vec<Subscription>,
    config: SubscriberConfig,
    files: Box<dyn Files + Send>,
    phase: Phase,
    /// The start of the current schedule (reset by `resume` and `reload`).
    start: Instant,
    /// Wall clock at `wall_base`: wall(now) = wall_start + (now − wall_base).
    wall_start: Duration,
    wall_base: Instant,
    last_now: Instant,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    sent: u64,
}

impl fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("subscriptions", &self.subscriptions)
            .field("config", &self.config)
            .field("phase", &self.phase)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// A subscriber; unless `start_unsubscribed`, the first round is queued at once.
    /// `wall_clock` is the time since the Unix epoch at `now` (signed datagrams carry it).
    ///
    /// # Errors
    /// [`ConfigError`] if a subscription cannot be encoded.
    pub fn new(
        config: SubscriberConfig,
        subscriptions: Vec<Subscription>,
        files: impl Files + Send + 'static,
        now: Instant,
        wall_clock: Duration,
    ) -> Result<Self, ConfigError> {
        if config.announce_interval.is_zero() {
            return Err(ConfigError::ZeroInterval);
        }
        for (index, s) in subscriptions.iter().enumerate() {
            wire::encode(Command::Subscribe, &s.request)
                .map_err(|source| ConfigError::Unencodable { index, source })?;
        }
        let phase =
            if config.start_unsubscribed { Phase::Paused } else { Phase::Running { next: now, round: 0 } };
        let mut me = Self {
            subscriptions,
            config,
            files: Box::new(files),
            phase,
            start: now,
            wall_start: wall_clock,
            wall_base: now,
            last_now: now,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            sent: 0,
        };
        me.handle_timeout(now);
        Ok(me)
    }

    /// Sends the round that is due, if any.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clamp(now);
        let Phase::Running { next, round } = self.phase else { return };
        if now < next {
            return;
        }
        self.round(now, Command::Subscribe, false);
        // uWSGI: at start, at master cycle 1, then every `subscribe_freq` cycles.
        let round = round + 1;
        let one = Duration::from_secs(1);
        let interval = self.config.announce_interval;
        let next = if round == 1 && interval > one {
            now + one
        } else {
            let elapsed = now.saturating_duration_since(self.start);
            let k = elapsed.as_nanos() / interval.as_nanos().max(1) + 1;
            self.start + interval * u32::try_from(k).unwrap_or(u32::MAX)
        };
        self.phase = Phase::Running { next, round };
    }

    /// Processes a datagram received on the notify socket: an acknowledgement.
    /// Anything else is ignored.
    pub fn handle_notify(&mut self, now: Instant, datagram: &[u8]) {
        self.clamp(now);
        if let Some((key, address)) = wire::parse_notify_ack(datagram) {
            self.events.push_back(Event::Acknowledged { key: key.to_vec(), address: address.to_vec() });
        }
    }

    /// Starts (or restarts) subscribing, e.g. after `start_unsubscribed`, at once.
    pub fn resume(&mut self, now: Instant) {
        let now = self.clamp(now);
        if self.phase == Phase::Paused {
            self.phase = Phase::Running { next: now, round: 0 };
            self.start = now;
            self.handle_timeout(now);
        }
    }

    /// Pauses (uWSGI's SIGTSTP): unsubscribes everything and sends nothing more until
    /// [`Subscriber::resume`].
    pub fn pause(&mut self, now: Instant) {
        let now = self.clamp(now);
        if matches!(self.phase, Phase::Running { .. }) {
            self.round(now, Command::Unsubscribe, false);
            self.phase = Phase::Paused;
        }
    }

    /// A graceful reload: unsubscribes only with `unsubscribe_on_reload` (uWSGI sends
    /// nothing by default), then starts over (a round now and one a second later).
    pub fn reload(&mut self, now: Instant) {
        let now = self.clamp(now);
        if let Phase::Running { .. } = self.phase {
            if self.config.unsubscribe_on_reload {
                self.round(now, Command::Unsubscribe, false);
            }
            self.start = now;
            self.phase = Phase::Running { next: now, round: 0 };
            self.handle_timeout(now);
        }
    }

    /// Shutdown: unsubscribes everything (or, with `clear_on_exit`, subscribes with
    /// `clear=1`), then stops. A paused subscriber sends nothing, as uWSGI.
    pub fn shutdown(&mut self, now: Instant) {
        let now = self.clamp(now);
        if matches!(self.phase, Phase::Running { .. }) {
            if self.config.clear_on_exit {
                self.round(now, Command::Subscribe, true);
            } else {
                self.round(now, Command::Unsubscribe, false);
            }
        }
        self.phase = Phase::Stopped;
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Subscriber::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Running { next, .. } => Some(next),
            _ => None,
        }
    }

    /// The subscriptions.
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subscriptions
    }

    /// Datagrams queued so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Whether it is subscribing (not paused, not stopped).
    pub fn is_running(&self) -> bool {
        matches!(self.phase, Phase::Running { .. })
    }

    fn clamp(&mut self, now: Instant) -> Instant {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    fn round(&mut self, now: Instant, command: Command, clear: bool) {
        let unix_now = (self.wall_start + now.saturating_duration_since(self.wall_base)).as_secs();
        for index in 0..self.subscriptions.len() {
            let s = &self.subscriptions[index];
            if let Some(check) = &s.check {
                let check = check.clone();
                if !self.files.exists(&check) {
                    self.events.push_back(Event::Skipped { index });
                    continue;
                }
            }
            let s = &self.subscriptions[index];
            let mut req = s.request.clone();
            req.clear = clear;
            let datagram = match &s.signer {
                // uWSGI stamps signed datagrams with `time(NULL) + modifier2`.
                Some(signer) => crate::sign::sign_request(
                    command,
                    &req,
                    signer,
                    unix_now + u64::from(command.modifier2()),
                )
                .ok(),
                None => wire::encode(command, &req).ok(),
            };
            // `new` checked that every subscription encodes (and signs).
            let Some(datagram) = datagram else { continue };
            self.sent += 1;
            self.transmits
                .push_back(Transmit { destination: s.server.clone(), payload: Bytes::from(datagram) });
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "a base Instant for virtual time; nothing depends on its value")]
mod tests {
    use super::*;
    use crate::MemoryFiles;

    const WALL: Duration = Duration::from_secs(1_800_000_000);

    fn sub(key: &str) -> Subscription {
        Subscription::new("127.0.0.1:2626".parse().unwrap(), key, "127.0.0.1:3031")
    }

    fn drain(s: &mut Subscriber) -> Vec<wire::Decoded> {
        std::iter::from_fn(|| s.poll_transmit())
            .map(|t| wire::decode(&t.payload, wire::Mode::Strict).unwrap())
            .collect()
    }

    #[test]
    fn rounds_at_start_one_second_later_then_every_interval() {
        // Spec §4.1: verified freq 3 → t = 0, 1, 3, 6 s.
        let t0 = Instant::now();
        let config = SubscriberConfig::new().announce_interval(Duration::from_secs(3));
        let mut s = Subscriber::new(config, vec![sub("a"), sub("b")], MemoryFiles::new(), t0, WALL).unwrap();
        let mut times = Vec::new();
        let mut now = t0;
        for _ in 0..40 {
            let sent = drain(&mut s);
            if !sent.is_empty() {
                assert_eq!(sent.len(), 2, "every subscription, in order");
                assert_eq!(sent[0].request.key, b"a");
                times.push(now.duration_since(t0).as_secs());
            }
            now += Duration::from_millis(250);
            if s.poll_timeout().is_some_and(|t| t <= now) {
                s.handle_timeout(now);
            }
        }
        assert_eq!(times, [0, 1, 3, 6, 9]);
    }

    #[test]
    fn shutdown_unsubscribes_and_pause_blocks_everything() {
        let t0 = Instant::now();
        let mut s =
            Subscriber::new(SubscriberConfig::new(), vec![sub("a")], MemoryFiles::new(), t0, WALL).unwrap();
        drain(&mut s);
        s.shutdown(t0);
        let sent = drain(&mut s);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].command, Command::Unsubscribe);
        assert_eq!(s.poll_timeout(), None);

        // start_unsubscribed: nothing until resume, nothing at shutdown while blocked.
        let config = SubscriberConfig::new().start_unsubscribed(true);
        let mut s = Subscriber::new(config, vec![sub("a")], MemoryFiles::new(), t0, WALL).unwrap();
        assert!(drain(&mut s).is_empty());
        s.shutdown(t0);
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn check_files_follow_the_documentation() {
        let t0 = Instant::now();
        let mut with_check = sub("a");
        with_check.check = Some("/run/ready".into());
        let mut s =
            Subscriber::new(SubscriberConfig::new(), vec![with_check.clone()], MemoryFiles::new(), t0, WALL)
                .unwrap();
        assert!(drain(&mut s).is_empty(), "missing check file: not sent");
        assert_eq!(s.poll_event(), Some(Event::Skipped { index: 0 }));
        let files = MemoryFiles::new().with("/run/ready", "", 0, 0);
        let mut s = Subscriber::new(SubscriberConfig::new(), vec![with_check], files, t0, WALL).unwrap();
        assert_eq!(drain(&mut s).len(), 1, "check file present: sent");
    }

    #[test]
    fn clear_on_exit_and_reload() {
        let t0 = Instant::now();
        let config = SubscriberConfig::new().clear_on_exit(true).unsubscribe_on_reload(true);
        let mut s = Subscriber::new(config, vec![sub("a")], MemoryFiles::new(), t0, WALL).unwrap();
        drain(&mut s);
        s.reload(t0);
        let sent = drain(&mut s);
        assert_eq!(
            sent.iter().map(|d| d.command).collect::<Vec<_>>(),
            [Command::Unsubscribe, Command::Subscribe]
        );
        s.shutdown(t0);
        let sent = drain(&mut s);
        assert_eq!(sent[0].command, Command::Subscribe);
        assert!(sent[0].request.clear);
    }

    #[test]
    fn notify_acks_become_events_and_bad_configs_are_refused() {
        let t0 = Instant::now();
        let mut s =
            Subscriber::new(SubscriberConfig::new(), vec![sub("a")], MemoryFiles::new(), t0, WALL).unwrap();
        s.handle_notify(t0, b"[subscription ack] a => new node: 127.0.0.1:3031");
        s.handle_notify(t0, b"junk");
        assert_eq!(
            s.poll_event(),
            Some(Event::Acknowledged { key: b"a".to_vec(), address: b"127.0.0.1:3031".to_vec() })
        );
        assert_eq!(s.poll_event(), None);
        let long = sub(&"k".repeat(256));
        assert!(matches!(
            Subscriber::new(SubscriberConfig::new(), vec![long], MemoryFiles::new(), t0, WALL),
            Err(ConfigError::Unencodable { index: 0, .. })
        ));
    }
}
