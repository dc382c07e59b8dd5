"""torchrun with 2 gloo processes on the CPU gives the results of the 1-process run.

Training: each rank trains on its half of every global batch and DDP averages the gradients, so
the update equals the 1-process update except for BatchNorm, whose batch statistics are per rank
(we do not use SyncBatchNorm): the stated tolerance is 0.05 dB of validation PSNR and 5%
relative (L2) weight difference after the smoke run (measured: 0.003 dB, 2.3%). Evaluation:
whole batches are shared round-robin and gathered in order, so records agree to float
round-off (1e-6 relative; the processes run one thread each and may sum in another order).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

COMMON = ["--preset", "smoke", "--set", "data.short_side=0", "--quiet"]


def _run(args: list[str], nproc: int, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "smoothrecon", *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--standalone",
            "-m",
            "smoothrecon",
            *args,
        ]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, photo_dir: Path) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("ddp")
    out = {}
    for nproc in (1, 2):
        out[nproc] = root / f"train{nproc}"
        _run(["train", *COMMON, "--data", str(photo_dir), "--out", str(out[nproc])], nproc, root)
    return out


def test_two_processes_train_like_one(trained: dict[int, Path]) -> None:
    rows = {
        n: [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]
        for n, p in trained.items()
    }
    assert [r["step"] for r in rows[1]] == [r["step"] for r in rows[2]]
    assert abs(rows[1][-1]["val_psnr"] - rows[2][-1]["val_psnr"]) < 0.05
    a = load_file(str(trained[1] / "last.safetensors"))
    b = load_file(str(trained[2] / "last.safetensors"))
    assert set(a) == set(b)
    keys = [
        k for k in a if k.startswith("model.") and a[k].is_floating_point() and "running" not in k
    ]
    va = torch.cat([a[k].flatten() for k in keys])
    vb = torch.cat([b[k].flatten() for k in keys])
    assert ((va - vb).norm() / va.norm()).item() < 0.05


def test_two_rank_evaluation_equals_one_rank(
    trained: dict[int, Path], photo_dir: Path, tmp_path: Path
) -> None:
    records = {}
    for nproc in (1, 2):
        out = tmp_path / f"eval{nproc}"
        _run(
            [
                "evaluate",
                *COMMON[2:],
                "--data",
                str(photo_dir),
                "--model",
                str(trained[1]),
                "--eps-rel",
                "0,0.02",
                "--sigma-g",
                "0,0.2",
                "--k",
                "4",
                "--out",
                str(out),
            ],
            nproc,
            tmp_path,
        )
        records[nproc] = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
    one, two = records[1], records[2]
    assert len(one) == len(two) > 0
    for r1, r2 in zip(one, two, strict=True):
        key = ("split", "eps_rel", "attack", "sigma_g", "n")
        assert [r1[k] for k in key] == [r2[k] for k in key]
        for m in ("mse", "psnr", "ssim"):
            assert len(r1["per_image"][m]) == len(r2["per_image"][m]) == r1["n"]
            for v1, v2 in zip(r1["per_image"][m], r2["per_image"][m], strict=True):
                assert math.isclose(v1, v2, rel_tol=1e-6, abs_tol=1e-9), (m, v1, v2)


def test_map_batches_without_a_process_group_is_a_plain_map() -> None:
    from smoothrecon.util.distributed import map_batches

    assert map_batches(10, 4, lambda s: s) == [0, 4, 8]
    assert torch.equal(
        torch.cat(map_batches(5, 2, lambda s: torch.arange(s, min(s + 2, 5)))), torch.arange(5)
    )
