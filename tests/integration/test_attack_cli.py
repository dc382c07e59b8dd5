"""`smoothrecon attack` on a trained model: perturbations on the sphere of radius eps, saved on
request, and PGD clearly stronger than random noise of the same norm."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from smoothrecon.attacks.pgd import eps_from_rel


def test_attack_command(tmp_path: Path, make_config, smoke_models, cli) -> None:
    cfg = make_config("train.epochs=2")  # the session's standard model (conftest.py)
    out = tmp_path / "attack"
    result = cli(
        "attack",
        "--model",
        smoke_models["std"],
        "--eps-rel",
        "0.02,0.1",
        "--split",
        "test",
        "--save-perturbations",
        "--quiet",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "attack.json").read_text())["rows"]
    assert [r["eps_rel"] for r in rows] == [0.02, 0.1]
    size = cfg.data.crop_size
    for r in rows:
        eps = eps_from_rel(r["eps_rel"], (3, size, size))
        # the per-crop worst of the ensemble need not lie on the sphere (an SSIM member's best
        # iterate may be inside the ball), but never outside it
        assert 0 < r["e_norm_mean"] <= eps * (1 + 1e-4)
        assert r["mse"] > r["random_mse"] and r["psnr"] < r["random_psnr"]
        e = load_file(str(out / f"perturbations-eps{r['eps_rel']:g}.safetensors"))["e"]
        assert e.shape[0] == r["n"] and e.shape[1:] == (3, size, size)
        assert float(e.flatten(1).norm(dim=1).max()) <= eps * (1 + 1e-4)
    assert "random noise of the same norm" in result.stdout
