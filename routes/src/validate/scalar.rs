//! Typed readers for optional scalars (units, counts, flags) that record an error at
//! their key and return `None` when the text is invalid.

use std::time::Duration;

use super::Ctx;
use crate::file::Scalar;
use crate::units::{parse_duration, parse_percent, parse_size};

impl Ctx<'_> {
    /// A percentage (`5%`) as a fraction; `default` when absent.
    pub(super) fn percent(
        &mut self,
        key: &str,
        route: Option<&str>,
        value: Option<&Scalar>,
        default: f64,
    ) -> Option<f64> {
        let Some(value) = value else {
            return Some(default);
        };
        parse_percent(value.as_str())
            .map_err(|err| self.error(key, route, format!("invalid percentage: {err}")))
            .ok()
    }

    /// A duration greater than zero; `default` when absent.
    pub(super) fn positive_duration(
        &mut self,
        key: &str,
        route: Option<&str>,
        value: Option<&Scalar>,
        default: Duration,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        match parse_duration(value.as_str()) {
            Ok(duration) if duration.is_zero() => {
                self.error(key, route, "must be greater than zero");
                None
            }
            Ok(duration) => Some(duration),
            Err(err) => {
                self.error(key, route, format!("invalid duration: {err}"));
                None
            }
        }
    }

    /// A size in bytes (`64KiB`); `default` when absent.
    pub(super) fn size(
        &mut self,
        key: &str,
        route: Option<&str>,
        value: Option<&Scalar>,
        default: u64,
    ) -> Option<u64> {
        let Some(value) = value else {
            return Some(default);
        };
        parse_size(value.as_str())
            .map_err(|err| self.error(key, route, format!("invalid size: {err}")))
            .ok()
    }

    /// A non-negative integer (`> 0` when `positive`); `default` when absent.
    pub(super) fn count(
        &mut self,
        key: &str,
        route: Option<&str>,
        value: Option<&Scalar>,
        default: u64,
        positive: bool,
    ) -> Option<u64> {
        let Some(value) = value else {
            return Some(default);
        };
        match value.as_str().trim().parse::<u64>() {
            Ok(n) if n > 0 || !positive => Some(n),
            _ => {
                let expected = if positive {
                    "a positive"
                } else {
                    "a non-negative"
                };
                let message = format!(
                    "invalid value `{}` (expected {expected} integer)",
                    value.as_str()
                );
                self.error(key, route, message);
                None
            }
        }
    }

    /// `true` or `false`; `default` when absent.
    pub(super) fn flag(
        &mut self,
        key: &str,
        route: Option<&str>,
        value: Option<&Scalar>,
        default: bool,
    ) -> Option<bool> {
        match value.map(Scalar::as_str) {
            None => Some(default),
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                let message = format!("invalid value `{other}` (expected `true` or `false`)");
                self.error(key, route, message);
                None
            }
        }
    }

    /// A plain positive number such as `1.5` (no unit).
    pub(super) fn ratio(&mut self, key: &str, route: Option<&str>, value: &Scalar) -> Option<f64> {
        let text = value.as_str().trim();
        let plain = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        match text.parse::<f64>() {
            Ok(ratio) if plain && ratio.is_finite() && ratio > 0.0 => Some(ratio),
            _ => {
                let message = format!(
                    "invalid ratio `{}` (expected a number greater than zero, e.g. 1.5)",
                    value.as_str()
                );
                self.error(key, route, message);
                None
            }
        }
    }
}
