//! Daemon mode: the command returns once the mount is live (so `mount -a` and scripts can rely
//! on it), and the mount process goes on detached. The parent re-runs itself as the mount
//! process and relays its messages until it says it is ready, or fails.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// The line the mount process prints on stderr once the filesystem answers.
pub const READY: &str = "s3mount: ready";

/// Runs the detached mount process and returns the exit code for the parent.
pub fn spawn_and_wait() -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("s3mount: cannot find own executable: {e}");
            return 1;
        }
    };
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .arg("--daemon-child")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setsid is async-signal-safe; a new session keeps the mount alive when the
    // terminal that started it goes away.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("s3mount: cannot start the mount process: {e}");
            return 1;
        }
    };
    let stderr = child.stderr.take().expect("piped");
    let mut ready = false;
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if line == READY {
            ready = true;
            break;
        }
        let _ = writeln!(std::io::stderr(), "{line}");
    }
    if ready {
        return 0;
    }
    match child.wait() {
        Ok(status) => status.code().filter(|c| *c != 0).unwrap_or(1),
        Err(_) => 1,
    }
}

/// Called by the mount process once the mount is live: tell the parent, then let go of the
/// terminal (stderr becomes /dev/null, logs go to syslog).
pub fn notify_ready() {
    // The parent may be gone (killed, its terminal closed): a failed write must not take the
    // live mount down with it, as `eprintln!` would by panicking.
    let _ = writeln!(std::io::stderr(), "{READY}");
    crate::logging::detach();
    // SAFETY: plain fd juggling on fds we own.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 2);
            libc::close(null);
        }
    }
}
