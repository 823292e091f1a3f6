//! The object-store boundary: a small trait the filesystem is generic over, one flat error enum.

pub mod fault;
pub mod journaled;
pub mod memory;
pub mod percent;
pub mod s3;

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use futures::Stream;

/// One object as a HEAD or a listing reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
    pub content_type: Option<String>,
    /// User metadata (`x-amz-meta-*`, names lower-cased without the prefix); `None` when the
    /// object came from a listing, which does not carry metadata.
    pub user_meta: Option<HashMap<String, String>>,
}

impl ObjectInfo {
    /// This object's content type and user metadata, to write them again (a copy with
    /// metadata REPLACE, a rewritten object) keeping every header it had.
    pub fn put_options(&self) -> PutOptions {
        PutOptions {
            content_type: self.content_type.clone(),
            user_meta: self.user_meta.clone().unwrap_or_default(),
        }
    }
}

/// One page of a ListObjectsV2 call.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    pub prefixes: Vec<String>,
    pub next_token: Option<String>,
}

/// What a PutObject carries besides the body.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub user_meta: HashMap<String, String>,
}

pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("no such key")]
    NotFound,
    #[error("the object changed (ETag no longer matches)")]
    PreconditionFailed,
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    #[error("access denied ({0})")]
    AccessDenied(String),
    #[error("credentials rejected ({0})")]
    InvalidCredentials(String),
    #[error("cannot reach the endpoint: {0}")]
    Unreachable(String),
    #[error("TLS failure talking to the endpoint: {0}")]
    Tls(String),
    #[error("request timed out: {0}")]
    Timeout(String),
    #[error("{0}")]
    Other(String),
}

pub trait ObjectStore: Send + Sync + 'static {
    fn head(&self, key: &str) -> impl Future<Output = Result<ObjectInfo, StoreError>> + Send;

    /// Streams the bytes of `range`; with `etag`, fails with `PreconditionFailed` when the object
    /// is no longer that version (If-Match), so one handle never mixes two versions.
    fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        etag: Option<&str>,
    ) -> impl Future<Output = Result<BodyStream, StoreError>> + Send;

    /// ListObjectsV2 of `prefix`, with `/` as delimiter when `delimited`.
    fn list(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: Option<i32>,
    ) -> impl Future<Output = Result<ListPage, StoreError>> + Send;

    fn put(
        &self,
        key: &str,
        body: Bytes,
        opts: PutOptions,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// CopyObject within the bucket; with `meta`, the copy gets exactly that metadata and
    /// content type (REPLACE), else it keeps the source's. Returns the new ETag.
    fn copy(
        &self,
        src: &str,
        dst: &str,
        meta: Option<PutOptions>,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// Starts a multipart upload; returns its upload id.
    fn create_multipart(
        &self,
        key: &str,
        opts: PutOptions,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part: i32,
        body: Bytes,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// UploadPartCopy of `range` of `src` (which must still be version `src_etag`).
    fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part: i32,
        src: &str,
        src_etag: &str,
        range: Range<u64>,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// Completes an upload from (part number, ETag) pairs; returns the object's ETag.
    fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(i32, String)>,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    fn abort_multipart(
        &self,
        key: &str,
        upload_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Times a response body may break off mid-way (a dropped connection) and be resumed. The SDK
/// retries requests; a body already being read is ours to resume.
pub const BODY_ATTEMPTS: usize = 5;

/// Reads all of `range`, resuming from the first byte not yet received when a body breaks off
/// or ends short. With `etag`, every attempt carries If-Match, so a resumed read cannot mix two
/// versions of the object.
pub async fn read_range<S: ObjectStore>(
    store: &S,
    key: &str,
    range: Range<u64>,
    etag: Option<&str>,
) -> Result<Bytes, StoreError> {
    use futures::StreamExt;
    let len = (range.end - range.start) as usize;
    let mut out = bytes::BytesMut::with_capacity(len);
    let mut failures = 0;
    while out.len() < len {
        let start = range.start + out.len() as u64;
        let mut body = store.get_range(key, start..range.end, etag).await?;
        let mut broke = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => out.extend_from_slice(&c[..c.len().min(len - out.len())]),
                Err(e) => {
                    broke = Some(e);
                    break;
                }
            }
        }
        if out.len() < len {
            failures += 1;
            let e = broke.unwrap_or_else(|| StoreError::Other("response body ended early".into()));
            if failures >= BODY_ATTEMPTS {
                return Err(e);
            }
            tracing::debug!(key, "resuming a broken response body: {e}");
        }
    }
    Ok(out.freeze())
}
