//! `vassal-demo`: a tiny HTTP server that runs as a vassal under a uWSGI Emperor (the real
//! one with `--emperor-wrapper`, or ours with `--vassal-bin`), built on
//! `emperor_core::vassal`.
//!
//! Every request gets `200 OK`, `Connection: close` and the body `"{pid} {text}\n"`.
//!
//! Under an emperor (`UWSGI_EMPEROR_FD` set) it speaks the channel as a uWSGI vassal does
//! (spec `emperor.md` §1.5): byte 1 once ready (first start only), 5 when accepting, 17
//! after its first request (again after each reload), 26 every `heartbeat` seconds; on 0
//! it exits at once, on 2 after the request in progress, on 1 it re-execs itself in
//! place (same pid, same channel, same listening socket); if the channel closes it exits
//! with status 1, as uWSGI does. With a config pipe (`--ini emperor://NAME`) it reads its
//! config from `UWSGI_EMPEROR_FD_CONFIG`.
//!
//! ```text
//! vassal-demo --http-socket 127.0.0.1:8080 [--heartbeat 2] [--text hello]
//! vassal-demo --ini app.ini        # keys http-socket, heartbeat, text of [uwsgi]
//! vassal-demo --ini app.ini:zerg   # the same keys from section [zerg] (a broodlord zerg)
//! ```
//!
//! As uWSGI does, `--ini FILE:SECTION` reads section `[SECTION]` instead of `[uwsgi]`
//! (the emperor starts a broodlord zerg of `app.ini` as `--ini app.ini:zerg`), also for
//! `emperor://NAME:SECTION`; the zerg gets `UWSGI_BROODLORD_NUM` from its emperor.
//! Before an in-place reload with a config pipe it sends byte 2 and reads the pushed
//! config after the re-exec, as a uWSGI vassal does.
//!
//! Test hook (not a uWSGI option): `--sos-after-ms N` (ini key `sos-after-ms`) sends one
//! SOS (byte 30, a broodlord reinforcement request) N ms after start, standing in for
//! uWSGI's `--vassal-sos`, whose trigger (all workers busy) this server cannot reach.
//!
//! The listening socket is, in order: fd 0 when it is a listening socket (on-demand
//! vassals), the one kept across a reload, `--http-socket`; with none it runs idle (a
//! minimal vassal for supervision benchmarks).
#![allow(clippy::print_stderr, reason = "a program: log lines on stderr")]
#![allow(clippy::disallowed_methods, reason = "a program: it reads the clock for heartbeats")]

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use emperor_core::proto::FromVassal;
use emperor_core::vassal::{Command as EmperorCommand, VassalChannel};
use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};
use zerg_fdpass::{ListenAddr, Listener, StdListener, inherited};

const LISTENER: Token = Token(0);
const CHANNEL: Token = Token(1);
const CONFIG: Token = Token(2);
const KEEP_ENV: &str = "VASSAL_DEMO_LISTEN_FD";
const RELOADED_ENV: &str = "VASSAL_DEMO_RELOADED";

#[derive(Debug, Default)]
struct Settings {
    http_socket: Option<String>,
    heartbeat: Option<u64>,
    text: Option<String>,
    sos_after_ms: Option<u64>,
}

impl Settings {
    /// The keys of section `[section]` (uWSGI's is `uwsgi`).
    fn from_ini(text: &str, section: &str) -> Self {
        let mut s = Self::default();
        let header = format!("[{section}]");
        let mut in_section = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_section = line == header;
                continue;
            }
            if !in_section || line.starts_with(['#', ';']) {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else { continue };
            let v = v.trim().to_owned();
            match k.trim() {
                "http-socket" => s.http_socket = Some(v),
                "heartbeat" => s.heartbeat = v.parse().ok(),
                "text" => s.text = Some(v),
                "sos-after-ms" => s.sos_after_ms = v.parse().ok(),
                _ => {}
            }
        }
        s
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("vassal-demo: {message}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let mut settings = Settings::default();
    let mut ini: Option<String> = None;
    let mut it = args.iter().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned();
        match arg.as_str() {
            "--http-socket" => settings.http_socket = value(),
            "--heartbeat" => settings.heartbeat = value().and_then(|v| v.parse().ok()),
            "--text" => settings.text = value(),
            "--sos-after-ms" => settings.sos_after_ms = value().and_then(|v| v.parse().ok()),
            "--ini" => ini = value(),
            other => return fail(format!("unknown option {other:?}")),
        }
    }
    let channel = match inherited::from_env("UWSGI_EMPEROR_FD") {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let config_fd = match inherited::from_env("UWSGI_EMPEROR_FD_CONFIG") {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Some(arg) = &ini {
        // `FILE:SECTION` (uWSGI's syntax; a zerg gets `NAME:zerg`).
        let (name, section) = match arg.rsplit_once(':') {
            Some((file, section)) if !section.is_empty() && !section.contains('/') => (file, section),
            _ => (arg.as_str(), "uwsgi"),
        };
        let text = if name.starts_with("emperor://") {
            match config_fd.as_ref().map(read_pushed_config) {
                Some(Ok(t)) => t,
                Some(Err(e)) => return fail(format!("config pipe: {e}")),
                None => return fail("emperor:// config without UWSGI_EMPEROR_FD_CONFIG"),
            }
        } else {
            match std::fs::read_to_string(name) {
                Ok(t) => t,
                Err(e) => return fail(format!("{name}: {e}")),
            }
        };
        let from_ini = Settings::from_ini(&text, section);
        settings.http_socket = settings.http_socket.or(from_ini.http_socket);
        settings.heartbeat = settings.heartbeat.or(from_ini.heartbeat);
        settings.text = settings.text.or(from_ini.text);
        settings.sos_after_ms = settings.sos_after_ms.or(from_ini.sos_after_ms);
    }
    match serve(settings, channel, config_fd) {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

/// Reads one pushed config (uWSGI waits at most 5 s for it).
fn read_pushed_config(fd: &OwnedFd) -> io::Result<String> {
    let mut stream = std::os::unix::net::UnixStream::from(fd.try_clone()?);
    // After an in-place reload the fd is still non-blocking (`O_NONBLOCK` belongs to the
    // open file and survives exec): the timeout needs a blocking socket.
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let len = emperor_core::proto::decode_config_header(header).map_err(io::Error::other)?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn listener(settings: &Settings) -> io::Result<Option<Listener>> {
    // On-demand: the emperor's listening socket is our stdin.
    if let Ok(fd) = io::stdin().as_fd().try_clone_to_owned()
        && let Ok(l) = Listener::from_fd(fd)
    {
        return Ok(Some(l));
    }
    if let Ok(Some(fd)) = inherited::from_env(KEEP_ENV) {
        return Listener::from_fd(fd).map(Some).map_err(|(r, _)| io::Error::other(r.to_string()));
    }
    match &settings.http_socket {
        Some(addr) => {
            let addr = ListenAddr::parse(addr).map_err(io::Error::other)?;
            Listener::bind(&addr).map(Some)
        }
        None => Ok(None),
    }
}

fn serve(settings: Settings, channel: Option<OwnedFd>, config_fd: Option<OwnedFd>) -> io::Result<ExitCode> {
    let text = settings.text.clone().unwrap_or_else(|| "hello".to_owned());
    let listener = listener(&settings)?;
    let mut poll = Poll::new()?;
    let now = Instant::now();
    let mut vassal = VassalChannel::new(now, settings.heartbeat.map(Duration::from_secs));
    let mut channel = channel.map(|fd| {
        let s = std::os::unix::net::UnixStream::from(fd);
        let _ = s.set_nonblocking(true);
        UnixStream::from_std(s)
    });
    if let Some(c) = channel.as_mut() {
        poll.registry().register(c, CHANNEL, Interest::READABLE)?;
    }
    let mut config = config_fd.map(|fd| {
        let s = std::os::unix::net::UnixStream::from(fd);
        let _ = s.set_nonblocking(true);
        UnixStream::from_std(s)
    });
    if let Some(c) = config.as_mut() {
        poll.registry().register(c, CONFIG, Interest::READABLE)?;
    }
    let (tcp, unix) = match listener.map(Listener::into_std) {
        Some(StdListener::Tcp(l)) => (Some(l), None),
        Some(StdListener::Unix(l)) => (None, Some(l)),
        None => (None, None),
    };
    let listener_fd = tcp.as_ref().map(AsFd::as_fd).or_else(|| unix.as_ref().map(AsFd::as_fd));
    let raw_listener = listener_fd.map(|fd| fd.as_raw_fd());
    if let Some(fd) = raw_listener {
        poll.registry().register(&mut mio::unix::SourceFd(&fd), LISTENER, Interest::READABLE)?;
    }
    if let Some(l) = &tcp {
        l.set_nonblocking(true)?;
    }
    if let Some(l) = &unix {
        l.set_nonblocking(true)?;
    }
    if std::env::var_os(RELOADED_ENV).is_some() {
        vassal.reloaded();
    } else {
        vassal.ready();
    }
    vassal.accepting();
    // The test hook: one SOS, once, N ms after this start.
    let mut sos_at = settings.sos_after_ms.map(|ms| now + Duration::from_millis(ms));
    let mut events = Events::with_capacity(16);
    loop {
        let now = Instant::now();
        vassal.handle_timeout(now);
        if sos_at.is_some_and(|t| now >= t) {
            sos_at = None;
            vassal.sos();
        }
        if let Some(c) = channel.as_mut() {
            while let Some(b) = vassal.poll_transmit() {
                if c.write(&[b]).is_err() {
                    return Ok(ExitCode::from(1));
                }
            }
        }
        while let Some(command) = vassal.poll_command() {
            match command {
                EmperorCommand::Stop | EmperorCommand::GracefulStop => return Ok(ExitCode::SUCCESS),
                EmperorCommand::EmperorLost => {
                    eprintln!("vassal-demo: lost connection with my emperor !!!");
                    return Ok(ExitCode::from(1));
                }
                EmperorCommand::Reload => {
                    // With a config pipe, ask for the config first (byte 2): the new life
                    // reads it (uWSGI's `uwsgi_reload` does the same before its execve).
                    if let (Some(c), Some(_)) = (channel.as_mut(), config.as_ref())
                        && write_byte(c, FromVassal::ConfigRequest.byte()).is_err()
                    {
                        return Ok(ExitCode::from(1));
                    }
                    let err = reexec(channel.as_ref(), config.as_ref(), listener_fd);
                    return Err(err);
                }
                _ => {}
            }
        }
        let deadline = [vassal.poll_timeout(), sos_at].into_iter().flatten().min();
        let wait = deadline.map(|t| t.saturating_duration_since(Instant::now()));
        match poll.poll(&mut events, wait) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        }
        for event in &events {
            match event.token() {
                CHANNEL => read_into(channel.as_mut(), |d| vassal.handle_bytes(d)),
                CONFIG => read_into(config.as_mut(), |d| vassal.handle_config_bytes(d)),
                LISTENER => {
                    for _ in 0..64 {
                        let served = match (&tcp, &unix) {
                            (Some(l), _) => l.accept().map(|(s, _)| answer(s.into(), &text)),
                            (_, Some(l)) => l.accept().map(|(s, _)| answer(s.into(), &text)),
                            _ => break,
                        };
                        match served {
                            Ok(()) => vassal.request_done(),
                            Err(_) => break,
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// Writes one byte on the (non-blocking) channel, waiting up to 1 s for room.
fn write_byte(channel: &mut UnixStream, byte: u8) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(1);
    // Bounded by the deadline; a channel with no room for one byte is practically dead.
    loop {
        match channel.write(&[byte]) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

fn read_into(stream: Option<&mut UnixStream>, mut feed: impl FnMut(&[u8])) {
    let Some(s) = stream else { return };
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        match s.read(&mut buf) {
            Ok(0) => {
                feed(&[]);
                return;
            }
            Ok(n) => feed(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                feed(&[]);
                return;
            }
        }
    }
}

/// Answers one request. The stream is driven through `std::net::TcpStream` only as a byte
/// stream with socket timeouts, which works for unix stream sockets too.
fn answer(fd: OwnedFd, text: &str) {
    let mut s = std::net::TcpStream::from(fd);
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8192];
    let mut head = Vec::new();
    // Bounded: read until the end of the head, at most 8 reads.
    for _ in 0..8 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                head.extend_from_slice(&buf[..n]);
                if head.windows(4).any(|w| w == b"\r\n\r\n") || head.len() > 65536 {
                    break;
                }
            }
        }
    }
    let body = format!("{} {text}\n", std::process::id());
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(response.as_bytes());
}

/// Re-executes this program in place (same pid), keeping the channel, config channel and
/// listening socket open: a reload as uWSGI does it.
fn reexec(
    channel: Option<&UnixStream>,
    config: Option<&UnixStream>,
    listener: Option<std::os::fd::BorrowedFd<'_>>,
) -> io::Error {
    for fd in [channel.map(AsFd::as_fd), config.map(AsFd::as_fd), listener].into_iter().flatten() {
        if let Err(e) = clear_cloexec(fd) {
            return e;
        }
    }
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.args(std::env::args_os().skip(1)).env(RELOADED_ENV, "1");
    match listener {
        Some(fd) => cmd.env(KEEP_ENV, fd.as_raw_fd().to_string()),
        None => cmd.env_remove(KEEP_ENV),
    };
    cmd.exec()
}

fn clear_cloexec(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::io::fcntl_getfd(fd)?;
    rustix::io::fcntl_setfd(fd, flags - rustix::io::FdFlags::CLOEXEC)?;
    Ok(())
}
