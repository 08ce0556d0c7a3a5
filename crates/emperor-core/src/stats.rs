//! The emperor stats JSON (spec §4): uWSGI 2.0.21's keys, order and layout (tabs, one key
//! per line), with strings escaped (2.0.21 prints them raw, so a `"` in a name breaks its
//! JSON).

use std::fmt::Write as _;
use std::time::Instant;

use crate::emperor::{Blacklisted, Emperor, Vassal};

/// What the stats need besides the core: the process and the clock.
#[derive(Debug, Clone)]
pub struct StatsContext {
    /// `version` (uWSGI prints its own version).
    pub version: String,
    /// The emperor's pid.
    pub pid: u32,
    /// Its uid.
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
    /// Its current directory.
    pub cwd: String,
    /// Each monitor's argument (a directory's real path, a glob pattern, a URI), indexed
    /// by [`MonitorId`](crate::MonitorId).
    pub monitors: Vec<String>,
    /// `now` as an `Instant`…
    pub now: Instant,
    /// …and as unix seconds: every timestamp is converted through this pair.
    pub unix_now: u64,
}

impl StatsContext {
    fn secs(&self, t: Option<Instant>) -> u64 {
        t.map_or(0, |t| self.unix_now.saturating_sub(self.now.saturating_duration_since(t).as_secs()))
    }
}

/// Renders the stats document.
#[must_use]
pub fn render(emperor: &Emperor, ctx: &StatsContext) -> String {
    let mut out = String::with_capacity(512 + 640 * emperor.vassals().count());
    out.push_str("{\n");
    let _ = writeln!(out, "\t\"version\":{},", quote(&ctx.version));
    let _ = writeln!(out, "\t\"pid\":{},", ctx.pid);
    let _ = writeln!(out, "\t\"uid\":{},", ctx.uid);
    let _ = writeln!(out, "\t\"gid\":{},", ctx.gid);
    let _ = writeln!(out, "\t\"cwd\":{},", quote(&ctx.cwd));
    out.push_str("\t\"emperor\":[\n");
    let monitors: Vec<String> = ctx.monitors.iter().map(|m| quote(m)).collect();
    out.push_str(&monitors.join(",\n"));
    out.push_str("\n\t],\n");
    let _ = writeln!(out, "\t\"emperor_tyrant\":{},", u8::from(emperor.config().tyrant));
    out.push_str("\t\"throttle_level\":0,\n");
    out.push_str("\t\"vassals\":[\n");
    let vassals: Vec<String> = emperor.vassals().map(|v| vassal(v, ctx)).collect();
    out.push_str(&vassals.join(",\n"));
    out.push_str("\n\t],\n");
    out.push_str("\t\"blacklist\":[\n");
    let blacklist: Vec<String> = emperor.blacklist().map(|b| blacklisted(b, ctx)).collect();
    out.push_str(&blacklist.join(",\n"));
    out.push_str("\n\t]\n}");
    out
}

fn vassal(v: &Vassal, ctx: &StatsContext) -> String {
    let pid = v.pid().map_or(-1, i64::from);
    let monitor = ctx.monitors.get(v.monitor.0 as usize).map_or("", String::as_str);
    let fields: [(&str, String); 20] = [
        ("id", quote(&v.name)),
        ("pid", pid.to_string()),
        ("born", v.born.to_string()),
        ("last_mod", v.last_mod.to_string()),
        ("last_heartbeat", ctx.secs(v.last_heartbeat).to_string()),
        ("loyal", u8::from(v.loyal).to_string()),
        ("ready", u8::from(v.ready).to_string()),
        ("accepting", u8::from(v.accepting).to_string()),
        ("last_loyal", ctx.secs(v.last_loyal).to_string()),
        ("last_ready", ctx.secs(v.last_ready).to_string()),
        ("last_accepting", ctx.secs(v.last_accepting).to_string()),
        ("first_run", ctx.secs(v.first_run).to_string()),
        ("last_run", ctx.secs(v.last_run).to_string()),
        ("cursed", ctx.secs(v.cursed_at).to_string()),
        ("zerg", u8::from(v.zerg).to_string()),
        ("on_demand", quote(v.report.on_demand.as_deref().unwrap_or(""))),
        ("uid", v.report.uid.to_string()),
        ("gid", v.report.gid.to_string()),
        ("monitor", quote(monitor)),
        ("respawns", v.respawns.to_string()),
    ];
    object(&fields)
}

fn blacklisted(b: &Blacklisted, ctx: &StatsContext) -> String {
    let level_ms = u64::try_from(b.level.as_millis()).unwrap_or(u64::MAX);
    let fields = [
        ("id", quote(&b.name)),
        ("throttle_level", level_ms.to_string()),
        ("attempt", b.attempts.to_string()),
        ("first_attempt", ctx.secs(Some(b.first_attempt)).to_string()),
        ("last_attempt", ctx.secs(Some(b.last_attempt)).to_string()),
    ];
    object(&fields)
}

fn object(fields: &[(&str, String)]) -> String {
    let mut out = String::from("\t\t{\n");
    let lines: Vec<String> = fields.iter().map(|(k, v)| format!("\t\t\t\"{k}\":{v}")).collect();
    out.push_str(&lines.join(",\n"));
    out.push_str("\n\t\t}");
    out
}

/// A JSON string literal.
#[must_use]
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "a base Instant for virtual time; nothing depends on its value")]
mod tests {
    use super::*;
    use crate::{Action, EmperorConfig, MonitorId, Report};
    use std::time::Duration;

    fn vector() -> String {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/vectors/emperor/emperor-stats-2.0.21.json.raw"
        );
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn reproduces_the_captured_document() {
        let t0 = Instant::now();
        let mut e = Emperor::new(EmperorConfig::default()).expect("config");
        let born = 1_795_309_245;
        e.handle_scan(t0, MonitorId(0), vec![Report::new("beta.ini", born), Report::new("alpha.ini", born)]);
        // Spawned two seconds after the wall clock's `born`, then ready and accepting.
        let spawn_at = t0 + Duration::from_secs(2);
        let mut pids = [10835, 10836].into_iter();
        while let Some(a) = e.poll_action() {
            if let Action::Spawn(s) = a {
                e.handle_spawned(spawn_at, s.id, pids.next().unwrap_or(0));
                e.handle_byte(spawn_at, s.id, 1);
                e.handle_byte(spawn_at, s.id, 5);
            }
        }
        let now = t0 + Duration::from_secs(5);
        let ctx = StatsContext {
            version: "2.0.21-debian".into(),
            pid: 10834,
            uid: 0,
            gid: 0,
            cwd: "/srv/vassals".into(),
            monitors: vec!["/srv/vassals".into()],
            now,
            unix_now: born + 5,
        };
        let ours = render(&e, &ctx);
        let theirs = vector();
        assert!(!theirs.is_empty(), "vector present");
        // uWSGI lists vassals in its own add order (beta, alpha here); ours too.
        assert_eq!(ours.trim_end(), theirs.trim_end());
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quote("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
