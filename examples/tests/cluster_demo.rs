//! Smoke test of `cluster-demo`: it runs to completion on its own (starting the sibling
//! programs `uwsgi-echo-server`, three times `legiond`, then `fastrouter`, three more echo
//! servers and `subscriber`), within a time limit, and reports each step: the uwsgi
//! requests, then the legion's election, crash failover and graceful hand-over with their
//! events and timings, then the subscriptions, the requests spread by uWSGI's wrr and the
//! unsubscribe; and it fails loudly when its server, its legion nodes, its fastrouter or
//! its subscriber cannot be started.

// Tests wait for a child process with bounded polling (Instant::now + thread::sleep).
#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the clock and short sleeps")]
#![allow(clippy::unwrap_used, reason = "test code")]

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs `cluster-demo` with `args`, killing it if it takes longer than `limit`.
/// Returns its exit status, stdout and stderr.
fn run_demo(args: &[&str], limit: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cluster-demo"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes on threads so that a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cluster-demo did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

#[test]
fn demo_runs_every_section_and_exits_zero() {
    let (status, out, err) = run_demo(&[], Duration::from_secs(60));
    assert!(status.success(), "exit {status}\nstdout:\n{out}\nstderr:\n{err}");
    for expected in [
        "listening on 127.0.0.1:",
        // The requests, taken apart.
        "A GET with a query string",
        "A POST: the body follows the vars",
        "body (16 bytes after the packet): hello=world&n=42",
        "Repeated headers",
        "modifier1 = 0",
        "datasize  = ",
        "response: HTTP/1.1 200 OK",
        "the echo matches what was sent",
        "reply (4 bytes): 64 00 00 01",
        // The malformed inputs: codec verdicts, no reply, the server's log lines.
        "codec: EmptyKey",
        "codec: TooLarge",
        "codec: HttpRequest",
        "reply: 0 bytes, then the server closed the connection",
        ": EmptyKey: zero-length key",
        ": TooLarge: datasize 5000",
        ": HttpRequest: ",
        // And the server survived them.
        "The server survived",
        "still running",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in the demo's output:\n{out}");
    }
    // The vars table shows both duplicates, in wire order (the padding varies).
    let dup: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("HTTP_X_DUP "))
        .filter_map(|l| l.split_once(" = ").map(|(_, v)| v))
        .collect();
    assert_eq!(dup, ["one", "two"], "duplicate vars in the table:\n{out}");
    check_legion_sections(&out);
    check_fastrouter_sections(&out);
    check_zerg_and_emperor_sections(&out);
    let last = out.lines().last().unwrap_or_default();
    assert!(last.starts_with("all ") && last.ends_with(" checks passed"), "last line {last:?}\n{out}");
    assert!(!out.contains("server log (other)"), "unexpected server log lines:\n{out}");
    assert!(!out.contains(" stderr] "), "unexpected legiond stderr lines:\n{out}");
    assert!(err.is_empty(), "nothing on stderr when all goes well: {err}");
}

/// Section `n` of the demo's output, from its `== n.` heading to the next one.
fn section(out: &str, n: usize) -> &str {
    let start = out.find(&format!("\n== {n}. ")).unwrap_or_else(|| panic!("no section {n}:\n{out}"));
    let rest = &out[start + 1..];
    let end = rest[1..].find("\n== ").map_or(rest.len(), |i| i + 2);
    &rest[..end]
}

/// The legion timeline lines of a section (`+ 12 ms  valor 30  lord  i am …`), as
/// (valor, event, gloss).
fn timeline(section: &str) -> Vec<(u64, String, String)> {
    section
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.trim_start().strip_prefix('+')?.split_once(" ms  valor ")?;
            let mut words = rest.split_whitespace();
            let valor = words.next()?.parse().ok()?;
            let event = words.next()?.to_owned();
            Some((valor, event, words.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

/// The events `event` of node `valor` in a timeline, their glosses.
fn glosses<'a>(timeline: &'a [(u64, String, String)], valor: u64, event: &str) -> Vec<&'a str> {
    timeline.iter().filter(|(v, e, _)| *v == valor && e == event).map(|(_, _, g)| g.as_str()).collect()
}

/// The number just after `prefix` in `text` (`"hand-over: 2.9 ms"` → 2.9).
fn number_after(text: &str, prefix: &str) -> f64 {
    let rest =
        &text[text.find(prefix).unwrap_or_else(|| panic!("no {prefix:?} in:\n{text}")) + prefix.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    digits.parse().unwrap_or_else(|_| panic!("no number after {prefix:?} in:\n{text}"))
}

/// Sections 8 to 11: the three-node legion, its election, the crash failover, the
/// graceful hand-over and the last node's exit.
fn check_legion_sections(out: &str) {
    // 8. Election: every node sees the two others, all agree, valor 30 is lord at epoch 1.
    let election = section(out, 8);
    assert!(election.contains("A three-node Legion on loopback"), "{election}");
    assert!(election.contains("--legion-freq-ms 200 --legion-tolerance-ms 600 --events-json"), "{election}");
    let events = timeline(election);
    for valor in [10, 20, 30] {
        assert_eq!(glosses(&events, valor, "setup").len(), 1, "setup of {valor}:\n{election}");
        let mut joined = glosses(&events, valor, "node-joined");
        joined.sort_unstable();
        let others: Vec<u64> = [10, 20, 30].into_iter().filter(|&o| o != valor).collect();
        assert_eq!(joined.len(), 2, "node-joined at {valor}:\n{election}");
        for (gloss, other) in joined.iter().zip(&others) {
            assert!(gloss.starts_with(&format!("valor {other} (")), "node-joined at {valor}:\n{election}");
        }
        assert_eq!(
            glosses(&events, valor, "join"),
            ["every member agrees; the lord is valor 30"],
            "join at {valor}:\n{election}"
        );
    }
    assert_eq!(glosses(&events, 30, "lord"), ["i am the lord now, epoch 1"], "{election}");
    assert!(glosses(&events, 10, "lord").is_empty() && glosses(&events, 20, "lord").is_empty(), "{election}");
    assert!(election.contains(r#""event":"lord","seq":"#), "the raw lord line:\n{election}");
    assert!(election.contains("all three join events name it"), "{election}");
    let took = number_after(election, "\n  election: ");
    assert!(took < 10_000.0, "election in {took} ms:\n{election}");
    assert!(election.contains("nobody joined or left, no other lord"), "{election}");

    // 9. SIGKILL of the lord: expiry at both survivors, valor 20 lord at epoch 2.
    let crash = section(out, 9);
    assert!(crash.contains("SIGKILL, failover by expiry"), "{crash}");
    assert!(crash.contains("valor 30 was killed by signal 9: a crash"), "{crash}");
    let events = timeline(crash);
    for valor in [10, 20] {
        let left = glosses(&events, valor, "node-left");
        assert_eq!(left.len(), 1, "node-left at {valor}:\n{crash}");
        assert!(left[0].starts_with("valor 30 (") && left[0].ends_with("reason expired"), "{crash}");
    }
    assert_eq!(glosses(&events, 20, "lord"), ["i am the lord now, epoch 2"], "{crash}");
    assert!(glosses(&events, 10, "lord").is_empty(), "{crash}");
    assert!(crash.contains("new lord: valor 20, epoch 2 = 1 + 1"), "{crash}");
    let took = number_after(crash, "\n  failover after the crash: ");
    assert!(took < 4020.0, "failover in {took} ms, not faster than uWSGI's 4.02 s:\n{crash}");
    assert!(crash.contains("4.02 s at its fastest measured settings"), "{crash}");

    // 10. SIGINT of the new lord: death announce, valor 10 lord at epoch 3 within ms.
    let hand_over = section(out, 10);
    assert!(hand_over.contains("A graceful hand-over: SIGINT to the lord"), "{hand_over}");
    let events = timeline(hand_over);
    assert_eq!(glosses(&events, 20, "death").len(), 1, "{hand_over}");
    let left = glosses(&events, 10, "node-left");
    assert_eq!(left.len(), 1, "{hand_over}");
    assert!(left[0].starts_with("valor 20 (") && left[0].ends_with("reason announced"), "{hand_over}");
    assert_eq!(glosses(&events, 10, "lord"), ["i am the lord now, epoch 3"], "{hand_over}");
    assert!(hand_over.contains("its node-left event says lord_valor 20"), "{hand_over}");
    assert!(hand_over.contains("new lord: valor 10, epoch 3 = 2 + 1"), "{hand_over}");
    let took = number_after(hand_over, "\n  hand-over: ");
    assert!(took < 200.0, "hand-over in {took} ms:\n{hand_over}");
    assert!(hand_over.contains("valor 20 exited with status 0"), "{hand_over}");

    // 11. The last node leaves and exits 0.
    let stop = section(out, 11);
    assert!(stop.contains("The last node leaves"), "{stop}");
    assert_eq!(glosses(&timeline(stop), 10, "death").len(), 1, "{stop}");
    assert!(stop.contains("valor 10 exited with status 0"), "{stop}");
}

/// Sections 12 to 15: the fastrouter, three backends subscribed with weights 3/1/1, ten
/// requests in uWSGI's wrr order, and the unsubscribe at SIGINT.
fn check_fastrouter_sections(out: &str) {
    // 12. The router on free loopback ports, no pool yet.
    let start = section(out, 12);
    assert!(start.contains("A fastrouter on loopback"), "{start}");
    for line in ["listening on 127.0.0.1:", "subscription server on 127.0.0.1:", "stats server on 127.0.0.1:"]
    {
        assert!(start.contains(line), "missing {line:?}:\n{start}");
    }
    assert!(start.contains(r#""subscriptions": [] (no pool yet)"#), "{start}");

    // 13. Three backends, the datagram taken apart, three subscribes, three nodes.
    let subscribe = section(out, 13);
    assert!(subscribe.contains("Three backends subscribe to app.test, weights 3/1/1"), "{subscribe}");
    for name in ["A", "B", "C"] {
        assert!(subscribe.contains(&format!("backend {name} says: listening on 127.0.0.1:")), "{subscribe}");
    }
    assert!(subscribe.contains("modifier1 = 224   a subscription"), "{subscribe}");
    assert!(subscribe.contains("modifier2 = 0     the command: 0 subscribe"), "{subscribe}");
    assert!(subscribe.contains("key       = app.test"), "{subscribe}");
    assert!(subscribe.contains("wire::decode (Mode::Strict, what a router accepts) gives the request back"));
    assert_eq!(subscribe.matches("--subscribe2 server=127.0.0.1:").count(), 3, "{subscribe}");
    for (weight, modifier1) in [(3, 1), (1, 2), (1, 3)] {
        let sent = format!(", weight {weight}, modifier1 {modifier1}: ");
        assert!(
            subscribe
                .lines()
                .any(|l| l.contains("sent      subscribe   app.test 127.0.0.1:") && l.contains(&sent)),
            "no subscribe event with {sent:?}:\n{subscribe}"
        );
    }
    assert!(subscribe.contains("] new pool: app.test"), "{subscribe}");
    assert_eq!(subscribe.matches("app.test => new node: 127.0.0.1:").count(), 3, "{subscribe}");
    assert!(
        subscribe.contains("each datagram as long as wire::encode makes it: 103 bytes for backend A"),
        "{subscribe}"
    );
    let table: Vec<Vec<&str>> = subscribe
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() == 5 && ["A", "B", "C"].contains(&w[0]) && w[1].starts_with("127.0.0.1:"))
        .collect();
    let rows: Vec<(&str, &str, &str, &str)> = table.iter().map(|w| (w[0], w[2], w[3], w[4])).collect();
    assert_eq!(rows, [("A", "1", "3", "0"), ("B", "2", "1", "0"), ("C", "3", "1", "0")], "{subscribe}");
    let took = number_after(subscribe, "subscribed: the stats showed the three nodes ");
    assert!(took < 5_000.0, "subscribed in {took} ms:\n{subscribe}");

    // 14. Ten requests in uWSGI's wrr order, counted in the stats.
    let wrr = section(out, 14);
    assert!(wrr.contains("uWSGI's weighted round robin"), "{wrr}");
    let backends: Vec<&str> = wrr
        .lines()
        .filter(|l| l.trim_start().starts_with("request ") && l.contains("HTTP/1.1 200 OK"))
        .filter_map(|l| l.split(" = backend ").nth(1)?.split_whitespace().next())
        .collect();
    assert_eq!(backends, ["C", "A", "A", "A", "B", "C", "A", "A", "A", "B"], "{wrr}");
    assert!(wrr.contains("order:                     C A A A B C A A A B"), "{wrr}");
    assert!(wrr.contains("uWSGI's wrr (spec §2.7.1): C A A A B C A A A B"), "{wrr}");
    assert!(wrr.contains("every backend got the vars as sent"), "{wrr}");
    assert!(wrr.contains("spread: A 6, B 2, C 2 of 10"), "{wrr}");
    assert!(wrr.contains(r#"stats: "requests" 6, 2, 2 for A, B, C; pool "hits" 10"#), "{wrr}");

    // 15. SIGINT: three unsubscribes, exit 0, nodes and pool removed, no response.
    let leave = section(out, 15);
    assert!(leave.contains("The subscriber leaves: SIGINT unsubscribes"), "{leave}");
    assert_eq!(leave.matches("sent      unsubscribe app.test 127.0.0.1:").count(), 3, "{leave}");
    assert!(leave.contains("shutdown  (every unsubscribe sent)"), "{leave}");
    assert!(leave.contains("the subscriber exited with status 0"), "{leave}");
    assert_eq!(leave.matches("as failed (unsubscribed)").count(), 3, "{leave}");
    assert!(leave.contains("] pool removed: app.test"), "{leave}");
    let took = number_after(leave, "unsubscribed: ");
    assert!(took < 5_000.0, "unsubscribed in {took} ms:\n{leave}");
    assert!(leave.contains(r#"the stats show "subscriptions": [], no node, no pool"#), "{leave}");
    assert!(leave.contains("a request for app.test now: 0 bytes, then the fastrouter closed"), "{leave}");
    assert!(leave.contains(r#": no node for key "app.test""#), "{leave}");
    assert!(leave.contains("the fastrouter exited with status 0"), "{leave}");
}

#[test]
fn demo_fails_when_its_fastrouter_or_subscriber_does_not_start() {
    // `true` exits at once without printing its addresses, or any event.
    let (status, out, err) =
        run_demo(&["--fastrouter", "/bin/true", "--timeout", "5"], Duration::from_secs(30));
    assert!(!status.success(), "a demo without a fastrouter must fail\nstdout:\n{out}");
    assert!(out.contains("A fastrouter on loopback"), "the earlier sections ran first:\n{out}");
    assert!(err.contains("cluster-demo: FAILED:") && err.contains("stats server on"), "stderr: {err}");
    let (status, out, err) =
        run_demo(&["--subscriber", "/bin/true", "--timeout", "5"], Duration::from_secs(30));
    assert!(!status.success(), "a demo without a subscriber must fail\nstdout:\n{out}");
    assert!(
        err.contains("cluster-demo: FAILED:") && err.contains("the subscriber exited before"),
        "stderr: {err}"
    );
    let (status, _, err) = run_demo(&["--fastrouter", "/nonexistent/fastrouter"], Duration::from_secs(30));
    assert!(!status.success());
    assert!(err.contains("cannot start /nonexistent/fastrouter"), "stderr: {err}");
}

#[test]
fn demo_fails_when_its_legion_nodes_do_not_start() {
    // `true` exits at once without printing any event.
    let (status, out, err) = run_demo(&["--legiond", "/bin/true", "--timeout", "5"], Duration::from_secs(30));
    assert!(!status.success(), "a demo without legion nodes must fail\nstdout:\n{out}");
    assert!(out.contains("A three-node Legion"), "the earlier sections ran first:\n{out}");
    assert!(
        err.contains("cluster-demo: FAILED:") && err.contains("every legiond process has exited"),
        "stderr: {err}"
    );
    let (status, _, err) = run_demo(&["--legiond", "/nonexistent/legiond"], Duration::from_secs(30));
    assert!(!status.success());
    assert!(err.contains("cannot start /nonexistent/legiond"), "stderr: {err}");
}

#[test]
fn demo_fails_when_its_server_does_not_start() {
    // `true` exits at once without printing `listening on`.
    let (status, out, err) = run_demo(&["--server", "/bin/true", "--timeout", "5"], Duration::from_secs(30));
    assert!(!status.success(), "a demo without a server must fail\nstdout:\n{out}");
    assert!(err.contains("cluster-demo: FAILED:") && err.contains("listening on"), "stderr: {err}");
    let (status, _, err) = run_demo(&["--server", "/nonexistent/uwsgi-echo-server"], Duration::from_secs(30));
    assert!(!status.success());
    assert!(err.contains("cannot start /nonexistent/uwsgi-echo-server"), "stderr: {err}");
}

/// Sections 16 (zerg hand-over under load) and 17 (emperor).
fn check_zerg_and_emperor_sections(out: &str) {
    let zerg = section(out, 16);
    for expected in [
        "(source zerg)",
        "handed 1 socket(s) to pid",
        "exited with status 0",
        "0 failed, 0 refused, 0 timed out",
        "zero failed requests across the hand-over",
    ] {
        assert!(zerg.contains(expected), "missing {expected:?} in section 16:\n{zerg}");
    }
    let answered: u64 = zerg
        .lines()
        .find_map(|l| {
            l.trim().strip_suffix("").and_then(|l| l.split_once(" requests answered")).map(|(n, _)| n.trim())
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in section 16:\n{zerg}"));
    assert!(answered >= 100, "only {answered} requests during the hand-over:\n{zerg}");
    let emperor = section(out, 17);
    for expected in [
        "spawned pid",
        "GET / -> ",
        "v1\\n",
        "reload sent (byte 1)",
        "v2\\n",
        "destroyed",
        "emperor exited with status 0",
    ] {
        assert!(emperor.contains(expected), "missing {expected:?} in section 17:\n{emperor}");
    }
}
