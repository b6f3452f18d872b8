//! The TLS trust every connection of a client shares (requests, SSE and
//! WebSocket alike): rustls over `ring`, never OpenSSL, trusting the
//! system's roots plus any CA given (a private CA, or a self-signed
//! server certificate).

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// The client configuration trusting the system's roots and the
/// certificates in `extra_ca_pem` (PEM, one or more). The error says what
/// is wrong with the PEM.
pub(crate) fn client_config(extra_ca_pem: Option<&[u8]>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    // A system without a readable store has no roots of its own: only the
    // CA given is trusted then.
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "guidon: reading the system's CA certificates");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(pem) = extra_ca_pem {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err(
                "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
            );
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("not a usable CA certificate: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// When `e` (or a cause of it) is the server's certificate being refused:
/// rustls's reason (`invalid peer certificate: UnknownIssuer`, say).
pub(crate) fn certificate_refused(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(error) = next {
        let rustls_error = error.downcast_ref::<rustls::Error>().or_else(|| {
            error
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(
            found @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType),
        ) = rustls_error
        {
            return Some(found.to_string());
        }
        next = error.source();
    }
    None
}
