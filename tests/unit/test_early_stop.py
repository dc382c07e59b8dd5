"""PGD early stopping: off it changes nothing (against today's loop, copied below); on, it
loses at most 1% of the attack loss and spends fewer forward+backward passes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from smoothrecon.attacks.pgd import (
    PGD,
    per_sample_loss,
    pgd_l2,
    pgd_l2_run,
    project_l2,
    random_start,
)
from smoothrecon.attacks.pgd import _norms as norms


def _reference_run(forward, y, x, eps, steps, step_size, start, keep, generator, snapshots=()):
    """The PGD loop as it was before early stopping existed (commit a35d7f0), verbatim."""
    e = random_start(y, eps, start, generator)
    snaps = {}
    best_e, best_loss = e.clone(), torch.full((y.shape[0],), -math.inf, device=y.device)
    trace = []
    for t in range(steps + 1):
        final = t == steps
        e_var = e.detach().requires_grad_(not final)
        with torch.set_grad_enabled(not final):
            loss = per_sample_loss(forward(y + e_var), x)
        trace.append(loss.detach())
        improved = loss.detach() > best_loss
        best_loss = torch.where(improved, loss.detach(), best_loss)
        best_e[improved] = e.detach()[improved]
        if t in snapshots:
            snaps[t] = (best_e.clone(), best_loss.clone())
        if final:
            break
        (grad,) = torch.autograd.grad(loss.sum(), e_var, allow_unused=True, materialize_grads=True)
        step = grad / norms(grad).clamp_min(1e-30)
        e = project_l2(e.detach() + step_size * step, eps)
    if keep == "last":
        return e.detach(), trace[-1], torch.stack(trace), snaps
    return best_e, best_loss, torch.stack(trace), snaps


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 3, 3, padding=1)
    ).eval()


def _problem(b: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(b, 3, 5, 7, generator=gen)  # odd, non-square
    x = torch.randn(b, 3, 5, 7, generator=gen)
    return y, x


class _Counter:
    """A forward that counts the samples it ran with and without gradient."""

    def __init__(self, f):
        self.f, self.with_grad, self.without = f, 0, 0

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.with_grad += t.shape[0]
        else:
            self.without += t.shape[0]
        return self.f(t)


@pytest.mark.parametrize("keep", ["best", "last"])
@pytest.mark.parametrize("start", ["ball", "sphere", "none"])
def test_off_is_bit_identical_to_the_loop_before(keep: str, start: str) -> None:
    f, (y, x) = _net(), _problem()
    snaps = (0, 3, 7) if keep == "best" else ()
    new = pgd_l2_run(
        f,
        y,
        x,
        1.3,
        PGD(7, 0.5, start, keep=keep),
        torch.Generator().manual_seed(5),
        snapshots=snaps,
    )
    e, loss, trace, ref_snaps = _reference_run(
        f, y, x, 1.3, 7, 0.5 * 1.3, start, keep, torch.Generator().manual_seed(5), snaps
    )
    assert torch.equal(new.e, e) and torch.equal(new.loss, loss)
    assert torch.equal(new.trace, trace)
    assert new.snapshots.keys() == ref_snaps.keys()
    for t in snaps:
        assert torch.equal(new.snapshots[t][0], ref_snaps[t][0])
        assert torch.equal(new.snapshots[t][1], ref_snaps[t][1])
    assert new.steps_used is not None and (new.steps_used == 7).all()


def test_off_pgd_l2_with_restarts_matches_the_reference_worst_case() -> None:
    f, (y, x) = _net(1), _problem(seed=1)
    gen = torch.Generator().manual_seed(2)
    e = pgd_l2(f, y, x, 0.9, PGD(steps=5, restarts=3), gen)
    ref_gen = torch.Generator().manual_seed(2)
    runs = [_reference_run(f, y, x, 0.9, 5, 0.9 / 4, "ball", "best", ref_gen) for _ in range(3)]
    losses = torch.stack([r[1] for r in runs])  # (restarts, B)
    # the first run wins ties, as _keep_worse does (a later run must be strictly worse)
    winner = torch.zeros(y.shape[0], dtype=torch.long)
    for i in range(1, 3):
        better = losses[i] > losses[winner, torch.arange(y.shape[0])]
        winner[better] = i
    expected = torch.stack([runs[w][0][j] for j, w in enumerate(winner.tolist())])
    assert torch.equal(e, expected)


def test_early_stop_loses_at_most_one_percent_and_saves_passes() -> None:
    # a saturating model: the loss plateaus, so most samples converge long before 100 steps
    f, (y, x) = _net(2), _problem(b=8, seed=3)
    full_f, early_f = _Counter(f), _Counter(f)
    full_run = PGD(steps=100, step_factor=0.5)
    early_run = PGD(steps=100, step_factor=0.5, patience=5, rel_tol=1e-3)
    full = pgd_l2_run(full_f, y, x, 2.0, full_run, torch.Generator().manual_seed(0))
    early = pgd_l2_run(early_f, y, x, 2.0, early_run, torch.Generator().manual_seed(0))
    assert (early.loss >= 0.99 * full.loss).all()
    assert early.loss.sum() >= 0.99 * full.loss.sum()
    assert early_f.with_grad < 0.6 * full_f.with_grad
    assert early.steps_used is not None
    # steps_used counts backward passes; a sample pays at most one forward more (the iterate
    # it stopped at, or the final one)
    used = int(early.steps_used.sum())
    assert used <= early_f.with_grad + early_f.without <= used + y.shape[0]
    assert (early.steps_used < 100).any() and (early.steps_used <= 100).all()
    # the best iterate is a real one: its loss is that of forward(y + e), inside the ball
    assert torch.allclose(per_sample_loss(f(y + early.e), x), early.loss, rtol=1e-5)
    assert (early.e.flatten(1).norm(dim=1) <= 2.0 * (1 + 1e-5)).all()


def test_stopped_samples_keep_their_last_evaluated_iterate_with_keep_last() -> None:
    f, (y, x) = _net(3), _problem(seed=4)
    run = PGD(60, 0.5, keep="last", patience=3, rel_tol=1e-2)
    res = pgd_l2_run(f, y, x, 1.5, run, torch.Generator().manual_seed(1))
    assert res.steps_used is not None and (res.steps_used < 60).any()
    assert torch.allclose(per_sample_loss(f(y + res.e), x), res.loss, rtol=1e-5)
    # the trace is NaN exactly after a sample stopped, and complete before
    for j, used in enumerate(res.steps_used.tolist()):
        assert torch.isfinite(res.trace[: used + 1, j]).all()
        assert torch.isnan(res.trace[used + 1 :, j]).all() or used == 60


def test_all_converged_stops_the_batch_and_fills_snapshots() -> None:
    f = lambda t: torch.zeros_like(t)  # noqa: E731 (the loss cannot change)
    y, x = _problem()
    counter = _Counter(f)
    run = PGD(50, patience=2, rel_tol=0.0)
    res = pgd_l2_run(counter, y, x, 1.0, run, snapshots=(10, 50))
    # iterates 0, 1, 2 are evaluated; at t = 2 the best loss has not risen over 2 steps
    assert counter.with_grad == 3 * y.shape[0] and counter.without == 0
    assert res.steps_used is not None and (res.steps_used == 2).all()
    assert res.trace.shape == (51, y.shape[0]) and torch.isnan(res.trace[3:]).all()
    assert set(res.snapshots) == {10, 50}
    assert torch.equal(res.snapshots[50][1], res.loss)


def test_early_stop_same_seed_same_result_and_bad_values() -> None:
    f, (y, x) = _net(), _problem()
    a = pgd_l2(f, y, x, 1.0, PGD(30, patience=4), torch.Generator().manual_seed(3))
    b = pgd_l2(f, y, x, 1.0, PGD(30, patience=4), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        pgd_l2(f, y, x, 1.0, PGD(patience=-1))
    with pytest.raises(ValueError):
        pgd_l2(f, y, x, 1.0, PGD(patience=3, rel_tol=-0.1))
