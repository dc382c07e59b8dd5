"""Compressed sensing, single-coil MRI style: A x = S F x, F the orthonormal 2-D FFT and S the
selection of a variable-density set of Cartesian k-space columns (4x acceleration by default).

Why this and not a random Gaussian matrix on patches: it is the compressed-sensing problem
robust-reconstruction papers attack (accelerated MRI, fastMRI's Cartesian masks), F is
orthonormal so A_adjoint = zero-filled inverse FFT is exact and costs O(n log n) with no
matrix to store, and a full mask gives A_dagger A = I exactly.

Measurements are the masked k-space as real numbers, (B, C', H, W, 2) with the real and
imaginary parts last (deepinv's layout), zero on the columns not measured; inner products and
noise are real, and the noise touches only measured columns. By default every colour channel is
measured with the same mask (C' = C, the network input and target keep their colours); with
`grayscale` the luminance (C' = 1) is measured and A_dagger replicates it to 3 channels.
"""

from __future__ import annotations

from typing import Any

import torch

from smoothrecon.operators.base import Operator, check_sigma_y
from smoothrecon.util.seeds import derived_seed

ACCELERATION = 4.0  # measured columns = W / acceleration
CENTER_FRACTION = 0.08  # fully sampled low-frequency columns (fastMRI's value at 4x)
DENSITY_POWER = 2  # outer columns drawn with probability ~ (1 - |k| / (W / 2 + 1))^2
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luminance weights, summing to 1


def line_mask(w: int, acceleration: float, center_fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices (L,) of the sampled k-space columns of a width-W (unshifted) FFT grid.

    The round(center_fraction W) lowest frequencies are always sampled; the rest of the
    round(W / acceleration) columns are drawn without replacement with variable density.
    """
    freq = torch.fft.fftfreq(w, d=1.0 / w).abs()
    n_lines = min(w, max(1, round(w / acceleration)))
    n_center = min(n_lines, max(1, round(center_fraction * w)))
    order = torch.argsort(freq, stable=True)  # low frequencies first, DC first
    center, rest = order[:n_center], order[n_center:]
    picked = center
    if n_lines > n_center:
        weights = (1 - freq[rest] / (w / 2 + 1)) ** DENSITY_POWER
        g = torch.Generator().manual_seed(derived_seed("compressed_sensing", seed, w))
        draws = torch.multinomial(weights, n_lines - n_center, replacement=False, generator=g)
        picked = torch.cat([center, rest[draws]])
    return torch.sort(picked).values


class CompressedSensing(Operator):
    """A x = S F x (per channel, or of the luminance); A_adjoint v = Re(F^H S^T v) (zero-filled).

    x and the network input: (B, C, H, W) pixel space; measurements (B, C', H, W, 2).

    Args:
        acceleration: W / L, the undersampling factor (default 4; 1 samples every column).
        center_fraction: fraction of fully sampled central columns (default 0.08).
        mask_seed: the seed the per-width masks are derived from (one mask per width W).
        grayscale: measure the luminance of 3-channel images instead of every channel.
        sigma_y: noise std on each real and imaginary part, pixel units (F is orthonormal).
    """

    name = "compressed_sensing"

    def __init__(
        self,
        acceleration: float = ACCELERATION,
        center_fraction: float = CENTER_FRACTION,
        mask_seed: int = 0,
        grayscale: bool = False,
        sigma_y: float = 0.0,
    ):
        if not acceleration >= 1:
            raise ValueError(f"acceleration = {acceleration} must be >= 1")
        if not 0 <= center_fraction <= 1:
            raise ValueError(f"center_fraction = {center_fraction} must be in [0, 1]")
        self.acceleration, self.center_fraction = float(acceleration), float(center_fraction)
        self.mask_seed, self.grayscale = int(mask_seed), bool(grayscale)
        self.sigma_y = check_sigma_y(sigma_y)

    def lines(self, w: int) -> torch.Tensor:
        """The sampled column indices (L,) for images of width W."""
        return line_mask(w, self.acceleration, self.center_fraction, self.mask_seed)

    def mask(self, w: int, like: torch.Tensor) -> torch.Tensor:
        """(1, 1, 1, W, 1) in {0, 1}: which k-space columns are measured, like `like`."""
        m = torch.zeros(w, dtype=like.dtype)
        m[self.lines(w)] = 1.0
        return m.view(1, 1, 1, w, 1).to(like.device)

    def _luma(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(LUMA, dtype=like.dtype, device=like.device).view(1, 3, 1, 1)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        if self.grayscale:
            x = (x * self._luma(x)).sum(dim=1, keepdim=True)
        k = torch.view_as_real(torch.fft.fft2(x, norm="ortho"))
        return k * self.mask(x.shape[-1], k)

    def restrict_noise(self, n: torch.Tensor) -> torch.Tensor:
        return n * self.mask(n.shape[-2], n)

    def _zero_filled(self, v: torch.Tensor) -> torch.Tensor:
        """Re(F^H M v): (B, C', H, W, 2) -> (B, C', H, W), unmeasured columns set to 0."""
        masked = (v * self.mask(v.shape[-2], v)).contiguous()
        return torch.fft.ifft2(torch.view_as_complex(masked), norm="ortho").real

    def A_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        x = self._zero_filled(v)
        return x * self._luma(x) if self.grayscale else x

    def A_dagger(self, v: torch.Tensor) -> torch.Tensor:
        """The zero-filled inverse FFT; with `grayscale` replicated to 3 channels."""
        x = self._zero_filled(v)
        return x.repeat(1, 3, 1, 1) if self.grayscale else x

    def measurement_count(self, shape: tuple[int, int, int]) -> int:
        c, h, w = shape
        return (1 if self.grayscale else c) * h * self.lines(w).numel() * 2

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "acceleration": self.acceleration,
            "center_fraction": self.center_fraction,
            "mask_seed": self.mask_seed,
            "grayscale": self.grayscale,
            "sigma_y": self.sigma_y,
        }
