//! The admin dashboard (`GET /`): what an operator sees in a browser during a migration.

use serde_json::json;

use crate::support::{
    Proxy, Reply, Upstream, admin_get, chromium_dom, get, routes_yaml, wait_for_diffs,
    write_atomically,
};

/// A candidate value that is markup: the page must show it, not run it.
const MARKUP: &str = "<img src=x onerror=\"document.title='owned'\">";

fn routes(monolith: &str, service: &str, candidate: &str) -> String {
    routes_yaml(
        &[
            ("monolith", monolith),
            ("service", service),
            ("payroll", candidate),
        ],
        "monolith",
        "  - name: invoices\n    match: { path_prefix: /invoices }\n    to: service\n  \
         - name: payroll\n    match: { path_prefix: /payroll }\n    shadow: { primary: \
         monolith, candidate: payroll }\n  - name: retired\n    match: { path_prefix: \
         /fax }\n    respond: { status: 410, body: gone }\n",
    )
}

async fn started() -> (Upstream, Upstream, Upstream, Proxy) {
    let monolith = Upstream::scripted("monolith", |_| Reply::json(json!({"total": 1200}))).await;
    let service = Upstream::start("service").await;
    let payroll = Upstream::scripted("payroll", |_| Reply::json(json!({"total": MARKUP}))).await;
    let proxy = Proxy::start(
        &routes(&monolith.url(), &service.url(), &payroll.url()),
        &[],
    );
    (monolith, service, payroll, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_progress_routes_comparisons_and_differences() {
    let (_monolith, _service, _payroll, proxy) = started().await;
    // 3 answered by the new service, 1 by the route file, 1 unmatched and 1 shadowed
    // (both answered by the monolith): 4 of 6 without the monolith.
    for _ in 0..3 {
        assert_eq!(get(&proxy.url("/invoices/1"), &[]).await.status, 200);
    }
    assert_eq!(get(&proxy.url("/fax"), &[]).await.status, 410);
    assert_eq!(get(&proxy.url("/catalog"), &[]).await.status, 200);
    assert_eq!(
        get(&proxy.url("/payroll/7?month=11"), &[]).await.status,
        200
    );
    wait_for_diffs(&proxy, "payroll", |summary| {
        summary["counts"]["mismatch"].as_u64() == Some(1)
    })
    .await;

    let page = admin_get(&proxy, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let html = page.text();
    assert!(
        html.contains(
            r#"<strong id="progress-share">66.7%</strong> of <span id="progress-total">6</span>"#
        ),
        "{html}"
    );
    assert!(
        html.contains(r#"<span id="progress-migrated">4</span>"#),
        "{html}"
    );

    // What a browser makes of it.
    let dom = chromium_dom(&format!("http://{}/", proxy.admin));
    // An `onerror` that ran would have renamed the page.
    assert!(dom.contains("<title>strangler</title>"), "{dom}");
    let invoices = row(&dom, "route-invoices");
    assert!(invoices.contains("forward to service"), "{invoices}");
    assert!(invoices.contains("service: 3 (100.0%)"), "{invoices}");
    assert!(invoices.contains("<td>100.0%</td>"), "{invoices}");
    let retired = row(&dom, "route-retired");
    assert!(retired.contains("respond: 1 (100.0%)"), "{retired}");
    let payroll = row(&dom, "route-payroll");
    assert!(
        payroll.contains("shadow: monolith answers, payroll compared"),
        "{payroll}"
    );
    assert!(payroll.contains("monolith: 1 (100.0%)"), "{payroll}");
    assert!(payroll.contains("<td>0.0%</td>"), "{payroll}");
    let unmatched = row(&dom, "route-unmatched");
    assert!(unmatched.contains("monolith: 1 (100.0%)"), "{unmatched}");
    assert!(unmatched.contains("<td>0.0%</td>"), "{unmatched}");

    let comparisons = row(&dom, "comparisons-payroll");
    assert!(
        comparisons.contains(r#"<td class="rate">100.0%</td>"#),
        "{comparisons}"
    );
    // The difference names the field and both values; the candidate's markup is text.
    assert_eq!(
        dom.matches(r#"<tr class="difference">"#).count(),
        1,
        "{dom}"
    );
    assert!(dom.contains("GET /payroll/7?month=11"), "{dom}");
    assert!(dom.contains("json /total"), "{dom}");
    assert!(dom.contains("<code>1200</code>"), "{dom}");
    assert!(dom.contains("&lt;img src=x"), "{dom}");
    assert!(
        !dom.contains("<img"),
        "markup from an answer became an element: {dom}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_says_when_the_last_reload_failed() {
    let (_monolith, _service, _payroll, proxy) = started().await;
    let page = admin_get(&proxy, "/").await.text();
    assert!(!page.contains("reload-error"), "{page}");

    write_atomically(&proxy.routes_file(), "upstreams: {}\nroutes: [\n");
    proxy.logs.wait_for("reload rejected");
    let dom = chromium_dom(&format!("http://{}/", proxy.admin));
    let alert = dom
        .split(r#"id="reload-error""#)
        .nth(1)
        .and_then(|rest| rest.split("</div>").next())
        .unwrap_or_else(|| panic!("no reload error on the page: {dom}"));
    assert!(alert.contains("file change"), "{alert}");
    assert!(alert.contains("routes.yaml"), "{alert}");
    // The table shown is still the running one.
    assert!(dom.contains(r#"id="route-invoices""#), "{dom}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_needs_the_token_when_one_is_set() {
    let monolith = Upstream::start("monolith").await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &["--admin-token-file", token_file.to_str().unwrap()],
    );
    assert_eq!(admin_get(&proxy, "/").await.status, 401);
    let page = get(
        &format!("http://{}/", proxy.admin),
        &[("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<p>No route is shadowed.</p>"));
}

/// The table row with `id` in `dom`.
fn row<'d>(dom: &'d str, id: &str) -> &'d str {
    let start = dom
        .find(&format!(r#"<tr id="{id}">"#))
        .unwrap_or_else(|| panic!("no row {id}: {dom}"));
    let rest = &dom[start..];
    &rest[..rest.find("</tr>").unwrap_or(rest.len())]
}
