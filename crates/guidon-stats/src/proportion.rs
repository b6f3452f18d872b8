//! Proportions: the Wilson score interval and the pooled two-proportion z-test.

use serde::{Deserialize, Serialize};

use crate::dist::{normal_quantile, normal_sf};
use crate::error::{StatsError, check_alpha};

/// A two-sided interval `[lower, upper]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
}

impl Interval {
    /// `estimate ± half_width`.
    pub fn around(estimate: f64, half_width: f64) -> Self {
        Interval {
            lower: estimate - half_width,
            upper: estimate + half_width,
        }
    }

    /// Whether the interval excludes zero (a significant difference).
    pub fn excludes_zero(&self) -> bool {
        self.lower > 0.0 || self.upper < 0.0
    }
}

/// Wilson score interval for a binomial proportion `successes / trials` at
/// confidence level `1 − alpha` (Wilson 1927; the `method="wilson"` of
/// statsmodels' `proportion_confint`):
///
/// ```text
/// centre = (p̂ + z²/2n) / (1 + z²/n)
/// half   = z / (1 + z²/n) · sqrt(p̂(1 − p̂)/n + z²/4n²),   z = Φ⁻¹(1 − α/2)
/// ```
///
/// Unlike the Wald interval it stays inside `[0, 1]` and is sensible for
/// `p̂ = 0` or `1`. Needs at least one trial.
pub fn wilson(successes: u64, trials: u64, alpha: f64) -> Result<Interval, StatsError> {
    check_alpha(alpha)?;
    if trials == 0 {
        return Err(StatsError::TooFewUnits {
            what: "a Wilson interval",
            needed: 1,
            got: 0,
        });
    }
    if successes > trials {
        return Err(StatsError::invalid(format!(
            "successes ({successes}) exceed trials ({trials})"
        )));
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z = normal_quantile(1.0 - alpha / 2.0)?;
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = z / denominator * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    // At p̂ = 0 (or 1) the bound is exactly 0 (or 1); rounding would leave ~1e-17.
    Ok(Interval {
        lower: if successes == 0 {
            0.0
        } else {
            (centre - half).max(0.0)
        },
        upper: if successes == trials {
            1.0
        } else {
            (centre + half).min(1.0)
        },
    })
}

/// Result of a z-test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ZTest {
    /// The z statistic.
    pub z: f64,
    /// Two-sided p-value `2·(1 − Φ(|z|))`.
    pub p_value: f64,
}

/// Pooled two-proportion z-test of `H0: p_a = p_b`, as statsmodels'
/// `proportions_ztest([successes_a, successes_b], [trials_a, trials_b])`:
///
/// ```text
/// p̄ = (x_a + x_b) / (n_a + n_b)
/// z = (x_a/n_a − x_b/n_b) / sqrt(p̄(1 − p̄)(1/n_a + 1/n_b))
/// ```
///
/// Note the order: `z > 0` when `a` has the higher rate. Errors when either
/// group has no trials or when `p̄` is 0 or 1 (no variance).
pub fn two_proportion_z_test(
    successes_a: u64,
    trials_a: u64,
    successes_b: u64,
    trials_b: u64,
) -> Result<ZTest, StatsError> {
    for (x, n) in [(successes_a, trials_a), (successes_b, trials_b)] {
        if n == 0 {
            return Err(StatsError::TooFewUnits {
                what: "a two-proportion z-test",
                needed: 1,
                got: 0,
            });
        }
        if x > n {
            return Err(StatsError::invalid(format!(
                "successes ({x}) exceed trials ({n})"
            )));
        }
    }
    let (na, nb) = (trials_a as f64, trials_b as f64);
    let pooled = (successes_a as f64 + successes_b as f64) / (na + nb);
    let se = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    if se.is_nan() || se <= 0.0 {
        return Err(StatsError::ZeroVariance);
    }
    let z = (successes_a as f64 / na - successes_b as f64 / nb) / se;
    Ok(ZTest {
        z,
        p_value: (2.0 * normal_sf(z.abs())).min(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_edges() {
        assert!(matches!(
            wilson(0, 0, 0.05),
            Err(StatsError::TooFewUnits { .. })
        ));
        assert!(wilson(3, 2, 0.05).is_err());
        assert!(wilson(1, 2, 0.0).is_err());
        assert!(wilson(1, 2, f64::NAN).is_err());
        let zero = wilson(0, 10, 0.05).ok();
        assert_eq!(zero.map(|i| i.lower), Some(0.0));
        let all = wilson(10, 10, 0.05).ok();
        assert_eq!(all.map(|i| i.upper), Some(1.0));
    }

    #[test]
    fn z_test_edges() {
        assert!(matches!(
            two_proportion_z_test(0, 0, 1, 2),
            Err(StatsError::TooFewUnits { .. })
        ));
        assert_eq!(
            two_proportion_z_test(0, 10, 0, 20),
            Err(StatsError::ZeroVariance)
        );
        assert_eq!(
            two_proportion_z_test(10, 10, 20, 20),
            Err(StatsError::ZeroVariance)
        );
        assert!(two_proportion_z_test(11, 10, 2, 20).is_err());
    }
}
