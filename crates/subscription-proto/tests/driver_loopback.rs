//! The mio drivers on real sockets: a `ServerDriver` and a `SubscriberDriver` in one
//! `mio::Poll`, on 127.0.0.1 (and `[::1]` where the host has it) and on unix datagram
//! sockets in a temporary directory. Every wait is bounded (a few seconds at most).

#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]
#![allow(clippy::disallowed_methods, reason = "the tests drive real sockets with the real clock")]
#![allow(clippy::print_stderr, reason = "a skipped test says why")]

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use subscription_proto::driver::{ServerDriver, SubscriberDriver, SubscriberEvent};
use subscription_proto::server::{Event as ServerEvent, FailReason};
use subscription_proto::subscriber::Event as SubEvent;
use subscription_proto::wire::{self, Mode};
use subscription_proto::{Command, Endpoint, ServerConfig, SubscriberConfig, Subscription};

const SERVER: Token = Token(0);
const SUBSCRIBER: Token = Token(1);
/// The longest any condition may take to come true.
const BOUND: Duration = Duration::from_secs(5);

/// A server and a subscriber in one poll, with what each reported.
struct Loop {
    poll: Poll,
    events: Events,
    server: ServerDriver,
    subscriber: Option<SubscriberDriver>,
    server_events: Vec<ServerEvent>,
    subscriber_events: Vec<SubscriberEvent>,
}

impl Loop {
    fn new(mut server: ServerDriver) -> Self {
        let poll = Poll::new().unwrap();
        server.register(poll.registry(), SERVER).unwrap();
        Self {
            poll,
            events: Events::with_capacity(64),
            server,
            subscriber: None,
            server_events: Vec::new(),
            subscriber_events: Vec::new(),
        }
    }

    fn attach(&mut self, mut subscriber: SubscriberDriver) {
        subscriber.register(self.poll.registry(), SUBSCRIBER).unwrap();
        self.subscriber = Some(subscriber);
    }

    /// One loop iteration: flush both, collect events, wait at most 20 ms for readiness.
    fn step(&mut self) {
        let now = Instant::now();
        self.server.flush(now).unwrap();
        if let Some(s) = &mut self.subscriber {
            s.flush(now).unwrap();
        }
        self.collect();
        self.poll.poll(&mut self.events, Some(Duration::from_millis(20))).unwrap();
        for event in &self.events {
            match event.token() {
                SERVER => self.server.handle_ready(event, Instant::now()).unwrap(),
                SUBSCRIBER => {
                    if let Some(s) = &mut self.subscriber {
                        s.handle_ready(event, Instant::now()).unwrap();
                    }
                }
                t => panic!("unexpected token {t:?}"),
            }
        }
        self.collect();
    }

    fn collect(&mut self) {
        while let Some(e) = self.server.poll_event() {
            self.server_events.push(e);
        }
        if let Some(s) = &mut self.subscriber {
            while let Some(e) = s.poll_event() {
                self.subscriber_events.push(e);
            }
        }
    }

    /// Steps until `done` holds; fails after [`BOUND`].
    fn until(&mut self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + BOUND;
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.step();
        }
    }

    fn nodes(&self, key: &[u8]) -> Vec<Vec<u8>> {
        self.server
            .core()
            .pool(key)
            .map(|p| p.nodes().iter().map(|n| n.address().to_vec()).collect())
            .unwrap_or_default()
    }

    fn shutdown_subscriber(&mut self) {
        let s = self.subscriber.as_mut().unwrap();
        s.shutdown(Instant::now()).unwrap();
        self.collect();
    }

    fn sent(&self) -> Vec<wire::Decoded> {
        self.subscriber_events
            .iter()
            .filter_map(|e| match e {
                SubscriberEvent::Sent(t) => Some(wire::decode(&t.payload, Mode::Strict).unwrap()),
                _ => None,
            })
            .collect()
    }
}

fn subscription(server: &Endpoint, key: &str, address: &str, weight: u64) -> Subscription {
    let mut s = Subscription::new(server.clone(), key, address);
    s.request.weight = weight;
    s
}

#[test]
fn udp_subscribe_then_unsubscribe_on_shutdown() {
    let server = ServerDriver::bind(ServerConfig::new(), &["127.0.0.1:0".parse().unwrap()]).unwrap();
    let endpoint = server.local_endpoints()[0].clone();
    let Endpoint::Udp(addr) = endpoint else { panic!("not UDP: {endpoint}") };
    assert_ne!(addr.port(), 0, "the real port is reported");
    let mut l = Loop::new(server);
    let subs = vec![
        subscription(&endpoint, "example.com", "127.0.0.1:3031", 3),
        subscription(&endpoint, "example.com", "127.0.0.1:3032", 1),
    ];
    let config = SubscriberConfig::new().announce_interval(Duration::from_secs(1));
    l.attach(SubscriberDriver::start(config, subs, None).unwrap());

    // Spec §4.1: a round at start, in option order.
    l.until("both nodes", |l| l.nodes(b"example.com").len() == 2);
    assert_eq!(l.nodes(b"example.com"), [b"127.0.0.1:3031".to_vec(), b"127.0.0.1:3032".to_vec()]);
    let pool = l.server.core().pool(b"example.com").unwrap();
    assert_eq!(pool.nodes().iter().map(|n| n.weight()).collect::<Vec<_>>(), [3, 1]);
    assert!(l.server_events.contains(&ServerEvent::PoolCreated { key: b"example.com".to_vec() }));
    assert_eq!(l.server.stats().datagrams_received, 2);

    // The second round, one second after start, refreshes (no new node, no event).
    l.until("the refresh round", |l| l.sent().len() >= 4);
    l.until("the refresh to arrive", |l| l.server.stats().datagrams_received >= 4);
    assert_eq!(l.nodes(b"example.com").len(), 2);
    assert_eq!(l.server.core().stats().subscribes, 4);

    // Shutdown: one unsubscribe per subscription, and the pool goes away.
    let before = l.sent().len();
    l.shutdown_subscriber();
    let sent = l.sent();
    assert_eq!(sent.len(), before + 2);
    assert!(sent[before..].iter().all(|d| d.command == Command::Unsubscribe));
    l.until("the pool to go", |l| l.server.core().pool(b"example.com").is_none());
    let failed = l
        .server_events
        .iter()
        .filter(|e| matches!(e, ServerEvent::NodeFailed { reason: FailReason::Unsubscribed, .. }))
        .count();
    assert_eq!(failed, 2);
    assert!(l.server_events.contains(&ServerEvent::PoolRemoved { key: b"example.com".to_vec() }));
    let s = l.subscriber.as_ref().unwrap();
    assert_eq!(s.timeout(Instant::now()), None, "nothing more after shutdown");
    assert_eq!(s.stats().send_errors, 0);
}

#[test]
fn unix_sockets_and_the_notify_ack() {
    let dir = tempfile::tempdir().unwrap();
    let sub_path = dir.path().join("sub.sock");
    let notify = dir.path().join("notify.sock");
    let server = ServerDriver::bind(ServerConfig::new(), &[Endpoint::Unix(sub_path.clone())]).unwrap();
    assert_eq!(server.local_endpoints(), [Endpoint::Unix(sub_path.clone())]);
    let mut l = Loop::new(server);
    let endpoint = Endpoint::Unix(sub_path.clone());
    let subs = vec![subscription(&endpoint, "ack.test", "127.0.0.1:42051", 1)];
    let driver = SubscriberDriver::start(SubscriberConfig::new(), subs, Some(notify.clone())).unwrap();
    assert_eq!(driver.notify_path(), Some(notify.as_path()));
    l.attach(driver);

    // Spec §1.7: the router acknowledges the new node on the advertised notify socket.
    l.until("the ack", |l| {
        l.subscriber_events.iter().any(|e| matches!(e, SubscriberEvent::Core(SubEvent::Acknowledged { .. })))
    });
    let ack = l.subscriber_events.iter().find_map(|e| match e {
        SubscriberEvent::Core(SubEvent::Acknowledged { key, address }) => {
            Some((key.clone(), address.clone()))
        }
        _ => None,
    });
    assert_eq!(ack, Some((b"ack.test".to_vec(), b"127.0.0.1:42051".to_vec())));
    let sent = l.sent();
    assert_eq!(sent[0].request.notify.as_deref(), Some(notify.as_os_str().as_encoded_bytes()));
    assert_eq!(
        l.server.core().pool(b"ack.test").unwrap().nodes()[0].notify(),
        sent[0].request.notify.as_deref()
    );
    assert_eq!(l.server.stats().acks_sent, 1);

    l.shutdown_subscriber();
    l.until("the pool to go", |l| l.server.core().pool(b"ack.test").is_none());

    // Socket files are removed when the drivers go.
    drop(l);
    assert!(!sub_path.exists());
    assert!(!notify.exists());
}

#[test]
fn credentials_are_read_on_unix_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("cred.test"), b"").unwrap();
    let me = std::fs::metadata(creds.join("cred.test")).unwrap();
    let sub_path = dir.path().join("frsub.sock");
    let prefix = format!("{}/", creds.display());
    let config = ServerConfig::new().use_credentials(true).credentials_check(prefix.into_bytes());
    let server =
        ServerDriver::bind(config, &[Endpoint::Unix(sub_path.clone()), "127.0.0.1:0".parse().unwrap()])
            .unwrap();
    let udp = server.local_endpoints()[1].clone();
    let mut l = Loop::new(server);
    let unix = Endpoint::Unix(sub_path);
    let subs = vec![
        // Spec §2.11: the file PREFIX + key exists and is ours: accepted.
        subscription(&unix, "cred.test", "127.0.0.1:42210", 1),
        // No such file: refused.
        subscription(&unix, "other.test", "127.0.0.1:42211", 1),
        // UDP carries no credentials: dropped.
        subscription(&udp, "cred.test", "127.0.0.1:42212", 1),
    ];
    l.attach(SubscriberDriver::start(SubscriberConfig::new(), subs, None).unwrap());
    l.until("three datagrams", |l| l.server.stats().datagrams_received >= 3);
    let pool = l.server.core().pool(b"cred.test").unwrap();
    assert_eq!(pool.nodes().len(), 1);
    let c = pool.nodes()[0].credentials();
    assert_eq!((c.pid, c.uid, c.gid), (std::process::id(), me.uid(), me.gid()));
    assert!(l.server.core().pool(b"other.test").is_none());
    let rejected = &l.server.core().stats().rejected;
    assert_eq!(rejected.get("credentials_refused"), Some(&1));
    assert_eq!(rejected.get("no_credentials"), Some(&1));
    assert_eq!(l.server.stats().datagrams_rejected, 2);
}

#[test]
fn ipv6_loopback_when_the_host_has_it() {
    if mio::net::UdpSocket::bind("[::1]:0".parse().unwrap()).is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let server = ServerDriver::bind(ServerConfig::new(), &["[::1]:0".parse().unwrap()]).unwrap();
    let endpoint = server.local_endpoints()[0].clone();
    let mut l = Loop::new(server);
    let subs = vec![subscription(&endpoint, "v6.test", "[::1]:3031", 1)];
    l.attach(SubscriberDriver::start(SubscriberConfig::new(), subs, None).unwrap());
    l.until("the node", |l| l.nodes(b"v6.test") == [b"[::1]:3031".to_vec()]);
}

#[test]
fn run_loops_stop_and_unsubscribe() {
    let dir = tempfile::tempdir().unwrap();
    let sub_path = dir.path().join("sub.sock");
    let server = ServerDriver::bind(ServerConfig::new(), &[Endpoint::Unix(sub_path.clone())]).unwrap();
    let server_stop = server.stop_handle();
    let in_thread = server_stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server_thread = std::thread::spawn(move || server.run(&in_thread, |e| tx.send(e.clone()).unwrap()));

    let subs = vec![subscription(&Endpoint::Unix(sub_path.clone()), "run.test", "127.0.0.1:3031", 1)];
    let subscriber = SubscriberDriver::start(SubscriberConfig::new(), subs, None).unwrap();
    let stop = subscriber.stop_handle();
    let in_thread = stop.clone();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let subscriber_thread = std::thread::spawn(move || {
        subscriber.run(&in_thread, |e| {
            if let SubscriberEvent::Sent(t) = e {
                sent_tx.send(wire::decode(&t.payload, Mode::Strict).unwrap().command).unwrap();
            }
        })
    });

    let wait = |what: &str, want: &dyn Fn(&ServerEvent) -> bool| loop {
        let e = rx.recv_timeout(BOUND).unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        if want(&e) {
            break;
        }
    };
    wait("the node", &|e| matches!(e, ServerEvent::NodeAdded { .. }));
    assert_eq!(sent_rx.recv_timeout(BOUND).unwrap(), Command::Subscribe);
    // Stopping the subscriber's loop unsubscribes before it returns.
    stop.stop();
    subscriber_thread.join().unwrap().unwrap();
    wait("the pool to go", &|e| matches!(e, ServerEvent::PoolRemoved { .. }));
    let last = std::iter::from_fn(|| sent_rx.try_recv().ok()).last();
    assert_eq!(last, Some(Command::Unsubscribe));

    // The server's handle wakes its loop at once; the socket file goes with the driver.
    server_stop.stop();
    server_thread.join().unwrap().unwrap();
    assert!(!sub_path.exists());
}
