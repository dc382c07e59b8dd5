"""Model checkpoints: weights (+ optimizer state) in safetensors, metadata as JSON in its header.

The metadata carries everything later commands need to use the model without guessing: the full
resolved config, the normalization mean/std, the operator, epoch and step, and versions.
`load_model` never executes code from the file.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smoothrecon.config import Config, config_from_dict, problem_factor
from smoothrecon.errors import UserError
from smoothrecon.models import build_model
from smoothrecon.models.info import ModelInfo
from smoothrecon.models.normalization import Normalization
from smoothrecon.operators import Operator, build_operator
from smoothrecon.util.io import load_checkpoint, save_checkpoint
from smoothrecon.util.version import VERSION

FORMAT = "smoothrecon-checkpoint-v1"


def checkpoint_meta(cfg: Config, norm: Normalization, **extra: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "config": cfg.to_dict(),
        "normalization": norm.to_dict(),
        "operator": build_operator(cfg.operator).describe(),
        "model": {
            "name": cfg.model.name,
            "channels": list(cfg.model.channels),
            "activation": cfg.model.activation,
            "residual": cfg.model.residual,
        },
        "versions": {
            "smoothrecon": VERSION,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        **extra,
    }


def save_model(
    path: str | Path,
    model: nn.Module,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
) -> Path:
    """One file with model.* (and optim.*) tensors; param_groups go in the metadata."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta = dict(meta)
    if optimizer is not None:
        sd = optimizer.state_dict()
        for idx, state in sd["state"].items():
            for name, value in state.items():
                t = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"optim.{idx}.{name}"] = t
        meta["optimizer_param_groups"] = sd["param_groups"]
    return save_checkpoint(path, tensors, meta)


def optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Rebuild an optimizer state_dict from a checkpoint written by `save_model`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["optimizer_param_groups"]}


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode on the CPU, metadata) from a checkpoint file or run folder."""
    tensors, meta = load_checkpoint(path)
    if meta.get("format") != FORMAT:
        raise UserError(f"'{path}' has checkpoint format {meta.get('format')!r}, expected {FORMAT}")
    cfg = config_from_dict(meta["config"])
    model = build_model(cfg.model, build_operator(cfg.operator))
    try:
        model.load_state_dict(model_state(tensors), strict=True)
    except RuntimeError:
        raise UserError(
            f"'{path}' does not hold weights of the architecture its metadata names "
            f"({cfg.model.name}, channels {cfg.model.channels})"
        ) from None
    model.eval()
    return model, meta


def model_config(meta: dict[str, Any]) -> Config:
    return config_from_dict(meta["config"])


def model_operator(meta: dict[str, Any]) -> Operator:
    """The operator the model was trained for, with all its parameters (the config's)."""
    return build_operator(config_from_dict(meta["config"]).operator)


def model_normalization(meta: dict[str, Any]) -> Normalization:
    return Normalization.from_dict(meta["normalization"])


def trained_info(label: str, cfg: Config, smoothed: bool = False) -> ModelInfo:
    """The record fields of a checkpoint's U-Net, read off its training config: the mode,
    sigma_f (gaussian, denoiser) or eps_rel (adversarial, with its attack space)."""
    t = cfg.train
    value = {"gaussian": t.sigma_f, "denoiser": t.sigma_f, "adversarial": t.eps_rel}
    return ModelInfo(
        label,
        problem_factor(cfg.operator),
        "unet",
        "residual" if cfg.model.residual else "thesis",
        t.mode,
        value.get(t.mode, 0.0),
        smoothed=smoothed,
        train_space=t.attack_space if t.mode == "adversarial" else "input",
    )
