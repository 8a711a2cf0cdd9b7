//! Parsers for the unit-bearing scalars of the route file: durations, sizes, percentages.

use std::time::Duration;

use thiserror::Error;

/// Why a duration, size or percentage could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnitError {
    /// The text was empty.
    #[error("empty value")]
    Empty,
    /// A number without a unit, e.g. `10` instead of `10s`.
    #[error("`{0}` has no unit (write e.g. {1})")]
    MissingUnit(String, &'static str),
    /// A unit that is not one of the accepted ones.
    #[error("`{0}` has an unknown unit (accepted: {1})")]
    UnknownUnit(String, &'static str),
    /// The number part is not a valid non-negative number.
    #[error("`{0}` is not a valid number")]
    BadNumber(String),
    /// The value does not fit in the target type, or is outside the allowed range.
    #[error("`{0}` is out of range{1}")]
    OutOfRange(String, &'static str),
}

const DURATION_UNITS: &str = "ms, s, m, h";
const SIZE_UNITS: &str = "B, KB, MB, GB, KiB, MiB, GiB";

/// Parses a duration such as `250ms`, `10s`, `1.5s`, `2m` or `1h`.
///
/// # Errors
/// A bare number (no unit), an unknown unit, a malformed or negative number, or a value
/// too large to represent.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let (number, unit) = split_number(text)?;
    if unit.is_empty() {
        return Err(UnitError::MissingUnit(text.to_owned(), "`250ms` or `10s`"));
    }
    let millis_per_unit: f64 = match unit {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(UnitError::UnknownUnit(text.to_owned(), DURATION_UNITS)),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| UnitError::BadNumber(text.to_owned()))?;
    let millis = value * millis_per_unit;
    // About 31 years: anything larger is a typo, and keeps us far from f64 → u64 overflow.
    if !millis.is_finite() || millis > 1.0e12 {
        return Err(UnitError::OutOfRange(text.to_owned(), ""));
    }
    Ok(Duration::from_micros((millis * 1_000.0).round() as u64))
}

/// Parses a size in bytes such as `512B`, `1KB` (1000), `64KiB` (65536) or `1MiB`.
///
/// # Errors
/// A bare number (no unit), an unknown unit, a malformed number, a fractional number of
/// bytes, or a value that does not fit in `u64`.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let (number, unit) = split_number(text)?;
    if unit.is_empty() {
        return Err(UnitError::MissingUnit(text.to_owned(), "`64KiB` or `512B`"));
    }
    let multiplier: u64 = match unit {
        "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(UnitError::UnknownUnit(text.to_owned(), SIZE_UNITS)),
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| UnitError::OutOfRange(text.to_owned(), ""));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| UnitError::BadNumber(text.to_owned()))?;
    let bytes = value * multiplier as f64;
    if bytes.fract() != 0.0 {
        return Err(UnitError::BadNumber(text.to_owned()));
    }
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(UnitError::OutOfRange(text.to_owned(), ""));
    }
    Ok(bytes as u64)
}

/// Parses a percentage such as `5%` or `0.5%` (between 0 and 100) into a fraction in
/// `0.0..=1.0` (`5%` → `0.05`).
///
/// # Errors
/// A missing `%` sign, a malformed number, or a value outside `0%..=100%`.
pub fn parse_percent(text: &str) -> Result<f64, UnitError> {
    let (number, unit) = split_number(text)?;
    match unit {
        "%" => {}
        "" => return Err(UnitError::MissingUnit(text.to_owned(), "`5%` or `0.5%`")),
        _ => return Err(UnitError::UnknownUnit(text.to_owned(), "%")),
    }
    let value: f64 = number
        .parse()
        .map_err(|_| UnitError::BadNumber(text.to_owned()))?;
    if !(0.0..=100.0).contains(&value) {
        return Err(UnitError::OutOfRange(text.to_owned(), " (0% to 100%)"));
    }
    Ok(value / 100.0)
}

/// Splits `"  10.5 ms "` into `("10.5", "ms")`; the number must be plain decimal digits
/// with at most one dot (no sign, no exponent, no `inf`/`nan`).
fn split_number(text: &str) -> Result<(&str, &str), UnitError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(UnitError::Empty);
    }
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let dots = number.bytes().filter(|b| *b == b'.').count();
    if number.is_empty() || dots > 1 || number.starts_with('.') || number.ends_with('.') {
        return Err(UnitError::BadNumber(text.to_owned()));
    }
    Ok((number, unit.trim_start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("250ms", 250),
            ("10s", 10_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("1.5s", 1_500),
            ("0s", 0),
        ];
        for (text, millis) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
        for bad in [
            "10", "", "s", "10x", "-1s", "1..5s", "1e3s", "10 days", ".5s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_duration("10"),
            Err(UnitError::MissingUnit(..))
        ));
        assert!(parse_duration("99999999999h").is_err());
    }

    #[test]
    fn sizes() {
        let ok = [
            ("512B", 512),
            ("1KB", 1000),
            ("64KiB", 65_536),
            ("1MiB", 1_048_576),
            ("1.5KiB", 1536),
            ("2GB", 2_000_000_000),
        ];
        for (text, bytes) in ok {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["512", "1.3B", "1XB", "KiB", "99999999999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn percents() {
        assert_eq!(parse_percent("5%"), Ok(0.05));
        assert_eq!(parse_percent("0.5%"), Ok(0.005));
        assert_eq!(parse_percent("100%"), Ok(1.0));
        assert_eq!(parse_percent("0%"), Ok(0.0));
        for bad in ["5", "101%", "-1%", "5 percent", "%"] {
            assert!(parse_percent(bad).is_err(), "{bad}");
        }
    }
}
