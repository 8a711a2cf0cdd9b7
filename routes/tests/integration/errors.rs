//! Every error class names file, line and key; all are reported in one pass.

use std::path::Path;

use strangler_routes::{ConfigError, load_file, parse_str};

use super::support::{errors, table};

const UPSTREAMS: &str = "upstreams:\n  monolith: { url: \"http://127.0.0.1:8000\" }\n  svc:\n    url: http://127.0.0.1:9000\ndefault: monolith\n";

fn with_routes(routes: &str) -> String {
    format!("{UPSTREAMS}routes:\n{routes}")
}

/// Asserts exactly one error, at `line` and `key`, whose message contains `needle`.
fn single(yaml: &str, line: usize, key: &str, needle: &str) -> ConfigError {
    let errors = errors(yaml);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    let error = errors.into_iter().next().unwrap();
    assert_eq!(error.file, Path::new("routes.yaml"));
    assert_eq!(error.key, key, "{error}");
    assert_eq!(error.line, Some(line), "{error}");
    assert!(error.message.contains(needle), "{error}");
    error
}

#[test]
fn only_upstreams_and_default_is_valid() {
    let table = table(UPSTREAMS);
    assert!(table.routes().is_empty());
    assert_eq!(table.upstream(table.default_upstream()).name, "monolith");
    let table = self::table(&format!("{UPSTREAMS}routes: []\n"));
    assert!(table.routes().is_empty());
    assert_eq!(table.version().len(), 64);
}

#[test]
fn unknown_key_in_route_match() {
    // line 7 is `- name: a`, 8 is the match block, 9 the typo.
    let yaml = with_routes("- name: a\n  match:\n    pth: /x\n  to: svc\n");
    let error = single(&yaml, 9, "routes[0].match.pth", "unknown field `pth`");
    assert_eq!(
        error
            .to_string()
            .lines()
            .next()
            .unwrap()
            .split(": unknown")
            .next()
            .unwrap(),
        "routes.yaml:9: routes[0] (a).match.pth"
    );
}

/// A value of the wrong shape is reported at its own key and line, with the route's
/// name, in words of the file (no Rust type names); the other routes are still checked.
#[test]
fn wrong_types_name_their_key_and_line_in_plain_words() {
    let yaml = with_routes(concat!(
        "- name: a\n  match: { headers: { a: [1, 2] } }\n  to: svc\n",
        "- name: b\n  match:\n    headers: { x: { present: \"yes\" } }\n  to: svc\n",
        "- name: c\n  match:\n    query: { v: [1] }\n  to: svc\n",
        "- name: y\n  match: { path: /y, methods: GET }\n  to: svc\n",
        "- match: /x\n  to: svc\n",
        "- name: z\n  to: nowhere\n",
    ));
    let got: Vec<String> = errors(&yaml).iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "routes.yaml:8: routes[0] (a).match.headers.a: expected a header value like \"true\", { regex: ... } or { present: true|false } (found a list)",
            "routes.yaml:12: routes[1] (b).match.headers.x.present: expected true or false (found `yes`)",
            "routes.yaml:16: routes[2] (c).match.query.v: expected a single value (text, a number or true/false), like \"2\" (found a list)",
            "routes.yaml:19: routes[3] (y).match.methods: expected a list of methods, like [GET, POST] (found `GET`)",
            "routes.yaml:21: routes[4].match: expected a mapping of predicates, like { path_prefix: /invoices } (found `/x`)",
            "routes.yaml:24: routes[5] (z).to: unknown upstream `nowhere` (defined: monolith, svc)",
        ]
    );
}

/// (file, the one error it has): wrong shapes outside `match`.
const WRONG_TYPES: &[(&str, &str)] = &[
    (
        "upstreams:\n  monolith: { url: \"http://h:1\" }\n  n: \"http://a\"\ndefault: monolith\n",
        "routes.yaml:3: upstreams.n: expected a mapping with url, like { url: \"http://host:port\" } (found `http://a`)",
    ),
    (
        "upstreams:\n  n:\n    url: http://a\n    tls: yes\ndefault: n\n",
        "routes.yaml:4: upstreams.n.tls: expected a mapping, like { ca: ca.pem, server_name: host } (found `yes`)",
    ),
    (
        "upstreams:\n  n: { url: \"http://a\" }\ndefault: [n]\n",
        "routes.yaml:3: default: expected an upstream name, like monolith (found a list)",
    ),
    (
        "upstreams:\n  n: { url: \"http://a\" }\ndefault: n\nroutes:\n- name: a\n  to: [n]\n",
        "routes.yaml:6: routes[0] (a).to: expected an upstream name, like monolith (found a list)",
    ),
    (
        "upstreams:\n  n: { url: \"http://a\" }\ndefault: n\nroutes:\n- name: a\n  canary:\n    split: [n, n]\n",
        "routes.yaml:7: routes[0] (a).canary.split: expected a mapping of upstream to weight, like { monolith: 90, invoices: 10 } (found a list)",
    ),
    (
        "upstreams:\n  n: { url: \"http://a\" }\ndefault: n\nroutes:\n- name: a\n  to: n\n  hooks: plugins/a.lua\n",
        "routes.yaml:7: routes[0] (a).hooks: expected a list of hooks, like [plugins/auth.lua] (found `plugins/a.lua`)",
    ),
    (
        "upstreams:\n  n: { url: \"http://a\" }\ndefault: n\nroutes:\n- name: a\n  shadow:\n    primary: n\n    candidate: n\n    compare: { ignore_headers: date }\n",
        "routes.yaml:9: routes[0] (a).shadow.compare.ignore_headers: expected a list of header names, like [date, x-request-id] (found `date`)",
    ),
    (
        "upstreams:\n  n: { url: \"http://a\" }\ndefault: n\nroutes:\n- name: a\n  match:\n    methods: [GET, [POST]]\n  to: n\n",
        "routes.yaml:7: routes[0] (a).match.methods[1]: expected a method, like GET (found a list)",
    ),
    (
        "upstreams:\n  n: { url: \"http://a\" }\ndefault: n\nroutes:\n- name: a\n  respond:\n    status: 200\n    headers: [x]\n",
        "routes.yaml:8: routes[0] (a).respond.headers: expected a mapping of header name to value, like { content-type: \"text/plain\" } (found a list)",
    ),
];

#[test]
fn wrong_types_outside_match_are_plain_words_too() {
    for (yaml, expected) in WRONG_TYPES {
        let got: Vec<String> = errors(yaml).iter().map(ToString::to_string).collect();
        assert_eq!(got, [*expected], "{yaml}");
    }
}

#[test]
fn unknown_key_in_flow_mapping_and_upstream_and_top_level() {
    let yaml = "upstreams:\n  monolith: { url: \"http://h:1\", timout: 1s }\ndefault: monolith\nroute: []\n";
    let errors = errors(yaml);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(errors[0].key, "upstreams.monolith.timout");
    assert_eq!(errors[0].line, Some(2));
    assert_eq!(errors[1].key, "route");
    assert_eq!(errors[1].line, Some(4));
    assert!(errors[1].message.contains("unknown key `route`"));
}

#[test]
fn unknown_upstream_reference() {
    let yaml = with_routes("- name: a\n  to: nowhere\n");
    let error = single(&yaml, 8, "routes[0].to", "unknown upstream `nowhere`");
    assert_eq!(error.route.as_deref(), Some("a"));
    assert!(
        error
            .to_string()
            .starts_with("routes.yaml:8: routes[0] (a).to: unknown upstream")
    );
    let yaml = with_routes("- name: a\n  to: svc\n  fallback: gone\n  rollback_to: gone2\n");
    let errors = errors(&yaml);
    assert_eq!(errors.len(), 2);
    assert_eq!(
        (errors[0].key.as_str(), errors[0].line),
        ("routes[0].fallback", Some(9))
    );
    assert_eq!(
        (errors[1].key.as_str(), errors[1].line),
        ("routes[0].rollback_to", Some(10))
    );
}

/// A `to` route's fallback replays a failed request: to the same upstream it would
/// meet the same failure (and repeat a POST's side effects there).
#[test]
fn a_fallback_is_another_upstream_than_to() {
    let error = single(
        &with_routes("- name: y\n  to: svc\n  fallback: svc\n"),
        9,
        "routes[0].fallback",
        "must differ from `to`",
    );
    assert_eq!(
        error.to_string(),
        "routes.yaml:9: routes[0] (y).fallback: `fallback` must differ from `to` (both are `svc`): a failed request would be replayed to the upstream that just failed it"
    );
    // A canary's fallback covers its other sides, so it may be part of the split.
    let table = table(&with_routes(
        "- name: a\n  to: svc\n  fallback: monolith\n- name: c\n  canary: { split: { monolith: 9, svc: 1 } }\n  fallback: monolith\n",
    ));
    assert_eq!(table.routes().len(), 2);
}

/// Metrics and logs label unmatched requests route="default" and the proxy's own answers
/// upstream="respond": a route or upstream of that name would be counted with them.
#[test]
fn names_that_metrics_reserve_are_errors() {
    let error = single(
        &with_routes("- name: default\n  to: svc\n"),
        7,
        "routes[0].name",
        "reserved",
    );
    assert_eq!(
        error.to_string(),
        "routes.yaml:7: routes[0] (default).name: route name `default` is reserved: metrics and logs say route=\"default\" for requests that no route matched"
    );
    let error = single(
        "upstreams:\n  monolith: { url: \"http://h:1\" }\n  respond: { url: \"http://h:2\" }\ndefault: monolith\n",
        3,
        "upstreams.respond",
        "reserved",
    );
    assert_eq!(
        error.to_string(),
        "routes.yaml:3: upstreams.respond: upstream name `respond` is reserved: metrics and logs say upstream=\"respond\" for answers the proxy gave itself"
    );
    // The other label values are ordinary names.
    table(
        "upstreams:\n  default: { url: \"http://h:1\" }\ndefault: default\nroutes:\n- name: respond\n  respond: { status: 204 }\n",
    );
}

/// Extension methods are legal HTTP, so an unknown method is no error; but a typo would
/// never match, so it is a warning, named like an error.
#[test]
fn a_nonstandard_method_is_a_warning_at_its_key() {
    let table = table(&with_routes(
        "- name: y\n  match: { path: /y, methods: [get, GETT, \"3\"] }\n  to: svc\n- name: z\n  match:\n    path: /z\n    methods:\n      - PATCH\n      - propfind\n  to: svc\n- name: w\n  match: { path: /z, methods: [patch] }\n  to: svc\n",
    ));
    let got: Vec<String> = table.warnings().iter().map(ToString::to_string).collect();
    let standard = "(standard: GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH)";
    assert_eq!(
        got,
        [
            format!(
                "routes.yaml:8: warning: routes[0] (y).match.methods[1]: method `GETT` is not a standard method; a typo would never match {standard}"
            ),
            format!(
                "routes.yaml:8: warning: routes[0] (y).match.methods[2]: method `3` is not a standard method; a typo would never match {standard}"
            ),
            format!(
                "routes.yaml:15: warning: routes[1] (z).match.methods[1]: method `PROPFIND` is not a standard method; a typo would never match {standard}"
            ),
            "routes.yaml:17: warning: routes[2] (w): unreachable: earlier route `z` (line 10, PATCH,PROPFIND path=/z) matches every request this route matches".to_owned(),
        ]
    );
}

#[test]
fn duplicate_route_name() {
    let yaml = with_routes("- name: a\n  to: svc\n- name: a\n  to: svc\n");
    single(
        &yaml,
        9,
        "routes[1].name",
        "duplicate route name `a` (first used on line 7)",
    );
}

/// A key written twice is reported at its second occurrence, not where its mapping
/// starts (which is where the YAML parser places it).
#[test]
fn duplicate_keys_are_reported_where_they_repeat() {
    let cases = [
        (
            with_routes("- name: y\n  to: svc\n  match: { path: /a }\n  to: monolith\n"),
            "routes.yaml:10: routes[0].to: duplicate key `to` (first given on line 8)",
        ),
        (
            with_routes(
                "- name: x\n  to: svc\n- name: y\n  match: { path: /a,\n    path: /b }\n  to: svc\n",
            ),
            "routes.yaml:11: routes[1].match.path: duplicate key `path` (first given on line 10)",
        ),
        (
            "upstreams:\n  n: { url: \"http://a\" }\n  n: { url: \"http://b\" }\ndefault: n\n"
                .to_owned(),
            "routes.yaml:3: upstreams.n: duplicate key `n` (first given on line 2)",
        ),
        (
            "upstreams:\n  n: { url: \"http://a\" }\ndefault: n\ndefault: n\n".to_owned(),
            "routes.yaml:4: default: duplicate key `default` (first given on line 3)",
        ),
    ];
    for (yaml, expected) in cases {
        let got: Vec<String> = errors(&yaml).iter().map(ToString::to_string).collect();
        assert_eq!(got, [expected], "{yaml}");
    }
}

#[test]
fn bad_units() {
    let yaml = "upstreams:\n  m:\n    url: http://h:1\n    timeout: 10\n    connect_timeout: 5parsecs\ndefault: m\n";
    let errors = errors(yaml);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(
        (errors[0].key.as_str(), errors[0].line),
        ("upstreams.m.timeout", Some(4))
    );
    assert!(errors[0].message.contains("no unit"), "{}", errors[0]);
    assert_eq!(errors[1].key, "upstreams.m.connect_timeout");
    assert_eq!(errors[1].line, Some(5));
}

#[test]
fn percent_and_size_parsers_reject_bad_values() {
    use strangler_routes::units::{parse_percent, parse_size};
    assert!(parse_percent("120%").is_err());
    assert!(parse_size("12").is_err());
}

#[test]
fn invalid_regex() {
    let yaml = with_routes("- name: payroll\n  match: { path_regex: \"/pay(roll\" }\n  to: svc\n");
    let error = single(&yaml, 8, "routes[0].match.path_regex", "invalid regex");
    assert!(!error.message.contains('\n'));
    assert!(
        error
            .to_string()
            .starts_with("routes.yaml:8: routes[0] (payroll).match.path_regex: invalid regex")
    );
}

#[test]
fn missing_default() {
    let yaml = "upstreams:\n  m: { url: \"http://h:1\" }\n";
    let errors = errors(yaml);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key, "default");
    assert!(errors[0].message.contains("missing required key `default`"));
    let yaml = "upstreams:\n  m: { url: \"http://h:1\" }\ndefault: x\n";
    single(yaml, 3, "default", "unknown upstream `x`");
}

#[test]
fn both_to_and_respond_and_neither() {
    let yaml = with_routes("- name: a\n  to: svc\n  respond: { status: 200 }\n- name: b\n");
    let errors = errors(&yaml);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!(
        (errors[0].key.as_str(), errors[0].line),
        ("routes[0].respond", Some(9))
    );
    assert!(errors[0].message.contains("mutually exclusive"));
    assert_eq!(
        (errors[1].key.as_str(), errors[1].line),
        ("routes[1]", Some(10))
    );
    assert!(errors[1].message.contains("missing action"));
}

#[test]
fn many_errors_in_one_pass_in_file_order() {
    let yaml = "upstreams:\n  m:\n    url: ftp://h\n    idle_timeout: soon\ndefault: m\nroutes:\n- name: bad name\n  match: { methods: [\"G T\"], path: nope }\n  to: m\n- name: ok\n  match: { headers: { x: { regex: \"(\" } } }\n  respond: { status: 99 }\n- name: typo\n  too: m\n";
    let errors = errors(yaml);
    let got: Vec<(&str, Option<usize>)> = errors.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        got,
        vec![
            ("upstreams.m.url", Some(3)),
            ("upstreams.m.idle_timeout", Some(4)),
            ("routes[0].name", Some(7)),
            ("routes[0].match.path", Some(8)),
            ("routes[0].match.methods[0]", Some(8)),
            ("routes[1].match.headers.x.regex", Some(11)),
            ("routes[1].respond.status", Some(12)),
            ("routes[2].too", Some(14)),
        ],
        "{errors:#?}"
    );
}

#[test]
fn syntax_error_has_a_line() {
    let errors = errors("upstreams:\n  m: { url: \"http://h:1\"\ndefault: m\n");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key, "yaml");
    assert!(errors[0].line.is_some(), "{:?}", errors[0]);
}

#[test]
fn upstream_urls_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "pem").unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        "upstreams:\n  a: { url: \"https://svc.internal:8443/base/\", tls: { ca: ca.pem, server_name: svc }, http2: true, host: rewrite }\n  b: { url: \"https://x\", tls: { ca: missing.pem } }\ndefault: a\n",
    )
    .unwrap();
    let errors = load_file(&file).unwrap_err().errors;
    assert_eq!(errors.len(), 1);
    assert_eq!(
        (errors[0].key.as_str(), errors[0].line),
        ("upstreams.b.tls.ca", Some(3))
    );
    assert!(errors[0].message.contains("does not exist"));

    std::fs::write(&file, "upstreams:\n  a: { url: \"https://svc.internal:8443/base/\", tls: { ca: ca.pem, server_name: svc }, http2: true, host: rewrite }\ndefault: a\n").unwrap();
    let table = load_file(&file).unwrap();
    let a = table.upstream(table.upstream_id("a").unwrap());
    assert_eq!(a.authority.as_str(), "svc.internal:8443");
    assert_eq!(a.base_path, "/base");
    assert!(a.http2 && a.host_rewrite);
    assert_eq!(a.max_connections, 1024);
    assert_eq!(a.timeout, std::time::Duration::from_secs(30));
    assert_eq!(a.idle_timeout, std::time::Duration::from_secs(50));
    let tls = a.tls.as_ref().unwrap();
    assert_eq!(tls.ca.as_deref(), Some(dir.path().join("ca.pem").as_path()));
    assert_eq!(tls.server_name.as_deref(), Some("svc"));
    assert_eq!(
        table.watched_files(),
        vec![file.clone(), dir.path().join("ca.pem")]
    );

    for (url, needle) in [
        ("ftp://h", "scheme"),
        ("h:80", "scheme"),
        ("http://u:p@h", "credentials"),
        ("http://h/?q=1", "query"),
    ] {
        let yaml = format!("upstreams:\n  a: {{ url: \"{url}\" }}\ndefault: a\n");
        single(&yaml, 2, "upstreams.a.url", needle);
    }
}

#[test]
fn upstream_url_with_an_invalid_port_is_an_error_at_its_url() {
    for (url, needle) in [
        ("http://host:port/base", "invalid port `port`"),
        ("http://h:99999", "invalid port `99999`"),
        ("https://h:-1", "invalid port `-1`"),
        ("http://[::1]:x", "invalid port `x`"),
        ("http://h:", "invalid port ``"),
        ("http://h:0", "port 0"),
    ] {
        let yaml = format!("upstreams:\n  a: {{ url: \"{url}\" }}\ndefault: a\n");
        let error = single(&yaml, 2, "upstreams.a.url", needle);
        assert!(error.message.contains(url), "{error}");
    }
    for (url, authority) in [
        ("http://h:65535/base", "h:65535"),
        ("http://[::1]:8080", "[::1]:8080"),
        ("https://h", "h"),
    ] {
        let yaml = format!("upstreams:\n  a: {{ url: \"{url}\" }}\ndefault: a\n");
        let table = table(&yaml);
        let a = table.upstream(table.upstream_id("a").unwrap());
        assert_eq!(a.authority.as_str(), authority);
    }
}

#[test]
fn unreadable_file() {
    let errors = load_file(Path::new("/nonexistent/routes.yaml")).unwrap_err();
    assert_eq!(errors.errors.len(), 1);
    assert_eq!(errors.errors[0].key, "file");
    assert!(
        errors
            .to_string()
            .starts_with("/nonexistent/routes.yaml: file: cannot read")
    );
}

#[test]
fn rewrite_needs_to_and_template_rules() {
    let yaml = with_routes(
        "- name: a\n  respond: { status: 200 }\n  rewrite: { prefix: /x }\n- name: b\n  match: { path: \"/a/x{id}\" }\n  to: svc\n- name: c\n  match: { path: /a, path_prefix: /b }\n  to: svc\n",
    );
    let errors = errors(&yaml);
    let got: Vec<(&str, Option<usize>)> = errors.iter().map(|e| (e.key.as_str(), e.line)).collect();
    assert_eq!(
        got,
        vec![
            ("routes[0].rewrite", Some(9)),
            ("routes[1].match.path", Some(11)),
            ("routes[2].match.path_prefix", Some(14)),
        ]
    );
}

/// A route answers with a final status: a 101 from the file would switch the client's
/// connection to another protocol.
#[test]
fn a_respond_status_is_a_final_one() {
    single(
        &with_routes("- name: a\n  match: { path: /x }\n  respond: { status: 101 }\n"),
        9,
        "routes[0].respond.status",
        "expected 200 to 599",
    );
    let table = self::table(&with_routes(
        "- name: a\n  match: { path: /x }\n  respond: { status: 204 }\n",
    ));
    assert_eq!(table.routes().len(), 1);
}

/// Some editors and generators start a file with a byte order mark: it is not content, and
/// line numbers do not move; the version still hashes the file as it is.
#[test]
fn a_byte_order_mark_is_not_content() {
    let marked = format!("\u{feff}{UPSTREAMS}");
    let table = self::table(&marked);
    assert_eq!(table.upstream(table.default_upstream()).name, "monolith");
    assert_ne!(table.version(), self::table(UPSTREAMS).version());
    single(
        &format!(
            "\u{feff}{}",
            with_routes("- name: a\n  match: { path: /x }\n  to: nowhere\n")
        ),
        9,
        "routes[0].to",
        "unknown upstream",
    );
}

#[test]
fn version_is_sha256_of_bytes() {
    let table = parse_str(Path::new("r.yaml"), UPSTREAMS).unwrap();
    let other = parse_str(Path::new("r.yaml"), &format!("{UPSTREAMS}\n")).unwrap();
    assert_ne!(table.version(), other.version());
    assert_eq!(table.source(), Path::new("r.yaml"));
}
