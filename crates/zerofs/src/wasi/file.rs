//! A file opened by a guest: the snapshot it reads, and the staged write that is published
//! atomically on `sync` or close, within the request's time.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::ops::code;
use super::types::ErrorCode;
use super::{FsInstance, MAX_READ_CHUNK};
use crate::{Error, StagedWrite, TenantPath, WriteOptions, ZeroFs};

/// Bytes copied per step when a file is copied into staging (the request's deadline is checked
/// between steps).
const COPY_CHUNK: usize = 256 * 1024;

/// A file opened by the guest: the snapshot it reads, and the staged content it writes.
pub(super) struct OpenFile {
    pub(super) fs: Arc<ZeroFs>,
    pub(super) tenant: String,
    pub(super) path: TenantPath,
    /// Staged content, once the file was written, truncated or resized (and until published).
    pub(super) staged: Option<StagedWrite>,
    /// Whether `staged` differs from what zerofs holds.
    pub(super) dirty: bool,
    /// Whether this descriptor created the file: its first content is part of the creation,
    /// so writing through it needs the create right only.
    pub(super) created_here: bool,
    /// Whether the guest closed the descriptor (its content was published then); streams of
    /// it can no longer write.
    pub(super) closed: bool,
    /// When the request's wall-clock time is over: copying and publishing stop then.
    pub(super) deadline: Option<Instant>,
}

pub(super) fn lock(f: &Mutex<OpenFile>) -> MutexGuard<'_, OpenFile> {
    match f.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl OpenFile {
    pub(super) fn new(st: &FsInstance, path: &TenantPath, created_here: bool) -> Self {
        OpenFile {
            fs: st.fs.clone(),
            tenant: st.tenant.clone(),
            path: path.clone(),
            staged: None,
            dirty: false,
            created_here,
            closed: false,
            deadline: st.deadline,
        }
    }

    /// The staged copy, creating it from the current content (or empty) on first use. The copy
    /// reserves the current size from the tenant's quota first and stops at the deadline.
    pub(super) fn stage(&mut self, empty: bool) -> Result<&mut StagedWrite, ErrorCode> {
        if self.staged.is_none() {
            let (fs, tenant, path, deadline) = (&self.fs, &self.tenant, &self.path, self.deadline);
            let staged = off_worker(|| -> Result<StagedWrite, Error> {
                let mut staged = fs.stage(tenant)?;
                if empty {
                    return Ok(staged);
                }
                let mut reader = match fs.open_read(tenant, path.as_str()) {
                    Ok(r) => r,
                    Err(Error::NotFound(_)) => return Ok(staged),
                    Err(e) => return Err(e),
                };
                fs.reserve(&mut staged, path.as_str(), reader.len())?;
                let mut buf = vec![0u8; COPY_CHUNK];
                let mut at = 0u64;
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Error::TimedOut(format!(
                            "copying {path} to stage a write did not finish within the \
                             request's wall-clock time"
                        )));
                    }
                    let n = reader
                        .read(&mut buf)
                        .map_err(|e| Error::io("copying a file to stage a write", e))?;
                    if n == 0 {
                        break;
                    }
                    staged
                        .file()
                        .write_all_at(&buf[..n], at)
                        .map_err(|e| Error::io("copying a file to stage a write", e))?;
                    at += n as u64;
                }
                Ok(staged)
            })
            .map_err(|e| code(&e))?;
            self.staged = Some(staged);
        }
        self.staged.as_mut().ok_or(ErrorCode::Io)
    }

    /// Stages (see [`OpenFile::stage`]) and reserves room for a staged size of `size` bytes,
    /// refusing with `insufficient-space` what the tenant's quota (shared with every other
    /// staged write of the tenant) could never publish, so that a guest cannot fill the host's
    /// temporary space before the quota refuses the publication.
    pub(super) fn stage_for(&mut self, empty: bool, size: u64) -> Result<&File, ErrorCode> {
        self.stage(empty)?;
        let (fs, path) = (&self.fs, &self.path);
        let staged = self.staged.as_mut().ok_or(ErrorCode::Io)?;
        fs.reserve(staged, path.as_str(), size)
            .map_err(|e| code(&e))?;
        Ok(staged.file())
    }

    /// Publishes the staged content atomically, if it changed. The staged write is used up
    /// either way: after a failure the file keeps its published content.
    pub(super) fn publish(&mut self) -> Result<(), Error> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        let Some(staged) = self.staged.take() else {
            return Ok(());
        };
        let (fs, path, deadline) = (&self.fs, &self.path, self.deadline);
        off_worker(|| fs.publish(staged, path.as_str(), WriteOptions::default(), deadline))?;
        Ok(())
    }

    pub(super) fn size(&self) -> Result<u64, ErrorCode> {
        match &self.staged {
            Some(f) => f.len().map_err(|e| code(&e)),
            None => match self.fs.stat(&self.tenant, self.path.as_str()) {
                Ok(e) => Ok(e.size),
                Err(e) => Err(code(&e)),
            },
        }
    }

    /// Reads up to `len` (≤ [`MAX_READ_CHUNK`]) bytes at `offset`.
    pub(super) fn read_at(&mut self, len: usize, offset: u64) -> Result<Vec<u8>, ErrorCode> {
        let mut buf = vec![0u8; len.min(MAX_READ_CHUNK)];
        let n = match &self.staged {
            Some(f) => read_full_at(f.file(), &mut buf, offset)?,
            None => {
                let mut reader = self
                    .fs
                    .open_read(&self.tenant, self.path.as_str())
                    .map_err(|e| code(&e))?;
                reader
                    .seek(SeekFrom::Start(offset))
                    .map_err(|_| ErrorCode::Io)?;
                read_full(&mut reader, &mut buf)?
            }
        };
        buf.truncate(n);
        Ok(buf)
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        // Only the guest's own calls (sync, closing the descriptor) publish, within its
        // request; what is still unpublished when the last handle goes is discarded.
        if self.dirty && self.staged.is_some() {
            tracing::warn!(tenant = %self.tenant, path = %self.path,
                "a write staged by a guest was discarded: the guest neither synced nor closed \
                 the file before its request ended; the previous content stays");
        }
    }
}

/// Runs long blocking work (copying or publishing a whole file, with its fsyncs) so that it
/// does not hold up the other tasks of the async worker thread it was called on: through
/// `block_in_place` on a multi-threaded tokio runtime, directly elsewhere. Short calls (a
/// 64 KiB read, a metadata lookup) run inline.
pub(super) fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, ErrorCode> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(ErrorCode::Io),
        }
    }
    Ok(n)
}

pub(super) fn read_full_at(f: &File, buf: &mut [u8], offset: u64) -> Result<usize, ErrorCode> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(ErrorCode::Io),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_and_publishing_stop_at_the_requests_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(ZeroFs::open(dir.path(), crate::Quota::UNLIMITED).unwrap());
        fs.write("t", "/f", &b"old"[..]).unwrap();
        let mut f = OpenFile {
            fs: fs.clone(),
            tenant: "t".into(),
            path: TenantPath::parse("/f").unwrap(),
            staged: None,
            dirty: false,
            created_here: false,
            closed: false,
            deadline: Some(Instant::now()),
        };
        // Copying the current content into staging is work for the request: past its time it
        // stops with `busy`.
        assert_eq!(f.stage(false).err(), Some(ErrorCode::Busy));
        // So is publishing: nothing reaches the tree, and the reservation is returned.
        f.stage_for(true, 3)
            .unwrap()
            .write_all_at(b"new", 0)
            .unwrap();
        f.dirty = true;
        assert!(matches!(f.publish(), Err(Error::TimedOut(_))));
        assert_eq!(fs.read_range("t", "/f", 0, 10).unwrap(), b"old");
        assert_eq!(fs.staged_bytes("t"), 0);
        // Without a deadline the same write is published.
        f.deadline = None;
        f.stage_for(true, 3)
            .unwrap()
            .write_all_at(b"new", 0)
            .unwrap();
        f.dirty = true;
        f.publish().unwrap();
        assert_eq!(fs.read_range("t", "/f", 0, 10).unwrap(), b"new");
    }
}
