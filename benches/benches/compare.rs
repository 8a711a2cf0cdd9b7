//! Comparing a primary's and a candidate's JSON answers of 1 KiB, 64 KiB and 1 MiB.
//!
//! `equal` bodies hold the same value spelled differently (key order, whitespace, number
//! spelling), so the byte-identical fast path does not apply and the whole document is
//! parsed and walked; `one_difference` changes one price in the middle. The rules are the
//! design's example (`/generated_at`, `/items/*/etag` ignored), so the ignore matcher runs.
#![allow(missing_docs)]

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, StatusCode};
use strangler::verify::{CompareRules, CompiledRules, Observed, compare};

/// A document of about `size` bytes: `{"generated_at": .., "items": [...]}`.
///
/// `reordered` writes every object's keys in reverse order with extra whitespace and
/// numbers with trailing zeros; `changed` alters the price of the middle item.
fn document(size: usize, reordered: bool, changed: bool) -> String {
    let item_size = 170;
    let count = (size / item_size).max(1);
    let mut out = String::with_capacity(size + 256);
    let sep = if reordered { ", " } else { "," };
    out.push('{');
    let mut items = String::from("[");
    for i in 0..count {
        if i > 0 {
            items.push_str(sep);
        }
        let price = if changed && i == count / 2 { 1 } else { 0 };
        let fields = [
            format!("\"id\":{}", 100_000 + i),
            format!("\"sku\":\"SKU-{i:08}\""),
            format!(
                "\"price\":{}",
                if reordered {
                    format!("{}.{}50", 19 + i % 7, price)
                } else {
                    format!("{}.{}5", 19 + i % 7, price)
                }
            ),
            format!(
                "\"etag\":\"W/\\\"{:x}\\\"\"",
                i * 7919 + usize::from(reordered)
            ),
            "\"tags\":[\"red\",\"blue\",\"sale\"]".to_owned(),
            format!("\"stock\":{{\"warehouse\":\"north\",\"count\":{}}}", i % 13),
        ];
        items.push('{');
        let ordered: Vec<&String> = if reordered {
            fields.iter().rev().collect()
        } else {
            fields.iter().collect()
        };
        for (n, field) in ordered.into_iter().enumerate() {
            if n > 0 {
                items.push_str(sep);
            }
            items.push_str(field);
        }
        items.push('}');
    }
    items.push(']');
    let generated = format!(
        "\"generated_at\":\"2024-05-0{}T10:00:00Z\"",
        if reordered { 2 } else { 1 }
    );
    if reordered {
        let _ = write!(out, "\"items\": {items},\n {generated}");
    } else {
        let _ = write!(out, "{generated},\"items\":{items}");
    }
    out.push('}');
    out
}

fn observed(body: String) -> Observed {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    Observed::new(
        StatusCode::OK,
        headers,
        Bytes::from(body),
        Duration::from_millis(3),
    )
}

fn rules() -> CompiledRules {
    CompareRules {
        ignore_json: vec!["/generated_at".into(), "/items/*/etag".into()],
        ..CompareRules::default()
    }
    .compile()
    .unwrap_or_default()
}

fn bench_compare(c: &mut Criterion) {
    let rules = rules();
    let mut group = c.benchmark_group("compare_json");
    for (label, size) in [("1KiB", 1 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)] {
        let primary = observed(document(size, false, false));
        let equal = observed(document(size, true, false));
        let changed = observed(document(size, true, true));
        assert!(
            compare(&rules, &primary, &equal).is_match(),
            "equal documents must match"
        );
        assert_eq!(compare(&rules, &primary, &changed).differences.len(), 1);
        group.throughput(Throughput::Bytes(primary.body.len() as u64));
        if size >= 1 << 20 {
            group.sample_size(20);
        }
        group.bench_with_input(BenchmarkId::new("equal", label), &equal, |b, candidate| {
            b.iter(|| compare(&rules, &primary, candidate));
        });
        group.bench_with_input(
            BenchmarkId::new("one_difference", label),
            &changed,
            |b, candidate| {
                b.iter(|| compare(&rules, &primary, candidate));
            },
        );
        let identical = primary.clone();
        group.bench_with_input(
            BenchmarkId::new("identical_bytes", label),
            &identical,
            |b, candidate| {
                b.iter(|| compare(&rules, &primary, candidate));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_compare);
criterion_main!(benches);
