//! Multiple-testing corrections.

use serde::{Deserialize, Serialize};

use crate::error::StatsError;

/// Which correction [`crate::analyze`] applies to the p-values of the
/// treatments of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Correction {
    /// No correction.
    #[default]
    None,
    /// Holm–Bonferroni: controls the family-wise error rate.
    Holm,
    /// Benjamini–Hochberg: controls the false discovery rate.
    BenjaminiHochberg,
}

impl Correction {
    /// Adjusted p-values in the input order (`None` returns them unchanged).
    pub fn apply(self, p_values: &[f64]) -> Result<Vec<f64>, StatsError> {
        match self {
            Correction::None => {
                check(p_values)?;
                Ok(p_values.to_vec())
            }
            Correction::Holm => holm(p_values),
            Correction::BenjaminiHochberg => benjamini_hochberg(p_values),
        }
    }
}

fn check(p_values: &[f64]) -> Result<(), StatsError> {
    match p_values.iter().find(|p| !(0.0..=1.0).contains(*p)) {
        Some(p) => Err(StatsError::invalid(format!(
            "p-values must be in [0, 1], got {p}"
        ))),
        None => Ok(()),
    }
}

/// Indices of `p_values` in increasing order of p (stable for ties).
fn ascending(p_values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p_values.len()).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    order
}

/// Holm–Bonferroni step-down adjusted p-values (Holm 1979; statsmodels
/// `multipletests(method="holm")`): with `p₍₁₎ ≤ … ≤ p₍ₘ₎`,
///
/// ```text
/// adj₍ᵢ₎ = min(1, max_{j ≤ i} (m − j + 1)·p₍ⱼ₎)
/// ```
///
/// Monotone in the rank and capped at 1; returned in the input order. An
/// empty input gives an empty output; a value outside `[0, 1]` is an error.
pub fn holm(p_values: &[f64]) -> Result<Vec<f64>, StatsError> {
    check(p_values)?;
    let m = p_values.len();
    let mut adjusted = vec![0.0; m];
    let mut running_max = 0.0_f64;
    for (rank, &i) in ascending(p_values).iter().enumerate() {
        let value = ((m - rank) as f64 * p_values[i]).min(1.0);
        running_max = running_max.max(value);
        adjusted[i] = running_max;
    }
    Ok(adjusted)
}

/// Benjamini–Hochberg step-up adjusted p-values ("q-values"; Benjamini &
/// Hochberg 1995; statsmodels `multipletests(method="fdr_bh")`): with
/// `p₍₁₎ ≤ … ≤ p₍ₘ₎`,
///
/// ```text
/// adj₍ᵢ₎ = min(1, min_{j ≥ i} m·p₍ⱼ₎ / j)
/// ```
///
/// Monotone in the rank and capped at 1; returned in the input order. An
/// empty input gives an empty output; a value outside `[0, 1]` is an error.
pub fn benjamini_hochberg(p_values: &[f64]) -> Result<Vec<f64>, StatsError> {
    check(p_values)?;
    let m = p_values.len();
    let mut adjusted = vec![0.0; m];
    let mut running_min = 1.0_f64;
    for (rank, &i) in ascending(p_values).iter().enumerate().rev() {
        let value = m as f64 * p_values[i] / (rank + 1) as f64;
        running_min = running_min.min(value);
        adjusted[i] = running_min;
    }
    Ok(adjusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_single() {
        assert_eq!(holm(&[]), Ok(vec![]));
        assert_eq!(benjamini_hochberg(&[]), Ok(vec![]));
        assert_eq!(holm(&[0.3]), Ok(vec![0.3]));
        assert_eq!(benjamini_hochberg(&[0.3]), Ok(vec![0.3]));
    }

    #[test]
    fn invalid_values() {
        assert!(holm(&[0.1, f64::NAN]).is_err());
        assert!(benjamini_hochberg(&[0.1, 1.5]).is_err());
        assert!(Correction::None.apply(&[-0.1]).is_err());
    }

    #[test]
    fn ties_get_equal_adjustments() {
        assert_eq!(holm(&[0.01, 0.01]), Ok(vec![0.02, 0.02]));
        assert_eq!(benjamini_hochberg(&[0.01, 0.01]), Ok(vec![0.01, 0.01]));
    }

    #[test]
    fn capped_at_one() {
        let h = holm(&[0.4, 0.5, 0.9]).unwrap_or_default();
        assert!(h.iter().all(|&p| p <= 1.0));
        assert_eq!(h, vec![1.0, 1.0, 1.0]);
    }
}
