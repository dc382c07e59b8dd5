"""The smoothed estimator g(y) = E_delta[f(y + delta)], delta ~ N(0, sigma^2 I) (eq 2.6, 2.7).

Monte-Carlo: g_hat(y) = (1/k) sum_j f(y + delta_j). The B*k noisy inputs are evaluated as
flattened batches in chunks that bound memory, never a Python loop over images or samples.
Noise lives in the model-input (normalized) space. Predictions are averaged unclamped in the
model's output space (so Lemma A.1.2 holds exactly and gradients reach every sample); metrics
clamp after de-normalization. The thesis' code clamped each prediction, which zeroes gradients.

Common random numbers: `predict_many` scales the same standard-normal draws by every sigma, so
curves over sigma_g carry less Monte-Carlo noise. Antithetic pairs (z, -z) are an option.
The base model f is used as given: put it in eval mode first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Forward = Callable[[torch.Tensor], torch.Tensor]


def make_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A torch.Generator on `device` seeded with `seed` (noise is drawn where the data is)."""
    return torch.Generator(device=device).manual_seed(int(seed))


def auto_chunk(input_shape: torch.Size | tuple[int, ...], device: torch.device) -> int:
    """Noisy inputs per forward pass: about 2M input values on CPU, 16M on a GPU."""
    per = 1
    for s in input_shape:
        per *= int(s)
    budget = (1 << 24) if device.type == "cuda" else (1 << 21)
    return max(2, (budget // per) // 2 * 2)


@dataclass
class SmoothedOutput:
    """mean: (B, C, H, W) g_hat(y); se: per-pixel Monte-Carlo standard error, or None."""

    mean: torch.Tensor
    se: torch.Tensor | None = None


def _rows(n: int, shape: tuple[int, ...], like: torch.Tensor, gen) -> torch.Tensor:
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
        return _rows(n, shape, like, gen)
    half = _rows((n + 1) // 2, shape, like, gen)
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
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if any(s < 0 for s in sigmas):
        raise ValueError(f"sigmas must be >= 0, got {list(sigmas)}")
    if antithetic and k % 2:
        raise ValueError(f"antithetic pairs need an even k, got {k}")
    b, shape = y.shape[0], tuple(y.shape[1:])
    out: dict[float, SmoothedOutput] = {}
    if 0.0 in sigmas:
        f0 = f(y)
        out[0.0] = SmoothedOutput(f0, torch.zeros_like(f0) if with_se else None)
    noisy = [float(s) for s in sigmas if s > 0]
    if not noisy:
        return out
    chunk = chunk_size or auto_chunk(shape, y.device)
    chunk = max(2, chunk - chunk % 2) if antithetic else max(1, chunk)
    sums: dict[float, torch.Tensor] = {}
    # For the standard error: float64 first and second moments (float32 would lose the
    # variance to cancellation when it is small against the mean).
    m1: dict[float, torch.Tensor] = {}
    m2: dict[float, torch.Tensor] = {}
    total = b * k
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        images = torch.arange(start, stop, device=y.device) // k
        z = _noise(stop - start, shape, antithetic, y, generator)
        base = y.index_select(0, images)
        for s in noisy:
            pred = f(base + s * z)
            if s not in sums:
                sums[s] = torch.zeros((b, *pred.shape[1:]), device=pred.device, dtype=pred.dtype)
                if with_se:
                    m1[s] = torch.zeros(sums[s].shape, device=pred.device, dtype=torch.float64)
                    m2[s] = torch.zeros_like(m1[s])
            sums[s] = sums[s].index_add(0, images, pred)
            if with_se:
                # Antithetic pairs are not independent: the variance is that of pair means.
                p, idx = pred.detach().double(), images
                if antithetic:
                    p, idx = (p[0::2] + p[1::2]) / 2, images[0::2]
                m1[s] = m1[s].index_add(0, idx, p)
                m2[s] = m2[s].index_add(0, idx, p**2)
    for s in noisy:
        mean = sums[s] / k
        se = None
        if with_se:
            m = k // 2 if antithetic else k  # independent samples per image
            var = (m2[s] / m - (m1[s] / m) ** 2).clamp_min(0) * (m / max(m - 1, 1))
            se = (var / m).sqrt().to(mean.dtype)
        out[s] = SmoothedOutput(mean, se)
    return out


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
