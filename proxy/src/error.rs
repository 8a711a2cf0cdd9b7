//! Every failure of the request path, and the one function that turns it into a response.

use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, BoxBody};

/// Where a failure came from; also the `class` of the error metrics and log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The client sent something we refuse.
    Downstream,
    /// The upstream could not be reached or did not answer properly.
    Upstream,
    /// A fault of the proxy itself.
    Internal,
}

/// A failure of the request path. Each one becomes an answer, never a hang.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request is malformed (e.g. a path that cannot be normalized).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The request asks for something the proxy does not do, such as decoding a body under
    /// a transfer coding other than `chunked` (RFC 9112, section 6.1).
    #[error("not implemented: {0}")]
    NotImplemented(String),
    /// The client stopped sending its request body (`--header-timeout` without a byte).
    #[error("request timeout: {0}")]
    ClientTimeout(String),
    /// The request has more header fields than the proxy reads.
    #[error("request header fields too large: {0}")]
    TooManyHeaders(String),
    /// The request headers exceed `--max-header-bytes`.
    #[error("request headers are {size} bytes, the limit is {limit}")]
    HeadersTooLarge {
        /// Size of the request's headers in bytes.
        size: usize,
        /// The configured limit.
        limit: u64,
    },
    /// The request body exceeds `--max-body`.
    #[error("request body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// The upstream refused or could not be connected to.
    #[error("upstream {upstream} unreachable: {reason}")]
    UpstreamConnect {
        /// Name of the upstream.
        upstream: String,
        /// Why, e.g. "connection refused".
        reason: String,
    },
    /// The upstream did not answer within its `timeout` (or `connect_timeout`).
    #[error("upstream {upstream} did not answer within {after:?}")]
    UpstreamTimeout {
        /// Name of the upstream.
        upstream: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// The upstream broke the exchange (reset, closed early, protocol error).
    #[error("upstream {upstream} failed: {reason}")]
    UpstreamBroken {
        /// Name of the upstream.
        upstream: String,
        /// What went wrong.
        reason: String,
    },
    /// A route's hook failed and its entry says `on_error: fail` (fail closed).
    #[error("hook failed: {0}")]
    Hook(String),
    /// A fault of the proxy.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    /// The status code the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::HeadersTooLarge { .. } | Self::TooManyHeaders(_) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UpstreamConnect { .. } | Self::UpstreamBroken { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Hook(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Where the failure came from.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::BadRequest(_)
            | Self::NotImplemented(_)
            | Self::ClientTimeout(_)
            | Self::HeadersTooLarge { .. }
            | Self::TooManyHeaders(_)
            | Self::BodyTooLarge { .. } => ErrorClass::Downstream,
            Self::UpstreamConnect { .. }
            | Self::UpstreamTimeout { .. }
            | Self::UpstreamBroken { .. } => ErrorClass::Upstream,
            Self::Hook(_) | Self::Internal(_) => ErrorClass::Internal,
        }
    }

    /// A short, closed label for metrics (`strangler_upstream_errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NotImplemented(_) => "not_implemented",
            Self::ClientTimeout(_) => "client_timeout",
            Self::HeadersTooLarge { .. } | Self::TooManyHeaders(_) => "headers_too_large",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::UpstreamConnect { .. } => "connect",
            Self::UpstreamTimeout { .. } => "timeout",
            Self::UpstreamBroken { .. } => "broken",
            Self::Hook(_) => "hook",
            Self::Internal(_) => "internal",
        }
    }

    /// The answer the client gets: the status, a one-line plain-text reason, the request id.
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<BoxBody> {
        let mut response = Response::new(body::full(format!("{self}\n")));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, crate::headers::TEXT_PLAIN);
        headers.insert(crate::headers::X_REQUEST_ID, request_id.clone());
        if self.class() == ErrorClass::Downstream {
            // The request may not have been read to its end; do not reuse the connection.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_status() {
        let timeout = ProxyError::UpstreamTimeout {
            upstream: "monolith".into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        let refused = ProxyError::UpstreamConnect {
            upstream: "monolith".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(refused.class(), ErrorClass::Upstream);
        let big = ProxyError::BodyTooLarge { limit: 10 };
        assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn the_response_carries_reason_and_request_id() {
        let err = ProxyError::BadRequest("path must start with /".into());
        let id = HeaderValue::from_static("abc");
        let response = err.to_response(&id);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[crate::headers::X_REQUEST_ID], "abc");
    }
}
