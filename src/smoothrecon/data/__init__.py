"""Photos -> decoded cache -> per-photo splits -> crops, plus the normalization of the data.

`prepare_data(cfg.data)` is the one entry point: it resolves the source (the default photos or
a folder), decodes once into the cache, splits by photo, computes the normalization on the
training split, and builds the fixed validation/test crops and the training stream.
`prepare_data(cfg.data, purpose="evaluate")` also takes a held-out folder of one or two photos
(no split is possible there; `eval_set("all")` holds crops of every photo).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from smoothrecon.config import MINI_IMAGENET_MEAN, MINI_IMAGENET_STD, DataConfig
from smoothrecon.data.crops import CropSpec, TrainCrops, cut, eval_specs
from smoothrecon.data.normalization import channel_stats
from smoothrecon.data.photos import Photo, load_photos
from smoothrecon.data.sources import cache_root, resolve_source
from smoothrecon.data.splits import SPLITS, assign_splits
from smoothrecon.errors import UserError
from smoothrecon.models.normalization import Normalization

__all__ = ["EVAL_SPLITS", "DataBundle", "EvalSet", "Normalization", "Photo", "prepare_data"]

EVAL_SPLITS = ("val", "test", "all")  # "all": every photo of the source, whatever its split


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
    """Photos by split, the training stream (None when no photo is left for training) and the
    fixed validation/test crops. `eval_set("all")` cuts crops of every photo on demand."""

    config: DataConfig
    photos: dict[str, list[Photo]]
    normalization: Normalization
    train: TrainCrops | None
    val: EvalSet
    test: EvalSet
    skipped_small: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    usable: list[Photo] = field(default_factory=list)  # every photo that holds a crop

    def eval_set(self, split: str) -> EvalSet:
        """The fixed crops of 'val', 'test' or 'all' (every photo, in source order)."""
        if split not in EVAL_SPLITS:
            raise UserError(f"split '{split}' is not one of {', '.join(EVAL_SPLITS)}")
        if split == "all":
            per_photo = self.config.eval_crops_per_photo
            return _eval_set(self.all_photos(), "all", self.config, per_photo)
        return self.val if split == "val" else self.test

    def training_crops(self) -> TrainCrops:
        """The training stream; one clear error when the source has no training photo."""
        if self.train is None:
            raise UserError(f"data source '{self.config.source}' has no photo for training")
        return self.train

    def all_photos(self) -> list[Photo]:
        return sorted(self.usable, key=lambda p: p.name)

    def summary(self) -> dict:
        return {
            "source": self.config.source,
            "resize": _resize_text(self.config),
            "prescale": self.config.prescale,
            "short_side": self.config.short_side,
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


def _resize_text(cfg: DataConfig) -> str:
    if cfg.short_side > 0:
        return f"short side {cfg.short_side}px"
    return f"prescale {cfg.prescale:g}"


def _eval_set(photos: list[Photo], split: str, cfg: DataConfig, per_photo: int) -> EvalSet:
    specs = eval_specs(
        photos, cfg.crop_size, per_photo, cfg.train_crops, cfg.seed, cfg.max_eval_crops
    )
    x = (
        cut(photos, specs, cfg.crop_size)
        if specs
        else torch.empty(0, 3, cfg.crop_size, cfg.crop_size, dtype=torch.uint8)
    )
    return EvalSet(split, x, specs, [photos[s.photo].name for s in specs])


def _split_photos(usable: list[Photo], cfg: DataConfig, purpose: str) -> dict[str, list[Photo]]:
    """Photos by split; a folder of one or two photos has no split (only 'all' evaluates it)."""
    if len(usable) < 3 and purpose == "evaluate":
        return {s: [] for s in SPLITS}
    where = assign_splits([p.sha256 for p in usable], cfg.split)
    photos = {s: [p for p in usable if where[p.sha256] == s] for s in SPLITS}
    if not photos["train"] and purpose == "train":
        raise UserError(f"data.split = {cfg.split} leaves no photo for training")
    return photos


def prepare_data(
    cfg: DataConfig, progress: bool = False, purpose: Literal["train", "evaluate"] = "train"
) -> DataBundle:
    """Resolve, decode (cached), split, normalize and crop the data set of `cfg`.

    purpose "train" needs at least 3 usable photos (train/validation/test); "evaluate" takes
    any folder with one usable photo or more (a model brings its own normalization; the
    bundle's, used by the no-learning baselines, then comes from all photos when no training
    split exists).
    """
    files = resolve_source(cfg.source, cfg.cache_dir)
    report = load_photos(
        files, cache_root(cfg.cache_dir), cfg.prescale, progress, short_side=cfg.short_side
    )
    usable = [p for p in report.photos if min(p.height, p.width) >= cfg.crop_size]
    small = [p.name for p in report.photos if min(p.height, p.width) < cfg.crop_size]
    need = 3 if purpose == "train" else 1
    if len(usable) < need:
        why = "train/validation/test" if purpose == "train" else "evaluation"
        raise UserError(
            f"data source '{cfg.source}' has {len(usable)} usable photos (need at least {need} "
            f"for {why}; {len(small)} smaller than the {cfg.crop_size}px crop, "
            f"{len(report.unreadable)} unreadable)"
        )
    photos = _split_photos(usable, cfg, purpose)
    if cfg.normalization == "mini-imagenet":
        norm = Normalization(MINI_IMAGENET_MEAN, MINI_IMAGENET_STD)
    else:
        norm = channel_stats([p.pixels for p in photos["train"] or usable])
    train = None
    if photos["train"]:
        train = TrainCrops(
            photos["train"],
            cfg.crop_size,
            cfg.crops_per_epoch,
            cfg.train_crops,
            cfg.flips,
            cfg.seed,
        )
    val_per_photo = cfg.val_crops_per_photo or cfg.eval_crops_per_photo
    return DataBundle(
        config=cfg,
        photos=photos,
        normalization=norm,
        train=train,
        val=_eval_set(photos["val"], "val", cfg, val_per_photo),
        test=_eval_set(photos["test"], "test", cfg, cfg.eval_crops_per_photo),
        skipped_small=small,
        unreadable=report.unreadable,
        usable=usable,
    )
