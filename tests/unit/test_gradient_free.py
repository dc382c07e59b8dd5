"""The gradient-free SPSA attack: the ball, the query budget, closed-form worst cases, and
models that mask their gradients (rounding, detach, no_grad), where PGD gains nothing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from smoothrecon.attacks.gradient_free import SPSA, spsa_l2
from smoothrecon.attacks.pgd import PGD, per_sample_loss, pgd_l2_run

SHAPE = (4, 3, 5, 7)  # odd, non-square: d = 105
EPS = 1.0
# the closed-form worst case of the identity model with ||y - x|| = 1: (||y - x|| + eps)^2
WORST = (1.0 + EPS) ** 2
STRONG = SPSA(queries=3000, directions=32, step_factor=0.25)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """y in [0, 1] (pixel-like) and x = y - r with ||r_i|| = 1."""
    g = _gen(seed)
    y = torch.rand(SHAPE, generator=g)
    r = torch.randn(SHAPE, generator=g)
    return y, y - r / r.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _norms(e: torch.Tensor) -> torch.Tensor:
    return e.flatten(1).norm(dim=1)


class _NoGrad(nn.Module):
    def forward(self, v: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return v * 1.0


MASKED = {
    # quantization step 1/255 is far below the finite-difference scale 0.5 * eps / sqrt(105)
    "round": lambda v: torch.round(v * 255) / 255,
    "detach": lambda v: v.detach() * 1.0,
    "no_grad": _NoGrad(),
}


def test_ball_budget_chunks_and_bookkeeping():
    y, x = _data()
    run = SPSA(queries=100, directions=3, chunk=5)
    per_sample = torch.zeros(SHAPE[0], dtype=torch.long)
    calls: list[int] = []

    def counting(inp: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        per_sample.add_(torch.bincount(sample, minlength=SHAPE[0]))
        calls.append(inp.shape[0])
        return inp

    res = spsa_l2(counting, y, x, EPS, run, _gen(), context=torch.arange(SHAPE[0]))
    assert res.steps_used is not None and res.steps_used.dtype == torch.long
    assert bool((res.steps_used <= run.queries).all())
    assert torch.equal(per_sample, res.steps_used)  # every forward counted, none hidden
    assert max(calls) <= run.chunk
    assert bool((_norms(res.e) <= EPS * (1 + 1e-5)).all())
    assert res.trace.shape == (run.steps() + 1, SHAPE[0])
    assert bool((res.trace.diff(dim=0) >= 0).all())  # the best loss never falls
    torch.testing.assert_close(res.loss, per_sample_loss(y + res.e, x))
    assert res.last is not None
    torch.testing.assert_close(res.last[1], per_sample_loss(y + res.last[0], x))
    # chunking changes nothing for a per-sample model
    whole = spsa_l2(lambda v: v, y, x, EPS, SPSA(queries=100, directions=3), _gen())
    torch.testing.assert_close(whole.e, res.e)


def test_identity_reaches_closed_form_worst_case():
    y, x = _data()
    res = spsa_l2(lambda v: v, y, x, EPS, STRONG, _gen())
    start = per_sample_loss(y, x)  # ||y - x||^2 = 1 without attack
    torch.testing.assert_close(start, torch.ones(SHAPE[0]))
    assert bool((res.loss <= WORST * (1 + 1e-4)).all())
    assert bool((res.loss >= 0.95 * WORST).all()), res.loss


@pytest.mark.parametrize("name", list(MASKED))
def test_masked_gradients_beat_pgd(name: str):
    f = MASKED[name]
    y, x = _data(1)
    pgd = pgd_l2_run(f, y, x, EPS, PGD(steps=5), _gen(1))
    # random noise of norm eps gives ||r||^2 + eps^2 on average (cross term std 2 eps / sqrt(d));
    # PGD with working gradients gets about 3.2 here
    noise = 1.0 + EPS**2
    assert bool((pgd.loss <= noise + 4 * 2 * EPS / math.sqrt(105)).all()), pgd.loss
    res = spsa_l2(f, y, x, EPS, SPSA(queries=2000, step_factor=0.25), _gen(1))
    assert bool((_norms(res.e) <= EPS * (1 + 1e-5)).all())
    assert bool((res.loss >= 0.9 * WORST).all()), res.loss


def test_context_matches_plain_forward():
    y, x = _data(2)
    run = SPSA(queries=300, directions=4)
    plain = spsa_l2(lambda v: v, y, x, EPS, run, _gen(3))
    with_context = spsa_l2(
        lambda e, y_rows: y_rows + e, torch.zeros_like(y), x, EPS, run, _gen(3), context=y
    )
    torch.testing.assert_close(with_context.e, plain.e)
    torch.testing.assert_close(with_context.loss, plain.loss)


def test_eps_zero_returns_zeros():
    y, x = _data()
    res = spsa_l2(lambda v: v, y, x, 0.0, SPSA(queries=50), _gen())
    assert torch.equal(res.e, torch.zeros_like(y))
    torch.testing.assert_close(res.loss, per_sample_loss(y, x))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"queries": 0},
        {"directions": 0},
        {"step_factor": 0.0},
        {"step_factor": math.inf},
        {"scale": -0.5},
        {"chunk": -1},
    ],
)
def test_bad_settings_raise(kwargs: dict):
    with pytest.raises(ValueError):
        SPSA(**kwargs)


def test_bad_inputs_raise():
    y, x = _data()
    with pytest.raises(ValueError):
        spsa_l2(lambda v: v, y, x[:3], EPS)
    with pytest.raises(ValueError):
        spsa_l2(lambda v: v, y, x, -1.0)
