//! `emperor`: a uWSGI Emperor built on `emperor_core`: one vassal process per config file,
//! spawned on appearance, reloaded on change, destroyed on removal, respawned with
//! throttling after a crash. Real uWSGI instances run under it unchanged.
//!
//! ```text
//! emperor --emperor /etc/uwsgi/vassals --emperor-stats 127.0.0.1:9191 --events-json
//! ```
//!
//! # Options (uWSGI's names and defaults)
//!
//! | option | meaning |
//! |---|---|
//! | `--emperor DIR\|GLOB\|dir://DIR\|glob://PATTERN` | a monitor (repeatable) |
//! | `--vassal-bin PATH` | the vassal program (default `uwsgi`; uWSGI's `--emperor-wrapper`) |
//! | `--emperor-stats ADDR` | stats server (`IP:PORT` or a unix path): uWSGI's JSON, strings escaped |
//! | `--emperor-freq S` | rescan period of monitors without a working inotify watch (3) |
//! | `--emperor-safety-rescan S` | full rescan period of monitors whose inotify watch works (60): inotify triggers a rescan on every change, this is only the safety net |
//! | `--emperor-throttle MS`, `--emperor-max-throttle MS` | blacklist step and cap (1000, 180000) |
//! | `--emperor-required-heartbeat S` | kill a vassal whose heartbeats stop (30) |
//! | `--emperor-curse-tolerance S` | kill a stopping or cursed vassal after (30) |
//! | `--emperor-tyrant` | run each vassal as its config's owner (root refused) |
//! | `--emperor-on-demand-directory DIR` | vassal `NAME.EXT` listens on `DIR/NAME.socket`, started on the first connection |
//! | `--emperor-broodlord N` | at most N `NAME:zerg` vassals on SOS (0) |
//! | `--emperor-graceful-shutdown` | stop vassals with byte 2 (graceful) instead of 0 |
//! | `--emperor-force-config-pipe` | push each config through the config pipe (`emperor://NAME`) |
//! | `--emperor-extra-extension EXT` | another config extension (vassals get `--config`) |
//! | `--emperor-nofollow` | `lstat` configs (a symlink's own mtime) |
//! | `--reload-mercy S` | on shutdown, kill vassals still alive after (30) |
//! | `--events-json` | one JSON object per line on stdout per vassal event: `{"t_ms","vassal","event","pid"}` |
//!
//! Events: `spawned`, `ready`, `accepting`, `loyal`, `reloaded`, `destroyed`, `died`,
//! `respawned`, `throttled`, `cursed`, `heartbeat-missed`, `on-demand` (and `killed`,
//! `stopping`, `exiled`, `refused`). SIGINT/SIGTERM stop every vassal gracefully, then
//! exit; SIGHUP reloads every vassal; SIGURG clears the blacklist.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a program: events on stdout, errors on stderr"
)]
#![allow(clippy::disallowed_methods, reason = "a program: it reads the clock for event timestamps")]

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, ArgMatches, Command};
use emperor_core::driver::{DriverOptions, EmperorDriver};
use emperor_core::monitor::{self, ScanOptions};
use emperor_core::{EmperorConfig, Event, EventKind};

fn command() -> Command {
    let num = |name: &'static str, help: &'static str| Arg::new(name).long(name).value_name("N").help(help);
    Command::new("emperor")
        .about("A uWSGI-compatible Emperor: one vassal process per config")
        .arg(
            Arg::new("emperor")
                .long("emperor")
                .action(ArgAction::Append)
                .value_name("DIR|GLOB|URI")
                .required(true),
        )
        .arg(Arg::new("vassal-bin").long("vassal-bin").alias("emperor-wrapper").default_value("uwsgi"))
        .arg(Arg::new("emperor-stats").long("emperor-stats").alias("emperor-stats-server").value_name("ADDR"))
        .arg(num("emperor-freq", "rescan period without inotify, seconds (3)"))
        .arg(num("emperor-safety-rescan", "full rescan period with inotify, seconds (60)"))
        .arg(num("emperor-throttle", "blacklist step, ms (1000)"))
        .arg(num("emperor-max-throttle", "blacklist cap, ms (180000)"))
        .arg(num("emperor-required-heartbeat", "seconds (30)"))
        .arg(num("emperor-curse-tolerance", "seconds (30)"))
        .arg(num("reload-mercy", "seconds (30)"))
        .arg(num("emperor-broodlord", "most zergs (0)"))
        .arg(Arg::new("emperor-tyrant").long("emperor-tyrant").action(ArgAction::SetTrue))
        .arg(Arg::new("emperor-nofollow").long("emperor-nofollow").action(ArgAction::SetTrue))
        .arg(
            Arg::new("emperor-graceful-shutdown")
                .long("emperor-graceful-shutdown")
                .action(ArgAction::SetTrue),
        )
        .arg(
            Arg::new("emperor-force-config-pipe")
                .long("emperor-force-config-pipe")
                .action(ArgAction::SetTrue),
        )
        .arg(
            Arg::new("emperor-on-demand-directory")
                .long("emperor-on-demand-directory")
                .alias("emperor-on-demand-dir")
                .value_name("DIR"),
        )
        .arg(
            Arg::new("emperor-extra-extension")
                .long("emperor-extra-extension")
                .alias("emperor-extra-ext")
                .action(ArgAction::Append),
        )
        .arg(Arg::new("events-json").long("events-json").action(ArgAction::SetTrue))
}

fn number(m: &ArgMatches, name: &str) -> Result<Option<u64>, String> {
    m.get_one::<String>(name)
        .map(|v| v.parse::<u64>().map_err(|_| format!("--{name} {v:?}: not a number")))
        .transpose()
}

fn run(m: &ArgMatches) -> Result<(), String> {
    let mut config = EmperorConfig::default();
    if let Some(ms) = number(m, "emperor-throttle")?.filter(|&v| v > 0) {
        config.throttle = Duration::from_millis(ms);
    }
    if let Some(ms) = number(m, "emperor-max-throttle")?.filter(|&v| v > 0) {
        config.max_throttle = Duration::from_millis(ms);
    }
    if let Some(s) = number(m, "emperor-required-heartbeat")?.filter(|&v| v > 0) {
        config.required_heartbeat = Duration::from_secs(s);
    }
    if let Some(s) = number(m, "emperor-curse-tolerance")?.filter(|&v| v > 0) {
        config.curse_tolerance = Duration::from_secs(s);
    }
    if let Some(s) = number(m, "reload-mercy")?.filter(|&v| v > 0) {
        config.mercy = Duration::from_secs(s);
    }
    if let Some(n) = number(m, "emperor-broodlord")? {
        config.broodlord = usize::try_from(n).unwrap_or(usize::MAX);
    }
    config.tyrant = m.get_flag("emperor-tyrant");
    config.graceful_shutdown = m.get_flag("emperor-graceful-shutdown");
    let extra: Vec<String> = m
        .get_many::<String>("emperor-extra-extension")
        .map(|v| v.map(|e| if e.starts_with('.') { e.clone() } else { format!(".{e}") }).collect())
        .unwrap_or_default();
    config.extra_extensions = extra.clone();
    let mut scan = ScanOptions::default();
    scan.nofollow = m.get_flag("emperor-nofollow");
    scan.extra_extensions = extra;
    scan.on_demand_directory = m.get_one::<String>("emperor-on-demand-directory").map(Into::into);
    scan.config_pipe = m.get_flag("emperor-force-config-pipe");
    let mut monitors = Vec::new();
    for uri in m.get_many::<String>("emperor").into_iter().flatten() {
        monitors.push(monitor::from_uri(uri, scan.clone()).map_err(|e| format!("--emperor {uri}: {e}"))?);
    }
    let mut options = DriverOptions::default();
    options.vassal_bin = m.get_one::<String>("vassal-bin").map_or_else(|| "uwsgi".into(), Into::into);
    if let Some(s) = number(m, "emperor-freq")?.filter(|&v| v > 0) {
        options.freq = Duration::from_secs(s);
    }
    if let Some(s) = number(m, "emperor-safety-rescan")?.filter(|&v| v > 0) {
        options.safety_rescan = Duration::from_secs(s);
    }
    options.stats = m.get_one::<String>("emperor-stats").cloned();
    let driver = EmperorDriver::new(config, monitors, options).map_err(|e| e.to_string())?;
    let control = driver.control();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGURG,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            match signal {
                signal_hook::consts::SIGHUP => control.reload_all(),
                signal_hook::consts::SIGURG => control.clear_blacklist(),
                _ => control.shutdown(),
            }
        }
    });
    let json = m.get_flag("events-json");
    let start = Instant::now();
    driver
        .run(|event| {
            if json {
                print_json(start, event);
            } else {
                eprintln!("[emperor] {} {} pid={:?}", event.vassal, event.kind.name(), event.pid);
            }
        })
        .map_err(|e| e.to_string())
}

fn print_json(start: Instant, e: &Event) {
    let t_ms = start.elapsed().as_millis();
    let mut line = format!(
        "{{\"t_ms\":{t_ms},\"vassal\":{},\"event\":\"{}\",\"pid\":{}",
        serde_json::Value::String(e.vassal.clone()),
        e.kind.name(),
        e.pid.map_or_else(|| "null".to_owned(), |p| p.to_string())
    );
    match &e.kind {
        EventKind::Died(s) => {
            line.push_str(&format!(
                ",\"code\":{},\"signal\":{}",
                s.code.map_or_else(|| "null".to_owned(), |c| c.to_string()),
                s.signal.map_or_else(|| "null".to_owned(), |c| c.to_string())
            ));
        }
        EventKind::Throttled { delay } => line.push_str(&format!(",\"delay_ms\":{}", delay.as_millis())),
        EventKind::Refused(r) => line.push_str(&format!(",\"reason\":\"{r:?}\"")),
        _ => {}
    }
    line.push_str("}\n");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).init();
    let matches = command().get_matches();
    match run(&matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("emperor: {message}");
            ExitCode::FAILURE
        }
    }
}
