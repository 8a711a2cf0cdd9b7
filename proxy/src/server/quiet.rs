//! HTTP/2 connections that go quiet: nothing read from the client for the header timeout.
//!
//! hyper's HTTP/2 server has no header or idle timeout of its own, so a client that opens a
//! connection and sends part of the preface, or the preface and nothing after, would hold a
//! connection (and its descriptor) for good: slowloris over HTTP/2. The server pings every
//! HTTP/2 connection twice a header timeout; a live client answers, which is a read, even
//! while a long request of its own is in flight. A connection that has not been read from
//! for a whole header timeout is dropped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// When the client was last read from: milliseconds since `since`.
#[derive(Debug)]
pub(super) struct LastRead {
    since: Instant,
    millis: AtomicU64,
}

impl LastRead {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            since: Instant::now(),
            millis: AtomicU64::new(0),
        })
    }

    fn mark(&self) {
        let millis = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(millis, Ordering::Relaxed);
    }

    fn at(&self) -> Instant {
        self.since + Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }

    /// Resolves once nothing has been read for `quiet`.
    pub(super) async fn quiet_for(&self, quiet: Duration) {
        loop {
            let due = self.at() + quiet;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's stream that marks each read in a [`LastRead`].
    pub(super) struct Marked<I> {
        #[pin]
        inner: I,
        last: Arc<LastRead>,
    }
}

impl<I> Marked<I> {
    pub(super) fn new(inner: I, last: Arc<LastRead>) -> Self {
        Self { inner, last }
    }
}

impl<I: AsyncRead> AsyncRead for Marked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.last.mark();
        }
        polled
    }
}

impl<I: AsyncWrite> AsyncWrite for Marked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
