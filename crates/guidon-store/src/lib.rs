//! Guidon's versioned store: the only crate that knows SQL.
//!
//! One API over two backends, SQLite (a single file, the embedded default)
//! and PostgreSQL (several server instances), through sqlx's `Any` driver,
//! so both run the same statements and the same test suite. Every committed
//! change to an environment's flags and segments gets the environment's next
//! revision, in commit order and without gaps: the write transaction starts
//! by incrementing the environment's counter row, which serializes writers of
//! one environment (a row lock in PostgreSQL, the write lock in SQLite), and a
//! failed write rolls the increment back.

mod catalogue;
mod edge;
mod error;
mod samples;
mod store;
mod tokens;
mod users;

pub use catalogue::{DefinitionKind, StoredDefinition};
pub use edge::{EdgeStore, Outgoing};
pub use error::StoreError;
pub use samples::{
    MAX_RETENTION_HOURS, MAX_SAMPLE_SIZE, Offered, SLICE_MS, Sample, SampleBatch, SampleInfo,
    SampleSettings, Sampling, hour_of,
};
pub use store::{
    Applied, AsOf, BLOCKING_COMPILE, Backend, CATCH_UP_HORIZON, Commit, Committed,
    DEFAULT_ENVIRONMENTS, FlagOverview, NewPlannedChange, Past, PlannedChange, ReleaseStep,
    Replaced, Revised, Store, StoreOptions, Stored, StoredRelease, apply_and_compile, compile,
};
pub use tokens::{hex, secret_hash};
pub use users::Session;
