//! HTTPS for a [`super::TestServer`]: a CA made in the test, the server
//! certificate it signs in files the server reads (and reloads), and a
//! look at the certificate a server serves.

use std::net::SocketAddr;
use std::sync::Arc;

use guidon_testkit::{ServerCert, TempDir, TestCa};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::TlsFiles;

/// A test server's TLS material: its CA, and its certificate and key in
/// `cert.pem` and `key.pem` of a directory of its own.
pub struct TestTls {
    pub ca: TestCa,
    /// The certificate written at start.
    pub cert: ServerCert,
    pub dir: TempDir,
}

impl TestTls {
    /// A new CA, and a certificate it signs (for `localhost` and
    /// `127.0.0.1`, common name "first") written to the files.
    pub fn new(label: &str) -> TestTls {
        let ca = TestCa::new(&format!("guidon test CA {label}"));
        let cert = ca.server_cert("first");
        let dir = TempDir::new(&format!("{label}-tls"));
        cert.write(dir.path());
        TestTls { ca, cert, dir }
    }

    /// The files, for [`crate::Config::tls`].
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join("cert.pem"),
            key: self.dir.join("key.pem"),
        }
    }

    /// The CA's certificate, PEM: what a client must trust.
    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem()
    }

    /// A new certificate of the same CA (common name `name`), written over
    /// the files: what an operator renewing the certificate does.
    pub fn renew(&self, name: &str) -> ServerCert {
        let cert = self.ca.server_cert(name);
        cert.write(self.dir.path());
        cert
    }
}

/// A TLS connection to the server at `addr` (as `localhost`), its
/// certificate checked against `ca_pem`: the handshake done, nothing sent.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("a CA certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("a name"), tcp)
        .await
        .expect("a TLS handshake with a certificate of the CA")
}

/// The certificate (DER) the server at `addr` serves a new connection,
/// checked against `ca_pem`.
pub async fn served_certificate(addr: SocketAddr, ca_pem: &str) -> Vec<u8> {
    let stream = tls_connect(addr, ca_pem).await;
    let (_, session) = stream.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("the server presents a certificate")
        .to_vec()
}
