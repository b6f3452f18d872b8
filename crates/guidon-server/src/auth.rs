//! Authentication: the live tokens are held in memory (hash of the secret
//! → token), refreshed from the store every few seconds and at once after a
//! change through this instance, so a request costs one SHA-256 and a map
//! lookup instead of a query.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use guidon_store::{Role, Store, TokenInfo, secret_hash};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// How often tokens created or revoked by another instance are noticed.
pub(crate) const TOKEN_REFRESH: Duration = Duration::from_secs(2);

/// The header an admin token uses to name the environment of an OFREP or
/// SDK request (an sdk token's own environment is implied).
pub const ENV_HEADER: &str = "x-guidon-environment";

#[derive(Debug, Default)]
pub(crate) struct Tokens {
    live: ArcSwap<HashMap<String, TokenInfo>>,
    used: Mutex<HashSet<String>>,
}

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
            Role::Sdk => Err(ApiError::Forbidden(format!(
                "token {:?} is an sdk token; this needs an admin token",
                self.name
            ))),
        }
    }

    /// May this caller read and evaluate `env`?
    pub(crate) fn require_env(&self, env: &str) -> ApiResult<()> {
        match (self.role, self.env.as_deref()) {
            (Role::Admin, _) => Ok(()),
            (Role::Sdk, Some(own)) if own == env => Ok(()),
            _ => Err(ApiError::Forbidden(format!(
                "token {:?} is scoped to environment {:?}, not {env:?}",
                self.name,
                self.env.as_deref().unwrap_or("")
            ))),
        }
    }

    /// The environment of an SDK or OFREP request: an sdk token's own, or
    /// for an admin token the one named by the `X-Guidon-Environment` header.
    /// An sdk token whose request names another environment is refused
    /// rather than answered from its own (the caller would take one
    /// environment's flags for another's).
    pub(crate) fn sdk_env(&self, headers: &HeaderMap) -> ApiResult<String> {
        match self.role {
            Role::Sdk => {
                let own = self
                    .env
                    .clone()
                    .ok_or_else(|| ApiError::Forbidden("sdk token without environment".into()))?;
                if let Some(named) = headers
                    .get(ENV_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                {
                    self.require_env(named)?;
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

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Caller, ApiError> {
        state.tokens.authenticate(&parts.headers)
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

impl Tokens {
    pub(crate) async fn load(store: &Store) -> Result<Tokens, guidon_store::StoreError> {
        let tokens = Tokens::default();
        tokens.refresh(store).await?;
        Ok(tokens)
    }

    pub(crate) async fn refresh(&self, store: &Store) -> Result<(), guidon_store::StoreError> {
        let live = store.live_tokens().await?;
        self.live.store(Arc::new(live.into_iter().collect()));
        Ok(())
    }

    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> ApiResult<Caller> {
        let secret = presented(headers).ok_or(ApiError::Unauthorized)?;
        let hash = secret_hash(secret);
        let live = self.live.load();
        let (stored, info) = live.get_key_value(&hash).ok_or(ApiError::Unauthorized)?;
        // The map found it by hash; compare once more in constant time so no
        // path of the check depends on how much of the secret matched.
        if !bool::from(stored.as_bytes().ct_eq(hash.as_bytes())) {
            return Err(ApiError::Unauthorized);
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if !used.contains(&info.name) {
            used.insert(info.name.clone());
        }
        Ok(Caller {
            name: info.name.clone(),
            role: info.role,
            env: info.env.clone(),
        })
    }

    /// Whether the token named `name` is live (not revoked or deleted).
    pub(crate) fn is_live(&self, name: &str) -> bool {
        self.live.load().values().any(|t| t.name == name)
    }

    /// Names used since the last call (their last-used time is recorded in batches).
    pub(crate) fn take_used(&self) -> Vec<String> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.drain().collect()
    }
}

/// A new secret from the operating system's CSPRNG: `gdn_` and 32 random
/// bytes in hex.
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("gdn_{}", guidon_store::hex(&bytes)))
}
