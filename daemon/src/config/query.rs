//! `[query]`: what one peer may take of the node's online query service (see
//! [`crate::data::query`], which enforces it; [`super::Config`] holds the parsed form).
//!
//! ```toml
//! [query]
//! max-rows = 100000           # default: rows in one result; beyond it the result is truncated
//! max-result = "64MiB"        # default: encoded bytes of one result; beyond it, truncated
//! timeout = "30s"             # default: a query running longer is stopped (Unavailable)
//! concurrent-per-peer = 4     # default: queries one identity runs at once; more: Unavailable
//! cache = "64MiB"             # default: verified file chunks and footers kept between queries
//! ```

use super::ConfigError;
use bytesize::ByteSize;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawQuery {
    #[serde(default = "default_max_rows")]
    max_rows: u64,
    #[serde(default = "default_max_result")]
    max_result: ByteSize,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
    #[serde(default = "default_concurrent")]
    concurrent_per_peer: usize,
    #[serde(default = "default_cache")]
    cache: ByteSize,
}

impl Default for RawQuery {
    fn default() -> Self {
        Self {
            max_rows: default_max_rows(),
            max_result: default_max_result(),
            timeout: default_timeout(),
            concurrent_per_peer: default_concurrent(),
            cache: default_cache(),
        }
    }
}

fn default_max_rows() -> u64 {
    100_000
}
fn default_max_result() -> ByteSize {
    ByteSize::mib(64)
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_concurrent() -> usize {
    4
}
fn default_cache() -> ByteSize {
    ByteSize::mib(64)
}

/// The bounds of online queries, per peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryConfig {
    /// Most rows one result holds; a query asking more gets this many, marked truncated.
    pub max_rows: u64,
    /// Most encoded bytes one result holds; the result stops after the batch that reaches it,
    /// marked truncated.
    pub max_result: u64,
    /// Longest a query may run; over it the query stops with `Unavailable`.
    pub timeout: Duration,
    /// Most queries one identity runs at once; one more is refused with `Unavailable`.
    pub concurrent_per_peer: usize,
    /// Bytes of verified file chunks and parsed footers kept between queries.
    pub cache: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            max_rows: default_max_rows(),
            max_result: default_max_result().as_u64(),
            timeout: default_timeout(),
            concurrent_per_peer: default_concurrent(),
            cache: default_cache().as_u64(),
        }
    }
}

pub(super) fn parse(
    raw: RawQuery,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<QueryConfig, ConfigError> {
    if raw.max_rows == 0 {
        return Err(invalid("query.max-rows", "must be at least 1".into()));
    }
    if raw.max_result.as_u64() == 0 {
        return Err(invalid("query.max-result", "must be more than zero bytes".into()));
    }
    if raw.timeout.is_zero() {
        return Err(invalid("query.timeout", "must be longer than zero".into()));
    }
    if raw.concurrent_per_peer == 0 {
        return Err(invalid("query.concurrent-per-peer", "must be at least 1".into()));
    }
    Ok(QueryConfig {
        max_rows: raw.max_rows,
        max_result: raw.max_result.as_u64(),
        timeout: raw.timeout,
        concurrent_per_peer: raw.concurrent_per_peer,
        cache: raw.cache.as_u64(),
    })
}
