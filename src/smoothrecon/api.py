"""The Python API's entry points that take a user's model: evaluate and certify it.

The same paths as the CLI: a run folder written here is read by `smoothrecon report`.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from torch import nn

from smoothrecon.attacks.protocol import check_attack
from smoothrecon.attacks.setting import AttackSetting, setting_from_config
from smoothrecon.certification.certify import CertificateRecord
from smoothrecon.certification.run import CertifyRunSettings, certify_model
from smoothrecon.config import Config, load_config
from smoothrecon.defenses.base import check_defense
from smoothrecon.evaluation.defended import defended
from smoothrecon.evaluation.loading import checkpoint_model
from smoothrecon.evaluation.records import Record
from smoothrecon.evaluation.unit import EvalModel, EvalSettings
from smoothrecon.experiments.evaluate import (
    attack_settings,
    baseline_models,
    claim_evaluation,
    eval_splits,
    evaluate_models,
)
from smoothrecon.models.info import ModelInfo
from smoothrecon.models.normalization import PIXEL_SPACE, Normalization
from smoothrecon.models.own import module_key
from smoothrecon.operators import Operator, SuperResolution, operator_config
from smoothrecon.operators.foreign import ForeignOperator, as_operator


def _api_config(
    operator: Operator, data: str | Path, preset: str, overrides: Sequence[str]
) -> Config:
    """The preset's evaluation scale on `data`, with every parameter of a built-in operator:
    the config the run folder saves. An operator the config cannot describe exactly is
    refused rather than evaluated under another one's name; a user's operator
    (`ForeignOperator`) keeps the preset's operator section, and run folders record its own
    description instead."""
    sets = [f"data.source={data}"]
    if isinstance(operator, ForeignOperator):
        return load_config(preset, overrides=[*sets, *overrides])
    try:
        exact = operator_config(operator)
    except ValueError as exc:
        raise ValueError(f"{exc}; a run folder would record another operator") from None
    section = {"operator": dataclasses.asdict(exact)}
    return load_config(preset, overrides=[*sets, *overrides], extra=[section])


def _api_settings(cfg: Config, attacks: Sequence[object] | None, attack: str) -> EvalSettings:
    """The evaluation settings: the preset's, with `attacks` (attack objects, or
    `AttackSetting`s) in place of the named built-in setting when given. A bare attack runs in
    the config's threat model (attack.space) with its EOT and gradient-free budget."""
    if attacks is None:
        return EvalSettings.from_config(cfg, attack_settings(attack, cfg.attack))
    base = setting_from_config(cfg.attack)
    named: dict[str, AttackSetting] = {}
    for a in attacks:
        s = a if isinstance(a, AttackSetting) else base.with_attack(check_attack(a))
        if s.name in named:
            raise ValueError(f"two attacks are both called '{s.name}'; give them other names")
        named[s.name] = s
    if not named:
        raise ValueError("attacks=[] holds no attack; leave it out for the preset's attack")
    return EvalSettings.from_config(cfg, named)


def evaluate(
    model: nn.Module,
    data: str | Path = "default",
    operator: object | None = None,
    normalization: Normalization | None = None,
    eps_rels: Sequence[float] | None = None,
    sigmas: Sequence[float] | None = None,
    out: str | Path | None = None,
    *,
    preset: str = "cpu",
    overrides: Sequence[str] = (),
    attack: str = "strong",
    attacks: Sequence[object] | None = None,
    defenses: Sequence[object] = (),
    split: str = "test",
    rs_pgd: bool | None = None,
    baselines: bool = False,
    label: str = "model",
    force_new: bool = False,
) -> list[Record]:
    """Evaluate any torch.nn.Module under attack, with and without smoothing.

    `model` maps the network input (the back-projected measurement A_dagger(A(x)), shape
    (B, 3, H, W)) to a reconstruction of the same shape. `normalization=None`: the model works
    on pixel-space images in [0, 1], where eps = sqrt(d) eps_rel and sigma_g then live; else
    the per-channel Normalization(mean, std) it was trained with. `data`: a folder of photos or
    "default"; the preset (and `overrides`, "section.key=value") sets the evaluation scale:
    crops, k, sigma grid, attack. `sigmas` defaults to the preset's grid, `eps_rels` to its
    attack levels.

    Extension points (docs/architecture.md): `operator` is a built-in operator or any object
    with A, A_adjoint, A_dagger and measure (default super-resolution x2); `attacks` a list of
    attack objects (a `name` and a call (forward, y, target, eps, generator) -> e, ||e|| <=
    eps) or `AttackSetting`s, run on f and, with EOT, on g (default: the preset's `attack`
    setting); `defenses` a list of defence objects (a `name` and defend(model, context) ->
    module): each adds the model behind it, labelled "<label>+<name>".

    `out`: the run folder (`smoothrecon report out` reads it); None: a temporary one. A folder
    of another evaluation is refused (as the CLI does), unless `force_new` moves it aside.
    Returns the records (`smoothrecon.evaluation.records.Record`).
    """
    op = as_operator(operator if operator is not None else SuperResolution(2))
    cfg = _api_config(op, data, preset, overrides)
    settings = _api_settings(cfg, attacks, attack)
    settings = dataclasses.replace(
        settings,
        eps_rels=tuple(eps_rels) if eps_rels is not None else settings.eps_rels,
        sigmas=tuple(sigmas) if sigmas is not None else settings.sigmas,
        rs_pgd=settings.rs_pgd if rs_pgd is None else rs_pgd,
    )
    space = "pixel" if normalization is None else "normalized"
    factor = getattr(op, "factor", 1)
    info = ModelInfo(
        label, factor, "own", mode="own", smoothed=max(settings.sigmas) > 0, input_space=space
    )
    own = EvalModel(model, info, normalization or PIXEL_SPACE, module_key(model))
    models = [own, *(defended(own, check_defense(d), op) for d in defenses)]
    models += baseline_models(op) if baselines else []
    with tempfile.TemporaryDirectory() as tmp:
        folder = out or tmp
        claim_evaluation(folder, cfg, models, split, op, force_new)
        return evaluate_models(models, cfg, settings, folder, eval_splits(split), op, verbose=False)


def _checkpoint_config(
    trained: dict, data: str | Path, preset: str | None, overrides: Sequence[str]
) -> Config:
    """As the CLI: a checkpoint's own config (`trained`), or with a preset that preset's
    scale and only the checkpoint's operator, model and training; on `data`."""
    owned = ("operator", "model", "train") if preset else tuple(trained)
    base = {k: trained[k] for k in owned if k in trained and k != "preset"}
    sets = [f"data.source={data}"] if str(data) != "default" else []
    name = preset or trained.get("preset", "cpu")
    return load_config(name, overrides=[*sets, *overrides], extra=[base])


def certify(
    model: nn.Module | str | Path,
    data: str | Path = "default",
    operator: object | None = None,
    normalization: Normalization | None = None,
    sigma_g: float = 0.5,
    eps_rels: Sequence[float] = (0.001, 0.005),
    n: int = 2000,
    alpha: float = 0.001,
    method: str = "pixel",
    out: str | Path | None = None,
    *,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    split: str = "test",
    label: str = "model",
    progress: bool = False,
    percentile: float = 0.5,
) -> list[CertificateRecord]:
    """Certified PSNR lower bounds beside the PSNR the EOT attack on G reaches.

    `model`: a checkpoint file or run folder (its operator, architecture and normalization;
    its config, or with `preset` that preset's scale), or any torch.nn.Module mapping
    the network input (B, 3, H, W) to a reconstruction of the same shape, on pixel-space
    images (`normalization=None`) or on Normalization(mean, std) ones, with `operator`
    (default SuperResolution(2)). sigma_g, eps = sqrt(d) eps_rel: the model-input space. One
    record per (method, crop, eps_rel), see this module's docstring; `method`: pixel, center,
    median (at `percentile`), loss, both or all (docs/certify.md); `out`: the folder of
    certificates.jsonl (None: a temporary one).
    """
    if isinstance(model, str | Path):
        config_of = partial(_checkpoint_config, data=data, preset=preset, overrides=overrides)
        own, cfg = checkpoint_model(model, config_of, smoothed=True)
        operator = None  # the checkpoint's own operator (cfg.operator)
    else:
        operator = as_operator(operator if operator is not None else SuperResolution(2))
        cfg = _api_config(operator, data, preset or "cpu", overrides)
        space = "pixel" if normalization is None else "normalized"
        factor = getattr(operator, "factor", 1)
        info = ModelInfo(label, factor, "own", mode="own", smoothed=True, input_space=space)
        own = EvalModel(model, info, normalization or PIXEL_SPACE, module_key(model))
    asked = CertifyRunSettings(sigma_g, tuple(eps_rels), n, alpha, method, percentile)
    s = asked.with_config(cfg, progress=progress)
    with tempfile.TemporaryDirectory() as tmp:
        return certify_model(own, cfg, split, s, out or tmp, operator, verbose=progress)
