//! The example route files shipped in deploy/examples are valid.

use std::path::Path;

use strangler_routes::{Action, load_file};

use super::support::{Req, route_for};

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
}

#[test]
fn passthrough_example_is_valid() {
    let table = load_file(&example("passthrough.yaml")).unwrap();
    assert!(table.routes().is_empty());
    assert_eq!(table.upstream(table.default_upstream()).name, "monolith");
}

#[test]
fn routes_example_is_valid_and_routes_as_documented() {
    let table = load_file(&example("routes.yaml")).unwrap();
    assert!(table.warnings().is_empty(), "{:?}", table.warnings());
    assert_eq!(table.routes().len(), 8);
    let cases = [
        (Req::new("GET", "/healthz"), Some("health")),
        (Req::new("GET", "/invoices/7"), Some("invoices")),
        (Req::new("GET", "/invoicesX"), None),
        (Req::new("GET", "/payroll/42"), Some("payroll-employee")),
        (Req::new("GET", "/payroll/42/slips"), None),
        (
            Req::new("GET", "/catalog/1")
                .header("x-beta", "true")
                .header("user-agent", "A Mobile B"),
            Some("catalog-beta"),
        ),
        (
            Req::new("GET", "/catalog/1").header("cookie", "beta=1"),
            Some("catalog-cookie"),
        ),
        (Req::new("GET", "/catalog/1"), None),
        (Req::new("GET", "/search/books?v=2"), Some("legacy-search")),
        (Req::new("GET", "/search/books?v=1"), None),
        (
            Req::new("GET", "/admin/users").host("eu.admin.example.com"),
            Some("admin-host"),
        ),
        (Req::new("GET", "/reports/q3"), Some("reports")),
    ];
    for (req, expected) in cases {
        assert_eq!(route_for(&table, &req).as_deref(), expected, "{}", req.path);
    }
    let search = table.route("legacy-search").unwrap();
    let rewrite = search.rewrite.as_ref().unwrap();
    assert_eq!(rewrite.apply_path("/search/books"), "/v2/search/books");
    assert!(matches!(search.action, Action::Forward(id) if table.upstream(id).http2));
    let invoices = table.route("invoices").unwrap();
    assert_eq!(invoices.fallback, table.upstream_id("monolith"));
    assert_eq!(invoices.rollback_to, table.default_upstream());
    let payroll = table.upstream(table.upstream_id("payroll").unwrap());
    assert_eq!(payroll.base_path, "/api");
    assert!(payroll.host_rewrite);
}
