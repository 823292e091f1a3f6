//! One file's pending content. Writes land in an unnamed local temp file with their offsets and a
//! set of dirty ranges; bytes not written come from the old object (`Base`) or are zeros past a
//! truncation. A new file written from its start streams each full part to a multipart upload in
//! the background (memory bounded by the parts in flight); anything else is planned at commit:
//! unchanged runs of the old object are copied server-side, the rest is uploaded.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::plan::{self, Part, RangeSet};
use crate::error::FsError;
use crate::store::{ObjectStore, PutOptions, StoreError, collect};

/// The object a file's unchanged bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Base {
    pub key: String,
    pub etag: String,
    pub size: u64,
}

struct Stream {
    upload_id: String,
    part: u64,
    next_part: i32,
    sent_until: u64,
    done: Vec<(i32, String)>,
    tasks: JoinSet<Result<(i32, String), StoreError>>,
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
}

pub struct WriteState<S> {
    store: Arc<S>,
    inner: Mutex<Inner>,
    max_inflight: usize,
    /// Size and mtime, readable without waiting for a write or commit in progress; `None` until
    /// the content or metadata changed (until then the object's own attributes hold).
    hint: parking_lot::Mutex<Option<(u64, SystemTime)>>,
}

fn io(e: std::io::Error) -> FsError {
    FsError::Io(format!("local staging file: {e}"))
}

impl<S: ObjectStore> WriteState<S> {
    /// `base`: the object being modified (None for a new or truncated file). `changed`: whether
    /// the object must be written even without further writes (a created file).
    pub fn new(
        store: Arc<S>,
        tmp_dir: &Path,
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
            }),
            max_inflight: max_inflight.max(1),
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

    pub async fn size(&self) -> u64 {
        self.inner.lock().await.size
    }

    pub async fn mtime(&self) -> SystemTime {
        self.inner.lock().await.mtime
    }

    pub async fn is_changed(&self) -> bool {
        self.inner.lock().await.changed
    }

    pub async fn set_key(&self, key: &str) {
        let mut g = self.inner.lock().await;
        if g.key != key {
            abort_stream(&*self.store, &mut g).await;
            g.key = key.to_string();
            g.changed = true;
        }
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

    pub async fn write(&self, offset: u64, data: &[u8]) -> Result<u32, FsError> {
        let mut g = self.inner.lock().await;
        g.file.write_all_at(data, offset).map_err(io)?;
        let end = offset + data.len() as u64;
        g.dirty.insert(offset..end);
        g.size = g.size.max(end);
        g.changed = true;
        g.mtime = SystemTime::now();
        self.set_hint(&g);
        if g.stream.as_ref().is_some_and(|s| offset < s.sent_until) {
            // Rewriting bytes already sent: the whole content is planned again at commit.
            abort_stream(&*self.store, &mut g).await;
            g.no_stream = true;
        }
        self.stream_full_parts(&mut g).await;
        Ok(data.len() as u32)
    }

    /// Sends every complete part of a sequentially written new file.
    async fn stream_full_parts(&self, g: &mut Inner) {
        let sequential = g.base.is_none() && g.dirty.covers(&(0..g.size));
        if g.no_stream || !sequential {
            return;
        }
        loop {
            let part = plan::part_size(g.size);
            let sent = g.stream.as_ref().map_or(0, |s| s.sent_until);
            // Keep the last part back: it is sent at commit, when the size is final.
            if g.size < sent + 2 * part.max(g.stream.as_ref().map_or(0, |s| s.part)) {
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
                        })
                    }
                    Err(e) => {
                        tracing::warn!(key = %g.key, "cannot start a multipart upload ({e}); uploading at close");
                        g.no_stream = true;
                        return;
                    }
                }
            }
            let s = g.stream.as_mut().expect("just set");
            let range = s.sent_until..s.sent_until + s.part;
            let mut buf = vec![0u8; s.part as usize];
            if let Err(e) = g.file.read_exact_at(&mut buf, range.start) {
                tracing::warn!("staging file read failed: {e}");
                g.no_stream = true;
                return;
            }
            let (store, key, id, n) = (
                self.store.clone(),
                g.key.clone(),
                s.upload_id.clone(),
                s.next_part,
            );
            s.tasks.spawn(async move {
                let etag = store.upload_part(&key, &id, n, Bytes::from(buf)).await?;
                Ok((n, etag))
            });
            s.next_part += 1;
            s.sent_until = range.end;
            // Backpressure: the writer waits while too many parts are in flight.
            while s.tasks.len() >= self.max_inflight {
                match s.tasks.join_next().await {
                    Some(Ok(Ok(done))) => s.done.push(done),
                    Some(Ok(Err(e))) => {
                        tracing::warn!(key = %g.key, "part upload failed ({e}); uploading at close");
                        abort_stream(&*self.store, g).await;
                        g.no_stream = true;
                        return;
                    }
                    Some(Err(e)) => {
                        tracing::warn!("part upload task failed: {e}");
                        abort_stream(&*self.store, g).await;
                        g.no_stream = true;
                        return;
                    }
                    None => break,
                }
            }
        }
    }

    pub async fn truncate(&self, len: u64) -> Result<(), FsError> {
        let mut g = self.inner.lock().await;
        if g.stream.as_ref().is_some_and(|s| len < s.sent_until) {
            abort_stream(&*self.store, &mut g).await;
        }
        g.no_stream = true;
        if len < g.size {
            g.dirty.truncate(len);
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
        let g = self.inner.lock().await;
        let end = (offset + len as u64).min(g.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        Ok(Bytes::from(assemble(&*self.store, &g, offset..end).await?))
    }

    /// Makes the object in the bucket hold the current content. Durable when this returns Ok.
    pub async fn commit(&self) -> Result<(), FsError> {
        let mut g = self.inner.lock().await;
        if !g.changed {
            return Ok(());
        }
        let result = match g.stream.is_some() {
            true => match self.finish_stream(&mut g).await {
                Ok(etag) => Ok(etag),
                Err(e) => {
                    tracing::warn!(key = %g.key, "streamed upload failed ({e}); sending the file again");
                    abort_stream(&*self.store, &mut g).await;
                    self.upload_planned(&g).await
                }
            },
            false => self.upload_planned(&g).await,
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

    /// The ETag of the committed object, once there is one.
    pub async fn base(&self) -> Option<Base> {
        self.inner.lock().await.base.clone()
    }

    async fn finish_stream(&self, g: &mut Inner) -> Result<String, FsError> {
        let (size, key) = (g.size, g.key.clone());
        let s = g.stream.as_mut().expect("streaming");
        let mut pos = s.sent_until;
        while pos < size {
            let end = if size - pos > 2 * s.part {
                pos + s.part
            } else {
                size
            };
            let mut buf = vec![0u8; (end - pos) as usize];
            g.file.read_exact_at(&mut buf, pos).map_err(io)?;
            let (store, key, id, n) = (
                self.store.clone(),
                key.clone(),
                s.upload_id.clone(),
                s.next_part,
            );
            s.tasks.spawn(async move {
                let etag = store.upload_part(&key, &id, n, Bytes::from(buf)).await?;
                Ok((n, etag))
            });
            s.next_part += 1;
            pos = end;
            s.sent_until = end;
            while s.tasks.len() >= self.max_inflight {
                join_one(s).await?;
            }
        }
        while !s.tasks.is_empty() {
            join_one(s).await?;
        }
        let mut parts = std::mem::take(&mut s.done);
        parts.sort_by_key(|p| p.0);
        let id = s.upload_id.clone();
        let etag = self.store.complete_multipart(&key, &id, parts).await?;
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

async fn join_one(s: &mut Stream) -> Result<(), FsError> {
    match s.tasks.join_next().await {
        Some(Ok(Ok(done))) => {
            s.done.push(done);
            Ok(())
        }
        Some(Ok(Err(e))) => Err(e.into()),
        Some(Err(e)) => Err(FsError::Io(format!("part upload task: {e}"))),
        None => Ok(()),
    }
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
            let body = store.get_range(&b.key, gap.clone(), Some(&b.etag)).await?;
            let bytes = collect(body).await?;
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
    async fn rewriting_streamed_bytes_falls_back_to_a_full_upload() {
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
}
