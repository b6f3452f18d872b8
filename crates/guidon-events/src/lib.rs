//! Guidon's experiment event store: exposures and conversions, stored apart
//! from the flag store, folded into per-unit aggregates, and the
//! per-variant totals that results read.
//!
//! # Apart from the flag store
//!
//! Its own connections ([`EventStore`]): on SQLite its own database file
//! next to the flag store's ([`events_url`]), so an event commit never
//! holds the write lock flag writes wait on, and its PRAGMAs (a large page
//! cache, a memory map) are set on its own connections only; on PostgreSQL
//! its own tables (`ev_*`) through its own bounded pool. Environments are
//! the flag store's: the caller checks that one exists before calling, and
//! deletes its events ([`EventStore::delete_env`]) when it deletes it.
//!
//! # What is stored
//!
//! - every event's time and id, per environment: an event seen before is a
//!   duplicate and changes nothing, so a retried batch counts once;
//! - per flag and unit, the **first exposure** (its time and variant) and
//!   whether the unit was exposed to **more than one variant** (those units
//!   are excluded from results and counted);
//! - per metric and unit: the number of conversions, the sum of their
//!   values, the first and the last conversion time;
//! - every conversion's time and value, by metric and unit.
//!
//! # Acknowledged when appended, folded after
//!
//! A batch is acknowledged once its events are durable in two append-mostly
//! tables: the index of seen events (`ev_seen`) and the log of events not
//! yet folded (`ev_log`). The per-unit rows are updated later, by a *fold*
//! that takes the oldest logged rows, applies them and deletes them from
//! the log **in one transaction**: a crash before its commit leaves them
//! all in the log (folded again, from scratch, after restart), after it
//! none; so no acknowledged event is lost or counted twice. The writer
//! folds when no batch is waiting ([`IDLE_FOLD_EVENTS`] at a time), and
//! before taking more batches when the log holds [`FOLD_BACKLOG`] rows. Results first fold everything logged
//! (see [`EventStore::settle`]): they read the per-unit rows, and never
//! miss an acknowledged event. Results never read raw events except for
//! the few units described below.
//!
//! # Duplicates
//!
//! An event is identified by its `event_id` *and its timestamp*: a retry
//! resends the same event, so both are the same. Keying the index of seen
//! events by time first makes it grow at its end as events come in; keyed
//! by a random id alone it would dirty one page per event and cap ingestion
//! far below the target. (Segment and Amplitude scope deduplication in time
//! too.) The same id sent again with another timestamp is another event.
//!
//! # Attribution is decided when results are read, not at ingestion
//!
//! Events arrive out of order: across batches, from several SDK instances,
//! after retries. A conversion may be ingested before the exposure that
//! precedes it in time, and an exposure may arrive after a later one from
//! the same unit. So nothing is attributed at ingestion. The aggregates
//! above are order-independent (a minimum, a maximum, sums), and
//! [`EventStore::experiment_totals`] attributes when it reads: a unit's
//! conversions count when they happened at or after its first exposure
//! `t₀` and, with a window `W`, no later than `t₀ + W` (both bounds
//! inclusive). For most units the per-unit aggregate decides alone (all of
//! its conversions fall inside the interval, or none does); only a unit
//! whose conversions straddle `t₀` or `t₀ + W` has its conversions read one
//! by one, through the `(metric, unit, time)` index. The answer is
//! therefore the same whatever order the events arrived in.
//!
//! # "Converted"
//!
//! A unit **converted** for a metric when the values of its attributed
//! conversions sum to more than zero; a conversion sent without a value
//! counts 1. So a purchase refunded in full (a conversion of −value), or
//! conversions of value 0, do not make a unit converted. Binomial results
//! count these units; continuous results sum every unit's values, negative
//! ones included. README and `guidon_stats` say the same.
//!
//! Conversions are keyed by unit *attribute* as well as unit, because flags
//! may bucket by different attributes (`user_id`, `account_id`): the caller
//! gives each conversion's unit for every attribute an experiment of the
//! environment buckets by, and results read the flag's.
//!
//! # Group commit
//!
//! Batches are written by one task per store, which takes every batch
//! waiting when it starts a transaction (up to [`GROUP_EVENTS`] events) and
//! commits them together; each caller gets its own answer once the
//! transaction is durable. A fold takes up to [`FOLD_EVENTS`] logged rows
//! at once, so each page of the per-unit tables is written once for many
//! events: per-unit rows are keyed by unit, which arrive in no order, and a
//! transaction of a few thousand events would write one page per event.

pub use error::EventsError;
pub use store::{
    Backend, EventStore, EventsOptions, POSTGRES_CONNECTIONS, SQLITE_CONNECTIONS, events_url,
};

/// Longest accepted event id, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 128;
/// Longest accepted unit (bucketing value), in bytes.
pub const MAX_UNIT_LEN: usize = 1024;
/// Latest accepted event time: 9999-12-31T23:59:59.999Z, in milliseconds.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;
/// Most events the writer commits in one transaction (from as many waiting
/// batches as fit; a larger batch is committed alone).
pub const GROUP_EVENTS: usize = 200_000;

/// Most logged rows one fold applies in one transaction.
pub const FOLD_EVENTS: usize = 500_000;
/// Most logged rows a fold applies when the writer is idle (≈ 0.3 s on
/// SQLite: what a batch arriving meanwhile may wait).
pub const IDLE_FOLD_EVENTS: usize = 100_000;
/// Logged rows past which the writer folds before it takes more batches:
/// what bounds the log (and the time results wait for a fold).
pub const FOLD_BACKLOG: usize = 2_000_000;

/// Rows per statement: well under SQLite's 32,766 and PostgreSQL's 65,535
/// bound parameters. A batch's remainder goes in power-of-two chunks, so
/// each statement has at most ten shapes and stays in the connection's
/// prepared-statement cache.
const CHUNK: usize = 512;

/// "No window": added to a first-exposure time, it stays far from overflow.
const NO_WINDOW_MS: i64 = 1_000_000_000_000_000;

/// Batches waiting for the writer before senders wait too.
const QUEUE: usize = 64;

/// A unit was exposed to a flag's variant at `at_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure {
    pub event_id: String,
    pub flag: String,
    pub variant: String,
    /// The flag's bucketing value for the event's context.
    pub unit: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// A unit, named by the attribute it is the value of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitKey {
    /// The context attribute, e.g. `user_id`.
    pub attribute: String,
    /// Its value, e.g. `user_42`.
    pub unit: String,
}

/// A conversion of `metric` by a unit at `at_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    pub event_id: String,
    pub metric: String,
    /// The converting unit for each attribute the environment's experiments
    /// bucket by (one entry when they all bucket by `user_id`).
    pub units: Vec<UnitKey>,
    /// The conversion's value (revenue, …); a conversion without one counts
    /// as 1, so a value metric over such events counts conversions.
    pub value: Option<f64>,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Exposure(Exposure),
    Conversion(Conversion),
}

impl Event {
    pub fn event_id(&self) -> &str {
        match self {
            Event::Exposure(e) => &e.event_id,
            Event::Conversion(c) => &c.event_id,
        }
    }

    pub fn at_ms(&self) -> i64 {
        match self {
            Event::Exposure(e) => e.at_ms,
            Event::Conversion(c) => c.at_ms,
        }
    }
}

/// What [`EventStore::ingest_events`] did with a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ingested {
    /// Events stored for the first time.
    pub accepted: u64,
    /// Indexes (in the batch) of events seen before, in an earlier batch or
    /// earlier in this one: they changed nothing.
    pub duplicates: Vec<usize>,
}

/// Which results to read: one flag's variants, one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricQuery<'a> {
    pub flag: &'a str,
    /// The variants to report, in order (the flag's, control first); units
    /// exposed to any other variant are only counted.
    pub variants: &'a [&'a str],
    pub metric: &'a str,
    /// The attribute the flag buckets by: conversions are matched to
    /// exposures by the unit of this attribute.
    pub unit_attribute: &'a str,
    /// Conversion window after the first exposure, in milliseconds; `None`
    /// for no window (every conversion at or after the first exposure).
    pub window_ms: Option<i64>,
    /// Only units first exposed in `[from, until]` (milliseconds) count,
    /// and conversions only up to `until`: an experiment's start and stop.
    pub from_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// Caps each unit's summed value (sums and sums of squares; whether it
    /// converted is decided before capping).
    pub cap: Option<f64>,
    /// With a window `P` (milliseconds), also each unit's value of the same
    /// metric in `[t₀ − P, t₀)` before its first exposure: CUPED's
    /// covariate ([`VariantTotals::pre`]).
    pub pre_window_ms: Option<i64>,
}

impl<'a> MetricQuery<'a> {
    /// A query of `metric` for `flag`'s `variants` by `unit_attribute`,
    /// with no window, time bounds or cap.
    pub fn new(
        flag: &'a str,
        variants: &'a [&'a str],
        metric: &'a str,
        unit_attribute: &'a str,
    ) -> Self {
        MetricQuery {
            flag,
            variants,
            metric,
            unit_attribute,
            window_ms: None,
            from_ms: None,
            until_ms: None,
            cap: None,
            pre_window_ms: None,
        }
    }
}

/// One part of a ratio: a metric's per-unit value, either whether the
/// unit converted (0 or 1) or its summed value, optionally capped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioPart<'a> {
    pub metric: &'a str,
    /// 0/1 (converted) rather than the summed value.
    pub converted: bool,
    pub cap: Option<f64>,
}

/// One variant's sums for a ratio `y / x` over its units: Σy, Σy², Σx,
/// Σx², Σxy, and the units with y > 0.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RatioTotals {
    pub variant: String,
    pub units: u64,
    pub converted: u64,
    pub sum_y: f64,
    pub sum_y_squares: f64,
    pub sum_x: f64,
    pub sum_x_squares: f64,
    pub sum_products: f64,
}

/// One variant's units and their attributed conversions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VariantTotals {
    pub variant: String,
    /// Units whose first exposure was to this variant, and who saw no other.
    pub units: u64,
    /// Of those, units that converted: their attributed conversion values
    /// sum to more than zero (a conversion without a value counts 1).
    pub converted: u64,
    /// Σ over the units of the sum of their attributed conversion values.
    pub sum: f64,
    /// Σ over the units of the square of that sum.
    pub sum_squares: f64,
    /// The pre-exposure covariate's sums, when the query asked for them.
    pub pre: Option<PreExposure>,
}

/// Per variant, the units' values of the metric before their first
/// exposure (`x`, capped like the metric) with the post-exposure value `y`:
/// Σx, Σx², Σxy, and as converted or not: #{x > 0}, #{x > 0 and y > 0}.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PreExposure {
    pub sum: f64,
    pub sum_squares: f64,
    pub sum_products: f64,
    pub converted: u64,
    pub converted_both: u64,
}

/// The per-variant totals of one flag for one metric.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExperimentTotals {
    /// One entry per variant asked for, in the same order.
    pub variants: Vec<VariantTotals>,
    /// Units exposed to more than one variant: in no variant's totals.
    pub multiple_exposure_units: u64,
    /// Units exposed (only) to a variant not asked for.
    pub other_variant_units: u64,
}

impl ExperimentTotals {
    /// Every exposed unit.
    pub fn exposed_units(&self) -> u64 {
        self.variants.iter().map(|v| v.units).sum::<u64>()
            + self.multiple_exposure_units
            + self.other_variant_units
    }
}

fn invalid(index: usize, message: impl Into<String>) -> EventsError {
    EventsError::InvalidEvent {
        index,
        message: message.into(),
    }
}

fn check_time(index: usize, at_ms: i64) -> Result<(), EventsError> {
    if (0..=MAX_TIMESTAMP_MS).contains(&at_ms) {
        Ok(())
    } else {
        Err(invalid(
            index,
            format!("timestamp {at_ms} ms is outside 1970-01-01 … 9999-12-31"),
        ))
    }
}

fn check_unit(index: usize, what: &str, unit: &str) -> Result<(), EventsError> {
    if unit.is_empty() || unit.len() > MAX_UNIT_LEN {
        Err(invalid(
            index,
            format!("{what} must be 1 to {MAX_UNIT_LEN} bytes"),
        ))
    } else {
        Ok(())
    }
}

/// The checks the store relies on (the server checks more, per event,
/// before calling): an invalid event fails the whole batch.
fn validate(index: usize, event: &Event) -> Result<(), EventsError> {
    let id = event.event_id();
    if id.is_empty() || id.len() > MAX_EVENT_ID_LEN {
        return Err(invalid(
            index,
            format!("an event_id must be 1 to {MAX_EVENT_ID_LEN} bytes"),
        ));
    }
    check_time(index, event.at_ms())?;
    match event {
        Event::Exposure(e) => {
            if !guidon_engine::is_valid_key(&e.flag) {
                return Err(invalid(index, format!("invalid flag key {:?}", e.flag)));
            }
            if !guidon_engine::is_valid_key(&e.variant) {
                return Err(invalid(
                    index,
                    format!("invalid variant key {:?}", e.variant),
                ));
            }
            check_unit(index, "a unit", &e.unit)
        }
        Event::Conversion(c) => {
            if !guidon_engine::is_valid_key(&c.metric) {
                return Err(invalid(index, format!("invalid metric key {:?}", c.metric)));
            }
            if c.units.is_empty() {
                return Err(invalid(index, "a conversion needs a unit"));
            }
            for u in &c.units {
                check_unit(index, "a unit attribute", &u.attribute)?;
                check_unit(index, "a unit", &u.unit)?;
            }
            match c.value {
                Some(v) if !v.is_finite() => {
                    Err(invalid(index, "a conversion's value must be finite"))
                }
                _ => Ok(()),
            }
        }
    }
}

/// Row ranges of at most [`CHUNK`] rows: full chunks, then the remainder
/// in decreasing powers of two.
fn chunks(len: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while len - start >= CHUNK {
        out.push(start..start + CHUNK);
        start += CHUNK;
    }
    let mut size = CHUNK / 2;
    while start < len {
        if len - start >= size {
            out.push(start..start + size);
            start += size;
        }
        size /= 2;
    }
    out
}

/// `rows` tuples of `per_row` parameters: `(?, ?), (?, ?)` for SQLite,
/// `($1, $2), ($3, $4)` for PostgreSQL. SQLite gets anonymous parameters:
/// sqlx binds a named one by looking its name up, which is linear in the
/// number of parameters, so thousands of `$N` cost quadratic time.
fn values(backend: Backend, rows: usize, per_row: usize) -> String {
    let mut out = String::with_capacity(rows * per_row * 5);
    let mut next = 1;
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for p in 0..per_row {
            if p > 0 {
                out.push_str(", ");
            }
            match backend {
                Backend::Sqlite => out.push('?'),
                Backend::Postgres => {
                    out.push('$');
                    out.push_str(&next.to_string());
                }
            }
            next += 1;
        }
        out.push(')');
    }
    out
}

/// FNV-1a, 64 bits: a stable hash of an event id for `ev_conversions`.
fn event_hash(id: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

mod error;
mod fold;
mod ingest;
mod store;
mod totals;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_everything_in_few_shapes() {
        for len in [0, 1, 2, 3, 511, 512, 513, 1000, 10_000] {
            let ranges = chunks(len);
            let mut next = 0;
            for r in &ranges {
                assert_eq!(r.start, next);
                assert!(r.len() <= CHUNK && r.len().is_power_of_two());
                next = r.end;
            }
            assert_eq!(next, len);
        }
    }

    #[test]
    fn values_are_anonymous_for_sqlite_and_numbered_for_postgres() {
        assert_eq!(values(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(values(Backend::Postgres, 2, 2), "($1, $2), ($3, $4)");
    }

    #[test]
    fn event_hash_is_stable() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(
            event_hash("a"),
            i64::from_ne_bytes(0xaf63_dc4c_8601_ec8c_u64.to_ne_bytes())
        );
        assert_ne!(event_hash("e1"), event_hash("e2"));
    }
}
