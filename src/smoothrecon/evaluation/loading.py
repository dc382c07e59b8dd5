"""A trained checkpoint as a model to evaluate: the one loading path of the CLI and the Python
API (`evaluate`, `attack`, `certify` on a checkpoint file or run folder), with one label rule."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from smoothrecon.config import Config
from smoothrecon.errors import UserError
from smoothrecon.evaluation.unit import EvalModel
from smoothrecon.models.checkpoint import (
    load_model,
    model_config,
    model_normalization,
    trained_info,
)
from smoothrecon.models.own import module_key
from smoothrecon.operators import build_operator, problem_tag


def checkpoint_label(path: str | Path) -> str:
    """A readable label: the run folder's name for <run>/best.safetensors, <run>/best (the
    suffix left out) or <run>; never cut at another dot ("x2-rs0.1")."""
    p = Path(path)
    name = p.name.removesuffix(".safetensors")
    if name in ("best", "last"):
        return p.parent.name
    return name or p.name


def checkpoint_model(
    path: str | Path, config_of: Callable[[dict[str, Any]], Config], smoothed: bool = False
) -> tuple[EvalModel, Config]:
    """(the model of a checkpoint file or run folder, the config it is evaluated with).

    A trained checkpoint brings its operator, architecture and normalization (never the data
    folder's statistics); config_of(its saved config as a dict) gives the evaluation's config,
    whose operator must be the one it was trained for (else one error line naming both)."""
    module, meta = load_model(path)
    cfg = config_of(meta["config"])
    trained = model_config(meta).operator
    if cfg.operator != trained:
        what = {k: v for k, v in cfg.to_dict()["operator"].items() if getattr(trained, k) != v}
        raise UserError(
            f"the model was trained for {problem_tag(build_operator(trained))} "
            f"({trained.name}) but the config asks for "
            f"{problem_tag(build_operator(cfg.operator))} ({what}); evaluate it with its own "
            f"operator"
        )
    info = trained_info(checkpoint_label(path), cfg, smoothed=smoothed)
    return EvalModel(module, info, model_normalization(meta), module_key(module)), cfg
