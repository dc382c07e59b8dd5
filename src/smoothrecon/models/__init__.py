"""Models that invert an operator: the thesis' U-Net and no-learning baselines.

`build_model` is the one table from names to constructors.
"""

from __future__ import annotations

from torch import nn

from smoothrecon.config import ModelConfig
from smoothrecon.models.baselines import Interpolation
from smoothrecon.models.unet import UNet, parameter_count

__all__ = ["Interpolation", "UNet", "build_model", "parameter_count"]


def build_model(cfg: ModelConfig, factor: int) -> nn.Module:
    """A fresh model for `cfg` (`factor` is used by the bicubic baseline)."""
    if cfg.name == "unet":
        return UNet(3, 3, cfg.channels, cfg.activation, cfg.residual)
    return Interpolation(cfg.name, factor)
