//! The versioned catalog (Art. 8, 9, 20) on the control store: registration behind the
//! compliance check, versions that stay readable, history and diffs, the version in effect at
//! a time, change control with notices, publication status for receipts, and the policy state
//! nodes enforce.
//!
//! Each submodule adds methods to [`ControlStore`]: [`register`] (one transaction per
//! registration), [`read`] (entry, history, list, in effect, diff), [`change`] (uses, notices,
//! calendar months), [`publication`] (receipt facts), [`policy`] (what nodes enforce);
//! [`diff`] compares two entries without I/O. Neighbours: `ferry_tables::catalog` defines the
//! entry and the rules; [`crate::roles`] the callers.

pub mod change;
pub mod diff;
pub mod policy;
pub mod publication;
pub mod read;
pub mod register;

pub use change::{ChangeNotice, IN_USE_WINDOW_DAYS, add_months};
pub use diff::{CatalogDiff, FieldChange, ItemChange};
pub use policy::{DatasetPolicy, PolicyItem, PolicyState, PolicyVersion};
pub use publication::{ReceiptFacts, ReceiptKind};
pub use read::{ListedEntry, StoredEntry, VersionSummary};
pub use register::Registered;

#[cfg(doc)]
use crate::store::ControlStore;
