//! The read path on a real mount over a real S3 server (moto).

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::time::{Duration, UNIX_EPOCH};

use common::{Mount, MountBuilder, Server, pattern};

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn mounted(server: &Server, source: &str) -> Mount {
    MountBuilder::new(server, source).mount()
}

#[test]
fn listing_implicit_dirs_markers_and_name_clash() {
    let s = Server::moto();
    s.create_bucket("bkt");
    s.put("bkt", "top.txt", b"top");
    s.put("bkt", "implicit/deep/file", b"deep");
    s.put_with("bkt", "marker/", b"", &[], Some("application/x-directory"));
    s.put("bkt", "clash", b"i am hidden");
    s.put("bkt", "clash/inside", b"in");
    s.put("bkt", "weird//empty-segment", b"x");
    let m = mounted(&s, "bkt");

    assert_eq!(
        names(&m.dir),
        ["clash", "implicit", "marker", "top.txt", "weird"]
    );
    assert!(m.path("implicit").is_dir());
    assert!(m.path("implicit/deep").is_dir());
    assert_eq!(fs::read(m.path("implicit/deep/file")).unwrap(), b"deep");
    assert!(m.path("marker").is_dir());
    assert!(names(&m.path("marker")).is_empty());
    assert!(
        m.path("clash").is_dir(),
        "a directory wins over an object of the same name"
    );
    assert_eq!(names(&m.path("clash")), ["inside"]);
    assert!(
        names(&m.path("weird")).is_empty(),
        "an empty key segment is skipped"
    );
    assert_eq!(
        fs::metadata(m.path("nope")).unwrap_err().kind(),
        std::io::ErrorKind::NotFound
    );
    // Directories can be walked like any other tree.
    let out = std::process::Command::new("find")
        .arg(&m.dir)
        .output()
        .unwrap();
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(found.contains("implicit/deep/file"), "{found}");
}

#[test]
fn listing_pages_past_1000_keys() {
    let s = Server::moto();
    s.create_bucket("bkt");
    for i in 0..1100 {
        s.put("bkt", &format!("many/f{i:04}"), format!("{i}").as_bytes());
    }
    let m = mounted(&s, "bkt");
    let n = names(&m.path("many"));
    assert_eq!(n.len(), 1100);
    assert_eq!(n[0], "f0000");
    assert_eq!(n[1099], "f1099");
    assert_eq!(fs::read(m.path("many/f1050")).unwrap(), b"1050");
    // ls -l works on the whole directory.
    let out = std::process::Command::new("ls")
        .arg("-l")
        .arg(m.path("many"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1101);
}

#[test]
fn stat_from_s3fs_headers_and_bare_objects() {
    let s = Server::moto();
    s.create_bucket("bkt");
    s.put_with(
        "bkt",
        "script.sh",
        b"#!/bin/sh\n",
        &[
            ("mode", "33261"),
            ("uid", "4321"),
            ("gid", "8765"),
            ("mtime", "1600000000"),
        ],
        None,
    );
    s.put_with("bkt", "frac", b"x", &[("mtime", "1600000000.25")], None);
    s.put_with(
        "bkt",
        "bogus",
        b"xyz",
        &[("mode", "banana"), ("uid", "-5"), ("mtime", "never")],
        None,
    );
    s.put("bkt", "bare", b"12345");
    s.put_with("bkt", "link", b"bare", &[("mode", "41471")], None);
    s.put_with(
        "bkt",
        "d/",
        b"",
        &[("mode", "16832"), ("uid", "99")],
        Some("application/x-directory"),
    );
    let m = MountBuilder::new(&s, "bkt")
        .arg("--file-mode")
        .arg("0640")
        .mount();

    let md = fs::metadata(m.path("script.sh")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o755);
    assert!(md.is_file());
    assert_eq!((md.uid(), md.gid()), (4321, 8765));
    assert_eq!(md.mtime(), 1_600_000_000);

    let frac = fs::metadata(m.path("frac")).unwrap();
    assert_eq!(
        (frac.mtime(), frac.mtime_nsec()),
        (1_600_000_000, 250_000_000)
    );

    let me = unsafe { libc::geteuid() };
    let bogus = fs::metadata(m.path("bogus")).unwrap();
    assert_eq!(
        bogus.permissions().mode() & 0o7777,
        0o640,
        "bogus mode falls back"
    );
    assert_eq!(bogus.uid(), me);
    assert_eq!(bogus.len(), 3);

    let bare = fs::metadata(m.path("bare")).unwrap();
    assert_eq!(bare.permissions().mode() & 0o7777, 0o640);
    assert_eq!(bare.len(), 5);
    assert_eq!(bare.uid(), me);
    let age = std::time::SystemTime::now()
        .duration_since(bare.modified().unwrap())
        .unwrap_or_default();
    assert!(
        age < Duration::from_secs(600),
        "mtime defaults to Last-Modified"
    );

    let link = fs::symlink_metadata(m.path("link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(
        fs::read_link(m.path("link")).unwrap().to_str(),
        Some("bare")
    );
    assert_eq!(fs::read(m.path("link")).unwrap(), b"12345");

    let d = fs::metadata(m.path("d")).unwrap();
    assert!(d.is_dir());
    assert_eq!(d.permissions().mode() & 0o7777, 0o700);
    assert_eq!(d.uid(), 99);
    assert!(md.modified().unwrap() >= UNIX_EPOCH);
}

#[test]
fn sequential_random_and_mmap_reads_match_the_object() {
    let (s, data) = server_with_big_object();
    let m = mounted(&s, "bkt");
    check_reads(&m, &data);
    assert!(
        resident_bytes(&m.path("big.bin")) > 0,
        "by default the kernel caches what was read"
    );
}

#[test]
fn direct_io_mount_reads_and_writes_without_the_page_cache() {
    let (s, data) = server_with_big_object();
    let m = MountBuilder::new(&s, "bkt")
        .arg("-o")
        .arg("direct_io")
        .mount();
    check_reads(&m, &data);
    assert_eq!(resident_bytes(&m.path("big.bin")), 0);

    // Writes go straight through as well, and land whole at close.
    let written = pattern(3 * 1024 * 1024 + 17, 9);
    common::write_file(&m.path("out.bin"), &written);
    assert_eq!(s.get("bkt", "out.bin"), written);
    assert_eq!(fs::read(m.path("out.bin")).unwrap(), written);
    assert_eq!(resident_bytes(&m.path("out.bin")), 0);
}

/// A moto server whose bucket `bkt` holds `big.bin`, 12 MiB and a bit, and those bytes.
fn server_with_big_object() -> (Server, Vec<u8>) {
    let s = Server::moto();
    s.create_bucket("bkt");
    let data = pattern(12 * 1024 * 1024 + 4321, 7);
    s.put("bkt", "big.bin", &data);
    (s, data)
}

/// Bytes of `path` in the kernel page cache, as fincore(1) counts them.
fn resident_bytes(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "fincore: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Sequential, random, backwards, dd, mmap and sha256sum reads of `big.bin` all see `data`.
fn check_reads(m: &Mount, data: &[u8]) {
    assert_eq!(fs::read(m.path("big.bin")).unwrap(), data);

    // Random reads on a fresh handle, including across block boundaries and past the end.
    let f = fs::File::open(m.path("big.bin")).unwrap();
    let mut x: u64 = 12345;
    for _ in 0..200 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        let off = (x >> 11) % data.len() as u64;
        let len = 1 + ((x >> 3) % 70_000) as usize;
        let mut buf = vec![0u8; len];
        let n = f.read_at(&mut buf, off).unwrap();
        let end = (off as usize + len).min(data.len());
        assert_eq!(&buf[..n], &data[off as usize..end], "read_at({off}, {len})");
    }

    // Backwards seeks with a plain reader.
    let mut f = fs::File::open(m.path("big.bin")).unwrap();
    for &off in &[9_000_000u64, 100, 5_000_000, 0] {
        f.seek(SeekFrom::Start(off)).unwrap();
        let mut buf = vec![0u8; 100_000];
        f.read_exact(&mut buf).unwrap();
        assert_eq!(&buf[..], &data[off as usize..off as usize + 100_000]);
    }

    // dd skip= reads the tail.
    let out = std::process::Command::new("dd")
        .arg(format!("if={}", m.path("big.bin").display()))
        .args(["bs=1M", "skip=11", "status=none"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, &data[11 << 20..]);

    // mmap reads.
    let f = fs::File::open(m.path("big.bin")).unwrap();
    let len = data.len();
    unsafe {
        use std::os::fd::AsRawFd;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let mapped = std::slice::from_raw_parts(p as *const u8, len);
        assert_eq!(&mapped[len - 5000..], &data[len - 5000..]);
        assert_eq!(
            &mapped[3 << 20..(3 << 20) + 4096],
            &data[3 << 20..(3 << 20) + 4096]
        );
        assert!(mapped == data);
        libc::munmap(p, len);
    }
    // sha256sum through the mount agrees with the bytes the server holds.
    let out = std::process::Command::new("sha256sum")
        .arg(m.path("big.bin"))
        .output()
        .unwrap();
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), data).unwrap();
    let want = std::process::Command::new("sha256sum")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).split(' ').next(),
        String::from_utf8_lossy(&want.stdout).split(' ').next()
    );
}

#[test]
fn a_read_racing_an_overwrite_never_mixes_versions() {
    let s = Server::moto();
    s.create_bucket("bkt");
    let old = pattern(6 << 20, 1);
    let new = pattern(6 << 20, 2);
    s.put("bkt", "obj", &old);
    // Little cached, no page cache: a later read of the handle must go to the store, where
    // only its If-Match keeps it from reading the new version.
    let m = MountBuilder::new(&s, "bkt")
        .arg("--metadata-ttl")
        .arg("0.2")
        .arg("--cache-size")
        .arg("2M")
        .arg("--max-prefetch")
        .arg("1M")
        .arg("--direct-io")
        .mount();

    let f = fs::File::open(m.path("obj")).unwrap();
    let mut got = vec![0u8; 64 * 1024];
    f.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(&got[..], &old[..got.len()]);
    s.put("bkt", "obj", &new);
    let e = f
        .read_exact_at(&mut got, 5 << 20)
        .expect_err("an open handle never reads another version");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    drop(f);
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        fs::read(m.path("obj")).unwrap() == new,
        "a new open sees the new version"
    );
}

#[test]
fn prefix_mount_shows_only_the_prefix() {
    let s = Server::moto();
    s.create_bucket("bkt");
    s.put("bkt", "data/set1/a.csv", b"a");
    s.put("bkt", "data/set1/sub/b.csv", b"bkt");
    s.put("bkt", "data/set10/no", b"no");
    s.put("bkt", "other", b"no");
    let m = mounted(&s, "bkt:data/set1");
    assert_eq!(names(&m.dir), ["a.csv", "sub"]);
    assert_eq!(fs::read(m.path("sub/b.csv")).unwrap(), b"bkt");
}

#[test]
fn read_only_mount_refuses_writes_with_erofs() {
    let s = Server::moto();
    s.create_bucket("bkt");
    s.put("bkt", "f", b"x");
    let ro = MountBuilder::new(&s, "bkt").arg("--read-only").mount();
    let e = fs::write(ro.path("new"), b"y").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = fs::OpenOptions::new()
        .write(true)
        .open(ro.path("f"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    assert_eq!(fs::read(ro.path("f")).unwrap(), b"x");
    let e = fs::create_dir(ro.path("d")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let e = fs::remove_file(ro.path("f")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    drop(ro);
    // -o ro is the same thing
    let ro = MountBuilder::new(&s, "bkt").arg("-o").arg("ro").mount();
    let e = fs::write(ro.path("new"), b"y").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    assert_eq!(s.keys("bkt"), ["f"]);
}
