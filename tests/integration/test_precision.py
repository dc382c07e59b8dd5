"""Say what ran (issue 28): the resolved precision in every record, manifest, config.yaml and
report; `auto` resolved by the capability probe alone; a resume under another precision is
refused in one line naming both values."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import smoothrecon as sr
from smoothrecon.config import RuntimeConfig
from smoothrecon.report import build_report
from smoothrecon.util.io import read_jsonl
from smoothrecon.util.runtime import resolved_precision

FAST = ["data.short_side=0", "data.max_eval_crops=2", "attack.steps=2", "attack.restarts=1"]


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))


def probe_says(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    """Only the capability probe is replaced: the run itself is real."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native, raising=False)


def evaluate_into(out: Path, photo_dir: Path, *sets: str) -> list[dict]:
    rows = sr.evaluate(
        tiny_net(),
        data=photo_dir,
        eps_rels=[0.0],
        sigmas=[0.0, 0.1],
        out=out,
        preset="smoke",
        overrides=[*FAST, *sets],
    )
    return [dict(r) for r in rows]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, photo_dir: Path) -> dict[str, tuple[Path, list[dict]]]:
    """{precision: (folder, records)} of a real evaluation at runtime.precision=auto, once with
    the probe saying bf16 is native and once saying it is not."""
    out = {}
    for native, expected in ((False, "fp32"), (True, "bf16")):
        with pytest.MonkeyPatch.context() as mp:
            probe_says(mp, native)
            assert resolved_precision(RuntimeConfig(precision="auto", device="cpu")) == expected
            folder = tmp_path_factory.mktemp(expected) / "run"
            out[expected] = (folder, evaluate_into(folder, photo_dir, "runtime.precision=auto"))
    return out


@pytest.mark.parametrize("expected", ["fp32", "bf16"])
def test_auto_resolves_by_the_probe_and_every_artifact_names_it(runs, expected: str) -> None:
    out, rows = runs[expected]
    for r in [*rows, *read_jsonl(out / "records.jsonl")]:
        assert r["runtime"]["precision"] == expected
        assert r["runtime"]["device"] == "cpu" and r["runtime"]["cpu"]
        assert {"channels_last", "threads", "torch"} <= set(r["runtime"])
        assert r["runtime"].get("bf16") == ("native" if expected == "bf16" else None)
    for unit in (out / "evals").rglob("*.json"):
        assert json.loads(unit.read_text())["runtime"]["precision"] == expected
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == manifest["runtime"]["precision"] == expected
    assert json.loads((out / "run.json").read_text())["runtime"]["precision"] == expected
    assert f"precision: auto  # resolved: {expected}" in (out / "config.yaml").read_text()


def test_bf16_computes_other_numbers_than_fp32(runs) -> None:
    """The two runs differ only by precision (the same crops, seeds and net)."""
    a, b = (sorted(r["psnr"] for r in runs[p][1]) for p in ("fp32", "bf16"))
    assert a != b and max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1.0


def test_the_report_states_the_precision_in_its_compute_line_and_config(
    runs, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    shutil.copytree(runs["fp32"][0], out)
    build_report(out)
    page = (out / "report" / "report.md").read_text()
    compute = next(line for line in page.splitlines() if "Compute (measured" in line)
    assert "fp32, channels_last" in compute and "WARNING: the records mix" not in page
    assert "precision: auto  # resolved: fp32" in page
    # records computed in two precisions are flagged
    unit = next((out / "evals").rglob("*.json"))
    payload = json.loads(unit.read_text())
    payload["records"][0]["runtime"] = {**payload["records"][0]["runtime"], "precision": "bf16"}
    unit.write_text(json.dumps(payload))
    build_report(out)
    page = (out / "report" / "report.md").read_text()
    assert "WARNING: the records mix what computed them" in page
    assert "precision: auto  # resolved: bf16 and fp32" in page


def test_a_resume_under_another_precision_is_refused_in_one_line(
    cli, photo_dir: Path, tmp_path: Path, smoke_models: dict[str, Path]
) -> None:
    out = tmp_path / "eval"
    ran = resolved_precision(RuntimeConfig(precision="auto", device="cpu"))
    other = "bf16" if ran == "fp32" else "fp32"
    args = ["--model", smoke_models["std"], "--data", photo_dir, "--eps-rel", "0",
            "--sigma-g", "0", "--quiet", "--out", out, "--set", "data.short_side=0",
            "--set", "data.max_eval_crops=2"]  # fmt: skip
    assert cli("evaluate", *args).returncode == 0
    before = sorted(p.name for p in out.rglob("*"))
    r = cli("evaluate", *args, "--set", f"runtime.precision={other}")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert f"precision '{ran}' there, '{other}' now" in lines[0]
    assert f"--set runtime.precision={ran}" in lines[0] and "--force-new" in lines[0]
    assert sorted(p.name for p in out.rglob("*")) == before  # nothing written
    # naming the precision it ran in resumes it
    r = cli("evaluate", *args, "--set", f"runtime.precision={ran}")
    assert r.returncode == 0, r.stderr
