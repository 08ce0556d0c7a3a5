//! Where datagrams go: UDP or a unix datagram socket (spec §1.1).

use core::fmt;
use core::str::FromStr;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A subscription endpoint: `IP:PORT` (UDP) or a unix datagram socket path.
///
/// uWSGI's rule (spec §1.1): a string containing `:` is `IPv4:port`; anything else is a
/// filesystem path. This crate also accepts `[IPv6]:port` (uWSGI 2.0.21 cannot) and the
/// explicit `unix:PATH` form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// A UDP address.
    Udp(SocketAddr),
    /// A unix datagram socket path.
    Unix(PathBuf),
}

/// Why an endpoint string could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid subscription endpoint {text:?}: expected IP:PORT, [IPV6]:PORT or a unix socket path")]
pub struct EndpointError {
    /// The text that was given.
    pub text: String,
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, EndpointError> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if s.is_empty() {
            return Err(EndpointError { text: s.to_owned() });
        }
        if s.contains(':') {
            return s.parse().map(Self::Udp).map_err(|_| EndpointError { text: s.to_owned() });
        }
        Ok(Self::Unix(PathBuf::from(s)))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Udp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uwsgi_address_syntax() {
        assert_eq!("127.0.0.1:42002".parse(), Ok(Endpoint::Udp("127.0.0.1:42002".parse().unwrap())));
        assert_eq!("[::1]:42002".parse(), Ok(Endpoint::Udp("[::1]:42002".parse().unwrap())));
        assert_eq!("./sub.sock".parse(), Ok(Endpoint::Unix("./sub.sock".into())));
        assert_eq!("unix:/run/s".parse(), Ok(Endpoint::Unix("/run/s".into())));
        assert!("localhost:42002".parse::<Endpoint>().is_err(), "host names are not resolved");
        assert_eq!(Endpoint::Unix("/x".into()).to_string(), "/x");
    }
}
