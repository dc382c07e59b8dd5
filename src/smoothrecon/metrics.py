"""Image-quality metrics (appendix A.5), per image, on pixel-space images in [0, 1].

Each function returns one value per image, shape (B,); sets are averaged by the caller (mean over
images of the per-image values). The data range is 1.

SSIM follows Wang et al. with a Gaussian window (11x11, sigma 1.5, truncated at 3.5 sigma),
K1 = 0.01, K2 = 0.03, population covariances, computed per channel on the "valid" region (the
window fully inside the image) and averaged over channels: equal to scikit-image's
`structural_similarity(..., channel_axis, data_range=1, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)`, which pads and then crops exactly that border.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check(x_hat: torch.Tensor, x: torch.Tensor) -> None:
    if x_hat.shape != x.shape or x.dim() != 4:
        raise ValueError(
            f"metrics need two (B, C, H, W) tensors of one shape, got "
            f"{tuple(x_hat.shape)} and {tuple(x.shape)}"
        )


def mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error, eq A.16: (B, C, H, W) x 2 -> (B,)."""
    _check(x_hat, x)
    return (x_hat.float() - x.float()).pow(2).flatten(1).mean(1)


def psnr(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, eq A.17: 10 log10(data_range^2 / MSE) -> (B,)."""
    return psnr_from_mse(mse(x_hat, x), data_range)


def psnr_from_mse(err: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB of per-image MSEs (B,): 10 log10(data_range^2 / max(MSE, 1e-20)), in the
    MSE's dtype. The one PSNR formula of the project."""
    err = err.clamp_min(1e-20)
    return 10.0 * torch.log10(torch.as_tensor(data_range**2, dtype=err.dtype) / err)


def _gaussian_1d(sigma: float, truncate: float, dtype: torch.dtype, device) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def ssim(
    x_hat: torch.Tensor,
    x: torch.Tensor,
    data_range: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Per-image SSIM, eq A.18 with local Gaussian statistics -> (B,), channel mean; computed
    in `dtype` (float64 for the reported metric; the SSIM attack's loss runs in float32, 2x
    faster on CPU, within 1e-5 of it)."""
    _check(x_hat, x)
    a, b = x_hat.to(dtype), x.to(dtype)
    c = a.shape[1]
    g = _gaussian_1d(sigma, 3.5, a.dtype, a.device)
    if a.shape[-1] < g.numel() or a.shape[-2] < g.numel():
        raise ValueError(f"SSIM needs images of at least {g.numel()}x{g.numel()} pixels")
    wy = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    wx = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, wy, groups=c), wx, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return s.flatten(2).mean(2).mean(1).to(x.dtype if x.is_floating_point() else torch.float32)


def all_metrics(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """{'mse', 'psnr', 'ssim'} per image, each (B,)."""
    return {"mse": mse(x_hat, x), "psnr": psnr(x_hat, x), "ssim": ssim(x_hat, x)}


def mean_and_ci(values: list[float], z: float = 1.96) -> tuple[float, float, float]:
    """Mean, standard error and 95% CI half-width (normal approximation) over images."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    m = sum(values) / n
    if n == 1:
        return m, float("nan"), float("nan")
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    se = math.sqrt(var / n)
    return m, se, z * se
