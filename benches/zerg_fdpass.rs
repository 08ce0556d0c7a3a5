//! Latency of a zerg attach, ours and uWSGI 2.0.21's side by side, on this machine.
//!
//! One sample = one [`zerg_fdpass::driver::attach`]: connect to the zerg server's unix
//! socket, receive the 14-byte hand-off and its `SCM_RIGHTS` fds, and check every fd
//! (`SO_TYPE`, `SO_ACCEPTCONN`, `getsockname`: a bound, listening stream socket), so the
//! listeners are ready to `accept()`. Closing them afterwards is not timed. The offer is
//! `N` TCP listeners on `127.0.0.1:0` (`N` = 1 and 64), the same on every server:
//!
//! * `zerg_fdpass/attach/driver/<N>`: our [`ServerDriver`] in a mio loop on a thread of
//!   the bench process;
//! * `zerg_fdpass/attach/zergpool/<N>`: our `zergpool` program (`--zergpool
//!   SOCK:127.0.0.1:0,…`), a separate process, when it is built (`$ZERGPOOL`, else
//!   `target/release/zergpool`; without it these rows are left out, with a note);
//! * `zerg_fdpass/attach/uwsgi-zerg-server/<N>`: a real `uwsgi --master --zerg-server SOCK`
//!   with `N` × `--socket 127.0.0.1:0` (its master serves attaches inside its event loop);
//! * `zerg_fdpass/attach/uwsgi-zergpool/<N>`: a real `uwsgi --plugin zergpool --zergpool
//!   SOCK:127.0.0.1:0,…` (its `zergpool 1` gateway process serves them).
//!
//! The client is ours in every row, so the rows compare the servers; the client's share
//! (a mio `Poll`, connect, `recvmsg` with room for 253 fds, the fd checks) is the same in
//! each. uWSGI's own client cannot be timed from here (it attaches once, at startup,
//! inside `uwsgi --zerg`): `benches/zerg_attach.sh` times both clients' exchanges under
//! `perf trace`.
//!
//! The four servers of a size run at once. After criterion's rows (one server after the
//! other), an **interleaved pass** (`cargo bench` only, not `cargo test --benches`) attaches
//! to every server in turn, 10 attaches each, 400 rounds, the order rotating, and prints
//! p50/p90/p99 per server and the ratio of each of ours to uWSGI's server of the same kind
//! (driver : `--zerg-server`, zergpool : `--zergpool`): on a shared 2-CPU machine drift
//! between criterion's rows can be larger than the differences between servers, and the
//! interleaved ratios are the ones to quote.
//!
//! Every peer process is started by the bench, in its own process group, in a temporary
//! directory, and stopped when its size is done (SIGINT, then SIGKILL of the group).
//!
//! Run: `cargo build --release -p examples --bin zergpool && taskset -c 1 cargo bench -p
//! benches --bench zerg_fdpass` (about 40 s). `taskset` puts the bench, its server thread and
//! every peer on one CPU (the peers inherit the affinity): no cross-CPU wake-ups, whose cost
//! on a shared VM swings between about 25 and 70 µs from one minute to the next and swamps
//! the differences between servers; pinned, the interleaved ratios repeat within a few
//! percent. Needs `uwsgi` (Debian `uwsgi-core`, with the zergpool plugin). Results:
//! `BENCHMARKS.md`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "bench setup: a failure should abort the run; notes on stderr, the interleaved table on stdout"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "iter_custom's timer, the server thread's clock, bounded waits for the peers"
)]

use std::hint::black_box;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mio::{Events, Poll, Token, Waker};
use zerg_fdpass::client::AttachOptions;
use zerg_fdpass::driver::{ServerDriver, SocketFile, attach};
use zerg_fdpass::{ListenAddr, Listener, ZergAddr};

/// Offer sizes.
const SIZES: [usize; 2] = [1, 64];
/// How long a peer may take to start.
const START: Duration = Duration::from_secs(15);

/// Our server driver on a thread of this process, offering `n` fresh TCP listeners.
struct DriverThread {
    addr: ZergAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl DriverThread {
    fn start(n: usize) -> Self {
        let dir = tempfile::Builder::new().prefix("zerg-bench-").tempdir().unwrap();
        let addr: ZergAddr = dir.path().join("zs.sock").display().to_string().parse().unwrap();
        let tcp: ListenAddr = "127.0.0.1:0".parse().unwrap();
        let listeners: Vec<Listener> = (0..n).map(|_| Listener::bind(&tcp).unwrap()).collect();
        let offer = listeners.iter().map(|l| l.fd.try_clone().unwrap()).collect();
        let mut driver =
            ServerDriver::bind(&addr, ServerDriver::default_config(), SocketFile::default(), offer).unwrap();
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        driver.register(poll.registry(), Token(1)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let _listeners = listeners;
            let mut events = Events::with_capacity(64);
            while !stopping.load(Ordering::Acquire) {
                let timeout = driver.timeout(Instant::now());
                match poll.poll(&mut events, timeout) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => panic!("poll: {e}"),
                }
                for event in &events {
                    driver.handle_ready(poll.registry(), event, Instant::now()).unwrap();
                }
                driver.handle_timeout(poll.registry(), Instant::now());
                while driver.poll_event().is_some() {}
            }
        });
        Self { addr, stop, waker, thread: Some(thread), _dir: dir }
    }
}

impl Drop for DriverThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A peer process (uWSGI or our zergpool) in its own process group, its output in files
/// of its own temporary directory. Dropping it stops it: SIGINT, then SIGKILL of the group
/// after 5 s.
struct PeerProcess {
    label: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl PeerProcess {
    /// Starts `program args` (`{dir}` in an argument is replaced by the peer's directory)
    /// and waits until its stdout or stderr contains `ready`.
    fn start(label: &str, program: &Path, args: &[String], ready: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("zerg-bench-").tempdir().unwrap();
        let d = dir.path().display().to_string();
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &d)).collect();
        let out = std::fs::File::create(dir.path().join("stdout")).unwrap();
        let err = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let child = Command::new(program)
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{label}: cannot start {}: {e}", program.display()));
        let mut peer = Self { label: label.to_owned(), child, dir };
        let deadline = Instant::now() + START;
        while !peer.output().contains(ready) {
            if let Some(status) = peer.child.try_wait().unwrap() {
                panic!("{label}: exited during startup ({status}):\n{}", peer.output());
            }
            assert!(Instant::now() < deadline, "{label}: not ready within {START:?}:\n{}", peer.output());
            thread::sleep(Duration::from_millis(20));
        }
        peer
    }

    fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    fn zerg_addr(&self) -> ZergAddr {
        self.dir.path().join("zs.sock").display().to_string().parse().unwrap()
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                eprintln!("{}: still running 5 s after SIGINT, killing its group", self.label);
                let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
                let _ = self.child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The absolute path of `name` on `PATH` (or in /usr/bin), or a panic that says so.
fn require_program(name: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed (Debian: apt-get install uwsgi-core)"))
}

/// Our `zergpool` binary, if built.
fn zergpool_binary() -> Option<PathBuf> {
    let path = std::env::var_os("ZERGPOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/zergpool"));
    path.is_file().then_some(path)
}

/// `SOCK:127.0.0.1:0,…` with `n` items, for `--zergpool`.
fn pool_spec(n: usize) -> String {
    format!("{{dir}}/zs.sock:{}", vec!["127.0.0.1:0"; n].join(","))
}

/// Times `attach(addr)` (the listeners are dropped outside the timed part), checking
/// every sample got `n` fds.
fn bench_attach(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    server: &str,
    addr: &ZergAddr,
    n: usize,
) {
    let options = AttachOptions::default();
    let first = attach(addr, &options).unwrap_or_else(|e| panic!("{server}/{n}: attach: {e}"));
    assert_eq!(first.len(), n, "{server}/{n}: fds received");
    drop(first);
    group.bench_function(BenchmarkId::new(server, n), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let listeners = attach(black_box(addr), &options).unwrap();
                total += start.elapsed();
                assert_eq!(listeners.len(), n);
                drop(listeners);
            }
            total
        });
    });
}

/// The servers of one offer size, all running at once.
struct Servers {
    driver: DriverThread,
    peers: Vec<(&'static str, PeerProcess)>,
}

impl Servers {
    fn start(n: usize, uwsgi: &Path, zergpool: Option<&Path>) -> Self {
        let driver = DriverThread::start(n);
        let mut peers = Vec::new();
        if let Some(zergpool) = zergpool {
            let args = vec!["--events-json".to_owned(), "--zergpool".to_owned(), pool_spec(n)];
            peers.push(("zergpool", PeerProcess::start("our zergpool", zergpool, &args, "\"listening\"")));
        }
        let mut args: Vec<String> =
            ["--master", "--die-on-term", "--zerg-server", "{dir}/zs.sock"].map(str::to_owned).to_vec();
        for _ in 0..n {
            args.extend(["--socket".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        let zs = PeerProcess::start("uwsgi --zerg-server", uwsgi, &args, "*** Zerg server enabled on");
        peers.push(("uwsgi-zerg-server", zs));
        let args: Vec<String> =
            ["--master", "--die-on-term", "--plugin", "zergpool", "--zergpool"].map(str::to_owned).to_vec();
        let args = [args, vec![pool_spec(n)]].concat();
        let zp = PeerProcess::start("uwsgi --zergpool", uwsgi, &args, "spawned uWSGI zergpool 1");
        peers.push(("uwsgi-zergpool", zp));
        Self { driver, peers }
    }

    /// `(row name, zerg socket)` of every server, ours first.
    fn targets(&self) -> Vec<(&'static str, ZergAddr)> {
        let mut out = vec![("driver", self.driver.addr.clone())];
        out.extend(self.peers.iter().map(|(name, p)| (*name, p.zerg_addr())));
        out
    }
}

/// Rounds of the interleaved pass, and attaches per server per round.
const ROUNDS: usize = 400;
const PER_ROUND: usize = 10;

/// The interleaved pass: every server in turn (the order rotating each round), `PER_ROUND`
/// attaches each, `ROUNDS` times, so that drift on a shared machine hits every server
/// alike; the per-attach samples of each server.
fn interleaved(targets: &[(&'static str, ZergAddr)], n: usize) -> Vec<Vec<Duration>> {
    let options = AttachOptions::default();
    let mut samples = vec![Vec::with_capacity(ROUNDS * PER_ROUND); targets.len()];
    for round in 0..ROUNDS {
        for k in 0..targets.len() {
            let i = (round + k) % targets.len();
            for _ in 0..PER_ROUND {
                let start = Instant::now();
                let listeners = attach(&targets[i].1, &options).unwrap();
                samples[i].push(start.elapsed());
                assert_eq!(listeners.len(), n);
            }
        }
    }
    samples
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

fn bench_attach_latency(c: &mut Criterion) {
    let uwsgi = require_program("uwsgi");
    let zergpool = zergpool_binary();
    if zergpool.is_none() {
        eprintln!(
            "note: our zergpool program is not built, its rows are left out \
             (cargo build --release -p examples --bin zergpool, or set ZERGPOOL=PATH)"
        );
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not (one pass per row, no
    // interleaved table).
    let benching = std::env::args().any(|a| a == "--bench");
    let mut table = Vec::new();
    let mut group = c.benchmark_group("zerg_fdpass/attach");
    group.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500)).sample_size(50);
    for n in SIZES {
        let servers = Servers::start(n, &uwsgi, zergpool.as_deref());
        let targets = servers.targets();
        for (name, addr) in &targets {
            bench_attach(&mut group, name, addr, n);
        }
        if benching {
            let samples = interleaved(&targets, n);
            for ((name, _), mut s) in targets.iter().zip(samples) {
                s.sort_unstable();
                table.push((n, *name, percentile(&s, 0.5), percentile(&s, 0.9), percentile(&s, 0.99)));
            }
        }
    }
    group.finish();
    if !table.is_empty() {
        println!(
            "\nzerg_fdpass/attach, interleaved ({ROUNDS} rounds x {PER_ROUND} attaches per server, order rotating):"
        );
        println!(
            "{:>3}  {:<18} {:>9} {:>9} {:>9}  {:>14}",
            "N", "server", "p50 µs", "p90 µs", "p99 µs", "p50 / uWSGI's"
        );
        for &(n, name, p50, p90, p99) in &table {
            // Ours against the uWSGI server of the same kind: a server inside a program's
            // loop (uWSGI's master) for the driver, a dedicated pool for zergpool.
            let peer = match name {
                "driver" => Some("uwsgi-zerg-server"),
                "zergpool" => Some("uwsgi-zergpool"),
                _ => None,
            };
            let ratio = peer
                .and_then(|p| table.iter().find(|r| r.0 == n && r.1 == p))
                .map_or(String::new(), |r| format!("{:.2} ({})", p50 / r.2, r.1));
            println!("{n:>3}  {name:<18} {p50:>9.1} {p90:>9.1} {p99:>9.1}  {ratio}");
        }
    }
}

criterion_group!(benches, bench_attach_latency);
criterion_main!(benches);
