"""Where the units of a sweep run: in this process (serial, the default) or as Ray tasks.

Both executors call the same `units.run_unit` on the same units, whose results are files keyed
by config hashes, so a serial run, a Ray run (local or on a cluster) and a resumed run produce
the same records. On a cluster, `--out` must be a folder every node sees (a shared filesystem);
each worker decodes the photos into its own cache once. A SLURM user starts a Ray cluster with
Ray's cluster launcher (or `ray start --head` / `ray start --address` inside the allocation) and
passes its address: `smoothrecon reproduce --executor ray --address HOST:PORT ...`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from smoothrecon.data import DataBundle, prepare_data
from smoothrecon.errors import UserError
from smoothrecon.experiments.units import Unit, run_unit
from smoothrecon.util.progress import bar as progress_bar
from smoothrecon.util.runtime import Runtime


class SerialExecutor:
    """Units one after the other in this process, sharing its decoded data."""

    def __init__(self, data: DataBundle, runtime: Runtime, progress: bool):
        self.data, self.runtime, self.progress = data, runtime, progress

    def map(self, units: Sequence[Unit], desc: str) -> list[dict[str, Any]]:
        out = []
        bar = progress_bar(units, desc=desc, unit="unit", disable=not self.progress or not units)
        for unit in bar:
            bar.set_postfix_str(unit.spec.label)
            out.append(run_unit(unit, self.data, self.runtime, progress=self.progress))
        return out


def _ray_task(unit: Unit, threads: int) -> dict:
    """One unit inside a Ray worker: its own data handle (from the on-disk cache) and runtime."""
    torch.set_num_threads(threads)
    data = prepare_data(unit.cfg.data, progress=False)
    return run_unit(unit, data, Runtime.from_config(unit.cfg.runtime))


class RayExecutor:
    """Each unit a Ray task (one CPU, or one GPU when the runtime uses CUDA)."""

    def __init__(self, runtime: Runtime, progress: bool, address: str | None):
        try:
            import ray
        except ImportError:
            raise UserError(
                "the ray executor needs Ray: pip install 'smoothrecon[ray]' (or use --executor "
                "serial)"
            ) from None
        self.ray = ray
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        gpus = 1 if runtime.device.type == "cuda" else 0
        self.task = ray.remote(num_cpus=1, num_gpus=gpus)(_ray_task)
        self.progress = progress

    def map(self, units: Sequence[Unit], desc: str) -> list[dict[str, Any]]:
        futures = [self.task.remote(u, 1) for u in units]
        pending = list(futures)
        with progress_bar(
            total=len(futures), desc=desc, unit="unit", disable=not self.progress
        ) as bar:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                bar.update(len(done))
        return self.ray.get(futures)


def make_executor(
    name: str, data: DataBundle, runtime: Runtime, progress: bool, address: str | None = None
) -> SerialExecutor | RayExecutor:
    if name == "serial":
        if address:
            raise UserError("--address is only used with --executor ray")
        return SerialExecutor(data, runtime, progress)
    if name == "ray":
        return RayExecutor(runtime, progress, address)
    raise UserError(f"unknown executor '{name}': use serial or ray")
