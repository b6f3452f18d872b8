//! Checks the crate against values computed independently with scipy and
//! statsmodels (`testdata/stats/reference.py` → `reference.json`), and the
//! reference values of the issue.

use guidon_stats::{
    AnalysisOptions, Correction, Difference, Interval, MetricKind, Moments, Prior, StatsError,
    TTest, VariantStats, absolute_difference, analyze, bayesian, benjamini_hochberg, cuped, holm,
    relative_difference, sequential, srm, two_proportion_z_test, welch, wilson,
};
use serde::Deserialize;

const TOL: f64 = 1e-5;
const SRM_TOL: f64 = 1e-9;

const REFERENCE: &str = include_str!("../../../testdata/stats/reference.json");

#[derive(Deserialize)]
struct Reference {
    wilson: Vec<WilsonCase>,
    welch: Vec<WelchCase>,
    bayesian: Vec<BayesianCase>,
    sequential: Vec<SequentialCase>,
    srm: Vec<SrmCase>,
    holm: Vec<CorrectionCase>,
    benjamini_hochberg: Vec<CorrectionCase>,
    z_test: Vec<ZCase>,
    cuped: Vec<CupedCase>,
}

#[derive(Deserialize)]
struct WilsonCase {
    successes: u64,
    trials: u64,
    alpha: f64,
    ci: [f64; 2],
}

#[derive(Deserialize)]
struct ExpectedT {
    estimate: f64,
    std_error: f64,
    statistic: f64,
    df: f64,
    p_value: f64,
    ci: [f64; 2],
}

#[derive(Deserialize)]
struct WelchCase {
    name: String,
    metric: MetricKind,
    alpha: f64,
    control: VariantStats,
    treatment: VariantStats,
    absolute: ExpectedT,
    relative: ExpectedT,
}

#[derive(Deserialize)]
struct PriorJson {
    mean: f64,
    variance: f64,
}

#[derive(Deserialize)]
struct ExpectedBayes {
    chance_to_win: f64,
    expected: f64,
    std_dev: f64,
    ci: [f64; 2],
    risk_control: f64,
    risk_treatment: f64,
}

#[derive(Deserialize)]
struct BayesianCase {
    name: String,
    metric: MetricKind,
    alpha: f64,
    control: VariantStats,
    treatment: VariantStats,
    prior: Option<PriorJson>,
    expected: ExpectedBayes,
}

#[derive(Deserialize)]
struct ExpectedSequential {
    rho: f64,
    ci: [f64; 2],
    p_value: f64,
}

#[derive(Deserialize)]
struct SequentialCase {
    name: String,
    metric: MetricKind,
    control: VariantStats,
    treatment: VariantStats,
    difference: String,
    alpha: f64,
    tuning_parameter: f64,
    expected: ExpectedSequential,
}

#[derive(Deserialize)]
struct SrmCase {
    observed: Vec<u64>,
    weights: Vec<f64>,
    chi_square: f64,
    p_value: f64,
}

#[derive(Deserialize)]
struct CorrectionCase {
    p_values: Vec<f64>,
    adjusted: Vec<f64>,
}

#[derive(Deserialize)]
struct ZCase {
    successes: [u64; 2],
    trials: [u64; 2],
    z: f64,
    p_value: f64,
}

#[derive(Deserialize)]
struct AdjustedMoments {
    mean: f64,
    variance: f64,
}

#[derive(Deserialize)]
struct CupedComparison {
    absolute: ExpectedT,
    relative: ExpectedT,
}

#[derive(Deserialize)]
struct CupedCase {
    name: String,
    alpha: f64,
    variants: Vec<VariantStats>,
    theta: f64,
    covariate_mean: f64,
    adjusted: Vec<AdjustedMoments>,
    comparisons: Vec<CupedComparison>,
}

fn reference() -> Reference {
    serde_json::from_str(REFERENCE).expect("reference.json parses")
}

/// Absolute difference within `tol`, or relative difference within `tol` for
/// large magnitudes (a t statistic of 30, a df of 10⁶).
fn close(actual: f64, expected: f64, tol: f64) -> bool {
    let diff = (actual - expected).abs();
    diff <= tol || diff <= tol * expected.abs()
}

fn check(what: &str, actual: f64, expected: f64, tol: f64) {
    assert!(
        close(actual, expected, tol),
        "{what}: got {actual}, expected {expected} (diff {:e})",
        (actual - expected).abs()
    );
}

fn check_interval(what: &str, actual: Interval, expected: [f64; 2], tol: f64) {
    check(&format!("{what} lower"), actual.lower, expected[0], tol);
    check(&format!("{what} upper"), actual.upper, expected[1], tol);
}

fn check_t(what: &str, actual: &TTest, expected: &ExpectedT) {
    check(
        &format!("{what} estimate"),
        actual.estimate,
        expected.estimate,
        TOL,
    );
    check(
        &format!("{what} std_error"),
        actual.std_error,
        expected.std_error,
        TOL,
    );
    check(
        &format!("{what} statistic"),
        actual.statistic,
        expected.statistic,
        TOL,
    );
    check(&format!("{what} df"), actual.df, expected.df, TOL);
    check(&format!("{what} p"), actual.p_value, expected.p_value, TOL);
    check_interval(&format!("{what} ci"), actual.ci, expected.ci, TOL);
}

fn moments(v: &VariantStats, kind: MetricKind) -> Moments {
    v.moments(kind).expect("moments")
}

fn difference(
    kind: &str,
    control: &VariantStats,
    treatment: &VariantStats,
    metric: MetricKind,
) -> Difference {
    let (c, t) = (moments(control, metric), moments(treatment, metric));
    match kind {
        "absolute" => absolute_difference(&c, &t),
        "relative" => relative_difference(&c, &t),
        other => panic!("unknown difference {other}"),
    }
    .expect("difference")
}

#[test]
fn has_enough_cases() {
    let r = reference();
    let total = r.wilson.len()
        + 2 * r.welch.len()
        + r.bayesian.len()
        + r.sequential.len()
        + r.srm.len()
        + r.holm.len()
        + r.benjamini_hochberg.len()
        + r.z_test.len()
        + r.cuped.len();
    assert!(total >= 40, "only {total} reference cases");
}

#[test]
fn wilson_intervals() {
    for case in reference().wilson {
        let what = format!("wilson {}/{} α={}", case.successes, case.trials, case.alpha);
        let ci = wilson(case.successes, case.trials, case.alpha).expect(&what);
        check_interval(&what, ci, case.ci, TOL);
    }
}

#[test]
fn welch_tests() {
    for case in reference().welch {
        let c = moments(&case.control, case.metric);
        let t = moments(&case.treatment, case.metric);
        let abs =
            welch(&absolute_difference(&c, &t).expect(&case.name), case.alpha).expect(&case.name);
        check_t(&format!("{} absolute", case.name), &abs, &case.absolute);
        let rel =
            welch(&relative_difference(&c, &t).expect(&case.name), case.alpha).expect(&case.name);
        check_t(&format!("{} relative", case.name), &rel, &case.relative);
    }
}

#[test]
fn analyze_reproduces_the_welch_cases() {
    for case in reference().welch {
        let options = AnalysisOptions {
            metric: case.metric,
            alpha: case.alpha,
            ..AnalysisOptions::default()
        };
        let analysis = analyze(&case.control, &[case.treatment], &options).expect(&case.name);
        let comparison = &analysis.comparisons[0];
        let abs = comparison.absolute.computed().expect("absolute");
        let rel = comparison.relative.computed().expect("relative");
        check_t(
            &format!("{} absolute", case.name),
            &abs.test,
            &case.absolute,
        );
        check_t(
            &format!("{} relative", case.name),
            &rel.test,
            &case.relative,
        );
    }
}

#[test]
fn bayesian_results() {
    for case in reference().bayesian {
        let d = difference("relative", &case.control, &case.treatment, case.metric);
        let prior = match case.prior {
            None => Prior::Flat,
            Some(p) => Prior::Normal {
                mean: p.mean,
                variance: p.variance,
            },
        };
        let r = bayesian(&d, &prior, case.alpha).expect(&case.name);
        let e = &case.expected;
        let what = &case.name;
        check(
            &format!("{what} chance"),
            r.chance_to_win,
            e.chance_to_win,
            TOL,
        );
        check(&format!("{what} expected"), r.expected, e.expected, TOL);
        check(&format!("{what} sd"), r.std_dev, e.std_dev, TOL);
        check_interval(&format!("{what} ci"), r.ci, e.ci, TOL);
        check(
            &format!("{what} risk c"),
            r.risk_control,
            e.risk_control,
            TOL,
        );
        check(
            &format!("{what} risk t"),
            r.risk_treatment,
            e.risk_treatment,
            TOL,
        );

        // analyze gives the same on the relative lift.
        let options = AnalysisOptions {
            metric: case.metric,
            alpha: case.alpha,
            prior,
            ..AnalysisOptions::default()
        };
        let analysis = analyze(&case.control, &[case.treatment], &options).expect(what);
        let via = analysis.comparisons[0]
            .bayesian
            .computed()
            .expect("bayesian");
        check(
            &format!("{what} analyze chance"),
            via.chance_to_win,
            e.chance_to_win,
            TOL,
        );
    }
}

#[test]
fn sequential_confidence_sequences() {
    for case in reference().sequential {
        let d = difference(
            &case.difference,
            &case.control,
            &case.treatment,
            case.metric,
        );
        let r = sequential(&d, case.alpha, case.tuning_parameter).expect(&case.name);
        let e = &case.expected;
        check(&format!("{} rho", case.name), r.rho, e.rho, TOL);
        check_interval(&format!("{} ci", case.name), r.ci, e.ci, TOL);
        check(&format!("{} p", case.name), r.p_value, e.p_value, TOL);

        let options = AnalysisOptions {
            metric: case.metric,
            alpha: case.alpha,
            sequential: true,
            sequential_tuning_parameter: case.tuning_parameter,
            ..AnalysisOptions::default()
        };
        let analysis = analyze(&case.control, &[case.treatment], &options).expect(&case.name);
        let comparison = &analysis.comparisons[0];
        let lift = match case.difference.as_str() {
            "absolute" => &comparison.absolute,
            _ => &comparison.relative,
        };
        let via = lift
            .computed()
            .and_then(|l| l.sequential)
            .expect("sequential");
        check_interval(&format!("{} analyze ci", case.name), via.ci, e.ci, TOL);
    }
}

#[test]
fn srm_chi_square() {
    for case in reference().srm {
        let what = format!("srm {:?} {:?}", case.observed, case.weights);
        let r = srm(&case.observed, &case.weights).expect(&what);
        check(
            &format!("{what} chi2"),
            r.chi_square,
            case.chi_square,
            SRM_TOL,
        );
        check(&format!("{what} p"), r.p_value, case.p_value, SRM_TOL);
    }
}

#[test]
fn multiple_testing_corrections() {
    let r = reference();
    for (cases, correction) in [
        (&r.holm, Correction::Holm),
        (&r.benjamini_hochberg, Correction::BenjaminiHochberg),
    ] {
        for case in cases {
            let adjusted = correction.apply(&case.p_values).expect("valid p-values");
            assert_eq!(adjusted.len(), case.adjusted.len());
            for (i, (a, e)) in adjusted.iter().zip(&case.adjusted).enumerate() {
                check(
                    &format!("{correction:?} {:?}[{i}]", case.p_values),
                    *a,
                    *e,
                    TOL,
                );
            }
        }
    }
}

#[test]
fn z_tests() {
    for case in reference().z_test {
        let what = format!("z {:?}/{:?}", case.successes, case.trials);
        let r = two_proportion_z_test(
            case.successes[0],
            case.trials[0],
            case.successes[1],
            case.trials[1],
        )
        .expect(&what);
        check(&format!("{what} z"), r.z, case.z, TOL);
        check(&format!("{what} p"), r.p_value, case.p_value, TOL);
    }
}

#[test]
fn cuped_on_generated_data() {
    for case in reference().cuped {
        let c = cuped(&case.variants).expect(&case.name);
        check(&format!("{} theta", case.name), c.theta, case.theta, TOL);
        check(
            &format!("{} x̄", case.name),
            c.covariate_mean,
            case.covariate_mean,
            TOL,
        );
        let adjusted: Vec<Moments> = case
            .variants
            .iter()
            .map(|v| c.adjust(v).expect("adjusted moments"))
            .collect();
        for (i, (a, e)) in adjusted.iter().zip(&case.adjusted).enumerate() {
            check(&format!("{} mean[{i}]", case.name), a.mean, e.mean, TOL);
            check(
                &format!("{} var[{i}]", case.name),
                a.variance,
                e.variance,
                TOL,
            );
        }

        // The adjusted variance is smaller than the raw one: the point of CUPED.
        for (v, a) in case.variants.iter().zip(&adjusted) {
            let raw = v.sample_variance().expect("raw variance");
            assert!(a.variance < raw, "{}: {} !< {raw}", case.name, a.variance);
        }

        // And analyze applies it (covariates present, CUPED on by default).
        let options = AnalysisOptions {
            metric: MetricKind::Continuous,
            alpha: case.alpha,
            ..AnalysisOptions::default()
        };
        let analysis = analyze(&case.variants[0], &case.variants[1..], &options).expect(&case.name);
        check(
            &format!("{} analyze theta", case.name),
            analysis.cuped.map_or(f64::NAN, |c| c.theta),
            case.theta,
            TOL,
        );
        for (i, (comparison, e)) in analysis
            .comparisons
            .iter()
            .zip(&case.comparisons)
            .enumerate()
        {
            let abs = comparison.absolute.computed().expect("absolute");
            check_t(
                &format!("{} absolute {i}", case.name),
                &abs.test,
                &e.absolute,
            );
            let rel = comparison.relative.computed().expect("relative");
            check_t(
                &format!("{} relative {i}", case.name),
                &rel.test,
                &e.relative,
            );
        }
    }
}

/// The reference values given in the issue, checked literally.
#[test]
fn issue_reference_values() {
    // 14/28 vs 16/30, relative lift, Welch with the delta method.
    let c = VariantStats::binomial(28, 14)
        .moments(MetricKind::Binomial)
        .expect("control");
    let t = VariantStats::binomial(30, 16)
        .moments(MetricKind::Binomial)
        .expect("treatment");
    let rel = welch(&relative_difference(&c, &t).expect("relative"), 0.05).expect("welch");
    check("14/28 vs 16/30 estimate", rel.estimate, 0.06667, TOL);
    check("14/28 vs 16/30 p", rel.p_value, 0.80707, TOL);
    check("14/28 vs 16/30 lower", rel.ci.lower, -0.47767, TOL);
    check("14/28 vs 16/30 upper", rel.ci.upper, 0.61101, TOL);

    // 49/100 vs 51/100, Bayesian chance to win.
    let c = VariantStats::binomial(100, 49)
        .moments(MetricKind::Binomial)
        .expect("control");
    let t = VariantStats::binomial(100, 51)
        .moments(MetricKind::Binomial)
        .expect("treatment");
    let d = relative_difference(&c, &t).expect("relative");
    let b = bayesian(&d, &Prior::Flat, 0.05).expect("bayesian");
    check("49/100 vs 51/100 chance", b.chance_to_win, 0.60918, TOL);

    // SRM [1000, 1200] at 50/50.
    let s = srm(&[1000, 1200], &[50.0, 50.0]).expect("srm");
    check("srm p", s.p_value, 0.000_020_079, SRM_TOL);
    assert!(s.mismatch);

    // statsmodels proportions_ztest([250, 200], [1000, 1000]).
    let z = two_proportion_z_test(250, 1000, 200, 1000).expect("z");
    check("z", z.z, 2.677_397_763, TOL);

    // Wilson 45/100.
    let w = wilson(45, 100, 0.05).expect("wilson");
    check_interval("wilson 45/100", w, [0.356_145_380, 0.547_553_970], TOL);

    // Holm.
    let h = holm(&[0.01, 0.04, 0.03, 0.005, 0.55, 0.6]).expect("holm");
    for (a, e) in h.iter().zip([0.05, 0.12, 0.12, 0.03, 1.0, 1.0]) {
        check("holm", *a, e, TOL);
    }
}

#[test]
fn issue_reference_values_through_analyze() {
    let options = AnalysisOptions::default();
    let a = analyze(
        &VariantStats::binomial(28, 14),
        &[VariantStats::binomial(30, 16)],
        &options,
    )
    .expect("analyze");
    let rel = a.comparisons[0].relative.computed().expect("relative");
    check("estimate", rel.test.estimate, 0.06667, TOL);
    check("p", rel.test.p_value, 0.80707, TOL);
    check_interval("ci", rel.test.ci, [-0.47767, 0.61101], TOL);
    let json = serde_json::to_value(&a).expect("serializes");
    assert_eq!(json["comparisons"][0]["relative"]["status"], "computed");
    assert!(json["comparisons"][0]["relative"]["p_value"].is_f64());
}

#[test]
fn benjamini_hochberg_is_monotone_in_rank() {
    let p = [0.04, 0.001, 0.03, 0.2, 0.01, 0.5, 0.049];
    let adj = benjamini_hochberg(&p).expect("bh");
    let mut pairs: Vec<(f64, f64)> = p.iter().copied().zip(adj).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    for w in pairs.windows(2) {
        assert!(w[0].1 <= w[1].1, "{pairs:?}");
    }
    assert!(pairs.iter().all(|(raw, a)| a >= raw && *a <= 1.0));
}

#[test]
fn zero_units_error_rather_than_nan() {
    let empty = VariantStats::default();
    assert!(matches!(
        empty.moments(MetricKind::Binomial),
        Err(StatsError::TooFewUnits { .. })
    ));
}

const BETA_REFERENCE: &str = include_str!("../../../testdata/stats/beta_reference.json");

#[derive(Deserialize)]
struct BetaReference {
    cases: Vec<BetaCase>,
}

#[derive(Deserialize)]
struct BetaCase {
    arms: Vec<(u64, u64)>,
    chance_to_be_best: Vec<f64>,
    expected_loss: Vec<f64>,
    comparisons: Vec<BetaComparisonCase>,
}

#[derive(Deserialize)]
struct BetaComparisonCase {
    variant: usize,
    chance_to_win: f64,
    risk_control: f64,
    risk_treatment: f64,
}

/// The Beta posteriors' chance to win, to be best and expected losses
/// against scipy's quadrature of the definitions
/// (`testdata/stats/beta_reference.py`).
#[test]
fn beta_posteriors_match_scipy() {
    const BETA_TOL: f64 = 1e-7;
    let reference: BetaReference = serde_json::from_str(BETA_REFERENCE).expect("beta reference");
    assert!(reference.cases.len() >= 5);
    for case in &reference.cases {
        let arms: Vec<(u64, u64)> = case.arms.to_vec();
        let got = guidon_stats::binomial_bayes(&arms).expect("binomial_bayes");
        assert_eq!(got.method, "beta_posterior");
        for (k, (g, w)) in got
            .chance_to_be_best
            .iter()
            .zip(&case.chance_to_be_best)
            .enumerate()
        {
            assert!((g - w).abs() < BETA_TOL, "{arms:?} best[{k}]: {g} vs {w}");
        }
        for (k, (g, w)) in got
            .expected_loss
            .iter()
            .zip(&case.expected_loss)
            .enumerate()
        {
            assert!((g - w).abs() < BETA_TOL, "{arms:?} loss[{k}]: {g} vs {w}");
        }
        assert_eq!(got.comparisons.len(), case.comparisons.len());
        for (g, w) in got.comparisons.iter().zip(&case.comparisons) {
            assert_eq!(g.variant, w.variant);
            for (what, g, w) in [
                ("chance_to_win", g.chance_to_win, w.chance_to_win),
                ("risk_control", g.risk_control, w.risk_control),
                ("risk_treatment", g.risk_treatment, w.risk_treatment),
            ] {
                assert!((g - w).abs() < BETA_TOL, "{arms:?} {what}: {g} vs {w}");
            }
        }
    }
}
