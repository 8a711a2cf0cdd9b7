//! Fallback (verify branch by abstraction): when the new service refuses, times out or
//! answers 5xx, the same request is replayed to the fallback upstream.

use bytes::Bytes;
use http::{Request, Response};
use strangler_routes::{Rewrite, UpstreamId};

use super::Exchange;
use super::forward::{self, Origin, copy_head};
use crate::body::{self, BoxBody, Buffered};
use crate::error::{ErrorClass, ProxyError};
use crate::metrics::FallbackMetrics;
use crate::runtime::Answerer;

/// A route's fallback: where to replay, how much body may be held for it, what to count.
#[derive(Clone, Copy)]
pub struct Fallback<'t> {
    /// The upstream that answers when the first one fails.
    pub to: UpstreamId,
    /// The largest request body held for a replay.
    pub max_body: u64,
    /// The route's fallback counters.
    pub metrics: &'t FallbackMetrics,
}

/// The answer, and whether the first upstream failed (what a canary gate should count).
pub(super) struct Answered {
    pub(super) result: Result<Response<BoxBody>, ProxyError>,
    pub(super) first_failed: bool,
}

/// Send `request` to `upstream`; on refusal, timeout or 5xx, replay it to the fallback.
///
/// A replay needs the request again, so its body is held — only up to `max_body`; a larger
/// body streams to `upstream` without a fallback (counted as skipped).
pub(super) async fn forward_with_fallback(
    exchange: &Exchange<'_>,
    upstream: UpstreamId,
    rewrite: Option<&Rewrite>,
    fallback: Fallback<'_>,
    request: Request<BoxBody>,
) -> Answered {
    let origin = Origin::of(&request);
    let (parts, incoming) = request.into_parts();
    let held = match body::buffer_prefix(incoming, fallback.max_body).await {
        Ok(Buffered::Complete(bytes)) => bytes,
        Ok(Buffered::TooLarge(whole)) => {
            fallback.metrics.skipped_body.inc();
            tracing::debug!(request_id = ?exchange.request_id, "body over the fallback bound: no fallback");
            let result = forward::forward(
                exchange,
                upstream,
                rewrite,
                Request::from_parts(parts, whole),
            )
            .await;
            let first_failed = failed(&result);
            return Answered {
                result,
                first_failed,
            };
        }
        Err(err) => {
            return Answered {
                result: Err(ProxyError::BadRequest(format!(
                    "cannot read the request body: {err}"
                ))),
                first_failed: false,
            };
        }
    };
    let first = send(
        exchange,
        upstream,
        rewrite,
        &origin,
        copy_head(&parts),
        held.clone(),
    )
    .await;
    let cause = match &first {
        Ok(response) if response.status().is_server_error() => {
            format!("status {}", response.status())
        }
        Ok(_) => {
            return Answered {
                result: first,
                first_failed: false,
            };
        }
        Err(err) => {
            // The client gets the fallback's answer, so the pipeline never sees this error;
            // the operator must, or a dead new service shows only as fallbacks.
            if err.class() == ErrorClass::Upstream {
                exchange.runtime.upstream_error(upstream, err.kind());
            }
            err.to_string()
        }
    };
    fallback.metrics.fallbacks.inc();
    tracing::warn!(
        request_id = ?exchange.request_id,
        from = %exchange.runtime.table().upstream(upstream).name,
        to = %exchange.runtime.table().upstream(fallback.to).name,
        cause = %cause,
        "falling back"
    );
    drop(first);
    exchange.answered_by.set(Answerer::Upstream(fallback.to));
    let result = send(exchange, fallback.to, None, &origin, parts, held).await;
    Answered {
        result,
        first_failed: true,
    }
}

async fn send(
    exchange: &Exchange<'_>,
    upstream: UpstreamId,
    rewrite: Option<&Rewrite>,
    origin: &Origin,
    mut head: http::request::Parts,
    body: Bytes,
) -> Result<Response<BoxBody>, ProxyError> {
    let pool = exchange.runtime.pool(upstream);
    forward::prepare(exchange, pool, rewrite, origin, &mut head)?;
    let response = pool
        .send(Request::from_parts(head, body::full(body)))
        .await?;
    Ok(forward::clean_response(response, origin.via))
}

/// Whether an answer counts as a failure of the upstream that gave it.
pub(super) fn failed(result: &Result<Response<BoxBody>, ProxyError>) -> bool {
    match result {
        Ok(response) => response.status().is_server_error(),
        Err(err) => err.class() == ErrorClass::Upstream,
    }
}
