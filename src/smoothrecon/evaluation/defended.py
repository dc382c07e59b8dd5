"""A model behind a defence, as evaluations take it: the one way every front end (the sweep,
`evaluate --denoiser/--project`, `sr.evaluate(defenses=[...])`) builds one."""

from __future__ import annotations

import dataclasses

from smoothrecon.defenses.base import (
    Defense,
    DefenseContext,
    check_defense,
    defense_kind,
    describe_defense,
    is_smoothed,
    smoothing_percentile,
)
from smoothrecon.evaluation.unit import EvalModel
from smoothrecon.operators import Operator
from smoothrecon.util.io import short_hash


def defended(model: EvalModel, defense: Defense, operator: Operator) -> EvalModel:
    """f behind `defense`: labelled "<f>+<name>", reported smoothed when f is or when the
    defence puts the sigma_g grid on top (`is_smoothed`, aggregated by the defence's
    percentile where it has one), keyed by f's key and the defence's whole description. f's
    input normalization must be known (not a baseline's None)."""
    check_defense(defense)
    if model.norm is None:
        raise ValueError(
            f"defence '{defense.name}' needs {model.info.model}'s input normalization; "
            "no-learning baselines are not defended"
        )
    if model.info.defense:
        raise ValueError(
            f"{model.info.model} is behind the defence '{model.info.defense}' already; "
            "defend the model itself"
        )
    info = dataclasses.replace(
        model.info,
        model=f"{model.info.model}+{defense.name}",
        smoothed=model.info.smoothed or is_smoothed(defense),
        defense=defense.name,
        defense_kind=defense_kind(defense),
    )
    module = defense.defend(model.module, DefenseContext(operator, model.norm))
    key = f"{model.key}+{short_hash(describe_defense(defense), 16)}"
    return EvalModel(module, info, model.norm, key, smoothing_percentile(defense))
