//! Options `zergpool` and `zerg-http` share (included by both with `#[path]`): uWSGI's
//! `--chmod-socket` values and the `--zerg-allow-*` allow-list.

use clap::ArgMatches;
use zerg_fdpass::driver::ServerDriver;
use zerg_fdpass::server::{PeerPolicy, ServerConfig};

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
