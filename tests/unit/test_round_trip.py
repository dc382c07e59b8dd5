"""Config <-> object conversion is lossless, one place per kind (issue 24): every registered
operator, attack and defence, built with non-default parameters, converts to its config form
and back to an equal object."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import torch
from field_values import other_value

from smoothrecon.attacks.apgd import APGD
from smoothrecon.attacks.ensemble import Ensemble
from smoothrecon.attacks.pgd import PGD
from smoothrecon.attacks.setting import (
    ATTACKS,
    EOT,
    AttackSetting,
    setting_from_config,
    setting_to_config,
)
from smoothrecon.config import AttackConfig, load_config
from smoothrecon.defenses import (
    DEFENSES,
    DenoisedSmoothing,
    MedianSmoothing,
    Projection,
    defense_from_config,
    defense_to_config,
)
from smoothrecon.defenses.base import describe_defense, smoothing_percentile
from smoothrecon.models import build_model
from smoothrecon.models.checkpoint import checkpoint_meta, save_model
from smoothrecon.models.normalization import Normalization
from smoothrecon.operators import OPERATORS, build_operator, make_operator, operator_config

# Non-default parameters of every registered operator.
OPERATOR_PARAMS = {
    "super_resolution": {"factor": 4, "quantize": True, "sigma_y": 0.02},
    "denoising": {"sigma_y": 0.2},
    "deblurring": {"blur_std": 2.5, "sigma_y": 0.03},
    "inpainting": {"keep_fraction": 0.3, "mask_seed": 7, "sigma_y": 0.01},
    "compressed_sensing": {
        "acceleration": 6.0,
        "center_fraction": 0.12,
        "mask_seed": 3,
        "grayscale": True,
        "sigma_y": 0.05,
    },
}


def test_every_operator_is_covered() -> None:
    assert set(OPERATOR_PARAMS) == set(OPERATORS)


@pytest.mark.parametrize("name", sorted(OPERATOR_PARAMS))
def test_operators_round_trip(name: str) -> None:
    op = make_operator(name, **OPERATOR_PARAMS[name])
    cfg = operator_config(op)
    back = build_operator(cfg)
    assert back == op and back.describe() == op.describe()
    assert operator_config(back) == cfg
    for key, value in OPERATOR_PARAMS[name].items():
        assert op.describe()[key] == value, (name, key)  # the description holds every one


def test_an_operator_the_config_cannot_hold_is_refused() -> None:
    """A deblurring `reg` of one's own has no config field: refused, never written as the
    default one."""
    with pytest.raises(ValueError, match="differs in \\['reg'\\]"):
        operator_config(make_operator("deblurring", reg=0.5))


def test_every_attack_kind_is_covered() -> None:
    assert set(ATTACKS) == {"pgd", "apgd", "ensemble"}, (
        "a new attack kind needs a config form and a test"
    )


def test_ensemble_settings_round_trip_and_a_foreign_ensemble_has_no_config_form() -> None:
    cfg = AttackConfig(kind="pgd", losses=("ssim", "mse"), steps=9, step_factor=0.4, restarts=2)
    setting = setting_from_config(cfg, "both")
    assert isinstance(setting.attack, Ensemble) and setting.name == "both"
    assert [m.name for m in setting.attack.members] == ["pgd-ssim", "pgd-mse"]
    assert setting_to_config(setting) == cfg
    assert setting_from_config(setting_to_config(setting), "both") == setting
    mixed = Ensemble((APGD(name="apgd-mse"), PGD(name="pgd-ssim", loss="ssim")))
    with pytest.raises(ValueError, match="no config form"):
        setting_to_config(setting.with_attack(mixed))


def test_apgd_settings_round_trip() -> None:
    cfg = AttackConfig(
        kind="apgd", losses=("mse",), steps=37, restarts=2, k_attack=3, noise="fixed",
        space="measurement", fallback_queries=99,
    )  # fmt: skip
    setting = setting_from_config(cfg, "auto")
    assert isinstance(setting.attack, APGD) and setting.attack.steps == 37
    assert setting.name == "auto-measurement"
    assert setting_to_config(setting) == cfg
    assert setting_from_config(setting_to_config(setting), "auto") == setting


def test_apgd_refuses_the_settings_only_pgd_reads() -> None:
    from smoothrecon.errors import UserError

    with pytest.raises(UserError, match=r"attack\.step_factor = 0\.5 is a PGD setting"):
        load_config("smoke", overrides=["attack.kind=apgd", "attack.step_factor=0.5"])


def test_attack_settings_round_trip_with_every_field_changed() -> None:
    """Each AttackConfig field changed from its default (one at a time and all together)
    survives config -> setting -> config, and setting -> config -> setting is the identity."""
    hints = typing.get_type_hints(AttackConfig)
    base = AttackConfig(kind="pgd")  # every field read (APGD refuses PGD's step fields)
    everything = {}
    for f in dataclasses.fields(AttackConfig):
        changed = dataclasses.replace(
            base, **{f.name: other_value(getattr(base, f.name), hints[f.name])}
        )
        if f.name != "kind":  # APGD with changed PGD fields is refused (test below)
            everything[f.name] = getattr(changed, f.name)
        setting = setting_from_config(changed, "mine")
        assert setting_to_config(setting) == changed, f.name
        assert setting_from_config(setting_to_config(setting), "mine") == setting, f.name
        assert setting != setting_from_config(base, "mine"), f.name  # the field is held
    all_changed = dataclasses.replace(base, **everything)
    assert setting_to_config(setting_from_config(all_changed, "x")) == all_changed


def test_a_setting_names_itself_and_its_space() -> None:
    s = AttackSetting(PGD(name="strong"), "measurement", EOT(3, "fixed"), 99)
    assert s.name == "strong-measurement"
    assert s.describe()["attack"]["steps"] == PGD().steps and s.describe()["eot"]["k_attack"] == 3


def test_a_users_attack_has_no_config_form() -> None:
    class Mine:
        name = "mine"

        def __call__(self, forward, y, target, eps, generator):
            return torch.zeros_like(y)

    with pytest.raises(ValueError, match="no config form"):
        setting_to_config(AttackSetting(Mine()))


def _denoiser_checkpoint(folder: Path) -> Path:
    cfg = load_config("smoke", overrides=["train.mode=denoiser", "train.sigma_f=0.3"])
    model = build_model(cfg.model, build_operator(cfg.operator))
    norm = Normalization((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    return save_model(folder / "best.safetensors", model, checkpoint_meta(cfg, norm))


def test_every_defence_kind_is_covered() -> None:
    assert set(DEFENSES) == {"denoised", "median", "projection"}


def test_median_smoothing_round_trips_and_describes_itself() -> None:
    median = MedianSmoothing(0.3)
    assert defense_from_config(defense_to_config(median)) == median
    assert defense_to_config(MedianSmoothing()) == {"kind": "median", "percentile": 0.5}
    assert describe_defense(median) == {"kind": "median", "name": "p0.3", "percentile": 0.3}
    assert smoothing_percentile(median) == 0.3 and MedianSmoothing().name == "med"
    with pytest.raises(ValueError, match="percentile"):
        defense_from_config({"kind": "median", "percentile": 1.5})


def test_defences_round_trip(tmp_path: Path) -> None:
    projection = Projection(tol=1e-4, max_iter=17, method="cg")
    assert defense_from_config(defense_to_config(projection)) == projection
    assert defense_from_config(defense_to_config(Projection())) != projection
    denoised = DenoisedSmoothing.load(_denoiser_checkpoint(tmp_path))
    assert denoised.sigma == 0.3 and denoised.key
    back = defense_from_config(defense_to_config(denoised))
    assert back == denoised and back.describe() == denoised.describe()


def test_bad_defence_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown defence kind"):
        defense_from_config({"kind": "mean"})
    with pytest.raises(ValueError, match="bad parameters"):
        defense_from_config({"kind": "projection", "tolerance": 1.0})


def test_on_mse_keeps_the_mse_members_of_an_ensemble() -> None:
    """A certificate bounds the MSE: certify attacks with the ensemble's MSE members only."""
    both = setting_from_config(AttackConfig(kind="apgd", losses=("mse", "ssim")), "strong")
    aimed = both.on_mse()
    assert [m.name for m in aimed.attack.members] == ["apgd-mse"]
    assert aimed.attack.name == "strong" and aimed.eot == both.eot
    one = setting_from_config(AttackConfig(losses=("ssim",)), "strong")
    assert one.on_mse() is one  # no ensemble: unchanged
