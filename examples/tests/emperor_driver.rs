//! `emperor_core::driver::EmperorDriver` driven directly (in a thread of the test process)
//! over a `dir://` monitor, with our `vassal-demo` as the vassal program: what the
//! interop tests cannot see from outside or need a cooperative vassal for.
//!
//! | test | checks |
//! |---|---|
//! | `the_stats_server_serves_uwsgi_s_layout_over_tcp` | stats on `127.0.0.1:0`: the document's skeleton (keys, order, tabs, line breaks) equals the 2.0.21 capture's with two vassals; its values (pid, monitor, ids in order, pids, ready/accepting, loyal after a request); after an unloyal death the blacklist entry has uWSGI's keys in order and `throttle_level` 1000 |
//! | `crash_respawns_are_throttled_by_step_up_to_the_cap` | throttle 400 ms, cap 1200 ms: four SIGKILLs before loyalty wait 400, 800, 1200, 1200 ms (events' delays exact, observed gaps within +500 ms), stats `attempt` 3, `throttle_level` 1200; a request (loyal) clears the blacklist: the next crash respawns at once, the one after is throttled 400 ms again (a respawned process must earn loyalty again) |
//! | `tyrant_mode_refuses_root_configs_and_runs_vassals_as_their_owner` | `root.ini` (root's) refused, never spawned; `user.ini` chowned to 1001:1001 runs with real/effective/saved uid and gid 1001 and no groups (`/proc/PID/status`) and serves; chown to 1002:1002 stops it and starts it again as 1002; chown to root stops it for good |
//! | `broodlord_spawns_zergs_on_sos_up_to_the_limit` | `--emperor-broodlord 2`, vassal-demo's `sos-after-ms` hook: each SOS spawns `NAME:zerg` (argv `--ini NAME:zerg`, `UWSGI_BROODLORD_NUM` 1 then 2) serving its `[zerg]` section; a third SOS spawns nothing; removing the config stops the base and both zergs |
//! | `a_config_pipe_reload_of_vassal_demo_serves_the_new_config` | forced config pipe: vassal-demo gets `emperor://NAME`, and after each edit + later mtime the same process serves the new text (it sends byte 2 before re-exec; the driver pushes then) |
//!
//! Every test has its own temporary directory and free ports; every wait is bounded; the
//! driver is shut down when the test ends (its vassals are stopped; vassal-demo also dies
//! with the driver thread by its parent-death signal). A failing test prints the driver's
//! events (vassal-demo's own lines are in the test's stderr).
//!
//! Runtime: 1–6 s per test, about 10 s for the file on 2 CPUs.

// Tests drive real processes: they bound their waits with the clock and short sleeps.
#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the clock and short sleeps")]
#![allow(clippy::unwrap_used, clippy::print_stderr, reason = "test code: a failed unwrap is a failed test")]

mod common;
mod emperor_support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use emperor_core::driver::{Control, DriverOptions, EmperorDriver};
use emperor_core::emperor::Refusal;
use emperor_core::monitor::{self, ScanOptions};
use emperor_core::{EmperorConfig, Event, EventKind};
use emperor_support::{
    POLL, ProcId, Scene, VASSAL_DEMO, WAIT, cmdline, environ, free_port, http_get, keys_at, local,
    parse_body, signal_pid, skeleton, stats, stats_raw, stats_vector, status_field, write_config,
};

/// An `EmperorDriver` running in a thread, its events recorded with their arrival time.
struct Driven {
    control: Control,
    events: Arc<Mutex<Vec<(Instant, Event)>>>,
    stats: Option<SocketAddr>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Driven {
    /// A driver over `dir` with vassal-demo as the vassal program; stats on
    /// `127.0.0.1:0` when `with_stats`.
    fn start(dir: &Path, config: EmperorConfig, scan: ScanOptions, with_stats: bool) -> Self {
        let (tx, rx) = mpsc::channel();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let uri = format!("dir://{}", dir.display());
        let thread = thread::spawn(move || {
            let monitor = monitor::from_uri(&uri, scan).map_err(|e| e.to_string())?;
            let mut options = DriverOptions::default();
            options.vassal_bin = VASSAL_DEMO.into();
            options.stats = with_stats.then(|| "127.0.0.1:0".to_owned());
            // The driver is built here: monitors are not Send.
            let driver = EmperorDriver::new(config, vec![monitor], options).map_err(|e| e.to_string())?;
            tx.send((driver.control(), driver.stats_addr())).map_err(|e| e.to_string())?;
            driver
                .run(|event| sink.lock().unwrap().push((Instant::now(), event.clone())))
                .map_err(|e| e.to_string())
        });
        let (control, stats) = match rx.recv_timeout(WAIT) {
            Ok(started) => started,
            Err(e) => panic!("the driver did not start ({e}): {:?}", thread.join()),
        };
        assert_eq!(stats.is_some(), with_stats, "stats address");
        Self { control, events, stats, thread: Some(thread) }
    }

    fn events(&self) -> Vec<(Instant, Event)> {
        self.events.lock().unwrap().clone()
    }

    fn report(&self) -> String {
        let mut out = String::from("driver events:\n");
        let events = self.events();
        let t0 = events.first().map(|(at, _)| *at);
        for (at, e) in &events {
            let ms = t0.map_or(0, |t| at.saturating_duration_since(t).as_millis());
            let _ = writeln!(out, "  +{ms} ms {} {:?} pid {:?}", e.vassal, e.kind, e.pid);
        }
        out
    }

    #[track_caller]
    fn check(&self, ok: bool, message: impl FnOnce() -> String) {
        assert!(ok, "{}\n{}", message(), self.report());
    }

    /// Polls `probe` until it gives a value; panics after `limit` with the events.
    #[track_caller]
    fn wait<T>(&self, limit: Duration, what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
        common::procs::poll_until(limit, what, probe, || self.report())
    }

    /// The first event of `vassal` whose kind is named `kind`, from index `from` on.
    #[track_caller]
    fn wait_event(&self, from: usize, vassal: &str, kind: &str) -> (usize, Instant, Event) {
        self.wait(WAIT, &format!("event {kind} of {vassal} (from #{from})"), || {
            let events = self.events();
            let found = events
                .into_iter()
                .enumerate()
                .skip(from)
                .find(|(_, (_, e))| e.vassal == vassal && e.kind.name() == kind);
            found.map(|(i, (at, e))| (i, at, e)).ok_or_else(|| "not yet".to_owned())
        })
    }

    fn count(&self, vassal: &str, kind: &str) -> usize {
        self.events().iter().filter(|(_, e)| e.vassal == vassal && e.kind.name() == kind).count()
    }

    /// The stats document (raw, parsed).
    #[track_caller]
    fn stats(&self) -> (String, serde_json::Value) {
        let addr = self.stats.unwrap();
        let raw = stats_raw(addr).unwrap_or_else(|e| panic!("stats: {e}\n{}", self.report()));
        let doc = stats(addr).unwrap_or_else(|e| panic!("stats: {e}\n{}", self.report()));
        (raw, doc)
    }

    /// `GET /` on `port`: `(pid, text)`.
    #[track_caller]
    fn get(&self, port: u16) -> (u32, String) {
        let body =
            http_get(local(port), "/").unwrap_or_else(|e| panic!("GET on {port}: {e}\n{}", self.report()));
        parse_body(&body).unwrap_or_else(|e| panic!("{e}\n{}", self.report()))
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        self.control.shutdown();
        let Some(thread) = self.thread.take() else { return };
        // Bounded: vassal-demo stops at once; the mercy (set to 3 s) kills any other.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !thread.is_finished() && Instant::now() < deadline {
            thread::sleep(POLL);
        }
        if thread.is_finished() {
            let result = thread.join();
            if !thread::panicking() {
                assert!(matches!(result, Ok(Ok(()))), "the driver ended with {result:?}");
            }
        } else if !thread::panicking() {
            panic!("the driver did not finish its shutdown in 10 s\n{}", self.report());
        }
    }
}

fn config() -> EmperorConfig {
    let mut c = EmperorConfig::default();
    c.mercy = Duration::from_secs(3);
    c
}

fn demo_ini(port: u16, text: &str) -> String {
    format!("[uwsgi]\nhttp-socket = 127.0.0.1:{port}\ntext = {text}\n")
}

#[test]
fn the_stats_server_serves_uwsgi_s_layout_over_tcp() {
    let scene = Scene::new("emperor-driver-stats-");
    let vassals = scene.subdir("vassals");
    let ports = [free_port(), free_port()];
    write_config(&vassals.join("alpha.ini"), &demo_ini(ports[0], "alpha"));
    write_config(&vassals.join("beta.ini"), &demo_ini(ports[1], "beta"));
    let d = Driven::start(&vassals, config(), ScanOptions::default(), true);
    let mut pids = Vec::new();
    for name in ["alpha.ini", "beta.ini"] {
        let (i, _, spawned) = d.wait_event(0, name, "spawned");
        d.wait_event(i, name, "accepting");
        pids.push(spawned.pid.unwrap());
    }

    let (raw, doc) = d.stats();
    let vector = stats_vector();
    d.check(skeleton(&raw) == skeleton(&vector), || {
        format!("layout differs from the 2.0.21 capture:\n{raw}\n--- capture:\n{vector}")
    });
    let dir = std::fs::canonicalize(&vassals).unwrap().display().to_string();
    d.check(doc["pid"] == std::process::id() && doc["emperor"] == serde_json::json!([dir]), || {
        doc.to_string()
    });
    d.check(doc["version"].as_str().is_some_and(|v| v.starts_with("emperor-core")), || doc.to_string());
    d.check(doc["emperor_tyrant"] == 0 && doc["throttle_level"] == 0, || doc.to_string());
    for (k, (name, pid)) in ["alpha.ini", "beta.ini"].iter().zip(&pids).enumerate() {
        let v = &doc["vassals"][k];
        d.check(v["id"] == *name && v["pid"] == *pid && v["monitor"] == dir.as_str(), || v.to_string());
        d.check(v["ready"] == 1 && v["accepting"] == 1 && v["loyal"] == 0 && v["zerg"] == 0, || {
            v.to_string()
        });
        d.check(v["on_demand"] == "" && v["respawns"] == 0 && v["cursed"] == 0, || v.to_string());
    }

    // A request makes alpha loyal; an unloyal death blacklists beta.
    d.check(d.get(ports[0]) == (pids[0], "alpha".to_owned()), || "alpha serves".into());
    d.wait_event(0, "alpha.ini", "loyal");
    signal_pid(pids[1], "-KILL");
    d.wait_event(0, "beta.ini", "throttled");
    let (raw, doc) = d.stats();
    d.check(doc["vassals"][0]["loyal"] == 1, || doc.to_string());
    let blacklist = &doc["blacklist"][0];
    d.check(blacklist["id"] == "beta.ini" && blacklist["throttle_level"] == 1000, || doc.to_string());
    d.check(blacklist["attempt"] == 0 && blacklist["first_attempt"] == blacklist["last_attempt"], || {
        doc.to_string()
    });
    let listed = &raw[raw.find("\"blacklist\":[").unwrap()..];
    let keys = keys_at(listed, 3);
    d.check(keys == ["id", "throttle_level", "attempt", "first_attempt", "last_attempt"], || raw.clone());
    d.wait_event(0, "beta.ini", "respawned");
}

#[test]
fn crash_respawns_are_throttled_by_step_up_to_the_cap() {
    let scene = Scene::new("emperor-driver-throttle-");
    let vassals = scene.subdir("vassals");
    let port = free_port();
    write_config(&vassals.join("t.ini"), &demo_ini(port, "t"));
    let mut c = config();
    c.throttle = Duration::from_millis(400);
    c.max_throttle = Duration::from_millis(1200);
    let d = Driven::start(&vassals, c, ScanOptions::default(), true);
    let (mut i, _, spawned) = d.wait_event(0, "t.ini", "spawned");
    let mut pid = spawned.pid.unwrap();

    let expected = [400, 800, 1200, 1200].map(Duration::from_millis);
    for (round, want) in expected.into_iter().enumerate() {
        d.wait_event(i, "t.ini", "accepting");
        signal_pid(pid, "-KILL");
        let (j, died_at, died) = d.wait_event(i, "t.ini", "died");
        d.check(matches!(died.kind, EventKind::Died(s) if s.signal == Some(9)), || format!("{died:?}"));
        let (j, _, throttled) = d.wait_event(j, "t.ini", "throttled");
        d.check(throttled.kind == EventKind::Throttled { delay: want }, || {
            format!("round {round}: {throttled:?}")
        });
        let (j, respawned_at, respawned) = d.wait_event(j, "t.ini", "respawned");
        let gap = respawned_at.saturating_duration_since(died_at);
        d.check(gap + Duration::from_millis(5) >= want && gap <= want + Duration::from_millis(500), || {
            format!("round {round}: respawned {gap:?} after the death, throttle {want:?}")
        });
        // No request in between: a loyal vassal would clear its blacklist entry.
        pid = respawned.pid.unwrap();
        i = j;
    }
    let (_, doc) = d.stats();
    let entry = &doc["blacklist"][0];
    d.check(entry["id"] == "t.ini" && entry["attempt"] == 3 && entry["throttle_level"] == 1200, || {
        doc.to_string()
    });

    // A request makes it loyal: blacklist cleared, the next crash respawns at once.
    d.wait_event(i, "t.ini", "accepting");
    d.check(d.get(port) == (pid, "t".to_owned()), || "the last respawn serves".into());
    let (j, _, _) = d.wait_event(i, "t.ini", "loyal");
    d.wait(WAIT, "blacklist cleared", || {
        let (_, doc) = d.stats();
        if doc["blacklist"].as_array().is_some_and(Vec::is_empty) { Ok(()) } else { Err(doc.to_string()) }
    });
    signal_pid(pid, "-KILL");
    let (j, _, _) = d.wait_event(j, "t.ini", "died");
    let (j, _, respawned) = d.wait_event(j, "t.ini", "respawned");
    d.check(d.count("t.ini", "throttled") == 4, || "a loyal vassal's crash was throttled".into());
    // The respawned process has not served yet: its crash is throttled again (step 1).
    pid = respawned.pid.unwrap();
    d.wait_event(j, "t.ini", "accepting");
    signal_pid(pid, "-KILL");
    let (j, _, _) = d.wait_event(j, "t.ini", "died");
    let (_, _, throttled) = d.wait_event(j, "t.ini", "throttled");
    d.check(throttled.kind == EventKind::Throttled { delay: expected[0] }, || format!("{throttled:?}"));
}

#[test]
fn tyrant_mode_refuses_root_configs_and_runs_vassals_as_their_owner() {
    let scene = Scene::new("emperor-driver-tyrant-");
    let vassals = scene.subdir("vassals");
    let port = free_port();
    write_config(&vassals.join("root.ini"), &demo_ini(free_port(), "root"));
    let user = vassals.join("user.ini");
    write_config(&user, &demo_ini(port, "user"));
    std::os::unix::fs::chown(&user, Some(1001), Some(1001))
        .unwrap_or_else(|e| panic!("chown to 1001:1001 ({e}): the tyrant test runs as root"));
    let mut c = config();
    c.tyrant = true;
    let d = Driven::start(&vassals, c, ScanOptions::default(), true);

    let (i, _, spawned) = d.wait_event(0, "user.ini", "spawned");
    let pid = spawned.pid.unwrap();
    d.wait_event(i, "user.ini", "accepting");
    for field in ["Uid", "Gid"] {
        let ids = status_field(pid, field).unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        d.check(ids == ["1001"; 4], || format!("{field}: {ids:?}"));
    }
    let groups = status_field(pid, "Groups").unwrap_or_default();
    d.check(groups.is_empty(), || format!("supplementary groups {groups:?}"));
    d.check(d.get(port) == (pid, "user".to_owned()), || "the tyrant's vassal serves".into());
    let (_, _, refused) = d.wait_event(0, "root.ini", "refused");
    d.check(refused.kind == EventKind::Refused(Refusal::TyrantRoot), || format!("{refused:?}"));
    let (_, doc) = d.stats();
    d.check(doc["emperor_tyrant"] == 1, || doc.to_string());
    d.check(doc["vassals"].as_array().is_some_and(|v| v.len() == 1), || doc.to_string());
    d.check(doc["vassals"][0]["uid"] == 1001 && doc["vassals"][0]["gid"] == 1001, || doc.to_string());

    // A new owner: stopped, then started again as the new owner.
    let first = ProcId::of(pid).unwrap();
    std::os::unix::fs::chown(&user, Some(1002), Some(1002)).unwrap();
    let (i, _, _) = d.wait_event(i, "user.ini", "stopping");
    let (i, _, again) = d.wait_event(i, "user.ini", "spawned");
    let pid = again.pid.unwrap();
    d.wait_event(i, "user.ini", "accepting");
    d.check(!first.running(), || "the old owner's vassal still runs".into());
    let uid = status_field(pid, "Uid").unwrap_or_default();
    d.check(uid.split_whitespace().all(|u| u == "1002"), || format!("Uid {uid}"));

    // Given to root: stopped for good.
    let second = ProcId::of(pid).unwrap();
    std::os::unix::fs::chown(&user, Some(0), Some(0)).unwrap();
    let (i, _, _) = d.wait_event(i, "user.ini", "stopping");
    d.wait_event(i, "user.ini", "destroyed");
    d.wait(WAIT, "the vassal gone", || if second.running() { Err("running".into()) } else { Ok(()) });
    thread::sleep(Duration::from_millis(300));
    d.check(d.count("user.ini", "spawned") == 2 && d.count("root.ini", "spawned") == 0, || "spawns".into());
}

#[test]
fn broodlord_spawns_zergs_on_sos_up_to_the_limit() {
    let scene = Scene::new("emperor-driver-brood-");
    let vassals = scene.subdir("vassals");
    let base_port = free_port();
    let ini = vassals.join("brood.ini");
    let brood = |zerg_port: u16| {
        format!(
            "[uwsgi]\nhttp-socket = 127.0.0.1:{base_port}\ntext = base\nsos-after-ms = 200\n\n\
             [zerg]\nhttp-socket = 127.0.0.1:{zerg_port}\ntext = zerg\n"
        )
    };
    let zerg_ports = [free_port(), free_port(), free_port()];
    write_config(&ini, &brood(zerg_ports[0]));
    let mut c = config();
    c.broodlord = 2;
    let d = Driven::start(&vassals, c, ScanOptions::default(), true);
    let (mut i, _, base) = d.wait_event(0, "brood.ini", "spawned");
    let base = base.pid.unwrap();

    let mut zergs = Vec::new();
    for (n, port) in zerg_ports.into_iter().enumerate() {
        if n > 0 {
            // A new [zerg] port and a reload: the base's next life sends SOS again.
            write_config(&ini, &brood(port));
            let (j, _, _) = d.wait_event(i, "brood.ini", "reloaded");
            let (j, _, _) = d.wait_event(j, "brood.ini", "accepting");
            i = j;
        }
        if n == 2 {
            // The limit is reached: the third SOS (200 ms after accepting) spawns nothing.
            thread::sleep(Duration::from_millis(1000));
            d.check(d.count("brood.ini:zerg", "spawned") == 2, || "a third zerg".into());
            d.check(http_get(local(port), "/").is_err(), || "something serves the third zerg port".into());
            break;
        }
        let (j, _, zerg) = d.wait_event(i, "brood.ini:zerg", "spawned");
        let pid = zerg.pid.unwrap();
        d.check(cmdline(pid).ends_with(&["--ini".to_owned(), "brood.ini:zerg".to_owned()]), || {
            format!("argv {:?}", cmdline(pid))
        });
        let num = format!("UWSGI_BROODLORD_NUM={}", n + 1);
        d.check(environ(pid).contains(&num), || format!("no {num} in the zerg's environment"));
        let answer = d.wait(WAIT, "the zerg serves", || {
            let body = http_get(local(port), "/")?;
            parse_body(&body)
        });
        d.check(answer == (pid, "zerg".to_owned()), || format!("zerg answer {answer:?}"));
        zergs.push(ProcId::of(pid).unwrap());
        i = j;
    }
    d.check(d.get(base_port) == (base, "base".to_owned()), || "the base still serves".into());
    let (_, doc) = d.stats();
    let flags: Vec<_> = doc["vassals"].as_array().unwrap().iter().map(|v| v["zerg"].clone()).collect();
    d.check(flags == [0, 1, 1], || doc.to_string());

    // The base config goes: the base and its zergs stop.
    std::fs::remove_file(&ini).unwrap();
    d.wait(WAIT, "three records destroyed", || {
        let n = d.count("brood.ini", "destroyed") + d.count("brood.ini:zerg", "destroyed");
        if n == 3 { Ok(()) } else { Err(format!("{n} destroyed")) }
    });
    d.check(zergs.iter().all(|z| !z.running()), || "a zerg survived".into());
}

#[test]
fn a_config_pipe_reload_of_vassal_demo_serves_the_new_config() {
    let scene = Scene::new("emperor-driver-pipe-");
    let vassals = scene.subdir("vassals");
    let port = free_port();
    let ini = vassals.join("p.ini");
    write_config(&ini, &demo_ini(port, "one"));
    let mut scan = ScanOptions::default();
    scan.config_pipe = true;
    let d = Driven::start(&vassals, config(), scan, false);
    let (i, _, spawned) = d.wait_event(0, "p.ini", "spawned");
    let pid = spawned.pid.unwrap();
    let demo = ProcId::of(pid).unwrap();
    d.check(cmdline(pid).ends_with(&["--ini".to_owned(), "emperor://p.ini".to_owned()]), || {
        format!("argv {:?}", cmdline(pid))
    });
    let (mut i, _, _) = d.wait_event(i, "p.ini", "accepting");
    d.check(d.get(port) == (pid, "one".to_owned()), || "first config".into());
    for text in ["two", "three"] {
        write_config(&ini, &demo_ini(port, text));
        let (j, _, _) = d.wait_event(i, "p.ini", "reloaded");
        let (j, _, _) = d.wait_event(j, "p.ini", "accepting");
        i = j;
        d.check(d.get(port) == (pid, text.to_owned()), || format!("after the reload to {text}"));
        d.check(demo.running(), || "replaced, not reloaded in place".into());
    }
    d.check(d.count("p.ini", "died") == 0 && d.count("p.ini", "cursed") == 0, || "the vassal died".into());
}
