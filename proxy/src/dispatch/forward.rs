//! The `forward` strategy: pass the request to one upstream as faithfully as a proxy can.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use strangler_routes::{Rewrite, UpstreamId};

use super::Exchange;
use crate::body::{self, BoxBody, LimitedStream};
use crate::error::ProxyError;
use crate::headers;
use crate::pipeline::{client_host, via_for};
use crate::upstream::UpstreamPool;
use crate::wire::{self, RelayedFields};

/// Forward `request` to `upstream` and stream its answer back.
///
/// The body streams in both directions; nothing is buffered. An `Upgrade` request (e.g. a
/// WebSocket) that the upstream accepts with 101 becomes a byte tunnel owned by its own task,
/// so neither a reload nor the end of this function closes it.
///
/// # Errors
/// A [`ProxyError`] when the upstream cannot be reached, times out or breaks the exchange.
pub(super) async fn forward(
    exchange: &Exchange<'_>,
    upstream: UpstreamId,
    rewrite: Option<&Rewrite>,
    mut request: Request<BoxBody>,
) -> Result<Response<BoxBody>, ProxyError> {
    let pool = exchange.runtime.pool(upstream);
    let origin = Origin::of(&request);
    let upgrade = origin.upgrade.is_some() && asks_to_upgrade(&request);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, incoming) = request.into_parts();
    prepare(exchange, pool, rewrite, &origin, &mut parts)?;
    if upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = &origin.upgrade {
            parts.headers.insert(header::UPGRADE, protocol.clone());
        }
    }
    let body = limit(exchange, incoming);
    let mut response = pool
        .send_with(Request::from_parts(parts, body), exchange.relay_heads)
        .await?;

    let tunnelled = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match client_upgrade {
        Some(client_upgrade) if tunnelled => {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let request_id = exchange.request_id.clone();
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let (mut client, mut upstream) =
                            (TokioIo::new(client), TokioIo::new(upstream));
                        if let Err(err) =
                            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                        {
                            tracing::debug!(request_id = ?request_id, error = %err, "tunnel closed");
                        }
                    }
                    Err(err) => {
                        tracing::warn!(request_id = ?request_id, error = %err, "upgrade failed");
                    }
                }
            });
            let upgrade_to = response.headers().get(header::UPGRADE).cloned();
            let headers = response.headers_mut();
            headers::strip_hop_by_hop(headers);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            if let Some(protocol) = upgrade_to {
                headers.insert(header::UPGRADE, protocol);
            }
            headers::append_via(headers, origin.via);
            Ok(response)
        }
        _ => Ok(clean_response(response, origin.via)),
    }
}

/// What the client's request said about itself, taken before its parts are rewritten.
pub(super) struct Origin {
    /// The `Host` the client asked for (`:authority` on HTTP/2).
    pub(super) host: Option<HeaderValue>,
    /// `Via` value for the client's protocol version.
    pub(super) via: &'static HeaderValue,
    /// The protocol asked for in `Upgrade`, if any.
    pub(super) upgrade: Option<HeaderValue>,
}

impl Origin {
    /// Read the client-facing facts of `request`.
    pub(super) fn of<B>(request: &Request<B>) -> Self {
        Self {
            host: client_host(request),
            via: via_for(request.version()),
            upgrade: request.headers().get(header::UPGRADE).cloned(),
        }
    }
}

/// Turn the client's request head into the head sent to `pool`: absolute URI with the
/// normalized (and maybe rewritten) path, hop-by-hop headers removed, forwarding headers
/// added, `Host` kept or rewritten, the route's header rewrites applied.
///
/// # Errors
/// [`ProxyError::BadRequest`] when the upstream URI cannot be built.
pub(super) fn prepare(
    exchange: &Exchange<'_>,
    pool: &UpstreamPool,
    rewrite: Option<&Rewrite>,
    origin: &Origin,
    parts: &mut Parts,
) -> Result<(), ProxyError> {
    let spec = pool.spec();
    let rewritten;
    let path = match rewrite {
        Some(rewrite) => {
            rewritten = rewrite.apply_path(&exchange.path);
            rewritten.as_str()
        }
        None => exchange.path.as_str(),
    };
    // Most requests keep the client's own target: no new URI to build and parse.
    if !pool.sends_as_is(&parts.uri, path) {
        parts.uri = target(pool, &parts.uri, path)?;
    }
    parts.version = if spec.http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let headers = &mut parts.headers;
    headers::strip_hop_by_hop(headers);
    headers::add_forwarding(
        headers,
        &exchange.conn.peer_ip,
        exchange.conn.proto,
        origin.host.as_ref(),
        origin.via,
    );
    match &origin.host {
        // The pool fills `Host` from the upstream's authority.
        _ if spec.host_rewrite => {
            headers.remove(header::HOST);
        }
        // The request path put it there (from `:authority` for HTTP/2), unless an
        // `on_request` hook removed it: the upstream still gets the client's host.
        Some(host) if !headers.contains_key(header::HOST) => {
            headers.insert(header::HOST, host.clone());
        }
        Some(_) | None => {}
    }
    if let Some(rewrite) = rewrite {
        for name in &rewrite.remove_headers {
            headers.remove(name);
        }
        for (name, value) in &rewrite.set_headers {
            headers.insert(name.clone(), value.clone());
        }
    }
    Ok(())
}

/// The URI sent to `pool` for `path` and the query of `original`.
fn target(pool: &UpstreamPool, original: &http::Uri, path: &str) -> Result<http::Uri, ProxyError> {
    match original.query() {
        Some(query) => {
            let mut target = String::with_capacity(path.len() + 1 + query.len());
            target.push_str(path);
            target.push('?');
            target.push_str(query);
            pool.uri(&target)
        }
        None => pool.uri(path),
    }
}

/// The client's body on its way upstream, under `--max-body` when set.
pub(super) fn limit(exchange: &Exchange<'_>, incoming: BoxBody) -> BoxBody {
    match exchange.limits.max_body {
        Some(limit) => body::boxed(LimitedStream::new(incoming, limit)),
        None => incoming,
    }
}

/// An upstream answer made fit for the client: the proxy's own HTTP version, a
/// `Content-Length` it may pass on (see [`headers::settle_content_length`]), hop-by-hop
/// headers out, `Via` in.
///
/// The version is hop-by-hop too (RFC 9110, section 2.5): an HTTP/1.0 upstream's answer
/// must not go to an HTTP/1.1 client as `HTTP/1.0`, which would also end its keep-alive
/// connection. (HTTP/2 connections ignore the field.)
pub(super) fn clean_response(
    mut response: Response<BoxBody>,
    via: &'static HeaderValue,
) -> Response<BoxBody> {
    *response.version_mut() = Version::HTTP_11;
    // A relayed head has no hop-by-hop fields left, and takes `Via` without a header map.
    if let Some(relayed) = response.extensions_mut().get_mut::<RelayedFields>() {
        relayed.fields.via = Some(via);
        return response;
    }
    headers::settle_content_length(response.headers_mut());
    headers::strip_hop_by_hop(response.headers_mut());
    headers::append_via(response.headers_mut(), via);
    response
}

/// A copy of a request head (method, URI, version, headers) for a second exchange.
pub(super) fn copy_head(parts: &Parts) -> Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

/// An HTTP/1.1 request whose `Connection` asks to switch protocols (the caller has
/// seen its `Upgrade` header).
fn asks_to_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_11
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|value| wire::has_token(value, b"upgrade"))
}
