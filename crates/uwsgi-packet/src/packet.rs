//! Whole packets: a header plus a raw, vars or array body.

use bytes::BufMut;

use crate::header::Incomplete;
use crate::{DecodeError, EncodeError, Header, Items, Limits, Status, Vars};

/// A header and its raw body, borrowed from the input. The body is not interpreted.
///
/// Use this for packets whose body is not a vars dictionary: PING (modifier1 100, empty),
/// ECHO (101, raw bytes), signals (110), or anything dispatched on `modifier1` first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frame<'a> {
    header: Header,
    body: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Parses the header and takes its `datasize` body bytes from `buf`.
    ///
    /// # Errors
    /// As [`Limits::check_header`].
    pub fn parse(buf: &'a [u8], limits: &Limits) -> Result<Status<Self>, DecodeError> {
        let header = match limits.check_header(buf)? {
            Status::Complete { value, .. } => value,
            Status::Incomplete(i) => return Ok(Status::Incomplete(i)),
        };
        let end = header.packet_len();
        match buf.get(Header::LEN..end) {
            Some(body) => Ok(Status::Complete { value: Self { header, body }, consumed: end }),
            None => Ok(Status::Incomplete(Incomplete { header: Some(header), available: buf.len() })),
        }
    }

    /// The header.
    pub const fn header(&self) -> Header {
        self.header
    }

    /// The `datasize` body bytes.
    pub const fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Validates the body as vars.
    ///
    /// # Errors
    /// As [`Vars::parse`], with `limits`' `max_vars`.
    pub fn vars(&self, limits: &Limits) -> Result<Vars<'a>, DecodeError> {
        Vars::parse(self.body, limits.vars_limit())
    }

    /// Validates the body as an array.
    ///
    /// # Errors
    /// As [`Items::parse`], with `limits`' `max_items`.
    pub fn items(&self, limits: &Limits) -> Result<Items<'a>, DecodeError> {
        Items::parse(self.body, limits.items_limit())
    }

    /// Writes header and body to `dst`.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_slice(&self.header.to_bytes());
        dst.put_slice(self.body);
    }
}

/// A packet whose body is a vars dictionary: requests (modifier1 0, 5, 7, …),
/// subscriptions (224), cache ops, decrypted legion announces.
///
/// ```
/// use uwsgi_packet::{Limits, Packet, Status};
/// let wire = b"\x00\x0a\x00\x00\x04\x00PATH\x02\x00/xBODY";
/// let Status::Complete { value: packet, consumed } = Packet::parse(wire, &Limits::default())? else {
///     unreachable!("the buffer holds the whole packet");
/// };
/// assert_eq!(packet.vars().get(b"PATH"), Some(&b"/x"[..]));
/// assert_eq!(&wire[consumed..], b"BODY"); // what follows the packet is the request body
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Packet<'a> {
    header: Header,
    vars: Vars<'a>,
}

impl<'a> Packet<'a> {
    /// Parses a header and a vars body from the start of `buf`.
    ///
    /// Incomplete input is [`Status::Incomplete`], not an error. The size limit is checked
    /// on the header alone; the vars are checked once the whole body is in. Reads only
    /// the length fields; allocates nothing.
    ///
    /// # Errors
    /// As [`Limits::check_header`] and [`Vars::parse`].
    pub fn parse(buf: &'a [u8], limits: &Limits) -> Result<Status<Self>, DecodeError> {
        match Frame::parse(buf, limits)? {
            Status::Complete { value, consumed } => {
                let vars = value.vars(limits)?;
                Ok(Status::Complete { value: Self { header: value.header, vars }, consumed })
            }
            Status::Incomplete(i) => Ok(Status::Incomplete(i)),
        }
    }

    /// Assembles a packet from validated parts.
    pub(crate) const fn from_parts(header: Header, vars: Vars<'a>) -> Self {
        Self { header, vars }
    }

    /// The header.
    pub const fn header(&self) -> Header {
        self.header
    }

    /// `modifier1` from the header.
    pub const fn modifier1(&self) -> u8 {
        self.header.modifier1
    }

    /// `modifier2` from the header.
    pub const fn modifier2(&self) -> u8 {
        self.header.modifier2
    }

    /// The validated vars.
    pub const fn vars(&self) -> Vars<'a> {
        self.vars
    }

    /// Bytes on the wire: header plus body.
    pub const fn encoded_len(&self) -> usize {
        self.header.packet_len()
    }

    /// Writes the packet (header and vars, exactly as received) to `dst`.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_slice(&self.header.to_bytes());
        dst.put_slice(self.vars.as_bytes());
    }
}

/// A packet whose body is an array (RPC, modifier1 173).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ArrayPacket<'a> {
    header: Header,
    items: Items<'a>,
}

impl<'a> ArrayPacket<'a> {
    /// Parses a header and an array body from the start of `buf`.
    ///
    /// # Errors
    /// As [`Limits::check_header`] and [`Items::parse`].
    pub fn parse(buf: &'a [u8], limits: &Limits) -> Result<Status<Self>, DecodeError> {
        match Frame::parse(buf, limits)? {
            Status::Complete { value, consumed } => {
                let items = value.items(limits)?;
                Ok(Status::Complete { value: Self { header: value.header, items }, consumed })
            }
            Status::Incomplete(i) => Ok(Status::Incomplete(i)),
        }
    }

    /// The header.
    pub const fn header(&self) -> Header {
        self.header
    }

    /// The validated items.
    pub const fn items(&self) -> Items<'a> {
        self.items
    }
}

/// Encodes a whole vars packet (header and body) into `dst` and returns its length.
///
/// Produces the same bytes as uWSGI and nginx for the same pairs in the same order.
///
/// # Errors
/// As [`vars_len`](crate::vars_len); nothing is written on error.
pub fn encode_packet<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    modifier1: u8,
    modifier2: u8,
    pairs: &[(K, V)],
    dst: &mut impl BufMut,
) -> Result<usize, EncodeError> {
    let datasize = crate::vars_len(pairs)?;
    dst.put_slice(&Header::new(modifier1, datasize, modifier2).to_bytes());
    crate::encode_vars(pairs, dst)?;
    Ok(Header::LEN + usize::from(datasize))
}

/// Encodes a whole array packet (header and body) into `dst` and returns its length.
///
/// # Errors
/// As [`encode_items`](crate::encode_items); nothing is written on error.
pub fn encode_array_packet<T: AsRef<[u8]>>(
    modifier1: u8,
    modifier2: u8,
    items: &[T],
    dst: &mut impl BufMut,
) -> Result<usize, EncodeError> {
    let datasize = crate::items_len(items)?;
    dst.put_slice(&Header::new(modifier1, datasize, modifier2).to_bytes());
    crate::encode_items(items, dst)?;
    Ok(Header::LEN + usize::from(datasize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_then_complete() {
        let mut wire = Vec::new();
        encode_packet(0, 0, &[("A", "1")], &mut wire).unwrap();
        wire.extend_from_slice(b"body");
        for cut in 0..9 {
            let Status::Incomplete(i) = Packet::parse(&wire[..cut], &Limits::default()).unwrap() else {
                panic!("{cut} bytes cannot be complete");
            };
            assert!(i.needed() >= 1 && cut + i.needed() <= 10, "cut {cut}: needed {}", i.needed());
        }
        let (p, used) = Packet::parse(&wire, &Limits::default()).unwrap().at_eof().unwrap();
        assert_eq!((p.vars().len(), used, p.encoded_len()), (1, 10, 10));
        assert_eq!(
            Packet::parse(&wire[..6], &Limits::default()).unwrap().at_eof(),
            Err(DecodeError::TruncatedBody { datasize: 6, available: 2 })
        );
    }

    #[test]
    fn array_packet_encodes_like_uwsgi() {
        // Vector v20: RPC hello("a", "b").
        let mut wire = Vec::new();
        encode_array_packet(173, 0, &["hello", "a", "b"], &mut wire).unwrap();
        assert_eq!(wire, b"\xad\x0d\x00\x00\x05\x00hello\x01\x00a\x01\x00b");
        let (p, _) = ArrayPacket::parse(&wire, &Limits::default()).unwrap().at_eof().unwrap();
        assert_eq!(p.items().len(), 3);
    }
}
