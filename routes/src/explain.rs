//! Why a request goes where it goes: a linear, independent re-check of every route.

use std::fmt;

use serde::Serialize;

use crate::matching::RequestView;
use crate::table::{RouteTable, Upstream};
use crate::validate::SELF_ANSWER_UPSTREAM;

/// Which route a request would take, and why each earlier route did not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The chosen route's name; `None` when the default upstream takes the request.
    pub chosen: Option<String>,
    /// Name of the upstream that would answer (a shadow route's `primary`), `respond` for a
    /// fixed response, or a canary's split such as `monolith 90 / catalog 10`.
    pub upstream: String,
    /// One step per route tried, in file order, up to and including the chosen one.
    pub steps: Vec<ExplainStep>,
}

/// The verdict of one route for the explained request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExplainStep {
    /// Route name.
    pub route: String,
    /// Whether every predicate held.
    pub matched: bool,
    /// `matched`, or the first predicate that failed, e.g.
    /// `path /payroll/x does not match path_prefix /invoices`.
    pub reason: String,
}

impl RouteTable {
    /// Explains the routing decision for `req` (same result as [`RouteTable::find`], but
    /// by checking every route in order, without the index).
    pub fn explain(&self, req: &RequestView<'_>) -> Explanation {
        let mut steps = Vec::new();
        for route in self.routes() {
            let failure = self.matcher(route.index).failure(req);
            let matched = failure.is_none();
            steps.push(ExplainStep {
                route: route.name.clone(),
                matched,
                reason: failure.map_or_else(
                    || format!("matched ({})", route.match_summary),
                    |failure| failure.reason(req),
                ),
            });
            if matched {
                return Explanation {
                    chosen: Some(route.name.clone()),
                    upstream: Upstream::name_of(self, &route.action),
                    steps,
                };
            }
        }
        Explanation {
            chosen: None,
            upstream: self.upstream(self.default_upstream()).name.clone(),
            steps,
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.chosen {
            Some(route) if self.upstream == SELF_ANSWER_UPSTREAM => {
                writeln!(f, "route `{route}` answers directly (respond)")?;
            }
            Some(route) => writeln!(f, "route `{route}` → upstream `{}`", self.upstream)?,
            None => writeln!(f, "no route matches → default upstream `{}`", self.upstream)?,
        }
        for (i, step) in self.steps.iter().enumerate() {
            let verdict = if step.matched { "match" } else { "no match" };
            write!(f, "  {}. {}: {verdict}: {}", i + 1, step.route, step.reason)?;
            if i + 1 < self.steps.len() {
                writeln!(f)?;
            }
        }
        Ok(())
    }
}
