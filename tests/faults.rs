//! Transient faults between the mount and a real S3 server: a proxy on 127.0.0.1 forwards to
//! moto and, on a seeded schedule, answers 503 SlowDown or 500, cuts responses mid-way, or
//! stalls. Every operation must still succeed, and the bucket (checked directly, not through
//! the proxy) must hold exactly what was written. A store that stays down must fail operations
//! within the configured bound.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{MountBuilder, Server, append_file, close, pattern, sh, write_file};

const B: &str = "bkt";

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    faults: AtomicU64,
}

struct Proxy {
    endpoint: String,
    counts: Arc<Counts>,
    down: Arc<AtomicBool>,
}

fn read_request(c: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = c.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if head.contains("expect: 100-continue") {
        c.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    while buf.len() < head_end + len {
        let n = c.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    // One request per connection: the upstream answers and closes.
    let text = String::from_utf8_lossy(&buf[..head_end])
        .replace("Expect: 100-continue\r\n", "")
        .replace("expect: 100-continue\r\n", "");
    let mut out = text.into_bytes();
    out.extend_from_slice(&buf[head_end..]);
    Some(out)
}

fn error_response(status: &str, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl Proxy {
    /// Faults hit about `percent`% of requests, chosen by a generator seeded with `seed`.
    fn start(upstream: &str, percent: u64, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let counts = Arc::new(Counts::default());
        let down = Arc::new(AtomicBool::new(false));
        let rng = Arc::new(Mutex::new(seed));
        let (c2, d2) = (counts.clone(), down.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { continue };
                let (upstream, counts, down, rng) =
                    (upstream.clone(), c2.clone(), d2.clone(), rng.clone());
                std::thread::spawn(move || {
                    let Some(request) = read_request(&mut client) else {
                        return;
                    };
                    counts.requests.fetch_add(1, Ordering::Relaxed);
                    if down.load(Ordering::Relaxed) {
                        let _ = client.write_all(&error_response(
                            "503 Service Unavailable",
                            "ServiceUnavailable",
                        ));
                        return;
                    }
                    let roll = {
                        let mut x = rng.lock().unwrap();
                        *x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (*x >> 33) % 400
                    };
                    let fault = roll < percent * 4;
                    if fault {
                        counts.faults.fetch_add(1, Ordering::Relaxed);
                    }
                    match (fault, roll % 4) {
                        (true, 0) => {
                            let _ = client.write_all(&error_response("503 Slow Down", "SlowDown"));
                            return;
                        }
                        (true, 1) => {
                            let _ = client.write_all(&error_response(
                                "500 Internal Server Error",
                                "InternalError",
                            ));
                            return;
                        }
                        (true, 3) => std::thread::sleep(Duration::from_millis(1500)),
                        _ => {}
                    }
                    let Ok(mut up) = TcpStream::connect(&upstream) else {
                        return;
                    };
                    if up.write_all(&request).is_err() {
                        return;
                    }
                    let mut response = Vec::new();
                    let _ = up.read_to_end(&mut response);
                    if fault && roll % 4 == 2 {
                        // The connection drops in the middle of the response.
                        response.truncate(response.len() / 2);
                    }
                    let _ = client.write_all(&response);
                    let _ = client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Proxy {
            endpoint,
            counts,
            down,
        }
    }
}

#[test]
fn operations_succeed_through_transient_faults_and_nothing_is_corrupt() {
    let s = Server::moto();
    s.create_bucket(B);
    let big = pattern(20 << 20, 31);
    s.put(B, "pre/existing.bin", &big);
    let proxy = Proxy::start(&s.endpoint, 15, 7);
    let m = MountBuilder::new(&s, B)
        .endpoint(&proxy.endpoint)
        .arg("--metadata-ttl")
        .arg("0")
        .mount();
    // Writes: small files, a streamed multipart file, an append that copies server-side.
    let mut files = Vec::new();
    for i in 0..8 {
        let data = pattern(300_000 + i * 1000, 100 + i as u64);
        write_file(&m.path(&format!("f{i}")), &data);
        files.push((format!("f{i}"), data));
    }
    let stream = pattern(30 << 20, 41);
    write_file(&m.path("stream.bin"), &stream);
    append_file(&m.path("pre/existing.bin"), b"appended");
    // Reads, listings, renames and directories.
    for (name, data) in &files {
        assert!(std::fs::read(m.path(name)).unwrap() == *data, "{name}");
    }
    assert!(std::fs::read(m.path("stream.bin")).unwrap() == stream);
    sh(
        &m.dir,
        "mkdir -p d/e && mv f0 d/e/moved && ls -lR . > /dev/null && rm f1",
    );
    let faults = proxy.counts.faults.load(Ordering::Relaxed);
    let requests = proxy.counts.requests.load(Ordering::Relaxed);
    drop(m);
    // The bucket, seen directly: everything written, nothing corrupt, nothing left behind.
    assert!(s.get(B, "stream.bin") == stream);
    let mut want = big.clone();
    want.extend_from_slice(b"appended");
    assert!(s.get(B, "pre/existing.bin") == want);
    assert!(s.get(B, "d/e/moved") == files[0].1);
    assert!(s.try_get(B, "f1").is_none());
    for (name, data) in &files[2..] {
        assert!(s.get(B, name) == *data, "{name}");
    }
    assert_eq!(s.pending_uploads(B), 0, "no multipart upload left behind");
    eprintln!("faults injected: {faults} of {requests} requests");
    assert!(faults >= 10, "only {faults} faults in {requests} requests");
}

/// `op` fails with EIO or ETIMEDOUT within `--op-timeout` (3 s here) and a little slack.
fn fails_in_bounded_time<T: std::fmt::Debug>(op: impl FnOnce() -> std::io::Result<T>) {
    let t = Instant::now();
    let e = op().unwrap_err();
    eprintln!("failed after {:?}: {e}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_secs(3 + 2),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::ETIMEDOUT)),
        "{e}"
    );
}

#[test]
fn a_store_that_stays_down_fails_operations_in_bounded_time() {
    let s = Server::moto();
    s.create_bucket(B);
    s.put(B, "x", b"x");
    let proxy = Proxy::start(&s.endpoint, 0, 1);
    let m = MountBuilder::new(&s, B)
        .endpoint(&proxy.endpoint)
        .arg("--metadata-ttl")
        .arg("0")
        .arg("--op-timeout")
        .arg("3")
        .mount();
    proxy.down.store(true, Ordering::Relaxed);
    fails_in_bounded_time(|| std::fs::metadata(m.path("not-cached")));
    fails_in_bounded_time(|| std::fs::write(m.path("new"), b"y"));
    // Back up: the same mount works again.
    proxy.down.store(false, Ordering::Relaxed);
    assert_eq!(std::fs::read(m.path("x")).unwrap(), b"x");
}

#[test]
fn kill_9_during_a_write_leaves_old_or_new_content_and_a_remount_works() {
    let s = Server::moto();
    s.create_bucket(B);
    let old = pattern(2 << 20, 50);
    s.put(B, "victim", &old);
    let m = MountBuilder::new(&s, B).mount();
    let path = m.path("victim");
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::File::create(&path).unwrap();
        let new = pattern(40 << 20, 51);
        for chunk in new.chunks(1 << 20) {
            if f.write_all(chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = f.sync_all();
    });
    std::thread::sleep(Duration::from_millis(150));
    unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) };
    let _ = writer.join();
    common::unmount(&m.dir); // the dead connection
    let got = s.get(B, "victim");
    assert!(
        got == old || got == pattern(40 << 20, 51),
        "only old or new content, never a mix (got {} bytes)",
        got.len()
    );
    // A remount on the same directory works at once.
    let home = tempfile::tempdir().unwrap();
    let out = common::run_s3mount(
        &[B, m.dir.to_str().unwrap(), "--endpoint", &s.endpoint],
        &[
            ("AWS_ACCESS_KEY_ID", common::KEY),
            ("AWS_SECRET_ACCESS_KEY", common::SECRET),
        ],
        home.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(m.path("victim")).unwrap() == got);
    drop(m); // unmounts the remount too
}

#[test]
fn a_streaming_write_rides_out_a_server_restart() {
    let mut s = Server::s3s_fs();
    s.create_bucket(B);
    let m = MountBuilder::new(&s, B).mount();
    let data = pattern(40 << 20, 60);
    let mut f = std::fs::File::create(m.path("big")).unwrap();
    // Two parts go out while the server is up.
    f.write_all(&data[..20 << 20]).unwrap();
    assert_eq!(
        s.wait_for_pending_uploads(B, 1, Duration::from_secs(10)),
        1,
        "a multipart upload is open"
    );
    s.stop();
    let started = Instant::now();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        s.restart_s3s_fs();
        s
    });
    // Parts sent while it is down are retried until it is back.
    f.write_all(&data[20 << 20..]).unwrap();
    close(f);
    // The close waited for the server rather than succeeding without it.
    let closed_after = started.elapsed();
    let s = restarter.join().unwrap();
    assert!(closed_after >= Duration::from_secs(2), "{closed_after:?}");
    assert!(
        s.get(B, "big") == data,
        "the object is exactly what was written"
    );
    assert_eq!(s.pending_uploads(B), 0, "no multipart upload left behind");
    drop(m);
}

#[test]
fn a_later_mount_aborts_the_uploads_a_killed_mount_left() {
    let s = Server::moto();
    s.create_bucket(B);
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap().to_string();
    let wait_for =
        |want: usize, secs: u64| s.wait_for_pending_uploads(B, want, Duration::from_secs(secs));
    let m = MountBuilder::new(&s, B)
        .arg("--state-dir")
        .arg(&state)
        .mount();
    let mut f = std::fs::File::create(m.path("big")).unwrap();
    f.write_all(&pattern(24 << 20, 80)).unwrap();
    assert_eq!(wait_for(1, 10), 1, "a part went out: the upload is open");
    unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) };
    drop(f);
    common::unmount(&m.dir);
    drop(m);
    assert_eq!(s.pending_uploads(B), 1, "the killed mount left its upload");

    // Asked to keep them, a mount leaves them.
    let kept = MountBuilder::new(&s, B)
        .arg("--state-dir")
        .arg(&state)
        .arg("-o")
        .arg("keep_stale_uploads")
        .mount();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.pending_uploads(B), 1);
    drop(kept);

    let again = MountBuilder::new(&s, B)
        .arg("--state-dir")
        .arg(&state)
        .mount();
    assert_eq!(wait_for(0, 15), 0, "the next mount aborts the upload");
    assert!(s.try_get(B, "big").is_none(), "no partial object");
    // What is left in the state directory is the live mount's own record.
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1);
    drop(again);
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
}

#[test]
fn closing_a_large_file_with_the_store_down_fails_within_the_op_timeout() {
    let mut s = Server::s3s_fs();
    s.create_bucket(B);
    let m = MountBuilder::new(&s, B)
        .arg("--op-timeout")
        .arg("4")
        .mount();
    let data = pattern(8 << 20, 70);
    let mut f = std::fs::File::create(m.path("large")).unwrap();
    // 200 MiB written while the store is up: most parts are still to go at the close.
    for _ in 0..25 {
        f.write_all(&data).unwrap();
    }
    assert_eq!(s.wait_for_pending_uploads(B, 1, Duration::from_secs(10)), 1);
    s.stop();
    let t = Instant::now();
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    let r = unsafe { libc::close(fd) };
    let err = std::io::Error::last_os_error();
    let took = t.elapsed();
    assert_eq!(r, -1, "close must report the failed upload");
    assert!(
        matches!(err.raw_os_error(), Some(libc::EIO) | Some(libc::ETIMEDOUT)),
        "{err}"
    );
    // One --op-timeout for the parts in flight, not one per part still to send.
    assert!(took < Duration::from_secs(4 + 4), "close took {took:?}");
    s.restart_s3s_fs();
    assert!(s.try_get(B, "large").is_none(), "no partial object");
    assert_eq!(
        s.wait_for_pending_uploads(B, 0, Duration::from_secs(30)),
        0,
        "the upload is aborted once the store is back"
    );
    drop(m);
}
