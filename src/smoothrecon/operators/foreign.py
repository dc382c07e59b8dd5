"""Anyone's forward operator: an object with A, A_adjoint, A_dagger and measure, adapted to
`Operator` so the whole pipeline (inputs, measurement-space attacks, the range projection,
baselines, records) takes it like a built-in one.

Optional, read when present: `name` (labels and records; default the class name), `sigma_y`
(measurement noise std in pixels, 0 by default: `measure` draws the noise anyway),
`describe()` (its parameters, for run folders and unit keys; by default its name, class and
public scalar attributes), `restrict_noise`, `measurement_count` and `check_size`.
"""

from __future__ import annotations

from typing import Any

import torch

from smoothrecon.operators.base import Operator

VERBS = ("A", "A_adjoint", "A_dagger", "measure")


class ForeignOperator(Operator):
    """A user's operator object as an `Operator` (see the module docstring)."""

    def __init__(self, inner: object):
        missing = [v for v in VERBS if not callable(getattr(inner, v, None))]
        if missing:
            raise ValueError(
                f"{inner!r} is not an operator: it lacks {', '.join(missing)} (an operator has "
                f"{', '.join(VERBS)})"
            )
        self.inner = inner
        self.name = str(getattr(inner, "name", type(inner).__name__))  # type: ignore[misc]
        self.sigma_y = float(getattr(inner, "sigma_y", 0.0))

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.A(x)  # type: ignore[attr-defined]

    def A_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        return self.inner.A_adjoint(v)  # type: ignore[attr-defined]

    def A_dagger(self, v: torch.Tensor) -> torch.Tensor:
        return self.inner.A_dagger(v)  # type: ignore[attr-defined]

    def measure(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.inner.measure(x, generator)  # type: ignore[attr-defined]

    def describe(self) -> dict[str, Any]:
        own = getattr(self.inner, "describe", None)
        if callable(own):
            return {"name": self.name, **dict(own())}
        cls = type(self.inner)
        scalars = {
            k: v
            for k, v in vars(self.inner).items()
            if not k.startswith("_") and isinstance(v, bool | int | float | str)
        }
        return {"name": self.name, "class": f"{cls.__module__}.{cls.__qualname__}", **scalars}

    def check_size(self, h: int, w: int) -> None:
        own = getattr(self.inner, "check_size", None)
        if callable(own):
            own(h, w)
        else:
            super().check_size(h, w)

    def restrict_noise(self, n: torch.Tensor) -> torch.Tensor:
        own = getattr(self.inner, "restrict_noise", None)
        return own(n) if callable(own) else n

    def measurement_count(self, shape: tuple[int, int, int]) -> int:
        own = getattr(self.inner, "measurement_count", None)
        return int(own(shape)) if callable(own) else super().measurement_count(shape)


def as_operator(operator: object) -> Operator:
    """`operator` itself when it is an `Operator`, else adapted (`ForeignOperator`)."""
    return operator if isinstance(operator, Operator) else ForeignOperator(operator)
