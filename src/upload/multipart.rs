//! One multipart upload from start to end: create it, send its parts (uploads or server-side
//! copies) a few at a time, complete it, or abort it on the first failure. Shared by commits
//! of edited files and by copies of objects over 5 GiB (rename, metadata rewrites).

use std::future::Future;

use futures::{StreamExt, TryStreamExt};

use crate::error::FsError;
use crate::store::{ObjectStore, PutOptions};

/// Uploads `key` from `items`, part `n` (from 1) being `part(upload id, n, item)`, at most
/// `in_flight` at once; returns the new object's ETag. The first part that fails ends the
/// upload: the others are dropped (cancelled) rather than each waiting out its own retries
/// against a store that is down, and the upload is aborted.
pub async fn upload<S, T, Fut>(
    store: &S,
    key: &str,
    opts: PutOptions,
    items: Vec<T>,
    in_flight: usize,
    part: impl Fn(&str, i32, T) -> Fut,
) -> Result<String, FsError>
where
    S: ObjectStore,
    Fut: Future<Output = Result<String, FsError>>,
{
    let id = store.create_multipart(key, opts).await?;
    let parts: Result<Vec<(i32, String)>, FsError> = futures::stream::iter(items)
        .enumerate()
        .map(|(i, item)| {
            let n = i as i32 + 1;
            let sent = part(&id, n, item);
            async move { Ok((n, sent.await?)) }
        })
        .buffered(in_flight.max(1))
        .try_collect()
        .await;
    let done = match parts {
        Ok(parts) => store
            .complete_multipart(key, &id, parts)
            .await
            .map_err(FsError::from),
        Err(e) => Err(e),
    };
    if done.is_err() {
        if let Err(e) = store.abort_multipart(key, &id).await {
            tracing::warn!(key, "could not abort multipart upload: {e}");
        }
    }
    done
}
