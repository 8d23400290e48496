//! Body of the `signed_document` fuzz target: a signed document (policy snapshot, receipt, audit
//! checkpoint) as a node reads it from the ministry's stream or a file (`SignedDocument::decode`),
//! and a policy snapshot's body (`PolicySnapshot::parse`, then what a replica does with it:
//! `accept`, `in_effect`). Whatever decodes must re-encode to the same bytes.
//!
//! Shared by the fuzz target and its corpus replay (`proto/tests/it/fuzz_corpus.rs`).

use ferry_proto::policy::PolicySnapshot;
use ferry_proto::signed::SignedDocument;

pub fn signed_document(data: &[u8]) {
    if let Ok(signed) = SignedDocument::decode(data) {
        assert_eq!(signed.encode(), data, "SignedDocument is not canonical");
        snapshot(&signed.body);
    }
    snapshot(data);
}

fn snapshot(body: &[u8]) {
    let Ok(snapshot) = PolicySnapshot::parse(body) else { return };
    let again = PolicySnapshot::parse(&snapshot.to_json()).expect("a parsed snapshot re-parses");
    assert_eq!(again, snapshot, "policy snapshot JSON round trip");
    assert!(snapshot.accept(Some(&again)).is_ok(), "a snapshot is accepted over itself");
    for dataset in &snapshot.datasets {
        let _ = snapshot.in_effect(&dataset.id, i64::MAX);
        let _ = snapshot.in_effect(&dataset.id, i64::MIN);
    }
}
