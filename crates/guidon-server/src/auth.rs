//! Who is calling: the token a request presents, checked against the
//! in-memory token table (`tokens.rs`), and what its role may do.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use guidon_protocol::api::{Role, UserRole, is_global_admin, role_in};
use guidon_store::Session;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// The header an admin token uses to name the environment of an OFREP or
/// SDK request (an sdk token's own environment is implied).
pub const ENV_HEADER: &str = "x-guidon-environment";

/// Who is calling: a token (machines) or a signed-in person (the console).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// Who changes are recorded as in history and audit: the token's name,
    /// or `user:NAME` for a person (token names cannot hold a `:`).
    pub(crate) name: String,
    who: Who,
}

#[derive(Debug, Clone)]
enum Who {
    Token { role: Role, env: Option<String> },
    Person(Box<Session>),
}

/// The prefix of a person's name in history and audit.
pub(crate) const PERSON_PREFIX: &str = "user:";

impl Caller {
    /// A person signed in with a session cookie.
    pub(crate) fn person(session: Session) -> Caller {
        Caller {
            name: format!("{PERSON_PREFIX}{}", session.user.name),
            who: Who::Person(Box::new(session)),
        }
    }

    /// The session of a signed-in person (`None` for a token).
    pub(crate) fn session(&self) -> Option<&Session> {
        match &self.who {
            Who::Person(session) => Some(session),
            Who::Token { .. } => None,
        }
    }

    /// May this caller manage Guidon itself (environments, people, tokens)?
    /// An admin token, or a person who is admin of `*`.
    pub(crate) fn require_admin(&self) -> ApiResult<()> {
        match &self.who {
            Who::Token {
                role: Role::Admin, ..
            } => Ok(()),
            Who::Token { role, .. } => Err(ApiError::Forbidden(format!(
                "token {:?} is {} {} token; this needs an admin token",
                self.name,
                article(*role),
                role.as_str()
            ))),
            Who::Person(session) if is_global_admin(&session.user.roles) => Ok(()),
            Who::Person(session) => Err(ApiError::Forbidden(format!(
                "{} is not an admin of every environment (\"*\"); this needs one",
                session.user.name
            ))),
        }
    }

    /// May this caller do what `needed` may in `env`? An admin token may
    /// (other tokens may not: these are the admin API's routes); a person
    /// when their role there is at least `needed`.
    pub(crate) fn require_role(&self, env: &str, needed: UserRole) -> ApiResult<()> {
        match &self.who {
            Who::Token { .. } => self.require_admin(),
            Who::Person(session) => match role_in(&session.user.roles, env) {
                Some(role) if role >= needed => Ok(()),
                role => Err(ApiError::Forbidden(format!(
                    "{} is {} in {env:?}; this needs {} {}",
                    session.user.name,
                    role.map_or_else(
                        || "no role".to_owned(),
                        |r| format!("{} {}", role_article(r), r.as_str())
                    ),
                    role_article(needed),
                    needed.as_str()
                ))),
            },
        }
    }

    /// May this caller read `env`'s definitions (and evaluate it)?
    pub(crate) fn require_env(&self, env: &str) -> ApiResult<()> {
        match &self.who {
            Who::Token {
                role: Role::Client, ..
            } => Err(ApiError::Forbidden(format!(
                "token {:?} is a client token: it can evaluate flags (OFREP, /evaluate) \
                 and send events, not read definitions",
                self.name
            ))),
            _ => self.require_evaluate(env),
        }
    }

    /// May this caller evaluate `env`?
    pub(crate) fn require_evaluate(&self, env: &str) -> ApiResult<()> {
        let (role, own) = match &self.who {
            Who::Token { role, env } => (*role, env.as_deref()),
            Who::Person(_) => return self.require_role(env, UserRole::Viewer),
        };
        match (role, own) {
            (Role::Admin, _) => Ok(()),
            (Role::Metrics, _) => Err(self.metrics_only()),
            (Role::Sdk | Role::Client, Some(own)) if own == env => Ok(()),
            _ => Err(ApiError::Forbidden(format!(
                "token {:?} is scoped to environment {:?}, not {env:?}",
                self.name,
                own.unwrap_or("")
            ))),
        }
    }

    /// May this caller send experiment events to `env` (the environment
    /// [`Caller::sdk_env`] gave)? Tokens that reach it may; a person must be
    /// an editor there (events change results).
    pub(crate) fn require_events(&self, env: &str) -> ApiResult<()> {
        match &self.who {
            Who::Token { .. } => Ok(()),
            Who::Person(_) => self.require_role(env, UserRole::Editor),
        }
    }

    /// May this caller read `/metrics`?
    pub(crate) fn require_metrics(&self) -> ApiResult<()> {
        match &self.who {
            Who::Token {
                role: Role::Admin | Role::Metrics,
                ..
            } => Ok(()),
            Who::Token { role, .. } => Err(ApiError::Forbidden(format!(
                "token {:?} is {} {} token; /metrics needs a metrics or an admin token",
                self.name,
                article(*role),
                role.as_str()
            ))),
            Who::Person(_) => self.require_admin(),
        }
    }

    fn metrics_only(&self) -> ApiError {
        ApiError::Forbidden(format!(
            "token {:?} is a metrics token: it reads /metrics only",
            self.name
        ))
    }

    /// The environment of an SDK or OFREP request: an sdk token's own, or
    /// for an admin token (or a person) the one named by the
    /// `X-Guidon-Environment` header. An sdk token whose request names
    /// another environment is refused rather than answered from its own
    /// (the caller would take one environment's flags for another's).
    pub(crate) fn sdk_env(&self, headers: &HeaderMap) -> ApiResult<String> {
        let named = headers
            .get(ENV_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        let (role, own) = match &self.who {
            Who::Token { role, env } => (*role, env),
            Who::Person(_) => {
                let env = named.map(str::to_owned).ok_or_else(|| {
                    ApiError::BadRequest(
                        "name the environment in the X-Guidon-Environment header".into(),
                    )
                })?;
                self.require_evaluate(&env)?;
                return Ok(env);
            }
        };
        match role {
            Role::Metrics => Err(self.metrics_only()),
            Role::Sdk | Role::Client => {
                let own = own
                    .clone()
                    .ok_or_else(|| ApiError::Forbidden("token without environment".into()))?;
                if let Some(named) = named {
                    self.require_evaluate(named)?;
                }
                Ok(own)
            }
            Role::Admin => named.map(str::to_owned).ok_or_else(|| {
                ApiError::BadRequest(
                    "an admin token must name the environment in the X-Guidon-Environment header"
                        .into(),
                )
            }),
        }
    }
}

fn article(role: Role) -> &'static str {
    match role {
        Role::Admin => "an",
        _ => "a",
    }
}

fn role_article(role: UserRole) -> &'static str {
    match role {
        UserRole::Admin | UserRole::Editor => "an",
        UserRole::Viewer => "a",
    }
}

impl From<guidon_protocol::api::TokenInfo> for Caller {
    fn from(info: guidon_protocol::api::TokenInfo) -> Caller {
        Caller {
            name: info.name,
            who: Who::Token {
                role: info.role,
                env: info.env,
            },
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    /// A token (`Authorization`, `X-API-Key`) first; else the session
    /// cookie, whose writes (any method but GET, HEAD, OPTIONS) must echo
    /// the session's CSRF token in `X-CSRF-Token`.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Caller, ApiError> {
        if let Some(secret) = presented(&parts.headers) {
            let info = state
                .authenticate(secret)
                .await?
                .ok_or(ApiError::Unauthorized)?;
            return Ok(Caller::from(info));
        }
        let secret = crate::people::session_cookie(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let session = state
            .store()?
            .session(secret)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            let echoed = parts
                .headers
                .get(crate::people::CSRF_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !bool::from(echoed.ct_eq(session.csrf_token.as_bytes())) {
                return Err(ApiError::Forbidden(format!(
                    "a change made with the session cookie must carry the session's CSRF token \
                     in the {} header (from POST or GET /api/v1/session)",
                    crate::people::CSRF_HEADER
                )));
            }
        }
        Ok(Caller::person(session))
    }
}

/// The secret a request presents: `Authorization: Bearer S` or `X-API-Key: S`.
pub(crate) fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim())
            .filter(|s| !s.is_empty());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// A new secret from the operating system's CSPRNG: `gdn_` and 32 random
/// bytes in hex.
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("gdn_{}", guidon_store::hex(&bytes)))
}
