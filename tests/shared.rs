//! Many hands on one file, on a real mount over a real S3 server (moto): several descriptors,
//! threads and processes, and other clients, each behaviour checked in the mount and directly
//! in the bucket (DESIGN.md, "Files, not keys").

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use common::{Mount, MountBuilder, Server, close, pattern, sh, write_file};

const B: &str = "bkt";
const MIB: usize = 1 << 20;

fn setup(args: &[&str]) -> (Server, Mount) {
    let s = Server::moto();
    s.create_bucket(B);
    let m = args
        .iter()
        .fold(MountBuilder::new(&s, B), |b, a| b.arg(a))
        .mount();
    (s, m)
}

/// Unmounts (which waits for every release the kernel still had to send) and checks the mount
/// reported no failure.
fn finish(m: Mount) {
    let (status, log) = m.finish();
    assert!(status.success(), "unmount: {status}\n{log}");
}

/// `path`'s content in the bucket stays `want` for a while (a deferred delete or a stale
/// commit would show within milliseconds of the close that triggers it).
fn stays(s: &Server, key: &str, want: &[u8]) {
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(
            s.try_get(B, key).as_deref(),
            Some(want),
            "{key} in the bucket"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn recreating_a_name_while_the_old_file_is_open_keeps_the_new_file() {
    let (s, m) = setup(&[]);
    s.put(B, "f", b"old");
    s.put(B, "g", b"old g");
    let mut r = fs::File::open(m.path("f")).unwrap();
    let mut got = String::new();
    r.read_to_string(&mut got).unwrap();
    assert_eq!(got, "old");
    sh(&m.dir, "rm f && echo new > f");
    assert_eq!(fs::read(m.path("f")).unwrap(), b"new\n");
    assert_eq!(s.get(B, "f"), b"new\n");
    drop(r);
    stays(&s, "f", b"new\n");
    assert_eq!(fs::read(m.path("f")).unwrap(), b"new\n");

    // The same with `mv tmp g` over a name whose old file is open.
    let r = fs::File::open(m.path("g")).unwrap();
    sh(&m.dir, "echo newer > tmp && mv tmp g");
    assert_eq!(fs::read(m.path("g")).unwrap(), b"newer\n");
    drop(r);
    stays(&s, "g", b"newer\n");
    finish(m);
    assert_eq!(s.get(B, "f"), b"new\n");
    assert_eq!(s.get(B, "g"), b"newer\n");
    assert_eq!(s.keys(B), ["f", "g"]);
}

#[test]
fn a_file_renamed_over_while_being_written_keeps_the_new_file() {
    let (s, m) = setup(&[]);
    // Small (one PUT at close) and large (streaming parts while written).
    for (name, size) in [("out", 3000), ("big", 20 * MIB)] {
        let first = pattern(size, 1);
        let mut a = fs::File::create(m.path(name)).unwrap();
        a.write_all(&first).unwrap();
        write_file(&m.path("tmp"), b"from B");
        sh(&m.dir, &format!("mv tmp {name}"));
        a.write_all(b"more from A").unwrap();
        close(a); // succeeds: A's bytes belong to a file with no name
        assert_eq!(fs::read(m.path(name)).unwrap(), b"from B");
        stays(&s, name, b"from B");
    }
    assert_eq!(
        s.pending_uploads(B),
        0,
        "the replaced file's stream was aborted"
    );
    finish(m);
    assert_eq!(s.keys(B), ["big", "out"]);
    assert_eq!(s.get(B, "big"), b"from B");
}

#[test]
fn renaming_a_directory_moves_a_file_open_for_writing_inside() {
    let (s, m) = setup(&[]);
    fs::create_dir(m.path("logs")).unwrap();
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(m.path("logs/app.log"))
        .unwrap();
    log.write_all(b"line 1\n").unwrap();
    // A temp file unlinked while open is not copied by the directory rename.
    let mut scratch = fs::File::create(m.path("logs/scratch")).unwrap();
    scratch.write_all(b"scratch").unwrap();
    scratch.sync_all().unwrap();
    fs::remove_file(m.path("logs/scratch")).unwrap();
    sh(&m.dir, "mv logs logs-old");
    log.write_all(b"line 2\n").unwrap();
    close(log);
    scratch.write_all(b" more").unwrap();
    close(scratch);
    assert_eq!(
        fs::read(m.path("logs-old/app.log")).unwrap(),
        b"line 1\nline 2\n"
    );
    assert!(!m.path("logs").exists(), "logs/ is not recreated");
    finish(m);
    assert_eq!(s.get(B, "logs-old/app.log"), b"line 1\nline 2\n");
    assert_eq!(s.keys(B), ["logs-old/", "logs-old/app.log"]);
}

#[test]
fn metadata_changed_on_an_open_file_survives_its_commit() {
    let (s, m) = setup(&[]);
    s.put(B, "f", b"data\n");
    s.put(B, "g", b"data\n");
    // Changed before the first write through the descriptor...
    let out = sh(
        &m.dir,
        "exec 3<>f; chmod 600 f; chown 1234:2345 f; setfattr -n user.tag -v blue f; \
         getfattr --only-values -n user.tag f; echo; echo x >&3; exec 3>&-",
    );
    assert_eq!(out.trim(), "blue", "getfattr shows the new value at once");
    // ...and after it.
    sh(
        &m.dir,
        "exec 3<>g; echo x >&3; chmod 640 g; touch -d @1500000000 g; \
         setfattr -n user.tag -v red g; exec 3>&-",
    );
    let check = |key: &str, mode: u32, tag: &str| {
        let (meta, _) = s.head(B, key);
        assert_eq!(
            meta["mode"].parse::<u32>().unwrap() & 0o7777,
            mode,
            "{meta:?}"
        );
        assert!(meta["xattr"].contains("user.tag"), "{meta:?}");
        assert_eq!(s.get(B, key), b"x\nta\n");
        let md = fs::metadata(m.path(key)).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, mode);
        let v = sh(&m.dir, &format!("getfattr --only-values -n user.tag {key}"));
        assert_eq!(v, tag);
    };
    check("f", 0o600, "blue");
    let (meta, _) = s.head(B, "f");
    assert_eq!(
        (meta["uid"].as_str(), meta["gid"].as_str()),
        ("1234", "2345")
    );
    check("g", 0o640, "red");
    let (meta, _) = s.head(B, "g");
    assert!(meta["mtime"].starts_with("1500000000"), "{meta:?}");
    assert_eq!(fs::metadata(m.path("g")).unwrap().mtime(), 1_500_000_000);
    finish(m);
}

#[test]
fn looking_at_a_file_being_written_never_commits_it() {
    let (s, m) = setup(&[]);
    let data = pattern(40 * MIB, 7);
    let mut w = fs::File::create(m.path("big")).unwrap();
    w.write_all(&data[..30 * MIB]).unwrap();
    assert_eq!(
        s.wait_for_pending_uploads(B, 1, Duration::from_secs(10)),
        1,
        "parts are streaming"
    );
    // An indexer, `file`, `tail` and a progress monitor, each its own process.
    let head = sh(&m.dir, "head -c 4096 big | od -An -tx1 | head -1");
    let want: String = data[..16].iter().map(|b| format!(" {b:02x}")).collect();
    assert_eq!(head.trim(), want.trim(), "bytes already uploaded read back");
    let tail = sh(&m.dir, "tail -c 100 big | od -An -tx1 | head -1");
    let want: String = data[30 * MIB - 100..][..16]
        .iter()
        .map(|b| format!(" {b:02x}"))
        .collect();
    assert_eq!(tail.trim(), want.trim());
    assert_eq!(sh(&m.dir, "stat -c %s big").trim(), (30 * MIB).to_string());
    let sum = sh(&m.dir, "sha256sum < big");
    let mut mid = vec![0u8; 100];
    let r = fs::File::open(m.path("big")).unwrap();
    r.read_exact_at(&mut mid, 10 * MIB as u64).unwrap();
    assert_eq!(mid, data[10 * MIB..][..100]);
    close(r);
    assert!(s.try_get(B, "big").is_none(), "no partial object");
    assert_eq!(s.pending_uploads(B), 1, "the writer's upload goes on");
    w.write_all(&data[30 * MIB..]).unwrap();
    close(w);
    assert!(s.get(B, "big") == data);
    let whole = sh(&m.dir, "sha256sum < big");
    assert_ne!(sum, whole, "the reader saw the 30 MiB written then");
    finish(m);
}

#[test]
fn temp_file_pattern_works_and_uploads_nothing() {
    // Staging limited so that staging not freed at the close would fail the second round.
    let (s, m) = setup(&["--tmp-size", "64M"]);
    for round in 0..2 {
        let path = m.path("scratch.tmp");
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        // Unlinked before a write (the usual pattern), and after 20 MiB (already streaming).
        let before = if round == 0 { 0 } else { 20 * MIB };
        let data = pattern(30 * MIB, round);
        f.write_all(&data[..before]).unwrap();
        fs::remove_file(&path).unwrap();
        f.write_all(&data[before..]).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut back = Vec::new();
        f.read_to_end(&mut back).unwrap();
        assert!(
            back == data,
            "round {round}: read back through the descriptor"
        );
        f.write_all_at(b"patched", 5).unwrap();
        let mut p = [0u8; 7];
        f.read_exact_at(&mut p, 5).unwrap();
        assert_eq!(&p, b"patched");
        f.sync_all().unwrap();
        close(f);
        assert!(!path.exists());
        let keys = s.keys(B);
        assert!(keys.is_empty(), "round {round}: {keys:?}\n{}", m.log());
        assert_eq!(s.pending_uploads(B), 0);
    }
    finish(m);
}

#[test]
fn threads_sharing_one_descriptor_get_full_reads() {
    let (s, m) = setup(&[]);
    let data = pattern(64 * MIB, 3);
    s.put(B, "big", &data);
    let f = fs::File::open(m.path("big")).unwrap();
    std::thread::scope(|sc| {
        for t in 0..8u64 {
            let (f, data) = (&f, &data);
            sc.spawn(move || {
                let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                let mut buf = vec![0u8; 3 * MIB];
                for _ in 0..25 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let at = (x % (data.len() - 1) as u64) as usize;
                    let want = (data.len() - at).min(buf.len());
                    // One pread: a short count before the end of file is the bug.
                    let n = unsafe {
                        libc::pread(
                            f.as_raw_fd(),
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                            at as libc::off_t,
                        )
                    };
                    assert!(n >= 0, "pread: {}", std::io::Error::last_os_error());
                    assert_eq!(n as usize, want, "short read at {at}");
                    assert!(buf[..want] == data[at..at + want], "bytes at {at}");
                }
            });
        }
    });
    close(f);
    finish(m);
}

#[test]
fn a_multipart_object_reads_at_once_after_mv_and_chmod() {
    // A long TTL: the mount trusts what it knows, so the new ETag must be what it knows.
    let (s, m) = setup(&["--metadata-ttl", "30"]);
    let data = pattern(20 * MIB, 5);
    write_file(&m.path("a"), &data);
    assert!(fs::read(m.path("a")).unwrap() == data);
    sh(&m.dir, "mv a b");
    assert!(
        fs::read(m.path("b")).unwrap() == data,
        "read right after mv"
    );
    fs::set_permissions(m.path("b"), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        fs::read(m.path("b")).unwrap() == data,
        "read right after chmod"
    );
    // A descriptor open across the rename and chmod keeps reading too.
    let r = fs::File::open(m.path("b")).unwrap();
    let mut head = vec![0u8; 1000];
    r.read_exact_at(&mut head, 0).unwrap();
    sh(&m.dir, "mv b c && chmod 644 c");
    let mut tail = vec![0u8; 1000];
    r.read_exact_at(&mut tail, (19 * MIB) as u64).unwrap();
    assert_eq!(tail, data[19 * MIB..][..1000]);
    close(r);
    finish(m);
    assert!(s.get(B, "c") == data);
}

#[test]
fn truncate_by_path_while_open_is_in_the_bucket_when_it_returns() {
    let (s, m) = setup(&[]);
    s.put(B, "f", &pattern(100_000, 1));
    let other = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("f"))
        .unwrap();
    let reader = fs::File::open(m.path("f")).unwrap();
    // truncate(1) opens the file and truncates through its descriptor; truncate(2) has none.
    sh(&m.dir, "truncate -s 10 f");
    assert_eq!(s.get(B, "f"), pattern(100_000, 1)[..10]);
    let path = std::ffi::CString::new(m.path("f").into_os_string().into_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::truncate(path.as_ptr(), 5) }, 0);
    assert_eq!(s.get(B, "f"), pattern(100_000, 1)[..5]);
    sh(&m.dir, "truncate -s 10 f");
    let mut want = pattern(100_000, 1)[..5].to_vec();
    want.resize(10, 0);
    assert_eq!(s.get(B, "f"), want);
    let mut buf = vec![0u8; 100];
    let n = reader.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], &want[..], "an open reader sees the truncation");
    close(other);
    close(reader);
    stays(&s, "f", &want);
    finish(m);
}

#[test]
fn readdirplus_never_shows_older_attributes_than_the_file_has() {
    let (_s, m) = setup(&["--metadata-ttl", "30"]);
    write_file(&m.path("g"), b"g");
    let mut w = fs::File::create(m.path("w")).unwrap();
    w.write_all(&[7u8; 5000]).unwrap();
    // The directory is opened (its listing snapshot taken), then g changes, then it is read.
    let rd = fs::read_dir(&m.dir).unwrap();
    fs::set_permissions(m.path("g"), fs::Permissions::from_mode(0o600)).unwrap();
    let seen: Vec<(String, u32, u64)> = rd
        .map(|e| {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            (
                e.file_name().into_string().unwrap(),
                md.permissions().mode() & 0o777,
                md.len(),
            )
        })
        .collect();
    assert!(seen.contains(&("g".into(), 0o600, 1)), "{seen:?}");
    assert!(seen.contains(&("w".into(), 0o644, 5000)), "{seen:?}");
    assert_eq!(fs::metadata(m.path("g")).unwrap().mode() & 0o777, 0o600);
    let ls = sh(&m.dir, "ls -l");
    assert!(
        ls.lines()
            .any(|l| l.starts_with("-rw-------") && l.ends_with(" g")),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.contains(" 5000 ") && l.ends_with(" w")),
        "{ls}"
    );
    close(w);
    finish(m);
}

#[test]
fn another_clients_overwrite_shows_within_the_ttl_under_constant_reads() {
    let (s, m) = setup(&[]); // default TTL: 1 s
    s.put(B, "page", b"version 1");
    let read = || fs::read(m.path("page")).unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(read(), b"version 1");
        std::thread::sleep(Duration::from_millis(200));
    }
    s.put(B, "page", b"version 2, longer");
    let changed = Instant::now();
    loop {
        if read() == b"version 2, longer" {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(2),
            "still the old version {:?} after the TTL plus a second",
            changed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    finish(m);
}

#[test]
fn rmdir_sees_past_unlinked_open_files() {
    let (s, m) = setup(&[]);
    for k in ["d/a", "d/b", "d/c"] {
        s.put(B, k, k.as_bytes());
    }
    let a = fs::File::open(m.path("d/a")).unwrap();
    let b = fs::File::open(m.path("d/b")).unwrap();
    sh(&m.dir, "rm d/a d/b");
    let err = fs::remove_dir(m.path("d")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
    assert_eq!(s.get(B, "d/c"), b"d/c");
    drop((a, b));
    fs::remove_file(m.path("d/c")).unwrap();
    fs::remove_dir(m.path("d")).unwrap();
    finish(m);
    assert!(s.keys(B).is_empty(), "{:?}", s.keys(B));
}

#[test]
fn fsync_on_any_descriptor_commits_the_file() {
    let (s, m) = setup(&[]);
    s.put(B, "f", b"old");
    let reader = fs::File::open(m.path("f")).unwrap();
    let mut writer = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path("f"))
        .unwrap();
    writer.write_all(b"new content").unwrap();
    reader.sync_all().unwrap();
    assert_eq!(s.get(B, "f"), b"new content");
    close(writer);
    close(reader);
    finish(m);
}
