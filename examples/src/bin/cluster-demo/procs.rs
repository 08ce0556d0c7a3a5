//! A child program whose `--events-json` lines are read as they come (for the zerg and
//! emperor sections).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Result;

/// A running program printing one JSON object per line on stdout. Dropping it kills it.
pub(super) struct JsonProc {
    pub(super) child: Child,
    pub(super) name: String,
    events: Receiver<(Instant, Value)>,
    /// Events already read while waiting for another one.
    seen: Vec<(Instant, Value)>,
}

impl JsonProc {
    /// Starts `program args…` with stdout read line by line (non-JSON lines are dropped)
    /// and stderr discarded (`quiet`) or inherited.
    pub(super) fn start(name: &str, program: &Path, args: &[String], quiet: bool) -> Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if quiet { Stdio::null() } else { Stdio::inherit() })
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send((Instant::now(), v)).is_err()
                {
                    return;
                }
            }
        });
        Ok(Self { child, name: name.to_owned(), events, seen: Vec::new() })
    }

    /// Waits (bounded) for the first event with `"event": event` (and, if given, the
    /// field `key` equal to `value`) not returned before, and when it was read.
    pub(super) fn wait_event(
        &mut self,
        event: &str,
        filter: Option<(&str, &str)>,
        timeout: Duration,
    ) -> Result<(Instant, Value)> {
        let matches =
            |v: &Value| v["event"] == event && filter.is_none_or(|(k, want)| v[k].as_str() == Some(want));
        if let Some(i) = self.seen.iter().position(|(_, v)| matches(v)) {
            return Ok(self.seen.remove(i));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok((at, v)) if matches(&v) => return Ok((at, v)),
                Ok(other) => self.seen.push(other),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(
                        format!("{}: no `{event}` event within {} s", self.name, timeout.as_secs()).into()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("{} exited before its `{event}` event", self.name).into());
                }
            }
        }
    }
}

impl Drop for JsonProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
