//! routes.toml's `[tls]` table, and loading the certificate chain and private key it
//! names (at start, by `wshost check`, and on every change of the files).
//!
//! ```toml
//! [tls]                                # optional: serve wss:// (and https:// static files)
//! cert-file = "certs/fullchain.pem"    # required: the certificate chain, leaf first (PEM)
//! key-file = "certs/privkey.pem"       # required: its private key (PEM: PKCS#8, PKCS#1 or SEC1)
//! ```
//!
//! Loading checks what a client would otherwise find out mid-handshake: the chain has a
//! certificate, the first one parses as X.509, the key is one rustls can sign with, and
//! it is the key of that first certificate.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde::Deserialize;
use toml::Spanned;

/// A validated `[tls]` table, with the pair its files held when routes.toml was read.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The certificate chain file (absolute).
    pub cert_file: PathBuf,
    /// The private key file (absolute).
    pub key_file: PathBuf,
    /// The pair as loaded from those files when the configuration was read.
    pub pair: Pair,
}

impl TlsConfig {
    /// Whether `other` names the same two files (what a routes.toml reload compares).
    pub fn same_files(&self, other: &Self) -> bool {
        self.cert_file == other.cert_file && self.key_file == other.key_file
    }
}

/// A certificate chain with its private key, checked to belong together.
#[derive(Debug, Clone)]
pub struct Pair {
    /// What rustls serves.
    pub certified: Arc<CertifiedKey>,
}

impl Pair {
    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }
}

/// Why a certificate chain and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// A file could not be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The chain file holds a malformed PEM section, or none with a certificate.
    #[error("`{}` holds no usable PEM certificate: {why}", path.display())]
    Certificate {
        /// The chain file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The key file holds a malformed PEM section, or no private key.
    #[error("`{}` holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {why}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The key is not the key of the chain's first certificate.
    #[error("the private key in `{}` does not belong to the first certificate in `{}`", key.display(), cert.display())]
    Mismatch {
        /// The chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

impl PairError {
    /// Whether the key file (rather than the chain file) is the one at fault; a
    /// mismatch is both files' and reported against the table.
    fn is_key_file(&self) -> Option<bool> {
        match self {
            Self::Read { .. } | Self::Certificate { .. } => Some(false),
            Self::Key { .. } => Some(true),
            Self::Mismatch { .. } => None,
        }
    }
}

/// The crypto wshost's TLS uses: ring (builds with a C compiler alone).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks the chain in `cert_file` and the key in `key_file`.
pub fn load_pair(cert_file: &Path, key_file: &Path) -> Result<Pair, PairError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| PairError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert_file)?;
    let key_pem = read(key_file)?;
    let bad_cert = |why: String| PairError::Certificate {
        path: cert_file.to_owned(),
        why,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_cert(pem_message(&e, "certificate")))?;
    let leaf = chain
        .first()
        .ok_or_else(|| bad_cert("no `-----BEGIN CERTIFICATE-----` section".to_owned()))?;
    webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| bad_cert(format!("the first certificate does not parse: {e}")))?;
    let bad_key = |why: String| PairError::Key {
        path: key_file.to_owned(),
        why,
    };
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| bad_key(pem_message(&e, "private key")))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| bad_key(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    // ring's keys all know their public half, so `Unknown` cannot pass a mismatch here.
    certified.keys_match().map_err(|_| PairError::Mismatch {
        cert: cert_file.to_owned(),
        key: key_file.to_owned(),
    })?;
    Ok(Pair {
        certified: Arc::new(certified),
    })
}

/// Why a PEM file held no `what`.
fn pem_message(error: &pem::Error, what: &str) -> String {
    match error {
        pem::Error::NoItemsFound => format!("no {what} section (`-----BEGIN ...-----`) found"),
        other => format!("malformed PEM: {other}"),
    }
}

/// The `[tls]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawTls {
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
}

impl RawTls {
    /// Every key of the table.
    pub(crate) const KEYS: &[&str] = &["cert-file", "key-file"];

    /// Resolves the paths against `base` (the routes file's directory) and loads the
    /// pair. An error carries the span to show: the faulty key's value, or the table's.
    pub(crate) fn validate(
        &self,
        table: Range<usize>,
        base: &Path,
    ) -> Result<TlsConfig, (Range<usize>, String)> {
        let file = |key: &str, value: &Option<Spanned<String>>| match value {
            None => Err((
                table.clone(),
                format!("`tls.{key}` is missing: `[tls]` needs both `cert-file` and `key-file`"),
            )),
            Some(v) if v.get_ref().is_empty() => {
                Err((v.span(), format!("`tls.{key}` is empty: name a PEM file")))
            }
            Some(v) => Ok(base.join(v.get_ref())),
        };
        let cert_file = file("cert-file", &self.cert_file)?;
        let key_file = file("key-file", &self.key_file)?;
        let pair = load_pair(&cert_file, &key_file).map_err(|error| {
            let (key, value) = match error.is_key_file() {
                Some(false) => ("`tls.cert-file`", &self.cert_file),
                Some(true) => ("`tls.key-file`", &self.key_file),
                None => ("`tls`", &None),
            };
            let span = value.as_ref().map_or(table.clone(), Spanned::span);
            (span, format!("{key}: {error}"))
        })?;
        Ok(TlsConfig {
            cert_file,
            key_file,
            pair,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `name` and its key, as PEM.
    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn load(cert: &str, key: &str) -> Result<Pair, PairError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        load_pair(&dir.path().join("cert.pem"), &dir.path().join("key.pem"))
    }

    #[test]
    fn a_matching_pair_loads() {
        let (cert, key) = self_signed("localhost");
        let pair = load(&cert, &key).unwrap();
        assert_eq!(pair.chain().len(), 1);
    }

    #[test]
    fn each_broken_file_is_named() {
        let (cert, key) = self_signed("localhost");
        let (other_cert, other_key) = self_signed("localhost");
        for (cert, key, what) in [
            ("", key.as_str(), "holds no usable PEM certificate"),
            (
                key.as_str(),
                key.as_str(),
                "holds no usable PEM certificate",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
                key.as_str(),
                "malformed PEM",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                key.as_str(),
                "does not parse",
            ),
            (
                cert.as_str(),
                cert.as_str(),
                "holds no usable PEM private key",
            ),
            (cert.as_str(), other_key.as_str(), "does not belong"),
            (other_cert.as_str(), key.as_str(), "does not belong"),
        ] {
            let error = load(cert, key).unwrap_err().to_string();
            assert!(error.contains(what), "{what}: {error}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let error = load_pair(Path::new("/nonexistent/c.pem"), Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cannot read `/nonexistent/c.pem`"),
            "{error}"
        );
    }
}
