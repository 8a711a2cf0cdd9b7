//! Text formats for records: RFC 3339 times and CSV that spreadsheets open safely.

use std::fmt::Write as _;

use super::records::MismatchRecord;

/// The CSV header line's columns, one row per difference.
pub const CSV_COLUMNS: [&str; 18] = [
    "time",
    "route",
    "outcome",
    "request_id",
    "method",
    "path",
    "query",
    "primary_status",
    "candidate_status",
    "primary_latency_ms",
    "candidate_latency_ms",
    "location",
    "kind",
    "primary_value",
    "candidate_value",
    "noise",
    "omitted_differences",
    "error",
];

/// `records` as CSV (RFC 4180, CRLF line ends): a header line, then one row per
/// difference, or one row for a record without differences (a candidate error).
pub fn to_csv<'r>(records: impl IntoIterator<Item = &'r MismatchRecord>) -> String {
    let mut out = String::new();
    push_row(&mut out, CSV_COLUMNS.iter().map(|c| (*c).to_owned()));
    for record in records {
        let common = |out: &mut String, fields: [String; 5]| {
            let base = [
                record.time.clone(),
                record.route.clone(),
                record.outcome.as_str().to_owned(),
                record.request_id.clone(),
                record.method.clone(),
                record.path.clone(),
                record.query.clone().unwrap_or_default(),
                record.primary_status.to_string(),
                record
                    .candidate_status
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                format!("{:.3}", record.primary_latency_ms),
                format!("{:.3}", record.candidate_latency_ms),
            ];
            push_row(
                out,
                base.into_iter().chain(fields).chain([
                    record.omitted_differences.to_string(),
                    record.error.clone().unwrap_or_default(),
                ]),
            );
        };
        if record.differences.is_empty() {
            common(&mut out, Default::default());
        }
        for difference in &record.differences {
            common(
                &mut out,
                [
                    difference.location.to_string(),
                    difference.kind.as_str().to_owned(),
                    difference.primary.clone().unwrap_or_default(),
                    difference.candidate.clone().unwrap_or_default(),
                    difference.noise.to_string(),
                ],
            );
        }
    }
    out
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let in_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60,
        unix_ms % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn push_row(out: &mut String, fields: impl Iterator<Item = String>) {
    for (index, field) in fields.enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_field(out, &field);
    }
    out.push_str("\r\n");
}

/// One field: quoted when it holds a separator, quote or line break (quotes doubled); a
/// value a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab or CR first, and not
/// a plain number) gets a leading `'`, because these values come from the network.
fn push_field(out: &mut String, field: &str) {
    let formula =
        field.starts_with(['=', '+', '-', '@', '\t', '\r']) && field.parse::<f64>().is_err();
    let quote = formula || field.contains([',', '"', '\n', '\r']);
    if !quote {
        out.push_str(field);
        return;
    }
    out.push('"');
    if formula {
        out.push('\'');
    }
    for c in field.chars() {
        if c == '"' {
            out.push('"');
        }
        let _ = out.write_char(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(text: &str) -> String {
        let mut out = String::new();
        push_field(&mut out, text);
        out
    }

    #[test]
    fn quotes_per_rfc_4180() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("two\nlines"), "\"two\nlines\"");
        assert_eq!(field(""), "");
    }

    #[test]
    fn neutralizes_formulas_but_not_numbers() {
        assert_eq!(field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(field("@SUM(A1)"), "\"'@SUM(A1)\"");
        assert_eq!(field("-1+2"), "\"'-1+2\"");
        assert_eq!(field("-12.5"), "-12.5");
        assert_eq!(field("+3"), "+3");
    }

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339_millis(1_709_251_199_999),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_millis(4_102_444_800_000),
            "2100-01-01T00:00:00.000Z"
        );
    }
}
