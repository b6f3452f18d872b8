//! Every error the API answers with: a status and a JSON body
//! `{"error": CODE, "message": TEXT, …}` that names what was wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use guidon_engine::ValidationError;
use guidon_store::StoreError;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// The body is not what the endpoint takes; `path` names the field.
    #[error("{message}")]
    InvalidBody { path: String, message: String },
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unsupported content type {given:?}: send {accepted}")]
    UnsupportedMediaType {
        given: String,
        accepted: &'static str,
    },
    #[error("missing or unknown token: send Authorization: Bearer TOKEN")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// `If-Match` named another version.
    #[error("{message}")]
    PreconditionFailed {
        message: String,
        current: Option<u64>,
    },
    #[error("{0}")]
    Validation(ValidationError),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidBody { .. } => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidBody { .. } => "invalid_body",
            ApiError::TooLarge { .. } => "body_too_large",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PreconditionFailed { .. } => "version_mismatch",
            ApiError::Validation(_) => "validation_failed",
            ApiError::Gone(_) => "too_old",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub(crate) fn body(&self) -> Value {
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        match self {
            ApiError::InvalidBody { path, .. } if !path.is_empty() => {
                body["path"] = json!(path);
            }
            ApiError::Validation(e) => {
                body["details"] = e
                    .problems
                    .iter()
                    .map(|p| json!({"path": p.path, "message": p.message}))
                    .collect();
            }
            ApiError::PreconditionFailed { current, .. } => {
                body["current_version"] = json!(current);
            }
            _ => {}
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(message) = &self {
            tracing::error!(%message, "internal error");
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::Unauthorized = self {
            // RFC 9110 §15.5.2: a 401 says how to authenticate.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::InvalidEnvName(_)
            | StoreError::InvalidTokenName(_)
            | StoreError::TokenScope(_) => ApiError::BadRequest(e.to_string()),
            StoreError::UnknownEnv(_)
            | StoreError::NotFound { .. }
            | StoreError::NoSuchVersion { .. }
            | StoreError::UnknownToken(_) => ApiError::NotFound(e.to_string()),
            StoreError::EnvExists(_) | StoreError::EnvNotEmpty { .. } => {
                ApiError::Conflict(e.to_string())
            }
            StoreError::TokenExists(_) => ApiError::Conflict(e.to_string()),
            StoreError::Conflict { current, .. } => ApiError::PreconditionFailed {
                message: e.to_string(),
                current,
            },
            StoreError::Invalid(v) => ApiError::Validation(v),
            StoreError::TooOld { .. } => ApiError::Gone(e.to_string()),
            StoreError::Database(_) => ApiError::Unavailable(e.to_string()),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Every error's body, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the shape `ApiError::body` builds
pub(crate) struct ErrorBody {
    /// A stable code: `invalid_body`, `validation_failed`, `not_found`, …
    error: String,
    /// What was wrong, for a person.
    message: String,
    /// The field at fault, when one is.
    path: Option<String>,
    /// For `validation_failed`: every problem.
    details: Option<Vec<ProblemBody>>,
    /// For `version_mismatch`: the stored version.
    current_version: Option<u64>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct ProblemBody {
    path: String,
    message: String,
}
