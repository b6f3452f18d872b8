//! A typed client of the admin API: environments, flags (read, write,
//! toggle, history, revert, export, import), tokens, experiment events and
//! results. Each call is one or two requests; an error answer becomes
//! [`AdminError::Refused`] with the server's [`ErrorBody`].
//!
//! ```no_run
//! use guidon_client::admin::AdminClient;
//!
//! # async fn run() -> Result<(), guidon_client::admin::AdminError> {
//! let admin = AdminClient::new("http://127.0.0.1:8080", "gdn_admin_token")?;
//! let toggled = admin.toggle_flag("production", "new_checkout", None).await?;
//! println!("now {}, version {}", toggled.flag.enabled, toggled.version);
//! # Ok(()) }
//! ```
//!
//! The server URL may be given with or without a trailing slash, with or
//! without the API's own `/api/v1`, under a proxy's path prefix, and as a
//! bare `host:port`; every call reaches the same API.

mod error;
mod types;

use std::time::Duration;

use guidon_engine::model::Flag;
use guidon_engine::{Format, is_valid_key};
use reqwest::header::{ACCEPT, CONTENT_TYPE, IF_MATCH};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use error::AdminError;
pub use guidon_protocol::api::{
    EVERY_ENV, EnvInfo, ErrorBody, ErrorCode, HistoryEntry, Role, TokenInfo, UserInfo, UserRole,
    UserRoles, Users,
};
pub use guidon_protocol::{Kind, Op};
pub use types::{
    Applied, Body, Deleted, Environments, EventsReceipt, Export, History, Imported, NewToken,
    RejectedEvent, ResultsQuery, Settled, Tokens, VersionedFlag,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How much of a body that is not Guidon's error JSON an error keeps.
const TEXT_KEPT: usize = 1024;

/// A client of one server's admin API, with one token.
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    /// The server's API root, ending in `/api/v1`.
    api: Url,
    /// The server as given (with its scheme), for messages.
    server: String,
    token: String,
}

/// A 2xx answer.
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
    url: Url,
}

impl AdminClient {
    /// A client of the server at `server` (see the module's documentation
    /// for the forms it takes), authenticating with `token`.
    /// An `https://` server's certificate must chain to the system's
    /// roots; see [`AdminClient::ca_certificate_pem`] for another CA.
    pub fn new(server: &str, token: &str) -> Result<AdminClient, AdminError> {
        let (api, server) = api_root(server)?;
        Ok(AdminClient {
            http: http_client(None, api.scheme() == "https")?,
            api,
            server,
            token: token.to_owned(),
        })
    }

    /// The same client, trusting the CA certificates in `pem` (PEM, one or
    /// more) besides the system's roots: a private CA, or the server's own
    /// self-signed certificate.
    pub fn ca_certificate_pem(self, pem: &[u8]) -> Result<AdminClient, AdminError> {
        Ok(AdminClient {
            http: http_client(Some(pem), true)?,
            ..self
        })
    }

    /// The server, as given (with `http://` added to a bare `host:port`).
    pub fn server(&self) -> &str {
        &self.server
    }

    // ---- environments ----

    pub async fn environments(&self) -> Result<Environments, AdminError> {
        self.get(&["envs"]).await
    }

    pub async fn create_environment(&self, name: &str) -> Result<EnvInfo, AdminError> {
        check_key("environment", name)?;
        let body = Body::json(&json!({ "name": name }))?;
        self.send(Method::POST, &["envs"], Some(body), |r| r)
            .await?
            .decode()
    }

    /// Deletes an environment; with `force`, also when it still holds
    /// flags or segments.
    pub async fn delete_environment(&self, name: &str, force: bool) -> Result<(), AdminError> {
        check_key("environment", name)?;
        self.send(Method::DELETE, &["envs", name], None, |r| {
            if force {
                r.query(&[("force", "true")])
            } else {
                r
            }
        })
        .await?;
        Ok(())
    }

    // ---- flags ----

    /// The environment's whole flag file, with its revision.
    pub async fn export(&self, env: &str) -> Result<Export, AdminError> {
        check_key("environment", env)?;
        let reply = self
            .send(Method::GET, &["envs", env, "flags"], None, |r| {
                r.header(ACCEPT, Format::Json.media_type())
            })
            .await?;
        let revision = reply
            .headers
            .get("x-guidon-revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Ok(Export {
            file: reply.decode()?,
            revision,
        })
    }

    /// The environment's flag file as the server writes it in `format`.
    pub async fn export_text(&self, env: &str, format: Format) -> Result<String, AdminError> {
        check_key("environment", env)?;
        let reply = self
            .send(Method::GET, &["envs", env, "flags"], None, |r| {
                r.header(ACCEPT, format.media_type())
            })
            .await?;
        let answered = reply
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(Format::of_media_type);
        if answered != Some(format) {
            return Err(reply.unexpected(format!("not {format}")));
        }
        String::from_utf8(reply.bytes.clone())
            .map_err(|_| reply.unexpected(format!("the {format} is not UTF-8")))
    }

    /// Replaces the environment's flags and segments with a flag file's, in
    /// one revision: whatever the file lacks is deleted.
    pub async fn import(&self, env: &str, file: Body) -> Result<Imported, AdminError> {
        check_key("environment", env)?;
        self.send(Method::PUT, &["envs", env, "flags"], Some(file), |r| r)
            .await?
            .decode()
    }

    pub async fn flag(&self, env: &str, key: &str) -> Result<VersionedFlag, AdminError> {
        check_key("environment", env)?;
        check_key("flag", key)?;
        self.get(&["envs", env, "flags", key]).await
    }

    /// Creates or replaces the flag `key` with `definition` (one flag
    /// object); with `if_version`, only if it is still at that version (0:
    /// only if it does not exist yet).
    pub async fn set_flag(
        &self,
        env: &str,
        key: &str,
        definition: Body,
        if_version: Option<u64>,
    ) -> Result<VersionedFlag, AdminError> {
        check_key("environment", env)?;
        check_key("flag", key)?;
        let reply = self
            .send(
                Method::PUT,
                &["envs", env, "flags", key],
                Some(definition),
                |r| if_match(r, if_version),
            )
            .await?;
        let mut written: VersionedFlag = reply.decode()?;
        written.created = reply.status == StatusCode::CREATED;
        Ok(written)
    }

    /// Deletes a flag; with `if_version`, only if it is still at that version.
    pub async fn delete_flag(
        &self,
        env: &str,
        key: &str,
        if_version: Option<u64>,
    ) -> Result<Deleted, AdminError> {
        check_key("environment", env)?;
        check_key("flag", key)?;
        self.send(Method::DELETE, &["envs", env, "flags", key], None, |r| {
            if_match(r, if_version)
        })
        .await?
        .decode()
    }

    /// Turns a flag on if it is off, off if it is on: reads it, and writes
    /// it back only if it is still at the version read (or at `if_version`),
    /// so a change made meanwhile is never flipped unseen.
    pub async fn toggle_flag(
        &self,
        env: &str,
        key: &str,
        if_version: Option<u64>,
    ) -> Result<VersionedFlag, AdminError> {
        let current = self.flag(env, key).await?;
        let flag = Flag {
            enabled: !current.flag.enabled,
            ..current.flag
        };
        let expected = if_version.unwrap_or(current.version);
        self.set_flag(env, key, Body::json(&flag)?, Some(expected))
            .await
    }

    /// Changes part of the flag `key` with a JSON merge patch (RFC 7396:
    /// the fields `patch` names change, `null` removes one, the rest is
    /// kept), validated like a `PUT`; with `if_version`, only if it is still
    /// at that version. A patch that changes nothing answers `unchanged`.
    pub async fn patch_flag(
        &self,
        env: &str,
        key: &str,
        patch: &Value,
        if_version: Option<u64>,
    ) -> Result<VersionedFlag, AdminError> {
        check_key("environment", env)?;
        check_key("flag", key)?;
        self.send(
            Method::PATCH,
            &["envs", env, "flags", key],
            Some(Body::json(patch)?),
            |r| if_match(r, if_version),
        )
        .await?
        .decode()
    }

    /// Turns a flag on or off and keeps the rest of it; idempotent (a flag
    /// already so answers `unchanged`).
    pub async fn set_enabled(
        &self,
        env: &str,
        key: &str,
        enabled: bool,
    ) -> Result<VersionedFlag, AdminError> {
        self.patch_flag(env, key, &json!({ "enabled": enabled }), None)
            .await
    }

    pub async fn flag_history(&self, env: &str, key: &str) -> Result<History, AdminError> {
        check_key("environment", env)?;
        check_key("flag", key)?;
        self.get(&["envs", env, "flags", key, "history"]).await
    }

    /// Makes a flag what it was at `version` (a new version).
    pub async fn revert_flag(
        &self,
        env: &str,
        key: &str,
        version: u64,
    ) -> Result<VersionedFlag, AdminError> {
        check_key("environment", env)?;
        check_key("flag", key)?;
        let body = Body::json(&json!({ "version": version }))?;
        self.send(
            Method::POST,
            &["envs", env, "flags", key, "revert"],
            Some(body),
            |r| r,
        )
        .await?
        .decode()
    }

    // ---- tokens ----

    pub async fn tokens(&self) -> Result<Tokens, AdminError> {
        self.get(&["tokens"]).await
    }

    /// Creates a token; an `sdk` token needs its environment.
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        env: Option<&str>,
    ) -> Result<NewToken, AdminError> {
        check_segment("token name", name)?;
        if let Some(env) = env {
            check_key("environment", env)?;
        }
        #[derive(Serialize)]
        struct Request<'a> {
            name: &'a str,
            role: Role,
            #[serde(skip_serializing_if = "Option::is_none")]
            env: Option<&'a str>,
        }
        let body = Body::json(&Request { name, role, env })?;
        self.send(Method::POST, &["tokens"], Some(body), |r| r)
            .await?
            .decode()
    }

    /// The live token whose secret `secret` is (`POST /api/v1/auth/verify`,
    /// an admin token's call), or `None` when no live token has it
    /// (unknown or revoked). `guidon edge` authenticates its callers so.
    pub async fn verify_token(&self, secret: &str) -> Result<Option<TokenInfo>, AdminError> {
        let body = Body::json(&json!({ "token": secret }))?;
        match self
            .send(Method::POST, &["auth", "verify"], Some(body), |r| r)
            .await
        {
            Ok(reply) => reply.decode().map(Some),
            Err(AdminError::Refused { status: 404, body })
                if body.message == "no live token has this secret" =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The changes of `env` after revision `since` (`GET /api/v1/sdk/changes`,
    /// as an SDK catches up): what `guidon edge` asks for revisions it did
    /// not relay itself.
    pub async fn changes_since(
        &self,
        env: &str,
        since: u64,
    ) -> Result<guidon_protocol::Changes, AdminError> {
        check_key("environment", env)?;
        let since = since.to_string();
        let reply = self
            .send(Method::GET, &["sdk", "changes"], None, |r| {
                r.header(ENV_HEADER, env)
                    .query(&[("since", since.as_str())])
            })
            .await?;
        let text = String::from_utf8_lossy(&reply.bytes).into_owned();
        guidon_protocol::Changes::from_json(&text)
            .map_err(|e| reply.unexpected(format!("the answer does not parse: {e}")))
    }

    pub async fn revoke_token(&self, name: &str) -> Result<(), AdminError> {
        check_segment("token name", name)?;
        self.send(Method::DELETE, &["tokens", name], None, |r| r)
            .await?;
        Ok(())
    }

    // ---- people ----

    /// The people and their roles.
    pub async fn users(&self) -> Result<Users, AdminError> {
        self.get(&["users"]).await
    }

    /// Adds a person with `password` and `roles` (environment or `*` → role).
    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        roles: &UserRoles,
    ) -> Result<UserInfo, AdminError> {
        check_segment("user name", name)?;
        let body = Body::json(&json!({"name": name, "password": password, "roles": roles}))?;
        self.send(Method::POST, &["users"], Some(body), |r| r)
            .await?
            .decode()
    }

    /// Replaces a person's roles.
    pub async fn set_user_roles(
        &self,
        name: &str,
        roles: &UserRoles,
    ) -> Result<UserInfo, AdminError> {
        check_segment("user name", name)?;
        let body = Body::json(&json!({ "roles": roles }))?;
        self.send(Method::PUT, &["users", name, "roles"], Some(body), |r| r)
            .await?
            .decode()
    }

    /// Sets a person's password (their sessions end).
    pub async fn set_user_password(&self, name: &str, password: &str) -> Result<(), AdminError> {
        check_segment("user name", name)?;
        let body = Body::json(&json!({ "password": password }))?;
        self.send(Method::PUT, &["users", name, "password"], Some(body), |r| r)
            .await?;
        Ok(())
    }

    /// Removes a person (not the last admin of `*`).
    pub async fn remove_user(&self, name: &str) -> Result<(), AdminError> {
        check_segment("user name", name)?;
        self.send(Method::DELETE, &["users", name], None, |r| r)
            .await?;
        Ok(())
    }

    // ---- evaluation, time travel and impact preview ----

    /// `POST /api/v1/envs/{env}/evaluate` with `request` as the body
    /// (`flag`, `context`, `explain`, and for time travel `at` or
    /// `revision`); the server's answer as it is.
    pub async fn evaluate(&self, env: &str, request: &Value) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        self.send(
            Method::POST,
            &["envs", env, "evaluate"],
            Some(Body::json(request)?),
            |r| r,
        )
        .await?
        .decode()
    }

    /// `POST /api/v1/envs/{env}/flags/{key}/preview`: `request` holds the
    /// proposed `flag` (or a merge `patch`) and the `contexts`; the answer
    /// is the transition matrix of the flag and of its dependents. Nothing
    /// is stored.
    pub async fn preview_flag(
        &self,
        env: &str,
        key: &str,
        request: &Value,
    ) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        check_key("flag", key)?;
        self.send(
            Method::POST,
            &["envs", env, "flags", key, "preview"],
            Some(Body::json(request)?),
            |r| r,
        )
        .await?
        .decode()
    }

    // ---- experiments ----

    /// Sends a batch of experiment events (exposures and conversions, as
    /// `POST /api/v1/events` takes them) to `env`.
    pub async fn send_events(
        &self,
        env: &str,
        events: &[Value],
    ) -> Result<EventsReceipt, AdminError> {
        check_key("environment", env)?;
        let body = Body::json(&json!({ "events": events }))?;
        self.send(Method::POST, &["events"], Some(body), |r| {
            r.header(ENV_HEADER, env)
        })
        .await?
        .decode()
    }

    /// One metric's results of the experiment on `flag`, as the server
    /// answers them: per variant units, conversions and rate, per treatment
    /// the lift with its interval, p-value and chance to win, the health
    /// checks and warnings. The answer is JSON without a Rust type of its
    /// own yet (the server builds it field by field), so it stays a value.
    pub async fn experiment_results(
        &self,
        env: &str,
        flag: &str,
        query: &ResultsQuery,
    ) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        check_key("flag", flag)?;
        self.send(
            Method::GET,
            &["envs", env, "experiments", flag, "results"],
            None,
            |r| r.query(query),
        )
        .await?
        .decode()
    }

    /// An experiment's results: every metric it names, read as its
    /// definition says (`GET …/experiments/{key}/results`), as the server
    /// answers them.
    pub async fn experiment_report(&self, env: &str, key: &str) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        check_key("experiment", key)?;
        self.get(&["envs", env, "experiments", key, "results"])
            .await
    }

    // ---- scheduled changes ----

    /// Schedules a change to flag `key`: `request` is the body of
    /// `POST …/flags/{key}/schedule` (`at`, `time_zone`, and one of
    /// `patch`, `flag`, `delete`).
    pub async fn schedule_change(
        &self,
        env: &str,
        key: &str,
        request: &Value,
    ) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        check_key("flag", key)?;
        self.send(
            Method::POST,
            &["envs", env, "flags", key, "schedule"],
            Some(Body::json(request)?),
            |r| r,
        )
        .await?
        .decode()
    }

    /// The environment's scheduled changes: `{schedules: [...]}`.
    pub async fn schedules(&self, env: &str) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        self.get(&["envs", env, "schedules"]).await
    }

    /// Cancels a pending scheduled change.
    pub async fn cancel_schedule(&self, env: &str, id: u64) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        let id = id.to_string();
        self.send(
            Method::DELETE,
            &["envs", env, "schedules", &id],
            None,
            |r| r,
        )
        .await?
        .decode()
    }

    /// Planning for an experiment's primary metric (`GET
    /// …/experiments/{key}/plan`): `query` holds `mde`, `power`, `days` and
    /// any baseline overrides.
    pub async fn experiment_plan(
        &self,
        env: &str,
        key: &str,
        query: &[(&str, f64)],
    ) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        check_key("experiment", key)?;
        self.send(
            Method::GET,
            &["envs", env, "experiments", key, "plan"],
            None,
            |r| r.query(query),
        )
        .await?
        .decode()
    }

    /// An experiment's cumulative results per day (`GET …/daily`).
    pub async fn experiment_daily(
        &self,
        env: &str,
        key: &str,
        metric: Option<&str>,
    ) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        check_key("experiment", key)?;
        self.send(
            Method::GET,
            &["envs", env, "experiments", key, "daily"],
            None,
            |r| match metric {
                Some(m) => r.query(&[("metric", m)]),
                None => r,
            },
        )
        .await?
        .decode()
    }

    // ---- guarded rollouts ----

    /// Starts a guarded rollout of flag `key` with `plan` (the body of
    /// `PUT …/flags/{key}/release`).
    pub async fn start_release(
        &self,
        env: &str,
        key: &str,
        plan: Body,
    ) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        check_key("flag", key)?;
        self.send(
            Method::PUT,
            &["envs", env, "flags", key, "release"],
            Some(plan),
            |r| r,
        )
        .await?
        .decode()
    }

    /// A flag's release plan, where it is, and its decisions.
    pub async fn release(&self, env: &str, key: &str) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        check_key("flag", key)?;
        self.get(&["envs", env, "flags", key, "release"]).await
    }

    /// A person's step on a release: `pause`, `resume`, `skip` or `abort`.
    pub async fn release_action(
        &self,
        env: &str,
        key: &str,
        action: &str,
    ) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        check_key("flag", key)?;
        self.send(
            Method::POST,
            &["envs", env, "flags", key, "release", action],
            None,
            |r| r,
        )
        .await?
        .decode()
    }

    // ---- the metric catalogue and experiments ----

    /// Every metric of `env`'s catalogue: `{metrics: [...]}`.
    pub async fn metrics(&self, env: &str) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        self.get(&["envs", env, "metrics"]).await
    }

    /// One metric, with its key, version and last change.
    pub async fn metric(&self, env: &str, key: &str) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        check_key("metric", key)?;
        self.get(&["envs", env, "metrics", key]).await
    }

    /// Creates or replaces a metric (see `guidon_protocol::catalogue`);
    /// with `if_version`, only if it is still at that version.
    pub async fn set_metric(
        &self,
        env: &str,
        key: &str,
        definition: Body,
        if_version: Option<u64>,
    ) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        check_key("metric", key)?;
        self.send(
            Method::PUT,
            &["envs", env, "metrics", key],
            Some(definition),
            |r| if_match(r, if_version),
        )
        .await?
        .decode()
    }

    /// Deletes a metric no experiment or ratio uses.
    pub async fn delete_metric(&self, env: &str, key: &str) -> Result<(), AdminError> {
        check_key("environment", env)?;
        check_key("metric", key)?;
        self.send(Method::DELETE, &["envs", env, "metrics", key], None, |r| r)
            .await?;
        Ok(())
    }

    /// Every experiment of `env`, each with its status: `{experiments: [...]}`.
    pub async fn experiments(&self, env: &str) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        self.get(&["envs", env, "experiments"]).await
    }

    /// Creates or replaces an experiment; with `if_version`, only if it is
    /// still at that version.
    pub async fn set_experiment(
        &self,
        env: &str,
        key: &str,
        definition: Body,
        if_version: Option<u64>,
    ) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        check_key("experiment", key)?;
        self.send(
            Method::PUT,
            &["envs", env, "experiments", key],
            Some(definition),
            |r| if_match(r, if_version),
        )
        .await?
        .decode()
    }

    /// Stops an experiment now.
    pub async fn stop_experiment(&self, env: &str, key: &str) -> Result<Value, AdminError> {
        check_key("environment", env)?;
        check_key("experiment", key)?;
        self.send(
            Method::POST,
            &["envs", env, "experiments", key, "stop"],
            None,
            |r| r,
        )
        .await?
        .decode()
    }

    // ---- requests ----

    async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, AdminError> {
        self.send(Method::GET, segments, None, |r| r)
            .await?
            .decode()
    }

    /// One request to `/api/v1/{segments…}`; a 2xx answer, or the error.
    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Body>,
        with: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Reply, AdminError> {
        let mut url = self.api.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.extend(segments);
        }
        let mut request = self
            .http
            .request(method, url.clone())
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, body.format.media_type())
                .body(body.bytes);
        }
        let response = with(request).send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport(&e))?
            .to_vec();
        if !status.is_success() {
            return Err(self.refused(status, &bytes));
        }
        Ok(Reply {
            status,
            headers,
            bytes,
            url,
        })
    }

    /// The request never got an answer.
    fn transport(&self, e: &reqwest::Error) -> AdminError {
        let server = self.server.clone();
        let cause = root_cause(e);
        if let Some(cause) = crate::tls::certificate_refused(e) {
            AdminError::Certificate { server, cause }
        } else if e.is_timeout() {
            AdminError::Timeout { server, cause }
        } else if e.is_connect() {
            AdminError::Connect { server, cause }
        } else if e.is_builder() {
            AdminError::Setup(cause)
        } else {
            AdminError::Request { server, cause }
        }
    }

    /// A non-2xx answer.
    fn refused(&self, status: StatusCode, bytes: &[u8]) -> AdminError {
        match serde_json::from_slice::<ErrorBody>(bytes) {
            Ok(body) => AdminError::Refused {
                status: status.as_u16(),
                body,
            },
            Err(_) => AdminError::Status {
                server: self.server.clone(),
                status: status.as_u16(),
                text: String::from_utf8_lossy(bytes)
                    .trim()
                    .chars()
                    .take(TEXT_KEPT)
                    .collect(),
            },
        }
    }
}

/// `X-Guidon-Environment`: the environment an admin token's events go to.
const ENV_HEADER: &str = "x-guidon-environment";

fn if_match(request: reqwest::RequestBuilder, version: Option<u64>) -> reqwest::RequestBuilder {
    match version {
        Some(v) => request.header(IF_MATCH, v.to_string()),
        None => request,
    }
}

impl Reply {
    fn decode<T: DeserializeOwned>(&self) -> Result<T, AdminError> {
        serde_json::from_slice(&self.bytes)
            .map_err(|e| self.unexpected(format!("the answer does not parse: {e}")))
    }

    fn unexpected(&self, message: String) -> AdminError {
        AdminError::Unexpected {
            url: self.url.to_string(),
            message,
        }
    }
}

/// The API root of a server URL, and the server as given for messages.
///
/// `host:port` means `http://host:port`. The path may be a proxy's prefix;
/// a path that already ends in `/api/v1` is taken as it is. A query or
/// fragment is dropped.
fn api_root(server: &str) -> Result<(Url, String), AdminError> {
    let given = server.trim();
    let with_scheme = if given.contains("://") {
        given.to_owned()
    } else {
        format!("http://{given}")
    };
    let invalid = |reason: String| AdminError::InvalidUrl {
        url: given.to_owned(),
        reason,
    };
    let mut api = Url::parse(&with_scheme).map_err(|e| invalid(format!("not a URL: {e}")))?;
    match api.scheme() {
        "http" | "https" => {}
        other => {
            return Err(invalid(format!(
                "unsupported scheme {other:?}, use http:// or https://"
            )));
        }
    }
    if api.cannot_be_a_base() || api.host_str().is_none_or(str::is_empty) {
        return Err(invalid("not an http:// or https:// URL with a host".into()));
    }
    api.set_query(None);
    api.set_fragment(None);
    // Empty segments (doubled or trailing slashes) are dropped; the rest
    // stay as they were written, percent-encoding included.
    let mut segments: Vec<&str> = api.path().split('/').filter(|s| !s.is_empty()).collect();
    if !segments.ends_with(&["api", "v1"]) {
        segments.extend(["api", "v1"]);
    }
    let path = format!("/{}", segments.join("/"));
    api.set_path(&path);
    Ok((api, with_scheme.trim_end_matches('/').to_owned()))
}

/// The HTTP client, with the SDK's TLS trust (the system's roots, plus
/// `ca_pem`) when `tls` (reading the roots only then).
fn http_client(ca_pem: Option<&[u8]>, tls: bool) -> Result<reqwest::Client, AdminError> {
    let mut http = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("guidon/", env!("CARGO_PKG_VERSION")));
    if tls {
        let config = crate::tls::client_config(ca_pem).map_err(AdminError::Ca)?;
        http = http.use_preconfigured_tls(rustls::ClientConfig::clone(&config));
    }
    http.build().map_err(|e| AdminError::Setup(e.to_string()))
}

/// Flag keys and environment names follow the server's key rule; checking
/// it here also keeps `.`, `..` and slashes out of the request path.
fn check_key(what: &'static str, key: &str) -> Result<(), AdminError> {
    if is_valid_key(key) {
        Ok(())
    } else {
        Err(AdminError::InvalidName {
            what,
            name: key.to_owned(),
            reason: "must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
        })
    }
}

/// Any other name that goes in the path: a URL cannot carry a segment that
/// is `.` or `..` (they are resolved away).
fn check_segment(what: &'static str, name: &str) -> Result<(), AdminError> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(AdminError::InvalidName {
            what,
            name: name.to_owned(),
            reason: "it cannot be sent in a URL path",
        });
    }
    Ok(())
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(source) = last.source() {
        last = source;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(server: &str) -> String {
        match api_root(server) {
            Ok((url, _)) => url.to_string(),
            Err(e) => panic!("{server}: {e}"),
        }
    }

    #[test]
    fn every_form_of_a_server_url_reaches_the_same_api() {
        for given in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/",
            "http://127.0.0.1:8080/api/v1",
            "http://127.0.0.1:8080/api/v1/",
            "http://127.0.0.1:8080//api/v1//",
            "127.0.0.1:8080",
            " 127.0.0.1:8080/api/v1 ",
            "http://127.0.0.1:8080/?x=1#top",
        ] {
            assert_eq!(root(given), "http://127.0.0.1:8080/api/v1", "{given}");
        }
        assert_eq!(
            root("http://proxy.local/guidon/"),
            "http://proxy.local/guidon/api/v1"
        );
        assert_eq!(
            root("http://proxy.local/guidon/api/v1"),
            "http://proxy.local/guidon/api/v1"
        );
    }

    #[test]
    fn the_server_is_named_as_given() {
        let (_, server) = api_root("127.0.0.1:9/").expect("valid");
        assert_eq!(server, "http://127.0.0.1:9");
    }

    #[test]
    fn unusable_urls_say_why() {
        let reason = |server: &str| match api_root(server) {
            Err(AdminError::InvalidUrl { reason, .. }) => reason,
            other => panic!("{server}: {other:?}"),
        };
        assert!(
            api_root("https://flags.example.com").is_ok(),
            "https is spoken"
        );
        assert!(reason("ftp://x").contains("unsupported scheme \"ftp\""));
        assert!(reason("http://").contains("not a URL"));
        assert!(reason("").contains("not a URL"));
    }

    #[test]
    fn names_that_cannot_go_in_a_path_are_refused_before_sending() {
        assert!(check_key("flag", "../tokens").is_err());
        assert!(check_key("environment", "no/slash").is_err());
        assert!(check_key("flag", "new_checkout").is_ok());
        assert!(check_segment("token name", "..").is_err());
        assert!(check_segment("token name", "ci bot").is_ok());
        let err = check_key("flag", "a b").expect_err("space");
        assert_eq!(
            err.to_string(),
            "invalid flag \"a b\": must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
        );
    }
}
