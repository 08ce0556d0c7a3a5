//! [`Listener`]: a listening socket with its address, from a hand-off, from systemd, or
//! bound here.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;

use thiserror::Error;

use crate::addr::ListenAddr;
use crate::client::{FdRejection, validate};
use crate::scm;
use crate::systemd::{self, SystemdError};

/// A listening stream socket and the address it is bound to.
#[derive(Debug)]
pub struct Listener {
    /// Its local address (`getsockname`).
    pub addr: ListenAddr,
    /// The socket. Dropping it closes this process's reference only: the listening
    /// socket lives on in every other process holding it.
    pub fd: OwnedFd,
}

/// A [`Listener`] as a std listener of the right kind.
#[derive(Debug)]
pub enum StdListener {
    /// TCP (IPv4 or IPv6).
    Tcp(TcpListener),
    /// Unix (path or abstract).
    Unix(UnixListener),
}

/// Why a socket from systemd cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ActivationError {
    /// The variables are wrong.
    #[error(transparent)]
    Env(#[from] SystemdError),
    /// An fd is not a listening stream socket.
    #[error("socket-activation fd {fd}: {reason}")]
    Rejected {
        /// The fd number.
        fd: i32,
        /// What is wrong with it.
        reason: FdRejection,
    },
    /// `getsockopt`/`getsockname` failed.
    #[error("socket-activation fd {fd}: {source}")]
    Io {
        /// The fd number.
        fd: i32,
        /// The error.
        source: io::Error,
    },
}

impl Listener {
    /// Checks that `fd` is a bound, listening stream socket (inet, inet6 or unix) and
    /// reads its address. On error the fd is dropped (closed).
    pub fn from_fd(fd: OwnedFd) -> Result<Self, (FdRejection, Option<io::Error>)> {
        match scm::inspect(fd.as_fd()) {
            Ok(info) => validate(&info).map(|addr| Self { addr, fd }).map_err(|r| (r, None)),
            Err(e) => Err((FdRejection::NotASocket, Some(e))),
        }
    }

    /// Binds `addr` and listens (std's backlog): TCP with `SO_REUSEADDR` (std's
    /// default), a unix path after removing a stale socket file, or an abstract name.
    pub fn bind(addr: &ListenAddr) -> io::Result<Self> {
        let fd: OwnedFd = match addr {
            ListenAddr::Inet(a) => TcpListener::bind(a)?.into(),
            ListenAddr::Unix(path) => {
                remove_stale_socket(path)?;
                UnixListener::bind(path)?.into()
            }
            ListenAddr::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let sa = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                UnixListener::bind_addr(&sa)?.into()
            }
        };
        // Read the address back: port 0 becomes the real port.
        let info = scm::inspect(fd.as_fd())?;
        let addr = validate(&info).map_err(|r| io::Error::other(r.to_string()))?;
        Ok(Self { addr, fd })
    }

    /// The sockets systemd passed to this process (`LISTEN_PID`/`LISTEN_FDS`), with
    /// their `LISTEN_FDNAMES` names; empty when there are none for this process. Ownership
    /// is taken once per process; a later call fails with
    /// [`SystemdError::AlreadyTaken`].
    pub fn from_systemd() -> Result<Vec<(Option<String>, Self)>, ActivationError> {
        let var = |k: &str| std::env::var(k).ok();
        let announced = systemd::parse(
            var("LISTEN_PID").as_deref(),
            var("LISTEN_FDS").as_deref(),
            var("LISTEN_FDNAMES").as_deref(),
            scm::current_pid(),
        )?;
        let Some(announced) = announced else { return Ok(Vec::new()) };
        let owned = scm::adopt_inherited(&announced)?;
        let mut out = Vec::with_capacity(owned.len());
        for (a, fd) in announced.into_iter().zip(owned) {
            let info = scm::inspect(fd.as_fd()).map_err(|source| ActivationError::Io { fd: a.fd, source })?;
            let addr = validate(&info).map_err(|reason| ActivationError::Rejected { fd: a.fd, reason })?;
            out.push((a.name, Self { addr, fd }));
        }
        Ok(out)
    }

    /// A std listener of the right kind.
    #[must_use]
    pub fn into_std(self) -> StdListener {
        match self.addr {
            ListenAddr::Inet(_) => StdListener::Tcp(TcpListener::from(self.fd)),
            ListenAddr::Unix(_) | ListenAddr::Abstract(_) => StdListener::Unix(UnixListener::from(self.fd)),
        }
    }

    /// A second fd for the same socket (`dup`, with `FD_CLOEXEC`).
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self { addr: self.addr.clone(), fd: self.fd.try_clone()? })
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Removes `path` if it is a socket nobody listens on (uWSGI unlinks unconditionally;
/// refusing to delete a live socket or a regular file is safer).
pub(crate) fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if !meta.file_type().is_socket() => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        )),
        // Only `ECONNREFUSED` proves nobody listens. The probe does not block: a blocking
        // connect to a live server whose backlog is full waits for room, forever if that
        // server is hung. `EAGAIN` (backlog full) means live; anything else (`EACCES` on
        // another user's socket, `EPROTOTYPE` on a datagram or seqpacket socket) says
        // nothing about staleness, so the file is left alone.
        Ok(_) => match scm::probe_unix_listener(path) {
            Ok(()) => Err(live(path)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(live(path)),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("{} exists and cannot be probed ({e}): not removing it", path.display()),
            )),
        },
    }
}

fn live(path: &std::path::Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("{} is a live socket: another process listens on it", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_reads_back_the_real_address() -> io::Result<()> {
        let l = Listener::bind(&"127.0.0.1:0".parse().map_err(io::Error::other)?)?;
        let ListenAddr::Inet(a) = l.addr else { panic!("{:?}", l.addr) };
        assert_ne!(a.port(), 0);
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("x.sock");
        let u = Listener::bind(&ListenAddr::Unix(p.clone()))?;
        assert!(Listener::bind(&ListenAddr::Unix(p.clone())).is_err(), "live socket kept");
        drop(u);
        Listener::bind(&ListenAddr::Unix(p))?;
        let name = format!("@zerg-fdpass-test-{}", std::process::id());
        let abs = Listener::bind(&name.parse().map_err(io::Error::other)?)?;
        assert_eq!(abs.addr.to_string(), name);
        Ok(())
    }

    #[test]
    fn from_fd_rejects_a_connected_stream() -> io::Result<()> {
        let (a, _b) = std::os::unix::net::UnixStream::pair()?;
        let err = Listener::from_fd(a.into()).err().map(|(r, _)| r);
        assert_eq!(err, Some(FdRejection::Unbound));
        Ok(())
    }
}
