//! Mounting the way the system does: fstab lines through mount(8) and mount.fuse3, the
//! `mount.s3mount` helper, SIGTERM during a write, and the Debian package. These tests touch
//! system paths (a link in /usr/local/bin, /usr/sbin/mount.s3mount, dpkg), so they take turns
//! and undo what they did, even when they fail.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{BIN, KEY, SECRET, Server, is_mounted, pattern, unmount};

static SYSTEM: Mutex<()> = Mutex::new(());

const B: &str = "bkt";

/// A symlink to the built binary at a system path, removed on drop.
struct Link(PathBuf);

impl Link {
    fn new(at: &str) -> Link {
        let p = PathBuf::from(at);
        let _ = fs::remove_file(&p);
        std::os::unix::fs::symlink(BIN, &p).unwrap();
        Link(p)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if fs::read_link(&self.0)
            .map(|t| t == Path::new(BIN))
            .unwrap_or(false)
        {
            let _ = fs::remove_file(&self.0);
        }
    }
}

struct Dir {
    tmp: tempfile::TempDir,
    mnt: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let mnt = tmp.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        Dir { tmp, mnt }
    }
    fn mnt(&self) -> &str {
        self.mnt.to_str().unwrap()
    }
    /// A service key as the platform CLI prints it, mode 0600.
    fn key(&self, endpoint: &str, secret: &str) -> String {
        let p = self.tmp.path().join("key.json");
        fs::write(
            &p,
            format!("Getting key k...\n\n{{\"access_key_id\":\"{KEY}\",\"secret_access_key\":\"{secret}\",\"endpoint\":\"{endpoint}\"}}\n"),
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        p.to_str().unwrap().to_string()
    }
    fn fstab(&self, line: &str) -> String {
        let p = self.tmp.path().join("fstab");
        fs::write(&p, format!("# test fstab\n{line}\n")).unwrap();
        p.to_str().unwrap().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        unmount(&self.mnt);
    }
}

/// Runs a command without the machine's AWS settings (the fstab options carry everything).
fn run(cmd: &str, args: &[&str]) -> Output {
    let mut c = Command::new(cmd);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.args(args).output().unwrap()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mount_processes(dir: &str) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (cmd.contains("s3mount") && cmd.contains(dir)).then_some(pid)
        })
        .collect()
}

fn wait_gone(dir: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mount_processes(dir).is_empty() {
        assert!(Instant::now() < deadline, "mount process still running");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fstab_mount_t_and_the_helper() {
    let _g = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    let _link = Link::new("/usr/local/bin/s3mount");
    let _helper = Link::new("/usr/sbin/mount.s3mount");
    let s = Server::moto();
    s.create_bucket(B);
    s.put(B, "pre/hello.txt", b"from fstab");
    let d = Dir::new();
    let key = d.key(&s.endpoint, SECRET);

    // An fstab line with the options mount(8) and systemd add.
    let fstab = d.fstab(&format!(
        "{B}:pre {} fuse.s3mount _netdev,noauto,nofail,defaults,x-systemd.automount,allow_other,uid=1234,gid=4321,service_key={key} 0 0",
        d.mnt()
    ));
    ok(&run("mount", &["-T", &fstab, d.mnt()]));
    assert!(is_mounted(&d.mnt), "mount returns once the mount is live");
    assert_eq!(fs::read(d.mnt.join("hello.txt")).unwrap(), b"from fstab");
    let md = fs::metadata(d.mnt.join("hello.txt")).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&md),
            std::os::unix::fs::MetadataExt::gid(&md)
        ),
        (1234, 4321)
    );
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        mounts.contains(&format!("{} fuse.s3mount", d.mnt())),
        "{mounts}"
    );
    ok(&run("umount", &[d.mnt()]));
    assert!(!is_mounted(&d.mnt));
    wait_gone(d.mnt());

    // mount -t fuse.s3mount, through mount.fuse3
    ok(&run(
        "mount",
        &[
            "-t",
            "fuse.s3mount",
            B,
            d.mnt(),
            "-o",
            &format!("ro,service_key={key}"),
        ],
    ));
    assert!(fs::read(d.mnt.join("pre/hello.txt")).is_ok());
    assert_eq!(
        fs::write(d.mnt.join("x"), b"").unwrap_err().raw_os_error(),
        Some(libc::EROFS)
    );
    ok(&run("umount", &[d.mnt()]));
    wait_gone(d.mnt());

    // mount -t s3mount, through /sbin/mount.s3mount
    ok(&run(
        "mount",
        &[
            "-t",
            "s3mount",
            B,
            d.mnt(),
            "-o",
            &format!("service_key={key}"),
        ],
    ));
    assert!(is_mounted(&d.mnt));
    ok(&run("umount", &[d.mnt()]));
    wait_gone(d.mnt());
    // mount -f (fake) checks but does not mount
    ok(&run(
        "mount",
        &[
            "-f",
            "-t",
            "s3mount",
            B,
            d.mnt(),
            "-o",
            &format!("service_key={key}"),
        ],
    ));
    assert!(!is_mounted(&d.mnt));

    // An invalid option: non-zero, one clear line, nothing mounted.
    let out = run(
        "mount",
        &[
            "-t",
            "fuse.s3mount",
            B,
            d.mnt(),
            "-o",
            &format!("service_key={key},bogus_opt"),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown mount option \"bogus_opt\""), "{err}");
    assert!(!is_mounted(&d.mnt));
}

#[test]
fn a_bad_credential_in_fstab_fails_with_a_clear_line() {
    let _g = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    let _link = Link::new("/usr/local/bin/s3mount");
    let s = Server::s3s_fs();
    s.create_bucket(B);
    let d = Dir::new();
    let key = d.key(&s.endpoint, "not-the-secret");
    let fstab = d.fstab(&format!(
        "{B} {} fuse.s3mount _netdev,service_key={key} 0 0",
        d.mnt()
    ));
    let out = run("mount", &["-T", &fstab, d.mnt()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rejected"), "{err}");
    assert!(
        !err.contains("not-the-secret"),
        "the secret is never printed"
    );
    assert!(!is_mounted(&d.mnt));
}

#[test]
fn sigterm_during_a_large_write_leaves_the_object_complete() {
    let s = Server::moto();
    s.create_bucket(B);
    let d = Dir::new();
    let key = d.key(&s.endpoint, SECRET);
    let home = d.tmp.path().join("home");
    fs::create_dir(&home).unwrap();
    let out = common::run_s3mount(&[B, d.mnt(), "--service-key", &key], &[], &home);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pids = mount_processes(d.mnt());
    assert_eq!(pids.len(), 1);
    let data = pattern(120 << 20, 21);
    let path = d.mnt.join("big.bin");
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = fs::File::create(&path).unwrap();
            for (i, chunk) in data.chunks(1 << 20).enumerate() {
                f.write_all(chunk).unwrap();
                if i == 30 {
                    // Let the signal land in the middle of the write.
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
            common::close(f);
        })
    };
    std::thread::sleep(Duration::from_millis(150));
    unsafe { libc::kill(pids[0] as i32, libc::SIGTERM) };
    writer
        .join()
        .expect("the writer finishes and its close succeeds");
    wait_gone(d.mnt());
    assert!(s.get(B, "big.bin") == data, "the object is complete");
    assert!(!is_mounted(&d.mnt));
}

#[test]
fn the_debian_package_builds_installs_and_mounts_from_fstab() {
    let _g = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts/build-deb"))
        .args(["--bin", BIN])
        .output()
        .unwrap();
    ok(&out);
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let contents = run("dpkg-deb", &["--contents", &deb]);
    ok(&contents);
    let listing = String::from_utf8_lossy(&contents.stdout);
    for want in [
        "./usr/bin/s3mount",
        "./usr/sbin/mount.s3mount -> ../bin/s3mount",
        "./usr/share/man/man8/s3mount.8.gz",
        "./usr/share/doc/s3mount/examples/mnt-data.mount",
        "./usr/share/doc/s3mount/examples/mnt-data.automount",
        "./usr/share/doc/s3mount/examples/fstab",
    ] {
        assert!(listing.contains(want), "{want} missing from:\n{listing}");
    }
    let info = run("dpkg-deb", &["--field", &deb, "Depends"]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("fuse3"));

    struct Installed;
    impl Drop for Installed {
        fn drop(&mut self) {
            let _ = Command::new("dpkg").args(["-r", "s3mount"]).output();
        }
    }
    ok(&run("dpkg", &["-i", &deb]));
    let _installed = Installed;
    let s = Server::moto();
    s.create_bucket(B);
    s.put(B, "pkg.txt", b"installed");
    let d = Dir::new();
    let key = d.key(&s.endpoint, SECRET);
    let fstab = d.fstab(&format!(
        "{B} {} fuse.s3mount _netdev,service_key={key} 0 0",
        d.mnt()
    ));
    ok(&run("mount", &["-T", &fstab, d.mnt()]));
    assert_eq!(fs::read(d.mnt.join("pkg.txt")).unwrap(), b"installed");
    ok(&run("umount", &[d.mnt()]));
    wait_gone(d.mnt());
}
