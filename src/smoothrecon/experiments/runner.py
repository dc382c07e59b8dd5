"""The resumable sweep: train every model of the grid, study attack convergence on one model
per family, choose the "strong" attack from it, then evaluate every model at every eps_rel.

Each unit of work is an artifact keyed by the hash of the config that produced it:
    <out>/models/<label>-<key>/                 a training run (resumes mid-way, training.py)
    <out>/convergence/<label>/eps<e>-<key>.json  loss / PSNR vs PGD steps (convergence.py)
    <out>/evals/<label>/eps<e>-<key>.json        records (+ .safetensors with example images)
A rerun skips finished units, an interrupted run continues where it stopped, and a changed
config recomputes only the units whose key it changes. `run.json` records the config, machine
and timings for the report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smoothrecon.checkpoint import load_model
from smoothrecon.config import AttackConfig, Config, dump_config
from smoothrecon.data import DataBundle, prepare_data
from smoothrecon.evaluation import SplitInputs, evaluate_unit, split_inputs
from smoothrecon.experiments.convergence import choose_strong, convergence_rows, thesis_attack
from smoothrecon.experiments.executors import make_executor
from smoothrecon.experiments.grid import ModelSpec, thesis_grid
from smoothrecon.io import (
    atomic_write_json,
    atomic_write_text,
    ensure_dir,
    load_checkpoint,
    run_lock,
    save_checkpoint,
)
from smoothrecon.models import build_model
from smoothrecon.operators import build_operator
from smoothrecon.runtime import Runtime
from smoothrecon.training import train


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


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
    """One model at one eps_rel: a convergence study or an evaluation, one JSON file each."""

    kind: str  # "convergence" or "evaluation"
    spec: ModelSpec
    cfg: Config
    eps_rel: float
    path: Path
    model_folder: Path | None

    def done(self) -> bool:
        return self.path.exists()


def _model_folder(spec: ModelSpec, mcfg: Config, out: Path) -> Path | None:
    if not spec.trained:
        return None
    return out / "models" / f"{spec.slug}-{mcfg.hash('data', 'operator', 'model', 'train')}"


def plan_training(cfg: Config, out: Path) -> list[TrainUnit]:
    """One unit per trained model, keyed by the hash of what determines its weights."""
    units = []
    for spec in thesis_grid(cfg):
        mcfg = spec.config(cfg)
        folder = _model_folder(spec, mcfg, out)
        if folder is not None:
            units.append(TrainUnit(spec, mcfg, folder))
    return units


def family_representatives(cfg: Config) -> list[ModelSpec]:
    """One model per family for the convergence study: per factor the bilinear baseline, and
    per variant the standard, the first RS and the first adversarially trained model."""
    reps, seen = [], set()
    for spec in thesis_grid(cfg):
        family = (spec.factor, spec.variant, spec.mode)
        if spec.kind == "bicubic" or family in seen:
            continue
        seen.add(family)
        reps.append(spec)
    return reps


def _study_units(
    kind: str,
    specs: list[ModelSpec],
    cfg: Config,
    out: Path,
    eps_rels: tuple[float, ...],
    sections: tuple[str, ...],
    suffix: str = "",
) -> list[StudyUnit]:
    """One unit per (model, eps_rel), its file keyed by the config sections it depends on."""
    folder = {"convergence": "convergence", "evaluation": "evals"}[kind]
    units = []
    for spec in specs:
        mcfg = spec.config(cfg)
        key = mcfg.hash("data", "operator", "model", "train", *sections) + suffix
        for eps_rel in eps_rels:
            path = out / folder / spec.slug / f"eps{eps_rel:g}-{key}.json"
            units.append(StudyUnit(kind, spec, mcfg, eps_rel, path, _model_folder(spec, mcfg, out)))
    return units


def _key(obj: object) -> str:
    """Short hash of a JSON-able object (attack settings, chosen experiment fields)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]


def _experiment_fields(cfg: Config, *names: str) -> dict[str, Any]:
    """The experiment fields a unit depends on (not the whole section: adding a model to the
    grid must not invalidate the other models' studies)."""
    return {n: getattr(cfg.experiment, n) for n in names}


def plan_convergence(cfg: Config, out: Path) -> list[StudyUnit]:
    fields = _experiment_fields(
        cfg,
        "convergence_steps",
        "convergence_step_factors",
        "convergence_restarts",
        "convergence_images",
    )
    return _study_units(
        "convergence",
        family_representatives(cfg),
        cfg,
        out,
        cfg.experiment.convergence_eps_rels,
        ("attack", "evaluation"),
        f"-{_key(fields)}",
    )


def plan_evaluation(cfg: Config, out: Path, attacks: dict[str, AttackConfig]) -> list[StudyUnit]:
    """One unit per (model, eps_rel), keyed by everything its records depend on."""
    fields = _experiment_fields(cfg, "rs_pgd", "rs_pgd_eps_rels", "image_grid_count")
    suffix = f"-{_key({k: dataclasses.asdict(v) for k, v in attacks.items()})}-{_key(fields)}"
    return _study_units(
        "evaluation",
        thesis_grid(cfg),
        cfg,
        out,
        cfg.evaluation.eps_rels,
        ("smoothing", "evaluation"),
        suffix,
    )


def _load(cfg: Config, folder: Path | None, runtime: Runtime) -> torch.nn.Module:
    if folder is not None:
        model, _ = load_model(folder / "best.safetensors")
    else:
        model = build_model(cfg.model, cfg.operator.factor)
    model = runtime.prepare_model(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _inputs(cfg: Config, data: DataBundle, runtime: Runtime, split: str) -> SplitInputs:
    operator = build_operator(cfg.operator.name, cfg.operator.factor, cfg.operator.quantize)
    return split_inputs(data.eval_set(split).x, operator, data.normalization, runtime)


def run_convergence_unit(unit: StudyUnit, data: DataBundle, runtime: Runtime) -> dict[str, Any]:
    """PGD loss / PSNR vs steps for one model at one eps_rel (validation crops)."""
    model = _load(unit.cfg, unit.model_folder, runtime)
    split = "val" if len(data.val) else "test"
    t0 = time.perf_counter()
    inputs = _inputs(unit.cfg, data, runtime, split)
    rows = convergence_rows(
        runtime.forward(model),
        inputs,
        data.normalization,
        unit.eps_rel,
        unit.cfg.experiment,
        unit.cfg.attack.random_start,
        unit.cfg.evaluation.seed,
    )
    for r in rows:
        r.update(
            {
                "model": unit.spec.label,
                "factor": unit.spec.factor,
                "mode": unit.spec.mode,
                "variant": unit.spec.variant,
                "split": split,
            }
        )
    payload = {
        "label": unit.spec.label,
        "eps_rel": unit.eps_rel,
        "seconds": time.perf_counter() - t0,
        "rows": rows,
    }
    atomic_write_json(unit.path, payload)
    return payload


def run_eval_unit(
    unit: StudyUnit, data: DataBundle, runtime: Runtime, attacks: dict[str, AttackConfig]
) -> dict[str, Any]:
    """Evaluate one model at one eps_rel and write its records atomically."""
    cfg = unit.cfg
    model = _load(cfg, unit.model_folder, runtime)
    inputs = {s: _inputs(cfg, data, runtime, s) for s in ("val", "test")}
    sigmas = list(cfg.smoothing.sigma_grid) if unit.spec.smoothed else [0.0]
    t0 = time.perf_counter()
    result = evaluate_unit(
        model,
        inputs,
        data.normalization,
        unit.eps_rel,
        sigmas,
        cfg.smoothing.k,
        attacks,
        runtime,
        cfg.evaluation.batch_size,
        rs_pgd=cfg.experiment.rs_pgd
        and unit.spec.mode == "gaussian"
        and (not cfg.experiment.rs_pgd_eps_rels or unit.eps_rel in cfg.experiment.rs_pgd_eps_rels),
        seed=cfg.evaluation.seed,
        n_samples=cfg.experiment.image_grid_count,
        chunk_size=cfg.smoothing.chunk_size,
        antithetic=cfg.smoothing.antithetic,
    )
    seconds = time.perf_counter() - t0
    label = {"model": unit.spec.label, **unit.spec.__dict__}
    for r in result.records:
        r.update(label)
    payload = {
        "spec": unit.spec.__dict__,
        "label": unit.spec.label,
        "eps_rel": unit.eps_rel,
        "seconds": seconds,
        "records": result.records,
    }
    if result.samples:
        save_checkpoint(unit.path.with_suffix(".safetensors"), result.samples, {"kind": "samples"})
    atomic_write_json(unit.path, payload)
    return payload


Unit = TrainUnit | StudyUnit


def run_unit(
    unit: Unit,
    data: DataBundle,
    runtime: Runtime,
    attacks: dict[str, AttackConfig] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Do one unit of work (or read its finished result): the one thing every executor calls."""
    if isinstance(unit, TrainUnit):
        t0 = time.perf_counter()
        train(unit.cfg, unit.folder, data=data, progress=progress)
        return {"seconds": time.perf_counter() - t0}
    if unit.done():
        return json.loads(unit.path.read_text())
    if unit.kind == "convergence":
        return run_convergence_unit(unit, data, runtime)
    assert attacks is not None
    return run_eval_unit(unit, data, runtime, attacks)


def reproduce(
    cfg: Config,
    out: str | Path,
    progress: bool = True,
    log: Callable[[str], None] = print,
    executor: str = "serial",
    address: str | None = None,
) -> Path:
    """Run (or resume) the whole experiment of `cfg` into `out`; returns `out`.

    Phases run in order (training, convergence, evaluation) because each needs the previous
    one's results; the units inside a phase are independent and go to the executor.
    """
    out = ensure_dir(out)
    with run_lock(out):
        started = time.perf_counter()
        atomic_write_text(out / "config.yaml", dump_config(cfg))
        data = prepare_data(cfg.data, progress=progress)
        runtime = Runtime.from_config(cfg.runtime)
        pool = make_executor(executor, data, runtime, progress, address)
        trains = plan_training(cfg, out)
        convs = plan_convergence(cfg, out)
        todo_t = [u for u in trains if not u.done()]
        todo_c = [u for u in convs if not u.done()]
        log(
            f"{len(trains)} models ({len(todo_t)} to train), {len(convs)} convergence studies "
            f"({len(todo_c)} to run) -> {out}"
        )
        timings: dict[str, float] = {}
        for unit, payload in zip(todo_t, pool.map(todo_t, "training"), strict=True):
            timings[f"train:{unit.spec.label}"] = payload["seconds"]
        rows = [r for p in pool.map(convs, "attack convergence") for r in p["rows"]]
        strong, score = choose_strong(
            rows, cfg.experiment.strong_within, cfg.attack, cfg.experiment.strong_max_cost
        )
        attacks = {"strong": strong, "thesis": thesis_attack(cfg.attack)}
        evals = plan_evaluation(cfg, out, attacks)
        todo_e = [u for u in evals if not u.done()]
        log(
            f"strong attack: {strong.steps} steps of {strong.step_factor:g} eps, "
            f"{strong.restarts} restart(s), >= {score['min_ratio']:.1%} of the best loss found; "
            f"{len(evals)} evaluations ({len(todo_e)} to run)"
        )
        for ev, payload in zip(todo_e, pool.map(todo_e, "evaluating", attacks), strict=True):
            timings[f"eval:{ev.spec.label}:{ev.eps_rel:g}"] = payload["seconds"]
        manifest = {
            "preset": cfg.preset,
            "config": cfg.to_dict(),
            "machine": machine_info(),
            "data": data.summary(),
            "executor": executor,
            "models": [
                {"label": u.spec.label, "folder": str(u.folder.relative_to(out))} for u in trains
            ],
            "convergence": [str(u.path.relative_to(out)) for u in convs],
            "evals": [str(u.path.relative_to(out)) for u in evals],
            "attacks": {k: dataclasses.asdict(v) for k, v in attacks.items()},
            "strong_score": score,
            "seconds_this_call": time.perf_counter() - started,
            "timings_this_call": timings,
        }
        previous = out / "run.json"
        if previous.exists() and not todo_t and not todo_c and not todo_e:
            return out  # nothing ran: keep the manifest of the run that did the work
        atomic_write_json(previous, manifest)
    return out
