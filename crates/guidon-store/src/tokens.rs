//! API tokens, stored only as SHA-256 hashes of their secrets.

use sha2::{Digest, Sha256};
use sqlx::Row;

use guidon_protocol::api::{Role, TokenInfo};

use crate::error::StoreError;
use crate::store::{Store, now_ms};

/// Hex SHA-256 of a secret, as stored. Lookups compare hashes, so the time
/// a lookup takes says nothing about how much of a guessed secret was right.
pub fn secret_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Lower-case hex, into one buffer (it runs on every authenticated request).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn info(row: &sqlx::any::AnyRow) -> Result<TokenInfo, StoreError> {
    let role: String = row.try_get("role")?;
    Ok(TokenInfo {
        name: row.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt {
            env: String::new(),
            kind: "token",
            key: row.try_get("name").unwrap_or_default(),
            message: format!("unknown role {role:?}"),
        })?,
        env: row.try_get("env")?,
        created_at_ms: row.try_get("created_at")?,
        last_used_at_ms: row.try_get("last_used_at")?,
        revoked: row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
    })
}

impl Store {
    /// Stores a token. The caller generates `secret` and shows it once; only
    /// its hash is kept. An `sdk` token must name an existing environment;
    /// an `admin` token names none.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        env: Option<&str>,
        secret: &str,
    ) -> Result<TokenInfo, StoreError> {
        // The key rule: names appear in URL paths (`DELETE /tokens/{name}`).
        if !guidon_engine::is_valid_key(name) {
            return Err(StoreError::InvalidTokenName(name.to_owned()));
        }
        match (role, env) {
            (Role::Sdk | Role::Client, Some(env)) => {
                self.revision(env).await?;
            }
            (Role::Sdk, None) => {
                return Err(StoreError::TokenScope("an sdk token needs an environment"));
            }
            (Role::Client, None) => {
                return Err(StoreError::TokenScope(
                    "a client token needs an environment",
                ));
            }
            (Role::Admin, Some(_)) => {
                return Err(StoreError::TokenScope(
                    "an admin token is not scoped to an environment",
                ));
            }
            (Role::Metrics, Some(_)) => {
                return Err(StoreError::TokenScope(
                    "a metrics token is not scoped to an environment",
                ));
            }
            (Role::Admin | Role::Metrics, None) => {}
        }
        let done = sqlx::query(
            "INSERT INTO tokens (name, secret_hash, role, env, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(secret_hash(secret))
        .bind(role.as_str())
        .bind(env)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::TokenExists(name.to_owned()));
        }
        self.token(name).await
    }

    async fn token(&self, name: &str) -> Result<TokenInfo, StoreError> {
        let row = sqlx::query(
            "SELECT name, role, env, created_at, last_used_at, revoked_at FROM tokens WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::UnknownToken(name.to_owned()))?;
        info(&row)
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, role, env, created_at, last_used_at, revoked_at FROM tokens ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(info).collect()
    }

    /// The live (not revoked) token whose secret this is, marking it used.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<TokenInfo>, StoreError> {
        let row = sqlx::query(
            "UPDATE tokens SET last_used_at = $1 WHERE secret_hash = $2 AND revoked_at IS NULL \
             RETURNING name, role, env, created_at, last_used_at, revoked_at",
        )
        .bind(now_ms())
        .bind(secret_hash(secret))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(info).transpose()
    }

    /// Every live (not revoked) token with the hash of its secret: what a
    /// server keeps in memory to authenticate without a query per request.
    pub async fn live_tokens(&self) -> Result<Vec<(String, TokenInfo)>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, secret_hash, role, env, created_at, last_used_at, revoked_at FROM tokens \
             WHERE revoked_at IS NULL ORDER BY name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("secret_hash")?, info(row)?)))
            .collect()
    }

    /// Records that these tokens were used at `at_ms` (a server batches this).
    pub async fn mark_tokens_used(&self, names: &[String], at_ms: i64) -> Result<(), StoreError> {
        for name in names {
            sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE name = $2")
                .bind(at_ms)
                .bind(name)
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    /// Whether any live admin token exists (the server makes one on first start otherwise).
    pub async fn has_admin_token(&self) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM tokens WHERE role = 'admin' AND revoked_at IS NULL",
        )
        .fetch_one(self.pool())
        .await?
        .try_get("n")?;
        Ok(n > 0)
    }
}
