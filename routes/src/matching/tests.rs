//! Routing on request bodies: `find`, `body_limit`, `explain` and the lint.

use std::path::Path;

use http::{HeaderMap, HeaderValue, Method};

use crate::{RequestView, RouteTable, parse_str};

const TABLE: &str = r#"upstreams:
  monolith: { url: "http://127.0.0.1:8000" }
  payroll: { url: "http://127.0.0.1:9000" }
  orders: { url: "http://127.0.0.1:9001" }
default: monolith
routes:
  - name: payroll-form
    match: { path: /app.do, methods: [POST], form: { action: payroll } }
    to: payroll
    max_body_match: 8KiB
  - name: app-get
    match: { path: /app.do, methods: [GET] }
    to: monolith
  - name: orders-json
    match:
      path_prefix: /api/orders
      json: { "/order/total": 10, "/order/items/0/sku": "a-1", "/express": true }
    to: orders
    max_body_match: 32KiB
  - name: orders-null
    match: { path_prefix: /api/orders, json: { "/customer": null } }
    to: orders
    max_body_match: 4KiB
  - name: api
    match: { path_prefix: /api }
    to: monolith
"#;

fn table() -> RouteTable {
    match parse_str(Path::new("routes.yaml"), TABLE) {
        Ok(table) => table,
        Err(errors) => panic!("{errors}"),
    }
}

struct Req {
    method: Method,
    path: &'static str,
    headers: HeaderMap,
    body: Option<&'static [u8]>,
}

fn req(
    method: &str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Option<&'static str>,
) -> Req {
    let mut headers = HeaderMap::new();
    if let Some(content_type) = content_type {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
    }
    Req {
        method: Method::from_bytes(method.as_bytes()).unwrap(),
        path,
        headers,
        body: body.map(str::as_bytes),
    }
}

impl Req {
    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            path: self.path,
            query: None,
            host: None,
            headers: &self.headers,
            body: self.body,
        }
    }
}

const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
const JSON: Option<&str> = Some("application/json");

#[test]
fn body_predicates_route_requests() {
    let table = table();
    let cases = [
        (
            req("POST", "/app.do", FORM, Some("action=payroll&x=1")),
            Some("payroll-form"),
        ),
        (
            req("POST", "/app.do", FORM, Some("x=1&action=pay%72oll")),
            Some("payroll-form"),
        ),
        (req("POST", "/app.do", FORM, Some("action=payroll+x")), None),
        (req("POST", "/app.do", FORM, Some("action=invoices")), None),
        (req("POST", "/app.do", JSON, Some("action=payroll")), None),
        (req("POST", "/app.do", FORM, None), None),
        (req("GET", "/app.do", None, None), Some("app-get")),
        (
            req(
                "POST",
                "/api/orders",
                JSON,
                Some(r#"{"express":true,"order":{"total":10.0,"items":[{"sku":"a-1"}]}}"#),
            ),
            Some("orders-json"),
        ),
        (
            req(
                "POST",
                "/api/orders/7",
                None,
                Some(r#"{"order":{"total":1e1,"items":[{"sku":"a-1"},{}]},"express":true}"#),
            ),
            Some("orders-json"),
        ),
        (
            req(
                "POST",
                "/api/orders",
                JSON,
                Some(r#"{"express":true,"order":{"total":"10","items":[{"sku":"a-1"}]}}"#),
            ),
            Some("api"),
        ),
        (
            req(
                "POST",
                "/api/orders",
                JSON,
                Some(r#"{"express":true,"order":{"total":10.5,"items":[{"sku":"a-1"}]}}"#),
            ),
            Some("api"),
        ),
        (
            req("POST", "/api/orders", JSON, Some(r#"{"customer": null}"#)),
            Some("orders-null"),
        ),
        (
            req("POST", "/api/orders", JSON, Some(r#"{"customer": {}}"#)),
            Some("api"),
        ),
        (
            req("POST", "/api/orders", JSON, Some("{not json")),
            Some("api"),
        ),
        (req("POST", "/api/orders", JSON, None), Some("api")),
        (req("GET", "/other", None, None), None),
    ];
    for (request, expected) in cases {
        let view = request.view();
        let found = table.find(&view).map(|route| route.name.as_str());
        let explained = table.explain(&view).chosen;
        assert_eq!(
            found,
            expected,
            "{} {} {:?}",
            request.method,
            request.path,
            request.body.map(String::from_utf8_lossy)
        );
        assert_eq!(explained.as_deref(), expected, "explain agrees with find");
    }
}

#[test]
fn body_limit_only_when_a_body_predicate_could_decide() {
    let table = table();
    let cases = [
        // A form route comes first and its other predicates hold.
        (req("POST", "/app.do", FORM, None), Some(8 << 10)),
        // Not a form: the form route cannot match, nothing else needs the body.
        (req("POST", "/app.do", JSON, None), None),
        // An earlier route without body predicates already matches.
        (req("GET", "/app.do", FORM, None), None),
        // Two JSON routes before `api`: the larger limit.
        (req("PUT", "/api/orders/1", None, None), Some(32 << 10)),
        // Only `api` is a candidate.
        (req("POST", "/api/users", JSON, None), None),
        (req("GET", "/nothing", None, None), None),
    ];
    for (request, expected) in cases {
        assert_eq!(
            table.body_limit(&request.view()),
            expected,
            "{} {}",
            request.method,
            request.path
        );
    }
    let plain = parse_str(
        Path::new("routes.yaml"),
        "upstreams: { m: { url: \"http://127.0.0.1:1\" } }\ndefault: m\nroutes:\n  - name: a\n    match: { path_prefix: /a }\n    to: m\n  - name: any\n    to: m\n",
    )
    .unwrap();
    for path in ["/a", "/b", "/"] {
        let request = req("POST", path, FORM, None);
        assert_eq!(plain.body_limit(&request.view()), None, "{path}");
    }
}

#[test]
fn explain_says_why_a_body_predicate_failed() {
    let table = table();
    let reason =
        |request: Req, route: usize| table.explain(&request.view()).steps[route].reason.clone();
    let cases = [
        (
            req("POST", "/app.do", FORM, Some("action=invoices")),
            0,
            "form field action is invoices, not payroll",
        ),
        (
            req("POST", "/app.do", FORM, Some("x=1")),
            0,
            "form field action missing (expected payroll)",
        ),
        (
            req("POST", "/app.do", FORM, None),
            0,
            "body not buffered (needed for form field action)",
        ),
        (
            req("POST", "/app.do", None, None),
            0,
            "content-type missing",
        ),
        (
            req("POST", "/app.do", JSON, None),
            0,
            "content-type \"application/json\" is not a form",
        ),
        (
            req("POST", "/api/orders", JSON, Some("{")),
            2,
            "body unparsable: not valid JSON",
        ),
        (
            req(
                "POST",
                "/api/orders",
                JSON,
                Some(r#"{"express":false,"order":{"total":10,"items":[{"sku":"a-1"}]}}"#),
            ),
            2,
            "json /express is false, not true",
        ),
        (
            req("POST", "/api/orders", JSON, Some("{}")),
            2,
            "json /express missing (expected true)",
        ),
    ];
    for (request, route, expected) in cases {
        let got = reason(request, route);
        assert!(
            got.starts_with(expected),
            "{got:?} does not start with {expected:?}"
        );
    }
}

#[test]
fn lint_does_not_flag_routes_that_differ_by_body() {
    let yaml = r#"upstreams: { m: { url: "http://127.0.0.1:1" }, n: { url: "http://127.0.0.1:2" } }
default: m
routes:
  - name: form-a
    match: { path: /app.do, form: { action: a } }
    to: n
  - name: form-b
    match: { path: /app.do, form: { action: b } }
    to: n
  - name: json-a
    match: { path: /app.do, json: { "/a": 1 } }
    to: n
  - name: rest
    match: { path: /app.do }
    to: m
  - name: after-rest
    match: { path: /app.do, json: { "/b": 1 } }
    to: n
"#;
    let table = parse_str(Path::new("routes.yaml"), yaml).unwrap();
    let flagged: Vec<_> = table
        .warnings()
        .iter()
        .filter_map(|w| w.route.clone())
        .collect();
    // Only the route behind a body-less catch-all is unreachable.
    assert_eq!(flagged, ["after-rest"]);
}
