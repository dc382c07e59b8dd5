"""mse, psnr and ssim against scikit-image, per image, on odd non-square sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage import filters
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from smoothrecon.metrics import mse, psnr, ssim

TOL = 1e-4


def _sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(
        a,
        b,
        channel_axis=2,
        data_range=1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )


def _to_hwc(t: torch.Tensor) -> np.ndarray:
    """(C, H, W) torch -> (H, W, C) float64 numpy."""
    return t.permute(1, 2, 0).double().numpy()


def _to_batch(images: list[np.ndarray]) -> torch.Tensor:
    """list of (H, W, C) arrays -> (B, C, H, W) float32 tensor."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().contiguous()


def _assert_matches_skimage(x_hat: torch.Tensor, x: torch.Tensor) -> None:
    b = x.shape[0]
    got_mse, got_psnr, got_ssim = mse(x_hat, x), psnr(x_hat, x), ssim(x_hat, x)
    for name, got in (("mse", got_mse), ("psnr", got_psnr), ("ssim", got_ssim)):
        assert got.shape == (b,), name
    for i in range(b):
        a, t = _to_hwc(x_hat[i]), _to_hwc(x[i])
        assert got_mse[i].item() == pytest.approx(mean_squared_error(t, a), abs=1e-6)
        assert got_psnr[i].item() == pytest.approx(
            peak_signal_noise_ratio(t, a, data_range=1), abs=TOL
        )
        assert got_ssim[i].item() == pytest.approx(_sk_ssim(a, t), abs=TOL)


@pytest.mark.parametrize(("h", "w"), [(37, 52), (52, 37), (11, 19), (29, 41)])
def test_random_images_match_skimage(h: int, w: int) -> None:
    gen = torch.Generator().manual_seed(h * 100 + w)
    x = torch.rand(3, 3, h, w, generator=gen)
    # one unrelated image, one mildly noisy, one strongly noisy: SSIM from ~0 to ~1
    noise = torch.randn(3, 3, h, w, generator=gen) * torch.tensor([0.0, 0.02, 0.3]).view(3, 1, 1, 1)
    x_hat = (x + noise).clamp(0, 1)
    x_hat[0] = torch.rand(3, h, w, generator=gen)
    _assert_matches_skimage(x_hat, x)


def _crop(img: np.ndarray, top: int, left: int, h: int, w: int) -> np.ndarray:
    return img[top : top + h, left : left + w].astype(np.float64) / 255.0


@pytest.mark.parametrize(("h", "w"), [(37, 52), (41, 29)])
def test_real_photos_noisy_and_blurred_match_skimage(h: int, w: int) -> None:
    rng = np.random.default_rng(0)
    crops = [
        _crop(skdata.astronaut(), 180, 200, h, w),
        _crop(skdata.chelsea(), 100, 150, h, w),
        _crop(skdata.coffee(), 150, 250, h, w),
    ]
    noisy = [np.clip(c + rng.normal(0, 0.05, c.shape), 0, 1) for c in crops]
    blurred = [filters.gaussian(c, sigma=1.2, channel_axis=2) for c in crops]
    x = _to_batch(crops + crops)
    x_hat = _to_batch(noisy + blurred)
    _assert_matches_skimage(x_hat, x)
    # the metrics see real structure: a blur and mild noise keep SSIM well above 0
    assert (ssim(x_hat, x) > 0.3).all()


def test_identical_images() -> None:
    x = torch.rand(2, 3, 13, 17, generator=torch.Generator().manual_seed(1))
    assert torch.equal(mse(x, x), torch.zeros(2))
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    assert (psnr(x, x) > 100).all() and torch.isfinite(psnr(x, x)).all()


def test_per_image_values_do_not_mix_across_the_batch() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(4, 3, 15, 22, generator=gen)
    x_hat = (x + 0.1 * torch.randn(4, 3, 15, 22, generator=gen)).clamp(0, 1)
    for metric in (mse, psnr, ssim):
        batched = metric(x_hat, x)
        single = torch.cat([metric(x_hat[i : i + 1], x[i : i + 1]) for i in range(4)])
        assert torch.allclose(batched, single, atol=1e-6), metric.__name__


def test_psnr_data_range_and_closed_form() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 12, 9, generator=gen)
    x_hat = x + 0.1  # MSE exactly 0.01 -> PSNR exactly 20 dB
    assert torch.allclose(psnr(x_hat, x), torch.full((2,), 20.0), atol=1e-4)
    assert torch.allclose(psnr(255 * x_hat, 255 * x, data_range=255.0), psnr(x_hat, x), atol=1e-4)


def test_ssim_is_symmetric() -> None:
    gen = torch.Generator().manual_seed(4)
    a, b = torch.rand(2, 3, 14, 19, generator=gen), torch.rand(2, 3, 14, 19, generator=gen)
    assert torch.allclose(ssim(a, b), ssim(b, a), atol=1e-7)


@pytest.mark.parametrize("metric", [mse, psnr, ssim])
@pytest.mark.parametrize(
    ("shape_hat", "shape"),
    [
        ((1, 3, 16, 16), (1, 3, 16, 17)),
        ((2, 3, 16, 16), (1, 3, 16, 16)),
        ((3, 16, 16), (3, 16, 16)),
        ((1, 1, 3, 16, 16), (1, 1, 3, 16, 16)),
    ],
)
def test_bad_shapes_raise(metric, shape_hat: tuple, shape: tuple) -> None:
    with pytest.raises(ValueError):
        metric(torch.zeros(shape_hat), torch.zeros(shape))


def test_ssim_needs_a_full_window() -> None:
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(1, 3, 10, 20), torch.zeros(1, 3, 10, 20))


def test_ssim_in_float32_agrees_with_float64() -> None:
    """The SSIM attack's loss computes SSIM in float32 (attacks.pgd.ssim_loss): within 1e-5 of
    the reported float64 metric, on images near each other (where SSIM is steep) and apart."""
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(4, 3, 24, 29, generator=gen)
    for noise in (0.01, 0.3):
        x_hat = (x + noise * torch.randn(x.shape, generator=gen)).clamp(0, 1)
        assert torch.allclose(ssim(x_hat, x, dtype=torch.float32).double(),
                              ssim(x_hat, x).double(), atol=1e-5)  # fmt: skip
