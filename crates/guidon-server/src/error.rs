//! Every error the API answers with: a status and a JSON body
//! `{"error": CODE, "message": TEXT, …}` that names what was wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use guidon_engine::ValidationError;
use guidon_store::StoreError;

use crate::live::LiveError;
pub(crate) use guidon_protocol::api::ErrorBody;
use guidon_protocol::api::ErrorCode;

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
    /// A failed sign-in: never says which of the two was wrong.
    #[error("wrong user or password")]
    WrongCredentials,
    #[error("too many failed sign-ins: try again in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
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
    /// A time-travel field outside the environment's life; `path` names it.
    #[error("{message}")]
    OutOfRange { path: String, message: String },
    /// A past state the change log no longer holds.
    #[error("{0}")]
    Compacted(String),
    /// A client ahead of the server: it must take the whole document.
    #[error("{0}")]
    Ahead(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("request headers are larger than {limit}")]
    HeadersTooLarge { limit: String },
    #[error("{0}")]
    RequestTimeout(String),
    /// A WebSocket upgrade that cannot be made, with axum's status.
    #[error("cannot upgrade to a WebSocket: {message}")]
    Upgrade { status: StatusCode, message: String },
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidBody { .. } => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized | ApiError::WrongCredentials => StatusCode::UNAUTHORIZED,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Gone(_) | ApiError::Compacted(_) => StatusCode::GONE,
            ApiError::OutOfRange { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Ahead(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Upgrade { status, .. } => *status,
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::InvalidBody { .. } => ErrorCode::InvalidBody,
            ApiError::TooLarge { .. } => ErrorCode::BodyTooLarge,
            ApiError::UnsupportedMediaType { .. } => ErrorCode::UnsupportedMediaType,
            ApiError::Unauthorized | ApiError::WrongCredentials => ErrorCode::Unauthorized,
            ApiError::TooManyRequests { .. } => ErrorCode::TooManyRequests,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::PreconditionFailed { .. } => ErrorCode::VersionMismatch,
            ApiError::Validation(_) => ErrorCode::ValidationFailed,
            ApiError::Gone(_) => ErrorCode::TooOld,
            ApiError::OutOfRange { .. } => ErrorCode::OutOfRange,
            ApiError::Compacted(_) => ErrorCode::HistoryCompacted,
            ApiError::Ahead(_) => ErrorCode::RevisionAhead,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
            ApiError::HeadersTooLarge { .. } => ErrorCode::HeadersTooLarge,
            ApiError::RequestTimeout(_) => ErrorCode::RequestTimeout,
            ApiError::Upgrade { .. } => ErrorCode::UpgradeFailed,
        }
    }

    pub(crate) fn body(&self) -> ErrorBody {
        let mut body = ErrorBody::new(self.code(), self.to_string());
        match self {
            ApiError::InvalidBody { path, .. } | ApiError::OutOfRange { path, .. }
                if !path.is_empty() =>
            {
                body.path = Some(path.clone());
            }
            ApiError::Validation(e) => body.details = Some(e.problems.clone()),
            ApiError::PreconditionFailed { current, .. } => body.current_version = Some(*current),
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
        if let ApiError::RequestTimeout(_) = self {
            // The rest of the body is not read: the connection cannot go on.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        if let ApiError::TooManyRequests { retry_after } = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after),
            );
        }
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

impl From<LiveError> for ApiError {
    fn from(e: LiveError) -> ApiError {
        match e {
            LiveError::Store(e) => e.into(),
            e @ LiveError::NotYet(_) => ApiError::Unavailable(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
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
            StoreError::TokenExists(_)
            | StoreError::NotPending { .. }
            | StoreError::UserExists(_)
            | StoreError::LastAdmin(_) => ApiError::Conflict(e.to_string()),
            StoreError::UnknownPlannedChange { .. } | StoreError::UnknownUser(_) => {
                ApiError::NotFound(e.to_string())
            }
            StoreError::InvalidUserName(_) => ApiError::InvalidBody {
                path: "name".into(),
                message: e.to_string(),
            },
            StoreError::InvalidRoles { path, message } => ApiError::InvalidBody {
                message: format!("{path}: {message}"),
                path,
            },
            StoreError::Conflict { current, .. } => ApiError::PreconditionFailed {
                message: e.to_string(),
                current,
            },
            StoreError::Exists { version, .. } => ApiError::PreconditionFailed {
                message: e.to_string(),
                current: Some(version),
            },
            StoreError::Invalid(v) => ApiError::Validation(v),
            StoreError::TooOld { .. } => ApiError::Gone(e.to_string()),
            StoreError::RevisionAhead { .. } => ApiError::OutOfRange {
                path: "revision".into(),
                message: e.to_string(),
            },
            StoreError::BeforeEnvironment { .. } => ApiError::OutOfRange {
                path: "at".into(),
                message: e.to_string(),
            },
            StoreError::Compacted { .. } => ApiError::Compacted(e.to_string()),
            StoreError::Database(_) => ApiError::Unavailable(e.to_string()),
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<guidon_events::EventsError> for ApiError {
    fn from(e: guidon_events::EventsError) -> ApiError {
        use guidon_events::EventsError;
        match e {
            EventsError::InvalidEvent { .. } | EventsError::InvalidQuery(_) => {
                ApiError::BadRequest(e.to_string())
            }
            EventsError::Database(_) | EventsError::WriterGone => {
                ApiError::Unavailable(e.to_string())
            }
            EventsError::UnsupportedUrl(_) => ApiError::Internal(e.to_string()),
        }
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
