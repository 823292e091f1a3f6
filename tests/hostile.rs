//! A hostile bucket: keys with `//`, `.`/`..` segments, control characters, newlines, spaces, `+`,
//! non-ASCII, a body on a `dir/` key, both `x` and `x/y`, a 1024-byte key, zero-byte objects and
//! bogus metadata, a directory of 100,000 keys, objects changing while listed or open. The mount
//! lists what it can, skips what it cannot show, and never hangs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{MountBuilder, Server};

const B: &str = "bkt";

fn run_with_timeout(cmd: &str, args: &[&str]) -> std::process::Output {
    run_within(30, cmd, args)
}

fn run_within(secs: u32, cmd: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("timeout")
        .arg(secs.to_string())
        .arg(cmd)
        .args(args)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(124), "{cmd} {args:?} hung");
    out
}

#[test]
fn odd_keys_are_listed_or_skipped_never_fatal() {
    let s = Server::moto();
    s.create_bucket(B);
    let long = "k".repeat(1024);
    let keys: Vec<&str> = vec![
        "ok.txt",
        "ctl\u{1}key",
        "tab\there",
        "sp ace",
        "plus+sign",
        "uni-\u{e9}\u{e8}",
        "d//x",
        "./dot",
        "../dd",
        "a/./b",
        "trail/",
        "x",
        "x/y",
        "withbody/",
        "zero",
        &long,
    ];
    for k in &keys {
        let body: &[u8] = if *k == "zero" { b"" } else { b"data" };
        s.put(B, k, body);
    }
    s.put_with(
        B,
        "bogus",
        b"data",
        &[("mode", "not-a-mode"), ("mtime", "never"), ("uid", "-1")],
        None,
    );
    let m = MountBuilder::new(&s, B).mount();

    let out = run_with_timeout("ls", &["-la", m.dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut want = vec![
        "a",
        "bogus",
        "ctl\u{1}key",
        "d",
        "ok.txt",
        "plus+sign",
        "sp ace",
        "tab\there",
        "trail",
        "uni-\u{e9}\u{e8}",
        "withbody",
        "x",
        "zero",
    ];
    want.sort();
    assert_eq!(names, want);
    assert!(m.path("x").is_dir(), "x is a directory when x/y exists");
    assert!(m.path("withbody").is_dir());
    for f in [
        "ctl\u{1}key",
        "tab\there",
        "sp ace",
        "plus+sign",
        "uni-\u{e9}\u{e8}",
        "bogus",
    ] {
        assert_eq!(std::fs::read(m.path(f)).unwrap(), b"data", "{f:?}");
    }
    assert_eq!(std::fs::read(m.path("zero")).unwrap(), b"");
    let bogus = std::fs::metadata(m.path("bogus")).unwrap();
    assert!(bogus.modified().unwrap().elapsed().unwrap() < Duration::from_secs(3600));
    // Walking everything terminates and every listed directory opens.
    let out = run_with_timeout("find", &[m.dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = String::from_utf8_lossy(&out.stdout);
    assert!(found.contains("/x/y"), "{found}");
    assert!(!found.contains("/./") && !found.contains("/../"), "{found}");
    let out = run_with_timeout("ls", &["-lR", m.dir.to_str().unwrap()]);
    assert!(out.status.success());
    // Skipped keys are logged once, not fatal.
    assert!(m.log().contains("not shown in the mount"), "{}", m.log());
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_directory_of_100000_keys_lists_completely() {
    const N: usize = 100_000;
    let s = Server::s3s_fs();
    s.create_bucket(B);
    // s3s-fs keeps objects as files: 100,000 of them are made in a second this way, where
    // 100,000 PUTs would take minutes.
    let dir = s.data_dir().join(B).join("big");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..N {
        let body = if i % 10_000 == 0 {
            format!("{i}\n")
        } else {
            String::new()
        };
        std::fs::write(dir.join(format!("k{i:06}")), body).unwrap();
    }
    // A newline in a name (moto cannot take one in a URL; s3s-fs keeps it as a file name).
    let odd = s.data_dir().join(B).join("odd");
    std::fs::create_dir(&odd).unwrap();
    std::fs::write(odd.join("new\nline"), "nl").unwrap();
    let m = MountBuilder::new(&s, B).mount();
    assert_eq!(std::fs::read(m.path("odd/new\nline")).unwrap(), b"nl");
    let listed: Vec<_> = std::fs::read_dir(m.path("odd"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(listed, ["new\nline"]);
    let big = m.path("big");
    let out = run_within(240, "ls", &["-l", big.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text
        .lines()
        .skip(1) // "total"
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(
        names.len(),
        N,
        "every key, once (paged through continuation tokens)"
    );
    assert_eq!(names.first(), Some(&"k000000"));
    assert_eq!(names.last(), Some(&"k099999"));
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
    assert_eq!(std::fs::read(big.join("k050000")).unwrap(), b"50000\n");
    assert_eq!(std::fs::metadata(big.join("k050001")).unwrap().len(), 0);
    let rss = rss_kib(m.pid());
    eprintln!("RSS after listing {N} entries: {} MiB", rss / 1024);
    assert!(rss < 256 * 1024, "RSS {rss} KiB for {N} entries");
}

#[test]
fn objects_changing_while_listed_or_open_never_break_the_mount() {
    let s = Server::moto();
    s.create_bucket(B);
    // Kept: never touched. Churn: deleted and re-created while listings page through them.
    for i in 0..1500 {
        s.put(B, &format!("chg/keep{i:04}"), b"k");
    }
    for i in 0..600 {
        s.put(B, &format!("chg/churn{i:04}"), b"c");
    }
    s.put(B, "victim", &common::pattern(3 << 20, 90));
    // Little cached and no page cache, so reads of the victim really go to the store.
    let m = MountBuilder::new(&s, B)
        .arg("--metadata-ttl")
        .arg("0")
        .arg("--cache-size")
        .arg("2M")
        .arg("--max-prefetch")
        .arg("1M")
        .arg("--direct-io")
        .mount();

    // A file open while its object is deleted: reads fail with EIO, and never hang.
    let mut victim = std::fs::File::open(m.path("victim")).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut lists = 0;
    let dir = m.path("chg");
    std::thread::scope(|sc| {
        let churner = sc.spawn(|| {
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in (round % 3..600).step_by(3) {
                    let key = format!("chg/churn{i:04}");
                    if round % 2 == 0 {
                        s.delete(B, &key);
                    } else {
                        s.put(B, &key, b"c");
                    }
                }
                if round == 0 {
                    s.delete(B, "victim");
                }
                round += 1;
            }
        });
        let until = std::time::Instant::now() + Duration::from_secs(8);
        while std::time::Instant::now() < until {
            let out = run_with_timeout("ls", &[dir.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let names: Vec<&str> = text.lines().collect();
            assert!(names.windows(2).all(|w| w[0] < w[1]), "no repeats");
            let kept = names.iter().filter(|n| n.starts_with("keep")).count();
            assert_eq!(kept, 1500, "untouched keys are always listed");
            assert!(names.len() <= 2100);
            lists += 1;
        }
        use std::io::Read;
        let mut buf = Vec::new();
        let e = victim
            .read_to_end(&mut buf)
            .expect_err("the object was deleted long ago");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churner.join().unwrap();
    });
    // Once it is quiet, a listing shows exactly what the bucket holds.
    let want: Vec<String> = s
        .keys(B)
        .into_iter()
        .filter_map(|k| k.strip_prefix("chg/").map(str::to_string))
        .collect();
    let mut got: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, want);
    assert!(!m.path("victim").exists());
    eprintln!("{lists} listings while keys changed");
}
