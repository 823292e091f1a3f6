//! Real parts for integration tests: an S3 server on 127.0.0.1 (moto, faithful to S3 key
//! semantics; or s3s-fs where signatures must be checked), the real `s3mount` binary mounted
//! through /dev/fuse, and a guard that unmounts and stops everything even when a test fails.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;

pub const BIN: &str = env!("CARGO_BIN_EXE_s3mount");
pub const KEY: &str = "testkey";
pub const SECRET: &str = "testsecret-never-printed";

/// A port nothing listens on, never the same twice in this process: tests run in parallel,
/// and the kernel may hand a just-released port to the next bind.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Waits until `child` itself listens on `port`; false if it exited first (another process
/// of this machine or test took the port between `free_port` and the server's bind).
fn wait_for_port(port: u16, child: &mut Child, what: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Whoever answers must be our server, not one that took the port first.
        if TcpStream::connect(("127.0.0.1", port)).is_ok() && listens(child.id(), port) {
            return true;
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("{what} exited before listening on {port}: {status}");
            return false;
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port` (/proc/net/tcp).
fn listens(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return true; // cannot tell: trust the connection
    };
    let want = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A"))
                .then(|| f.get(9).map(|s| format!("socket:[{s}]")))
                .flatten()
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|l| inodes.iter().any(|i| l.to_string_lossy() == *i))
    })
}

/// Starts s3s-fs on `port` over `data`, with the test key pair, and waits until it listens.
fn spawn_s3s_fs(port: u16, data: &Path) -> Child {
    let bin =
        std::env::var("S3S_FS_BIN").unwrap_or_else(|_| "/opt/s3s-fs-bigbuf/bin/s3s-fs".to_string());
    assert!(
        Path::new(&bin).exists(),
        "{bin} missing: run ../shared/bench-server/build.sh (CI does)"
    );
    let mut child = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", KEY, "--secret-key", SECRET])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    assert!(
        wait_for_port(port, &mut child, "s3s-fs"),
        "s3s-fs could not listen on {port}"
    );
    child
}

fn sdk_client(endpoint: &str, key: &str, secret: &str) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .build();
    Client::from_conf(conf)
}

/// A test S3 server process, killed on drop.
pub struct Server {
    child: Child,
    pub endpoint: String,
    pub key: String,
    pub secret: String,
    rt: tokio::runtime::Runtime,
    pub client: Client,
    _data: Option<tempfile::TempDir>,
}

impl Server {
    /// moto: any credentials are accepted; S3 key semantics are faithful.
    pub fn moto() -> Server {
        let python = std::env::var("S3MOUNT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        // A port can be taken by another test between `free_port` and moto's bind: try another.
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(&python)
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start moto server (pip install 'moto[server]')");
            if wait_for_port(port, &mut child, "moto server") {
                return Server::with(child, port, KEY, SECRET, None);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto server could not listen on three ports in a row");
    }

    /// s3s-fs: checks SigV4 signatures against one key pair (file-backed, so only for tests
    /// that need credentials to be checked).
    pub fn s3s_fs() -> Server {
        let port = free_port();
        let data = tempfile::tempdir().unwrap();
        let child = spawn_s3s_fs(port, data.path());
        Server::with(child, port, KEY, SECRET, Some(data))
    }

    fn with(
        child: Child,
        port: u16,
        key: &str,
        secret: &str,
        data: Option<tempfile::TempDir>,
    ) -> Server {
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = sdk_client(&endpoint, key, secret);
        Server {
            child,
            endpoint,
            key: key.into(),
            secret: secret.into(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client,
            _data: data,
        }
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.block_on(self.client.create_bucket().bucket(bucket).send())
            .expect("create bucket");
    }

    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        self.put_with(bucket, key, body, &[], None);
    }

    pub fn put_with(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        meta: &[(&str, &str)],
        content_type: Option<&str>,
    ) {
        let meta: HashMap<String, String> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.block_on(
            self.client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(ByteStream::from(body.to_vec()))
                .set_metadata(Some(meta))
                .set_content_type(content_type.map(str::to_string))
                .send(),
        )
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        self.block_on(self.client.delete_object().bucket(bucket).key(key).send())
            .unwrap_or_else(|e| panic!("delete {key}: {e:?}"));
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.fetch(bucket, key)
            .unwrap_or_else(|e| panic!("get {key}: {e}"))
    }

    /// The object's bytes, or `None` when it cannot be read (missing, or any other error).
    pub fn try_get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.fetch(bucket, key).ok()
    }

    fn fetch(&self, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
        self.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            let body = out.body.collect().await.map_err(|e| format!("{e:?}"))?;
            Ok(body.into_bytes().to_vec())
        })
    }

    /// (user metadata, content type) of an object.
    pub fn head(&self, bucket: &str, key: &str) -> (HashMap<String, String>, Option<String>) {
        self.block_on(async {
            let out = self
                .client
                .head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("head {key}: {e:?}"));
            (
                out.metadata().cloned().unwrap_or_default(),
                out.content_type().map(str::to_string),
            )
        })
    }

    /// Every key in the bucket, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.block_on(async {
            let mut keys = Vec::new();
            let mut token = None;
            loop {
                let out = self
                    .client
                    .list_objects_v2()
                    .bucket(bucket)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .unwrap();
                keys.extend(
                    out.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_string)),
                );
                token = out.next_continuation_token().map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
            keys.sort();
            keys
        })
    }

    /// Waits up to `within` until `bucket` holds `want` pending uploads; returns how many it
    /// holds then.
    pub fn wait_for_pending_uploads(&self, bucket: &str, want: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while self.pending_uploads(bucket) != want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.pending_uploads(bucket)
    }

    /// The directory s3s-fs serves from (a bucket is a directory, an object a file).
    pub fn is_s3s_fs(&self) -> bool {
        self._data.is_some()
    }

    pub fn data_dir(&self) -> &Path {
        self._data.as_ref().expect("an s3s-fs server").path()
    }

    /// Multipart uploads started and not yet completed or aborted in `bucket`.
    pub fn pending_uploads(&self, bucket: &str) -> usize {
        if let Some(data) = &self._data {
            // s3s-fs keeps no per-bucket index and does not implement ListMultipartUploads:
            // each open upload is a `.upload-ID.json` file at the top of its data directory.
            return std::fs::read_dir(data.path())
                .unwrap()
                .filter(|e| {
                    let n = e.as_ref().unwrap().file_name();
                    let n = n.to_string_lossy();
                    n.starts_with(".upload-") && n.ends_with(".json")
                })
                .count();
        }
        self.block_on(self.client.list_multipart_uploads().bucket(bucket).send())
            .unwrap()
            .uploads()
            .len()
    }

    /// Stops the server process (its data survives for s3s-fs, which keeps it on disk).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts an s3s-fs server again on the same port and data.
    pub fn restart_s3s_fs(&mut self) {
        let data = self
            ._data
            .as_ref()
            .expect("s3s-fs keeps its data")
            .path()
            .to_path_buf();
        let port: u16 = self.endpoint.rsplit(':').next().unwrap().parse().unwrap();
        let child = spawn_s3s_fs(port, &data);
        self.child = child;
        // Pooled connections went down with the old process.
        self.client = sdk_client(&self.endpoint, &self.key, &self.secret);
    }

    /// Arguments that point the mount at this server.
    pub fn endpoint_args(&self) -> Vec<String> {
        vec!["--endpoint".into(), self.endpoint.clone()]
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Environment of a mount process: no credentials or AWS settings leak in from the machine,
/// HOME is an empty temp dir unless a test gives one.
pub fn clean_env(cmd: &mut Command, home: &Path) {
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", home);
}

pub fn is_mounted(dir: &Path) -> bool {
    let dir = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(&dir))
}

pub fn unmount(dir: &Path) {
    for _ in 0..50 {
        if !is_mounted(dir) {
            return;
        }
        let ok = Command::new("fusermount3")
            .arg("-u")
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = Command::new("umount").arg("-l").arg(dir).status();
}

/// A live mount of the real binary in the foreground, unmounted (and the process reaped) on drop.
pub struct Mount {
    pub dir: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

pub struct MountBuilder<'a> {
    server: &'a Server,
    source: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    credentials: bool,
}

impl<'a> MountBuilder<'a> {
    pub fn new(server: &'a Server, source: &str) -> Self {
        MountBuilder {
            server,
            source: source.to_string(),
            args: server.endpoint_args(),
            env: Vec::new(),
            credentials: true,
        }
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }
    /// Points the mount somewhere else than the server (a proxy in front of it).
    pub fn endpoint(mut self, url: &str) -> Self {
        self.args[1] = url.to_string();
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn anonymous(mut self) -> Self {
        self.credentials = false;
        self
    }
    pub fn mount(self) -> Mount {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let log = tmp.path().join("s3mount.log");
        let mut cmd = Command::new(BIN);
        clean_env(&mut cmd, &home);
        if self.credentials {
            cmd.env("AWS_ACCESS_KEY_ID", &self.server.key)
                .env("AWS_SECRET_ACCESS_KEY", &self.server.secret);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // Upload journals stay in the test's own directory, not /var/lib/s3mount.
        let state = tmp.path().join("state");
        if !self.args.iter().any(|a| a == "--state-dir") {
            cmd.arg("--state-dir").arg(&state);
        }
        cmd.arg(&self.source)
            .arg(&dir)
            .arg("-f")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().expect("spawn s3mount");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(&dir) {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "s3mount exited ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("mount did not go live in 30s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Mount {
            dir,
            child: Some(child),
            log,
            _tmp: tmp,
        }
    }
}

impl Mount {
    /// The mount process (for /proc/PID/io and the like).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Bytes the mount process has written to sockets and files so far (/proc/PID/io wchar).
    pub fn bytes_written(&self) -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.pid())).unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("wchar: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("wchar in /proc/PID/io")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// Unmounts and returns the process's exit status and log.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        unmount(&self.dir);
        let mut child = self.child.take().unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(10));
        (status, self.log())
    }
}

fn wait_timeout(child: &mut Child, t: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + t;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        unmount(&self.dir);
        if let Some(mut c) = self.child.take() {
            wait_timeout(&mut c, Duration::from_secs(10));
        }
    }
}

/// Runs the binary the way a user does (daemon mode) and returns its output; for failures.
pub fn run_s3mount(args: &[&str], env: &[(&str, &str)], home: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    clean_env(&mut cmd, home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    if !args.contains(&"--state-dir") {
        cmd.arg("--state-dir").arg(home.join("state"));
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run s3mount")
}

/// Closes a file and fails the test if close(2) reports an error (dropping a `File` ignores it,
/// and close is where a failed upload is reported).
pub fn close(f: std::fs::File) {
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    if unsafe { libc::close(fd) } != 0 {
        panic!("close failed: {}", std::io::Error::last_os_error());
    }
}

/// Writes a whole file and checks its close.
pub fn write_file(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    close(f);
}

/// Appends `data` to an existing file (O_APPEND), checking the close.
pub fn append_file(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(data).unwrap();
    close(f);
}

/// Runs a shell script in `dir`, fails the test with its output if it fails, returns stdout.
pub fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic bytes that differ at every offset of interest.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}
