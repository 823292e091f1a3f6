//! Interoperability with s3fs-fuse on the same bucket: what s3mount writes (modes, owners,
//! times, directories, symlinks, xattrs), s3fs reads as such, and the other way round.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{KEY, MountBuilder, SECRET, Server, is_mounted, sh, unmount, write_file};

const B: &str = "bkt";

/// s3fs mounted in the foreground on a temp dir; unmounted on drop.
struct S3fs {
    dir: PathBuf,
    child: Child,
    _tmp: tempfile::TempDir,
}

impl S3fs {
    fn mount(s: &Server) -> S3fs {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s3fs");
        fs::create_dir(&dir).unwrap();
        let passwd = tmp.path().join("passwd");
        fs::write(&passwd, format!("{KEY}:{SECRET}")).unwrap();
        fs::set_permissions(&passwd, fs::Permissions::from_mode(0o600)).unwrap();
        let child = Command::new("s3fs")
            .arg(B)
            .arg(&dir)
            .arg("-f")
            .arg("-o")
            .arg(format!(
                "url={},use_path_request_style,use_xattr,passwd_file={},stat_cache_expire=1,enable_noobj_cache",
                s.endpoint,
                passwd.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3fs (Debian package s3fs)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(&dir) {
            assert!(Instant::now() < deadline, "s3fs did not mount");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3fs {
            dir,
            child,
            _tmp: tmp,
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }
}

impl Drop for S3fs {
    fn drop(&mut self) {
        unmount(&self.dir);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn s3fs_reads_what_s3mount_writes() {
    let s = Server::moto();
    s.create_bucket(B);
    let m = MountBuilder::new(&s, B).mount();
    sh(
        &m.dir,
        "mkdir -p dir/sub && echo content > dir/file && chmod 640 dir/file && chown 1001:1002 dir/file \
         && touch -d '2022-03-04 05:06:07 UTC' dir/file && ln -s file dir/link && chmod 700 dir/sub \
         && setfattr -n user.tag -v green dir/file",
    );
    let s3fs = S3fs::mount(&s);
    let md = fs::metadata(s3fs.path("dir/file")).unwrap();
    assert_eq!(fs::read(s3fs.path("dir/file")).unwrap(), b"content\n");
    assert_eq!(md.permissions().mode() & 0o7777, 0o640);
    assert_eq!((md.uid(), md.gid()), (1001, 1002));
    assert_eq!(md.mtime(), 1646370367);
    assert_eq!(
        fs::read_link(s3fs.path("dir/link")).unwrap(),
        Path::new("file")
    );
    let sub = fs::metadata(s3fs.path("dir/sub")).unwrap();
    assert!(sub.is_dir());
    assert_eq!(sub.permissions().mode() & 0o7777, 0o700);
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", "user.tag"])
        .arg(s3fs.path("dir/file"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "green",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn s3mount_reads_what_s3fs_writes() {
    let s = Server::moto();
    s.create_bucket(B);
    {
        let s3fs = S3fs::mount(&s);
        sh(
            &s3fs.dir,
            "mkdir -p d/e && echo from-s3fs > d/f && chmod 600 d/f && chown 1003:1004 d/f \
             && touch -d '2021-01-02 03:04:05 UTC' d/f && ln -s f d/l && chmod 711 d/e",
        );
        write_file(&s3fs.path("d/big"), &common::pattern(3 << 20, 5));
    }
    let m = MountBuilder::new(&s, B).mount();
    let md = fs::metadata(m.path("d/f")).unwrap();
    assert_eq!(fs::read(m.path("d/f")).unwrap(), b"from-s3fs\n");
    assert_eq!(md.permissions().mode() & 0o7777, 0o600);
    assert_eq!((md.uid(), md.gid()), (1003, 1004));
    assert_eq!(md.mtime(), 1609556645);
    assert_eq!(fs::read_link(m.path("d/l")).unwrap(), Path::new("f"));
    let e = fs::metadata(m.path("d/e")).unwrap();
    assert!(e.is_dir());
    assert_eq!(e.permissions().mode() & 0o7777, 0o711);
    assert!(fs::read(m.path("d/big")).unwrap() == common::pattern(3 << 20, 5));
}
