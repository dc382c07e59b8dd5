"""Gaussian denoising: A = I, y = x + n with n ~ N(0, sigma_y^2 I) in pixel units.

Krainovic, Soltanolkotabi & Heckel (NeurIPS 2023) and deepinv's benchmarks use sigma_y in
{0.05, 0.1, 0.2} on [0, 1] images; 0.1 is the default here.
"""

from __future__ import annotations

from typing import Any

import torch

from smoothrecon.operators.base import Operator, check_sigma_y

DENOISING_SIGMA_Y = 0.1  # pixel units; the literature's typical values are 0.05, 0.1, 0.2


class Denoising(Operator):
    """A = A_adjoint = A_dagger = I on (B, C, H, W), pixel space; only the noise matters.

    Note: op(x) without a generator is x itself; the noisy network input is op(x, generator).
    """

    name = "denoising"

    def __init__(self, sigma_y: float = DENOISING_SIGMA_Y):
        self.sigma_y = check_sigma_y(sigma_y)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def A_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def A_dagger(self, v: torch.Tensor) -> torch.Tensor:
        return v

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sigma_y": self.sigma_y}
