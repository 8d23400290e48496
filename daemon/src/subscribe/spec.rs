//! What a subscription is (a dataset, the peer it is followed from, where it goes) and why one
//! is refused. The node config's `[[subscription]]` (`crate::config`) and the
//! `node-subscription-add` call both end up as a [`SubscriptionSpec`].

use ferry_proto::node_api::{SubscriptionDefinition, SubscriptionOrigin};
use ferry_proto::{DatasetId, JobPriority};
use std::path::PathBuf;

/// One subscription, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    pub dataset: DatasetId,
    /// A name of the node's `[peers]`.
    pub from: String,
    pub target: SubscriptionTarget,
    pub origin: SubscriptionOrigin,
    /// The class of its pulls (`priority`, `normal` when absent).
    pub priority: JobPriority,
}

/// Where a subscription's versions are committed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubscriptionTarget {
    /// The node's own store: it then serves them too (what `ferry replicate` does).
    Store,
    /// `<dir>/<dataset>/v<N>`, materialized and verified as `ferry pull` does.
    Directory(PathBuf),
}

/// Why a subscription was refused or could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("{from:?} is not a peer of this node; name one of its [peers] ({known})")]
    UnknownPeer { from: String, known: String },
    #[error("the directory of a subscription must be an absolute path, not {0:?}")]
    RelativeTarget(String),
    /// `priority` names no class; the message names the value.
    #[error("{0}")]
    BadPriority(String),
    #[error("{dataset} is already followed into {target}")]
    Duplicate { dataset: DatasetId, target: String },
    #[error("this node has no subscription to {dataset} into {target}")]
    NotFound { dataset: DatasetId, target: String },
    #[error("the subscription to {dataset} is defined in the node config; change it there")]
    FromConfig { dataset: DatasetId },
    #[error("cannot keep the subscriptions in {path}: {source}")]
    Persist { path: PathBuf, source: std::io::Error },
    #[error("the subscriptions kept in {path} cannot be read: {message}")]
    Corrupt { path: PathBuf, message: String },
}

impl SubscriptionTarget {
    pub fn describe(&self) -> String {
        match self {
            Self::Store => "the node's store".into(),
            Self::Directory(dir) => dir.display().to_string(),
        }
    }

    /// The target an `into` names (`None`: the store); a directory must be absolute.
    pub fn parse(into: Option<&str>) -> Result<Self, SubscriptionError> {
        match into {
            None => Ok(Self::Store),
            Some(dir) if PathBuf::from(dir).is_absolute() => Ok(Self::Directory(dir.into())),
            Some(dir) => Err(SubscriptionError::RelativeTarget(dir.into())),
        }
    }
}

impl SubscriptionSpec {
    /// Checks `definition` against the node's peers.
    pub fn from_definition<'a>(
        definition: SubscriptionDefinition,
        origin: SubscriptionOrigin,
        peers: impl Iterator<Item = &'a String> + Clone,
    ) -> Result<Self, SubscriptionError> {
        if !peers.clone().any(|p| *p == definition.from) {
            let known = peers.map(String::as_str).collect::<Vec<_>>().join(", ");
            return Err(SubscriptionError::UnknownPeer { from: definition.from, known });
        }
        let target = SubscriptionTarget::parse(definition.into.as_deref())?;
        let priority = crate::schedule::parse_priority(definition.priority.as_deref())
            .map_err(SubscriptionError::BadPriority)?;
        Ok(Self { dataset: definition.dataset, from: definition.from, target, origin, priority })
    }

    /// The definition an operator gave (what is persisted).
    pub fn definition(&self) -> SubscriptionDefinition {
        let into = match &self.target {
            SubscriptionTarget::Store => None,
            SubscriptionTarget::Directory(dir) => Some(dir.display().to_string()),
        };
        // `normal` is written as absent, as it was given (and as older nodes keep it).
        let priority = (self.priority != JobPriority::Normal).then(|| self.priority.to_string());
        SubscriptionDefinition { dataset: self.dataset.clone(), from: self.from.clone(), into, priority }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(from: &str, into: Option<&str>) -> SubscriptionDefinition {
        SubscriptionDefinition {
            dataset: DatasetId::new("cars").unwrap(),
            from: from.into(),
            into: into.map(Into::into),
            priority: None,
        }
    }

    #[test]
    fn a_subscription_names_a_known_peer_and_an_absolute_directory() {
        let peers = ["ministry".to_string(), "zj".to_string()];
        let added = SubscriptionOrigin::Added;
        let spec = SubscriptionSpec::from_definition(definition("zj", None), added, peers.iter()).unwrap();
        assert_eq!(spec.target, SubscriptionTarget::Store);
        assert_eq!(spec.definition(), definition("zj", None));
        let err = SubscriptionSpec::from_definition(definition("gd", None), added, peers.iter()).unwrap_err();
        assert!(err.to_string().contains("ministry, zj"), "{err}");
        let err = SubscriptionSpec::from_definition(definition("zj", Some("rel/dir")), added, peers.iter())
            .unwrap_err();
        assert!(matches!(err, SubscriptionError::RelativeTarget(_)), "{err}");
        let dir = Some("/srv/cars");
        let spec = SubscriptionSpec::from_definition(definition("zj", dir), added, peers.iter()).unwrap();
        assert_eq!(spec.target, SubscriptionTarget::Directory("/srv/cars".into()));
        assert_eq!(spec.priority, JobPriority::Normal);
    }

    #[test]
    fn a_subscription_has_a_priority_and_a_bad_one_is_named() {
        let peers = ["zj".to_string()];
        let added = SubscriptionOrigin::Added;
        let mut low = definition("zj", None);
        low.priority = Some("low".into());
        let spec = SubscriptionSpec::from_definition(low.clone(), added, peers.iter()).unwrap();
        assert_eq!(spec.priority, JobPriority::Low);
        assert_eq!(spec.definition(), low, "kept as given");
        let mut bad = definition("zj", None);
        bad.priority = Some("urgent".into());
        let err = SubscriptionSpec::from_definition(bad, added, peers.iter()).unwrap_err();
        assert_eq!(err.to_string(), r#""urgent" is not a priority; write high, normal or low"#);
    }
}
