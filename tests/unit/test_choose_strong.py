"""Issue 16: the strong attack is chosen from the convergence study by cost, and an
early-stopped run competes by the mean steps it spent, only when within the tolerance."""

from __future__ import annotations

from smoothrecon.config import AttackConfig
from smoothrecon.experiments.convergence import choose_strong, setting_scores


def _row(steps: int, restarts: int, loss: float, **extra: float) -> dict:
    return {
        "model": "m",
        "eps_rel": 0.05,
        "step_factor": 0.5,
        "steps": steps,
        "restarts": restarts,
        "loss": loss,
        "thesis": False,
        **extra,
    }


def _study(stopped_loss: float) -> list[dict]:
    return [
        {**_row(10, 1, 0.5), "thesis": True},
        _row(20, 1, 0.95),
        _row(50, 1, 0.985),
        _row(100, 1, 1.0),
        _row(100, 1, stopped_loss, patience=10, rel_tol=1e-3, steps_used=31.0),
    ]


def test_an_early_stopped_run_within_tolerance_is_chosen_by_its_mean_cost() -> None:
    strong, score = choose_strong(_study(0.995), 0.01, AttackConfig())
    assert (strong.steps, strong.patience, strong.rel_tol) == (100, 10, 1e-3)
    assert score["cost"] == 31.0 and score["max_cost"] == 100 and score["converged"]


def test_an_early_stopped_run_below_tolerance_is_not_chosen() -> None:
    strong, score = choose_strong(_study(0.97), 0.01, AttackConfig(patience=0))
    assert (strong.steps, strong.patience) == (100, 0)
    assert score["cost"] == 100


def test_the_cap_applies_to_the_mean_steps_an_early_stopped_run_spends() -> None:
    strong, score = choose_strong(_study(0.995), 0.01, AttackConfig(), max_cost=50)
    assert (strong.steps, strong.patience) == (100, 10)  # 31 steps per crop on average
    strong, score = choose_strong(_study(0.995), 0.01, AttackConfig(), max_cost=30)
    assert (strong.steps, strong.patience) == (20, 0)
    assert not score["converged"] and score["min_ratio"] == 0.95


def test_scores_keep_full_and_early_stopped_runs_apart() -> None:
    scores = setting_scores(_study(0.995))
    keys = {(s["steps"], s["patience"]) for s in scores}
    assert keys == {(20, 0), (50, 0), (100, 0), (100, 10)}
