//! Entry points for the fuzz targets and property tests (feature `__fuzzing`; not API).
#![allow(
    clippy::disallowed_methods,
    reason = "a base Instant for virtual time; nothing depends on its value"
)]

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::client::{Attach, AttachError, AttachOptions, Step};
use crate::proto::{DecodeError, HEADER_LEN, Header, MAGIC, MAX_FDS};

/// A stand-in for an fd that counts how many are alive, so a test can check that every
/// one given to the client is either handed out or dropped.
#[derive(Debug)]
pub struct Tracked(Rc<Cell<usize>>);

impl Tracked {
    /// A new tracked "fd", counted in `live`.
    #[must_use]
    pub fn new(live: &Rc<Cell<usize>>) -> Self {
        live.set(live.get() + 1);
        Self(Rc::clone(live))
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// One `recvmsg` as the client sees it.
#[derive(Debug, Clone)]
pub struct Read {
    /// Data bytes (empty = EOF).
    pub data: Vec<u8>,
    /// Fds in its control data.
    pub fds: usize,
    /// `MSG_CTRUNC`.
    pub truncated: bool,
    /// Time since the start.
    pub at: Duration,
}

/// Runs the client state machine over `reads`; returns the fds handed out (if it
/// completed) and checks that no tracked fd is left alive otherwise.
///
/// # Panics
/// If an fd leaks, or the result contradicts the header, or the machine takes more than
/// 14 data bytes.
pub fn run_client(reads: &[Read], strict: bool) -> Option<usize> {
    let live = Rc::new(Cell::new(0));
    let start = Instant::now();
    let options = AttachOptions { timeout: Duration::from_secs(5), strict_count: strict };
    let mut state: Option<Attach<Tracked>> = Some(Attach::new(start, &options));
    let mut taken = Vec::new();
    let mut outcome = None;
    for read in reads {
        let Some(attach) = state.take() else { break };
        let fds = (0..read.fds).map(|_| Tracked::new(&live)).collect();
        let want = attach.wants();
        let data = &read.data[..read.data.len().min(want)];
        taken.extend_from_slice(data);
        match attach.handle_recv(start + read.at, data, fds, read.truncated) {
            Ok(Step::NeedMore(a)) => state = Some(a),
            Ok(Step::Done(h)) => {
                assert_eq!(taken.len(), HEADER_LEN);
                let header = Header::decode(&taken).ok();
                assert_eq!(header.map(|h| h.count), Some(h.announced));
                if strict {
                    assert_eq!(h.announced, h.fds.len());
                }
                assert_eq!(live.get(), h.fds.len(), "only the handed-out fds are alive");
                outcome = Some(h.fds.len());
                drop(h);
                break;
            }
            Err(_) => {
                assert_eq!(live.get(), 0, "a failed attach closes every fd");
                return None;
            }
        }
    }
    drop(state);
    assert_eq!(live.get(), 0, "nothing outlives the exchange");
    outcome
}

/// Splits fuzz input into reads: each read is `[len, fds, flags, data...]`.
#[must_use]
pub fn reads_from_bytes(mut input: &[u8]) -> Vec<Read> {
    let mut reads = Vec::new();
    let mut at = Duration::ZERO;
    while let [len, fds, flags, rest @ ..] = input {
        let n = usize::from(*len % 16).min(rest.len());
        let (data, tail) = rest.split_at(n);
        at += Duration::from_millis(u64::from(flags >> 2) * 50);
        reads.push(Read { data: data.to_vec(), fds: usize::from(*fds % 8), truncated: flags & 1 == 1, at });
        input = tail;
        if reads.len() > 64 {
            break;
        }
    }
    reads
}

/// The `zerg_fdpass_frame` target: [`Header::decode`] on arbitrary bytes.
///
/// # Panics
/// If an accepted header does not re-encode to the 14 bytes it came from, an error
/// contradicts the bytes, or the client read in one piece disagrees with `decode`.
pub fn frame(data: &[u8]) {
    match Header::decode(data) {
        Ok(header) => {
            assert!(header.count <= MAX_FDS);
            assert_eq!(Header::new(header.count), Ok(header));
            assert_eq!(header.encode().as_slice(), &data[..HEADER_LEN], "re-encodes byte for byte");
        }
        Err(DecodeError::Short(n)) => assert!(n == data.len() && n < HEADER_LEN),
        Err(DecodeError::BadMagic) => assert_ne!(&data[..MAGIC.len()], MAGIC.as_slice()),
        Err(DecodeError::NegativeCount(c)) => assert!(c < 0),
        Err(DecodeError::TooManyFds(c)) => assert!(usize::try_from(c).is_ok_and(|n| n > MAX_FDS)),
    }
    // The client, given the same bytes in one read (without fds, count not enforced),
    // completes exactly when `decode` accepts, and fails with `decode`'s error.
    let start = Instant::now();
    let options = AttachOptions { timeout: Duration::from_secs(5), strict_count: false };
    let read = &data[..data.len().min(HEADER_LEN)];
    let step = Attach::<()>::new(start, &options).handle_recv(start, read, Vec::new(), false);
    match (step, Header::decode(data)) {
        (Ok(Step::Done(h)), Ok(header)) => assert_eq!(h.announced, header.count),
        (Ok(Step::NeedMore(_)), Err(DecodeError::Short(_))) => {
            assert!(data.len() < MAGIC.len() || data.starts_with(MAGIC));
        }
        (Err(AttachError::Eof { got: 0 }), Err(DecodeError::Short(0))) => {}
        (Err(AttachError::Decode(e)), Err(d)) => {
            assert!(e == d || (e == DecodeError::BadMagic && matches!(d, DecodeError::Short(_))));
        }
        (step, decoded) => panic!("client {step:?} vs decode {decoded:?}"),
    }
}

/// The `zerg_fdpass_client` target: the input cut into reads ([`reads_from_bytes`]) and run
/// through the client, strict and advisory count ([`run_client`]).
///
/// # Panics
/// As [`run_client`]; also if the strict client completes where the advisory one does not.
pub fn client(data: &[u8]) {
    let reads = reads_from_bytes(data);
    let strict = run_client(&reads, true);
    let loose = run_client(&reads, false);
    if strict.is_some() {
        assert_eq!(strict, loose, "strict accepts only what the advisory count accepts");
    }
}
