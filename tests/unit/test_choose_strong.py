"""Issue 16: the strong attack is chosen from the convergence study by cost, and an
early-stopped run competes by the mean steps it spent, only when within the tolerance."""

from __future__ import annotations

import dataclasses

from smoothrecon.config import AttackConfig
from smoothrecon.experiments.convergence import best_found, choose_strong, setting_scores

MSE_ONLY = AttackConfig(kind="pgd", losses=("mse",))


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
    strong, score = choose_strong(_study(0.995), 0.01, MSE_ONLY)
    assert (strong.steps, strong.patience, strong.rel_tol) == (100, 10, 1e-3)
    assert score["cost"] == 31.0 and score["max_cost"] == 100 and score["converged"]


def test_an_early_stopped_run_below_tolerance_is_not_chosen() -> None:
    strong, score = choose_strong(_study(0.97), 0.01, MSE_ONLY)
    assert (strong.steps, strong.patience) == (100, 0)
    assert score["cost"] == 100


def test_the_cap_applies_to_the_mean_steps_an_early_stopped_run_spends() -> None:
    strong, score = choose_strong(_study(0.995), 0.01, MSE_ONLY, max_cost=50)
    assert (strong.steps, strong.patience) == (100, 10)  # 31 steps per crop on average
    strong, score = choose_strong(_study(0.995), 0.01, MSE_ONLY, max_cost=30)
    assert (strong.steps, strong.patience) == (20, 0)
    assert not score["converged"] and score["min_ratio"] == 0.95


def test_scores_keep_full_and_early_stopped_runs_apart() -> None:
    scores = setting_scores(_study(0.995))
    keys = {(s["steps"], s["patience"]) for s in scores}
    assert keys == {(20, 0), (50, 0), (100, 0), (100, 10)}


def test_the_best_loss_found_is_per_crop_over_every_row_the_reference_included() -> None:
    """Two attacks that each find one crop's worst case: the best found is both crops' worst,
    so each reaches half of it, and a reference row counts for the best but is no candidate."""
    a = _row(20, 1, 0.5, losses=[1.0, 0.0])
    b = _row(50, 1, 0.5, losses=[0.0, 1.0])
    ref = {**_row(1000, 5, 0.9, losses=[0.9, 0.9]), "reference": True}
    assert best_found([a, b]) == {("m", 0.05, "mse", "input"): 1.0}
    assert best_found([a, b, ref]) == {("m", 0.05, "mse", "input"): 1.0}
    scores = setting_scores([a, b, ref])
    assert {s["steps"] for s in scores} == {20, 50}
    assert all(s["min_ratio"] == 0.5 for s in scores)


def test_an_apgd_row_is_chosen_as_apgd_and_the_cost_counts_every_loss() -> None:
    """The cheapest setting within 1% is APGD: the config says apgd with its steps and
    restarts (PGD's own fields at their defaults), and its cost is per loss of the ensemble."""
    rows = [
        {**_row(10, 1, 0.5), "thesis": True},
        _row(100, 3, 1.0, patience=10, rel_tol=1e-3, steps_used=170.0),
        {**_row(50, 1, 0.995, steps_used=51), "attack": "apgd", "step_factor": 0.0},
        _row(20, 1, 0.95),
    ]
    base = dataclasses.replace(AttackConfig(), step_factor=0.5, patience=3)
    strong, score = choose_strong(rows, 0.01, base)
    assert (strong.kind, strong.steps, strong.restarts) == ("apgd", 50, 1)
    assert (strong.step_factor, strong.patience) == (AttackConfig().step_factor, 0)
    assert strong.losses == ("mse", "ssim") and score["cost"] == 102
    strong, score = choose_strong(rows, 0.01, base, max_cost=100)  # 2 x 51 passes > 100
    assert not score["converged"] and (strong.kind, strong.steps) == ("pgd", 20)
    assert score["cost"] == 40


def test_a_setting_must_be_close_on_every_loss_the_evaluation_attacks_with() -> None:
    """Issue 25: the SSIM columns come from the SSIM attack, so the study scores every setting
    on 1 - SSIM too; APGD 50 is the cheapest within 1% on the MSE but falls short on SSIM, so
    the longer PGD, close on both, is chosen, and its score is its smaller share."""
    mse = [
        {**_row(10, 1, 0.5), "thesis": True},
        {**_row(50, 1, 0.995, steps_used=51), "attack": "apgd", "step_factor": 0.0},
        _row(100, 1, 1.0),
    ]
    ssim = [
        {**r, "objective": "ssim", "loss": loss}
        for r, loss in ((mse[1], 0.9), (mse[2], 0.992), (_row(1000, 5, 1.0, reference=True), 1.0))
    ]
    assert set(best_found(mse + ssim)) == {
        ("m", 0.05, "mse", "input"),
        ("m", 0.05, "ssim", "input"),
    }
    strong, score = choose_strong(mse, 0.01, MSE_ONLY)
    assert (strong.kind, strong.steps) == ("apgd", 50)  # the MSE alone would pick APGD
    strong, score = choose_strong(mse + ssim, 0.01, MSE_ONLY)
    assert (strong.kind, strong.steps) == ("pgd", 100)
    assert score["converged"] and score["min_ratio"] == 0.992


def test_a_setting_must_be_strong_in_every_threat_model() -> None:
    """APGD 50 is within 1% in the input space but not in the measurement space: the PGD
    setting that is within 1% in both is chosen, and the scores say each space's share."""
    inp = [
        {**_row(10, 1, 0.5), "thesis": True},
        {**_row(50, 1, 0.995, steps_used=51), "attack": "apgd", "step_factor": 0.0},
        _row(100, 1, 1.0),
    ]
    meas = [{**r, "space": "measurement"} for r in inp]
    meas[1] = {**meas[1], "loss": 0.95}
    strong, score = choose_strong(inp + meas, 0.01, MSE_ONLY)
    assert (strong.kind, strong.steps) == ("pgd", 100) and score["converged"]
    apgd = next(s for s in setting_scores(inp + meas) if s["attack"] == "apgd")
    assert apgd["min_ratio_by_space"] == {"input": 0.995, "measurement": 0.95}
    assert apgd["min_ratio"] == 0.95
