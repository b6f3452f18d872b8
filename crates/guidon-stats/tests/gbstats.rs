//! guidon-stats against GrowthBook's own stats engine, `gbstats` from PyPI
//! (pinned in `testdata/stats/requirements.txt`), on the same summary
//! statistics: `testdata/stats/gbstats_reference.py` →
//! `gbstats_reference.json`, regenerated and checked by `.ci/run`.
//!
//! Where the two methods are the same (the Welch tests, absolute and
//! relative; the confidence sequences; the Gaussian Bayesian model with the
//! same prior), every figure must agree to [`TOL`]. Where guidon reads a
//! result differently by design (docs/statistics.md: the relative interval
//! on the log scale, the Beta posteriors of a conversion metric, a result
//! where gbstats gives none), the test checks guidon's figure against the
//! alternative computed independently with scipy in the same file, and the
//! documented relationship between the two.

use guidon_stats::{
    Analysis, AnalysisOptions, Comparison, Correction, Headline, Interval, Lift, Method,
    MetricKind, Prior, StatsError, VariantStats, analyze, headline,
};
use serde::Deserialize;

/// Relative tolerance where guidon and gbstats compute the same thing.
const TOL: f64 = 1e-9;
/// Absolute tolerance of guidon's Simpson integration of the Beta
/// posteriors against scipy's adaptive quadrature (as `reference.rs`).
const BETA_TOL: f64 = 1e-7;

const REFERENCE: &str = include_str!("../../../testdata/stats/gbstats_reference.json");

#[derive(Deserialize)]
struct Reference {
    sequential_tuning_parameter: f64,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct PriorJson {
    mean: f64,
    variance: f64,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    metric: MetricKind,
    alpha: f64,
    prior: Option<PriorJson>,
    variants: Vec<VariantStats>,
    beta_method: Option<String>,
    comparisons: Vec<CaseComparison>,
}

#[derive(Deserialize)]
struct CaseComparison {
    variant: usize,
    gbstats: Gbstats,
    independent: Independent,
}

#[derive(Deserialize)]
struct Gbstats {
    frequentist_absolute: GbFrequentist,
    frequentist_relative: GbFrequentist,
    sequential_absolute: GbSequential,
    sequential_relative: GbSequential,
    bayesian_absolute: GbBayesian,
    bayesian_relative: GbBayesian,
}

#[derive(Deserialize)]
struct GbFrequentist {
    expected: f64,
    ci: [f64; 2],
    p_value: f64,
    std_error: f64,
    error: Option<String>,
}

#[derive(Deserialize)]
struct GbSequential {
    expected: f64,
    ci: [f64; 2],
    p_value: f64,
    error: Option<String>,
}

#[derive(Deserialize)]
struct GbBayesian {
    chance_to_win: f64,
    expected: f64,
    std_dev: f64,
    ci: [f64; 2],
    risk: [f64; 2],
    risk_type: String,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Independent {
    welch_absolute: IndependentWelch,
    log_relative: Option<LogRelative>,
    beta: Option<BetaFigures>,
    beta_exact: Option<BetaFigures>,
}

#[derive(Deserialize)]
struct IndependentWelch {
    estimate: f64,
    std_error: f64,
    p_value: f64,
    ci: [f64; 2],
}

#[derive(Deserialize)]
struct LogRelative {
    estimate: f64,
    ci: [f64; 2],
    credible_ci: [f64; 2],
    sequential_ci: [f64; 2],
}

#[derive(Deserialize)]
struct BetaFigures {
    chance_to_win: f64,
    risk_control: f64,
    risk_treatment: f64,
}

/// `got` equals `want` to [`TOL`] relative; `scale` is the size of the
/// figure's neighbours (an interval's half-width, a standard error), so that
/// a bound that is zero up to cancellation is compared at that scale.
#[track_caller]
fn close(what: &str, got: f64, want: f64, scale: f64) {
    let tol = TOL * got.abs().max(want.abs()).max(scale.abs());
    assert!(
        (got - want).abs() <= tol,
        "{what}: guidon {got:e}, reference {want:e} (gap {:e}, tolerance {tol:e})",
        (got - want).abs()
    );
}

/// A p-value: [`TOL`] relative, or 1e-15 absolute, because gbstats takes
/// `2·(1 − cdf(|t|))`, which cannot resolve a p-value below ~1e-16, where
/// guidon uses the survival function.
#[track_caller]
fn close_p(what: &str, got: f64, want: f64) {
    close(what, got, want, 1e-6);
}

#[track_caller]
fn close_interval(what: &str, got: &Interval, want: [f64; 2]) {
    let scale = (want[1] - want[0]).abs();
    close(&format!("{what} lower"), got.lower, want[0], scale);
    close(&format!("{what} upper"), got.upper, want[1], scale);
}

#[track_caller]
fn computed<'a, T>(what: &str, outcome: &'a guidon_stats::Outcome<T>) -> &'a T {
    match outcome {
        guidon_stats::Outcome::Computed(value) => value,
        guidon_stats::Outcome::Unavailable { reason } => panic!("{what}: unavailable: {reason}"),
    }
}

fn reference() -> Reference {
    serde_json::from_str(REFERENCE).expect("testdata/stats/gbstats_reference.json")
}

fn options(case: &Case, tuning: f64) -> AnalysisOptions {
    AnalysisOptions {
        metric: case.metric,
        alpha: case.alpha,
        prior: match &case.prior {
            None => Prior::Flat,
            Some(p) => Prior::Normal {
                mean: p.mean,
                variance: p.variance,
            },
        },
        sequential: true,
        sequential_tuning_parameter: tuning,
        weights: None,
        correction: Correction::None,
        cuped: false,
    }
}

fn analysis(case: &Case, tuning: f64) -> Analysis {
    analyze(
        &case.variants[0],
        &case.variants[1..],
        &options(case, tuning),
    )
    .unwrap_or_else(|e| panic!("{}: analyze: {e}", case.name))
}

/// Every case, with its analysis and each comparison beside its reference.
fn each_comparison(mut check: impl FnMut(&Case, &Analysis, &Comparison, &CaseComparison, &str)) {
    let reference = reference();
    for case in &reference.cases {
        let analysis = analysis(case, reference.sequential_tuning_parameter);
        assert_eq!(analysis.comparisons.len(), case.comparisons.len());
        for (got, want) in analysis.comparisons.iter().zip(&case.comparisons) {
            assert_eq!(got.variant, want.variant);
            let what = format!("{} (variant {})", case.name, want.variant);
            check(case, &analysis, got, want, &what);
        }
    }
}

fn lift_matches(what: &str, lift: &Lift, gb: &GbFrequentist) {
    let t = &lift.test;
    close(
        &format!("{what} estimate"),
        t.estimate,
        gb.expected,
        t.std_error,
    );
    close(&format!("{what} std error"), t.std_error, gb.std_error, 0.0);
    close_p(&format!("{what} p-value"), t.p_value, gb.p_value);
    close_interval(&format!("{what} ci"), &t.ci, gb.ci);
}

/// The reference covers what the issue asks: binomial and continuous, 2 and
/// 3 arms, small and large, flat and proper priors, and the edge cases.
#[test]
fn the_reference_covers_the_experiments() {
    let reference = reference();
    let cases = &reference.cases;
    let has = |f: &dyn Fn(&Case) -> bool| cases.iter().any(f);
    for kind in [MetricKind::Binomial, MetricKind::Continuous] {
        assert!(has(&|c| c.metric == kind && c.variants.len() == 2));
        assert!(has(&|c| c.metric == kind && c.variants.len() == 3));
        assert!(has(&|c| c.metric == kind && c.variants[0].units < 200));
        assert!(has(&|c| c.metric == kind && c.variants[0].units >= 100_000));
        assert!(has(&|c| c.metric == kind && c.prior.is_some()));
    }
    assert!(has(
        &|c| c.metric == MetricKind::Ratio && c.variants.len() == 2
    ));
    assert!(has(
        &|c| c.metric == MetricKind::Ratio && c.variants.len() == 3
    ));
    assert!(has(
        &|c| c.beta_method.as_deref() == Some("beta_posterior_normal")
    ));
    assert!(has(&|c| c.alpha != 0.05));
    let errors = cases
        .iter()
        .flat_map(|c| &c.comparisons)
        .filter(|c| c.gbstats.frequentist_absolute.error.is_some())
        .count();
    assert!(errors >= 2, "the edge cases where gbstats gives no result");
    let comparisons: usize = cases.iter().map(|c| c.comparisons.len()).sum();
    assert!(comparisons >= 20, "{comparisons} comparisons");
}

/// The Welch tests, absolute and relative (delta method), are the same
/// method in both: estimate, standard error, p-value and interval agree.
/// guidon's absolute test also equals scipy's `ttest_ind_from_stats`.
#[test]
fn frequentist_lifts_match_gbstats() {
    let mut checked = 0;
    each_comparison(|_, _, got, want, what| {
        let absolute = computed(what, &got.absolute);
        let independent = &want.independent.welch_absolute;
        let t = &absolute.test;
        close(
            &format!("{what} scipy estimate"),
            t.estimate,
            independent.estimate,
            t.std_error,
        );
        close(
            &format!("{what} scipy std error"),
            t.std_error,
            independent.std_error,
            0.0,
        );
        close_p(
            &format!("{what} scipy p-value"),
            t.p_value,
            independent.p_value,
        );
        close_interval(&format!("{what} scipy ci"), &t.ci, independent.ci);
        let gb = &want.gbstats;
        if gb.frequentist_absolute.error.is_some() {
            return;
        }
        lift_matches(
            &format!("{what} absolute"),
            absolute,
            &gb.frequentist_absolute,
        );
        let relative = computed(what, &got.relative);
        lift_matches(
            &format!("{what} relative"),
            relative,
            &gb.frequentist_relative,
        );
        checked += 1;
    });
    assert!(checked >= 18, "{checked}");
}

/// The confidence sequences (Waudby-Smith et al., N* = 5000) are the same
/// method in both, absolute and relative.
#[test]
fn sequential_lifts_match_gbstats() {
    each_comparison(|_, _, got, want, what| {
        let gb = &want.gbstats;
        if gb.sequential_absolute.error.is_some() {
            return;
        }
        for (scale, lift, gb) in [
            ("absolute", &got.absolute, &gb.sequential_absolute),
            ("relative", &got.relative, &gb.sequential_relative),
        ] {
            let lift = computed(what, lift);
            let s = lift.sequential.as_ref().expect("sequential is on");
            close(
                &format!("{what} {scale} estimate"),
                lift.test.estimate,
                gb.expected,
                lift.test.std_error,
            );
            close_interval(&format!("{what} {scale} sequential ci"), &s.ci, gb.ci);
            close_p(
                &format!("{what} {scale} sequential p"),
                s.p_value,
                gb.p_value,
            );
        }
    });
}

/// Risks against gbstats'. A risk in the tail is a difference of two terms
/// of the posterior's size (μΦ(z) and σφ(z)), so they are compared to 1e-9
/// relative or 1e-12 of the posterior sd.
#[track_caller]
fn close_risks(what: &str, got: [f64; 2], gb: &GbBayesian) {
    let scale = 1e-3 * gb.std_dev;
    close(&format!("{what} risk control"), got[0], gb.risk[0], scale);
    close(&format!("{what} risk treatment"), got[1], gb.risk[1], scale);
}

/// The Gaussian Bayesian model is the same in both: on the relative lift
/// with the prior as given, and on the absolute lift with that relative
/// prior rescaled by the control mean, `N(μ·|m_c|, σ²·m_c²)`, as gbstats
/// does for `prior_type: "relative"`.
#[test]
fn gaussian_bayesian_results_match_gbstats() {
    let mut proper = 0;
    each_comparison(|case, _, got, want, what| {
        let gb = &want.gbstats;
        if gb.bayesian_relative.error.is_some() {
            return;
        }
        proper += usize::from(case.prior.is_some());
        for (scale, result, gb) in [
            ("relative", &got.bayesian, &gb.bayesian_relative),
            ("absolute", &got.bayesian_absolute, &gb.bayesian_absolute),
        ] {
            assert_eq!(gb.risk_type, scale);
            let r = computed(&format!("{what} bayesian {scale}"), result);
            let what = format!("{what} bayesian {scale}");
            close(
                &format!("{what} chance to win"),
                r.chance_to_win,
                gb.chance_to_win,
                0.0,
            );
            close(
                &format!("{what} expected"),
                r.expected,
                gb.expected,
                r.std_dev,
            );
            close(&format!("{what} sd"), r.std_dev, gb.std_dev, 0.0);
            close_interval(&format!("{what} ci"), &r.ci, gb.ci);
            close_risks(&what, [r.risk_control, r.risk_treatment], gb);
        }
    });
    assert!(proper >= 3, "{proper} comparisons with a proper prior");
}

/// gbstats' relative interval `r ± h` (delta method on the ratio) mapped to
/// the log scale. The two delta-method variances differ by exactly the
/// factor `(m_t/m_c)²`: `SE_delta = (1 + r)·SE_log`. So with the same
/// quantile, guidon's interval `exp(ln(1 + r) ± q·SE_log) − 1` is
/// `(1 + r)·exp(±h/(1 + r)) − 1`, above −100 % whatever `h`.
fn log_scale_from_gbstats(r: f64, ci: [f64; 2]) -> [f64; 2] {
    let h = (ci[1] - ci[0]) / 2.0;
    let g = 1.0 + r;
    [g * (-h / g).exp() - 1.0, g * (h / g).exp() - 1.0]
}

/// The frequentist headline: the deciding test is gbstats' absolute Welch
/// test; the relative reading differs by design, its interval taken on the
/// log scale (`exp(ln(m_t/m_c) ± t·SE_log) − 1`, as computed independently),
/// where gbstats' delta-method interval is symmetric around the estimate and
/// can fall below −100 %.
#[test]
fn frequentist_headline_is_the_absolute_test_with_a_log_scale_relative_interval() {
    let mut below_minus_100 = 0;
    each_comparison(|_, analysis, got, want, what| {
        let h = headline(analysis, got, Method::Frequentist, None);
        assert_eq!(h.test, "welch_absolute", "{what}");
        let gb = &want.gbstats;
        let absolute = h.absolute.expect("absolute reading");
        assert_eq!(absolute.ci_method, "welch");
        close_interval(
            &format!("{what} absolute reading"),
            &absolute.ci,
            want.independent.welch_absolute.ci,
        );
        let p = h.p_value.expect("p-value");
        close_p(
            &format!("{what} headline p"),
            p,
            want.independent.welch_absolute.p_value,
        );
        assert_eq!(h.significant, p < analysis.alpha, "{what}");
        let Some(log) = &want.independent.log_relative else {
            // A mean that is not positive: no relative interval, the
            // headline is the absolute lift.
            assert_eq!(h.scale, "absolute", "{what}");
            assert!(h.relative.is_none(), "{what}");
            assert!(
                !h.notes.is_empty(),
                "{what}: the missing relative lift is said"
            );
            return;
        };
        let relative = h.relative.expect("relative reading");
        assert_eq!((h.scale, relative.ci_method), ("relative", "log_delta"));
        close(
            &format!("{what} relative lift"),
            relative.lift,
            log.estimate,
            0.0,
        );
        close_interval(&format!("{what} log-scale ci"), &relative.ci, log.ci);
        assert!(relative.ci.lower > -1.0, "{what}: {:?}", relative.ci);
        if gb.frequentist_relative.error.is_some() {
            return;
        }
        // The documented relationship: same estimate; gbstats' interval is
        // estimate ± t·SE_delta, guidon's is asymmetric, wider above.
        close(
            &format!("{what} gbstats estimate"),
            relative.lift,
            gb.frequentist_relative.expected,
            0.0,
        );
        let [lo, hi] = gb.frequentist_relative.ci;
        close(
            &format!("{what} gbstats symmetric"),
            hi - relative.lift,
            relative.lift - lo,
            0.0,
        );
        assert!(
            relative.ci.upper - relative.lift > relative.lift - relative.ci.lower,
            "{what}"
        );
        // And exactly: guidon's interval is gbstats' mapped to the log scale.
        let mapped = log_scale_from_gbstats(relative.lift, gb.frequentist_relative.ci);
        close_interval(&format!("{what} from gbstats"), &relative.ci, mapped);
        below_minus_100 += usize::from(lo < -1.0);
    });
    assert!(
        below_minus_100 >= 1,
        "a case where gbstats' interval falls below -100 %"
    );
}

/// The sequential headline: gbstats' absolute confidence sequence decides;
/// the relative reading is the confidence sequence on the log scale.
#[test]
fn sequential_headline_follows_the_absolute_confidence_sequence() {
    each_comparison(|_, analysis, got, want, what| {
        let h = headline(analysis, got, Method::Sequential, None);
        assert_eq!(h.test, "confidence_sequence_absolute");
        let gb = &want.gbstats.sequential_absolute;
        if gb.error.is_none() {
            let absolute = h.absolute.expect("absolute reading");
            close_interval(&format!("{what} absolute sequence"), &absolute.ci, gb.ci);
            close_p(
                &format!("{what} sequential p"),
                h.p_value.unwrap_or(f64::NAN),
                gb.p_value,
            );
        }
        if let Some(log) = &want.independent.log_relative {
            relative_reading_is(what, &h, "log_delta_confidence_sequence", log.sequential_ci);
            let gb = &want.gbstats.sequential_relative;
            let mapped = log_scale_from_gbstats(gb.expected, gb.ci);
            relative_reading_is(what, &h, "log_delta_confidence_sequence", mapped);
        }
    });
}

/// The headline's relative reading is the log-scale interval `ci` made by
/// `method`.
#[track_caller]
fn relative_reading_is(what: &str, h: &Headline, method: &str, ci: [f64; 2]) {
    let relative = h.relative.expect("relative reading");
    assert_eq!(relative.ci_method, method, "{what}");
    close_interval(&format!("{what} {method}"), &relative.ci, ci);
}

fn beta_matches(what: &str, h: &Headline, beta: &BetaFigures) {
    let ctw = h.chance_to_win.expect("chance to win");
    let risk = h.risk.expect("risk");
    assert_eq!(risk.scale, "absolute", "{what}");
    for (name, got, want) in [
        ("chance to win", ctw, beta.chance_to_win),
        ("risk control", risk.control, beta.risk_control),
        ("risk treatment", risk.treatment, beta.risk_treatment),
    ] {
        assert!(
            (got - want).abs() < BETA_TOL,
            "{what} Beta {name}: guidon {got}, scipy {want}"
        );
    }
}

/// The Bayesian headline. For a conversion metric guidon's chance to win and
/// risks come from the Beta(1 + converted, 1 + units − converted)
/// posteriors (as computed independently with scipy's quadrature), where
/// gbstats uses a Gaussian on the relative lift; above 1,000,000 units the
/// Beta is replaced by the normal with its mean and variance, within 1e-5 of
/// the exact Beta. For a value metric both use the Gaussian on the relative
/// lift and agree. The absolute reading's credible interval is gbstats'
/// (the prior rescaled); the relative one is taken on the log scale.
#[test]
fn bayesian_headline_uses_beta_posteriors_for_conversions() {
    let mut beta_cases = 0;
    each_comparison(|case, analysis, got, want, what| {
        let h = headline(analysis, got, Method::Bayesian, None);
        let gb = &want.gbstats;
        match case.metric {
            MetricKind::Binomial => {
                let method = case.beta_method.as_deref();
                assert_eq!(h.chance_to_win_method, method, "{what}");
                assert_eq!(h.test, "chance_to_win_beta");
                let beta = want.independent.beta.as_ref().expect("beta figures");
                beta_matches(what, &h, beta);
                if let Some(exact) = &want.independent.beta_exact {
                    let ctw = h.chance_to_win.unwrap_or(f64::NAN);
                    assert!(
                        (ctw - exact.chance_to_win).abs() < 1e-5,
                        "{what}: {ctw} vs exact"
                    );
                }
                beta_cases += 1;
            }
            MetricKind::Continuous | MetricKind::Ratio => {
                assert_eq!(h.chance_to_win_method, Some("normal_relative"));
                assert_eq!(h.test, "chance_to_win_normal");
                let g = &gb.bayesian_relative;
                let risk = h.risk.expect("risk");
                assert_eq!(risk.scale, "relative");
                close(
                    &format!("{what} ctw"),
                    h.chance_to_win.unwrap_or(f64::NAN),
                    g.chance_to_win,
                    0.0,
                );
                close_risks(what, [risk.control, risk.treatment], g);
            }
        }
        let ctw = h.chance_to_win.unwrap_or(f64::NAN);
        let decided = ctw > 1.0 - analysis.alpha / 2.0 || ctw < analysis.alpha / 2.0;
        assert_eq!(h.significant, decided, "{what}");
        if gb.bayesian_absolute.error.is_none() {
            let absolute = h.absolute.expect("absolute reading");
            assert_eq!(absolute.ci_method, "credible");
            close_interval(
                &format!("{what} credible"),
                &absolute.ci,
                gb.bayesian_absolute.ci,
            );
        }
        if let Some(log) = &want.independent.log_relative {
            relative_reading_is(what, &h, "log_delta_credible", log.credible_ci);
            if case.prior.is_none() {
                // Flat: gbstats' credible interval is r ± z·SE_delta.
                let g = &gb.bayesian_relative;
                let mapped = log_scale_from_gbstats(g.expected, g.ci);
                relative_reading_is(what, &h, "log_delta_credible", mapped);
            }
        }
    });
    assert!(beta_cases >= 10, "{beta_cases}");
}

/// Where gbstats gives no result (a zero variance in one arm, a zero
/// control mean), it returns its uninformative default (p = 1, interval
/// [0, 0], chance to win 0.5) with an error message; guidon still gives the
/// absolute test (equal to scipy's) and the Beta chance to win, says why the
/// relative lift is missing, and decides.
#[test]
fn where_gbstats_gives_no_result_guidon_still_answers() {
    let mut seen = 0;
    each_comparison(|_, analysis, got, want, what| {
        let gb = &want.gbstats;
        let Some(error) = &gb.frequentist_absolute.error else {
            return;
        };
        seen += 1;
        assert!(
            ["ZERO_NEGATIVE_VARIANCE", "ZERO_NEGATIVE_BASELINE_VARIATION"]
                .contains(&error.as_str()),
            "{what}: {error}"
        );
        assert_eq!(gb.frequentist_absolute.p_value, 1.0);
        assert_eq!(gb.frequentist_absolute.ci, [0.0, 0.0]);
        assert_eq!(gb.bayesian_relative.chance_to_win, 0.5);
        let h = headline(analysis, got, Method::Frequentist, None);
        assert_eq!(h.scale, "absolute", "{what}");
        let p = h.p_value.expect("guidon decides");
        assert!(p < 0.05, "{what}: p = {p}");
        assert!(h.significant);
        assert!(matches!(
            got.relative.reason(),
            Some(StatsError::NonPositiveMean { .. } | StatsError::ZeroControlMean)
        ));
        let b = headline(analysis, got, Method::Bayesian, None);
        let ctw = b.chance_to_win.expect("Beta chance to win");
        assert!(!(0.01..=0.99).contains(&ctw), "{what}: {ctw}");
    });
    assert_eq!(seen, 2);
}

/// A proper prior (on the relative lift) with a zero control mean cannot be
/// put on the absolute scale: the absolute Gaussian result says so rather
/// than applying a relative prior to an absolute difference.
#[test]
fn a_relative_prior_needs_a_control_mean_for_the_absolute_lift() {
    let control = VariantStats::new(50, 0, 0.0, 0.0);
    let treatment = VariantStats::new(50, 10, 20.0, 60.0);
    let mut options = AnalysisOptions {
        metric: MetricKind::Continuous,
        prior: Prior::Normal {
            mean: 0.0,
            variance: 0.01,
        },
        ..AnalysisOptions::default()
    };
    let a = analyze(&control, &[treatment], &options).expect("analyze");
    let c = &a.comparisons[0];
    assert_eq!(
        c.bayesian_absolute.reason(),
        Some(&StatsError::ZeroControlMean)
    );
    assert!(c.absolute.computed().is_some());
    options.prior = Prior::Flat;
    let a = analyze(&control, &[treatment], &options).expect("analyze");
    let flat = computed("flat", &a.comparisons[0].bayesian_absolute);
    let absolute = computed("absolute", &a.comparisons[0].absolute);
    close("flat prior", flat.expected, absolute.test.estimate, 0.0);
}

/// The figures of docs/statistics.md: where the two differ by design, how
/// much (`cargo test --workspace --test gbstats -- --nocapture`). The Beta
/// and the Gaussian chance to win of a conversion metric converge as the
/// arms grow: within 1e-3 from 100,000 units per arm (flat prior), while in
/// small arms they differ by more than 0.1.
#[test]
fn differences_by_design_shrink_as_arms_grow() {
    let (mut large, mut small_gap) = (0, 0.0_f64);
    println!("case | gbstats relative CI | guidon log-scale CI | gbstats P(win) | guidon P(win)");
    each_comparison(|case, analysis, got, want, what| {
        let gb = &want.gbstats;
        let f = headline(analysis, got, Method::Frequentist, None);
        let b = headline(analysis, got, Method::Bayesian, None);
        let units = case.variants.iter().map(|v| v.units).min().unwrap_or(0);
        if case.metric == MetricKind::Binomial
            && case.prior.is_none()
            && gb.bayesian_relative.error.is_none()
        {
            let gap =
                (gb.bayesian_relative.chance_to_win - b.chance_to_win.unwrap_or(f64::NAN)).abs();
            if units >= 100_000 {
                assert!(gap < 1e-3, "{what}: P(win) differs by {gap}");
                large += 1;
            } else if units < 200 {
                small_gap = small_gap.max(gap);
            }
        }
        let rel = |ci: [f64; 2]| format!("[{:+.2}%, {:+.2}%]", ci[0] * 100.0, ci[1] * 100.0);
        let log = f
            .relative
            .map_or("none".to_owned(), |r| rel([r.ci.lower, r.ci.upper]));
        let gb_rel = match &gb.frequentist_relative.error {
            Some(e) => e.clone(),
            None => rel(gb.frequentist_relative.ci),
        };
        println!(
            "{what} | {gb_rel} | {log} | {:.4} | {:.4} ({})",
            gb.bayesian_relative.chance_to_win,
            b.chance_to_win.unwrap_or(f64::NAN),
            b.chance_to_win_method.unwrap_or("none"),
        );
    });
    assert!(large >= 3, "{large}");
    assert!(small_gap > 0.1, "{small_gap}");
}
