//! People and their sessions. The store keeps what it is given: a
//! password's argon2id PHC string (the server hashes) and the SHA-256 of a
//! session's secret ([`secret_hash`]), never a secret itself.
//!
//! Nobody can lock everyone out: removing or demoting the last admin of
//! every environment (`*`), or revoking the last admin token while no such
//! person exists, is refused ([`StoreError::LastAdmin`]). Each of these
//! writes changes first and counts after, in one transaction that holds the
//! tables (PostgreSQL: `LOCK TABLE`; SQLite: its write lock), so two
//! admins demoting each other at once cannot both succeed.

use guidon_protocol::api::{EVERY_ENV, Role, UserInfo, UserRoles, is_global_admin};
use sqlx::{Any, Row, Transaction};

use crate::error::StoreError;
use crate::store::{Backend, Store, finish, now_ms};
use crate::tokens::secret_hash;

/// A session as the server checks it on every request made with its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: UserInfo,
    pub csrf_token: String,
    pub expires_at_ms: i64,
}

const USER_COLUMNS: &str = "name, roles, created_at, last_login_at";

fn user(row: &sqlx::any::AnyRow) -> Result<UserInfo, StoreError> {
    let name: String = row.try_get("name")?;
    let roles: String = row.try_get("roles")?;
    let roles: UserRoles = serde_json::from_str(&roles).map_err(|e| StoreError::Corrupt {
        env: String::new(),
        kind: "user",
        key: name.clone(),
        message: format!("roles: {e}"),
    })?;
    Ok(UserInfo {
        name,
        roles,
        created_at_ms: row.try_get("created_at")?,
        last_login_at_ms: row.try_get("last_login_at")?,
    })
}

impl Store {
    /// Checks that every key of `roles` is `*` or an existing environment.
    async fn check_roles(&self, roles: &UserRoles) -> Result<(), StoreError> {
        for env in roles.keys() {
            if env == EVERY_ENV {
                continue;
            }
            match self.revision(env).await {
                Ok(_) => {}
                Err(StoreError::UnknownEnv(_) | StoreError::InvalidEnvName(_)) => {
                    return Err(StoreError::InvalidRoles {
                        path: format!("roles.{env}"),
                        message: format!("no environment named {env:?} (or \"*\" for every one)"),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Stores a person. `password_hash` is a PHC string made by the caller.
    pub async fn create_user(
        &self,
        name: &str,
        password_hash: &str,
        roles: &UserRoles,
    ) -> Result<UserInfo, StoreError> {
        if !guidon_engine::is_valid_key(name) {
            return Err(StoreError::InvalidUserName(name.to_owned()));
        }
        self.check_roles(roles).await?;
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO users (name, password_hash, roles, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(password_hash)
        .bind(roles_json(roles)?)
        .bind(now)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UserExists(name.to_owned()));
        }
        self.user(name).await
    }

    pub async fn user(&self, name: &str) -> Result<UserInfo, StoreError> {
        let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::UnknownUser(name.to_owned()))?;
        user(&row)
    }

    pub async fn list_users(&self) -> Result<Vec<UserInfo>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(user).collect()
    }

    /// The person and their password's PHC string, to check a sign-in.
    pub async fn user_credentials(
        &self,
        name: &str,
    ) -> Result<Option<(UserInfo, String)>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, password_hash FROM users WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| Ok((user(&row)?, row.try_get("password_hash")?)))
            .transpose()
    }

    /// Whether any person is an admin of every environment.
    pub async fn has_admin_user(&self) -> Result<bool, StoreError> {
        Ok(self
            .list_users()
            .await?
            .iter()
            .any(|u| is_global_admin(&u.roles)))
    }

    /// Replaces a person's roles. Refused when it would leave no admin of `*`.
    pub async fn set_user_roles(
        &self,
        name: &str,
        roles: &UserRoles,
    ) -> Result<UserInfo, StoreError> {
        self.check_roles(roles).await?;
        let mut tx = self.lock_people().await?;
        let result = async {
            let was = was_admin(&mut tx, name).await?;
            sqlx::query("UPDATE users SET roles = $1, updated_at = $2 WHERE name = $3")
                .bind(roles_json(roles)?)
                .bind(now_ms())
                .bind(name)
                .execute(&mut *tx)
                .await?;
            if was {
                keep_an_admin_user(&mut tx, "demote").await?;
            }
            Ok(())
        }
        .await;
        finish(tx, result).await?;
        self.user(name).await
    }

    /// Sets a person's password and ends their sessions.
    pub async fn set_user_password(
        &self,
        name: &str,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let result = async {
            let done =
                sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE name = $3")
                    .bind(password_hash)
                    .bind(now_ms())
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::UnknownUser(name.to_owned()));
            }
            sqlx::query("DELETE FROM sessions WHERE user_name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    /// Removes a person and their sessions. Refused for the last admin of `*`.
    pub async fn remove_user(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.lock_people().await?;
        let result = async {
            let was = was_admin(&mut tx, name).await?;
            sqlx::query("DELETE FROM sessions WHERE user_name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM users WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            if was {
                keep_an_admin_user(&mut tx, "remove").await?;
            }
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    /// Revokes a token; it stays listed, marked revoked. The last live
    /// admin token is not revoked while no person is an admin of `*`.
    pub async fn revoke_token(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.lock_people().await?;
        let result = async {
            let row = sqlx::query("SELECT role, revoked_at FROM tokens WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::UnknownToken(name.to_owned()))?;
            // Revoking twice is not an error.
            if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
                return Ok(());
            }
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE name = $2")
                .bind(now_ms())
                .bind(name)
                .execute(&mut *tx)
                .await?;
            let role: String = row.try_get("role")?;
            if role == Role::Admin.as_str() {
                keep_an_admin(&mut tx).await?;
            }
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    /// A transaction that holds people and tokens against concurrent changes.
    async fn lock_people(&self) -> Result<Transaction<'static, Any>, StoreError> {
        let mut tx = self.pool().begin().await?;
        if self.backend() == Backend::Postgres {
            sqlx::query("LOCK TABLE users, tokens IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
        } else {
            // Take SQLite's write lock now, so what is counted below is
            // the latest state (a no-op write).
            sqlx::query("UPDATE users SET name = name WHERE 0 = 1")
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    /// Starts a session for `user` whose cookie's secret is `secret`.
    pub async fn create_session(
        &self,
        user: &str,
        secret: &str,
        csrf_token: &str,
        expires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        // Expired sessions are of no use to anyone: dropped as new ones start.
        sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, user_name, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(secret_hash(secret))
        .bind(user)
        .bind(csrf_token)
        .bind(now)
        .bind(expires_at_ms)
        .execute(self.pool())
        .await?;
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE name = $2")
            .bind(now)
            .bind(user)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The live (unexpired) session whose cookie's secret this is, with its
    /// person's current roles.
    pub async fn session(&self, secret: &str) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(
            "SELECT u.name, u.roles, u.created_at, u.last_login_at, s.csrf_token, s.expires_at \
             FROM sessions s JOIN users u ON u.name = s.user_name \
             WHERE s.id_hash = $1 AND s.expires_at > $2",
        )
        .bind(secret_hash(secret))
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(Session {
                user: user(&row)?,
                csrf_token: row.try_get("csrf_token")?,
                expires_at_ms: row.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Ends the session whose cookie's secret this is (signing out).
    pub async fn end_session(&self, secret: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(secret_hash(secret))
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

fn roles_json(roles: &UserRoles) -> Result<String, StoreError> {
    serde_json::to_string(roles).map_err(|e| StoreError::Task(e.to_string()))
}

/// Whether the person `name` is an admin of `*` now (inside `tx`).
async fn was_admin(tx: &mut Transaction<'static, Any>, name: &str) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT roles FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::UnknownUser(name.to_owned()))?;
    let roles: String = row.try_get("roles")?;
    Ok(serde_json::from_str::<UserRoles>(&roles).is_ok_and(|r| is_global_admin(&r)))
}

/// How many people are admins of `*` (inside `tx`).
async fn admin_users(tx: &mut Transaction<'static, Any>) -> Result<usize, StoreError> {
    let rows = sqlx::query("SELECT roles FROM users")
        .fetch_all(&mut **tx)
        .await?;
    let mut admins = 0_usize;
    for row in &rows {
        let roles: String = row.try_get("roles")?;
        if serde_json::from_str::<UserRoles>(&roles).is_ok_and(|r| is_global_admin(&r)) {
            admins += 1;
        }
    }
    Ok(admins)
}

/// Fails (so the transaction rolls back) when the change left no admin of `*`.
async fn keep_an_admin_user(
    tx: &mut Transaction<'static, Any>,
    what: &str,
) -> Result<(), StoreError> {
    if admin_users(tx).await? == 0 {
        return Err(StoreError::LastAdmin(format!(
            "cannot {what} the last admin (a person with the admin role on \"*\"): \
             make another person admin first"
        )));
    }
    Ok(())
}

/// Fails when the revocation left no live admin token and no admin of `*`.
async fn keep_an_admin(tx: &mut Transaction<'static, Any>) -> Result<(), StoreError> {
    let tokens: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM tokens WHERE role = 'admin' AND revoked_at IS NULL")
            .fetch_one(&mut **tx)
            .await?
            .try_get("n")?;
    if tokens == 0 && admin_users(tx).await? == 0 {
        return Err(StoreError::LastAdmin(
            "cannot revoke the last admin token while no person is an admin of \"*\": \
             add one first (guidon users add NAME --role '*=admin')"
                .into(),
        ));
    }
    Ok(())
}
