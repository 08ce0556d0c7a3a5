//! `legiond`: a uWSGI Legion node: lord election with uWSGI 2.0.x nodes, from uWSGI's own
//! `--legion*` options.
//!
//! It demonstrates `legion_proto::driver::LegionDriver` embedded in a mio loop of its own:
//! several legions (one driver and socket each), a TCP stats server, and SIGINT/SIGTERM as
//! mio sources, all in one `mio::Poll`. Paste the `--legion*` lines of a uWSGI config (or
//! point `--ini` at it) and the node takes part in the same election as the uWSGI nodes,
//! running the same hooks (`cmd:`/`exec:` and `log:` actions).
//!
//! # Running it
//!
//! One node, alone in its legion: it becomes lord after one announce period (3 s) and
//! prints uWSGI's log lines on stderr until Ctrl-C:
//!
//! ```text
//! cargo run -p examples --bin legiond -- --legion "lg 127.0.0.1:41001 10 aes-128-cbc:secret" \
//!   --legion-node "lg 127.0.0.1:41001" --legion-lord "lg log:i am the lord"
//! ```
//!
//! Three nodes on loopback; the one with valor 30 becomes lord after about two seconds,
//! and when it is stopped (Ctrl-C) the next one takes over at once:
//!
//! ```text
//! cargo build -p examples --bin legiond
//! for v in 1 2 3; do
//!   target/debug/legiond --legion "lg 127.0.0.1:4100$v ${v}0 aes-128-cbc:secret" \
//!     --legion-node "lg 127.0.0.1:41001" --legion-node "lg 127.0.0.1:41002" \
//!     --legion-node "lg 127.0.0.1:41003" --legion-freq 1 --legion-tolerance 3 \
//!     --legion-lord "lg log:LEGION-EVENT lord" --stats 127.0.0.1:4120$v &
//! done
//! ```
//!
//! Bind it to **loopback only** in such experiments (`127.0.0.1`, `[::1]`, `unix:PATH`):
//! announces are encrypted but not authenticated (anyone with the secret can take the
//! lordship), and `cmd:` actions run shell commands.
//!
//! # Options
//!
//! uWSGI's, with uWSGI's syntax and defaults (spec `legion.md` §3.1); time values are whole
//! seconds and 0 means the default, as in uWSGI:
//!
//! | option | meaning |
//! |---|---|
//! | `--legion "<name> <addr> <valor> <algo>:<secret>[ <iv>]"` | join a legion (repeatable: one socket per legion). `<addr>`: `IP:PORT`, `[IPV6]:PORT`, `HOST:PORT`, a multicast group, or `unix:PATH` |
//! | `--legion-mcast` (same syntax) | `--legion` with the address (a multicast group) as the only target |
//! | `--legion-node "<name> <addr>"` | an announce target (repeatable; list every peer, yourself too if you like) |
//! | `--legion-freq N`, `--legion-tolerance N`, `--legion-skew-tolerance N` | announce period (3), member tolerance (15), replay window (60), for every legion |
//! | `--legion-quorum "<name> N"`, `--legion-scroll "<name> <text>"` | votes needed (0), this node's scroll |
//! | `--legion-scroll-max-size N` | largest lord scroll kept (4096) |
//! | `--legion-death-on-lord-error N` | a failed lord action makes the node step down, announce its death and stay out N s (0: off) |
//! | `--legion-setup`, `--legion-death`, `--legion-lord`, `--legion-unlord`, `--legion-join`, `--legion-node-joined`, `--legion-node-left` `"<name> <action>:<arg>"` | hook actions, run in order: `cmd:`/`exec:` (`/bin/sh -c`), `log:`; other names fail when run, as in uWSGI |
//! | `--ini FILE` | the same keys from FILE's `[uwsgi]` section (`key = value`, keys repeatable, `#`/`;` comments; keys of other uWSGI options are ignored with a warning) |
//!
//! Command-line and ini options are processed in the order given, and a legion must be
//! declared before an option names it (`unknown legion: <name>`, as uWSGI). Additions:
//!
//! | option | meaning |
//! |---|---|
//! | `--legion-freq-ms N`, `--legion-tolerance-ms N` | the same in milliseconds |
//! | `--legion-action-timeout N` | seconds an action may run before it is killed and fails (60) |
//! | `--events-json` | one JSON object per event on stdout (below), instead of uWSGI's log lines on stderr |
//! | `--stats ADDR` | TCP stats server: one JSON document per connection, uWSGI's `legions` array plus `epoch` and `state` |
//! | `--node-name NAME`, `--pid N` | the node name (default: the host name) and pid announced |
//!
//! An `--events-json` line:
//!
//! ```text
//! {"t_ms":1795310429123,"legion":"lg","event":"lord","seq":4,"epoch":1,"valor":30,"uuid":"…","lord_valor":30,"lord_uuid":"…"}
//! ```
//!
//! `lord_valor`/`lord_uuid` are the lord every member agreed on (0 and `""` if none);
//! `node-joined` and `node-left` add `"node":{"name","valor","uuid"}`, `node-left` and
//! `unlord` add `"reason"` (`expired`/`announced`; `new-lord`/`quorum-lost`/
//! `lord-action-failed`). Without `--events-json`, uWSGI's log lines go to stderr
//! (`[uwsgi-legion] i am now the Lord of the Legion lg`, …). `log:` actions print their
//! text to stderr either way; command output goes to stderr too. `RUST_LOG=debug` adds the
//! driver's own logs.
//!
//! SIGINT and SIGTERM (uWSGI's `--die-on-term`) run the `death` actions, announce the death
//! so the others elect a successor at once, and exit 0. Invalid options exit 2 with a
//! message naming the option; a socket that cannot be bound exits 1.
//!
//! Differences from uWSGI: valors above 65535 and hook actions without `:` are refused at
//! start; numbers must be numbers (uWSGI reads `abc` as 0); unknown options in an ini file
//! are ignored; actions run off the election loop with a timeout; `signal:` and `alarm:`
//! actions do not exist here (they fail, as an unknown action does in uWSGI).

// A command-line program: its output is the point, and it owns the event loop, so it reads
// the clock (STYLE §3.5).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program reports on stdout/stderr"
)]
#![allow(clippy::disallowed_methods, reason = "the event loop reads the clock")]

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Arg, ArgAction, ArgMatches, Command};
use legion_proto::driver::{
    Action, ActionOutcome, Actions, DriverError, Endpoint, Hook, LegionDriver, LegionSocket,
};
use legion_proto::wire::Crypto;
use legion_proto::{Config, Event, EventKind, LeftReason, NodeInfo, NodeUuid, UnlordReason};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

#[path = "../stats_conn.rs"]
mod stats_conn;
use stats_conn::StatsConn;

/// Exit status for invalid options (clap's own errors exit 2 too).
const USAGE: u8 = 2;
/// Deepest `--ini` nesting (an ini file may name another one).
const MAX_INI_DEPTH: usize = 8;
/// Tokens: legion `i` is `Token(i)`; these follow far above.
const SIGNAL_TOKEN: Token = Token(1 << 20);
const STATS_TOKEN: Token = Token((1 << 20) + 1);
const FIRST_CONN_TOKEN: usize = (1 << 20) + 2;
/// Most stats connections open at once.
const MAX_STATS_CONNS: usize = 64;

/// One option, on the command line and as an ini key.
struct Opt {
    name: &'static str,
    /// `None` for a flag.
    value: Option<&'static str>,
    help: &'static str,
}

const fn opt(name: &'static str, value: &'static str, help: &'static str) -> Opt {
    Opt { name, value: Some(value), help }
}

const HOOK_HELP: &str = "hook action \"<name> <action>:<arg>\" (cmd:, exec:, log:), repeatable, run in order";

/// Every option (the names are a public contract, STYLE §3.11).
const OPTIONS: &[Opt] = &[
    opt("legion", "SPEC", "join a legion: \"<name> <addr> <valor> <algo>:<secret>[ <iv>]\" (repeatable)"),
    opt("legion-mcast", "SPEC", "as --legion, with the address (a multicast group) as the only target"),
    opt("legion-node", "SPEC", "announce target of a legion: \"<name> <addr>\" (repeatable)"),
    opt("legion-freq", "SECS", "announce period, every legion (default 3; 0 = default)"),
    opt("legion-freq-ms", "MS", "announce period in milliseconds"),
    opt("legion-tolerance", "SECS", "how long a silent member is kept (default 15; 0 = default)"),
    opt("legion-tolerance-ms", "MS", "member tolerance in milliseconds"),
    opt("legion-skew-tolerance", "SECS", "oldest announce accepted (default 60; 0 = default)"),
    opt("legion-quorum", "SPEC", "votes needed to elect a lord: \"<name> N\" (default 0)"),
    opt("legion-scroll", "SPEC", "this node's scroll: \"<name> <text>\""),
    opt("legion-scroll-max-size", "BYTES", "largest lord scroll kept (default 4096)"),
    opt(
        "legion-death-on-lord-error",
        "SECS",
        "on a failed lord action, step down, announce death and stay out for SECS (0 = off)",
    ),
    opt("legion-setup", "SPEC", HOOK_HELP),
    opt("legion-death", "SPEC", HOOK_HELP),
    opt("legion-lord", "SPEC", HOOK_HELP),
    opt("legion-unlord", "SPEC", HOOK_HELP),
    opt("legion-join", "SPEC", HOOK_HELP),
    opt("legion-node-joined", "SPEC", HOOK_HELP),
    opt("legion-node-left", "SPEC", HOOK_HELP),
    opt("legion-action-timeout", "SECS", "seconds an action may run before it is killed (default 60)"),
    opt("ini", "FILE", "read options from FILE's [uwsgi] section, in place (repeatable)"),
    Opt { name: "events-json", value: None, help: "print one JSON object per event on stdout" },
    opt("stats", "ADDR", "serve the legions' state as JSON on TCP ADDR (one document per connection)"),
    opt("node-name", "NAME", "node name in announces (default: the host name)"),
    opt("pid", "N", "pid in announces (default: this process's)"),
];

fn command() -> Command {
    let mut cmd = Command::new("legiond")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A uWSGI Legion node: lord election with uWSGI 2.0.x nodes, from uWSGI's --legion* options")
        .after_help(
            "Options are processed in the order given (--ini in place). SIGINT/SIGTERM: leave and exit 0.",
        );
    for o in OPTIONS {
        let arg = Arg::new(o.name).long(o.name).help(o.help);
        cmd = cmd.arg(match o.value {
            Some(v) => arg.value_name(v).action(ArgAction::Append),
            None => arg.action(ArgAction::SetTrue),
        });
    }
    cmd
}

/// Where an option came from, for messages.
#[derive(Clone, Debug)]
enum Origin {
    Cli,
    Ini { file: PathBuf, line: usize },
}

/// One option occurrence.
#[derive(Clone, Debug)]
struct Item {
    origin: Origin,
    key: String,
    value: String,
}

impl Item {
    /// `--legion` or `FILE:LINE: legion`.
    fn name(&self) -> String {
        match &self.origin {
            Origin::Cli => format!("--{}", self.key),
            Origin::Ini { file, line } => format!("{}:{line}: {}", file.display(), self.key),
        }
    }

    fn fail(&self, why: impl std::fmt::Display) -> Usage {
        Usage(format!("{} {:?}: {why}", self.name(), self.value))
    }
}

/// An invalid option: exit 2 with this message.
#[derive(Debug)]
struct Usage(String);

/// The command line's options in the order given.
fn ordered_items(m: &ArgMatches) -> Vec<(usize, Item)> {
    let mut items = Vec::new();
    for o in OPTIONS.iter().filter(|o| o.value.is_some()) {
        let (Some(indices), Some(values)) = (m.indices_of(o.name), m.get_many::<String>(o.name)) else {
            continue;
        };
        for (index, value) in indices.zip(values) {
            items.push((index, Item { origin: Origin::Cli, key: o.name.to_owned(), value: value.clone() }));
        }
    }
    items.sort_by_key(|(index, _)| *index);
    items
}

/// A legion as configured, before it starts.
struct LegionSpec {
    name: String,
    bind: Endpoint,
    valor: u16,
    crypto: Crypto,
    nodes: Vec<Endpoint>,
    quorum: usize,
    scroll: Vec<u8>,
    actions: Vec<(Hook, Action)>,
}

/// Everything the options say.
#[derive(Default)]
struct Settings {
    legions: Vec<LegionSpec>,
    freq: Option<Duration>,
    tolerance: Option<Duration>,
    skew_tolerance: Option<Duration>,
    scroll_max_size: Option<usize>,
    death_on_lord_error: Option<Duration>,
    action_timeout: Option<Duration>,
    events_json: bool,
    stats: Option<SocketAddr>,
    node_name: Option<String>,
    pid: Option<u64>,
    warnings: Vec<String>,
}

impl Settings {
    fn apply(&mut self, item: &Item, depth: usize) -> Result<(), Usage> {
        let v = item.value.as_str();
        match item.key.as_str() {
            "ini" => self.apply_ini(item, depth)?,
            "legion" | "legion-mcast" => {
                let spec = parse_legion(v, item.key == "legion-mcast").map_err(|e| item.fail(e))?;
                if self.legions.iter().any(|l| l.name == spec.name) {
                    return Err(item.fail(format!("legion {} is already declared", spec.name)));
                }
                self.legions.push(spec);
            }
            "legion-node" => {
                let (legion, addr) = self.named(item)?;
                let addr = parse_endpoint(addr).map_err(|e| item.fail(e))?;
                self.legions[legion].nodes.push(addr);
            }
            "legion-freq" => self.freq = secs(item)?.map(Duration::from_secs),
            "legion-freq-ms" => self.freq = number(item, v)?.filter(|&n| n > 0).map(Duration::from_millis),
            "legion-tolerance" => self.tolerance = secs(item)?.map(Duration::from_secs),
            "legion-tolerance-ms" => {
                self.tolerance = number(item, v)?.filter(|&n| n > 0).map(Duration::from_millis);
            }
            "legion-skew-tolerance" => self.skew_tolerance = secs(item)?.map(Duration::from_secs),
            "legion-scroll-max-size" => {
                self.scroll_max_size = secs(item)?.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
            }
            "legion-death-on-lord-error" => self.death_on_lord_error = secs(item)?.map(Duration::from_secs),
            "legion-action-timeout" => self.action_timeout = secs(item)?.map(Duration::from_secs),
            "legion-quorum" => {
                let (legion, n) = self.named(item)?;
                let n = number(item, n)?.unwrap_or(0);
                self.legions[legion].quorum = usize::try_from(n).unwrap_or(usize::MAX);
            }
            "legion-scroll" => {
                let (legion, text) = self.named(item)?;
                self.legions[legion].scroll = text.as_bytes().to_vec();
            }
            key if key.starts_with("legion-") && Hook::from_name(&key["legion-".len()..]).is_some() => {
                let hook =
                    Hook::from_name(&key["legion-".len()..]).ok_or_else(|| item.fail("no such hook"))?;
                let (legion, text) = self.named(item)?;
                // uWSGI: `[uwsgi-legion] invalid <event> action: <text>`.
                let action = Action::parse(text).map_err(|_| {
                    item.fail(format!("invalid {hook} action: {text} (expected <action>:<argument>)"))
                })?;
                self.legions[legion].actions.push((hook, action));
            }
            "events-json" => self.events_json = boolean(item)?,
            "stats" => {
                let addr = v
                    .to_socket_addrs()
                    .map_err(|e| item.fail(format!("expected IP:PORT ({e})")))?
                    .next()
                    .ok_or_else(|| item.fail("resolves to no address"))?;
                self.stats = Some(addr);
            }
            "node-name" => {
                if v.is_empty() {
                    return Err(item.fail("the node name must not be empty"));
                }
                self.node_name = Some(v.to_owned());
            }
            "pid" => self.pid = Some(number(item, v)?.unwrap_or(0)),
            _ => {
                // Only ini files get here: other uWSGI options of a pasted config.
                self.warnings.push(format!("{}: not a legiond option, ignored", item.name()));
            }
        }
        Ok(())
    }

    /// `"<legion> <rest>"`: the legion's index (it must be declared) and the rest.
    fn named<'a>(&self, item: &'a Item) -> Result<(usize, &'a str), Usage> {
        let (name, rest) = item.value.split_once(' ').unwrap_or((item.value.as_str(), ""));
        let index = self
            .legions
            .iter()
            .position(|l| l.name == name)
            .ok_or_else(|| Usage(format!("{}: unknown legion: {name}", item.name())))?;
        Ok((index, rest))
    }

    fn apply_ini(&mut self, item: &Item, depth: usize) -> Result<(), Usage> {
        if depth >= MAX_INI_DEPTH {
            return Err(item.fail(format!("ini files nested deeper than {MAX_INI_DEPTH}")));
        }
        let path = PathBuf::from(&item.value);
        let text = std::fs::read_to_string(&path).map_err(|e| item.fail(format!("cannot read it: {e}")))?;
        for entry in parse_ini(&path, &text) {
            let entry = entry?;
            if entry.key == "events-json" || OPTIONS.iter().any(|o| o.name == entry.key && o.value.is_some())
            {
                self.apply(&entry, depth + 1)?;
            } else {
                self.warnings.push(format!("{}: not a legiond option, ignored", entry.name()));
            }
        }
        Ok(())
    }
}

/// The `[uwsgi]` section's `key = value` lines, in order. A key without `=` is a flag
/// (`true`), as in uWSGI.
fn parse_ini(path: &Path, text: &str) -> Vec<Result<Item, Usage>> {
    let mut section = String::new();
    let mut items = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            match name.strip_suffix(']') {
                Some(name) => section = name.trim().to_owned(),
                None => items.push(Err(Usage(format!(
                    "{}:{}: unterminated section header",
                    path.display(),
                    n + 1
                )))),
            }
            continue;
        }
        if section != "uwsgi" {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, "true"));
        items.push(Ok(Item {
            origin: Origin::Ini { file: path.to_path_buf(), line: n + 1 },
            key: key.trim().to_owned(),
            value: value.trim().to_owned(),
        }));
    }
    items
}

/// uWSGI `--legion`: split on the first three spaces (spec §2.1).
fn parse_legion(v: &str, mcast: bool) -> Result<LegionSpec, String> {
    let syntax = "expected \"<name> <addr> <valor> <algo>:<secret>[ <iv>]\"";
    let mut parts = v.splitn(4, ' ');
    let (Some(name), Some(addr), Some(valor), Some(crypt)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(syntax.into());
    };
    if name.is_empty() {
        return Err(format!("empty legion name; {syntax}"));
    }
    let bind = parse_endpoint(addr)?;
    if mcast && !bind.is_multicast() {
        return Err(format!("{addr} is not a multicast group"));
    }
    let valor: u16 =
        valor.parse().map_err(|_| format!("valor {valor:?} is not a number in 0..=65535 (0: arbiter)"))?;
    let crypto = Crypto::from_spec(crypt).map_err(|e| format!("{e}"))?;
    let nodes = if mcast { vec![bind.clone()] } else { Vec::new() };
    Ok(LegionSpec {
        name: name.to_owned(),
        bind,
        valor,
        crypto,
        nodes,
        quorum: 0,
        scroll: Vec::new(),
        actions: Vec::new(),
    })
}

/// `unix:PATH`, a path without `:` (uWSGI's unix socket), `IP:PORT`, `[IPV6]:PORT` or
/// `HOST:PORT` (resolved once).
fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    if text.is_empty() {
        return Err("empty address".into());
    }
    if !text.contains(':') {
        return Ok(Endpoint::Unix(PathBuf::from(text)));
    }
    Endpoint::resolve(text).map_err(|e| e.to_string())
}

fn number(item: &Item, text: &str) -> Result<Option<u64>, Usage> {
    let text = text.trim();
    if text.is_empty() {
        return Err(item.fail("expected a number"));
    }
    text.parse::<u64>().map(Some).map_err(|_| item.fail(format!("{text:?} is not a non-negative number")))
}

/// A number of seconds; 0 means the default (uWSGI).
fn secs(item: &Item) -> Result<Option<u64>, Usage> {
    Ok(number(item, &item.value)?.filter(|&n| n > 0))
}

fn boolean(item: &Item) -> Result<bool, Usage> {
    match item.value.to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(item.fail("expected true or false")),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn uuid_text(uuid: NodeUuid) -> String {
    if uuid.is_nil() { String::new() } else { text(uuid.as_bytes()) }
}

/// A running legion.
struct Running {
    driver: LegionDriver,
    name: String,
    addr: String,
    valor: u16,
    quorum: usize,
    suspension: Option<Duration>,
}

struct App {
    poll: Poll,
    legions: Vec<Running>,
    events_json: bool,
    stats: Option<TcpListener>,
    conns: BTreeMap<Token, StatsConn<TcpStream>>,
    next_conn: usize,
    signals: Signals,
}

/// Why legiond stops with an error.
enum Fatal {
    Usage(String),
    Runtime(String),
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt().with_writer(io::stderr).with_env_filter(filter).init();
    let matches = command().get_matches();
    match run(&matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal::Usage(message)) => {
            eprintln!("legiond: {message}");
            ExitCode::from(USAGE)
        }
        Err(Fatal::Runtime(message)) => {
            eprintln!("legiond: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(matches: &ArgMatches) -> Result<(), Fatal> {
    let mut settings = Settings { events_json: matches.get_flag("events-json"), ..Settings::default() };
    for (_, item) in ordered_items(matches) {
        settings.apply(&item, 0).map_err(|Usage(m)| Fatal::Usage(m))?;
    }
    for warning in &settings.warnings {
        eprintln!("legiond: {warning}");
    }
    if settings.legions.is_empty() {
        return Err(Fatal::Usage(
            "no legion configured: give --legion \"<name> <addr> <valor> <algo>:<secret>\"".into(),
        ));
    }
    let mut app = App::start(settings)?;
    app.serve()
}

impl App {
    fn start(settings: Settings) -> Result<Self, Fatal> {
        let poll = Poll::new().map_err(|e| Fatal::Runtime(format!("cannot create the event loop: {e}")))?;
        let node_name = settings.node_name.clone().unwrap_or_else(host_name);
        let pid = settings.pid.unwrap_or_else(|| u64::from(std::process::id()));
        let mut legions = Vec::new();
        for (i, spec) in settings.legions.into_iter().enumerate() {
            let mut socket = LegionSocket::bind(&spec.bind).map_err(|e| {
                Fatal::Runtime(format!("Legion {}: cannot bind {}: {e}", spec.name, spec.bind))
            })?;
            let mut config = Config::new(spec.name.clone(), spec.valor, spec.crypto)
                .node_name(node_name.clone())
                .pid(pid)
                .quorum(spec.quorum)
                .scroll(spec.scroll)
                .death_on_lord_error(settings.death_on_lord_error);
            if let Some(d) = settings.freq {
                config = config.freq(d);
            }
            if let Some(d) = settings.tolerance {
                config = config.tolerance(d);
            }
            if let Some(d) = settings.skew_tolerance {
                config = config.skew_tolerance(d);
            }
            if let Some(n) = settings.scroll_max_size {
                config = config.scroll_max_size(n);
            }
            for node in &spec.nodes {
                let addr = socket
                    .target(node)
                    .map_err(|e| Fatal::Usage(format!("--legion-node \"{} {node}\": {e}", spec.name)))?;
                config = config.node(addr);
            }
            let mut actions = Actions::new();
            if let Some(t) = settings.action_timeout {
                actions = actions.timeout(t);
            }
            for (hook, action) in spec.actions {
                actions.push(hook, action);
            }
            let addr = socket.local_endpoint().to_string();
            let mut driver = LegionDriver::new(socket, config, actions).map_err(|e| match e {
                DriverError::Config(e) => Fatal::Usage(format!(
                    "Legion {}: {e} (see --legion-freq, --legion-tolerance, --legion-scroll)",
                    spec.name
                )),
                e => Fatal::Runtime(format!("Legion {}: {e}", spec.name)),
            })?;
            driver
                .register(poll.registry(), Token(i))
                .map_err(|e| Fatal::Runtime(format!("Legion {}: {e}", spec.name)))?;
            legions.push(Running {
                driver,
                name: spec.name,
                addr,
                valor: spec.valor,
                quorum: spec.quorum,
                suspension: settings.death_on_lord_error,
            });
        }
        let stats = match settings.stats {
            None => None,
            Some(addr) => {
                let mut listener = TcpListener::bind(addr)
                    .map_err(|e| Fatal::Runtime(format!("--stats {addr}: cannot listen: {e}")))?;
                poll.registry()
                    .register(&mut listener, STATS_TOKEN, Interest::READABLE)
                    .map_err(|e| Fatal::Runtime(format!("--stats {addr}: {e}")))?;
                Some(listener)
            }
        };
        let mut signals = Signals::new([SIGINT, SIGTERM])
            .map_err(|e| Fatal::Runtime(format!("cannot handle SIGINT/SIGTERM: {e}")))?;
        poll.registry()
            .register(&mut signals, SIGNAL_TOKEN, Interest::READABLE)
            .map_err(|e| Fatal::Runtime(format!("cannot handle SIGINT/SIGTERM: {e}")))?;
        Ok(Self {
            poll,
            legions,
            events_json: settings.events_json,
            stats,
            conns: BTreeMap::new(),
            next_conn: FIRST_CONN_TOKEN,
            signals,
        })
    }

    /// The event loop, until SIGINT or SIGTERM; then every legion leaves.
    fn serve(&mut self) -> Result<(), Fatal> {
        let mut events = Events::with_capacity(256);
        let mut stopping = false;
        while !stopping {
            let now = Instant::now();
            for i in 0..self.legions.len() {
                let result = self.legions[i].driver.flush(now);
                self.check(i, result)?;
                self.report(i);
            }
            let now = Instant::now();
            let wait = self.legions.iter().filter_map(|l| l.driver.timeout(now)).min();
            match self.poll.poll(&mut events, wait) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Fatal::Runtime(format!("event loop: {e}"))),
                Ok(()) => {}
            }
            for event in &events {
                match event.token() {
                    SIGNAL_TOKEN => {
                        if self.signals.pending().next().is_some() {
                            stopping = true;
                        }
                    }
                    STATS_TOKEN => self.accept_stats(),
                    Token(i) if i < self.legions.len() => {
                        let result = self.legions[i].driver.handle_ready(event, Instant::now());
                        self.check(i, result)?;
                        self.report(i);
                    }
                    token => self.write_stats(token),
                }
            }
        }
        // uWSGI at exit: death hooks, death announce (spec §3.10). All legions leave first,
        // so their death actions run side by side; then each waits for its own.
        let now = Instant::now();
        for i in 0..self.legions.len() {
            let result = self.legions[i].driver.leave(now);
            self.check(i, result)?;
        }
        for i in 0..self.legions.len() {
            let result = self.legions[i].driver.shutdown(Instant::now());
            self.check(i, result)?;
            self.report(i);
        }
        Ok(())
    }

    fn check(&self, i: usize, result: Result<(), DriverError>) -> Result<(), Fatal> {
        result.map_err(|e| Fatal::Runtime(format!("Legion {}: {e}", self.legions[i].name)))
    }

    /// Prints the events and action outcomes of legion `i`.
    fn report(&mut self, i: usize) {
        while let Some(event) = self.legions[i].driver.poll_event() {
            let l = &self.legions[i];
            if self.events_json {
                print_line(&event_json(l, &event));
            } else {
                for line in uwsgi_lines(l, &event) {
                    eprintln!("{line}");
                }
            }
        }
        while let Some(outcome) = self.legions[i].driver.poll_action_outcome() {
            report_outcome(&self.legions[i].name, &outcome, self.events_json);
        }
    }

    fn accept_stats(&mut self) {
        loop {
            let Some(listener) = &self.stats else { return };
            let (stream, _) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("legiond: --stats: accept: {e}");
                    return;
                }
            };
            if self.conns.len() >= MAX_STATS_CONNS {
                continue; // dropping it closes it
            }
            let mut out = serde_json::to_vec_pretty(&self.stats_json()).unwrap_or_default();
            out.push(b'\n');
            let token = Token(self.next_conn);
            self.next_conn = self.next_conn.checked_add(1).unwrap_or(FIRST_CONN_TOKEN);
            let mut conn = StatsConn::new(stream, out);
            if self.poll.registry().register(&mut conn.stream, token, Interest::WRITABLE).is_ok() {
                self.conns.insert(token, conn);
                self.write_stats(token);
            }
        }
    }

    /// Writes what is left of a stats document; closes the connection when done.
    fn write_stats(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else { return };
        if conn.write_some()
            && let Some(mut conn) = self.conns.remove(&token)
        {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    /// uWSGI's stats `legions` array (spec §3.13), plus `epoch` and `state`.
    fn stats_json(&self) -> Value {
        let legions: Vec<Value> = self
            .legions
            .iter()
            .map(|l| {
                let core = l.driver.core();
                let socket = l.driver.socket();
                let nodes: Vec<String> = core
                    .config()
                    .targets()
                    .iter()
                    .map(|a| socket.endpoint_of(*a).map_or_else(|| a.to_string(), |e| e.to_string()))
                    .collect();
                let members: Vec<Value> = core
                    .members()
                    .iter()
                    .map(|m| {
                        json!({
                            "name": text(&m.info().name),
                            "uuid": uuid_text(m.info().uuid),
                            "valor": m.info().valor,
                            "checksum": m.checksum(),
                            "last_seen": core.wall_clock(m.last_seen()).as_secs(),
                            "scroll": text(m.scroll()),
                        })
                    })
                    .collect();
                let (vote_valor, vote_uuid) = core.vote();
                json!({
                    "legion": l.name,
                    "addr": l.addr,
                    "uuid": uuid_text(core.uuid()),
                    "valor": l.valor,
                    "checksum": core.checksum(),
                    "quorum": l.quorum,
                    "i_am_the_lord": core.lord_since(),
                    "lord_valor": vote_valor,
                    "lord_uuid": uuid_text(vote_uuid),
                    "nodes": nodes,
                    "members": members,
                    "epoch": core.epoch(),
                    "state": format!("{:?}", core.state()).to_lowercase(),
                    "lord_scroll": text(core.lord_scroll()),
                    "scroll": text(core.config_scroll()),
                })
            })
            .collect();
        json!({ "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id(), "legions": legions })
    }
}

fn print_line(line: &str) {
    let mut out = io::stdout().lock();
    // A reader that went away is not worth dying for; the node keeps its role.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn node_json(node: &NodeInfo) -> Value {
    json!({ "name": text(&node.name), "valor": node.valor, "uuid": uuid_text(node.uuid) })
}

fn left_reason(reason: LeftReason) -> &'static str {
    match reason {
        LeftReason::Expired => "expired",
        LeftReason::Announced => "announced",
        _ => "other",
    }
}

fn unlord_reason(reason: UnlordReason) -> &'static str {
    match reason {
        UnlordReason::NewLord => "new-lord",
        UnlordReason::QuorumLost => "quorum-lost",
        UnlordReason::LordActionFailed => "lord-action-failed",
        _ => "other",
    }
}

/// One `--events-json` line; the keys in a fixed order.
fn event_json(l: &Running, event: &Event) -> String {
    let s = |v: &str| Value::from(v).to_string();
    let (lord_valor, lord_uuid) =
        event.lord.map_or((0, String::new()), |lord| (lord.valor, uuid_text(lord.uuid)));
    let mut line = format!(
        "{{\"t_ms\":{},\"legion\":{},\"event\":{},\"seq\":{},\"epoch\":{},\"valor\":{},\"uuid\":{},\"lord_valor\":{},\"lord_uuid\":{}",
        unix_ms(),
        s(&l.name),
        s(event.kind.phase()),
        event.seq,
        event.epoch,
        l.valor,
        s(&uuid_text(l.driver.core().uuid())),
        lord_valor,
        s(&lord_uuid),
    );
    match &event.kind {
        EventKind::NodeJoined { node } => line += &format!(",\"node\":{}", node_json(node)),
        EventKind::NodeLeft { node, reason } => {
            line += &format!(",\"node\":{},\"reason\":{}", node_json(node), s(left_reason(*reason)));
        }
        EventKind::Unlord { reason } => line += &format!(",\"reason\":{}", s(unlord_reason(*reason))),
        _ => {}
    }
    line.push('}');
    line
}

/// uWSGI's log lines for an event (spec §7.2 lists the ones tests match).
fn uwsgi_lines(l: &Running, event: &Event) -> Vec<String> {
    let core = l.driver.core();
    let me = format!("valor: {} uuid: {}", l.valor, uuid_text(core.uuid()));
    let node_line = |node: &NodeInfo, what: &str| {
        let kind = if node.valor == 0 { "arbiter" } else { "node" };
        format!(
            "[uwsgi-legion] {kind}: {} valor: {} uuid: {} {what} {}",
            text(&node.name),
            node.valor,
            uuid_text(node.uuid),
            l.name
        )
    };
    match &event.kind {
        EventKind::Setup => vec![format!("[uwsgi-legion] joining Legion {} on {} ({me})", l.name, l.addr)],
        EventKind::NodeJoined { node } => vec![node_line(node, "joined Legion")],
        EventKind::NodeLeft { node, reason: LeftReason::Announced } => {
            vec![node_line(node, "announced its death to Legion")]
        }
        EventKind::NodeLeft { node, .. } => vec![node_line(node, "left Legion")],
        EventKind::Join => vec![format!(
            "[uwsgi-legion] --- WE HAVE QUORUM FOR LEGION {} !!! ({me} checksum: {} votes: {}) ---",
            l.name,
            core.checksum(),
            core.members().len() + 1
        )],
        EventKind::Lord => vec![
            format!("[uwsgi-legion] attempting to become the Lord of the Legion {}", l.name),
            format!("[uwsgi-legion] i am now the Lord of the Legion {}", l.name),
        ],
        EventKind::Unlord { reason: UnlordReason::QuorumLost } => {
            vec![format!("[uwsgi-legion] i cannot be The Lord of The Legion {} without a quorum ...", l.name)]
        }
        EventKind::Unlord { reason: UnlordReason::LordActionFailed } => vec![format!(
            "[uwsgi-legion] suspending myself from Legion \"{}\" for {} seconds",
            l.name,
            l.suspension.map_or(0, |d| d.as_secs())
        )],
        EventKind::Unlord { .. } => {
            let (valor, uuid) =
                event.lord.map_or((0, String::new()), |lord| (lord.valor, uuid_text(lord.uuid)));
            vec![format!(
                "[uwsgi-legion] a new Lord (valor: {valor} uuid: {uuid}) raised for Legion {}...",
                l.name
            )]
        }
        EventKind::Death => vec![format!("[uwsgi-legion] leaving Legion {}: death announced", l.name)],
        _ => vec![format!("[uwsgi-legion] {} event for Legion {}", event.kind.phase(), l.name)],
    }
}

/// `log:` text, failures, and (in log mode) uWSGI's `calling` line.
fn report_outcome(legion: &str, outcome: &ActionOutcome, events_json: bool) {
    if let Some(log) = &outcome.log {
        eprintln!("{log}");
    } else if !events_json {
        eprintln!("[uwsgi-legion] (phase: {} legion: {legion}) calling {}", outcome.hook, outcome.action);
    }
    if let Err(failure) = &outcome.result {
        eprintln!("[uwsgi-legion] ERROR, {} hook returned: {failure} ({})", outcome.hook, outcome.action);
    }
}
