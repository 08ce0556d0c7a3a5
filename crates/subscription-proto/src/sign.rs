//! Signed subscriptions (spec §3): RSA PKCS#1 v1.5 signatures over the body, with a digest
//! both sides agree on out of band.
//!
//! A uWSGI subscriber configured with `sign=DIGEST:private.pem` appends a `unix` pair (its
//! clock + the command: 1 s later for an unsubscribe), signs every body byte up to there
//! with OpenSSL's `EVP_Sign*` (RSASSA-PKCS1-v1_5 with the digest), and appends the
//! signature as the last pair, `sign` (spec §3.2). The header, and so the command, is not
//! covered. A router started with `--subscriptions-sign-check DIGEST:DIR` verifies it with
//! the public key `DIR/<sanitized key>.pem` ([`pem_file_name`]). The digest is not carried in
//! the datagram: a SHA1 signature does not verify under SHA256 (spec §3.1).
//!
//! RSA PKCS#1 v1.5 is deterministic, so [`sign_request`] reproduces uWSGI's datagrams byte
//! for byte (vectors 05–07).
//!
//! ```
//! use subscription_proto::{Command, Request, sign::{self, Digest, Signer}, wire::{self, Mode}};
//!
//! # let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"),
//! #     "/../../../shared/vectors/subscription/keys/TEST-ONLY-subscriber-private.pem"))?;
//! let signer = Signer::from_pem(Digest::from_name("SHA1")?, &pem)?;
//! let req = Request {
//!     key: b"secure.test".to_vec(),
//!     address: b"127.0.0.1:42020".to_vec(),
//!     cores: 1,
//!     ..Request::default()
//! };
//! let now = 1_795_309_356; // the caller's clock, in seconds
//! let datagram = sign::sign_request(Command::Subscribe, &req, &signer, sign::unix_stamp(now, Command::Subscribe))?;
//!
//! // The router side: decode, then verify the region uWSGI would verify.
//! let decoded = wire::decode(&datagram, Mode::Strict)?;
//! assert_eq!(decoded.signed_region, Some(4..124));
//! assert!(signer.verifier().verify_decoded(&datagram, &decoded));
//! assert_eq!(sign::pem_file_name(b"secure.test:8000"), "secure.test_8000.pem");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Keys and digests
//!
//! * Digests: MD5, SHA1, SHA224, SHA256, SHA384 and SHA512 under every name OpenSSL 3's
//!   `EVP_get_digestbyname` gives them, case-insensitively ([`Digest::from_name`]). OpenSSL
//!   knows more (SHA3, SHA512/224, RIPEMD160, SM3, …); they are refused.
//! * Private keys: unencrypted PEM, PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`.
//! * Public keys: PEM `PUBLIC KEY` (SubjectPublicKeyInfo, what `openssl rsa -pubout` writes
//!   and the only form uWSGI's `PEM_read_PUBKEY` reads) or PKCS#1 `RSA PUBLIC KEY`, up to
//!   16384 bits.
//! * As OpenSSL's `PEM_read_*`, text before the first `-----BEGIN ` line is skipped.
//! * EC keys (ECDSA, which uWSGI also supports) are not: [`SignError::UnsupportedKeyType`].
//!
//! Signing uses no blinding (this crate has no randomness source): fine for a subscriber
//! signing its own announces, but do not expose a [`Signer`] as a signing oracle to
//! untrusted, timing-capable parties (RUSTSEC-2023-0071 concerns the `rsa` crate's private
//! key operations). Verification uses only the public key.

use core::fmt;
use core::str::FromStr;

use rsa::pkcs1::{self, DecodeRsaPrivateKey};
use rsa::pkcs8::spki::SubjectPublicKeyInfoRef;
use rsa::pkcs8::{ObjectIdentifier, PrivateKeyInfo, SecretDocument};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::Digest as _;

use crate::request::{Command, Request};
use crate::wire::{self, Decoded, WireError};

/// The largest RSA public key [`Verifier::from_pem`] accepts, in bits.
pub const MAX_PUBLIC_KEY_BITS: usize = 16384;

/// Why a digest name, a key or a signing request was refused.
///
/// All come from configuration (a digest name, a key file), never from the network: fix
/// the configuration. Nothing was created.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The digest name is not one this crate supports (it may still be one OpenSSL knows,
    /// such as SHA3-256). A typo or an exotic choice in the configuration.
    #[error("digest {name:?} is not supported (supported: md5, sha1, sha224, sha256, sha384, sha512)")]
    UnsupportedDigest {
        /// The name as given.
        name: String,
    },
    /// A signing spec is not `DIGEST:FILE` (uWSGI: `invalid RSA signature syntax, must be:
    /// <digest>:<pemfile>`).
    #[error("signing spec {spec:?} is not DIGEST:FILE")]
    BadSpec {
        /// The spec as given.
        spec: String,
    },
    /// No PEM block (`-----BEGIN …-----` … `-----END …-----`) in the key data: not a PEM
    /// file, or a DER file.
    #[error("no PEM block in the key data")]
    NoPem,
    /// The PEM block holds something else than the expected kind of key (a certificate, a
    /// public key given as a private one, …).
    #[error("PEM block {label:?} is not a {expected}")]
    UnexpectedPem {
        /// The block's label, e.g. `CERTIFICATE`.
        label: String,
        /// What was expected.
        expected: &'static str,
    },
    /// An encrypted private key: uWSGI reads keys without a passphrase, and so does this
    /// crate. Decrypt it with `openssl pkey`.
    #[error("encrypted private keys are not supported")]
    EncryptedKey,
    /// A key of another algorithm than RSA (EC, Ed25519, DSA, RSA-PSS, …).
    #[error("{algorithm} keys are not supported, only RSA")]
    UnsupportedKeyType {
        /// The algorithm's name, or its OID when it has no well-known name.
        algorithm: String,
    },
    /// The PEM block's contents are not a valid RSA key of the kind its label says (a
    /// corrupted file, a multi-prime key, a public key over [`MAX_PUBLIC_KEY_BITS`]).
    #[error("invalid {label} data")]
    InvalidKey {
        /// The PEM label.
        label: String,
    },
    /// The RSA key is too small for a PKCS#1 v1.5 signature with this digest (the modulus
    /// must hold the digest, its ASN.1 prefix and 11 bytes of padding).
    #[error("a {bits}-bit RSA key is too small for {digest} signatures")]
    KeyTooSmall {
        /// The key's modulus size.
        bits: usize,
        /// The digest.
        digest: Digest,
    },
}

impl SignError {
    /// A short, stable, snake_case label per variant: `unsupported_digest`, `bad_spec`,
    /// `no_pem`, `unexpected_pem`, `encrypted_key`, `unsupported_key_type`, `invalid_key`,
    /// `key_too_small`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnsupportedDigest { .. } => "unsupported_digest",
            Self::BadSpec { .. } => "bad_spec",
            Self::NoPem => "no_pem",
            Self::UnexpectedPem { .. } => "unexpected_pem",
            Self::EncryptedKey => "encrypted_key",
            Self::UnsupportedKeyType { .. } => "unsupported_key_type",
            Self::InvalidKey { .. } => "invalid_key",
            Self::KeyTooSmall { .. } => "key_too_small",
        }
    }
}

/// The message digest of a signature: the `DIGEST` of uWSGI's `DIGEST:file` (spec §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Digest {
    /// MD5 (weak; for old setups only).
    Md5,
    /// SHA-1, what uWSGI's documentation uses (`SHA1:`).
    Sha1,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Digest {
    /// Every supported digest.
    pub const ALL: [Self; 6] =
        [Self::Md5, Self::Sha1, Self::Sha224, Self::Sha256, Self::Sha384, Self::Sha512];

    /// The digest OpenSSL 3's `EVP_get_digestbyname` returns for `name`, compared
    /// case-insensitively: the short and long names (`SHA256`, `sha256`), the provider
    /// aliases (`SHA-256`, `SHA2-256`), the signature aliases (`RSA-SHA256`,
    /// `sha256WithRSAEncryption`), the legacy ones (`ssl3-sha1`, `RSA-SHA1-2`) and the
    /// dotted OID (`2.16.840.1.101.3.4.2.1`). Checked against OpenSSL 3.0.19.
    ///
    /// # Errors
    ///
    /// [`SignError::UnsupportedDigest`] for any other name, including digests OpenSSL has
    /// but this crate does not (SHA3-*, SHA512-224, RIPEMD160, …).
    pub fn from_name(name: &str) -> Result<Self, SignError> {
        const NAMES: [(Digest, &[&str]); 6] = [
            (Digest::Md5, &["md5", "ssl3-md5", "rsa-md5", "md5withrsaencryption", "1.2.840.113549.2.5"]),
            (
                Digest::Sha1,
                &[
                    "sha1",
                    "sha-1",
                    "ssl3-sha1",
                    "rsa-sha1",
                    "rsa-sha1-2",
                    "sha1withrsaencryption",
                    "1.3.14.3.2.26",
                ],
            ),
            (
                Digest::Sha224,
                &[
                    "sha224",
                    "sha-224",
                    "sha2-224",
                    "rsa-sha224",
                    "sha224withrsaencryption",
                    "2.16.840.1.101.3.4.2.4",
                ],
            ),
            (
                Digest::Sha256,
                &[
                    "sha256",
                    "sha-256",
                    "sha2-256",
                    "rsa-sha256",
                    "sha256withrsaencryption",
                    "2.16.840.1.101.3.4.2.1",
                ],
            ),
            (
                Digest::Sha384,
                &[
                    "sha384",
                    "sha-384",
                    "sha2-384",
                    "rsa-sha384",
                    "sha384withrsaencryption",
                    "2.16.840.1.101.3.4.2.2",
                ],
            ),
            (
                Digest::Sha512,
                &[
                    "sha512",
                    "sha-512",
                    "sha2-512",
                    "rsa-sha512",
                    "sha512withrsaencryption",
                    "2.16.840.1.101.3.4.2.3",
                ],
            ),
        ];
        NAMES
            .iter()
            .find(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            .map(|(d, _)| *d)
            .ok_or_else(|| SignError::UnsupportedDigest { name: name.to_owned() })
    }

    /// OpenSSL's canonical name: `MD5`, `SHA1`, `SHA224`, `SHA256`, `SHA384`, `SHA512`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha1 => "SHA1",
            Self::Sha224 => "SHA224",
            Self::Sha256 => "SHA256",
            Self::Sha384 => "SHA384",
            Self::Sha512 => "SHA512",
        }
    }

    /// The digest's output length in bytes.
    pub const fn output_len(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha1 => 20,
            Self::Sha224 => 28,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    /// The PKCS#1 v1.5 scheme (DigestInfo prefix) for this digest.
    fn scheme(self) -> Pkcs1v15Sign {
        match self {
            Self::Md5 => Pkcs1v15Sign::new::<md5::Md5>(),
            Self::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
            Self::Sha224 => Pkcs1v15Sign::new::<sha2::Sha224>(),
            Self::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
            Self::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
            Self::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
        }
    }

    /// The digest of `data`.
    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Md5 => md5::Md5::digest(data).to_vec(),
            Self::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Self::Sha224 => sha2::Sha224::digest(data).to_vec(),
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// Refuses a key whose modulus cannot hold a PKCS#1 v1.5 signature of this digest
    /// (RFC 8017 §9.2: `emLen ≥ tLen + 11`).
    fn check_key_size(self, key: &impl PublicKeyParts) -> Result<(), SignError> {
        let t_len = self.scheme().prefix.len() + self.output_len();
        if key.size() < t_len + 11 {
            return Err(SignError::KeyTooSmall { bits: key.n().bits(), digest: self });
        }
        Ok(())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Digest {
    type Err = SignError;

    fn from_str(s: &str) -> Result<Self, SignError> {
        Self::from_name(s)
    }
}

/// Splits a uWSGI signing spec, `DIGEST:FILE` (`--subscribe2 …,sign=SHA1:keys/priv.pem`,
/// `--subscribe-to SERVER:KEY,MODIFIER1,SHA1:keys/priv.pem`, and the router's
/// `--subscriptions-sign-check SHA1:DIR`), at its first `:` as uWSGI does. Returns the
/// digest and the path; reading the file is the caller's business.
///
/// # Errors
///
/// [`SignError::BadSpec`] without a `:`, [`SignError::UnsupportedDigest`].
pub fn split_spec(spec: &str) -> Result<(Digest, &str), SignError> {
    let (digest, path) = spec.split_once(':').ok_or_else(|| SignError::BadSpec { spec: spec.to_owned() })?;
    Ok((Digest::from_name(digest)?, path))
}

/// The file name a router looks up for a pool's public key (spec §3.1, uWSGI
/// `uwsgi_sanitize_cert_filename`): every byte of `key` outside `[0-9A-Za-z._-]` becomes
/// `_`, then `.pem`. `secure.test:8000` → `secure.test_8000.pem`.
pub fn pem_file_name(key: &[u8]) -> String {
    let mut name: String =
        key.iter()
            .map(|&b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') { char::from(b) } else { '_' }
            })
            .collect();
    name.push_str(".pem");
    name
}

/// The `unix` stamp uWSGI subscribers send: their clock in seconds plus the command's
/// `modifier2` (so an unsubscribe carries now + 1, spec §1.4, §3.2).
pub const fn unix_stamp(now_secs: u64, command: Command) -> u64 {
    now_secs.saturating_add(command.modifier2() as u64)
}

/// The first PEM block, skipping anything before it as OpenSSL's `PEM_read_*` do: its
/// label and its text.
fn pem_block(input: &[u8]) -> Result<(&str, &str), SignError> {
    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    let start = find(input, BEGIN).ok_or(SignError::NoPem)?;
    let rest = &input[start..];
    let end = find(rest, END).ok_or(SignError::NoPem)?;
    let close = find(&rest[end + END.len()..], b"-----").ok_or(SignError::NoPem)?;
    let block = &rest[..end + END.len() + close + 5];
    // RFC 1421 headers: OpenSSL's traditional encrypted keys.
    if find(block, b"Proc-Type: 4,ENCRYPTED").is_some() {
        return Err(SignError::EncryptedKey);
    }
    let block = core::str::from_utf8(block).map_err(|_| SignError::NoPem)?;
    let label = block.get(BEGIN.len()..).and_then(|l| l.split("-----").next()).unwrap_or_default();
    Ok((label, block))
}

/// The DER contents of a PEM block (wiped on drop).
fn pem_der(label: &str, block: &str) -> Result<SecretDocument, SignError> {
    SecretDocument::from_pem(block)
        .map(|(_, doc)| doc)
        .map_err(|_| SignError::InvalidKey { label: label.to_owned() })
}

/// A well-known name for a key algorithm OID, else the dotted OID.
fn algorithm_name(oid: ObjectIdentifier) -> String {
    match oid.to_string().as_str() {
        "1.2.840.10045.2.1" => "EC".to_owned(),
        "1.3.101.112" => "Ed25519".to_owned(),
        "1.3.101.113" => "Ed448".to_owned(),
        "1.2.840.10040.4.1" => "DSA".to_owned(),
        "1.2.840.113549.1.1.10" => "RSASSA-PSS".to_owned(),
        other => other.to_owned(),
    }
}

/// A public key from PKCS#1 `RSAPublicKey` DER, up to [`MAX_PUBLIC_KEY_BITS`].
fn rsa_public_from_pkcs1(der: &[u8]) -> Option<RsaPublicKey> {
    let k = pkcs1::RsaPublicKey::try_from(der).ok()?;
    let n = BigUint::from_bytes_be(k.modulus.as_bytes());
    let e = BigUint::from_bytes_be(k.public_exponent.as_bytes());
    RsaPublicKey::new_with_max_size(n, e, MAX_PUBLIC_KEY_BITS).ok()
}

/// Signs subscription bodies: an RSA private key and a digest (uWSGI's `sign=DIGEST:file`).
///
/// `Debug` shows the digest and the key size, never key material; the key is wiped when
/// the signer is dropped.
#[derive(Clone)]
pub struct Signer {
    key: RsaPrivateKey,
    digest: Digest,
}

impl Signer {
    /// A signer from PEM key data (the contents of the private key file; see the
    /// [module docs](self#keys-and-digests) for the accepted forms).
    ///
    /// # Errors
    ///
    /// [`SignError::NoPem`], [`SignError::UnexpectedPem`], [`SignError::EncryptedKey`],
    /// [`SignError::UnsupportedKeyType`], [`SignError::InvalidKey`],
    /// [`SignError::KeyTooSmall`].
    pub fn from_pem(digest: Digest, pem: &[u8]) -> Result<Self, SignError> {
        let (label, block) = pem_block(pem)?;
        let invalid = || SignError::InvalidKey { label: label.to_owned() };
        let key = match label {
            "PRIVATE KEY" => {
                let doc = pem_der(label, block)?;
                let info = PrivateKeyInfo::try_from(doc.as_bytes()).map_err(|_| invalid())?;
                if info.algorithm.oid != pkcs1::ALGORITHM_OID {
                    return Err(SignError::UnsupportedKeyType {
                        algorithm: algorithm_name(info.algorithm.oid),
                    });
                }
                RsaPrivateKey::try_from(info).map_err(|_| invalid())?
            }
            "RSA PRIVATE KEY" => {
                RsaPrivateKey::from_pkcs1_der(pem_der(label, block)?.as_bytes()).map_err(|_| invalid())?
            }
            "ENCRYPTED PRIVATE KEY" => return Err(SignError::EncryptedKey),
            "EC PRIVATE KEY" => return Err(SignError::UnsupportedKeyType { algorithm: "EC".to_owned() }),
            "DSA PRIVATE KEY" => return Err(SignError::UnsupportedKeyType { algorithm: "DSA".to_owned() }),
            _ => {
                return Err(SignError::UnexpectedPem {
                    label: label.to_owned(),
                    expected: "PRIVATE KEY or RSA PRIVATE KEY",
                });
            }
        };
        digest.check_key_size(&key)?;
        Ok(Self { key, digest })
    }

    /// The digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The length of every signature: the modulus size in bytes (256 for RSA-2048).
    pub fn signature_len(&self) -> usize {
        self.key.size()
    }

    /// Signs `region` (the body bytes before the `sign` pair): RSASSA-PKCS1-v1_5 with the
    /// digest, as OpenSSL's `EVP_SignFinal`. Deterministic; always
    /// [`Signer::signature_len`] bytes.
    ///
    /// The RSA computation cannot fail for a key [`Signer::from_pem`] accepted (it checks
    /// the key's consistency and size); should it fail anyway, the result is empty, which
    /// [`wire::encode`] refuses ([`WireError::EmptySignature`]) and no verifier accepts.
    pub fn sign(&self, region: &[u8]) -> Vec<u8> {
        self.key.sign(self.digest.scheme(), &self.digest.hash(region)).unwrap_or_default()
    }

    /// The verifier for this signer's public key and digest.
    pub fn verifier(&self) -> Verifier {
        Verifier { key: self.key.to_public_key(), digest: self.digest }
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("digest", &self.digest)
            .field("key", &format_args!("RSA-{} private key (redacted)", self.key.n().bits()))
            .finish()
    }
}

/// Verifies subscription signatures: an RSA public key and a digest (what a uWSGI router
/// loads from `DIR/<sanitized key>.pem` under `--subscriptions-sign-check DIGEST:DIR`).
#[derive(Clone)]
pub struct Verifier {
    key: RsaPublicKey,
    digest: Digest,
}

impl Verifier {
    /// A verifier from PEM key data (the contents of a `.pem` file; see the
    /// [module docs](self#keys-and-digests) for the accepted forms).
    ///
    /// # Errors
    ///
    /// [`SignError::NoPem`], [`SignError::UnexpectedPem`], [`SignError::UnsupportedKeyType`],
    /// [`SignError::InvalidKey`], [`SignError::KeyTooSmall`].
    pub fn from_pem(digest: Digest, pem: &[u8]) -> Result<Self, SignError> {
        let (label, block) = pem_block(pem)?;
        let invalid = || SignError::InvalidKey { label: label.to_owned() };
        let key = match label {
            "PUBLIC KEY" => {
                let doc = pem_der(label, block)?;
                let spki = SubjectPublicKeyInfoRef::try_from(doc.as_bytes()).map_err(|_| invalid())?;
                if spki.algorithm.oid != pkcs1::ALGORITHM_OID {
                    return Err(SignError::UnsupportedKeyType {
                        algorithm: algorithm_name(spki.algorithm.oid),
                    });
                }
                spki.subject_public_key.as_bytes().and_then(rsa_public_from_pkcs1).ok_or_else(invalid)?
            }
            "RSA PUBLIC KEY" => {
                rsa_public_from_pkcs1(pem_der(label, block)?.as_bytes()).ok_or_else(invalid)?
            }
            _ => {
                return Err(SignError::UnexpectedPem {
                    label: label.to_owned(),
                    expected: "PUBLIC KEY or RSA PUBLIC KEY",
                });
            }
        };
        digest.check_key_size(&key)?;
        Ok(Self { key, digest })
    }

    /// The digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Whether `signature` is this key's RSASSA-PKCS1-v1_5 signature of `region` with the
    /// digest (OpenSSL's `EVP_VerifyFinal(...) == 1`). An empty region never verifies, as
    /// in uWSGI (spec §3.3: "empty base: FAIL").
    pub fn verify(&self, region: &[u8], signature: &[u8]) -> bool {
        !region.is_empty()
            && self.key.verify(self.digest.scheme(), &self.digest.hash(region), signature).is_ok()
    }

    /// Verifies a decoded datagram as a uWSGI router does: the signature in `sign` over
    /// [`Decoded::signed_region`] of `datagram` (the bytes given to [`wire::decode`]).
    /// False when the request is unsigned or the region is empty.
    pub fn verify_decoded(&self, datagram: &[u8], decoded: &Decoded) -> bool {
        let (Some(region), Some(signature)) = (&decoded.signed_region, &decoded.request.sign) else {
            return false;
        };
        datagram.get(region.clone()).is_some_and(|region| self.verify(region, signature))
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("digest", &self.digest)
            .field("key", &format_args!("RSA-{} public key", self.key.n().bits()))
            .finish()
    }
}

/// Builds a signed datagram exactly as uWSGI does (spec §3.2): the request's pairs in
/// uWSGI's order with `unix` set to the given stamp (normally [`unix_stamp`]: the clock +
/// the command), the signature over those body bytes (header excluded), and the `sign`
/// pair last. `req.unix` and `req.sign` are replaced.
///
/// # Errors
///
/// As [`wire::encode`], including [`WireError::TooLargeToSend`] when the signature makes
/// the datagram exceed [`wire::MAX_DATAGRAM`].
pub fn sign_request(
    command: Command,
    req: &Request,
    signer: &Signer,
    unix: u64,
) -> Result<Vec<u8>, WireError> {
    let mut req = req.clone();
    req.unix = Some(unix);
    req.sign = None;
    let unsigned = wire::encode(command, &req)?;
    req.sign = Some(signer.sign(unsigned.get(4..).unwrap_or_default()));
    wire::encode(command, &req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_names() {
        for (name, d) in [
            ("SHA1", Digest::Sha1),
            ("sha1", Digest::Sha1),
            ("Sha-256", Digest::Sha256),
            ("SHA2-384", Digest::Sha384),
            ("sha512WithRSAEncryption", Digest::Sha512),
            ("RSA-SHA224", Digest::Sha224),
            ("md5", Digest::Md5),
            ("1.3.14.3.2.26", Digest::Sha1),
        ] {
            assert_eq!(Digest::from_name(name), Ok(d), "{name}");
        }
        for bad in ["", " sha1", "sha3-256", "SHA512-224", "ripemd160"] {
            assert_eq!(
                Digest::from_name(bad).map_err(|e| e.reason()),
                Err("unsupported_digest"),
                "{bad:?} must be refused"
            );
        }
        for d in Digest::ALL {
            assert_eq!(Digest::from_name(d.name()), Ok(d));
            assert_eq!(d.hash(b"").len(), d.output_len());
        }
    }

    #[test]
    fn pem_names_and_specs() {
        assert_eq!(pem_file_name(b"secure.test:8000"), "secure.test_8000.pem");
        assert_eq!(pem_file_name(b"a/b c\x00\xc3-_.Z9"), "a_b_c__-_.Z9.pem");
        assert_eq!(pem_file_name(b""), ".pem");
        assert_eq!(split_spec("SHA1:keys/priv.pem"), Ok((Digest::Sha1, "keys/priv.pem")));
        assert_eq!(split_spec("sha256:c:/x"), Ok((Digest::Sha256, "c:/x")));
        assert_eq!(split_spec("keys/priv.pem").map_err(|e| e.reason()), Err("bad_spec"));
        assert_eq!(unix_stamp(10, Command::Subscribe), 10);
        assert_eq!(unix_stamp(10, Command::Unsubscribe), 11);
        assert_eq!(unix_stamp(u64::MAX, Command::Unsubscribe), u64::MAX);
    }

    #[test]
    fn pem_errors() {
        assert_eq!(Signer::from_pem(Digest::Sha1, b"junk").map_err(|e| e.reason()).err(), Some("no_pem"));
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            Signer::from_pem(Digest::Sha1, cert).err(),
            Some(SignError::UnexpectedPem {
                label: "CERTIFICATE".to_owned(),
                expected: "PRIVATE KEY or RSA PRIVATE KEY"
            })
        );
        let enc = b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(Signer::from_pem(Digest::Sha1, enc).err(), Some(SignError::EncryptedKey));
        let trad = b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(Signer::from_pem(Digest::Sha1, trad).err(), Some(SignError::EncryptedKey));
        let bad = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert_eq!(Verifier::from_pem(Digest::Sha1, bad).map_err(|e| e.reason()).err(), Some("invalid_key"));
    }
}
