//! HTTPS end to end, with a CA and certificates made in the test: the
//! server serves its certificate, reloads it (and keeps the old one when
//! the new files are bad), refuses bad files before creating a database,
//! answers plain HTTP on its port with a JSON 400 and closes, and cuts
//! silent TLS clients by the header timeout while evaluations answer. No
//! test asserts how long anything took (each read has a generous guard
//! only so that a regression fails instead of hanging).

use std::time::Duration;

use guidon_server::testing::{self, ENV, TestServer, TestTls, served_certificate, tls_connect};
use guidon_server::{ConnLimits, ServeError, TlsError, TlsFiles};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Past this, a connection the server should have cut is a failure.
const GUARD: Duration = Duration::from_secs(60);

/// [`testing::until_closed`] within [`GUARD`].
async fn until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    testing::until_closed(stream, GUARD).await
}

/// An OFREP evaluation over HTTPS with an sdk token: it must answer true.
async fn evaluate(server: &TestServer, token: &str) {
    let response = server
        .http
        .post(server.at("/ofrep/v1/evaluate/flags/on"))
        .bearer_auth(token)
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .await
        .expect("the evaluation answers over HTTPS");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["value"], true, "{body}");
}

async fn tls_server(label: &str, limits: ConnLimits) -> (testing::TestDb, TestServer) {
    let db = testing::sqlite(label);
    let server = TestServer::start_tls_with(
        guidon_server::Config {
            connections: limits,
            ..testing::config(&db.url)
        },
        TestTls::new(label),
    )
    .await;
    server
        .put_flag(ENV, json!({"key": "on", "enabled": true}))
        .await;
    (db, server)
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_and_bad_files_keep_the_old_one() {
    let (_db, server) = tls_server("reload", ConnLimits::default()).await;
    let token = server.sdk_token("app", ENV).await;
    let tls = server.tls.as_ref().expect("TLS");
    let ca = tls.ca_pem();
    assert_eq!(served_certificate(server.addr, &ca).await, tls.cert.der);

    // New files are not served until the reload.
    let second = tls.renew("second");
    assert_eq!(served_certificate(server.addr, &ca).await, tls.cert.der);
    // A connection opened before the reload keeps working after it.
    let mut before = tls_connect(server.addr, &ca).await;
    assert!(server.reload_tls().expect("the new files load"));
    assert_eq!(served_certificate(server.addr, &ca).await, second.der);
    before
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let answer = String::from_utf8_lossy(&until_closed(&mut before).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A half-written certificate: refused, naming the file; the second
    // certificate is still served.
    let files = tls.files();
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nMIIB").expect("write");
    let err = server.reload_tls().expect_err("a broken certificate");
    assert!(matches!(err, TlsError::Cert { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("--tls-cert {}", files.cert.display())),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
    assert_eq!(served_certificate(server.addr, &ca).await, second.der);

    // A key that is not the certificate's.
    let third = tls.ca.server_cert("third");
    std::fs::write(&files.cert, &third.cert_pem).expect("write");
    std::fs::write(&files.key, &second.key_pem).expect("write");
    let err = server
        .reload_tls()
        .expect_err("a key of another certificate");
    assert!(matches!(err, TlsError::Pair { .. }), "{err:?}");
    assert!(err.to_string().contains("not the certificate's"), "{err}");
    assert_eq!(served_certificate(server.addr, &ca).await, second.der);

    // A missing key file.
    std::fs::remove_file(&files.key).expect("remove");
    let err = server.reload_tls().expect_err("no key");
    assert!(matches!(err, TlsError::Key { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot read it"), "{err}");
    assert_eq!(served_certificate(server.addr, &ca).await, second.der);
    evaluate(&server, &token).await;
    server.stop().await;
}

#[tokio::test]
async fn bad_tls_files_are_refused_in_one_line_before_a_database_is_created() {
    let dir = testing::TempDir::new("tls-refused");
    let tls = TestTls::new("refused");
    let other = tls.ca.server_cert("other");
    let cases: Vec<(&str, TlsFiles, &str)> = vec![
        (
            "missing certificate",
            TlsFiles {
                cert: dir.join("missing.pem"),
                key: tls.files().key,
            },
            "--tls-cert",
        ),
        (
            "not PEM",
            TlsFiles {
                cert: dir.file("garbage.pem", "hello").into(),
                key: tls.files().key,
            },
            "no certificate in it",
        ),
        (
            "a certificate as the key",
            TlsFiles {
                cert: tls.files().cert,
                key: tls.files().cert,
            },
            "no private key in it",
        ),
        (
            "another certificate's key",
            TlsFiles {
                cert: tls.files().cert,
                key: dir.file("other-key.pem", &other.key_pem).into(),
            },
            "not the certificate's",
        ),
    ];
    for (case, files, expected) in cases {
        let db = dir.join(format!("{}.db", case.replace(' ', "-")));
        let config = guidon_server::Config {
            tls: Some(files),
            ..testing::config(&format!("sqlite://{}", db.display()))
        };
        let err = guidon_server::start(config)
            .await
            .expect_err("bad TLS files do not start");
        assert!(matches!(err, ServeError::Tls(_)), "{case}: {err:?}");
        let message = err.to_string();
        assert!(message.contains(expected), "{case}: {message}");
        assert!(!message.contains('\n'), "{case}: one line: {message}");
        assert!(!db.exists(), "{case}: no database file left behind");
    }
}

#[tokio::test]
async fn plain_http_to_the_https_port_gets_a_json_400_and_is_closed() {
    let (_db, server) = tls_server("plain", ConnLimits::default()).await;
    let mut plain = TcpStream::connect(server.addr).await.expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("write");
    let answer = String::from_utf8_lossy(&until_closed(&mut plain).await).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    let body: Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(body["error"], "bad_request", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("https://")),
        "{body}"
    );
    // HTTPS on the same port still answers.
    let health = server
        .http
        .get(server.at("/healthz"))
        .send()
        .await
        .expect("HTTPS answers");
    assert_eq!(health.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn silent_tls_clients_are_cut_by_the_header_timeout_while_evaluations_answer() {
    let (_db, server) = tls_server(
        "silent",
        ConnLimits {
            header_timeout: Duration::from_millis(300),
            ..ConnLimits::default()
        },
    )
    .await;
    let token = server.sdk_token("app", ENV).await;
    let ca = server.tls.as_ref().expect("TLS").ca_pem();
    // Silent from the start: not even a TLS record.
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // A handshake begun and left (a record header, then nothing).
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .expect("write");
        stalled.push(stream);
    }
    // A handshake done, then no request.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tls_connect(server.addr, &ca).await);
    }
    for _ in 0..20 {
        evaluate(&server, &token).await;
    }
    for stream in silent.iter_mut().chain(stalled.iter_mut()) {
        until_closed(stream).await;
    }
    for stream in &mut idle {
        until_closed(stream).await;
    }
    evaluate(&server, &token).await;
    server.stop().await;
}
