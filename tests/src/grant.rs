//! An authorizer holding one conditional grant, for tests and benches of restricted versions
//! that need a node serving a restriction without running the control plane.

use ferry_proto::authz::{Access, Authorizer, Denial, Outcome, Request};
use ferry_proto::policy::Restriction;
use ferry_proto::{DatasetId, DeptId, Principal};

/// The consumer's department reads only `restriction` (under grant number `grant`); everyone
/// else (the provider) reads everything.
#[derive(Debug)]
pub struct OneConditionalGrant {
    pub consumer: DeptId,
    pub grant: u64,
    pub restriction: Restriction,
}

impl Authorizer for OneConditionalGrant {
    fn authorize(&self, peer: &Principal, request: &Request) -> Result<Access, Denial> {
        match request {
            Request::Read { .. } if peer.dept == self.consumer => {
                Ok(Access::Restricted { grant: self.grant, restriction: self.restriction.clone() })
            }
            _ => Ok(Access::Full),
        }
    }

    fn visible(&self, _: &Principal, _: &DatasetId) -> bool {
        true
    }

    fn report(&self, _: &Principal, _: &Request, _: &Outcome<'_>) {}
}
