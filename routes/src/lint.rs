//! Warnings about legal but suspicious tables: routes that an earlier route shadows.

use std::path::Path;

use http::Method;

use crate::error::Warning;
use crate::index::RouteIndex;
use crate::matching::{PathMatch, RouteMatch, Segment};
use crate::table::Route;

/// One warning per route that can never match because an earlier route matches every
/// request it would. Conservative: only provable cases are reported.
///
/// The index proposes the only earlier routes whose path predicate could cover the later
/// one's (a walk of the later route's path shape), so a 10,000-route file is checked in
/// roughly linear time instead of comparing every pair; `covers` then decides exactly.
pub(crate) fn unreachable(
    file: &Path,
    routes: &[Route],
    matchers: &[RouteMatch],
    index: &RouteIndex,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let mut candidates = Vec::new();
    for (later, later_match) in routes.iter().zip(matchers) {
        candidates.clear();
        index.covering_candidates(later_match.path.as_ref(), &mut candidates);
        candidates.sort_unstable();
        let earlier = candidates
            .iter()
            .map(|i| *i as usize)
            .take_while(|i| *i < later.index)
            .find(|i| matchers.get(*i).is_some_and(|m| covers(m, later_match)))
            .and_then(|i| routes.get(i));
        if let Some(earlier) = earlier {
            warnings.push(Warning {
                file: file.to_path_buf(),
                line: Some(later.line),
                route: Some(later.name.clone()),
                key: format!("routes[{}]", later.index),
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
            let prefix_segments = || prefix.get(1..).unwrap_or("").split('/');
            match later {
                PathMatch::Exact(path) => earlier.matches(path),
                PathMatch::Prefix { prefix: inner, .. } => {
                    // `inner` is longer or equal and starts with `prefix` on a boundary.
                    prefix.is_empty() || earlier.matches(inner) && !inner.is_empty()
                }
                PathMatch::Template { segments, .. } => {
                    prefix.is_empty()
                        || segments.len() >= prefix_segments().count()
                            && prefix_segments()
                                .zip(segments)
                                .all(|(p, s)| matches!(s, Segment::Literal(lit) if lit == p))
                }
                PathMatch::Regex(_) => prefix.is_empty(),
            }
        }
        _ => false,
    }
}
