"""Load a reproduce run's records and pick the rows each table shows.

Headline rule (section 4.4, made sound): on the test split, at each eps_rel, a smoothed (RS)
model is shown at the sigma_g chosen on the validation split, under the worse per image of the
attack on f and the attack on g when both ran; every other model is shown without smoothing
(sigma_g = 0) under the attack on f.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from smoothrecon.errors import UserError
from smoothrecon.io import load_checkpoint

MODE_ORDER = {"none": 0, "gaussian": 1, "standard": 2, "adversarial": 3}


@dataclass
class Run:
    folder: Path
    manifest: dict[str, Any]
    records: list[dict[str, Any]]
    samples: dict[tuple[str, float], dict[str, torch.Tensor]] = field(default_factory=dict)
    convergence: list[dict[str, Any]] = field(default_factory=list)
    eval_seconds: float = 0.0
    train_seconds: float = 0.0

    @property
    def eps_rels(self) -> list[float]:
        return sorted({r["eps_rel"] for r in self.records})

    @property
    def settings(self) -> list[str]:
        """Attack setting names in the order the run used them (the first is primary)."""
        names = list(self.manifest.get("attacks", {}))
        return names or sorted({r["setting"] for r in self.records})

    @property
    def primary(self) -> str:
        return self.settings[0]

    @property
    def crop_size(self) -> int:
        return int(self.manifest["config"]["data"]["crop_size"])

    @property
    def factors(self) -> list[int]:
        return sorted({r["factor"] for r in self.records})

    def models(self, factor: int) -> list[dict[str, Any]]:
        """One dict per model of `factor` (label, kind, variant, mode, value), table order."""
        seen: dict[str, dict[str, Any]] = {}
        for r in self.records:
            if r["factor"] == factor and r["model"] not in seen:
                seen[r["model"]] = {k: r[k] for k in ("model", "kind", "variant", "mode", "value")}
        return sorted(
            seen.values(),
            key=lambda m: (
                m["kind"] != "bilinear",
                m["kind"] == "unet",
                m["variant"],
                MODE_ORDER[m["mode"]],
                m["value"],
            ),
        )


def load_run(folder: str | Path) -> Run:
    folder = Path(folder)
    manifest_path = folder / "run.json"
    if not manifest_path.is_file():
        raise UserError(
            f"'{folder}' is not a finished reproduce run (no run.json); run "
            f"`smoothrecon reproduce --out {folder}` first"
        )
    manifest = json.loads(manifest_path.read_text())
    records: list[dict[str, Any]] = []
    run = Run(folder, manifest, records)
    for rel in manifest["evals"]:
        path = folder / rel
        if not path.is_file():
            raise UserError(f"'{path}' is missing: rerun `smoothrecon reproduce` to finish the run")
        payload = json.loads(path.read_text())
        records.extend(payload["records"])
        run.eval_seconds += payload["seconds"]
        samples = path.with_suffix(".safetensors")
        if samples.is_file():
            tensors, _ = load_checkpoint(samples)
            run.samples[(payload["label"], payload["eps_rel"])] = tensors
    for rel in manifest.get("convergence", []):
        path = folder / rel
        if path.is_file():
            payload = json.loads(path.read_text())
            run.convergence.extend(payload["rows"])
            run.eval_seconds += payload["seconds"]
    for m in manifest["models"]:
        metrics = folder / m["folder"] / "metrics.jsonl"
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                run.train_seconds += json.loads(line)["seconds"]
    return run


def chosen_sigma(
    run: Run, model: str, eps_rel: float, split: str = "val", setting: str = ""
) -> float:
    """sigma_g with the highest mean SSIM of `split` under the attack on f of `setting`."""
    rows = [
        r
        for r in run.records
        if r["model"] == model
        and r["eps_rel"] == eps_rel
        and r["split"] == split
        and r["attack"] in ("none", "pgd_f")
        and setting_ok(run, r, setting)
    ]
    if not rows:
        return 0.0
    return float(max(rows, key=lambda r: (r["ssim"], -r["sigma_g"]))["sigma_g"])


def setting_ok(run: Run, r: dict, setting: str) -> bool:
    """At eps_rel 0 there is no attack: the one record stands for every setting."""
    return r["eps_rel"] == 0 or r["setting"] == (setting or run.primary)


def pick(
    run: Run, model: str, eps_rel: float, split: str, attack: str, sigma: float, setting: str = ""
) -> dict | None:
    """The record of exactly this condition, or None."""
    for r in run.records:
        if (
            (r["model"], r["eps_rel"], r["split"], r["attack"]) == (model, eps_rel, split, attack)
            and abs(r["sigma_g"] - sigma) < 1e-12
            and setting_ok(run, r, setting)
        ):
            return r
    return None


def headline(run: Run, m: dict[str, Any], eps_rel: float, setting: str = "") -> dict | None:
    """The test record a table shows for model `m` at `eps_rel` (see the module docstring)."""
    label = m["model"]
    if m["mode"] != "gaussian":
        attack = "none" if eps_rel == 0 else "pgd_f"
        return pick(run, label, eps_rel, "test", attack, 0.0, setting)
    sigma = chosen_sigma(run, label, eps_rel, "val", setting)
    if eps_rel == 0:
        return pick(run, label, eps_rel, "test", "none", sigma, setting)
    return pick(run, label, eps_rel, "test", "worst", sigma, setting) or pick(
        run, label, eps_rel, "test", "pgd_f", sigma, setting
    )


def thesis_numbers() -> dict[str, Any]:
    text = resources.files("smoothrecon").joinpath("report", "thesis_numbers.json").read_text()
    return json.loads(text)


def thesis_row(factor: int, mode: str, value: float, eps_rel: float) -> list[float] | None:
    """[MSE, PSNR, SSIM] the thesis published for this model family, or None."""
    key = f"x{factor}|{mode}|{value:g}" if mode != "standard" else f"x{factor}|standard|0"
    return thesis_numbers()["metrics"].get(key, {}).get(f"{eps_rel:g}")
