//! The admin API's answers as the client reads them, and the bodies it
//! sends. The shapes `guidon_protocol::api` defines are used as they are;
//! these are the rest of what the admin endpoints answer.
//!
//! Every answer serializes back to the JSON the server sent (the same
//! fields, in the order of these types and of the flag model), which is
//! what `guidon … --json` prints.

use guidon_engine::model::Flag;
use guidon_engine::{FlagFile, Format};
use guidon_protocol::api::{EnvInfo, HistoryEntry, Role, TokenInfo};
use guidon_protocol::{Kind, Op};
use serde::{Deserialize, Serialize};

use super::AdminError;

/// `GET /api/v1/envs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environments {
    pub environments: Vec<EnvInfo>,
}

/// An environment's flag file (`GET /api/v1/envs/{env}/flags`) with the
/// revision it is at.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub file: FlagFile,
    /// From `X-Guidon-Revision`; `None` when the server did not send it.
    pub revision: Option<u64>,
}

/// Whether a write is served yet. A server answers a write once it serves
/// its revision; when that takes too long it answers 202 with
/// `served: false` and a message: the write is committed, but reads through
/// that server may not show it for a moment. Both are absent otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One flag with its version: what `GET`, `PUT` and `revert` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionedFlag {
    pub flag: Flag,
    pub version: u64,
    pub revision: u64,
    #[serde(flatten)]
    pub settled: Settled,
    /// A `PATCH` that changed nothing: no new version or revision.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchanged: bool,
    /// A `PUT` that created the flag (201); not part of the answer's JSON.
    #[serde(skip)]
    pub created: bool,
}

/// What a delete answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// The deleted key.
    pub deleted: String,
    /// The version it had.
    pub version: u64,
    pub revision: u64,
    #[serde(flatten)]
    pub settled: Settled,
}

/// What replacing an environment's flag file answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    /// The replacement's revision; the unchanged revision when nothing differed.
    pub revision: u64,
    /// Every key that changed, upserts first; empty when nothing differed.
    pub changes: Vec<Applied>,
    #[serde(flatten)]
    pub settled: Settled,
}

/// One key changed by an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub kind: Kind,
    pub key: String,
    pub op: Op,
    pub version: u64,
}

/// `GET …/flags/{key}/history`: every change, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub history: Vec<HistoryEntry>,
}

/// `GET /api/v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens {
    pub tokens: Vec<TokenInfo>,
}

/// A created token, with its secret (shown this once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    /// The secret.
    pub token: String,
    pub name: String,
    pub role: Role,
    pub env: Option<String>,
}

/// `POST /api/v1/events`: what was stored and what was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsReceipt {
    pub accepted: u64,
    pub duplicates: u64,
    #[serde(default)]
    pub rejected: Vec<RejectedEvent>,
}

/// One event the server refused, by its index in the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedEvent {
    pub index: usize,
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The options of an experiment's results (`…/experiments/{flag}/results`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResultsQuery {
    /// The conversions' metric, e.g. `purchase`.
    pub metric: String,
    /// `frequentist`, `sequential` or `bayesian`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `binomial` or `continuous`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `none`, `holm` or `bh`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correction: Option<String>,
    /// Count conversions only within this many hours of the first exposure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_hours: Option<f64>,
}

impl ResultsQuery {
    /// The default analysis of `metric`.
    pub fn metric(metric: impl Into<String>) -> ResultsQuery {
        ResultsQuery {
            metric: metric.into(),
            ..ResultsQuery::default()
        }
    }
}

/// A request body: a document as written (sent as it is, so that the
/// server names what is wrong in it), or a value encoded as JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub(crate) bytes: Vec<u8>,
    pub(crate) format: Format,
}

impl Body {
    /// A document in `format`, such as a flag file read from disk.
    pub fn text(text: impl Into<String>, format: Format) -> Body {
        Body {
            bytes: text.into().into_bytes(),
            format,
        }
    }

    /// `value` as JSON.
    pub fn json(value: &impl Serialize) -> Result<Body, AdminError> {
        Ok(Body {
            bytes: serde_json::to_vec(value)?,
            format: Format::Json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_write_not_served_yet_keeps_what_the_server_said() {
        let answer = json!({
            "flag": {"key": "a", "enabled": true}, "version": 2, "revision": 7,
            "served": false, "message": "committed at revision 7, but …"
        });
        let written: VersionedFlag = serde_json::from_value(answer.clone()).expect("reads");
        assert_eq!(written.settled.served, Some(false));
        assert_eq!(serde_json::to_value(&written).expect("json"), answer);

        let served = json!({"deleted": "a", "version": 2, "revision": 8});
        let deleted: Deleted = serde_json::from_value(served.clone()).expect("reads");
        assert_eq!(deleted.settled, Settled::default());
        assert_eq!(serde_json::to_value(&deleted).expect("json"), served);
    }
}
