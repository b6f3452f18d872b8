//! Per-variant aggregates, their moments and the per-variant summary.

use serde::{Deserialize, Serialize};

use crate::error::{StatsError, finite};
use crate::proportion::{Interval, wilson};

/// How a metric's per-unit values are distributed, which decides the
/// variance used by the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// A conversion metric: each unit converted or not. The tests use the
    /// rate `count / units` and the binomial variance `p(1 − p)` (denominator
    /// `n`, as GrowthBook's `ProportionStatistic`).
    #[default]
    Binomial,
    /// A value metric (revenue, duration, count of events, ...). The tests use
    /// the mean `sum / units` and the sample variance with denominator `n − 1`
    /// (as GrowthBook's `SampleMeanStatistic`).
    Continuous,
    /// A ratio of two per-unit values, `Σy / Σx` (revenue per order, say:
    /// y the revenue, x the orders), with x in
    /// [`VariantStats::denominator`]. The tests use the ratio and, by the
    /// delta method, the per-unit variance
    /// `(s_yy − 2R·s_xy + R²·s_xx) / x̄²` (sample moments, `n − 1`), so
    /// that `variance / n` is the ratio's squared standard error (as
    /// GrowthBook's `RatioStatistic`).
    Ratio,
}

/// The per-unit aggregates of one metric in one variant: what a warehouse
/// query returns after grouping the per-unit values by variant.
///
/// For unit `i` with metric value `y_i` (0/1 for a conversion):
/// `units = n`, `count = #{i : unit i converted}`, `sum = Σ y_i`,
/// `sum_squares = Σ y_i²`. [`VariantStats::binomial`] fills `sum` and
/// `sum_squares` for a 0/1 metric.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct VariantStats {
    /// Number of units (users, sessions, ...) exposed to the variant.
    pub units: u64,
    /// Number of those units that converted: their values summed to more
    /// than zero (Guidon's one definition of "converted").
    pub count: u64,
    /// Σ y over the units.
    pub sum: f64,
    /// Σ y² over the units.
    pub sum_squares: f64,
    /// Aggregates of a pre-exposure covariate, which enable CUPED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covariate: Option<Covariate>,
    /// For a [`MetricKind::Ratio`]: the denominator's Σx, Σx² and Σx·y.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denominator: Option<Covariate>,
}

/// Aggregates of a pre-exposure covariate `x_i` (typically the same metric
/// measured before the unit entered the experiment), for CUPED.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Covariate {
    /// Σ x.
    pub sum: f64,
    /// Σ x².
    pub sum_squares: f64,
    /// Σ x·y, the cross products with the metric value.
    pub sum_products: f64,
}

/// The sufficient statistics of one variant that every test works from:
/// number of units, mean of the per-unit value and the variance of that value
/// (not of the mean).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Number of units.
    pub n: u64,
    /// Mean per-unit value.
    pub mean: f64,
    /// Variance of the per-unit value.
    pub variance: f64,
}

impl Moments {
    /// Checked constructor: `mean` finite, `variance` finite and non-negative.
    pub fn new(n: u64, mean: f64, variance: f64) -> Result<Self, StatsError> {
        finite("mean", mean)?;
        finite("variance", variance)?;
        if variance < 0.0 {
            return Err(StatsError::invalid(format!(
                "variance must be non-negative, got {variance}"
            )));
        }
        Ok(Moments { n, mean, variance })
    }

    pub(crate) fn validate(&self) -> Result<(), StatsError> {
        Moments::new(self.n, self.mean, self.variance).map(|_| ())
    }
}

impl VariantStats {
    /// Aggregates of a value metric.
    pub fn new(units: u64, count: u64, sum: f64, sum_squares: f64) -> Self {
        VariantStats {
            units,
            count,
            sum,
            sum_squares,
            covariate: None,
            denominator: None,
        }
    }

    /// Aggregates of a ratio metric `Σy / Σx`: `count` units with y > 0,
    /// Σy, Σy², and the denominator's Σx, Σx², Σxy.
    pub fn ratio(
        units: u64,
        count: u64,
        (sum, sum_squares): (f64, f64),
        (x_sum, x_sum_squares, sum_products): (f64, f64, f64),
    ) -> Self {
        VariantStats {
            denominator: Some(Covariate {
                sum: x_sum,
                sum_squares: x_sum_squares,
                sum_products,
            }),
            ..VariantStats::new(units, count, sum, sum_squares)
        }
    }

    /// Aggregates of a 0/1 conversion metric: `sum = sum_squares = conversions`.
    pub fn binomial(units: u64, conversions: u64) -> Self {
        let c = conversions as f64;
        VariantStats::new(units, conversions, c, c)
    }

    /// Adds pre-exposure covariate aggregates (Σx, Σx², Σxy) for CUPED.
    pub fn with_covariate(self, sum: f64, sum_squares: f64, sum_products: f64) -> Self {
        VariantStats {
            covariate: Some(Covariate {
                sum,
                sum_squares,
                sum_products,
            }),
            ..self
        }
    }

    /// Checks that the aggregates can come from real data: `count ≤ units`,
    /// every sum finite, sums of squares non-negative, all sums zero when there
    /// are no units. (Whether Σy² ≥ (Σy)²/n is checked where a variance is
    /// computed.)
    pub fn validate(&self) -> Result<(), StatsError> {
        if self.count > self.units {
            return Err(StatsError::invalid(format!(
                "count ({}) exceeds units ({})",
                self.count, self.units
            )));
        }
        finite("sum", self.sum)?;
        finite("sum_squares", self.sum_squares)?;
        if self.sum_squares < 0.0 {
            return Err(StatsError::invalid("sum_squares must be non-negative"));
        }
        for c in self.covariate.iter().chain(&self.denominator) {
            finite("covariate sum", c.sum)?;
            finite("covariate sum_squares", c.sum_squares)?;
            finite("covariate sum_products", c.sum_products)?;
            if c.sum_squares < 0.0 {
                return Err(StatsError::invalid(
                    "covariate sum_squares must be non-negative",
                ));
            }
        }
        if self.units == 0 {
            let covariate_zero = self
                .covariate
                .iter()
                .chain(&self.denominator)
                .all(|c| c.sum == 0.0 && c.sum_squares == 0.0 && c.sum_products == 0.0);
            if self.sum != 0.0 || self.sum_squares != 0.0 || !covariate_zero {
                return Err(StatsError::invalid(
                    "a variant with no units must have zero sums",
                ));
            }
        }
        Ok(())
    }

    /// Conversion rate `count / units`, `None` without units.
    pub fn rate(&self) -> Option<f64> {
        (self.units > 0).then(|| self.count as f64 / self.units as f64)
    }

    /// Mean value `sum / units`, `None` without units.
    pub fn mean(&self) -> Option<f64> {
        (self.units > 0).then(|| self.sum / self.units as f64)
    }

    /// Sample variance of the per-unit value, `(Σy² − (Σy)²/n) / (n − 1)`.
    pub fn sample_variance(&self) -> Result<f64, StatsError> {
        self.validate()?;
        sample_variance(self.units, self.sum, self.sum_squares, "a sample variance")
    }

    /// The moments the tests use for a metric of kind `kind` (see
    /// [`MetricKind`]). Needs at least one unit; the tests themselves need two.
    pub fn moments(&self, kind: MetricKind) -> Result<Moments, StatsError> {
        self.validate()?;
        match kind {
            MetricKind::Binomial => {
                if self.units == 0 {
                    return Err(StatsError::TooFewUnits {
                        what: "a conversion rate",
                        needed: 1,
                        got: 0,
                    });
                }
                let p = self.count as f64 / self.units as f64;
                Ok(Moments {
                    n: self.units,
                    mean: p,
                    variance: p * (1.0 - p),
                })
            }
            MetricKind::Continuous => {
                let variance = self.sample_variance()?;
                Ok(Moments {
                    n: self.units,
                    mean: self.sum / self.units as f64,
                    variance,
                })
            }
            MetricKind::Ratio => {
                let Some(x) = &self.denominator else {
                    return Err(StatsError::invalid(
                        "a ratio metric needs the denominator's sums",
                    ));
                };
                let n = self.units;
                let s_yy = self.sample_variance()?;
                let s_xx = sample_variance(n, x.sum, x.sum_squares, "a ratio's denominator")?;
                let s_xy = sample_covariance(n, x.sum, self.sum, x.sum_products, "a ratio")?;
                if x.sum == 0.0 {
                    return Err(StatsError::invalid(
                        "the ratio's denominator sums to zero in a variant",
                    ));
                }
                let ratio = self.sum / x.sum;
                let x_mean = x.sum / n as f64;
                let variance = ((s_yy - 2.0 * ratio * s_xy + ratio * ratio * s_xx)
                    / (x_mean * x_mean))
                    .max(0.0);
                Moments::new(n, ratio, variance)
            }
        }
    }
}

/// Sample covariance `(Σab − Σa·Σb/n) / (n − 1)` from aggregates.
pub(crate) fn sample_covariance(
    n: u64,
    sum_a: f64,
    sum_b: f64,
    sum_ab: f64,
    what: &'static str,
) -> Result<f64, StatsError> {
    if n < 2 {
        return Err(StatsError::TooFewUnits {
            what,
            needed: 2,
            got: n,
        });
    }
    let nf = n as f64;
    let value = (sum_ab - sum_a * sum_b / nf) / (nf - 1.0);
    if value.is_finite() {
        Ok(value)
    } else {
        Err(StatsError::invalid(format!("{what} overflows")))
    }
}

/// Sample variance `(Σa² − (Σa)²/n) / (n − 1)` from aggregates.
///
/// Rounding can make a true zero variance slightly negative; such values are
/// returned as 0. A clearly negative variance means the sums cannot come from
/// real data and is an error.
pub(crate) fn sample_variance(
    n: u64,
    sum: f64,
    sum_squares: f64,
    what: &'static str,
) -> Result<f64, StatsError> {
    let value = sample_covariance(n, sum, sum, sum_squares, what)?;
    if value >= 0.0 {
        return Ok(value);
    }
    // The subtraction's rounding error is ~1e-16 of its larger term.
    let scale = sum_squares.max(sum * sum / n as f64) / (n as f64 - 1.0);
    if -value <= 1e-9 * scale {
        Ok(0.0)
    } else {
        Err(StatsError::invalid(format!(
            "inconsistent sums: the sum of squares is smaller than (sum)²/n ({what})"
        )))
    }
}

/// What the results endpoint shows for one variant of one metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariantSummary {
    /// Number of units.
    pub units: u64,
    /// Number of converted units.
    pub conversions: u64,
    /// Conversion rate `conversions / units`; `None` without units.
    pub rate: Option<f64>,
    /// Wilson score interval of the rate at the analysis' confidence level.
    pub rate_interval: Option<Interval>,
    /// Mean value `sum / units`; `None` without units.
    pub mean: Option<f64>,
    /// Sample variance (denominator `n − 1`) of the value; `None` below two units.
    pub variance: Option<f64>,
    /// For a ratio metric: `Σy / Σx`; `None` otherwise or when Σx is 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// CUPED-adjusted mean, when CUPED was applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjusted_mean: Option<f64>,
    /// CUPED-adjusted variance of the value, when CUPED was applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjusted_variance: Option<f64>,
}

/// Summarizes one variant: units, conversions, rate with its Wilson interval
/// at level `1 − alpha`, mean and sample variance. Fields that need more
/// units than there are are `None`; only invalid input is an error.
pub fn summarize(stats: &VariantStats, alpha: f64) -> Result<VariantSummary, StatsError> {
    stats.validate()?;
    crate::error::check_alpha(alpha)?;
    let rate_interval = if stats.units > 0 {
        Some(wilson(stats.count, stats.units, alpha)?)
    } else {
        None
    };
    let variance = if stats.units >= 2 {
        Some(stats.sample_variance()?)
    } else {
        None
    };
    Ok(VariantSummary {
        units: stats.units,
        conversions: stats.count,
        rate: stats.rate(),
        rate_interval,
        mean: stats.mean(),
        variance,
        ratio: stats
            .denominator
            .filter(|x| x.sum != 0.0)
            .map(|x| stats.sum / x.sum),
        adjusted_mean: None,
        adjusted_variance: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_moments_use_n_denominator() {
        let m = VariantStats::binomial(28, 14).moments(MetricKind::Binomial);
        assert_eq!(
            m,
            Ok(Moments {
                n: 28,
                mean: 0.5,
                variance: 0.25
            })
        );
    }

    #[test]
    fn continuous_moments_use_n_minus_one() {
        // values 1, 2, 3, 4: mean 2.5, sample variance 5/3
        let m = VariantStats::new(4, 4, 10.0, 30.0).moments(MetricKind::Continuous);
        let m = m.unwrap_or(Moments {
            n: 0,
            mean: f64::NAN,
            variance: f64::NAN,
        });
        assert_eq!(m.n, 4);
        assert!((m.mean - 2.5).abs() < 1e-15);
        assert!((m.variance - 5.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn zero_units_are_too_few() {
        let empty = VariantStats::default();
        assert!(matches!(
            empty.moments(MetricKind::Binomial),
            Err(StatsError::TooFewUnits {
                needed: 1,
                got: 0,
                ..
            })
        ));
        assert!(matches!(
            empty.moments(MetricKind::Continuous),
            Err(StatsError::TooFewUnits {
                needed: 2,
                got: 0,
                ..
            })
        ));
        let one = VariantStats::new(1, 1, 3.0, 9.0);
        assert!(matches!(
            one.moments(MetricKind::Continuous),
            Err(StatsError::TooFewUnits {
                needed: 2,
                got: 1,
                ..
            })
        ));
    }

    #[test]
    fn invalid_aggregates_are_rejected() {
        assert!(VariantStats::binomial(10, 11).validate().is_err());
        assert!(VariantStats::new(10, 1, f64::NAN, 1.0).validate().is_err());
        assert!(
            VariantStats::new(10, 1, 1.0, f64::INFINITY)
                .validate()
                .is_err()
        );
        assert!(VariantStats::new(10, 1, 1.0, -1.0).validate().is_err());
        assert!(VariantStats::new(0, 0, 1.0, 1.0).validate().is_err());
        assert!(
            VariantStats::new(10, 1, 1.0, 1.0)
                .with_covariate(f64::NAN, 1.0, 1.0)
                .validate()
                .is_err()
        );
        // Σy² < (Σy)²/n is impossible.
        let bad = VariantStats::new(4, 4, 10.0, 20.0);
        assert!(matches!(
            bad.moments(MetricKind::Continuous),
            Err(StatsError::InvalidInput(_))
        ));
    }

    #[test]
    fn constant_values_have_zero_variance_despite_rounding() {
        // 3 units of 0.1: Σy = 0.30000000000000004, Σy² = 0.030000000000000006
        let v = VariantStats::new(3, 3, 0.1 + 0.1 + 0.1, 0.01 + 0.01 + 0.01);
        let var = v.sample_variance();
        assert!(matches!(var, Ok(x) if x.abs() < 1e-15), "{var:?}");
    }

    #[test]
    fn summary_of_empty_variant_has_no_rate() {
        let s = summarize(&VariantStats::default(), 0.05);
        let s = s.ok();
        assert_eq!(s.as_ref().map(|s| s.rate), Some(None));
        assert_eq!(s.as_ref().map(|s| s.rate_interval), Some(None));
        assert_eq!(s.as_ref().map(|s| s.variance), Some(None));
    }
}
