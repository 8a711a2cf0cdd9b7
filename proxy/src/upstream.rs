//! Upstream pools: one pooled keep-alive client per upstream, with the limits hyper leaves out.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, Uri};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;
use strangler_routes::{Scheme, Upstream};
use tokio::sync::{Semaphore, TryAcquireError};

use crate::body::{self, BodyEnd, BodyTooLarge, BoxBody, ClientBodyError, Guarded, root_cause};
use crate::error::ProxyError;
use crate::headers;
use crate::tls::TlsError;
use crate::tls::client::{self as tls_client, CaBundle};

mod h1pool;
mod h1wire;

use h1pool::{Failure, H1Pool};

/// The deadline given to an exchange whose request body is still coming: the real one
/// is set when the body ends (the upstream's `timeout` after it).
const UNTIL_THE_BODY_ENDS: Duration = Duration::from_secs(7 * 24 * 3600);
/// TCP, then TLS for `https://` upstreams; one connector type for both schemes.
type Connector = HttpsConnector<HttpConnector>;

/// A pooled client for one upstream of the route file.
///
/// Built once per upstream when a route table is loaded and reused by later tables while the
/// upstream's definition is unchanged, so a reload keeps warm connections.
pub struct UpstreamPool {
    spec: Upstream,
    /// The `tls.ca` bundle the client trusts, as read when the pool was built.
    ca: Option<CaBundle>,
    transport: Transport,
    /// Caps concurrent exchanges (neither client has a per-host connection cap).
    permits: Arc<Semaphore>,
}

/// How requests reach the upstream.
enum Transport {
    /// Plain HTTP/1.1: the lean pool (origin-form URIs).
    H1(Arc<H1Pool>),
    /// TLS or HTTP/2: hyper-util's client with the rustls connector (absolute URIs).
    Client(Box<Client<Connector, BoxBody>>),
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The upstream's TLS settings are unusable (CA file, `server_name`).
    #[error("upstream {upstream}: {source}")]
    Tls {
        /// Name of the upstream.
        upstream: String,
        /// What is wrong.
        #[source]
        source: TlsError,
    },
}

impl UpstreamPool {
    /// Build the pool for `spec`. `https://` upstreams are verified against the public roots
    /// or `tls.ca`, under the URL's host or `tls.server_name`; ALPN offers `h2` alone with
    /// `http2: true`, else `http/1.1` alone (requests are forwarded as HTTP/1.1).
    ///
    /// # Errors
    /// [`PoolError::Tls`] when the CA file cannot be read or parsed, or `server_name` is not
    /// a valid name.
    pub fn new(spec: &Upstream) -> Result<Self, PoolError> {
        let tls_error = |source| PoolError::Tls {
            upstream: spec.name.clone(),
            source,
        };
        let tls = spec.tls.as_ref();
        let ca = match tls.and_then(|tls| tls.ca.as_deref()) {
            Some(file) if spec.scheme == Scheme::Https => {
                Some(CaBundle::read(file).map_err(tls_error)?)
            }
            _ => None,
        };
        let config = tls_client::client_config(ca.as_ref()).map_err(tls_error)?;
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(spec.connect_timeout));
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(60)));
        tcp.enforce_http(false);
        let builder = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http();
        let builder = match tls.and_then(|tls| tls.server_name.as_deref()) {
            Some(name) => {
                let name = ServerName::try_from(name.to_string()).map_err(|err| {
                    tls_error(TlsError::Config(format!(
                        "invalid tls.server_name {name:?}: {err}"
                    )))
                })?;
                builder.with_server_name_resolver(FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let connector = if spec.http2 {
            builder.enable_http2().wrap_connector(tcp)
        } else {
            builder.enable_http1().wrap_connector(tcp)
        };
        let transport = if spec.scheme == Scheme::Http && !spec.http2 {
            Transport::H1(Arc::new(H1Pool::new(
                &spec.authority,
                spec.connect_timeout,
                spec.idle_timeout,
                spec.max_connections,
            )))
        } else {
            Transport::Client(Box::new(
                Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .pool_idle_timeout(spec.idle_timeout)
                    .pool_max_idle_per_host(spec.max_connections)
                    .http2_only(spec.http2)
                    .build(connector),
            ))
        };
        Ok(Self {
            spec: spec.clone(),
            ca,
            transport,
            permits: Arc::new(Semaphore::new(spec.max_connections)),
        })
    }

    /// The upstream this pool serves.
    pub fn spec(&self) -> &Upstream {
        &self.spec
    }

    /// Whether this pool can keep serving an upstream defined as `spec` after a reload: the
    /// same definition, and the same content in its `tls.ca` file (a rotated CA needs a new
    /// client).
    pub fn serves(&self, spec: &Upstream) -> bool {
        self.spec == *spec && self.ca.as_ref().is_none_or(CaBundle::is_current)
    }

    /// Whether a request whose target is `uri` can be sent with that very URI when its
    /// path is to be `path`: an origin-form target with that path, on a plain HTTP/1.1
    /// upstream without a base path.
    pub fn sends_as_is(&self, uri: &Uri, path: &str) -> bool {
        matches!(self.transport, Transport::H1(_))
            && self.spec.base_path.is_empty()
            && uri.scheme().is_none()
            && uri.path() == path
    }

    /// The URI of `path_and_query` on this upstream (its base path prepended), in the form
    /// this pool sends: origin-form for plain HTTP/1.1, absolute otherwise.
    ///
    /// # Errors
    /// [`ProxyError::BadRequest`] when the result is not a valid URI.
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
        let invalid =
            |e: http::uri::InvalidUri| ProxyError::BadRequest(format!("invalid upstream uri: {e}"));
        if let Transport::H1(_) = self.transport {
            return if self.spec.base_path.is_empty() {
                Uri::try_from(path_and_query).map_err(invalid)
            } else {
                Uri::try_from(format!("{}{path_and_query}", self.spec.base_path)).map_err(invalid)
            };
        }
        let scheme = match self.spec.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let mut uri = String::with_capacity(
            scheme.len()
                + 3
                + self.spec.authority.as_str().len()
                + self.spec.base_path.len()
                + path_and_query.len(),
        );
        uri.push_str(scheme);
        uri.push_str("://");
        uri.push_str(self.spec.authority.as_str());
        uri.push_str(&self.spec.base_path);
        uri.push_str(path_and_query);
        Uri::try_from(uri).map_err(invalid)
    }

    /// Send `request` (its URI already absolute) and wait for the response head.
    ///
    /// A bodiless idempotent request that fails because a pooled connection was closed
    /// under it is sent once more on a fresh connection; any other request is not, since
    /// its body is gone or repeating it could repeat a side effect.
    ///
    /// # Errors
    /// A [`ProxyError`] classifying the failure: connect, timeout, broken exchange or a
    /// request body over the limit.
    pub async fn send(&self, request: Request<BoxBody>) -> Result<Response<BoxBody>, ProxyError> {
        self.send_with(request, false).await
    }

    /// As [`UpstreamPool::send`]; with `relay`, for an answer that goes to the client
    /// unchanged but for the proxy's own headers, a plain HTTP/1.1 upstream's head may come
    /// back as `RelayedFields` (an extension) over an empty header map, for a client writer
    /// that copies those fields through (see `ConnInfo::relays_heads`).
    ///
    /// # Errors
    /// As [`UpstreamPool::send`].
    pub async fn send_with(
        &self,
        request: Request<BoxBody>,
        relay: bool,
    ) -> Result<Response<BoxBody>, ProxyError> {
        // The timeout is the upstream's time to answer: while the client is still sending
        // the body, it has not started (as Envoy's route timeout starts once the whole
        // request is in), and a slow upload is no 504 blamed on the upstream.
        let body_end = request
            .extensions()
            .get::<Arc<BodyEnd>>()
            .filter(|end| !end.reached())
            .cloned();
        let Some(body_end) = body_end else {
            let deadline = std::time::Instant::now() + self.spec.timeout;
            return self.send_until(request, relay, deadline).await;
        };
        let unbounded = std::time::Instant::now() + UNTIL_THE_BODY_ENDS;
        tokio::select! {
            result = self.send_until(request, relay, unbounded) => result,
            () = body_end.timeout_after(self.spec.timeout) => Err(self.timeout()),
        }
    }

    /// As [`UpstreamPool::send_with`], with the answer's head due by `deadline`.
    async fn send_until(
        &self,
        request: Request<BoxBody>,
        relay: bool,
        deadline: std::time::Instant,
    ) -> Result<Response<BoxBody>, ProxyError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                tokio::time::timeout_at(deadline.into(), self.permits.clone().acquire_owned())
                    .await
                    .map_err(|_| self.timeout())?
                    .map_err(|_| ProxyError::Internal("upstream pool closed".into()))?
            }
            Err(TryAcquireError::Closed) => {
                return Err(ProxyError::Internal("upstream pool closed".into()));
            }
        };
        let client = match &self.transport {
            Transport::H1(pool) => {
                return pool
                    .send(request, permit, deadline, relay)
                    .await
                    .map_err(|failure| self.classify_h1(failure));
            }
            Transport::Client(client) => client,
        };
        let replay = replayable(&request).then(|| {
            let mut copy = Request::new(body::empty());
            *copy.method_mut() = request.method().clone();
            *copy.uri_mut() = request.uri().clone();
            *copy.headers_mut() = request.headers().clone();
            copy
        });
        let deadline = tokio::time::Instant::from(deadline);
        let first = tokio::time::timeout_at(deadline, client.request(request)).await;
        let result = match (first, replay) {
            (Ok(Err(err)), Some(replay)) if is_stale_connection(&err) => {
                tracing::debug!(upstream = %self.spec.name, error = %err, "retrying on a fresh connection");
                tokio::time::timeout_at(deadline, client.request(replay)).await
            }
            (first, _) => first,
        };
        match result {
            Ok(Ok(response)) => match headers::foreign_transfer_coding(response.headers()) {
                None => Ok(response.map(|incoming| body::boxed(Guarded::new(incoming, permit)))),
                Some(reason) => Err(ProxyError::UpstreamBroken {
                    upstream: self.spec.name.clone(),
                    reason,
                }),
            },
            Ok(Err(err)) => Err(self.classify(&err)),
            Err(_) => Err(self.timeout()),
        }
    }

    fn timeout(&self) -> ProxyError {
        ProxyError::UpstreamTimeout {
            upstream: self.spec.name.clone(),
            after: self.spec.timeout,
        }
    }

    fn classify_h1(&self, failure: Failure) -> ProxyError {
        match failure {
            Failure::ConnectTimeout => ProxyError::UpstreamTimeout {
                upstream: self.spec.name.clone(),
                after: self.spec.connect_timeout,
            },
            Failure::Connect(err) => ProxyError::UpstreamConnect {
                upstream: self.spec.name.clone(),
                reason: match err.kind() {
                    io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                    _ => err.to_string(),
                },
            },
            Failure::Exchange(err) => {
                client_fault(&err).unwrap_or_else(|| ProxyError::UpstreamBroken {
                    upstream: self.spec.name.clone(),
                    reason: root_cause(&err),
                })
            }
            Failure::Timeout => self.timeout(),
            Failure::Wire(err) => ProxyError::UpstreamBroken {
                upstream: self.spec.name.clone(),
                reason: err.to_string(),
            },
        }
    }

    fn classify(&self, err: &hyper_util::client::legacy::Error) -> ProxyError {
        if let Some(fault) = client_fault(err) {
            return fault;
        }
        if let Some(tls) = find_source::<rustls::Error>(err) {
            return ProxyError::UpstreamConnect {
                upstream: self.spec.name.clone(),
                reason: tls_client::describe(tls),
            };
        }
        let io_kind = find_source::<io::Error>(err).map(io::Error::kind);
        if err.is_connect() {
            if io_kind == Some(io::ErrorKind::TimedOut) {
                return ProxyError::UpstreamTimeout {
                    upstream: self.spec.name.clone(),
                    after: self.spec.connect_timeout,
                };
            }
            let reason = match io_kind {
                Some(io::ErrorKind::ConnectionRefused) => "connection refused".to_string(),
                _ => root_cause(err),
            };
            return ProxyError::UpstreamConnect {
                upstream: self.spec.name.clone(),
                reason,
            };
        }
        ProxyError::UpstreamBroken {
            upstream: self.spec.name.clone(),
            reason: root_cause(err),
        }
    }
}

/// A failure of an exchange that the client's request body caused, found anywhere in
/// `err`'s chain: over the body limit (413), broken off (400) or stopped (408). Never the
/// upstream's doing.
fn client_fault(err: &(dyn StdError + 'static)) -> Option<ProxyError> {
    if let Some(too_large) = find_source::<BodyTooLarge>(err) {
        return Some(ProxyError::BodyTooLarge {
            limit: too_large.limit,
        });
    }
    find_source::<ClientBodyError>(err).map(|broken| {
        if broken.timed_out {
            ProxyError::ClientTimeout(broken.to_string())
        } else {
            ProxyError::BadRequest(broken.to_string())
        }
    })
}

/// Whether a request may be replayed after a stale-connection failure.
fn replayable(request: &Request<BoxBody>) -> bool {
    use hyper::body::Body;
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    ) && request.body().is_end_stream()
}

/// A pooled connection closed by the upstream just as we reused it.
fn is_stale_connection(err: &hyper_util::client::legacy::Error) -> bool {
    if err.is_connect() {
        return false;
    }
    if let Some(hyper_err) = find_source::<hyper::Error>(err)
        && (hyper_err.is_incomplete_message() || hyper_err.is_canceled() || hyper_err.is_closed())
    {
        return true;
    }
    matches!(
        find_source::<io::Error>(err).map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe)
    )
}

/// The first error of type `T` in `err`'s source chain.
///
/// An `io::Error` wrapping another error reports the wrapped error's *source* as its own,
/// skipping the wrapped error itself (that is where TLS puts the `rustls::Error`), so the
/// walk steps into it with `get_ref` instead.
fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    None
}
