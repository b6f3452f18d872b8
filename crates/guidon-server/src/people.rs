//! People: accounts with argon2id password hashes, sign-in with a session
//! cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over TLS, 12 h), CSRF
//! tokens for the cookie's writes, a sign-in rate limit per account and per
//! address, and the `/api/v1/users` routes. Roles are enforced by
//! [`Caller`] for every route.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use guidon_protocol::api::{
    EVERY_ENV, Login, NewUser, SessionInfo, SetPassword, SetRoles, UserInfo, UserRole, UserRoles,
    Users,
};
use guidon_store::{Session, Store};

use crate::app::AppState;
use crate::auth::Caller;
use crate::body::{self, Body, Path};
use crate::error::{ApiError, ApiResult, ErrorBody};

type St = State<Arc<AppState>>;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "guidon_session";
/// The header a cookie-authenticated write echoes the CSRF token in.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after sign-in.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Passwords are at least this many characters…
pub(crate) const MIN_PASSWORD_CHARS: usize = 8;
/// …and at most this many bytes (hashing is costly; a megabyte password
/// would be a cheap way to spend the server's time).
pub(crate) const MAX_PASSWORD_BYTES: usize = 1024;
/// Failed sign-ins counted per account, and per address, over this window.
pub(crate) const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failed sign-ins of one account within [`LOGIN_WINDOW`] before further
/// attempts for it are refused (429) until the window ends.
pub(crate) const LOGIN_FAILURES_PER_ACCOUNT: u32 = 5;
/// The same, per client address (any account).
pub(crate) const LOGIN_FAILURES_PER_ADDRESS: u32 = 20;

/// The peer address of a connection, put on each request by the listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/api/v1/session",
            get(get_session).post(login).delete(logout),
        )
        .route("/api/v1/users", get(list_users).post(add_user))
        .route("/api/v1/users/{name}", get(get_user).delete(remove_user))
        .route("/api/v1/users/{name}/roles", put(set_roles))
        .route("/api/v1/users/{name}/password", put(set_password))
}

// ---- passwords ----

fn check_password(password: &str) -> ApiResult<()> {
    let invalid = |message: String| ApiError::InvalidBody {
        path: "password".into(),
        message,
    };
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(invalid(format!(
            "password: at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(invalid(format!(
            "password: at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The argon2id PHC string of `password` (with argon2's default cost:
/// 19 MiB, 2 passes), on the blocking pool.
pub(crate) async fn hash_password(password: &str) -> ApiResult<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut salt = [0_u8; 16];
        getrandom::fill(&mut salt).map_err(|e| ApiError::Internal(e.to_string()))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::Internal(e.to_string()))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// Whether `password` is the one of `phc` (on the blocking pool). For an
/// unknown account `phc` is `None` and a hash of a random password is
/// checked instead, so a wrong name costs what a wrong password costs.
async fn verify_password(password: &str, phc: Option<String>) -> ApiResult<bool> {
    static DECOY: OnceLock<String> = OnceLock::new();
    let known = phc.is_some();
    let phc = match phc {
        Some(phc) => phc,
        None => match DECOY.get() {
            Some(decoy) => decoy.clone(),
            None => {
                let random = crate::auth::generate_secret()
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                let decoy = hash_password(&random).await?;
                DECOY.get_or_init(|| decoy).clone()
            }
        },
    };
    let password = password.to_owned();
    let ok = tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc).is_ok_and(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(ok && known)
}

// ---- sign-in rate limit ----

/// Failed sign-ins per account and per address, each over a fixed window
/// of [`LOGIN_WINDOW`] from its first failure. Only failures count: people
/// who type their password right are never slowed down.
#[derive(Debug, Default)]
pub(crate) struct LoginLimiter {
    failures: Mutex<HashMap<String, (Instant, u32)>>,
}

impl LoginLimiter {
    fn keys(account: &str, addr: Option<IpAddr>) -> [(Option<String>, u32); 2] {
        [
            (
                Some(format!("account:{}", account.to_lowercase())),
                LOGIN_FAILURES_PER_ACCOUNT,
            ),
            (
                addr.map(|a| format!("address:{a}")),
                LOGIN_FAILURES_PER_ADDRESS,
            ),
        ]
    }

    /// `Err(seconds to wait)` while the account or the address is over its limit.
    fn check(&self, account: &str, addr: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        let failures = lock(&self.failures);
        for (key, max) in Self::keys(account, addr) {
            let Some(key) = key else { continue };
            if let Some((start, count)) = failures.get(&key)
                && now.duration_since(*start) < LOGIN_WINDOW
                && *count >= max
            {
                let left = LOGIN_WINDOW.saturating_sub(now.duration_since(*start));
                return Err(left.as_secs().max(1));
            }
        }
        Ok(())
    }

    fn failed(&self, account: &str, addr: Option<IpAddr>, now: Instant) {
        let mut failures = lock(&self.failures);
        if failures.len() > 100_000 {
            failures.retain(|_, (start, _)| now.duration_since(*start) < LOGIN_WINDOW);
        }
        for (key, _) in Self::keys(account, addr) {
            let Some(key) = key else { continue };
            let entry = failures.entry(key).or_insert((now, 0));
            if now.duration_since(entry.0) >= LOGIN_WINDOW {
                *entry = (now, 0);
            }
            entry.1 = entry.1.saturating_add(1);
        }
    }

    fn succeeded(&self, account: &str) {
        lock(&self.failures).remove(&format!("account:{}", account.to_lowercase()));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding it leaves a valid map.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- cookies ----

/// The session secret of the request's cookie, if it has one.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

fn cookie(value: &str, max_age: u64, secure: bool) -> ApiResult<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .map_err(|e| ApiError::Internal(e.to_string()))
}

fn session_info(session: &Session) -> SessionInfo {
    SessionInfo {
        user: session.user.name.clone(),
        roles: session.user.roles.clone(),
        csrf_token: session.csrf_token.clone(),
        expires_at_ms: session.expires_at_ms,
    }
}

// ---- session routes ----

#[utoipa::path(
    post,
    path = "/api/v1/session",
    tag = "people",
    summary = "Sign in: sets the session cookie",
    security(()),
    request_body = Login,
    responses((status = 200, description = "Signed in; Set-Cookie carries the session", body = SessionInfo), (status = 401, description = "Wrong user or password", body = ErrorBody), (status = 429, description = "Too many failed sign-ins for this account or address; Retry-After says when to try again", body = ErrorBody), (status = 400, description = "Bad request: the message names the field", body = ErrorBody))
)]
pub(crate) async fn login(
    State(state): St,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    let login: Login = body::json(&headers, &bytes).await?;
    let addr = peer.map(|Extension(PeerAddr(a))| a.ip());
    if let Err(retry_after) = state.logins.check(&login.user, addr, Instant::now()) {
        return Err(ApiError::TooManyRequests { retry_after });
    }
    let credentials = if login.password.len() > MAX_PASSWORD_BYTES {
        None
    } else {
        state.store()?.user_credentials(&login.user).await?
    };
    let (user, phc) = match credentials {
        Some((user, phc)) => (Some(user), Some(phc)),
        None => (None, None),
    };
    let password = if login.password.len() > MAX_PASSWORD_BYTES {
        ""
    } else {
        login.password.as_str()
    };
    let ok = verify_password(password, phc).await?;
    let Some(user) = user.filter(|_| ok) else {
        state.logins.failed(&login.user, addr, Instant::now());
        tracing::info!(user = %login.user, addr = ?addr, "failed sign-in");
        return Err(ApiError::WrongCredentials);
    };
    state.logins.succeeded(&login.user);
    let secret = crate::auth::generate_secret().map_err(|e| ApiError::Internal(e.to_string()))?;
    let csrf = crate::auth::generate_secret().map_err(|e| ApiError::Internal(e.to_string()))?;
    let ttl_ms = i64::try_from(SESSION_TTL.as_millis()).unwrap_or(i64::MAX);
    let expires_at_ms = now_ms().saturating_add(ttl_ms);
    state
        .store()?
        .create_session(&user.name, &secret, &csrf, expires_at_ms)
        .await?;
    tracing::info!(user = %user.name, "signed in");
    let session = Session {
        user,
        csrf_token: csrf,
        expires_at_ms,
    };
    let mut response = Json(session_info(&session)).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        cookie(&secret, SESSION_TTL.as_secs(), state.secure_cookies)?,
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/api/v1/session",
    tag = "people",
    summary = "The signed-in person, their roles and the CSRF token",
    responses((status = 200, description = "Signed in", body = SessionInfo), (status = 401, description = "Not signed in (no cookie, or an expired session)", body = ErrorBody), (status = 403, description = "Called with a token: tokens have no session", body = ErrorBody))
)]
pub(crate) async fn get_session(caller: Caller) -> ApiResult<Response> {
    let session = caller
        .session()
        .ok_or_else(|| ApiError::Forbidden("a token has no session".into()))?;
    let mut response = Json(session_info(session)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[utoipa::path(
    delete,
    path = "/api/v1/session",
    tag = "people",
    summary = "Sign out: ends the session and clears the cookie (needs X-CSRF-Token)",
    responses((status = 204, description = "Signed out"), (status = 401, description = "Not signed in", body = ErrorBody), (status = 403, description = "No CSRF token, or called with a token", body = ErrorBody))
)]
pub(crate) async fn logout(
    State(state): St,
    caller: Caller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if caller.session().is_none() {
        return Err(ApiError::Forbidden("a token has no session".into()));
    }
    if let Some(secret) = session_cookie(&headers) {
        state.store()?.end_session(secret).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie("", 0, state.secure_cookies)?);
    Ok(response)
}

// ---- users ----

#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "people",
    summary = "People and their roles (admin)",
    responses((status = 200, description = "{users}", body = Users), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody))
)]
pub(crate) async fn list_users(State(state): St, caller: Caller) -> ApiResult<Json<Users>> {
    caller.require_admin()?;
    Ok(Json(Users {
        users: state.store()?.list_users().await?,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/users",
    tag = "people",
    summary = "Add a person (admin)",
    request_body = NewUser,
    responses((status = 201, description = "Added", body = UserInfo), (status = 409, description = "Name taken", body = ErrorBody), (status = 400, description = "Bad request: `path` names the field (name, password, roles.ENV)", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody))
)]
pub(crate) async fn add_user(
    State(state): St,
    caller: Caller,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let new: NewUser = body::json(&headers, &bytes).await?;
    crate::admin::check_key("user name", &new.name).map_err(|e| ApiError::InvalidBody {
        path: "name".into(),
        message: e.to_string(),
    })?;
    check_password(&new.password)?;
    let hash = hash_password(&new.password).await?;
    let user = state
        .store()?
        .create_user(&new.name, &hash, &new.roles)
        .await?;
    tracing::info!(user = %user.name, by = %caller.name, "person added");
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/v1/users/{name}",
    tag = "people",
    summary = "One person (admin)",
    params(("name" = String, Path, description = "User name")),
    responses((status = 200, description = "The person", body = UserInfo), (status = 404, description = "No such person", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody))
)]
pub(crate) async fn get_user(
    State(state): St,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<UserInfo>> {
    caller.require_admin()?;
    Ok(Json(state.store()?.user(&name).await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/users/{name}/roles",
    tag = "people",
    summary = "Replace a person's roles (admin); the last admin of \"*\" cannot be demoted",
    params(("name" = String, Path, description = "User name")),
    request_body = SetRoles,
    responses((status = 200, description = "The person", body = UserInfo), (status = 404, description = "No such person", body = ErrorBody), (status = 409, description = "The last admin", body = ErrorBody), (status = 400, description = "Bad request: `path` names the field", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody))
)]
pub(crate) async fn set_roles(
    State(state): St,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<Json<UserInfo>> {
    caller.require_admin()?;
    let set: SetRoles = body::json(&headers, &bytes).await?;
    let user = state.store()?.set_user_roles(&name, &set.roles).await?;
    tracing::info!(user = %name, by = %caller.name, roles = ?set.roles, "roles set");
    Ok(Json(user))
}

#[utoipa::path(
    put,
    path = "/api/v1/users/{name}/password",
    tag = "people",
    summary = "Set a person's password (admin); ends their sessions",
    params(("name" = String, Path, description = "User name")),
    request_body = SetPassword,
    responses((status = 204, description = "Set"), (status = 404, description = "No such person", body = ErrorBody), (status = 400, description = "Bad request: `path` names the field", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody))
)]
pub(crate) async fn set_password(
    State(state): St,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Body(bytes): Body,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let set: SetPassword = body::json(&headers, &bytes).await?;
    check_password(&set.password)?;
    // Unknown names are answered 404 before the cost of hashing.
    state.store()?.user(&name).await?;
    let hash = hash_password(&set.password).await?;
    state.store()?.set_user_password(&name, &hash).await?;
    tracing::info!(user = %name, by = %caller.name, "password reset");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/api/v1/users/{name}",
    tag = "people",
    summary = "Remove a person and end their sessions (admin); not the last admin of \"*\"",
    params(("name" = String, Path, description = "User name")),
    responses((status = 204, description = "Removed"), (status = 404, description = "No such person", body = ErrorBody), (status = 409, description = "The last admin", body = ErrorBody), (status = 401, description = "Missing or unknown token", body = ErrorBody), (status = 403, description = "Not an admin", body = ErrorBody))
)]
pub(crate) async fn remove_user(
    State(state): St,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.store()?.remove_user(&name).await?;
    tracing::info!(user = %name, by = %caller.name, "person removed");
    Ok(StatusCode::NO_CONTENT)
}

// ---- first start ----

/// `GUIDON_ADMIN_PASSWORD` (with `GUIDON_ADMIN_USER`): that person exists,
/// admin of every environment. A person of that name who exists already is
/// left as they are (their password may have been changed since).
pub(crate) async fn bootstrap_user(
    store: &Store,
    name: &str,
    password: &str,
) -> Result<bool, String> {
    if !guidon_engine::is_valid_key(name) {
        return Err(format!(
            "GUIDON_ADMIN_USER {name:?}: must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$"
        ));
    }
    check_password(password).map_err(|e| format!("GUIDON_ADMIN_PASSWORD: {e}"))?;
    match store.user(name).await {
        Ok(_) => return Ok(false),
        Err(guidon_store::StoreError::UnknownUser(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    let hash = hash_password(password).await.map_err(|e| e.to_string())?;
    let roles = UserRoles::from([(EVERY_ENV.to_owned(), UserRole::Admin)]);
    match store.create_user(name, &hash, &roles).await {
        // Another instance made them meanwhile: they exist.
        Ok(_) | Err(guidon_store::StoreError::UserExists(_)) => Ok(true),
        Err(e) => Err(e.to_string()),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_limit_are_refused_until_the_window_ends() {
        let limiter = LoginLimiter::default();
        let addr: Option<IpAddr> = "10.0.0.1".parse().ok();
        let t0 = Instant::now();
        for _ in 0..LOGIN_FAILURES_PER_ACCOUNT {
            assert!(limiter.check("Alice", addr, t0).is_ok());
            limiter.failed("Alice", addr, t0);
        }
        assert!(
            limiter.check("alice", None, t0).is_err(),
            "per account, any case"
        );
        assert!(
            limiter.check("bob", addr, t0).is_ok(),
            "the address has room"
        );
        assert!(limiter.check("alice", addr, t0 + LOGIN_WINDOW).is_ok());
        for i in 0..LOGIN_FAILURES_PER_ADDRESS {
            limiter.failed(&format!("u{i}"), addr, t0);
        }
        assert!(limiter.check("carol", addr, t0).is_err(), "per address");
        assert!(limiter.check("carol", "10.0.0.2".parse().ok(), t0).is_ok());
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; guidon_session=s3cret ; b=2"),
        );
        assert_eq!(session_cookie(&headers), Some("s3cret"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("guidon_sessionx=1"),
        );
        assert_eq!(session_cookie(&headers), None);
    }
}
