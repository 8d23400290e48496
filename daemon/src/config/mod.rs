//! Node configuration: the raw TOML document (serde, unknown keys refused with their name) is
//! parsed once into a typed [`Config`]; the rest of the node never sees strings it must check.
//! Relative paths are resolved against the directory of the config file.

use bytesize::ByteSize;
use ferry_net::conn::NodeAddr;
use ferry_net::tls::TlsPaths;
use ferry_proto::DatasetId;
use ferry_proto::manifest::{MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod bandwidth;
mod governance;
mod limits;
mod query;
mod schedule;
mod scrub;
mod subscription;

pub use crate::control::ControlSettings;
pub use bandwidth::BandwidthLimits;
pub use governance::{PolicyConfig, PolicySource};
pub use limits::LimitsConfig;
pub use query::QueryConfig;
pub use scrub::{ScrubConfig, parse_rate};

/// Why a configuration was refused. The message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {key}: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    node_name: String,
    listen: SocketAddr,
    admin_listen: Option<SocketAddr>,
    state_dir: PathBuf,
    storage: RawStorage,
    tls: RawTls,
    #[serde(default)]
    transfer: RawTransfer,
    #[serde(default)]
    publish: RawPublish,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    peers: BTreeMap<String, RawPeer>,
    #[serde(default)]
    scrub: scrub::RawScrub,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    query: query::RawQuery,
    policy: Option<governance::RawPolicy>,
    control: Option<governance::RawControl>,
    #[serde(default)]
    subscription: Vec<ferry_proto::node_api::SubscriptionDefinition>,
    #[serde(default)]
    schedule: Vec<ferry_proto::node_api::ScheduleDefinition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPublish {
    #[serde(default = "default_snapshot_every")]
    snapshot_every: u64,
    #[serde(default = "default_snapshot_delta_fraction")]
    snapshot_when_delta_over: f64,
    #[serde(default = "default_publish_memory_budget")]
    memory_budget: ByteSize,
}

impl Default for RawPublish {
    fn default() -> Self {
        Self {
            snapshot_every: default_snapshot_every(),
            snapshot_when_delta_over: default_snapshot_delta_fraction(),
            memory_budget: default_publish_memory_budget(),
        }
    }
}

fn default_publish_memory_budget() -> ByteSize {
    ByteSize(ferry_tables::source::DEFAULT_MEMORY_BUDGET as u64)
}

/// Smallest `[publish] memory-budget`: below it runs get so small that sorting is mostly I/O.
const MIN_PUBLISH_MEMORY_BUDGET: u64 = 1 << 20;

fn default_snapshot_every() -> u64 {
    10
}
fn default_snapshot_delta_fraction() -> f64 {
    0.5
}

/// When a published version also stores the whole table, besides its delta.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishPolicy {
    /// Store a snapshot when this many versions have passed since the last one.
    pub snapshot_every: u64,
    /// Store a snapshot when the delta is larger than this fraction of the table.
    pub snapshot_when_delta_over: f64,
    /// Bytes of rows sorting an unordered export may hold before it spills sorted runs to the
    /// state directory (`memory-budget`, default 256 MiB; `ferry_tables::source::SortOptions`).
    pub memory_budget: usize,
}

/// `[retention]`: the default policy, per-dataset overrides and how often GC runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRetention {
    keep_last: Option<RawLimit<u64>>,
    max_age: Option<RawLimit<String>>,
    #[serde(default = "default_gc_interval", with = "humantime_serde")]
    gc_interval: Duration,
    #[serde(default)]
    datasets: BTreeMap<String, RawRetentionPolicy>,
}

impl Default for RawRetention {
    fn default() -> Self {
        Self { keep_last: None, max_age: None, gc_interval: default_gc_interval(), datasets: BTreeMap::new() }
    }
}

fn default_gc_interval() -> Duration {
    Duration::from_secs(3600)
}

/// One policy as written: each limit a number / duration, or `"unlimited"`; absent inherits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRetentionPolicy {
    keep_last: Option<RawLimit<u64>>,
    max_age: Option<RawLimit<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawLimit<T> {
    Limit(T),
    /// Only `"unlimited"` is accepted here (checked when parsing).
    Word(String),
}

const UNLIMITED: &str = "unlimited";

/// How long a dataset's versions are kept (see [`crate::data::gc`] for the exact rule).
/// `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// Keep at most this many newest versions (at least 1), plus what rebuilding them needs.
    pub keep_last: Option<u64>,
    /// Versions created longer ago than this are removable (the latest one never is).
    pub max_age: Option<Duration>,
}

/// Retention for every dataset of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// The policy of datasets without an override.
    pub default: RetentionPolicy,
    /// Per-dataset overrides (keys an override leaves out are taken from the default).
    pub datasets: BTreeMap<DatasetId, RetentionPolicy>,
    /// How often the node runs garbage collection.
    pub gc_interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            default: RetentionPolicy::default(),
            datasets: BTreeMap::new(),
            gc_interval: default_gc_interval(),
        }
    }
}

impl RetentionConfig {
    /// The policy that applies to `dataset`.
    pub fn policy(&self, dataset: &DatasetId) -> RetentionPolicy {
        self.datasets.get(dataset).copied().unwrap_or(self.default)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawStorage {
    local: Option<PathBuf>,
    s3: Option<RawS3>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawS3 {
    bucket: String,
    #[serde(default)]
    prefix: String,
    endpoint: Option<String>,
    region: String,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    #[serde(default)]
    allow_http: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    crl: Option<PathBuf>,
    #[serde(default = "default_crl_reload", with = "humantime_serde")]
    crl_reload: Duration,
}

fn default_crl_reload() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTransfer {
    #[serde(default = "default_chunk_size")]
    chunk_size: ByteSize,
    #[serde(default = "default_streams")]
    streams: usize,
    #[serde(default = "default_drain", with = "humantime_serde")]
    drain_timeout: Duration,
    #[serde(default = "default_rows_per_file")]
    rows_per_file: usize,
    max_upload: Option<ByteSize>,
    #[serde(default = "default_serve_buffer")]
    serve_buffer: ByteSize,
}

impl Default for RawTransfer {
    fn default() -> Self {
        Self {
            chunk_size: default_chunk_size(),
            streams: default_streams(),
            drain_timeout: default_drain(),
            rows_per_file: default_rows_per_file(),
            max_upload: None,
            serve_buffer: default_serve_buffer(),
        }
    }
}

fn default_chunk_size() -> ByteSize {
    ByteSize::mib(1)
}
/// Room for about eight pullers at full speed on loopback, or four on a long path, before
/// answers take turns.
fn default_serve_buffer() -> ByteSize {
    ByteSize::mib(128)
}
fn default_streams() -> usize {
    4
}
fn default_drain() -> Duration {
    Duration::from_secs(10)
}
fn default_rows_per_file() -> usize {
    262_144
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPeer {
    address: SocketAddr,
    server_name: Option<String>,
}

/// Where the node keeps dataset versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// A directory on the local filesystem.
    Local(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Config),
}

/// An S3-compatible bucket. Credentials absent here come from the usual AWS environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub allow_http: bool,
}

/// Transfer tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferConfig {
    pub chunk_size: u32,
    pub streams: usize,
    pub drain_timeout: Duration,
    pub rows_per_file: usize,
    pub max_upload: u64,
    /// Served chunk bytes QUIC may hold unacknowledged, over all connections (`serve-buffer`).
    pub serve_buffer: u64,
}

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub state_dir: PathBuf,
    pub storage: StorageConfig,
    pub tls: TlsPaths,
    pub crl_reload: Duration,
    pub transfer: TransferConfig,
    pub publish: PublishPolicy,
    /// How long versions are kept, and how often garbage collection runs.
    pub retention: RetentionConfig,
    /// Other nodes this one may pull from, by name.
    pub peers: BTreeMap<String, NodeAddr>,
    /// When and how fast the store is re-hashed (`[scrub]`).
    pub scrub: ScrubConfig,
    /// What one peer may hold of the node (`[limits]`).
    pub limits: LimitsConfig,
    /// What one peer may take of the online query service (`[query]`).
    pub query: QueryConfig,
    /// Where the catalog this node enforces comes from; `None`: the interim rules.
    pub policy: Option<PolicyConfig>,
    /// The control plane, at the ministry node only.
    pub control: Option<ControlSettings>,
    /// Peers' datasets this node follows (`[[subscription]]`), besides those added by node calls.
    pub subscriptions: Vec<crate::subscribe::SubscriptionSpec>,
    /// Scheduled downloads (`[[schedule]]`), besides those added by node calls.
    pub schedules: Vec<crate::schedule::ScheduleSpec>,
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax { path: path.to_owned(), message: e.to_string() })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

        if raw.node_name.is_empty() {
            return Err(invalid("node-name", "must not be empty".into()));
        }
        let storage = match (raw.storage.local, raw.storage.s3) {
            (Some(dir), None) => StorageConfig::Local(resolve(dir)),
            (None, Some(s3)) => {
                if s3.bucket.is_empty() {
                    return Err(invalid("storage.s3.bucket", "must not be empty".into()));
                }
                StorageConfig::S3(S3Config {
                    bucket: s3.bucket,
                    prefix: s3.prefix.trim_matches('/').to_owned(),
                    endpoint: s3.endpoint,
                    region: s3.region,
                    access_key_id: s3.access_key_id,
                    secret_access_key: s3.secret_access_key,
                    allow_http: s3.allow_http,
                })
            }
            (None, None) => return Err(invalid("storage", "set either `local` or `[storage.s3]`".into())),
            (Some(_), Some(_)) => {
                return Err(invalid("storage", "set only one of `local` and `[storage.s3]`".into()));
            }
        };
        let chunk_size = u32::try_from(raw.transfer.chunk_size.as_u64())
            .ok()
            .filter(|c| (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(c))
            .ok_or_else(|| {
                invalid(
                    "transfer.chunk-size",
                    format!(
                        "{} is outside {}..={}",
                        raw.transfer.chunk_size,
                        ByteSize(MIN_CHUNK_SIZE.into()),
                        ByteSize(MAX_CHUNK_SIZE.into())
                    ),
                )
            })?;
        if !(1..=64).contains(&raw.transfer.streams) {
            return Err(invalid("transfer.streams", format!("{} is outside 1..=64", raw.transfer.streams)));
        }
        if raw.transfer.serve_buffer.as_u64() < u64::from(chunk_size) {
            return Err(invalid(
                "transfer.serve-buffer",
                format!(
                    "{} is smaller than one chunk ({})",
                    raw.transfer.serve_buffer,
                    ByteSize(chunk_size.into())
                ),
            ));
        }
        if raw.transfer.rows_per_file == 0 {
            return Err(invalid("transfer.rows-per-file", "must be at least 1".into()));
        }
        if raw.publish.snapshot_every == 0 {
            return Err(invalid("publish.snapshot-every", "must be at least 1".into()));
        }
        if !(0.0..=1.0).contains(&raw.publish.snapshot_when_delta_over) {
            return Err(invalid("publish.snapshot-when-delta-over", "must be a fraction in 0..=1".into()));
        }
        let memory_budget = raw.publish.memory_budget.as_u64();
        if memory_budget < MIN_PUBLISH_MEMORY_BUDGET {
            let message =
                format!("{} is below {}", raw.publish.memory_budget, ByteSize(MIN_PUBLISH_MEMORY_BUDGET));
            return Err(invalid("publish.memory-budget", message));
        }
        let retention = parse_retention(raw.retention, &invalid)?;
        let scrub = scrub::parse(raw.scrub, &invalid)?;
        let limits = limits::parse(raw.limits, &invalid)?;
        let query = query::parse(raw.query, &invalid)?;
        let peers: BTreeMap<String, NodeAddr> = raw
            .peers
            .into_iter()
            .map(|(name, peer)| {
                let server_name = peer.server_name.unwrap_or_else(|| name.clone());
                (name, NodeAddr { addr: peer.address, server_name })
            })
            .collect();
        if let Some(name) = limits.bandwidth.pull_by_peer.keys().find(|name| !peers.contains_key(*name)) {
            let message = format!("{name:?} is not a [peers] entry of this node");
            return Err(invalid(&format!("limits.pull-bwlimit-by-peer.{name}"), message));
        }
        let state_dir = resolve(raw.state_dir);
        let subscriptions = subscription::parse(raw.subscription, &peers, base, &invalid)?;
        let schedules = schedule::parse(raw.schedule, &peers, base, &invalid)?;
        let (policy, control) =
            governance::parse(raw.policy, raw.control, &peers, &state_dir, &resolve, &invalid)?;
        Ok(Self {
            node_name: raw.node_name,
            listen: raw.listen,
            admin_listen: raw.admin_listen,
            state_dir,
            storage,
            tls: TlsPaths {
                ca: resolve(raw.tls.ca),
                cert: resolve(raw.tls.cert),
                key: resolve(raw.tls.key),
                crl: raw.tls.crl.map(resolve),
            },
            crl_reload: raw.tls.crl_reload,
            transfer: TransferConfig {
                chunk_size,
                streams: raw.transfer.streams,
                drain_timeout: raw.transfer.drain_timeout,
                rows_per_file: raw.transfer.rows_per_file,
                max_upload: raw.transfer.max_upload.map_or(64 << 30, |s| s.as_u64()),
                serve_buffer: raw.transfer.serve_buffer.as_u64(),
            },
            publish: PublishPolicy {
                snapshot_every: raw.publish.snapshot_every,
                snapshot_when_delta_over: raw.publish.snapshot_when_delta_over,
                memory_budget: usize::try_from(memory_budget).unwrap_or(usize::MAX),
            },
            retention,
            peers,
            scrub,
            limits,
            query,
            policy,
            control,
            subscriptions,
            schedules,
        })
    }
}

fn parse_retention(
    raw: RawRetention,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<RetentionConfig, ConfigError> {
    if raw.gc_interval.is_zero() {
        return Err(invalid("retention.gc-interval", "must be longer than zero".into()));
    }
    let raw_default = RawRetentionPolicy { keep_last: raw.keep_last, max_age: raw.max_age };
    let default = parse_policy(raw_default, RetentionPolicy::default(), "retention", invalid)?;
    let mut datasets = BTreeMap::new();
    for (key, policy) in raw.datasets {
        let at = format!("retention.datasets.{key}");
        let id = DatasetId::new(key.as_str()).map_err(|e| invalid(&at, e.to_string()))?;
        datasets.insert(id, parse_policy(policy, default, &at, invalid)?);
    }
    Ok(RetentionConfig { default, datasets, gc_interval: raw.gc_interval })
}

/// Parses one policy; a key left out keeps its value in `inherited`.
fn parse_policy(
    raw: RawRetentionPolicy,
    inherited: RetentionPolicy,
    at: &str,
    invalid: &impl Fn(&str, String) -> ConfigError,
) -> Result<RetentionPolicy, ConfigError> {
    let not_word = |key: &str, word: &str, what: &str| {
        invalid(&format!("{at}.{key}"), format!("{word:?} is neither {what} nor \"{UNLIMITED}\""))
    };
    let keep_last = match raw.keep_last {
        None => inherited.keep_last,
        Some(RawLimit::Limit(0)) => {
            return Err(invalid(&format!("{at}.keep-last"), "must be at least 1 (or \"unlimited\")".into()));
        }
        Some(RawLimit::Limit(n)) => Some(n),
        Some(RawLimit::Word(w)) if w == UNLIMITED => None,
        Some(RawLimit::Word(w)) => return Err(not_word("keep-last", &w, "a count")),
    };
    let max_age = match raw.max_age {
        None => inherited.max_age,
        Some(RawLimit::Limit(text) | RawLimit::Word(text)) if text == UNLIMITED => None,
        Some(RawLimit::Limit(text) | RawLimit::Word(text)) => {
            let age = humantime_serde::re::humantime::parse_duration(&text)
                .map_err(|e| invalid(&format!("{at}.max-age"), format!("{text:?}: {e}")))?;
            if age.is_zero() {
                return Err(invalid(&format!("{at}.max-age"), "must be longer than zero".into()));
            }
            Some(age)
        }
    };
    Ok(RetentionPolicy { keep_last, max_age })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
node-name = "ministry"
listen = "127.0.0.1:7400"
state-dir = "state"
[storage]
local = "data"
[tls]
ca = "pki/ca.pem"
cert = "pki/ministry.pem"
key = "pki/ministry.key"
"#;

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        let c = Config::parse(MINIMAL, Path::new("/etc/ferry/ferryd.toml")).unwrap();
        assert_eq!(c.storage, StorageConfig::Local("/etc/ferry/data".into()));
        assert_eq!(c.tls.ca, PathBuf::from("/etc/ferry/pki/ca.pem"));
        assert_eq!(c.transfer.chunk_size, 1 << 20);
        assert_eq!(c.transfer.streams, 4);
        assert_eq!(c.transfer.serve_buffer, 128 << 20);
    }

    #[test]
    fn unknown_key_is_named() {
        let text = MINIMAL.replace("[tls]", "[tls]\ncertificate = \"x\"");
        let err = Config::parse(&text, Path::new("n.toml")).unwrap_err().to_string();
        assert!(err.contains("certificate"), "{err}");
    }

    #[test]
    fn chunk_size_out_of_range_is_named() {
        let text = format!("{MINIMAL}[transfer]\nchunk-size = \"1KiB\"\n");
        let err = Config::parse(&text, Path::new("n.toml")).unwrap_err().to_string();
        assert!(err.contains("transfer.chunk-size"), "{err}");
    }

    #[test]
    fn serve_buffer_is_parsed_and_must_hold_a_chunk() {
        let text = format!("{MINIMAL}[transfer]\nserve-buffer = \"16MiB\"\n");
        assert_eq!(Config::parse(&text, Path::new("n.toml")).unwrap().transfer.serve_buffer, 16 << 20);
        let text = format!("{MINIMAL}[transfer]\nchunk-size = \"4MiB\"\nserve-buffer = \"2MiB\"\n");
        let err = Config::parse(&text, Path::new("n.toml")).unwrap_err().to_string();
        assert!(err.contains("transfer.serve-buffer") && err.contains("smaller than one chunk"), "{err}");
    }

    #[test]
    fn publish_memory_budget_has_a_default_and_a_floor() {
        let c = Config::parse(MINIMAL, Path::new("n.toml")).unwrap();
        assert_eq!(c.publish.memory_budget, 256 << 20);
        let text = format!("{MINIMAL}[publish]\nmemory-budget = \"64MiB\"\n");
        assert_eq!(Config::parse(&text, Path::new("n.toml")).unwrap().publish.memory_budget, 64 << 20);
        let text = format!("{MINIMAL}[publish]\nmemory-budget = \"100KiB\"\n");
        let err = Config::parse(&text, Path::new("n.toml")).unwrap_err().to_string();
        assert!(err.contains("publish.memory-budget") && err.contains("below"), "{err}");
    }

    #[test]
    fn retention_defaults_to_unlimited_hourly() {
        let c = Config::parse(MINIMAL, Path::new("n.toml")).unwrap();
        assert_eq!(c.retention, RetentionConfig::default());
        assert_eq!(c.retention.gc_interval, Duration::from_secs(3600));
    }

    #[test]
    fn retention_overrides_inherit_the_default() {
        let text = format!(
            "{MINIMAL}[retention]\nkeep-last = 30\nmax-age = \"400d\"\ngc-interval = \"10m\"\n\
             [retention.datasets.vehicle-registry]\nkeep-last = 5\n\
             [retention.datasets.census]\nkeep-last = \"unlimited\"\nmax-age = \"unlimited\"\n"
        );
        let c = Config::parse(&text, Path::new("n.toml")).unwrap();
        let day = Duration::from_secs(86_400);
        assert_eq!(c.retention.default, RetentionPolicy { keep_last: Some(30), max_age: Some(400 * day) });
        assert_eq!(c.retention.gc_interval, Duration::from_secs(600));
        let id = |s: &str| DatasetId::new(s).unwrap();
        assert_eq!(
            c.retention.policy(&id("vehicle-registry")),
            RetentionPolicy { keep_last: Some(5), max_age: Some(400 * day) }
        );
        assert_eq!(c.retention.policy(&id("census")), RetentionPolicy::default());
        assert_eq!(c.retention.policy(&id("other")), c.retention.default);
    }

    #[test]
    fn bad_retention_keys_are_named() {
        for (extra, key) in [
            ("[retention]\nkeep-last = 0\n", "retention.keep-last"),
            ("[retention]\nmax-age = \"soon\"\n", "retention.max-age"),
            ("[retention.datasets.x]\nkeep-last = \"all\"\n", "retention.datasets.x.keep-last"),
            ("[retention.datasets.Bad]\nkeep-last = 1\n", "retention.datasets.Bad"),
            ("[retention]\nkeep-first = 1\n", "keep-first"),
        ] {
            let err =
                Config::parse(&format!("{MINIMAL}{extra}"), Path::new("n.toml")).unwrap_err().to_string();
            assert!(err.contains(key), "{extra}: {err}");
        }
    }

    #[test]
    fn both_storages_refused() {
        let text = MINIMAL
            .replace("local = \"data\"", "local = \"data\"\n[storage.s3]\nbucket = \"b\"\nregion = \"r\"");
        let err = Config::parse(&text, Path::new("n.toml")).unwrap_err().to_string();
        assert!(err.contains("storage"), "{err}");
    }
}
