//! One module per command: its arguments and what it does.

pub(crate) mod demo;
pub(crate) mod edge;
pub(crate) mod envs;
pub(crate) mod eval;
pub(crate) mod experiments;
pub(crate) mod flags;
pub(crate) mod metrics;
pub(crate) mod release;
pub(crate) mod schedule;
pub(crate) mod serve;
pub(crate) mod token;
pub(crate) mod users;
pub(crate) mod validate;
