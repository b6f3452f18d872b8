//! The headline of one comparison: the one answer a reader takes away, with
//! the test that decides it stated, and every place where the other
//! readings disagree with it said aloud.
//!
//! The rules:
//!
//! - **The deciding test is the absolute one**: the Welch test of
//!   `m_t − m_c` (frequentist), its confidence sequence (sequential), or the
//!   chance to win (Bayesian; from the exact Beta posteriors for a binomial
//!   metric, else the Gaussian model). It exists whenever any test does,
//!   also when the control mean is zero or a treatment never converts.
//! - **The headline number is the relative lift** with its log-scale
//!   interval (never below −100 %) when that exists, else the absolute lift,
//!   and [`Headline::scale`] says which. Both readings are always given.
//! - **They cannot disagree silently**: when the relative interval's
//!   verdict (excludes zero or not) differs from the deciding test's, a note
//!   says so and that the verdict follows the deciding test.
//! - **A verdict can be withheld**: the caller passes the reason (a
//!   sample-ratio mismatch, too many units in several variants), and the
//!   answer is then [`Verdict::Withheld`], never significant.

use serde::{Deserialize, Serialize};

use crate::analysis::{Analysis, Comparison, Outcome};
use crate::proportion::Interval;

/// How results are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Fixed-horizon tests: read once, at the planned end.
    #[default]
    Frequentist,
    /// Always-valid confidence sequences: read as often as you like.
    Sequential,
    /// Posterior chance to win and expected loss.
    Bayesian,
}

/// What a comparison says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The treatment's mean is higher than control's (significant).
    Increase,
    /// The treatment's mean is lower than control's (significant).
    Decrease,
    /// No significant difference (yet).
    Inconclusive,
    /// A health check failed: no verdict until it is fixed.
    Withheld,
    /// No test could be computed (see the notes).
    Unavailable,
}

/// One reading of the lift: estimate and interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reading {
    /// The estimate.
    pub lift: f64,
    /// Its interval under the method.
    pub ci: Interval,
    /// How the interval is made: `welch`, `log_delta`,
    /// `confidence_sequence`, `log_delta_confidence_sequence`, `credible`,
    /// `log_delta_credible`.
    pub ci_method: &'static str,
}

/// Expected losses ("risk").
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Risk {
    /// Expected loss of keeping control.
    pub control: f64,
    /// Expected loss of shipping the treatment.
    pub treatment: f64,
    /// `absolute` (rate or mean units) or `relative`.
    pub scale: &'static str,
}

/// The headline of one treatment against control.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Headline {
    /// The verdict.
    pub verdict: Verdict,
    /// Whether the deciding test is significant (never when withheld).
    pub significant: bool,
    /// The deciding test: `welch_absolute`, `confidence_sequence_absolute`,
    /// `chance_to_win_beta` or `chance_to_win_normal`.
    pub test: &'static str,
    /// The deciding test's p-value (adjusted when a correction is on); none
    /// for the Bayesian method.
    pub p_value: Option<f64>,
    /// `relative` or `absolute`: which reading [`Headline::lift`] is.
    pub scale: &'static str,
    /// The headline lift (the reading named by `scale`).
    pub lift: Option<f64>,
    /// Its interval.
    pub ci: Option<Interval>,
    /// The absolute reading, `m_t − m_c`.
    pub absolute: Option<Reading>,
    /// The relative reading, `m_t/m_c − 1`, with a log-scale interval.
    pub relative: Option<Reading>,
    /// `P(treatment better than control)`.
    pub chance_to_win: Option<f64>,
    /// `beta_posterior`, `beta_posterior_normal` or `normal_relative` /
    /// `normal_absolute` (the Gaussian model of the lift).
    pub chance_to_win_method: Option<&'static str>,
    /// Expected losses beside the chance to win.
    pub risk: Option<Risk>,
    /// Why the verdict is withheld.
    pub withheld: Option<String>,
    /// Everything the reader should know: an undefined relative lift, a
    /// disagreement between the readings.
    pub notes: Vec<String>,
}

/// The headline of `comparison` (one of `analysis.comparisons`) under
/// `method`; `withheld` is the reason to withhold the verdict, if any.
pub fn headline(
    analysis: &Analysis,
    comparison: &Comparison,
    method: Method,
    withheld: Option<&str>,
) -> Headline {
    let alpha = analysis.alpha;
    let mut notes = Vec::new();

    // The Bayesian figures, shown whatever the method.
    let beta = analysis
        .beta
        .as_ref()
        .and_then(Outcome::computed)
        .and_then(|b| {
            b.comparisons
                .iter()
                .find(|c| c.variant == comparison.variant)
                .map(|c| (b.method, c))
        });
    let (chance_to_win, chance_to_win_method, risk) = match (beta, &comparison.bayesian) {
        (Some((method, c)), _) => (
            Some(c.chance_to_win),
            Some(method),
            Some(Risk {
                control: c.risk_control,
                treatment: c.risk_treatment,
                scale: "absolute",
            }),
        ),
        (None, Outcome::Computed(b)) => (
            Some(b.chance_to_win),
            Some("normal_relative"),
            Some(Risk {
                control: b.risk_control,
                treatment: b.risk_treatment,
                scale: "relative",
            }),
        ),
        (None, Outcome::Unavailable { .. }) => match comparison.bayesian_absolute.computed() {
            Some(b) => (
                Some(b.chance_to_win),
                Some("normal_absolute"),
                Some(Risk {
                    control: b.risk_control,
                    treatment: b.risk_treatment,
                    scale: "absolute",
                }),
            ),
            None => (None, None, None),
        },
    };

    // The absolute reading and the deciding test.
    let absolute_lift = comparison.absolute.computed();
    let (absolute, test, p_value, decided) = match (method, absolute_lift) {
        (_, None) => (None, "welch_absolute", None, None),
        (Method::Frequentist, Some(l)) => {
            let p = l.adjusted_p_value.unwrap_or(l.test.p_value);
            (
                Some(Reading {
                    lift: l.test.estimate,
                    ci: l.test.ci,
                    ci_method: "welch",
                }),
                "welch_absolute",
                Some(p),
                Some(p < alpha),
            )
        }
        (Method::Sequential, Some(l)) => match &l.sequential {
            Some(s) => (
                Some(Reading {
                    lift: l.test.estimate,
                    ci: s.ci,
                    ci_method: "confidence_sequence",
                }),
                "confidence_sequence_absolute",
                Some(s.p_value),
                Some(s.p_value < alpha),
            ),
            None => (None, "confidence_sequence_absolute", None, None),
        },
        (Method::Bayesian, Some(l)) => {
            let ci = comparison
                .bayesian_absolute
                .computed()
                .map_or(l.test.ci, |b| b.ci);
            let test = match chance_to_win_method {
                Some("beta_posterior" | "beta_posterior_normal") => "chance_to_win_beta",
                _ => "chance_to_win_normal",
            };
            (
                Some(Reading {
                    lift: l.test.estimate,
                    ci,
                    ci_method: "credible",
                }),
                test,
                None,
                chance_to_win.map(|p| p > 1.0 - alpha / 2.0 || p < alpha / 2.0),
            )
        }
    };

    // The relative reading, on the log scale.
    let relative = match &comparison.relative_interval {
        Outcome::Computed(r) => {
            let (ci, ci_method) = match method {
                Method::Frequentist => (Some(r.ci), "log_delta"),
                Method::Sequential => (r.sequential_ci, "log_delta_confidence_sequence"),
                Method::Bayesian => (r.credible_ci, "log_delta_credible"),
            };
            ci.map(|ci| Reading {
                lift: r.estimate,
                ci,
                ci_method,
            })
        }
        Outcome::Unavailable { reason } => {
            notes.push(format!(
                "No relative lift: {reason}. The headline is the absolute lift."
            ));
            None
        }
    };

    let significant_raw = decided.unwrap_or(false);
    if let (Some(r), Some(decided)) = (&relative, decided)
        && r.ci.excludes_zero() != decided
    {
        let what = match p_value {
            Some(p) => format!("the deciding test ({test}) has p = {p:.4}"),
            None => format!(
                "the chance to win is {:.1}%",
                chance_to_win.unwrap_or(f64::NAN) * 100.0
            ),
        };
        notes.push(format!(
            "The relative interval ({}) {} zero while {what}: the two disagree near the threshold; the verdict follows the deciding test, {}.",
            r.ci_method,
            if r.ci.excludes_zero() {
                "excludes"
            } else {
                "includes"
            },
            if decided {
                "significant"
            } else {
                "not significant"
            }
        ));
    }
    if decided.is_none()
        && let Some(reason) = comparison.absolute.reason()
    {
        notes.push(format!("No test: {reason}."));
    }

    let direction = match method {
        Method::Bayesian => chance_to_win.map(|p| p > 0.5),
        _ => absolute.map(|a| a.lift > 0.0),
    };
    let (verdict, significant, withheld) = match (withheld, decided) {
        (Some(reason), _) => (Verdict::Withheld, false, Some(reason.to_owned())),
        (None, None) => (Verdict::Unavailable, false, None),
        (None, Some(false)) => (Verdict::Inconclusive, false, None),
        (None, Some(true)) => (
            if direction == Some(true) {
                Verdict::Increase
            } else {
                Verdict::Decrease
            },
            significant_raw,
            None,
        ),
    };

    let (scale, headline) = match (&relative, &absolute) {
        (Some(r), _) => ("relative", Some(*r)),
        (None, a) => ("absolute", *a),
    };
    Headline {
        verdict,
        significant,
        test,
        p_value,
        scale,
        lift: headline.map(|r| r.lift),
        ci: headline.map(|r| r.ci),
        absolute,
        relative,
        chance_to_win,
        chance_to_win_method,
        risk,
        withheld,
        notes,
    }
}
