"""No-learning baselines as models: re-interpolation of the network input y.

`bilinear` is the identity on y (y is already the bilinear up-sampling of the low-resolution
image). `bicubic` re-samples y to the low-resolution grid with the operator's own antialiased
bilinear downsampling and up-samples bicubically. Both are linear maps that preserve constants,
so they commute with the per-channel normalization: they act the same in pixel and normalized
space, and attacks and smoothing apply to them like to any model (by Lemma A.1.2 smoothing
leaves them unchanged).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
