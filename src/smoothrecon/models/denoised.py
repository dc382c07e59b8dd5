"""Denoised smoothing (Salman et al., NeurIPS 2020): a Gaussian denoiser D in front of a frozen
reconstruction network f, so that a network trained without noise can be smoothed.

g(y) = E f(D(y + delta)), delta ~ N(0, sigma^2 I): smoothing, attacks and certificates treat
f o D like any model of the network-input space. D is trained with `train --mode denoiser`
at the sigma it will be smoothed with (training.py: D(y + sigma n) ~ y).
"""

from __future__ import annotations

import torch
from torch import nn


class Denoised(nn.Module):
    """z (B, C, H, W) normalized network input -> f(D(z)), same shape."""

    def __init__(self, f: nn.Module, denoiser: nn.Module):
        super().__init__()
        self.f = f
        self.denoiser = denoiser

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.f(self.denoiser(z))
