//! A lean keep-alive pool for plain HTTP/1.1 upstreams, the common case (the monolith).
//!
//! hyper-util's general client spends more on its pool than on the exchange: a keyed map
//! behind a lock, a lazily built connector, a task per returned connection. This pool keeps
//! only what one upstream needs: a stack of idle connections, checked out most-recent first
//! (the warmest socket), and handed back when the response body has been read to its end.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::body::{self, BoxBody};

/// Why an exchange on this pool failed, before classification into a `ProxyError`.
pub(super) enum Failure {
    /// No connection within the connect timeout.
    ConnectTimeout,
    /// The TCP connect failed.
    Connect(std::io::Error),
    /// The HTTP/1 handshake or the exchange failed.
    Exchange(hyper::Error),
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
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: http1::SendRequest<BoxBody>,
    since: Instant,
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
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Send `request` (origin-form URI) and wait for the response head.
    ///
    /// A request the connection never took (it was closed while idle) is sent again on a
    /// fresh connection: hyper hands such a request back untouched, body included.
    pub(super) async fn send(
        self: &Arc<Self>,
        mut request: Request<BoxBody>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Response<BoxBody>, Failure> {
        if !request.headers().contains_key(header::HOST) {
            request
                .headers_mut()
                .insert(header::HOST, self.authority.clone());
        }
        let mut sender = match self.checkout().await {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut err) => match err.take_message() {
                Some(request) => {
                    tracing::debug!(address = %self.address, error = %err.error(), "stale connection; retrying on a fresh one");
                    sender = self.connect().await?;
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

    /// The most recently used idle connection that still works.
    async fn checkout(&self) -> Option<http1::SendRequest<BoxBody>> {
        loop {
            let idle = {
                let mut idle = self.idle.lock().ok()?;
                idle.pop()?
            };
            if idle.since.elapsed() >= self.idle_timeout || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            // Handed back at the end of a body, so ready at once or as soon as the
            // connection's task has seen that end.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self) -> Result<http1::SendRequest<BoxBody>, Failure> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.address))
            .await
            .map_err(|_| Failure::ConnectTimeout)?
            .map_err(Failure::Connect)?;
        let _ = stream.set_nodelay(true);
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
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
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
