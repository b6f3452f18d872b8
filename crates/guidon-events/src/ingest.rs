//! The event writer: one task per store that appends batches to the log
//! (and their ids to the index of seen events), committed together, and
//! folds the log into the per-unit tables in between (`fold.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::error::EventsError;
use crate::fold::{Folded, fold_once};
use crate::store::{Backend, EventStore, finish};

/// A batch, prepared by its sender (in parallel with the writer): its
/// events, and the order they are recorded in.
struct Job {
    env: String,
    events: Vec<Event>,
    /// Events that are the first of their (time, id) in the batch, sorted
    /// by (time, id): the index of seen events grows at its end.
    candidates: Vec<usize>,
    /// Events repeating an earlier one of the batch: duplicates whatever
    /// the database says.
    repeats: Vec<usize>,
    reply: oneshot::Sender<Result<Ingested, EventsError>>,
}

impl Job {
    fn new(
        env: &str,
        events: Vec<Event>,
        reply: oneshot::Sender<Result<Ingested, EventsError>>,
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
        Job {
            env: env.to_owned(),
            events,
            candidates,
            repeats,
            reply,
        }
    }
}

/// What the writer task is asked to do, in the order asked.
enum Message {
    Ingest(Job),
    /// Fold every logged event, then answer.
    Settle(oneshot::Sender<Result<(), EventsError>>),
    /// Delete an environment's events, folded or not.
    DeleteEnv(String, oneshot::Sender<Result<(), EventsError>>),
}

/// The queue to the writer task, started on first use (and again if the
/// runtime it ran on has gone).
#[derive(Debug, Default)]
pub(crate) struct Writer {
    queue: Mutex<Option<mpsc::Sender<Message>>>,
}

impl Writer {
    fn sender(&self, store: &EventStore) -> mpsc::Sender<Message> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        match &*queue {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(write(store.pool().clone(), store.backend(), rx));
                *queue = Some(tx.clone());
                tx
            }
        }
    }

    async fn ask<T>(
        &self,
        store: &EventStore,
        message: impl FnOnce(oneshot::Sender<Result<T, EventsError>>) -> Message,
    ) -> Result<T, EventsError> {
        let (reply, answer) = oneshot::channel();
        self.sender(store)
            .send(message(reply))
            .await
            .map_err(|_| EventsError::WriterGone)?;
        answer.await.map_err(|_| EventsError::WriterGone)?
    }

    pub(crate) async fn delete_env(
        &self,
        store: &EventStore,
        env: &str,
    ) -> Result<(), EventsError> {
        let env = env.to_owned();
        self.ask(store, |reply| Message::DeleteEnv(env, reply))
            .await
    }
}

/// The writer: takes every batch waiting (up to [`GROUP_EVENTS`] events),
/// commits each environment's in one transaction, answers each batch; folds
/// when no batch waits, or first when the log holds [`FOLD_BACKLOG`] rows.
async fn write(pool: AnyPool, backend: Backend, mut rx: mpsc::Receiver<Message>) {
    // Rows logged and not yet folded, as far as this process knows (on
    // PostgreSQL other instances log too): what makes it fold. A restart
    // after a crash finds the log as the crash left it and folds it.
    let mut backlog: usize = match sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ev_log")
        .fetch_one(&pool)
        .await
        .and_then(|row| row.try_get::<i64, _>("n"))
    {
        Ok(n) => usize::try_from(n).unwrap_or(0),
        Err(_) => 1,
    };
    let mut deferred: Vec<Message> = Vec::new();
    loop {
        if backlog >= FOLD_BACKLOG {
            backlog = fold_step(&pool, backend, backlog, FOLD_EVENTS).await;
        }
        let message = match deferred.pop() {
            Some(m) => m,
            None if backlog > 0 => match rx.try_recv() {
                Ok(m) => m,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // Nothing waits: fold, a little at a time, so a batch
                    // that comes meanwhile does not wait long.
                    backlog = fold_step(&pool, backend, backlog, IDLE_FOLD_EVENTS).await;
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            },
            None => match rx.recv().await {
                Some(m) => m,
                None => return,
            },
        };
        let first = match message {
            Message::Ingest(job) => job,
            Message::Settle(reply) => {
                let result = settle(&pool, backend).await;
                if result.is_ok() {
                    backlog = 0;
                }
                let _ = reply.send(result);
                continue;
            }
            Message::DeleteEnv(env, reply) => {
                let _ = reply.send(delete_env(&pool, &env).await);
                continue;
            }
        };
        let mut size = first.events.len();
        let mut jobs = vec![first];
        while size < GROUP_EVENTS {
            match rx.try_recv() {
                Ok(Message::Ingest(job)) => {
                    size += job.events.len();
                    jobs.push(job);
                }
                // Answered after this group, in the order they came.
                Ok(other) => {
                    deferred.insert(0, other);
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
                && let Ok((done, logged)) = ingest_jobs(&pool, backend, &mut group).await
            {
                backlog += logged;
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
                let result =
                    ingest_jobs(&pool, backend, &mut one)
                        .await
                        .map(|(mut done, logged)| {
                            backlog += logged;
                            done.pop().unwrap_or_default()
                        });
                let [job] = one;
                let _ = job.reply.send(result);
            }
        }
    }
}

/// One fold; returns the backlog after it. A failed fold changed nothing
/// (its rows are still logged): it is logged and tried again later.
async fn fold_step(pool: &AnyPool, backend: Backend, backlog: usize, limit: usize) -> usize {
    match fold_once(pool, backend, limit).await {
        Ok(Folded::Rows(n)) if n < limit => 0,
        Ok(Folded::Rows(n)) => backlog.saturating_sub(n).max(1),
        // Another instance folds the shared log.
        Ok(Folded::Busy) => 0,
        Err(e) => {
            tracing::warn!(error = %e, "folding experiment events failed; retried after the next batch");
            0
        }
    }
}

/// Folds until the log is empty (on PostgreSQL, waiting for another
/// instance's fold to finish first).
async fn settle(pool: &AnyPool, backend: Backend) -> Result<(), EventsError> {
    loop {
        match fold_once(pool, backend, FOLD_EVENTS).await? {
            Folded::Rows(n) if n < FOLD_EVENTS => return Ok(()),
            Folded::Rows(_) => {}
            Folded::Busy => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

async fn delete_env(pool: &AnyPool, env: &str) -> Result<(), EventsError> {
    let mut tx = pool.begin().await?;
    let result = async {
        for statement in [
            "DELETE FROM ev_log WHERE key IN (SELECT id FROM ev_keys WHERE env = $1)",
            "DELETE FROM ev_exposures WHERE flag IN (SELECT id FROM ev_keys WHERE env = $1)",
            "DELETE FROM ev_unit_metrics WHERE metric IN (SELECT id FROM ev_keys WHERE env = $1)",
            "DELETE FROM ev_conversions WHERE metric IN (SELECT id FROM ev_keys WHERE env = $1)",
            "DELETE FROM ev_seen WHERE scope IN (SELECT id FROM ev_keys WHERE env = $1)",
            "DELETE FROM ev_keys WHERE env = $1",
        ] {
            sqlx::query(statement).bind(env).execute(&mut *tx).await?;
        }
        Ok(())
    }
    .await;
    finish(tx, result).await
}

/// One transaction for batches of one environment: their new events
/// recorded and logged. Answers per batch, and the rows logged.
async fn ingest_jobs(
    pool: &AnyPool,
    backend: Backend,
    jobs: &mut [Job],
) -> Result<(Vec<Ingested>, usize), EventsError> {
    let env = jobs.first().map(|j| j.env.clone()).unwrap_or_default();
    let mut tx = pool.begin().await?;
    let result = ingest(&mut tx, backend, &env, jobs).await;
    let (stored, logged) = finish(tx, result).await?;
    let done = jobs
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
        .collect();
    Ok((done, logged))
}

impl EventStore {
    /// Stores a batch of events for `env`, durably, before answering: new
    /// events are recorded and logged (folded into the per-unit aggregates
    /// later, see the crate documentation); events seen before (in an
    /// earlier batch, or earlier in this one) are reported as duplicates
    /// and change nothing. Either the whole batch is stored or nothing is.
    /// Concurrent batches are committed together. The caller checks that
    /// `env` exists (environments are the flag store's).
    ///
    /// Errors: [`EventsError::InvalidEvent`] (the first invalid event:
    /// nothing is stored), database errors.
    pub async fn ingest_events(
        &self,
        env: &str,
        events: Vec<Event>,
    ) -> Result<Ingested, EventsError> {
        for (index, event) in events.iter().enumerate() {
            validate(index, event)?;
        }
        let (reply, answer) = oneshot::channel();
        let job = Job::new(env, events, reply);
        self.writer
            .sender(self)
            .send(Message::Ingest(job))
            .await
            .map_err(|_| EventsError::WriterGone)?;
        answer.await.map_err(|_| EventsError::WriterGone)?
    }

    /// Folds every acknowledged event into the per-unit tables, then
    /// answers: what results read is then every event acknowledged before
    /// the call. The result queries call it first.
    pub async fn settle(&self) -> Result<(), EventsError> {
        self.writer.ask(self, Message::Settle).await
    }
}

/// The ingestion transaction; returns, per batch and by event index,
/// whether each event was stored (new), and the rows logged.
async fn ingest(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    env: &str,
    jobs: &mut [Job],
) -> Result<(Vec<Vec<bool>>, usize), EventsError> {
    // First a write: it takes SQLite's write lock at once (no read-then-
    // upgrade deadlock) and, in PostgreSQL, locks the environment's row of
    // `ev_keys`, so one environment's batches are applied one at a time
    // (no deadlock between two instances upserting the same units).
    let scope: i64 = sqlx::query(
        "INSERT INTO ev_keys (env, kind, key, attr) VALUES ($1, 'env', '', '') \
         ON CONFLICT (env, kind, key, attr) DO UPDATE SET key = excluded.key RETURNING id",
    )
    .bind(env)
    .fetch_one(&mut **tx)
    .await?
    .try_get("id")?;
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
            "INSERT INTO ev_keys (env, kind, key, attr) VALUES {} \
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
    for row in sqlx::query("SELECT id, kind, key, attr FROM ev_keys WHERE env = $1")
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
    let id = |kind: &str, key: &str, attr: &str| -> Result<i64, EventsError> {
        keys.iter()
            .find(|(k, n, a, _)| n == key && a == attr && k == kind)
            .map(|(.., id)| *id)
            .ok_or_else(|| {
                EventsError::Database(sqlx::Error::Protocol(format!(
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
    for (&(j, i), new) in order.iter().zip(&stored) {
        all_stored[j][i] = *new;
    }
    // The new events logged, for the fold: one row per exposure, one per
    // conversion and unit attribute.
    let mut rows: Vec<(i64, i64, &str, &str, i64, i64, f64)> = Vec::with_capacity(order.len());
    for (&(j, i), new) in order.iter().zip(&stored) {
        if !*new {
            continue;
        }
        match &jobs[j].events[i] {
            Event::Exposure(e) => {
                rows.push((
                    0,
                    id("flag", &e.flag, "")?,
                    &e.unit,
                    &e.variant,
                    e.at_ms,
                    0,
                    0.0,
                ));
            }
            Event::Conversion(c) => {
                let hash = event_hash(&c.event_id);
                for u in &c.units {
                    rows.push((
                        1,
                        id("metric", &c.metric, &u.attribute)?,
                        &u.unit,
                        "",
                        c.at_ms,
                        hash,
                        c.value.unwrap_or(1.0),
                    ));
                }
            }
        }
    }
    for range in chunks(rows.len()) {
        let sql = format!(
            "INSERT INTO ev_log (kind, key, unit, variant, at, event, value) VALUES {}",
            values(backend, range.len(), 7)
        );
        let mut q = sqlx::query(&sql);
        for &(kind, key, unit, variant, at, event, value) in &rows[range] {
            q = q
                .bind(kind)
                .bind(key)
                .bind(unit)
                .bind(variant)
                .bind(at)
                .bind(event)
                .bind(value);
        }
        q.execute(&mut **tx).await?;
    }
    Ok((all_stored, rows.len()))
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
) -> Result<Vec<bool>, EventsError> {
    let event = |(j, i): (usize, usize)| &jobs[j].events[i];
    let mut stored = vec![false; order.len()];
    for range in chunks(order.len()) {
        let start = range.start;
        let chunk = &order[range];
        let insert = format!(
            "INSERT INTO ev_seen (scope, at, event_id) VALUES {} \
             ON CONFLICT (scope, at, event_id) DO NOTHING",
            values(backend, chunk.len(), 3)
        );

        sqlx::query("SAVEPOINT ev_seen").execute(&mut **tx).await?;
        let done = bind_events(&insert, scope, jobs, chunk)
            .execute(&mut **tx)
            .await?;
        if usize::try_from(done.rows_affected()).is_ok_and(|n| n == chunk.len()) {
            sqlx::query("RELEASE SAVEPOINT ev_seen")
                .execute(&mut **tx)
                .await?;
            stored[start..start + chunk.len()].fill(true);
            continue;
        }
        sqlx::query("ROLLBACK TO SAVEPOINT ev_seen")
            .execute(&mut **tx)
            .await?;
        sqlx::query("RELEASE SAVEPOINT ev_seen")
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
