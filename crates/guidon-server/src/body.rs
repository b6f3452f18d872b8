//! Request bodies: the size limit, the content type, and parsing that names
//! the field at fault; and path and query extractors whose rejections are
//! JSON errors like every other.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use guidon_engine::Format;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::error::ApiError;

/// The raw body, with the size limit's rejection turned into a JSON 413.
#[derive(Debug)]
pub(crate) struct Body(pub Bytes);

impl FromRequest<Arc<AppState>> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Body, ApiError> {
        let limit = state.limits.max_body;
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(BytesRejection::FailedToBufferBody(e))
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::TooLarge { limit })
            }
            Err(BytesRejection::FailedToBufferBody(e)) if timed_out(&e) => {
                Err(ApiError::RequestTimeout(format!(
                    "the request body did not arrive within {:?}",
                    state.limits.body_timeout
                )))
            }
            Err(e) => Err(ApiError::BadRequest(format!(
                "could not read the body: {e}"
            ))),
        }
    }
}

/// Whether a body read failed on [`crate::listener::deadline_body`]'s deadline.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(e) = source {
        if e.is::<crate::listener::BodyTimedOut>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// `axum::extract::Path`, answering a bad path (not UTF-8, say) with a
/// JSON 400 instead of axum's plain text.
#[derive(Debug)]
pub(crate) struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Path<T>, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(e) if e.status().is_server_error() => Err(ApiError::Internal(e.body_text())),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// `axum::extract::Query`, answering a bad query string with a JSON 400
/// naming the parameter.
#[derive(Debug)]
pub(crate) struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Query<T>, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// The body's format from `Content-Type`: JSON (also when absent), or YAML
/// where `yaml_ok`; anything else is a 415.
pub(crate) fn format(headers: &HeaderMap, yaml_ok: bool) -> Result<Format, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Json);
    };
    let text = value.to_str().unwrap_or("");
    match Format::of_media_type(text) {
        Some(Format::Json) => Ok(Format::Json),
        Some(Format::Yaml) if yaml_ok => Ok(Format::Yaml),
        _ => Err(ApiError::UnsupportedMediaType {
            given: text.to_owned(),
            accepted: if yaml_ok {
                "application/json or application/yaml"
            } else {
                "application/json"
            },
        }),
    }
}

/// Bodies up to this size are parsed where the request is served; larger
/// ones on tokio's blocking pool, so a slow parse never holds an async
/// worker (and every evaluation queued behind it). A 64 KiB flag file takes
/// about 3 ms as JSON and 20 ms as YAML on a loaded 2-core machine
/// (BENCHMARKS.md, "Bounds on outside text").
pub(crate) const BLOCKING_PARSE: usize = 64 * 1024;

/// What a body may be sent as: the check of its `Content-Type`, apart
/// from the parse, so that the fuzz targets ([`crate::fuzzing`]) run the
/// same two steps synchronously.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Accepts {
    /// `application/json` (or no `Content-Type`).
    Json,
    /// JSON, or YAML by its media type.
    JsonOrYaml,
    /// A `PATCH` body: a JSON merge patch (RFC 7396), sent as
    /// `application/merge-patch+json` or plain `application/json`.
    MergePatch,
}

impl Accepts {
    /// The format to parse the body in, or the 415 its `Content-Type` gets.
    pub(crate) fn format(self, headers: &HeaderMap) -> Result<Format, ApiError> {
        match self {
            Accepts::Json => format(headers, false),
            Accepts::JsonOrYaml => format(headers, true),
            Accepts::MergePatch => {
                let given = headers
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap_or(""));
                let merge_patch = given.is_some_and(|t| {
                    t.split(';').next().is_some_and(|t| {
                        t.trim()
                            .eq_ignore_ascii_case("application/merge-patch+json")
                    })
                });
                if !merge_patch && format(headers, false).is_err() {
                    return Err(ApiError::UnsupportedMediaType {
                        given: given.unwrap_or("").to_owned(),
                        accepted: "application/merge-patch+json or application/json",
                    });
                }
                Ok(Format::Json)
            }
        }
    }
}

/// Parses a JSON body, naming the field at fault.
pub(crate) async fn json<T: DeserializeOwned + Send + 'static>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    parse(Accepts::Json.format(headers)?, body).await
}

/// Parses a `PATCH` body ([`Accepts::MergePatch`]): an object (a patch
/// that replaces a definition whole is a `PUT`).
pub(crate) async fn merge_patch<T: DeserializeOwned + Send + 'static>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    parse(Accepts::MergePatch.format(headers)?, body).await
}

/// Parses a JSON or YAML body (by `Content-Type`), naming the field at fault.
pub(crate) async fn json_or_yaml<T: DeserializeOwned + Send + 'static>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    parse(Accepts::JsonOrYaml.format(headers)?, body).await
}

/// Parses `body` through [`Format::parse`], which first holds it to the
/// engine's bounds: a repeated key or nesting deeper than
/// [`guidon_engine::MAX_DEPTH`] is a 400 naming the key and its path, or
/// the limit. Large bodies are parsed off the async workers
/// ([`BLOCKING_PARSE`]).
async fn parse<T: DeserializeOwned + Send + 'static>(
    format: Format,
    body: &Bytes,
) -> Result<T, ApiError> {
    if body.len() <= BLOCKING_PARSE {
        return parse_now(format, body);
    }
    let body = body.clone();
    tokio::task::spawn_blocking(move || parse_now(format, &body))
        .await
        .map_err(|e| ApiError::Internal(format!("the body's parse failed: {e}")))?
}

/// [`parse`] where it is called.
pub(crate) fn parse_now<T: DeserializeOwned>(format: Format, body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidBody {
            path: String::new(),
            message: "the request body is empty".into(),
        });
    }
    // Every body is an object. serde would also fill a struct from an
    // array, by position: `[]` would be an empty flag file (a bulk PUT
    // deleting everything), `["qa"]` an environment.
    if format == Format::Json && body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::InvalidBody {
            path: String::new(),
            message: "the body must be a JSON object".into(),
        });
    }
    let text = std::str::from_utf8(body).map_err(|_| ApiError::InvalidBody {
        path: String::new(),
        message: format!("the {format} body is not UTF-8"),
    })?;
    format.parse(text).map_err(|e| ApiError::InvalidBody {
        message: if e.path.is_empty() {
            format!("invalid body: {}", e.message)
        } else {
            format!("{}: {}", e.path, e.message)
        },
        path: e.path,
    })
}

/// A deserialization error as a 400 naming the field (no `path` for the
/// body as a whole, whose path serde_path_to_error writes as `.`).
pub(crate) fn invalid<E: std::fmt::Display>(e: &serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let inner = e.inner().to_string();
    let message = if path.is_empty() {
        format!("invalid body: {inner}")
    } else {
        format!("{path}: {inner}")
    };
    ApiError::InvalidBody { path, message }
}
