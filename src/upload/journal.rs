//! A local record of the multipart uploads this process started and has not ended. An upload
//! left behind by an s3mount that died (kill -9, a crash, a power cut) keeps its parts in the
//! bucket, invisible and billed; the next mount of the same bucket finds the record of the dead
//! process and aborts them. Only uploads of processes that are gone are touched, so two mounts
//! of one bucket never abort each other's uploads.
//!
//! One file per process, `PID-STARTTIME.uploads` (the start time tells a reused PID apart):
//! a header line with the endpoint and bucket, a line naming the machine, PID namespace and
//! boot the PID belongs to (a journal of another host sharing the directory, or of another
//! container, is never taken for a dead process's), then `+ ID KEY` when an upload starts and
//! `- ID` when it is completed or aborted. Each `+` line is on disk (fsynced, and the file's
//! directory entry too) before the upload it names gets its first part.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::store::percent::{percent_decode, percent_encode};
use crate::store::{ObjectStore, StoreError};

const HEADER: &str = "s3mount-uploads 1";

pub struct Journal {
    path: PathBuf,
    file: parking_lot::Mutex<(File, HashSet<String>)>,
}

/// Where journals live unless `--state-dir` says otherwise.
pub fn default_dir() -> Option<PathBuf> {
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from("/var/lib/s3mount/uploads"));
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))?;
    Some(state.join("s3mount/uploads"))
}

/// `(pid, start time)` of this process or `pid`, from /proc.
fn identity(pid: u32) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the command name, which may itself hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let start = rest.split_whitespace().nth(19)?.parse().ok()?;
    Some((pid, start))
}

fn file_name((pid, start): (u32, u64)) -> String {
    format!("{pid}-{start}.uploads")
}

fn header(endpoint: &str, bucket: &str) -> String {
    format!("{HEADER}\t{}\t{}", percent_encode(endpoint, true), bucket)
}

/// Where PIDs in a journal are meaningful: which machine, PID namespace and boot.
#[derive(Debug, Clone, PartialEq)]
struct Place {
    machine: String,
    pid_ns: String,
    boot: String,
}

impl Place {
    fn here() -> Place {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string());
        let machine = read("/etc/machine-id")
            .ok()
            .filter(|m| !m.is_empty())
            .or_else(|| read("/proc/sys/kernel/hostname").ok())
            .unwrap_or_default();
        let pid_ns = std::fs::read_link("/proc/self/ns/pid")
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let boot = read("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        Place {
            machine,
            pid_ns,
            boot,
        }
    }

    fn line(&self) -> String {
        format!(
            "@\t{}\t{}\t{}",
            percent_encode(&self.machine, true),
            percent_encode(&self.pid_ns, true),
            percent_encode(&self.boot, true)
        )
    }

    fn parse(text: &str) -> Option<Place> {
        let line = text.lines().nth(1)?.strip_prefix("@\t")?;
        let mut f = line
            .split('\t')
            .map(|x| percent_decode(x).and_then(|b| String::from_utf8(b).ok()));
        Some(Place {
            machine: f.next()??,
            pid_ns: f.next()??,
            boot: f.next()??,
        })
    }
}

/// Whether the process that wrote a journal is certainly gone. Only a journal written on this
/// machine, in this PID namespace, can be judged: in the same boot by its PID and start time,
/// after a reboot always. One from elsewhere (a shared directory, another container) is left.
fn writer_gone(text: &str, pid: u32, start: u64, here: &Place) -> bool {
    match Place::parse(text) {
        Some(p) if p.machine != here.machine || p.pid_ns != here.pid_ns => false,
        Some(p) if p.boot != here.boot => true,
        // Same boot (or a journal from before this line existed): is that process alive?
        _ => identity(pid) != Some((pid, start)),
    }
}

impl Journal {
    /// Starts this process's journal in `dir` for uploads to `bucket` at `endpoint`.
    pub fn create(dir: &Path, endpoint: &str, bucket: &str) -> std::io::Result<Journal> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let me = identity(std::process::id())
            .ok_or_else(|| std::io::Error::other("cannot read /proc/self/stat"))?;
        let path = dir.join(file_name(me));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)?;
        writeln!(file, "{}", header(endpoint, bucket))?;
        writeln!(file, "{}", Place::here().line())?;
        file.sync_data()?;
        // The file's name must survive a crash too, or its records are lost with it.
        File::open(dir)?.sync_all()?;
        Ok(Journal {
            path,
            file: parking_lot::Mutex::new((file, HashSet::new())),
        })
    }

    /// Records a started upload. The line is on disk before the upload gets any part.
    pub fn started(&self, key: &str, id: &str) {
        let mut g = self.file.lock();
        g.1.insert(id.to_string());
        let line = format!(
            "+\t{}\t{}\n",
            percent_encode(id, true),
            percent_encode(key, true)
        );
        if let Err(e) =
            g.0.write_all(line.as_bytes())
                .and_then(|()| g.0.sync_data())
        {
            tracing::warn!("upload journal {}: {e}", self.path.display());
        }
    }

    /// Records an upload that was completed or aborted (not synced: losing this line only
    /// makes a later mount abort an upload that is already gone).
    pub fn ended(&self, id: &str) {
        let mut g = self.file.lock();
        if !g.1.remove(id) {
            return;
        }
        let line = format!("-\t{}\n", percent_encode(id, true));
        if let Err(e) = g.0.write_all(line.as_bytes()) {
            tracing::debug!("upload journal {}: {e}", self.path.display());
        }
    }
}

impl Drop for Journal {
    /// A clean exit with no upload open leaves nothing for a later mount to do.
    fn drop(&mut self) {
        if self.file.lock().1.is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Uploads recorded in a journal and never ended: `(key, upload id)`.
fn open_uploads(text: &str) -> Vec<(String, String)> {
    let mut open: Vec<(String, String)> = Vec::new();
    for line in text.lines().skip(1) {
        let mut f = line.split('\t');
        let decode = |s: Option<&str>| {
            s.and_then(percent_decode)
                .and_then(|b| String::from_utf8(b).ok())
        };
        match f.next() {
            Some("+") => {
                if let (Some(id), Some(key)) = (decode(f.next()), decode(f.next())) {
                    open.push((key, id));
                }
            }
            Some("-") => {
                if let Some(id) = decode(f.next()) {
                    open.retain(|(_, i)| *i != id);
                }
            }
            _ => {}
        }
    }
    open
}

/// Journals in `dir` of s3mount processes that are gone, for `bucket` at `endpoint`.
fn orphaned(dir: &Path, endpoint: &str, bucket: &str) -> Vec<(PathBuf, Vec<(String, String)>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mine = header(endpoint, bucket);
    let here = Place::here();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".uploads")) else {
            continue;
        };
        let Some((pid, start)) = stem
            .split_once('-')
            .and_then(|(p, s)| Some((p.parse::<u32>().ok()?, s.parse::<u64>().ok()?)))
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if !writer_gone(&text, pid, start, &here) {
            continue; // running, or not ours to judge: its uploads are its own business
        }
        if text.lines().next() == Some(mine.as_str()) {
            found.push((entry.path(), open_uploads(&text)));
        }
    }
    found
}

/// Aborts the uploads that dead s3mount processes left in `bucket`, and returns how many.
/// A journal is removed once all its uploads are gone; one the store would not answer for is
/// kept for the next mount.
pub async fn abort_orphaned<S: ObjectStore>(
    store: &S,
    dir: &Path,
    endpoint: &str,
    bucket: &str,
) -> usize {
    let mut aborted = 0;
    for (path, uploads) in orphaned(dir, endpoint, bucket) {
        let mut all_gone = true;
        for (key, id) in uploads {
            match store.abort_multipart(&key, &id).await {
                Ok(()) => aborted += 1,
                Err(StoreError::NotFound) => {}
                Err(e) => {
                    tracing::warn!(%key, "cannot abort an upload an earlier mount left: {e}");
                    all_gone = false;
                }
            }
        }
        if all_gone {
            let _ = std::fs::remove_file(&path);
        }
    }
    aborted
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::PutOptions;
    use crate::store::memory::MemoryStore;

    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    fn open_uploads_are_those_started_and_not_ended() {
        let text = "h\n+\tu1\ta/b\n+\tu2\tweird%09key\n-\tu1\n+\tu3\tc\n";
        assert_eq!(
            open_uploads(text),
            vec![
                ("weird\tkey".to_string(), "u2".to_string()),
                ("c".to_string(), "u3".to_string())
            ]
        );
    }

    #[test]
    fn journals_from_elsewhere_are_never_judged() {
        let here = Place::here();
        let me = identity(std::process::id()).unwrap();
        let dead = dead_pid();
        let with = |p: &Place| format!("h\n{}\n+\tu\tk\n", p.line());
        let other_host = Place {
            machine: "another-machine".into(),
            ..here.clone()
        };
        let other_ns = Place {
            pid_ns: "pid:[1]".into(),
            ..here.clone()
        };
        let earlier_boot = Place {
            boot: "an-earlier-boot".into(),
            ..here.clone()
        };
        assert!(!writer_gone(&with(&other_host), dead, me.1, &here));
        assert!(!writer_gone(&with(&other_ns), dead, me.1, &here));
        assert!(writer_gone(&with(&here), dead, me.1, &here));
        assert!(!writer_gone(&with(&here), me.0, me.1, &here), "alive");
        // After a reboot the same PID and start time can be another process.
        assert!(writer_gone(&with(&earlier_boot), me.0, me.1, &here));
        assert_eq!(Place::parse(&with(&here)), Some(here));
    }

    #[test]
    fn a_clean_journal_removes_itself() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::create(dir.path(), "http://x", "b").unwrap();
        j.started("k", "id");
        j.ended("id");
        drop(j);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn uploads_of_a_dead_process_are_aborted_and_a_live_ones_are_not() {
        let store = MemoryStore::new();
        let dir = tempfile::tempdir().unwrap();
        let left = store
            .create_multipart("left", PutOptions::default())
            .await
            .unwrap();
        let done = store
            .create_multipart("done", PutOptions::default())
            .await
            .unwrap();
        let other_bucket = store
            .create_multipart("other", PutOptions::default())
            .await
            .unwrap();
        let dead = identity(std::process::id()).map(|(_, s)| (dead_pid(), s));
        let write = |who: (u32, u64), head: String, body: String| {
            std::fs::write(dir.path().join(file_name(who)), format!("{head}\n{body}")).unwrap()
        };
        write(
            dead.unwrap(),
            header("http://x", "b"),
            format!("+\t{left}\tleft\n+\t{done}\tdone\n-\t{done}\n+\tgone\tnever-existed\n"),
        );
        write(
            (dead_pid(), 1),
            header("http://x", "other"),
            format!("+\t{other_bucket}\tother\n"),
        );
        // This process is alive: its journal is left alone.
        let live = Journal::create(dir.path(), "http://x", "b").unwrap();
        let mine = store
            .create_multipart("mine", PutOptions::default())
            .await
            .unwrap();
        live.started("mine", &mine);

        let n = abort_orphaned(&store, dir.path(), "http://x", "b").await;
        assert_eq!(n, 1, "only the dead process's open upload");
        assert_eq!(store.pending_uploads(), 3, "done, other bucket, mine");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // Completing `done` still works: it was never aborted.
        store
            .upload_part("done", &done, 1, Bytes::new())
            .await
            .unwrap();
        live.ended(&mine);
    }
}
