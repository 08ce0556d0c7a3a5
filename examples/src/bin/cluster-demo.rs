//! `cluster-demo`: a self-contained tour of the workspace's protocols on loopback, with
//! nothing to set up.
//!
//! It starts the sibling program `uwsgi-echo-server` on `127.0.0.1:0` (a free port), learns
//! the port from its `listening on` line, and talks to it with the `uwsgi_packet` codec,
//! printing what crosses the wire; then it starts a three-node uWSGI Legion of the sibling
//! program `legiond` and shows the lord election and two failovers, with their timings.
//! Section by section:
//!
//! 1. starting the server;
//! 2. a GET with a query string: the 4-byte header taken apart (`modifier1`, the
//!    little-endian `datasize`, `modifier2`), a hex dump, the vars table, and the JSON
//!    echo the server sent back;
//! 3. a POST whose body follows the vars on the stream (`CONTENT_LENGTH`);
//! 4. repeated headers: duplicate vars keep their order (nginx 1.22 sends one var per
//!    header line);
//! 5. a PING (`modifier1` 100) and uWSGI's pong, `64 00 00 01`;
//! 6. malformed input (a zero-length key, an oversized `datasize`, an HTTP request sent to
//!    the uwsgi socket): the codec's verdict, the server closing without a reply, and the
//!    line it logged;
//! 7. a valid request afterwards, to show the server survived;
//! 8. a Legion election: three `legiond` nodes (valors 10, 20, 30) on free UDP ports of
//!    127.0.0.1, each listing all three as `--legion-node`, with millisecond timers
//!    (`--legion-freq-ms 200 --legion-tolerance-ms 600`; uWSGI's are whole seconds, 3 s and
//!    15 s by default). Their `--events-json` lines make a timeline: `setup`,
//!    `node-joined`, `join`, then the `lord` event of valor 30 (epoch 1), about one
//!    announce period after start;
//! 9. a crash: SIGKILL of the lord. No death announce, so the others drop it by expiry
//!    (`node-left`, reason `expired`) and valor 20 becomes lord with epoch 2, 400 to
//!    600 ms after the kill: compared with the tolerance and with uWSGI's 4.0 s at its
//!    fastest measured settings (1 s / 3 s);
//! 10. a graceful hand-over: SIGINT to the new lord. It announces its death (`node-left`,
//!     reason `announced`) and valor 10 becomes lord with epoch 3 within a few
//!     milliseconds (uWSGI: 1.0 s);
//! 11. SIGINT to the last node, which exits 0.
//!
//! Later crates add their own sections (subscriptions, zerg, emperor).
//!
//! # Running it
//!
//! ```text
//! cargo build -p examples --bins && cargo run -p examples --bin cluster-demo
//! ```
//!
//! The demo looks for `uwsgi-echo-server` and `legiond` next to its own executable
//! (`target/debug/`), so build the package's programs first (`cargo run` builds only the
//! one it runs); or pass `--server PATH` and `--legiond PATH`. Everything binds **loopback
//! only**. Every wait is bounded by `--timeout` (default 10 s); the whole demo takes
//! about 3 s. Expect about 230 lines: annotated hex dumps and tables, then the legion's
//! events as they come, each section ending with what it measured, such as
//!
//! ```text
//! == 9. The lord crashes: SIGKILL, failover by expiry ==========================
//!   …
//!   $ kill -9 22760    (valor 30, the lord)
//!   Events, in ms since the kill:
//!     + 601 ms  valor 20  node-left     valor 30 (abe0c063) is gone, reason expired
//!     + 601 ms  valor 20  lord          i am the lord now, epoch 2
//!     + 601 ms  valor 10  node-left     valor 30 (abe0c063) is gone, reason expired
//!   …
//!   failover after the crash: 601 ms from SIGKILL to valor 20's lord event
//! ```
//!
//! (400 to 600 ms: the tolerance counted from the lord's last announce; uWSGI 2.0.21 takes
//! 4.02 s at `--legion-freq 1 --legion-tolerance 3`), and a hand-over after SIGINT of a
//! few milliseconds. The output ends with `all N checks passed`, exit status 0. On any
//! failure it prints `cluster-demo: FAILED: …` and exits with status 1. The server and the
//! legion nodes are killed when the demo ends, whatever happens.

// A program: its output is the point. It reads the clock to bound its waits and to time the
// legion's elections, and sleeps briefly while it waits for a node to exit.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program reports on stdout/stderr"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "bounded waits and timings read the clock (Instant::now); exit polls sleep"
)]

use std::error::Error;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;
use uwsgi_packet::{Header, Limits, Packet, Status, encode_packet};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Command line (the option names are a public contract, STYLE.md §3.11).
#[derive(Parser, Debug)]
#[command(version, about = "A self-contained loopback tour of the uwsgi protocol and the cluster programs")]
struct Args {
    /// The uwsgi-echo-server program to start (default: the one next to this program).
    #[arg(long, value_name = "PATH")]
    server: Option<PathBuf>,
    /// The legiond program to start, three times (default: the one next to this program).
    #[arg(long, value_name = "PATH")]
    legiond: Option<PathBuf>,
    /// Upper bound in seconds for every wait (server start, connect, reply, log line,
    /// legion event, node exit).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    timeout: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut demo = Demo {
        timeout: Duration::from_secs(args.timeout),
        section: 0,
        checks: 0,
        server: None,
        legion: None,
    };
    match demo.run(&args) {
        Ok(()) => {
            println!("\nall {} checks passed", demo.checks);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cluster-demo: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
    // `demo` (and with it the server and the legion) is dropped here: the Drop guards kill
    // whatever child process is still running.
}

/// The running demo: its settings, the processes it started and the checks passed so far.
struct Demo {
    timeout: Duration,
    section: usize,
    checks: usize,
    server: Option<EchoServer>,
    legion: Option<Legion>,
}

impl Demo {
    fn run(&mut self, args: &Args) -> Result<()> {
        self.section_start_server(args)?;
        self.section_get_with_query()?;
        self.section_post_with_body()?;
        self.section_duplicate_headers()?;
        self.section_ping()?;
        self.section_malformed()?;
        self.section_survived()?;
        self.section_legion_election(args)?;
        self.section_legion_crash()?;
        self.section_legion_hand_over()?;
        self.section_legion_stop()?;
        Ok(())
    }

    fn heading(&mut self, title: &str) {
        self.section += 1;
        let head = format!("== {}. {title} ", self.section);
        println!("\n{head}{}", "=".repeat(78usize.saturating_sub(head.len())));
    }

    fn check(&mut self, ok: bool, what: impl Into<String>) -> Result<()> {
        if ok {
            self.checks += 1;
            Ok(())
        } else {
            Err(what.into().into())
        }
    }

    fn server(&mut self) -> Result<&mut EchoServer> {
        self.server.as_mut().ok_or_else(|| "the echo server is not running".into())
    }

    fn legion(&mut self) -> Result<&mut Legion> {
        self.legion.as_mut().ok_or_else(|| "the legion is not running".into())
    }

    // ---- sections ------------------------------------------------------------------

    fn section_start_server(&mut self, args: &Args) -> Result<()> {
        self.heading("Start uwsgi-echo-server on loopback");
        let program = match &args.server {
            Some(path) => path.clone(),
            None => sibling_program("uwsgi-echo-server", "--server")?,
        };
        let server = EchoServer::start(&program, self.timeout)?;
        println!("  $ {} --listen 127.0.0.1:0", program.display());
        println!("  server says: listening on {}", server.addr);
        println!("  (one request per connection, replies with a JSON echo, closes on malformed input)");
        self.server = Some(server);
        self.checks += 1;
        Ok(())
    }

    fn section_get_with_query(&mut self) -> Result<()> {
        self.heading("A GET with a query string, as nginx's uwsgi_pass sends it");
        let vars = [
            ("QUERY_STRING", "x=1&y=two%20words"),
            ("REQUEST_METHOD", "GET"),
            ("CONTENT_LENGTH", ""),
            ("REQUEST_URI", "/path/to?x=1&y=two%20words"),
            ("PATH_INFO", "/path/to"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("HTTP_HOST", "127.0.0.1"),
        ];
        println!("  An empty CONTENT_LENGTH (nginx sends one on GET) means no body.");
        self.request(0, 0, &vars, b"")
    }

    fn section_post_with_body(&mut self) -> Result<()> {
        self.heading("A POST: the body follows the vars on the stream");
        let body = b"hello=world&n=42";
        let len = body.len().to_string();
        let vars = [
            ("REQUEST_METHOD", "POST"),
            ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
            ("CONTENT_LENGTH", len.as_str()),
            ("PATH_INFO", "/submit"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
        ];
        println!("  datasize counts the vars only; the {} body bytes come after them with no", body.len());
        println!("  separator, and CONTENT_LENGTH says how many to read.");
        self.request(0, 0, &vars, body)
    }

    fn section_duplicate_headers(&mut self) -> Result<()> {
        self.heading("Repeated headers: duplicate vars keep their order");
        let vars = [
            ("REQUEST_METHOD", "GET"),
            ("PATH_INFO", "/dup"),
            ("HTTP_X_DUP", "one"),
            ("HTTP_X_DUP", "two"),
            ("HTTP_COOKIE", "a=1"),
            ("HTTP_COOKIE", "b=2"),
        ];
        println!("  nginx 1.22 sends one var per header line; the vars are a list, not a map,");
        println!("  so both X-Dup values and both cookies arrive, in wire order.");
        self.request(0, 0, &vars, b"")
    }

    fn section_ping(&mut self) -> Result<()> {
        self.heading("PING: modifier1 100, answered like uWSGI");
        let wire = Header::new(100, 0, 0).to_bytes();
        print_header(&wire);
        let reply = self.exchange(&wire)?;
        println!("  reply ({} bytes): {}", reply.len(), hex(&reply));
        self.check(
            reply == [100, 0, 0, 1],
            format!("PING: expected the pong 64 00 00 01, got {}", hex(&reply)),
        )?;
        println!("  = modifier1 100, datasize 0, modifier2 1: a pong without a warning (vector v17)");
        Ok(())
    }

    fn section_malformed(&mut self) -> Result<()> {
        self.heading("Malformed input: no reply, the connection is closed, one log line");
        // A zero-length key. Our encoder refuses to build one (EncodeError::EmptyKey), so it
        // is written by hand: key length 00 00, then a value "GET" (like vector m04).
        let empty_key = [&Header::new(0, 7, 0).to_bytes()[..], b"\x00\x00\x03\x00GET"].concat();
        // A header announcing 5000 bytes, more than the server's 4096 (vector m19): refused
        // on the header alone, before any body byte is buffered.
        let too_large = Header::new(0, 5000, 0).to_bytes().to_vec();
        // A browser or curl pointed at the uwsgi socket.
        let http = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec();
        let cases: [(&str, Vec<u8>, &str); 3] = [
            ("a zero-length key", empty_key, "EmptyKey"),
            ("datasize 5000 > --max-size 4096", too_large, "TooLarge"),
            ("an HTTP request on the uwsgi socket", http, "HttpRequest"),
        ];
        for (what, wire, kind) in cases {
            println!("\n  -- {what}");
            println!("  wire ({} bytes):", wire.len());
            hexdump(&wire, 0);
            let verdict = match Packet::parse(&wire, &Limits::default()) {
                Ok(Status::Complete { .. }) => "accepted".to_owned(),
                Ok(Status::Incomplete(i)) => format!("incomplete: {}", i.eof_error()),
                Err(e) => format!("{}: {e}", e.kind()),
            };
            println!("  codec: {verdict}");
            self.check(
                verdict.starts_with(kind),
                format!("{what}: codec verdict {verdict:?}, expected {kind}"),
            )?;
            let reply = self.exchange(&wire)?;
            println!("  reply: {} bytes, then the server closed the connection", reply.len());
            self.check(reply.is_empty(), format!("{what}: the server replied {} bytes", reply.len()))?;
            let timeout = self.timeout;
            let line = self.server()?.log_line(kind, timeout)?;
            println!("  server log: {line}");
            self.checks += 1;
        }
        Ok(())
    }

    fn section_survived(&mut self) -> Result<()> {
        self.heading("The server survived: a valid request after the malformed ones");
        let vars =
            [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/still-there"), ("SERVER_PROTOCOL", "HTTP/1.1")];
        self.request(0, 0, &vars, b"")?;
        let running = self.server()?.child.try_wait()?.is_none();
        self.check(running, "the echo server process has exited")?;
        println!("  the server survived every malformed request and is still running");
        Ok(())
    }

    fn section_legion_election(&mut self, args: &Args) -> Result<()> {
        self.heading("A three-node Legion on loopback: the lord election");
        let program = match &args.legiond {
            Some(path) => path.clone(),
            None => sibling_program("legiond", "--legiond")?,
        };
        println!("  A uWSGI Legion elects one lord among its nodes (spec legion.md §3). Every node");
        println!("  sends an AES-encrypted UDP announce (name, valor, uuid, its vote) to every");
        println!("  --legion-node once per period, and drops a member silent for longer than the");
        println!("  tolerance. When every member agrees on the membership (a checksum) and on the");
        println!("  best candidate (highest valor, then highest uuid), that candidate becomes lord.");
        println!("  uWSGI's timers are whole seconds: --legion-freq 3 and --legion-tolerance 15 by");
        println!("  default; its fastest measured setup is 1 and 3 (spec legion.md §5). legiond adds");
        println!(
            "  --legion-freq-ms and --legion-tolerance-ms: here the nodes announce every {} ms",
            ms(LEGION_FREQ)
        );
        println!("  and drop a member silent for more than {} ms.", ms(LEGION_TOLERANCE));
        let ports = free_udp_ports()?;
        let targets: Vec<String> =
            ports.iter().map(|p| format!("--legion-node \"lg 127.0.0.1:{p}\"")).collect();
        for (i, (valor, port)) in VALORS.iter().zip(ports).enumerate() {
            let legion = format!("--legion \"lg 127.0.0.1:{port} {valor} aes-128-cbc:secret\"");
            if i == 0 {
                println!("  $ {} {legion} \\", program.display());
                for pair in targets.chunks(2) {
                    println!("      {} \\", pair.join(" "));
                }
                println!(
                    "      --legion-freq-ms {} --legion-tolerance-ms {} --events-json",
                    ms(LEGION_FREQ),
                    ms(LEGION_TOLERANCE)
                );
            } else {
                println!("  $ {} {legion} (the rest as above)", program.display());
            }
        }
        println!("  Their events (--events-json: one JSON object per line on stdout), as they come,");
        println!("  in ms since the first node was started:");
        let legion = Legion::start(&program, ports)?;
        let legion = self.legion.insert(legion);
        let timeout = self.timeout;

        // Each node binds its socket (setup), sees the two others (node-joined), agrees
        // (join); valor 30 becomes lord. The order across nodes varies from run to run.
        let mut expected = Vec::new();
        for valor in VALORS {
            expected.push(legion.wait_for(&format!("setup event from valor {valor}"), timeout, |e| {
                e.valor == valor && e.event == "setup"
            })?);
        }
        for valor in VALORS {
            for other in VALORS.into_iter().filter(|&o| o != valor) {
                let what = format!("node-joined event of valor {other} at valor {valor}");
                expected.push(legion.wait_for(&what, timeout, |e| {
                    e.valor == valor && e.event == "node-joined" && e.node_valor == Some(other)
                })?);
            }
        }
        let mut joins = Vec::new();
        for valor in VALORS {
            joins.push(legion.wait_for(&format!("join event at valor {valor}"), timeout, |e| {
                e.valor == valor && e.event == "join"
            })?);
        }
        let lord =
            legion.wait_for("lord event at valor 30", timeout, |e| e.valor == 30 && e.event == "lord")?;
        let took = lord.at.duration_since(legion.origin);
        let settled = legion.settle(SETTLE)?;
        let uuid30 = legion.node(30)?.uuid.clone();

        println!("  the lord's line, as legiond printed it:");
        println!("    {}", lord.raw);
        self.check(
            lord.lord_valor == 30 && lord.lord_uuid == uuid30 && lord.uuid == uuid30,
            format!("the lord event names another lord: {}", lord.raw),
        )?;
        self.check(lord.epoch == 1, format!("the first lord's epoch is {}, expected 1", lord.epoch))?;
        println!("  lord: valor 30 (uuid {uuid30}), epoch 1: no lord before it, so epoch 0 + 1");
        for join in &joins {
            self.check(
                join.lord_valor == 30 && join.lord_uuid == uuid30,
                format!("valor {}'s join event names another lord: {}", join.valor, join.raw),
            )?;
        }
        println!("  all three join events name it: every node agrees on valor 30");
        self.checks += expected.len();
        println!(
            "  election: {} ms from starting the first node to the lord event: the warm-up of 2.5 periods",
            ms(took)
        );
        println!(
            "    uWSGI 2.0.21 (three nodes on loopback, spec legion.md §5): {:.2} s with --legion-freq 1,",
            UWSGI_ELECTION.as_secs_f64()
        );
        println!("    6.05 s with the defaults: it sends its first announce one period after start and");
        println!("    holds its first election round one period later; legiond announces at once and");
        println!("    waits 2.5 periods before it votes, so it hears uWSGI nodes started with it.");
        let stray: Vec<String> =
            settled.iter().filter(|e| e.changes_lordship()).map(|e| e.raw.clone()).collect();
        self.check(
            stray.is_empty(),
            format!("the legion did not settle after the election: {}", stray.join("\n")),
        )?;
        println!(
            "  watched {} ms more ({} announce periods): nobody joined or left, no other lord",
            ms(SETTLE),
            SETTLE.as_millis() / LEGION_FREQ.as_millis()
        );
        Ok(())
    }

    fn section_legion_crash(&mut self) -> Result<()> {
        self.heading("The lord crashes: SIGKILL, failover by expiry");
        println!("  SIGKILL gives the lord no chance to announce its death: the others notice only");
        println!(
            "  its silence, drop it once it has been silent for more than the tolerance ({} ms),",
            ms(LEGION_TOLERANCE)
        );
        println!("  and agree on the next best candidate, valor 20.");
        let timeout = self.timeout;
        let legion = self.legion()?;
        let old_epoch = legion.last_lord_epoch;
        let node = legion.node_mut(30)?;
        println!("  $ kill -9 {}    (valor 30, the lord)", node.child.id());
        let killed = Instant::now();
        node.child.kill()?;
        let status = node.wait_exit(timeout)?;
        legion.origin = killed;
        println!("  Events, in ms since the kill:");
        let mut left = Vec::new();
        for valor in [10, 20] {
            left.push(legion.wait_for(
                &format!("node-left event of valor 30 at valor {valor}"),
                timeout,
                |e| e.valor == valor && e.event == "node-left" && e.node_valor == Some(30),
            )?);
        }
        let lord =
            legion.wait_for("lord event at valor 20", timeout, |e| e.valor == 20 && e.event == "lord")?;
        let took = lord.at.duration_since(killed);
        let settled = legion.settle(LEGION_TOLERANCE)?;
        let uuid20 = legion.node(20)?.uuid.clone();

        self.check(status.signal() == Some(9), format!("valor 30 ended with {status}, not by SIGKILL"))?;
        println!("  valor 30 {}: a crash, no death hooks, no death announce", ended(status));
        for e in &left {
            self.check(
                e.reason.as_deref() == Some("expired"),
                format!("valor {} saw valor 30 leave for another reason: {}", e.valor, e.raw),
            )?;
        }
        println!("  both survivors dropped valor 30 by expiry (node-left, reason expired)");
        self.check(
            lord.lord_valor == 20 && lord.lord_uuid == uuid20,
            format!("the new lord event names another lord: {}", lord.raw),
        )?;
        self.check(
            lord.epoch == old_epoch + 1,
            format!("the new lord's epoch is {}, expected {} + 1", lord.epoch, old_epoch),
        )?;
        println!(
            "  new lord: valor 20, epoch {} = {old_epoch} + 1. The epoch is a fencing token: a write",
            lord.epoch
        );
        println!("  stamped with epoch {old_epoch} now comes from a deposed lord.");
        println!("  failover after the crash: {} ms from SIGKILL to valor 20's lord event", ms(took));
        println!(
            "    = the tolerance ({} ms) counted from valor 30's last announce, which left at most",
            ms(LEGION_TOLERANCE)
        );
        println!(
            "    one period ({} ms) before the kill: {} to {} ms after it, plus a few ms. Then legiond",
            ms(LEGION_FREQ),
            ms(LEGION_TOLERANCE - LEGION_FREQ),
            ms(LEGION_TOLERANCE)
        );
        println!("    re-announces at once, and the survivors agree on the new lord within a round trip.");
        println!(
            "    uWSGI 2.0.21 (same three nodes): {:.2} s at its fastest measured settings",
            UWSGI_CRASH_FAILOVER.as_secs_f64()
        );
        println!(
            "    (--legion-freq 1 --legion-tolerance 3), 20.06 s with its defaults: {:.0} times slower.",
            UWSGI_CRASH_FAILOVER.as_secs_f64() / took.as_secs_f64().max(0.001)
        );
        self.check(
            took < UWSGI_CRASH_FAILOVER,
            format!("the failover took {took:?}, not faster than uWSGI's {UWSGI_CRASH_FAILOVER:?}"),
        )?;
        let stray: Vec<String> =
            settled.iter().filter(|e| e.changes_lordship()).map(|e| e.raw.clone()).collect();
        self.check(
            stray.is_empty(),
            format!("the legion did not settle after the failover: {}", stray.join("\n")),
        )?;
        println!(
            "  watched {} ms more: valor 10 claims nothing (it prints no event: `join` fires once,",
            ms(LEGION_TOLERANCE)
        );
        println!("  and `lord` only on the node that becomes lord)");
        Ok(())
    }

    fn section_legion_hand_over(&mut self) -> Result<()> {
        self.heading("A graceful hand-over: SIGINT to the lord");
        println!("  SIGINT (or SIGTERM, uWSGI's --die-on-term) makes legiond leave as uWSGI does at");
        println!("  exit: it runs its death hooks and announces its death (the `dead` flag), so the");
        println!("  others drop it at once instead of waiting out the tolerance.");
        let timeout = self.timeout;
        let legion = self.legion()?;
        let old_epoch = legion.last_lord_epoch;
        let node = legion.node_mut(20)?;
        println!("  $ kill -INT {}    (valor 20, the lord)", node.child.id());
        let sent = Instant::now();
        node.signal("-INT")?;
        legion.origin = sent;
        println!("  Events, in ms since SIGINT was sent:");
        let death =
            legion.wait_for("death event at valor 20", timeout, |e| e.valor == 20 && e.event == "death")?;
        let left = legion.wait_for("node-left event of valor 20 at valor 10", timeout, |e| {
            e.valor == 10 && e.event == "node-left" && e.node_valor == Some(20)
        })?;
        let lord =
            legion.wait_for("lord event at valor 10", timeout, |e| e.valor == 10 && e.event == "lord")?;
        let took = lord.at.duration_since(sent);
        let status = legion.node_mut(20)?.wait_exit(timeout)?;
        let uuid10 = legion.node(10)?.uuid.clone();

        self.check(
            left.reason.as_deref() == Some("announced"),
            format!("valor 10 saw valor 20 leave for another reason: {}", left.raw),
        )?;
        println!("  valor 10 dropped valor 20 on its death announce (node-left, reason announced)");
        self.check(
            left.lord_valor == 20,
            format!("valor 10 followed another lord than valor 20: {}", left.raw),
        )?;
        println!("  and it had followed valor 20 until then: its node-left event says lord_valor 20");
        self.check(
            lord.lord_valor == 10 && lord.lord_uuid == uuid10,
            format!("the new lord event names another lord: {}", lord.raw),
        )?;
        self.check(
            lord.epoch == old_epoch + 1,
            format!("the new lord's epoch is {}, expected {} + 1", lord.epoch, old_epoch),
        )?;
        println!("  new lord: valor 10, epoch {} = {old_epoch} + 1", lord.epoch);
        println!(
            "  hand-over: {:.1} ms from SIGINT to valor 10's lord event (a few ms is typical, well",
            took.as_secs_f64() * 1000.0
        );
        println!(
            "  under 50 ms); by the nodes' own clocks, {} ms from valor 20's death event to it",
            lord.t_ms.saturating_sub(death.t_ms)
        );
        println!("    no timer is involved: the death announce, then at most one round of announces.");
        println!(
            "    uWSGI 2.0.21: {:.1} s at --legion-freq 1 (two nodes; 5.0 s with the defaults): it",
            UWSGI_GRACEFUL.as_secs_f64()
        );
        println!("    skips the election round after a death announce and agrees one announce later.");
        self.check(
            took < LEGION_FREQ,
            format!("the hand-over took {took:?}, more than one announce period ({LEGION_FREQ:?})"),
        )?;
        self.check(status.success(), format!("valor 20 ended with {status} after SIGINT"))?;
        println!("  valor 20 {}", ended(status));
        Ok(())
    }

    fn section_legion_stop(&mut self) -> Result<()> {
        self.heading("The last node leaves");
        let timeout = self.timeout;
        let legion = self.legion()?;
        let node = legion.node_mut(10)?;
        println!("  $ kill -INT {}    (valor 10, the lord, alone)", node.child.id());
        let sent = Instant::now();
        node.signal("-INT")?;
        legion.origin = sent;
        println!("  Events, in ms since SIGINT was sent:");
        legion.wait_for("death event at valor 10", timeout, |e| e.valor == 10 && e.event == "death")?;
        let status = legion.node_mut(10)?.wait_exit(timeout)?;
        self.check(status.success(), format!("valor 10 ended with {status} after SIGINT"))?;
        println!("  valor 10 {}", ended(status));
        println!("  no legiond is left: valor 30 was killed, valors 20 and 10 left gracefully");
        self.legion = None;
        Ok(())
    }

    // ---- helpers -------------------------------------------------------------------

    /// Sends one request, shows it taken apart, and checks the JSON echo against it.
    fn request(&mut self, modifier1: u8, modifier2: u8, vars: &[(&str, &str)], body: &[u8]) -> Result<()> {
        let mut wire = Vec::new();
        encode_packet(modifier1, modifier2, vars, &mut wire)?;
        let packet_len = wire.len();
        wire.extend_from_slice(body);

        println!("  wire ({} bytes: 4 header + {} vars + {} body):", wire.len(), packet_len - 4, body.len());
        print_header(&wire);
        hexdump(&wire[Header::LEN..], Header::LEN);
        // Decode what we are about to send, as the server will.
        let (packet, consumed) = Packet::parse(&wire, &Limits::default())?.at_eof()?;
        println!("  vars (decoded with uwsgi_packet::Packet::parse, wire order):");
        let width = packet.vars().iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in packet.vars() {
            let key = k.escape_ascii().to_string();
            let value = if v.is_empty() { "(empty)".to_owned() } else { v.escape_ascii().to_string() };
            println!("    {key:<width$} = {value}");
        }
        match &wire[consumed..] {
            [] => println!("  body: (none)"),
            rest => println!("  body ({} bytes after the packet): {}", rest.len(), rest.escape_ascii()),
        }

        let reply = self.exchange(&wire)?;
        let (status, json) = parse_http_reply(&reply)?;
        println!("  response: {status}, {} bytes of JSON", json.len());
        let echo: Value = serde_json::from_slice(json)?;
        let echoed_vars = echo_vars(&echo)?;
        let echoed_body =
            echo.get("body").and_then(Value::as_str).ok_or("the echo has no \"body\" string")?;
        println!(
            "  echo: modifier1 {}, modifier2 {}, datasize {}, {} vars, body {:?}",
            echo["modifier1"],
            echo["modifier2"],
            echo["datasize"],
            echoed_vars.len(),
            echoed_body
        );
        self.check(status == "HTTP/1.1 200 OK", format!("unexpected status line {status:?}"))?;
        self.check(
            echo["modifier1"] == modifier1 && echo["modifier2"] == modifier2,
            format!("the echo's modifiers differ: {echo}"),
        )?;
        let sent: Vec<(String, String)> =
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.check(
            echoed_vars == sent,
            format!("the echoed vars differ from the sent ones: {echoed_vars:?}"),
        )?;
        self.check(echoed_body == latin1(body), format!("the echoed body differs: {echoed_body:?}"))?;
        println!("  the echo matches what was sent: same vars in the same order, same body");
        Ok(())
    }

    /// One connection: send `wire`, half-close, read until the server closes.
    fn exchange(&self, wire: &[u8]) -> Result<Vec<u8>> {
        let addr = self.server.as_ref().ok_or("the echo server is not running")?.addr;
        exchange(addr, wire, self.timeout).map_err(|e| format!("talking to {addr}: {e}").into())
    }
}

/// Sends `wire` on a new connection and returns everything the server sent before
/// closing. A reset counts as a close: the server closes with our bytes unread after a
/// framing error, as uWSGI does.
fn exchange(addr: SocketAddr, wire: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let is_closed = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected
        )
    };
    match stream.write_all(wire) {
        Err(e) if !is_closed(&e) => return Err(e),
        _ => {}
    }
    // "Unless stated otherwise the client half-closed (shutdown WR) after sending."
    let _ = stream.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(reply),
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_closed(&e) => return Ok(reply),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no end of reply within {} s", timeout.as_secs()),
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Prints the 4 header bytes and what each field means.
fn print_header(wire: &[u8]) {
    let Some(bytes) = wire.first_chunk::<4>() else { return };
    let h = Header::from_bytes(*bytes);
    let m1 = match h.modifier1 {
        0 => "a WSGI/HTTP-style request (nginx's default)",
        5 => "a PSGI request",
        100 => "PING",
        101 => "ECHO",
        110 => "a signal",
        173 => "RPC",
        224 => "a subscription",
        _ => "see spec §1.1",
    };
    println!("  header  {}", hex(bytes));
    println!("          modifier1 = {:<5} {m1}", h.modifier1);
    println!(
        "          datasize  = {:<5} bytes {:02x} {:02x}: a little-endian u16 (0x{:04x}), header not counted",
        h.datasize, bytes[1], bytes[2], h.datasize
    );
    println!(
        "          modifier2 = {:<5} {}",
        h.modifier2,
        if h.modifier2 == 0 { "(unused here)" } else { "" }
    );
}

/// A classic 16-bytes-a-line hex dump, offsets starting at `base`; long inputs are cut.
fn hexdump(bytes: &[u8], base: usize) {
    const MAX_LINES: usize = 8;
    for (i, line) in bytes.chunks(16).take(MAX_LINES).enumerate() {
        let ascii: String = line
            .iter()
            .map(|&b| if b.is_ascii_graphic() || b == b' ' { char::from(b) } else { '.' })
            .collect();
        println!("    {:04x}  {:<48} {ascii}", base + i * 16, hex(line));
    }
    if bytes.len() > MAX_LINES * 16 {
        println!("    ...   ({} more bytes)", bytes.len() - MAX_LINES * 16);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().copied().map(char::from).collect()
}

/// Splits an HTTP reply into its status line and its body (Content-Length bytes).
fn parse_http_reply(reply: &[u8]) -> Result<(String, &[u8])> {
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP reply ({} bytes): {}", reply.len(), reply.escape_ascii()))?;
    let head = String::from_utf8_lossy(&reply[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_owned();
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .ok_or("the reply has no Content-Length")?
        .1
        .trim()
        .parse()?;
    let body = &reply[end + 4..];
    if body.len() != length {
        return Err(format!("Content-Length {length} but {} body bytes", body.len()).into());
    }
    Ok((status, body))
}

/// The echo's `vars` as (key, value) pairs of latin-1 strings.
fn echo_vars(echo: &Value) -> Result<Vec<(String, String)>> {
    let list = echo.get("vars").and_then(Value::as_array).ok_or("the echo has no \"vars\" list")?;
    list.iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(k), Value::String(v)]) => Ok((k.clone(), v.clone())),
            _ => Err(format!("not a [key, value] pair: {pair}").into()),
        })
        .collect()
}

/// Where a sibling program of this one lives: next to the running executable.
/// `option` is the one that names it instead.
fn sibling_program(name: &str, option: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or("the running program has no directory")?;
    // `target/debug/cluster-demo` has its siblings in `target/debug/`; a copy run from
    // `target/debug/deps/` (as some test runners do) has them one level up.
    let candidates = [Some(dir.join(name)), dir.parent().map(|d| d.join(name))];
    candidates.into_iter().flatten().find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "`{name}` was not found next to {}: build it with `cargo build -p examples --bins` \
             (cargo run builds only the program it runs), or pass {option} PATH",
            exe.display()
        )
        .into()
    })
}

/// The `uwsgi-echo-server` child process. Dropping it stops the server.
struct EchoServer {
    child: Child,
    addr: SocketAddr,
    /// The server's stderr, line by line (read by a thread so the pipe never fills).
    log: Receiver<String>,
}

impl EchoServer {
    fn start(program: &PathBuf, timeout: Duration) -> Result<Self> {
        let mut child = Command::new(program)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        // Built first, so that an error below still stops the child.
        let (log_tx, log) = mpsc::channel();
        let mut server = Self { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), log };
        let (out_tx, out_rx) = mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || forward_lines(stdout, &out_tx, std::convert::identity));
        }
        if let Some(stderr) = stderr {
            std::thread::spawn(move || forward_lines(stderr, &log_tx, std::convert::identity));
        }
        let line = out_rx.recv_timeout(timeout).map_err(|_| {
            format!("{} printed no `listening on` line within {} s", program.display(), timeout.as_secs())
        })?;
        server.addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("unexpected first line from the server: {line:?}"))?;
        Ok(server)
    }

    /// Waits (bounded) for the server's next log line, which must name `kind`.
    fn log_line(&mut self, kind: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .log
                .recv_timeout(left)
                .map_err(|_| format!("the server logged no {kind} line within {} s", timeout.as_secs()))?;
            if line.contains(&format!(": {kind}: ")) {
                return Ok(line);
            }
            println!("  server log (other): {line}");
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends every line of `from` into `to`, wrapped by `wrap`, until EOF or until nobody
/// listens.
fn forward_lines<T>(from: impl Read, to: &mpsc::Sender<T>, wrap: impl Fn(String) -> T) {
    for line in BufReader::new(from).lines() {
        let Ok(line) = line else { return };
        if to.send(wrap(line)).is_err() {
            return;
        }
    }
}

// ---- the legion ------------------------------------------------------------------------

/// The legion's valors, one node each; the highest is the first lord.
const VALORS: [u64; 3] = [10, 20, 30];
/// Announce period and member tolerance of the demo's legion: uWSGI's are whole seconds
/// (3 s and 15 s by default); legiond's `--legion-freq-ms`/`--legion-tolerance-ms` are an
/// addition.
const LEGION_FREQ: Duration = Duration::from_millis(200);
const LEGION_TOLERANCE: Duration = Duration::from_millis(600);
/// How long the legion is watched after the first election, for stray lordship changes.
const SETTLE: Duration = Duration::from_secs(1);
/// uWSGI 2.0.21, three nodes (valors 10/20/30) on loopback, `--legion-freq 1
/// --legion-tolerance 3` (spec legion.md §5): start to lord, SIGKILL of the lord to the
/// new lord, SIGINT of the lord to the new lord (measured with two nodes).
const UWSGI_ELECTION: Duration = Duration::from_millis(2010);
const UWSGI_CRASH_FAILOVER: Duration = Duration::from_millis(4020);
const UWSGI_GRACEFUL: Duration = Duration::from_millis(1000);

/// How a process ended, in words: `exited with status 0`, `was killed by signal 9`.
fn ended(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended: {status}"),
    }
}

/// Whole milliseconds, for the annotations.
fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Three UDP ports free on 127.0.0.1 right now: bound together (so they differ), then
/// released for the nodes to bind.
#[allow(clippy::disallowed_types, reason = "std's UdpSocket only picks free ports; the nodes bind them")]
fn free_udp_ports() -> Result<[u16; 3]> {
    let bind = || std::net::UdpSocket::bind("127.0.0.1:0");
    let sockets = [bind()?, bind()?, bind()?];
    let mut ports = [0; 3];
    for (port, socket) in ports.iter_mut().zip(&sockets) {
        *port = socket.local_addr()?.port();
    }
    Ok(ports)
}

/// One `legiond` child process. Dropping it kills the process.
struct LegionNode {
    valor: u64,
    port: u16,
    /// Learned from its `setup` event.
    uuid: String,
    child: Child,
}

impl LegionNode {
    /// Sends a signal (`-INT`, …) with kill(1): std only sends SIGKILL.
    fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill").args([name, &self.child.id().to_string()]).status()?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill {name} {} (valor {}): {status}", self.child.id(), self.valor).into())
        }
    }

    /// Waits (bounded) for the process to end.
    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "legiond valor {} did not exit within {} s",
                    self.valor,
                    timeout.as_secs()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for LegionNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line a node printed, and when its reader thread read it.
struct NodeLine {
    /// Index in [`Legion::nodes`].
    node: usize,
    at: Instant,
    stderr: bool,
    line: String,
}

/// One `--events-json` line of legiond, the fields the demo looks at.
struct LegionEvent {
    /// When the demo read it.
    at: Instant,
    raw: String,
    /// The node's wall clock, in ms since the Unix epoch.
    t_ms: u64,
    event: String,
    epoch: u64,
    /// The node that printed it.
    valor: u64,
    uuid: String,
    /// The lord every member agreed on (0 and "" if none).
    lord_valor: u64,
    lord_uuid: String,
    /// `node-joined`/`node-left`: the member.
    node_valor: Option<u64>,
    node_uuid: Option<String>,
    /// `node-left`, `unlord`.
    reason: Option<String>,
}

impl LegionEvent {
    fn parse(at: Instant, line: String) -> Result<Self> {
        let bad = || format!("not a legiond --events-json line: {line:?}");
        let v: Value = serde_json::from_str(&line).map_err(|_| bad())?;
        let num = |key: &str| v.get(key).and_then(Value::as_u64).ok_or_else(bad);
        let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned).ok_or_else(bad);
        let node = v.get("node");
        Ok(Self {
            at,
            t_ms: num("t_ms")?,
            event: text("event")?,
            epoch: num("epoch")?,
            valor: num("valor")?,
            uuid: text("uuid")?,
            lord_valor: num("lord_valor")?,
            lord_uuid: text("lord_uuid")?,
            node_valor: node.and_then(|n| n.get("valor")).and_then(Value::as_u64),
            node_uuid: node.and_then(|n| n.get("uuid")).and_then(Value::as_str).map(str::to_owned),
            reason: v.get("reason").and_then(Value::as_str).map(str::to_owned),
            raw: line,
        })
    }

    /// Whether it changes who is a member or who is lord.
    fn changes_lordship(&self) -> bool {
        matches!(self.event.as_str(), "node-joined" | "node-left" | "join" | "lord" | "unlord")
    }

    /// What the event means, for the timeline.
    fn gloss(&self, port: u16) -> String {
        let member = || {
            let uuid = self.node_uuid.as_deref().unwrap_or_default();
            format!("valor {} ({})", self.node_valor.unwrap_or_default(), uuid.get(..8).unwrap_or(uuid))
        };
        match self.event.as_str() {
            "setup" => format!("bound 127.0.0.1:{port}, uuid {}", self.uuid),
            "node-joined" => format!("{} is a member now", member()),
            "join" => format!("every member agrees; the lord is valor {}", self.lord_valor),
            "lord" => format!("i am the lord now, epoch {}", self.epoch),
            "unlord" => format!("not the lord any more ({})", self.reason.as_deref().unwrap_or("?")),
            "node-left" => format!("{} is gone, reason {}", member(), self.reason.as_deref().unwrap_or("?")),
            "death" => "leaving: death announced to every --legion-node".to_owned(),
            _ => String::new(),
        }
    }
}

/// Three `legiond` nodes and their events. Dropping it kills every node still running.
struct Legion {
    nodes: Vec<LegionNode>,
    /// Every node's stdout and stderr lines, read by one thread per pipe.
    lines: Receiver<NodeLine>,
    /// Events read but not waited for yet.
    pending: Vec<LegionEvent>,
    /// The timeline's zero: the start, then each kill or signal.
    origin: Instant,
    /// The epoch of the last `lord` event read.
    last_lord_epoch: u64,
}

impl Legion {
    /// Starts one node per valor on `ports`, each listing all of them as targets.
    fn start(program: &PathBuf, ports: [u16; 3]) -> Result<Self> {
        let (tx, lines) = mpsc::channel();
        let mut legion = Self {
            nodes: Vec::new(),
            lines,
            pending: Vec::new(),
            origin: Instant::now(),
            last_lord_epoch: 0,
        };
        for (i, (valor, port)) in VALORS.into_iter().zip(ports).enumerate() {
            let mut cmd = Command::new(program);
            cmd.arg("--legion").arg(format!("lg 127.0.0.1:{port} {valor} aes-128-cbc:secret"));
            for p in ports {
                cmd.arg("--legion-node").arg(format!("lg 127.0.0.1:{p}"));
            }
            cmd.args(["--legion-freq-ms", &ms(LEGION_FREQ).to_string()])
                .args(["--legion-tolerance-ms", &ms(LEGION_TOLERANCE).to_string()])
                .arg("--events-json");
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
            let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
            // Kept at once: if a later node cannot start, dropping `legion` kills this one.
            legion.nodes.push(LegionNode { valor, port, uuid: String::new(), child });
            let line = move |stderr| move |line| NodeLine { node: i, at: Instant::now(), stderr, line };
            if let Some(stdout) = stdout {
                let tx = tx.clone();
                std::thread::spawn(move || forward_lines(stdout, &tx, line(false)));
            }
            if let Some(stderr) = stderr {
                let tx = tx.clone();
                std::thread::spawn(move || forward_lines(stderr, &tx, line(true)));
            }
        }
        Ok(legion)
    }

    fn node(&self, valor: u64) -> Result<&LegionNode> {
        self.nodes.iter().find(|n| n.valor == valor).ok_or_else(|| format!("no node of valor {valor}").into())
    }

    fn node_mut(&mut self, valor: u64) -> Result<&mut LegionNode> {
        self.nodes
            .iter_mut()
            .find(|n| n.valor == valor)
            .ok_or_else(|| format!("no node of valor {valor}").into())
    }

    /// Reads the next event before `deadline` (`None` when it passes), printing it on the
    /// timeline; stderr lines are printed as they are.
    fn next_event(&mut self, deadline: Instant) -> Result<Option<LegionEvent>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match self.lines.recv_timeout(left) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => return Ok(None),
                Err(RecvTimeoutError::Disconnected) => return Err("every legiond process has exited".into()),
            };
            let node = self.nodes.get_mut(msg.node).ok_or("a line from an unknown node")?;
            if msg.stderr {
                println!("    [valor {} stderr] {}", node.valor, msg.line);
                continue;
            }
            let event = LegionEvent::parse(msg.at, msg.line)?;
            if event.event == "setup" {
                node.uuid.clone_from(&event.uuid);
            }
            if event.event == "lord" {
                self.last_lord_epoch = event.epoch;
            }
            println!(
                "    +{:>4} ms  valor {:<2}  {:<12}  {}",
                ms(event.at.saturating_duration_since(self.origin)),
                event.valor,
                event.event,
                event.gloss(node.port)
            );
            return Ok(Some(event));
        }
    }

    /// The first event matching `pred`, among those read already or within `timeout`.
    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&LegionEvent) -> bool,
    ) -> Result<LegionEvent> {
        if let Some(i) = self.pending.iter().position(&pred) {
            return Ok(self.pending.remove(i));
        }
        let deadline = Instant::now() + timeout;
        while let Some(event) =
            self.next_event(deadline).map_err(|e| format!("waiting for the {what}: {e}"))?
        {
            if pred(&event) {
                return Ok(event);
            }
            self.pending.push(event);
        }
        Err(format!("no {what} within {} s", timeout.as_secs()).into())
    }

    /// Every event not waited for yet, and those that come within `dur`.
    fn settle(&mut self, dur: Duration) -> Result<Vec<LegionEvent>> {
        let deadline = Instant::now() + dur;
        let mut events = std::mem::take(&mut self.pending);
        while let Some(event) = self.next_event(deadline)? {
            events.push(event);
        }
        Ok(events)
    }
}
