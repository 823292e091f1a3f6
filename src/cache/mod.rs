//! The read path: a memory-bounded LRU of object blocks and a per-handle prefetcher.

pub mod block;
pub mod pool;
pub mod prefetch;

pub use block::{BlockCache, BlockKey};
pub use pool::BufferPool;
pub use prefetch::{PrefetchConfig, Prefetcher};
