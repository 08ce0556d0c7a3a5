//! `subscription-blast`: a load generator for subscription servers: sends uWSGI subscribe
//! datagrams for `--keys` keys × `--nodes` nodes over UDP at a fixed rate, and reports
//! what it sent as one JSON line.
//!
//! It demonstrates `subscription_proto::wire::encode` used as a plain codec: every datagram
//! is encoded once, before the clock starts, exactly as a uWSGI 2.0.21 subscriber sends it
//! (`key`, `address`, `modifier1`, `modifier2`, `cores`, `load`, `weight`); the timed loop
//! only calls `send`. `benches/subscription_throughput.sh` uses it to compare the
//! workspace's `fastrouter` with uWSGI's own fastrouter (BENCHMARKS.md).
//!
//! # Running it
//!
//! ```text
//! cargo run -p examples --bin fastrouter -- --fastrouter 127.0.0.1:3017 \
//!   --subscription-server 127.0.0.1:2626 --stats 127.0.0.1:3018 2> /dev/null &
//! cargo run --release -p examples --bin subscription-blast -- --target 127.0.0.1:2626 \
//!   --keys 10000 --nodes 3 --rate 50000 --count 150000
//! ```
//!
//! sends 150,000 datagrams at 50,000 a second (three seconds), then prints
//!
//! ```text
//! {"achieved_pps":49999.9,"bytes_max":112,"bytes_min":112,"count":150000,"distinct":30000,"elapsed_s":3.000004,"keys":10000,"max_lag":41,"nodes":3,"rate":50000,"send_errors":0,"sent":150000,"slipped":0,"target":"127.0.0.1:2626"}
//! ```
//!
//! and exits 0. The router then holds 10,000 pools (`k00000.blast.test` …) of 3 nodes
//! (`127.0.0.1:40001` …, nothing listens there). Datagram `i` is node `i / keys % nodes` of
//! key `i % keys`: the first `keys × nodes` datagrams create every node once, each key's
//! first node first; later ones are refreshes in the same order.
//!
//! The target must be a **loopback** address (`127.0.0.0/8` or `[::1]`): this floods the
//! receiver, and subscriptions are unsigned. Anything else is refused (exit 2).
//!
//! # Options
//!
//! | option | meaning |
//! |---|---|
//! | `--target ADDR` | the subscription server, a loopback `IP:PORT` (required) |
//! | `--keys N` | distinct keys (1–1,000,000; 10000) |
//! | `--nodes N` | nodes per key (1–1,000; 3); `keys × nodes` at most 2,000,000 |
//! | `--rate PPS` | datagrams per second, 1–10,000,000; 0 = as fast as one thread can send (0) |
//! | `--count N` | datagrams to send, at most 100,000,000 (default `keys × nodes`) |
//! | `--duration S` | stop after S seconds even if `--count` is not reached (at most 600; 600) |
//! | `--port-base P` | node `j` is `127.0.0.1:(P + j)` (40001) |
//! | `--max-burst N` | most datagrams sent back to back to catch up after a stall (64) |
//!
//! Pacing: slot `n` is due `n / rate` seconds after the start; the loop sends what is due,
//! then sleeps while it is ahead, so bursts stay short (a sleep overshoot's worth of
//! datagrams, a few dozen at 400,000 a second). When the thread falls more than
//! `--max-burst` slots behind (it was preempted, or cannot send that fast), the extra slots
//! are given up rather than sent in one burst: `slipped` counts them, `max_lag` is the
//! most slots that were ever due but unsent at one check, and `achieved_pps` is the rate
//! really sent (below `rate` when the generator, not the pacing, set it). A send that
//! fails (`ECONNREFUSED` after an ICMP error when nothing listens, `ENOBUFS`) is counted in
//! `send_errors` and not retried. The JSON keys come sorted. Invalid options exit 2, a
//! socket that cannot be opened 1.

// A command-line program: its output is the point; it paces its sends with the clock and
// short sleeps, and sends from a blocking std socket (no event loop to drive).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program reports on stdout/stderr"
)]
#![allow(clippy::disallowed_methods, reason = "the send loop paces itself with the clock and sleeps")]
#![allow(clippy::disallowed_types, reason = "a blocking UDP socket is all a load generator needs")]

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use subscription_proto::wire;
use subscription_proto::{Command, Request};

/// Exit status for invalid options (clap's own errors exit 2 too).
const USAGE: u8 = 2;
/// Most distinct datagrams kept in memory (about 120 bytes each).
const MAX_DISTINCT: u64 = 2_000_000;
/// Most datagrams sent in one run.
const MAX_COUNT: u64 = 100_000_000;
/// Longest run, in seconds.
const MAX_DURATION: u64 = 600;
/// Datagrams sent between two looks at the clock when the generator is behind.
const CHECK_EVERY: u64 = 64;
/// The shortest sleep worth taking; closer to the next due time the loop yields instead.
const MIN_SLEEP: Duration = Duration::from_micros(50);

/// Command line (the option names are a public contract, STYLE §3.11).
#[derive(Parser, Debug)]
#[command(
    version,
    about = "Sends uWSGI subscribe datagrams for KEYS x NODES to a loopback subscription server at a fixed rate",
    after_help = "Prints one JSON line. Loopback targets only. Invalid options: exit 2."
)]
struct Args {
    /// The subscription server: a loopback IP:PORT.
    #[arg(long, value_name = "ADDR", value_parser = parse_target)]
    target: SocketAddr,
    /// Distinct keys (pools).
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    keys: u64,
    /// Nodes per key.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    nodes: u64,
    /// Datagrams per second; 0 sends as fast as possible.
    #[arg(long, value_name = "PPS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000_000))]
    rate: u64,
    /// Datagrams to send (default: keys x nodes, each node once).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT))]
    count: Option<u64>,
    /// Stop after this many seconds even if --count is not reached.
    #[arg(long, value_name = "SECS", default_value_t = MAX_DURATION, value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION))]
    duration: u64,
    /// Node j of every key is 127.0.0.1:(PORT + j).
    #[arg(long, value_name = "PORT", default_value_t = 40_001, value_parser = clap::value_parser!(u16).range(1..))]
    port_base: u16,
    /// Most datagrams sent back to back to catch up after a stall; slots beyond are skipped.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_burst: u64,
}

fn parse_target(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.parse().map_err(|e| format!("expected IP:PORT ({e})"))?;
    let loopback = match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    };
    if !loopback {
        return Err(format!("{addr} is not a loopback address: this tool floods its target"));
    }
    if addr.port() == 0 {
        return Err("the target needs a port".into());
    }
    Ok(addr)
}

/// What a run did.
struct Report {
    sent: u64,
    send_errors: u64,
    elapsed: Duration,
    max_lag: u64,
    slipped: u64,
}

/// How `blast` paces its sends.
#[derive(Clone, Copy)]
struct Pace {
    /// Datagrams per second; 0: unpaced.
    rate: u64,
    /// Datagrams to send.
    count: u64,
    /// Longest run.
    limit: Duration,
    /// Most datagrams sent back to back to catch up after a stall.
    max_burst: u64,
}

/// Encodes datagram `j * keys + k`: node `j` of key `k` (options checked by [`check_options`]).
fn encode_all(args: &Args) -> Result<Vec<Vec<u8>>, String> {
    let distinct = args.keys * args.nodes;
    let mut out = Vec::with_capacity(usize::try_from(distinct).map_err(|e| e.to_string())?);
    for j in 0..args.nodes {
        let address = format!("127.0.0.1:{}", u64::from(args.port_base) + j);
        for k in 0..args.keys {
            let req = Request {
                key: format!("k{k:05}.blast.test").into_bytes(),
                address: address.clone().into_bytes(),
                cores: 1,
                weight: 1,
                ..Request::default()
            };
            out.push(wire::encode(Command::Subscribe, &req).map_err(|e| format!("encode: {e}"))?);
        }
    }
    Ok(out)
}

/// Sends `count` datagrams from `datagrams` (cycling) at `rate` a second (0: unpaced), for
/// `limit` at most, never more than `max_burst` behind schedule.
fn blast(sock: &UdpSocket, datagrams: &[Vec<u8>], pace: Pace) -> Report {
    let Pace { rate, count, limit, max_burst } = pace;
    let start = Instant::now();
    let mut report = Report { sent: 0, send_errors: 0, elapsed: Duration::ZERO, max_lag: 0, slipped: 0 };
    let mut next = datagrams.iter().cycle();
    while report.sent < count {
        let elapsed = start.elapsed();
        if elapsed >= limit {
            break;
        }
        let due = if rate == 0 {
            count
        } else {
            // elapsed < 600 s and rate ≤ 10^7: the product fits a u128 with room to spare.
            let slots = elapsed.as_nanos() * u128::from(rate) / 1_000_000_000;
            let slots = u64::try_from(slots).unwrap_or(u64::MAX);
            let mut lag = slots.saturating_sub(report.sent + report.slipped);
            report.max_lag = report.max_lag.max(lag);
            if lag > max_burst {
                // Stalled (preempted): forfeit the slots rather than catch up in one burst
                // that no receive buffer is sized for.
                report.slipped += lag - max_burst;
                lag = max_burst;
            }
            (report.sent + lag).min(count)
        };
        if due <= report.sent {
            // Ahead of schedule: wait for the next slot.
            let slot = report.sent + report.slipped + 1;
            let next_due = Duration::from_nanos(slot.saturating_mul(1_000_000_000) / rate.max(1));
            let wait = next_due.saturating_sub(elapsed);
            if wait >= MIN_SLEEP {
                std::thread::sleep(wait);
            } else {
                std::thread::yield_now();
            }
            continue;
        }
        let batch_end = due.min(report.sent + CHECK_EVERY);
        while report.sent < batch_end {
            let Some(d) = next.next() else { break };
            match sock.send(d) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => report.send_errors += 1,
            }
            report.sent += 1;
        }
    }
    report.elapsed = start.elapsed();
    report
}

fn run(args: &Args) -> Result<(), String> {
    let datagrams = encode_all(args)?;
    let bytes_min = datagrams.iter().map(Vec::len).min().unwrap_or(0);
    let bytes_max = datagrams.iter().map(Vec::len).max().unwrap_or(0);
    let local: SocketAddr = match args.target {
        SocketAddr::V4(_) => "127.0.0.1:0",
        SocketAddr::V6(_) => "[::1]:0",
    }
    .parse()
    .map_err(|e| format!("{e}"))?;
    let sock = UdpSocket::bind(local).map_err(|e| format!("bind {local}: {e}"))?;
    sock.connect(args.target).map_err(|e| format!("connect {}: {e}", args.target))?;
    let count = args.count.unwrap_or(args.keys * args.nodes);
    let pace =
        Pace { rate: args.rate, count, limit: Duration::from_secs(args.duration), max_burst: args.max_burst };
    let report = blast(&sock, &datagrams, pace);
    let secs = report.elapsed.as_secs_f64();
    // Counts stay far below 2^53: exact as f64.
    #[allow(clippy::cast_precision_loss, reason = "counts below 2^53")]
    let achieved = if secs > 0.0 { report.sent as f64 / secs } else { 0.0 };
    let line = serde_json::json!({
        "target": args.target.to_string(),
        "keys": args.keys,
        "nodes": args.nodes,
        "distinct": datagrams.len(),
        "bytes_min": bytes_min,
        "bytes_max": bytes_max,
        "rate": args.rate,
        "count": count,
        "sent": report.sent,
        "send_errors": report.send_errors,
        "elapsed_s": (secs * 1e6).round() / 1e6,
        "achieved_pps": (achieved * 10.0).round() / 10.0,
        "max_lag": report.max_lag,
        "slipped": report.slipped,
    });
    println!("{line}");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = check_options(&args) {
        eprintln!("subscription-blast: {e}");
        return ExitCode::from(USAGE);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("subscription-blast: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The option combinations clap cannot check alone.
fn check_options(args: &Args) -> Result<(), String> {
    if u64::from(args.port_base) + args.nodes - 1 > u64::from(u16::MAX) {
        return Err(format!("--port-base {} + --nodes {} passes port 65535", args.port_base, args.nodes));
    }
    if args.keys * args.nodes > MAX_DISTINCT {
        return Err(format!("--keys × --nodes = {}: at most {MAX_DISTINCT}", args.keys * args.nodes));
    }
    Ok(())
}
