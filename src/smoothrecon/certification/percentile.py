"""Percentile (median) smoothing's certificate, per output value: the math of issue 26, not yet
wired into `certify` (see the issue's note).

Percentile smoothing (Chiang et al., NeurIPS 2020, "Detection as regression: certified object
detection by median smoothing") reports per output value i the p-percentile of f_i(y + delta),
delta ~ N(0, sigma^2 I). For every ||e||_2 <= eps it lies between two other percentiles at y:

    xi_{q-}(y) <= xi_p(y + e) <= xi_{q+}(y),   q-+ = Phi(Phi^-1(p) -+ eps / sigma)

(their Lemma 1: t -> P(f_i(y + delta) <= t) composed with Phi^-1 is 1/sigma-Lipschitz in y).
No range argument is needed, and the interval is as narrow as f's spread under the noise.

From n samples X_1..X_n of f_i(y + delta), order statistics bound the two percentiles:
X_(k) <= xi_q except with probability P(Bin(n, q) < k), and X_(u) >= xi_q except with
probability P(Bin(n, q) >= u), for any distribution (xi_q = inf{t: F(t) >= q}). `lower_rank`
and `upper_rank` pick the tightest ranks at a failure probability delta each; a union bound
over d values and two sides gives delta = alpha / (2 d) for one image.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

_NORMAL = NormalDist()


def shifted_levels(p: float, eps: float, sigma: float) -> tuple[float, float]:
    """(q-, q+) = Phi(Phi^-1(p) -+ eps / sigma): the levels whose percentiles at y bound the
    p-percentile anywhere in the ball of radius eps. p in (0, 1), sigma > 0, eps >= 0."""
    if not 0 < p < 1 or sigma <= 0 or eps < 0:
        raise ValueError(f"need 0 < p < 1, sigma > 0 and eps >= 0, got {p}, {sigma}, {eps}")
    z = _NORMAL.inv_cdf(p)
    return _NORMAL.cdf(z - eps / sigma), _NORMAL.cdf(z + eps / sigma)


def binom_cdf(n: int, q: float) -> torch.Tensor:
    """(n + 1,) float64: entry k is P(Bin(n, q) <= k), from the log pmf (exact up to
    rounding, any n)."""
    k = torch.arange(n + 1, dtype=torch.float64)
    if q <= 0 or q >= 1:
        return (k >= (0 if q <= 0 else n)).double()
    log_pmf = (
        torch.lgamma(torch.tensor(n + 1.0, dtype=torch.float64))
        - torch.lgamma(k + 1)
        - torch.lgamma(n - k + 1)
        + k * math.log(q)
        + (n - k) * math.log1p(-q)
    )
    return torch.logcumsumexp(log_pmf, 0).exp().clamp(max=1.0)


def lower_rank(n: int, q: float, delta: float) -> int:
    """The largest rank k (1-based) with P(Bin(n, q) <= k - 1) <= delta, so that X_(k) <= xi_q
    with probability >= 1 - delta; 0 where even X_(1) is not (no lower bound)."""
    ok = (binom_cdf(n, q)[:n] <= delta).nonzero()
    return int(ok[-1]) + 1 if ok.numel() else 0


def upper_rank(n: int, q: float, delta: float) -> int:
    """The smallest rank u (1-based) with P(Bin(n, q) <= u - 1) >= 1 - delta, so that
    X_(u) >= xi_q with probability >= 1 - delta; n + 1 where even X_(n) is not (no bound)."""
    ok = (binom_cdf(n, q)[:n] >= 1 - delta).nonzero()
    return int(ok[0]) + 1 if ok.numel() else n + 1


def percentile_bounds(
    samples: torch.Tensor,
    p: float,
    eps: float,
    sigma: float,
    delta: float,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Certified (lo, hi), each (...), for the p-percentile smoothed output at every y + e with
    ||e|| <= eps; samples: (n, ...) values of f(y + delta) at y. Each side holds except with
    probability delta per value; a missing rank falls back to the end of `value_range` (the
    outputs' range: [0, 1] for clamped pixels)."""
    n = samples.shape[0]
    q_lo, q_hi = shifted_levels(p, eps, sigma)
    k, u = lower_rank(n, q_lo, delta), upper_rank(n, q_hi, delta)
    ordered = samples.sort(dim=0).values
    lo = ordered[k - 1] if k >= 1 else torch.full_like(ordered[0], value_range[0])
    hi = ordered[u - 1] if u <= n else torch.full_like(ordered[0], value_range[1])
    return lo, hi
