//! `routes[N].shadow`, `routes[N].canary` and `routes[N].hooks` → their compiled forms.

use std::time::Duration;

use super::{Ctx, Names};
use crate::action::{
    Canary, CanaryGate, Compare, Hook, Noise, OnError, Shadow, ShadowGate, Sticky,
};
use crate::file::{RawCanary, RawCompare, RawHook, RawShadow, RawSticky, Scalar};
use crate::matching::pointer_tokens;
use crate::table::UpstreamId;

const DEFAULT_SAMPLE: f64 = 1.0;
const DEFAULT_MAX_IN_FLIGHT: u64 = 256;
const DEFAULT_SHADOW_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_MAX_BODY: u64 = 1 << 20;
const DEFAULT_NOISE_SAMPLE: f64 = 0.05;
const DEFAULT_MIN_COMPARISONS: u64 = 100;
const DEFAULT_MIN_REQUESTS: u64 = 100;
const DEFAULT_WINDOW: Duration = Duration::from_secs(60);

/// Compiles `shadow`, recording every problem; `None` if there was any.
pub(super) fn compile_shadow(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    raw: &RawShadow,
    names: &Names,
) -> Option<Shadow> {
    let errors_before = ctx.errors.len();
    let primary = required_upstream(ctx, key, "primary", route, raw.primary.as_ref(), names);
    let candidate = required_upstream(ctx, key, "candidate", route, raw.candidate.as_ref(), names);
    if let (Some(primary), Some(candidate)) = (primary, candidate)
        && primary == candidate
    {
        let message = format!(
            "`candidate` must differ from `primary` (both are `{}`): a route cannot be compared with itself",
            raw.primary.as_ref().map_or("", Scalar::as_str)
        );
        ctx.error(format!("{key}.candidate"), route, message);
    }
    let sample = ctx.percent(
        &format!("{key}.sample"),
        route,
        raw.sample.as_ref(),
        DEFAULT_SAMPLE,
    );
    let unsafe_methods = ctx.flag(
        &format!("{key}.unsafe_methods"),
        route,
        raw.unsafe_methods.as_ref(),
        false,
    );
    let max_in_flight = ctx
        .count(
            &format!("{key}.max_in_flight"),
            route,
            raw.max_in_flight.as_ref(),
            DEFAULT_MAX_IN_FLIGHT,
            true,
        )
        .and_then(|n| usize::try_from(n).ok());
    let timeout = ctx.positive_duration(
        &format!("{key}.timeout"),
        route,
        raw.timeout.as_ref(),
        DEFAULT_SHADOW_TIMEOUT,
    );
    let max_body = ctx.size(
        &format!("{key}.max_body"),
        route,
        raw.max_body.as_ref(),
        DEFAULT_MAX_BODY,
    );
    let compare = match &raw.compare {
        Some(compare) => compile_compare(ctx, &format!("{key}.compare"), route, compare, names),
        None => Some(Compare::default()),
    };
    let gate = raw.gate.as_ref().map(|gate| {
        let gate_key = format!("{key}.gate");
        let min_comparisons = ctx.count(
            &format!("{gate_key}.min_comparisons"),
            route,
            gate.min_comparisons.as_ref(),
            DEFAULT_MIN_COMPARISONS,
            false,
        );
        let rate_key = format!("{gate_key}.max_mismatch_rate");
        let max_mismatch_rate = match &gate.max_mismatch_rate {
            Some(rate) => ctx.percent(&rate_key, route, Some(rate), 0.0),
            None => {
                let message = "missing required key `max_mismatch_rate` (e.g. `0.5%`)";
                ctx.error(&gate_key, route, message);
                None
            }
        };
        Some(ShadowGate {
            min_comparisons: min_comparisons?,
            max_mismatch_rate: max_mismatch_rate?,
        })
    });
    if ctx.errors.len() > errors_before {
        return None;
    }
    Some(Shadow {
        primary: primary?,
        candidate: candidate?,
        sample: sample?,
        unsafe_methods: unsafe_methods?,
        max_in_flight: max_in_flight?,
        timeout: timeout?,
        max_body: max_body?,
        compare: compare?,
        gate: gate.flatten(),
    })
}

fn compile_compare(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    raw: &RawCompare,
    names: &Names,
) -> Option<Compare> {
    let errors_before = ctx.errors.len();
    let headers = |ctx: &mut Ctx<'_>, field: &str, list: Option<&Vec<Scalar>>| {
        let mut out = Vec::new();
        for (i, name) in list.into_iter().flatten().enumerate() {
            let item_key = format!("{key}.{field}[{i}]");
            if let Some(name) = ctx.header_name(&item_key, route, name.as_str()) {
                out.push(name.as_str().to_owned());
            }
        }
        out
    };
    let pointers = |ctx: &mut Ctx<'_>, field: &str, list: Option<&Vec<Scalar>>| {
        let mut out = Vec::new();
        for (i, pointer) in list.into_iter().flatten().enumerate() {
            let pointer = pointer.as_str();
            match pointer_tokens(pointer) {
                Ok(_) => out.push(pointer.to_owned()),
                Err(reason) => {
                    let message = format!("invalid JSON pointer `{pointer}`: {reason}");
                    ctx.error(format!("{key}.{field}[{i}]"), route, message);
                }
            }
        }
        out
    };
    let ignore_headers = headers(ctx, "ignore_headers", raw.ignore_headers.as_ref());
    let redact_headers = headers(ctx, "redact_headers", raw.redact_headers.as_ref());
    let ignore_json = pointers(ctx, "ignore_json", raw.ignore_json.as_ref());
    let redact_json = pointers(ctx, "redact_json", raw.redact_json.as_ref());
    let noise = raw.noise.as_ref().map(|noise| {
        let noise_key = format!("{key}.noise");
        let baseline = required_upstream(
            ctx,
            &noise_key,
            "baseline",
            route,
            noise.baseline.as_ref(),
            names,
        );
        let sample = ctx.percent(
            &format!("{noise_key}.sample"),
            route,
            noise.sample.as_ref(),
            DEFAULT_NOISE_SAMPLE,
        );
        Some(Noise {
            baseline: baseline?,
            sample: sample?,
        })
    });
    (ctx.errors.len() == errors_before).then(|| Compare {
        ignore_headers,
        ignore_json,
        redact_headers,
        redact_json,
        noise: noise.flatten(),
    })
}

/// Compiles `canary`; `rollback_to` picks the baseline when it is part of the split.
pub(super) fn compile_canary(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    raw: &RawCanary,
    names: &Names,
    rollback_to: Option<UpstreamId>,
) -> Option<Canary> {
    let errors_before = ctx.errors.len();
    let split_key = format!("{key}.split");
    let mut split: Vec<(UpstreamId, u32)> = Vec::new();
    let mut total: u64 = 0;
    match &raw.split {
        None => ctx.error(
            &split_key,
            route,
            "missing required key `split` (e.g. `{ monolith: 90, catalog: 10 }`)",
        ),
        Some(entries) => {
            for (name, weight) in &entries.0 {
                let entry_key = format!("{split_key}.{name}");
                let id =
                    ctx.upstream_ref(&entry_key, route, &Scalar(name.clone()), &names.upstreams);
                let weight = match weight.as_str().trim().parse::<u32>() {
                    Ok(weight) => Some(weight),
                    Err(_) => {
                        let message = format!(
                            "invalid weight `{}` (expected a non-negative integer)",
                            weight.as_str()
                        );
                        ctx.error(&entry_key, route, message);
                        None
                    }
                };
                if let (Some(id), Some(weight)) = (id, weight) {
                    if split.iter().any(|(seen, _)| *seen == id) {
                        let message = format!("upstream `{name}` appears twice in the split");
                        ctx.error(&entry_key, route, message);
                    }
                    split.push((id, weight));
                    total += u64::from(weight);
                }
            }
            if entries.0.len() < 2 {
                let message = "a split needs at least two upstreams (use `to` for one)";
                ctx.error(&split_key, route, message);
            } else if ctx.errors.len() == errors_before && total == 0 {
                ctx.error(&split_key, route, "the weights must not all be zero");
            }
        }
    }
    let sticky = raw
        .sticky
        .as_ref()
        .map(|sticky| compile_sticky(ctx, &format!("{key}.sticky"), route, sticky));
    let gate = raw.gate.as_ref().map(|gate| {
        let gate_key = format!("{key}.gate");
        let min_requests = ctx.count(
            &format!("{gate_key}.min_requests"),
            route,
            gate.min_requests.as_ref(),
            DEFAULT_MIN_REQUESTS,
            false,
        );
        let max_error_rate = gate
            .max_error_rate
            .as_ref()
            .map(|v| ctx.percent(&format!("{gate_key}.max_error_rate"), route, Some(v), 0.0));
        let max_p99_ratio = gate
            .max_p99_ratio
            .as_ref()
            .map(|v| ctx.ratio(&format!("{gate_key}.max_p99_ratio"), route, v));
        let max_p99 = gate.max_p99.as_ref().map(|v| {
            ctx.positive_duration(
                &format!("{gate_key}.max_p99"),
                route,
                Some(v),
                Duration::ZERO,
            )
        });
        let window = ctx.positive_duration(
            &format!("{gate_key}.window"),
            route,
            gate.window.as_ref(),
            DEFAULT_WINDOW,
        );
        if max_error_rate.is_none() && max_p99_ratio.is_none() && max_p99.is_none() {
            let message =
                "a gate needs at least one of `max_error_rate`, `max_p99_ratio`, `max_p99`";
            ctx.error(&gate_key, route, message);
        }
        Some(CanaryGate {
            min_requests: min_requests?,
            max_error_rate: max_error_rate.map_or(Some(None), |v| v.map(Some))?,
            max_p99_ratio: max_p99_ratio.map_or(Some(None), |v| v.map(Some))?,
            max_p99: max_p99.map_or(Some(None), |v| v.map(Some))?,
            window: window?,
        })
    });
    if ctx.errors.len() > errors_before {
        return None;
    }
    let baseline = match rollback_to {
        Some(target) if split.iter().any(|(id, _)| *id == target) => target,
        _ => split.first()?.0,
    };
    Some(Canary {
        split,
        baseline,
        sticky: sticky.flatten(),
        gate: gate.flatten(),
    })
}

fn compile_sticky(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    raw: &RawSticky,
) -> Option<Sticky> {
    match (&raw.cookie, &raw.header) {
        (Some(cookie), None) => {
            let name = cookie.as_str();
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
            if !valid {
                let message = format!("invalid cookie name `{name}`");
                ctx.error(format!("{key}.cookie"), route, message);
            }
            valid.then(|| Sticky::Cookie(name.to_owned()))
        }
        (None, Some(header)) => ctx
            .header_name(&format!("{key}.header"), route, header.as_str())
            .map(Sticky::Header),
        _ => {
            let message = "give exactly one of `cookie` or `header`";
            ctx.error(key, route, message);
            None
        }
    }
}

/// Compiles `hooks`: each script must exist (relative paths resolve against the route
/// file's directory).
pub(super) fn compile_hooks(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    raw: &[RawHook],
) -> Option<Vec<Hook>> {
    let errors_before = ctx.errors.len();
    let mut hooks = Vec::new();
    for (i, entry) in raw.iter().enumerate() {
        let item_key = format!("{key}[{i}]");
        let (script, on_error, script_key) = match entry {
            RawHook::Path(path) => (Some(path), None, item_key.clone()),
            RawHook::Spec(spec) => (
                spec.script.as_ref(),
                spec.on_error.as_ref(),
                format!("{item_key}.script"),
            ),
        };
        let Some(script) = script else {
            ctx.error(&script_key, route, "missing required key `script`");
            continue;
        };
        let path = ctx.base_dir().join(script.as_str());
        if !path.is_file() {
            let message = format!("hook script `{}` does not exist", path.display());
            ctx.error(&script_key, route, message);
        }
        let on_error = match on_error.map(Scalar::as_str) {
            None | Some("fail") => OnError::Fail,
            Some("continue") => OnError::Continue,
            Some(other) => {
                let message = format!("invalid value `{other}` (expected `fail` or `continue`)");
                ctx.error(format!("{item_key}.on_error"), route, message);
                OnError::Fail
            }
        };
        hooks.push(Hook {
            script: path,
            on_error,
        });
    }
    (ctx.errors.len() == errors_before).then_some(hooks)
}

/// A required upstream reference at `key.field`.
fn required_upstream(
    ctx: &mut Ctx<'_>,
    key: &str,
    field: &str,
    route: Option<&str>,
    value: Option<&Scalar>,
    names: &Names,
) -> Option<UpstreamId> {
    let field_key = format!("{key}.{field}");
    match value {
        Some(name) => ctx.upstream_ref(&field_key, route, name, &names.upstreams),
        None => {
            ctx.error(&field_key, route, format!("missing required key `{field}`"));
            None
        }
    }
}
