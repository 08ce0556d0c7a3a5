//! Helpers shared by `zerg_interop.rs` and `zerg_handover.rs`: child processes in their own
//! process groups with their output read as it arrives, the real uWSGI 2.0.21 (python3
//! plugin, a tiny WSGI app), our `zergpool`, `zerg-http` and `http-load`, and one-shot
//! HTTP and uwsgi requests to any listener address (TCP v4/v6, unix path, abstract).
//!
//! The processes, their output and the [`Scene`]'s waits and clean-up are the shared
//! harness in `common::procs`; every wait is bounded, and a failed wait panics with the
//! tails of every process's output.
#![allow(dead_code, unreachable_pub, reason = "each test file uses a different part of the helpers")]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use zerg_fdpass::ListenAddr;

use crate::common;
use crate::common::procs;
#[allow(unused_imports, reason = "each test file uses a different part of the helpers")]
pub use crate::common::procs::{POLL, Proc};

pub const ZERGPOOL: &str = env!("CARGO_BIN_EXE_zergpool");
pub const ZERG_HTTP: &str = env!("CARGO_BIN_EXE_zerg-http");
pub const HTTP_LOAD: &str = env!("CARGO_BIN_EXE_http-load");
pub const UWSGI_CURL: &str = env!("CARGO_BIN_EXE_uwsgi-curl");

/// The longest any single wait may take.
pub const WAIT: Duration = Duration::from_secs(15);
/// Bound on one request (connect, write, read to the end).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The WSGI app every real uWSGI serves: answers `"{pid} uwsgi\n"` (the worker's pid), the
/// same shape as `zerg-http`'s `"{pid} {text}\n"`, so `http-load`'s `by_pid` and
/// [`parse_body`] see which process answered. `Content-Length` is set so the response is
/// complete without waiting for the close.
pub const APP: &str = "import os
def application(env, start_response):
    body = ('%d uwsgi\\n' % os.getpid()).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
";

// ----- scenes ----------------------------------------------------------------------------

/// One test's processes and temporary directory (the generic [`procs::Scene`], which
/// stops every process when dropped), plus fresh abstract names and the zerg programs.
pub struct Scene {
    base: procs::Scene,
    names: AtomicUsize,
}

procs::deref_to_base_scene!(Scene);

impl Scene {
    /// A scene with a fresh temporary directory, readable and traversable by everyone
    /// (a uWSGI running as another user must reach the app and the sockets in it).
    pub fn new(prefix: &str) -> Self {
        Self { base: procs::Scene::new(prefix), names: AtomicUsize::new(0) }
    }

    /// `name` in the scene's directory, as a string.
    pub fn path(&self, name: &str) -> String {
        self.base.path(name).display().to_string()
    }

    /// A fresh abstract socket name, `@zerg-test-PID-N-tag` (nextest runs each test in its
    /// own process, so the pid keeps parallel tests apart).
    pub fn abstract_name(&self, tag: &str) -> String {
        let n = self.names.fetch_add(1, Ordering::Relaxed);
        format!("@zerg-test-{}-{n}-{tag}", std::process::id())
    }

    // ----- the real uWSGI -----

    /// Writes [`APP`] into the directory (once); its path.
    pub fn app(&self) -> String {
        let path = self.path("app.py");
        if !Path::new(&path).exists() {
            std::fs::write(&path, APP).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        path
    }

    /// A real uWSGI with `args` (plus `--die-on-term`, so SIGTERM stops it too), started
    /// in the scene's directory; waits until its stderr has `ready`.
    pub fn uwsgi(&mut self, label: &str, args: &[String], ready: &str) -> Rc<Proc> {
        let mut command = Command::new(common::require_program("uwsgi"));
        command.arg("--die-on-term").args(args);
        let proc = self.spawn(&format!("uwsgi {label}"), command);
        self.wait(WAIT, &format!("{}: {ready:?} on stderr", proc.label), || {
            if proc.stderr.contains(ready) {
                return Ok(());
            }
            self.check(proc.alive(), || format!("{} exited during startup", proc.label));
            Err("not yet".to_owned())
        });
        proc
    }

    /// A real uWSGI zerg serving [`APP`]: `--master --plugin python3 --wsgi-file APP`, one
    /// `--zerg` per item of `zergs`, plus `extra`; ready once its worker is spawned.
    pub fn uwsgi_zerg(&mut self, label: &str, zergs: &[&str], extra: &[&str]) -> Rc<Proc> {
        let args = self.zerg_args(zergs, extra);
        self.uwsgi(label, &args, "spawned uWSGI worker 1")
    }

    /// The arguments of [`Scene::uwsgi_zerg`].
    pub fn zerg_args(&self, zergs: &[&str], extra: &[&str]) -> Vec<String> {
        let mut args = strings(&["--master", "--plugin", "python3", "--wsgi-file"]);
        args.push(self.app());
        for z in zergs {
            args.extend(["--zerg".to_owned(), (*z).to_owned()]);
        }
        args.extend(strings(extra));
        args
    }

    // ----- our programs -----

    /// Our `zergpool` with `--events-json` and `args`; waits for one `listening` event per
    /// `--zergpool` option and returns them (in pool order, as printed).
    pub fn zergpool(&mut self, label: &str, args: &[&str]) -> (Rc<Proc>, Vec<Value>) {
        let pools = args.iter().filter(|a| **a == "--zergpool").count();
        let mut cmd = Command::new(ZERGPOOL);
        cmd.arg("--events-json").args(args);
        let proc = self.spawn(&format!("our zergpool {label}"), cmd);
        let events = self.wait(WAIT, &format!("{}: {pools} listening events", proc.label), || {
            let events = proc.events("listening");
            if events.len() >= pools {
                return Ok(events);
            }
            self.check(proc.alive(), || format!("{} exited during startup", proc.label));
            Err(format!("{} of {pools}", events.len()))
        });
        (proc, events)
    }

    /// Our `zerg-http` with `--events-json` and `args`; waits for its `listening` event
    /// and returns it.
    pub fn zerg_http(&mut self, label: &str, args: &[&str]) -> (Rc<Proc>, Value) {
        let mut cmd = Command::new(ZERG_HTTP);
        cmd.arg("--events-json").args(args);
        let proc = self.spawn(&format!("our zerg-http {label}"), cmd);
        let event = self.wait(WAIT, &format!("{}: its listening event", proc.label), || {
            if let Some(v) = proc.events("listening").pop() {
                return Ok(v);
            }
            self.check(proc.alive(), || format!("{} exited during startup", proc.label));
            Err("not yet".to_owned())
        });
        (proc, event)
    }

    /// Our `http-load` with `args`, in the background.
    pub fn http_load(&mut self, label: &str, args: &[&str]) -> Rc<Proc> {
        let mut cmd = Command::new(HTTP_LOAD);
        cmd.args(args);
        self.spawn(&format!("http-load {label}"), cmd)
    }

    /// Runs `http-load` with `args` to its end (bounded by `limit`) and returns its
    /// summary, whatever its exit status.
    pub fn http_load_run(&mut self, label: &str, args: &[&str], limit: Duration) -> Value {
        let load = self.http_load(label, args);
        self.wait_exit(&load, limit);
        self.load_summary(&load)
    }

    /// The JSON summary `http-load` printed.
    pub fn load_summary(&self, load: &Proc) -> Value {
        let lines = load.stdout.snapshot();
        let summary = lines.iter().rev().find_map(|l| serde_json::from_str::<Value>(l).ok());
        summary.unwrap_or_else(|| panic!("{}: no JSON summary on stdout\n{}", load.label, self.report()))
    }

    /// One GET to `addr`; panics with the report on failure. `(pid, text)` of the body.
    pub fn get(&self, addr: &ListenAddr) -> (u32, String) {
        let body = self.ok(http_get(addr), &format!("GET http on {addr}"));
        self.ok(parse_body(&body), &format!("the body from {addr}"))
    }

    /// One request over the uwsgi protocol to `addr` with our `uwsgi-curl`; `(pid, text)`.
    pub fn uwsgi_get(&self, addr: &ListenAddr) -> (u32, String) {
        let target = match addr {
            ListenAddr::Inet(a) => a.to_string(),
            ListenAddr::Unix(p) => format!("unix:{}", p.display()),
            ListenAddr::Abstract(_) => panic!("uwsgi-curl takes no abstract address ({addr})"),
        };
        let mut cmd = Command::new(UWSGI_CURL);
        cmd.args(["--body-only", "--timeout", "5", &target, "/"]);
        let out = common::run_bounded(cmd, None, Duration::from_secs(15));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        self.check(out.status.success(), || {
            format!(
                "uwsgi-curl {target} failed ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        self.ok(parse_body(&stdout), &format!("uwsgi-curl's body from {target}"))
    }
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// The addresses of a `listening` event (`addrs`), parsed.
pub fn addrs(event: &Value) -> Vec<ListenAddr> {
    event["addrs"]
        .as_array()
        .unwrap_or_else(|| panic!("no addrs in {event}"))
        .iter()
        .map(|a| {
            let s = a.as_str().unwrap_or_else(|| panic!("addr {a} is not a string"));
            s.parse().unwrap_or_else(|e| panic!("addr {s:?}: {e}"))
        })
        .collect()
}

/// The `(port auto-assigned)` addresses uWSGI logged for its `IP:0` sockets, in order.
pub fn uwsgi_auto_ports(proc: &Proc) -> Vec<ListenAddr> {
    proc.stderr
        .snapshot()
        .iter()
        .filter(|l| l.contains("(port auto-assigned)"))
        .filter_map(|l| l.split(" address ").nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

/// `"{pid} {text}\n"` → `(pid, text)`.
pub fn parse_body(body: &str) -> Result<(u32, String), String> {
    let (pid, text) = body.trim_end().split_once(' ').ok_or_else(|| format!("not `PID TEXT`: {body:?}"))?;
    let pid = pid.parse().map_err(|e| format!("not `PID TEXT` ({e}): {body:?}"))?;
    Ok((pid, text.to_owned()))
}

/// A connected stream to a listener address.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Connects to `addr` with [`REQUEST_TIMEOUT`] on the connect and every read and write.
pub fn connect(addr: &ListenAddr) -> io::Result<Stream> {
    let stream = match addr {
        ListenAddr::Inet(a) => {
            let s = TcpStream::connect_timeout(a, REQUEST_TIMEOUT)?;
            s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
            s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
            Stream::Tcp(s)
        }
        ListenAddr::Unix(p) => unix_stream(UnixStream::connect(p)?)?,
        ListenAddr::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            unix_stream(UnixStream::connect_addr(&sa)?)?
        }
    };
    Ok(stream)
}

fn unix_stream(s: UnixStream) -> io::Result<Stream> {
    s.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    Ok(Stream::Unix(s))
}

/// `GET /` over HTTP/1.1 with `Connection: close` to `addr`; the body of a 200 response.
pub fn http_get(addr: &ListenAddr) -> Result<String, String> {
    let mut s = connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: zerg.test\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("not HTTP: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!("not a 200 response: {text:?}"));
    }
    Ok(body.to_owned())
}

/// The socket address of an inet listen address.
pub fn inet(addr: &ListenAddr) -> SocketAddr {
    match addr {
        ListenAddr::Inet(a) => *a,
        other => panic!("{other} is not an inet address"),
    }
}

/// The path of a unix listen address.
pub fn unix_path(addr: &ListenAddr) -> PathBuf {
    addr.path().unwrap_or_else(|| panic!("{addr} is not a unix path")).to_path_buf()
}

/// The parent pid of `pid` (`/proc/PID/status`): tells a uWSGI worker by its master.
pub fn parent_of(pid: u32) -> Option<u32> {
    proc_status(pid, "PPid:")
}

/// The real uid of `pid` (`/proc/PID/status`).
pub fn uid_of(pid: u32) -> Option<u32> {
    proc_status(pid, "Uid:")
}

/// The first number after `key` in `/proc/PID/status`.
fn proc_status(pid: u32, key: &str) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
}
