//! What a route's comparison ignores and redacts: plain settings compiled into matchers once.

use http::{HeaderMap, HeaderName};

use super::pointer::{PatternError, PatternSet, PointerPattern};

/// Response headers never compared, whatever the route says.
///
/// They describe one exchange or one hop rather than the answer: time and identity
/// (`date`, `server`, `x-request-id`, `age`, `expires`, `via`), hop-by-hop headers, and the
/// framing of a body that is compared after decoding (`content-length`, `content-encoding`,
/// `transfer-encoding`) — a gzipped and a plain copy of the same JSON are the same answer.
pub const DEFAULT_IGNORED_HEADERS: &[&str] = &[
    "date",
    "server",
    "x-request-id",
    "age",
    "expires",
    "via",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "content-encoding",
];

/// Headers whose values are never shown (in differences or in recorded requests).
pub const DEFAULT_REDACTED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// Query parameters whose values are never shown in recorded requests.
pub const DEFAULT_REDACTED_QUERY: &[&str] = &["access_token", "api_key", "apikey", "password"];

/// Default cap on a body after decoding its content coding (8 × the default `max_body` of 1 MiB).
pub const DEFAULT_MAX_DECODED_BODY: usize = 8 << 20;

/// The text shown in place of a redacted value.
pub const REDACTED: &str = "[redacted]";

/// A route's comparison settings, as the route file states them (`shadow.compare`).
///
/// The defaults ([`DEFAULT_IGNORED_HEADERS`], [`DEFAULT_REDACTED_HEADERS`],
/// [`DEFAULT_REDACTED_QUERY`]) always apply; these lists add to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareRules {
    /// Response headers not compared (case-insensitive names).
    pub ignore_headers: Vec<String>,
    /// JSON pointer patterns not compared, `*` matching any key or index; a pattern also
    /// ignores everything below it (`/meta` ignores `/meta/generated_at`).
    pub ignore_json: Vec<String>,
    /// Headers (request and response) whose values are shown as `[redacted]`.
    pub redact_headers: Vec<String>,
    /// JSON pointer patterns whose values (and everything below) are shown as `[redacted]`.
    /// A JSON body compared with a non-JSON one is then shown as a redacted JSON value;
    /// a body that is not JSON is shown as is (a window of at most 200 bytes).
    pub redact_json: Vec<String>,
    /// Query parameters whose values are shown as `[redacted]` in records.
    pub redact_query: Vec<String>,
    /// Largest body compared after decoding gzip/deflate/br; a larger one makes the pair
    /// incomparable (a zip bomb cannot make the comparison allocate more). Suggested:
    /// 8 × the route's `max_body`.
    pub max_decoded_body: usize,
}

/// [`CompareRules`] compiled into matchers; immutable and cheap to share.
#[derive(Debug, Clone)]
pub struct CompiledRules {
    ignore_headers: HeaderSet,
    redact_headers: HeaderSet,
    redact_query: Vec<String>,
    pub(crate) ignore_json: PatternSet,
    pub(crate) redact_json: PatternSet,
    pub(crate) max_decoded_body: usize,
}

/// A setting of [`CompareRules`] that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compare.{key}: invalid entry {value:?}: {reason}")]
pub struct RulesError {
    /// Which list holds the bad entry (`ignore_headers`, `ignore_json`, ...).
    pub key: &'static str,
    /// The entry as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Default for CompareRules {
    fn default() -> Self {
        Self {
            ignore_headers: Vec::new(),
            ignore_json: Vec::new(),
            redact_headers: Vec::new(),
            redact_json: Vec::new(),
            redact_query: Vec::new(),
            max_decoded_body: DEFAULT_MAX_DECODED_BODY,
        }
    }
}

impl CompareRules {
    /// Compile into matchers.
    ///
    /// # Errors
    /// [`RulesError`] naming the first entry that is not a valid header name or JSON
    /// pointer pattern (see [`PointerPattern::parse`]).
    pub fn compile(&self) -> Result<CompiledRules, RulesError> {
        Ok(CompiledRules {
            ignore_headers: header_set(
                "ignore_headers",
                DEFAULT_IGNORED_HEADERS,
                &self.ignore_headers,
            )?,
            redact_headers: header_set(
                "redact_headers",
                DEFAULT_REDACTED_HEADERS,
                &self.redact_headers,
            )?,
            redact_query: DEFAULT_REDACTED_QUERY
                .iter()
                .map(|key| (*key).to_owned())
                .chain(self.redact_query.iter().map(|key| key.to_ascii_lowercase()))
                .collect(),
            ignore_json: pattern_set("ignore_json", &self.ignore_json)?,
            redact_json: pattern_set("redact_json", &self.redact_json)?,
            max_decoded_body: self.max_decoded_body,
        })
    }
}

impl Default for CompiledRules {
    fn default() -> Self {
        // The defaults are valid header names, so this cannot fail; fall back to empty sets
        // rather than panic should that ever change.
        CompareRules::default()
            .compile()
            .unwrap_or_else(|_| CompiledRules {
                ignore_headers: HeaderSet::default(),
                redact_headers: HeaderSet::default(),
                redact_query: Vec::new(),
                ignore_json: PatternSet::default(),
                redact_json: PatternSet::default(),
                max_decoded_body: DEFAULT_MAX_DECODED_BODY,
            })
    }
}

impl CompiledRules {
    /// Whether response header `name` is left out of the comparison.
    pub fn ignores_header(&self, name: &HeaderName) -> bool {
        self.ignore_headers.contains_key(name)
    }

    /// Whether the values of header `name` are shown as `[redacted]`.
    pub fn redacts_header(&self, name: &HeaderName) -> bool {
        self.redact_headers.contains_key(name)
    }

    /// Whether query parameter `key` (already percent-decoded) is shown as `[redacted]`.
    pub fn redacts_query_key(&self, key: &str) -> bool {
        self.redact_query
            .iter()
            .any(|redacted| redacted.eq_ignore_ascii_case(key))
    }

    /// The JSON ignore patterns.
    pub fn ignored_json(&self) -> &[PointerPattern] {
        self.ignore_json.patterns()
    }

    /// The JSON redaction patterns.
    pub fn redacted_json(&self) -> &[PointerPattern] {
        self.redact_json.patterns()
    }

    /// The cap on a decoded body.
    pub fn max_decoded_body(&self) -> usize {
        self.max_decoded_body
    }
}

/// A set of header names, looked up the way a header map finds a name: far cheaper per
/// comparison than a `HashSet`'s SipHash.
type HeaderSet = HeaderMap<()>;

fn header_set(
    key: &'static str,
    defaults: &[&str],
    configured: &[String],
) -> Result<HeaderSet, RulesError> {
    defaults
        .iter()
        .copied()
        .chain(configured.iter().map(String::as_str))
        .map(|name| {
            HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                .map(|name| (name, ()))
                .map_err(|_| RulesError {
                    key,
                    value: name.to_owned(),
                    reason: "not a valid header name".into(),
                })
        })
        .collect()
}

fn pattern_set(key: &'static str, configured: &[String]) -> Result<PatternSet, RulesError> {
    configured
        .iter()
        .map(|text| {
            PointerPattern::parse(text).map_err(|error: PatternError| RulesError {
                key,
                value: text.clone(),
                reason: error.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(PatternSet::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_always_apply() {
        let rules = CompareRules {
            ignore_headers: vec!["X-Trace".into()],
            redact_headers: vec!["x-secret".into()],
            redact_query: vec!["Token".into()],
            ..CompareRules::default()
        }
        .compile()
        .unwrap();
        assert!(rules.ignores_header(&HeaderName::from_static("date")));
        assert!(rules.ignores_header(&HeaderName::from_static("x-trace")));
        assert!(!rules.ignores_header(&HeaderName::from_static("etag")));
        assert!(rules.redacts_header(&HeaderName::from_static("authorization")));
        assert!(rules.redacts_header(&HeaderName::from_static("x-secret")));
        assert!(rules.redacts_query_key("token"));
        assert!(rules.redacts_query_key("ACCESS_TOKEN"));
        assert!(!rules.redacts_query_key("page"));
    }

    #[test]
    fn reports_the_bad_entry() {
        let error = CompareRules {
            ignore_json: vec!["/ok".into(), "no-slash".into()],
            ..CompareRules::default()
        }
        .compile()
        .unwrap_err();
        assert_eq!(error.key, "ignore_json");
        assert_eq!(error.value, "no-slash");
        let error = CompareRules {
            redact_headers: vec!["bad header".into()],
            ..CompareRules::default()
        }
        .compile()
        .unwrap_err();
        assert_eq!(error.key, "redact_headers");
        assert!(error.to_string().contains("bad header"), "{error}");
    }
}
