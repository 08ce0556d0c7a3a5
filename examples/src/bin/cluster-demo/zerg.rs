//! Section 16: a zero-downtime hand-over of listening sockets between two `zerg-http`
//! processes, under load.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::procs::JsonProc;
use super::{Args, Demo, Result, ended, ms, send_signal, sibling_program, wait_exit};

impl Demo {
    pub(super) fn section_zerg_hand_over(&mut self, args: &Args) -> Result<()> {
        self.heading("Zerg hand-over: listening sockets move between processes under load");
        let zerg_http = match &args.zerg_http {
            Some(p) => p.clone(),
            None => sibling_program("zerg-http", "--zerg-http")?,
        };
        let http_load = match &args.http_load {
            Some(p) => p.clone(),
            None => sibling_program("http-load", "--http-load")?,
        };
        let dir = tempdir("zerg")?;
        let zs = dir.join("a-zerg.sock");
        let zs_text = zs.to_string_lossy().into_owned();
        let stop_file = dir.join("stop-load");

        println!("  A binds the listener itself and shares it on a unix socket (its zerg server):");
        let a_args = strings(&[
            "--http-socket",
            "127.0.0.1:0",
            "--zerg-server",
            &zs_text,
            "--text",
            "from-A",
            "--events-json",
        ]);
        println!("  $ zerg-http {}", a_args.join(" "));
        let mut a = JsonProc::start("zerg-http A", &zerg_http, &a_args, true)?;
        let (_, listening) = a.wait_event("listening", None, self.timeout)?;
        let addr = listening["addrs"][0].as_str().ok_or("zerg-http A listens nowhere")?.to_owned();
        let a_pid = listening["pid"].as_u64().unwrap_or(0);
        println!("  A (pid {a_pid}) listening on {addr}, zerg server {zs_text}");

        println!("\n  steady load: 8 concurrent clients, one request per connection:");
        let load_args = strings(&[
            "--target",
            &addr,
            "--concurrency",
            "8",
            "--until-file",
            &stop_file.to_string_lossy(),
            "--max-ms",
            "20000",
        ]);
        println!("  $ http-load {}", load_args.join(" "));
        let load = Command::new(&http_load)
            .args(&load_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start http-load: {e}"))?;
        std::thread::sleep(Duration::from_millis(300));

        println!("\n  B attaches to A's zerg server and gets a duplicate of the same listening socket:");
        let b_args = strings(&["--zerg", &zs_text, "--text", "from-B", "--events-json"]);
        println!("  $ zerg-http {}", b_args.join(" "));
        let attach_start = Instant::now();
        let mut b = JsonProc::start("zerg-http B", &zerg_http, &b_args, true)?;
        let (b_ready, b_listening) = b.wait_event("listening", None, self.timeout)?;
        let b_pid = b_listening["pid"].as_u64().unwrap_or(0);
        println!(
            "  B (pid {b_pid}) listening on {} (source {}), {} ms after it started",
            b_listening["addrs"][0].as_str().unwrap_or("?"),
            b_listening["sources"][0].as_str().unwrap_or("?"),
            ms(b_ready.duration_since(attach_start))
        );
        let (_, served) = a.wait_event("zerg-served", None, self.timeout)?;
        println!("  A's zerg server: handed {} socket(s) to pid {}", served["fds"], served["pid"]);
        println!("  both processes now accept on one socket; the kernel spreads connections over them");
        std::thread::sleep(Duration::from_millis(300));

        println!("\n  A stops gracefully (SIGINT): it stops accepting at once and finishes what it has;");
        println!("  connections still queued on the shared socket are B's to accept:");
        let sigint = Instant::now();
        send_signal(&a.child, "-INT")?;
        let (_, stopping) = a.wait_event("stopping", None, self.timeout)?;
        let (_, stopped) = a.wait_event("stopped", None, self.timeout)?;
        let status = wait_exit(&mut a.child, "zerg-http A", self.timeout)?;
        println!(
            "  A: stopping with {} request(s) in flight, stopped after serving {}, {} ({} ms after SIGINT)",
            stopping["in_flight"],
            stopped["served"],
            ended(status),
            ms(sigint.elapsed())
        );
        self.check(status.success(), "zerg-http A did not exit 0")?;
        std::thread::sleep(Duration::from_millis(300));

        std::fs::write(&stop_file, b"")?;
        let out = load.wait_with_output_bounded(self.timeout)?;
        let summary: Value =
            serde_json::from_slice(&out).map_err(|e| format!("http-load printed no summary: {e}"))?;
        let count = |k: &str| summary[k].as_u64().unwrap_or(u64::MAX);
        let by_pid = |pid: u64| summary["by_pid"][pid.to_string()].as_u64().unwrap_or(0);
        println!("\n  http-load: {summary}");
        println!(
            "  {} requests answered ({} by A, {} by B), {} failed, {} refused, {} timed out; p99 {} µs",
            count("ok"),
            by_pid(a_pid),
            by_pid(b_pid),
            count("failed"),
            count("refused"),
            count("timeouts"),
            summary["latency_us"]["p99"]
        );
        self.check(
            count("failed") == 0 && count("refused") == 0 && count("timeouts") == 0,
            "requests failed during the hand-over",
        )?;
        self.check(by_pid(a_pid) > 0 && by_pid(b_pid) > 0, "both processes should have served")?;
        println!("  zero failed requests across the hand-over");

        send_signal(&b.child, "-INT")?;
        let status = wait_exit(&mut b.child, "zerg-http B", self.timeout)?;
        self.check(status.success(), "zerg-http B did not exit 0")?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}

/// `Child::wait_with_output` with a bound: kills the child after `timeout`.
trait WaitBounded {
    fn wait_with_output_bounded(self, timeout: Duration) -> Result<Vec<u8>>;
}

impl WaitBounded for std::process::Child {
    fn wait_with_output_bounded(mut self, timeout: Duration) -> Result<Vec<u8>> {
        use std::io::Read as _;
        let mut stdout = self.stdout.take().ok_or("no stdout")?;
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = stdout.read_to_end(&mut v);
            v
        });
        let status = wait_exit(&mut self, "http-load", timeout);
        if status.is_err() {
            let _ = self.kill();
            let _ = self.wait();
        }
        status?;
        reader.join().map_err(|_| "http-load's output reader panicked".into())
    }
}

pub(super) fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// A fresh private directory under the system's temporary directory.
pub(super) fn tempdir(tag: &str) -> Result<PathBuf> {
    let base = std::env::temp_dir().join(format!("cluster-demo-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)?;
    Ok(base)
}
