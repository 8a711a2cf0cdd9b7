//! Listeners: accept connections (TLS on HTTPS listeners), serve HTTP/1.1 and HTTP/2 on
//! one port, drain on shutdown.
//!
//! Plain connections start in [`h1`]'s keep-alive loop, which serves ordinary bodiless
//! HTTP/1.1 requests itself and hands anything else, with the bytes it has read, to hyper.
//! TLS connections go to hyper directly.

mod h1;
mod quiet;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body as _, Incoming};
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::body::{self, BodyEnd, BoxBody};
use crate::error::ProxyError;
use crate::pipeline::ConnInfo;

/// Connection-level settings of a listener.
#[derive(Debug, Clone, Copy)]
pub struct ServerSettings {
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// hyper's read buffer: a hard ceiling on the request head (hyper answers 431 above it).
    pub max_head_bytes: usize,
    /// How long in-flight requests may take to finish once shutdown begins.
    pub grace: Duration,
    /// How long a client may take to complete a TLS handshake (HTTPS listeners).
    pub handshake_timeout: Duration,
}

/// How a listener's connections are carried.
#[derive(Clone)]
pub enum Transport {
    /// Plain TCP: `http`, HTTP/1.1 or h2c.
    Plain,
    /// TLS terminated here: `https`, HTTP/2 or HTTP/1.1 as ALPN negotiated.
    Tls(TlsAcceptor),
}

impl Transport {
    /// The scheme requests on this transport arrive with (`X-Forwarded-Proto`).
    pub fn proto(&self) -> &'static str {
        match self {
            Self::Plain => "http",
            Self::Tls(_) => "https",
        }
    }
}

/// Something that answers requests: the proxy pipeline or the admin endpoint.
pub trait Handler: Send + Sync + 'static {
    /// Answer one request that arrived on `conn`.
    fn call(
        &self,
        request: Request<BoxBody>,
        conn: &ConnInfo,
    ) -> impl Future<Output = Response<BoxBody>> + Send;

    /// Answer a head that could not be read as a request (`err` says why: a 400 or a
    /// 431): by default its status and reason.
    fn refuse(&self, err: ProxyError, conn: &ConnInfo) -> Response<BoxBody> {
        let _ = conn;
        let mut response = Response::new(body::full(format!("{err}\n")));
        *response.status_mut() = err.status();
        response
    }
}

/// Accept on `listener` until `shutdown` turns true, then stop accepting and let in-flight
/// requests finish for up to `settings.grace`.
///
/// On a [`Transport::Tls`] listener each connection's handshake runs in that connection's
/// own task, bounded by `settings.handshake_timeout`, so a slow or silent client never
/// holds up the accept loop.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: ServerSettings,
    transport: Transport,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(settings.max_head_bytes);
    // A live HTTP/2 client answers a ping twice a header timeout: a read, which keeps its
    // connection from counting as quiet (see `quiet`), however long its requests take.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.header_timeout / 2)
        .keep_alive_timeout(settings.header_timeout / 2)
        .max_header_list_size(u32::try_from(settings.max_head_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let limits = h1::Limits {
        header_timeout: settings.header_timeout,
        max_head_bytes: settings.max_head_bytes,
    };
    let graceful = GracefulShutdown::new();
    let local = listener.local_addr().ok();
    let proto = transport.proto();

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo::new(peer, proto);
        // The keep-alive loop's own references; the service below keeps the others.
        let loop_conn = ConnInfo {
            relays_heads: true,
            ..conn.clone()
        };
        let loop_handler = handler.clone();
        let service_handler = handler.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let handler = service_handler.clone();
            let conn = conn.clone();
            async move {
                let request = if request.body().is_end_stream() {
                    request.map(|_| body::empty())
                } else {
                    // A body that stops arriving for the header timeout is a 408; its end
                    // starts the upstream's clock.
                    let end = BodyEnd::new();
                    let idle = settings.header_timeout;
                    let mut request =
                        request.map(|incoming| body::from_client(incoming, idle, end.clone()));
                    request.extensions_mut().insert(end);
                    request
                };
                Ok::<_, Infallible>(handler.call(request, &conn).await)
            }
        });
        // Taken here, not in the task: a connection still in its handshake counts as open.
        let watcher = graceful.watcher();
        match &transport {
            Transport::Plain => {
                let builder = builder.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let h1::Exit::HandOver(stream) =
                        h1::serve(stream, &*loop_handler, &loop_conn, limits, &shutdown).await
                    else {
                        return;
                    };
                    let quiet = stream.is_http2().then_some(settings.header_timeout);
                    serve_with_hyper(&builder, stream, service, watcher, peer, quiet).await;
                });
            }
            Transport::Tls(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                tokio::spawn(async move {
                    let mut stream = stream;
                    let deadline = tokio::time::Instant::now() + settings.handshake_timeout;
                    if tokio::time::timeout_at(
                        deadline,
                        refused_plain_http(&mut stream, peer, deadline),
                    )
                    .await
                    .unwrap_or(true)
                    {
                        return;
                    }
                    let accept = acceptor.accept(stream);
                    let stream = match tokio::time::timeout_at(deadline, accept).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "tls handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "tls handshake timed out");
                            return;
                        }
                    };
                    let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let quiet = http2.then_some(settings.header_timeout);
                    serve_with_hyper(&builder, stream, service, watcher, peer, quiet).await;
                });
            }
        }
    }

    drop(listener);
    let open = graceful.count();
    tracing::info!(listener = ?local, open_connections = open, "stopped accepting; draining");
    if tokio::time::timeout(settings.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listener = ?local, grace = ?settings.grace, "grace period over; closing the remaining connections");
    }
}

/// The answer to a plain HTTP request on an HTTPS listener.
const PLAIN_HTTP_ON_HTTPS: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
    content-type: text/plain; charset=utf-8\r\n\
    content-length: 57\r\n\
    connection: close\r\n\r\n\
    bad request: a plain HTTP request was sent to HTTPS port\n";

/// Whether `stream`, accepted on an HTTPS listener, was dealt with before any handshake:
/// the client left, or it sent a plain HTTP request (an `http://` URL for an `https://`
/// port, a health check with the wrong scheme). That one gets a 400 saying so, as nginx
/// does, instead of TLS alert bytes the client shows as garbage or "HTTP/0.9".
async fn refused_plain_http(
    stream: &mut tokio::net::TcpStream,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> bool {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => {}
        _ => return true,
    }
    // A TLS connection opens with a handshake record (0x16); a request line with a method.
    if !first[0].is_ascii_uppercase() {
        return false;
    }
    tracing::debug!(%peer, "plain HTTP request on an HTTPS listener");
    if stream.write_all(PLAIN_HTTP_ON_HTTPS).await.is_ok() {
        h1::linger(stream, deadline).await;
    }
    true
}

/// Serve `io` with hyper (HTTP/1.1 with upgrades, or HTTP/2), counted by `watcher` so the
/// drain at shutdown waits for it.
///
/// With `quiet`, an HTTP/2 connection, it ends once nothing has been read from the client
/// for that long (see [`quiet`]).
async fn serve_with_hyper<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    watcher: Watcher,
    peer: SocketAddr,
    quiet: Option<Duration>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<BoxBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Some(quiet) = quiet else {
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        if let Err(err) = watcher.watch(connection).await {
            tracing::debug!(%peer, error = %err, "connection ended with an error");
        }
        return;
    };
    let last_read = quiet::LastRead::new();
    let io = quiet::Marked::new(io, last_read.clone());
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    tokio::select! {
        served = watcher.watch(connection) => if let Err(err) = served {
            tracing::debug!(%peer, error = %err, "connection ended with an error");
        },
        () = last_read.quiet_for(quiet) => {
            tracing::debug!(%peer, ?quiet, "closing an HTTP/2 connection the client left quiet");
        }
    }
}
