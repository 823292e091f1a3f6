//! Mounting: daemon mode, credential sources, and every mount-time failure (exit code, one
//! clear line, no secret, no hang, nothing left mounted).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{KEY, MountBuilder, SECRET, Server, is_mounted, run_s3mount, unmount};

/// A mount made by the real daemon mode; unmounted on drop.
struct Daemon {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Daemon {
    fn dir() -> Daemon {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mnt");
        fs::create_dir(&dir).unwrap();
        Daemon { dir, _tmp: tmp }
    }
    fn home(&self) -> PathBuf {
        let h = self._tmp.path().join("home");
        fs::create_dir_all(&h).unwrap();
        h
    }
    fn arg(&self) -> &str {
        self.dir.to_str().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unmount(&self.dir);
    }
}

/// Processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> usize {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(needle))
        .count()
}

fn creds(s: &Server) -> [(&str, &str); 2] {
    [
        ("AWS_ACCESS_KEY_ID", KEY),
        ("AWS_SECRET_ACCESS_KEY", s.secret.as_str()),
    ]
}

fn assert_fails(out: &std::process::Output, want: &str, d: &Daemon) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert!(err.contains(want), "stderr should mention {want:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one readable line: {err}");
    assert!(lines[0].starts_with("s3mount: "), "{err}");
    assert!(!err.contains(SECRET), "the secret must never be printed");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!is_mounted(&d.dir), "nothing is left mounted");
}

#[test]
fn daemon_mode_returns_once_live_and_umount_ends_it() {
    let s = Server::moto();
    s.create_bucket("bkt");
    s.put("bkt", "hello.txt", b"hello");
    let d = Daemon::dir();
    let out = run_s3mount(
        &["bkt", d.arg(), "--endpoint", &s.endpoint],
        &creds(&s),
        &d.home(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        is_mounted(&d.dir),
        "the command returns only once the mount is live"
    );
    assert_eq!(fs::read(d.dir.join("hello.txt")).unwrap(), b"hello");
    assert_eq!(processes_with(d.arg()), 1, "one detached mount process");
    unmount(&d.dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(d.arg()) > 0 {
        assert!(
            Instant::now() < deadline,
            "the mount process exits after umount"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn missing_bucket_fails_with_one_line() {
    let s = Server::moto();
    let d = Daemon::dir();
    let out = run_s3mount(
        &["nosuchbucket", d.arg(), "--endpoint", &s.endpoint],
        &creds(&s),
        &d.home(),
    );
    assert_fails(&out, "\"nosuchbucket\" does not exist", &d);
}

#[test]
fn unreachable_endpoint_fails_fast() {
    let port = common::free_port();
    let d = Daemon::dir();
    let t = Instant::now();
    let ep = format!("http://127.0.0.1:{port}");
    let out = run_s3mount(
        &["bkt", d.arg(), "--endpoint", &ep],
        &[
            ("AWS_ACCESS_KEY_ID", KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
        &d.home(),
    );
    assert_fails(&out, "cannot reach", &d);
    // A refused connection is known at once: two quick attempts, well within the default
    // --connect-timeout of 5 s (the preflight's own bound, 15 s, is for a silent host).
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn tls_failure_is_named() {
    let s = Server::moto();
    let d = Daemon::dir();
    let ep = s.endpoint.replace("http://", "https://");
    let out = run_s3mount(&["bkt", d.arg(), "--endpoint", &ep], &creds(&s), &d.home());
    assert_fails(&out, "TLS", &d);
}

#[test]
fn a_silent_endpoint_times_out_instead_of_hanging() {
    // Accepts connections (the kernel's backlog does) but never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = format!("http://{}", listener.local_addr().unwrap());
    let d = Daemon::dir();
    let t = Instant::now();
    let out = run_s3mount(
        &["bkt", d.arg(), "--endpoint", &ep],
        &[
            ("AWS_ACCESS_KEY_ID", KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
        &d.home(),
    );
    assert_fails(&out, "no answer", &d);
    assert!(
        t.elapsed() < Duration::from_secs(40),
        "took {:?}",
        t.elapsed()
    );
    drop(listener);
}

#[test]
fn wrong_secret_and_unknown_key_are_rejected_without_printing_secrets() {
    let s = Server::s3s_fs();
    s.create_bucket("bkt");
    let d = Daemon::dir();
    let home = d.home();
    let wrong = "wrong-secret-also-never-printed";
    let out = run_s3mount(
        &["bkt", d.arg(), "--endpoint", &s.endpoint],
        &[("AWS_ACCESS_KEY_ID", KEY), ("AWS_SECRET_ACCESS_KEY", wrong)],
        &home,
    );
    assert_fails(&out, "rejected", &d);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(wrong));
    let out = run_s3mount(
        &["bkt", d.arg(), "--endpoint", &s.endpoint],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
        &home,
    );
    assert_fails(&out, "rejected", &d);
    // The right key mounts.
    let out = run_s3mount(
        &["bkt", d.arg(), "--endpoint", &s.endpoint],
        &creds(&s),
        &home,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_mounted(&d.dir));
}

fn write_key(path: &Path, body: &str, mode: u32) {
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn service_key_as_the_cli_prints_it_mounts_its_bucket() {
    // s3s-fs checks signatures: the key's secret must really be the one used.
    let s = Server::s3s_fs();
    s.create_bucket("platform-bucket");
    s.put("platform-bucket", "from-key.txt", b"via service key");
    let d = Daemon::dir();
    let key = d._tmp.path().join("key.json");
    let json = format!(
        "Getting key mykey for service instance objstore as admin@example.com...\n\n{{\n  \"access_key_id\": \"{KEY}\",\n  \"secret_access_key\": \"{SECRET}\",\n  \"region\": \"us-east-1\",\n  \"bucket\": \"platform-bucket\",\n  \"endpoint\": \"{}\"\n}}\n",
        s.endpoint
    );
    write_key(&key, &json, 0o644);
    let out = run_s3mount(
        &["--service-key", key.to_str().unwrap(), d.arg()],
        &[],
        &d.home(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches("readable by group or others").count(),
        1,
        "a world-readable key is warned about, once: {err}"
    );
    assert!(!err.contains(SECRET));
    assert_eq!(
        fs::read(d.dir.join("from-key.txt")).unwrap(),
        b"via service key"
    );
}

#[test]
fn service_key_missing_a_field_is_named() {
    let d = Daemon::dir();
    let key = d._tmp.path().join("key.json");
    write_key(
        &key,
        "header line\n{\"access_key_id\": \"A\", \"bucket\": \"b\"}",
        0o600,
    );
    let out = run_s3mount(
        &["--service-key", key.to_str().unwrap(), d.arg()],
        &[],
        &d.home(),
    );
    assert_fails(&out, "secret_access_key", &d);
}

#[test]
fn profile_from_aws_files_supplies_keys_and_endpoint() {
    // s3s-fs checks signatures: picking the wrong profile ([default]'s keys) fails.
    let s = Server::s3s_fs();
    s.create_bucket("bkt");
    s.put("bkt", "p.txt", b"profile");
    let d = Daemon::dir();
    let home = d.home();
    fs::create_dir_all(home.join(".aws")).unwrap();
    write_key(
        &home.join(".aws/credentials"),
        &format!(
            "[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n[prod]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n"
        ),
        0o600,
    );
    fs::write(
        home.join(".aws/config"),
        format!(
            "[profile prod]\nregion = us-east-1\nendpoint_url = {}\n",
            s.endpoint
        ),
    )
    .unwrap();
    let out = run_s3mount(&["bkt", d.arg(), "--profile", "prod"], &[], &home);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(d.dir.join("p.txt")).unwrap(), b"profile");
    unmount(&d.dir);
    // AWS_PROFILE picks it the same way.
    let out = run_s3mount(&["bkt", d.arg()], &[("AWS_PROFILE", "prod")], &home);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    unmount(&d.dir);
    let out = run_s3mount(&["bkt", d.arg(), "--profile", "absent"], &[], &home);
    assert_fails(&out, "\"absent\" not found", &d);
}

#[test]
fn public_bucket_reads_anonymously() {
    let s = Server::moto();
    s.block_on(
        s.client
            .create_bucket()
            .bucket("pub")
            .acl(aws_sdk_s3::types::BucketCannedAcl::PublicRead)
            .send(),
    )
    .unwrap();
    s.put("pub", "open.txt", b"for everyone");
    let m = MountBuilder::new(&s, "pub")
        .anonymous()
        .arg("--no-sign-request")
        .mount();
    assert_eq!(fs::read(m.path("open.txt")).unwrap(), b"for everyone");
    let (_, log) = m.finish();
    assert!(log.contains("anonymous (--no-sign-request)"), "{log}");
    // With no credentials anywhere the mount falls back to anonymous by itself.
    let m = MountBuilder::new(&s, "pub").anonymous().mount();
    assert_eq!(fs::read(m.path("open.txt")).unwrap(), b"for everyone");
    let (_, log) = m.finish();
    assert!(log.contains("anonymous (no credentials found)"), "{log}");
}

#[test]
fn bad_arguments_fail_before_mounting() {
    let d = Daemon::dir();
    let out = run_s3mount(
        &[
            "bkt",
            "/nonexistent/mountpoint",
            "--endpoint",
            "http://127.0.0.1:9",
        ],
        &[],
        &d.home(),
    );
    assert_fails(&out, "/nonexistent/mountpoint", &d);
    let out = run_s3mount(&["bkt", d.arg(), "-o", "bogus_option"], &[], &d.home());
    assert_fails(&out, "unknown mount option", &d);
    let out = run_s3mount(&["bkt", d.arg(), "--endpoint", "ftp://x"], &[], &d.home());
    assert_fails(&out, "http://", &d);
}

#[test]
fn foreground_mount_exits_cleanly_on_unmount() {
    let s = Server::moto();
    s.create_bucket("bkt");
    let m = MountBuilder::new(&s, "bkt").mount();
    let (status, log) = m.finish();
    assert!(status.success(), "{log}");
}

#[test]
fn sighup_rereads_a_rotated_service_key() {
    let s = Server::s3s_fs();
    s.create_bucket("bkt");
    for f in ["a.txt", "b.txt", "c.txt"] {
        s.put("bkt", f, f.as_bytes());
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.json");
    let write = |secret: &str| {
        write_key(
            &key,
            &format!(
                "{{\"access_key_id\": \"{KEY}\", \"secret_access_key\": \"{secret}\", \"bucket\": \"bkt\"}}"
            ),
            0o600,
        )
    };
    write(SECRET);
    let m = MountBuilder::new(&s, "bkt")
        .anonymous()
        .arg("--service-key")
        .arg(key.to_str().unwrap())
        .arg("--metadata-ttl")
        .arg("0")
        .mount();
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"a.txt");
    // Sends SIGHUP and waits until the mount says it has read the key again.
    let hup = || {
        let before = m.log().matches("credentials reloaded").count();
        unsafe { libc::kill(m.pid() as i32, libc::SIGHUP) };
        let until = Instant::now() + Duration::from_secs(10);
        while m.log().matches("credentials reloaded").count() == before {
            assert!(Instant::now() < until, "no reload logged: {}", m.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // The platform revokes the key: operations fail with EACCES and one clear line.
    write("revoked-secret");
    hup();
    let e = fs::read(m.path("b.txt")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    let e = fs::metadata(m.path("c.txt")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
    let log = m.log();
    assert_eq!(log.matches("refuses our credentials").count(), 1, "{log}");
    assert!(!log.contains("revoked-secret") && !log.contains(SECRET));
    // A new key is issued: SIGHUP picks it up without remounting.
    write(SECRET);
    hup();
    assert_eq!(fs::read(m.path("c.txt")).unwrap(), b"c.txt");
    assert!(m.log().contains("credentials reloaded"));
}
