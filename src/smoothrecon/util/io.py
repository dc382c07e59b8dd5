"""Files: atomic writes, safetensors checkpoints with JSON metadata, run-folder locks.

A reader never sees a partial file: everything is written to a temporary file in the same
folder, flushed, fsynced and renamed over the target. Checkpoints are one safetensors file whose
header carries the JSON metadata, so weights and metadata can never disagree; loading never
unpickles anything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors.torch import safe_open as _safe_open

from smoothrecon.errors import UserError

CHECKPOINT_SUFFIX = ".safetensors"


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def short_hash(obj: object, n: int = 8) -> str:
    """The first n hex digits of the SHA-256 of a JSON-able object (keys sorted): the one hash
    of unit keys, settings keys and config hashes."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:n]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, then fsync and rename tmp_path over `path`."""
    path = Path(path)
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    def write(p: Path) -> None:
        p.write_bytes(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def ensure_dir(folder: str | Path) -> Path:
    """Create `folder` (and parents); a clear error when it is a file or not writable."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output path '{folder}' is a file, expected a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create folder '{folder}': {exc.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise UserError(f"folder '{folder}' is not writable")
    return folder


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """All complete JSON lines of `path` ([] when missing); a torn last line is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    return atomic_write_text(path, text)


def append_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Append rows by rewriting the file atomically (files here stay small)."""
    write_jsonl(path, read_jsonl(path) + rows)


# --- checkpoints -------------------------------------------------------------------------------


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write tensors and JSON-serializable `meta` to one safetensors file, atomically."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    header = {"smoothrecon": json.dumps(meta, sort_keys=True)}
    return atomic_write(path, lambda p: save_file(flat, str(p), metadata=header))


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a checkpoint file, a path without its suffix, or a run folder (-> its best)."""
    p = Path(path)
    candidates = [p, p.with_name(p.name + CHECKPOINT_SUFFIX), p / f"best{CHECKPOINT_SUFFIX}"]
    for c in candidates:
        if c.is_file():
            return c
    if p.is_dir():
        raise UserError(f"'{p}' is a folder without a smoothrecon checkpoint (best.safetensors)")
    raise UserError(f"model path '{p}' does not exist")


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint without executing anything from it: (tensors, metadata)."""
    p = resolve_checkpoint(path)
    try:
        with _safe_open(str(p), framework="pt") as fh:
            header = fh.metadata() or {}
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(
            f"'{p}' is not a safetensors checkpoint ({exc}); smoothrecon never unpickles "
            f".pt/.pth files, convert them to safetensors first"
        ) from None
    if "smoothrecon" not in header:
        raise UserError(f"'{p}' is a safetensors file but not a smoothrecon checkpoint")
    return tensors, json.loads(header["smoothrecon"])


# --- run-folder lock --------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def run_lock(folder: str | Path) -> Iterator[None]:
    """Hold `folder/.lock` while running; a second live run on the same folder is refused."""
    folder = ensure_dir(folder)
    lock = folder / ".lock"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                other = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                other = 0
            if other and other != os.getpid() and _pid_alive(other):
                raise UserError(
                    f"'{folder}' is in use by another smoothrecon run (pid {other}); "
                    f"wait for it or choose another --out"
                ) from None
            lock.unlink(missing_ok=True)  # stale lock of a killed run
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
