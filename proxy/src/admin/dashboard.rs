//! `GET /` on the admin port: the one page an operator keeps open during a migration.
//!
//! It shows what `/routes`, `/diffs` and `/metrics` hold, read from the same live state:
//! how much traffic new services already answer (the migration's progress), each route
//! with its mode, traffic split, gate and pin, the parallel runs' outcomes and mismatch
//! rates, and the most recent differences. The page is rendered here and reloads itself
//! every few seconds, so it runs no script. Everything in it that a request, an answer or
//! the route file supplied is HTML-escaped: mismatch records carry paths, headers and body
//! values from traffic.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use strangler_routes::{Action, Route};

use crate::runtime::{ReloadFailure, Runtime};
use crate::verify::{MismatchRecord, RouteReport, RouteSummary, rfc3339_millis};

/// How often the page reloads itself, in seconds.
const REFRESH_SECONDS: u32 = 5;

/// How many differences the page lists, newest first across all shadowed routes.
const RECENT_DIFFERENCES: usize = 20;

/// The route label of requests that matched no route (they go to the default upstream).
const UNMATCHED: &str = "default";

/// Everything the page shows, gathered by the admin handler.
pub(super) struct Snapshot<'a> {
    /// The live table, pins and route state.
    pub runtime: &'a Runtime,
    /// Requests answered so far, by route and upstream name.
    pub answered: BTreeMap<String, BTreeMap<String, u64>>,
    /// Every shadowed route's report (summary and recent records).
    pub reports: Vec<RouteReport>,
    /// The last reload that failed, if the table is older than the file.
    pub last_failure: Option<ReloadFailure>,
    /// Each route's gate: its state and the reason, by route name.
    pub gates: BTreeMap<String, (&'static str, String)>,
}

/// The whole page.
pub(super) fn render(snapshot: &Snapshot<'_>) -> String {
    let table = snapshot.runtime.table();
    let mut page = String::with_capacity(16 * 1024);
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n\
         <title>strangler</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>strangler</h1>\n<p class=\"meta\">route file <code>{}</code>, version \
         <code title=\"{}\">{}</code>, loaded {}</p>\n",
        escape(&table.source().display().to_string()),
        escape(table.version()),
        escape(table.version().get(..12).unwrap_or(table.version())),
        loaded_at(snapshot.runtime),
    );
    if let Some(failure) = &snapshot.last_failure {
        let _ = write!(
            page,
            "<div class=\"alert\" id=\"reload-error\"><strong>The last reload ({}, {}) \
             failed; the table below is still the one loaded before.</strong><ul>",
            escape(&failure.cause),
            rfc3339_millis(failure.at_unix.saturating_mul(1000)),
        );
        for error in &failure.errors {
            let _ = write!(page, "<li>{}</li>", escape(error));
        }
        page.push_str("</ul></div>\n");
    }
    for warning in table.warnings() {
        let _ = writeln!(
            page,
            "<p class=\"warning\">{}</p>",
            escape(&warning.to_string())
        );
    }
    progress(&mut page, snapshot);
    routes(&mut page, snapshot);
    comparisons(&mut page, &snapshot.reports);
    differences(&mut page, &snapshot.reports);
    page.push_str("</body>\n</html>\n");
    page
}

/// The share of requests answered without the monolith: by a route's new services or by
/// the proxy itself, rather than by the route's `rollback_to` upstream (the default
/// upstream unless the route names another). Unmatched requests count as the monolith's.
fn progress(page: &mut String, snapshot: &Snapshot<'_>) {
    let mut total = 0;
    let mut migrated = 0;
    for (route, by_upstream) in &snapshot.answered {
        let Some(monolith) = monolith_of(snapshot.runtime, route) else {
            continue;
        };
        let (all, without) = split(by_upstream, monolith);
        total += all;
        migrated += without;
    }
    let share = share(migrated, total);
    let _ = write!(
        page,
        "<section id=\"progress\">\n<h2>Migration progress</h2>\n<p><strong \
         id=\"progress-share\">{}</strong> of <span id=\"progress-total\">{total}</span> \
         requests since start-up were answered without the monolith \
         (<span id=\"progress-migrated\">{migrated}</span> by new services or the proxy \
         itself).</p>\n<div class=\"bar\"><div style=\"width:{:.1}%\"></div></div>\n</section>\n",
        percent(share),
        share.unwrap_or(0.0) * 100.0,
    );
}

/// The upstream that stands for the monolith on `route` (a route of the live table, or the
/// unmatched requests); `None` for a route that is no longer in the table.
fn monolith_of<'r>(runtime: &'r Runtime, route: &str) -> Option<&'r str> {
    let table = runtime.table();
    let id = if route == UNMATCHED {
        table.default_upstream()
    } else {
        table.route(route)?.rollback_to
    };
    Some(table.upstream(id).name.as_str())
}

fn routes(page: &mut String, snapshot: &Snapshot<'_>) {
    let runtime = snapshot.runtime;
    let table = runtime.table();
    page.push_str(
        "<section id=\"routes\">\n<h2>Routes</h2>\n<table>\n<thead><tr><th>route</th>\
         <th>match</th><th>mode</th><th>traffic by upstream</th><th>requests</th>\
         <th>without the monolith</th><th>gate</th><th>pin</th></tr></thead>\n<tbody>\n",
    );
    let empty = BTreeMap::new();
    for route in table.routes() {
        let answered = snapshot.answered.get(&route.name).unwrap_or(&empty);
        let monolith = table.upstream(route.rollback_to).name.as_str();
        let (total, migrated) = split(answered, monolith);
        let _ = write!(
            page,
            "<tr id=\"route-{name}\"><td>{name}</td><td><code>{}</code></td><td>{}</td>\
             <td>{}</td><td>{total}</td><td>{}</td>",
            escape(&route.match_summary),
            mode(runtime, route),
            traffic(answered, total),
            percent(share(migrated, total)),
            name = escape(&route.name),
        );
        match snapshot.gates.get(&route.name) {
            Some((state, reason)) => {
                let _ = write!(
                    page,
                    "<td class=\"gate-{state}\" title=\"{}\">{state}</td>",
                    escape(reason)
                );
            }
            None => page.push_str("<td>-</td>"),
        }
        match runtime.pins().get(&route.name) {
            Some(pin) => {
                let _ = write!(
                    page,
                    "<td class=\"pinned\">to {} ({})</td>",
                    escape(monolith),
                    escape(&pin.reason)
                );
            }
            None => page.push_str("<td>-</td>"),
        }
        page.push_str("</tr>\n");
    }
    let unmatched = snapshot.answered.get(UNMATCHED).unwrap_or(&empty);
    let (total, migrated) = split(unmatched, &table.upstream(table.default_upstream()).name);
    let _ = write!(
        page,
        "<tr id=\"route-unmatched\"><td><em>no route</em></td><td>-</td><td>default</td>\
         <td>{}</td><td>{total}</td><td>{}</td><td>-</td><td>-</td></tr>\n</tbody>\n\
         </table>\n</section>\n",
        traffic(unmatched, total),
        percent(share(migrated, total)),
    );
}

/// All requests in `answered`, and those not answered by `monolith`.
fn split(answered: &BTreeMap<String, u64>, monolith: &str) -> (u64, u64) {
    answered
        .iter()
        .fold((0, 0), |(total, migrated), (upstream, count)| {
            let without = if upstream == monolith { 0 } else { *count };
            (total + count, migrated + without)
        })
}

/// The route's mode and where it sends traffic, with a canary's weights.
fn mode(runtime: &Runtime, route: &Route) -> String {
    let table = runtime.table();
    let name = |id| escape(&table.upstream(id).name);
    match &route.action {
        Action::Forward(_) => {
            let to = route
                .action
                .upstreams()
                .into_iter()
                .map(name)
                .collect::<Vec<_>>()
                .join(", ");
            match route.fallback {
                Some(fallback) => format!("forward to {to} (fallback {})", name(fallback)),
                None => format!("forward to {to}"),
            }
        }
        Action::Respond(_) => "respond".to_string(),
        Action::Shadow(spec) => format!(
            "shadow: {} answers, {} compared",
            name(spec.primary),
            name(spec.candidate)
        ),
        Action::Canary(spec) => {
            let weights: u32 = spec.split.iter().map(|(_, weight)| weight).sum();
            let split = spec
                .split
                .iter()
                .map(|(id, weight)| {
                    let share = f64::from(*weight) / f64::from(weights.max(1));
                    format!("{} {}", name(*id), percent(Some(share)))
                })
                .collect::<Vec<_>>()
                .join(" / ");
            format!("canary: {split}")
        }
    }
}

/// `upstream: count (share)` for each upstream that answered (`respond` for the proxy).
fn traffic(answered: &BTreeMap<String, u64>, total: u64) -> String {
    if answered.is_empty() {
        return "-".to_string();
    }
    answered
        .iter()
        .map(|(upstream, count)| {
            format!(
                "{}: {count} ({})",
                escape(upstream),
                percent(share(*count, total))
            )
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

fn comparisons(page: &mut String, reports: &[RouteReport]) {
    page.push_str("<section id=\"comparisons\">\n<h2>Parallel runs</h2>\n");
    if reports.is_empty() {
        page.push_str("<p>No route is shadowed.</p>\n</section>\n");
        return;
    }
    page.push_str(
        "<table>\n<thead><tr><th>route</th><th>comparisons</th><th>match</th>\
         <th>mismatch</th><th>noise</th><th>candidate error</th><th>dropped</th>\
         <th>mismatch rate</th><th>primary p50 / p99</th><th>candidate p50 / p99</th>\
         <th>learned noise</th><th>gate</th></tr></thead>\n<tbody>\n",
    );
    for report in reports {
        let RouteSummary {
            route,
            counts,
            comparisons,
            mismatch_rate,
            latency,
            noise,
            gate,
            ..
        } = &report.summary;
        let learned: Vec<String> = noise
            .headers
            .iter()
            .map(|header| format!("header {header}"))
            .chain(noise.json.iter().cloned())
            .chain(noise.body.then(|| "body".to_string()))
            .collect();
        let _ = writeln!(
            page,
            "<tr id=\"comparisons-{}\"><td>{}</td><td>{comparisons}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td title=\"{}\">{}</td><td class=\"rate\">{}</td>\
             <td>{} / {}</td><td>{} / {}</td><td>{}</td><td>{}</td></tr>",
            escape(route),
            escape(route),
            counts.matched,
            counts.mismatch,
            counts.noise,
            counts.candidate_error,
            escape(&drop_reasons(&counts.dropped_by_reason)),
            counts.dropped,
            percent(*mismatch_rate),
            millis(latency.primary.p50_ms),
            millis(latency.primary.p99_ms),
            millis(latency.candidate.p50_ms),
            millis(latency.candidate.p99_ms),
            if learned.is_empty() {
                "-".to_string()
            } else {
                escape(&learned.join(", "))
            },
            gate.as_ref().map_or("-", |gate| gate.state.as_str()),
        );
    }
    page.push_str("</tbody>\n</table>\n</section>\n");
}

fn differences(page: &mut String, reports: &[RouteReport]) {
    page.push_str("<section id=\"differences\">\n<h2>Recent differences</h2>\n");
    let mut records: Vec<&Arc<MismatchRecord>> = reports
        .iter()
        .flat_map(|report| report.records.iter())
        .collect();
    records.sort_by_key(|record| std::cmp::Reverse(record.unix_ms));
    records.truncate(RECENT_DIFFERENCES);
    if records.is_empty() {
        page.push_str("<p>None recorded.</p>\n</section>\n");
        return;
    }
    page.push_str(
        "<table>\n<thead><tr><th>time</th><th>route</th><th>request</th><th>outcome</th>\
         <th>status</th><th>where</th></tr></thead>\n<tbody>\n",
    );
    for record in records {
        let target = match &record.query {
            Some(query) => format!("{} {}?{query}", record.method, record.path),
            None => format!("{} {}", record.method, record.path),
        };
        let mut detail: Vec<String> = record
            .differences
            .iter()
            .map(|difference| {
                format!(
                    "{} {}: {} &rarr; {}",
                    difference.location.part(),
                    escape(&difference.location.path()),
                    value(difference.primary.as_deref()),
                    value(difference.candidate.as_deref()),
                )
            })
            .collect();
        if record.omitted_differences > 0 {
            detail.push(format!("and {} more", record.omitted_differences));
        }
        if let Some(error) = &record.error {
            detail.push(escape(error));
        }
        let _ = writeln!(
            page,
            "<tr class=\"difference\"><td>{}</td><td>{}</td><td><code>{}</code></td>\
             <td>{}</td><td>{} / {}</td><td>{}</td></tr>",
            escape(&record.time),
            escape(&record.route),
            escape(&target),
            record.outcome.as_str(),
            record.primary_status,
            record
                .candidate_status
                .map_or_else(|| "-".to_string(), |status| status.to_string()),
            detail.join("<br>"),
        );
    }
    page.push_str("</tbody>\n</table>\n</section>\n");
}

/// One side's value in a difference: escaped and in code, or "absent".
fn value(value: Option<&str>) -> String {
    value.map_or_else(
        || "<em>absent</em>".to_string(),
        |value| format!("<code>{}</code>", escape(value)),
    )
}

fn loaded_at(runtime: &Runtime) -> String {
    let since_epoch = runtime
        .table()
        .loaded_at()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339_millis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

/// `part / whole`, `None` when there is no whole.
#[allow(clippy::cast_precision_loss)]
fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn percent(fraction: Option<f64>) -> String {
    fraction.map_or_else(|| "-".to_string(), |f| format!("{:.1}%", f * 100.0))
}

fn millis(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_string(), |ms| format!("{ms:.1} ms"))
}

/// `text` safe to place in HTML content and in quoted attribute values.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{margin:0 0 .2em}.meta{color:#666;margin-top:0}\
table{border-collapse:collapse;margin-bottom:1em}\
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f4f4f4}code{font-size:13px}\
.bar{background:#eee;height:1em;width:30em;max-width:100%}.bar div{background:#3a7;height:100%}\
.alert{background:#fde8e8;border:1px solid #e99;padding:.5em 1em}.warning{color:#a60}\
.gate-passing{color:#070}.gate-failing{color:#b00;font-weight:bold}.pinned{color:#b00}";

/// The reasons copies were dropped for, with their counts (`max_in_flight: 3, ...`), for the
/// dropped cell's hover text; the reasons that never happened are left out.
fn drop_reasons(by_reason: &BTreeMap<&'static str, u64>) -> String {
    let reasons: Vec<String> = by_reason
        .iter()
        .filter(|(_, count)| **count > 0)
        .map(|(reason, count)| format!("{reason}: {count}"))
        .collect();
    reasons.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralizes_markup_in_content_and_attributes() {
        assert_eq!(
            escape(r#"<script>alert('x')</script> & "q""#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("/orders/42"), "/orders/42");
    }

    #[test]
    fn the_dropped_cell_names_the_reasons_that_happened() {
        let by_reason =
            BTreeMap::from([("max_in_flight", 3), ("no_spare_cpu", 2), ("shutdown", 0)]);
        assert_eq!(
            drop_reasons(&by_reason),
            "max_in_flight: 3, no_spare_cpu: 2"
        );
        assert_eq!(drop_reasons(&BTreeMap::new()), "");
    }

    #[test]
    fn shares_and_percentages() {
        assert_eq!(percent(share(1, 4)), "25.0%");
        assert_eq!(percent(share(0, 0)), "-");
        assert_eq!(millis(Some(1.25)), "1.2 ms");
        assert_eq!(millis(None), "-");
    }
}
