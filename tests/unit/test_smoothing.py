"""SmoothedEstimator and predict_many: Lemma A.1.2, Monte-Carlo error, seeds, chunks, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smoothrecon.defenses.smoothing import SmoothedEstimator, predict_many
from smoothrecon.util.seeds import make_generator

SHAPE = (2, 3, 5, 7)  # odd, non-square; C*H*W = 105


def _linear_f(seed: int = 0, dtype: torch.dtype = torch.float32):
    """A fixed random 3x3 convolution with bias (affine, so Lemma A.1.2 applies)."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(3, 3, 3, 3, generator=gen, dtype=dtype) / 3
    bias = torch.randn(3, generator=gen, dtype=dtype)
    return lambda t: F.conv2d(t, weight, bias, padding=1)


def _y(shape=SHAPE, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize(("k", "chunk_size"), [(2, 0), (8, 0), (8, 3), (6, 5)])
def test_antithetic_linear_f_equals_f(k: int, chunk_size: int) -> None:
    f, y = _linear_f(), _y()
    g = SmoothedEstimator(f, sigma=0.8, k=k, chunk_size=chunk_size, antithetic=True)
    assert torch.allclose(g(y, make_generator(0, "cpu")), f(y), atol=1e-5)


def test_antithetic_standard_error_of_linear_f_is_zero() -> None:
    # the antithetic mean of a linear f has no Monte-Carlo error at all, so its se must be ~0
    # (an se computed as if the k draws were independent reports sigma * ||w|| / sqrt(k))
    f, y = _linear_f(), _y()
    g = SmoothedEstimator(f, sigma=0.8, k=8, antithetic=True)
    out = g.predict(y, make_generator(0, "cpu"), with_se=True)
    assert out.se is not None and out.se.abs().max() < 1e-4


def test_monte_carlo_error_of_linear_f() -> None:
    f, y = _linear_f(), _y()
    sigma, k = 0.5, 64
    out = SmoothedEstimator(f, sigma, k).predict(y, make_generator(0, "cpu"), with_se=True)
    assert out.se is not None and out.se.shape == y.shape
    err = (out.mean - f(y)).abs()
    assert (err < 5 * out.se).float().mean() >= 0.99
    assert not torch.allclose(out.mean, f(y), atol=1e-4)  # there is Monte-Carlo noise
    # the true per-pixel se of a linear f: sigma * ||f's weights at that pixel|| / sqrt(k)
    basis = torch.eye(105).view(105, 3, 5, 7)
    lin = (f(basis) - f(torch.zeros(1, 3, 5, 7))).view(105, 105)  # row j = f_lin(e_j)
    true_se = (sigma * lin.norm(dim=0) / k**0.5).view(1, 3, 5, 7)
    ratio = (out.se / true_se).flatten()
    assert 0.85 < ratio.median() < 1.15
    # |g - f| / se behaves like |N(0, 1)|, whose mean is sqrt(2 / pi) ~ 0.80
    assert 0.6 < (err / true_se).mean() < 1.0


def test_sigma_zero_gives_f_exactly() -> None:
    f, y = _linear_f(), _y()
    assert torch.equal(SmoothedEstimator(f, 0.0, k=7)(y), f(y))
    out = predict_many(torch.tanh, y, [0.0, 0.3], k=4, with_se=True)
    assert torch.equal(out[0.0].mean, torch.tanh(y))
    assert torch.equal(out[0.0].se, torch.zeros_like(y))


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), SHAPE])
@pytest.mark.parametrize("antithetic", [False, True])
def test_chunked_equals_unchunked_with_the_same_seed(shape: tuple, antithetic: bool) -> None:
    y = _y(shape)
    g_whole = SmoothedEstimator(torch.tanh, 0.5, k=6, chunk_size=0, antithetic=antithetic)
    g_chunk = SmoothedEstimator(torch.tanh, 0.5, k=6, chunk_size=3, antithetic=antithetic)
    a = g_whole.predict(y, make_generator(11, "cpu"), with_se=True)
    b = g_chunk.predict(y, make_generator(11, "cpu"), with_se=True)
    assert torch.allclose(a.mean, b.mean, atol=1e-6)
    assert torch.allclose(a.se, b.se, atol=1e-6)


def test_same_seed_same_numbers_other_seed_other_numbers() -> None:
    y = _y()
    g = SmoothedEstimator(torch.tanh, 0.5, k=4)
    assert torch.equal(g(y, make_generator(5, "cpu")), g(y, make_generator(5, "cpu")))
    assert not torch.allclose(g(y, make_generator(5, "cpu")), g(y, make_generator(6, "cpu")))


def test_predict_many_uses_common_random_numbers() -> None:
    f, y = _linear_f(dtype=torch.float64), _y(dtype=torch.float64)
    sigmas = [0.1, 0.4, 1.5]
    out = predict_many(f, y, sigmas, k=8, generator=make_generator(3, "cpu"), chunk_size=5)
    fy = f(y)
    # linear f: g_sigma - f(y) = sigma * mean_j f_lin(z_j) with the same z_j for every sigma
    scaled = [(out[s].mean - fy) / s for s in sigmas]
    assert torch.allclose(scaled[0], scaled[1], atol=1e-10)
    assert torch.allclose(scaled[0], scaled[2], atol=1e-10)
    assert scaled[0].abs().max() > 1e-3  # the noise did not cancel: the test can fail
    # each sigma gets the same draws as a call with that sigma alone
    alone = predict_many(f, y, [0.4], k=8, generator=make_generator(3, "cpu"), chunk_size=5)
    assert torch.allclose(alone[0.4].mean, out[0.4].mean, atol=1e-12)


def test_different_images_get_different_noise() -> None:
    y = _y().clone()
    y[1] = y[0]
    g = SmoothedEstimator(torch.tanh, 0.5, k=4)(y, make_generator(0, "cpu"))
    assert not torch.allclose(g[0], g[1])


def test_gradients_flow_to_y() -> None:
    f = _linear_f()
    y = _y().requires_grad_(True)
    SmoothedEstimator(f, 0.5, k=4, chunk_size=3)(y, make_generator(0, "cpu")).sum().backward()
    # for a linear f the gradient of sum(g(y)) equals that of sum(f(y)), whatever the noise
    y_ref = _y().requires_grad_(True)
    f(y_ref).sum().backward()
    assert torch.allclose(y.grad, y_ref.grad, atol=1e-5)

    y2 = _y().requires_grad_(True)
    SmoothedEstimator(torch.tanh, 0.5, k=4)(y2, make_generator(0, "cpu")).sum().backward()
    assert torch.isfinite(y2.grad).all()
    assert (y2.grad.flatten(1).abs().sum(1) > 0).all()


def test_gradients_through_many_sigmas() -> None:
    y = _y().requires_grad_(True)
    out = predict_many(torch.tanh, y, [0.0, 0.2, 0.7], k=4, generator=make_generator(0, "cpu"))
    sum(o.mean.sum() for o in out.values()).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


def test_with_noise_fixed_and_fresh() -> None:
    y = _y()
    g = SmoothedEstimator(torch.tanh, 0.5, k=4)
    fixed = g.with_noise("fixed", seed=9)
    assert torch.equal(fixed(y), fixed(y))
    assert torch.equal(fixed(y), g(y, make_generator(9, "cpu")))
    fresh = g.with_noise("fresh", seed=9)
    first, second = fresh(y), fresh(y)
    assert torch.equal(first, fixed(y))  # the first draw comes from the seed
    assert not torch.allclose(first, second)
    with pytest.raises(ValueError):
        g.with_noise("sometimes", seed=9)


@pytest.mark.parametrize(("sigma", "k"), [(-0.1, 4), (0.5, 0), (0.5, -3)])
def test_bad_sigma_or_k_raise(sigma: float, k: int) -> None:
    with pytest.raises(ValueError):
        SmoothedEstimator(torch.tanh, sigma, k)


@pytest.mark.parametrize(
    ("sigmas", "k", "antithetic"), [([0.1, -0.2], 4, False), ([0.1], 0, False), ([0.1], 5, True)]
)
def test_predict_many_bad_arguments_raise(sigmas: list, k: int, antithetic: bool) -> None:
    with pytest.raises(ValueError):
        predict_many(torch.tanh, _y(), sigmas, k, antithetic=antithetic)
