//! The authorization seam: the serving side asks one [`Authorizer`] about every request.
//!
//! Until the ministry's control plane lands (grants, applications, conditional sharing), the
//! node runs [`InterimAuthorizer`]: any verified department may list datasets and read
//! `unconditional` ones; a department may always read what it published itself; publishing and
//! ordering node-to-node pulls are for operators of the node's own department. Everything else
//! is denied with a typed, explained [`Denial`].

use ferry_proto::Principal;
use ferry_proto::{DatasetId, DeptId, Role, ShareType};

/// What a peer asks to do.
#[derive(Debug, Clone, Copy)]
pub enum Access<'a> {
    /// List the datasets this node holds.
    List,
    /// Read a dataset version's manifest and chunks.
    Read { dataset: &'a DatasetId, share_type: ShareType, publisher: &'a DeptId },
    /// Publish a new version of a dataset provided by `provider`.
    Publish { dataset: &'a DatasetId, provider: &'a DeptId },
    /// Make this node pull a dataset from one of its peers.
    Replicate,
}

/// Why a request was refused; `reason` is a bounded metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denial {
    pub reason: &'static str,
    pub message: String,
}

/// Decides every request. Implementations must be cheap: this runs per request.
pub trait Authorizer: Send + Sync + std::fmt::Debug {
    fn authorize(&self, peer: &Principal, access: Access<'_>) -> Result<(), Denial>;
}

/// The rules in force until the control plane enforces grants (see the module doc).
#[derive(Debug, Clone)]
pub struct InterimAuthorizer {
    /// The department that runs this node.
    pub node_dept: DeptId,
}

impl Authorizer for InterimAuthorizer {
    fn authorize(&self, peer: &Principal, access: Access<'_>) -> Result<(), Denial> {
        match access {
            Access::List => Ok(()),
            Access::Read { share_type: ShareType::Unconditional, .. } => Ok(()),
            Access::Read { publisher, .. } if *publisher == peer.dept => Ok(()),
            Access::Read { dataset, share_type, .. } => Err(Denial {
                reason: "no_grant",
                message: format!(
                    "dataset {dataset} is {share_type}; department {} holds no grant for it \
                     (conditional and not-shared datasets are served only under a grant of the ministry control plane)",
                    peer.dept
                ),
            }),
            Access::Publish { dataset, provider } => {
                self.own_operator(peer, "publish")?;
                if *provider != self.node_dept {
                    return Err(Denial {
                        reason: "not_provider",
                        message: format!(
                            "dataset {dataset} is provided by {provider}; this node publishes for {} only",
                            self.node_dept
                        ),
                    });
                }
                Ok(())
            }
            Access::Replicate => self.own_operator(peer, "order pulls"),
        }
    }
}

impl InterimAuthorizer {
    fn own_operator(&self, peer: &Principal, what: &str) -> Result<(), Denial> {
        if peer.role != Role::Operator {
            return Err(Denial {
                reason: "wrong_role",
                message: format!(
                    "only an operator certificate may {what}; this one is for a {} node",
                    peer.role
                ),
            });
        }
        if peer.dept != self.node_dept {
            return Err(Denial {
                reason: "other_department",
                message: format!(
                    "operators of {} may {what} on this node, not of {}",
                    self.node_dept, peer.dept
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(dept: &str, role: Role) -> Principal {
        Principal {
            dept: DeptId::new(dept).unwrap(),
            role,
            name: dept.into(),
            serial: "01".into(),
            fingerprint: "00".repeat(32),
        }
    }

    #[test]
    fn interim_rules() {
        let authz = InterimAuthorizer { node_dept: DeptId::new("ministry").unwrap() };
        let ds = DatasetId::new("vehicles").unwrap();
        let ministry = DeptId::new("ministry").unwrap();
        let read = |share_type| Access::Read { dataset: &ds, share_type, publisher: &ministry };
        let province = peer("gd", Role::Province);
        assert!(authz.authorize(&province, read(ShareType::Unconditional)).is_ok());
        let denial = authz.authorize(&province, read(ShareType::Conditional)).unwrap_err();
        assert_eq!(denial.reason, "no_grant");
        assert!(denial.message.contains("conditional"));
        assert!(authz.authorize(&peer("ministry", Role::Ministry), read(ShareType::NotShared)).is_ok());
        let publish = Access::Publish { dataset: &ds, provider: &ministry };
        assert_eq!(authz.authorize(&province, publish).unwrap_err().reason, "wrong_role");
        assert_eq!(
            authz.authorize(&peer("gd", Role::Operator), publish).unwrap_err().reason,
            "other_department"
        );
        assert!(authz.authorize(&peer("ministry", Role::Operator), publish).is_ok());
        let gd = DeptId::new("gd").unwrap();
        let foreign = Access::Publish { dataset: &ds, provider: &gd };
        assert_eq!(
            authz.authorize(&peer("ministry", Role::Operator), foreign).unwrap_err().reason,
            "not_provider"
        );
    }
}
