"""Unit keys of the sweep: a setting that changes a unit's result changes its key; one that
does not, does not (so reruns skip exactly the finished work)."""

from __future__ import annotations

from pathlib import Path

from smoothrecon.attacks.setting import setting_from_config
from smoothrecon.config import AttackConfig, load_config
from smoothrecon.experiments.runner import (
    family_representatives,
    plan_convergence,
    plan_evaluation,
    plan_training,
)

ATTACKS = {"strong": setting_from_config(AttackConfig(steps=20))}


def _paths(units) -> set[str]:
    return {str(u.path) for u in units}


def test_settings_that_change_evaluations_change_their_keys() -> None:
    base = load_config("smoke")
    out = Path("/run")
    before = _paths(plan_evaluation(base, out, ATTACKS))
    for change in ("experiment.image_grid_count=1", "smoothing.k=8", "data.crop_size=48"):
        changed = load_config("smoke", overrides=[change])
        assert _paths(plan_evaluation(changed, out, ATTACKS)).isdisjoint(before), change
    other_attack = {"strong": setting_from_config(AttackConfig(steps=21))}
    assert _paths(plan_evaluation(base, out, other_attack)).isdisjoint(before)


def test_rs_pgd_changes_only_the_units_where_it_runs() -> None:
    # The smoke grid is eps_rel {0, 0.02}; RS-PGD runs on the RS model (x2/thesis/rs0.1) and
    # on it behind median smoothing (rs0.1+med) at eps_rel > 0 only, so switching it off (or
    # moving it to another eps_rel) changes exactly those units, and naming the eps_rel where
    # it already runs changes nothing.
    out = Path("/run")
    before = {u.path for u in plan_evaluation(load_config("smoke"), out, ATTACKS)}
    rs_unit = {p for p in before if "rs0.1" in p.parent.name and p.name.startswith("eps0.02-")}
    assert len(rs_unit) == 2
    for change in ("experiment.rs_pgd=false", "experiment.rs_pgd_eps_rels=[0.05]"):
        after = {
            u.path for u in plan_evaluation(load_config("smoke", overrides=[change]), out, ATTACKS)
        }
        assert before - after == rs_unit, change
    same = load_config("smoke", overrides=["experiment.rs_pgd_eps_rels=[0.02]"])
    assert {u.path for u in plan_evaluation(same, out, ATTACKS)} == before


def test_adding_a_model_keeps_the_other_models_units() -> None:
    base = load_config("smoke")
    more = load_config("smoke", overrides=["experiment.sigma_fs=[0.1,0.3]"])
    out = Path("/run")
    assert _paths(plan_convergence(base, out)) <= _paths(plan_convergence(more, out))
    assert _paths(plan_evaluation(base, out, ATTACKS)) < _paths(plan_evaluation(more, out, ATTACKS))
    changed = load_config("smoke", overrides=["experiment.convergence_restarts=3"])
    assert _paths(plan_convergence(changed, out)).isdisjoint(_paths(plan_convergence(base, out)))


def test_threat_model_rows_of_the_grid() -> None:
    # AT per (eps_rel, space): the measurement-trained one is its own model, trained with
    # train.attack_space = measurement; f o P evaluates the standard model's weights, unsmoothed
    cfg = load_config(
        "smoke", overrides=["experiment.at_spaces=[input,measurement]", "experiment.projected=true"]
    )
    out = Path("/run")
    trains = {u.spec.label: u for u in plan_training(cfg, out)}
    assert trains["x2/thesis/at0.02-meas"].cfg.train.attack_space == "measurement"
    assert trains["x2/thesis/at0.02"].cfg.train.attack_space == "input"
    assert "x2/thesis/std+proj" not in trains
    evals = {u.spec.label: u for u in plan_evaluation(cfg, out, ATTACKS)}
    proj, std = evals["x2/thesis/std+proj"], evals["x2/thesis/std"]
    assert proj.model_folder == std.model_folder == trains["x2/thesis/std"].folder
    assert proj.settings.sigmas == (0.0,) and not proj.settings.rs_pgd
    assert proj.path.parent != std.path.parent
    assert evals["x2/thesis/at0.02-meas"].spec.info().train_space == "measurement"
    assert "std+proj" not in {s.label.split("/")[-1] for s in family_representatives(cfg)}
    # the default grid is unchanged by the new fields
    base = {u.spec.label for u in plan_evaluation(load_config("smoke"), out, ATTACKS)}
    assert set(evals) - base == {"x2/thesis/at0.02-meas", "x2/thesis/std+proj"}


def test_median_smoothing_rows_of_the_grid() -> None:
    """Issue 26: an RS model behind median smoothing is evaluated from the RS model's own
    weights, on the same sigma_g grid with RS-PGD, in its own unit; it is neither trained nor
    certified as a model of its own (the RS model's certificate has the median method)."""
    from smoothrecon.experiments.runner import plan_certification

    cfg = load_config(
        "smoke",
        overrides=[
            "experiment.median_sigma_fs=[0.1]",
            "experiment.certify_eps_rels=[0.001]",
            "experiment.certify_methods=[pixel,median,loss]",
        ],
    )
    out = Path("/run")
    trains = {u.spec.label: u for u in plan_training(cfg, out)}
    assert "x2/thesis/rs0.1+med" not in trains
    evals = {u.spec.label: u for u in plan_evaluation(cfg, out, ATTACKS)}
    med, rs = evals["x2/thesis/rs0.1+med"], evals["x2/thesis/rs0.1"]
    assert med.model_folder == rs.model_folder == trains["x2/thesis/rs0.1"].folder
    assert med.settings == rs.settings and med.path.parent != rs.path.parent
    assert med.spec.info().defense == "med" and med.spec.smoothed
    certs = plan_certification(cfg, out, ATTACKS["strong"])
    assert [u.spec.label for u in certs] == ["x2/thesis/rs0.1"]
    assert certs[0].settings.methods == ("pixel", "median", "loss")
    assert "rs0.1+med" not in {s.label.split("/")[-1] for s in family_representatives(cfg)}
