//! A reference-model property test: random sequences of create, write, truncate, rename,
//! unlink, mkdir and rmdir run against the filesystem logic (over the in-memory store) and
//! against a plain map of paths; after every step the two must agree on contents, listings
//! and errors, and the bucket must hold exactly the expected keys. Seeds are deterministic; a
//! failure prints the seed and the steps that led to it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use s3mount::error::FsError;
use s3mount::fs::write::{Caller, MetaChange};
use s3mount::fs::{Fs, FsConfig, Kind};
use s3mount::store::memory::MemoryStore;

const ROOT: u64 = 1;
const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
    pid: 1,
};

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Dir,
    File(Vec<u8>),
}

#[derive(Clone)]
enum Op {
    Create(String, Vec<u8>),
    Write(String, u64, Vec<u8>),
    Truncate(String, u64),
    Rename(String, String),
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Create(p, d) => write!(f, "Create({p}, {} bytes)", d.len()),
            Op::Write(p, o, d) => write!(f, "Write({p}, at {o}, {} bytes)", d.len()),
            Op::Truncate(p, l) => write!(f, "Truncate({p}, {l})"),
            Op::Rename(a, b) => write!(f, "Rename({a}, {b})"),
            Op::Unlink(p) => write!(f, "Unlink({p})"),
            Op::Mkdir(p) => write!(f, "Mkdir({p})"),
            Op::Rmdir(p) => write!(f, "Rmdir({p})"),
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

fn random_path(r: &mut Rng) -> String {
    let depth = 1 + r.next(3) as usize;
    (0..depth)
        .map(|_| NAMES[r.next(NAMES.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join("/")
}

fn random_op(r: &mut Rng) -> Op {
    let p = random_path(r);
    let data = |r: &mut Rng| {
        (0..r.next(300))
            .map(|i| (i as u8).wrapping_add(r.next(7) as u8))
            .collect::<Vec<u8>>()
    };
    match r.next(10) {
        0 | 1 => Op::Create(p, data(r)),
        2 => Op::Write(p, r.next(400), data(r)),
        3 => Op::Truncate(p, r.next(400)),
        4 | 5 => Op::Rename(p, random_path(r)),
        6 => Op::Unlink(p),
        7 | 8 => Op::Mkdir(p),
        _ => Op::Rmdir(p),
    }
}

fn parent(p: &str) -> &str {
    p.rsplit_once('/').map(|(a, _)| a).unwrap_or("")
}

fn name(p: &str) -> &str {
    p.rsplit_once('/').map(|(_, b)| b).unwrap_or(p)
}

/// The model: what each operation does to a map of paths, and the errno it fails with.
fn apply_model(m: &mut BTreeMap<String, Node>, op: &Op) -> Result<(), i32> {
    // Path resolution: every ancestor must exist and be a directory.
    let dir_ok = |m: &BTreeMap<String, Node>, p: &str| -> Result<(), i32> {
        let parts: Vec<&str> = p.split('/').collect();
        for i in 1..parts.len() {
            match m.get(&parts[..i].join("/")) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => return Err(libc::ENOTDIR),
                None => return Err(libc::ENOENT),
            }
        }
        Ok(())
    };
    let children =
        |m: &BTreeMap<String, Node>, p: &str| m.keys().any(|k| k.starts_with(&format!("{p}/")));
    match op {
        Op::Create(p, data) => {
            dir_ok(m, p)?;
            if m.contains_key(p) {
                return Err(libc::EEXIST);
            }
            m.insert(p.clone(), Node::File(data.clone()));
        }
        Op::Write(p, off, data) => {
            dir_ok(m, p)?;
            match m.get_mut(p) {
                // POSIX: a write of nothing changes nothing, not even past the end.
                Some(Node::File(f)) if !data.is_empty() => {
                    let end = *off as usize + data.len();
                    if f.len() < end {
                        f.resize(end, 0);
                    }
                    f[*off as usize..end].copy_from_slice(data);
                }
                Some(Node::File(_)) => {}
                Some(Node::Dir) => return Err(libc::EISDIR),
                None => return Err(libc::ENOENT),
            }
        }
        Op::Truncate(p, len) => {
            dir_ok(m, p)?;
            match m.get_mut(p) {
                Some(Node::File(f)) => f.resize(*len as usize, 0),
                Some(Node::Dir) => return Err(libc::EISDIR),
                None => return Err(libc::ENOENT),
            }
        }
        Op::Unlink(p) => {
            dir_ok(m, p)?;
            match m.get(p) {
                Some(Node::File(_)) => {
                    m.remove(p);
                }
                Some(Node::Dir) => return Err(libc::EISDIR),
                None => return Err(libc::ENOENT),
            }
        }
        Op::Mkdir(p) => {
            dir_ok(m, p)?;
            if m.contains_key(p) {
                return Err(libc::EEXIST);
            }
            m.insert(p.clone(), Node::Dir);
        }
        Op::Rmdir(p) => {
            dir_ok(m, p)?;
            match m.get(p) {
                Some(Node::Dir) if children(m, p) => return Err(libc::ENOTEMPTY),
                Some(Node::Dir) => {
                    m.remove(p);
                }
                Some(Node::File(_)) => return Err(libc::ENOTDIR),
                None => return Err(libc::ENOENT),
            }
        }
        Op::Rename(a, b) => {
            // Like rename(2): both parents are resolved before the source name is looked at.
            dir_ok(m, a)?;
            dir_ok(m, b)?;
            let src = m.get(a).cloned().ok_or(libc::ENOENT)?;
            if a == b {
                return Ok(());
            }
            if src == Node::Dir && b.starts_with(&format!("{a}/")) {
                return Err(libc::EINVAL);
            }
            match (&src, m.get(b)) {
                (Node::Dir, Some(Node::Dir)) if children(m, b) => return Err(libc::ENOTEMPTY),
                (Node::Dir, Some(Node::File(_))) => return Err(libc::ENOTDIR),
                (Node::File(_), Some(Node::Dir)) => return Err(libc::EISDIR),
                _ => {}
            }
            let moved: Vec<(String, Node)> = m
                .iter()
                .filter(|(k, _)| *k == a || k.starts_with(&format!("{a}/")))
                .map(|(k, v)| (format!("{b}{}", &k[a.len()..]), v.clone()))
                .collect();
            m.retain(|k, _| k != a && !k.starts_with(&format!("{a}/")) && k != b);
            m.extend(moved);
        }
    }
    Ok(())
}

async fn resolve(fs: &Fs<MemoryStore>, path: &str) -> Result<u64, FsError> {
    let mut ino = ROOT;
    for part in path.split('/').filter(|s| !s.is_empty()) {
        ino = fs.lookup(ino, part).await?.ino;
    }
    Ok(ino)
}

/// A parent directory as the kernel resolves it: it must exist and be a directory.
async fn resolve_dir(fs: &Fs<MemoryStore>, path: &str) -> Result<u64, FsError> {
    let ino = resolve(fs, path).await?;
    if fs.getattr(ino).await?.kind != Kind::Dir {
        return Err(FsError::NotDir);
    }
    Ok(ino)
}

async fn apply_fs(fs: &Fs<MemoryStore>, op: &Op) -> Result<(), FsError> {
    match op {
        Op::Create(p, data) => {
            let dir = resolve_dir(fs, parent(p)).await?;
            let (attr, o) = fs.create(dir, name(p), 0o644, 0, true, ME).await?;
            fs.write(o.fh, 0, data, 1).await?;
            fs.flush(o.fh, 1).await?;
            fs.release(attr.ino, o.fh).await
        }
        Op::Write(p, off, data) => {
            let ino = resolve(fs, p).await?;
            let o = fs.open(ino, true, false, 1).await?;
            fs.write(o.fh, *off, data, 1).await?;
            fs.flush(o.fh, 1).await?;
            fs.release(ino, o.fh).await
        }
        Op::Truncate(p, len) => {
            let ino = resolve(fs, p).await?;
            fs.setattr(ino, Some(*len), MetaChange::default(), None)
                .await
                .map(|_| ())
        }
        Op::Unlink(p) => fs.unlink(resolve(fs, parent(p)).await?, name(p)).await,
        Op::Mkdir(p) => fs
            .mkdir(resolve(fs, parent(p)).await?, name(p), 0o755, 0, ME)
            .await
            .map(|_| ()),
        Op::Rmdir(p) => fs.rmdir(resolve(fs, parent(p)).await?, name(p)).await,
        Op::Rename(a, b) => {
            let pa = resolve_dir(fs, parent(a)).await?;
            let pb = resolve_dir(fs, parent(b)).await?;
            fs.rename(pa, name(a), pb, name(b), 0).await
        }
    }
}

async fn read_all(fs: &Fs<MemoryStore>, ino: u64) -> Vec<u8> {
    let o = fs.open(ino, false, false, 1).await.unwrap();
    let data = fs.read(o.fh, 0, 1 << 20).await.unwrap().to_vec();
    fs.release(ino, o.fh).await.unwrap();
    data
}

async fn check(
    fs: &Fs<MemoryStore>,
    store: &MemoryStore,
    m: &BTreeMap<String, Node>,
) -> Result<(), String> {
    for (p, node) in m {
        let ino = resolve(fs, p).await.map_err(|e| format!("{p}: {e}"))?;
        let attr = fs.getattr(ino).await.map_err(|e| format!("{p}: {e}"))?;
        match node {
            Node::Dir if attr.kind != Kind::Dir => {
                return Err(format!("{p} should be a directory"));
            }
            Node::File(data) => {
                if attr.kind != Kind::File || attr.size != data.len() as u64 {
                    return Err(format!(
                        "{p}: {attr:?}, want a file of {} bytes",
                        data.len()
                    ));
                }
                if read_all(fs, ino).await != *data {
                    return Err(format!("{p}: content differs"));
                }
            }
            _ => {}
        }
    }
    for dir in std::iter::once("").chain(
        m.iter()
            .filter(|(_, n)| **n == Node::Dir)
            .map(|(k, _)| k.as_str()),
    ) {
        let ino = resolve(fs, dir).await.unwrap();
        let fh = fs.opendir(ino).await.unwrap();
        let got: Vec<String> = fs
            .readdir(fh, 2, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(_, i)| i.name)
            .collect();
        fs.releasedir(fh);
        let want: Vec<String> = m
            .keys()
            .filter(|k| parent(k) == dir)
            .map(|k| name(k).to_string())
            .collect();
        if got != want {
            return Err(format!("listing of {dir:?}: {got:?}, want {want:?}"));
        }
    }
    let mut want_keys: Vec<String> = m
        .iter()
        .map(|(k, n)| match n {
            Node::Dir => format!("{k}/"),
            Node::File(_) => k.clone(),
        })
        .collect();
    want_keys.sort();
    let keys = store.keys();
    if keys != want_keys {
        return Err(format!("bucket keys {keys:?}, want {want_keys:?}"));
    }
    if store.pending_uploads() != 0 {
        return Err("a multipart upload was left behind".into());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sequences_agree_with_the_model() {
    for seed in 1..=400u64 {
        let store = Arc::new(MemoryStore::new());
        let fs = Fs::new(
            store.clone(),
            FsConfig {
                metadata_ttl: Duration::ZERO,
                ..FsConfig::default()
            },
        );
        let mut model = BTreeMap::new();
        let mut rng = Rng(seed);
        let mut steps = Vec::new();
        for _ in 0..60 {
            let op = random_op(&mut rng);
            let want = apply_model(&mut model, &op);
            let got = apply_fs(&fs, &op).await.map_err(|e| e.errno());
            steps.push(format!("{op:?} -> {got:?}"));
            if want != got {
                panic!(
                    "seed {seed}: {op:?}: fs {got:?}, model {want:?}\nsteps:\n{}",
                    steps.join("\n")
                );
            }
            if let Err(e) = check(&fs, &store, &model).await {
                panic!(
                    "seed {seed}: after {op:?}: {e}\nsteps:\n{}",
                    steps.join("\n")
                );
            }
        }
    }
}
