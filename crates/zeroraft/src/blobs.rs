//! Content-addressed blobs between nodes, on the same mutual-TLS peer listener as the Raft
//! messages:
//!
//! - `PUT /blob/<sha256 hex>` with a `Content-Length`: the receiver streams the body into its
//!   [`BlobStore`], which verifies the SHA-256 (and the length) before publishing the blob.
//!   `201` once stored; `411` without a length, `413` over [`BlobStore::max_blob_bytes`], `422`
//!   when the bytes do not match the hash.
//! - `GET /blob/<sha256 hex>`: the blob's bytes, streamed (`404` when this node lacks it). The
//!   fetching side verifies the hash itself: a peer is trusted to be a delegated node, never to
//!   serve the right bytes.
//!
//! Only nodes in the allowed set reach the listener (the handshake checks their certificate's
//! DID), exactly as for Raft messages. Mount a store with
//! [`NodeConfig::blobs`](crate::NodeConfig::blobs); talk to other nodes' stores with a
//! [`BlobClient`].

use std::fmt;
use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use zero_auth::Did;

use crate::Member;
use crate::peer::PeerChannel;

/// The path prefix of blob messages.
pub const BLOB_PATH: &str = "/blob/";
/// Bytes per streamed chunk.
const CHUNK: usize = 256 * 1024;
/// The most bytes of an error answer read back.
const MAX_ERROR_BODY: usize = 4096;

/// The body of every answer on the peer listener.
pub(crate) type PeerBody = BoxBody<Bytes, io::Error>;

/// An opened blob: its size and a reader of its content.
pub type OpenBlob = (u64, Box<dyn Read + Send>);

/// Why a [`BlobStore`] refused a pushed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobRefusal {
    /// The bytes do not hash to the name they were sent under, or their length is not the
    /// one announced.
    Mismatch(String),
    /// The blob is larger than the store accepts.
    TooLarge(String),
    /// The store could not write it.
    Failed(String),
}

impl fmt::Display for BlobRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlobRefusal::Mismatch(m) | BlobRefusal::TooLarge(m) | BlobRefusal::Failed(m) => {
                f.write_str(m)
            }
        }
    }
}

/// A node's content-addressed blob store, served to the other nodes. Methods are blocking
/// (called from blocking threads).
pub trait BlobStore: Send + Sync + 'static {
    /// The largest blob [`receive`](Self::receive) accepts; larger pushes are refused with
    /// `413` before any byte is read.
    fn max_blob_bytes(&self) -> u64;

    /// Stores the blob named `hash`, announced as `size` bytes, reading it from `content`.
    /// Must verify that the content is exactly `size` bytes hashing to `hash` before the blob
    /// becomes visible, and refuse otherwise.
    fn receive(&self, hash: [u8; 32], size: u64, content: &mut dyn Read)
    -> Result<(), BlobRefusal>;

    /// Opens the blob `hash` for reading: its size and its content, or `None` when absent.
    fn open(&self, hash: [u8; 32]) -> Result<Option<OpenBlob>, String>;
}

/// A [`BlobStore`] to mount on the peer listener ([`NodeConfig::blobs`](crate::NodeConfig)).
#[derive(Clone)]
pub struct BlobService(pub Arc<dyn BlobStore>);

impl fmt::Debug for BlobService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobService")
            .field("max_blob_bytes", &self.0.max_blob_bytes())
            .finish()
    }
}

/// A body fed by a channel of chunks (streaming without holding the whole blob).
struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

/// A blocking reader over a channel of chunks.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// Streams `content` (up to `size` bytes) into a body from a blocking thread.
fn stream_from(mut content: Box<dyn Read + Send>, size: u64) -> ChannelBody {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut left = size;
        while left > 0 {
            let mut buf = vec![0u8; CHUNK.min(left as usize)];
            match content.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    ChannelBody { rx }
}

pub(crate) fn boxed(response: Response<Full<Bytes>>) -> Response<PeerBody> {
    response.map(|b| b.map_err(|never| match never {}).boxed())
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response<PeerBody> {
    let mut response = Response::new(Full::new(Bytes::from(message.into())));
    *response.status_mut() = status;
    boxed(response)
}

fn parse_hash(path: &str) -> Option<[u8; 32]> {
    let hex = path.strip_prefix(BLOB_PATH)?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn to_hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a request path is a blob message.
pub(crate) fn is_blob_path(path: &str) -> bool {
    path.starts_with(BLOB_PATH)
}

/// Serves one blob message from the authenticated peer `did`.
pub(crate) async fn handle(
    store: Arc<dyn BlobStore>,
    did: Did,
    request: Request<Incoming>,
) -> Response<PeerBody> {
    let path = request.uri().path().to_string();
    let Some(hash) = parse_hash(&path) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("{path} is not /blob/<64 hex digits of a sha256>"),
        );
    };
    match *request.method() {
        Method::GET => {
            let opened = {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.open(hash)).await
            };
            match opened {
                Ok(Ok(Some((size, content)))) => {
                    let mut response = Response::new(stream_from(content, size).boxed());
                    response
                        .headers_mut()
                        .insert(http::header::CONTENT_LENGTH, size.into());
                    response
                }
                Ok(Ok(None)) => plain(
                    StatusCode::NOT_FOUND,
                    format!("this node has no blob {}", to_hex(&hash)),
                ),
                Ok(Err(e)) => plain(StatusCode::INTERNAL_SERVER_ERROR, e),
                Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        Method::PUT => receive(store, did, hash, request).await,
        _ => plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "blob messages are GET or PUT",
        ),
    }
}

async fn receive(
    store: Arc<dyn BlobStore>,
    did: Did,
    hash: [u8; 32],
    request: Request<Incoming>,
) -> Response<PeerBody> {
    let max = store.max_blob_bytes();
    let Some(size) = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return plain(
            StatusCode::LENGTH_REQUIRED,
            "a pushed blob needs a Content-Length",
        );
    };
    if size > max {
        tracing::warn!(peer = %did, size, max, "refused an oversized blob");
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a blob may be at most {max} bytes; this one is {size}"),
        );
    }
    let (tx, rx) = mpsc::channel(4);
    let stored = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        store.receive(hash, size, &mut reader)
    });
    let mut body = request.into_body();
    let mut seen: u64 = 0;
    while let Some(frame) = body.frame().await {
        let chunk = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(chunk) => chunk,
                Err(_) => continue,
            },
            Err(e) => {
                let _ = tx.send(Err(io::Error::other(e))).await;
                break;
            }
        };
        seen += chunk.len() as u64;
        if seen > size {
            let _ = tx
                .send(Err(io::Error::other(
                    "the body is longer than its Content-Length",
                )))
                .await;
            break;
        }
        if tx.send(Ok(chunk)).await.is_err() {
            break; // the store stopped reading (it refused the blob)
        }
    }
    drop(tx);
    match stored.await {
        Ok(Ok(())) => plain(StatusCode::CREATED, "stored"),
        Ok(Err(refusal)) => {
            tracing::warn!(peer = %did, blob = %to_hex(&hash), error = %refusal, "refused a pushed blob");
            let status = match refusal {
                BlobRefusal::Mismatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
                BlobRefusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                BlobRefusal::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            plain(status, refusal.to_string())
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Pushes blobs to and fetches blobs from other nodes over the peer channel.
#[derive(Clone)]
pub struct BlobClient {
    channel: PeerChannel,
    connect_timeout: Duration,
    transfer_timeout: Duration,
}

impl BlobClient {
    /// A client over `channel` (the node's own [`PeerChannel`]), giving up on a connection
    /// after `connect_timeout` and on a whole transfer after `transfer_timeout`.
    pub fn new(
        channel: PeerChannel,
        connect_timeout: Duration,
        transfer_timeout: Duration,
    ) -> BlobClient {
        BlobClient {
            channel,
            connect_timeout,
            transfer_timeout,
        }
    }

    async fn open(
        &self,
        member: &Member,
    ) -> Result<hyper::client::conn::http1::SendRequest<PeerBody>, String> {
        let addr = member.addr.as_str();
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (tls, did) = tokio::time::timeout(self.connect_timeout, self.channel.connect(stream))
            .await
            .map_err(|_| format!("the peer handshake with {addr} timed out"))?
            .map_err(|e| format!("{addr} refused or failed the peer handshake: {e}"))?;
        if did.as_str() != member.did {
            return Err(format!(
                "the node at {addr} is {did}, but the membership names {} there",
                member.did
            ));
        }
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "blob client connection ended");
            }
        });
        Ok(sender)
    }

    async fn error_text(response: Response<Incoming>) -> String {
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ERROR_BODY)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        format!("{status}: {body}")
    }

    /// Pushes the blob `hash` of `size` bytes, read from `content`, to `member`; `Ok` once
    /// the member verified and stored it.
    pub async fn push(
        &self,
        member: &Member,
        hash: [u8; 32],
        size: u64,
        content: Box<dyn Read + Send>,
    ) -> Result<(), String> {
        let work = async {
            let mut sender = self.open(member).await?;
            let request = Request::builder()
                .method(Method::PUT)
                .uri(format!("{BLOB_PATH}{}", to_hex(&hash)))
                .header(http::header::HOST, "zerocore-node")
                .header(http::header::CONTENT_LENGTH, size)
                .body(stream_from(content, size).boxed())
                .map_err(|e| format!("cannot build the blob request: {e}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("pushing blob {} to {}: {e}", to_hex(&hash), member.addr))?;
            if response.status() == StatusCode::CREATED {
                return Ok(());
            }
            Err(format!(
                "{} refused blob {}: {}",
                member.addr,
                to_hex(&hash),
                Self::error_text(response).await
            ))
        };
        tokio::time::timeout(self.transfer_timeout, work)
            .await
            .map_err(|_| {
                format!(
                    "pushing blob {} to {} took longer than {:?}",
                    to_hex(&hash),
                    member.addr,
                    self.transfer_timeout
                )
            })?
    }

    /// Fetches the blob `hash` from `member`, handing its bytes (at most `max`) to `sink` as
    /// they arrive; the number of bytes. The caller must verify them against the hash.
    pub async fn fetch(
        &self,
        member: &Member,
        hash: [u8; 32],
        max: u64,
        sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<u64, String> {
        let work = async {
            let mut sender = self.open(member).await?;
            let request = Request::builder()
                .method(Method::GET)
                .uri(format!("{BLOB_PATH}{}", to_hex(&hash)))
                .header(http::header::HOST, "zerocore-node")
                .body(
                    Full::new(Bytes::new())
                        .map_err(|never| match never {})
                        .boxed(),
                )
                .map_err(|e| format!("cannot build the blob request: {e}"))?;
            let response = sender.send_request(request).await.map_err(|e| {
                format!("fetching blob {} from {}: {e}", to_hex(&hash), member.addr)
            })?;
            if response.status() != StatusCode::OK {
                return Err(format!(
                    "{} did not serve blob {}: {}",
                    member.addr,
                    to_hex(&hash),
                    Self::error_text(response).await
                ));
            }
            let mut body = response.into_body();
            let mut got: u64 = 0;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("reading blob from {}: {e}", member.addr))?;
                let Ok(chunk) = frame.into_data() else {
                    continue;
                };
                got += chunk.len() as u64;
                if got > max {
                    return Err(format!(
                        "{} sent more than the {max} bytes blob {} has",
                        member.addr,
                        to_hex(&hash)
                    ));
                }
                sink(&chunk).map_err(|e| format!("storing the fetched blob: {e}"))?;
            }
            Ok(got)
        };
        tokio::time::timeout(self.transfer_timeout, work)
            .await
            .map_err(|_| {
                format!(
                    "fetching blob {} from {} took longer than {:?}",
                    to_hex(&hash),
                    member.addr,
                    self.transfer_timeout
                )
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_name_exactly_one_sha256() {
        let h = [0xabu8; 32];
        assert_eq!(parse_hash(&format!("{BLOB_PATH}{}", to_hex(&h))), Some(h));
        assert_eq!(parse_hash("/blob/abc"), None);
        assert_eq!(parse_hash(&format!("/blob/{}", "zz".repeat(32))), None);
        assert_eq!(parse_hash(&format!("/blobs/{}", to_hex(&h))), None);
    }
}
