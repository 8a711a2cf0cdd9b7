//! The client's request body as the proxy reads it: broken bodies are the client's fault,
//! a body that stops arriving times out, and its end is announced to the upstream's clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use http_body_util::BodyExt;

use super::{BoxBody, BoxError, root_cause};

/// The client's request body broke off (a malformed chunk, the connection closed before
/// its end) or stopped arriving: the client's fault, answered 400 or 408 instead of being
/// blamed on the upstream the body was on its way to.
#[derive(Debug, thiserror::Error)]
#[error("request body: {reason}")]
pub struct ClientBodyError {
    /// The innermost cause, e.g. "invalid chunk size line".
    pub reason: String,
    /// The body stopped arriving (408) rather than breaking (400).
    pub timed_out: bool,
}

/// When the client's body was read to its end: an upstream's `timeout` counts from then
/// (as Envoy's route timeout starts once the whole request is in), so a slow upload is not
/// a 504 blamed on the upstream. A request extension, set by the server for requests that
/// come with a body.
#[derive(Debug, Default)]
pub struct BodyEnd {
    at: OnceLock<Instant>,
    reached: Notify,
}

impl BodyEnd {
    /// A body not read to its end yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Whether the body has been read to its end.
    pub fn reached(&self) -> bool {
        self.at.get().is_some()
    }

    /// Resolves `timeout` after the body's end (waiting for the end first).
    pub async fn timeout_after(&self, timeout: Duration) {
        loop {
            let reached = self.reached.notified();
            if let Some(at) = self.at.get() {
                tokio::time::sleep_until(*at + timeout).await;
                return;
            }
            reached.await;
        }
    }

    fn reach(&self) {
        if self.at.set(Instant::now()).is_ok() {
            self.reached.notify_waiters();
        }
    }
}

/// Box a request body as the client sends it: its failures become [`ClientBodyError`]s,
/// `idle` without a byte of it is one too (timed out), and `end` learns when it ends.
pub fn from_client<B>(body: B, idle: Duration, end: Arc<BodyEnd>) -> BoxBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    ClientBody {
        inner: body,
        idle,
        timer: None,
        progressed: false,
        end,
    }
    .boxed_unsync()
}

pin_project_lite::pin_project! {
    /// See [`from_client`].
    struct ClientBody<B> {
        #[pin]
        inner: B,
        idle: Duration,
        // Made at the first wait, then reset after progress: one timer per body.
        timer: Option<Pin<Box<Sleep>>>,
        progressed: bool,
        end: Arc<BodyEnd>,
    }
}

impl<B> Body for ClientBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.progressed = true;
                // A reader that stops at the last frame never polls for the end.
                if this.inner.as_ref().is_end_stream() {
                    this.end.reach();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Box::new(ClientBodyError {
                reason: root_cause(&err),
                timed_out: false,
            })))),
            Poll::Ready(None) => {
                this.end.reach();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = *this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if std::mem::take(this.progressed) {
                    timer.as_mut().reset(Instant::now() + idle);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(ClientBodyError {
                        reason: format!("no data from the client for {idle:?}"),
                        timed_out: true,
                    })))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let ended = self.inner.is_end_stream();
        if ended {
            self.end.reach();
        }
        ended
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
