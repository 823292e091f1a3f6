//! A decorator that keeps the books on multipart uploads: each one started is recorded in the
//! upload journal before it gets a part, and struck off once completed or aborted, so that a
//! later mount can abort what a killed one left; an abort that failed (the store was down) is
//! kept and tried again (`abort_again`). Any store can be journaled; the S3 client knows
//! nothing of it.

use std::ops::Range;

use bytes::Bytes;

use super::{BodyStream, ListPage, ObjectInfo, ObjectStore, PutOptions, StoreError};
use crate::upload::journal::Journal;

pub struct Journaled<S> {
    inner: S,
    journal: Option<Journal>,
    /// Uploads whose abort failed, to abort again.
    unaborted: parking_lot::Mutex<Vec<(String, String)>>,
}

impl<S: ObjectStore> Journaled<S> {
    /// `journal`: none when the state directory cannot be written (uploads then go unrecorded,
    /// and failed aborts are still tried again).
    pub fn new(inner: S, journal: Option<Journal>) -> Self {
        Journaled {
            inner,
            journal,
            unaborted: parking_lot::Mutex::new(Vec::new()),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Tries again to abort the uploads whose abort failed; returns how many are still left.
    pub async fn abort_again(&self) -> usize {
        let pending = std::mem::take(&mut *self.unaborted.lock());
        for (key, id) in pending {
            // A failure puts it back on the list.
            if self.abort_multipart(&key, &id).await.is_ok() {
                tracing::info!(%key, "aborted an upload left while the store was unreachable");
            }
        }
        self.unaborted.lock().len()
    }
}

impl<S: ObjectStore> ObjectStore for Journaled<S> {
    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        self.inner.head(key).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        etag: Option<&str>,
    ) -> Result<BodyStream, StoreError> {
        self.inner.get_range(key, range, etag).await
    }

    async fn list(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: Option<i32>,
    ) -> Result<ListPage, StoreError> {
        self.inner.list(prefix, delimited, token, max_keys).await
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<String, StoreError> {
        self.inner.put(key, body, opts).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }

    async fn copy(
        &self,
        src: &str,
        dst: &str,
        meta: Option<PutOptions>,
    ) -> Result<String, StoreError> {
        self.inner.copy(src, dst, meta).await
    }

    async fn create_multipart(&self, key: &str, opts: PutOptions) -> Result<String, StoreError> {
        let id = self.inner.create_multipart(key, opts).await?;
        if let Some(j) = &self.journal {
            j.started(key, &id);
        }
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        id: &str,
        part: i32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        self.inner.upload_part(key, id, part, body).await
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        id: &str,
        part: i32,
        src: &str,
        src_etag: &str,
        range: Range<u64>,
    ) -> Result<String, StoreError> {
        self.inner
            .upload_part_copy(key, id, part, src, src_etag, range)
            .await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        id: &str,
        parts: Vec<(i32, String)>,
    ) -> Result<String, StoreError> {
        let etag = self.inner.complete_multipart(key, id, parts).await?;
        if let Some(j) = &self.journal {
            j.ended(id);
        }
        Ok(etag)
    }

    async fn abort_multipart(&self, key: &str, id: &str) -> Result<(), StoreError> {
        let result = self.inner.abort_multipart(key, id).await;
        match &result {
            Ok(()) | Err(StoreError::NotFound) => {
                if let Some(j) = &self.journal {
                    j.ended(id);
                }
            }
            // The store is unreachable or failing: try again later, so the parts do not stay
            // in the bucket once it is back.
            Err(_) => self
                .unaborted
                .lock()
                .push((key.to_string(), id.to_string())),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn uploads_are_journaled_until_they_end_and_failed_aborts_retried() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::create(dir.path(), "http://x", "b").unwrap();
        let store = Journaled::new(MemoryStore::new(), Some(journal));
        let open = store
            .create_multipart("k", PutOptions::default())
            .await
            .unwrap();
        let done = store
            .create_multipart("d", PutOptions::default())
            .await
            .unwrap();
        let etag = store
            .upload_part("d", &done, 1, Bytes::from_static(b"x"))
            .await
            .unwrap();
        store
            .complete_multipart("d", &done, vec![(1, etag)])
            .await
            .unwrap();
        let text = || {
            let f = std::fs::read_dir(dir.path())
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            std::fs::read_to_string(f.path()).unwrap()
        };
        assert!(text().contains(&format!("+\t{open}\tk")), "{}", text());
        assert!(text().contains(&format!("-\t{done}")), "{}", text());
        // The store refuses the abort: kept, and aborted once it answers again.
        store.inner().fail_aborts.store(1, Ordering::SeqCst);
        assert!(store.abort_multipart("k", &open).await.is_err());
        assert_eq!(store.inner().pending_uploads(), 1);
        assert_eq!(store.abort_again().await, 0);
        assert_eq!(store.inner().pending_uploads(), 0);
        assert!(text().contains(&format!("-\t{open}")), "{}", text());
    }
}
