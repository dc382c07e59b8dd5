"""Models that invert an operator: the thesis' U-Net and no-learning baselines.

`build_model` is the one table from names to constructors.
"""

from __future__ import annotations

from torch import nn

from smoothrecon.config import ModelConfig
from smoothrecon.models.baselines import Interpolation, make_baseline
from smoothrecon.models.unet import UNet, parameter_count
from smoothrecon.operators import Operator

__all__ = ["Interpolation", "UNet", "build_model", "parameter_count"]


def build_model(cfg: ModelConfig, operator: Operator) -> nn.Module:
    """A fresh model for `cfg`: the U-Net, or the no-learning baseline `cfg.name` of
    `operator` (models/baselines.py)."""
    if cfg.name == "unet":
        return UNet(3, 3, cfg.channels, cfg.activation, cfg.residual)
    return make_baseline(cfg.name, operator)
