//! Model check of the subscription table (STYLE.md §3.7, cargo's "oracle"): a naive
//! reference model, written straight from the pseudo-code of spec §2.3–§2.7 with plain
//! `Vec`s, and a property test that drives it and the real [`SubscriptionServer`] with the
//! same random operations, for wrr, lrc and wlrc.
//!
//! After every operation both must agree on:
//!
//! * the result of `handle_datagram` (accepted, or refused as an unknown node) and of
//!   `pick` (the address, or no node);
//! * the whole table: pools in stats order (bucket, then creation) with their `hits`, and
//!   per node, in list order: address, weight, wrr credit, refs, death mark, failcnt,
//!   cores, load, requests, last_requests, last_check;
//! * the events (created, added, failed with the reason, removed) and the notify acks.
//!
//! The model's rules, each from the spec:
//!
//! * subscribe (§2.3): refresh = resurrect, `last_check = now`, cores/load/weight (0 → 1),
//!   `last_requests = 0`, credits and failcnt kept; a new node goes to the tail with
//!   wrr 0; a new pool to the end of the table; the ack only for a new node;
//! * unsubscribe (§2.4): `failcnt += 1`, death mark, removal if unreferenced, and the pool
//!   with its last node; an unknown node is refused without a change;
//! * lookup (§2.5): `hits += 1`; in list order: expired when `now − last_check >
//!   tolerance` (strictly, whole seconds), `failcnt += 1` on every lookup while it stays;
//!   a dead unreferenced node is removed (and an emptied pool); wrr STEP1 returns the first
//!   alive node with credit (nodes after it are not visited);
//! * wrr STEP2 (§2.7.1): credits = weight / min alive weight in integers, the LAST alive
//!   node is picked; lrc/wlrc (§2.7.2–3): "min == 0 means unset" and the break rule on the
//!   raw successor (which may be dead), `ref / weight` as `f64` for wlrc;
//! * refs and failures (§2.6): +1 per pick, −1 when the lease goes; a connect failure
//!   marks the node failed (`failcnt += 1`, death mark) and removes it if unreferenced.
//!   uWSGI does that at once; `Lease::mark_failed` cannot reach the table, so the crate
//!   applies the failures of a pool at its next lookup, before anything else. The model
//!   does the same, and also applies a node's pending failure when a subscribe for that
//!   node arrives, before the refresh: the failure happened first, so the refresh must
//!   resurrect the node (or, if the failure removed it, create it anew), as in uWSGI. An
//!   unsubscribe leaves a pending failure for the next lookup (the node ends up as in
//!   uWSGI; only the reason of the `NodeFailed` event can differ).
//!
//! Unsigned datagrams, built with `wire::encode`. `PROPTEST_CASES` bounds the cases
//! (default 1024, about 1 s in a debug build).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is a failed test")]
#![allow(
    clippy::disallowed_methods,
    reason = "a base Instant for the virtual clock; nothing depends on its value"
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use subscription_proto::server::{DatagramError, Event, FailReason, bucket};
use subscription_proto::{
    Algorithm, Command, Endpoint, Lease, MemoryFiles, Request, ServerConfig, SubscriptionServer, wire,
};

/// Wall clock at the start of every run (seconds since the epoch).
const WALL: u64 = 1_800_000_000;
/// Keys subscribed to; picks also ask for `KEYS[3]`, which nobody subscribes.
const KEYS: [&str; 4] = ["a.test", "b.test", "www.example.com", "nobody.test"];
const ADDRESSES: [&str; 4] = ["127.0.0.1:3031", "127.0.0.1:3032", "10.0.0.7:3031", "/run/app.sock"];
const NOTIFY: &str = "/run/ack.sock";

// ----- the model -------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct MNode {
    /// Identity, so that a lease finds its node.
    id: u64,
    address: Vec<u8>,
    /// Seconds since the start.
    last_check: u64,
    cores: u64,
    load: u64,
    weight: u64,
    wrr: u64,
    refs: u64,
    requests: u64,
    last_requests: u64,
    failcnt: u64,
    death_mark: bool,
    /// A connect failure reported on a lease, not yet applied (see the module docs).
    failed: bool,
}

impl MNode {
    fn alive(&self) -> bool {
        !self.death_mark
    }
}

#[derive(Clone, Debug)]
struct MPool {
    key: Vec<u8>,
    created: u64,
    hits: u64,
    nodes: Vec<MNode>,
}

#[derive(Debug)]
struct Model {
    algorithm: Algorithm,
    tolerance: u64,
    /// Seconds since the start.
    now: u64,
    /// In creation order.
    pools: Vec<MPool>,
    next_id: u64,
    next_pool: u64,
    events: Vec<Event>,
    transmits: Vec<(Endpoint, Vec<u8>)>,
}

/// What the model returns for a datagram: accepted, or refused as an unknown node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Accepted,
    UnknownNode,
}

impl Model {
    fn new(algorithm: Algorithm, tolerance: u64) -> Self {
        Self {
            algorithm,
            tolerance,
            now: 0,
            pools: Vec::new(),
            next_id: 0,
            next_pool: 0,
            events: Vec::new(),
            transmits: Vec::new(),
        }
    }

    /// Spec §2.3 SUBSCRIBE, unsigned, without credentials.
    fn subscribe(&mut self, req: &Request) -> Outcome {
        // A connect failure reported on this node before its refresh happened before it:
        // uWSGI has already marked the node (and removed it if unreferenced, so that the
        // refresh creates it anew); the refresh then resurrects what is left.
        let failed = self.pools.iter().position(|p| p.key == req.key).and_then(|p| {
            let i = self.pools[p].nodes.iter().position(|n| n.address == req.address && n.failed)?;
            Some((p, i))
        });
        if let Some((p, i)) = failed
            && self.fail(p, i)
            && self.pools[p].nodes.is_empty()
        {
            self.pools.remove(p);
            self.events.push(Event::PoolRemoved { key: req.key.clone() });
        }
        let now = self.now;
        let node = MNode {
            id: self.next_id,
            address: req.address.clone(),
            last_check: now,
            cores: req.cores,
            load: req.load,
            weight: if req.weight == 0 { 1 } else { req.weight },
            wrr: 0,
            refs: 0,
            requests: 0,
            last_requests: 0,
            failcnt: 0,
            death_mark: false,
            failed: false,
        };
        match self.pools.iter_mut().find(|p| p.key == req.key) {
            Some(pool) => {
                if let Some(n) = pool.nodes.iter_mut().find(|n| n.address == req.address) {
                    // REFRESH.
                    n.death_mark = false;
                    n.last_check = now;
                    n.cores = req.cores;
                    n.load = req.load;
                    n.weight = if req.weight == 0 { 1 } else { req.weight };
                    n.last_requests = 0;
                    return Outcome::Accepted;
                }
                pool.nodes.push(node);
            }
            None => {
                self.next_pool += 1;
                self.pools.push(MPool {
                    key: req.key.clone(),
                    created: self.next_pool,
                    hits: 0,
                    nodes: vec![node],
                });
                self.events.push(Event::PoolCreated { key: req.key.clone() });
            }
        }
        self.next_id += 1;
        self.events.push(Event::NodeAdded { key: req.key.clone(), address: req.address.clone() });
        if let Some(path) = &req.notify {
            let mut text = b"[subscription ack] ".to_vec();
            text.extend_from_slice(&req.key);
            text.extend_from_slice(b" => new node: ");
            text.extend_from_slice(&req.address);
            self.transmits
                .push((Endpoint::Unix(PathBuf::from(String::from_utf8(path.clone()).unwrap())), text));
        }
        Outcome::Accepted
    }

    /// Spec §2.4 UNSUBSCRIBE.
    fn unsubscribe(&mut self, key: &[u8], address: &[u8]) -> Outcome {
        let Some(p) = self.pools.iter().position(|p| p.key == key) else { return Outcome::UnknownNode };
        let Some(i) = self.pools[p].nodes.iter().position(|n| n.address == address) else {
            return Outcome::UnknownNode;
        };
        let n = &mut self.pools[p].nodes[i];
        if n.alive() {
            self.events.push(Event::NodeFailed {
                key: key.to_vec(),
                address: address.to_vec(),
                reason: FailReason::Unsubscribed,
            });
        }
        n.failcnt += 1;
        n.death_mark = true;
        if n.refs == 0 {
            self.remove(p, i);
        }
        Outcome::Accepted
    }

    /// §2.6: a connect failure: `failcnt += 1`, death mark, removal if unreferenced.
    /// Returns whether the node is gone; the pool stays, even empty.
    fn fail(&mut self, p: usize, i: usize) -> bool {
        let pool = &mut self.pools[p];
        let n = &mut pool.nodes[i];
        n.failed = false;
        if n.alive() {
            self.events.push(Event::NodeFailed {
                key: pool.key.clone(),
                address: n.address.clone(),
                reason: FailReason::ConnectFailed,
            });
        }
        n.failcnt += 1;
        n.death_mark = true;
        if n.refs > 0 {
            return false;
        }
        let gone = pool.nodes.remove(i);
        self.events.push(Event::NodeRemoved { key: pool.key.clone(), address: gone.address });
        true
    }

    fn remove(&mut self, p: usize, i: usize) {
        let gone = self.pools[p].nodes.remove(i);
        let key = self.pools[p].key.clone();
        self.events.push(Event::NodeRemoved { key: key.clone(), address: gone.address });
        if self.pools[p].nodes.is_empty() {
            self.pools.remove(p);
            self.events.push(Event::PoolRemoved { key });
        }
    }

    /// Spec §2.5 LOOKUP with the algorithms of §2.7. Returns the picked node's id.
    fn lookup(&mut self, key: &[u8]) -> Option<u64> {
        let p = self.pools.iter().position(|p| p.key == key)?;
        let (now, tolerance, algorithm) = (self.now, self.tolerance, self.algorithm);
        self.pools[p].hits += 1;
        // Connect failures reported since the last lookup first, as if they had been
        // applied when they happened (a pool emptied here is removed at the end).
        let mut j = 0;
        while j < self.pools[p].nodes.len() {
            if self.pools[p].nodes[j].failed && self.fail(p, j) {
                continue;
            }
            j += 1;
        }
        let pool = &mut self.pools[p];
        let mut i = 0;
        let mut chosen = None;
        while i < pool.nodes.len() {
            let n = &mut pool.nodes[i];
            if now - n.last_check > tolerance {
                if n.alive() {
                    self.events.push(Event::NodeFailed {
                        key: key.to_vec(),
                        address: n.address.clone(),
                        reason: FailReason::Expired,
                    });
                }
                n.failcnt += 1;
                n.death_mark = true;
            }
            if n.death_mark && n.refs == 0 {
                let gone = pool.nodes.remove(i);
                self.events.push(Event::NodeRemoved { key: key.to_vec(), address: gone.address });
                continue;
            }
            // wrr STEP1.
            if algorithm == Algorithm::Wrr && n.alive() && n.wrr > 0 {
                n.wrr -= 1;
                chosen = Some(i);
                break;
            }
            i += 1;
        }
        if pool.nodes.is_empty() {
            self.pools.remove(p);
            self.events.push(Event::PoolRemoved { key: key.to_vec() });
            return None;
        }
        let chosen = chosen.or_else(|| match algorithm {
            Algorithm::Wrr => wrr_step2(&mut pool.nodes),
            Algorithm::Lrc => lrc_step2(&pool.nodes, |n| n.refs as f64),
            Algorithm::Wlrc => lrc_step2(&pool.nodes, |n| n.refs as f64 / n.weight as f64),
            other => unreachable!("the model has no {other:?}"),
        })?;
        let n = &mut pool.nodes[chosen];
        n.refs += 1;
        Some(n.id)
    }

    fn node_mut(&mut self, id: u64) -> &mut MNode {
        self.pools
            .iter_mut()
            .flat_map(|p| p.nodes.iter_mut())
            .find(|n| n.id == id)
            .expect("a leased node is never removed")
    }

    fn address_of(&self, id: u64) -> Vec<u8> {
        self.pools.iter().flat_map(|p| p.nodes.iter()).find(|n| n.id == id).unwrap().address.clone()
    }

    fn snapshot(&self) -> Vec<PoolSnap> {
        let mut pools: Vec<&MPool> = self.pools.iter().collect();
        pools.sort_by_key(|p| (bucket(&p.key), p.created));
        pools
            .into_iter()
            .map(|p| PoolSnap {
                key: p.key.escape_ascii().to_string(),
                hits: p.hits,
                algorithm: self.algorithm,
                nodes: p
                    .nodes
                    .iter()
                    .map(|n| NodeSnap {
                        address: n.address.escape_ascii().to_string(),
                        weight: n.weight,
                        wrr: n.wrr,
                        refs: n.refs,
                        death_mark: n.death_mark,
                        failcnt: n.failcnt,
                        cores: n.cores,
                        load: n.load,
                        requests: n.requests,
                        last_requests: n.last_requests,
                        last_check_unix: WALL + n.last_check,
                    })
                    .collect(),
            })
            .collect()
    }
}

/// §2.7.1 STEP2: `m` = min weight of the alive nodes, credits `weight / m`, the last alive
/// node is chosen and spends one.
fn wrr_step2(nodes: &mut [MNode]) -> Option<usize> {
    let m = nodes.iter().filter(|n| n.alive()).map(|n| n.weight).min()?;
    for n in nodes.iter_mut().filter(|n| n.alive()) {
        n.wrr = n.weight / m;
    }
    let chosen = nodes.iter().rposition(MNode::alive)?;
    nodes[chosen].wrr -= 1;
    Some(chosen)
}

/// §2.7.2 / §2.7.3 STEP2, line by line.
fn lrc_step2(nodes: &[MNode], r: impl Fn(&MNode) -> f64) -> Option<usize> {
    let mut chosen = None;
    let mut min = 0.0;
    for (i, node) in nodes.iter().enumerate() {
        if !node.alive() {
            continue;
        }
        if min == 0.0 || r(node) < min {
            min = r(node);
            chosen = Some(i);
            let walk_on = match nodes.get(i + 1) {
                Some(next) => r(next) <= r(node) && next.last_requests <= node.last_requests,
                None => false,
            };
            if min == 0.0 && !walk_on {
                break;
            }
        }
    }
    chosen
}

// ----- the comparison --------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
struct PoolSnap {
    key: String,
    hits: u64,
    algorithm: Algorithm,
    nodes: Vec<NodeSnap>,
}

#[derive(Debug, PartialEq, Eq)]
struct NodeSnap {
    address: String,
    weight: u64,
    wrr: u64,
    refs: u64,
    death_mark: bool,
    failcnt: u64,
    cores: u64,
    load: u64,
    requests: u64,
    last_requests: u64,
    last_check_unix: u64,
}

fn snapshot(server: &SubscriptionServer) -> Vec<PoolSnap> {
    server
        .pools()
        .into_iter()
        .map(|p| PoolSnap {
            key: p.key().escape_ascii().to_string(),
            hits: p.hits(),
            algorithm: p.algorithm(),
            nodes: p
                .nodes()
                .iter()
                .map(|n| NodeSnap {
                    address: n.address().escape_ascii().to_string(),
                    weight: n.weight(),
                    wrr: n.wrr(),
                    refs: n.refs(),
                    death_mark: n.death_mark(),
                    failcnt: n.failcnt(),
                    cores: n.cores(),
                    load: n.load(),
                    requests: n.requests(),
                    last_requests: n.last_requests(),
                    last_check_unix: n.last_check_unix(),
                })
                .collect(),
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Op {
    Subscribe {
        key: usize,
        address: usize,
        weight: u64,
        cores: u64,
        notify: bool,
    },
    Unsubscribe {
        key: usize,
        address: usize,
    },
    /// Pick for `KEYS[key]`; `connected()` on the lease; keep it or drop it at once.
    Pick {
        key: usize,
        connected: bool,
        hold: bool,
    },
    /// Drop the held lease at `index % held`.
    Release {
        index: usize,
    },
    Advance {
        secs: u64,
    },
    /// `mark_failed()` on the held lease at `index % held`, then maybe drop it (a failed
    /// connect ends the request: the router releases the node).
    MarkFailed {
        index: usize,
        release: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..3usize, 0..4usize, 0..5u64, 0..4u64, prop::bool::weighted(0.2))
            .prop_map(|(key, address, weight, cores, notify)| Op::Subscribe { key, address, weight, cores, notify }),
        1 => (0..3usize, 0..4usize).prop_map(|(key, address)| Op::Unsubscribe { key, address }),
        6 => (0..4usize, any::<bool>(), prop::bool::weighted(0.3))
            .prop_map(|(key, connected, hold)| Op::Pick { key, connected, hold }),
        2 => any::<usize>().prop_map(|index| Op::Release { index }),
        2 => (0..30u64).prop_map(|secs| Op::Advance { secs }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(index, release)| Op::MarkFailed { index, release }),
    ]
}

/// A held lease, on both sides.
struct Held {
    lease: Lease,
    node: u64,
}

fn request(key: usize, address: usize, weight: u64, cores: u64, notify: bool) -> Request {
    Request {
        key: KEYS[key].into(),
        address: ADDRESSES[address].into(),
        weight,
        cores,
        load: cores * 10,
        notify: notify.then(|| NOTIFY.into()),
        ..Request::default()
    }
}

/// Runs `ops` on a fresh server and a fresh model; panics at the first difference.
fn run(algorithm: Algorithm, tolerance: u64, ops: &[Op]) {
    let t0 = Instant::now();
    let config = ServerConfig::new().algorithm(algorithm).tolerance(Duration::from_secs(tolerance));
    let mut server = SubscriptionServer::new(config, MemoryFiles::new(), t0, Duration::from_secs(WALL));
    let mut model = Model::new(algorithm, tolerance);
    let mut held: Vec<Held> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let now = t0 + Duration::from_secs(model.now);
        match *op {
            Op::Subscribe { key, address, weight, cores, notify } => {
                let req = request(key, address, weight, cores, notify);
                let got = server.handle_datagram(now, &wire::encode(Command::Subscribe, &req).unwrap());
                let want = model.subscribe(&req);
                assert_eq!(got.map(|()| Outcome::Accepted), Ok(want), "step {step}: {op:?}");
            }
            Op::Unsubscribe { key, address } => {
                let req = request(key, address, 0, 0, false);
                let got =
                    match server.handle_datagram(now, &wire::encode(Command::Unsubscribe, &req).unwrap()) {
                        Ok(()) => Outcome::Accepted,
                        Err(DatagramError::UnknownNode) => Outcome::UnknownNode,
                        Err(e) => panic!("step {step}: {op:?}: unexpected {e:?}"),
                    };
                assert_eq!(got, model.unsubscribe(&req.key, &req.address), "step {step}: {op:?}");
            }
            Op::Pick { key, connected, hold } => {
                let got = server.pick(now, KEYS[key].as_bytes(), None);
                let want = model.lookup(KEYS[key].as_bytes());
                assert_eq!(
                    got.as_ref().map(|l| l.address().escape_ascii().to_string()),
                    want.map(|id| model.address_of(id).escape_ascii().to_string()),
                    "step {step}: {op:?}: picked"
                );
                if let (Some(lease), Some(id)) = (got, want) {
                    assert_eq!(lease.key(), KEYS[key].as_bytes());
                    if connected {
                        lease.connected();
                        let n = model.node_mut(id);
                        n.requests += 1;
                        n.last_requests += 1;
                    }
                    if hold {
                        held.push(Held { lease, node: id });
                    } else {
                        drop(lease);
                        model.node_mut(id).refs -= 1;
                    }
                }
            }
            Op::Release { index } => {
                if !held.is_empty() {
                    let h = held.swap_remove(index % held.len());
                    drop(h.lease);
                    model.node_mut(h.node).refs -= 1;
                }
            }
            Op::Advance { secs } => model.now += secs,
            Op::MarkFailed { index, release } => {
                if !held.is_empty() {
                    let i = index % held.len();
                    held[i].lease.mark_failed();
                    model.node_mut(held[i].node).failed = true;
                    if release {
                        let h = held.swap_remove(i);
                        drop(h.lease);
                        model.node_mut(h.node).refs -= 1;
                    }
                }
            }
        }
        assert_eq!(snapshot(&server), model.snapshot(), "step {step}: {op:?}: table");
        let events: Vec<Event> = std::iter::from_fn(|| server.poll_event()).collect();
        assert_eq!(events, std::mem::take(&mut model.events), "step {step}: {op:?}: events");
        let transmits: Vec<(Endpoint, Vec<u8>)> = std::iter::from_fn(|| server.poll_transmit())
            .map(|t| (t.destination, t.payload.to_vec()))
            .collect();
        assert_eq!(transmits, std::mem::take(&mut model.transmits), "step {step}: {op:?}: acks");
    }
    // Every lease back: no reference is left anywhere.
    for h in held.drain(..) {
        drop(h.lease);
        model.node_mut(h.node).refs -= 1;
    }
    assert!(server.pools().iter().flat_map(|p| p.nodes()).all(|n| n.refs() == 0), "leaked references");
    assert_eq!(snapshot(&server), model.snapshot(), "after releasing every lease");
}

const ALGORITHMS: [Algorithm; 3] = [Algorithm::Wrr, Algorithm::Lrc, Algorithm::Wlrc];

/// 1024 cases unless `PROPTEST_CASES` says otherwise (about 1 s in a debug build): 256
/// let a rare difference through (a dead but referenced node of lower weight in wrr's
/// minimum), 1024 did not, in a mutation check of the crate.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1024)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn prop_the_table_follows_the_reference_model(
        algorithm in prop::sample::select(&ALGORITHMS[..]),
        tolerance in prop::sample::select(&[4u64, 17][..]),
        ops in prop::collection::vec(op(), 1..80),
    ) {
        run(algorithm, tolerance, &ops);
    }
}

// ----- fixed sequences: the model against the spec's recorded orders ---------------------

/// `n` picks of finished requests (connected, lease dropped), as first letters.
fn model_sequence(model: &mut Model, key: &str, n: usize) -> String {
    (0..n)
        .map(|_| {
            model.lookup(key.as_bytes()).map_or('-', |id| {
                let node = model.node_mut(id);
                node.requests += 1;
                node.last_requests += 1;
                node.refs -= 1;
                char::from(node.address[0])
            })
        })
        .collect()
}

#[test]
fn the_model_reproduces_the_sequences_recorded_on_uwsgi() {
    // Spec §2.7.1 and §2.7.2, verified with real requests: the model must be right before
    // it judges the crate.
    for (algorithm, nodes, want) in [
        (Algorithm::Wrr, &[("A", 3), ("B", 1)][..], "BAAABAAA"),
        (Algorithm::Wrr, &[("A", 3), ("B", 1), ("C", 1)][..], "CAAAB"),
        (Algorithm::Wrr, &[("A", 3), ("B", 2)][..], "BABA"),
        (Algorithm::Lrc, &[("A", 1), ("B", 1), ("C", 1)][..], "CBACBA"),
        (Algorithm::Wlrc, &[("A", 1), ("B", 1), ("C", 1)][..], "CBACBA"),
    ] {
        let mut model = Model::new(algorithm, 17);
        for (a, w) in nodes {
            let req = Request {
                key: b"k".to_vec(),
                address: a.as_bytes().to_vec(),
                weight: *w,
                ..Request::default()
            };
            model.subscribe(&req);
        }
        assert_eq!(model_sequence(&mut model, "k", want.len()), want, "{algorithm:?} {nodes:?}");
    }
}

#[test]
fn the_model_and_the_crate_agree_on_expiry_at_the_tolerance_boundary() {
    // "alive at age 4, marked failed at age 5" with tolerance 4 (spec §2.5).
    let ops = [
        Op::Subscribe { key: 0, address: 0, weight: 1, cores: 1, notify: true },
        Op::Advance { secs: 4 },
        Op::Pick { key: 0, connected: true, hold: true },
        Op::Advance { secs: 1 },
        Op::Pick { key: 0, connected: false, hold: false },
        Op::Subscribe { key: 0, address: 0, weight: 2, cores: 1, notify: true },
        Op::Pick { key: 0, connected: false, hold: false },
        Op::Release { index: 0 },
        Op::Unsubscribe { key: 0, address: 0 },
        Op::Unsubscribe { key: 0, address: 0 },
    ];
    for algorithm in ALGORITHMS {
        run(algorithm, 4, &ops);
    }
}

#[test]
fn a_refresh_after_a_reported_connect_failure_resurrects_the_node() {
    // Spec §2.6: uWSGI marks a node failed as soon as a connection to it fails, and
    // removes it if nothing references it; §2.3: a later subscribe re-creates it (or, had
    // it still been referenced, resurrects it). So: B is picked, the connection fails, the
    // request ends, B announces itself again before the next request: B is in the table,
    // alive, and takes requests. The crate applies the failure reported by
    // `Lease::mark_failed` only at the next lookup, which comes after the announce and
    // kills (and removes) the node that was just refreshed: B is gone until its next
    // announce, 10 s later with uWSGI's defaults.
    for algorithm in ALGORITHMS {
        let t0 = Instant::now();
        let config = ServerConfig::new().algorithm(algorithm);
        let mut s = SubscriptionServer::new(config, MemoryFiles::new(), t0, Duration::from_secs(WALL));
        let sub = |address: &str| {
            let req = Request { key: b"k".to_vec(), address: address.into(), ..Request::default() };
            wire::encode(Command::Subscribe, &req).unwrap()
        };
        s.handle_datagram(t0, &sub("A")).unwrap();
        s.handle_datagram(t0, &sub("B")).unwrap();
        let lease = s.pick(t0, b"k", None).unwrap();
        assert_eq!(lease.address(), b"B", "{algorithm:?}: the last node first");
        lease.mark_failed();
        drop(lease);
        s.handle_datagram(t0, &sub("B")).unwrap();
        let picks: Vec<String> = (0..2)
            .map(|_| {
                s.pick(t0, b"k", None).map_or_else(|| "-".into(), |l| l.address().escape_ascii().to_string())
            })
            .collect();
        let b = s.pool(b"k").unwrap().nodes().iter().find(|n| n.address() == b"B").map(|n| n.death_mark());
        assert_eq!(
            b,
            Some(false),
            "{algorithm:?}: B, refreshed after its failure, is no longer alive (picks {picks:?})"
        );
        assert!(
            picks.contains(&"B".to_string()),
            "{algorithm:?}: B is not picked after its refresh: {picks:?}"
        );
    }
}

#[test]
fn wrr_rotates_over_backup_nodes_while_no_primary_is_alive() {
    // uWSGI 2.1 backup levels (spec §2.7.5, core/subscription.c of uWSGI master): when no
    // level-0 node is alive, wrr's reset gives credits to the next level's nodes and picks
    // the last of them; its STEP1 (`death_mark == 0 && wrr > 0`, no level test) then spends
    // those credits like level 0's, so three backup nodes rotate C A B C A B, as three
    // primaries do. The crate's STEP1 only looks at level 0, so every lookup resets and
    // picks the last backup node: all the load goes to one backup.
    let t0 = Instant::now();
    let mut s =
        SubscriptionServer::new(ServerConfig::new(), MemoryFiles::new(), t0, Duration::from_secs(WALL));
    for address in ["A", "B", "C"] {
        let req =
            Request { key: b"k".to_vec(), address: address.into(), backup: Some(1), ..Request::default() };
        s.handle_datagram(t0, &wire::encode(Command::Subscribe, &req).unwrap()).unwrap();
    }
    let picks: String = (0..6)
        .map(|_| {
            let lease = s.pick(t0, b"k", None).unwrap();
            lease.connected();
            char::from(lease.address()[0])
        })
        .collect();
    assert_eq!(picks, "CABCAB", "wrr over backup-level nodes");
}
