//! The evaluation cache of remote evaluations: bounded (quick_cache's
//! CLOCK-Pro), keyed by (environment, flag, environment revision, canonical
//! context), with concurrent identical misses computed once (singleflight).
//!
//! Invalidation is by version, never by scanning: a change gives the
//! environment a new revision, so later lookups use new keys and the old
//! entries age out. The key holds the environment's revision rather than
//! the flag's version because a flag's result also depends on the segments
//! and prerequisite flags it uses, which change without changing its
//! version. Environments whose definitions look at the clock (`$now`,
//! `$day_of_week`, `$hour`) are never cached: their results change with
//! time alone. Off by default; `BENCHMARKS.md` has the measurement.

use std::convert::Infallible;
use std::sync::Arc;

use quick_cache::sync::Cache;

use crate::eval::Resolved;

/// Entries kept (results are small: a few hundred bytes each).
pub(crate) const CAPACITY: usize = 100_000;

/// Contexts larger than this (as JSON) are not cached, which bounds the
/// cache's memory to about CAPACITY × 4 KiB.
const MAX_CACHED_CONTEXT: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    env: String,
    /// The environment's creation time: a re-created environment restarts
    /// its revisions.
    epoch: i64,
    flag: String,
    revision: u64,
    /// The context as JSON with sorted keys (serde_json's map is ordered).
    context: String,
}

#[derive(Debug)]
pub(crate) struct EvalCache {
    cache: Cache<Key, Arc<Resolved>>,
}

impl Default for EvalCache {
    fn default() -> EvalCache {
        EvalCache {
            cache: Cache::new(CAPACITY),
        }
    }
}

impl EvalCache {
    /// The cached result, or `compute`'s (run once for concurrent callers
    /// with the same key); whether it was a hit.
    pub(crate) async fn get_or_compute(
        &self,
        env: &str,
        epoch: i64,
        flag: &str,
        revision: u64,
        context: &serde_json::Map<String, serde_json::Value>,
        compute: impl FnOnce() -> Resolved,
    ) -> (Arc<Resolved>, bool) {
        let context = serde_json::Value::Object(context.clone()).to_string();
        if context.len() > MAX_CACHED_CONTEXT {
            // Not worth the memory: computed, not kept.
            return (Arc::new(compute()), false);
        }
        let key = Key {
            env: env.to_owned(),
            epoch,
            flag: flag.to_owned(),
            revision,
            context,
        };
        let mut hit = true;
        let result = self
            .cache
            .get_or_insert_async(&key, async {
                hit = false;
                Ok::<_, Infallible>(Arc::new(compute()))
            })
            .await;
        match result {
            Ok(value) => (value, hit),
            Err(never) => match never {},
        }
    }
}
