//! The traps a product manager fell into when reading results, each made a
//! test: the headline must not mislead.

use guidon_stats::{AnalysisOptions, Method, MetricKind, VariantStats, Verdict, analyze, headline};

fn binomial(units: u64, converted: u64) -> VariantStats {
    VariantStats::binomial(units, converted)
}

fn options() -> AnalysisOptions {
    AnalysisOptions {
        weights: Some(vec![1.0, 1.0]),
        ..AnalysisOptions::default()
    }
}

/// 17/208 against 0/192: the absolute lift is −8.2 points with p = 2.6e-5.
/// The relative lift is −100 % with no interval; the headline must be the
/// absolute lift, significant, and must not claim "every unit has the same
/// value".
#[test]
fn a_treatment_that_never_converts_has_an_absolute_headline() {
    let analysis = analyze(&binomial(208, 17), &[binomial(192, 0)], &options()).expect("analysis");
    for method in [Method::Frequentist, Method::Sequential, Method::Bayesian] {
        let opts = AnalysisOptions {
            sequential: method == Method::Sequential,
            ..options()
        };
        let analysis = analyze(&binomial(208, 17), &[binomial(192, 0)], &opts).expect("analysis");
        let h = headline(&analysis, &analysis.comparisons[0], method, None);
        assert_eq!(h.scale, "absolute", "{method:?}: {h:?}");
        let lift = h.lift.expect("lift");
        assert!((lift - (0.0 - 17.0 / 208.0)).abs() < 1e-12, "{lift}");
        assert!(h.absolute.is_some());
        assert!(h.relative.is_none());
        assert!(
            h.notes.iter().any(|n| n.contains("No relative lift")
                && n.contains("treatment mean is 0")
                && !n.contains("same value")),
            "{method:?}: {:?}",
            h.notes
        );
        assert_eq!(h.verdict, Verdict::Decrease, "{method:?}: {h:?}");
        assert!(h.significant);
    }
    let h = headline(
        &analysis,
        &analysis.comparisons[0],
        Method::Frequentist,
        None,
    );
    let p = h.p_value.expect("p");
    assert!((2.0e-5..3.2e-5).contains(&p), "p = {p}");
}

/// A small experiment with a wide interval: the delta method on the ratio
/// gives a relative interval far below −100 %; the log-scale interval
/// cannot go there.
#[test]
fn relative_intervals_never_fall_below_minus_one_hundred_percent() {
    for (c, t) in [
        ((100, 2), (100, 3)),
        ((50, 1), (50, 2)),
        ((1000, 3), (1000, 1)),
        ((30, 2), (30, 1)),
    ] {
        let analysis = analyze(
            &binomial(c.0, c.1),
            &[binomial(t.0, t.1)],
            &AnalysisOptions {
                sequential: true,
                ..options()
            },
        )
        .expect("analysis");
        let comparison = &analysis.comparisons[0];
        let interval = comparison.relative_interval.computed().expect("interval");
        assert_eq!(interval.method, "log_delta");
        assert!(interval.ci.lower > -1.0, "{c:?} {t:?}: {:?}", interval.ci);
        assert!(interval.ci.lower < interval.estimate && interval.estimate < interval.ci.upper);
        let seq = interval.sequential_ci.expect("sequential");
        assert!(seq.lower > -1.0 && seq.lower <= interval.ci.lower);
        let credible = interval.credible_ci.expect("credible");
        assert!(credible.lower > -1.0);
        for method in [Method::Frequentist, Method::Sequential, Method::Bayesian] {
            let h = headline(&analysis, comparison, method, None);
            assert_eq!(h.scale, "relative");
            assert!(h.ci.expect("ci").lower > -1.0, "{method:?}: {h:?}");
        }
    }
    // The delta method's interval on the ratio does go below −100 % for the
    // first case: that is the trap the log scale removes.
    let analysis = analyze(&binomial(100, 2), &[binomial(100, 3)], &options()).expect("analysis");
    let delta = analysis.comparisons[0]
        .relative
        .computed()
        .expect("relative");
    assert!(delta.test.ci.lower < -1.0, "{:?}", delta.test.ci);
}

/// A sample-ratio mismatch withholds the verdict however significant the
/// lift, says so, and is never starred.
#[test]
fn a_failed_health_check_withholds_the_verdict() {
    let analysis =
        analyze(&binomial(1000, 50), &[binomial(1300, 120)], &options()).expect("analysis");
    assert!(analysis.srm.mismatch, "{:?}", analysis.srm);
    let free = headline(
        &analysis,
        &analysis.comparisons[0],
        Method::Frequentist,
        None,
    );
    assert!(free.significant, "the lift itself is significant: {free:?}");
    let reason = "sample-ratio mismatch: check the exposure logging";
    for method in [Method::Frequentist, Method::Sequential, Method::Bayesian] {
        let h = headline(&analysis, &analysis.comparisons[0], method, Some(reason));
        assert_eq!(h.verdict, Verdict::Withheld, "{method:?}");
        assert!(!h.significant);
        assert_eq!(h.withheld.as_deref(), Some(reason));
    }
}

/// The absolute test decides; when the relative interval says otherwise,
/// a note says they disagree and which one the verdict follows.
#[test]
fn absolute_and_relative_never_disagree_silently() {
    // Search small binomial experiments for disagreements between the
    // absolute Welch test and the log-scale relative interval; there are
    // some near the threshold, and each must carry the note.
    let mut disagreements = 0;
    let mut agreements = 0;
    for converted_t in 5..60 {
        let analysis = analyze(
            &binomial(400, 20),
            &[binomial(400, converted_t)],
            &options(),
        )
        .expect("analysis");
        let h = headline(
            &analysis,
            &analysis.comparisons[0],
            Method::Frequentist,
            None,
        );
        let p = h.p_value.expect("p");
        assert_eq!(
            h.significant,
            p < 0.05,
            "the verdict follows the absolute test"
        );
        let relative = h.relative.expect("relative");
        let disagree = relative.ci.excludes_zero() != h.significant;
        let noted = h.notes.iter().any(|n| n.contains("disagree"));
        assert_eq!(disagree, noted, "t = {converted_t}: {h:?}");
        if disagree {
            disagreements += 1;
        } else {
            agreements += 1;
        }
    }
    assert!(disagreements > 0, "the search must find the case it tests");
    assert!(agreements > 40);
}

/// For a conversion metric the chance to win comes from the Beta
/// posteriors, not a normal approximation: they differ visibly in a small
/// experiment, and for three arms every arm gets a chance to be best.
#[test]
fn chance_to_win_is_the_beta_posterior() {
    let analysis = analyze(&binomial(60, 1), &[binomial(60, 5)], &options()).expect("analysis");
    let h = headline(&analysis, &analysis.comparisons[0], Method::Bayesian, None);
    assert_eq!(h.chance_to_win_method, Some("beta_posterior"));
    assert_eq!(h.test, "chance_to_win_beta");
    let beta = analysis
        .beta
        .as_ref()
        .and_then(|b| b.computed())
        .expect("beta");
    let chance = h.chance_to_win.expect("chance");
    assert_eq!(chance, beta.comparisons[0].chance_to_win);
    let normal = analysis.comparisons[0]
        .bayesian
        .computed()
        .expect("normal")
        .chance_to_win;
    assert!(
        (chance - normal).abs() > 0.005,
        "beta {chance} vs normal {normal}"
    );
    let risk = h.risk.expect("risk");
    assert_eq!(risk.scale, "absolute");
    assert!(risk.control > risk.treatment);

    let three = analyze(
        &binomial(500, 40),
        &[binomial(500, 55), binomial(500, 48)],
        &AnalysisOptions {
            weights: Some(vec![1.0, 1.0, 1.0]),
            ..AnalysisOptions::default()
        },
    )
    .expect("analysis");
    let beta = three
        .beta
        .as_ref()
        .and_then(|b| b.computed())
        .expect("beta");
    assert_eq!(beta.chance_to_be_best.len(), 3);
    let total: f64 = beta.chance_to_be_best.iter().sum();
    assert!((total - 1.0).abs() < 1e-9);
    assert!(beta.chance_to_be_best[1] > beta.chance_to_be_best[2]);
    assert_eq!(beta.expected_loss.len(), 3);

    // A continuous metric has no Beta posterior: the Gaussian model, named.
    let continuous = analyze(
        &VariantStats::new(100, 20, 250.0, 3000.0),
        &[VariantStats::new(100, 25, 300.0, 3500.0)],
        &AnalysisOptions {
            metric: MetricKind::Continuous,
            ..options()
        },
    )
    .expect("analysis");
    assert!(continuous.beta.is_none());
    let h = headline(
        &continuous,
        &continuous.comparisons[0],
        Method::Bayesian,
        None,
    );
    assert_eq!(h.chance_to_win_method, Some("normal_relative"));
}
