//! The process harness shared by the example programs' integration tests: a child in its
//! own process group whose stdout and stderr lines are collected as they arrive (with the
//! arrival time), our programs' `--events-json` lines, bounded waits, signals, SIGKILL of
//! the whole group, and a [`Scene`] that owns a test's processes and temporary directory
//! and stops everything when it is dropped.
//!
//! Every wait is bounded by the caller's limit; a failed wait panics with what was
//! awaited and the tails of the processes' output.
#![allow(
    dead_code,
    unreachable_pub,
    unused_macros,
    reason = "each test file uses a different part of the harness"
)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How often state is polled by the scene's waits.
pub const POLL: Duration = Duration::from_millis(20);
/// How often a process's own waits (an event, a stderr line) look again.
pub const LINE_POLL: Duration = Duration::from_millis(5);
/// How long a stopped process gets between SIGINT and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// A predicate for [`Proc::wait_for`]: the JSON line's `"event"` is `event`.
pub fn is(event: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["event"] == event
}

/// Polls `probe` every [`POLL`] until it gives a value; panics after `limit` with `what`,
/// the probe's last complaint and `report()`.
#[track_caller]
pub fn poll_until<T>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
    report: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(why) if Instant::now() >= deadline => {
                panic!("{what}: not within {limit:?}: {why}\n{}", report())
            }
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// `impl Deref<Target = procs::Scene>` (and `DerefMut`) for a test's own scene type that
/// wraps the generic one in its field `base`.
macro_rules! deref_to_base_scene {
    ($scene:ty) => {
        impl std::ops::Deref for $scene {
            type Target = $crate::common::procs::Scene;
            fn deref(&self) -> &Self::Target {
                &self.base
            }
        }

        impl std::ops::DerefMut for $scene {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.base
            }
        }
    };
}
#[allow(unused_imports, reason = "only the test files with their own scene type use it")]
pub(crate) use deref_to_base_scene;

// ----- output lines ----------------------------------------------------------------------

/// Lines of a child's output with their arrival time, filled by a reader thread (so a
/// line may show up a little after the process acted on it: wait for lines, never just
/// look).
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<(Instant, String)>>>, Arc<AtomicBool>);

impl Lines {
    pub fn follow(from: impl Read + Send + 'static) -> Self {
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

    /// Every writer closed the pipe: every line is in.
    pub fn closed(&self) -> bool {
        self.1.load(Ordering::Acquire)
    }

    /// Waits (at most `limit`) until every writer closed the pipe.
    pub fn wait_closed(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.closed() {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(POLL);
        }
        true
    }

    /// The lines so far with their arrival times.
    pub fn entries(&self) -> Vec<(Instant, String)> {
        self.0.lock().unwrap().clone()
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().map(|(_, l)| l.clone()).collect()
    }

    /// The lines so far, each followed by a newline.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().iter().fold(String::new(), |mut s, (_, l)| {
            s.push_str(l);
            s.push('\n');
            s
        })
    }

    pub fn count(&self, needle: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|(_, l)| l.contains(needle)).count()
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.count(needle) > 0
    }

    /// Arrival time of the first line containing `needle`.
    pub fn first(&self, needle: &str) -> Option<Instant> {
        self.0.lock().unwrap().iter().find(|(_, l)| l.contains(needle)).map(|(at, _)| *at)
    }

    /// Every line as JSON (a line that is not JSON as `{"not-json": line}`).
    pub fn json(&self) -> Vec<(Instant, Value)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(at, l)| (*at, serde_json::from_str(l).unwrap_or_else(|_| json!({ "not-json": l }))))
            .collect()
    }

    /// The lines that parse as JSON objects with `"event": event`, with their arrival.
    pub fn events(&self, event: &str) -> Vec<(Instant, Value)> {
        self.json().into_iter().filter(|(_, v)| v["event"] == event).collect()
    }
}

// ----- processes -------------------------------------------------------------------------

/// A child process in its own process group (a uWSGI master and its workers, or one of
/// our programs), with its stdout and stderr. Dropping it kills the group.
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
    /// Starts `cmd` (no stdin, stdout and stderr followed) in a process group of its own.
    pub fn spawn(label: &str, mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{label}: cannot start {cmd:?}: {e}"));
        let stdout = Lines::follow(child.stdout.take().unwrap());
        let stderr = Lines::follow(child.stderr.take().unwrap());
        Self { label: label.to_owned(), child: Mutex::new(child), exit: Mutex::new(None), stdout, stderr }
    }

    /// [`Proc::spawn`] labelled with the command line.
    pub fn command(cmd: Command) -> Self {
        Self::spawn(&format!("{cmd:?}"), cmd)
    }

    /// `bin args…`, labelled with the command line.
    pub fn start(bin: &str, args: &[String]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(args);
        Self::command(cmd)
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

    /// Waits (at most `limit`) for the process to exit; panics if it does not.
    #[track_caller]
    pub fn expect_exit(&self, limit: Duration) -> ExitStatus {
        self.wait_exit(limit).unwrap_or_else(|| panic!("{} did not exit within {limit:?}", self.label))
    }

    /// Every stdout line as JSON, so far (see [`Lines::json`]).
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout.json().into_iter().map(|(_, v)| v).collect()
    }

    /// Our programs' `--events-json` lines named `event`.
    pub fn events(&self, event: &str) -> Vec<Value> {
        self.stdout.events(event).into_iter().map(|(_, v)| v).collect()
    }

    /// Everything on stderr so far.
    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }

    /// The first stdout JSON line (from the start) matching `pred`, within `limit`; panics
    /// with the lines and stderr if the process closes its stdout first or time runs out.
    #[track_caller]
    pub fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            // Read the flag first: once closed, this scan sees every line.
            let closed = self.stdout.closed();
            let events = self.json_lines();
            if let Some(v) = events.iter().find(|v| pred(v)) {
                return v.clone();
            }
            if closed {
                panic!(
                    "{}: exited before {what}; events: {events:#?}\nstderr: {}",
                    self.label,
                    self.stderr_text()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: no {what} within {limit:?}; events: {events:#?}\nstderr: {}",
                    self.label,
                    self.stderr_text()
                );
            }
            thread::sleep(LINE_POLL);
        }
    }

    /// Waits (at most `limit`) until stderr has `needle`.
    #[track_caller]
    pub fn wait_stderr(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.stderr.contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{}: no {needle:?} on stderr within {limit:?}: {}",
                self.label,
                self.stderr_text()
            );
            thread::sleep(LINE_POLL);
        }
    }

    /// For failure messages: the state and the last `tail` lines of stderr and stdout,
    /// leaving out those containing `skip`.
    pub fn report(&self, out: &mut String, tail: usize, skip: Option<&str>) {
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
            let first = lines.len().saturating_sub(tail);
            let _ = writeln!(out, "--- {name}, last {} of {} lines:", lines.len() - first, lines.len());
            for l in lines[first..].iter().filter(|l| skip.is_none_or(|s| !l.contains(s))) {
                let _ = writeln!(out, "{l}");
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_group();
    }
}

// ----- scenes ----------------------------------------------------------------------------

/// One test's processes and temporary directory. Dropping it stops every process (SIGCONT
/// and SIGINT to all, then SIGKILL of the groups still there after [`STOP_GRACE`]), then
/// removes the directory.
pub struct Scene {
    procs: Vec<Rc<Proc>>,
    dir: tempfile::TempDir,
    /// How many lines of each output a report shows, and which lines it leaves out.
    report_tail: usize,
    report_skip: Option<&'static str>,
}

impl Scene {
    /// A scene with a fresh temporary directory, readable and traversable by everyone (a
    /// process running as another user must reach the files and sockets in it).
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { procs: Vec::new(), dir, report_tail: 40, report_skip: None }
    }

    /// Reports show the last `tail` lines of each output, without those containing `skip`.
    #[must_use]
    pub fn with_report(mut self, tail: usize, skip: Option<&'static str>) -> Self {
        self.report_tail = tail;
        self.report_skip = skip;
        self
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `name` in the scene's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The processes started so far.
    pub fn procs(&self) -> &[Rc<Proc>] {
        &self.procs
    }

    pub fn add(&mut self, proc: Proc) -> Rc<Proc> {
        let proc = Rc::new(proc);
        self.procs.push(Rc::clone(&proc));
        proc
    }

    /// Starts `cmd` in the scene's directory.
    pub fn spawn(&mut self, label: &str, mut cmd: Command) -> Rc<Proc> {
        cmd.current_dir(self.dir.path());
        self.add(Proc::spawn(label, cmd))
    }

    /// Every process's state and output tails, for failure messages.
    pub fn report(&self) -> String {
        let mut out = String::new();
        for p in &self.procs {
            p.alive();
            p.report(&mut out, self.report_tail, self.report_skip);
        }
        out
    }

    /// Polls `probe` every [`POLL`] until it gives a value; panics after `limit` with
    /// `what`, the probe's last complaint and the report.
    #[track_caller]
    pub fn wait<T>(&self, limit: Duration, what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
        poll_until(limit, what, probe, || self.report())
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
    #[track_caller]
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
    #[track_caller]
    pub fn wait_exit(&self, proc: &Proc, limit: Duration) -> ExitStatus {
        let status = proc
            .wait_exit(limit)
            .unwrap_or_else(|| panic!("{}: still running after {limit:?}\n{}", proc.label, self.report()));
        proc.stdout.wait_closed(Duration::from_secs(2));
        proc.stderr.wait_closed(Duration::from_secs(2));
        status
    }

    /// Stops every process still running: SIGCONT (a stopped process needs it first) and
    /// SIGINT to all (uWSGI with `--die-on-term` and our programs stop on it), then SIGKILL
    /// of the groups still there after [`STOP_GRACE`].
    pub fn stop_all(&self) {
        let live: Vec<&Rc<Proc>> = self.procs.iter().filter(|p| p.alive()).collect();
        for p in &live {
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

impl Drop for Scene {
    fn drop(&mut self) {
        self.stop_all();
    }
}
