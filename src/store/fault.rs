//! A fault-injecting decorator around any store, for tests: on a seeded schedule it breaks off
//! response bodies mid-way, the way a dropped connection does.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;

use super::{BodyStream, ListPage, ObjectInfo, ObjectStore, PutOptions, StoreError};

pub struct Faulty<S> {
    inner: S,
    /// Every `cut_every`-th GET delivers half its body, then fails.
    cut_every: u64,
    gets: AtomicU64,
    pub cuts: AtomicU64,
}

impl<S> Faulty<S> {
    /// The decorated store, to look at what a test did to it.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn new(inner: S, cut_every: u64) -> Self {
        Faulty {
            inner,
            cut_every: cut_every.max(1),
            gets: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
        }
    }
}

impl<S: ObjectStore> ObjectStore for Faulty<S> {
    async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        self.inner.head(key).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        etag: Option<&str>,
    ) -> Result<BodyStream, StoreError> {
        let body = self.inner.get_range(key, range, etag).await?;
        let n = self.gets.fetch_add(1, Ordering::Relaxed) + 1;
        if n % self.cut_every != 0 {
            return Ok(body);
        }
        self.cuts.fetch_add(1, Ordering::Relaxed);
        let all: Vec<Bytes> = body.filter_map(|c| async { c.ok() }).collect().await;
        let joined: Vec<u8> = all.concat();
        let half = Bytes::from(joined[..joined.len() / 2].to_vec());
        let items = vec![
            Ok(half),
            Err(StoreError::Other("injected: connection reset".into())),
        ];
        Ok(Box::pin(futures::stream::iter(items)))
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
        self.inner.create_multipart(key, opts).await
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
        self.inner.complete_multipart(key, id, parts).await
    }

    async fn abort_multipart(&self, key: &str, id: &str) -> Result<(), StoreError> {
        self.inner.abort_multipart(key, id).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::cache::{BlockCache, PrefetchConfig, Prefetcher};
    use crate::store::memory::MemoryStore;
    use crate::store::read_range;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 253) as u8).collect()
    }

    #[tokio::test]
    async fn read_range_resumes_broken_bodies() {
        let mem = MemoryStore::new();
        let d = data(300_000);
        mem.insert("k", d.clone(), &[]);
        let etag = mem.head("k").await.unwrap().etag;
        let store = Faulty::new(mem, 2);
        for i in 0..6u64 {
            let r = i * 40_000..i * 40_000 + 50_000;
            let got = read_range(&store, "k", r.clone(), Some(&etag))
                .await
                .unwrap();
            assert_eq!(&got[..], &d[r.start as usize..r.end as usize]);
        }
        assert!(
            store.cuts.load(Ordering::Relaxed) >= 3,
            "faults were injected"
        );
    }

    #[tokio::test]
    async fn prefetched_sequential_reads_survive_broken_bodies() {
        let mem = MemoryStore::new();
        let d = data(3 << 20);
        mem.insert("k", d.clone(), &[]);
        let etag = mem.head("k").await.unwrap().etag;
        let store = Arc::new(Faulty::new(mem, 3));
        let cfg = PrefetchConfig {
            block_size: 64 << 10,
            initial_window: 64 << 10,
            max_window: 512 << 10,
            max_request: 256 << 10,
        };
        let cache = Arc::new(BlockCache::new(8 << 20, 64 << 10));
        let p = Prefetcher::new(store.clone(), cache, cfg, "k", &etag, d.len() as u64);
        let mut out = Vec::new();
        while out.len() < d.len() {
            out.extend_from_slice(&p.read(out.len() as u64, 128 << 10).await.unwrap());
        }
        assert!(out == d);
        assert!(store.cuts.load(Ordering::Relaxed) > 0);
    }
}
