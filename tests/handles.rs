//! A reference-model property test (proptest, with shrinking) of many hands on few files:
//! several open descriptors per file, opened for reading and for writing, unlink, rename,
//! chmod and truncate while they are open, and objects put and deleted behind the mount's
//! back. The model is POSIX: a file is its content, whatever its name, and every descriptor
//! of a file sees the same content. Run over the filesystem logic on the in-memory store (many
//! cases) and on a real mount over moto (a few).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRng, TestRunner};

use s3mount::error::FsError;
use s3mount::fs::write::{Caller, MetaChange};
use s3mount::fs::{Fs, FsConfig};
use s3mount::store::ObjectStore;
use s3mount::store::memory::MemoryStore;

const ROOT: u64 = 1;
const NAMES: [&str; 3] = ["a", "b", "c"];

#[derive(Debug, Clone)]
enum Op {
    Open {
        name: usize,
        write: bool,
        trunc: bool,
        create: bool,
    },
    Write {
        h: usize,
        off: u64,
        len: usize,
        byte: u8,
    },
    Read {
        h: usize,
        off: u64,
        len: u32,
    },
    Close {
        h: usize,
    },
    Fsync {
        h: usize,
    },
    Unlink {
        name: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Truncate {
        name: usize,
        len: u64,
    },
    Chmod {
        name: usize,
        mode: u32,
    },
    PutBehind {
        name: usize,
        len: usize,
        byte: u8,
    },
    DeleteBehind {
        name: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    let h = 0usize..8;
    prop_oneof![
        4 => (name.clone(), any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(name, write, trunc, create)| Op::Open { name, write, trunc, create }),
        4 => (h.clone(), 0u64..3000, 0usize..2000, any::<u8>())
            .prop_map(|(h, off, len, byte)| Op::Write { h, off, len, byte }),
        3 => (h.clone(), 0u64..4000, 1u32..3000).prop_map(|(h, off, len)| Op::Read { h, off, len }),
        3 => h.clone().prop_map(|h| Op::Close { h }),
        1 => h.prop_map(|h| Op::Fsync { h }),
        1 => name.clone().prop_map(|name| Op::Unlink { name }),
        1 => (name.clone(), name.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => (name.clone(), 0u64..4000).prop_map(|(name, len)| Op::Truncate { name, len }),
        1 => (name.clone(), prop_oneof![Just(0o600u32), Just(0o640), Just(0o755)])
            .prop_map(|(name, mode)| Op::Chmod { name, mode }),
        1 => (name.clone(), 0usize..3000, any::<u8>())
            .prop_map(|(name, len, byte)| Op::PutBehind { name, len, byte }),
        1 => name.prop_map(|name| Op::DeleteBehind { name }),
    ]
}

/// A file of the model: content and mode, whatever name it has (if any).
#[derive(Debug, Clone)]
struct MFile {
    data: Vec<u8>,
    mode: u32,
    /// Lost its name while open and the name then went to another file (or the file was
    /// renamed over): reads of the old version may fail with EIO (README: a file replaced
    /// while open reads from the bucket, where its object is gone).
    replaced: bool,
    /// The name it has or last had.
    last_name: Option<usize>,
}

#[derive(Debug, Clone)]
struct MHandle {
    file: usize,
    write: bool,
    /// Wrote, created or truncated through this descriptor: its close commits.
    dirtied: bool,
}

#[derive(Default)]
struct Model {
    files: Vec<MFile>,
    names: BTreeMap<usize, usize>,
    handles: Vec<MHandle>,
}

impl Model {
    fn open_count(&self, file: usize) -> usize {
        self.handles.iter().filter(|h| h.file == file).count()
    }

    /// Whatever this mount or another client now puts at `name` replaces the object of every
    /// open file that had that name.
    fn object_replaced(&mut self, name: usize) {
        let open: Vec<usize> = self.handles.iter().map(|h| h.file).collect();
        for f in open {
            if self.files[f].last_name == Some(name) {
                self.files[f].replaced = true;
            }
        }
    }

    fn give_name(&mut self, name: usize, f: usize) {
        self.names.remove(&name);
        self.object_replaced(name);
        self.names.insert(name, f);
        self.files[f].last_name = Some(name);
    }

    fn new_file(&mut self, data: Vec<u8>) -> usize {
        self.files.push(MFile {
            data,
            mode: 0o644,
            replaced: false,
            last_name: None,
        });
        self.files.len() - 1
    }
}

/// What a test runs the operations on: the filesystem logic or a real mount.
trait Target {
    fn open(&mut self, name: &str, write: bool, trunc: bool, create: bool) -> Result<(), i32>;
    fn write(&mut self, h: usize, off: u64, data: &[u8]) -> Result<(), i32>;
    fn read(&mut self, h: usize, off: u64, len: u32) -> Result<Vec<u8>, i32>;
    fn close(&mut self, h: usize) -> Result<(), i32>;
    fn fsync(&mut self, h: usize) -> Result<(), i32>;
    fn unlink(&mut self, name: &str) -> Result<(), i32>;
    fn rename(&mut self, from: &str, to: &str) -> Result<(), i32>;
    fn truncate(&mut self, name: &str, len: u64) -> Result<(), i32>;
    fn chmod(&mut self, name: &str, mode: u32) -> Result<(), i32>;
    fn mode(&mut self, name: &str) -> Result<u32, i32>;
    fn put_behind(&mut self, name: &str, data: &[u8]);
    fn delete_behind(&mut self, name: &str);
    /// The object's content in the bucket.
    fn bucket(&mut self, name: &str) -> Option<Vec<u8>>;
    fn bucket_keys(&mut self) -> Vec<String>;
    fn pending_uploads(&mut self) -> usize;
    /// Waits for work the kernel does after close(2) returns (RELEASE), before the final check.
    fn settle(&mut self) {}
}

/// Runs `ops` on the model and on `t`, checking after each step; `Err` says what differed.
fn run(t: &mut dyn Target, ops: &[Op]) -> Result<(), String> {
    let mut m = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let at = |what: String| format!("step {step} {op:?}: {what}");
        let pick = |m: &Model, h: usize| (!m.handles.is_empty()).then(|| h % m.handles.len());
        match *op {
            Op::Open {
                name,
                write,
                trunc,
                create,
            } => {
                let trunc = trunc && write;
                let (want, created) = match m.names.get(&name) {
                    Some(&f) => {
                        if trunc {
                            m.files[f].data.clear();
                        }
                        (Ok(f), false)
                    }
                    None if create => {
                        let f = m.new_file(Vec::new());
                        m.give_name(name, f);
                        (Ok(f), true)
                    }
                    None => (Err(libc::ENOENT), false),
                };
                let got = t.open(NAMES[name], write, trunc, create);
                match (want, got) {
                    (Ok(file), Ok(())) => m.handles.push(MHandle {
                        file,
                        write,
                        dirtied: trunc || created,
                    }),
                    (Err(a), Err(b)) if a == b => {}
                    (w, g) => return Err(at(format!("model {w:?}, target {g:?}"))),
                }
            }
            Op::Write { h, off, len, byte } => {
                let Some(i) = pick(&m, h) else { continue };
                let data = vec![byte; len];
                let got = t.write(i, off, &data);
                let mh = m.handles[i].clone();
                if !mh.write {
                    if got != Err(libc::EBADF) {
                        return Err(at(format!("write on a read-only descriptor: {got:?}")));
                    }
                    continue;
                }
                got.map_err(|e| at(format!("errno {e}")))?;
                // POSIX: a write of nothing changes nothing, not even past the end.
                if len > 0 {
                    let f = &mut m.files[mh.file].data;
                    let end = off as usize + len;
                    if f.len() < end {
                        f.resize(end, 0);
                    }
                    f[off as usize..end].copy_from_slice(&data);
                    m.handles[i].dirtied = true;
                }
            }
            Op::Read { h, off, len } => {
                let Some(i) = pick(&m, h) else { continue };
                let file = &m.files[m.handles[i].file];
                let data = &file.data;
                let from = (off as usize).min(data.len());
                let to = (off as usize + len as usize).min(data.len());
                match t.read(i, off, len) {
                    Ok(got) if got == data[from..to] => {}
                    Err(e) if e == libc::EIO && file.replaced => {}
                    other => {
                        return Err(at(format!(
                            "read {:?}, want {} bytes",
                            other.map(|v| v.len()),
                            to - from
                        )));
                    }
                }
            }
            Op::Close { h } => {
                let Some(i) = pick(&m, h) else { continue };
                t.close(i).map_err(|e| at(format!("close: errno {e}")))?;
                let mh = m.handles.remove(i);
                let named = m
                    .names
                    .iter()
                    .find(|(_, f)| **f == mh.file)
                    .map(|(n, _)| *n);
                // A writer's close, or the last close, puts the file's content in the bucket.
                if let Some(n) = named {
                    if mh.dirtied || m.open_count(mh.file) == 0 {
                        let want = &m.files[mh.file].data;
                        let got = t.bucket(NAMES[n]);
                        if got.as_ref() != Some(want) {
                            return Err(at(format!(
                                "bucket has {:?} bytes, want {}",
                                got.map(|g| g.len()),
                                want.len()
                            )));
                        }
                    }
                }
            }
            Op::Fsync { h } => {
                let Some(i) = pick(&m, h) else { continue };
                t.fsync(i).map_err(|e| at(format!("fsync: errno {e}")))?;
                let file = m.handles[i].file;
                if let Some((n, _)) = m.names.iter().find(|(_, f)| **f == file) {
                    let got = t.bucket(NAMES[*n]);
                    if got.as_ref() != Some(&m.files[file].data) {
                        return Err(at("fsync did not put the content in the bucket".into()));
                    }
                }
            }
            Op::Unlink { name } => {
                let want = if m.names.remove(&name).is_some() {
                    Ok(())
                } else {
                    Err(libc::ENOENT)
                };
                let got = t.unlink(NAMES[name]);
                if want != got {
                    return Err(at(format!("model {want:?}, target {got:?}")));
                }
            }
            Op::Rename { from, to } => {
                let want = match m.names.get(&from).copied() {
                    None => Err(libc::ENOENT),
                    Some(_) if from == to => Ok(()),
                    Some(f) => {
                        m.names.remove(&from);
                        m.give_name(to, f);
                        Ok(())
                    }
                };
                let got = t.rename(NAMES[from], NAMES[to]);
                if want != got {
                    return Err(at(format!("model {want:?}, target {got:?}")));
                }
            }
            Op::Truncate { name, len } => {
                let want = match m.names.get(&name) {
                    Some(&f) => {
                        m.files[f].data.resize(len as usize, 0);
                        Ok(f)
                    }
                    None => Err(libc::ENOENT),
                };
                let got = t.truncate(NAMES[name], len);
                match (want, got) {
                    (Ok(f), Ok(())) => {
                        // truncate(2) has no close to wait for: in the bucket when it returns.
                        if t.bucket(NAMES[name]).as_ref() != Some(&m.files[f].data) {
                            return Err(at("truncate is not in the bucket".into()));
                        }
                    }
                    (Err(a), Err(b)) if a == b => {}
                    (w, g) => return Err(at(format!("model {w:?}, target {g:?}"))),
                }
            }
            Op::Chmod { name, mode } => {
                let want = match m.names.get(&name) {
                    Some(&f) => {
                        m.files[f].mode = mode;
                        Ok(())
                    }
                    None => Err(libc::ENOENT),
                };
                let got = t.chmod(NAMES[name], mode);
                if want != got {
                    return Err(at(format!("model {want:?}, target {got:?}")));
                }
            }
            Op::PutBehind { name, len, byte } => {
                // Another client's write: only to names whose file nobody here has open (what
                // this mount's descriptors see of another client's change is version-checked,
                // not modelled).
                if m.names.get(&name).is_some_and(|f| m.open_count(*f) > 0) {
                    continue;
                }
                let data = vec![byte; len];
                let f = m.new_file(data.clone());
                m.give_name(name, f);
                t.put_behind(NAMES[name], &data);
            }
            Op::DeleteBehind { name } => {
                if m.names.get(&name).is_some_and(|f| m.open_count(*f) > 0) {
                    continue;
                }
                m.names.remove(&name);
                m.object_replaced(name);
                t.delete_behind(NAMES[name]);
            }
        }
        // Every named file: its mode, and its content through a fresh descriptor.
        for (&n, &f) in &m.names {
            let mode = t
                .mode(NAMES[n])
                .map_err(|e| at(format!("stat {}: {e}", NAMES[n])))?;
            if mode != m.files[f].mode {
                return Err(at(format!("{} has mode {mode:o}", NAMES[n])));
            }
        }
    }
    // Everything closed: the bucket holds exactly the named files, and nothing is pending.
    while !m.handles.is_empty() {
        t.close(0).map_err(|e| format!("final close: errno {e}"))?;
        m.handles.remove(0);
    }
    t.settle();
    let want: Vec<String> = m.names.keys().map(|n| NAMES[*n].to_string()).collect();
    let keys = t.bucket_keys();
    if keys != want {
        return Err(format!("bucket keys {keys:?}, want {want:?}"));
    }
    for (&n, &f) in &m.names {
        if t.bucket(NAMES[n]).as_ref() != Some(&m.files[f].data) {
            return Err(format!("{} differs in the bucket", NAMES[n]));
        }
    }
    if t.pending_uploads() != 0 {
        return Err("a multipart upload was left behind".into());
    }
    Ok(())
}

/// The filesystem logic over the in-memory store, driven as the kernel would.
struct Logic {
    rt: tokio::runtime::Runtime,
    store: Arc<MemoryStore>,
    fs: Fs<MemoryStore>,
    /// (inode, handle, opened for writing) per open descriptor.
    open: Vec<(u64, u64, bool)>,
}

/// This test process, as the kernel would name the caller.
fn me() -> Caller {
    Caller {
        uid: 1000,
        gid: 1000,
        pid: std::process::id(),
    }
}

fn errno(e: FsError) -> i32 {
    e.errno()
}

impl Logic {
    fn new() -> Self {
        let store = Arc::new(MemoryStore::new());
        let fs = Fs::new(
            store.clone(),
            FsConfig {
                metadata_ttl: Duration::ZERO,
                ..FsConfig::default()
            },
        );
        Logic {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            store,
            fs,
            open: Vec::new(),
        }
    }

    fn lookup(&self, name: &str) -> Result<u64, i32> {
        self.rt
            .block_on(self.fs.lookup(ROOT, name))
            .map(|a| a.ino)
            .map_err(errno)
    }
}

impl Target for Logic {
    fn open(&mut self, name: &str, write: bool, trunc: bool, create: bool) -> Result<(), i32> {
        let (ino, fh) = match self.lookup(name) {
            Ok(ino) => {
                let o = self
                    .rt
                    .block_on(self.fs.open(ino, write, trunc, std::process::id()))
                    .map_err(errno)?;
                (ino, o.fh)
            }
            Err(libc::ENOENT) if create => {
                let (a, o) = self
                    .rt
                    .block_on(self.fs.create(ROOT, name, 0o644, 0, false, me()))
                    .map_err(errno)?;
                (a.ino, o.fh)
            }
            Err(e) => return Err(e),
        };
        self.open.push((ino, fh, write));
        Ok(())
    }

    fn write(&mut self, h: usize, off: u64, data: &[u8]) -> Result<(), i32> {
        if !self.open[h].2 {
            // The kernel refuses this before asking the filesystem.
            return Err(libc::EBADF);
        }
        let pid = std::process::id();
        self.rt
            .block_on(self.fs.write(self.open[h].1, off, data, pid))
            .map(|_| ())
            .map_err(errno)
    }

    fn read(&mut self, h: usize, off: u64, len: u32) -> Result<Vec<u8>, i32> {
        self.rt
            .block_on(self.fs.read(self.open[h].1, off, len))
            .map(|b| b.to_vec())
            .map_err(errno)
    }

    fn close(&mut self, h: usize) -> Result<(), i32> {
        let (ino, fh, _) = self.open.remove(h);
        let flushed = self.rt.block_on(self.fs.flush(fh, std::process::id()));
        let released = self.rt.block_on(self.fs.release(ino, fh));
        flushed.and(released).map_err(errno)
    }

    fn fsync(&mut self, h: usize) -> Result<(), i32> {
        self.rt
            .block_on(self.fs.fsync(self.open[h].0))
            .map_err(errno)
    }

    fn unlink(&mut self, name: &str) -> Result<(), i32> {
        self.rt.block_on(self.fs.unlink(ROOT, name)).map_err(errno)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), i32> {
        self.rt
            .block_on(self.fs.rename(ROOT, from, ROOT, to, 0))
            .map_err(errno)
    }

    fn truncate(&mut self, name: &str, len: u64) -> Result<(), i32> {
        let ino = self.lookup(name)?;
        self.rt
            .block_on(self.fs.setattr(ino, Some(len), MetaChange::default(), None))
            .map(|_| ())
            .map_err(errno)
    }

    fn chmod(&mut self, name: &str, mode: u32) -> Result<(), i32> {
        let ino = self.lookup(name)?;
        let change = MetaChange {
            mode: Some(mode),
            ..MetaChange::default()
        };
        self.rt
            .block_on(self.fs.setattr(ino, None, change, None))
            .map(|_| ())
            .map_err(errno)
    }

    fn mode(&mut self, name: &str) -> Result<u32, i32> {
        let ino = self.lookup(name)?;
        let a = self.rt.block_on(self.fs.getattr(ino)).map_err(errno)?;
        Ok(u32::from(a.perm))
    }

    fn put_behind(&mut self, name: &str, data: &[u8]) {
        self.store.insert(name, data.to_vec(), &[]);
    }

    fn delete_behind(&mut self, name: &str) {
        let _ = self.rt.block_on(self.store.delete(name));
    }

    fn bucket(&mut self, name: &str) -> Option<Vec<u8>> {
        self.store.body(name).map(|b| b.to_vec())
    }

    fn bucket_keys(&mut self) -> Vec<String> {
        self.store.keys()
    }

    fn pending_uploads(&mut self) -> usize {
        self.store.pending_uploads()
    }
}

fn check_with<'a>(cases: u32, max_ops: usize, make: impl Fn() -> Box<dyn Target + 'a>) {
    let config = Config {
        cases,
        failure_persistence: None,
        // Shrinking a failure on a real mount mounts once per attempt: bounded, so that a
        // failure is reported in minutes, not hours.
        max_shrink_time: 120_000,
        max_shrink_iters: 500,
        ..Config::default()
    };
    // The same cases on every run (CI); MODEL_CASES=N draws N new ones each time.
    let mut runner = if std::env::var_os("MODEL_CASES").is_some() {
        TestRunner::new(config)
    } else {
        let rng = TestRng::deterministic_rng(config.rng_algorithm);
        TestRunner::new_with_rng(config, rng)
    };
    let result = runner.run(&prop::collection::vec(op(), 1..max_ops), |ops| {
        let mut t = make();
        run(&mut *t, &ops).map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn many_descriptors_agree_with_the_posix_model() {
    check_with(256, 40, || Box::new(Logic::new()));
}

/// A real mount over moto, driven through system calls on real descriptors.
struct Real<'a> {
    // Fields drop in this order: descriptors are closed before the mount is unmounted.
    open: Vec<std::fs::File>,
    m: Option<common::Mount>,
    s: &'a common::Server,
    bucket: String,
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn io_errno(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl<'a> Real<'a> {
    fn new(s: &'a common::Server) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let bucket = format!(
            "model{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        s.create_bucket(&bucket);
        let m = common::MountBuilder::new(s, &bucket)
            .arg("--metadata-ttl")
            .arg("0")
            .mount();
        Real {
            s,
            bucket,
            m: Some(m),
            open: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.m.as_ref().expect("mounted").path(name)
    }

    fn cpath(&self, name: &str) -> std::ffi::CString {
        std::ffi::CString::new(self.path(name).into_os_string().into_encoded_bytes()).unwrap()
    }
}

impl Target for Real<'_> {
    fn open(&mut self, name: &str, write: bool, trunc: bool, create: bool) -> Result<(), i32> {
        use std::os::fd::FromRawFd;
        let mut flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
        if trunc {
            flags |= libc::O_TRUNC;
        }
        if create {
            flags |= libc::O_CREAT;
        }
        let fd = unsafe { libc::open(self.cpath(name).as_ptr(), flags, 0o644 as libc::c_uint) };
        if fd < 0 {
            return Err(last_errno());
        }
        self.open.push(unsafe { std::fs::File::from_raw_fd(fd) });
        Ok(())
    }

    fn write(&mut self, h: usize, off: u64, data: &[u8]) -> Result<(), i32> {
        use std::os::unix::fs::FileExt;
        self.open[h].write_all_at(data, off).map_err(io_errno)
    }

    fn read(&mut self, h: usize, off: u64, len: u32) -> Result<Vec<u8>, i32> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len as usize];
        let mut got = 0;
        while got < buf.len() {
            match self.open[h].read_at(&mut buf[got..], off + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return Err(io_errno(e)),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    fn close(&mut self, h: usize) -> Result<(), i32> {
        use std::os::fd::IntoRawFd;
        let fd = self.open.remove(h).into_raw_fd();
        if unsafe { libc::close(fd) } != 0 {
            return Err(last_errno());
        }
        Ok(())
    }

    fn fsync(&mut self, h: usize) -> Result<(), i32> {
        self.open[h].sync_all().map_err(io_errno)
    }

    fn unlink(&mut self, name: &str) -> Result<(), i32> {
        std::fs::remove_file(self.path(name)).map_err(io_errno)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), i32> {
        std::fs::rename(self.path(from), self.path(to)).map_err(io_errno)
    }

    fn truncate(&mut self, name: &str, len: u64) -> Result<(), i32> {
        if unsafe { libc::truncate(self.cpath(name).as_ptr(), len as libc::off_t) } != 0 {
            return Err(last_errno());
        }
        Ok(())
    }

    fn chmod(&mut self, name: &str, mode: u32) -> Result<(), i32> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(name), std::fs::Permissions::from_mode(mode))
            .map_err(io_errno)
    }

    fn mode(&mut self, name: &str) -> Result<u32, i32> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(self.path(name))
            .map(|m| m.permissions().mode() & 0o7777)
            .map_err(io_errno)
    }

    fn put_behind(&mut self, name: &str, data: &[u8]) {
        self.s.put(&self.bucket, name, data);
    }

    fn delete_behind(&mut self, name: &str) {
        self.s.delete(&self.bucket, name);
    }

    fn bucket(&mut self, name: &str) -> Option<Vec<u8>> {
        self.s.try_get(&self.bucket, name)
    }

    fn bucket_keys(&mut self) -> Vec<String> {
        self.s.keys(&self.bucket)
    }

    fn pending_uploads(&mut self) -> usize {
        self.s.pending_uploads(&self.bucket)
    }

    fn settle(&mut self) {
        // RELEASE reaches the mount after close(2) returns; unmounting waits for all of them.
        if let Some(m) = self.m.take() {
            let (status, log) = m.finish();
            assert!(status.success(), "unmount: {status}\n{log}");
        }
    }
}

#[test]
fn many_descriptors_on_a_real_mount_agree_with_the_posix_model() {
    let s = common::Server::moto();
    // A short run in CI; MODEL_CASES=200 for a long, random one.
    let cases = std::env::var("MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    check_with(cases, 25, || Box::new(Real::new(&s)));
}
