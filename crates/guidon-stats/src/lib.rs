//! Guidon's experiment statistics: for one metric, each treatment against
//! control, from per-variant aggregates.
//!
//! The crate is pure: no I/O, no clock, no randomness, and no panic on any
//! input. Every function validates its arguments and returns a
//! [`StatsError`] (too few units, zero variance, zero control mean, weights
//! mismatch, invalid input such as NaN) rather than a `NaN` or a panic.
//! [`analyze`] runs everything and returns an [`Analysis`] that serializes
//! straight to the JSON of a results endpoint.
//!
//! ```
//! use guidon_stats::{AnalysisOptions, VariantStats, analyze};
//!
//! let control = VariantStats::binomial(28, 14);
//! let treatment = VariantStats::binomial(30, 16);
//! let analysis = analyze(&control, &[treatment], &AnalysisOptions::default()).unwrap();
//! let relative = analysis.comparisons[0].relative.computed().unwrap();
//! assert!((relative.test.estimate - 0.066_667).abs() < 1e-5);
//! assert!((relative.test.p_value - 0.807_07).abs() < 1e-5);
//! ```
//!
//! # Inputs
//!
//! A variant of a metric is given by [`VariantStats`]: the number of units
//! `n`, the number that converted, `Σy` and `Σy²` of the per-unit values `y`,
//! and optionally a pre-exposure covariate's `Σx`, `Σx²`, `Σxy` for CUPED.
//! The tests work from [`Moments`] (`n`, mean, variance of `y`), which
//! [`VariantStats::moments`] derives according to the [`MetricKind`]:
//!
//! - **binomial** (conversion): mean `p = count/n`, variance `p(1 − p)`;
//! - **continuous** (value): mean `Σy/n`, sample variance
//!   `(Σy² − (Σy)²/n)/(n − 1)`.
//!
//! These are GrowthBook's `ProportionStatistic` and `SampleMeanStatistic`.
//! The binomial variance has denominator `n`, not `n − 1`: that is the choice
//! that reproduces the reference values (14/28 vs 16/30: p = 0.80707 with
//! `n`, 0.81038 with `n − 1`).
//!
//! # Methods and sources
//!
//! - **Per-variant summary** ([`summarize`]): units, conversions, rate with
//!   its **Wilson score interval** ([`wilson`]; Wilson 1927, as statsmodels'
//!   `proportion_confint(method="wilson")`), mean and sample variance.
//! - **Absolute and relative lift with a Welch test** ([`welch_absolute`],
//!   [`welch_relative`], or [`absolute_difference`] / [`relative_difference`]
//!   then [`welch`]). Absolute: `m_t − m_c`, variance `v_t/n_t + v_c/n_c`.
//!   Relative: `m_t/m_c − 1`, variance by the delta method
//!   `v_t/(n_t·m_c²) + v_c·m_t²/(n_c·m_c⁴)` (GrowthBook's frequentist
//!   engine). Degrees of freedom by Welch–Satterthwaite; two-sided p-value and
//!   `1 − α` interval from the Student t distribution. A zero control mean
//!   makes the relative lift [`StatsError::ZeroControlMean`].
//! - **Bayesian** ([`bayesian`]): a Gaussian model of the effect,
//!   `estimate ~ N(δ, SE²)`, with a flat prior (default) or a proper normal
//!   [`Prior`]; the posterior gives the chance to beat control `P(δ > 0)`, a
//!   credible interval, and the expected losses ("risk") of shipping control,
//!   `E[max(δ, 0)]`, and of shipping the treatment, `E[max(−δ, 0)]`, as
//!   GrowthBook's `EffectBayesianABTest` defines them. [`analyze`] applies it
//!   to the relative lift, and to the absolute lift with the prior (given on
//!   the relative lift) rescaled by the control mean, `N(μ·|m_c|, σ²·m_c²)`,
//!   as GrowthBook does.
//! - **Relative intervals on the log scale** ([`log_ratio_difference`],
//!   [`RelativeInterval`]): `ln(m_t/m_c)` with the delta-method variance
//!   `v_t/(n_t·m_t²) + v_c/(n_c·m_c²)`, its Welch interval (or confidence
//!   sequence, or credible interval) mapped back by `exp(·) − 1`, so a
//!   relative interval never falls below −100 %. Needs both means positive.
//! - **Beta posteriors for conversion metrics** ([`binomial_bayes`]): each
//!   arm's rate `Beta(1 + converted, 1 + units − converted)`; the chance to
//!   beat control, the chance of each arm to be best, and the expected
//!   losses, by numerical integration (Simpson's rule, no Monte Carlo), not
//!   by a normal approximation (except above [`EXACT_LIMIT`] units, said in
//!   the result).
//! - **The headline** ([`headline`]): the deciding test is the absolute one,
//!   the headline number the relative lift when it exists (else the
//!   absolute), every disagreement said in a note, and the verdict withheld
//!   when a health check fails.
//! - **Sequential testing** ([`sequential`]): asymptotic confidence sequences
//!   of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas (2023), "Time-uniform
//!   central limit theory and asymptotic confidence sequences" (eq. 9, ρ from
//!   eq. 161), as GrowthBook implements them: with `n` units in both variants
//!   and ρ derived from the tuning parameter `N*` (default 5000,
//!   [`DEFAULT_TUNING_PARAMETER`]) by [`sequential_rho`], the half-width is
//!   `SE·sqrt(2(nρ²+1)/(nρ²) · ln(sqrt(nρ²+1)/α))`, valid however often the
//!   results are looked at; the always-valid p-value inverts it.
//! - **Sample-ratio mismatch** ([`srm`]): Pearson's chi-square of the
//!   observed units against the configured weights, flagged when
//!   `p < 0.001` ([`SRM_P_THRESHOLD`]) and every *expected* count is at least
//!   8 ([`SRM_MIN_EXPECTED`]; expected rather than observed so that a variant
//!   receiving no traffic at all is still flagged).
//! - **Multiple testing** ([`holm`], [`benjamini_hochberg`], [`Correction`]):
//!   Holm–Bonferroni step-down (family-wise error) and Benjamini–Hochberg
//!   step-up (false discovery rate) adjusted p-values, monotone and capped at
//!   1, as statsmodels' `multipletests`.
//! - **CUPED** ([`cuped`], [`Cuped::adjust`]; Deng, Xu, Kohavi & Walker 2013):
//!   θ = Cov(x, y)/Var(x) pooled over all units of all variants, and per
//!   variant the moments of `y − θ(x − x̄)`: mean `ȳ − θ(x̄_v − x̄)`, variance
//!   `Var(y) + θ²Var(x) − 2θCov(x, y)`. The adjusted moments then go through
//!   the same tests. CUPED works on `Σy`, `Σy²` and `Σxy` with sample (`n − 1`)
//!   moments whatever the [`MetricKind`], so for a conversion metric `sum`
//!   must be the number of conversions ([`VariantStats::binomial`]). Unlike
//!   GrowthBook, which divides the adjusted difference by the unadjusted
//!   control mean, the adjusted means here are centred on the pooled x̄ and
//!   the relative lift is their ratio.
//! - **Two-proportion z-test** ([`two_proportion_z_test`]): pooled, as
//!   statsmodels' `proportions_ztest`.
//!
//! The reference values the tests check were computed independently with
//! scipy and statsmodels (`testdata/stats/reference.py`,
//! `beta_reference.py`) and with GrowthBook's `gbstats`
//! (`gbstats_reference.py`); `docs/statistics.md` lists every place where
//! the methods differ from GrowthBook's by design, with figures.

mod analysis;
mod bayes;
mod beta;
mod cuped;
mod dist;
mod error;
mod headline;
mod multiple;
mod power;
mod proportion;
mod sequential;
mod srm;
mod summary;
mod welch;

pub use analysis::{
    Analysis, AnalysisOptions, Comparison, Lift, Outcome, RelativeInterval, analyze,
};
pub use bayes::{BayesianResult, Prior, bayesian};
pub use beta::{BetaComparison, BinomialBayes, EXACT_LIMIT, binomial_bayes};
pub use cuped::{Cuped, cuped};
pub use error::StatsError;
pub use headline::{Headline, Method, Reading, Risk, Verdict, headline};
pub use multiple::{Correction, benjamini_hochberg, holm};
pub use power::{Baseline, SampleSize, minimum_detectable_effect, sample_size};
pub use proportion::{Interval, ZTest, two_proportion_z_test, wilson};
pub use sequential::{DEFAULT_TUNING_PARAMETER, SequentialResult, sequential, sequential_rho};
pub use srm::{SRM_MIN_EXPECTED, SRM_P_THRESHOLD, SrmResult, srm};
pub use summary::{Covariate, MetricKind, Moments, VariantStats, VariantSummary, summarize};
pub use welch::{
    Difference, TTest, absolute_difference, log_ratio_difference, relative_difference, welch,
    welch_absolute, welch_relative,
};
