//! Subscriptions (the `subscription` service method): datasets flow to the nodes that subscribe
//! to them, each new version announced as soon as it is committed.
//!
//! - [`announce`]: the latest version of each dataset this node committed (published or
//!   replicated), which the data service (`crate::data::service`) feeds;
//! - [`serve`]: the serving side of a `Subscribe` stream, which the dispatcher
//!   (`crate::net::dispatch`) hands an authorized subscription;
//! - [`metrics`]: lag per subscriber at the serving node, lag and pulls per subscription at the
//!   subscribing one.

pub mod announce;
pub mod metrics;
pub mod serve;

pub use metrics::SubscriptionMetrics;
