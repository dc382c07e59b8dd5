"""Crops of the configured size: fresh random crops for training, a fixed set for evaluation.

Training crops of epoch e are drawn from a generator seeded by (seed, e), so an epoch is the same
after a resume. A background thread assembles the next batch while the model trains on the
current one (the crops are memory-mapped uint8 slices: cheap, and off the critical path).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from smoothrecon.data.photos import Photo


@dataclass(frozen=True)
class CropSpec:
    """Where a crop lies: photo index, top, left, and whether it is flipped left-right."""

    photo: int
    top: int
    left: int
    flip: bool = False


def center_spec(i: int, photo: Photo, size: int) -> CropSpec:
    return CropSpec(i, (photo.height - size) // 2, (photo.width - size) // 2)


def cut(photos: list[Photo], specs: list[CropSpec], size: int) -> torch.Tensor:
    """Assemble crops: -> (N, 3, size, size) uint8 tensor (pixel values 0..255)."""
    out = np.empty((len(specs), size, size, 3), dtype=np.uint8)
    for j, s in enumerate(specs):
        patch = photos[s.photo].pixels[s.top : s.top + size, s.left : s.left + size]
        out[j] = patch[:, ::-1] if s.flip else patch
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def eval_specs(
    photos: list[Photo], size: int, per_photo: int, mode: str, seed: int, cap: int = 0
) -> list[CropSpec]:
    """A fixed, reproducible set of crops: `per_photo` random positions per photo (seeded by
    the photo's hash), or one center crop per photo in "center" mode."""
    specs: list[CropSpec] = []
    for i, p in enumerate(photos):
        if mode == "center":
            specs.append(center_spec(i, p, size))
            continue
        digest = hashlib.sha256(f"{seed}:{p.sha256}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        for _ in range(per_photo):
            top = int(rng.integers(0, p.height - size + 1))
            left = int(rng.integers(0, p.width - size + 1))
            specs.append(CropSpec(i, top, left))
    if cap and len(specs) > cap:
        # Keep an even spread over photos rather than the first photos' crops.
        keep = np.linspace(0, len(specs) - 1, cap).round().astype(int)
        specs = [specs[k] for k in keep]
    return specs


class TrainCrops:
    """The training stream: `crops_per_epoch` crops per epoch, batched, reproducible per epoch.

    Random mode draws a photo with probability proportional to its number of crop positions,
    then a uniform position and (optionally) a flip. Center mode cycles through the photos'
    center crops in a random order (the thesis code's protocol).
    """

    def __init__(
        self,
        photos: list[Photo],
        size: int,
        crops_per_epoch: int,
        mode: str = "random",
        flips: bool = True,
        seed: int = 0,
    ):
        assert photos, "no training photos"
        self.photos, self.size, self.n = photos, size, crops_per_epoch
        self.mode, self.flips, self.seed = mode, flips, seed
        positions = np.array([(p.height - size + 1) * (p.width - size + 1) for p in photos], float)
        self.weights = positions / positions.sum()

    def epoch_specs(self, epoch: int) -> list[CropSpec]:
        rng = np.random.default_rng([self.seed, epoch, 7])
        if self.mode == "center":
            order = np.concatenate(
                [rng.permutation(len(self.photos)) for _ in range(-(-self.n // len(self.photos)))]
            )[: self.n]
            return [center_spec(int(i), self.photos[int(i)], self.size) for i in order]
        idx = rng.choice(len(self.photos), size=self.n, p=self.weights)
        specs = []
        for i in idx:
            p = self.photos[int(i)]
            top = int(rng.integers(0, p.height - self.size + 1))
            left = int(rng.integers(0, p.width - self.size + 1))
            flip = bool(rng.integers(0, 2)) if self.flips else False
            specs.append(CropSpec(int(i), top, left, flip))
        return specs

    def batches(
        self, epoch: int, batch_size: int, rank: int = 0, world: int = 1, pin: bool = False
    ) -> Iterator[torch.Tensor]:
        """Yield (B, 3, S, S) uint8 batches of `epoch`, prefetched by a background thread.

        With `world` > 1 processes, each global batch is split into contiguous per-rank slices,
        so N processes see exactly the crops of the 1-process run. `pin` puts each batch in
        pinned memory (for asynchronous copies to a GPU).
        """
        specs = self.epoch_specs(epoch)
        starts = list(range(0, len(specs), batch_size))

        def local(start: int) -> list[CropSpec]:
            chunk = specs[start : start + batch_size]
            per = -(-len(chunk) // world)
            return chunk[rank * per : (rank + 1) * per]

        q: queue.Queue = queue.Queue(maxsize=2)

        def producer() -> None:
            for s in starts:
                batch = cut(self.photos, local(s), self.size)
                q.put(batch.pin_memory() if pin else batch)
            q.put(None)

        thread = threading.Thread(target=producer, daemon=True)
        thread.start()
        while (item := q.get()) is not None:
            yield item
        thread.join()
