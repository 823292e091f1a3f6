//! An LRU of fixed-size object blocks bounded by bytes. Blocks are keyed by (key, ETag), so a
//! changed object never serves stale blocks.

use std::sync::Arc;

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;

use super::pool::BufferPool;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub key: Arc<str>,
    pub etag: Arc<str>,
    pub index: u64,
}

pub struct BlockCache {
    inner: Mutex<Inner>,
    pool: Arc<BufferPool>,
}

struct Inner {
    lru: LruCache<BlockKey, Bytes>,
    bytes: usize,
    capacity: usize,
}

impl BlockCache {
    /// A cache of at most `capacity` bytes of blocks of `block_size` bytes.
    pub fn new(capacity: usize, block_size: usize) -> Self {
        BlockCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                capacity,
            }),
            // Idle buffers are bounded too, so they add at most a few blocks to memory.
            pool: BufferPool::new(block_size, 16),
        }
    }

    /// Where block buffers come from (and return to once evicted and read).
    pub fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    pub fn get(&self, k: &BlockKey) -> Option<Bytes> {
        self.inner.lock().lru.get(k).cloned()
    }

    /// Whether a block is cached, without touching its recency (scheduling only probes).
    pub fn contains(&self, k: &BlockKey) -> bool {
        self.inner.lock().lru.contains(k)
    }

    pub fn insert(&self, k: BlockKey, data: Bytes) {
        let mut g = self.inner.lock();
        if data.len() > g.capacity {
            return;
        }
        if let Some(old) = g.lru.put(k, data.clone()) {
            g.bytes -= old.len();
        }
        g.bytes += data.len();
        while g.bytes > g.capacity {
            match g.lru.pop_lru() {
                Some((_, v)) => g.bytes -= v.len(),
                None => break,
            }
        }
    }

    pub fn bytes(&self) -> usize {
        self.inner.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> BlockKey {
        BlockKey {
            key: "k".into(),
            etag: "e".into(),
            index: i,
        }
    }

    #[test]
    fn evicts_least_recent_under_the_byte_bound() {
        let c = BlockCache::new(3 * 1024, 1024);
        for i in 0..3 {
            c.insert(key(i), Bytes::from(vec![i as u8; 1024]));
        }
        assert!(c.get(&key(0)).is_some()); // 0 is now most recent
        c.insert(key(3), Bytes::from(vec![3; 1024]));
        assert!(c.get(&key(1)).is_none(), "least recently used is evicted");
        assert!(c.get(&key(0)).is_some());
        assert!(c.get(&key(3)).is_some());
        assert!(c.bytes() <= 3 * 1024);
    }

    #[test]
    fn another_etag_is_another_block() {
        let c = BlockCache::new(1 << 20, 1024);
        c.insert(key(0), Bytes::from_static(b"old"));
        let mut k = key(0);
        k.etag = "e2".into();
        assert!(c.get(&k).is_none());
    }

    #[test]
    fn oversized_blocks_are_not_cached() {
        let c = BlockCache::new(10, 1024);
        c.insert(key(0), Bytes::from(vec![0; 11]));
        assert_eq!(c.bytes(), 0);
    }
}
