"""L2 PGD: the eps formula, projections, random starts, closed-form worst cases, bookkeeping."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from smoothrecon.attacks.pgd import (
    PGD,
    eps_from_rel,
    per_sample_loss,
    pgd_l2,
    pgd_l2_run,
    project_l2,
    random_start,
)
from smoothrecon.models.baselines import Interpolation

SHAPE = (4, 3, 5, 7)  # odd, non-square


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(shape=SHAPE, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=_gen(seed))


def _norms(e: torch.Tensor) -> torch.Tensor:
    return e.flatten(1).norm(dim=1)


def _conv_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))


def _linear_model(seed: int = 0):
    """f(y) = W vec(y) with a random W (20 x 30) on (B, 1, 5, 6) inputs, and that W."""
    w = torch.randn(20, 30, generator=_gen(seed))
    return (lambda y: y.flatten(1) @ w.T), w


def test_eps_from_rel() -> None:
    assert eps_from_rel(0.01, (3, 160, 160)) == pytest.approx(2.7712813, abs=1e-6)
    assert eps_from_rel(0.0, (3, 8, 8)) == 0.0
    assert eps_from_rel(0.5, torch.Size([1, 2, 8])) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        eps_from_rel(-0.01, (3, 8, 8))


def test_project_l2_inside_ball_and_idempotent() -> None:
    eps = 1.5
    e = _randn() * torch.tensor([0.01, 0.3, 1.0, 5.0]).view(4, 1, 1, 1)  # in and out of the ball
    p = project_l2(e, eps)
    assert (_norms(p) <= eps * (1 + 1e-6)).all()
    assert torch.allclose(project_l2(p, eps), p, atol=1e-7)
    # per sample, the slow obvious way: keep points inside, scale points outside to the sphere
    for i in range(4):
        n = e[i].norm()
        expected = e[i] if n <= eps else e[i] * eps / n
        assert torch.allclose(p[i], expected, atol=1e-6)
    assert torch.equal(project_l2(torch.zeros(2, 3), eps), torch.zeros(2, 3))


def test_random_start_kinds() -> None:
    eps, like = 0.7, torch.zeros(SHAPE)
    ball = random_start(like, eps, "ball", _gen(1))
    sphere = random_start(like, eps, "sphere", _gen(1))
    assert ball.shape == sphere.shape == SHAPE
    assert (_norms(ball) <= eps * (1 + 1e-6)).all()
    assert torch.allclose(_norms(sphere), torch.full((4,), eps), rtol=1e-5)
    assert torch.equal(random_start(like, eps, "none", _gen(1)), like)
    assert torch.equal(random_start(like, 0.0, "ball", _gen(1)), like)
    with pytest.raises(ValueError):
        random_start(like, eps, "cube", _gen(1))


def test_random_start_is_uniform_in_the_ball() -> None:
    # uniform in a d-ball: (r / eps)^d ~ U(0, 1), and directions are isotropic
    eps, n = 2.0, 20000
    e = random_start(torch.zeros(n, 2), eps, "ball", _gen(2))
    u = (_norms(e) / eps) ** 2
    assert abs(u.mean().item() - 0.5) < 0.01
    assert abs((u < 0.25).float().mean().item() - 0.25) < 0.015
    assert e.mean(0).abs().max() < 0.03


def _check_norms(e: torch.Tensor, eps: float) -> None:
    assert torch.isfinite(e).all()
    assert (_norms(e) <= eps * (1 + 1e-6)).all()


@pytest.mark.parametrize("start", ["ball", "sphere", "none"])
@pytest.mark.parametrize("keep", ["best", "last"])
def test_perturbation_stays_in_the_ball(start: str, keep: str) -> None:
    f, y, x, eps = _conv_net(), _randn(), _randn(seed=1), 0.9
    e = pgd_l2(f, y, x, eps, PGD(steps=6, random_start=start, keep=keep), _gen(3))
    assert e.shape == y.shape
    _check_norms(e, eps)


@pytest.mark.parametrize("keep", ["best", "last"])
def test_perturbation_reaches_the_sphere(keep: str) -> None:
    f, y, x, eps = _conv_net(), _randn(), _randn(seed=1), 0.9
    e = pgd_l2(f, y, x, eps, PGD(steps=10, keep=keep), _gen(4))
    assert torch.allclose(_norms(e), torch.full((4,), eps), rtol=1e-4)
    g, _ = _linear_model()
    y2 = _randn((3, 1, 5, 6), seed=5)
    e2 = pgd_l2(g, y2, g(y2) + 1.0, eps, PGD(steps=10, keep=keep), _gen(4))
    assert torch.allclose(_norms(e2), torch.full((3,), eps), rtol=1e-4)


def test_returned_loss_is_the_loss_of_the_returned_e() -> None:
    f, y, x, eps = _conv_net(), _randn(), _randn(seed=1), 0.9
    for keep in ("best", "last"):
        for restarts in (1, 3):
            r = pgd_l2_run(f, y, x, eps, PGD(5, keep=keep, restarts=restarts), _gen(6))
            with torch.no_grad():
                recomputed = per_sample_loss(f(y + r.e), x)
            assert torch.allclose(r.loss, recomputed, rtol=1e-5), (keep, restarts)
            assert r.trace.shape == (6, 4)


def test_linear_model_reaches_the_optimal_loss() -> None:
    # loss(e) = ||W (y + e) - W y||^2 = ||W e||^2, whose maximum on the ball is eps^2 sigma_max^2
    f, w = _linear_model()
    y = _randn((4, 1, 5, 6), seed=7)
    x = f(y)
    eps = 0.5
    sigma_max = torch.linalg.svd(w, full_matrices=False).S[0]
    optimum = eps**2 * sigma_max**2
    r = pgd_l2_run(f, y, x, eps, PGD(steps=50, step_factor=0.5, keep="best"), _gen(8))
    assert (r.loss >= 0.99 * optimum).all(), (r.loss / optimum).tolist()
    assert (r.loss <= optimum * (1 + 1e-4)).all()


def test_more_steps_never_weaker_with_keep_best() -> None:
    f, y, x, eps = _conv_net(), _randn(), _randn(seed=1), 1.2
    short = pgd_l2_run(f, y, x, eps, PGD(steps=5, keep="best"), _gen(9))
    long = pgd_l2_run(f, y, x, eps, PGD(steps=20, keep="best"), _gen(9))
    assert torch.allclose(long.trace[:6], short.trace, rtol=1e-6)  # the first iterates coincide
    assert (long.loss >= short.loss).all()
    assert torch.equal(short.loss, short.trace.max(0).values)
    assert torch.equal(long.loss, long.trace.max(0).values)


def test_bilinear_baseline_reaches_the_closed_form_worst_case() -> None:
    # f(y) = y: loss ||y + e - x||^2 is largest for e = eps (y - x) / ||y - x||
    f = Interpolation("bilinear", 2)
    scale = torch.tensor([0.01, 0.1, 0.3, 1.0, 3.0]).view(5, 1, 1, 1)
    y = _randn((5, 3, 5, 7))
    x = y + _randn((5, 3, 5, 7), seed=10) * scale  # ||y - x|| from 0.1 eps to 45 eps
    eps = 0.8
    worst = (_norms(y - x) + eps) ** 2
    # from e = 0 the first gradient already points along y - x: exact after eps / step steps
    loss = pgd_l2_run(f, y, x, eps, PGD(steps=10, random_start="none")).loss
    assert torch.allclose(loss, worst, rtol=1e-5)
    # from a random start PGD has to turn e towards y - x
    loss = pgd_l2_run(f, y, x, eps, PGD(50, 0.5, "ball"), _gen(11)).loss
    assert torch.allclose(loss, worst, rtol=0.01)
    assert (loss <= worst * (1 + 1e-5)).all()


def test_zero_gradient_samples_give_no_nan() -> None:
    eps = 0.5
    # x = W y and start at 0: the gradient of ||W e||^2 vanishes at e = 0, so e stays 0
    f, _ = _linear_model()
    y = _randn((3, 1, 5, 6), seed=12)
    r = pgd_l2_run(f, y, f(y), eps, PGD(steps=4, random_start="none"))
    assert torch.equal(r.e, torch.zeros_like(y))
    assert torch.equal(r.loss, torch.zeros(3))
    # a model whose output does not depend on its input (but is computed from it)
    y, x = _randn(), _randn(seed=1)
    c = torch.full(SHAPE, 0.3)
    for start in ("ball", "none"):
        e = pgd_l2(lambda t: 0 * t + c, y, x, eps, PGD(steps=3, random_start=start), _gen(1))
        _check_norms(e, eps)
    # one sample with a flat loss among others that have gradients
    mask = torch.tensor([0.0, 1.0, 1.0, 1.0]).view(4, 1, 1, 1)
    e = pgd_l2(lambda t: mask * t, y, x, eps, PGD(steps=6, random_start="none"))
    _check_norms(e, eps)
    assert torch.equal(e[0], torch.zeros_like(e[0]))
    assert torch.allclose(_norms(e[1:]), torch.full((3,), eps), rtol=1e-5)


def test_constant_model_gives_no_error_and_no_nan() -> None:
    # f ignores its input entirely: the loss has no gradient at all with respect to e
    y, x, eps = _randn(), _randn(seed=1), 0.5
    c = torch.full(SHAPE, 0.3)
    r = pgd_l2_run(lambda t: c, y, x, eps, PGD(steps=3, random_start="none"))
    assert torch.equal(r.e, torch.zeros_like(y))
    assert torch.allclose(r.loss, per_sample_loss(c, x))


def test_gradients_do_not_accumulate_in_parameters() -> None:
    f = _conv_net()
    y, x = _randn(), _randn(seed=1)
    pgd_l2(f, y, x, 0.5, PGD(steps=3, restarts=2), _gen(0))
    assert all(p.grad is None for p in f.parameters())
    assert not y.requires_grad


def test_restarts_keep_the_per_sample_worst_case() -> None:
    f, y, x, eps = _conv_net(), _randn(), _randn(seed=1), 1.0
    single = pgd_l2_run(f, y, x, eps, PGD(steps=3, keep="last"), _gen(13))
    multi = pgd_l2_run(f, y, x, eps, PGD(steps=3, keep="last", restarts=4), _gen(13))
    assert (multi.loss >= single.loss).all()
    assert (multi.loss > single.loss).any()  # some restart found something better
    _check_norms(multi.e, eps)


def test_zero_eps_gives_zero_perturbation() -> None:
    e = pgd_l2(_conv_net(), _randn(), _randn(seed=1), 0.0, PGD(steps=3), _gen(0))
    assert torch.equal(e, torch.zeros(SHAPE))


def test_same_seed_same_attack() -> None:
    f, y, x = _conv_net(), _randn(), _randn(seed=1)
    a = pgd_l2(f, y, x, 0.5, PGD(steps=3), _gen(14))
    b = pgd_l2(f, y, x, 0.5, PGD(steps=3), _gen(14))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"eps": -0.1},
        {"eps": math.inf},
        {"eps": math.nan},
        {"steps": 0},
        {"restarts": 0},
        {"keep": "worst"},
        {"random_start": "cube"},
        {"x": torch.zeros(3, 3, 5, 7)},
    ],
)
def test_bad_values_raise(kwargs: dict) -> None:
    settings = {f.name for f in dataclasses.fields(PGD)}
    run = {"steps": 2} | {k: v for k, v in kwargs.items() if k in settings}
    args = {"y": _randn(), "x": _randn(seed=1), "eps": 0.5}
    args |= {k: v for k, v in kwargs.items() if k not in settings}
    with pytest.raises(ValueError):
        pgd_l2(_conv_net(), run=PGD(**run), **args)
