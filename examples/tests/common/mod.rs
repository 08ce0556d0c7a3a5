//! Helpers shared by the example programs' integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::print_stderr)]

use std::path::PathBuf;

/// The absolute path of a required peer program (`uwsgi`, `nginx`, …).
///
/// A missing peer is a test **failure**, never a skip: the README's test command installs
/// every peer (`scripts/test.sh`), and under `CI=true` nothing may be skipped.
pub fn require_program(name: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    let extra = [PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin"), PathBuf::from("/sbin")];
    for dir in std::env::split_paths(&dirs).chain(extra) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    let ci = std::env::var("CI").map(|v| v == "true").unwrap_or(false);
    panic!(
        "required peer program `{name}` is not installed{}: run `scripts/test.sh`, which installs \
         uwsgi-core, uwsgi-plugin-python3 and nginx-light (apt, as root)",
        if ci { " (CI=true: peers are never skipped)" } else { "" }
    );
}
