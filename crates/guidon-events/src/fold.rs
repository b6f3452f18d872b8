//! The fold: the oldest logged events applied to the per-unit tables and
//! deleted from the log in one transaction (see the crate documentation's
//! "Acknowledged when appended, folded after").
//!
//! The database does the folding (`INSERT … SELECT … GROUP BY … ON
//! CONFLICT`), so no row of the log travels through the driver: read back
//! one by one through sqlx, half a million rows took ~5 s, the statements
//! below ~2 s in all.

use sqlx::{Any, AnyPool, Row, Transaction};

use crate::error::EventsError;
use crate::store::{Backend, finish};

/// What one fold did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Folded {
    /// This many logged rows folded (fewer than asked: the log is empty).
    Rows(usize),
    /// Another instance is folding (PostgreSQL): nothing done.
    Busy,
}

/// Folds up to `limit` of the oldest logged rows.
pub(crate) async fn fold_once(
    pool: &AnyPool,
    backend: Backend,
    limit: usize,
) -> Result<Folded, EventsError> {
    let mut tx = pool.begin().await?;
    let result = fold_in(&mut tx, backend, limit).await;
    finish(tx, result).await
}

async fn fold_in(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    limit: usize,
) -> Result<Folded, EventsError> {
    match backend {
        // A write first: SQLite's write lock taken at once, not upgraded
        // from a read lock later.
        Backend::Sqlite => {
            sqlx::query("DELETE FROM ev_log WHERE id < 0")
                .execute(&mut **tx)
                .await?;
        }
        // One snapshot for every statement, so the rows deleted are the
        // rows folded: a row another instance commits meanwhile (with a
        // lower id than the last folded) is neither, and is folded next
        // time. One instance folds at a time.
        Backend::Postgres => {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                .execute(&mut **tx)
                .await?;
            let got: bool = sqlx::query(
                "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.guidon_events_fold')) AS got",
            )
            .fetch_one(&mut **tx)
            .await?
            .try_get("got")?;
            if !got {
                return Ok(Folded::Busy);
            }
        }
    }
    let row = sqlx::query(&format!(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n, MIN(id) AS lo, MAX(id) AS hi \
         FROM (SELECT id FROM ev_log ORDER BY id LIMIT {limit}) oldest"
    ))
    .fetch_one(&mut **tx)
    .await?;
    let n: i64 = row.try_get("n")?;
    if n == 0 {
        return Ok(Folded::Rows(0));
    }
    let (lo, hi): (i64, i64) = (row.try_get("lo")?, row.try_get("hi")?);
    let range = "id >= $1 AND id <= $2";
    // Each statement's rows come sorted by key (GROUP BY, ORDER BY), so
    // each page of a per-unit table is written once per fold.
    let statements = [
        // Per (flag, unit): the earliest exposure, and whether it saw more
        // than one variant (its variant then does not matter: the unit is
        // only counted).
        format!(
            "INSERT INTO ev_exposures (flag, unit, variant, first_at, multiple) \
             SELECT key, unit, MIN(variant), MIN(at), \
               CASE WHEN MIN(variant) <> MAX(variant) THEN 1 ELSE 0 END \
             FROM ev_log WHERE {range} AND kind = 0 GROUP BY key, unit \
             ON CONFLICT (flag, unit) DO UPDATE SET \
               multiple = CASE WHEN ev_exposures.multiple <> 0 OR excluded.multiple <> 0 \
                 OR ev_exposures.variant <> excluded.variant THEN 1 ELSE 0 END, \
               variant = CASE WHEN excluded.first_at < ev_exposures.first_at \
                 THEN excluded.variant ELSE ev_exposures.variant END, \
               first_at = CASE WHEN excluded.first_at < ev_exposures.first_at \
                 THEN excluded.first_at ELSE ev_exposures.first_at END"
        ),
        // Every conversion, as it is.
        format!(
            "INSERT INTO ev_conversions (metric, unit, at, event, value) \
             SELECT key, unit, at, event, value FROM ev_log WHERE {range} AND kind = 1 \
             ORDER BY key, unit, at, event \
             ON CONFLICT (metric, unit, at, event) DO NOTHING"
        ),
        // Per (metric and attribute, unit): count, total, first and last.
        format!(
            "INSERT INTO ev_unit_metrics (metric, unit, conversions, total, first_at, last_at) \
             SELECT key, unit, COUNT(*), SUM(value), MIN(at), MAX(at) \
             FROM ev_log WHERE {range} AND kind = 1 GROUP BY key, unit \
             ON CONFLICT (metric, unit) DO UPDATE SET \
               conversions = ev_unit_metrics.conversions + excluded.conversions, \
               total = ev_unit_metrics.total + excluded.total, \
               first_at = CASE WHEN excluded.first_at < ev_unit_metrics.first_at \
                 THEN excluded.first_at ELSE ev_unit_metrics.first_at END, \
               last_at = CASE WHEN excluded.last_at > ev_unit_metrics.last_at \
                 THEN excluded.last_at ELSE ev_unit_metrics.last_at END"
        ),
        format!("DELETE FROM ev_log WHERE {range}"),
    ];
    for sql in &statements {
        sqlx::query(sql)
            .bind(lo)
            .bind(hi)
            .execute(&mut **tx)
            .await?;
    }
    Ok(Folded::Rows(usize::try_from(n).unwrap_or(0)))
}
