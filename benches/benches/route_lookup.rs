//! Route lookup cost at 10, 1,000 and 10,000 routes: it should not grow with the table.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;

use criterion::{BenchmarkId, Criterion, black_box, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use strangler_benches::{late_and_missing_paths, route_file};
use strangler_routes::{RequestView, normalize_path, parse_str};

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    let mut headers = HeaderMap::new();
    headers.insert("x-beta", HeaderValue::from_static("true"));
    headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    for routes in [10usize, 1_000, 10_000] {
        let table = parse_str(Path::new("bench.yaml"), &route_file(routes)).unwrap();
        let (late, missing) = late_and_missing_paths(routes);
        let method = Method::GET;
        let view = |path| RequestView {
            method: &method,
            path,
            query: Some("a=1"),
            host: Some("example.com"),
            headers: &headers,
            body: None,
        };
        let (late, missing) = (view(late.as_str()), view(missing.as_str()));
        assert!(table.find(&late).is_some(), "late path must match");
        assert!(
            table.find(&missing).is_none(),
            "missing path must not match"
        );
        group.bench_with_input(BenchmarkId::new("late_match", routes), &late, |b, req| {
            b.iter(|| table.find(black_box(req)).map(|r| r.index))
        });
        group.bench_with_input(BenchmarkId::new("no_match", routes), &missing, |b, req| {
            b.iter(|| table.find(black_box(req)).map(|r| r.index))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("normalize_path");
    group.bench_function("already_normal", |b| {
        b.iter(|| normalize_path(black_box("/api/v1/items/42/details")).is_ok())
    });
    group.bench_function("needs_work", |b| {
        b.iter(|| normalize_path(black_box("/api//v1/./items/%7E42/../details")).is_ok())
    });
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
