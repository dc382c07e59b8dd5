"""The README runs: its Python examples and its command-line block, at smoke scale on the test
photos; and the numbers it states about the presets match the presets."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import smoothrecon as sr
from smoothrecon.config import load_config
from smoothrecon.data.sources import pinned_hashes
from smoothrecon.data.splits import split_counts
from smoothrecon.experiments.grid import thesis_grid

README = Path(__file__).resolve().parents[2] / "README.md"
SMOKE = ["--preset", "smoke", "--set", "data.short_side=0", "--quiet"]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def _commands() -> list[list[str]]:
    """The `smoothrecon ...` lines of the README's command-line block (continuations joined,
    comments dropped)."""
    block = next(b for b in _blocks("") if "smoothrecon reproduce" in b)
    text = block.replace("\\\n", " ")
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    return [shlex.split(ln)[1:] for ln in lines if ln.startswith("smoothrecon ")]


def test_readme_python_examples_run(tmp_path, photo_dir, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").symlink_to(photo_dir)

    def on_test_photos(preset="paper", file=None, overrides=None, extra=None):
        more = [f"data.source={photo_dir}", "data.short_side=0"]
        return load_config(preset, file, [*(overrides or []), *more], extra)

    monkeypatch.setattr(sr, "load_config", on_test_photos)
    blocks = _blocks("python")
    assert len(blocks) >= 2
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i}", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert re.search(r"PSNR \d+\.\d\d dB, SSIM 0\.\d{4}", out), out
    assert "records; smoothrecon report runs/mine" in out


def test_readme_command_line_block_runs(tmp_path, photo_dir, monkeypatch, cli) -> None:
    monkeypatch.chdir(tmp_path)
    commands = _commands()
    assert [c[0] for c in commands][:2] == ["data", "train"] and len(commands) >= 8
    for args in commands:
        extra = [] if args[0] == "report" else [*SMOKE, "--data", str(photo_dir)]
        r = cli(*args, *extra)
        assert r.returncode == 0, f"smoothrecon {' '.join(args)}: {r.stderr}"


@pytest.mark.parametrize("preset", ["cpu", "cpu-long"])
def test_readme_numbers_about_the_presets_match_the_presets(preset: str) -> None:
    row = next(ln for ln in README.read_text().splitlines() if ln.startswith(f"| `{preset}` |"))
    cfg = load_config(preset)
    grid = thesis_grid(cfg)
    unets = sum(s.trained for s in grid)
    baselines = sum(s.mode == "none" for s in grid)
    test_photos = split_counts(len(pinned_hashes()), cfg.data.split)[2]
    size = cfg.data.crop_size
    assert f"{size}x{size} crops" in row
    assert f"{unets} U-Nets" in row and f"{baselines} baselines" in row
    assert f"{test_photos * cfg.data.eval_crops_per_photo} test crops" in row
    factors = "/".join(f"x{f}" for f in cfg.experiment.factors)
    assert factors in row
