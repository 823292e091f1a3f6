//! Names and keys: which names a key can show as, and how paths become keys.

use crate::error::FsError;

pub const MAX_NAME: usize = 255;
pub const MAX_KEY: usize = 1024;

/// A name as the kernel sends it: S3 keys are UTF-8, so other bytes can never name anything.
pub fn from_os(name: &std::ffi::OsStr) -> Result<String, FsError> {
    name.to_str().map(str::to_string).ok_or(FsError::BadName)
}

/// Checks a name the kernel asks for.
pub fn check_name(name: &str) -> Result<(), FsError> {
    if name.len() > MAX_NAME {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(FsError::NotFound);
    }
    Ok(())
}

/// Checks a name to create: one that can never exist (empty, `.`, `..`, with `/`) is EINVAL.
pub fn check_new_name(name: &str) -> Result<(), FsError> {
    check_name(name).map_err(|e| match e {
        FsError::NotFound => FsError::Invalid,
        e => e,
    })
}

/// Whether a key segment found in a listing can be shown as a directory entry.
pub fn showable(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment.len() <= MAX_NAME
        && !segment.contains('\0')
}

/// `parent/name` with the root as the empty path.
pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// Keys under a mount prefix (`""` or ending in `/`).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        let p = prefix.trim_matches('/');
        Keys {
            prefix: if p.is_empty() {
                String::new()
            } else {
                format!("{p}/")
            },
        }
    }

    /// The object key of a file at `path`.
    pub fn file(&self, path: &str) -> Result<String, FsError> {
        let k = format!("{}{path}", self.prefix);
        if k.len() > MAX_KEY {
            return Err(FsError::NameTooLong);
        }
        Ok(k)
    }

    /// The listing prefix (and marker key) of the directory at `path`.
    pub fn dir(&self, path: &str) -> String {
        if path.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}{path}/", self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_under_prefix() {
        let k = Keys::new("/data/set/");
        assert_eq!(k.dir(""), "data/set/");
        assert_eq!(k.dir("a/b"), "data/set/a/b/");
        assert_eq!(k.file("a/b").unwrap(), "data/set/a/b");
        let root = Keys::new("");
        assert_eq!(root.dir(""), "");
        assert_eq!(root.file("x").unwrap(), "x");
        assert!(matches!(
            root.file(&"x".repeat(1025)),
            Err(FsError::NameTooLong)
        ));
    }

    #[test]
    fn names() {
        assert!(check_name("ok").is_ok());
        assert!(matches!(
            check_name(&"a".repeat(256)),
            Err(FsError::NameTooLong)
        ));
        assert!(showable("a"));
        for bad in ["", ".", "..", &"a".repeat(256)] {
            assert!(!showable(bad));
        }
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a", "b"), "a/b");
    }
}
