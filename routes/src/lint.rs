//! Warnings about legal but suspicious tables: routes that an earlier route shadows.

use http::Method;

use crate::error::Warning;
use crate::matching::{PathMatch, RouteMatch, Segment};
use crate::table::Route;

/// One warning per route that can never match because an earlier route matches every
/// request it would. Conservative: only provable cases are reported.
pub(crate) fn unreachable(routes: &[Route], matchers: &[RouteMatch]) -> Vec<Warning> {
    let mut warnings = Vec::new();
    for (later, later_match) in routes.iter().zip(matchers) {
        let earlier = routes
            .iter()
            .zip(matchers)
            .take(later.index)
            .find(|(_, earlier_match)| covers(earlier_match, later_match));
        if let Some((earlier, _)) = earlier {
            warnings.push(Warning {
                line: Some(later.line),
                route: Some(later.name.clone()),
                message: format!(
                    "unreachable: earlier route `{}` (line {}, {}) matches every request this route matches",
                    earlier.name, earlier.line, earlier.match_summary
                ),
            });
        }
    }
    warnings
}

/// Whether every request matching `later` also matches `earlier`.
fn covers(earlier: &RouteMatch, later: &RouteMatch) -> bool {
    // Only path and method predicates are compared; anything else on the earlier route
    // (body predicates included) could reject a request the later one accepts.
    if earlier.host.is_some()
        || !earlier.headers.is_empty()
        || !earlier.query.is_empty()
        || !earlier.cookie.is_empty()
        || earlier.has_body_predicates()
    {
        return false;
    }
    methods_cover(earlier.methods.as_deref(), later.methods.as_deref())
        && path_covers(earlier.path.as_ref(), later.path.as_ref())
}

fn methods_cover(earlier: Option<&[Method]>, later: Option<&[Method]>) -> bool {
    match (earlier, later) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(earlier), Some(later)) => later.iter().all(|m| earlier.contains(m)),
    }
}

fn path_covers(earlier: Option<&PathMatch>, later: Option<&PathMatch>) -> bool {
    let Some(earlier) = earlier else { return true };
    let Some(later) = later else { return false };
    match (earlier, later) {
        (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
        (PathMatch::Template { segments: a, .. }, PathMatch::Template { segments: b, .. }) => {
            a.len() == b.len()
                && a.iter().zip(b).all(|(a, b)| match (a, b) {
                    (Segment::Param(_), Segment::Param(_)) => true,
                    (Segment::Param(_), Segment::Literal(lit)) => !lit.is_empty(),
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    (Segment::Literal(_), Segment::Param(_)) => false,
                })
        }
        (PathMatch::Template { .. }, PathMatch::Exact(path)) => earlier.matches(path),
        (PathMatch::Prefix { prefix, .. }, later) => {
            let prefix_segments: Vec<&str> = if prefix.is_empty() {
                Vec::new()
            } else {
                prefix[1..].split('/').collect()
            };
            match later {
                PathMatch::Exact(path) => earlier.matches(path),
                PathMatch::Prefix { prefix: inner, .. } => {
                    // `inner` is longer or equal and starts with `prefix` on a boundary.
                    prefix.is_empty() || earlier.matches(inner) && !inner.is_empty()
                }
                PathMatch::Template { segments, .. } => {
                    segments.len() >= prefix_segments.len()
                        && prefix_segments
                            .iter()
                            .zip(segments)
                            .all(|(p, s)| matches!(s, Segment::Literal(lit) if lit == p))
                }
                PathMatch::Regex(_) => prefix.is_empty(),
            }
        }
        _ => false,
    }
}
