//! Parallel run: the primary answers, the candidate's copy is compared, and every
//! difference is recorded — without the candidate ever touching the client's exchange.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

use crate::support::{
    PATIENCE, Proxy, Reply, Upstream, admin_get, client, closed_port, get, send, wait_for_diffs,
};

fn shadow_yaml(primary: &str, candidate: &str, shadow_extra: &str) -> String {
    format!(
        "upstreams:\n  monolith: {{ url: \"{primary}\" }}\n  payroll: {{ url: \"{candidate}\" }}\ndefault: monolith\nroutes:\n  - name: payroll\n    match: {{ path_prefix: /payroll }}\n    shadow:\n      primary: monolith\n      candidate: payroll\n{shadow_extra}"
    )
}

/// A monolith answering at once and a candidate answering after `delay`, both `{"ok":true}`.
async fn with_slow_candidate(delay: Duration) -> (Upstream, Upstream) {
    let monolith = Upstream::scripted("monolith", |_| Reply::json(json!({"ok": true}))).await;
    let payroll = Upstream::scripted("payroll", move |_| Reply {
        delay,
        ..Reply::json(json!({"ok": true}))
    })
    .await;
    (monolith, payroll)
}

fn count(summary: &Value, outcome: &str) -> u64 {
    summary["counts"][outcome].as_u64().unwrap()
}

fn comparisons(summary: &Value) -> u64 {
    ["match", "mismatch", "noise", "candidate_error", "dropped"]
        .iter()
        .map(|o| count(summary, o))
        .sum()
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_answers_match_despite_key_order_ignored_fields_and_gzip() {
    let monolith = Upstream::scripted("monolith", |_| {
        Reply::json(json!({"id": 7, "net": 1000.50, "items": [{"sku": "a", "etag": "x1"}], "generated_at": "t1"}))
    })
    .await;
    let payroll = Upstream::scripted("payroll", |_| Reply {
        status: 200,
        headers: vec![
            ("content-type", "application/json".into()),
            ("content-encoding", "gzip".into()),
        ],
        body: gzip(
            r#"{"generated_at":"t2","items":[{"etag":"y2","sku":"a"}],"net":1000.5,"id":7}"#,
        ),
        delay: Duration::ZERO,
    })
    .await;
    let proxy = Proxy::start(
        &shadow_yaml(
            &monolith.url(),
            &payroll.url(),
            "      compare:\n        ignore_json: [\"/generated_at\", \"/items/*/etag\"]\n",
        ),
        &[],
    );
    for _ in 0..3 {
        let answer = get(&proxy.url("/payroll/7"), &[]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.json()["generated_at"],
            "t1",
            "the client only ever sees the primary"
        );
    }
    let report = wait_for_diffs(&proxy, "payroll", |s| comparisons(s) >= 3).await;
    assert_eq!(count(&report["summary"], "match"), 3, "{report:#}");
    let seen = payroll.hits.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0]["headers"]["x-strangler-shadow"], "1");
    assert!(
        monolith.hits.lock().unwrap()[0]["headers"]
            .get("x-strangler-shadow")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_field_is_one_mismatch_naming_the_path_and_both_values() {
    let monolith =
        Upstream::scripted("monolith", |_| Reply::json(json!({"id": 7, "total": 1200}))).await;
    let payroll =
        Upstream::scripted("payroll", |_| Reply::json(json!({"id": 7, "total": 1250}))).await;
    let diff_log = tempfile::NamedTempFile::new().unwrap();
    let proxy = Proxy::start(
        &shadow_yaml(&monolith.url(), &payroll.url(), ""),
        &["--diff-log", diff_log.path().to_str().unwrap()],
    );
    let answer = get(
        &proxy.url("/payroll/7?month=2026-11"),
        &[
            ("authorization", "Bearer secret"),
            ("cookie", "session=abc"),
        ],
    )
    .await;
    assert_eq!(answer.json()["total"], 1200);
    let report = wait_for_diffs(&proxy, "payroll", |s| comparisons(s) >= 1).await;
    // Failed once in a full run, loaded, without saying what the one comparison was.
    assert_eq!(count(&report["summary"], "mismatch"), 1, "{report:#}");
    let record = &report["records"][0];
    let text = record.to_string();
    assert!(
        text.contains("/total") && text.contains("1200") && text.contains("1250"),
        "{record:#}"
    );
    assert_eq!(record["path"], "/payroll/7");
    assert_eq!(record["query"], "month=2026-11");
    assert!(
        record["primary_latency_ms"].as_f64().is_some()
            && record["candidate_latency_ms"].as_f64().is_some()
    );
    assert!(
        !text.contains("secret") && !text.contains("session=abc"),
        "credentials leaked: {record:#}"
    );
    assert!(text.contains("[redacted]"), "{record:#}");

    let csv = admin_get(&proxy, "/diffs/payroll?format=csv").await;
    assert_eq!(csv.status, 200);
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "header and one record:\n{}", csv.text());
    assert!(lines[1].contains("/payroll/7"));
    let json = admin_get(&proxy, "/diffs/payroll?format=json").await;
    assert_eq!(json.json()["summary"]["route"], "payroll");
    // A format it does not have is refused, not answered in another one.
    let typo = admin_get(&proxy, "/diffs/payroll?format=cvs").await;
    assert_eq!(typo.status, 400);
    assert!(typo.text().contains("format=csv"), "{}", typo.text());

    let summary = admin_get(&proxy, "/diffs").await.json();
    assert_eq!(summary["routes"][0]["route"], "payroll");
    assert_eq!(admin_get(&proxy, "/diffs?format=xml").await.status, 400);
    // The diff log gets the same record as one JSON line.
    let records = diff_log_records(diff_log.path()).await;
    assert_eq!(records[0]["path"], "/payroll/7");

    // Rotated away (logrotate without copytruncate): the next record starts a new file.
    let rotated = diff_log.path().with_extension("1");
    std::fs::rename(diff_log.path(), &rotated).unwrap();
    get(&proxy.url("/payroll/8"), &[]).await;
    let records = diff_log_records(diff_log.path()).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["path"], "/payroll/8");
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        1
    );
    std::fs::remove_file(rotated).unwrap();
}

/// The records of the diff log at `path`, once it has some. JSON Lines: every line a
/// record, none blank (a reader that parses each line would stop at a blank one).
async fn diff_log_records(path: &std::path::Path) -> Vec<Value> {
    let deadline = Instant::now() + PATIENCE;
    let logged = loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.ends_with('\n') {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "nothing in the diff log {path:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    logged
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {logged:?}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_candidate_never_delays_the_client() {
    let (monolith, payroll) = with_slow_candidate(Duration::from_secs(2)).await;
    let proxy = Proxy::start(
        &shadow_yaml(&monolith.url(), &payroll.url(), "      timeout: 5s\n"),
        &[],
    );
    let client = client();
    let started = Instant::now();
    for _ in 0..10 {
        // One client: the same keep-alive connection carries every request.
        let request = Request::get(proxy.url("/payroll/1"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(send(&client, request).await.status, 200);
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500),
        "10 requests took {elapsed:?} behind a 2 s candidate"
    );
    payroll.wait_for_hits(10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_max_in_flight_is_dropped_and_counted() {
    let (monolith, payroll) = with_slow_candidate(Duration::from_secs(3)).await;
    let proxy = Proxy::start(
        &shadow_yaml(
            &monolith.url(),
            &payroll.url(),
            "      max_in_flight: 2\n      timeout: 10s\n",
        ),
        &[],
    );
    for _ in 0..12 {
        assert_eq!(get(&proxy.url("/payroll/1"), &[]).await.status, 200);
    }
    let report = wait_for_diffs(&proxy, "payroll", |s| count(s, "dropped") >= 10).await;
    let summary = &report["summary"];
    assert_eq!(count(summary, "dropped"), 10, "{summary:#}");
    assert_eq!(summary["counts"]["dropped_by_reason"]["max_in_flight"], 10);
    assert!(payroll.hit_count() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_copies_in_flight_under_the_bound() {
    let (monolith, payroll) = with_slow_candidate(Duration::from_secs(3)).await;
    let yaml = shadow_yaml(
        &monolith.url(),
        &payroll.url(),
        "      max_in_flight: 2\n      timeout: 10s\n",
    );
    let proxy = Proxy::start(&yaml, &[]);
    for _ in 0..2 {
        assert_eq!(get(&proxy.url("/payroll/1"), &[]).await.status, 200);
    }
    payroll.wait_for_hits(2).await;
    // Another table (an edit elsewhere in the file) while both copies wait for the candidate.
    proxy.rewrite_routes_in_place(&format!("{yaml}# edited\n"));
    for _ in 0..4 {
        assert_eq!(get(&proxy.url("/payroll/1"), &[]).await.status, 200);
    }
    let report = wait_for_diffs(&proxy, "payroll", |s| count(s, "dropped") >= 4).await;
    let summary = &report["summary"];
    assert_eq!(
        summary["counts"]["dropped_by_reason"]["max_in_flight"], 4,
        "the two copies from before the reload still fill the bound: {summary:#}"
    );
    assert_eq!(payroll.hit_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_candidate_is_a_candidate_error_the_client_never_notices() {
    let monolith = Upstream::scripted("monolith", |_| Reply::json(json!({"ok": true}))).await;
    let dead = closed_port().await;
    let proxy = Proxy::start(
        &shadow_yaml(&monolith.url(), &format!("http://{dead}"), ""),
        &[],
    );
    for _ in 0..3 {
        let answer = get(&proxy.url("/payroll/1"), &[]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["ok"], true);
    }
    let report = wait_for_diffs(&proxy, "payroll", |s| comparisons(s) >= 3).await;
    assert_eq!(
        count(&report["summary"], "candidate_error"),
        3,
        "{report:#}"
    );
    assert_eq!(
        report["summary"]["counts"]["candidate_errors_by_kind"]["connect"],
        3
    );
    // A failed exchange with the candidate is one of its upstream errors, as with any
    // upstream.
    let metrics = admin_get(&proxy, "/metrics").await.text();
    assert!(
        metrics
            .contains("strangler_upstream_errors_total{kind=\"connect\",upstream=\"payroll\"} 3"),
        "{metrics}"
    );
}

/// The series `strangler_shadow_gate{route="payroll", state}`, as `state value` pairs.
async fn gate_series(proxy: &Proxy) -> Vec<String> {
    let metrics = admin_get(proxy, "/metrics").await.text();
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("strangler_shadow_gate{route=\"payroll\",state=\""))
        .map(|rest| rest.replace("\"} ", " "))
        .collect()
}

/// Waits until [`gate_series`] is `expected` (the gauge is set once a comparison is
/// counted, so it may trail `/diffs` a little).
async fn wait_for_gate(proxy: &Proxy, expected: &[&str]) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let series = gate_series(proxy).await;
        if series == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gate series {series:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The gate's gauge says `inconclusive` before the first comparison (an alert on it must
/// see a route whose copies all get dropped), `failing` once the mismatches say so, and
/// leaves `/metrics` when the route is promoted: an alert must not keep firing for a
/// comparison that has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_gauge_has_a_state_from_the_start_and_ends_with_the_comparison() {
    let monolith = Upstream::scripted("monolith", |_| Reply::json(json!({"total": 1}))).await;
    let payroll = Upstream::scripted("payroll", |_| Reply::json(json!({"total": 2}))).await;
    let gate = "      gate: { min_comparisons: 2, max_mismatch_rate: 10% }\n";
    let proxy = Proxy::start(&shadow_yaml(&monolith.url(), &payroll.url(), gate), &[]);
    assert_eq!(
        gate_series(&proxy).await,
        ["failing 0", "inconclusive 1", "passing 0"]
    );
    for _ in 0..2 {
        get(&proxy.url("/payroll/1"), &[]).await;
    }
    wait_for_gate(&proxy, &["failing 1", "inconclusive 0", "passing 0"]).await;

    let promoted = format!(
        "upstreams:\n  monolith: {{ url: \"{}\" }}\n  payroll: {{ url: \"{}\" }}\ndefault: monolith\nroutes:\n  - name: payroll\n    match: {{ path_prefix: /payroll }}\n    to: payroll\n",
        monolith.url(),
        payroll.url()
    );
    proxy.rewrite_routes_in_place(&promoted);
    assert_eq!(gate_series(&proxy).await, Vec::<String>::new());
    let metrics = admin_get(&proxy, "/metrics").await.text();
    assert!(
        !metrics
            .contains("strangler_shadow_comparisons_total{outcome=\"mismatch\",route=\"payroll\"}"),
        "{metrics}"
    );
}

/// `DELETE /diffs/{route}` starts a comparison over (a new candidate version is out), and
/// so does a reload that changes the compare rules: the outcomes so far were judged by
/// rules that no longer apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_start_over_on_reset_and_when_the_compare_rules_change() {
    let monolith = Upstream::scripted("monolith", |_| Reply::json(json!({"total": 1}))).await;
    let payroll = Upstream::scripted("payroll", |_| Reply::json(json!({"total": 2}))).await;
    let routes = |compare: &str| {
        shadow_yaml(
            &monolith.url(),
            &payroll.url(),
            &format!("      gate: {{ min_comparisons: 2, max_mismatch_rate: 10% }}\n{compare}"),
        )
    };
    let proxy = Proxy::start(&routes(""), &[]);
    for _ in 0..2 {
        get(&proxy.url("/payroll/1"), &[]).await;
    }
    wait_for_gate(&proxy, &["failing 1", "inconclusive 0", "passing 0"]).await;

    let reset = admin_delete(&proxy, "/diffs/payroll").await;
    assert_eq!(reset.status, 200, "{}", reset.text());
    assert_eq!(reset.json()["reset"], true);
    let report = admin_get(&proxy, "/diffs/payroll").await.json();
    assert_eq!(comparisons(&report["summary"]), 0, "{report:#}");
    assert_eq!(
        report["records"].as_array().map(Vec::len),
        Some(0),
        "{report:#}"
    );
    assert_eq!(
        report["summary"]["gate"]["state"], "inconclusive",
        "{report:#}"
    );
    wait_for_gate(&proxy, &["failing 0", "inconclusive 1", "passing 0"]).await;
    get(&proxy.url("/payroll/1"), &[]).await;
    wait_for_diffs(&proxy, "payroll", |s| count(s, "mismatch") == 1).await;

    // Ignoring the field that differed: the mismatch above no longer counts.
    proxy.rewrite_routes_in_place(&routes("      compare: { ignore_json: [/total] }\n"));
    let report = admin_get(&proxy, "/diffs/payroll").await.json();
    assert_eq!(comparisons(&report["summary"]), 0, "{report:#}");
    get(&proxy.url("/payroll/1"), &[]).await;
    let report = wait_for_diffs(&proxy, "payroll", |s| comparisons(s) == 1).await;
    assert_eq!(count(&report["summary"], "match"), 1, "{report:#}");

    assert_eq!(admin_delete(&proxy, "/diffs/nope").await.status, 404);
}

/// `DELETE` on the admin endpoint.
async fn admin_delete(proxy: &Proxy, path: &str) -> crate::support::Answer {
    let request = Request::delete(format!("http://{}{path}", proxy.admin))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(&client(), request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_are_shadowed_only_when_the_route_says_so() {
    let monolith = Upstream::start("monolith").await;
    let payroll = Upstream::start("payroll").await;
    let proxy = Proxy::start(&shadow_yaml(&monolith.url(), &payroll.url(), ""), &[]);
    let post = |url: String| async move {
        let request = Request::post(url)
            .body(Full::new(Bytes::from_static(b"{\"amount\":5}")))
            .unwrap();
        send(&client(), request).await
    };
    assert_eq!(post(proxy.url("/payroll/run")).await.status, 200);
    assert_eq!(get(&proxy.url("/payroll/x"), &[]).await.status, 200);
    payroll.wait_for_hits(1).await;
    let seen = payroll.hits.lock().unwrap().clone();
    assert!(
        seen.iter().all(|hit| hit["method"] == "GET"),
        "a POST was shadowed by default: {seen:?}"
    );

    let monolith = Upstream::start("monolith").await;
    let payroll = Upstream::start("payroll").await;
    let proxy = Proxy::start(
        &shadow_yaml(
            &monolith.url(),
            &payroll.url(),
            "      unsafe_methods: true\n",
        ),
        &[],
    );
    assert_eq!(post(proxy.url("/payroll/run")).await.status, 200);
    payroll.wait_for_hits(1).await;
    let at_candidate = payroll.hits.lock().unwrap()[0].clone();
    let at_primary = monolith.hits.lock().unwrap()[0].clone();
    assert_eq!(at_candidate["method"], "POST");
    assert_eq!(at_candidate["body"], at_primary["body"]);
    assert_eq!(at_candidate["body"], "{\"amount\":5}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_is_learned_from_the_old_system_answering_twice() {
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let n = counter.clone();
    let monolith = Upstream::scripted("monolith", move |_| {
        let nonce = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Reply::json(json!({"id": 7, "nonce": nonce}))
    })
    .await;
    let payroll = Upstream::scripted("payroll", |_| {
        Reply::json(json!({"id": 7, "nonce": 999_999}))
    })
    .await;
    let proxy = Proxy::start(
        &shadow_yaml(
            &monolith.url(),
            &payroll.url(),
            "      compare:\n        noise: { baseline: monolith, sample: 100% }\n",
        ),
        &[],
    );
    // The first comparison already knows: its own baseline answer showed the noise.
    get(&proxy.url("/payroll/7"), &[]).await;
    let first = wait_for_diffs(&proxy, "payroll", |s| {
        count(s, "noise") + count(s, "mismatch") >= 1
    })
    .await;
    assert_eq!(
        (
            count(&first["summary"], "noise"),
            count(&first["summary"], "mismatch")
        ),
        (1, 0),
        "{first:#}"
    );
    for _ in 0..3 {
        get(&proxy.url("/payroll/7"), &[]).await;
    }
    let report = wait_for_diffs(&proxy, "payroll", |s| count(s, "noise") >= 4).await;
    assert_eq!(count(&report["summary"], "mismatch"), 0, "{report:#}");
    assert!(
        report["summary"]["noise"].to_string().contains("/nonce"),
        "{report:#}"
    );
}

/// Send `at_once` requests at a time to the shadowed `/payroll` until `proxy` has dropped at
/// least 3 copies with reason `no_spare_cpu`; each request still gets the primary's answer.
/// How many were sent. `waiting_for` names the cause, for the message on a timeout.
async fn until_copies_wait_for_cpu(
    proxy: &Proxy,
    at_once: u64,
    waiting_for: impl Fn() -> String,
) -> u64 {
    let url = proxy.url("/payroll/1");
    let deadline = Instant::now() + PATIENCE;
    let mut sent = 0;
    loop {
        let answers = futures_util::future::join_all((0..at_once).map(|_| get(&url, &[]))).await;
        for answer in answers {
            assert_eq!(
                (answer.status.as_u16(), answer.text().as_str()),
                (200, r#"{"ok":true}"#)
            );
        }
        sent += at_once;
        let report = admin_get(proxy, "/diffs/payroll").await.json();
        let busy = &report["summary"]["counts"]["dropped_by_reason"]["no_spare_cpu"];
        if busy.as_u64().is_some_and(|dropped| dropped >= 3) {
            return sent;
        }
        assert!(
            Instant::now() < deadline,
            "no copy dropped for {}: {report:#}",
            waiting_for()
        );
    }
}

/// Busy loops on every CPU that leave the CPUs no idle time, yet take none from the tests:
/// `SCHED_IDLE` tasks run only when nothing else wants the CPU. Stopped when dropped.
struct Burners(Vec<std::process::Child>);

impl Burners {
    /// One loop per CPU the proxy may run on (`Cpus_allowed_list`, which is what its check
    /// reads; `available_parallelism` may count fewer, under a CPU quota).
    fn start() -> Burners {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let list = status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        let cpus: usize = list
            .trim()
            .split(',')
            .map(|part| match part.split_once('-') {
                Some((from, to)) => {
                    to.parse::<usize>().unwrap() - from.parse::<usize>().unwrap() + 1
                }
                None => 1,
            })
            .sum();
        Burners(
            (0..cpus)
                .map(|_| {
                    std::process::Command::new("chrt")
                        .args(["--idle", "0", "sh", "-c", "while :; do :; done"])
                        .spawn()
                        .expect("chrt (util-linux) runs a SCHED_IDLE busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_wait_for_spare_cpu_unless_told_not_to() {
    let (monolith, payroll) = with_slow_candidate(Duration::ZERO).await;
    let yaml = shadow_yaml(&monolith.url(), &payroll.url(), "");
    let guarded = Proxy::start(&yaml, &["--shadow-spare-cpu", "50%"]);
    let unguarded = Proxy::start(&yaml, &["--shadow-spare-cpu", "0%"]);
    let _burners = Burners::start();

    // Once the guarded proxy has seen CPUs without idle time, it makes no copy.
    let sent = until_copies_wait_for_cpu(&guarded, 1, || "the busy CPUs".to_string()).await;
    // Every request has its outcome (copies made before the first sample included).
    wait_for_diffs(&guarded, "payroll", |s| comparisons(s) == sent).await;
    let before = payroll.hits.lock().unwrap().len();

    // Told to copy whatever the CPUs do, the other proxy compares every request.
    for _ in 0..3 {
        get(&unguarded.url("/payroll/1"), &[]).await;
    }
    let report = wait_for_diffs(&unguarded, "payroll", |s| count(s, "match") == 3).await;
    assert_eq!(report["summary"]["counts"]["dropped"], 0);
    assert_eq!(
        payroll.hits.lock().unwrap().len() - before,
        3,
        "only the unguarded proxy sent copies"
    );
}

/// A cgroup for one test, limited to a tenth of a CPU (at once, or when the test says),
/// removed when dropped (after the processes in it): in cgroup v2 where its `cpu`
/// controller can be had, else in the v1 `cpu` and `cpuacct` hierarchies. `None` where this
/// machine does not let the test make one (not root, no cgroup mounts).
struct CpuQuota {
    dirs: Vec<std::path::PathBuf>,
    /// The `cpu.stat` with the kernel's count of throttled periods.
    stat: std::path::PathBuf,
    /// The files and values that set the limit, in the first of `dirs`.
    limits: Vec<(&'static str, &'static str)>,
}

impl CpuQuota {
    /// A cgroup named after `test` limited to a tenth of a CPU.
    fn tenth(test: &str) -> Option<CpuQuota> {
        let quota = CpuQuota::unlimited(test)?;
        quota.limit().then_some(quota)
    }

    /// A cgroup named after `test` whose limit of a tenth of a CPU is set later, by
    /// [`CpuQuota::limit`].
    fn unlimited(test: &str) -> Option<CpuQuota> {
        use std::path::Path;
        let name = format!("strangler-e2e-{}-{test}", std::process::id());
        let v2 = Path::new("/sys/fs/cgroup");
        let v2_cpu = std::fs::read_to_string(v2.join("cgroup.subtree_control"))
            .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "cpu"));
        let (limits, homes) = if v2_cpu {
            (vec![("cpu.max", "10000 100000")], vec![v2.join(&name)])
        } else {
            // Comounted controllers (`cpu,cpuacct`) are one directory under two names.
            let mut homes: Vec<_> = ["cpu", "cpuacct"]
                .iter()
                .filter_map(|controller| v2.join(controller).canonicalize().ok())
                .map(|mount| mount.join(&name))
                .collect();
            homes.dedup();
            let limits = vec![
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "10000"),
            ];
            (limits, homes)
        };
        let mut quota = CpuQuota {
            stat: homes.first()?.join("cpu.stat"),
            dirs: Vec::new(),
            limits,
        };
        for home in homes {
            std::fs::create_dir(&home).ok()?;
            quota.dirs.push(home);
        }
        Some(quota)
    }

    /// Sets the limit; whether it could be.
    fn limit(&self) -> bool {
        self.limits
            .iter()
            .all(|(file, value)| std::fs::write(self.dirs[0].join(file), value).is_ok())
    }

    /// A launcher that moves itself into the cgroup, then runs the program it is given.
    fn launcher(&self) -> Vec<String> {
        let join: String = self
            .dirs
            .iter()
            .map(|dir| format!("echo $$ > '{}/cgroup.procs' && ", dir.display()))
            .collect();
        vec![
            "sh".to_string(),
            "-c".to_string(),
            format!("{join}exec \"$0\" \"$@\""),
        ]
    }

    /// A proxy running in this cgroup with the spare-CPU guard at 5 %, shadowing `/payroll`
    /// to a candidate that answers at once; with its upstreams, to keep while it runs.
    async fn shadowing_proxy(&self) -> (Upstream, Upstream, Proxy) {
        let (monolith, payroll) = with_slow_candidate(Duration::ZERO).await;
        let yaml = shadow_yaml(&monolith.url(), &payroll.url(), "");
        let proxy = Proxy::start_through(&yaml, &["--shadow-spare-cpu", "5%"], &self.launcher());
        (monolith, payroll, proxy)
    }

    /// How many periods the kernel throttled the cgroup in.
    fn throttled(&self) -> u64 {
        std::fs::read_to_string(&self.stat)
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix("nr_throttled "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap()
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// In a container held to a CPU quota the host's CPUs look idle while the proxy is at its
/// limit: the guard reads the quota too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_wait_while_a_cpu_quota_throttles_the_proxy() {
    let Some(quota) = CpuQuota::tenth("throttled") else {
        eprintln!("skipped: this machine does not let the test make a cgroup with a CPU quota");
        return;
    };
    let (_monolith, _payroll, proxy) = quota.shadowing_proxy().await;

    until_copies_wait_for_cpu(&proxy, 16, || {
        format!(
            "the quota throttling the proxy ({} periods)",
            quota.throttled()
        )
    })
    .await;
    // When the whole suite runs, the host's CPUs can be busy enough for copies to wait
    // before the quota bites: the load stays on until it has (that the guard reads the
    // quota itself is shown by the next test's log line).
    let url = proxy.url("/payroll/1");
    let deadline = Instant::now() + PATIENCE;
    while quota.throttled() == 0 {
        assert!(
            Instant::now() < deadline,
            "the kernel never throttled the proxy"
        );
        futures_util::future::join_all((0..16).map(|_| get(&url, &[]))).await;
    }
}

/// A quota set on a running proxy's cgroup (a Kubernetes in-place resize) is found within
/// seconds, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_quota_set_while_the_proxy_runs_is_found() {
    let Some(quota) = CpuQuota::unlimited("resized") else {
        eprintln!("skipped: this machine does not let the test make a cgroup");
        return;
    };
    let (_monolith, _payroll, proxy) = quota.shadowing_proxy().await;
    // The proxy answers from inside the cgroup before it has a limit.
    assert_eq!(get(&proxy.url("/payroll/1"), &[]).await.status, 200);
    assert!(quota.limit(), "the limit could be set");
    until_copies_wait_for_cpu(&proxy, 16, || {
        format!(
            "the quota set after start ({} periods throttled)",
            quota.throttled()
        )
    })
    .await;
    let log = proxy.logs.wait_for("CPU quota changed");
    assert!(log.contains("cpus=0.1"), "{log}");
}
