//! `[[subscription]]`: the peers' datasets this node follows (`dataset`, `from` = a name of
//! `[peers]`, optional `into` = a directory, relative to the config's; absent: the node's
//! store), each parsed into a [`crate::subscribe::SubscriptionSpec`], refused with its key path
//! (`subscription[0].from`) and why.

use super::ConfigError;
use crate::subscribe::{SubscriptionError, SubscriptionSpec};
use ferry_net::conn::NodeAddr;
use ferry_proto::node_api::{SubscriptionDefinition, SubscriptionOrigin};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Parses every `[[subscription]]`.
pub(super) fn parse(
    raw: Vec<SubscriptionDefinition>,
    peers: &BTreeMap<String, NodeAddr>,
    base: &Path,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<Vec<SubscriptionSpec>, ConfigError> {
    let mut seen = BTreeSet::new();
    let mut specs = Vec::with_capacity(raw.len());
    for (index, mut definition) in raw.into_iter().enumerate() {
        let at = format!("subscription[{index}]");
        definition.into = definition.into.map(|dir| base.join(dir).display().to_string());
        let spec = SubscriptionSpec::from_definition(definition, SubscriptionOrigin::Config, peers.keys())
            .map_err(|e| {
                let field = match e {
                    SubscriptionError::UnknownPeer { .. } => "from",
                    SubscriptionError::BadPriority(_) => "priority",
                    _ => "into",
                };
                invalid(&format!("{at}.{field}"), e.to_string())
            })?;
        if !seen.insert((spec.dataset.clone(), spec.target.clone())) {
            let message =
                format!("another [[subscription]] follows {} into {}", spec.dataset, spec.target.describe());
            return Err(invalid(&at, message));
        }
        specs.push(spec);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use crate::subscribe::SubscriptionTarget;
    use std::path::Path;

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
    fn subscriptions_follow_a_peer_into_the_store_or_a_directory() {
        let config = parse(
            "[[subscription]]\ndataset = \"cars\"\nfrom = \"ministry\"\n\
             [[subscription]]\ndataset = \"cars\"\nfrom = \"ministry\"\ninto = \"exports\"\n",
        )
        .unwrap();
        let targets: Vec<_> = config.subscriptions.iter().map(|s| s.target.clone()).collect();
        let dir = SubscriptionTarget::Directory("/etc/ferry/exports".into());
        assert_eq!(targets, [SubscriptionTarget::Store, dir]);
    }

    #[test]
    fn bad_subscriptions_name_their_key() {
        let err = parse("[[subscription]]\ndataset = \"cars\"\nfrom = \"zj\"\n").unwrap_err();
        assert!(err.contains("subscription[0].from") && err.contains("ministry"), "{err}");
        let err =
            parse("[[subscription]]\ndataset = \"cars\"\nfrom = \"ministry\"\nevery = 1\n").unwrap_err();
        assert!(err.contains("every"), "{err}");
        let err = parse("[[subscription]]\ndataset = \"Bad Name\"\nfrom = \"ministry\"\n").unwrap_err();
        assert!(err.contains("dataset") || err.contains("Bad Name"), "{err}");
        let err = parse("[[subscription]]\ndataset = \"cars\"\nfrom = \"ministry\"\npriority = \"urgent\"\n")
            .unwrap_err();
        assert!(err.contains("subscription[0].priority") && err.contains("\"urgent\""), "{err}");
        let twice = "[[subscription]]\ndataset = \"cars\"\nfrom = \"ministry\"\n";
        let err = parse(&format!("{twice}{twice}")).unwrap_err();
        assert!(err.contains("subscription[1]") && err.contains("another"), "{err}");
    }
}
