//! The body of the `decode_frame` fuzz target (`fuzz/fuzz_targets/decode_frame.rs`) and of the
//! corpus replay test (`tests/it/fuzz_corpus.rs`): arbitrary bytes go to every decoder that reads
//! peer or file input, and whatever decodes must encode back to the very same bytes.

use crate::frame;
use crate::manifest::{MAX_MANIFEST_LEN, Manifest, SignedManifest};
use crate::path::RelPath;
use bytes::BytesMut;

/// Runs `data` through every decoder. Panics only if a decoder panics or a round trip breaks.
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    decode_stream(data);
    if let Ok(msg) = frame::decode_body(data) {
        let framed = encode(&msg);
        assert_eq!(&framed[frame::LEN_PREFIX_LEN..], data, "decode_body is not canonical");
    }
    if let Ok(signed) = SignedManifest::decode(data) {
        assert_eq!(signed.encode(), data, "SignedManifest is not canonical");
        manifest_json(&signed.body);
    }
    manifest_json(data);
    if let Ok(text) = std::str::from_utf8(data) {
        relative_path(text);
    }
}

/// Frames off a buffer holding `data` until more bytes are needed or a frame is refused.
fn decode_stream(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let mut offset = 0;
    while let Ok(Some(msg)) = frame::decode(&mut buf) {
        let end = data.len() - buf.len();
        assert_eq!(encode(&msg), &data[offset..end], "decode is not canonical");
        assert_eq!(frame::encoded_len(&msg), end - offset);
        offset = end;
    }
}

fn encode(msg: &crate::Message) -> BytesMut {
    let mut out = BytesMut::new();
    frame::encode(msg, &mut out);
    out
}

fn manifest_json(data: &[u8]) {
    if let Ok(manifest) = Manifest::from_json(data) {
        let json = manifest.to_json();
        if json.len() <= MAX_MANIFEST_LEN {
            assert_eq!(Manifest::from_json(&json), Ok(manifest), "manifest JSON round trip");
        }
    }
}

fn relative_path(text: &str) {
    if let Ok(path) = RelPath::parse(text) {
        assert!(!path.as_str().starts_with('/'));
        assert!(path.components().all(|c| !c.is_empty() && c != "." && c != ".."));
    }
}
