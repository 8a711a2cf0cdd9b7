//! Shared fixtures for strangler's micro benchmarks: generated route files.

use std::fmt::Write as _;

/// A realistic route file with `routes` routes: mostly segment prefixes and path
/// templates spread over many services, some restricted by method or header, and a
/// couple of regex routes at the end (which every lookup has to consider).
pub fn route_file(routes: usize) -> String {
    let mut yaml = String::from(
        "upstreams:\n  monolith: { url: \"http://127.0.0.1:8000\" }\n  svc: { url: \"http://127.0.0.1:9000\", timeout: 10s }\n\ndefault: monolith\n\nroutes:\n",
    );
    for i in 0..routes.saturating_sub(2) {
        let _ = write!(yaml, "  - name: route-{i}\n    match: {{ ");
        let _ = match i % 5 {
            0 => write!(yaml, "path_prefix: /svc{i}"),
            1 => write!(
                yaml,
                "path: \"/api/v{}/items{i}/{{id}}\", methods: [GET]",
                i % 3
            ),
            2 => write!(
                yaml,
                "path_prefix: /shop/{i}, headers: {{ x-beta: \"true\" }}"
            ),
            3 => write!(yaml, "path: /pages/{i}/index.html"),
            _ => write!(
                yaml,
                "path: \"/users/{{user}}/orders{i}/{{order}}\", methods: [GET, POST]"
            ),
        };
        let _ = writeln!(yaml, " }}\n    to: svc");
    }
    if routes >= 2 {
        yaml.push_str("  - name: legacy-regex\n    match: { path_regex: \"/legacy/[0-9]+\\\\.do\" }\n    to: monolith\n");
        yaml.push_str("  - name: reports\n    match: { path_prefix: /reports }\n    respond: { status: 501, body: \"reports are moving\" }\n");
    }
    yaml
}

/// A path that matches the last generated non-regex route of a `routes`-route file
/// (late in file order), and one that matches nothing.
pub fn late_and_missing_paths(routes: usize) -> (String, String) {
    let last = routes.saturating_sub(3);
    let late = match last % 5 {
        0 => format!("/svc{last}/invoices/7"),
        1 => format!("/api/v{}/items{last}/42", last % 3),
        2 => format!("/shop/{last}/cart"),
        3 => format!("/pages/{last}/index.html"),
        _ => format!("/users/u1/orders{last}/9"),
    };
    (late, "/nothing/matches/this/path".to_owned())
}
