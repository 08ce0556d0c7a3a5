//! The wire layer against everything uWSGI 2.0.21 and OpenSSL produce.
//!
//! * Every captured datagram of `shared/vectors/legion` opens to exactly the fields of
//!   `index.json` and re-seals byte for byte (so key/IV derivation, padding and key order
//!   are uWSGI's).
//! * Known answers for every supported cipher, produced by a C program calling OpenSSL
//!   3.0.19 exactly as uWSGI's `uwsgi_legion_register` / `uwsgi_legion_announce` do
//!   (`EVP_get_cipherbyname`, NUL-padded key, '0'-padded IV, `EVP_EncryptInit_ex(ctx, NULL,
//!   NULL, NULL, NULL)` before each datagram, `Update` + `Final`).
//! * Cipher names resolve as `EVP_get_cipherbyname` resolves them (same program, with
//!   the default and legacy providers loaded, as uWSGI needs for Blowfish).
//! * Rejections, the codec's rules, secrecy of `Debug`, and property tests: round trips,
//!   and `open` never panics.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is a failed test")]

use std::path::{Path, PathBuf};

use legion_proto::wire::{
    self, Algorithm, CipherKind, Crypto, CryptoError, DecryptError, EXTENSION_KEY, MAX_DATAGRAM, MAX_VARS,
    MODIFIER1, Mode, WireError,
};
use legion_proto::{Announce, Extension, NodeUuid};
use proptest::prelude::*;
use serde_json::Value;
use uwsgi_packet::{DecodeError, EncodeError, Vars, encode_vars};

fn vectors_dir() -> PathBuf {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/vectors/legion"));
    assert!(
        dir.join("index.json").is_file(),
        "shared legion vectors not found at {}: the project's shared/ folder must sit beside the checkout",
        dir.display()
    );
    dir.to_path_buf()
}

fn hex(s: &str) -> Vec<u8> {
    let s = s.trim();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit")).collect()
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A JSON string whose chars are bytes (U+0000..U+00FF).
fn latin1(v: &Value) -> Vec<u8> {
    v.as_str().expect("string").chars().map(|c| u8::try_from(u32::from(c)).expect("latin-1 char")).collect()
}

fn index() -> Vec<Value> {
    let text = std::fs::read_to_string(vectors_dir().join("index.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap().as_array().unwrap().clone()
}

/// The announce `fields` of an `index.json` entry describe, every field checked.
fn expected_announce(fields: &Value) -> Announce {
    let map = fields.as_object().unwrap();
    for key in map.keys() {
        assert!(
            [
                "legion",
                "valor",
                "unix",
                "lord",
                "name",
                "pid",
                "uuid",
                "checksum",
                "lord_valor",
                "lord_uuid",
                "scroll",
                "dead"
            ]
            .contains(&key.as_str()),
            "unexpected field {key} in the vectors: extend this test"
        );
    }
    let bytes = |k: &str| map.get(k).map(latin1).unwrap_or_default();
    let num = |k: &str| std::str::from_utf8(&bytes(k)).unwrap().parse::<u64>().unwrap();
    Announce {
        legion: bytes("legion"),
        valor: num("valor"),
        unix: num("unix"),
        lord: num("lord"),
        name: bytes("name"),
        pid: num("pid"),
        uuid: NodeUuid::from_wire(&bytes("uuid")),
        checksum: num("checksum"),
        lord_valor: num("lord_valor"),
        lord_uuid: NodeUuid::from_wire(&bytes("lord_uuid")),
        scroll: bytes("scroll"),
        dead: map.contains_key("dead"),
        ext: None,
    }
}

/// Spec §6: every vector decodes to its JSON fields and re-encodes byte for byte.
#[test]
fn every_vector_opens_to_its_fields_and_reseals_byte_for_byte() {
    let dir = vectors_dir();
    let vectors = index();
    assert_eq!(vectors.len(), 12, "index.json lists 12 vectors");
    for v in &vectors {
        let file = v["file"].as_str().unwrap();
        let datagram = hex(&std::fs::read_to_string(dir.join(file)).unwrap());
        let plaintext = hex(v["plaintext_hex"].as_str().unwrap());
        let expected = expected_announce(&v["fields"]);
        assert_eq!(datagram.len(), v["datagram_len"].as_u64().unwrap() as usize, "{file}");
        assert_eq!(datagram[0], MODIFIER1, "{file}");
        assert_eq!(u64::from(u16::from_le_bytes([datagram[1], datagram[2]])), v["pktsize"].as_u64().unwrap());
        assert_eq!(plaintext.len(), v["pktsize"].as_u64().unwrap() as usize, "{file}");

        // The codec alone: decode, and re-encode in uWSGI's key order.
        let decoded = wire::decode_plaintext(&plaintext).unwrap();
        assert_eq!(decoded, expected, "{file}: decoded fields");
        assert_eq!(wire::encode_plaintext(&decoded).unwrap(), plaintext, "{file}: re-encoded plaintext");
        let order: Vec<String> = Vars::parse(&plaintext, MAX_VARS)
            .unwrap()
            .iter()
            .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
            .collect();
        let field_order: Vec<String> =
            v["field_order"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect();
        assert_eq!(order, field_order, "{file}: key order");
        if expected.lord_uuid.is_nil() {
            assert_eq!(expected.lord_uuid.as_bytes(), &[0u8; 36], "{file}: 36×NUL");
        }

        match v["crypt"].as_str() {
            None => {
                // The PLAINTEXT vector: header + unencrypted body.
                assert!(file.contains("PLAINTEXT"));
                assert_eq!(wire::open_plaintext(&datagram).unwrap(), expected, "{file}");
                assert_eq!(wire::seal_plaintext(&expected).unwrap(), datagram, "{file}");
            }
            Some(spec) => {
                let crypto = Crypto::from_spec(spec).unwrap();
                assert_eq!(crypto.decrypt(&datagram[4..]).unwrap(), plaintext, "{file}: decrypted body");
                assert_eq!(wire::open(&crypto, &datagram).unwrap(), expected, "{file}: opened");
                // Sealing the decoded announce gives the captured datagram back: same key,
                // same IV, same padding, same key order (spec §2.2 item 5).
                let sealed = wire::seal(&crypto, &expected).unwrap();
                assert_eq!(to_hex(&sealed), to_hex(&datagram), "{file}: resealed");
                // Key/IV derivation through the ciphertext: the same cipher set up by hand
                // from index.json's key_hex / iv_hex encrypts to the same bytes.
                let key = hex(v["key_hex"].as_str().unwrap());
                let iv = hex(v["iv_hex"].as_str().unwrap());
                assert_eq!(key.len(), crypto.kind().key_len(), "{file}");
                assert_eq!(iv.len(), crypto.kind().iv_len(), "{file}");
                let by_hand = Crypto::with_kind(crypto.kind(), &key, Some(&iv));
                assert_eq!(by_hand.encrypt(&plaintext), datagram[4..], "{file}: key_hex/iv_hex");
                // Unencrypted opening of an encrypted datagram fails cleanly.
                assert!(wire::open_plaintext(&datagram).is_err(), "{file}");
            }
        }
    }
}

/// Spec §2.2 table: the documented derivations, checked through ciphertexts.
#[test]
fn key_and_iv_derivation_follows_uwsgi() {
    let pt = b"derivation check, 31 bytes long";
    let same = |a: &Crypto, b: &Crypto| a.encrypt(pt) == b.encrypt(pt);
    let aes = |secret: &[u8], iv: Option<&[u8]>| Crypto::new("aes-128-cbc", secret, iv).unwrap();
    // Key: NUL-padded, cut to K; IV: '0'-padded, cut to N; no IV = N × '0'.
    assert!(same(&aes(b"secret", None), &aes(b"secret\0\0\0\0\0\0\0\0\0\0", Some(b"0000000000000000"))));
    assert!(same(
        &aes(b"0123456789abcdefEXTRA", Some(b"iv-longer-than-16-bytes")),
        &aes(b"0123456789abcdef", Some(b"iv-longer-than-1"))
    ));
    assert!(same(&aes(b"s", Some(b"")), &aes(b"s", None)));
    assert!(same(&aes(b"s", Some(b"12")), &aes(b"s", Some(b"1200000000000000"))));
    assert!(
        !same(&aes(b"s", Some(b"12")), &aes(b"s", Some(b"12\0\0\0\0\0\0\0\0\0\0\0\0\0\0"))),
        "IV pads with '0', not NUL"
    );
    // Blowfish: "hello" is padded to 16 bytes, which is not the 5-byte key "hello".
    let bf = Crypto::from_spec("bf-cbc:hello abcdefgh").unwrap();
    assert!(same(&bf, &Crypto::new("bf-cbc", b"hello\0\0\0\0\0\0\0\0\0\0\0", Some(b"abcdefgh")).unwrap()));
    // ECB ignores the IV.
    let ecb = |iv: Option<&[u8]>| Crypto::new("aes-128-ecb", b"k", iv).unwrap();
    assert!(same(&ecb(None), &ecb(Some(b"anything at all"))));
}

/// `(cipher, A, B, C)`: ciphertexts OpenSSL 3.0.19 gives, through uWSGI's EVP calls, for
/// A: secret `s3cr3t`, no IV, plaintext `The quick brown fox jumps over 13 dogs` (38 bytes);
/// B: secret `0123456789abcdefghijklmnopqrstuvwxyz!?` (cut to K), IV
///    `IV-given-text-longer-than-16` (cut to N), plaintext `0123456789ABCDEF0123456789abcdef`
///    (32 bytes: a whole number of blocks, so CBC/ECB add a full padding block);
/// C: secret `k`, IV `abc` ('0'-padded), empty plaintext.
const OPENSSL_KAT: &[(&str, &str, &str, &str)] = &[
    (
        "aes-128-cbc",
        "0bda33c39365d992a3ae44e4b5a0a47c864639564a11e9dbf591bc2ec068d7467b3a1fcad3cd804ef51b0a135cdc4259",
        "e578a562b0ee6c63dc316a71ee5a30c9e19316fac7b929615a4e5243abb02620c79a8ccc4b362040c3d1ae1c74bb5f83",
        "53f784e6454d1e7d8516f82f20307825",
    ),
    (
        "aes-128-ecb",
        "150c5906b2c6b7214aac2a0c80a421ca7d574bc224a1031e032525dff21abb3c7fd59753c610b431913342b79626eb3d",
        "f2d11f0627a8d83b5191f4f9590923d072727e881edcfd0100a718687909b565377222e061a924c591cd9c27ea163ed4",
        "932f1b1e9189536b938a6b67666d4031",
    ),
    (
        "aes-128-cfb",
        "9fa47ced9df9bcaf459036989c68d1eb03986fbe3a3840693a73a7e0112939c48c89903cefcf",
        "dd5a1ba9ec7ad7168de3338f7808b06cd68979027928e56ff1758f5c01e20552",
        "",
    ),
    (
        "aes-128-cfb8",
        "9f8788168cda4c79f1fb427bcbdaa8b7c57c42403864d203fcefb5b4bb1fde951d6d7e410062",
        "dd80ee0af0ce54325e963dade4185f4141b2c4e96968bd5db3967f1313dcc974",
        "",
    ),
    (
        "aes-128-ofb",
        "9fa47ced9df9bcaf459036989c68d1ebd3cab25e823cef36ad4cf23bda2334490aa83968fed5",
        "dd5a1ba9ec7ad7168de3338f7808b06c6794e8529da713071e18a8674180f27f",
        "",
    ),
    (
        "aes-192-cbc",
        "eb25afde7d4d83e23f6d6d9c36e5b647840e3d86ba1ec662c6369daae9567833b50483361e602d67f4436e327a7cd90e",
        "e194be537cdbc384e0e7fd35fbffe3d1f02e9e9997b87d8f4969fa62f0e269f9a2be16c142fbdb9b76b75205893e27a8",
        "d2d6a422f9dee962703f52a1301ea2b8",
    ),
    (
        "aes-192-ecb",
        "5fcb2a4a67342e7801fd52277f91c63f90f144091bbf11422c27a0365120cb9da6c2dc32d0188fc65d1d3abd20146210",
        "eb6bd86ab2c2751f482c9d9bcb2e1056950e55a62c96e6b98511765abf6afb3f036675ac1b76535bc7363860c3669269",
        "bcefead2f0646af94be43571c1f4ead0",
    ),
    (
        "aes-192-cfb",
        "305face30ee45a85cfe5e18ead29402fbbffca661513b8803242c1b5e152b66aaef2acfd0e65",
        "fb99e8a339b422da42ac1016242513dfec763923f1909b9e2f9a0ad3dc94ad4d",
        "",
    ),
    (
        "aes-192-cfb8",
        "300c789c149029605af01690c193812a13c3d47a6d240d0824941322c274afa48c238eec3ba2",
        "fbc0cffea631cd3a396ed83a8bd948847fa3f92185bd2ee96a32c406d0015a6e",
        "",
    ),
    (
        "aes-192-ofb",
        "305face30ee45a85cfe5e18ead29402fbaa8dd2a1c412bfd4880cb2a110fd0df8e54012603b3",
        "fb99e8a339b422da42ac1016242513df2b16c4f78508cb2f6b4b6c2fc96ff876",
        "",
    ),
    (
        "aes-256-cbc",
        "0e5ffc14c877d6e29db8a5591b429f66a19bbb9130a7384536892eca27f2872b18768dfe0df76042230ee57f89fa7e5f",
        "5716c14ed98c7dd467c741297106c4e3dd7bb172957d6fe2da34042285ac8d77aad73fc337973a2e426bb86a2d391a45",
        "8fa83547d3ecd4a2de677bbf3ef23034",
    ),
    (
        "aes-256-ecb",
        "efd1befe5b2e0fd308e26daec31b82a58483cc6d0d0ba54dbdc6e2b620552a321d4ca12a75f03eaa50e9dae9a0c249ee",
        "71322ab56970112414df248cd17c1ee2f73b5b719d10406dd6e91a010fb949e7cca189727d3e24b3540a08a890a94253",
        "0231a4314979d153afcef0c3e58f985a",
    ),
    (
        "aes-256-cfb",
        "7f41111bfb2029ae895dd285dee207418655911c99e44830b22104cc2f1554cc2ab3bfd4b90d",
        "843a6e859b90cfa5e0d0f63b5ada9a6c3ea0f603bf903f902b12fdf5a9ffbb77",
        "",
    ),
    (
        "aes-256-cfb8",
        "7f16f413d09f17082cbb7b195d677810f2ba86ccc188b282cdf6fe86d1b83886b1f2ab532d0d",
        "842ce295c34f962c21200f3f2cb09a3185e1378d016534f34b62b077108a0f5e",
        "",
    ),
    (
        "aes-256-ofb",
        "7f41111bfb2029ae895dd285dee20741cd036bea0c65574bdedb563cb6c9010dad6a8a696b70",
        "843a6e859b90cfa5e0d0f63b5ada9a6c833fde30edc251ea50f65c5796ade6be",
        "",
    ),
    (
        "bf-cbc",
        "b89c08896a31dd24fa6e411977f36489426db939f3fd295c3a53033bcbd5712f6881918b6c55af72",
        "214f37781cc95ba7bf81039c665f4ea2e6944e7336143dcd9e61d00232ccd89da17fe89a17c2cb22",
        "377b0c735d117f37",
    ),
    (
        "bf-ecb",
        "4064d62710fe95013807a20d9ce1bb6a4d218551f9edc401552b5279f5c46d46f28283f6626a307f",
        "3b77046afc05dc998c2c41d7f8a8af1a3b77046afc05dc992ec7b0b2220b98bff5f8ae2e2e433b92",
        "13ae7ac8a15992db",
    ),
    (
        "bf-cfb",
        "16bffcbdcb6c52a4139c904a5605bd3a8e23f5cc463600127dfe909afab3aa62efea38006714",
        "3e29dde5b42616977f1226a1c5807adf1a7e369aaa5e2c1ce86ad306b2f1e94c",
        "",
    ),
    (
        "bf-ofb",
        "16bffcbdcb6c52a4ab85076bdd0d01da215e2d373c4efc28283da2d45f92b5212f8fd9528dff",
        "3e29dde5b42616977455b4079f78e79ab1a99498bce09336eadb0075327765e5",
        "",
    ),
    (
        "des-ede3-cbc",
        "597806c443fd34f3200fc792982ad7bb21c2f66067f51179a30848527e9557395848da5f33a28387",
        "6f99a223697ade64cd2ef56a003248cb3b753af01526eb85559d28557675d0c811ce7a01fd7f3e58",
        "fb46a34557e7b715",
    ),
    (
        "des-ede3",
        "d225a52ff97a23d1bd1cac04fb22e33bcd0dd59db2241227fcae4814918de3b05794aa3fa5899e12",
        "e0dee91008dc460c27468f12c5cbced7e0dee91008dc460cdeaccb4e178f1012c46c5fe1558764e3",
        "ec06e7ce19d6e0f4",
    ),
    (
        "des-ede3-cfb",
        "13a73f09c266faa6e33e7cb8a23fb6b8d90ba32d958529bfe7af69ad12f524a47281de60a9ab",
        "7953031e49dd84cc9475bbe3a4aa167dc5dbfe43c88b26568b2342e2587d1fa0",
        "",
    ),
    (
        "des-ede3-cfb8",
        "13df9f266b6decc4941cfcd8b6a823580c58b5815ec36fdc5ab71d6478c4a5335a0daae5f472",
        "7964ba3c5a662135abf464faa0b463294fbc86641a48b335825954141e369896",
        "",
    ),
    (
        "des-ede3-ofb",
        "13a73f09c266faa6d0fe0c702091a9c01457dfd083e02ca93bef75265d14dbbf5e013f4f76b1",
        "7953031e49dd84ccd37b9ab4981cfecc2b20082386ac568dbc0fb378f3270b1b",
        "",
    ),
    (
        "des-ede-cbc",
        "55f12a9364be2e2e3e760e87107dec91476a0204f020d49d6a3ec33afb2ff1fdcd80372e3cf7444b",
        "33e248dadf82e8e0079a043fd82d1f5016d788e2cde1c1e306808e95326c73e8cdb828d7a0ad5505",
        "8ca4ecbcaa8fc4fa",
    ),
    (
        "des-ede",
        "f6eb4a86973ce9b2291feccbdbe42e55f3eb1c2491c6c07d7c891b0ca5aa8feaa38fdd50cb85f68e",
        "4ca0da508f66f942784f66615705d1294ca0da508f66f942a988aae79f280801fa5916059a76b93b",
        "672f054aae2f47b7",
    ),
    (
        "des-ede-cfb",
        "8e49ff8325ed009bed3d1c74553f8cbcd40c46f8188f73ef2bc02c98f0bb07eb3e9ebbbc39d5",
        "0804640a1fd2d100f8db19d1621004fb61f991f278be06f794a46f82f3def146",
        "",
    ),
    (
        "des-ede-ofb",
        "8e49ff8325ed009bd8b397f0705f2f2bcea986cbf73d6e21282759101bfd8bf99185b831de73",
        "0804640a1fd2d100a70f85f7da9edf71ce1a4588c78dbd7b646775a1217d3f86",
        "",
    ),
    (
        "des-cbc",
        "597806c443fd34f3200fc792982ad7bb21c2f66067f51179a30848527e9557395848da5f33a28387",
        "7f5c7c9e25748df8b6b5b09d7d0a2b39b9af8b095ec13a80a8379afff6fb420615a5d79625f4d0cd",
        "fb46a34557e7b715",
    ),
    (
        "des-ecb",
        "d225a52ff97a23d1bd1cac04fb22e33bcd0dd59db2241227fcae4814918de3b05794aa3fa5899e12",
        "c50ad028c6da98004f598a683b9c7cd9c50ad028c6da98006920c6ed3648b3dc08bb5db6b37c06d7",
        "ec06e7ce19d6e0f4",
    ),
    (
        "des-cfb",
        "13a73f09c266faa6e33e7cb8a23fb6b8d90ba32d958529bfe7af69ad12f524a47281de60a9ab",
        "bf7d750b94017be9b45794761c10d7aa8663cb87d68087ba299fed2a05d16fa0",
        "",
    ),
    (
        "des-cfb8",
        "13df9f266b6decc4941cfcd8b6a823580c58b5815ec36fdc5ab71d6478c4a5335a0daae5f472",
        "bfec853c87369d935483748a08841384ca0e29f9d0708c01fdd99f551fab714e",
        "",
    ),
    (
        "des-ofb",
        "13a73f09c266faa6d0fe0c702091a9c01457dfd083e02ca93bef75265d14dbbf5e013f4f76b1",
        "bf7d750b94017be93d10dcdf5ee81507adef9a6ecf41817e314270e9ffca1e67",
        "",
    ),
];

/// `(secret, iv, plaintext, expected ciphertext hex)`.
type Case<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8], &'a str);

#[test]
fn every_cipher_matches_openssl_known_answers() {
    let a = b"The quick brown fox jumps over 13 dogs";
    let b = b"0123456789ABCDEF0123456789abcdef";
    assert_eq!(OPENSSL_KAT.len(), CipherKind::all().len(), "one row per supported cipher");
    for &(name, ca, cb, cc) in OPENSSL_KAT {
        let kind = CipherKind::from_name(name).unwrap();
        assert_eq!(kind.name(), name);
        let cases: [Case<'_>; 3] = [
            (b"s3cr3t", None, a, ca),
            (b"0123456789abcdefghijklmnopqrstuvwxyz!?", Some(b"IV-given-text-longer-than-16"), b, cb),
            (b"k", Some(b"abc"), b"", cc),
        ];
        for (i, (secret, iv, pt, ct)) in cases.into_iter().enumerate() {
            let crypto = Crypto::new(name, secret, iv).unwrap();
            let sealed = crypto.encrypt(pt);
            assert_eq!(to_hex(&sealed), ct, "{name} case {i}");
            assert_eq!(sealed.len(), kind.ciphertext_len(pt.len()), "{name} case {i}");
            assert_eq!(crypto.decrypt(&hex(ct)).unwrap(), pt, "{name} case {i}");
        }
    }
    // Worth stating: triple DES with a secret of at most 8 bytes has all-zero 2nd and 3rd
    // keys, and EDE with equal 2nd and 3rd keys is single DES, as OpenSSL confirms.
    let row = |n: &str| OPENSSL_KAT.iter().find(|r| r.0 == n).unwrap().1;
    assert_eq!(row("des-ede3-cbc"), row("des-cbc"));
}

/// `name|canonical|mode|key_len|iv_len` as `EVP_get_cipherbyname` resolves `name` (OpenSSL
/// 3.0.19, default + legacy providers), or `name|-` when it does not. Modes are OpenSSL's
/// `EVP_CIPH_*_MODE`: 0 stream, 1 ECB, 2 CBC, 3 CFB (any width), 4 OFB, 5 CTR, 6 GCM,
/// 7 CCM, 10001 XTS, 10002 key wrap, 10003 OCB. Names: every name and alias `openssl list
/// -cipher-algorithms` shows, lowercased, plus near misses.
const OPENSSL_NAMES: &str = r"
 aes-128-cbc|-
0.3.4401.5.3.1.9.1|camellia-128-ecb|1|16|0
0.3.4401.5.3.1.9.21|camellia-192-ecb|1|24|0
0.3.4401.5.3.1.9.23|camellia-192-ofb|4|24|16
0.3.4401.5.3.1.9.24|camellia-192-cfb|3|24|16
0.3.4401.5.3.1.9.29|camellia-192-ctr|5|24|16
0.3.4401.5.3.1.9.3|camellia-128-ofb|4|16|16
0.3.4401.5.3.1.9.4|camellia-128-cfb|3|16|16
0.3.4401.5.3.1.9.41|camellia-256-ecb|1|32|0
0.3.4401.5.3.1.9.43|camellia-256-ofb|4|32|16
0.3.4401.5.3.1.9.44|camellia-256-cfb|3|32|16
0.3.4401.5.3.1.9.49|camellia-256-ctr|5|32|16
0.3.4401.5.3.1.9.9|camellia-128-ctr|5|16|16
1.2.156.10197.1.104.1|sm4-ecb|1|16|0
1.2.156.10197.1.104.2|sm4-cbc|2|16|16
1.2.156.10197.1.104.3|sm4-ofb|4|16|16
1.2.156.10197.1.104.4|sm4-cfb|3|16|16
1.2.156.10197.1.104.7|sm4-ctr|5|16|16
1.2.392.200011.61.1.1.1.2|camellia-128-cbc|2|16|16
1.2.392.200011.61.1.1.1.3|camellia-192-cbc|2|24|16
1.2.392.200011.61.1.1.1.4|camellia-256-cbc|2|32|16
1.2.410.200004.1.3|seed-ecb|1|16|0
1.2.410.200004.1.4|seed-cbc|2|16|16
1.2.410.200004.1.5|seed-cfb|3|16|16
1.2.410.200004.1.6|seed-ofb|4|16|16
1.2.410.200046.1.1.1|aria-128-ecb|1|16|0
1.2.410.200046.1.1.10|aria-192-ctr|5|24|16
1.2.410.200046.1.1.11|aria-256-ecb|1|32|0
1.2.410.200046.1.1.12|aria-256-cbc|2|32|16
1.2.410.200046.1.1.13|aria-256-cfb|3|32|16
1.2.410.200046.1.1.14|aria-256-ofb|4|32|16
1.2.410.200046.1.1.15|aria-256-ctr|5|32|16
1.2.410.200046.1.1.2|aria-128-cbc|2|16|16
1.2.410.200046.1.1.3|aria-128-cfb|3|16|16
1.2.410.200046.1.1.34|aria-128-gcm|6|16|12
1.2.410.200046.1.1.35|aria-192-gcm|6|24|12
1.2.410.200046.1.1.36|aria-256-gcm|6|32|12
1.2.410.200046.1.1.37|aria-128-ccm|7|16|12
1.2.410.200046.1.1.38|aria-192-ccm|7|24|12
1.2.410.200046.1.1.39|aria-256-ccm|7|32|12
1.2.410.200046.1.1.4|aria-128-ofb|4|16|16
1.2.410.200046.1.1.5|aria-128-ctr|5|16|16
1.2.410.200046.1.1.6|aria-192-ecb|1|24|0
1.2.410.200046.1.1.7|aria-192-cbc|2|24|16
1.2.410.200046.1.1.8|aria-192-cfb|3|24|16
1.2.410.200046.1.1.9|aria-192-ofb|4|24|16
1.2.840.113533.7.66.10|cast5-cbc|2|16|8
1.2.840.113549.1.9.16.3.6|id-smime-alg-cms3deswrap|10002|24|0
1.2.840.113549.3.2|rc2-cbc|2|16|8
1.2.840.113549.3.4|rc4|0|16|0
1.2.840.113549.3.7|des-ede3-cbc|2|24|8
1.3.111.2.1619.0.1.1|aes-128-xts|10001|32|16
1.3.111.2.1619.0.1.2|aes-256-xts|10001|64|16
1.3.14.3.2.17|des-ede|1|16|0
1.3.14.3.2.6|des-ecb|1|8|0
1.3.14.3.2.7|des-cbc|2|8|8
1.3.14.3.2.8|des-ofb|4|8|8
1.3.14.3.2.9|des-cfb|3|8|8
1.3.6.1.4.1.3029.1.2|bf-cbc|2|16|8
2.16.840.1.101.3.4.1.1|aes-128-ecb|1|16|0
2.16.840.1.101.3.4.1.2|aes-128-cbc|2|16|16
2.16.840.1.101.3.4.1.21|aes-192-ecb|1|24|0
2.16.840.1.101.3.4.1.22|aes-192-cbc|2|24|16
2.16.840.1.101.3.4.1.23|aes-192-ofb|4|24|16
2.16.840.1.101.3.4.1.24|aes-192-cfb|3|24|16
2.16.840.1.101.3.4.1.25|id-aes192-wrap|10002|24|8
2.16.840.1.101.3.4.1.26|id-aes192-gcm|6|24|12
2.16.840.1.101.3.4.1.27|id-aes192-ccm|7|24|12
2.16.840.1.101.3.4.1.28|id-aes192-wrap-pad|10002|24|4
2.16.840.1.101.3.4.1.3|aes-128-ofb|4|16|16
2.16.840.1.101.3.4.1.4|aes-128-cfb|3|16|16
2.16.840.1.101.3.4.1.41|aes-256-ecb|1|32|0
2.16.840.1.101.3.4.1.42|aes-256-cbc|2|32|16
2.16.840.1.101.3.4.1.43|aes-256-ofb|4|32|16
2.16.840.1.101.3.4.1.44|aes-256-cfb|3|32|16
2.16.840.1.101.3.4.1.45|id-aes256-wrap|10002|32|8
2.16.840.1.101.3.4.1.46|id-aes256-gcm|6|32|12
2.16.840.1.101.3.4.1.47|id-aes256-ccm|7|32|12
2.16.840.1.101.3.4.1.48|id-aes256-wrap-pad|10002|32|4
2.16.840.1.101.3.4.1.5|id-aes128-wrap|10002|16|8
2.16.840.1.101.3.4.1.6|id-aes128-gcm|6|16|12
2.16.840.1.101.3.4.1.7|id-aes128-ccm|7|16|12
2.16.840.1.101.3.4.1.8|id-aes128-wrap-pad|10002|16|4
AES128|aes-128-cbc|2|16|16
Aes-128-Cbc|aes-128-cbc|2|16|16
BF-cbc|bf-cbc|2|16|8
BlowFish|bf-cbc|2|16|8
Des3|des-ede3-cbc|2|24|8
aes|-
aes-128|-
aes-128-cbc|aes-128-cbc|2|16|16
aes-128-cbc |-
aes-128-cbc-cts|-
aes-128-cbc-hmac-sha1|aes-128-cbc-hmac-sha1|2|16|16
aes-128-cbc-hmac-sha256|aes-128-cbc-hmac-sha256|2|16|16
aes-128-ccm|id-aes128-ccm|7|16|12
aes-128-cfb|aes-128-cfb|3|16|16
aes-128-cfb1|aes-128-cfb1|3|16|16
aes-128-cfb128|-
aes-128-cfb8|aes-128-cfb8|3|16|16
aes-128-ctr|aes-128-ctr|5|16|16
aes-128-ecb|aes-128-ecb|1|16|0
aes-128-gcm|id-aes128-gcm|6|16|12
aes-128-ocb|aes-128-ocb|10003|16|12
aes-128-ofb|aes-128-ofb|4|16|16
aes-128-ofb128|-
aes-128-siv|-
aes-128-wrap|id-aes128-wrap|10002|16|8
aes-128-wrap-inv|-
aes-128-wrap-pad|id-aes128-wrap-pad|10002|16|4
aes-128-wrap-pad-inv|-
aes-128-xts|aes-128-xts|10001|32|16
aes-192-cbc|aes-192-cbc|2|24|16
aes-192-cbc-cts|-
aes-192-ccm|id-aes192-ccm|7|24|12
aes-192-cfb|aes-192-cfb|3|24|16
aes-192-cfb1|aes-192-cfb1|3|24|16
aes-192-cfb8|aes-192-cfb8|3|24|16
aes-192-ctr|aes-192-ctr|5|24|16
aes-192-ecb|aes-192-ecb|1|24|0
aes-192-gcm|id-aes192-gcm|6|24|12
aes-192-ocb|aes-192-ocb|10003|24|12
aes-192-ofb|aes-192-ofb|4|24|16
aes-192-siv|-
aes-192-wrap|id-aes192-wrap|10002|24|8
aes-192-wrap-inv|-
aes-192-wrap-pad|id-aes192-wrap-pad|10002|24|4
aes-192-wrap-pad-inv|-
aes-256-cbc|aes-256-cbc|2|32|16
aes-256-cbc-cts|-
aes-256-cbc-hmac-sha1|aes-256-cbc-hmac-sha1|2|32|16
aes-256-cbc-hmac-sha256|aes-256-cbc-hmac-sha256|2|32|16
aes-256-ccm|id-aes256-ccm|7|32|12
aes-256-cfb|aes-256-cfb|3|32|16
aes-256-cfb1|aes-256-cfb1|3|32|16
aes-256-cfb8|aes-256-cfb8|3|32|16
aes-256-ctr|aes-256-ctr|5|32|16
aes-256-ecb|aes-256-ecb|1|32|0
aes-256-gcm|id-aes256-gcm|6|32|12
aes-256-ocb|aes-256-ocb|10003|32|12
aes-256-ofb|aes-256-ofb|4|32|16
aes-256-siv|-
aes-256-wrap|id-aes256-wrap|10002|32|8
aes-256-wrap-inv|-
aes-256-wrap-pad|id-aes256-wrap-pad|10002|32|4
aes-256-wrap-pad-inv|-
aes-256-xts|aes-256-xts|10001|64|16
aes128|aes-128-cbc|2|16|16
aes128-wrap|id-aes128-wrap|10002|16|8
aes128-wrap-inv|-
aes128-wrap-pad|id-aes128-wrap-pad|10002|16|4
aes128-wrap-pad-inv|-
aes128cbc|-
aes192|aes-192-cbc|2|24|16
aes192-wrap|id-aes192-wrap|10002|24|8
aes192-wrap-inv|-
aes192-wrap-pad|id-aes192-wrap-pad|10002|24|4
aes192-wrap-pad-inv|-
aes256|aes-256-cbc|2|32|16
aes256-wrap|id-aes256-wrap|10002|32|8
aes256-wrap-inv|-
aes256-wrap-pad|id-aes256-wrap-pad|10002|32|4
aes256-wrap-pad-inv|-
aes_128_cbc|-
aria-128-cbc|aria-128-cbc|2|16|16
aria-128-ccm|aria-128-ccm|7|16|12
aria-128-cfb|aria-128-cfb|3|16|16
aria-128-cfb1|aria-128-cfb1|3|16|16
aria-128-cfb8|aria-128-cfb8|3|16|16
aria-128-ctr|aria-128-ctr|5|16|16
aria-128-ecb|aria-128-ecb|1|16|0
aria-128-gcm|aria-128-gcm|6|16|12
aria-128-ofb|aria-128-ofb|4|16|16
aria-192-cbc|aria-192-cbc|2|24|16
aria-192-ccm|aria-192-ccm|7|24|12
aria-192-cfb|aria-192-cfb|3|24|16
aria-192-cfb1|aria-192-cfb1|3|24|16
aria-192-cfb8|aria-192-cfb8|3|24|16
aria-192-ctr|aria-192-ctr|5|24|16
aria-192-ecb|aria-192-ecb|1|24|0
aria-192-gcm|aria-192-gcm|6|24|12
aria-192-ofb|aria-192-ofb|4|24|16
aria-256-cbc|aria-256-cbc|2|32|16
aria-256-ccm|aria-256-ccm|7|32|12
aria-256-cfb|aria-256-cfb|3|32|16
aria-256-cfb1|aria-256-cfb1|3|32|16
aria-256-cfb8|aria-256-cfb8|3|32|16
aria-256-ctr|aria-256-ctr|5|32|16
aria-256-ecb|aria-256-ecb|1|32|0
aria-256-gcm|aria-256-gcm|6|32|12
aria-256-ofb|aria-256-ofb|4|32|16
aria128|aria-128-cbc|2|16|16
aria192|aria-192-cbc|2|24|16
aria256|aria-256-cbc|2|32|16
bf|bf-cbc|2|16|8
bf-cbc|bf-cbc|2|16|8
bf-cfb|bf-cfb|3|16|8
bf-cfb64|-
bf-cfb8|-
bf-ecb|bf-ecb|1|16|0
bf-ofb|bf-ofb|4|16|8
bf-ofb64|-
blowfish|bf-cbc|2|16|8
camellia-128-cbc|camellia-128-cbc|2|16|16
camellia-128-cbc-cts|-
camellia-128-cfb|camellia-128-cfb|3|16|16
camellia-128-cfb1|camellia-128-cfb1|3|16|16
camellia-128-cfb8|camellia-128-cfb8|3|16|16
camellia-128-ctr|camellia-128-ctr|5|16|16
camellia-128-ecb|camellia-128-ecb|1|16|0
camellia-128-ofb|camellia-128-ofb|4|16|16
camellia-192-cbc|camellia-192-cbc|2|24|16
camellia-192-cbc-cts|-
camellia-192-cfb|camellia-192-cfb|3|24|16
camellia-192-cfb1|camellia-192-cfb1|3|24|16
camellia-192-cfb8|camellia-192-cfb8|3|24|16
camellia-192-ctr|camellia-192-ctr|5|24|16
camellia-192-ecb|camellia-192-ecb|1|24|0
camellia-192-ofb|camellia-192-ofb|4|24|16
camellia-256-cbc|camellia-256-cbc|2|32|16
camellia-256-cbc-cts|-
camellia-256-cfb|camellia-256-cfb|3|32|16
camellia-256-cfb1|camellia-256-cfb1|3|32|16
camellia-256-cfb8|camellia-256-cfb8|3|32|16
camellia-256-ctr|camellia-256-ctr|5|32|16
camellia-256-ecb|camellia-256-ecb|1|32|0
camellia-256-ofb|camellia-256-ofb|4|32|16
camellia128|camellia-128-cbc|2|16|16
camellia192|camellia-192-cbc|2|24|16
camellia256|camellia-256-cbc|2|32|16
cast|cast5-cbc|2|16|8
cast-cbc|cast5-cbc|2|16|8
cast5-cbc|cast5-cbc|2|16|8
cast5-cfb|cast5-cfb|3|16|8
cast5-ecb|cast5-ecb|1|16|0
cast5-ofb|cast5-ofb|4|16|8
chacha|-
chacha20|chacha20|0|32|16
chacha20-poly1305|chacha20-poly1305|0|32|12
des|des-cbc|2|8|8
des-cbc|des-cbc|2|8|8
des-cfb|des-cfb|3|8|8
des-cfb1|des-cfb1|3|8|8
des-cfb8|des-cfb8|3|8|8
des-ecb|des-ecb|1|8|0
des-ede|des-ede|1|16|0
des-ede-cbc|des-ede-cbc|2|16|8
des-ede-cfb|des-ede-cfb|3|16|8
des-ede-cfb8|-
des-ede-ecb|des-ede|1|16|0
des-ede-ofb|des-ede-ofb|4|16|8
des-ede3|des-ede3|1|24|0
des-ede3-cbc|des-ede3-cbc|2|24|8
des-ede3-cbc-pad|-
des-ede3-cfb|des-ede3-cfb|3|24|8
des-ede3-cfb1|des-ede3-cfb1|3|24|8
des-ede3-cfb8|des-ede3-cfb8|3|24|8
des-ede3-ecb|des-ede3|1|24|0
des-ede3-ofb|des-ede3-ofb|4|24|8
des-ofb|des-ofb|4|8|8
des3|des-ede3-cbc|2|24|8
des3-wrap|id-smime-alg-cms3deswrap|10002|24|0
desx|desx-cbc|2|24|8
desx-cbc|desx-cbc|2|24|8
id-aes128-ccm|id-aes128-ccm|7|16|12
id-aes128-gcm|id-aes128-gcm|6|16|12
id-aes128-wrap|id-aes128-wrap|10002|16|8
id-aes128-wrap-pad|id-aes128-wrap-pad|10002|16|4
id-aes192-ccm|id-aes192-ccm|7|24|12
id-aes192-gcm|id-aes192-gcm|6|24|12
id-aes192-wrap|id-aes192-wrap|10002|24|8
id-aes192-wrap-pad|id-aes192-wrap-pad|10002|24|4
id-aes256-ccm|id-aes256-ccm|7|32|12
id-aes256-gcm|id-aes256-gcm|6|32|12
id-aes256-wrap|id-aes256-wrap|10002|32|8
id-aes256-wrap-pad|id-aes256-wrap-pad|10002|32|4
id-smime-alg-cms3deswrap|id-smime-alg-cms3deswrap|10002|24|0
none|-
null|-
rc2|rc2-cbc|2|16|8
rc2-128|rc2-cbc|2|16|8
rc2-40|rc2-40-cbc|2|5|8
rc2-40-cbc|rc2-40-cbc|2|5|8
rc2-64|rc2-64-cbc|2|8|8
rc2-64-cbc|rc2-64-cbc|2|8|8
rc2-cbc|rc2-cbc|2|16|8
rc2-cfb|rc2-cfb|3|16|8
rc2-ecb|rc2-ecb|1|16|0
rc2-ofb|rc2-ofb|4|16|8
rc4|rc4|0|16|0
rc4-40|rc4-40|0|5|0
rc4-hmac-md5|rc4-hmac-md5|0|16|0
seed|seed-cbc|2|16|16
seed-cbc|seed-cbc|2|16|16
seed-cfb|seed-cfb|3|16|16
seed-cfb128|seed-cfb|3|16|16
seed-ecb|seed-ecb|1|16|0
seed-ofb|seed-ofb|4|16|16
seed-ofb128|seed-ofb|4|16|16
sm4|sm4-cbc|2|16|16
sm4-cbc|sm4-cbc|2|16|16
sm4-cfb|sm4-cfb|3|16|16
sm4-cfb128|sm4-cfb|3|16|16
sm4-ctr|sm4-ctr|5|16|16
sm4-ecb|sm4-ecb|1|16|0
sm4-ofb|sm4-ofb|4|16|16
sm4-ofb128|sm4-ofb|4|16|16
";

#[test]
fn cipher_names_resolve_as_openssl_resolves_them() {
    let mut supported_seen = std::collections::BTreeSet::new();
    for line in OPENSSL_NAMES.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split('|').collect();
        let (name, canonical) = (fields[0], fields[1]);
        let ours = CipherKind::from_name(name);
        if canonical == "-" {
            // uWSGI exits at startup with these; so must we.
            assert!(ours.is_err(), "{name:?} is unknown to OpenSSL but accepted: {ours:?}");
            continue;
        }
        let mode: u32 = fields[2].parse().unwrap();
        let (key_len, iv_len): (usize, usize) = (fields[3].parse().unwrap(), fields[4].parse().unwrap());
        let cannot_work = matches!(mode, 0 | 5 | 6 | 7 | 10001..=10003) || name.contains("hmac");
        match ours {
            Ok(kind) => {
                assert_eq!(kind.name(), canonical, "{name:?}");
                assert_eq!((kind.key_len(), kind.iv_len()), (key_len, iv_len), "{name:?}");
                let openssl_mode = match kind.mode() {
                    Mode::Ecb => 1,
                    Mode::Cbc => 2,
                    Mode::Cfb | Mode::Cfb8 => 3,
                    Mode::Ofb => 4,
                    _ => unreachable!(),
                };
                assert_eq!(openssl_mode, mode, "{name:?}");
                assert!(!cannot_work);
                supported_seen.insert(kind);
            }
            Err(CryptoError::RefusedCipher { name: n, why }) => {
                assert_eq!(n, name);
                assert!(cannot_work, "{name:?} works per datagram but was refused: {why}");
            }
            Err(CryptoError::UnsupportedCipher { name: n }) => {
                assert_eq!(n, name);
                assert!(!cannot_work, "{name:?} cannot work but is reported as merely unsupported");
            }
            // OpenSSL also resolves the OIDs of ciphers we do not offer; calling those
            // unknown is harmless. Any other known name must get a precise error.
            Err(CryptoError::UnknownCipher { .. }) => {
                assert!(
                    name.starts_with(|c: char| c.is_ascii_digit()),
                    "{name:?} is known to OpenSSL ({canonical})"
                );
            }
            Err(e) => panic!("{name:?}: {e}"),
        }
    }
    // Every supported cipher is one OpenSSL has, under its canonical name.
    assert_eq!(supported_seen.len(), CipherKind::all().len());
}

#[test]
fn names_are_case_insensitive_with_openssl_aliases() {
    for (name, canonical) in [
        ("aes128", "aes-128-cbc"),
        ("AES-128-CBC", "aes-128-cbc"),
        ("Aes-128-Cbc", "aes-128-cbc"),
        ("AES192", "aes-192-cbc"),
        ("aes256", "aes-256-cbc"),
        ("bf", "bf-cbc"),
        ("BF", "bf-cbc"),
        ("blowfish", "bf-cbc"),
        ("BlowFish", "bf-cbc"),
        ("des3", "des-ede3-cbc"),
        ("DES-EDE3-CBC", "des-ede3-cbc"),
        ("des", "des-cbc"),
        ("des-ede3-ecb", "des-ede3"),
        ("AES-128-CFB", "aes-128-cfb"),
        ("aes-256-cfb8", "aes-256-cfb8"),
        ("2.16.840.1.101.3.4.1.2", "aes-128-cbc"),
    ] {
        let crypto = Crypto::new(name, b"secret", None).unwrap();
        assert_eq!(crypto.cipher_name(), canonical, "{name}");
        assert_eq!(name.parse::<CipherKind>().unwrap().to_string(), canonical);
    }
    let kind = CipherKind::from_name("aes-192-ofb").unwrap();
    assert_eq!((kind.algorithm(), kind.mode()), (Algorithm::Aes192, Mode::Ofb));
    assert_eq!(format!("{kind:?}"), "CipherKind(aes-192-ofb)");
}

#[test]
fn ciphers_that_cannot_work_per_datagram_are_refused() {
    for name in [
        "aes-128-ctr",
        "AES-256-CTR",
        "aes-128-gcm",
        "id-aes256-GCM",
        "aes-128-ccm",
        "aes-128-ocb",
        "aes-128-xts",
        "aes128-wrap",
        "chacha20",
        "chacha20-poly1305",
        "rc4",
        "rc4-40",
        "aes-128-cbc-hmac-sha1",
    ] {
        let err = Crypto::new(name, b"secret", None).unwrap_err();
        assert!(matches!(&err, CryptoError::RefusedCipher { name: n, .. } if n == name), "{name}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(name) && !msg.contains("secret\""), "{msg}");
    }
    let msg = Crypto::new("aes-128-ctr", b"x", None).unwrap_err().to_string();
    assert!(msg.contains("first datagram"), "{msg}");
    for name in
        ["null", "none", "NULL", "", "aes", "aes-128-cfb128", "aes_128_cbc", " aes-128-cbc", "bf-cfb8"]
    {
        let err = Crypto::new(name, b"secret", None).unwrap_err();
        assert!(matches!(&err, CryptoError::UnknownCipher { name: n } if n == name), "{name:?}: {err:?}");
        assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
    }
    assert!(Crypto::new("null", b"", None).unwrap_err().to_string().contains("cannot be turned off"));
    for name in [
        "camellia-128-cbc",
        "aria-256-cfb",
        "sm4",
        "seed",
        "cast5-cbc",
        "rc2",
        "desx",
        "aes-128-cfb1",
        "des-ede3-cfb1",
    ] {
        let err = Crypto::new(name, b"secret", None).unwrap_err();
        assert!(matches!(&err, CryptoError::UnsupportedCipher { name: n } if n == name), "{name}: {err:?}");
    }
}

#[test]
fn crypto_specs_parse_as_uwsgi_splits_them() {
    let pt = b"spec parsing";
    let enc = |c: Crypto| c.encrypt(pt);
    // algo up to the first ':'; secret up to the next space; IV = the rest, spaces included.
    assert_eq!(
        enc(Crypto::from_spec("aes-128-cbc:s iv with spaces").unwrap()),
        enc(Crypto::new("aes-128-cbc", b"s", Some(b"iv with spaces")).unwrap())
    );
    assert_eq!(
        enc(Crypto::from_spec("aes-128-cbc:a:b").unwrap()),
        enc(Crypto::new("aes-128-cbc", b"a:b", None).unwrap())
    );
    assert_eq!(
        enc(Crypto::from_spec("aes-128-cbc:").unwrap()),
        enc(Crypto::new("aes-128-cbc", b"", None).unwrap())
    );
    assert_eq!(
        enc(Crypto::from_spec("bf:hello abcdefgh").unwrap()),
        enc(Crypto::from_spec("bf-cbc:hello abcdefgh").unwrap())
    );
    for (spec, why) in [("aes-128-cbc", "no ':'"), ("", "no ':'"), (":secret", "empty cipher name")] {
        let err = Crypto::from_spec(spec).unwrap_err();
        assert!(matches!(err, CryptoError::InvalidSpec { .. }), "{spec:?}");
        assert!(err.to_string().contains(why), "{err}");
    }
    // The secret never appears in an error, even when the cipher is wrong.
    let err = Crypto::from_spec("aes-128-ctr:hunter2-very-secret my-iv").unwrap_err();
    assert!(!err.to_string().contains("hunter2") && !format!("{err:?}").contains("hunter2"));
    let err = Crypto::from_spec("hunter2-very-secret").unwrap_err();
    assert!(!err.to_string().contains("hunter2"));
}

#[test]
fn debug_never_shows_the_secret_key_or_iv() {
    let secret = b"Sup3rSecretValue-0123456789abcdef";
    for name in ["aes-256-cbc", "bf-cbc", "des-ede3-ofb", "aes-128-ecb"] {
        let crypto = Crypto::new(name, secret, Some(b"MyPrivateIV-xyz!")).unwrap();
        let debug = format!("{crypto:?} {:#?}", crypto.clone());
        assert!(debug.contains(name), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        for needle in ["Sup3r", "MyPrivate", "0123456789", &to_hex(&secret[..8])] {
            assert!(!debug.contains(needle), "{name}: {debug}");
        }
        assert_eq!(format!("{crypto:?}"), format!("Crypto {{ cipher: \"{name}\", key: \"<redacted>\" }}"));
    }
}

fn announce() -> Announce {
    Announce {
        legion: b"lg".to_vec(),
        valor: 10,
        unix: 1_795_310_429,
        lord: 1_795_310_429,
        name: b"vm".to_vec(),
        pid: 8570,
        uuid: NodeUuid::from_wire(b"58be0885-c1e5-40ad-b7b5-0bc07f46c3ad"),
        checksum: 2517,
        lord_valor: 10,
        lord_uuid: NodeUuid::from_wire(b"58be0885-c1e5-40ad-b7b5-0bc07f46c3ad"),
        scroll: Vec::new(),
        dead: false,
        ext: None,
    }
}

#[test]
fn every_cipher_round_trips_at_every_length() {
    for kind in CipherKind::all() {
        let crypto = Crypto::with_kind(kind, b"round trip secret", Some(b"iv"));
        for len in (0..=40).chain([191, 192, 193, 1000]) {
            let pt: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let ct = crypto.encrypt(&pt);
            assert_eq!(ct.len(), kind.ciphertext_len(len), "{kind} {len}");
            if kind.mode().is_padded() {
                let b = kind.algorithm().block_size();
                assert!(ct.len() > len && ct.len() - len <= b && ct.len().is_multiple_of(b), "{kind} {len}");
            } else {
                assert_eq!(ct.len(), len, "{kind} {len}: no padding");
            }
            assert_eq!(crypto.decrypt(&ct).unwrap(), pt, "{kind} {len}");
            assert_eq!(crypto.encrypt(&pt), ct, "{kind}: deterministic (static IV)");
        }
        // Whole announces too.
        let mut a = announce();
        a.scroll = b"role=db".to_vec();
        a.ext = Some(Extension { version: 1, epoch: 3 });
        let datagram = wire::seal(&crypto, &a).unwrap();
        assert_eq!(wire::open(&crypto, &datagram).unwrap(), a, "{kind}");
    }
}

#[test]
fn padding_adds_a_whole_block_when_the_plaintext_fills_its_last_one() {
    // Spec §2.2 item 6: 192 → 208 with AES, 192 → 200 with Blowfish and DES.
    for (name, len) in [("aes-128-cbc", 208), ("aes-256-ecb", 208), ("bf-cbc", 200), ("des-ede3-cbc", 200)] {
        let crypto = Crypto::new(name, b"s", None).unwrap();
        assert_eq!(crypto.encrypt(&[0x41; 192]).len(), len, "{name}");
        assert_eq!(crypto.kind().ciphertext_len(192), len);
    }
    for name in ["aes-128-cfb", "aes-128-cfb8", "aes-128-ofb", "bf-cfb", "bf-ofb", "des-ede3-cfb"] {
        assert_eq!(Crypto::new(name, b"s", None).unwrap().encrypt(&[0x41; 205]).len(), 205, "{name}");
    }
    // The aes128-initial vector is exactly that case: pktsize 192, datagram 212.
    let d = wire::seal(
        &Crypto::from_spec("aes-128-cbc:secret").unwrap(),
        &Announce {
            lord: 0,
            checksum: 0,
            lord_valor: 0,
            lord_uuid: NodeUuid::NIL,
            unix: 1_795_310_428,
            ..announce()
        },
    )
    .unwrap();
    assert_eq!((d.len(), &d[..4]), (212, &b"\x6d\xc0\x00\x00"[..]));
}

#[test]
fn a_wrong_secret_is_a_padding_error_in_cbc_and_a_parse_error_in_cfb() {
    let a = announce();
    let sealed = wire::seal(&Crypto::from_spec("aes-128-cbc:secret").unwrap(), &a).unwrap();
    for spec in ["aes-128-cbc:Secret", "aes-256-cbc:secret", "bf-cbc:secret", "aes-128-ecb:secret"] {
        let err = wire::open(&Crypto::from_spec(spec).unwrap(), &sealed).unwrap_err();
        assert!(matches!(err, WireError::Decrypt(_)), "{spec}: {err:?}");
        assert_eq!(err.reason(), "decrypt");
    }
    // A wrong IV alone garbles only the first CBC block: the padding is intact, so it shows
    // up as a parse error (here the garbled first block breaks the vars framing).
    let err = wire::open(&Crypto::from_spec("aes-128-cbc:secret x").unwrap(), &sealed).unwrap_err();
    assert!(matches!(err, WireError::Malformed(_) | WireError::InvalidNumber { .. }), "{err:?}");
    // A body that is not a whole number of blocks is a length error (208 − 3 bytes here).
    let err =
        wire::open(&Crypto::from_spec("bf-cbc:secret").unwrap(), &sealed[..sealed.len() - 3]).unwrap_err();
    assert_eq!(err, WireError::Decrypt(DecryptError::BadLength { len: 205, block_size: 8 }));
    // CFB has no padding: a wrong key decrypts to garbage of the right length, caught by
    // the KV parser (or, rarely, by the number check).
    let sealed = wire::seal(&Crypto::from_spec("aes-128-cfb:secret").unwrap(), &a).unwrap();
    for spec in ["aes-128-cfb:Secret", "aes-128-cfb:secret x", "aes-128-ofb:secret"] {
        let err = wire::open(&Crypto::from_spec(spec).unwrap(), &sealed).unwrap_err();
        assert!(matches!(err, WireError::Malformed(_) | WireError::InvalidNumber { .. }), "{spec}: {err:?}");
    }
}

#[test]
fn datagrams_are_checked_in_uwsgi_order() {
    let crypto = Crypto::from_spec("aes-128-cbc:secret").unwrap();
    let a = announce();
    let good = wire::seal(&crypto, &a).unwrap().to_vec();
    // Step 1: size.
    for len in 0..4 {
        assert_eq!(wire::open(&crypto, &good[..len]), Err(WireError::TooShort { len }));
    }
    let mut huge = good.clone();
    huge.resize(MAX_DATAGRAM + 1, 0);
    assert_eq!(wire::open(&crypto, &huge), Err(WireError::TooLarge { len: MAX_DATAGRAM + 1 }));
    huge[0] = 0; // size is checked before modifier1
    assert_eq!(wire::open(&crypto, &huge).unwrap_err().reason(), "too_large");
    // Step 2: modifier1, before any decryption; modifier2 is ignored.
    let mut m = good.clone();
    m[0] = 0;
    assert_eq!(wire::open(&crypto, &m), Err(WireError::BadModifier1 { found: 0 }));
    assert_eq!(wire::open(&crypto, b"GET / HTTP/1.1\r\n"), Err(WireError::BadModifier1 { found: b'G' }));
    let mut m = good.clone();
    m[3] = 7;
    assert_eq!(wire::open(&crypto, &m).unwrap(), a, "modifier2 7 accepted");
    // Step 3: decryption. A header alone is an empty CBC ciphertext.
    assert_eq!(
        wire::open(&crypto, &good[..4]),
        Err(WireError::Decrypt(DecryptError::BadLength { len: 0, block_size: 16 }))
    );
    assert_eq!(
        wire::open(&crypto, &good[..good.len() - 1]),
        Err(WireError::Decrypt(DecryptError::BadLength { len: good.len() - 5, block_size: 16 }))
    );
    // Step 4: the header's pktsize must equal the decrypted length.
    let mut m = good;
    m[1] = m[1].wrapping_add(1);
    assert_eq!(wire::open(&crypto, &m), Err(WireError::LengthMismatch { header: 206, plaintext: 205 }));
    assert_eq!(wire::open(&crypto, &m).unwrap_err().reason(), "length_mismatch");
    // Step 5: the body must parse. Encrypt a bad body by hand.
    let bad_body = b"\x00\x00x";
    let mut m = vec![MODIFIER1, 3, 0, 0];
    m.extend(crypto.encrypt(bad_body));
    assert_eq!(wire::open(&crypto, &m), Err(WireError::Malformed(DecodeError::EmptyKey { offset: 0 })));
    let mut body = Vec::new();
    encode_vars(&[(&b"valor"[..], &b"-5"[..])], &mut body).unwrap();
    let mut m = vec![MODIFIER1, body.len() as u8, 0, 0];
    m.extend(crypto.encrypt(&body));
    assert_eq!(wire::open(&crypto, &m), Err(WireError::InvalidNumber { key: "valor" }));
    // The same checks without encryption.
    assert_eq!(wire::open_plaintext(&[MODIFIER1, 0, 0]), Err(WireError::TooShort { len: 3 }));
    assert_eq!(wire::open_plaintext(&[1, 0, 0, 0]), Err(WireError::BadModifier1 { found: 1 }));
    assert_eq!(
        wire::open_plaintext(&[MODIFIER1, 1, 0, 0]),
        Err(WireError::LengthMismatch { header: 1, plaintext: 0 })
    );
    // An empty announce is well-formed: everything reads as missing (the state machine
    // then rejects the legion name).
    let empty = wire::open_plaintext(&[MODIFIER1, 0, 0, 0]).unwrap();
    assert!(
        empty.legion.is_empty()
            && empty.uuid.is_nil()
            && empty.valor == 0
            && !empty.dead
            && empty.ext.is_none()
    );
}

fn body(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let pairs: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
    let mut out = Vec::new();
    encode_vars(&pairs, &mut out).unwrap();
    out
}

#[test]
fn decoding_follows_uwsgi_key_rules() {
    let uuid_a = b"aaaaaaaa-0000-4000-8000-000000000001";
    let uuid_b = b"bbbbbbbb-0000-4000-8000-000000000002";
    // Duplicates: the last value wins. Unknown keys: ignored. Order: irrelevant.
    let a = wire::decode_plaintext(&body(&[
        ("valor", b"1"),
        ("future_key", b"whatever"),
        ("name", b"first"),
        ("valor", b"20"),
        ("legion", b"lg"),
        ("name", b"second"),
        ("uuid", uuid_a),
        ("uuid", uuid_b),
        ("lord_uuid", uuid_b),
        ("lord_uuid", b"short"), // not 36 bytes: uWSGI keeps the previous one
        ("scroll", b"s1"),
        ("scroll", b""),
        ("dead", b""), // presence is what counts
    ]))
    .unwrap();
    assert_eq!((a.valor, &a.name[..], &a.legion[..]), (20, &b"second"[..], &b"lg"[..]));
    assert_eq!((a.uuid, a.lord_uuid), (NodeUuid::from_wire(uuid_b), NodeUuid::from_wire(uuid_b)));
    assert_eq!(a.scroll, b"");
    assert!(a.dead);
    // Missing keys read as uWSGI reads them; a uuid of the wrong length is nil.
    let a = wire::decode_plaintext(&body(&[("uuid", b"not-36-bytes"), ("pid", b"")])).unwrap();
    let defaults = Announce {
        legion: vec![],
        valor: 0,
        unix: 0,
        lord: 0,
        name: vec![],
        pid: 0,
        uuid: NodeUuid::NIL,
        checksum: 0,
        lord_valor: 0,
        lord_uuid: NodeUuid::NIL,
        scroll: vec![],
        dead: false,
        ext: None,
    };
    assert_eq!(a, defaults);
    // Numbers: digits only, leading zeros fine, within u64; only the winning value counts.
    let num = |k: &str, v: &[u8]| wire::decode_plaintext(&body(&[(k, v)]));
    assert_eq!(num("checksum", b"0002517").unwrap().checksum, 2517);
    assert_eq!(num("unix", b"18446744073709551615").unwrap().unix, u64::MAX);
    for key in ["valor", "unix", "lord", "pid", "checksum", "lord_valor"] {
        for bad in [&b"-5"[..], b"+5", b" 5", b"5 ", b"0x10", b"1e3", b"18446744073709551616", b"\xff"] {
            assert_eq!(
                num(key, bad),
                Err(WireError::InvalidNumber { key }),
                "{key}={:?}",
                bad.escape_ascii().to_string()
            );
        }
    }
    assert_eq!(wire::decode_plaintext(&body(&[("valor", b"junk"), ("valor", b"5")])).unwrap().valor, 5);
    assert_eq!(WireError::InvalidNumber { key: "pid" }.reason(), "invalid_number");
    assert!(WireError::InvalidNumber { key: "pid" }.to_string().contains("pid"));
    // Framing: strict tiling and a cap on the number of vars.
    assert_eq!(
        wire::decode_plaintext(b"\x01\x00k\x00\x00\x01"),
        Err(WireError::Malformed(DecodeError::Trailing { offset: 5, len: 1 }))
    );
    let many: Vec<(&str, &[u8])> = vec![("k", b"v"); MAX_VARS + 1];
    assert_eq!(
        wire::decode_plaintext(&body(&many)),
        Err(WireError::Malformed(DecodeError::TooManyVars { max: MAX_VARS }))
    );
    assert!(wire::decode_plaintext(&body(&many[..MAX_VARS])).is_ok());
    assert_eq!(wire::decode_plaintext(b"\x00\x00").unwrap_err().reason(), "malformed");
}

#[test]
fn the_extension_key_comes_last_and_is_lenient() {
    let mut a = announce();
    a.dead = true;
    a.scroll = b"s".to_vec();
    a.ext = Some(Extension { version: 1, epoch: 7 });
    let pt = wire::encode_plaintext(&a).unwrap();
    let vars = Vars::parse(&pt, MAX_VARS).unwrap();
    let keys: Vec<&[u8]> = vars.iter().map(|(k, _)| k).collect();
    assert_eq!(keys[10..], [&b"scroll"[..], b"dead", EXTENSION_KEY.as_bytes()]);
    assert_eq!(vars.get(b"legion_rs"), Some(&b"v=1,epoch=7"[..]));
    assert_eq!(vars.get(b"dead"), Some(&b"1"[..]));
    assert_eq!(wire::decode_plaintext(&pt).unwrap(), a);
    // Without ext, scroll or dead: exactly uWSGI's ten keys.
    assert_eq!(Vars::parse(&wire::encode_plaintext(&announce()).unwrap(), MAX_VARS).unwrap().len(), 10);
    // A bad extension value never fails the datagram: the extension reads as absent.
    let base = wire::encode_plaintext(&announce()).unwrap();
    for (value, expected) in [
        (&b"v=2,epoch=9,later=1"[..], Some(Extension { version: 2, epoch: 9 })),
        (b"v=1", Some(Extension { version: 1, epoch: 0 })),
        (b"v=0,epoch=1", None),
        (b"epoch=1", None),
        (b"garbage", None),
        (b"v=1,epoch=-1", None),
        (b"", None),
    ] {
        let mut pt = base.clone();
        encode_vars(&[(EXTENSION_KEY.as_bytes(), value)], &mut pt).unwrap();
        assert_eq!(
            wire::decode_plaintext(&pt).unwrap().ext,
            expected,
            "{:?}",
            value.escape_ascii().to_string()
        );
    }
}

#[test]
fn sealing_refuses_what_uwsgi_could_not_receive() {
    let crypto = Crypto::from_spec("aes-128-cbc:secret").unwrap();
    let plain_len = wire::encode_plaintext(&announce()).unwrap().len(); // 205
    let mut a = announce();
    // The largest scroll whose datagram still fits in 65499 bytes.
    // A scroll of s bytes adds the pair's 2 + 6 + 2 + s bytes to the plaintext.
    let datagram_len = |s: usize| 4 + crypto.kind().ciphertext_len(plain_len + 10 + s);
    let fits = (0..MAX_DATAGRAM).rev().find(|&s| datagram_len(s) <= MAX_DATAGRAM).unwrap();
    a.scroll = vec![b'x'; fits];
    let d = wire::seal(&crypto, &a).unwrap();
    assert!(d.len() <= MAX_DATAGRAM && d.len() > MAX_DATAGRAM - 16);
    assert_eq!(wire::open(&crypto, &d).unwrap(), a);
    a.scroll.push(b'x');
    let err = wire::seal(&crypto, &a).unwrap_err();
    assert!(matches!(err, WireError::TooLargeToSend { len } if len > MAX_DATAGRAM), "{err:?}");
    assert_eq!(err.reason(), "too_large_to_send");
    // Beyond a u16 pktsize: an encoding error, before any encryption.
    a.scroll = vec![b'x'; 65_400];
    assert_eq!(
        wire::seal(&crypto, &a).unwrap_err(),
        WireError::Encode(EncodeError::BodyTooLarge { len: plain_len + 10 + 65_400 })
    );
    a.scroll = vec![b'x'; 65_536];
    assert_eq!(
        wire::seal(&crypto, &a).unwrap_err(),
        WireError::Encode(EncodeError::ValueTooLong { len: 65_536 })
    );
    assert_eq!(wire::encode_plaintext(&a).unwrap_err().reason(), "encode");
    assert!(wire::seal_plaintext(&a).is_err());
}

#[test]
fn reasons_are_stable_labels() {
    let all = [
        (WireError::TooShort { len: 0 }, "too_short"),
        (WireError::TooLarge { len: 0 }, "too_large"),
        (WireError::BadModifier1 { found: 0 }, "bad_modifier1"),
        (WireError::Decrypt(DecryptError::BadPadding), "decrypt"),
        (WireError::LengthMismatch { header: 0, plaintext: 0 }, "length_mismatch"),
        (WireError::Malformed(DecodeError::EmptyKey { offset: 0 }), "malformed"),
        (WireError::InvalidNumber { key: "valor" }, "invalid_number"),
        (WireError::Encode(EncodeError::EmptyKey), "encode"),
        (WireError::TooLargeToSend { len: 0 }, "too_large_to_send"),
    ];
    for (err, reason) in all {
        assert_eq!(err.reason(), reason);
        let msg = err.to_string();
        assert!(msg.chars().next().unwrap().is_lowercase(), "{msg}");
    }
}

fn arb_uuid() -> impl Strategy<Value = NodeUuid> {
    prop_oneof![
        Just(NodeUuid::NIL),
        any::<[u8; 16]>().prop_map(NodeUuid::from_random),
        proptest::collection::vec(any::<u8>(), 36).prop_map(|b| NodeUuid::from_wire(&b)),
    ]
}

fn arb_announce() -> impl Strategy<Value = Announce> {
    let bytes = |max| proptest::collection::vec(any::<u8>(), 0..max);
    (
        (bytes(24), any::<u64>(), any::<u64>(), any::<u64>(), bytes(24), any::<u64>()),
        (arb_uuid(), any::<u64>(), any::<u64>(), arb_uuid(), bytes(300), any::<bool>()),
        proptest::option::of(
            (1..=u32::MAX, any::<u64>()).prop_map(|(version, epoch)| Extension { version, epoch }),
        ),
    )
        .prop_map(
            |(
                (legion, valor, unix, lord, name, pid),
                (uuid, checksum, lord_valor, lord_uuid, scroll, dead),
                ext,
            )| {
                Announce {
                    legion,
                    valor,
                    unix,
                    lord,
                    name,
                    pid,
                    uuid,
                    checksum,
                    lord_valor,
                    lord_uuid,
                    scroll,
                    dead,
                    ext,
                }
            },
        )
}

fn arb_crypto() -> impl Strategy<Value = Crypto> {
    (
        0..CipherKind::all().len(),
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
    )
        .prop_map(|(i, secret, iv)| {
            Crypto::with_kind(CipherKind::all().nth(i).unwrap(), &secret, iv.as_deref())
        })
}

proptest! {
    #[test]
    fn prop_seal_then_open_is_identity(a in arb_announce(), crypto in arb_crypto()) {
        let datagram = wire::seal(&crypto, &a).unwrap();
        prop_assert_eq!(datagram[0], MODIFIER1);
        prop_assert_eq!(&wire::open(&crypto, &datagram).unwrap(), &a);
        prop_assert_eq!(&wire::open_plaintext(&wire::seal_plaintext(&a).unwrap()).unwrap(), &a);
        prop_assert_eq!(&wire::decode_plaintext(&wire::encode_plaintext(&a).unwrap()).unwrap(), &a);
    }

    #[test]
    fn prop_decrypt_inverts_encrypt(pt in proptest::collection::vec(any::<u8>(), 0..100), crypto in arb_crypto()) {
        let ct = crypto.encrypt(&pt);
        prop_assert_eq!(ct.len(), crypto.kind().ciphertext_len(pt.len()));
        prop_assert_eq!(crypto.decrypt(&ct).unwrap(), pt);
    }

    #[test]
    fn prop_open_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        valid_header in any::<bool>(),
        crypto in arb_crypto(),
    ) {
        let mut d = bytes;
        if valid_header && d.len() >= 4 {
            d[0] = MODIFIER1;
        }
        let _ = wire::open(&crypto, &d);
        let _ = wire::open_plaintext(&d);
        let _ = crypto.decrypt(&d);
        // Whatever decodes re-encodes to something that decodes the same.
        if let Ok(a) = wire::decode_plaintext(&d) {
            let again = wire::decode_plaintext(&wire::encode_plaintext(&a).unwrap()).unwrap();
            prop_assert_eq!(again, a);
        }
    }

    #[test]
    fn prop_open_never_panics_on_mutated_datagrams(
        a in arb_announce(),
        crypto in arb_crypto(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 0..20),
        how in 0..3u8,
    ) {
        let sealed = wire::seal(&crypto, &a).unwrap().to_vec();
        let mut d = sealed.clone();
        match how {
            0 => for (at, x) in &flips { let i = at.index(d.len()); d[i] ^= x | 1; },
            1 => d.truncate(cut.index(d.len() + 1)),
            _ => d.extend(&extra),
        }
        let opened = wire::open(&crypto, &d);
        if how > 0 && d != sealed {
            // A shorter or longer datagram can never pass the length checks: CFB/OFB
            // change the plaintext length, CBC/ECB lose their block alignment or padding.
            prop_assert!(opened.is_err(), "{:?}", opened);
        } else if how == 0 && d[..3] == sealed[..3] && d[4..] == sealed[4..] {
            // Only modifier2 changed: it is ignored.
            prop_assert_eq!(&opened.unwrap(), &a);
        }
        // Other flips may give another valid announce (no MAC, spec §2.5); never a panic.
    }
}
