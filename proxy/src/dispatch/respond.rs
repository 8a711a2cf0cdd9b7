//! The `respond` strategy: a fixed answer from the route file, no upstream involved.

use http::Response;
use strangler_routes::Respond;

use crate::body::{self, BoxBody};

/// The answer configured by `respond:`.
pub(super) fn respond(spec: &Respond) -> Response<BoxBody> {
    let mut response = Response::new(body::full(spec.body.clone()));
    *response.status_mut() = spec.status;
    let headers = response.headers_mut();
    if !spec
        .headers
        .iter()
        .any(|(name, _)| name == http::header::CONTENT_TYPE)
    {
        headers.insert(http::header::CONTENT_TYPE, crate::headers::TEXT_PLAIN);
    }
    for (name, value) in &spec.headers {
        headers.append(name.clone(), value.clone());
    }
    response
}
