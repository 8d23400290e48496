//! Feedback and quality (Art. 15, 17): a grant holder's feedback on its use ([`feedback`]:
//! need met, quality 1–5, effect), and quality issues filed against a published version by a
//! department that holds a grant for the dataset or uses it, answered by the provider within a
//! number of working days ([`issues`]). An unanswered issue stays visible to its filer, the
//! provider and supervision, overdue once its last day (China Standard Time) has passed.
//!
//! Neighbours: [`crate::grants`] (the grants feedback is about), [`crate::calendar`] (working
//! days), [`crate::supervise`] (counts unanswered issues).

pub mod feedback;
pub mod issues;

pub use feedback::{Feedback, FeedbackFilter, FeedbackView, NeedMet};
pub use issues::{IssueFilter, IssueId, IssueState, QualityIssue};
