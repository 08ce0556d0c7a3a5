//! Helpers shared by `zerg_interop.rs` and `zerg_handover.rs`: child processes in their own
//! process groups with their output read as it arrives, the real uWSGI 2.0.21 (python3
//! plugin, a tiny WSGI app), our `zergpool`, `zerg-http` and `http-load`, and one-shot
//! HTTP and uwsgi requests to any listener address (TCP v4/v6, unix path, abstract).
//!
//! Every wait is bounded; a [`Scene`] stops every process it started when it is dropped
//! (SIGINT, then SIGKILL of the process group after [`STOP_GRACE`]) and then removes its
//! temporary directory. A failed wait panics with the tails of every process's output.
#![allow(dead_code, unreachable_pub, reason = "each test file uses a different part of the helpers")]

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use zerg_fdpass::ListenAddr;

use crate::common;

pub const ZERGPOOL: &str = env!("CARGO_BIN_EXE_zergpool");
pub const ZERG_HTTP: &str = env!("CARGO_BIN_EXE_zerg-http");
pub const HTTP_LOAD: &str = env!("CARGO_BIN_EXE_http-load");
pub const UWSGI_CURL: &str = env!("CARGO_BIN_EXE_uwsgi-curl");

/// The longest any single wait may take.
pub const WAIT: Duration = Duration::from_secs(15);
/// How often state is polled.
pub const POLL: Duration = Duration::from_millis(20);
/// How long a stopped process gets between SIGINT and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
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

// ----- processes and their output ------------------------------------------------------

/// Lines of a child's output with their arrival time, filled by a reader thread (so a
/// line may show up a little after the process acted on it: wait for lines, never just
/// look).
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<(Instant, String)>>>, Arc<AtomicBool>);

impl Lines {
    fn follow(from: impl Read + Send + 'static) -> Self {
        let lines = Self::default();
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                sink.0.lock().unwrap().push((Instant::now(), line));
            }
            sink.1.store(true, Ordering::Release);
        });
        lines
    }

    /// Waits (at most `limit`) until every writer closed the pipe: every line is in.
    pub fn wait_closed(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.1.load(Ordering::Acquire) {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL);
        }
        true
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|(_, l)| l.clone()).collect()
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|(_, l)| l.contains(needle))
    }

    /// The lines that parse as JSON objects with `"event": event`, with their arrival.
    pub fn events(&self, event: &str) -> Vec<(Instant, Value)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(at, l)| serde_json::from_str::<Value>(l).ok().map(|v| (*at, v)))
            .filter(|(_, v)| v["event"] == event)
            .collect()
    }
}

/// A child process in its own process group (a uWSGI master and its workers, or one of
/// our programs), with its stdout and stderr.
pub struct Proc {
    pub label: String,
    child: Mutex<Child>,
    /// Set once the child is reaped: from then on its pid may be reused and is never
    /// signalled again.
    exit: Mutex<Option<ExitStatus>>,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Proc {
    fn spawn(label: String, mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{label}: cannot start {cmd:?}: {e}"));
        let stdout = Lines::follow(child.stdout.take().unwrap());
        let stderr = Lines::follow(child.stderr.take().unwrap());
        Self { label, child: Mutex::new(child), exit: Mutex::new(None), stdout, stderr }
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    pub fn alive(&self) -> bool {
        let mut exit = self.exit.lock().unwrap();
        if exit.is_none() {
            *exit = self.child.lock().unwrap().try_wait().unwrap();
        }
        exit.is_none()
    }

    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.alive();
        *self.exit.lock().unwrap()
    }

    /// Sends `signal` (`-INT`, `-TERM`, …) to the process (a uWSGI master: the instance).
    pub fn signal(&self, signal: &str) {
        assert!(self.alive(), "{}: already exited, cannot send {signal}", self.label);
        let status = Command::new("kill").args([signal, &self.pid().to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {} failed", self.label);
    }

    /// SIGKILL of the whole process group, then reaps the leader. The group is signalled
    /// only while its leader is unreaped, so its id cannot belong to anyone else.
    pub fn kill_group(&self) {
        let mut exit = self.exit.lock().unwrap();
        if exit.is_some() {
            return;
        }
        let mut child = self.child.lock().unwrap();
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", child.id())]).status();
        let _ = child.kill();
        *exit = Some(child.wait().unwrap());
    }

    /// Waits (at most `limit`) for the process to exit.
    pub fn wait_exit(&self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while self.alive() {
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
        *self.exit.lock().unwrap()
    }

    /// Our programs' `--events-json` lines named `event`.
    pub fn events(&self, event: &str) -> Vec<Value> {
        self.stdout.events(event).into_iter().map(|(_, v)| v).collect()
    }

    /// For failure messages: the state and the tails of stderr and stdout.
    fn report(&self, out: &mut String) {
        let state = match *self.exit.lock().unwrap() {
            Some(status) => format!("exited: {status}"),
            None => "running".to_owned(),
        };
        let _ = writeln!(out, "=== {} (pid {}, {state})", self.label, self.pid());
        for (name, lines) in [("stderr", &self.stderr), ("stdout", &self.stdout)] {
            let lines = lines.snapshot();
            if lines.is_empty() {
                continue;
            }
            let tail = lines.len().saturating_sub(40);
            let _ = writeln!(out, "--- {name}, last {} of {} lines:", lines.len() - tail, lines.len());
            for l in &lines[tail..] {
                let _ = writeln!(out, "{l}");
            }
        }
    }
}

/// One test's processes and temporary directory. Dropping it stops every process (SIGINT
/// to all, then SIGKILL of the groups still there after [`STOP_GRACE`]), then removes the
/// directory.
pub struct Scene {
    procs: Vec<Rc<Proc>>,
    dir: tempfile::TempDir,
    names: AtomicUsize,
}

impl Scene {
    /// A scene with a fresh temporary directory, readable and traversable by everyone
    /// (a uWSGI running as another user must reach the app and the sockets in it).
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { procs: Vec::new(), dir, names: AtomicUsize::new(0) }
    }

    /// `name` in the scene's directory, as a string.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh abstract socket name, `@zerg-test-PID-N-tag` (nextest runs each test in its
    /// own process, so the pid keeps parallel tests apart).
    pub fn abstract_name(&self, tag: &str) -> String {
        let n = self.names.fetch_add(1, Ordering::Relaxed);
        format!("@zerg-test-{}-{n}-{tag}", std::process::id())
    }

    pub fn add(&mut self, proc: Proc) -> Rc<Proc> {
        let proc = Rc::new(proc);
        self.procs.push(Rc::clone(&proc));
        proc
    }

    pub fn spawn(&mut self, label: &str, mut cmd: Command) -> Rc<Proc> {
        cmd.current_dir(self.dir.path());
        self.add(Proc::spawn(label.to_owned(), cmd))
    }

    /// Every process's state, for failure messages.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for p in &self.procs {
            p.alive();
            p.report(&mut out);
        }
        out
    }

    /// Polls `probe` every [`POLL`] until it gives a value; panics after `limit` with
    /// `what`, the probe's last complaint and the report.
    pub fn wait<T>(&self, limit: Duration, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            match probe() {
                Ok(v) => return v,
                Err(why) if Instant::now() >= deadline => {
                    panic!("{what}: not within {limit:?}: {why}\n{}", self.report())
                }
                Err(_) => thread::sleep(POLL),
            }
        }
    }

    /// Panics with `message` and the report unless `ok`.
    #[track_caller]
    pub fn check(&self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            panic!("{}\n{}", message(), self.report());
        }
    }

    /// Unwraps `result`, or panics with `what`, the error and the report.
    #[track_caller]
    pub fn ok<T, E: std::fmt::Display>(&self, result: Result<T, E>, what: &str) -> T {
        result.unwrap_or_else(|e| panic!("{what}: {e}\n{}", self.report()))
    }

    /// Stops `proc` with `signal` and waits for its exit (at most [`STOP_GRACE`]).
    pub fn stop(&self, proc: &Proc, signal: &str) -> ExitStatus {
        proc.signal(signal);
        match proc.wait_exit(STOP_GRACE) {
            Some(status) => {
                proc.stdout.wait_closed(Duration::from_secs(2));
                proc.stderr.wait_closed(Duration::from_secs(2));
                status
            }
            None => panic!("{}: still running {STOP_GRACE:?} after {signal}\n{}", proc.label, self.report()),
        }
    }

    /// Waits until `proc` exits by itself; its status.
    pub fn wait_exit(&self, proc: &Proc, limit: Duration) -> ExitStatus {
        let status = proc
            .wait_exit(limit)
            .unwrap_or_else(|| panic!("{}: still running after {limit:?}\n{}", proc.label, self.report()));
        proc.stdout.wait_closed(Duration::from_secs(2));
        proc.stderr.wait_closed(Duration::from_secs(2));
        status
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

impl Drop for Scene {
    fn drop(&mut self) {
        let live: Vec<&Rc<Proc>> = self.procs.iter().filter(|p| p.alive()).collect();
        for p in &live {
            // uWSGI with --die-on-term and our programs stop on SIGINT and SIGTERM alike;
            // a stopped (SIGSTOP) process needs SIGCONT first.
            let _ = Command::new("kill").args(["-CONT", &p.pid().to_string()]).status();
            let _ = Command::new("kill").args(["-INT", &p.pid().to_string()]).status();
        }
        let deadline = Instant::now() + STOP_GRACE;
        while live.iter().any(|p| p.alive()) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        for p in live {
            p.kill_group();
        }
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
