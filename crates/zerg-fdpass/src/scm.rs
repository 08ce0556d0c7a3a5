//! The crate's syscalls: `sendmsg`/`recvmsg` with `SCM_RIGHTS`, `SO_PEERCRED`, the listener
//! checks, and adopting systemd's inherited fds: the one place with `unsafe`.
//!
//! Received fds are `OwnedFd` from the moment `recvmsg` returns (rustix drains the control
//! buffer into owned values and closes whatever is not taken), they carry `FD_CLOEXEC`
//! (`MSG_CMSG_CLOEXEC`), and the control buffer has room for [`MAX_FDS`] fds, the most a
//! Linux `SCM_RIGHTS` message carries, so one read gets them all.
#![cfg_attr(
    not(feature = "mio"),
    allow(dead_code, reason = "sendmsg/recvmsg and SO_PEERCRED serve the mio driver only")
)]

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketType,
};

use crate::addr::{ListenAddr, path_from_bytes};
use crate::client::{LocalName, SocketInfo, SocketKind};
use crate::proto::MAX_FDS;
use crate::server::PeerCred;

/// What one `recvmsg` returned.
#[derive(Debug)]
pub(crate) struct Received {
    /// Data bytes read (0 = EOF).
    pub(crate) bytes: usize,
    /// The fds of the control data, owned.
    pub(crate) fds: Vec<OwnedFd>,
    /// `MSG_CTRUNC` was set.
    pub(crate) control_truncated: bool,
}

/// One `recvmsg` into `buf`, with room for [`MAX_FDS`] fds.
pub(crate) fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = rustix::net::recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok(Received { bytes: msg.bytes, fds, control_truncated: msg.flags.contains(ReturnFlags::CTRUNC) })
}

/// One `sendmsg` of `data`, with `fds` as one `SCM_RIGHTS` message when not empty.
/// `MSG_NOSIGNAL`: a peer that went away gives `EPIPE`, not a signal.
pub(crate) fn send_with_fds(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "more fds than one SCM_RIGHTS message carries",
        ));
    }
    Ok(rustix::net::sendmsg(socket, &[IoSlice::new(data)], &mut control, SendFlags::NOSIGNAL)?)
}

/// `SO_PEERCRED` of a connected unix socket.
pub(crate) fn peer_cred(socket: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let cred = rustix::net::sockopt::socket_peercred(socket)?;
    let pid = u32::try_from(cred.pid.as_raw_nonzero().get()).unwrap_or(0);
    Ok(PeerCred { pid, uid: cred.uid.as_raw(), gid: cred.gid.as_raw() })
}

/// The process's real uid (the default allow-list's owner).
pub(crate) fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The process id.
pub(crate) fn current_pid() -> u32 {
    u32::try_from(rustix::process::getpid().as_raw_nonzero().get()).unwrap_or(0)
}

/// What the kernel says about `fd` (`SO_TYPE`, `SO_ACCEPTCONN`, `getsockname`).
pub(crate) fn inspect(fd: BorrowedFd<'_>) -> io::Result<SocketInfo> {
    let kind = match rustix::net::sockopt::socket_type(fd) {
        Ok(kind) => kind,
        Err(rustix::io::Errno::NOTSOCK) => return Ok(SocketInfo::NotASocket),
        Err(e) => return Err(e.into()),
    };
    let kind = match kind {
        SocketType::STREAM => SocketKind::Stream,
        SocketType::DGRAM => SocketKind::Datagram,
        SocketType::SEQPACKET => SocketKind::SeqPacket,
        other => SocketKind::Other(other.as_raw()),
    };
    let listening = rustix::net::sockopt::socket_acceptconn(fd)?;
    let addr = rustix::net::getsockname(fd)?;
    let family = addr.address_family();
    let local = if family == AddressFamily::INET || family == AddressFamily::INET6 {
        match std::net::SocketAddr::try_from(addr) {
            Ok(a) => LocalName::Bound(ListenAddr::Inet(a)),
            Err(_) => LocalName::OtherFamily(family.as_raw()),
        }
    } else if family == AddressFamily::UNIX {
        match SocketAddrUnix::try_from(addr) {
            Ok(u) => {
                if u.is_unnamed() {
                    LocalName::Unnamed
                } else if let Some(path) = u.path_bytes().filter(|p| !p.is_empty()) {
                    LocalName::Bound(ListenAddr::Unix(path_from_bytes(path)))
                } else if let Some(name) = u.abstract_name().filter(|n| !n.is_empty()) {
                    LocalName::Bound(ListenAddr::Abstract(name.to_vec()))
                } else {
                    LocalName::Unnamed
                }
            }
            Err(_) => LocalName::Unnamed,
        }
    } else {
        LocalName::OtherFamily(family.as_raw())
    };
    Ok(SocketInfo::Socket { kind, listening, local })
}

/// Connects to the unix stream socket at `path` without blocking and closes again: `Ok`
/// if something listens there, `WouldBlock` if it listens with a full backlog,
/// `ConnectionRefused` if nothing does.
pub(crate) fn probe_unix_listener(path: &std::path::Path) -> io::Result<()> {
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::connect(&socket, &SocketAddrUnix::new(path)?)?;
    Ok(())
}

/// Sets `FD_CLOEXEC`.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::io::fcntl_getfd(fd)?;
    rustix::io::fcntl_setfd(fd, flags | rustix::io::FdFlags::CLOEXEC)?;
    Ok(())
}

/// Whether fd `n` is open in this process (without touching it).
fn is_open(n: i32) -> bool {
    std::fs::symlink_metadata(format!("/proc/self/fd/{n}")).is_ok()
}

/// Every fd number adopted so far. A number is never adopted twice, even after the fd was
/// closed and the number reused, so at most one `OwnedFd` is ever made from an inherited
/// number.
static ADOPTED: std::sync::Mutex<std::collections::BTreeSet<i32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Why an inherited fd cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdoptError {
    /// Below 3: stdin, stdout and stderr belong to std.
    #[error("fd {0} is a standard stream")]
    Standard(i32),
    /// Not open in this process.
    #[error("fd {0} is not open")]
    NotOpen(i32),
    /// Already taken by an earlier call.
    #[error("fd {0} was already taken")]
    AlreadyTaken(i32),
}

/// Takes ownership of fd `n`, which the parent passed to this process (its number comes
/// from an environment variable: `LISTEN_FDS`, `UWSGI_EMPEROR_FD`, …). Each number can be
/// taken once per process; the fd gets `FD_CLOEXEC`.
pub(crate) fn adopt(n: i32) -> Result<OwnedFd, AdoptError> {
    if n < 3 {
        return Err(AdoptError::Standard(n));
    }
    let mut adopted = ADOPTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if adopted.contains(&n) {
        return Err(AdoptError::AlreadyTaken(n));
    }
    if !is_open(n) {
        return Err(AdoptError::NotOpen(n));
    }
    adopted.insert(n);
    #[allow(unsafe_code)]
    // SAFETY: `n` is open (checked above), is not a standard stream, and was handed to
    // this process by its parent for it to own (the caller read its number from the
    // variable the parent set, as sd_listen_fds(3) does). Nothing else in this process
    // owns it: std never adopts fds it did not open, and `ADOPTED` (held across the check
    // and the adoption) lets each number become an `OwnedFd` at most once per process, so
    // it is closed exactly once.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(n) };
    drop(adopted);
    // Best effort: a child we spawn must not inherit it.
    let _ = set_cloexec(fd.as_fd());
    Ok(fd)
}

/// Takes ownership of the fds systemd passed to this process (numbers from
/// [`crate::systemd::parse`]): all of them, or none.
pub(crate) fn adopt_inherited(
    fds: &[crate::systemd::Announced],
) -> Result<Vec<OwnedFd>, crate::systemd::SystemdError> {
    use crate::systemd::SystemdError;
    if let Some(missing) = fds.iter().find(|a| !is_open(a.fd)) {
        return Err(SystemdError::NotOpen(missing.fd));
    }
    let mut owned = Vec::with_capacity(fds.len());
    for announced in fds {
        match adopt(announced.fd) {
            Ok(fd) => owned.push(fd),
            Err(AdoptError::AlreadyTaken(_)) => return Err(SystemdError::AlreadyTaken),
            Err(_) => return Err(SystemdError::NotOpen(announced.fd)),
        }
    }
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};

    #[test]
    fn a_listener_crosses_a_socketpair_and_stays_usable() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("l.sock");
        let listener = UnixListener::bind(&path)?;
        let (a, b) = UnixStream::pair()?;
        let n = send_with_fds(a.as_fd(), b"uwsgi-zerg\x01\x00\x00\x00", &[listener.as_fd()])?;
        assert_eq!(n, 14);
        let mut buf = [0u8; 14];
        let got = recv_with_fds(b.as_fd(), &mut buf)?;
        assert_eq!((got.bytes, got.fds.len(), got.control_truncated), (14, 1, false));
        let fd = got.fds.into_iter().next().ok_or_else(|| io::Error::other("no fd"))?;
        let info = inspect(fd.as_fd())?;
        let expected = SocketInfo::Socket {
            kind: SocketKind::Stream,
            listening: true,
            local: LocalName::Bound(ListenAddr::Unix(path.clone())),
        };
        assert_eq!(info, expected);
        let received = UnixListener::from(fd);
        let _client = UnixStream::connect(&path)?;
        received.accept()?;
        Ok(())
    }

    #[test]
    fn inspect_tells_the_bad_kinds_apart() -> io::Result<()> {
        let (a, _b) = UnixStream::pair()?;
        let Ok(SocketInfo::Socket { local, listening, .. }) = inspect(a.as_fd()) else { panic!() };
        assert_eq!((local, listening), (LocalName::Unnamed, false));
        let d = UnixDatagram::unbound()?;
        let Ok(SocketInfo::Socket { kind, .. }) = inspect(d.as_fd()) else { panic!() };
        assert_eq!(kind, SocketKind::Datagram);
        let f = std::fs::File::open("/proc/self/status")?;
        assert_eq!(inspect(f.as_fd())?, SocketInfo::NotASocket);
        Ok(())
    }

    #[test]
    fn peer_credentials_are_ours() -> io::Result<()> {
        let (a, _b) = UnixStream::pair()?;
        let cred = peer_cred(a.as_fd())?;
        assert_eq!((cred.uid, cred.pid), (current_uid(), current_pid()));
        Ok(())
    }
}
