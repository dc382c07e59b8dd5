"""The inputs of one evaluation split and the clean metrics of a model on them.

Shared by training (validation after each epoch) and evaluation, so neither imports the other:
uint8 crops x -> pixel x in [0, 1] -> y = A(x) -> normalized (y, target) pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from smoothrecon.metrics import all_metrics
from smoothrecon.models.normalization import Normalization
from smoothrecon.operators import Operator
from smoothrecon.util.runtime import Runtime

Forward = Callable[[torch.Tensor], torch.Tensor]
METRICS = ("mse", "psnr", "ssim")


@dataclass
class SplitInputs:
    """One split on the runtime device: y (B, C, H, W) and target in the model's (normalized)
    input space, x the pixel-space truth in [0, 1]."""

    y: torch.Tensor
    target: torch.Tensor
    x: torch.Tensor


def noise_generator(operator: Operator, seed: int, device: torch.device) -> torch.Generator | None:
    """The seeded generator of a noisy operator's measurement noise (None when noiseless), so
    an evaluation split sees the same noisy measurements every time."""
    if operator.sigma_y == 0:
        return None
    return torch.Generator(device=device).manual_seed(seed)


def pairs(
    runtime: Runtime,
    x_uint8: torch.Tensor,
    operator: Operator,
    norm: Normalization,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 crops (B, 3, H, W) -> (y normalized input, target x normalized, x pixel [0,1]) on
    the runtime's device; y = A_dagger(A(x) + n), the measurement noise n of a noisy operator
    drawn from `generator` (None: noiseless)."""
    x = x_uint8.to(runtime.device, non_blocking=True).float().div_(255.0)
    y = operator(x, generator)
    return norm.normalize(y), norm.normalize(x), x


def split_inputs(
    x_uint8: torch.Tensor,
    operator: Operator,
    norm: Normalization,
    runtime: Runtime,
    seed: int = 0,
) -> SplitInputs:
    """The split's model inputs; a noisy operator's noise is drawn from `seed`."""
    gen = noise_generator(operator, seed, runtime.device)
    y, target, x = pairs(runtime, x_uint8, operator, norm, gen)
    return SplitInputs(y, target, x)


def to_pixels(z: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """Model-space z -> pixel space, clamped to [0, 1] (where every metric is measured)."""
    return norm.denormalize(z).clamp(0, 1)


def clean_metrics(
    forward: Forward,
    x_uint8: torch.Tensor,
    operator: Operator,
    norm: Normalization,
    runtime: Runtime,
    batch_size: int,
) -> dict[str, list[float]]:
    """Per-image metrics of forward(A(x)) against x, no attack, no smoothing."""
    out: dict[str, list[float]] = {m: [] for m in METRICS}
    with torch.no_grad():
        for start in range(0, x_uint8.shape[0], batch_size):
            gen = noise_generator(operator, start, runtime.device)
            y, _, x = pairs(runtime, x_uint8[start : start + batch_size], operator, norm, gen)
            for m, v in all_metrics(to_pixels(forward(y), norm), x).items():
                out[m].extend(v.tolist())
    return out
