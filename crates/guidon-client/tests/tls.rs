//! The SDK and the admin client over HTTPS, against a real `guidon serve`
//! with a certificate of a CA made in the test: with the CA they sync and
//! stream (SSE and WebSocket, `wss://`); without it they fail, saying the
//! certificate is not trusted.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use guidon_client::admin::{AdminClient, AdminError};
use guidon_client::{Client, ClientError, Context, Status, Transport};
use guidon_server::testing::{ADMIN, ENV, TestServer, eventually, sqlite, valued_flag};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_syncs_and_streams_over_https_and_wss_with_a_custom_ca() {
    let db = sqlite("client_tls");
    let server = TestServer::start_tls(&db.url).await;
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let ca = server.tls.as_ref().unwrap().ca_pem();
    server.put_flag(ENV, valued_flag("price", json!(1))).await;
    let token = server.sdk_token("tls", ENV).await;
    let ctx = Context::new().with("user_id", "u1");
    for (n, transport) in [Transport::Sse, Transport::WebSocket]
        .into_iter()
        .enumerate()
    {
        let client = Client::builder(&server.base, &token)
            .ca_certificate_pem(ca.as_bytes())
            .transport(transport)
            .heartbeat(Duration::from_secs(1))
            .start_timeout(WAIT)
            .build()
            .await
            .unwrap();
        assert_eq!(
            client.status(),
            Status::Ready,
            "{transport:?}: {:?}",
            client.last_error()
        );
        assert_eq!(client.number_value("price", &ctx, -1.0), 1.0 + n as f64);
        // A change arrives over the stream.
        let value = 2 + n as i64;
        server
            .put_flag(ENV, valued_flag("price", json!(value)))
            .await;
        let seen = eventually(WAIT, || {
            client.number_value("price", &ctx, -1.0) == value as f64
        })
        .await;
        assert!(seen.is_some(), "{transport:?}: the change never arrived");
        let stats = client.sync_stats();
        assert!(stats.connects >= 1, "{transport:?}: a stream: {stats:?}");
        assert_eq!(stats.polls, 0, "{transport:?}: not polling: {stats:?}");
        client.close().await.unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_the_sdk_says_the_certificate_is_not_trusted() {
    let db = sqlite("client_tls_untrusted");
    let server = TestServer::start_tls(&db.url).await;
    server.put_flag(ENV, valued_flag("price", json!(1))).await;
    let token = server.sdk_token("tls", ENV).await;
    for transport in [Transport::Sse, Transport::WebSocket, Transport::Polling] {
        let client = Client::builder(&server.base, &token)
            .transport(transport)
            .start_timeout(Duration::from_millis(200))
            .build()
            .await
            .unwrap();
        let said = eventually(WAIT, || client.last_error().is_some()).await;
        assert!(said.is_some(), "{transport:?}: an error is recorded");
        assert_ne!(client.status(), Status::Ready, "{transport:?}");
        let error = client.last_error().unwrap();
        assert!(
            error.contains("TLS certificate is not trusted") && error.contains("UnknownIssuer"),
            "{transport:?}: {error}"
        );
        client.close().await.unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn a_ca_that_is_not_pem_is_refused_when_building() {
    let built = Client::builder("https://127.0.0.1:9", "t")
        .ca_certificate_pem("not a certificate")
        .build()
        .await;
    assert!(matches!(built, Err(ClientError::Ca(_))), "{built:?}");
    let admin = AdminClient::new("https://127.0.0.1:9", ADMIN)
        .unwrap()
        .ca_certificate_pem(b"-----BEGIN CERTIFICATE-----\nMII");
    assert!(matches!(admin, Err(AdminError::Ca(_))), "{admin:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_client_speaks_https_with_the_ca_and_refuses_without_it() {
    let db = sqlite("admin_tls");
    let server = TestServer::start_tls(&db.url).await;
    let ca = server.tls.as_ref().unwrap().ca_pem();
    let trusted = AdminClient::new(&server.base, ADMIN)
        .unwrap()
        .ca_certificate_pem(ca.as_bytes())
        .unwrap();
    let envs = trusted.environments().await.unwrap();
    assert!(
        envs.environments.iter().any(|e| e.name == ENV),
        "{:?}",
        envs.environments
    );
    let untrusted = AdminClient::new(&server.base, ADMIN).unwrap();
    match untrusted.environments().await {
        Err(e @ AdminError::Certificate { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(&server.base) && message.contains("UnknownIssuer"),
                "{message}"
            );
        }
        other => panic!("expected a certificate error, got {other:?}"),
    }
    server.stop().await;
}
