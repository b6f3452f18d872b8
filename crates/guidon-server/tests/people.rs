//! People against a real server, over SQLite and PostgreSQL: sign-in with
//! a session cookie (its attributes, expiry, sign-out), CSRF on the
//! cookie's writes, roles per environment on the existing routes, the
//! audit naming the person, the first-start admin, the rate limit on
//! sign-ins, and nobody locking everyone out.

use guidon_server::testing::{self, ADMIN, TestServer, TestTls};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

fn with_admin_person(database_url: &str) -> guidon_server::Config {
    guidon_server::Config {
        admin_password: Some(PASSWORD.into()),
        ..testing::config(database_url)
    }
}

/// A signed-in browser: its cookie and CSRF token.
struct Browser {
    cookie: String,
    csrf: String,
    set_cookie: String,
    session: Value,
}

async fn sign_in(
    server: &TestServer,
    user: &str,
    password: &str,
) -> Result<Browser, (StatusCode, Value)> {
    let response = server
        .http
        .post(server.at("/api/v1/session"))
        .json(&json!({"user": user, "password": password}))
        .send()
        .await
        .expect("sign-in answers");
    let status = response.status();
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().expect("ASCII").to_owned());
    let body: Value = response.json().await.expect("JSON");
    if status != StatusCode::OK {
        return Err((status, body));
    }
    let set_cookie = set_cookie.expect("a Set-Cookie");
    let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
    Ok(Browser {
        cookie,
        csrf: body["csrf_token"].as_str().expect("csrf_token").to_owned(),
        set_cookie,
        session: body,
    })
}

impl Browser {
    /// A request with the cookie and, unless `csrf` is false, the CSRF header.
    fn request(
        &self,
        server: &TestServer,
        method: Method,
        path: &str,
        csrf: bool,
    ) -> RequestBuilder {
        let request = server
            .http
            .request(method, server.at(path))
            .header("cookie", &self.cookie);
        if csrf {
            request.header("x-csrf-token", &self.csrf)
        } else {
            request
        }
    }

    async fn status(
        &self,
        server: &TestServer,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> StatusCode {
        let mut request = self.request(server, method, path, true);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("answers").status()
    }
}

#[tokio::test]
async fn a_person_signs_in_writes_with_the_csrf_token_and_signs_out() {
    for db in testing::databases("people_session").await {
        let n = db.name;
        let server = TestServer::start_with(with_admin_person(&db.url)).await;

        // A wrong password and an unknown name are answered alike.
        let (status, wrong) = sign_in(&server, "admin", "not the password")
            .await
            .err()
            .expect("refused");
        assert_eq!(status, 401, "{n}");
        assert_eq!(wrong["message"], "wrong user or password", "{n}: {wrong}");
        let (status, unknown) = sign_in(&server, "nobody", PASSWORD)
            .await
            .err()
            .expect("refused");
        assert_eq!(status, 401, "{n}");
        assert_eq!(unknown, wrong, "{n}: the same answer");

        let browser = sign_in(&server, "admin", PASSWORD)
            .await
            .expect("signed in");
        let attributes: Vec<&str> = browser.set_cookie.split("; ").collect();
        for wanted in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(
                attributes.contains(&wanted),
                "{n}: {wanted} in {attributes:?}"
            );
        }
        assert!(
            !attributes.contains(&"Secure"),
            "{n}: plain HTTP: no Secure"
        );
        assert_eq!(browser.session["user"], "admin", "{n}");
        assert_eq!(browser.session["roles"], json!({"*": "admin"}), "{n}");

        let got: Value = browser
            .request(&server, Method::GET, "/api/v1/session", false)
            .send()
            .await
            .expect("session")
            .json()
            .await
            .expect("JSON");
        assert_eq!(got["csrf_token"], browser.csrf, "{n}");

        // A write with the cookie but without the CSRF token is refused, and
        // nothing is stored; with it, the write is the person's.
        let flag = json!({"key": "checkout", "enabled": true});
        let refused = browser
            .request(
                &server,
                Method::PUT,
                "/api/v1/envs/production/flags/checkout",
                false,
            )
            .json(&flag)
            .send()
            .await
            .expect("answers");
        assert_eq!(refused.status(), 403, "{n}");
        let body: Value = refused.json().await.expect("JSON");
        assert!(
            body["message"]
                .as_str()
                .expect("message")
                .contains("X-CSRF-Token")
                || body["message"]
                    .as_str()
                    .expect("message")
                    .contains("x-csrf-token"),
            "{n}: {body}"
        );
        let wrong_csrf = browser
            .request(
                &server,
                Method::PUT,
                "/api/v1/envs/production/flags/checkout",
                false,
            )
            .header("x-csrf-token", "gdn_forged")
            .json(&flag)
            .send()
            .await
            .expect("answers");
        assert_eq!(wrong_csrf.status(), 403, "{n}");
        let absent = server
            .admin(Method::GET, "/api/v1/envs/production/flags/checkout")
            .send()
            .await
            .expect("answers");
        assert_eq!(absent.status(), 404, "{n}: nothing stored");
        assert_eq!(
            browser
                .status(
                    &server,
                    Method::PUT,
                    "/api/v1/envs/production/flags/checkout",
                    Some(flag)
                )
                .await,
            201,
            "{n}"
        );
        let history: Value = server
            .admin(
                Method::GET,
                "/api/v1/envs/production/flags/checkout/history",
            )
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("JSON");
        assert_eq!(
            history["history"][0]["actor"], "user:admin",
            "{n}: {history}"
        );
        // A token's change names the token.
        server
            .admin(Method::PATCH, "/api/v1/envs/production/flags/checkout")
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"enabled": false}"#)
            .send()
            .await
            .expect("patch");
        let audit: Value = server
            .admin(Method::GET, "/api/v1/envs/production/audit")
            .send()
            .await
            .expect("audit")
            .json()
            .await
            .expect("JSON");
        let actors: Vec<&Value> = audit["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| &e["actor"])
            .collect();
        assert_eq!(
            actors,
            [&json!("admin-from-env"), &json!("user:admin")],
            "{n}: {audit}"
        );

        // Signing out ends the session on the server, not only in the browser.
        let out = browser
            .request(&server, Method::DELETE, "/api/v1/session", true)
            .send()
            .await
            .expect("sign out");
        assert_eq!(out.status(), 204, "{n}");
        let cleared = out.headers()["set-cookie"].to_str().expect("ASCII");
        assert!(cleared.contains("Max-Age=0"), "{n}: {cleared}");
        let after = browser
            .request(
                &server,
                Method::GET,
                "/api/v1/envs/production/flags/checkout",
                false,
            )
            .send()
            .await
            .expect("answers");
        assert_eq!(after.status(), 401, "{n}: the old cookie is dead");
        server.stop().await;
    }
}

#[tokio::test]
async fn roles_per_environment_hold_on_every_route() {
    for db in testing::databases("people_roles").await {
        let n = db.name;
        let server = TestServer::start(&db.url).await;
        server
            .put_flag("development", json!({"key": "f", "enabled": true}))
            .await;
        server
            .put_flag("production", json!({"key": "f", "enabled": true}))
            .await;
        let added = server
            .admin(Method::POST, "/api/v1/users")
            .json(&json!({"name": "dana", "password": "dana's password",
                          "roles": {"development": "editor", "production": "viewer"}}))
            .send()
            .await
            .expect("add");
        assert_eq!(added.status(), 201, "{n}");
        let dana = sign_in(&server, "dana", "dana's password")
            .await
            .expect("signed in");
        let flag = json!({"key": "f", "enabled": false});
        let evaluate = json!({"flag": "f", "context": {"user_id": "u1"}, "explain": true});
        // Editor in development.
        assert_eq!(
            dana.status(
                &server,
                Method::PUT,
                "/api/v1/envs/development/flags/f",
                Some(flag.clone())
            )
            .await,
            200,
            "{n}"
        );
        // Viewer in production: reads, explains, history, audit; no writes.
        for (method, path, body, want) in [
            (Method::GET, "/api/v1/envs/production/flags/f", None, 200),
            (Method::GET, "/api/v1/envs/production/flags", None, 200),
            (
                Method::GET,
                "/api/v1/envs/production/flags/f/history",
                None,
                200,
            ),
            (Method::GET, "/api/v1/envs/production/audit", None, 200),
            (
                Method::POST,
                "/api/v1/envs/production/evaluate",
                Some(evaluate.clone()),
                200,
            ),
            (
                Method::PUT,
                "/api/v1/envs/production/flags/f",
                Some(flag.clone()),
                403,
            ),
            (Method::DELETE, "/api/v1/envs/production/flags/f", None, 403),
            (
                Method::POST,
                "/api/v1/envs/production/flags/f/revert",
                Some(json!({"version": 1})),
                403,
            ),
            (
                Method::POST,
                "/api/v1/envs/development/flags/f/promote",
                Some(json!({"to": "production"})),
                403,
            ),
            (
                Method::PUT,
                "/api/v1/envs/production/flags",
                Some(json!({"flags": []})),
                403,
            ),
            (
                Method::PUT,
                "/api/v1/envs/production/metrics/m",
                Some(json!({"kind": "binomial", "event": "buy"})),
                403,
            ),
            (Method::DELETE, "/api/v1/envs/development", None, 403),
            (
                Method::POST,
                "/api/v1/envs",
                Some(json!({"name": "staging"})),
                403,
            ),
            (Method::GET, "/api/v1/tokens", None, 403),
            (
                Method::POST,
                "/api/v1/tokens",
                Some(json!({"name": "x", "role": "admin"})),
                403,
            ),
            (Method::GET, "/api/v1/users", None, 403),
            (Method::GET, "/metrics", None, 403),
        ] {
            let got = dana.status(&server, method.clone(), path, body).await;
            assert_eq!(got, want, "{n}: {method} {path}");
        }
        // Events change results: an editor's environment, not a viewer's.
        for (env, want) in [("production", 403), ("development", 200)] {
            let sent = dana
                .request(&server, Method::POST, "/api/v1/events", true)
                .header("x-guidon-environment", env)
                .json(&json!({"events": []}))
                .send()
                .await
                .expect("answers");
            assert_eq!(sent.status(), want, "{n}: events to {env}");
        }
        let prod = server.document("production").await;
        assert_eq!(
            prod["flags"][0]["enabled"], true,
            "{n}: production unchanged: {prod}"
        );

        // Roles are read on every request: a promotion counts at once.
        let set = server
            .admin(Method::PUT, "/api/v1/users/dana/roles")
            .json(&json!({"roles": {"development": "editor", "production": "editor"}}))
            .send()
            .await
            .expect("set roles");
        assert_eq!(set.status(), 200, "{n}");
        assert_eq!(
            dana.status(
                &server,
                Method::PUT,
                "/api/v1/envs/production/flags/f",
                Some(flag.clone())
            )
            .await,
            200,
            "{n}"
        );
        assert_eq!(
            dana.status(
                &server,
                Method::POST,
                "/api/v1/envs/development/flags/f/promote",
                Some(json!({"to": "production"}))
            )
            .await,
            200,
            "{n}"
        );
        // No role in an environment: not even reading.
        server
            .admin(Method::PUT, "/api/v1/users/dana/roles")
            .json(&json!({"roles": {"development": "viewer"}}))
            .send()
            .await
            .expect("set roles");
        assert_eq!(
            dana.status(
                &server,
                Method::GET,
                "/api/v1/envs/production/flags/f",
                None
            )
            .await,
            403,
            "{n}"
        );
        let envs: Value = dana
            .request(&server, Method::GET, "/api/v1/envs", false)
            .send()
            .await
            .expect("envs")
            .json()
            .await
            .expect("JSON");
        let names: Vec<&Value> = envs["environments"]
            .as_array()
            .expect("list")
            .iter()
            .map(|e| &e["name"])
            .collect();
        assert_eq!(
            names,
            [&json!("development")],
            "{n}: only what they may read: {envs}"
        );

        // Bad roles are named at the field.
        for (body, path) in [
            (json!({"roles": {"staging": "viewer"}}), "roles.staging"),
            (
                json!({"roles": {"development": "owner"}}),
                "roles.development",
            ),
        ] {
            let refused = server
                .admin(Method::PUT, "/api/v1/users/dana/roles")
                .json(&body)
                .send()
                .await
                .expect("answers");
            assert_eq!(refused.status(), 400, "{n}: {body}");
            let error: Value = refused.json().await.expect("JSON");
            assert_eq!(error["path"], path, "{n}: {error}");
        }
        let short = server
            .admin(Method::POST, "/api/v1/users")
            .json(&json!({"name": "eve", "password": "short", "roles": {}}))
            .send()
            .await
            .expect("answers");
        assert_eq!(short.status(), 400, "{n}");
        assert_eq!(
            short.json::<Value>().await.expect("JSON")["path"],
            "password",
            "{n}"
        );

        // A new password ends the person's sessions; removing them too.
        let reset = server
            .admin(Method::PUT, "/api/v1/users/dana/password")
            .json(&json!({"password": "a new password"}))
            .send()
            .await
            .expect("reset");
        assert_eq!(reset.status(), 204, "{n}");
        assert_eq!(
            dana.status(
                &server,
                Method::GET,
                "/api/v1/envs/development/flags/f",
                None
            )
            .await,
            401,
            "{n}"
        );
        assert!(
            sign_in(&server, "dana", "dana's password").await.is_err(),
            "{n}: the old password"
        );
        let again = sign_in(&server, "dana", "a new password")
            .await
            .expect("the new one");
        let removed = server
            .admin(Method::DELETE, "/api/v1/users/dana")
            .send()
            .await
            .expect("remove");
        assert_eq!(removed.status(), 204, "{n}");
        assert_eq!(
            again
                .status(
                    &server,
                    Method::GET,
                    "/api/v1/envs/development/flags/f",
                    None
                )
                .await,
            401,
            "{n}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn nobody_can_lock_everyone_out() {
    for db in testing::databases("people_last_admin").await {
        let n = db.name;
        let server = TestServer::start(&db.url).await;
        // Tokens only: the last admin token cannot be revoked.
        let second = server.token("second", "admin", None).await;
        let revoked = server
            .admin(Method::DELETE, "/api/v1/tokens/admin-from-env")
            .send()
            .await
            .expect("revoke");
        assert_eq!(revoked.status(), 204, "{n}: another admin token remains");
        let last = server
            .http
            .delete(server.at("/api/v1/tokens/second"))
            .bearer_auth(&second)
            .send()
            .await
            .expect("answers");
        assert_eq!(last.status(), 409, "{n}");
        let body: Value = last.json().await.expect("JSON");
        assert!(
            body["message"]
                .as_str()
                .expect("message")
                .contains("last admin token"),
            "{n}: {body}"
        );
        let as_second = |method: Method, path: &str| {
            server
                .http
                .request(method, server.at(path))
                .bearer_auth(&second)
        };
        // With an admin person, it can.
        let added = as_second(Method::POST, "/api/v1/users")
            .json(&json!({"name": "root", "password": PASSWORD, "roles": {"*": "admin"}}))
            .send()
            .await
            .expect("add");
        assert_eq!(added.status(), 201, "{n}");
        // The last admin person cannot be removed or demoted.
        let removed = as_second(Method::DELETE, "/api/v1/users/root")
            .send()
            .await
            .expect("answers");
        assert_eq!(removed.status(), 409, "{n}");
        let demoted = as_second(Method::PUT, "/api/v1/users/root/roles")
            .json(&json!({"roles": {"production": "admin"}}))
            .send()
            .await
            .expect("answers");
        assert_eq!(demoted.status(), 409, "{n}");
        let root = sign_in(&server, "root", PASSWORD)
            .await
            .expect("root signs in");
        // A second admin: now the first may go, and the second is the last.
        assert_eq!(
            root.status(
                &server,
                Method::POST,
                "/api/v1/users",
                Some(json!({"name": "ops", "password": PASSWORD, "roles": {"*": "admin"}}))
            )
            .await,
            201,
            "{n}"
        );
        assert_eq!(
            root.status(
                &server,
                Method::PUT,
                "/api/v1/users/root/roles",
                Some(json!({"roles": {"*": "viewer"}}))
            )
            .await,
            200,
            "{n}"
        );
        assert_eq!(
            as_second(Method::DELETE, "/api/v1/users/ops")
                .send()
                .await
                .expect("answers")
                .status(),
            409,
            "{n}"
        );
        // An admin person exists: the last admin token may go.
        let revoke_last = as_second(Method::DELETE, "/api/v1/tokens/second")
            .send()
            .await
            .expect("answers");
        assert_eq!(revoke_last.status(), 204, "{n}: an admin person exists");
        let ops = sign_in(&server, "ops", PASSWORD)
            .await
            .expect("ops signs in");
        let users: Value = ops
            .request(&server, Method::GET, "/api/v1/users", false)
            .send()
            .await
            .expect("users")
            .json()
            .await
            .expect("JSON");
        assert_eq!(
            users["users"].as_array().expect("users").len(),
            2,
            "{n}: {users}"
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn sign_ins_are_rate_limited_per_account_and_per_address() {
    let db = testing::sqlite("people_rate");
    let server = TestServer::start_with(with_admin_person(&db.url)).await;
    server
        .admin(Method::POST, "/api/v1/users")
        .json(&json!({"name": "bob", "password": PASSWORD, "roles": {}}))
        .send()
        .await
        .expect("add bob");
    for _ in 0..5 {
        let (status, _) = sign_in(&server, "admin", "guess")
            .await
            .err()
            .expect("refused");
        assert_eq!(status, 401);
    }
    // The right password is refused too now, for this account only.
    let (status, body) = sign_in(&server, "admin", PASSWORD)
        .await
        .err()
        .expect("limited");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "too_many_requests", "{body}");
    sign_in(&server, "bob", PASSWORD)
        .await
        .expect("another account still signs in");
    // Per address: 20 failures in all, whatever the names.
    for i in 0..15 {
        let (status, _) = sign_in(&server, &format!("guess{i}"), "guess")
            .await
            .err()
            .expect("refused");
        assert_eq!(status, 401, "attempt {i}");
    }
    let (status, _) = sign_in(&server, "bob", PASSWORD)
        .await
        .err()
        .expect("limited");
    assert_eq!(status, 429);
    server.stop().await;
}

#[tokio::test]
async fn the_first_start_makes_the_admin_person_and_tls_makes_the_cookie_secure() {
    let db = testing::sqlite("people_first_start");
    // Too short a password: the start is refused.
    let refused = guidon_server::start(guidon_server::Config {
        admin_password: Some("short".into()),
        ..testing::config(&db.url)
    })
    .await
    .expect_err("refused");
    assert!(
        refused.to_string().contains("GUIDON_ADMIN_PASSWORD"),
        "{refused}"
    );

    let server = TestServer::start_tls_with(
        guidon_server::Config {
            admin_user: "chief".into(),
            ..with_admin_person(&db.url)
        },
        TestTls::new("people"),
    )
    .await;
    let chief = sign_in(&server, "chief", PASSWORD)
        .await
        .expect("signed in over TLS");
    assert!(
        chief.set_cookie.split("; ").any(|a| a == "Secure"),
        "{}",
        chief.set_cookie
    );
    // Reset through the API, then a restart with the old variable: the
    // person exists, so their current password stays.
    let reset = server
        .admin(Method::PUT, "/api/v1/users/chief/password")
        .json(&json!({"password": "the new password"}))
        .send()
        .await
        .expect("reset");
    assert_eq!(reset.status(), 204);
    server.stop().await;
    let server = TestServer::start_with(guidon_server::Config {
        admin_user: "chief".into(),
        ..with_admin_person(&db.url)
    })
    .await;
    assert!(sign_in(&server, "chief", PASSWORD).await.is_err());
    sign_in(&server, "chief", "the new password")
        .await
        .expect("kept");
    let users: Value = server
        .http
        .get(server.at("/api/v1/users"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("users")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        users["users"].as_array().expect("users").len(),
        1,
        "{users}"
    );
    server.stop().await;
}
