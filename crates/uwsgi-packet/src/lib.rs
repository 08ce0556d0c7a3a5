//! A strict, zero-copy, streaming codec for the uwsgi binary protocol.
//!
//! The uwsgi protocol frames every message as a 4-byte header (`modifier1`, a
//! little-endian `u16` `datasize`, `modifier2`) followed by `datasize` body bytes, usually
//! a dictionary of `u16`-length-prefixed key/value pairs ("vars"). nginx's `uwsgi_pass`
//! speaks it to application servers, and uWSGI uses it for its cluster traffic (Legion
//! announces, subscriptions, RPC, cache). This crate reads and writes it byte for byte as
//! uWSGI 2.0.21 and nginx 1.22 do, and rejects everything their strictest parser rejects.
//!
//! It is only a codec: no sockets, no clock, no state machine, no allocation while
//! decoding. The programs in the workspace's `examples/` package (`uwsgi-dump`,
//! `uwsgi-curl`, `uwsgi-echo-server`) show it driving real connections.
//!
//! # Quick start
//!
//! ```
//! use uwsgi_packet::{encode_packet, Limits, Packet};
//!
//! // Encode a request the way nginx would.
//! let mut wire = Vec::new();
//! encode_packet(0, 0, &[("REQUEST_METHOD", "GET"), ("PATH_INFO", "/"), ("SERVER_PROTOCOL", "HTTP/1.1")], &mut wire)?;
//! assert_eq!(&wire[..4], b"\x00\x3e\x00\x00"); // modifier1 0, datasize 62, modifier2 0
//!
//! // Decode it. `at_eof` says "this is all the input there is".
//! let (packet, consumed) = Packet::parse(&wire, &Limits::default())?.at_eof()?;
//! assert_eq!(consumed, wire.len());
//! for (key, value) in packet.vars() {
//!     println!("{}={}", key.escape_ascii(), value.escape_ascii());
//! }
//! assert_eq!(packet.vars().get(b"PATH_INFO"), Some(&b"/"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Decoding
//!
//! | input | entry point | result |
//! |---|---|---|
//! | a buffer holding a request | [`Packet::parse`] | [`Status`]: `Complete { value, consumed }` or `Incomplete` |
//! | a non-vars body (ping, echo, signal) | [`Frame::parse`] | header + raw body |
//! | an RPC array | [`ArrayPacket::parse`] | header + [`Items`] |
//! | a connection's `BytesMut` read buffer | [`Decoder`] | [`OwnedPacket`]s split off zero-copy |
//! | a bare vars body (e.g. a decrypted Legion announce) | [`Vars::parse`] | [`Vars`] |
//!
//! * **Incomplete input is not an error.** [`Status::Incomplete`] says how many more bytes
//!   are needed; parse again when they arrive. At end of input, [`Status::at_eof`] (or
//!   [`Decoder::decode_eof`]) turns it into [`DecodeError::TruncatedHeader`] or
//!   [`DecodeError::TruncatedBody`].
//! * **Limits first.** [`Limits`] defaults to uWSGI's (`max_datasize` 4096, `max_vars`
//!   128). The size limit is applied as soon as the 4 header bytes are in, so a peer can
//!   never make a server buffer more than `4 + max_datasize` bytes.
//! * **Strict tiling.** The vars must fill the body exactly. Each defect has its own
//!   [`DecodeError`] variant with the offset it was found at. uWSGI's worker parser
//!   "re-synchronises" after some key-length overruns (spec §2.4); this crate does not.
//! * **HTTP detection.** An HTTP request sent to a uwsgi socket is reported as
//!   [`DecodeError::HttpRequest`] instead of an absurd `datasize`.
//! * **Zero copy.** [`Vars`] and [`Items`] borrow from the input; validation reads only the
//!   length fields, and iteration cannot fail afterwards. Keys and values are `&[u8]`:
//!   the protocol has no charset, and NUL bytes and empty values are legal.
//! * **No panics.** No input can make any function of this crate panic; this is fuzzed.
//!
//! # Encoding
//!
//! [`encode_packet`], [`encode_vars`], [`encode_array_packet`] and [`PacketBuilder`] check
//! every length before writing anything: an empty key, an item over 65535 bytes, or a body
//! over 65535 bytes is an [`EncodeError`], never a silently wrapped `u16` (uWSGI wraps it).
//! They produce exactly the bytes nginx and uWSGI produce for the same pairs.
//!
//! # Request bodies
//!
//! On a request stream, the bytes after the packet are the request body, `CONTENT_LENGTH`
//! bytes long. [`content_length`] reads that var strictly (all digits; duplicates must
//! agree), and [`BodyProgress`] tracks it, reporting [`BodyError::UnexpectedEof`] for a
//! body cut short. One request per connection: uWSGI never reads a second packet.
//!
//! # Errors
//!
//! Three small `Copy` enums: [`DecodeError`] (the input is malformed: close the
//! connection), [`EncodeError`] (the caller's data cannot be framed), [`BodyError`] (the
//! request body's length is invalid or the body was cut short). Nothing is consumed or
//! written when an error is returned.
//!
//! # Crate features
//!
//! * No default features, and none are needed.
//! * `__fuzzing`: private, may vanish; exposes the fuzz targets' entry points.
//!
//! # Protocol reference
//!
//! The project's `spec/uwsgi-packet.md`, written from uWSGI's source and checked against
//! uWSGI 2.0.21 and nginx 1.22.1; section numbers quoted in this crate's comments refer
//! to it.

mod array;
mod body;
mod decoder;
mod error;
mod header;
mod packet;
mod vars;

#[cfg(any(fuzzing, feature = "__fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use array::{Items, ItemsIter, encode_items, items_len};
pub use body::{BodyProgress, content_length, parse_content_length};
pub use decoder::{Decoder, OwnedPacket};
pub use error::{BodyError, DecodeError, DecodeErrorKind, EncodeError};
pub use header::{Header, Incomplete, Limits, Status};
pub use packet::{ArrayPacket, Frame, Packet, encode_array_packet, encode_packet};
pub use vars::{PacketBuilder, Vars, VarsIter, encode_vars, vars_len};

/// The README's example, compiled and run as a doctest so it cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
