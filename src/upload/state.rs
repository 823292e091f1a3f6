//! One file's pending content. A new (or emptied) file written from its start keeps its end in
//! memory, in part-sized chunks (`Tail`): each full chunk goes out as a part of a multipart
//! upload in the background (memory bounded by the parts in flight and a shared cap), and a
//! small file is one PUT at commit, never touching the disk. Any other write moves the tail to
//! an unnamed local staging file, where writes land at their offsets with a set of dirty
//! ranges; bytes not written come from the old object (`Base`) or are zeros past a truncation.
//! Staged parts of a stream are punched out of the file once sent. Anything else is planned at
//! commit: unchanged runs of the old object are copied server-side, the rest is uploaded. Local
//! staging is bounded by a shared `Budget`.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::multipart;
use super::plan::{self, Part};
use super::ranges::RangeSet;
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
    /// Memory holding the ends of files being appended to (see `Tail`), all files together.
    memory: AtomicU64,
    /// Memory holding parts already uploaded, kept for readers until the commit.
    kept: AtomicU64,
}

/// Adds `n` to `counter` if the sum stays within `cap`.
fn take_within(counter: &AtomicU64, n: u64, cap: u64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
            (u + n <= cap).then_some(u + n)
        })
        .is_ok()
}

fn give_back(counter: &AtomicU64, n: u64) {
    let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
        Some(u.saturating_sub(n))
    });
}

/// Parts already uploaded from memory and kept there for readers of a file being written, all
/// files together; past this they are dropped (reads of them fail until the close). Writing
/// them to the staging disk instead costs more CPU than the upload itself on a slow disk.
const KEPT_MEMORY: u64 = 64 << 20;

/// How long a failed commit waits for its abort before reporting the failure (the abort goes
/// on in the background).
const ABORT_WAIT: Duration = Duration::from_secs(1);

/// Appended bytes held in memory, all files together; past this a file is staged on disk.
const TAIL_MEMORY: u64 = 64 << 20;

impl Budget {
    pub fn new(cap: u64) -> Arc<Self> {
        Arc::new(Budget {
            used: AtomicU64::new(0),
            cap,
            memory: AtomicU64::new(0),
            kept: AtomicU64::new(0),
        })
    }

    fn take_memory(&self, n: u64) -> bool {
        take_within(&self.memory, n, TAIL_MEMORY)
    }

    fn give_memory(&self, n: u64) {
        give_back(&self.memory, n);
    }

    fn take_kept(&self, n: u64) -> bool {
        take_within(&self.kept, n, KEPT_MEMORY)
    }

    fn give_kept(&self, n: u64) {
        give_back(&self.kept, n);
    }

    fn take(&self, n: u64) -> bool {
        take_within(&self.used, n, self.cap)
    }

    fn give(&self, n: u64) {
        give_back(&self.used, n);
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Whether bytes already uploaded as parts may stay staged, so that reads of a file being
    /// streamed are served locally: only while half of the budget is still free, since writes
    /// must never fail for want of space that merely keeps copies.
    fn may_retain(&self) -> bool {
        self.used() <= self.cap / 2
    }
}

struct Stream {
    upload_id: String,
    next_part: i32,
    sent_until: u64,
    done: Vec<(i32, String)>,
    tasks: JoinSet<Result<(i32, String), PartFailed>>,
    /// The first part failure, reported by the commit if sending again fails too.
    failed: Option<FsError>,
    /// Parts whose upload failed: their bytes stay staged, so the commit sends them again.
    resend: Vec<Resend>,
    /// A part was lost without knowing which (its task died): the upload cannot complete.
    broken: bool,
}

/// A part to send again at commit.
struct Resend {
    n: i32,
    range: Option<Range<u64>>,
    keep: bool,
    body: Bytes,
    /// When it failed: only failures from before the commit are tried again.
    at: Instant,
}

struct PartFailed {
    n: i32,
    /// Where the part's bytes are staged (none when they came from memory).
    range: Option<Range<u64>>,
    /// The staged bytes are kept for readers after the upload.
    keep: bool,
    at: Instant,
    body: Bytes,
    error: StoreError,
}

/// The end of a new file being written from its start: bytes `start..` held in memory in
/// part-sized chunks instead of the staging file, so that a full chunk goes out as a part
/// without being written to disk and read back. Anything but an append moves them to staging.
struct Tail {
    start: u64,
    /// Chunks made so far: chunk k is part k, and as large as a streamed part k.
    made: i32,
    chunks: std::collections::VecDeque<Vec<u8>>,
}

impl Tail {
    fn new() -> Self {
        Tail {
            start: 0,
            made: 0,
            chunks: Default::default(),
        }
    }

    fn len(&self) -> u64 {
        self.chunks.iter().map(|c| c.len() as u64).sum()
    }

    fn append(&mut self, mut data: &[u8]) {
        let full = plan::stream_part_size(self.made) as usize;
        while !data.is_empty() {
            match self.chunks.back_mut() {
                Some(c) if c.len() < full => {
                    let n = (full - c.len()).min(data.len());
                    c.extend_from_slice(&data[..n]);
                    data = &data[n..];
                }
                _ => {
                    self.chunks.push_back(Vec::new());
                    self.made += 1;
                    return self.append(data);
                }
            }
        }
    }

    /// Copies the held bytes overlapping `at..at + buf.len()` into `buf` (which starts at `at`).
    fn read_into(&self, buf: &mut [u8], at: u64) {
        let mut pos = self.start;
        for c in &self.chunks {
            let (s, e) = (pos, pos + c.len() as u64);
            let (from, to) = (s.max(at), e.min(at + buf.len() as u64));
            if from < to {
                buf[(from - at) as usize..(to - at) as usize]
                    .copy_from_slice(&c[(from - s) as usize..(to - s) as usize]);
            }
            pos = e;
        }
    }

    /// The first chunk, once it is full and more follows.
    fn pop_full(&mut self) -> Option<Vec<u8>> {
        if self.chunks.len() > 1 {
            self.chunks.pop_front()
        } else {
            None
        }
    }
}

impl Inner {
    /// Whether no byte of the old object is part of the content (a new or emptied file).
    fn written_from_scratch(&self) -> bool {
        self.base
            .as_ref()
            .is_none_or(|b| b.size.min(self.base_valid) == 0)
    }
}

struct Inner {
    key: String,
    file: Staging,
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
    tail: Option<Tail>,
    /// Bytes uploaded as parts of the stream and no longer held here: reading them has to wait
    /// until the upload is complete (reads fail with EIO until then).
    dropped: RangeSet,
    /// Parts uploaded from memory and kept there for readers (by offset), and what they cover.
    kept: BTreeMap<u64, Bytes>,
    kept_set: RangeSet,
    /// The file lost its name while open (unlinked, or renamed over): its content lives on for
    /// its descriptors only and is never uploaded.
    orphan: bool,
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

/// The unnamed staging file, made when the first byte needs it (a small new file written in
/// one go never does).
struct Staging {
    dir: PathBuf,
    file: Option<File>,
}

impl Staging {
    fn get(&mut self) -> Result<&File, FsError> {
        if self.file.is_none() {
            self.file = Some(tempfile::tempfile_in(&self.dir).map_err(io)?);
        }
        Ok(self.file.as_ref().expect("just made"))
    }

    /// Reads staged bytes; there are none before the file exists.
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> Result<(), FsError> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| FsError::Io("staged bytes missing".into()))?;
        file.read_exact_at(buf, at).map_err(io)
    }

    fn set_len(&self, len: u64) -> Result<(), FsError> {
        match &self.file {
            Some(f) => f.set_len(len).map_err(io),
            None => Ok(()),
        }
    }
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
        let file = Staging {
            dir: tmp_dir.to_path_buf(),
            file: None,
        };
        let size = base.as_ref().map_or(0, |b| b.size);
        let base_none = base.is_none();
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
                tail: base_none.then(Tail::new),
                dropped: RangeSet::new(),
                kept: BTreeMap::new(),
                kept_set: RangeSet::new(),
                orphan: false,
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

    /// The object's metadata was rewritten in the bucket (chmod and the like on a file with
    /// nothing to upload): the next commit must write the same, and the committed object,
    /// copied onto itself, has a new ETag.
    pub async fn meta_rewritten(&self, f: impl FnOnce(&mut PutOptions), etag: &str) {
        let mut g = self.inner.lock().await;
        f(&mut g.meta);
        let key = g.key.clone();
        if let Some(b) = g.base.as_mut().filter(|b| b.key == key) {
            b.etag = etag.to_string();
        }
    }

    /// The file has no name any more: nothing of it is uploaded from now on, and a stream in
    /// progress is aborted. Its descriptors keep reading and writing what it holds.
    pub async fn orphan(&self) {
        let mut g = self.inner.lock().await;
        g.orphan = true;
        g.no_stream = true;
        abort_stream(&self.store, &mut g, None).await;
        // With no upload to finish, its descriptors may now rewrite bytes that were sent: the
        // parts kept in memory become ordinary staged bytes.
        let kept = std::mem::take(&mut g.kept);
        for (at, b) in kept {
            if let Err(e) = g
                .file
                .get()
                .and_then(|f| f.write_all_at(&b, at).map_err(io))
            {
                g.dropped.insert(at..at + b.len() as u64);
                tracing::warn!("staging a file that lost its name: {e}");
            }
        }
        self.budget.give_kept(g.kept_set.len());
        g.kept_set = RangeSet::new();
    }

    pub async fn meta(&self) -> PutOptions {
        self.inner.lock().await.meta.clone()
    }

    /// The lock, before changing bytes at `start` or later: bytes already sent as parts cannot
    /// change in the upload, so the object is finished first and becomes the base.
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
        if data.is_empty() {
            // POSIX: writing nothing changes nothing, not even the size past the end.
            return Ok(0);
        }
        let mut g = self.lock_for(offset).await?;
        let end = offset + data.len() as u64;
        let grown = (end - offset) - g.dirty.covered_len(offset..end);
        if !self.budget.take(grown) {
            return Err(FsError::NoSpace);
        }
        let appended = match &mut g.tail {
            Some(t) if offset == t.start + t.len() && self.budget.take_memory(grown) => {
                t.append(data);
                true
            }
            _ => false,
        };
        if !appended {
            let written = self
                .spill(&mut g)
                .and_then(|()| g.file.get()?.write_all_at(data, offset).map_err(io));
            if let Err(e) = written {
                self.budget.give(grown);
                return Err(e);
            }
        }
        self.staged.fetch_add(grown, Ordering::SeqCst);
        g.dirty.insert(offset..end);
        g.size = g.size.max(end);
        g.changed = true;
        g.mtime = SystemTime::now();
        self.set_hint(&g);
        self.stream_full_parts(&mut g).await;
        Ok(data.len() as u32)
    }

    /// Sends every complete part of a sequentially written new file.
    async fn stream_full_parts(&self, g: &mut Inner) {
        let sequential = g.written_from_scratch() && g.dirty.covers(&(0..g.size));
        let failed = g.stream.as_ref().is_some_and(|s| s.failed.is_some());
        if g.no_stream || !sequential || failed {
            return;
        }
        loop {
            let (sent, n) = g
                .stream
                .as_ref()
                .map_or((0, 1), |s| (s.sent_until, s.next_part));
            let part = plan::stream_part_size(n);
            // Keep the last part back: it is sent at commit, when the size is final. From
            // memory, a full chunk is a full part.
            let ready = match &g.tail {
                Some(t) => t.chunks.len() > 1,
                None => g.size >= sent + 2 * part,
            };
            if !ready {
                return;
            }
            if g.stream.is_none() {
                match self.store.create_multipart(&g.key, g.meta.clone()).await {
                    Ok(id) => {
                        g.stream = Some(Stream {
                            upload_id: id,
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

    /// Starts the upload of the next part (`last`: up to the end of the file), from memory
    /// when the tail holds it, else from staging.
    fn send_part(&self, g: &mut Inner, last: bool) -> Result<(), FsError> {
        let size = g.size;
        let s = g.stream.as_mut().expect("streaming");
        let (start, n) = (s.sent_until, s.next_part);
        let end = if let Some(t) = &mut g.tail {
            let chunk = if last && t.chunks.len() <= 1 {
                t.chunks.pop_front().unwrap_or_default()
            } else {
                t.pop_full().expect("a full chunk to send")
            };
            let len = chunk.len() as u64;
            t.start += len;
            self.budget.give_memory(len);
            // Kept in memory for readers of the file being written while there is room (the
            // same buffer the upload sends: no copy).
            let body = Bytes::from(chunk);
            if len > 0 && self.budget.take_kept(len) {
                g.kept.insert(start, body.clone());
                g.kept_set.insert(start..start + len);
            } else {
                g.dropped.insert(start..start + len);
            }
            self.spawn_part(g, n, None, false, body);
            start + len
        } else {
            let end = if last {
                size
            } else {
                start + plan::stream_part_size(n)
            };
            let mut buf = vec![0u8; (end - start) as usize];
            g.file.read_exact_at(&mut buf, start)?;
            let keep = self.budget.may_retain();
            if !keep {
                g.dropped.insert(start..end);
            }
            self.spawn_part(g, n, Some(start..end), keep, Bytes::from(buf));
            end
        };
        let s = g.stream.as_mut().expect("streaming");
        s.next_part += 1;
        s.sent_until = end;
        Ok(())
    }

    /// Uploads `body` as part `n`; once sent, the bytes are dropped from staging (`range`) or
    /// from the budget they were counted in, unless `keep` (then they stay staged for readers
    /// until the commit).
    fn spawn_part(
        &self,
        g: &mut Inner,
        n: i32,
        range: Option<Range<u64>>,
        keep: bool,
        body: Bytes,
    ) {
        let file = (range.is_some() && !keep)
            .then(|| g.file.file.as_ref()?.try_clone().ok())
            .flatten();
        let s = g.stream.as_mut().expect("streaming");
        let (store, key, id) = (self.store.clone(), g.key.clone(), s.upload_id.clone());
        let (budget, staged) = (self.budget.clone(), self.staged.clone());
        s.tasks.spawn(async move {
            let len = body.len() as u64;
            let etag = match store.upload_part(&key, &id, n, body.clone()).await {
                Ok(etag) => etag,
                Err(error) => {
                    return Err(PartFailed {
                        n,
                        range,
                        keep,
                        body,
                        error,
                        at: Instant::now(),
                    });
                }
            };
            // Sent: the local copy of these bytes is not needed any more.
            let freed = match (range, file) {
                _ if keep => false,
                (Some(range), Some(file)) => punch(&file, range),
                (Some(_), None) => false,
                (None, _) => true,
            };
            if freed {
                staged.fetch_sub(len, Ordering::SeqCst);
                budget.give(len);
            }
            Ok((n, etag))
        });
    }

    /// Moves the tail from memory to the staging file, before anything but an append.
    fn spill(&self, g: &mut Inner) -> Result<(), FsError> {
        let Some(t) = g.tail.take() else {
            return Ok(());
        };
        tracing::debug!(key = %g.key, at = t.start + t.len(), "tail moved to staging");
        self.budget.give_memory(t.len());
        let mut at = t.start;
        for c in &t.chunks {
            if let Err(e) = g.file.get().and_then(|f| f.write_all_at(c, at).map_err(io)) {
                // The bytes were only here: the content cannot be rebuilt any more.
                g.lost = Some(e);
                return Err(g.lost.clone().expect("just set"));
            }
            at += c.len() as u64;
        }
        Ok(())
    }

    pub async fn truncate(&self, len: u64) -> Result<(), FsError> {
        let mut g = self.lock_for(len).await?;
        if len == 0 {
            // Emptied (O_TRUNC): what follows is a new file written from its start, as fit to
            // stream as a created one; nothing of the old object is needed.
            if let Some(t) = g.tail.take() {
                self.budget.give_memory(t.len());
            }
            self.budget.give(self.staged.swap(0, Ordering::SeqCst));
            g.file.set_len(0)?;
            g.dirty = RangeSet::new();
            g.dropped = RangeSet::new();
            self.release_kept(&mut g);
            g.base_valid = 0;
            g.no_stream = false;
            g.tail = Some(Tail::new());
            g.size = 0;
            g.changed = true;
            g.mtime = SystemTime::now();
            self.set_hint(&g);
            return Ok(());
        }
        self.spill(&mut g)?;
        g.no_stream = true;
        if len < g.size {
            let before = g.dirty.len();
            g.dirty.truncate(len);
            g.dropped.truncate(len);
            self.refund(before - g.dirty.len());
            g.base_valid = g.base_valid.min(len);
            g.file.set_len(len)?;
        } else if len > g.size {
            // The new bytes are zeros; the sparse staging file already reads as zeros there,
            // but they are content to upload, so they count against --tmp-size like writes.
            let grown = len - g.size;
            if !self.budget.take(grown) {
                return Err(FsError::NoSpace);
            }
            if let Err(e) = g.file.get().and_then(|f| f.set_len(len).map_err(io)) {
                self.budget.give(grown);
                return Err(e);
            }
            self.staged.fetch_add(grown, Ordering::SeqCst);
            let old = g.size;
            g.dirty.insert(old..len);
        }
        g.size = len;
        g.changed = true;
        g.mtime = SystemTime::now();
        self.set_hint(&g);
        Ok(())
    }

    /// Forgets the parts kept for readers (the content is the object's now, or emptied).
    fn release_kept(&self, g: &mut Inner) {
        self.budget.give_kept(g.kept_set.len());
        g.kept.clear();
        g.kept_set = RangeSet::new();
    }

    /// Gives back budget for `n` bytes no longer staged, never more than this file took.
    fn refund(&self, n: u64) {
        let taken = self
            .staged
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                Some(s.saturating_sub(n))
            })
            .unwrap_or(0);
        self.budget.give(n.min(taken));
    }

    /// Reads what the file holds now, never forcing a commit (a reader must not decide when a
    /// writer's file is uploaded): bytes already sent as parts are read from where they were
    /// kept, so only bytes sent and dropped (staging more than half full) fail until the close.
    pub async fn read(&self, offset: u64, len: u32) -> Result<Bytes, FsError> {
        let g = self.inner.lock().await;
        if let Some(e) = &g.lost {
            return Err(e.clone());
        }
        let end = (offset + len as u64).min(g.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        if g.dropped.covered_len(offset..end) > 0 {
            return Err(FsError::Io(
                "bytes of a file being written were uploaded and not kept locally (--tmp-size); they can be read once it is closed".into(),
            ));
        }
        Ok(Bytes::from(assemble(&*self.store, &g, offset..end).await?))
    }

    /// Makes the object in the bucket hold the current content. Durable when this returns Ok.
    pub async fn commit(&self) -> Result<(), FsError> {
        let mut g = self.inner.lock().await;
        if let Some(e) = &g.lost {
            return Err(e.clone());
        }
        if !g.changed || g.orphan {
            return Ok(());
        }
        tracing::debug!(key = %g.key, size = g.size, streaming = g.stream.is_some(), "commit");
        let result = if g.stream.is_some() {
            // Sent parts were punched out locally, so a failed stream cannot be sent again:
            // the error goes to close()/fsync(), as a failed upload must, and stays.
            let r = self.finish_stream(&mut g).await;
            if let Err(e) = &r {
                abort_stream(&self.store, &mut g, Some(ABORT_WAIT)).await;
                g.lost = Some(e.clone());
            }
            r
        } else if let Some(body) = self.whole_tail(&mut g) {
            // A small new file, all in memory: one PUT, no staging. If it fails, the bytes
            // go to staging so that a later flush can try again.
            let r = self.store.put(&g.key, body.clone(), g.meta.clone()).await;
            if r.is_err() {
                g.file.get()?.write_all_at(&body, 0).map_err(io)?;
            }
            r.map_err(FsError::from)
        } else {
            self.spill(&mut g)?;
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
        g.dropped = RangeSet::new();
        self.release_kept(&mut g);
        g.changed = false;
        // Once committed, the content is the object's; only an empty one (a created file
        // flushed before its first write, as `dd` does when it moves the descriptor) leaves
        // the file fit to stream.
        g.no_stream = size > 0;
        if size == 0 {
            g.tail = Some(Tail::new());
        }
        // The bytes are in the bucket now; free the local copy.
        g.file.set_len(0)?;
        self.budget.give(self.staged.swap(0, Ordering::SeqCst));
        Ok(())
    }

    /// The whole content, when it is a tail of at most one chunk (taken out of the tail).
    fn whole_tail(&self, g: &mut Inner) -> Option<Bytes> {
        let t = g.tail.as_ref()?;
        if t.start != 0 || t.chunks.len() > 1 {
            return None;
        }
        let mut t = g.tail.take()?;
        let chunk = t.chunks.pop_front().unwrap_or_default();
        self.budget.give_memory(chunk.len() as u64);
        Some(Bytes::from(chunk))
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

    /// Sends the rest of the file and completes the upload. Parts that failed before the commit
    /// began (the store was away longer than the retries lasted while the file was written)
    /// are sent once more; a part that fails from now on has failed for good and ends the
    /// commit at once, so a close with the store down fails within about one --op-timeout.
    async fn finish_stream(&self, g: &mut Inner) -> Result<String, FsError> {
        let began = Instant::now();
        let s = g.stream.as_mut().expect("streaming");
        while !s.tasks.is_empty() {
            join_at_commit(s, began).await?;
        }
        if s.broken {
            return Err(s.failed.clone().expect("a broken stream has an error"));
        }
        let resend = std::mem::take(&mut s.resend);
        if !resend.is_empty() {
            tracing::info!(key = %g.key, parts = resend.len(), "sending failed parts again");
            s.failed = None;
        }
        let began = Instant::now();
        for r in resend {
            self.spawn_part(g, r.n, r.range, r.keep, r.body);
            let s = g.stream.as_mut().expect("streaming");
            while s.tasks.len() >= self.max_inflight {
                join_at_commit(s, began).await?;
            }
        }
        loop {
            let s = g.stream.as_ref().expect("streaming");
            if s.sent_until >= g.size {
                break;
            }
            let last = g.size - s.sent_until <= 2 * plan::stream_part_size(s.next_part);
            self.send_part(g, last)?;
            let s = g.stream.as_mut().expect("streaming");
            while s.tasks.len() >= self.max_inflight {
                join_at_commit(s, began).await?;
            }
        }
        let s = g.stream.as_mut().expect("streaming");
        while !s.tasks.is_empty() {
            join_at_commit(s, began).await?;
        }
        if s.broken {
            return Err(s.failed.clone().expect("a broken stream has an error"));
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
        let store = &*self.store;
        multipart::upload(
            store,
            &g.key,
            g.meta.clone(),
            parts,
            self.max_inflight,
            |id, n, part| {
                let id = id.to_string();
                async move {
                    Ok(match part {
                        Part::Copy(r) => {
                            let b = g.base.as_ref().expect("copies come from a base");
                            store
                                .upload_part_copy(&g.key, &id, n, &b.key, &b.etag, r)
                                .await?
                        }
                        Part::Upload(r) => {
                            let body = assemble(store, g, r).await?;
                            store.upload_part(&g.key, &id, n, Bytes::from(body)).await?
                        }
                    })
                }
            },
        )
        .await
    }

    /// Gives up any upload in flight (the object keeps its last committed content).
    pub async fn abandon(&self) {
        let mut g = self.inner.lock().await;
        abort_stream(&self.store, &mut g, None).await;
    }
}

impl<S> Drop for WriteState<S> {
    fn drop(&mut self) {
        self.budget.give(self.staged.load(Ordering::SeqCst));
        self.budget.give_kept(self.inner.get_mut().kept_set.len());
        if let Some(t) = self.inner.get_mut().tail.take() {
            self.budget.give_memory(t.len());
        }
    }
}

/// Collects one finished part; a failure is kept for the commit to send again or report.
async fn join_one(s: &mut Stream) -> Result<(), FsError> {
    let r = match s.tasks.join_next().await {
        Some(Ok(Ok(done))) => {
            s.done.push(done);
            return Ok(());
        }
        Some(Ok(Err(PartFailed {
            n,
            range,
            keep,
            body,
            error,
            at,
        }))) => {
            s.resend.push(Resend {
                n,
                range,
                keep,
                body,
                at,
            });
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

/// `join_one` during a commit that began at `began`: a part that failed earlier is kept to be
/// sent again, one that failed since is final.
async fn join_at_commit(s: &mut Stream, began: Instant) -> Result<(), FsError> {
    match join_one(s).await {
        Ok(()) => Ok(()),
        Err(_) if s.resend.last().is_some_and(|r| r.at < began) && !s.broken => Ok(()),
        Err(e) => Err(e),
    }
}

/// Aborts the stream's upload, waiting for the abort at most `wait` (`None`: until it is
/// done). After a failed commit the store is likely down: the close reports the failure at
/// once while the abort goes on in the background (the journaled store retries it).
async fn abort_stream<S: ObjectStore>(store: &Arc<S>, g: &mut Inner, wait: Option<Duration>) {
    if let Some(mut s) = g.stream.take() {
        s.tasks.abort_all();
        while s.tasks.join_next().await.is_some() {}
        let (store, key, id) = (store.clone(), g.key.clone(), s.upload_id);
        let abort = tokio::spawn(async move {
            if let Err(e) = store.abort_multipart(&key, &id).await {
                tracing::warn!(%key, "could not abort multipart upload: {e}");
            }
        });
        match wait {
            Some(w) => {
                let _ = tokio::time::timeout(w, abort).await;
            }
            None => {
                let _ = abort.await;
            }
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
    // Written bytes: staged, or held in memory (parts already sent and kept, and the tail).
    let held_from = g.tail.as_ref().map_or(u64::MAX, |t| t.start);
    for d in g.dirty.overlapping(range.clone()) {
        for r in g.kept_set.gaps(d.start..d.end.min(held_from)) {
            g.file.read_exact_at(&mut out[at(&r)], r.start)?;
        }
    }
    let first = g
        .kept
        .range(..=range.start)
        .next_back()
        .map_or(range.start, |(s, _)| *s);
    for (&s, b) in g.kept.range(first..range.end) {
        let r = s.max(range.start)..(s + b.len() as u64).min(range.end);
        if !r.is_empty() {
            out[at(&r)].copy_from_slice(&b[(r.start - s) as usize..(r.end - s) as usize]);
        }
    }
    if let Some(t) = &g.tail {
        t.read_into(&mut out, range.start);
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
        state_within(store, Budget::new(u64::MAX), base)
    }

    fn state_within(
        store: &Arc<MemoryStore>,
        budget: Arc<Budget>,
        base: Option<Base>,
    ) -> WriteState<MemoryStore> {
        WriteState::new(
            store.clone(),
            &std::env::temp_dir(),
            budget,
            "k",
            base,
            PutOptions::default(),
            true,
            4,
        )
        .unwrap()
    }

    /// Appends `n` more pattern bytes at `at` to both the file and `data`.
    async fn write_seq_from(w: &WriteState<MemoryStore>, data: &mut Vec<u8>, at: usize, n: usize) {
        let more = pattern(n, 99);
        for (i, chunk) in more.chunks(MIB).enumerate() {
            w.write((at + i * MIB) as u64, chunk).await.unwrap();
        }
        data.extend_from_slice(&more);
    }

    /// Writes `data` from offset 0 in 1 MiB writes, as `cp` or `dd bs=1M` would.
    async fn write_seq(w: &WriteState<MemoryStore>, data: &[u8]) {
        for (i, chunk) in data.chunks(MIB).enumerate() {
            w.write((i * MIB) as u64, chunk).await.unwrap();
        }
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
        write_seq(&w, &data).await;
        // The part uploads run (and one fails) while the file is still being written.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        w.commit().await.unwrap();
        assert!(store.body("k").unwrap() == data);
        assert_eq!(store.pending_uploads(), 0);
    }

    #[tokio::test]
    async fn a_commit_with_the_store_down_stops_at_the_first_failed_part() {
        let store = Arc::new(MemoryStore::new());
        let w = state(&store, None);
        let data = pattern(100 * MIB, 9);
        // Written while the store is up (parts go out), closed once it is down: the commit
        // must not try every remaining part.
        for (i, chunk) in data.chunks(MIB).enumerate() {
            w.write((i * MIB) as u64, chunk).await.unwrap();
            if i == 20 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                store.fail_parts.store(u64::MAX, Ordering::SeqCst);
            }
        }
        let before = u64::MAX - store.fail_parts.load(Ordering::SeqCst);
        assert!(w.commit().await.is_err());
        let tried = u64::MAX - store.fail_parts.load(Ordering::SeqCst) - before;
        assert!(
            tried <= 4 + 1,
            "{tried} parts tried after the first failure"
        );
        assert_eq!(store.pending_uploads(), 0, "aborted");
        // A planned (non-streamed) upload stops at its first failure too.
        store.fail_parts.store(0, Ordering::SeqCst);
        let old = pattern(60 * MIB, 1);
        store.insert("big", old.clone(), &[]);
        let etag = store.head("big").await.unwrap().etag;
        let base = Base {
            key: "big".into(),
            etag,
            size: old.len() as u64,
        };
        let w = WriteState::new(
            store.clone(),
            &std::env::temp_dir(),
            Budget::new(u64::MAX),
            "big",
            Some(base),
            PutOptions::default(),
            false,
            2,
        )
        .unwrap();
        for at in (0..60).step_by(6) {
            w.write((at * MIB) as u64, b"edit").await.unwrap();
        }
        store.fail_parts.store(u64::MAX, Ordering::SeqCst);
        assert!(w.commit().await.is_err());
        let tried = u64::MAX - store.fail_parts.load(Ordering::SeqCst);
        assert!(tried <= 2 + 1, "{tried} parts tried");
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
    async fn an_appended_new_file_is_held_in_memory_not_staged() {
        let store = Arc::new(MemoryStore::new());
        let budget = Budget::new(u64::MAX);
        let w = state_within(&store, budget.clone(), None);
        let data = pattern(30 * MIB + 7, 4);
        for (i, chunk) in data.chunks(MIB).enumerate() {
            w.write((i * MIB) as u64, chunk).await.unwrap();
            assert!(budget.memory.load(Ordering::SeqCst) <= 16 * MIB as u64);
        }
        w.commit().await.unwrap();
        assert!(store.body("k").unwrap() == data);
        assert_eq!(budget.memory.load(Ordering::SeqCst), 0);
        // A small file is one PUT from memory.
        let w = state(&store, None);
        w.write(0, b"small").await.unwrap();
        w.commit().await.unwrap();
        assert_eq!(&store.body("k").unwrap()[..], b"small");
    }

    #[tokio::test]
    async fn a_file_committed_empty_still_streams_what_is_written_next() {
        // `dd of=F` creates F, then moves the descriptor (a close, so a commit) before writing.
        let store = Arc::new(MemoryStore::new());
        let w = state(&store, None);
        w.commit().await.unwrap();
        assert_eq!(store.body("k").unwrap().len(), 0);
        let data = pattern(20 * MIB, 8);
        write_seq(&w, &data).await;
        assert_eq!(store.pending_uploads(), 1, "streaming");
        w.commit().await.unwrap();
        assert!(store.body("k").unwrap() == data);
    }

    #[tokio::test]
    async fn anything_but_an_append_moves_the_tail_to_staging() {
        let store = Arc::new(MemoryStore::new());
        let w = state(&store, None);
        let mut data = pattern(20 * MIB, 5);
        write_seq(&w, &data).await;
        // Past the part already sent, inside what is held in memory.
        w.write(17 * MIB as u64, b"patch").await.unwrap();
        data[17 * MIB..17 * MIB + 5].copy_from_slice(b"patch");
        assert!(w.read(17 * MIB as u64, 5).await.unwrap() == b"patch"[..]);
        w.write(data.len() as u64, b"end").await.unwrap();
        data.extend_from_slice(b"end");
        w.commit().await.unwrap();
        assert!(store.body("k").unwrap() == data);
        // Emptied and written again: streams like a new file.
        w.truncate(0).await.unwrap();
        let again = pattern(20 * MIB, 6);
        write_seq(&w, &again).await;
        assert_eq!(store.pending_uploads(), 1, "streaming again");
        w.commit().await.unwrap();
        assert!(store.body("k").unwrap() == again);
        assert_eq!(store.pending_uploads(), 0);
    }

    #[tokio::test]
    async fn sequential_large_write_streams_parts_before_commit() {
        let store = Arc::new(MemoryStore::new());
        let w = state(&store, None);
        let data = pattern(40 * MIB + 123, 1);
        write_seq(&w, &data).await;
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
        write_seq(&w, &data).await;
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
    async fn truncating_up_is_charged_and_down_refunds_only_what_was_charged() {
        let store = Arc::new(MemoryStore::new());
        let budget = Budget::new(1000);
        let w = state_within(&store, budget.clone(), None);
        w.write(0, &[1; 100]).await.unwrap();
        w.truncate(700).await.unwrap();
        assert_eq!(budget.used(), 700, "the zeros grown are content to upload");
        assert!(matches!(w.truncate(1200).await, Err(FsError::NoSpace)));
        w.truncate(50).await.unwrap();
        assert_eq!(budget.used(), 50);
        // Another file's charge is never given back by this one's shrinking.
        let other = state_within(&store, budget.clone(), None);
        other.write(0, &[2; 300]).await.unwrap();
        w.truncate(10).await.unwrap();
        w.truncate(0).await.unwrap();
        assert_eq!(budget.used(), 300);
        drop(other);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn staging_budget_refuses_writes_beyond_it_and_commit_frees_it() {
        let store = Arc::new(MemoryStore::new());
        let budget = Budget::new(1000);
        let w = state_within(&store, budget.clone(), None);
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
    async fn reading_streamed_bytes_does_not_commit_but_rewriting_them_does() {
        let store = Arc::new(MemoryStore::new());
        let w = state(&store, None);
        let mut data = pattern(40 * MIB, 7);
        write_seq(&w, &data).await;
        assert!(store.counters.bytes_uploaded.load(Ordering::Relaxed) >= 16 * MIB as u64);
        // A reader sees every byte written so far, sent parts and the tail in memory alike,
        // and decides nothing about when the file is uploaded.
        assert_eq!(&w.read(10, 100).await.unwrap()[..], &data[10..110]);
        let mid = 20 * MIB as u64 - 50;
        assert_eq!(
            &w.read(mid, 100).await.unwrap()[..],
            &data[mid as usize..][..100]
        );
        let end = data.len() as u64 - 30;
        assert_eq!(&w.read(end, 100).await.unwrap()[..], &data[end as usize..]);
        assert!(store.body("k").is_none(), "a read never commits");
        assert_eq!(store.pending_uploads(), 1, "still streaming");
        write_seq_from(&w, &mut data, 40 * MIB, 3 * MIB).await;
        assert_eq!(
            store.pending_uploads(),
            1,
            "appends still stream after reads"
        );
        // A rewrite of early bytes completes the upload, then edits the completed object.
        w.write(5, b"again").await.unwrap();
        data[5..10].copy_from_slice(b"again");
        w.write(data.len() as u64, b"tail").await.unwrap();
        data.extend_from_slice(b"tail");
        w.commit().await.unwrap();
        assert!(store.body("k").unwrap() == data);
        assert_eq!(store.pending_uploads(), 0);
    }
}
