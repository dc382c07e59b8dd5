"""Where photos come from: the default photo set, or any folder a user points to.

The default data set is 28 real photographs from two sources, both installed from package
registries (DATA.md has the credits): 15 carried by two Debian packages (lomiri-wallpapers-16.04
and mate-backgrounds), fetched with `apt-get download` and unpacked with `dpkg -x` into the
cache (no system install), and 13 classic test photographs shipped inside the wheels of
scikit-image, scikit-learn and matplotlib (dependencies of this package). All are copied into
one cache folder and checked against the SHA-256 list shipped with the package: different files
stop the run instead of training on them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from smoothrecon.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
DEBIAN_PACKAGES = ("lomiri-wallpapers-16.04", "mate-backgrounds")
# Not used from the Debian packages: abstract art (umang), and the shots where most of the
# frame is out of focus (macro shots with a shallow depth of field) or featureless (Storm's
# sky). Their crops are mostly blur, which bilinear up-sampling reproduces almost exactly
# (median 32-48 dB at x2 against 21-33 dB for the others; docs/choices.md), so they measured
# the wrong regime.
EXCLUDED = (
    "umang_by_Abhishek_Mudgal.jpg",
    "Aqua.jpg",
    "Blinds.jpg",
    "FreshFlower.jpg",
    "Garden.jpg",
    "LadyBird.jpg",
    "Storm.jpg",
    "TwoWings.jpg",
    "Wood.jpg",
    "YellowFlower.jpg",
    "free_by_Peter_Nerlich.jpg",
    "seeding_by_Clements_Engelhardt.jpg",
)
# Photographs shipped inside Python wheels: file name -> (package, path inside the package).
# Natural scenes and textures with sharp detail in most of the frame (the wallpapers are mostly
# shallow depth of field); four are greyscale. Not used: scikit-image's scientific images
# (hubble, ihc, retina), its synthetic ones, and the motorcycle stereo pair (two views of one
# scene, and the Middlebury licence is for research only).
WHEEL_PHOTOS = {
    "astronaut.png": ("skimage", "data/astronaut.png"),
    "brick.png": ("skimage", "data/brick.png"),
    "camera.png": ("skimage", "data/camera.png"),
    "chelsea.png": ("skimage", "data/chelsea.png"),
    "coffee.png": ("skimage", "data/coffee.png"),
    "coins.png": ("skimage", "data/coins.png"),
    "grass.png": ("skimage", "data/grass.png"),
    "gravel.png": ("skimage", "data/gravel.png"),
    "moon.png": ("skimage", "data/moon.png"),
    "rocket.jpg": ("skimage", "data/rocket.jpg"),
    "china.jpg": ("sklearn", "datasets/images/china.jpg"),
    "flower.jpg": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper.jpg": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}
WHEEL_DISTRIBUTIONS = {"skimage": "scikit-image", "sklearn": "scikit-learn"}


def cache_root(cache_dir: str = "") -> Path:
    """The cache folder: the config value, else $SMOOTHRECON_CACHE, else ~/.cache/smoothrecon."""
    root = cache_dir or os.environ.get("SMOOTHRECON_CACHE") or "~/.cache/smoothrecon"
    return Path(root).expanduser()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pinned_hashes() -> dict[str, str]:
    """File name -> SHA-256 of the 28 default photos (shipped with the package)."""
    text = resources.files("smoothrecon").joinpath("data", "default-photos.sha256").read_text()
    pins = {}
    for line in text.splitlines():
        if line.strip():
            digest, name = line.split()
            pins[name] = digest
    return pins


def list_images(folder: str | Path) -> list[Path]:
    """All image files under `folder`, recursively, sorted; a clear error when there are none."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise UserError(f"data folder '{root}' does not exist")
    if not root.is_dir():
        raise UserError(f"data path '{root}' is not a folder of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        suffixes = ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
        raise UserError(f"data folder '{root}' holds no images ({suffixes})")
    return files


def _verify(folder: Path, pins: dict[str, str]) -> list[str]:
    """Names whose file is missing or differs from its pinned hash."""
    bad = []
    for name, digest in pins.items():
        p = folder / name
        if not p.is_file() or sha256_file(p) != digest:
            bad.append(name)
    return bad


def _select(extracted: Path) -> list[Path]:
    bg = extracted / "usr" / "share" / "backgrounds"
    lomiri = [p for p in sorted(bg.glob("*_by_*.jpg")) if p.name not in EXCLUDED]
    nature = [p for p in sorted((bg / "mate" / "nature").glob("*.jpg")) if p.name not in EXCLUDED]
    return lomiri + nature


def wheel_photo_paths() -> list[Path]:
    """The installed files of WHEEL_PHOTOS (without importing the packages); one clear error
    when a package is missing."""
    paths = []
    for name, (package, rel) in WHEEL_PHOTOS.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            dist = WHEEL_DISTRIBUTIONS.get(package, package)
            raise UserError(
                f"the default photos include {name} from {dist}, which is not installed; "
                f"install smoothrecon with its dependencies, or use your own photos with "
                f"--data PATH"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if not path.is_file():
            raise UserError(
                f"{package} has no {rel}; the default photos differ from the pinned list — "
                f"install the package's wheel from PyPI, or use --data PATH"
            )
        paths.append(path)
    return paths


def _run(cmd: list[str], cwd: Path) -> None:
    try:
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise UserError(
            f"cannot fetch the default photos: '{cmd[0]}' is not available on this machine; "
            f"point to your own photos with --data PATH"
        ) from None
    except subprocess.CalledProcessError as exc:
        reason = (exc.stderr or exc.stdout or "").strip().splitlines()
        last = reason[-1] if reason else f"exit code {exc.returncode}"
        raise UserError(
            f"cannot fetch the default photos ({' '.join(cmd[:2])}: {last}); "
            f"point to your own photos with --data PATH"
        ) from None
    except subprocess.TimeoutExpired:
        raise UserError(
            "cannot fetch the default photos: apt-get timed out; use --data PATH"
        ) from None


def fetch_default_photos(cache_dir: str = "", progress: bool = True) -> Path:
    """Return the folder of the 28 verified default photos, fetching them on first use."""
    target = cache_root(cache_dir) / "photos" / "default"
    pins = pinned_hashes()
    if target.is_dir() and not _verify(target, pins):
        return target
    wheel = wheel_photo_paths()  # before apt: a missing package fails fast
    if progress:
        print(f"fetching the default photos ({', '.join(DEBIAN_PACKAGES)}) into {target} ...")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        work = Path(tmp)
        try:
            _run(["apt-get", "download", *DEBIAN_PACKAGES], work)
        except UserError:
            # The package lists may be missing on a fresh machine: update once, then retry.
            _run(["apt-get", "update", "-qq"], work)
            _run(["apt-get", "download", *DEBIAN_PACKAGES], work)
        for deb in sorted(work.glob("*.deb")):
            _run(["dpkg", "-x", deb.name, "extracted"], work)
        staged = work / "photos"
        staged.mkdir()
        for p in [*_select(work / "extracted"), *wheel]:
            shutil.copy2(p, staged / p.name)
        found = {p.name for p in staged.iterdir()}
        bad = _verify(staged, pins)
        extra = sorted(found - set(pins))
        if bad or extra:
            raise UserError(
                f"the default photos from {', '.join(DEBIAN_PACKAGES)} differ from the pinned "
                f"list ({len(bad)} missing or changed, e.g. {(bad + extra)[0]}); refusing to "
                f"train on other data — use --data PATH"
            )
        for name in ("lomiri-wallpapers-16.04", "mate-backgrounds"):
            src = work / "extracted" / "usr" / "share" / "doc" / name / "copyright"
            if src.is_file():
                shutil.copy2(src, staged / f"COPYRIGHT.{name}")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
    return target


def resolve_source(source: str, cache_dir: str = "") -> list[Path]:
    """The image files of a data source: 'default' or a folder."""
    if source == "default":
        # Only the pinned files: a cache folder of an older default set may hold others.
        folder = fetch_default_photos(cache_dir)
        return [folder / name for name in sorted(pinned_hashes())]
    return list_images(source)
