//! s3fs-compatible metadata: `x-amz-meta-mode`/`uid`/`gid`/`mtime` headers onto POSIX attributes.
//! Bogus values fall back to the mount's defaults; they never fail a `stat`.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const S_IFMT: u32 = libc::S_IFMT;
const S_IFDIR: u32 = libc::S_IFDIR;
const S_IFREG: u32 = libc::S_IFREG;
const S_IFLNK: u32 = libc::S_IFLNK;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// What the headers of one object say, after validation against what the object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetaAttrs {
    pub perm: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
    pub symlink: bool,
}

/// Content types that mark an object as a directory (s3fs, older tools).
pub fn is_dir_content_type(ct: Option<&str>) -> bool {
    matches!(
        ct.map(|c| c.split(';').next().unwrap_or("").trim()),
        Some("application/x-directory") | Some("httpd/unix-directory")
    )
}

/// Parses `"sec"` or `"sec.nnnnnnnnn"` (s3fs and rclone both write this).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (sec, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = sec.parse().ok()?;
    if !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs as u64, nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))?
            .checked_add(Duration::from_nanos(nanos as u64))
    }
}

/// Reads the headers of an object that is a directory (`is_dir`) or not.
pub fn parse(meta: &HashMap<String, String>, is_dir: bool) -> MetaAttrs {
    let num = |k: &str| meta.get(k).and_then(|v| v.trim().parse::<u64>().ok());
    let mut out = MetaAttrs {
        uid: num("uid").and_then(|v| u32::try_from(v).ok()),
        gid: num("gid").and_then(|v| u32::try_from(v).ok()),
        mtime: meta.get("mtime").and_then(|v| parse_time(v)),
        ..Default::default()
    };
    if let Some(mode) = num("mode").and_then(|m| u32::try_from(m).ok()) {
        let ftype = mode & S_IFMT;
        let fits = match ftype {
            0 => true,
            S_IFDIR => is_dir,
            S_IFREG => !is_dir,
            S_IFLNK => !is_dir,
            _ => false,
        };
        if fits {
            out.perm = Some((mode & 0o7777) as u16);
            out.symlink = ftype == S_IFLNK;
        }
    }
    out
}

/// What a setattr changes besides the size.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetaChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
}

impl MetaChange {
    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.uid.is_none() && self.gid.is_none() && self.mtime.is_none()
    }

    /// Writes the change into s3fs-style headers of an object of `kind`.
    pub fn apply(&self, meta: &mut HashMap<String, String>, kind: Kind) {
        if let Some(mode) = self.mode {
            meta.insert(
                "mode".into(),
                (type_bits(kind) | (mode & 0o7777)).to_string(),
            );
        }
        if let Some(uid) = self.uid {
            meta.insert("uid".into(), uid.to_string());
        }
        if let Some(gid) = self.gid {
            meta.insert("gid".into(), gid.to_string());
        }
        if let Some(t) = self.mtime {
            meta.insert("mtime".into(), fmt_time(t));
        }
    }

    pub fn apply_attrs(&self, m: &mut MetaAttrs) {
        if let Some(mode) = self.mode {
            m.perm = Some((mode & 0o7777) as u16);
        }
        if let Some(uid) = self.uid {
            m.uid = Some(uid);
        }
        if let Some(gid) = self.gid {
            m.gid = Some(gid);
        }
        if let Some(t) = self.mtime {
            m.mtime = Some(t);
        }
    }
}

fn type_bits(kind: Kind) -> u32 {
    match kind {
        Kind::File => libc::S_IFREG,
        Kind::Dir => libc::S_IFDIR,
        Kind::Symlink => libc::S_IFLNK,
    }
}

/// `sec` or `sec.nnnnnnnnn`, as s3fs and rclone read and write it.
pub fn fmt_time(t: SystemTime) -> String {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.subsec_nanos() == 0 => d.as_secs().to_string(),
        Ok(d) => format!("{}.{:09}", d.as_secs(), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            format!("-{}", d.as_secs())
        }
    }
}

/// The Content-Type of directory markers.
pub const DIR_CONTENT_TYPE: &str = "application/x-directory";

/// Headers of a new object of `kind` (a directory's marker included) carrying `change`.
pub fn object_options(kind: Kind, change: &MetaChange) -> crate::store::PutOptions {
    let mut user_meta = HashMap::new();
    change.apply(&mut user_meta, kind);
    crate::store::PutOptions {
        content_type: (kind == Kind::Dir).then(|| DIR_CONTENT_TYPE.to_string()),
        user_meta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_formatted_like_s3fs() {
        assert_eq!(
            fmt_time(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "1700000000"
        );
        assert_eq!(fmt_time(UNIX_EPOCH + Duration::new(5, 42)), "5.000000042");
    }

    fn m(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn s3fs_headers() {
        let a = parse(
            &m(&[
                ("mode", "33261"),
                ("uid", "1000"),
                ("gid", "100"),
                ("mtime", "1700000000"),
            ]),
            false,
        );
        assert_eq!(a.perm, Some(0o755));
        assert_eq!(a.uid, Some(1000));
        assert_eq!(a.gid, Some(100));
        assert_eq!(
            a.mtime,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert!(!a.symlink);
    }

    #[test]
    fn symlink_and_dir_modes() {
        assert!(parse(&m(&[("mode", "41471")]), false).symlink);
        assert_eq!(parse(&m(&[("mode", "16877")]), true).perm, Some(0o755));
        // A directory mode on a file contradicts the object: defaults.
        assert_eq!(parse(&m(&[("mode", "16877")]), false).perm, None);
        assert_eq!(parse(&m(&[("mode", "33188")]), true).perm, None);
    }

    #[test]
    fn bogus_values_fall_back() {
        let a = parse(
            &m(&[
                ("mode", "rwx"),
                ("uid", "-1"),
                ("gid", "99999999999"),
                ("mtime", "soon"),
            ]),
            false,
        );
        assert_eq!(a, MetaAttrs::default());
    }

    #[test]
    fn fractional_mtime() {
        assert_eq!(
            parse_time("1700000000.5"),
            Some(UNIX_EPOCH + Duration::new(1_700_000_000, 500_000_000))
        );
        assert_eq!(
            parse_time("1.000000001"),
            Some(UNIX_EPOCH + Duration::new(1, 1))
        );
        assert_eq!(parse_time("1.0000000001"), None);
        assert_eq!(parse_time(""), None);
    }

    #[test]
    fn directory_content_types() {
        assert!(is_dir_content_type(Some("application/x-directory")));
        assert!(is_dir_content_type(Some("httpd/unix-directory; charset=x")));
        assert!(!is_dir_content_type(Some("text/plain")));
        assert!(!is_dir_content_type(None));
    }
}
