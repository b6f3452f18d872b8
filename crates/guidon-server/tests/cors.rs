//! CORS (`--cors-origin`) against a real server: a page of a configured
//! origin may call OFREP, evaluate and send events with a `client` token;
//! any other origin gets no CORS header (the browser refuses), there is
//! never a wildcard or credentials, and definition routes have no CORS.

use guidon_server::testing::{self, ENV, TestServer};
use reqwest::Method;
use serde_json::json;

const PAGE: &str = "https://app.example.com";

async fn server(label: &str) -> (testing::TestDb, TestServer) {
    let db = testing::sqlite(label);
    let server = TestServer::start_with(guidon_server::Config {
        cors_origins: vec![PAGE.into(), "http://localhost:5173".into()],
        ..testing::config(&db.url)
    })
    .await;
    server
        .put_flag(ENV, json!({"key": "banner", "enabled": true}))
        .await;
    (db, server)
}

/// A browser's preflight: `OPTIONS` with the origin, method and headers.
async fn preflight(server: &TestServer, path: &str, origin: &str) -> reqwest::Response {
    server
        .http
        .request(Method::OPTIONS, server.at(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight answers")
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn a_configured_origin_may_evaluate_and_send_events_and_no_other_may() {
    let (_db, server) = server("cors").await;
    let token = server.token("page", "client", Some(ENV)).await;

    for path in [
        "/ofrep/v1/evaluate/flags/banner",
        "/ofrep/v1/evaluate/flags",
        "/api/v1/envs/production/evaluate",
        "/api/v1/events",
    ] {
        let allowed = preflight(&server, path, PAGE).await;
        assert!(
            allowed.status().is_success(),
            "{path}: {}",
            allowed.status()
        );
        assert_eq!(
            header(&allowed, "access-control-allow-origin"),
            Some(PAGE),
            "{path}"
        );
        let headers = header(&allowed, "access-control-allow-headers").unwrap_or("");
        assert!(headers.contains("authorization"), "{path}: {headers}");
        assert_eq!(
            header(&allowed, "access-control-allow-credentials"),
            None,
            "{path}"
        );

        let refused = preflight(&server, path, "https://evil.example.net").await;
        assert_eq!(
            header(&refused, "access-control-allow-origin"),
            None,
            "{path}"
        );
        assert_eq!(
            header(&refused, "access-control-allow-headers"),
            None,
            "{path}"
        );
        assert_eq!(
            header(&refused, "access-control-allow-methods"),
            None,
            "{path}"
        );
    }

    // The call itself carries the origin back, and the ETag is readable.
    let response = server
        .http
        .post(server.at("/ofrep/v1/evaluate/flags"))
        .header("origin", PAGE)
        .bearer_auth(&token)
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .await
        .expect("bulk evaluation");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "access-control-allow-origin"), Some(PAGE));
    let exposed = header(&response, "access-control-expose-headers").unwrap_or("");
    assert!(exposed.to_ascii_lowercase().contains("etag"), "{exposed}");

    // Another origin's call is answered (CORS is the browser's to enforce)
    // but without the header that would let its page read the answer.
    let response = server
        .http
        .post(server.at("/ofrep/v1/evaluate/flags/banner"))
        .header("origin", "https://evil.example.net")
        .bearer_auth(&token)
        .json(&json!({"context": {"targetingKey": "u1"}}))
        .send()
        .await
        .expect("evaluation");
    assert_eq!(header(&response, "access-control-allow-origin"), None);

    // Definitions have no CORS, even for a configured origin.
    for path in ["/api/v1/sdk/flags", "/api/v1/envs/production/flags/banner"] {
        let response = preflight(&server, path, PAGE).await;
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            None,
            "{path}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_wildcard_or_a_malformed_origin_is_refused_before_anything_opens() {
    let dir = testing::TempDir::new("cors-refused");
    let path = dir.path().join("guidon.db");
    for origin in ["*", "https://app.example.com/", "app.example.com"] {
        let config = guidon_server::Config {
            cors_origins: vec![origin.into()],
            ..testing::config(&format!("sqlite://{}", path.display()))
        };
        let e = guidon_server::start(config)
            .await
            .err()
            .unwrap_or_else(|| panic!("{origin} accepted"));
        let message = e.to_string();
        assert!(message.starts_with("--cors-origin"), "{message}");
        assert!(message.contains(origin), "{message}");
        assert!(!path.exists(), "{origin}: a database file was left behind");
    }
}
