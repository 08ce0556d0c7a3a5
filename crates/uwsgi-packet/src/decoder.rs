//! Streaming decoding out of a growing [`BytesMut`].

use bytes::{Bytes, BytesMut};

use crate::{DecodeError, Header, Limits, Packet, Status, Vars};

/// Splits whole vars packets off the front of a caller-owned [`BytesMut`], zero-copy.
///
/// Feed it the connection's read buffer after every read. "Need more bytes" is `Ok(None)`,
/// never an error; at end of input call [`Decoder::decode_eof`], which reports a truncated
/// packet. The decoder keeps no state between calls, so it never buffers anything itself
/// and the caller's buffer never needs to grow past [`Decoder::reserve_hint`], which is at
/// most `4 + max_datasize` bytes.
///
/// ```
/// use bytes::BytesMut;
/// use uwsgi_packet::{Decoder, Limits};
/// let mut dec = Decoder::new(Limits::default());
/// let mut buf = BytesMut::new();
/// buf.extend_from_slice(b"\x00\x0a\x00\x00\x04\x00PA");
/// assert!(dec.decode(&mut buf)?.is_none());
/// buf.extend_from_slice(b"TH\x02\x00/xbody");
/// let packet = dec.decode(&mut buf)?.expect("complete");
/// assert_eq!(packet.vars().get(b"PATH"), Some(&b"/x"[..]));
/// assert_eq!(&buf[..], b"body"); // the rest of the stream stays in the buffer
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decoder {
    limits: Limits,
}

impl Decoder {
    /// A decoder with these limits.
    pub const fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// The limits in force.
    pub const fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Splits one packet off the front of `src` if it is complete.
    ///
    /// On `Ok(Some(_))` the packet's bytes have been removed from `src`; on `Ok(None)` and
    /// on `Err(_)`, `src` is unchanged.
    ///
    /// # Errors
    /// As [`Packet::parse`], except the truncation errors.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<OwnedPacket>, DecodeError> {
        match Packet::parse(src, &self.limits)? {
            Status::Complete { value, consumed } => {
                let (header, len) = (value.header(), value.vars().len());
                let body = src.split_to(consumed).freeze().split_off(Header::LEN);
                Ok(Some(OwnedPacket { header, body, len }))
            }
            Status::Incomplete(_) => Ok(None),
        }
    }

    /// Like [`Decoder::decode`], when no more bytes will come. An empty `src` is
    /// `Ok(None)`: the stream ended cleanly between packets.
    ///
    /// # Errors
    /// Also [`DecodeError::TruncatedHeader`] and [`DecodeError::TruncatedBody`].
    pub fn decode_eof(&self, src: &mut BytesMut) -> Result<Option<OwnedPacket>, DecodeError> {
        if src.is_empty() {
            return Ok(None);
        }
        match Packet::parse(src, &self.limits)? {
            Status::Complete { .. } => self.decode(src),
            Status::Incomplete(i) => Err(i.eof_error()),
        }
    }

    /// How many bytes `src` should be able to hold to complete the packet at its front:
    /// 4 before the header is in, `4 + datasize` after (never more than
    /// `4 + max_datasize`). Use it to size reads without over-allocating.
    pub fn reserve_hint(&self, src: &[u8]) -> usize {
        match self.limits.check_header(src) {
            Ok(Status::Complete { value, .. }) => value.packet_len(),
            _ => Header::LEN,
        }
    }
}

/// A vars packet that owns its bytes (a cheap [`Bytes`] handle), as returned by
/// [`Decoder`]. Its vars were validated when it was split off.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnedPacket {
    header: Header,
    body: Bytes,
    len: usize,
}

impl OwnedPacket {
    /// The header.
    pub const fn header(&self) -> Header {
        self.header
    }

    /// The vars body, exactly as received.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The validated vars, borrowed from this packet.
    pub fn vars(&self) -> Vars<'_> {
        // Validated in `Decoder::decode`; `Bytes` are immutable, so it still holds.
        Vars::from_validated(&self.body, self.len)
    }

    /// A borrowed view, for code written against [`Packet`].
    pub fn as_packet(&self) -> Packet<'_> {
        Packet::from_parts(self.header, self.vars())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_at_a_time_matches_one_shot() {
        let mut wire = Vec::new();
        crate::encode_packet(5, 9, &[("REQUEST_METHOD", "POST"), ("CONTENT_LENGTH", "4")], &mut wire)
            .unwrap();
        let total = wire.len();
        wire.extend_from_slice(b"data");
        let dec = Decoder::default();
        let mut buf = BytesMut::new();
        let mut got = None;
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            if let Some(p) = dec.decode(&mut buf).unwrap() {
                assert_eq!(i + 1, total, "complete exactly at the last vars byte");
                got = Some(p);
                break;
            }
            assert!(dec.reserve_hint(&buf) <= total);
        }
        let p = got.unwrap();
        assert_eq!((p.header(), p.vars().len()), (Header::new(5, total as u16 - 4, 9), 2));
        assert_eq!(p.as_packet().vars().get(b"CONTENT_LENGTH"), Some(&b"4"[..]));
    }

    #[test]
    fn eof_reports_truncation_and_leaves_the_buffer() {
        let dec = Decoder::default();
        let mut buf = BytesMut::from(&[0u8, 10, 0, 0, 1][..]);
        assert_eq!(dec.decode_eof(&mut buf), Err(DecodeError::TruncatedBody { datasize: 10, available: 1 }));
        assert_eq!(buf.len(), 5);
        assert_eq!(dec.decode_eof(&mut BytesMut::new()), Ok(None));
        assert_eq!(
            dec.decode_eof(&mut BytesMut::from(&[0u8][..])),
            Err(DecodeError::TruncatedHeader { available: 1 })
        );
    }
}
