"""Units of work and the one function that does each: train a model, study attack convergence,
evaluate one model at one eps_rel, certify one smoothed model. Executors (serial, Ray) call
`run_unit`; the `evaluate` command and the Python API call `run_evaluation` directly, so every
front end writes the same files:
    <out>/models/<label>-<key>/                 a training run (resumes mid-way, training.py)
    <out>/convergence/<label>/eps<e>-<key>.json  loss / PSNR vs PGD steps (convergence.py)
    <out>/eot/<label>/eps<e>-<key>.json          the attack on g's study (eot_study.py)
    <out>/evals/<label>/eps<e>-<key>.json        records (+ .safetensors with example images)
    <out>/certificates/<label>/certificates.jsonl  certificate records (resume per crop)
    <out>/certificates/<label>/done-<key>.json      written once every record is in
Each key hashes everything its result depends on, so a finished file is reused and a changed
setting recomputes exactly the units it changes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smoothrecon.attacks.threat import ThreatModel
from smoothrecon.certification.run import (
    CertifyRunSettings,
    CertifySplit,
    certify_split,
    run_key,
)
from smoothrecon.config import Config, DataConfig
from smoothrecon.data import DataBundle
from smoothrecon.defenses import DefenseContext, DenoisedSmoothing, defense_from_config
from smoothrecon.defenses.base import Defense, smoothing_percentile
from smoothrecon.evaluation.inputs import SplitInputs, split_inputs
from smoothrecon.evaluation.unit import EvalModel, EvalSettings, evaluate_unit
from smoothrecon.experiments.convergence import StudyPlan, convergence_rows
from smoothrecon.experiments.eot_study import eot_rows
from smoothrecon.experiments.grid import ModelSpec
from smoothrecon.experiments.training import train
from smoothrecon.models import build_model
from smoothrecon.models.checkpoint import load_model
from smoothrecon.models.info import ModelInfo
from smoothrecon.operators import Operator, build_operator
from smoothrecon.util.io import atomic_write_json, load_checkpoint, save_checkpoint, short_hash
from smoothrecon.util.runtime import Runtime

# ModelInfo fields added after runs existed, with their default: a field at its default is
# left out of unit keys, so a run folder from before it keeps its finished units.
_LATER_FIELDS: dict[str, object] = {"train_space": "input", "defense": "", "defense_kind": ""}


def _info_key(info: ModelInfo) -> dict[str, Any]:
    return {k: v for k, v in info.__dict__.items() if _LATER_FIELDS.get(k, object()) != v}


@dataclass(frozen=True)
class UnitIdentity:
    """What one evaluation unit (one model at one eps_rel) is, and so everything its records
    depend on, from the objects' own descriptions: the model (`model_key`: its weights, or its
    training config, and its defence), its record fields, the data (every field but the cache
    location), the operator (`describe()`: every parameter), the splits, and the settings at
    this eps_rel (the attacks' and EOT's full descriptions, the sigma_g grid, k, seeds)."""

    info: ModelInfo
    model_key: str
    data: DataConfig
    operator: Operator
    settings: EvalSettings
    eps_rel: float
    splits: tuple[str, ...]

    def key(self) -> str:
        crops = {k: v for k, v in dataclasses.asdict(self.data).items() if k != "cache_dir"}
        fields = {
            "model": self.model_key,
            "info": _info_key(self.info),
            "data": crops,
            "operator": self.operator.describe(),
            "splits": self.splits,
            "settings": self.settings.unit_fields(self.eps_rel),
        }
        return short_hash(fields, 16)

    def path(self, out: Path) -> Path:
        """The unit's records file under the run folder `out`."""
        return out / "evals" / self.info.slug / f"eps{self.eps_rel:g}-{self.key()}.json"


def run_evaluation(
    model: EvalModel,
    inputs: dict[str, SplitInputs],
    eps_rel: float,
    settings: EvalSettings,
    runtime: Runtime,
    path: Path,
    operator: Operator | None = None,
) -> dict[str, Any]:
    """Evaluate one model at one eps_rel (or read the finished file) and write its records."""
    if path.exists():
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    result = evaluate_unit(model, inputs, eps_rel, settings, runtime, operator)
    payload = {
        "label": model.info.model,
        "model": model.info.__dict__,
        "eps_rel": eps_rel,
        "settings": settings.unit_fields(eps_rel),
        "runtime": runtime.describe(),
        "seconds": time.perf_counter() - t0,
        "records": result.records,
    }
    if result.samples:
        save_checkpoint(path.with_suffix(".safetensors"), result.samples, {"kind": "samples"})
    atomic_write_json(path, payload)
    return payload


@dataclass
class TrainUnit:
    spec: ModelSpec
    cfg: Config
    folder: Path

    def done(self) -> bool:
        best = self.folder / "last.safetensors"
        if not best.exists():
            return False
        _, meta = load_checkpoint(best)
        return bool(meta.get("epoch") == self.cfg.train.epochs)


@dataclass
class StudyUnit:
    """One model's attack-convergence study at one eps_rel, one JSON file."""

    spec: ModelSpec
    cfg: Config
    eps_rel: float
    path: Path
    model_folder: Path | None

    def done(self) -> bool:
        return self.path.exists()


@dataclass
class EOTUnit:
    """One RS model's EOT study (the attack on g) at one eps_rel and its sigma_gs, one file."""

    spec: ModelSpec
    cfg: Config
    eps_rel: float
    sigmas: tuple[float, ...]
    path: Path
    model_folder: Path | None

    def done(self) -> bool:
        return self.path.exists()


@dataclass
class EvalUnit:
    """One model of the sweep at one eps_rel, evaluated with `settings`."""

    spec: ModelSpec
    cfg: Config
    eps_rel: float
    settings: EvalSettings
    path: Path
    model_folder: Path | None
    denoiser_folder: Path | None = None  # denoised smoothing: f o D, D from this folder

    def done(self) -> bool:
        return self.path.exists()


@dataclass
class CertifyUnit:
    """One RS model's certificates (certification_run) on a spread of test crops."""

    spec: ModelSpec
    cfg: Config
    settings: CertifyRunSettings
    crops: int  # test crops certified, spread over the test photos (0: all)
    path: Path  # the done marker; the records go to path.parent / certificates.jsonl
    model_folder: Path | None

    def done(self) -> bool:
        return self.path.exists()


Unit = TrainUnit | StudyUnit | EOTUnit | EvalUnit | CertifyUnit


def _load(cfg: Config, folder: Path | None, runtime: Runtime) -> torch.nn.Module:
    if folder is not None:
        model, _ = load_model(folder / "best.safetensors")
    else:
        model = build_model(cfg.model, build_operator(cfg.operator))
    model = runtime.prepare_model(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _inputs(cfg: Config, data: DataBundle, runtime: Runtime, split: str) -> SplitInputs:
    return split_inputs(
        data.eval_set(split).x, build_operator(cfg.operator), data.normalization, runtime
    )


def _write_study(
    unit: StudyUnit | EOTUnit, rows: list[dict], split: str, t0: float, runtime: Runtime
) -> dict[str, Any]:
    """A study unit's file: its rows, each marked with the model and the split, and what ran."""
    spec = unit.spec
    for r in rows:
        r.update(model=spec.label, factor=spec.factor, mode=spec.mode, variant=spec.variant)
        r["split"] = split
    payload = {
        "label": spec.label,
        "eps_rel": unit.eps_rel,
        "seconds": time.perf_counter() - t0,
        "runtime": runtime.describe(),
        "rows": rows,
    }
    atomic_write_json(unit.path, payload)
    return payload


def run_convergence_unit(unit: StudyUnit, data: DataBundle, runtime: Runtime) -> dict[str, Any]:
    """Every candidate attack's loss / PSNR for one model at one eps_rel, on each loss and in
    each threat model the evaluation attacks with (validation crops)."""
    model = _load(unit.cfg, unit.model_folder, runtime)
    split = "val" if len(data.val) else "test"
    t0 = time.perf_counter()
    inputs = _inputs(unit.cfg, data, runtime, split)
    cfg, norm = unit.cfg, data.normalization
    op = build_operator(cfg.operator)
    threats = tuple(ThreatModel.build(s, op, norm, norm) for s in cfg.experiment.attack_spaces)
    plan = StudyPlan(cfg.attack.random_start, cfg.evaluation.seed, cfg.attack.losses, threats)
    rows = convergence_rows(
        runtime.forward(model), inputs, norm, unit.eps_rel, cfg.experiment, plan
    )
    return _write_study(unit, rows, split, t0, runtime)


def run_eot_unit(unit: EOTUnit, data: DataBundle, runtime: Runtime) -> dict[str, Any]:
    """The EOT study of one RS model at one eps_rel, for each of its sigma_g (validation)."""
    model = _load(unit.cfg, unit.model_folder, runtime)
    split = "val" if len(data.val) else "test"
    t0 = time.perf_counter()
    inputs = _inputs(unit.cfg, data, runtime, split)
    f, e = runtime.forward(model), unit.cfg.experiment
    rows = []
    for sigma in unit.sigmas:
        rows += eot_rows(
            f, inputs, data.normalization, sigma, unit.eps_rel, e, unit.cfg.evaluation.seed
        )
    return _write_study(unit, rows, split, t0, runtime)


def _defense(unit: EvalUnit, runtime: Runtime) -> Defense | None:
    """The defence of a sweep model (`grid.SWEEP_DEFENSES`), its denoiser loaded."""
    spec = unit.spec
    if spec.defense in ("projection", "median"):
        return defense_from_config({"kind": spec.defense})
    if spec.defense == "denoised":
        assert unit.denoiser_folder is not None
        denoiser = _load(unit.cfg, unit.denoiser_folder, runtime)
        return DenoisedSmoothing(denoiser, spec.defense_value, source=str(unit.denoiser_folder))
    return None


def run_eval_unit(unit: EvalUnit, data: DataBundle, runtime: Runtime) -> dict[str, Any]:
    """A sweep model (trained folder or baseline) on the data's val and test crops."""
    cfg = unit.cfg
    module = _load(cfg, unit.model_folder, runtime)
    op = build_operator(cfg.operator)
    defense = _defense(unit, runtime)
    if defense is not None:
        module = defense.defend(module, DefenseContext(op, data.normalization))
    p = smoothing_percentile(defense) if defense is not None else None
    model = EvalModel(module, unit.spec.info(), data.normalization, key="", percentile=p)
    inputs = {s: _inputs(cfg, data, runtime, s) for s in ("val", "test")}
    return run_evaluation(model, inputs, unit.eps_rel, unit.settings, runtime, unit.path, op)


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when k is 0 or >= n)."""
    if k <= 0 or k >= n:
        return list(range(n))
    return [round(i * (n - 1) / (k - 1)) for i in range(k)] if k > 1 else [0]


def run_certify_unit(unit: CertifyUnit, data: DataBundle, runtime: Runtime) -> dict[str, Any]:
    """Certify one sweep RS model on `unit.crops` test crops; resumes per crop and eps_rel."""
    module = _load(unit.cfg, unit.model_folder, runtime)
    model = EvalModel(module, unit.spec.info(), data.normalization, key=unit.path.stem)
    crops = data.eval_set("test")
    idx = spread(len(crops), unit.crops)
    inputs = _inputs(unit.cfg, data, runtime, "test")
    sub = SplitInputs(inputs.y[idx], inputs.target[idx], inputs.x[idx])
    photos = [crops.photo_names[i] for i in idx]
    t0 = time.perf_counter()
    key = run_key(model, unit.cfg, "test", unit.settings)
    folder = unit.path.parent
    rows = certify_split(
        model, CertifySplit(sub, photos, "test"), unit.settings, folder, runtime, key
    )
    payload = {
        "label": unit.spec.label,
        "seconds": time.perf_counter() - t0,
        "runtime": runtime.describe(),
        "records": len(rows),
    }
    atomic_write_json(unit.path, payload)
    return payload


def run_unit(unit: Unit, data: DataBundle, runtime: Runtime, progress: bool = False) -> dict:
    """Do one unit of work (or read its finished result): the one thing every executor calls."""
    if isinstance(unit, TrainUnit):
        t0 = time.perf_counter()
        train(unit.cfg, unit.folder, data=data, progress=progress)
        return {"seconds": time.perf_counter() - t0}
    if unit.done():
        return json.loads(unit.path.read_text())
    if isinstance(unit, StudyUnit):
        return run_convergence_unit(unit, data, runtime)
    if isinstance(unit, EOTUnit):
        return run_eot_unit(unit, data, runtime)
    if isinstance(unit, CertifyUnit):
        return run_certify_unit(unit, data, runtime)
    return run_eval_unit(unit, data, runtime)
