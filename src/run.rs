//! Runs one mount: runtime, preflight check, mount, readiness, signals, unmount.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::cli::MountConfig;
use crate::fs::Fs;
use crate::fs::names::Keys;
use crate::fuse::FuseAdapter;
use crate::store::StoreError;
use crate::store::journaled::Journaled;
use crate::store::s3::S3Store;
use crate::upload::journal::{Journal, abort_orphaned};

/// Threads reading requests from /dev/fuse; replies come from tokio tasks.
const FUSE_THREADS: usize = 2;

/// Kernel read-ahead for the mount. FUSE starts at 128 KiB, which splits sequential reads into
/// many small requests; 1 MiB requests halve the CPU spent per byte.
const READ_AHEAD_KB: u32 = 1024;

/// The preflight check asks once, with this bound on the whole exchange.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(15);

/// How often aborts that failed (the store was down) are tried again.
const ABORT_RETRY: Duration = Duration::from_secs(5);

/// One readable line for a failed preflight.
fn explain(cfg: &MountConfig, e: &StoreError) -> String {
    let ep = &cfg.endpoint_label;
    match e {
        StoreError::NoSuchBucket(b) => format!("bucket {b:?} does not exist at {ep}"),
        StoreError::InvalidCredentials(d) => format!(
            "the credentials from {} were rejected by {ep}: {d}",
            cfg.credential_source
        ),
        StoreError::AccessDenied(d) => format!(
            "access denied to bucket {:?} with credentials from {}: {d}",
            cfg.bucket, cfg.credential_source
        ),
        StoreError::Unreachable(d) => format!("cannot reach {ep}: {d}"),
        StoreError::Tls(d) => format!("TLS handshake with {ep} failed: {d}"),
        StoreError::Timeout(d) => format!("no answer from {ep} in time: {d}"),
        other => format!("bucket {:?} at {ep}: {other}", cfg.bucket),
    }
    .replace('\n', " ")
}

async fn preflight(store: &S3Store, cfg: &MountConfig) -> Result<(), String> {
    let prefix = Keys::new(&cfg.prefix).dir("");
    match tokio::time::timeout(PREFLIGHT_TIMEOUT, store.check(&prefix)).await {
        Err(_) => Err(format!(
            "no answer from {} within {}s",
            cfg.endpoint_label,
            PREFLIGHT_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(explain(cfg, &e)),
        Ok(Ok(_)) => Ok(()),
    }
}

/// Raises the kernel's read-ahead for this mount (root only; a tuning, so failures are ignored).
fn raise_read_ahead(mountpoint: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    // Answered by our own session threads, which are running by now.
    let Ok(md) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = md.dev();
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    if let Err(e) = std::fs::write(&path, READ_AHEAD_KB.to_string()) {
        tracing::debug!("cannot raise read-ahead ({path}): {e}");
    }
}

/// This process's record of uploads in progress (none on a read-only mount, which starts none).
fn upload_journal(cfg: &MountConfig) -> Option<Journal> {
    let dir = cfg.state_dir.as_ref().filter(|_| !cfg.fs.read_only)?;
    Journal::create(dir, &cfg.endpoint_label, &cfg.bucket)
        .inspect_err(|e| {
            tracing::warn!(
                "no upload journal in {}: {e}; uploads left by a crash will not be cleaned up",
                dir.display()
            )
        })
        .ok()
}

/// SIGHUP: reads the credential source again (a rotated service key, an edited profile).
fn reload_credentials(store: &S3Store, cfg: &MountConfig) {
    let resolved =
        crate::credentials::resolve(&cfg.credential_request, &crate::credentials::ProcessEnv);
    match resolved {
        Ok(r) => match r.keys.as_ref().map(crate::credentials::sdk_credentials) {
            Some(c) => {
                if store.set_credentials(c) {
                    tracing::info!("SIGHUP: credentials reloaded from {}", r.source);
                } else {
                    tracing::warn!("SIGHUP: mounted anonymously; remount to sign requests");
                }
            }
            None => tracing::warn!(
                "SIGHUP: {} has no credentials; keeping the current ones",
                r.source
            ),
        },
        Err(e) => {
            tracing::error!("SIGHUP: cannot reload credentials: {e}; keeping the current ones")
        }
    }
}

pub fn run(cfg: MountConfig) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("s3mount-io")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let store = S3Store::new(&cfg.s3);
    rt.block_on(preflight(&store, &cfg))?;
    let store = Arc::new(Journaled::new(store, upload_journal(&cfg)));
    if let (Some(dir), true, false) = (&cfg.state_dir, cfg.abort_stale_uploads, cfg.fs.read_only) {
        let (store, dir) = (store.clone(), dir.clone());
        let (endpoint, bucket) = (cfg.endpoint_label.clone(), cfg.bucket.clone());
        rt.spawn(async move {
            let n = abort_orphaned(&*store, &dir, &endpoint, &bucket).await;
            if n > 0 {
                tracing::info!(
                    "aborted {n} multipart uploads that a killed s3mount left in {bucket}"
                );
            }
        });
    }
    tracing::info!(
        bucket = %cfg.bucket,
        prefix = %cfg.prefix,
        endpoint = %cfg.endpoint_label,
        credentials = %cfg.credential_source,
        "bucket reachable; mounting on {}",
        cfg.mountpoint.display()
    );

    // Uploads that could not be aborted while the store was down are aborted once it is back.
    let retry_aborts = {
        let store = store.clone();
        rt.spawn(async move {
            loop {
                tokio::time::sleep(ABORT_RETRY).await;
                store.abort_again().await;
            }
        })
    };
    let fs = Arc::new(Fs::new(store.clone(), cfg.fs.clone()));
    let adapter = FuseAdapter::new(fs.clone(), rt.handle().clone());
    let inflight = adapter.inflight();
    let opts = crate::mount::Options {
        fsname: format!("s3mount:{}", cfg.bucket),
        read_only: cfg.fs.read_only,
        allow_other: cfg.allow_other,
        threads: FUSE_THREADS,
    };
    let (session, mut unmounter) = crate::mount::mount(adapter, &cfg.mountpoint, &opts)
        .map_err(|e| format!("cannot mount on {}: {e}", cfg.mountpoint.display()))?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let _ = done_tx.send(session.run());
        })
        .map_err(|e| format!("cannot start the session: {e}"))?;

    raise_read_ahead(&cfg.mountpoint);
    tracing::info!("mounted {} on {}", cfg.bucket, cfg.mountpoint.display());
    if cfg.daemon_child {
        crate::daemon::notify_ready();
    }

    let result = rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let mut hup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        tokio::pin!(done_rx);
        loop {
            tokio::select! {
                r = &mut done_rx => {
                    return match r {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(format!("FUSE session ended: {e}")),
                        Err(_) => Err("FUSE session thread died".to_string()),
                    };
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => reload_credentials(store.inner(), &cfg),
            }
        }
        tracing::info!("signal received: unmounting {}", cfg.mountpoint.display());
        if let Err(e) = unmounter.unmount() {
            return Err(format!("unmount failed: {e}"));
        }
        // The unmount is lazy: files still open (a large write in progress) keep the session
        // alive until they are closed, and their data is uploaded. Wait for that, however long.
        match done_rx.await {
            Ok(Err(e)) => Err(format!("FUSE session ended: {e}")),
            _ => Ok(()),
        }
    });
    // Data a close() reported as written is in the bucket already; what is left is work that
    // raced the unmount. Wait for it, then commit anything still pending.
    let failed = rt.block_on(async {
        while inflight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let failed = fs.flush_all().await;
        retry_aborts.abort();
        let left = tokio::time::timeout(Duration::from_secs(10), store.abort_again()).await;
        if left.is_err() || left.is_ok_and(|n| n > 0) {
            tracing::warn!("some multipart uploads could not be aborted; the next mount will try");
        }
        failed
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("unmounted {}", cfg.mountpoint.display());
    if !failed.is_empty() {
        let paths: Vec<String> = failed.iter().map(|(p, e)| format!("{p} ({e})")).collect();
        return Err(format!("could not upload: {}", paths.join(", ")));
    }
    result
}
