//! The policy push: a node opens a stream with `PolicySubscribe{have}`; the node it follows
//! answers with `PolicySnapshot{signed}` at once and again at every change (a new serial, or a
//! refresh of the same serial issued later), until either side ends the stream. An `Error`
//! frame ends it. Serials on one stream never decrease.
//!
//! Sender: [`PolicyPublisher`] says whether the snapshot held now is to be sent; receiver:
//! [`PolicyFollower`] checks each frame and hands the signed document on. Neither verifies a
//! signature: that is the receiving node's replica's job, with the CA it trusts; the follower
//! only refuses frames out of sequence.

use crate::error::{DecodeError, ErrorCode};
use crate::message::Message;
use crate::policy::PolicySnapshot;
use crate::signed::SignedDocument;
use bytes::Bytes;

/// Why a policy stream is out of step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyStreamError {
    #[error("expected PolicySnapshot, got {got}")]
    Unexpected { got: &'static str },
    #[error("a PolicySnapshot frame that is not a signed document: {0}")]
    Undecodable(DecodeError),
    #[error("a PolicySnapshot whose body is not a policy snapshot: {0}")]
    NotAPolicy(String),
    #[error("serial {got} after serial {previous} on the same stream")]
    SerialWentBack { previous: u64, got: u64 },
    #[error("a frame after the end of the stream")]
    AfterEnd,
}

/// What the follower does with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyEvent {
    /// A snapshot to verify and offer to the replica, with the serial its body claims.
    Snapshot { signed: Bytes, serial: u64 },
    /// The serving node ended the stream with an error.
    Ended { code: ErrorCode, message: String },
}

/// The subscribing side of a policy stream.
#[derive(Debug, Default)]
pub struct PolicyFollower {
    last_serial: Option<u64>,
    ended: bool,
}

impl PolicyFollower {
    pub fn new() -> Self {
        Self::default()
    }

    /// The request that opens the stream; `have` is the serial held, if any.
    pub fn subscribe(have: Option<u64>) -> Message {
        Message::PolicySubscribe { have }
    }

    /// Checks one frame of the answer.
    pub fn handle(&mut self, msg: Message) -> Result<PolicyEvent, PolicyStreamError> {
        if self.ended {
            return Err(PolicyStreamError::AfterEnd);
        }
        match msg {
            Message::PolicySnapshot { signed } => {
                let document = SignedDocument::decode(&signed).map_err(PolicyStreamError::Undecodable)?;
                let snapshot = PolicySnapshot::parse(&document.body)
                    .map_err(|e| PolicyStreamError::NotAPolicy(e.to_string()))?;
                if let Some(previous) = self.last_serial
                    && snapshot.serial < previous
                {
                    self.ended = true;
                    return Err(PolicyStreamError::SerialWentBack { previous, got: snapshot.serial });
                }
                self.last_serial = Some(snapshot.serial);
                Ok(PolicyEvent::Snapshot { signed, serial: snapshot.serial })
            }
            Message::Error { code, message } => {
                self.ended = true;
                Ok(PolicyEvent::Ended { code, message })
            }
            other => {
                self.ended = true;
                Err(PolicyStreamError::Unexpected { got: super::message_name(&other) })
            }
        }
    }
}

/// The serving side: sends the snapshot held whenever it differs from the one last sent.
#[derive(Debug, Default)]
pub struct PolicyPublisher {
    last_sent: Option<Bytes>,
}

impl PolicyPublisher {
    pub fn new() -> Self {
        Self::default()
    }

    /// The frame to send for the snapshot held now, or `None` when the peer has it already.
    pub fn next(&mut self, held: Option<&Bytes>) -> Option<Message> {
        let held = held?;
        if self.last_sent.as_ref() == Some(held) {
            return None;
        }
        self.last_sent = Some(held.clone());
        Some(Message::PolicySnapshot { signed: held.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::DeptId;
    use crate::policy::POLICY_FORMAT;

    fn signed(serial: u64, issued_at_ms: i64) -> Bytes {
        let snapshot = PolicySnapshot {
            format: POLICY_FORMAT.into(),
            serial,
            issued_at_ms,
            ministry: DeptId::new("mot").unwrap(),
            datasets: vec![],
            grants: vec![],
        };
        let document =
            SignedDocument { body: snapshot.to_json(), signature: vec![1], signer_chain: vec![vec![2]] };
        Bytes::from(document.encode())
    }

    #[test]
    fn snapshots_flow_in_order_and_an_error_ends_the_stream() {
        let mut follower = PolicyFollower::new();
        let mut publisher = PolicyPublisher::new();
        let first = signed(3, 10);
        let frame = publisher.next(Some(&first)).unwrap();
        assert_eq!(
            follower.handle(frame).unwrap(),
            PolicyEvent::Snapshot { signed: first.clone(), serial: 3 }
        );
        assert_eq!(publisher.next(Some(&first)), None, "the same snapshot is not sent twice");
        let refresh = signed(3, 20);
        let frame = publisher.next(Some(&refresh)).unwrap();
        assert!(matches!(follower.handle(frame).unwrap(), PolicyEvent::Snapshot { serial: 3, .. }));
        let end = Message::Error { code: ErrorCode::Unavailable, message: "draining".into() };
        assert!(matches!(follower.handle(end).unwrap(), PolicyEvent::Ended { .. }));
        let after = follower.handle(Message::PolicySnapshot { signed: signed(4, 30) }).unwrap_err();
        assert_eq!(after, PolicyStreamError::AfterEnd);
    }

    #[test]
    fn out_of_sequence_frames_are_refused() {
        let mut follower = PolicyFollower::new();
        follower.handle(Message::PolicySnapshot { signed: signed(5, 0) }).unwrap();
        let back = follower.handle(Message::PolicySnapshot { signed: signed(4, 1) }).unwrap_err();
        assert_eq!(back, PolicyStreamError::SerialWentBack { previous: 5, got: 4 });
        let mut follower = PolicyFollower::new();
        let wrong = follower.handle(Message::ListDatasets).unwrap_err();
        assert_eq!(wrong, PolicyStreamError::Unexpected { got: "ListDatasets" });
        let mut follower = PolicyFollower::new();
        let garbage = follower.handle(Message::PolicySnapshot { signed: Bytes::from_static(b"\x00") });
        assert!(matches!(garbage, Err(PolicyStreamError::Undecodable(_))));
        let not_policy = SignedDocument { body: b"{}".to_vec(), signature: vec![], signer_chain: vec![] };
        let mut follower = PolicyFollower::new();
        let refused = follower.handle(Message::PolicySnapshot { signed: Bytes::from(not_policy.encode()) });
        assert!(matches!(refused, Err(PolicyStreamError::NotAPolicy(_))));
        assert_eq!(PolicyPublisher::new().next(None), None);
    }
}
