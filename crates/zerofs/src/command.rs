//! The serializable form of every zerofs mutation, and of its answer.
//!
//! A mutation is one [`FsCommand`]; applying it runs one redb transaction (see
//! [`ZeroFs`](crate::ZeroFs)), and its answer is an [`Outcome`] or a refusal with the same
//! [`Error`] the direct call gives. Everything a command's effect depends on is in it (the
//! modification time is chosen by the proposer), so every replica applying the same commands
//! in the same order reaches the same state.

use serde::{Deserialize, Serialize};

use crate::error::{Error, QuotaKind, Result};
use crate::path::TenantPath;
use crate::store::{BlobHash, Entry, EntryKind};

/// One metadata mutation of one tenant's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FsCommand {
    /// Publish the (already stored) blob `hash` of `size` bytes as the file at `path`.
    Write {
        /// The tenant.
        tenant: String,
        /// The file's path.
        path: String,
        /// SHA-256 of the content.
        hash: [u8; 32],
        /// Content size in bytes.
        size: u64,
        /// Create missing parent directories.
        create_parents: bool,
        /// Modification time of the file and of created directories (ns since the epoch).
        mtime_ns: u64,
    },
    /// Create a directory.
    Mkdir {
        /// The tenant.
        tenant: String,
        /// The directory's path.
        path: String,
        /// Create missing ancestors; an existing directory is not an error.
        parents: bool,
        /// Modification time of the created directories.
        mtime_ns: u64,
    },
    /// Remove a file or an empty directory.
    Remove {
        /// The tenant.
        tenant: String,
        /// The path.
        path: String,
    },
    /// Remove a file, or a directory with everything below it.
    RemoveAll {
        /// The tenant.
        tenant: String,
        /// The path.
        path: String,
    },
    /// Move `from` to `to`.
    Rename {
        /// The tenant.
        tenant: String,
        /// The source path.
        from: String,
        /// The destination path.
        to: String,
    },
    /// Set the tenant's quota.
    SetQuota {
        /// The tenant.
        tenant: String,
        /// Maximum bytes.
        max_bytes: u64,
        /// Maximum entries.
        max_files: u64,
    },
}

impl FsCommand {
    /// The tenant the command changes.
    pub fn tenant(&self) -> &str {
        match self {
            FsCommand::Write { tenant, .. }
            | FsCommand::Mkdir { tenant, .. }
            | FsCommand::Remove { tenant, .. }
            | FsCommand::RemoveAll { tenant, .. }
            | FsCommand::Rename { tenant, .. }
            | FsCommand::SetQuota { tenant, .. } => tenant,
        }
    }

    /// The command's bytes (what goes into the log).
    pub fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_stdvec(self)
            .map_err(|e| Error::Corrupt(format!("cannot encode a zerofs command: {e}")))
    }

    /// Reads back [`encode`](Self::encode)'s bytes; trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<FsCommand> {
        match postcard::take_from_bytes(bytes) {
            Ok((command, [])) => Ok(command),
            Ok(_) => Err(Error::Corrupt(
                "a zerofs command has trailing bytes".to_string(),
            )),
            Err(e) => Err(Error::Corrupt(format!("undecodable zerofs command: {e}"))),
        }
    }
}

/// The answer to an applied command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The entry written or created.
    Entry(Entry),
    /// Done; nothing to return.
    Done,
    /// The command had already been applied before this replica restarted (no caller waits
    /// for this answer).
    Replayed,
}

#[derive(Serialize, Deserialize)]
enum WireOutcome {
    Entry {
        path: String,
        dir: bool,
        hash: Option<[u8; 32]>,
        size: u64,
        mtime_ns: u64,
    },
    Done,
    Replayed,
}

/// A refusal, as it travels in a response.
#[derive(Serialize, Deserialize)]
enum WireRefusal {
    NotFound(String),
    AlreadyExists(String),
    NotADirectory(String),
    IsADirectory(String),
    DirectoryNotEmpty(String),
    InvalidPath {
        path: String,
        reason: String,
    },
    InvalidTenant {
        name: String,
        reason: String,
    },
    Quota {
        tenant: String,
        limit: u64,
        files: bool,
    },
    Malformed(String),
}

/// Whether an error is a refusal of the command (a response) rather than a failure of the
/// store (which must stop the replica).
pub(crate) fn is_refusal(e: &Error) -> bool {
    !matches!(e, Error::Io { .. } | Error::Corrupt(_) | Error::TimedOut(_))
}

/// Encodes the answer to a command: its outcome or its refusal (`e` must be a refusal).
pub(crate) fn encode_response(answer: &std::result::Result<Outcome, Error>) -> Result<Vec<u8>> {
    let wire: std::result::Result<WireOutcome, WireRefusal> = match answer {
        Ok(Outcome::Entry(e)) => Ok(WireOutcome::Entry {
            path: e.path.as_str().to_string(),
            dir: e.kind == EntryKind::Dir,
            hash: e.hash.map(|h| h.0),
            size: e.size,
            mtime_ns: e.mtime_ns,
        }),
        Ok(Outcome::Done) => Ok(WireOutcome::Done),
        Ok(Outcome::Replayed) => Ok(WireOutcome::Replayed),
        Err(e) => Err(match e {
            Error::NotFound(p) => WireRefusal::NotFound(p.clone()),
            Error::AlreadyExists(p) => WireRefusal::AlreadyExists(p.clone()),
            Error::NotADirectory(p) => WireRefusal::NotADirectory(p.clone()),
            Error::IsADirectory(p) => WireRefusal::IsADirectory(p.clone()),
            Error::DirectoryNotEmpty(p) => WireRefusal::DirectoryNotEmpty(p.clone()),
            Error::InvalidPath { path, reason } => WireRefusal::InvalidPath {
                path: path.clone(),
                reason: reason.clone(),
            },
            Error::InvalidTenant { name, reason } => WireRefusal::InvalidTenant {
                name: name.clone(),
                reason: reason.clone(),
            },
            Error::QuotaExceeded {
                tenant,
                limit,
                kind,
            } => WireRefusal::Quota {
                tenant: tenant.clone(),
                limit: *limit,
                files: *kind == QuotaKind::Files,
            },
            other => WireRefusal::Malformed(other.to_string()),
        }),
    };
    postcard::to_stdvec(&wire)
        .map_err(|e| Error::Corrupt(format!("cannot encode a zerofs answer: {e}")))
}

/// Reads an answer back into the outcome or the error the direct call would have returned.
pub(crate) fn decode_response(bytes: &[u8]) -> Result<Outcome> {
    let wire: std::result::Result<WireOutcome, WireRefusal> = match postcard::take_from_bytes(bytes)
    {
        Ok((wire, [])) => wire,
        _ => {
            return Err(Error::Corrupt(format!(
                "undecodable answer from the replicated store ({} bytes)",
                bytes.len()
            )));
        }
    };
    match wire {
        Ok(WireOutcome::Entry {
            path,
            dir,
            hash,
            size,
            mtime_ns,
        }) => Ok(Outcome::Entry(Entry {
            path: TenantPath::parse(&path)?,
            kind: if dir { EntryKind::Dir } else { EntryKind::File },
            hash: hash.map(BlobHash),
            size,
            mtime_ns,
        })),
        Ok(WireOutcome::Done) => Ok(Outcome::Done),
        Ok(WireOutcome::Replayed) => Ok(Outcome::Replayed),
        Err(r) => Err(match r {
            WireRefusal::NotFound(p) => Error::NotFound(p),
            WireRefusal::AlreadyExists(p) => Error::AlreadyExists(p),
            WireRefusal::NotADirectory(p) => Error::NotADirectory(p),
            WireRefusal::IsADirectory(p) => Error::IsADirectory(p),
            WireRefusal::DirectoryNotEmpty(p) => Error::DirectoryNotEmpty(p),
            WireRefusal::InvalidPath { path, reason } => Error::InvalidPath { path, reason },
            WireRefusal::InvalidTenant { name, reason } => Error::InvalidTenant { name, reason },
            WireRefusal::Quota {
                tenant,
                limit,
                files,
            } => Error::QuotaExceeded {
                tenant,
                limit,
                kind: if files {
                    QuotaKind::Files
                } else {
                    QuotaKind::Bytes
                },
            },
            WireRefusal::Malformed(m) => Error::Corrupt(m),
        }),
    }
}
