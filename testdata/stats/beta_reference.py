#!/usr/bin/env python3
"""Reference values for guidon-stats' Beta-posterior results
(`binomial_bayes`), computed independently with scipy.

Needs numpy and scipy, pinned in testdata/stats/requirements.txt (see
testdata/stats/run.sh, which runs `beta_reference.py --check` in CI):

    target/stats-venv/bin/python testdata/stats/beta_reference.py > testdata/stats/beta_reference.json

Each arm's rate has the posterior Beta(1 + converted, 1 + units - converted).
Where the Rust code integrates with Simpson's rule over each arm's span and
derives expected losses from "is best" probabilities, this script uses
scipy.integrate.quad with scipy.stats.beta directly on the definitions:

    P(arm k best)         = integral of pdf_k(x) * prod_{j != k} cdf_j(x) dx
    E[max(T - C, 0)]      = integral over x of pdf_T(x) * E[max(x - C, 0)] dx,
                            E[max(x - C, 0)] = integral_0^x cdf_C(y) dy
    expected loss of arm k = E[max_j p_j] - E[p_k],
                            E[max_j p_j] = integral_0^1 (1 - prod_j cdf_j(x)) dx

The Rust test crates/guidon-stats/tests/reference.rs checks every figure to
1e-7 (absolute).
"""

import os
import sys

import numpy
import scipy
from scipy import integrate, special, stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from refcheck import finish  # noqa: E402

CASES = [
    [(208, 17), (192, 0)],
    [(1000, 50), (1000, 65)],
    [(40, 3), (38, 6)],
    [(60, 1), (60, 5)],
    [(5000, 400), (5100, 380)],
    [(500, 40), (500, 55), (500, 48)],
    [(120, 10), (130, 14), (110, 13), (125, 9)],
]


class Posterior:
    """Beta(1 + converted, 1 + units - converted): scipy.stats.beta for the
    density and moments; its cdf is scipy.special.betainc, which is what
    scipy.stats.beta.cdf computes, called directly because the nested
    quadratures below call it millions of times."""

    def __init__(self, units, converted):
        self.a, self.b = 1.0 + converted, 1.0 + units - converted
        self.dist = stats.beta(self.a, self.b)
        self.pdf = self.dist.pdf

    def cdf(self, x):
        return float(special.betainc(self.a, self.b, x))

    def mean(self):
        return self.dist.mean()

    def std(self):
        return self.dist.std()


def posterior(units, converted):
    return Posterior(units, converted)


def span(d):
    return max(0.0, d.mean() - 30 * d.std()), min(1.0, d.mean() + 30 * d.std())


def quad(f, lo, hi, points):
    value, _ = integrate.quad(f, lo, hi, points=points, limit=500, epsabs=1e-13, epsrel=1e-12)
    return value


def main():
    out = {
        "generated_with": {
            "python": sys.version.split()[0],
            "numpy": numpy.__version__,
            "scipy": scipy.__version__,
        },
        "cases": [],
    }
    for arms in CASES:
        ds = [posterior(u, c) for u, c in arms]
        means = [d.mean() for d in ds]
        best = []
        for k, dk in enumerate(ds):
            lo, hi = span(dk)

            def integrand(x, k=k, dk=dk):
                value = dk.pdf(x)
                for j, dj in enumerate(ds):
                    if j != k:
                        value *= dj.cdf(x)
                return value

            best.append(quad(integrand, lo, hi, [dk.mean()]))

        def one_minus_prod(x):
            p = 1.0
            for d in ds:
                p *= d.cdf(x)
            return 1.0 - p

        breaks = sorted(means)
        e_max = quad(one_minus_prod, 0.0, 1.0, breaks)
        loss = [e_max - m for m in means]
        comparisons = []
        c = ds[0]
        for t_index, t in enumerate(ds[1:], start=1):
            lo, hi = span(t)
            win = quad(lambda x: t.pdf(x) * c.cdf(x), lo, hi, [t.mean()])

            def e_pos(x, other):
                # E[max(x - Y, 0)] = integral_0^x cdf_Y(y) dy
                a, b = span(other)
                upper = min(x, b)
                if upper <= 0.0:
                    return 0.0
                inner = quad(other.cdf, 0.0, upper, [other.mean()] if other.mean() < upper else None)
                return inner + max(0.0, x - b)

            risk_control = quad(lambda x: t.pdf(x) * e_pos(x, c), lo, hi, [t.mean()])
            lo_c, hi_c = span(c)
            risk_treatment = quad(lambda x: c.pdf(x) * e_pos(x, t), lo_c, hi_c, [c.mean()])
            comparisons.append(
                {
                    "variant": t_index,
                    "chance_to_win": win,
                    "risk_control": risk_control,
                    "risk_treatment": risk_treatment,
                }
            )
        out["cases"].append(
            {
                "arms": [list(a) for a in arms],
                "chance_to_be_best": best,
                "expected_loss": loss,
                "comparisons": comparisons,
            }
        )
    finish(out, os.path.join(os.path.dirname(os.path.abspath(__file__)), "beta_reference.json"))


if __name__ == "__main__":
    main()
