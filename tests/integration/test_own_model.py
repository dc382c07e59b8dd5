"""Bring your own model: a module from a Python file through `evaluate --model FILE.py:NAME`
and through `smoothrecon.evaluate(...)`, the same records either way; an identity module
scores exactly like the bilinear baseline; bad files give one error line; and the folder
becomes a report whose first figure is a robustness curve.

The modules below are loaded by the CLI from this very file (`__file__:NAME`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import smoothrecon
from smoothrecon.data import prepare_data
from smoothrecon.util.io import read_jsonl

SMOKE = ["--preset", "smoke", "--set", "data.short_side=0", "--quiet"]
METRIC_KEYS = ("mse", "psnr", "ssim", "mse_ci95", "psnr_ci95", "ssim_ci95")


class Identity(nn.Module):
    """x_hat = y: the bilinear baseline written as your own model."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y


class Small(nn.Module):
    """A small residual network with fixed, seeded weights, and an oscillation that smoothing
    averages away (so sigma_g* > 0 and the attack on g runs)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(0.2 * torch.randn(self.conv.weight.shape, generator=g))
            self.conv.bias.zero_()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + 0.1 * torch.tanh(self.conv(y)) + 0.1 * torch.sin(40 * y)


def half_size() -> nn.Module:
    """A function returning a module of the wrong output shape."""
    return nn.AvgPool2d(2)


def _evaluate(cli, *args: object) -> None:
    r = cli("evaluate", *SMOKE, *args)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr


def _by_condition(records: list[dict], model: str) -> dict[tuple, dict]:
    return {
        (r["split"], r["eps_rel"], r["attack"], r["setting"], r["sigma_g"]): r
        for r in records
        if r["model"] == model
    }


def test_identity_matches_the_bilinear_baseline(cli, photo_dir: Path, tmp_path: Path) -> None:
    common = ["--data", photo_dir, "--eps-rel", "0,0.02", "--sigma-g", "0", "--baselines"]
    out_n, out_p = tmp_path / "normalized", tmp_path / "pixel"
    ref = f"{__file__}:Identity"
    _evaluate(cli, "--model", ref, "--input-space", "normalized", *common, "--out", out_n)
    _evaluate(
        cli, "--model", ref, "--factor", "2", "--input-space", "pixel", *common, "--out", out_p
    )
    normalized = read_jsonl(out_n / "records.jsonl")
    own, bilinear = _by_condition(normalized, "Identity"), _by_condition(normalized, "x2/bilinear")
    assert own.keys() == bilinear.keys() and len(own) == 4  # val/test x eps_rel 0/0.02
    for key, r in own.items():  # the same input space: identical numbers, attacked too
        assert r["per_image"] == bilinear[key]["per_image"], key
        assert [r[k] for k in METRIC_KEYS] == [bilinear[key][k] for k in METRIC_KEYS]
    pixel = _by_condition(read_jsonl(out_p / "records.jsonl"), "Identity")
    for key, r in pixel.items():
        if key[1] == 0:  # clean: the same up to float rounding of the normalization
            for m in ("mse", "psnr", "ssim"):
                assert math.isclose(r[m], bilinear[key][m], rel_tol=1e-5), (key, m)
        else:  # eps lives in pixel units now, not in normalized ones: another attack
            assert r["eps"] == pytest.approx(bilinear[key]["eps"])
            assert r["input_space"] == "pixel" and bilinear[key]["input_space"] == "normalized"


def test_cli_and_api_give_the_same_records(cli, photo_dir: Path, tmp_path: Path) -> None:
    grid = ["--eps-rel", "0,0.02", "--sigma-g", "0,0.1", "--k", "2"]
    _evaluate(
        cli, "--model", f"{__file__}:Small", "--data", photo_dir, *grid, "--out", tmp_path / "c"
    )
    api = smoothrecon.evaluate(
        Small(),
        data=photo_dir,
        operator=smoothrecon.SuperResolution(2),
        normalization=None,
        eps_rels=[0.0, 0.02],
        sigmas=[0.0, 0.1],
        out=tmp_path / "a",
        preset="smoke",
        overrides=["data.short_side=0", "smoothing.k=2"],
        label="Small",
    )
    cli_records = read_jsonl(tmp_path / "c" / "records.jsonl")
    assert len(api) == len(cli_records) > 0
    assert {r["attack"] for r in api} == {"none", "pgd_f", "pgd_g", "worst"}
    for a, c in zip(api, cli_records, strict=True):
        assert a.keys() == c.keys()
        for k, v in a.items():
            if isinstance(v, float):
                assert math.isclose(v, c[k], rel_tol=1e-6, abs_tol=1e-12), k
            elif k != "per_image":
                assert v == c[k], k
    # The same unit files (same keys), so each front end resumes the other's work.
    names = {p.name for p in (tmp_path / "c" / "evals").rglob("*.json")}
    assert names == {p.name for p in (tmp_path / "a" / "evals").rglob("*.json")}


def test_rerun_reuses_units_and_a_changed_k_reruns(cli, photo_dir: Path, tmp_path: Path) -> None:
    args = ["--model", "bilinear", "--data", photo_dir, "--eps-rel", "0,0.02", "--out", tmp_path]
    _evaluate(cli, *args)
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "evals").rglob("*.json")}
    _evaluate(cli, *args)
    assert {p: p.stat().st_mtime_ns for p in first} == first
    _evaluate(cli, *args, "--attack", "thesis")  # another attack: new units
    after = set((tmp_path / "evals").rglob("*.json"))
    assert len(after) == 2 * len(first)
    records = read_jsonl(tmp_path / "records.jsonl")
    assert {r["setting"] for r in records} == {"thesis"}  # only the current units


@pytest.mark.parametrize(
    ("source", "name", "expected"),
    [
        ("raise ValueError('broken on purpose')\n", "Net", "raised ValueError: broken on purpose"),
        ("import torch\nclass Other(torch.nn.Module):\n    pass\n", "Net", "defines no 'Net'"),
        (None, "half_size", "must return a reconstruction of the input's shape"),
    ],
)
def test_bad_model_files_give_one_error_line(
    cli, photo_dir: Path, tmp_path: Path, source: str | None, name: str, expected: str
) -> None:
    path = Path(__file__)
    if source is not None:
        path = tmp_path / "net.py"
        path.write_text(source)
    r = cli(
        "evaluate",
        *SMOKE,
        "--model",
        f"{path}:{name}",
        "--data",
        photo_dir,
        "--out",
        tmp_path / "o",
    )
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], r.stderr


def test_report_of_an_evaluate_folder(cli, photo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    _evaluate(
        cli,
        "--model",
        f"{__file__}:Small",
        "--factor",
        "2",
        "--input-space",
        "pixel",
        "--data",
        photo_dir,
        "--baselines",
        "--project",
        "--out",
        out,
    )
    r = cli("report", out)
    assert r.returncode == 0, r.stderr
    report = out / "report"
    figures = sorted(p.name for p in (report / "figures").glob("*.png"))
    assert any(f.startswith("robustness") for f in figures), figures
    md = (report / "report.md").read_text()
    first = re.search(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert first is not None and Path(first.group(1)).name.startswith("robustness")
    assert first.start() < md.index("| model")  # above the tables
    assert "'strong': APGD-L2, 3 steps, 1 start(s) on each of MSE and SSIM" in md  # names it
    assert (report / "tables" / "table_4_1.csv").is_file()
    assert "Small+proj" in md


def test_projected_model_under_a_measurement_attack(cli, photo_dir: Path, tmp_path: Path) -> None:
    # f o P (--project): a measurement-space perturbation reaches the network through the
    # back-projection, inside the range that P projects onto, so f o P and f see the same
    # inputs and the same attack; clean inputs lie in that range too. (The input-space attack
    # on f o P runs in test_report_of_an_evaluate_folder.)
    _evaluate(
        cli, "--model", f"{__file__}:Small", "--data", photo_dir, "--eps-rel", "0,0.02",
        "--sigma-g", "0", "--project", "--set", "attack.space=measurement", "--out", tmp_path,
    )  # fmt: skip
    rows = read_jsonl(tmp_path / "records.jsonl")
    f, fp = _by_condition(rows, "Small"), _by_condition(rows, "Small+proj")
    assert f.keys() == fp.keys() and len(f) == 4
    assert {r["defense_kind"] for r in rows if r["model"] == "Small+proj"} == {"projection"}
    for key, r in fp.items():
        assert r["per_image"]["psnr"] == pytest.approx(f[key]["per_image"]["psnr"], abs=1e-3), key


def test_api_identity_matches_bilinear_under_attack_in_normalized_space(
    photo_dir: Path, make_config
) -> None:
    norm = prepare_data(make_config().data, purpose="evaluate").normalization
    records = smoothrecon.evaluate(
        Identity(),
        data=photo_dir,
        normalization=norm,
        eps_rels=[0.02],
        sigmas=[0.0],
        preset="smoke",
        overrides=["data.short_side=0"],
        baselines=True,
        label="identity",
    )
    own, bilinear = _by_condition(records, "identity"), _by_condition(records, "x2/bilinear")
    assert own.keys() == bilinear.keys() and own
    for key, r in own.items():
        assert r["per_image"] == bilinear[key]["per_image"], key


class Rounded(nn.Module):
    """The identity behind 8-bit rounding: zero gradient everywhere (gradient masking)."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.round(y * 255) / 255


def test_a_gradient_masking_model_is_flagged_and_the_gradient_free_attack_runs(
    cli, photo_dir: Path, tmp_path: Path
) -> None:
    """Issue 23: PGD cannot beat random noise on a rounding model; the CLI and the records say
    so, and the gradient-free attack brings it down below random noise. The identity is not
    flagged."""
    common = ["--data", photo_dir, "--eps-rel", "0.05", "--sigma-g", "0", "--input-space"]
    runs = {}
    for name in ("Identity", "Rounded"):
        out = tmp_path / name
        r = cli("evaluate", *SMOKE, "--model", f"{__file__}:{name}", *common, "pixel", "--out", out)
        assert r.returncode == 0, r.stderr
        rows = read_jsonl(out / "records.jsonl")
        runs[name] = (r.stdout, next(x for x in rows if x["split"] == "test" and x["eps_rel"]))
    stdout, identity = runs["Identity"]
    assert "did not beat random noise" not in stdout
    assert not identity["attack_failed"] and identity["random_gap"] > 0
    stdout, rounded = runs["Rounded"]
    assert "did not beat random noise: gradients may be masked" in stdout
    assert rounded["attack_failed"] and rounded["gradient_free"]
    assert rounded["grad_bad_share"] == 1.0
    assert rounded["psnr"] < rounded["random_psnr"]
