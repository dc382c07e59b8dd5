"""Per-channel normalization between pixel space [0, 1] and the model's normalized space.

The thesis normalized both the network input and the target with its data set's mean/std; we
compute them on the training split (or use the thesis' Mini-ImageNet values on request).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
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


def channel_stats(arrays: list[np.ndarray]) -> Normalization:
    """Exact per-channel mean/std over all pixels of (H, W, 3) uint8 arrays, in [0, 1] units."""
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for a in arrays:
        for rows in np.array_split(np.arange(a.shape[0]), max(1, a.shape[0] // 256)):
            block = np.asarray(a[rows[0] : rows[-1] + 1], dtype=np.float64).reshape(-1, 3) / 255.0
            total += block.sum(0)
            total_sq += (block**2).sum(0)
            count += block.shape[0]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return Normalization(
        mean=tuple(round(float(v), 6) for v in mean),  # type: ignore[arg-type]
        std=tuple(round(float(v), 6) for v in std),  # type: ignore[arg-type]
    )
