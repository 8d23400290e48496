//! The principal a request carries: who a verified certificate speaks for.
//!
//! The serving node reads it once, when a connection's handshake has completed, and hands it
//! with every request of that connection to the authorizer; a verifier of a signed document
//! returns the principal that signed it. It is pure data: `ferry-net` builds it from a
//! certificate (`ferry_net::identity::principal_from_cert`) after TLS or a signature check has
//! verified that certificate against the ministry CA.

use crate::ids::{DeptId, Role};
use std::fmt;

/// The department, role and name a verified certificate stands for, and which certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The department (`urn:ferry:dept:<id>` in the certificate).
    pub dept: DeptId,
    /// What the holder may be (`urn:ferry:role:<role>`).
    pub role: Role,
    /// Subject common name: a node name (`ministry`, `gd-node`), a person, or the control key.
    pub name: String,
    /// Certificate serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    /// Lowercase hex SHA-256 of the leaf certificate's DER: the value
    /// `openssl x509 -noout -fingerprint -sha256` prints (without its colons, in lowercase).
    /// Unlike the serial, it tells two certificates apart whoever issued them.
    pub fingerprint: String,
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} of {}, serial {})", self.name, self.role, self.dept, self.serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_holder_role_department_and_serial() {
        let principal = Principal {
            dept: DeptId::new("gd-transport").expect("dept"),
            role: Role::Province,
            name: "gd-node".into(),
            serial: "7f01".into(),
            fingerprint: "ab".repeat(32),
        };
        assert_eq!(principal.to_string(), "gd-node (province of gd-transport, serial 7f01)");
    }
}
