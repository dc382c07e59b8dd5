"""Percentile (median) smoothing's certificate, per output value (`certify --method median`).

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

Streaming (`StreamingRanks`): n of 10^4 to 10^5 samples per crop do not fit in memory as
images, so the order statistics come from per-value histograms: a window per value from the
first samples (the pilot), `bins` equal bins inside it, and counts below and above it. A rank's
value is then known to lie in its bin, [edge_j, edge_j+1]; the lower certified value takes the
lower edge and the upper one the upper edge, so the certificate stays valid (only looser by one
bin width, window / bins). A rank outside the window falls back to the smallest or largest
sample seen (still valid, looser).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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


def rank_of(n: int, p: float) -> int:
    """The rank (1-based) of the empirical p-percentile of n samples: ceil(n p), at least 1."""
    return max(1, math.ceil(n * p - 1e-9))


@dataclass
class StreamingRanks:
    """Bounds on chosen order statistics of n samples per value, from bounded memory.

    Values of B images with D values each arrive in chunks (`add`), after each image's window
    (low, width per value) is set from its first samples (`set_window`). Memory: B D (bins + 2)
    int32 counts.
    """

    low: torch.Tensor  # (B, D) float64: the window's lower edge
    width: torch.Tensor  # (B, D) float64: the window's width (> 0)
    counts: torch.Tensor  # (B, D, bins + 2) int32: below, bins..., above
    vmin: torch.Tensor  # (B, D) float64: the smallest value seen
    vmax: torch.Tensor  # (B, D)

    @staticmethod
    def empty(
        b: int, d: int, bins: int = 512, device: torch.device | None = None
    ) -> StreamingRanks:
        """Histograms of B images x D values with no window yet (`set_window` per image)."""
        nan = torch.full((b, d), math.nan, dtype=torch.float64, device=device)
        counts = torch.zeros((b, d, bins + 2), dtype=torch.int32, device=device)
        inf = torch.full_like(nan, math.inf)
        return StreamingRanks(nan, nan.clone(), counts, inf, -inf)

    def has_window(self, i: int) -> bool:
        return not bool(self.low[i, 0].isnan())

    def set_window(self, i: int, pilot: torch.Tensor, margin: float = 0.1) -> None:
        """Image i's window per value: its pilot samples' range (m, D), widened by `margin`
        of its width on each side (and by 1e-6). Counts nothing: add the pilot too."""
        p64 = pilot.double()
        lo, hi = p64.amin(0), p64.amax(0)
        pad = (hi - lo) * margin + 1e-6
        self.low[i], self.width[i] = lo - pad, hi - lo + 2 * pad

    @property
    def bins(self) -> int:
        return self.counts.shape[-1] - 2

    def add(self, values: torch.Tensor, images: torch.Tensor) -> None:
        """Counts values (N, D) of images (N,) (indices into B) into their bins."""
        v = values.double()
        lo, width = self.low.index_select(0, images), self.width.index_select(0, images)
        j = ((v - lo) / width * self.bins).floor().clamp(-1, self.bins) + 1  # 0 below, bins+1 above
        d = v.shape[1]
        flat = (images[:, None] * d + torch.arange(d, device=v.device)) * (self.bins + 2)
        ones = torch.ones(j.numel(), dtype=torch.int32, device=v.device)
        self.counts.view(-1).index_add_(0, (flat + j.long()).flatten(), ones)
        idx = images[:, None].expand_as(v)
        self.vmin = self.vmin.scatter_reduce(0, idx, v, "amin")
        self.vmax = self.vmax.scatter_reduce(0, idx, v, "amax")

    def bracket(self, rank: int, per_image: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(lo, hi), each (B, D) float64: X_(rank) of each value's `per_image` samples lies in
        [lo, hi] (rank 1-based, 1 <= rank <= per_image)."""
        if not 1 <= rank <= per_image:
            raise ValueError(f"rank {rank} is not in [1, {per_image}]")
        # the bin holding the rank-th value: one image at a time (bounded memory)
        j = torch.stack([(c.cumsum(-1) < rank).sum(-1) for c in self.counts])
        step = self.width / self.bins
        lo = torch.where(j == 0, self.vmin, self.low + (j - 1) * step)
        hi = torch.where(j == self.bins + 1, self.vmax, self.low + j * step)
        # a hair outward: a value's bin comes from rounded arithmetic
        lo, hi = lo - 1e-12, hi + 1e-12
        return lo.clamp(self.vmin, self.vmax), hi.clamp(self.vmin, self.vmax)


def streamed_bounds(
    ranks: StreamingRanks,
    per_image: int,
    levels: tuple[float, float],
    delta: float,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """`percentile_bounds` from a histogram: certified (lo, hi), each (B, D) float64, for the
    percentiles at levels (q-, q+) (`shifted_levels`), at failure probability delta per value
    and side; the lower takes its rank's lower bracket and the upper its upper bracket."""
    k = lower_rank(per_image, levels[0], delta)
    u = upper_rank(per_image, levels[1], delta)
    shape = ranks.low.shape
    lo = ranks.bracket(k, per_image)[0] if k >= 1 else torch.full(shape, value_range[0])
    hi = ranks.bracket(u, per_image)[1] if u <= per_image else torch.full(shape, value_range[1])
    return lo.to(ranks.low.device, torch.float64), hi.to(ranks.low.device, torch.float64)
