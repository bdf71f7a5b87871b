//! Bodies: a response [`Body`] (bytes, a reader or an async writer), the request's
//! [`BodyReader`] and the [`BodyWriter`] a streamed response is written to.

use std::io;

use wasip2::http::types::IncomingBody;
use wasip2::io::streams::{InputStream, OutputStream, StreamError};
use wstd::io::AsyncOutputStream;

/// Writes a whole streamed body to the response's stream. The reactor is started inside (so
/// an app that never streams this way does not carry it).
type WriteFn = Box<dyn FnOnce(OutputStream) -> io::Result<()>>;

/// A response body.
pub enum Body {
    /// Nothing.
    Empty,
    /// These bytes (sent with a `content-length`).
    Bytes(Vec<u8>),
    /// What the reader yields, read and sent 64 KiB at a time.
    Reader(Box<dyn io::Read>),
    /// What a function writes after the headers are sent ([`Body::from_writer`]).
    Writer(WriterFn),
}

/// A function writing a streamed body (see [`Body::from_writer`]).
pub struct WriterFn(pub(crate) WriteFn);

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => f.write_str("Body::Empty"),
            Body::Bytes(b) => write!(f, "Body::Bytes({} bytes)", b.len()),
            Body::Reader(_) => f.write_str("Body::Reader(..)"),
            Body::Writer(_) => f.write_str("Body::Writer(..)"),
        }
    }
}

impl Body {
    /// No body.
    pub fn empty() -> Body {
        Body::Empty
    }

    /// A body streamed from `reader`.
    pub fn from_reader(reader: impl io::Read + 'static) -> Body {
        Body::Reader(Box::new(reader))
    }

    /// A body written by `write` once the headers are out: `Body::from_writer(async |w| {
    /// w.write_all(b"chunk").await })`. The writer waits when the client reads slower than
    /// the app writes, so a body of any size streams in bounded memory. An error from `write`
    /// cuts the response short (the client sees an incomplete body, never a complete one) and
    /// is printed on stderr, which the node logs.
    pub fn from_writer<F>(write: F) -> Body
    where
        F: AsyncFnOnce(&mut BodyWriter) -> io::Result<()> + 'static,
    {
        Body::Writer(WriterFn(Box::new(move |stream: OutputStream| {
            wstd::runtime::block_on(async move {
                let mut writer = BodyWriter {
                    stream: AsyncOutputStream::new(stream),
                };
                write(&mut writer).await?;
                writer.flush().await
                // The writer (the stream) is dropped here, before the body is finished.
            })
        })))
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Body {
        Body::Bytes(b)
    }
}

impl From<&[u8]> for Body {
    fn from(b: &[u8]) -> Body {
        Body::Bytes(b.to_vec())
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::Bytes(s.into_bytes())
    }
}

impl From<&str> for Body {
    fn from(s: &str) -> Body {
        Body::Bytes(s.as_bytes().to_vec())
    }
}

/// Where a streamed response body is written ([`Body::from_writer`], [`Response::stream`]).
///
/// [`Response::stream`]: super::Response::stream
pub struct BodyWriter {
    stream: AsyncOutputStream,
}

impl BodyWriter {
    /// Writes all of `data`, waiting while the client is slower than the app.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data).await
    }

    /// Sends what was written so far and waits until it is accepted.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.stream.flush().await
    }
}

/// The request body as a stream, read as it arrives (for bodies too large to hold at once).
///
/// It implements [`std::io::Read`] (blocking until data arrives) and has an async
/// [`chunk`](BodyReader::chunk) for async handlers.
pub struct BodyReader {
    // Field order matters: the stream is a child of the body and is dropped first.
    stream: InputStream,
    _body: IncomingBody,
}

/// The largest chunk asked of the host at once.
const CHUNK: u64 = 64 * 1024;

impl BodyReader {
    pub(crate) fn new(body: IncomingBody) -> io::Result<BodyReader> {
        let stream = body
            .stream()
            .map_err(|()| io::Error::other("the request body stream was already taken"))?;
        Ok(BodyReader {
            stream,
            _body: body,
        })
    }

    /// The next piece of the body, waiting for it without blocking other tasks; `None` at the
    /// end. Call it from an async handler (it needs the SDK's reactor).
    pub async fn chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.stream.read(CHUNK) {
                Ok(data) if data.is_empty() => {
                    wstd::runtime::AsyncPollable::new(self.stream.subscribe())
                        .wait_for()
                        .await;
                }
                Ok(data) => return Ok(Some(data)),
                Err(StreamError::Closed) => return Ok(None),
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(io::Error::other(format!(
                        "reading the request body failed: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
    }

    /// Reads the rest of the body into memory, failing once it exceeds `limit` bytes.
    pub fn read_to_end_limited(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            match self.stream.blocking_read(CHUNK) {
                Ok(data) => {
                    if out.len() + data.len() > limit {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "the request body is larger than {limit} bytes; read it as a stream with Request::body_reader"
                            ),
                        ));
                    }
                    out.extend_from_slice(&data);
                }
                Err(StreamError::Closed) => return Ok(out),
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(io::Error::other(format!(
                        "reading the request body failed: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
    }
}

impl io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let want = u64::try_from(buf.len()).unwrap_or(CHUNK).min(CHUNK);
        loop {
            match self.stream.blocking_read(want) {
                // A zero-byte read is not the end (only `closed` is): ask again.
                Ok(data) if data.is_empty() => continue,
                Ok(data) => {
                    buf[..data.len()].copy_from_slice(&data);
                    return Ok(data.len());
                }
                Err(StreamError::Closed) => return Ok(0),
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(io::Error::other(format!(
                        "reading the request body failed: {}",
                        e.to_debug_string()
                    )));
                }
            }
        }
    }
}
