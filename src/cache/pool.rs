//! Reused block buffers. Allocating a fresh megabyte for every block costs a page fault per
//! page and lets the allocator keep freed blocks around (RSS well above the cache bound);
//! recycling exact-size buffers avoids both.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    size: usize,
    max_free: usize,
}

struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

impl BufferPool {
    /// Buffers of `size` bytes; at most `max_free` idle ones are kept.
    pub fn new(size: usize, max_free: usize) -> Arc<Self> {
        Arc::new(BufferPool {
            free: Mutex::new(Vec::new()),
            size,
            max_free,
        })
    }

    /// An empty buffer with room for one block.
    pub fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    fn give_back(&self, mut buf: Vec<u8>) {
        if buf.capacity() == self.size {
            let mut free = self.free.lock();
            if free.len() < self.max_free {
                buf.clear();
                free.push(buf);
            }
        }
    }

    /// Freezes a filled buffer into `Bytes` that return it to the pool when the last clone drops.
    pub fn freeze(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
        })
    }

    pub fn idle(&self) -> usize {
        self.free.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_last_clone_drops() {
        let pool = BufferPool::new(1024, 2);
        let mut b = pool.take();
        b.extend_from_slice(&[7; 1000]);
        let frozen = pool.freeze(b);
        let slice = frozen.slice(10..20);
        drop(frozen);
        assert_eq!(pool.idle(), 0, "a slice still holds the buffer");
        assert_eq!(&slice[..], &[7; 10]);
        drop(slice);
        assert_eq!(pool.idle(), 1);
        assert!(pool.take().is_empty());
    }

    #[test]
    fn idle_buffers_are_bounded() {
        let pool = BufferPool::new(16, 1);
        let a = pool.freeze(pool.take());
        let b = pool.freeze(pool.take());
        drop((a, b));
        assert_eq!(pool.idle(), 1);
    }
}
