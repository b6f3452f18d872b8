//! Bayesian results for a conversion (binomial) metric from the exact
//! Beta posteriors of the arms' rates, by numerical integration.
//!
//! Each arm's rate has the posterior `Beta(1 + converted, 1 + units −
//! converted)` (a uniform `Beta(1, 1)` prior). From these:
//!
//! ```text
//! P(arm k is best)        = ∫ f_k(x) · Π_{j≠k} F_j(x) dx
//! P(treatment beats control) = the same with the two arms alone
//! E[max(X − Y, 0)]        = E[X]·P(X⁺ > Y) − E[Y]·P(X > Y⁺)
//! E[max_j X_j]            = Σ_k E[X_k] · P(X_k⁺ is best)
//! ```
//!
//! where `X⁺` is `X`'s Beta with its first parameter one larger (since
//! `x·f_{a,b}(x) = a/(a+b) · f_{a+1,b}(x)`), so every expected loss is a
//! combination of "is best" probabilities and needs no second integral.
//! Each integral is taken with composite Simpson's rule over
//! [`PANELS`] panels spanning the integrated arm's mean ± [`SPAN_SDS`]
//! standard deviations (clipped to `[0, 1]`): outside that span its density
//! is below any figure reported. `F_j` is the regularized incomplete beta
//! function. Arms with more than [`EXACT_LIMIT`] units use the normal
//! distribution with the Beta's own mean and variance instead (at that size
//! the two agree to far better than the figures shown, and the incomplete
//! beta function stops converging); [`BinomialBayes::method`] says which.
//!
//! Pure: no randomness (no Monte Carlo), so the same counts always give the
//! same figures.

use serde::Serialize;
use statrs::function::{beta, gamma};

use crate::dist::{normal_cdf, normal_pdf};
use crate::error::StatsError;

/// Simpson panels per integral (even).
const PANELS: usize = 1024;
/// Half-width of the integration span, in the integrated arm's standard
/// deviations.
const SPAN_SDS: f64 = 30.0;
/// Above this many units in an arm, its Beta is replaced by the normal
/// with the same mean and variance.
pub const EXACT_LIMIT: u64 = 1_000_000;

/// The Bayesian result of a conversion metric, every arm at once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BinomialBayes {
    /// `"beta_posterior"` (exact Beta posteriors, numerical integration)
    /// or `"beta_posterior_normal"` (an arm above [`EXACT_LIMIT`] units
    /// made the normal approximation of its Beta necessary).
    pub method: &'static str,
    /// The prior of every arm's rate: `Beta(1, 1)`, uniform.
    pub prior: [f64; 2],
    /// Per arm, control first: the posterior `Beta(a, b)` of its rate.
    pub posteriors: Vec<[f64; 2]>,
    /// Per arm, control first: the chance that its rate is the highest.
    pub chance_to_be_best: Vec<f64>,
    /// Per arm, control first: the expected loss of choosing it,
    /// `E[max_j p_j − p_k]`, in rate (absolute) units.
    pub expected_loss: Vec<f64>,
    /// One entry per treatment, in input order.
    pub comparisons: Vec<BetaComparison>,
}

/// One treatment against control under the Beta posteriors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BetaComparison {
    /// Index of the treatment (control is 0).
    pub variant: usize,
    /// `P(p_t > p_c)`.
    pub chance_to_win: f64,
    /// Expected loss of keeping control, `E[max(p_t − p_c, 0)]`.
    pub risk_control: f64,
    /// Expected loss of shipping the treatment, `E[max(p_c − p_t, 0)]`.
    pub risk_treatment: f64,
}

/// One arm's posterior.
#[derive(Debug, Clone, Copy)]
struct Arm {
    a: f64,
    b: f64,
    normal: bool,
}

impl Arm {
    fn mean(&self) -> f64 {
        self.a / (self.a + self.b)
    }

    fn sd(&self) -> f64 {
        let s = self.a + self.b;
        (self.a * self.b / (s * s * (s + 1.0))).sqrt()
    }

    /// The same arm with its first parameter one larger (`X⁺`).
    fn plus(&self) -> Arm {
        Arm {
            a: self.a + 1.0,
            ..*self
        }
    }

    fn pdf(&self, x: f64) -> f64 {
        if self.normal {
            let sd = self.sd();
            return normal_pdf((x - self.mean()) / sd) / sd;
        }
        if x <= 0.0 || x >= 1.0 {
            // a, b ≥ 1: the density is finite at the ends, and zero unless
            // that parameter is 1.
            let (near, other) = if x <= 0.0 {
                (self.a, self.b)
            } else {
                (self.b, self.a)
            };
            return if near == 1.0 {
                (-ln_beta(near, other)).exp()
            } else {
                0.0
            };
        }
        let ln = (self.a - 1.0) * x.ln() + (self.b - 1.0) * (-x).ln_1p() - ln_beta(self.a, self.b);
        ln.exp()
    }

    fn cdf(&self, x: f64) -> Result<f64, StatsError> {
        if self.normal {
            return Ok(normal_cdf((x - self.mean()) / self.sd()));
        }
        if x <= 0.0 {
            return Ok(0.0);
        }
        if x >= 1.0 {
            return Ok(1.0);
        }
        beta::checked_beta_reg(self.a, self.b, x)
            .map(|p| p.clamp(0.0, 1.0))
            .map_err(|e| StatsError::invalid(format!("incomplete beta function: {e}")))
    }
}

fn ln_beta(a: f64, b: f64) -> f64 {
    gamma::ln_gamma(a) + gamma::ln_gamma(b) - gamma::ln_gamma(a + b)
}

/// `P(arms[k] > arms[j] for every j ≠ k)`.
fn chance_best(arms: &[Arm], k: usize) -> Result<f64, StatsError> {
    let arm = arms[k];
    let (mean, sd) = (arm.mean(), arm.sd());
    let (lo, hi) = if arm.normal {
        (mean - SPAN_SDS * sd, mean + SPAN_SDS * sd)
    } else {
        (
            (mean - SPAN_SDS * sd).max(0.0),
            (mean + SPAN_SDS * sd).min(1.0),
        )
    };
    let h = (hi - lo) / PANELS as f64;
    if h.is_nan() || h <= 0.0 {
        return Err(StatsError::invalid("a posterior has no spread"));
    }
    let mut total = 0.0;
    for i in 0..=PANELS {
        let x = lo + h * i as f64;
        let mut value = arm.pdf(x);
        for (j, other) in arms.iter().enumerate() {
            if j != k && value != 0.0 {
                value *= other.cdf(x)?;
            }
        }
        let weight = if i == 0 || i == PANELS {
            1.0
        } else if i % 2 == 1 {
            4.0
        } else {
            2.0
        };
        total += weight * value;
    }
    Ok((total * h / 3.0).clamp(0.0, 1.0))
}

/// The Beta-posterior results of a conversion metric from each arm's
/// `(units, converted)`, control first. Needs at least two arms; an arm may
/// have no units (its posterior is then the prior).
pub fn binomial_bayes(arms: &[(u64, u64)]) -> Result<BinomialBayes, StatsError> {
    if arms.len() < 2 {
        return Err(StatsError::invalid("at least two arms are needed"));
    }
    let mut normal = false;
    let mut posteriors = Vec::with_capacity(arms.len());
    for &(units, converted) in arms {
        if converted > units {
            return Err(StatsError::invalid(format!(
                "converted units ({converted}) exceed units ({units})"
            )));
        }
        normal |= units > EXACT_LIMIT;
        posteriors.push(Arm {
            a: 1.0 + converted as f64,
            b: 1.0 + (units - converted) as f64,
            normal: false,
        });
    }
    if normal {
        for arm in &mut posteriors {
            arm.normal = true;
        }
    }

    let mut chance_to_be_best = Vec::with_capacity(arms.len());
    let mut expected_max = 0.0;
    for k in 0..posteriors.len() {
        chance_to_be_best.push(chance_best(&posteriors, k)?);
        let mut plus = posteriors.clone();
        plus[k] = posteriors[k].plus();
        expected_max += posteriors[k].mean() * chance_best(&plus, k)?;
    }
    let expected_loss = posteriors
        .iter()
        .map(|arm| (expected_max - arm.mean()).max(0.0))
        .collect();

    let mut comparisons = Vec::with_capacity(arms.len() - 1);
    let control = posteriors[0];
    for (index, treatment) in posteriors.iter().enumerate().skip(1) {
        let pair = [control, *treatment];
        let chance_to_win = chance_best(&pair, 1)?;
        // E[max(T − C, 0)] = E[T]·P(T⁺ > C) − E[C]·P(T > C⁺), and the same
        // the other way round.
        let t_plus = chance_best(&[control, treatment.plus()], 1)?;
        let c_plus = chance_best(&[control.plus(), *treatment], 0)?;
        let t_beats_c_plus = 1.0 - c_plus;
        let c_beats_t_plus = 1.0 - t_plus;
        let risk_control = (treatment.mean() * t_plus - control.mean() * t_beats_c_plus).max(0.0);
        let risk_treatment = (control.mean() * c_plus - treatment.mean() * c_beats_t_plus).max(0.0);
        comparisons.push(BetaComparison {
            variant: index,
            chance_to_win,
            risk_control,
            risk_treatment,
        });
    }

    Ok(BinomialBayes {
        method: if normal {
            "beta_posterior_normal"
        } else {
            "beta_posterior"
        },
        prior: [1.0, 1.0],
        posteriors: posteriors.iter().map(|a| [a.a, a.b]).collect(),
        chance_to_be_best,
        expected_loss,
        comparisons,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `P(Y > X)` for `X ~ Beta(a_x, b_x)`, `Y ~ Beta(a_y, b_y)` with an
    /// integer `a_y`, by the exact finite sum (Miller, "Formulas for
    /// Bayesian A/B testing"):
    /// `Σ_{i<a_y} B(a_x+i, b_x+b_y) / ((b_y+i) · B(1+i, b_y) · B(a_x, b_x))`.
    fn exact_y_beats_x(a_x: f64, b_x: f64, a_y: u64, b_y: f64) -> f64 {
        (0..a_y)
            .map(|i| {
                let i = i as f64;
                (ln_beta(a_x + i, b_x + b_y)
                    - (b_y + i).ln()
                    - ln_beta(1.0 + i, b_y)
                    - ln_beta(a_x, b_x))
                .exp()
            })
            .sum()
    }

    fn result(arms: &[(u64, u64)]) -> BinomialBayes {
        match binomial_bayes(arms) {
            Ok(r) => r,
            Err(e) => panic!("binomial_bayes({arms:?}): {e}"),
        }
    }

    #[test]
    fn two_arms_match_the_exact_sum() {
        for &(c, t) in &[
            ((208, 17), (192, 0)),
            ((1000, 50), (1000, 65)),
            ((40, 3), (38, 6)),
            ((5000, 400), (5100, 380)),
            ((10, 0), (10, 10)),
        ] {
            let r = result(&[c, t]);
            let (ac, bc) = (1.0 + c.1 as f64, 1.0 + (c.0 - c.1) as f64);
            let (at, bt) = (1 + t.1, 1.0 + (t.0 - t.1) as f64);
            let exact = exact_y_beats_x(ac, bc, at, bt);
            let got = r.comparisons[0].chance_to_win;
            assert!(
                (got - exact).abs() < 1e-9,
                "{c:?} vs {t:?}: {got} vs {exact}"
            );
            let best = r.chance_to_be_best[1];
            assert!((best - exact).abs() < 1e-9);
            assert!((r.chance_to_be_best[0] + r.chance_to_be_best[1] - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn risks_differ_by_the_difference_of_means() {
        // E[max(T−C,0)] − E[max(C−T,0)] = E[T] − E[C].
        let r = result(&[(1000, 50), (1000, 65)]);
        let diff = 66.0 / 1002.0 - 51.0 / 1002.0;
        let c = r.comparisons[0];
        assert!((c.risk_control - c.risk_treatment - diff).abs() < 1e-9);
        // With two arms the expected loss of choosing control is the risk
        // of keeping it.
        assert!((r.expected_loss[0] - c.risk_control).abs() < 1e-9);
        assert!((r.expected_loss[1] - c.risk_treatment).abs() < 1e-9);
    }

    #[test]
    fn three_arms_sum_to_one_and_order_by_rate() {
        let r = result(&[(1000, 50), (1000, 60), (1000, 70)]);
        let sum: f64 = r.chance_to_be_best.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9, "{sum}");
        assert!(r.chance_to_be_best[2] > r.chance_to_be_best[1]);
        assert!(r.chance_to_be_best[1] > r.chance_to_be_best[0]);
        assert!(r.expected_loss[2] < r.expected_loss[0]);
    }

    #[test]
    fn large_arms_use_the_normal_and_say_so() {
        let r = result(&[(2_000_000, 100_000), (2_000_000, 102_000)]);
        assert_eq!(r.method, "beta_posterior_normal");
        assert!(r.comparisons[0].chance_to_win > 0.99);
        let r = result(&[(100_000, 5_000), (100_000, 5_100)]);
        assert_eq!(r.method, "beta_posterior");
    }

    #[test]
    fn bad_input() {
        assert!(binomial_bayes(&[(10, 11), (10, 1)]).is_err());
        assert!(binomial_bayes(&[(10, 1)]).is_err());
        // No units at all: the prior, a coin flip.
        let r = result(&[(0, 0), (0, 0)]);
        assert!((r.comparisons[0].chance_to_win - 0.5).abs() < 1e-9);
    }
}
