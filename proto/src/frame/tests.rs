//! Round-trip property tests and decoder robustness tests for framing.

use super::golden::{cases, frame_of};
use super::*;
use crate::ChunkEncoding;
use crate::arb;
use bytes::Bytes;
use proptest::prelude::*;

fn golden_frames() -> Vec<Vec<u8>> {
    cases().iter().map(|(msg, _)| frame_of(msg).to_vec()).collect()
}

fn decode_all(bytes: &[u8]) -> Result<Option<Message>, DecodeError> {
    decode(&mut BytesMut::from(bytes))
}

/// A frame with the given tag and body.
fn framed(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32 + 1).to_be_bytes().to_vec();
    out.push(tag);
    out.extend_from_slice(body);
    out
}

fn invalid_field(result: Result<Option<Message>, DecodeError>) -> &'static str {
    match result {
        Err(DecodeError::InvalidField { field, .. }) => field,
        other => panic!("expected InvalidField, got {other:?}"),
    }
}

#[test]
fn every_cut_of_a_frame_needs_more_bytes() {
    for frame in golden_frames() {
        for cut in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(decode(&mut buf), Ok(None), "cut {cut} of {}", hex::encode(&frame));
            assert_eq!(buf.len(), cut, "a partial frame is left in the buffer");
        }
    }
}

#[test]
fn every_cut_of_a_body_is_truncated() {
    for frame in golden_frames() {
        assert_eq!(decode_body(&frame[4..4]), Err(DecodeError::EmptyFrame));
        for cut in 5..frame.len() {
            let result = decode_body(&frame[4..cut]);
            assert!(
                matches!(result, Err(DecodeError::Truncated { tag, .. }) if tag == frame[4]),
                "cut {cut} of {}: {result:?}",
                hex::encode(&frame)
            );
        }
    }
}

#[test]
fn frames_split_anywhere_decode_in_order() {
    let messages: Vec<Message> = cases().into_iter().map(|(m, _)| m).collect();
    let stream: Vec<u8> = golden_frames().concat();
    for step in [1, 3, 7, 64] {
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in stream.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(msg) = decode(&mut buf).unwrap() {
                decoded.push(msg);
            }
        }
        assert_eq!(decoded, messages, "step {step}");
        assert!(buf.is_empty());
    }
}

#[test]
fn oversize_length_is_refused_from_the_prefix_alone() {
    let max = u64::from(MAX_FRAME_LEN);
    for len in [MAX_FRAME_LEN + 1, u32::MAX] {
        let mut buf = BytesMut::from(&len.to_be_bytes()[..]);
        assert_eq!(decode(&mut buf), Err(DecodeError::FrameTooLarge { len: u64::from(len), max }));
        assert_eq!(buf.len(), 4);
    }
    // Exactly the maximum is a legal length: wait for the bytes.
    assert_eq!(decode_all(&MAX_FRAME_LEN.to_be_bytes()), Ok(None));
    assert_eq!(decode_all(&[0x00, 0x80]), Ok(None));
    let big = vec![0x10; MAX_FRAME_LEN as usize + 1];
    assert!(matches!(decode_body(&big), Err(DecodeError::FrameTooLarge { .. })));
}

#[test]
fn zero_length_is_an_empty_frame() {
    assert_eq!(decode_all(&[0, 0, 0, 0]), Err(DecodeError::EmptyFrame));
    assert_eq!(decode_body(&[]), Err(DecodeError::EmptyFrame));
}

#[test]
fn unknown_tags_are_refused() {
    let known: Vec<u8> = cases().iter().map(|(m, _)| m.tag()).collect();
    for tag in (0..=u8::MAX).filter(|t| !known.contains(t)) {
        assert_eq!(decode_all(&framed(tag, &[])), Err(DecodeError::UnknownTag(tag)));
        assert_eq!(decode_body(&[tag, 1, 2]), Err(DecodeError::UnknownTag(tag)));
    }
}

#[test]
fn trailing_bytes_are_refused() {
    for frame in golden_frames() {
        let mut body = frame[5..].to_vec();
        body.push(0);
        let tag = frame[4];
        let expected = DecodeError::TrailingBytes { tag, extra: 1 };
        assert_eq!(decode_all(&framed(tag, &body)), Err(expected.clone()));
        let mut bare = vec![tag];
        bare.extend_from_slice(&body);
        assert_eq!(decode_body(&bare), Err(expected));
    }
}

#[test]
fn booleans_and_option_markers_are_zero_or_one() {
    let mut get_chunks = golden_frames()[8].clone();
    assert_eq!(get_chunks[4], 0x30);
    *get_chunks.last_mut().unwrap() = 2;
    assert_eq!(invalid_field(decode_all(&get_chunks)), "accept_zstd");

    // GetManifest{cars, None} with option marker 2.
    let body = [&[0, 0, 0, 4][..], b"cars", &[2]].concat();
    assert_eq!(invalid_field(decode_all(&framed(0x20, &body))), "version");
}

#[test]
fn enum_codes_outside_their_range_are_refused() {
    // HelloAck with role 0.
    let mut hello_ack = golden_frames()[1].clone();
    *hello_ack.last_mut().unwrap() = 0;
    assert_eq!(invalid_field(decode_all(&hello_ack)), "peer_role");
    // Chunk with encoding 2 (the byte after file and index).
    let mut chunk = golden_frames()[9].clone();
    chunk[4 + 1 + 8] = 2;
    assert_eq!(invalid_field(decode_all(&chunk)), "encoding");
    // PublishBegin (empty definition) with format 2, then mode 2.
    let mut begin = golden_frames()[13].clone();
    begin[4 + 1 + 4] = 2;
    assert_eq!(invalid_field(decode_all(&begin)), "format");
    begin[4 + 1 + 4] = 0;
    begin[4 + 1 + 5] = 2;
    assert_eq!(invalid_field(decode_all(&begin)), "mode");
    // DatasetList entry with share type 0.
    let mut list = golden_frames()[3].clone();
    let len = list.len();
    list[len - 2] = 0;
    assert_eq!(invalid_field(decode_all(&list)), "datasets.share_type");
}

#[test]
fn invalid_ids_are_refused() {
    let get_manifest = |id: &[u8]| {
        let body = [&(id.len() as u32).to_be_bytes()[..], id, &[0]].concat();
        decode_all(&framed(0x20, &body))
    };
    for bad in [&b""[..], b"Cars", b"-cars", b"a b", &[b'a'; 129]] {
        assert_eq!(invalid_field(get_manifest(bad)), "dataset", "{bad:?}");
    }
    assert!(get_manifest(&[b'a'; 128]).is_ok());

    let hello_ack = |node_dept: &[u8]| {
        let body =
            [&[0, 0, 0, 0][..], &(node_dept.len() as u32).to_be_bytes(), node_dept, &[0, 0, 0, 1, b'h', 2]]
                .concat();
        decode_all(&framed(0x02, &body))
    };
    assert!(hello_ack(b"interior").is_ok());
    assert_eq!(invalid_field(hello_ack(b"Interior")), "node_dept");
    assert_eq!(invalid_field(hello_ack(&[b'd'; 65])), "node_dept");
}

#[test]
fn version_zero_is_refused() {
    // GetChunks{cars, version 0, ...}
    let mut get_chunks = golden_frames()[8].clone();
    get_chunks[4 + 1 + 8..4 + 1 + 16].fill(0);
    assert_eq!(invalid_field(decode_all(&get_chunks)), "version");
    // GetManifest{cars, Some(0)}
    let body = [&[0, 0, 0, 4][..], b"cars", &[1], &[0; 8]].concat();
    assert_eq!(invalid_field(decode_all(&framed(0x20, &body))), "version");
}

#[test]
fn text_must_be_utf8() {
    let body = [&[0, 0][..], &[0, 0, 0, 2], &[0xc3, 0x28]].concat();
    assert_eq!(invalid_field(decode_all(&framed(0x01, &body))), "agent");
}

#[test]
fn huge_counts_and_lengths_fail_without_allocating() {
    // DatasetList claiming 2^32-1 entries in a 9-byte frame.
    let result = decode_all(&framed(0x11, &[0xff; 4]));
    assert!(matches!(result, Err(DecodeError::Truncated { field: "datasets", .. })), "{result:?}");
    // PublishData claiming a 4 GiB payload.
    let result = decode_all(&framed(0x41, &[0xff, 0xff, 0xff, 0xff, 0]));
    assert_eq!(result, Err(DecodeError::Truncated { tag: 0x41, field: "data", needed: 0xffff_ffff - 1 }));
}

#[test]
fn decoded_payloads_share_the_receive_buffer() {
    let frame = golden_frames()[14].clone();
    let mut buf = BytesMut::from(&frame[..]);
    let start = buf.as_ptr() as usize;
    let Some(Message::PublishData { data }) = decode(&mut buf).unwrap() else {
        panic!("golden frame 14 is PublishData");
    };
    assert_eq!(data, Bytes::from_static(b"abc"));
    assert_eq!(data.as_ptr() as usize, start + frame.len() - 3);
}

#[test]
fn size_limit_is_reported_before_encoding() {
    let headroom = MAX_FRAME_LEN as usize - 1 - 4;
    let fitting = Message::PublishData { data: Bytes::from(vec![0; headroom]) };
    assert!(fits(&fitting));
    assert_eq!(encoded_len(&fitting), LEN_PREFIX_LEN + MAX_FRAME_LEN as usize);
    let mut out = BytesMut::new();
    encode(&fitting, &mut out);
    assert_eq!(decode(&mut out), Ok(Some(fitting)));

    let too_big = Message::PublishData { data: Bytes::from(vec![0; headroom + 1]) };
    assert!(!fits(&too_big));
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "the maximum is")]
fn encoding_an_oversize_message_is_a_caller_bug() {
    let data = Bytes::from(vec![0; MAX_FRAME_LEN as usize]);
    encode(&Message::PublishData { data }, &mut BytesMut::new());
}

#[test]
fn manifest_data_header_refuses_what_no_frame_carries() {
    let mut out = BytesMut::new();
    assert_eq!(encode_manifest_data_header(MAX_FRAME_LEN as usize, &mut out), None);
    assert_eq!(encode_manifest_data_header(usize::MAX, &mut out), None);
    assert!(out.is_empty(), "nothing is written for a refused frame");
    assert_eq!(encode_manifest_data_header(MAX_FRAME_LEN as usize - 1, &mut out), Some(()));
}

proptest! {
    #[test]
    fn stored_manifest_behind_its_header_is_the_manifest_data_frame(signed in arb::signed_manifest()) {
        let stored = signed.encode();
        let mut frame = BytesMut::new();
        prop_assert_eq!(encode_manifest_data_header(stored.len(), &mut frame), Some(()));
        frame.extend_from_slice(&stored);
        prop_assert_eq!(&frame[..], &frame_of(&Message::ManifestData { signed })[..]);
    }

    #[test]
    fn every_message_round_trips(msg in arb::message()) {
        let frame = frame_of(&msg);
        prop_assert_eq!(encoded_len(&msg), frame.len());
        prop_assert_eq!(frame[4], msg.tag());
        prop_assert_eq!(&frame[..4], &(frame.len() as u32 - 4).to_be_bytes()[..]);
        prop_assert_eq!(decode_body(&frame[4..]), Ok(msg.clone()));
        let mut buf = frame.clone();
        buf.extend_from_slice(&[0x00, 0x00]);
        prop_assert_eq!(decode(&mut buf), Ok(Some(msg)));
        prop_assert_eq!(&buf[..], &[0x00, 0x00][..]);
    }

    #[test]
    fn message_sequences_round_trip(msgs in proptest::collection::vec(arb::message(), 0..6)) {
        let mut buf = BytesMut::new();
        for msg in &msgs {
            encode(msg, &mut buf);
        }
        let mut decoded = Vec::new();
        while let Some(msg) = decode(&mut buf)? {
            decoded.push(msg);
        }
        prop_assert_eq!(decoded, msgs);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        crate::fuzz_decode(&data);
    }

    #[test]
    fn mutated_golden_frames_never_panic(
        case in 0..cases().len(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut frame = golden_frames()[case].clone();
        for (at, byte) in flips {
            let i = at.index(frame.len());
            frame[i] = byte;
        }
        crate::fuzz_decode(&frame);
        crate::fuzz_decode(&frame[4..]);
    }
}

/// The piecewise chunk path agrees with `decode`: same fields for good frames, and a header
/// it accepts is one `decode` accepts, for every single-byte change of the header.
#[test]
fn chunk_header_agrees_with_decode() {
    let msg = Message::Chunk {
        file: 7,
        index: 3,
        encoding: ChunkEncoding::Zstd,
        raw_len: 1_000,
        data: Bytes::from_static(b"payload bytes"),
    };
    let mut buf = BytesMut::new();
    encode(&msg, &mut buf);
    let frame = buf.to_vec();
    assert!(is_chunk_frame(&frame));
    let header: [u8; CHUNK_HEADER_LEN] = frame[..CHUNK_HEADER_LEN].try_into().expect("long enough");
    let parsed = decode_chunk_header(&header).expect("valid header");
    assert_eq!(
        parsed,
        ChunkHeader { file: 7, index: 3, encoding: ChunkEncoding::Zstd, raw_len: 1_000, data_len: 13 }
    );
    for at in 0..CHUNK_HEADER_LEN {
        for value in [0u8, 1, 2, 0x31, 0x7f, 0xff] {
            let mut changed = frame.clone();
            changed[at] = value;
            let header: [u8; CHUNK_HEADER_LEN] = changed[..CHUNK_HEADER_LEN].try_into().expect("len");
            if let Ok(h) = decode_chunk_header(&header) {
                let whole = decode_all(&changed);
                let Ok(Some(Message::Chunk { file, index, encoding, raw_len, data })) = whole else {
                    panic!("header accepted at byte {at}={value:#x} but decode gives {whole:?}");
                };
                assert_eq!(
                    (file, index, encoding, raw_len, data.len() as u32),
                    (h.file, h.index, h.encoding, h.raw_len, h.data_len)
                );
            }
        }
    }
}

/// A read for a grant: the grant's number, then a whole read frame's tag and body.
#[test]
fn a_read_for_a_grant_wraps_one_read_and_nothing_else() {
    let dataset = crate::DatasetId::new("cars").unwrap();
    let manifest = Message::GetManifest {
        dataset: dataset.clone(),
        version: None,
        method: crate::ServiceMethod::Subscription,
    };
    let wrapped = Message::ForGrant { grant: 7, read: Box::new(manifest.clone()) };
    let mut out = BytesMut::new();
    encode(&wrapped, &mut out);
    let mut inner = BytesMut::new();
    encode(&manifest, &mut inner);
    let mut expected = ((inner.len() - 4 + 1 + 8) as u32).to_be_bytes().to_vec();
    expected.push(0x15);
    expected.extend_from_slice(&7u64.to_be_bytes());
    expected.extend_from_slice(&inner[4..]);
    assert_eq!(hex::encode(&out), hex::encode(&expected));
    assert_eq!(decode_all(&out), Ok(Some(wrapped)));
    let versions = Message::ListVersions { dataset, method: crate::ServiceMethod::Download };
    let wrapped = Message::ForGrant { grant: u64::MAX, read: Box::new(versions) };
    let mut out = BytesMut::new();
    encode(&wrapped, &mut out);
    assert_eq!(decode_all(&out), Ok(Some(wrapped)));
    assert_eq!(FrameBounds::Request.max_len(0x15), Some(MAX_SMALL_REQUEST_LEN));

    // Another message, or a second envelope, inside is refused.
    let mut body = 7u64.to_be_bytes().to_vec();
    body.push(0x10);
    assert_eq!(invalid_field(decode_all(&framed(0x15, &body))), "read");
    let mut nested = 7u64.to_be_bytes().to_vec();
    nested.push(0x15);
    nested.extend_from_slice(&body);
    assert_eq!(invalid_field(decode_all(&framed(0x15, &nested))), "read");
    // A truncated inner read is reported as such.
    let mut cut = 7u64.to_be_bytes().to_vec();
    cut.push(0x12);
    assert!(matches!(decode_all(&framed(0x15, &cut)), Err(DecodeError::Truncated { tag: 0x15, .. })));
}
