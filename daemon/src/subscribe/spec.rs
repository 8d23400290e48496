//! What a subscription is (a dataset, the peer it is followed from, where it goes) and why one
//! is refused. The node config's `[[subscription]]` (`crate::config`) and the
//! `node-subscription-add` call both end up as a [`SubscriptionSpec`].

use ferry_proto::DatasetId;
use ferry_proto::node_api::{SubscriptionDefinition, SubscriptionOrigin};
use std::path::PathBuf;

/// One subscription, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    pub dataset: DatasetId,
    /// A name of the node's `[peers]`.
    pub from: String,
    pub target: SubscriptionTarget,
    pub origin: SubscriptionOrigin,
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
        Ok(Self { dataset: definition.dataset, from: definition.from, target, origin })
    }

    /// The definition an operator gave (what is persisted).
    pub fn definition(&self) -> SubscriptionDefinition {
        let into = match &self.target {
            SubscriptionTarget::Store => None,
            SubscriptionTarget::Directory(dir) => Some(dir.display().to_string()),
        };
        SubscriptionDefinition { dataset: self.dataset.clone(), from: self.from.clone(), into }
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
    }
}
