//! The serving side of a subscription: a `Subscribe{dataset, have}` stream, once the dispatcher
//! (`crate::net::dispatch`) has authorized it, is answered with an `Announce` of the latest
//! version this node holds when it is newer than `have`, then one for each version committed
//! later ([`super::announce`]), until the subscriber ends the stream or the node drains. The
//! subscriber's `Holding` frames are read on the same stream (bounded by
//! `FrameBounds::Subscription`, which the dispatcher sets) and kept as its lag metrics.
//!
//! The stream holds no serve budget and no timer that could keep the node: it waits on the
//! announcements and on the subscriber's frames only, the streams-per-peer limit caps how many
//! a peer keeps, a subscriber that stops reading is reset by the writer's stall timeout, and a
//! revoked grant is the dispatcher's to end.

use super::announce::{Announced, Announcements, lag, now_ms};
use super::metrics::{SubscriberLabel, SubscriptionMetrics};
use crate::data::service::Refusal;
use crate::data::store::Store;
use ferry_net::wire::{FrameReader, FrameWriter};
use ferry_proto::{DatasetId, ErrorCode, Message, VersionNo};
use std::time::Duration;
use tokio::sync::watch;

/// How often a subscriber's seconds-behind gauge is refreshed while nothing happens.
const REFRESH: Duration = Duration::from_secs(1);

/// One subscriber's stream.
#[derive(Debug)]
pub struct SubscriberStream<'a> {
    pub announcements: &'a Announcements,
    pub store: &'a Store,
    pub metrics: &'a SubscriptionMetrics,
    pub dataset: DatasetId,
    /// What the subscriber said it holds when it subscribed.
    pub have: Option<VersionNo>,
    /// The peer's certificate name, the metrics' label.
    pub subscriber: String,
}

/// Removes a subscriber's series when its stream ends, however it ends.
struct SeriesGuard<'a>(&'a SubscriptionMetrics, SubscriberLabel);

impl Drop for SeriesGuard<'_> {
    fn drop(&mut self) {
        self.0.subscriber_gone(&self.1);
    }
}

impl SubscriberStream<'_> {
    /// Serves the stream (see the module doc). `Ok` when the subscriber ended it or the node
    /// drains; `Err` when it sent something other than `Holding` for its dataset, or could not
    /// be written to.
    pub async fn serve(
        self,
        reader: &mut FrameReader,
        writer: &mut FrameWriter,
        draining: Option<watch::Receiver<bool>>,
    ) -> Result<(), Refusal> {
        let label =
            SubscriberLabel { dataset: self.dataset.to_string(), subscriber: self.subscriber.clone() };
        let _series = SeriesGuard(self.metrics, label.clone());
        let (holding_tx, holding) = watch::channel(self.have);
        // The reader runs as one future for the stream's life: a frame is never cut in half.
        let read_side = read_holdings(reader, &self.dataset, holding_tx);
        let write_side = self.announce(writer, holding, &label);
        let drained = async {
            match draining {
                Some(mut d) => {
                    let _ = d.wait_for(|d| *d).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = read_side => result,
            result = write_side => result,
            () = drained => Ok(()),
        }
    }

    async fn announce(
        &self,
        writer: &mut FrameWriter,
        mut holding: watch::Receiver<Option<VersionNo>>,
        label: &SubscriberLabel,
    ) -> Result<(), Refusal> {
        let mut latest = self.announcements.watch(&self.dataset, self.store);
        let mut told = self.have;
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now: Option<Announced> = latest.borrow_and_update().clone();
            if let Some(now) = &now
                && told.is_none_or(|t| now.version > t)
            {
                let frame = Message::Announce {
                    dataset: self.dataset.clone(),
                    version: now.version,
                    publisher: now.publisher.clone(),
                    committed_ms: now.committed_ms,
                };
                writer.send(&frame).await?;
                told = Some(now.version);
            }
            let held = *holding.borrow_and_update();
            let (versions, seconds) = lag(self.announcements, &self.dataset, held, now.as_ref(), now_ms());
            self.metrics.subscriber(label, versions, seconds);
            tokio::select! {
                changed = latest.changed() => if changed.is_err() { return Ok(()) },
                changed = holding.changed() => if changed.is_err() { return Ok(()) },
                _ = refresh.tick() => {}
            }
        }
    }
}

/// Reads the subscriber's `Holding` frames into `holding` until it ends the stream.
async fn read_holdings(
    reader: &mut FrameReader,
    dataset: &DatasetId,
    holding: watch::Sender<Option<VersionNo>>,
) -> Result<(), Refusal> {
    loop {
        match reader.next().await {
            Ok(None) => return Ok(()),
            Ok(Some(Message::Holding { dataset: d, version })) if d == *dataset => {
                holding.send_replace(version);
            }
            Ok(Some(Message::Holding { dataset: d, .. })) => {
                return Err(Refusal::new(
                    ErrorCode::BadRequest,
                    format!("this stream follows {dataset}; Holding names {d}"),
                ));
            }
            Ok(Some(other)) => {
                let name = ferry_proto::exchange::message_name(&other);
                return Err(Refusal::new(ErrorCode::BadRequest, format!("{name} on a subscription stream")));
            }
            // A lost connection or a malformed frame ends the stream; the subscriber reconnects.
            Err(e) => return Err(Refusal::new(ErrorCode::BadRequest, e.to_string())),
        }
    }
}
