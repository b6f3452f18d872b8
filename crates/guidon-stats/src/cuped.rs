//! CUPED: variance reduction with a pre-exposure covariate.

use serde::{Deserialize, Serialize};

use crate::error::StatsError;
use crate::summary::{Covariate, Moments, VariantStats, sample_covariance, sample_variance};

/// The regression coefficient shared by all variants.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cuped {
    /// θ = Cov(x, y) / Var(x), pooled over every unit of every variant.
    pub theta: f64,
    /// Mean covariate x̄ over every unit of every variant.
    pub covariate_mean: f64,
}

fn covariate_of(stats: &VariantStats) -> Result<Covariate, StatsError> {
    stats
        .covariate
        .ok_or_else(|| StatsError::invalid("CUPED needs covariate sums for every variant"))
}

/// Estimates CUPED's θ from the per-variant aggregates (Deng, Xu, Kohavi &
/// Walker 2013, "Improving the sensitivity of online controlled experiments
/// by utilizing pre-experiment data").
///
/// All units of all variants are pooled, as GrowthBook's `compute_theta`
/// pools control and treatment: with `N = Σn`, `Sx = Σx`, `Sy = Σy` over
/// every unit,
///
/// ```text
/// θ = (Σxy − Sx·Sy/N) / (Σx² − Sx²/N)
/// ```
///
/// Pooling is valid because randomization makes x independent of the
/// assignment; it gives every variant the same θ, so the adjustment cannot
/// create a difference. A constant covariate carries no information: θ is
/// then 0 (no adjustment). Needs every variant to carry a [`Covariate`] and
/// at least two units in total.
pub fn cuped(variants: &[VariantStats]) -> Result<Cuped, StatsError> {
    let (mut n, mut sx, mut sy, mut sxx, mut sxy) = (0_u64, 0.0, 0.0, 0.0, 0.0);
    for v in variants {
        v.validate()?;
        let c = covariate_of(v)?;
        n = n.saturating_add(v.units);
        sx += c.sum;
        sy += v.sum;
        sxx += c.sum_squares;
        sxy += c.sum_products;
    }
    let var_x = sample_variance(n, sx, sxx, "CUPED's theta")?;
    let cov_xy = sample_covariance(n, sx, sy, sxy, "CUPED's theta")?;
    let theta = if var_x > 0.0 { cov_xy / var_x } else { 0.0 };
    if !theta.is_finite() {
        return Err(StatsError::invalid("CUPED's theta overflows"));
    }
    Ok(Cuped {
        theta,
        covariate_mean: sx / n as f64,
    })
}

impl Cuped {
    /// The moments of the adjusted per-unit value `y − θ·(x − x̄)` in one
    /// variant, x̄ being the pooled covariate mean:
    ///
    /// ```text
    /// mean     = ȳ − θ·(x̄_v − x̄)
    /// variance = Var(y) + θ²·Var(x) − 2θ·Cov(x, y)     (sample, n − 1)
    /// ```
    ///
    /// Centring on the pooled x̄ keeps the adjusted mean on the metric's
    /// scale, so relative lifts of adjusted means stay meaningful. Needs two
    /// units in the variant.
    pub fn adjust(&self, stats: &VariantStats) -> Result<Moments, StatsError> {
        stats.validate()?;
        let c = covariate_of(stats)?;
        let what = "a CUPED-adjusted variance";
        let var_y = sample_variance(stats.units, stats.sum, stats.sum_squares, what)?;
        let var_x = sample_variance(stats.units, c.sum, c.sum_squares, what)?;
        let cov_xy = sample_covariance(stats.units, c.sum, stats.sum, c.sum_products, what)?;
        let theta = self.theta;
        let n = stats.units as f64;
        let mean = stats.sum / n - theta * (c.sum / n - self.covariate_mean);
        let variance = var_y + theta * theta * var_x - 2.0 * theta * cov_xy;
        // It is the variance of the adjusted values, so ≥ 0 but for rounding;
        // far below 0 the cross products are inconsistent (|Cov| > sd·sd).
        let scale = var_y + theta * theta * var_x;
        let variance = if variance >= 0.0 {
            variance
        } else if -variance <= 1e-9 * scale {
            0.0
        } else {
            return Err(StatsError::invalid(
                "inconsistent covariate sums: |Cov(x, y)| exceeds sd(x)·sd(y)",
            ));
        };
        Moments::new(stats.units, mean, variance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Aggregates of explicit (x, y) pairs.
    fn stats(pairs: &[(f64, f64)]) -> VariantStats {
        let n = pairs.len() as u64;
        let sy: f64 = pairs.iter().map(|p| p.1).sum();
        let syy: f64 = pairs.iter().map(|p| p.1 * p.1).sum();
        let sx: f64 = pairs.iter().map(|p| p.0).sum();
        let sxx: f64 = pairs.iter().map(|p| p.0 * p.0).sum();
        let sxy: f64 = pairs.iter().map(|p| p.0 * p.1).sum();
        let count = pairs.iter().filter(|p| p.1 > 0.0).count() as u64;
        VariantStats::new(n, count, sy, syy).with_covariate(sx, sxx, sxy)
    }

    #[test]
    fn perfectly_predicted_metric_has_zero_adjusted_variance() {
        // y = 2x + 1 in both variants: θ = 2 and nothing is left.
        let a = stats(&[(1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]);
        let b = stats(&[(2.0, 5.0), (4.0, 9.0)]);
        let c = cuped(&[a, b]).ok();
        assert!(c.is_some_and(|c| (c.theta - 2.0).abs() < 1e-12));
        let adj = c.map(|c| c.adjust(&a));
        assert!(
            matches!(adj, Some(Ok(m)) if m.variance.abs() < 1e-9),
            "{adj:?}"
        );
    }

    #[test]
    fn constant_covariate_means_no_adjustment() {
        let a = stats(&[(1.0, 3.0), (1.0, 5.0), (1.0, 4.0)]);
        let b = stats(&[(1.0, 2.0), (1.0, 9.0)]);
        let c = cuped(&[a, b]).ok();
        assert_eq!(c.map(|c| c.theta), Some(0.0));
        let adj = c.map(|c| c.adjust(&a));
        assert!(
            matches!(adj, Some(Ok(m)) if (m.mean - 4.0).abs() < 1e-12 && (m.variance - 1.0).abs() < 1e-12)
        );
    }

    #[test]
    fn missing_covariate_or_units() {
        let a = stats(&[(1.0, 3.0), (2.0, 5.0)]);
        let plain = VariantStats::binomial(10, 3);
        assert!(matches!(
            cuped(&[a, plain]),
            Err(StatsError::InvalidInput(_))
        ));
        assert!(matches!(cuped(&[]), Err(StatsError::TooFewUnits { .. })));
        let one = stats(&[(1.0, 3.0)]);
        let c = cuped(&[a, one]).ok();
        assert!(matches!(
            c.map(|c| c.adjust(&one)),
            Some(Err(StatsError::TooFewUnits { .. }))
        ));
    }
}
