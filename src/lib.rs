//! s3mount: an S3 bucket as a local directory over FUSE.
//!
//! `cli`/`credentials` resolve what to mount, `run` mounts it, `fuse` is the thin adapter over
//! the filesystem logic in `fs`, which reads through `cache` from a `store`.

pub mod cache;
pub mod cli;
pub mod credentials;
pub mod daemon;
pub mod error;
pub mod fs;
pub mod fuse;
pub mod logging;
pub mod mount;
pub mod run;
pub mod store;
pub mod upload;
