"""A unit's key covers everything its records depend on (issue 24): each field of the objects
that make a unit (the data config, the operator's description, every attack setting field, the
evaluation settings, the model's record fields) is changed one at a time, enumerated from the
objects themselves, and the key must change. A field added later is covered without editing
this file."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from field_values import other_value

from smoothrecon.attacks.setting import setting_from_config
from smoothrecon.config import AttackConfig, DataConfig, OperatorConfig
from smoothrecon.evaluation.unit import EvalSettings
from smoothrecon.experiments.units import UnitIdentity
from smoothrecon.models.info import ModelInfo
from smoothrecon.operators import OPERATOR_FIELDS, build_operator

EPS_REL = 0.1
SPLITS = ("val", "test")
# What a unit at one eps_rel does not depend on: the other eps_rels of the evaluation.
NOT_IN_A_UNIT = {"eps_rels"}


def _settings(**changes: object) -> EvalSettings:
    strong = setting_from_config(AttackConfig(kind="pgd", steps=7), "strong")
    base = EvalSettings(
        eps_rels=(0.0, EPS_REL),
        sigmas=(0.0, 0.25, 0.5),
        k=8,
        attacks={"strong": strong},
        rs_pgd=True,
        attacks_g={
            "strong": setting_from_config(AttackConfig(kind="pgd", steps=5, k_attack=4), "strong")
        },
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


BASE = dict(
    info=ModelInfo("x2/thesis/rs0.1", 2, "unet", "thesis", "gaussian", 0.1, smoothed=True),
    model_key="weights",
    data=DataConfig(),
    operator=build_operator(OperatorConfig()),
    settings=_settings(),
    eps_rel=EPS_REL,
    splits=SPLITS,
)


def _key(**changes: object) -> str:
    return UnitIdentity(**{**BASE, **changes}).key()  # type: ignore[arg-type]


def _changed(obj: object, field: str) -> object:
    """The dataclass `obj` with `field` changed to another valid value."""
    hints = typing.get_type_hints(type(obj))
    value = other_value(getattr(obj, field), hints[field])
    return dataclasses.replace(obj, **{field: value})  # type: ignore[type-var]


def test_the_key_is_stable() -> None:
    assert _key() == _key()


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(DataConfig)])
def test_every_data_field_changes_the_key(field: str) -> None:
    data = _changed(DataConfig(), field)
    if field == "cache_dir":  # a location, not a setting
        assert _key(data=data) == _key()
    else:
        assert _key(data=data) != _key(), field


@pytest.mark.parametrize("name", sorted(OPERATOR_FIELDS))
def test_every_operator_parameter_changes_the_key(name: str) -> None:
    base_cfg = OperatorConfig(name=name)  # type: ignore[arg-type]
    base = _key(operator=build_operator(base_cfg))
    hints = typing.get_type_hints(OperatorConfig)
    for field in OPERATOR_FIELDS[name]:
        value = getattr(base_cfg, field)
        new = 0.02 if field == "sigma_y" else other_value(value, hints[field])
        op = build_operator(dataclasses.replace(base_cfg, **{field: new}))
        assert _key(operator=op) != base, (name, field)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(AttackConfig)])
def test_every_attack_field_changes_the_key(field: str) -> None:
    """On f and on g: each AttackConfig field, through the setting object built from it."""
    changed = _changed(AttackConfig(kind="pgd", steps=7), field)
    on_f = _settings(attacks={"strong": setting_from_config(changed, "strong")})
    assert _key(settings=on_f) != _key(), field
    on_g = _settings(attacks_g={"strong": setting_from_config(changed, "strong")})
    assert _key(settings=on_g) != _key(), field


def test_the_attacks_name_changes_the_key() -> None:
    renamed = setting_from_config(AttackConfig(kind="pgd", steps=7), "other")
    assert _key(settings=_settings(attacks={"other": renamed})) != _key()


@pytest.mark.parametrize(
    "field", [f.name for f in dataclasses.fields(EvalSettings) if f.name not in NOT_IN_A_UNIT]
)
def test_every_evaluation_setting_changes_the_key(field: str) -> None:
    special = {
        "attacks": {"strong": setting_from_config(AttackConfig(kind="pgd", steps=8), "strong")},
        "attacks_g": {},
        "rs_pgd_eps_rels": (0.5,),  # g no longer attacked at this eps_rel
        "rs_pgd_spaces": ("measurement",),  # ... nor in the input space
        "k": "auto",
    }
    if field in special:
        changed = _settings(**{field: special[field]})
    else:
        changed = _changed(_settings(), field)
    assert _key(settings=changed) != _key(), field


def test_the_other_eps_rels_of_an_evaluation_do_not_change_a_unit() -> None:
    assert _key(settings=_settings(eps_rels=(EPS_REL, 0.2))) == _key()


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(ModelInfo)])
def test_every_model_field_changes_the_key(field: str) -> None:
    info = _changed(BASE["info"], field)
    assert _key(info=info) != _key(), field


def test_the_model_the_crops_and_the_eps_change_the_key() -> None:
    assert _key(model_key="other weights") != _key()
    assert _key(splits=("test",)) != _key()
    assert _key(eps_rel=0.2) != _key()
