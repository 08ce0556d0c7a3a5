//! The vassal side of the channel (spec §1.5): what a Rust server must say and do to run
//! under a uWSGI Emperor (real or ours).
//!
//! [`VassalChannel`] is sans-IO: tell it what the server does ([`VassalChannel::ready`],
//! [`VassalChannel::accepting`], [`VassalChannel::request_done`], …) and feed it what
//! arrives on the channel; write what [`VassalChannel::poll_transmit`] yields and act on
//! what [`VassalChannel::poll_command`] yields. Heartbeats are timer driven.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::proto::{ConfigPipeError, ConfigReader, FromVassal, ToVassal};

/// What the emperor asks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Byte 0: stop now, exit 0.
    Stop,
    /// Byte 1: reload gracefully, keeping the channel (uWSGI re-execs in place).
    Reload,
    /// Byte 2: stop gracefully, exit 0.
    GracefulStop,
    /// The channel closed: the emperor is gone. uWSGI shuts down and exits 1.
    EmperorLost,
    /// A config arrived on the config channel.
    Config(Vec<u8>),
    /// The config channel sent something that is not a config.
    BadConfig(ConfigPipeError),
}

/// The vassal's channel state.
#[derive(Debug)]
pub struct VassalChannel {
    heartbeat: Option<Duration>,
    next_heartbeat: Option<Instant>,
    ready_sent: bool,
    loyal_sent: bool,
    lost: bool,
    out: VecDeque<u8>,
    commands: VecDeque<Command>,
    config: ConfigReader,
}

impl VassalChannel {
    /// A channel; with `heartbeat`, a byte 26 is due every period (uWSGI's
    /// `--heartbeat N`; the emperor kills a vassal whose heartbeats stop).
    #[must_use]
    pub fn new(now: Instant, heartbeat: Option<Duration>) -> Self {
        let heartbeat = heartbeat.filter(|d| !d.is_zero());
        Self {
            heartbeat,
            next_heartbeat: heartbeat.map(|_| now),
            ready_sent: false,
            loyal_sent: false,
            lost: false,
            out: VecDeque::new(),
            commands: VecDeque::new(),
            config: ConfigReader::new(),
        }
    }

    /// Changes the heartbeat period (a vassal may learn it from a pushed config); the
    /// first heartbeat is due at once.
    pub fn set_heartbeat(&mut self, now: Instant, heartbeat: Option<Duration>) {
        self.heartbeat = heartbeat.filter(|d| !d.is_zero());
        self.next_heartbeat = self.heartbeat.map(|_| now);
    }

    /// The server is up (byte 1, once per process life; not after a reload, as uWSGI).
    pub fn ready(&mut self) {
        if !self.ready_sent {
            self.ready_sent = true;
            self.send(FromVassal::Ready);
        }
    }

    /// The server accepts requests (byte 5; again after each reload).
    pub fn accepting(&mut self) {
        self.send(FromVassal::Accepting);
    }

    /// A request was served: the first one makes the vassal loyal (byte 17), which clears
    /// its blacklist entry at the emperor.
    pub fn request_done(&mut self) {
        if !self.loyal_sent {
            self.loyal_sent = true;
            self.send(FromVassal::Loyal);
        }
    }

    /// After a reload (same channel, new life): ready is not sent again, loyalty and
    /// accepting are announced again when they happen.
    pub fn reloaded(&mut self) {
        self.loyal_sent = false;
    }

    /// Ask for the config again (byte 2), before a self-reload in config pipe mode.
    pub fn request_config(&mut self) {
        self.send(FromVassal::ConfigRequest);
    }

    /// Ask the emperor to stop this vassal (byte 22, uWSGI's `--die-on-idle`).
    pub fn voluntary_shutdown(&mut self) {
        self.send(FromVassal::VoluntaryShutdown);
    }

    /// Ask for broodlord reinforcements (byte 30).
    pub fn sos(&mut self) {
        self.send(FromVassal::Sos);
    }

    /// Bytes from the channel; an empty slice is EOF.
    pub fn handle_bytes(&mut self, data: &[u8]) {
        if data.is_empty() {
            if !self.lost {
                self.lost = true;
                self.commands.push_back(Command::EmperorLost);
            }
            return;
        }
        for &b in data {
            match ToVassal::from_byte(b) {
                Some(ToVassal::Stop) => self.commands.push_back(Command::Stop),
                Some(ToVassal::Reload) => self.commands.push_back(Command::Reload),
                Some(ToVassal::GracefulStop) => self.commands.push_back(Command::GracefulStop),
                // Logged and ignored by uWSGI.
                _ => {}
            }
        }
    }

    /// Bytes from the config channel.
    pub fn handle_config_bytes(&mut self, mut data: &[u8]) {
        // Bounded: each round consumes at least one byte or stops.
        while !data.is_empty() {
            match self.config.feed(data) {
                Ok((used, done)) => {
                    if let Some(config) = done {
                        self.commands.push_back(Command::Config(config));
                    }
                    if used == 0 {
                        break;
                    }
                    data = &data[used..];
                }
                Err(e) => {
                    self.config = ConfigReader::new();
                    self.commands.push_back(Command::BadConfig(e));
                    break;
                }
            }
        }
    }

    /// Sends a heartbeat when one is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let (Some(period), Some(due)) = (self.heartbeat, self.next_heartbeat)
            && now >= due
        {
            self.send(FromVassal::Heartbeat);
            self.next_heartbeat = Some(now + period);
        }
    }

    /// The next heartbeat.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_heartbeat
    }

    /// The next byte to write.
    pub fn poll_transmit(&mut self) -> Option<u8> {
        self.out.pop_front()
    }

    /// The next command to act on.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    fn send(&mut self, m: FromVassal) {
        // A vassal that cannot write has lost its emperor; keep the queue bounded.
        if self.out.len() < 1024 {
            self.out.push_back(m.byte());
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "a base Instant for virtual time; nothing depends on its value")]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_bytes_match_uwsgi() {
        let t = Instant::now();
        let mut v = VassalChannel::new(t, Some(Duration::from_secs(2)));
        v.ready();
        v.handle_timeout(t);
        v.accepting();
        v.request_done();
        v.request_done();
        v.handle_timeout(t + Duration::from_secs(1));
        v.handle_timeout(t + Duration::from_secs(2));
        let out: Vec<u8> = std::iter::from_fn(|| v.poll_transmit()).collect();
        assert_eq!(out, [1, 26, 5, 17, 26]);
        v.handle_bytes(&[1, 99, 0]);
        v.reloaded();
        v.ready();
        v.request_done();
        let out: Vec<u8> = std::iter::from_fn(|| v.poll_transmit()).collect();
        assert_eq!(out, [17], "no second ready after a reload");
        let cmds: Vec<Command> = std::iter::from_fn(|| v.poll_command()).collect();
        assert_eq!(cmds, [Command::Reload, Command::Stop]);
        v.handle_bytes(&[]);
        v.handle_bytes(&[]);
        assert_eq!(v.poll_command(), Some(Command::EmperorLost));
        assert_eq!(v.poll_command(), None);
    }

    #[test]
    fn configs_arrive_whole() {
        let mut v = VassalChannel::new(Instant::now(), None);
        let mut blob = crate::proto::encode_config(b"[uwsgi]\n").unwrap_or_default();
        blob.extend(crate::proto::encode_config(b"[uwsgi]\nx=1\n").unwrap_or_default());
        for chunk in blob.chunks(3) {
            v.handle_config_bytes(chunk);
        }
        assert_eq!(v.poll_command(), Some(Command::Config(b"[uwsgi]\n".to_vec())));
        assert_eq!(v.poll_command(), Some(Command::Config(b"[uwsgi]\nx=1\n".to_vec())));
        v.handle_config_bytes(&[0x99, 1, 0, 0]);
        assert_eq!(v.poll_command(), Some(Command::BadConfig(ConfigPipeError::BadModifier(0x99))));
    }
}
