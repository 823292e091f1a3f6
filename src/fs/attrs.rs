//! Attributes and extended attributes: chmod, chown, utimes, truncate, set-id bits, xattrs.
//! A change to a file with pending writes goes into its pending state, so that its commit
//! keeps it; otherwise the object's headers are rewritten in place (CopyObject, metadata
//! REPLACE), and the inode and open readers take the object's new version.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use super::meta::{self, Kind, MetaChange};
use super::{Fs, xattr};
use crate::error::FsError;
use crate::store::{ObjectStore, StoreError};

impl<S: ObjectStore> Fs<S> {
    /// A write by a process without CAP_FSETID clears set-user-ID and set-group-ID, as on any
    /// filesystem (the kernel leaves this to us, so it need not ask for security.capability
    /// before every write).
    pub async fn kill_suidgid(&self, ino: u64) -> Result<(), FsError> {
        let perm = {
            let inodes = self.ns.inodes.lock();
            let node = inodes.get(ino).ok_or(FsError::NotFound)?;
            node.found.meta.perm
        };
        match perm {
            Some(p) if p & 0o6000 != 0 => {
                let change = MetaChange {
                    mode: Some(u32::from(p) & !0o6000),
                    ..MetaChange::default()
                };
                self.setattr(ino, None, change, None).await.map(|_| ())
            }
            _ => Ok(()),
        }
    }

    /// The key holding an entry's metadata: the object, or a directory's marker (`None` for the
    /// mount's root, which has nowhere to keep it).
    fn meta_key(&self, path: &str, kind: Kind) -> Result<Option<String>, FsError> {
        match kind {
            Kind::Dir if path.is_empty() => Ok(None),
            Kind::Dir => Ok(Some(self.keys.dir(path))),
            _ => self.keys.file(path).map(Some),
        }
    }

    /// Rewrites an object's metadata in place (CopyObject with REPLACE), keeping every other
    /// header; a directory without a marker gets one. Returns the object's new ETag and size.
    async fn rewrite_meta(
        &self,
        path: &str,
        kind: Kind,
        change: impl FnOnce(&mut HashMap<String, String>),
    ) -> Result<Option<(String, u64)>, FsError> {
        let Some(key) = self.meta_key(path, kind)? else {
            return Ok(None);
        };
        let etag = match self.store.head(&key).await {
            Ok(obj) => {
                let mut opts = obj.put_options();
                change(&mut opts.user_meta);
                if kind == Kind::Dir && obj.size == 0 {
                    // A marker has no content: writing it again is simpler than a copy onto
                    // itself, which some stores cannot do for `dir/` keys.
                    (self.store.put(&key, Bytes::new(), opts).await?, 0)
                } else {
                    let etag = self
                        .copy_any(&key, &key, obj.size, &obj.etag, Some(opts))
                        .await?;
                    (etag, obj.size)
                }
            }
            Err(StoreError::NotFound) if kind == Kind::Dir => {
                // A directory without a marker gets one, carrying just the change.
                let mut opts = meta::object_options(Kind::Dir, &MetaChange::default());
                change(&mut opts.user_meta);
                let etag = self.store.put(&key, Bytes::new(), opts).await?;
                self.ns.add_marker(key);
                (etag, 0)
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Some(etag))
    }

    /// Applies a metadata change (mode, owner, times, xattrs) to a file: to its pending state
    /// when it has one, so that its later commit keeps the change, and to the object right
    /// away unless that commit is still to come. The object's new version (a copy onto itself
    /// has a new ETag) becomes what the inode and open handles expect.
    async fn change_meta(
        &self,
        ino: u64,
        path: &str,
        kind: Kind,
        mtime: Option<SystemTime>,
        change: impl Fn(&mut HashMap<String, String>),
    ) -> Result<(), FsError> {
        let pending = self.files.write_of(ino);
        if let Some(state) = &pending {
            if state.is_changed().await {
                state
                    .update_meta(|m, t| {
                        change(&mut m.user_meta);
                        if let Some(new) = mtime {
                            *t = new;
                        }
                    })
                    .await;
                return Ok(());
            }
        }
        let Some((etag, size)) = self.rewrite_meta(path, kind, &change).await? else {
            return Ok(());
        };
        // A copy onto itself may keep the ETag and, within a second, Last-Modified: what a
        // HEAD said before must not fill later listings.
        if let Some(key) = self.meta_key(path, kind)? {
            self.ns.forget_meta(&key);
        }
        if let Some(state) = pending {
            state
                .meta_rewritten(|m| change(&mut m.user_meta), &etag)
                .await;
        }
        if kind != Kind::Dir {
            if let Some(node) = self.ns.inodes.lock().get_mut(ino) {
                node.found.etag = etag.clone();
                node.open_etag = None;
            }
            self.retarget(ino, &self.keys.file(path)?, &etag, size);
        }
        Ok(())
    }

    pub async fn setattr(
        &self,
        ino: u64,
        size: Option<u64>,
        change: MetaChange,
        fh: Option<u64>,
    ) -> Result<super::Attr, FsError> {
        self.check_writable()?;
        let (path, kind) = self.node_path(ino)?;
        if let Some(size) = size {
            if kind == Kind::Dir {
                return Err(FsError::IsDir);
            }
            let state = self.write_state(ino, &path, false).await?;
            state.truncate(size).await?;
            let handle = fh.and_then(|fh| self.handles.lock().get(&fh).cloned());
            if let Some(h) = &handle {
                // ftruncate: the close of this descriptor commits, as after a write.
                h.dirtied.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if handle.is_none() {
                // truncate(2) on a path: in the bucket when it returns, as there is no close
                // of this caller's to wait for (other descriptors share the committed state).
                let r = self.commit_ino(ino).await;
                self.files.drop_write_if_closed(ino);
                r?;
            }
        }
        if !change.is_empty() {
            self.change_meta(ino, &path, kind, change.mtime, |m| change.apply(m, kind))
                .await?;
        }
        let mut inodes = self.ns.inodes.lock();
        let node = inodes.get_mut(ino).ok_or(FsError::NotFound)?;
        change.apply_attrs(&mut node.found.meta);
        node.found.has_meta = true;
        // What this mount just did is the freshest knowledge there is (READDIRPLUS compares).
        node.valid_until = Instant::now() + self.cfg.metadata_ttl;
        if let Some(s) = size {
            node.found.size = s;
        }
        let found = node.found.clone();
        let path = node.path.clone();
        drop(inodes);
        self.ns.listing_set(&path, Some(found.clone()));
        Ok(self.attr_of(ino, &self.overlay(ino, found)))
    }

    async fn xattrs(&self, ino: u64) -> Result<BTreeMap<String, Vec<u8>>, FsError> {
        let (path, kind) = self.node_path(ino)?;
        if let Some(state) = self.files.write_of(ino) {
            return Ok(xattr::decode(
                state.meta().await.user_meta.get(xattr::HEADER),
            ));
        }
        let Some(key) = self.meta_key(&path, kind)? else {
            return Ok(BTreeMap::new());
        };
        match self.store.head(&key).await {
            Ok(obj) => Ok(xattr::decode(
                obj.user_meta.as_ref().and_then(|m| m.get(xattr::HEADER)),
            )),
            Err(StoreError::NotFound) if kind == Kind::Dir => Ok(BTreeMap::new()),
            Err(e) => Err(e.into()),
        }
    }

    async fn save_xattrs(&self, ino: u64, attrs: BTreeMap<String, Vec<u8>>) -> Result<(), FsError> {
        let (path, kind) = self.node_path(ino)?;
        let set = |m: &mut HashMap<String, String>| match xattr::encode(&attrs) {
            Some(v) => {
                m.insert(xattr::HEADER.into(), v);
            }
            None => {
                m.remove(xattr::HEADER);
            }
        };
        self.change_meta(ino, &path, kind, None, set).await
    }

    pub async fn getxattr(&self, ino: u64, name: &str) -> Result<Vec<u8>, FsError> {
        // Only `user.` attributes exist here. Saying so (ENOTSUP rather than "no such
        // attribute") lets `ls -l` stop asking every file for its SELinux label and ACL: it
        // remembers per filesystem that they are unsupported.
        if !name.starts_with("user.") {
            return Err(FsError::NotSupported);
        }
        self.xattrs(ino).await?.remove(name).ok_or(FsError::NoAttr)
    }

    /// Names, each followed by a NUL, as listxattr(2) returns them.
    pub async fn listxattr(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        let mut out = Vec::new();
        for name in self.xattrs(ino).await?.keys() {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    pub async fn setxattr(
        &self,
        ino: u64,
        name: &str,
        value: &[u8],
        flags: i32,
    ) -> Result<(), FsError> {
        self.check_writable()?;
        if !name.starts_with("user.") {
            return Err(FsError::NotSupported);
        }
        let mut attrs = self.xattrs(ino).await?;
        let exists = attrs.contains_key(name);
        if flags & libc::XATTR_CREATE != 0 && exists {
            return Err(FsError::Exists);
        }
        if flags & libc::XATTR_REPLACE != 0 && !exists {
            return Err(FsError::NoAttr);
        }
        attrs.insert(name.to_string(), value.to_vec());
        self.save_xattrs(ino, attrs).await
    }

    pub async fn removexattr(&self, ino: u64, name: &str) -> Result<(), FsError> {
        self.check_writable()?;
        let mut attrs = self.xattrs(ino).await?;
        attrs.remove(name).ok_or(FsError::NoAttr)?;
        self.save_xattrs(ino, attrs).await
    }
}
