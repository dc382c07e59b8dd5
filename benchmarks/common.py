"""Shared pieces of the benchmark suite: machine facts, a timer, and a small trained model.

Every benchmark reports a ratio of two timings measured in the same process, back to back,
interleaved over several rounds (the median of each), because absolute timings on shared
machines are noisy.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable

import torch

from smoothrecon.config import Config, load_config
from smoothrecon.data import DataBundle, prepare_data
from smoothrecon.util.runtime import Runtime, machine_info, runtime_of


def machine() -> str:
    """The machine in one line (the same facts the reproduce runner records)."""
    m = machine_info()
    gpu = f", GPU {m['gpu']}" if "gpu" in m else ""
    return (
        f"{m['cpu']}, {os.cpu_count()} cores, torch {m['torch']}, "
        f"{torch.get_num_threads()} threads{gpu}"
    )


def timed(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Median seconds of `fn` over `repeat` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare(
    a: Callable[[], object], b: Callable[[], object], rounds: int = 3
) -> tuple[float, float]:
    """Median seconds of a and of b, measured interleaved (a, b, a, b, ...) after a warm-up."""
    a()
    b()
    ta, tb = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def bench_config(overrides: list[str] | None = None) -> Config:
    """The cpu preset (48x48 crops) unless SMOOTHRECON_BENCH_PRESET says otherwise."""
    preset = os.environ.get("SMOOTHRECON_BENCH_PRESET", "cpu")
    return load_config(preset, overrides=overrides or [])


def bench_data(cfg: Config) -> DataBundle:
    return prepare_data(cfg.data, progress=False)


def project_runtime(cfg: Config) -> Runtime:
    """The runtime the project itself uses for `cfg` on this machine (precision 'auto' resolved:
    bf16 only where the CPU computes it natively), on the CPU."""
    return runtime_of(dataclasses.replace(cfg.runtime, device="cpu"))


def describe(rt: Runtime) -> str:
    """'bf16+CL', 'fp32 NCHW', ...: a runtime in the benchmark table's words."""
    return f"{rt.precision}{'+CL' if rt.channels_last else ' NCHW'}"
