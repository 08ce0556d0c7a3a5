//! `zergpool`: uWSGI's zergpool: binds listening sockets once and hands them to every zerg
//! that attaches, from uWSGI's own `--zergpool` option.
//!
//! It demonstrates `zerg_fdpass::driver::ServerDriver` embedded in a mio loop of its own:
//! one driver per pool socket, all in one `mio::Poll` with SIGINT/SIGTERM. Like uWSGI's
//! zergpool plugin it never accepts on the pooled sockets itself: requests are served only
//! by the zergs that attached (uWSGI instances with `--zerg POOL`, or the workspace's
//! `zerg-http --zerg POOL`). Start more zergs to add capacity, stop old ones to retire
//! them: the listening sockets, and the connections queued on them, outlive every zerg.
//!
//! # Running it
//!
//! ```text
//! cargo run -p examples --bin zergpool -- \
//!   --zergpool /tmp/pool1.sock:127.0.0.1:8080,[::1]:8080,/tmp/app.sock \
//!   --zergpool @pool2:127.0.0.1:8081 --events-json
//! cargo run -p examples --bin zerg-http -- --zerg /tmp/pool1.sock --text one &
//! cargo run -p examples --bin zerg-http -- --zerg /tmp/pool1.sock --text two &
//! curl http://127.0.0.1:8080/            # "PID one" or "PID two"
//! ```
//!
//! On stderr it prints uWSGI's lines (`zergpool /tmp/pool1.sock bound to TCP socket
//! 127.0.0.1:8080 (fd: 3)`); with `--events-json`, one JSON object per line on stdout
//! (below), else a line per attach on stderr. Bind the pooled sockets to **loopback
//! only** in such experiments, and keep the pool sockets private: whoever attaches gets
//! the listening sockets and can answer (or steal) their traffic.
//!
//! # Options
//!
//! | option | meaning |
//! |---|---|
//! | `--zergpool SOCK:ADDR[,ADDR…]` (`--zerg-pool`) | a pool socket `SOCK` (a path, or `@name` for a Linux abstract name with uWSGI's trailing NUL) handing out the listeners bound on the `ADDR`s, in order (repeatable; at least one). Split at the **first** `:`; an `ADDR` with a `:` is TCP (`IP:PORT`, `:PORT` for every IPv4 interface, `[IPv6]:PORT`, `HOST:PORT` resolved once), else a unix path or `@name`. Empty items are skipped (uWSGI's `strtok`), and an empty list (`SOCK:`) is a pool that hands out no sockets. At most 253 `ADDR`s (one `SCM_RIGHTS` message) |
//! | `--chmod-socket[=MODE]` | mode of the pool socket files (3 octal digits, default `600`; without a value, or `1`, `666` as in uWSGI), and, as uWSGI does, of the pooled unix socket files (which keep the umask's mode without this option) |
//! | `--zerg-allow-uid UID`, `--zerg-allow-gid GID` | only these uids, or members of these primary gids, may attach (repeatable; checked with `SO_PEERCRED`). Default: this process's uid and root |
//! | `--zerg-allow-any` | anyone who can connect may attach (uWSGI's behaviour: then only the file mode protects a pool, and abstract names have none) |
//! | `--events-json` | one JSON object per line on stdout |
//!
//! `--events-json` lines (`t_ms` is the Unix time in milliseconds; `pid`/`uid` are the
//! peer's, `null` when unknown):
//!
//! ```text
//! {"t_ms":…,"event":"listening","pool":"/tmp/pool1.sock","addrs":["127.0.0.1:8080","[::1]:8080","/tmp/app.sock"]}
//! {"t_ms":…,"event":"served","pool":"/tmp/pool1.sock","pid":4242,"uid":1000,"fds":3}
//! {"t_ms":…,"event":"refused","pool":"@pool2","pid":4243,"uid":65534,"reason":"not-allowed"}
//! {"t_ms":…,"event":"failed","pool":"@pool2","reason":"timed-out"}
//! ```
//!
//! `listening` comes once per pool, in option order, after every pool is bound and ready
//! (the addresses are the real ones: port 0 is resolved). Refusal reasons: `not-allowed`,
//! `no-credentials`, `busy`; failure reasons: `timed-out`, `send-failed`.
//!
//! SIGINT and SIGTERM exit 0 and remove the pool socket files (uWSGI leaves them behind);
//! the pooled sockets stay with the zergs that hold them, and their files are left in
//! place so those zergs stay reachable. Invalid options exit 2 (`invalid zergpool
//! syntax: …`, more than 253 addresses, a bad mode); an address that cannot be bound
//! exits 1.
//!
//! Differences from uWSGI 2.0.21: IPv6 items work (uWSGI binds `255.255.255.255:<random>`
//! for `[::1]:PORT`); attaching peers are checked against an allow-list; the pool socket
//! gets mode 600 unless told otherwise; `*` address expansion and `TCP_DEFER_ACCEPT` are
//! not implemented; a stale pool socket file is replaced but a live one is refused.

// A command-line program: its output is the point, and it owns the event loop, so it reads
// the clock (STYLE §3.5).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program reports on stdout/stderr"
)]
#![allow(clippy::disallowed_methods, reason = "the event loop reads the clock")]

use std::io::{self, IsTerminal as _};
use std::net::ToSocketAddrs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use zerg_fdpass::driver::{ServerDriver, SocketFile};
use zerg_fdpass::proto::MAX_FDS;
use zerg_fdpass::server::{Event, PeerCred};
use zerg_fdpass::{ListenAddr, Listener, ZergAddr};

#[path = "../zerg_common.rs"]
mod zerg_common;
use zerg_common::{failure, json_str, log_line, parse_mode, print_line, refusal, server_config, unix_ms};

/// Exit status for invalid options (clap's own errors exit 2 too).
const USAGE: u8 = 2;
const SIGNAL_TOKEN: Token = Token(0);
/// Pool `i`'s driver owns tokens `POOL_STRIDE * (i + 1)` up to `+ max_connections`.
const POOL_STRIDE: usize = 1024;

fn command() -> Command {
    Command::new("zergpool")
        .version(env!("CARGO_PKG_VERSION"))
        .about("uWSGI's zergpool: bind listening sockets once, hand them to every zerg that attaches")
        .after_help("SIGINT/SIGTERM: remove the pool sockets and exit 0.")
        .arg(
            Arg::new("zergpool")
                .long("zergpool")
                .visible_alias("zerg-pool")
                .value_name("SOCK:ADDR[,ADDR...]")
                .action(ArgAction::Append)
                .required(true)
                .help("a pool socket (path or @name) and the addresses it hands out (repeatable)"),
        )
        .arg(
            Arg::new("chmod-socket")
                .long("chmod-socket")
                .value_name("MODE")
                .num_args(0..=1)
                .default_missing_value("666")
                .help("mode of the pool sockets (default 600; no value: 666) and of pooled unix sockets"),
        )
        .arg(
            Arg::new("zerg-allow-uid")
                .long("zerg-allow-uid")
                .value_name("UID")
                .value_parser(value_parser!(u32))
                .action(ArgAction::Append)
                .help("allow this uid to attach (repeatable; default: own uid and root)"),
        )
        .arg(
            Arg::new("zerg-allow-gid")
                .long("zerg-allow-gid")
                .value_name("GID")
                .value_parser(value_parser!(u32))
                .action(ArgAction::Append)
                .help("allow members of this primary gid to attach (repeatable)"),
        )
        .arg(
            Arg::new("zerg-allow-any")
                .long("zerg-allow-any")
                .action(ArgAction::SetTrue)
                .conflicts_with_all(["zerg-allow-uid", "zerg-allow-gid"])
                .help("allow anyone who can connect (uWSGI's behaviour)"),
        )
        .arg(
            Arg::new("events-json")
                .long("events-json")
                .action(ArgAction::SetTrue)
                .help("print one JSON object per event on stdout"),
        )
}

/// Why the program stops early.
enum Fatal {
    /// Invalid options: exit 2.
    Usage(String),
    /// A socket could not be bound or the loop failed: exit 1.
    Runtime(String),
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    let matches = command().get_matches();
    match run(&matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal::Usage(message)) => {
            eprintln!("zergpool: {message}");
            ExitCode::from(USAGE)
        }
        Err(Fatal::Runtime(message)) => {
            eprintln!("zergpool: {message}");
            ExitCode::FAILURE
        }
    }
}

/// One `--zergpool` option, parsed.
struct PoolSpec {
    /// The option as given, for messages.
    text: String,
    addr: ZergAddr,
    items: Vec<ListenAddr>,
}

/// A pool being served.
struct Pool {
    name: String,
    driver: ServerDriver,
}

fn run(matches: &ArgMatches) -> Result<(), Fatal> {
    let specs = matches
        .get_many::<String>("zergpool")
        .into_iter()
        .flatten()
        .map(|s| parse_pool(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Fatal::Usage)?;
    for (i, spec) in specs.iter().enumerate() {
        if specs[..i].iter().any(|other| other.addr == spec.addr) {
            return Err(Fatal::Usage(format!("pool socket {} is given twice", spec.addr)));
        }
    }
    let chmod = matches
        .get_one::<String>("chmod-socket")
        .map(|v| parse_mode(v).ok_or_else(|| Fatal::Usage(format!("invalid chmod value: {v}"))))
        .transpose()?;
    let config = server_config(matches);
    let events_json = matches.get_flag("events-json");

    // Caught from here on: a signal while binding stops the loop at once (and the pool
    // sockets are removed).
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Fatal::Runtime(format!("cannot handle SIGINT/SIGTERM: {e}")))?;
    let mut poll = Poll::new().map_err(|e| Fatal::Runtime(format!("cannot create the event loop: {e}")))?;
    let mut pools = Vec::with_capacity(specs.len());
    let mut listening = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let (fds, addrs) = bind_items(spec, chmod)?;
        let mut file = SocketFile::default();
        if let Some(mode) = chmod {
            file.mode = mode;
        }
        let mut driver = ServerDriver::bind(&spec.addr, config.clone(), file, fds)
            .map_err(|e| Fatal::Runtime(format!("zergpool {}: {e}", spec.addr)))?;
        debug_assert!(driver.core().config().max_connections < POOL_STRIDE);
        driver
            .register(poll.registry(), Token(POOL_STRIDE * (i + 1)))
            .map_err(|e| Fatal::Runtime(format!("zergpool {}: {e}", spec.addr)))?;
        let name = spec.addr.to_string();
        listening.push((name.clone(), addrs));
        pools.push(Pool { name, driver });
    }
    poll.registry()
        .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)
        .map_err(|e| Fatal::Runtime(format!("cannot handle SIGINT/SIGTERM: {e}")))?;
    // Every pool is bound and registered: a zerg attaching now is served.
    for (name, addrs) in &listening {
        if events_json {
            let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            print_line(&format!(
                "{{\"t_ms\":{},\"event\":\"listening\",\"pool\":{},\"addrs\":{}}}",
                unix_ms(),
                json_str(name),
                Value::from(addrs)
            ));
        } else {
            eprintln!("zergpool {name}: ready, {} sockets", addrs.len());
        }
    }
    serve(&mut poll, &mut signals, &mut pools, events_json)?;
    // Dropping the drivers removes the pool socket files.
    drop(pools);
    Ok(())
}

/// The event loop, until SIGINT or SIGTERM.
fn serve(poll: &mut Poll, signals: &mut Signals, pools: &mut [Pool], events_json: bool) -> Result<(), Fatal> {
    let mut events = Events::with_capacity(256);
    loop {
        for pool in pools.iter_mut() {
            while let Some(event) = pool.driver.poll_event() {
                report(&pool.name, &event, events_json);
            }
        }
        let now = Instant::now();
        let wait = pools.iter().filter_map(|p| p.driver.timeout(now)).min();
        match poll.poll(&mut events, wait) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Fatal::Runtime(format!("event loop: {e}"))),
            Ok(()) => {}
        }
        for event in &events {
            if event.token() == SIGNAL_TOKEN {
                if signals.pending().next().is_some() {
                    return Ok(());
                }
                continue;
            }
            let Some(pool) = (event.token().0 / POOL_STRIDE).checked_sub(1).and_then(|i| pools.get_mut(i))
            else {
                continue;
            };
            if let Err(e) = pool.driver.handle_ready(poll.registry(), event, Instant::now()) {
                // Not fatal: the pool keeps serving the next peers.
                eprintln!("zergpool {}: {e}", pool.name);
            }
        }
        let now = Instant::now();
        for pool in pools.iter_mut() {
            pool.driver.handle_timeout(poll.registry(), now);
        }
    }
}

/// Binds a pool's addresses in order, logging uWSGI's lines.
fn bind_items(spec: &PoolSpec, chmod: Option<u32>) -> Result<(Vec<OwnedFd>, Vec<ListenAddr>), Fatal> {
    let mut fds = Vec::with_capacity(spec.items.len());
    let mut addrs = Vec::with_capacity(spec.items.len());
    for item in &spec.items {
        let listener = Listener::bind(item).map_err(|e| {
            Fatal::Runtime(format!(
                "zergpool {}: cannot bind {item}: {e} (in --zergpool {:?})",
                spec.addr, spec.text
            ))
        })?;
        if let (Some(mode), Some(path)) = (chmod, listener.addr.path()) {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| {
                Fatal::Runtime(format!("zergpool {}: chmod {}: {e}", spec.addr, path.display()))
            })?;
        }
        let kind = if matches!(listener.addr, ListenAddr::Inet(_)) { "TCP" } else { "UNIX" };
        eprintln!(
            "zergpool {} bound to {kind} socket {} (fd: {})",
            spec.addr,
            listener.addr,
            listener.fd.as_raw_fd()
        );
        addrs.push(listener.addr);
        fds.push(listener.fd);
    }
    Ok((fds, addrs))
}

/// `SOCK:ADDR[,ADDR…]`, split at the first `:` as uWSGI does.
fn parse_pool(text: &str) -> Result<PoolSpec, String> {
    let Some((sock, list)) = text.split_once(':') else {
        return Err(format!("invalid zergpool syntax: {text} (expected SOCK:ADDR[,ADDR...])"));
    };
    let addr = ZergAddr::parse(sock).map_err(|e| format!("--zergpool {text:?}: pool socket: {e}"))?;
    // uWSGI splits with strtok: empty items vanish.
    let items: Vec<&str> = list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if items.len() > MAX_FDS {
        return Err(format!(
            "--zergpool {sock}: {} addresses, but one hand-off carries at most {MAX_FDS} sockets \
             (Linux's SCM_MAX_FD); split them over several pools",
            items.len()
        ));
    }
    let items = items
        .into_iter()
        .map(parse_item)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--zergpool {text:?}: {e}"))?;
    Ok(PoolSpec { text: text.to_owned(), addr, items })
}

/// One pooled address: with a `:` it is TCP (uWSGI's rule), else a unix path or `@name`.
fn parse_item(item: &str) -> Result<ListenAddr, String> {
    if !item.contains(':') {
        // uWSGI also reads `\0name` as an abstract name.
        let item = item.strip_prefix("\\0").map_or_else(|| item.to_owned(), |name| format!("@{name}"));
        return ListenAddr::parse(&item).map_err(|e| e.to_string());
    }
    if item.contains('*') {
        return Err(format!("{item:?}: '*' expansion is not supported; use :PORT for every IPv4 interface"));
    }
    if let Ok(addr) = ListenAddr::parse(item) {
        return Ok(addr);
    }
    // HOST:PORT: resolved once, first address.
    match item.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => Ok(ListenAddr::Inet(addr)),
        _ => Err(format!(
            "{item:?} is not a TCP address (IP:PORT, :PORT, [IPv6]:PORT or HOST:PORT; an item with ':' is TCP, as in uWSGI)"
        )),
    }
}

/// Prints one event, as JSON or as a line on stderr.
fn report(pool: &str, event: &Event, events_json: bool) {
    let ids = |peer: &Option<PeerCred>| match peer {
        Some(p) => (p.pid.to_string(), p.uid.to_string()),
        None => ("null".to_owned(), "null".to_owned()),
    };
    let line = match event {
        Event::Served { peer, fds, .. } => {
            let (pid, uid) = ids(peer);
            if events_json {
                format!(
                    "{{\"t_ms\":{},\"event\":\"served\",\"pool\":{},\"pid\":{pid},\"uid\":{uid},\"fds\":{fds}}}",
                    unix_ms(),
                    json_str(pool)
                )
            } else {
                format!("zergpool {pool}: gave {fds} sockets to pid {pid} (uid {uid})")
            }
        }
        Event::Refused { peer, reason, .. } => {
            let (pid, uid) = ids(peer);
            let reason = refusal(*reason);
            if events_json {
                format!(
                    "{{\"t_ms\":{},\"event\":\"refused\",\"pool\":{},\"pid\":{pid},\"uid\":{uid},\"reason\":{}}}",
                    unix_ms(),
                    json_str(pool),
                    json_str(reason)
                )
            } else {
                format!("zergpool {pool}: refused pid {pid} (uid {uid}): {reason}")
            }
        }
        Event::Failed { reason, .. } => {
            let reason = failure(*reason);
            if events_json {
                format!(
                    "{{\"t_ms\":{},\"event\":\"failed\",\"pool\":{},\"reason\":{}}}",
                    unix_ms(),
                    json_str(pool),
                    json_str(reason)
                )
            } else {
                format!("zergpool {pool}: hand-off failed: {reason}")
            }
        }
        _ => return,
    };
    if events_json {
        print_line(&line);
    } else {
        log_line(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_specs_split_at_the_first_colon() {
        let spec = parse_pool("/tmp/p.sock:127.0.0.1:80,,[::1]:81,/tmp/a.sock,@abs,:82").ok();
        let items: Vec<String> = spec.iter().flat_map(|s| s.items.iter().map(ToString::to_string)).collect();
        assert_eq!(items, ["127.0.0.1:80", "[::1]:81", "/tmp/a.sock", "@abs", "0.0.0.0:82"]);
        assert!(parse_pool("@pool:").is_ok_and(|s| s.items.is_empty()));
        assert!(parse_pool("/tmp/p.sock").is_err());
        assert!(parse_pool(":127.0.0.1:80").is_err());
        assert!(parse_pool("/tmp/p.sock:/tmp/a:b").is_err());
        let many = vec!["127.0.0.1:0"; 254].join(",");
        assert!(parse_pool(&format!("@p:{many}")).is_err());
        let enough = vec!["127.0.0.1:0"; 253].join(",");
        assert!(parse_pool(&format!("@p:{enough}")).is_ok());
    }

    #[test]
    fn chmod_values_follow_uwsgi() {
        assert_eq!(parse_mode("660"), Some(0o660));
        assert_eq!(parse_mode("0660"), Some(0o660));
        assert_eq!(parse_mode("1"), Some(0o666));
        assert_eq!(parse_mode("66"), None);
        assert_eq!(parse_mode("680"), None);
        assert_eq!(parse_mode("1660"), None);
    }
}
