"""ONE training loop for the three modes of chapter 4; the mode is the input perturbation.

    standard     y                      eq 4.1
    gaussian     y + delta, delta ~ N(0, sigma_f^2 I)          eq 4.2
    adversarial  y + e, e = PGD_L2(f, y, x, eps = sqrt(d) eps_rel, 5 steps of eps/2)  eq 4.5

Perturbations live in the model-input (normalized) space, as in the thesis, or with
train.attack_space = measurement perturb the measurement A(x) (threat.py; the network then sees
y + lift(e_m)); the MSE loss is taken in the normalized space too (the authors' code).
Everything random in epoch e is seeded from (seed, e), so a run resumed from the checkpoint of
epoch n gives the same weights as an uninterrupted run. After every epoch the validation
MSE/PSNR/SSIM (on [0, 1] images) is appended to metrics.jsonl, and `last.safetensors` and (when
better) `best.safetensors` are written atomically.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from smoothrecon.attacks.pgd import PGD
from smoothrecon.attacks.threat import ThreatModel, pgd_in_space
from smoothrecon.config import Config, TrainConfig, config_from_dict
from smoothrecon.data import DataBundle, EvalSet, prepare_data
from smoothrecon.errors import TrainingDiverged, UserError
from smoothrecon.evaluation.inputs import METRICS, clean_metrics, pairs, to_pixels
from smoothrecon.experiments.manifest import (
    TRAIN_SECTIONS,
    build_manifest,
    claim,
    comparable_config,
    differences,
    refusal,
)
from smoothrecon.metrics import all_metrics
from smoothrecon.models import build_model, parameter_count
from smoothrecon.models.checkpoint import checkpoint_meta, model_state, optimizer_state, save_model
from smoothrecon.models.normalization import Normalization
from smoothrecon.operators import Operator, build_operator
from smoothrecon.util import distributed
from smoothrecon.util.io import atomic_write_text, ensure_dir, load_checkpoint, read_jsonl, run_lock
from smoothrecon.util.io import write_jsonl as _write_jsonl
from smoothrecon.util.progress import bar as progress_bar
from smoothrecon.util.runtime import Runtime, config_yaml
from smoothrecon.util.seeds import make_generator


@contextlib.contextmanager
def frozen_batchnorm_stats(model: nn.Module) -> Iterator[None]:
    """Keep BatchNorm running statistics unchanged (momentum 0) while the model stays in train
    mode: the training attack then targets the function being trained without polluting the
    statistics with its extra forward passes."""
    saved = {}
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            saved[m] = m.momentum
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in saved.items():
            m.momentum = momentum


def training_attack(cfg: TrainConfig) -> PGD:
    """The training attack of the thesis (section 4.2.3): pgd_steps steps of
    pgd_step_factor * eps from a random start in the ball, last iterate, no restarts."""
    return PGD(
        steps=cfg.pgd_steps,
        step_factor=cfg.pgd_step_factor,
        random_start="ball",
        restarts=1,
        keep="last",
        name="training",
    )


def perturb(
    model: nn.Module,
    y: torch.Tensor,
    x: torch.Tensor,
    cfg: TrainConfig,
    generator: torch.Generator,
    runtime: Runtime,
    threat: ThreatModel | None = None,
) -> torch.Tensor:
    """The training input for `cfg.mode`: y, y + N(0, sigma_f^2 I) (gaussian, denoiser) or
    y + PGD perturbation.

    y, x: (B, C, H, W) normalized model input and target. The PGD perturbation lives in
    `threat`'s space (cfg.attack_space; None: the input space), eps = sqrt(d) eps_rel with d
    counted there (threat.py); y + e is always a network input.
    """
    if cfg.mode == "standard":
        return y
    if cfg.mode in ("gaussian", "denoiser"):
        noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        return y + cfg.sigma_f * noise
    threat = ThreatModel("input") if threat is None else threat
    if threat.space != cfg.attack_space:
        raise ValueError(
            f"train.attack_space = '{cfg.attack_space}' but the threat model given is "
            f"'{threat.space}' (build it with ThreatModel.build(cfg.attack_space, ...))"
        )
    with frozen_batchnorm_stats(model):
        attack = pgd_in_space(
            runtime.forward(model),
            y,
            x,
            threat,
            cfg.eps_rel,
            training_attack(cfg),
            generator,
        )
    return y + attack.e


@dataclass
class TrainResult:
    out: Path
    best: Path
    last: Path
    epochs: list[dict[str, Any]] = field(default_factory=list)
    parameters: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class _Trainer:
    """What every epoch of one training run uses: `net` is `model` itself, or its
    DistributedDataParallel wrapper when several processes train together."""

    net: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: DataBundle
    cfg: Config
    runtime: Runtime
    progress: bool


def _train_epoch(run: _Trainer, epoch: int, step: int) -> tuple[float, int, float]:
    """One epoch of `run`; returns (mean train loss, global step, images per second)."""
    cfg, runtime, data, optimizer = run.cfg, run.runtime, run.data, run.optimizer
    operator = build_operator(cfg.operator)
    threat = ThreatModel.build(cfg.train.attack_space, operator, data.normalization)
    d = distributed.current()
    gen = make_generator(cfg.train.seed * 1_000_003 + epoch + 7919 * d.rank, runtime.device)
    run.net.train()
    total, count, start = 0.0, 0, time.perf_counter()
    pin = runtime.device.type == "cuda"
    batches = data.training_crops().batches(epoch, cfg.train.batch_size, d.rank, d.world, pin)
    n_batches = math.ceil(cfg.data.crops_per_epoch / cfg.train.batch_size)
    bar = progress_bar(
        batches,
        total=n_batches,
        desc=f"epoch {epoch}/{cfg.train.epochs}",
        unit="batch",
        leave=False,
        disable=not run.progress,
    )
    for x_uint8 in bar:
        y, x, _ = pairs(runtime, x_uint8, operator, data.normalization, gen)
        y_in = perturb(run.model, y, x, cfg.train, gen, runtime, threat)
        target = y if cfg.train.mode == "denoiser" else x  # a denoiser restores y itself
        with runtime.autocast():
            loss = F.mse_loss(run.net(runtime.layout(y_in)).float(), target)
        if not _all_finite(loss, d):
            raise TrainingDiverged(
                f"training loss became {loss.item()} at epoch {epoch}, step {step + 1}; "
                f"stopped, the last good checkpoint is kept (try a smaller train.lr)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        total += loss.item() * y.shape[0]
        count += y.shape[0]
        bar.set_postfix(loss=f"{loss.item():.4f}")
    seconds = time.perf_counter() - start
    if d.active:  # report the loss and throughput of the whole global batch
        sums = torch.tensor([total, float(count)], device=runtime.device)  # NCCL: on the GPU
        torch.distributed.all_reduce(sums)
        total, count = float(sums[0]), int(sums[1])
    return total / max(count, 1), step, count / seconds


def _all_finite(loss: torch.Tensor, d: distributed.Dist) -> bool:
    """Whether the loss is finite on every rank (all ranks stop together, none hangs)."""
    ok = torch.isfinite(loss.detach()).float().reshape(1)
    if d.active:
        torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
    return bool(ok.item() > 0)


def validate(
    model: nn.Module, data: DataBundle, cfg: Config, runtime: Runtime, split: str = "val"
) -> dict[str, float]:
    """Clean MSE / PSNR / SSIM of `model` on a fixed split, images in [0, 1]; of a denoiser,
    how well it restores y from y + N(0, sigma_f^2 I) (seeded noise)."""
    operator = build_operator(cfg.operator)
    evalset: EvalSet = data.eval_set(split)
    model.eval()
    if cfg.train.mode == "denoiser":
        return _denoising_metrics(model, evalset.x, operator, data.normalization, runtime, cfg)
    per_image = clean_metrics(
        runtime.forward(model),
        evalset.x,
        operator,
        data.normalization,
        runtime,
        cfg.evaluation.batch_size,
    )
    return {k: float(sum(v) / len(v)) for k, v in per_image.items()}


def _denoising_metrics(
    model: nn.Module,
    x_uint8: torch.Tensor,
    operator: Operator,
    norm: Normalization,
    runtime: Runtime,
    cfg: Config,
) -> dict[str, float]:
    """Mean metrics of D(y + sigma_f n) against y, both de-normalized and clamped to [0, 1]."""
    forward, out = runtime.forward(model), {m: 0.0 for m in METRICS}
    gen = make_generator(cfg.train.seed, runtime.device)
    bs = cfg.evaluation.batch_size
    with torch.no_grad():
        for start in range(0, x_uint8.shape[0], bs):
            y, _, _ = pairs(runtime, x_uint8[start : start + bs], operator, norm)
            noise = torch.randn(y.shape, generator=gen, device=y.device, dtype=y.dtype)
            restored = forward(y + cfg.train.sigma_f * noise)
            for m, v in all_metrics(to_pixels(restored, norm), to_pixels(y, norm)).items():
                out[m] += float(v.sum())
    return {m: v / x_uint8.shape[0] for m, v in out.items()}


def train(
    cfg: Config,
    out: str | Path,
    data: DataBundle | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    force_new: bool = False,
) -> TrainResult:
    """Train `cfg.model` with `cfg.train` into the folder `out`, resuming from its last
    checkpoint when one of the same config exists (a larger train.epochs extends it); a folder
    of another run is refused, or with `force_new` moved aside (manifest.py). `stop_after`
    ends after that many epochs of this call (used to test resuming)."""
    if cfg.model.name != "unet":
        raise UserError(f"model '{cfg.model.name}' has no weights to train")
    d = distributed.init_from_env()
    if not d.main:  # rank 0 owns the folder; the others only read its checkpoint
        return _train_locked(cfg, Path(out), data, False, stop_after)
    out = ensure_dir(out)
    with run_lock(out):
        spec = build_manifest("train", cfg, TRAIN_SECTIONS, ignore=("train.epochs",))
        moved = claim(out, spec, force_new)
        if moved is not None:
            print(f"moved the old contents of '{out}' to '{moved}'")
        return _train_locked(cfg, out, data, progress, stop_after)


def _check_resumable(out: Path, meta: dict[str, Any], cfg: Config) -> None:
    """The checkpoint `meta` continues as `cfg` when they differ at most in train.epochs,
    upwards: training is seeded per epoch, so extending a run gives the weights of a run of
    that many epochs from scratch."""
    # The checkpoint's config read by today's code: fields added since it was written take
    # their defaults (which describe how it was trained) instead of counting as differences.
    saved = config_from_dict(meta["config"]).to_dict()
    old, new = (
        {"config": comparable_config(c, TRAIN_SECTIONS, ("train.epochs",))}
        for c in (saved, cfg.to_dict())
    )
    diffs = differences(old, new)
    if diffs:
        raise UserError(refusal(out, diffs))
    if meta["epoch"] > cfg.train.epochs:
        raise UserError(
            f"'{out}' holds {meta['epoch']} epochs of this run, more than the "
            f"{cfg.train.epochs} asked; ask for {meta['epoch']} or more to extend it, or "
            f"choose a new --out"
        )


def _train_locked(
    cfg: Config, out: Path, data: DataBundle | None, progress: bool, stop_after: int | None
) -> TrainResult:
    runtime = Runtime.from_config(cfg.runtime)
    data = data or prepare_data(cfg.data, progress=progress)
    torch.manual_seed(cfg.train.seed)
    model = runtime.prepare_model(build_model(cfg.model, build_operator(cfg.operator)))
    model.check_size(cfg.data.crop_size, cfg.data.crop_size)  # type: ignore[operator]
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, eps=cfg.train.adam_eps)
    epoch, step, best_psnr = _resume(out, cfg, model, optimizer)
    d = distributed.current()
    net = model
    if d.active:
        ids = [runtime.device.index or 0] if runtime.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if d.main:
        atomic_write_text(out / "config.yaml", config_yaml(cfg))
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r["epoch"] <= epoch]
    trainer = _Trainer(net, model, optimizer, data, cfg, runtime, progress)
    started, done_here = time.perf_counter(), 0
    while epoch < cfg.train.epochs and (stop_after is None or done_here < stop_after):
        t0 = time.perf_counter()
        loss, step, ips = _train_epoch(trainer, epoch + 1, step)
        epoch += 1
        done_here += 1
        if d.main:
            row = {"epoch": epoch, "step": step, "train_loss": loss, "images_per_s": ips}
            best_psnr = _end_epoch(trainer, out, rows, row, (t0, best_psnr))
    distributed.barrier()
    best, last = out / "best.safetensors", out / "last.safetensors"
    return TrainResult(out, best, last, rows, parameter_count(model), time.perf_counter() - started)


def _resume(
    out: Path, cfg: Config, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, int, float]:
    """(epoch, step, best validation PSNR) of the run in `out`, its model and optimizer state
    loaded; (0, 0, -inf) for a new run."""
    last = out / "last.safetensors"
    if not last.exists():
        return 0, 0, -math.inf
    tensors, meta = load_checkpoint(last)
    _check_resumable(out, meta, cfg)
    model.load_state_dict(model_state(tensors))
    optimizer.load_state_dict(optimizer_state(tensors, meta))
    return meta["epoch"], meta["step"], meta["best_val_psnr"]


def _end_epoch(
    run: _Trainer, out: Path, rows: list[dict], row: dict, timing: tuple[float, float]
) -> float:
    """Validate after an epoch, append its row (`row`: epoch, step, loss, speed) to
    metrics.jsonl, save last (and best) checkpoints; timing = (the epoch's start, the best
    validation PSNR so far). Returns the new best."""
    cfg, (t0, best_psnr) = run.cfg, timing
    val = validate(run.model, run.data, cfg, run.runtime)
    row = {**row, "seconds": time.perf_counter() - t0, **{f"val_{k}": v for k, v in val.items()}}
    rows.append(row)
    is_best = val["psnr"] > best_psnr
    best_psnr = max(best_psnr, val["psnr"])
    key = cfg.hash("data", "operator", "model", "train")
    meta = checkpoint_meta(
        cfg,
        run.data.normalization,
        epoch=row["epoch"],
        step=row["step"],
        best_val_psnr=best_psnr,
        train_key=key,
        val=val,
    )
    if is_best:
        save_model(out / "best.safetensors", run.model, meta)
    save_model(out / "last.safetensors", run.model, meta, run.optimizer)
    _write_jsonl(out / "metrics.jsonl", rows)
    if run.progress:
        print(
            f"epoch {row['epoch']}/{cfg.train.epochs}  loss {row['train_loss']:.4f}  val PSNR "
            f"{val['psnr']:.2f} dB  SSIM {val['ssim']:.4f}  {row['images_per_s']:.0f} img/s"
        )
    return best_psnr
