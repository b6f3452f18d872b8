//! The fold: the oldest logged events applied to the per-unit tables and
//! deleted from the log in one transaction (see the crate documentation's
//! "Acknowledged when appended, folded after").

use sqlx::{Any, AnyPool, Row, Transaction};

use super::*;
use crate::error::EventsError;
use crate::store::{Backend, finish};

/// One logged row: an exposure (`kind` 0, `key` the flag's id) or a
/// conversion of one unit attribute (`kind` 1, `key` the metric's id).
struct Logged {
    kind: i64,
    key: i64,
    unit: String,
    variant: String,
    at: i64,
    event: i64,
    value: f64,
}

/// Folds up to `limit` of the oldest logged rows; returns how many.
pub(crate) async fn fold_once(
    pool: &AnyPool,
    backend: Backend,
    limit: usize,
) -> Result<usize, EventsError> {
    let mut tx = pool.begin().await?;
    let result = fold_in(&mut tx, backend, limit).await;
    finish(tx, result).await
}

async fn fold_in(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    limit: usize,
) -> Result<usize, EventsError> {
    // The rows are taken by deleting them: the first statement is a write,
    // so SQLite's write lock is taken at once; in PostgreSQL, rows another
    // instance's fold has taken are skipped, never folded twice.
    let lock = match backend {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
    };
    let sql = format!(
        "DELETE FROM ev_log WHERE id IN (SELECT id FROM ev_log ORDER BY id LIMIT {limit}{lock}) \
         RETURNING kind, key, unit, variant, at, event, value"
    );
    let mut rows: Vec<Logged> = Vec::new();
    for row in sqlx::query(&sql).fetch_all(&mut **tx).await? {
        rows.push(Logged {
            kind: row.try_get("kind")?,
            key: row.try_get("key")?,
            unit: row.try_get("unit")?,
            variant: row.try_get("variant")?,
            at: row.try_get("at")?,
            event: row.try_get("event")?,
            value: row.try_get("value")?,
        });
    }
    let n = rows.len();
    if n == 0 {
        return Ok(0);
    }
    let (mut exposures, mut conversions): (Vec<&Logged>, Vec<&Logged>) =
        rows.iter().partition(|r| r.kind == 0);

    // Exposures by (flag, unit, time): the first of each run is the unit's
    // first exposure here; it saw several variants when another differs.
    exposures.sort_unstable_by(|a, b| {
        (a.key, &a.unit, a.at, &a.variant).cmp(&(b.key, &b.unit, b.at, &b.variant))
    });
    let mut firsts: Vec<(&Logged, bool)> = Vec::new();
    for e in exposures {
        if let Some((first, multiple)) = firsts.last_mut()
            && first.key == e.key
            && first.unit == e.unit
        {
            *multiple |= first.variant != e.variant;
            continue;
        }
        firsts.push((e, false));
    }
    for range in chunks(firsts.len()) {
        let sql = format!(
            "INSERT INTO ev_exposures (flag, unit, variant, first_at, multiple) VALUES {} \
             ON CONFLICT (flag, unit) DO UPDATE SET \
               multiple = CASE WHEN ev_exposures.multiple <> 0 OR excluded.multiple <> 0 \
                 OR ev_exposures.variant <> excluded.variant THEN 1 ELSE 0 END, \
               variant = CASE WHEN excluded.first_at < ev_exposures.first_at \
                 THEN excluded.variant ELSE ev_exposures.variant END, \
               first_at = CASE WHEN excluded.first_at < ev_exposures.first_at \
                 THEN excluded.first_at ELSE ev_exposures.first_at END",
            values(backend, range.len(), 5)
        );
        let mut q = sqlx::query(&sql);
        for &(e, multiple) in &firsts[range] {
            q = q
                .bind(e.key)
                .bind(e.unit.as_str())
                .bind(e.variant.as_str())
                .bind(e.at)
                .bind(i32::from(multiple));
        }
        q.execute(&mut **tx).await?;
    }

    // Conversions, each as it is, in key order.
    conversions.sort_unstable_by(|a, b| {
        (a.key, &a.unit, a.at, a.event).cmp(&(b.key, &b.unit, b.at, b.event))
    });
    for range in chunks(conversions.len()) {
        let sql = format!(
            "INSERT INTO ev_conversions (metric, unit, at, event, value) VALUES {} \
             ON CONFLICT (metric, unit, at, event) DO NOTHING",
            values(backend, range.len(), 5)
        );
        let mut q = sqlx::query(&sql);
        for c in &conversions[range] {
            q = q
                .bind(c.key)
                .bind(c.unit.as_str())
                .bind(c.at)
                .bind(c.event)
                .bind(c.value);
        }
        q.execute(&mut **tx).await?;
    }

    // Per (metric, attribute, unit): count, total, first and last time.
    let mut units: Vec<(i64, &str, i64, f64, i64, i64)> = Vec::new();
    for c in &conversions {
        if let Some(u) = units.last_mut()
            && u.0 == c.key
            && u.1 == c.unit
        {
            u.2 += 1;
            u.3 += c.value;
            u.5 = u.5.max(c.at);
            continue;
        }
        units.push((c.key, &c.unit, 1, c.value, c.at, c.at));
    }
    for range in chunks(units.len()) {
        let sql = format!(
            "INSERT INTO ev_unit_metrics (metric, unit, conversions, total, first_at, last_at) \
             VALUES {} ON CONFLICT (metric, unit) DO UPDATE SET \
               conversions = ev_unit_metrics.conversions + excluded.conversions, \
               total = ev_unit_metrics.total + excluded.total, \
               first_at = CASE WHEN excluded.first_at < ev_unit_metrics.first_at \
                 THEN excluded.first_at ELSE ev_unit_metrics.first_at END, \
               last_at = CASE WHEN excluded.last_at > ev_unit_metrics.last_at \
                 THEN excluded.last_at ELSE ev_unit_metrics.last_at END",
            values(backend, range.len(), 6)
        );
        let mut q = sqlx::query(&sql);
        for &(metric, unit, count, total, first_at, last_at) in &units[range] {
            q = q
                .bind(metric)
                .bind(unit)
                .bind(count)
                .bind(total)
                .bind(first_at)
                .bind(last_at);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(n)
}
