//! The mio drivers on real sockets: a [`ServerDriver`] in its own thread with its own
//! `mio::Poll`, [`driver::attach`] / [`driver::attach_all`] against it, and hostile
//! servers written here with std and rustix (silent, wrong bytes, wrong fds).
//!
//! Every loop is bounded in time: the server thread stops on a flag or after
//! [`SERVER_LIFETIME`], hostile servers give up accepting after [`WAIT`], and clients use
//! short attach deadlines.
//!
//! # Fd leak checks
//!
//! Every failure case compares the number of entries of `/proc/self/fd` before and after
//! (client, server threads and every socket of the case dropped). The count is
//! process-wide, so nothing else may open or close fds meanwhile: `cargo nextest` (the
//! project's runner) runs each test in its own process, and for `cargo test`, which runs
//! the tests of this file as threads of one process, every test holds [`serial`]'s lock.
// Tests read the clock to bound their loops and sleep while polling a bounded condition.
#![allow(clippy::disallowed_methods, reason = "tests bound their loops with the clock")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr,
    reason = "test code: a panic is a failed test"
)]

use std::io::{self, IoSlice, Read};
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use rustix::net::{AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketType};
use zerg_fdpass::client::{AttachError, AttachOptions, FdRejection, SocketKind};
use zerg_fdpass::driver::{self, AttachFailure, DriverError, ServerDriver, SocketFile};
use zerg_fdpass::proto::{DecodeError, MAX_FDS};
use zerg_fdpass::server::{ConfigError, Event, PeerPolicy, Refusal, ServerConfig};
use zerg_fdpass::{ListenAddr, Listener, StdListener, ZergAddr};

/// How long a server thread runs at most, whatever the test does.
const SERVER_LIFETIME: Duration = Duration::from_secs(60);
/// How long a test waits for something that should happen at once.
const WAIT: Duration = Duration::from_secs(10);
/// The server thread's poll tick (how fast it sees the stop flag).
const TICK: Duration = Duration::from_millis(10);

static SERIAL: Mutex<()> = Mutex::new(());

/// One test at a time in this process (see the module docs: fd counts are process-wide).
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Open fds of this process.
fn open_fds() -> usize {
    // The directory handle itself is counted both times, so it cancels out.
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A fresh abstract zerg address (uWSGI's `@name`: the kernel's name carries the NUL).
fn abstract_addr() -> ZergAddr {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    ZergAddr::parse(&format!("@zerg-fdpass-driver-{}-{n}", std::process::id())).unwrap()
}

fn abstract_listen_addr(tag: &str) -> ListenAddr {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    ListenAddr::parse(&format!("@zft-{}-{tag}-{n}", std::process::id())).unwrap()
}

fn options(timeout: Duration) -> AttachOptions {
    let mut o = AttachOptions::default();
    o.timeout = timeout;
    o
}

fn config(policy: PeerPolicy) -> ServerConfig {
    ServerConfig::new(policy)
}

/// A [`ServerDriver`] serving in its own thread, with its own `mio::Poll`.
struct Server {
    stop: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<Event>>>,
    thread: Option<JoinHandle<ServerDriver>>,
}

impl Server {
    fn start(mut driver: ServerDriver) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(Mutex::new(Vec::new()));
        let (stop2, events2) = (Arc::clone(&stop), Arc::clone(&events));
        let thread = std::thread::spawn(move || {
            let mut poll = Poll::new().unwrap();
            driver.register(poll.registry(), Token(0)).unwrap();
            let mut ready = Events::with_capacity(64);
            let end = Instant::now() + SERVER_LIFETIME;
            while !stop2.load(Ordering::SeqCst) && Instant::now() < end {
                let wait = driver.timeout(Instant::now()).map_or(TICK, |t| t.min(TICK));
                match poll.poll(&mut ready, Some(wait)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => panic!("poll: {e}"),
                }
                for event in &ready {
                    driver.handle_ready(poll.registry(), event, Instant::now()).unwrap();
                }
                driver.handle_timeout(poll.registry(), Instant::now());
                let mut out = events2.lock().unwrap();
                out.extend(std::iter::from_fn(|| driver.poll_event()));
            }
            driver
        });
        Self { stop, events, thread: Some(thread) }
    }

    /// The events so far, once there are at least `n` (or after [`WAIT`]).
    fn events(&self, n: usize) -> Vec<Event> {
        let end = Instant::now() + WAIT;
        loop {
            let events = self.events.lock().unwrap().clone();
            if events.len() >= n || Instant::now() >= end {
                return events;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops the thread and hands the driver back.
    fn stop(mut self) -> ServerDriver {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds every address; returns the listeners (with their real addresses: port 0 read back).
fn bind_all(addrs: &[ListenAddr]) -> Vec<Listener> {
    addrs.iter().map(|a| Listener::bind(a).unwrap_or_else(|e| panic!("bind {a}: {e}"))).collect()
}

fn fds_of(listeners: &[Listener]) -> Vec<OwnedFd> {
    listeners.iter().map(|l| l.fd.try_clone().unwrap()).collect()
}

/// Connects a client to `addr` and accepts it on `listener` (non-blocking, bounded).
fn accepts_a_connection(listener: Listener) {
    let addr = listener.addr.clone();
    // The received fd shares its open file description with the server's (spec §3.1).
    let client: Box<dyn std::any::Any> = match &addr {
        ListenAddr::Inet(a) => Box::new(TcpStream::connect(a).unwrap()),
        ListenAddr::Unix(p) => Box::new(UnixStream::connect(p).unwrap()),
        ListenAddr::Abstract(name) => {
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
            Box::new(UnixStream::connect_addr(&sa).unwrap())
        }
    };
    let end = Instant::now() + WAIT;
    let accepted = match listener.into_std() {
        StdListener::Tcp(l) => {
            l.set_nonblocking(true).unwrap();
            poll_until(end, || l.accept().map(|_| ()))
        }
        StdListener::Unix(l) => {
            l.set_nonblocking(true).unwrap();
            poll_until(end, || l.accept().map(|_| ()))
        }
    };
    accepted.unwrap_or_else(|e| panic!("the listener received for {addr} did not accept: {e}"));
    drop(client);
}

fn poll_until(end: Instant, mut f: impl FnMut() -> io::Result<()>) -> io::Result<()> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(1));
            }
            r => return r,
        }
    }
}

fn protocol_error<T: std::fmt::Debug>(result: Result<T, AttachFailure>) -> AttachError {
    match result {
        Err(AttachFailure::Protocol { error, .. }) => error,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

// --- a real server ------------------------------------------------------------------------

#[test]
fn tcp_v4_v6_unix_path_and_abstract_listeners_arrive_and_accept() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let wanted = [
        ListenAddr::parse("127.0.0.1:0").unwrap(),
        ListenAddr::parse("[::1]:0").unwrap(),
        ListenAddr::Unix(dir.path().join("app.sock")),
        abstract_listen_addr("app"),
    ];
    let offered = bind_all(&wanted);
    let zerg = ZergAddr::Path(dir.path().join("zerg.sock"));
    let driver =
        ServerDriver::bind(&zerg, ServerDriver::default_config(), SocketFile::default(), fds_of(&offered))
            .unwrap();
    let server = Server::start(driver);

    let received = driver::attach(&zerg, &options(WAIT)).unwrap();
    let got: Vec<_> = received.iter().map(|l| l.addr.clone()).collect();
    let sent: Vec<_> = offered.iter().map(|l| l.addr.clone()).collect();
    assert_eq!(got, sent, "same sockets, in the server's order");
    assert!(matches!(&got[0], ListenAddr::Inet(SocketAddr::V4(a)) if a.port() != 0));
    assert!(matches!(&got[1], ListenAddr::Inet(SocketAddr::V6(a)) if a.ip().is_loopback()));
    for listener in received {
        accepts_a_connection(listener);
    }
    let events = server.events(1);
    let own_uid = rustix::process::getuid().as_raw();
    assert!(
        matches!(&events[..], [Event::Served { peer: Some(p), fds: 4, .. }] if p.uid == own_uid),
        "{events:?}"
    );
    assert_eq!(server.stop().core().stats().served, 1);
}

#[test]
fn attach_all_keeps_the_lists_of_two_servers_apart() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let a = bind_all(&[ListenAddr::parse("127.0.0.1:0").unwrap(), abstract_listen_addr("a")]);
    let b = bind_all(&[ListenAddr::Unix(dir.path().join("b.sock"))]);
    let zerg_a = ZergAddr::Path(dir.path().join("a.zerg"));
    let zerg_b = abstract_addr();
    let cfg = || config(PeerPolicy::anyone());
    let server_a =
        Server::start(ServerDriver::bind(&zerg_a, cfg(), SocketFile::default(), fds_of(&a)).unwrap());
    let server_b =
        Server::start(ServerDriver::bind(&zerg_b, cfg(), SocketFile::default(), fds_of(&b)).unwrap());
    let missing = ZergAddr::Path(dir.path().join("nobody.zerg"));

    let results = driver::attach_all(&[zerg_a.clone(), zerg_b.clone(), missing.clone()], &options(WAIT));
    let addrs: Vec<_> = results.iter().map(|(addr, _)| addr.clone()).collect();
    assert_eq!(addrs, [zerg_a, zerg_b, missing]);
    let mut results = results.into_iter().map(|(_, r)| r);
    let got_a = results.next().unwrap().unwrap();
    let got_b = results.next().unwrap().unwrap();
    let err = results.next().unwrap();
    assert_eq!(
        got_a.iter().map(|l| &l.addr).collect::<Vec<_>>(),
        a.iter().map(|l| &l.addr).collect::<Vec<_>>()
    );
    assert_eq!(
        got_b.iter().map(|l| &l.addr).collect::<Vec<_>>(),
        b.iter().map(|l| &l.addr).collect::<Vec<_>>()
    );
    assert!(matches!(err, Err(AttachFailure::Connect { .. })), "{err:?}");
    for l in got_a.into_iter().chain(got_b) {
        accepts_a_connection(l);
    }
    assert_eq!(server_a.events(1).len(), 1);
    assert_eq!(server_b.events(1).len(), 1);
}

fn offer_of(n: usize) {
    let wanted: Vec<_> = (0..n).map(|i| abstract_listen_addr(&format!("n{i}"))).collect();
    let offered = bind_all(&wanted);
    let zerg = abstract_addr();
    let sent: Vec<_> = offered.iter().map(|l| l.addr.clone()).collect();
    // The driver owns the originals: the test keeps only their addresses.
    let fds: Vec<OwnedFd> = offered.into_iter().map(|l| l.fd).collect();
    let server = Server::start(
        ServerDriver::bind(&zerg, config(PeerPolicy::anyone()), SocketFile::default(), fds).unwrap(),
    );
    let received = driver::attach(&zerg, &options(WAIT)).unwrap();
    assert_eq!(received.iter().map(|l| l.addr.clone()).collect::<Vec<_>>(), sent);
    // The first, the middle and the last are real listeners.
    let mut received = received;
    for i in [n - 1, n / 2, 0] {
        accepts_a_connection(received.remove(i));
    }
    assert!(matches!(&server.events(1)[..], [Event::Served { fds, .. }] if *fds == n));
}

#[test]
fn an_offer_of_64_sockets_arrives_whole() {
    let _serial = serial();
    offer_of(64);
}

#[test]
fn an_offer_of_253_sockets_the_most_one_message_carries_arrives_whole() {
    let _serial = serial();
    offer_of(MAX_FDS);
}

#[test]
fn an_offer_of_254_sockets_is_refused_when_configured() {
    let _serial = serial();
    let before = open_fds();
    {
        let dir = tempfile::tempdir().unwrap();
        let one = Listener::bind(&ListenAddr::parse("127.0.0.1:0").unwrap()).unwrap();
        let fds: Vec<OwnedFd> = (0..=MAX_FDS).map(|_| one.fd.try_clone().unwrap()).collect();
        let path = dir.path().join("z.sock");
        let err = ServerDriver::bind(
            &ZergAddr::Path(path.clone()),
            ServerDriver::default_config(),
            SocketFile::default(),
            fds,
        );
        assert!(matches!(err, Err(DriverError::Config(ConfigError::TooManyFds(254)))), "{err:?}");
        assert!(!path.exists(), "refused before binding anything");

        // A running server refuses a new offer of 254 as well, and keeps the old one.
        let zerg = abstract_addr();
        let mut driver = ServerDriver::bind(
            &zerg,
            config(PeerPolicy::anyone()),
            SocketFile::default(),
            vec![one.fd.try_clone().unwrap()],
        )
        .unwrap();
        let fds: Vec<OwnedFd> = (0..=MAX_FDS).map(|_| one.fd.try_clone().unwrap()).collect();
        assert!(matches!(driver.set_offer(fds), Err(DriverError::Config(ConfigError::TooManyFds(254)))));
        assert_eq!(driver.core().offer(), 1);
        let server = Server::start(driver);
        assert_eq!(driver::attach(&zerg, &options(WAIT)).unwrap().len(), 1);
        drop(server);
    }
    assert_eq!(open_fds(), before, "fd leak");
}

#[test]
fn a_peer_not_on_the_allow_list_gets_a_clean_eof_and_the_server_says_not_allowed() {
    let _serial = serial();
    let before = open_fds();
    {
        let own_uid = rustix::process::getuid().as_raw();
        let stranger_uid = own_uid.wrapping_add(4242);
        let offered = bind_all(&[ListenAddr::parse("127.0.0.1:0").unwrap()]);
        let zerg = abstract_addr();
        let policy = PeerPolicy::only().allow_uid(stranger_uid);
        let server = Server::start(
            ServerDriver::bind(&zerg, config(policy), SocketFile::default(), fds_of(&offered)).unwrap(),
        );
        let err = protocol_error(driver::attach(&zerg, &options(WAIT)));
        assert_eq!(err, AttachError::Eof { got: 0 }, "closed on without a byte");
        let events = server.events(1);
        assert!(
            matches!(&events[..], [Event::Refused { reason: Refusal::NotAllowed, peer: Some(p), .. }] if p.uid == own_uid),
            "{events:?}"
        );
        let driver = server.stop();
        assert_eq!((driver.core().stats().refused, driver.core().stats().served), (1, 0));
        assert_eq!(driver.core().connections(), 0);
    }
    assert_eq!(open_fds(), before, "fd leak");
}

#[test]
fn the_socket_file_gets_the_configured_mode_and_is_removed_on_drop() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mode.sock");
    let mut file = SocketFile::default();
    file.mode = 0o640;
    let driver =
        ServerDriver::bind(&ZergAddr::Path(path.clone()), ServerDriver::default_config(), file, vec![])
            .unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    // The default is owner-only.
    let path2 = dir.path().join("default.sock");
    let driver2 = ServerDriver::bind(
        &ZergAddr::Path(path2.clone()),
        ServerDriver::default_config(),
        SocketFile::default(),
        vec![],
    )
    .unwrap();
    assert_eq!(std::fs::symlink_metadata(&path2).unwrap().permissions().mode() & 0o7777, 0o600);
    drop(driver2);
    // Served while alive (an empty offer is a valid hand-off of 0 sockets).
    let server = Server::start(driver);
    assert!(driver::attach(&ZergAddr::Path(path.clone()), &options(WAIT)).unwrap().is_empty());
    let driver = server.stop();
    assert!(path.exists());
    drop(driver);
    assert!(!path.exists(), "removed on drop (uWSGI leaves a dead file)");
    assert!(!path2.exists());
}

#[test]
fn a_stale_socket_file_is_replaced_and_a_live_one_or_a_regular_file_refused() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("z.sock");
    let zerg = ZergAddr::Path(path.clone());
    // Stale: bound, then its listener gone; the file stays (as uWSGI leaves it).
    drop(UnixListener::bind(&path).unwrap());
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    let first =
        ServerDriver::bind(&zerg, ServerDriver::default_config(), SocketFile::default(), vec![]).unwrap();

    // Live: the first server still listens, so a second one must not take its path.
    let second = ServerDriver::bind(&zerg, ServerDriver::default_config(), SocketFile::default(), vec![]);
    match second {
        Err(DriverError::Bind { source, .. }) => assert_eq!(source.kind(), io::ErrorKind::AddrInUse),
        other => panic!("a live socket was replaced: {other:?}"),
    }
    // ... and the first still serves on it.
    let server = Server::start(first);
    assert!(driver::attach(&zerg, &options(WAIT)).unwrap().is_empty());
    drop(server);
    assert!(!path.exists());

    // A regular file is never deleted.
    std::fs::write(&path, b"not a socket").unwrap();
    let err = ServerDriver::bind(&zerg, ServerDriver::default_config(), SocketFile::default(), vec![]);
    assert!(matches!(err, Err(DriverError::Bind { .. })), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
}

#[test]
fn a_live_socket_with_a_full_backlog_is_refused_without_blocking() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.sock");
    // A live server that never accepts, with backlog 0: one pending connection fills it.
    let listener = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&listener, &rustix::net::SocketAddrUnix::new(&path).unwrap()).unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    let mut pending = Vec::new();
    for _ in 0..4 {
        let s = mio::net::UnixStream::connect(&path);
        match s {
            Ok(s) => pending.push(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    // Binding must not wait for room in that backlog (a blocking connect would, forever).
    let (tx, rx) = std::sync::mpsc::channel();
    let zerg = ZergAddr::Path(path.clone());
    std::thread::spawn(move || {
        let r = ServerDriver::bind(&zerg, ServerDriver::default_config(), SocketFile::default(), vec![]);
        let _ = tx.send(r.map(drop));
    });
    match rx.recv_timeout(WAIT) {
        Ok(Err(DriverError::Bind { source, .. })) => assert_eq!(source.kind(), io::ErrorKind::AddrInUse),
        Ok(other) => panic!("a live socket was replaced: {other:?}"),
        Err(_) => panic!("ServerDriver::bind blocked on a live socket whose backlog is full"),
    }
    assert!(path.exists());
    drop(pending);
}

#[test]
fn a_datagram_or_seqpacket_socket_file_is_neither_stale_nor_removed() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // Another program's live sockets of another type: connect gives EPROTOTYPE, which
    // says nothing about staleness, so the file must survive.
    for (kind, listen) in [(SocketType::DGRAM, false), (SocketType::SEQPACKET, true)] {
        let path = dir.path().join(format!("other-{}.sock", kind.as_raw()));
        let other = rustix::net::socket(AddressFamily::UNIX, kind, None).unwrap();
        rustix::net::bind(&other, &rustix::net::SocketAddrUnix::new(&path).unwrap()).unwrap();
        if listen {
            rustix::net::listen(&other, 8).unwrap();
        }
        let zerg = ZergAddr::Path(path.clone());
        let err = ServerDriver::bind(&zerg, ServerDriver::default_config(), SocketFile::default(), vec![]);
        assert!(matches!(err, Err(DriverError::Bind { .. })), "{kind:?}: {err:?}");
        assert!(path.exists(), "{kind:?}: a live socket file was deleted");
        assert!(Listener::bind(&ListenAddr::Unix(path.clone())).is_err());
        assert!(path.exists());
        drop(other);
    }
}

#[test]
fn peers_that_leave_before_their_hand_off_do_not_stop_the_server() {
    let _serial = serial();
    let before = open_fds();
    {
        let offered = bind_all(&[ListenAddr::parse("127.0.0.1:0").unwrap()]);
        let zerg = abstract_addr();
        let driver =
            ServerDriver::bind(&zerg, config(PeerPolicy::anyone()), SocketFile::default(), fds_of(&offered))
                .unwrap();
        // Connected and gone before the server runs: its sendmsg gets EPIPE (or succeeds
        // into a closed socket's queue, depending on the kernel's ordering).
        for _ in 0..3 {
            drop(UnixStream::connect_addr(&zerg.to_socket_addr().unwrap()).unwrap());
        }
        let server = Server::start(driver);
        let received = driver::attach(&zerg, &options(WAIT)).unwrap();
        assert_eq!(received.len(), 1);
        drop(received);
        let events = server.events(4);
        assert_eq!(events.len(), 4, "{events:?}");
        assert!(matches!(events.last(), Some(Event::Served { fds: 1, .. })), "{events:?}");
        let driver = server.stop();
        let stats = driver.core().stats();
        assert_eq!(stats.served + stats.failed, 4);
        assert_eq!(driver.core().connections(), 0);
    }
    assert_eq!(open_fds(), before, "fd leak");
}

#[test]
fn more_than_one_accept_batch_of_waiting_peers_are_all_served() {
    let _serial = serial();
    const PEERS: usize = 1100; // the driver accepts at most 1024 per wake-up
    // Raise the soft fd limit to the hard one if needed (this process only).
    let mut rlimit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if rlimit.current.unwrap_or(u64::MAX) < 4 * PEERS as u64 {
        rlimit.current = rlimit.maximum;
        let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, rlimit);
    }
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    assert!(
        limit >= 4 * PEERS as u64,
        "RLIMIT_NOFILE {limit} is too low for {PEERS} peers (hard limit included)"
    );
    let zerg = abstract_addr();
    let driver =
        ServerDriver::bind(&zerg, config(PeerPolicy::anyone()), SocketFile::default(), vec![]).unwrap();
    // Every peer waits in the backlog before the server's first wake-up.
    let mut peers = Vec::with_capacity(PEERS);
    for _ in 0..PEERS {
        match mio::net::UnixStream::connect_addr(&zerg.to_socket_addr().unwrap()) {
            Ok(s) => peers.push(s),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(peers.len() > 1024, "the listen backlog holds only {} peers (net.core.somaxconn?)", peers.len());
    let server = Server::start(driver);
    let end = Instant::now() + WAIT;
    for (i, peer) in peers.into_iter().enumerate() {
        let mut peer = UnixStream::from(OwnedFd::from(peer));
        peer.set_nonblocking(false).unwrap();
        peer.set_read_timeout(Some(
            end.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)),
        ))
        .unwrap();
        let mut buf = [0u8; 14];
        peer.read_exact(&mut buf).unwrap_or_else(|e| panic!("peer {i} was never served: {e}"));
        assert_eq!(&buf, b"uwsgi-zerg\0\0\0\0");
    }
    drop(server);
}

// --- hostile servers ------------------------------------------------------------------------

/// What a hostile server does on its one connection.
enum Act {
    /// One `sendmsg` of these bytes with these fds (as one SCM_RIGHTS message).
    Send(Vec<u8>, Vec<OwnedFd>),
    Pause(Duration),
    /// Keep the connection open until the client closes it (bounded by [`WAIT`]).
    HoldUntilClosed,
}

fn send_with_fds(stream: BorrowedFd<'_>, data: &[u8], fds: &[OwnedFd]) -> io::Result<usize> {
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(borrowed.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !borrowed.is_empty() {
        assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
    }
    Ok(rustix::net::sendmsg(stream, &[IoSlice::new(data)], &mut control, SendFlags::NOSIGNAL)?)
}

/// A server that accepts one connection and plays `script` on it, then closes.
fn hostile(script: Vec<Act>) -> (ZergAddr, JoinHandle<()>) {
    let addr = abstract_addr();
    let listener = UnixListener::bind_addr(&addr.to_socket_addr().unwrap()).unwrap();
    listener.set_nonblocking(true).unwrap();
    let thread = std::thread::spawn(move || {
        let end = Instant::now() + WAIT;
        let mut stream = None;
        let _ = poll_until(end, || listener.accept().map(|(s, _)| stream = Some(s)));
        let Some(mut stream) = stream else { return };
        stream.set_nonblocking(false).unwrap();
        for act in script {
            match act {
                Act::Send(data, fds) => {
                    // The client may be gone already (EPIPE): that is its business.
                    let _ = send_with_fds(stream.as_fd(), &data, &fds);
                }
                Act::Pause(d) => std::thread::sleep(d),
                Act::HoldUntilClosed => {
                    stream.set_read_timeout(Some(WAIT)).unwrap();
                    let mut buf = [0u8; 64];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                    }
                }
            }
        }
    });
    (addr, thread)
}

/// Runs `script` against `driver::attach` and checks that no fd outlives the case.
fn against(
    script: impl FnOnce() -> Vec<Act>,
    opts: &AttachOptions,
) -> Result<Vec<ListenAddr>, AttachFailure> {
    let before = open_fds();
    let result = {
        let (addr, thread) = hostile(script());
        let result = driver::attach(&addr, opts);
        thread.join().unwrap();
        // Whatever arrived is dropped here; only the addresses are returned.
        result.map(|ls| ls.into_iter().map(|l| l.addr).collect())
    };
    assert_eq!(open_fds(), before, "fd leak");
    result
}

fn tcp_listener() -> OwnedFd {
    Listener::bind(&ListenAddr::parse("127.0.0.1:0").unwrap()).unwrap().fd
}

fn header(count: i32) -> Vec<u8> {
    let mut h = b"uwsgi-zerg".to_vec();
    h.extend_from_slice(&count.to_ne_bytes());
    h
}

#[test]
fn a_silent_server_times_out_within_the_deadline() {
    let _serial = serial();
    let start = Instant::now();
    let timeout = Duration::from_millis(300);
    let err = protocol_error(against(|| vec![Act::HoldUntilClosed], &options(timeout)));
    let took = start.elapsed();
    assert_eq!(err, AttachError::TimedOut);
    assert!(took >= timeout, "gave up early: {took:?}");
    assert!(took < timeout + Duration::from_secs(3), "overran the deadline: {took:?}");
}

#[test]
fn a_server_that_sends_half_a_header_then_nothing_times_out() {
    let _serial = serial();
    let err = protocol_error(against(
        || vec![Act::Send(b"uwsgi-ze".to_vec(), vec![tcp_listener()]), Act::HoldUntilClosed],
        &options(Duration::from_millis(300)),
    ));
    assert_eq!(err, AttachError::TimedOut);
}

#[test]
fn bad_magic_is_refused() {
    let _serial = serial();
    let mut data = header(1);
    data[9] = b'h'; // uwsgi-zerh
    let err = protocol_error(against(|| vec![Act::Send(data, vec![tcp_listener()])], &options(WAIT)));
    assert_eq!(err, AttachError::Decode(DecodeError::BadMagic));
}

#[test]
fn fourteen_bytes_without_fds_are_a_count_mismatch() {
    let _serial = serial();
    let err = protocol_error(against(|| vec![Act::Send(header(1), vec![])], &options(WAIT)));
    assert_eq!(err, AttachError::CountMismatch { announced: 1, received: 0 });
}

#[test]
fn a_count_of_100_with_3_fds_is_a_mismatch_unless_counts_are_advisory() {
    let _serial = serial();
    let three = || vec![Act::Send(header(100), vec![tcp_listener(), tcp_listener(), tcp_listener()])];
    let err = protocol_error(against(three, &options(WAIT)));
    assert_eq!(err, AttachError::CountMismatch { announced: 100, received: 3 });
    let mut loose = options(WAIT);
    loose.strict_count = false;
    let got = against(three, &loose).unwrap();
    assert_eq!(got.len(), 3, "uWSGI's behaviour: the 3 that arrived are used");
}

#[test]
fn a_negative_count_is_refused() {
    let _serial = serial();
    let err = protocol_error(against(|| vec![Act::Send(header(-1), vec![tcp_listener()])], &options(WAIT)));
    assert_eq!(err, AttachError::Decode(DecodeError::NegativeCount(-1)));
}

#[test]
fn fds_in_two_control_messages_are_refused() {
    let _serial = serial();
    let data = header(2);
    let err = protocol_error(against(
        || {
            vec![
                Act::Send(data[..5].to_vec(), vec![tcp_listener()]),
                Act::Pause(Duration::from_millis(20)),
                Act::Send(data[5..].to_vec(), vec![tcp_listener()]),
            ]
        },
        &options(WAIT),
    ));
    assert_eq!(err, AttachError::SecondControlMessage);
}

#[test]
fn the_magic_with_fds_then_the_count_later_is_accepted() {
    let _serial = serial();
    // uWSGI's client accepts this (spec §2.6 rule 3); ours reads on until 14 bytes.
    let data = header(1);
    let got = against(
        || {
            vec![
                Act::Send(data[..10].to_vec(), vec![tcp_listener()]),
                Act::Pause(Duration::from_millis(100)),
                Act::Send(data[10..].to_vec(), vec![]),
            ]
        },
        &options(WAIT),
    )
    .unwrap();
    assert!(matches!(&got[..], [ListenAddr::Inet(a)] if a.ip() == Ipv4Addr::LOCALHOST));
}

fn udp_socket() -> OwnedFd {
    let s = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None).unwrap();
    rustix::net::bind(&s, &SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
    s
}

fn bound_tcp_not_listening() -> OwnedFd {
    let s = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&s, &SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
    s
}

fn unbound_unix() -> OwnedFd {
    rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap()
}

fn regular_file() -> OwnedFd {
    tempfile::tempfile().unwrap().into()
}

#[test]
fn an_unusable_fd_among_good_ones_rejects_the_hand_off() {
    let _serial = serial();
    let cases: [(fn() -> OwnedFd, FdRejection); 4] = [
        // uWSGI: attached, then its worker busy-loops on accept4 = EOPNOTSUPP.
        (udp_socket, FdRejection::NotStream(SocketKind::Datagram)),
        // uWSGI: busy-loops on accept4 = EINVAL.
        (bound_tcp_not_listening, FdRejection::NotListening),
        // uWSGI: segfault.
        (unbound_unix, FdRejection::Unbound),
        (regular_file, FdRejection::NotASocket),
    ];
    for (bad, reason) in cases {
        let script = || vec![Act::Send(header(3), vec![tcp_listener(), bad(), tcp_listener()])];
        let err = protocol_error(against(script, &options(WAIT)));
        assert_eq!(err, AttachError::Rejected { index: 1, reason }, "{reason:?}");
        // Alone, too (index 0), and with the count advisory: still rejected.
        let mut loose = options(WAIT);
        loose.strict_count = false;
        let err = protocol_error(against(|| vec![Act::Send(header(1), vec![bad()])], &loose));
        assert_eq!(err, AttachError::Rejected { index: 0, reason }, "{reason:?}");
    }
}

#[test]
fn a_server_that_closes_early_is_an_eof() {
    let _serial = serial();
    let err = protocol_error(against(Vec::new, &options(WAIT)));
    assert_eq!(err, AttachError::Eof { got: 0 });
    let err = protocol_error(against(
        || vec![Act::Send(b"uwsgi-ze".to_vec(), vec![tcp_listener(), tcp_listener()])],
        &options(WAIT),
    ));
    assert_eq!(err, AttachError::Eof { got: 8 });
}

#[test]
fn nothing_listening_is_a_connect_error_without_a_leak() {
    let _serial = serial();
    let before = open_fds();
    let err = driver::attach(&abstract_addr(), &options(WAIT));
    assert!(matches!(err, Err(AttachFailure::Connect { .. })), "{err:?}");
    let dir = tempfile::tempdir().unwrap();
    let err = driver::attach(&ZergAddr::Path(dir.path().join("none")), &options(WAIT));
    assert!(matches!(err, Err(AttachFailure::Connect { .. })), "{err:?}");
    drop(dir);
    assert_eq!(open_fds(), before, "fd leak");
}
