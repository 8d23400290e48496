//! The policy stream: `PolicySubscribe{have}` answered by `PolicySnapshot{signed}` now and at
//! every change, on one long-lived stream (the sequence is `ferry_proto::exchange`'s policy
//! push). A province keeps such a stream open to the ministry ([`follow_ministry`]), reconnecting
//! with backoff; any node answers one from its replica ([`serve_subscription`]).

use super::replica::PolicyReplica;
use ferry_client::conn::{ClientError, Connector};
use ferry_net::wire::FrameWriter;
use ferry_proto::exchange::{PolicyEvent, PolicyFollower, PolicyPublisher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// What a province does with each snapshot it receives, besides installing it.
pub trait SnapshotObserver: Send + Sync {
    /// `Ok(serial)` for an installed snapshot, `Err(reason)` for a refused one.
    fn snapshot(&self, outcome: Result<u64, (&'static str, String)>);
}

/// Keeps a subscription to the ministry open until `draining` turns true.
pub async fn follow_ministry(
    connector: Connector,
    replica: Arc<PolicyReplica>,
    observer: Arc<dyn SnapshotObserver>,
    mut draining: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let attempt = subscribe_once(&connector, &replica, observer.as_ref());
        let result = tokio::select! {
            _ = draining.wait_for(|d| *d) => return,
            result = attempt => result,
        };
        match result {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(e) => {
                tracing::warn!(ministry = %connector.node(), error = %e, retry_in = ?backoff, "policy stream lost")
            }
        }
        tokio::select! {
            _ = draining.wait_for(|d| *d) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn subscribe_once(
    connector: &Connector,
    replica: &PolicyReplica,
    observer: &dyn SnapshotObserver,
) -> Result<(), ClientError> {
    let session = connector.connect().await?;
    let have = replica.held().map(|s| s.serial);
    let mut reader = session.start(&PolicyFollower::subscribe(have)).await?;
    tracing::info!(ministry = %connector.node(), ?have, "following the ministry's policy");
    let mut follower = PolicyFollower::new();
    loop {
        // Frames are read raw: an `Error` frame is part of the sequence, not a failed request.
        let frame = reader.next().await.map_err(ClientError::Wire)?;
        let Some(frame) = frame else { return Ok(()) };
        match follower.handle(frame) {
            Ok(PolicyEvent::Snapshot { signed, .. }) => match replica.offer(&signed, SystemTime::now()) {
                Ok(_) => observer.snapshot(Ok(replica.held().map_or(0, |s| s.serial))),
                Err(e) => {
                    tracing::error!(error = %e, "refused a policy snapshot from the ministry");
                    observer.snapshot(Err((e.reason(), e.to_string())));
                }
            },
            Ok(PolicyEvent::Ended { code, message }) => return Err(ClientError::Remote { code, message }),
            Err(e) => {
                observer.snapshot(Err(("out_of_sequence", e.to_string())));
                return Err(ClientError::Unexpected { expected: "PolicySnapshot", got: e.to_string() });
            }
        }
    }
}

/// Answers a `PolicySubscribe`: the snapshot held now (whatever serial the peer has: its copy
/// may be stale), then each one installed later (a new serial or a refresh), until the peer
/// goes or the node drains.
pub async fn serve_subscription(
    replica: &PolicyReplica,
    writer: &mut FrameWriter,
    mut draining: watch::Receiver<bool>,
) -> Result<(), ferry_net::wire::WireError> {
    let mut updates = replica.subscribe();
    let mut publisher = PolicyPublisher::new();
    loop {
        let held = updates.borrow_and_update().clone();
        if let Some(frame) = publisher.next(held.as_ref()) {
            writer.send(&frame).await?;
        }
        tokio::select! {
            _ = draining.wait_for(|d| *d) => return Ok(()),
            changed = updates.changed() => if changed.is_err() { return Ok(()) },
        }
    }
}
