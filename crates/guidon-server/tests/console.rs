//! The web console as the server serves it (its behaviour in a browser is
//! tests/console/e2e.mjs): the page and its two assets with a strict
//! Content-Security-Policy, and the overview the list is drawn from, over
//! SQLite and PostgreSQL.

use guidon_server::testing::{self, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn the_console_is_served_at_the_root_with_a_strict_policy() {
    let db = testing::sqlite("console_assets");
    let server = TestServer::start(&db.url).await;
    for (path, kind, marker) in [
        (
            "/",
            "text/html",
            "<script src=\"/console/console.js\"></script>",
        ),
        ("/console/console.js", "text/javascript", "X-CSRF-Token"),
        ("/console/console.css", "text/css", ".switch"),
    ] {
        let response = server
            .http
            .get(server.at(path))
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        assert!(
            header("content-type").starts_with(kind),
            "{path}: {}",
            header("content-type")
        );
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {directive} in {csp}");
        }
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let body = response.text().await.expect("text");
        assert!(body.contains(marker), "{path} is the console's file");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_overview_shows_every_flag_with_its_last_change() {
    for db in testing::databases("console_overview").await {
        let n = db.name;
        let server = TestServer::start(&db.url).await;
        server
            .put_flag(
                "production",
                json!({"key": "b_plain", "enabled": false, "description": "plain"}),
            )
            .await;
        server
            .put_flag(
                "production",
                json!({"key": "a_split", "enabled": true, "rollout": {"percentage": 10},
                       "variants": [{"key": "x", "weight": 50}, {"key": "y", "weight": 50}],
                       "rules": [{"conditions": [{"attribute": "country", "operator": "in", "values": ["CA"]}],
                                  "serve": {"enabled": true, "variant": "y"}}]}),
            )
            .await;
        server
            .put_flag("production", json!({"key": "c_gone", "enabled": true}))
            .await;
        assert_eq!(
            server.delete("/api/v1/envs/production/flags/c_gone").await,
            200,
            "{n}"
        );
        // A bulk import changes several flags under one revision.
        let imported = server
            .admin(Method::PUT, "/api/v1/envs/development/flags")
            .json(&json!({"flags": [{"key": "d1", "enabled": true}, {"key": "d2", "enabled": false}]}))
            .send()
            .await
            .expect("import");
        assert_eq!(imported.status(), 200, "{n}");

        let overview: Value = server
            .admin(Method::GET, "/api/v1/envs/production/overview")
            .send()
            .await
            .expect("overview")
            .json()
            .await
            .expect("JSON");
        let flags = overview["flags"].as_array().expect("flags");
        let keys: Vec<&str> = flags.iter().filter_map(|f| f["key"].as_str()).collect();
        assert_eq!(
            keys,
            ["a_split", "b_plain"],
            "{n}: key order, no deleted flag"
        );
        assert_eq!(overview["revision"], 4, "{n}");
        let split = &flags[0];
        assert_eq!(
            (
                &split["enabled"],
                &split["variants"],
                &split["rollout"],
                &split["rules"],
                &split["version"]
            ),
            (&json!(true), &json!(2), &json!(10.0), &json!(1), &json!(1)),
            "{n}: {split}"
        );
        assert_eq!(split["changed_by"], "admin-from-env", "{n}");
        assert!(
            split["changed_at_ms"].as_i64().is_some_and(|t| t > 0),
            "{n}"
        );
        assert_eq!(
            (&flags[1]["description"], &flags[1]["rollout"]),
            (&json!("plain"), &json!(null)),
            "{n}"
        );

        let dev: Value = server
            .admin(Method::GET, "/api/v1/envs/development/overview")
            .send()
            .await
            .expect("overview")
            .json()
            .await
            .expect("JSON");
        let actors: Vec<&Value> = dev["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .map(|f| &f["changed_by"])
            .collect();
        assert_eq!(
            actors,
            [&json!("admin-from-env"), &json!("admin-from-env")],
            "{n}: one row each: {dev}"
        );

        let sdk = server.sdk_token("app", "production").await;
        let client = server.token("page", "client", Some("production")).await;
        for (token, want) in [(sdk, 200), (client, 403)] {
            let response = server
                .http
                .get(server.at("/api/v1/envs/production/overview"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("answers");
            assert_eq!(
                response.status(),
                want,
                "{n}: a client token reads no definition"
            );
        }
        server.stop().await;
    }
}
