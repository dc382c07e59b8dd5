"""The certificates' math (pure functions): a PSNR no perturbation ||e|| <= eps goes below.

Two estimators share the noise delta ~ N(0, sigma^2 I), drawn in the model-input (normalized)
space; everything else here lives in pixel space [0, 1]:
  g(y) = E f(y + delta)                 the project's smoothed mean, unclamped (smoothing.py);
  G(y) = E p(y + delta), p(z) = clamp(denormalize(f(z)), 0, 1)   the bounded one, certified here.

Pixel method (per output pixel i, all pixels of one image jointly with probability >= 1 - alpha):
  1. a Monte-Carlo confidence interval [lo_i, hi_i] for G_i(y) from n samples in [0, 1]
     (Hoeffding and/or empirical Bernstein, Maurer & Pontil 2009, Thm 4, union bound);
  2. Salman et al. 2019, Lemma 2: for h: R^d -> [0, 1], y -> sigma * Phi^-1(E h(y + delta)) is
     1-Lipschitz, so for every ||e|| <= eps
         Phi(Phi^-1(lo_i) - eps / sigma) <= G_i(y + e) <= Phi(Phi^-1(hi_i) + eps / sigma);
  3. the farther endpoint of each certified interval from x_i bounds MSE(G(y + e), x) above and
     so PSNR below (data range 1). SSIM has no such bound.

Center method (Kumar & Goldstein, NeurIPS 2021, "center smoothing"; their repository
aounon/center-smoothing): the smoothed output z(y) is a sample p(y + delta_j) at the center of
a small ball holding half of the samples; Algorithm 1 selects it (or abstains), Algorithm 2
certifies d(z(y), z(y + e)) <= (1 + beta) R. The triangle inequality
||z(y + e) - x|| <= ||z(y) - x|| + (1 + beta) R turns R into a PSNR bound.

The driver that draws the samples and builds the certificates is `certification.certify`;
percentile smoothing and the loss certificate have their own modules (`percentile`, `loss`).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Literal

import torch

from smoothrecon import metrics

Bound = Literal["hoeffding", "bernstein", "both"]

# Center smoothing's approximation factor: the sample point with the smallest half-ball radius
# has a radius at most 2x that of the best center (Kumar & Goldstein, section 4); their
# certificate is (1 + beta) R, the "3 *" of center_smoothing.py.
CENTER_BETA = 2.0


# ---------------------------------------------------------------- Monte-Carlo intervals


def hoeffding_halfwidth(n: int, delta: float) -> float:
    """Two-sided Hoeffding half-width for the mean of n i.i.d. samples in [0, 1].

    P(|mean_n - mu| >= t) <= 2 exp(-2 n t^2), so t = sqrt(ln(2 / delta) / (2 n)) holds with
    probability >= 1 - delta.
    """
    return math.sqrt(math.log(2.0 / delta) / (2.0 * n))


def bernstein_halfwidth(var: torch.Tensor, n: int, delta: float) -> torch.Tensor:
    """Two-sided empirical Bernstein half-width (Maurer & Pontil 2009, Theorem 4).

    One side, probability >= 1 - delta': mu >= mean - sqrt(2 V_n ln(2/delta') / n)
    - 7 ln(2/delta') / (3 (n - 1)), V_n the sample variance (denominator n - 1); the upper side
    is the same bound on 1 - X. Two-sided with delta' = delta / 2 per side:
        w = sqrt(2 V_n ln(4 / delta) / n) + 7 ln(4 / delta) / (3 (n - 1)).
    var: any shape, V_n per entry. Returns w, same shape.
    """
    log_term = math.log(4.0 / delta)
    return (2.0 * var.clamp_min(0) * log_term / n).sqrt() + 7.0 * log_term / (3.0 * (n - 1))


def mean_interval(
    mean: torch.Tensor, var: torch.Tensor, n: int, alpha: float, bound: Bound = "both"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel confidence intervals [lo, hi] for E p, all pixels of an image jointly.

    mean, var: (B, ...) sample mean and sample variance (n - 1) of n samples in [0, 1].
    Union bound over the d = prod(shape[1:]) pixels of one image: each pixel's interval fails
    with probability <= alpha / d. With bound = "both" the Hoeffding and the Bernstein interval
    each get alpha / (2 d) and the result is their intersection (per pixel and per side the
    tighter one), so all of an image's intervals hold together with probability >= 1 - alpha.
    Returns (lo, hi), shapes of mean, clipped to [0, 1].
    """
    d = math.prod(mean.shape[1:])
    per_pixel = alpha / d / (2 if bound == "both" else 1)
    widths = []
    if bound in ("hoeffding", "both"):
        widths.append(torch.full_like(mean, hoeffding_halfwidth(n, per_pixel)))
    if bound in ("bernstein", "both"):
        widths.append(bernstein_halfwidth(var, n, per_pixel))
    if not widths:
        raise ValueError(f"bound must be 'hoeffding', 'bernstein' or 'both', got '{bound}'")
    w = torch.stack(widths).amin(0)
    return (mean - w).clamp(0, 1), (mean + w).clamp(0, 1)


# ---------------------------------------------------------------- certified quality


def lipschitz_interval(
    lo: torch.Tensor, hi: torch.Tensor, eps: float, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on G_i(y + e) for every ||e||_2 <= eps from G_i(y) in [lo_i, hi_i].

    Salman et al. 2019, Lemma 2 (Phi^-1 of a Gaussian-smoothed [0, 1] function is
    1/sigma-Lipschitz):  Phi(Phi^-1(lo) - eps/sigma) <= G_i(y + e) <= Phi(Phi^-1(hi) + eps/sigma).
    eps: l2 radius in the model-input (normalized) space, sigma: the noise std there.
    lo, hi: any shape, in [0, 1]. lo = 0 or hi = 1 give 0 and 1 (Phi^-1 = -inf / +inf, no NaN).
    The upper side is computed as 1 - Phi(Phi^-1(1 - hi) - eps/sigma) (accurate near 1); the
    min/max with the input only removes rounding (the bound never tightens the interval), and
    eps = 0 returns [lo, hi] itself.
    """
    lo64, hi64 = lo.double(), hi.double()
    if eps == 0:
        return lo64, hi64
    c = eps / sigma
    lo_e = torch.special.ndtr(torch.special.ndtri(lo64) - c)
    hi_e = 1.0 - torch.special.ndtr(torch.special.ndtri(1.0 - hi64) - c)
    return torch.minimum(lo_e, lo64), torch.maximum(hi_e, hi64)


def worst_case_mse(lo: torch.Tensor, hi: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Largest MSE against x of any image inside the per-pixel intervals [lo, hi].

    (v - x_i)^2 is convex in v, so its maximum over [lo_i, hi_i] is at the endpoint farther
    from x_i:  max_MSE = mean_i max((x_i - lo_i)^2, (hi_i - x_i)^2).
    lo, hi, x: (B, C, H, W) pixel space. Returns (B,) float64.
    """
    x64 = x.double()
    worst = torch.maximum((x64 - lo.double()) ** 2, (hi.double() - x64) ** 2)
    return worst.flatten(1).mean(1)


def trivial_mse(x: torch.Tensor) -> torch.Tensor:
    """Largest MSE of any [0, 1] image against x: mean_i max(x_i, 1 - x_i)^2 -> (B,) float64."""
    x64 = x.double()
    return torch.maximum(x64, 1.0 - x64).pow(2).flatten(1).mean(1)


def identity_worst_mse(
    r: torch.Tensor, std: tuple[float, ...] | list[float], eps: float, iters: int = 200
) -> torch.Tensor:
    """The exact worst-case MSE of the reconstruction x_hat = denormalize(y + e) (the
    back-projection itself, bilinear for super-resolution) over ||e||_2 <= eps, unclamped.

    r: (B, C, H, W) its clean error denormalize(y) - x in pixels; std: the per-channel std of
    the normalization (e lives in the normalized space, so the pixel error is r + S e with
    S = diag(std)). max ||r + S e||^2 is a trust-region problem; with M = S^2 the maximizer is
    e = (lam I - M)^-1 S r, lam > max(std)^2 the root of the secular equation
    sum_c std_c^2 ||r_c||^2 / (lam - std_c^2)^2 = eps^2 (bisection), and then
    ||r + S e||^2 = sum_c ||r_c||^2 lam^2 / (lam - std_c^2)^2. Clamping to [0, 1] only lowers
    the error, so for the clamped baseline this is an upper bound on its worst-case MSE.
    Returns (B,) in float64.
    """
    d = r[0].numel()
    rc = r.double().pow(2).flatten(2).sum(2)  # (B, C): ||r_c||^2
    mu = torch.tensor(std, dtype=torch.float64, device=r.device).pow(2).expand_as(rc)
    if eps == 0:
        return rc.sum(1) / d
    beta = mu * rc
    lo = mu.max(1).values.clone()
    hi = lo + beta.sum(1).sqrt() / eps + 1e-12
    lo = lo + 1e-15
    for _ in range(iters):
        lam = (lo + hi) / 2
        g = (beta / (lam[:, None] - mu).pow(2)).sum(1) - eps**2
        lo, hi = torch.where(g > 0, lam, lo), torch.where(g > 0, hi, lam)
    lam = (lo + hi) / 2
    return (rc * lam[:, None].pow(2) / (lam[:, None] - mu).pow(2)).sum(1) / d


def psnr_from_mse(mse: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """`metrics.psnr_from_mse` in float64 (certified MSEs can be tiny)."""
    return metrics.psnr_from_mse(mse.double(), data_range)


# ---------------------------------------------------------------- center smoothing


def select_center(samples: torch.Tensor, n_candidates: int = 0) -> tuple[int, float]:
    """Kumar & Goldstein, Algorithm 1, lines 1-2: a 2-approximate center of half the samples.

    samples: (m, D) flattened outputs in pixel space. Each candidate's radius is the
    ceil(m/2)-th smallest distance to the m samples (itself included): the smallest ball around
    it holding at least half of them. Returns (index of the candidate with the smallest radius,
    that radius). Candidates: all samples (n_candidates = 0, the paper), or the first
    n_candidates (center_smoothing.py's `compute_center_hd`, n_cntr = 30, for large m).
    """
    m = samples.shape[0]
    s = samples.double()
    cand = s if n_candidates <= 0 else s[: min(n_candidates, m)]
    dist = torch.cdist(cand, s)
    radius = dist.kthvalue(math.ceil(m / 2), dim=1).values
    j = int(radius.argmin())
    return j, float(radius[j])


def center_abstains(
    frac: torch.Tensor, n_select: int, n: int, alpha_1: float, delta: float
) -> torch.Tensor:
    """Kumar & Goldstein, Algorithm 1, lines 3-6: abstain unless max(Delta_1, Delta_2) <= Delta.

    frac: (B,) share of the n test samples within the center's radius.
    Delta_1 = sqrt(ln(2 / alpha_1) / (2 m)) with m = min(n_select, n) (the paper draws the two
    sets with one size; the smaller size covers both of its Hoeffding steps), p = frac - Delta_1,
    Delta_2 = 1/2 - p. Returns (B,) bool, True where the smoothed output abstains.
    """
    delta_1 = math.sqrt(math.log(2.0 / alpha_1) / (2.0 * min(n_select, n)))
    delta_2 = 0.5 - (frac - delta_1)
    return torch.clamp(delta_2, min=delta_1) > delta


def center_min_samples(alpha_1: float, delta: float) -> int:
    """Fewest samples per set with Delta_1 <= Delta, ceil(ln(2 / alpha_1) / (2 Delta^2)): with
    fewer, `center_abstains` is True whatever the samples are."""
    return math.ceil(math.log(2.0 / alpha_1) / (2.0 * delta**2) - 1e-9)


def center_quantile(eps: float, sigma: float, n: int, alpha_2: float, delta: float) -> float:
    """Kumar & Goldstein, Algorithm 2: the level of the distance quantile that certifies eps.

    q = Phi(Phi^-1(1/2 + Delta) + eps / sigma) + sqrt(ln(1 / alpha_2) / (2 n)); a ball around the
    center holding a share q of n samples holds probability >= p = q - sqrt(...) of the output
    distribution with probability >= 1 - alpha_2, and so >= 1/2 + Delta at every y + e.
    """
    phi = NormalDist()
    p = phi.cdf(phi.inv_cdf(0.5 + delta) + eps / sigma)
    return p + math.sqrt(math.log(1.0 / alpha_2) / (2.0 * n))


def center_radius(dists: torch.Tensor, q: float, beta: float = CENTER_BETA) -> torch.Tensor:
    """(1 + beta) R, R the empirical q-quantile of the distances to the center (Algorithm 2).

    dists: (B, n) distances of the certification samples to each image's center, pixel space.
    R is the smallest sampled distance whose empirical CDF k / n reaches q; q > 1 certifies
    nothing (radius +inf). Returns (B,) float64: d(z(y), z(y + e)) <= this for ||e|| <= eps.
    """
    n = dists.shape[1]
    k = math.ceil(q * n - 1e-9)
    if k > n:
        return torch.full(dists.shape[:1], math.inf, dtype=torch.float64, device=dists.device)
    r = dists.double().sort(dim=1).values[:, max(k, 1) - 1]
    return (1.0 + beta) * r


def center_mse_bound(
    center_err: torch.Tensor, radius: torch.Tensor, d: int, trivial: torch.Tensor
) -> torch.Tensor:
    """MSE(z(y + e), x) <= (||z(y) - x|| + radius)^2 / d, capped by the trivial bound.

    center_err: (B,) ||z(y) - x||_2, radius: (B, E) certified output radii, d: pixels per image,
    trivial: (B,) `trivial_mse(x)` (z is a [0, 1] image, so it holds too). Returns (B, E).
    """
    bound = (center_err.double()[:, None] + radius.double()) ** 2 / d
    return torch.minimum(bound, trivial.double()[:, None])
