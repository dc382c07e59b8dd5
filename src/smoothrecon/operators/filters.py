"""Gaussian kernels, separable filtering and circular convolution by FFT, as pure functions.

Shared by the blur (deblurring), the normalized-convolution fill (inpainting) and the
Gaussian-smoothing baseline (denoising). Kernels are sampled, not integrated, and sum to 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel1d(std: float, radius: int | None = None) -> torch.Tensor:
    """g[i] = exp(-i^2 / (2 std^2)) / sum, i = -radius..radius (default radius ceil(3 std)).

    Returns a float64 tensor of shape (2 radius + 1,).
    """
    if not std > 0:
        raise ValueError(f"the Gaussian std = {std} must be > 0 pixels")
    r = math.ceil(3 * std) if radius is None else radius
    i = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(i**2) / (2 * std**2))
    return g / g.sum()


def gaussian_kernel2d(std: float, radius: int | None = None) -> torch.Tensor:
    """The separable 2-D kernel g g^T, float64 (2 radius + 1, 2 radius + 1), sums to 1."""
    g = gaussian_kernel1d(std, radius)
    return torch.outer(g, g)


def separable_filter(x: torch.Tensor, g: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Correlate every channel of x (B, C, H, W) with g along H, then along W.

    g: (2r + 1,) symmetric 1-D kernel. padding: "zeros" or "reflect" (reflect preserves
    constants, needs r < H and r < W). Output: (B, C, H, W), same space as x.
    """
    c, r = x.shape[1], (g.numel() - 1) // 2
    g = g.to(device=x.device, dtype=x.dtype)
    if padding == "reflect":
        x, pad = F.pad(x, (r, r, r, r), mode="reflect"), 0
    elif padding == "zeros":
        pad = r
    else:
        raise ValueError(f"padding = {padding!r}: use 'zeros' or 'reflect'")
    weight_h = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    weight_w = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    x = F.conv2d(x, weight_h, padding=(pad, 0), groups=c)
    return F.conv2d(x, weight_w, padding=(0, pad), groups=c)


def circular_psf(kernel: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A centred kernel (kh, kw) wrapped onto an (h, w) torus with its centre at pixel (0, 0).

    Entries that land on the same pixel (kernel larger than the image) add up.
    """
    kh, kw = kernel.shape
    rows = (torch.arange(kh) - kh // 2) % h
    cols = (torch.arange(kw) - kw // 2) % w
    psf = torch.zeros(h, w, dtype=kernel.dtype)
    psf.index_put_((rows[:, None], cols[None, :]), kernel, accumulate=True)
    return psf


def transfer_function(
    kernel: torch.Tensor, h: int, w: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """rfft2 of the wrapped kernel: the eigenvalues K of circular convolution, (h, w // 2 + 1)."""
    spectrum = torch.fft.rfft2(circular_psf(kernel.double(), h, w))
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    return spectrum.to(device=device, dtype=complex_dtype)


def apply_spectrum(x: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
    """irfft2(rfft2(x) * spectrum): a circular, real-valued filter. x: (B, C, H, W)."""
    h, w = x.shape[-2:]
    return torch.fft.irfft2(torch.fft.rfft2(x) * spectrum, s=(h, w))
