//! Experiment events: exposures and conversions, folded at ingestion into
//! per-unit aggregates, and the per-variant totals that results read.
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
//! The per-unit rows are updated in the transaction that stores the events:
//! results never read raw events except for the few units described below.
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
//! [`Store::experiment_totals`] attributes when it reads: a unit's
//! conversions count when they happened at or after its first exposure
//! `t₀` and, with a window `W`, no later than `t₀ + W` (both bounds
//! inclusive). For most units the per-unit aggregate decides alone (all of
//! its conversions fall inside the interval, or none does); only a unit
//! whose conversions straddle `t₀` or `t₀ + W` has its conversions read one
//! by one, through the `(metric, unit, time)` index. The answer is
//! therefore the same whatever order the events arrived in.
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
//! transaction is durable. Under load the transactions grow, so each page
//! of the per-unit tables is written once for many events: per-unit rows
//! are keyed by unit, which arrive in no order, and a transaction of a few
//! thousand events would write one page per event.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::store::{Backend, Store, finish};

/// Longest accepted event id, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 128;
/// Longest accepted unit (bucketing value), in bytes.
pub const MAX_UNIT_LEN: usize = 1024;
/// Latest accepted event time: 9999-12-31T23:59:59.999Z, in milliseconds.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;
/// Most events the writer commits in one transaction (from as many waiting
/// batches as fit; a larger batch is committed alone).
pub const GROUP_EVENTS: usize = 200_000;

/// Rows per statement: well under SQLite's 32,766 and PostgreSQL's 65,535
/// bound parameters. A batch's remainder goes in power-of-two chunks, so
/// each statement has at most ten shapes and stays in the connection's
/// prepared-statement cache.
const CHUNK: usize = 512;

/// "No window": added to a first-exposure time, it stays far from overflow.
const NO_WINDOW_MS: i64 = 1_000_000_000_000_000;

/// The page cache of a SQLite connection that ingests events: 128 MiB.
const SQLITE_CACHE: &str = "PRAGMA cache_size = -131072";
/// Reads through a memory map of the file (the operating system's page
/// cache, shared by every connection) instead of copies into each
/// connection's cache: up to 4 GiB of address space.
const SQLITE_MMAP: &str = "PRAGMA mmap_size = 4294967296";

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

/// What [`Store::ingest_events`] did with a batch.
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
}

/// One variant's units and their attributed conversions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct VariantTotals {
    pub variant: String,
    /// Units whose first exposure was to this variant, and who saw no other.
    pub units: u64,
    /// Of those, units with at least one attributed conversion.
    pub converted: u64,
    /// Σ over the units of the sum of their attributed conversion values.
    pub sum: f64,
    /// Σ over the units of the square of that sum.
    pub sum_squares: f64,
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

fn invalid(index: usize, message: impl Into<String>) -> StoreError {
    StoreError::InvalidEvent {
        index,
        message: message.into(),
    }
}

fn check_time(index: usize, at_ms: i64) -> Result<(), StoreError> {
    if (0..=MAX_TIMESTAMP_MS).contains(&at_ms) {
        Ok(())
    } else {
        Err(invalid(
            index,
            format!("timestamp {at_ms} ms is outside 1970-01-01 … 9999-12-31"),
        ))
    }
}

fn check_unit(index: usize, what: &str, unit: &str) -> Result<(), StoreError> {
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
fn validate(index: usize, event: &Event) -> Result<(), StoreError> {
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

/// FNV-1a, 64 bits: a stable hash of an event id for `exp_conversions`.
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

// ---- the writer ----

/// A batch, prepared by its sender (in parallel with the writer): its
/// events in the order they are recorded, and folded per unit on the
/// assumption that none was seen before (the writer folds again, for the
/// events that were new, in the rare batch where some were not).
struct Job {
    env: String,
    events: Vec<Event>,
    /// Events that are the first of their (time, id) in the batch, sorted
    /// by (time, id): the index of seen events grows at its end.
    candidates: Vec<usize>,
    /// Events repeating an earlier one of the batch: duplicates whatever
    /// the database says.
    repeats: Vec<usize>,
    fold: Fold,
    reply: oneshot::Sender<Result<Ingested, StoreError>>,
}

impl Job {
    fn new(
        env: &str,
        events: Vec<Event>,
        reply: oneshot::Sender<Result<Ingested, StoreError>>,
    ) -> Job {
        let mut seen: HashSet<(i64, &str)> = HashSet::with_capacity(events.len());
        let mut candidates = Vec::with_capacity(events.len());
        let mut repeats = Vec::new();
        for (index, event) in events.iter().enumerate() {
            if seen.insert((event.at_ms(), event.event_id())) {
                candidates.push(index);
            } else {
                repeats.push(index);
            }
        }
        drop(seen);
        candidates.sort_unstable_by(|&a, &b| {
            (events[a].at_ms(), events[a].event_id())
                .cmp(&(events[b].at_ms(), events[b].event_id()))
        });
        let fold = Fold::new(&events, &candidates);
        Job {
            env: env.to_owned(),
            events,
            candidates,
            repeats,
            fold,
            reply,
        }
    }
}

/// The per-unit rows a set of events changes, by event index (so it can be
/// computed apart from the events it refers to), each list sorted by key so
/// neighbouring rows share pages.
struct Fold {
    /// Per (flag, unit): the event of the first exposure, and whether the
    /// unit was seen in more than one variant.
    exposures: Vec<(usize, bool)>,
    /// Per (metric, attribute, unit).
    unit_metrics: Vec<UnitRow>,
    /// Every conversion: (event, index of the unit in its `units`).
    conversions: Vec<(usize, usize)>,
}

/// One unit's conversions of one metric among the folded events.
struct UnitRow {
    /// A conversion naming the metric and unit, and the unit's index in it.
    event: usize,
    unit: usize,
    conversions: i64,
    total: f64,
    first_at: i64,
    last_at: i64,
}

impl Fold {
    fn new(events: &[Event], include: &[usize]) -> Fold {
        let mut exposures: Vec<usize> = Vec::new();
        let mut conversions: Vec<(usize, usize)> = Vec::new();
        for &i in include {
            match &events[i] {
                Event::Exposure(_) => exposures.push(i),
                Event::Conversion(c) => conversions.extend((0..c.units.len()).map(|u| (i, u))),
            }
        }
        let exposure = |i: usize| match &events[i] {
            Event::Exposure(e) => Some(e),
            Event::Conversion(_) => None,
        };
        let conversion = |(i, u): (usize, usize)| match &events[i] {
            Event::Conversion(c) => c.units.get(u).map(|unit| (c, unit)),
            Event::Exposure(_) => None,
        };
        // Exposures by (flag, unit, time): the first of each run is the
        // unit's first exposure in the batch.
        exposures.sort_unstable_by(|&a, &b| {
            let key = |i| exposure(i).map(|e| (e.flag.as_str(), e.unit.as_str(), e.at_ms));
            key(a).cmp(&key(b))
        });
        // A unit saw several variants when one of its exposures differs
        // from its first.
        let mut first: Vec<(usize, bool)> = Vec::with_capacity(exposures.len());
        for &i in &exposures {
            let Some(e) = exposure(i) else { continue };
            if let Some((start, multiple)) = first.last_mut()
                && let Some(s) = exposure(*start)
                && s.flag == e.flag
                && s.unit == e.unit
            {
                *multiple |= s.variant != e.variant;
                continue;
            }
            first.push((i, false));
        }

        conversions.sort_unstable_by(|&a, &b| {
            let key = |x| {
                conversion(x).map(|(c, u)| {
                    (
                        c.metric.as_str(),
                        u.attribute.as_str(),
                        u.unit.as_str(),
                        c.at_ms,
                        event_hash(&c.event_id),
                    )
                })
            };
            key(a).cmp(&key(b))
        });
        let mut unit_metrics: Vec<UnitRow> = Vec::new();
        for &(i, u) in &conversions {
            let Some((c, unit)) = conversion((i, u)) else {
                continue;
            };
            let value = c.value.unwrap_or(1.0);
            if let Some(row) = unit_metrics.last_mut()
                && let Some((r, ru)) = conversion((row.event, row.unit))
                && r.metric == c.metric
                && ru.attribute == unit.attribute
                && ru.unit == unit.unit
            {
                row.conversions += 1;
                row.total += value;
                row.first_at = row.first_at.min(c.at_ms);
                row.last_at = row.last_at.max(c.at_ms);
                continue;
            }
            unit_metrics.push(UnitRow {
                event: i,
                unit: u,
                conversions: 1,
                total: value,
                first_at: c.at_ms,
                last_at: c.at_ms,
            });
        }
        Fold {
            exposures: first,
            unit_metrics,
            conversions,
        }
    }
}

/// The queue to the writer task, started on first use (and again if the
/// runtime it ran on has gone).
#[derive(Debug, Default)]
pub(crate) struct Writer {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Writer {
    fn sender(&self, pool: &AnyPool, backend: Backend) -> mpsc::Sender<Job> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        match &*queue {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(write(pool.clone(), backend, rx));
                *queue = Some(tx.clone());
                tx
            }
        }
    }
}

/// The writer: takes every batch waiting (up to [`GROUP_EVENTS`] events),
/// commits each environment's in one transaction, answers each batch.
async fn write(pool: AnyPool, backend: Backend, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut size = first.events.len();
        let mut jobs = vec![first];
        while size < GROUP_EVENTS {
            match rx.try_recv() {
                Ok(job) => {
                    size += job.events.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // Environments in the order their first batch came.
        let mut groups: Vec<Vec<Job>> = Vec::new();
        for job in jobs {
            match groups.iter_mut().find(|g| g[0].env == job.env) {
                Some(group) => group.push(job),
                None => groups.push(vec![job]),
            }
        }
        for mut group in groups {
            if group.len() > 1
                && let Ok(done) = ingest_jobs(&pool, backend, &mut group).await
            {
                for (job, done) in group.into_iter().zip(done) {
                    let _ = job.reply.send(Ok(done));
                }
                continue;
            }
            // Something failed (or there was one batch): each batch on its
            // own, so each gets its own answer and one's failure is not the
            // others'.
            for job in group {
                let mut one = [job];
                let result = ingest_jobs(&pool, backend, &mut one)
                    .await
                    .map(|mut done| done.pop().unwrap_or_default());
                let [job] = one;
                let _ = job.reply.send(result);
            }
        }
    }
}

/// One transaction for batches of one environment: their new events
/// recorded and folded into the per-unit aggregates. Answers per batch.
async fn ingest_jobs(
    pool: &AnyPool,
    backend: Backend,
    jobs: &mut [Job],
) -> Result<Vec<Ingested>, StoreError> {
    let env = jobs.first().map(|j| j.env.clone()).unwrap_or_default();
    let mut tx = pool.begin().await?;
    let result = ingest(&mut tx, backend, &env, jobs).await;
    match finish(tx, result).await {
        Ok(stored) => Ok(jobs
            .iter()
            .zip(stored)
            .map(|(job, stored)| {
                let mut duplicates = job.repeats.clone();
                duplicates.extend(job.candidates.iter().filter(|&&i| !stored[i]));
                duplicates.sort_unstable();
                Ingested {
                    accepted: (job.events.len() - duplicates.len()) as u64,
                    duplicates,
                }
            })
            .collect()),
        Err(e) => {
            // The environment's absence makes the first insert fail on its
            // foreign key: report it as what it is.
            let exists = sqlx::query("SELECT 1 AS one FROM environments WHERE name = $1")
                .bind(&env)
                .fetch_optional(pool)
                .await;
            if let Ok(None) = exists {
                return Err(StoreError::UnknownEnv(env));
            }
            Err(e)
        }
    }
}

impl Store {
    /// Stores a batch of events for `env`, durably, before answering: new
    /// events are recorded and folded into the per-unit aggregates; events
    /// seen before (in an earlier batch, or earlier in this one) are
    /// reported as duplicates and change nothing. Either the whole batch is
    /// stored or nothing is. Concurrent batches are committed together (see
    /// the module documentation).
    ///
    /// Errors: [`StoreError::UnknownEnv`], [`StoreError::InvalidEvent`] (the
    /// first invalid event: nothing is stored), database errors.
    pub async fn ingest_events(
        &self,
        env: &str,
        events: Vec<Event>,
    ) -> Result<Ingested, StoreError> {
        for (index, event) in events.iter().enumerate() {
            validate(index, event)?;
        }
        let (reply, answer) = oneshot::channel();
        let job = Job::new(env, events, reply);
        let gone = || StoreError::Database(sqlx::Error::WorkerCrashed);
        self.experiments
            .sender(self.pool(), self.backend())
            .send(job)
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Per-variant totals of one flag for one metric, with conversions
    /// attributed as the module documentation says. Units exposed to more
    /// than one variant, or to a variant not asked for, are only counted.
    /// An environment without events for the flag or the metric gives zero
    /// totals, not an error.
    pub async fn experiment_totals(
        &self,
        env: &str,
        query: &MetricQuery<'_>,
    ) -> Result<ExperimentTotals, StoreError> {
        let window = match query.window_ms {
            None => NO_WINDOW_MS,
            Some(w) if (0..NO_WINDOW_MS).contains(&w) => w,
            Some(w) => {
                return Err(StoreError::InvalidQuery(format!(
                    "a conversion window must be between 0 and {NO_WINDOW_MS} ms, got {w}"
                )));
            }
        };
        self.revision(env).await?;
        let totals = ExperimentTotals {
            variants: query
                .variants
                .iter()
                .map(|v| VariantTotals {
                    variant: (*v).to_owned(),
                    units: 0,
                    converted: 0,
                    sum: 0.0,
                    sum_squares: 0.0,
                })
                .collect(),
            multiple_exposure_units: 0,
            other_variant_units: 0,
        };
        // One read transaction, so both passes see the same events
        // (REPEATABLE READ in PostgreSQL; SQLite's are snapshots).
        let mut tx = self.pool().begin().await?;
        let setup: &[&str] = match self.backend() {
            // Reads through the memory map, as the writer's connection does.
            Backend::Sqlite => &[SQLITE_MMAP],
            // The correlated subquery makes the planner's cost estimate
            // large enough to JIT-compile the query, which then costs more
            // than running it; and a hash of a million units needs more
            // than the default 4 MB.
            Backend::Postgres => &[
                "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                "SET LOCAL jit = off",
                "SET LOCAL work_mem = '64MB'",
            ],
        };
        for statement in setup {
            if let Err(e) = sqlx::query(statement).execute(&mut *tx).await {
                let _ = tx.rollback().await;
                return Err(e.into());
            }
        }
        let result = self.totals_in(&mut tx, env, query, window, totals).await;
        finish(tx, result).await
    }

    async fn totals_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        env: &str,
        query: &MetricQuery<'_>,
        window: i64,
        mut totals: ExperimentTotals,
    ) -> Result<ExperimentTotals, StoreError> {
        let Some(flag) = key_id(tx, env, "flag", query.flag, "").await? else {
            return Ok(totals);
        };

        // Units per variant: one pass over the flag's exposures, counting
        // per variant asked for (no GROUP BY: SQLite would sort them all).
        let mut sql = String::from(
            "SELECT CAST(COUNT(*) AS BIGINT) AS exposed, \
             CAST(COALESCE(SUM(CASE WHEN multiple <> 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS multiple",
        );
        for i in 0..query.variants.len() {
            sql.push_str(&format!(
                ", CAST(COALESCE(SUM(CASE WHEN multiple = 0 AND variant = ${} THEN 1 ELSE 0 END), 0) \
                 AS BIGINT) AS v{i}",
                i + 2
            ));
        }
        sql.push_str(" FROM exp_exposures WHERE flag = $1");
        let mut q = sqlx::query(&sql).bind(flag);
        for v in query.variants {
            q = q.bind(*v);
        }
        let row = q.fetch_one(&mut **tx).await?;
        let exposed = to_u64(row.try_get("exposed")?);
        totals.multiple_exposure_units = to_u64(row.try_get("multiple")?);
        for (i, v) in totals.variants.iter_mut().enumerate() {
            v.units = to_u64(row.try_get(format!("v{i}").as_str())?);
        }
        totals.other_variant_units = exposed
            - totals.multiple_exposure_units
            - totals.variants.iter().map(|v| v.units).sum::<u64>();

        // Conversions: a pass over the units that converted at all, each
        // joined to its exposure. The aggregate decides when all of a
        // unit's conversions are inside [t₀, t₀ + W] or all outside;
        // otherwise its conversions are read.
        let Some(metric) = key_id(tx, env, "metric", query.metric, query.unit_attribute).await?
        else {
            return Ok(totals);
        };
        let inside = "m.first_at >= e.first_at AND m.last_at <= e.first_at + $3";
        let outside = "m.last_at < e.first_at OR m.first_at > e.first_at + $3";
        let straddling = "(SELECT SUM(c.value) FROM exp_conversions c WHERE c.metric = $2 \
                          AND c.unit = e.unit AND c.at >= e.first_at AND c.at <= e.first_at + $3)";
        // SQLite: CROSS JOIN keeps the converting units as the outer loop
        // (fewer than the exposed ones); LIMIT -1 (OFFSET 0 in PostgreSQL)
        // keeps the inner query from being flattened into the outer, which
        // would compute `y` once per use.
        let (join, keep_apart) = match self.backend() {
            Backend::Sqlite => ("CROSS JOIN", "LIMIT -1"),
            Backend::Postgres => ("JOIN", "OFFSET 0"),
        };
        // `y`: the sum of a unit's attributed conversion values, NULL when
        // none is attributed (SUM over no rows is NULL), so COUNT(y) is the
        // number of converted units.
        let sql = format!(
            "SELECT variant, CAST(COUNT(y) AS BIGINT) AS converted, \
                CAST(COALESCE(SUM(y), 0) AS DOUBLE PRECISION) AS total, \
                CAST(COALESCE(SUM(y * y), 0) AS DOUBLE PRECISION) AS total_squares \
             FROM (SELECT e.variant AS variant, \
                CASE WHEN {inside} THEN m.total WHEN {outside} THEN NULL ELSE {straddling} END AS y \
              FROM exp_unit_metrics m {join} exp_exposures e ON e.flag = $1 AND e.unit = m.unit \
              WHERE m.metric = $2 AND e.multiple = 0 {keep_apart}) a \
             GROUP BY variant"
        );
        let rows = sqlx::query(&sql)
            .bind(flag)
            .bind(metric)
            .bind(window)
            .fetch_all(&mut **tx)
            .await?;
        for row in &rows {
            let variant: String = row.try_get("variant")?;
            if let Some(v) = totals.variants.iter_mut().find(|v| v.variant == variant) {
                v.converted = to_u64(row.try_get("converted")?);
                v.sum = row.try_get("total")?;
                v.sum_squares = row.try_get("total_squares")?;
            }
        }
        Ok(totals)
    }
}

async fn key_id(
    conn: &mut sqlx::AnyConnection,
    env: &str,
    kind: &str,
    key: &str,
    attr: &str,
) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query(
        "SELECT id FROM exp_keys WHERE env = $1 AND kind = $2 AND key = $3 AND attr = $4",
    )
    .bind(env)
    .bind(kind)
    .bind(key)
    .bind(attr)
    .fetch_optional(conn)
    .await?;
    match row {
        Some(row) => Ok(Some(row.try_get("id")?)),
        None => Ok(None),
    }
}

/// The ingestion transaction; returns, per batch and by event index,
/// whether each event was stored (new).
async fn ingest(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    env: &str,
    jobs: &mut [Job],
) -> Result<Vec<Vec<bool>>, StoreError> {
    // First a write: it takes SQLite's write lock at once (no read-then-
    // upgrade deadlock) and, in PostgreSQL, locks the environment's row of
    // `exp_keys`, so one environment's batches are applied one at a time
    // (no deadlock between two instances upserting the same units).
    let scope: i64 = sqlx::query(
        "INSERT INTO exp_keys (env, kind, key, attr) VALUES ($1, 'env', '', '') \
         ON CONFLICT (env, kind, key, attr) DO UPDATE SET key = excluded.key RETURNING id",
    )
    .bind(env)
    .fetch_one(&mut **tx)
    .await?
    .try_get("id")?;
    if backend == Backend::Sqlite {
        // A group commit dirties many pages of the per-unit tables; with
        // SQLite's default 2 MiB cache they would be spilled to the log
        // and read back mid-transaction (the cache grows only as used).
        // After the first write, so this transaction never reads first.
        for pragma in [SQLITE_CACHE, SQLITE_MMAP] {
            sqlx::query(pragma).execute(&mut **tx).await?;
        }
    }

    // Ids of the flags and (metric, attribute) pairs of the batches.
    let mut wanted: Vec<(&'static str, &str, &str)> = Vec::new();
    for job in jobs.iter() {
        for &i in &job.candidates {
            match &job.events[i] {
                Event::Exposure(e) => wanted.push(("flag", &e.flag, "")),
                Event::Conversion(c) => {
                    for u in &c.units {
                        wanted.push(("metric", &c.metric, &u.attribute));
                    }
                }
            }
        }
    }
    wanted.sort_unstable();
    wanted.dedup();
    for range in chunks(wanted.len()) {
        let sql = format!(
            "INSERT INTO exp_keys (env, kind, key, attr) VALUES {} \
             ON CONFLICT (env, kind, key, attr) DO NOTHING",
            values(backend, range.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for &(kind, key, attr) in &wanted[range] {
            q = q.bind(env).bind(kind).bind(key).bind(attr);
        }
        q.execute(&mut **tx).await?;
    }
    let mut keys: Vec<(String, String, String, i64)> = Vec::new();
    for row in sqlx::query("SELECT id, kind, key, attr FROM exp_keys WHERE env = $1")
        .bind(env)
        .fetch_all(&mut **tx)
        .await?
    {
        keys.push((
            row.try_get("kind")?,
            row.try_get("key")?,
            row.try_get("attr")?,
            row.try_get("id")?,
        ));
    }
    // An environment has few flags and metrics: a scan finds one's id
    // faster than a hash of three strings.
    let id = |kind: &str, key: &str, attr: &str| -> Result<i64, StoreError> {
        keys.iter()
            .find(|(k, n, a, _)| n == key && a == attr && k == kind)
            .map(|(.., id)| *id)
            .ok_or_else(|| {
                StoreError::Database(sqlx::Error::Protocol(format!(
                    "experiment key {kind} {key:?} vanished mid-transaction"
                )))
            })
    };

    // Every batch's events recorded in one pass in (time, id) order, so
    // the index of seen events grows at its end once per group.
    let lists: Vec<&[usize]> = jobs.iter().map(|j| j.candidates.as_slice()).collect();
    let order = merge(&lists, |j, i| {
        let e = &jobs[j].events[i];
        (e.at_ms(), e.event_id())
    });
    let stored = record_events(tx, backend, scope, jobs, &order).await?;
    let mut all_stored: Vec<Vec<bool>> = jobs.iter().map(|j| vec![false; j.events.len()]).collect();
    for ((j, i), new) in order.into_iter().zip(stored) {
        all_stored[j][i] = new;
    }
    for (job, stored) in jobs.iter_mut().zip(&all_stored) {
        if job.candidates.iter().any(|&i| !stored[i]) {
            // Some were seen before: fold only the new ones.
            let new: Vec<usize> = job
                .candidates
                .iter()
                .copied()
                .filter(|&i| stored[i])
                .collect();
            job.fold = Fold::new(&job.events, &new);
        }
    }
    apply(tx, backend, jobs, &id).await?;
    Ok(all_stored)
}

/// Merges lists each sorted by `key` into one sorted list of (list, item).
fn merge<T: Copy, K: Ord>(lists: &[&[T]], key: impl Fn(usize, T) -> K) -> Vec<(usize, T)> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut out = Vec::with_capacity(lists.iter().map(|l| l.len()).sum());
    let mut heap = BinaryHeap::with_capacity(lists.len());
    for (l, list) in lists.iter().enumerate() {
        if let Some(&first) = list.first() {
            heap.push(Reverse((key(l, first), l, 0_usize)));
        }
    }
    while let Some(Reverse((_, l, at))) = heap.pop() {
        let list = lists[l];
        out.push((l, list[at]));
        if let Some(&next) = list.get(at + 1) {
            heap.push(Reverse((key(l, next), l, at + 1)));
        }
    }
    out
}

/// Upserts the per-unit rows of the batches' folds, merged into one pass
/// in key order (each page of a table is then written once), and inserts
/// their conversions.
async fn apply(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    jobs: &[Job],
    id: &impl Fn(&str, &str, &str) -> Result<i64, StoreError>,
) -> Result<(), StoreError> {
    let exposure = |j: usize, i: usize| match &jobs[j].events[i] {
        Event::Exposure(e) => Some(e),
        Event::Conversion(_) => None,
    };
    let conversion = |j: usize, i: usize, u: usize| match &jobs[j].events[i] {
        Event::Conversion(c) => c.units.get(u).map(|unit| (c, unit)),
        Event::Exposure(_) => None,
    };
    let missing = || StoreError::Database(sqlx::Error::Protocol("fold out of step".into()));

    // Exposures: one row per (flag, unit), the earliest first exposure, and
    // several variants when the batches disagree.
    let lists: Vec<&[(usize, bool)]> = jobs.iter().map(|j| j.fold.exposures.as_slice()).collect();
    let merged = merge(&lists, |j, (i, _)| {
        exposure(j, i).map(|e| (e.flag.as_str(), e.unit.as_str(), e.at_ms))
    });
    let mut rows: Vec<(i64, &str, &str, i64, bool)> = Vec::with_capacity(merged.len());
    let mut last: Option<&str> = None;
    for (j, (i, multiple)) in merged {
        let e = exposure(j, i).ok_or_else(missing)?;
        if let Some(row) = rows.last_mut()
            && last == Some(e.flag.as_str())
            && row.1 == e.unit
        {
            // Later in time: it only adds variants.
            row.4 |= multiple || row.2 != e.variant;
            continue;
        }
        rows.push((
            id("flag", &e.flag, "")?,
            &e.unit,
            &e.variant,
            e.at_ms,
            multiple,
        ));
        last = Some(&e.flag);
    }
    for range in chunks(rows.len()) {
        let sql = format!(
            "INSERT INTO exp_exposures (flag, unit, variant, first_at, multiple) VALUES {} \
             ON CONFLICT (flag, unit) DO UPDATE SET \
               multiple = CASE WHEN exp_exposures.multiple <> 0 OR excluded.multiple <> 0 \
                 OR exp_exposures.variant <> excluded.variant THEN 1 ELSE 0 END, \
               variant = CASE WHEN excluded.first_at < exp_exposures.first_at \
                 THEN excluded.variant ELSE exp_exposures.variant END, \
               first_at = CASE WHEN excluded.first_at < exp_exposures.first_at \
                 THEN excluded.first_at ELSE exp_exposures.first_at END",
            values(backend, range.len(), 5)
        );
        let mut q = sqlx::query(&sql);
        for &(flag, unit, variant, at, multiple) in &rows[range] {
            q = q
                .bind(flag)
                .bind(unit)
                .bind(variant)
                .bind(at)
                .bind(i32::from(multiple));
        }
        q.execute(&mut **tx).await?;
    }

    // Conversions, each as it is.
    let lists: Vec<&[(usize, usize)]> =
        jobs.iter().map(|j| j.fold.conversions.as_slice()).collect();
    let merged = merge(&lists, |j, (i, u)| {
        conversion(j, i, u).map(|(c, unit)| {
            (
                c.metric.as_str(),
                unit.attribute.as_str(),
                unit.unit.as_str(),
                c.at_ms,
                event_hash(&c.event_id),
            )
        })
    });
    for range in chunks(merged.len()) {
        let sql = format!(
            "INSERT INTO exp_conversions (metric, unit, at, event, value) VALUES {} \
             ON CONFLICT (metric, unit, at, event) DO NOTHING",
            values(backend, range.len(), 5)
        );
        let mut q = sqlx::query(&sql);
        for &(j, (i, u)) in &merged[range] {
            let (c, unit) = conversion(j, i, u).ok_or_else(missing)?;
            q = q
                .bind(id("metric", &c.metric, &unit.attribute)?)
                .bind(unit.unit.as_str())
                .bind(c.at_ms)
                .bind(event_hash(&c.event_id))
                .bind(c.value.unwrap_or(1.0));
        }
        q.execute(&mut **tx).await?;
    }

    // Per (metric, attribute, unit): the batches' totals added up.
    let indexes: Vec<Vec<usize>> = jobs
        .iter()
        .map(|j| (0..j.fold.unit_metrics.len()).collect())
        .collect();
    let lists: Vec<&[usize]> = indexes.iter().map(Vec::as_slice).collect();
    let merged = merge(&lists, |j, r| {
        let row = &jobs[j].fold.unit_metrics[r];
        conversion(j, row.event, row.unit).map(|(c, unit)| {
            (
                c.metric.as_str(),
                unit.attribute.as_str(),
                unit.unit.as_str(),
            )
        })
    });
    let mut rows: Vec<(i64, &str, i64, f64, i64, i64)> = Vec::with_capacity(merged.len());
    let mut last: Option<(&str, &str)> = None;
    for (j, r) in merged {
        let row = &jobs[j].fold.unit_metrics[r];
        let (c, unit) = conversion(j, row.event, row.unit).ok_or_else(missing)?;
        let key = (c.metric.as_str(), unit.attribute.as_str());
        if let Some(prev) = rows.last_mut()
            && last == Some(key)
            && prev.1 == unit.unit
        {
            prev.2 += row.conversions;
            prev.3 += row.total;
            prev.4 = prev.4.min(row.first_at);
            prev.5 = prev.5.max(row.last_at);
            continue;
        }
        rows.push((
            id("metric", &c.metric, &unit.attribute)?,
            &unit.unit,
            row.conversions,
            row.total,
            row.first_at,
            row.last_at,
        ));
        last = Some(key);
    }
    for range in chunks(rows.len()) {
        let sql = format!(
            "INSERT INTO exp_unit_metrics (metric, unit, conversions, total, first_at, last_at) \
             VALUES {} ON CONFLICT (metric, unit) DO UPDATE SET \
               conversions = exp_unit_metrics.conversions + excluded.conversions, \
               total = exp_unit_metrics.total + excluded.total, \
               first_at = CASE WHEN excluded.first_at < exp_unit_metrics.first_at \
                 THEN excluded.first_at ELSE exp_unit_metrics.first_at END, \
               last_at = CASE WHEN excluded.last_at > exp_unit_metrics.last_at \
                 THEN excluded.last_at ELSE exp_unit_metrics.last_at END",
            values(backend, range.len(), 6)
        );
        let mut q = sqlx::query(&sql);
        for &(metric, unit, conversions, total, first_at, last_at) in &rows[range] {
            q = q
                .bind(metric)
                .bind(unit)
                .bind(conversions)
                .bind(total)
                .bind(first_at)
                .bind(last_at);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Records the events' (time, id) pairs, in the order given (batch,
/// index); returns, in that order, whether each was not seen before.
/// Optimistic: a chunk is inserted ignoring conflicts, and only when fewer
/// rows went in than were sent (some were duplicates) is it undone and
/// inserted again, returning which went in.
async fn record_events(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    scope: i64,
    jobs: &[Job],
    order: &[(usize, usize)],
) -> Result<Vec<bool>, StoreError> {
    let event = |(j, i): (usize, usize)| &jobs[j].events[i];
    let mut stored = vec![false; order.len()];
    for range in chunks(order.len()) {
        let start = range.start;
        let chunk = &order[range];
        let insert = format!(
            "INSERT INTO exp_events (scope, at, event_id) VALUES {} \
             ON CONFLICT (scope, at, event_id) DO NOTHING",
            values(backend, chunk.len(), 3)
        );

        sqlx::query("SAVEPOINT exp_events")
            .execute(&mut **tx)
            .await?;
        let done = bind_events(&insert, scope, jobs, chunk)
            .execute(&mut **tx)
            .await?;
        if usize::try_from(done.rows_affected()).is_ok_and(|n| n == chunk.len()) {
            sqlx::query("RELEASE SAVEPOINT exp_events")
                .execute(&mut **tx)
                .await?;
            stored[start..start + chunk.len()].fill(true);
            continue;
        }
        sqlx::query("ROLLBACK TO SAVEPOINT exp_events")
            .execute(&mut **tx)
            .await?;
        sqlx::query("RELEASE SAVEPOINT exp_events")
            .execute(&mut **tx)
            .await?;
        let returning = format!("{insert} RETURNING at, event_id");
        let mut by_key: HashMap<(i64, &str), usize> = HashMap::with_capacity(chunk.len());
        for (k, &x) in chunk.iter().enumerate() {
            by_key.insert((event(x).at_ms(), event(x).event_id()), start + k);
        }
        for row in bind_events(&returning, scope, jobs, chunk)
            .fetch_all(&mut **tx)
            .await?
        {
            let at: i64 = row.try_get("at")?;
            let event_id: String = row.try_get("event_id")?;
            if let Some(&k) = by_key.get(&(at, event_id.as_str())) {
                stored[k] = true;
            }
        }
    }
    Ok(stored)
}

fn bind_events<'q>(
    sql: &'q str,
    scope: i64,
    jobs: &'q [Job],
    chunk: &[(usize, usize)],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    let mut q = sqlx::query(sql);
    for &(j, i) in chunk {
        let event = &jobs[j].events[i];
        q = q.bind(scope).bind(event.at_ms()).bind(event.event_id());
    }
    q
}

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
