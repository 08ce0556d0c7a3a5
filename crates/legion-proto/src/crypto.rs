//! Announce encryption exactly as uWSGI 2.0.21 does it with OpenSSL's EVP API (spec §2).
//!
//! Everything here is re-exported from [`wire`](crate::wire), which is where it is
//! documented for users. This module only knows about bytes: ciphers, key and IV
//! derivation, padding. It never sees an announce.
//!
//! Compatibility was checked three ways: the captured datagrams of `vectors/legion`
//! (aes-128-cbc, aes-256-cbc, aes-128-cfb, bf-cbc), known answers produced by a C
//! program that calls OpenSSL 3.0 exactly as uWSGI's `uwsgi_legion_register` and
//! `uwsgi_legion_announce` do, for every cipher below (`tests/wire_vectors.rs`), and the
//! cipher names `EVP_get_cipherbyname` resolves (same test file).

use core::fmt;
use core::str::FromStr;

use aes::{Aes128, Aes192, Aes256};
use blowfish::Blowfish;
use cipher::array::Array;
use cipher::{
    Block, BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, InnerIvInit,
    StreamCipherCore,
};
use des::{Des, TdesEde2, TdesEde3};
use zeroize::Zeroizing;

use crate::wire::{DecryptError, WireError};

/// The block cipher of a [`CipherKind`].
///
/// Only block ciphers can be re-initialised per datagram the way uWSGI does (spec §2.2
/// item 5), so only block ciphers are offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// AES with a 128-bit key (OpenSSL `aes-128-*`). The recommended choice.
    Aes128,
    /// AES with a 192-bit key (OpenSSL `aes-192-*`).
    Aes192,
    /// AES with a 256-bit key (OpenSSL `aes-256-*`).
    Aes256,
    /// Blowfish with OpenSSL's default 128-bit key (`bf-*`, the example in uWSGI's docs).
    /// uWSGI on OpenSSL 3 needs the legacy provider for it (spec §7.1).
    Blowfish,
    /// Three-key triple DES (`des-ede3-*`, `des3`).
    ///
    /// The key is the secret padded with NUL bytes: a secret of 8 bytes or less leaves the
    /// 2nd and 3rd DES keys all-zero, and EDE with two equal keys collapses to single
    /// DES. Use a 24-byte secret if you must use it at all.
    DesEde3,
    /// Two-key triple DES (`des-ede-*`); same caveat as [`Algorithm::DesEde3`].
    DesEde,
    /// Single DES (`des-*`): a 56-bit key, broken. Legacy provider on OpenSSL 3.
    Des,
}

impl Algorithm {
    /// The key length in bytes: OpenSSL's `EVP_CIPHER_key_length`, the default for
    /// variable-key ciphers (Blowfish: 16). The secret is padded or cut to it.
    pub const fn key_len(self) -> usize {
        match self {
            Self::Aes128 | Self::Blowfish | Self::DesEde => 16,
            Self::Aes192 | Self::DesEde3 => 24,
            Self::Aes256 => 32,
            Self::Des => 8,
        }
    }

    /// The cipher's block size in bytes: 16 for AES, 8 for Blowfish and DES.
    pub const fn block_size(self) -> usize {
        match self {
            Self::Aes128 | Self::Aes192 | Self::Aes256 => 16,
            Self::Blowfish | Self::DesEde3 | Self::DesEde | Self::Des => 8,
        }
    }
}

/// The mode of operation of a [`CipherKind`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Mode {
    /// Cipher block chaining with PKCS#7 padding: the datagram grows to the next whole
    /// block, by a full block when the plaintext already fills its last block.
    Cbc,
    /// Electronic codebook with PKCS#7 padding, no IV. Equal plaintext blocks give equal
    /// ciphertext blocks.
    Ecb,
    /// Cipher feedback with full-block feedback (OpenSSL's `-cfb`, i.e. CFB128 for AES and
    /// CFB64 for Blowfish and DES). No padding.
    Cfb,
    /// Cipher feedback with 8-bit feedback (OpenSSL's `-cfb8`). No padding; one block
    /// encryption per byte.
    Cfb8,
    /// Output feedback. No padding.
    Ofb,
}

impl Mode {
    /// Whether the plaintext is padded (PKCS#7) to a whole number of blocks.
    pub const fn is_padded(self) -> bool {
        matches!(self, Self::Cbc | Self::Ecb)
    }

    /// Whether the mode takes an IV (every mode but ECB).
    pub const fn has_iv(self) -> bool {
        !matches!(self, Self::Ecb)
    }
}

/// A cipher that works for Legion announces: an [`Algorithm`] in a [`Mode`], named as
/// OpenSSL names it.
///
/// Obtained from a name with [`CipherKind::from_name`] (or `str::parse`); the supported
/// ones are listed by [`CipherKind::all`]. Displays as its canonical name.
///
/// ```
/// use legion_proto::wire::{Algorithm, CipherKind, Mode};
/// let kind: CipherKind = "BF".parse()?;
/// assert_eq!(kind.name(), "bf-cbc");
/// assert_eq!((kind.algorithm(), kind.mode()), (Algorithm::Blowfish, Mode::Cbc));
/// assert_eq!((kind.key_len(), kind.iv_len()), (16, 8));
/// assert_eq!(kind.ciphertext_len(192), 200);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CipherKind {
    algorithm: Algorithm,
    mode: Mode,
}

/// One supported cipher: its canonical name, what it is, and the other names OpenSSL
/// 3.0's `EVP_get_cipherbyname` resolves to it (aliases and OIDs), all lowercase.
struct Entry {
    name: &'static str,
    kind: CipherKind,
    aliases: &'static [&'static str],
}

const fn entry(
    name: &'static str,
    algorithm: Algorithm,
    mode: Mode,
    aliases: &'static [&'static str],
) -> Entry {
    Entry { name, kind: CipherKind { algorithm, mode }, aliases }
}

/// Every supported cipher. Names and aliases are those OpenSSL 3.0.19 resolves with the
/// default and legacy providers loaded (the `-cfb1` ciphers are refused, see
/// [`unsupported`]). Order: the table order of [`CipherKind::all`].
#[rustfmt::skip]
const TABLE: &[Entry] = {
    use Algorithm::*;
    use Mode::*;
    &[
        entry("aes-128-cbc", Aes128, Cbc, &["aes128", "2.16.840.1.101.3.4.1.2"]),
        entry("aes-128-ecb", Aes128, Ecb, &["2.16.840.1.101.3.4.1.1"]),
        entry("aes-128-cfb", Aes128, Cfb, &["2.16.840.1.101.3.4.1.4"]),
        entry("aes-128-cfb8", Aes128, Cfb8, &[]),
        entry("aes-128-ofb", Aes128, Ofb, &["2.16.840.1.101.3.4.1.3"]),
        entry("aes-192-cbc", Aes192, Cbc, &["aes192", "2.16.840.1.101.3.4.1.22"]),
        entry("aes-192-ecb", Aes192, Ecb, &["2.16.840.1.101.3.4.1.21"]),
        entry("aes-192-cfb", Aes192, Cfb, &["2.16.840.1.101.3.4.1.24"]),
        entry("aes-192-cfb8", Aes192, Cfb8, &[]),
        entry("aes-192-ofb", Aes192, Ofb, &["2.16.840.1.101.3.4.1.23"]),
        entry("aes-256-cbc", Aes256, Cbc, &["aes256", "2.16.840.1.101.3.4.1.42"]),
        entry("aes-256-ecb", Aes256, Ecb, &["2.16.840.1.101.3.4.1.41"]),
        entry("aes-256-cfb", Aes256, Cfb, &["2.16.840.1.101.3.4.1.44"]),
        entry("aes-256-cfb8", Aes256, Cfb8, &[]),
        entry("aes-256-ofb", Aes256, Ofb, &["2.16.840.1.101.3.4.1.43"]),
        entry("bf-cbc", Blowfish, Cbc, &["bf", "blowfish", "1.3.6.1.4.1.3029.1.2"]),
        entry("bf-ecb", Blowfish, Ecb, &[]),
        entry("bf-cfb", Blowfish, Cfb, &[]),
        entry("bf-ofb", Blowfish, Ofb, &[]),
        entry("des-ede3-cbc", DesEde3, Cbc, &["des3", "1.2.840.113549.3.7"]),
        entry("des-ede3", DesEde3, Ecb, &["des-ede3-ecb"]),
        entry("des-ede3-cfb", DesEde3, Cfb, &[]),
        entry("des-ede3-cfb8", DesEde3, Cfb8, &[]),
        entry("des-ede3-ofb", DesEde3, Ofb, &[]),
        entry("des-ede-cbc", DesEde, Cbc, &[]),
        entry("des-ede", DesEde, Ecb, &["des-ede-ecb", "1.3.14.3.2.17"]),
        entry("des-ede-cfb", DesEde, Cfb, &[]),
        entry("des-ede-ofb", DesEde, Ofb, &[]),
        entry("des-cbc", Des, Cbc, &["des", "1.3.14.3.2.7"]),
        entry("des-ecb", Des, Ecb, &["1.3.14.3.2.6"]),
        entry("des-cfb", Des, Cfb, &["1.3.14.3.2.9"]),
        entry("des-cfb8", Des, Cfb8, &[]),
        entry("des-ofb", Des, Ofb, &["1.3.14.3.2.8"]),
    ]
};

impl CipherKind {
    /// Looks a cipher up by name the way uWSGI does (`EVP_get_cipherbyname`, spec §2.2
    /// item 1): ASCII case-insensitive, with OpenSSL's aliases (`aes128` = `aes-128-cbc`,
    /// `bf` and `blowfish` = `bf-cbc`, `des3` = `des-ede3-cbc`, `des` = `des-cbc`,
    /// `des-ede3-ecb` = `des-ede3`, and the ciphers' OIDs). No trimming: `" bf"` is unknown,
    /// as it is to OpenSSL.
    ///
    /// # Errors
    ///
    /// * [`CryptoError::RefusedCipher`]: OpenSSL knows the name, but the cipher cannot
    ///   work per datagram: stream ciphers and CTR (the keystream position carries over
    ///   from one datagram to the next in uWSGI, so only the first one decrypts), AEAD
    ///   modes, XTS, key wrap, TLS-only composite ciphers (spec §2.3, edge case 4.18).
    /// * [`CryptoError::UnsupportedCipher`]: uWSGI can use it but this crate does not
    ///   implement it (Camellia, ARIA, SM4, SEED, CAST5, RC2, DESX, the 1-bit CFB modes).
    /// * [`CryptoError::UnknownCipher`]: OpenSSL has no cipher of that name, so uWSGI would
    ///   exit at startup (`unable to find algorithm/cipher`). This includes `null` and
    ///   `none`: Legion encryption cannot be turned off (spec §2.1 item 3).
    pub fn from_name(name: &str) -> Result<Self, CryptoError> {
        let found = TABLE.iter().find(|e| {
            e.name.eq_ignore_ascii_case(name) || e.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
        });
        if let Some(e) = found {
            return Ok(e.kind);
        }
        let lower = name.to_ascii_lowercase();
        if let Some(why) = refusal(&lower) {
            return Err(CryptoError::RefusedCipher { name: name.to_owned(), why });
        }
        if unsupported(&lower) {
            return Err(CryptoError::UnsupportedCipher { name: name.to_owned() });
        }
        Err(CryptoError::UnknownCipher { name: name.to_owned() })
    }

    /// Every supported cipher, AES first, in a fixed order.
    pub fn all() -> impl ExactSizeIterator<Item = Self> + Clone {
        TABLE.iter().map(|e| e.kind)
    }

    /// The canonical name: OpenSSL's short name in lowercase (`aes-128-cbc`, `bf-cbc`,
    /// `des-ede3` for three-key triple DES in ECB mode).
    pub fn name(self) -> &'static str {
        TABLE.iter().find(|e| e.kind == self).map_or("?", |e| e.name)
    }

    /// The block cipher.
    pub const fn algorithm(self) -> Algorithm {
        self.algorithm
    }

    /// The mode of operation.
    pub const fn mode(self) -> Mode {
        self.mode
    }

    /// The key length K in bytes (spec §2.2 item 2).
    pub const fn key_len(self) -> usize {
        self.algorithm.key_len()
    }

    /// The IV length N in bytes: the block size, or 0 for ECB (spec §2.2 item 2).
    pub const fn iv_len(self) -> usize {
        if self.mode.has_iv() { self.algorithm.block_size() } else { 0 }
    }

    /// The length of the ciphertext of a `plaintext_len`-byte plaintext: the next whole
    /// block, always at least one byte of padding, for CBC and ECB (192 → 208 with AES);
    /// unchanged for CFB and OFB (spec §2.2 item 6).
    pub const fn ciphertext_len(self, plaintext_len: usize) -> usize {
        if self.mode.is_padded() {
            let b = self.algorithm.block_size();
            (plaintext_len / b + 1) * b
        } else {
            plaintext_len
        }
    }
}

impl fmt::Debug for CipherKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CipherKind({})", self.name())
    }
}

impl fmt::Display for CipherKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CipherKind {
    type Err = CryptoError;

    fn from_str(name: &str) -> Result<Self, CryptoError> {
        Self::from_name(name)
    }
}

/// Why a cipher OpenSSL knows cannot carry Legion announces, if it cannot; `lower` is the
/// lowercased name. Checked against every name OpenSSL 3.0.19 resolves (the test
/// `cipher_names_resolve_as_openssl_resolves_them`).
fn refusal(lower: &str) -> Option<&'static str> {
    const STREAM: &str = "a stream cipher's keystream position carries over from one datagram to the next \
        in uWSGI 2.0.21, so only its first datagram can be decrypted (spec §2.3, edge case 4.18)";
    const AEAD: &str = "an AEAD mode needs a fresh nonce and a tag with every message, which Legion \
        announces cannot carry; uWSGI 2.0.21 sends garbage with it (spec §2.3, edge case 4.18)";
    if lower.contains("hmac") {
        return Some(
            "a TLS-only composite cipher: it needs a MAC key and TLS record framing that uWSGI \
             never sets up",
        );
    }
    if lower.starts_with("chacha20") {
        return Some(if lower.contains("poly1305") { AEAD } else { STREAM });
    }
    if lower.starts_with("rc4") || lower.contains("-ctr") {
        return Some(STREAM);
    }
    if ["gcm", "ccm", "ocb", "siv"].iter().any(|m| lower.contains(m)) {
        return Some(AEAD);
    }
    if lower.contains("xts") {
        return Some("XTS is a disk-sector mode that needs a tweak per message; uWSGI cannot use it");
    }
    if lower.contains("wrap") {
        return Some(
            "a key-wrap mode only wraps whole 8-byte blocks of key material; it cannot carry \
             announces",
        );
    }
    None
}

/// Whether `lower` names a cipher that OpenSSL has and uWSGI could use, but this crate
/// does not implement.
fn unsupported(lower: &str) -> bool {
    const FAMILIES: &[&str] = &["aria", "camellia", "sm4", "seed", "cast", "rc2", "desx"];
    FAMILIES.iter().any(|f| lower.starts_with(f))
        || (lower.ends_with("-cfb1") && (lower.starts_with("aes-") || lower.starts_with("des-")))
}

/// Why a cipher name or crypto spec was refused.
///
/// Returned by [`Crypto::new`], [`Crypto::from_spec`] and [`CipherKind::from_name`],
/// nothing else: it is always a configuration error, found before anything is sent, so
/// fix the configuration. uWSGI exits at startup for the same names. Messages name the
/// cipher but **never** contain the secret or the IV.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// OpenSSL has no cipher of this name, so uWSGI would refuse it too (`unable to find
    /// algorithm/cipher`, spec §2.1 item 3). Likely a typo, or an attempt to turn
    /// encryption off (`null`, `none`), which the protocol does not allow.
    #[error(
        "unknown cipher {name:?}: OpenSSL, and so uWSGI, has no cipher of that name \
         (encryption cannot be turned off; use e.g. aes-128-cbc)"
    )]
    UnknownCipher {
        /// The name as given.
        name: String,
    },
    /// OpenSSL has the cipher, but it cannot work per datagram (stream ciphers, CTR, AEAD
    /// modes, XTS, key wrap): uWSGI 2.0.21 starts with it and then fails to decrypt all
    /// but the first datagram, or sends garbage (spec §2.3, edge case 4.18).
    #[error("cipher {name:?} cannot be used for legion announces: {why}; use e.g. aes-128-cbc")]
    RefusedCipher {
        /// The name as given.
        name: String,
        /// Why it cannot work.
        why: &'static str,
    },
    /// uWSGI could use this cipher, but this crate does not implement it (Camellia, ARIA,
    /// SM4, SEED, CAST5, RC2, DESX and the 1-bit CFB modes). Switch every node to one of
    /// [`CipherKind::all`].
    #[error(
        "cipher {name:?} works with uWSGI but is not implemented by this crate; use one of \
         aes-128-cbc, aes-256-cbc, bf-cbc, des-ede3-cbc (or their ecb/cfb/cfb8/ofb modes)"
    )]
    UnsupportedCipher {
        /// The name as given.
        name: String,
    },
    /// The crypto spec is not `<cipher>:<secret>[ <iv>]` (spec §2.1). The spec itself is
    /// not quoted, since it holds the secret.
    #[error("invalid legion crypto spec: {why} (expected \"<cipher>:<secret>[ <iv>]\")")]
    InvalidSpec {
        /// What is wrong with it.
        why: &'static str,
    },
}

/// One key schedule, set up once from the derived key (the `zeroize` features of the
/// cipher crates wipe it on drop).
#[derive(Clone)]
#[allow(clippy::large_enum_variant, reason = "always boxed: `Crypto` holds a `Box<Keyed>`")]
enum Keyed {
    Aes128(Aes128),
    Aes192(Aes192),
    Aes256(Aes256),
    Blowfish(Blowfish),
    DesEde3(TdesEde3),
    DesEde(TdesEde2),
    Des(Des),
}

impl Keyed {
    /// Sets up `algorithm` with `key`, which has exactly `algorithm.key_len()` bytes.
    fn new(algorithm: Algorithm, key: &[u8]) -> Self {
        // `Array::from_fn` instead of a fallible slice conversion: the key always has the
        // right length here, and this way no error path exists at all.
        fn arr<N: cipher::array::ArraySize>(key: &[u8]) -> Array<u8, N> {
            Array::from_fn(|i| key.get(i).copied().unwrap_or(0))
        }
        use cipher::KeyInit;
        match algorithm {
            Algorithm::Aes128 => Self::Aes128(Aes128::new(&arr(key))),
            Algorithm::Aes192 => Self::Aes192(Aes192::new(&arr(key))),
            Algorithm::Aes256 => Self::Aes256(Aes256::new(&arr(key))),
            // Blowfish takes 4 to 56 bytes; it gets the 16 padded bytes, as OpenSSL's
            // `BF_set_key(key, 16)`: "hello" + 11 NULs is not the 5-byte key "hello"
            // (spec §2.2 table). The fallback cannot happen (16 is in range).
            Algorithm::Blowfish => {
                Self::Blowfish(Blowfish::new_from_slice(key).unwrap_or_else(|_| Blowfish::new(&arr(key))))
            }
            Algorithm::DesEde3 => Self::DesEde3(TdesEde3::new(&arr(key))),
            Algorithm::DesEde => Self::DesEde(TdesEde2::new(&arr(key))),
            // DES parity bits are ignored, as OpenSSL does (`DES_set_key_unchecked`).
            Algorithm::Des => Self::Des(Des::new(&arr(key))),
        }
    }
}

/// A configured legion cipher: the cipher, and the key and IV derived from the secret
/// exactly as uWSGI 2.0.21 derives them (spec §2.2).
///
/// * **Key** = the secret's bytes, padded with NUL bytes to the cipher's key length K, or
///   cut to K. No KDF, no hash, no salt: a short secret is a weak key.
/// * **IV** = the IV text, padded with ASCII `'0'` (0x30) to the block size N, or cut to
///   N; no IV gives N × `'0'`. ECB has no IV.
/// * Every datagram is encrypted on its own from that static IV, so encryption is
///   deterministic: equal announces give equal datagrams (spec §2.5).
///
/// uWSGI reads the secret and IV as C strings, so they cannot contain a NUL byte there;
/// this type takes any bytes, but a secret or IV with a NUL only interoperates with
/// other users of this crate.
///
/// `Debug` prints the cipher name only; the key schedule and derived key are wiped when
/// the value is dropped. Cloning copies the key.
///
/// ```
/// use legion_proto::wire::Crypto;
/// let crypto = Crypto::from_spec("bf-cbc:hello abcdefgh")?; // secret "hello", IV "abcdefgh"
/// assert_eq!(crypto.cipher_name(), "bf-cbc");
/// let sealed = crypto.encrypt(b"any bytes");
/// assert_eq!(sealed.len(), 16);
/// assert_eq!(crypto.decrypt(&sealed)?, b"any bytes");
/// assert!(!format!("{crypto:?}").contains("hello"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Crypto {
    kind: CipherKind,
    keyed: Box<Keyed>,
    iv: Zeroizing<Vec<u8>>,
    /// The derived key, kept only for the vector tests; in normal builds only the key
    /// schedule in `keyed` outlives the constructor.
    #[cfg(test)]
    key: Zeroizing<Vec<u8>>,
}

impl Crypto {
    /// A cipher by OpenSSL name (see [`CipherKind::from_name`]), with the key and IV
    /// derived from `secret` and `iv` as uWSGI derives them.
    ///
    /// # Errors
    ///
    /// [`CryptoError::UnknownCipher`], [`CryptoError::RefusedCipher`] or
    /// [`CryptoError::UnsupportedCipher`] for the name. Any secret and IV are accepted,
    /// including empty ones (an empty secret is an all-zero key, which uWSGI accepts too).
    pub fn new(cipher_name: &str, secret: &[u8], iv: Option<&[u8]>) -> Result<Self, CryptoError> {
        Ok(Self::with_kind(CipherKind::from_name(cipher_name)?, secret, iv))
    }

    /// A cipher of a kind already looked up, with the key and IV derived as in
    /// [`Crypto::new`].
    pub fn with_kind(kind: CipherKind, secret: &[u8], iv: Option<&[u8]>) -> Self {
        // Spec §2.2 item 3: secret bytes, NUL-padded or cut to K.
        let mut key = Zeroizing::new(vec![0u8; kind.key_len()]);
        let n = secret.len().min(key.len());
        key[..n].copy_from_slice(&secret[..n]);
        // Item 4: the IV text, '0'-padded or cut to N (N = 0 for ECB).
        let mut iv_bytes = Zeroizing::new(vec![b'0'; kind.iv_len()]);
        let iv = iv.unwrap_or_default();
        let n = iv.len().min(iv_bytes.len());
        iv_bytes[..n].copy_from_slice(&iv[..n]);
        let keyed = Box::new(Keyed::new(kind.algorithm, &key));
        Self {
            kind,
            keyed,
            iv: iv_bytes,
            #[cfg(test)]
            key,
        }
    }

    /// Parses the 4th field of uWSGI's `--legion` option, `<cipher>:<secret>[ <iv>]`
    /// (spec §2.1): the cipher name runs to the first `:`; the secret from there to the
    /// next space; the IV is everything after that space and may itself contain spaces.
    ///
    /// ```
    /// use legion_proto::wire::Crypto;
    /// assert_eq!(Crypto::from_spec("aes-128-cbc:secret")?.cipher_name(), "aes-128-cbc");
    /// assert_eq!(Crypto::from_spec("AES256:s3cr3t my iv")?.cipher_name(), "aes-256-cbc");
    /// assert!(Crypto::from_spec("null:secret").is_err()); // encryption cannot be turned off
    /// assert!(Crypto::from_spec("aes-128-ctr:secret").is_err()); // breaks after one datagram
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`CryptoError::InvalidSpec`] without a `:` or with an empty cipher name, otherwise
    /// as [`Crypto::new`].
    pub fn from_spec(spec: &str) -> Result<Self, CryptoError> {
        // uWSGI core/legion.c, uwsgi_opt_legion: `strchr(algo_secret, ':')`, then in
        // uwsgi_legion_register: `iv = strchr(secret, ' ')`.
        let Some((cipher_name, rest)) = spec.split_once(':') else {
            return Err(CryptoError::InvalidSpec { why: "no ':' between the cipher name and the secret" });
        };
        if cipher_name.is_empty() {
            return Err(CryptoError::InvalidSpec { why: "empty cipher name" });
        }
        let (secret, iv) = match rest.split_once(' ') {
            Some((secret, iv)) => (secret, Some(iv.as_bytes())),
            None => (rest, None),
        };
        Self::new(cipher_name, secret.as_bytes(), iv)
    }

    /// The cipher.
    pub fn kind(&self) -> CipherKind {
        self.kind
    }

    /// The cipher's canonical name, e.g. `"aes-128-cbc"` for `aes128`.
    pub fn cipher_name(&self) -> &'static str {
        self.kind.name()
    }

    /// The derived key (K bytes). For the vector tests only.
    #[cfg(test)]
    pub(crate) fn key_bytes(&self) -> &[u8] {
        &self.key
    }

    /// The derived IV (N bytes, empty for ECB). For the vector tests only.
    #[cfg(test)]
    pub(crate) fn iv_bytes(&self) -> &[u8] {
        &self.iv
    }

    /// Encrypts one datagram body, from the static IV, as uWSGI's
    /// `EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, NULL)` + `Update` + `Final` does: with
    /// PKCS#7 padding for CBC and ECB ([`CipherKind::ciphertext_len`] bytes).
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let (mode, iv) = (self.kind.mode, &self.iv[..]);
        match &*self.keyed {
            Keyed::Aes128(c) => encrypt_with(c, mode, iv, plaintext),
            Keyed::Aes192(c) => encrypt_with(c, mode, iv, plaintext),
            Keyed::Aes256(c) => encrypt_with(c, mode, iv, plaintext),
            Keyed::Blowfish(c) => encrypt_with(c, mode, iv, plaintext),
            Keyed::DesEde3(c) => encrypt_with(c, mode, iv, plaintext),
            Keyed::DesEde(c) => encrypt_with(c, mode, iv, plaintext),
            Keyed::Des(c) => encrypt_with(c, mode, iv, plaintext),
        }
    }

    /// Decrypts one datagram body, from the static IV, checking the padding strictly as
    /// OpenSSL's `EVP_DecryptFinal_ex` does. Never panics, whatever the input.
    ///
    /// # Errors
    ///
    /// [`WireError::Decrypt`]: for CBC and ECB, a ciphertext that is empty or not a whole
    /// number of blocks ([`DecryptError::BadLength`]), or whose padding is wrong
    /// ([`DecryptError::BadPadding`], what a wrong secret or cipher almost always gives).
    /// CFB and OFB have no padding, so they decrypt anything; a wrong key then shows up
    /// later, as a length mismatch or a parse error.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, WireError> {
        let (mode, iv) = (self.kind.mode, &self.iv[..]);
        let result = match &*self.keyed {
            Keyed::Aes128(c) => decrypt_with(c, mode, iv, ciphertext),
            Keyed::Aes192(c) => decrypt_with(c, mode, iv, ciphertext),
            Keyed::Aes256(c) => decrypt_with(c, mode, iv, ciphertext),
            Keyed::Blowfish(c) => decrypt_with(c, mode, iv, ciphertext),
            Keyed::DesEde3(c) => decrypt_with(c, mode, iv, ciphertext),
            Keyed::DesEde(c) => decrypt_with(c, mode, iv, ciphertext),
            Keyed::Des(c) => decrypt_with(c, mode, iv, ciphertext),
        };
        result.map_err(WireError::Decrypt)
    }
}

impl fmt::Debug for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key, the secret or the IV (STYLE.md §3.3 "Secrets are not printed").
        f.debug_struct("Crypto").field("cipher", &self.cipher_name()).field("key", &"<redacted>").finish()
    }
}

/// The IV as the mode's array type; `iv` has exactly the block size (it was derived so).
fn iv_block<C: BlockCipherEncrypt>(iv: &[u8]) -> Block<C> {
    Array::from_fn(|i| iv.get(i).copied().unwrap_or(b'0'))
}

/// OFB is its own inverse: XOR with the keystream.
fn ofb_apply<C: BlockCipherEncrypt + Clone>(cipher: &C, iv: &[u8], buf: &mut [u8]) {
    // The core, not `ofb::Ofb`: the buffering wrapper adds bounds on the block size that a
    // generic `C` cannot state. `apply_keystream_partial` cannot fail for OFB, whose
    // keystream has no end (`remaining_blocks()` is `None`).
    ofb::OfbCore::inner_iv_init(cipher.clone(), &iv_block::<C>(iv)).apply_keystream_partial(buf.into());
}

fn encrypt_with<C>(cipher: &C, mode: Mode, iv: &[u8], plaintext: &[u8]) -> Vec<u8>
where
    C: BlockCipherEncrypt + BlockCipherDecrypt + Clone,
{
    let mut buf = plaintext.to_vec();
    match mode {
        Mode::Cbc | Mode::Ecb => {
            // PKCS#7, as OpenSSL pads by default: 1..=B bytes, each holding the count.
            let b = C::block_size();
            let pad = b - plaintext.len() % b;
            buf.resize(plaintext.len() + pad, pad as u8);
            let (blocks, _) = Array::slice_as_chunks_mut(&mut buf);
            if mode == Mode::Cbc {
                cbc::Encryptor::<C>::inner_iv_init(cipher.clone(), &iv_block::<C>(iv)).encrypt_blocks(blocks);
            } else {
                cipher.encrypt_blocks(blocks);
            }
        }
        Mode::Cfb => {
            cfb_mode::Encryptor::<C>::inner_iv_init(cipher.clone(), &iv_block::<C>(iv)).encrypt(&mut buf)
        }
        Mode::Cfb8 => {
            cfb8::Encryptor::<C>::inner_iv_init(cipher.clone(), &iv_block::<C>(iv)).encrypt(&mut buf)
        }
        Mode::Ofb => ofb_apply(cipher, iv, &mut buf),
    }
    buf
}

fn decrypt_with<C>(cipher: &C, mode: Mode, iv: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, DecryptError>
where
    C: BlockCipherEncrypt + BlockCipherDecrypt + Clone,
{
    let mut buf = ciphertext.to_vec();
    match mode {
        Mode::Cbc | Mode::Ecb => {
            let b = C::block_size();
            // OpenSSL: "wrong final block length" (also for an empty ciphertext).
            if buf.is_empty() || !buf.len().is_multiple_of(b) {
                return Err(DecryptError::BadLength { len: buf.len(), block_size: b });
            }
            let (blocks, _) = Array::slice_as_chunks_mut(&mut buf);
            if mode == Mode::Cbc {
                cbc::Decryptor::<C>::inner_iv_init(cipher.clone(), &iv_block::<C>(iv)).decrypt_blocks(blocks);
            } else {
                cipher.decrypt_blocks(blocks);
            }
            // OpenSSL `EVP_DecryptFinal_ex`: "bad decrypt" unless the last byte n is in
            // 1..=B and the last n bytes all equal n.
            let pad = buf.last().copied().map_or(0, usize::from);
            let ok = (1..=b).contains(&pad) && buf[buf.len() - pad..].iter().all(|&x| usize::from(x) == pad);
            if !ok {
                return Err(DecryptError::BadPadding);
            }
            buf.truncate(buf.len() - pad);
        }
        Mode::Cfb => {
            cfb_mode::Decryptor::<C>::inner_iv_init(cipher.clone(), &iv_block::<C>(iv)).decrypt(&mut buf)
        }
        Mode::Cfb8 => {
            cfb8::Decryptor::<C>::inner_iv_init(cipher.clone(), &iv_block::<C>(iv)).decrypt(&mut buf)
        }
        Mode::Ofb => ofb_apply(cipher, iv, &mut buf),
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Spec §2.2 table and every `key_hex`/`iv_hex` of `vectors/legion/index.json`. (The
    /// integration tests check the same derivation through the captured ciphertexts.)
    #[test]
    fn key_and_iv_derivation_matches_the_vectors() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/vectors/legion/index.json");
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("shared legion vectors not found at {path}: {e}"));
        let index: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut checked = 0;
        for v in index.as_array().unwrap() {
            let Some(spec) = v["crypt"].as_str() else { continue };
            let c = Crypto::from_spec(spec).unwrap();
            assert_eq!(c.key_bytes(), hex(v["key_hex"].as_str().unwrap()), "{spec}");
            assert_eq!(c.iv_bytes(), hex(v["iv_hex"].as_str().unwrap()), "{spec}");
            checked += 1;
        }
        assert_eq!(checked, 11);
        // Spec §2.2 table rows not in the vectors, and ECB's missing IV.
        let c = Crypto::from_spec("aes-256-cbc:s3cr3t").unwrap();
        assert_eq!(c.key_bytes(), [&b"s3cr3t"[..], &[0; 26]].concat());
        let c = Crypto::new("aes-128-ecb", b"k", Some(b"ignored")).unwrap();
        assert_eq!((c.key_bytes().len(), c.iv_bytes()), (16, &b""[..]));
        let c = Crypto::new("des3", b"", Some(b"12")).unwrap();
        assert_eq!((c.key_bytes(), c.iv_bytes()), (&[0u8; 24][..], &b"12000000"[..]));
    }

    #[test]
    fn every_table_name_and_alias_is_lowercase_unique_and_round_trips() {
        let mut names: Vec<&str> =
            TABLE.iter().flat_map(|e| core::iter::once(e.name).chain(e.aliases.iter().copied())).collect();
        assert!(names.iter().all(|n| *n == n.to_ascii_lowercase()));
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total, "duplicate name");
        for kind in CipherKind::all() {
            assert_eq!(CipherKind::from_name(kind.name()).unwrap(), kind);
            assert!(kind.key_len() > 0);
            assert_eq!(refusal(kind.name()), None);
            assert!(!unsupported(kind.name()));
        }
        assert_eq!(CipherKind::all().len(), 33);
    }
}
