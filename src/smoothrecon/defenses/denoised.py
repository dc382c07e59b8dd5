"""Denoised smoothing (Salman et al., NeurIPS 2020): a Gaussian denoiser D in front of a frozen
reconstruction network f, so that a network trained without noise can be smoothed.

g(y) = E f(D(y + delta)), delta ~ N(0, sigma^2 I): smoothing, attacks and certificates treat
f o D like any model of the network-input space. D is trained with `train --mode denoiser`
at the sigma it will be smoothed with (training.py: D(y + sigma n) ~ y).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from smoothrecon.defenses.base import DefenseContext
from smoothrecon.errors import UserError
from smoothrecon.models.checkpoint import load_model, model_config
from smoothrecon.models.own import module_key


class Denoised(nn.Module):
    """z (B, C, H, W) normalized network input -> f(D(z)), same shape."""

    def __init__(self, f: nn.Module, denoiser: nn.Module):
        super().__init__()
        self.f = f
        self.denoiser = denoiser

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.f(self.denoiser(z))


@dataclass(frozen=True)
class DenoisedSmoothing:
    """The defence f -> f o D with the sigma_g grid on top (`smoothed`): D a Gaussian denoiser
    of the network input trained at noise `sigma`; `key` identifies its weights, `source`
    where it was loaded from (a checkpoint path; "" for a module handed in)."""

    kind: ClassVar[str] = "denoised"
    smoothed: ClassVar[bool] = True

    denoiser: nn.Module = field(compare=False, repr=False)
    sigma: float
    key: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"a denoiser's sigma must be > 0, got {self.sigma}")

    @property
    def name(self) -> str:
        return f"den{self.sigma:g}"

    def defend(self, model: nn.Module, context: DefenseContext) -> nn.Module:
        return Denoised(model, self.denoiser)

    def describe(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.pop("denoiser")
        return {"kind": self.kind, "name": self.name, **fields}

    @classmethod
    def load(cls, path: str | Path) -> DenoisedSmoothing:
        """The defence of the denoiser checkpoint at `path` (trained with --mode denoiser; its
        sigma_f is the defence's sigma)."""
        denoiser, meta = load_model(path)
        t = model_config(meta).train
        if t.mode != "denoiser":
            raise UserError(
                f"'{path}' was trained with --mode {t.mode}, not as a denoiser; train one with "
                "`smoothrecon train --mode denoiser --sigma-f S`"
            )
        return cls(denoiser, t.sigma_f, module_key(denoiser), str(path))
