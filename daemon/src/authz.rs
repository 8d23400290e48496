//! The node's authorizers, and the one place that chooses among them ([`from_config`]).
//!
//! The seam itself (`Authorizer`, `Request`, `Denial`, `Outcome`) is pure and lives in
//! `ferry_proto::authz`, so the control plane implements it without depending on the daemon.
//! `crate::net` asks it about every request before the data service looks anything up.
//!
//! Until a node enforces the catalog of the ministry's control plane, it runs
//! [`InterimAuthorizer`]: any verified department may list, and see and read `unconditional`
//! datasets; a department may always see and read what it published itself; publishing and
//! ordering node-to-node pulls are for operators of the node's own department. A dataset a peer
//! may not see is denied exactly as an absent one is answered, so the denial does not tell
//! whether it exists.

use crate::config::Config;
use crate::data::store::Store;
use crate::policy::{Governance, PolicyAuthorizer};
use ferry_proto::authz::{Access, Authorizer, Denial, Outcome, Request};
use ferry_proto::{DatasetId, DeptId, Principal, Role, ShareType};
use std::sync::Arc;

/// What the interim rules know of a dataset: how its latest version is shared, and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetFacts {
    pub share_type: ShareType,
    pub publisher: DeptId,
}

/// A read-only view of the datasets a node holds, narrowed to [`DatasetFacts`].
pub trait FactsView: Send + Sync + std::fmt::Debug {
    fn facts(&self, dataset: &DatasetId) -> Option<DatasetFacts>;
}

impl FactsView for Store {
    fn facts(&self, dataset: &DatasetId) -> Option<DatasetFacts> {
        let latest = self.version(dataset, None).ok()?;
        Some(DatasetFacts {
            share_type: latest.manifest.share_type,
            publisher: latest.manifest.publisher.clone(),
        })
    }
}

/// The authorizer the config asks for: a node with `[policy]` (or `[control]`, the ministry)
/// decides from its policy replica and reports to its audit log
/// ([`crate::policy::PolicyAuthorizer`]); a node without runs the interim rules, which read
/// dataset facts from `facts` (the node's store).
pub fn from_config(
    _config: &Config,
    node_dept: DeptId,
    facts: Arc<dyn FactsView>,
    governance: Option<&Governance>,
) -> Arc<dyn Authorizer> {
    match governance {
        Some(g) => Arc::new(PolicyAuthorizer::new(g.replica.clone(), node_dept, Some(g.audit.clone()))),
        None => Arc::new(InterimAuthorizer { node_dept, facts }),
    }
}

/// The rules in force until the node enforces the control plane's catalog (see the module doc).
#[derive(Debug, Clone)]
pub struct InterimAuthorizer {
    /// The department that runs this node.
    pub node_dept: DeptId,
    pub facts: Arc<dyn FactsView>,
}

impl Authorizer for InterimAuthorizer {
    fn authorize(&self, peer: &Principal, request: &Request) -> Result<Access, Denial> {
        self.decide(peer, request).map(|()| Access::Full)
    }

    fn visible(&self, peer: &Principal, dataset: &DatasetId) -> bool {
        self.facts.facts(dataset).is_some_and(|facts| may_see(peer, &facts))
    }

    fn report(&self, peer: &Principal, request: &Request, outcome: &Outcome<'_>) {
        // The node logs and counts denials itself; the interim rules keep no audit log.
        tracing::trace!(peer = %peer.dept, request = request.kind(), ?outcome, "authorization outcome");
    }
}

/// Unconditional datasets to every verified department; the rest to their publisher only.
fn may_see(peer: &Principal, facts: &DatasetFacts) -> bool {
    facts.share_type == ShareType::Unconditional || facts.publisher == peer.dept
}

impl InterimAuthorizer {
    fn decide(&self, peer: &Principal, request: &Request) -> Result<(), Denial> {
        match request {
            Request::List => Ok(()),
            // An absent dataset is let through: the node then answers that it holds none,
            // in the words a hidden one is denied with.
            Request::Read { dataset, .. } => match self.facts.facts(dataset) {
                Some(facts) if !may_see(peer, &facts) => Err(Denial::hidden("no_grant", dataset)),
                _ => Ok(()),
            },
            Request::Publish { dataset, provider, .. } => {
                self.own_operator(peer, "publish")?;
                if *provider != self.node_dept {
                    return Err(Denial::forbidden(
                        "not_provider",
                        format!(
                            "dataset {dataset} is provided by {provider}; this node publishes for {} only",
                            self.node_dept
                        ),
                    ));
                }
                Ok(())
            }
            Request::Replicate { .. } => self.own_operator(peer, "order pulls"),
            // Which content a grant allows only the catalog's policy says.
            Request::ReadForGrant { .. } => Err(Denial::forbidden(
                "no_catalog",
                "this node enforces no catalog, so it knows no grant to read a dataset for",
            )),
        }
    }

    fn own_operator(&self, peer: &Principal, what: &str) -> Result<(), Denial> {
        if peer.role != Role::Operator {
            return Err(Denial::forbidden(
                "wrong_role",
                format!("only an operator certificate may {what}; this one is for a {} node", peer.role),
            ));
        }
        if peer.dept != self.node_dept {
            return Err(Denial::forbidden(
                "other_department",
                format!("operators of {} may {what} on this node, not of {}", self.node_dept, peer.dept),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_proto::authz::ReadPart;
    use ferry_proto::{ErrorCode, ServiceMethod};
    use std::collections::BTreeMap;

    #[derive(Debug, Default)]
    struct Facts(BTreeMap<DatasetId, DatasetFacts>);

    impl FactsView for Facts {
        fn facts(&self, dataset: &DatasetId) -> Option<DatasetFacts> {
            self.0.get(dataset).cloned()
        }
    }

    fn peer(dept: &str, role: Role) -> Principal {
        Principal {
            dept: DeptId::new(dept).unwrap(),
            role,
            name: dept.into(),
            serial: "01".into(),
            fingerprint: "00".repeat(32),
        }
    }

    fn id(s: &str) -> DatasetId {
        DatasetId::new(s).unwrap()
    }

    fn authz() -> InterimAuthorizer {
        let ministry = DeptId::new("ministry").unwrap();
        let mut facts = Facts::default();
        for (name, share_type) in [("vehicles", ShareType::Unconditional), ("owners", ShareType::Conditional)]
        {
            facts.0.insert(id(name), DatasetFacts { share_type, publisher: ministry.clone() });
        }
        InterimAuthorizer { node_dept: ministry, facts: Arc::new(facts) }
    }

    fn read(dataset: &str) -> Request {
        Request::Read {
            dataset: id(dataset),
            version: None,
            method: ServiceMethod::Download,
            part: ReadPart::Manifest,
        }
    }

    #[test]
    fn reads_and_listings_follow_share_type_and_publisher() {
        let authz = authz();
        let province = peer("gd", Role::Province);
        assert!(authz.authorize(&province, &read("vehicles")).is_ok());
        let denial = authz.authorize(&province, &read("owners")).unwrap_err();
        assert_eq!((denial.reason, denial.code), ("no_grant", ErrorCode::NotFound));
        assert_eq!(denial.message, ferry_proto::authz::absent_message(&id("owners")), "reads as absent");
        assert!(authz.authorize(&province, &read("absent")).is_ok(), "the store answers for absent ones");
        assert!(authz.authorize(&peer("ministry", Role::Ministry), &read("owners")).is_ok());
        assert!(authz.visible(&province, &id("vehicles")));
        assert!(!authz.visible(&province, &id("owners")));
        assert!(!authz.visible(&province, &id("absent")));
        assert!(authz.visible(&peer("ministry", Role::Operator), &id("owners")));
    }

    #[test]
    fn publishing_and_replicating_are_for_own_operators() {
        let authz = authz();
        let ministry = DeptId::new("ministry").unwrap();
        let publish = |provider: &DeptId| Request::Publish {
            dataset: id("vehicles"),
            provider: provider.clone(),
            share_type: ShareType::Unconditional,
        };
        let province = peer("gd", Role::Province);
        assert_eq!(authz.authorize(&province, &publish(&ministry)).unwrap_err().reason, "wrong_role");
        let denial = authz.authorize(&peer("gd", Role::Operator), &publish(&ministry)).unwrap_err();
        assert_eq!((denial.reason, denial.code), ("other_department", ErrorCode::PermissionDenied));
        let operator = peer("ministry", Role::Operator);
        assert!(authz.authorize(&operator, &publish(&ministry)).is_ok());
        let gd = DeptId::new("gd").unwrap();
        assert_eq!(authz.authorize(&operator, &publish(&gd)).unwrap_err().reason, "not_provider");
        let replicate = Request::Replicate { source: "gd".into(), dataset: id("vehicles"), version: None };
        assert!(authz.authorize(&operator, &replicate).is_ok());
        assert_eq!(authz.authorize(&province, &replicate).unwrap_err().reason, "wrong_role");
    }
}
