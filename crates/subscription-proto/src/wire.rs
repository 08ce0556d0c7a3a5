//! Subscription datagrams: decoding, encoding and the notify acknowledgement, as pure
//! functions.
//!
//! A subscription is one datagram (UDP or unix `SOCK_DGRAM`): a uwsgi header (`modifier1`
//! 224, the body length as a little-endian `u16`, `modifier2` = the command) followed by a
//! vars body of `u16le key_len | key | u16le val_len | value` pairs (spec §1.1–§1.3). The
//! pairs are the [`Request`]; the header's byte 3 is the [`Command`]. Everything here is a
//! function of its arguments only, byte-compatible with uWSGI 2.0.21 and checked against
//! the datagrams captured from it (`vectors/subscription`):
//!
//! | direction | function | inverse |
//! |---|---|---|
//! | request ⇄ datagram | [`encode`] | [`decode`] |
//! | "new node" ack text (spec §1.7) | [`notify_ack`] | [`parse_notify_ack`] |
//!
//! Signing and verifying (spec §3) live in [`crate::sign`]; [`decode`] only reports which
//! bytes are covered by the signature ([`Decoded::signed_region`]).
//!
//! ```
//! use subscription_proto::{Command, Request, wire::{self, Mode}};
//!
//! let req = Request {
//!     key: b"example.com".to_vec(),
//!     address: b"127.0.0.1:42010".to_vec(),
//!     cores: 2,
//!     ..Request::default()
//! };
//! let datagram = wire::encode(Command::Subscribe, &req)?;
//! assert_eq!(&datagram[..4], b"\xe0\x66\x00\x00"); // modifier1 224, datasize 102, subscribe
//!
//! let decoded = wire::decode(&datagram, Mode::Strict)?;
//! assert_eq!((decoded.command, decoded.request), (Command::Subscribe, req));
//! assert_eq!(decoded.signed_region, None);
//!
//! // A datagram without an address is dropped by uWSGI; here it is an error with a label.
//! let err = wire::decode(b"\xe0\x00\x00\x00", Mode::Compat).unwrap_err();
//! assert_eq!(err.reason(), "missing_address");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Receiving: two modes
//!
//! [`Mode::Compat`] reads a datagram exactly as a uWSGI 2.0.21 router does (uWSGI
//! `plugins/corerouter/cr_common.c`, `uwsgi_corerouter_manage_subscription`, and
//! `corerouter.c`, `corerouter_manage_subscription`; spec §1.2, §1.3, §1.6, §9.1):
//!
//! * header byte 0 (`modifier1`) and the `datasize` field are ignored: the body is the
//!   datagram after its first 4 bytes; byte 3 is `0` = subscribe, anything else =
//!   unsubscribe;
//! * pairs are read one after the other; a malformed tail (fewer than 3 bytes left, a zero
//!   key length, a key or value running past the end) ends the body, and **the pairs read
//!   before it are kept** (uWSGI applies each pair as it reads it and ignores the parser's
//!   result);
//! * for a repeated key the last value wins; unknown keys are ignored; key names are
//!   compared byte for byte;
//! * numbers go through uWSGI's `uwsgi_str_num`, which does not validate: see
//!   [`Mode::Compat`] for the exact formula (`"1a"` is 59, `"-1"` is 2^64 − 29, `""` is 0),
//!   and `modifier1` / `modifier2` keep the low 8 bits of the result.
//!
//! [`Mode::Strict`] accepts only what a well-behaved subscriber sends: header `modifier1`
//! 224, `datasize` equal to the body length, command 0 or 1, a body that the vars pairs
//! tile exactly ([`uwsgi_packet::Vars::parse`]), numbers that are ASCII digits fitting their
//! type, a non-empty `sign` that is the last pair and comes with a `unix` stamp, and a
//! `notify` of 1 to [`MAX_NOTIFY`] bytes.
//!
//! Both modes refuse, where uWSGI 2.0.21 would drop the request or misbehave:
//!
//! * a datagram of more than [`MAX_DATAGRAM`] bytes ([`WireError::TooLarge`]: the router
//!   reads 4096 bytes and would process a truncated request) or of fewer than 4
//!   ([`WireError::TooShort`]);
//! * a `key` of more than [`MAX_KEY`] bytes ([`WireError::KeyTooLong`]: 2.0.21 overruns a
//!   255-byte buffer on it, spec §2.9);
//! * no `address`, an empty one, or one of more than [`MAX_ADDRESS`] bytes
//!   ([`WireError::MissingAddress`], [`WireError::AddressTooLong`]: uWSGI drops those,
//!   spec §2.3).
//!
//! Other field rules, the same in both modes: a `notify` outside 1..=[`MAX_NOTIFY`] bytes
//! reads as `None` in compat mode (uWSGI ignores it silently, spec §2.9) and is an error in
//! strict mode; `proto` (uWSGI 2.1) keeps its first byte, an empty value reads as `None`;
//! `clear` (2.1) is a number, true when not 0; `inactive` (2.1) is ignored, as every 2.1
//! router ignores it. A missing `key` reads as the empty key, as in uWSGI (spec §1.4 note a).
//!
//! # The signed region
//!
//! uWSGI does not look for the `sign` pair when it verifies a signature: it assumes the pair
//! is the last one and computes the covered bytes from the datagram length (spec §2.2,
//! §3.2): `datagram[4 .. len − (2 + 4 + 2 + sign_len)]`. [`Decoded::signed_region`] is that
//! range, computed the same way, whenever the request carries a non-empty `sign` (uWSGI
//! treats an empty one as no signature). In compat mode it can therefore cover the wrong
//! bytes (a `sign` that is not last, a malformed tail): verification then fails, as it
//! does in uWSGI. In strict mode it is checked to end exactly where the `sign` pair starts.
//! The 4-byte header, and with it the command, is **not** covered (spec §3.4).
//!
//! # Sending
//!
//! [`encode`] writes the pairs in uWSGI's order (spec §1.5): `key`, `address`, `modifier1`,
//! `modifier2`, `cores`, `load`, `weight`, then the optional ones that are set: `backup`,
//! `vassal`, `sni_key`, `sni_crt`, `sni_ca`, `proto`, `algo`, `notify`, `clear`, `unix`,
//! `sign`. This is uWSGI 2.1's `--subscribe2` order; without the 2.1 keys (`backup`,
//! `vassal`, `proto`, `algo`, `clear`) it is exactly what 2.0.21 sends, so re-encoding a
//! decoded 2.0.21 datagram gives back the same bytes. The header is `modifier1` 224, the
//! body length, and the command's `modifier2` (0 or 1). What [`encode`] produces,
//! [`decode`] accepts in both modes and gives back unchanged (in compat mode, except numbers
//! of 20 digits, which uWSGI reads as 0: see [`Mode::Compat`]).

use core::ops::Range;

use uwsgi_packet::{DecodeError, Header, Vars, encode_vars};

use crate::request::{Command, Request};

/// `modifier1` of every subscription datagram (spec §1.2). uWSGI 2.0.21 routers do not
/// check it; [`Mode::Strict`] does.
pub const MODIFIER1: u8 = 224;

/// The largest datagram a uWSGI router reads: it receives into a 4096-byte buffer, so a
/// longer datagram is cut (spec §1.1, §2.9). [`decode`] rejects more; [`encode`] refuses
/// to produce more.
pub const MAX_DATAGRAM: usize = 4096;

/// The longest `key` (pool name): uWSGI's lookups refuse longer keys, and 2.0.21's
/// subscribe path overruns a buffer on them (spec §2.9).
pub const MAX_KEY: usize = 255;

/// The longest `address` uWSGI accepts (spec §2.3, §2.9); it must also not be empty.
pub const MAX_ADDRESS: usize = 255;

/// The longest `notify` path uWSGI uses (spec §1.7, §2.9): it fits a `sockaddr_un`.
pub const MAX_NOTIFY: usize = 101;

/// How strictly [`decode`] reads a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Exactly what a uWSGI 2.0.21 router accepts (spec §9.1), except the few inputs that
    /// make it misbehave (see the [module docs](self)).
    ///
    /// The header's `modifier1` and `datasize` are ignored; a malformed tail ends the body
    /// and the pairs before it count; every number is read with uWSGI's `uwsgi_str_num`
    /// formula, `Σ (c_i − 48) · 10^(len − 1 − i)` in wrapping `u64` arithmetic, where `c_i`
    /// is the byte as a C `char`, signed on x86-64 (so `0xC3` counts as −61), and a value
    /// of 20 or more bytes reads as 0 (uWSGI computes `10^len` as a `double`, and on x86-64
    /// the out-of-range conversion to `u64` gives 0: reproduced by compiling uWSGI's
    /// function with gcc on x86-64, not observed on the uWSGI binary). So a `u64` of 20
    /// digits (≥ 10^19) that [`encode`] writes comes back as 0 in this mode, as in uWSGI.
    /// `modifier1`/`modifier2` keep the low 8 bits. Use it on a router that must accept
    /// whatever real uWSGI subscribers and hand-written tools send.
    Compat,
    /// Only what a well-behaved subscriber sends: `modifier1` 224, `datasize` = body
    /// length, command 0 or 1, exactly tiled pairs, numbers of ASCII digits only (at least
    /// one) that fit their type (`u8` for `modifier1`/`modifier2`, `u64` otherwise), a
    /// `notify` of 1..=[`MAX_NOTIFY`] bytes, and a `sign` that is non-empty, the last pair,
    /// and accompanied by `unix`. Every uWSGI 2.0.21 datagram in the shared vectors passes.
    Strict,
}

/// A decoded datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Header byte 3: 0 is [`Command::Subscribe`]; in [`Mode::Compat`] any other value is
    /// [`Command::Unsubscribe`], in [`Mode::Strict`] only 1 is.
    pub command: Command,
    /// The pairs.
    pub request: Request,
    /// The bytes of the datagram the signature covers, computed as uWSGI does (see the
    /// [module docs](self#the-signed-region)): `Some(4 .. len − (8 + sign_len))` when the
    /// request carries a non-empty `sign`, otherwise `None`. Indices into the datagram
    /// given to [`decode`]; the range may be empty (then no signature can be valid).
    pub signed_region: Option<Range<usize>>,
}

/// Why a datagram could not be decoded, or a request could not be encoded.
///
/// From [`decode`]: the datagram is rejected. Decoding is a pure function, so nothing else
/// happened; a router drops the datagram (uWSGI drops them silently) and may count it by
/// [`WireError::reason`]. Causes: **junk** (a scanner, another protocol on the port), a
/// **broken or hostile sender** (oversized key, missing address), or, in [`Mode::Strict`]
/// only, a sender that uWSGI would tolerate but that does not follow the format.
///
/// From [`encode`]: the request cannot be sent as it is (an integration bug or bad
/// configuration on the sending side); nothing was produced. The variants marked "both"
/// come from either function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The datagram is shorter than the 4-byte header. Junk from the network.
    #[error("datagram of {len} bytes is shorter than the 4-byte header")]
    TooShort {
        /// The datagram's length.
        len: usize,
    },
    /// The datagram is longer than [`MAX_DATAGRAM`]: a uWSGI router would read only its
    /// first 4096 bytes and act on a truncated request. A broken sender or junk.
    #[error("datagram of {len} bytes exceeds the {MAX_DATAGRAM}-byte subscription receive buffer")]
    TooLarge {
        /// The datagram's length.
        len: usize,
    },
    /// [`Mode::Strict`]: header `modifier1` is not 224. Another uwsgi packet type or
    /// protocol on the subscription port (uWSGI would still process it).
    #[error("modifier1 is {found}, not 224")]
    BadModifier1 {
        /// The `modifier1` byte received.
        found: u8,
    },
    /// [`Mode::Strict`]: the header's `datasize` is not the body length (uWSGI ignores the
    /// field). A broken sender, or a datagram cut or padded on the way.
    #[error("header announces {datasize} body bytes, the datagram has {body}")]
    LengthMismatch {
        /// The header's `datasize`.
        datasize: u16,
        /// The actual body length (datagram length − 4).
        body: usize,
    },
    /// [`Mode::Strict`]: header byte 3 is neither 0 (subscribe) nor 1 (unsubscribe). uWSGI
    /// treats it as an unsubscribe; no uWSGI sender produces it.
    #[error("command byte is {found}, not 0 (subscribe) or 1 (unsubscribe)")]
    BadCommand {
        /// Header byte 3.
        found: u8,
    },
    /// [`Mode::Strict`]: the pairs do not tile the body exactly (uWSGI would keep the
    /// complete pairs before the defect). A broken sender or a truncated datagram; the
    /// offsets in the inner error are relative to the body.
    #[error("malformed body: {0}")]
    Malformed(DecodeError),
    /// [`Mode::Strict`]: a numeric value is not ASCII digits (at least one) fitting its
    /// type (`u8` for `modifier1`/`modifier2`, `u64` otherwise). uWSGI would turn it into
    /// some number (spec §1.6). A hand-written or broken sender.
    #[error("value of {key:?} is not a decimal number that fits its type")]
    InvalidNumber {
        /// The key: `modifier1`, `modifier2`, `cores`, `load`, `weight`, `unix`, `backup`
        /// or `clear`.
        key: &'static str,
    },
    /// Both: the `key` is longer than [`MAX_KEY`] bytes. uWSGI 2.0.21 corrupts its memory
    /// on such a subscribe and no router can look the key up (spec §2.9). A hostile or
    /// misconfigured sender.
    #[error("key of {len} bytes exceeds the {MAX_KEY}-byte limit")]
    KeyTooLong {
        /// The key's length.
        len: usize,
    },
    /// Both: the request has no `address`, or an empty one. uWSGI drops it (spec §2.3). A
    /// broken sender, or a truncated datagram.
    #[error("no address, or an empty one")]
    MissingAddress,
    /// Both: the `address` is longer than [`MAX_ADDRESS`] bytes; uWSGI drops it.
    #[error("address of {len} bytes exceeds the {MAX_ADDRESS}-byte limit")]
    AddressTooLong {
        /// The address's length.
        len: usize,
    },
    /// [`Mode::Strict`] and [`encode`]: `notify` is empty or longer than [`MAX_NOTIFY`]
    /// bytes. uWSGI ignores such a value; [`Mode::Compat`] reads it as `None`.
    #[error("notify path of {len} bytes is outside 1..={MAX_NOTIFY}")]
    NotifyLength {
        /// The value's length.
        len: usize,
    },
    /// [`Mode::Strict`] and [`encode`]: `sign` is present but empty. uWSGI treats the
    /// request as unsigned; no uWSGI sender produces it.
    #[error("empty signature")]
    EmptySignature,
    /// [`Mode::Strict`]: a `sign` pair is not the last pair, so the region uWSGI verifies
    /// (which assumes it is last) is not the signed body. uWSGI rejects such a request
    /// whenever it checks signatures (spec §3.2). A broken or hand-written sender.
    #[error("sign pair at datagram offset {offset} is not the last pair (expected at {expected})")]
    SignNotLast {
        /// Datagram offset of the (first) `sign` pair's key length.
        offset: usize,
        /// Where uWSGI assumes the winning `sign` pair starts: the end of the signed region.
        expected: usize,
    },
    /// [`Mode::Strict`] and [`encode`]: `sign` without a `unix` stamp. A uWSGI router
    /// checking signatures reads the stamp as 0 and rejects the request as replayed
    /// (spec §3.4); uWSGI subscribers always send both.
    #[error("sign without a unix stamp")]
    SignWithoutUnix,
    /// [`encode`]: the datagram would exceed [`MAX_DATAGRAM`], which a uWSGI router cannot
    /// receive whole. Some field (a path, the signature) is too large.
    #[error("datagram of {len} bytes would exceed the {MAX_DATAGRAM}-byte limit of uWSGI routers")]
    TooLargeToSend {
        /// The length the datagram would have had.
        len: usize,
    },
}

impl WireError {
    /// A short, stable, snake_case label per variant, for counting rejected datagrams:
    /// `too_short`, `too_large`, `bad_modifier1`, `length_mismatch`, `bad_command`,
    /// `malformed`, `invalid_number`, `key_too_long`, `missing_address`,
    /// `address_too_long`, `notify_length`, `empty_signature`, `sign_not_last`,
    /// `sign_without_unix`, `too_large_to_send`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "too_short",
            Self::TooLarge { .. } => "too_large",
            Self::BadModifier1 { .. } => "bad_modifier1",
            Self::LengthMismatch { .. } => "length_mismatch",
            Self::BadCommand { .. } => "bad_command",
            Self::Malformed(_) => "malformed",
            Self::InvalidNumber { .. } => "invalid_number",
            Self::KeyTooLong { .. } => "key_too_long",
            Self::MissingAddress => "missing_address",
            Self::AddressTooLong { .. } => "address_too_long",
            Self::NotifyLength { .. } => "notify_length",
            Self::EmptySignature => "empty_signature",
            Self::SignNotLast { .. } => "sign_not_last",
            Self::SignWithoutUnix => "sign_without_unix",
            Self::TooLargeToSend { .. } => "too_large_to_send",
        }
    }
}

/// The size of the `sign` pair minus its value: `u16 | "sign" | u16`.
const SIGN_PAIR_OVERHEAD: usize = 2 + 4 + 2;

/// uWSGI's `uwsgi_str_num` (core/utils.c) as compiled for x86-64: no validation.
///
/// ```c
/// uint64_t delta = pow(10, len);
/// for (i = 0; i < len; i++) { delta = delta / 10; num += delta * (str[i] - 48); }
/// ```
///
/// `pow(10, len)` is exact up to 10^19; above it the `double` exceeds `u64` and x86-64's
/// conversion gives 0, so every term is 0. `str[i]` is a signed `char`.
fn str_num(value: &[u8]) -> u64 {
    let Some(mut delta) = u32::try_from(value.len()).ok().and_then(|len| 10u64.checked_pow(len)) else {
        return 0;
    };
    let mut num = 0u64;
    for &b in value {
        delta /= 10;
        // `(char)b - 48` as an int, converted to uint64_t by the multiplication.
        let term = (i64::from(b as i8) - 48) as u64;
        num = num.wrapping_add(delta.wrapping_mul(term));
    }
    num
}

/// ASCII digits (at least one) as a `u64`; `None` on any other byte or on overflow.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() { n.checked_mul(10)?.checked_add(u64::from(b - b'0')) } else { None }
    })
}

/// The pairs of one datagram as read so far: last value wins, numbers already parsed.
#[derive(Default)]
struct Fields<'a> {
    key: &'a [u8],
    address: Option<&'a [u8]>,
    modifier1: u8,
    modifier2: u8,
    cores: u64,
    load: u64,
    weight: u64,
    sni_key: Option<&'a [u8]>,
    sni_crt: Option<&'a [u8]>,
    sni_ca: Option<&'a [u8]>,
    notify: Option<&'a [u8]>,
    unix: Option<u64>,
    sign: Option<&'a [u8]>,
    backup: Option<u64>,
    algo: Option<&'a [u8]>,
    proto: Option<&'a [u8]>,
    vassal: Option<&'a [u8]>,
    clear: bool,
}

impl<'a> Fields<'a> {
    /// Applies one pair, as uWSGI's `corerouter_manage_subscription` hook does (2.1 keys
    /// included). Only fails in strict mode, on a bad number.
    fn apply(&mut self, mode: Mode, key: &[u8], value: &'a [u8]) -> Result<(), WireError> {
        let num = |name: &'static str| match mode {
            Mode::Compat => Ok(str_num(value)),
            Mode::Strict => digits(value).ok_or(WireError::InvalidNumber { key: name }),
        };
        let num8 = |name: &'static str| match mode {
            // uWSGI assigns the u64 to a uint8_t field: the low 8 bits.
            Mode::Compat => Ok(str_num(value) as u8),
            Mode::Strict => {
                digits(value).and_then(|n| u8::try_from(n).ok()).ok_or(WireError::InvalidNumber { key: name })
            }
        };
        match key {
            b"key" => self.key = value,
            b"address" => self.address = Some(value),
            b"modifier1" => self.modifier1 = num8("modifier1")?,
            b"modifier2" => self.modifier2 = num8("modifier2")?,
            b"cores" => self.cores = num("cores")?,
            b"load" => self.load = num("load")?,
            b"weight" => self.weight = num("weight")?,
            b"unix" => self.unix = Some(num("unix")?),
            b"sign" => self.sign = Some(value),
            b"sni_key" => self.sni_key = Some(value),
            b"sni_crt" => self.sni_crt = Some(value),
            b"sni_ca" => self.sni_ca = Some(value),
            b"notify" => self.notify = Some(value),
            b"algo" => self.algo = Some(value),
            b"backup" => self.backup = Some(num("backup")?),
            b"proto" => self.proto = Some(value),
            b"vassal" => self.vassal = Some(value),
            b"clear" => self.clear = num("clear")? != 0,
            _ => {}
        }
        Ok(())
    }

    /// The checks both modes share, then the owned [`Request`].
    fn finish(self, mode: Mode) -> Result<Request, WireError> {
        if self.key.len() > MAX_KEY {
            return Err(WireError::KeyTooLong { len: self.key.len() });
        }
        let address = self.address.filter(|a| !a.is_empty()).ok_or(WireError::MissingAddress)?;
        if address.len() > MAX_ADDRESS {
            return Err(WireError::AddressTooLong { len: address.len() });
        }
        let notify = match self.notify {
            Some(n) if !(1..=MAX_NOTIFY).contains(&n.len()) => match mode {
                Mode::Compat => None,
                Mode::Strict => return Err(WireError::NotifyLength { len: n.len() }),
            },
            other => other,
        };
        Ok(Request {
            key: self.key.to_vec(),
            address: address.to_vec(),
            modifier1: self.modifier1,
            modifier2: self.modifier2,
            cores: self.cores,
            load: self.load,
            weight: self.weight,
            sni_key: self.sni_key.map(<[u8]>::to_vec),
            sni_crt: self.sni_crt.map(<[u8]>::to_vec),
            sni_ca: self.sni_ca.map(<[u8]>::to_vec),
            notify: notify.map(<[u8]>::to_vec),
            unix: self.unix,
            sign: self.sign.map(<[u8]>::to_vec),
            backup: self.backup,
            algo: self.algo.map(<[u8]>::to_vec),
            // uWSGI 2.1: `if (usr->proto_len > 0) node->proto = usr->proto[0]`.
            proto: self.proto.and_then(|p| p.first().copied()),
            vassal: self.vassal.map(<[u8]>::to_vec),
            clear: self.clear,
        })
    }
}

/// Reads pairs as uWSGI's `uwsgi_hooked_parse` (core/protocol.c) does, handing each
/// complete one to `f` with its body offset, and stops silently at the first defect.
fn for_each_pair_lenient<'a>(body: &'a [u8], mut f: impl FnMut(usize, &'a [u8], &'a [u8])) {
    let u16_at = |at: usize| body.get(at..at + 2).map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])));
    let end = body.len();
    let mut p = 0usize;
    while p < end {
        // `if (ptrbuf + 2 >= bufferend) return -1;`: a pair needs at least 3 bytes.
        if end - p < 3 {
            return;
        }
        let Some(klen) = u16_at(p) else { return };
        // `if (!keysize) return -1;`
        if klen == 0 {
            return;
        }
        let key_start = p + 2;
        let Some(key) = body.get(key_start..key_start + klen) else { return };
        let vlen_at = key_start + klen;
        let Some(vlen) = u16_at(vlen_at) else { return };
        let value_start = vlen_at + 2;
        let Some(value) = body.get(value_start..value_start + vlen) else { return };
        f(p, key, value);
        p = value_start + vlen;
    }
}

/// Decodes one received datagram (see the [module docs](self) for both modes). Never
/// panics, whatever the bytes.
///
/// Checks, in order: the length ([`WireError::TooLarge`], [`WireError::TooShort`]); in
/// strict mode the header ([`WireError::BadModifier1`], [`WireError::LengthMismatch`],
/// [`WireError::BadCommand`]), the tiling ([`WireError::Malformed`]) and the numbers as the
/// pairs are read ([`WireError::InvalidNumber`]); then the fields: [`WireError::KeyTooLong`],
/// [`WireError::MissingAddress`], [`WireError::AddressTooLong`], and in strict mode
/// [`WireError::NotifyLength`], [`WireError::EmptySignature`], [`WireError::SignNotLast`],
/// [`WireError::SignWithoutUnix`].
///
/// # Errors
///
/// Those above: the datagram is to be dropped.
pub fn decode(datagram: &[u8], mode: Mode) -> Result<Decoded, WireError> {
    let len = datagram.len();
    if len > MAX_DATAGRAM {
        return Err(WireError::TooLarge { len });
    }
    let Some((head, body)) = datagram.split_first_chunk::<4>() else {
        return Err(WireError::TooShort { len });
    };
    let header = Header::from_bytes(*head);
    let mut fields = Fields::default();
    // Body offset of the first `sign` pair (strict mode only).
    let mut first_sign = None;
    let command = match mode {
        Mode::Compat => {
            // uWSGI: `if (bbuf[3] == 0) subscribe else unsubscribe`.
            for_each_pair_lenient(body, |_, key, value| {
                // Compat numbers cannot fail.
                let _ = fields.apply(Mode::Compat, key, value);
            });
            if header.modifier2 == 0 { Command::Subscribe } else { Command::Unsubscribe }
        }
        Mode::Strict => {
            if header.modifier1 != MODIFIER1 {
                return Err(WireError::BadModifier1 { found: header.modifier1 });
            }
            if usize::from(header.datasize) != body.len() {
                return Err(WireError::LengthMismatch { datasize: header.datasize, body: body.len() });
            }
            let command = match header.modifier2 {
                0 => Command::Subscribe,
                1 => Command::Unsubscribe,
                found => return Err(WireError::BadCommand { found }),
            };
            // No pair count limit in uWSGI; the datagram size bounds the work.
            let vars = Vars::parse(body, MAX_DATAGRAM).map_err(WireError::Malformed)?;
            let mut offset = 0usize;
            for (key, value) in vars {
                if key == b"sign" && first_sign.is_none() {
                    first_sign = Some(offset);
                }
                fields.apply(Mode::Strict, key, value)?;
                offset += 4 + key.len() + value.len();
            }
            command
        }
    };
    // uWSGI: `if (usr.sign_len > 0) base_len = len - 4 - (2 + 4 + 2 + sign_len)`. The sign
    // pair lies inside the body, so this never underflows; checked all the same.
    let signed_region = fields
        .sign
        .filter(|s| !s.is_empty())
        .and_then(|s| len.checked_sub(SIGN_PAIR_OVERHEAD + s.len()))
        .filter(|&end| end >= Header::LEN)
        .map(|end| Header::LEN..end);
    let request = fields.finish(mode)?;
    if mode == Mode::Strict
        && let Some(sign) = &request.sign
    {
        if sign.is_empty() {
            return Err(WireError::EmptySignature);
        }
        // Where uWSGI assumes the pair starts (the region's end) against where it is.
        let expected = len.saturating_sub(SIGN_PAIR_OVERHEAD + sign.len());
        let offset = Header::LEN + first_sign.unwrap_or(0);
        if offset != expected {
            return Err(WireError::SignNotLast { offset, expected });
        }
        if request.unix.is_none() {
            return Err(WireError::SignWithoutUnix);
        }
    }
    Ok(Decoded { command, request, signed_region })
}

/// Checks what [`encode`] refuses, before anything is built.
fn check_encodable(req: &Request) -> Result<(), WireError> {
    if req.key.len() > MAX_KEY {
        return Err(WireError::KeyTooLong { len: req.key.len() });
    }
    if req.address.is_empty() {
        return Err(WireError::MissingAddress);
    }
    if req.address.len() > MAX_ADDRESS {
        return Err(WireError::AddressTooLong { len: req.address.len() });
    }
    if let Some(n) = &req.notify
        && !(1..=MAX_NOTIFY).contains(&n.len())
    {
        return Err(WireError::NotifyLength { len: n.len() });
    }
    if let Some(sign) = &req.sign {
        if sign.is_empty() {
            return Err(WireError::EmptySignature);
        }
        if req.unix.is_none() {
            return Err(WireError::SignWithoutUnix);
        }
    }
    Ok(())
}

/// Encodes a request as one datagram, byte for byte as uWSGI sends it: header `modifier1`
/// 224, `datasize` = body length, `modifier2` = `command` (0 or 1), and the pairs in
/// uWSGI's order (see the [module docs](self#sending)). Numbers are plain decimal; `proto`
/// is its one byte; `clear` is sent as `1` when set and omitted otherwise; `unix` and
/// `sign` are written as given (to sign a request, use [`crate::sign::sign_request`]).
///
/// # Errors
///
/// [`WireError::KeyTooLong`], [`WireError::MissingAddress`], [`WireError::AddressTooLong`],
/// [`WireError::NotifyLength`], [`WireError::EmptySignature`],
/// [`WireError::SignWithoutUnix`], and [`WireError::TooLargeToSend`] when the datagram
/// would exceed [`MAX_DATAGRAM`].
pub fn encode(command: Command, req: &Request) -> Result<Vec<u8>, WireError> {
    check_encodable(req)?;
    let [modifier1, modifier2, cores, load, weight] =
        [req.modifier1.into(), req.modifier2.into(), req.cores, req.load, req.weight]
            .map(|n: u64| n.to_string());
    let backup = req.backup.map(|n| n.to_string());
    let unix = req.unix.map(|n| n.to_string());
    let proto = req.proto.map(|p| [p]);
    let mut pairs: Vec<(&[u8], &[u8])> = vec![
        (b"key", &req.key),
        (b"address", &req.address),
        (b"modifier1", modifier1.as_bytes()),
        (b"modifier2", modifier2.as_bytes()),
        (b"cores", cores.as_bytes()),
        (b"load", load.as_bytes()),
        (b"weight", weight.as_bytes()),
    ];
    let optional: [(&[u8], Option<&[u8]>); 11] = [
        (b"backup", backup.as_ref().map(String::as_bytes)),
        (b"vassal", req.vassal.as_deref()),
        (b"sni_key", req.sni_key.as_deref()),
        (b"sni_crt", req.sni_crt.as_deref()),
        (b"sni_ca", req.sni_ca.as_deref()),
        (b"proto", proto.as_ref().map(<[u8; 1]>::as_slice)),
        (b"algo", req.algo.as_deref()),
        (b"notify", req.notify.as_deref()),
        (b"clear", req.clear.then_some(b"1".as_slice())),
        (b"unix", unix.as_ref().map(String::as_bytes)),
        (b"sign", req.sign.as_deref()),
    ];
    pairs.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
    let len = pairs.iter().fold(Header::LEN, |n, (k, v)| n.saturating_add(4 + k.len() + v.len()));
    if len > MAX_DATAGRAM {
        return Err(WireError::TooLargeToSend { len });
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[0; Header::LEN]);
    // Within MAX_DATAGRAM, so no key, value or body can exceed a u16: cannot fail.
    let datasize = encode_vars(&pairs, &mut out).map_err(|_| WireError::TooLargeToSend { len })?;
    out[..Header::LEN].copy_from_slice(&Header::new(MODIFIER1, datasize, command.modifier2()).to_bytes());
    Ok(out)
}

/// What comes before the key in a notify acknowledgement.
const ACK_PREFIX: &[u8] = b"[subscription ack] ";
/// What separates the key from the address in a notify acknowledgement.
const ACK_SEPARATOR: &[u8] = b" => new node: ";

/// The "new node" acknowledgement a router sends to the `notify` unix datagram socket of a
/// request that created a node (spec §1.7): plain ASCII, no header, no newline,
/// `[subscription ack] <key> => new node: <address>` (vector 09). Sent only on node
/// creation, never on refresh, unsubscribe or rejection.
pub fn notify_ack(key: &[u8], address: &[u8]) -> Vec<u8> {
    [ACK_PREFIX, key, ACK_SEPARATOR, address].concat()
}

/// Parses a notify acknowledgement ([`notify_ack`]) into its key and address; `None` if
/// `datagram` is not one. The key ends at the first `" => new node: "`, so a key
/// containing that text is misread (uWSGI's format is ambiguous there; real keys are host
/// names).
pub fn parse_notify_ack(datagram: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = datagram.strip_prefix(ACK_PREFIX)?;
    let at = rest.windows(ACK_SEPARATOR.len()).position(|w| w == ACK_SEPARATOR)?;
    Some((&rest[..at], &rest[at + ACK_SEPARATOR.len()..]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

    use super::*;

    #[test]
    fn str_num_matches_uwsgi() {
        assert_eq!(str_num(b""), 0);
        assert_eq!(str_num(b"0"), 0);
        assert_eq!(str_num(b"1795309356"), 1_795_309_356);
        assert_eq!(str_num(b"1a"), 59);
        assert_eq!(str_num(b"-1"), 0u64.wrapping_sub(29));
        assert_eq!(str_num(b"18446744073709551615"), 0, "20 bytes: pow() overflows the conversion");
        assert_eq!(str_num(b"9999999999999999999"), 9_999_999_999_999_999_999);
        // A signed char: 0xC3 is -61, so the term is -109.
        assert_eq!(str_num(b"\xc3"), 0u64.wrapping_sub(109));
        assert_eq!(str_num(b"300") as u8, 44);
    }

    #[test]
    fn digits_are_strict() {
        assert_eq!(digits(b""), None);
        assert_eq!(digits(b"007"), Some(7));
        assert_eq!(digits(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(digits(b"18446744073709551616"), None);
        assert_eq!(digits(b"+1"), None);
    }

    #[test]
    fn lenient_parser_stops_like_uwsgi() {
        let mut seen = Vec::new();
        // One pair, then 2 stray bytes (fewer than 3 left).
        for_each_pair_lenient(b"\x01\x00a\x01\x00b\x01\x00", |at, k, v| seen.push((at, k, v)));
        assert_eq!(seen, [(0, &b"a"[..], &b"b"[..])]);
        seen.clear();
        // A zero key length stops everything after it.
        for_each_pair_lenient(b"\x00\x00\x01\x00a\x00\x00", |at, k, v| seen.push((at, k, v)));
        assert!(seen.is_empty());
        // An empty value is fine, also last.
        for_each_pair_lenient(b"\x01\x00a\x00\x00", |at, k, v| seen.push((at, k, v)));
        assert_eq!(seen, [(0, &b"a"[..], &b""[..])]);
    }

    #[test]
    fn notify_ack_round_trip() {
        let ack = notify_ack(b"k", b"a:1");
        assert_eq!(ack, b"[subscription ack] k => new node: a:1");
        assert_eq!(parse_notify_ack(&ack), Some((&b"k"[..], &b"a:1"[..])));
        assert_eq!(parse_notify_ack(b"[subscription ack] k"), None);
        assert_eq!(parse_notify_ack(b"\xe0\x00\x00\x00"), None);
    }
}
