"""What a defence is: an object that wraps a model f into the estimator that is attacked.

    defense.defend(f, context) -> module,   module: (B, C, H, W) network input -> output

with a `name` (records label the defended model "<f>+<name>"). The context gives what a
defence may need besides f: the operator and the normalization of f's input space. A defence
with `smoothed = True` is evaluated like a model trained for smoothing: the sigma_g grid (mean
smoothing, `defenses.smoothing`) on top, sigma_g* chosen on validation, and the attack on g
with EOT (denoised smoothing is one); one that also has a `percentile` aggregates the draws by
that percentile instead of the mean (median smoothing, `defenses.median`). Every defence is
attacked white-box through its module; a defence whose gradients are masked is caught by the
attack check (`evaluation.check`).

The built-ins are registered in `DEFENSES`; `describe_defense` is what run folders record and
unit keys hash.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import nn

from smoothrecon.models.normalization import Normalization
from smoothrecon.operators import Operator


@dataclass(frozen=True)
class DefenseContext:
    """What a defence may use besides f: the forward operator and f's input normalization."""

    operator: Operator
    norm: Normalization


@runtime_checkable
class Defense(Protocol):
    """A defence (see the module docstring)."""

    @property
    def name(self) -> str: ...

    def defend(self, model: nn.Module, context: DefenseContext) -> nn.Module: ...


def check_defense(defense: object) -> Defense:
    """`defense` if it has a string `name` and a `defend` method, else ValueError."""
    name = getattr(defense, "name", None)
    if not isinstance(name, str) or not name or not callable(getattr(defense, "defend", None)):
        raise ValueError(
            f"{defense!r} is not a defence: it needs a non-empty string `name` and a method "
            "defend(model, context) -> nn.Module"
        )
    if "/" in name or "+" in name:
        raise ValueError(f"a defence's name goes into labels and folders: '{name}' has / or +")
    return defense  # type: ignore[return-value]


def is_smoothed(defense: Defense) -> bool:
    """Whether the sigma_g grid is evaluated on top of the defended model."""
    return bool(getattr(defense, "smoothed", False))


def smoothing_percentile(defense: Defense) -> float | None:
    """The percentile a smoothed defence aggregates its draws by (`percentile`: median
    smoothing), None for the mean."""
    p = getattr(defense, "percentile", None)
    return float(p) if is_smoothed(defense) and p is not None else None


def defense_kind(defense: Defense) -> str:
    """The kind of a built-in defence (its class's `kind`), else the class name of a user's."""
    kind = getattr(type(defense), "kind", None)
    return kind if isinstance(kind, str) else type(defense).__name__


def describe_defense(defense: Defense) -> dict[str, Any]:
    """Every parameter of `defense`: its own describe(), else its kind, name and (for a
    dataclass) fields."""
    describe = getattr(defense, "describe", None)
    if callable(describe):
        return dict(describe())
    out: dict[str, Any] = {"kind": defense_kind(defense), "name": defense.name}
    if dataclasses.is_dataclass(defense):
        out.update(
            {
                f.name: getattr(defense, f.name)
                for f in dataclasses.fields(defense)
                if isinstance(getattr(defense, f.name), bool | int | float | str)
            }
        )
    return out
