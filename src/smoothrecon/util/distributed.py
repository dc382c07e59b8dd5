"""Multi-process runs under torchrun: process-group setup and splitting work across ranks.

`torchrun --nproc_per_node N -m smoothrecon train ...` sets WORLD_SIZE / RANK / LOCAL_RANK; we
then join a process group (gloo on CPU, NCCL on CUDA, chosen automatically). Training wraps the
model in DistributedDataParallel and gives each rank a contiguous slice of every global batch;
evaluation hands whole batches to ranks round-robin and gathers the results in order, so a run
on N ranks produces the records of the 1-rank run. Rank 0 writes every file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def current() -> Dist:
    """This process' place in the process group (rank 0 of 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Dist()


def init_from_env() -> Dist:
    """Join the process group torchrun describes, once; a no-op without WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return current()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    return current()


def shutdown(clean: bool = True) -> None:
    """Leave the process group (after a barrier when `clean`), so no rank exits while its
    communication threads still run."""
    if dist.is_available() and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if current().active:
        dist.barrier()


def map_batches(n: int, batch_size: int, fn: Callable[[int], T]) -> list[T]:
    """[fn(start) for start in range(0, n, batch_size)], the starts shared round-robin across
    ranks and the results gathered on every rank in order of start."""
    d = current()
    starts = list(range(0, n, batch_size))
    if not d.active:
        return [fn(s) for s in starts]
    mine = {s: fn(s) for s in starts[d.rank :: d.world]}
    gathered: list[dict[int, T] | None] = [None] * d.world
    dist.all_gather_object(gathered, mine)
    merged: dict[int, T] = {}
    for part in gathered:
        merged.update(part or {})
    return [merged[s] for s in starts]
