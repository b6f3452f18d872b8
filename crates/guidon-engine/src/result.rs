//! The result object of flag-format.md §7.

use serde::{Serialize, Serializer, ser::SerializeMap};
use serde_json::Value;

/// OpenFeature's resolution reasons; stock clients reject any other name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    Static,
    Default,
    TargetingMatch,
    Split,
    Disabled,
    Error,
    /// Used by SDKs: served from a cache.
    Cached,
    /// Used by SDKs: served from a copy known to be out of date.
    Stale,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::Default => "DEFAULT",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
            Reason::Cached => "CACHED",
            Reason::Stale => "STALE",
        }
    }
}

/// OpenFeature error codes the engine can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    FlagNotFound,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
        }
    }
}

/// Why the result is what it is, beyond the reason. Only the fields that
/// apply are serialized.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Metadata<'a> {
    /// Served by the flag's `override`.
    pub override_served: bool,
    /// The prerequisite flag that was not met.
    pub prerequisite_failed: Option<&'a str>,
    /// Served by an individual target.
    pub target: bool,
    /// The name of the rule that matched.
    pub rule: Option<&'a str>,
    /// The unit's rollout bucket, in [0, 100], when a percentage decided.
    pub bucket: Option<f64>,
    /// The context had no bucketing value, so it is in no rollout or experiment.
    pub missing_bucketing_value: bool,
    /// The variant was chosen for this unit by the flag's weight split: the
    /// unit is in the experiment, and an SDK records an exposure. Not
    /// serialized (the result object of §7 is unchanged).
    pub in_experiment: bool,
}

impl Metadata<'_> {
    /// Nothing to serialize (`in_experiment` is never serialized).
    pub fn is_empty(&self) -> bool {
        Metadata {
            in_experiment: false,
            ..*self
        } == Metadata::default()
    }
}

impl Serialize for Metadata<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if self.override_served {
            map.serialize_entry("override", &true)?;
        }
        if let Some(key) = self.prerequisite_failed {
            map.serialize_entry("prerequisite_failed", key)?;
        }
        if self.target {
            map.serialize_entry("target", &true)?;
        }
        if let Some(name) = self.rule {
            map.serialize_entry("rule", name)?;
        }
        if let Some(bucket) = self.bucket {
            map.serialize_entry("bucket", &bucket)?;
        }
        if self.missing_bucketing_value {
            map.serialize_entry("missing_bucketing_value", &true)?;
        }
        map.end()
    }
}

/// The outcome of evaluating one flag for one context. It borrows keys and
/// payloads from the Snapshot, so producing it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evaluation<'a> {
    pub flag: &'a str,
    pub enabled: bool,
    pub variant: Option<&'a str>,
    /// The variant's payload, or `enabled` for a boolean flag; `None` (JSON
    /// null) when off with no `off_variant`, so a client uses its own default.
    pub value: Option<&'a Value>,
    pub reason: Reason,
    pub error_code: Option<ErrorCode>,
    pub flag_version: Option<u64>,
    pub metadata: Metadata<'a>,
}

impl Evaluation<'_> {
    /// The result object as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
