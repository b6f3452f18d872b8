//! Differences between two variants and the Welch two-sample t-test.

use serde::{Deserialize, Serialize};

use crate::dist::{t_two_sided_p, t_upper_quantile};
use crate::error::{StatsError, check_alpha};
use crate::proportion::Interval;
use crate::summary::Moments;

/// An estimated treatment effect with its sampling variance: what the Welch,
/// Bayesian and sequential methods all start from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// Point estimate of the effect.
    pub estimate: f64,
    /// Estimated variance of `estimate` (the squared standard error).
    pub variance: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Units in both variants together (`n_c + n_t`), used by the sequential
    /// confidence sequence.
    pub units: u64,
}

fn check_pair(control: &Moments, treatment: &Moments) -> Result<(), StatsError> {
    control.validate()?;
    treatment.validate()?;
    for m in [control, treatment] {
        if m.n < 2 {
            return Err(StatsError::TooFewUnits {
                what: "a two-sample test",
                needed: 2,
                got: m.n,
            });
        }
    }
    Ok(())
}

/// Welch–Satterthwaite degrees of freedom
/// `(v_t/n_t + v_c/n_c)² / ((v_t/n_t)²/(n_t − 1) + (v_c/n_c)²/(n_c − 1))`,
/// the same for the absolute and the relative effect (as GrowthBook does).
fn welch_df(control: &Moments, treatment: &Moments) -> Result<f64, StatsError> {
    let (nc, nt) = (control.n as f64, treatment.n as f64);
    let (sc, st) = (control.variance / nc, treatment.variance / nt);
    let numerator = (sc + st).powi(2);
    let denominator = sc * sc / (nc - 1.0) + st * st / (nt - 1.0);
    if denominator.is_nan() || denominator <= 0.0 {
        return Err(StatsError::ZeroVariance);
    }
    let df = numerator / denominator;
    if df.is_finite() && df > 0.0 {
        Ok(df)
    } else {
        Err(StatsError::invalid("degrees of freedom are not finite"))
    }
}

fn units(control: &Moments, treatment: &Moments) -> u64 {
    control.n.saturating_add(treatment.n)
}

/// Absolute effect `mean_t − mean_c` with variance `v_t/n_t + v_c/n_c`.
///
/// Errors: [`StatsError::TooFewUnits`] below two units in a variant,
/// [`StatsError::ZeroVariance`] when both variances are zero.
pub fn absolute_difference(
    control: &Moments,
    treatment: &Moments,
) -> Result<Difference, StatsError> {
    check_pair(control, treatment)?;
    let df = welch_df(control, treatment)?;
    let variance = treatment.variance / treatment.n as f64 + control.variance / control.n as f64;
    Ok(Difference {
        estimate: treatment.mean - control.mean,
        variance,
        df,
        units: units(control, treatment),
    })
}

/// Relative effect (lift) `mean_t / mean_c − 1`, with the delta-method
/// variance of a ratio of independent means (as GrowthBook's
/// `variance_of_ratios` with zero covariance):
///
/// ```text
/// Var ≈ v_t / (n_t·m_c²) + v_c·m_t² / (n_c·m_c⁴)
/// ```
///
/// Errors as [`absolute_difference`], plus [`StatsError::ZeroControlMean`]
/// when the control mean is zero (the lift is undefined).
pub fn relative_difference(
    control: &Moments,
    treatment: &Moments,
) -> Result<Difference, StatsError> {
    check_pair(control, treatment)?;
    if control.mean == 0.0 {
        return Err(StatsError::ZeroControlMean);
    }
    let df = welch_df(control, treatment)?;
    let (mc, mt) = (control.mean, treatment.mean);
    let variance = treatment.variance / (treatment.n as f64 * mc * mc)
        + control.variance * mt * mt / (control.n as f64 * mc.powi(4));
    if variance == 0.0 && mt == 0.0 {
        // A treatment that never converts: the delta method's variance is
        // zero although control varies. Not "every unit has the same value".
        return Err(StatsError::NonPositiveMean {
            variant: "treatment",
            mean: mt,
        });
    }
    let estimate = mt / mc - 1.0;
    if !estimate.is_finite() || !variance.is_finite() {
        return Err(StatsError::invalid("relative lift overflows"));
    }
    Ok(Difference {
        estimate,
        variance,
        df,
        units: units(control, treatment),
    })
}

/// The log of the ratio of means, `ln(mean_t / mean_c)`, with the
/// delta-method variance `v_t/(n_t·m_t²) + v_c/(n_c·m_c²)` and the Welch
/// degrees of freedom: the scale on which the relative lift's interval is
/// taken, so that `exp(interval) − 1` never falls below −100 %.
///
/// Errors as [`absolute_difference`], plus [`StatsError::NonPositiveMean`]
/// unless both means are positive (the log is undefined).
pub fn log_ratio_difference(
    control: &Moments,
    treatment: &Moments,
) -> Result<Difference, StatsError> {
    check_pair(control, treatment)?;
    for (variant, m) in [("control", control), ("treatment", treatment)] {
        if m.mean.is_nan() || m.mean <= 0.0 {
            return Err(StatsError::NonPositiveMean {
                variant,
                mean: m.mean,
            });
        }
    }
    let df = welch_df(control, treatment)?;
    let (mc, mt) = (control.mean, treatment.mean);
    let variance = treatment.variance / (treatment.n as f64 * mt * mt)
        + control.variance / (control.n as f64 * mc * mc);
    let estimate = (mt / mc).ln();
    if !estimate.is_finite() || !variance.is_finite() {
        return Err(StatsError::invalid(
            "the log of the ratio of means overflows",
        ));
    }
    Ok(Difference {
        estimate,
        variance,
        df,
        units: units(control, treatment),
    })
}

/// Result of a two-sided t-test of `H0: effect = 0`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TTest {
    /// Point estimate of the effect.
    pub estimate: f64,
    /// Its standard error.
    pub std_error: f64,
    /// `estimate / std_error`.
    pub statistic: f64,
    /// Degrees of freedom of the reference Student t distribution.
    pub df: f64,
    /// Two-sided p-value `P(|T_df| ≥ |statistic|)`.
    pub p_value: f64,
    /// `estimate ± t_{df, 1−α/2} · std_error`.
    pub ci: Interval,
}

/// Two-sided Welch t-test and `1 − alpha` confidence interval of a
/// [`Difference`]. Errors with [`StatsError::ZeroVariance`] when its
/// variance is zero.
pub fn welch(difference: &Difference, alpha: f64) -> Result<TTest, StatsError> {
    check_alpha(alpha)?;
    let Difference {
        estimate,
        variance,
        df,
        ..
    } = *difference;
    crate::error::finite("estimate", estimate)?;
    crate::error::finite("variance", variance)?;
    if variance < 0.0 {
        return Err(StatsError::invalid("variance must be non-negative"));
    }
    if variance == 0.0 {
        return Err(StatsError::ZeroVariance);
    }
    let std_error = variance.sqrt();
    let statistic = estimate / std_error;
    let p_value = t_two_sided_p(statistic, df)?;
    let critical = t_upper_quantile(alpha / 2.0, df)?;
    Ok(TTest {
        estimate,
        std_error,
        statistic,
        df,
        p_value,
        ci: Interval::around(estimate, critical * std_error),
    })
}

/// Welch test of the absolute effect `mean_t − mean_c`.
pub fn welch_absolute(
    control: &Moments,
    treatment: &Moments,
    alpha: f64,
) -> Result<TTest, StatsError> {
    welch(&absolute_difference(control, treatment)?, alpha)
}

/// Welch test of the relative effect `mean_t / mean_c − 1` (delta method).
pub fn welch_relative(
    control: &Moments,
    treatment: &Moments,
    alpha: f64,
) -> Result<TTest, StatsError> {
    welch(&relative_difference(control, treatment)?, alpha)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(n: u64, mean: f64, variance: f64) -> Moments {
        Moments { n, mean, variance }
    }

    #[test]
    fn zero_variance_in_both_is_an_error() {
        let c = m(10, 1.0, 0.0);
        let t = m(10, 2.0, 0.0);
        assert_eq!(welch_absolute(&c, &t, 0.05), Err(StatsError::ZeroVariance));
        assert_eq!(welch_relative(&c, &t, 0.05), Err(StatsError::ZeroVariance));
    }

    #[test]
    fn zero_variance_in_one_uses_the_other() {
        let c = m(10, 1.0, 0.0);
        let t = m(21, 2.0, 4.0);
        let d = absolute_difference(&c, &t);
        assert!(matches!(d, Ok(d) if (d.df - 20.0).abs() < 1e-9));
    }

    #[test]
    fn control_mean_zero_makes_relative_undefined() {
        let c = m(100, 0.0, 0.0);
        let t = m(100, 0.1, 0.09);
        assert_eq!(
            welch_relative(&c, &t, 0.05),
            Err(StatsError::ZeroControlMean)
        );
        // The absolute lift is still fine.
        assert!(welch_absolute(&c, &t, 0.05).is_ok());
    }

    #[test]
    fn a_treatment_that_never_converts_is_named_as_such() {
        // 17/208 against 0/192: control varies, the treatment does not.
        let p = 17.0 / 208.0;
        let c = m(208, p, p * (1.0 - p));
        let t = m(192, 0.0, 0.0);
        assert!(welch_absolute(&c, &t, 0.05).is_ok_and(|t| t.p_value < 1e-4));
        let relative = welch_relative(&c, &t, 0.05);
        assert!(matches!(
            relative,
            Err(StatsError::NonPositiveMean {
                variant: "treatment",
                ..
            })
        ));
        assert!(!relative.is_err_and(|e| e.to_string().contains("same value")));
        assert!(matches!(
            log_ratio_difference(&c, &t),
            Err(StatsError::NonPositiveMean {
                variant: "treatment",
                ..
            })
        ));
    }

    #[test]
    fn log_ratio_is_the_log_of_the_ratio() {
        let c = m(1000, 0.10, 0.09);
        let t = m(1000, 0.12, 0.1056);
        let d = log_ratio_difference(&c, &t);
        assert!(d.is_ok_and(|d| (d.estimate - 1.2_f64.ln()).abs() < 1e-12
            && (d.variance - (0.1056 / (1000.0 * 0.0144) + 0.09 / (1000.0 * 0.01))).abs() < 1e-12));
        assert!(log_ratio_difference(&m(10, -1.0, 1.0), &t).is_err());
    }

    #[test]
    fn too_few_units() {
        let one = m(1, 1.0, 0.0);
        let ok = m(10, 1.0, 1.0);
        assert!(matches!(
            welch_absolute(&one, &ok, 0.05),
            Err(StatsError::TooFewUnits {
                needed: 2,
                got: 1,
                ..
            })
        ));
        let zero = m(0, 0.0, 0.0);
        assert!(matches!(
            welch_relative(&ok, &zero, 0.05),
            Err(StatsError::TooFewUnits { got: 0, .. })
        ));
    }

    #[test]
    fn nan_input_is_rejected() {
        let ok = m(10, 1.0, 1.0);
        assert!(welch_absolute(&m(10, f64::NAN, 1.0), &ok, 0.05).is_err());
        assert!(welch_absolute(&ok, &m(10, 1.0, f64::NAN), 0.05).is_err());
        assert!(welch_absolute(&ok, &m(10, 1.0, -1.0), 0.05).is_err());
        assert!(welch_absolute(&ok, &ok, f64::NAN).is_err());
        assert!(welch_absolute(&ok, &ok, 1.0).is_err());
    }

    #[test]
    fn identical_variants_have_p_one() {
        let a = m(50, 3.0, 2.0);
        let t = welch_absolute(&a, &a, 0.05);
        assert!(matches!(t, Ok(t) if t.p_value == 1.0 && t.estimate == 0.0));
    }
}
