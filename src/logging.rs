//! Logs go to stderr, and to syslog (journald) once the mount has detached.

use std::ffi::CString;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;

static DETACHED: AtomicBool = AtomicBool::new(false);

/// `quiet`: only warnings and errors (the detached mount process, whose early lines the
/// parent relays to the user's terminal).
pub fn init(debug: bool, quiet: bool) {
    let default = if debug {
        "s3mount=debug,fuser=info,warn"
    } else if quiet {
        // fuser warns when its own unmount finds the kernel already unmounted: noise.
        "fuser=error,warn"
    } else {
        "s3mount=info,fuser=error,warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_ansi(false)
        .with_target(debug)
        .try_init();
}

/// From now on, log lines go to syslog.
pub fn detach() {
    // SAFETY: openlog keeps the pointer; the identifier is a static C string.
    unsafe { libc::openlog(c"s3mount".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    DETACHED.store(true, Ordering::SeqCst);
}

/// Whether log lines go to syslog now (stderr is /dev/null).
pub fn is_detached() -> bool {
    DETACHED.load(Ordering::SeqCst)
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !DETACHED.load(Ordering::Relaxed) {
            return io::stderr().write(buf);
        }
        let text = String::from_utf8_lossy(buf);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let prio = if line.contains(" ERROR ") {
                libc::LOG_ERR
            } else if line.contains(" WARN ") {
                libc::LOG_WARNING
            } else {
                libc::LOG_INFO
            };
            if let Ok(c) = CString::new(line.replace('\0', "")) {
                // SAFETY: a constant format string and a valid C string.
                unsafe { libc::syslog(prio, c"%s".as_ptr(), c.as_ptr()) };
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}
