//! The admin API's shapes: what the server answers and its clients read.

use guidon_engine::Problem;
use guidon_engine::model::{Flag, Segment};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Kind, Op};

/// An environment as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvInfo {
    pub name: String,
    pub revision: u64,
    /// Creation time (ms): tells a re-created environment from the one it
    /// replaced, whose revisions it restarts.
    pub created_at_ms: i64,
}

/// One change as history and audit show it: who, when, before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    pub revision: u64,
    pub kind: Kind,
    pub key: String,
    pub op: Op,
    pub version: u64,
    /// The token (or person) that made the change.
    pub actor: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub before: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub after: Option<Value>,
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// One environment: read its flags, evaluate, stream, send events.
    Sdk,
    /// One environment, for code a user can read (a browser, a mobile app):
    /// evaluate (OFREP, `/evaluate`) and send events, never read a
    /// definition, so no rule, segment or other flag leaks to a page.
    Client,
    /// `/metrics` only (a Prometheus scraper); no environment.
    Metrics,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Sdk => "sdk",
            Role::Client => "client",
            Role::Metrics => "metrics",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "sdk" => Some(Role::Sdk),
            "client" => Some(Role::Client),
            "metrics" => Some(Role::Metrics),
            _ => None,
        }
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    /// The environment an `sdk` token is scoped to.
    pub env: Option<String>,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub revoked: bool,
}

/// What a person may do in one environment (`viewer` < `editor` < `admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    /// Read flags, segments, history, audit and results; evaluate and explain.
    Viewer,
    /// A viewer who may also change flags, segments, metrics and experiments.
    Editor,
    /// An editor who may also delete the environment. An admin of `*`
    /// also manages environments, people and tokens.
    Admin,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Viewer => "viewer",
            UserRole::Editor => "editor",
            UserRole::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<UserRole> {
        match text {
            "viewer" => Some(UserRole::Viewer),
            "editor" => Some(UserRole::Editor),
            "admin" => Some(UserRole::Admin),
            _ => None,
        }
    }
}

/// The key of [`UserInfo::roles`] that stands for every environment,
/// present and future.
pub const EVERY_ENV: &str = "*";

/// A person's roles: environment name (or [`EVERY_ENV`]) → role.
pub type UserRoles = std::collections::BTreeMap<String, UserRole>;

/// The role `roles` gives in `env`: the higher of the environment's own
/// and the one of [`EVERY_ENV`].
pub fn role_in(roles: &UserRoles, env: &str) -> Option<UserRole> {
    roles.get(env).copied().max(roles.get(EVERY_ENV).copied())
}

/// Whether `roles` make an administrator of Guidon itself (admin of `*`).
pub fn is_global_admin(roles: &UserRoles) -> bool {
    roles.get(EVERY_ENV) == Some(&UserRole::Admin)
}

/// A person as listed: never the password or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInfo {
    pub name: String,
    /// Environment (or `*`, every environment) → role.
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, UserRole>))]
    pub roles: UserRoles,
    pub created_at_ms: i64,
    /// The last successful sign-in (ms), if any.
    pub last_login_at_ms: Option<i64>,
}

/// `GET /api/v1/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Users {
    pub users: Vec<UserInfo>,
}

/// `POST /api/v1/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub password: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, UserRole>))]
    pub roles: UserRoles,
}

/// `PUT /api/v1/users/{name}/roles`: the person's roles, replaced whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetRoles {
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, UserRole>))]
    pub roles: UserRoles,
}

/// `PUT /api/v1/users/{name}/password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    pub password: String,
}

/// `POST /api/v1/session`: sign in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub user: String,
    pub password: String,
}

/// A signed-in person's session (the cookie itself is `HttpOnly`: never in
/// a body). Writes made with the cookie must echo `csrf_token` in the
/// `X-CSRF-Token` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    pub user: String,
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, UserRole>))]
    pub roles: UserRoles,
    pub csrf_token: String,
    pub expires_at_ms: i64,
}

/// `GET /api/v1/envs/{env}/overview`: every flag at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Overview {
    pub revision: u64,
    /// In key order.
    pub flags: Vec<FlagSummary>,
}

/// One flag as the console's list shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FlagSummary {
    pub key: String,
    pub description: String,
    pub enabled: bool,
    /// How many variants it has: 0 for a boolean flag.
    pub variants: usize,
    /// The rollout percentage, when it has a rollout.
    pub rollout: Option<f64>,
    /// How many rules it has.
    pub rules: usize,
    pub version: u64,
    /// Who made its last change (a token's name, or `user:NAME`).
    pub changed_by: Option<String>,
    /// When (ms since the Unix epoch).
    pub changed_at_ms: Option<i64>,
}

/// `GET /api/v1/envs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Environments {
    pub environments: Vec<EnvInfo>,
}

/// Whether a write is served yet. A server answers a write once it serves
/// its revision; when that takes too long it answers 202 with
/// `served: false` and a message: the write is committed, but reads through
/// that server may not show it for a moment. Both are absent otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Settled {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One flag with its version: what `GET`, `PUT` and `revert` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionedFlag {
    pub flag: Flag,
    pub version: u64,
    pub revision: u64,
    #[serde(flatten)]
    pub settled: Settled,
    /// A `PATCH` that changed nothing: no new version or revision.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
    /// A `PUT` that created the flag (201); not part of the answer's JSON.
    #[serde(skip)]
    pub created: bool,
}

/// What a delete answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deleted {
    /// The deleted key.
    pub deleted: String,
    /// The version it had.
    pub version: u64,
    pub revision: u64,
    #[serde(flatten)]
    pub settled: Settled,
}

/// What replacing an environment's flag file answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Imported {
    /// The replacement's revision; the unchanged revision when nothing differed.
    pub revision: u64,
    /// Every key that changed, upserts first; empty when nothing differed.
    pub changes: Vec<Applied>,
    #[serde(flatten)]
    pub settled: Settled,
}

/// One key changed by an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Applied {
    pub kind: Kind,
    pub key: String,
    pub op: Op,
    pub version: u64,
}

/// `GET …/flags/{key}/history`: every change, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct History {
    pub history: Vec<HistoryEntry>,
}

/// `GET /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tokens {
    pub tokens: Vec<TokenInfo>,
}

/// A created token, with its secret (shown this once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewToken {
    /// The secret.
    pub token: String,
    pub name: String,
    pub role: Role,
    pub env: Option<String>,
}

/// `POST /api/v1/events`: what was stored and what was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventsReceipt {
    pub accepted: u64,
    pub duplicates: u64,
    #[serde(default)]
    pub rejected: Vec<RejectedEvent>,
}

/// One event the server refused, by its index in the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RejectedEvent {
    pub index: usize,
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `GET /api/v1/envs/{env}`: an environment's revision and counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnvSummary {
    pub name: String,
    pub revision: u64,
    pub flags: usize,
    pub segments: usize,
}

/// One segment with its version: what its `GET`, `PUT` and `PATCH` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionedSegment {
    pub segment: Segment,
    pub version: u64,
    pub revision: u64,
    #[serde(flatten)]
    pub settled: Settled,
    /// A `PATCH` that changed nothing: no new version or revision.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
}

/// `GET /api/v1/envs/{env}/segments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Segments {
    pub revision: u64,
    pub segments: Vec<Segment>,
}

/// `GET /api/v1/envs/{env}/audit`: newest first, a page at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    pub entries: Vec<HistoryEntry>,
    /// Pass as `before` for the next page; `null` on the last.
    pub next_before: Option<u64>,
}

/// The stable code of every error the API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    InvalidBody,
    BodyTooLarge,
    UnsupportedMediaType,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    /// `If-Match` named another version.
    VersionMismatch,
    /// The definition is invalid; `details` lists every problem.
    ValidationFailed,
    /// Catch-up past the server's horizon: take the whole document.
    TooOld,
    Unavailable,
    Internal,
    /// The request's headers are larger than the server takes (431).
    HeadersTooLarge,
    /// The request body did not arrive in time (408).
    RequestTimeout,
    /// A WebSocket upgrade the request cannot make (400, 405 or 426).
    UpgradeFailed,
    /// The client names a revision the server has never reached (a
    /// restored backup, another server): take the whole document (409).
    RevisionAhead,
    /// Too many failed sign-ins for an account or an address (429).
    TooManyRequests,
    /// A time-travel request (`at`, `revision`) outside the environment's
    /// life: before it was created, in the future, a revision not made
    /// yet (422, `path` names the field).
    OutOfRange,
    /// A time-travel request for a state the change log no longer holds:
    /// it was compacted away (410).
    HistoryCompacted,
    /// A code this client does not know (a newer server).
    #[serde(other)]
    Other,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::ValidationFailed => "validation_failed",
            ErrorCode::TooOld => "too_old",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::UpgradeFailed => "upgrade_failed",
            ErrorCode::RevisionAhead => "revision_ahead",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::OutOfRange => "out_of_range",
            ErrorCode::HistoryCompacted => "history_compacted",
            ErrorCode::Other => "other",
        }
    }
}

/// Every error's body: `{"error": CODE, "message": TEXT}`, with the field
/// at fault or every validation problem when there are some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorCode,
    /// What was wrong, for a person.
    pub message: String,
    /// The field at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For `validation_failed`: every problem, each at its path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<ProblemSchema>>))]
    pub details: Option<Vec<Problem>>,
    /// For `version_mismatch`: the stored version (`null`: it does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<Option<u64>>,
}

impl ErrorBody {
    pub fn new(error: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error,
            message: message.into(),
            path: None,
            details: None,
            current_version: None,
        }
    }
}

/// A validation problem, for the OpenAPI document.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // documents the shape of guidon_engine::Problem
pub struct ProblemSchema {
    /// The JSON path of the value at fault, such as `flag.variants[1].weight`.
    path: String,
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_keep_their_shape_and_tolerate_new_codes() {
        let mut body = ErrorBody::new(ErrorCode::VersionMismatch, "stale");
        body.current_version = Some(None);
        assert_eq!(
            serde_json::to_string(&body).expect("json"),
            r#"{"error":"version_mismatch","message":"stale","current_version":null}"#
        );
        let read: ErrorBody =
            serde_json::from_str(r#"{"error":"brand_new","message":"x"}"#).expect("reads");
        assert_eq!(read.error, ErrorCode::Other);
        for code in [ErrorCode::TooOld, ErrorCode::InvalidBody] {
            let text = serde_json::to_string(&code).expect("json");
            assert_eq!(text, format!("\"{}\"", code.as_str()));
        }
    }
}
