//! One request stream: decode the request frame, turn it into a typed
//! [`Request`](ferry_proto::authz::Request), ask the authorizer before anything is looked up,
//! hand an allowed request to the data service, and report every outcome back.

use crate::data::service::{ChunksWanted, DataService, Refusal, Upload};
use crate::telemetry::{Metrics, ReasonLabel};
use ferry_net::wire::{FrameReader, FrameWriter};
use ferry_proto::authz::{Authorizer, Outcome, ReadPart, Request};
use ferry_proto::exchange::message_name;
use ferry_proto::{DeptId, ErrorCode, Message, Principal, ServiceMethod};
use std::sync::Arc;

/// Routes the requests of every connection to the data service, through the authorizer.
#[derive(Debug)]
pub struct Dispatcher {
    service: Arc<DataService>,
    authz: Arc<dyn Authorizer>,
    metrics: Arc<Metrics>,
    /// Who this node is, for `HelloAck`.
    node_name: String,
    node_dept: DeptId,
}

impl Dispatcher {
    pub fn new(
        service: Arc<DataService>,
        authz: Arc<dyn Authorizer>,
        metrics: Arc<Metrics>,
        node_name: String,
        node_dept: DeptId,
    ) -> Self {
        Self { service, authz, metrics, node_name, node_dept }
    }

    /// Answers the one request of a stream and finishes the stream.
    pub async fn handle_stream(&self, peer: &Principal, send: quinn::SendStream, recv: quinn::RecvStream) {
        let mut reader = FrameReader::new(recv);
        let mut writer = FrameWriter::new(send);
        let result = match reader.next().await {
            Ok(Some(request)) => self.dispatch(peer, request, &mut reader, &mut writer).await,
            Ok(None) => return,
            Err(e) => Err(Refusal::from(e)),
        };
        if let Err(refusal) = result {
            let _ = writer.send(&Message::Error { code: refusal.code, message: refusal.message }).await;
        }
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
                self.dispatch_read(peer, request, writer).await
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
                let result = self.service.publish(upload, &peer.name, reader, writer).await;
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
            other => {
                self.metrics.request("other");
                let name = message_name(&other);
                Err(Refusal::new(ErrorCode::BadRequest, format!("{name} is not a request")))
            }
        }
    }

    /// The requests that read a dataset: downloads (`ServiceMethod::Download`).
    async fn dispatch_read(
        &self,
        peer: &Principal,
        request: Message,
        writer: &mut FrameWriter,
    ) -> Result<(), Refusal> {
        let read = |dataset, version, part| Request::Read {
            dataset,
            version,
            method: ServiceMethod::Download,
            part,
        };
        match request {
            Message::ListVersions { dataset } => {
                self.metrics.request("versions");
                let request = read(dataset.clone(), None, ReadPart::Versions);
                self.authorize(peer, &request)?;
                let result = self.service.send_versions(dataset, writer).await;
                self.finish(peer, &request, result)
            }
            Message::GetManifest { dataset, version } => {
                self.metrics.request("manifest");
                let request = read(dataset.clone(), version, ReadPart::Manifest);
                self.authorize(peer, &request)?;
                let result = self.service.send_manifest(&dataset, version, writer).await;
                self.finish(peer, &request, result)
            }
            Message::GetChunks { dataset, version, file, first, count, accept_zstd } => {
                self.metrics.request("chunks");
                let request = read(dataset.clone(), Some(version), ReadPart::Chunks);
                self.authorize(peer, &request)?;
                let wanted = ChunksWanted { file, first, count, accept_zstd };
                let result = self.service.send_chunks(&dataset, version, wanted, writer).await;
                self.finish(peer, &request, result)
            }
            other => {
                let name = message_name(&other);
                Err(Refusal::new(ErrorCode::BadRequest, format!("{name} does not read a dataset")))
            }
        }
    }

    /// Asks the authorizer, reports its decision, and counts and logs a denial.
    fn authorize(&self, peer: &Principal, request: &Request) -> Result<(), Refusal> {
        match self.authz.authorize(peer, request) {
            Ok(()) => {
                self.authz.report(peer, request, &Outcome::Allowed);
                Ok(())
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
