//! First match in file order, and the index agreeing with a linear scan.

use std::fmt::Write as _;

use super::support::{Req, route_for, table};

const HEAD: &str =
    "upstreams:\n  m: { url: \"http://h:1\" }\n  n: { url: \"http://h:2\" }\ndefault: m\nroutes:\n";

#[test]
fn table_driven_precedence() {
    let table = table(&format!(
        "{HEAD}\
- name: get-one-invoice
  match: {{ path: \"/invoices/{{id}}\", methods: [GET] }}
  to: n
- name: exact-export
  match: {{ path: /invoices/export }}
  to: n
- name: beta-invoices
  match: {{ path_prefix: /invoices, headers: {{ x-beta: \"1\" }} }}
  to: n
- name: invoices
  match: {{ path_prefix: /invoices }}
  to: n
- name: regex-late
  match: {{ path_regex: \"/invoices/[0-9]+\" }}
  to: n
- name: api-v2
  match: {{ path_prefix: /api/v2 }}
  to: n
- name: api
  match: {{ path_prefix: /api }}
  to: n
- name: posts
  match: {{ methods: [POST] }}
  to: n
- name: root-exact
  match: {{ path: / }}
  to: n
"
    ));
    let cases: &[(Req, Option<&str>)] = &[
        (Req::new("GET", "/invoices/7"), Some("get-one-invoice")),
        (Req::new("GET", "/invoices/export"), Some("get-one-invoice")),
        (Req::new("POST", "/invoices/export"), Some("exact-export")),
        (
            Req::new("POST", "/invoices/7").header("x-beta", "1"),
            Some("beta-invoices"),
        ),
        (Req::new("POST", "/invoices/7"), Some("invoices")),
        (Req::new("GET", "/invoices"), Some("invoices")),
        (Req::new("GET", "/invoices/7/lines"), Some("invoices")),
        (Req::new("GET", "/api/v2/x"), Some("api-v2")),
        (Req::new("GET", "/api/v2"), Some("api-v2")),
        (Req::new("GET", "/api/v20"), Some("api")),
        (Req::new("GET", "/api"), Some("api")),
        (Req::new("POST", "/elsewhere"), Some("posts")),
        (Req::new("POST", "/"), Some("posts")),
        (Req::new("GET", "/"), Some("root-exact")),
        (Req::new("GET", "/elsewhere"), None),
        (Req::new("GET", "/apix"), None),
    ];
    for (req, expected) in cases {
        assert_eq!(
            route_for(&table, req).as_deref(),
            *expected,
            "{} {}",
            req.method,
            req.path
        );
    }
    // `regex-late` is reachable in principle but every path it matches is taken
    // earlier; the linter does not claim so (it only reports provable cases).
    let names: Vec<_> = table
        .warnings()
        .iter()
        .filter_map(|w| w.route.clone())
        .collect();
    assert_eq!(names, Vec::<String>::new(), "{:?}", table.warnings());
}

#[test]
fn unreachable_routes_are_warned_about() {
    let table = table(&format!(
        "{HEAD}\
- name: api
  match: {{ path_prefix: /api }}
  to: n
- name: api-users
  match: {{ path_prefix: /api/users, methods: [GET] }}
  to: n
- name: api-item
  match: {{ path: \"/api/{{id}}\" }}
  to: n
- name: other
  match: {{ path_prefix: /other, headers: {{ x: \"1\" }} }}
  to: n
- name: other-exact
  match: {{ path: /other/x }}
  to: n
- name: get-only
  match: {{ methods: [GET] }}
  to: n
- name: get-x
  match: {{ path: /x, methods: [get] }}
  to: n
- name: post-x
  match: {{ path: /x, methods: [POST] }}
  to: n
- name: everything
  to: m
- name: after-everything
  match: {{ path: /late }}
  to: n
"
    ));
    let warned: Vec<(String, Option<usize>)> = table
        .warnings()
        .iter()
        .map(|w| (w.route.clone().unwrap(), w.line))
        .collect();
    assert_eq!(
        warned,
        vec![
            ("api-users".to_owned(), Some(9)),
            ("api-item".to_owned(), Some(12)),
            ("get-x".to_owned(), Some(24)),
            ("after-everything".to_owned(), Some(32)),
        ]
    );
    assert!(
        table.warnings()[0]
            .message
            .contains("earlier route `api` (line 6")
    );
}

/// A tiny deterministic generator (xorshift), so the test needs no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const SEGMENTS: &[&str] = &["a", "b", "c", "api", "v2", "x"];

fn random_path(rng: &mut Rng, template: bool) -> String {
    let len = 1 + rng.next() % 3;
    let mut path = String::new();
    for _ in 0..len {
        path.push('/');
        if template && rng.next().is_multiple_of(4) {
            path.push_str("{p}");
        } else {
            path.push_str(rng.pick(SEGMENTS));
        }
    }
    if rng.next().is_multiple_of(5) {
        path.push('/');
    }
    path
}

fn random_route(rng: &mut Rng, index: usize) -> String {
    let mut predicates = Vec::new();
    match rng.next() % 12 {
        0..=3 => {
            let mut path = random_path(rng, true);
            let mut n = 0;
            while let Some(at) = path.find("{p}") {
                n += 1;
                path.replace_range(at..at + 3, &format!("{{p{n}}}"));
            }
            predicates.push(format!("path: \"{path}\""));
        }
        4..=8 => predicates.push(format!("path_prefix: \"{}\"", random_path(rng, false))),
        9 => predicates.push(format!("path_regex: \"/{}.*\"", rng.pick(SEGMENTS))),
        10 => predicates.push("path_prefix: /".to_owned()),
        _ => {}
    }
    if rng.next().is_multiple_of(3) {
        predicates.push(format!(
            "methods: [{}]",
            rng.pick(&["GET", "POST", "GET, PUT"])
        ));
    }
    if rng.next().is_multiple_of(4) {
        predicates.push(format!("headers: {{ x-h: \"{}\" }}", rng.pick(&["1", "2"])));
    }
    if rng.next().is_multiple_of(6) {
        predicates.push("query: { q: \"1\" }".to_owned());
    }
    let mut route = format!("- name: r{index}\n");
    if !predicates.is_empty() || rng.next().is_multiple_of(2) {
        let _ = writeln!(route, "  match: {{ {} }}", predicates.join(", "));
    }
    route.push_str("  to: n\n");
    route
}

#[test]
fn index_agrees_with_linear_scan_on_random_tables() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut matched = 0;
    let mut total = 0;
    for _ in 0..60 {
        let count = 1 + (rng.next() % 24) as usize;
        let mut yaml = HEAD.to_owned();
        for index in 0..count {
            yaml.push_str(&random_route(&mut rng, index));
        }
        let table = table(&yaml);
        for _ in 0..150 {
            let mut target = random_path(&mut rng, false);
            if rng.next().is_multiple_of(4) {
                target.push_str("?q=1");
            }
            let mut req = Req::new(rng.pick(&["GET", "POST", "PUT"]), &target);
            if rng.next().is_multiple_of(2) {
                req = req.header("x-h", rng.pick(&["1", "2"]));
            }
            // `route_for` asserts find() == explain().chosen (an index-free linear scan).
            matched += usize::from(route_for(&table, &req).is_some());
            total += 1;
        }
    }
    // The generator must exercise both outcomes to mean anything.
    assert!(
        matched > total / 5 && matched < total * 4 / 5,
        "{matched}/{total}"
    );
}
