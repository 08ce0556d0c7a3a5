//! Property tests: round trips in both directions, streaming equivalence, and arbitrary
//! bytes never panicking or breaking the decoder's promises.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a failed test")]

use bytes::BytesMut;
use proptest::prelude::*;
use uwsgi_packet::{
    ArrayPacket, DecodeError, Decoder, EncodeError, Header, Items, Limits, Packet, PacketBuilder, Status,
    Vars, encode_array_packet, encode_packet, parse_content_length,
};

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..40)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..80)
}

fn pairs() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
    prop::collection::vec((key(), value()), 0..40)
}

/// Bytes biased toward almost-valid packets: a valid one with a few bytes flipped, cut or
/// extended, so the interesting error paths are reached often.
fn mangled_packet() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        any::<u8>(),
        pairs(),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        any::<usize>(),
    )
        .prop_map(|(m1, m2, pairs, flips, cut)| {
            let mut wire = Vec::new();
            encode_packet(m1, m2, &pairs, &mut wire).unwrap();
            for (at, byte) in flips {
                let at = at % wire.len();
                wire[at] = byte;
            }
            wire.truncate(cut % (wire.len() + 1));
            wire
        })
}

proptest! {
    #[test]
    fn prop_encode_then_decode_gives_the_pairs_back(m1: u8, m2: u8, pairs in pairs(), tail in value()) {
        let mut wire = Vec::new();
        let len = encode_packet(m1, m2, &pairs, &mut wire).unwrap();
        prop_assert_eq!(len, wire.len());
        wire.extend_from_slice(&tail);
        let (packet, consumed) = Packet::parse(&wire, &Limits::unlimited()).unwrap().at_eof().unwrap();
        prop_assert_eq!(consumed, len);
        prop_assert_eq!((packet.modifier1(), packet.modifier2()), (m1, m2));
        let got: Vec<(Vec<u8>, Vec<u8>)> = packet.vars().iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        prop_assert_eq!(got, pairs);
        prop_assert_eq!(&wire[consumed..], &tail[..]);
    }

    #[test]
    fn prop_builder_and_encode_packet_agree(pairs in pairs()) {
        let mut b = PacketBuilder::new(7, 9);
        for (k, v) in &pairs {
            b.push(k, v).unwrap();
        }
        let mut direct = Vec::new();
        encode_packet(7, 9, &pairs, &mut direct).unwrap();
        prop_assert_eq!(&b.finish()[..], &direct[..]);
    }

    #[test]
    fn prop_decode_then_encode_gives_the_consumed_prefix(bytes in prop_oneof![mangled_packet(), prop::collection::vec(any::<u8>(), 0..300)]) {
        if let Ok(Status::Complete { value, consumed }) = Packet::parse(&bytes, &Limits::unlimited()) {
            let pairs: Vec<_> = value.vars().iter().collect();
            let mut again = Vec::new();
            encode_packet(value.modifier1(), value.modifier2(), &pairs, &mut again).unwrap();
            prop_assert_eq!(&again[..], &bytes[..consumed]);
        }
        if let Ok(Status::Complete { value, consumed }) = ArrayPacket::parse(&bytes, &Limits::unlimited()) {
            let items: Vec<_> = value.items().iter().collect();
            let mut again = Vec::new();
            encode_array_packet(value.header().modifier1, value.header().modifier2, &items, &mut again).unwrap();
            prop_assert_eq!(&again[..], &bytes[..consumed]);
        }
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic_and_respect_limits(bytes in prop_oneof![mangled_packet(), prop::collection::vec(any::<u8>(), 0..300)], max_vars in 0usize..8, max_datasize: u16) {
        let limits = Limits::new().max_vars(max_vars).max_datasize(max_datasize);
        match Packet::parse(&bytes, &limits) {
            Ok(Status::Complete { value, consumed }) => {
                prop_assert!(value.vars().len() <= max_vars);
                prop_assert!(value.header().datasize <= max_datasize);
                prop_assert_eq!(consumed, value.encoded_len());
            }
            Ok(Status::Incomplete(i)) => {
                // Never asks for more than the limit allows.
                prop_assert!(bytes.len() + i.needed() <= Header::LEN + usize::from(max_datasize));
                prop_assert!(i.needed() > 0);
            }
            Err(DecodeError::TooLarge { datasize, max }) => prop_assert!(datasize > max),
            Err(_) => {}
        }
        let _ = Vars::parse(&bytes, max_vars);
        let _ = Items::parse(&bytes, max_vars);
    }

    #[test]
    fn prop_streaming_in_any_chunks_equals_one_shot(bytes in mangled_packet(), chunk in 1usize..17) {
        let dec = Decoder::new(Limits::unlimited());
        let whole = dec.decode_eof(&mut BytesMut::from(&bytes[..]));
        let mut buf = BytesMut::new();
        let mut streamed = None;
        for piece in bytes.chunks(chunk) {
            buf.extend_from_slice(piece);
            match dec.decode(&mut buf) {
                Ok(None) => {}
                other => { streamed = Some(other); break; }
            }
        }
        let streamed = streamed.unwrap_or_else(|| dec.decode_eof(&mut buf));
        prop_assert_eq!(whole, streamed);
    }

    #[test]
    fn prop_items_roundtrip(items in prop::collection::vec(value(), 0..40)) {
        let mut wire = Vec::new();
        encode_array_packet(173, 0, &items, &mut wire).unwrap();
        let (p, _) = ArrayPacket::parse(&wire, &Limits::unlimited()).unwrap().at_eof().unwrap();
        let got: Vec<Vec<u8>> = p.items().iter().map(<[u8]>::to_vec).collect();
        prop_assert_eq!(got, items);
    }

    #[test]
    fn prop_content_length_accepts_exactly_decimal_u64(s in "[0-9]{0,22}|[0-9a-z +-]{0,6}") {
        let want = if s.bytes().all(|b| b.is_ascii_digit()) {
            if s.is_empty() { Some(0) } else { s.parse::<u64>().ok() }
        } else {
            None
        };
        prop_assert_eq!(parse_content_length(s.as_bytes()).ok(), want);
    }

    #[test]
    fn prop_encoder_never_writes_on_error(big in 65_536usize..70_000, pairs in pairs()) {
        let mut out = Vec::new();
        let mut with_big = pairs;
        with_big.push((b"K".to_vec(), vec![0; big]));
        prop_assert_eq!(encode_packet(0, 0, &with_big, &mut out), Err(EncodeError::ValueTooLong { len: big }));
        prop_assert!(out.is_empty());
    }
}
