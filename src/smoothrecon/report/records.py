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
    eval_seconds: float = 0.0
    train_seconds: float = 0.0

    @property
    def eps_rels(self) -> list[float]:
        return sorted({r["eps_rel"] for r in self.records})

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
            key=lambda m: (m["kind"] != "bilinear", m["kind"] == "unet", m["variant"],
                           MODE_ORDER[m["mode"]], m["value"]),
        )  # fmt: skip


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
    for m in manifest["models"]:
        metrics = folder / m["folder"] / "metrics.jsonl"
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                run.train_seconds += json.loads(line)["seconds"]
    return run


def chosen_sigma(run: Run, model: str, eps_rel: float, split: str = "val") -> float:
    rows = [r for r in run.records if r["model"] == model and r["eps_rel"] == eps_rel
            and r["split"] == split and r["attack"] in ("none", "pgd_f")]  # fmt: skip
    if not rows:
        return 0.0
    return float(max(rows, key=lambda r: (r["ssim"], -r["sigma_g"]))["sigma_g"])


def pick(run: Run, model: str, eps_rel: float, split: str, attack: str, sigma: float) -> dict | None:
    for r in run.records:
        if (r["model"], r["eps_rel"], r["split"], r["attack"]) == (model, eps_rel, split, attack) \
                and abs(r["sigma_g"] - sigma) < 1e-12:  # fmt: skip
            return r
    return None


def headline(run: Run, m: dict[str, Any], eps_rel: float) -> dict | None:
    """The test record a table shows for model `m` at `eps_rel` (see the module docstring)."""
    label = m["model"]
    if m["mode"] != "gaussian":
        return pick(run, label, eps_rel, "test", "none" if eps_rel == 0 else "pgd_f", 0.0)
    sigma = chosen_sigma(run, label, eps_rel)
    if eps_rel == 0:
        return pick(run, label, eps_rel, "test", "none", sigma)
    return pick(run, label, eps_rel, "test", "worst", sigma) or pick(
        run, label, eps_rel, "test", "pgd_f", sigma
    )


def thesis_numbers() -> dict[str, Any]:
    text = resources.files("smoothrecon").joinpath("report", "thesis_numbers.json").read_text()
    return json.loads(text)


def thesis_row(factor: int, mode: str, value: float, eps_rel: float) -> list[float] | None:
    """[MSE, PSNR, SSIM] the thesis published for this model family, or None."""
    key = f"x{factor}|{mode}|{value:g}" if mode != "standard" else f"x{factor}|standard|0"
    return thesis_numbers()["metrics"].get(key, {}).get(f"{eps_rel:g}")
