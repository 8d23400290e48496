//! The bandwidth keys of `[limits]`: timetables in rclone's `--bwlimit` notation
//! (`ferry_net::bandwidth::Timetable`) for the chunks the node serves — all answers together,
//! each peer identity, each identity of a named department — and for the node's own pulls
//! (replication, subscriptions, scheduled downloads), all together and from each named peer,
//! read in one time zone. The node applies
//! them in `crate::data::bandwidth`; a timetable that never limits anything is left out, so an
//! unlimited node pays nothing for them.

use super::ConfigError;
use ferry_net::bandwidth::{DEFAULT_ZONE, Timetable, parse_zone};
use ferry_proto::DeptId;
use std::collections::BTreeMap;

/// The raw keys, as `[limits]` holds them.
#[derive(Debug, Default)]
pub(super) struct RawBandwidth {
    pub serve: Option<String>,
    pub serve_per_peer: Option<String>,
    pub serve_by_dept: BTreeMap<String, String>,
    pub pull: Option<String>,
    pub pull_by_peer: BTreeMap<String, String>,
    pub timezone: Option<String>,
}

/// Bandwidth timetables of the node (`[limits] serve-bwlimit` and its neighbours).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BandwidthLimits {
    /// Every chunk answer of the node together (`serve-bwlimit`).
    pub serve: Option<Timetable>,
    /// Each peer identity, its connections and streams together (`serve-bwlimit-per-peer`).
    pub serve_per_peer: Option<Timetable>,
    /// Each identity of these departments, instead of `serve_per_peer`
    /// (`[limits.serve-bwlimit-by-dept]`, department = timetable; `off` exempts one).
    pub serve_by_dept: BTreeMap<DeptId, Option<Timetable>>,
    /// The node's own pulls together (`pull-bwlimit`).
    pub pull: Option<Timetable>,
    /// The node's own pulls from each of these `[peers]` entries together, besides `pull`
    /// (`[limits.pull-bwlimit-by-peer]`, peer = timetable; `off` is none). The names are
    /// checked against `[peers]` with the rest of the config.
    pub pull_by_peer: BTreeMap<String, Option<Timetable>>,
}

impl BandwidthLimits {
    /// Whether the node serves without any limit.
    pub fn serves_unlimited(&self) -> bool {
        self.serve.is_none()
            && self.serve_per_peer.is_none()
            && self.serve_by_dept.values().all(Option::is_none)
    }
}

pub(super) fn parse(
    raw: RawBandwidth,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<BandwidthLimits, ConfigError> {
    let zone = match &raw.timezone {
        Some(name) => parse_zone(name).map_err(|e| invalid("limits.bwlimit-timezone", e.to_string()))?,
        None => DEFAULT_ZONE,
    };
    let table = |key: &str, text: &str| -> Result<Option<Timetable>, ConfigError> {
        let timetable = Timetable::parse(text).map_err(|e| invalid(key, e.to_string()))?.in_zone(zone);
        Ok((!timetable.is_unlimited()).then_some(timetable))
    };
    let optional = |key: &str, text: &Option<String>| text.as_deref().map(|t| table(key, t)).transpose();
    let mut serve_by_dept = BTreeMap::new();
    for (dept, text) in &raw.serve_by_dept {
        let key = format!("limits.serve-bwlimit-by-dept.{dept}");
        let id = DeptId::new(dept.as_str()).map_err(|e| invalid(&key, e.to_string()))?;
        serve_by_dept.insert(id, table(&key, text)?);
    }
    let mut pull_by_peer = BTreeMap::new();
    for (peer, text) in &raw.pull_by_peer {
        pull_by_peer.insert(peer.clone(), table(&format!("limits.pull-bwlimit-by-peer.{peer}"), text)?);
    }
    Ok(BandwidthLimits {
        pull_by_peer,
        serve: optional("limits.serve-bwlimit", &raw.serve)?.flatten(),
        serve_per_peer: optional("limits.serve-bwlimit-per-peer", &raw.serve_per_peer)?.flatten(),
        serve_by_dept,
        pull: optional("limits.pull-bwlimit", &raw.pull)?.flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::limits::{RawLimits, parse as parse_limits};
    use super::*;
    use ferry_net::bandwidth::Rate;

    fn parse_text(text: &str) -> Result<BandwidthLimits, String> {
        let raw: RawLimits = toml::from_str(text).map_err(|e| e.to_string())?;
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: "n.toml".into(),
            key: key.to_owned(),
            message,
        };
        parse_limits(raw, &invalid).map(|l| l.bandwidth).map_err(|e| e.to_string())
    }

    #[test]
    fn no_key_is_no_limit() {
        let none = parse_text("").unwrap();
        assert_eq!(none, BandwidthLimits::default());
        assert!(none.serves_unlimited());
        let off = parse_text("serve-bwlimit = \"off\"\npull-bwlimit = \"00:00,off 12:00,off\"").unwrap();
        assert_eq!(off, BandwidthLimits::default(), "a timetable that never limits is none");
    }

    #[test]
    fn the_keys_parse_in_the_named_zone() {
        let text = r#"
            serve-bwlimit = "Mon-08:00,64M Mon-19:00,off"
            serve-bwlimit-per-peer = "8M"
            pull-bwlimit = "08:00,16M 19:00,off"
            bwlimit-timezone = "UTC"
            [serve-bwlimit-by-dept]
            gd = "1M"
            ministry = "off"
        "#;
        let limits = parse_text(text).unwrap();
        let serve = limits.serve.as_ref().unwrap();
        assert_eq!(serve.zone().name(), "UTC");
        let per_peer = limits.serve_per_peer.as_ref().unwrap();
        assert_eq!(per_peer.rate_at(std::time::SystemTime::now()), Rate::from_bytes_per_second(8 << 20));
        let gd = DeptId::new("gd").unwrap();
        assert!(limits.serve_by_dept[&gd].is_some());
        assert_eq!(limits.serve_by_dept[&DeptId::new("ministry").unwrap()], None, "off exempts");
        assert!(limits.pull.is_some());
        assert!(!limits.serves_unlimited());
    }

    #[test]
    fn pulls_from_a_named_peer_have_their_own_limit_and_the_name_must_be_a_peer() {
        let node = "node-name = \"gd\"\nlisten = \"127.0.0.1:7400\"\nstate-dir = \"s\"\n[storage]\nlocal = \"d\"\n\
                    [tls]\nca = \"ca.pem\"\ncert = \"n.pem\"\nkey = \"n.key\"\n\
                    [peers.ministry]\naddress = \"127.0.0.1:7401\"\n[peers.zj]\naddress = \"127.0.0.1:7402\"\n";
        let parse = |limits: &str| {
            super::super::Config::parse(&format!("{node}{limits}"), std::path::Path::new("/etc/ferry/n.toml"))
                .map_err(|e| e.to_string())
        };
        let config = parse("[limits.pull-bwlimit-by-peer]\nministry = \"2M\"\nzj = \"off\"\n").unwrap();
        let by_peer = &config.limits.bandwidth.pull_by_peer;
        let ministry = by_peer["ministry"].as_ref().unwrap();
        assert_eq!(ministry.rate_at(std::time::SystemTime::now()), Rate::from_bytes_per_second(2 << 20));
        assert_eq!(by_peer["zj"], None, "off is no limit");
        assert!(config.limits.bandwidth.pull.is_none(), "the node-wide limit stays unset");
        let err = parse("[limits.pull-bwlimit-by-peer]\nhubei = \"1M\"\n").unwrap_err();
        assert!(err.contains("limits.pull-bwlimit-by-peer.hubei") && err.contains("[peers]"), "{err}");
        let err = parse("[limits.pull-bwlimit-by-peer]\nministry = \"fast\"\n").unwrap_err();
        assert!(err.contains("limits.pull-bwlimit-by-peer.ministry"), "{err}");
    }

    #[test]
    fn a_bad_timetable_names_its_key_and_token() {
        for (text, key, token) in [
            ("serve-bwlimit = \"08:00,10X\"", "limits.serve-bwlimit", "10X"),
            ("serve-bwlimit-per-peer = \"Mun-08:00,1M\"", "limits.serve-bwlimit-per-peer", "Mun"),
            ("pull-bwlimit = \"25:00,1M\"", "limits.pull-bwlimit", "25:00"),
            ("bwlimit-timezone = \"Mars/Base\"", "limits.bwlimit-timezone", "Mars/Base"),
            ("[serve-bwlimit-by-dept]\ngd = \"0\"", "limits.serve-bwlimit-by-dept.gd", "0"),
            (
                "[serve-bwlimit-by-dept]\n\"Bad Dept\" = \"1M\"",
                "limits.serve-bwlimit-by-dept.Bad Dept",
                "Bad",
            ),
        ] {
            let err = parse_text(text).unwrap_err();
            assert!(err.contains(key) && err.contains(token), "{text}: {err}");
        }
    }
}
