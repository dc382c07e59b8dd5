"""APGD (attack.kind = apgd) runs through the command line like PGD: its records, the run
folder's description of it and the report's attack line."""

from __future__ import annotations

import json
from pathlib import Path

from smoothrecon.util.io import read_jsonl


def test_evaluate_with_apgd(cli, photo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = cli(
        "evaluate", "--preset", "smoke", "--quiet", "--data", photo_dir, "--model", "bilinear",
        "--set", "data.short_side=0", "--set", "attack.kind=apgd", "--steps", "8",
        "--restarts", "1", "--eps-rel", "0,0.05", "--sigma-g", "0", "--out", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    attacked = [x for x in read_jsonl(out / "records.jsonl") if x["eps_rel"] > 0]
    assert attacked and all(not x["attack_failed"] for x in attacked)
    assert all(x["random_psnr"] > x["psnr"] for x in attacked)  # it beats random noise
    described = json.loads((out / "run.json").read_text())["attacks"]["strong"]
    assert described["kind"] == "apgd" and described["steps"] == 8
    assert cli("report", out).returncode == 0
    assert "APGD-L2, 8 steps" in (out / "report" / "report.md").read_text()
