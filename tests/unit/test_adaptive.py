"""Adaptive Monte-Carlo sampling: stops at k_min when the estimate is exact, reaches the
tolerance otherwise, equals the fixed-k estimator when k_min = k_max, and is reproducible."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from smoothrecon.defenses.smoothing import (
    AdaptiveK,
    mc_share,
    mc_share_fn,
    predict_adaptive,
    predict_many,
)
from smoothrecon.models.normalization import Normalization
from smoothrecon.util.seeds import make_generator

SHAPE = (3, 3, 5, 7)  # odd, non-square
NORM = Normalization(mean=(0.45, 0.43, 0.40), std=(0.27, 0.26, 0.28))


def _linear_f(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(3, 3, 3, 3, generator=gen) / 3
    bias = torch.randn(3, generator=gen)
    return lambda t: F.conv2d(t, weight, bias, padding=1)


def _noisy_f(t: torch.Tensor) -> torch.Tensor:
    return torch.tanh(3 * t) + 0.5 * torch.sin(5 * t)


def _data(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(SHAPE, generator=gen) * 0.5
    x = torch.rand(SHAPE, generator=gen)  # pixel space [0, 1]
    return y, x


def test_linear_f_with_antithetic_pairs_stops_at_k_min_and_is_exact() -> None:
    f, (y, x) = _linear_f(), _data()
    out = predict_adaptive(
        f,
        y,
        [0.25, 1.0],
        mc_share_fn(x, NORM),
        AdaptiveK(k_min=4, k_max=64, tolerance=1e-3),
        generator=make_generator(0, "cpu"),
        antithetic=True,
    )
    for s in (0.25, 1.0):
        assert (out[s].k == 4).all()
        assert torch.allclose(out[s].mean, f(y), atol=1e-5)
        assert out[s].se.abs().max() < 1e-4 and (out[s].mc_share < 1e-3).all()


def test_linear_f_without_antithetic_pairs_needs_more_than_k_min() -> None:
    f, (y, x) = _linear_f(), _data()
    out = predict_adaptive(
        f,
        y,
        [1.0],
        mc_share_fn(x, NORM),
        AdaptiveK(k_min=4, k_max=4096, tolerance=0.01),
        generator=make_generator(0, "cpu"),
    )
    assert (out[1.0].k > 4).all() and (out[1.0].mc_share <= 0.01).all()


@pytest.mark.parametrize("antithetic", [False, True])
def test_noisy_f_reaches_the_tolerance_within_k_max(antithetic: bool) -> None:
    (y, x), tol = _data(2), 0.02
    sigmas = [0.1, 0.5, 1.5]
    out = predict_adaptive(
        _noisy_f,
        y,
        sigmas,
        mc_share_fn(x, NORM),
        AdaptiveK(k_min=8, k_max=2048, tolerance=tol),
        generator=make_generator(3, "cpu"),
        chunk_size=50,
        antithetic=antithetic,
    )
    for s in sigmas:
        o = out[s]
        assert (o.k >= 8).all() and (o.k <= 2048).all()
        assert (o.mc_share <= tol).all()
        # the recorded share is the one the evaluation computes from mean and se
        assert torch.allclose(mc_share(o.mean, o.se, x, NORM), o.mc_share, rtol=1e-5)
        if antithetic:
            assert (o.k % 2 == 0).all()
    assert (out[1.5].k > 8).any()  # large sigma needed more draws than the first round


def test_k_max_caps_the_draws_and_the_share_says_the_tolerance_was_not_reached() -> None:
    (y, x) = _data(4)
    out = predict_adaptive(
        _noisy_f,
        y,
        [2.0],
        mc_share_fn(x, NORM),
        AdaptiveK(k_min=4, k_max=10, tolerance=1e-6),
        generator=make_generator(0, "cpu"),
    )
    assert (out[2.0].k == 10).all() and (out[2.0].mc_share > 1e-6).all()


@pytest.mark.parametrize("antithetic", [False, True])
def test_k_min_equal_k_max_is_the_fixed_k_estimator(antithetic: bool) -> None:
    # one round of k draws per image, in image order: the same numbers as predict_many
    (y, x), k, sigmas = _data(5), 12, [0.0, 0.3, 0.9]
    a = predict_adaptive(
        _noisy_f,
        y,
        sigmas,
        mc_share_fn(x, NORM),
        AdaptiveK(k_min=k, k_max=k, tolerance=1e-9),
        generator=make_generator(7, "cpu"),
        chunk_size=10,
        antithetic=antithetic,
    )
    b = predict_many(
        _noisy_f, y, sigmas, k, make_generator(7, "cpu"), antithetic=antithetic, with_se=True
    )
    for s in sigmas:
        assert torch.allclose(a[s].mean, b[s].mean, atol=1e-6)
        assert torch.allclose(a[s].se, b[s].se, atol=1e-6)
        assert (a[s].k == (k if s > 0 else 1)).all()


def test_same_seed_same_result_and_chunk_size_does_not_matter() -> None:
    (y, x) = _data(6)

    def run(seed: int, chunk: int):
        return predict_adaptive(
            _noisy_f,
            y,
            [0.2, 0.8],
            mc_share_fn(x, NORM),
            AdaptiveK(k_min=6, k_max=300, tolerance=0.03),
            generator=make_generator(seed, "cpu"),
            chunk_size=chunk,
        )

    a, b, c, d = run(1, 0), run(1, 0), run(1, 7), run(2, 0)
    for s in (0.2, 0.8):
        assert torch.equal(a[s].mean, b[s].mean) and torch.equal(a[s].k, b[s].k)
        assert torch.equal(a[s].k, c[s].k)
        assert torch.allclose(a[s].mean, c[s].mean, atol=1e-6)
    assert not torch.equal(a[0.8].mean, d[0.8].mean)


def test_bad_settings_are_refused() -> None:
    (y, x) = _data()
    err = mc_share_fn(x, NORM)
    for rule, antithetic in (
        (AdaptiveK(k_min=1), False),
        (AdaptiveK(k_min=8, k_max=4), False),
        (AdaptiveK(tolerance=0.0), False),
        (AdaptiveK(k_min=5, k_max=9), True),
    ):
        with pytest.raises(ValueError):
            predict_adaptive(torch.tanh, y, [0.5], err, rule, antithetic=antithetic)
    with pytest.raises(ValueError):
        predict_adaptive(torch.tanh, y, [-0.1], err)
