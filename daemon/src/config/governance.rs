//! `[policy]` and `[control]`: how a node learns the catalog it enforces, and, at the ministry,
//! the control plane it runs.
//!
//! ```toml
//! [policy]                  # every node that enforces the catalog
//! ministry = "ministry"     # a province: the [peers] name of the ministry node it follows
//! ministry-dept = "mot"     # the department whose control-plane key signs snapshots
//!                           # (default at the ministry: its own department)
//! max-staleness = "5m"      # past this without a fresh snapshot, refuse (fail closed)
//! report-uses-every = "1m"  # a province sends the uses it served to the ministry this often
//!
//! [control]                 # the ministry node only
//! database = "control.db"   # a SQLite file (relative to the state directory) or postgres://…
//! signing-cert = "pki/control.pem"
//! signing-key = "pki/control.key"
//! technical-support = "mot" # default: this node's department
//! st-authority = "mot-st"
//! refresh = "30s"           # an unchanged snapshot is re-issued this often
//! disuse-notice-days = 30   # a grant unused for 3 months is revoked this long after its warning
//! quality-answer-days = 5   # working days a provider has to answer a quality issue
//! calendar-dir = "calendar"  # more <year>.toml working-day calendars (relative to the state
//!                           # directory); 2025 and 2026 are built in
//! ```
//!
//! A node with neither section runs the interim rules of `crate::authz` (no catalog) and says so
//! at start; deployments configure one of the two.

use super::ConfigError;
use crate::control::ControlSettings;
use ferry_proto::DeptId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawPolicy {
    ministry: Option<String>,
    ministry_dept: Option<String>,
    #[serde(default = "default_max_staleness", with = "humantime_serde")]
    max_staleness: Duration,
    #[serde(default = "default_report_uses_every", with = "humantime_serde")]
    report_uses_every: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawControl {
    #[serde(default = "default_database")]
    database: String,
    signing_cert: PathBuf,
    signing_key: PathBuf,
    technical_support: Option<String>,
    st_authority: String,
    #[serde(default = "default_refresh", with = "humantime_serde")]
    refresh: Duration,
    /// Days between a disuse warning and the revocation (Art. 17).
    #[serde(default = "default_disuse_notice_days")]
    disuse_notice_days: u32,
    /// Working days a provider has to answer a quality issue (Art. 15).
    #[serde(default = "default_quality_answer_days")]
    quality_answer_days: u32,
    /// A directory of `<year>.toml` working-day calendars added to the built-in years.
    calendar_dir: Option<PathBuf>,
}

fn default_disuse_notice_days() -> u32 {
    ferry_control::grants::LifecycleSettings::default().disuse_notice_days
}
fn default_quality_answer_days() -> u32 {
    ferry_control::grants::LifecycleSettings::default().quality_answer_days
}

fn default_max_staleness() -> Duration {
    Duration::from_secs(300)
}
fn default_report_uses_every() -> Duration {
    crate::policy::uses::REPORT_EVERY
}
fn default_refresh() -> Duration {
    Duration::from_secs(30)
}
fn default_database() -> String {
    "control.db".into()
}

/// Where a node's policy comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// The node runs the control plane itself (the ministry).
    Local,
    /// The node follows the ministry node known by this peer name.
    Ministry { peer: String },
}

/// `[policy]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    pub source: PolicySource,
    /// The department whose control-plane key signs the snapshots this node accepts.
    pub ministry_dept: Option<DeptId>,
    pub max_staleness: Duration,
    /// How often a province sends the uses it served to the ministry (`report-use`).
    pub report_uses_every: Duration,
}

/// Parses `[policy]` and `[control]` together: each constrains the other.
pub(super) fn parse(
    policy: Option<RawPolicy>,
    control: Option<RawControl>,
    peers: &BTreeMap<String, ferry_net::conn::NodeAddr>,
    state_dir: &Path,
    resolve: &dyn Fn(PathBuf) -> PathBuf,
    invalid: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(Option<PolicyConfig>, Option<ControlSettings>), ConfigError> {
    let dept = |key: &str, text: String| DeptId::new(text).map_err(|e| invalid(key, e.to_string()));
    let control = match control {
        None => None,
        Some(raw) => {
            if raw.refresh.is_zero() {
                return Err(invalid("control.refresh", "must be longer than 0s".into()));
            }
            let database = if raw.database.contains("://") {
                raw.database
            } else {
                let path = PathBuf::from(&raw.database);
                let path = if path.is_absolute() { path } else { state_dir.join(path) };
                path.display().to_string()
            };
            let technical_support =
                raw.technical_support.map(|t| dept("control.technical-support", t)).transpose()?;
            if !(1..=365).contains(&raw.disuse_notice_days) {
                return Err(invalid("control.disuse-notice-days", "must be 1 to 365 days".into()));
            }
            if !(1..=60).contains(&raw.quality_answer_days) {
                return Err(invalid("control.quality-answer-days", "must be 1 to 60 working days".into()));
            }
            let lifecycle = ferry_control::grants::LifecycleSettings {
                disuse_notice_days: raw.disuse_notice_days,
                quality_answer_days: raw.quality_answer_days,
            };
            Some((
                lifecycle,
                raw.calendar_dir.map(|d| if d.is_absolute() { d } else { state_dir.join(d) }),
                database,
                raw.signing_cert,
                raw.signing_key,
                technical_support,
                raw.st_authority,
                raw.refresh,
            ))
        }
    };
    let policy = match (policy, &control) {
        (None, None) => return Ok((None, None)),
        (None, Some(_)) => PolicyConfig {
            source: PolicySource::Local,
            ministry_dept: None,
            max_staleness: default_max_staleness(),
            report_uses_every: default_report_uses_every(),
        },
        (Some(raw), control) => {
            if raw.report_uses_every < Duration::from_secs(1) {
                return Err(invalid("policy.report-uses-every", "must be at least 1s".into()));
            }
            if raw.max_staleness.is_zero() {
                return Err(invalid("policy.max-staleness", "must be longer than 0s".into()));
            }
            let source = match (raw.ministry, control) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "policy.ministry",
                        "a node that runs [control] is the ministry; it follows no other".into(),
                    ));
                }
                (Some(peer), None) => {
                    if !peers.contains_key(&peer) {
                        return Err(invalid(
                            "policy.ministry",
                            format!("no [peers.{peer}] names the ministry node"),
                        ));
                    }
                    PolicySource::Ministry { peer }
                }
                (None, Some(_)) => PolicySource::Local,
                (None, None) => {
                    return Err(invalid(
                        "policy.ministry",
                        "name the ministry node (a [peers] entry) to follow, or run [control] here".into(),
                    ));
                }
            };
            let ministry_dept = raw.ministry_dept.map(|d| dept("policy.ministry-dept", d)).transpose()?;
            if matches!(source, PolicySource::Ministry { .. }) && ministry_dept.is_none() {
                return Err(invalid(
                    "policy.ministry-dept",
                    "name the department whose control-plane key signs the policy".into(),
                ));
            }
            PolicyConfig {
                source,
                ministry_dept,
                max_staleness: raw.max_staleness,
                report_uses_every: raw.report_uses_every,
            }
        }
    };
    let settings = match control {
        None => None,
        Some((lifecycle, calendar_dir, database, cert, key, technical_support, st_authority, refresh)) => {
            if refresh * 2 > policy.max_staleness {
                return Err(invalid(
                    "control.refresh",
                    format!(
                        "{} is more than half of policy.max-staleness ({}): provinces would go stale between refreshes",
                        humantime::format_duration(refresh),
                        humantime::format_duration(policy.max_staleness)
                    ),
                ));
            }
            Some(ControlSettings {
                database,
                signing_cert: resolve(cert),
                signing_key: resolve(key),
                technical_support,
                st_authority: dept("control.st-authority", st_authority)?,
                refresh,
                lifecycle,
                calendar_dir,
            })
        }
    };
    Ok((Some(policy), settings))
}
