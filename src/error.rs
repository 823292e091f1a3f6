//! The one place where failures become errnos.

use crate::store::StoreError;

/// Errors the filesystem logic returns; the FUSE adapter turns them into errnos with [`FsError::errno`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("name too long")]
    NameTooLong,
    #[error("name is not valid UTF-8, which S3 keys must be")]
    BadName,
    #[error("read-only file system")]
    ReadOnly,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("not supported")]
    NotSupported,
    #[error("invalid argument")]
    Invalid,
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("no such attribute")]
    NoAttr,
    #[error("buffer too small")]
    Range,
    #[error("local staging space for writes is full (--tmp-size)")]
    NoSpace,
    #[error("bad file handle")]
    BadHandle,
    #[error("object changed on the server while it was open")]
    Changed,
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("timed out: {0}")]
    TimedOut(String),
    #[error("object store error: {0}")]
    Io(String),
}

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            // Every operation, lookups included: such a name can never be in the bucket.
            FsError::BadName => libc::EINVAL,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotPermitted => libc::EPERM,
            FsError::NotSupported => libc::ENOTSUP,
            FsError::Invalid => libc::EINVAL,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NoAttr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::NoSpace => libc::ENOSPC,
            FsError::BadHandle => libc::EBADF,
            // A handle reads one version of an object; a changed object cannot be read consistently.
            FsError::Changed => libc::EIO,
            FsError::AccessDenied(_) => libc::EACCES,
            FsError::TimedOut(_) => libc::ETIMEDOUT,
            FsError::Io(_) => libc::EIO,
        }
    }

    /// Expected errors (a missing name) are not worth a warning in the log.
    pub fn is_expected(&self) -> bool {
        matches!(
            self,
            FsError::NotFound
                | FsError::NotDir
                | FsError::IsDir
                | FsError::NameTooLong
                | FsError::BadName
                | FsError::ReadOnly
                | FsError::NotSupported
                | FsError::NotPermitted
                | FsError::Exists
                | FsError::NotEmpty
                | FsError::NoAttr
                | FsError::Range
        )
    }
}

impl From<StoreError> for FsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => FsError::NotFound,
            StoreError::PreconditionFailed => FsError::Changed,
            StoreError::AccessDenied(m) | StoreError::InvalidCredentials(m) => {
                FsError::AccessDenied(m)
            }
            StoreError::Timeout(m) => FsError::TimedOut(m),
            other => FsError::Io(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_errnos() {
        assert_eq!(FsError::from(StoreError::NotFound).errno(), libc::ENOENT);
        assert_eq!(
            FsError::from(StoreError::PreconditionFailed).errno(),
            libc::EIO
        );
        assert_eq!(
            FsError::from(StoreError::AccessDenied("x".into())).errno(),
            libc::EACCES
        );
        assert_eq!(
            FsError::from(StoreError::Unreachable("x".into())).errno(),
            libc::EIO
        );
        assert_eq!(FsError::NameTooLong.errno(), libc::ENAMETOOLONG);
    }
}
