//! The SDK's errors. Evaluation never fails (an unknown flag is a result,
//! not an error); these come from building a client, reading files, and
//! talking to the server.

use std::path::PathBuf;

/// What can go wrong outside evaluation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server URL does not parse or is not `http://` or `https://`.
    #[error("invalid server URL {url:?}: {message}")]
    InvalidUrl { url: String, message: String },
    /// A flag file (bootstrap, `from_file`) or a saved snapshot could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A flag file or a document does not parse.
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    /// The flags do not compile (validation problems).
    #[error("{origin}: the flags are not valid: {message}")]
    Invalid { origin: String, message: String },
    /// The CA certificates given (`ca_certificate_pem`) cannot be used.
    #[error("CA certificate: {0}")]
    Ca(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(String),
    /// The events queue is closed (the client was closed).
    #[error("the client is closed")]
    Closed,
    /// The server refused a request.
    #[error("server answered {status}: {body}")]
    Status { status: u16, body: String },
    /// The server could not be reached.
    #[error("request failed: {0}")]
    Transport(String),
}

/// Why one sync attempt ended; internal, logged and turned into a state.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    #[error("connection: {0}")]
    Connect(String),
    /// The server's certificate was refused: a setup to fix, as a refusal.
    #[error(
        "the server's TLS certificate is not trusted ({0}): give its CA with ClientBuilder::ca_certificate_pem"
    )]
    Certificate(String),
    #[error("server answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the stream was silent for {0:?} (dead)")]
    Silent(std::time::Duration),
    #[error("the stream ended")]
    Ended,
    #[error("read: {0}")]
    Read(String),
    #[error("message does not parse: {0}")]
    Decode(String),
    /// The server speaks a newer protocol than this SDK.
    #[error("{0}")]
    Protocol(String),
    #[error("flags do not compile: {0}")]
    Compile(String),
    #[error("revision gap not filled: have {have}, got {got}")]
    Gap { have: u64, got: u64 },
    #[error("stopped")]
    Stopped,
}

impl SyncError {
    /// A refusal that retrying will not fix (bad token, wrong environment).
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(self, SyncError::Status { status, .. } if matches!(status, 401 | 403 | 404))
    }

    /// The server's 409 `revision_ahead`: we hold a revision it never
    /// reached (it was restored from a backup, or it is another server).
    pub(crate) fn is_ahead(&self) -> bool {
        let SyncError::Status { status: 409, body } = self else {
            return false;
        };
        serde_json::from_str::<guidon_protocol::api::ErrorBody>(body)
            .is_ok_and(|b| b.error == guidon_protocol::api::ErrorCode::RevisionAhead)
    }
}
