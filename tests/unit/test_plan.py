"""Unit keys of the sweep: a setting that changes a unit's result changes its key; one that
does not, does not (so reruns skip exactly the finished work)."""

from __future__ import annotations

from pathlib import Path

from smoothrecon.config import AttackConfig, load_config
from smoothrecon.experiments.runner import plan_convergence, plan_evaluation

ATTACKS = {"strong": AttackConfig(steps=20)}


def _paths(units) -> set[str]:
    return {str(u.path) for u in units}


def test_settings_that_change_evaluations_change_their_keys() -> None:
    base = load_config("smoke")
    out = Path("/run")
    before = _paths(plan_evaluation(base, out, ATTACKS))
    for change in (
        "experiment.rs_pgd_eps_rels=[0.02]",
        "experiment.image_grid_count=1",
        "smoothing.k=8",
        "experiment.rs_pgd=false",
    ):
        changed = load_config("smoke", overrides=[change])
        assert _paths(plan_evaluation(changed, out, ATTACKS)).isdisjoint(before), change
    other_attack = {"strong": AttackConfig(steps=21)}
    assert _paths(plan_evaluation(base, out, other_attack)).isdisjoint(before)


def test_adding_a_model_keeps_the_other_models_units() -> None:
    base = load_config("smoke")
    more = load_config("smoke", overrides=["experiment.sigma_fs=[0.1,0.3]"])
    out = Path("/run")
    assert _paths(plan_convergence(base, out)) <= _paths(plan_convergence(more, out))
    assert _paths(plan_evaluation(base, out, ATTACKS)) < _paths(plan_evaluation(more, out, ATTACKS))
    changed = load_config("smoke", overrides=["experiment.convergence_restarts=3"])
    assert _paths(plan_convergence(changed, out)).isdisjoint(_paths(plan_convergence(base, out)))
