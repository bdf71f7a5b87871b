//! `read-via-stream`, `write-via-stream` and `append-via-stream`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

use super::MAX_READ_CHUNK;
use super::budget::Slot;
use super::file::{OpenFile, lock, read_full, read_full_at};
use super::ops::code;
use super::types::ErrorCode;

/// Where a read stream takes its bytes from.
pub(super) enum Source {
    /// The published blob, as it was when the stream was opened.
    Blob(crate::FileReader),
    /// The descriptor's staged (unpublished) content.
    Staged(File),
}

/// `read-via-stream`: reads in chunks of at most [`MAX_READ_CHUNK`] bytes.
pub(super) struct FileInput {
    pub(super) source: Source,
    pub(super) pos: u64,
    /// Keeps the open file (and so its staged content) alive while the stream is.
    pub(super) _file: Arc<Mutex<OpenFile>>,
    pub(super) _slot: Slot,
}

impl InputStream for FileInput {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let mut buf = vec![0u8; size.min(MAX_READ_CHUNK)];
        let n = match &mut self.source {
            Source::Blob(r) => read_full(r, &mut buf),
            Source::Staged(f) => read_full_at(f, &mut buf, self.pos),
        }
        .map_err(|e| StreamError::LastOperationFailed(wasmtime::Error::new(e)))?;
        if n == 0 && size > 0 {
            return Err(StreamError::Closed);
        }
        buf.truncate(n);
        self.pos += n as u64;
        Ok(Bytes::from(buf))
    }
}

#[async_trait::async_trait]
impl Pollable for FileInput {
    async fn ready(&mut self) {}
}

/// `write-via-stream` (at a position) and `append-via-stream` (`pos: None`).
pub(super) struct FileOutput {
    pub(super) file: Arc<Mutex<OpenFile>>,
    pub(super) pos: Option<u64>,
    pub(super) _slot: Slot,
}

impl OutputStream for FileOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let fail = |e: ErrorCode| StreamError::LastOperationFailed(wasmtime::Error::new(e));
        let mut f = lock(&self.file);
        if f.closed {
            // The descriptor was closed and its content published; nothing can join it.
            return Err(StreamError::Closed);
        }
        let at = match self.pos {
            Some(p) => p,
            None => f
                .stage(false)
                .map_err(fail)?
                .len()
                .map_err(|e| fail(code(&e)))?,
        };
        f.stage_for(false, at.saturating_add(bytes.len() as u64))
            .map_err(fail)?
            .write_all_at(&bytes, at)
            .map_err(|_| fail(ErrorCode::Io))?;
        if let Some(p) = &mut self.pos {
            *p += bytes.len() as u64;
        }
        f.dirty = true;
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Content is published on sync or close; a flush has nothing more to do.
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_READ_CHUNK)
    }
}

#[async_trait::async_trait]
impl Pollable for FileOutput {
    async fn ready(&mut self) {}
}
