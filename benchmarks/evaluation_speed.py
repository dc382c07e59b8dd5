"""Benchmarks of issue 16: the thesis' evaluation method against ours, the early-stopped
strong attack and BatchNorm folding (the bias of adaptive k: benchmarks/adaptive_bias.py). A
small U-Net (channels (8, 16, 32)) briefly trained on the benchmark crops keeps each benchmark
under a minute on 2 cores.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from benchmarks.common import bench_config, compare, describe, project_runtime
from benchmarks.thesis_method import thesis_grid
from smoothrecon.attacks.pgd import PGD, eps_from_rel, pgd_l2_run
from smoothrecon.attacks.setting import setting_from_config
from smoothrecon.config import THESIS_EPS_RELS, THESIS_SIGMA_G_GRID, AttackConfig, Config
from smoothrecon.data import DataBundle
from smoothrecon.defenses.smoothing import AdaptiveK, mc_share_fn, predict_adaptive, predict_many
from smoothrecon.evaluation.attacking import batched_attack
from smoothrecon.evaluation.inputs import pairs
from smoothrecon.evaluation.unit import SplitInputs, split_inputs
from smoothrecon.experiments.convergence import thesis_attack
from smoothrecon.metrics import all_metrics
from smoothrecon.models import UNet
from smoothrecon.models.fold import fold_batchnorm
from smoothrecon.models.normalization import Normalization
from smoothrecon.operators import build_operator
from smoothrecon.util.runtime import Runtime
from smoothrecon.util.seeds import make_generator

SMALL = (8, 16, 32)
# the project's own runtime on this machine (precision "auto": bf16 only where it is native)
OURS = project_runtime(bench_config())
THESIS_PGD = setting_from_config(
    thesis_attack(AttackConfig()), "thesis"
)  # section 4.4: 10 steps of eps/4, last iterate
SLOW = Runtime(torch.device("cpu"), "fp32", False)


def small_model(cfg: Config, data: DataBundle, steps: int = 60) -> torch.nn.Module:
    """A U-Net with channels SMALL after `steps` Adam steps on the MSE (fp32), in eval mode."""
    torch.manual_seed(0)
    model = UNet(3, 3, SMALL)
    op = build_operator(cfg.operator.name, cfg.operator.factor, cfg.operator.quantize)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    done, epoch = 0, 0
    while done < steps:
        epoch += 1
        for xb in data.training_crops().batches(epoch, cfg.train.batch_size):
            y, x, _ = pairs(SLOW, xb, op, data.normalization)
            loss = F.mse_loss(model(y), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    return model.eval()


def _inputs(cfg: Config, data: DataBundle, n: int) -> SplitInputs:
    op = build_operator(cfg.operator.name, cfg.operator.factor, cfg.operator.quantize)
    return split_inputs(data.test.x[:n], op, data.normalization, SLOW)


def ours_grid(
    model: torch.nn.Module,
    data: SplitInputs,
    norm: Normalization,
    eps_rels: Sequence[float],
    sigmas: Sequence[float],
    adaptive: AdaptiveK | None,
    k: int = 50,
) -> dict[tuple[float, float], dict[str, torch.Tensor]]:
    """The project's path: BN folded, its own runtime (OURS), one attack per eps_rel reused by
    every sigma (the thesis' own attack, which `thesis_grid` reruns per sigma: equal
    strength), then g_hat for all sigmas at once, adaptive or fixed k. Same keys as
    `thesis_grid`."""
    f = OURS.forward(OURS.prepare_model(fold_batchnorm(model)))
    std = torch.tensor(norm.std).view(1, -1, 1, 1)
    out = {}
    for eps_rel in eps_rels:
        e = batched_attack(f, data, eps_rel, THESIS_PGD, 64, 1).e
        gen = make_generator(2, "cpu")
        y = data.y + e
        with torch.no_grad():
            if adaptive is None:
                preds = predict_many(f, y, sigmas, k, gen, with_se=True)
            else:
                err = mc_share_fn(data.x, norm)
                preds = predict_adaptive(f, y, sigmas, err, adaptive, gen)  # type: ignore[assignment]
        for s, p in preds.items():
            x_hat = norm.denormalize(p.mean).clamp(0, 1)
            assert p.se is not None
            mc_var = (p.se * std).pow(2).flatten(1).mean(1)
            out[(eps_rel, s)] = {**all_metrics(x_hat, data.x), "mc_var": mc_var}
    return out


def grid_difference(a: dict, b: dict) -> tuple[float, float, float]:
    """(largest |mean PSNR difference| in dB over cells, largest |mean MSE difference| over the
    combined Monte-Carlo error of the two cell means (the summed MC variances, by which each
    estimate's MSE exceeds the exact g's) on the clean smoothed cells, mean |PSNR difference|
    in dB). Attacked cells differ by their attacks' random starts too, so only clean cells
    test equal precision."""
    dp, ratio = [], []
    for cell in a:
        dp.append(abs(float(a[cell]["psnr"].mean() - b[cell]["psnr"].mean())))
        eps_rel, sigma = cell
        if eps_rel == 0 and sigma > 0:
            mc = float(a[cell]["mc_var"].mean() + b[cell]["mc_var"].mean())
            d_mse = abs(float(a[cell]["mse"].mean() - b[cell]["mse"].mean()))
            ratio.append(d_mse / max(mc, 1e-12))
    return max(dp), max(ratio), sum(dp) / len(dp)


def _median_share(grid: dict) -> float:
    shares = [
        float(v)
        for (_, s), cell in grid.items()
        if s > 0
        for v in (cell["mc_var"] / cell["mse"].clamp_min(1e-12))
    ]
    return float(torch.tensor(shares).median())


def bench_thesis_peer(cfg: Config, data: DataBundle) -> list:
    """The thesis' method (fp32 NCHW, attack per sigma_g, k loop) vs ours (folded, OURS,
    one attack per eps_rel, adaptive k at tolerance 5%) on the thesis grid, 8 crops, timed once
    each (too long to repeat)."""
    from benchmarks.run import Row  # run.py imports this module

    model, inputs = small_model(cfg, data), _inputs(cfg, data, 8)
    norm = data.normalization
    grid = (THESIS_EPS_RELS, THESIS_SIGMA_G_GRID)
    t0 = time.perf_counter()
    theirs = thesis_grid(copy.deepcopy(model), inputs, norm, *grid, k=50)
    t1 = time.perf_counter()
    ours = ours_grid(
        model, inputs, norm, *grid, adaptive=AdaptiveK(k_min=8, k_max=256, tolerance=0.05)
    )
    t2 = time.perf_counter()
    ours_grid(model, inputs, norm, *grid, adaptive=None, k=50)
    t3 = time.perf_counter()
    d_psnr, d_mc, mean_d = grid_difference(theirs, ours)
    detail = (
        f"6 eps_rel x 17 sigma_g, 8 crops, U-Net {SMALL}: thesis {t1 - t0:.1f} s, ours "
        f"{t2 - t1:.1f} s (fixed k=50: {t3 - t2:.1f} s, ratio {(t1 - t0) / (t3 - t2):.2f}); "
        f"largest |dPSNR| {d_psnr:.2f} dB (mean {mean_d:.2f}), largest |dMSE| / combined MC "
        f"variance {d_mc:.1f} (clean, sigma_g > 0); median mc_share thesis "
        f"{_median_share(theirs):.3f}, ours {_median_share(ours):.3f}; timed once"
    )
    ratio = (t1 - t0) / (t2 - t1)
    return [Row.at_least("thesis evaluation method / ours, whole grid", ratio, 5, detail)]


def _strong_setup(cfg: Config, data: DataBundle):
    model, inputs = small_model(cfg, data), _inputs(cfg, data, 16)
    f = OURS.forward(OURS.prepare_model(fold_batchnorm(model)))
    return f, inputs, eps_from_rel(0.05, inputs.y.shape[1:])


def bench_strong_attack(cfg: Config, data: DataBundle, patience: int = 10, rel_tol: float = 1e-3):
    """100 steps of eps/2, best iterate (the strong attack), full vs early-stopped per sample."""
    from benchmarks.run import Row

    f, inputs, eps = _strong_setup(cfg, data)

    def run(p: int):
        gen = make_generator(0, "cpu")
        strong = PGD(steps=100, step_factor=0.5, patience=p, rel_tol=rel_tol)
        return pgd_l2_run(f, inputs.y, inputs.target, eps, strong, gen)

    full, early = run(0), run(patience)
    t_full, t_early = compare(lambda: run(0), lambda: run(patience), rounds=2)
    assert early.steps_used is not None
    used = early.steps_used.float()
    detail = (
        f"16 crops, eps_rel 0.05, patience {patience}, rel_tol {rel_tol:g}: loss early/full "
        f"{float(early.loss.sum() / full.loss.sum()):.4f} (worst crop "
        f"{float((early.loss / full.loss).min()):.4f}); gradient steps per crop {used.mean():.1f} "
        f"of 100 (stopping the whole batch when all converged: {used.max():.0f})"
    )
    return Row.at_least("strong attack per crop: full / early-stopped", t_full / t_early, 2, detail)


def bench_fold(cfg: Config, data: DataBundle):
    """Forward of 64 crops in the project's runtime, BatchNorm kept vs folded, with accuracy."""
    from benchmarks.run import Row

    model, inputs = small_model(cfg, data), _inputs(cfg, data, 64)
    plain = OURS.forward(OURS.prepare_model(copy.deepcopy(model)))
    folded = OURS.forward(OURS.prepare_model(fold_batchnorm(model)))
    norm = data.normalization
    with torch.no_grad():
        a = all_metrics(norm.denormalize(plain(inputs.y)).clamp(0, 1), inputs.x)
        b = all_metrics(norm.denormalize(folded(inputs.y)).clamp(0, 1), inputs.x)

    def fwd(f):
        return lambda: torch.no_grad()(f)(inputs.y)

    t_plain, t_fold = compare(fwd(plain), fwd(folded), rounds=5)
    detail = (
        f"U-Net {SMALL}, {inputs.y.shape[0]} crops: PSNR {a['psnr'].mean():.3f} -> "
        f"{b['psnr'].mean():.3f} dB, SSIM {a['ssim'].mean():.4f} -> {b['ssim'].mean():.4f}"
    )
    return Row(
        f"BN folding forward ({describe(OURS)}): unfolded / folded",
        t_plain / t_fold,
        "> 1",
        t_plain > t_fold,
        detail,
    )


def bench_default_attack(cfg: Config, data: DataBundle):
    """Issue 25: passes per crop of the strong attack at equal strength, today's PGD (100 steps
    of eps/2 from 3 starts, early stopping: cpu-long's choice before this issue) against the
    new default (APGD on MSE and on SSIM, the smallest length whose MSE attack is at least as
    strong); strength is the share of the best loss found per crop by everything run here,
    a long APGD and PGD reference included. Counted in passes, not timed."""
    from benchmarks.run import Row
    from smoothrecon.attacks.apgd import APGD

    model, inputs = small_model(cfg, data), _inputs(cfg, data, 8)
    f = OURS.forward(OURS.prepare_model(fold_batchnorm(model)))
    eps = eps_from_rel(0.1, inputs.y.shape[1:])

    def run(attack, seed: int):
        return attack.run(f, inputs.y, inputs.target, eps, make_generator(seed, "cpu"))

    today = run(PGD(steps=100, step_factor=0.5, restarts=3, patience=10), 0)
    lengths = (12, 25, 50, 100, 200)
    apgd = {n: run(APGD(steps=n), 1) for n in lengths}
    refs = [run(APGD(steps=400, restarts=2), 2), run(PGD(steps=400, step_factor=0.25), 3)]
    best = torch.stack([r.loss for r in [today, *apgd.values(), *refs]]).max(0).values
    share = {k: float(r.loss.mean() / best.mean()) for k, r in [("today", today), *apgd.items()]}
    assert today.steps_used is not None
    today_cost = float(today.steps_used.float().mean())
    equal = next((n for n in lengths if share[n] >= share["today"]), lengths[-1])
    new_cost = 2 * (equal + 1)  # both losses of the ensemble, APGD's start pass included
    shares = ", ".join(f"APGD {n}: {share[n]:.1%}" for n in lengths)
    detail = (
        f"8 crops, eps_rel 0.1, U-Net {SMALL}: today's PGD reaches {share['today']:.1%} of the "
        f"best loss found at {today_cost:.0f} passes/crop; {shares}; the new default at equal "
        f"strength is APGD {equal} on MSE and SSIM, {new_cost} passes/crop"
        + ("" if share[equal] >= share["today"] else " (NOT as strong: the longest tried)")
    )
    return Row.at_least(
        "strong attack passes per crop at equal strength: today's PGD / new default",
        today_cost / new_cost,
        2,
        detail,
    )
