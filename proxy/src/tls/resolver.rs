//! The listener's certificate choice: by SNI name, from a set that rotation swaps whole.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{CertSet, TlsError};

/// Picks the certificate of each new handshake from the current [`CertSet`].
///
/// A swap only affects handshakes that start after it: established connections keep the
/// certificate they were opened with.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<CertSet>,
}

impl CertResolver {
    /// A resolver serving `set`.
    pub fn new(set: CertSet) -> Self {
        Self {
            current: ArcSwap::from_pointee(set),
        }
    }

    /// Serve `set` to every handshake from now on.
    pub fn replace(&self, set: CertSet) {
        self.current.store(Arc::new(set));
    }

    /// The set being served.
    pub fn current(&self) -> Arc<CertSet> {
        self.current.load_full()
    }

    /// The server configuration of the TLS listeners: TLS 1.3 and 1.2, no client
    /// certificates, ALPN `h2` then `http/1.1`, certificates chosen by `self`.
    ///
    /// # Errors
    /// [`TlsError::Config`] if the crypto provider refuses the protocol versions (it does
    /// not with ring; kept as an error rather than a panic).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(super::provider())
            .with_protocol_versions(super::PROTOCOL_VERSIONS)
            .map_err(|err| TlsError::Config(format!("tls configuration: {err}")))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // `load` (not `load_full`): the guard lives only for this synchronous call.
        self.current.load().select(hello.server_name()).cloned()
    }
}
