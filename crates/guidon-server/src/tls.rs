//! HTTPS: the certificate and key (`--tls-cert`, `--tls-key`, PEM), read
//! and checked before anything else starts, and reloaded on request
//! (`guidon serve` does it on SIGHUP).
//!
//! rustls with the `ring` provider; never OpenSSL. The served
//! configuration sits in an `ArcSwap`: each new connection's handshake
//! takes the one current then, so a reload changes the certificate of
//! new connections and leaves open ones as they are. A reload that fails
//! (a file missing, half-written, a key of another certificate) keeps the
//! previous certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate chain and its private key are (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the certificate or key cannot be served; one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert {}: {reason}", path.display())]
    Cert { path: PathBuf, reason: String },
    #[error("--tls-key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("--tls-cert {} with --tls-key {}: {reason}", files.cert.display(), files.key.display())]
    Pair { files: TlsFiles, reason: String },
}

/// The configuration served now, and the files it is read from.
#[derive(Debug)]
pub(crate) struct Tls {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
}

impl Tls {
    /// Reads and checks the files.
    pub(crate) fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        Ok(Tls {
            current: ArcSwap::from_pointee(server_config(files)?),
            files: files.clone(),
        })
    }

    /// The configuration for a new connection's handshake.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Reads the files again and serves them to new connections; on
    /// error, keeps serving what it served.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        self.current.store(Arc::new(config));
        Ok(())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))
}

/// The rustls configuration for `files`: HTTP/1.1 over TLS 1.2 or 1.3.
fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let cert_error = |reason: String| TlsError::Cert {
        path: files.cert.clone(),
        reason,
    };
    let key_error = |reason: String| TlsError::Key {
        path: files.key.clone(),
        reason,
    };
    let cert_pem = read(&files.cert).map_err(cert_error)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(cert_error(
            "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let key_pem = read(&files.key).map_err(key_error)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            key_error("no private key in it (expected PEM: -----BEGIN PRIVATE KEY-----)".into())
        }
        other => key_error(format!("not a PEM private key: {other}")),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_error(e.to_string()))?
        .with_no_client_auth()
        // Checks the key (its type, and that it is the certificate's).
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Pair {
            files: files.clone(),
            reason: match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the key is not the certificate's (its public key differs)".into()
                }
                other => other.to_string(),
            },
        })?;
    // The server speaks HTTP/1.1 (and WebSocket over it) only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
