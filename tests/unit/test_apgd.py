"""APGD-L2 (attacks/apgd.py) against closed forms: the exact worst case of a linear model (the
top singular value), the identity's, the budget, the ball and the schedule of AutoAttack."""

from __future__ import annotations

import torch
from torch import nn

from smoothrecon.attacks.apgd import APGD
from smoothrecon.attacks.pgd import PGD, per_sample_loss, pgd_l2_run
from smoothrecon.attacks.protocol import check_attack, solver_of


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _linear(seed: int = 0):
    w = torch.randn(20, 30, generator=_gen(seed))
    return (lambda y: y.flatten(1) @ w.T), w


def _norms(e: torch.Tensor) -> torch.Tensor:
    return e.flatten(1).norm(dim=1)


def test_the_linear_model_reaches_its_svd_worst_case() -> None:
    """loss(e) = ||W e||^2 on the ball: the maximum is eps^2 sigma_max^2."""
    f, w = _linear()
    y = torch.randn(4, 1, 5, 6, generator=_gen(7))
    eps = 0.5
    optimum = eps**2 * torch.linalg.svd(w, full_matrices=False).S[0] ** 2
    r = APGD(steps=50).run(f, y, f(y), eps, _gen(8))
    assert (r.loss >= 0.999 * optimum).all(), (r.loss / optimum).tolist()
    assert (r.loss <= optimum * (1 + 1e-4)).all()
    assert torch.allclose(per_sample_loss(f(y + r.e), f(y)), r.loss, rtol=1e-5)


def test_the_identity_reaches_its_closed_form_worst_case() -> None:
    """f(y) = y: the worst e is eps along y - x, loss (||y - x|| + eps)^2."""
    y = torch.randn(5, 3, 5, 7, generator=_gen(1))
    x = y + torch.randn(5, 3, 5, 7, generator=_gen(2)) * torch.tensor([0.1, 0.3, 1, 2, 5]).view(
        5, 1, 1, 1
    )
    eps = 0.8
    worst = (_norms(y - x) + eps) ** 2
    r = APGD(steps=20).run(nn.Identity(), y, x, eps, _gen(3))
    assert torch.allclose(r.loss, worst, rtol=1e-3), (r.loss / worst).tolist()


def test_it_stays_in_the_ball_and_counts_its_passes() -> None:
    f = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))
    for p in f.parameters():
        p.requires_grad_(False)
    y, x = torch.randn(3, 3, 6, 8, generator=_gen(4)), torch.randn(3, 3, 6, 8, generator=_gen(5))
    calls = []

    def counted(z: torch.Tensor) -> torch.Tensor:
        calls.append(z.shape[0])
        return f(z)

    r = APGD(steps=12, restarts=2).run(counted, y, x, 0.7, _gen(6))
    assert (_norms(r.e) <= 0.7 * (1 + 1e-5)).all()
    assert r.steps_used is not None and r.steps_used.tolist() == [2 * 13] * 3
    assert len(calls) == 2 * 13  # one forward (and backward) per step and per start
    assert r.trace.shape == (13, 3) and (r.trace.diff(dim=0) >= 0).all()  # best so far


def test_the_schedule_is_autoattacks() -> None:
    """Checkpoints of autopgd_base.py: the first at 22% of the steps, gaps shrinking by 3%
    to at least 6%."""
    assert APGD(steps=100).checkpoints() == [22, 41, 57, 70, 80, 87, 93, 99]
    assert APGD(steps=5).checkpoints() == [1, 2, 3, 4, 5]


def test_it_is_at_least_as_strong_as_short_pgd_on_a_network() -> None:
    f = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    for p in f.parameters():
        p.requires_grad_(False)
    y, x = torch.randn(6, 3, 8, 8, generator=_gen(9)), torch.randn(6, 3, 8, 8, generator=_gen(10))
    apgd = APGD(steps=30).run(f, y, x, 1.0, _gen(11)).loss
    pgd = pgd_l2_run(f, y, x, 1.0, PGD(steps=30, step_factor=0.25), _gen(11)).loss
    assert apgd.mean() >= 0.99 * pgd.mean(), (apgd.mean(), pgd.mean())


def test_it_is_an_attack_and_takes_a_context() -> None:
    """The protocol call, and the measurement-space form forward(input, context)."""
    a = check_attack(APGD(steps=5, name="apgd-mse"))
    y, x = torch.randn(2, 3, 4, 4, generator=_gen(12)), torch.randn(2, 3, 4, 4, generator=_gen(13))
    e = a(nn.Identity(), y, x, 0.3, _gen(14))
    assert e.shape == y.shape and (_norms(e) <= 0.3 * (1 + 1e-5)).all()
    zero = torch.zeros_like(y)
    res = solver_of(a)(lambda e, rows: rows + e, zero, x, 0.3, _gen(14), y)
    assert torch.allclose(res.loss, per_sample_loss(y + res.e, x), rtol=1e-5)
