//! Property tests: the comparison's algebra holds for generated documents, not just examples.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;

use super::*;

/// A generated JSON document, rendered to text in many equivalent spellings.
#[derive(Debug, Clone)]
enum Doc {
    Null,
    Bool(bool),
    /// Canonical decimal text: `-?digits(.digits)?`.
    Number(String),
    Text(String),
    Array(Vec<Doc>),
    /// Unique keys.
    Object(Vec<(String, Doc)>),
}

/// A tiny deterministic generator for rendering choices.
struct Choices(u64);

impl Choices {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        // Integers beyond 64 bits.
        "-?[1-9][0-9]{19,40}",
        "-?(0|[1-9][0-9]{0,6})\\.[0-9]{1,8}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["a", "b", "c", "id", "items"]).prop_map(str::to_owned),
        1 => "[a-z~/é\"\\\\]{0,6}",
    ]
}

fn doc() -> impl Strategy<Value = Doc> {
    let leaf = prop_oneof![
        Just(Doc::Null),
        any::<bool>().prop_map(Doc::Bool),
        number().prop_map(Doc::Number),
        prop_oneof![
            3 => "[a-z0-9 ]{0,8}",
            1 => any::<String>(),
        ]
        .prop_map(Doc::Text),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Doc::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|members| Doc::Object(members.into_iter().collect())),
        ]
    })
}

impl Doc {
    /// Render with key order, whitespace, number spelling and string escapes chosen by
    /// `choices`: always the same value.
    fn render(&self, choices: &mut Choices, out: &mut String) {
        let space = |choices: &mut Choices, out: &mut String| {
            if choices.next(3) == 0 {
                out.push_str(["  ", "\n", "\t ", "\r\n"][choices.next(4) as usize]);
            }
        };
        space(choices, out);
        match self {
            Doc::Null => out.push_str("null"),
            Doc::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Doc::Number(n) => out.push_str(&respell(n, choices)),
            Doc::Text(text) => render_string(text, choices, out),
            Doc::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    item.render(choices, out);
                }
                out.push(']');
            }
            Doc::Object(members) => {
                let mut order: Vec<&(String, Doc)> = members.iter().collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, choices.next(i as u64 + 1) as usize);
                }
                out.push('{');
                for (index, (key, value)) in order.into_iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    render_string(key, choices, out);
                    space(choices, out);
                    out.push(':');
                    value.render(choices, out);
                }
                out.push('}');
            }
        }
        space(choices, out);
    }

    fn text(&self, seed: u64) -> String {
        let mut out = String::new();
        self.render(&mut Choices(seed), &mut out);
        out
    }
}

/// The same number, spelled differently: trailing zeros, or mantissa and exponent.
fn respell(canonical: &str, choices: &mut Choices) -> String {
    let (sign, digits) = match canonical.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", canonical),
    };
    let (integer, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    match choices.next(4) {
        0 => canonical.to_owned(),
        1 if fraction.is_empty() => format!("{canonical}.000"),
        1 => format!("{canonical}00"),
        2 => {
            let mantissa = format!("{integer}{fraction}");
            let mantissa = mantissa.trim_start_matches('0');
            let mantissa = if mantissa.is_empty() { "0" } else { mantissa };
            format!("{sign}{mantissa}e-{}", fraction.len())
        }
        _ => {
            // One digit before the point: d.ddd E+k.
            let all = format!("{integer}{fraction}");
            let trimmed = all.trim_start_matches('0');
            if trimmed.is_empty() {
                return "0E+0".to_owned();
            }
            let exponent = integer.len() as i64 - (all.len() - trimmed.len()) as i64 - 1;
            let (first, rest) = trimmed.split_at(1);
            let rest = if rest.is_empty() { "0" } else { rest };
            format!("{sign}{first}.{rest}E{exponent:+}")
        }
    }
}

fn render_string(text: &str, choices: &mut Choices, out: &mut String) {
    out.push('"');
    let escape_all = choices.next(4) == 0;
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' if escape_all => out.push_str("\\/"),
            c if (c as u32) < 0x20 || (escape_all && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn observed(body: String) -> Observed {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    Observed::new(StatusCode::OK, headers, Bytes::from(body), Duration::ZERO)
}

fn rules(ignore: &[String]) -> CompiledRules {
    CompareRules {
        ignore_json: ignore.to_vec(),
        ..CompareRules::default()
    }
    .compile()
    .unwrap_or_default()
}

/// Pointer patterns over the generated key alphabet, some with wildcards.
fn patterns() -> impl Strategy<Value = Vec<String>> {
    let segment = prop_oneof![
        Just("*".to_owned()),
        Just("0".to_owned()),
        Just("1".to_owned()),
        prop::sample::select(vec!["a", "b", "c", "id", "items"]).prop_map(str::to_owned),
    ];
    prop::collection::vec(
        prop::collection::vec(segment, 1..4).prop_map(|s| format!("/{}", s.join("/"))),
        0..4,
    )
}

type Key = (String, DifferenceKind, Option<String>, Option<String>);

fn keyed(verdict: &Verdict) -> BTreeSet<(String, &'static str, Option<String>, Option<String>)> {
    verdict
        .differences
        .iter()
        .map(|d| {
            (
                d.location.to_string(),
                d.kind.as_str(),
                d.primary.clone(),
                d.candidate.clone(),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_value_equals_itself_in_any_spelling(doc in doc(), s1 in any::<u64>(), s2 in any::<u64>()) {
        let (a, b) = (doc.text(s1), doc.text(s2));
        let verdict = compare(&rules(&[]), &observed(a.clone()), &observed(b.clone()));
        prop_assert!(verdict.is_match(), "{a}\n{b}\n{verdict:?}");
        prop_assert_ne!(verdict.body, BodyComparison::Bytes);
        // The compact form is a fixed point and the same value.
        let compact = json_compact(a.as_bytes());
        prop_assert!(compact.is_some(), "{a}");
        let compact = compact.unwrap_or_default();
        let again = json_compact(compact.as_bytes());
        prop_assert_eq!(again.as_deref(), Some(compact.as_str()));
        prop_assert!(compare(&rules(&[]), &observed(compact), &observed(b)).is_match());
    }

    #[test]
    fn ignore_rules_only_remove_differences(
        a in doc(), b in doc(), seed in any::<u64>(), ignore in patterns(),
    ) {
        let (a, b) = (observed(a.text(seed)), observed(b.text(seed.rotate_left(7))));
        let all = compare(&rules(&[]), &a, &b);
        let fewer = compare(&rules(&ignore), &a, &b);
        prop_assume!(all.omitted == 0);
        let (all_keys, fewer_keys) = (keyed(&all), keyed(&fewer));
        prop_assert!(fewer_keys.is_subset(&all_keys), "{fewer_keys:?} ⊄ {all_keys:?}");
        let compiled: Vec<PointerPattern> =
            ignore.iter().filter_map(|p| PointerPattern::parse(p).ok()).collect();
        for difference in &fewer.differences {
            if let Location::Json(pointer) = &difference.location {
                prop_assert!(!compiled.iter().any(|p| p.covers(pointer)), "{pointer} is ignored");
            }
        }
        // And every removed difference is covered by some pattern.
        for difference in &all.differences {
            if let Location::Json(pointer) = &difference.location {
                let kept = fewer.differences.iter().any(|d| d.location == difference.location);
                prop_assert_eq!(kept, !compiled.iter().any(|p| p.covers(pointer)));
            }
        }
    }

    #[test]
    fn comparison_is_symmetric(a in doc(), b in doc(), seed in any::<u64>()) {
        let (a, b) = (observed(a.text(seed)), observed(b.text(!seed)));
        let forward = compare(&rules(&[]), &a, &b);
        let backward = compare(&rules(&[]), &b, &a);
        let flip = |d: &Difference| -> Key {
            let kind = match d.kind {
                DifferenceKind::Missing => DifferenceKind::Extra,
                DifferenceKind::Extra => DifferenceKind::Missing,
                DifferenceKind::Changed => DifferenceKind::Changed,
            };
            (d.location.to_string(), kind, d.candidate.clone(), d.primary.clone())
        };
        let forward: Vec<Key> = forward.differences.iter().map(flip).collect();
        let backward: Vec<Key> = backward
            .differences
            .iter()
            .map(|d| (d.location.to_string(), d.kind, d.primary.clone(), d.candidate.clone()))
            .collect();
        prop_assert_eq!(forward, backward);
    }

    #[test]
    fn noise_never_excuses_an_unlearned_difference(
        p in doc(), q in doc(), a in doc(), b in doc(), seed in any::<u64>(),
    ) {
        let model = NoiseModel::new();
        let compiled = rules(&[]);
        model.learn(&compiled, &observed(p.text(seed)), &observed(q.text(seed)));
        let learned = model.learned();
        let mut verdict = compare(&compiled, &observed(a.text(seed)), &observed(b.text(seed)));
        let outcome = model.classify(&mut verdict);
        for difference in &verdict.differences {
            let known = match NoiseField::of(&difference.location) {
                Some(NoiseField::Json(pattern)) => learned.json.contains(&pattern.to_string()),
                Some(NoiseField::Header(name)) => learned.headers.contains(&name),
                Some(NoiseField::Body) => learned.body,
                None => false,
            };
            prop_assert!(!difference.noise || known, "{difference:?} marked but not learned");
        }
        if outcome == Outcome::Noise {
            prop_assert!(verdict.differences.iter().all(|d| d.noise));
        }
        if verdict.differences.iter().any(|d| !d.noise) {
            prop_assert_eq!(outcome, Outcome::Mismatch);
        }
    }

    #[test]
    fn arbitrary_bodies_never_panic_and_equal_themselves(
        body in prop::collection::vec(any::<u8>(), 0..512),
        other in prop::collection::vec(any::<u8>(), 0..512),
        coding in prop::sample::select(vec!["", "gzip", "br", "deflate", "gzip, br", "zstd"]),
        typed in any::<bool>(),
    ) {
        let make = |body: &[u8]| {
            let mut headers = HeaderMap::new();
            if !coding.is_empty() {
                headers.insert("content-encoding", HeaderValue::from_static(coding));
            }
            if typed {
                headers.insert("content-type", HeaderValue::from_static("application/json"));
            }
            Observed::new(StatusCode::OK, headers, Bytes::copy_from_slice(body), Duration::ZERO)
        };
        let compiled = rules(&[]);
        prop_assert!(compare(&compiled, &make(&body), &make(&body)).is_match());
        let verdict = compare(&compiled, &make(&body), &make(&other));
        if body == other {
            prop_assert!(verdict.is_match());
        } else if verdict.is_match() {
            // Different bytes can still be the same JSON value, or decode to the same body.
            prop_assert_ne!(verdict.body, BodyComparison::Bytes);
        }
        for difference in &verdict.differences {
            for shown in [&difference.primary, &difference.candidate].into_iter().flatten() {
                prop_assert!(shown.len() <= MAX_VALUE_PREVIEW + 2 * '…'.len_utf8());
            }
        }
    }
}

#[test]
fn respelling_keeps_values() {
    let mut choices = Choices(1);
    for n in [
        "0",
        "-0.5",
        "10.5",
        "12345678901234567890123",
        "0.000123",
        "-7",
    ] {
        for _ in 0..16 {
            let spelled = respell(n, &mut choices);
            let verdict = compare(&rules(&[]), &observed(n.into()), &observed(spelled.clone()));
            assert!(verdict.is_match(), "{n} vs {spelled}");
        }
    }
}
