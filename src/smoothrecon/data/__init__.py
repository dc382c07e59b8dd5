"""Photos -> decoded cache -> per-photo splits -> crops, plus the normalization of the data.

`prepare_data(cfg.data)` is the one entry point: it resolves the source (default Debian photos
or a folder), decodes once into the cache, splits by photo, computes the normalization on the
training split, and builds the fixed validation/test crops and the training stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from smoothrecon.config import MINI_IMAGENET_MEAN, MINI_IMAGENET_STD, DataConfig
from smoothrecon.data.crops import CropSpec, TrainCrops, cut, eval_specs
from smoothrecon.data.normalization import Normalization, channel_stats
from smoothrecon.data.photos import Photo, load_photos
from smoothrecon.data.sources import cache_root, resolve_source
from smoothrecon.data.splits import SPLITS, assign_splits
from smoothrecon.errors import UserError

__all__ = ["DataBundle", "EvalSet", "Normalization", "Photo", "prepare_data"]


@dataclass
class EvalSet:
    """Fixed crops of one split: `x` is (N, 3, S, S) uint8; `specs[i]` says where crop i lies."""

    split: str
    x: torch.Tensor
    specs: list[CropSpec]
    photo_names: list[str]

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass
class DataBundle:
    config: DataConfig
    photos: dict[str, list[Photo]]
    normalization: Normalization
    train: TrainCrops
    val: EvalSet
    test: EvalSet
    skipped_small: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def eval_set(self, split: str) -> EvalSet:
        if split not in ("val", "test"):
            raise UserError(f"split '{split}' is not one of 'val', 'test'")
        return self.val if split == "val" else self.test

    def summary(self) -> dict:
        return {
            "source": self.config.source,
            "prescale": self.config.prescale,
            "crop_size": self.config.crop_size,
            "photos": {s: [p.name for p in self.photos[s]] for s in SPLITS},
            "crops": {
                "train_per_epoch": self.config.crops_per_epoch,
                "val": len(self.val),
                "test": len(self.test),
            },
            "normalization": {"kind": self.config.normalization, **self.normalization.to_dict()},
            "skipped_too_small": self.skipped_small,
            "unreadable": self.unreadable,
        }


def _eval_set(photos: list[Photo], split: str, cfg: DataConfig) -> EvalSet:
    specs = eval_specs(
        photos,
        cfg.crop_size,
        cfg.eval_crops_per_photo,
        cfg.train_crops,
        cfg.seed,
        cfg.max_eval_crops,
    )
    x = cut(photos, specs, cfg.crop_size) if specs else torch.empty(0, 3, cfg.crop_size, 0)
    return EvalSet(split, x, specs, [photos[s.photo].name for s in specs])


def prepare_data(cfg: DataConfig, progress: bool = False) -> DataBundle:
    """Resolve, decode (cached), split, normalize and crop the data set of `cfg`."""
    files = resolve_source(cfg.source, cfg.cache_dir)
    report = load_photos(files, cache_root(cfg.cache_dir), cfg.prescale, progress=progress)
    usable = [p for p in report.photos if min(p.height, p.width) >= cfg.crop_size]
    small = [p.name for p in report.photos if min(p.height, p.width) < cfg.crop_size]
    if len(usable) < 3:
        raise UserError(
            f"data source '{cfg.source}' has {len(usable)} usable photos (need at least 3 for "
            f"train/validation/test; {len(small)} smaller than the {cfg.crop_size}px crop, "
            f"{len(report.unreadable)} unreadable)"
        )
    where = assign_splits([p.sha256 for p in usable], cfg.split)
    photos = {s: [p for p in usable if where[p.sha256] == s] for s in SPLITS}
    if not photos["train"]:
        raise UserError(f"data.split = {cfg.split} leaves no photo for training")
    if cfg.normalization == "mini-imagenet":
        norm = Normalization(MINI_IMAGENET_MEAN, MINI_IMAGENET_STD)
    else:
        norm = channel_stats([p.pixels for p in photos["train"]])
    train = TrainCrops(
        photos["train"], cfg.crop_size, cfg.crops_per_epoch, cfg.train_crops, cfg.flips, cfg.seed
    )
    return DataBundle(
        config=cfg,
        photos=photos,
        normalization=norm,
        train=train,
        val=_eval_set(photos["val"], "val", cfg),
        test=_eval_set(photos["test"], "test", cfg),
        skipped_small=small,
        unreadable=report.unreadable,
    )
