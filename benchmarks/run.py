"""The benchmark suite (`make bench`): speed as ratios against baselines measured in the same
process, written to docs/benchmarks.md with the machine it ran on.

    python -m benchmarks.run [--only NAME ...] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.certify_speed import bench_certify
from benchmarks.common import (
    bench_config,
    bench_data,
    compare,
    describe,
    machine,
    project_runtime,
)
from benchmarks.evaluation_speed import (
    bench_default_attack,
    bench_fold,
    bench_strong_attack,
    bench_thesis_peer,
)
from smoothrecon.attacks.pgd import PGD, eps_from_rel, pgd_l2
from smoothrecon.config import Config
from smoothrecon.data import DataBundle
from smoothrecon.defenses.smoothing import predict_many
from smoothrecon.evaluation.attacking import batched_attack
from smoothrecon.evaluation.inputs import pairs
from smoothrecon.evaluation.unit import SplitInputs, smoothed_metrics, split_inputs
from smoothrecon.experiments.training import perturb
from smoothrecon.metrics import psnr, ssim
from smoothrecon.models import build_model
from smoothrecon.operators import build_operator
from smoothrecon.util.runtime import Runtime, auto_chunk
from smoothrecon.util.seeds import make_generator


@dataclass
class Row:
    name: str
    ratio: float
    goal: str
    met: bool
    detail: str

    @staticmethod
    def at_most(name: str, ratio: float, bound: float, detail: str) -> Row:
        return Row(name, ratio, f"<= {bound:g}", ratio <= bound, detail)

    @staticmethod
    def at_least(name: str, ratio: float, bound: float, detail: str) -> Row:
        return Row(name, ratio, f">= {bound:g}", ratio >= bound, detail)


def _setup(cfg: Config, runtime: Runtime | None = None):
    """(runtime, a fresh U-Net in its layout, the operator): the project's own runtime on this
    machine unless another is given."""
    runtime = runtime or project_runtime(cfg)
    torch.manual_seed(0)
    model = runtime.prepare_model(build_model(cfg.model, build_operator(cfg.operator)))
    op = build_operator(cfg.operator.name, cfg.operator.factor, cfg.operator.quantize)
    return runtime, model, op


def make_step(
    runtime: Runtime, model: torch.nn.Module, opt: torch.optim.Optimizer
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One optimizer step of the MSE loss, as the training loop does it."""

    def step(y: torch.Tensor, x: torch.Tensor) -> None:
        with runtime.autocast():
            loss = F.mse_loss(model(runtime.layout(y)).float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _quick_train(cfg: Config, data: DataBundle, steps: int = 120) -> torch.nn.Module:
    """A briefly trained U-Net (fp32), so accuracy changes are measured on a sensible model."""
    runtime, model, op = _setup(cfg, Runtime(torch.device("cpu"), "fp32", True))
    step = make_step(runtime, model, torch.optim.Adam(model.parameters(), lr=1e-3))
    model.train()
    done = 0
    epoch = 0
    while done < steps:
        epoch += 1
        for xb in data.training_crops().batches(epoch, cfg.train.batch_size):
            y, x, _ = pairs(runtime, xb, op, data.normalization)
            step(y, x)
            done += 1
            if done >= steps:
                break
    return model.eval()


def bench_train_step(cfg: Config, data: DataBundle) -> Row:
    """1. The real loop (crops -> operator -> step) vs bare forward+backward+Adam."""
    runtime, model, op = _setup(cfg)
    step = make_step(runtime, model, torch.optim.Adam(model.parameters(), lr=1e-4))
    bs = cfg.train.batch_size
    n_batches = 8
    xb = next(data.training_crops().batches(1, bs))
    y_fixed, x_fixed, _ = pairs(runtime, xb, op, data.normalization)
    gen = make_generator(0, "cpu")

    def real() -> None:
        for i, xb in enumerate(data.training_crops().batches(2, bs)):
            y, x, _ = pairs(runtime, xb, op, data.normalization)
            step(perturb(model, y, x, cfg.train, gen, runtime), x)
            if i + 1 == n_batches:
                break

    def bare() -> None:
        for _ in range(n_batches):
            step(y_fixed, x_fixed)

    t_real, t_bare = compare(real, bare)
    ratio = t_real / t_bare
    ips = n_batches * bs / t_real
    return Row.at_most(
        "training step: real loop / bare fwd+bwd+Adam",
        ratio,
        1.15,
        f"{ips:.0f} img/s in the real loop, batch {bs}, {cfg.data.crop_size}px, "
        f"{describe(runtime)}",
    )


def bench_data_pipeline(cfg: Config, data: DataBundle) -> Row:
    """2. Images/s the data pipeline delivers vs images/s the training loop consumes."""
    runtime, model, op = _setup(cfg)
    step = make_step(runtime, model, torch.optim.Adam(model.parameters(), lr=1e-4))
    bs = cfg.train.batch_size
    n = 8

    def deliver() -> None:
        for i, xb in enumerate(data.training_crops().batches(3, bs)):
            pairs(runtime, xb, op, data.normalization)
            if i + 1 == n:
                break

    xb = next(data.training_crops().batches(1, bs))
    y, x, _ = pairs(runtime, xb, op, data.normalization)

    def consume() -> None:
        for _ in range(n):
            step(y, x)

    t_deliver, t_consume = compare(deliver, consume)
    ratio = t_consume / t_deliver
    return Row.at_least(
        "data pipeline: images/s delivered / images/s consumed",
        ratio,
        3,
        f"{n * bs / t_deliver:.0f} img/s delivered (crop + A(x) + normalize)",
    )


def bench_pgd(cfg: Config, data: DataBundle) -> Row:
    """3. One PGD iteration vs one forward+backward (to the input) of the same batch."""
    runtime, model, op = _setup(cfg)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    inputs = split_inputs(data.val.x[: cfg.evaluation.batch_size], op, data.normalization, runtime)
    f = runtime.forward(model)
    eps = eps_from_rel(0.02, inputs.y.shape[1:])
    steps = 10
    thesis = PGD(steps=steps, step_factor=0.25, keep="last")

    def attack() -> None:
        pgd_l2(f, inputs.y, inputs.target, eps, thesis)

    def fwd_bwd() -> None:
        for _ in range(steps):
            y = inputs.y.detach().requires_grad_(True)
            loss = (f(y) - inputs.target).pow(2).sum()
            torch.autograd.grad(loss, y)

    t_attack, t_fb = compare(attack, fwd_bwd)
    ratio = t_attack / t_fb
    return Row.at_most(
        "PGD iteration / forward+backward",
        ratio,
        1.15,
        f"{steps} steps on {inputs.y.shape[0]} crops (the attack also pays one final "
        "forward for the loss of the last iterate)",
    )


def bench_smoothing(cfg: Config, data: DataBundle) -> list[Row]:
    """4. Smoothed evaluation at k = 50 vs k batched forwards of f on the same inputs, for one
    sigma_g and for the evaluation's grid (the noise drawn once per chunk serves every sigma)."""
    runtime, model, op = _setup(cfg)
    model.eval()
    inputs = split_inputs(data.val.x[:16], op, data.normalization, runtime)
    f = runtime.forward(model)
    k = 50
    chunk = auto_chunk(inputs.y.shape[1:], inputs.y.device)
    big = inputs.y.repeat_interleave(k, 0)
    rows = []
    for sigmas in ([0.25], [s for s in cfg.smoothing.sigma_grid if s > 0]):

        def smoothed(sigmas: list[float] = sigmas) -> None:
            with torch.no_grad():
                predict_many(f, inputs.y, sigmas, k, make_generator(0, "cpu"))

        def forwards(n: int = len(sigmas)) -> None:
            with torch.no_grad():
                for _ in range(n):
                    for s in range(0, big.shape[0], chunk):
                        f(big[s : s + chunk])

        t_s, t_f = compare(smoothed, forwards)
        rows.append(
            Row.at_most(
                f"smoothed evaluation k=50, {len(sigmas)} sigma_g / {len(sigmas)} x k forwards",
                t_s / t_f,
                1.1,
                f"automatic chunk {chunk}; {16 * k * len(sigmas) / t_s:.0f} noisy forwards/s",
            )
        )
    return rows


def bench_attack_reuse(cfg: Config, data: DataBundle) -> Row:
    """5. 17 sigma_g values with one attack (reused) vs one attack per sigma_g."""
    runtime, model, op = _setup(cfg)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    inputs = split_inputs(data.val.x[:8], op, data.normalization, runtime)
    f = runtime.forward(model)
    sigmas = list(cfg.smoothing.sigma_grid) * (17 // len(cfg.smoothing.sigma_grid) + 1)
    sigmas = sorted(set(sigmas))[:17]
    sigmas = sigmas + [s + 1e-3 for s in sigmas][: 17 - len(sigmas)]
    k, bs = 8, 8

    def reused() -> None:
        e = batched_attack(f, inputs, 0.02, cfg.attack, bs, 0).e
        smoothed_metrics(f, inputs, e, sigmas, k, data.normalization, bs, 0)

    def per_sigma() -> None:
        for s in sigmas:
            e = batched_attack(f, inputs, 0.02, cfg.attack, bs, 0).e
            smoothed_metrics(f, inputs, e, [s], k, data.normalization, bs, 0)

    t_r, t_p = compare(reused, per_sigma, rounds=1)
    return Row(
        "attack reuse: one attack per sigma_g / one attack for 17 sigma_g",
        t_p / t_r,
        "> 1 (informative)",
        t_p > t_r,
        f"k = {k}, {len(sigmas)} sigma_g, 8 crops",
    )


def _accuracy(model: torch.nn.Module, runtime: Runtime, inputs: SplitInputs, norm) -> tuple:
    with torch.no_grad():
        out = norm.denormalize(runtime.forward(model)(inputs.y)).clamp(0, 1)
    return float(psnr(out, inputs.x).mean()), float(ssim(out, inputs.x).mean())


def bench_fast_path(cfg: Config, data: DataBundle) -> list[Row]:
    """6. bf16 + channels_last (and torch.compile) vs fp32 NCHW eager, with accuracy change."""
    trained = _quick_train(cfg, data)
    op = build_operator(cfg.operator.name, cfg.operator.factor, cfg.operator.quantize)
    slow = Runtime(torch.device("cpu"), "fp32", False)
    fast = Runtime(torch.device("cpu"), "bf16", True)
    m_slow = slow.prepare_model(copy.deepcopy(trained)).eval()
    m_fast = fast.prepare_model(copy.deepcopy(trained)).eval()
    inputs = split_inputs(data.val.x, op, data.normalization, slow)
    p_slow, s_slow = _accuracy(m_slow, slow, inputs, data.normalization)
    p_fast, s_fast = _accuracy(m_fast, fast, inputs, data.normalization)
    reps = -(-64 // inputs.y.shape[0])  # a batch of 64 crops (validation crops repeated)
    y = inputs.y.repeat(reps, 1, 1, 1)[:64]
    target = inputs.target.repeat(reps, 1, 1, 1)[:64]
    rows = []

    def fwd(rt: Runtime, m: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                rt.forward(m)(y)

        return run

    t_slow, t_fast = compare(fwd(slow, m_slow), fwd(fast, m_fast), rounds=5)
    acc = (
        f"validation PSNR {p_slow:.3f} -> {p_fast:.3f} dB, SSIM {s_slow:.4f} -> {s_fast:.4f} "
        f"(change {s_fast - s_slow:+.4f})"
    )
    ok = abs(s_fast - s_slow) <= 0.002
    rows.append(
        Row(
            "fast path forward: fp32 NCHW / bf16 channels_last",
            t_slow / t_fast,
            ">= 2",
            t_slow / t_fast >= 2 and ok,
            acc,
        )
    )

    def train_step(rt: Runtime, m: torch.nn.Module) -> Callable[[], None]:
        m = copy.deepcopy(m).train()
        step = make_step(rt, m, torch.optim.Adam(m.parameters(), lr=1e-4))
        x = target[:32]
        return lambda: step(y[:32], x)

    t_slow, t_fast = compare(train_step(slow, m_slow), train_step(fast, m_fast), rounds=5)
    rows.append(
        Row(
            "fast path training step: fp32 NCHW / bf16 channels_last",
            t_slow / t_fast,
            ">= 2",
            t_slow / t_fast >= 2,
            "batch 32",
        )
    )

    def smooth(rt: Runtime, m: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                predict_many(rt.forward(m), y[:8], [0.25], 16, make_generator(0, "cpu"))

        return run

    t_slow, t_fast = compare(smooth(slow, m_slow), smooth(fast, m_fast))
    rows.append(
        Row(
            "fast path smoothed evaluation (k=16): fp32 NCHW / bf16 channels_last",
            t_slow / t_fast,
            ">= 2",
            t_slow / t_fast >= 2,
            "8 crops",
        )
    )
    try:
        ours = project_runtime(cfg)
        m_ours = ours.prepare_model(copy.deepcopy(trained)).eval()
        compiled = torch.compile(m_ours)
        t0 = time.perf_counter()
        with torch.no_grad():
            ours.forward(compiled)(y)  # type: ignore[arg-type]
        warm = time.perf_counter() - t0
        t_eager, t_comp = compare(fwd(ours, m_ours), fwd(ours, compiled))  # type: ignore[arg-type]
        rows.append(
            Row(
                f"torch.compile forward: eager / compiled ({describe(ours)})",
                t_eager / t_comp,
                "> 1 to be worth it",
                t_eager > t_comp,
                f"first call (compilation) {warm:.1f} s",
            )
        )
    except Exception as exc:  # compile needs a working C++ toolchain; report, don't fail
        rows.append(
            Row(
                "torch.compile forward",
                math.nan,
                "> 1",
                False,
                f"unavailable: {type(exc).__name__}",
            )
        )
    return rows


def bench_scaling(cfg: Config, data: DataBundle) -> Row:
    """7. Training images/s with 2 processes (torchrun, gloo, 1 thread each) vs 1 process
    (all threads), one epoch of the cpu preset's standard model, from metrics.jsonl."""
    import json
    import os
    import subprocess
    import sys
    import tempfile

    threads = torch.get_num_threads()
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in (1, 2):
            out = Path(tmp) / f"p{nproc}"
            args = [
                "train",
                "--preset",
                cfg.preset,
                "--set",
                "train.epochs=1",
                "--quiet",
                "--out",
                str(out),
            ]
            launcher = (
                [sys.executable, "-m", "smoothrecon"]
                if nproc == 1
                else [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    "--nproc_per_node",
                    str(nproc),
                    "-m",
                    "smoothrecon",
                ]
            )
            env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // nproc))}
            subprocess.run([*launcher, *args], check=True, env=env, capture_output=True)
            row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
            rates[nproc] = row["images_per_s"]
    ratio = rates[2] / rates[1]
    return Row(
        "scaling: 2 processes / 1 process (training img/s)",
        ratio,
        "informative",
        True,
        f"{rates[1]:.0f} -> {rates[2]:.0f} img/s on {threads} cores; see docs/scaling.md",
    )


BENCHMARKS: dict[str, Callable[[Config, DataBundle], Row | list[Row]]] = {
    "train_step": bench_train_step,
    "data_pipeline": bench_data_pipeline,
    "pgd": bench_pgd,
    "smoothing": bench_smoothing,
    "attack_reuse": bench_attack_reuse,
    "fast_path": bench_fast_path,
    "scaling": bench_scaling,
    "thesis_peer": bench_thesis_peer,
    "strong_attack": bench_strong_attack,
    "default_attack": bench_default_attack,
    "fold": bench_fold,
    "certify": bench_certify,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--out", default="docs/benchmarks.md")
    args = parser.parse_args(argv)
    cfg = bench_config()
    data = bench_data(cfg)
    rows: list[Row] = []
    started = time.perf_counter()
    for name in args.only or list(BENCHMARKS):
        result = BENCHMARKS[name](cfg, data)
        for row in result if isinstance(result, list) else [result]:
            rows.append(row)
            print(
                f"{row.name}: {row.ratio:.2f} (goal {row.goal}, "
                f"{'met' if row.met else 'NOT met'}) — {row.detail}",
                flush=True,
            )
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {machine()}. Preset: {cfg.preset} ({cfg.data.crop_size}px crops, batch "
        f"{cfg.train.batch_size}). Suite time: {time.perf_counter() - started:.0f} s. "
        "Command: `make bench`.",
        "",
        "Each ratio compares two timings taken back to back, interleaved, in one process.",
        "",
        "| benchmark | ratio | goal | met | detail |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.name} | {r.ratio:.2f} | {r.goal} | {'yes' if r.met else 'no'} | {r.detail} |"
        for r in rows
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
