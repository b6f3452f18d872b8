//! Bayesian analysis of an effect under a Gaussian model.

use serde::{Deserialize, Serialize};

use crate::dist::{normal_cdf, normal_pdf, normal_quantile};
use crate::error::{StatsError, check_alpha, finite};
use crate::proportion::Interval;
use crate::welch::Difference;

/// Prior on the effect (for [`crate::analyze`]: on the relative lift).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Prior {
    /// Improper flat prior: the posterior is the likelihood,
    /// `N(estimate, variance)`. GrowthBook's default.
    #[default]
    Flat,
    /// Proper normal prior `N(mean, variance)`, `variance > 0`. For a relative
    /// lift, `mean: 0, variance: 0.09` says "lifts beyond ±60 % are rare".
    Normal {
        /// Prior mean of the effect.
        mean: f64,
        /// Prior variance of the effect.
        variance: f64,
    },
}

impl Prior {
    pub(crate) fn validate(&self) -> Result<(), StatsError> {
        if let Prior::Normal { mean, variance } = *self {
            finite("prior mean", mean)?;
            finite("prior variance", variance)?;
            if variance <= 0.0 {
                return Err(StatsError::invalid(format!(
                    "prior variance must be positive, got {variance}"
                )));
            }
        }
        Ok(())
    }
}

/// Posterior summary of an effect δ (positive = treatment better).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BayesianResult {
    /// `P(δ > 0 | data)`: the chance that the treatment beats control.
    pub chance_to_win: f64,
    /// Posterior mean of δ.
    pub expected: f64,
    /// Posterior standard deviation of δ.
    pub std_dev: f64,
    /// Equal-tailed `1 − alpha` credible interval of δ.
    pub ci: Interval,
    /// Expected loss of shipping control: `E[max(δ, 0)]`, what is given up
    /// if control is kept and the treatment was in fact better.
    pub risk_control: f64,
    /// Expected loss of shipping the treatment: `E[max(−δ, 0)]`.
    pub risk_treatment: f64,
}

/// Bayesian result for an effect with a Gaussian likelihood
/// `estimate ~ N(δ, variance)` and the given prior, as GrowthBook's
/// `EffectBayesianABTest`:
///
/// ```text
/// posterior precision  1/σ² = 1/variance + 1/prior_variance   (flat: 1/variance)
/// posterior mean       μ    = σ² · (estimate/variance + prior_mean/prior_variance)
/// chance to win             = 1 − Φ(−μ/σ) = Φ(μ/σ)
/// risk (control)            = E[max(δ,0)]  = μ·Φ(μ/σ)  + σ·φ(μ/σ)
/// risk (treatment)          = E[max(−δ,0)] = −μ·Φ(−μ/σ) + σ·φ(μ/σ)
/// ```
///
/// The risks are GrowthBook's `(1 − P(δ<0))·E[δ | δ>0]` and
/// `−P(δ<0)·E[δ | δ<0]` (truncated-normal means) in closed form.
/// Errors with [`StatsError::ZeroVariance`] when the variance is zero.
pub fn bayesian(
    difference: &Difference,
    prior: &Prior,
    alpha: f64,
) -> Result<BayesianResult, StatsError> {
    check_alpha(alpha)?;
    prior.validate()?;
    let estimate = finite("estimate", difference.estimate)?;
    let variance = finite("variance", difference.variance)?;
    if variance < 0.0 {
        return Err(StatsError::invalid("variance must be non-negative"));
    }
    if variance == 0.0 {
        return Err(StatsError::ZeroVariance);
    }
    let (mean, post_variance) = match *prior {
        Prior::Flat => (estimate, variance),
        Prior::Normal {
            mean: prior_mean,
            variance: prior_variance,
        } => {
            let precision = 1.0 / variance + 1.0 / prior_variance;
            let post_variance = 1.0 / precision;
            (
                post_variance * (estimate / variance + prior_mean / prior_variance),
                post_variance,
            )
        }
    };
    let sd = post_variance.sqrt();
    let z = mean / sd;
    let chance_to_win = normal_cdf(z);
    let density = sd * normal_pdf(z);
    let risk_control = (mean * normal_cdf(z) + density).max(0.0);
    let risk_treatment = (density - mean * normal_cdf(-z)).max(0.0);
    let half = normal_quantile(1.0 - alpha / 2.0)? * sd;
    Ok(BayesianResult {
        chance_to_win,
        expected: mean,
        std_dev: sd,
        ci: Interval::around(mean, half),
        risk_control,
        risk_treatment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(estimate: f64, variance: f64) -> Difference {
        Difference {
            estimate,
            variance,
            df: 100.0,
            units: 200,
        }
    }

    #[test]
    fn zero_effect_is_a_coin_flip_with_equal_risks() {
        let r = bayesian(&diff(0.0, 0.04), &Prior::Flat, 0.05).ok();
        let r = r.as_ref();
        assert_eq!(r.map(|r| r.chance_to_win), Some(0.5));
        assert_eq!(
            r.map(|r| r.risk_control),
            r.map(|r| r.risk_treatment),
            "symmetric"
        );
    }

    #[test]
    fn risks_differ_by_the_mean() {
        // E[max(δ,0)] − E[max(−δ,0)] = E[δ]
        let r = bayesian(&diff(0.03, 0.0004), &Prior::Flat, 0.05).ok();
        assert!(r.is_some_and(|r| ((r.risk_control - r.risk_treatment) - 0.03).abs() < 1e-15));
    }

    #[test]
    fn proper_prior_shrinks() {
        let prior = Prior::Normal {
            mean: 0.0,
            variance: 0.01,
        };
        let r = bayesian(&diff(0.2, 0.01), &prior, 0.05).ok();
        assert!(r.is_some_and(|r| (r.expected - 0.1).abs() < 1e-15));
        assert!(r.is_some_and(|r| (r.std_dev - 0.005_f64.sqrt()).abs() < 1e-15));
    }

    #[test]
    fn invalid_inputs() {
        assert_eq!(
            bayesian(&diff(0.1, 0.0), &Prior::Flat, 0.05),
            Err(StatsError::ZeroVariance)
        );
        assert!(bayesian(&diff(f64::NAN, 0.1), &Prior::Flat, 0.05).is_err());
        let bad = Prior::Normal {
            mean: 0.0,
            variance: 0.0,
        };
        assert!(bayesian(&diff(0.1, 0.1), &bad, 0.05).is_err());
    }

    #[test]
    fn extreme_effects_saturate_without_nan() {
        let r = bayesian(&diff(1e6, 1e-12), &Prior::Flat, 0.05).ok();
        assert!(r.is_some_and(|r| r.chance_to_win == 1.0 && r.risk_treatment == 0.0));
        let r = bayesian(&diff(-1e6, 1e-12), &Prior::Flat, 0.05).ok();
        assert!(r.is_some_and(|r| r.chance_to_win == 0.0 && r.risk_control == 0.0));
    }
}
