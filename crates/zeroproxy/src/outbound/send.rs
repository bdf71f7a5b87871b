//! Sending one outgoing request to addresses that were already checked.
//!
//! This follows `wasmtime_wasi_http::default_send_request` (the same TCP, rustls with the
//! webpki roots, SNI from the request's host, and hyper HTTP/1.1 client), with two differences:
//! it connects to the given, already checked socket addresses instead of resolving the host
//! again (so a DNS answer cannot change between the check and the connection), and every phase
//! runs under the node's timeouts.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use wasmtime_wasi_http::{Error, WasiBody};

/// The connection's I/O, to be driven until the response body is done.
pub(crate) type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// Timeouts of one outgoing request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// From the start of the request to the end of the connection handshake (DNS, TCP, TLS,
    /// HTTP).
    pub connect: Duration,
    /// From sending the request to the response head.
    pub first_byte: Duration,
    /// Between two frames of the response body.
    pub between_bytes: Duration,
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T> Stream for T where T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

/// The TLS client configuration: rustls with the ring provider and the webpki roots, as in
/// `wasmtime_wasi_http::default_send_request`. The provider is named explicitly so that the
/// configuration does not depend on which rustls providers other crates enable.
static TLS: LazyLock<Result<Arc<rustls::ClientConfig>, String>> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|e| format!("the TLS client cannot be configured: {e}"))
});

/// The name the server's certificate must carry: the request's host (an IP literal or a DNS
/// name), never the address it resolved to.
fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, Error> {
    use rustls::pki_types::ServerName;
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok(ServerName::from(ip)),
        Err(_) => Ok(ServerName::try_from(host.to_string())?),
    }
}

/// Connects to `addrs` (tried in order) and sends `req` to `host`.
///
/// `deadline` bounds everything up to the end of the handshakes.
pub(crate) async fn send(
    mut req: Request<WasiBody>,
    host: &str,
    use_tls: bool,
    addrs: &[SocketAddr],
    deadline: Instant,
    timeouts: Timeouts,
) -> Result<(Response<WasiBody>, IoFuture), Error> {
    let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(addrs)).await {
        Ok(stream) => stream.map_err(Error::Connect)?,
        Err(_) => return Err(Error::ConnectionTimeout),
    };
    let stream: Box<dyn Stream> = if use_tls {
        let config = TLS
            .as_ref()
            .map_err(|e| Error::InternalError(Some(e.clone())))?;
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let name = server_name(host)?;
        match tokio::time::timeout_at(deadline, connector.connect(name, tcp)).await {
            Ok(stream) => Box::new(stream.map_err(Error::Tls)?),
            Err(_) => return Err(Error::ConnectionTimeout),
        }
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = tokio::time::timeout_at(
        deadline,
        hyper::client::conn::http1::Builder::new()
            .handshake(wasmtime_wasi_http::io::TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // The request carries the scheme and authority, but on the wire (not to a proxy) only the
    // path and query belong in the request line; the host is in the `host` header.
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    *req.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    let send = async move {
        let res = tokio::time::timeout(timeouts.first_byte, sender.send_request(req))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)??;
        // Tokio panics on a zero interval.
        let between = timeouts.between_bytes.max(Duration::from_nanos(1));
        let mut timer = tokio::time::interval(between);
        timer.reset();
        Ok::<_, Error>(res.map(|incoming| TimedBody { incoming, timer }.boxed_unsync()))
    };
    // Wait for the response head while driving the connection.
    let mut send = std::pin::pin!(send);
    let mut conn = Some(conn);
    let res = std::future::poll_fn(|cx| match send.as_mut().poll(cx) {
        Poll::Ready(r) => Poll::Ready(r),
        Poll::Pending => {
            let Some(fut) = conn.as_mut() else {
                return Poll::Pending;
            };
            let done = ready!(Pin::new(fut).poll(cx));
            conn = None;
            match done {
                Ok(()) => send.as_mut().poll(cx),
                Err(e) => Poll::Ready(Err(Error::from(e))),
            }
        }
    })
    .await?;
    let io: IoFuture = Box::new(async move {
        let Some(conn) = conn else {
            return Ok(());
        };
        conn.await.map_err(|e| {
            if e.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(e)
            }
        })
    });
    Ok((res, io))
}

/// A response body that fails when no frame arrives for one period of `timer`.
struct TimedBody {
    incoming: hyper::body::Incoming,
    timer: tokio::time::Interval,
}

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(if e.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(e)
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timer.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timer.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.incoming.size_hint()
    }
}
