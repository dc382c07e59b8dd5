"""The EOT study (issue 23): settings at an equal budget, scored on fresh draws of g, and the
choice of the attack on g."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from smoothrecon.config import AttackConfig, ExperimentConfig
from smoothrecon.evaluation.inputs import SplitInputs
from smoothrecon.experiments.eot_study import EOTSetting, choose_eot, eot_rows, eot_scores
from smoothrecon.models.normalization import Normalization

PIXELS = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
CFG = ExperimentConfig(
    eot_k_attacks=(1, 4), eot_budget=16, eot_eval_k=64, eot_restarts=2, convergence_images=3
)


def _row(noise: str, k: int, keep: str, budget: int, loss: float, **kw) -> dict:
    s = EOTSetting(noise, k, 1, keep, budget)
    return {
        **dataclasses.asdict(s),
        "steps": s.steps,
        "loss": loss,
        "model": "m",
        "sigma_g": 0.25,
        "eps_rel": 0.1,
        "reference": False,
        "step_factor": 0.5,
        **kw,
    }


def test_the_cheapest_setting_within_one_percent_is_chosen() -> None:
    rows = [
        _row("fixed", 2, "best", 32, 0.80),
        _row("fresh", 2, "last", 32, 0.995),
        _row("fresh", 2, "last", 16, 0.90),
        _row("fresh", 1, "best", 64, 0.999),
        _row("fresh", 4, "last", 256, 1.0, reference=True),
    ]
    setting, score = choose_eot(rows, 0.01, AttackConfig())
    assert score["converged"] and score["budget"] == 32
    assert (setting.noise, setting.k_attack, setting.keep, setting.steps) == (
        "fresh",
        2,
        "last",
        16,
    )
    assert setting.patience == 0
    # the reference joins the best loss but is never chosen
    assert all(not s.get("reference") for s in eot_scores(rows))


def test_nothing_within_reach_is_said_and_the_closest_is_used() -> None:
    rows = [_row("fixed", 2, "best", 32, 0.8), _row("fresh", 4, "last", 256, 1.0, reference=True)]
    setting, score = choose_eot(rows, 0.01, AttackConfig())
    assert not score["converged"] and score["min_ratio"] == pytest.approx(0.8)
    assert setting.noise == "fixed"


def test_every_setting_on_a_linear_model_reaches_the_svd_worst_case() -> None:
    """g = f for f(y) = W y (the noise averages out of the mean), so the exact worst case of
    ||W(y + e) - x||^2 over ||e|| <= eps is known; the study's debiased loss on fresh draws
    must approach it and never exceed it by more than the Monte-Carlo error."""
    g = torch.Generator().manual_seed(0)
    shape = (3, 3, 11, 13)  # (B, C, H, W) odd, non-square (SSIM needs 11)
    d = 3 * 11 * 13
    w = torch.randn(d, d, generator=g) / d**0.5

    def f(y: torch.Tensor) -> torch.Tensor:
        return (y.flatten(1) @ w.T).view(y.shape)

    y = torch.randn(shape, generator=g)
    x = torch.randn(shape, generator=g)
    data = SplitInputs(y, x, x)
    rows = eot_rows(f, data, PIXELS, 0.25, 0.1, CFG, seed=0)
    eps = 0.1 * d**0.5
    worst = []
    for i in range(shape[0]):  # max over the ball of a convex quadratic: on the sphere
        r = (w @ y[i].flatten() - x[i].flatten()).double()
        e = torch.randn(d, generator=g, dtype=torch.float64)
        for _ in range(3000):  # projected gradient ascent on the sphere (exact in the limit)
            e = e + 0.1 * (w.double().T @ (w.double() @ e + r))
            e = e / e.norm() * eps
        worst.append(float((w.double() @ e + r).pow(2).sum()))
    best = max(r["loss"] for r in rows) * d
    assert best == pytest.approx(sum(worst) / len(worst), rel=0.02)
    assert {r["noise"] for r in rows} == {"fixed", "fresh"}
    assert all(r["budget"] <= (4 if r["reference"] else 1) * CFG.eot_budget for r in rows)
    fresh_restarts = {r["restarts"] for r in rows if r["noise"] == "fresh" and not r["reference"]}
    assert fresh_restarts == {1, 2}
    assert any(r["reference"] for r in rows)
