//! Which process a FUSE request came from. The kernel gives the caller's thread id; a thread
//! group (the process) is what owns a file descriptor.

/// The thread group of thread `tid`, or `None` when it is gone or not visible.
pub fn thread_group(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether `tid` belongs to the same process as one of `others`. Unknown (an exited thread, a
/// request from the kernel) counts as the same: the caller then errs on the durable side.
pub fn same_process(tid: u32, others: &[u32]) -> bool {
    if tid == 0 || others.contains(&tid) {
        return true;
    }
    let Some(group) = thread_group(tid) else {
        return true;
    };
    others
        .iter()
        .any(|&o| thread_group(o).is_none_or(|g| g == group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_of_one_process_are_the_same_and_a_child_is_not() {
        let me = std::process::id();
        assert_eq!(thread_group(me), Some(me));
        let tid = std::thread::spawn(|| unsafe { libc::gettid() } as u32)
            .join()
            .unwrap();
        // The thread has exited: unknown counts as the same.
        assert!(same_process(tid, &[me]));
        let (tx, rx) = std::sync::mpsc::channel();
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = hold_rx.recv();
        });
        let tid = rx.recv().unwrap();
        assert_eq!(thread_group(tid), Some(me));
        assert!(same_process(tid, &[me]));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(!same_process(child.id(), &[me]));
        assert!(!same_process(me, &[child.id()]));
        child.kill().unwrap();
        child.wait().unwrap();
        hold_tx.send(()).unwrap();
        t.join().unwrap();
    }
}
