//! `zergpool` end to end, with our own clients: `zerg_fdpass::driver::attach` receives the
//! lists (TCP on 127.0.0.1 and [::1], unix paths, abstract names; two pools; an empty
//! pool) and uses every socket; `zerg-http --zerg POOL` started as uid 65534 is refused
//! (and served once allowed); `--chmod-socket`; SIGINT removes the pool sockets; invalid
//! options exit 2. The real-uWSGI interop lives elsewhere.
//!
//! Ports are 0 (the kernel picks), unix sockets live in per-test temporary directories,
//! abstract names carry the test's pid and name. Every wait is bounded; every child is
//! killed when its guard drops. The uid 65534 test needs root (as `scripts/test.sh`).

#![allow(clippy::disallowed_methods, reason = "tests bound their waits with the clock and short sleeps")]
#![allow(clippy::unwrap_used, clippy::print_stderr, reason = "test code")]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use zerg_fdpass::client::AttachOptions;
use zerg_fdpass::driver::attach;
use zerg_fdpass::{ListenAddr, StdListener, ZergAddr};

mod common;

use common::procs::{Proc, is};

const POOL: &str = env!("CARGO_BIN_EXE_zergpool");
const HTTP: &str = env!("CARGO_BIN_EXE_zerg-http");
/// Bound for any one thing to happen (start, attach, exit), generous for a loaded machine.
const WAIT: Duration = Duration::from_secs(10);
const NOBODY: u32 = 65534;

/// An abstract name unique to this test process and `tag`.
fn abstract_name(tag: &str) -> String {
    format!("@zergpool-test-{}-{tag}", std::process::id())
}

fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
}

fn my_uid() -> u32 {
    std::fs::metadata("/proc/self").unwrap().uid()
}

fn attach_to(pool: &str) -> Vec<zerg_fdpass::Listener> {
    let mut options = AttachOptions::default();
    options.timeout = WAIT;
    attach(&ZergAddr::parse(pool).unwrap(), &options).unwrap_or_else(|e| panic!("attach {pool}: {e}"))
}

/// Proves a received listener works: a client connects to its address, and an
/// `accept()` on the received fd gets that connection.
fn use_listener(listener: zerg_fdpass::Listener) {
    let addr = listener.addr.clone();
    match listener.into_std() {
        StdListener::Tcp(l) => {
            let ListenAddr::Inet(sa) = addr else { panic!("{addr}") };
            let mut client = TcpStream::connect_timeout(&sa, WAIT).unwrap();
            client.write_all(b"ping").unwrap();
            let (mut server, _) = l.accept().unwrap();
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ping", "{addr}");
        }
        StdListener::Unix(l) => {
            let sa = match &addr {
                ListenAddr::Unix(p) => std::os::unix::net::SocketAddr::from_pathname(p).unwrap(),
                ListenAddr::Abstract(name) => {
                    use std::os::linux::net::SocketAddrExt as _;
                    std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap()
                }
                ListenAddr::Inet(_) => panic!("{addr}"),
            };
            let mut client = UnixStream::connect_addr(&sa).unwrap();
            client.write_all(b"ping").unwrap();
            let (mut server, _) = l.accept().unwrap();
            let mut buf = [0u8; 4];
            server.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"ping", "{addr}");
        }
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn run(bin: &str, args: &[String]) -> std::process::Output {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    common::run_bounded(cmd, None, WAIT)
}

#[test]
fn pools_hand_their_lists_to_attaching_zergs_and_sigint_removes_the_pool_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let pool1 = dir.path().join("pool1.sock");
    let unix = dir.path().join("app.sock");
    let abs = abstract_name("app");
    let pool2 = abstract_name("pool2");
    let empty = dir.path().join("empty.sock");
    let args = vec![
        "--zergpool".to_owned(),
        format!("{}:127.0.0.1:0,[::1]:0,{},{abs}", path_str(&pool1), path_str(&unix)),
        "--zerg-pool".to_owned(),
        format!("{pool2}:127.0.0.1:0"),
        "--zergpool".to_owned(),
        format!("{}:", path_str(&empty)),
        "--events-json".to_owned(),
    ];
    let pool = Proc::start(POOL, &args);
    let first =
        pool.wait_for("listening of pool 1", WAIT, |v| is("listening")(v) && v["pool"] == path_str(&pool1));
    let second =
        pool.wait_for("listening of pool 2", WAIT, |v| is("listening")(v) && v["pool"] == pool2.as_str());
    let third = pool.wait_for("listening of the empty pool", WAIT, |v| {
        is("listening")(v) && v["pool"] == path_str(&empty)
    });
    let addrs = strings(&first["addrs"]);
    assert_eq!(addrs.len(), 4, "{first}");
    assert!(addrs[0].starts_with("127.0.0.1:") && !addrs[0].ends_with(":0"), "{addrs:?}");
    assert!(addrs[1].starts_with("[::1]:") && !addrs[1].ends_with(":0"), "IPv6 works: {addrs:?}");
    assert_eq!(addrs[2..], [path_str(&unix), abs]);
    assert_eq!(strings(&second["addrs"]).len(), 1);
    assert_eq!(third["addrs"], json!([]));
    pool.wait_stderr(&format!("zergpool {} bound to TCP socket {} (fd: ", path_str(&pool1), addrs[0]), WAIT);
    pool.wait_stderr(&format!("zergpool {} bound to UNIX socket {} (fd: ", path_str(&pool1), addrs[2]), WAIT);
    // The default mode of a pool socket: only its owner (and root) can connect.
    assert_eq!(mode(&pool1), 0o600);

    // Pool 1: four sockets, in the configured order, each usable.
    let got = attach_to(&path_str(&pool1));
    assert_eq!(got.iter().map(|l| l.addr.to_string()).collect::<Vec<_>>(), addrs);
    for listener in got {
        use_listener(listener);
    }
    let served =
        pool.wait_for("served on pool 1", WAIT, |v| is("served")(v) && v["pool"] == path_str(&pool1));
    assert_eq!(served["pid"], std::process::id());
    assert_eq!(served["uid"], my_uid());
    assert_eq!(served["fds"], 4);
    // Pool 2 has its own list.
    let got = attach_to(&pool2);
    assert_eq!(got.iter().map(|l| l.addr.to_string()).collect::<Vec<_>>(), strings(&second["addrs"]));
    assert_ne!(strings(&second["addrs"])[0], addrs[0]);
    for listener in got {
        use_listener(listener);
    }
    // The empty pool hands over nothing (uWSGI's clients reject that; ours take it).
    assert!(attach_to(&path_str(&empty)).is_empty());
    let served =
        pool.wait_for("served on the empty pool", WAIT, |v| is("served")(v) && v["pool"] == path_str(&empty));
    assert_eq!(served["fds"], 0);
    // A second attach gets the same sockets again.
    assert_eq!(attach_to(&path_str(&pool1)).len(), 4);

    pool.signal("-INT");
    let status = pool.expect_exit(WAIT);
    assert!(status.success(), "{status:?}\n{}", pool.stderr_text());
    assert!(!pool1.exists() && !empty.exists(), "the pool sockets are removed");
    assert!(unix.exists(), "the pooled sockets stay for the zergs that hold them");
}

#[test]
fn chmod_socket_applies_to_pool_and_pooled_unix_sockets() {
    let dir = tempfile::tempdir().unwrap();
    for (value, expected) in [(Some("660"), 0o660), (None, 0o666)] {
        let pool = dir.path().join("pool.sock");
        let unix = dir.path().join("app.sock");
        let mut args = vec![
            "--zergpool".to_owned(),
            format!("{}:{}", path_str(&pool), path_str(&unix)),
            "--events-json".to_owned(),
            "--chmod-socket".to_owned(),
        ];
        args.extend(value.map(str::to_owned));
        let p = Proc::start(POOL, &args);
        p.wait_for("listening", WAIT, is("listening"));
        assert_eq!(mode(&pool), expected, "--chmod-socket {value:?}");
        assert_eq!(mode(&unix), expected, "--chmod-socket {value:?} on the pooled socket (as uWSGI)");
        p.signal("-TERM");
        assert!(p.expect_exit(WAIT).success());
        assert!(!pool.exists());
        std::fs::remove_file(&unix).unwrap();
    }
}

#[test]
fn a_peer_not_on_the_allow_list_is_refused_and_an_allowed_one_is_served() {
    assert_eq!(my_uid(), 0, "this test starts zergs as uid {NOBODY}: run it as root (scripts/test.sh does)");
    // Abstract pool names have no file permissions, so only the peer check stands
    // between uid 65534 and the sockets (spec §7).
    let name = abstract_name("strict");
    let pool =
        Proc::start(POOL, &["--zergpool".into(), format!("{name}:127.0.0.1:0"), "--events-json".into()]);
    pool.wait_for("listening", WAIT, is("listening"));
    let mut zerg = Command::new(HTTP);
    zerg.args(["--zerg", &name, "--zerg-timeout", "5"]).uid(NOBODY).gid(NOBODY);
    let out = common::run_bounded(zerg, None, WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--- invalid data received from zerg-server ---"), "{stderr}");
    let refused = pool.wait_for("refused", WAIT, is("refused"));
    assert_eq!(refused["uid"], NOBODY);
    assert_eq!(refused["reason"], "not-allowed");
    assert_eq!(refused["pool"], name.as_str());
    assert!(refused["pid"].as_u64().is_some_and(|p| p > 0), "{refused}");
    assert!(!pool.json_lines().iter().any(is("served")), "{:#?}", pool.json_lines());

    // Allowed explicitly: the same zerg attaches and serves.
    let name = abstract_name("allowed");
    let pool = Proc::start(
        POOL,
        &[
            "--zergpool".into(),
            format!("{name}:127.0.0.1:0"),
            "--zerg-allow-uid".into(),
            NOBODY.to_string(),
            "--events-json".into(),
        ],
    );
    let listening = pool.wait_for("listening", WAIT, is("listening"));
    let mut cmd = Command::new(HTTP);
    cmd.args(["--zerg", &name, "--events-json"]).uid(NOBODY).gid(NOBODY);
    let zerg = Proc::command(cmd);
    let ready = zerg.wait_for("zerg-http listening", WAIT, is("listening"));
    assert_eq!(ready["addrs"], listening["addrs"]);
    assert_eq!(ready["sources"], json!(["zerg"]));
    let served = pool.wait_for("served", WAIT, is("served"));
    assert_eq!(
        (served["uid"].as_u64(), served["pid"].as_u64()),
        (Some(u64::from(NOBODY)), Some(u64::from(zerg.pid())))
    );
    // Root is not on that explicit list.
    let mut options = AttachOptions::default();
    options.timeout = WAIT;
    assert!(attach(&ZergAddr::parse(&name).unwrap(), &options).is_err());
    let refused = pool.wait_for("refused root", WAIT, is("refused"));
    assert_eq!(refused["uid"], 0);
}

#[test]
fn invalid_options_exit_2_and_a_busy_address_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let pool = path_str(&dir.path().join("pool.sock"));
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--zergpool".into(), pool.clone()], "invalid zergpool syntax"),
        (vec!["--zergpool".into(), format!("{pool}:{}", vec!["127.0.0.1:0"; 254].join(","))], "at most 253"),
        (
            vec!["--zergpool".into(), format!("{pool}:127.0.0.1:0"), "--chmod-socket".into(), "66".into()],
            "invalid chmod value",
        ),
        (vec!["--zergpool".into(), format!("{pool}:/tmp/a:b")], "is not a TCP address"),
        (
            vec!["--zergpool".into(), format!("{pool}:"), "--zergpool".into(), format!("{pool}:")],
            "given twice",
        ),
        (
            vec![
                "--zergpool".into(),
                format!("{pool}:"),
                "--zerg-allow-any".into(),
                "--zerg-allow-uid".into(),
                "1".into(),
            ],
            "cannot be used with",
        ),
        (vec![], "--zergpool"),
    ];
    for (args, message) in cases {
        let out = run(POOL, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!Path::new(&pool).exists(), "{args:?} bound nothing");
    }
    // 253 addresses are fine (the most one SCM_RIGHTS message carries).
    let enough = vec!["127.0.0.1:0"; 253].join(",");
    let p = Proc::start(POOL, &["--zergpool".into(), format!("{pool}:{enough}"), "--events-json".into()]);
    let listening = p.wait_for("listening", WAIT, is("listening"));
    assert_eq!(listening["addrs"].as_array().unwrap().len(), 253);
    assert_eq!(attach_to(&pool).len(), 253);
    p.signal("-INT");
    assert!(p.expect_exit(WAIT).success());

    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let out = run(POOL, &["--zergpool".into(), format!("{pool}:{addr}")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot bind {addr}")), "{stderr}");
}
