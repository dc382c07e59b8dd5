"""The data's per-channel statistics: the normalization (`models.normalization`) of its photos.

The thesis normalized both the network input and the target with its data set's mean/std; we
compute them on the training split (or use the thesis' Mini-ImageNet values on request).
"""

from __future__ import annotations

import numpy as np

from smoothrecon.models.normalization import Normalization


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
