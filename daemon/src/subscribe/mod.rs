//! Subscriptions (the `subscription` service method): datasets flow to the nodes that subscribe
//! to them, each new version announced as soon as it is committed.
//!
//! - [`announce`]: the latest version of each dataset this node committed (published or
//!   replicated), which the data service (`crate::data::service`) feeds;
//! - [`serve`]: the serving side of a `Subscribe` stream, which the dispatcher
//!   (`crate::net::dispatch`) hands an authorized subscription;
//! - [`spec`]: what a subscription is (config `[[subscription]]` or `ferry subscription add`);
//! - [`registry`]: the node's subscriptions, persisted, one [`follow`] task each, which keeps a
//!   stream open to the peer and pulls each announced version;
//! - [`metrics`]: lag per subscriber at the serving node, lag and pulls per subscription at the
//!   subscribing one.

pub mod announce;
pub mod calls;
pub mod follow;
pub mod metrics;
pub mod registry;
pub mod serve;
pub mod spec;

pub use metrics::SubscriptionMetrics;
pub use registry::{SubscriptionParts, Subscriptions};
pub use spec::{SubscriptionError, SubscriptionSpec, SubscriptionTarget};
