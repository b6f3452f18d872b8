//! The admin client's one error type.

use guidon_protocol::api::ErrorBody;

/// Why an admin call did not give its answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The server URL is not one this client can use.
    #[error("invalid server URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A name that cannot go in a request path (checked before sending).
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    /// The HTTP client could not be set up, or the token is not a valid
    /// header value.
    #[error("setting up the HTTP client: {0}")]
    Setup(String),
    /// The CA certificates given cannot be used.
    #[error("CA certificate: {0}")]
    Ca(String),
    /// The server's TLS certificate is not trusted (not signed by a CA
    /// this client trusts, expired, for another name).
    #[error("the server at {server} has a TLS certificate this client does not trust: {cause}")]
    Certificate { server: String, cause: String },
    /// A request body could not be encoded.
    #[error("encoding the request: {0}")]
    Encode(#[from] serde_json::Error),
    /// Nothing answered at the server's address.
    #[error("cannot connect to the server at {server}: {cause}")]
    Connect { server: String, cause: String },
    /// The server did not answer in time.
    #[error("the server at {server} did not answer in time ({cause})")]
    Timeout { server: String, cause: String },
    /// The request failed on the way (after connecting).
    #[error("request to the server at {server} failed: {cause}")]
    Request { server: String, cause: String },
    /// The server refused the request with its error body: the code, the
    /// message, and the field at fault or every validation problem.
    #[error("{}", refusal(*status, body))]
    Refused { status: u16, body: ErrorBody },
    /// A non-2xx answer without Guidon's error body: a proxy, or not a
    /// Guidon server at all. `text` is the start of the body.
    #[error("the server at {server} answered {status} {}{}", reason(*status), colon(text))]
    Status {
        server: String,
        status: u16,
        text: String,
    },
    /// A 2xx answer that is not what the endpoint answers.
    #[error("unexpected answer from {url}: {message}")]
    Unexpected { url: String, message: String },
}

impl AdminError {
    /// The server's error body, when the server refused the request.
    pub fn body(&self) -> Option<&ErrorBody> {
        match self {
            AdminError::Refused { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The HTTP status of an answer that was not a success.
    pub fn status(&self) -> Option<u16> {
        match self {
            AdminError::Refused { status, .. } | AdminError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `message (status code)`, then each problem as `path: message`.
fn refusal(status: u16, body: &ErrorBody) -> String {
    let mut text = format!("{} ({status} {})", body.message, body.error.as_str());
    for problem in body.details.iter().flatten() {
        text.push_str("; ");
        if !problem.path.is_empty() {
            text.push_str(&problem.path);
            text.push_str(": ");
        }
        text.push_str(&problem.message);
    }
    text
}

/// The standard reason phrase of a status, such as `Not Found`.
pub(crate) fn reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
}

fn colon(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}
