"""What bf16 changes in the numbers (issue 28): the same models evaluated twice on the same
crops, seeds and attack, once in fp32 and once in bf16 (autocast), paired per crop.

Per model and eps_rel: the fp32 headline record (smoothed models at the fp32 run's sigma_g*,
chosen on validation) and the bf16 record of the same condition (split, eps_rel, attack,
sigma_g, setting); clean and attacked PSNR / SSIM of each, and the per-crop difference
bf16 - fp32 with its 95% CI. The attack runs in the precision under test (attacks follow the
gradients that bf16 computes). Whether bf16 was native or emulated is read from the records
(`runtime.bf16`) and printed. Not a timing: an accuracy check. Resumable (each precision is an
`evaluate` run folder under --out).

    python -m benchmarks.precision_accuracy runs/demo/models/x2-* --out runs/precision
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import machine
from smoothrecon.evaluation.records import Record, find, headline, split_roles
from smoothrecon.metrics import mean_and_ci
from smoothrecon.util.io import atomic_write_text, read_jsonl

PRECISIONS = ("fp32", "bf16")


def evaluate(models: list[str], out: Path, precision: str, args: argparse.Namespace) -> None:
    """`smoothrecon evaluate` of every model in one folder (the same crops for each)."""
    cmd = [sys.executable, "-m", "smoothrecon", "evaluate", "--preset", args.preset]
    for m in models:
        cmd += ["--model", m]
    cmd += ["--eps-rel", args.eps_rel, "--sigma-g", args.sigma_g, "--steps", str(args.steps),
            "--restarts", "1", "--no-rs-pgd", "--quiet", "--out", str(out),
            "--set", f"runtime.precision={precision}",
            "--set", f"data.max_eval_crops={args.crops}"]  # fmt: skip
    subprocess.run(cmd, check=True)


def _pm(values: list[float], digits: int) -> str:
    mean, _, half = mean_and_ci(values)
    return f"{mean:+.{digits}f} ± {half:.{digits}f}"


def paired_rows(a: list[Record], b: list[Record]) -> list[str]:
    """Markdown rows: per model and eps_rel, fp32 (`a`) and bf16 (`b`) of the same condition."""
    lines = []
    splits = split_roles(r["split"] for r in a)
    for model in dict.fromkeys(r["model"] for r in a):
        mine_a = [r for r in a if r["model"] == model]
        mine_b = [r for r in b if r["model"] == model]
        for eps_rel in sorted({r["eps_rel"] for r in mine_a}):
            ra = headline(mine_a, eps_rel, mine_a[0]["setting"], splits)
            assert ra is not None
            rb = find(mine_b, ra["split"], eps_rel, ra["attack"], ra["sigma_g"], ra["setting"])
            assert rb is not None, f"no bf16 record of {model} at eps_rel {eps_rel:g}"
            d: dict[str, list[float]] = {
                m: [y - x for x, y in zip(ra["per_image"][m], rb["per_image"][m], strict=True)]
                for m in ("psnr", "ssim")
            }
            lines.append(
                f"| {model} | {eps_rel:g} | {ra['sigma_g']:g} | {ra['psnr']:.2f} | "
                f"{rb['psnr']:.2f} | {_pm(d['psnr'], 3)} | {ra['ssim']:.4f} | {rb['ssim']:.4f} | "
                f"{_pm(d['ssim'], 4)} |"
            )
    return lines


def report(runs: dict[str, list[Record]], args: argparse.Namespace) -> str:
    rt: dict[str, Any] = runs["bf16"][0].get("runtime", {})
    reported, _ = split_roles(r["split"] for r in runs["fp32"])
    n = next(r["n"] for r in runs["fp32"] if r["split"] == reported)
    head = [
        f"machine: {machine()}; bf16 {rt.get('bf16', '?')}; preset {args.preset}, {n} "
        f"{reported} crops, attack on f: {args.steps} steps x 1 start (the preset's losses), "
        "scored on g (sigma_g: the fp32 run's choice on validation)",
        "",
        "| model | eps_rel | sigma_g | PSNR fp32 | PSNR bf16 | Δ PSNR (bf16 - fp32) | "
        "SSIM fp32 | SSIM bf16 | Δ SSIM |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(head + paired_rows(runs["fp32"], runs["bf16"])) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="model run folders or checkpoints")
    p.add_argument("--out", default="runs/precision")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--eps-rel", default="0,0.1")
    p.add_argument("--sigma-g", default="grid")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--crops", type=int, default=32, help="test crops (and as many val crops)")
    args = p.parse_args(argv)
    out = Path(args.out)
    runs = {}
    for precision in PRECISIONS:
        evaluate(args.models, out / precision, precision, args)
        runs[precision] = read_jsonl(out / precision / "records.jsonl")
    text = report(runs, args)  # type: ignore[arg-type]
    atomic_write_text(out / "precision.md", text)
    print(text)


if __name__ == "__main__":
    main()
