//! The hand-off message: 14 data bytes and one `SCM_RIGHTS` control message.
//!
//! ```text
//! data:    75 77 73 67 69 2d 7a 65 72 67 | NN NN NN NN
//!          "uwsgi-zerg" (no NUL)           i32, host byte order: the number of fds
//! control: one SOL_SOCKET/SCM_RIGHTS cmsg holding the fds, in the server's order
//! ```
//!
//! The client sends nothing; the server sends this once and closes (spec §2). The count
//! is advisory in uWSGI; this crate's client requires it to match the fds that arrived
//! (see [`crate::client::AttachOptions::strict_count`]).
//!
//! Everything here is pure: no fds, no syscalls.

use thiserror::Error;

/// The 10 magic bytes every hand-off starts with.
pub const MAGIC: &[u8; 10] = b"uwsgi-zerg";

/// Length of the data part of a hand-off: the magic and a 4-byte count.
pub const HEADER_LEN: usize = 14;

/// The most fds one `SCM_RIGHTS` message can carry on Linux (`SCM_MAX_FD`). uWSGI never
/// splits a list, so neither does this crate: larger lists are refused when configured.
pub const MAX_FDS: usize = 253;

/// How many fds uWSGI's own client makes room for on its first attempt (spec §2.6).
pub const UWSGI_CLIENT_CAPACITY: usize = 8;

/// The data part of a hand-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// The number of fds the server announces (spec §2.2), `0..=MAX_FDS` once decoded.
    pub count: usize,
}

/// Why 14 bytes are not a hand-off header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("a zerg hand-off is {HEADER_LEN} bytes, got {0}")]
    Short(usize),
    /// The first 10 bytes are not `uwsgi-zerg`.
    #[error("bad magic: the first 10 bytes are not \"uwsgi-zerg\"")]
    BadMagic,
    /// The count is negative (uWSGI's client would treat it as "fits").
    #[error("negative fd count {0}")]
    NegativeCount(i32),
    /// The count is above [`MAX_FDS`]: no Linux server can send that many in one message.
    #[error("fd count {0} is above the {MAX_FDS} one message can carry")]
    TooManyFds(i32),
}

/// Why a hand-off header cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// More than [`MAX_FDS`] fds.
    #[error("{0} fds: one SCM_RIGHTS message carries at most {MAX_FDS}")]
    TooManyFds(usize),
}

impl Header {
    /// A header announcing `count` fds, refused above [`MAX_FDS`].
    pub fn new(count: usize) -> Result<Self, EncodeError> {
        if count > MAX_FDS {
            return Err(EncodeError::TooManyFds(count));
        }
        Ok(Self { count })
    }

    /// The 14 bytes on the wire.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..MAGIC.len()].copy_from_slice(MAGIC);
        // `count <= MAX_FDS` by construction, so the cast is exact.
        let count = i32::try_from(self.count).unwrap_or(i32::MAX);
        out[MAGIC.len()..].copy_from_slice(&count.to_ne_bytes());
        out
    }

    /// Reads a header from the first [`HEADER_LEN`] bytes of `bytes` (extra bytes are
    /// ignored: the caller decides whether they are an error).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let Some(header) = bytes.get(..HEADER_LEN) else {
            return Err(DecodeError::Short(bytes.len()));
        };
        let (magic, count) = header.split_at(MAGIC.len());
        if magic != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let mut raw = [0u8; 4];
        raw.copy_from_slice(count);
        let count = i32::from_ne_bytes(raw);
        match usize::try_from(count) {
            Err(_) => Err(DecodeError::NegativeCount(count)),
            Ok(n) if n > MAX_FDS => Err(DecodeError::TooManyFds(count)),
            Ok(n) => Ok(Self { count: n }),
        }
    }
}

/// Size of a control buffer that holds one `SCM_RIGHTS` message of `fds` fds on this
/// platform (`CMSG_SPACE(4 * fds)`), as the vectors record it (spec §2.3).
#[must_use]
pub const fn cmsg_space(fds: usize) -> usize {
    const HDR: usize = 2 * size_of::<u32>() + size_of::<usize>();
    const ALIGN: usize = size_of::<usize>();
    let payload = (fds * size_of::<i32>()).div_ceil(ALIGN) * ALIGN;
    HDR + payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_captured_bytes() {
        let one = Header::new(1).map(|h| h.encode());
        assert_eq!(one.ok().as_ref().map(<[u8; 14]>::as_slice), Some(&b"uwsgi-zerg\x01\x00\x00\x00"[..]));
    }

    #[test]
    fn rejects_what_uwsgi_would_misread() {
        assert_eq!(Header::decode(b"uwsgi-zerg\x01"), Err(DecodeError::Short(11)));
        assert_eq!(Header::decode(b"uwsgi-zerh\x01\x00\x00\x00"), Err(DecodeError::BadMagic));
        assert_eq!(Header::decode(b"uwsgi-zerg\xff\xff\xff\xff"), Err(DecodeError::NegativeCount(-1)));
        assert_eq!(Header::decode(b"uwsgi-zerg\xfe\x00\x00\x00"), Err(DecodeError::TooManyFds(254)));
        assert_eq!(Header::new(254), Err(EncodeError::TooManyFds(254)));
        assert_eq!(Header::decode(b"uwsgi-zerg\xfd\x00\x00\x00"), Ok(Header { count: 253 }));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn cmsg_space_matches_the_spec_table() {
        for (n, space) in [(0, 16), (1, 24), (2, 24), (3, 32), (8, 48), (10, 56)] {
            assert_eq!(cmsg_space(n), space, "n = {n}");
        }
    }
}
