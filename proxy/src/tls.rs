//! TLS with rustls (ring only): the HTTPS listener's certificates and the upstream client.
//!
//! [`certs`] loads PEM certificate/key pairs and checks that they belong together,
//! [`resolver`] picks the pair for a handshake by SNI and swaps in rotated pairs,
//! [`rotation`] watches the files, and [`client`] builds the configuration used to call
//! `https://` upstreams and explains verification failures.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub mod certs;
pub mod client;
pub mod resolver;
pub mod rotation;

pub use certs::{CertPair, CertSet};
pub use resolver::CertResolver;

/// Why TLS could not be set up; each variant names the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The flags or settings do not describe a usable TLS setup (a missing flag, an
    /// invalid `server_name`).
    #[error("{0}")]
    Config(String),
    /// A file could not be read.
    #[error("cannot read {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not what it should be (no PEM block of the right kind, bad DER).
    #[error("{}: {reason}", file.display())]
    Content {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate and a key that do not belong together.
    #[error("{} and {} do not belong together: {reason}", cert.display(), key.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why, e.g. "the private key does not match the certificate's public key".
        reason: String,
    },
}

/// The one crypto provider of the binary (ring). Configurations name it explicitly instead
/// of relying on the process default, so library use and tests work without `main`.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// TLS 1.3 and 1.2; nothing older.
pub const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];
