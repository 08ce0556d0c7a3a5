//! The sans-IO zerg client: receiving a hand-off, checking what arrived, and matching the
//! sockets to a program's configured addresses.
//!
//! [`Attach`] is the receive side of one connection (spec §10): feed it what each
//! `recvmsg` returned and it either wants more, or yields the [`Handoff`], or fails. It
//! owns the fds it was given from the moment they arrive, so every failure closes them
//! (the fd type is generic so tests can count drops; drivers use `OwnedFd`).
//!
//! Differences from uWSGI 2.0.21's client (spec §2.6, §7), all deliberate:
//! * one connection, with room for [`MAX_FDS`](crate::proto::MAX_FDS) fds, so no
//!   reconnect and no leaked first batch;
//! * a deadline on the whole exchange (uWSGI blocks forever on a silent server);
//! * `MSG_CTRUNC`, a second control message, a short message, a bad magic, a negative
//!   count, and (with [`AttachOptions::strict_count`]) a count that differs from the fds
//!   received are errors, and every fd received is closed;
//! * each fd must be a bound, listening stream socket of family inet, inet6 or unix
//!   ([`validate`]); uWSGI crashes or spins on anything else.

use std::time::{Duration, Instant};

use thiserror::Error;

use crate::addr::ListenAddr;
use crate::proto::{DecodeError, HEADER_LEN, Header};

/// Client settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttachOptions {
    /// Deadline for connecting and receiving the whole hand-off (default 5 s).
    pub timeout: Duration,
    /// Require the announced count to equal the fds received (default `true`). uWSGI
    /// treats the count as advisory; turn this off to accept such servers (the fds that
    /// arrived are used, and [`Handoff::announced`] tells the difference).
    pub strict_count: bool,
}

impl Default for AttachOptions {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(5), strict_count: true }
    }
}

/// Why a hand-off was not accepted. Every fd received so far has been closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AttachError {
    /// The 14 data bytes are not a hand-off header.
    #[error("invalid hand-off: {0}")]
    Decode(#[from] DecodeError),
    /// The server closed before sending 14 bytes.
    #[error("the server closed the connection after {got} of {HEADER_LEN} bytes")]
    Eof {
        /// Bytes received.
        got: usize,
    },
    /// The kernel truncated the control data (`MSG_CTRUNC`): some fds were lost.
    #[error("control data truncated (MSG_CTRUNC): fds were lost")]
    ControlTruncated,
    /// Fds arrived with more than one read (uWSGI sends them once).
    #[error("fds arrived in more than one control message")]
    SecondControlMessage,
    /// The announced count differs from the fds received.
    #[error("the server announced {announced} fds and sent {received}")]
    CountMismatch {
        /// The header's count.
        announced: usize,
        /// The fds that arrived.
        received: usize,
    },
    /// The deadline passed.
    #[error("no complete hand-off within the deadline")]
    TimedOut,
    /// A received fd is not a usable listener.
    #[error("fd #{index} of the hand-off is not a usable listener: {reason}")]
    Rejected {
        /// Its position in the hand-off.
        index: usize,
        /// What is wrong with it.
        reason: FdRejection,
    },
}

/// What a successful exchange produced: the fds in the server's order.
#[derive(Debug)]
pub struct Handoff<F> {
    /// The count the server announced.
    pub announced: usize,
    /// The fds, in the server's order.
    pub fds: Vec<F>,
}

/// The result of feeding a read to [`Attach`].
#[derive(Debug)]
pub enum Step<F> {
    /// The message is not complete; read at most [`Attach::wants`] more bytes.
    NeedMore(Attach<F>),
    /// The hand-off is complete (stop reading: the server closes next).
    Done(Handoff<F>),
}

/// The receive side of one attach. Consumed by each input, so a finished or failed
/// exchange cannot be fed again.
#[derive(Debug)]
pub struct Attach<F> {
    deadline: Instant,
    strict_count: bool,
    header: [u8; HEADER_LEN],
    got: usize,
    fds: Option<Vec<F>>,
}

impl<F> Attach<F> {
    /// Starts an exchange (connect time = `now`).
    #[must_use]
    pub fn new(now: Instant, options: &AttachOptions) -> Self {
        Self {
            deadline: now + options.timeout,
            strict_count: options.strict_count,
            header: [0; HEADER_LEN],
            got: 0,
            fds: None,
        }
    }

    /// How many data bytes the next read may take (never more than the message has, so
    /// nothing after it is consumed).
    #[must_use]
    pub fn wants(&self) -> usize {
        HEADER_LEN - self.got
    }

    /// When the exchange times out.
    #[must_use]
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Feeds one `recvmsg`: `data` (at most [`Attach::wants`] bytes; empty means EOF),
    /// the fds of its control data, and whether `MSG_CTRUNC` was set.
    pub fn handle_recv(
        mut self,
        now: Instant,
        data: &[u8],
        fds: Vec<F>,
        control_truncated: bool,
    ) -> Result<Step<F>, AttachError> {
        if control_truncated {
            return Err(AttachError::ControlTruncated);
        }
        if now >= self.deadline {
            return Err(AttachError::TimedOut);
        }
        if !fds.is_empty() {
            if self.fds.is_some() {
                return Err(AttachError::SecondControlMessage);
            }
            self.fds = Some(fds);
        }
        if data.is_empty() {
            return Err(AttachError::Eof { got: self.got });
        }
        let take = data.len().min(self.wants());
        self.header[self.got..self.got + take].copy_from_slice(&data[..take]);
        self.got += take;
        // Check the magic as soon as it is complete: fail early on a wrong server.
        if self.got >= crate::proto::MAGIC.len()
            && self.header[..crate::proto::MAGIC.len()] != *crate::proto::MAGIC
        {
            return Err(DecodeError::BadMagic.into());
        }
        if self.got < HEADER_LEN {
            return Ok(Step::NeedMore(self));
        }
        let header = Header::decode(&self.header)?;
        let fds = self.fds.take().unwrap_or_default();
        if self.strict_count && header.count != fds.len() {
            return Err(AttachError::CountMismatch { announced: header.count, received: fds.len() });
        }
        Ok(Step::Done(Handoff { announced: header.count, fds }))
    }

    /// The server closed the connection.
    pub fn handle_eof(self) -> AttachError {
        AttachError::Eof { got: self.got }
    }

    /// Fails once the deadline has passed; otherwise hands the exchange back.
    pub fn handle_timeout(self, now: Instant) -> Result<Self, AttachError> {
        if now >= self.deadline { Err(AttachError::TimedOut) } else { Ok(self) }
    }
}

/// A socket's type, as `SO_TYPE` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketKind {
    /// `SOCK_STREAM`.
    Stream,
    /// `SOCK_DGRAM`.
    Datagram,
    /// `SOCK_SEQPACKET`.
    SeqPacket,
    /// Anything else (`SOCK_RAW`, ...), with its number.
    Other(u32),
}

/// The address family and local name of a socket, as `getsockname` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalName {
    /// Bound to an inet, inet6 or unix address.
    Bound(ListenAddr),
    /// A unix socket with no name (`addrlen <= 2`): uWSGI segfaults on it.
    Unnamed,
    /// A family this crate does not hand over (netlink, vsock, ...), with its number.
    OtherFamily(u16),
}

/// What the kernel says about a received fd (gathered by the driver's syscalls).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketInfo {
    /// Not a socket at all (`ENOTSOCK`).
    NotASocket,
    /// A socket.
    Socket {
        /// `SO_TYPE`.
        kind: SocketKind,
        /// `SO_ACCEPTCONN`.
        listening: bool,
        /// `getsockname`.
        local: LocalName,
    },
}

/// Why a received fd is not a usable listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FdRejection {
    /// Not a socket.
    #[error("not a socket")]
    NotASocket,
    /// A socket, but not a stream socket (uWSGI busy-loops on a UDP socket).
    #[error("a {0:?} socket, not a stream socket")]
    NotStream(SocketKind),
    /// A stream socket that is not listening (uWSGI busy-loops on it).
    #[error("not listening")]
    NotListening,
    /// An unnamed unix socket (uWSGI segfaults on it).
    #[error("an unbound (unnamed) unix socket")]
    Unbound,
    /// Neither inet, inet6 nor unix.
    #[error("address family {0} is not inet, inet6 or unix")]
    Family(u16),
}

/// Checks that a received fd is something to `accept()` on, and returns its address.
pub fn validate(info: &SocketInfo) -> Result<ListenAddr, FdRejection> {
    let SocketInfo::Socket { kind, listening, local } = info else {
        return Err(FdRejection::NotASocket);
    };
    match local {
        LocalName::OtherFamily(f) => return Err(FdRejection::Family(*f)),
        LocalName::Unnamed => return Err(FdRejection::Unbound),
        LocalName::Bound(_) => {}
    }
    if *kind != SocketKind::Stream {
        return Err(FdRejection::NotStream(*kind));
    }
    if !listening {
        return Err(FdRejection::NotListening);
    }
    match local {
        LocalName::Bound(addr) => Ok(addr.clone()),
        LocalName::Unnamed | LocalName::OtherFamily(_) => Err(FdRejection::Unbound),
    }
}

/// Where a program's listener comes from.
#[derive(Debug)]
pub enum Source<F> {
    /// Handed over (by a zerg server or by systemd): use this fd.
    Inherited(F),
    /// Nothing was handed over for it: bind it yourself.
    Bind,
}

/// One listener of a program, with the tag (protocol, say) of the configured address it
/// matched.
#[derive(Debug)]
pub struct Assignment<T, F> {
    /// The address.
    pub addr: ListenAddr,
    /// The configured entry's tag, or the default tag for an inherited socket that no
    /// configured address names.
    pub tag: T,
    /// Use the inherited fd, or bind.
    pub source: Source<F>,
}

/// Matches inherited sockets to configured ones by address, as a uWSGI zerg does
/// (spec §3.1), but keeping the configured entry's tag (uWSGI loses the protocol).
///
/// The result lists the configured addresses first, in order (each with the inherited fd
/// of the same address, or [`Source::Bind`]), then the inherited sockets no configured
/// address names, in the order they came, with `default_tag`. An address inherited twice
/// (say, from two servers) is used once; the duplicate fd is dropped (closed).
pub fn assign<T: Clone, F>(
    configured: &[(ListenAddr, T)],
    inherited: Vec<(ListenAddr, F)>,
    default_tag: &T,
) -> Vec<Assignment<T, F>> {
    let mut pool: Vec<Option<(ListenAddr, F)>> = Vec::with_capacity(inherited.len());
    for (addr, fd) in inherited {
        if pool.iter().flatten().all(|(seen, _)| *seen != addr) {
            pool.push(Some((addr, fd)));
        }
    }
    let mut out = Vec::with_capacity(configured.len() + pool.len());
    for (addr, tag) in configured {
        if out.iter().any(|a: &Assignment<T, F>| a.addr == *addr) {
            continue;
        }
        let found = pool.iter_mut().find(|slot| slot.as_ref().is_some_and(|(a, _)| a == addr));
        let source = match found.and_then(Option::take) {
            Some((_, fd)) => Source::Inherited(fd),
            None => Source::Bind,
        };
        out.push(Assignment { addr: addr.clone(), tag: tag.clone(), source });
    }
    for (addr, fd) in pool.into_iter().flatten() {
        out.push(Assignment { addr, tag: default_tag.clone(), source: Source::Inherited(fd) });
    }
    out
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "a base Instant for virtual time; nothing depends on its value")]
mod tests {
    use super::*;

    fn opts() -> AttachOptions {
        AttachOptions::default()
    }

    #[test]
    fn one_read_with_fds_completes() {
        let now = Instant::now();
        let step =
            Attach::new(now, &opts()).handle_recv(now, b"uwsgi-zerg\x02\x00\x00\x00", vec![10, 11], false);
        let Ok(Step::Done(h)) = step else { panic!("{step:?}") };
        assert_eq!((h.announced, h.fds), (2, vec![10, 11]));
    }

    #[test]
    fn byte_by_byte_with_fds_on_the_first_byte() {
        let now = Instant::now();
        let msg = b"uwsgi-zerg\x01\x00\x00\x00";
        let mut attach = Attach::new(now, &opts());
        for (i, b) in msg.iter().enumerate() {
            let fds = if i == 0 { vec![5] } else { vec![] };
            match attach.handle_recv(now, &[*b], fds, false) {
                Ok(Step::NeedMore(a)) => attach = a,
                Ok(Step::Done(h)) => {
                    assert_eq!(i, 13);
                    assert_eq!(h.fds, [5]);
                    return;
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("never completed");
    }

    #[test]
    fn failures() {
        let now = Instant::now();
        let a = || Attach::<i32>::new(now, &opts());
        let err = |r: Result<Step<i32>, AttachError>| r.err();
        assert_eq!(
            err(a().handle_recv(now, b"uwsgi-zerh", vec![1], false)),
            Some(DecodeError::BadMagic.into())
        );
        assert_eq!(
            err(a().handle_recv(now, b"uwsgi-zerg", vec![1], true)),
            Some(AttachError::ControlTruncated)
        );
        assert_eq!(err(a().handle_recv(now, b"", vec![], false)), Some(AttachError::Eof { got: 0 }));
        assert_eq!(
            err(a().handle_recv(now, b"uwsgi-zerg\x03\x00\x00\x00", vec![1], false)),
            Some(AttachError::CountMismatch { announced: 3, received: 1 })
        );
        assert_eq!(
            err(a().handle_recv(now, b"uwsgi-zerg\x01\x00\x00\x00", vec![], false)),
            Some(AttachError::CountMismatch { announced: 1, received: 0 })
        );
        let Ok(Step::NeedMore(half)) = a().handle_recv(now, b"uwsgi", vec![1], false) else { panic!() };
        assert_eq!(
            err(half.handle_recv(now, b"-zerg", vec![2], false)),
            Some(AttachError::SecondControlMessage)
        );
        let late = now + Duration::from_secs(5);
        assert_eq!(a().handle_timeout(late).err(), Some(AttachError::TimedOut));
        assert!(a().handle_timeout(now).is_ok());
        let loose = AttachOptions { strict_count: false, ..opts() };
        let Ok(Step::Done(h)) =
            Attach::new(now, &loose).handle_recv(now, b"uwsgi-zerg\x64\x00\x00\x00", vec![1, 2, 3], false)
        else {
            panic!()
        };
        assert_eq!((h.announced, h.fds.len()), (100, 3));
    }

    #[test]
    fn validation_matrix() {
        let tcp: ListenAddr = "127.0.0.1:80".parse().expect("addr");
        let sock = |kind, listening, local| SocketInfo::Socket { kind, listening, local };
        assert_eq!(validate(&sock(SocketKind::Stream, true, LocalName::Bound(tcp.clone()))), Ok(tcp.clone()));
        assert_eq!(
            validate(&sock(SocketKind::Datagram, false, LocalName::Bound(tcp.clone()))),
            Err(FdRejection::NotStream(SocketKind::Datagram))
        );
        assert_eq!(
            validate(&sock(SocketKind::Stream, false, LocalName::Bound(tcp))),
            Err(FdRejection::NotListening)
        );
        assert_eq!(validate(&sock(SocketKind::Stream, false, LocalName::Unnamed)), Err(FdRejection::Unbound));
        assert_eq!(
            validate(&sock(SocketKind::Stream, true, LocalName::OtherFamily(16))),
            Err(FdRejection::Family(16))
        );
        assert_eq!(validate(&SocketInfo::NotASocket), Err(FdRejection::NotASocket));
    }

    #[test]
    fn assignment_keeps_configured_tags_and_order() {
        let a = |s: &str| s.parse::<ListenAddr>().expect("addr");
        let configured =
            [(a("127.0.0.1:2"), "http"), (a("/tmp/u.sock"), "uwsgi"), (a("127.0.0.1:3"), "http")];
        let inherited = vec![
            (a("127.0.0.1:9"), 90),
            (a("/tmp/u.sock"), 20),
            (a("127.0.0.1:2"), 10),
            (a("127.0.0.1:9"), 91),
        ];
        let out = assign(&configured, inherited, &"default");
        let summary: Vec<_> = out
            .iter()
            .map(|x| {
                let fd = match x.source {
                    Source::Inherited(fd) => Some(fd),
                    Source::Bind => None,
                };
                (x.addr.to_string(), x.tag, fd)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("127.0.0.1:2".to_owned(), "http", Some(10)),
                ("/tmp/u.sock".to_owned(), "uwsgi", Some(20)),
                ("127.0.0.1:3".to_owned(), "http", None),
                ("127.0.0.1:9".to_owned(), "default", Some(90)),
            ]
        );
    }
}
