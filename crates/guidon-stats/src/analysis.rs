//! One metric, each treatment against control: everything together.

use serde::{Deserialize, Serialize};

use crate::bayes::{BayesianResult, Prior, bayesian};
use crate::beta::{BinomialBayes, binomial_bayes};
use crate::cuped::{Cuped, cuped};
use crate::error::{StatsError, check_alpha};
use crate::multiple::Correction;
use crate::proportion::Interval;
use crate::sequential::{DEFAULT_TUNING_PARAMETER, SequentialResult, sequential, sequential_rho};
use crate::srm::{SrmResult, srm};
use crate::summary::{MetricKind, Moments, VariantStats, VariantSummary, summarize};
use crate::welch::{
    Difference, TTest, absolute_difference, log_ratio_difference, relative_difference, welch,
};

/// How to analyze a metric. Every field has a default, so
/// `AnalysisOptions::default()` (or `{}` in JSON) is a valid configuration:
/// binomial metric, α = 0.05, flat prior, no sequential testing, equal
/// weights, no correction, CUPED whenever covariates are given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisOptions {
    /// Which variance the tests use.
    pub metric: MetricKind,
    /// Significance level: intervals are `1 − alpha`, strictly in (0, 1).
    pub alpha: f64,
    /// Prior on the relative lift for the Bayesian result.
    pub prior: Prior,
    /// Whether to add always-valid confidence sequences to the lifts.
    pub sequential: bool,
    /// The confidence sequence's tuning parameter `N*` (> 0).
    pub sequential_tuning_parameter: f64,
    /// Traffic weights, control first, for the SRM check; `None` = equal.
    pub weights: Option<Vec<f64>>,
    /// Correction of the p-values across this metric's treatments.
    pub correction: Correction,
    /// Apply CUPED when every variant carries covariate sums.
    pub cuped: bool,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        AnalysisOptions {
            metric: MetricKind::Binomial,
            alpha: 0.05,
            prior: Prior::Flat,
            sequential: false,
            sequential_tuning_parameter: DEFAULT_TUNING_PARAMETER,
            weights: None,
            correction: Correction::None,
            cuped: true,
        }
    }
}

impl AnalysisOptions {
    /// Checks alpha, the prior and the tuning parameter.
    pub fn validate(&self) -> Result<(), StatsError> {
        check_alpha(self.alpha)?;
        self.prior.validate()?;
        sequential_rho(self.alpha, self.sequential_tuning_parameter)?;
        Ok(())
    }
}

/// A result that could be computed, or the reason it could not (too few
/// units, zero variance, zero control mean). Serialized with a `status` tag:
/// `{"status": "computed", ...fields}` or
/// `{"status": "unavailable", "reason": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome<T> {
    /// The result.
    Computed(T),
    /// Why there is none.
    Unavailable {
        /// The error that prevented it.
        reason: StatsError,
    },
}

impl<T> Outcome<T> {
    /// The result, if computed.
    pub fn computed(&self) -> Option<&T> {
        match self {
            Outcome::Computed(value) => Some(value),
            Outcome::Unavailable { .. } => None,
        }
    }

    /// The reason, if unavailable.
    pub fn reason(&self) -> Option<&StatsError> {
        match self {
            Outcome::Computed(_) => None,
            Outcome::Unavailable { reason } => Some(reason),
        }
    }
}

impl<T> From<Result<T, StatsError>> for Outcome<T> {
    fn from(result: Result<T, StatsError>) -> Self {
        match result {
            Ok(value) => Outcome::Computed(value),
            Err(reason) => Outcome::Unavailable { reason },
        }
    }
}

/// A lift (absolute or relative) of one treatment over control.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lift {
    /// The fixed-horizon Welch test: estimate, standard error, t, df,
    /// p-value and confidence interval.
    #[serde(flatten)]
    pub test: TTest,
    /// The p-value after [`AnalysisOptions::correction`] across this metric's
    /// treatments; `None` without a correction.
    pub adjusted_p_value: Option<f64>,
    /// The always-valid confidence sequence, when sequential testing is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialResult>,
}

/// The relative lift's intervals taken on the log scale: for `ln(m_t/m_c)`
/// with the delta method ([`log_ratio_difference`]), mapped back by
/// `exp(·) − 1`, so that they never fall below −100 %.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelativeInterval {
    /// `"log_delta"`: the delta method on the log of the ratio of means.
    pub method: &'static str,
    /// `m_t/m_c − 1`.
    pub estimate: f64,
    /// The `1 − alpha` Welch interval, on the relative scale.
    pub ci: Interval,
    /// The always-valid confidence sequence, on the relative scale, when
    /// sequential testing is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequential_ci: Option<Interval>,
    /// The `1 − alpha` credible interval under [`AnalysisOptions::prior`]
    /// (taken on the log of the ratio), on the relative scale.
    pub credible_ci: Option<Interval>,
}

/// One treatment against control.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Index of the treatment in [`Analysis::variants`] (control is 0).
    pub variant: usize,
    /// `mean_t − mean_c`.
    pub absolute: Outcome<Lift>,
    /// `mean_t / mean_c − 1` (delta method).
    pub relative: Outcome<Lift>,
    /// The relative lift's intervals on the log scale (never below −100 %).
    pub relative_interval: Outcome<RelativeInterval>,
    /// Bayesian result on the relative lift (Gaussian model).
    pub bayesian: Outcome<BayesianResult>,
    /// Bayesian result on the absolute lift (Gaussian model), for when the
    /// relative lift is undefined. A proper [`AnalysisOptions::prior`] (on
    /// the relative lift) is put on the absolute scale by the control mean:
    /// `N(μ·|m_c|, σ²·m_c²)`; with a zero control mean only a flat prior can
    /// be used, and a proper one makes this [`StatsError::ZeroControlMean`].
    pub bayesian_absolute: Outcome<BayesianResult>,
}

/// The analysis of one metric: serializable as-is for a results endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// The metric kind analyzed.
    pub metric: MetricKind,
    /// The significance level used.
    pub alpha: f64,
    /// The correction applied to `adjusted_p_value`.
    pub correction: Correction,
    /// Per-variant summaries, control first.
    pub variants: Vec<VariantSummary>,
    /// CUPED's θ and pooled covariate mean, when CUPED was applied.
    pub cuped: Option<Cuped>,
    /// Sample-ratio-mismatch check over all variants.
    pub srm: SrmResult,
    /// For a binomial metric: chance to win, to be best and expected loss
    /// from the exact Beta posteriors ([`binomial_bayes`]); `None` for a
    /// continuous metric.
    pub beta: Option<Outcome<BinomialBayes>>,
    /// One entry per treatment, in input order.
    pub comparisons: Vec<Comparison>,
}

/// Analyzes one metric: summaries per variant, the SRM check, and for each
/// treatment against `control` the absolute and relative Welch tests (with
/// confidence sequences when `options.sequential`), the Bayesian result on the
/// relative lift, and adjusted p-values.
///
/// Errors only for unusable input: invalid options or aggregates, no
/// treatment, weights of the wrong length, covariates on some variants but not
/// all. A test that cannot be computed for one treatment (too few units, zero
/// variance, zero control mean) is [`Outcome::Unavailable`] with the reason,
/// and is left out of the multiple-testing family.
pub fn analyze(
    control: &VariantStats,
    treatments: &[VariantStats],
    options: &AnalysisOptions,
) -> Result<Analysis, StatsError> {
    options.validate()?;
    if treatments.is_empty() {
        return Err(StatsError::invalid("at least one treatment is needed"));
    }
    let all: Vec<VariantStats> = std::iter::once(*control)
        .chain(treatments.iter().copied())
        .collect();
    for v in &all {
        v.validate()?;
    }

    let weights = match &options.weights {
        Some(w) => w.clone(),
        None => vec![1.0; all.len()],
    };
    if weights.len() != all.len() {
        return Err(StatsError::WeightsMismatch {
            variants: all.len(),
            weights: weights.len(),
        });
    }
    let units: Vec<u64> = all.iter().map(|v| v.units).collect();
    let srm = srm(&units, &weights)?;

    let with_covariate = all.iter().filter(|v| v.covariate.is_some()).count();
    if with_covariate != 0 && with_covariate != all.len() && options.cuped {
        return Err(StatsError::invalid(
            "covariate sums are given for some variants but not all",
        ));
    }
    let cuped = if options.cuped && with_covariate == all.len() {
        // Fewer than two units in total: nothing to adjust with yet.
        match cuped(&all) {
            Ok(c) => Some(c),
            Err(StatsError::TooFewUnits { .. }) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };

    let mut variants = Vec::with_capacity(all.len());
    let mut moments: Vec<Result<Moments, StatsError>> = Vec::with_capacity(all.len());
    for v in &all {
        let mut summary = summarize(v, options.alpha)?;
        let m = match &cuped {
            Some(c) => c.adjust(v),
            None => v.moments(options.metric),
        };
        if let (Some(_), Ok(m)) = (&cuped, &m) {
            summary.adjusted_mean = Some(m.mean);
            summary.adjusted_variance = Some(m.variance);
        }
        variants.push(summary);
        moments.push(m);
    }

    let lift = |difference: Result<Difference, StatsError>| -> Result<Lift, StatsError> {
        let difference = difference?;
        let test = welch(&difference, options.alpha)?;
        let sequential = if options.sequential {
            Some(sequential(
                &difference,
                options.alpha,
                options.sequential_tuning_parameter,
            )?)
        } else {
            None
        };
        Ok(Lift {
            test,
            adjusted_p_value: None,
            sequential,
        })
    };

    let mut comparisons = Vec::with_capacity(treatments.len());
    for (index, treatment) in moments.iter().enumerate().skip(1) {
        let pair = match (&moments[0], treatment) {
            (Ok(c), Ok(t)) => Ok((c, t)),
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        };
        let absolute_difference = pair.clone().and_then(|(c, t)| absolute_difference(c, t));
        let bayesian_absolute = absolute_difference.clone().and_then(|d| {
            let control_mean = pair.clone().map(|(c, _)| c.mean)?;
            bayesian(
                &d,
                &absolute_prior(&options.prior, control_mean)?,
                options.alpha,
            )
        });
        let absolute = lift(absolute_difference);
        let relative_interval = pair
            .clone()
            .and_then(|(c, t)| relative_interval(c, t, options));
        let relative_difference = pair.and_then(|(c, t)| relative_difference(c, t));
        let bayesian = relative_difference
            .clone()
            .and_then(|d| bayesian(&d, &options.prior, options.alpha));
        comparisons.push(Comparison {
            variant: index,
            absolute: absolute.into(),
            relative: lift(relative_difference).into(),
            relative_interval: relative_interval.into(),
            bayesian: bayesian.into(),
            bayesian_absolute: bayesian_absolute.into(),
        });
    }

    if options.correction != Correction::None {
        adjust(&mut comparisons, options.correction, |c| &mut c.absolute)?;
        adjust(&mut comparisons, options.correction, |c| &mut c.relative)?;
    }

    let beta = (options.metric == MetricKind::Binomial).then(|| {
        let arms: Vec<(u64, u64)> = all.iter().map(|v| (v.units, v.count)).collect();
        binomial_bayes(&arms).into()
    });

    Ok(Analysis {
        metric: options.metric,
        alpha: options.alpha,
        correction: options.correction,
        variants,
        cuped,
        srm,
        beta,
        comparisons,
    })
}

/// The prior of [`AnalysisOptions::prior`], which is on the relative lift,
/// put on the absolute scale of `m_t − m_c` by the control mean, as
/// GrowthBook does (`prior_type: "relative"` with an absolute difference):
/// mean `μ·|m_c|`, variance `σ²·m_c²`. A proper prior cannot be rescaled
/// when the control mean is zero.
fn absolute_prior(prior: &Prior, control_mean: f64) -> Result<Prior, StatsError> {
    match *prior {
        Prior::Flat => Ok(Prior::Flat),
        Prior::Normal { .. } if control_mean == 0.0 => Err(StatsError::ZeroControlMean),
        Prior::Normal { mean, variance } => Ok(Prior::Normal {
            mean: mean * control_mean.abs(),
            variance: variance * control_mean * control_mean,
        }),
    }
}

/// The relative lift's intervals on the log scale, mapped back.
fn relative_interval(
    control: &Moments,
    treatment: &Moments,
    options: &AnalysisOptions,
) -> Result<RelativeInterval, StatsError> {
    let log = log_ratio_difference(control, treatment)?;
    let back = |i: Interval| Interval {
        lower: i.lower.exp() - 1.0,
        upper: i.upper.exp() - 1.0,
    };
    let test = welch(&log, options.alpha)?;
    let sequential_ci = if options.sequential {
        Some(back(
            sequential(&log, options.alpha, options.sequential_tuning_parameter)?.ci,
        ))
    } else {
        None
    };
    let credible_ci = bayesian(&log, &options.prior, options.alpha)
        .ok()
        .map(|b| back(b.ci));
    Ok(RelativeInterval {
        method: "log_delta",
        estimate: treatment.mean / control.mean - 1.0,
        ci: back(test.ci),
        sequential_ci,
        credible_ci,
    })
}

/// Fills `adjusted_p_value` of the computed lifts selected by `field`.
fn adjust(
    comparisons: &mut [Comparison],
    correction: Correction,
    field: impl Fn(&mut Comparison) -> &mut Outcome<Lift>,
) -> Result<(), StatsError> {
    let mut lifts: Vec<&mut Lift> = comparisons
        .iter_mut()
        .filter_map(|c| match field(c) {
            Outcome::Computed(lift) => Some(lift),
            Outcome::Unavailable { .. } => None,
        })
        .collect();
    let p_values: Vec<f64> = lifts.iter().map(|l| l.test.p_value).collect();
    let adjusted = correction.apply(&p_values)?;
    for (lift, p) in lifts.iter_mut().zip(adjusted) {
        lift.adjusted_p_value = Some(p);
    }
    Ok(())
}
