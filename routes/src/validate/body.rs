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
            TypedScalar::Integer(text) => number(ctx, &entry_key, route, text),
            // `Display` for f64 is the shortest text that reads back as the same float,
            // without an exponent: the value the user wrote, for any number a float holds
            // (`10.50` → `10.5`). Infinities and NaN are not JSON numbers.
            TypedScalar::Float(f) => number(ctx, &entry_key, route, &f.to_string()),
            TypedScalar::Collection(kind) => {
                let message = format!(
                    "expected a string, number, boolean or null, not {kind} (lists and objects cannot be matched)"
                );
                ctx.error(&entry_key, route, message);
                None
            }
        };
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

fn number(ctx: &mut Ctx<'_>, key: &str, route: Option<&str>, text: &str) -> Option<Expected> {
    let parsed = Decimal::parse(text).map(Expected::Number);
    if parsed.is_none() {
        ctx.error(key, route, "expected a finite number");
    }
    parsed
}
