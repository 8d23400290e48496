//! `[scrub]`: how often the node re-hashes what it stores, and how fast (see
//! [`crate::data::scrub`], which does it; [`super::Config`] holds the parsed form).
//!
//! ```toml
//! [scrub]
//! enabled = true        # default
//! interval = "7d"       # default: a full pass a week
//! rate = "50MiB/s"      # default: bytes read per second, so serving is not starved
//! ```

use super::ConfigError;
use bytesize::ByteSize;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawScrub {
    #[serde(default = "default_enabled")]
    enabled: bool,
    #[serde(default = "default_interval", with = "humantime_serde")]
    interval: Duration,
    #[serde(default = "default_rate")]
    rate: String,
}

impl Default for RawScrub {
    fn default() -> Self {
        Self { enabled: default_enabled(), interval: default_interval(), rate: default_rate() }
    }
}

fn default_enabled() -> bool {
    true
}

fn default_interval() -> Duration {
    Duration::from_secs(7 * 86_400)
}

fn default_rate() -> String {
    "50MiB/s".into()
}

/// When and how fast the node scrubs its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrubConfig {
    /// Whether the node scrubs on its own; an operator's `ferry verify` works either way.
    pub enabled: bool,
    /// Time from the end of one full pass to the start of the next (kept across restarts).
    pub interval: Duration,
    /// Most bytes read from the store per second.
    pub rate: u64,
}

impl Default for ScrubConfig {
    fn default() -> Self {
        Self { enabled: true, interval: default_interval(), rate: 50 << 20 }
    }
}

/// Parses a rate written as a size per second: `"50MiB/s"` (the `/s` may be left out).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let size = text.trim().strip_suffix("/s").unwrap_or(text).trim();
    let bytes = size.parse::<ByteSize>().map_err(|e| format!("{text:?} is not a size per second: {e}"))?;
    match bytes.as_u64() {
        0 => Err("must be more than zero bytes per second".into()),
        n => Ok(n),
    }
}

pub(super) fn parse(
    raw: RawScrub,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<ScrubConfig, ConfigError> {
    if raw.interval.is_zero() {
        return Err(invalid("scrub.interval", "must be longer than zero".into()));
    }
    let rate = parse_rate(&raw.rate).map_err(|message| invalid("scrub.rate", message))?;
    Ok(ScrubConfig { enabled: raw.enabled, interval: raw.interval, rate })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn parse_text(text: &str) -> Result<ScrubConfig, String> {
        let raw: RawScrub = toml::from_str(text).map_err(|e| e.to_string())?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: PathBuf::from("n.toml"),
            key: key.to_owned(),
            message,
        };
        parse(raw, &invalid).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_weekly_at_fifty_mib_per_second() {
        assert_eq!(parse_text("").unwrap(), ScrubConfig::default());
        assert_eq!(ScrubConfig::default().rate, 50 * 1024 * 1024);
        assert!(ScrubConfig::default().enabled);
    }

    #[test]
    fn interval_and_rate_are_parsed() {
        let c = parse_text("interval = \"1h\"\nrate = \"200 MiB/s\"\nenabled = false").unwrap();
        assert_eq!(c, ScrubConfig { enabled: false, interval: Duration::from_secs(3600), rate: 200 << 20 });
        assert_eq!(parse_rate("1MB").unwrap(), 1_000_000);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("interval = \"0s\"", "scrub.interval"),
            ("rate = \"fast\"", "scrub.rate"),
            ("rate = \"0MiB/s\"", "scrub.rate"),
        ] {
            let err = parse_text(text).unwrap_err();
            assert!(err.contains(key), "{text}: {err}");
        }
        assert!(parse_text("speed = \"1MiB/s\"").unwrap_err().contains("speed"));
    }
}
