//! Each predicate on its own.

use strangler_routes::{Action, RouteTable};

use super::support::{Req, route_for, table};

fn one_route(matcher: &str) -> RouteTable {
    table(&format!(
        "upstreams:\n  m: {{ url: \"http://h:1\" }}\ndefault: m\nroutes:\n- name: r\n  match: {matcher}\n  to: m\n"
    ))
}

fn check(table: &RouteTable, cases: &[(Req, bool)]) {
    for (req, expected) in cases {
        let got = route_for(table, req).is_some();
        assert_eq!(
            got, *expected,
            "{} {} {:?} {:?}",
            req.method, req.path, req.query, req.headers
        );
    }
}

#[test]
fn path_prefix_is_segment_aware() {
    let table = one_route("{ path_prefix: /invoices }");
    let cases = [
        (Req::new("GET", "/invoices"), true),
        (Req::new("GET", "/invoices/"), true),
        (Req::new("GET", "/invoices/1"), true),
        (Req::new("GET", "/invoices/1/lines"), true),
        (Req::new("GET", "/invoicesX"), false),
        (Req::new("GET", "/invoice"), false),
        (Req::new("GET", "/"), false),
        (Req::new("GET", "/x/invoices"), false),
        (Req::new("GET", "/Invoices"), false),
    ];
    check(&table, &cases);
    let trailing = one_route("{ path_prefix: /invoices/ }");
    check(&trailing, &cases);
    let root = one_route("{ path_prefix: / }");
    check(
        &root,
        &[
            (Req::new("GET", "/"), true),
            (Req::new("GET", "/anything/at/all"), true),
        ],
    );
}

#[test]
fn exact_path() {
    let table = one_route("{ path: /orders }");
    check(
        &table,
        &[
            (Req::new("POST", "/orders"), true),
            (Req::new("POST", "/orders/"), false),
            (Req::new("POST", "/orders/1"), false),
            (Req::new("POST", "/order"), false),
        ],
    );
    let root = one_route("{ path: / }");
    check(
        &root,
        &[(Req::new("GET", "/"), true), (Req::new("GET", "/a"), false)],
    );
    let slash = one_route("{ path: /a/ }");
    check(
        &slash,
        &[
            (Req::new("GET", "/a/"), true),
            (Req::new("GET", "/a"), false),
        ],
    );
}

#[test]
fn templates_match_one_nonempty_segment() {
    let table = one_route("{ path: \"/payroll/{id}\" }");
    check(
        &table,
        &[
            (Req::new("GET", "/payroll/7"), true),
            (Req::new("GET", "/payroll/abc-def"), true),
            (Req::new("GET", "/payroll/"), false),
            (Req::new("GET", "/payroll"), false),
            (Req::new("GET", "/payroll/7/x"), false),
            (Req::new("GET", "/payroll/7/"), false),
        ],
    );
    let two = one_route("{ path: \"/u/{user}/orders/{order}\" }");
    check(
        &two,
        &[
            (Req::new("GET", "/u/1/orders/2"), true),
            (Req::new("GET", "/u/1/orders"), false),
            (Req::new("GET", "/u/1/items/2"), false),
        ],
    );
}

#[test]
fn regex_is_anchored() {
    let table = one_route("{ path_regex: \"/api/v[0-9]+/users\" }");
    check(
        &table,
        &[
            (Req::new("GET", "/api/v2/users"), true),
            (Req::new("GET", "/api/v2/users/1"), false),
            (Req::new("GET", "/x/api/v2/users"), false),
        ],
    );
    let alternation = one_route("{ path_regex: \"/a|/b\" }");
    check(
        &alternation,
        &[
            (Req::new("GET", "/a"), true),
            (Req::new("GET", "/b"), true),
            (Req::new("GET", "/ab"), false),
        ],
    );
}

#[test]
fn methods_are_case_insensitive_in_the_file() {
    let table = one_route("{ methods: [get, Post] }");
    check(
        &table,
        &[
            (Req::new("GET", "/"), true),
            (Req::new("POST", "/x"), true),
            (Req::new("PUT", "/x"), false),
        ],
    );
    assert_eq!(table.routes()[0].match_summary, "GET,POST");
}

#[test]
fn host_exact_and_wildcard() {
    let table = one_route("{ host: API.example.com }");
    check(
        &table,
        &[
            (Req::new("GET", "/").host("api.example.com"), true),
            (Req::new("GET", "/").host("Api.Example.com:8080"), true),
            (Req::new("GET", "/").host("x.api.example.com"), false),
            (Req::new("GET", "/"), false),
        ],
    );
    let wildcard = one_route("{ host: \"*.example.com\" }");
    check(
        &wildcard,
        &[
            (Req::new("GET", "/").host("a.example.com"), true),
            (Req::new("GET", "/").host("a.b.example.com:443"), true),
            (Req::new("GET", "/").host("example.com"), false),
            (Req::new("GET", "/").host("aexample.com"), false),
        ],
    );
}

#[test]
fn headers_exact_regex_present() {
    let table = one_route(
        "{ headers: { x-beta: \"true\", user-agent: { regex: \"curl/.*\" }, x-debug: { present: false }, Authorization: { present: true } } }",
    );
    let ok = || {
        Req::new("GET", "/")
            .header("x-beta", "true")
            .header("user-agent", "curl/8.0")
            .header("authorization", "Bearer x")
    };
    check(
        &table,
        &[
            (ok(), true),
            (ok().header("x-beta", "false"), true),
            (ok().header("x-debug", "1"), false),
            (
                Req::new("GET", "/")
                    .header("x-beta", "true")
                    .header("user-agent", "curl/8.0"),
                false,
            ),
            (
                Req::new("GET", "/")
                    .header("x-beta", "TRUE")
                    .header("user-agent", "curl/8")
                    .header("authorization", "x"),
                false,
            ),
            (
                Req::new("GET", "/")
                    .header("x-beta", "true")
                    .header("user-agent", "xcurl/8")
                    .header("authorization", "x"),
                false,
            ),
        ],
    );
}

#[test]
fn query_is_decoded_and_cookie_exact() {
    let table = one_route("{ query: { v: \"2\", q: \"a b/c\" } }");
    check(
        &table,
        &[
            (Req::new("GET", "/?v=2&q=a%20b%2Fc"), true),
            (Req::new("GET", "/?q=a+b/c&x=1&v=2"), true),
            (Req::new("GET", "/?%76=2&q=a%20b/c"), true),
            (Req::new("GET", "/?v=20&q=a%20b/c"), false),
            (Req::new("GET", "/?v=2"), false),
            (Req::new("GET", "/"), false),
        ],
    );
    let cookie = one_route("{ cookie: { beta: \"1\" } }");
    check(
        &cookie,
        &[
            (Req::new("GET", "/").header("cookie", "a=b; beta=1"), true),
            (
                Req::new("GET", "/")
                    .header("cookie", "a=b")
                    .header("cookie", "beta=1"),
                true,
            ),
            (Req::new("GET", "/").header("cookie", "beta=12"), false),
            (Req::new("GET", "/").header("cookie", "xbeta=1"), false),
            (Req::new("GET", "/"), false),
        ],
    );
}

#[test]
fn explain_says_why() {
    let table = table(
        "upstreams:\n  m: { url: \"http://h:1\" }\n  inv: { url: \"http://h:2\" }\ndefault: m\nroutes:\n- name: invoices\n  match: { path_prefix: /invoices }\n  to: inv\n- name: beta\n  match: { path_prefix: /payroll, headers: { x-beta: \"true\" } }\n  to: inv\n- name: fixed\n  match: { path: \"/payroll/{id}\", methods: [GET] }\n  respond: { status: 418, body: teapot, headers: { x-a: b } }\n",
    );
    let req = Req::new("GET", "/payroll/x");
    let explanation = table.explain(&req.view());
    assert_eq!(explanation.chosen.as_deref(), Some("fixed"));
    assert_eq!(explanation.upstream, "respond");
    let reasons: Vec<&str> = explanation
        .steps
        .iter()
        .map(|s| s.reason.as_str())
        .collect();
    assert_eq!(
        reasons[0],
        "path /payroll/x does not match path_prefix /invoices"
    );
    assert_eq!(reasons[1], "header x-beta missing");
    assert!(reasons[2].starts_with("matched"));
    let text = explanation.to_string();
    assert!(text.contains("route `fixed` answers directly"), "{text}");
    let json = serde_json::to_value(&explanation).unwrap();
    assert_eq!(json["steps"][1]["matched"], false);

    let none = table.explain(&Req::new("POST", "/payroll/x").view());
    assert_eq!(none.chosen, None);
    assert_eq!(none.upstream, "m");
    assert_eq!(none.steps[2].reason, "method POST is not GET");
    match &table.route("fixed").unwrap().action {
        Action::Respond(respond) => {
            assert_eq!(respond.status.as_u16(), 418);
            assert_eq!(respond.body, "teapot");
            assert_eq!(respond.headers.len(), 1);
        }
        other => panic!("expected respond, got {other:?}"),
    }
}
