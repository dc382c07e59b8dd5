"""The certify driver: draws the noisy samples of B images once and builds every certificate
asked for (`certify`).

Methods (`METHODS`; the math in `bounds`, `percentile` and `loss`):
  pixel   per-pixel intervals on the mean-smoothed G, Lipschitz lemma, union bound (bounds.py);
  center  center smoothing's output z (Kumar & Goldstein 2021; bounds.py);
  median  percentile smoothing: per pixel the p-percentile of p(y + delta), certified between
          two other percentiles at y from order statistics (Chiang et al. 2020; percentile.py);
  loss    the per-image MSE of the noisy outputs smoothed as one [0, 1] scalar, a bound on the
          MSE of G by Jensen (loss.py).
"both" is pixel and center, "all" every method.

Sample sets: pixel, median and loss share one stream of n samples per image; the center method
draws n_select more to select its center, then tests and certifies it on the same n samples.
Noise is drawn in flattened chunks as in `smoothing.predict_many`, and every statistic is
streamed (sums, distances, per-value histograms), so memory does not grow with n except for
the center method's B n_select x D selection set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from tqdm import tqdm

from smoothrecon.certification.bounds import (
    Bound,
    center_abstains,
    center_min_samples,
    center_mse_bound,
    center_quantile,
    center_radius,
    lipschitz_interval,
    mean_interval,
    psnr_from_mse,
    select_center,
    trivial_mse,
    worst_case_mse,
)
from smoothrecon.certification.loss import kl_upper, loss_mse_bound, per_sample_loss
from smoothrecon.certification.percentile import (
    StreamingRanks,
    rank_of,
    shifted_levels,
    streamed_bounds,
)
from smoothrecon.defenses.smoothing import noise_rows
from smoothrecon.models.normalization import Normalization
from smoothrecon.util.progress import bar as progress_bar
from smoothrecon.util.runtime import auto_chunk

Forward = Callable[[torch.Tensor], torch.Tensor]
Method = str  # a key of METHODS, or methods joined by + ("pixel+median+loss")
# what each method argument certifies
METHODS: dict[str, tuple[str, ...]] = {
    "pixel": ("pixel",),
    "center": ("center",),
    "median": ("median",),
    "loss": ("loss",),
    "both": ("pixel", "center"),
    "all": ("pixel", "center", "median", "loss"),
}


def methods_of(method: str) -> tuple[str, ...]:
    """The methods a method argument certifies: METHODS[method], or the parts of
    "pixel+median" and the like."""
    return METHODS.get(method) or tuple(str(method).split("+"))


def known_method(method: str) -> bool:
    """Whether `method` names methods certify knows: a key of METHODS or them joined by +."""
    return bool(method) and all(m in METHODS["all"] for m in methods_of(method))


# One certificate row (one method, crop and eps_rel): the certificates' record type
CertificateRecord = dict[str, Any]


@dataclass(frozen=True)
class CertifySettings:
    """What `certify` computes; one object built once by the caller.

    sigma: sigma_g, the noise std in the model-input (normalized) space.
    eps: l2 radii in the same space (`attacks.eps_from_rel` converts eps_rel).
    n: samples of the pixel, median and loss certificates and of center smoothing's test.
    alpha: per image, method and radius, the probability (over the sampling) that the
        certificate fails; center smoothing splits it into alpha_1 = alpha_2 = alpha / 2.
    method: a key of `METHODS`; bound: "hoeffding", "bernstein" or "both" (the pixel
        intervals, `mean_interval`).
    n_select: center smoothing's samples that select the center (a second, separate set).
    n_candidates: center candidates among them, 0 = all (`select_center`).
    delta: center smoothing's Delta (0.05 in Kumar & Goldstein's experiments).
    percentile: the median method's level p (0.5: the median).
    bins, pilot: the median method's histogram: bins per value inside a window set by the
        first `pilot` samples of each image (`percentile.StreamingRanks`).
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
    percentile: float = 0.5
    bins: int = 512
    pilot: int = 256
    chunk_size: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", tuple(float(e) for e in self.eps))
        checks = [
            (self.sigma > 0 and math.isfinite(self.sigma), "sigma", "a finite number > 0"),
            (all(e >= 0 and math.isfinite(e) for e in self.eps), "eps", "finite radii >= 0"),
            (int(self.n) == self.n and self.n >= 2, "n", "an integer >= 2"),
            (0 < self.alpha < 1, "alpha", "a number in (0, 1)"),
            (
                known_method(self.method),
                "method",
                "one of " + ", ".join(METHODS) + " (or methods joined by +)",
            ),
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
            (0 < self.percentile < 1, "percentile", "a number in (0, 1)"),
            (self.bins >= 2 and self.pilot >= 2, "bins", "an integer >= 2 (and pilot >= 2)"),
            (self.chunk_size >= 0, "chunk_size", "an integer >= 0 (0: automatic)"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")
        need = center_min_samples(self.alpha / 2, self.delta)
        if "center" in self.methods and min(self.n, self.n_select) < need:
            raise ValueError(
                f"center smoothing at alpha={self.alpha} and delta={self.delta} abstains always "
                f"below {need} samples per set, got n={self.n} and n_select={self.n_select}"
            )

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods certified: METHODS[method], or the parts of "pixel+median" etc."""
        return methods_of(self.method)


class _Named:
    """What every certificate names: its estimate at the certified point (`estimate`, (B, C,
    H, W) pixel space) and that estimate's PSNR (`psnr_clean`, (B,)), by field name."""

    ESTIMATE: ClassVar[str]
    CLEAN: ClassVar[str]

    @property
    def psnr_clean(self) -> torch.Tensor:
        return getattr(self, self.CLEAN)

    @property
    def estimate(self) -> torch.Tensor:
        return getattr(self, self.ESTIMATE)


@dataclass
class PixelCertificate(_Named):
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

    ESTIMATE, CLEAN = "mean", "psnr_mc"


@dataclass
class CenterCertificate(_Named):
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

    ESTIMATE, CLEAN = "center", "psnr_center"


@dataclass
class MedianCertificate(_Named):
    """Percentile smoothing for B images and E radii, pixel space.

    median: (B, C, H, W) the empirical p-percentile of the samples at y (within one histogram
        bin); lo, hi: a joint Monte-Carlo interval of the exact percentile at y (eps = 0);
    mse_upper, psnr_lower: (B, E) bounds for every ||e|| <= eps; psnr_median: (B,) PSNR of
        the estimate at y.
    """

    median: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    mse_upper: torch.Tensor
    psnr_lower: torch.Tensor
    psnr_median: torch.Tensor

    ESTIMATE, CLEAN = "median", "psnr_median"


@dataclass
class LossCertificate(_Named):
    """The loss certificate for B images and E radii (a bound on the MSE of G).

    mean: (B, C, H, W) G_hat(y); h_mean, h_ucb: (B,) the sample mean of L = MSE / T(x) and its
    KL-Chernoff upper bound; mse_upper, psnr_lower: (B, E); psnr_mc: (B,) PSNR of G_hat(y), as
    the pixel method's.
    """

    mean: torch.Tensor
    h_mean: torch.Tensor
    h_ucb: torch.Tensor
    mse_upper: torch.Tensor
    psnr_lower: torch.Tensor
    psnr_mc: torch.Tensor

    ESTIMATE, CLEAN = "mean", "psnr_mc"


AnyCertificate = PixelCertificate | CenterCertificate | MedianCertificate | LossCertificate


@dataclass
class Certificate:
    """`certify`'s result: the radii and one certificate per method asked for."""

    eps: tuple[float, ...]
    pixel: PixelCertificate | None
    center: CenterCertificate | None
    median: MedianCertificate | None = None
    loss: LossCertificate | None = None

    def by_method(self) -> dict[str, AnyCertificate]:
        """{method: its certificate} for the methods computed, in `METHODS["all"]` order."""
        every: dict[str, AnyCertificate | None] = {"pixel": self.pixel, "center": self.center}
        every |= {"median": self.median, "loss": self.loss}
        return {m: c for m, c in every.items() if c is not None}

    def records(self) -> list[CertificateRecord]:
        """One row per (method, image, eps): mse_certified, psnr_certified, psnr_clean (of
        the method's estimate at y), radius_out (center only, else NaN), abstained."""
        rows: list[CertificateRecord] = []
        for method, c in self.by_method().items():
            radius = c.radius if isinstance(c, CenterCertificate) else None
            abstained = c.abstained if isinstance(c, CenterCertificate) else None
            for i in range(c.psnr_clean.shape[0]):
                for j, e in enumerate(self.eps):
                    rows.append(
                        {
                            "method": method,
                            "image": i,
                            "eps": e,
                            "mse_certified": float(c.mse_upper[i, j]),
                            "psnr_certified": float(c.psnr_lower[i, j]),
                            "psnr_clean": float(c.psnr_clean[i]),
                            "radius_out": math.nan if radius is None else float(radius[i, j]),
                            "abstained": False if abstained is None else bool(abstained[i]),
                        }
                    )
        return rows


# ---------------------------------------------------------------- streamed statistics


@dataclass(frozen=True)
class _Sampler:
    """Draws the samples of f around each of B inputs y (B, C, H, W), `chunk` forwards at a
    time, counting them on `bar`."""

    forward: Forward
    y: torch.Tensor
    norm: Normalization
    sigma: float
    generator: torch.Generator | None
    chunk: int
    bar: tqdm

    def __call__(self, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(image index (N,), p (N, C, H, W)) chunks of n samples per image, image-major
        order: p = clamp(denormalize(f(y_i + sigma z)), 0, 1) in pixel space, z ~ N(0, I)."""
        y = self.y
        total = y.shape[0] * n
        for start in range(0, total, self.chunk):
            stop = min(start + self.chunk, total)
            images = torch.arange(start, stop, device=y.device) // n
            z = noise_rows(stop - start, tuple(y.shape[1:]), y, self.generator)
            out = self.forward(y.index_select(0, images) + self.sigma * z)
            self.bar.update(stop - start)
            yield images, self.norm.denormalize(out.float()).clamp(0, 1)


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


class _Moments:
    """float64 per-pixel sums of p and p^2, (B, C, H, W)."""

    def __init__(self, x: torch.Tensor):
        self.s1 = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
        self.s2 = torch.zeros_like(self.s1)

    def add(self, images: torch.Tensor, p: torch.Tensor) -> None:
        p64 = p.double()
        self.s1.index_add_(0, images, p64)
        self.s2.index_add_(0, images, p64 * p64)


class _Distances:
    """(B, n) distances of every sample to its image's center (stream order = sample order)."""

    def __init__(self, centers: torch.Tensor, n: int):
        self.centers, self.pos = centers.double(), 0
        self.dists = torch.zeros((centers.shape[0], n), dtype=torch.float64)

    def add(self, images: torch.Tensor, p: torch.Tensor) -> None:
        d = (p.double() - self.centers.index_select(0, images)).flatten(1).norm(dim=1)
        self.dists.view(-1)[self.pos : self.pos + d.shape[0]] = d.to(self.dists.device)
        self.pos += d.shape[0]


class _Losses:
    """(B,) float64 sums of L = MSE(p, x) / T(x) (`loss.per_sample_loss`)."""

    def __init__(self, x: torch.Tensor):
        self.x, self.sums = x, torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)

    def add(self, images: torch.Tensor, p: torch.Tensor) -> None:
        self.sums.index_add_(0, images, per_sample_loss(p, self.x.index_select(0, images)))


class _Ranks:
    """Per-value histograms of each image's samples (`StreamingRanks`): an image's first
    `pilot` samples are held until they set its window, then counted with the rest."""

    def __init__(self, x: torch.Tensor, s: CertifySettings):
        b, d = x.shape[0], math.prod(x.shape[1:])
        self.ranks = StreamingRanks.empty(b, d, s.bins, x.device)
        self.pilot = min(s.pilot, s.n)
        self.held: dict[int, list[torch.Tensor]] = {}

    def add(self, images: torch.Tensor, p: torch.Tensor) -> None:
        flat = p.flatten(1)
        for i in images.unique().tolist():
            rows = flat[images == i]
            if not self.ranks.has_window(i):
                self.held.setdefault(i, []).append(rows)
                held = torch.cat(self.held[i])
                if held.shape[0] < self.pilot:
                    continue
                self.ranks.set_window(i, held[: self.pilot])
                rows = held
                del self.held[i]
            self.ranks.add(rows, torch.full((rows.shape[0],), i, device=rows.device))


def _stream_into(
    stream: Iterator[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor, accs
) -> None:
    """Feeds every chunk of the stream to each accumulator, checking the output shape once."""
    for images, p in stream:
        if p.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"the model's outputs have shape {tuple(p.shape[1:])} per image but x has "
                f"{tuple(x.shape[1:])}"
            )
        for acc in accs:
            acc.add(images, p)


# ---------------------------------------------------------------- certificates


def _pixel_certificate(m: _Moments, x: torch.Tensor, s: CertifySettings) -> PixelCertificate:
    mean = m.s1 / s.n
    var = ((m.s2 - m.s1 * m.s1 / s.n) / (s.n - 1)).clamp_min(0)
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


def _median_certificate(
    r: StreamingRanks, x: torch.Tensor, s: CertifySettings
) -> MedianCertificate:
    """Union bound over the d values and two sides of an image: delta = alpha / (2 d) per
    value and side, for each radius."""
    p, n = s.percentile, s.n
    delta = s.alpha / (2 * math.prod(x.shape[1:]))
    lo_c, hi_c = r.bracket(rank_of(n, p), n)
    median = ((lo_c + hi_c) / 2).view(x.shape)
    lo, hi = (v.view(x.shape) for v in streamed_bounds(r, n, (p, p), delta))
    mse = []
    for eps in s.eps:
        lo_e, hi_e = streamed_bounds(r, n, shifted_levels(p, eps, s.sigma), delta)
        mse.append(worst_case_mse(lo_e.view(x.shape), hi_e.view(x.shape), x))
    mse_upper = torch.stack(mse, dim=1)
    psnr_median = psnr_from_mse((median - x.double()).pow(2).flatten(1).mean(1))
    return MedianCertificate(median, lo, hi, mse_upper, psnr_from_mse(mse_upper), psnr_median)


def _loss_certificate(
    losses: _Losses, m: _Moments, x: torch.Tensor, s: CertifySettings
) -> LossCertificate:
    h_mean = losses.sums / s.n
    h_ucb = kl_upper(h_mean, s.n, s.alpha)
    scale = trivial_mse(x)
    mse_upper = torch.stack([loss_mse_bound(h_ucb, scale, e, s.sigma) for e in s.eps], dim=1)
    mean = m.s1 / s.n
    psnr_mc = psnr_from_mse((mean - x.double()).pow(2).flatten(1).mean(1))
    return LossCertificate(mean, h_mean, h_ucb, mse_upper, psnr_from_mse(mse_upper), psnr_mc)


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
    Pixel, median and loss methods: with probability >= 1 - alpha over the n samples, for each
    eps in settings and every ||e||_2 <= eps, the MSE of the method's estimate at y + e
    (G for pixel and loss, the p-percentile for median) is at most mse_upper (so PSNR >=
    psnr_lower). Center method: if it did not abstain at y, the center-smoothed output at any
    y + e that does not abstain is within `radius` of z(y), except with probability <=
    alpha_2 = alpha / 2 over the samples here and alpha_1 = alpha / 2 over the run at y + e.
    Costs B (n + n_select) forwards (n_select only for the center method) and B n_select x D
    floats of memory for it.
    """
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y and x hold different numbers of images: {y.shape[0]} and {x.shape[0]}")
    s, methods = settings, settings.methods
    chunk = s.chunk_size or auto_chunk(tuple(y.shape[1:]), y.device)
    total = y.shape[0] * (s.n + (s.n_select if "center" in methods else 0))
    bar = progress_bar(total=total, desc="certify", unit="sample", disable=not s.progress)
    draw = _Sampler(forward, y, norm, s.sigma, generator, chunk, bar)
    moments = _Moments(x) if {"pixel", "loss"} & set(methods) else None
    losses = _Losses(x) if "loss" in methods else None
    ranks = _Ranks(x, s) if "median" in methods else None
    with torch.no_grad(), bar:
        distances = None
        if "center" in methods:
            centers, radii = _select_centers(
                draw(s.n_select), y.shape[0], s.n_select, s.n_candidates
            )
            distances = _Distances(centers, s.n)
        accs = [a for a in (moments, losses, ranks, distances) if a is not None]
        _stream_into(draw(s.n), x, accs)
    cert = Certificate(s.eps, None, None)
    if moments is not None and "pixel" in methods:
        cert.pixel = _pixel_certificate(moments, x, s)
    if distances is not None:
        cert.center = _center_certificate(distances.centers, radii, distances.dists, x, s)
    if ranks is not None:
        cert.median = _median_certificate(ranks.ranks, x, s)
    if losses is not None and moments is not None:
        cert.loss = _loss_certificate(losses, moments, x, s)
    return cert
