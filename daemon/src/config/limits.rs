//! `[limits]`: what one authenticated peer may hold of a node — streams, connections, time —
//! before it is refused or cut off. Every key has a default sized for honest clients (the CLI
//! and nodes pull on 4–64 streams of one connection); `DESIGN.md` ("Limits per peer") lists them.
//! The frame-size bounds by request kind are the protocol's (`ferry_proto::frame::FrameBounds`),
//! and the fair share of the serve budget follows from `transfer.serve-buffer`. The bandwidth
//! timetables (`serve-bwlimit`, `pull-bwlimit` and their neighbours) are read by `super::bandwidth`.

use super::ConfigError;
use super::bandwidth::{self, BandwidthLimits, RawBandwidth};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawLimits {
    #[serde(default = "default_streams_per_connection")]
    streams_per_connection: u32,
    #[serde(default = "default_streams_per_peer")]
    streams_per_peer: usize,
    #[serde(default = "default_connections_per_peer")]
    connections_per_peer: usize,
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    request_timeout: Duration,
    #[serde(default = "default_upload_frame_timeout", with = "humantime_serde")]
    upload_frame_timeout: Duration,
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    stall_timeout: Duration,
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    idle_timeout: Duration,
    #[serde(default = "default_replicate_lock_timeout", with = "humantime_serde")]
    replicate_lock_timeout: Duration,
    /// Bandwidth timetables (`super::bandwidth`); none by default.
    #[serde(default)]
    serve_bwlimit: Option<String>,
    #[serde(default)]
    serve_bwlimit_per_peer: Option<String>,
    #[serde(default)]
    serve_bwlimit_by_dept: BTreeMap<String, String>,
    #[serde(default)]
    pull_bwlimit: Option<String>,
    #[serde(default)]
    pull_bwlimit_by_peer: BTreeMap<String, String>,
    #[serde(default)]
    bwlimit_timezone: Option<String>,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            streams_per_connection: default_streams_per_connection(),
            streams_per_peer: default_streams_per_peer(),
            connections_per_peer: default_connections_per_peer(),
            request_timeout: default_request_timeout(),
            upload_frame_timeout: default_upload_frame_timeout(),
            stall_timeout: default_stall_timeout(),
            idle_timeout: default_idle_timeout(),
            replicate_lock_timeout: default_replicate_lock_timeout(),
            serve_bwlimit: None,
            serve_bwlimit_per_peer: None,
            serve_bwlimit_by_dept: BTreeMap::new(),
            pull_bwlimit: None,
            pull_bwlimit_by_peer: BTreeMap::new(),
            bwlimit_timezone: None,
        }
    }
}

/// A node's own pulls run up to 64 streams (`transfer.streams`), plus a request or two beside.
fn default_streams_per_connection() -> u32 {
    72
}
/// Two connections' worth of a node's widest pull.
fn default_streams_per_peer() -> usize {
    144
}
/// A few CLI commands at once, or a node replicating several datasets.
fn default_connections_per_peer() -> usize {
    16
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_upload_frame_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_stall_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}
fn default_replicate_lock_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}

/// What one peer may hold of the node (`[limits]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Request streams one connection may have open at once (QUIC's stream credit; a client
    /// asking for more waits). Unidirectional streams are refused outright.
    pub streams_per_connection: u32,
    /// Request streams one identity may have open over all its connections; one more is
    /// answered `Unavailable`.
    pub streams_per_peer: usize,
    /// Connections one identity may hold at once; one more is closed with
    /// `crate::net::CLOSE_TOO_MANY_CONNECTIONS`.
    pub connections_per_peer: usize,
    /// Time from a stream's opening to its request frame having arrived whole.
    pub request_timeout: Duration,
    /// Time each frame of an upload may take to arrive.
    pub upload_frame_timeout: Duration,
    /// Time an answer's write may wait with the peer taking nothing before its stream is reset
    /// (which frees the serve budget it held).
    pub stall_timeout: Duration,
    /// Time a connection may stay with no request stream open before it is closed, keep-alives
    /// notwithstanding.
    pub idle_timeout: Duration,
    /// Time a replication waits for another replication of the same dataset to finish.
    pub replicate_lock_timeout: Duration,
    /// Bandwidth timetables of served chunks and of the node's own pulls.
    pub bandwidth: BandwidthLimits,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        checked(RawLimits::default(), BandwidthLimits::default())
    }
}

pub(super) fn parse(
    mut raw: RawLimits,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<LimitsConfig, ConfigError> {
    if !(1..=1024).contains(&raw.streams_per_connection) {
        let n = raw.streams_per_connection;
        return Err(invalid("limits.streams-per-connection", format!("{n} is outside 1..=1024")));
    }
    for (key, n) in [
        ("limits.streams-per-peer", raw.streams_per_peer),
        ("limits.connections-per-peer", raw.connections_per_peer),
    ] {
        if n == 0 {
            return Err(invalid(key, "must be at least 1".into()));
        }
    }
    for (key, d) in [
        ("limits.request-timeout", raw.request_timeout),
        ("limits.upload-frame-timeout", raw.upload_frame_timeout),
        ("limits.stall-timeout", raw.stall_timeout),
        ("limits.idle-timeout", raw.idle_timeout),
        ("limits.replicate-lock-timeout", raw.replicate_lock_timeout),
    ] {
        if d.is_zero() {
            return Err(invalid(key, "must be longer than zero".into()));
        }
    }
    let bandwidth = bandwidth::parse(
        RawBandwidth {
            serve: raw.serve_bwlimit.take(),
            serve_per_peer: raw.serve_bwlimit_per_peer.take(),
            serve_by_dept: std::mem::take(&mut raw.serve_bwlimit_by_dept),
            pull: raw.pull_bwlimit.take(),
            pull_by_peer: std::mem::take(&mut raw.pull_bwlimit_by_peer),
            timezone: raw.bwlimit_timezone.take(),
        },
        invalid,
    )?;
    Ok(checked(raw, bandwidth))
}

/// The typed limits of `raw`, whose values [`parse`] has checked (the defaults pass).
fn checked(raw: RawLimits, bandwidth: BandwidthLimits) -> LimitsConfig {
    LimitsConfig {
        streams_per_connection: raw.streams_per_connection,
        streams_per_peer: raw.streams_per_peer,
        connections_per_peer: raw.connections_per_peer,
        request_timeout: raw.request_timeout,
        upload_frame_timeout: raw.upload_frame_timeout,
        stall_timeout: raw.stall_timeout,
        idle_timeout: raw.idle_timeout,
        replicate_lock_timeout: raw.replicate_lock_timeout,
        bandwidth,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<LimitsConfig, String> {
        let raw: RawLimits = toml::from_str(text).map_err(|e| e.to_string())?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: "n.toml".into(),
            key: key.to_owned(),
            message,
        };
        parse(raw, &invalid).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_documented_values() {
        let limits = LimitsConfig::default();
        assert_eq!(limits, parse_text("").unwrap());
        assert_eq!(limits.streams_per_connection, 72);
        assert_eq!(limits.connections_per_peer, 16);
        assert_eq!(limits.idle_timeout, Duration::from_secs(600));
    }

    #[test]
    fn keys_parse_and_bad_values_are_named() {
        let limits = parse_text("stall-timeout = \"2s\"\nconnections-per-peer = 3\n").unwrap();
        assert_eq!(limits.stall_timeout, Duration::from_secs(2));
        assert_eq!(limits.connections_per_peer, 3);
        for (text, key) in [
            ("streams-per-connection = 0", "limits.streams-per-connection"),
            ("streams-per-peer = 0", "limits.streams-per-peer"),
            ("idle-timeout = \"0s\"", "limits.idle-timeout"),
            ("request-timout = \"1s\"", "request-timout"),
        ] {
            let err = parse_text(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
    }
}
