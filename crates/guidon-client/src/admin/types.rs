//! The admin API's answers as the client reads them, and the bodies it
//! sends. The answers' shapes are `guidon_protocol::api`'s (the server's
//! OpenAPI document is generated from them too); these are the rest.
//!
//! Every answer serializes back to the JSON the server sent (the same
//! fields, in the order of these types and of the flag model), which is
//! what `guidon … --json` prints.

use guidon_engine::{FlagFile, Format};
pub use guidon_protocol::api::{
    Applied, Deleted, Environments, EventsReceipt, History, Imported, NewToken, RejectedEvent,
    Settled, Tokens, VersionedFlag,
};
use serde::Serialize;

use super::AdminError;

/// An environment's flag file (`GET /api/v1/envs/{env}/flags`) with the
/// revision it is at.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub file: FlagFile,
    /// From `X-Guidon-Revision`; `None` when the server did not send it.
    pub revision: Option<u64>,
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
    /// Significance level (the server's default is 0.05).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Mean of a normal prior on the lift (Bayesian).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior_mean: Option<f64>,
    /// Variance of a normal prior on the lift (Bayesian); without it the
    /// prior is flat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prior_variance: Option<f64>,
    /// CUPED: adjust by each unit's value in this many days before exposure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cuped_days: Option<f64>,
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
