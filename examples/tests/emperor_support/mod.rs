//! Helpers shared by `emperor_interop.rs` and `emperor_driver.rs`: child processes in their
//! own process groups with their output read line by line as it arrives (with the arrival
//! time), our `emperor`'s `--events-json` lines, process identities that survive pid reuse
//! (`/proc/PID/stat` start time), config files written atomically with a later mtime,
//! one-shot HTTP requests (TCP or unix socket), the stats JSON and its key skeleton.
//!
//! The processes, their output and the [`Scene`]'s waits and clean-up are the shared
//! harness in `common::procs`. Every wait is bounded ([`WAIT`] unless told); a dropped
//! [`Scene`] also kills what is left in the process groups of our emperor's vassals (they
//! die by their parent-death signal, but a busy worker can outlive its master). A failed
//! wait panics with the tails of every process's output.
#![allow(dead_code, unreachable_pub, reason = "each test file uses a different part of the helpers")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::common::procs;
#[allow(unused_imports, reason = "each test file uses a different part of the helpers")]
pub use crate::common::procs::{Lines, POLL, Proc, STOP_GRACE};

pub const EMPEROR: &str = env!("CARGO_BIN_EXE_emperor");
pub const VASSAL_DEMO: &str = env!("CARGO_BIN_EXE_vassal-demo");

/// The longest any single wait may take.
pub const WAIT: Duration = Duration::from_secs(15);
/// Bound on one request (connect, write, read to the end).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The WSGI app the real uWSGI vassals serve: `"{worker pid} {GREETING}\n"` (`GREETING`
/// comes from the vassal's ini, `env = GREETING=...`, so a reloaded config is visible).
/// `/sleep` first creates `$SLEEP_MARK.<pid>` and then sleeps 30 s: a worker busy in a
/// request.
pub const APP: &str = "import os, time
def application(env, start_response):
    if env.get('PATH_INFO') == '/sleep':
        open('%s.%d' % (os.environ['SLEEP_MARK'], os.getpid()), 'w').close()
        time.sleep(30)
    body = ('%d %s\\n' % (os.getpid(), os.environ.get('GREETING', '-'))).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])
    return [body]
";

// ----- events ---------------------------------------------------------------------------

/// One `--events-json` line of our emperor.
#[derive(Debug, Clone)]
pub struct Ev {
    /// When the test read it.
    pub at: Instant,
    /// The emperor's own clock (ms since its start).
    pub t_ms: u64,
    pub vassal: String,
    pub event: String,
    pub pid: Option<u32>,
    pub raw: Value,
}

impl Ev {
    fn parse(at: Instant, line: &str) -> Option<Self> {
        let raw: Value = serde_json::from_str(line).ok()?;
        Some(Self {
            at,
            t_ms: raw["t_ms"].as_u64()?,
            vassal: raw["vassal"].as_str()?.to_owned(),
            event: raw["event"].as_str()?.to_owned(),
            pid: raw["pid"].as_u64().and_then(|p| u32::try_from(p).ok()),
            raw,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid.unwrap_or_else(|| panic!("event without a pid: {}", self.raw))
    }
}

/// Our emperor's `--events-json` lines, on a [`Proc`].
pub trait EmperorEvents {
    /// Every `--events-json` line so far.
    fn vassal_events(&self) -> Vec<Ev>;
}

impl EmperorEvents for Proc {
    fn vassal_events(&self) -> Vec<Ev> {
        self.stdout.entries().iter().filter_map(|(at, l)| Ev::parse(*at, l)).collect()
    }
}

// ----- scenes ----------------------------------------------------------------------------

/// One test's processes and temporary directory (the generic [`procs::Scene`]); dropping
/// it stops the processes and what is left of our emperor's vassals, then removes the
/// directory.
pub struct Scene {
    base: procs::Scene,
}

procs::deref_to_base_scene!(Scene);

impl Scene {
    /// A scene with a fresh temporary directory, readable and traversable by everyone (a
    /// vassal running as another user must reach its config in it).
    pub fn new(prefix: &str) -> Self {
        Self { base: procs::Scene::new(prefix).with_report(60, Some("running uWSGI as root")) }
    }

    /// Creates (mode 0755) and returns the subdirectory `name`.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Writes [`APP`] into the directory (once); its path.
    pub fn app(&self) -> PathBuf {
        let path = self.path("app.py");
        if !path.exists() {
            std::fs::write(&path, APP).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        path
    }

    /// Our `emperor --events-json ARGS`.
    pub fn emperor(&mut self, args: &[&str]) -> Rc<Proc> {
        let mut cmd = Command::new(EMPEROR);
        cmd.arg("--events-json").args(args);
        self.spawn("our emperor", cmd)
    }

    /// Waits for the first event `event` of `vassal` among `proc`'s events from index
    /// `from` on; returns its index and the event.
    #[track_caller]
    pub fn wait_event(&self, proc: &Proc, from: usize, vassal: &str, event: &str) -> (usize, Ev) {
        self.wait(WAIT, &format!("{}: event {event} of {vassal} (from #{from})", proc.label), || {
            let events = proc.vassal_events();
            if let Some((i, e)) =
                events.iter().enumerate().skip(from).find(|(_, e)| e.vassal == vassal && e.event == event)
            {
                return Ok((i, e.clone()));
            }
            if !proc.alive() {
                return Err(format!("{} exited", proc.label));
            }
            Err(format!("{} events so far", events.len()))
        })
    }

    /// Waits until `proc`'s stderr has a line containing `needle`.
    #[track_caller]
    pub fn wait_log(&self, proc: &Proc, needle: &str, limit: Duration) -> Instant {
        self.wait(limit, &format!("{}: {needle:?} on stderr", proc.label), || {
            proc.stderr.first(needle).ok_or_else(|| "not yet".to_owned())
        })
    }

    /// `GET path` on `addr`: `(pid, text)` of the body; panics with the report on failure.
    #[track_caller]
    pub fn get(&self, addr: SocketAddr, path: &str) -> (u32, String) {
        let body = self.ok(http_get(addr, path), &format!("GET {path} on {addr}"));
        self.ok(parse_body(&body), &format!("the body from {addr}"))
    }

    /// Polls `GET /` on `addr` until it answers with a body whose text is `text`.
    #[track_caller]
    pub fn wait_text(&self, addr: SocketAddr, text: &str) -> u32 {
        self.wait(WAIT, &format!("{addr} serving {text:?}"), || {
            let body = http_get(addr, "/")?;
            let (pid, got) = parse_body(&body)?;
            if got == text { Ok(pid) } else { Err(format!("serves {got:?}")) }
        })
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        self.base.stop_all();
        // Our emperor's vassals lead their own process groups and die with it (parent-death
        // signal), but a worker busy in a request when its master died can outlive it:
        // once the leaders are gone, SIGKILL what is left in their groups (a group id
        // stays taken while it has members, so these are the vassals' own).
        let mut vassals: Vec<u32> =
            self.base.procs().iter().flat_map(|p| p.vassal_events()).filter_map(|e| e.pid).collect();
        vassals.sort_unstable();
        vassals.dedup();
        let deadline = Instant::now() + Duration::from_secs(1);
        while vassals.iter().any(|&p| ProcId::of(p).is_some()) && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        let orphaned: Vec<u32> = vassals.into_iter().filter(|&p| ProcId::of(p).is_none()).collect();
        if !orphaned.is_empty() {
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                if pgid(pid).is_some_and(|g| orphaned.contains(&g)) {
                    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                }
            }
        }
    }
}

// ----- /proc -----------------------------------------------------------------------------

/// A process identity that survives pid reuse: the pid and its start time (clock ticks
/// since boot, `/proc/PID/stat` field 22).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId {
    pub pid: u32,
    start: u64,
}

/// `(state, ppid, start time)` from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command is in parentheses and may contain spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    // Field 22 overall is index 19 after the state (field 3).
    let start = fields.get(19)?.parse().ok()?;
    Some((state, ppid, start))
}

impl ProcId {
    /// The running process `pid` (`None` if there is none).
    pub fn of(pid: u32) -> Option<Self> {
        let (state, _, start) = stat(pid)?;
        (!matches!(state, 'Z' | 'X')).then_some(Self { pid, start })
    }

    /// Still the same process and not a zombie.
    pub fn running(&self) -> bool {
        stat(self.pid).is_some_and(|(state, _, start)| start == self.start && !matches!(state, 'Z' | 'X'))
    }
}

/// The process group of `pid` (`/proc/PID/stat` field 5).
pub fn pgid(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text[text.rfind(')')? + 2..].split(' ').nth(2)?.parse().ok()
}

/// The parent pid of `pid`.
pub fn ppid(pid: u32) -> Option<u32> {
    stat(pid).map(|(_, ppid, _)| ppid)
}

/// The state letter of `pid` (`R`, `S`, `T` stopped, `Z` zombie…).
pub fn state(pid: u32) -> Option<char> {
    stat(pid).map(|(state, _, _)| state)
}

/// The live children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if stat(child).is_some_and(|(state, parent, _)| parent == pid && !matches!(state, 'Z' | 'X')) {
            out.push(child);
        }
    }
    out
}

/// A line of `/proc/PID/status` (`Uid`, `Gid`, …), the text after the tab.
pub fn status_field(pid: u32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_owned()))
}

/// The NUL-separated `/proc/PID/cmdline` and `/proc/PID/environ` entries.
pub fn cmdline(pid: u32) -> Vec<String> {
    nul_list(&format!("/proc/{pid}/cmdline"))
}

pub fn environ(pid: u32) -> Vec<String> {
    nul_list(&format!("/proc/{pid}/environ"))
}

fn nul_list(path: &str) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// `kill SIGNAL -- -PGID` (a uWSGI vassal's whole process group: its master is the leader).
pub fn signal_group(pgid: u32, signal: &str) {
    let status = Command::new("kill").args([signal, "--", &format!("-{pgid}")]).status().unwrap();
    assert!(status.success(), "kill {signal} -{pgid} failed");
}

pub fn signal_pid(pid: u32, signal: &str) {
    let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid} failed");
}

// ----- files -----------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1 (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A whole-second mtime strictly later than both `path`'s current one and now: uWSGI
/// (and our monitors) compare whole seconds, `st_mtime > last_mod`.
fn later_mtime(path: &Path) -> SystemTime {
    let current = std::fs::metadata(path).and_then(|m| m.modified()).map_or(0, unix_secs);
    let secs = current.max(unix_secs(SystemTime::now())) + 1;
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Writes `text` to `path` atomically (a temporary file renamed over it), with an mtime
/// later than the old file's and now: a monitor sees one change, with the whole content.
pub fn write_config(path: &Path, text: &str) {
    let mtime = later_mtime(path);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::File::options().write(true).open(&tmp).unwrap().set_modified(mtime).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `touch` with an mtime later than the current one and now (content unchanged).
pub fn touch_later(path: &Path) {
    let mtime = later_mtime(path);
    std::fs::File::options().write(true).open(path).unwrap().set_modified(mtime).unwrap();
}

/// A real uWSGI vassal ini serving [`APP`] with `GREETING`, plus `extra` lines.
pub fn uwsgi_ini(app: &Path, greeting: &str, extra: &str) -> String {
    format!(
        "[uwsgi]\nplugins = python3\nmaster = true\nprocesses = 1\nwsgi-file = {}\nenv = GREETING={greeting}\n{extra}",
        app.display()
    )
}

// ----- requests --------------------------------------------------------------------------

fn exchange(mut s: impl Read + Write, what: &str, path: &str) -> Result<String, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: emperor.test\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(|e| format!("write to {what}: {e}"))?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).map_err(|e| format!("read from {what}: {e}"))?;
    let text = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("not HTTP: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(format!("not a 200 response: {text:?}"));
    }
    Ok(body.to_owned())
}

/// `GET path` with `Connection: close` to `addr`; the body of a 200 response.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let s = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT)).map_err(|e| e.to_string())?;
    exchange(s, &addr.to_string(), path)
}

/// `GET /` over a unix socket.
pub fn http_get_unix(path: &Path) -> Result<String, String> {
    let s = UnixStream::connect(path).map_err(|e| format!("connect {}: {e}", path.display()))?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT)).map_err(|e| e.to_string())?;
    exchange(s, &path.display().to_string(), "/")
}

/// `"{pid} {text}\n"` → `(pid, text)`.
pub fn parse_body(body: &str) -> Result<(u32, String), String> {
    let (pid, text) = body.trim_end().split_once(' ').ok_or_else(|| format!("not `PID TEXT`: {body:?}"))?;
    let pid = pid.parse().map_err(|e| format!("not `PID TEXT` ({e}): {body:?}"))?;
    Ok((pid, text.to_owned()))
}

// ----- stats -----------------------------------------------------------------------------

/// The emperor stats document served on `addr` (no request: read to EOF).
pub fn stats_raw(addr: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| format!("read stats: {e}"))?;
    Ok(out)
}

/// The stats document, parsed.
pub fn stats(addr: SocketAddr) -> Result<Value, String> {
    let raw = stats_raw(addr)?;
    serde_json::from_str(&raw).map_err(|e| format!("stats JSON ({e}): {raw:?}"))
}

/// The captured 2.0.21 stats document (two vassals, empty blacklist).
pub fn stats_vector() -> String {
    let path =
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/emperor/emperor-stats-2.0.21.json.raw");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("the stats vector {path}: {e}"))
}

/// The layout of a stats document without its values: one entry per line, the leading
/// tabs plus `"key":` for keyed lines, `<item>` for list items, the line itself for
/// brackets. Equal skeletons = same keys, same order, same indentation and line breaks.
pub fn skeleton(doc: &str) -> Vec<String> {
    doc.trim_end()
        .lines()
        .map(|line| {
            let body = line.trim_start_matches('\t');
            let tabs = &line[..line.len() - body.len()];
            match body.strip_prefix('"').and_then(|rest| rest.split_once("\":")) {
                Some((key, _)) => format!("{tabs}\"{key}\":"),
                None if body.starts_with('"') => format!("{tabs}<item>"),
                None => line.to_owned(),
            }
        })
        .collect()
}

/// The keys of a JSON object in document order (serde_json's map is sorted): the
/// `"key":` lines of its skeleton at `depth` tabs, in order.
pub fn keys_at(doc: &str, depth: usize) -> Vec<String> {
    let tabs = "\t".repeat(depth);
    skeleton(doc)
        .iter()
        .filter_map(|l| {
            let key = l.strip_prefix(&tabs)?;
            (!key.starts_with('\t') && key.starts_with('"')).then(|| key.trim_matches([':', '"']).to_owned())
        })
        .collect()
}
