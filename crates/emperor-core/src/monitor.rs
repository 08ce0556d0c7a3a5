//! Imperial monitors: where configs come from (spec §3).
//!
//! A [`Monitor`] lists the configs it sees ([`Monitor::scan`]) and may offer an fd that
//! becomes readable when something changed ([`Monitor::event_fd`]), so a change is seen
//! in milliseconds; the driver also rescans every `--emperor-freq` as a safety net.
//! [`DirMonitor`] (`dir://`) and [`GlobMonitor`] (`glob://`) use inotify, and fall back
//! to periodic scans, with a warning, when inotify is unavailable or its watch limit is
//! reached.
//!
//! Which files count (spec §3.2): names with a config extension (`.xml .ini .yml .yaml
//! .js .json` or an extra one) that `stat` as regular files, following symlinks (a
//! dangling link is skipped); with `nofollow`, `lstat` is used and symlinks themselves
//! count, with their own mtime. Other names are skipped with one log line each.

use std::collections::BTreeSet;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::inotify;
use tracing::{info, warn};

use crate::emperor::Report;
use crate::proto::config_flag;

/// What every built-in monitor shares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanOptions {
    /// Use `lstat` (`--emperor-nofollow`).
    pub nofollow: bool,
    /// Extra config extensions (`--emperor-extra-extension`).
    pub extra_extensions: Vec<String>,
    /// `--emperor-on-demand-directory DIR`: a vassal `NAME.EXT` gets the unix socket
    /// `DIR/NAME.socket` and is started on its first connection.
    pub on_demand_directory: Option<PathBuf>,
    /// Read each config and push it through the config pipe (`emperor://NAME`) instead of
    /// letting the vassal read the file (uWSGI master's forced config pipe).
    pub config_pipe: bool,
}

/// A source of vassal configs.
pub trait Monitor {
    /// The monitor's argument as the stats show it (a directory's real path, a pattern).
    fn name(&self) -> &str;
    /// Every config it sees now.
    fn scan(&mut self) -> io::Result<Vec<Report>>;
    /// The directory vassals run in (the config's directory for `dir://`).
    fn vassal_cwd(&self) -> Option<&Path>;
    /// An fd that becomes readable when a rescan is worth doing, if the monitor has one.
    fn event_fd(&self) -> Option<BorrowedFd<'_>>;
    /// Reads what made [`Monitor::event_fd`] readable; `true` if a rescan is due.
    fn handle_readable(&mut self) -> bool;
    /// Whether [`Monitor::event_fd`] reports every change (inotify works and watches
    /// everything the last scan listed). Such a monitor is rescanned at once on a change
    /// and only rarely otherwise; the default, `false`, means "rescan every period".
    fn is_watching(&self) -> bool {
        false
    }
}

/// Parses an `--emperor` value: `dir://PATH`, `glob://PATTERN`, or (as uWSGI does) an
/// existing directory → dir, anything else → glob.
pub fn from_uri(uri: &str, options: ScanOptions) -> io::Result<Box<dyn Monitor>> {
    if let Some(path) = uri.strip_prefix("dir://") {
        return Ok(Box::new(DirMonitor::new(Path::new(path), options)?));
    }
    if let Some(pattern) = uri.strip_prefix("glob://") {
        return Ok(Box::new(GlobMonitor::new(pattern, options)?));
    }
    if uri.contains("://") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("unsupported monitor {uri:?}: this emperor has dir:// and glob://"),
        ));
    }
    if Path::new(uri).is_dir() {
        Ok(Box::new(DirMonitor::new(Path::new(uri), options)?))
    } else {
        Ok(Box::new(GlobMonitor::new(uri, options)?))
    }
}

/// inotify on a set of directories, or nothing (then only periodic scans).
#[derive(Debug)]
struct Watcher {
    fd: Option<OwnedFd>,
    watched: BTreeSet<PathBuf>,
    warned: bool,
    /// A watch could not be added (limit, permission) or the queue overflowed since the
    /// last scan: the periodic rescan must stay on.
    incomplete: bool,
}

impl Watcher {
    fn new(what: &str) -> Self {
        match inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC) {
            Ok(fd) => Self { fd: Some(fd), watched: BTreeSet::new(), warned: false, incomplete: false },
            Err(e) => {
                warn!("{what}: inotify unavailable ({e}); changes are seen by the periodic rescan only");
                Self { fd: None, watched: BTreeSet::new(), warned: true, incomplete: true }
            }
        }
    }

    fn watch(&mut self, what: &str, dir: &Path) {
        let Some(fd) = &self.fd else { return };
        if self.watched.contains(dir) {
            return;
        }
        let flags = inotify::WatchFlags::CREATE
            | inotify::WatchFlags::DELETE
            | inotify::WatchFlags::MODIFY
            | inotify::WatchFlags::ATTRIB
            | inotify::WatchFlags::CLOSE_WRITE
            | inotify::WatchFlags::MOVED_FROM
            | inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::DELETE_SELF
            | inotify::WatchFlags::MOVE_SELF;
        match inotify::add_watch(fd, dir, flags) {
            Ok(_) => {
                self.watched.insert(dir.to_path_buf());
            }
            Err(rustix::io::Errno::NOSPC) => {
                self.incomplete = true;
                if !self.warned {
                    self.warned = true;
                    warn!(
                        "{what}: inotify watch limit reached (fs.inotify.max_user_watches); {} is seen by the \
                         periodic rescan only",
                        dir.display()
                    );
                }
            }
            Err(e) => {
                self.incomplete = true;
                info!("{what}: cannot watch {}: {e}; the periodic rescan covers it", dir.display());
            }
        }
    }

    /// Whether every change is reported (resets the "incomplete" mark: call it right
    /// after a full scan re-established the watches).
    fn healthy(&self) -> bool {
        self.fd.is_some() && !self.incomplete && !self.watched.is_empty()
    }

    fn drain(&mut self) -> bool {
        let Some(fd) = &self.fd else { return false };
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(fd, &mut buf);
        let mut any = false;
        // Bounded: the kernel queue is finite (max_queued_events) and non-blocking.
        for _ in 0..65_536 {
            match reader.next() {
                Ok(event) => {
                    any = true;
                    if event.events().contains(inotify::ReadFlags::IGNORED) {
                        // A watched directory went away: forget it so it can be watched again.
                        self.watched.clear();
                        self.incomplete = true;
                    }
                    if event.events().contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                        self.incomplete = true;
                    }
                }
                Err(_) => break,
            }
        }
        any
    }
}

/// Reads one candidate file into a report, or `None` if it does not count.
fn report_for(
    path: &Path,
    name: String,
    options: &ScanOptions,
    skipped: &mut BTreeSet<String>,
    what: &str,
) -> Option<Report> {
    if config_flag(&name, &options.extra_extensions).is_none() {
        if skipped.insert(name.clone()) {
            info!("{what}: ignoring {name}: not a config extension (.ini .xml .yml .yaml .js .json)");
        }
        return None;
    }
    let meta = if options.nofollow { std::fs::symlink_metadata(path) } else { std::fs::metadata(path) };
    let meta = meta.ok()?;
    let kind = meta.file_type();
    if !(kind.is_file() || (options.nofollow && kind.is_symlink())) {
        return None;
    }
    let mut report = Report::new(name, u64::try_from(meta.mtime()).unwrap_or(0));
    if options.config_pipe {
        // Unreadable now: skip it this scan (it may be mid-write); the next scan retries.
        report.config = Some(std::fs::read(path).ok()?);
    }
    report.uid = meta.uid();
    report.gid = meta.gid();
    if let Some(dir) = &options.on_demand_directory {
        let stem = path.file_stem().unwrap_or_default();
        let socket = dir.join(stem).with_extension("socket");
        report.on_demand = Some(socket.to_string_lossy().into_owned());
    }
    Some(report)
}

/// `dir://PATH`: every config file in one directory; names are bare file names and
/// vassals run in the directory.
#[derive(Debug)]
pub struct DirMonitor {
    dir: PathBuf,
    label: String,
    options: ScanOptions,
    watcher: Watcher,
    skipped: BTreeSet<String>,
}

impl DirMonitor {
    /// Watches `dir` (its real path is the monitor's name).
    pub fn new(dir: &Path, options: ScanOptions) -> io::Result<Self> {
        let dir = std::fs::canonicalize(dir)?;
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ));
        }
        let label = dir.to_string_lossy().into_owned();
        let mut watcher = Watcher::new(&label);
        watcher.watch(&label, &dir);
        Ok(Self { dir, label, options, watcher, skipped: BTreeSet::new() })
    }
}

impl Monitor for DirMonitor {
    fn name(&self) -> &str {
        &self.label
    }

    fn scan(&mut self) -> io::Result<Vec<Report>> {
        self.watcher.incomplete = self.watcher.fd.is_none();
        self.watcher.watch(&self.label, &self.dir);
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let Ok(entry) = entry else { continue };
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if let Some(r) = report_for(&entry.path(), name, &self.options, &mut self.skipped, &self.label) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn vassal_cwd(&self) -> Option<&Path> {
        Some(&self.dir)
    }

    fn event_fd(&self) -> Option<BorrowedFd<'_>> {
        self.watcher.fd.as_ref().map(AsFd::as_fd)
    }

    fn handle_readable(&mut self) -> bool {
        self.watcher.drain()
    }

    fn is_watching(&self) -> bool {
        self.watcher.healthy()
    }
}

/// `glob://PATTERN`: every config file matching a shell pattern; names are the matched
/// paths.
#[derive(Debug)]
pub struct GlobMonitor {
    pattern: String,
    options: ScanOptions,
    watcher: Watcher,
    skipped: BTreeSet<String>,
}

impl GlobMonitor {
    /// Watches `pattern` (checked now).
    pub fn new(pattern: &str, options: ScanOptions) -> io::Result<Self> {
        glob::Pattern::new(pattern)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{pattern:?}: {e}")))?;
        let watcher = Watcher::new(pattern);
        Ok(Self { pattern: pattern.to_owned(), options, watcher, skipped: BTreeSet::new() })
    }

    /// The directory before the first wildcard (watched so new matches are seen).
    fn fixed_prefix(&self) -> PathBuf {
        let mut prefix = PathBuf::new();
        for part in Path::new(&self.pattern).components() {
            let s = part.as_os_str().to_string_lossy();
            if s.contains(['*', '?', '[']) {
                break;
            }
            prefix.push(part);
        }
        if prefix.as_os_str().is_empty() || prefix == Path::new(&self.pattern) {
            prefix = Path::new(&self.pattern).parent().map(Path::to_path_buf).unwrap_or_default();
        }
        if prefix.as_os_str().is_empty() { PathBuf::from(".") } else { prefix }
    }
}

impl Monitor for GlobMonitor {
    fn name(&self) -> &str {
        &self.pattern
    }

    fn scan(&mut self) -> io::Result<Vec<Report>> {
        self.watcher.incomplete = self.watcher.fd.is_none();
        let prefix = self.fixed_prefix();
        self.watcher.watch(&self.pattern, &prefix);
        let paths = glob::glob(&self.pattern)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut out = Vec::new();
        for path in paths.flatten() {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                self.watcher.watch(&self.pattern, parent);
            }
            let name = path.to_string_lossy().into_owned();
            if let Some(r) = report_for(&path, name, &self.options, &mut self.skipped, &self.pattern) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn vassal_cwd(&self) -> Option<&Path> {
        None
    }

    fn event_fd(&self) -> Option<BorrowedFd<'_>> {
        self.watcher.fd.as_ref().map(AsFd::as_fd)
    }

    fn handle_readable(&mut self) -> bool {
        self.watcher.drain()
    }

    fn is_watching(&self) -> bool {
        // A wildcard in a directory part can match directories created later, which no
        // watch covers yet: such patterns keep the periodic rescan.
        let dir_wildcard =
            Path::new(&self.pattern).parent().is_some_and(|d| d.to_string_lossy().contains(['*', '?', '[']));
        self.watcher.healthy() && !dir_wildcard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(reports: &[Report]) -> Vec<&str> {
        reports.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn dir_lists_configs_and_sees_changes() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let d = tmp.path();
        std::fs::write(d.join("a.ini"), "[uwsgi]\n")?;
        std::fs::write(d.join("b.txt"), "")?;
        std::fs::create_dir(d.join("dir.ini"))?;
        std::os::unix::fs::symlink(d.join("missing.ini"), d.join("dangling.ini"))?;
        std::os::unix::fs::symlink(d.join("a.ini"), d.join("link.ini"))?;
        let mut m = DirMonitor::new(d, ScanOptions::default())?;
        assert_eq!(names(&m.scan()?), ["a.ini", "link.ini"]);
        assert!(m.event_fd().is_some(), "inotify available here");
        assert!(m.is_watching(), "a watched directory needs only the safety rescan");
        assert!(!m.handle_readable(), "nothing changed yet");
        std::fs::write(d.join("c.yaml"), "uwsgi:\n")?;
        assert!(m.handle_readable(), "the write is seen without a rescan timer");
        assert_eq!(names(&m.scan()?), ["a.ini", "c.yaml", "link.ini"]);
        let nofollow = ScanOptions { nofollow: true, ..ScanOptions::default() };
        let mut m = DirMonitor::new(d, nofollow)?;
        assert_eq!(names(&m.scan()?), ["a.ini", "c.yaml", "dangling.ini", "link.ini"]);
        Ok(())
    }

    #[test]
    fn glob_matches_paths_and_on_demand_sockets() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let d = tmp.path();
        std::fs::create_dir(d.join("x"))?;
        std::fs::write(d.join("x/app.ini"), "")?;
        std::fs::write(d.join("x/app.json"), "")?;
        let sockets = d.join("sockets");
        let options = ScanOptions { on_demand_directory: Some(sockets.clone()), ..ScanOptions::default() };
        let pattern = format!("{}/*/*.ini", d.display());
        let mut m = GlobMonitor::new(&pattern, options)?;
        let r = m.scan()?;
        assert_eq!(names(&r), [d.join("x/app.ini").to_string_lossy().as_ref()]);
        assert_eq!(r[0].on_demand.as_deref(), Some(sockets.join("app.socket").to_string_lossy().as_ref()));
        assert!(!m.is_watching(), "a wildcard directory part keeps the periodic rescan");
        let flat = format!("{}/x/*.ini", d.display());
        let mut m = GlobMonitor::new(&flat, ScanOptions::default())?;
        m.scan()?;
        assert!(m.is_watching());
        assert!(from_uri("pg://x", ScanOptions::default()).is_err());
        Ok(())
    }
}
