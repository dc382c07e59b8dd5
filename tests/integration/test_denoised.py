"""Issue 15: denoised smoothing. A denoiser trained with `train --mode denoiser` restores the
network input from noise, and f o D of a standard f is evaluated like an RS model: in a sweep
(experiment.denoiser_sigmas) and with `evaluate --denoiser`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from smoothrecon.data import prepare_data
from smoothrecon.defenses.denoised import Denoised
from smoothrecon.experiments.training import validate
from smoothrecon.models.checkpoint import load_model
from smoothrecon.util.io import read_jsonl
from smoothrecon.util.runtime import Runtime

COMMON = ("--preset", "smoke", "--quiet", "--set", "data.short_side=0")


def test_the_composition_is_f_after_d() -> None:
    f, d = torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Conv2d(3, 3, 1)
    z = torch.randn(2, 3, 8, 6)
    torch.testing.assert_close(Denoised(f, d)(z), f(d(z)))


@pytest.fixture(scope="module")
def trained(cli, photo_dir: Path, tmp_path_factory, smoke_models) -> dict[str, Path]:
    """The session's standard model (conftest.py) and a denoiser trained here by the CLI."""
    root = tmp_path_factory.mktemp("denoised")
    # the denoiser starts as the identity (global skip) and learns a correction
    den = ("--mode", "denoiser", "--sigma-f", "0.2", "--residual", "--epochs", "4")
    r = cli("train", *COMMON, "--data", photo_dir, *den, "--out", root / "den")
    assert r.returncode == 0, r.stderr[-2000:]
    return {"std": smoke_models["std"], "den": root / "den"}


def _identity_psnr(make_config, sigma: float) -> tuple[float, float]:
    """(validate()'s PSNR of the identity as a denoiser at sigma, the closed form
    -10 log10(sigma^2 mean_c std_c^2) of noise N(0, sigma^2) in normalized units)."""
    cfg = make_config("train.mode=denoiser", f"train.sigma_f={sigma}")
    data = prepare_data(cfg.data)
    got = validate(torch.nn.Identity(), data, cfg, Runtime(torch.device("cpu"), "fp32", False))
    var = sigma**2 * sum(s**2 for s in data.normalization.std) / 3
    return got["psnr"], -10 * math.log10(var)


def test_denoiser_validation_scores_the_restored_input(make_config) -> None:
    for sigma in (0.05, 0.2):
        got, closed = _identity_psnr(make_config, sigma)
        # clamping to [0, 1] only removes error; per-crop PSNRs average a little above
        assert closed - 0.2 < got < closed + 1.5, (sigma, got, closed)


def test_a_denoiser_learns_to_restore_the_network_input(trained, make_config) -> None:
    rows = read_jsonl(trained["den"] / "metrics.jsonl")
    identity, _ = _identity_psnr(make_config, 0.2)
    assert rows[-1]["val_psnr"] > identity, (rows, identity)  # better than doing nothing
    _, meta = load_model(trained["den"])
    assert meta["config"]["train"]["mode"] == "denoiser"


def test_evaluate_adds_f_after_d_for_every_model(cli, photo_dir: Path, trained, tmp_path) -> None:
    r = cli(
        "evaluate", *COMMON, "--data", photo_dir, "--model", trained["std"] / "best.safetensors",
        "--denoiser", trained["den"] / "best.safetensors", "--eps-rel", "0,0.02",
        "--steps", "2", "--restarts", "1", "--out", tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    records = read_jsonl(tmp_path / "records.jsonl")
    assert {x["model"] for x in records} == {"std", "std+den0.2"}
    composed = [x for x in records if x["model"] == "std+den0.2"]
    assert {(x["mode"], x["defense"], x["defense_kind"]) for x in composed} == {
        ("standard", "den0.2", "denoised")
    }
    assert all(x["smoothed"] for x in composed)
    assert {"pgd_f", "pgd_g"} <= {x["attack"] for x in composed}  # attacked like an RS model


def test_a_model_that_is_no_denoiser_is_refused(cli, photo_dir: Path, trained, tmp_path) -> None:
    r = cli(
        "evaluate", *COMMON, "--data", photo_dir, "--model", trained["std"],
        "--denoiser", trained["std"], "--out", tmp_path,
    )  # fmt: skip
    assert r.returncode != 0
    assert "error:" in r.stderr and "not as a denoiser" in r.stderr


def test_a_sweep_with_denoised_smoothing(cli, photo_dir: Path, tmp_path) -> None:
    out = tmp_path / "run"
    r = cli(
        "reproduce", *COMMON, "--data", photo_dir, "--set", "experiment.denoiser_sigmas=[0.1]",
        "--set", "experiment.at_eps_rels=[]", "--set", "experiment.certify_eps_rels=[]",
        "--set", "experiment.thesis_setting=false", "--out", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    units = [json.loads(p.read_text()) for p in sorted((out / "evals").rglob("*.json"))]
    records = [rec for u in units for rec in u["records"]]
    composed = [u for u in units if u["label"] == "x2/thesis/std+den0.1"]
    # evaluated like an RS model: the sigma_g grid, and the EOT attack on g where eps > 0
    assert composed and all(u["settings"]["rs_pgd"] == (u["eps_rel"] > 0) for u in composed)
    assert {r["sigma_g"] for u in composed for r in u["records"]} == {0.0, 0.1, 0.3}
    for u in composed:
        chosen = {r["sigma_g"] for r in u["records"] if r["attack"] == "worst"}
        assert bool(chosen) == any(
            r["attack"] == "pgd_g" for r in u["records"]
        )  # the attack on g runs at sigma_g* > 0
    assert "x2/thesis/den0.1" not in {x["model"] for x in records}  # D alone is no estimator
    assert cli("report", out).returncode == 0
    assert "standard + denoiser (den0.1)" in (out / "report" / "report.md").read_text()


def test_a_denoiser_of_another_operator_is_refused(cli, photo_dir: Path, trained, tmp_path) -> None:
    """Issue 24 item 14: a denoiser trained for deblurring was accepted in front of a
    super-resolution model. Here the super-resolution denoiser in front of a deblurring
    baseline: refused in one line naming both operators."""
    r = cli(
        "evaluate", *COMMON, "--data", photo_dir, "--model", "wiener", "--set",
        "operator.name=deblurring", "--denoiser", trained["den"], "--eps-rel", "0", "--out",
        tmp_path / "e",
    )  # fmt: skip
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "trained for the operator" in r.stderr and "deblurring" in r.stderr
