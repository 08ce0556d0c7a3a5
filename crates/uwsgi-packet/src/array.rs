//! The "array" body: `u16 LE item_len, item`, repeated (spec §2.7). Used by RPC
//! (modifier1 173), cache set and legion scroll lists.

use core::fmt;
use core::iter::FusedIterator;

use bytes::BufMut;

use crate::vars::read_u16;
use crate::{DecodeError, EncodeError};

/// A validated array body: zero-copy access to its items.
///
/// Strict tiling; empty items are kept, including a final one (uWSGI's RPC parser would
/// refuse that last case and skip the others: that policy belongs to the consumer,
/// spec §2.7 and vector m20).
///
/// ```
/// use uwsgi_packet::Items;
/// let items = Items::parse(b"\x05\x00hello\x01\x00a\x00\x00", 255)?;
/// assert_eq!(items.iter().collect::<Vec<_>>(), [&b"hello"[..], b"a", b""]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Items<'a> {
    body: &'a [u8],
    len: usize,
}

impl<'a> Items<'a> {
    /// Validates `body` as an array of at most `max_items` items.
    ///
    /// # Errors
    /// [`DecodeError::Trailing`] (one stray byte), [`DecodeError::ItemOverrun`] and
    /// [`DecodeError::TooManyItems`].
    pub fn parse(body: &'a [u8], max_items: usize) -> Result<Self, DecodeError> {
        let end = body.len();
        let mut p = 0usize;
        let mut len = 0usize;
        while p < end {
            if len == max_items {
                return Err(DecodeError::TooManyItems { max: max_items });
            }
            let Some(ilen) = read_u16(body, p) else {
                return Err(DecodeError::Trailing { offset: p, len: end - p });
            };
            let start = p + 2;
            if ilen > end - start {
                return Err(DecodeError::ItemOverrun { offset: p, len: ilen as u16, remaining: end - start });
            }
            p = start + ilen;
            len += 1;
        }
        Ok(Self { body, len })
    }

    /// Number of items, empty ones included.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no items.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded body, exactly as received.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.body
    }

    /// The items in wire order.
    pub fn iter(&self) -> ItemsIter<'a> {
        ItemsIter { rest: self.body, left: self.len }
    }
}

impl fmt::Debug for Items<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|i| i.escape_ascii().to_string())).finish()
    }
}

impl<'a> IntoIterator for Items<'a> {
    type Item = &'a [u8];
    type IntoIter = ItemsIter<'a>;
    fn into_iter(self) -> ItemsIter<'a> {
        self.iter()
    }
}

/// Iterator over the items of a validated [`Items`].
#[derive(Clone, Debug)]
pub struct ItemsIter<'a> {
    rest: &'a [u8],
    left: usize,
}

impl<'a> Iterator for ItemsIter<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        // Validated body: the checked splits cannot fail, but end the iteration if they did.
        let item = self.rest.split_first_chunk::<2>().and_then(|(len, rest)| {
            let (item, rest) = rest.split_at_checked(usize::from(u16::from_le_bytes(*len)))?;
            self.rest = rest;
            Some(item)
        });
        self.left = if item.is_some() { self.left - 1 } else { 0 };
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for ItemsIter<'_> {}
impl FusedIterator for ItemsIter<'_> {}

/// Encodes `items` as an array body (no header) into `dst` and returns its length.
///
/// # Errors
/// [`EncodeError::ItemTooLong`] and [`EncodeError::BodyTooLarge`]; nothing is written on
/// error.
pub fn encode_items<T: AsRef<[u8]>>(items: &[T], dst: &mut impl BufMut) -> Result<u16, EncodeError> {
    let len = items_len(items)?;
    for item in items {
        let item = item.as_ref();
        dst.put_u16_le(item.len() as u16);
        dst.put_slice(item);
    }
    Ok(len)
}

/// The length of the array body `items` encode to.
///
/// # Errors
/// As [`encode_items`].
pub fn items_len<T: AsRef<[u8]>>(items: &[T]) -> Result<u16, EncodeError> {
    let mut total = 0usize;
    for item in items {
        let len = item.as_ref().len();
        if len > usize::from(u16::MAX) {
            return Err(EncodeError::ItemTooLong { len });
        }
        total = total.saturating_add(2 + len);
    }
    u16::try_from(total).map_err(|_| EncodeError::BodyTooLarge { len: total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_tiling() {
        assert_eq!(Items::parse(&[1, 0, b'a', 9], 9), Err(DecodeError::Trailing { offset: 3, len: 1 }));
        // Vector m21: the last item's length runs past the end.
        assert_eq!(
            Items::parse(&[1, 0, b'a', 3, 0, b'b'], 9),
            Err(DecodeError::ItemOverrun { offset: 3, len: 3, remaining: 1 })
        );
        assert_eq!(Items::parse(&[0, 0, 0, 0], 9).unwrap().len(), 2);
        assert_eq!(Items::parse(&[0, 0, 0, 0], 1), Err(DecodeError::TooManyItems { max: 1 }));
    }

    #[test]
    fn encode_roundtrip() {
        let mut out = Vec::new();
        assert_eq!(encode_items(&["hello", "a", "b"], &mut out), Ok(13));
        assert_eq!(Items::parse(&out, 9).unwrap().iter().collect::<Vec<_>>(), [&b"hello"[..], b"a", b"b"]);
        let big = vec![0u8; 65536];
        assert_eq!(encode_items(&[&big[..]], &mut Vec::new()), Err(EncodeError::ItemTooLong { len: 65536 }));
        assert_eq!(
            encode_items(&[&big[..40000], &big[..40000]], &mut Vec::new()),
            Err(EncodeError::BodyTooLarge { len: 80004 })
        );
    }
}
