//! Degenerate input through the public API: errors or `Unavailable`
//! outcomes, never a panic and never a NaN in a computed result.

use guidon_stats::{
    AnalysisOptions, Correction, Difference, MetricKind, Moments, Outcome, Prior, StatsError,
    VariantStats, absolute_difference, analyze, bayesian, benjamini_hochberg, cuped, holm,
    relative_difference, sequential, srm, summarize, two_proportion_z_test, welch, wilson,
};

fn options(metric: MetricKind) -> AnalysisOptions {
    AnalysisOptions {
        metric,
        sequential: true,
        correction: Correction::Holm,
        ..AnalysisOptions::default()
    }
}

fn reason<T>(outcome: &Outcome<T>) -> Option<&StatsError> {
    outcome.reason()
}

#[test]
fn control_without_units() {
    let a = analyze(
        &VariantStats::default(),
        &[VariantStats::binomial(100, 10)],
        &options(MetricKind::Binomial),
    )
    .expect("an empty control is not invalid input");
    let c = &a.comparisons[0];
    assert!(matches!(
        reason(&c.absolute),
        Some(StatsError::TooFewUnits { got: 0, .. })
    ));
    assert!(matches!(
        reason(&c.relative),
        Some(StatsError::TooFewUnits { .. })
    ));
    assert!(matches!(
        reason(&c.bayesian),
        Some(StatsError::TooFewUnits { .. })
    ));
    assert_eq!(a.variants[0].rate, None);
    assert!(a.srm.enough_data, "expected 50 per variant");
    assert!(a.srm.mismatch, "0 vs 100 at 50/50 is a mismatch");
}

#[test]
fn nothing_converted_anywhere() {
    let a = analyze(
        &VariantStats::binomial(500, 0),
        &[VariantStats::binomial(500, 0)],
        &options(MetricKind::Binomial),
    )
    .expect("analysis");
    let c = &a.comparisons[0];
    assert_eq!(reason(&c.absolute), Some(&StatsError::ZeroVariance));
    assert_eq!(reason(&c.relative), Some(&StatsError::ZeroControlMean));
    assert_eq!(reason(&c.bayesian), Some(&StatsError::ZeroControlMean));
    assert_eq!(
        a.variants[0].rate_interval.map(|i| i.lower),
        Some(0.0),
        "Wilson still works at 0/500"
    );
}

#[test]
fn control_mean_zero_only_blocks_the_relative_lift() {
    let a = analyze(
        &VariantStats::binomial(500, 0),
        &[VariantStats::binomial(500, 9)],
        &options(MetricKind::Binomial),
    )
    .expect("analysis");
    let c = &a.comparisons[0];
    let abs = c.absolute.computed().expect("absolute lift is defined");
    assert!(abs.test.p_value.is_finite());
    assert_eq!(
        abs.adjusted_p_value,
        Some(abs.test.p_value),
        "family of one"
    );
    assert!(abs.sequential.is_some());
    assert_eq!(reason(&c.relative), Some(&StatsError::ZeroControlMean));
}

#[test]
fn constant_continuous_values() {
    // Every unit has value 2 in both variants: zero variance.
    let a = analyze(
        &VariantStats::new(50, 50, 100.0, 200.0),
        &[VariantStats::new(40, 40, 80.0, 160.0)],
        &options(MetricKind::Continuous),
    )
    .expect("analysis");
    assert_eq!(
        reason(&a.comparisons[0].absolute),
        Some(&StatsError::ZeroVariance)
    );
    assert_eq!(a.variants[0].variance, Some(0.0));
}

#[test]
fn invalid_input_is_an_error() {
    let ok = VariantStats::binomial(100, 10);
    let o = AnalysisOptions::default();
    assert!(matches!(
        analyze(&ok, &[], &o),
        Err(StatsError::InvalidInput(_))
    ));
    assert!(matches!(
        analyze(&VariantStats::new(10, 1, f64::NAN, 1.0), &[ok], &o),
        Err(StatsError::InvalidInput(_))
    ));
    assert!(matches!(
        analyze(&VariantStats::binomial(10, 11), &[ok], &o),
        Err(StatsError::InvalidInput(_))
    ));
    let weights = AnalysisOptions {
        weights: Some(vec![1.0, 1.0, 1.0]),
        ..AnalysisOptions::default()
    };
    assert_eq!(
        analyze(&ok, &[ok], &weights).err(),
        Some(StatsError::WeightsMismatch {
            variants: 2,
            weights: 3
        })
    );
    for alpha in [0.0, 1.0, f64::NAN, -0.1] {
        let bad = AnalysisOptions {
            alpha,
            ..AnalysisOptions::default()
        };
        assert!(analyze(&ok, &[ok], &bad).is_err(), "alpha {alpha}");
    }
    let bad_prior = AnalysisOptions {
        prior: Prior::Normal {
            mean: 0.0,
            variance: -1.0,
        },
        ..AnalysisOptions::default()
    };
    assert!(analyze(&ok, &[ok], &bad_prior).is_err());
    let bad_tuning = AnalysisOptions {
        sequential_tuning_parameter: 0.0,
        ..AnalysisOptions::default()
    };
    assert!(analyze(&ok, &[ok], &bad_tuning).is_err());
    // Covariates on some variants only.
    let with = VariantStats::new(10, 5, 5.0, 5.0).with_covariate(10.0, 20.0, 6.0);
    assert!(matches!(
        analyze(&with, &[ok], &o),
        Err(StatsError::InvalidInput(_))
    ));
    let no_cuped = AnalysisOptions {
        cuped: false,
        ..AnalysisOptions::default()
    };
    assert!(analyze(&with, &[ok], &no_cuped).is_ok());
}

#[test]
fn unavailable_treatments_leave_the_correction_family() {
    let control = VariantStats::binomial(1000, 100);
    let treatments = [
        VariantStats::binomial(1000, 130),
        VariantStats::binomial(1, 1), // too few units
        VariantStats::binomial(1000, 90),
    ];
    let a = analyze(&control, &treatments, &options(MetricKind::Binomial)).expect("analysis");
    let p: Vec<f64> = [0, 2]
        .iter()
        .map(|&i| {
            a.comparisons[i]
                .absolute
                .computed()
                .expect("computed")
                .test
                .p_value
        })
        .collect();
    let expected = holm(&p).expect("holm");
    for (&i, e) in [0, 2].iter().zip(expected) {
        let adjusted = a.comparisons[i]
            .absolute
            .computed()
            .and_then(|l| l.adjusted_p_value);
        assert_eq!(adjusted, Some(e));
    }
    assert!(a.comparisons[1].absolute.computed().is_none());
    assert_eq!(a.comparisons[1].variant, 2);
}

#[test]
fn json_shape() {
    let a = analyze(
        &VariantStats::binomial(1000, 100),
        &[
            VariantStats::binomial(1000, 0),
            VariantStats::binomial(0, 0),
        ],
        &options(MetricKind::Binomial),
    )
    .expect("analysis");
    let json = serde_json::to_value(&a).expect("serializes");
    assert_eq!(json["metric"], "binomial");
    assert_eq!(json["correction"], "holm");
    assert_eq!(json["comparisons"][0]["absolute"]["status"], "computed");
    assert!(json["comparisons"][0]["absolute"]["ci"]["lower"].is_f64());
    assert!(json["comparisons"][0]["absolute"]["sequential"]["p_value"].is_f64());
    assert_eq!(json["comparisons"][1]["absolute"]["status"], "unavailable");
    assert_eq!(
        json["comparisons"][1]["absolute"]["reason"]["code"],
        "too_few_units"
    );
    assert!(json["comparisons"][1]["absolute"]["reason"]["message"].is_string());
    assert!(json["srm"]["p_value"].is_f64());
    assert_eq!(json["variants"][2]["rate"], serde_json::Value::Null);
    no_unexpected_null(&json, "");
}

#[test]
fn options_from_json() {
    let o: AnalysisOptions = serde_json::from_str(
        r#"{"metric": "continuous", "alpha": 0.1, "prior": {"type": "normal", "mean": 0, "variance": 0.09},
            "sequential": true, "weights": [1, 1], "correction": "benjamini_hochberg"}"#,
    )
    .expect("options parse");
    assert_eq!(o.metric, MetricKind::Continuous);
    assert_eq!(o.correction, Correction::BenjaminiHochberg);
    assert_eq!(o.sequential_tuning_parameter, 5000.0);
    assert!(o.cuped);
    let defaults: AnalysisOptions = serde_json::from_str("{}").expect("empty options");
    assert_eq!(defaults, AnalysisOptions::default());
    assert!(serde_json::from_str::<AnalysisOptions>(r#"{"alpah": 0.1}"#).is_err());
    let v: VariantStats =
        serde_json::from_str(r#"{"units": 10, "count": 2, "sum": 2, "sum_squares": 2}"#)
            .expect("variant parses");
    assert_eq!(v, VariantStats::binomial(10, 2));
}

const AWKWARD: [f64; 9] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    1e-300,
    1e300,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
];

fn finite_or_err<T: std::fmt::Debug>(
    result: &Result<T, StatsError>,
    values: impl Fn(&T) -> Vec<f64>,
) {
    if let Ok(v) = result {
        assert!(values(v).iter().all(|x| x.is_finite()), "{v:?}");
    }
}

/// serde_json writes NaN and infinities as `null`: only the optional fields
/// may be null.
fn no_unexpected_null(value: &serde_json::Value, key: &str) {
    const OPTIONAL: [&str; 7] = [
        "beta",
        "rate",
        "rate_interval",
        "mean",
        "variance",
        "adjusted_p_value",
        "cuped",
    ];
    match value {
        serde_json::Value::Null => assert!(OPTIONAL.contains(&key), "{key} is null"),
        serde_json::Value::Array(items) => items.iter().for_each(|v| no_unexpected_null(v, key)),
        serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| no_unexpected_null(v, k)),
        _ => {}
    }
}

#[test]
fn awkward_numbers_never_panic_or_leak_nan() {
    let units = [0_u64, 1, 2, 3, 1_000_000, u64::MAX];
    for &n in &units {
        for &mean in &AWKWARD {
            for &variance in &AWKWARD {
                let m = Moments { n, mean, variance };
                let ok = Moments {
                    n: 50,
                    mean: 1.0,
                    variance: 1.0,
                };
                for (c, t) in [(m, ok), (ok, m)] {
                    for d in [absolute_difference(&c, &t), relative_difference(&c, &t)] {
                        finite_or_err(&d, |d| vec![d.estimate, d.variance, d.df]);
                        let Ok(d) = d else { continue };
                        let w = welch(&d, 0.05);
                        finite_or_err(&w, |w| {
                            vec![w.estimate, w.std_error, w.p_value, w.ci.lower, w.ci.upper]
                        });
                        let b = bayesian(&d, &Prior::Flat, 0.05);
                        finite_or_err(&b, |b| {
                            vec![
                                b.chance_to_win,
                                b.risk_control,
                                b.risk_treatment,
                                b.ci.lower,
                            ]
                        });
                        let s = sequential(&d, 0.05, 5000.0);
                        finite_or_err(&s, |s| vec![s.p_value, s.ci.lower, s.ci.upper]);
                    }
                }
            }
        }
    }
    for &estimate in &AWKWARD {
        for &variance in &AWKWARD {
            for &df in &AWKWARD {
                let d = Difference {
                    estimate,
                    variance,
                    df,
                    units: 10,
                };
                finite_or_err(&welch(&d, 0.05), |w| {
                    vec![w.p_value, w.ci.lower, w.ci.upper]
                });
                finite_or_err(&bayesian(&d, &Prior::Flat, 0.05), |b| {
                    vec![b.chance_to_win, b.expected]
                });
                finite_or_err(&sequential(&d, 0.05, 5000.0), |s| vec![s.p_value]);
            }
        }
    }
    for &sum in &AWKWARD {
        for &sum_squares in &AWKWARD {
            for &n in &units {
                let v = VariantStats::new(n, n / 2, sum, sum_squares);
                let _ = summarize(&v, 0.05);
                for kind in [MetricKind::Binomial, MetricKind::Continuous] {
                    finite_or_err(&v.moments(kind), |m| vec![m.mean, m.variance]);
                    let a = analyze(&v, &[VariantStats::binomial(100, 10)], &options(kind));
                    if let Ok(a) = a {
                        no_unexpected_null(&serde_json::to_value(&a).expect("serializes"), "");
                    }
                }
                let with = v.with_covariate(sum, sum_squares, sum);
                let _ = cuped(&[with, with]).map(|c| c.adjust(&with));
            }
        }
    }
    for &w in &AWKWARD {
        let _ = srm(&[10, 20], &[1.0, w]);
        let _ = holm(&[0.5, w]);
        let _ = benjamini_hochberg(&[w]);
    }
    let _ = srm(&[u64::MAX, u64::MAX], &[1.0, 1.0]);
    for (x, n) in [(0, 0), (u64::MAX, u64::MAX), (1, u64::MAX)] {
        let _ = wilson(x, n, 0.05);
        let _ = two_proportion_z_test(x, n, x, n);
    }
}

/// A ratio metric's moments from its sums equal the delta method written
/// out over unit-level data: R = Σy/Σx, per-unit variance
/// (s_yy − 2R·s_xy + R²·s_xx)/x̄² with sample (n − 1) moments.
#[test]
fn ratio_moments_are_the_delta_method() {
    let units: Vec<(f64, f64)> = (0..40)
        .map(|i| {
            let orders = f64::from(i % 3);
            (orders * (10.0 + f64::from(i % 7)), orders)
        })
        .collect();
    let n = units.len() as f64;
    let (sy, sx) = units
        .iter()
        .fold((0.0, 0.0), |(a, b), (y, x)| (a + y, b + x));
    let (my, mx) = (sy / n, sx / n);
    let s_yy = units.iter().map(|(y, _)| (y - my).powi(2)).sum::<f64>() / (n - 1.0);
    let s_xx = units.iter().map(|(_, x)| (x - mx).powi(2)).sum::<f64>() / (n - 1.0);
    let s_xy = units.iter().map(|(y, x)| (y - my) * (x - mx)).sum::<f64>() / (n - 1.0);
    let r = sy / sx;
    let want = (s_yy - 2.0 * r * s_xy + r * r * s_xx) / (mx * mx);
    let stats = VariantStats::ratio(
        40,
        units.iter().filter(|(y, _)| *y > 0.0).count() as u64,
        (sy, units.iter().map(|(y, _)| y * y).sum()),
        (
            sx,
            units.iter().map(|(_, x)| x * x).sum(),
            units.iter().map(|(y, x)| y * x).sum(),
        ),
    );
    let m = stats.moments(MetricKind::Ratio).expect("moments");
    assert!((m.mean - r).abs() < 1e-12, "{} vs {r}", m.mean);
    assert!(
        (m.variance - want).abs() < 1e-9 * want,
        "{} vs {want}",
        m.variance
    );
    // No denominator sums: an error, not a number.
    assert!(
        VariantStats::new(40, 3, 10.0, 50.0)
            .moments(MetricKind::Ratio)
            .is_err()
    );
}
