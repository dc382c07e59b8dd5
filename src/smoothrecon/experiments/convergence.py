"""Attack convergence, shown (issue 8): how strong is PGD after t steps, per step size, with
1 or R restarts — and the "strong" setting chosen from those curves.

One long PGD run per (step size, restart) yields every shorter run's result for free: with
best-iterate tracking, the attack of t steps is the best iterate among the first t steps of the
long run (same random start, same iterates). The loss reported is the mean over images of the
per-image MSE in the attack's (normalized) space, and PSNR/SSIM are measured on [0, 1] images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from smoothrecon.attacks import eps_from_rel, pgd_l2_run
from smoothrecon.config import (
    THESIS_EVAL_STEP_FACTOR,
    THESIS_EVAL_STEPS,
    AttackConfig,
    ExperimentConfig,
)
from smoothrecon.data.normalization import Normalization
from smoothrecon.evaluation import SplitInputs
from smoothrecon.metrics import psnr, ssim
from smoothrecon.smoothing import make_generator

Forward = Callable[[torch.Tensor], torch.Tensor]


def convergence_rows(
    forward: Forward,
    data: SplitInputs,
    norm: Normalization,
    eps_rel: float,
    cfg: ExperimentConfig,
    start: str = "ball",
    seed: int = 0,
) -> list[dict]:
    """One row per (step_factor, steps, restarts in {1, R}) with mean loss, PSNR and SSIM."""
    n = min(cfg.convergence_images, data.y.shape[0])
    y, target, x = data.y[:n], data.target[:n], data.x[:n]
    eps = eps_from_rel(eps_rel, y.shape[1:])
    d = y[0].numel()
    steps = tuple(sorted(set(cfg.convergence_steps)))
    rows = []
    for factor in cfg.convergence_step_factors:
        runs = []
        for r in range(cfg.convergence_restarts):
            gen = make_generator(seed * 7919 + r, y.device)
            runs.append(
                pgd_l2_run(
                    forward,
                    y,
                    target,
                    eps,
                    steps=max(steps),
                    step_size=factor * eps,
                    random_start=start,
                    restarts=1,
                    keep="best",
                    generator=gen,
                    snapshots=steps,
                ).snapshots
            )
        for restarts in sorted({1, cfg.convergence_restarts}):
            for t in steps:
                e, loss = runs[0][t]
                for other in runs[1:restarts]:
                    better = other[t][1] > loss
                    e = torch.where(better.view(-1, *([1] * (e.dim() - 1))), other[t][0], e)
                    loss = torch.maximum(loss, other[t][1])
                with torch.no_grad():
                    x_hat = norm.denormalize(forward(y + e)).clamp(0, 1)
                rows.append(
                    {
                        "eps_rel": eps_rel,
                        "step_factor": factor,
                        "steps": t,
                        "restarts": restarts,
                        "loss": float(loss.mean()) / d,
                        "psnr": float(psnr(x_hat, x).mean()),
                        "ssim": float(ssim(x_hat, x).mean()),
                        "n": n,
                    }
                )
    return rows


def choose_strong(rows: list[dict], within: float, base: AttackConfig) -> AttackConfig:
    """The cheapest (steps x restarts) setting whose loss is >= (1 - within) of the best loss
    found, for every model and eps_rel in `rows` (each row carries a 'model' key)."""
    best: dict[tuple, float] = {}
    for r in rows:
        key = (r["model"], r["eps_rel"])
        best[key] = max(best.get(key, 0.0), r["loss"])
    settings = sorted(
        {(r["steps"] * r["restarts"], r["steps"], r["restarts"], r["step_factor"]) for r in rows}
    )
    for _, steps, restarts, factor in settings:
        ratios = [
            r["loss"] / best[(r["model"], r["eps_rel"])]
            for r in rows
            if (r["steps"], r["restarts"], r["step_factor"]) == (steps, restarts, factor)
            and best[(r["model"], r["eps_rel"])] > 0
        ]
        if ratios and min(ratios) >= 1 - within:
            return dataclasses.replace(
                base, steps=steps, step_factor=factor, restarts=restarts, keep="best"
            )
    _, steps, restarts, factor = settings[-1]
    return dataclasses.replace(
        base, steps=steps, step_factor=factor, restarts=restarts, keep="best"
    )


def thesis_attack(base: AttackConfig) -> AttackConfig:
    """Section 4.4's evaluation attack: 10 steps of eps/4 from a random start, last iterate."""
    return dataclasses.replace(
        base,
        steps=THESIS_EVAL_STEPS,
        step_factor=THESIS_EVAL_STEP_FACTOR,
        restarts=1,
        keep="last",
        random_start="ball",
    )
