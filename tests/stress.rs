//! Load: 32 threads read and write, on files of their own and on a shared set, for a while
//! (STRESS_SECS, 8 s in the suite; `scripts/stress` runs it longer). No deadlock, no lost write
//! (each writer's last content is checked in the bucket), memory within bounds, and no file
//! descriptors or threads leaked by the mount process.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{MountBuilder, Server, close, pattern};

const B: &str = "bkt";

fn proc_count(pid: u32, what: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{what}"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

#[test]
fn thirty_two_readers_and_writers() {
    let secs: u64 = std::env::var("STRESS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let s = Server::moto();
    s.create_bucket(B);
    for i in 0..4 {
        s.put(B, &format!("shared/s{i}"), &pattern(1 << 20, 900 + i));
    }
    let m = MountBuilder::new(&s, B)
        .arg("--metadata-ttl")
        .arg("0.2")
        .mount();
    std::fs::create_dir(m.path("own")).unwrap();
    let (fds0, threads0) = (proc_count(m.pid(), "fd"), proc_count(m.pid(), "task"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let ops = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..32u64)
        .map(|w| {
            let dir = m.dir.clone();
            let ops = ops.clone();
            std::thread::spawn(move || -> Option<Vec<u8>> {
                let mut last = None;
                let mut round = 0u64;
                while Instant::now() < deadline {
                    round += 1;
                    match (w + round) % 4 {
                        // A file of its own, rewritten with new content each round.
                        0 | 1 => {
                            let data =
                                pattern(50_000 + (round as usize % 7) * 30_000, w * 1000 + round);
                            let mut f =
                                std::fs::File::create(dir.join(format!("own/w{w}"))).unwrap();
                            f.write_all(&data).unwrap();
                            close(f);
                            last = Some(data);
                        }
                        // Reads of the shared files, which nobody writes.
                        2 => {
                            let i = (w + round) % 4;
                            let mut buf = Vec::new();
                            std::fs::File::open(dir.join(format!("shared/s{i}")))
                                .unwrap()
                                .read_to_end(&mut buf)
                                .unwrap();
                            assert!(
                                buf == pattern(1 << 20, 900 + i),
                                "shared file {i} read wrong"
                            );
                        }
                        // Writers racing on one common file: any one whole version may win.
                        _ => {
                            let data = vec![(w % 251) as u8; 20_000];
                            let mut f = std::fs::File::create(dir.join("common")).unwrap();
                            f.write_all(&data).unwrap();
                            close(f);
                            let _ = std::fs::read_dir(dir.join("own")).unwrap().count();
                        }
                    }
                    ops.fetch_add(1, Ordering::Relaxed);
                }
                last
            })
        })
        .collect();
    let results: Vec<Option<Vec<u8>>> = workers
        .into_iter()
        .map(|h| h.join().expect("no worker panicked"))
        .collect();
    let total = ops.load(Ordering::Relaxed);
    // Every writer's last content is what the bucket holds.
    let mut verified = 0u64;
    for (w, last) in results.iter().enumerate() {
        if let Some(data) = last {
            assert!(
                s.get(B, &format!("own/w{w}")) == *data,
                "writer {w} lost its last write"
            );
            verified += data.len() as u64;
        }
    }
    let common = s.get(B, "common");
    assert_eq!(common.len(), 20_000);
    assert!(
        common.iter().all(|&b| b == common[0]),
        "the common file is one writer's whole version"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (fds1, threads1) = (proc_count(m.pid(), "fd"), proc_count(m.pid(), "task"));
    let rss = peak_rss_mib(m.pid());
    eprintln!(
        "stress: {total} operations by 32 threads in {secs} s, {verified} bytes verified; fds {fds0}->{fds1}, threads {threads0}->{threads1}, peak RSS {rss} MiB"
    );
    assert!(
        fds1 <= fds0 + 4,
        "file descriptors leaked: {fds0} -> {fds1}"
    );
    assert!(
        threads1 <= threads0 + 16,
        "threads leaked: {threads0} -> {threads1}"
    );
    assert!(rss < 256, "peak RSS {rss} MiB");
    assert!(total > 100, "only {total} operations");
}
