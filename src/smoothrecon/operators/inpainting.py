"""Inpainting: a random pixel mask m keeps a fraction of the pixels, A x = m * x.

The mask is one fixed draw per image size: its seed is derived from (mask_seed, H, W), so every
image of a size sees the same mask on every run and machine, like a sensor with fixed dead
pixels (deepinv's `Inpainting` also fixes one mask). A is then one linear map with an exact
adjoint, and no image index has to travel with the batches.
"""

from __future__ import annotations

from typing import Any

import torch

from smoothrecon.operators.base import Operator, check_sigma_y
from smoothrecon.operators.filters import gaussian_kernel1d, separable_filter
from smoothrecon.util.seeds import derived_seed

KEEP_FRACTION = 0.5  # the literature keeps 30% to 70% of the pixels
# Normalized convolution: a Gaussian of std 1 px, truncated at 6 px so that at keep >= 0.3 an
# all-missing 13 x 13 window (probability 0.7^169) practically never leaves a pixel unfilled.
FILL_STD, FILL_RADIUS = 1.0, 6


def pixel_mask(h: int, w: int, keep_fraction: float, seed: int) -> torch.Tensor:
    """A (1, 1, H, W) float64 mask with exactly round(keep_fraction H W) ones, seeded by seed."""
    g = torch.Generator().manual_seed(derived_seed("inpainting", seed, h, w))
    kept = torch.randperm(h * w, generator=g)[: round(keep_fraction * h * w)]
    mask = torch.zeros(h * w, dtype=torch.float64)
    mask[kept] = 1.0
    return mask.view(1, 1, h, w)


def normalized_convolution(v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill the missing pixels of v with a Gaussian-weighted mean of the kept ones.

    out = m v + (1 - m) (g * (m v)) / (g * m), g the truncated Gaussian above, zero padding.
    v: (B, C, H, W), mask: (1, 1, H, W) in {0, 1}; linear in v and preserves constants.
    """
    g = gaussian_kernel1d(FILL_STD, FILL_RADIUS)
    numerator = separable_filter(mask * v, g)
    denominator = separable_filter(mask, g).clamp_min(torch.finfo(v.dtype).tiny)
    return mask * v + (1 - mask) * numerator / denominator


class Inpainting(Operator):
    """A x = m * x (pixels dropped in all channels alike), A_adjoint = A, A_dagger = fill.

    x, measurements and the network input are (B, C, H, W) in pixel space; the measurements
    are 0 at missing pixels and the noise touches only kept pixels.

    Args:
        keep_fraction: the fraction of pixels kept (default 0.5).
        mask_seed: the seed the per-size masks are derived from.
        sigma_y: noise std on the kept pixels, pixel units (default 0).
    """

    name = "inpainting"

    def __init__(
        self, keep_fraction: float = KEEP_FRACTION, mask_seed: int = 0, sigma_y: float = 0.0
    ):
        if not 0 < keep_fraction <= 1:
            raise ValueError(f"keep_fraction = {keep_fraction} must be in (0, 1]")
        self.keep_fraction, self.mask_seed = float(keep_fraction), int(mask_seed)
        self.sigma_y = check_sigma_y(sigma_y)

    def mask(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """This operator's (1, 1, H, W) mask on the device and dtype of `like`."""
        m = pixel_mask(h, w, self.keep_fraction, self.mask_seed)
        return m.to(device=like.device, dtype=like.dtype)

    def _masked(self, v: torch.Tensor) -> torch.Tensor:
        return v * self.mask(v.shape[-2], v.shape[-1], v)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self._masked(x)

    def A_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        return self._masked(v)

    def restrict_noise(self, n: torch.Tensor) -> torch.Tensor:
        return self._masked(n)

    def A_dagger(self, v: torch.Tensor) -> torch.Tensor:
        return normalized_convolution(v, self.mask(v.shape[-2], v.shape[-1], v))

    def measurement_count(self, shape: tuple[int, int, int]) -> int:
        c, h, w = shape
        return c * round(self.keep_fraction * h * w)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "keep_fraction": self.keep_fraction,
            "mask_seed": self.mask_seed,
            "sigma_y": self.sigma_y,
        }
