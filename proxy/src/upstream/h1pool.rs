//! A lean keep-alive pool for plain HTTP/1.1 upstreams, the common case (the monolith).
//!
//! hyper-util's general client spends more on its pool than on the exchange: a keyed map
//! behind a lock, a lazily built connector, a task per returned connection. This pool keeps
//! only what one upstream needs: stacks of idle connections, checked out most-recent first
//! (the warmest socket), and handed back when the response body has been read to its end.
//!
//! Two kinds of connection share the pool. Idempotent requests without a body (GET, HEAD:
//! most of the traffic) are exchanged inline by the request's own task on a bare socket
//! ([`super::h1wire`]); a stale one of those can always be sent again. Requests with a body,
//! non-idempotent ones and upgrades go over hyper's client connection, which streams the
//! body while the answer arrives, notices an idle connection closing, and hands back a
//! request it never sent.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::h1wire::{Attempt, Framing, WireConn, WireError};
use crate::body::{self, BoxBody};
use crate::headers;

/// Why an exchange on this pool failed, before classification into a `ProxyError`.
pub(super) enum Failure {
    /// No connection within the connect timeout.
    ConnectTimeout,
    /// The TCP connect failed.
    Connect(std::io::Error),
    /// The HTTP/1 handshake or the exchange failed.
    Exchange(hyper::Error),
    /// An inline exchange failed.
    Wire(WireError),
    /// No response head before the upstream's timeout.
    Timeout,
}

impl From<WireError> for Failure {
    fn from(err: WireError) -> Self {
        match err {
            WireError::TimedOut => Self::Timeout,
            err => Self::Wire(err),
        }
    }
}

/// Idle connections of one upstream.
pub(super) struct H1Pool {
    /// `host:port` to connect to.
    address: String,
    /// The `Host` sent when the request has none (host rewrite, or HTTP/2 clients).
    authority: HeaderValue,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: IdleStack<http1::SendRequest<BoxBody>>,
    idle_wire: IdleStack<WireConn>,
}

/// Idle connections of one kind, the most recently used on top.
struct IdleStack<C>(Mutex<Vec<Idle<C>>>);

/// A connection waiting for its next request, and since when.
struct Idle<C> {
    conn: C,
    since: Instant,
}

impl<C> IdleStack<C> {
    fn new() -> Self {
        Self(Mutex::new(Vec::new()))
    }

    /// The most recently used connection that has been idle for less than `timeout` at
    /// `now`; the ones idle for longer are dropped on the way.
    fn pop_fresh(&self, now: Instant, timeout: Duration) -> Option<C> {
        let mut idle = self.0.lock().ok()?;
        while let Some(entry) = idle.pop() {
            if now.saturating_duration_since(entry.since) < timeout {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Keep `conn`, idle since `since`, unless `max` connections are waiting already.
    fn push(&self, conn: C, since: Instant, max: usize) {
        if let Ok(mut idle) = self.0.lock()
            && idle.len() < max
        {
            idle.push(Idle { conn, since });
        }
    }
}

impl H1Pool {
    /// A pool for `authority` (`host:port`).
    pub(super) fn new(
        authority: &http::uri::Authority,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        let port = authority.port_u16().unwrap_or(80);
        Self {
            address: format!("{}:{port}", authority.host()),
            authority: HeaderValue::from_str(authority.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            connect_timeout,
            idle_timeout,
            max_idle,
            idle: IdleStack::new(),
            idle_wire: IdleStack::new(),
        }
    }

    /// Send `request` (origin-form URI) and wait for the response head, until `deadline`;
    /// with `relay`, an inline exchange's head may come as `RelayedFields`.
    ///
    /// A request the connection never took (it was closed while idle) is sent again on a
    /// fresh connection: hyper hands such a request back untouched, body included.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut request: Request<BoxBody>,
        permit: OwnedSemaphorePermit,
        deadline: Instant,
        relay: bool,
    ) -> Result<Response<BoxBody>, Failure> {
        if !request.headers().contains_key(header::HOST) {
            request
                .headers_mut()
                .insert(header::HOST, self.authority.clone());
        }
        if inline(&request) {
            return self.send_inline(request, permit, deadline, relay).await;
        }
        let response =
            tokio::time::timeout_at(deadline.into(), self.send_hyper(request, permit, deadline))
                .await
                .map_err(|_| Failure::Timeout)??;
        // The inline exchange refuses such a head while reading it; hyper reads any.
        match headers::foreign_transfer_coding(response.headers()) {
            Some(reason) => Err(Failure::Wire(WireError::Invalid(reason))),
            None => Ok(response),
        }
    }

    /// Send `request` over hyper's client connection.
    async fn send_hyper(
        self: &Arc<Self>,
        request: Request<BoxBody>,
        permit: OwnedSemaphorePermit,
        deadline: Instant,
    ) -> Result<Response<BoxBody>, Failure> {
        let mut sender = match self.checkout().await {
            Some(sender) => sender,
            None => self.connect(deadline).await?,
        };
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut err) => match err.take_message() {
                Some(request) => {
                    tracing::debug!(address = %self.address, error = %err.error(), "stale connection; retrying on a fresh one");
                    sender = self.connect(deadline).await?;
                    sender
                        .send_request(request)
                        .await
                        .map_err(Failure::Exchange)?
                }
                None => return Err(Failure::Exchange(err.into_error())),
            },
        };
        Ok(response.map(|incoming| {
            let mut back = Some((sender, self.clone()));
            // A bodiless answer (204, 304, HEAD) is over already.
            if incoming.is_end_stream() {
                hand_back(&mut back);
            }
            body::boxed(PooledBody {
                inner: incoming,
                back,
                _permit: permit,
            })
        }))
    }

    /// Exchange a bodiless idempotent request on a bare socket, in this task. A pooled
    /// connection that turns out to be closed is replaced by a fresh one, once.
    async fn send_inline(
        self: &Arc<Self>,
        request: Request<BoxBody>,
        permit: OwnedSemaphorePermit,
        deadline: Instant,
        relay: bool,
    ) -> Result<Response<BoxBody>, Failure> {
        let (head, _empty) = request.into_parts();
        // One clock read serves the idle check now and the idle mark when the connection
        // comes back: counting its idle time from the start of this exchange only ever
        // retires a connection early, never late.
        let started = Instant::now();
        let (mut conn, pooled) = match self.idle_wire.pop_fresh(started, self.idle_timeout) {
            Some(conn) => (conn, true),
            None => (WireConn::new(self.dial(deadline).await?), false),
        };
        let answer = match conn.exchange(&head, deadline, relay).await {
            Ok(answer) => answer,
            Err(Attempt::Stale(err)) if pooled => {
                tracing::debug!(address = %self.address, error = %err, "stale connection; retrying on a fresh one");
                conn = WireConn::new(self.dial(deadline).await?);
                conn.exchange(&head, deadline, relay)
                    .await
                    .map_err(|attempt| Failure::from(attempt.into_error()))?
            }
            Err(attempt) => return Err(Failure::from(attempt.into_error())),
        };
        let mut body = WireBody {
            started,
            conn: Some(conn),
            framing: answer.framing,
            keep_alive: answer.keep_alive,
            pool: self.clone(),
            _permit: permit,
        };
        // A bodiless answer (204, 304, HEAD) is over already.
        if body.framing.is_done() {
            body.finish();
        }
        Ok(answer.response.map(|()| body::boxed(body)))
    }

    /// Keep a bare connection whose exchange began at `since` for the next one.
    fn give_back_wire(&self, conn: WireConn, since: Instant) {
        self.idle_wire.push(conn, since, self.max_idle);
    }

    /// The most recently used idle connection that still works.
    async fn checkout(&self) -> Option<http1::SendRequest<BoxBody>> {
        loop {
            let mut sender = self.idle.pop_fresh(Instant::now(), self.idle_timeout)?;
            if sender.is_closed() {
                continue;
            }
            // Handed back at the end of a body, so ready at once or as soon as the
            // connection's task has seen that end.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// A new TCP connection to the upstream, within the connect timeout and `deadline`.
    async fn dial(&self, deadline: Instant) -> Result<TcpStream, Failure> {
        let connect_by = Instant::now() + self.connect_timeout;
        let stream = tokio::time::timeout_at(
            connect_by.min(deadline).into(),
            TcpStream::connect(&self.address),
        )
        .await
        .map_err(|_| {
            if connect_by <= deadline {
                Failure::ConnectTimeout
            } else {
                Failure::Timeout
            }
        })?
        .map_err(Failure::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect(&self, deadline: Instant) -> Result<http1::SendRequest<BoxBody>, Failure> {
        let stream = self.dial(deadline).await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(Failure::Exchange)?;
        let address = self.address.clone();
        tokio::spawn(async move {
            if let Err(err) = connection.with_upgrades().await {
                tracing::debug!(%address, error = %err, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    fn give_back(&self, sender: http1::SendRequest<BoxBody>) {
        if sender.is_closed() {
            return;
        }
        self.idle.push(sender, Instant::now(), self.max_idle);
    }
}

pin_project_lite::pin_project! {
    /// The response body; at its end the connection goes back to the pool. A body dropped
    /// before its end takes its connection with it (the rest of the body is still on it).
    struct PooledBody {
        #[pin]
        inner: Incoming,
        back: Option<(http1::SendRequest<BoxBody>, Arc<H1Pool>)>,
        _permit: OwnedSemaphorePermit,
    }
}

/// Return the connection to its pool, once.
fn hand_back(back: &mut Option<(http1::SendRequest<BoxBody>, Arc<H1Pool>)>) {
    if let Some((sender, pool)) = back.take() {
        pool.give_back(sender);
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            hand_back(this.back);
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

/// Whether `request` is exchanged inline: no body, no upgrade, and safe to send twice.
fn inline(request: &Request<BoxBody>) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) && request.body().is_end_stream()
        && !request.headers().contains_key(header::UPGRADE)
}

/// The body of an inline exchange, read from the socket as the client takes it. At its end
/// the connection goes back to the pool when it may carry another exchange; a body dropped
/// before its end takes its connection with it.
struct WireBody {
    /// When the exchange began: the connection's idle mark when it goes back.
    started: Instant,
    conn: Option<WireConn>,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<H1Pool>,
    _permit: OwnedSemaphorePermit,
}

impl WireBody {
    /// The body has ended: return its connection, once.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.is_clean()
        {
            self.pool.give_back_wire(conn, self.started);
        }
    }
}

impl Body for WireBody {
    type Data = Bytes;
    type Error = WireError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = conn.poll_body(&mut this.framing, cx);
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => this.conn = None,
            Poll::Ready(Some(Ok(_))) if this.framing.is_done() => this.finish(),
            _ => {}
        }
        polled.map(|frame| frame.map(|data| data.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Done => SizeHint::with_exact(0),
            Framing::Chunked(_) | Framing::UntilClose => SizeHint::default(),
        }
    }
}
