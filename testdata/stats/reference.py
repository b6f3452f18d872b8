#!/usr/bin/env python3
"""Reference values for crates/guidon-stats, computed independently.

Needs numpy, scipy and statsmodels, pinned in testdata/stats/requirements.txt;
testdata/stats/run.sh makes a virtualenv with them under target/ and runs

    python testdata/stats/reference.py --check

(what .ci/run does: recompute and compare with the committed file, 1e-9
relative). To regenerate, with that virtualenv's python:

    target/stats-venv/bin/python testdata/stats/reference.py > testdata/stats/reference.json

The output is deterministic: generated data uses numpy's default_rng with
fixed seeds. The Rust test
crates/guidon-stats/tests/reference.rs reads reference.json and checks every
case to 1e-5 (SRM p-values to 1e-9).

Where a library does the whole computation it is used on the raw data
(scipy.stats.ttest_ind for Welch tests of value metrics and of CUPED-adjusted
values, scipy.stats.chisquare, statsmodels' proportion_confint,
proportions_ztest and multipletests). Where no library has the method
(relative lift by the delta method, GrowthBook's Bayesian risk, the
Waudby-Smith confidence sequence) the formula is written out below with scipy
distributions, from the per-unit data rather than from the aggregates the
Rust code sees.

Conventions, as the Rust crate: a binomial (conversion) metric uses the
variance p(1 - p) (denominator n, GrowthBook's ProportionStatistic); a
continuous metric the sample variance (denominator n - 1). Welch-Satterthwaite
degrees of freedom for both the absolute and the relative lift.
"""

import math
import os
import sys

import numpy as np
import scipy
import statsmodels
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from refcheck import finish  # noqa: E402


def f(x):
    """A plain float for json (numpy scalars are not serializable)."""
    return float(x)


# ---------------------------------------------------------------- variants

def binomial_variant(conversions, units):
    return {
        "units": units,
        "count": conversions,
        "sum": float(conversions),
        "sum_squares": float(conversions),
    }


def values_variant(y, x=None):
    y = np.asarray(y, dtype=float)
    v = {
        "units": int(len(y)),
        "count": int(np.sum(y > 0)),
        "sum": math.fsum(y),
        "sum_squares": math.fsum(y * y),
    }
    if x is not None:
        x = np.asarray(x, dtype=float)
        v["covariate"] = {
            "sum": math.fsum(x),
            "sum_squares": math.fsum(x * x),
            "sum_products": math.fsum(x * y),
        }
    return v


def binomial_moments(conversions, units):
    p = conversions / units
    return units, p, p * (1 - p)


def value_moments(y):
    y = np.asarray(y, dtype=float)
    return len(y), float(np.mean(y)), float(np.var(y, ddof=1))


# ---------------------------------------------------------------- formulas

def welch_df(c, t):
    (nc, _, vc), (nt, _, vt) = c, t
    sc, st = vc / nc, vt / nt
    return (sc + st) ** 2 / (sc**2 / (nc - 1) + st**2 / (nt - 1))


def t_result(estimate, variance, df, alpha):
    se = math.sqrt(variance)
    statistic = estimate / se
    half = stats.t.ppf(1 - alpha / 2, df) * se
    return {
        "estimate": f(estimate),
        "std_error": f(se),
        "statistic": f(statistic),
        "df": f(df),
        "p_value": f(2 * stats.t.sf(abs(statistic), df)),
        "ci": [f(estimate - half), f(estimate + half)],
    }


def absolute_from_moments(c, t, alpha):
    """scipy's Welch test from summary statistics (std = sqrt(variance))."""
    (nc, mc, vc), (nt, mt, vt) = c, t
    res = stats.ttest_ind_from_stats(
        mt, math.sqrt(vt), nt, mc, math.sqrt(vc), nc, equal_var=False
    )
    df = welch_df(c, t)
    out = t_result(mt - mc, vt / nt + vc / nc, df, alpha)
    # Cross-check the hand formula against scipy before trusting it.
    assert abs(out["statistic"] - res.statistic) < 1e-12 * max(1, abs(res.statistic))
    assert abs(out["p_value"] - res.pvalue) < 1e-12
    return out


def absolute_from_values(yc, yt, alpha):
    """scipy's Welch test on the raw per-unit values."""
    res = stats.ttest_ind(yt, yc, equal_var=False)
    ci = res.confidence_interval(confidence_level=1 - alpha)
    estimate = float(np.mean(yt) - np.mean(yc))
    return {
        "estimate": f(estimate),
        "std_error": f(math.sqrt(np.var(yt, ddof=1) / len(yt) + np.var(yc, ddof=1) / len(yc))),
        "statistic": f(res.statistic),
        "df": f(res.df),
        "p_value": f(res.pvalue),
        "ci": [f(ci.low), f(ci.high)],
    }


def relative(c, t, alpha):
    """Delta-method relative lift (GrowthBook's frequentist engine)."""
    (nc, mc, vc), (nt, mt, vt) = c, t
    estimate = mt / mc - 1
    variance = vt / (nt * mc**2) + vc * mt**2 / (nc * mc**4)
    return t_result(estimate, variance, welch_df(c, t), alpha), (estimate, variance)


def bayes(estimate, variance, prior, alpha):
    """Gaussian posterior; risks as GrowthBook's EffectBayesianABTest.get_risk
    (truncated-normal means from scipy.stats.truncnorm)."""
    if prior is None:
        mu, var = estimate, variance
    else:
        precision = 1 / variance + 1 / prior["variance"]
        var = 1 / precision
        mu = var * (estimate / variance + prior["mean"] / prior["variance"])
    sd = math.sqrt(var)
    p_ctrl_better = stats.norm.cdf(0, loc=mu, scale=sd)
    mean_neg = stats.truncnorm.mean(-np.inf, (0 - mu) / sd, loc=mu, scale=sd)
    mean_pos = stats.truncnorm.mean((0 - mu) / sd, np.inf, loc=mu, scale=sd)
    lo, hi = stats.norm.ppf([alpha / 2, 1 - alpha / 2], loc=mu, scale=sd)
    return {
        "chance_to_win": f(stats.norm.sf(0, loc=mu, scale=sd)),
        "expected": f(mu),
        "std_dev": f(sd),
        "ci": [f(lo), f(hi)],
        "risk_control": f((1 - p_ctrl_better) * mean_pos),
        "risk_treatment": f(-p_ctrl_better * mean_neg),
    }


def sequential(estimate, variance, units, alpha, tuning):
    """Waudby-Smith et al. 2023 asymptotic confidence sequence, as GrowthBook:
    rho from eq. 161, half-width eq. 9 with s2 = SE^2 * n, p-value eq. 155."""
    rho = math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuning)
    n = units
    s2 = variance * n
    half = math.sqrt(s2) * math.sqrt(
        2 * (n * rho**2 + 1) * math.log(math.sqrt(n * rho**2 + 1) / alpha) / (n * rho) ** 2
    )
    st2 = estimate**2 * n / variance
    tr2p1 = n * rho**2 + 1
    evalue = math.exp(rho**2 * st2 / (2 * tr2p1)) / math.sqrt(tr2p1)
    return {
        "rho": f(rho),
        "ci": [f(estimate - half), f(estimate + half)],
        "p_value": f(min(1 / evalue, 1)),
    }


# ---------------------------------------------------------------- data sets

def continuous_sets():
    """(name, control values, treatment values)."""
    out = []
    rng = np.random.default_rng(20260101)
    out.append(("lognormal revenue 50 vs 60",
                rng.lognormal(3.0, 1.0, 50), rng.lognormal(3.1, 1.0, 60)))
    rng = np.random.default_rng(20260102)
    out.append(("normal 500 vs 520",
                rng.normal(10.0, 2.0, 500), rng.normal(10.3, 2.5, 520)))
    rng = np.random.default_rng(20260103)
    out.append(("poisson events 2000 vs 1900",
                rng.poisson(3.0, 2000).astype(float), rng.poisson(3.1, 1900).astype(float)))
    rng = np.random.default_rng(20260104)
    out.append(("exponential 15 vs 12",
                rng.exponential(5.0, 15), rng.exponential(7.0, 12)))
    rng = np.random.default_rng(20260105)
    c = rng.lognormal(2.0, 1.2, 10000) * (rng.random(10000) < 0.05)
    t = rng.lognormal(2.0, 1.2, 10000) * (rng.random(10000) < 0.055)
    out.append(("zero-inflated revenue 10000 vs 10000", c, t))
    return out


BINOMIAL_PAIRS = [
    # (name, (conversions, units) control, treatment, alpha)
    ("14/28 vs 16/30", (14, 28), (16, 30), 0.05),
    ("49/100 vs 51/100", (49, 100), (51, 100), 0.05),
    ("120/1000 vs 145/1000", (120, 1000), (145, 1000), 0.05),
    ("1500/20000 vs 1620/20100", (1500, 20000), (1620, 20100), 0.05),
    ("5/40 vs 12/38 at 90%", (5, 40), (12, 38), 0.10),
    ("300/5000 vs 260/4900 at 99%", (300, 5000), (260, 4900), 0.01),
    ("30000/500000 vs 30750/500500", (30000, 500000), (30750, 500500), 0.05),
]


def main():
    out = {
        "description": "Reference values for crates/guidon-stats; generated by "
                       "testdata/stats/reference.py, do not edit by hand.",
        "generated_with": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "statsmodels": statsmodels.__version__,
        },
    }

    # Wilson score intervals (statsmodels).
    wilson = []
    for successes, trials, alpha in [
        (45, 100, 0.05), (0, 50, 0.05), (50, 50, 0.05), (1, 3, 0.05), (14, 28, 0.05),
        (16, 30, 0.10), (987, 10000, 0.01), (3, 1000, 0.05), (500, 1000, 0.2),
    ]:
        lo, hi = proportion_confint(successes, trials, alpha=alpha, method="wilson")
        wilson.append({"successes": successes, "trials": trials, "alpha": alpha,
                       "ci": [f(lo), f(hi)]})
    out["wilson"] = wilson

    # Welch tests, absolute and relative.
    welch = []
    for name, (xc, nc), (xt, nt), alpha in BINOMIAL_PAIRS:
        c, t = binomial_moments(xc, nc), binomial_moments(xt, nt)
        rel, _ = relative(c, t, alpha)
        welch.append({
            "name": name, "metric": "binomial", "alpha": alpha,
            "control": binomial_variant(xc, nc), "treatment": binomial_variant(xt, nt),
            "absolute": absolute_from_moments(c, t, alpha), "relative": rel,
        })
    for name, yc, yt in continuous_sets():
        alpha = 0.05
        rel, _ = relative(value_moments(yc), value_moments(yt), alpha)
        welch.append({
            "name": name, "metric": "continuous", "alpha": alpha,
            "control": values_variant(yc), "treatment": values_variant(yt),
            "absolute": absolute_from_values(yc, yt, alpha), "relative": rel,
        })
    out["welch"] = welch

    # Bayesian chance to win and risk on the relative lift.
    bayesian = []
    cont = {name: (yc, yt) for name, yc, yt in continuous_sets()}
    for name, control, treatment, prior in [
        ("49/100 vs 51/100", (49, 100), (51, 100), None),
        ("120/1000 vs 145/1000", (120, 1000), (145, 1000), None),
        ("120/1000 vs 145/1000, prior N(0, 0.09)", (120, 1000), (145, 1000),
         {"mean": 0.0, "variance": 0.09}),
        ("1500/20000 vs 1620/20100", (1500, 20000), (1620, 20100), None),
        ("300/5000 vs 260/4900, prior N(0.02, 0.0004)", (300, 5000), (260, 4900),
         {"mean": 0.02, "variance": 0.0004}),
        ("normal 500 vs 520", None, None, None),
        ("lognormal revenue 50 vs 60, prior N(0.05, 0.01)", None, None,
         {"mean": 0.05, "variance": 0.01}),
    ]:
        alpha = 0.05
        if control is not None:
            c, t = binomial_moments(*control), binomial_moments(*treatment)
            case = {"metric": "binomial", "control": binomial_variant(*control),
                    "treatment": binomial_variant(*treatment)}
        else:
            yc, yt = cont[name.split(",")[0]]
            c, t = value_moments(yc), value_moments(yt)
            case = {"metric": "continuous", "control": values_variant(yc),
                    "treatment": values_variant(yt)}
        _, (estimate, variance) = relative(c, t, alpha)
        case.update({"name": name, "alpha": alpha, "prior": prior,
                     "expected": bayes(estimate, variance, prior, alpha)})
        bayesian.append(case)
    out["bayesian"] = bayesian

    # Sequential confidence sequences.
    seq = []
    for name, control, treatment, difference, alpha, tuning in [
        ("1500/20000 vs 1620/20100 relative", (1500, 20000), (1620, 20100), "relative", 0.05, 5000.0),
        ("120/1000 vs 145/1000 absolute", (120, 1000), (145, 1000), "absolute", 0.05, 5000.0),
        ("30000/500000 vs 30750/500500 relative, N*=100000", (30000, 500000), (30750, 500500),
         "relative", 0.05, 100000.0),
        ("5/40 vs 12/38 absolute at 90%", (5, 40), (12, 38), "absolute", 0.10, 5000.0),
        ("poisson events 2000 vs 1900 relative, N*=1000", None, None, "relative", 0.05, 1000.0),
    ]:
        if control is not None:
            c, t = binomial_moments(*control), binomial_moments(*treatment)
            case = {"metric": "binomial", "control": binomial_variant(*control),
                    "treatment": binomial_variant(*treatment)}
        else:
            yc, yt = cont["poisson events 2000 vs 1900"]
            c, t = value_moments(yc), value_moments(yt)
            case = {"metric": "continuous", "control": values_variant(yc),
                    "treatment": values_variant(yt)}
        if difference == "relative":
            _, (estimate, variance) = relative(c, t, alpha)
        else:
            estimate, variance = t[1] - c[1], t[2] / t[0] + c[2] / c[0]
        case.update({"name": name, "difference": difference, "alpha": alpha,
                     "tuning_parameter": tuning,
                     "expected": sequential(estimate, variance, c[0] + t[0], alpha, tuning)})
        seq.append(case)
    out["sequential"] = seq

    # Sample-ratio mismatch (scipy chi-square goodness of fit).
    srm = []
    for observed, weights in [
        ([1000, 1200], [50, 50]), ([5000, 5100], [1, 1]), ([100, 95, 130], [1, 1, 1]),
        ([3300, 3400, 3300], [1, 1, 1]), ([2000, 1000], [2, 1]), ([950, 2100], [1, 2]),
        ([10, 20, 30, 40], [1, 1, 1, 1]), ([4980, 2560, 2460], [50, 25, 25]),
    ]:
        total = sum(observed)
        expected = [total * w / sum(weights) for w in weights]
        res = stats.chisquare(observed, f_exp=expected)
        srm.append({"observed": observed, "weights": [float(w) for w in weights],
                    "chi_square": f(res.statistic), "p_value": f(res.pvalue)})
    out["srm"] = srm

    # Multiple-testing corrections (statsmodels).
    rng = np.random.default_rng(20260106)
    families = [
        [0.01, 0.04, 0.03, 0.005, 0.55, 0.6],
        [0.02, 0.02, 0.5, 1.0, 0.001],
        [float(round(p, 6)) for p in rng.uniform(0, 0.2, 8)],
        [float(round(p, 6)) for p in np.concatenate([rng.uniform(0, 0.01, 3), rng.uniform(0, 1, 7)])],
    ]
    out["holm"] = [{"p_values": ps, "adjusted": [f(x) for x in multipletests(ps, method="holm")[1]]}
                   for ps in families]
    out["benjamini_hochberg"] = [
        {"p_values": ps, "adjusted": [f(x) for x in multipletests(ps, method="fdr_bh")[1]]}
        for ps in families]

    # Pooled two-proportion z-tests (statsmodels).
    z = []
    for counts, nobs in [
        ([250, 200], [1000, 1000]), ([14, 16], [28, 30]), ([5, 12], [40, 38]),
        ([3000, 3100], [50000, 50000]), ([0, 5], [100, 100]),
    ]:
        stat, p = proportions_ztest(counts, nobs)
        z.append({"successes": counts, "trials": nobs, "z": f(stat), "p_value": f(p)})
    out["z_test"] = z

    # CUPED on generated data: theta pooled over all units with numpy, then
    # scipy's Welch test on the adjusted per-unit values y - theta (x - xbar).
    cuped = []
    for name, seed, sizes, effects, alpha in [
        ("2 variants, linear pre-period", 20260107, [800, 820], [0.0, 0.4], 0.05),
        ("3 variants, lognormal spend", 20260108, [1500, 1480, 1530], [0.0, 1.0, -0.5], 0.05),
        ("2 variants, small and noisy", 20260109, [30, 25], [0.0, 2.0], 0.10),
    ]:
        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for n, effect in zip(sizes, effects):
            if "lognormal" in name:
                x = rng.lognormal(2.0, 0.8, n)
                y = 3.0 + 0.9 * x + rng.normal(0, 4.0, n) + effect
            else:
                x = rng.normal(20.0, 5.0, n)
                y = 5.0 + 0.6 * x + rng.normal(0, 3.0, n) + effect
            xs.append(x)
            ys.append(y)
        x_all, y_all = np.concatenate(xs), np.concatenate(ys)
        theta = np.cov(x_all, y_all, ddof=1)[0, 1] / np.var(x_all, ddof=1)
        xbar = np.mean(x_all)
        adjusted = [y - theta * (x - xbar) for x, y in zip(xs, ys)]
        comparisons = []
        for i in range(1, len(sizes)):
            rel, _ = relative(value_moments(adjusted[0]), value_moments(adjusted[i]), alpha)
            comparisons.append({
                "absolute": absolute_from_values(adjusted[0], adjusted[i], alpha),
                "relative": rel,
            })
        cuped.append({
            "name": name, "alpha": alpha,
            "variants": [values_variant(y, x) for x, y in zip(xs, ys)],
            "theta": f(theta), "covariate_mean": f(xbar),
            "adjusted": [{"mean": f(np.mean(a)), "variance": f(np.var(a, ddof=1))}
                         for a in adjusted],
            "comparisons": comparisons,
        })
    out["cuped"] = cuped

    finish(out, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.json"))


if __name__ == "__main__":
    main()
