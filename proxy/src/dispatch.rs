//! How a matched request flows: one closed set of strategies, one `match`, one file each.

mod forward;
mod respond;
mod shadow;

use std::sync::Arc;

use http::{HeaderValue, Request, Response};
use strangler_routes::{Action, Rewrite, Route, UpstreamId};

use crate::body::BoxBody;
use crate::error::ProxyError;
use crate::pipeline::{ConnInfo, Limits};
use crate::runtime::{Answerer, Runtime};

pub use shadow::ShadowRoute;

/// What to do with a request, decided from its route (or the default upstream).
#[derive(Clone, Copy)]
pub enum Dispatch<'t> {
    /// Pass the request to one upstream, optionally rewritten.
    Forward {
        /// Where to send it.
        upstream: UpstreamId,
        /// The route's rewrite rules, if any.
        rewrite: Option<&'t Rewrite>,
    },
    /// Answer from the route file without any upstream.
    Respond(&'t strangler_routes::Respond),
    /// Parallel run: the primary answers, the candidate's copy is compared.
    Shadow {
        /// The route's shadow state.
        route: &'t Arc<ShadowRoute>,
        /// Rewrite rules for the candidate's copy.
        rewrite: Option<&'t Rewrite>,
    },
}

/// The per-request context every strategy needs.
pub struct Exchange<'a> {
    /// The snapshot this request is served with.
    pub runtime: &'a Runtime,
    /// The client's connection.
    pub conn: ConnInfo,
    /// The request id (already set on the request headers).
    pub request_id: &'a HeaderValue,
    /// Request limits.
    pub limits: Limits,
    /// The normalized path the route was matched on.
    pub path: String,
}

impl<'t> Dispatch<'t> {
    /// The strategy for `route`; `None` means the table's default upstream.
    ///
    /// A pinned route goes, unrewritten, to its `rollback_to` upstream: the rewrite rules
    /// describe the new service's paths, not the monolith's.
    pub fn for_route(runtime: &'t Runtime, route: Option<&'t Route>) -> Self {
        match route {
            None => Dispatch::Forward {
                upstream: runtime.table().default_upstream(),
                rewrite: None,
            },
            Some(route) if runtime.is_pinned(route) => Dispatch::Forward {
                upstream: route.rollback_to,
                rewrite: None,
            },
            Some(route) => match &route.action {
                Action::Forward(upstream) => Dispatch::Forward {
                    upstream: *upstream,
                    rewrite: route.rewrite.as_ref(),
                },
                Action::Respond(respond) => Dispatch::Respond(respond),
                Action::Shadow(spec) => match runtime.shadow(route) {
                    Some(shadow) => Dispatch::Shadow {
                        route: shadow,
                        rewrite: route.rewrite.as_ref(),
                    },
                    None => Dispatch::Forward {
                        upstream: spec.primary,
                        rewrite: None,
                    },
                },
                // Placeholder until the canary strategy lands: serve from the old side only,
                // unrewritten (the rewrite describes the new service).
                Action::Canary(canary) => Dispatch::Forward {
                    upstream: canary.baseline,
                    rewrite: None,
                },
            },
        }
    }

    /// Who answers, for metrics.
    pub fn answerer(&self) -> Answerer {
        match self {
            Dispatch::Forward { upstream, .. } => Answerer::Upstream(*upstream),
            Dispatch::Respond(_) => Answerer::Respond,
            Dispatch::Shadow { route, .. } => Answerer::Upstream(route.spec.primary),
        }
    }
}

/// Run `dispatch` for `request`.
///
/// # Errors
/// A [`ProxyError`] that the pipeline turns into the client's answer.
pub async fn run(
    dispatch: Dispatch<'_>,
    exchange: &Exchange<'_>,
    request: Request<BoxBody>,
) -> Result<Response<BoxBody>, ProxyError> {
    match dispatch {
        Dispatch::Forward { upstream, rewrite } => {
            forward::forward(exchange, upstream, rewrite, request).await
        }
        Dispatch::Respond(respond) => Ok(respond::respond(respond)),
        Dispatch::Shadow { route, rewrite } => {
            shadow::shadow(exchange, route, rewrite, request).await
        }
    }
}
