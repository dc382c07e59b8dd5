"""SuperResolution: shapes, linearity, adjointness, a hand-computed example, PIL, quantization,
and the operator interface (A = D, A_dagger = U) with numbers identical to the old operator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from smoothrecon.config import OperatorConfig
from smoothrecon.operators import SuperResolution, build_operator, make_operator


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize(("factor", "h", "w"), [(2, 12, 20), (4, 12, 20), (3, 9, 15), (2, 6, 4)])
def test_shapes(factor: int, h: int, w: int) -> None:
    op = SuperResolution(factor)
    x = _rand(2, 3, h, w)
    assert op.downsample(x).shape == (2, 3, h // factor, w // factor)
    assert op(x).shape == (2, 3, h, w)
    assert op.adjoint(x).shape == (2, 3, h, w)


@pytest.mark.parametrize("factor", [2, 4])
def test_linearity(factor: int) -> None:
    op = SuperResolution(factor)
    x, z = _rand(2, 3, 8, 12, seed=1), _rand(2, 3, 8, 12, seed=2) - 0.5
    a, b = 0.7, -2.3
    assert torch.allclose(op(a * x + b * z), a * op(x) + b * op(z), atol=1e-12)


@pytest.mark.parametrize(("factor", "h", "w"), [(2, 8, 12), (4, 12, 8), (3, 9, 15)])
def test_adjointness(factor: int, h: int, w: int) -> None:
    op = SuperResolution(factor)
    x, v = _rand(2, 3, h, w, seed=3) - 0.5, _rand(2, 3, h, w, seed=4) - 0.5
    lhs = (op(x) * v).sum()
    rhs = (x * op.adjoint(v)).sum()
    assert abs(lhs - rhs) <= 1e-6 * abs(lhs)


def _matrix_of(op: SuperResolution, h: int, w: int) -> torch.Tensor:
    """The (h*w, h*w) matrix of a single-channel linear operator, column j = op(basis_j)."""
    basis = torch.eye(h * w, dtype=torch.float64).view(h * w, 1, h, w)
    return op(basis).view(h * w, h * w).T


def test_adjoint_is_the_transposed_matrix() -> None:
    op = SuperResolution(2)
    h, w = 4, 6
    m = _matrix_of(op, h, w)
    v = _rand(1, 1, h, w, seed=5)
    expected = (m.T @ v.flatten()).view(1, 1, h, w)
    assert torch.allclose(op.adjoint(v), expected, atol=1e-12)
    # A is not symmetric on a non-square image, so the test tells A^T from A
    assert not torch.allclose(m, m.T)


# Factor 2 on 4 pixels, by hand. Downsampling (antialiased, PIL-style): output pixel i is centred
# at input coordinate c = 2 (i + 1/2); the triangle filter stretched by 2 gives input pixel j
# weight 1 - |j + 1/2 - c| / 2, i.e. (1/4, 3/4, 3/4, 1/4) around c; the weight falling outside
# the image is dropped and the rest renormalized: rows (3, 3, 1, 0) / 7 and (0, 1, 3, 3) / 7.
# Upsampling (bilinear, half-pixel centres): output i samples input coordinate (i + 1/2)/2 - 1/2
# = -1/4, 1/4, 3/4, 5/4, clamped at the border: rows (1, 0), (3/4, 1/4), (1/4, 3/4), (0, 1).
DOWN_2 = np.array([[3, 3, 1, 0], [0, 1, 3, 3]]) / 7
UP_2 = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])


def test_hand_computed_4x4_factor_2() -> None:
    m = UP_2 @ DOWN_2  # A acts separably: y = M x M^T
    x = np.arange(16, dtype=np.float64).reshape(4, 4) / 15
    expected = m @ x @ m.T
    got = SuperResolution(2)(torch.from_numpy(x).view(1, 1, 4, 4))[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-7)
    # a ramp along the width, worked through to the end by hand: the two low-resolution pixels
    # are (0*3 + 1*3 + 2*1) / 21 = 5/21 and (1*1 + 2*3 + 3*3) / 21 = 16/21
    ramp = np.tile(np.arange(4.0) / 3, (4, 1))
    row = np.array([5, 0.75 * 5 + 0.25 * 16, 0.25 * 5 + 0.75 * 16, 16]) / 21
    got = SuperResolution(2)(torch.from_numpy(ramp).view(1, 1, 4, 4))[0, 0].numpy()
    np.testing.assert_allclose(got, np.tile(row, (4, 1)), atol=1e-7)


def _pil_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """One channel float32 image resized by PIL's bilinear filter (antialiased when reducing)."""
    return np.asarray(Image.fromarray(img.astype(np.float32)).resize((w, h), Image.BILINEAR))


@pytest.mark.parametrize(("factor", "h", "w"), [(2, 12, 20), (4, 12, 20), (3, 9, 15)])
def test_matches_pil_bilinear(factor: int, h: int, w: int) -> None:
    x = _rand(3, h, w, seed=6, dtype=torch.float32)
    op = SuperResolution(factor)
    lr = op.downsample(x[None])[0].numpy()
    y = op(x[None])[0].numpy()
    for c in range(3):
        lr_pil = _pil_resize(x[c].numpy(), h // factor, w // factor)
        np.testing.assert_allclose(lr[c], lr_pil, atol=1e-5)
        np.testing.assert_allclose(y[c], _pil_resize(lr_pil, h, w), atol=1e-5)


def test_constants_are_preserved() -> None:
    x = torch.full((1, 3, 8, 12), 0.3, dtype=torch.float64)
    assert torch.allclose(SuperResolution(4)(x), x, atol=1e-12)


def test_quantize_gives_8_bit_values_and_no_adjoint() -> None:
    op = SuperResolution(2, quantize=True)
    x = _rand(2, 3, 8, 12, seed=7, dtype=torch.float32)
    for t in (op.downsample(x), op(x)):
        scaled = t * 255
        assert torch.allclose(scaled, scaled.round(), atol=1e-3)
        assert t.min() >= 0 and t.max() <= 1
    assert not torch.allclose(op(x), SuperResolution(2)(x), atol=1e-6)
    assert torch.allclose(op(x), SuperResolution(2)(x), atol=1.5 / 255)
    with pytest.raises(ValueError):
        op.adjoint(x)


@pytest.mark.parametrize(("factor", "h", "w"), [(2, 7, 8), (2, 8, 7), (4, 8, 10), (3, 9, 10)])
def test_size_not_divisible_raises(factor: int, h: int, w: int) -> None:
    with pytest.raises(ValueError, match=str(factor)):
        SuperResolution(factor)(torch.zeros(1, 3, h, w))


@pytest.mark.parametrize("factor", [0, -2, 2.5])
def test_bad_factor_raises(factor) -> None:
    with pytest.raises(ValueError):
        SuperResolution(factor)


def test_build_operator() -> None:
    op = build_operator("super_resolution", 4, quantize=True)
    assert op.describe() == {"name": "super_resolution", "factor": 4, "quantize": True}
    with pytest.raises(ValueError):
        build_operator("deblur", 2)


# The operator interface on super-resolution: A = D, A_dagger = U, op(x) = U(D(x)) unchanged.


def _old_sr(x: torch.Tensor, factor: int) -> torch.Tensor:
    """The pre-interface SuperResolution.__call__, written out with F.interpolate."""
    h, w = x.shape[-2:]
    lr = F.interpolate(
        x, size=(h // factor, w // factor), mode="bilinear", antialias=True, align_corners=False
    )
    return F.interpolate(lr, size=(h, w), mode="bilinear", align_corners=False)


@pytest.mark.parametrize(("factor", "h", "w"), [(2, 12, 20), (4, 16, 12), (3, 9, 15)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_network_input_bit_identical_to_old_implementation(
    factor: int, h: int, w: int, dtype: torch.dtype
) -> None:
    op = SuperResolution(factor)
    x = _rand(2, 3, h, w, seed=8, dtype=dtype)
    assert torch.equal(op(x), _old_sr(x, factor))
    assert torch.equal(op.A_dagger(op.A(x)), _old_sr(x, factor))
    assert torch.equal(op.measure(x, None), op.downsample(x))


def test_a_is_downsampling_and_a_dagger_upsampling() -> None:
    op = SuperResolution(2)
    x = _rand(1, 3, 10, 14, seed=9)
    lr = op.A(x)
    assert lr.shape == (1, 3, 5, 7)
    assert torch.equal(lr, op.downsample(x))
    assert torch.equal(op.A_dagger(lr), op.upsample(lr, (10, 14)))


@pytest.mark.parametrize(("factor", "h", "w"), [(2, 10, 14), (3, 9, 15)])
def test_a_adjoint_is_the_adjoint_of_downsampling(factor: int, h: int, w: int) -> None:
    op = SuperResolution(factor)
    x = _rand(2, 3, h, w, seed=10) - 0.5
    v = _rand(2, 3, h // factor, w // factor, seed=11) - 0.5
    lhs, rhs = (op.A(x) * v).sum(), (x * op.A_adjoint(v)).sum()
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


def test_a_adjoint_matches_the_hand_computed_matrix() -> None:
    down = torch.from_numpy(DOWN_2)  # D acts separably: D(x) = M x M^T, so D^T(v) = M^T v M
    v = _rand(1, 1, 2, 2, seed=13)
    assert torch.allclose(SuperResolution(2).A_adjoint(v)[0, 0], down.T @ v[0, 0] @ down)


def test_noisy_measurement_and_config_path() -> None:
    op = build_operator(OperatorConfig(factor=2, sigma_y=0.1))
    assert isinstance(op, SuperResolution)
    assert op.describe() == {
        "name": "super_resolution",
        "factor": 2,
        "quantize": False,
        "sigma_y": 0.1,
    }
    x = _rand(1, 3, 8, 12, seed=14)
    noisy = op(x, torch.Generator().manual_seed(0))
    assert noisy.shape == x.shape
    assert not torch.allclose(noisy, op(x))
    assert build_operator(OperatorConfig(factor=4)).describe() == SuperResolution(4).describe()


def test_legacy_build_operator_refuses_other_operators() -> None:
    with pytest.raises(ValueError, match="denoising"):
        build_operator("deblurring", 2)


def test_noiseless_super_resolution_ignores_the_noise_generator() -> None:
    """Training and evaluation pass a generator for noisy operators; super-resolution
    (sigma_y 0) gives the same pairs and leaves the generator's stream untouched, so the SR
    runs of before the operator pipeline are reproduced exactly."""
    from smoothrecon.evaluation.inputs import pairs
    from smoothrecon.models.normalization import Normalization
    from smoothrecon.util.runtime import Runtime

    runtime = Runtime(torch.device("cpu"), "fp32", False)
    norm = Normalization((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    x = (_rand(3, 3, 12, 16, seed=4) * 255).to(torch.uint8)
    gen = torch.Generator().manual_seed(11)
    with_gen = pairs(runtime, x, SuperResolution(2), norm, gen)
    without = pairs(runtime, x, SuperResolution(2), norm)
    assert all(torch.equal(a, b) for a, b in zip(with_gen, without, strict=True))
    assert torch.equal(
        torch.rand(4, generator=gen), torch.rand(4, generator=torch.Generator().manual_seed(11))
    )
    noisy = pairs(runtime, x, make_operator("denoising", sigma_y=0.1), norm, gen)
    assert not torch.equal(noisy[0], norm.normalize(x.float() / 255))  # noise was drawn
