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

use emperor_core::link::{EmperorLink, keep_across_exec};
use emperor_core::vassal::Command as EmperorCommand;
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
    let mut link = match EmperorLink::from_env(Instant::now(), None) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    if let Some(arg) = &ini {
        // `FILE:SECTION` (uWSGI's syntax; a zerg gets `NAME:zerg`).
        let (name, section) = match arg.rsplit_once(':') {
            Some((file, section)) if !section.is_empty() && !section.contains('/') => (file, section),
            _ => (arg.as_str(), "uwsgi"),
        };
        let text = if name.starts_with("emperor://") {
            match link.as_mut().map(|l| l.read_config(Duration::from_secs(5))) {
                Some(Ok(t)) => String::from_utf8_lossy(&t).into_owned(),
                Some(Err(e)) => return fail(format!("config pipe: {e}")),
                None => return fail("emperor:// config without an emperor"),
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
    match serve(settings, link) {
        Ok(code) => code,
        Err(e) => fail(e),
    }
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

fn serve(settings: Settings, mut link: Option<EmperorLink>) -> io::Result<ExitCode> {
    let text = settings.text.clone().unwrap_or_else(|| "hello".to_owned());
    let listener = listener(&settings)?;
    let mut poll = Poll::new()?;
    let now = Instant::now();
    if let Some(l) = link.as_mut() {
        l.channel().set_heartbeat(now, settings.heartbeat.map(Duration::from_secs));
        l.register(poll.registry(), CHANNEL, CONFIG)?;
        if std::env::var_os(RELOADED_ENV).is_some() {
            l.channel().reloaded();
        } else {
            l.channel().ready();
        }
        l.channel().accepting();
    }
    let (tcp, unix) = match listener.map(Listener::into_std) {
        Some(StdListener::Tcp(l)) => (Some(l), None),
        Some(StdListener::Unix(l)) => (None, Some(l)),
        None => (None, None),
    };
    let listener_fd = tcp.as_ref().map(AsFd::as_fd).or_else(|| unix.as_ref().map(AsFd::as_fd));
    if let Some(fd) = listener_fd {
        poll.registry().register(&mut mio::unix::SourceFd(&fd.as_raw_fd()), LISTENER, Interest::READABLE)?;
    }
    if let Some(l) = &tcp {
        l.set_nonblocking(true)?;
    }
    if let Some(l) = &unix {
        l.set_nonblocking(true)?;
    }
    // The test hook: one SOS, once, N ms after this start.
    let mut sos_at = settings.sos_after_ms.map(|ms| now + Duration::from_millis(ms));
    let mut events = Events::with_capacity(16);
    loop {
        let now = Instant::now();
        if let Some(l) = link.as_mut() {
            if sos_at.is_some_and(|t| now >= t) {
                sos_at = None;
                l.channel().sos();
            }
            if l.flush(now).is_err() {
                eprintln!("vassal-demo: lost connection with my emperor !!!");
                return Ok(ExitCode::from(1));
            }
            while let Some(command) = l.channel().poll_command() {
                match command {
                    EmperorCommand::Stop | EmperorCommand::GracefulStop => return Ok(ExitCode::SUCCESS),
                    EmperorCommand::EmperorLost => {
                        eprintln!("vassal-demo: lost connection with my emperor !!!");
                        return Ok(ExitCode::from(1));
                    }
                    EmperorCommand::Reload => {
                        // In place, as a uWSGI master: ask for the config (config pipe
                        // mode), keep the channel and the listener across the exec.
                        l.prepare_reexec()?;
                        return Err(reexec(listener_fd));
                    }
                    _ => {}
                }
            }
        }
        let heartbeat = link.as_mut().and_then(|l| l.channel().poll_timeout());
        let deadline = [heartbeat, sos_at].into_iter().flatten().min();
        let wait = deadline.map(|t| t.saturating_duration_since(Instant::now()));
        match poll.poll(&mut events, wait) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        }
        for event in &events {
            match event.token() {
                CHANNEL | CONFIG => {
                    if let Some(l) = link.as_mut() {
                        l.handle_readable(event.token() == CONFIG);
                    }
                }
                LISTENER => {
                    for _ in 0..64 {
                        let served = match (&tcp, &unix) {
                            (Some(l), _) => l.accept().map(|(s, _)| answer(s.into(), &text)),
                            (_, Some(l)) => l.accept().map(|(s, _)| answer(s.into(), &text)),
                            _ => break,
                        };
                        match served {
                            Ok(()) => {
                                if let Some(l) = link.as_mut() {
                                    l.channel().request_done();
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                _ => {}
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
fn reexec(listener: Option<std::os::fd::BorrowedFd<'_>>) -> io::Error {
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.args(std::env::args_os().skip(1)).env(RELOADED_ENV, "1");
    match listener {
        Some(fd) => {
            if let Err(e) = keep_across_exec(fd) {
                return e;
            }
            cmd.env(KEEP_ENV, fd.as_raw_fd().to_string())
        }
        None => cmd.env_remove(KEEP_ENV),
    };
    cmd.exec()
}
