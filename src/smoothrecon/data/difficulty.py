"""How hard a set of crops is: the PSNR the no-learning baselines reach on it.

A learned model only counts against these numbers, and they tell natural photographs (bilinear
x2 around 25-30 dB on 48 px crops) from smooth, shallow-depth-of-field wallpapers (35-45 dB).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from smoothrecon.metrics import psnr
from smoothrecon.models.baselines import Interpolation
from smoothrecon.operators import SuperResolution


def baseline_psnr(x_uint8: torch.Tensor, factor: int, kind: str = "bilinear") -> list[float]:
    """Per-crop PSNR (dB, data range 1) of a baseline's reconstruction of A(x) against x.

    x_uint8: (N, C, H, W) uint8 crops; A is super-resolution by `factor`; kind is 'bilinear'
    (the network input itself) or 'bicubic'. Outputs are clamped to [0, 1] as in evaluation.
    """
    if x_uint8.shape[0] == 0:
        return []
    x = x_uint8.float() / 255.0
    with torch.no_grad():
        x_hat = Interpolation(kind, factor)(SuperResolution(factor)(x)).clamp(0, 1)
    return [float(v) for v in psnr(x_hat, x)]


@dataclass(frozen=True)
class Difficulty:
    """Median and mean baseline PSNR (dB) of one split's crops."""

    split: str
    kind: str
    n: int
    median: float
    mean: float


def difficulty(x_uint8: torch.Tensor, split: str, factor: int, kind: str) -> Difficulty:
    values = baseline_psnr(x_uint8, factor, kind)
    if not values:
        return Difficulty(split, kind, 0, float("nan"), float("nan"))
    return Difficulty(split, kind, len(values), statistics.median(values), statistics.fmean(values))
