//! `cluster-demo`: a self-contained tour of the workspace's protocols on loopback, with
//! nothing to set up.
//!
//! It starts the sibling program `uwsgi-echo-server` on `127.0.0.1:0` (a free port), learns
//! the port from its `listening on` line, and talks to it with the `uwsgi_packet` codec,
//! printing what crosses the wire; then it starts a three-node uWSGI Legion of the sibling
//! program `legiond` and shows the lord election and two failovers, with their timings;
//! then a `fastrouter` with three echo-server backends that a `subscriber` announces to it,
//! and how the router spreads requests over them. Section by section:
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
//! 11. SIGINT to the last node, which exits 0;
//! 12. a `fastrouter` on free ports of 127.0.0.1 (`--fastrouter`, `--subscription-server`
//!     over UDP, `--stats`), its addresses learned from its `listening on`, `subscription
//!     server on` and `stats server on` lines; its stats show no pool;
//! 13. three `uwsgi-echo-server` backends (A, B, C) and one `subscriber` announcing them as
//!     nodes of pool `app.test` (`--subscribe2 server=…,key=app.test,addr=…,weight=…,
//!     modifier1=…`: weights 3/1/1, modifier1 1/2/3): a subscribe datagram built with
//!     `subscription_proto::wire::encode`, taken apart; the subscriber's `--events-json`
//!     lines; the router's uWSGI log lines (`new pool`, `new node`); its stats once they
//!     list the three nodes, a few ms after the subscriber starts;
//! 14. ten requests with `HTTP_HOST=app.test` through the router. It writes the chosen
//!     node's modifier1 into the request, so each echo names its backend: the order is
//!     uWSGI's wrr (spec subscription.md §2.7.1), `C A A A B C A A A B`, checked against
//!     the algorithm replayed here; the stats count 6, 2 and 2 requests;
//! 15. SIGINT to the subscriber: it unsubscribes every node and exits 0, the router drops
//!     the nodes and the pool (its stats show none, a few ms after SIGINT), and a request
//!     for `app.test` gets no response: the router closes the connection, as uWSGI's does;
//!     then SIGINT to the router, which exits 0.
//!
//! 16. a zerg hand-over under load: `zerg-http` A binds a listener on a free port and
//!     shares it on a unix socket (`--zerg-server`); `http-load` sends a steady stream of
//!     requests (8 clients, one request per connection); `zerg-http` B attaches
//!     (`--zerg`) and gets a duplicate of the same listening socket, so both accept;
//!     SIGINT to A, which stops accepting at once and finishes what it has; the load sees
//!     zero failed, refused or timed-out requests, answered by both pids, with the count;
//! 17. an `emperor` watching a temporary directory, running `vassal-demo` vassals: a file
//!     appears (spawned a few ms later, inotify), changes (reload in place, same pid,
//!     the new text served), disappears (stopped and forgotten), each reaction timed
//!     against uWSGI's 3 s scan period; SIGINT to the emperor, which exits 0.
//!
//! # Running it
//!
//! ```text
//! cargo build -p examples --bins && cargo run -p examples --bin cluster-demo
//! ```
//!
//! The demo looks for `uwsgi-echo-server`, `legiond`, `fastrouter` and `subscriber` next to
//! its own executable (`target/debug/`), so build the package's programs first (`cargo run`
//! builds only the one it runs); or pass `--server PATH`, `--legiond PATH`, `--fastrouter
//! PATH` and `--subscriber PATH`. Everything binds **loopback only**. Every wait is bounded
//! by `--timeout` (default 10 s); the whole demo takes about 3 s, the fastrouter's sections
//! under 0.2 s of it. Expect about 360 lines: annotated hex dumps and tables, then the
//! legion's events as they come, then the subscriptions and the routed requests, each
//! section ending with what it measured, such as
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
//! 4.02 s at `--legion-freq 1 --legion-tolerance 3`), a hand-over after SIGINT of a few
//! milliseconds, and the routed requests:
//!
//! ```text
//! == 14. Requests through the fastrouter: uWSGI's weighted round robin =========
//!   …
//!     request  1: HTTP/1.1 200 OK, echo modifier1 3 = backend C (127.0.0.1:35361, weight 1)
//!     request  2: HTTP/1.1 200 OK, echo modifier1 1 = backend A (127.0.0.1:43877, weight 3)
//!   …
//!   order:                     C A A A B C A A A B
//!   uWSGI's wrr (spec §2.7.1): C A A A B C A A A B
//!   …
//!   spread: A 6, B 2, C 2 of 10 (weights 3:1:1)
//! ```
//!
//! The output ends with `all N checks passed`, exit status 0. On any failure it prints
//! `cluster-demo: FAILED: …` and exits with status 1. The echo servers, the legion nodes,
//! the fastrouter and the subscriber are killed when the demo ends, whatever happens.

// A program: its output is the point. It reads the clock to bound its waits and to time the
// legion's elections and the subscriptions, and sleeps briefly while it waits for a process
// to exit or for the fastrouter's stats to change.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program reports on stdout/stderr"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "bounded waits and timings read the clock (Instant::now); exit and stats polls sleep"
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

mod emperor;
mod procs;
mod zerg;
use serde_json::Value;
use subscription_proto::{Command as SubCommand, Request, wire};
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
    /// The fastrouter program to start (default: the one next to this program).
    #[arg(long, value_name = "PATH")]
    fastrouter: Option<PathBuf>,
    /// The subscriber program to start (default: the one next to this program).
    #[arg(long, value_name = "PATH")]
    subscriber: Option<PathBuf>,
    /// The zerg-http program to start, twice (default: the one next to this program).
    #[arg(long, value_name = "PATH")]
    zerg_http: Option<PathBuf>,
    /// The http-load program to start (default: the one next to this program).
    #[arg(long, value_name = "PATH")]
    http_load: Option<PathBuf>,
    /// The emperor program to start (default: the one next to this program).
    #[arg(long, value_name = "PATH")]
    emperor: Option<PathBuf>,
    /// The vassal program the emperor runs (default: vassal-demo next to this program).
    #[arg(long, value_name = "PATH")]
    vassal_demo: Option<PathBuf>,
    /// Upper bound in seconds for every wait (server start, connect, reply, log line,
    /// legion event, subscriber event, stats change, process exit).
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
        router: None,
        backends: Vec::new(),
        subscriber: None,
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
    // `demo` (and with it the server, the legion, the fastrouter, its backends and the
    // subscriber) is dropped here: the Drop guards kill whatever child process still runs.
}

/// The running demo: its settings, the processes it started and the checks passed so far.
struct Demo {
    timeout: Duration,
    section: usize,
    checks: usize,
    server: Option<EchoServer>,
    legion: Option<Legion>,
    router: Option<FastRouter>,
    /// The fastrouter's backends, in [`BACKENDS`] order.
    backends: Vec<EchoServer>,
    subscriber: Option<SubscriberProcess>,
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
        self.section_fastrouter_start(args)?;
        self.section_subscribe(args)?;
        self.section_wrr()?;
        self.section_unsubscribe()?;
        self.section_zerg_hand_over(args)?;
        self.section_emperor(args)?;
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

    fn router(&mut self) -> Result<&mut FastRouter> {
        self.router.as_mut().ok_or_else(|| "the fastrouter is not running".into())
    }

    fn subscriber(&mut self) -> Result<&mut SubscriberProcess> {
        self.subscriber.as_mut().ok_or_else(|| "the subscriber is not running".into())
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

    fn section_fastrouter_start(&mut self, args: &Args) -> Result<()> {
        self.heading("A fastrouter on loopback");
        let program = match &args.fastrouter {
            Some(path) => path.clone(),
            None => sibling_program("fastrouter", "--fastrouter")?,
        };
        println!("  uWSGI's fastrouter (spec subscription.md §2) proxies uwsgi requests: it reads a");
        println!("  request's vars, takes its key (UWSGI_FASTROUTER_KEY, else HTTP_HOST, else");
        println!("  SERVER_NAME) and forwards it to a node of the pool of that key, chosen by the");
        println!("  pool's balancing algorithm (wrr by default). Nobody configures the pools: backends");
        println!("  subscribe to them with UDP datagrams to the router's subscription server, and");
        println!("  refresh them every 10 s (uWSGI's --subscribe-freq). Its stats server answers every");
        println!("  connection with the pools as JSON. Ours takes uWSGI's option names:");
        println!("  $ {} --fastrouter 127.0.0.1:0 \\", program.display());
        println!("      --subscription-server 127.0.0.1:0 --stats 127.0.0.1:0");
        let router = FastRouter::start(&program, self.timeout)?;
        println!("  fastrouter says: listening on {}", router.listen);
        println!("                   subscription server on {}", router.subscription);
        println!("                   stats server on {}", router.stats);
        let stats = router.stats(self.timeout)?;
        self.router = Some(router);
        let pools = stats.get("subscriptions").and_then(Value::as_array).map(Vec::len);
        self.check(pools == Some(0), format!("a new fastrouter's stats show pools: {stats}"))?;
        println!("  stats: version {}, \"subscriptions\": [] (no pool yet)", stats["version"]);
        Ok(())
    }

    fn section_subscribe(&mut self, args: &Args) -> Result<()> {
        self.heading("Three backends subscribe to app.test, weights 3/1/1");
        let server = match &args.server {
            Some(path) => path.clone(),
            None => sibling_program("uwsgi-echo-server", "--server")?,
        };
        let program = match &args.subscriber {
            Some(path) => path.clone(),
            None => sibling_program("subscriber", "--subscriber")?,
        };
        let timeout = self.timeout;
        println!("  $ {} --listen 127.0.0.1:0    (three times)", server.display());
        for b in BACKENDS {
            let backend = EchoServer::start(&server, timeout)?;
            println!("  backend {} says: listening on {}", b.name, backend.addr);
            self.backends.push(backend);
        }
        let addrs: Vec<SocketAddr> = self.backends.iter().map(|b| b.addr).collect();
        let sub_addr = self.router()?.subscription;

        println!("  Each backend becomes a node of pool {KEY} with its own weight and modifier1. The");
        println!("  router writes a node's modifier1 and modifier2 into bytes 0 and 3 of every request");
        println!("  it forwards there (spec §2.5), so the echo tells which backend answered.");
        println!("  A subscribe datagram, built with subscription_proto::wire::encode as a uWSGI 2.0.21");
        println!("  subscriber builds it (spec §1): the uwsgi header, then key/value pairs as in the");
        println!("  uwsgi vars (u16 little-endian lengths), in uWSGI's order:");
        let first = BACKENDS[0];
        let req = Request {
            key: KEY.as_bytes().to_vec(),
            address: addrs[0].to_string().into_bytes(),
            modifier1: first.modifier1,
            weight: first.weight,
            ..Request::default()
        };
        let datagram = wire::encode(SubCommand::Subscribe, &req)?;
        println!("  datagram ({} bytes):", datagram.len());
        print_subscription_header(&datagram);
        hexdump(&datagram[Header::LEN..], Header::LEN);
        let (packet, _) = Packet::parse(&datagram, &Limits::default())?.at_eof()?;
        println!("  pairs (wire order):");
        for (k, v) in packet.vars() {
            println!("    {:<9} = {}", k.escape_ascii().to_string(), v.escape_ascii());
        }
        let decoded = wire::decode(&datagram, wire::Mode::Strict)?;
        self.check(
            decoded.command == SubCommand::Subscribe && decoded.request == req,
            format!("wire::decode does not give back the encoded request: {decoded:?}"),
        )?;
        println!("  wire::decode (Mode::Strict, what a router accepts) gives the request back.");
        println!("  cores and load are informational; an unsubscribe is the same datagram with");
        println!("  modifier2 = 1.");

        let specs: Vec<String> = BACKENDS
            .iter()
            .zip(&addrs)
            .map(|(b, addr)| {
                format!(
                    "server={sub_addr},key={KEY},addr={addr},weight={},modifier1={}",
                    b.weight, b.modifier1
                )
            })
            .collect();
        println!("  $ {} --events-json \\", program.display());
        for (i, spec) in specs.iter().enumerate() {
            println!("      --subscribe2 {spec}{}", if i + 1 < specs.len() { " \\" } else { "" });
        }
        let started = Instant::now();
        let subscriber = SubscriberProcess::start(&program, &specs)?;
        let subscriber = self.subscriber.insert(subscriber);
        println!("  Its events (--events-json), in ms since it was started:");
        let mut sent = Vec::new();
        for addr in &addrs {
            let what = format!("subscribe datagram for {addr}");
            let event = subscriber.wait_for(&what, started, timeout, |e| {
                e["event"] == "sent" && e["command"] == "subscribe" && e["address"] == addr.to_string()
            })?;
            sent.push(event);
        }
        for (event, (b, addr)) in sent.iter().zip(BACKENDS.iter().zip(&addrs)) {
            self.check(
                event["weight"] == b.weight && event["modifier1"] == b.modifier1 && event["key"] == KEY,
                format!("backend {}'s subscription differs from its --subscribe2: {event}", b.name),
            )?;
            // What wire::encode makes of the same subscription: the subscriber must have sent
            // as many bytes.
            let req = Request {
                key: KEY.as_bytes().to_vec(),
                address: addr.to_string().into_bytes(),
                modifier1: b.modifier1,
                weight: b.weight,
                ..Request::default()
            };
            let encoded = wire::encode(SubCommand::Subscribe, &req)?.len();
            self.check(
                event["len"] == encoded,
                format!("backend {}'s datagram is not {encoded} bytes like wire::encode's: {event}", b.name),
            )?;
        }
        println!(
            "  each datagram as long as wire::encode makes it: {} bytes for backend A, as above",
            sent[0]["len"]
        );
        println!("  The fastrouter's log (uWSGI's lines) and its stats:");
        let router = self.router.as_mut().ok_or("the fastrouter is not running")?;
        for addr in &addrs {
            router.log_line(&format!("{KEY} => new node: {addr}"), timeout)?;
        }
        let (stats, seen) = router.wait_stats("three nodes in pool app.test", timeout, |s| {
            pool_nodes(s, KEY).len() == BACKENDS.len()
        })?;
        let nodes = pool_nodes(&stats, KEY);
        println!("  stats, pool {KEY}:");
        println!("    backend  node             modifier1  weight  requests");
        for (node, (b, addr)) in nodes.iter().zip(BACKENDS.iter().zip(&addrs)) {
            println!(
                "    {:<7}  {:<15}  {:<9}  {:<6}  {}",
                b.name, node.name, node.modifier1, node.weight, node.requests
            );
            self.check(
                node.name == addr.to_string()
                    && node.modifier1 == u64::from(b.modifier1)
                    && node.weight == b.weight,
                format!("stats node {} differs from backend {}'s subscription", node.name, b.name),
            )?;
        }
        println!("  the nodes are listed in subscription order, which the balancing depends on");
        println!(
            "  subscribed: the stats showed the three nodes {} ms after the subscriber was started",
            ms(seen.duration_since(started))
        );
        Ok(())
    }

    fn section_wrr(&mut self) -> Result<()> {
        self.heading("Requests through the fastrouter: uWSGI's weighted round robin");
        let timeout = self.timeout;
        let listen = self.router()?.listen;
        let addrs: Vec<SocketAddr> = self.backends.iter().map(|b| b.addr).collect();
        let vars = [
            ("REQUEST_METHOD", "GET"),
            ("PATH_INFO", "/hello"),
            ("SERVER_PROTOCOL", "HTTP/1.1"),
            ("HTTP_HOST", KEY),
        ];
        let mut wire = Vec::new();
        encode_packet(0, 0, &vars, &mut wire)?;
        println!(
            "  {ROUTED_REQUESTS} times the same GET, HTTP_HOST = {KEY} (the key), header {}, {} bytes,",
            hex(&wire[..Header::LEN]),
            wire.len()
        );
        println!("  to the fastrouter at {listen}; each echo names its backend by the modifier1:");
        let mut order = Vec::new();
        for i in 1..=ROUTED_REQUESTS {
            let reply =
                exchange(listen, &wire, timeout).map_err(|e| format!("request {i} to {listen}: {e}"))?;
            let (status, json) = parse_http_reply(&reply)?;
            let echo: Value = serde_json::from_slice(json)?;
            let m1 = echo["modifier1"].as_u64().ok_or_else(|| format!("no modifier1 in the echo {echo}"))?;
            let b = BACKENDS
                .iter()
                .position(|b| u64::from(b.modifier1) == m1)
                .ok_or_else(|| format!("request {i}: modifier1 {m1} is no backend's"))?;
            println!(
                "    request {i:>2}: {status}, echo modifier1 {m1} = backend {} ({}, weight {})",
                BACKENDS[b].name, addrs[b], BACKENDS[b].weight
            );
            self.check(status == "HTTP/1.1 200 OK", format!("request {i}: status {status:?}"))?;
            let sent: Vec<(String, String)> =
                vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            self.check(
                echo_vars(&echo)? == sent && echo["modifier2"] == 0,
                format!("request {i}: the backend got other vars: {echo}"),
            )?;
            order.push(b);
        }
        println!("  every backend got the vars as sent; only header byte 0 changed, to its modifier1");
        let weights: Vec<u64> = BACKENDS.iter().map(|b| b.weight).collect();
        let expected = wrr_order(&weights, ROUTED_REQUESTS);
        let names = |order: &[usize]| order.iter().map(|&b| BACKENDS[b].name).collect::<Vec<_>>().join(" ");
        println!("  order:                     {}", names(&order));
        println!("  uWSGI's wrr (spec §2.7.1): {}", names(&expected));
        self.check(
            order == expected,
            format!("the fastrouter's order {} is not uWSGI's {}", names(&order), names(&expected)),
        )?;
        println!("  the same. uWSGI's wrr gives each node weight / (the smallest weight) credits, here");
        println!("  3, 1, 1 (integer division: weights 3 and 2 give 1:1); a lookup takes the first node");
        println!("  in subscription order with a credit left; when none has one, the credits are reset");
        println!("  and the LAST node is taken. Hence C, then A A A, then B. uWSGI 2.0.21, verified with");
        println!("  real requests: A=3,B=1 gives B A A A B A A A; A=3,B=1,C=1 gives C A A A B.");
        let counts: Vec<usize> =
            (0..BACKENDS.len()).map(|b| order.iter().filter(|&&o| o == b).count()).collect();
        let router = self.router()?;
        let stats = router.stats(timeout)?;
        let nodes = pool_nodes(&stats, KEY);
        let spread: Vec<String> =
            BACKENDS.iter().zip(&counts).map(|(b, n)| format!("{} {n}", b.name)).collect();
        println!("  spread: {} of {ROUTED_REQUESTS} (weights 3:1:1)", spread.join(", "));
        let requests: Vec<u64> = nodes.iter().map(|n| n.requests).collect();
        let hits = pool_hits(&stats, KEY);
        println!(
            "  stats: \"requests\" {} for A, B, C; pool \"hits\" {}",
            requests.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
            hits.map_or_else(|| "?".to_owned(), |h| h.to_string())
        );
        let counted: Vec<u64> = counts.iter().map(|&n| n as u64).collect();
        self.check(requests == counted, format!("the stats count {requests:?} requests, not {counted:?}"))?;
        self.check(
            hits == Some(ROUTED_REQUESTS as u64),
            format!("the pool's hits are {hits:?}, not {ROUTED_REQUESTS}"),
        )?;
        Ok(())
    }

    fn section_unsubscribe(&mut self) -> Result<()> {
        self.heading("The subscriber leaves: SIGINT unsubscribes");
        let timeout = self.timeout;
        let addrs: Vec<SocketAddr> = self.backends.iter().map(|b| b.addr).collect();
        let subscriber = self.subscriber()?;
        let refreshes = subscriber.drain().iter().filter(|e| e["event"] == "sent").count();
        if refreshes > 0 {
            println!("  (meanwhile it refreshed its subscriptions: {refreshes} datagrams)");
        }
        println!("  SIGINT (or SIGTERM) makes the subscriber send an unsubscribe for each node, as a");
        println!("  uWSGI master does at exit, then exit 0.");
        println!("  $ kill -INT {}    (the subscriber)", subscriber.child.id());
        let sent_at = Instant::now();
        send_signal(&subscriber.child, "-INT")?;
        println!("  Its events, in ms since SIGINT was sent:");
        for addr in &addrs {
            let what = format!("unsubscribe datagram for {addr}");
            subscriber.wait_for(&what, sent_at, timeout, |e| {
                e["event"] == "sent" && e["command"] == "unsubscribe" && e["address"] == addr.to_string()
            })?;
        }
        subscriber.wait_for("shutdown event", sent_at, timeout, |e| e["event"] == "shutdown")?;
        let status = wait_exit(&mut subscriber.child, "the subscriber", timeout)?;
        self.check(status.success(), format!("the subscriber ended with {status} after SIGINT"))?;
        println!("  the subscriber {}", ended(status));
        self.subscriber = None;

        println!("  The fastrouter's log:");
        let router = self.router()?;
        router.log_line(&format!("pool removed: {KEY}"), timeout)?;
        let (stats, seen) =
            router.wait_stats("an empty stats table", timeout, |s| pool_nodes(s, KEY).is_empty())?;
        let vars = [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/hello"), ("HTTP_HOST", KEY)];
        let mut wire = Vec::new();
        encode_packet(0, 0, &vars, &mut wire)?;
        let listen = router.listen;
        let reply = exchange(listen, &wire, timeout).map_err(|e| format!("talking to {listen}: {e}"))?;

        let pools = stats.get("subscriptions").and_then(Value::as_array).map(Vec::len);
        self.check(pools == Some(0), format!("pools left after the unsubscribes: {stats}"))?;
        println!(
            "  unsubscribed: {} ms after SIGINT the stats show \"subscriptions\": [], no node, no pool",
            ms(seen.duration_since(sent_at))
        );
        println!(
            "  a request for {KEY} now: {} bytes, then the fastrouter closed the connection; it logged",
            reply.len()
        );
        self.check(
            reply.is_empty(),
            format!("the fastrouter answered {} bytes for an empty pool", reply.len()),
        )?;
        self.router()?.log_line(&format!("no node for key \"{KEY}\""), timeout)?;
        println!("  (uWSGI's fastrouter too closes without a response when no node is left, spec §2.5)");
        let router = self.router()?;
        println!("  $ kill -INT {}    (the fastrouter)", router.child.id());
        send_signal(&router.child, "-INT")?;
        let status = wait_exit(&mut router.child, "the fastrouter", timeout)?;
        self.check(status.success(), format!("the fastrouter ended with {status} after SIGINT"))?;
        println!("  the fastrouter {}; the backends are stopped when the demo ends", ended(status));
        self.router = None;
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
        send_signal(&self.child, name).map_err(|e| format!("{e} (valor {})", self.valor).into())
    }

    /// Waits (bounded) for the process to end.
    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        wait_exit(&mut self.child, &format!("legiond valor {}", self.valor), timeout)
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

/// Sends a signal (`-INT`, …) with kill(1): std only sends SIGKILL.
fn send_signal(child: &Child, name: &str) -> Result<()> {
    let status = Command::new("kill").args([name, &child.id().to_string()]).status()?;
    if status.success() { Ok(()) } else { Err(format!("kill {name} {}: {status}", child.id()).into()) }
}

/// Waits (bounded) for `child`, called `what` in the error, to end.
fn wait_exit(child: &mut Child, what: &str, timeout: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            return Err(format!("{what} did not exit within {} s", timeout.as_secs()).into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---- the fastrouter and its subscribers -------------------------------------------------

/// The pool the backends subscribe to, and the `HTTP_HOST` of the routed requests.
const KEY: &str = "app.test";
/// How many requests go through the fastrouter: two rounds of uWSGI's wrr at weights 3/1/1.
const ROUTED_REQUESTS: usize = 10;
/// How often the stats are read while waiting for a change.
const STATS_POLL: Duration = Duration::from_millis(5);

/// One backend of the fastrouter: an echo server, subscribed with these settings.
#[derive(Clone, Copy)]
struct Backend {
    name: &'static str,
    weight: u64,
    /// Distinct per backend: the router writes it into the requests it forwards there, so
    /// the echo names the backend.
    modifier1: u8,
}

const BACKENDS: [Backend; 3] = [
    Backend { name: "A", weight: 3, modifier1: 1 },
    Backend { name: "B", weight: 1, modifier1: 2 },
    Backend { name: "C", weight: 1, modifier1: 3 },
];

/// Which node takes each of `n` lookups under uWSGI 2.0.21's wrr (spec subscription.md
/// §2.7.1), nodes given by their weights in list order, all alive and subscribed before
/// the first lookup: a lookup takes the first node with a credit left; when none has one,
/// every node gets `weight / min(weight)` credits and the last node is taken.
fn wrr_order(weights: &[u64], n: usize) -> Vec<usize> {
    let min = weights.iter().copied().min().unwrap_or(1).max(1);
    let mut credits = vec![0; weights.len()];
    let mut order = Vec::with_capacity(n);
    for _ in 0..n {
        let chosen = match credits.iter().position(|&c| c > 0) {
            Some(i) => i,
            None => {
                credits = weights.iter().map(|w| w / min).collect();
                weights.len().saturating_sub(1)
            }
        };
        if let Some(c) = credits.get_mut(chosen) {
            *c = c.saturating_sub(1);
        }
        order.push(chosen);
    }
    order
}

/// Prints the 4 header bytes of a subscription datagram and what each field means.
fn print_subscription_header(datagram: &[u8]) {
    let Some(bytes) = datagram.first_chunk::<4>() else { return };
    let h = Header::from_bytes(*bytes);
    println!("  header  {}", hex(bytes));
    println!("          modifier1 = {:<5} a subscription", h.modifier1);
    println!(
        "          datasize  = {:<5} bytes {:02x} {:02x}: the pairs' length, a little-endian u16",
        h.datasize, bytes[1], bytes[2]
    );
    println!("          modifier2 = {:<5} the command: 0 subscribe (or refresh), 1 unsubscribe", h.modifier2);
}

/// A node of a pool, as the fastrouter's stats show it.
struct NodeStats {
    name: String,
    modifier1: u64,
    weight: u64,
    requests: u64,
}

/// The pool `key` of a stats document.
fn pool<'a>(stats: &'a Value, key: &str) -> Option<&'a Value> {
    stats.get("subscriptions")?.as_array()?.iter().find(|p| p["key"] == key)
}

/// The nodes of pool `key` in a stats document, in list order (none if there is no pool).
fn pool_nodes(stats: &Value, key: &str) -> Vec<NodeStats> {
    let nodes = pool(stats, key).and_then(|p| p.get("nodes")).and_then(Value::as_array);
    let num = |n: &Value, k: &str| n.get(k).and_then(Value::as_u64).unwrap_or_default();
    nodes
        .into_iter()
        .flatten()
        .map(|n| NodeStats {
            name: n.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
            modifier1: num(n, "modifier1"),
            weight: num(n, "weight"),
            requests: num(n, "requests"),
        })
        .collect()
}

/// The `hits` of pool `key`.
fn pool_hits(stats: &Value, key: &str) -> Option<u64> {
    pool(stats, key)?.get("hits")?.as_u64()
}

/// The `fastrouter` child process. Dropping it kills the process.
struct FastRouter {
    child: Child,
    /// The uwsgi-protocol listener.
    listen: SocketAddr,
    /// The UDP subscription server.
    subscription: SocketAddr,
    /// The stats server.
    stats: SocketAddr,
    /// Its stderr, line by line (uWSGI's log lines).
    log: Receiver<String>,
}

impl FastRouter {
    /// Starts it on free ports of 127.0.0.1 and learns them from its first lines.
    fn start(program: &PathBuf, timeout: Duration) -> Result<Self> {
        let mut child = Command::new(program)
            .args(["--fastrouter", "127.0.0.1:0"])
            .args(["--subscription-server", "127.0.0.1:0"])
            .args(["--stats", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        // Built first, so that an error below still stops the child.
        let (log_tx, log) = mpsc::channel();
        let unset = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut router = Self { child, listen: unset, subscription: unset, stats: unset, log };
        let (out_tx, out_rx) = mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || forward_lines(stdout, &out_tx, std::convert::identity));
        }
        if let Some(stderr) = stderr {
            std::thread::spawn(move || forward_lines(stderr, &log_tx, std::convert::identity));
        }
        let deadline = Instant::now() + timeout;
        let (mut listen, mut subscription, mut stats) = (None, None, None);
        while listen.is_none() || subscription.is_none() || stats.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = out_rx.recv_timeout(left).map_err(|_| {
                format!(
                    "{} printed no `listening on`, `subscription server on` and `stats server on` \
                     lines within {} s",
                    program.display(),
                    timeout.as_secs()
                )
            })?;
            let parse = |prefix: &str| line.strip_prefix(prefix).and_then(|a| a.parse::<SocketAddr>().ok());
            if let Some(a) = parse("listening on ") {
                listen = Some(a);
            } else if let Some(a) = parse("subscription server on ") {
                subscription = Some(a);
            } else if let Some(a) = parse("stats server on ") {
                stats = Some(a);
            } else {
                return Err(format!("unexpected line from the fastrouter: {line:?}").into());
            }
        }
        router.listen = listen.unwrap_or(unset);
        router.subscription = subscription.unwrap_or(unset);
        router.stats = stats.unwrap_or(unset);
        Ok(router)
    }

    /// One stats document: connect, read until the router closes, parse.
    fn stats(&self, timeout: Duration) -> Result<Value> {
        let raw = exchange(self.stats, b"", timeout)
            .map_err(|e| format!("reading the fastrouter's stats at {}: {e}", self.stats))?;
        serde_json::from_slice(&raw).map_err(|e| format!("the fastrouter's stats are not JSON: {e}").into())
    }

    /// Reads the stats every [`STATS_POLL`] until `pred` holds (bounded); returns them and
    /// when they were read.
    fn wait_stats(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<(Value, Instant)> {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.stats(timeout)?;
            let at = Instant::now();
            if pred(&stats) {
                return Ok((stats, at));
            }
            if at >= deadline {
                return Err(format!(
                    "the fastrouter's stats showed no {what} within {} s",
                    timeout.as_secs()
                )
                .into());
            }
            std::thread::sleep(STATS_POLL);
        }
    }

    /// Waits (bounded) for a log line containing `text`, printing every line read.
    fn log_line(&mut self, text: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.log.recv_timeout(left).map_err(|_| {
                format!("the fastrouter logged no line with {text:?} within {} s", timeout.as_secs())
            })?;
            println!("    {line}");
            if line.contains(text) {
                return Ok(line);
            }
        }
    }
}

impl Drop for FastRouter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line a process printed, and when its reader thread read it.
struct TimedLine {
    at: Instant,
    stderr: bool,
    line: String,
}

/// The `subscriber` child process and its `--events-json` lines. Dropping it kills the
/// process (without the unsubscribes: SIGKILL).
struct SubscriberProcess {
    child: Child,
    lines: Receiver<TimedLine>,
    /// Events read but not waited for yet.
    pending: Vec<Value>,
}

impl SubscriberProcess {
    fn start(program: &PathBuf, specs: &[String]) -> Result<Self> {
        let mut cmd = Command::new(program);
        cmd.arg("--events-json");
        for spec in specs {
            cmd.arg("--subscribe2").arg(spec);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (tx, lines) = mpsc::channel();
        let line = move |stderr| move |line| TimedLine { at: Instant::now(), stderr, line };
        if let Some(stdout) = stdout {
            let tx = tx.clone();
            std::thread::spawn(move || forward_lines(stdout, &tx, line(false)));
        }
        if let Some(stderr) = stderr {
            std::thread::spawn(move || forward_lines(stderr, &tx, line(true)));
        }
        Ok(Self { child, lines, pending: Vec::new() })
    }

    /// The first event matching `pred`, among those read already or within `timeout`; the
    /// events read meanwhile are printed, in ms since `origin`.
    fn wait_for(
        &mut self,
        what: &str,
        origin: Instant,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        if let Some(i) = self.pending.iter().position(&pred) {
            return Ok(self.pending.remove(i));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match self.lines.recv_timeout(left) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(
                        format!("the subscriber sent no {what} within {} s", timeout.as_secs()).into()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("the subscriber exited before its {what}").into());
                }
            };
            if msg.stderr {
                println!("    [subscriber stderr] {}", msg.line);
                continue;
            }
            let event: Value = serde_json::from_str(&msg.line)
                .map_err(|_| format!("not a subscriber --events-json line: {:?}", msg.line))?;
            println!(
                "    +{:>4} ms  {}",
                ms(msg.at.saturating_duration_since(origin)),
                gloss_subscriber(&event)
            );
            if pred(&event) {
                return Ok(event);
            }
            self.pending.push(event);
        }
    }

    /// Every event not waited for yet, and those the process printed since (not shown;
    /// stderr lines are).
    fn drain(&mut self) -> Vec<Value> {
        let mut events = std::mem::take(&mut self.pending);
        while let Ok(msg) = self.lines.try_recv() {
            if msg.stderr {
                println!("    [subscriber stderr] {}", msg.line);
            } else if let Ok(event) = serde_json::from_str(&msg.line) {
                events.push(event);
            }
        }
        events
    }
}

impl Drop for SubscriberProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A subscriber event in words: `sent subscribe app.test 127.0.0.1:40001, weight 3,
/// modifier1 1: 103 bytes`.
fn gloss_subscriber(e: &Value) -> String {
    let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    match text("event").as_str() {
        "sent" => format!(
            "sent      {:<11} {} {}, weight {}, modifier1 {}: {} bytes",
            text("command"),
            text("key"),
            text("address"),
            e["weight"],
            e["modifier1"],
            e["len"]
        ),
        "started" => "started   (signals handled from now on)".to_owned(),
        "shutdown" => "shutdown  (every unsubscribe sent)".to_owned(),
        other => format!("{other:<9} {e}"),
    }
}
