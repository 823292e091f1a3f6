//! The read path: a memory-bounded LRU of object blocks and a per-handle prefetcher.

pub mod block;
pub mod prefetch;

pub use block::{BlockCache, BlockKey};
pub use prefetch::{PrefetchConfig, Prefetcher};
