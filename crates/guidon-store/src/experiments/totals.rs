//! Reading results: per-variant totals with conversions attributed at
//! read time (see the parent module's "Attribution").

use sqlx::{Any, Row, Transaction};

use super::*;
use crate::error::StoreError;
use crate::store::{Backend, Store, finish};

impl Store {
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
        // none is attributed (SUM over no rows is NULL). A unit *converted*
        // when its attributed values sum to more than zero (a conversion
        // without a value counts 1): a purchase refunded in full, or events
        // of value 0, are not a conversion. This is the one definition of
        // "converted" (see the module documentation).
        let sql = format!(
            "SELECT variant, CAST(COUNT(CASE WHEN y > 0 THEN 1 END) AS BIGINT) AS converted, \
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

impl Store {
    /// The metrics of `env` that have conversions, sorted: what a results
    /// query can name. Errors with [`StoreError::UnknownEnv`] for an
    /// unknown environment.
    pub async fn experiment_metrics(&self, env: &str) -> Result<Vec<String>, StoreError> {
        self.revision(env).await?;
        let rows = sqlx::query(
            "SELECT DISTINCT key FROM exp_keys WHERE env = $1 AND kind = 'metric' ORDER BY key",
        )
        .bind(env)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| row.try_get::<String, _>("key").map_err(StoreError::from))
            .collect()
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
