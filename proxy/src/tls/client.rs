//! The TLS side of `https://` upstreams: trust roots, and failures explained in words.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::{CertificateError, ClientConfig, RootCertStore};

use super::{TlsError, certs};

/// An upstream's `tls.ca` file as read when its pool was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    /// The file.
    pub file: PathBuf,
    /// Its PEM content.
    pub pem: Vec<u8>,
}

impl CaBundle {
    /// Read `file`.
    ///
    /// # Errors
    /// [`TlsError::Read`] naming the file.
    pub fn read(file: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            file: file.to_path_buf(),
            pem: certs::read(file)?,
        })
    }

    /// Whether the file still holds what was read (a pool built from it is still right).
    pub fn is_current(&self) -> bool {
        std::fs::read(&self.file).is_ok_and(|pem| pem == self.pem)
    }
}

/// The client configuration for an upstream: TLS 1.3 and 1.2, verified against the public
/// web roots (Mozilla's list, compiled in) or, with `ca`, against that PEM bundle only.
/// ALPN is left empty: the connector sets it from the upstream's HTTP versions.
///
/// # Errors
/// [`TlsError`] naming the CA file when it holds no usable certificate.
pub fn client_config(ca: Option<&CaBundle>) -> Result<ClientConfig, TlsError> {
    let roots = match ca {
        Some(bundle) => Arc::new(bundle_roots(bundle)?),
        None => public_roots(),
    };
    Ok(ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(super::PROTOCOL_VERSIONS)
        .map_err(|err| TlsError::Config(format!("tls configuration: {err}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A failed upstream handshake in words: which check failed and why, with rustls' own name
/// for it in parentheses so that logs can be searched for either.
pub fn describe(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(cert) => {
            format!(
                "certificate verification failed: {}",
                describe_certificate(cert)
            )
        }
        rustls::Error::NoApplicationProtocol => {
            "tls handshake failed: the upstream supports none of the offered protocols (ALPN)"
                .into()
        }
        rustls::Error::AlertReceived(alert) => {
            format!("tls handshake failed: the upstream sent the alert {alert:?}")
        }
        rustls::Error::PeerIncompatible(why) => {
            format!("tls handshake failed: no common ground with the upstream ({why:?})")
        }
        other => format!("tls handshake failed: {other}"),
    }
}

fn describe_certificate(err: &CertificateError) -> String {
    match err {
        CertificateError::UnknownIssuer => {
            "unknown issuer (UnknownIssuer): no trusted CA signed the upstream's certificate \
             (check the upstream's tls.ca)"
                .into()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "name mismatch (NotValidForName): {err} (tls.server_name sets the name checked)"
            )
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("expired (Expired): {err}")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("not valid yet (NotValidYet): {err}")
        }
        CertificateError::Other(other)
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::CaUsedAsEndEntity)
            ) =>
        {
            "the upstream presents a CA certificate as its own (CaUsedAsEndEntity); \
             it needs a server certificate signed by that CA"
                .into()
        }
        other => other.to_string(),
    }
}

/// The compiled-in public roots, built once.
fn public_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            Arc::new(RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        })
        .clone()
}

fn bundle_roots(bundle: &CaBundle) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let certificates = certs::parse_certificates(&bundle.file, &bundle.pem)?;
    for (index, cert) in certificates.into_iter().enumerate() {
        roots.add(cert).map_err(|err| TlsError::Content {
            file: bundle.file.clone(),
            reason: format!("certificate #{} is not a usable CA: {err}", index + 1),
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verification_failures_say_why() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(describe(&unknown).contains("unknown issuer (UnknownIssuer)"));
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: rustls::pki_types::ServerName::try_from("a.test").unwrap(),
            presented: vec!["DnsName(\"b.test\")".into()],
        });
        let text = describe(&name);
        assert!(
            text.contains("name mismatch") && text.contains("a.test"),
            "{text}"
        );
        let expired = rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                200,
            )),
            not_after: rustls::pki_types::UnixTime::since_unix_epoch(
                std::time::Duration::from_secs(100),
            ),
        });
        let text = describe(&expired);
        assert!(
            text.contains("expired (Expired)") && text.contains("100 seconds ago"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let err = CaBundle::read(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let empty = CaBundle {
            file: PathBuf::from("/etc/empty.pem"),
            pem: b"not pem".to_vec(),
        };
        let err = client_config(Some(&empty)).unwrap_err();
        assert!(
            err.to_string().contains("/etc/empty.pem: no certificate"),
            "{err}"
        );
    }
}
