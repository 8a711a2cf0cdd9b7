//! The admin endpoint: liveness and readiness probes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::{self, BoxBody};
use crate::pipeline::ConnInfo;
use crate::server::Handler;

/// Whether the proxy should receive traffic: false while starting and while draining.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Mark the proxy ready (listeners bound, first table loaded) or not (draining).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether the proxy is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The admin endpoint's request handler.
pub struct Admin {
    readiness: Arc<Readiness>,
}

impl Admin {
    /// An admin endpoint reporting `readiness`.
    pub fn new(readiness: Arc<Readiness>) -> Self {
        Self { readiness }
    }

    fn answer(&self, request: &Request<Incoming>) -> Response<BoxBody> {
        match (request.method(), request.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET | &Method::HEAD, "/readyz") if self.readiness.get() => {
                text(StatusCode::OK, "ready\n")
            }
            (&Method::GET | &Method::HEAD, "/readyz") => {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
            (_, "/healthz" | "/readyz") => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

impl Handler for Admin {
    async fn call(self: Arc<Self>, request: Request<Incoming>, _conn: ConnInfo) -> Response<BoxBody> {
        self.answer(&request)
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<BoxBody> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
