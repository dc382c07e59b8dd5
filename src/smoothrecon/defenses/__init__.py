"""Defences that wrap a model into an estimator (`base.Defense`): denoised smoothing, median
(percentile) smoothing and the range projection as registered defences, and mean smoothing,
the sigma_g grid every smoothed model is evaluated on (`smoothing`)."""

import dataclasses
from typing import Any

from smoothrecon.defenses.base import Defense, DefenseContext
from smoothrecon.defenses.denoised import DenoisedSmoothing
from smoothrecon.defenses.median import MedianSmoothing
from smoothrecon.defenses.projection import Projection

# The built-in defences by kind (a user's defence needs no entry: any object of the protocol).
DEFENSES: dict[str, type] = {
    "denoised": DenoisedSmoothing,
    "median": MedianSmoothing,
    "projection": Projection,
}


def defense_to_config(defense: Defense) -> dict[str, Any]:
    """The config form of a built-in defence: {"kind": ..., its parameters}; a denoiser is
    named by its checkpoint (`source`). A user's defence has none: ValueError."""
    if isinstance(defense, Projection | MedianSmoothing):
        return {"kind": defense.kind, **dataclasses.asdict(defense)}
    if isinstance(defense, DenoisedSmoothing):
        if not defense.source:
            raise ValueError("a denoiser handed in as a module has no config form (no source)")
        return {"kind": defense.kind, "source": defense.source}
    raise ValueError(f"defence '{defense.name}' is not a built-in one and has no config form")


def defense_from_config(config: dict[str, Any]) -> Defense:
    """The built-in defence of a config form (`defense_to_config`): the one way the CLI and the
    sweep build one. Unknown kinds and parameters raise ValueError."""
    params = dict(config)
    kind = params.pop("kind", None)
    if kind not in DEFENSES:
        raise ValueError(f"unknown defence kind {kind!r}; known: {', '.join(DEFENSES)}")
    if kind == "denoised":
        if set(params) != {"source"}:
            raise ValueError(f"a denoised defence takes its checkpoint `source` only, got {params}")
        return DenoisedSmoothing.load(params["source"])
    try:
        return DEFENSES[kind](**params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for the {kind} defence: {exc}") from None


__all__ = [
    "DEFENSES",
    "Defense",
    "DefenseContext",
    "DenoisedSmoothing",
    "MedianSmoothing",
    "Projection",
    "defense_from_config",
    "defense_to_config",
]
