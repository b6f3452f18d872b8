#!/usr/bin/env python3
"""A second outside reference for crates/guidon-stats: GrowthBook's own stats
engine, `gbstats` from PyPI, on the same summary statistics.

Needs gbstats, numpy and scipy, pinned in testdata/stats/requirements.txt;
testdata/stats/run.sh makes the virtualenv and runs `--check` in CI. To
regenerate:

    target/stats-venv/bin/python testdata/stats/gbstats_reference.py > testdata/stats/gbstats_reference.json

For each synthetic experiment (binomial, continuous and ratio, 2 and 3 arms, small
and large, flat and proper priors, and the edge cases where the two differ
most) the per-variant aggregates guidon-stats takes (units, converted,
sum, sum of squares) are turned into gbstats' own statistics
(`ProportionStatistic(n, sum)` for a conversion metric, `SampleMeanStatistic(n,
sum, sum_squares)` for a value metric, `RatioStatistic` of two of them and
the sum of products for a ratio metric), and each treatment against control is
run through gbstats' tests as its runner configures them:

- `TwoSidedTTest` (frequentist), absolute and relative;
- `SequentialTwoSidedTTest` (the confidence sequence, N* = 5000), absolute
  and relative;
- `EffectBayesianABTest`, absolute and relative, with the prior given as
  GrowthBook gives it: on the relative lift (`prior_type="relative"`,
  rescaled by gbstats for the absolute difference), proper or not.

Where guidon-stats reads a result differently from gbstats by design
(docs/statistics.md), the reading guidon uses is computed here too,
independently with scipy, under `independent`:

- the relative lift's interval on the log scale, `exp(ln(m_t/m_c) ± q·SE) - 1`
  with the delta-method SE of the log ratio (Welch t, credible and
  sequential);
- for a conversion metric, the chance to win and the expected losses from
  the Beta(1 + converted, 1 + units - converted) posteriors, by
  scipy.integrate.quad (and for arms above 1,000,000 units the normal with the
  Beta's mean and variance, which is what guidon uses there);
- for a ratio metric (revenue per order), the ratio's delta-method variance
  from the per-unit data with numpy, before any aggregate;
- the absolute Welch test (scipy's `ttest_ind_from_stats`), for the cases where
  gbstats gives no result at all (a zero control mean or a zero variance in
  one arm).

The Rust test crates/guidon-stats/tests/gbstats.rs reads the JSON, runs
guidon-stats' `analyze` and `headline` on the same aggregates and checks
every figure: equal to gbstats where the methods are the same, equal to the
independent figure where they differ by design.
"""

import importlib.metadata
import math
import os
import sys

import numpy as np
import scipy
from scipy import integrate, special, stats

from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig, GaussianPrior
from gbstats.frequentist.tests import (
    FrequentistConfig,
    SequentialConfig,
    SequentialTwoSidedTTest,
    TwoSidedTTest,
)
from gbstats.models.statistics import ProportionStatistic, RatioStatistic, SampleMeanStatistic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from refcheck import finish  # noqa: E402

TUNING = 5000.0  # GrowthBook's default sequential tuning parameter N*
EXACT_LIMIT = 1_000_000  # guidon's Beta posteriors become normal above this


def f(x):
    return float(x)


# ---------------------------------------------------------------- inputs

def binomial_variant(units, conversions):
    return {"units": units, "count": conversions,
            "sum": float(conversions), "sum_squares": float(conversions)}


def values_variant(y):
    y = np.asarray(y, dtype=float)
    return {"units": int(len(y)), "count": int(np.sum(y > 0)),
            "sum": math.fsum(y), "sum_squares": math.fsum(y * y)}


def ratio_variant(y, x):
    """A ratio metric Σy/Σx (revenue per order: y the revenue, x the orders)."""
    v = values_variant(y)
    x = np.asarray(x, dtype=float)
    v["denominator"] = {"sum": math.fsum(x), "sum_squares": math.fsum(x * x),
                        "sum_products": math.fsum(x * np.asarray(y, dtype=float))}
    return v


def gb_statistic(metric, v):
    n = v["units"]
    if metric == "binomial":
        return ProportionStatistic(n=n, sum=v["sum"])
    numerator = SampleMeanStatistic(n=n, sum=v["sum"], sum_squares=v["sum_squares"])
    if metric == "ratio":
        d = v["denominator"]
        return RatioStatistic(
            n=n, m_statistic=numerator,
            d_statistic=SampleMeanStatistic(n=n, sum=d["sum"], sum_squares=d["sum_squares"]),
            m_d_sum_of_products=d["sum_products"])
    return numerator


def moments(metric, v, data=None):
    """(n, mean, variance of a unit's value): p(1 - p) for a conversion
    metric, the sample variance for a value metric; for a ratio Σy/Σx the
    delta method on the per-unit data (y, x) with numpy's sample moments,
    (s_yy - 2R s_xy + R² s_xx) / x̄²."""
    n = v["units"]
    mean = v["sum"] / n
    if metric == "binomial":
        return n, mean, mean * (1 - mean)
    if metric == "ratio":
        y, x = data
        r = math.fsum(y) / math.fsum(x)
        cov = np.cov(np.vstack([y, x]), ddof=1)
        var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / np.mean(x) ** 2
        return n, r, float(var)
    return n, mean, (v["sum_squares"] - v["sum"] ** 2 / n) / (n - 1)


# ---------------------------------------------------------------- gbstats

def gb_frequentist(a, b, difference, alpha):
    r = TwoSidedTTest(a, b, FrequentistConfig(alpha=alpha, difference_type=difference)).compute_result()
    return {"expected": f(r.expected), "ci": [f(x) for x in r.ci], "p_value": f(r.p_value),
            "std_error": f(r.uplift.stddev), "error": r.error_message}


def gb_sequential(a, b, difference, alpha):
    config = SequentialConfig(alpha=alpha, difference_type=difference,
                              sequential_tuning_parameter=TUNING)
    r = SequentialTwoSidedTTest(a, b, config).compute_result()
    return {"expected": f(r.expected), "ci": [f(x) for x in r.ci], "p_value": f(r.p_value),
            "error": r.error_message}


def gb_bayesian(a, b, difference, alpha, prior):
    if prior is None:
        effect = GaussianPrior(proper=False)
    else:
        effect = GaussianPrior(mean=prior["mean"], variance=prior["variance"], proper=True)
    config = EffectBayesianConfig(alpha=alpha, difference_type=difference,
                                  prior_effect=effect, prior_type="relative")
    r = EffectBayesianABTest(a, b, config).compute_result()
    return {"chance_to_win": f(r.chance_to_win), "expected": f(r.expected),
            "std_dev": f(r.uplift.stddev), "ci": [f(x) for x in r.ci],
            "risk": [f(x) for x in r.risk], "risk_type": r.risk_type, "error": r.error_message}


# ---------------------------------------------------------------- independent

def welch_df(c, t):
    (nc, _, vc), (nt, _, vt) = c, t
    sc, st = vc / nc, vt / nt
    return (sc + st) ** 2 / (sc**2 / (nc - 1) + st**2 / (nt - 1))


def scipy_welch(c, t, alpha):
    (nc, mc, vc), (nt, mt, vt) = c, t
    res = stats.ttest_ind_from_stats(mt, math.sqrt(vt), nt, mc, math.sqrt(vc), nc, equal_var=False)
    se = math.sqrt(vt / nt + vc / nc)
    half = stats.t.ppf(1 - alpha / 2, welch_df(c, t)) * se
    return {"estimate": f(mt - mc), "std_error": f(se), "p_value": f(res.pvalue),
            "ci": [f(mt - mc - half), f(mt - mc + half)]}


def log_intervals(c, t, alpha, prior):
    """The relative lift's intervals on the log scale: Welch t, credible
    (the prior taken as it is on the log of the ratio) and sequential."""
    (nc, mc, vc), (nt, mt, vt) = c, t
    if mc <= 0 or mt <= 0:
        return None
    est = math.log(mt / mc)
    var = vt / (nt * mt**2) + vc / (nc * mc**2)
    se = math.sqrt(var)
    q = stats.t.ppf(1 - alpha / 2, welch_df(c, t))
    if prior is None:
        mu, sd = est, se
    else:
        post_var = 1 / (1 / var + 1 / prior["variance"])
        mu, sd = post_var * (est / var + prior["mean"] / prior["variance"]), math.sqrt(post_var)
    z = stats.norm.ppf(1 - alpha / 2)
    n = nc + nt
    rho = math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / TUNING)
    seq_half = math.sqrt(var * n) * math.sqrt(
        2 * (n * rho**2 + 1) * math.log(math.sqrt(n * rho**2 + 1) / alpha) / (n * rho) ** 2)
    back = lambda lo, hi: [f(math.expm1(lo)), f(math.expm1(hi))]  # noqa: E731
    return {"estimate": f(mt / mc - 1), "ci": back(est - q * se, est + q * se),
            "credible_ci": back(mu - z * sd, mu + z * sd),
            "sequential_ci": back(est - seq_half, est + seq_half)}


class Beta:
    """An arm's posterior Beta(1 + converted, 1 + units - converted), or above
    EXACT_LIMIT units (in any arm) the normal with the same mean and variance."""

    def __init__(self, units, converted, normal):
        self.a, self.b = 1.0 + converted, 1.0 + units - converted
        self.dist = stats.beta(self.a, self.b)
        self.mean, self.sd = float(self.dist.mean()), float(self.dist.std())
        self.normal = normal

    def pdf(self, x):
        if self.normal:
            return float(stats.norm.pdf(x, self.mean, self.sd))
        return float(self.dist.pdf(x))

    def cdf(self, x):
        if self.normal:
            return float(special.ndtr((x - self.mean) / self.sd))
        return float(special.betainc(self.a, self.b, x))

    def partial_mean(self, x):
        """E[X; X <= x] = E[X] * I_x(a + 1, b) (normal: mu*Phi(z) - sd*phi(z))."""
        if self.normal:
            z = (x - self.mean) / self.sd
            return self.mean * special.ndtr(z) - self.sd * stats.norm.pdf(z)
        return self.mean * float(special.betainc(self.a + 1, self.b, x))

    def span(self):
        lo, hi = self.mean - 30 * self.sd, self.mean + 30 * self.sd
        return (lo, hi) if self.normal else (max(0.0, lo), min(1.0, hi))


def quad(g, lo, hi, points):
    value, _ = integrate.quad(g, lo, hi, points=points, limit=500, epsabs=1e-14, epsrel=1e-12)
    return value


def beta_comparison(c, t):
    """P(T > C) = integral of f_T(x) F_C(x); E[max(T - C, 0)] = integral of
    f_T(x) E[max(x - C, 0)] with E[max(x - C, 0)] = x F_C(x) - E[C; C <= x],
    and the same the other way round."""
    lo, hi = t.span()
    win = quad(lambda x: t.pdf(x) * c.cdf(x), lo, hi, [t.mean])
    risk_control = quad(lambda x: t.pdf(x) * (x * c.cdf(x) - c.partial_mean(x)), lo, hi, [t.mean])
    lo, hi = c.span()
    risk_treatment = quad(lambda x: c.pdf(x) * (x * t.cdf(x) - t.partial_mean(x)), lo, hi, [c.mean])
    return {"chance_to_win": f(win), "risk_control": f(risk_control),
            "risk_treatment": f(risk_treatment)}


# ---------------------------------------------------------------- experiments

def binomial(name, arms, alpha=0.05, prior=None):
    return {"name": name, "metric": "binomial", "alpha": alpha, "prior": prior,
            "variants": [binomial_variant(u, c) for u, c in arms]}


def continuous(name, samples, alpha=0.05, prior=None):
    return {"name": name, "metric": "continuous", "alpha": alpha, "prior": prior,
            "variants": [values_variant(y) for y in samples]}


def ratio(name, samples, alpha=0.05, prior=None):
    """samples: per arm, (y, x) per-unit values."""
    return {"name": name, "metric": "ratio", "alpha": alpha, "prior": prior,
            "variants": [ratio_variant(y, x) for y, x in samples],
            "data": [(np.asarray(y, dtype=float), np.asarray(x, dtype=float)) for y, x in samples]}


def orders_and_revenue(rng, n, orders, basket):
    x = rng.poisson(orders, n).astype(float)
    y = np.array([math.fsum(rng.lognormal(basket, 0.6, int(k))) for k in x])
    return y, x


def experiments():
    out = [
        binomial("binomial 2 arms small: 12/150 vs 21/160", [(150, 12), (160, 21)]),
        binomial("binomial 2 arms: 120/1000 vs 145/1000", [(1000, 120), (1000, 145)]),
        binomial("binomial 2 arms, proper prior N(0, 0.1^2): 120/1000 vs 145/1000",
                 [(1000, 120), (1000, 145)], prior={"mean": 0.0, "variance": 0.01}),
        binomial("binomial 2 arms large: 20000/400000 vs 20600/400000",
                 [(400000, 20000), (400000, 20600)]),
        binomial("binomial 2 arms at 90%, prior N(0.02, 0.02^2): 300/5000 vs 260/4900",
                 [(5000, 300), (4900, 260)], alpha=0.10, prior={"mean": 0.02, "variance": 0.0004}),
        binomial("binomial 3 arms: 500/5000, 560/5000, 470/5100",
                 [(5000, 500), (5000, 560), (5100, 470)]),
        binomial("binomial 3 arms small: 9/80, 15/85, 4/78", [(80, 9), (85, 15), (78, 4)]),
        binomial("binomial 3 arms large, above the exact limit: 60000/1200000, 61000/1200000, "
                 "59500/1190000", [(1200000, 60000), (1200000, 61000), (1190000, 59500)]),
        binomial("binomial small, delta-method interval below -100%: 3/40 vs 1/35",
                 [(40, 3), (35, 1)]),
        binomial("binomial, treatment never converts: 17/208 vs 0/192", [(208, 17), (192, 0)]),
        binomial("binomial, control never converts: 0/150 vs 6/150", [(150, 0), (150, 6)]),
    ]
    rng = np.random.default_rng(20261204)
    out.append(continuous("continuous 2 arms small: lognormal 40 vs 45",
                          [rng.lognormal(3.0, 1.0, 40), rng.lognormal(3.2, 1.0, 45)]))
    rng = np.random.default_rng(20261205)
    c = rng.lognormal(2.0, 1.2, 100000) * (rng.random(100000) < 0.05)
    t = rng.lognormal(2.0, 1.2, 100000) * (rng.random(100000) < 0.052)
    out.append(continuous("continuous 2 arms large: zero-inflated revenue 100000 vs 100000", [c, t]))
    rng = np.random.default_rng(20261206)
    out.append(continuous("continuous 3 arms: normal 2000, 2000, 1950",
                          [rng.normal(10.0, 3.0, 2000), rng.normal(10.3, 3.0, 2000),
                           rng.normal(9.9, 3.5, 1950)]))
    rng = np.random.default_rng(20261207)
    out.append(continuous("continuous 2 arms, prior N(0.02, 0.02^2): poisson 3000 vs 3000",
                          [rng.poisson(3.0, 3000).astype(float), rng.poisson(3.1, 3000).astype(float)],
                          prior={"mean": 0.02, "variance": 0.0004}))
    rng = np.random.default_rng(20261208)
    out.append(continuous("continuous 3 arms small at 90%: exponential 12, 15, 10",
                          [rng.exponential(5.0, 12), rng.exponential(8.0, 15),
                           rng.exponential(4.0, 10)], alpha=0.10))
    rng = np.random.default_rng(20261209)
    out.append(ratio("ratio 2 arms: revenue per order, 300 vs 320 units",
                     [orders_and_revenue(rng, 300, 1.2, 3.0), orders_and_revenue(rng, 320, 1.25, 3.1)]))
    rng = np.random.default_rng(20261210)
    out.append(ratio("ratio 3 arms large, prior N(0, 0.1^2): revenue per order, 50000 each",
                     [orders_and_revenue(rng, 50000, 1.0, 3.0), orders_and_revenue(rng, 50000, 1.0, 3.02),
                      orders_and_revenue(rng, 50000, 1.05, 2.99)], prior={"mean": 0.0, "variance": 0.01}))
    return out


def main():
    out = {
        "description": "gbstats (GrowthBook's stats engine) on the same summary statistics as "
                       "guidon-stats, and guidon's by-design alternatives computed with scipy; "
                       "generated by testdata/stats/gbstats_reference.py, do not edit by hand.",
        "generated_with": {
            "python": sys.version.split()[0],
            "gbstats": importlib.metadata.version("gbstats"),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
        },
        "sequential_tuning_parameter": TUNING,
        "cases": [],
    }
    for case in experiments():
        metric, alpha, prior, variants = case["metric"], case["alpha"], case["prior"], case["variants"]
        normal = any(v["units"] > EXACT_LIMIT for v in variants)
        data = case.pop("data", [None] * len(variants))
        gb = [gb_statistic(metric, v) for v in variants]
        mo = [moments(metric, v, d) for v, d in zip(variants, data)]
        comparisons = []
        for i in range(1, len(variants)):
            gbstats = {}
            for difference in ("absolute", "relative"):
                gbstats["frequentist_" + difference] = gb_frequentist(gb[0], gb[i], difference, alpha)
                gbstats["sequential_" + difference] = gb_sequential(gb[0], gb[i], difference, alpha)
                gbstats["bayesian_" + difference] = gb_bayesian(gb[0], gb[i], difference, alpha, prior)
            independent = {"welch_absolute": scipy_welch(mo[0], mo[i], alpha),
                           "log_relative": log_intervals(mo[0], mo[i], alpha, prior)}
            if metric == "binomial":
                arm = lambda v: Beta(v["units"], v["count"], normal)  # noqa: E731
                independent["beta"] = beta_comparison(arm(variants[0]), arm(variants[i]))
                if normal:
                    exact = lambda v: Beta(v["units"], v["count"], False)  # noqa: E731
                    independent["beta_exact"] = beta_comparison(exact(variants[0]), exact(variants[i]))
            comparisons.append({"variant": i, "gbstats": gbstats, "independent": independent})
        case["beta_method"] = ("beta_posterior_normal" if normal else "beta_posterior") \
            if metric == "binomial" else None
        case["comparisons"] = comparisons
        out["cases"].append(case)
    finish(out, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gbstats_reference.json"))


if __name__ == "__main__":
    main()
