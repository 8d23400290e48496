//! Online queries (联机查询) from the client side: send a [`QuerySpec`] for a dataset (the latest
//! or a named version) to a node and read its answer — `QueryData` frames of the result in the
//! asked format, then `QueryDone{rows, truncated}` — as raw pieces ([`QueryStream::next_piece`]),
//! as Arrow record batches one at a time ([`QueryStream::next_batch`], Arrow IPC results), or
//! collected ([`query`], [`query_batches`]).
//!
//! The node checks the query against the columns the asker may see and answers a typed error
//! (`BadRequest` naming the unknown column or the bad literal; `Unavailable` over its time or
//! concurrency bounds; a grant refusal as for any read); see `ferry_proto::query`.

use crate::conn::{ClientError, Session};
use arrow::array::RecordBatch;
use arrow::buffer::Buffer;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamDecoder;
use bytes::Bytes;
use ferry_net::wire::FrameReader;
use ferry_proto::exchange::message_name;
use ferry_proto::query::{QueryFormat, QuerySpec};
use ferry_proto::{DatasetId, Message, VersionNo};

/// Why a query's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The node refused or failed the query, or the connection failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The result is not the Arrow IPC stream it should be.
    #[error("the query's result is not a valid Arrow IPC stream: {0}")]
    Decode(#[from] ArrowError),
    /// Record batches were asked of a result in another format.
    #[error("record batches come only from arrow-ipc results, this query asked for {0}")]
    NotArrow(&'static str),
}

/// The end of a result, as the node reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryDone {
    pub rows: u64,
    /// The query's limit or the node's bound stopped the result before the last matching row.
    pub truncated: bool,
}

/// A query's answer, read as it arrives.
pub struct QueryStream<'a> {
    session: &'a Session,
    reader: FrameReader,
    format: QueryFormat,
    done: Option<QueryDone>,
    decoder: StreamDecoder,
    pending: Buffer,
}

impl std::fmt::Debug for QueryStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStream")
            .field("format", &self.format)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Sends `spec` about `dataset` at `version` (`None`: the latest) and returns its answer stream.
pub async fn start<'a>(
    session: &'a Session,
    dataset: &DatasetId,
    version: Option<VersionNo>,
    spec: &QuerySpec,
) -> Result<QueryStream<'a>, ClientError> {
    let request = Message::Query { dataset: dataset.clone(), version, query: spec.to_json() };
    let reader = session.start(&request).await?;
    Ok(QueryStream {
        session,
        reader,
        format: spec.format,
        done: None,
        decoder: StreamDecoder::new(),
        pending: Buffer::from(Vec::<u8>::new()),
    })
}

impl QueryStream<'_> {
    /// The next piece of the result's bytes; `None` once the node said the result is done.
    pub async fn next_piece(&mut self) -> Result<Option<Bytes>, ClientError> {
        if self.done.is_some() {
            return Ok(None);
        }
        match self.session.read(&mut self.reader).await? {
            Message::QueryData { data } => Ok(Some(data)),
            Message::QueryDone { rows, truncated } => {
                self.done = Some(QueryDone { rows, truncated });
                Ok(None)
            }
            other => Err(ClientError::Unexpected {
                expected: "QueryData or QueryDone",
                got: message_name(&other).into(),
            }),
        }
    }

    /// The next record batch of an Arrow IPC result; `None` at its end.
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>, QueryError> {
        if self.format != QueryFormat::ArrowIpc {
            return Err(QueryError::NotArrow(self.format.as_str()));
        }
        loop {
            if let Some(batch) = self.decoder.decode(&mut self.pending)? {
                return Ok(Some(batch));
            }
            if !self.pending.is_empty() {
                continue;
            }
            match self.next_piece().await? {
                Some(piece) => self.pending = Buffer::from(piece),
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }

    /// The schema of an Arrow IPC result, once its first piece was read.
    pub fn schema(&self) -> Option<SchemaRef> {
        self.decoder.schema()
    }

    /// How the result ended, once it did.
    pub fn done(&self) -> Option<QueryDone> {
        self.done
    }
}

/// A whole result: its bytes in the asked format, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryResult {
    pub data: Vec<u8>,
    pub done: QueryDone,
}

/// Runs a query and collects its result's bytes (bounded by the node's `max-result`).
pub async fn query(
    session: &Session,
    dataset: &DatasetId,
    version: Option<VersionNo>,
    spec: &QuerySpec,
) -> Result<QueryResult, ClientError> {
    let mut stream = start(session, dataset, version, spec).await?;
    let mut data = Vec::new();
    while let Some(piece) = stream.next_piece().await? {
        data.extend_from_slice(&piece);
    }
    let done = stream.done.unwrap_or(QueryDone { rows: 0, truncated: false });
    Ok(QueryResult { data, done })
}

/// Runs a query as an Arrow IPC result and decodes it into record batches.
pub async fn query_batches(
    session: &Session,
    dataset: &DatasetId,
    version: Option<VersionNo>,
    spec: &QuerySpec,
) -> Result<(Vec<RecordBatch>, QueryDone), QueryError> {
    let spec = QuerySpec { format: QueryFormat::ArrowIpc, ..spec.clone() };
    let mut stream = start(session, dataset, version, &spec).await?;
    let mut batches = Vec::new();
    while let Some(batch) = stream.next_batch().await? {
        batches.push(batch);
    }
    let done = stream.done.unwrap_or(QueryDone { rows: 0, truncated: false });
    Ok((batches, done))
}
