//! An in-memory object store with S3 key semantics, for unit tests only. It counts requests so
//! tests can assert that the filesystem issues no needless ones.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{BodyStream, ListPage, ObjectInfo, ObjectStore, PutOptions, StoreError};

#[derive(Debug, Clone)]
struct Stored {
    body: Bytes,
    info: ObjectInfo,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub head: AtomicU64,
    pub get: AtomicU64,
    pub list: AtomicU64,
    pub put: AtomicU64,
    pub copy: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub bytes_read: AtomicU64,
}

/// A multipart upload in progress: key, options, parts.
type Upload = (String, PutOptions, BTreeMap<i32, Bytes>);

#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<BTreeMap<String, Stored>>,
    uploads: Mutex<HashMap<String, Upload>>,
    version: AtomicU64,
    pub counters: Counters,
    /// The next this many UploadPart calls fail, as a store that is down would.
    pub fail_parts: AtomicU64,
    /// The next this many AbortMultipartUpload calls fail the same way.
    pub fail_aborts: AtomicU64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, key: &str, body: impl Into<Bytes>, meta: &[(&str, &str)]) {
        let opts = PutOptions {
            content_type: None,
            user_meta: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        self.put_now(key, body.into(), opts);
    }

    fn stored(&self, key: &str) -> Result<Stored, StoreError> {
        self.objects
            .lock()
            .get(key)
            .cloned()
            .ok_or(StoreError::NotFound)
    }

    fn add_part(&self, upload_id: &str, part: i32, body: Bytes) -> Result<(), StoreError> {
        let mut uploads = self.uploads.lock();
        let up = uploads.get_mut(upload_id).ok_or(StoreError::NotFound)?;
        up.2.insert(part, body);
        Ok(())
    }

    fn put_now(&self, key: &str, body: Bytes, opts: PutOptions) -> String {
        let etag = format!("\"v{}\"", self.version.fetch_add(1, Ordering::Relaxed));
        let info = ObjectInfo {
            key: key.to_string(),
            size: body.len() as u64,
            etag: etag.clone(),
            last_modified: SystemTime::now(),
            content_type: opts.content_type,
            user_meta: Some(opts.user_meta),
        };
        self.objects
            .lock()
            .insert(key.to_string(), Stored { body, info });
        etag
    }
}

impl ObjectStore for MemoryStore {
    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        self.counters.head.fetch_add(1, Ordering::Relaxed);
        self.objects
            .lock()
            .get(key)
            .map(|s| s.info.clone())
            .ok_or(StoreError::NotFound)
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        etag: Option<&str>,
    ) -> Result<BodyStream, StoreError> {
        self.counters.get.fetch_add(1, Ordering::Relaxed);
        let stored = self.stored(key)?;
        if etag.is_some_and(|e| e != stored.info.etag) {
            return Err(StoreError::PreconditionFailed);
        }
        let end = range.end.min(stored.body.len() as u64) as usize;
        let start = (range.start as usize).min(end);
        let body = stored.body.slice(start..end);
        self.counters
            .bytes_read
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        // Several chunks, as a real HTTP body arrives.
        let chunks: Vec<Result<Bytes, StoreError>> = (0..body.len())
            .step_by(64 * 1024)
            .map(|i| Ok(body.slice(i..(i + 64 * 1024).min(body.len()))))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn list(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: Option<i32>,
    ) -> Result<ListPage, StoreError> {
        self.counters.list.fetch_add(1, Ordering::Relaxed);
        let max = max_keys.unwrap_or(1000).max(1) as usize;
        let objects = self.objects.lock();
        let mut page = ListPage::default();
        let mut seen_prefixes: HashMap<String, ()> = HashMap::new();
        let start = token.unwrap_or_default();
        let mut count = 0;
        for (key, stored) in objects.range(prefix.to_string()..) {
            if !key.starts_with(prefix) {
                break;
            }
            let rest = &key[prefix.len()..];
            let entry = match rest.find('/').filter(|_| delimited) {
                Some(i) => Err(format!("{prefix}{}", &rest[..=i])),
                None => Ok(stored),
            };
            let sort_key = match &entry {
                Err(p) => p.clone(),
                Ok(_) => key.clone(),
            };
            if sort_key.as_str() <= start.as_str() && !start.is_empty() {
                continue;
            }
            if let Err(p) = &entry {
                if seen_prefixes.contains_key(p) {
                    continue;
                }
            }
            if count == max {
                page.next_token = Some(
                    page.prefixes
                        .last()
                        .into_iter()
                        .chain(page.objects.last().map(|o| &o.key))
                        .max()
                        .cloned()
                        .unwrap_or_default(),
                );
                break;
            }
            count += 1;
            match entry {
                Err(p) => {
                    seen_prefixes.insert(p.clone(), ());
                    page.prefixes.push(p);
                }
                Ok(stored) => page.objects.push(ObjectInfo {
                    user_meta: None,
                    ..stored.info.clone()
                }),
            }
        }
        Ok(page)
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<String, StoreError> {
        self.counters.put.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_uploaded
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(self.put_now(key, body, opts))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.objects.lock().remove(key);
        Ok(())
    }

    async fn copy(
        &self,
        src: &str,
        dst: &str,
        meta: Option<PutOptions>,
    ) -> Result<String, StoreError> {
        self.counters.copy.fetch_add(1, Ordering::Relaxed);
        let stored = self.stored(src)?;
        let opts = meta.unwrap_or(stored.info.put_options());
        Ok(self.put_now(dst, stored.body, opts))
    }

    async fn create_multipart(&self, key: &str, opts: PutOptions) -> Result<String, StoreError> {
        let id = format!("up{}", self.version.fetch_add(1, Ordering::Relaxed));
        self.uploads
            .lock()
            .insert(id.clone(), (key.to_string(), opts, BTreeMap::new()));
        Ok(id)
    }

    async fn upload_part(
        &self,
        _key: &str,
        upload_id: &str,
        part: i32,
        body: Bytes,
    ) -> Result<String, StoreError> {
        let failing = self
            .fail_parts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(StoreError::Unreachable("injected: store down".into()));
        }
        self.counters
            .bytes_uploaded
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        self.add_part(upload_id, part, body)?;
        Ok(format!("\"p{part}\""))
    }

    async fn upload_part_copy(
        &self,
        _key: &str,
        upload_id: &str,
        part: i32,
        src: &str,
        src_etag: &str,
        range: Range<u64>,
    ) -> Result<String, StoreError> {
        self.counters.copy.fetch_add(1, Ordering::Relaxed);
        let stored = self.stored(src)?;
        if stored.info.etag != src_etag {
            return Err(StoreError::PreconditionFailed);
        }
        if range.end > stored.body.len() as u64 {
            return Err(StoreError::Other("copy range past the end".into()));
        }
        let body = stored.body.slice(range.start as usize..range.end as usize);
        self.add_part(upload_id, part, body)?;
        Ok(format!("\"c{part}\""))
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(i32, String)>,
    ) -> Result<String, StoreError> {
        let (ukey, opts, stored) = self
            .uploads
            .lock()
            .remove(upload_id)
            .ok_or(StoreError::NotFound)?;
        assert_eq!(ukey, key);
        let mut body = Vec::new();
        for (i, (n, _)) in parts.iter().enumerate() {
            let p = stored
                .get(n)
                .ok_or(StoreError::Other(format!("part {n} missing")))?;
            if i + 1 < parts.len() && p.len() < 5 << 20 {
                return Err(StoreError::Other(format!("EntityTooSmall: part {n}")));
            }
            body.extend_from_slice(p);
        }
        Ok(self.put_now(key, Bytes::from(body), opts))
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> Result<(), StoreError> {
        let failing = self
            .fail_aborts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(StoreError::Unreachable("injected: store down".into()));
        }
        // S3 answers NoSuchUpload for an upload that was completed, aborted or never existed.
        self.uploads
            .lock()
            .remove(upload_id)
            .map(|_| ())
            .ok_or(StoreError::NotFound)
    }
}

impl MemoryStore {
    /// Multipart uploads started and neither completed nor aborted.
    pub fn pending_uploads(&self) -> usize {
        self.uploads.lock().len()
    }

    pub fn body(&self, key: &str) -> Option<Bytes> {
        self.objects.lock().get(key).map(|s| s.body.clone())
    }

    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn list_pages_with_prefixes_in_key_order() {
        let s = MemoryStore::new();
        for k in ["d/a", "d/b/1", "d/b/2", "d/c", "d/e/x", "other"] {
            s.insert(k, "x", &[]);
        }
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let page = s.list("d/", true, token, Some(2)).await.unwrap();
            names.extend(page.objects.iter().map(|o| o.key.clone()));
            names.extend(page.prefixes.iter().cloned());
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        names.sort();
        assert_eq!(names, ["d/a", "d/b/", "d/c", "d/e/"]);
    }

    #[tokio::test]
    async fn get_with_stale_etag_fails() {
        let s = MemoryStore::new();
        s.insert("k", "one", &[]);
        let etag = s.head("k").await.unwrap().etag;
        s.insert("k", "two", &[]);
        let r = s.get_range("k", 0..3, Some(&etag)).await;
        assert!(matches!(r, Err(StoreError::PreconditionFailed)));
    }
}
