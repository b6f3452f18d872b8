//! Sample-ratio mismatch: are units split the way the weights say?

use serde::Serialize;

use crate::dist::chi_square_sf;
use crate::error::StatsError;

/// A mismatch is flagged when the p-value is below this (GrowthBook's default
/// SRM threshold). With many experiments watched continuously, a stricter
/// threshold than 0.05 keeps false alarms rare.
pub const SRM_P_THRESHOLD: f64 = 0.001;

/// A mismatch is only flagged when every variant's expected number of units
/// is at least this. Below, the chi-square approximation of Pearson's
/// statistic is unreliable and early traffic is too noisy to act on.
///
/// The rule is on *expected* counts (not observed ones) on purpose: the
/// approximation's validity depends on the expected counts, and a variant
/// that receives no traffic at all — the most blatant mismatch — must still
/// be flagged.
pub const SRM_MIN_EXPECTED: f64 = 8.0;

/// Result of the sample-ratio-mismatch check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SrmResult {
    /// Units observed per variant.
    pub observed: Vec<u64>,
    /// Units expected per variant: `total · weight / Σ weights`.
    pub expected: Vec<f64>,
    /// Pearson's statistic `Σ (observed − expected)² / expected`.
    pub chi_square: f64,
    /// `variants − 1`.
    pub degrees_of_freedom: u64,
    /// `P(χ²_df ≥ chi_square)`; 1 when there are no units yet.
    pub p_value: f64,
    /// Whether every expected count reaches [`SRM_MIN_EXPECTED`].
    pub enough_data: bool,
    /// Flagged: `enough_data && p_value < SRM_P_THRESHOLD`.
    pub mismatch: bool,
}

/// Pearson chi-square goodness-of-fit test of the observed units per variant
/// against the configured traffic weights (any positive scale: 50/50, 1/1
/// and 0.5/0.5 are the same split), as GrowthBook's `check_srm` and
/// `scipy.stats.chisquare(observed, expected)`.
///
/// Errors: [`StatsError::WeightsMismatch`] when the lengths differ;
/// [`StatsError::InvalidInput`] with fewer than two variants or a weight that
/// is not finite and positive (leave a variant that gets no traffic out).
pub fn srm(observed: &[u64], weights: &[f64]) -> Result<SrmResult, StatsError> {
    if observed.len() != weights.len() {
        return Err(StatsError::WeightsMismatch {
            variants: observed.len(),
            weights: weights.len(),
        });
    }
    if observed.len() < 2 {
        return Err(StatsError::invalid(
            "a sample-ratio check needs at least two variants",
        ));
    }
    if let Some(w) = weights.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
        return Err(StatsError::invalid(format!(
            "weights must be finite and positive, got {w}"
        )));
    }
    let total_weight: f64 = weights.iter().sum();
    if !total_weight.is_finite() {
        return Err(StatsError::invalid("the weights' sum overflows"));
    }
    let total: f64 = observed.iter().map(|&o| o as f64).sum();
    let expected: Vec<f64> = weights.iter().map(|w| total * w / total_weight).collect();
    let degrees_of_freedom = observed.len() as u64 - 1;
    if total == 0.0 {
        return Ok(SrmResult {
            observed: observed.to_vec(),
            expected,
            chi_square: 0.0,
            degrees_of_freedom,
            p_value: 1.0,
            enough_data: false,
            mismatch: false,
        });
    }
    let chi_square: f64 = observed
        .iter()
        .zip(&expected)
        .map(|(&o, &e)| (o as f64 - e).powi(2) / e)
        .sum();
    let p_value = chi_square_sf(chi_square, degrees_of_freedom as f64)?;
    let enough_data = expected.iter().all(|&e| e >= SRM_MIN_EXPECTED);
    Ok(SrmResult {
        observed: observed.to_vec(),
        expected,
        chi_square,
        degrees_of_freedom,
        p_value,
        enough_data,
        mismatch: enough_data && p_value < SRM_P_THRESHOLD,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors() {
        assert_eq!(
            srm(&[1, 2], &[1.0]),
            Err(StatsError::WeightsMismatch {
                variants: 2,
                weights: 1
            })
        );
        assert!(srm(&[1], &[1.0]).is_err());
        assert!(srm(&[], &[]).is_err());
        assert!(srm(&[1, 2], &[1.0, 0.0]).is_err());
        assert!(srm(&[1, 2], &[1.0, -1.0]).is_err());
        assert!(srm(&[1, 2], &[1.0, f64::NAN]).is_err());
        assert!(srm(&[1, 2], &[f64::MAX, f64::MAX]).is_err());
    }

    #[test]
    fn no_units_is_no_mismatch() {
        let r = srm(&[0, 0, 0], &[1.0, 1.0, 1.0]).ok();
        assert!(r.is_some_and(|r| r.p_value == 1.0 && !r.mismatch && !r.enough_data));
    }

    #[test]
    fn small_samples_are_not_flagged() {
        // 0 vs 14 is extreme (p ≈ 0.0002) but expected 7 < 8.
        let r = srm(&[0, 14], &[1.0, 1.0]).ok();
        assert!(r.as_ref().is_some_and(|r| r.p_value < SRM_P_THRESHOLD));
        assert!(r.is_some_and(|r| !r.enough_data && !r.mismatch));
    }

    #[test]
    fn a_variant_without_traffic_is_flagged() {
        let r = srm(&[0, 100], &[1.0, 1.0]).ok();
        assert!(r.is_some_and(|r| r.enough_data && r.mismatch));
    }

    #[test]
    fn weights_scale_does_not_matter() {
        let a = srm(&[480, 520], &[50.0, 50.0]).ok();
        let b = srm(&[480, 520], &[0.5, 0.5]).ok();
        assert_eq!(a.map(|r| r.p_value), b.map(|r| r.p_value));
    }
}
