"""Per-channel normalization between pixel space [0, 1] and the model's normalized space.

The thesis normalized both the network input and the target with its data set's mean/std; we
compute them on the training split (`data.normalization.channel_stats`, or use the thesis'
Mini-ImageNet values on request). A model on pixel-space images has `PIXEL_SPACE`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Normalization:
    """z = (x - mean) / std per channel; x in pixel space [0, 1], z in normalized space."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
        return mean, std

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) pixel space -> normalized space."""
        mean, std = self._stats(x)
        return (x - mean) / std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, C, H, W) normalized space -> pixel space (not clamped)."""
        mean, std = self._stats(z)
        return z * std + mean

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @staticmethod
    def from_dict(d: dict) -> Normalization:
        return Normalization(mean=tuple(d["mean"]), std=tuple(d["std"]))  # type: ignore[arg-type]


# The input space of a model on pixel-space images in [0, 1]: mean 0, std 1.
PIXEL_SPACE = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
