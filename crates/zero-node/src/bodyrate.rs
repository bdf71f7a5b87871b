//! The management API's minimum request-body rate (`[admin] min_body_rate`): a body that
//! arrives slower is cut, so that a client trickling bytes (with or without a token) cannot
//! hold a connection for the whole `request_timeout_ms`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The error type of [`MinRate`].
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body that fails with [`SlowBody`] when, `t` after it is first read, fewer than
/// `rate × (t − grace)` bytes have arrived and none is waiting. The deadline is checked only
/// while the body has nothing to give: a handler that reads slowly is never blamed on the
/// client.
pub(crate) struct MinRate<B> {
    inner: B,
    rate: u64,
    grace: Duration,
    start: Option<Instant>,
    received: u64,
    timer: Pin<Box<Sleep>>,
}

impl<B> MinRate<B> {
    /// `inner`, at least `rate` bytes a second after `grace`.
    pub(crate) fn new(inner: B, rate: u64, grace: Duration) -> Self {
        MinRate {
            inner,
            rate: rate.max(1),
            grace,
            start: None,
            received: 0,
            timer: Box::pin(tokio::time::sleep(grace)),
        }
    }

    /// When the bytes received so far fall behind the rate.
    fn deadline(&self, start: Instant) -> Instant {
        let secs = Duration::from_secs_f64(self.received as f64 / self.rate as f64);
        start + self.grace + secs
    }
}

/// A request body arrived slower than `[admin] min_body_rate`.
#[derive(Debug)]
pub(crate) struct SlowBody {
    rate: u64,
    grace: Duration,
    received: u64,
    elapsed: Duration,
}

impl std::fmt::Display for SlowBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body arrived slower than [admin] min_body_rate ({} bytes a second after \
             {} ms): {} bytes in {} ms; send it faster, or ask the operator to lower the limit",
            self.rate,
            self.grace.as_millis(),
            self.received,
            self.elapsed.as_millis()
        )
    }
}

impl std::error::Error for SlowBody {}

/// The [`SlowBody`] somewhere in `e`'s chain of sources, if any.
pub(crate) fn slow_body<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a SlowBody> {
    let mut at = Some(e);
    while let Some(e) = at {
        if let Some(slow) = e.downcast_ref::<SlowBody>() {
            return Some(slow);
        }
        at = e.source();
    }
    None
}

/// `408 SlowBody` when `e` is (or was caused by) a [`SlowBody`].
pub(crate) fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<crate::apps::Refusal> {
    slow_body(e).map(|slow| crate::apps::Refusal::new(408, "SlowBody", slow.to_string()))
}

impl<B> Body for MinRate<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let start = *self.start.get_or_insert_with(Instant::now);
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = self.deadline(start);
                if self.timer.deadline() != deadline {
                    self.timer.as_mut().reset(deadline);
                }
                if self.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                Poll::Ready(Some(Err(Box::new(SlowBody {
                    rate: self.rate,
                    grace: self.grace,
                    received: self.received,
                    elapsed: start.elapsed(),
                }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// An mpsc receiver as a stream of frames.
    struct Frames(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::convert::Infallible>>);

    impl futures::Stream for Frames {
        type Item = Result<Frame<Bytes>, std::convert::Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }

    /// A body sending `chunk` bytes every `every`, `n` times.
    fn trickle(chunk: usize, every: Duration, n: usize) -> http_body_util::StreamBody<Frames> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..n {
                tokio::time::sleep(every).await;
                let frame = Frame::data(Bytes::from(vec![0u8; chunk]));
                if tx.send(Ok(frame)).await.is_err() {
                    return;
                }
            }
        });
        http_body_util::StreamBody::new(Frames(rx))
    }

    #[tokio::test]
    async fn a_body_at_the_rate_passes_and_a_slower_one_is_cut_after_the_grace() {
        // 1 KiB every 20 ms is about 50 KiB/s: above a 4 KiB/s floor.
        let every = Duration::from_millis(20);
        let ok = MinRate::new(trickle(1024, every, 20), 4096, Duration::from_millis(200));
        assert_eq!(ok.collect().await.unwrap().to_bytes().len(), 20 * 1024);
        // 10 bytes every 100 ms against 4 KiB/s: cut once the grace and the bytes' worth pass.
        let t = Instant::now();
        let every = Duration::from_millis(100);
        let slow = MinRate::new(trickle(10, every, 100), 4096, Duration::from_millis(300));
        let e = slow.collect().await.err().unwrap();
        let slow = slow_body(&*e).expect("a SlowBody");
        assert!(
            slow.to_string()
                .contains("[admin] min_body_rate (4096 bytes a second after 300 ms)"),
            "{slow}"
        );
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }
}
