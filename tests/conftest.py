"""Shared fixtures: real photos from scikit-image's bundled images, an isolated cache, and the
smoke config pointed at them. Nothing here touches the network, apt or the user's cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smoothrecon.config import Config, load_config

# Real photographs (and two synthetic-but-natural-looking images) bundled with scikit-image,
# all at least 300 px on their short side; camera is greyscale on purpose.
PHOTOS = {
    "astronaut.png": "astronaut",
    "chelsea.jpg": "chelsea",
    "coffee.jpg": "coffee",
    "rocket.jpg": "rocket",
    "ihc.png": "immunohistochemistry",
    "hubble.jpg": "hubble_deep_field",
    "camera.png": "camera",
    "colorwheel.png": "colorwheel",
}


def write_photos(folder: Path) -> list[Path]:
    """Write the photos of PHOTOS into `folder` (JPEG or PNG by suffix)."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, loader in PHOTOS.items():
        a = np.asarray(getattr(skimage.data, loader)())
        assert min(a.shape[:2]) >= 300, (name, a.shape)
        path = folder / name
        im = Image.fromarray(a)
        if path.suffix == ".jpg":
            im.save(path, quality=92)
        else:
            im.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """SMOOTHRECON_CACHE -> a per-session temp folder (inherited by CLI subprocesses)."""
    cache = tmp_path_factory.mktemp("smoothrecon-cache")
    old = os.environ.get("SMOOTHRECON_CACHE")
    os.environ["SMOOTHRECON_CACHE"] = str(cache)
    try:
        yield cache
    finally:
        if old is None:
            os.environ.pop("SMOOTHRECON_CACHE", None)
        else:
            os.environ["SMOOTHRECON_CACHE"] = old


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 8 real photos (JPEG and PNG, one greyscale)."""
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder)
    return folder


@pytest.fixture
def photo_copy(tmp_path: Path, photo_dir: Path) -> Path:
    """A private, writable copy of the photos for tests that add or break files."""
    folder = tmp_path / "photos"
    shutil.copytree(photo_dir, folder)
    return folder


def smoke_config(photo_dir: str | Path, *sets: str, **overrides: object) -> Config:
    """The smoke preset on `photo_dir` at full resolution.

    Extra settings come as "section.key=value" strings or as keyword arguments written
    section__key=value (e.g. train__epochs=3).
    """
    items = [f"data.source={photo_dir}", "data.short_side=0", *sets]
    items += [f"{k.replace('__', '.')}={v}" for k, v in overrides.items()]
    return load_config("smoke", overrides=items)


@pytest.fixture(scope="session")
def make_config(photo_dir: Path) -> Callable[..., Config]:
    """smoke_config bound to the session's photo folder."""

    def make(*sets: str, **overrides: object) -> Config:
        return smoke_config(photo_dir, *sets, **overrides)

    return make


def run_cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m smoothrecon ARGS` with this session's environment (SMOOTHRECON_CACHE)."""
    assert os.environ.get("SMOOTHRECON_CACHE"), "the isolated cache fixture is not active"
    return subprocess.run(
        [sys.executable, "-m", "smoothrecon", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


@pytest.fixture(scope="session")
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """run_cli, for tests that run the command in a subprocess."""
    return run_cli


@pytest.fixture(scope="session")
def smoke_models(tmp_path_factory: pytest.TempPathFactory, make_config) -> dict[str, Path]:
    """Two small models trained once per session on the test photos and shared by the test
    files that only read them: "std" (standard) and "rs" (Gaussian noise, sigma_f 0.3), 2
    epochs each at the smoke preset. Tests must not write into these folders."""
    from smoothrecon.experiments.training import train

    root = tmp_path_factory.mktemp("smoke-models")
    configs = {
        "std": make_config("train.epochs=2"),
        "rs": make_config("train.epochs=2", "train.mode=gaussian", "train.sigma_f=0.3"),
    }
    for name, cfg in configs.items():
        train(cfg, root / name, progress=False)
    return {name: root / name for name in configs}
