//! The filesystem logic: paths onto keys, attributes, listings and open handles. It never sees
//! fuser types; the adapter in `fuse.rs` turns its results into replies.

mod attrs;
pub mod files;
pub mod inode;
pub mod meta;
pub mod names;
pub mod namespace;
mod process;
pub mod write;
pub mod xattr;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;

use crate::cache::{BlockCache, PrefetchConfig, Prefetcher};
use crate::error::FsError;
use crate::store::{ObjectInfo, ObjectStore, StoreError};
use crate::upload::state::Budget;
use files::Files;
use inode::ROOT;
pub use meta::Kind;
use meta::MetaAttrs;
use names::Keys;
use namespace::{Listing, Namespace};

/// HEADs in flight at once when a listing is completed with object metadata.
const STAT_CONCURRENCY: usize = 32;
/// A symlink's target is at most this long (PATH_MAX): a larger "symlink" object is not read.
const MAX_SYMLINK: u64 = 4096;

#[derive(Debug, Clone)]
pub struct FsConfig {
    pub prefix: String,
    pub uid: u32,
    pub gid: u32,
    /// `uid=`/`gid=` given: they override the owner stored in object metadata.
    pub force_owner: bool,
    pub file_mode: u16,
    pub dir_mode: u16,
    pub umask: u16,
    pub metadata_ttl: Duration,
    pub read_only: bool,
    /// Listings with at most this many objects are completed with a HEAD each, so `ls -l` shows
    /// modes, owners and symlinks; larger ones show listing data only (sizes, times).
    pub list_stat_limit: usize,
    pub prefetch: PrefetchConfig,
    pub cache_bytes: usize,
    /// Where writes are staged (unnamed files, gone when closed).
    pub tmp_dir: PathBuf,
    /// Part uploads in flight per file being written (each holds one part in memory).
    pub max_inflight_parts: usize,
    /// Local staging space for writes, all files together; beyond it writes fail with ENOSPC.
    pub tmp_size: u64,
    /// Extended attributes (s3fs's `x-amz-meta-xattr`); off, every xattr call is ENOSYS.
    pub xattr: bool,
    /// File data bypasses the kernel page cache (`-o direct_io`): a file read once is not
    /// cached twice, at the price of re-reads coming from the block cache or the store.
    pub direct_io: bool,
}

impl Default for FsConfig {
    fn default() -> Self {
        FsConfig {
            prefix: String::new(),
            uid: 0,
            gid: 0,
            force_owner: false,
            file_mode: 0o644,
            dir_mode: 0o755,
            umask: 0,
            metadata_ttl: Duration::from_secs(1),
            read_only: false,
            list_stat_limit: 1000,
            prefetch: PrefetchConfig::default(),
            cache_bytes: 64 << 20,
            tmp_dir: std::env::temp_dir(),
            max_inflight_parts: 4,
            tmp_size: u64::MAX,
            xattr: true,
            direct_io: false,
        }
    }
}

/// What a path is in the bucket, as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub kind: Kind,
    pub size: u64,
    pub etag: String,
    pub last_modified: SystemTime,
    pub meta: MetaAttrs,
    /// Whether `meta` came from the object's headers (a HEAD), not just a listing.
    pub has_meta: bool,
}

impl Found {
    /// A directory (or, in tests, anything) known only by keys under it.
    pub fn implicit(kind: Kind) -> Self {
        Found {
            kind,
            size: 0,
            etag: String::new(),
            last_modified: SystemTime::UNIX_EPOCH,
            meta: MetaAttrs::default(),
            has_meta: false,
        }
    }

    fn from_object(o: &ObjectInfo, is_dir: bool) -> Self {
        let (meta, has_meta) = match &o.user_meta {
            Some(m) => (meta::parse(m, is_dir), true),
            None => (MetaAttrs::default(), false),
        };
        let kind = if is_dir {
            Kind::Dir
        } else if meta.symlink {
            Kind::Symlink
        } else {
            Kind::File
        };
        Found {
            kind,
            size: if is_dir { 0 } else { o.size },
            etag: o.etag.clone(),
            last_modified: o.last_modified,
            meta,
            has_meta,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// How long the kernel may keep these: what is left of the validity of what they came
    /// from, so that an expiry never slides forward on use.
    pub valid: Duration,
}

#[derive(Debug, Clone)]
pub struct DirItem {
    pub name: String,
    pub kind: Kind,
    pub ino: u64,
}

struct DirHandle {
    ino: u64,
    parent: u64,
    entries: Vec<(String, Found)>,
    /// Until when the listing the entries came from is fresh.
    until: Instant,
}

/// One open file description. Reads go to the file's pending content while it has one (so
/// every descriptor sees what any of them wrote), else to the object version seen at open.
struct FileHandle<S> {
    ino: u64,
    /// Opened for reading with nothing pending: reads one version of the object.
    reader: Option<Prefetcher<S>>,
    /// Threads that wrote through this handle: a close by any other process (a child closing
    /// an inherited descriptor, a reader) does not commit a file in the middle of being written.
    writers: Mutex<Vec<u32>>,
    /// The open created or emptied the file (or an ftruncate through it did): its close
    /// commits even without a write.
    dirtied: std::sync::atomic::AtomicBool,
}

pub struct Opened {
    pub fh: u64,
    /// The kernel may keep the pages it cached from an earlier open (same ETag).
    pub keep_cache: bool,
    /// The kernel must not cache this handle's data at all.
    pub direct_io: bool,
}

pub struct Fs<S> {
    store: Arc<S>,
    cfg: FsConfig,
    keys: Keys,
    mounted_at: SystemTime,
    /// Inodes, listings and the other name-level caches.
    ns: Namespace,
    cache: Arc<BlockCache>,
    /// Open file descriptions by handle number.
    handles: Mutex<HashMap<u64, Arc<FileHandle<S>>>>,
    dirs: Mutex<HashMap<u64, Arc<DirHandle>>>,
    next_fh: AtomicU64,
    /// Per-file state (pending writes, open count, orphaned files), keyed by inode.
    files: Files<S>,
    budget: Arc<Budget>,
    /// Uploads that failed where no syscall could report them (a last close whose result the
    /// kernel ignores): reported at unmount.
    failed: Mutex<Vec<(String, FsError)>>,
}

impl<S: ObjectStore> Fs<S> {
    pub fn new(store: Arc<S>, cfg: FsConfig) -> Self {
        let keys = Keys::new(&cfg.prefix);
        let mounted_at = SystemTime::now();
        let mut root = Found::implicit(Kind::Dir);
        root.last_modified = mounted_at;
        Fs {
            store,
            keys,
            mounted_at,
            ns: Namespace::new(root),
            cache: Arc::new(BlockCache::new(
                cfg.cache_bytes,
                cfg.prefetch.block_size as usize,
            )),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            files: Files::new(),
            budget: Budget::new(cfg.tmp_size),
            failed: Mutex::new(Vec::new()),
            cfg,
        }
    }

    pub fn config(&self) -> &FsConfig {
        &self.cfg
    }

    pub fn ttl(&self) -> Duration {
        self.cfg.metadata_ttl
    }

    pub fn direct_io(&self) -> bool {
        self.cfg.direct_io
    }

    fn fresh_until(&self) -> Instant {
        Instant::now() + self.cfg.metadata_ttl
    }

    pub fn attr_of(&self, ino: u64, f: &Found) -> Attr {
        let default_perm = match f.kind {
            Kind::Dir => self.cfg.dir_mode,
            Kind::File => self.cfg.file_mode,
            Kind::Symlink => 0o777,
        };
        let perm = f.meta.perm.unwrap_or(default_perm) & !self.cfg.umask;
        let (uid, gid) = if self.cfg.force_owner {
            (self.cfg.uid, self.cfg.gid)
        } else {
            (
                f.meta.uid.unwrap_or(self.cfg.uid),
                f.meta.gid.unwrap_or(self.cfg.gid),
            )
        };
        let mtime = f
            .meta
            .mtime
            .unwrap_or(if f.last_modified == SystemTime::UNIX_EPOCH {
                self.mounted_at
            } else {
                f.last_modified
            });
        Attr {
            ino,
            kind: f.kind,
            size: f.size,
            mtime,
            perm,
            uid,
            gid,
            valid: self.cfg.metadata_ttl,
        }
    }

    /// `attr_of`, valid for the kernel only as long as its source is.
    fn attr_until(&self, ino: u64, f: &Found, until: Instant) -> Attr {
        Attr {
            valid: until.saturating_duration_since(Instant::now()),
            ..self.attr_of(ino, f)
        }
    }

    fn node_path(&self, ino: u64) -> Result<(String, Kind), FsError> {
        let inodes = self.ns.inodes.lock();
        let node = inodes.get(ino).ok_or(FsError::NotFound)?;
        Ok((node.path.clone(), node.found.kind))
    }

    fn dir_path(&self, ino: u64) -> Result<String, FsError> {
        match self.node_path(ino)? {
            (p, Kind::Dir) => Ok(p),
            _ => Err(FsError::NotDir),
        }
    }

    /// What the caches already say about `parent/name`, without a request, and until when.
    fn cached(
        &self,
        parent_path: &str,
        name: &str,
        path: &str,
    ) -> Option<Result<(Found, Instant), FsError>> {
        let now = Instant::now();
        {
            let inodes = self.ns.inodes.lock();
            if let Some(ino) = inodes.by_path(path) {
                let node = inodes.get(ino).expect("by_path and nodes agree");
                if self.files.has_write(ino) {
                    // Our own pending state is the truth, whatever the bucket says.
                    let until = node.valid_until.max(self.fresh_until());
                    return Some(Ok((self.overlay(ino, node.found.clone()), until)));
                }
                if node.valid_until > now {
                    return Some(Ok((node.found.clone(), node.valid_until)));
                }
            }
        }
        if self.ns.is_negative(path, now) {
            return Some(Err(FsError::NotFound));
        }
        let (until, listing) = self.ns.listing(parent_path, now)?;
        Some(
            listing
                .get(name)
                .cloned()
                .map(|f| (f, until))
                .ok_or(FsError::NotFound),
        )
    }

    /// Asks the bucket what `path` is: a directory (a marker or keys under it) wins over an
    /// object of the same name.
    async fn resolve(&self, path: &str) -> Result<Found, FsError> {
        if path.is_empty() {
            return Ok(self.ns.inodes.lock().get(ROOT).expect("root").found.clone());
        }
        let file_key = self.keys.file(path)?;
        let dir_key = self.keys.dir(path);
        let (mut head, list) = tokio::join!(
            self.store.head(&file_key),
            self.store.list(&dir_key, true, None, Some(1)),
        );
        if head
            .as_ref()
            .is_ok_and(|o| self.files.is_hidden(&file_key, &o.etag))
        {
            head = Err(StoreError::NotFound);
        }
        let list = list?;
        let first_key = list
            .objects
            .first()
            .map(|o| o.key.as_str())
            .or(list.prefixes.first().map(String::as_str));
        if let Some(first) = first_key {
            if head.is_ok() {
                self.ns
                    .warn_once(&file_key, "an object and a directory share this name");
            }
            if first == dir_key {
                if let Ok(marker) = self.store.head(&dir_key).await {
                    return Ok(Found::from_object(&marker, true));
                }
            }
            let mut f = Found::implicit(Kind::Dir);
            f.last_modified = self.mounted_at;
            return Ok(f);
        }
        match head {
            Ok(obj) => {
                let is_dir = meta::is_dir_content_type(obj.content_type.as_deref());
                let found = Found::from_object(&obj, is_dir);
                self.ns.remember_meta(&obj.key, &found);
                Ok(found)
            }
            Err(StoreError::NotFound) => Err(FsError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Attr, FsError> {
        names::check_name(name)?;
        let parent_path = self.dir_path(parent)?;
        let path = names::join(&parent_path, name);
        self.keys.file(&path)?;
        let (found, until) = match self.cached(&parent_path, name, &path) {
            Some(r) => r?,
            None => match self.resolve(&path).await {
                Ok(f) => (f, self.fresh_until()),
                Err(FsError::NotFound) => {
                    self.ns.set_negative(path, self.fresh_until());
                    return Err(FsError::NotFound);
                }
                Err(e) => return Err(e),
            },
        };
        let ino = self
            .ns
            .inodes
            .lock()
            .upsert(&path, found.clone(), until, true);
        Ok(self.attr_until(ino, &self.overlay(ino, found), until))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        self.ns.inodes.lock().forget(ino, n);
    }

    pub async fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let path = {
            let inodes = self.ns.inodes.lock();
            let node = inodes.get(ino).ok_or(FsError::NotFound)?;
            if self.files.has_write(ino) {
                return Ok(self.attr_of(ino, &self.overlay(ino, node.found.clone())));
            }
            if ino == ROOT || node.valid_until > Instant::now() {
                let until = node.valid_until.max(Instant::now());
                return Ok(self.attr_until(ino, &node.found, until));
            }
            if self.files.is_orphan(ino) {
                // Unlinked while open: its path is another file's now, or nothing (fstat on
                // the descriptor, and the kernel before a read, still ask).
                return Ok(self.attr_until(ino, &node.found, Instant::now()));
            }
            node.path.clone()
        };
        let found = self.resolve(&path).await?;
        let mut inodes = self.ns.inodes.lock();
        if let Some(node) = inodes.get_mut(ino) {
            if node.found.kind == found.kind {
                node.found = found.clone();
                node.valid_until = self.fresh_until();
                return Ok(self.attr_of(ino, &found));
            }
        }
        // The path is now something else; this inode is stale.
        Err(FsError::NotFound)
    }

    /// Lists a directory, completing small listings with each object's metadata.
    async fn list_dir(&self, path: &str) -> Result<Arc<Listing>, FsError> {
        let prefix = self.keys.dir(path);
        let mut dirs: BTreeMap<String, Found> = BTreeMap::new();
        let mut files: Vec<(String, Found, String)> = Vec::new();
        let mut token = None;
        loop {
            let page = self.store.list(&prefix, true, token, None).await?;
            for p in &page.prefixes {
                let name = p[prefix.len()..].strip_suffix('/').unwrap_or("");
                if !names::showable(name) {
                    self.ns
                        .warn_once(p, "key has an empty, '.', '..' or over-long segment");
                    continue;
                }
                let mut f = Found::implicit(Kind::Dir);
                f.last_modified = self.mounted_at;
                self.ns.known_meta(p, &mut f);
                dirs.insert(name.to_string(), f);
            }
            for o in &page.objects {
                if o.key == prefix {
                    continue; // this directory's own marker
                }
                let name = &o.key[prefix.len()..];
                if !names::showable(name) || name.ends_with('/') {
                    self.ns
                        .warn_once(&o.key, "key cannot be shown as a file name");
                    continue;
                }
                let mut f = Found::from_object(o, false);
                self.ns.known_meta(&o.key, &mut f);
                files.push((name.to_string(), f, o.key.clone()));
            }
            token = page.next_token;
            if token.is_none() {
                break;
            }
        }
        files.retain(|(_, f, key)| !self.files.is_hidden(key, &f.etag));
        files.retain(|(name, _, key)| {
            let clash = dirs.contains_key(name);
            if clash {
                self.ns
                    .warn_once(key, "an object and a directory share this name");
            }
            !clash
        });

        let unknown = files.iter().filter(|(_, f, _)| !f.has_meta).count()
            + dirs.values().filter(|f| !f.has_meta).count();
        if unknown > 0 && unknown <= self.cfg.list_stat_limit {
            self.complete_metadata(&prefix, &mut files, &mut dirs).await;
        }
        let mut listing: Listing = dirs;
        for (name, f, _) in files {
            listing.insert(name, f);
        }
        // Files created or being written here that the bucket does not show yet.
        let pending = self.files.pending();
        {
            let inodes = self.ns.inodes.lock();
            for (ino, _) in pending {
                let Some(node) = inodes.get(ino) else {
                    continue;
                };
                let (parent, name) = node.path.rsplit_once('/').unwrap_or(("", &node.path));
                if parent == path && inodes.by_path(&node.path) == Some(ino) {
                    listing.insert(name.to_string(), self.overlay(ino, node.found.clone()));
                }
            }
        }
        let listing = Arc::new(listing);
        self.ns
            .remember_listing(path, listing.clone(), self.fresh_until());
        Ok(listing)
    }

    async fn complete_metadata(
        &self,
        prefix: &str,
        files: &mut [(String, Found, String)],
        dirs: &mut BTreeMap<String, Found>,
    ) {
        let file_heads = files
            .iter()
            .enumerate()
            .filter(|(_, (_, f, _))| !f.has_meta)
            .map(|(i, (_, _, key))| (Some(i), key.clone()));
        let dir_heads = dirs
            .iter()
            .filter(|(_, f)| !f.has_meta)
            .map(|(name, _)| (None, format!("{prefix}{name}/")));
        let heads: Vec<(Option<usize>, String)> = file_heads.chain(dir_heads).collect();
        let results: Vec<_> = futures::stream::iter(heads)
            .map(|(i, key)| async move { (i, self.store.head(&key).await, key) })
            .buffer_unordered(STAT_CONCURRENCY)
            .collect()
            .await;
        for (i, res, key) in results {
            let Ok(obj) = res else { continue };
            match i {
                Some(i) => {
                    let is_dir = meta::is_dir_content_type(obj.content_type.as_deref());
                    let f = Found::from_object(&obj, is_dir);
                    self.ns.remember_meta(&key, &f);
                    files[i].1 = f;
                }
                None => {
                    let name = key[prefix.len()..].trim_end_matches('/');
                    let f = Found::from_object(&obj, true);
                    self.ns.remember_meta(&key, &f);
                    dirs.insert(name.to_string(), f);
                }
            }
        }
    }

    pub async fn opendir(&self, ino: u64) -> Result<u64, FsError> {
        let path = self.dir_path(ino)?;
        let listing = self.list_dir(&path).await?;
        let parent = if ino == ROOT {
            ROOT
        } else {
            let parent_path = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
            self.ns.inodes.lock().by_path(parent_path).unwrap_or(ROOT)
        };
        let entries = listing
            .iter()
            .map(|(n, f)| (n.clone(), f.clone()))
            .collect();
        let until = self.ns.listing_until(&path).unwrap_or_else(Instant::now);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().insert(
            fh,
            Arc::new(DirHandle {
                ino,
                parent,
                entries,
                until,
            }),
        );
        Ok(fh)
    }

    /// At most `max` entries from `offset` on (offsets count `.` and `..`); each item's offset is
    /// its index + 1. The kernel asks page by page, so each call builds only what fits.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        max: usize,
    ) -> Result<Vec<(u64, DirItem)>, FsError> {
        let dir = self.dir_handle(fh)?;
        let inodes = self.ns.inodes.lock();
        let dir_path = inodes
            .get(dir.ino)
            .map(|n| n.path.clone())
            .unwrap_or_default();
        let dots = [(".", dir.ino), ("..", dir.parent)].map(|(n, ino)| DirItem {
            name: n.to_string(),
            kind: Kind::Dir,
            ino,
        });
        let offset = offset as usize;
        let skip_entries = offset.saturating_sub(2);
        let items =
            dots.into_iter()
                .skip(offset.min(2))
                .chain(dir.entries.iter().skip(skip_entries).map(|(name, f)| {
                    let path = names::join(&dir_path, name);
                    DirItem {
                        name: name.clone(),
                        kind: f.kind,
                        ino: inodes
                            .by_path(&path)
                            .unwrap_or_else(|| synthetic_ino(&path)),
                    }
                }));
        Ok(items
            .take(max)
            .enumerate()
            .map(|(i, item)| ((offset + i) as u64 + 1, item))
            .collect())
    }

    /// For READDIRPLUS: the attributes of the entry at `offset` (as `readdir` numbers them, so
    /// not `.` or `..`), counting a kernel lookup for it. What the inode knows is kept when it
    /// is fresher than the snapshot taken at opendir (a chmod since, a file being written).
    pub fn readdir_entry(&self, fh: u64, offset: u64) -> Result<Attr, FsError> {
        let dir = self.dir_handle(fh)?;
        let index = (offset as usize).checked_sub(3).ok_or(FsError::Invalid)?;
        let (name, found) = dir.entries.get(index).cloned().ok_or(FsError::NotFound)?;
        let mut inodes = self.ns.inodes.lock();
        let dir_path = inodes
            .get(dir.ino)
            .map(|n| n.path.clone())
            .unwrap_or_default();
        let path = names::join(&dir_path, &name);
        if let Some(ino) = inodes.by_path(&path) {
            let node = inodes.get_mut(ino).expect("by_path and nodes agree");
            let pending = self.files.has_write(ino);
            if node.found.kind == found.kind && (pending || node.valid_until >= dir.until) {
                node.lookups += 1;
                let (known, until) = (node.found.clone(), node.valid_until);
                drop(inodes);
                return Ok(if pending {
                    self.attr_of(ino, &self.overlay(ino, known))
                } else {
                    self.attr_until(ino, &known, until)
                });
            }
        }
        let ino = inodes.upsert(&path, found.clone(), dir.until, true);
        Ok(self.attr_until(ino, &found, dir.until))
    }

    /// The attributes of `.`/`..` for READDIRPLUS (no lookup is counted for them).
    pub fn dot_attr(&self, ino: u64) -> Attr {
        let inodes = self.ns.inodes.lock();
        match inodes.get(ino) {
            Some(n) => self.attr_of(ino, &n.found),
            None => self.attr_of(ino, &Found::implicit(Kind::Dir)),
        }
    }

    fn dir_handle(&self, fh: u64) -> Result<Arc<DirHandle>, FsError> {
        self.dirs.lock().get(&fh).cloned().ok_or(FsError::BadHandle)
    }

    fn file_handle(&self, fh: u64) -> Result<Arc<FileHandle<S>>, FsError> {
        self.handles
            .lock()
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().remove(&fh);
    }

    /// Opens a file for thread `pid`. Writing (or `O_TRUNC`) stages the file's content, and a
    /// file `pid` empties is its process's to commit at close; reading revalidates the object
    /// (close-to-open) unless the inode has pending writes, which reads then see.
    pub async fn open(
        &self,
        ino: u64,
        write: bool,
        truncate: bool,
        pid: u32,
    ) -> Result<Opened, FsError> {
        // Counted from the start: a last close racing this open must not drop the pending
        // state this open is about to share.
        self.files.opened(ino);
        let r = self.open_counted(ino, write, truncate, pid).await;
        if r.is_err() && self.files.closed(ino) {
            if let Some(last) = self.files.take_if_closed(ino) {
                // As a last close would, an unlinked file's deferred delete included.
                if let Err(e) = self.finish_last(last, true).await {
                    tracing::warn!(ino, "after a failed open: {e}");
                }
            }
        }
        r
    }

    async fn open_counted(
        &self,
        ino: u64,
        write: bool,
        truncate: bool,
        pid: u32,
    ) -> Result<Opened, FsError> {
        let (path, found, fresh) = {
            let inodes = self.ns.inodes.lock();
            let node = inodes.get(ino).ok_or(FsError::NotFound)?;
            (
                node.path.clone(),
                node.found.clone(),
                node.valid_until > Instant::now() && !node.found.etag.is_empty(),
            )
        };
        if found.kind == Kind::Dir {
            return Err(FsError::IsDir);
        }
        if write || truncate {
            if self.cfg.read_only {
                return Err(FsError::ReadOnly);
            }
            let state = self.write_state(ino, &path, truncate).await?;
            if truncate {
                state.truncate(0).await?;
            }
            return Ok(self.new_handle(ino, None, truncate.then_some(pid), false));
        }
        if self.files.has_write(ino) {
            return Ok(self.new_handle(ino, None, None, false));
        }
        let key = self.keys.file(&path)?;
        // Close-to-open: a fresh listing or HEAD entry is trusted, anything older is revalidated
        // (and only a HEAD makes it fresh again: an expiry never slides forward on use).
        let (found, headed) = if fresh {
            (found, false)
        } else {
            let obj = self.store.head(&key).await?;
            let f = Found::from_object(&obj, false);
            self.ns.remember_meta(&key, &f);
            (f, true)
        };
        let keep_cache = {
            let mut inodes = self.ns.inodes.lock();
            match inodes.get_mut(ino) {
                Some(node) => {
                    let keep = node.open_etag.as_deref() == Some(found.etag.as_str());
                    node.open_etag = Some(found.etag.clone());
                    if headed && node.found.kind == found.kind {
                        node.found = found.clone();
                        node.valid_until = self.fresh_until();
                    }
                    keep
                }
                None => false,
            }
        };
        let prefetcher = Prefetcher::new(
            self.store.clone(),
            self.cache.clone(),
            self.cfg.prefetch,
            &key,
            &found.etag,
            found.size,
        );
        Ok(self.new_handle(ino, Some(prefetcher), None, keep_cache))
    }

    /// A handle for an open the file table has counted already. `dirtied_by`: the thread that
    /// created or emptied the file through this open, whose process commits it at close.
    fn new_handle(
        &self,
        ino: u64,
        reader: Option<Prefetcher<S>>,
        dirtied_by: Option<u32>,
        keep_cache: bool,
    ) -> Opened {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let h = FileHandle {
            ino,
            reader,
            writers: Mutex::new(dirtied_by.into_iter().collect()),
            dirtied: dirtied_by.is_some().into(),
        };
        self.handles.lock().insert(fh, Arc::new(h));
        Opened {
            fh,
            keep_cache: keep_cache && !self.cfg.direct_io,
            direct_io: self.cfg.direct_io,
        }
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes, FsError> {
        let handle = self.file_handle(fh)?;
        let r = match (self.files.write_of(handle.ino), &handle.reader) {
            (Some(state), _) => state.read(offset, size).await,
            (None, Some(p)) => p.read(offset, size).await,
            (None, None) => Err(FsError::BadHandle),
        };
        // The object an open file reads was deleted behind the mount's back: for read(2) that
        // is a change of the object (EIO), not a missing name.
        r.map_err(|e| match e {
            FsError::NotFound => FsError::Changed,
            e => e,
        })
    }

    /// Open read handles of `ino` follow its object to a new key or version this mount made.
    fn retarget(&self, ino: u64, key: &str, etag: &str, size: u64) {
        for h in self.handles.lock().values() {
            if let (true, Some(p)) = (h.ino == ino, &h.reader) {
                p.retarget(key, etag, size);
            }
        }
    }

    /// Pending size and mtime of an inode being written, over what the bucket said.
    fn overlay(&self, ino: u64, mut found: Found) -> Found {
        if let Some((size, mtime)) = self.files.write_of(ino).and_then(|s| s.hint()) {
            found.size = size;
            found.meta.mtime = Some(mtime);
        }
        found
    }

    pub async fn readlink(&self, ino: u64) -> Result<Bytes, FsError> {
        let (path, found) = {
            let inodes = self.ns.inodes.lock();
            let node = inodes.get(ino).ok_or(FsError::NotFound)?;
            (node.path.clone(), node.found.clone())
        };
        if found.kind != Kind::Symlink {
            return Err(FsError::Invalid);
        }
        let key = self.keys.file(&path)?;
        // The bucket is not trusted: a huge object marked as a symlink is not loaded whole.
        let len = found.size.min(MAX_SYMLINK);
        Ok(crate::store::read_range(&*self.store, &key, 0..len, None).await?)
    }
}

/// A stable inode number for entries the kernel has not looked up (READDIR's `d_ino` only).
fn synthetic_ino(path: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    h.finish() | (1 << 63)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::namespace::LISTINGS_BEFORE_PRUNE;
    use crate::store::memory::MemoryStore;

    type Obj<'a> = (&'a str, &'a [u8], &'a [(&'a str, &'a str)]);

    fn fs_with(objects: &[Obj]) -> (Arc<MemoryStore>, Fs<MemoryStore>) {
        let store = Arc::new(MemoryStore::new());
        for (k, body, meta) in objects {
            store.insert(k, body.to_vec(), meta);
        }
        let fs = Fs::new(
            store.clone(),
            FsConfig {
                uid: 1000,
                gid: 1000,
                ..FsConfig::default()
            },
        );
        (store, fs)
    }

    fn names(fs: &Fs<MemoryStore>, fh: u64) -> Vec<String> {
        fs.readdir(fh, 2, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, i)| i.name)
            .collect()
    }

    #[tokio::test]
    async fn implicit_dirs_markers_and_name_clash() {
        let (_s, fs) = fs_with(&[
            ("a/x", b"1", &[]),
            ("m/", b"", &[]),
            ("both", b"file", &[]),
            ("both/inner", b"2", &[]),
            ("top", b"3", &[]),
            ("bad//key", b"", &[]),
        ]);
        let fh = fs.opendir(ROOT).await.unwrap();
        assert_eq!(names(&fs, fh), ["a", "bad", "both", "m", "top"]);
        assert_eq!(fs.lookup(ROOT, "both").await.unwrap().kind, Kind::Dir);
        assert_eq!(fs.lookup(ROOT, "m").await.unwrap().kind, Kind::Dir);
        let bad = fs.lookup(ROOT, "bad").await.unwrap();
        let fh = fs.opendir(bad.ino).await.unwrap();
        assert!(names(&fs, fh).is_empty(), "the empty segment is skipped");
        assert!(matches!(
            fs.lookup(ROOT, "nope").await,
            Err(FsError::NotFound)
        ));
    }

    #[tokio::test]
    async fn metadata_headers_and_defaults() {
        let (_s, fs) = fs_with(&[
            (
                "exe",
                b"#!",
                &[
                    ("mode", "33261"),
                    ("uid", "7"),
                    ("gid", "8"),
                    ("mtime", "1000"),
                ],
            ),
            ("plain", b"x", &[]),
            ("link", b"exe", &[("mode", "41471")]),
        ]);
        let exe = fs.lookup(ROOT, "exe").await.unwrap();
        assert_eq!((exe.perm, exe.uid, exe.gid), (0o755, 7, 8));
        assert_eq!(
            exe.mtime,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1000)
        );
        let plain = fs.lookup(ROOT, "plain").await.unwrap();
        assert_eq!(
            (plain.perm, plain.uid, plain.kind),
            (0o644, 1000, Kind::File)
        );
        let link = fs.lookup(ROOT, "link").await.unwrap();
        assert_eq!(link.kind, Kind::Symlink);
        assert_eq!(&fs.readlink(link.ino).await.unwrap()[..], b"exe");
    }

    #[tokio::test]
    async fn listing_serves_lookups_without_heads() {
        let objs: Vec<(String, Vec<u8>)> = (0..1500)
            .map(|i| (format!("big/f{i:05}"), vec![1u8; i % 7]))
            .collect();
        let store = Arc::new(MemoryStore::new());
        for (k, b) in &objs {
            store.insert(k, b.clone(), &[]);
        }
        let fs = Fs::new(
            store.clone(),
            FsConfig {
                list_stat_limit: 100,
                ..FsConfig::default()
            },
        );
        let dir = fs.lookup(ROOT, "big").await.unwrap();
        let fh = fs.opendir(dir.ino).await.unwrap();
        assert_eq!(fs.readdir(fh, 0, usize::MAX).unwrap().len(), 1502);
        let page = fs.readdir(fh, 700, 10).unwrap();
        assert_eq!(page.len(), 10);
        assert_eq!(page[0].0, 701, "offsets continue where the kernel left off");
        assert_eq!(page[0].1.name, "f00698");
        let heads = store.counters.head.load(Ordering::Relaxed);
        for i in [0, 700, 1499] {
            let a = fs.lookup(dir.ino, &format!("f{i:05}")).await.unwrap();
            assert_eq!(a.size, (i % 7) as u64);
        }
        assert_eq!(
            store.counters.head.load(Ordering::Relaxed),
            heads,
            "no HEAD per entry"
        );
        assert_eq!(
            store.counters.list.load(Ordering::Relaxed),
            3,
            "1 lookup + 2 pages"
        );
    }

    #[tokio::test]
    async fn small_listings_carry_modes() {
        let (_s, fs) = fs_with(&[
            ("d/run", b"x", &[("mode", "33261")]),
            ("d/ln", b"run", &[("mode", "41471")]),
        ]);
        let d = fs.lookup(ROOT, "d").await.unwrap();
        let fh = fs.opendir(d.ino).await.unwrap();
        let entries = fs.readdir(fh, 2, usize::MAX).unwrap();
        let at = |name: &str| entries.iter().find(|(_, i)| i.name == name).unwrap().0;
        assert_eq!(fs.readdir_entry(fh, at("run")).unwrap().perm, 0o755);
        assert_eq!(fs.readdir_entry(fh, at("ln")).unwrap().kind, Kind::Symlink);
    }

    #[tokio::test]
    async fn prefix_mount_and_names_too_long() {
        let store = Arc::new(MemoryStore::new());
        store.insert("pre/fix/in", b"yes".to_vec(), &[]);
        store.insert("outside", b"no".to_vec(), &[]);
        let fs = Fs::new(
            store,
            FsConfig {
                prefix: "pre/fix".into(),
                ..FsConfig::default()
            },
        );
        let fh = fs.opendir(ROOT).await.unwrap();
        assert_eq!(names(&fs, fh), ["in"]);
        assert!(matches!(
            fs.lookup(ROOT, &"n".repeat(256)).await,
            Err(FsError::NameTooLong)
        ));
    }

    #[tokio::test]
    async fn open_read_and_keep_cache_while_unchanged() {
        let store = Arc::new(MemoryStore::new());
        store.insert("f", b"hello world".to_vec(), &[]);
        let fs = Fs::new(
            store.clone(),
            FsConfig {
                metadata_ttl: Duration::ZERO,
                ..FsConfig::default()
            },
        );
        let a = fs.lookup(ROOT, "f").await.unwrap();
        let o = fs.open(a.ino, false, false, 1).await.unwrap();
        assert!(!o.keep_cache);
        assert_eq!(&fs.read(o.fh, 6, 100).await.unwrap()[..], b"world");
        fs.release(a.ino, o.fh).await.unwrap();
        assert!(fs.open(a.ino, false, false, 1).await.unwrap().keep_cache);
        store.insert("f", b"changed".to_vec(), &[]);
        let o = fs.open(a.ino, false, false, 1).await.unwrap();
        assert!(!o.keep_cache, "a new ETag drops the page cache");
        assert_eq!(&fs.read(o.fh, 0, 100).await.unwrap()[..], b"changed");
    }

    #[tokio::test]
    async fn cached_listings_stay_bounded_over_a_huge_tree() {
        let store = Arc::new(MemoryStore::new());
        let n = LISTINGS_BEFORE_PRUNE + 1000;
        for i in 0..n {
            store.insert(&format!("d{i}/f"), b"x".to_vec(), &[]);
        }
        let fs = Fs::new(
            store,
            FsConfig {
                // All fresh: pruning cannot rely on expiry alone.
                metadata_ttl: Duration::from_secs(3600),
                list_stat_limit: 0,
                ..FsConfig::default()
            },
        );
        for i in 0..n {
            let d = fs.lookup(ROOT, &format!("d{i}")).await.unwrap();
            let fh = fs.opendir(d.ino).await.unwrap();
            fs.releasedir(fh);
            assert!(fs.ns.listings_cached() <= LISTINGS_BEFORE_PRUNE);
        }
        assert_eq!(fs.lookup(ROOT, "d7").await.unwrap().kind, Kind::Dir);
    }

    /// Found by the real-mount model: the kernel asks for the attributes of a file unlinked
    /// while open (before a read, for fstat); they are its own, not ENOENT.
    #[tokio::test]
    async fn a_file_unlinked_while_open_keeps_its_attributes() {
        let store = Arc::new(MemoryStore::new());
        store.insert("b", Vec::new(), &[]);
        let fs = Fs::new(
            store,
            FsConfig {
                metadata_ttl: Duration::ZERO,
                ..FsConfig::default()
            },
        );
        let a = fs.lookup(ROOT, "b").await.unwrap();
        let o = fs.open(a.ino, false, false, 1).await.unwrap();
        fs.unlink(ROOT, "b").await.unwrap();
        assert_eq!(fs.getattr(a.ino).await.unwrap().size, 0);
        assert!(fs.read(o.fh, 0, 1).await.unwrap().is_empty());
        fs.release(a.ino, o.fh).await.unwrap();
    }

    #[tokio::test]
    async fn read_only_refuses_writes() {
        let store = Arc::new(MemoryStore::new());
        store.insert("f", b"x".to_vec(), &[]);
        let fs = Fs::new(
            store,
            FsConfig {
                read_only: true,
                ..FsConfig::default()
            },
        );
        let a = fs.lookup(ROOT, "f").await.unwrap();
        assert!(matches!(
            fs.open(a.ino, true, false, 1).await,
            Err(FsError::ReadOnly)
        ));
        assert!(matches!(fs.unlink(ROOT, "f").await, Err(FsError::ReadOnly)));
    }
}
