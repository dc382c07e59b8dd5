"""Every operator: adjointness, closed forms, seeded masks, back-projection, noise, config, and the
no-learning baselines. References are scipy.ndimage, numpy.fft and dense linear algebra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import torch

from smoothrecon.config import BASELINES, OperatorConfig, load_config
from smoothrecon.errors import UserError
from smoothrecon.models.baselines import make_baseline
from smoothrecon.operators import (
    OPERATORS,
    CompressedSensing,
    Deblurring,
    Inpainting,
    Operator,
    build_operator,
    make_operator,
)
from smoothrecon.operators.compressed_sensing import line_mask
from smoothrecon.operators.inpainting import normalized_convolution, pixel_mask

SHAPE = (2, 3, 10, 14)  # even for super-resolution x2, non-square
ODD_SHAPE = (2, 3, 9, 13)


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _smooth_image(c: int, h: int, w: int) -> torch.Tensor:
    """A photo-like test image in [0, 1]: slow waves per channel plus a vertical edge."""
    i = torch.arange(h, dtype=torch.float64).view(h, 1)
    j = torch.arange(w, dtype=torch.float64).view(1, w)
    chans = [0.5 + 0.2 * torch.sin(i / 5 + k) * torch.cos(j / 7 - k) for k in range(c)]
    x = torch.stack(chans)
    x[:, :, w // 2 :] += 0.2
    return x.clamp(0, 1).unsqueeze(0)


def _all_operators() -> list[Operator]:
    ops = [make_operator(name) for name in OPERATORS if name != "super_resolution"]
    rng = np.random.default_rng(0)
    return [
        make_operator("super_resolution", factor=2),
        *ops,
        CompressedSensing(grayscale=True),
        CompressedSensing(acceleration=2.5, center_fraction=0.2, mask_seed=3),
        Deblurring(kernel=torch.from_numpy(rng.random((3, 5)))),  # not symmetric: A != A^T
        Inpainting(keep_fraction=0.3, mask_seed=5),
    ]


OPS = _all_operators()
IDS = [f"{op.name}-{i}" for i, op in enumerate(OPS)]


@pytest.mark.parametrize("op", OPS, ids=IDS)
@pytest.mark.parametrize("shape", [SHAPE, ODD_SHAPE], ids=["even", "odd"])
def test_adjointness(op: Operator, shape: tuple[int, ...]) -> None:
    if op.name == "super_resolution" and shape == ODD_SHAPE:
        shape = (2, 3, 9, 15)
        op = make_operator("super_resolution", factor=3)
    x = _rand(*shape, seed=1) - 0.5
    y = op.A(x)
    v = _randn(*y.shape, seed=2)
    lhs, rhs = (y * v).sum(), (x * op.A_adjoint(v)).sum()
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)
    assert op(x).shape == x.shape
    assert op.A_dagger(y).shape == x.shape


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_linearity(op: Operator) -> None:
    x, z = _rand(*SHAPE, seed=3), _rand(*SHAPE, seed=4)
    assert torch.allclose(op.A(0.3 * x - 1.7 * z), 0.3 * op.A(x) - 1.7 * op.A(z), atol=1e-12)


# --- deblurring ---------------------------------------------------------------------------


def test_delta_through_the_blur_is_the_sampled_gaussian() -> None:
    std, h, w = 1.5, 15, 17
    x = torch.zeros(1, 1, h, w, dtype=torch.float64)
    x[0, 0, 7, 8] = 1.0
    i, j = np.meshgrid(np.arange(h) - 7, np.arange(w) - 8, indexing="ij")
    r = math.ceil(3 * std)
    g = np.exp(-(i**2 + j**2) / (2 * std**2)) * (np.abs(i) <= r) * (np.abs(j) <= r)
    got = Deblurring(blur_std=std).A(x)[0, 0].numpy()
    np.testing.assert_allclose(got, g / g.sum(), atol=1e-12)


def test_blur_is_circular_convolution_as_in_scipy() -> None:
    kernel = np.random.default_rng(1).random((3, 5))
    x = _rand(1, 1, 9, 13, seed=5)
    expected = scipy.ndimage.convolve(x[0, 0].numpy(), kernel, mode="wrap")
    got = Deblurring(kernel=torch.from_numpy(kernel)).A(x)[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


def _circular_laplacian(h: int, w: int) -> np.ndarray:
    """The (hw, hw) matrix of the 5-point Laplacian with periodic boundary, built by hand."""
    n = h * w
    lap = np.zeros((n, n))
    for p in range(h):
        for q in range(w):
            row = p * w + q
            lap[row, row] = -4
            for dp, dq in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                lap[row, ((p + dp) % h) * w + (q + dq) % w] += 1
    return lap


def test_wiener_is_the_tikhonov_solution() -> None:
    h, w, reg = 5, 7, 0.05
    op = Deblurring(blur_std=1.0, reg=reg)
    basis = torch.eye(h * w, dtype=torch.float64).view(h * w, 1, h, w)
    a = op.A(basis).view(h * w, h * w).numpy().T
    lap = _circular_laplacian(h, w)
    y = _rand(1, 1, h, w, seed=6)
    expected = np.linalg.solve(a.T @ a + reg * lap.T @ lap, a.T @ y.flatten().numpy())
    np.testing.assert_allclose(op.A_dagger(y).flatten().numpy(), expected, atol=1e-10)


def test_wiener_inverts_without_noise_and_keeps_constants() -> None:
    x = _smooth_image(3, 12, 16)
    op = Deblurring(blur_std=0.7, reg=1e-14)  # |K| >= 8e-3: invertible in float64
    assert torch.allclose(op.A_dagger(op.A(x)), x, atol=1e-9)
    constant = torch.full((1, 3, 9, 13), 0.3, dtype=torch.float64)
    assert torch.allclose(Deblurring().A_dagger(constant), constant, atol=1e-12)


# --- inpainting ---------------------------------------------------------------------------


def test_mask_is_reproduced_and_exact_in_count() -> None:
    m = pixel_mask(9, 13, 0.3, seed=4)
    assert torch.equal(m, pixel_mask(9, 13, 0.3, seed=4))
    assert not torch.equal(m, pixel_mask(9, 13, 0.3, seed=5))
    assert m.shape == (1, 1, 9, 13) and int(m.sum()) == round(0.3 * 9 * 13)
    assert set(m.unique().tolist()) == {0.0, 1.0}
    op = Inpainting(keep_fraction=0.3, mask_seed=4)
    x = _rand(2, 3, 9, 13, seed=7)
    assert torch.equal(op.A(x), x * m)  # every image and channel sees the same mask
    assert op.measurement_count((3, 9, 13)) == 3 * int(m.sum())


def test_fill_keeps_measured_pixels_and_interpolates_the_rest() -> None:
    op = Inpainting(keep_fraction=0.5)
    x = _rand(2, 3, 10, 14, seed=8)
    m = op.mask(10, 14, x)
    x_hat = op(x)
    assert torch.equal(x_hat * m, x * m)
    assert torch.allclose(op.A_dagger(op.A(torch.full_like(x, 0.7))), torch.full_like(x, 0.7))
    # two kept pixels at equal distance from a missing one: it gets their mean
    mask = torch.zeros(1, 1, 1, 3, dtype=torch.float64)
    mask[..., 0] = mask[..., 2] = 1
    v = torch.tensor([[[[0.2, 0.0, 0.6]]]], dtype=torch.float64)
    assert torch.allclose(normalized_convolution(v, mask), torch.tensor([0.2, 0.4, 0.6]).double())


# --- compressed sensing -------------------------------------------------------------------


def test_line_mask_density_and_reproducibility() -> None:
    lines = line_mask(96, 4.0, 0.08, seed=0)
    assert lines.numel() == 24 and lines.unique().numel() == 24
    freq = torch.fft.fftfreq(96, d=1 / 96).abs()
    assert set(torch.nonzero(freq <= 3).flatten().tolist()) <= set(lines.tolist())  # the centre
    assert torch.equal(lines, line_mask(96, 4.0, 0.08, seed=0))
    assert not torch.equal(lines, line_mask(96, 4.0, 0.08, seed=1))
    assert torch.equal(line_mask(13, 1.0, 0.08, seed=0), torch.arange(13))


def test_measurements_are_the_masked_fft() -> None:
    op = CompressedSensing(mask_seed=2)
    x = _rand(2, 3, 9, 13, seed=9)
    k = np.fft.fft2(x.numpy(), norm="ortho")
    cols = op.lines(13).numpy()
    y = torch.view_as_complex(op.A(x).contiguous()).numpy()
    np.testing.assert_allclose(y[..., cols], k[..., cols], atol=1e-12)
    others = np.setdiff1d(np.arange(13), cols)
    assert np.all(y[..., others] == 0)
    assert op.measurement_count((3, 9, 13)) == 3 * 9 * len(cols) * 2


def test_full_mask_gives_identity_and_gray_replication() -> None:
    x = _rand(2, 3, 9, 13, seed=10)
    assert torch.allclose(CompressedSensing(acceleration=1.0)(x), x, atol=1e-12)
    gray = x[:, :1].expand(-1, 3, -1, -1)
    op = CompressedSensing(acceleration=1.0, grayscale=True)
    assert op.A(gray).shape == (2, 1, 9, 13, 2)
    assert torch.allclose(op(gray), gray, atol=1e-12)
    assert not torch.allclose(CompressedSensing()(x), x, atol=1e-3)  # 4x loses information


# --- measurement noise --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPERATORS))
def test_measure_is_seeded_and_has_std_sigma_y(name: str) -> None:
    params = {"factor": 2} if name == "super_resolution" else {}
    op = make_operator(name, sigma_y=0.1, **params)
    x = _rand(2, 3, 40, 56, seed=11)
    y1 = op.measure(x, torch.Generator().manual_seed(0))
    assert torch.equal(y1, op.measure(x, torch.Generator().manual_seed(0)))
    assert not torch.equal(y1, op.measure(x, torch.Generator().manual_seed(1)))
    assert torch.equal(op.measure(x, None), op.A(x))
    noise = y1 - op.A(x)
    measured = noise[op.restrict_noise(torch.ones_like(noise)) != 0]
    assert torch.all(noise[op.restrict_noise(torch.ones_like(noise)) == 0] == 0)
    assert measured.numel() == 2 * op.measurement_count((3, 40, 56))
    assert abs(measured.std().item() - 0.1) < 0.005
    g = torch.Generator().manual_seed(0)
    assert torch.equal(op(x, torch.Generator().manual_seed(0)), op.A_dagger(op.measure(x, g)))


def test_denoising_back_projection_is_the_measurement() -> None:
    op = make_operator("denoising", sigma_y=0.0)
    x = _rand(*ODD_SHAPE, seed=12)
    assert torch.equal(op(x), x) and torch.equal(op(x, torch.Generator()), x)
    assert make_operator("denoising").sigma_y == 0.1


# --- construction -------------------------------------------------------------------------


def test_make_operator_errors() -> None:
    with pytest.raises(ValueError, match="compressed_sensing"):
        make_operator("mri")
    with pytest.raises(ValueError, match="factor"):
        make_operator("denoising", factor=2)
    with pytest.raises(ValueError):
        make_operator("inpainting", keep_fraction=0.0)
    with pytest.raises(ValueError):
        make_operator("deblurring", sigma_y=-0.1)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_build_operator_from_config(name: str) -> None:
    op = build_operator(OperatorConfig(name=name))  # type: ignore[arg-type]
    assert op.name == name and op.describe()["name"] == name
    assert (
        op.sigma_y
        == make_operator(name, **({"factor": 2} if op.name == "super_resolution" else {})).sigma_y
    )
    explicit = build_operator(OperatorConfig(name=name, sigma_y=0.05, mask_seed=3))  # type: ignore[arg-type]
    assert explicit.sigma_y == 0.05


def test_config_overrides_and_checks() -> None:
    cfg = load_config("smoke", overrides=["operator.name=inpainting", "operator.keep_fraction=0.3"])
    op = build_operator(cfg.operator)
    assert isinstance(op, Inpainting) and op.keep_fraction == 0.3
    with pytest.raises(UserError, match="parameter of super_resolution, not of inpainting"):
        load_config("smoke", overrides=["operator.name=inpainting", "operator.factor=5"])
    assert load_config("smoke", overrides=["operator.sigma_y=0.2"]).operator.sigma_y == 0.2
    for bad in ("operator.sigma_y=-1", "operator.sigma_y=loud", "operator.keep_fraction=1.5"):
        with pytest.raises(UserError, match="operator"):
            load_config("smoke", overrides=[bad])
    with pytest.raises(UserError, match=r"operator\.name"):
        load_config("smoke", overrides=["operator.name=mri"])


# --- no-learning baselines ----------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPERATORS))
def test_baselines_are_linear_and_keep_constants(name: str) -> None:
    op = build_operator(OperatorConfig(name=name))  # type: ignore[arg-type]
    for kind in BASELINES[name]:
        f = make_baseline(kind, op)
        a, b = _randn(2, 3, 16, 20, seed=13), _randn(2, 3, 16, 20, seed=14)
        assert f(a).shape == a.shape
        assert torch.allclose(f(0.3 * a - 1.7 * b), 0.3 * f(a) - 1.7 * f(b), atol=1e-10)
        constant = torch.full((1, 3, 16, 20), -0.42, dtype=torch.float64)
        assert torch.allclose(f(constant), constant, atol=1e-12)
    with pytest.raises(ValueError, match=BASELINES[name][0]):
        make_baseline("nearest", op)


def test_gaussian_smoothing_matches_scipy() -> None:
    f = make_baseline("gaussian", make_operator("denoising", sigma_y=0.075))  # std 1
    y = _rand(1, 2, 11, 13, seed=15)
    expected = scipy.ndimage.gaussian_filter(y.numpy(), (0, 0, 1.0, 1.0), mode="mirror", radius=3)
    np.testing.assert_allclose(f(y).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize(("name", "kind"), [("denoising", "gaussian"), ("deblurring", "wiener")])
def test_baseline_beats_the_raw_measurement(name: str, kind: str) -> None:
    op = make_operator(name)
    x = _smooth_image(3, 32, 40)
    y = op.measure(x, torch.Generator().manual_seed(0))
    x_hat = make_baseline(kind, op)(op.A_dagger(y))
    assert ((x_hat - x) ** 2).mean() < 0.8 * ((y - x) ** 2).mean()


def test_inpainting_fill_beats_the_masked_image() -> None:
    op = make_operator("inpainting", keep_fraction=0.3)
    x = _smooth_image(3, 32, 40)
    assert ((op(x) - x) ** 2).mean() < 0.05 * ((op.A(x) - x) ** 2).mean()
