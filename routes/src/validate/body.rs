//! `routes[N].match.json` → [`JsonPredicate`]s.

use std::collections::BTreeMap;

use super::Ctx;
use crate::file::TypedScalar;
use crate::matching::{Decimal, Expected, JsonPredicate, pointer_tokens};

/// Compiles each `"/pointer": value` entry, recording every bad pointer or value.
pub(super) fn compile_json(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    raw: &BTreeMap<String, TypedScalar>,
) -> Vec<JsonPredicate> {
    if raw.is_empty() {
        ctx.error(key, route, "must not be empty");
    }
    let mut out = Vec::new();
    for (pointer, value) in raw {
        let entry_key = format!("{key}.{pointer}");
        let tokens = match pointer_tokens(pointer) {
            Ok(tokens) => Some(tokens),
            Err(reason) => {
                ctx.error(
                    &entry_key,
                    route,
                    format!("invalid JSON pointer `{pointer}`: {reason}"),
                );
                None
            }
        };
        let expected = match value {
            TypedScalar::Null => Some(Expected::Null),
            TypedScalar::Bool(b) => Some(Expected::Bool(*b)),
            TypedScalar::Str(s) => Some(Expected::Str(s.clone())),
            TypedScalar::Integer(text) => Decimal::parse(text).map(Expected::Number),
            TypedScalar::Float(f) if f.is_finite() => {
                // `Display` for f64 is the shortest text that reads back as the same
                // float, and never uses an exponent: exactly what the user wrote for
                // any number a float can hold (`10.50` → `10.5`).
                Decimal::parse(&f.to_string()).map(Expected::Number)
            }
            TypedScalar::Float(_) => None,
        };
        if expected.is_none() {
            ctx.error(&entry_key, route, "expected a finite number");
        }
        if let (Some(tokens), Some(expected)) = (tokens, expected) {
            out.push(JsonPredicate {
                pointer: pointer.clone(),
                tokens,
                expected,
            });
        }
    }
    out
}
