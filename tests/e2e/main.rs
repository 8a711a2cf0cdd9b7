//! End-to-end tests: the real `strangler` binary between real upstreams and real clients,
//! everything on loopback with OS-chosen ports.
#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod admin;
mod canary;
mod cli;
mod dashboard;
mod errors;
mod framing;
mod hooks;
mod keepalive;
mod passthrough;
mod protocols;
mod reload;
mod shadow;
mod shutdown;
mod support;
mod tls;
