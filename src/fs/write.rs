//! Everything that changes the bucket: creating and writing files, truncation, metadata
//! (chmod/chown/utimes/xattrs), unlink, mkdir/rmdir, symlinks and rename. Layout per DESIGN.md,
//! compatible with s3fs: metadata headers, `dir/` markers, symlink objects, xattr JSON.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::files::Doomed;
pub use super::meta::MetaChange;
use super::meta::{self, Kind, MetaAttrs};
use super::{Found, Fs, Opened, names, process};
use crate::error::FsError;
use crate::store::{ObjectStore, PutOptions, StoreError};
use crate::upload::plan::{self, MAX_PART};
use crate::upload::{Base, WriteState, multipart};

/// Objects copied or deleted at once by a directory rename.
const RENAME_CONCURRENCY: usize = 16;

/// Who asks: new files and directories belong to them.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The calling thread: a file it creates or empties is its to commit.
    pub pid: u32,
}

impl<S: ObjectStore> Fs<S> {
    pub(super) fn check_writable(&self) -> Result<(), FsError> {
        if self.cfg.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn new_meta(&self, kind: Kind, perm: u32, caller: Caller, now: SystemTime) -> PutOptions {
        let change = MetaChange {
            mode: Some(perm),
            uid: Some(caller.uid),
            gid: Some(caller.gid),
            mtime: Some(now),
        };
        meta::object_options(kind, &change)
    }

    fn new_found(
        &self,
        kind: Kind,
        perm: u32,
        caller: Caller,
        now: SystemTime,
        etag: String,
        size: u64,
    ) -> Found {
        Found {
            kind,
            size,
            etag,
            last_modified: now,
            meta: MetaAttrs {
                perm: Some((perm & 0o7777) as u16),
                uid: Some(caller.uid),
                gid: Some(caller.gid),
                mtime: Some(now),
                symlink: kind == Kind::Symlink,
            },
            has_meta: true,
        }
    }

    /// What `parent/name` is, from the caches or the bucket.
    async fn find(&self, parent_path: &str, name: &str, path: &str) -> Result<Found, FsError> {
        match self.cached(parent_path, name, path) {
            Some(r) => r.map(|(f, _)| f),
            None => self.resolve(path).await,
        }
    }

    /// Fails with EEXIST when `parent/name` exists.
    async fn must_not_exist(
        &self,
        parent_path: &str,
        name: &str,
        path: &str,
    ) -> Result<(), FsError> {
        match self.find(parent_path, name, path).await {
            Ok(_) => Err(FsError::Exists),
            Err(FsError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Checks a new entry's name and returns (parent path, path, key).
    fn new_entry(&self, parent: u64, name: &str) -> Result<(String, String, String), FsError> {
        self.check_writable()?;
        names::check_new_name(name)?;
        let parent_path = self.dir_path(parent)?;
        let path = names::join(&parent_path, name);
        let key = self.keys.file(&path)?;
        Ok((parent_path, path, key))
    }

    fn record_new(&self, path: &str, found: Found) -> u64 {
        if let Ok(key) = self.keys.file(path) {
            // The name is another file's now: an orphan that held it must not delete it.
            self.files.key_reused(&key);
        }
        let ino = self
            .ns
            .inodes
            .lock()
            .upsert(path, found, self.fresh_until(), true);
        self.ns.clear_negative(path);
        self.ns.listing_set(
            path,
            self.ns.inodes.lock().get(ino).map(|n| n.found.clone()),
        );
        ino
    }

    /// The pending state of an inode opened for writing, made on first use.
    pub(super) async fn write_state(
        &self,
        ino: u64,
        path: &str,
        truncate: bool,
    ) -> Result<Arc<WriteState<S>>, FsError> {
        if let Some(s) = self.files.write_of(ino) {
            return Ok(s);
        }
        let key = self.keys.file(path)?;
        let (base, meta) = match self.store.head(&key).await {
            Ok(obj) => (
                Some(Base {
                    key: key.clone(),
                    etag: obj.etag.clone(),
                    size: obj.size,
                }),
                obj.put_options(),
            ),
            Err(StoreError::NotFound) if truncate => (None, PutOptions::default()),
            Err(e) => return Err(e.into()),
        };
        let base = if truncate { None } else { base };
        let state = Arc::new(WriteState::new(
            self.store.clone(),
            &self.cfg.tmp_dir,
            self.budget.clone(),
            &key,
            base,
            meta,
            truncate,
            self.cfg.max_inflight_parts,
        )?);
        Ok(self.files.write_or_insert(ino, state))
    }

    pub async fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        umask: u32,
        exclusive: bool,
        caller: Caller,
    ) -> Result<(super::Attr, Opened), FsError> {
        let (parent_path, path, key) = self.new_entry(parent, name)?;
        if exclusive {
            self.must_not_exist(&parent_path, name, &path).await?;
        } else if let Some(Ok((f, _))) = self.cached(&parent_path, name, &path) {
            // O_CREAT on a name that exists (the kernel's negative entry was stale): open that
            // file, as open(2) does, rather than replace another descriptor's file.
            if f.kind == Kind::Dir {
                return Err(FsError::IsDir);
            }
            let ino = self.ns.inodes.lock().by_path(&path);
            if let Some(ino) = ino {
                let opened = self.open(ino, true, false, caller.pid).await?;
                let attr = self.getattr(ino).await?;
                return Ok((attr, opened));
            }
        }
        let perm = mode & 0o7777 & !umask;
        let now = SystemTime::now();
        let state = Arc::new(WriteState::new(
            self.store.clone(),
            &self.cfg.tmp_dir,
            self.budget.clone(),
            &key,
            None,
            self.new_meta(Kind::File, perm, caller, now),
            true,
            self.cfg.max_inflight_parts,
        )?);
        let found = self.new_found(Kind::File, perm, caller, now, String::new(), 0);
        let ino = self.record_new(&path, found.clone());
        if let Some(old) = self.files.replace_write(ino, state) {
            tokio::spawn(async move { old.abandon().await });
        }
        self.files.opened(ino);
        let opened = self.new_handle(ino, None, Some(caller.pid), false);
        Ok((self.attr_of(ino, &found), opened))
    }

    pub async fn mknod(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> Result<super::Attr, FsError> {
        let (parent_path, path, key) = self.new_entry(parent, name)?;
        let ftype = mode & libc::S_IFMT;
        if ftype != 0 && ftype != libc::S_IFREG {
            // FIFOs, sockets and devices cannot be objects.
            return Err(FsError::NotPermitted);
        }
        self.must_not_exist(&parent_path, name, &path).await?;
        let perm = mode & 0o7777 & !umask;
        let now = SystemTime::now();
        let etag = self
            .store
            .put(
                &key,
                Bytes::new(),
                self.new_meta(Kind::File, perm, caller, now),
            )
            .await?;
        let found = self.new_found(Kind::File, perm, caller, now, etag, 0);
        let ino = self.record_new(&path, found.clone());
        Ok(self.attr_of(ino, &found))
    }

    /// Writes through handle `fh` for thread `tid`.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8], tid: u32) -> Result<u32, FsError> {
        let h = self.file_handle(fh)?;
        if h.reader.is_some() {
            return Err(FsError::BadHandle);
        }
        {
            let mut writers = h.writers.lock();
            if !writers.contains(&tid) {
                writers.push(tid);
            }
        }
        let state = self.files.write_of(h.ino).ok_or(FsError::BadHandle)?;
        state.write(offset, data).await
    }

    /// flush, on every close by thread `tid`: what was written through this handle is in the
    /// bucket when this returns Ok. A close by a process that wrote nothing through the handle
    /// (a reader, a child closing a descriptor it inherited) leaves the commit to the writers.
    pub async fn flush(&self, fh: u64, tid: u32) -> Result<(), FsError> {
        let Some(h) = self.handles.lock().get(&fh).cloned() else {
            return Ok(());
        };
        let writers = h.writers.lock().clone();
        let wrote_here = if writers.is_empty() {
            h.dirtied.load(std::sync::atomic::Ordering::Relaxed)
        } else {
            process::same_process(tid, &writers)
        };
        if !wrote_here {
            tracing::debug!(
                tid,
                ?writers,
                "close by a process that did not write: no commit"
            );
            return Ok(());
        }
        self.commit_ino(h.ino).await
    }

    /// fsync on any descriptor of the file: everything written to it is in the bucket when
    /// this returns Ok.
    pub async fn fsync(&self, ino: u64) -> Result<(), FsError> {
        self.commit_ino(ino).await
    }

    pub(super) async fn commit_ino(&self, ino: u64) -> Result<(), FsError> {
        let Some(state) = self.files.write_of(ino) else {
            return Ok(());
        };
        if self.files.is_orphan(ino) {
            return Ok(());
        }
        if !state.is_changed().await {
            return Ok(());
        }
        state.commit().await?;
        let base = state.base().await;
        let (size, mtime) = state.hint().unwrap_or((0, SystemTime::now()));
        let mut inodes = self.ns.inodes.lock();
        if let Some(node) = inodes.get_mut(ino) {
            if let Some(b) = base {
                node.found.etag = b.etag;
            }
            node.found.size = size;
            node.found.last_modified = mtime;
            node.found.meta.mtime = Some(mtime);
            node.valid_until = Instant::now() + self.cfg.metadata_ttl;
            let (path, found) = (node.path.clone(), node.found.clone());
            drop(inodes);
            self.ns.listing_set(&path, Some(found));
        }
        Ok(())
    }

    /// The last close of a file commits what is left, forgets its pending state, and deletes
    /// its object if it lost its name while open (only the version it had: a file created
    /// under that name since is another file).
    pub async fn release(&self, ino: u64, fh: u64) -> Result<(), FsError> {
        self.handles.lock().remove(&fh);
        if !self.files.closed(ino) {
            return Ok(());
        }
        let result = self.commit_ino(ino).await;
        // An open that came in while committing shares the state: keep it then.
        let Some(last) = self.files.take_if_closed(ino) else {
            return result;
        };
        if let Err(e) = &result {
            // The kernel ignores what release returns: nobody else will hear of this.
            let path = self.path_of(ino);
            tracing::error!(
                path,
                "upload at the last close failed, data not written: {e}"
            );
            self.failed.lock().push((path, e.clone()));
        }
        self.finish_last(last, result.is_err()).await?;
        result
    }

    /// What is left once a file's last descriptor is gone: a stream no commit will finish
    /// (`give_up`, or the file has no name) is aborted, and the object version of a file that
    /// lost its name while open is deleted.
    pub(super) async fn finish_last(
        &self,
        last: super::files::LastClose<S>,
        give_up: bool,
    ) -> Result<(), FsError> {
        if let Some(state) = last.write {
            if give_up || last.orphan {
                state.abandon().await;
            }
        }
        if let Some(d) = last.doomed {
            self.delete_version(&d).await?;
        }
        Ok(())
    }

    fn path_of(&self, ino: u64) -> String {
        self.ns
            .inodes
            .lock()
            .get(ino)
            .map(|n| n.path.clone())
            .unwrap_or_default()
    }

    /// Deletes `d.key` if it still holds the version `d.etag` (another client may have put a
    /// new object there since; this mount's own new files cancel the delete beforehand).
    async fn delete_version(&self, d: &Doomed) -> Result<(), FsError> {
        if !d.etag.is_empty() {
            match self.store.head(&d.key).await {
                Ok(obj) if obj.etag != d.etag => return Ok(()),
                Ok(_) => {}
                Err(StoreError::NotFound) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        match self.store.delete(&d.key).await {
            Ok(()) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes sure the directory at `dir_path` outlives its last entry: writes its marker when it
    /// has none (DESIGN.md), before an entry is removed.
    async fn keep_dir(&self, dir_path: &str) -> Result<(), FsError> {
        if dir_path.is_empty() {
            return Ok(());
        }
        let marker = self.keys.dir(dir_path);
        if self.ns.has_marker(&marker) {
            return Ok(());
        }
        match self.store.head(&marker).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => {
                let change = MetaChange {
                    mode: Some(self.cfg.dir_mode as u32),
                    uid: Some(self.cfg.uid),
                    gid: Some(self.cfg.gid),
                    mtime: Some(SystemTime::now()),
                };
                let opts = meta::object_options(Kind::Dir, &change);
                self.store.put(&marker, Bytes::new(), opts).await?;
            }
            Err(e) => return Err(e.into()),
        }
        self.ns.add_marker(marker);
        Ok(())
    }

    pub async fn unlink(&self, parent: u64, name: &str) -> Result<(), FsError> {
        self.check_writable()?;
        names::check_name(name)?;
        let parent_path = self.dir_path(parent)?;
        let path = names::join(&parent_path, name);
        let found = self.find(&parent_path, name, &path).await?;
        if found.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        let key = self.keys.file(&path)?;
        self.keep_dir(&parent_path).await?;
        let ino = self.ns.inodes.lock().by_path(&path);
        let open = ino.filter(|i| self.files.is_open(*i));
        match open {
            // The file lives on for its descriptors, reads and writes alike, until the last
            // close; its object is hidden until then and deleted at that close.
            Some(i) if !found.etag.is_empty() => {
                let doomed = Doomed {
                    key,
                    etag: found.etag,
                };
                self.orphan(i, Some(doomed)).await
            }
            // A new file not uploaded yet has no object of its own: whatever the key still
            // holds (an older file's) goes now, as with any unlink.
            _ => {
                if let Some(i) = open {
                    self.orphan(i, None).await;
                }
                match self.store.delete(&key).await {
                    Ok(()) | Err(StoreError::NotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.ns.inodes.lock().detach(&path);
        self.ns.listing_set(&path, None);
        self.ns.set_negative(path, self.fresh_until());
        Ok(())
    }

    pub async fn mkdir(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> Result<super::Attr, FsError> {
        let (parent_path, path, _) = self.new_entry(parent, name)?;
        self.must_not_exist(&parent_path, name, &path).await?;
        let perm = mode & 0o7777 & !umask;
        let now = SystemTime::now();
        let marker = self.keys.dir(&path);
        let etag = self
            .store
            .put(
                &marker,
                Bytes::new(),
                self.new_meta(Kind::Dir, perm, caller, now),
            )
            .await?;
        self.ns.add_marker(marker);
        let found = self.new_found(Kind::Dir, perm, caller, now, etag, 0);
        let ino = self.record_new(&path, found.clone());
        self.ns
            .remember_listing(&path, Arc::new(BTreeMap::new()), self.fresh_until());
        Ok(self.attr_of(ino, &found))
    }

    /// The file at `ino` lost its name while open; `doomed`: its object, to delete at its
    /// last close. Its pending content stays its own and is never uploaded.
    async fn orphan(&self, ino: u64, doomed: Option<Doomed>) {
        if let Some(state) = self.files.orphan(ino, doomed) {
            state.orphan().await;
        }
    }

    /// Whether anything but the directory's own marker lives under it (in the bucket, or
    /// pending here). Keys of files unlinked while open do not count, and cannot hide others.
    async fn dir_has_entries(&self, path: &str) -> Result<bool, FsError> {
        let prefix = self.keys.dir(path);
        let hidden = self.files.hidden_under(&prefix);
        let want = i32::try_from(hidden + 2).unwrap_or(i32::MAX);
        let page = self.store.list(&prefix, false, None, Some(want)).await?;
        if page
            .objects
            .iter()
            .any(|o| o.key != prefix && !self.files.is_hidden(&o.key, &o.etag))
        {
            return Ok(true);
        }
        let inner = format!("{path}/");
        let inodes = self.ns.inodes.lock();
        Ok(self
            .files
            .pending()
            .iter()
            .filter_map(|(i, _)| {
                inodes
                    .get(*i)
                    .filter(|n| inodes.by_path(&n.path) == Some(*i))
            })
            .any(|n| n.path.starts_with(&inner)))
    }

    pub async fn rmdir(&self, parent: u64, name: &str) -> Result<(), FsError> {
        self.check_writable()?;
        names::check_name(name)?;
        let parent_path = self.dir_path(parent)?;
        let path = names::join(&parent_path, name);
        let found = self.find(&parent_path, name, &path).await?;
        if found.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if self.dir_has_entries(&path).await? {
            return Err(FsError::NotEmpty);
        }
        self.keep_dir(&parent_path).await?;
        let marker = self.keys.dir(&path);
        match self.store.delete(&marker).await {
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        self.ns.remove_marker(&marker);
        self.ns.inodes.lock().detach(&path);
        self.ns.set_negative(path.clone(), self.fresh_until());
        self.ns.listing_set(&path, None);
        self.ns.forget_listing(&path);
        Ok(())
    }

    pub async fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &[u8],
        caller: Caller,
    ) -> Result<super::Attr, FsError> {
        let (parent_path, path, key) = self.new_entry(parent, name)?;
        self.must_not_exist(&parent_path, name, &path).await?;
        let now = SystemTime::now();
        let etag = self
            .store
            .put(
                &key,
                Bytes::copy_from_slice(target),
                self.new_meta(Kind::Symlink, 0o777, caller, now),
            )
            .await?;
        let found = self.new_found(Kind::Symlink, 0o777, caller, now, etag, target.len() as u64);
        let ino = self.record_new(&path, found.clone());
        Ok(self.attr_of(ino, &found))
    }

    /// CopyObject, or a multipart copy for objects over 5 GiB.
    pub(super) async fn copy_any(
        &self,
        src: &str,
        dst: &str,
        size: u64,
        etag: &str,
        meta: Option<PutOptions>,
    ) -> Result<String, FsError> {
        if size <= MAX_PART {
            return Ok(self.store.copy(src, dst, meta).await?);
        }
        let opts = match meta {
            Some(m) => m,
            None => {
                let obj = self.store.head(src).await?;
                obj.put_options()
            }
        };
        let part = plan::part_size(size).max(1 << 30);
        let ranges: Vec<_> = (0..size)
            .step_by(part as usize)
            .map(|s| s..(s + part).min(size))
            .collect();
        let store = &*self.store;
        multipart::upload(store, dst, opts, ranges, 4, |id, n, r| {
            let id = id.to_string();
            async move { Ok(store.upload_part_copy(dst, &id, n, src, etag, r).await?) }
        })
        .await
    }

    pub async fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        flags: u32,
    ) -> Result<(), FsError> {
        self.check_writable()?;
        if flags & !libc::RENAME_NOREPLACE != 0 {
            // RENAME_EXCHANGE (and whiteouts) cannot be done on S3.
            return Err(FsError::Invalid);
        }
        names::check_name(name)?;
        names::check_new_name(new_name)?;
        let src_parent = self.dir_path(parent)?;
        let dst_parent = self.dir_path(new_parent)?;
        let src_path = names::join(&src_parent, name);
        let dst_path = names::join(&dst_parent, new_name);
        self.keys.file(&dst_path)?;
        let src = self.find(&src_parent, name, &src_path).await?;
        if src_path == dst_path {
            return Ok(());
        }
        if src.kind == Kind::Dir && dst_path.starts_with(&format!("{src_path}/")) {
            return Err(FsError::Invalid);
        }
        let dst = match self.find(&dst_parent, new_name, &dst_path).await {
            Ok(f) => Some(f),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        if let Some(d) = &dst {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(FsError::Exists);
            }
            match (src.kind, d.kind) {
                (Kind::Dir, Kind::Dir) if self.dir_has_entries(&dst_path).await? => {
                    return Err(FsError::NotEmpty);
                }
                // An empty directory is replaced.
                (Kind::Dir, Kind::Dir) => {}
                (Kind::Dir, _) => return Err(FsError::NotDir),
                (_, Kind::Dir) => return Err(FsError::IsDir),
                _ => {}
            }
        }
        self.keep_dir(&src_parent).await?;
        match src.kind {
            Kind::Dir => self.rename_dir(&src_path, &dst_path).await?,
            _ => self.rename_file(&src_path, &dst_path).await?,
        }
        // A file renamed over is nameless now: open descriptors keep it, and its writes go
        // nowhere (its object was replaced by the copy, so there is nothing left to delete).
        let replaced = self.ns.inodes.lock().by_path(&dst_path);
        if let Some(i) = replaced.filter(|i| self.files.is_open(*i)) {
            self.orphan(i, None).await;
        }
        self.ns.inodes.lock().rename(&src_path, &dst_path);
        self.ns.set_negative(src_path, self.fresh_until());
        self.ns.clear_negative(&dst_path);
        // A directory rename touches listings all over; start afresh.
        self.ns.forget_listings();
        Ok(())
    }

    async fn rename_file(&self, src_path: &str, dst_path: &str) -> Result<(), FsError> {
        let (src_key, dst_key) = (self.keys.file(src_path)?, self.keys.file(dst_path)?);
        // An orphan hiding the target key must not delete what is copied there.
        self.files.key_reused(&dst_key);
        self.ns.forget_meta(&dst_key);
        let ino = self.ns.inodes.lock().by_path(src_path);
        let state = ino.and_then(|i| self.files.write_of(i));
        if let (Some(_), Some(i)) = (&state, ino) {
            // The source object must hold what was written before it is copied.
            self.commit_ino(i).await?;
        }
        let obj = self.store.head(&src_key).await?;
        // Never delete the source before its copy succeeded.
        let etag = self
            .copy_any(&src_key, &dst_key, obj.size, &obj.etag, None)
            .await?;
        self.store.delete(&src_key).await?;
        if let Some(i) = ino {
            self.moved(i, &dst_key, &etag, obj.size).await;
        }
        Ok(())
    }

    /// File `ino`'s object is now `key` at version `etag` (renamed by this mount): its pending
    /// state commits there, and the inode and open readers expect that version.
    async fn moved(&self, ino: u64, key: &str, etag: &str, size: u64) {
        if let Some(state) = self.files.write_of(ino) {
            state.rebase(key, etag).await;
        }
        if let Some(node) = self.ns.inodes.lock().get_mut(ino) {
            node.found.etag = etag.to_string();
            node.open_etag = None;
        }
        self.retarget(ino, key, etag, size);
    }

    async fn rename_dir(&self, src_path: &str, dst_path: &str) -> Result<(), FsError> {
        // Files under the directory, named ones only: a file unlinked while open is not copied.
        let inner = format!("{src_path}/");
        let under: Vec<(u64, String)> = {
            let inodes = self.ns.inodes.lock();
            self.files
                .pending()
                .into_iter()
                .filter_map(|(i, _)| {
                    let n = inodes.get(i)?;
                    let named = inodes.by_path(&n.path) == Some(i);
                    (named && n.path.starts_with(&inner)).then(|| (i, n.path.clone()))
                })
                .collect()
        };
        // Pending files go to the bucket first, then everything moves.
        for (i, _) in &under {
            self.commit_ino(*i).await?;
        }
        let (src_prefix, dst_prefix) = (self.keys.dir(src_path), self.keys.dir(dst_path));
        let mut objects = Vec::new();
        let mut token = None;
        loop {
            let page = self.store.list(&src_prefix, false, token, None).await?;
            objects.extend(page.objects);
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        objects.retain(|o| !self.files.is_hidden(&o.key, &o.etag));
        let copies: Vec<(String, String, u64)> = futures::stream::iter(objects.clone())
            .map(|o| {
                let dst = format!("{dst_prefix}{}", &o.key[src_prefix.len()..]);
                async move {
                    let etag = self.copy_any(&o.key, &dst, o.size, &o.etag, None).await?;
                    Ok::<_, FsError>((o.key, etag, o.size))
                }
            })
            .buffer_unordered(RENAME_CONCURRENCY)
            .try_collect()
            .await?;
        let keys: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
        let deletes: Vec<Result<(), StoreError>> = futures::stream::iter(keys)
            .map(|key| async move { self.store.delete(&key).await })
            .buffer_unordered(RENAME_CONCURRENCY)
            .collect()
            .await;
        for d in deletes {
            d?;
        }
        self.ns.remove_markers_under(&src_prefix);
        if objects.iter().any(|o| o.key == src_prefix) {
            self.ns.add_marker(dst_prefix.clone());
        }
        // Files open under the directory follow it: a later commit lands under the new name,
        // and readers read the copies.
        let copied: HashMap<String, (String, u64)> = copies
            .into_iter()
            .map(|(k, etag, size)| (k, (etag, size)))
            .collect();
        let open: Vec<(u64, String)> = {
            let inodes = self.ns.inodes.lock();
            let handles = self.handles.lock();
            let mut inos: Vec<u64> = handles.values().map(|h| h.ino).collect();
            inos.extend(under.iter().map(|(i, _)| *i));
            inos.sort_unstable();
            inos.dedup();
            inos.into_iter()
                .filter_map(|i| {
                    let n = inodes.get(i)?;
                    let named = inodes.by_path(&n.path) == Some(i);
                    (named && n.path.starts_with(&inner)).then(|| (i, n.path.clone()))
                })
                .collect()
        };
        for (i, path) in open {
            let old_key = self.keys.file(&path)?;
            if let Some((etag, size)) = copied.get(&old_key) {
                let new_key = format!("{dst_prefix}{}", &old_key[src_prefix.len()..]);
                self.moved(i, &new_key, etag, *size).await;
            }
        }
        Ok(())
    }

    /// Unmount: commits every file still pending (a close that raced the unmount), and returns
    /// every upload that failed where no syscall could report it.
    pub async fn flush_all(&self) -> Vec<(String, FsError)> {
        for (ino, _) in self.files.pending() {
            if let Err(e) = self.commit_ino(ino).await {
                let path = self.path_of(ino);
                tracing::error!(path, "upload at unmount failed, data not written: {e}");
                if let Some(s) = self.files.take_write(ino) {
                    s.abandon().await;
                }
                self.failed.lock().push((path, e));
            }
        }
        std::mem::take(&mut *self.failed.lock())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::fs::FsConfig;
    use crate::fs::inode::ROOT;
    use crate::store::memory::MemoryStore;

    const ME: Caller = Caller {
        uid: 1000,
        gid: 1000,
        pid: 1,
    };

    fn fs() -> (Arc<MemoryStore>, Fs<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        (store.clone(), Fs::new(store, FsConfig::default()))
    }

    async fn write_file(fs: &Fs<MemoryStore>, parent: u64, name: &str, data: &[u8]) -> u64 {
        let (attr, o) = fs
            .create(parent, name, 0o644, 0o022, false, ME)
            .await
            .unwrap();
        fs.write(o.fh, 0, data, 1).await.unwrap();
        fs.fsync(attr.ino).await.unwrap();
        fs.release(attr.ino, o.fh).await.unwrap();
        attr.ino
    }

    #[tokio::test]
    async fn an_unprivileged_write_clears_set_id_bits() {
        let (store, fs) = fs();
        let ino = write_file(&fs, ROOT, "tool", b"#!").await;
        let setuid = MetaChange {
            mode: Some(0o6755),
            ..MetaChange::default()
        };
        fs.setattr(ino, None, setuid, None).await.unwrap();
        assert_eq!(fs.getattr(ino).await.unwrap().perm, 0o6755);
        fs.kill_suidgid(ino).await.unwrap();
        assert_eq!(fs.getattr(ino).await.unwrap().perm, 0o755);
        let mode = store.head("tool").await.unwrap().user_meta.unwrap()["mode"].clone();
        assert_eq!(mode.parse::<u32>().unwrap() & 0o7777, 0o755);
    }

    #[tokio::test]
    async fn a_child_exec_closing_a_just_created_file_does_not_commit_it() {
        let (store, fs) = fs();
        let me = Caller {
            pid: std::process::id(),
            ..ME
        };
        let (attr, o) = fs.create(ROOT, "new", 0o644, 0, false, me).await.unwrap();
        // Another thread of the program forks and execs: the child's copy of the descriptor
        // is closed (a FLUSH from the child) before anything is written.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        fs.flush(o.fh, child.id()).await.unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(store.body("new").is_none(), "not the creator's close");
        fs.flush(o.fh, me.pid).await.unwrap();
        assert_eq!(
            store.body("new").as_deref(),
            Some(&b""[..]),
            "the creator's is"
        );
        fs.release(attr.ino, o.fh).await.unwrap();
    }

    #[tokio::test]
    async fn a_close_by_a_process_that_wrote_nothing_does_not_commit() {
        let (store, fs) = fs();
        let (attr, o) = fs.create(ROOT, "f", 0o644, 0o022, false, ME).await.unwrap();
        let me = std::process::id();
        fs.write(o.fh, 0, b"data", me).await.unwrap();
        // A child that inherited the descriptor exits: not the writer's close.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        fs.flush(o.fh, child.id()).await.unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(store.body("f").is_none());
        fs.flush(o.fh, me).await.unwrap();
        assert_eq!(store.body("f").as_deref(), Some(&b"data"[..]));
        fs.release(attr.ino, o.fh).await.unwrap();
    }

    #[tokio::test]
    async fn edits_of_a_file_read_through_broken_bodies_are_uploaded_intact() {
        use crate::store::fault::Faulty;
        // Every second GET breaks off half-way: the unchanged bytes of the old object that an
        // edit is assembled from are read through resumed bodies.
        let store = Arc::new(Faulty::new(MemoryStore::new(), 2));
        let old: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        store.inner().insert("f", old.clone(), &[]);
        let fs = Fs::new(store.clone(), FsConfig::default());
        let a = fs.lookup(ROOT, "f").await.unwrap();
        let o = fs.open(a.ino, true, false, 1).await.unwrap();
        let mut want = old;
        for at in [10u64, 1_000_000, 2_999_990] {
            fs.write(o.fh, at, b"EDIT", 1).await.unwrap();
            want[at as usize..at as usize + 4].copy_from_slice(b"EDIT");
        }
        let back = fs.read(o.fh, 999_998, 8).await.unwrap();
        assert_eq!(&back[..], &want[999_998..1_000_006]);
        fs.flush(o.fh, 1).await.unwrap();
        fs.release(a.ino, o.fh).await.unwrap();
        assert!(store.inner().body("f").unwrap() == want);
        assert!(
            store.cuts.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "bodies were cut"
        );
    }

    #[tokio::test]
    async fn an_upload_that_fails_at_the_last_close_is_reported_at_unmount() {
        let (store, fs) = fs();
        let (attr, o) = fs.create(ROOT, "lost", 0o644, 0, false, ME).await.unwrap();
        let data = vec![5u8; 30 << 20];
        for (i, chunk) in data.chunks(1 << 20).enumerate() {
            fs.write(o.fh, (i << 20) as u64, chunk, 1).await.unwrap();
        }
        // The writer's flush never came (a write through mmap after close, say): the last
        // close commits, and the kernel ignores what it returns.
        store
            .fail_parts
            .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
        assert!(fs.release(attr.ino, o.fh).await.is_err());
        let failed = fs.flush_all().await;
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].0, "lost");
        assert!(store.body("lost").is_none());
        assert_eq!(store.pending_uploads(), 0, "aborted");
    }

    #[tokio::test]
    async fn a_huge_symlink_object_is_not_loaded() {
        let (store, fs) = fs();
        store.insert("ln", vec![b'x'; 1 << 20], &[("mode", "41471")]);
        let a = fs.lookup(ROOT, "ln").await.unwrap();
        assert_eq!(fs.readlink(a.ino).await.unwrap().len(), 4096);
    }

    #[tokio::test]
    async fn created_file_is_in_the_bucket_at_close_with_s3fs_headers() {
        let (store, fs) = fs();
        write_file(&fs, ROOT, "a.txt", b"hello").await;
        assert_eq!(&store.body("a.txt").unwrap()[..], b"hello");
        let meta = store.head("a.txt").await.unwrap().user_meta.unwrap();
        assert_eq!(meta["mode"], "33188");
        assert_eq!(meta["uid"], "1000");
        assert!(meta["mtime"].parse::<f64>().is_ok());
    }

    #[tokio::test]
    async fn empty_create_still_makes_an_object() {
        let (store, fs) = fs();
        let (attr, o) = fs.create(ROOT, "empty", 0o600, 0, false, ME).await.unwrap();
        fs.release(attr.ino, o.fh).await.unwrap();
        assert_eq!(store.body("empty").unwrap().len(), 0);
    }

    #[tokio::test]
    async fn mkdir_rmdir_and_markers() {
        let (store, fs) = fs();
        let d = fs.mkdir(ROOT, "d", 0o755, 0o022, ME).await.unwrap();
        let head = store.head("d/").await.unwrap();
        assert_eq!(
            head.content_type.as_deref(),
            Some("application/x-directory")
        );
        assert_eq!(head.user_meta.unwrap()["mode"], "16877");
        write_file(&fs, d.ino, "f", b"x").await;
        assert!(matches!(fs.rmdir(ROOT, "d").await, Err(FsError::NotEmpty)));
        fs.unlink(d.ino, "f").await.unwrap();
        fs.rmdir(ROOT, "d").await.unwrap();
        assert!(store.keys().is_empty(), "{:?}", store.keys());
    }

    #[tokio::test]
    async fn removing_the_last_entry_keeps_an_implicit_directory() {
        let (store, fs) = fs();
        store.insert("imp/only", b"x".to_vec(), &[]);
        let d = fs.lookup(ROOT, "imp").await.unwrap();
        fs.unlink(d.ino, "only").await.unwrap();
        assert_eq!(store.keys(), ["imp/"]);
        assert_eq!(fs.lookup(ROOT, "imp").await.unwrap().kind, Kind::Dir);
    }

    #[tokio::test]
    async fn rename_file_and_directory() {
        let (store, fs) = fs();
        let d = fs.mkdir(ROOT, "src", 0o755, 0, ME).await.unwrap();
        write_file(&fs, d.ino, "a", b"A").await;
        let sub = fs.mkdir(d.ino, "sub", 0o755, 0, ME).await.unwrap();
        write_file(&fs, sub.ino, "b", b"B").await;
        fs.rename(ROOT, "src", ROOT, "dst", 0).await.unwrap();
        assert_eq!(store.keys(), ["dst/", "dst/a", "dst/sub/", "dst/sub/b"]);
        let dst = fs.lookup(ROOT, "dst").await.unwrap();
        assert_eq!(dst.ino, d.ino, "the kernel's inode follows the rename");
        fs.rename(dst.ino, "a", ROOT, "moved", 0).await.unwrap();
        assert_eq!(&store.body("moved").unwrap()[..], b"A");
        assert!(store.body("dst/a").is_none());
        write_file(&fs, ROOT, "other", b"O").await;
        assert!(matches!(
            fs.rename(ROOT, "moved", ROOT, "other", libc::RENAME_NOREPLACE)
                .await,
            Err(FsError::Exists)
        ));
        assert!(matches!(
            fs.rename(ROOT, "moved", ROOT, "other", libc::RENAME_EXCHANGE)
                .await,
            Err(FsError::Invalid)
        ));
        fs.rename(ROOT, "moved", ROOT, "other", 0).await.unwrap();
        assert_eq!(
            &store.body("other").unwrap()[..],
            b"A",
            "rename replaces the target"
        );
    }

    /// Found by the model test (seed 52): a directory renamed over an empty one replaces it.
    #[tokio::test]
    async fn rename_directory_over_an_empty_directory() {
        let (store, fs) = fs();
        let c = fs.mkdir(ROOT, "c", 0o755, 0, ME).await.unwrap();
        write_file(&fs, c.ino, "d", b"x").await;
        fs.mkdir(ROOT, "a", 0o755, 0, ME).await.unwrap();
        fs.rename(ROOT, "c", ROOT, "a", 0).await.unwrap();
        assert_eq!(store.keys(), ["a/", "a/d"]);
        let full = fs.mkdir(ROOT, "full", 0o755, 0, ME).await.unwrap();
        write_file(&fs, full.ino, "f", b"y").await;
        assert!(matches!(
            fs.rename(ROOT, "a", ROOT, "full", 0).await,
            Err(FsError::NotEmpty)
        ));
    }

    #[tokio::test]
    async fn chmod_chown_utimes_rewrite_headers_and_keep_others() {
        let (store, fs) = fs();
        store.insert("f", b"data".to_vec(), &[("custom", "kept")]);
        let a = fs.lookup(ROOT, "f").await.unwrap();
        let t = UNIX_EPOCH + Duration::new(1_600_000_000, 5);
        let got = fs
            .setattr(
                a.ino,
                None,
                MetaChange {
                    mode: Some(0o600),
                    uid: Some(7),
                    gid: Some(8),
                    mtime: Some(t),
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!((got.perm, got.uid, got.gid, got.mtime), (0o600, 7, 8, t));
        let meta = store.head("f").await.unwrap().user_meta.unwrap();
        assert_eq!(meta["mode"], "33152");
        assert_eq!(meta["mtime"], "1600000000.000000005");
        assert_eq!(meta["custom"], "kept");
        assert_eq!(&store.body("f").unwrap()[..], b"data");
    }

    #[tokio::test]
    async fn truncate_without_open_and_append() {
        let (store, fs) = fs();
        let ino = write_file(&fs, ROOT, "t", b"0123456789").await;
        fs.setattr(ino, Some(4), MetaChange::default(), None)
            .await
            .unwrap();
        assert_eq!(&store.body("t").unwrap()[..], b"0123");
        let o = fs.open(ino, true, false, 1).await.unwrap();
        fs.write(o.fh, 4, b"++", 1).await.unwrap();
        fs.fsync(ino).await.unwrap();
        fs.release(ino, o.fh).await.unwrap();
        assert_eq!(&store.body("t").unwrap()[..], b"0123++");
    }

    #[tokio::test]
    async fn unlinked_open_file_reads_until_close() {
        let (store, fs) = fs();
        store.insert("u", b"still here".to_vec(), &[]);
        let a = fs.lookup(ROOT, "u").await.unwrap();
        let o = fs.open(a.ino, false, false, 1).await.unwrap();
        fs.unlink(ROOT, "u").await.unwrap();
        assert!(matches!(fs.lookup(ROOT, "u").await, Err(FsError::NotFound)));
        assert_eq!(&fs.read(o.fh, 0, 100).await.unwrap()[..], b"still here");
        fs.release(a.ino, o.fh).await.unwrap();
        assert!(store.body("u").is_none());
    }

    #[tokio::test]
    async fn symlinks_and_xattrs() {
        let (store, fs) = fs();
        let l = fs.symlink(ROOT, "ln", b"target/file", ME).await.unwrap();
        assert_eq!(l.kind, Kind::Symlink);
        assert_eq!(&store.body("ln").unwrap()[..], b"target/file");
        assert_eq!(
            store.head("ln").await.unwrap().user_meta.unwrap()["mode"],
            "41471"
        );
        let ino = write_file(&fs, ROOT, "x", b"1").await;
        fs.setxattr(ino, "user.color", b"blue", 0).await.unwrap();
        assert_eq!(fs.getxattr(ino, "user.color").await.unwrap(), b"blue");
        assert_eq!(fs.listxattr(ino).await.unwrap(), b"user.color\0");
        assert!(matches!(
            fs.setxattr(ino, "user.color", b"x", libc::XATTR_CREATE)
                .await,
            Err(FsError::Exists)
        ));
        assert!(matches!(
            fs.setxattr(ino, "trusted.x", b"x", 0).await,
            Err(FsError::NotSupported)
        ));
        assert!(store.head("x").await.unwrap().user_meta.unwrap()["xattr"].contains("user.color"));
        fs.removexattr(ino, "user.color").await.unwrap();
        assert!(matches!(
            fs.getxattr(ino, "user.color").await,
            Err(FsError::NoAttr)
        ));
    }
}
