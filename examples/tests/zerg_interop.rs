//! Interop tests of record for zerg mode (spec `zerg.md` §8): the real uWSGI 2.0.21 and the
//! workspace's `zerg_fdpass` client, `zergpool` and `zerg-http`, both ways, on loopback.
//!
//! | test | recipe | checks |
//! |---|---|---|
//! | `our_client_gets_and_uses_the_sockets_of_a_real_zerg_server_on_a_path` | A | `driver::attach` to a real `uwsgi --zerg-server PATH` gets its TCP v4 `--socket`, IPv6 `--http-socket`, abstract and unix `--socket`s (uWSGI's addresses, its order, count = fds); after the uWSGI instance stopped, each accepts a connection from the test, which answers on it |
//! | `our_client_gets_and_uses_the_sockets_of_a_real_zerg_server_on_an_abstract_name` | A | the same with `--zerg-server @name` (our `@name` carries uWSGI's NUL; without it: `ECONNREFUSED`), TCP v4 and IPv6 |
//! | `real_uwsgi_zergs_serve_http_and_uwsgi_on_the_sockets_of_our_zergpool` | B, C | a real `uwsgi --zerg POOL --protocol http` attached to our `zergpool` (TCP v4, unix path, `[::1]` items) answers HTTP on all three; a real `uwsgi --zerg POOL` answers the uwsgi protocol on them (`uwsgi-curl`); the pool's `served` events name the uWSGI masters |
//! | `a_real_uwsgi_zerg_serves_on_the_sockets_of_our_zerg_http` | B | a real `uwsgi --zerg S --protocol http` attached to `zerg-http --zerg-server S`: load on zerg-http's socket answered by both (`http-load` `by_pid`), no failure |
//! | `a_real_uwsgi_zerg_attaches_to_two_of_our_zergpools_at_once` | C | `--zerg A(8 sockets) --zerg B(1, abstract pool, IPv6)` and `--zerg B --zerg C(3)`: every socket of both pools answers (the order 1 + 8 segfaults uWSGI 2.0.21's client whatever the servers, spec §3.1: see the test's doc) |
//! | `zerg_fallback_both_ways_and_our_zerg_http_on_a_real_zerg_server` | E | real `uwsgi --zerg MISSING --zerg-fallback` and our `zerg-http --zerg MISSING --zerg-fallback` bind their own `--http-socket` and serve; our `zerg-http --zerg` on a real `--zerg-server` serves uWSGI's http-socket with it, then alone after it stopped |
//! | `our_zergpool_refuses_a_real_uwsgi_zerg_of_another_user_unless_allowed` | G | a real uWSGI running as uid 65534 is refused by our zergpool's default allow-list (path with mode 666, and an abstract name): uWSGI exits 1 with `invalid data received from zerg-server`, the pool reports `refused`; with `--zerg-allow-uid 65534` it attaches and serves |
//!
//! Real uWSGI instances run the python3 plugin with a WSGI app answering `"PID uwsgi"`
//! (the worker's pid), the shape of `zerg-http`'s `"PID TEXT"`, so every answer says which
//! process accepted it. uWSGI's TCP sockets are `127.0.0.1:0`/`[::1]:0` (it logs the
//! port it got), ours report theirs in `--events-json`: no port is guessed. Every test has
//! its own temporary directory and abstract names (with the test process's pid), so the
//! tests run in parallel. Every wait is bounded; every child runs in its own process group
//! and is stopped when the test ends (SIGINT, then SIGKILL of the group after 5 s). A
//! missing `uwsgi` is a failure, not a skip (`common::require_program`). A failing test
//! prints the tail of every process's stderr and stdout.
//!
//! Runtime: about 1–2.5 s per test, about 6 s for the file on 2 CPUs.

// Tests drive real processes: they bound their waits with the clock and short sleeps.
#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the clock and short sleeps")]
#![allow(clippy::unwrap_used, clippy::print_stderr, reason = "test code: a failed unwrap is a failed test")]

mod common;
mod zerg_support;

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::Value;

use zerg_fdpass::client::AttachOptions;
use zerg_fdpass::driver::{AttachFailure, attach};
use zerg_fdpass::{ListenAddr, Listener, StdListener, ZergAddr};
use zerg_support::{
    Proc, Scene, Stream, WAIT, connect, parent_of, parse_body, strings, uid_of, uwsgi_auto_ports,
};

/// Calls the nonblocking `accept` until it gives a connection (bounded by [`WAIT`]).
fn accept_within<S>(scene: &Scene, addr: &ListenAddr, mut accept: impl FnMut() -> io::Result<S>) -> S {
    let deadline = Instant::now() + WAIT;
    loop {
        match accept() {
            Ok(s) => return s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(zerg_support::POLL);
            }
            Err(e) => panic!("accept on {addr}: {e}\n{}", scene.report()),
        }
    }
}

/// Accepts one connection on `listener` (bounded), reads the 5-byte `ping\n` and answers
/// `"{our pid} test\n"`.
fn answer_one(scene: &Scene, listener: Listener) {
    let addr = listener.addr.clone();
    let timeout = Some(zerg_support::REQUEST_TIMEOUT);
    // Nonblocking: the listener's file description may still be blocking (uWSGI's), and a
    // blocking accept would wait forever if the connection went elsewhere.
    let mut stream = match listener.into_std() {
        StdListener::Tcp(l) => {
            l.set_nonblocking(true).unwrap();
            let (s, _) = accept_within(scene, &addr, || l.accept());
            s.set_read_timeout(timeout).unwrap();
            Stream::Tcp(s)
        }
        StdListener::Unix(l) => {
            l.set_nonblocking(true).unwrap();
            let (s, _) = accept_within(scene, &addr, || l.accept());
            s.set_read_timeout(timeout).unwrap();
            Stream::Unix(s)
        }
    };
    let mut ping = [0u8; 5];
    scene.ok(stream.read_exact(&mut ping), &format!("reading the ping on {addr}"));
    assert_eq!(&ping, b"ping\n");
    scene.ok(writeln!(stream, "{} test", std::process::id()), &format!("answering on {addr}"));
}

/// A client connection to `addr` (queued in the listen backlog until someone accepts),
/// then [`answer_one`] on our received listener, then the client reads the answer: the
/// listener we received is the one `addr` reaches, and it works in this process.
fn round_trip(scene: &Scene, listener: Listener) {
    let addr = listener.addr.clone();
    let mut client = scene.ok(connect(&addr), &format!("connecting to {addr}"));
    scene.ok(client.write_all(b"ping\n"), &format!("writing to {addr}"));
    answer_one(scene, listener);
    let mut answer = String::new();
    scene.ok(client.read_to_string(&mut answer), &format!("reading from {addr}"));
    let (pid, text) = scene.ok(parse_body(&answer), "the answer");
    scene.check(pid == std::process::id() && text == "test", || {
        format!("{addr}: answered by {pid} {text:?}, not by this test")
    });
}

// ----- Recipe A: a real zerg server, our client ----------------------------------------

/// Spec §8 recipe A with a filesystem zerg socket: a real `uwsgi --zerg-server PATH`
/// offering a TCP v4 `--socket`, an IPv6 `--http-socket`, an abstract `--socket @name`
/// and a unix `--socket PATH`. Our client gets all four (count 4, strict), each checked
/// as a bound listening stream socket with uWSGI's address, in uWSGI's order. Then the
/// uWSGI instance stops (SIGINT), and each received listener still accepts a real
/// connection made by the test, and the test answers on it: the sockets live on in our
/// process (spec §5, "server dies").
#[test]
fn our_client_gets_and_uses_the_sockets_of_a_real_zerg_server_on_a_path() {
    let mut scene = Scene::new("zerg-interop-");
    let zs = scene.path("zs.sock");
    let unix = scene.path("app.sock");
    let abstract_name = scene.abstract_name("app");
    let mut args = strings(&["--master", "--plugin", "python3", "--wsgi-file"]);
    args.push(scene.app());
    args.extend(strings(&["--socket", "127.0.0.1:0", "--http-socket", "[::1]:0", "--socket"]));
    args.extend([abstract_name.clone(), "--socket".into(), unix.clone(), "--zerg-server".into(), zs.clone()]);
    let server = scene.uwsgi("--zerg-server PATH", &args, "*** Zerg server enabled on");
    let ports = uwsgi_auto_ports(&server);
    scene.check(ports.len() == 2, || format!("uWSGI's auto-assigned ports: {ports:?}"));
    // uWSGI itself serves its http-socket (the app answers with its worker's pid).
    let (uwsgi_pid, text) = scene.get(&ports[1]);
    assert_eq!(text, "uwsgi");
    assert_ne!(uwsgi_pid, std::process::id());

    let listeners = scene.ok(attach(&zs.parse().unwrap(), &AttachOptions::default()), "attach");
    let got: Vec<String> = listeners.iter().map(|l| l.addr.to_string()).collect();
    let want = vec![ports[0].to_string(), ports[1].to_string(), abstract_name, unix];
    scene.check(got == want, || format!("received {got:?}, uWSGI offers {want:?}"));

    scene.stop(&server, "-INT");
    for listener in listeners {
        round_trip(&scene, listener);
    }
}

/// Recipe A with an abstract zerg socket (`--zerg-server @name`): our `@name` carries
/// uWSGI's trailing NUL (spec §1) and meets it; the same name without the NUL does not
/// (`ECONNREFUSED`, as the spec found). The TCP and IPv6 listeners received work after the
/// instance stopped.
#[test]
fn our_client_gets_and_uses_the_sockets_of_a_real_zerg_server_on_an_abstract_name() {
    let mut scene = Scene::new("zerg-interop-");
    let zs = scene.abstract_name("zs");
    let mut args = strings(&["--master", "--socket", "127.0.0.1:0", "--http-socket", "[::1]:0"]);
    args.extend(["--zerg-server".into(), zs.clone()]);
    let server = scene.uwsgi("--zerg-server @name", &args, "*** Zerg server enabled on");
    let ports = uwsgi_auto_ports(&server);
    scene.check(ports.len() == 2, || format!("uWSGI's auto-assigned ports: {ports:?}"));

    let addr: ZergAddr = zs.parse().unwrap();
    match attach(&addr.clone().without_uwsgi_nul(), &AttachOptions::default()) {
        Err(AttachFailure::Connect { source, .. }) if source.kind() == io::ErrorKind::ConnectionRefused => {}
        other => scene.check(false, || format!("{zs} without uWSGI's NUL: {other:?}, not ECONNREFUSED")),
    }
    let listeners = scene.ok(attach(&addr, &AttachOptions::default()), "attach");
    let got: Vec<ListenAddr> = listeners.iter().map(|l| l.addr.clone()).collect();
    scene.check(got == ports, || format!("received {got:?}, uWSGI offers {ports:?}"));

    scene.stop(&server, "-INT");
    for listener in listeners {
        round_trip(&scene, listener);
    }
}

// ----- Recipes B and C: our servers, real uWSGI zergs ----------------------------------

/// The socket names a uWSGI zerg logged as attached (`uwsgi zerg socket N attached to
/// INET address NAME fd F`), in order.
fn attached(proc: &Proc) -> Vec<String> {
    proc.stderr
        .snapshot()
        .iter()
        .filter_map(|l| l.strip_prefix("uwsgi zerg socket ")?.split(" address ").nth(1)?.rsplit_once(" fd "))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Waits until `server` (our zergpool: `served`, our zerg-http: `zerg-served`) reports
/// serving `pid`; the event.
fn wait_served(scene: &Scene, server: &Proc, event: &str, pid: u32) -> Value {
    scene.wait(WAIT, &format!("{}: {event} for pid {pid}", server.label), || {
        server.events(event).into_iter().find(|e| e["pid"] == pid).ok_or_else(|| "not yet".to_owned())
    })
}

/// Spec §8 recipes B/C against our `zergpool`: one pool with a TCP v4, a unix path and an
/// IPv6 `[::1]` item (uWSGI's own zergpool binds `255.255.255.255:<random>` for the last,
/// spec §4). A real `uwsgi --zerg POOL --protocol http` attaches (the pool reports it
/// served the uWSGI master's pid, uid 0, 3 fds; uWSGI logs the three addresses in pool
/// order) and answers real HTTP requests on all three; after it stops, a real `uwsgi --zerg
/// POOL` without `--protocol` answers the uwsgi protocol on the same three sockets (our
/// `uwsgi-curl`).
#[test]
fn real_uwsgi_zergs_serve_http_and_uwsgi_on_the_sockets_of_our_zergpool() {
    let mut scene = Scene::new("zerg-interop-");
    let pool = scene.path("pool.sock");
    let unix = scene.path("p1.sock");
    let (zergpool, listening) =
        scene.zergpool("", &["--zergpool", &format!("{pool}:127.0.0.1:0,{unix},[::1]:0")]);
    let addrs = zerg_support::addrs(&listening[0]);
    scene.check(
        addrs.len() == 3
            && matches!(addrs[0], ListenAddr::Inet(a) if a.is_ipv4() && a.ip().is_loopback())
            && addrs[1] == ListenAddr::Unix(unix.into())
            && matches!(addrs[2], ListenAddr::Inet(a) if a.is_ipv6() && a.ip().is_loopback()),
        || format!("pool addresses: {addrs:?}"),
    );
    let names: Vec<String> = addrs.iter().map(ListenAddr::uwsgi_name).collect();

    let http = scene.uwsgi_zerg("--zerg POOL --protocol http", &[&pool], &["--protocol", "http"]);
    let served = wait_served(&scene, &zergpool, "served", http.pid());
    scene.check(
        served["pool"] == pool.as_str()
            && served["uid"] == uid_of(std::process::id()).unwrap()
            && served["fds"] == 3,
        || format!("served event: {served}"),
    );
    scene.check(attached(&http) == names, || {
        format!("uWSGI attached {:?}, pool has {names:?}", attached(&http))
    });
    for addr in &addrs {
        let (pid, text) = scene.get(addr);
        scene.check(text == "uwsgi" && parent_of(pid) == Some(http.pid()), || {
            format!("{addr}: answered by {pid} {text:?}, not by a worker of uWSGI {}", http.pid())
        });
    }
    scene.stop(&http, "-INT");

    let plain = scene.uwsgi_zerg("--zerg POOL (uwsgi protocol)", &[&pool], &[]);
    wait_served(&scene, &zergpool, "served", plain.pid());
    for addr in &addrs {
        let (pid, text) = scene.uwsgi_get(addr);
        scene.check(text == "uwsgi" && parent_of(pid) == Some(plain.pid()), || {
            format!("{addr}: answered by {pid} {text:?}, not by a worker of uWSGI {}", plain.pid())
        });
    }
    scene.check(zergpool.events("refused").is_empty(), || "a refusal".to_owned());
}

/// The pids `http-load` saw answering (`by_pid`), after checking it had no failure.
fn load_pids(scene: &Scene, summary: &Value) -> BTreeMap<u32, u64> {
    let failures: u64 =
        ["failed", "refused", "timeouts"].iter().map(|k| summary[*k].as_u64().unwrap_or(u64::MAX)).sum();
    scene.check(failures == 0 && summary["ok"].as_u64().unwrap_or(0) > 0, || format!("http-load: {summary}"));
    summary["by_pid"]
        .as_object()
        .unwrap_or_else(|| panic!("no by_pid in {summary}"))
        .iter()
        .map(|(pid, n)| (pid.parse().unwrap(), n.as_u64().unwrap()))
        .collect()
}

/// Runs `http-load --requests 200 --concurrency 8` against `target` until both `a` and a
/// worker of the uWSGI master `b` answered (at most 10 runs; the kernel spreads accepts
/// over every waiting process, spec §5); the total per pid.
fn until_both_answer(scene: &mut Scene, target: &ListenAddr, a: u32, b: u32) -> BTreeMap<u32, u64> {
    let mut total: BTreeMap<u32, u64> = BTreeMap::new();
    let target = target.to_string();
    for run in 0..10 {
        let summary = scene.http_load_run(
            &format!("run {run}"),
            &["--target", &target, "--concurrency", "8", "--requests", "200"],
            Duration::from_secs(60),
        );
        for (pid, n) in load_pids(scene, &summary) {
            *total.entry(pid).or_default() += n;
        }
        let others_ok = total.keys().all(|p| *p == a || parent_of(*p) == Some(b));
        scene.check(others_ok, || format!("an answer from a stranger: {total:?}"));
        if total.contains_key(&a) && total.keys().any(|p| *p != a) {
            return total;
        }
    }
    panic!("{a} and a worker of {b} did not both answer on {target}: {total:?}\n{}", scene.report());
}

/// A real `uwsgi --zerg S --protocol http` attached to our `zerg-http --http-socket
/// 127.0.0.1:0 --zerg-server S`: `zerg-http` reports serving the uWSGI master (1 fd), and
/// load on zerg-http's socket is answered by both zerg-http and the uWSGI worker, with no
/// failure.
#[test]
fn a_real_uwsgi_zerg_serves_on_the_sockets_of_our_zerg_http() {
    let mut scene = Scene::new("zerg-interop-");
    let zs = scene.path("zs.sock");
    let (ours, listening) =
        scene.zerg_http("server", &["--http-socket", "127.0.0.1:0", "--zerg-server", &zs, "--text", "ours"]);
    let ours_pid = listening["pid"].as_u64().unwrap() as u32;
    assert_eq!(ours_pid, ours.pid());
    let addr = zerg_support::addrs(&listening).remove(0);

    let zerg = scene.uwsgi_zerg("--zerg ZS --protocol http", &[&zs], &["--protocol", "http"]);
    let served = wait_served(&scene, &ours, "zerg-served", zerg.pid());
    scene.check(served["fds"] == 1 && served["uid"] == uid_of(std::process::id()).unwrap(), || {
        format!("zerg-served event: {served}")
    });
    scene.check(attached(&zerg) == [addr.uwsgi_name()], || format!("uWSGI attached {:?}", attached(&zerg)));
    let by_pid = until_both_answer(&mut scene, &addr, ours_pid, zerg.pid());
    eprintln!("requests on {addr} by pid (zerg-http {ours_pid}, uWSGI master {}): {by_pid:?}", zerg.pid());
}

/// A real uWSGI zerg attached to two of our zergpools at once (`--zerg A --zerg B`): A hands
/// out 8 TCP sockets (uWSGI's initial capacity, spec §2.6), B one IPv6 socket on an
/// abstract pool name. uWSGI attaches all 9 in option order and answers HTTP on every one.
///
/// What uWSGI 2.0.21 does with several `--zerg` (spec §3.1): it concatenates the lists and
/// truncates the −1 terminator to one byte; when the *second* server sends exactly 8 fds the
/// list runs into garbage and uWSGI segfaults in `uwsgi_bind_sockets`. That is a bug of
/// uWSGI's client, whatever the server: the order 1 + 8 crashes against our zergpools too
/// (and against `tools/zerg_peer.py`), so this test uses 8 + 1, which 2.0.21 survives, plus
/// 1 + 3 (both orders where the second list is shorter than 8 work).
#[test]
fn a_real_uwsgi_zerg_attaches_to_two_of_our_zergpools_at_once() {
    let mut scene = Scene::new("zerg-interop-");
    let a = scene.path("a.sock");
    let b = scene.abstract_name("b");
    let c = scene.path("c.sock");
    let eight = ["127.0.0.1:0"; 8].join(",");
    let (pool_a, la) = scene.zergpool("A (8)", &["--zergpool", &format!("{a}:{eight}")]);
    let (pool_b, lb) = scene.zergpool(
        "B (1) and C (3)",
        &[
            "--zergpool",
            &format!("{b}:[::1]:0"),
            "--zergpool",
            &format!("{c}:127.0.0.1:0,127.0.0.1:0,{}", scene.path("c3.sock")),
        ],
    );
    let addrs_a = zerg_support::addrs(&la[0]);
    let pool_of = |events: &[Value], pool: &str| {
        let e =
            events.iter().find(|e| e["pool"] == pool).unwrap_or_else(|| panic!("no pool {pool}: {events:?}"));
        zerg_support::addrs(e)
    };
    let addrs_b = pool_of(&lb, &b);
    let addrs_c = pool_of(&lb, &c);
    assert_eq!((addrs_a.len(), addrs_b.len(), addrs_c.len()), (8, 1, 3));

    for (label, zergs, addrs, servers) in [
        (
            "--zerg A(8) --zerg B(1)",
            [a.as_str(), b.as_str()],
            [addrs_a, addrs_b.clone()].concat(),
            [(&pool_a, 8), (&pool_b, 1)],
        ),
        (
            "--zerg B(1) --zerg C(3)",
            [b.as_str(), c.as_str()],
            [addrs_b, addrs_c].concat(),
            [(&pool_b, 1), (&pool_b, 3)],
        ),
    ] {
        let zerg = scene.uwsgi_zerg(label, &zergs, &["--protocol", "http"]);
        for ((server, fds), pool) in servers.iter().zip(zergs) {
            let served = scene.wait(WAIT, &format!("{label}: {pool} served uWSGI {}", zerg.pid()), || {
                server
                    .events("served")
                    .into_iter()
                    .find(|e| e["pid"] == zerg.pid() && e["pool"] == pool)
                    .ok_or_else(|| "not yet".to_owned())
            });
            scene.check(served["fds"] == *fds, || format!("{label}: {served}"));
        }
        let names: Vec<String> = addrs.iter().map(ListenAddr::uwsgi_name).collect();
        scene.check(attached(&zerg) == names, || {
            format!("{label}: uWSGI attached {:?}, want {names:?}", attached(&zerg))
        });
        for addr in &addrs {
            let (pid, text) = scene.get(addr);
            scene.check(text == "uwsgi" && parent_of(pid) == Some(zerg.pid()), || {
                format!("{label}: {addr} answered by {pid} {text:?}")
            });
        }
        scene.stop(&zerg, "-INT");
    }
}

// ----- Recipe E: fallback, and our zerg-http on a real zerg server ----------------------

/// Spec §8 recipe E both ways: a real `uwsgi --zerg MISSING --zerg-fallback --http-socket
/// 127.0.0.1:0` logs that it cannot connect, binds its own socket and serves; our
/// `zerg-http --zerg MISSING --zerg-fallback --http-socket 127.0.0.1:0` does the same
/// (`sources: ["bound"]`). Then our `zerg-http --zerg ZS` attaches to a real `uwsgi
/// --zerg-server ZS` (`sources: ["zerg"]`, uWSGI's http-socket), load on that socket is
/// answered by both, and once the uWSGI instance stopped, by zerg-http alone.
#[test]
fn zerg_fallback_both_ways_and_our_zerg_http_on_a_real_zerg_server() {
    let mut scene = Scene::new("zerg-interop-");
    let missing = scene.path("missing.sock");

    let args = scene.zerg_args(&[&missing], &["--zerg-fallback", "--http-socket", "127.0.0.1:0"]);
    let real = scene.uwsgi("--zerg MISSING --zerg-fallback", &args, "spawned uWSGI worker 1");
    scene.check(real.stderr.contains(&format!("--- unable to connect to zerg server {missing} ---")), || {
        "uWSGI did not report the failed attach".to_owned()
    });
    let port = uwsgi_auto_ports(&real);
    scene.check(port.len() == 1, || format!("uWSGI's auto-assigned ports: {port:?}"));
    let (pid, text) = scene.get(&port[0]);
    scene.check(text == "uwsgi" && parent_of(pid) == Some(real.pid()), || {
        format!("answered by {pid} {text:?}")
    });
    scene.stop(&real, "-INT");

    let (ours, listening) = scene.zerg_http(
        "--zerg MISSING --zerg-fallback",
        &["--zerg", &missing, "--zerg-fallback", "--http-socket", "127.0.0.1:0", "--text", "fallback"],
    );
    scene.check(listening["sources"] == serde_json::json!(["bound"]), || format!("listening: {listening}"));
    let addr = zerg_support::addrs(&listening).remove(0);
    let (pid, text) = scene.get(&addr);
    scene.check(pid == ours.pid() && text == "fallback", || format!("answered by {pid} {text:?}"));
    scene.stop(&ours, "-INT");

    let zs = scene.path("zs.sock");
    let args = scene.zerg_args(&[], &["--http-socket", "127.0.0.1:0", "--zerg-server", &zs]);
    let server = scene.uwsgi("--zerg-server ZS", &args, "*** Zerg server enabled on");
    let port = uwsgi_auto_ports(&server);
    scene.check(port.len() == 1, || format!("uWSGI's auto-assigned ports: {port:?}"));
    let (zerg, listening) = scene.zerg_http("--zerg ZS", &["--zerg", &zs, "--text", "zerg"]);
    scene.check(
        listening["sources"] == serde_json::json!(["zerg"]) && zerg_support::addrs(&listening) == port,
        || format!("listening: {listening}, uWSGI's socket {port:?}"),
    );
    let by_pid = until_both_answer(&mut scene, &port[0], zerg.pid(), server.pid());
    eprintln!(
        "requests on {} by pid (zerg-http {}, uWSGI master {}): {by_pid:?}",
        port[0],
        zerg.pid(),
        server.pid()
    );
    scene.stop(&server, "-INT");
    for _ in 0..20 {
        let (pid, text) = scene.get(&port[0]);
        scene.check(pid == zerg.pid() && text == "zerg", || {
            format!("after uWSGI stopped: answered by {pid} {text:?}")
        });
    }
}

// ----- Security (spec §7, recipe G) ------------------------------------------------------

/// uid and gid of user `nobody` on Debian.
const NOBODY: u32 = 65534;

/// Starts a real `uwsgi --zerg POOL --protocol http` as uid/gid 65534 (dropped before exec,
/// so the attach itself runs as that user: uWSGI's own `--uid` drops only after attaching).
fn uwsgi_as_nobody(scene: &mut Scene, label: &str, pool: &str) -> Rc<Proc> {
    let args = scene.zerg_args(&[pool], &["--protocol", "http"]);
    let mut cmd = Command::new(common::require_program("uwsgi"));
    cmd.arg("--die-on-term").args(&args).uid(NOBODY).gid(NOBODY);
    scene.spawn(&format!("uwsgi as nobody {label}"), cmd)
}

/// Our zergpool's default allow-list (its own uid, root) in front of a real uWSGI zerg that
/// runs as `nobody`. With `--chmod-socket 666` on a path, and on an abstract name (which
/// has no permissions at all: uWSGI's own zerg server hands its sockets to anyone there,
/// spec §7.2), nobody can connect, and is refused by the peer check: the pool closes
/// without a byte, reports `refused` (`not-allowed`, uid 65534, uWSGI's pid), and uWSGI
/// exits 1 with `--- invalid data received from zerg-server ---`. With `--zerg-allow-uid
/// 65534` the same uWSGI attaches and serves.
#[test]
fn our_zergpool_refuses_a_real_uwsgi_zerg_of_another_user_unless_allowed() {
    assert_eq!(
        uid_of(std::process::id()),
        Some(0),
        "this test starts uWSGI as uid 65534: it must run as root (as scripts/test.sh does)"
    );
    let mut scene = Scene::new("zerg-interop-");
    let path = scene.path("pool.sock");
    let name = scene.abstract_name("pool");
    let (pool, _) = scene.zergpool(
        "default allow-list",
        &[
            "--chmod-socket",
            "666",
            "--zergpool",
            &format!("{path}:127.0.0.1:0"),
            "--zergpool",
            &format!("{name}:127.0.0.1:0"),
        ],
    );
    for zerg_addr in [&path, &name] {
        let zerg = uwsgi_as_nobody(&mut scene, &format!("--zerg {zerg_addr}"), zerg_addr);
        let status = scene.wait_exit(&zerg, WAIT);
        scene.check(
            status.code() == Some(1)
                && zerg.stderr.contains("--- invalid data received from zerg-server ---"),
            || format!("uWSGI as nobody against {zerg_addr}: {status}"),
        );
        let refused = scene.wait(WAIT, &format!("refused event for {zerg_addr}"), || {
            pool.events("refused")
                .into_iter()
                .find(|e| e["pid"] == zerg.pid())
                .ok_or_else(|| "not yet".to_owned())
        });
        scene.check(
            refused["pool"] == zerg_addr.as_str()
                && refused["uid"] == NOBODY
                && refused["reason"] == "not-allowed",
            || format!("refused event: {refused}"),
        );
    }
    scene.check(pool.events("served").is_empty(), || "a refused peer was served".to_owned());
    scene.stop(&pool, "-INT");

    let (pool, listening) = scene.zergpool(
        "--zerg-allow-uid 65534",
        &["--chmod-socket", "666", "--zerg-allow-uid", "65534", "--zergpool", &format!("{path}:127.0.0.1:0")],
    );
    let addr = zerg_support::addrs(&listening[0]).remove(0);
    let zerg = uwsgi_as_nobody(&mut scene, "--zerg POOL (allowed)", &path);
    scene.wait(WAIT, "uWSGI as nobody: its worker", || {
        scene.check(zerg.alive(), || "uWSGI as nobody exited".to_owned());
        zerg.stderr.contains("spawned uWSGI worker 1").then_some(()).ok_or_else(|| "not yet".to_owned())
    });
    let served = wait_served(&scene, &pool, "served", zerg.pid());
    scene.check(served["uid"] == NOBODY && served["fds"] == 1, || format!("served event: {served}"));
    let (pid, text) = scene.get(&addr);
    scene.check(text == "uwsgi" && parent_of(pid) == Some(zerg.pid()), || {
        format!("answered by {pid} {text:?}")
    });
    scene.check(uid_of(pid) == Some(NOBODY), || {
        format!("the worker {pid} runs as uid {:?}, not 65534", uid_of(pid))
    });
}
