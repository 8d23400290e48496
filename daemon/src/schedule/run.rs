//! One attempt of a job: pull what the target lacks from the job's peer, as a `Download` read,
//! behind the [`Runner`] seam so the scheduler's tests can stand in for the network. The node's
//! [`NodeRunner`] syncs a directory with the client's transfer engine
//! (`ferry_client::transfer::sync`: deltas applied and proved against the publisher's table list,
//! committed by one rename) or replicates into the node's store through the data service
//! (`DataService::replicate_as`: versions mirrored verbatim, verified, committed atomically).

use super::spec::{ScheduleSpec, Target};
use crate::data::service::{DataService, is_out_of_space};
use ferry_client::conn::{ClientError, Connector};
use ferry_client::transfer::{self, Provenance, PullError, PullOptions, PullRequest, Quiet};
use ferry_net::conn::NodeAddr;
use ferry_net::tls::Credentials;
use ferry_proto::{ErrorCode, ServiceMethod, VersionNo};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// What an attempt brought in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pulled {
    /// The version the target holds now.
    pub version: VersionNo,
    pub bytes_fetched: u64,
}

/// Why an attempt failed, by what the scheduler does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The serving node refused the read (no grant, no such dataset, a bad request): another
    /// attempt would be refused the same way.
    #[error("{code}: {message}")]
    Refused { code: ErrorCode, message: String },
    /// Anything that may pass (the peer unreachable or draining, a full disk being freed, bad
    /// bytes fetched again): retried with backoff.
    #[error("{message}")]
    Failed { code: Option<ErrorCode>, message: String },
}

impl RunError {
    /// A refusal for the codes a retry cannot change, a failure otherwise.
    pub fn from_code(code: ErrorCode, message: String) -> Self {
        match code {
            ErrorCode::PermissionDenied | ErrorCode::NotFound | ErrorCode::BadRequest => {
                Self::Refused { code, message }
            }
            code => Self::Failed { code: Some(code), message },
        }
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            Self::Failed { code, .. } => *code,
        }
    }
}

/// Runs one attempt of a job; stops at a chunk boundary when `cancel` turns true.
pub trait Runner: Send + Sync + std::fmt::Debug {
    fn pull<'a>(
        &'a self,
        spec: &'a ScheduleSpec,
        cancel: watch::Receiver<bool>,
    ) -> BoxFuture<'a, Result<Pulled, RunError>>;
}

/// The node's runner: its peers, credentials and endpoint, its store through the data service.
#[derive(Debug)]
pub struct NodeRunner {
    pub service: Arc<DataService>,
    pub creds: Credentials,
    pub endpoint: quinn::Endpoint,
    pub peers: BTreeMap<String, NodeAddr>,
    pub provenance: Option<Arc<dyn Provenance>>,
    pub streams: usize,
}

impl Runner for NodeRunner {
    fn pull<'a>(
        &'a self,
        spec: &'a ScheduleSpec,
        cancel: watch::Receiver<bool>,
    ) -> BoxFuture<'a, Result<Pulled, RunError>> {
        let run = async move {
            match &spec.into {
                Target::Store => self.to_store(spec).await,
                Target::Directory(dir) => self.to_directory(spec, dir, cancel).await,
            }
        };
        // The job's class for its pulls, at the node's pull limiter and declared to the peer.
        Box::pin(crate::data::bandwidth::as_job(spec.priority, run))
    }
}

impl NodeRunner {
    async fn to_store(&self, spec: &ScheduleSpec) -> Result<Pulled, RunError> {
        let done = self
            .service
            .replicate_as(&spec.from, &spec.dataset, None, ServiceMethod::Download)
            .await
            .map_err(|refusal| RunError::from_code(refusal.code, refusal.for_operator().to_owned()))?;
        Ok(Pulled { version: done.version, bytes_fetched: done.bytes_fetched })
    }

    async fn to_directory(
        &self,
        spec: &ScheduleSpec,
        dir: &std::path::Path,
        cancel: watch::Receiver<bool>,
    ) -> Result<Pulled, RunError> {
        let node = self.peers.get(&spec.from).ok_or_else(|| RunError::Refused {
            code: ErrorCode::NotFound,
            message: format!("this node has no peer named {:?} in its config", spec.from),
        })?;
        let connector = Connector::with_endpoint(self.endpoint.clone(), node.clone())
            .with_loopback_config(&self.creds)
            .map_err(|e| RunError::Failed { code: None, message: e.to_string() })?;
        tokio::fs::create_dir_all(dir).await.map_err(|e| RunError::Failed {
            code: None,
            message: format!("cannot create {}: {e}", dir.display()),
        })?;
        // The node's shared pull bandwidth limit, in the job's class, with the job's own streams.
        let opts = PullOptions {
            streams: self.streams,
            provenance: self.provenance.clone(),
            ..self.service.pull_options(ServiceMethod::Download, node)
        };
        let request = PullRequest { dataset: spec.dataset.clone(), version: None };
        let report = transfer::sync(&connector, &self.creds, &request, dir, &opts, Arc::new(Quiet), cancel)
            .await
            .map_err(pull_error)?;
        Ok(Pulled { version: report.version, bytes_fetched: report.fetched_bytes })
    }
}

fn pull_error(e: PullError) -> RunError {
    match e {
        PullError::Client(ClientError::Remote { code, message }) => RunError::from_code(code, message),
        e @ PullError::NotProvider { .. } => {
            RunError::Refused { code: ErrorCode::PermissionDenied, message: e.to_string() }
        }
        // A full target is named as such (`out of space` in `ferry schedule list`).
        e if is_out_of_space(&e) => {
            RunError::Failed { code: Some(ErrorCode::OutOfSpace), message: e.to_string() }
        }
        e => RunError::Failed { code: None, message: e.to_string() },
    }
}
