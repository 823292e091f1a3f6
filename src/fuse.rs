//! The thin fuser adapter: a request that has to wait is answered from a tokio task, so one slow
//! GET never holds up other requests. No filesystem logic lives here.

use std::ffi::OsStr;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use futures::FutureExt;
use tokio::runtime::Handle;

use crate::error::FsError;
use crate::fs::write::{Caller, MetaChange};
use crate::fs::{Attr, Fs, Kind, Opened};
use crate::store::ObjectStore;

/// Entries prepared per READDIR call; more than fit in the kernel's page-sized buffer.
const READDIR_BATCH: usize = 256;

/// Read-ahead the kernel may do on its own, on top of our prefetcher.
const MAX_READAHEAD: u32 = 1 << 20;

pub struct FuseAdapter<S> {
    fs: Arc<Fs<S>>,
    rt: Handle,
    inflight: Arc<AtomicUsize>,
}

impl<S> FuseAdapter<S> {
    pub fn new(fs: Arc<Fs<S>>, rt: Handle) -> Self {
        FuseAdapter {
            fs,
            rt,
            inflight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Requests still being answered; unmount waits for them (an upload at close, say).
    pub fn inflight(&self) -> Arc<AtomicUsize> {
        self.inflight.clone()
    }
}

fn kind(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: SystemTime::UNIX_EPOCH,
        kind: kind(a.kind),
        perm: a.perm,
        nlink: if a.kind == Kind::Dir { 2 } else { 1 },
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 1 << 20,
        flags: 0,
    }
}

/// Seconds since the epoch of the last "access denied" warning.
static DENIED_LOGGED: AtomicU64 = AtomicU64::new(0);

fn errno(op: &str, e: &FsError) -> Errno {
    if e.is_expected() {
        tracing::debug!(op, error = %e);
    } else if let FsError::AccessDenied(_) = e {
        // A revoked key fails every request: one clear line a minute, not one per operation.
        let now = std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_secs());
        let last = DENIED_LOGGED.load(Ordering::Relaxed);
        if now >= last + 60
            && DENIED_LOGGED
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                op,
                "the store refuses our credentials ({e}); operations fail with EACCES until they are fixed (send SIGHUP after rotating a key)"
            );
        } else {
            tracing::debug!(op, error = %e);
        }
    } else {
        tracing::warn!(op, error = %e);
    }
    Errno::from_i32(e.errno())
}

/// A name from the kernel; one that cannot be a key gets the same errno in every operation.
fn name_of(name: &OsStr) -> Result<String, Errno> {
    crate::fs::names::from_os(name).map_err(|e| errno("name", &e))
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn fopen_flags(o: &Opened) -> FopenFlags {
    let mut f = FopenFlags::empty();
    if o.keep_cache {
        f |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if o.direct_io {
        f |= FopenFlags::FOPEN_DIRECT_IO;
    }
    f
}

fn reply_entry(reply: ReplyEntry, r: Result<Attr, Errno>) {
    match r {
        Ok(a) => reply.entry(&a.valid, &file_attr(&a), Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

/// getxattr/listxattr: the size alone when asked for it, ERANGE when it does not fit.
fn reply_xattr(reply: ReplyXattr, size: u32, r: Result<Vec<u8>, Errno>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(libc::ERANGE)),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}

/// One request being answered on the runtime, counted until it is done.
struct Inflight(Arc<AtomicUsize>);

impl Inflight {
    fn enter(n: Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Inflight(n)
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn outcome<T>(
    op: &'static str,
    r: Result<Result<T, FsError>, Box<dyn std::any::Any + Send>>,
) -> Result<T, Errno> {
    match r {
        Ok(r) => r.map_err(|e| errno(op, &e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(op, "request panicked ({what}); answered with EIO");
            Err(Errno::EIO)
        }
    }
}

impl<S: ObjectStore> FuseAdapter<S> {
    /// Runs one request's logic and replies. Most requests (cached lookups, writes into
    /// staging, reads from cached blocks) finish without waiting for anything: those are
    /// answered here on the FUSE thread, saving two thread hand-offs each. The rest continue on
    /// the runtime, so one slow GET never holds up other requests.
    fn spawn<T: Send + 'static>(
        &self,
        op: &'static str,
        work: impl Future<Output = Result<T, FsError>> + Send + 'static,
        done: impl FnOnce(Result<T, Errno>) + Send + 'static,
    ) {
        // A panic in one request answers that request with EIO; the mount keeps serving.
        let mut work = Box::pin(AssertUnwindSafe(work).catch_unwind());
        let first = {
            let _rt = self.rt.enter();
            let mut cx = Context::from_waker(Waker::noop());
            work.as_mut().poll(&mut cx)
        };
        if let Poll::Ready(r) = first {
            return done(outcome(op, r));
        }
        // Polled again on the runtime, which registers its own waker. The count drops even if
        // `done` panics, so that unmount never waits for it forever.
        let guard = Inflight::enter(self.inflight.clone());
        self.rt.spawn(async move {
            let r = work.await;
            let _guard = guard;
            done(outcome(op, r));
        });
    }
}

impl<S: ObjectStore> Filesystem for FuseAdapter<S> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if let Err(max) = config.set_max_readahead(MAX_READAHEAD) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_AUTO_INVAL_DATA,
            // We clear set-user/group-ID on writes ourselves; the kernel then stops asking for
            // security.capability before every write.
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
            // open(O_TRUNC) arrives as one OPEN: a SETATTR of the size without a handle is
            // then always truncate(2) on a path, which must be in the bucket when it returns.
            InitFlags::FUSE_ATOMIC_O_TRUNC,
        ] {
            // Older kernels lack some of these; each is an optimisation only.
            let _ = config.add_capabilities(flag);
        }
        if self.fs.direct_io() {
            // mmap of a direct-I/O file needs this (Linux 6.6+); older kernels refuse mmap.
            let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.spawn(
            "lookup",
            async move { fs.lookup(parent.0, &name).await },
            move |r| reply_entry(reply, r),
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let fs = self.fs.clone();
        self.spawn(
            "getattr",
            async move { fs.getattr(ino.0).await },
            move |r| match r {
                Ok(a) => reply.attr(&a.valid, &file_attr(&a)),
                Err(e) => reply.error(e),
            },
        );
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = MetaChange {
            mode,
            uid,
            gid,
            mtime: mtime.map(time),
        };
        let fs = self.fs.clone();
        self.spawn(
            "setattr",
            async move { fs.setattr(ino.0, size, change, fh.map(|h| h.0)).await },
            move |r| match r {
                Ok(a) => reply.attr(&a.valid, &file_attr(&a)),
                Err(e) => reply.error(e),
            },
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let fs = self.fs.clone();
        self.spawn(
            "readlink",
            async move { fs.readlink(ino.0).await },
            move |r| match r {
                Ok(t) => reply.data(&t),
                Err(e) => reply.error(e),
            },
        );
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (fs, who) = (self.fs.clone(), caller(req));
        self.spawn(
            "mknod",
            async move { fs.mknod(parent.0, &name, mode, umask, who).await },
            move |r| reply_entry(reply, r),
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (fs, who) = (self.fs.clone(), caller(req));
        self.spawn(
            "mkdir",
            async move { fs.mkdir(parent.0, &name, mode, umask, who).await },
            move |r| reply_entry(reply, r),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.spawn(
            "unlink",
            async move { fs.unlink(parent.0, &name).await },
            move |r| reply_empty(reply, r),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.spawn(
            "rmdir",
            async move { fs.rmdir(parent.0, &name).await },
            move |r| reply_empty(reply, r),
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name = match name_of(link_name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let target = target.as_os_str().as_encoded_bytes().to_vec();
        let (fs, who) = (self.fs.clone(), caller(req));
        self.spawn(
            "symlink",
            async move { fs.symlink(parent.0, &name, &target, who).await },
            move |r| reply_entry(reply, r),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (name_of(name), name_of(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return reply.error(e),
        };
        let fs = self.fs.clone();
        let flags = flags.bits();
        self.spawn(
            "rename",
            async move {
                fs.rename(parent.0, &name, newparent.0, &newname, flags)
                    .await
            },
            move |r| reply_empty(reply, r),
        );
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // S3 has no hard links.
        reply.error(errno("link", &FsError::NotSupported));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let (fs, pid) = (self.fs.clone(), req.pid());
        self.spawn(
            "open",
            async move { fs.open(ino.0, write, truncate, pid).await },
            move |r| match r {
                Ok(o) => reply.opened(FileHandle(o.fh), fopen_flags(&o)),
                Err(e) => reply.error(e),
            },
        );
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        self.spawn(
            "read",
            async move { fs.read(fh.0, offset, size).await },
            move |r| match r {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(e),
            },
        );
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (fs, tid) = (self.fs.clone(), req.pid());
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let data = data.to_vec();
        self.spawn(
            "write",
            async move {
                let n = fs.write(fh.0, offset, &data, tid).await?;
                if kill {
                    fs.kill_suidgid(ino.0).await?;
                }
                Ok(n)
            },
            move |r| match r {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(e),
            },
        );
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let (fs, tid) = (self.fs.clone(), req.pid());
        self.spawn(
            "flush",
            async move { fs.flush(fh.0, tid).await },
            move |r| reply_empty(reply, r),
        );
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.spawn(
            "release",
            async move { fs.release(ino.0, fh.0).await },
            move |r| reply_empty(reply, r),
        );
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let fs = self.fs.clone();
        self.spawn("fsync", async move { fs.fsync(ino.0).await }, move |r| {
            reply_empty(reply, r)
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fs = self.fs.clone();
        self.spawn(
            "opendir",
            async move { fs.opendir(ino.0).await },
            move |r| match r {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(e),
            },
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(fh.0, offset, READDIR_BATCH) {
            Ok(items) => {
                for (next, item) in items {
                    if reply.add(INodeNo(item.ino), next, kind(item.kind), &item.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno("readdir", &e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let items = match self.fs.readdir(fh.0, offset, READDIR_BATCH) {
            Ok(items) => items,
            Err(e) => return reply.error(errno("readdirplus", &e)),
        };
        for (next, item) in items {
            let dots = item.name == "." || item.name == "..";
            // The kernel counts a lookup for every entry but `.` and `..`.
            let attr = if dots {
                self.fs.dot_attr(item.ino)
            } else {
                match self.fs.readdir_entry(fh.0, next) {
                    Ok(a) => a,
                    Err(_) => continue,
                }
            };
            if reply.add(
                INodeNo(attr.ino),
                next,
                &item.name,
                &attr.valid,
                &file_attr(&attr),
                Generation(0),
            ) {
                if !dots {
                    self.fs.forget(attr.ino, 1);
                }
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes are in the bucket when their operation returns.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A bucket has no fixed size; report plenty of room, as other S3 mounts do.
        const BLOCKS: u64 = 1 << 40;
        reply.statfs(BLOCKS, BLOCKS, BLOCKS, 1 << 32, 1 << 32, 4096, 255, 4096);
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if !self.fs.config().xattr {
            // The kernel remembers ENOSYS and stops asking (-o noxattr).
            return reply.error(Errno::ENOSYS);
        }
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (fs, value) = (self.fs.clone(), value.to_vec());
        self.spawn(
            "setxattr",
            async move { fs.setxattr(ino.0, &name, &value, flags).await },
            move |r| reply_empty(reply, r),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if !self.fs.config().xattr {
            // The kernel remembers ENOSYS and stops asking (-o noxattr).
            return reply.error(Errno::ENOSYS);
        }
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let fs = self.fs.clone();
        self.spawn(
            "getxattr",
            async move { fs.getxattr(ino.0, &name).await },
            move |r| reply_xattr(reply, size, r),
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if !self.fs.config().xattr {
            // The kernel remembers ENOSYS and stops asking (-o noxattr).
            return reply.error(Errno::ENOSYS);
        }
        let fs = self.fs.clone();
        self.spawn(
            "listxattr",
            async move { fs.listxattr(ino.0).await },
            move |r| reply_xattr(reply, size, r),
        );
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        if !self.fs.config().xattr {
            // The kernel remembers ENOSYS and stops asking (-o noxattr).
            return reply.error(Errno::ENOSYS);
        }
        let fs = self.fs.clone();
        self.spawn(
            "removexattr",
            async move { fs.removexattr(ino.0, &name).await },
            move |r| reply_empty(reply, r),
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_of(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let (fs, who) = (self.fs.clone(), caller(req));
        let exclusive = flags & libc::O_EXCL != 0;
        self.spawn(
            "create",
            async move {
                fs.create(parent.0, &name, mode, umask, exclusive, who)
                    .await
            },
            move |r| match r {
                Ok((a, o)) => reply.created(
                    &a.valid,
                    &file_attr(&a),
                    Generation(0),
                    FileHandle(o.fh),
                    fopen_flags(&o),
                ),
                Err(e) => reply.error(e),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::fs::FsConfig;
    use crate::store::memory::MemoryStore;

    /// A request that panics, on the FUSE thread or later on the runtime, is answered with EIO
    /// and leaves nothing counted in flight for unmount to wait on.
    #[test]
    fn a_panicking_request_answers_eio_and_is_not_left_in_flight() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let fs = Arc::new(Fs::new(Arc::new(MemoryStore::new()), FsConfig::default()));
        let adapter = FuseAdapter::new(fs, rt.handle().clone());
        let (tx, rx) = mpsc::channel();
        let now = tx.clone();
        adapter.spawn(
            "now",
            async {
                if true {
                    panic!("at once");
                }
                Ok(())
            },
            move |r: Result<(), Errno>| now.send(r).unwrap(),
        );
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            Err(Errno::EIO)
        );
        adapter.spawn(
            "later",
            async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if true {
                    panic!("after waiting");
                }
                Ok(())
            },
            move |r: Result<(), Errno>| tx.send(r).unwrap(),
        );
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            Err(Errno::EIO)
        );
        let inflight = adapter.inflight();
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while inflight.load(Ordering::SeqCst) != 0 {
            assert!(std::time::Instant::now() < until, "left in flight");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
