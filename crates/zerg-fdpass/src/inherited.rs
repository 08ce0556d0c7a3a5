//! Taking ownership of fds a parent process passed down by number (uWSGI's
//! `UWSGI_EMPEROR_FD`, a zerg's re-exec, …), the one safe way: each number once per
//! process, checked to be open, never a standard stream.

use std::os::fd::OwnedFd;

pub use crate::scm::AdoptError;

/// Takes fd `n`, which this process's parent passed to it (for example, its number is
/// in an environment variable the parent set). Call it early, before the process opens
/// other files: the fd gets `FD_CLOEXEC` and is closed when the `OwnedFd` drops.
pub fn take(n: i32) -> Result<OwnedFd, AdoptError> {
    crate::scm::adopt(n)
}

/// Why an fd named by an environment variable cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvFdError {
    /// The variable is not a number.
    #[error("{var}={value:?} is not an fd number")]
    NotANumber {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
    },
    /// The fd cannot be taken.
    #[error("{var}: {source}")]
    Adopt {
        /// The variable.
        var: String,
        /// Why.
        source: AdoptError,
    },
}

/// Takes the fd whose number is in environment variable `var`; `Ok(None)` when `var` is
/// unset.
pub fn from_env(var: &str) -> Result<Option<OwnedFd>, EnvFdError> {
    let Ok(value) = std::env::var(var) else { return Ok(None) };
    let n: i32 = value
        .trim()
        .parse()
        .map_err(|_| EnvFdError::NotANumber { var: var.to_owned(), value: value.clone() })?;
    take(n).map(Some).map_err(|source| EnvFdError::Adopt { var: var.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, IntoRawFd};

    #[test]
    fn each_number_once() -> std::io::Result<()> {
        let (a, _b) = std::os::unix::net::UnixStream::pair()?;
        let n = a.into_raw_fd();
        let fd = take(n).map_err(std::io::Error::other)?;
        assert_eq!(fd.as_raw_fd(), n);
        assert_eq!(take(n).err(), Some(AdoptError::AlreadyTaken(n)));
        drop(fd);
        assert_eq!(take(n).err(), Some(AdoptError::AlreadyTaken(n)), "a reused number is not taken again");
        assert_eq!(take(1).err(), Some(AdoptError::Standard(1)));
        assert_eq!(take(100_000).err(), Some(AdoptError::NotOpen(100_000)));
        Ok(())
    }
}
