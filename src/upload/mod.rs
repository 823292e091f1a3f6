//! The write-back path: what a file's new content is made of (`plan`), and the per-file state
//! that stages writes locally, streams full parts while a new file is written, and commits the
//! object on flush, fsync or close (`state`); a record of uploads in progress, so that a later
//! mount can abort what a killed one left behind (`journal`).

pub mod journal;
pub mod multipart;
pub mod plan;
pub mod ranges;
pub mod state;

pub use state::{Base, WriteState};
