//! A hostile bucket: keys with `//`, `.`/`..` segments, control characters, spaces, `+`,
//! non-ASCII, a body on a `dir/` key, both `x` and `x/y`, a 1024-byte key, zero-byte objects and
//! bogus metadata. The mount lists what it can, skips what it cannot show, and never hangs.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{MountBuilder, Server};

const B: &str = "bkt";

fn run_with_timeout(cmd: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("timeout")
        .arg("30")
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
