//! Uploading an export to one's own node for publication.

use crate::conn::{ClientError, Session};
use ferry_net::conn::message_name;
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
    let begin = Message::PublishBegin { definition, format, mode, size };
    let (mut writer, mut reader) = session.open(&begin).await?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let sent: Result<(), ferry_net::wire::WireError> = async {
        loop {
            let n = source.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            let data = bytes::Bytes::copy_from_slice(&buf[..n]);
            writer.send(&Message::PublishData { data }).await?;
        }
        writer.send(&Message::PublishEnd { blake3: *hasher.finalize().as_bytes() }).await?;
        writer.finish()
    }
    .await;
    if let Err(e) = sent {
        // The node stops reading when it refuses an upload; its answer says why.
        return Err(match session.read(&mut reader).await {
            Err(remote @ ClientError::Remote { .. }) => remote.into(),
            _ => ClientError::Wire(e).into(),
        });
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
