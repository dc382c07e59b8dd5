"""The `smoothrecon` command as a user runs it: in a subprocess, with the isolated cache.

Each command costs a Python + torch start-up, so the commands of a group run concurrently in a
module fixture and the tests check their results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

import smoothrecon
from smoothrecon.cli.main import build_parser


def run_many(cli, commands: dict[str, list]) -> dict[str, subprocess.CompletedProcess]:
    """Run the commands concurrently (each mostly waits for its torch import)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(cli, *args) for name, args in commands.items()}
        return {name: f.result() for name, f in futures.items()}


def screen_lines(stream: str) -> list[str]:
    """The non-empty lines a terminal shows (a progress bar erased with \\r leaves nothing)."""
    lines = (line.split("\r")[-1] for line in stream.split("\n"))
    return [line for line in lines if line.strip()]


def subcommands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


# --- version and help --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helps(cli) -> dict[str, subprocess.CompletedProcess]:
    commands = {"--version": ["--version"], "--help": ["--help"]}
    commands |= {name: [name, "--help"] for name in subcommands()}
    return run_many(cli, commands)


def test_version(helps) -> None:
    r = helps["--version"]
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"smoothrecon {smoothrecon.__version__}"


def test_console_script_version() -> None:
    script = Path(sys.executable).parent / "smoothrecon"
    if not script.exists():
        pytest.skip("no console script next to this interpreter")
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and smoothrecon.__version__ in r.stdout


def test_expected_subcommands_exist() -> None:
    assert {"data", "train", "attack", "evaluate", "reproduce", "report"} <= set(subcommands())


@pytest.mark.parametrize("name", ["--help", *subcommands()])
def test_help(helps, name: str) -> None:
    r = helps[name]
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: smoothrecon")
    assert "Traceback" not in r.stderr
    if name != "--help":
        assert f"smoothrecon {name}" in r.stdout


# --- data info ---------------------------------------------------------------------------------


def test_data_info(cli, photo_dir: Path) -> None:
    r = cli("data", "info", "--preset", "smoke", "--data", photo_dir, "--set", "data.short_side=0")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "prescale 1" in out and "crops 32px" in out
    counts = {}
    for split in ("train", "val", "test"):
        line = next(ln for ln in out.splitlines() if ln.startswith(split))
        counts[split] = int(line.split(":")[1].split()[0])
    assert sum(counts.values()) == len(list(photo_dir.iterdir()))
    assert min(counts.values()) >= 1
    for p in photo_dir.iterdir():
        assert p.name in out
    norm = next(ln for ln in out.splitlines() if ln.startswith("normalization"))
    assert "mean [" in norm and "std [" in norm
    assert "Traceback" not in r.stderr


# --- bad inputs --------------------------------------------------------------------------------


class Evil:
    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def bad(cli, tmp_path_factory, photo_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("bad-inputs")
    (root / "empty").mkdir()
    (root / "other").mkdir()
    (root / "other" / "notes.txt").write_text("another project's folder")
    (root / "a-file").write_text("not a folder")
    marker = root / "pwned"
    torch.save({"state_dict": Evil(marker)}, root / "evil.pt")
    (root / "locked").mkdir()
    (root / "locked" / ".lock").write_text(str(os.getpid()))  # this live test process
    broken = root / "broken"
    shutil.copytree(photo_dir, broken)
    (broken / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 20)
    (broken / "empty.png").write_bytes(b"")

    data = ["--data", photo_dir, "--set", "data.short_side=0"]
    smoke = ["--preset", "smoke", *data]
    commands = {
        "missing data folder": (["data", "info", "--preset", "smoke", "--data", root / "nope"],
                                "does not exist"),
        "empty data folder": (["data", "info", "--preset", "smoke", "--data", root / "empty"],
                              "holds no images"),
        "data is a file": (["data", "info", "--preset", "smoke", "--data", root / "a-file"],
                           "not a folder"),
        "unknown preset": (["data", "info", "--preset", "smok", *data], "did you mean 'smoke'"),
        "unknown config key": (["train", *smoke, "--set", "train.epoch=3", "--out", root / "o1"],
                               "did you mean 'epochs'"),
        "wrong type": (["train", *smoke, "--set", "train.epochs=abc", "--out", root / "o2"],
                       "must be an integer"),
        "negative sigma": (["train", *smoke, "--mode", "gaussian", "--sigma-f", "-0.5",
                            "--out", root / "o3"], "--sigma-f"),
        "negative sigma via set": (["train", *smoke, "--set", "train.sigma_f=-1",
                                    "--out", root / "o4"], "train.sigma_f"),
        # --quiet: these two fail after progress bars have started.
        "crop size the U-Net cannot take": (["train", *smoke, "--set", "data.crop_size=34",
                                             "--quiet", "--out", root / "o5"], "divisible by 4"),
        "model is a folder of something else": (["evaluate", "--model", root / "other",
                                                 "--out", root / "o6", *data], "folder without"),
        "model does not exist": (["attack", "--model", root / "nope.safetensors",
                                  "--eps-rel", "0.01", "--out", root / "o7", *data],
                                 "does not exist"),
        "malicious pt as model": (["evaluate", "--model", root / "evil.pt", "--out", root / "o8",
                                   *data], "never unpickles"),
        "output folder is a file": (["train", *smoke, "--out", root / "a-file"], "is a file"),
        "eps-rel not numbers": (["attack", "--model", root / "other", "--eps-rel", "abc",
                                 "--out", root / "o9"], "abc"),
        "nan loss": (["train", *smoke, "--set", "train.lr=1.0e+30", "--quiet",
                      "--out", root / "o10"],
                     "training loss became nan"),
        "locked output folder": (["train", *smoke, "--out", root / "locked"], "in use"),
    }  # fmt: skip
    good = {"broken photos": ["data", "info", "--preset", "smoke", "--data", broken]}
    results = run_many(cli, {k: v[0] for k, v in commands.items()} | good)
    return {
        "results": results,
        "expected": {k: v[1] for k, v in commands.items()},
        "root": root,
        "marker": marker,
    }


BAD_CASES = [
    "missing data folder",
    "empty data folder",
    "data is a file",
    "unknown preset",
    "unknown config key",
    "wrong type",
    "negative sigma via set",
    "crop size the U-Net cannot take",
    "model is a folder of something else",
    "model does not exist",
    "malicious pt as model",
    "output folder is a file",
    "nan loss",
    "locked output folder",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_error_line(bad, case: str) -> None:
    r = bad["results"][case]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = screen_lines(r.stderr)
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert lines[0].startswith("error:"), lines[0]
    assert bad["expected"][case] in lines[0]
    assert r.returncode == 2, (r.returncode, lines)


@pytest.mark.parametrize(("case", "value"), [("eps-rel not numbers", "abc"),
                                             ("negative sigma", "-0.5")])  # fmt: skip
def test_bad_number_is_a_usage_error_not_a_traceback(bad, case: str, value: str) -> None:
    # argparse's own convention (usage, then one error line) is fine here; a traceback is not.
    r = bad["results"][case]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = screen_lines(r.stderr)
    assert lines and "error:" in lines[-1] and value in lines[-1], lines
    assert bad["expected"][case] in lines[-1]
    assert [line for line in lines if "error:" in line] == lines[-1:]
    assert r.returncode == 2


def test_malicious_model_was_never_unpickled(bad) -> None:
    assert bad["results"]["malicious pt as model"].returncode != 0
    assert not bad["marker"].exists()


def test_refused_runs_leave_the_other_runs_lock(bad) -> None:
    assert (bad["root"] / "locked" / ".lock").read_text() == str(os.getpid())
    assert not (bad["root"] / "locked" / "last.safetensors").exists()
    assert (bad["root"] / "a-file").read_text() == "not a folder"


def test_unreadable_photos_are_reported_not_fatal(bad) -> None:
    r = bad["results"]["broken photos"]
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "2 unreadable" in r.stdout
    assert "unreadable: corrupt.jpg" in r.stdout and "unreadable: empty.png" in r.stdout
