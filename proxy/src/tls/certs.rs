//! Certificate/key pairs from PEM files, checked to belong together before they are served.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;

use super::TlsError;

/// The files of one certificate pair, as given by `--tls-cert F --tls-key F`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

/// Loaded pairs in flag order; the first one is served when no other matches the SNI name.
#[derive(Debug)]
pub struct CertSet {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    pair: CertPair,
    key: Arc<CertifiedKey>,
}

impl CertSet {
    /// Load and check every pair.
    ///
    /// # Errors
    /// [`TlsError`] naming the first file that cannot be read or parsed, or the first pair
    /// whose key does not match its certificate; [`TlsError::Config`] for an empty list.
    pub fn load(pairs: &[CertPair]) -> Result<Self, TlsError> {
        if pairs.is_empty() {
            return Err(TlsError::Config(
                "a TLS listener needs at least one --tls-cert/--tls-key pair".into(),
            ));
        }
        let entries = pairs
            .iter()
            .map(|pair| {
                Ok(Entry {
                    pair: pair.clone(),
                    key: Arc::new(load_pair(pair)?),
                })
            })
            .collect::<Result<_, TlsError>>()?;
        Ok(Self { entries })
    }

    /// The pair to serve for the SNI name `server_name`: the first whose certificate names
    /// it (subject alternative DNS names, wildcards included), else the first pair.
    pub fn select(&self, server_name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let named = server_name
            .and_then(|name| DnsName::try_from(name).ok())
            .map(|name| ServerName::DnsName(name.to_owned()));
        if let Some(name) = named
            && let Some(entry) = self.entries.iter().find(|e| names(&e.key, &name))
        {
            return Some(&entry.key);
        }
        self.entries.first().map(|entry| &entry.key)
    }

    /// The files this set was loaded from.
    pub fn pairs(&self) -> impl Iterator<Item = &CertPair> {
        self.entries.iter().map(|entry| &entry.pair)
    }
}

/// Whether the end-entity certificate of `key` is valid for `name`.
fn names(key: &CertifiedKey, name: &ServerName<'_>) -> bool {
    key.cert
        .first()
        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
        .is_some_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
}

fn load_pair(pair: &CertPair) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates(&pair.cert)?;
    if let Some(Err(err)) = chain.first().map(webpki::EndEntityCert::try_from) {
        return Err(TlsError::Content {
            file: pair.cert.clone(),
            reason: format!("the first certificate cannot be parsed: {err}"),
        });
    }
    let key_pem = read(&pair.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| TlsError::Content {
        file: pair.key.clone(),
        reason: match err {
            pem::Error::NoItemsFound => {
                "no private key found (expected a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)".into()
            }
            other => format!("invalid PEM: {other}"),
        },
    })?;
    let signing_key = super::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|err| TlsError::Content {
            file: pair.key.clone(),
            reason: format!("unusable private key: {err}"),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // ring can tell the public key of every key type it loads; "unknown" cannot happen
        // with it, and refusing the pair for it would refuse a working configuration.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::Mismatch {
                cert: pair.cert.clone(),
                key: pair.key.clone(),
                reason: "the private key does not match the certificate's public key".into(),
            })
        }
        Err(err) => Err(TlsError::Mismatch {
            cert: pair.cert.clone(),
            key: pair.key.clone(),
            reason: err.to_string(),
        }),
    }
}

/// Every certificate of a PEM file, in order; an error when there is none.
///
/// # Errors
/// [`TlsError::Read`] when the file cannot be read, [`TlsError::Content`] when it holds no
/// certificate or broken PEM.
pub fn read_certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certificates(file, &read(file)?)
}

/// Every certificate of `bytes`, the PEM content of `file`; an error when there is none.
///
/// # Errors
/// [`TlsError::Content`] naming `file` when it holds no certificate or broken PEM.
pub fn parse_certificates(
    file: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Content {
            file: file.to_path_buf(),
            reason: format!("invalid PEM: {err}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Content {
            file: file.to_path_buf(),
            reason: "no certificate found (expected a PEM CERTIFICATE block)".into(),
        });
    }
    Ok(chain)
}

/// The content of `file`.
///
/// # Errors
/// [`TlsError::Read`] naming the file.
pub fn read(file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|source| TlsError::Read {
        file: file.to_path_buf(),
        source,
    })
}
