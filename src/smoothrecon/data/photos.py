"""Decode photos once into a cache of uint8 arrays, memory-mapped on later use.

Each photo is decoded (any mode converted to RGB), resized (to a fixed short side, or by a
pre-scaling factor), and saved as `<cache>/decoded/v1-<sha256>-<size key>.npy`, keyed by its
content hash and the resizing,
so epochs never decode JPEG again and a changed file or setting rebuilds only what changed.
Writes are atomic; unreadable images are skipped and counted, never half-cached.
"""

from __future__ import annotations

import functools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from smoothrecon.data.sources import sha256_file
from smoothrecon.util.io import atomic_write, atomic_write_json

CACHE_VERSION = "v1"


@dataclass(frozen=True)
class Photo:
    """One decoded photo: `pixels` is (H, W, 3) uint8, memory-mapped from the cache."""

    name: str
    sha256: str
    pixels: np.ndarray

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def to_rgb_uint8(im: Image.Image) -> np.ndarray:
    """Any PIL image (L, LA, P, RGBA, CMYK, I;16, I, F, ...) -> (H, W, 3) uint8 RGB."""
    im = ImageOps.exif_transpose(im) or im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        a = np.clip(np.round(a / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def resize_factor(height: int, width: int, prescale: float = 1.0, short_side: int = 0) -> float:
    """The scale applied to an image: short_side / min(H, W) when `short_side` > 0 (never
    enlarging: a photo already smaller keeps its size), else `prescale`."""
    if short_side > 0:
        return min(1.0, short_side / min(height, width))
    return prescale


def size_key(prescale: float = 1.0, short_side: int = 0) -> str:
    """The part of a cache file name that names the resizing."""
    return f"ss{short_side}" if short_side > 0 else f"s{prescale:g}"


def decode_image(path: Path, prescale: float = 1.0, short_side: int = 0) -> np.ndarray | None:
    """Decode and resize one image; None when it is corrupt, truncated or not an image.

    Pillow's decompression-bomb limit stays on: an oversized image is treated as unreadable.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                rgb = to_rgb_uint8(im)
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ):
        return None
    h, w = rgb.shape[:2]
    scale = resize_factor(h, w, prescale, short_side)
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
    return np.ascontiguousarray(rgb)


@dataclass
class DecodeReport:
    photos: list[Photo]
    unreadable: list[str]


class HashIndex:
    """Remembers (size, mtime) -> sha256 per path so large folders are not re-hashed each run."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.rows: dict[str, list] = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, json.JSONDecodeError):
            self.rows = {}
        self.dirty = False

    def sha(self, file: Path) -> str:
        st = file.stat()
        key = str(file.resolve())
        row = self.rows.get(key)
        if row and row[0] == st.st_size and row[1] == st.st_mtime_ns:
            return str(row[2])
        digest = sha256_file(file)
        self.rows[key] = [st.st_size, st.st_mtime_ns, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.dirty:
            atomic_write_json(self.path, self.rows)


def load_photos(
    files: list[Path], cache: Path, prescale: float, progress: bool = False, short_side: int = 0
) -> DecodeReport:
    """Decoded, cached photos for `files` (duplicates by content are kept once)."""
    decoded = cache / "decoded"
    decoded.mkdir(parents=True, exist_ok=True)
    index = HashIndex(cache / "hash-index.json")
    photos: list[Photo] = []
    unreadable: list[str] = []
    seen: set[str] = set()
    from smoothrecon.util.progress import bar

    for f in bar(files, desc="decoding photos", unit="photo", leave=False, disable=not progress):
        sha = index.sha(f)
        if sha in seen:
            continue
        target = decoded / f"{CACHE_VERSION}-{sha}-{size_key(prescale, short_side)}.npy"
        pixels = _load_cached(target)
        if pixels is None:
            rgb = decode_image(f, prescale, short_side)
            if rgb is None:
                unreadable.append(f.name)
                continue
            atomic_write(target, functools.partial(_save_npy, array=rgb))
            pixels = _load_cached(target)
            assert pixels is not None
        seen.add(sha)
        photos.append(Photo(name=f.name, sha256=sha, pixels=pixels))
    index.save()
    return DecodeReport(photos=photos, unreadable=unreadable)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array)


def _load_cached(path: Path) -> np.ndarray | None:
    """The memory-mapped array, or None when missing or stale (wrong shape/dtype/corrupt)."""
    if not path.exists():
        return None
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        return None
    return a
