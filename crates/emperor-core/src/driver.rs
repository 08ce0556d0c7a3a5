//! The mio driver: real processes, channels, monitors and the stats server around an
//! [`Emperor`].
//!
//! * Each vassal gets a `socketpair` (`UWSGI_EMPEROR_FD`), and a second one with the
//!   config pipe (`UWSGI_EMPEROR_FD_CONFIG`); `UWSGI_RELOADS` and `NOTIFY_SOCKET` are
//!   removed and every `UWSGI_VASSAL_X=v` becomes `UWSGI_X=v` (spec §1.2, done as uWSGI
//!   intends, not as 2.0.21 does).
//! * It runs in its own process group (so a kill reaches its workers) with a
//!   parent-death signal (`setpriv --pdeathsig KILL`, which execs the vassal in place),
//!   so nothing outlives the emperor. When the leader dies, whatever is left of its group
//!   is killed before the leader is reaped (differs from uWSGI 2.0.21, which leaves
//!   orphaned workers to notice their master's death by themselves: a worker busy in a
//!   request does so only after it, and holds the listening socket the respawn must
//!   bind until then).
//! * Exits are seen through a pidfd per child (no `SIGCHLD` handler), with a `waitpid`
//!   sweep every scan period as a safety net.
//! * Monitors are scanned every `freq` and at once when their inotify fd fires.
//!
//! The loop is single threaded: the vassal's channel end is made inheritable only for the
//! spawn and closed in the emperor right after it.
#![allow(
    clippy::disallowed_methods,
    reason = "the driver is the one place that reads the clock (STYLE.md §3.5)"
)]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::UnixStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, info, warn};

use crate::EmperorConfig;
use crate::config::ConfigError;
use crate::emperor::{Action, Emperor, Event, ExitStatus, MonitorId, Spawn, VassalId};
use crate::monitor::Monitor;
use crate::stats::{StatsContext, render};

/// Driver settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DriverOptions {
    /// The vassal program (`--vassal-bin`, default `uwsgi`).
    pub vassal_bin: PathBuf,
    /// Rescan period (`--emperor-freq`, default 3 s) of monitors without a working
    /// inotify watch (unavailable, or its watch limit reached).
    pub freq: Duration,
    /// Rescan period of monitors whose inotify watch works (default 60 s): inotify makes
    /// them rescan at once on any change, so this full rescan is only the safety net for
    /// what inotify cannot see (a file changed over NFS, say). It is what keeps an idle
    /// emperor with 1,000 vassals from stat-ing 1,000 files every 3 s.
    pub safety_rescan: Duration,
    /// Stats server: `IP:PORT` (TCP) or a unix socket path (`--emperor-stats`).
    pub stats: Option<String>,
    /// Give vassals a parent-death `SIGKILL` through `setpriv` (default `true`).
    pub pdeathsig: bool,
}

impl Default for DriverOptions {
    fn default() -> Self {
        Self {
            vassal_bin: PathBuf::from("uwsgi"),
            freq: Duration::from_secs(3),
            safety_rescan: Duration::from_secs(60),
            stats: None,
            pdeathsig: true,
        }
    }
}

/// Why the driver failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// An IO error of the poll or a socket the driver cannot do without.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The emperor configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The stats address cannot be bound.
    #[error("cannot bind the stats server on {addr}: {source}")]
    Stats {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Commands for a running driver, from any thread (a signal thread, say).
#[derive(Debug, Clone)]
pub struct Control {
    flags: Arc<AtomicU8>,
    waker: Arc<Waker>,
}

const SHUTDOWN: u8 = 1;
const RELOAD: u8 = 2;
const CLEAR_BLACKLIST: u8 = 4;

impl Control {
    /// Stop every vassal gracefully, then return from `run` (SIGINT/SIGTERM).
    pub fn shutdown(&self) {
        self.raise(SHUTDOWN);
    }

    /// Reload every vassal (SIGHUP).
    pub fn reload_all(&self) {
        self.raise(RELOAD);
    }

    /// Clear the blacklist (SIGURG).
    pub fn clear_blacklist(&self) {
        self.raise(CLEAR_BLACKLIST);
    }

    fn raise(&self, flag: u8) {
        self.flags.fetch_or(flag, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Waker,
    Stats,
    Monitor(usize),
    Channel(VassalId),
    Exit(u32),
    OnDemand(VassalId),
}

#[derive(Debug)]
struct Proc {
    channel: UnixStream,
    config: Option<UnixStream>,
    token: Token,
}

#[derive(Debug)]
struct OnDemand {
    fd: OwnedFd,
    token: Token,
    path: Option<PathBuf>,
}

#[derive(Debug)]
enum StatsListener {
    Tcp(mio::net::TcpListener),
    Unix(mio::net::UnixListener, PathBuf),
}

/// A supervising emperor. See the [module docs](self).
#[derive(Debug)]
pub struct EmperorDriver {
    core: Emperor,
    monitors: Vec<Box<dyn Monitor>>,
    options: DriverOptions,
    poll: Poll,
    control: Control,
    sources: BTreeMap<Token, Source>,
    next_token: usize,
    procs: BTreeMap<VassalId, Proc>,
    exits: BTreeMap<u32, (OwnedFd, Token)>,
    on_demand: BTreeMap<VassalId, OnDemand>,
    cwd: BTreeMap<VassalId, PathBuf>,
    stats: Option<StatsListener>,
    next_scan: Vec<Instant>,
    /// Children without a pidfd (old kernels): reaped by the periodic sweep.
    unwatched: BTreeMap<u32, ()>,
    next_sweep: Instant,
    setpriv: bool,
}

impl std::fmt::Debug for dyn Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Monitor({})", self.name())
    }
}

impl EmperorDriver {
    /// An emperor over `monitors` (scanned for the first time by [`EmperorDriver::run`]).
    pub fn new(
        config: EmperorConfig,
        monitors: Vec<Box<dyn Monitor>>,
        options: DriverOptions,
    ) -> Result<Self, DriverError> {
        let core = Emperor::new(config)?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), Token(0))?);
        let control = Control { flags: Arc::new(AtomicU8::new(0)), waker };
        let mut sources = BTreeMap::from([(Token(0), Source::Waker)]);
        let mut next_token = 1;
        for (i, m) in monitors.iter().enumerate() {
            if let Some(fd) = m.event_fd() {
                let token = Token(next_token);
                next_token += 1;
                poll.registry().register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
                sources.insert(token, Source::Monitor(i));
            }
        }
        let stats = match &options.stats {
            Some(addr) => {
                let mut listener =
                    bind_stats(addr).map_err(|source| DriverError::Stats { addr: addr.clone(), source })?;
                let token = Token(next_token);
                next_token += 1;
                match &mut listener {
                    StatsListener::Tcp(l) => poll.registry().register(l, token, Interest::READABLE)?,
                    StatsListener::Unix(l, _) => poll.registry().register(l, token, Interest::READABLE)?,
                }
                sources.insert(token, Source::Stats);
                Some(listener)
            }
            None => None,
        };
        let setpriv = options.pdeathsig && which("setpriv").is_some();
        if options.pdeathsig && !setpriv {
            warn!("setpriv (util-linux) not found: vassals get no parent-death signal");
        }
        Ok(Self {
            core,
            monitors,
            options,
            poll,
            control,
            sources,
            next_token,
            procs: BTreeMap::new(),
            exits: BTreeMap::new(),
            on_demand: BTreeMap::new(),
            cwd: BTreeMap::new(),
            stats,
            next_scan: Vec::new(),
            unwatched: BTreeMap::new(),
            next_sweep: Instant::now(),
            setpriv,
        })
    }

    /// A handle to stop or reload from another thread.
    #[must_use]
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// The core.
    #[must_use]
    pub fn core(&self) -> &Emperor {
        &self.core
    }

    /// The stats server's TCP address, if it is on TCP.
    #[must_use]
    pub fn stats_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.stats {
            Some(StatsListener::Tcp(l)) => l.local_addr().ok(),
            _ => None,
        }
    }

    /// Runs until a shutdown completes, calling `on_event` for every vassal event.
    pub fn run(mut self, mut on_event: impl FnMut(&Event)) -> Result<(), DriverError> {
        let mut events = Events::with_capacity(256);
        loop {
            let now = Instant::now();
            let flags = self.control.flags.swap(0, Ordering::SeqCst);
            if flags & SHUTDOWN != 0 {
                self.core.shutdown(now);
            }
            if flags & RELOAD != 0 {
                self.core.reload_all(now);
            }
            if flags & CLEAR_BLACKLIST != 0 {
                self.core.clear_blacklist();
            }
            self.scan_due(now);
            if now >= self.next_sweep {
                self.sweep(now);
                self.next_sweep = now + self.options.freq;
            }
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.core.handle_timeout(now);
            }
            self.drain(&mut on_event);
            if self.core.is_finished() {
                return Ok(());
            }
            let next_scan = self.next_scan.iter().copied().min();
            let next_sweep = (!self.unwatched.is_empty()).then_some(self.next_sweep);
            let deadline = [self.core.poll_timeout(), next_scan, next_sweep].into_iter().flatten().min();
            let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match self.poll.poll(&mut events, wait) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => r?,
            }
            for event in &events {
                let Some(&source) = self.sources.get(&event.token()) else { continue };
                self.ready(source, Instant::now());
                self.drain(&mut on_event);
            }
        }
    }

    fn ready(&mut self, source: Source, now: Instant) {
        match source {
            Source::Waker => {}
            Source::Stats => self.serve_stats(now),
            Source::Monitor(i) => {
                if self.monitors.get_mut(i).is_some_and(|m| m.handle_readable()) {
                    self.scan_one(now, i);
                }
            }
            Source::Channel(id) => self.read_channel(now, id),
            Source::Exit(pid) => self.reap(now, pid),
            Source::OnDemand(id) => {
                if let Some(od) = self.on_demand.get(&id) {
                    let _ = self.poll.registry().deregister(&mut SourceFd(&od.fd.as_raw_fd()));
                    self.sources.remove(&od.token);
                }
                self.core.handle_connection(now, id);
            }
        }
    }

    /// Rescans every monitor whose period is over: `freq` without a working inotify
    /// watch, `safety_rescan` with one.
    fn scan_due(&mut self, now: Instant) {
        self.next_scan.resize(self.monitors.len(), now);
        for i in 0..self.monitors.len() {
            if self.next_scan[i] <= now {
                self.scan_one(now, i);
                let watching = self.monitors[i].is_watching();
                let period = if watching {
                    self.options.safety_rescan.max(self.options.freq)
                } else {
                    self.options.freq
                };
                self.next_scan[i] = now + period;
            }
        }
    }

    fn scan_one(&mut self, now: Instant, i: usize) {
        let Some(m) = self.monitors.get_mut(i) else { return };
        match m.scan() {
            Ok(reports) => {
                let monitor = MonitorId(u32::try_from(i).unwrap_or(u32::MAX));
                self.core.handle_scan(now, monitor, reports);
            }
            // A failed scan says nothing about the vassals: keep them (no mass destroy).
            Err(e) => warn!("monitor {}: scan failed: {e}", m.name()),
        }
    }

    /// Reaps the children that have no pidfd (a pidfd reports every exit by itself).
    fn sweep(&mut self, now: Instant) {
        let pids: Vec<u32> = self.unwatched.keys().copied().collect();
        for pid in pids {
            self.reap(now, pid);
        }
    }

    fn reap(&mut self, now: Instant, pid: u32) {
        use rustix::process::{Pid, Signal, WaitId, WaitIdOptions, kill_process_group, waitid};
        let Some(rpid) = Pid::from_raw(i32::try_from(pid).unwrap_or(0)) else { return };
        // While the leader is an unreaped zombie its pid, and so its group id, cannot be
        // reused: kill what is left of the group now. A uWSGI worker busy in a request
        // when its master is killed only notices after the request, and until then holds
        // the listening socket that the respawn must bind.
        let peek = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        if matches!(waitid(WaitId::Pid(rpid), peek), Ok(Some(_))) {
            let _ = kill_process_group(rpid, Signal::KILL);
        }
        let status = match rustix::process::waitpid(Some(rpid), rustix::process::WaitOptions::NOHANG) {
            Ok(Some((_, status))) => {
                ExitStatus { code: status.exit_status(), signal: status.terminating_signal() }
            }
            Ok(None) => return,
            // ECHILD: already reaped elsewhere; report it as gone.
            Err(_) => ExitStatus { code: None, signal: None },
        };
        self.unwatched.remove(&pid);
        if let Some((fd, token)) = self.exits.remove(&pid) {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd.as_raw_fd()));
            self.sources.remove(&token);
        }
        self.core.handle_exit(now, pid, status);
    }

    fn read_channel(&mut self, now: Instant, id: VassalId) {
        let mut buf = [0u8; 256];
        // Bounded: a vassal writes single bytes; stop after a batch and come back.
        for _ in 0..64 {
            let Some(p) = self.procs.get_mut(&id) else { return };
            match p.channel.read(&mut buf) {
                Ok(0) => {
                    self.close_channels(id);
                    self.core.handle_eof(now, id);
                    return;
                }
                Ok(n) => {
                    for &b in &buf[..n] {
                        self.core.handle_byte(now, id, b);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close_channels(id);
                    self.core.handle_eof(now, id);
                    return;
                }
            }
        }
    }

    fn drain(&mut self, on_event: &mut impl FnMut(&Event)) {
        // Bounded by what the core queued; each action queues at most a few more.
        for _ in 0..100_000 {
            let Some(action) = self.core.poll_action() else { break };
            self.execute(Instant::now(), action);
        }
        while let Some(event) = self.core.poll_event() {
            on_event(&event);
        }
    }

    fn token(&mut self, source: Source) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.sources.insert(token, source);
        token
    }

    fn execute(&mut self, now: Instant, action: Action) {
        match action {
            Action::Spawn(spawn) => {
                let id = spawn.id;
                match self.spawn(&spawn) {
                    Ok(pid) => self.core.handle_spawned(now, id, pid),
                    Err(e) => {
                        warn!("vassal {}: spawn failed: {e}", spawn.name);
                        self.close_channels(id);
                        self.core.handle_spawn_failed(now, id);
                    }
                }
            }
            Action::Write { id, message } => {
                let failed = match self.procs.get_mut(&id) {
                    Some(p) => p.channel.write(&[message.byte()]).is_err(),
                    None => false,
                };
                if failed {
                    self.close_channels(id);
                    self.core.handle_eof(now, id);
                }
            }
            Action::PushConfig { id, blob } => {
                if let Some(stream) = self.procs.get_mut(&id).and_then(|p| p.config.as_mut())
                    && let Err(e) = stream.write_all(&blob)
                {
                    warn!("config push failed: {e}");
                }
            }
            Action::Kill { pid, .. } => {
                if let Some(p) = rustix::process::Pid::from_raw(i32::try_from(pid).unwrap_or(0)) {
                    // The whole group: the vassal's workers go too.
                    if rustix::process::kill_process_group(p, rustix::process::Signal::KILL).is_err() {
                        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
                    }
                }
            }
            Action::BindOnDemand { id, socket } => match bind_on_demand(&socket) {
                Ok((fd, path)) => {
                    let token = self.token(Source::OnDemand(id));
                    if self
                        .poll
                        .registry()
                        .register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)
                        .is_ok()
                    {
                        self.on_demand.insert(id, OnDemand { fd, token, path });
                    } else {
                        self.core.handle_bind_failed(now, id);
                    }
                }
                Err(e) => {
                    warn!("on-demand socket {socket}: {e}");
                    self.core.handle_bind_failed(now, id);
                }
            },
            Action::WatchOnDemand { id } => {
                let token = self.token(Source::OnDemand(id));
                if let Some(od) = self.on_demand.get_mut(&id) {
                    od.token = token;
                    let _ = self.poll.registry().register(
                        &mut SourceFd(&od.fd.as_raw_fd()),
                        token,
                        Interest::READABLE,
                    );
                }
            }
            Action::CloseChannels { id } => self.close_channels(id),
            Action::Forget { id } => {
                self.close_channels(id);
                self.cwd.remove(&id);
                if let Some(od) = self.on_demand.remove(&id) {
                    let _ = self.poll.registry().deregister(&mut SourceFd(&od.fd.as_raw_fd()));
                    self.sources.remove(&od.token);
                    if let Some(path) = od.path {
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
        }
    }

    fn close_channels(&mut self, id: VassalId) {
        if let Some(mut p) = self.procs.remove(&id) {
            let _ = self.poll.registry().deregister(&mut p.channel);
            self.sources.remove(&p.token);
        }
    }

    fn spawn(&mut self, spawn: &Spawn) -> io::Result<u32> {
        let (ours, theirs) = StdUnixStream::pair()?;
        let config_pair = match &spawn.config_blob {
            Some(_) => Some(StdUnixStream::pair()?),
            None => None,
        };
        let mut cmd = if self.setpriv {
            let mut c = Command::new("setpriv");
            c.arg("--pdeathsig").arg("KILL").arg("--").arg(&self.options.vassal_bin);
            c
        } else {
            Command::new(&self.options.vassal_bin)
        };
        cmd.args(&spawn.args);
        for (k, v) in std::env::vars() {
            if let Some(rest) = k.strip_prefix("UWSGI_VASSAL_") {
                cmd.env(format!("UWSGI_{rest}"), v).env_remove(&k);
            }
        }
        cmd.env_remove("UWSGI_RELOADS").env_remove("NOTIFY_SOCKET");
        cmd.env("UWSGI_EMPEROR_FD", theirs.as_raw_fd().to_string());
        if let Some((_, theirs_config)) = &config_pair {
            cmd.env("UWSGI_EMPEROR_FD_CONFIG", theirs_config.as_raw_fd().to_string());
        }
        for (k, v) in &spawn.env {
            cmd.env(k, v);
        }
        let monitor_cwd = self
            .core
            .vassal(spawn.id)
            .and_then(|v| self.monitors.get(v.monitor.0 as usize))
            .and_then(|m| m.vassal_cwd().map(PathBuf::from));
        if let Some(dir) = monitor_cwd {
            cmd.current_dir(&dir);
            self.cwd.insert(spawn.id, dir);
        }
        cmd.process_group(0);
        if let Some((uid, gid)) = spawn.credentials {
            cmd.uid(uid).gid(gid);
        }
        let stdin = match (spawn.on_demand, self.on_demand.get(&spawn.id)) {
            (true, Some(od)) => Stdio::from(od.fd.try_clone()?),
            _ => Stdio::null(),
        };
        cmd.stdin(stdin);
        // The vassal ends must survive exec: inheritable for this spawn only (single
        // threaded loop), closed here right after.
        set_inheritable(theirs.as_fd(), true)?;
        if let Some((_, t)) = &config_pair {
            set_inheritable(t.as_fd(), true)?;
        }
        let child = cmd.spawn();
        drop(theirs);
        let child = child?;
        let pid = child.id();
        drop(child);
        ours.set_nonblocking(true)?;
        let mut channel = UnixStream::from_std(ours);
        let token = self.token(Source::Channel(spawn.id));
        self.poll.registry().register(&mut channel, token, Interest::READABLE)?;
        let config = match (config_pair, &spawn.config_blob) {
            (Some((ours_config, theirs_config)), Some(blob)) => {
                drop(theirs_config);
                let mut s = ours_config;
                // Small (<= 64 KiB + 4) and the socket is fresh: a blocking write is quick.
                s.write_all(blob)?;
                s.set_nonblocking(true)?;
                Some(UnixStream::from_std(s))
            }
            _ => None,
        };
        self.procs.insert(spawn.id, Proc { channel, config, token });
        match rustix::process::Pid::from_raw(i32::try_from(pid).unwrap_or(0))
            .map(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
        {
            Some(Ok(fd)) => {
                let token = self.token(Source::Exit(pid));
                self.poll.registry().register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
                self.exits.insert(pid, (fd, token));
            }
            other => {
                debug!("pidfd_open({pid}) unavailable ({other:?}): exits are seen by the periodic sweep");
                self.unwatched.insert(pid, ());
            }
        }
        info!(vassal = %spawn.name, pid, "spawned {:?} {}", self.options.vassal_bin, spawn.args.join(" "));
        Ok(pid)
    }

    fn serve_stats(&mut self, now: Instant) {
        let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let ctx = StatsContext {
            version: format!("emperor-core {}", env!("CARGO_PKG_VERSION")),
            pid: std::process::id(),
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            cwd: std::env::current_dir().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
            monitors: self.monitors.iter().map(|m| m.name().to_owned()).collect(),
            now,
            unix_now,
        };
        // Bounded: accept what is queued now.
        for _ in 0..64 {
            let stream: io::Result<OwnedFd> = match &self.stats {
                Some(StatsListener::Tcp(l)) => {
                    l.accept().map(|(s, _)| OwnedFd::from(std::net::TcpStream::from(OwnedFd::from(s))))
                }
                Some(StatsListener::Unix(l, _)) => l.accept().map(|(s, _)| OwnedFd::from(s)),
                None => return,
            };
            let Ok(fd) = stream else { return };
            let json = render(&self.core, &ctx);
            // A blocking write with a timeout, as uWSGI (its is 4 s per chunk).
            let mut s = std::net::TcpStream::from(fd);
            let _ = s.set_nonblocking(false);
            let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(json.as_bytes());
        }
    }
}

impl Drop for EmperorDriver {
    fn drop(&mut self) {
        if let Some(StatsListener::Unix(_, path)) = &self.stats {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn set_inheritable(fd: std::os::fd::BorrowedFd<'_>, inheritable: bool) -> io::Result<()> {
    let flags = if inheritable { rustix::io::FdFlags::empty() } else { rustix::io::FdFlags::CLOEXEC };
    rustix::io::fcntl_setfd(fd, flags)?;
    Ok(())
}

fn bind_stats(addr: &str) -> io::Result<StatsListener> {
    if addr.contains(':') {
        let sa: std::net::SocketAddr = addr
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{addr:?} is not IP:PORT")))?;
        Ok(StatsListener::Tcp(mio::net::TcpListener::bind(sa)?))
    } else {
        let path = PathBuf::from(addr);
        let _ = std::fs::remove_file(&path);
        let l = StdUnixListener::bind(&path)?;
        l.set_nonblocking(true)?;
        Ok(StatsListener::Unix(mio::net::UnixListener::from_std(l), path))
    }
}

/// Binds an on-demand socket as uWSGI does (spec §2.11): `IP:PORT` is TCP (empty host =
/// all interfaces), anything else a unix path (stale file removed, mode 0666).
fn bind_on_demand(socket: &str) -> io::Result<(OwnedFd, Option<PathBuf>)> {
    if let Some((host, port)) = socket.rsplit_once(':') {
        let host =
            if host.is_empty() { "0.0.0.0" } else { host.trim_start_matches('[').trim_end_matches(']') };
        let ip: std::net::IpAddr = host
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{socket:?}: bad host")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{socket:?}: bad port")))?;
        let l = std::net::TcpListener::bind((ip, port))?;
        l.set_nonblocking(true)?;
        return Ok((OwnedFd::from(l), None));
    }
    let path = PathBuf::from(socket);
    if std::fs::symlink_metadata(&path)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
    {
        std::fs::remove_file(&path)?;
    }
    let l = StdUnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    l.set_nonblocking(true)?;
    Ok((OwnedFd::from(l), Some(path)))
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}
