//! Per-handle read-ahead. Sequential reads grow a window of parallel ranged GETs (small at first
//! for a quick first byte, up to `max_window`); a jump resets it, and reads that are not sequential
//! fetch just the bytes asked for. Every GET carries the ETag seen at open (If-Match), and blocks
//! are cached by (key, ETag), so a handle never mixes two versions of an object.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::block::{BlockCache, BlockKey};
use crate::error::FsError;
use crate::store::{BODY_ATTEMPTS, ObjectStore, read_range};

#[derive(Debug, Clone, Copy)]
pub struct PrefetchConfig {
    /// Cache and fetch granularity.
    pub block_size: u64,
    /// Bytes read ahead after the first sequential read.
    pub initial_window: u64,
    /// Upper bound of bytes in flight ahead of the reader, per handle.
    pub max_window: u64,
    /// Largest single ranged GET.
    pub max_request: u64,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        PrefetchConfig {
            block_size: 1 << 20,
            initial_window: 1 << 20,
            max_window: 64 << 20,
            max_request: 8 << 20,
        }
    }
}

type BlockResult = Option<Result<Bytes, FsError>>;

/// The object version a handle reads.
#[derive(Clone)]
struct Target {
    key: Arc<str>,
    etag: Arc<str>,
    size: u64,
}

struct State {
    target: Target,
    /// Where a sequential reader reads next.
    next_offset: u64,
    window: u64,
    /// Blocks below this index have been requested in the current sequential run.
    requested_until: u64,
    inflight: BTreeMap<u64, watch::Receiver<BlockResult>>,
    tasks: Vec<(u64, AbortHandle)>,
}

pub struct Prefetcher<S> {
    store: Arc<S>,
    cache: Arc<BlockCache>,
    cfg: PrefetchConfig,
    state: Mutex<State>,
}

enum Plan {
    Direct,
    Blocks(Vec<Source>),
}

enum Source {
    Ready(Bytes),
    Waiting(watch::Receiver<BlockResult>),
}

impl<S: ObjectStore> Prefetcher<S> {
    pub fn new(
        store: Arc<S>,
        cache: Arc<BlockCache>,
        cfg: PrefetchConfig,
        key: &str,
        etag: &str,
        size: u64,
    ) -> Self {
        Prefetcher {
            store,
            cache,
            cfg,
            state: Mutex::new(State {
                target: Target {
                    key: key.into(),
                    etag: etag.into(),
                    size,
                },
                next_offset: 0,
                window: 0,
                requested_until: 0,
                inflight: BTreeMap::new(),
                tasks: Vec::new(),
            }),
        }
    }

    fn block_key(t: &Target, index: u64) -> BlockKey {
        BlockKey {
            key: t.key.clone(),
            etag: t.etag.clone(),
            index,
        }
    }

    /// This mount replaced the object with the same content elsewhere (a rename) or with a new
    /// version of it (a metadata rewrite, a commit): reads follow it.
    pub fn retarget(&self, key: &str, etag: &str, size: u64) {
        let mut st = self.state.lock();
        st.target = Target {
            key: key.into(),
            etag: etag.into(),
            size,
        };
        st.window = 0;
        st.requested_until = 0;
        st.inflight.clear();
        for (_, t) in st.tasks.drain(..) {
            t.abort();
        }
    }

    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes, FsError> {
        let bs = self.cfg.block_size;
        let (t, end, first, last, plan) = {
            let mut st = self.state.lock();
            let t = st.target.clone();
            if offset >= t.size || len == 0 {
                return Ok(Bytes::new());
            }
            let end = (offset + len as u64).min(t.size);
            let (first, last) = (offset / bs, (end - 1) / bs);
            let tolerance = st.window.max(2 * bs);
            let sequential =
                offset + tolerance >= st.next_offset && offset <= st.next_offset + tolerance;
            st.next_offset = end;
            if sequential {
                st.window = (st.window * 2).clamp(self.cfg.initial_window, self.cfg.max_window);
            } else {
                st.window = 0;
                st.requested_until = 0;
                st.inflight.clear();
                for (_, t) in st.tasks.drain(..) {
                    t.abort();
                }
            }
            // Blocks behind the reader are no longer needed in flight (they stay in the cache).
            st.inflight = st.inflight.split_off(&first);
            st.tasks
                .retain(|(end_block, t)| *end_block > first && !t.is_finished());

            let cached: Vec<Option<Bytes>> = (first..=last)
                .map(|i| match st.inflight.get(&i) {
                    Some(_) => None,
                    None => self.cache.get(&Self::block_key(&t, i)),
                })
                .collect();
            let plan = if !sequential && cached.iter().any(Option::is_none) {
                Plan::Direct
            } else {
                // Top up the window only once half of it has been consumed, so that each GET
                // is a full request, not a trickle of the reader's own read size.
                let count = t.size.div_ceil(bs);
                let window_blocks = st.window.div_ceil(bs);
                let per_request = (st.window.min(self.cfg.max_request) / bs).max(1);
                let needed = last + 1;
                let from = st.requested_until.max(first);
                if from < needed || from - needed < window_blocks.div_ceil(2) {
                    let ahead = (end + st.window).div_ceil(bs);
                    let to = ahead.max(from + per_request).max(needed).min(count);
                    self.schedule(&mut st, from, to);
                    st.requested_until = st.requested_until.max(to);
                }
                let mut sources = Vec::with_capacity(cached.len());
                for (i, c) in (first..=last).zip(cached) {
                    sources.push(match (c, st.inflight.get(&i)) {
                        (Some(b), _) => Source::Ready(b),
                        (None, Some(rx)) => Source::Waiting(rx.clone()),
                        (None, None) => {
                            // Requested earlier but evicted before it was read: fetch it again.
                            self.schedule_run(&mut st, i, i + 1);
                            Source::Waiting(st.inflight[&i].clone())
                        }
                    });
                }
                Plan::Blocks(sources)
            };
            (t, end, first, last, plan)
        };

        match plan {
            Plan::Direct => Ok(read_range(&*self.store, &t.key, offset..end, Some(&t.etag)).await?),
            Plan::Blocks(sources) => {
                let mut parts = Vec::with_capacity(sources.len());
                for (i, src) in (first..=last).zip(sources) {
                    let block = match src {
                        Source::Ready(b) => b,
                        Source::Waiting(mut rx) => {
                            let got = rx.wait_for(Option::is_some).await.map(|v| v.clone());
                            match got {
                                Ok(v) => v.expect("waited for Some")?,
                                // Cancelled by another thread's seek on this handle (reads of
                                // one descriptor come in parallel): fetch the block ourselves.
                                Err(_) => {
                                    let r = i * bs..((i + 1) * bs).min(t.size);
                                    read_range(&*self.store, &t.key, r, Some(&t.etag)).await?
                                }
                            }
                        }
                    };
                    let base = i * bs;
                    let from = (offset.max(base) - base) as usize;
                    let to = ((end.min(base + bs) - base) as usize).min(block.len());
                    if from > to {
                        return Err(FsError::Io("short block from the store".into()));
                    }
                    parts.push(block.slice(from..to));
                }
                Ok(if parts.len() == 1 {
                    parts.pop().unwrap()
                } else {
                    let mut out = BytesMut::with_capacity((end - offset) as usize);
                    for p in parts {
                        out.extend_from_slice(&p);
                    }
                    out.freeze()
                })
            }
        }
    }

    /// Requests the blocks in `from..to` that are neither cached nor in flight, in runs of at
    /// most one request size each.
    fn schedule(&self, st: &mut State, from: u64, to: u64) {
        let per_request = (st.window.min(self.cfg.max_request) / self.cfg.block_size).max(1);
        let mut run_start: Option<u64> = None;
        for i in from..to {
            let missing = !st.inflight.contains_key(&i)
                && !self.cache.contains(&Self::block_key(&st.target, i));
            match (missing, run_start) {
                (true, None) => run_start = Some(i),
                (true, Some(s)) if i - s == per_request => {
                    self.schedule_run(st, s, i);
                    run_start = Some(i);
                }
                (false, Some(s)) => {
                    self.schedule_run(st, s, i);
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = run_start {
            self.schedule_run(st, s, to);
        }
    }

    /// One ranged GET for blocks `first..end`, published block by block as the body arrives.
    fn schedule_run(&self, st: &mut State, first: u64, end: u64) {
        let bs = self.cfg.block_size;
        let mut senders = Vec::new();
        for i in first..end {
            let (tx, rx) = watch::channel(None);
            st.inflight.insert(i, rx);
            senders.push(tx);
        }
        let store = self.store.clone();
        let cache = self.cache.clone();
        let Target { key, etag, size } = st.target.clone();
        let range = first * bs..(end * bs).min(size);
        let task = tokio::spawn(async move {
            let publish_err = |senders: &[watch::Sender<BlockResult>], e: FsError| {
                for s in senders {
                    s.send_replace(Some(Err(e.clone())));
                }
            };
            let pool = cache.pool().clone();
            let mut buf = pool.take();
            let mut index = first;
            let mut failures = 0;
            // A body that breaks off is resumed from the first byte not received (If-Match
            // keeps it the same version); the SDK retries requests, not bodies.
            while index < end {
                let pos = index * bs + buf.len() as u64;
                let mut body = match store.get_range(&key, pos..range.end, Some(&etag)).await {
                    Ok(b) => b,
                    Err(e) => return publish_err(&senders[(index - first) as usize..], e.into()),
                };
                let mut broke = None;
                while let Some(chunk) = body.next().await {
                    let mut chunk = match chunk {
                        Ok(c) => c,
                        Err(e) => {
                            broke = Some(FsError::from(e));
                            break;
                        }
                    };
                    while !chunk.is_empty() && index < end {
                        let want = (bs.min(size - index * bs)) as usize;
                        let take = (want - buf.len()).min(chunk.len());
                        buf.extend_from_slice(&chunk.split_to(take));
                        if buf.len() == want {
                            let block = pool.freeze(std::mem::replace(&mut buf, pool.take()));
                            cache.insert(
                                BlockKey {
                                    key: key.clone(),
                                    etag: etag.clone(),
                                    index,
                                },
                                block.clone(),
                            );
                            senders[(index - first) as usize].send_replace(Some(Ok(block)));
                            index += 1;
                        }
                    }
                }
                if index < end {
                    failures += 1;
                    if failures >= BODY_ATTEMPTS {
                        let e = broke.unwrap_or_else(|| {
                            FsError::Io("the store returned fewer bytes than asked for".into())
                        });
                        return publish_err(&senders[(index - first) as usize..], e);
                    }
                }
            }
        });
        st.tasks.push((end, task.abort_handle()));
    }
}

impl<S> Drop for Prefetcher<S> {
    fn drop(&mut self) {
        for (_, t) in self.state.get_mut().tasks.drain(..) {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::store::memory::MemoryStore;

    const KIB: u64 = 1024;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn cfg() -> PrefetchConfig {
        PrefetchConfig {
            block_size: 64 * KIB,
            initial_window: 64 * KIB,
            max_window: 512 * KIB,
            max_request: 256 * KIB,
        }
    }

    async fn setup(
        size: usize,
        cache_bytes: usize,
    ) -> (Arc<MemoryStore>, Prefetcher<MemoryStore>, Vec<u8>) {
        let store = Arc::new(MemoryStore::new());
        let data = pattern(size);
        store.insert("obj", data.clone(), &[]);
        let etag = store.head("obj").await.unwrap().etag;
        let cache = Arc::new(BlockCache::new(cache_bytes, 64 * 1024));
        let p = Prefetcher::new(store.clone(), cache, cfg(), "obj", &etag, size as u64);
        (store, p, data)
    }

    #[tokio::test]
    async fn sequential_reads_return_the_object_and_batch_requests() {
        let size = 3 * 1024 * 1024 + 123;
        let (store, p, data) = setup(size, 8 << 20).await;
        let mut out = Vec::new();
        let mut off = 0u64;
        while off < size as u64 {
            let b = p.read(off, 128 * 1024).await.unwrap();
            assert!(!b.is_empty());
            off += b.len() as u64;
            out.extend_from_slice(&b);
        }
        assert_eq!(out, data);
        let gets = store.counters.get.load(Ordering::Relaxed);
        // 49 blocks of 64 KiB; once the window has grown a GET covers 4 blocks.
        assert!(gets < 25, "sequential reads should batch GETs, made {gets}");
        assert_eq!(
            store.counters.bytes_read.load(Ordering::Relaxed),
            size as u64,
            "every byte fetched once"
        );
    }

    #[tokio::test]
    async fn random_reads_fetch_only_what_is_asked() {
        let size = 4 << 20;
        let (store, p, data) = setup(size, 8 << 20).await;
        for &off in &[3_000_000u64, 17, 2_500_000, 1_000_000] {
            let b = p.read(off, 4096).await.unwrap();
            assert_eq!(&b[..], &data[off as usize..off as usize + 4096]);
        }
        // The first read at offset 0 would be sequential; these jumps are all random.
        assert!(store.counters.bytes_read.load(Ordering::Relaxed) <= 4 * 4096 + 64 * KIB);
    }

    #[tokio::test]
    async fn backwards_seek_resets_and_reads_right_bytes() {
        let size = 2 << 20;
        let (_store, p, data) = setup(size, 8 << 20).await;
        let a = p.read(1 << 20, 100_000).await.unwrap();
        assert_eq!(&a[..], &data[1 << 20..(1 << 20) + 100_000]);
        let b = p.read(10, 70_000).await.unwrap();
        assert_eq!(&b[..], &data[10..70_010]);
        let c = p.read(70_010, 200_000).await.unwrap();
        assert_eq!(&c[..], &data[70_010..270_010]);
    }

    #[tokio::test]
    async fn reads_past_the_end_are_short_or_empty() {
        let (_s, p, data) = setup(1000, 1 << 20).await;
        assert_eq!(&p.read(900, 4096).await.unwrap()[..], &data[900..]);
        assert!(p.read(1000, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn small_cache_evicts_yet_reads_stay_correct() {
        let size = 2 << 20;
        let (_s, p, data) = setup(size, 128 * 1024).await;
        let mut out = Vec::new();
        let mut off = 0;
        while off < size as u64 {
            let b = p.read(off, 64 * 1024).await.unwrap();
            off += b.len() as u64;
            out.extend_from_slice(&b);
        }
        assert_eq!(out, data);
        assert!(p.cache.bytes() <= 128 * 1024);
    }

    #[tokio::test]
    async fn changed_object_fails_instead_of_mixing() {
        let size = 1 << 20;
        let (store, p, _data) = setup(size, 64 * 1024).await;
        p.read(0, 4096).await.unwrap();
        store.insert("obj", vec![0u8; size], &[]);
        let r = p.read(900_000, 4096).await;
        assert!(matches!(r, Err(FsError::Changed)), "{r:?}");
    }

    #[tokio::test]
    async fn second_reader_is_served_from_cache() {
        let size = 1 << 20;
        let (store, p, data) = setup(size, 4 << 20).await;
        let _ = p.read(0, size as u32).await.unwrap();
        let before = store.counters.get.load(Ordering::Relaxed);
        let etag = store.head("obj").await.unwrap().etag;
        let p2 = Prefetcher::new(
            store.clone(),
            p.cache.clone(),
            cfg(),
            "obj",
            &etag,
            size as u64,
        );
        let b = p2.read(0, size as u32).await.unwrap();
        assert_eq!(&b[..], &data[..]);
        assert_eq!(store.counters.get.load(Ordering::Relaxed), before);
    }
}
