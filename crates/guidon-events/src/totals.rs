//! Reading results: per-variant totals with conversions attributed at
//! read time (see the parent module's "Attribution").

use sqlx::{Any, Row, Transaction};

use super::*;
use crate::error::EventsError;
use crate::store::{Backend, EventStore, finish};

impl EventStore {
    /// Per-variant totals of one flag for one metric, with conversions
    /// attributed as the module documentation says. Units exposed to more
    /// than one variant, or to a variant not asked for, are only counted.
    /// An environment without events for the flag or the metric gives zero
    /// totals, not an error. Folds every logged event first.
    pub async fn experiment_totals(
        &self,
        env: &str,
        query: &MetricQuery<'_>,
    ) -> Result<ExperimentTotals, EventsError> {
        let bounds = Bounds::of(query.window_ms, query.from_ms, query.until_ms)?;
        if let Some(cap) = query.cap
            && !(cap.is_finite() && cap > 0.0)
        {
            return Err(EventsError::InvalidQuery(format!(
                "a cap must be a positive number, got {cap}"
            )));
        }
        if let Some(pre) = query.pre_window_ms
            && !(1..NO_WINDOW_MS).contains(&pre)
        {
            return Err(EventsError::InvalidQuery(format!(
                "a pre-exposure window must be between 1 and {NO_WINDOW_MS} ms, got {pre}"
            )));
        }
        self.settle().await?;
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
                    pre: None,
                })
                .collect(),
            multiple_exposure_units: 0,
            other_variant_units: 0,
        };
        let mut tx = self.read_transaction().await?;
        let result = self.totals_in(&mut tx, env, query, bounds, totals).await;
        finish(tx, result).await
    }

    /// The `percentile` (0–100) of the per-unit values of `query`'s metric
    /// among the units that converted, all variants together (nearest
    /// rank); `None` when no unit converted. For a metric capped at a
    /// percentile.
    pub async fn experiment_unit_percentile(
        &self,
        env: &str,
        query: &MetricQuery<'_>,
        percentile: f64,
    ) -> Result<Option<f64>, EventsError> {
        if !(percentile.is_finite() && percentile > 0.0 && percentile < 100.0) {
            return Err(EventsError::InvalidQuery(format!(
                "a percentile must be strictly between 0 and 100, got {percentile}"
            )));
        }
        let bounds = Bounds::of(query.window_ms, query.from_ms, query.until_ms)?;
        self.settle().await?;
        let mut tx = self.read_transaction().await?;
        let result = async {
            let (Some(flag), Some(metric)) = (
                key_id(&mut tx, env, "flag", query.flag, "").await?,
                key_id(&mut tx, env, "metric", query.metric, query.unit_attribute).await?,
            ) else {
                return Ok(None);
            };
            let inner = attributed(self.backend(), 2);
            let count_sql = format!("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ({inner}) a WHERE y > 0");
            let row = bounds
                .bind(sqlx::query(&count_sql).bind(flag).bind(metric))
                .fetch_one(&mut *tx)
                .await?;
            let n = to_u64(row.try_get("n")?);
            if n == 0 {
                return Ok(None);
            }
            // Nearest rank: the smallest value with at least p% of the
            // values at or below it.
            let rank = ((percentile / 100.0) * n as f64).ceil().max(1.0) as u64;
            let offset = i64::try_from(rank - 1).unwrap_or(i64::MAX);
            let value_sql = format!(
                "SELECT CAST(y AS DOUBLE PRECISION) AS y FROM ({inner}) a WHERE y > 0 ORDER BY y LIMIT 1 OFFSET {offset}"
            );
            let row = bounds
                .bind(sqlx::query(&value_sql).bind(flag).bind(metric))
                .fetch_optional(&mut *tx)
                .await?;
            Ok(match row {
                Some(row) => Some(row.try_get::<f64, _>("y")?),
                None => None,
            })
        }
        .await;
        finish(tx, result).await
    }

    /// Per-variant sums of a ratio `y / x` of two metrics' per-unit values
    /// over the units first exposed (only) to each of `variants`.
    #[allow(clippy::too_many_arguments)]
    pub async fn experiment_ratio_totals(
        &self,
        env: &str,
        flag: &str,
        variants: &[&str],
        unit_attribute: &str,
        (window_ms, from_ms, until_ms): (Option<i64>, Option<i64>, Option<i64>),
        numerator: RatioPart<'_>,
        denominator: RatioPart<'_>,
    ) -> Result<Vec<RatioTotals>, EventsError> {
        let bounds = Bounds::of(window_ms, from_ms, until_ms)?;
        self.settle().await?;
        let mut out: Vec<RatioTotals> = variants
            .iter()
            .map(|v| RatioTotals {
                variant: (*v).to_owned(),
                units: 0,
                converted: 0,
                sum_y: 0.0,
                sum_y_squares: 0.0,
                sum_x: 0.0,
                sum_x_squares: 0.0,
                sum_products: 0.0,
            })
            .collect();
        let mut tx = self.read_transaction().await?;
        let result = async {
            let Some(flag_id) = key_id(&mut tx, env, "flag", flag, "").await? else {
                return Ok(out);
            };
            // Units per variant, as experiment_totals counts them.
            let units_sql = format!(
                "SELECT variant, CAST(COUNT(*) AS BIGINT) AS units FROM ev_exposures e \
                 WHERE e.flag = $1 AND e.multiple = 0 AND {} GROUP BY variant",
                exposure_bounds()
            );
            // $2 is unused here: bind something so the numbering holds.
            let rows = bounds
                .bind(sqlx::query(&units_sql).bind(flag_id).bind(0_i64))
                .fetch_all(&mut *tx)
                .await?;
            for row in &rows {
                let variant: String = row.try_get("variant")?;
                if let Some(v) = out.iter_mut().find(|v| v.variant == variant) {
                    v.units = to_u64(row.try_get("units")?);
                }
            }
            let num = key_id(&mut tx, env, "metric", numerator.metric, unit_attribute).await?;
            let den = key_id(&mut tx, env, "metric", denominator.metric, unit_attribute).await?;
            // A metric never sent has the id -1: its part is zero everywhere.
            let (num, den) = (num.unwrap_or(-1), den.unwrap_or(-1));
            // Caps are bound after the six parameters, only those used.
            let mut caps: Vec<f64> = Vec::new();
            let mut value = |part: &RatioPart<'_>| -> String {
                match (part.converted, part.cap) {
                    (true, _) => "CASE WHEN y > 0 THEN 1.0 ELSE 0.0 END".to_owned(),
                    (false, Some(cap)) => {
                        caps.push(cap);
                        let index = 6 + caps.len();
                        format!("CASE WHEN y > ${index} THEN ${index} ELSE y END")
                    }
                    (false, None) => "y".to_owned(),
                }
            };
            let va = value(&numerator);
            let vb = value(&denominator);
            let inner_num = attributed(self.backend(), 2);
            let inner_den = attributed(self.backend(), 6);
            let sql = format!(
                "SELECT variant, \
                   CAST(COUNT(CASE WHEN ya > 0 THEN 1 END) AS BIGINT) AS converted, \
                   CAST(COALESCE(SUM(ya), 0) AS DOUBLE PRECISION) AS sy, \
                   CAST(COALESCE(SUM(ya * ya), 0) AS DOUBLE PRECISION) AS syy, \
                   CAST(COALESCE(SUM(yb), 0) AS DOUBLE PRECISION) AS sx, \
                   CAST(COALESCE(SUM(yb * yb), 0) AS DOUBLE PRECISION) AS sxx, \
                   CAST(COALESCE(SUM(ya * yb), 0) AS DOUBLE PRECISION) AS sxy \
                 FROM (SELECT variant, unit, SUM(ya) AS ya, SUM(yb) AS yb FROM ( \
                     SELECT variant, unit, {va} AS ya, 0.0 AS yb FROM ({inner_num}) a WHERE y IS NOT NULL \
                     UNION ALL \
                     SELECT variant, unit, 0.0 AS ya, {vb} AS yb FROM ({inner_den}) b WHERE y IS NOT NULL \
                   ) parts GROUP BY variant, unit) per_unit \
                 GROUP BY variant",
            );
            let mut q = bounds
                .bind(sqlx::query(&sql).bind(flag_id).bind(num))
                .bind(den);
            for cap in caps {
                q = q.bind(cap);
            }
            let rows = q.fetch_all(&mut *tx).await?;
            for row in &rows {
                let variant: String = row.try_get("variant")?;
                if let Some(v) = out.iter_mut().find(|v| v.variant == variant) {
                    v.converted = to_u64(row.try_get("converted")?);
                    v.sum_y = row.try_get("sy")?;
                    v.sum_y_squares = row.try_get("syy")?;
                    v.sum_x = row.try_get("sx")?;
                    v.sum_x_squares = row.try_get("sxx")?;
                    v.sum_products = row.try_get("sxy")?;
                }
            }
            Ok(out)
        }
        .await;
        finish(tx, result).await
    }

    /// A read transaction in which every query sees the same events
    /// (REPEATABLE READ in PostgreSQL; SQLite's are snapshots).
    async fn read_transaction(&self) -> Result<Transaction<'static, Any>, EventsError> {
        let mut tx = self.pool().begin().await?;
        let setup: &[&str] = match self.backend() {
            // The pool's connections read through a memory map already.
            Backend::Sqlite => &[],
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
        Ok(tx)
    }

    async fn totals_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        env: &str,
        query: &MetricQuery<'_>,
        bounds: Bounds,
        mut totals: ExperimentTotals,
    ) -> Result<ExperimentTotals, EventsError> {
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
        let first = query.variants.len() + 2;
        sql.push_str(&format!(
            " FROM ev_exposures e WHERE flag = $1 AND e.first_at >= ${first} AND e.first_at <= ${}",
            first + 1
        ));
        let mut q = sqlx::query(&sql).bind(flag);
        for v in query.variants {
            q = q.bind(*v);
        }
        let q = q.bind(bounds.from).bind(bounds.until);
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
        // A unit *converted* when its attributed values sum to more than
        // zero (a conversion without a value counts 1): a purchase refunded
        // in full, or events of value 0, are not a conversion. This is the
        // one definition of "converted" (see the module documentation).
        // A cap bounds each unit's value in the sums, not whether it
        // converted.
        let mut next = 6;
        let capped = |v: &str, index: Option<usize>| match index {
            Some(i) => format!("(CASE WHEN {v} > ${i} THEN ${i} ELSE {v} END)"),
            None => v.to_owned(),
        };
        let cap_index = query.cap.map(|_| {
            next += 1;
            next - 1
        });
        let pre_index = query.pre_window_ms.map(|_| {
            next += 1;
            next - 1
        });
        let inner = attributed_with_pre(self.backend(), 2, pre_index);
        let yc = capped("y", cap_index);
        let mut columns = format!(
            "CAST(COUNT(CASE WHEN y > 0 THEN 1 END) AS BIGINT) AS converted, \
             CAST(COALESCE(SUM({yc}), 0) AS DOUBLE PRECISION) AS total, \
             CAST(COALESCE(SUM({yc} * {yc}), 0) AS DOUBLE PRECISION) AS total_squares"
        );
        if pre_index.is_some() {
            // The covariate, as a value (capped like y) and as converted
            // or not, with its cross products with y.
            let xc = capped("COALESCE(x, 0)", cap_index);
            let y0 = capped("COALESCE(y, 0)", cap_index);
            columns.push_str(&format!(
                ", CAST(COALESCE(SUM({xc}), 0) AS DOUBLE PRECISION) AS pre_total, \
                 CAST(COALESCE(SUM({xc} * {xc}), 0) AS DOUBLE PRECISION) AS pre_squares, \
                 CAST(COALESCE(SUM({xc} * {y0}), 0) AS DOUBLE PRECISION) AS pre_products, \
                 CAST(COUNT(CASE WHEN x > 0 THEN 1 END) AS BIGINT) AS pre_converted, \
                 CAST(COUNT(CASE WHEN x > 0 AND y > 0 THEN 1 END) AS BIGINT) AS pre_both"
            ));
        }
        let sql = format!("SELECT variant, {columns} FROM ({inner}) a GROUP BY variant");
        let mut q = bounds.bind(sqlx::query(&sql).bind(flag).bind(metric));
        if let Some(cap) = query.cap {
            q = q.bind(cap);
        }
        if let Some(pre) = query.pre_window_ms {
            q = q.bind(pre);
        }
        let rows = q.fetch_all(&mut **tx).await?;
        for row in &rows {
            let variant: String = row.try_get("variant")?;
            if let Some(v) = totals.variants.iter_mut().find(|v| v.variant == variant) {
                v.converted = to_u64(row.try_get("converted")?);
                v.sum = row.try_get("total")?;
                v.sum_squares = row.try_get("total_squares")?;
                if pre_index.is_some() {
                    v.pre = Some(PreExposure {
                        sum: row.try_get("pre_total")?,
                        sum_squares: row.try_get("pre_squares")?,
                        sum_products: row.try_get("pre_products")?,
                        converted: to_u64(row.try_get("pre_converted")?),
                        converted_both: to_u64(row.try_get("pre_both")?),
                    });
                }
            }
        }
        if query.pre_window_ms.is_some() {
            for v in &mut totals.variants {
                v.pre.get_or_insert(PreExposure::default());
            }
        }
        Ok(totals)
    }
}

impl EventStore {
    /// The metrics of `env` that have conversions, sorted: what a results
    /// query can name (none for an environment without events). Their
    /// names are stored when a batch is acknowledged, folded or not.
    pub async fn experiment_metrics(&self, env: &str) -> Result<Vec<String>, EventsError> {
        let rows = sqlx::query(
            "SELECT DISTINCT key FROM ev_keys WHERE env = $1 AND kind = 'metric' ORDER BY key",
        )
        .bind(env)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| row.try_get::<String, _>("key").map_err(EventsError::from))
            .collect()
    }
}

/// A query's time bounds as bound parameters `$3` (window), `$4`
/// (until) and `$5` (from), each with a value that bounds nothing when
/// not given.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    window: i64,
    until: i64,
    from: i64,
}

impl Bounds {
    fn of(
        window_ms: Option<i64>,
        from_ms: Option<i64>,
        until_ms: Option<i64>,
    ) -> Result<Bounds, EventsError> {
        let window = match window_ms {
            None => NO_WINDOW_MS,
            Some(w) if (0..NO_WINDOW_MS).contains(&w) => w,
            Some(w) => {
                return Err(EventsError::InvalidQuery(format!(
                    "a conversion window must be between 0 and {NO_WINDOW_MS} ms, got {w}"
                )));
            }
        };
        let from = from_ms.unwrap_or(-NO_WINDOW_MS);
        let until = until_ms.unwrap_or(2 * NO_WINDOW_MS);
        if until < from {
            return Err(EventsError::InvalidQuery(format!(
                "the end ({until} ms) is before the start ({from} ms)"
            )));
        }
        Ok(Bounds {
            window,
            until,
            from,
        })
    }

    fn bind<'q>(
        &self,
        q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        q.bind(self.window).bind(self.until).bind(self.from)
    }
}

/// The exposures inside the bounds (`$4` until, `$5` from).
fn exposure_bounds() -> &'static str {
    "e.first_at >= $5 AND e.first_at <= $4"
}

/// Per exposed unit with conversions of a metric: `(variant, unit, y)`,
/// `y` the sum of its attributed conversion values, NULL when none is
/// attributed (SUM over no rows is NULL). Parameters: `$1` the flag's id,
/// `$metric` the metric's id, `$3`–`$5` the [`Bounds`].
///
/// A pass over the units that converted at all, each joined to its
/// exposure. The per-unit aggregate decides when all of a unit's
/// conversions are inside `[t₀, min(t₀ + W, until)]` or all outside;
/// otherwise its conversions are read.
fn attributed(backend: Backend, metric: usize) -> String {
    attributed_with_pre(backend, metric, None)
}

/// [`attributed`], and with `pre` (the index of a bound window `P` in
/// milliseconds) a column `x`: the sum of the unit's conversion values in
/// `[t₀ − P, t₀)`, before its first exposure (NULL when none), CUPED's
/// covariate.
fn attributed_with_pre(backend: Backend, metric: usize, pre: Option<usize>) -> String {
    let upper = "(CASE WHEN e.first_at + $3 < $4 THEN e.first_at + $3 ELSE $4 END)";
    let inside = format!("m.first_at >= e.first_at AND m.last_at <= {upper}");
    let outside = format!("m.last_at < e.first_at OR m.first_at > {upper}");
    let straddling = format!(
        "(SELECT SUM(c.value) FROM ev_conversions c WHERE c.metric = ${metric} \
         AND c.unit = e.unit AND c.at >= e.first_at AND c.at <= {upper})"
    );
    // SQLite: CROSS JOIN keeps the converting units as the outer loop
    // (fewer than the exposed ones); LIMIT -1 (OFFSET 0 in PostgreSQL)
    // keeps the inner query from being flattened into the outer, which
    // would compute `y` once per use.
    let (join, keep_apart) = match backend {
        Backend::Sqlite => ("CROSS JOIN", "LIMIT -1"),
        Backend::Postgres => ("JOIN", "OFFSET 0"),
    };
    let x = match pre {
        None => String::new(),
        Some(p) => {
            let lower = format!("e.first_at - ${p}");
            format!(
                ", CASE WHEN m.first_at >= {lower} AND m.last_at < e.first_at THEN m.total \
                   WHEN m.last_at < {lower} OR m.first_at >= e.first_at THEN NULL \
                   ELSE (SELECT SUM(c.value) FROM ev_conversions c WHERE c.metric = ${metric} \
                     AND c.unit = e.unit AND c.at >= {lower} AND c.at < e.first_at) END AS x"
            )
        }
    };
    format!(
        "SELECT e.variant AS variant, e.unit AS unit, \
            CASE WHEN {inside} THEN m.total WHEN {outside} THEN NULL ELSE {straddling} END AS y{x} \
         FROM ev_unit_metrics m {join} ev_exposures e ON e.flag = $1 AND e.unit = m.unit \
         WHERE m.metric = ${metric} AND e.multiple = 0 AND {} {keep_apart}",
        exposure_bounds()
    )
}

async fn key_id(
    conn: &mut sqlx::AnyConnection,
    env: &str,
    kind: &str,
    key: &str,
    attr: &str,
) -> Result<Option<i64>, EventsError> {
    let row = sqlx::query(
        "SELECT id FROM ev_keys WHERE env = $1 AND kind = $2 AND key = $3 AND attr = $4",
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
