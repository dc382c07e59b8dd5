"""Load a run's records (a `reproduce` run or an `evaluate` folder) and pick the rows each
table shows, with the rules of `smoothrecon.evaluation.records` (sigma_g*, headline): the
report never decides a result on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from smoothrecon.errors import UserError
from smoothrecon.evaluation import records as rules
from smoothrecon.evaluation.records import Record
from smoothrecon.util.io import load_checkpoint

# Table order by a model's role: its training mode, or "+<kind>" behind a defence
ROLE_ORDER = {
    "none": 0,
    "own": 1,
    "gaussian": 2,
    "+median": 3,
    "+denoised": 4,
    "standard": 5,
    "+projection": 6,
    "adversarial": 7,
}


@dataclass
class Run:
    folder: Path
    manifest: dict[str, Any]
    records: list[Record]
    samples: dict[tuple[str, float], dict[str, torch.Tensor]] = field(default_factory=dict)
    convergence: list[dict[str, Any]] = field(default_factory=list)
    eot: list[dict[str, Any]] = field(default_factory=list)  # the attack on g's study
    eval_seconds: float = 0.0
    train_seconds: float = 0.0
    study_seconds: float = 0.0  # the attack-convergence study
    certify_seconds: float = 0.0

    @property
    def kind(self) -> str:
        """'reproduce' or 'evaluate' (runs from before the field are reproduce runs)."""
        return str(self.manifest.get("kind", "reproduce"))

    @property
    def eps_rels(self) -> list[float]:
        return sorted({r["eps_rel"] for r in self.records})

    def problem(self, factor: int) -> str:
        """The inverse problem in titles: "x2" for super-resolution x2, else the operator."""
        op = self.manifest.get("config", {}).get("operator", {}).get("name", "super_resolution")
        return f"x{factor}" if op == "super_resolution" else op

    @property
    def settings(self) -> list[str]:
        """Attack setting names in the order the run used them (the first is primary)."""
        names = list(self.manifest.get("attacks", {}))
        return names or sorted({r["setting"] for r in self.records})

    def space(self, setting: str) -> str:
        """The threat model of an attack setting: "input" or "measurement"."""
        return str(self.manifest.get("attacks", {}).get(setting, {}).get("space", "input"))

    @property
    def primary(self) -> str:
        return self.settings[0]

    @cached_property
    def roles(self) -> tuple[str, str]:
        """(reported split, split that chose sigma_g*), see `records.split_roles`."""
        return rules.split_roles(r["split"] for r in self.records)

    @property
    def reported(self) -> str:
        return self.roles[0]

    @property
    def crop_size(self) -> int:
        return int(self.manifest["config"]["data"]["crop_size"])

    @property
    def factors(self) -> list[int]:
        return sorted({r["factor"] for r in self.records})

    @cached_property
    def by_model(self) -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = {}
        for r in self.records:
            out.setdefault(r["model"], []).append(r)
        return out

    def models(self, factor: int) -> list[dict[str, Any]]:
        """One dict per model of `factor` (label, kind, variant, mode, value, smoothed,
        train_space, defense, defense_kind and role: the mode, or "+<defense kind>" for a
        model behind a defence), in table order: baselines, then per variant RS, RS behind
        median smoothing, f o D,
        standard, f o P, adversarial (input-trained first); own models first."""
        keys = ("model", "kind", "variant", "mode", "value", "smoothed")
        seen: list[dict[str, Any]] = []
        for rows in self.by_model.values():
            first = dict(rows[0])
            kind = first.get("defense_kind", "")
            seen.append(
                {
                    **{k: first[k] for k in keys},
                    "train_space": first.get("train_space", "input"),
                    "input_space": first.get("input_space", "normalized"),
                    "defense": first.get("defense", ""),
                    "defense_kind": kind,
                    "role": f"+{kind}" if kind else first["mode"],
                }
            )
        return sorted(
            (m for m in seen if self.by_model[m["model"]][0]["factor"] == factor),
            key=lambda m: (
                m["kind"] != "bilinear",
                m["kind"] in ("unet", "own"),
                m["variant"],
                ROLE_ORDER.get(m["role"], 9),
                m["value"],
                m["train_space"] != "input",
                m["model"],
            ),
        )


def _read_evals(run: Run) -> None:
    for rel in run.manifest["evals"]:
        path = run.folder / rel
        if not path.is_file():
            raise UserError(f"'{path}' is missing: rerun the command that made '{run.folder}'")
        payload = json.loads(path.read_text())
        for r in payload["records"]:
            row = rules.upgrade(r, run.crop_size)
            row["unit_file"] = str(rel)  # which file a table cell came from
            run.records.append(row)
        run.eval_seconds += payload["seconds"]
        samples = path.with_suffix(".safetensors")
        if samples.is_file():
            tensors, _ = load_checkpoint(samples)
            run.samples[(payload["label"], payload["eps_rel"])] = tensors


def load_run(folder: str | Path) -> Run:
    """The records, example images, convergence rows and timings of a finished run folder."""
    folder = Path(folder)
    manifest_path = folder / "run.json"
    if not manifest_path.is_file():
        raise UserError(
            f"'{folder}' is not a finished run (no run.json); make one with `smoothrecon "
            f"reproduce --out {folder}` or `smoothrecon evaluate ... --out {folder}`"
        )
    manifest = json.loads(manifest_path.read_text())
    run = Run(folder, manifest, [])
    _read_evals(run)
    if not run.records:
        raise UserError(f"'{folder}' holds no evaluation records")
    for key, rows in (("convergence", run.convergence), ("eot", run.eot)):
        for rel in manifest.get(key, []):
            path = folder / rel
            if path.is_file():
                payload = json.loads(path.read_text())
                rows.extend(payload["rows"])
                run.study_seconds += payload["seconds"]
    for path in folder.glob("certificates/*/done-*.json"):
        run.certify_seconds += json.loads(path.read_text())["seconds"]
    for m in manifest.get("models", []):
        metrics = folder / m["folder"] / "metrics.jsonl"
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                run.train_seconds += json.loads(line)["seconds"]
    return run


def chosen_sigma(run: Run, model: str, eps_rel: float, setting: str = "", split: str = "") -> float:
    """sigma_g* of `model` (`records.choose_sigma` on the run's selection split, or on `split`
    for the oracle); 0 when the model has no such records."""
    split = split or run.roles[1]
    found = rules.choose_sigma(run.by_model.get(model, []), split, eps_rel, setting or run.primary)
    return 0.0 if found is None else found


def pick(
    run: Run, model: str, eps_rel: float, attack: str, sigma: float, setting: str = ""
) -> Record | None:
    """The reported split's record of exactly this condition, or None."""
    rows = run.by_model.get(model, [])
    return rules.find(rows, run.reported, eps_rel, attack, sigma, setting or run.primary)


def headline(run: Run, m: dict[str, Any], eps_rel: float, setting: str = "") -> Record | None:
    """The record a table or curve shows for model `m` at `eps_rel` (`records.headline`)."""
    rows = run.by_model.get(m["model"], [])
    return rules.headline(rows, eps_rel, setting or run.primary, run.roles)


def thesis_numbers() -> dict[str, Any]:
    text = resources.files("smoothrecon").joinpath("report", "thesis_numbers.json").read_text()
    return json.loads(text)


def thesis_row(factor: int, mode: str, value: float, eps_rel: float) -> list[float] | None:
    """[MSE, PSNR, SSIM] the thesis published for this model family, or None."""
    key = f"x{factor}|{mode}|{value:g}" if mode != "standard" else f"x{factor}|standard|0"
    return thesis_numbers()["metrics"].get(key, {}).get(f"{eps_rel:g}")
