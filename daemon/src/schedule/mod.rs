//! Scheduled bulk downloads (数据下载): jobs that pull a dataset from a peer on a cron schedule
//! into a directory or the node's own store, as `Download` reads the serving node checks
//! against the department's grants.
//!
//! Jobs come from the node config (`[[schedule]]`, parsed by `crate::config`) and from node calls
//! (`node-schedule-add|list|remove|run-now`, answered through `crate::node_calls`). The
//! [`Scheduler`] keeps them with their next and last runs in the state directory ([`state`]),
//! decides at start what runs were missed while the node was down ([`spec::resume`]), wakes for
//! the next due run, and runs each job at most once at a time: a run is a number of attempts
//! ([`run::Runner`]) with backoff between them, all within the job's deadline. Its figures go to
//! [`metrics::ScheduleMetrics`]. Time is read from an injected [`clock::Clock`].

pub mod calls;
pub mod clock;
pub mod metrics;
pub mod run;
pub mod spec;
pub mod state;

mod jobs;

pub use clock::{Clock, ManualClock, SystemClock};
pub use jobs::{ScheduleError, Scheduler, SchedulerParts};
pub use metrics::ScheduleMetrics;
pub use run::{NodeRunner, Pulled, RunError, Runner};
pub use spec::{JobName, ScheduleSpec, SpecError, Target, parse_priority};

use crate::config::Config;
use crate::data::service::DataService;
use crate::telemetry::Metrics;
use ferry_net::tls::{Credentials, TlsError};
use std::sync::Arc;

/// Starts the node's scheduler on the host clock, pulling with its own copy of the node's
/// credentials over `endpoint`, into directories or through `service` into the store.
pub fn start_for_node(
    config: &Config,
    endpoint: quinn::Endpoint,
    provenance: Option<Arc<dyn ferry_client::transfer::Provenance>>,
    service: Arc<DataService>,
    metrics: &Metrics,
    draining: tokio::sync::watch::Receiver<bool>,
) -> Result<Arc<Scheduler>, TlsError> {
    let runner = NodeRunner {
        service,
        creds: Credentials::load(&config.tls)?,
        endpoint,
        peers: config.peers.clone(),
        provenance,
        streams: config.transfer.streams,
    };
    Ok(Scheduler::start(SchedulerParts {
        node_name: config.node_name.clone(),
        state_dir: config.state_dir.clone(),
        peers: config.peers.keys().cloned().collect(),
        configured: config.schedules.clone(),
        clock: Arc::new(SystemClock),
        runner: Arc::new(runner),
        metrics: Arc::new(metrics.schedule.clone()),
        draining,
    }))
}
