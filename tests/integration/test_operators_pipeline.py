"""Issue 15: every operator runs the whole loop, `reproduce --set operator.name=NAME` then
`report`, with the operator's own no-learning baselines and labels that name the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smoothrecon.config import BASELINES

OPERATORS = ["denoising", "deblurring", "inpainting", "compressed_sensing"]


@pytest.mark.parametrize("name", OPERATORS)
def test_reproduce_and_report_for_every_operator(cli, photo_dir: Path, tmp_path, name) -> None:
    out = tmp_path / name
    # inpainting also attacks in the measurement space (its mask drops values): the
    # convergence study then covers that threat model too
    spaces = "[input,measurement]" if name == "inpainting" else "[input]"
    r = cli(
        "reproduce", "--preset", "smoke", "--data", photo_dir, "--quiet",
        "--set", "data.short_side=0", "--set", f"operator.name={name}",
        "--set", "experiment.at_eps_rels=[]", "--set", "experiment.certify_eps_rels=[]",
        "--set", "experiment.thesis_setting=false", "--set", f"experiment.attack_spaces={spaces}",
        "--out", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    studied = {
        row.get("space", "input")
        for p in (out / "convergence").rglob("*.json")
        for row in json.loads(p.read_text())["rows"]
    }
    assert studied == set(spaces.strip("[]").split(","))
    records = [
        rec
        for p in sorted((out / "evals").rglob("*.json"))
        for rec in json.loads(p.read_text())["records"]
    ]
    models = {rec["model"] for rec in records}
    baselines = {m for m in models if m.split("/")[1] in BASELINES[name]}
    assert baselines == {f"{name}/{b}" for b in BASELINES[name]}
    assert {f"{name}/thesis/std", f"{name}/thesis/rs0.1"} <= models
    clean = {
        rec["model"]: rec["psnr"]
        for rec in records
        if rec["split"] == "test" and rec["eps_rel"] == 0 and rec["sigma_g"] == 0
    }
    assert all(10 < v < 60 for v in clean.values()), clean  # real reconstructions, in dB
    report = cli("report", out)
    assert report.returncode == 0, report.stderr[-3000:]
    md = (out / "report" / "report.md").read_text()
    assert f"{name} — a learned model beats the no-learning baseline" in md
    if name == "inpainting":
        assert "min share, measurement space" in md and "measurement space)" in md
    assert (out / "report" / "figures" / f"robustness_{name}.png").is_file()
