//! What `zergpool` and `zerg-http` share (included by both with `#[path]`): uWSGI's
//! `--chmod-socket` values, the `--zerg-allow-*` allow-list, and how their zerg server
//! events are named and printed.

use std::io::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::ArgMatches;
use serde_json::Value;
use zerg_fdpass::driver::ServerDriver;
use zerg_fdpass::server::{Failure, PeerPolicy, Refusal, ServerConfig};

/// uWSGI's `--chmod-socket` values: `1` means 666, else exactly 3 octal digits (a leading
/// `0` is also taken: `0660`).
pub(crate) fn parse_mode(value: &str) -> Option<u32> {
    if value == "1" {
        return Some(0o666);
    }
    let digits = match value.len() {
        3 => value,
        4 => value.strip_prefix('0')?,
        _ => return None,
    };
    if !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

/// The zerg server's allow-list from `--zerg-allow-uid`, `--zerg-allow-gid` and
/// `--zerg-allow-any` (default: this process's uid and root).
pub(crate) fn server_config(matches: &ArgMatches) -> ServerConfig {
    if matches.get_flag("zerg-allow-any") {
        return ServerConfig::new(PeerPolicy::anyone());
    }
    let uids: Vec<u32> = matches.get_many::<u32>("zerg-allow-uid").into_iter().flatten().copied().collect();
    let gids: Vec<u32> = matches.get_many::<u32>("zerg-allow-gid").into_iter().flatten().copied().collect();
    if uids.is_empty() && gids.is_empty() {
        return ServerDriver::default_config();
    }
    let mut policy = PeerPolicy::only();
    for uid in uids {
        policy = policy.allow_uid(uid);
    }
    for gid in gids {
        policy = policy.allow_gid(gid);
    }
    ServerConfig::new(policy)
}

/// The `reason` of a `refused` event.
pub(crate) fn refusal(reason: Refusal) -> &'static str {
    match reason {
        Refusal::NotAllowed => "not-allowed",
        Refusal::NoCredentials => "no-credentials",
        Refusal::Busy => "busy",
        _ => "other",
    }
}

/// The `reason` of a `failed` event.
pub(crate) fn failure(reason: Failure) -> &'static str {
    match reason {
        Failure::TimedOut => "timed-out",
        Failure::SendFailed => "send-failed",
        _ => "other",
    }
}

/// A JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    Value::from(s).to_string()
}

/// One line on stdout, in one write (a reader polling the output never sees half a
/// line). A reader that went away is not worth dying for: the server keeps serving.
pub(crate) fn print_line(line: &str) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes()).and_then(|()| out.flush());
}

/// One line on stderr, in one write (`eprintln!` writes the text and the newline apart).
pub(crate) fn log_line(line: &str) {
    let _ = io::stderr().lock().write_all(format!("{line}\n").as_bytes());
}

/// Unix time in milliseconds, the events' `t_ms`.
pub(crate) fn unix_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()
}
