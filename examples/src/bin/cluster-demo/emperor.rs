//! Section 17: an `emperor` supervising `vassal-demo` vassals from a temporary directory:
//! a file appears, changes, disappears, and each reaction is timed.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use super::procs::JsonProc;
use super::zerg::{strings, tempdir};
use super::{Args, Demo, Result, ended, ms, send_signal, sibling_program, wait_exit};

/// uWSGI 2.0.21's emperor notices changes by scanning every `--emperor-freq` (3 s).
const UWSGI_SCAN: Duration = Duration::from_secs(3);

impl Demo {
    pub(super) fn section_emperor(&mut self, args: &Args) -> Result<()> {
        self.heading("Emperor: one vassal per config file, reacting to changes at once");
        let emperor = match &args.emperor {
            Some(p) => p.clone(),
            None => sibling_program("emperor", "--emperor")?,
        };
        let vassal = match &args.vassal_demo {
            Some(p) => p.clone(),
            None => sibling_program("vassal-demo", "--vassal-demo")?,
        };
        let dir = tempdir("vassals")?;
        let dir_text = dir.to_string_lossy().into_owned();
        let e_args =
            strings(&["--emperor", &dir_text, "--vassal-bin", &vassal.to_string_lossy(), "--events-json"]);
        println!("  $ emperor --emperor {dir_text} --vassal-bin vassal-demo --events-json");
        let mut e = JsonProc::start("emperor", &emperor, &e_args, true)?;
        // The first (empty) scan is done once the emperor reads its directory; a short pause
        // keeps the file's appearance a change rather than part of the first scan.
        std::thread::sleep(Duration::from_millis(200));

        let port = free_tcp_port()?;
        let ini = dir.join("app.ini");
        let write_ini = |text: &str| {
            std::fs::write(&ini, format!("[uwsgi]\nhttp-socket = 127.0.0.1:{port}\ntext = {text}\n"))
        };
        println!("\n  a config appears: app.ini (http-socket 127.0.0.1:{port}, text v1)");
        let t = Instant::now();
        write_ini("v1")?;
        let (spawned, ev) = e.wait_event("spawned", Some(("vassal", "app.ini")), self.timeout)?;
        let pid = ev["pid"].as_u64().unwrap_or(0);
        let (ready, _) = e.wait_event("ready", Some(("vassal", "app.ini")), self.timeout)?;
        println!(
            "  spawned pid {pid} {} ms after the write (inotify), ready {} ms after the write",
            ms(spawned.duration_since(t)),
            ms(ready.duration_since(t))
        );
        let body = self.get(port)?;
        println!("  GET / -> {body:?}");
        self.check(body == format!("{pid} v1\n"), format!("unexpected answer {body:?}"))?;
        let (_, _) = e.wait_event("loyal", Some(("vassal", "app.ini")), self.timeout)?;
        println!("  after its first request the vassal says it is loyal (byte 17)");

        println!("\n  the config changes (text v2, a newer mtime): the vassal is reloaded in place");
        let t = Instant::now();
        write_ini("v2")?;
        let later = SystemTime::now() + Duration::from_secs(2);
        std::fs::File::options().write(true).open(&ini)?.set_modified(later)?;
        let (reloaded, _) = e.wait_event("reloaded", Some(("vassal", "app.ini")), self.timeout)?;
        let body = self.wait_body(port, &format!("{pid} v2\n"))?;
        println!(
            "  reload sent (byte 1) {} ms after the change; same pid {pid} answers {body:?} {} ms after it",
            ms(reloaded.duration_since(t)),
            ms(t.elapsed())
        );

        println!("\n  the config disappears: the vassal is stopped (byte 0) and forgotten");
        let t = Instant::now();
        std::fs::remove_file(&ini)?;
        let (destroyed, _) = e.wait_event("destroyed", Some(("vassal", "app.ini")), self.timeout)?;
        println!("  destroyed {} ms after the removal", ms(destroyed.duration_since(t)));
        self.check(TcpStream::connect(("127.0.0.1", port)).is_err(), "the vassal still listens")?;
        println!(
            "  (uWSGI 2.0.21's emperor notices each of these at its next scan: up to {} s)",
            UWSGI_SCAN.as_secs()
        );

        send_signal(&e.child, "-INT")?;
        let status = wait_exit(&mut e.child, "emperor", self.timeout)?;
        println!("  emperor {}", ended(status));
        self.check(status.success(), "the emperor did not exit 0")?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// One `GET /` on a new connection; the body.
    fn get(&self, port: u16) -> Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(self.timeout))?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply)?;
        let text = String::from_utf8_lossy(&reply);
        Ok(text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
    }

    /// Polls (bounded) until the vassal answers `want`.
    fn wait_body(&self, port: u16, want: &str) -> Result<String> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Ok(body) = self.get(port)
                && body == want
            {
                return Ok(body);
            }
            if Instant::now() >= deadline {
                return Err(format!("the vassal never answered {want:?}").into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A TCP port free on 127.0.0.1 right now (bound, then released for the vassal).
fn free_tcp_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
