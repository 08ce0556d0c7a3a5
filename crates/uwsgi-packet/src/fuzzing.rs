//! Entry points for the fuzz targets. Private: may change or vanish in any release.
//!
//! Each function asserts the codec's invariants on arbitrary input, not only that it does
//! not panic, so a fuzz target is one line and a crasher replays as an ordinary test.

use bytes::BytesMut;

use crate::{
    ArrayPacket, Decoder, Frame, Header, Limits, Packet, PacketBuilder, Status, encode_array_packet,
    encode_packet,
};

/// Every parser on arbitrary bytes: no panic, and what decodes re-encodes to the bytes it
/// consumed, with consistent counts.
pub fn parse(data: &[u8]) {
    for limits in [Limits::default(), Limits::unlimited(), Limits::new().max_vars(3).max_datasize(64)] {
        if let Ok(Status::Complete { value, consumed }) = Packet::parse(data, &limits) {
            let mut out = Vec::new();
            value.encode(&mut out);
            assert_eq!(out, &data[..consumed], "vars packet re-encodes to its input");
            let vars = value.vars();
            assert!(vars.len() <= limits.vars_limit());
            assert_eq!(vars.iter().count(), vars.len());
            let sum: usize = vars.iter().map(|(k, v)| 4 + k.len() + v.len()).sum();
            assert_eq!(sum, usize::from(value.header().datasize), "vars tile the body");
            assert!(vars.iter().all(|(k, _)| !k.is_empty()));
            let pairs: Vec<_> = vars.iter().collect();
            let mut again = Vec::new();
            encode_packet(value.modifier1(), value.modifier2(), &pairs, &mut again)
                .expect("decoded pairs always encode");
            assert_eq!(again, out, "encoder reproduces decoded packets byte for byte");
        }
        if let Ok(Status::Complete { value, consumed }) = ArrayPacket::parse(data, &limits) {
            let items: Vec<_> = value.items().iter().collect();
            assert_eq!(items.len(), value.items().len());
            let mut again = Vec::new();
            encode_array_packet(value.header().modifier1, value.header().modifier2, &items, &mut again)
                .expect("decoded items always encode");
            assert_eq!(again, &data[..consumed]);
        }
        match Frame::parse(data, &limits) {
            Ok(Status::Complete { value, consumed }) => {
                assert_eq!(consumed, value.header().packet_len());
                assert!(consumed <= data.len());
            }
            Ok(Status::Incomplete(i)) => {
                assert!(i.needed() > 0);
                assert!(data.len() + i.needed() <= Header::LEN + usize::from(limits.datasize_limit()));
            }
            Err(_) => {}
        }
    }
}

/// Streaming: feeding the bytes in chunks (sizes taken from the first byte) decodes the
/// same packet, with the same error, as one call on the whole buffer.
pub fn stream(data: &[u8]) {
    let Some((&chunk, data)) = data.split_first() else { return };
    let chunk = usize::from(chunk % 16) + 1;
    let dec = Decoder::new(Limits::default());
    let whole = dec.decode_eof(&mut BytesMut::from(data));
    let mut buf = BytesMut::new();
    let mut streamed = None;
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        assert!(dec.reserve_hint(&buf) <= Header::LEN + 4096);
        match dec.decode(&mut buf) {
            Ok(None) => {}
            other => {
                streamed = Some(other);
                break;
            }
        }
    }
    let streamed = streamed.unwrap_or_else(|| dec.decode_eof(&mut buf));
    match (&whole, &streamed) {
        // A streamed error may come earlier (e.g. TooLarge right after the header) but
        // must be the same error.
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("one-shot {whole:?} != streamed {streamed:?}"),
    }
}

/// Encoding arbitrary pairs (taken from the input) and decoding them gives them back.
pub fn roundtrip(data: &[u8]) {
    let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
    let mut rest = data;
    let mut body_len = 0usize;
    while let [kl, vl, tail @ ..] = rest {
        let (kl, vl) = (usize::from(*kl % 32) + 1, usize::from(*vl % 64));
        // Stop before the body would pass the 65535 bytes a datasize can describe (a
        // first version of this target did not, and tripped over its own expect).
        if tail.len() < kl + vl || body_len + 4 + kl + vl > usize::from(u16::MAX) {
            break;
        }
        body_len += 4 + kl + vl;
        let (k, tail) = tail.split_at(kl);
        let (v, tail) = tail.split_at(vl);
        pairs.push((k, v));
        rest = tail;
    }
    let mut builder = PacketBuilder::new(0, 0);
    for (k, v) in &pairs {
        builder.push(k, v).expect("small pairs fit");
    }
    let wire = builder.finish();
    let mut direct = Vec::new();
    encode_packet(0, 0, &pairs, &mut direct).expect("small pairs fit");
    assert_eq!(&wire[..], &direct[..]);
    let (packet, used) =
        Packet::parse(&wire, &Limits::unlimited()).expect("own encoding decodes").at_eof().expect("complete");
    assert_eq!(used, wire.len());
    assert_eq!(packet.vars().iter().collect::<Vec<_>>(), pairs);
}

/// `CONTENT_LENGTH` parsing: accepts exactly the all-digit values that fit in a u64.
pub fn content_length(data: &[u8]) {
    let ours = crate::parse_content_length(data);
    let reference = std::str::from_utf8(data)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .map(|s| if s.is_empty() { Some(0) } else { s.parse::<u64>().ok() });
    match reference {
        Some(Some(n)) => assert_eq!(ours, Ok(n)),
        _ => assert!(ours.is_err()),
    }
}
