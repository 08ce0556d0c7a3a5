//! `subscriber`: announces backends to uWSGI routers (fastrouter, http router) with
//! uWSGI's own `--subscribe-to` / `--subscribe2` options, as a uWSGI master does for its
//! instance.
//!
//! It demonstrates `subscription_proto::driver::SubscriberDriver` embedded in a mio loop
//! of its own, next to signals: a round of subscriptions at start, one a second later,
//! then every `--subscribe-freq` seconds; acknowledgements on the notify socket; the
//! unsubscribe round at exit. It works with real uWSGI routers and with the workspace's
//! `fastrouter`.
//!
//! # Running it
//!
//! ```text
//! cargo run -p examples --bin fastrouter -- --fastrouter 127.0.0.1:3017 --subscription-server 127.0.0.1:2626 &
//! cargo run -p examples --bin subscriber -- --socket 127.0.0.1:3031 \
//!   --subscribe-to 127.0.0.1:2626:example.com --events-json
//! ```
//!
//! prints one JSON line per datagram sent, then keeps the subscription fresh until SIGINT
//! or SIGTERM, when it unsubscribes and exits 0. Talk to routers on **loopback only** in
//! such experiments: subscriptions are plain datagrams.
//!
//! # Options
//!
//! uWSGI 2.0.21's syntax (spec §4.2, §4.3):
//!
//! | option | meaning |
//! |---|---|
//! | `--subscribe-to SPEC` (`--st`, `--subscribe`) | `[ADDRESS=]SERVER:KEY[,MODIFIER1[,DIGEST:PRIVATE_PEM]]`, repeatable. SERVER is `IP:PORT`, `[IPV6]:PORT` or a unix datagram socket path (starting with `/` or `.`); KEY is everything after the `:` that follows SERVER, so it may contain `:`. `=N=SERVER:KEY` advertises the N-th `--socket` (0-based) |
//! | `--subscribe2 k=v,...` | keys `server`, `key` (required), `addr` (also `address`), `socket` (index of a `--socket`), `weight`, `modifier1`, `modifier2`, `sign=DIGEST:PRIVATE_PEM`, `check=FILE`, `sni_key`, `sni_crt`, `sni_ca`, and uWSGI 2.1's `backup`, `algo`, `proto`, `vassal`; `\` escapes `,` and `=`; unknown keys are ignored with a warning. Repeatable |
//! | `--socket ADDR` | the address advertised when a spec names none: the first `--socket` (repeatable, as uWSGI's instance sockets; nothing is bound) |
//! | `--weight N` | weight of every subscription that sets none (default 1) |
//! | `--subscribe-with-modifier1 N` | modifier1 of every subscription that sets none |
//! | `--subscribe-freq S` | refresh period (10) |
//! | `--notify-socket PATH` | bind a unix datagram socket for the routers' acknowledgements, advertised as `notify` |
//! | `--subscription-notify-socket PATH` | advertise PATH as `notify` instead (binds nothing) |
//! | `--start-unsubscribed` | send nothing until SIGUSR1 (or `--resume-after`); uWSGI unblocks with its master FIFO's `S` |
//! | `--resume-after S` | with `--start-unsubscribed`: start subscribing after S seconds |
//! | `--unsubscribe-on-graceful-reload` | SIGHUP unsubscribes before subscribing again |
//! | `--subscription-clear-on-shutdown` | at exit send `clear=1` subscribes instead of unsubscribes (uWSGI 2.1) |
//! | `--subscriptions-use-credentials` | accepted for uWSGI compatibility; Linux attaches the sender's credentials itself when the router asks for them |
//! | `--events-json` | one JSON line per event on stdout (below) instead of log lines on stderr |
//!
//! Signals: SIGINT and SIGTERM unsubscribe and exit 0 (a uWSGI 2.0.x master reloads on
//! SIGTERM unless `--die-on-term`); SIGHUP is a graceful reload (a round now and a second
//! later; unsubscribes first only with `--unsubscribe-on-graceful-reload`); SIGTSTP pauses
//! (unsubscribes) and resumes, as uWSGI; SIGUSR1 resumes.
//!
//! An `--events-json` line per datagram sent, and per acknowledgement:
//!
//! ```text
//! {"t_ms":1795310429123,"event":"sent","command":"subscribe","server":"127.0.0.1:2626","key":"example.com","address":"127.0.0.1:3031","modifier1":0,"modifier2":0,"weight":1,"signed":false,"clear":false,"len":84}
//! {"t_ms":1795310429125,"event":"ack","key":"example.com","address":"127.0.0.1:3031"}
//! ```
//!
//! Other events: `send_failed` (the `sent` fields plus `error`), `skipped` (`index`: a
//! subscription whose check file is missing), `started` (the signals are handled from
//! then on), `paused`, `resumed`, `reloaded`, `shutdown`.
//! Byte strings are shown as UTF-8 (lossy).
//!
//! Differences from uWSGI 2.0.21: `check=FILE` sends while FILE exists, as uWSGI's
//! documentation says (2.0.21 does the opposite); `weight=` applies to its own
//! subscription (2.0.21 makes it the weight of every datagram sent afterwards); the default
//! weight is 1 (2.0.21 sends 0, which routers read as 1); `modifier1` must be a number up to
//! 255 (2.0.21 keeps the digits of whatever is there); a subscription without an address is
//! an error (2.0.21 silently sends nothing); the `SERVER:@FILE` form is not supported;
//! resuming sends at once (2.0.21 waits for the next periodic slot); one socket per address
//! family sends every datagram (2.0.21 opens one per datagram).

// A command-line program: its output is the point, and it owns the event loop, so it reads
// the clock (STYLE §3.5).
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program reports on stdout/stderr"
)]
#![allow(clippy::disallowed_methods, reason = "the event loop reads the clock")]

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGTSTP, SIGUSR1};
use signal_hook_mio::v1_0::Signals;
use subscription_proto::driver::{DriverError, SubscriberDriver, SubscriberEvent};
use subscription_proto::sign::{Signer, split_spec};
use subscription_proto::subscriber::{Event, Transmit};
use subscription_proto::wire::{self, Mode};
use subscription_proto::{Command, Endpoint, SubscriberConfig, Subscription};

/// Exit status for invalid options (clap's own errors exit 2 too).
const USAGE: u8 = 2;
const DRIVER_TOKEN: Token = Token(0);
const SIGNAL_TOKEN: Token = Token(1);

/// Command line (the option names are a public contract, STYLE §3.11).
#[derive(Parser, Debug)]
#[command(
    version,
    about = "Announces backends to uWSGI routers (subscription system), from uWSGI's --subscribe-to/--subscribe2",
    after_help = "SIGINT/SIGTERM: unsubscribe and exit 0. SIGHUP: graceful reload. SIGTSTP: pause/resume. \
                  SIGUSR1: resume. Invalid options: exit 2."
)]
struct Args {
    /// `[ADDRESS=]SERVER:KEY[,MODIFIER1[,DIGEST:PRIVATE_PEM]]` (repeatable).
    #[arg(long = "subscribe-to", visible_aliases = ["st", "subscribe"], value_name = "SPEC")]
    subscribe_to: Vec<String>,
    /// `server=…,key=…[,addr=…][,weight=N][,modifier1=N][,modifier2=N][,sign=DIGEST:PEM][,check=FILE]`
    /// `[,sni_key=…][,sni_crt=…][,sni_ca=…][,backup=N][,algo=…][,proto=…][,vassal=…]` (repeatable).
    #[arg(long, value_name = "KEY=VALUE,...")]
    subscribe2: Vec<String>,
    /// Refresh period in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    subscribe_freq: u64,
    /// Address advertised when a subscription names none (the first --socket; repeatable;
    /// nothing is bound).
    #[arg(long, value_name = "ADDR")]
    socket: Vec<String>,
    /// Weight of every subscription that sets none (uWSGI 2.0.21 sends 0 by default, which
    /// routers read as 1; its subscribe2 `weight=` leaks into later datagrams, not here).
    #[arg(long, value_name = "N", default_value_t = 1)]
    weight: u64,
    /// modifier1 of every subscription that sets none.
    #[arg(long, value_name = "N")]
    subscribe_with_modifier1: Option<u8>,
    /// Bind this unix datagram socket for acknowledgements and advertise it as `notify`.
    #[arg(long, value_name = "PATH")]
    notify_socket: Option<PathBuf>,
    /// Advertise this path as `notify` instead (binds nothing).
    #[arg(long, value_name = "PATH")]
    subscription_notify_socket: Option<String>,
    /// Send nothing until SIGUSR1 (or --resume-after).
    #[arg(long)]
    start_unsubscribed: bool,
    /// With --start-unsubscribed: start subscribing after this many seconds.
    #[arg(long, value_name = "SECS", requires = "start_unsubscribed")]
    resume_after: Option<u64>,
    /// SIGHUP (graceful reload) unsubscribes before subscribing again.
    #[arg(long)]
    unsubscribe_on_graceful_reload: bool,
    /// At exit send `clear=1` subscribes instead of unsubscribes (uWSGI 2.1).
    #[arg(long)]
    subscription_clear_on_shutdown: bool,
    /// Accepted for uWSGI compatibility: Linux attaches credentials by itself.
    #[arg(long)]
    subscriptions_use_credentials: bool,
    /// One JSON line per event on stdout instead of log lines on stderr.
    #[arg(long)]
    events_json: bool,
}

/// An invalid option: exit 2 with this message.
#[derive(Debug)]
struct Usage(String);

fn fail(option: &str, value: &str, why: impl std::fmt::Display) -> Usage {
    Usage(format!("{option} {value:?}: {why}"))
}

/// A subscription being built, with the defaults still to apply.
struct Spec {
    server: Endpoint,
    key: String,
    address: Option<String>,
    weight: Option<u64>,
    modifier1: Option<u8>,
    subscription_extras: Subscription,
}

/// `--subscribe-to`: `[ADDRESS=]SERVER:KEY[,MODIFIER1[,DIGEST:PRIVATE_PEM]]` (spec §4.2).
fn parse_subscribe_to(spec: &str, sockets: &[String]) -> Result<Spec, String> {
    // uWSGI: the first `=` ends an explicit address; `=N=` names socket N.
    let (address, rest) = match spec.find('=') {
        Some(0) => {
            let (n, rest) = spec[1..].split_once('=').ok_or("expected =N=SERVER:KEY")?;
            let n: usize = n.parse().map_err(|_| format!("=N=: {n:?} is not a socket number"))?;
            let name =
                sockets.get(n).ok_or_else(|| format!("=N=: there is no --socket number {n} (0-based)"))?;
            (Some(name.clone()), rest)
        }
        Some(i) => (Some(spec[..i].to_owned()), &spec[i + 1..]),
        None => (None, spec),
    };
    let key_at = if rest.starts_with('/') || rest.starts_with('.') {
        // A unix path: the key follows the first `:` after its first byte.
        rest.get(1..).and_then(|r| r.find(':')).map(|i| i + 1)
    } else if rest.starts_with('[') {
        let port_at = rest.find("]:").ok_or("expected [IPV6]:PORT:KEY")? + 2;
        rest[port_at..].find(':').map(|i| i + port_at)
    } else {
        let port_at = rest.find(':').ok_or("expected SERVER:KEY with SERVER = IP:PORT or a unix path")? + 1;
        rest[port_at..].find(':').map(|i| i + port_at)
    };
    let key_at = key_at.ok_or("expected SERVER:KEY (no key after the server)")?;
    let server: Endpoint =
        rest[..key_at].parse().map_err(|e: subscription_proto::EndpointError| e.to_string())?;
    let tail = &rest[key_at + 1..];
    if tail.starts_with('@') {
        return Err("the SERVER:@FILE form is not supported".into());
    }
    let (key, options) = tail.split_once(',').map_or((tail, None), |(k, o)| (k, Some(o)));
    if key.is_empty() {
        return Err("empty key".into());
    }
    let mut extras = Subscription::new(server.clone(), key, "");
    let mut modifier1 = None;
    if let Some(options) = options {
        let (m1, sign) = options.split_once(',').map_or((options, None), |(m, s)| (m, Some(s)));
        if !m1.is_empty() {
            modifier1 =
                Some(m1.parse::<u8>().map_err(|_| format!("modifier1 {m1:?} is not a number in 0..=255"))?);
        }
        if let Some(sign) = sign {
            extras.signer = Some(load_signer(sign)?);
        }
    }
    Ok(Spec { server, key: key.to_owned(), address, weight: None, modifier1, subscription_extras: extras })
}

fn load_signer(spec: &str) -> Result<Signer, String> {
    let (digest, path) = split_spec(spec).map_err(|e| e.to_string())?;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    Signer::from_pem(digest, &pem).map_err(|e| format!("{path}: {e}"))
}

/// uWSGI's `k=v,k=v` lists: `\` escapes the next character.
fn parse_kv(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut items = Vec::new();
    let (mut key, mut value) = (String::new(), None::<String>);
    let mut chars = text.chars();
    let mut finish = |key: &mut String, value: &mut Option<String>| -> Result<(), String> {
        match value.take() {
            Some(v) => items.push((std::mem::take(key), v)),
            None if key.is_empty() => {}
            None => return Err(format!("{key:?} is not key=value")),
        }
        key.clear();
        Ok(())
    };
    while let Some(c) = chars.next() {
        let c = match c {
            '\\' => chars.next().unwrap_or('\\'),
            ',' => {
                finish(&mut key, &mut value)?;
                continue;
            }
            '=' if value.is_none() => {
                value = Some(String::new());
                continue;
            }
            c => c,
        };
        match &mut value {
            Some(v) => v.push(c),
            None => key.push(c),
        }
    }
    finish(&mut key, &mut value)?;
    Ok(items)
}

/// `--subscribe2` (spec §4.3, plus uWSGI 2.1's keys).
fn parse_subscribe2(text: &str, sockets: &[String], warnings: &mut Vec<String>) -> Result<Spec, String> {
    let mut server = None;
    let mut key = None;
    let mut address = None;
    let mut weight = None;
    let mut modifier1 = None;
    let mut extras = Subscription::new(Endpoint::Unix(PathBuf::new()), "", "");
    let number = |k: &str, v: &str| v.parse::<u64>().map_err(|_| format!("{k}={v:?} is not a number"));
    let byte =
        |k: &str, v: &str| v.parse::<u8>().map_err(|_| format!("{k}={v:?} is not a number in 0..=255"));
    for (k, v) in parse_kv(text)? {
        let bytes = || Some(v.clone().into_bytes());
        match k.as_str() {
            "server" => {
                server = Some(v.parse::<Endpoint>().map_err(|e| e.to_string())?);
            }
            "key" => key = Some(v.clone()),
            "addr" | "address" => address = Some(v.clone()),
            "socket" => {
                let n: usize = v.parse().map_err(|_| format!("socket={v:?} is not a socket number"))?;
                let name =
                    sockets.get(n).ok_or_else(|| format!("socket={n}: there is no --socket number {n}"))?;
                address = Some(name.clone());
            }
            "weight" => weight = Some(number(&k, &v)?),
            "modifier1" => modifier1 = Some(byte(&k, &v)?),
            "modifier2" => extras.request.modifier2 = byte(&k, &v)?,
            "sign" => extras.signer = Some(load_signer(&v)?),
            "check" => extras.check = Some(PathBuf::from(&v)),
            "sni_key" => extras.request.sni_key = bytes(),
            "sni_crt" => extras.request.sni_crt = bytes(),
            "sni_ca" => extras.request.sni_ca = bytes(),
            "backup" => extras.request.backup = Some(number(&k, &v)?),
            "algo" => extras.request.algo = bytes(),
            "proto" => extras.request.proto = v.bytes().next(),
            "vassal" => extras.request.vassal = bytes(),
            other => warnings.push(format!("--subscribe2 {text:?}: unknown key {other:?} ignored")),
        }
    }
    let server = server.ok_or("server= is required")?;
    let key = key.filter(|k| !k.is_empty()).ok_or("key= is required")?;
    extras.server = server.clone();
    Ok(Spec { server, key, address, weight, modifier1, subscription_extras: extras })
}

/// Applies the defaults (address, weight, modifier1, notify) and builds the subscription.
fn finish(spec: Spec, args: &Args) -> Result<Subscription, String> {
    let address = spec
        .address
        .or_else(|| args.socket.first().cloned())
        .ok_or("no address to advertise: give ADDRESS=/addr= or --socket")?;
    let mut s = spec.subscription_extras;
    s.server = spec.server;
    s.request.key = spec.key.into_bytes();
    s.request.address = address.into_bytes();
    s.request.weight = spec.weight.unwrap_or(args.weight);
    s.request.modifier1 = spec.modifier1.or(args.subscribe_with_modifier1).unwrap_or(0);
    if let Some(n) = &args.subscription_notify_socket {
        s.request.notify = Some(n.clone().into_bytes());
    }
    // The limits of the datagram (key and address up to 255 bytes, 4096 bytes in all).
    wire::encode(Command::Subscribe, &s.request).map_err(|e| e.to_string())?;
    Ok(s)
}

fn subscriptions(args: &Args, warnings: &mut Vec<String>) -> Result<Vec<Subscription>, Usage> {
    let mut out = Vec::new();
    // Spec §4.1: every --subscribe-to first, in option order, then every --subscribe2.
    for text in &args.subscribe_to {
        let spec = parse_subscribe_to(text, &args.socket).map_err(|e| fail("--subscribe-to", text, e))?;
        out.push(finish(spec, args).map_err(|e| fail("--subscribe-to", text, e))?);
    }
    for text in &args.subscribe2 {
        let spec =
            parse_subscribe2(text, &args.socket, warnings).map_err(|e| fail("--subscribe2", text, e))?;
        out.push(finish(spec, args).map_err(|e| fail("--subscribe2", text, e))?);
    }
    if out.is_empty() {
        return Err(Usage("nothing to subscribe: give --subscribe-to or --subscribe2".into()));
    }
    let notify = args.notify_socket.as_ref().map(|p| p.as_os_str().len());
    if notify.is_some_and(|n| n > wire::MAX_NOTIFY) && args.subscription_notify_socket.is_none() {
        warnings.push(format!(
            "--notify-socket: paths over {} bytes are not advertised (routers ignore them)",
            wire::MAX_NOTIFY
        ));
    }
    Ok(out)
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt().with_writer(io::stderr).with_env_filter(filter).init();
    let args = Args::parse();
    let mut warnings = Vec::new();
    let subs = match subscriptions(&args, &mut warnings) {
        Ok(subs) => subs,
        Err(Usage(message)) => {
            eprintln!("subscriber: {message}");
            return ExitCode::from(USAGE);
        }
    };
    for w in &warnings {
        eprintln!("subscriber: {w}");
    }
    match run(&args, subs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("subscriber: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What to print for events.
struct Reporter {
    json: bool,
}

impl Reporter {
    fn line(&self, event: &str, fields: &[(&str, Value)]) {
        let mut line = format!(
            "{{\"t_ms\":{},\"event\":{}",
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis(),
            Value::from(event)
        );
        for (k, v) in fields {
            line.push_str(&format!(",{}:{v}", Value::from(*k)));
        }
        line.push('}');
        let mut out = io::stdout().lock();
        // A reader that went away is not worth dying for: the subscriptions go on.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }

    fn state(&self, event: &str) {
        if self.json {
            self.line(event, &[]);
        } else {
            eprintln!("subscriber: {event}");
        }
    }

    fn event(&self, event: &SubscriberEvent, subs: &[Subscription]) {
        match event {
            SubscriberEvent::Sent(t) => self.datagram("sent", t, None),
            SubscriberEvent::SendFailed { transmit, error } => {
                self.datagram("send_failed", transmit, Some(error))
            }
            SubscriberEvent::Core(Event::Acknowledged { key, address }) => {
                let (key, address) = (lossy(key), lossy(address));
                if self.json {
                    self.line("ack", &[("key", key.into()), ("address", address.into())]);
                } else {
                    eprintln!("[notify-socket] [subscription ack] {key} => new node: {address}");
                }
            }
            SubscriberEvent::Core(Event::Skipped { index }) => {
                if self.json {
                    self.line("skipped", &[("index", (*index).into())]);
                } else {
                    let check = subs.get(*index).and_then(|s| s.check.as_ref());
                    let check = check.map(|c| c.display().to_string()).unwrap_or_default();
                    eprintln!("subscriber: check file {check} missing: subscription {index} not sent");
                }
            }
            other => {
                if !self.json {
                    eprintln!("subscriber: {other:?}");
                }
            }
        }
    }

    fn datagram(&self, event: &str, t: &Transmit, error: Option<&String>) {
        let Ok(d) = wire::decode(&t.payload, Mode::Compat) else { return };
        let command = match d.command {
            Command::Subscribe => "subscribe",
            Command::Unsubscribe => "unsubscribe",
        };
        let r = &d.request;
        if self.json {
            let mut fields: Vec<(&str, Value)> = vec![
                ("command", command.into()),
                ("server", t.destination.to_string().into()),
                ("key", lossy(&r.key).into()),
                ("address", lossy(&r.address).into()),
                ("modifier1", r.modifier1.into()),
                ("modifier2", r.modifier2.into()),
                ("weight", r.weight.into()),
                ("signed", r.sign.is_some().into()),
                ("clear", r.clear.into()),
                ("len", t.payload.len().into()),
            ];
            if let Some(e) = error {
                fields.push(("error", e.as_str().into()));
            }
            self.line(event, &fields);
        } else {
            let verb = if d.command == Command::Subscribe { "subscribing to" } else { "unsubscribing from" };
            let spec = format!("{}:{} ({})", t.destination, lossy(&r.key), lossy(&r.address));
            match error {
                None => eprintln!("{verb} {spec}"),
                Some(e) => eprintln!("{verb} {spec}: send failed: {e}"),
            }
        }
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The event loop, until SIGINT or SIGTERM; an error is a runtime failure (exit 1).
fn run(args: &Args, subs: Vec<Subscription>) -> Result<(), String> {
    let runtime = |e: &dyn std::fmt::Display| e.to_string();
    let config = SubscriberConfig::new()
        .announce_interval(Duration::from_secs(args.subscribe_freq))
        .start_unsubscribed(args.start_unsubscribed)
        .unsubscribe_on_reload(args.unsubscribe_on_graceful_reload)
        .clear_on_exit(args.subscription_clear_on_shutdown);
    let reporter = Reporter { json: args.events_json };
    let subs_copy = subs.clone();
    let mut driver =
        SubscriberDriver::start(config, subs, args.notify_socket.clone()).map_err(|e| match e {
            DriverError::Bind { endpoint, source } => {
                format!("--notify-socket {endpoint}: cannot bind: {source}")
            }
            e => runtime(&e),
        })?;
    let mut poll = Poll::new().map_err(|e| runtime(&e))?;
    driver.register(poll.registry(), DRIVER_TOKEN).map_err(|e| runtime(&e))?;
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGTSTP]).map_err(|e| runtime(&e))?;
    poll.registry().register(&mut signals, SIGNAL_TOKEN, Interest::READABLE).map_err(|e| runtime(&e))?;
    reporter.state("started");
    let mut resume_at = args.resume_after.map(|s| Instant::now() + Duration::from_secs(s));
    let mut events = Events::with_capacity(64);
    let mut stopping = false;
    loop {
        let now = Instant::now();
        if resume_at.is_some_and(|t| t <= now) {
            resume_at = None;
            driver.core_mut().resume(now);
            reporter.state("resumed");
        }
        driver.flush(now).map_err(|e| runtime(&e))?;
        while let Some(event) = driver.poll_event() {
            reporter.event(&event, &subs_copy);
        }
        if stopping {
            break;
        }
        let now = Instant::now();
        let wait = [driver.timeout(now), resume_at.map(|t| t.saturating_duration_since(now))]
            .into_iter()
            .flatten()
            .min();
        match poll.poll(&mut events, wait) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(runtime(&e)),
            Ok(()) => {}
        }
        for event in &events {
            match event.token() {
                DRIVER_TOKEN => driver.handle_ready(event, Instant::now()).map_err(|e| runtime(&e))?,
                SIGNAL_TOKEN => {
                    for signal in signals.pending() {
                        let now = Instant::now();
                        match signal {
                            SIGINT | SIGTERM => stopping = true,
                            SIGHUP => {
                                driver.core_mut().reload(now);
                                reporter.state("reloaded");
                            }
                            SIGUSR1 => {
                                resume_at = None;
                                driver.core_mut().resume(now);
                                reporter.state("resumed");
                            }
                            SIGTSTP if driver.core().is_running() => {
                                driver.core_mut().pause(now);
                                reporter.state("paused");
                            }
                            SIGTSTP => {
                                driver.core_mut().resume(now);
                                reporter.state("resumed");
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    // uWSGI at shutdown: unsubscribe everything (spec §4.1).
    driver.shutdown(Instant::now()).map_err(|e| runtime(&e))?;
    while let Some(event) = driver.poll_event() {
        reporter.event(&event, &subs_copy);
    }
    reporter.state("shutdown");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    #[test]
    fn subscribe_to_syntax() {
        let socks = vec!["127.0.0.1:3031".to_owned(), "127.0.0.1:3032".to_owned()];
        let s = parse_subscribe_to("127.0.0.1:2626:secure.test:8000", &socks).unwrap();
        assert_eq!(s.server, "127.0.0.1:2626".parse().unwrap());
        assert_eq!(s.key, "secure.test:8000");
        assert_eq!(s.address, None);
        let s = parse_subscribe_to("10.0.0.1:3031=127.0.0.1:2626:k,5", &socks).unwrap();
        assert_eq!(
            (s.address.as_deref(), s.modifier1, s.key.as_str()),
            (Some("10.0.0.1:3031"), Some(5), "k")
        );
        let s = parse_subscribe_to("=1=/run/sub.sock:k", &socks).unwrap();
        assert_eq!(s.server, Endpoint::Unix("/run/sub.sock".into()));
        assert_eq!(s.address.as_deref(), Some("127.0.0.1:3032"));
        let s = parse_subscribe_to("[::1]:2626:k", &socks).unwrap();
        assert_eq!(s.server, "[::1]:2626".parse().unwrap());
        assert!(parse_subscribe_to("127.0.0.1:2626", &socks).is_err());
        assert!(parse_subscribe_to("127.0.0.1:2626:k,x", &socks).is_err());
        assert!(parse_subscribe_to("127.0.0.1:2626:@file", &socks).is_err());
        assert!(parse_subscribe_to("=5=127.0.0.1:2626:k", &socks).is_err());
    }

    #[test]
    fn subscribe2_syntax() {
        let mut warnings = Vec::new();
        let s = parse_subscribe2(
            "server=127.0.0.1:2626,key=a\\,b,addr=127.0.0.1:3031,weight=3,modifier2=2,backup=1,proto=http,inactive=1",
            &[],
            &mut warnings,
        )
        .unwrap();
        assert_eq!(s.key, "a,b");
        assert_eq!(s.weight, Some(3));
        assert_eq!(s.subscription_extras.request.modifier2, 2);
        assert_eq!(s.subscription_extras.request.backup, Some(1));
        assert_eq!(s.subscription_extras.request.proto, Some(b'h'));
        assert_eq!(warnings.len(), 1);
        assert!(parse_subscribe2("key=k", &[], &mut warnings).is_err());
        assert!(parse_subscribe2("server=127.0.0.1:1,key=k,weight=x", &[], &mut warnings).is_err());
        assert!(parse_kv("a=1,b").is_err());
        assert_eq!(parse_kv("a=x=y").unwrap(), [("a".to_owned(), "x=y".to_owned())]);
    }
}
