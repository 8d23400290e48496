//! One request stream: decode the request frame, turn it into a typed
//! [`Request`](ferry_proto::authz::Request), ask the authorizer before anything is looked up,
//! hand an allowed request to the data service, and report every outcome back.
//!
//! The request frame is read within `[limits] request-timeout` and bounded by its kind before it
//! is buffered (`ferry_proto::frame::FrameBounds::Request`); only an authorized upload's data
//! frames may be large, each within `upload-frame-timeout`. Every answer is written with the
//! stall timeout, so a peer that reads nothing has its stream reset.

use crate::config::LimitsConfig;
use crate::data::query::QueryEngine;
use crate::data::service::{Borrower, ChunksWanted, DataService, Refusal, Upload};
use crate::node_calls::NodeCalls;
use crate::policy::Governance;
use crate::policy::stream::serve_subscription;
use crate::telemetry::{Metrics, ReasonLabel};
use ferry_control::api::{ApiCode, ApiError, ControlAnswer};
use ferry_net::wire::{FrameReader, FrameWriter, WireError};
use ferry_proto::authz::{Access, Authorizer, Denial, Outcome, ReadPart, Request};
use ferry_proto::exchange::message_name;
use ferry_proto::frame::FrameBounds;
use ferry_proto::node_api::NodeRequest;
use ferry_proto::{DecodeError, DeptId, ErrorCode, Message, Principal, Role, ServiceMethod};
use ferry_tables::catalog::RuleCode;
use std::sync::Arc;
use tokio::sync::watch;

/// Routes the requests of every connection to the data service, through the authorizer.
#[derive(Debug)]
pub struct Dispatcher {
    service: Arc<DataService>,
    authz: Arc<dyn Authorizer>,
    metrics: Arc<Metrics>,
    /// Who this node is, for `HelloAck`.
    node_name: String,
    node_dept: DeptId,
    /// The policy replica and, at the ministry, the control plane.
    governance: Option<Arc<Governance>>,
    draining: Option<watch::Receiver<bool>>,
    /// Read, upload and stall timeouts.
    limits: LimitsConfig,
    /// Answers the `node-…` calls about this node.
    node_calls: Option<Arc<NodeCalls>>,
    /// Answers online queries.
    query: Option<Arc<QueryEngine>>,
}

impl Dispatcher {
    pub fn new(
        service: Arc<DataService>,
        authz: Arc<dyn Authorizer>,
        metrics: Arc<Metrics>,
        node_name: String,
        node_dept: DeptId,
    ) -> Self {
        let limits = LimitsConfig::default();
        Self {
            service,
            authz,
            metrics,
            node_name,
            node_dept,
            governance: None,
            draining: None,
            limits,
            node_calls: None,
            query: None,
        }
    }

    /// Answers online queries with `engine`.
    pub fn with_query(mut self, engine: Arc<QueryEngine>) -> Self {
        self.query = Some(engine);
        self
    }

    /// Answers the node calls (`ferry status`, schedules, subscriptions) with `calls`.
    pub fn with_node_calls(mut self, calls: Arc<NodeCalls>) -> Self {
        self.node_calls = Some(calls);
        self
    }

    /// Reads requests and writes answers within `limits` (the defaults otherwise).
    pub fn with_limits(mut self, limits: LimitsConfig) -> Self {
        self.limits = limits;
        self
    }

    /// Serves policy subscriptions from `governance`'s replica and, at the ministry, control
    /// calls, until `draining`.
    pub fn with_governance(
        mut self,
        governance: Option<Arc<Governance>>,
        draining: watch::Receiver<bool>,
    ) -> Self {
        self.governance = governance;
        self.draining = Some(draining);
        self
    }

    /// Answers the one request of a stream and finishes the stream.
    pub async fn handle_stream(&self, peer: &Principal, send: quinn::SendStream, recv: quinn::RecvStream) {
        let mut reader = FrameReader::new(recv);
        reader.set_bounds(FrameBounds::Request);
        reader.set_frame_timeout(Some(self.limits.request_timeout));
        let mut writer = FrameWriter::new(send);
        writer.set_stall_timeout(Some(self.limits.stall_timeout));
        let result = match reader.next().await {
            Ok(Some(request)) => {
                // What may follow the request: an upload's frames, once authorized.
                reader.set_bounds(FrameBounds::Upload);
                reader.set_frame_timeout(Some(self.limits.upload_frame_timeout));
                self.dispatch(peer, request, &mut reader, &mut writer).await
            }
            Ok(None) => return,
            Err(e) => Err(refusal_of_request(e)),
        };
        if let Err(refusal) = result {
            let _ = writer.send(&Message::Error { code: refusal.code, message: refusal.message }).await;
        }
        let _ = writer.finish();
    }

    /// Answers a stream that is over its peer's stream cap with `Unavailable` and `why`,
    /// without reading its request.
    pub async fn refuse_stream(&self, send: quinn::SendStream, mut recv: quinn::RecvStream, why: String) {
        let _ = recv.stop(quinn::VarInt::from_u32(0));
        let mut writer = FrameWriter::new(send);
        writer.set_stall_timeout(Some(self.limits.stall_timeout));
        let _ = writer.send(&Message::Error { code: ErrorCode::Unavailable, message: why }).await;
        let _ = writer.finish();
    }

    async fn dispatch(
        &self,
        peer: &Principal,
        request: Message,
        reader: &mut FrameReader,
        writer: &mut FrameWriter,
    ) -> Result<(), Refusal> {
        match request {
            Message::Hello { minor, agent } => {
                self.metrics.request("hello");
                tracing::debug!(peer = %peer.dept, minor, %agent, "hello");
                let ack = Message::HelloAck {
                    node: self.node_name.clone(),
                    node_dept: self.node_dept.clone(),
                    peer_dept: peer.dept.clone(),
                    peer_role: peer.role,
                };
                Ok(writer.send(&ack).await?)
            }
            Message::ListDatasets => {
                self.metrics.request("list");
                let request = Request::List;
                self.authorize(peer, &request)?;
                let datasets =
                    self.service.list().into_iter().filter(|d| self.authz.visible(peer, &d.id)).collect();
                let result =
                    writer.send(&Message::DatasetList { datasets }).await.map(|()| 0).map_err(Refusal::from);
                self.finish(peer, &request, result)
            }
            Message::ListVersions { .. } | Message::GetManifest { .. } | Message::GetChunks { .. } => {
                self.dispatch_read(peer, None, request, writer).await
            }
            // The hub reading for another department's grant: the same reads, decided for it.
            Message::ForGrant { grant, read } => self.dispatch_read(peer, Some(grant), *read, writer).await,
            Message::Subscribe { dataset, have } => {
                self.metrics.request("subscribe");
                self.serve_subscriber(peer, dataset, have, reader, writer).await
            }
            Message::PublishBegin { definition, format, mode, size } => {
                self.metrics.request("publish");
                let upload = Upload::parse(definition, format, mode, size)?;
                let request = Request::Publish {
                    dataset: upload.dataset().clone(),
                    provider: upload.provider().clone(),
                    share_type: upload.share_type(),
                };
                self.authorize(peer, &request)?;
                let upload = self.conform_to_catalog(upload)?;
                let result = self.service.publish(upload, &peer.name, reader, writer).await;
                if result.is_ok() {
                    self.report_publication(request.dataset());
                }
                self.finish(peer, &request, result)
            }
            Message::Replicate { peer: source, dataset, version } => {
                self.metrics.request("replicate");
                let request =
                    Request::Replicate { source: source.clone(), dataset: dataset.clone(), version };
                self.authorize(peer, &request)?;
                let result = self.service.replicate(&source, dataset, version, writer).await;
                self.finish(peer, &request, result)
            }
            Message::Query { dataset, version, query } => {
                self.metrics.request("query");
                self.answer_query(peer, dataset, version, &query, writer).await
            }
            Message::PolicySubscribe { .. } => {
                self.metrics.request("policy");
                self.serve_policy(peer, writer).await
            }
            Message::ControlCall { request } => {
                self.metrics.request("control");
                self.control_call(peer, &request, writer).await
            }
            other => {
                self.metrics.request("other");
                let name = message_name(&other);
                Err(Refusal::new(ErrorCode::BadRequest, format!("{name} is not a request")))
            }
        }
    }

    /// With a catalog in force, a publish follows the entry in effect, not the uploaded definition.
    fn conform_to_catalog(&self, upload: Upload) -> Result<Upload, Refusal> {
        let Some(governance) = &self.governance else { return Ok(upload) };
        let now = std::time::SystemTime::now();
        let policy = governance.replica.current(now).map_err(|d| Refusal::from(&d))?;
        let now_ms = crate::policy::authorizer::unix_ms(now);
        let Some((_, entry)) = policy.in_effect(upload.dataset(), now_ms) else {
            return Err(Refusal::new(
                ErrorCode::PermissionDenied,
                format!("{} is not in the catalog in effect", upload.dataset()),
            ));
        };
        upload.conform_to_catalog(entry.catalog_version, &entry.definition)
    }

    /// After a publish, the control plane learns that the dataset's data is connected.
    fn report_publication(&self, dataset: Option<&ferry_proto::DatasetId>) {
        let (Some(governance), Some(dataset)) = (&self.governance, dataset) else { return };
        let Ok(latest) = self.service.store().version(dataset, None) else { return };
        governance.report_publication(
            dataset.clone(),
            latest.manifest.version.get(),
            latest.manifest.catalog_version,
        );
    }

    /// A node's subscription to the policy: nodes only (the snapshot names every catalog
    /// entry, not-shared ones included); the stream stays open until the peer or this node goes.
    async fn serve_policy(&self, peer: &Principal, writer: &mut FrameWriter) -> Result<(), Refusal> {
        if !matches!(peer.role, Role::Ministry | Role::Province) {
            return Err(Refusal::new(
                ErrorCode::PermissionDenied,
                format!("only nodes follow the policy; this is a {} certificate", peer.role),
            ));
        }
        let (Some(governance), Some(draining)) = (&self.governance, &self.draining) else {
            return Err(Refusal::new(ErrorCode::NotFound, "this node enforces no catalog policy"));
        };
        tracing::info!(peer = %peer, "a node follows this node's policy");
        serve_subscription(&governance.replica, writer, draining.clone()).await?;
        Ok(())
    }

    /// A control-plane call: answered by the ministry's control plane, refused elsewhere; an
    /// `explain` call by any node that enforces a catalog, from its own policy.
    async fn control_call(
        &self,
        peer: &Principal,
        request: &str,
        writer: &mut FrameWriter,
    ) -> Result<(), Refusal> {
        let explain = ferry_control::explain::ExplainRequest::parse(request);
        let answer = match (self.governance.as_ref(), explain) {
            _ if let Some(call) = NodeRequest::parse(request) => self.node_call(peer, call).await,
            // Every node that enforces a catalog explains its own decisions.
            (Some(governance), Some(query)) => {
                crate::policy::explain::answer(governance, &self.node_name, peer, &query).await.to_json()
            }
            _ => self.control_plane_call(peer, request).await,
        };
        let answer = Message::ControlAnswer { answer };
        if !ferry_proto::frame::fits(&answer) {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                "the answer exceeds one frame; narrow the request",
            ));
        }
        writer.send(&answer).await?;
        Ok(())
    }

    /// The answer to a `node-…` call, or why it cannot be answered.
    async fn node_call(&self, peer: &Principal, call: Result<NodeRequest, String>) -> String {
        self.metrics.request("node-call");
        let answer = match (call, &self.node_calls) {
            (Err(malformed), _) => ControlAnswer::Error(ApiError::new(ApiCode::BadRequest, malformed)),
            (Ok(_), None) => {
                ControlAnswer::Error(ApiError::new(ApiCode::NotFound, "this node answers no node calls"))
            }
            (Ok(call), Some(calls)) => calls.call(peer, call).await,
        };
        answer.to_json()
    }

    /// The answer of the ministry's control plane, or that this node is not the ministry.
    async fn control_plane_call(&self, peer: &Principal, request: &str) -> String {
        match self.governance.as_ref().and_then(|g| g.control.as_ref()) {
            Some(control) => {
                let answer = control.call(peer, request).await;
                self.count_compliance_failures(&answer);
                answer.to_json()
            }
            None => crate::control::not_the_ministry(),
        }
    }

    fn count_compliance_failures(&self, answer: &ControlAnswer) {
        let ControlAnswer::Error(ApiError { code: ApiCode::ComplianceFailed, detail: Some(report), .. }) =
            answer
        else {
            return;
        };
        let violations = report.get("violations").and_then(|v| v.as_array()).cloned().unwrap_or_default();
        for violation in violations {
            let rule = violation.get("rule").and_then(|r| r.as_str()).unwrap_or_default();
            if let Some(code) = RuleCode::ALL.iter().find(|c| c.code() == rule) {
                self.metrics.compliance_failures.get_or_create(&ReasonLabel { reason: code.name() }).inc();
            }
        }
    }

    /// The requests that read a dataset's files, under the service method they name: a download
    /// or the pull that follows a subscription's announcement. An online query reads no files.
    /// `for_grant`: the ministry's hub reads for another department's grant (`ForGrant`), and is
    /// answered with what that grant allows.
    async fn dispatch_read(
        &self,
        peer: &Principal,
        for_grant: Option<u64>,
        request: Message,
        writer: &mut FrameWriter,
    ) -> Result<(), Refusal> {
        let read = |dataset, version, method, part| match for_grant {
            Some(grant) => Request::ReadForGrant { dataset, version, method, part, grant },
            None => Request::Read { dataset, version, method, part },
        };
        let method = match &request {
            Message::ListVersions { method, .. }
            | Message::GetManifest { method, .. }
            | Message::GetChunks { method, .. } => *method,
            _ => ServiceMethod::Download,
        };
        if method == ServiceMethod::OnlineQuery {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "an online query reads no files; send a Query request instead",
            ));
        }
        match request {
            Message::ListVersions { dataset, .. } => {
                self.metrics.request("versions");
                let request = read(dataset.clone(), None, method, ReadPart::Versions);
                let access = self.authorize_access(peer, &request)?;
                let result = self.service.send_versions_for(&access, method, dataset, writer).await;
                self.finish(peer, &request, result)
            }
            Message::GetManifest { dataset, version, .. } => {
                self.metrics.request("manifest");
                let request = read(dataset.clone(), version, method, ReadPart::Manifest);
                let access = self.authorize_access(peer, &request)?;
                let result = self.service.send_manifest_for(&access, method, &dataset, version, writer).await;
                self.finish(peer, &request, result)
            }
            Message::GetChunks { dataset, version, file, first, count, accept_zstd, priority, .. } => {
                self.metrics.request("chunks");
                let request = read(dataset.clone(), Some(version), method, ReadPart::Chunks);
                let access = self.authorize_access(peer, &request)?;
                let wanted = ChunksWanted { file, first, count, accept_zstd };
                let borrower = Borrower::of(peer).declaring(priority);
                let serve = self
                    .service
                    .send_chunks_for(&access, method, &borrower, &dataset, version, wanted, writer);
                let result = tokio::select! {
                    result = serve => Ok(result),
                    denial = self.no_longer_allowed(peer, &request, &access) => Err(denial),
                };
                match result {
                    Ok(result) => self.finish(peer, &request, result),
                    Err(denial) => Err(self.cut_off(peer, &request, &denial, writer)),
                }
            }
            other => {
                let name = message_name(&other);
                Err(Refusal::new(ErrorCode::BadRequest, format!("{name} does not read a dataset")))
            }
        }
    }

    /// A subscription to a dataset's versions, authorized before anything is looked up (a
    /// restricted grant may subscribe: its pulls are then served the restricted versions). The
    /// stream stays open (`crate::subscribe::serve`) until the peer ends it, the node drains, or
    /// a policy installed meanwhile no longer allows it, which ends it with the reason.
    async fn serve_subscriber(
        &self,
        peer: &Principal,
        dataset: ferry_proto::DatasetId,
        have: Option<ferry_proto::VersionNo>,
        reader: &mut FrameReader,
        writer: &mut FrameWriter,
    ) -> Result<(), Refusal> {
        let part = ReadPart::Announcements;
        let request = Request::Read {
            dataset: dataset.clone(),
            version: None,
            method: ServiceMethod::Subscription,
            part,
        };
        let access = self.authorize_access(peer, &request)?;
        // Only `Holding` frames follow, whenever the subscriber has something to say.
        reader.set_bounds(FrameBounds::Subscription);
        reader.set_frame_timeout(None);
        let stream = crate::subscribe::serve::SubscriberStream {
            announcements: self.service.announcements(),
            store: self.service.store(),
            metrics: &self.metrics.subscriptions,
            dataset,
            have,
            subscriber: peer.name.clone(),
        };
        tracing::info!(peer = %peer, dataset = %stream.dataset, ?have, "a subscriber follows");
        let result = tokio::select! {
            result = stream.serve(reader, writer, self.draining.clone()) => result.map(|()| 0),
            denial = self.no_longer_allowed(peer, &request, &access) => {
                self.authz.report(peer, &request, &Outcome::Denied(&denial));
                self.metrics.denials.get_or_create(&ReasonLabel { reason: denial.reason }).inc();
                tracing::warn!(peer = %peer.dept, reason = denial.reason, "ended a subscription the policy no longer allows: {}", denial.message);
                return Err(Refusal::from(&denial));
            }
        };
        self.finish(peer, &request, result)
    }

    /// An online query: authorized as a read of the dataset's rows under `OnlineQuery` before
    /// anything is looked up; a restricted grant's columns and rows apply to it
    /// (`crate::data::query`). Cut off like a chunk answer when the policy stops allowing it.
    async fn answer_query(
        &self,
        peer: &Principal,
        dataset: ferry_proto::DatasetId,
        version: Option<ferry_proto::VersionNo>,
        query: &str,
        writer: &mut FrameWriter,
    ) -> Result<(), Refusal> {
        let method = ServiceMethod::OnlineQuery;
        let request = Request::Read { dataset: dataset.clone(), version, method, part: ReadPart::Rows };
        let access = self.authorize_access(peer, &request)?;
        let Some(engine) = &self.query else {
            let refusal = Refusal::new(ErrorCode::NotFound, "this node answers no online queries");
            return self.finish(peer, &request, Err(refusal));
        };
        let answer = engine.answer(peer, &access, &dataset, version, query, writer);
        let result = tokio::select! {
            result = answer => Ok(result),
            denial = self.no_longer_allowed(peer, &request, &access) => Err(denial),
        };
        match result {
            Ok(result) => self.finish(peer, &request, result),
            Err(denial) => Err(self.cut_off(peer, &request, &denial, writer)),
        }
    }

    /// [`Self::authorize_access`] for requests that have no restricted form: a restricted
    /// access is refused (the full dataset never leaves the node for such a grant).
    fn authorize(&self, peer: &Principal, request: &Request) -> Result<(), Refusal> {
        match self.authorize_access(peer, request)? {
            Access::Full => Ok(()),
            Access::Restricted { .. } => Err(Refusal::new(
                ErrorCode::PermissionDenied,
                "the grant allows only part of the dataset, served as its restricted versions",
            )),
        }
    }

    /// Asks the authorizer, reports its decision, and counts and logs a denial. A read the
    /// authorizer restricts to part of a dataset is answered from the restricted versions
    /// (only the permitted columns and rows): the full version never leaves the node for it.
    fn authorize_access(&self, peer: &Principal, request: &Request) -> Result<Access, Refusal> {
        match self.authz.authorize(peer, request) {
            Ok(access) => {
                self.authz.report(peer, request, &Outcome::Allowed);
                Ok(access)
            }
            Err(denial) => {
                self.authz.report(peer, request, &Outcome::Denied(&denial));
                self.metrics.denials.get_or_create(&ReasonLabel { reason: denial.reason }).inc();
                tracing::warn!(
                    peer = %peer.dept, role = %peer.role, request = request.kind(),
                    dataset = ?request.dataset().map(|d| d.as_str()), reason = denial.reason,
                    "denied: {}", denial.message
                );
                Err(Refusal::from(&denial))
            }
        }
    }

    /// Resolves when a policy snapshot installed while an answer is sent no longer allows
    /// `request` as `allowed` (a grant revoked, lapsed, or changed to other content), with why.
    /// Without a policy replica it never resolves.
    async fn no_longer_allowed(&self, peer: &Principal, request: &Request, allowed: &Access) -> Denial {
        let Some(governance) = &self.governance else { return std::future::pending().await };
        let mut updates = governance.replica.subscribe();
        updates.mark_unchanged();
        loop {
            if updates.changed().await.is_err() {
                return std::future::pending().await;
            }
            match self.authz.authorize(peer, request) {
                Ok(access) if access == *allowed => {}
                Ok(_) => {
                    return Denial::forbidden(
                        "grant_changed",
                        "the grant now allows other content of the dataset; pull again to get what it allows",
                    );
                }
                Err(denial) => return denial,
            }
        }
    }

    /// Ends an answer the policy stopped allowing while it was sent: the stream is reset (it may
    /// stop in the middle of a frame), the denial counted and reported; the peer's next request
    /// is refused with the reason.
    fn cut_off(
        &self,
        peer: &Principal,
        request: &Request,
        denial: &Denial,
        writer: &mut FrameWriter,
    ) -> Refusal {
        writer.reset(ferry_net::wire::RESET_NO_LONGER_ALLOWED);
        self.authz.report(peer, request, &Outcome::Denied(denial));
        self.metrics.denials.get_or_create(&ReasonLabel { reason: denial.reason }).inc();
        tracing::warn!(
            peer = %peer.dept, dataset = ?request.dataset().map(|d| d.as_str()), reason = denial.reason,
            "cut off an answer the policy no longer allows: {}", denial.message
        );
        Refusal::from(denial)
    }

    /// Reports how an allowed request ended.
    fn finish(
        &self,
        peer: &Principal,
        request: &Request,
        result: Result<u64, Refusal>,
    ) -> Result<(), Refusal> {
        match result {
            Ok(bytes) => {
                self.authz.report(peer, request, &Outcome::Completed { bytes });
                Ok(())
            }
            Err(refusal) => {
                let outcome = Outcome::Failed { code: refusal.code, message: &refusal.message };
                self.authz.report(peer, request, &outcome);
                Err(refusal)
            }
        }
    }
}

/// Why a request frame could not be read, as the peer is told: a frame over its kind's bound
/// is `TooLarge`, anything else `BadRequest`.
fn refusal_of_request(e: WireError) -> Refusal {
    let code = match &e {
        WireError::Decode(DecodeError::FrameTooLarge { .. }) => ErrorCode::TooLarge,
        _ => ErrorCode::BadRequest,
    };
    Refusal::new(code, e.to_string())
}
