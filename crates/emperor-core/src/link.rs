//! The vassal side over real fds (feature `mio`): [`EmperorLink`] takes the channel a
//! uWSGI Emperor passed down (`UWSGI_EMPEROR_FD`, and `UWSGI_EMPEROR_FD_CONFIG` in config
//! pipe mode), drives a [`VassalChannel`] with it, and prepares an in-place reload.
#![allow(clippy::disallowed_methods, reason = "the IO side reads the clock for its write deadline")]

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Interest, Registry, Token};

use crate::proto::decode_config_header;
use crate::vassal::VassalChannel;

/// Why the emperor's fds cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// `UWSGI_EMPEROR_FD` or `UWSGI_EMPEROR_FD_CONFIG` is not an fd this process owns.
    #[error(transparent)]
    Fd(#[from] zerg_fdpass::inherited::EnvFdError),
    /// A socket operation failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The link to this process's emperor.
#[derive(Debug)]
pub struct EmperorLink {
    channel: UnixStream,
    config: Option<UnixStream>,
    state: VassalChannel,
    pending: VecDeque<u8>,
}

fn nonblocking(fd: OwnedFd) -> io::Result<UnixStream> {
    let s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(true)?;
    Ok(UnixStream::from_std(s))
}

impl EmperorLink {
    /// Takes the emperor's fds from the environment; `Ok(None)` when this process has no
    /// emperor. `heartbeat` as [`VassalChannel::new`].
    pub fn from_env(now: Instant, heartbeat: Option<Duration>) -> Result<Option<Self>, LinkError> {
        let Some(channel) = zerg_fdpass::inherited::from_env("UWSGI_EMPEROR_FD")? else { return Ok(None) };
        let config = zerg_fdpass::inherited::from_env("UWSGI_EMPEROR_FD_CONFIG")?;
        Ok(Some(Self {
            channel: nonblocking(channel)?,
            config: config.map(nonblocking).transpose()?,
            state: VassalChannel::new(now, heartbeat),
            pending: VecDeque::new(),
        }))
    }

    /// Whether the emperor pushes the config (`emperor://NAME`).
    #[must_use]
    pub fn has_config_pipe(&self) -> bool {
        self.config.is_some()
    }

    /// Reads one pushed config, waiting up to `timeout` (uWSGI's vassal waits 5 s), as a
    /// vassal does at startup in config pipe mode.
    pub fn read_config(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
        let Some(config) = &self.config else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no config pipe (UWSGI_EMPEROR_FD_CONFIG)"));
        };
        let mut s = std::os::unix::net::UnixStream::from(config.as_fd().try_clone_to_owned()?);
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(timeout))?;
        let mut header = [0u8; 4];
        let read = s.read_exact(&mut header).and_then(|()| {
            let len = decode_config_header(header).map_err(io::Error::other)?;
            let mut body = vec![0u8; len];
            s.read_exact(&mut body)?;
            Ok(body)
        });
        // O_NONBLOCK belongs to the open file: put it back for the event loop.
        s.set_nonblocking(true)?;
        read
    }

    /// The protocol state: tell it what the server does, read its commands.
    pub fn channel(&mut self) -> &mut VassalChannel {
        &mut self.state
    }

    /// Registers the channel (and the config pipe) for reading.
    pub fn register(&mut self, registry: &Registry, channel: Token, config: Token) -> io::Result<()> {
        registry.register(&mut self.channel, channel, Interest::READABLE)?;
        if let Some(c) = self.config.as_mut() {
            registry.register(c, config, Interest::READABLE)?;
        }
        Ok(())
    }

    /// Reads what arrived on the channel (`config` false) or the config pipe (`true`)
    /// into the state; then call [`VassalChannel::poll_command`].
    pub fn handle_readable(&mut self, config: bool) {
        let stream = if config { self.config.as_mut() } else { Some(&mut self.channel) };
        let Some(s) = stream else { return };
        let mut buf = [0u8; 4096];
        // Bounded: a batch per readiness; edge-triggered, so read until WouldBlock.
        for _ in 0..1024 {
            let data: &[u8] = match s.read(&mut buf) {
                Ok(n) => &buf[..n],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => &[],
            };
            if config {
                self.state.handle_config_bytes(data);
            } else {
                self.state.handle_bytes(data);
            }
            if data.is_empty() {
                return;
            }
        }
    }

    /// Fires heartbeats and writes every pending byte. An error means the emperor is gone.
    pub fn flush(&mut self, now: Instant) -> io::Result<()> {
        self.state.handle_timeout(now);
        while let Some(b) = self.state.poll_transmit() {
            self.pending.push_back(b);
        }
        while let Some(&b) = self.pending.front() {
            match self.channel.write(&[b]) {
                Ok(1) => {
                    self.pending.pop_front();
                }
                Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The socketpair's buffer is full: keep the bytes for the next flush.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Prepares an in-place reload (exec of the same program, same pid), as a uWSGI
    /// master does: in config pipe mode it asks for the config (byte 2) so the new life
    /// can read it, and it clears `FD_CLOEXEC` on the channel and the config pipe so they
    /// survive the exec (the new life finds them through the same variables).
    pub fn prepare_reexec(&mut self) -> io::Result<()> {
        if self.config.is_some() {
            self.state.request_config();
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        // Bounded by the deadline: the request must be out before the exec.
        while {
            self.flush(Instant::now())?;
            !self.pending.is_empty()
        } {
            if Instant::now() >= deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
            std::thread::yield_now();
        }
        keep_across_exec(self.channel.as_fd())?;
        if let Some(c) = &self.config {
            keep_across_exec(c.as_fd())?;
        }
        Ok(())
    }
}

/// Clears `FD_CLOEXEC`, so `fd` survives an exec.
pub fn keep_across_exec(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::io::fcntl_getfd(fd)?;
    rustix::io::fcntl_setfd(fd, flags - rustix::io::FdFlags::CLOEXEC)?;
    Ok(())
}
