//! The write path on a real mount over a real S3 server: what cp, rsync, tar, git, editors and
//! the shell do, checked through the mount and directly in the bucket.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::IntoRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};

use common::{Mount, MountBuilder, Server, append_file, close, pattern, sh, write_file};

const B: &str = "bkt";

fn setup() -> (Server, Mount) {
    let s = Server::moto();
    s.create_bucket(B);
    let m = MountBuilder::new(&s, B)
        .arg("--metadata-ttl")
        .arg("0.3")
        .mount();
    (s, m)
}

#[test]
fn shell_redirects_cp_and_s3fs_headers() {
    let (s, m) = setup();
    sh(&m.dir, "echo hello > a.txt && echo world >> a.txt");
    assert_eq!(s.get(B, "a.txt"), b"hello\nworld\n");
    let (meta, _) = s.head(B, "a.txt");
    let mode: u32 = meta["mode"].parse().unwrap();
    assert_eq!(mode & libc::S_IFMT, libc::S_IFREG);
    assert!(
        meta["mtime"]
            .split('.')
            .next()
            .unwrap()
            .parse::<u64>()
            .is_ok(),
        "{meta:?}"
    );
    assert_eq!(meta["uid"], unsafe { libc::geteuid() }.to_string());

    let src = tempfile::tempdir().unwrap();
    let big = pattern(7 << 20, 3);
    fs::write(src.path().join("big.bin"), &big).unwrap();
    fs::create_dir_all(src.path().join("tree/sub")).unwrap();
    for i in 0..20 {
        fs::write(
            src.path().join(format!("tree/sub/f{i}")),
            format!("file {i}"),
        )
        .unwrap();
    }
    sh(
        &m.dir,
        &format!("cp {0}/big.bin . && cp -r {0}/tree .", src.path().display()),
    );
    assert!(s.get(B, "big.bin") == big);
    assert_eq!(s.get(B, "tree/sub/f7"), b"file 7");
    assert_eq!(fs::read(m.path("tree/sub/f19")).unwrap(), b"file 19");
    assert_eq!(
        fs::metadata(m.path("big.bin")).unwrap().len(),
        big.len() as u64
    );
    // mode of a new file: 0666 & ~umask, as the caller asked
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(m.path("p"))
        .unwrap();
    close(f);
    let (meta, _) = s.head(B, "p");
    assert_eq!(
        meta["mode"].parse::<u32>().unwrap() & 0o777,
        0o640 & !0o022 & 0o640
    );
}

#[test]
fn a_child_closing_an_inherited_descriptor_does_not_commit_a_file_being_written() {
    let s = Server::moto();
    s.create_bucket(B);
    let m = MountBuilder::new(&s, B).mount();
    let data = pattern(24 << 20, 70);
    let mut f = fs::File::create(m.path("log")).unwrap();
    f.write_all(&data[..12 << 20]).unwrap();
    // The child gets the descriptor at fork and closes it when it execs and when it exits.
    let st = std::process::Command::new("true").status().unwrap();
    assert!(st.success());
    assert!(
        s.try_get(B, "log").is_none(),
        "not committed half-written by someone else's close"
    );
    f.write_all(&data[12 << 20..]).unwrap();
    close(f);
    assert!(s.get(B, "log") == data);
    assert_eq!(s.pending_uploads(B), 0);
}

#[test]
fn durable_at_close_and_fsync() {
    let (s, m) = setup();
    let mut f = fs::File::create(m.path("d.txt")).unwrap();
    f.write_all(b"first").unwrap();
    f.sync_all().unwrap();
    assert_eq!(
        s.get(B, "d.txt"),
        b"first",
        "fsync makes it durable before close"
    );
    f.write_all(b" second").unwrap();
    close(f);
    assert_eq!(s.get(B, "d.txt"), b"first second", "close makes it durable");
    // An empty touch and O_CREAT|O_RDONLY still create objects.
    sh(&m.dir, "touch empty");
    assert_eq!(s.get(B, "empty"), b"");
    drop(
        fs::OpenOptions::new()
            .read(true)
            .write(false)
            .create(false)
            .open(m.path("empty"))
            .unwrap(),
    );
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), 0) };
    unsafe { libc::close(fd) };
    let path = std::ffi::CString::new(m.path("rdonly").to_str().unwrap()).unwrap();
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_CREAT | libc::O_RDONLY, 0o644) };
    assert!(fd >= 0);
    assert_eq!(unsafe { libc::close(fd) }, 0);
    assert_eq!(s.get(B, "rdonly"), b"");
}

#[test]
fn mkdir_rmdir_rm_r_and_directory_persistence() {
    let (s, m) = setup();
    sh(&m.dir, "mkdir -p a/b/c && echo x > a/b/c/f");
    let (meta, ct) = s.head(B, "a/b/");
    assert_eq!(ct.as_deref(), Some("application/x-directory"));
    assert_eq!(
        meta["mode"].parse::<u32>().unwrap() & libc::S_IFMT,
        libc::S_IFDIR
    );
    let e = fs::remove_dir(m.path("a/b/c")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    fs::remove_file(m.path("a/b/c/f")).unwrap();
    assert!(
        m.path("a/b/c").is_dir(),
        "a directory outlives its last file"
    );
    fs::remove_dir(m.path("a/b/c")).unwrap();
    assert!(!s.keys(B).contains(&"a/b/c/".to_string()));
    // The last entry of an implicit directory (no marker) goes: the directory stays.
    s.put(B, "imp/only.txt", b"1");
    fs::remove_file(m.path("imp/only.txt")).unwrap();
    assert!(s.keys(B).contains(&"imp/".to_string()));
    assert!(m.path("imp").is_dir());
    sh(&m.dir, "mkdir -p r/s/t && touch r/s/t/u r/v && rm -r r");
    assert!(
        s.keys(B).iter().all(|k| !k.starts_with("r/")),
        "{:?}",
        s.keys(B)
    );
    assert_eq!(
        fs::create_dir(m.path("a")).unwrap_err().raw_os_error(),
        Some(libc::EEXIST)
    );
}

#[test]
fn rename_files_and_directories() {
    let (s, m) = setup();
    sh(
        &m.dir,
        "mkdir -p src/in && echo 1 > src/one && echo 2 > src/in/two && echo old > target",
    );
    sh(&m.dir, "mv src dst");
    assert_eq!(
        s.keys(B),
        ["dst/", "dst/in/", "dst/one", "dst/in/two", "target"]
            .iter()
            .map(|k| k.to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(fs::read(m.path("dst/in/two")).unwrap(), b"2\n");
    assert!(!m.path("src").exists());
    sh(&m.dir, "mv dst/one target");
    assert_eq!(
        s.get(B, "target"),
        b"1\n",
        "rename replaces an existing file"
    );
    assert!(s.try_get(B, "dst/one").is_none());
    // renameat2(RENAME_NOREPLACE) refuses an existing target.
    sh(&m.dir, "echo a > x && echo b > y");
    let (x, y) = (
        std::ffi::CString::new(m.path("x").to_str().unwrap()).unwrap(),
        std::ffi::CString::new(m.path("y").to_str().unwrap()).unwrap(),
    );
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            x.as_ptr(),
            libc::AT_FDCWD,
            y.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EEXIST)
    );
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            x.as_ptr(),
            libc::AT_FDCWD,
            y.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(r, -1, "RENAME_EXCHANGE cannot be done on S3");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EINVAL)
    );
    assert_eq!(s.get(B, "y"), b"b\n");
}

#[test]
fn editors_save_via_rename_and_sed_i() {
    let (s, m) = setup();
    sh(
        &m.dir,
        "printf 'line one\\nline two\\n' > doc.txt && chmod 640 doc.txt && sed -i 's/two/2/' doc.txt",
    );
    assert_eq!(s.get(B, "doc.txt"), b"line one\nline 2\n");
    assert_eq!(
        fs::metadata(m.path("doc.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    assert!(
        s.keys(B).iter().all(|k| k == "doc.txt"),
        "no temp files left: {:?}",
        s.keys(B)
    );
}

#[test]
fn truncate_overwrite_in_the_middle_and_append() {
    let (s, m) = setup();
    let mut want = pattern(12 << 20, 5);
    write_file(&m.path("big"), &want);
    // dd conv=notrunc seek= writes into the middle
    sh(
        &m.dir,
        "printf 'MIDDLE' | dd of=big bs=1 seek=6000000 conv=notrunc status=none",
    );
    want[6_000_000..6_000_006].copy_from_slice(b"MIDDLE");
    assert!(s.get(B, "big") == want);
    // appending 1 MiB to a 12 MiB file copies the old bytes server-side
    let before = m.bytes_written();
    let extra = pattern(1 << 20, 6);
    append_file(&m.path("big"), &extra);
    want.extend_from_slice(&extra);
    let sent = m.bytes_written() - before;
    assert!(s.get(B, "big") == want);
    assert!(
        sent < 4 << 20,
        "appending re-sent {sent} bytes; the old 12 MiB must be copied, not sent"
    );
    // truncate -s down and up
    sh(&m.dir, "truncate -s 100 big && truncate -s 200 big");
    let got = s.get(B, "big");
    assert_eq!(got.len(), 200);
    assert_eq!(&got[..100], &want[..100]);
    assert!(got[100..].iter().all(|&b| b == 0));
    // a seek-and-write on the same handle, then a read back through it
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("big"))
        .unwrap();
    f.seek(SeekFrom::Start(10)).unwrap();
    f.write_all(b"abc").unwrap();
    f.seek(SeekFrom::Start(8)).unwrap();
    let mut buf = [0u8; 7];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[2..5], b"abc");
    close(f);
    assert_eq!(&s.get(B, "big")[10..13], b"abc");
}

#[test]
fn symlinks_chmod_chown_touch_and_xattrs() {
    let (s, m) = setup();
    s.put_with(B, "kept", b"data", &[("custom", "yes")], Some("text/plain"));
    sh(
        &m.dir,
        "ln -s kept link && chmod 600 kept && chown 1234:4321 kept && touch -d '2021-02-03 04:05:06 UTC' kept",
    );
    assert_eq!(s.get(B, "link"), b"kept");
    assert_eq!(s.head(B, "link").0["mode"], "41471");
    assert_eq!(
        fs::read_link(m.path("link")).unwrap().to_str(),
        Some("kept")
    );
    let (meta, ct) = s.head(B, "kept");
    assert_eq!(meta["mode"], (libc::S_IFREG | 0o600).to_string());
    assert_eq!(
        (meta["uid"].as_str(), meta["gid"].as_str()),
        ("1234", "4321")
    );
    assert_eq!(meta["mtime"], "1612325106");
    assert_eq!(meta["custom"], "yes", "other headers survive");
    assert_eq!(ct.as_deref(), Some("text/plain"));
    assert_eq!(s.get(B, "kept"), b"data");
    let md = fs::metadata(m.path("kept")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mtime()), (1234, 4321, 1612325106));
    sh(&m.dir, "setfattr -n user.color -v blue kept");
    assert_eq!(
        sh(&m.dir, "getfattr --only-values -n user.color kept"),
        "blue"
    );
    assert!(s.head(B, "kept").0["xattr"].contains("user.color"));
    assert!(sh(&m.dir, "getfattr -d kept").contains("user.color=\"blue\""));
    sh(&m.dir, "setfattr -x user.color kept");
    assert!(!s.head(B, "kept").0.contains_key("xattr"));
    // A missing user attribute is ENODATA; other namespaces do not exist here (ENOTSUP), which
    // `ls -l` remembers per filesystem instead of asking every file for its label and ACL.
    let path = std::ffi::CString::new(m.path("kept").to_str().unwrap()).unwrap();
    let get = |name: &std::ffi::CStr| {
        let r = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
        assert_eq!(r, -1);
        std::io::Error::last_os_error().raw_os_error()
    };
    assert_eq!(get(c"user.color"), Some(libc::ENODATA));
    assert_eq!(get(c"security.selinux"), Some(libc::ENOTSUP));
    assert_eq!(get(c"system.posix_acl_access"), Some(libc::ENOTSUP));
}

#[test]
fn errnos_for_what_s3_cannot_do() {
    let (s, m) = setup();
    sh(&m.dir, "echo x > f");
    assert_eq!(
        fs::hard_link(m.path("f"), m.path("g"))
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENOTSUP)
    );
    assert_eq!(
        fs::write(m.path(&"n".repeat(256)), b"")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ENAMETOOLONG)
    );
    let e = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("f"))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    // a key over 1024 bytes
    let mut deep = m.dir.clone();
    for _ in 0..6 {
        deep = deep.join("d".repeat(200));
    }
    let e = fs::create_dir_all(&deep).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG));
    assert!(s.get(B, "f") == b"x\n");
}

#[test]
fn parallel_writers_and_a_300_mib_stream() {
    let (s, m) = setup();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let path = m.path(&format!("w{i}"));
            std::thread::spawn(move || {
                let data = pattern(3 << 20, 100 + i);
                write_file(&path, &data);
                data
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let data = h.join().unwrap();
        assert!(s.get(B, &format!("w{i}")) == data, "writer {i}");
    }
    let big = pattern(300 << 20, 9);
    let mut f = fs::File::create(m.path("stream.bin")).unwrap();
    for chunk in big.chunks(1 << 20) {
        f.write_all(chunk).unwrap();
    }
    close(f);
    assert!(s.get(B, "stream.bin") == big, "300 MiB streamed intact");
}

#[test]
fn unlinked_open_file_stays_readable() {
    let (s, m) = setup();
    let data = pattern(2 << 20, 11);
    s.put(B, "open", &data);
    let mut f = fs::File::open(m.path("open")).unwrap();
    let mut head = vec![0u8; 1000];
    f.read_exact(&mut head).unwrap();
    fs::remove_file(m.path("open")).unwrap();
    assert!(!m.path("open").exists());
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).unwrap();
    head.extend_from_slice(&rest);
    assert!(head == data);
    assert!(
        s.try_get(B, "open").is_some(),
        "the object stays while the file is open"
    );
    close(f);
    // RELEASE reaches the mount after close(2) returns: wait for the deferred delete.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.try_get(B, "open").is_some() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(s.try_get(B, "open").is_none(), "deleted at the last close");
}

#[test]
fn rsync_tar_and_git_work_in_the_mount() {
    let (s, m) = setup();
    let src = tempfile::tempdir().unwrap();
    sh(
        src.path(),
        "mkdir -p p/q && for i in $(seq 1 30); do head -c $((i * 1000)) /dev/urandom > p/q/f$i; done && ln -s q/f1 p/l && chmod 700 p/q/f2",
    );
    sh(&m.dir, &format!("rsync -a {}/p/ r/", src.path().display()));
    let second = sh(
        &m.dir,
        &format!("rsync -a --stats {}/p/ r/", src.path().display()),
    );
    assert!(
        second.contains("Number of regular files transferred: 0"),
        "{second}"
    );
    sh(&m.dir, &format!("diff -r {}/p r", src.path().display()));
    // tar in and out
    sh(src.path(), "tar cf t.tar p");
    sh(
        &m.dir,
        &format!(
            "mkdir t && tar xf {}/t.tar -C t && tar cf {}/back.tar -C t p",
            src.path().display(),
            src.path().display()
        ),
    );
    sh(
        src.path(),
        "mkdir back && tar xf back.tar -C back && diff -r p back/p",
    );
    assert!(s.keys(B).contains(&"t/p/q/f30".to_string()));
    // git
    sh(
        &m.dir,
        "mkdir repo && cd repo && git init -q && git config user.email t@e && git config user.name t && echo hi > README && git add README && git commit -qm first && echo more >> README && git commit -qam second && git log --oneline | wc -l > ../commits && git status --porcelain > ../status",
    );
    assert_eq!(fs::read_to_string(m.path("commits")).unwrap().trim(), "2");
    assert_eq!(fs::read_to_string(m.path("status")).unwrap(), "");
    assert!(
        s.keys(B)
            .iter()
            .any(|k| k.starts_with("repo/.git/objects/"))
    );
}

#[test]
fn a_failed_upload_is_an_error_at_close_and_leaves_no_object() {
    let mut s = Server::s3s_fs();
    s.create_bucket(B);
    let m = MountBuilder::new(&s, B).mount();
    let mut f = fs::File::create(m.path("doomed")).unwrap();
    f.write_all(&pattern(20 << 20, 12)).unwrap();
    assert_eq!(
        s.wait_for_pending_uploads(B, 1, std::time::Duration::from_secs(10)),
        1,
        "a multipart upload is open"
    );
    s.stop();
    let fd = f.into_raw_fd();
    let r = unsafe { libc::close(fd) };
    let err = std::io::Error::last_os_error();
    assert_eq!(r, -1, "close must report the failed upload");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    s.restart_s3s_fs();
    assert!(s.try_get(B, "doomed").is_none(), "no partial object");
    // The abort failed while the server was down; it is tried again once the server is back.
    assert_eq!(
        s.wait_for_pending_uploads(B, 0, std::time::Duration::from_secs(30)),
        0,
        "no multipart upload left behind"
    );
    drop(m);
}

#[test]
fn noxattr_turns_extended_attributes_off() {
    let s = Server::moto();
    s.create_bucket(B);
    let m = MountBuilder::new(&s, B).arg("-o").arg("noxattr").mount();
    sh(&m.dir, "echo x > f");
    let path = std::ffi::CString::new(m.path("f").to_str().unwrap()).unwrap();
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            c"user.k".as_ptr(),
            b"v".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EOPNOTSUPP)
    );
    assert!(!s.head(B, "f").0.contains_key("xattr"));
}

/// The CRC32C s3s-fs recorded for an object (it keeps it beside the object, and rejects an
/// upload whose checksum header does not match its body with BadDigest).
fn s3s_fs_crc32c(s: &Server, key: &str) -> Option<String> {
    let b64 = |v: &str| {
        aws_smithy_types::base64::encode(v)
            .trim_end_matches('=')
            .to_string()
    };
    let name = format!(".bucket-{}.object-{}.internal.json", b64(B), b64(key));
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(s.data_dir().join(name)).ok()?).ok()?;
    json["checksum_crc32c"].as_str().map(str::to_string)
}

fn crc32c_base64(data: &[u8]) -> String {
    let mut sum = aws_smithy_checksums::ChecksumAlgorithm::Crc32c.into_impl();
    sum.update(data);
    sum.header_value().to_str().unwrap().to_string()
}

#[test]
fn checksums_option_sends_crc32c_on_every_upload_path() {
    for s in [Server::s3s_fs(), Server::moto()] {
        s.create_bucket(B);
        let m = MountBuilder::new(&s, B)
            .arg("--checksums")
            .arg("--metadata-ttl")
            .arg("0")
            .mount();
        // One PutObject: the store holds the CRC32C the mount computed.
        let small = pattern(100_000, 1);
        write_file(&m.path("small"), &small);
        assert_eq!(s.get(B, "small"), small);
        if s.is_s3s_fs() {
            assert_eq!(
                s3s_fs_crc32c(&s, "small").as_deref(),
                Some(crc32c_base64(&small).as_str())
            );
        }
        // A streamed multipart upload, then an append that copies the old parts server-side,
        // a rename (CopyObject) and a chmod (CopyObject with REPLACE): the store accepts every
        // checksum the mount sends, and the test client's own GETs, which validate whatever
        // checksum the store returns, see the right bytes.
        let mut big = pattern(20 << 20, 2);
        write_file(&m.path("big"), &big);
        assert!(s.get(B, "big") == big);
        let extra = pattern(1 << 20, 3);
        append_file(&m.path("big"), &extra);
        big.extend_from_slice(&extra);
        assert!(s.get(B, "big") == big);
        fs::rename(m.path("big"), m.path("moved")).unwrap();
        fs::set_permissions(m.path("moved"), fs::Permissions::from_mode(0o600)).unwrap();
        // (moto records a wrong CRC32C when it copies an object uploaded in CRC32C parts, so
        // its copies are checked through the mount, whose ranged GETs carry no checksum.)
        if s.is_s3s_fs() {
            assert!(s.get(B, "moved") == big);
        }
        assert!(fs::read(m.path("moved")).unwrap() == big);
        assert_eq!(s.pending_uploads(B), 0);
    }
}
