//! Body types of the request path: one boxed body type, constructors, and a guard-carrying wrapper.

mod client;

pub use client::{BodyEnd, ClientBodyError, from_client};

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, SizeHint};

/// Error type of every body that flows through the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one body type used in both directions, so requests and responses can be re-wrapped cheaply.
pub type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> BoxBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The innermost message of an error chain: the most specific reason.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// A body held entirely in memory.
pub fn full(data: impl Into<Bytes>) -> BoxBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Box any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> BoxBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// Read `body` to its end, keeping at most `limit` bytes.
///
/// Returns the bytes kept and whether the body was longer (then it was not read further).
///
/// # Errors
/// The body's own error.
pub async fn collect_bounded<B>(body: B, limit: usize) -> Result<(Bytes, bool), B::Error>
where
    B: Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut kept = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        if let Ok(data) = frame?.into_data() {
            if kept.len() + data.len() > limit {
                return Ok((Bytes::new(), true));
            }
            kept.extend_from_slice(&data);
        }
    }
    Ok((Bytes::from(kept), false))
}

pin_project_lite::pin_project! {
    /// A body that keeps `guard` alive until the body is finished or dropped.
    ///
    /// The response body outlives the handler that produced it, so anything that must last
    /// as long as the exchange (an upstream connection permit, the in-flight count, the
    /// runtime snapshot the request started on) rides along with the body.
    pub struct Guarded<B, G> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B, G> Guarded<B, G> {
    /// Wrap `inner` so that `guard` is dropped with it.
    pub fn new(inner: B, guard: G) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B: Body, G> Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body grew past the configured limit (answered with 413).
#[derive(Debug, thiserror::Error)]
#[error("request body larger than {limit} bytes")]
pub struct BodyTooLarge {
    /// The limit in bytes.
    pub limit: u64,
}

pin_project_lite::pin_project! {
    /// A streaming body that fails with [`BodyTooLarge`] once more than `limit` bytes passed.
    ///
    /// Unlike `http_body_util::Limited` it forwards each chunk as it arrives, so a limit does
    /// not turn a streamed upload into a buffered one.
    pub struct LimitedStream<B> {
        #[pin]
        inner: B,
        remaining: u64,
        limit: u64,
    }
}

impl<B> LimitedStream<B> {
    /// Limit `inner` to `limit` bytes.
    pub fn new(inner: B, limit: u64) -> Self {
        Self {
            inner,
            remaining: limit,
            limit,
        }
    }
}

impl<B> Body for LimitedStream<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        let err = BodyTooLarge { limit: *this.limit };
                        return Poll::Ready(Some(Err(Box::new(err))));
                    }
                    *this.remaining -= len;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn limited_stream_passes_bodies_within_the_limit() {
        let body = LimitedStream::new(Full::new(Bytes::from_static(b"hello")), 5);
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"hello");
    }

    #[tokio::test]
    async fn limited_stream_fails_past_the_limit() {
        let body = LimitedStream::new(Full::new(Bytes::from_static(b"hello!")), 5);
        let err = body.collect().await.err().unwrap();
        assert!(err.downcast_ref::<BodyTooLarge>().is_some());
    }
}

/// Why a teed copy of a body is not available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyError {
    /// The body grew past the copy's limit; the original went on streaming untouched.
    TooLarge,
    /// The body did not finish (client or upstream went away, or the stream failed).
    Incomplete,
}

/// The receiving end of a teed copy: resolves once the original body has been fully read.
pub type CopyReceiver = tokio::sync::oneshot::Receiver<Result<Bytes, CopyError>>;

pin_project_lite::pin_project! {
    /// A body that streams `inner` unchanged while keeping a bounded copy for someone else
    /// (the shadow candidate, the comparison, an `after_response` hook).
    ///
    /// The copy holds refcounted chunks, not re-allocated bytes, and is handed over when the
    /// body ends — detected by `is_end_stream()` too, since a peer that knows the length
    /// stops polling before `Ready(None)`. Past `limit` the copy is abandoned, never the body.
    pub struct Tee<B> {
        #[pin]
        inner: B,
        chunks: Vec<Bytes>,
        copied: usize,
        limit: usize,
        done: Option<tokio::sync::oneshot::Sender<Result<Bytes, CopyError>>>,
    }

    impl<B> PinnedDrop for Tee<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(done) = this.done.take() {
                let _ = done.send(Err(CopyError::Incomplete));
            }
        }
    }
}

impl<B: Body<Data = Bytes>> Tee<B> {
    /// Tee `inner`, copying up to `limit` bytes; the copy arrives on the returned receiver.
    pub fn new(inner: B, limit: usize) -> (Self, CopyReceiver) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut tee = Self {
            inner,
            chunks: Vec::new(),
            copied: 0,
            limit,
            done: Some(tx),
        };
        if tee.inner.is_end_stream()
            && let Some(done) = tee.done.take()
        {
            let _ = done.send(Ok(Bytes::new()));
        }
        (tee, rx)
    }
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(_)) = (frame.data_ref(), this.done.as_ref()) {
                    *this.copied += data.len();
                    if *this.copied > *this.limit {
                        this.chunks.clear();
                        if let Some(done) = this.done.take() {
                            let _ = done.send(Err(CopyError::TooLarge));
                        }
                    } else {
                        this.chunks.push(data.clone());
                    }
                }
                if this.inner.is_end_stream() {
                    finish(this.chunks, this.done);
                }
            }
            Poll::Ready(None) => finish(this.chunks, this.done),
            Poll::Ready(Some(Err(_))) => {
                if let Some(done) = this.done.take() {
                    let _ = done.send(Err(CopyError::Incomplete));
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Hand the collected chunks over as one buffer.
fn finish(
    chunks: &mut Vec<Bytes>,
    done: &mut Option<tokio::sync::oneshot::Sender<Result<Bytes, CopyError>>>,
) {
    if let Some(done) = done.take() {
        let copy = match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.remove(0),
            _ => Bytes::from(chunks.concat()),
        };
        chunks.clear();
        let _ = done.send(Ok(copy));
    }
}

#[cfg(test)]
mod tee_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::StreamBody;

    fn chunked(
        parts: &[&'static str],
    ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn the_copy_equals_the_streamed_body() {
        let (tee, copy) = Tee::new(chunked(&["hel", "lo ", "world"]), 1024);
        let streamed = tee.collect().await.unwrap().to_bytes();
        assert_eq!(&streamed[..], b"hello world");
        assert_eq!(&copy.await.unwrap().unwrap()[..], b"hello world");
    }

    #[tokio::test]
    async fn a_body_with_known_length_hands_over_its_copy_at_the_last_frame() {
        let (mut tee, mut copy) = Tee::new(Full::new(Bytes::from_static(b"abc")), 1024);
        let frame = std::future::poll_fn(|cx| Pin::new(&mut tee).poll_frame(cx)).await;
        assert!(frame.is_some());
        // The consumer stops here (is_end_stream), without polling Ready(None).
        assert!(tee.is_end_stream());
        assert_eq!(&copy.try_recv().unwrap().unwrap()[..], b"abc");
    }

    #[tokio::test]
    async fn past_the_limit_the_copy_is_abandoned_but_the_body_streams_on() {
        let (tee, copy) = Tee::new(chunked(&["0123456789", "0123456789"]), 15);
        let streamed = tee.collect().await.unwrap().to_bytes();
        assert_eq!(streamed.len(), 20);
        assert_eq!(copy.await.unwrap(), Err(CopyError::TooLarge));
    }

    #[tokio::test]
    async fn an_empty_body_is_copied_at_once_and_a_dropped_one_is_incomplete() {
        let (_tee, copy) = Tee::new(Empty::<Bytes>::new(), 10);
        assert_eq!(copy.await.unwrap().unwrap().len(), 0);
        let (tee, copy) = Tee::new(chunked(&["x"]), 10);
        drop(tee);
        assert_eq!(copy.await.unwrap(), Err(CopyError::Incomplete));
    }
}

/// The outcome of [`buffer_prefix`].
pub enum Buffered {
    /// The whole body, at most the limit.
    Complete(Bytes),
    /// The body is larger than the limit; here it is again, whole, still streaming.
    TooLarge(BoxBody),
}

/// Read up to `limit` bytes of `body` so a body predicate can look at it.
///
/// A body that turns out larger is handed back intact (the bytes read so far followed by
/// the rest of the stream), so routing on bodies never changes what the upstream gets.
///
/// # Errors
/// The body's own error (the client went away or sent a malformed body).
pub async fn buffer_prefix(body: BoxBody, limit: u64) -> Result<Buffered, BoxError> {
    if body.size_hint().lower() > limit {
        return Ok(Buffered::TooLarge(body));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut body = body;
    let mut kept: Vec<u8> = Vec::new();
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let Some(frame) = frame else {
            return Ok(Buffered::Complete(Bytes::from(kept)));
        };
        if let Ok(data) = frame?.into_data() {
            kept.extend_from_slice(&data);
            if kept.len() > limit {
                let prefixed = Prefixed {
                    prefix: Some(Bytes::from(kept)),
                    rest: body,
                };
                return Ok(Buffered::TooLarge(prefixed.boxed_unsync()));
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Bytes already read from a body, followed by the rest of that body.
    struct Prefixed<B> {
        prefix: Option<Bytes>,
        #[pin]
        rest: B,
    }
}

impl<B: Body<Data = Bytes>> Body for Prefixed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        match this.prefix.take() {
            Some(prefix) => Poll::Ready(Some(Ok(Frame::data(prefix)))),
            None => this.rest.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }
}

#[cfg(test)]
mod buffer_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_small_body_is_buffered_whole() {
        let Buffered::Complete(bytes) = buffer_prefix(full("action=payroll"), 64).await.unwrap()
        else {
            panic!("expected the whole body");
        };
        assert_eq!(&bytes[..], b"action=payroll");
    }

    #[tokio::test]
    async fn a_large_body_comes_back_intact() {
        let data = "x".repeat(100);
        let stream = futures_util::stream::iter(
            data.as_bytes()
                .chunks(10)
                .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::copy_from_slice(c))))
                .collect::<Vec<_>>(),
        );
        let body = boxed(http_body_util::StreamBody::new(stream));
        let Buffered::TooLarge(body) = buffer_prefix(body, 25).await.unwrap() else {
            panic!("expected too large");
        };
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 100);
    }
}
