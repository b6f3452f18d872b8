//! Distribution functions, wrapped so that no input can reach a panicking
//! path of `statrs` (its `inverse_cdf` asserts, its special functions unwrap).

use std::f64::consts::{PI, SQRT_2};

use statrs::function::{beta, erf, gamma};

use crate::error::StatsError;

/// Above this many degrees of freedom the upper tail of the Student t
/// distribution is computed from its first-order expansion around the normal
/// (`statrs`' incomplete beta function stops converging near 10⁷).
const LARGE_DF: f64 = 1e6;

/// Standard normal cumulative distribution function Φ(x).
pub(crate) fn normal_cdf(x: f64) -> f64 {
    0.5 * erf::erfc(-x / SQRT_2)
}

/// Standard normal survival function 1 − Φ(x), accurate in the upper tail.
pub(crate) fn normal_sf(x: f64) -> f64 {
    normal_cdf(-x)
}

/// Standard normal density φ(x).
pub(crate) fn normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

/// Standard normal quantile Φ⁻¹(p) for p strictly in (0, 1).
pub(crate) fn normal_quantile(p: f64) -> Result<f64, StatsError> {
    if !(p > 0.0 && p < 1.0) {
        return Err(StatsError::invalid(format!(
            "probability must be strictly between 0 and 1, got {p}"
        )));
    }
    Ok(-SQRT_2 * erf::erfc_inv(2.0 * p))
}

fn check_df(df: f64) -> Result<f64, StatsError> {
    if df.is_nan() || df <= 0.0 {
        Err(StatsError::invalid(format!(
            "degrees of freedom must be positive, got {df}"
        )))
    } else {
        Ok(df)
    }
}

/// Upper tail P(T ≥ t) of the Student t distribution with `df` degrees of
/// freedom, for finite `t` and `df > 0` (checked by the callers).
///
/// Up to [`LARGE_DF`] it is ½·I_{df/(df+t²)}(df/2, ½), the regularized
/// incomplete beta function, which keeps small tails precise. Above, the
/// expansion Φ̄(t) + φ(t)·[(t³ + t)/(4ν) + (3t⁷ − 7t⁵ − 5t³ − 3t)/(96ν²)],
/// obtained by inverting the Cornish–Fisher series of Abramowitz & Stegun
/// 26.7.5, is accurate to about 1e-12 relative there.
fn t_sf(t: f64, df: f64) -> Result<f64, StatsError> {
    if df > LARGE_DF {
        let x = t.abs();
        let x2 = x * x;
        let first = (x2 + 1.0) * x / 4.0;
        let second = (((3.0 * x2 - 7.0) * x2 - 5.0) * x2 - 3.0) * x / 96.0;
        let tail = normal_sf(x) + normal_pdf(x) * (first / df + second / (df * df));
        let tail = tail.clamp(0.0, 0.5);
        return Ok(if t >= 0.0 { tail } else { 1.0 - tail });
    }
    let x = (df / (df + t * t)).clamp(0.0, 1.0);
    let tail = 0.5
        * beta::checked_beta_reg(df / 2.0, 0.5, x)
            .map_err(|e| StatsError::invalid(format!("Student t tail: {e}")))?;
    let tail = tail.clamp(0.0, 0.5);
    Ok(if t >= 0.0 { tail } else { 1.0 - tail })
}

/// Student t density, only used as the Newton slope of [`t_upper_quantile`].
fn t_pdf(t: f64, df: f64) -> f64 {
    if df > LARGE_DF {
        return normal_pdf(t);
    }
    let ln = gamma::ln_gamma((df + 1.0) / 2.0)
        - gamma::ln_gamma(df / 2.0)
        - 0.5 * (df * PI).ln()
        - (df + 1.0) / 2.0 * (t * t / df).ln_1p();
    ln.exp()
}

/// Two-sided p-value of a Student t statistic: P(|T| ≥ |t|) with `df`
/// degrees of freedom.
pub(crate) fn t_two_sided_p(t: f64, df: f64) -> Result<f64, StatsError> {
    let df = check_df(df)?;
    if t.is_nan() {
        return Err(StatsError::invalid("t statistic is NaN"));
    }
    if t.is_infinite() {
        return Ok(0.0);
    }
    Ok((2.0 * t_sf(t.abs(), df)?).min(1.0))
}

/// The t with P(T ≥ t) = `q` for the Student t distribution with `df`
/// degrees of freedom, `q` strictly in (0, 1): the critical value of a test
/// or interval at level `q` (e.g. `q = alpha / 2` two-sided).
///
/// Solved by safeguarded Newton iteration on [`t_sf`], started from the
/// Cornish–Fisher expansion (Abramowitz & Stegun 26.7.5); `statrs`'
/// `inverse_cdf` is not used because it loses accuracy above ~10⁵ degrees of
/// freedom and does not terminate near 10⁸.
pub(crate) fn t_upper_quantile(q: f64, df: f64) -> Result<f64, StatsError> {
    let df = check_df(df)?;
    if !(q > 0.0 && q < 1.0) {
        return Err(StatsError::invalid(format!(
            "tail probability must be strictly between 0 and 1, got {q}"
        )));
    }
    if q > 0.5 {
        return Ok(-t_upper_quantile(1.0 - q, df)?);
    }
    if q == 0.5 {
        return Ok(0.0);
    }
    // Cornish–Fisher start; exact enough on its own for large df.
    let z = -normal_quantile(q)?;
    let (z2, nu) = (z * z, df);
    let g1 = (z2 + 1.0) * z / 4.0;
    let g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0;
    let g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0;
    let g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0;
    let start = z + g1 / nu + g2 / nu.powi(2) + g3 / nu.powi(3) + g4 / nu.powi(4);

    // Bracket the root: sf(lo) > q >= sf(hi).
    let mut lo = 0.0_f64;
    let mut hi = if start.is_finite() && start > 0.0 {
        start
    } else {
        1.0
    };
    let mut doublings = 0;
    while t_sf(hi, df)? > q {
        lo = hi;
        hi *= 2.0;
        doublings += 1;
        if !hi.is_finite() || doublings > 2100 {
            return Err(StatsError::invalid(format!(
                "Student t quantile overflows for tail {q} and {df} degrees of freedom"
            )));
        }
    }
    let mut t = if start > lo && start <= hi {
        start
    } else {
        0.5 * (lo + hi)
    };
    for _ in 0..200 {
        let f = t_sf(t, df)? - q; // decreasing in t
        if f == 0.0 {
            return Ok(t);
        }
        if f > 0.0 {
            lo = t;
        } else {
            hi = t;
        }
        let slope = t_pdf(t, df);
        let newton = t + f / slope;
        let next = if slope > 0.0 && newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
        if (next - t).abs() <= 4.0 * f64::EPSILON * t.abs() || hi - lo <= 4.0 * f64::EPSILON * hi {
            return Ok(next);
        }
        t = next;
    }
    Ok(t)
}

/// Chi-square survival function P(X ≥ x) with `df` degrees of freedom, the
/// regularized upper incomplete gamma function Q(df/2, x/2).
pub(crate) fn chi_square_sf(x: f64, df: f64) -> Result<f64, StatsError> {
    let df = check_df(df)?;
    if x.is_nan() || x < 0.0 {
        return Err(StatsError::invalid(format!(
            "chi-square statistic must be non-negative, got {x}"
        )));
    }
    if x == 0.0 {
        return Ok(1.0);
    }
    if x.is_infinite() {
        return Ok(0.0);
    }
    gamma::checked_gamma_ur(df / 2.0, x / 2.0)
        .map(|p| p.clamp(0.0, 1.0))
        .map_err(|e| StatsError::invalid(format!("chi-square p-value: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_quantile_rejects_bounds_and_nan() {
        assert!(normal_quantile(0.0).is_err());
        assert!(normal_quantile(1.0).is_err());
        assert!(normal_quantile(f64::NAN).is_err());
        let z = normal_quantile(0.975).unwrap_or(f64::NAN);
        assert!((z - 1.959_963_984_540_054).abs() < 1e-12, "{z}");
    }

    #[test]
    fn t_functions_reject_bad_df() {
        assert!(t_two_sided_p(1.0, 0.0).is_err());
        assert!(t_two_sided_p(1.0, f64::NAN).is_err());
        assert!(t_two_sided_p(f64::NAN, 3.0).is_err());
        assert!(t_upper_quantile(0.025, -1.0).is_err());
        assert!(t_upper_quantile(1.5, 3.0).is_err());
        assert!(t_upper_quantile(0.0, 3.0).is_err());
        assert_eq!(t_two_sided_p(f64::INFINITY, 3.0), Ok(0.0));
        assert_eq!(t_two_sided_p(0.0, 3.0), Ok(1.0));
    }

    #[test]
    fn chi_square_edges() {
        assert_eq!(chi_square_sf(0.0, 1.0), Ok(1.0));
        assert!(chi_square_sf(-1.0, 1.0).is_err());
        assert!(chi_square_sf(1.0, 0.0).is_err());
    }
}
