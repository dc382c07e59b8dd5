"""The resumable sweep: train every model of the grid, then evaluate each at every eps_rel.

Each unit of work is an artifact keyed by the hash of the config that produced it:
    <out>/models/<label>-<key>/        a training run (resumes mid-way, see training.py)
    <out>/evals/<label>/eps<e>-<key>.json (+ .safetensors with example images)
A rerun skips finished units, an interrupted run continues where it stopped, and a changed
config recomputes only the units whose key it changes. `run.json` records the config, machine
and timings for the report.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from smoothrecon.checkpoint import load_model
from smoothrecon.config import Config, dump_config
from smoothrecon.data import DataBundle, prepare_data
from smoothrecon.evaluation import evaluate_unit, split_inputs
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
class EvalUnit:
    spec: ModelSpec
    cfg: Config
    eps_rel: float
    path: Path
    model_folder: Path | None

    def done(self) -> bool:
        return self.path.exists()


def plan(cfg: Config, out: Path) -> tuple[list[TrainUnit], list[EvalUnit]]:
    """Every unit of the experiment, keyed by the config hashes that determine them."""
    trains, evals = [], []
    for spec in thesis_grid(cfg):
        mcfg = spec.config(cfg)
        model_key = (
            mcfg.hash("data", "operator", "model", "train")
            if spec.trained
            else mcfg.hash("data", "operator", "model")
        )
        folder = None
        if spec.trained:
            folder = out / "models" / f"{spec.slug}-{model_key}"
            trains.append(TrainUnit(spec, mcfg, folder))
        eval_key = mcfg.hash("data", "operator", "model", "train", "attack", "smoothing")
        eval_key = f"{eval_key}-{mcfg.hash('evaluation')[:6]}-{int(cfg.experiment.rs_pgd)}"
        for eps_rel in cfg.evaluation.eps_rels:
            path = out / "evals" / spec.slug / f"eps{eps_rel:g}-{eval_key}.json"
            evals.append(EvalUnit(spec, mcfg, eps_rel, path, folder))
    return trains, evals


def run_eval_unit(unit: EvalUnit, data: DataBundle, runtime: Runtime) -> dict[str, Any]:
    """Evaluate one model at one eps_rel and write its records atomically."""
    cfg = unit.cfg
    if unit.model_folder is not None:
        model, _ = load_model(unit.model_folder / "best.safetensors")
    else:
        model = build_model(cfg.model, cfg.operator.factor)
    model = runtime.prepare_model(model)
    operator = build_operator(cfg.operator.name, cfg.operator.factor, cfg.operator.quantize)
    inputs = {
        s: split_inputs(data.eval_set(s).x, operator, data.normalization, runtime)
        for s in ("val", "test")
    }
    sigmas = list(cfg.smoothing.sigma_grid) if unit.spec.smoothed else [0.0]
    t0 = time.perf_counter()
    result = evaluate_unit(
        model,
        inputs,
        data.normalization,
        unit.eps_rel,
        sigmas,
        cfg.smoothing.k,
        {"pgd": cfg.attack},
        runtime,
        cfg.evaluation.batch_size,
        rs_pgd=cfg.experiment.rs_pgd and unit.spec.mode == "gaussian",
        seed=cfg.evaluation.seed,
        n_samples=cfg.experiment.image_grid_count,
        chunk_size=cfg.smoothing.chunk_size,
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


def reproduce(
    cfg: Config, out: str | Path, progress: bool = True, log: Callable[[str], None] = print
) -> Path:
    """Run (or resume) the whole experiment of `cfg` into `out`; returns `out`."""
    out = ensure_dir(out)
    with run_lock(out):
        started = time.perf_counter()
        atomic_write_text(out / "config.yaml", dump_config(cfg))
        data = prepare_data(cfg.data, progress=progress)
        runtime = Runtime.from_config(cfg.runtime)
        trains, evals = plan(cfg, out)
        todo_t = [u for u in trains if not u.done()]
        todo_e = [u for u in evals if not u.done()]
        log(
            f"{len(trains)} models ({len(todo_t)} to train), {len(evals)} evaluations "
            f"({len(todo_e)} to run) -> {out}"
        )
        timings: dict[str, float] = {}
        for i, unit in enumerate(todo_t, 1):
            log(f"[train {i}/{len(todo_t)}] {unit.spec.label}")
            t0 = time.perf_counter()
            train(unit.cfg, unit.folder, data=data, progress=progress)
            timings[f"train:{unit.spec.label}"] = time.perf_counter() - t0
        bar = tqdm(todo_e, desc="evaluating", unit="unit", disable=not progress)
        for ev in bar:
            bar.set_postfix_str(f"{ev.spec.label} eps_rel={ev.eps_rel:g}")
            payload = run_eval_unit(ev, data, runtime)
            timings[f"eval:{ev.spec.label}:{ev.eps_rel:g}"] = payload["seconds"]
        manifest = {
            "preset": cfg.preset,
            "config": cfg.to_dict(),
            "machine": machine_info(),
            "data": data.summary(),
            "models": [
                {"label": u.spec.label, "folder": str(u.folder.relative_to(out))} for u in trains
            ],
            "evals": [str(u.path.relative_to(out)) for u in evals],
            "seconds_this_call": time.perf_counter() - started,
            "timings_this_call": timings,
        }
        previous = out / "run.json"
        if previous.exists() and not todo_t and not todo_e:
            return out  # nothing ran: keep the manifest of the run that did the work
        atomic_write_json(previous, manifest)
    return out
