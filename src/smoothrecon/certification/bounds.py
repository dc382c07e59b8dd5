"""Certified quality of smoothed reconstructions: a PSNR no perturbation ||e|| <= eps goes below.

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

Sample sets: the pixel method uses n samples; the center method draws n_select samples to
select the center, then uses the same n samples (independent of the center) for its abstention
test and its certificate. Noise is drawn in flattened chunks as in `smoothing.predict_many`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from statistics import NormalDist
from typing import Any, Literal

import torch
from tqdm import tqdm

from smoothrecon import metrics
from smoothrecon.defenses.smoothing import noise_rows
from smoothrecon.models.normalization import Normalization
from smoothrecon.util.progress import bar as progress_bar
from smoothrecon.util.runtime import auto_chunk

Forward = Callable[[torch.Tensor], torch.Tensor]
Method = Literal["pixel", "center", "both"]
Bound = Literal["hoeffding", "bernstein", "both"]
# One certificate row (one method, crop and eps_rel): the certificates' record type
CertificateRecord = dict[str, Any]

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


# ---------------------------------------------------------------- settings and results


@dataclass(frozen=True)
class CertifySettings:
    """What `certify` computes; one object built once by the caller.

    sigma: sigma_g, the noise std in the model-input (normalized) space.
    eps: l2 radii in the same space (`attacks.eps_from_rel` converts eps_rel).
    n: samples for the pixel intervals and for center smoothing's test and certificate.
    alpha: per image and method, the probability (over the sampling) that the certificate
        fails; center smoothing splits it into alpha_1 = alpha_2 = alpha / 2.
    method: "pixel", "center" or "both"; bound: "hoeffding", "bernstein" or "both" (the pixel
        intervals, `mean_interval`).
    n_select: center smoothing's samples that select the center (a second, separate set).
    n_candidates: center candidates among them, 0 = all (`select_center`).
    delta: center smoothing's Delta (0.05 in Kumar & Goldstein's experiments).
    chunk_size: noisy inputs per forward pass, 0 = `smoothing.auto_chunk`.
    progress: show a tqdm bar over the samples.
    """

    sigma: float
    eps: tuple[float, ...]
    n: int = 2000
    alpha: float = 0.001
    method: Method = "both"
    bound: Bound = "both"
    n_select: int = 2000
    n_candidates: int = 0
    delta: float = 0.05
    chunk_size: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", tuple(float(e) for e in self.eps))
        checks = [
            (self.sigma > 0 and math.isfinite(self.sigma), "sigma", "a finite number > 0"),
            (all(e >= 0 and math.isfinite(e) for e in self.eps), "eps", "finite radii >= 0"),
            (int(self.n) == self.n and self.n >= 2, "n", "an integer >= 2"),
            (0 < self.alpha < 1, "alpha", "a number in (0, 1)"),
            (self.method in ("pixel", "center", "both"), "method", "pixel, center or both"),
            (
                self.bound in ("hoeffding", "bernstein", "both"),
                "bound",
                "hoeffding, bernstein or both",
            ),
            (
                int(self.n_select) == self.n_select and self.n_select >= 2,
                "n_select",
                "an integer >= 2",
            ),
            (self.n_candidates >= 0, "n_candidates", "an integer >= 0 (0: all samples)"),
            (0 < self.delta < 0.5, "delta", "a number in (0, 0.5)"),
            (self.chunk_size >= 0, "chunk_size", "an integer >= 0 (0: automatic)"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")
        need = center_min_samples(self.alpha / 2, self.delta)
        if self.method != "pixel" and min(self.n, self.n_select) < need:
            raise ValueError(
                f"center smoothing at alpha={self.alpha} and delta={self.delta} abstains always "
                f"below {need} samples per set, got n={self.n} and n_select={self.n_select}"
            )


@dataclass
class PixelCertificate:
    """The pixel method for B images and E radii, pixel space.

    mean: (B, C, H, W) G_hat(y); lo, hi: its joint Monte-Carlo interval (eps = 0);
    mse_upper, psnr_lower: (B, E) bounds for every ||e|| <= eps; psnr_mc: (B,) PSNR of G_hat(y).
    """

    mean: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    mse_upper: torch.Tensor
    psnr_lower: torch.Tensor
    psnr_mc: torch.Tensor


@dataclass
class CenterCertificate:
    """Center smoothing for B images and E radii, pixel space.

    center: (B, C, H, W) z(y); psnr_center: (B,) its PSNR; abstained: (B,) bool;
    radius: (B, E) certified l2 radius around z(y) (+inf: eps too large for n; computed even
        where abstained, where it certifies nothing);
    mse_upper, psnr_lower: (B, E) bounds on z(y + e) for ||e|| <= eps, NaN where abstained.
    """

    center: torch.Tensor
    psnr_center: torch.Tensor
    abstained: torch.Tensor
    radius: torch.Tensor
    mse_upper: torch.Tensor
    psnr_lower: torch.Tensor


@dataclass
class Certificate:
    """`certify`'s result: the radii and one certificate per method asked for."""

    eps: tuple[float, ...]
    pixel: PixelCertificate | None
    center: CenterCertificate | None

    def records(self) -> list[CertificateRecord]:
        """One row per (method, image, eps): mse_certified, psnr_certified, psnr_clean (of
        G_hat(y) or z(y)), radius_out (center only, else NaN), abstained."""
        rows: list[CertificateRecord] = []
        if self.pixel is not None:
            p = self.pixel
            rows += _records("pixel", self.eps, p.mse_upper, p.psnr_lower, p.psnr_mc, None, None)
        if self.center is not None:
            c = self.center
            rows += _records(
                "center", self.eps, c.mse_upper, c.psnr_lower, c.psnr_center, c.radius, c.abstained
            )
        return rows


def _records(
    method: str,
    eps: tuple[float, ...],
    mse_upper: torch.Tensor,
    psnr_lower: torch.Tensor,
    psnr_clean: torch.Tensor,
    radius: torch.Tensor | None,
    abstained: torch.Tensor | None,
) -> list[CertificateRecord]:
    return [
        {
            "method": method,
            "image": i,
            "eps": e,
            "mse_certified": float(mse_upper[i, j]),
            "psnr_certified": float(psnr_lower[i, j]),
            "psnr_clean": float(psnr_clean[i]),
            "radius_out": math.nan if radius is None else float(radius[i, j]),
            "abstained": False if abstained is None else bool(abstained[i]),
        }
        for i in range(psnr_clean.shape[0])
        for j, e in enumerate(eps)
    ]


# ---------------------------------------------------------------- the driver


def _samples(
    forward: Forward,
    y: torch.Tensor,
    norm: Normalization,
    sigma: float,
    n: int,
    generator: torch.Generator | None,
    chunk: int,
    bar: tqdm,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(image index (N,), p (N, C, H, W)) chunks of n samples per image, image-major order:
    p = clamp(denormalize(f(y_i + sigma z)), 0, 1) in pixel space, z ~ N(0, I)."""
    b, shape = y.shape[0], tuple(y.shape[1:])
    total = b * n
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        images = torch.arange(start, stop, device=y.device) // n
        z = noise_rows(stop - start, shape, y, generator)
        out = forward(y.index_select(0, images) + sigma * z)
        bar.update(stop - start)
        yield images, norm.denormalize(out.float()).clamp(0, 1)


def _select_centers(
    stream: Iterator[tuple[torch.Tensor, torch.Tensor]], b: int, m: int, n_candidates: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centers (B, C, H, W) and radii (B,) from the selection set of m samples per image."""
    parts = [p for _, p in stream]
    store = torch.cat(parts).view(b, m, *parts[0].shape[1:])
    chosen = [select_center(store[i].flatten(1), n_candidates) for i in range(b)]
    centers = torch.stack([store[i, j] for i, (j, _) in enumerate(chosen)])
    radii = torch.tensor([r for _, r in chosen], dtype=torch.float64, device=store.device)
    return centers, radii


def _accumulate(
    stream: Iterator[tuple[torch.Tensor, torch.Tensor]],
    x: torch.Tensor,
    n: int,
    centers: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """float64 per-pixel sums of p and p^2 (B, C, H, W) and, given centers, the distances
    (B, n) of every sample to its image's center."""
    s1 = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    s2 = torch.zeros_like(s1)
    dists = None if centers is None else torch.zeros((x.shape[0], n), dtype=torch.float64)
    pos = 0
    for images, p in stream:
        if p.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"the model's outputs have shape {tuple(p.shape[1:])} per image but x has "
                f"{tuple(x.shape[1:])}"
            )
        p64 = p.double()
        s1.index_add_(0, images, p64)
        s2.index_add_(0, images, p64 * p64)
        if centers is not None and dists is not None:
            d = (p64 - centers.double().index_select(0, images)).flatten(1).norm(dim=1)
            dists.view(-1)[pos : pos + d.shape[0]] = d.to(dists.device)
        pos += p.shape[0]
    return s1, s2, dists


def _pixel_certificate(
    s1: torch.Tensor, s2: torch.Tensor, x: torch.Tensor, s: CertifySettings
) -> PixelCertificate:
    mean = s1 / s.n
    var = ((s2 - s1 * s1 / s.n) / (s.n - 1)).clamp_min(0)
    lo, hi = mean_interval(mean, var, s.n, s.alpha, s.bound)
    mse = []
    for eps in s.eps:
        lo_e, hi_e = lipschitz_interval(lo, hi, eps, s.sigma)
        mse.append(worst_case_mse(lo_e, hi_e, x))
    mse_upper = torch.stack(mse, dim=1)
    psnr_mc = psnr_from_mse((mean - x.double()).pow(2).flatten(1).mean(1))
    return PixelCertificate(mean, lo, hi, mse_upper, psnr_from_mse(mse_upper), psnr_mc)


def _center_certificate(
    centers: torch.Tensor,
    radii: torch.Tensor,
    dists: torch.Tensor,
    x: torch.Tensor,
    s: CertifySettings,
) -> CenterCertificate:
    alpha_1 = alpha_2 = s.alpha / 2
    frac = (dists <= radii.to(dists.device)[:, None]).double().mean(1)
    abstained = center_abstains(frac, s.n_select, s.n, alpha_1, s.delta)
    radius = torch.stack(
        [center_radius(dists, center_quantile(e, s.sigma, s.n, alpha_2, s.delta)) for e in s.eps],
        dim=1,
    )
    err = (centers.double() - x.double()).flatten(1).norm(dim=1).to(dists.device)
    d = math.prod(x.shape[1:])
    mse_upper = center_mse_bound(err, radius, d, trivial_mse(x).to(dists.device))
    mse_upper[abstained] = math.nan
    psnr_center = psnr_from_mse(err**2 / d)
    return CenterCertificate(
        centers, psnr_center, abstained, radius, mse_upper, psnr_from_mse(mse_upper)
    )


def certify(
    forward: Forward,
    y: torch.Tensor,
    x: torch.Tensor,
    norm: Normalization,
    settings: CertifySettings,
    generator: torch.Generator | None = None,
) -> Certificate:
    """Certified quality of the smoothed reconstructions of B images.

    forward: f on normalized inputs (in eval mode); y: (B, C, H, W) model inputs, normalized
    space; x: (B, C', H', W') ground truth, pixel space [0, 1]; norm: f's normalization.
    Pixel method: with probability >= 1 - alpha over the n samples, for every eps in settings
    and every ||e||_2 <= eps, MSE(G(y + e), x) <= mse_upper (so PSNR >= psnr_lower).
    Center method: if it did not abstain at y, the center-smoothed output at any y + e that
    does not abstain is within `radius` of z(y), except with probability <= alpha_2 = alpha / 2
    over the samples here and alpha_1 = alpha / 2 over the run at y + e. Costs B (n + n_select)
    forwards
    (n_select only for the center method) and B n_select x D floats of memory for it.
    """
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y and x hold different numbers of images: {y.shape[0]} and {x.shape[0]}")
    s = settings
    chunk = s.chunk_size or auto_chunk(tuple(y.shape[1:]), y.device)
    use_center = s.method in ("center", "both")
    total = y.shape[0] * (s.n + (s.n_select if use_center else 0))
    bar = progress_bar(total=total, desc="certify", unit="sample", disable=not s.progress)
    draw = partial(_samples, forward, y, norm, s.sigma, generator=generator, chunk=chunk, bar=bar)
    with torch.no_grad(), bar:
        centers = radii = None
        if use_center:
            centers, radii = _select_centers(
                draw(s.n_select), y.shape[0], s.n_select, s.n_candidates
            )
        s1, s2, dists = _accumulate(draw(s.n), x, s.n, centers)
    pixel = _pixel_certificate(s1, s2, x, s) if s.method in ("pixel", "both") else None
    center = None
    if centers is not None and radii is not None and dists is not None:
        center = _center_certificate(centers, radii, dists, x, s)
    return Certificate(s.eps, pixel, center)
