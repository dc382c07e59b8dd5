"""Evaluate given models into a run folder: the `evaluate` command's path and the Python API's.

Every model is evaluated on the same crops with the same attacks and noise, one unit file per
(model, eps_rel) written by `units.run_evaluation` (the function `reproduce` uses too), keyed by
everything its records depend on: a rerun reuses finished units and recomputes exactly what a
changed grid, k or attack changes. `run.json` lists the current units, so `smoothrecon report`
reads an evaluation folder like a `reproduce` run; `records.jsonl` and `chosen_sigma.json` are
the same records flat, for scripts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smoothrecon.attacks.setting import AttackSetting, setting_from_config
from smoothrecon.config import (
    BASELINES,
    AttackConfig,
    Config,
)
from smoothrecon.data import DataBundle, prepare_data
from smoothrecon.errors import UserError
from smoothrecon.evaluation.check import FAILED_TEXT
from smoothrecon.evaluation.inputs import SplitInputs, split_inputs
from smoothrecon.evaluation.records import Record, headline, sigma_choices, split_roles
from smoothrecon.evaluation.unit import EvalModel, EvalSettings
from smoothrecon.experiments.convergence import thesis_attack
from smoothrecon.experiments.manifest import build_manifest, claim
from smoothrecon.experiments.runner import run_manifest
from smoothrecon.experiments.units import UnitIdentity, run_evaluation
from smoothrecon.models.baselines import BACKPROJECTION, make_baseline
from smoothrecon.models.info import ModelInfo
from smoothrecon.models.normalization import Normalization
from smoothrecon.models.own import check_output_shape
from smoothrecon.operators import Operator, build_operator, problem_tag
from smoothrecon.operators.foreign import ForeignOperator
from smoothrecon.util import distributed
from smoothrecon.util.io import atomic_write_json, atomic_write_text, ensure_dir, write_jsonl
from smoothrecon.util.runtime import Runtime, config_yaml

ATTACK_SETTINGS = ("strong", "thesis", "both")


def attack_settings(name: str, base: AttackConfig) -> dict[str, AttackSetting]:
    """'strong': the config's attack (by default APGD-L2 on the MSE and on SSIM, 100 steps
    each, see AttackConfig); 'thesis': section 4.4's 10 steps of eps/4, last iterate; 'both': strong
    first (it chooses sigma_g*), thesis second."""
    if name not in ATTACK_SETTINGS:
        raise UserError(f"--attack '{name}' is not one of {', '.join(ATTACK_SETTINGS)}")
    out = {}
    if name in ("strong", "both"):
        out["strong"] = setting_from_config(base, "strong")
    if name in ("thesis", "both"):
        out["thesis"] = setting_from_config(thesis_attack(base), "thesis")
    return out


def claim_evaluation(
    out: str | Path,
    cfg: Config,
    models: Sequence[EvalModel],
    split: str,
    operator: Operator,
    force_new: bool = False,
) -> None:
    """An evaluation folder belongs to one set of models, data, operator and smoothing (k,
    sigma grid): another is refused in one line naming the differences (manifest.py), or
    moved aside with `force_new`. The one rule of the CLI and the Python API."""
    if not distributed.current().main:
        return
    extra: dict[str, Any] = {"models": {m.info.model: m.key for m in models}, "split": split}
    if isinstance(operator, ForeignOperator):  # the config does not describe it
        extra["operator"] = operator.describe()
    claim(ensure_dir(out), build_manifest("evaluate", cfg, ("smoothing",), extra=extra), force_new)


def eval_splits(split: str) -> tuple[str, ...]:
    """The splits an evaluation reads: 'test' also needs 'val' to choose sigma_g on."""
    return ("val", "test") if split == "test" else (split,)


def baseline_models(operator: Operator, kinds: Sequence[str] = ()) -> list[EvalModel]:
    """The operator's no-learning baselines (`kinds`, default all of them) in the data's
    normalized space (linear maps: not smoothed)."""
    tag, factor = problem_tag(operator), getattr(operator, "factor", 1)
    return [
        EvalModel(
            make_baseline(kind, operator), ModelInfo(f"{tag}/{kind}", factor, kind), None, kind
        )
        for kind in kinds or BASELINES.get(operator.name, (BACKPROJECTION,))
    ]


def _model_settings(model: EvalModel, settings: EvalSettings) -> EvalSettings:
    if model.info.smoothed:
        return settings
    return dataclasses.replace(settings, sigmas=(0.0,), rs_pgd=False)


def eval_inputs(
    data: DataBundle, op: Operator, norm: Normalization, runtime: Runtime, splits: Sequence[str]
) -> dict[str, SplitInputs]:
    """The crops of `splits` that hold any, in the model's input space (`norm`)."""
    crops = {s: data.eval_set(s).x for s in splits}
    reported = splits[-1]
    if crops[reported].shape[0] == 0:
        raise UserError(
            f"the {reported} split of '{data.config.source}' holds no crops; use --split all to "
            f"evaluate every photo of a folder"
        )
    return {s: split_inputs(x, op, norm, runtime) for s, x in crops.items() if x.shape[0]}


def _print_choices(records: list[Record], model: EvalModel, settings: EvalSettings) -> None:
    """One line per eps_rel: the headline numbers, and sigma_g* for a smoothed model."""
    roles = split_roles(r["split"] for r in records)
    for c in sigma_choices(records, settings.primary):
        row = headline(records, c["eps_rel"], settings.primary, roles)
        if row is None:
            continue
        where = ""
        if model.info.smoothed:
            how = (
                "chosen on val"
                if c["chosen_on"] == "val"
                else f"chosen on the {c['split']} crops themselves: no validation split, an oracle"
            )
            where = (
                f"sigma_g {c['sigma_g']:g} ({how}; {c['split']} oracle {c['sigma_g_oracle']:g})  "
            )
        print(
            f"{model.info.model} eps_rel {c['eps_rel']:g}: {where}{c['split']} PSNR "
            f"{row['psnr']:.2f} dB  SSIM {row['ssim']:.4f}"
        )
        if row.get("attack_failed"):
            extra = " (per crop the worse of PGD and the gradient-free attack)"
            print(f"  warning: {FAILED_TEXT}" + (extra if row.get("gradient_free") else ""))


def evaluate_models(
    models: Sequence[EvalModel],
    cfg: Config,
    settings: EvalSettings,
    out: str | Path,
    splits: tuple[str, ...],
    operator: Operator | None = None,
    verbose: bool = True,
) -> list[Record]:
    """Evaluate `models` on the crops of `cfg.data` at every eps_rel of `settings` into `out`."""
    main = distributed.current().main
    out = ensure_dir(out) if main else Path(out)
    runtime = Runtime.from_config(cfg.runtime)
    data = prepare_data(cfg.data, purpose="evaluate")
    op = operator or build_operator(cfg.operator)
    records: list[Record] = []
    paths: list[Path] = []
    for model in models:
        model = dataclasses.replace(
            model, module=runtime.prepare_model(model.module), norm=model.norm or data.normalization
        )
        shape = (3, cfg.data.crop_size, cfg.data.crop_size)
        check_output_shape(model.module, shape, model.info.model)
        inputs = eval_inputs(data, op, model.space, runtime, splits)
        mine = _model_settings(model, settings)
        rows: list[Record] = []
        for eps_rel in settings.eps_rels:
            unit = UnitIdentity(model.info, model.key, cfg.data, op, mine, eps_rel, splits)
            path = unit.path(out)
            rows += run_evaluation(model, inputs, eps_rel, mine, runtime, path, op)["records"]
            paths.append(path)
        if main and verbose:
            _print_choices(rows, model, mine)
        records += rows
    if main:
        _write_folder(out, cfg, data, settings, paths, records, op)
    return records


def _write_folder(
    out: Path,
    cfg: Config,
    data: DataBundle,
    settings: EvalSettings,
    paths: list[Path],
    records: list[Record],
    operator: Operator,
) -> None:
    cfg = ran_config(cfg, settings)
    manifest = run_manifest("evaluate", cfg, out, data.summary(), paths, dict(settings.attacks))
    # a user's operator is not the config's: the folder records its own description
    foreign = operator.describe() if isinstance(operator, ForeignOperator) else None
    manifest["operator"] = operator.describe()
    if foreign is not None:
        manifest["config"]["operator"] = foreign
    manifest["evaluation"] = {
        "eps_rels": list(settings.eps_rels),
        "sigmas": list(settings.sigmas),
        "k": settings.k,
        "rs_pgd": settings.rs_pgd,
    }
    atomic_write_json(out / "run.json", manifest)
    write_jsonl(out / "records.jsonl", list(records))  # type: ignore[arg-type]
    atomic_write_json(out / "chosen_sigma.json", sigma_choices(records, settings.primary))
    atomic_write_text(out / "config.yaml", config_yaml(cfg, operator=foreign))


def ran_config(cfg: Config, settings: EvalSettings) -> Config:
    """`cfg` with the evaluation values that actually ran (flags such as --eps-rel and
    --sigma-g override the preset's): what config.yaml and the report's resolved config say."""
    return dataclasses.replace(
        cfg,
        evaluation=dataclasses.replace(cfg.evaluation, eps_rels=tuple(settings.eps_rels)),
        smoothing=dataclasses.replace(
            cfg.smoothing,
            sigma_grid=tuple(settings.sigmas),
            k=settings.k if isinstance(settings.k, int) else "auto",
        ),
        experiment=dataclasses.replace(cfg.experiment, rs_pgd=settings.rs_pgd),
    )
