use guidon_engine::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("invalid environment name {0:?}: must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$")]
    InvalidEnvName(String),
    #[error("unknown environment {0:?}")]
    UnknownEnv(String),
    #[error("environment {0:?} already exists")]
    EnvExists(String),
    #[error(
        "environment {env:?} is not empty (flags and segments left: {count}); delete them first or force"
    )]
    EnvNotEmpty { env: String, count: u64 },
    #[error("{kind} {key:?} not found in environment {env:?}")]
    NotFound {
        env: String,
        kind: &'static str,
        key: String,
    },
    #[error("flag {key:?} has no version {version} to revert to")]
    NoSuchVersion { key: String, version: u64 },
    /// The caller's `expected_version` is not the stored one.
    #[error("version conflict on {key:?}: expected {expected}, the current version is {}", current.map_or("none (it does not exist)".to_owned(), |v| v.to_string()))]
    Conflict {
        key: String,
        expected: u64,
        current: Option<u64>,
    },
    /// A create-only write (expected version 0) found the key live.
    #[error("{kind} {key:?} already exists (version {version}); to replace it, name that version")]
    Exists {
        kind: &'static str,
        key: String,
        version: u64,
    },
    /// The change would make the environment invalid; nothing was stored.
    #[error("{0}")]
    Invalid(ValidationError),
    /// `changes_since` was asked for a revision past the catch-up horizon:
    /// take a full snapshot instead.
    #[error(
        "revision {since} is too old to catch up from (oldest is {oldest}); take a full snapshot"
    )]
    TooOld { since: u64, oldest: u64 },
    /// A past state asked for by a revision the environment has not made.
    #[error(
        "revision {requested} of environment {env:?} does not exist yet (it is at revision {current})"
    )]
    RevisionAhead {
        env: String,
        requested: u64,
        current: u64,
    },
    /// A past state asked for at an instant before the environment existed.
    #[error("environment {env:?} did not exist at {}: it was created at {}", ms_text(*at_ms), ms_text(*created_ms))]
    BeforeEnvironment {
        env: String,
        at_ms: i64,
        created_ms: i64,
    },
    /// A past state older than the change log still holds.
    #[error(
        "revision {requested} of environment {env:?} is past the history's retention horizon: the change log was compacted, and the oldest revision kept is {oldest}"
    )]
    Compacted {
        env: String,
        requested: u64,
        oldest: u64,
    },
    #[error("stored {kind} {key:?} in environment {env:?} is corrupt: {message}")]
    Corrupt {
        env: String,
        kind: &'static str,
        key: String,
        message: String,
    },
    #[error("invalid token name {0:?}: must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$")]
    InvalidTokenName(String),
    #[error("{0}")]
    TokenScope(&'static str),
    #[error("a token named {0:?} already exists")]
    TokenExists(String),
    #[error("no token named {0:?}")]
    UnknownToken(String),
    #[error("invalid user name {0:?}: must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$")]
    InvalidUserName(String),
    #[error("a person named {0:?} already exists")]
    UserExists(String),
    #[error("no person named {0:?}")]
    UnknownUser(String),
    /// Roles naming an environment that does not exist; `path` is `roles.ENV`.
    #[error("{path}: {message}")]
    InvalidRoles { path: String, message: String },
    /// The change would leave nobody able to administer Guidon.
    #[error("{0}")]
    LastAdmin(String),
    /// Experiment results asked for with an unusable parameter.
    #[error("{0}")]
    InvalidQuery(String),
    /// A planned change that is not pending any more (applied by another
    /// instance, cancelled, or failed).
    #[error("planned change {id} is {status}, not pending")]
    NotPending { id: i64, status: String },
    /// No planned change with this id in the environment.
    #[error("no planned change {id} in environment {env:?}")]
    UnknownPlannedChange { env: String, id: i64 },
    /// A blocking task of the store (compiling a large environment) failed.
    #[error("store task failed: {0}")]
    Task(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// An instant of the store (ms since the Unix epoch) as RFC 3339.
fn ms_text(ms: i64) -> String {
    guidon_engine::Timestamp::from_millisecond(ms)
        .map_or_else(|_| format!("{ms} ms"), |t| t.to_string())
}
