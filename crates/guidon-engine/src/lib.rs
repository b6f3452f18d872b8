//! Guidon's evaluation engine: the flag model, validation, compilation of a
//! flag file into an immutable [`Snapshot`], and evaluation.
//!
//! The crate is pure: it does no I/O, reads no clock (the evaluation time is
//! an argument) and never panics on any input. See `flag-format.md` for the
//! semantics and `ARCHITECTURE.md` for the decisions taken where it is silent.
//!
//! ```
//! use guidon_engine::{Context, FlagFile, Snapshot, Timestamp};
//!
//! let file = FlagFile::from_json_str(r#"{"flags": [{"key": "dark_mode", "enabled": true,
//!     "rollout": {"percentage": 100}}]}"#).unwrap();
//! let snapshot = Snapshot::compile(&file).unwrap();
//! let ctx = Context::from_json_str(r#"{"user_id": "user_42"}"#).unwrap();
//! let now: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
//! let result = snapshot.evaluate("dark_mode", &ctx, now);
//! assert!(result.enabled);
//! ```

mod compile;
mod context;
mod error;
mod evaluate;
mod explain;
mod hashing;
pub mod impact;
pub mod model;
mod parse;
mod result;

pub use compile::{
    MAX_CHAIN_DEPTH, MAX_EVALUATION_COST, MAX_REGEX_LEN, Snapshot, SnapshotOptions, is_valid_key,
};
pub use context::{Context, ContextError, json_type_name};
pub use error::{ParseError, Problem, ValidationError};
pub use explain::{ConditionTrace, Explanation, Step};
pub use hashing::{rollout_bucket, variant_selection};
pub use jiff::Timestamp;
pub use model::FlagFile;
pub use parse::{Format, MAX_DEPTH};
pub use result::{ErrorCode, Evaluation, Metadata, Reason};

/// Evaluates `flag_key` for `context` at time `now`. Same as [`Snapshot::evaluate`].
pub fn evaluate<'s>(
    snapshot: &'s Snapshot,
    flag_key: &'s str,
    context: &Context,
    now: Timestamp,
) -> Evaluation<'s> {
    snapshot.evaluate(flag_key, context, now)
}

/// Validates a flag file, returning every problem at once. Same checks as
/// [`Snapshot::compile`], which is what validation runs.
pub fn validate(file: &FlagFile) -> Result<(), ValidationError> {
    Snapshot::compile(file).map(|_| ())
}
