//! The request body that follows a packet on a stream: its length and its progress.

use crate::{BodyError, Vars};

/// Parses one `CONTENT_LENGTH` value strictly: ASCII digits only; empty means 0.
///
/// Stricter than uWSGI 2.0.21, which takes the leading digits of `"5abc"` (vector m17):
/// a length the two ends read differently is how request smuggling starts.
///
/// ```
/// use uwsgi_packet::{parse_content_length, BodyError};
/// assert_eq!(parse_content_length(b"42"), Ok(42));
/// assert_eq!(parse_content_length(b""), Ok(0));
/// assert!(matches!(parse_content_length(b"5abc"), Err(BodyError::InvalidContentLength { position: 1, .. })));
/// ```
///
/// # Errors
/// [`BodyError::InvalidContentLength`] and [`BodyError::ContentLengthOverflow`].
pub fn parse_content_length(value: &[u8]) -> Result<u64, BodyError> {
    let mut n: u64 = 0;
    for (position, &byte) in value.iter().enumerate() {
        if !byte.is_ascii_digit() {
            return Err(BodyError::InvalidContentLength { position, byte });
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(byte - b'0')))
            .ok_or(BodyError::ContentLengthOverflow)?;
    }
    Ok(n)
}

/// The body length a request announces: its `CONTENT_LENGTH` var, strictly parsed.
///
/// Absent or empty means 0 (nginx sends an empty `CONTENT_LENGTH` on GET). Several
/// `CONTENT_LENGTH` vars must all agree.
///
/// # Errors
/// As [`parse_content_length`], and [`BodyError::ConflictingContentLength`].
pub fn content_length(vars: &Vars<'_>) -> Result<u64, BodyError> {
    let mut found: Option<u64> = None;
    for value in vars.get_all(b"CONTENT_LENGTH") {
        let n = parse_content_length(value)?;
        match found {
            Some(first) if first != n => {
                return Err(BodyError::ConflictingContentLength { first, second: n });
            }
            _ => found = Some(n),
        }
    }
    Ok(found.unwrap_or(0))
}

/// Tracks how much of a `CONTENT_LENGTH` body has arrived (spec §6.6–6.7).
///
/// Sans-IO: tell it how many bytes were read; it says how many of them are body (the rest
/// are past the body and must be ignored, as uWSGI does) and whether the body is complete.
///
/// ```
/// use uwsgi_packet::{BodyProgress, BodyError};
/// let mut body = BodyProgress::new(100);
/// assert_eq!(body.advance(5), 5);
/// assert_eq!(body.at_eof(), Err(BodyError::UnexpectedEof { expected: 100, received: 5 }));
/// assert_eq!(body.advance(1000), 95); // only 95 more bytes belong to the body
/// assert!(body.is_complete());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BodyProgress {
    expected: u64,
    received: u64,
}

impl BodyProgress {
    /// A body of `expected` bytes, none received yet.
    pub const fn new(expected: u64) -> Self {
        Self { expected, received: 0 }
    }

    /// Records `n` more bytes read from the stream and returns how many of them belong to
    /// the body.
    pub fn advance(&mut self, n: usize) -> usize {
        let take = self.remaining().min(n as u64);
        self.received += take;
        // `take <= n`, so it fits in usize.
        usize::try_from(take).unwrap_or(n)
    }

    /// Body bytes still to come.
    pub const fn remaining(&self) -> u64 {
        self.expected - self.received
    }

    /// Body bytes received so far.
    pub const fn received(&self) -> u64 {
        self.received
    }

    /// Whether the whole body has arrived.
    pub const fn is_complete(&self) -> bool {
        self.received == self.expected
    }

    /// What end of input means now.
    ///
    /// # Errors
    /// [`BodyError::UnexpectedEof`] if the body is incomplete (vector m16).
    pub fn at_eof(&self) -> Result<(), BodyError> {
        if self.is_complete() {
            Ok(())
        } else {
            Err(BodyError::UnexpectedEof { expected: self.expected, received: self.received })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_strict() {
        assert_eq!(parse_content_length(b"0017"), Ok(17));
        assert_eq!(parse_content_length(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_content_length(b"18446744073709551616"), Err(BodyError::ContentLengthOverflow));
        assert_eq!(
            parse_content_length(b"-1"),
            Err(BodyError::InvalidContentLength { position: 0, byte: b'-' })
        );
        assert_eq!(
            parse_content_length(b" 1"),
            Err(BodyError::InvalidContentLength { position: 0, byte: b' ' })
        );
    }

    #[test]
    fn duplicates_must_agree() {
        let mut body = Vec::new();
        crate::encode_vars(&[("CONTENT_LENGTH", "5"), ("CONTENT_LENGTH", "5")], &mut body).unwrap();
        assert_eq!(content_length(&Vars::parse(&body, 9).unwrap()), Ok(5));
        body.clear();
        crate::encode_vars(&[("CONTENT_LENGTH", "5"), ("CONTENT_LENGTH", "6")], &mut body).unwrap();
        assert_eq!(
            content_length(&Vars::parse(&body, 9).unwrap()),
            Err(BodyError::ConflictingContentLength { first: 5, second: 6 })
        );
        assert_eq!(content_length(&Vars::empty()), Ok(0));
    }
}
