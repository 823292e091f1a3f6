//! One file's pending content. Writes land in an unnamed local staging file at their offsets,
//! with a set of dirty ranges; bytes not written come from the old object (`Base`) or are zeros
//! past a truncation. A new file written from its start streams each full part to a multipart
//! upload in the background (memory bounded by the parts in flight), and each sent part is
//! punched out of the staging file, so a long sequential write needs little local disk.
//! Anything else is planned at commit: unchanged runs of the old object are copied
//! server-side, the rest is uploaded. Local staging is bounded by a shared `Budget`.

use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::plan::{self, Part, RangeSet};
use crate::error::FsError;
use crate::store::{ObjectStore, PutOptions, StoreError, read_range};

/// The object a file's unchanged bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Base {
    pub key: String,
    pub etag: String,
    pub size: u64,
}

/// Local staging space shared by all files being written; a write that would exceed it fails
/// with ENOSPC instead of filling the disk.
#[derive(Debug)]
pub struct Budget {
    used: AtomicU64,
    cap: u64,
}

impl Budget {
    pub fn new(cap: u64) -> Arc<Self> {
        Arc::new(Budget {
            used: AtomicU64::new(0),
            cap,
        })
    }

    fn take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                (u + n <= self.cap).then_some(u + n)
            })
            .is_ok()
    }

    fn give(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(n))
            });
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }
}

struct Stream {
    upload_id: String,
    part: u64,
    next_part: i32,
    sent_until: u64,
    done: Vec<(i32, String)>,
    tasks: JoinSet<Result<(i32, String), PartFailed>>,
    /// The first part failure, reported by the commit if sending again fails too.
    failed: Option<FsError>,
    /// Parts whose upload failed: their bytes stay staged, so the commit sends them again.
    resend: Vec<(i32, Range<u64>)>,
    /// A part was lost without knowing which (its task died): the upload cannot complete.
    broken: bool,
}

struct PartFailed {
    n: i32,
    range: Range<u64>,
    error: StoreError,
}

struct Inner {
    key: String,
    file: File,
    size: u64,
    dirty: RangeSet,
    base: Option<Base>,
    /// Base bytes at or past this offset were truncated away; gaps there read as zeros.
    base_valid: u64,
    meta: PutOptions,
    changed: bool,
    mtime: SystemTime,
    stream: Option<Stream>,
    /// Set once writes stopped being a sequential prefix: no more streaming for this content.
    no_stream: bool,
    /// A streamed upload failed after some of its bytes were dropped from staging: the content
    /// cannot be rebuilt, so every later write, read and commit reports this.
    lost: Option<FsError>,
}

pub struct WriteState<S> {
    store: Arc<S>,
    inner: Mutex<Inner>,
    max_inflight: usize,
    budget: Arc<Budget>,
    /// Bytes of this file held in local staging (and taken from the budget).
    staged: Arc<AtomicU64>,
    /// Size and mtime, readable without waiting for a write or commit in progress; `None` until
    /// the content or metadata changed (until then the object's own attributes hold).
    hint: parking_lot::Mutex<Option<(u64, SystemTime)>>,
}

fn io(e: std::io::Error) -> FsError {
    FsError::Io(format!("local staging file: {e}"))
}

/// Frees the disk blocks of a range that has been sent.
fn punch(file: &File, range: Range<u64>) -> bool {
    // SAFETY: a plain syscall on an fd we own.
    unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            range.start as i64,
            (range.end - range.start) as i64,
        ) == 0
    }
}

impl<S: ObjectStore> WriteState<S> {
    /// `base`: the object being modified (None for a new or truncated file). `changed`: whether
    /// the object must be written even without further writes (a created file).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<S>,
        tmp_dir: &Path,
        budget: Arc<Budget>,
        key: &str,
        base: Option<Base>,
        meta: PutOptions,
        changed: bool,
        max_inflight: usize,
    ) -> Result<Self, FsError> {
        let file = tempfile::tempfile_in(tmp_dir).map_err(io)?;
        let size = base.as_ref().map_or(0, |b| b.size);
        Ok(WriteState {
            store,
            inner: Mutex::new(Inner {
                key: key.to_string(),
                file,
                size,
                dirty: RangeSet::new(),
                base_valid: size,
                base,
                meta,
                changed,
                mtime: SystemTime::now(),
                stream: None,
                no_stream: false,
                lost: None,
            }),
            max_inflight: max_inflight.max(1),
            budget,
            staged: Arc::new(AtomicU64::new(0)),
            hint: parking_lot::Mutex::new(changed.then(|| (size, SystemTime::now()))),
        })
    }

    /// The pending size and mtime, without waiting; `None` while nothing changed.
    pub fn hint(&self) -> Option<(u64, SystemTime)> {
        *self.hint.lock()
    }

    fn set_hint(&self, g: &Inner) {
        *self.hint.lock() = Some((g.size, g.mtime));
    }

    pub async fn is_changed(&self) -> bool {
        self.inner.lock().await.changed
    }

    /// Metadata (mode, owner, times, xattrs) the next commit writes.
    pub async fn update_meta(&self, f: impl FnOnce(&mut PutOptions, &mut SystemTime)) {
        let mut g = self.inner.lock().await;
        let Inner { meta, mtime, .. } = &mut *g;
        f(meta, mtime);
        g.changed = true;
        self.set_hint(&g);
    }

    pub async fn meta(&self) -> PutOptions {
        self.inner.lock().await.meta.clone()
    }

    /// The lock, after completing a streamed upload whose sent bytes `range` touches: those
    /// bytes are no longer staged, so the object is finished first and becomes the base.
    async fn lock_for(&self, start: u64) -> Result<tokio::sync::MutexGuard<'_, Inner>, FsError> {
        let g = self.inner.lock().await;
        if let Some(e) = &g.lost {
            return Err(e.clone());
        }
        if g.stream.as_ref().is_some_and(|s| start < s.sent_until) {
            drop(g);
            self.commit().await?;
            return Ok(self.inner.lock().await);
        }
        Ok(g)
    }

    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<u32, FsError> {
        let mut g = self.lock_for(offset).await?;
        let end = offset + data.len() as u64;
        let mut dirty = g.dirty.clone();
        dirty.insert(offset..end);
        let grown = dirty.len() - g.dirty.len();
        if !self.budget.take(grown) {
            return Err(FsError::NoSpace);
        }
        if let Err(e) = g.file.write_all_at(data, offset) {
            self.budget.give(grown);
            return Err(io(e));
        }
        self.staged.fetch_add(grown, Ordering::SeqCst);
        g.dirty = dirty;
        g.size = g.size.max(end);
        g.changed = true;
        g.mtime = SystemTime::now();
        self.set_hint(&g);
        self.stream_full_parts(&mut g).await;
        Ok(data.len() as u32)
    }

    /// Sends every complete part of a sequentially written new file.
    async fn stream_full_parts(&self, g: &mut Inner) {
        let sequential = g.base.is_none() && g.dirty.covers(&(0..g.size));
        let failed = g.stream.as_ref().is_some_and(|s| s.failed.is_some());
        if g.no_stream || !sequential || failed {
            return;
        }
        loop {
            let part = g
                .stream
                .as_ref()
                .map_or_else(|| plan::part_size(g.size), |s| s.part);
            let sent = g.stream.as_ref().map_or(0, |s| s.sent_until);
            // Keep the last part back: it is sent at commit, when the size is final.
            if g.size < sent + 2 * part {
                return;
            }
            if g.stream.is_none() {
                match self.store.create_multipart(&g.key, g.meta.clone()).await {
                    Ok(id) => {
                        g.stream = Some(Stream {
                            upload_id: id,
                            part,
                            next_part: 1,
                            sent_until: 0,
                            done: Vec::new(),
                            tasks: JoinSet::new(),
                            failed: None,
                            resend: Vec::new(),
                            broken: false,
                        })
                    }
                    Err(e) => {
                        tracing::warn!(key = %g.key, "cannot start a multipart upload ({e}); uploading at close");
                        g.no_stream = true;
                        return;
                    }
                }
            }
            if let Err(e) = self.send_part(g, false) {
                tracing::warn!("staging file: {e}");
                g.no_stream = true;
                return;
            }
            // Backpressure: the writer waits while too many parts are in flight. A failed part
            // is reported at commit.
            let s = g.stream.as_mut().expect("streaming");
            while s.tasks.len() >= self.max_inflight {
                if join_one(s).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Starts the upload of the next part (`last`: up to the end of the file).
    fn send_part(&self, g: &mut Inner, last: bool) -> Result<(), FsError> {
        let size = g.size;
        let s = g.stream.as_mut().expect("streaming");
        let start = s.sent_until;
        let end = if last { size } else { start + s.part };
        let n = s.next_part;
        self.spawn_part(g, n, start..end)?;
        let s = g.stream.as_mut().expect("streaming");
        s.next_part += 1;
        s.sent_until = end;
        Ok(())
    }

    /// Uploads staged bytes `range` as part `n`, then drops them from staging.
    fn spawn_part(&self, g: &mut Inner, n: i32, range: Range<u64>) -> Result<(), FsError> {
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        g.file.read_exact_at(&mut buf, range.start).map_err(io)?;
        let file = g.file.try_clone().map_err(io)?;
        let s = g.stream.as_mut().expect("streaming");
        let (store, key, id) = (self.store.clone(), g.key.clone(), s.upload_id.clone());
        let (budget, staged) = (self.budget.clone(), self.staged.clone());
        s.tasks.spawn(async move {
            let etag = match store.upload_part(&key, &id, n, Bytes::from(buf)).await {
                Ok(etag) => etag,
                Err(error) => return Err(PartFailed { n, range, error }),
            };
            // Sent: the local copy of these bytes is not needed any more.
            let len = range.end - range.start;
            if punch(&file, range) {
                staged.fetch_sub(len, Ordering::SeqCst);
                budget.give(len);
            }
            Ok((n, etag))
        });
        Ok(())
    }

    pub async fn truncate(&self, len: u64) -> Result<(), FsError> {
        let mut g = self.lock_for(len).await?;
        g.no_stream = true;
        if len < g.size {
            let before = g.dirty.len();
            g.dirty.truncate(len);
            let freed = before - g.dirty.len();
            self.staged.fetch_sub(
                freed.min(self.staged.load(Ordering::SeqCst)),
                Ordering::SeqCst,
            );
            self.budget.give(freed);
            g.base_valid = g.base_valid.min(len);
            g.file.set_len(len).map_err(io)?;
        } else if len > g.size {
            // The new bytes are zeros; the sparse staging file already reads as zeros there.
            g.file.set_len(len).map_err(io)?;
            let old = g.size;
            g.dirty.insert(old..len);
        }
        g.size = len;
        g.changed = true;
        g.mtime = SystemTime::now();
        self.set_hint(&g);
        Ok(())
    }

    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes, FsError> {
        let g = self.lock_for(offset).await?;
        let end = (offset + len as u64).min(g.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        Ok(Bytes::from(assemble(&*self.store, &g, offset..end).await?))
    }

    /// Makes the object in the bucket hold the current content. Durable when this returns Ok.
    pub async fn commit(&self) -> Result<(), FsError> {
        let mut g = self.inner.lock().await;
        if let Some(e) = &g.lost {
            return Err(e.clone());
        }
        if !g.changed {
            return Ok(());
        }
        let result = if g.stream.is_some() {
            // Sent parts were punched out locally, so a failed stream cannot be sent again:
            // the error goes to close()/fsync(), as a failed upload must, and stays.
            let r = self.finish_stream(&mut g).await;
            if let Err(e) = &r {
                abort_stream(&*self.store, &mut g).await;
                g.lost = Some(e.clone());
            }
            r
        } else {
            self.upload_planned(&g).await
        };
        let etag = result.map_err(|e| {
            tracing::error!(key = %g.key, "upload failed: {e}");
            e
        })?;
        let size = g.size;
        g.base = Some(Base {
            key: g.key.clone(),
            etag,
            size,
        });
        g.base_valid = size;
        g.dirty = RangeSet::new();
        g.changed = false;
        g.no_stream = true;
        // The bytes are in the bucket now; free the local copy.
        g.file.set_len(0).map_err(io)?;
        self.budget.give(self.staged.swap(0, Ordering::SeqCst));
        Ok(())
    }

    /// After the committed object was copied to `key` (a rename): further commits go there.
    pub async fn rebase(&self, key: &str, etag: &str) {
        let mut g = self.inner.lock().await;
        g.key = key.to_string();
        if let Some(b) = g.base.as_mut() {
            b.key = key.to_string();
            b.etag = etag.to_string();
        }
    }

    /// The committed object, once there is one.
    pub async fn base(&self) -> Option<Base> {
        self.inner.lock().await.base.clone()
    }

    async fn finish_stream(&self, g: &mut Inner) -> Result<String, FsError> {
        // The rest of the file, then every part in flight; failures are only recorded here.
        loop {
            let s = g.stream.as_ref().expect("streaming");
            if s.sent_until >= g.size || s.broken {
                break;
            }
            let last = g.size - s.sent_until <= 2 * s.part;
            self.send_part(g, last)?;
            let s = g.stream.as_mut().expect("streaming");
            while s.tasks.len() >= self.max_inflight {
                let _ = join_one(s).await;
            }
        }
        let s = g.stream.as_mut().expect("streaming");
        while !s.tasks.is_empty() {
            let _ = join_one(s).await;
        }
        if s.broken {
            return Err(s.failed.clone().expect("a broken stream has an error"));
        }
        // Parts that failed (the store was down longer than the retries lasted) are still
        // staged: they get one more round of attempts, and a failure now is final.
        let resend = std::mem::take(&mut s.resend);
        if !resend.is_empty() {
            tracing::info!(key = %g.key, parts = resend.len(), "sending failed parts again");
            s.failed = None;
        }
        for (n, range) in resend {
            self.spawn_part(g, n, range)?;
            let s = g.stream.as_mut().expect("streaming");
            while s.tasks.len() >= self.max_inflight {
                join_one(s).await?;
            }
        }
        let s = g.stream.as_mut().expect("streaming");
        while !s.tasks.is_empty() {
            join_one(s).await?;
        }
        let mut parts = std::mem::take(&mut s.done);
        parts.sort_by_key(|p| p.0);
        let id = s.upload_id.clone();
        let etag = self.store.complete_multipart(&g.key, &id, parts).await?;
        g.stream = None;
        Ok(etag)
    }

    async fn upload_planned(&self, g: &Inner) -> Result<String, FsError> {
        let copyable: Vec<Range<u64>> = match &g.base {
            Some(b) => g.dirty.gaps(0..b.size.min(g.base_valid).min(g.size)),
            None => Vec::new(),
        };
        let parts = plan::plan(g.size, &copyable, plan::part_size(g.size));
        if parts.len() <= 1 && !matches!(parts.first(), Some(Part::Copy(_))) {
            let body = assemble(&*self.store, g, 0..g.size).await?;
            return Ok(self
                .store
                .put(&g.key, Bytes::from(body), g.meta.clone())
                .await?);
        }
        let id = self.store.create_multipart(&g.key, g.meta.clone()).await?;
        let results: Vec<Result<(i32, String), FsError>> =
            futures::stream::iter(parts.into_iter().enumerate())
                .map(|(i, part)| {
                    let n = i as i32 + 1;
                    let id = id.clone();
                    async move {
                        let etag = match &part {
                            Part::Copy(r) => {
                                let b = g.base.as_ref().expect("copies come from a base");
                                self.store
                                    .upload_part_copy(&g.key, &id, n, &b.key, &b.etag, r.clone())
                                    .await?
                            }
                            Part::Upload(r) => {
                                let body = assemble(&*self.store, g, r.clone()).await?;
                                self.store
                                    .upload_part(&g.key, &id, n, Bytes::from(body))
                                    .await?
                            }
                        };
                        Ok((n, etag))
                    }
                })
                .buffered(self.max_inflight)
                .collect()
                .await;
        let parts: Result<Vec<_>, FsError> = results.into_iter().collect();
        match parts {
            Ok(parts) => match self.store.complete_multipart(&g.key, &id, parts).await {
                Ok(etag) => Ok(etag),
                Err(e) => {
                    let _ = self.store.abort_multipart(&g.key, &id).await;
                    Err(e.into())
                }
            },
            Err(e) => {
                let _ = self.store.abort_multipart(&g.key, &id).await;
                Err(e)
            }
        }
    }

    /// Gives up any upload in flight (the object keeps its last committed content).
    pub async fn abandon(&self) {
        let mut g = self.inner.lock().await;
        abort_stream(&*self.store, &mut g).await;
    }
}

impl<S> Drop for WriteState<S> {
    fn drop(&mut self) {
        self.budget.give(self.staged.load(Ordering::SeqCst));
    }
}

/// Collects one finished part; a failure is kept for the commit to send again or report.
async fn join_one(s: &mut Stream) -> Result<(), FsError> {
    let r = match s.tasks.join_next().await {
        Some(Ok(Ok(done))) => {
            s.done.push(done);
            return Ok(());
        }
        Some(Ok(Err(PartFailed { n, range, error }))) => {
            s.resend.push((n, range));
            FsError::from(error)
        }
        Some(Err(e)) => {
            s.broken = true;
            FsError::Io(format!("part upload task: {e}"))
        }
        None => return Ok(()),
    };
    s.failed.get_or_insert(r.clone());
    Err(r)
}

async fn abort_stream<S: ObjectStore>(store: &S, g: &mut Inner) {
    if let Some(mut s) = g.stream.take() {
        s.tasks.abort_all();
        while s.tasks.join_next().await.is_some() {}
        if let Err(e) = store.abort_multipart(&g.key, &s.upload_id).await {
            tracing::warn!(key = %g.key, "could not abort multipart upload: {e}");
        }
    }
}

/// The content of `range`: written bytes from the staging file, the rest from the base object
/// (or zeros past its end or a truncation).
async fn assemble<S: ObjectStore>(
    store: &S,
    g: &Inner,
    range: Range<u64>,
) -> Result<Vec<u8>, FsError> {
    let mut out = vec![0u8; (range.end - range.start) as usize];
    let at = |r: &Range<u64>| (r.start - range.start) as usize..(r.end - range.start) as usize;
    for d in g.dirty.ranges() {
        let r = d.start.max(range.start)..d.end.min(range.end);
        if !r.is_empty() {
            g.file
                .read_exact_at(&mut out[at(&r)], r.start)
                .map_err(io)?;
        }
    }
    if let Some(b) = &g.base {
        let limit = b.size.min(g.base_valid);
        for gap in g.dirty.gaps(range.start..range.end.min(limit)) {
            let bytes = read_range(store, &b.key, gap.clone(), Some(&b.etag)).await?;
            if bytes.len() as u64 != gap.end - gap.start {
                return Err(FsError::Io("short read of the old object".into()));
            }
            out[at(&gap)].copy_from_slice(&bytes);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::store::memory::MemoryStore;

    const MIB: usize = 1 << 20;

    fn state(store: &Arc<MemoryStore>, base: Option<Base>) -> WriteState<MemoryStore> {
        WriteState::new(
            store.clone(),
            &std::env::temp_dir(),
            Budget::new(u64::MAX),
            "k",
            base,
            PutOptions::default(),
            true,
            4,
        )
        .unwrap()
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[tokio::test]
    async fn small_new_file_is_one_put() {
        let store = Arc::new(MemoryStore::new());
        let w = state(&store, None);
        w.write(0, b"hello ").await.unwrap();
        w.write(6, b"world").await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(&store.body("k").unwrap()[..], b"hello world");
        assert_eq!(store.counters.put.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn created_empty_file_is_committed() {
        let store = Arc::new(MemoryStore::new());
        state(&store, None).commit().await.unwrap();
        assert_eq!(store.body("k").unwrap().len(), 0);
    }

    #[tokio::test]
    async fn a_part_that_failed_while_streaming_is_sent_again_at_commit() {
        let store = Arc::new(MemoryStore::new());
        let w = state(&store, None);
        store.fail_parts.store(1, Ordering::SeqCst);
        let data = pattern(30 * MIB, 2);
        for (i, chunk) in data.chunks(MIB).enumerate() {
            w.write((i * MIB) as u64, chunk).await.unwrap();
        }
        w.commit().await.unwrap();
        assert!(store.body("k").unwrap() == data);
        assert_eq!(store.pending_uploads(), 0);
    }

    #[tokio::test]
    async fn a_stream_that_cannot_be_finished_stays_failed() {
        let store = Arc::new(MemoryStore::new());
        let w = state(&store, None);
        let data = pattern(30 * MIB, 3);
        for (i, chunk) in data.chunks(MIB).enumerate() {
            if i == 20 {
                store.fail_parts.store(u64::MAX, Ordering::SeqCst);
            }
            w.write((i * MIB) as u64, chunk).await.unwrap();
        }
        assert!(w.commit().await.is_err());
        store.fail_parts.store(0, Ordering::SeqCst);
        // Sent bytes are gone from staging: nothing may ever commit a file with holes.
        assert!(w.commit().await.is_err());
        assert!(w.write(data.len() as u64, b"more").await.is_err());
        assert!(store.body("k").is_none());
        assert_eq!(store.pending_uploads(), 0);
    }

    #[tokio::test]
    async fn sequential_large_write_streams_parts_before_commit() {
        let store = Arc::new(MemoryStore::new());
        let w = state(&store, None);
        let data = pattern(40 * MIB + 123, 1);
        for (i, chunk) in data.chunks(MIB).enumerate() {
            w.write((i * MIB) as u64, chunk).await.unwrap();
        }
        assert!(
            store.counters.bytes_uploaded.load(Ordering::Relaxed) >= 16 * MIB as u64,
            "parts are sent while the file is written"
        );
        w.commit().await.unwrap();
        assert!(store.body("k").unwrap() == data);
        assert_eq!(store.pending_uploads(), 0);
    }

    #[tokio::test]
    async fn append_to_a_large_object_copies_instead_of_resending() {
        let store = Arc::new(MemoryStore::new());
        let old = pattern(20 * MIB, 2);
        store.insert("k", old.clone(), &[]);
        let etag = store.head("k").await.unwrap().etag;
        let w = state(
            &store,
            Some(Base {
                key: "k".into(),
                etag,
                size: old.len() as u64,
            }),
        );
        w.write(old.len() as u64, &[9u8; MIB]).await.unwrap();
        w.commit().await.unwrap();
        let body = store.body("k").unwrap();
        assert_eq!(body.len(), 21 * MIB);
        assert!(body[..20 * MIB] == old[..]);
        assert!(body[20 * MIB..].iter().all(|&b| b == 9));
        assert_eq!(
            store.counters.bytes_uploaded.load(Ordering::Relaxed),
            MIB as u64,
            "only the new MiB is sent"
        );
    }

    #[tokio::test]
    async fn middle_overwrite_and_truncate() {
        let store = Arc::new(MemoryStore::new());
        let mut want = pattern(3000, 3);
        store.insert("k", want.clone(), &[]);
        let etag = store.head("k").await.unwrap().etag;
        let w = state(
            &store,
            Some(Base {
                key: "k".into(),
                etag,
                size: 3000,
            }),
        );
        w.write(100, b"XYZ").await.unwrap();
        want[100..103].copy_from_slice(b"XYZ");
        assert_eq!(&w.read(98, 7).await.unwrap()[..], &want[98..105]);
        w.truncate(2000).await.unwrap();
        w.truncate(2500).await.unwrap();
        want.truncate(2000);
        want.resize(2500, 0);
        w.commit().await.unwrap();
        assert!(
            store.body("k").unwrap() == want,
            "truncated bytes come back as zeros"
        );
    }

    #[tokio::test]
    async fn rewriting_streamed_bytes_edits_the_completed_object() {
        let store = Arc::new(MemoryStore::new());
        let w = state(&store, None);
        let mut data = pattern(30 * MIB, 4);
        for (i, chunk) in data.chunks(MIB).enumerate() {
            w.write((i * MIB) as u64, chunk).await.unwrap();
        }
        w.write(5, b"again").await.unwrap();
        data[5..10].copy_from_slice(b"again");
        w.commit().await.unwrap();
        assert!(store.body("k").unwrap() == data);
        assert_eq!(
            store.pending_uploads(),
            0,
            "the abandoned stream was aborted"
        );
    }

    #[tokio::test]
    async fn staging_budget_refuses_writes_beyond_it_and_commit_frees_it() {
        let store = Arc::new(MemoryStore::new());
        let budget = Budget::new(1000);
        let w = WriteState::new(
            store.clone(),
            &std::env::temp_dir(),
            budget.clone(),
            "k",
            None,
            PutOptions::default(),
            true,
            4,
        )
        .unwrap();
        w.write(0, &[1; 600]).await.unwrap();
        w.write(100, &[2; 400]).await.unwrap();
        assert_eq!(budget.used(), 600, "rewrites take no extra space");
        assert!(matches!(
            w.write(600, &[3; 600]).await,
            Err(FsError::NoSpace)
        ));
        w.commit().await.unwrap();
        assert_eq!(budget.used(), 0);
        w.write(600, &[3; 600]).await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(store.body("k").unwrap().len(), 1200);
        drop(w);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn touching_streamed_bytes_completes_the_upload_first() {
        let store = Arc::new(MemoryStore::new());
        let w = state(&store, None);
        let mut data = pattern(40 * MIB, 7);
        for (i, chunk) in data.chunks(MIB).enumerate() {
            w.write((i * MIB) as u64, chunk).await.unwrap();
        }
        // Bytes already sent (and punched out locally) are read back through the object.
        assert_eq!(&w.read(10, 100).await.unwrap()[..], &data[10..110]);
        assert!(store.body("k").is_some(), "the read completed the upload");
        // A rewrite of early bytes edits the completed object.
        w.write(5, b"again").await.unwrap();
        data[5..10].copy_from_slice(b"again");
        w.write(data.len() as u64, b"tail").await.unwrap();
        data.extend_from_slice(b"tail");
        w.commit().await.unwrap();
        assert!(store.body("k").unwrap() == data);
        assert_eq!(store.pending_uploads(), 0);
    }
}
