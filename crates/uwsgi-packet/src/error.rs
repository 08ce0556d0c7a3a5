//! Error types: one enum per operation (decode, encode, request body).
//!
//! All three are small `Copy` values, so tests can `assert_eq!` on them and a fuzzer or a
//! server rejecting junk pays nothing to build them. None of them carries an `io::Error`:
//! the codec does no IO.

use core::fmt;

/// Why a packet could not be decoded.
///
/// Every variant is a property of the bytes alone: decoding the same bytes with the same
/// [`Limits`](crate::Limits) always gives the same error. Nothing is consumed on error,
/// the input buffer is only borrowed. The likely cause is junk or an attacker on the
/// other end of the socket, or a peer configured with larger limits than ours; the right
/// reaction is to close the connection (uWSGI 2.0.21 closes without a reply, spec §4).
///
/// Offsets are relative to the start of the body (the byte after the 4-byte header),
/// like uWSGI's own log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The stream ended before the 4-byte header was complete.
    ///
    /// Only reported at end of input ([`Status::at_eof`](crate::Status::at_eof)); before
    /// that, a short buffer is [`Status::Incomplete`](crate::Status::Incomplete).
    #[error("stream ended after {available} of the 4 header bytes")]
    TruncatedHeader {
        /// Header bytes received.
        available: usize,
    },
    /// The stream ended before the `datasize` body bytes announced by the header arrived.
    ///
    /// Only reported at end of input, like [`DecodeError::TruncatedHeader`].
    #[error("stream ended after {available} of the {datasize} body bytes the header announced")]
    TruncatedBody {
        /// The body length announced by the header.
        datasize: u16,
        /// Body bytes received.
        available: usize,
    },
    /// The header announces a body larger than the configured `max_datasize`.
    ///
    /// Checked as soon as the 4 header bytes are in, before any body byte is buffered,
    /// as uWSGI does (`invalid request block size`, spec §3.1, vector m19).
    #[error("datasize {datasize} exceeds the {max}-byte limit")]
    TooLarge {
        /// The body length announced by the header.
        datasize: u16,
        /// The configured limit.
        max: u16,
    },
    /// The first bytes are an HTTP request line (`GET `, `POST`, …), not a uwsgi header.
    ///
    /// The peer speaks HTTP to a uwsgi-protocol socket: usually a browser, `curl` or a
    /// load balancer health check pointed at the wrong port. Reported instead of the
    /// confusing size error the same bytes would otherwise give. Can be turned off with
    /// [`Limits::detect_http`](crate::Limits::detect_http).
    #[error("peer sent an HTTP request (starts with {:?}) to a uwsgi-protocol socket", HttpPrefix(*.prefix))]
    HttpRequest {
        /// The 4 bytes that were recognised.
        prefix: [u8; 4],
    },
    /// A key length of 0 (every uWSGI parser refuses it, spec §2.2).
    #[error("zero-length key at body offset {offset}")]
    EmptyKey {
        /// Offset of the key-length field.
        offset: usize,
    },
    /// A key length that runs past the end of the body.
    ///
    /// uWSGI's worker parser "re-synchronises" on some of these (spec §2.4, vector m11);
    /// we reject them all, as its cluster parser does.
    #[error("key of {len} bytes at body offset {offset} runs past the end ({remaining} bytes left)")]
    KeyOverrun {
        /// Offset of the key-length field.
        offset: usize,
        /// The announced key length.
        len: u16,
        /// Bytes left in the body after the length field.
        remaining: usize,
    },
    /// A key ends where its 2-byte value length should be, with fewer than 2 bytes left.
    #[error("no room for the value length at body offset {offset} ({remaining} bytes left)")]
    MissingValueLength {
        /// Offset where the value length should start.
        offset: usize,
        /// Bytes left in the body.
        remaining: usize,
    },
    /// A value length that runs past the end of the body.
    #[error("value of {len} bytes at body offset {offset} runs past the end ({remaining} bytes left)")]
    ValueOverrun {
        /// Offset of the value-length field.
        offset: usize,
        /// The announced value length.
        len: u16,
        /// Bytes left in the body after the length field.
        remaining: usize,
    },
    /// 1 or 2 stray bytes after the last complete var (or 1 after the last array item):
    /// too few to start another one.
    #[error("{len} trailing bytes at body offset {offset}")]
    Trailing {
        /// Offset of the first stray byte.
        offset: usize,
        /// Number of stray bytes.
        len: usize,
    },
    /// More vars than the configured `max_vars` (uWSGI: `max vec size reached`).
    #[error("more than {max} vars")]
    TooManyVars {
        /// The configured limit.
        max: usize,
    },
    /// An array item length that runs past the end of the body.
    #[error("array item of {len} bytes at body offset {offset} runs past the end ({remaining} bytes left)")]
    ItemOverrun {
        /// Offset of the item-length field.
        offset: usize,
        /// The announced item length.
        len: u16,
        /// Bytes left in the body after the length field.
        remaining: usize,
    },
    /// More array items than the configured `max_items`.
    #[error("more than {max} array items")]
    TooManyItems {
        /// The configured limit.
        max: usize,
    },
}

/// The name of a [`DecodeError`] variant, without its fields.
///
/// These names are stable and are the ones used by the shared test vectors
/// (`malformed.json`) and printed by the `uwsgi-dump` program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// See [`DecodeError::TruncatedHeader`].
    TruncatedHeader,
    /// See [`DecodeError::TruncatedBody`].
    TruncatedBody,
    /// See [`DecodeError::TooLarge`].
    TooLarge,
    /// See [`DecodeError::HttpRequest`].
    HttpRequest,
    /// See [`DecodeError::EmptyKey`].
    EmptyKey,
    /// See [`DecodeError::KeyOverrun`].
    KeyOverrun,
    /// See [`DecodeError::MissingValueLength`].
    MissingValueLength,
    /// See [`DecodeError::ValueOverrun`].
    ValueOverrun,
    /// See [`DecodeError::Trailing`].
    Trailing,
    /// See [`DecodeError::TooManyVars`].
    TooManyVars,
    /// See [`DecodeError::ItemOverrun`].
    ItemOverrun,
    /// See [`DecodeError::TooManyItems`].
    TooManyItems,
}

impl DecodeErrorKind {
    /// The variant's name, e.g. `"KeyOverrun"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TruncatedHeader => "TruncatedHeader",
            Self::TruncatedBody => "TruncatedBody",
            Self::TooLarge => "TooLarge",
            Self::HttpRequest => "HttpRequest",
            Self::EmptyKey => "EmptyKey",
            Self::KeyOverrun => "KeyOverrun",
            Self::MissingValueLength => "MissingValueLength",
            Self::ValueOverrun => "ValueOverrun",
            Self::Trailing => "Trailing",
            Self::TooManyVars => "TooManyVars",
            Self::ItemOverrun => "ItemOverrun",
            Self::TooManyItems => "TooManyItems",
        }
    }
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DecodeError {
    /// The variant, without its fields.
    pub fn kind(&self) -> DecodeErrorKind {
        match self {
            Self::TruncatedHeader { .. } => DecodeErrorKind::TruncatedHeader,
            Self::TruncatedBody { .. } => DecodeErrorKind::TruncatedBody,
            Self::TooLarge { .. } => DecodeErrorKind::TooLarge,
            Self::HttpRequest { .. } => DecodeErrorKind::HttpRequest,
            Self::EmptyKey { .. } => DecodeErrorKind::EmptyKey,
            Self::KeyOverrun { .. } => DecodeErrorKind::KeyOverrun,
            Self::MissingValueLength { .. } => DecodeErrorKind::MissingValueLength,
            Self::ValueOverrun { .. } => DecodeErrorKind::ValueOverrun,
            Self::Trailing { .. } => DecodeErrorKind::Trailing,
            Self::TooManyVars { .. } => DecodeErrorKind::TooManyVars,
            Self::ItemOverrun { .. } => DecodeErrorKind::ItemOverrun,
            Self::TooManyItems { .. } => DecodeErrorKind::TooManyItems,
        }
    }
}

/// Prints an HTTP prefix as text (it is ASCII by construction).
struct HttpPrefix([u8; 4]);

impl fmt::Debug for HttpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// Why a packet could not be encoded.
///
/// Returned before anything is written: on error the destination is unchanged. The cause
/// is always the caller's data: the uwsgi format stores every length in a `u16`, and a
/// key cannot be empty. uWSGI itself silently wraps oversized lengths (spec §1); we refuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A key of length 0; no uWSGI parser accepts one.
    #[error("empty key")]
    EmptyKey,
    /// A key longer than 65535 bytes.
    #[error("key of {len} bytes exceeds the 65535-byte limit")]
    KeyTooLong {
        /// The key's length.
        len: usize,
    },
    /// A value longer than 65535 bytes.
    #[error("value of {len} bytes exceeds the 65535-byte limit")]
    ValueTooLong {
        /// The value's length.
        len: usize,
    },
    /// An array item longer than 65535 bytes.
    #[error("array item of {len} bytes exceeds the 65535-byte limit")]
    ItemTooLong {
        /// The item's length.
        len: usize,
    },
    /// The encoded body would exceed the 65535 bytes a `u16` datasize can describe.
    #[error("body of {len} bytes exceeds the 65535-byte limit of datasize")]
    BodyTooLarge {
        /// The length the body would have had.
        len: usize,
    },
}

/// Why a request body length is invalid, or a body was cut short.
///
/// The request itself was framed correctly; the caller should answer it with an error
/// (or close the connection) rather than guess a length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// `CONTENT_LENGTH` is not all ASCII digits (uWSGI 2.0.21 uses the leading digits of
    /// `"5abc"`, vector m17; we refuse it).
    #[error("CONTENT_LENGTH is not a decimal number (byte {position} is {byte:#04x})")]
    InvalidContentLength {
        /// Position of the first non-digit byte in the value.
        position: usize,
        /// That byte.
        byte: u8,
    },
    /// `CONTENT_LENGTH` does not fit in a `u64`.
    #[error("CONTENT_LENGTH does not fit in 64 bits")]
    ContentLengthOverflow,
    /// Two `CONTENT_LENGTH` vars with different values: a request-smuggling pattern.
    #[error("conflicting CONTENT_LENGTH values {first} and {second}")]
    ConflictingContentLength {
        /// The first value.
        first: u64,
        /// The first value that differs from it.
        second: u64,
    },
    /// The stream ended before `CONTENT_LENGTH` body bytes arrived (vector m16).
    #[error("stream ended after {received} of {expected} body bytes")]
    UnexpectedEof {
        /// The announced body length.
        expected: u64,
        /// Body bytes received.
        received: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_values() {
        let e = DecodeError::TooLarge { datasize: 5000, max: 4096 };
        assert_eq!(e.to_string(), "datasize 5000 exceeds the 4096-byte limit");
        let e = DecodeError::HttpRequest { prefix: *b"GET " };
        assert_eq!(
            e.to_string(),
            "peer sent an HTTP request (starts with \"GET \") to a uwsgi-protocol socket"
        );
        assert_eq!(e.kind().as_str(), "HttpRequest");
        assert_eq!(DecodeErrorKind::KeyOverrun.to_string(), "KeyOverrun");
    }
}
