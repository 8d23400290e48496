//! An object uploaded in parts ([`super::BlobStore::upload_in_parts`]): what a store that takes
//! multipart uploads (S3, memory) hands the streamed import of a replication, which sends a
//! file's parts while the pull still writes it (`crate::data::store::streamed`).

use super::{BlobError, BlobResult};
use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::{MultipartUpload, PutPayload};

/// An object being uploaded in parts ([`super::BlobStore::upload_in_parts`]): parts are sent in the
/// order [`put_part`](Self::put_part) is called, each at least 5 MiB but the last (S3's rule),
/// and the object appears whole at [`complete`](Self::complete), or never.
#[derive(Debug)]
pub struct PartsUpload {
    key: String,
    upload: Box<dyn MultipartUpload>,
}

impl PartsUpload {
    pub(super) fn new(key: &str, upload: Box<dyn MultipartUpload>) -> Self {
        Self { key: key.to_owned(), upload }
    }

    /// Starts sending the next part; the future owns what it needs and may be awaited anywhere
    /// (several at once), but every one before [`complete`](Self::complete).
    pub fn put_part(&mut self, bytes: Bytes) -> BoxFuture<'static, BlobResult<()>> {
        let key = self.key.clone();
        let sent = self.upload.put_part(PutPayload::from(bytes));
        async move { sent.await.map_err(|e| BlobError::from_object_store(&key, e)) }.boxed()
    }

    /// Makes the object visible with every part sent, in order.
    pub async fn complete(mut self) -> BlobResult<()> {
        self.upload.complete().await.map(drop).map_err(|e| BlobError::from_object_store(&self.key, e))
    }

    /// Abandons the upload and its parts (best effort: an abandoned upload is invisible anyway).
    pub async fn abort(mut self) {
        if let Err(error) = self.upload.abort().await {
            tracing::debug!(key = %self.key, %error, "abandoned upload not aborted");
        }
    }
}
