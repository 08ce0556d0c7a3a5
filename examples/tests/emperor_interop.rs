//! Interop tests of record for the Emperor (spec `emperor.md` §6) against the real uWSGI
//! 2.0.21, on loopback: real uWSGI vassals (python3 plugin, master, one worker) under our
//! `emperor --events-json`, and our `vassal-demo` under the real uWSGI Emperor.
//!
//! | test | checks |
//! |---|---|
//! | `a_real_vassal_is_spawned_loyal_reloaded_in_place_and_destroyed` | `spawned` `ready` `accepting`; a request → `loyal`; a later mtime → `reloaded`, the same master (pid and start time) serves (through its worker, whose parent it is); edit + later mtime → the new `GREETING` is served, same master; exactly one reload per change, no death; rm → `stopping` `destroyed`, master and worker gone |
//! | `a_sigkilled_unloyal_master_is_throttled_then_respawned` | SIGKILL of the master while its worker is busy in a request (not loyal yet) → `died` (signal 9) → `throttled` (`delay_ms` ≥ 1000) → `respawned` ≥ 1 s later with a new pid that serves; the busy orphaned worker is gone at once (our driver kills the rest of the group; it would hold the socket 30 s) and the respawn binds the first time (one death) |
//! | `a_vassal_whose_heartbeats_stop_is_killed_and_respawned` | `heartbeat = 1`, `--emperor-required-heartbeat 3`: alive 4 s after `accepting` thanks to heartbeats; SIGSTOP of its process group → `heartbeat-missed` 1.5–5 s later → `died` (signal 9) → `respawned` at once (it was loyal), serving; the stopped processes are gone |
//! | `an_on_demand_vassal_starts_on_its_first_connection` | `--emperor-on-demand-directory D`, vassal with `protocol = http` and no socket: `on-demand`, `D/NAME.socket` is a socket, no process for 1 s; a request on the socket is answered by a vassal `spawned` after the connection (uWSGI: `inherited UNIX address ... fd 0`); after a SIGKILL it goes back to `on-demand` and the next connection spawns a new one |
//! | `a_config_pipe_vassal_reloads_the_new_config` | `--emperor-force-config-pipe`: uWSGI reads `emperor://NAME`; two edit + later mtime rounds each serve the NEW `GREETING` from the same master (the vassal asks with byte 2 before its re-exec; our emperor pushes only then, so no stale config as with 2.0.21's double push) |
//! | `sigint_stops_every_real_vassal_and_our_emperor_exits_0` | two vassals; SIGINT to our emperor → `stopping` + `destroyed` each, uWSGI logs `received message 0 from emperor` twice, exit 0, every master and worker gone (by pid and start time) |
//! | `vassal_demo_runs_under_the_real_uwsgi_emperor` | `uwsgi --emperor DIR --emperor-wrapper vassal-demo --emperor-stats --emperor-required-heartbeat 3`: argv `--ini demo.ini` and `UWSGI_EMPEROR_FD`; stats `loyal:1` and "is now loyal" after a request; stats key order = the 2.0.21 capture; alive and the same pid > 4 s later (heartbeats, `last_heartbeat` recent); touch → "reload the uwsgi instance", same process serving, `respawns:1`; rm → "removed uwsgi instance", the process exits, no blacklist |
//!
//! Every test has its own temporary directory and free ports (bound to port 0, then
//! released), so the tests run in parallel. Every wait is bounded; every child runs in its
//! own process group and is stopped when the test ends (SIGINT, then SIGKILL of the group
//! after 5 s; our emperor's vassals also die by their parent-death signal). A missing
//! `uwsgi` is a failure, not a skip (`common::require_program`). A failing test prints the
//! tail of every process's stderr (the vassals' uWSGI logs are in our emperor's stderr)
//! and stdout (the events).
//!
//! uWSGI 2.0.21 compares whole seconds (`st_mtime > last_mod`): the tests set an mtime at
//! least one second later than the file's and the clock's (`touch_later`, `write_config`;
//! the latter writes a temporary file and renames it, so a monitor sees one change).
//!
//! Runtime: 1–7.5 s per test (the heartbeat test ~7 s: 4 s alive, then the 3 s
//! tolerance; the real-emperor test ~5.5 s), about 14 s for the file on 2 CPUs.

// Tests drive real processes: they bound their waits with the clock and short sleeps.
#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the clock and short sleeps")]
#![allow(clippy::unwrap_used, clippy::print_stderr, reason = "test code: a failed unwrap is a failed test")]

mod common;
mod emperor_support;

use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use emperor_support::{
    EmperorEvents, Ev, ProcId, Scene, VASSAL_DEMO, WAIT, children, cmdline, environ, free_port, http_get,
    http_get_unix, keys_at, local, parse_body, ppid, signal_group, signal_pid, state, stats, stats_raw,
    stats_vector, touch_later, uwsgi_ini, write_config,
};

/// The real uWSGI, as the vassal program of our emperor.
fn uwsgi_bin() -> String {
    common::require_program("uwsgi").display().to_string()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The events of `vassal` named `event` so far.
fn count(events: &[Ev], vassal: &str, event: &str) -> usize {
    events.iter().filter(|e| e.vassal == vassal && e.event == event).count()
}

/// `GET /` answered by a worker of `master`: its text.
#[track_caller]
fn served_by(scene: &Scene, port: u16, master: u32) -> String {
    let (worker, text) = scene.get(local(port), "/");
    scene.check(ppid(worker) == Some(master), || {
        format!("worker {worker} answered, its parent is {:?}, not the vassal {master}", ppid(worker))
    });
    text
}

#[test]
fn a_real_vassal_is_spawned_loyal_reloaded_in_place_and_destroyed() {
    let uwsgi = uwsgi_bin();
    let mut scene = Scene::new("emperor-basic-");
    let vassals = scene.subdir("vassals");
    let app = scene.app();
    let port = free_port();
    let socket = format!("http-socket = 127.0.0.1:{port}\n");
    let ini = vassals.join("alpha.ini");
    write_config(&ini, &uwsgi_ini(&app, "one", &socket));
    let emperor = scene.emperor(&["--emperor", s(&vassals), "--vassal-bin", &uwsgi]);

    let (i, spawned) = scene.wait_event(&emperor, 0, "alpha.ini", "spawned");
    let pid = spawned.pid();
    let master = ProcId::of(pid);
    scene.check(master.is_some(), || format!("vassal {pid} is not running"));
    let master = master.unwrap();
    scene.check(cmdline(pid).ends_with(&["--ini".to_owned(), "alpha.ini".to_owned()]), || {
        format!("argv {:?}", cmdline(pid))
    });
    scene.wait_event(&emperor, i, "alpha.ini", "ready");
    let (i, _) = scene.wait_event(&emperor, i, "alpha.ini", "accepting");
    scene.check(count(&emperor.vassal_events(), "alpha.ini", "loyal") == 0, || {
        "loyal before any request".into()
    });

    // A request: loyal.
    scene.check(served_by(&scene, port, pid) == "one", || "first answer".into());
    let (i, loyal) = scene.wait_event(&emperor, i, "alpha.ini", "loyal");
    scene.check(loyal.pid == Some(pid), || format!("loyal {loyal:?}"));

    // A later mtime, same content: reloaded in place (uWSGI re-execs its master).
    touch_later(&ini);
    let (i, reloaded) = scene.wait_event(&emperor, i, "alpha.ini", "reloaded");
    scene.check(reloaded.pid == Some(pid), || format!("reloaded {reloaded:?}"));
    let (i, _) = scene.wait_event(&emperor, i, "alpha.ini", "accepting");
    scene.check(scene.wait_text(local(port), "one") > 0, || "served after the reload".into());
    scene.check(served_by(&scene, port, pid) == "one", || "the same master serves".into());
    scene.check(master.running(), || format!("master {pid} was replaced by the reload"));
    scene.wait_log(&emperor, "received message 1 from emperor", WAIT);
    scene.wait_log(&emperor, &format!("gracefully (RE)spawned uWSGI master process (pid: {pid})"), WAIT);

    // Edit + later mtime: the new GREETING, still the same master.
    write_config(&ini, &uwsgi_ini(&app, "two", &socket));
    let (i, reloaded) = scene.wait_event(&emperor, i, "alpha.ini", "reloaded");
    scene.check(reloaded.pid == Some(pid), || format!("reloaded {reloaded:?}"));
    scene.wait_text(local(port), "two");
    scene.check(served_by(&scene, port, pid) == "two", || "the same master serves the new config".into());
    scene.check(master.running(), || format!("master {pid} was replaced by the reload"));
    let events = emperor.vassal_events();
    scene.check(count(&events, "alpha.ini", "reloaded") == 2, || "one reload per change".into());
    for bad in ["died", "respawned", "cursed", "killed"] {
        scene.check(count(&events, "alpha.ini", bad) == 0, || format!("unexpected {bad}"));
    }

    // Removed: stopped (byte 0) and destroyed; master and worker gone.
    let workers: Vec<ProcId> = children(pid).into_iter().filter_map(ProcId::of).collect();
    scene.check(!workers.is_empty(), || "the vassal has a worker".into());
    std::fs::remove_file(&ini).unwrap();
    let (i, stopping) = scene.wait_event(&emperor, i, "alpha.ini", "stopping");
    scene.check(stopping.pid == Some(pid), || format!("stopping {stopping:?}"));
    scene.wait_event(&emperor, i, "alpha.ini", "destroyed");
    scene.wait_log(&emperor, "received message 0 from emperor", WAIT);
    scene.wait(WAIT, "the vassal's processes gone", || {
        let left: Vec<u32> = std::iter::once(master)
            .chain(workers.iter().copied())
            .filter(ProcId::running)
            .map(|p| p.pid)
            .collect();
        if left.is_empty() { Ok(()) } else { Err(format!("still running: {left:?}")) }
    });
    scene.check(emperor.alive(), || "our emperor exited".into());
}

#[test]
fn a_sigkilled_unloyal_master_is_throttled_then_respawned() {
    let uwsgi = uwsgi_bin();
    let mut scene = Scene::new("emperor-kill-");
    let vassals = scene.subdir("vassals");
    let app = scene.app();
    let port = free_port();
    let mark = scene.path("sleeping");
    let extra = format!("http-socket = 127.0.0.1:{port}\nenv = SLEEP_MARK={}\n", mark.display());
    write_config(&vassals.join("k.ini"), &uwsgi_ini(&app, "alive", &extra));
    let emperor = scene.emperor(&["--emperor", s(&vassals), "--vassal-bin", &uwsgi]);
    let (i, spawned) = scene.wait_event(&emperor, 0, "k.ini", "spawned");
    let pid = spawned.pid();
    let (i, _) = scene.wait_event(&emperor, i, "k.ini", "accepting");

    // Its worker gets busy in a long request (so the vassal is not loyal yet).
    let sleeper = thread::spawn(move || http_get(local(port), "/sleep"));
    let worker = scene.wait(WAIT, "the worker busy in /sleep", || {
        let prefix = format!("{}.", mark.file_name().unwrap().to_str().unwrap());
        std::fs::read_dir(mark.parent().unwrap())
            .unwrap()
            .flatten()
            .find_map(|e| e.file_name().to_str()?.strip_prefix(&prefix)?.parse::<u32>().ok())
            .ok_or_else(|| "no mark yet".to_owned())
    });
    scene.check(ppid(worker) == Some(pid), || format!("worker {worker} is not the vassal's"));
    let busy = ProcId::of(worker).unwrap();

    signal_pid(pid, "-KILL");
    let (i, died) = scene.wait_event(&emperor, i, "k.ini", "died");
    scene.check(died.pid == Some(pid) && died.raw["signal"] == 9, || format!("died {}", died.raw));
    let (i, throttled) = scene.wait_event(&emperor, i, "k.ini", "throttled");
    let delay = throttled.raw["delay_ms"].as_u64().unwrap_or(0);
    scene.check(delay >= 1000, || format!("throttle {delay} ms, expected >= 1000 (--emperor-throttle)"));
    // The orphaned busy worker would sleep 30 s holding the listening socket: our driver
    // killed the rest of the group when the master died.
    scene.wait(Duration::from_secs(2), "the orphaned busy worker gone", || {
        if busy.running() { Err(format!("worker {worker} still running")) } else { Ok(()) }
    });
    let (_, respawned) = scene.wait_event(&emperor, i, "k.ini", "respawned");
    let new_pid = respawned.pid();
    scene.check(new_pid != pid, || "respawned with the dead pid".into());
    let gap = respawned.t_ms.saturating_sub(died.t_ms);
    scene.check(gap >= 950, || format!("respawned {gap} ms after the death, throttle {delay} ms"));
    scene.check(delay <= 2000, || format!("first throttle {delay} ms"));
    // The new master serves (it could bind at once: exactly one death).
    scene.wait_text(local(port), "alive");
    scene.check(served_by(&scene, port, new_pid) == "alive", || "the new vassal serves".into());
    scene.wait_event(&emperor, 0, "k.ini", "loyal");
    let events = emperor.vassal_events();
    scene.check(count(&events, "k.ini", "died") == 1, || "more than one death".into());
    scene.check(!emperor.stderr.contains("Address already in use"), || "the respawn could not bind".into());
    let sleeper = sleeper.join().unwrap();
    scene.check(sleeper.is_err(), || format!("the killed worker answered: {sleeper:?}"));
}

#[test]
fn a_vassal_whose_heartbeats_stop_is_killed_and_respawned() {
    let uwsgi = uwsgi_bin();
    let mut scene = Scene::new("emperor-heartbeat-");
    let vassals = scene.subdir("vassals");
    let app = scene.app();
    let port = free_port();
    let extra = format!("http-socket = 127.0.0.1:{port}\nheartbeat = 1\n");
    write_config(&vassals.join("hb.ini"), &uwsgi_ini(&app, "beating", &extra));
    let emperor = scene.emperor(&[
        "--emperor",
        s(&vassals),
        "--vassal-bin",
        &uwsgi,
        "--emperor-required-heartbeat",
        "3",
    ]);
    let (i, spawned) = scene.wait_event(&emperor, 0, "hb.ini", "spawned");
    let pid = spawned.pid();
    let (i, accepting) = scene.wait_event(&emperor, i, "hb.ini", "accepting");
    scene.check(served_by(&scene, port, pid) == "beating", || "first answer".into());
    let (i, _) = scene.wait_event(&emperor, i, "hb.ini", "loyal");

    // Heartbeats keep it alive past the required 3 s.
    let until = accepting.at + Duration::from_secs(4);
    thread::sleep(until.saturating_duration_since(Instant::now()));
    scene.check(count(&emperor.vassal_events(), "hb.ini", "heartbeat-missed") == 0, || {
        "killed while beating".into()
    });
    let master = ProcId::of(pid).unwrap();
    let group: Vec<ProcId> = std::iter::once(pid).chain(children(pid)).filter_map(ProcId::of).collect();

    // Stop the whole group (the master is its leader): no more heartbeats.
    signal_group(pid, "-STOP");
    let stopped_at = Instant::now();
    scene.wait(WAIT, "the vassal stopped", || match state(pid) {
        Some('T') => Ok(()),
        other => Err(format!("state {other:?}")),
    });
    let (i, missed) = scene.wait_event(&emperor, i, "hb.ini", "heartbeat-missed");
    let after = missed.at.saturating_duration_since(stopped_at);
    scene.check(after >= Duration::from_millis(1500) && after <= Duration::from_secs(5), || {
        format!("heartbeat-missed {after:?} after SIGSTOP (last heartbeat <= 1 s before, tolerance 3 s)")
    });
    let (i, died) = scene.wait_event(&emperor, i, "hb.ini", "died");
    scene.check(died.pid == Some(pid) && died.raw["signal"] == 9, || format!("died {}", died.raw));
    let (_, respawned) = scene.wait_event(&emperor, i, "hb.ini", "respawned");
    let new_pid = respawned.pid();
    scene.check(new_pid != pid, || "respawned with the dead pid".into());
    scene.check(count(&emperor.vassal_events(), "hb.ini", "throttled") == 0, || {
        "a loyal vassal was throttled".into()
    });
    // The group got SIGKILL before the master's exit was seen; the other members die on
    // their own schedule (a stopped process must still be woken and run its exit).
    scene.check(!master.running(), || "the killed master still runs".into());
    scene.wait(WAIT, "the stopped group gone", || {
        let left: Vec<String> =
            group.iter().filter(|p| p.running()).map(|p| format!("{} ({:?})", p.pid, state(p.pid))).collect();
        if left.is_empty() { Ok(()) } else { Err(format!("still running: {}", left.join(", "))) }
    });
    scene.wait_text(local(port), "beating");
    scene.check(served_by(&scene, port, new_pid) == "beating", || "the new vassal serves".into());
}

#[test]
fn an_on_demand_vassal_starts_on_its_first_connection() {
    let uwsgi = uwsgi_bin();
    let mut scene = Scene::new("emperor-ondemand-");
    let vassals = scene.subdir("vassals");
    let sockets = scene.subdir("od");
    let app = scene.app();
    write_config(&vassals.join("lazy.ini"), &uwsgi_ini(&app, "lazy", "protocol = http\n"));
    let emperor = scene.emperor(&[
        "--emperor",
        s(&vassals),
        "--vassal-bin",
        &uwsgi,
        "--emperor-on-demand-directory",
        s(&sockets),
    ]);
    let (i, od) = scene.wait_event(&emperor, 0, "lazy.ini", "on-demand");
    scene.check(od.pid.is_none(), || format!("on-demand with a pid: {}", od.raw));
    let socket = sockets.join("lazy.socket");
    let is_socket = std::fs::metadata(&socket).is_ok_and(|m| m.file_type().is_socket());
    scene.check(is_socket, || format!("{} is not a socket", socket.display()));

    // Nothing runs until a connection comes.
    thread::sleep(Duration::from_secs(1));
    scene.check(count(&emperor.vassal_events(), "lazy.ini", "spawned") == 0, || {
        "spawned without a connection".into()
    });
    scene.check(children(emperor.pid()).is_empty(), || format!("children {:?}", children(emperor.pid())));
    let connected = Instant::now();
    let body = scene.ok(http_get_unix(&socket), "GET on the on-demand socket");
    let (worker, text) = scene.ok(parse_body(&body), "the body");
    scene.check(text == "lazy", || format!("answer {body:?}"));
    let (i, spawned) = scene.wait_event(&emperor, i, "lazy.ini", "spawned");
    scene.check(spawned.at >= connected, || "spawned before the connection".into());
    let pid = spawned.pid();
    scene.check(ppid(worker) == Some(pid), || format!("worker {worker} is not the spawned vassal's"));
    scene.wait_log(&emperor, &format!("inherited UNIX address {} fd 0", socket.display()), WAIT);
    let (i, _) = scene.wait_event(&emperor, i, "lazy.ini", "loyal");

    // A crash puts it back on demand: no process until the next connection.
    signal_pid(pid, "-KILL");
    let (i, _) = scene.wait_event(&emperor, i, "lazy.ini", "died");
    let (i, _) = scene.wait_event(&emperor, i, "lazy.ini", "on-demand");
    let events = emperor.vassal_events();
    // Not restarted without its socket (it would die at once: uWSGI has no socket then).
    scene.check(
        count(&events, "lazy.ini", "died") == 1 && count(&events, "lazy.ini", "respawned") == 0,
        || "restarted without a connection".into(),
    );
    scene.wait(WAIT, "no process after the crash", || {
        let left = children(emperor.pid());
        if left.is_empty() { Ok(()) } else { Err(format!("children {left:?}")) }
    });
    let body = scene.ok(http_get_unix(&socket), "GET on the on-demand socket after the crash");
    let (worker, text) = scene.ok(parse_body(&body), "the body");
    let (_, again) = scene.wait_event(&emperor, i, "lazy.ini", "spawned");
    scene.check(text == "lazy" && again.pid() != pid, || format!("answer {body:?}, {}", again.raw));
    scene.check(ppid(worker) == Some(again.pid()), || format!("worker {worker} is not the new vassal's"));
    scene.check(count(&emperor.vassal_events(), "lazy.ini", "died") == 1, || "the new vassal died".into());
}

#[test]
fn a_config_pipe_vassal_reloads_the_new_config() {
    let uwsgi = uwsgi_bin();
    let mut scene = Scene::new("emperor-pipe-");
    let vassals = scene.subdir("vassals");
    let app = scene.app();
    let port = free_port();
    let socket = format!("http-socket = 127.0.0.1:{port}\n");
    let ini = vassals.join("pipe.ini");
    write_config(&ini, &uwsgi_ini(&app, "first", &socket));
    let emperor =
        scene.emperor(&["--emperor", s(&vassals), "--vassal-bin", &uwsgi, "--emperor-force-config-pipe"]);
    let (i, spawned) = scene.wait_event(&emperor, 0, "pipe.ini", "spawned");
    let pid = spawned.pid();
    let master = ProcId::of(pid).unwrap();
    scene.check(cmdline(pid).ends_with(&["--ini".to_owned(), "emperor://pipe.ini".to_owned()]), || {
        format!("argv {:?}", cmdline(pid))
    });
    scene.check(environ(pid).iter().any(|e| e.starts_with("UWSGI_EMPEROR_FD_CONFIG=")), || {
        "no UWSGI_EMPEROR_FD_CONFIG".into()
    });
    let (mut i, _) = scene.wait_event(&emperor, i, "pipe.ini", "accepting");
    scene.wait_log(&emperor, "getting INI configuration from emperor://pipe.ini", WAIT);
    scene.check(served_by(&scene, port, pid) == "first", || "first config".into());

    // Two rounds: with 2.0.21's extra push after byte 1, the second would run "second".
    for (round, greeting) in ["second", "third"].into_iter().enumerate() {
        write_config(&ini, &uwsgi_ini(&app, greeting, &socket));
        let (next, reloaded) = scene.wait_event(&emperor, i, "pipe.ini", "reloaded");
        scene.check(reloaded.pid == Some(pid), || format!("reloaded {}", reloaded.raw));
        let (next, _) = scene.wait_event(&emperor, next, "pipe.ini", "accepting");
        i = next;
        scene.wait_text(local(port), greeting);
        scene.check(served_by(&scene, port, pid) == greeting, || format!("round {round}: same master"));
        scene.check(master.running(), || format!("master {pid} was replaced"));
        let loads = emperor.stderr.count("getting INI configuration from emperor://pipe.ini");
        scene.check(loads == round + 2, || format!("{loads} config loads after round {round}"));
    }
    let events = emperor.vassal_events();
    scene.check(count(&events, "pipe.ini", "died") == 0, || "the vassal died".into());
}

#[test]
fn sigint_stops_every_real_vassal_and_our_emperor_exits_0() {
    let uwsgi = uwsgi_bin();
    let mut scene = Scene::new("emperor-sigint-");
    let vassals = scene.subdir("vassals");
    let app = scene.app();
    let names = ["a.ini", "b.ini"];
    let ports = [free_port(), free_port()];
    for (name, port) in names.iter().zip(ports) {
        write_config(
            &vassals.join(name),
            &uwsgi_ini(&app, name, &format!("http-socket = 127.0.0.1:{port}\n")),
        );
    }
    let emperor = scene.emperor(&["--emperor", s(&vassals), "--vassal-bin", &uwsgi]);
    let mut procs = Vec::new();
    for (name, port) in names.iter().zip(ports) {
        let (i, spawned) = scene.wait_event(&emperor, 0, name, "spawned");
        scene.wait_event(&emperor, i, name, "accepting");
        let pid = spawned.pid();
        scene.check(served_by(&scene, port, pid) == *name, || format!("{name} serves"));
        procs.extend(std::iter::once(pid).chain(children(pid)).filter_map(ProcId::of));
    }
    scene.check(procs.len() == 4, || format!("two masters and two workers: {procs:?}"));

    emperor.signal("-INT");
    let status = scene.wait_exit(&emperor, WAIT);
    scene.check(status.code() == Some(0), || format!("our emperor ended with {status}"));
    let events = emperor.vassal_events();
    for name in names {
        scene.check(count(&events, name, "stopping") == 1, || format!("{name}: stopping"));
        scene.check(count(&events, name, "destroyed") == 1, || format!("{name}: destroyed"));
        scene.check(count(&events, name, "died") == 0, || format!("{name}: died"));
    }
    let stops = emperor.stderr.count("received message 0 from emperor");
    scene.check(stops == 2, || format!("{stops} vassals got byte 0"));
    scene.wait(WAIT, "every uWSGI process gone", || {
        let left: Vec<u32> = procs.iter().filter(|p| p.running()).map(|p| p.pid).collect();
        if left.is_empty() { Ok(()) } else { Err(format!("still running: {left:?}")) }
    });
}

#[test]
fn vassal_demo_runs_under_the_real_uwsgi_emperor() {
    let uwsgi = uwsgi_bin();
    let mut scene = Scene::new("emperor-real-");
    let vassals = scene.subdir("vassals");
    let port = free_port();
    let stats_port = free_port();
    let ini = vassals.join("demo.ini");
    write_config(&ini, &format!("[uwsgi]\nhttp-socket = 127.0.0.1:{port}\nheartbeat = 1\ntext = demo\n"));
    let mut cmd = Command::new(&uwsgi);
    cmd.args(["--emperor", s(&vassals), "--emperor-wrapper", VASSAL_DEMO, "--emperor-stats"])
        .arg(format!("127.0.0.1:{stats_port}"))
        .args(["--emperor-required-heartbeat", "3", "--die-on-term"]);
    let emperor = scene.spawn("the real uWSGI emperor", cmd);
    scene.wait_log(&emperor, "[emperor] vassal demo.ini has been spawned", WAIT);
    let stats_addr = local(stats_port);
    let first = scene.wait(WAIT, "stats with the vassal", || {
        let doc = stats(stats_addr)?;
        if doc["vassals"][0]["pid"].as_u64().is_some() { Ok(doc) } else { Err(doc.to_string()) }
    });
    let pid = u32::try_from(first["vassals"][0]["pid"].as_u64().unwrap()).unwrap();
    let demo = ProcId::of(pid).unwrap();
    let argv = cmdline(pid);
    scene.check(argv == [VASSAL_DEMO, "--ini", "demo.ini"], || format!("argv {argv:?}"));
    scene.check(environ(pid).iter().any(|e| e.starts_with("UWSGI_EMPEROR_FD=")), || {
        "no UWSGI_EMPEROR_FD".into()
    });
    scene.check(first["vassals"][0]["loyal"] == 0, || format!("loyal before a request: {first}"));

    // A request: loyal.
    let (answered, text) = scene.get(local(port), "/");
    scene.check(answered == pid && text == "demo", || format!("answer {answered} {text}"));
    scene.wait_log(&emperor, "[emperor] vassal demo.ini is now loyal", WAIT);
    let doc = scene.wait(WAIT, "stats loyal:1", || {
        let doc = stats(stats_addr)?;
        if doc["vassals"][0]["loyal"] == 1 { Ok(doc) } else { Err(doc.to_string()) }
    });
    scene.check(doc["vassals"][0]["ready"] == 1 && doc["vassals"][0]["accepting"] == 1, || doc.to_string());
    // The real document's keys, in the order of the 2.0.21 capture.
    let raw = scene.ok(stats_raw(stats_addr), "raw stats");
    let vector = stats_vector();
    scene.check(keys_at(&raw, 1) == keys_at(&vector, 1), || format!("top-level keys of {raw}"));
    let vassal_keys = keys_at(&vector, 3);
    scene.check(keys_at(&raw, 3) == vassal_keys[..vassal_keys.len() / 2], || format!("vassal keys of {raw}"));

    // Alive and the same process well past the required heartbeat (3 s).
    thread::sleep(Duration::from_millis(4500));
    let doc = scene.ok(stats(stats_addr), "stats");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let last = doc["vassals"][0]["last_heartbeat"].as_u64().unwrap_or(0);
    scene.check(now.saturating_sub(last) <= 2, || format!("last_heartbeat {last}, now {now}: {doc}"));
    scene.check(doc["vassals"][0]["pid"] == pid && demo.running(), || format!("replaced: {doc}"));
    scene.check(!emperor.stderr.contains("sent no heartbeat"), || "a heartbeat kill".into());

    // Touch: reloaded in place (vassal-demo re-execs itself), the same process serves.
    touch_later(&ini);
    scene.wait_log(&emperor, "[emperor] reload the uwsgi instance demo.ini", WAIT);
    scene.wait(WAIT, "stats respawns:1", || {
        let doc = stats(stats_addr)?;
        if doc["vassals"][0]["respawns"] == 1 { Ok(()) } else { Err(doc.to_string()) }
    });
    let (answered, text) = scene.get(local(port), "/");
    scene.check(answered == pid && text == "demo" && demo.running(), || {
        format!("after the reload: {answered}")
    });
    scene.check(emperor.stderr.count("has been spawned") == 1, || "spawned again".into());

    // Removed: stopped (byte 0), the process exits, not blacklisted (it was loyal).
    std::fs::remove_file(&ini).unwrap();
    scene.wait_log(&emperor, "[emperor] removed uwsgi instance demo.ini", WAIT);
    scene.wait(WAIT, "vassal-demo gone", || if demo.running() { Err("running".into()) } else { Ok(()) });
    let doc = scene.ok(stats(stats_addr), "stats");
    scene.check(doc["vassals"].as_array().is_some_and(Vec::is_empty), || doc.to_string());
    scene.check(doc["blacklist"].as_array().is_some_and(Vec::is_empty), || doc.to_string());
}
