//! Planning: sample size, minimum detectable effect and duration of a
//! two-sided fixed-horizon test of treatment against control, with equal
//! units per arm.
//!
//! For a conversion metric with baseline rate `p` and the treatment's
//! `p' = p·(1 + mde)`, the units per arm are (Fleiss: the variance under
//! the null hypothesis, pooled, for the level; under the alternative for
//! the power)
//!
//! ```text
//! n = (z_{1−α/2}·√(2·p̄(1−p̄)) + z_{power}·√(p(1−p) + p'(1−p')))² / (p' − p)²,  p̄ = (p + p')/2
//! ```
//!
//! and for a value metric with baseline mean `μ` and standard deviation
//! `σ`, `n = 2·(z_{1−α/2} + z_{power})²·σ² / (mde·μ)²` (the normal
//! approximation of the Welch test, as every online calculator uses). The
//! minimum detectable (relative) effect for a given `n` inverts these: in
//! closed form for a value metric, by bisection for a rate (whose
//! variance moves with the effect).

use serde::Serialize;

use crate::dist::normal_quantile;
use crate::error::{StatsError, check_alpha};

/// A planning baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Baseline {
    /// A conversion rate in (0, 1).
    Rate(f64),
    /// A mean (≠ 0) and a standard deviation (> 0) of the per-unit value.
    Mean { mean: f64, sd: f64 },
}

/// What a plan answers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SampleSize {
    /// Units needed in each arm.
    pub units_per_arm: u64,
    /// The relative effect it is sized for.
    pub mde: f64,
    pub alpha: f64,
    pub power: f64,
}

/// Units per arm for rates `p` → `q` with the quantiles `za`, `zb`.
fn rate_units(p: f64, q: f64, za: f64, zb: f64) -> f64 {
    let pooled = 0.5 * (p + q);
    let level = za * (2.0 * pooled * (1.0 - pooled)).sqrt();
    let power = zb * (p * (1.0 - p) + q * (1.0 - q)).sqrt();
    (level + power).powi(2) / ((q - p) * (q - p))
}

fn check(baseline: Baseline, alpha: f64, power: f64) -> Result<(f64, f64), StatsError> {
    check_alpha(alpha)?;
    if !(power.is_finite() && power > 0.0 && power < 1.0) {
        return Err(StatsError::invalid(format!(
            "power must be strictly between 0 and 1, got {power}"
        )));
    }
    match baseline {
        Baseline::Rate(p) if !(p.is_finite() && p > 0.0 && p < 1.0) => {
            return Err(StatsError::invalid(format!(
                "a baseline rate must be strictly between 0 and 1, got {p}"
            )));
        }
        Baseline::Mean { mean, sd }
            if !(mean.is_finite() && mean != 0.0 && sd.is_finite() && sd > 0.0) =>
        {
            return Err(StatsError::invalid(format!(
                "a baseline needs a non-zero mean and a positive standard deviation, got {mean} and {sd}"
            )));
        }
        _ => {}
    }
    Ok((normal_quantile(1.0 - alpha / 2.0)?, normal_quantile(power)?))
}

/// Units per arm to detect a relative effect `mde` (≠ 0; a rate's
/// `p·(1 + mde)` must stay in (0, 1)) with probability `power` at level
/// `alpha`.
pub fn sample_size(
    baseline: Baseline,
    mde: f64,
    alpha: f64,
    power: f64,
) -> Result<SampleSize, StatsError> {
    let (za, zb) = check(baseline, alpha, power)?;
    let z = za + zb;
    if !(mde.is_finite() && mde != 0.0) {
        return Err(StatsError::invalid(format!(
            "the minimum detectable effect must be a non-zero number, got {mde}"
        )));
    }
    let n = match baseline {
        Baseline::Rate(p) => {
            let q = p * (1.0 + mde);
            if !(q > 0.0 && q < 1.0) {
                return Err(StatsError::invalid(format!(
                    "a rate of {p} changed by {:+}% leaves (0, 1)",
                    mde * 100.0
                )));
            }
            rate_units(p, q, za, zb)
        }
        Baseline::Mean { mean, sd } => 2.0 * z * z * sd * sd / (mde * mean).powi(2),
    };
    if !n.is_finite() || n > 1e15 {
        return Err(StatsError::invalid("the sample size overflows"));
    }
    Ok(SampleSize {
        units_per_arm: n.ceil().max(2.0) as u64,
        mde,
        alpha,
        power,
    })
}

/// The smallest relative increase detectable with `units_per_arm` units
/// in each arm with probability `power` at level `alpha`.
pub fn minimum_detectable_effect(
    baseline: Baseline,
    units_per_arm: u64,
    alpha: f64,
    power: f64,
) -> Result<f64, StatsError> {
    let (za, zb) = check(baseline, alpha, power)?;
    let z = za + zb;
    if units_per_arm < 2 {
        return Err(StatsError::TooFewUnits {
            what: "a minimum detectable effect",
            needed: 2,
            got: units_per_arm,
        });
    }
    let n = units_per_arm as f64;
    match baseline {
        Baseline::Mean { mean, sd } => Ok(z * sd * (2.0 / n).sqrt() / mean.abs()),
        Baseline::Rate(p) => {
            // n(δ) decreases in δ on (0, 1/p − 1): bisect for n(δ) = n.
            let needed = |d: f64| rate_units(p, p * (1.0 + d), za, zb);
            let (mut lo, mut hi) = (1e-12, (1.0 / p - 1.0) * (1.0 - 1e-12));
            if needed(hi) > n {
                return Err(StatsError::invalid(format!(
                    "{units_per_arm} units per arm cannot detect any increase of a {p} rate"
                )));
            }
            for _ in 0..200 {
                let mid = 0.5 * (lo + hi);
                if needed(mid) > n {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            Ok(hi)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_sample_size_matches_the_textbook() {
        // 10 % → 11 %, α 0.05, power 0.8: 14,751 per arm, as Evan
        // Miller's calculator gives (the same Fleiss formula).
        let n = sample_size(Baseline::Rate(0.10), 0.10, 0.05, 0.8).expect("size");
        assert_eq!(n.units_per_arm, 14_751);
        let mde = minimum_detectable_effect(Baseline::Rate(0.10), 14_751, 0.05, 0.8).expect("mde");
        assert!((mde - 0.10).abs() < 1e-4, "{mde}");
    }

    #[test]
    fn a_mean_sample_size_inverts() {
        let b = Baseline::Mean {
            mean: 50.0,
            sd: 20.0,
        };
        let n = sample_size(b, 0.05, 0.05, 0.8).expect("size").units_per_arm;
        // 2·(1.95996 + 0.84162)²·400 / 2.5² = 1,004.7.
        assert_eq!(n, 1_005);
        let mde = minimum_detectable_effect(b, n, 0.05, 0.8).expect("mde");
        assert!(mde <= 0.05 && mde > 0.0499, "{mde}");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(sample_size(Baseline::Rate(0.0), 0.1, 0.05, 0.8).is_err());
        assert!(sample_size(Baseline::Rate(0.6), 1.0, 0.05, 0.8).is_err());
        assert!(sample_size(Baseline::Rate(0.1), 0.0, 0.05, 0.8).is_err());
        assert!(sample_size(Baseline::Rate(0.1), 0.1, 0.05, 1.0).is_err());
        assert!(sample_size(Baseline::Mean { mean: 0.0, sd: 1.0 }, 0.1, 0.05, 0.8).is_err());
        assert!(minimum_detectable_effect(Baseline::Rate(0.1), 1, 0.05, 0.8).is_err());
        assert!(minimum_detectable_effect(Baseline::Rate(0.5), 2, 0.05, 0.8).is_err());
    }
}
