//! Uploading an export to one's own node for publication.

use crate::conn::{ClientError, Session};
use ferry_net::conn::message_name;
use ferry_proto::exchange::{UploadError, UploadSender};
use ferry_proto::{DatasetId, Message, PublishMode, SourceFormat, VersionNo};
use std::path::Path;
use tokio::io::AsyncReadExt;

/// Why a publish failed on this side.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot tell the format of {0}; pass --format csv or --format parquet")]
    UnknownFormat(std::path::PathBuf),
    #[error("{path} changed while it was sent: {source}")]
    SourceChanged { path: std::path::PathBuf, source: UploadError },
}

/// Why an upload stopped on this side.
enum SendFailure {
    Wire(ferry_net::wire::WireError),
    Source(UploadError),
}

/// What the node committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub dataset: DatasetId,
    /// The new version, or the latest one when `unchanged`.
    pub version: VersionNo,
    pub rows: u64,
    /// Bytes the node stored for the version.
    pub bytes: u64,
    /// The table equals the latest version: no version was made.
    pub unchanged: bool,
}

/// Uploads a whole-table export and its definition; the node writes, diffs, signs and commits.
pub async fn publish_file(
    session: &Session,
    file: &Path,
    definition: String,
    format: SourceFormat,
) -> Result<Published, PublishError> {
    publish_file_as(session, file, definition, format, PublishMode::Snapshot).await
}

/// Uploads an export; with [`PublishMode::Append`] the file holds only new rows of an
/// append-only dataset, which the node merges into the table (a repeated key is refused).
pub async fn publish_file_as(
    session: &Session,
    file: &Path,
    definition: String,
    format: SourceFormat,
    mode: PublishMode,
) -> Result<Published, PublishError> {
    let io = |source| PublishError::Io { path: file.to_owned(), source };
    let mut source = tokio::fs::File::open(file).await.map_err(io)?;
    let size = source.metadata().await.map_err(io)?.len();
    let (begin, mut upload) = UploadSender::begin(definition, format, mode, size);
    let (mut writer, mut reader) = session.open(&begin).await?;
    let mut buf = vec![0u8; 1 << 20];
    // The upload's frames as `ferry_proto::exchange::upload` defines them: never more than the
    // size announced, the BLAKE3 of exactly that many bytes at the end.
    let sent: Result<(), SendFailure> = async {
        loop {
            let n = source.read(&mut buf).await.map_err(|e| SendFailure::Wire(e.into()))?;
            if n == 0 {
                break;
            }
            for frame in upload.data(bytes::Bytes::copy_from_slice(&buf[..n])).map_err(SendFailure::Source)? {
                writer.send(&frame).await.map_err(SendFailure::Wire)?;
            }
        }
        let end = upload.end().map_err(SendFailure::Source)?;
        writer.send(&end).await.map_err(SendFailure::Wire)?;
        writer.finish().map_err(SendFailure::Wire)
    }
    .await;
    match sent {
        Ok(()) => {}
        Err(SendFailure::Source(source)) => {
            return Err(PublishError::SourceChanged { path: file.to_owned(), source });
        }
        // The node stops reading when it refuses an upload; its answer says why.
        Err(SendFailure::Wire(e)) => {
            return Err(match session.read(&mut reader).await {
                Err(remote @ ClientError::Remote { .. }) => remote.into(),
                _ => ClientError::Wire(e).into(),
            });
        }
    }
    match session.read(&mut reader).await? {
        Message::Published { dataset, version, rows, bytes } => {
            Ok(Published { dataset, version, rows, bytes, unchanged: false })
        }
        Message::Unchanged { dataset, version } => {
            Ok(Published { dataset, version, rows: 0, bytes: 0, unchanged: true })
        }
        other => Err(ClientError::Unexpected { expected: "Published", got: message_name(&other) }.into()),
    }
}

/// The format of a file, from an explicit choice or its extension.
pub fn source_format(file: &Path, flag: Option<&str>) -> Result<SourceFormat, PublishError> {
    let ext = file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match flag.or(ext.as_deref()) {
        Some("csv") => Ok(SourceFormat::Csv),
        Some("parquet") => Ok(SourceFormat::Parquet),
        _ => Err(PublishError::UnknownFormat(file.to_owned())),
    }
}
