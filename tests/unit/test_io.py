"""Atomic writes, run-folder locks and checkpoint loading that never unpickles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from smoothrecon.errors import UserError
from smoothrecon.util.io import (
    atomic_write,
    atomic_write_text,
    ensure_dir,
    load_checkpoint,
    read_jsonl,
    resolve_checkpoint,
    run_lock,
    save_checkpoint,
    write_jsonl,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --- atomic writes -----------------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_failure_keeps_old_content_and_no_temp_file(tmp_path: Path, error) -> None:
    target = tmp_path / "table.csv"
    target.write_text("old content\n")

    def write(p: Path) -> None:
        p.write_text("half of the new con")
        raise error("disk full")

    with pytest.raises(error):
        atomic_write(target, write)
    assert target.read_text() == "old content\n"
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_atomic_write_replaces_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert leftovers(target.parent) == []
    mode = target.stat().st_mode & 0o777
    assert mode & 0o044, f"not the usual permissions: {oct(mode)}"  # not mkstemp's 0600


def test_ensure_dir_refuses_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        ensure_dir(f)
    with pytest.raises(UserError):
        atomic_write_text(f / "inside.txt", "x")


def test_read_jsonl_ignores_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    assert read_jsonl(path) == []
    write_jsonl(path, [{"epoch": 1}, {"epoch": 2}])
    with open(path, "a") as fh:
        fh.write('{"epoch": 3, "lo')
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]


# --- run lock ----------------------------------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_run_lock_is_held_and_released(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


def test_run_lock_released_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), run_lock(tmp_path):
        raise RuntimeError("boom")
    assert not (tmp_path / ".lock").exists()


def test_run_lock_refuses_a_live_other_process(tmp_path: Path) -> None:
    other = os.getppid()  # alive, and not us
    (tmp_path / ".lock").write_text(str(other))
    with pytest.raises(UserError, match=f"pid {other}") as info, run_lock(tmp_path):
        pytest.fail("the lock of a live process was taken")
    assert "\n" not in str(info.value)
    assert (tmp_path / ".lock").read_text() == str(other)  # the other run keeps its lock


def test_run_lock_takes_over_a_stale_lock(tmp_path: Path) -> None:
    (tmp_path / ".lock").write_text(str(dead_pid()))
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())
    assert not (tmp_path / ".lock").exists()


@pytest.mark.parametrize("content", ["", "not a pid", "0"])
def test_run_lock_takes_over_an_unreadable_lock(tmp_path: Path, content: str) -> None:
    (tmp_path / ".lock").write_text(content)
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text() == str(os.getpid())


def test_run_lock_on_a_file_is_a_user_error(tmp_path: Path) -> None:
    f = tmp_path / "out"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"), run_lock(f):
        pass


# --- checkpoints -------------------------------------------------------------------------------


class CreatesFile:
    """Unpickling this creates (opens for writing) the file `path`."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    tensors = {"model.w": torch.randn(3, 5), "model.n": torch.arange(4)}
    meta = {"format": "x", "epoch": 3, "nested": {"a": [1, 2]}}
    path = save_checkpoint(tmp_path / "c.safetensors", tensors, meta)
    got, got_meta = load_checkpoint(path)
    assert got_meta == meta
    assert got.keys() == tensors.keys()
    for k, v in tensors.items():
        assert torch.equal(got[k], v)
    # A run folder resolves to its best checkpoint; the suffix may be left out.
    save_checkpoint(tmp_path / "best.safetensors", tensors, meta)
    assert resolve_checkpoint(tmp_path) == tmp_path / "best.safetensors"
    assert resolve_checkpoint(tmp_path / "c") == path


def test_malicious_pickle_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    torch.save({"state_dict": CreatesFile(marker)}, evil)
    with pytest.raises(UserError, match="never unpickles") as info:
        load_checkpoint(evil)
    assert "\n" not in str(info.value)
    assert not marker.exists(), "loading the checkpoint executed code from it"

    from smoothrecon import load_model

    with pytest.raises(UserError):
        load_model(evil)
    assert not marker.exists()
    # The payload is live: it calls open() when unpickled (so the test above can fail);
    # torch's own safe loader names the global it refuses, without running it.
    with pytest.raises(Exception, match=r"GLOBAL (io|builtins)\.open"):
        torch.load(evil, weights_only=True)
    assert not marker.exists()


def test_foreign_safetensors_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.ones(2, 2)}, str(path), metadata={"framework": "someone-else"})
    with pytest.raises(UserError, match="not a smoothrecon checkpoint"):
        load_checkpoint(path)
    no_meta = tmp_path / "bare.safetensors"
    save_file({"weight": torch.ones(2, 2)}, str(no_meta))
    with pytest.raises(UserError, match="not a smoothrecon checkpoint"):
        load_checkpoint(no_meta)


def test_smoothrecon_checkpoint_of_another_format_is_refused_by_load_model(tmp_path) -> None:
    from smoothrecon import load_model

    path = save_checkpoint(tmp_path / "x.safetensors", {"w": torch.ones(1)}, {"format": "v0"})
    with pytest.raises(UserError, match="format"):
        load_model(path)


@pytest.mark.parametrize("content", [b"", b"hello, not safetensors", b"\xff" * 64])
def test_garbage_checkpoint_is_a_user_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "best.safetensors"
    path.write_bytes(content)
    with pytest.raises(UserError):
        load_checkpoint(path)


def test_missing_checkpoint_and_foreign_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    (tmp_path / "notes.txt").write_text("some other project")
    with pytest.raises(UserError, match="folder without a smoothrecon checkpoint"):
        load_checkpoint(tmp_path)
