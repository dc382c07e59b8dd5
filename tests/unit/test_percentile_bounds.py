"""Issue 26 groundwork: percentile smoothing's certificate math against closed forms (the
binomial law, Gaussian quantiles of a linear model) and by its coverage in simulation."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch

from smoothrecon.certification.percentile import (
    binom_cdf,
    lower_rank,
    percentile_bounds,
    shifted_levels,
    upper_rank,
)

PHI = NormalDist()


def test_binom_cdf_matches_the_closed_form() -> None:
    n, q = 7, 0.3
    exact = [
        sum(math.comb(n, j) * q**j * (1 - q) ** (n - j) for j in range(k + 1)) for k in range(n + 1)
    ]
    assert torch.allclose(binom_cdf(n, q), torch.tensor(exact, dtype=torch.float64), atol=1e-12)
    # symmetry P(Bin(n, q) <= k) = 1 - P(Bin(n, 1 - q) <= n - k - 1), at a large n
    big = 5000
    a, b = binom_cdf(big, 0.37), binom_cdf(big, 0.63)
    k = torch.arange(big)
    assert torch.allclose(a[k], 1 - b[big - k - 1], atol=1e-9)


def test_ranks_are_the_tightest_at_their_confidence() -> None:
    n, q, delta = 1000, 0.5, 1e-3
    k, u = lower_rank(n, q, delta), upper_rank(n, q, delta)
    cdf = binom_cdf(n, q)
    assert cdf[k - 1] <= delta < cdf[k]  # one rank higher would fail more often than delta
    assert cdf[u - 1] >= 1 - delta > cdf[u - 2]
    assert k < n / 2 < u
    assert lower_rank(10, 0.01, 1e-3) == 0 and upper_rank(10, 0.99, 1e-3) == 11  # too few


def test_the_levels_shift_by_eps_over_sigma() -> None:
    lo, hi = shifted_levels(0.5, 0.3, 0.6)
    assert lo == pytest.approx(PHI.cdf(-0.5)) and hi == pytest.approx(PHI.cdf(0.5))
    assert shifted_levels(0.5, 0.0, 1.0) == (0.5, 0.5)
    with pytest.raises(ValueError):
        shifted_levels(1.0, 0.1, 1.0)


def test_the_linear_model_gets_its_exact_worst_case() -> None:
    """f = identity: f_i(y + delta) = y_i + sigma z, so the p-percentile at y + e is
    y_i + e_i + sigma Phi^-1(p), and the worst e in the ball moves one value by +-eps. The
    certified interval holds that worst case and, with many samples, is close to it."""
    gen = torch.Generator().manual_seed(0)
    sigma, eps, p, n = 0.5, 0.2, 0.5, 20000
    y = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    samples = y + sigma * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    lo, hi = percentile_bounds(samples, p, eps, sigma, 1e-4, value_range=(-math.inf, math.inf))
    worst_lo, worst_hi = y - eps, y + eps  # the median y_i + e_i over |e_i| <= eps
    assert torch.all(lo <= worst_lo) and torch.all(hi >= worst_hi)
    assert torch.all(worst_lo - lo < 0.05) and torch.all(hi - worst_hi < 0.05)


def test_the_bounds_hold_with_the_promised_probability() -> None:
    """2000 independent sample sets of n = 200 exponential values (skewed, not Gaussian): the
    lower bound of the 0.3-quantile fails in at most delta of them, within sampling error."""
    gen = torch.Generator().manual_seed(1)
    trials, n, q, delta = 2000, 200, 0.3, 0.05
    samples = torch.empty(n, trials, dtype=torch.float64).exponential_(1.0, generator=gen)
    truth = -math.log(1 - q)  # the exponential's q-quantile
    k = lower_rank(n, q, delta)
    lo = samples.sort(dim=0).values[k - 1]
    fails = float((lo > truth).double().mean())
    assert fails <= delta + 3 * math.sqrt(delta * (1 - delta) / trials)
    assert fails > delta / 4  # and the rank is not needlessly low
