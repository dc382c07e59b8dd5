"""Where photos come from: the default Debian photo set, or any folder a user points to.

The default data set is 26 real photographs carried by two Debian packages
(lomiri-wallpapers-16.04 and mate-backgrounds). They are fetched with `apt-get download` and
unpacked with `dpkg -x` into the cache (no system install), then checked against the SHA-256
list shipped with the package: different files stop the run instead of training on them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from smoothrecon.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
DEBIAN_PACKAGES = ("lomiri-wallpapers-16.04", "mate-backgrounds")
EXCLUDED = ("umang_by_Abhishek_Mudgal.jpg",)  # abstract art, not a photograph


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
    """File name -> SHA-256 of the 26 default photos (shipped with the package)."""
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
    nature = sorted((bg / "mate" / "nature").glob("*.jpg"))
    return lomiri + nature


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
    """Return the folder of the 26 verified default photos, fetching them on first use."""
    target = cache_root(cache_dir) / "photos" / "default"
    pins = pinned_hashes()
    if target.is_dir() and not _verify(target, pins):
        return target
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
        for p in _select(work / "extracted"):
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
        return list_images(fetch_default_photos(cache_dir))
    return list_images(source)
