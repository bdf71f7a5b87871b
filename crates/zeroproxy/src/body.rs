//! Request and response bodies: the request-size cap, the response-size cap, the guest task's
//! lifetime tied to the response stream, and the access log line written when a response ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::task::JoinHandle;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use zerocore::Fault;

use crate::AccessInfo;
use crate::conn::InFlight;

/// The error type of [`ProxyBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An incoming request body that fails once more than `limit` bytes arrive.
pub(crate) struct LimitedIncoming {
    inner: Incoming,
    remaining: u64,
    limit: u64,
}

impl LimitedIncoming {
    pub(crate) fn new(inner: Incoming, limit: u64) -> Self {
        LimitedIncoming {
            inner,
            remaining: limit,
            limit,
        }
    }
}

impl Body for LimitedIncoming {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.remaining {
                        self.remaining = 0;
                        return Poll::Ready(Some(Err(
                            wasmtime_wasi_http::Error::HttpRequestBodySize(Some(self.limit)),
                        )));
                    }
                    self.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The guest's task: aborted if dropped before the response finished (the client went away),
/// detached once the response body is complete.
pub(crate) struct TaskGuard {
    handle: Option<JoinHandle<Result<(), Fault>>>,
}

impl TaskGuard {
    pub(crate) fn new(handle: JoinHandle<Result<(), Fault>>) -> Self {
        TaskGuard {
            handle: Some(handle),
        }
    }

    pub(crate) async fn join(mut self) -> Option<Result<(), Fault>> {
        self.handle.take()?.await.ok()
    }

    fn detach(mut self) {
        self.handle.take();
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

enum Kind {
    Full(Option<Bytes>),
    Guest {
        inner: HyperOutgoingBody,
        task: Option<TaskGuard>,
        limit: u64,
    },
}

struct Access {
    info: AccessInfo,
    status: StatusCode,
    /// The body's exact length when it declared one: hyper stops polling a body once that many
    /// bytes are sent, so reaching it is how a complete response is known.
    length: Option<u64>,
}

/// A response body: either a fixed message from the node or the guest's stream.
pub struct ProxyBody {
    kind: Kind,
    access: Option<Access>,
    sent: u64,
    outcome: &'static str,
    /// The request's place on its connection, released with the body.
    in_flight: Option<InFlight>,
}

impl ProxyBody {
    /// A body with fixed content.
    pub fn full(bytes: Bytes) -> Self {
        ProxyBody {
            kind: Kind::Full(Some(bytes)),
            access: None,
            sent: 0,
            outcome: "incomplete",
            in_flight: None,
        }
    }

    pub(crate) fn guest(inner: HyperOutgoingBody, task: TaskGuard, limit: u64) -> Self {
        ProxyBody {
            kind: Kind::Guest {
                inner,
                task: Some(task),
                limit,
            },
            access: None,
            sent: 0,
            outcome: "incomplete",
            in_flight: None,
        }
    }

    pub(crate) fn holding(mut self, in_flight: InFlight) -> Self {
        self.in_flight = Some(in_flight);
        self
    }

    /// Logs the response's access line when the body is dropped; `length` is the length its
    /// headers declare, if any.
    pub(crate) fn tracked(
        mut self,
        info: AccessInfo,
        status: StatusCode,
        length: Option<u64>,
    ) -> Self {
        let length = length.or(self.size_hint().exact());
        self.access = Some(Access {
            info,
            status,
            length,
        });
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = this.poll_inner(cx);
        if let (Poll::Ready(_), Some(f)) = (&polled, &this.in_flight) {
            f.progressed();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Guest { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Guest { inner, .. } => inner.size_hint(),
        }
    }
}

impl ProxyBody {
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self;
        match &mut this.kind {
            Kind::Full(bytes) => match bytes.take() {
                Some(b) => {
                    this.sent += b.len() as u64;
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                None => {
                    this.outcome = "complete";
                    Poll::Ready(None)
                }
            },
            Kind::Guest { inner, task, limit } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        this.sent += data.len() as u64;
                        if this.sent > *limit {
                            this.outcome = "response_too_large";
                            let rid = this.access.as_ref().map(|a| a.info.request_id.clone());
                            tracing::error!(request_id = ?rid, limit = *limit, "the app's response body exceeded the node's limit; the response was cut");
                            return Poll::Ready(Some(Err(format!(
                                "response body exceeds the limit of {limit} bytes"
                            )
                            .into())));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    this.outcome = "guest_stream_error";
                    Poll::Ready(Some(Err(format!(
                        "the app's response stream failed: {e:?}"
                    )
                    .into())))
                }
                Poll::Ready(None) => {
                    this.outcome = "complete";
                    if let Some(t) = task.take() {
                        t.detach();
                    }
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(a) = &self.access {
            let outcome = if self.outcome == "incomplete"
                && (self.is_end_stream() || a.length == Some(self.sent))
            {
                "complete"
            } else {
                self.outcome
            };
            let trace_id = a.info.trace.as_ref().map(|trace| {
                trace.finish(a.status, self.sent, outcome);
                zero_provider::trace::trace_id(&trace.request).unwrap_or_default()
            });
            // `trace_id` is recorded only when the request is traced (a `None` field is left
            // out of the line).
            tracing::info!(
                target: "access",
                request_id = %a.info.request_id,
                tenant = a.info.tenant.as_deref().unwrap_or("-"),
                app = a.info.app.as_deref().unwrap_or("-"),
                method = %a.info.method,
                path = %a.info.uri.path(),
                status = a.status.as_u16(),
                bytes = self.sent,
                duration_ms = a.info.start.elapsed().as_secs_f64() * 1000.0,
                remote = %a.info.remote,
                outcome,
                trace_id = trace_id.as_deref(),
                "request"
            );
            let routed = a.info.tenant.clone().zip(a.info.app.clone());
            a.info
                .metrics
                .record(routed, a.status.as_u16(), a.info.start.elapsed());
        }
    }
}
