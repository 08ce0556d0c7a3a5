//! The "vars" body: `u16 LE key_len, key, u16 LE val_len, value`, repeated (spec §2.1).

use core::fmt;
use core::iter::FusedIterator;

use bytes::BufMut;

use crate::{DecodeError, EncodeError};

/// Reads the little-endian `u16` at `body[at..at + 2]`, if both bytes are there.
#[inline(always)]
pub(crate) fn read_u16(body: &[u8], at: usize) -> Option<usize> {
    let b = body.get(at..at.checked_add(2)?)?;
    Some(usize::from(u16::from_le_bytes([b[0], b[1]])))
}

/// A validated vars body: zero-copy access to its key/value pairs.
///
/// Obtained from [`Vars::parse`] (or from a parsed [`Packet`](crate::Packet)), which checks
/// that the vars tile the body exactly, so iterating cannot fail. Keys and values are
/// opaque bytes: no charset, NUL allowed, empty values allowed. Order and duplicates are
/// kept as on the wire (spec §6.4).
///
/// ```
/// use uwsgi_packet::Vars;
/// let body = b"\x04\x00PATH\x01\x00/\x04\x00PATH\x02\x00/x";
/// let vars = Vars::parse(body, 128)?;
/// assert_eq!(vars.len(), 2);
/// assert_eq!(vars.get(b"PATH"), Some(&b"/x"[..])); // last one wins, as in Python's environ
/// assert_eq!(vars.first(b"PATH"), Some(&b"/"[..]));
/// assert_eq!(vars.iter().count(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vars<'a> {
    body: &'a [u8],
    len: usize,
}

impl<'a> Vars<'a> {
    /// Validates `body` as a vars dictionary of at most `max_vars` pairs.
    ///
    /// This is uWSGI's strict "cluster" parser (spec §2.3 B) without its one weakness:
    /// nothing is handed out before the whole body has been checked. It reads only the
    /// length fields, never the keys or values themselves.
    ///
    /// # Errors
    /// [`DecodeError::Trailing`], [`DecodeError::EmptyKey`], [`DecodeError::KeyOverrun`],
    /// [`DecodeError::MissingValueLength`], [`DecodeError::ValueOverrun`] and
    /// [`DecodeError::TooManyVars`].
    pub fn parse(body: &'a [u8], max_vars: usize) -> Result<Self, DecodeError> {
        let end = body.len();
        let mut p = 0usize;
        let mut len = 0usize;
        while p < end {
            if len == max_vars {
                // uWSGI: "max vec size reached. skip this var." Checked before reading the
                // next var, so the work done is bounded by the limit.
                return Err(DecodeError::TooManyVars { max: max_vars });
            }
            // Parser B: "if p + 2 >= end: error (fewer than 3 bytes left)". A var needs at
            // least a key length and one key byte.
            let Some(klen) = read_u16(body, p).filter(|_| end - p >= 3) else {
                return Err(DecodeError::Trailing { offset: p, len: end - p });
            };
            // Spec §2.2: "a 0 key length is an error in every uWSGI parser".
            if klen == 0 {
                return Err(DecodeError::EmptyKey { offset: p });
            }
            let key_start = p + 2;
            // Parser B: "p += 2; if p + klen > end: error". No resync (spec §2.4).
            if klen > end - key_start {
                return Err(DecodeError::KeyOverrun {
                    offset: p,
                    len: klen as u16,
                    remaining: end - key_start,
                });
            }
            let vlen_at = key_start + klen;
            // Parser B: "if p + 2 > end: error" (vectors m10, m15).
            let Some(vlen) = read_u16(body, vlen_at) else {
                return Err(DecodeError::MissingValueLength { offset: vlen_at, remaining: end - vlen_at });
            };
            let value_start = vlen_at + 2;
            // Parser B: "vlen = u16(p); p += 2; if p + vlen > end: error". An empty value,
            // also as the very last var, is fine (vector v07).
            if vlen > end - value_start {
                return Err(DecodeError::ValueOverrun {
                    offset: vlen_at,
                    len: vlen as u16,
                    remaining: end - value_start,
                });
            }
            p = value_start + vlen;
            len += 1;
        }
        Ok(Self { body, len })
    }

    /// A body that [`Vars::parse`] has already accepted, with the count it found.
    pub(crate) const fn from_validated(body: &'a [u8], len: usize) -> Self {
        Self { body, len }
    }

    /// An empty dictionary.
    pub const fn empty() -> Self {
        Self { body: &[], len: 0 }
    }

    /// Number of pairs, duplicates included.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no pairs.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded body, exactly as received.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.body
    }

    /// The pairs in wire order.
    pub fn iter(&self) -> VarsIter<'a> {
        VarsIter { rest: self.body, left: self.len }
    }

    /// The value of the **last** pair named `key`: what Python's `environ` and most of
    /// uWSGI see for a duplicated key (spec §2.5).
    pub fn get(&self, key: &[u8]) -> Option<&'a [u8]> {
        self.iter().filter(|(k, _)| *k == key).last().map(|(_, v)| v)
    }

    /// The value of the **first** pair named `key` (uWSGI's own `REMOTE_ADDR` handling).
    pub fn first(&self, key: &[u8]) -> Option<&'a [u8]> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Every value of pairs named `key`, in wire order.
    pub fn get_all<'k>(&self, key: &'k [u8]) -> impl Iterator<Item = &'a [u8]> + 'k
    where
        'a: 'k,
    {
        self.iter().filter(move |(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl fmt::Debug for Vars<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(k, v)| (k.escape_ascii().to_string(), v.escape_ascii().to_string())))
            .finish()
    }
}

impl<'a> IntoIterator for Vars<'a> {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = VarsIter<'a>;
    fn into_iter(self) -> VarsIter<'a> {
        self.iter()
    }
}

impl<'a> IntoIterator for &Vars<'a> {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = VarsIter<'a>;
    fn into_iter(self) -> VarsIter<'a> {
        self.iter()
    }
}

/// Iterator over the `(key, value)` pairs of a validated [`Vars`], in wire order.
#[derive(Clone, Debug)]
pub struct VarsIter<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> VarsIter<'a> {
    #[inline]
    fn next_pair(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        // The body was validated, so none of these can fail; they are written with
        // checked splits anyway, so that even a broken invariant ends the iteration
        // instead of panicking.
        let (klen, rest) = self.rest.split_first_chunk::<2>()?;
        let (key, rest) = rest.split_at_checked(usize::from(u16::from_le_bytes(*klen)))?;
        let (vlen, rest) = rest.split_first_chunk::<2>()?;
        let (value, rest) = rest.split_at_checked(usize::from(u16::from_le_bytes(*vlen)))?;
        self.rest = rest;
        Some((key, value))
    }
}

impl<'a> Iterator for VarsIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let pair = self.next_pair();
        self.left = if pair.is_some() { self.left - 1 } else { 0 };
        pair
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for VarsIter<'_> {}
impl FusedIterator for VarsIter<'_> {}

/// The encoded length of one pair, checked.
fn pair_len(key: &[u8], value: &[u8]) -> Result<usize, EncodeError> {
    if key.is_empty() {
        return Err(EncodeError::EmptyKey);
    }
    if key.len() > usize::from(u16::MAX) {
        return Err(EncodeError::KeyTooLong { len: key.len() });
    }
    if value.len() > usize::from(u16::MAX) {
        return Err(EncodeError::ValueTooLong { len: value.len() });
    }
    Ok(4 + key.len() + value.len())
}

/// The length of the vars body `pairs` encode to.
///
/// # Errors
/// [`EncodeError::EmptyKey`], [`EncodeError::KeyTooLong`], [`EncodeError::ValueTooLong`],
/// and [`EncodeError::BodyTooLarge`] when the total exceeds 65535 bytes.
pub fn vars_len<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Result<u16, EncodeError> {
    let mut total = 0usize;
    for (k, v) in pairs {
        total = total.saturating_add(pair_len(k.as_ref(), v.as_ref())?);
    }
    u16::try_from(total).map_err(|_| EncodeError::BodyTooLarge { len: total })
}

/// Appends one pair to `dst`; the caller has checked the lengths with [`pair_len`].
fn put_pair(dst: &mut impl BufMut, key: &[u8], value: &[u8]) {
    dst.put_u16_le(key.len() as u16);
    dst.put_slice(key);
    dst.put_u16_le(value.len() as u16);
    dst.put_slice(value);
}

/// Encodes `pairs` as a vars body (no header) into `dst`, in the given order, duplicates
/// kept, and returns the body length.
///
/// # Errors
/// As [`vars_len`]; nothing is written on error.
pub fn encode_vars<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    pairs: &[(K, V)],
    dst: &mut impl BufMut,
) -> Result<u16, EncodeError> {
    let len = vars_len(pairs)?;
    for (k, v) in pairs {
        put_pair(dst, k.as_ref(), v.as_ref());
    }
    Ok(len)
}

/// Builds a vars packet pair by pair, checking every length as it goes.
///
/// Handy when the pairs come from a loop (a request's headers). On error nothing is
/// appended and the builder stays usable.
///
/// ```
/// use uwsgi_packet::{PacketBuilder, Packet, Limits};
/// let mut b = PacketBuilder::new(0, 0);
/// b.push(b"REQUEST_METHOD", b"GET")?;
/// b.push(b"PATH_INFO", b"/")?;
/// let wire = b.finish();
/// let (packet, used) = Packet::parse(&wire, &Limits::default())?.at_eof()?;
/// assert_eq!((packet.vars().len(), used), (2, wire.len()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct PacketBuilder {
    buf: bytes::BytesMut,
    modifier1: u8,
    modifier2: u8,
}

impl PacketBuilder {
    /// A builder for a packet with these modifiers.
    pub fn new(modifier1: u8, modifier2: u8) -> Self {
        let mut buf = bytes::BytesMut::with_capacity(256);
        buf.put_slice(&[0; 4]);
        Self { buf, modifier1, modifier2 }
    }

    /// Appends a pair.
    ///
    /// # Errors
    /// [`EncodeError::EmptyKey`], [`EncodeError::KeyTooLong`], [`EncodeError::ValueTooLong`],
    /// or [`EncodeError::BodyTooLarge`] if the body would pass 65535 bytes.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<&mut Self, EncodeError> {
        let add = pair_len(key, value)?;
        let len = self.body_len() + add;
        if len > usize::from(u16::MAX) {
            return Err(EncodeError::BodyTooLarge { len });
        }
        put_pair(&mut self.buf, key, value);
        Ok(self)
    }

    /// Body bytes so far.
    pub fn body_len(&self) -> usize {
        self.buf.len() - 4
    }

    /// The packet: header and body.
    pub fn finish(mut self) -> bytes::Bytes {
        // `push` keeps the body within u16::MAX.
        let datasize = u16::try_from(self.body_len()).unwrap_or(u16::MAX);
        self.buf[..4]
            .copy_from_slice(&crate::Header::new(self.modifier1, datasize, self.modifier2).to_bytes());
        self.buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DecodeError as E;

    fn kv(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_vars(pairs, &mut out).unwrap();
        out
    }

    #[test]
    fn strict_tiling_errors() {
        let good = kv(&[(b"AB", b"xy")]);
        // Spec §2.3 B, one case per check.
        assert_eq!(Vars::parse(&[good.as_slice(), &[7]].concat(), 9), Err(E::Trailing { offset: 8, len: 1 }));
        assert_eq!(
            Vars::parse(&[good.as_slice(), &[0, 0]].concat(), 9),
            Err(E::Trailing { offset: 8, len: 2 })
        );
        assert_eq!(Vars::parse(&[0, 0, 1], 9), Err(E::EmptyKey { offset: 0 }));
        assert_eq!(Vars::parse(&[5, 0, b'a'], 9), Err(E::KeyOverrun { offset: 0, len: 5, remaining: 1 }));
        assert_eq!(Vars::parse(&[1, 0, b'a'], 9), Err(E::MissingValueLength { offset: 3, remaining: 0 }));
        assert_eq!(Vars::parse(&[1, 0, b'a', 0], 9), Err(E::MissingValueLength { offset: 3, remaining: 1 }));
        assert_eq!(
            Vars::parse(&[1, 0, b'a', 2, 0, b'x'], 9),
            Err(E::ValueOverrun { offset: 3, len: 2, remaining: 1 })
        );
        // An empty value that ends exactly at the end is fine (v07).
        assert_eq!(Vars::parse(&[1, 0, b'a', 0, 0], 9).unwrap().len(), 1);
    }

    #[test]
    fn too_many_vars_is_checked_before_reading_more() {
        let body = kv(&[(b"a", b""), (b"b", b""), (b"c", b"")]);
        assert_eq!(Vars::parse(&body, 3).unwrap().len(), 3);
        assert_eq!(Vars::parse(&body, 2), Err(E::TooManyVars { max: 2 }));
        assert_eq!(Vars::parse(&[], 0).unwrap().len(), 0);
    }

    #[test]
    fn lookups_follow_uwsgi() {
        let body = kv(&[(b"K", b"1"), (b"X", b""), (b"K", b"2")]);
        let vars = Vars::parse(&body, 10).unwrap();
        assert_eq!(vars.get(b"K"), Some(&b"2"[..]));
        assert_eq!(vars.first(b"K"), Some(&b"1"[..]));
        assert_eq!(vars.get_all(b"K").collect::<Vec<_>>(), [&b"1"[..], b"2"]);
        assert_eq!(vars.get(b"X"), Some(&b""[..]));
        assert_eq!(vars.get(b"nope"), None);
        assert_eq!(format!("{vars:?}"), r#"[("K", "1"), ("X", ""), ("K", "2")]"#);
    }

    #[test]
    fn encoder_refuses_what_cannot_be_framed() {
        let big = vec![b'x'; 65536];
        let mut out = Vec::new();
        assert_eq!(encode_vars(&[(&b""[..], &b"v"[..])], &mut out), Err(EncodeError::EmptyKey));
        assert_eq!(
            encode_vars(&[(&big[..], &b"v"[..])], &mut out),
            Err(EncodeError::KeyTooLong { len: 65536 })
        );
        assert_eq!(
            encode_vars(&[(&b"k"[..], &big[..])], &mut out),
            Err(EncodeError::ValueTooLong { len: 65536 })
        );
        // Two legal pairs whose sum overflows the u16 datasize: uWSGI would wrap it.
        let half = vec![b'x'; 40000];
        assert_eq!(
            encode_vars(&[(&b"a"[..], &half[..]), (&b"b"[..], &half[..])], &mut out),
            Err(EncodeError::BodyTooLarge { len: 80010 })
        );
        assert!(out.is_empty(), "nothing is written on error");
        // The largest body that fits: 4 + 1 + 65530 = 65535.
        let v = vec![b'y'; 65530];
        assert_eq!(encode_vars(&[(&b"k"[..], &v[..])], &mut out), Ok(65535));
    }

    #[test]
    fn builder_keeps_state_on_error() {
        let mut b = PacketBuilder::new(0, 0);
        b.push(b"k", &vec![b'x'; 65530]).unwrap();
        assert_eq!(b.push(b"k", b"").unwrap_err(), EncodeError::BodyTooLarge { len: 65540 });
        assert_eq!(b.body_len(), 65535);
        let wire = b.finish();
        assert_eq!(&wire[..4], &[0, 0xff, 0xff, 0]);
    }
}
