//! How a matched request flows: one closed set of strategies, one `match`, one file each.

mod canary;
mod fallback;
mod forward;
mod respond;
mod shadow;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use strangler_routes::{Action, Rewrite, Route, UpstreamId};

use crate::body::BoxBody;
use crate::error::ProxyError;
use crate::pipeline::{ConnInfo, Limits};
use crate::runtime::{Answerer, Runtime};
use crate::window::Side;

pub use canary::{CanaryRoute, GateTrip};
pub use fallback::Fallback;
pub use shadow::ShadowRoute;

/// What to do with a request, decided from its route (or the default upstream).
#[derive(Clone, Copy)]
pub enum Dispatch<'t> {
    /// Pass the request to one upstream, optionally rewritten — a `to:` route, the default
    /// upstream, a pinned route, or the side a canary chose.
    Forward {
        /// Where to send it.
        upstream: UpstreamId,
        /// The route's rewrite rules, if any.
        rewrite: Option<&'t Rewrite>,
        /// Where to replay it when `upstream` fails, if the route has a fallback.
        fallback: Option<Fallback<'t>>,
        /// The canary whose gate counts this answer, and the side it is on.
        canary: Option<(&'t CanaryRoute, Side)>,
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
    pub conn: &'a ConnInfo,
    /// The request id (already set on the request headers).
    pub request_id: &'a HeaderValue,
    /// Request limits.
    pub limits: Limits,
    /// The normalized path the route was matched on.
    pub path: String,
    /// Whether an answer that is only forwarded may keep its upstream head as
    /// `RelayedFields` (see [`UpstreamPool::send_with`](crate::upstream::UpstreamPool::send_with)).
    pub relay_heads: bool,
    /// Who answered, when not the one [`Dispatch::answerer`] planned (see [`AnsweredBy`]).
    pub answered_by: &'a AnsweredBy,
}

/// Who answered an exchange when it was not the upstream its dispatch chose: the fallback
/// upstream that replayed it, or a hook that answered itself. Metrics, the access log and
/// the dashboard's migration progress then count the answer, or its failure, where it
/// came from. Set at most once, by the step that took over.
#[derive(Debug, Default)]
pub struct AnsweredBy(OnceLock<Answerer>);

impl AnsweredBy {
    /// Record that `answerer` took over the exchange.
    pub fn set(&self, answerer: Answerer) {
        let _ = self.0.set(answerer);
    }

    /// Who took over, if anyone did.
    pub fn get(&self) -> Option<Answerer> {
        self.0.get().copied()
    }
}

impl<'t> Dispatch<'t> {
    /// The strategy for `request` on `route`; `None` means the table's default upstream.
    ///
    /// A pinned route goes, unrewritten, to its `rollback_to` upstream (and shadow copies
    /// stop): the rewrite rules describe the new service's paths, not the monolith's.
    pub fn for_route<B>(
        runtime: &'t Runtime,
        route: Option<&'t Route>,
        request: &Request<B>,
    ) -> Self {
        let plain = |upstream| Dispatch::Forward {
            upstream,
            rewrite: None,
            fallback: None,
            canary: None,
        };
        let Some(route) = route else {
            return plain(runtime.table().default_upstream());
        };
        if runtime.is_pinned(route) {
            return plain(route.rollback_to);
        }
        let extras = runtime.extras(route);
        let fallback = route.fallback.and_then(|to| {
            let metrics = extras?.fallback.as_ref()?;
            Some(Fallback {
                to,
                max_body: route.max_body_match,
                metrics,
            })
        });
        match &route.action {
            Action::Forward(upstream) => Dispatch::Forward {
                upstream: *upstream,
                rewrite: route.rewrite.as_ref(),
                fallback,
                canary: None,
            },
            Action::Respond(respond) => Dispatch::Respond(respond),
            Action::Shadow(spec) => match extras.and_then(|e| e.shadow.as_ref()) {
                Some(shadow) => Dispatch::Shadow {
                    route: shadow,
                    rewrite: route.rewrite.as_ref(),
                },
                None => plain(spec.primary),
            },
            Action::Canary(spec) => match extras.and_then(|e| e.canary.as_deref()) {
                Some(canary) => {
                    let (upstream, side) = canary.choose(request.headers());
                    // The old side is served as it always was; the rest is the new service.
                    let new = side == Side::New;
                    Dispatch::Forward {
                        upstream,
                        rewrite: if new { route.rewrite.as_ref() } else { None },
                        fallback: if new { fallback } else { None },
                        canary: Some((canary, side)),
                    }
                }
                None => plain(spec.baseline),
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
        Dispatch::Forward {
            upstream,
            rewrite,
            fallback,
            canary,
        } => {
            // Only a canary's gate needs the latency: no clock read for the rest.
            let started = canary.is_some().then(Instant::now);
            let answered = match fallback {
                // Boxed: the rarer strategies must not grow every request's future.
                Some(fallback) => {
                    Box::pin(fallback::forward_with_fallback(
                        exchange, upstream, rewrite, fallback, request,
                    ))
                    .await
                }
                None => {
                    let result = forward::forward(exchange, upstream, rewrite, request).await;
                    let first_failed = fallback::failed(&result);
                    fallback::Answered {
                        result,
                        first_failed,
                    }
                }
            };
            if let (Some((canary, side)), Some(started)) = (canary, started) {
                canary.record(side, answered.first_failed, started.elapsed());
            }
            answered.result
        }
        Dispatch::Respond(respond) => Ok(respond::respond(respond)),
        Dispatch::Shadow { route, rewrite } => match shadow::admit(route, &request) {
            // Most requests of a busy shadowed route get no copy: they take the plain path,
            // without the shadow exchange's (boxed) future.
            shadow::Admission::Skip(reason) => {
                if let Some(reason) = reason {
                    route.dropped(reason);
                }
                forward::forward(exchange, route.spec.primary, None, request).await
            }
            shadow::Admission::Shadow(flight) => {
                Box::pin(shadow::shadow(exchange, route, rewrite, request, flight)).await
            }
        },
    }
}
