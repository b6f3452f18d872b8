//! Conditional requests (RFC 9110 §13.1.2): `If-None-Match` holds a list
//! of entity tags, or `*`, and is evaluated with the *weak* comparison:
//! `W/"x"` matches `"x"`. Proxies that compress a response weaken its
//! ETag, so a poller behind one sends the weak form back.

use axum::http::{HeaderMap, header};

/// Whether the request's `If-None-Match` matches `etag` (a strong tag
/// such as `"12-abc"`): the response may then be a 304.
pub(crate) fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    let ours = opaque(etag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|given| given == "*" || (!given.is_empty() && opaque(given) == ours))
}

/// The opaque tag of an entity tag, without its weakness indicator.
fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn given(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(
                header::IF_NONE_MATCH,
                HeaderValue::from_str(v).expect("header"),
            );
        }
        headers
    }

    #[test]
    fn weak_and_strong_forms_match_by_their_opaque_tag() {
        let tag = "\"7-abc\"";
        assert!(none_match(&given(&["\"7-abc\""]), tag));
        assert!(none_match(&given(&["W/\"7-abc\""]), tag));
        assert!(none_match(&given(&["\"other\", W/\"7-abc\""]), tag));
        assert!(none_match(&given(&["\"other\"", "W/\"7-abc\""]), tag));
        assert!(none_match(&given(&["*"]), tag));
        assert!(!none_match(&given(&["\"7-abd\""]), tag));
        assert!(!none_match(&given(&["W/\"7-abd\""]), tag));
        // The quotes are part of the tag: a bare token is another tag.
        assert!(!none_match(&given(&["7-abc"]), tag));
        assert!(!none_match(&given(&[""]), tag));
        assert!(!none_match(&HeaderMap::new(), tag));
    }
}
