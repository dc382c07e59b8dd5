"""Forward operators A (the physics), kept apart from the models that invert them.

Every operator has deepinv's verbs (see `base.Operator`): A, A_adjoint, A_dagger, measure,
and op(x) = A_dagger(A(x)), the network input for a clean image. `OPERATORS` is the one table
from names to classes; `make_operator(name, **params)` and `build_operator(cfg.operator)` build
from it. A new inverse problem is one new module with one `Operator` subclass, listed here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, overload

from smoothrecon.config import OPERATOR_FIELDS, OperatorConfig
from smoothrecon.operators.base import Operator
from smoothrecon.operators.compressed_sensing import CompressedSensing
from smoothrecon.operators.deblurring import Deblurring
from smoothrecon.operators.denoising import Denoising
from smoothrecon.operators.inpainting import Inpainting
from smoothrecon.operators.super_resolution import SuperResolution

__all__ = [
    "OPERATORS",
    "CompressedSensing",
    "Deblurring",
    "Denoising",
    "Inpainting",
    "Operator",
    "SuperResolution",
    "build_operator",
    "make_operator",
    "operator_config",
    "problem_tag",
]

OPERATORS: dict[str, type[Operator]] = {
    cls.name: cls for cls in (SuperResolution, Denoising, Deblurring, Inpainting, CompressedSensing)
}

CONFIG_FIELDS = OPERATOR_FIELDS  # the config's table of which fields each operator reads


def problem_tag(operator: Operator) -> str:
    """How model labels name the inverse problem: "x2" for super-resolution x2, else the
    operator's name (e.g. "denoising")."""
    return f"x{operator.factor}" if isinstance(operator, SuperResolution) else operator.name


def make_operator(name: str, **params: Any) -> Operator:
    """The operator called `name` with keyword parameters, e.g. make_operator("deblurring",
    blur_std=2.0). Unknown names and parameters raise ValueError."""
    if name not in OPERATORS:
        raise ValueError(f"unknown operator '{name}'; known operators: {', '.join(OPERATORS)}")
    try:
        return OPERATORS[name](**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for operator '{name}': {exc}") from None


def operator_params(cfg: OperatorConfig) -> dict[str, Any]:
    """The keyword parameters of `cfg.name`'s class taken from the config."""
    values = dataclasses.asdict(cfg)
    params = {k: values[k] for k in CONFIG_FIELDS[cfg.name]}
    if params.get("sigma_y") == "default":
        del params["sigma_y"]
    return params


def operator_config(operator: Operator) -> OperatorConfig:
    """The config of a built-in operator, every parameter of it: build_operator(
    operator_config(op)) == op. An operator the config cannot describe exactly (a user's, or
    a parameter the config has no field for, such as a deblurring `reg` of one's own) is
    refused with ValueError rather than written down as another one."""
    desc = operator.describe()
    name = desc.get("name")
    if name not in OPERATORS or type(operator) is not OPERATORS[name]:
        raise ValueError(f"the operator {desc} is not a built-in one and has no config form")
    cfg = OperatorConfig(name=name, **{k: desc[k] for k in CONFIG_FIELDS[name] if k in desc})
    rebuilt = build_operator(cfg).describe()
    if rebuilt != desc:
        diff = sorted(k for k in {*desc, *rebuilt} if desc.get(k) != rebuilt.get(k))
        raise ValueError(
            f"the operator {desc} cannot be written to a config exactly (differs in {diff})"
        )
    return cfg


@overload
def build_operator(cfg: OperatorConfig) -> Operator: ...
@overload
def build_operator(cfg: str, factor: int, quantize: bool = False) -> SuperResolution: ...
def build_operator(
    cfg: OperatorConfig | str, factor: int | None = None, quantize: bool = False
) -> Operator:
    """The operator of `cfg` (an OperatorConfig), or the legacy form build_operator(name,
    factor, quantize), which builds super-resolution only."""
    if isinstance(cfg, OperatorConfig):
        return make_operator(cfg.name, **operator_params(cfg))
    if cfg != "super_resolution":
        raise ValueError(
            f"unknown operator '{cfg}' for build_operator(name, factor, quantize), which builds "
            f"super_resolution only; use build_operator(OperatorConfig(name=...)) for "
            f"{', '.join(OPERATORS)}"
        )
    assert factor is not None, "build_operator(name, factor) needs the factor"
    return SuperResolution(factor, quantize)
