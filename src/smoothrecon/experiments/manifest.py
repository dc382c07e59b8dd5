"""A run folder belongs to one run: `<out>/manifest.json` says which.

The manifest names the kind of run (`train`, `reproduce`), the preset, the precision it
computes in (resolved: `fp32` or `bf16`, never `auto`; beside it the whole runtime of the
latest call, `Runtime.describe()`, which is not compared), the data source with a hash of its
photos, the operator, and the config sections that decide the run's results with their hash.
It is written atomically when a run starts, before any work, so an interrupted run is
recognised too. A run started in a folder whose manifest differs is refused with one sentence
naming each differing field and both values (so a run started in bf16 is never resumed in fp32:
`--set runtime.precision=...` names the one it ran in); the same config resumes;
`--force-new` moves the old contents to `<out>/.old-<n>/` (never deleting them) and starts
over. A folder from before manifests named the precision is resumed in this machine's, and
`claim` says so.

    differences(old, new)     pure: [(field, old value, new value)], identity fields first
    refusal(folder, diffs)    the one-line error
    claim(folder, manifest)   read, compare, refuse / move aside, write
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from smoothrecon.config import Config
from smoothrecon.errors import UserError
from smoothrecon.util.io import atomic_write_json, short_hash
from smoothrecon.util.runtime import resolved_precision, runtime_of

FILE = "manifest.json"
FORMAT = "smoothrecon-manifest-v1"
# What decides the weights of a training run (the key of training.py's checkpoints).
TRAIN_SECTIONS = ("data", "operator", "model", "train")
# A sweep is compared on its identity only (kind, preset, data, operator): every unit of work
# in it is keyed by the hash of the config that produced it, so a changed setting within the
# same preset (e.g. --set smoothing.k=50) recomputes only the units it changes and keeps the
# others, as it always did.
REPRODUCE_SECTIONS: tuple[str, ...] = ()
_IDENTITY = ("kind", "preset", "precision", "data", "operator")  # before the config's fields
# Written for the reader, never compared: what the latest call ran on (threads, CPU, torch
# may change between calls; the precision is compared through its own identity field).
_INFO = ("runtime",)
_SHOWN = 6  # fields named in a refusal before "and N more"
_OLD = re.compile(r"\.old-(\d+)")


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def data_source(source: str) -> str:
    """'default' or the absolute path of a folder of photos."""
    return source if source == "default" else str(Path(source).expanduser().resolve())


def photos_hash(source: str, cache_dir: str = "") -> str:
    """SHA-256 of the photos of a data source: of the pinned list for the default photos (no
    fetching needed), else of the sorted SHA-256s of the folder's image files (cached by size
    and mtime in the data cache, so a large folder is hashed once)."""
    if source == "default":
        pins = resources.files("smoothrecon").joinpath("data", "default-photos.sha256")
        return _sha256(pins.read_bytes())
    from smoothrecon.data.photos import HashIndex
    from smoothrecon.data.sources import cache_root, list_images

    index = HashIndex(cache_root(cache_dir) / "hash-index.json")
    digests = sorted(index.sha(f) for f in list_images(source))
    index.save()
    return _sha256("\n".join(digests).encode())


def comparable_config(
    config: dict[str, Any], sections: Sequence[str], ignore: Iterable[str] = ()
) -> dict[str, Any]:
    """The `sections` of a `Config.to_dict()` that decide a run's results, without locations
    (data.cache_dir), with the data folder as an absolute path and without the dotted fields
    of `ignore` (e.g. train.epochs: more epochs extend a training run)."""
    picked = json.loads(json.dumps({s: config[s] for s in sections if s in config}))
    if "data" in picked:
        picked["data"].pop("cache_dir", None)
        if "source" in picked["data"]:
            picked["data"]["source"] = data_source(picked["data"]["source"])
    for dotted in ignore:
        section, _, name = dotted.partition(".")
        picked.get(section, {}).pop(name, None)
    return picked


def build_manifest(
    kind: str,
    cfg: Config,
    sections: Sequence[str],
    ignore: Iterable[str] = (),
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a `kind` run of `cfg`; `extra` adds identity fields (e.g. models)."""
    config = comparable_config(cfg.to_dict(), sections, ignore)
    return {
        "format": FORMAT,
        "kind": kind,
        "preset": cfg.preset,
        "precision": resolved_precision(cfg.runtime),
        "runtime": runtime_of(cfg.runtime).describe(),
        "data": {
            "source": data_source(cfg.data.source),
            "photos_sha256": photos_hash(cfg.data.source, cfg.data.cache_dir),
        },
        "operator": cfg.to_dict()["operator"],
        **(extra or {}),
        "config_hash": short_hash(config, 16),
        "config": config,
    }


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key in sorted(value):
            flat |= _flatten(value[key], f"{prefix}.{key}" if prefix else key)
        return flat
    return {prefix: value}


def _fields(manifest: dict[str, Any]) -> dict[str, Any]:
    """field -> value: the identity fields, then the config's (named without 'config.');
    a config field that repeats an identity field (operator.*, data.source) appears once."""
    flat: dict[str, Any] = {}
    skip = (*_IDENTITY, *_INFO, "format", "config_hash", "config")
    rest = sorted(k for k in manifest if k not in skip)
    for key in (*_IDENTITY, *rest):
        if key in manifest:
            flat |= _flatten(manifest[key], key)
    for key, value in _flatten(manifest.get("config", {}), "").items():
        flat.setdefault(key, value)
    return flat


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for each field that differs between two manifests,
    identity fields (kind, preset, data, operator) first; a field missing on one side has the
    value None."""
    a, b = _fields(old), _fields(new)
    names = list(a) + [k for k in b if k not in a]
    diffs = [(k, a.get(k), b.get(k)) for k in names if a.get(k) != b.get(k)]
    if not diffs and old.get("config_hash") != new.get("config_hash"):
        diffs.append(("config_hash", old.get("config_hash"), new.get("config_hash")))
    return diffs


def _show(value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{40,}", value):
        return value[:12]  # a hash: its start tells two apart
    if isinstance(value, list):
        value = tuple(value)
    return "(none)" if value is None else repr(value)


def refusal(folder: str | Path, diffs: list[tuple[str, Any, Any]], force_new: bool = True) -> str:
    """One sentence: the folder holds another run, with the differing fields and both values
    (the first `_SHOWN` of them: `differences` puts kind, preset, data and operator first)."""
    parts = [f"{name} {_show(old)} there, {_show(new)} now" for name, old, new in diffs[:_SHOWN]]
    if len(diffs) > _SHOWN:
        parts.append(f"and {len(diffs) - _SHOWN} more")
    hints = ["--force-new to move the old run aside and start over"] if force_new else []
    ran = next((old for name, old, _ in diffs if name == "precision" and old), None)
    if ran is not None:
        hints.insert(0, f"--set runtime.precision={ran} to resume it as it ran")
    hint = f" (or {', or '.join(hints)})" if hints else ""
    what = "; ".join(parts)
    return f"'{folder}' holds a run of another config ({what}); choose a new --out{hint}"


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of `folder`, or None when it has none."""
    path = Path(folder) / FILE
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(
            f"'{path}' is not a readable manifest ({exc}); choose a new --out or pass "
            f"--force-new to move the old contents aside"
        ) from None
    if not isinstance(manifest, dict):
        raise UserError(f"'{path}' is not a smoothrecon manifest; choose a new --out")
    return manifest


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    return atomic_write_json(Path(folder) / FILE, manifest)


def move_aside(folder: str | Path) -> Path | None:
    """Move the contents of `folder` (but its lock and earlier `.old-<n>` folders) into a new
    `folder/.old-<n>/`; None when there is nothing to move."""
    folder = Path(folder)
    entries = [p for p in folder.iterdir() if p.name != ".lock" and not _OLD.fullmatch(p.name)]
    if not entries:
        return None
    taken = [int(m.group(1)) for p in folder.iterdir() if (m := _OLD.fullmatch(p.name))]
    target = folder / f".old-{max(taken, default=0) + 1}"
    target.mkdir()
    for p in entries:
        os.replace(p, target / p.name)
    return target


def claim(folder: str | Path, manifest: dict[str, Any], force_new: bool = False) -> Path | None:
    """Make `folder` the folder of the run `manifest` describes, under its run lock.

    A folder with the same manifest is resumed and one with another manifest is refused
    (UserError naming the differences); with `force_new` the old contents are moved aside
    first. A folder from before manifests existed is adopted, and one from before they named the
    precision is resumed in this one (with a note). Returns where old contents went.
    """
    folder = Path(folder)
    moved = move_aside(folder) if force_new else None
    old = read_manifest(folder)
    if old is not None:
        unrecorded = "precision" not in old and "precision" in manifest
        seen = {**old, "precision": manifest["precision"]} if unrecorded else old
        diffs = differences(seen, manifest)
        if diffs:
            raise UserError(refusal(folder, diffs))
        if unrecorded:
            print(
                f"note: '{folder}' was started before runs recorded their precision; resuming "
                f"it in {manifest['precision']} (this machine's), which its manifest now says"
            )
    if old != manifest:
        write_manifest(folder, manifest)
    return moved
