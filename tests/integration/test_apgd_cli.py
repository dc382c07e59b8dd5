"""APGD (attack.kind = apgd) runs through the command line like PGD: its records, the run
folder's description of it and the report's attack line."""

from __future__ import annotations

import json
from pathlib import Path

from smoothrecon.experiments.training import train
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
    assert described["losses"] == ["mse", "ssim"]  # the default: an ensemble of both
    for x in attacked:  # which member gave each column, on what share of the crops
        assert set(x["worst_of"]) == {"mse", "ssim"}
        assert set(x["worst_of"]["ssim"]) == {"apgd-mse", "apgd-ssim"}
        assert abs(sum(x["worst_of"]["ssim"].values()) - 1) < 1e-9
        own = x["by_member"]  # each member alone: the column is per crop the worse of them
        for metric in ("psnr", "ssim"):
            worse = [min(a, b) for a, b in zip(*(own[n][metric] for n in own), strict=True)]
            assert abs(sum(worse) / len(worse) - x[metric]) < 1e-9
    assert cli("report", out).returncode == 0
    text = (out / "report" / "report.md").read_text()
    assert "APGD-L2, 8 steps, 1 start(s) on each of MSE and SSIM (an ensemble)" in text
    assert "SSIM from the member of the lowest SSIM (apgd-" in text
    assert "The MSE and the SSIM attack of the ensemble alone" in text
    assert "SSIM: MSE attack - SSIM attack" in text


def test_the_ssim_attack_lowers_ssim_more_than_the_mse_attack(
    cli, photo_dir: Path, make_config, tmp_path: Path
) -> None:
    """On a trained smoke model (residual: its outputs are images, near the bilinear baseline,
    not the clamped noise of a 2-epoch plain U-Net), at the same eps and budget: the attack on
    SSIM (1 - SSIM on the pixel-space outputs) leaves a lower SSIM than the attack on MSE, and
    the MSE attack a lower PSNR than the SSIM attack: each finds its own metric's worst case."""
    model = tmp_path / "model"
    train(make_config("model.residual=true", "train.epochs=2"), model, progress=False)
    rows = {}
    for loss in ("mse", "ssim"):
        out = tmp_path / loss
        r = cli(
            "evaluate", "--preset", "smoke", "--quiet", "--data", photo_dir,
            "--model", model, "--set", "data.short_side=0",
            "--set", "attack.kind=apgd", "--set", f"attack.losses=[{loss}]", "--steps", "20",
            "--restarts", "1", "--eps-rel", "0.05", "--sigma-g", "0", "--out", out,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        (rows[loss],) = [x for x in read_jsonl(out / "records.jsonl") if x["split"] == "test"]
        assert json.loads((out / "run.json").read_text())["attacks"]["strong"]["losses"] == [loss]
    assert rows["ssim"]["ssim"] < rows["mse"]["ssim"], (rows["ssim"]["ssim"], rows["mse"]["ssim"])
    assert rows["mse"]["psnr"] < rows["ssim"]["psnr"], (rows["mse"]["psnr"], rows["ssim"]["psnr"])
