//! The event writer: batches folded per unit by their senders, committed
//! together by one task per store (see the parent module's "Group commit").

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::error::StoreError;
use crate::store::{Backend, Store, finish};

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
