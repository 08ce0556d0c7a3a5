//! systemd socket activation (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`), so one
//! program can take its listeners from a zerg server or from systemd.
//!
//! [`parse`] is the pure part (sd_listen_fds(3) rules); [`crate::Listener::from_systemd`]
//! reads the environment, takes ownership of the fds once per process and checks them.

use thiserror::Error;

/// The first inherited fd (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: i32 = 3;

/// The most fds accepted from `LISTEN_FDS` (a sanity bound, far above any real unit).
pub const MAX_LISTEN_FDS: usize = 4096;

/// Why the socket-activation variables are unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SystemdError {
    /// `LISTEN_FDS` is not a number, or too large.
    #[error("LISTEN_FDS={0:?} is not a count of at most {MAX_LISTEN_FDS}")]
    BadCount(String),
    /// `LISTEN_PID` is not a pid.
    #[error("LISTEN_PID={0:?} is not a pid")]
    BadPid(String),
    /// `LISTEN_FDNAMES` names a different number of fds.
    #[error("LISTEN_FDNAMES has {names} names for {fds} fds")]
    NameCount {
        /// Names given.
        names: usize,
        /// Fds announced.
        fds: usize,
    },
    /// The fds were already taken by an earlier call in this process.
    #[error("the socket-activation fds were already taken in this process")]
    AlreadyTaken,
    /// An announced fd is not open.
    #[error("LISTEN_FDS announces fd {0}, which is not open")]
    NotOpen(i32),
}

/// One announced fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// The fd number.
    pub fd: i32,
    /// Its name from `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`), if given.
    pub name: Option<String>,
}

/// Reads the variables as sd_listen_fds(3) does: nothing is meant for this process
/// unless `LISTEN_PID` is its pid and `LISTEN_FDS` is set (`Ok(None)` then).
pub fn parse(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    own_pid: u32,
) -> Result<Option<Vec<Announced>>, SystemdError> {
    let (Some(pid), Some(count)) = (listen_pid, listen_fds) else { return Ok(None) };
    let pid: u32 = pid.trim().parse().map_err(|_| SystemdError::BadPid(pid.to_owned()))?;
    if pid != own_pid {
        return Ok(None);
    }
    let n: usize = count.trim().parse().map_err(|_| SystemdError::BadCount(count.to_owned()))?;
    if n > MAX_LISTEN_FDS {
        return Err(SystemdError::BadCount(count.to_owned()));
    }
    let names: Vec<Option<String>> = match listen_fdnames {
        None => vec![None; n],
        Some(list) => {
            let names: Vec<Option<String>> =
                list.split(':').map(|s| (!s.is_empty()).then(|| s.to_owned())).collect();
            if names.len() != n {
                return Err(SystemdError::NameCount { names: names.len(), fds: n });
            }
            names
        }
    };
    // n <= MAX_LISTEN_FDS, so the fd numbers fit.
    Ok(Some(names.into_iter().zip(LISTEN_FDS_START..).map(|(name, fd)| Announced { fd, name }).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_sd_listen_fds() {
        assert_eq!(parse(None, Some("2"), None, 7), Ok(None));
        assert_eq!(parse(Some("8"), Some("2"), None, 7), Ok(None));
        assert_eq!(
            parse(Some("7"), Some("2"), Some("http:"), 7),
            Ok(Some(vec![Announced { fd: 3, name: Some("http".into()) }, Announced { fd: 4, name: None }]))
        );
        assert_eq!(
            parse(Some("7"), Some("2"), Some("a"), 7),
            Err(SystemdError::NameCount { names: 1, fds: 2 })
        );
        assert!(matches!(parse(Some("7"), Some("x"), None, 7), Err(SystemdError::BadCount(_))));
        assert!(matches!(parse(Some("7"), Some("5000"), None, 7), Err(SystemdError::BadCount(_))));
        assert!(matches!(parse(Some("me"), Some("1"), None, 7), Err(SystemdError::BadPid(_))));
        assert_eq!(parse(Some("7"), Some("0"), None, 7), Ok(Some(vec![])));
    }
}
