//! Table-driven tests of the migration keys: shadow, canary, hooks, body predicates.

use std::path::Path;
use std::time::Duration;

use http::HeaderName;

use crate::action::{
    Action, Canary, CanaryGate, Compare, Hook, Noise, OnError, Shadow, ShadowGate, Sticky,
};
use crate::{RouteTable, ValidationErrors, parse_str};

/// Lines 1–6; the first route starts on line 7.
const HEADER: &str = "upstreams:
  monolith: { url: \"http://127.0.0.1:8000\" }
  svc: { url: \"http://127.0.0.1:9000\" }
  other: { url: \"http://127.0.0.1:9001\" }
default: monolith
routes:
";

fn parse(routes: &str) -> Result<RouteTable, ValidationErrors> {
    parse_str(Path::new("routes.yaml"), &format!("{HEADER}{routes}"))
}

#[test]
fn full_file_compiles_to_expected_values() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    for script in ["a.lua", "b.lua"] {
        std::fs::write(dir.path().join("plugins").join(script), "-- hook\n").unwrap();
    }
    let routes = r#"- name: payroll
  match: { path: "/payroll/{id}", methods: [GET] }
  shadow:
    primary: monolith
    candidate: svc
    sample: 25%
    unsafe_methods: true
    max_in_flight: 16
    timeout: 750ms
    max_body: 2MiB
    compare:
      ignore_headers: [Date, x-request-id]
      ignore_json: ["/generated_at", "/items/*/etag", ""]
      redact_headers: [x-api-key]
      redact_json: ["/card~1number"]
      noise: { baseline: monolith, sample: 5% }
    gate: { min_comparisons: 500, max_mismatch_rate: 0.5% }
  rewrite: { prefix: /api }
- name: plain-shadow
  match: { path: /plain }
  shadow: { primary: monolith, candidate: svc }
- name: catalog
  match: { path_prefix: /catalog }
  canary:
    split: { svc: 10, monolith: 90, other: 0 }
    sticky: { header: X-User }
    gate: { min_requests: 200, max_error_rate: 1%, max_p99_ratio: 1.5, max_p99: 300ms }
  fallback: monolith
  hooks: [plugins/a.lua, { script: plugins/b.lua, on_error: continue }]
  hook_body_limit: 1KiB
- name: catalog-cookie
  match: { path_prefix: /shop }
  canary:
    split: { svc: 1, other: 3 }
    sticky: { cookie: session }
    gate: { max_error_rate: 2%, window: 5m }
  rollback_to: other
- name: form
  match: { path: /app.do, methods: [POST], form: { action: payroll, "x y": "1" } }
  to: svc
  max_body_match: 8KiB
- name: json
  match: { path: /api, json: { "/version": 2, "/a/b": "text", "/ok": true, "/n": null, "/f": 10.50 } }
  to: svc
"#;
    let path = dir.path().join("routes.yaml");
    let table = match parse_str(&path, &format!("{HEADER}{routes}")) {
        Ok(table) => table,
        Err(errors) => panic!("{errors}"),
    };
    let id = |name: &str| table.upstream_id(name).unwrap();
    let route = |name: &str| table.route(name).unwrap();

    let Action::Shadow(shadow) = &route("payroll").action else {
        panic!("payroll is not a shadow route")
    };
    let expected = Shadow {
        primary: id("monolith"),
        candidate: id("svc"),
        sample: 0.25,
        unsafe_methods: true,
        max_in_flight: 16,
        timeout: Duration::from_millis(750),
        max_body: 2 << 20,
        compare: Compare {
            ignore_headers: vec!["date".into(), "x-request-id".into()],
            ignore_json: vec![
                "/generated_at".into(),
                "/items/*/etag".into(),
                String::new(),
            ],
            redact_headers: vec!["x-api-key".into()],
            redact_json: vec!["/card~1number".into()],
            noise: Some(Noise {
                baseline: id("monolith"),
                sample: 0.05,
            }),
        },
        gate: Some(ShadowGate {
            min_comparisons: 500,
            max_mismatch_rate: 0.005,
        }),
    };
    assert_eq!(shadow, &expected);
    assert!(route("payroll").rewrite.is_some());

    let Action::Shadow(plain) = &route("plain-shadow").action else {
        panic!("plain-shadow is not a shadow route")
    };
    let defaults = Shadow {
        primary: id("monolith"),
        candidate: id("svc"),
        sample: 1.0,
        unsafe_methods: false,
        max_in_flight: 256,
        timeout: Duration::from_secs(5),
        max_body: 1 << 20,
        compare: Compare::default(),
        gate: None,
    };
    assert_eq!(plain, &defaults);
    assert_eq!(route("plain-shadow").hooks, vec![]);
    assert_eq!(route("plain-shadow").hook_body_limit, 64 << 10);
    assert_eq!(route("plain-shadow").max_body_match, 64 << 10);

    let catalog = route("catalog");
    let Action::Canary(canary) = &catalog.action else {
        panic!("catalog is not a canary route")
    };
    let expected = Canary {
        split: vec![(id("svc"), 10), (id("monolith"), 90), (id("other"), 0)],
        // rollback_to defaults to `default` (monolith), which is in the split.
        baseline: id("monolith"),
        sticky: Some(Sticky::Header(HeaderName::from_static("x-user"))),
        gate: Some(CanaryGate {
            min_requests: 200,
            max_error_rate: Some(0.01),
            max_p99_ratio: Some(1.5),
            max_p99: Some(Duration::from_millis(300)),
            window: Duration::from_secs(60),
        }),
    };
    assert_eq!(canary, &expected);
    assert_eq!(catalog.fallback, Some(id("monolith")));
    assert_eq!(
        catalog.hooks,
        vec![
            Hook {
                script: dir.path().join("plugins/a.lua"),
                on_error: OnError::Fail,
            },
            Hook {
                script: dir.path().join("plugins/b.lua"),
                on_error: OnError::Continue,
            },
        ]
    );
    assert_eq!(catalog.hook_body_limit, 1024);
    let watched = table.watched_files();
    assert_eq!(watched.len(), 3, "{watched:?}");
    assert!(watched.contains(&dir.path().join("plugins/b.lua")));

    let Action::Canary(cookie) = &route("catalog-cookie").action else {
        panic!("catalog-cookie is not a canary route")
    };
    assert_eq!(
        cookie.baseline,
        id("other"),
        "rollback_to in the split is the baseline"
    );
    assert_eq!(cookie.sticky, Some(Sticky::Cookie("session".into())));
    let gate = cookie.gate.as_ref().unwrap();
    assert_eq!(
        (gate.min_requests, gate.window),
        (100, Duration::from_secs(300))
    );
    assert_eq!((gate.max_p99_ratio, gate.max_p99), (None, None));

    let form = route("form");
    assert_eq!(form.max_body_match, 8 << 10);
    assert_eq!(
        form.match_summary,
        "POST path=/app.do form action=payroll form x y=1"
    );
    assert_eq!(
        route("json").match_summary,
        "path=/api json /a/b=\"text\" json /f=105e-1 json /n=null json /ok=true json /version=2"
    );
    assert!(table.warnings().is_empty(), "{:?}", table.warnings());
}

#[test]
fn canary_baseline_is_first_entry_without_rollback_in_split() {
    let table = parse("- name: c\n  canary: { split: { svc: 1, other: 1 } }\n").unwrap();
    let Action::Canary(canary) = &table.routes()[0].action else {
        panic!("not a canary")
    };
    assert_eq!(canary.baseline, table.upstream_id("svc").unwrap());
}

/// (routes, key, line, message fragment): each file has exactly this one error.
const ERRORS: &[(&str, &str, usize, &str)] = &[
    (
        "- name: payroll\n  shadow: { primary: monolith, candidate: nope }\n",
        "routes[0].shadow.candidate",
        8,
        "unknown upstream `nope`",
    ),
    (
        "- name: p\n  shadow:\n    candidate: svc\n",
        "routes[0].shadow.primary",
        8,
        "missing required key `primary`",
    ),
    (
        "- name: p\n  shadow: { primary: svc, candidate: svc }\n",
        "routes[0].shadow.candidate",
        8,
        "must differ from `primary`",
    ),
    (
        "- name: p\n  shadow:\n    primary: monolith\n    candidate: svc\n    compare:\n      noise: { baseline: nope }\n",
        "routes[0].shadow.compare.noise.baseline",
        12,
        "unknown upstream `nope`",
    ),
    (
        "- name: c\n  canary:\n    split: { monolith: 90, nope: 10 }\n",
        "routes[0].canary.split.nope",
        9,
        "unknown upstream `nope`",
    ),
    (
        "- name: c\n  canary: { split: { monolith: -1, svc: 10 } }\n",
        "routes[0].canary.split.monolith",
        8,
        "invalid weight `-1`",
    ),
    (
        "- name: c\n  canary: { split: { monolith: 1.5, svc: 10 } }\n",
        "routes[0].canary.split.monolith",
        8,
        "invalid weight `1.5`",
    ),
    (
        "- name: c\n  canary: { split: { monolith: 0, svc: 0 } }\n",
        "routes[0].canary.split",
        8,
        "must not all be zero",
    ),
    (
        "- name: c\n  canary: { split: { svc: 100 } }\n",
        "routes[0].canary.split",
        8,
        "at least two upstreams",
    ),
    (
        "- name: c\n  canary: {}\n",
        "routes[0].canary.split",
        8,
        "missing required key `split`",
    ),
    (
        "- name: c\n  canary:\n    split: { monolith: 1, svc: 1 }\n    sticky: { cookie: s, header: x-user }\n",
        "routes[0].canary.sticky",
        10,
        "exactly one of `cookie` or `header`",
    ),
    (
        "- name: c\n  canary:\n    split: { monolith: 1, svc: 1 }\n    sticky: {}\n",
        "routes[0].canary.sticky",
        10,
        "exactly one of `cookie` or `header`",
    ),
    (
        "- name: c\n  canary:\n    split: { monolith: 1, svc: 1 }\n    sticky: { cookie: \"a;b\" }\n",
        "routes[0].canary.sticky.cookie",
        10,
        "invalid cookie name",
    ),
    (
        "- name: c\n  canary:\n    split: { monolith: 1, svc: 1 }\n    gate: { min_requests: 10, window: 1m }\n",
        "routes[0].canary.gate",
        10,
        "at least one of `max_error_rate`, `max_p99_ratio`, `max_p99`",
    ),
    (
        "- name: c\n  canary:\n    split: { monolith: 1, svc: 1 }\n    gate: { max_p99_ratio: 1.5x }\n",
        "routes[0].canary.gate.max_p99_ratio",
        10,
        "invalid ratio `1.5x`",
    ),
    (
        "- name: c\n  canary:\n    split: { monolith: 1, svc: 1 }\n    gate: { max_error_rate: 1 }\n",
        "routes[0].canary.gate.max_error_rate",
        10,
        "invalid percentage",
    ),
    (
        "- name: c\n  canary:\n    split: { monolith: 1, svc: 1 }\n    gate: { max_p99: 0ms }\n",
        "routes[0].canary.gate.max_p99",
        10,
        "greater than zero",
    ),
    (
        "- name: two\n  to: svc\n  shadow: { primary: monolith, candidate: svc }\n",
        "routes[0].shadow",
        9,
        "`to` and `shadow` are mutually exclusive",
    ),
    (
        "- name: two\n  canary: { split: { monolith: 1, svc: 1 } }\n  respond: { status: 200 }\n",
        "routes[0].canary",
        8,
        "`respond` and `canary` are mutually exclusive",
    ),
    (
        "- name: none\n  match: { path: /x }\n",
        "routes[0]",
        7,
        "missing action",
    ),
    (
        "- name: s\n  shadow: { primary: monolith, candidate: svc }\n  fallback: monolith\n",
        "routes[0].fallback",
        9,
        "`fallback` only applies to `to` and `canary` routes, not `shadow`",
    ),
    (
        "- name: r\n  respond: { status: 200 }\n  fallback: monolith\n",
        "routes[0].fallback",
        9,
        "not `respond`",
    ),
    (
        "- name: h\n  to: svc\n  hooks:\n    - nope/missing.lua\n",
        "routes[0].hooks[0]",
        10,
        "does not exist",
    ),
    (
        "- name: h\n  to: svc\n  hooks: [{ on_error: continue }]\n",
        "routes[0].hooks[0].script",
        9,
        "missing required key `script`",
    ),
    (
        "- name: h\n  to: svc\n  hooks:\n    - { script: nope.lua, on_eror: continue }\n",
        "routes[0].hooks[0].on_eror",
        10,
        "unknown field `on_eror`",
    ),
    (
        "- name: s\n  shadow: { primary: monolith, candidate: svc, sample: 5 }\n",
        "routes[0].shadow.sample",
        8,
        "invalid percentage: `5` has no unit",
    ),
    (
        "- name: s\n  shadow: { primary: monolith, candidate: svc, sample: 120% }\n",
        "routes[0].shadow.sample",
        8,
        "out of range",
    ),
    (
        "- name: s\n  shadow:\n    primary: monolith\n    candidate: svc\n    timeout: 10\n",
        "routes[0].shadow.timeout",
        11,
        "invalid duration",
    ),
    (
        "- name: s\n  shadow:\n    primary: monolith\n    candidate: svc\n    max_body: 1XB\n",
        "routes[0].shadow.max_body",
        11,
        "invalid size",
    ),
    (
        "- name: s\n  shadow:\n    primary: monolith\n    candidate: svc\n    max_in_flight: 0\n",
        "routes[0].shadow.max_in_flight",
        11,
        "positive integer",
    ),
    (
        "- name: s\n  shadow:\n    primary: monolith\n    candidate: svc\n    unsafe_methods: yes\n",
        "routes[0].shadow.unsafe_methods",
        11,
        "expected `true` or `false`",
    ),
    (
        "- name: s\n  shadow:\n    primary: monolith\n    candidate: svc\n    compare: { ignore_headers: [\"bad header\"] }\n",
        "routes[0].shadow.compare.ignore_headers[0]",
        11,
        "invalid header name",
    ),
    (
        "- name: s\n  shadow:\n    primary: monolith\n    candidate: svc\n    compare: { ignore_json: [\"/a\", \"b\"] }\n",
        "routes[0].shadow.compare.ignore_json[1]",
        11,
        "invalid JSON pointer `b`",
    ),
    (
        "- name: s\n  shadow:\n    primary: monolith\n    candidate: svc\n    gate: { min_comparisons: 10 }\n",
        "routes[0].shadow.gate",
        11,
        "missing required key `max_mismatch_rate`",
    ),
    (
        "- name: f\n  to: svc\n  max_body_match: 12\n",
        "routes[0].max_body_match",
        9,
        "invalid size",
    ),
    (
        "- name: f\n  to: svc\n  hook_body_limit: lots\n",
        "routes[0].hook_body_limit",
        9,
        "invalid size",
    ),
    (
        "- name: s\n  shadow:\n    primary: monolith\n    candidate: svc\n    sampel: 5%\n",
        "routes[0].shadow.sampel",
        11,
        "unknown field `sampel`",
    ),
    (
        "- name: c\n  canary:\n    split: { monolith: 1, svc: 1 }\n    gate:\n      max_error: 1%\n",
        "routes[0].canary.gate.max_error",
        11,
        "unknown field `max_error`",
    ),
    (
        "- name: j\n  match: { json: { \"a/b\": 1 } }\n  to: svc\n",
        "routes[0].match.json.a/b",
        8,
        "invalid JSON pointer `a/b`",
    ),
    (
        "- name: j\n  match:\n    json: { \"/a\": [1, 2] }\n  to: svc\n",
        "routes[0].match.json./a",
        9,
        "expected a string, number, boolean or null",
    ),
    (
        "- name: j\n  match:\n    json: { \"/a\": .inf }\n  to: svc\n",
        "routes[0].match.json./a",
        9,
        "expected a finite number",
    ),
    (
        "- name: f\n  match:\n    form: {}\n  to: svc\n",
        "routes[0].match.form",
        9,
        "must not be empty",
    ),
    (
        "- name: h\n  hooks: [{ script: nope.lua, on_error: ignore }]\n  to: svc\n",
        "routes[0].hooks[0].on_error",
        8,
        "expected `fail` or `continue`",
    ),
];

#[test]
fn every_error_names_its_key_and_line() {
    for (routes, key, line, fragment) in ERRORS {
        let errors = match parse(routes) {
            Ok(_) => panic!("expected an error for:\n{routes}"),
            Err(errors) => errors.errors,
        };
        let found = errors.iter().find(|e| e.key == *key);
        let Some(error) = found else {
            panic!("no error at {key} for:\n{routes}\ngot: {errors:#?}");
        };
        assert_eq!(error.line, Some(*line), "line of {key}: {error}");
        assert!(
            error.message.contains(fragment),
            "{key}: {:?} does not contain {fragment:?}",
            error.message
        );
        if *key != "routes[0].hooks[0].on_error" {
            assert_eq!(errors.len(), 1, "{routes}\n{errors:#?}");
        }
    }
}

#[test]
fn errors_name_the_route() {
    let errors =
        parse("- name: payroll\n  shadow: { primary: monolith, candidate: nope }\n").unwrap_err();
    assert_eq!(
        errors.errors[0].to_string(),
        "routes.yaml:8: routes[0] (payroll).shadow.candidate: unknown upstream `nope` (defined: monolith, other, svc)"
    );
}

#[test]
fn fingerprint_follows_the_route_definition_only() {
    let base = "- name: a\n  match: { path: /a }\n  to: svc\n- name: b\n  canary: { split: { svc: 1, other: 2 } }\n";
    let fingerprints = |routes: &str| -> Vec<String> {
        parse(routes)
            .unwrap()
            .routes()
            .iter()
            .map(|r| r.fingerprint.clone())
            .collect()
    };
    let original = fingerprints(base);
    assert_eq!(original[0].len(), 64);
    assert_ne!(original[0], original[1]);
    assert_eq!(fingerprints(base), original, "stable across re-parse");

    // Comments, layout and other routes' edits keep a route's fingerprint.
    let relaid = "# comment\n- name: a\n  match:\n    path: /a   # same\n  to: svc\n- name: b\n  canary: { split: { svc: 1, other: 3 } }\n";
    let after = fingerprints(relaid);
    assert_eq!(after[0], original[0]);
    assert_ne!(after[1], original[1], "an edited weight changes the route");

    // Moving a route keeps it; editing it changes it.
    let moved = "- name: b\n  canary: { split: { svc: 1, other: 2 } }\n- name: a\n  match: { path: /a }\n  to: svc\n";
    assert_eq!(
        fingerprints(moved),
        vec![original[1].clone(), original[0].clone()]
    );
    let edited = "- name: a\n  match: { path: /a, methods: [GET] }\n  to: svc\n- name: b\n  canary: { split: { svc: 1, other: 2 } }\n";
    let after = fingerprints(edited);
    assert_ne!(after[0], original[0]);
    assert_eq!(after[1], original[1]);
}

#[test]
fn migration_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/migration.yaml");
    let table = match crate::load_file(&path) {
        Ok(table) => table,
        Err(errors) => panic!("{errors}"),
    };
    assert!(table.warnings().is_empty(), "{:?}", table.warnings());
    let modes: Vec<&str> = table
        .routes()
        .iter()
        .map(|route| match route.action {
            Action::Forward(_) => "to",
            Action::Respond(_) => "respond",
            Action::Shadow(_) => "shadow",
            Action::Canary(_) => "canary",
        })
        .collect();
    assert_eq!(modes, ["shadow", "canary", "to", "to"]);
    let catalog = table.route("catalog").unwrap();
    assert_eq!(catalog.fallback, table.upstream_id("monolith"));
    let Action::Canary(canary) = &catalog.action else {
        panic!("catalog is not a canary")
    };
    assert_eq!(canary.baseline, table.upstream_id("monolith").unwrap());
    assert_eq!(
        table.route("payroll-form").unwrap().max_body_match,
        16 << 10
    );
}
