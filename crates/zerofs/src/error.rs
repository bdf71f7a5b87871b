//! The one error type of zerofs.

use std::fmt;

/// Which quota limit a refused operation would have exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// The tenant's total size of file contents, in bytes.
    Bytes,
    /// The tenant's number of entries (files and directories).
    Files,
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QuotaKind::Bytes => "bytes",
            QuotaKind::Files => "files",
        })
    }
}

/// Errors returned by every zerofs operation.
///
/// Paths in messages are tenant-relative (`/a/b.txt`); they never reveal the on-disk layout.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No entry at this path.
    #[error("no such file or directory: {0}")]
    NotFound(String),
    /// An entry already exists at this path.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A path component that must be a directory is a file.
    #[error("not a directory: {0}")]
    NotADirectory(String),
    /// The operation needs a file but the path names a directory.
    #[error("is a directory: {0}")]
    IsADirectory(String),
    /// The directory still has entries.
    #[error("directory not empty: {0}")]
    DirectoryNotEmpty(String),
    /// The path string was refused.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given (possibly truncated for display).
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// The tenant name was refused.
    #[error("invalid tenant name {name:?}: {reason}")]
    InvalidTenant {
        /// The name as given (possibly truncated for display).
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// The operation would take the tenant over one of its quota limits; nothing was changed.
    #[error("quota exceeded for tenant {tenant}: the {kind} limit is {limit}")]
    QuotaExceeded {
        /// The tenant whose quota would be exceeded.
        tenant: String,
        /// The limit in force.
        limit: u64,
        /// Which limit.
        kind: QuotaKind,
    },
    /// An I/O error from the blob store or the metadata database.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What zerofs was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A time limit ran out before the operation finished (for a write: before it was
    /// published); nothing was changed. The message says which limit.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// The store's data is inconsistent (a missing or damaged blob, an undecodable entry, a
    /// database error other than I/O).
    #[error("store corrupt or unusable: {0}")]
    Corrupt(String),
}

/// Result alias for zerofs operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid_path(path: &str, reason: impl Into<String>) -> Self {
        Error::InvalidPath {
            path: truncate(path),
            reason: reason.into(),
        }
    }
}

pub(crate) fn truncate(s: &str) -> String {
    const MAX: usize = 120;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                match redb::Error::from(e) {
                    redb::Error::Io(source) => Error::io("accessing the metadata database", source),
                    other => Error::Corrupt(format!("metadata database: {other}")),
                }
            }
        }
    )*};
}

from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
