//! The web console: plain HTML, CSS and JavaScript files under
//! `crates/guidon-server/console/`, embedded in the binary
//! (`include_str!`), served at `/` with a strict Content-Security-Policy.
//! No build step: what is in the directory is what is served. It talks to
//! the same API as everyone else, signed in with the session cookie.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use std::sync::Arc;

use crate::app::AppState;

pub(crate) const INDEX: &str = include_str!("../console/index.html");
pub(crate) const SCRIPT: &str = include_str!("../console/console.js");
pub(crate) const STYLE: &str = include_str!("../console/console.css");

/// Only this origin's scripts, styles and API; no inline script, no
/// framing, no plugin, no form posted elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/console/console.js", get(script))
        .route("/console/console.css", get(style))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Small files, always revalidated: a new binary serves its own console.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[utoipa::path(
    get,
    path = "/",
    tag = "console",
    summary = "The web console (HTML; sign in with a person's name and password)",
    security(()),
    responses((status = 200, description = "The console's page", content_type = "text/html"))
)]
pub(crate) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

#[utoipa::path(
    get,
    path = "/console/console.js",
    tag = "console",
    summary = "The console's script",
    security(()),
    responses((status = 200, description = "JavaScript", content_type = "text/javascript"))
)]
pub(crate) async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

#[utoipa::path(
    get,
    path = "/console/console.css",
    tag = "console",
    summary = "The console's style sheet",
    security(()),
    responses((status = 200, description = "CSS", content_type = "text/css"))
)]
pub(crate) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console's asset budget: the three files together, uncompressed
    /// (README states it).
    const ASSET_BUDGET_BYTES: usize = 64 * 1024;

    #[test]
    fn the_console_stays_within_its_asset_budget() {
        let total = INDEX.len() + SCRIPT.len() + STYLE.len();
        assert!(
            total <= ASSET_BUDGET_BYTES,
            "the console is {total} bytes, over its budget of {ASSET_BUDGET_BYTES}"
        );
    }

    /// The operator list of the rule editor is the engine's, read from the
    /// OpenAPI document (the engine's model is its source).
    #[test]
    fn the_rule_editor_offers_exactly_the_engines_operators() {
        use utoipa::OpenApi;
        let doc = serde_json::to_value(crate::openapi::ApiDoc::openapi()).expect("JSON");
        let engine: Vec<&str> = doc["components"]["schemas"]["Operator"]["enum"]
            .as_array()
            .expect("the Operator schema lists its values")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let line = SCRIPT
            .lines()
            .find(|l| l.trim_start().starts_with("const OPERATORS = ["))
            .expect("console.js declares OPERATORS on one line");
        let inside = line
            .split_once('[')
            .and_then(|(_, rest)| rest.split_once(']'))
            .map(|(list, _)| list)
            .expect("a list");
        let console: Vec<&str> = inside
            .split(',')
            .map(|s| s.trim().trim_matches('\''))
            .collect();
        assert!(engine.len() > 20, "{engine:?}");
        assert_eq!(console, engine);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_nothing_inline() {
        for (name, text) in [
            ("index.html", INDEX),
            ("console.js", SCRIPT),
            ("console.css", STYLE),
        ] {
            for forbidden in ["http://", "https://", "//cdn", "@import"] {
                assert!(!text.contains(forbidden), "{name} names {forbidden}");
            }
        }
        assert!(
            !INDEX.contains("<script>"),
            "no inline script (the CSP forbids it)"
        );
        assert!(
            !INDEX.contains("style="),
            "no inline style (the CSP forbids it)"
        );
        assert!(
            !SCRIPT.contains("innerHTML"),
            "the DOM is built, never parsed from strings"
        );
    }
}
