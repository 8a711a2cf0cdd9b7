//! JSON numbers compared as exact decimals, whatever their spelling or size.

/// A JSON number as an exact decimal: `(-1)^negative × digits × 10^scale`.
#[derive(Debug, Clone, Copy)]
struct Decimal<'a> {
    negative: bool,
    integer: &'a [u8],
    fraction: &'a [u8],
    /// Significant digits of `integer ++ fraction`: `skip` leading zeros, then `len` digits.
    skip: usize,
    len: usize,
    scale: i128,
}

/// Whether two JSON number texts denote the same value (`10.5` = `10.50` = `1.05e1`).
///
/// Exact for any number of digits. An exponent with more than 30 digits cannot be scaled
/// exactly; such numbers are equal only when their texts are.
pub(crate) fn numbers_equal(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (Decimal::parse(a), Decimal::parse(b)) {
        (Some(x), Some(y)) => x.equals(&y),
        _ => false,
    }
}

impl<'a> Decimal<'a> {
    /// Split a number already known to follow the JSON grammar; `None` if its exponent is
    /// too long to scale exactly.
    fn parse(text: &'a str) -> Option<Self> {
        let bytes = text.as_bytes();
        let (negative, rest) = match bytes.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, bytes),
        };
        let mantissa_end = rest
            .iter()
            .position(|b| matches!(b, b'e' | b'E'))
            .unwrap_or(rest.len());
        let (mantissa, exponent) = rest.split_at(mantissa_end);
        let (integer, fraction) = match mantissa.iter().position(|&b| b == b'.') {
            Some(dot) => (
                &mantissa[..dot],
                mantissa.get(dot + 1..).unwrap_or_default(),
            ),
            None => (mantissa, &[][..]),
        };
        let exponent = parse_exponent(exponent.get(1..).unwrap_or_default())?;
        let digits = || integer.iter().chain(fraction);
        let total = integer.len() + fraction.len();
        let skip = digits().take_while(|&&b| b == b'0').count();
        let trailing = if skip == total {
            0
        } else {
            digits().rev().take_while(|&&b| b == b'0').count()
        };
        let len = total - skip - trailing;
        let scale = exponent - fraction.len() as i128 + trailing as i128;
        Some(Self {
            negative,
            integer,
            fraction,
            skip,
            len,
            scale,
        })
    }

    fn significant(&self) -> impl Iterator<Item = &u8> {
        self.integer
            .iter()
            .chain(self.fraction)
            .skip(self.skip)
            .take(self.len)
    }

    fn equals(&self, other: &Decimal<'_>) -> bool {
        if self.len == 0 || other.len == 0 {
            // Zero has no sign and no scale: 0 = -0 = 0.0 = 0e7.
            return self.len == other.len;
        }
        self.negative == other.negative
            && self.len == other.len
            && self.scale == other.scale
            && self.significant().eq(other.significant())
    }
}

fn parse_exponent(text: &[u8]) -> Option<i128> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let start = digits
        .iter()
        .position(|&b| b != b'0')
        .unwrap_or(digits.len());
    let digits = digits.get(start..).unwrap_or_default();
    if digits.len() > 30 {
        return None;
    }
    let magnitude = digits
        .iter()
        .fold(0i128, |acc, &b| acc * 10 + i128::from(b - b'0'));
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_by_exact_value() {
        let equal = [
            ("10.5", "10.50"),
            ("10.5", "1.05e1"),
            ("1050", "1.05E+3"),
            ("0", "-0"),
            ("0", "0.000e-5"),
            ("100", "1e2"),
            ("0.001", "1e-3"),
            ("-12.0", "-12"),
            ("12345678901234567890123", "1234567890123456789012.3e1"),
        ];
        for (a, b) in equal {
            assert!(numbers_equal(a, b), "{a} = {b}");
            assert!(numbers_equal(b, a), "{b} = {a}");
        }
        let different = [
            ("12345678901234567890123", "12345678901234567890124"),
            ("1", "-1"),
            ("10.5", "10.05"),
            ("100", "10"),
            ("1e2", "1e3"),
            ("0.1", "0.10000000000000000000000001"),
            ("1e0000000000000000000000000000000000001", "1e2"),
        ];
        for (a, b) in different {
            assert!(!numbers_equal(a, b), "{a} != {b}");
        }
        // Exponents too long to scale are compared as text.
        let huge = "1e1000000000000000000000000000000000";
        assert!(numbers_equal(huge, huge));
        assert!(!numbers_equal(huge, "10e999999999999999999999999999999999"));
    }
}
