"""The Ray executor: a smoke sweep on a local 2-CPU Ray instance gives the records of the serial
executor (same units, same config-hash cache, one torch thread per process in both runs)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the ray extra is not installed")

ARGS = [
    "reproduce",
    "--preset",
    "smoke",
    "--set",
    "data.short_side=0",
    "--set",
    "runtime.threads=1",
    "--quiet",
]


def _records(run: Path) -> dict[tuple, dict]:
    manifest = json.loads((run / "run.json").read_text())
    out = {}
    for rel in manifest["evals"]:
        for r in json.loads((run / rel).read_text())["records"]:
            out[(r["model"], r["split"], r["eps_rel"], r["attack"], r["setting"], r["sigma_g"])] = r
    return out


def test_ray_executor_gives_the_serial_records(photo_dir: Path, tmp_path: Path) -> None:
    runs = {}
    for executor in ("serial", "ray"):
        runs[executor] = tmp_path / executor
        cmd = [
            sys.executable,
            "-m",
            "smoothrecon",
            *ARGS,
            "--data",
            str(photo_dir),
            "--executor",
            executor,
            "--out",
            str(runs[executor]),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    serial, ray = _records(runs["serial"]), _records(runs["ray"])
    assert serial.keys() == ray.keys() and serial
    for key, r in serial.items():
        for m in ("mse", "psnr", "ssim"):
            for a, b in zip(r["per_image"][m], ray[key]["per_image"][m], strict=True):
                assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9), (key, m, a, b)
    manifest = json.loads((runs["ray"] / "run.json").read_text())
    assert manifest["executor"] == "ray"
