"""No-learning baselines as models: fixed maps of the network input y = A_dagger(measurement).

Super-resolution: `bilinear` is the identity on y (y is already the bilinear up-sampling of the
low-resolution image); `bicubic` re-samples y to the low-resolution grid with the operator's own
antialiased bilinear downsampling and up-samples bicubically. For the other operators the
back-projection is already the classical reconstruction, so the identity on y is the baseline:
`wiener` (deblurring: y is the Wiener-filtered image), `fill` (inpainting: normalized
convolution), `zero_filled` (compressed sensing), `noisy` (denoising); denoising also has
`gaussian`, a Gaussian smoothing of y. All are linear maps that preserve constants, so they
commute with the per-channel normalization: they act the same in pixel and normalized space,
and attacks and smoothing apply to them like to any model (by Lemma A.1.2 smoothing leaves
them unchanged).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from smoothrecon.config import BASELINES
from smoothrecon.operators import Operator, SuperResolution
from smoothrecon.operators.filters import gaussian_kernel1d, separable_filter


class Interpolation(nn.Module):
    """f(y) = y (bilinear) or bicubic_up(bilinear_down(y)); y (B, C, H, W), any space."""

    def __init__(self, kind: str, factor: int):
        super().__init__()
        if kind not in ("bilinear", "bicubic"):
            raise ValueError(f"unknown interpolation baseline '{kind}'")
        self.kind, self.factor = kind, factor

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "bilinear":
            return y
        h, w = y.shape[-2:]
        lr = F.interpolate(
            y, size=(h // self.factor, w // self.factor), mode="bilinear", antialias=True
        )
        return F.interpolate(lr, size=(h, w), mode="bicubic", align_corners=False)


# The baseline of an operator the project does not know (a user's): the identity on A_dagger(y)
BACKPROJECTION = "backprojection"


class Backprojection(nn.Module):
    """f(y) = y: the operator's back-projection A_dagger(measurement) as the reconstruction."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y


def denoising_smoothing_std(sigma_y: float) -> float:
    """The Gaussian std (pixels) of the denoising baseline for noise std sigma_y (pixel units).

    0.4 + 8 sigma_y was the best std (within 0.1 px) on 32 crops (96 px) of the default photos
    at short side 192, for sigma_y = 0.05, 0.1 and 0.2 (0.8, 1.2, 2.0 px).
    """
    return 0.4 + 8.0 * sigma_y


class GaussianSmoothing(nn.Module):
    """f(y) = g * y per channel, g a sampled Gaussian of `std` pixels, reflect padding.

    y: (B, C, H, W), any space (the map is linear and preserves constants); H, W > 3 std.
    """

    g: torch.Tensor

    def __init__(self, std: float):
        super().__init__()
        self.std = std
        self.register_buffer("g", gaussian_kernel1d(std).float(), persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return separable_filter(y, self.g, padding="reflect")


def make_baseline(kind: str, operator: Operator) -> nn.Module:
    """The no-learning baseline `kind` (one of config.BASELINES[operator.name])."""
    known = BASELINES.get(operator.name, (BACKPROJECTION,))
    if kind not in known:
        raise ValueError(
            f"unknown baseline '{kind}' for operator {operator.name}; use one of {', '.join(known)}"
        )
    if isinstance(operator, SuperResolution):
        return Interpolation(kind, operator.factor)
    if kind == "gaussian":
        return GaussianSmoothing(denoising_smoothing_std(operator.sigma_y))
    return Backprojection()
