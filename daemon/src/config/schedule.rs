//! `[[schedule]]`: scheduled download jobs of the node config, each parsed into a
//! [`crate::schedule::ScheduleSpec`] (cron, time zone, jitter, deadline, retries, catch-up),
//! refused with its key path (`schedule.<name>.cron`) and why.

use super::ConfigError;
use crate::schedule::ScheduleSpec;
use ferry_net::conn::NodeAddr;
use ferry_proto::node_api::ScheduleDefinition;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Parses every `[[schedule]]`; a relative `into` is resolved against the config's directory.
pub(super) fn parse(
    raw: Vec<ScheduleDefinition>,
    peers: &BTreeMap<String, NodeAddr>,
    base: &Path,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<Vec<ScheduleSpec>, ConfigError> {
    let mut names = BTreeSet::new();
    let mut specs = Vec::with_capacity(raw.len());
    for (index, definition) in raw.iter().enumerate() {
        let at = match definition.name.is_empty() {
            true => format!("schedule[{index}]"),
            false => format!("schedule.{}", definition.name),
        };
        let spec = ScheduleSpec::parse(definition, |p| peers.contains_key(p), Some(base))
            .map_err(|e| invalid(&format!("{at}.{}", e.field), e.message))?;
        if !names.insert(spec.name.clone()) {
            return Err(invalid(&format!("{at}.name"), "another [[schedule]] has this name".into()));
        }
        specs.push(spec);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use crate::schedule::Target;
    use ferry_proto::JobPriority;
    use std::path::Path;
    use std::time::Duration;

    const NODE: &str = r#"
node-name = "guangdong"
listen = "127.0.0.1:7400"
state-dir = "state"
[storage]
local = "data"
[tls]
ca = "ca.pem"
cert = "n.pem"
key = "n.key"
[peers.ministry]
address = "127.0.0.1:7401"
"#;

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{NODE}{extra}"), Path::new("/etc/ferry/ferryd.toml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn schedules_are_parsed_with_their_settings() {
        let config = parse(
            "[[schedule]]\nname = \"nightly\"\ndataset = \"vehicle-registry\"\nfrom = \"ministry\"\n\
             into = \"downloads\"\ncron = \"0 2 * * *\"\njitter = \"5m\"\ndeadline = \"2h\"\nretries = 5\n\
             catch-up = false\n[[schedule]]\nname = \"mirror\"\ndataset = \"vehicle-registry\"\n\
             from = \"ministry\"\ninto = \"store\"\ncron = \"*/30 * * * * *\"\ntime-zone = \"UTC\"\npriority = \"high\"\n",
        )
        .unwrap();
        let [nightly, mirror] = &config.schedules[..] else { panic!("two jobs") };
        assert_eq!(nightly.into, Target::Directory("/etc/ferry/downloads".into()));
        assert_eq!(nightly.time_zone, chrono_tz::Asia::Shanghai);
        assert_eq!((nightly.jitter, nightly.deadline), (Duration::from_secs(300), Duration::from_secs(7200)));
        assert_eq!((nightly.retries, nightly.catch_up), (5, false));
        assert_eq!((&mirror.into, mirror.time_zone), (&Target::Store, chrono_tz::UTC));
        assert_eq!((nightly.priority, mirror.priority), (JobPriority::Normal, JobPriority::High));
        assert!(parse("").unwrap().schedules.is_empty());
    }

    #[test]
    fn a_bad_schedule_names_its_key() {
        let job = |extra: &str| {
            format!(
                "[[schedule]]\nname = \"nightly\"\ndataset = \"vehicle-registry\"\nfrom = \"ministry\"\n\
                 into = \"store\"\n{extra}\n"
            )
        };
        for (extra, key, says) in [
            (job("cron = \"0 2 * *\""), "schedule.nightly.cron", "4 fields"),
            (job("cron = \"0 24 * * *\""), "schedule.nightly.cron", "not a cron expression"),
            (job("cron = \"0 2 * * *\"\ntime-zone = \"Beijing\""), "schedule.nightly.time-zone", "IANA"),
            (job("cron = \"0 2 * * *\"\nretries = \"many\""), "retries", ""),
            (job("cron = \"0 2 * * *\"\nevery = \"day\""), "every", ""),
            (job("cron = \"0 2 * * *\"\npriority = \"urgent\""), "schedule.nightly.priority", "\"urgent\""),
            (
                format!("{}{}", job("cron = \"0 2 * * *\""), job("cron = \"0 3 * * *\"")),
                "schedule.nightly.name",
                "another",
            ),
            (
                job("cron = \"0 2 * * *\"").replace("\"ministry\"", "\"hub\""),
                "schedule.nightly.from",
                "not a peer",
            ),
        ] {
            let err = parse(&extra).unwrap_err();
            assert!(err.contains(key) && err.contains(says), "{extra}: {err}");
        }
    }
}
