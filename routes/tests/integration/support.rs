//! Helpers shared by the integration tests.

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use strangler_routes::{ConfigError, RequestView, RouteTable, parse_str};

pub(crate) fn table(yaml: &str) -> RouteTable {
    match parse_str(Path::new("routes.yaml"), yaml) {
        Ok(table) => table,
        Err(errors) => panic!("expected a valid file, got:\n{errors}"),
    }
}

pub(crate) fn errors(yaml: &str) -> Vec<ConfigError> {
    match parse_str(Path::new("routes.yaml"), yaml) {
        Ok(_) => panic!("expected errors, the file is valid"),
        Err(errors) => errors.errors,
    }
}

/// An owned request to build `RequestView`s from.
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub host: Option<String>,
    pub headers: HeaderMap,
}

impl Req {
    pub(crate) fn new(method: &str, target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (target.to_owned(), None),
        };
        Req {
            method: Method::from_bytes(method.as_bytes()).unwrap(),
            path,
            query,
            host: None,
            headers: HeaderMap::new(),
        }
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        self
    }

    pub(crate) fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }

    pub(crate) fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            host: self.host.as_deref(),
            headers: &self.headers,
            body: None,
        }
    }
}

/// The name of the route `find` picks, checked against `explain` (a linear scan).
pub(crate) fn route_for(table: &RouteTable, req: &Req) -> Option<String> {
    let found = table.find(&req.view()).map(|route| route.name.clone());
    let explained = table.explain(&req.view()).chosen;
    assert_eq!(
        found, explained,
        "index and linear scan disagree for {} {}",
        req.method, req.path
    );
    found
}
