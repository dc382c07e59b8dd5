"""The smoothed estimator g(y) = E_delta[f(y + delta)], delta ~ N(0, sigma^2 I) (eq 2.6, 2.7).

Monte-Carlo: g_hat(y) = (1/k) sum_j f(y + delta_j). The B*k noisy inputs are evaluated as
flattened batches in chunks that bound memory, never a Python loop over images or samples.
Noise lives in the model-input (normalized) space. Predictions are averaged unclamped in the
model's output space (so Lemma A.1.2 holds exactly and gradients reach every sample); metrics
clamp after de-normalization. The thesis' code clamped each prediction, which zeroes gradients.

Common random numbers: `predict_many` scales the same standard-normal draws by every sigma, so
curves over sigma_g carry less Monte-Carlo noise. Antithetic pairs (z, -z) are an option.
The base model f is used as given: put it in eval mode first.

Adaptive k: `predict_adaptive` draws in rounds and stops each (image, sigma) once the
Monte-Carlo share of its error (`mc_share`) is at most a tolerance, between k_min and k_max
(the rule `AdaptiveK`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from smoothrecon.metrics import mse
from smoothrecon.util.runtime import auto_chunk
from smoothrecon.util.seeds import make_generator

if TYPE_CHECKING:
    from smoothrecon.models.normalization import Normalization

Forward = Callable[[torch.Tensor], torch.Tensor]
# (g_hat (N, C, H, W), se (N, C, H, W), image index (N,)) -> (N,) Monte-Carlo share of the error
ErrorFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SmoothedOutput:
    """mean: (B, C, H, W) g_hat(y); se: per-pixel Monte-Carlo standard error, or None."""

    mean: torch.Tensor
    se: torch.Tensor | None = None


def noise_rows(n: int, shape: tuple[int, ...], like: torch.Tensor, gen) -> torch.Tensor:
    """(n, *shape) standard normals, the same rows however n is split into calls (on CPU).

    torch's CPU sampler fills tensors of 16 or more values in blocks of 16 and redraws a ragged
    tail, so rows are drawn padded to a multiple of 16 values: then drawing 3 + 3 rows equals
    drawing 6, and results do not depend on the chunk size. (On CUDA the seed and the chunk
    size together fix the numbers.)
    """
    d = 1
    for s in shape:
        d *= s
    padded = -(-d // 16) * 16
    z = torch.randn((n, padded), generator=gen, device=like.device, dtype=like.dtype)
    return z[:, :d].reshape(n, *shape)


def _noise(
    n: int, shape: tuple[int, ...], antithetic: bool, like: torch.Tensor, gen
) -> torch.Tensor:
    """(n, *shape) standard normals; with antithetic pairs row 2m+1 = -row 2m."""
    if not antithetic:
        return noise_rows(n, shape, like, gen)
    half = noise_rows((n + 1) // 2, shape, like, gen)
    return torch.stack([half, -half], dim=1).flatten(0, 1)[:n]


def predict_many(
    f: Forward,
    y: torch.Tensor,
    sigmas: Sequence[float],
    k: int,
    generator: torch.Generator | None = None,
    chunk_size: int = 0,
    antithetic: bool = False,
    with_se: bool = False,
) -> dict[float, SmoothedOutput]:
    """g_hat(y) for every sigma in `sigmas`, sharing one set of standard-normal draws.

    y: (B, C, H, W) model inputs (normalized space). Returns {sigma: SmoothedOutput}; sigma = 0
    gives f(y) itself. Differentiable with respect to y.
    """
    check_many(sigmas, k, antithetic)
    b = y.shape[0]
    out: dict[float, SmoothedOutput] = {}
    if 0.0 in sigmas:
        f0 = f(y)
        out[0.0] = SmoothedOutput(f0, torch.zeros_like(f0) if with_se else None)
    noisy = [float(s) for s in sigmas if s > 0]
    moments = {s: _Moments(b, antithetic, y.device, with_se) for s in noisy}
    for images, preds in noisy_chunks(f, y, noisy, k, generator, chunk_size, antithetic):
        for s in noisy:
            moments[s].add(preds[s], images)
    every = torch.arange(b, device=y.device)
    for s in noisy:
        mean = moments[s].mean(every)
        out[s] = SmoothedOutput(mean, moments[s].se(every, mean.dtype) if with_se else None)
    return out


def noisy_chunks(
    f: Forward,
    y: torch.Tensor,
    sigmas: Sequence[float],
    k: int,
    generator: torch.Generator | None = None,
    chunk_size: int = 0,
    antithetic: bool = False,
) -> Iterator[tuple[torch.Tensor, dict[float, torch.Tensor]]]:
    """The B k noisy forwards of every smoothed estimator, in flattened chunks (image-major):
    (image index (N,), {sigma: f(y_i + sigma z) (N, ...)}), one standard-normal draw z per row
    shared by every sigma (common random numbers; antithetic pairs optionally). sigmas > 0."""
    if not sigmas:
        return
    b, shape = y.shape[0], tuple(y.shape[1:])
    chunk = chunk_size or auto_chunk(shape, y.device)
    chunk = max(2, chunk - chunk % 2) if antithetic else max(1, chunk)
    total = b * k
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        images = torch.arange(start, stop, device=y.device) // k
        z = _noise(stop - start, shape, antithetic, y, generator)
        base = y.index_select(0, images)
        yield images, {s: f(base + s * z) for s in sigmas}


def check_many(sigmas: Sequence[float], k: int, antithetic: bool) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if any(s < 0 for s in sigmas):
        raise ValueError(f"sigmas must be >= 0, got {list(sigmas)}")
    if antithetic and k % 2:
        raise ValueError(f"antithetic pairs need an even k, got {k}")


class SmoothedEstimator:
    """g(y) = mean over k of f(y + delta_j), delta_j ~ N(0, sigma^2 I) in f's input space.

    >>> g = SmoothedEstimator(f, sigma=0.15, k=50)
    >>> x_hat = g(y)  # (B, C, H, W)
    """

    def __init__(
        self,
        f: Forward,
        sigma: float,
        k: int = 50,
        chunk_size: int = 0,
        antithetic: bool = False,
    ):
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.f, self.sigma, self.k = f, float(sigma), int(k)
        self.chunk_size, self.antithetic = chunk_size, antithetic

    def predict(
        self, y: torch.Tensor, generator: torch.Generator | None = None, with_se: bool = False
    ) -> SmoothedOutput:
        """g_hat(y) and (optionally) its per-pixel Monte-Carlo standard error."""
        return predict_many(
            self.f, y, [self.sigma], self.k, generator, self.chunk_size, self.antithetic, with_se
        )[self.sigma]

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.predict(y, generator).mean

    def with_noise(self, mode: str, seed: int) -> Forward:
        """A forward for attacks on g: "fixed" redraws the same noise on every call (the
        noise is held across PGD steps, as SmoothAdv does); "fresh" draws new noise each call."""
        if mode not in ("fixed", "fresh"):
            raise ValueError(f"noise mode must be 'fixed' or 'fresh', got '{mode}'")
        state: dict[str, torch.Generator] = {}

        def forward(y: torch.Tensor) -> torch.Tensor:
            if mode == "fixed" or "gen" not in state:
                state["gen"] = make_generator(seed, y.device)
            return self(y, state["gen"])

        return forward


def mc_share(
    g_hat: torch.Tensor, se: torch.Tensor, x: torch.Tensor, norm: Normalization
) -> torch.Tensor:
    """Share of each image's MSE that is Monte-Carlo variance of g_hat (as evaluation records it).

    mc_share_i = mean_pixels((se * std)^2) / MSE(clamp(denormalize(g_hat), 0, 1), x).
    g_hat, se: (N, C, H, W) normalized space; x: (N, C, H, W) pixel space [0, 1]. Returns (N,).
    """
    std = torch.tensor(norm.std, device=se.device, dtype=torch.float32).view(1, -1, 1, 1)
    err = mse(norm.denormalize(g_hat).clamp(0, 1), x)
    return (se.float() * std).pow(2).flatten(1).mean(1) / err.clamp_min(1e-12)


def mc_share_fn(x: torch.Tensor, norm: Normalization) -> ErrorFn:
    """The `error_fn` of `predict_adaptive` for targets x: (B, C, H, W) pixel space [0, 1]."""

    def error(g_hat: torch.Tensor, se: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return mc_share(g_hat, se, x.index_select(0, images), norm)

    return error


@dataclass
class AdaptiveOutput:
    """g_hat with the samples it used. mean, se: (B, C, H, W) in f's output space;
    k: (B,) int64 noisy forwards per image; mc_share: (B,) error_fn at the stop."""

    mean: torch.Tensor
    se: torch.Tensor
    k: torch.Tensor
    mc_share: torch.Tensor


class _Moments:
    """Running sums per slot (e.g. (sigma, image)): the sum of predictions in f's dtype
    (differentiable), and with `with_se` float64 moments of the independent units (single
    draws, or antithetic pair means) for the standard error (float32 would lose the variance to
    cancellation when it is small against the mean)."""

    def __init__(self, slots: int, antithetic: bool, device: torch.device, with_se: bool = True):
        self.antithetic, self.with_se = antithetic, with_se
        self.count = torch.zeros(slots, dtype=torch.long, device=device)
        self.sums = self.m1 = self.m2 = torch.empty(0)

    def add(self, pred: torch.Tensor, slot: torch.Tensor) -> None:
        """Add the predictions pred (N, C, H, W) of the slots `slot` (N,)."""
        if self.sums.numel() == 0:
            shape = (self.count.shape[0], *pred.shape[1:])
            self.sums = torch.zeros(shape, device=pred.device, dtype=pred.dtype)
            if self.with_se:
                self.m1 = torch.zeros(shape, device=pred.device, dtype=torch.float64)
                self.m2 = torch.zeros_like(self.m1)
        self.sums.index_add_(0, slot, pred)  # autograd-safe: its backward needs no sums
        self.count.index_add_(0, slot, torch.ones_like(slot))
        if not self.with_se:
            return
        p, idx = pred.detach().double(), slot
        if self.antithetic:  # pairs sit at even offsets of every chunk
            p, idx = (p[0::2] + p[1::2]) / 2, slot[0::2]
        self.m1.index_add_(0, idx, p)
        self.m2.index_add_(0, idx, p**2)

    def _count(self, slot: torch.Tensor) -> torch.Tensor:
        return self.count[slot].view(-1, *([1] * (self.sums.dim() - 1)))

    def mean(self, slot: torch.Tensor) -> torch.Tensor:
        """g_hat for the slots `slot` (N,): (N, C, H, W)."""
        return self.sums[slot] / self._count(slot)

    def se(self, slot: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The per-pixel standard error of g_hat for the slots `slot` (N,), in `dtype`."""
        n = self._count(slot)
        m = (n // 2 if self.antithetic else n).double()  # independent units per slot
        var = (self.m2[slot] / m - (self.m1[slot] / m) ** 2).clamp_min(0)
        return (var * (m / (m - 1).clamp_min(1)) / m).sqrt().to(dtype)

    def mean_se(self, slot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """g_hat and its per-pixel standard error for the slots `slot` (N,)."""
        mean = self.mean(slot)
        return mean, self.se(slot, mean.dtype)


@dataclass
class _Rounds:
    """The fixed part of `predict_adaptive`'s sampling: f, the inputs y (B, C, H, W), the
    noisy sigmas sig (S,), the generator and the chunk of noisy inputs per forward."""

    f: Forward
    y: torch.Tensor
    sig: torch.Tensor
    gen: torch.Generator | None
    chunk: int

    def draw(self, inc: torch.Tensor, active: torch.Tensor, moments: _Moments) -> None:
        """inc[i] (B,) new draws for every image i, each scaled by every sigma still active
        for it (active: (S, B)), added to `moments`.

        The same standard-normal rows serve every sigma (common random numbers). Rows are drawn
        in groups of images (bounded memory), in image order, so the numbers do not depend on
        grouping.
        """
        y, chunk = self.y, self.chunk
        b, shape = y.shape[0], tuple(y.shape[1:])
        images = inc.nonzero().squeeze(1).tolist()
        budget = max(8 * chunk, int(inc.max()))
        while images:
            group: list[int] = []
            rows = 0
            while images and (not group or rows + int(inc[images[0]]) <= budget):
                rows += int(inc[images[0]])
                group.append(images.pop(0))
            g = torch.tensor(group, device=y.device)
            row_img = g.repeat_interleave(inc[g])
            z = _noise(rows, shape, moments.antithetic, y, self.gen)
            s_idx, r_idx = active[:, row_img].nonzero(as_tuple=True)
            for start in range(0, s_idx.shape[0], chunk):
                s_c, r_c = s_idx[start : start + chunk], r_idx[start : start + chunk]
                img = row_img.index_select(0, r_c)
                scale = self.sig[s_c].view(-1, *([1] * len(shape)))
                moments.add(self.f(y.index_select(0, img) + scale * z[r_c]), s_c * b + img)


@dataclass(frozen=True)
class AdaptiveK:
    """When `predict_adaptive` stops drawing for an (image, sigma): k_min draws first, then
    rounds of more until the Monte-Carlo share of the error is at most `tolerance` or k = k_max.
    The defaults are those of the config (smoothing.k_min, k_max, mc_tolerance)."""

    k_min: int = 8
    k_max: int = 256
    tolerance: float = 0.05


def _next_increment(
    n: torch.Tensor,
    share: torch.Tensor,
    active: torch.Tensor,
    rule: AdaptiveK,
    antithetic: bool,
) -> torch.Tensor:
    """(B,) draws for the next round: enough that the worst active sigma of each image would
    reach the tolerance if its share fell as 1/k (times 1.1), growing k by 1.25x to 4x."""
    tolerance, k_max = rule.tolerance, rule.k_max
    growth = (share / tolerance * 1.1).clamp(1.25, 4.0).nan_to_num(4.0)
    target = torch.ceil(n.view(1, -1) * growth).long()
    target = torch.where(active, target, torch.zeros_like(target)).amax(0)
    inc = (target - n).clamp_min(0)
    if antithetic:
        inc = inc + inc % 2
    return torch.minimum(inc, (k_max - n).clamp_min(0)) * active.any(0)


def _check_adaptive(sigmas: Sequence[float], rule: AdaptiveK, antithetic: bool) -> None:
    k_min, k_max, tolerance = rule.k_min, rule.k_max, rule.tolerance
    if any(s < 0 for s in sigmas):
        raise ValueError(f"sigmas must be >= 0, got {list(sigmas)}")
    least = 4 if antithetic else 2  # two independent units for a standard error
    if k_min < least or k_max < k_min:
        raise ValueError(f"need {least} <= k_min <= k_max, got k_min {k_min}, k_max {k_max}")
    if antithetic and (k_min % 2 or k_max % 2):
        raise ValueError(f"antithetic pairs need even k_min and k_max, got {k_min}, {k_max}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be > 0, got {tolerance}")


def predict_adaptive(
    f: Forward,
    y: torch.Tensor,
    sigmas: Sequence[float],
    error_fn: ErrorFn,
    rule: AdaptiveK = AdaptiveK(),
    generator: torch.Generator | None = None,
    chunk_size: int = 0,
    antithetic: bool = False,
) -> dict[float, AdaptiveOutput]:
    """g_hat(y) for every sigma with k chosen per (image, sigma) by `rule`: rule.k_min draws,
    then rounds of more until error_fn(g_hat, se) <= rule.tolerance or k = rule.k_max
    (optional stopping: see README).

    y: (B, C, H, W) model inputs (normalized space). error_fn: e.g. `mc_share_fn(x, norm)`.
    Images and sigmas that stopped get no more forwards; the others are batched together in
    chunks of `chunk_size` noisy inputs. sigma = 0 gives f(y) with k = 1. Not differentiable.
    """
    _check_adaptive(sigmas, rule, antithetic)
    b, dev = y.shape[0], y.device
    out: dict[float, AdaptiveOutput] = {}
    noisy = [float(s) for s in sigmas if s > 0]
    with torch.no_grad():
        if 0.0 in sigmas:
            f0 = f(y)
            ones = torch.ones(b, dtype=torch.long, device=dev)
            out[0.0] = AdaptiveOutput(f0, torch.zeros_like(f0), ones, torch.zeros(b, device=dev))
        if not noisy:
            return out
        chunk = chunk_size or auto_chunk(tuple(y.shape[1:]), dev)
        chunk = max(2, chunk - chunk % 2) if antithetic else max(1, chunk)
        sig = torch.tensor(noisy, device=dev, dtype=y.dtype)
        rounds = _Rounds(f, y, sig, generator, chunk)
        moments = _Moments(len(noisy) * b, antithetic, dev)
        active = torch.ones(len(noisy), b, dtype=torch.bool, device=dev)
        share = torch.full((len(noisy), b), math.inf, device=dev)
        n = torch.zeros(b, dtype=torch.long, device=dev)
        inc = torch.full((b,), rule.k_min, dtype=torch.long, device=dev)
        while active.any():
            rounds.draw(inc, active, moments)
            n += inc
            slot = active.flatten().nonzero().squeeze(1)
            share.view(-1)[slot] = error_fn(*moments.mean_se(slot), slot % b).float()
            active &= (share > rule.tolerance) & (n < rule.k_max).view(1, -1)
            inc = _next_increment(n, share, active, rule, antithetic)
        for i, s in enumerate(noisy):
            slot = torch.arange(i * b, (i + 1) * b, device=dev)
            mean, se = moments.mean_se(slot)
            out[s] = AdaptiveOutput(mean, se, moments.count[slot].clone(), share[i].clone())
    return out
