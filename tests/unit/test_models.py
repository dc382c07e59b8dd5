"""The U-Net (shapes, size, options) and the interpolation baselines."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smoothrecon.models import Interpolation, UNet, parameter_count
from smoothrecon.operators import SuperResolution


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("h", "w"), [(32, 48), (48, 16)])
def test_unet_output_shape_equals_input_shape(h: int, w: int) -> None:
    model = UNet().eval()
    with torch.no_grad():
        out = model(_randn(2, 3, h, w))
    assert out.shape == (2, 3, h, w)
    assert torch.isfinite(out).all()


def test_unet_other_channels() -> None:
    model = UNet(in_channels=1, out_channels=2, channels=(4, 8, 16)).eval()
    assert model.divisor == 4
    with torch.no_grad():
        assert model(_randn(1, 1, 12, 20)).shape == (1, 2, 12, 20)


def _expected_parameter_count(c_in: int, c_out: int, channels: tuple[int, ...]) -> int:
    """Sum of the layer formulas of section 4.2.1's U-Net."""

    def conv3x3(a: int, b: int) -> int:
        return 9 * a * b  # no bias

    def bn(c: int) -> int:
        return 2 * c

    def double(a: int, b: int) -> int:
        return conv3x3(a, b) + bn(b) + conv3x3(b, b) + bn(b)

    widths = [c_in, *channels]
    total = sum(double(widths[i], widths[i + 1]) for i in range(len(channels)))  # down + bottom
    for i in range(len(channels) - 1):
        total += 4 * channels[i + 1] * channels[i] + channels[i]  # ConvTranspose2d(., ., 2)
        total += double(2 * channels[i], channels[i])
    return total + channels[0] * c_out + c_out  # 1x1 head


def test_unet_parameter_count() -> None:
    assert _expected_parameter_count(3, 3, (8, 16, 32, 64, 128)) == 486571
    assert parameter_count(UNet()) == 486571
    assert parameter_count(UNet(1, 2, (4, 8, 16))) == _expected_parameter_count(1, 2, (4, 8, 16))


@pytest.mark.parametrize(("h", "w"), [(40, 48), (48, 40), (37, 52)])
def test_unet_size_not_divisible_by_16_raises(h: int, w: int) -> None:
    with pytest.raises(ValueError, match="16") as info:
        UNet()(torch.zeros(1, 3, h, w))
    message = str(info.value)
    assert f"{h}x{w}" in message
    # it suggests valid sizes: the multiples of 16 just below or above a bad dimension
    suggested = [
        tuple(int(v) for v in size.split("x"))
        for size in message.split("(e.g.")[1].strip(" )").split(" or ")
    ]
    assert len(suggested) == 2
    for sh, sw in suggested:
        for n, s in ((h, sh), (w, sw)):
            assert s % 16 == 0 and abs(s - n) < 16, (suggested, h, w)


def test_residual_with_zero_head_is_the_identity() -> None:
    y = _randn(2, 3, 16, 32)
    for residual, expected in ((True, y), (False, torch.zeros_like(y))):
        model = UNet(residual=residual).eval()
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.zero_()
            assert torch.equal(model(y), expected)
    with pytest.raises(ValueError):
        UNet(in_channels=3, out_channels=1, residual=True)


def test_leaky_relu_option() -> None:
    model = UNet(activation="leaky_relu").eval()
    kinds = {type(m) for m in model.modules()}
    assert nn.LeakyReLU in kinds and nn.ReLU not in kinds
    assert nn.ReLU in {type(m) for m in UNet().modules()}
    with torch.no_grad():
        assert model(_randn(1, 3, 16, 32)).shape == (1, 3, 16, 32)
    with pytest.raises(ValueError):
        UNet(activation="gelu")


def test_bilinear_baseline_is_the_identity() -> None:
    y = _randn(2, 3, 10, 14)
    assert torch.equal(Interpolation("bilinear", 2)(y), y)


@pytest.mark.parametrize("factor", [2, 4])
def test_bicubic_baseline_is_linear_and_preserves_constants(factor: int) -> None:
    f = Interpolation("bicubic", factor)
    a, b = _randn(2, 3, 12, 20, seed=1).double(), _randn(2, 3, 12, 20, seed=2).double()
    assert f(a).shape == a.shape
    assert torch.allclose(f(0.3 * a - 1.7 * b), 0.3 * f(a) - 1.7 * f(b), atol=1e-10)
    constant = torch.full((1, 3, 12, 20), -0.42, dtype=torch.float64)
    assert torch.allclose(f(constant), constant, atol=1e-12)
    assert not torch.allclose(f(a), a, atol=1e-3)  # it does resample
    # the same as the operator's own downsampling followed by bicubic upsampling
    op = SuperResolution(factor)
    assert torch.allclose(f(a), op.upsample(op.downsample(a), (12, 20), mode="bicubic"))


def test_unknown_baseline_raises() -> None:
    with pytest.raises(ValueError):
        Interpolation("nearest", 2)
