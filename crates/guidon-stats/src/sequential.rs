//! Sequential testing with asymptotic confidence sequences.

use serde::{Deserialize, Serialize};

use crate::error::{StatsError, check_alpha, finite};
use crate::proportion::Interval;
use crate::welch::Difference;

/// GrowthBook's default tuning parameter `N*`: the confidence sequence is
/// tightest when about this many units (both variants together) are in.
pub const DEFAULT_TUNING_PARAMETER: f64 = 5000.0;

/// The mixing parameter ρ for tuning parameter `N*` (Waudby-Smith et al.
/// 2023, eq. 161, two-sided), chosen so that the boundary is tightest at
/// `n = N*`:
///
/// ```text
/// ρ = sqrt( (−2·ln α + ln(1 − 2·ln α)) / N* )
/// ```
pub fn sequential_rho(alpha: f64, tuning_parameter: f64) -> Result<f64, StatsError> {
    check_alpha(alpha)?;
    check_tuning(tuning_parameter)?;
    let ln_alpha = alpha.ln();
    Ok(((-2.0 * ln_alpha + (1.0 - 2.0 * ln_alpha).ln()) / tuning_parameter).sqrt())
}

fn check_tuning(tuning_parameter: f64) -> Result<f64, StatsError> {
    finite("sequential tuning parameter", tuning_parameter)?;
    if tuning_parameter > 0.0 {
        Ok(tuning_parameter)
    } else {
        Err(StatsError::invalid(format!(
            "sequential tuning parameter must be positive, got {tuning_parameter}"
        )))
    }
}

/// An always-valid interval and p-value for one look at the data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SequentialResult {
    /// Point estimate of the effect (unchanged by sequential testing).
    pub estimate: f64,
    /// Its standard error.
    pub std_error: f64,
    /// The `1 − alpha` confidence sequence at the current sample size: covers
    /// the true effect at every look simultaneously with probability ≥ 1 − α.
    pub ci: Interval,
    /// Always-valid p-value: the smallest α whose confidence sequence
    /// excludes 0. Rejecting when it is below α keeps the false-positive rate
    /// at α however often one looks.
    pub p_value: f64,
    /// The mixing parameter ρ derived from `tuning_parameter`.
    pub rho: f64,
    /// The tuning parameter `N*` used.
    pub tuning_parameter: f64,
    /// Units in both variants together, the `n` of the formulas.
    pub units: u64,
}

/// Asymptotic confidence sequence (Waudby-Smith, Arbour, Sinha, Kennedy &
/// Ramdas 2023, "Time-uniform central limit theory and asymptotic confidence
/// sequences", eq. 9; the two-sided form GrowthBook implements).
///
/// With `n` the units in both variants, `SE²` the variance of the estimate
/// and `s² = SE²·n` the per-unit variance:
///
/// ```text
/// half-width = sqrt(s²) · sqrt( 2(nρ² + 1) / (n²ρ²) · ln( sqrt(nρ² + 1) / α ) )
///            = SE · sqrt( 2(nρ² + 1) / (nρ²) · ln( sqrt(nρ² + 1) / α ) )
/// ```
///
/// The p-value inverts that boundary (the paper's eq. 155 reparameterized):
/// `p = min(1, sqrt(nρ² + 1) · exp(−ρ²·n·(estimate/SE)² / (2(nρ² + 1))))`.
pub fn sequential(
    difference: &Difference,
    alpha: f64,
    tuning_parameter: f64,
) -> Result<SequentialResult, StatsError> {
    let rho = sequential_rho(alpha, tuning_parameter)?;
    let estimate = finite("estimate", difference.estimate)?;
    let variance = finite("variance", difference.variance)?;
    if variance < 0.0 {
        return Err(StatsError::invalid("variance must be non-negative"));
    }
    if variance == 0.0 {
        return Err(StatsError::ZeroVariance);
    }
    if difference.units == 0 {
        return Err(StatsError::TooFewUnits {
            what: "a confidence sequence",
            needed: 1,
            got: 0,
        });
    }
    let n = difference.units as f64;
    let std_error = variance.sqrt();
    let n_rho2 = n * rho * rho;
    let half_width =
        std_error * (2.0 * (n_rho2 + 1.0) / n_rho2 * ((n_rho2 + 1.0).sqrt() / alpha).ln()).sqrt();
    let t = estimate / std_error;
    // ln p = ½·ln(nρ² + 1) − ρ²·n·t² / (2(nρ² + 1)), in logs to avoid overflow.
    let ln_p = 0.5 * n_rho2.ln_1p() - rho * rho * n * t * t / (2.0 * (n_rho2 + 1.0));
    let p_value = ln_p.min(0.0).exp();
    Ok(SequentialResult {
        estimate,
        std_error,
        ci: Interval::around(estimate, half_width),
        p_value,
        rho,
        tuning_parameter,
        units: difference.units,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(estimate: f64, variance: f64, units: u64) -> Difference {
        Difference {
            estimate,
            variance,
            df: units as f64,
            units,
        }
    }

    #[test]
    fn rho_matches_the_closed_form() {
        // α = 0.05: −2 ln α = 5.991464547, ln(6.991464547) = 1.944691
        let rho = sequential_rho(0.05, 5000.0).unwrap_or(f64::NAN);
        let expected = ((5.991_464_547_107_98_f64 + 6.991_464_547_107_98_f64.ln()) / 5000.0).sqrt();
        assert!((rho - expected).abs() < 1e-15);
    }

    #[test]
    fn p_value_is_where_the_sequence_touches_zero() {
        // ρ stays the one of the configured α; at α' = p the boundary with
        // that ρ equals |estimate|.
        let d = diff(0.05, 0.0004, 8000);
        let r = sequential(&d, 0.05, 5000.0).ok();
        let (p, rho) = r.map_or((f64::NAN, f64::NAN), |r| (r.p_value, r.rho));
        assert!(p > 0.0 && p < 1.0, "{p}");
        let n_rho2 = 8000.0 * rho * rho;
        let half = 0.02 * (2.0 * (n_rho2 + 1.0) / n_rho2 * ((n_rho2 + 1.0).sqrt() / p).ln()).sqrt();
        assert!((half - 0.05).abs() < 1e-12, "{half}");
    }

    #[test]
    fn significant_exactly_when_the_sequence_excludes_zero() {
        for estimate in [-0.2, -0.09, -0.05, 0.0, 0.03, 0.06, 0.0701, 0.08, 0.5] {
            let r = sequential(&diff(estimate, 0.0004, 8000), 0.05, 5000.0).ok();
            assert!(
                r.is_some_and(|r| (r.p_value < 0.05) == r.ci.excludes_zero()),
                "{r:?}"
            );
        }
    }

    #[test]
    fn wider_than_fixed_horizon() {
        let d = diff(0.0, 1.0, 10_000);
        let r = sequential(&d, 0.05, 5000.0).ok();
        assert!(r.is_some_and(|r| r.ci.upper > 1.96));
        assert!(r.is_some_and(|r| r.p_value == 1.0));
    }

    #[test]
    fn invalid_inputs() {
        assert!(sequential(&diff(0.1, 0.01, 100), 0.05, 0.0).is_err());
        assert!(sequential(&diff(0.1, 0.01, 100), 0.05, f64::NAN).is_err());
        assert!(sequential(&diff(0.1, 0.01, 100), 1.0, 5000.0).is_err());
        assert_eq!(
            sequential(&diff(0.1, 0.0, 100), 0.05, 5000.0),
            Err(StatsError::ZeroVariance)
        );
        assert!(matches!(
            sequential(&diff(0.1, 0.01, 0), 0.05, 5000.0),
            Err(StatsError::TooFewUnits { .. })
        ));
    }

    #[test]
    fn huge_effects_do_not_underflow_into_nan() {
        let r = sequential(&diff(1e3, 1e-6, 1_000_000), 0.05, 5000.0).ok();
        assert!(r.is_some_and(|r| r.p_value == 0.0));
    }
}
