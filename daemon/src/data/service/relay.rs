//! The ministry's hub serving a conditional grantee of another department's dataset (Art. 11).
//!
//! The hub holds the provider's versions as the provider's node signed them and never signs
//! what it did not publish, so it cannot build a restricted version itself (a restricted
//! manifest is signed by the signer of its source). It fetches the restricted version instead
//! from the provider's node, with reads made for the grant (`Message::ForGrant`, sent by a
//! connector made [`for_grant`](ferry_client::conn::Connector::for_grant)): that node checks that
//! the reader is the hub and the grant is in force, builds the restricted version as for its
//! own consumers (with the restricted delta from the version before, when it built that one)
//! and serves it. The hub checks it — the provider's signature and provenance, derived from
//! exactly the source version the hub holds, under the grant's restriction — commits it
//! unchanged into its restricted store, and serves it from there like a version it built. One
//! fetch per (version, restriction) at a time (the caller holds the flight lock); a fetch that
//! failed leaves nothing in the store.
//!
//! Neighbours: `super::restricted` (which fetches here instead of building),
//! [`crate::data::restricted::RestrictedViews`] (the restricted stores, the peer each relayed
//! dataset is followed from), `crate::subscribe::registry` (which records that peer).

use super::restricted::GrantRead;
use super::{DataService, Refusal, is_out_of_space};
use crate::data::store::{NewVersion, Store, StoredVersion};
use crate::telemetry::ReasonLabel;
use ferry_client::conn::ClientError;
use ferry_client::transfer::{self, PullError, PullOptions, PullRequest, Quiet, SIGNED_NAME};
use ferry_net::sign;
use ferry_proto::policy::Restriction;
use ferry_proto::{DatasetId, ErrorCode, Hash32, Manifest, SignedManifest};
use std::sync::Arc;
use std::time::Instant;

impl DataService {
    /// Records that this node follows `dataset` from the peer `peer` into its store: at the
    /// hub, the restricted versions of `dataset` are fetched from there.
    pub fn relay_from(&self, dataset: &DatasetId, peer: &str) {
        self.restricted.set_source(dataset, peer);
    }

    /// The peer to fetch restricted versions of `source` from: the one its dataset is followed
    /// from, else a peer named like the node that signed it.
    fn relay_source(&self, source: &StoredVersion) -> Option<String> {
        let signer = &source.signer.name;
        self.restricted
            .source(&source.manifest.dataset)
            .or_else(|| self.settings.peers.contains_key(signer).then(|| signer.clone()))
    }

    /// Fetches the restricted version of `source` under `restriction` from the provider's node,
    /// for `read`'s grant and method, and commits it unchanged into `derived`; counted in
    /// `ferry_hub_fetches_total` by outcome ([`FetchOutcome`]).
    pub(super) async fn fetch_restricted(
        &self,
        derived: &Store,
        source: &StoredVersion,
        restriction: &Restriction,
        read: GrantRead,
    ) -> Result<(), Refusal> {
        let result = self.fetch_restricted_once(derived, source, restriction, read).await;
        let outcome = match &result {
            Ok(()) => FetchOutcome::Fetched,
            Err(refusal) => FetchOutcome::of(refusal),
        };
        self.metrics.hub_fetches.get_or_create(&ReasonLabel { reason: outcome.label() }).inc();
        result
    }

    async fn fetch_restricted_once(
        &self,
        derived: &Store,
        source: &StoredVersion,
        restriction: &Restriction,
        read: GrantRead,
    ) -> Result<(), Refusal> {
        let m = &source.manifest;
        let what = format!("what grant {} allows of {} {}", read.grant, m.dataset, m.version);
        let Some(peer) = self.relay_source(source) else {
            return Err(Refusal::new(
                ErrorCode::Unavailable,
                format!(
                    "provider_unreachable: this hub follows {} from no node of {}, so it cannot fetch {what}; \
                     its operator subscribes it to the provider's node",
                    m.dataset, m.publisher
                ),
            ));
        };
        let started = Instant::now();
        let connector = self.connector_to(&peer)?.for_grant(read.grant);
        let root =
            self.settings.state_dir.join("restricted").join("incoming").join(restriction.id().as_str());
        let pulled = transfer::version_dir(&root, &m.dataset, m.version);
        if pulled.exists() && !pulled.join(SIGNED_NAME).exists() {
            // A commit that stopped part-way: what is left is fetched afresh.
            tokio::fs::remove_dir_all(&pulled).await.map_err(|e| internal(&e))?;
        }
        // One attempt: a grantee waiting on this request is told to try later instead.
        let opts = PullOptions { max_retries: 0, ..self.pull_options(read.method, connector.node()) };
        let request = PullRequest { dataset: m.dataset.clone(), version: Some(m.version) };
        let pull = transfer::pull(
            &connector,
            &self.creds,
            &request,
            &root,
            &opts,
            Arc::new(Quiet),
            self.draining.clone(),
        );
        let report = pull.await.map_err(|e| self.fetch_refusal(&peer, &what, e))?;
        let signed_bytes = tokio::fs::read(report.path.join(SIGNED_NAME)).await.map_err(|e| internal(&e))?;
        let signed = SignedManifest::decode(&signed_bytes).map_err(|e| internal(&e))?;
        let now = rustls::pki_types::UnixTime::now();
        let (manifest, signer) = sign::verify_signed_manifest(&signed, &self.creds, now)
            .map_err(|e| Refusal::new(ErrorCode::InvalidData, format!("{peer} answered {what}: {e}")))?;
        if let Err(why) = derived_from_source(&manifest, source, restriction) {
            let _ = tokio::fs::remove_dir_all(&report.path).await;
            self.metrics.verify_failures.inc();
            return Err(Refusal::new(ErrorCode::InvalidData, format!("{peer} answered {what} with {why}")));
        }
        // The files move into the store: the copy stops being a finished pull first.
        tokio::fs::remove_file(report.path.join(SIGNED_NAME)).await.map_err(|e| internal(&e))?;
        let verified = report.verified.as_deref().map_or(&[][..], |v| v.files());
        let version = NewVersion { signed, manifest, signer };
        let committed = derived.commit_pulled(&report.path, version, verified).await;
        let _ = tokio::fs::remove_dir_all(&report.path).await;
        committed.map_err(|e| match is_out_of_space(&e) {
            true => Refusal::out_of_space(&self.creds.principal().name, &what, &e),
            false => Refusal::from(e),
        })?;
        self.metrics.received_bytes.inc_by(report.wire_bytes);
        tracing::info!(
            dataset = %m.dataset, version = %m.version, restriction = %restriction.id(), grant = read.grant,
            from = %peer, bytes = report.fetched_bytes, seconds = started.elapsed().as_secs_f64(),
            "fetched a restricted version from the provider's node"
        );
        Ok(())
    }

    /// What the grantee is told when the fetch failed: "try later" when the provider's node
    /// cannot be reached now, the provider's own refusal otherwise.
    fn fetch_refusal(&self, peer: &str, what: &str, e: PullError) -> Refusal {
        tracing::warn!(from = peer, error = %e, "fetching {what} from the provider's node failed");
        if is_out_of_space(&e) {
            return Refusal::out_of_space(&self.creds.principal().name, what, &e);
        }
        let unreachable = |detail: &dyn std::fmt::Display| {
            Refusal::new(
                ErrorCode::Unavailable,
                format!(
                    "provider_unreachable: the hub cannot reach {peer}, the provider's node, to fetch {what} \
                     ({detail}); nothing was kept; try later"
                ),
            )
        };
        match e {
            PullError::RetriesExhausted { last, .. } => unreachable(&last),
            PullError::Interrupted { .. } => unreachable(&e),
            PullError::Client(ClientError::Remote { code, message }) => {
                Refusal::new(code, format!("provider_refused: {peer} refused {what}: {message}"))
            }
            PullError::Client(other) if other.is_transient() => unreachable(&other),
            PullError::NotProvider { .. }
            | PullError::Signature(_)
            | PullError::WrongManifest { .. }
            | PullError::Corrupt { .. }
            | PullError::ChunkHashes(_)
            | PullError::FileMismatch { .. } => {
                self.metrics.verify_failures.inc();
                Refusal::new(ErrorCode::InvalidData, format!("{peer} answered {what}: {e}"))
            }
            other => Refusal::internal("fetching a restricted version", &other),
        }
    }
}

/// How one fetch for a grant ended, the label of `ferry_hub_fetches_total`: `fetched`,
/// `unreachable` (the provider's node could not be reached: the grantee was told to try later),
/// `refused` (the provider's node refused the read), `invalid` (it answered something that is not
/// the restricted version of what the hub holds), `out_of_space`, `failed` (the hub's own fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchOutcome {
    Fetched,
    Unreachable,
    Refused,
    Invalid,
    OutOfSpace,
    Failed,
}

impl FetchOutcome {
    fn of(refusal: &Refusal) -> Self {
        match refusal.code {
            _ if refusal.message.starts_with("provider_unreachable") => Self::Unreachable,
            _ if refusal.message.starts_with("provider_refused") => Self::Refused,
            ErrorCode::InvalidData => Self::Invalid,
            ErrorCode::OutOfSpace => Self::OutOfSpace,
            _ => Self::Failed,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Fetched => "fetched",
            Self::Unreachable => "unreachable",
            Self::Refused => "refused",
            Self::Invalid => "invalid",
            Self::OutOfSpace => "out_of_space",
            Self::Failed => "failed",
        }
    }
}

/// Whether `manifest` is the restricted version of exactly `source` under `restriction`:
/// derived from its dataset, version and signed manifest, by its publisher (who signed it).
fn derived_from_source(
    manifest: &Manifest,
    source: &StoredVersion,
    restriction: &Restriction,
) -> Result<(), String> {
    let m = &source.manifest;
    let Some(derived) = &manifest.derived_from else {
        return Err("a version that is not restricted".into());
    };
    let same_source = derived.dataset == m.dataset
        && derived.version == m.version
        && derived.source_publisher == m.publisher
        && derived.source_manifest == Hash32(source.signed.blake3);
    if !same_source {
        return Err(format!(
            "a version derived from another source ({} {})",
            derived.dataset, derived.version
        ));
    }
    if derived.restriction != *restriction || derived.restriction_id != restriction.id() {
        return Err(format!("a version restricted otherwise ({})", derived.restriction_id));
    }
    if manifest.publisher != m.publisher || manifest.dataset != m.dataset || manifest.version != m.version {
        return Err(format!("{} {} published by {}", manifest.dataset, manifest.version, manifest.publisher));
    }
    Ok(())
}

fn internal(e: &dyn std::fmt::Display) -> Refusal {
    Refusal::internal("fetching a restricted version", e)
}
