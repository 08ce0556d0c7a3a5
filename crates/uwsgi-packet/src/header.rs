//! The 4-byte header, decoder limits and the parse status.

use crate::DecodeError;

/// The 4-byte uwsgi packet header.
///
/// Spec §1: `u8 modifier1`, `u16 little-endian datasize`, `u8 modifier2`. `datasize` counts
/// the body bytes that follow the header and belong to the packet; the header itself is not
/// counted. No value of either modifier is rejected here: their meaning belongs to whoever
/// dispatches the packet (spec §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Header {
    /// Packet type (on a worker socket: the plugin, 0 = WSGI/HTTP-style request).
    pub modifier1: u8,
    /// Number of body bytes after the header.
    pub datasize: u16,
    /// Sub-type, flags or status; meaning depends on `modifier1`.
    pub modifier2: u8,
}

impl Header {
    /// Length of the header on the wire.
    pub const LEN: usize = 4;

    /// A header with these fields.
    pub const fn new(modifier1: u8, datasize: u16, modifier2: u8) -> Self {
        Self { modifier1, datasize, modifier2 }
    }

    /// Reads a header. Every 4-byte value is a header; limits are applied by
    /// [`Limits::check_header`].
    pub const fn from_bytes(b: [u8; 4]) -> Self {
        // Spec §1: "the wire format is always LE".
        Self { modifier1: b[0], datasize: u16::from_le_bytes([b[1], b[2]]), modifier2: b[3] }
    }

    /// The header's wire bytes.
    pub const fn to_bytes(self) -> [u8; 4] {
        let d = self.datasize.to_le_bytes();
        [self.modifier1, d[0], d[1], self.modifier2]
    }

    /// Length of the whole packet on the wire: header plus body.
    pub const fn packet_len(self) -> usize {
        Self::LEN + self.datasize as usize
    }
}

/// Decoder limits. Defaults match a uWSGI 2.0.21 worker with default options.
///
/// Built with by-value setters:
///
/// ```
/// use uwsgi_packet::Limits;
/// let limits = Limits::new().max_datasize(65535).max_vars(256);
/// assert_eq!(limits.datasize_limit(), 65535);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    max_datasize: u16,
    max_vars: usize,
    max_items: usize,
    detect_http: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new()
    }
}

impl Limits {
    /// The largest body uWSGI accepts by default (`--buffer-size 4096`).
    pub const DEFAULT_MAX_DATASIZE: u16 = 4096;
    /// The most vars uWSGI accepts by default (2 × `--max-vars 64`).
    pub const DEFAULT_MAX_VARS: usize = 128;
    /// The most array items uWSGI's RPC takes (255).
    pub const DEFAULT_MAX_ITEMS: usize = 255;

    /// The defaults: `max_datasize` 4096, `max_vars` 128, `max_items` 255, HTTP detection on.
    pub const fn new() -> Self {
        Self {
            max_datasize: Self::DEFAULT_MAX_DATASIZE,
            max_vars: Self::DEFAULT_MAX_VARS,
            max_items: Self::DEFAULT_MAX_ITEMS,
            detect_http: true,
        }
    }

    /// No limits beyond the format's own: bodies up to 65535 bytes, any number of vars
    /// and items. For datagrams and trusted peers, where the size is bounded anyway.
    pub const fn unlimited() -> Self {
        Self { max_datasize: u16::MAX, max_vars: usize::MAX, max_items: usize::MAX, detect_http: true }
    }

    /// Largest accepted `datasize` (uWSGI `--buffer-size`; it clamps larger values to
    /// 65535 as the `u16` type does here).
    #[must_use]
    pub const fn max_datasize(mut self, max: u16) -> Self {
        self.max_datasize = max;
        self
    }

    /// Most vars accepted in one body (uWSGI: 2 × `--max-vars`).
    #[must_use]
    pub const fn max_vars(mut self, max: usize) -> Self {
        self.max_vars = max;
        self
    }

    /// Most items accepted in one array body.
    #[must_use]
    pub const fn max_items(mut self, max: usize) -> Self {
        self.max_items = max;
        self
    }

    /// Whether a header that is really the start of an HTTP request line (`GET `, `POST`,
    /// …) is reported as [`DecodeError::HttpRequest`] (default `true`). The bytes
    /// recognised all decode to modifier1 values no uWSGI plugin uses, so this only
    /// matters for a peer that uses such a modifier1 with a huge datasize.
    #[must_use]
    pub const fn detect_http(mut self, on: bool) -> Self {
        self.detect_http = on;
        self
    }

    /// The configured `max_datasize`.
    pub const fn datasize_limit(&self) -> u16 {
        self.max_datasize
    }

    /// The configured `max_vars`.
    pub const fn vars_limit(&self) -> usize {
        self.max_vars
    }

    /// The configured `max_items`.
    pub const fn items_limit(&self) -> usize {
        self.max_items
    }

    /// Reads and checks the header at the start of `buf`.
    ///
    /// Returns [`Status::Incomplete`] while fewer than 4 bytes are available. The size
    /// limit is applied as soon as the header is complete, before any body byte is
    /// needed (spec §6.2), so a peer cannot make us buffer more than `max_datasize`.
    ///
    /// # Errors
    /// [`DecodeError::HttpRequest`] and [`DecodeError::TooLarge`].
    pub fn check_header(&self, buf: &[u8]) -> Result<Status<Header>, DecodeError> {
        let Some(bytes) = buf.first_chunk::<4>() else {
            return Ok(Status::Incomplete(Incomplete { header: None, available: buf.len() }));
        };
        if self.detect_http && is_http_method_prefix(bytes) {
            return Err(DecodeError::HttpRequest { prefix: *bytes });
        }
        let header = Header::from_bytes(*bytes);
        // Spec §3.1: "if datasize > buffer-size → error `invalid request block size`",
        // checked "on the header alone" (vector m19).
        if header.datasize > self.max_datasize {
            return Err(DecodeError::TooLarge { datasize: header.datasize, max: self.max_datasize });
        }
        Ok(Status::Complete { value: header, consumed: Header::LEN })
    }
}

/// The HTTP/1.x request methods (and the HTTP/2 preface), as their first 4 bytes.
const HTTP_PREFIXES: [&[u8; 4]; 10] =
    [b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC", b"PRI "];

fn is_http_method_prefix(bytes: &[u8; 4]) -> bool {
    HTTP_PREFIXES.contains(&bytes)
}

/// The result of parsing a buffer that may not yet hold a whole packet.
///
/// An incomplete buffer is not an error: read more bytes and parse again from the start
/// (parsing is cheap; nothing is kept between calls). At end of input, [`Status::at_eof`]
/// turns an incomplete buffer into [`DecodeError::TruncatedHeader`] or
/// [`DecodeError::TruncatedBody`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Status<T> {
    /// A whole packet was decoded.
    Complete {
        /// The decoded value, borrowing from the input where it can.
        value: T,
        /// Bytes of the input it used (header plus `datasize`). Anything after them is not
        /// part of the packet: on a request stream it is the start of the request body.
        consumed: usize,
    },
    /// More bytes are needed.
    Incomplete(Incomplete),
}

impl<T> Status<T> {
    /// The value and the bytes consumed, if complete.
    pub fn complete(self) -> Option<(T, usize)> {
        match self {
            Self::Complete { value, consumed } => Some((value, consumed)),
            Self::Incomplete(_) => None,
        }
    }

    /// Whether a whole packet was decoded.
    pub fn is_complete(&self) -> bool {
        matches!(self, Self::Complete { .. })
    }

    /// The answer when no more bytes will come (EOF on the stream, or a whole datagram).
    ///
    /// # Errors
    /// [`DecodeError::TruncatedHeader`] or [`DecodeError::TruncatedBody`] if incomplete.
    pub fn at_eof(self) -> Result<(T, usize), DecodeError> {
        match self {
            Self::Complete { value, consumed } => Ok((value, consumed)),
            Self::Incomplete(i) => Err(i.eof_error()),
        }
    }

    /// Applies `f` to a complete value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Status<U> {
        match self {
            Self::Complete { value, consumed } => Status::Complete { value: f(value), consumed },
            Self::Incomplete(i) => Status::Incomplete(i),
        }
    }
}

/// What is known about a packet that is not complete yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incomplete {
    pub(crate) header: Option<Header>,
    pub(crate) available: usize,
}

impl Incomplete {
    /// The header, once its 4 bytes are in (it has passed the limits).
    pub fn header(&self) -> Option<Header> {
        self.header
    }

    /// The least number of further bytes needed before parsing again can succeed. Exact
    /// once the header is known; before that, the bytes missing from the header.
    pub fn needed(&self) -> usize {
        match self.header {
            Some(h) => h.packet_len().saturating_sub(self.available),
            None => Header::LEN.saturating_sub(self.available),
        }
    }

    /// The error this state means at end of input.
    pub fn eof_error(&self) -> DecodeError {
        match self.header {
            Some(h) => DecodeError::TruncatedBody {
                datasize: h.datasize,
                available: self.available.saturating_sub(Header::LEN),
            },
            None => DecodeError::TruncatedHeader { available: self.available },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_little_endian() {
        // Spec §1 example: `00 8c 01 00` = modifier1 0, datasize 396, modifier2 0.
        let h = Header::from_bytes([0x00, 0x8c, 0x01, 0x00]);
        assert_eq!(h, Header::new(0, 396, 0));
        assert_eq!(h.to_bytes(), [0x00, 0x8c, 0x01, 0x00]);
        assert_eq!(h.packet_len(), 400);
    }

    #[test]
    fn size_limit_applies_to_the_header_alone() {
        // Vector m19: header announcing 5000 bytes and nothing else.
        let err = Limits::new().check_header(&[0, 0x88, 0x13, 0]).unwrap_err();
        assert_eq!(err, DecodeError::TooLarge { datasize: 5000, max: 4096 });
        assert!(Limits::new().max_datasize(5000).check_header(&[0, 0x88, 0x13, 0]).unwrap().is_complete());
    }

    #[test]
    fn http_is_detected_and_can_be_turned_off() {
        for line in [&b"GET / HTTP/1.1\r\n"[..], b"POST /x", b"HEAD /", b"PRI * HTTP/2.0"] {
            let err = Limits::new().check_header(line).unwrap_err();
            assert_eq!(err.kind(), crate::DecodeErrorKind::HttpRequest, "{line:?}");
        }
        // Without detection "GET " is modifier1 71 with datasize 0x5445.
        let err = Limits::new().detect_http(false).check_header(b"GET /").unwrap_err();
        assert_eq!(err, DecodeError::TooLarge { datasize: 0x5445, max: 4096 });
    }

    #[test]
    fn incomplete_reports_what_is_missing() {
        let Status::Incomplete(i) = Limits::new().check_header(&[0, 1]).unwrap() else { panic!() };
        assert_eq!(i.needed(), 2);
        assert_eq!(i.eof_error(), DecodeError::TruncatedHeader { available: 2 });
    }
}
