//! Body of the `control_call` fuzz target: the JSON of a `ControlCall` request as the ministry
//! node reads it from any authenticated peer (`ControlRequest::parse`), and of an answer as the
//! CLI reads it (`ControlAnswer::parse`). What parses must survive its JSON round trip.
//!
//! Shared by the fuzz target and its corpus replay (`tests/it/faults.rs` of the testkit).

use ferry_control::api::{ControlAnswer, ControlRequest};

pub fn control_call(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(request) = ControlRequest::parse(text) {
        let _ = request.op();
        let again = ControlRequest::parse(&request.to_json()).expect("a parsed request re-parses");
        assert_eq!(again, request, "ControlRequest JSON round trip");
    }
    if let Ok(answer) = ControlAnswer::parse(text) {
        let _ = ControlAnswer::parse(&answer.to_json()).expect("a parsed answer re-parses");
        let _ = answer.into_result();
    }
}
