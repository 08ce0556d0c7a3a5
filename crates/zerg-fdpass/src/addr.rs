//! Addresses: where a zerg server listens ([`ZergAddr`]) and what a handed-over listener
//! is bound to ([`ListenAddr`]), both in uWSGI's option syntax.

use std::ffi::OsStr;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Longest `sun_path` Linux takes, without the terminating NUL of a filesystem path.
const SUN_PATH_MAX: usize = 107;

/// Why an address string is not usable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AddrError {
    /// The string is empty.
    #[error("empty address")]
    Empty,
    /// A zerg address with a `:`: uWSGI would connect to it over TCP (spec §1, the colon
    /// trap), which cannot carry fds.
    #[error(
        "zerg address {0:?} contains ':', which uWSGI reads as TCP host:port; zerg servers are unix sockets"
    )]
    Colon(String),
    /// Longer than a `sockaddr_un` holds.
    #[error("unix socket name {0:?} is longer than the {SUN_PATH_MAX} bytes a sockaddr_un holds")]
    TooLong(String),
    /// Not `IP:PORT`, `:PORT`, `[IPv6]:PORT`, a path or `@name`.
    #[error("{0:?} is not a listen address (IP:PORT, :PORT, [IPv6]:PORT, /path or @name)")]
    Invalid(String),
}

/// The unix socket a zerg server listens on, as uWSGI's `--zerg`, `--zerg-server` and
/// `--zergpool` spell it: a path, or `@name` (also `\0name`) for a Linux abstract name.
///
/// uWSGI puts the C string's NUL into abstract names: `@name` is the abstract name
/// `name\0` (spec §1), and a peer that leaves the NUL out does not meet uWSGI. This type
/// does the same unless [`ZergAddr::without_uwsgi_nul`] opts out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ZergAddr {
    /// A filesystem socket.
    Path(PathBuf),
    /// A Linux abstract socket: `name` is what follows `@`.
    Abstract {
        /// The name, without `@` and without uWSGI's NUL.
        name: Vec<u8>,
        /// Whether the NUL uWSGI appends is part of the kernel's name (the default).
        uwsgi_nul: bool,
    },
}

impl ZergAddr {
    /// Parses uWSGI's syntax. A `:` is refused (uWSGI would make it a TCP address).
    pub fn parse(s: &str) -> Result<Self, AddrError> {
        if s.is_empty() {
            return Err(AddrError::Empty);
        }
        if s.contains(':') {
            return Err(AddrError::Colon(s.to_owned()));
        }
        let name = s.strip_prefix('@').or_else(|| s.strip_prefix("\\0"));
        let addr = match name {
            Some(name) => Self::Abstract { name: name.as_bytes().to_vec(), uwsgi_nul: true },
            None => Self::Path(PathBuf::from(s)),
        };
        addr.check_len(s)?;
        Ok(addr)
    }

    /// The same abstract name without uWSGI's trailing NUL (for peers that bind
    /// `"\0name"` exactly). No effect on paths.
    #[must_use]
    pub fn without_uwsgi_nul(self) -> Self {
        match self {
            Self::Abstract { name, .. } => Self::Abstract { name, uwsgi_nul: false },
            path => path,
        }
    }

    /// Whether this is an abstract name (no file permissions protect it: spec §7).
    #[must_use]
    pub fn is_abstract(&self) -> bool {
        matches!(self, Self::Abstract { .. })
    }

    /// The filesystem path, if it is one.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Path(p) => Some(p),
            Self::Abstract { .. } => None,
        }
    }

    /// The kernel's abstract name (after the leading NUL), with uWSGI's NUL if configured.
    #[must_use]
    pub fn abstract_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Self::Abstract { name, uwsgi_nul } => {
                let mut bytes = name.clone();
                if *uwsgi_nul {
                    bytes.push(0);
                }
                Some(bytes)
            }
            Self::Path(_) => None,
        }
    }

    /// The std socket address to bind or connect.
    pub fn to_socket_addr(&self) -> std::io::Result<std::os::unix::net::SocketAddr> {
        use std::os::linux::net::SocketAddrExt;
        match self {
            Self::Path(p) => std::os::unix::net::SocketAddr::from_pathname(p),
            Self::Abstract { .. } => {
                let bytes = self.abstract_bytes().unwrap_or_default();
                std::os::unix::net::SocketAddr::from_abstract_name(bytes)
            }
        }
    }

    fn check_len(&self, original: &str) -> Result<(), AddrError> {
        let len = match self {
            Self::Path(p) => p.as_os_str().len(),
            // The leading NUL takes one byte of sun_path.
            Self::Abstract { name, uwsgi_nul } => name.len() + usize::from(*uwsgi_nul) + 1,
        };
        if len > SUN_PATH_MAX {
            return Err(AddrError::TooLong(original.to_owned()));
        }
        Ok(())
    }
}

impl std::str::FromStr for ZergAddr {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, AddrError> {
        Self::parse(s)
    }
}

impl fmt::Display for ZergAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Abstract { name, .. } => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

/// The local address of a listening socket: what a configured socket option names and
/// what `getsockname` says of a handed-over fd. Two are equal when they name the same
/// socket, so received fds can be matched to configured addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ListenAddr {
    /// TCP over IPv4 or IPv6.
    Inet(SocketAddr),
    /// A filesystem unix socket.
    Unix(PathBuf),
    /// A Linux abstract unix socket: the kernel's name bytes after the leading NUL
    /// (for uWSGI's `@name`, that is `name\0`).
    Abstract(Vec<u8>),
}

impl ListenAddr {
    /// Parses uWSGI's socket option syntax: `IP:PORT`, `:PORT` (all IPv4 interfaces),
    /// `[IPv6]:PORT`, `@name` (abstract, with uWSGI's NUL) or a path. Host names are not
    /// resolved here: resolve them first (this type has no IO).
    pub fn parse(s: &str) -> Result<Self, AddrError> {
        if s.is_empty() {
            return Err(AddrError::Empty);
        }
        if let Some(name) = s.strip_prefix('@') {
            let mut bytes = name.as_bytes().to_vec();
            bytes.push(0);
            if bytes.len() + 1 > SUN_PATH_MAX {
                return Err(AddrError::TooLong(s.to_owned()));
            }
            return Ok(Self::Abstract(bytes));
        }
        if !s.contains(':') {
            if s.len() > SUN_PATH_MAX {
                return Err(AddrError::TooLong(s.to_owned()));
            }
            return Ok(Self::Unix(PathBuf::from(s)));
        }
        if let Some(port) = s.strip_prefix(':') {
            let port = port.parse().map_err(|_| AddrError::Invalid(s.to_owned()))?;
            return Ok(Self::Inet(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)));
        }
        s.parse::<SocketAddr>().map(Self::Inet).map_err(|_| AddrError::Invalid(s.to_owned()))
    }

    /// The name uWSGI gives a socket it received (spec §3.1): `a.b.c.d:port`, `:port` for
    /// 0.0.0.0, `[addr]:port`, the path, or an abstract name without `@` and NUL.
    #[must_use]
    pub fn uwsgi_name(&self) -> String {
        match self {
            Self::Inet(SocketAddr::V4(a)) if a.ip().is_unspecified() => format!(":{}", a.port()),
            Self::Inet(a) => a.to_string(),
            Self::Unix(p) => p.display().to_string(),
            Self::Abstract(name) => String::from_utf8_lossy(strip_nul(name)).into_owned(),
        }
    }

    /// The filesystem path of a unix socket.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Unix(p) => Some(p),
            _ => None,
        }
    }
}

fn strip_nul(name: &[u8]) -> &[u8] {
    name.strip_suffix(&[0]).unwrap_or(name)
}

impl std::str::FromStr for ListenAddr {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, AddrError> {
        Self::parse(s)
    }
}

/// Displays the form [`ListenAddr::parse`] reads back (`@name` for an abstract name with
/// uWSGI's NUL).
impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inet(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "{}", p.display()),
            Self::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(strip_nul(name))),
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(a: SocketAddr) -> Self {
        Self::Inet(a)
    }
}

/// A path given as bytes (as `getsockname` returns it).
pub(crate) fn path_from_bytes(bytes: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zerg_addresses_parse_as_uwsgi_spells_them() {
        assert_eq!(ZergAddr::parse("/run/z.sock"), Ok(ZergAddr::Path("/run/z.sock".into())));
        let abs = ZergAddr::parse("@zergspec-zs2").ok();
        assert_eq!(abs.as_ref().and_then(ZergAddr::abstract_bytes), Some(b"zergspec-zs2\0".to_vec()));
        let bs = ZergAddr::parse("\\0zergspec-zs2").ok();
        assert_eq!(bs, abs);
        assert_eq!(
            abs.map(ZergAddr::without_uwsgi_nul).as_ref().and_then(ZergAddr::abstract_bytes),
            Some(b"zergspec-zs2".to_vec())
        );
        assert!(matches!(ZergAddr::parse("/tmp/a:43199"), Err(AddrError::Colon(_))));
        assert!(matches!(ZergAddr::parse(""), Err(AddrError::Empty)));
        assert!(matches!(ZergAddr::parse(&"x".repeat(108)), Err(AddrError::TooLong(_))));
        assert!(ZergAddr::parse(&"x".repeat(107)).is_ok());
        assert!(ZergAddr::parse(&format!("@{}", "x".repeat(105))).is_ok());
        assert!(matches!(ZergAddr::parse(&format!("@{}", "x".repeat(106))), Err(AddrError::TooLong(_))));
    }

    #[test]
    fn listen_addresses_and_uwsgi_names() {
        let cases = [
            ("127.0.0.1:43005", "127.0.0.1:43005"),
            (":8080", ":8080"),
            ("[::1]:43006", "[::1]:43006"),
            ("[::]:80", "[::]:80"),
            ("/tmp/p1.sock", "/tmp/p1.sock"),
            ("@zergspec-p2", "zergspec-p2"),
        ];
        for (text, uwsgi) in cases {
            let addr = ListenAddr::parse(text);
            assert_eq!(addr.as_ref().map(ListenAddr::uwsgi_name).ok().as_deref(), Some(uwsgi), "{text}");
            let again = addr.as_ref().map(ToString::to_string).map(|s| ListenAddr::parse(&s));
            assert_eq!(again.ok(), Some(addr.clone()), "{text} displays as it parses");
        }
        assert!(matches!(ListenAddr::parse("localhost:80"), Err(AddrError::Invalid(_))));
        assert!(matches!(ListenAddr::parse("1.2.3.4:99999"), Err(AddrError::Invalid(_))));
    }
}
