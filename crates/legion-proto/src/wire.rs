//! Legion datagrams: encryption and the announce codec, as pure functions.
//!
//! A Legion datagram is a uwsgi header (`modifier1` 109, the **plaintext** length as a
//! little-endian `u16`, `modifier2` 0) followed by the encrypted announce (spec §1.2). The
//! announce is a uwsgi vars dictionary (spec §1.3, §1.4). Everything here is a pure
//! function of its arguments, byte-compatible with uWSGI 2.0.21 and checked against the
//! datagrams captured from it (`vectors/legion`):
//!
//! | step | function | inverse |
//! |---|---|---|
//! | announce ⇄ plaintext body | [`encode_plaintext`] | [`decode_plaintext`] |
//! | plaintext ⇄ ciphertext | [`Crypto::encrypt`] | [`Crypto::decrypt`] |
//! | announce ⇄ whole datagram | [`seal`] | [`open`] |
//! | announce ⇄ unencrypted datagram (tests, tools) | [`seal_plaintext`] | [`open_plaintext`] |
//!
//! ```
//! use legion_proto::{Announce, NodeUuid, wire::{self, Crypto}};
//!
//! // The 4th field of uWSGI's `--legion "<name> <addr> <valor> <crypt>"`.
//! let crypto = Crypto::from_spec("aes-128-cbc:secret")?;
//! let announce = Announce {
//!     legion: b"lg".to_vec(),
//!     valor: 10,
//!     unix: 1_795_310_429,
//!     lord: 0,
//!     name: b"vm".to_vec(),
//!     pid: 8570,
//!     uuid: NodeUuid::from_wire(b"58be0885-c1e5-40ad-b7b5-0bc07f46c3ad"),
//!     checksum: 0,
//!     lord_valor: 0,
//!     lord_uuid: NodeUuid::NIL,
//!     scroll: Vec::new(),
//!     dead: false,
//!     ext: None,
//! };
//! let datagram = wire::seal(&crypto, &announce)?;
//! assert_eq!(&datagram[..4], b"\x6d\xc0\x00\x00"); // modifier1 109, pktsize 192, modifier2 0
//! assert_eq!(datagram.len(), 4 + 208); // 192 bytes padded to 13 AES blocks
//! assert_eq!(wire::open(&crypto, &datagram)?, announce);
//!
//! // A wrong secret shows up as a padding error: drop the datagram, count it.
//! let other = Crypto::from_spec("aes-128-cbc:other")?;
//! let err = wire::open(&other, &datagram).unwrap_err();
//! assert_eq!(err.reason(), "decrypt");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Receiving
//!
//! [`open`] checks in uWSGI's order (spec §2.7 steps 1–5) and stops at the first failure:
//!
//! 1. `4 ≤ len ≤` [`MAX_DATAGRAM`] → [`WireError::TooShort`] / [`WireError::TooLarge`];
//! 2. `modifier1 == 109` → [`WireError::BadModifier1`] (`modifier2` is ignored);
//! 3. decryption and padding → [`WireError::Decrypt`];
//! 4. decrypted length == header `pktsize` → [`WireError::LengthMismatch`];
//! 5. the vars dictionary, strictly tiled → [`WireError::Malformed`], and the numbers →
//!    [`WireError::InvalidNumber`].
//!
//! The checks on the content (legion name, loop, clock skew, membership: steps 6–9) belong
//! to the state machine. Decoding follows uWSGI's reading of the keys: a missing key reads
//! as 0, empty or [`NodeUuid::NIL`]; unknown keys are ignored; for a repeated key the last
//! value wins; `dead` counts by its presence; a uuid that is not 36 bytes reads as nil.
//! Two deliberate differences, both stricter: numbers must be plain ASCII decimal digits
//! that fit in a `u64` (uWSGI's digit parser turns anything into some number, spec §1.5),
//! and the vars must tile the body exactly (uWSGI's cluster parser, which this is).
//!
//! # Sending
//!
//! [`seal`] writes the keys in uWSGI's order, so re-sealing a decoded uWSGI announce gives
//! back the same bytes: `legion`, `valor`, `unix`, `lord`, `name`, `pid`, `uuid`,
//! `checksum`, `lord_valor`, `lord_uuid`, then `scroll` if it is not empty, `dead` (value
//! `1`) for a death announce, and last this crate's extension key [`EXTENSION_KEY`] if
//! [`Announce::ext`] is set. uWSGI ignores that key (spec edge case 4.21); its value is
//! `v=<version>,epoch=<epoch>`.
//!
//! # Ciphers
//!
//! [`Crypto`] supports every cipher uWSGI can really use per datagram (spec §2.3): AES-128,
//! AES-192 and AES-256, Blowfish, three-key and two-key triple DES and DES, in CBC and ECB
//! (PKCS#7 padding), CFB, CFB8 (not Blowfish) and OFB (no padding), under OpenSSL's names
//! and aliases ([`CipherKind::from_name`]). Stream ciphers, CTR and AEAD modes are refused:
//! uWSGI 2.0.21 accepts them and then cannot decrypt past the first datagram (edge case
//! 4.18). Prefer `aes-128-cbc` or `aes-256-cbc`: they need no OpenSSL legacy provider on
//! the uWSGI side. Note that the protocol has no integrity check (spec §2.5): anyone with
//! the secret can forge any node's announce.

use bytes::Bytes;
use uwsgi_packet::{DecodeError, EncodeError, Header, Vars, encode_vars};

use crate::announce::{Announce, Extension, NodeUuid, UUID_LEN};

pub use crate::crypto::{Algorithm, CipherKind, Crypto, CryptoError, Mode};

/// `modifier1` of every Legion datagram (spec §1.2).
pub const MODIFIER1: u8 = 109;

/// The largest datagram uWSGI 2.0.21 can receive: its legion read buffer holds
/// 65535 − 32 − 4 = 65499 bytes, and a longer datagram is cut and then fails to decrypt
/// (spec §1.6, edge case 4.6). [`seal`] refuses to produce more; [`open`] rejects more.
pub const MAX_DATAGRAM: usize = 65_499;

/// The most vars [`decode_plaintext`] accepts in one announce. uWSGI sends at most 12
/// keys (13 with [`EXTENSION_KEY`]); the cap bounds the work spent on a hostile datagram.
pub const MAX_VARS: usize = 64;

/// The key of this crate's extension, ignored by uWSGI (see [`Extension`]).
pub const EXTENSION_KEY: &str = "legion_rs";

/// Why a datagram could not be opened, or an announce could not be sealed.
///
/// From [`open`] and [`open_plaintext`]: the datagram is rejected; these are pure
/// functions, so nothing else happens, and a state machine that gets this error must
/// leave its state untouched and drop the datagram (uWSGI logs and drops it too). The
/// causes are either **junk** from the network (a scanner, another protocol on the port,
/// a truncated datagram) or a **configuration mismatch**: another secret or cipher on one
/// side, which shows up as [`WireError::Decrypt`] on every datagram from that peer.
///
/// From [`seal`] and [`encode_plaintext`] ([`WireError::Encode`],
/// [`WireError::TooLargeToSend`]): the announce cannot be sent at all, because a field is
/// too large; nothing was produced.
///
/// [`WireError::reason`] gives a stable label per variant, for counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The datagram is shorter than the 4-byte header (spec §2.7 step 1; uWSGI:
    /// `invalid packet size`). Junk from the network.
    #[error("datagram of {len} bytes is shorter than the 4-byte header")]
    TooShort {
        /// The datagram's length.
        len: usize,
    },
    /// The datagram is longer than [`MAX_DATAGRAM`]: uWSGI would read only its first
    /// 65499 bytes and fail to decrypt them (spec §1.6, edge case 4.6). A sender with an
    /// oversized scroll, or junk.
    #[error("datagram of {len} bytes exceeds the {MAX_DATAGRAM}-byte legion receive buffer")]
    TooLarge {
        /// The datagram's length.
        len: usize,
    },
    /// `modifier1` is not 109 (spec §2.7 step 2; uWSGI: `invalid modifier1`). Another
    /// uwsgi packet type or another protocol on the legion port.
    #[error("modifier1 is {found}, not 109")]
    BadModifier1 {
        /// The `modifier1` byte received.
        found: u8,
    },
    /// The body does not decrypt (spec §2.7 step 3; uWSGI: `EVP_DecryptFinal_ex()`).
    /// On every datagram from a peer: the two sides disagree on the secret, IV or cipher
    /// (edge case 4.5). Once: junk.
    #[error("cannot decrypt the datagram: {0}")]
    Decrypt(DecryptError),
    /// The decrypted body's length differs from the header's `pktsize` (spec §2.7 step 4;
    /// uWSGI: `invalid packet size`). With CFB or OFB, usually a wrong secret (they have
    /// no padding to catch it); otherwise a forged or corrupted header.
    #[error("header announces {header} plaintext bytes, decryption gave {plaintext}")]
    LengthMismatch {
        /// The header's `pktsize`.
        header: u16,
        /// The decrypted length.
        plaintext: usize,
    },
    /// The decrypted body is not a well-tiled vars dictionary, or holds more than
    /// [`MAX_VARS`] vars (spec §1.3, §2.7 step 5; uWSGI: `invalid packet`). With CFB or
    /// OFB, usually a wrong secret; otherwise a broken sender.
    #[error("malformed announce: {0}")]
    Malformed(DecodeError),
    /// A numeric key's value is not plain ASCII decimal digits fitting in a `u64`. uWSGI
    /// would turn it into some number (spec §1.5: a negative valor, a 20-digit value);
    /// this crate refuses it. A misconfigured or broken sender, or garbage from a wrong
    /// CFB/OFB key.
    #[error("value of {key:?} is not a decimal number that fits in 64 bits")]
    InvalidNumber {
        /// The key: `valor`, `unix`, `lord`, `pid`, `checksum` or `lord_valor`.
        key: &'static str,
    },
    /// The announce cannot be framed ([`seal`], [`encode_plaintext`]): a field over 65535
    /// bytes, or a body over 65535 bytes (the header's `pktsize` is a `u16`). A too large
    /// scroll, legion or node name.
    #[error("announce cannot be encoded: {0}")]
    Encode(EncodeError),
    /// The sealed datagram would exceed [`MAX_DATAGRAM`], which uWSGI cannot receive (edge
    /// case 4.6) ([`seal`] only). The scroll is too large.
    #[error("sealed datagram of {len} bytes exceeds the {MAX_DATAGRAM}-byte limit of uWSGI receivers")]
    TooLargeToSend {
        /// The length the datagram would have had.
        len: usize,
    },
}

impl WireError {
    /// A short, stable, snake_case label per variant, for counting rejected datagrams:
    /// `too_short`, `too_large`, `bad_modifier1`, `decrypt`, `length_mismatch`,
    /// `malformed`, `invalid_number`, `encode`, `too_large_to_send`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "too_short",
            Self::TooLarge { .. } => "too_large",
            Self::BadModifier1 { .. } => "bad_modifier1",
            Self::Decrypt(_) => "decrypt",
            Self::LengthMismatch { .. } => "length_mismatch",
            Self::Malformed(_) => "malformed",
            Self::InvalidNumber { .. } => "invalid_number",
            Self::Encode(_) => "encode",
            Self::TooLargeToSend { .. } => "too_large_to_send",
        }
    }
}

/// Why a ciphertext could not be decrypted; carried by [`WireError::Decrypt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DecryptError {
    /// CBC or ECB ciphertext that is empty or not a whole number of blocks (OpenSSL:
    /// `wrong final block length`). Junk, or a peer using a stream mode.
    #[error("{len} bytes is not a whole, non-zero number of {block_size}-byte blocks")]
    BadLength {
        /// The ciphertext's length.
        len: usize,
        /// The cipher's block size.
        block_size: usize,
    },
    /// The PKCS#7 padding is wrong after decryption (OpenSSL: `bad decrypt`): almost
    /// always another secret, IV or cipher on the sending side.
    #[error("bad padding (another secret or cipher on the sending side?)")]
    BadPadding,
}

/// A `u64` as ASCII decimal, without allocating.
struct Decimal {
    buf: [u8; 20],
    start: usize,
}

impl Decimal {
    fn new(mut n: u64) -> Self {
        let mut buf = [0u8; 20];
        let mut start = buf.len();
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Self { buf, start }
    }
}

impl AsRef<[u8]> for Decimal {
    fn as_ref(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Encodes an announce as the plaintext body uWSGI 2.0.21 writes (spec §1.3, §1.4): keys
/// in its order, numbers as plain decimal, `scroll` only if not empty, `dead` = `1` only
/// in a death announce, then [`EXTENSION_KEY`] = `v=<version>,epoch=<epoch>` only if
/// [`Announce::ext`] is set.
///
/// # Errors
///
/// [`WireError::Encode`] if a field or the whole body exceeds 65535 bytes.
pub fn encode_plaintext(a: &Announce) -> Result<Vec<u8>, WireError> {
    let [valor, unix, lord, pid, checksum, lord_valor] =
        [a.valor, a.unix, a.lord, a.pid, a.checksum, a.lord_valor].map(Decimal::new);
    let ext = a.ext.map(|e| format!("v={},epoch={}", e.version, e.epoch));
    let mut pairs: Vec<(&[u8], &[u8])> = vec![
        (b"legion", &a.legion),
        (b"valor", valor.as_ref()),
        (b"unix", unix.as_ref()),
        (b"lord", lord.as_ref()),
        (b"name", &a.name),
        (b"pid", pid.as_ref()),
        (b"uuid", a.uuid.as_bytes()),
        (b"checksum", checksum.as_ref()),
        (b"lord_valor", lord_valor.as_ref()),
        (b"lord_uuid", a.lord_uuid.as_bytes()),
    ];
    if !a.scroll.is_empty() {
        pairs.push((b"scroll", &a.scroll));
    }
    if a.dead {
        pairs.push((b"dead", b"1"));
    }
    if let Some(ext) = &ext {
        pairs.push((EXTENSION_KEY.as_bytes(), ext.as_bytes()));
    }
    let mut out = Vec::with_capacity(256 + a.scroll.len());
    encode_vars(&pairs, &mut out).map_err(WireError::Encode)?;
    Ok(out)
}

/// Decodes a plaintext announce body as uWSGI 2.0.21 reads it (uWSGI core/legion.c,
/// `uwsgi_parse_legion`), more strictly where noted in the [module docs](self).
///
/// * The vars must tile the body exactly (spec §1.3), at most [`MAX_VARS`] of them.
/// * Missing keys read as 0, empty, or [`NodeUuid::NIL`]; `legion` may be missing too (the
///   state machine then rejects the name). Unknown keys are ignored.
/// * Repeated keys: the last value wins; for `uuid` and `lord_uuid` the last **36-byte**
///   value, as uWSGI only copies one of that length.
/// * Numbers: ASCII digits only, leading zeros allowed, value within `u64`; an empty value
///   is 0, as in uWSGI.
/// * `dead` counts by its presence, whatever its value.
/// * The extension ([`EXTENSION_KEY`]) is comma-separated `key=value` pairs: `v` (≥ 1)
///   and `epoch` (default 0); other keys are ignored. A bad value makes the extension read
///   as absent, it never fails the datagram.
///
/// # Errors
///
/// [`WireError::Malformed`] and [`WireError::InvalidNumber`].
pub fn decode_plaintext(plaintext: &[u8]) -> Result<Announce, WireError> {
    let vars = Vars::parse(plaintext, MAX_VARS).map_err(WireError::Malformed)?;
    let mut legion: &[u8] = b"";
    let mut name: &[u8] = b"";
    let mut scroll: &[u8] = b"";
    let mut uuid = NodeUuid::NIL;
    let mut lord_uuid = NodeUuid::NIL;
    let mut dead = false;
    let mut ext = None;
    // Numbers are kept raw and parsed once, so only the winning value must be valid.
    let mut numbers: [(&'static str, &[u8]); 6] =
        [("valor", b""), ("unix", b""), ("lord", b""), ("pid", b""), ("checksum", b""), ("lord_valor", b"")];
    for (key, value) in vars {
        match key {
            b"legion" => legion = value,
            b"name" => name = value,
            b"scroll" => scroll = value,
            // uWSGI: `if (vallen == 36) memcpy(...)`; any other length leaves it as it was.
            b"uuid" if value.len() == UUID_LEN => uuid = NodeUuid::from_wire(value),
            b"lord_uuid" if value.len() == UUID_LEN => lord_uuid = NodeUuid::from_wire(value),
            b"dead" => dead = true,
            _ if key == EXTENSION_KEY.as_bytes() => ext = Some(value),
            _ => {
                if let Some(slot) = numbers.iter_mut().find(|(k, _)| k.as_bytes() == key) {
                    slot.1 = value;
                }
            }
        }
    }
    let [valor, unix, lord, pid, checksum, lord_valor] = numbers;
    Ok(Announce {
        legion: legion.to_vec(),
        valor: parse_number(valor)?,
        unix: parse_number(unix)?,
        lord: parse_number(lord)?,
        name: name.to_vec(),
        pid: parse_number(pid)?,
        uuid,
        checksum: parse_number(checksum)?,
        lord_valor: parse_number(lord_valor)?,
        lord_uuid,
        scroll: scroll.to_vec(),
        dead,
        ext: ext.and_then(parse_extension),
    })
}

/// A decimal value: ASCII digits within `u64`; empty is 0 (uWSGI's `uwsgi_str_num` gives
/// 0 for an empty value and garbage for anything else that is not digits, spec §1.5).
fn parse_number((key, value): (&'static str, &[u8])) -> Result<u64, WireError> {
    digits(value).ok_or(WireError::InvalidNumber { key })
}

/// ASCII digits as a `u64`, `None` on any other byte or on overflow; empty is 0.
fn digits(value: &[u8]) -> Option<u64> {
    value.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() { n.checked_mul(10)?.checked_add(u64::from(b - b'0')) } else { None }
    })
}

/// Reads the extension value `v=<version>,epoch=<epoch>[,…]`; `None` (absent) unless `v`
/// is a number ≥ 1 and `epoch`, if present, a number.
fn parse_extension(value: &[u8]) -> Option<Extension> {
    let mut version = None;
    let mut epoch = Some(0);
    for part in value.split(|&b| b == b',') {
        let Some(eq) = part.iter().position(|&b| b == b'=') else { continue };
        let (k, v) = (&part[..eq], &part[eq + 1..]);
        // Empty values are malformed here (unlike uWSGI's own numbers).
        let n = if v.is_empty() { None } else { digits(v) };
        match k {
            b"v" => version = Some(n),
            b"epoch" => epoch = n,
            _ => {}
        }
    }
    let version = u32::try_from(version.flatten()?).ok().filter(|&v| v >= 1)?;
    Some(Extension { version, epoch: epoch? })
}

/// Seals an announce into one datagram: the header (`modifier1` 109, the plaintext length
/// as `pktsize`, `modifier2` 0) and the encrypted body, byte for byte as uWSGI 2.0.21
/// sends it (uWSGI core/legion.c, `uwsgi_legion_announce`).
///
/// # Errors
///
/// [`WireError::Encode`] if the announce cannot be framed, [`WireError::TooLargeToSend`]
/// if the datagram would exceed [`MAX_DATAGRAM`].
pub fn seal(crypto: &Crypto, a: &Announce) -> Result<Bytes, WireError> {
    let plaintext = encode_plaintext(a)?;
    let len = Header::LEN + crypto.kind().ciphertext_len(plaintext.len());
    if len > MAX_DATAGRAM {
        return Err(WireError::TooLargeToSend { len });
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&header(&plaintext)?);
    out.extend_from_slice(&crypto.encrypt(&plaintext));
    Ok(Bytes::from(out))
}

/// Seals an announce **without encryption**: the header and the plaintext body. uWSGI can
/// neither send nor accept this; it is for tests and tools (the `PLAINTEXT` vector).
///
/// # Errors
///
/// As [`seal`].
pub fn seal_plaintext(a: &Announce) -> Result<Bytes, WireError> {
    let plaintext = encode_plaintext(a)?;
    let len = Header::LEN + plaintext.len();
    if len > MAX_DATAGRAM {
        return Err(WireError::TooLargeToSend { len });
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&header(&plaintext)?);
    out.extend_from_slice(&plaintext);
    Ok(Bytes::from(out))
}

/// The datagram header for this plaintext (spec §1.2: `pktsize` = plaintext length).
fn header(plaintext: &[u8]) -> Result<[u8; 4], WireError> {
    // `encode_vars` already keeps the body within a u16; this only avoids a cast.
    let pktsize = u16::try_from(plaintext.len())
        .map_err(|_| WireError::Encode(EncodeError::BodyTooLarge { len: plaintext.len() }))?;
    Ok(Header::new(MODIFIER1, pktsize, 0).to_bytes())
}

/// Checks steps 1 and 2 of spec §2.7 and splits off the header.
fn split_header(datagram: &[u8]) -> Result<(Header, &[u8]), WireError> {
    let len = datagram.len();
    // Step 1. uWSGI: `read()` into a 65499-byte buffer, then `if (len < 4)`.
    if len > MAX_DATAGRAM {
        return Err(WireError::TooLarge { len });
    }
    let Some((head, body)) = datagram.split_first_chunk::<4>() else {
        return Err(WireError::TooShort { len });
    };
    let header = Header::from_bytes(*head);
    // Step 2. uWSGI: `if (uh->modifier1 != 109)`; modifier2 is never looked at.
    if header.modifier1 != MODIFIER1 {
        return Err(WireError::BadModifier1 { found: header.modifier1 });
    }
    Ok((header, body))
}

/// Steps 4 and 5 of spec §2.7 on a decrypted body.
fn check_and_decode(header: Header, plaintext: &[u8]) -> Result<Announce, WireError> {
    // Step 4. uWSGI: `if (d_len != uh->pktsize)`; read little-endian here on every host
    // (uWSGI reads it in host order, edge case 4.19).
    if plaintext.len() != usize::from(header.datasize) {
        return Err(WireError::LengthMismatch { header: header.datasize, plaintext: plaintext.len() });
    }
    // Step 5.
    decode_plaintext(plaintext)
}

/// Opens one received datagram: spec §2.7 steps 1–5 in uWSGI's order (see the
/// [module docs](self)). Never panics, whatever the bytes.
///
/// # Errors
///
/// [`WireError::TooShort`], [`WireError::TooLarge`], [`WireError::BadModifier1`],
/// [`WireError::Decrypt`], [`WireError::LengthMismatch`], [`WireError::Malformed`],
/// [`WireError::InvalidNumber`]: the datagram is to be dropped.
pub fn open(crypto: &Crypto, datagram: &[u8]) -> Result<Announce, WireError> {
    let (header, ciphertext) = split_header(datagram)?;
    // Step 3.
    let plaintext = crypto.decrypt(ciphertext)?;
    check_and_decode(header, &plaintext)
}

/// Opens an **unencrypted** datagram (header and plaintext body), as [`open`] without
/// step 3. uWSGI never sends these; for tests and tools (the `PLAINTEXT` vector).
///
/// # Errors
///
/// As [`open`], except [`WireError::Decrypt`].
pub fn open_plaintext(datagram: &[u8]) -> Result<Announce, WireError> {
    let (header, plaintext) = split_header(datagram)?;
    check_and_decode(header, plaintext)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

    use super::*;

    #[test]
    fn decimals_are_plain() {
        for n in [0, 7, 10, 65535, 1_795_310_429, u64::MAX] {
            assert_eq!(Decimal::new(n).as_ref(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn numbers_are_digits_within_u64() {
        assert_eq!(digits(b""), Some(0));
        assert_eq!(digits(b"0007"), Some(7));
        assert_eq!(digits(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(digits(b"18446744073709551616"), None);
        assert_eq!(digits(b"-5"), None);
        assert_eq!(digits(b"5 "), None);
        assert_eq!(digits(b"+5"), None);
    }

    #[test]
    fn extension_values() {
        let ext = |version, epoch| Some(Extension { version, epoch });
        assert_eq!(parse_extension(b"v=1,epoch=7"), ext(1, 7));
        assert_eq!(parse_extension(b"epoch=7,v=2,future=x,junk"), ext(2, 7));
        assert_eq!(parse_extension(b"v=1"), ext(1, 0));
        assert_eq!(parse_extension(b"v=1,epoch=1,epoch=9"), ext(1, 9));
        for bad in
            [&b""[..], b"v=0", b"v=", b"v=x", b"v=4294967296", b"epoch=3", b"v=1,epoch=", b"v=1,epoch=-1"]
        {
            assert_eq!(parse_extension(bad), None, "{:?}", bad.escape_ascii().to_string());
        }
    }
}
