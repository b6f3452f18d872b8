//! Who is calling: the token a request presents, checked against the
//! in-memory token table (`tokens.rs`), and what its role may do.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use guidon_protocol::api::Role;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// The header an admin token uses to name the environment of an OFREP or
/// SDK request (an sdk token's own environment is implied).
pub const ENV_HEADER: &str = "x-guidon-environment";

/// Who is calling.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) env: Option<String>,
}

impl Caller {
    pub(crate) fn require_admin(&self) -> ApiResult<()> {
        match self.role {
            Role::Admin => Ok(()),
            role => Err(ApiError::Forbidden(format!(
                "token {:?} is {} {} token; this needs an admin token",
                self.name,
                article(role),
                role.as_str()
            ))),
        }
    }

    /// May this caller read `env`'s definitions (and evaluate it)?
    pub(crate) fn require_env(&self, env: &str) -> ApiResult<()> {
        match self.role {
            Role::Client => Err(ApiError::Forbidden(format!(
                "token {:?} is a client token: it can evaluate flags (OFREP, /evaluate) \
                 and send events, not read definitions",
                self.name
            ))),
            _ => self.require_evaluate(env),
        }
    }

    /// May this caller evaluate `env`?
    pub(crate) fn require_evaluate(&self, env: &str) -> ApiResult<()> {
        match (self.role, self.env.as_deref()) {
            (Role::Admin, _) => Ok(()),
            (Role::Metrics, _) => Err(self.metrics_only()),
            (Role::Sdk | Role::Client, Some(own)) if own == env => Ok(()),
            _ => Err(ApiError::Forbidden(format!(
                "token {:?} is scoped to environment {:?}, not {env:?}",
                self.name,
                self.env.as_deref().unwrap_or("")
            ))),
        }
    }

    /// May this caller read `/metrics`?
    pub(crate) fn require_metrics(&self) -> ApiResult<()> {
        match self.role {
            Role::Admin | Role::Metrics => Ok(()),
            role => Err(ApiError::Forbidden(format!(
                "token {:?} is {} {} token; /metrics needs a metrics or an admin token",
                self.name,
                article(role),
                role.as_str()
            ))),
        }
    }

    fn metrics_only(&self) -> ApiError {
        ApiError::Forbidden(format!(
            "token {:?} is a metrics token: it reads /metrics only",
            self.name
        ))
    }

    /// The environment of an SDK or OFREP request: an sdk token's own, or
    /// for an admin token the one named by the `X-Guidon-Environment` header.
    /// An sdk token whose request names another environment is refused
    /// rather than answered from its own (the caller would take one
    /// environment's flags for another's).
    pub(crate) fn sdk_env(&self, headers: &HeaderMap) -> ApiResult<String> {
        match self.role {
            Role::Metrics => Err(self.metrics_only()),
            Role::Sdk | Role::Client => {
                let own = self
                    .env
                    .clone()
                    .ok_or_else(|| ApiError::Forbidden("token without environment".into()))?;
                if let Some(named) = headers
                    .get(ENV_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                {
                    self.require_evaluate(named)?;
                }
                Ok(own)
            }
            Role::Admin => headers
                .get(ENV_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
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

impl From<guidon_protocol::api::TokenInfo> for Caller {
    fn from(info: guidon_protocol::api::TokenInfo) -> Caller {
        Caller {
            name: info.name,
            role: info.role,
            env: info.env,
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Caller, ApiError> {
        let secret = presented(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let info = state
            .authenticate(secret)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Caller::from(info))
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
