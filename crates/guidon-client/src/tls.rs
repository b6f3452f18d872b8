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
            return Err("no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".into());
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
        if let Some(
            found @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType),
        ) = as_rustls(error)
        {
            return Some(found.to_string());
        }
        next = error.source();
    }
    None
}

/// The rustls error `e` is, or wraps in I/O errors (hyper and tokio-rustls
/// carry it as `io::Error(io::Error(rustls::Error))`, whose `source()`
/// skips it).
fn as_rustls<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        e = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}
