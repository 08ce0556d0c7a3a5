//! The shared test vectors (`shared/vectors/uwsgi-packet`), captured from nginx 1.22.1 and
//! checked against uWSGI 2.0.21: every valid vector decodes to exactly its JSON and
//! re-encodes byte for byte; every malformed vector is rejected with one of its kinds.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code: a panic is a failed test")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use uwsgi_packet::{
    ArrayPacket, BodyError, BodyProgress, DecodeErrorKind, Decoder, Frame, Header, Limits, Packet, Status,
    content_length, encode_array_packet, encode_packet,
};

fn vectors_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/uwsgi-packet");
    assert!(
        dir.join("README.md").is_file(),
        "shared vectors not found at {}: the project's shared/ folder must sit beside the checkout",
        dir.display()
    );
    dir
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit")).collect()
}

fn read_hex(name: &str) -> Vec<u8> {
    hex(&std::fs::read_to_string(vectors_dir().join(format!("{name}.hex"))).unwrap())
}

/// A JSON string whose chars are bytes (U+0000..U+00FF, the vectors' latin-1 convention).
fn latin1(v: &Value) -> Vec<u8> {
    v.as_str().expect("string").chars().map(|c| u8::try_from(u32::from(c)).expect("latin-1 char")).collect()
}

/// `(name, json)` for every valid vector.
fn valid_vectors() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(vectors_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name.starts_with('v') && path.extension().is_some_and(|e| e == "json") {
            out.push((name, serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(out.len(), 22, "expected the 22 valid vectors v01..v22");
    out
}

fn field_u64(json: &Value, key: &str) -> u64 {
    json[key].as_u64().unwrap_or_else(|| panic!("{key} missing"))
}

#[test]
fn every_valid_vector_decodes_to_its_json_and_reencodes_byte_for_byte() {
    for (name, json) in valid_vectors() {
        let wire = read_hex(&name);
        let limits = Limits::default();
        let expect_header = Header::new(
            field_u64(&json, "modifier1") as u8,
            field_u64(&json, "datasize") as u16,
            field_u64(&json, "modifier2") as u8,
        );
        let after_vars = latin1(&json["after_vars"]);
        let mut reencoded = Vec::new();
        if json["encoding"] == "array" {
            let (packet, consumed) = ArrayPacket::parse(&wire, &limits).unwrap().at_eof().unwrap();
            assert_eq!(packet.header(), expect_header, "{name}");
            let items: Vec<Vec<u8>> = json["items"].as_array().unwrap().iter().map(latin1).collect();
            let got: Vec<&[u8]> = packet.items().iter().collect();
            assert_eq!(got, items.iter().map(Vec::as_slice).collect::<Vec<_>>(), "{name}");
            assert_eq!(&wire[consumed..], &after_vars[..], "{name}: after_vars");
            encode_array_packet(expect_header.modifier1, expect_header.modifier2, &items, &mut reencoded)
                .unwrap();
        } else {
            let (packet, consumed) = Packet::parse(&wire, &limits).unwrap().at_eof().unwrap();
            assert_eq!(packet.header(), expect_header, "{name}");
            let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                json["vars"].as_array().unwrap().iter().map(|p| (latin1(&p[0]), latin1(&p[1]))).collect();
            let got: Vec<(&[u8], &[u8])> = packet.vars().iter().collect();
            let want: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            assert_eq!(got, want, "{name}: vars in wire order with duplicates");
            assert_eq!(packet.vars().len(), pairs.len(), "{name}");
            assert_eq!(&wire[consumed..], &after_vars[..], "{name}: after_vars");
            encode_packet(expect_header.modifier1, expect_header.modifier2, &pairs, &mut reencoded).unwrap();
        }
        assert_eq!(reencoded, &wire[..expect_header.packet_len()], "{name}: encoder reproduces the capture");
    }
}

#[test]
fn every_valid_vector_decodes_the_same_when_streamed_byte_by_byte() {
    for (name, json) in valid_vectors().into_iter().filter(|(_, j)| j["encoding"] != "array") {
        let wire = read_hex(&name);
        let packet_len = field_u64(&json, "datasize") as usize + 4;
        let dec = Decoder::default();
        let mut buf = bytes::BytesMut::new();
        let mut got = None;
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            if let Some(p) = dec.decode(&mut buf).unwrap() {
                assert_eq!(i + 1, packet_len, "{name}: complete exactly when the body is");
                got = Some(p);
                break;
            }
        }
        let got = got.unwrap_or_else(|| panic!("{name}: never completed"));
        let (whole, _) = Packet::parse(&wire, &Limits::default()).unwrap().at_eof().unwrap();
        assert_eq!(got.as_packet(), whole, "{name}");
    }
}

#[test]
fn replies_recorded_from_uwsgi_parse_as_frames() {
    // Spec §1.1 and the vectors' `response_hex`: ping, signal and RPC replies are bare
    // frames; the cache reply is a vars packet followed by the raw value.
    for (name, json) in valid_vectors() {
        let Some(resp) = json["response_hex"].as_str() else { continue };
        let resp = hex(resp);
        if name.starts_with("v18") {
            continue; // ECHO replies with the body only, no header (spec §1.1).
        }
        let (frame, consumed) = Frame::parse(&resp, &Limits::unlimited()).unwrap().at_eof().unwrap();
        match &name[..3] {
            "v17" => assert_eq!((frame.header(), consumed), (Header::new(100, 0, 1), 4)),
            "v19" => assert_eq!(frame.header(), Header::new(255, 0, 1)),
            "v20" => assert_eq!(frame.body(), b"hi:a,b"),
            "v21" => {
                let vars = frame.vars(&Limits::default()).unwrap();
                assert_eq!(vars.get(b"size"), Some(&b"9"[..]));
                assert_eq!(&resp[consumed..], b"value-one");
            }
            other => panic!("unexpected response vector {other}"),
        }
    }
}

#[test]
fn every_malformed_vector_gets_its_verdict() {
    let table: BTreeMap<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(vectors_dir().join("malformed.json")).unwrap())
            .unwrap();
    let mut checked = 0;
    for (name, verdict) in table.iter().filter(|(k, _)| k.starts_with('m')) {
        let wire = read_hex(name);
        let limits = match verdict.get("limits") {
            Some(l) => Limits::unlimited()
                .max_datasize(l["max_datasize"].as_u64().unwrap() as u16)
                .max_vars(l["max_vars"].as_u64().unwrap() as usize),
            None => Limits::unlimited(),
        };
        let array = verdict.get("encoding").is_some_and(|e| e == "array");
        let result = if array {
            ArrayPacket::parse(&wire, &limits).and_then(|s| s.map(|_| ()).at_eof())
        } else {
            Packet::parse(&wire, &limits).and_then(|s| s.map(|_| ()).at_eof())
        };
        match verdict["codec"].as_str().unwrap() {
            "reject" => {
                let err = result.expect_err(name);
                let allowed: Vec<&str> = verdict["error"].as_str().unwrap().split('|').collect();
                assert!(allowed.contains(&err.kind().as_str()), "{name}: got {err:?}, allowed {allowed:?}");
            }
            "accept" => {
                result.unwrap_or_else(|e| panic!("{name}: codec must accept, got {e}"));
            }
            other => panic!("{name}: unknown verdict {other}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 21, "m01..m21");
}

#[test]
fn malformed_vectors_that_pass_the_codec_are_caught_by_the_layer_above() {
    // m13: an empty vars block is valid framing; the request layer must refuse it.
    let wire = read_hex("m13-empty-body");
    let (p, _) = Packet::parse(&wire, &Limits::default()).unwrap().at_eof().unwrap();
    assert!(p.vars().is_empty());

    // m16: CONTENT_LENGTH=100 but the stream ends after 5 body bytes.
    let wire = read_hex("m16-content-length-gt-body");
    let (p, consumed) = Packet::parse(&wire, &Limits::default()).unwrap().at_eof().unwrap();
    let mut body = BodyProgress::new(content_length(&p.vars()).unwrap());
    assert_eq!(body.advance(wire.len() - consumed), 5);
    assert_eq!(body.at_eof(), Err(BodyError::UnexpectedEof { expected: 100, received: 5 }));

    // m17: CONTENT_LENGTH "5abc" — uWSGI reads 5, we refuse.
    let wire = read_hex("m17-content-length-junk");
    let (p, _) = Packet::parse(&wire, &Limits::default()).unwrap().at_eof().unwrap();
    assert_eq!(content_length(&p.vars()), Err(BodyError::InvalidContentLength { position: 1, byte: b'a' }));

    // m20: the generic array decoder keeps the final empty item.
    let wire = read_hex("m20-array-trailing-empty-item");
    let (p, _) = ArrayPacket::parse(&wire, &Limits::default()).unwrap().at_eof().unwrap();
    assert_eq!(p.items().iter().collect::<Vec<_>>(), [&b"hello"[..], b"a", b""]);
}

#[test]
fn size_limit_fires_on_the_header_before_the_body_arrives() {
    // m19: only the header, announcing 5000 bytes: rejected without waiting for the body.
    let wire = read_hex("m19-header-only-datasize-5000");
    assert_eq!(wire.len(), 4);
    let err = Packet::parse(&wire, &Limits::default()).unwrap_err();
    assert_eq!(err.kind(), DecodeErrorKind::TooLarge);
    // m07 is accepted when the limit is raised to 65535 (uWSGI --buffer-size 65535).
    let wire = read_hex("m07-datasize-ffff");
    assert!(Packet::parse(&wire, &Limits::default().max_datasize(65535)).unwrap().is_complete());
}

#[test]
fn truncated_vectors_are_incomplete_until_eof() {
    for (name, kind) in [
        ("m01-truncated-header", DecodeErrorKind::TruncatedHeader),
        ("m02-datasize-exceeds-data", DecodeErrorKind::TruncatedBody),
    ] {
        let wire = read_hex(name);
        let Status::Incomplete(i) = Packet::parse(&wire, &Limits::default()).unwrap() else {
            panic!("{name} must be incomplete, not complete");
        };
        assert!(i.needed() > 0);
        assert_eq!(i.eof_error().kind(), kind, "{name}");
    }
}
