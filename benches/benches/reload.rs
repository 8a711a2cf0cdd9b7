//! Parse + validate + compile of a 10,000-route file (what a reload costs before the swap).
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use strangler_benches::route_file;
use strangler_routes::{load_file, parse_str};

fn reload(c: &mut Criterion) {
    let text = route_file(10_000);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(&file, &text).unwrap();
    let mut group = c.benchmark_group("reload");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function("parse_str_10000_routes", |b| {
        b.iter(|| {
            parse_str(Path::new("routes.yaml"), black_box(&text))
                .unwrap()
                .routes()
                .len()
        })
    });
    group.bench_function("load_file_10000_routes", |b| {
        b.iter(|| load_file(black_box(&file)).unwrap().routes().len())
    });
    group.finish();
}

criterion_group!(benches, reload);
criterion_main!(benches);
