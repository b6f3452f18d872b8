//! CORS (`--cors-origin`, repeatable) for what a page may call: OFREP,
//! the evaluate endpoint and event ingestion. Only the configured origins
//! are answered, never `*`; credentials (cookies) are never allowed, since
//! a page authenticates with a `client` token in a header. A preflight from
//! another origin gets no CORS header at all, so the browser refuses it.
//! Definition and admin routes have no CORS: a page cannot read them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::AppState;

/// How long a browser may cache a preflight's answer.
const MAX_AGE: Duration = Duration::from_secs(600);

/// The configured origins, checked: each `scheme://host[:port]` with the
/// scheme `http` or `https`, nothing after the authority, and no wildcard.
/// Lowercased, as browsers send them.
pub(crate) fn parse_origins(given: &[String]) -> Result<Vec<HeaderValue>, String> {
    given
        .iter()
        .map(|origin| {
            let origin = origin.trim();
            if origin == "*" || origin.contains('*') {
                return Err(format!(
                    "{origin:?}: no wildcard; name each origin, such as https://app.example.com"
                ));
            }
            let lower = origin.to_ascii_lowercase();
            let Some((scheme, authority)) = lower.split_once("://") else {
                return Err(format!(
                    "{origin:?} is not an origin: it must look like https://app.example.com[:port]"
                ));
            };
            if scheme != "http" && scheme != "https" {
                return Err(format!("{origin:?}: the scheme must be http or https"));
            }
            if authority.is_empty()
                || authority.contains(['/', '?', '#', '@', ' '])
            {
                return Err(format!(
                    "{origin:?} is not an origin: scheme://host[:port] only, with no path (not even a final /)"
                ));
            }
            HeaderValue::from_str(&lower).map_err(|_| format!("{origin:?} is not a valid origin"))
        })
        .collect()
}

/// The layer for `origins`; `None` when there are none (no CORS at all).
pub(crate) fn layer(origins: &[HeaderValue]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("x-guidon-environment"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::ETAG])
            .max_age(MAX_AGE),
    )
}

/// Whether a page may call `path`: OFREP, `…/evaluate` and events.
fn for_pages(path: &str) -> bool {
    path.starts_with("/ofrep/")
        || path == "/api/v1/events"
        || path.strip_prefix("/api/v1/envs/").is_some_and(|rest| {
            rest.split('/').nth(1) == Some("evaluate") && rest.split('/').count() == 2
        })
}

/// Middleware: a request from a configured origin to a route pages may
/// call goes through the CORS layer (which answers its preflight); any
/// other request passes untouched, so a refused origin sees no CORS header
/// at all, not even the allowed methods.
pub(crate) async fn gate(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let allowed = req
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|origin| state.cors_origins.contains(origin))
        && for_pages(req.uri().path());
    let Some(cors) = state.cors.as_ref().filter(|_| allowed) else {
        return next.run(req).await;
    };
    match cors.layer(next).oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_may_call_evaluations_and_events_only() {
        for path in [
            "/ofrep/v1/evaluate/flags",
            "/ofrep/v1/evaluate/flags/banner",
            "/api/v1/events",
            "/api/v1/envs/production/evaluate",
        ] {
            assert!(for_pages(path), "{path}");
        }
        for path in [
            "/api/v1/sdk/flags",
            "/api/v1/envs/production/flags",
            "/api/v1/envs/production/flags/evaluate",
            "/api/v1/envs/production/audit",
            "/api/v1/tokens",
            "/metrics",
        ] {
            assert!(!for_pages(path), "{path}");
        }
    }

    #[test]
    fn origins_are_checked_and_lowercased() {
        let ok = parse_origins(&[
            "https://App.Example.com".into(),
            "http://localhost:5173".into(),
        ])
        .expect("valid");
        assert_eq!(ok[0], "https://app.example.com");
        assert_eq!(ok[1], "http://localhost:5173");
        for bad in [
            "*",
            "https://*.example.com",
            "app.example.com",
            "ftp://example.com",
            "https://example.com/",
            "https://example.com/app",
            "https://",
            "null",
        ] {
            let e = parse_origins(&[bad.into()]).expect_err(bad);
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
